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
