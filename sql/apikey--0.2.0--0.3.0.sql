-- apikey 0.2.0 -> 0.3.0. Run by ALTER EXTENSION apikey UPDATE, never by hand.
\echo Use "ALTER EXTENSION apikey UPDATE" to load this file. \quit

-- Standard Webhooks signatures, for applications that receive webhooks (see webhook.rs).
CREATE FUNCTION @extschema@.apikey_webhook_verify(
    secret text,
    msg_id text,
    msg_timestamp bigint,
    payload text,
    signature text,
    tolerance interval DEFAULT '5 minutes'
) RETURNS boolean
VOLATILE PARALLEL SAFE
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_webhook_verify_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_webhook_verify FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_webhook_verify TO apikey_admin, apikey_partner;

-- The outbox: events for partners (key.issued, key.revoked, ...), written in the same
-- transaction as their cause, so a change that rolls back announces nothing. Deleted by the
-- background worker after apikey.event_retention. Never holds a token or a secret.
CREATE TABLE apikey.events (
    event_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    partner_id uuid NOT NULL REFERENCES apikey.partners (partner_id),
    type       text NOT NULL,
    key_id     text,
    -- The webhook body: {"type", "timestamp", "data"}.
    payload    jsonb NOT NULL
);
CREATE INDEX events_created_at_idx ON apikey.events (created_at);
CREATE INDEX events_partner_id_idx ON apikey.events (partner_id, created_at);
SELECT pg_catalog.pg_extension_config_dump('apikey.events', '');
REVOKE ALL ON apikey.events FROM PUBLIC;
GRANT SELECT ON apikey.events TO apikey_admin, apikey_partner;
ALTER TABLE apikey.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE apikey.events FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_reads_all ON apikey.events FOR SELECT TO apikey_admin USING (true);
CREATE POLICY partner_reads_own ON apikey.events FOR SELECT TO apikey_partner
    USING (partner_id = @extschema@.apikey_current_partner());
