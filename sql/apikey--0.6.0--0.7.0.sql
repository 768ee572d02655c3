-- apikey 0.6.0 -> 0.7.0. Run by ALTER EXTENSION apikey UPDATE, never by hand.
\echo Use "ALTER EXTENSION apikey UPDATE" to load this file. \quit

-- Credit balances of keys (extension/src/credits.rs). Verification spends in shared memory;
-- the background worker moves what was spent into `remaining` and records in `spent_mark`
-- how much of the server's running count (of epoch `mark_epoch`) the row holds, so a write
-- is never lost or applied twice. The row moves to a rotated key's successor: the family
-- spends one balance. `credit_id` names the balance in shared memory and is never reused.
CREATE TABLE apikey.key_credits (
    key_id          text PRIMARY KEY REFERENCES apikey.keys (key_id) ON DELETE CASCADE,
    credit_id       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    remaining       bigint NOT NULL,
    refill_amount   bigint CHECK (refill_amount >= 0),
    refill_interval interval,
    -- When the balance was set: refills fall at set_at + n * refill_interval (UTC).
    set_at          timestamptz NOT NULL,
    next_refill_at  timestamptz,
    spent_mark      bigint NOT NULL DEFAULT 0,
    mark_epoch      bigint NOT NULL DEFAULT 0,
    -- Moves on with every set and top-up (what sessions must read again); the worker's
    -- writes keep the balance as it was and leave it alone.
    generation      bigint NOT NULL DEFAULT 0,
    CHECK ((refill_amount IS NULL) = (refill_interval IS NULL)),
    CHECK ((refill_amount IS NULL) = (next_refill_at IS NULL))
);

-- A balance's row changes for the worker's writes too, which keep the balance as it was
-- (see extension/src/credits.rs): only a set, a top-up, a refill or a move to a successor
-- needs sessions to read it again.
CREATE TRIGGER key_credits_added_or_removed
    AFTER INSERT OR DELETE OR TRUNCATE ON apikey.key_credits
    FOR EACH STATEMENT EXECUTE FUNCTION apikey.forget_known_keys();
CREATE TRIGGER key_credits_changed
    AFTER UPDATE ON apikey.key_credits
    FOR EACH ROW
    WHEN ((OLD.key_id, OLD.generation, OLD.refill_amount, OLD.next_refill_at)
          IS DISTINCT FROM (NEW.key_id, NEW.generation, NEW.refill_amount, NEW.next_refill_at))
    EXECUTE FUNCTION apikey.forget_known_keys();
ALTER TABLE apikey.key_credits ENABLE ALWAYS TRIGGER key_credits_added_or_removed;
ALTER TABLE apikey.key_credits ENABLE ALWAYS TRIGGER key_credits_changed;

-- pg_dump keeps the balances (and where their ids go on).
SELECT pg_catalog.pg_extension_config_dump('apikey.key_credits', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.key_credits_credit_id_seq', '');

CREATE FUNCTION @extschema@."apikey_set_credits"(
	"key_id" TEXT,
	"remaining" bigint,
	"refill_amount" bigint DEFAULT NULL,
	"refill_interval" interval DEFAULT NULL
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_set_credits_wrapper';
CREATE FUNCTION @extschema@."apikey_add_credits"(
	"key_id" TEXT,
	"amount" bigint
) RETURNS bigint
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_add_credits_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_set_credits(text, bigint, bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.apikey_add_credits(text, bigint) FROM PUBLIC;

-- apikey_verify takes a cost and returns credits_remaining: a new signature, so the function
-- is made again (calls with three arguments work as before).
DROP FUNCTION @extschema@.apikey_verify(text, text[], inet);
CREATE FUNCTION @extschema@.apikey_verify(
    token text,
    required_scopes text[] DEFAULT '{}',
    client_ip inet DEFAULT NULL,
    cost integer DEFAULT 1
) RETURNS TABLE (
    valid boolean,
    reason text,
    key_id text,
    partner_id uuid,
    scopes text[],
    rate_per_minute int,
    expires_at timestamptz,
    rate_remaining int,
    rate_reset_seconds int,
    credits_remaining bigint
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_verify';
REVOKE ALL ON FUNCTION @extschema@.apikey_verify(text, text[], inet, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_verify(text, text[], inet, integer)
    TO apikey_admin, apikey_verifier, apikey_partner;

-- Credits (0.7.0). Balances are money: only an operator sets, tops up or charges them, and
-- only an operator reads their rows (a row's `remaining` leaves out what was spent since the
-- worker's last write; apikey_verify's credits_remaining is the balance).
GRANT EXECUTE ON FUNCTION
    @extschema@.apikey_set_credits,
    @extschema@.apikey_add_credits
TO apikey_admin;
GRANT SELECT ON apikey.key_credits TO apikey_admin;
ALTER TABLE apikey.key_credits ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.key_credits FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_reads_all ON apikey.key_credits FOR SELECT TO apikey_admin USING (true);
