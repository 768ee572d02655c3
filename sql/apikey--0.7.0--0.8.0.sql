-- apikey 0.7.0 -> 0.8.0. Run by ALTER EXTENSION apikey UPDATE, never by hand.
\echo Use "ALTER EXTENSION apikey UPDATE" to load this file. \quit

-- Partner-wide limits (extension/src/credits.rs): a rate bucket and a balance that every key
-- of a partner shares, checked as well as each key's own.
ALTER TABLE apikey.partners
    ADD COLUMN rate_per_minute integer CHECK (rate_per_minute >= 1);

-- Kept as apikey.key_credits keeps a key's balance; credit_id comes from the same sequence,
-- so one id names one balance in shared memory.
CREATE TABLE apikey.partner_credits (
    partner_id      uuid PRIMARY KEY REFERENCES apikey.partners (partner_id) ON DELETE CASCADE,
    credit_id       bigint NOT NULL UNIQUE
                    DEFAULT nextval('apikey.key_credits_credit_id_seq'),
    remaining       bigint NOT NULL,
    refill_amount   bigint CHECK (refill_amount >= 0),
    refill_interval interval,
    set_at          timestamptz NOT NULL,
    next_refill_at  timestamptz,
    spent_mark      bigint NOT NULL DEFAULT 0,
    mark_epoch      bigint NOT NULL DEFAULT 0,
    generation      bigint NOT NULL DEFAULT 0,
    CHECK ((refill_amount IS NULL) = (refill_interval IS NULL)),
    CHECK ((refill_amount IS NULL) = (next_refill_at IS NULL))
);

CREATE TRIGGER partner_credits_added_or_removed
    AFTER INSERT OR DELETE OR TRUNCATE ON apikey.partner_credits
    FOR EACH STATEMENT EXECUTE FUNCTION apikey.forget_known_keys();
CREATE TRIGGER partner_credits_changed
    AFTER UPDATE ON apikey.partner_credits
    FOR EACH ROW
    WHEN ((OLD.partner_id, OLD.generation, OLD.refill_amount, OLD.next_refill_at)
          IS DISTINCT FROM
          (NEW.partner_id, NEW.generation, NEW.refill_amount, NEW.next_refill_at))
    EXECUTE FUNCTION apikey.forget_known_keys();
ALTER TABLE apikey.partner_credits ENABLE ALWAYS TRIGGER partner_credits_added_or_removed;
ALTER TABLE apikey.partner_credits ENABLE ALWAYS TRIGGER partner_credits_changed;

SELECT pg_catalog.pg_extension_config_dump('apikey.partner_credits', '');

CREATE FUNCTION @extschema@."apikey_partner_set_limits"(
	"partner_id" uuid,
	"rate_per_minute" INT DEFAULT NULL,
	"credits" bigint DEFAULT NULL,
	"credits_refill_amount" bigint DEFAULT NULL,
	"credits_refill_interval" interval DEFAULT NULL
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_partner_set_limits_wrapper';
CREATE FUNCTION @extschema@."apikey_partner_add_credits"(
	"partner_id" uuid,
	"amount" bigint
) RETURNS bigint
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_partner_add_credits_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_partner_set_limits(uuid, integer, bigint, bigint, interval)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.apikey_partner_add_credits(uuid, bigint) FROM PUBLIC;

-- Partner-wide limits (0.8.0), as a key's credits: set and topped up by an operator only.
GRANT EXECUTE ON FUNCTION
    @extschema@.apikey_partner_set_limits,
    @extschema@.apikey_partner_add_credits
TO apikey_admin;
GRANT SELECT ON apikey.partner_credits TO apikey_admin;
ALTER TABLE apikey.partner_credits ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.partner_credits FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_reads_all ON apikey.partner_credits FOR SELECT TO apikey_admin USING (true);

-- apikey_issue takes a first balance: a new signature, so the function is made again (calls
-- without the new arguments work as before).
DROP FUNCTION @extschema@.apikey_issue(uuid, text[], text, timestamptz, timestamptz, integer,
    cidr[], text, text[], jsonb, text);
CREATE FUNCTION @extschema@."apikey_issue"(
	"partner_id" uuid,
	"scopes" TEXT[],
	"name" TEXT DEFAULT NULL,
	"expires_at" timestamp with time zone DEFAULT NULL,
	"not_before" timestamp with time zone DEFAULT NULL,
	"rate_per_minute" INT DEFAULT 300,
	"allowed_cidrs" cidr[] DEFAULT NULL,
	"environment" TEXT DEFAULT 'live',
	"tags" TEXT[] DEFAULT '{}',
	"metadata" jsonb DEFAULT '{}',
	"prefix" TEXT DEFAULT NULL,
	"credits" bigint DEFAULT NULL,
	"credits_refill_amount" bigint DEFAULT NULL,
	"credits_refill_interval" interval DEFAULT NULL
) RETURNS TABLE (
	"key_id" TEXT,
	"token" TEXT
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_issue_with_credits_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_issue(uuid, text[], text, timestamptz, timestamptz,
    integer, cidr[], text, text[], jsonb, text, bigint, bigint, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_issue(uuid, text[], text, timestamptz, timestamptz,
    integer, cidr[], text, text[], jsonb, text, bigint, bigint, interval) TO apikey_admin;

-- Credits spent per key, minute and reason, and apikey_usage's spent column: a new result
-- type, so the function is made again.
ALTER TABLE apikey.usage ADD COLUMN spent bigint NOT NULL DEFAULT 0 CHECK (spent >= 0);
DROP FUNCTION @extschema@.apikey_usage(text, uuid, timestamptz, interval);
CREATE FUNCTION @extschema@."apikey_usage"(
	"key_id" TEXT DEFAULT NULL,
	"partner_id" uuid DEFAULT NULL,
	"since" timestamp with time zone DEFAULT now() - interval '24 hours',
	"bucket" interval DEFAULT '1 hour'
) RETURNS TABLE (
	"bucket" timestamp with time zone,
	"key_id" TEXT,
	"reason" TEXT,
	"count" bigint,
	"spent" bigint
)
STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_usage_with_spent_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_usage(text, uuid, timestamptz, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_usage(text, uuid, timestamptz, interval)
    TO apikey_admin, apikey_partner;

-- A balance as verification would find it now, for the management API and console.
CREATE FUNCTION @extschema@."apikey_credits_state"(
	"key_id" TEXT DEFAULT NULL,
	"partner_id" uuid DEFAULT NULL
) RETURNS TABLE (
	"remaining" bigint,
	"refill_amount" bigint,
	"refill_interval" interval,
	"next_refill_at" timestamp with time zone
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_credits_state_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_credits_state(text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_credits_state(text, uuid)
    TO apikey_admin, apikey_partner;
