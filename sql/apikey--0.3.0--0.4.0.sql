-- apikey 0.3.0 -> 0.4.0. Run by ALTER EXTENSION apikey UPDATE, never by hand.
\echo Use "ALTER EXTENSION apikey UPDATE" to load this file. \quit

-- Webhook endpoints, their deliveries and every attempt (see schema.sql).
-- Partners' webhook endpoints. The signing secret is sealed (ChaCha20-Poly1305 under a key
-- derived from the pepper named by secret_pepper, extension/src/webhook_endpoints.rs): no
-- role but the owner reads those columns, and what they hold signs nothing without the
-- pepper file. During a rotation's grace the previous secret signs too.
CREATE TABLE apikey.webhook_endpoints (
    endpoint_id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    partner_id             uuid NOT NULL REFERENCES apikey.partners (partner_id),
    url                    text NOT NULL,
    events                 text[] NOT NULL,
    enabled                boolean NOT NULL DEFAULT true,
    secret_sealed          bytea NOT NULL,
    secret_pepper          text NOT NULL,
    previous_secret_sealed bytea,
    previous_secret_pepper text,
    previous_secret_until  timestamptz,
    created_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    secret_rotated_at      timestamptz,
    -- Since when every attempt failed; cleared by a success. Too long, and the endpoint is
    -- disabled (disabled_at, disabled_reason) until re-enabled.
    failing_since          timestamptz,
    disabled_at            timestamptz,
    disabled_reason        text
);
CREATE INDEX webhook_endpoints_partner_id_idx ON apikey.webhook_endpoints (partner_id);

-- One row per event and endpoint subscribed to it, written with the event. The shims lease
-- due rows (apikey_webhook_claim) and report each attempt (apikey_webhook_report).
CREATE TABLE apikey.webhook_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES apikey.events (event_id) ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL REFERENCES apikey.webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    partner_id      uuid NOT NULL,
    event_type      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    leased_until    timestamptz,
    delivered_at    timestamptz,
    last_status     int,
    last_error      text
);
CREATE INDEX webhook_deliveries_due_idx ON apikey.webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint_id_idx ON apikey.webhook_deliveries (endpoint_id, delivery_id);
CREATE INDEX webhook_deliveries_event_id_idx ON apikey.webhook_deliveries (event_id);

-- Every attempt: HTTP status (NULL without an answer), latency and what went wrong.
CREATE TABLE apikey.webhook_attempts (
    attempt_id  bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES apikey.webhook_deliveries (delivery_id) ON DELETE CASCADE,
    endpoint_id uuid NOT NULL,
    partner_id  uuid NOT NULL,
    event_id    uuid NOT NULL,
    attempt     int NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    status_code int,
    latency_ms  int,
    error       text
);
CREATE INDEX webhook_attempts_delivery_id_idx ON apikey.webhook_attempts (delivery_id, attempt);

SELECT pg_catalog.pg_extension_config_dump('apikey.webhook_endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.webhook_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.webhook_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.webhook_deliveries_delivery_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.webhook_attempts_attempt_id_seq', '');

-- Reminders already sent (apikey_send_reminders): one row per key and kind ('expiring_7d',
-- 'expiring_1d', 'rotation_due'), so each is sent once even after its event is deleted.
-- No foreign key, as for events and the audit log: what a DBA may do to apikey.keys
-- (TRUNCATE among it) stays as it was.
CREATE TABLE apikey.key_reminders (
    key_id  text NOT NULL,
    kind    text NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (key_id, kind)
);
-- The keys a minute's reminder pass looks at: live ones with an expiry.
CREATE INDEX keys_expires_at_idx ON apikey.keys (expires_at)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('apikey.key_reminders', '');

-- Endpoint management (extension/src/webhook_endpoints.rs).
CREATE FUNCTION @extschema@.apikey_webhook_create(
    partner_id uuid,
    url text,
    events text[] DEFAULT '{*}'
) RETURNS TABLE (endpoint_id uuid, secret text)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_webhook_create_wrapper';

CREATE FUNCTION @extschema@.apikey_webhook_rotate_secret(
    endpoint_id uuid,
    grace interval DEFAULT '24 hours'
) RETURNS text
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_webhook_rotate_secret_wrapper';

CREATE FUNCTION @extschema@.apikey_webhook_delete(endpoint_id uuid) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_webhook_delete_wrapper';

CREATE FUNCTION @extschema@.apikey_webhook_set_enabled(endpoint_id uuid, enabled boolean)
RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_webhook_set_enabled_wrapper';

CREATE FUNCTION @extschema@.apikey_webhook_send_test(endpoint_id uuid) RETURNS uuid
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_webhook_send_test_wrapper';

-- Delivery, for the shim (extension/src/webhook_delivery.rs).
CREATE FUNCTION @extschema@.apikey_webhook_claim(
    max_deliveries int DEFAULT 10,
    lease interval DEFAULT '1 minute'
) RETURNS TABLE (
    delivery_id bigint,
    endpoint_id uuid,
    url text,
    msg_id text,
    msg_timestamp bigint,
    payload text,
    signature text,
    attempt int
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_webhook_claim_wrapper';

CREATE FUNCTION @extschema@.apikey_webhook_report(
    delivery_id bigint,
    status_code int,
    latency_ms int,
    error text
) RETURNS text
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_webhook_report_wrapper';

REVOKE ALL ON FUNCTION
    @extschema@.apikey_webhook_create,
    @extschema@.apikey_webhook_rotate_secret,
    @extschema@.apikey_webhook_delete,
    @extschema@.apikey_webhook_set_enabled,
    @extschema@.apikey_webhook_send_test,
    @extschema@.apikey_webhook_claim,
    @extschema@.apikey_webhook_report
FROM PUBLIC;
CREATE FUNCTION @extschema@.apikey_send_reminders() RETURNS bigint
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_send_reminders_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_send_reminders FROM PUBLIC;

CREATE FUNCTION @extschema@.apikey_leak_report(
    token text,
    url text DEFAULT NULL,
    source text DEFAULT NULL,
    revoke boolean DEFAULT true
) RETURNS text
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_leak_report_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_leak_report FROM PUBLIC;
REVOKE ALL ON apikey.webhook_endpoints, apikey.webhook_deliveries, apikey.webhook_attempts,
    apikey.key_reminders
FROM PUBLIC;
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
    updated_at, secret_rotated_at, failing_since, disabled_at, disabled_reason
) ON apikey.webhook_endpoints TO apikey_admin, apikey_partner;
CREATE VIEW apikey.webhook_endpoint_info WITH (security_invoker = true) AS
SELECT
    endpoint_id, partner_id, url, events, enabled, created_at, updated_at, secret_rotated_at,
    CASE WHEN previous_secret_until > clock_timestamp() THEN previous_secret_until END
        AS previous_secret_until,
    failing_since, disabled_at, disabled_reason
FROM apikey.webhook_endpoints;
COMMENT ON VIEW apikey.webhook_endpoint_info IS
    'Webhook endpoints without their sealed secrets; previous_secret_until while the previous secret still signs';
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
