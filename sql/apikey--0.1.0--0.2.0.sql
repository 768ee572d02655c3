-- apikey 0.1.0 -> 0.2.0. Run by ALTER EXTENSION apikey UPDATE, never by hand.
\echo Use "ALTER EXTENSION apikey UPDATE" to load this file. \quit

-- Management audit rows name the key that acted (see schema.sql).
ALTER TABLE apikey.audit_log ADD COLUMN actor_key_id text;

-- The append-only trigger function lets only the background worker's retention delete.
CREATE OR REPLACE FUNCTION apikey.audit_log_is_append_only() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_audit_log_is_append_only';
CREATE INDEX audit_log_at_idx ON apikey.audit_log (at);

-- The append-only triggers also fire under session_replication_role = replica.
ALTER TABLE apikey.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
ALTER TABLE apikey.audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;

-- A key's status is judged at the time of the query (clock_timestamp()), as verification
-- judges it. CREATE OR REPLACE keeps the view's grants.
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
    END AS status
FROM apikey.keys;

-- Usage counts, written by the background worker (see schema.sql).
CREATE TABLE apikey.usage (
    minute     timestamptz NOT NULL,
    key_id     text,
    partner_id uuid,
    reason     text NOT NULL,
    count      bigint NOT NULL CHECK (count > 0),
    CONSTRAINT usage_minute_key_id_reason_key UNIQUE NULLS NOT DISTINCT (minute, key_id, reason)
);
CREATE INDEX usage_key_id_idx ON apikey.usage (key_id, minute);
CREATE INDEX usage_partner_id_idx ON apikey.usage (partner_id, minute);
SELECT pg_catalog.pg_extension_config_dump('apikey.usage', '');
REVOKE ALL ON apikey.usage FROM PUBLIC;
GRANT SELECT ON apikey.usage TO apikey_admin, apikey_partner;
ALTER TABLE apikey.usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.usage FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_reads_all ON apikey.usage FOR SELECT TO apikey_admin USING (true);
CREATE POLICY partner_reads_own ON apikey.usage FOR SELECT TO apikey_partner
    USING (partner_id = @extschema@.apikey_current_partner());

-- apikey_verify gains rate_remaining and rate_reset_seconds; a result type cannot be
-- changed in place.
DROP FUNCTION @extschema@.apikey_verify(text, text[], inet);
CREATE FUNCTION @extschema@.apikey_verify(
    token text,
    required_scopes text[] DEFAULT '{}',
    client_ip inet DEFAULT NULL
) RETURNS TABLE (
    valid boolean,
    reason text,
    key_id text,
    partner_id uuid,
    scopes text[],
    rate_per_minute int,
    expires_at timestamptz,
    rate_remaining int,
    rate_reset_seconds int
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_verify';
REVOKE ALL ON FUNCTION @extschema@.apikey_verify(text, text[], inet) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_verify(text, text[], inet)
    TO apikey_admin, apikey_verifier, apikey_partner;

CREATE FUNCTION @extschema@."apikey_version"() RETURNS TABLE (
	"extension_version" TEXT,
	"library_version" TEXT
)
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_version_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_version()
    TO apikey_admin, apikey_verifier, apikey_partner;

CREATE FUNCTION @extschema@."apikey_status"() RETURNS TABLE (
	"shared_memory" bool,
	"note" TEXT,
	"keys_in_use" bigint,
	"keys_capacity" bigint,
	"usage_entries" bigint,
	"usage_capacity" bigint,
	"proof_hits" bigint,
	"proof_misses" bigint,
	"argon2_verified" bigint,
	"argon2_failed" bigint,
	"argon2_waits" bigint,
	"argon2_running" INT,
	"argon2_max_concurrency" INT,
	"rate_limited" bigint,
	"usage_dropped" bigint,
	"audit_suppressed" bigint,
	"keys_evicted" bigint,
	"flushes" bigint,
	"flush_failures" bigint,
	"last_flush" timestamp with time zone
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_status_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_status() TO apikey_admin;

CREATE FUNCTION @extschema@."apikey_usage"(
	"key_id" TEXT DEFAULT NULL,
	"partner_id" uuid DEFAULT NULL,
	"since" timestamp with time zone DEFAULT now() - interval '24 hours',
	"bucket" interval DEFAULT '1 hour'
) RETURNS TABLE (
	"bucket" timestamp with time zone,
	"key_id" TEXT,
	"reason" TEXT,
	"count" bigint
)
STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_usage_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_usage(text, uuid, timestamptz, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_usage(text, uuid, timestamptz, interval)
    TO apikey_admin, apikey_partner;

CREATE FUNCTION @extschema@."apikey_rate_state"(
	"key_id" TEXT
) RETURNS TABLE (
	"rate_per_minute" INT,
	"remaining" INT,
	"reset_seconds" INT
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_rate_state_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_rate_state(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_rate_state(text) TO apikey_admin, apikey_partner;
