-- apikey 0.8.0 -> 0.9.0. Run by ALTER EXTENSION apikey UPDATE, never by hand.
\echo Use "ALTER EXTENSION apikey UPDATE" to load this file. \quit

-- The key's and the partner's rate bucket as this session's last apikey_verify left them
-- (extension/src/last_rates.rs): the shim's RateLimit fields list each as its own policy.
CREATE FUNCTION @extschema@."apikey_last_rates"(
	"key_id" TEXT
) RETURNS INT[]
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_last_rates_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_last_rates(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_last_rates(text)
    TO apikey_admin, apikey_verifier, apikey_partner;

-- Keys another system issued, brought in by their stored hash (apikey_import,
-- extension/src/imported.rs). The key's row in apikey.keys holds that hash until its first
-- successful verification (pepper_fingerprint 'imported:<format>'), then apikey's own.
-- lookup is how verification finds the key from its token: 'hmac:<hex>' (a sha256 key's:
-- an HMAC under the pepper of the token's digest), 'id:<id>' or 'prefix:<the token's first
-- characters>'.
CREATE TABLE apikey.imported_keys (
    lookup      text PRIMARY KEY,
    key_id      text NOT NULL UNIQUE REFERENCES apikey.keys (key_id) ON DELETE CASCADE,
    hash_format text NOT NULL
                CHECK (hash_format IN ('sha256', 'argon2id-hmac', 'bcrypt', 'argon2id')),
    imported_at timestamptz NOT NULL DEFAULT now()
);

-- The lookup forms imported keys use (and the prefix lengths), so verification computes no
-- other; written with apikey.imported_keys, never shrinks.
CREATE TABLE apikey.import_forms (
    form          text NOT NULL CHECK (form IN ('hmac', 'id', 'prefix')),
    prefix_length integer NOT NULL DEFAULT 0,
    PRIMARY KEY (form, prefix_length)
);

SELECT pg_catalog.pg_extension_config_dump('apikey.imported_keys', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.import_forms', '');

-- Imported keys are found by their lookup (extension/src/imported.rs): any change of one
-- may change which key a token finds.
CREATE TRIGGER imported_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikey.imported_keys
    FOR EACH STATEMENT EXECUTE FUNCTION apikey.forget_known_keys();
ALTER TABLE apikey.imported_keys ENABLE ALWAYS TRIGGER imported_keys_changed;

CREATE FUNCTION @extschema@."apikey_import"(
	"partner_id" uuid,
	"stored_hash" TEXT,
	"hash_format" TEXT,
	"scopes" TEXT[],
	"lookup" TEXT DEFAULT NULL,
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
) RETURNS TEXT
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_import_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_import(uuid, text, text, text[], text, text,
    timestamptz, timestamptz, integer, cidr[], text, text[], jsonb, text, bigint, bigint,
    interval) FROM PUBLIC;

-- Imported keys (0.9.0): imported by an operator only; their lookups are read by operators.
GRANT EXECUTE ON FUNCTION @extschema@.apikey_import TO apikey_admin;
GRANT SELECT ON apikey.imported_keys, apikey.import_forms TO apikey_admin;
ALTER TABLE apikey.imported_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.imported_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_reads_all ON apikey.imported_keys FOR SELECT TO apikey_admin USING (true);
-- A partner sees which of its own keys were imported, and in which format (apikey.key_info).
GRANT SELECT (key_id, hash_format, imported_at) ON apikey.imported_keys TO apikey_partner;
CREATE POLICY partner_reads_own ON apikey.imported_keys FOR SELECT TO apikey_partner
    USING (key_id IN (SELECT key_id FROM apikey.keys));
ALTER TABLE apikey.import_forms ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.import_forms FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_reads_all ON apikey.import_forms FOR SELECT TO apikey_admin USING (true);

-- key_info shows the format an imported key came in.
CREATE OR REPLACE VIEW apikey.key_info WITH (security_invoker = true) AS
SELECT
    key_id, partner_id, name, scopes, tags, metadata, environment, enabled, not_before,
    expires_at, revoked_at, revoke_reason, rotated_to, rate_per_minute, allowed_cidrs,
    created_at, created_by, last_used_at,
    CASE
        WHEN revoked_at IS NOT NULL AND revoked_at <= clock_timestamp() THEN 'revoked'
        WHEN expires_at IS NOT NULL AND expires_at <= clock_timestamp() THEN 'expired'
        WHEN NOT enabled THEN 'disabled'
        WHEN not_before IS NOT NULL AND not_before > clock_timestamp() THEN 'not_yet_valid'
        ELSE 'live'
    END AS status,
    disabled_by_operator,
    (SELECT i.hash_format FROM apikey.imported_keys i WHERE i.key_id = keys.key_id)
        AS imported_from
FROM apikey.keys;
COMMENT ON VIEW apikey.key_info IS
    'Every key column except the secret hash and pepper fingerprint, plus a derived status and the format an imported key came in';
