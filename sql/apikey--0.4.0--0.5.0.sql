-- apikey 0.4.0 -> 0.5.0. Run by ALTER EXTENSION apikey UPDATE, never by hand.
\echo Use "ALTER EXTENSION apikey UPDATE" to load this file. \quit

-- Fair webhook delivery (see schema.sql): a failing endpoint pauses, and the claim shares
-- the attempts in flight out per endpoint and partner.
ALTER TABLE apikey.webhook_endpoints
    ADD COLUMN failures_in_a_row int NOT NULL DEFAULT 0,
    ADD COLUMN paused_until timestamptz;
CREATE INDEX webhook_deliveries_leased_idx ON apikey.webhook_deliveries (leased_until)
    WHERE state = 'pending' AND leased_until IS NOT NULL;

GRANT SELECT (failures_in_a_row, paused_until) ON apikey.webhook_endpoints
    TO apikey_admin, apikey_partner;
CREATE OR REPLACE VIEW apikey.webhook_endpoint_info WITH (security_invoker = true) AS
SELECT
    endpoint_id, partner_id, url, events, enabled, created_at, updated_at, secret_rotated_at,
    CASE WHEN previous_secret_until > clock_timestamp() THEN previous_secret_until END
        AS previous_secret_until,
    failing_since, disabled_at, disabled_reason, failures_in_a_row,
    CASE WHEN paused_until > clock_timestamp() THEN paused_until END AS paused_until
FROM apikey.webhook_endpoints;
COMMENT ON VIEW apikey.webhook_endpoint_info IS
    'Webhook endpoints without their sealed secrets; previous_secret_until while the previous secret still signs, paused_until while a failure pauses deliveries';

-- A key disabled by an operator stays disabled until an operator enables it.
ALTER TABLE apikey.keys ADD COLUMN disabled_by_operator boolean NOT NULL DEFAULT false;
-- Keys whose last enable or disable was an operator's disable (as the audit log records it)
-- keep that protection across the upgrade.
UPDATE apikey.keys k SET disabled_by_operator = true
WHERE NOT k.enabled AND EXISTS (
    SELECT 1
    FROM (SELECT a.action, a.actor FROM apikey.audit_log a
          WHERE a.key_id = k.key_id AND a.action IN ('enable', 'disable')
          ORDER BY a.id DESC LIMIT 1) last
    JOIN pg_catalog.pg_roles r ON r.rolname = last.actor
    WHERE last.action = 'disable' AND pg_catalog.pg_has_role(r.oid, 'apikey_admin', 'USAGE'));

-- apikey_status() counts guesses refused without Argon2id (argon2_refused).
DROP FUNCTION @extschema@.apikey_status();
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
	"last_flush" timestamp with time zone,
	"argon2_refused" bigint
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_status_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_status() TO apikey_admin;

-- key_info shows disabled_by_operator.
GRANT SELECT (disabled_by_operator) ON apikey.keys TO apikey_admin, apikey_partner;
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
    disabled_by_operator
FROM apikey.keys;
