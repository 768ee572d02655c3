-- Roles, grants, row-level security and the key_info view. Runs after every apikey_*
-- function exists, because grants and policies name them.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['apikey_admin', 'apikey_verifier', 'apikey_partner'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
END
$$;

-- PUBLIC gets nothing: not the functions (EXECUTE is granted to PUBLIC by default), not the
-- schema.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT d.objid::regprocedure
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
        WHERE e.extname = 'apikey'
          AND d.classid = 'pg_catalog.pg_proc'::regclass
          AND d.refclassid = 'pg_catalog.pg_extension'::regclass
          AND d.deptype = 'e'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    END LOOP;
END
$$;
REVOKE ALL ON SCHEMA apikey FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA apikey FROM PUBLIC;

GRANT USAGE ON SCHEMA @extschema@ TO apikey_admin, apikey_verifier, apikey_partner;
GRANT USAGE ON SCHEMA apikey TO apikey_admin, apikey_partner;

-- Verification and identity: every role.
GRANT EXECUTE ON FUNCTION
    @extschema@.apikey_verify,
    @extschema@.apikey_last_rates,
    @extschema@.apikey_current_partner,
    @extschema@.apikey_current_key,
    @extschema@.apikey_current_scopes,
    @extschema@.apikey_version
TO apikey_admin, apikey_verifier, apikey_partner;
-- apikey_webhook_verify reads no data, but the contract keeps apikey_verifier to
-- verification alone; a DBA grants it to that role where an application needs it.
GRANT EXECUTE ON FUNCTION
    @extschema@.apikey_has_scope,
    @extschema@.apikey_has_any_scope,
    @extschema@.apikey_require_scope,
    @extschema@.apikey_usage,
    @extschema@.apikey_rate_state,
    @extschema@.apikey_webhook_verify
TO apikey_admin, apikey_partner;

-- Management. The functions check the caller again (a partner only touches its own keys,
-- and only with a keys:manage key verified in the same transaction).
GRANT EXECUTE ON FUNCTION
    @extschema@.apikey_partner_create,
    @extschema@.apikey_partner_set_active,
    @extschema@.apikey_issue,
    @extschema@.apikey_status
TO apikey_admin;
GRANT EXECUTE ON FUNCTION
    @extschema@.apikey_rotate,
    @extschema@.apikey_revoke,
    @extschema@.apikey_set_enabled
TO apikey_admin, apikey_partner;

-- security_invoker: a plain view runs as its owner, a superuser who bypasses row-level
-- security, and would show every partner's keys to everyone who can read it. The status is
-- judged at the time of the query, as verification judges it (clock_timestamp(), not the
-- transaction's start).
CREATE VIEW apikey.key_info WITH (security_invoker = true) AS
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

-- Reading: the hash and the pepper fingerprint are readable by no role but the owner.
GRANT SELECT (
    key_id, partner_id, name, scopes, tags, metadata, environment, enabled, not_before,
    expires_at, revoked_at, revoke_reason, rotated_to, rate_per_minute, allowed_cidrs,
    created_at, created_by, last_used_at, disabled_by_operator
) ON apikey.keys TO apikey_admin, apikey_partner;
GRANT SELECT ON apikey.key_info, apikey.audit_log, apikey.partners, apikey.usage, apikey.events
    TO apikey_admin, apikey_partner;

ALTER TABLE apikey.partners ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.partners FORCE ROW LEVEL SECURITY;
ALTER TABLE apikey.keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.keys FORCE ROW LEVEL SECURITY;
ALTER TABLE apikey.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.audit_log FORCE ROW LEVEL SECURITY;
ALTER TABLE apikey.usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.usage FORCE ROW LEVEL SECURITY;
ALTER TABLE apikey.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.events FORCE ROW LEVEL SECURITY;

CREATE POLICY admin_reads_all ON apikey.partners FOR SELECT TO apikey_admin USING (true);
CREATE POLICY partner_reads_own ON apikey.partners FOR SELECT TO apikey_partner
    USING (partner_id = @extschema@.apikey_current_partner());
CREATE POLICY admin_reads_all ON apikey.keys FOR SELECT TO apikey_admin USING (true);
CREATE POLICY partner_reads_own ON apikey.keys FOR SELECT TO apikey_partner
    USING (partner_id = @extschema@.apikey_current_partner());
CREATE POLICY admin_reads_all ON apikey.audit_log FOR SELECT TO apikey_admin USING (true);
CREATE POLICY partner_reads_own ON apikey.audit_log FOR SELECT TO apikey_partner
    USING (partner_id = @extschema@.apikey_current_partner());
CREATE POLICY admin_reads_all ON apikey.usage FOR SELECT TO apikey_admin USING (true);
CREATE POLICY partner_reads_own ON apikey.usage FOR SELECT TO apikey_partner
    USING (partner_id = @extschema@.apikey_current_partner());
CREATE POLICY admin_reads_all ON apikey.events FOR SELECT TO apikey_admin USING (true);
CREATE POLICY partner_reads_own ON apikey.events FOR SELECT TO apikey_partner
    USING (partner_id = @extschema@.apikey_current_partner());

-- Webhooks. Management by operators for any partner, by a partner's keys:manage key for its
-- own; claiming and reporting deliveries is the deliverer's (the shim's operator role).
GRANT EXECUTE ON FUNCTION
    @extschema@.apikey_webhook_create,
    @extschema@.apikey_webhook_rotate_secret,
    @extschema@.apikey_webhook_delete,
    @extschema@.apikey_webhook_set_enabled,
    @extschema@.apikey_webhook_send_test
TO apikey_admin, apikey_partner;
GRANT EXECUTE ON FUNCTION
    @extschema@.apikey_webhook_claim,
    @extschema@.apikey_webhook_report
TO apikey_admin;

-- Every column but the sealed secrets and their peppers.
GRANT SELECT (
    endpoint_id, partner_id, url, events, enabled, previous_secret_until, created_at,
    updated_at, secret_rotated_at, failing_since, disabled_at, disabled_reason,
    failures_in_a_row, paused_until
) ON apikey.webhook_endpoints TO apikey_admin, apikey_partner;
CREATE VIEW apikey.webhook_endpoint_info WITH (security_invoker = true) AS
SELECT
    endpoint_id, partner_id, url, events, enabled, created_at, updated_at, secret_rotated_at,
    CASE WHEN previous_secret_until > clock_timestamp() THEN previous_secret_until END
        AS previous_secret_until,
    failing_since, disabled_at, disabled_reason, failures_in_a_row,
    CASE WHEN paused_until > clock_timestamp() THEN paused_until END AS paused_until
FROM apikey.webhook_endpoints;
COMMENT ON VIEW apikey.webhook_endpoint_info IS
    'Webhook endpoints without their sealed secrets; previous_secret_until while the previous secret still signs, paused_until while a failure pauses deliveries';
GRANT SELECT ON apikey.webhook_endpoint_info, apikey.webhook_deliveries, apikey.webhook_attempts
    TO apikey_admin, apikey_partner;

ALTER TABLE apikey.webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.webhook_endpoints FORCE ROW LEVEL SECURITY;
ALTER TABLE apikey.webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.webhook_deliveries FORCE ROW LEVEL SECURITY;
ALTER TABLE apikey.webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_reads_all ON apikey.webhook_endpoints FOR SELECT TO apikey_admin USING (true);
CREATE POLICY partner_reads_own ON apikey.webhook_endpoints FOR SELECT TO apikey_partner
    USING (partner_id = @extschema@.apikey_current_partner());
CREATE POLICY admin_reads_all ON apikey.webhook_deliveries FOR SELECT TO apikey_admin USING (true);
CREATE POLICY partner_reads_own ON apikey.webhook_deliveries FOR SELECT TO apikey_partner
    USING (partner_id = @extschema@.apikey_current_partner());
CREATE POLICY admin_reads_all ON apikey.webhook_attempts FOR SELECT TO apikey_admin USING (true);
CREATE POLICY partner_reads_own ON apikey.webhook_attempts FOR SELECT TO apikey_partner
    USING (partner_id = @extschema@.apikey_current_partner());

-- Reminders: run by the delivering shims every minute.
GRANT EXECUTE ON FUNCTION @extschema@.apikey_send_reminders TO apikey_admin;
GRANT SELECT ON apikey.key_reminders TO apikey_admin;
ALTER TABLE apikey.key_reminders ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.key_reminders FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_reads_all ON apikey.key_reminders FOR SELECT TO apikey_admin USING (true);

-- Leak reports: the shim's POST /v1/secret-scanning, authenticated by GitHub's signature.
GRANT EXECUTE ON FUNCTION @extschema@.apikey_leak_report TO apikey_admin;

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

-- Partner-wide limits (0.8.0), as a key's credits: set and topped up by an operator only.
GRANT EXECUTE ON FUNCTION
    @extschema@.apikey_partner_set_limits,
    @extschema@.apikey_partner_add_credits
TO apikey_admin;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_credits_state TO apikey_admin, apikey_partner;
GRANT SELECT ON apikey.partner_credits TO apikey_admin;
ALTER TABLE apikey.partner_credits ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.partner_credits FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_reads_all ON apikey.partner_credits FOR SELECT TO apikey_admin USING (true);

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
