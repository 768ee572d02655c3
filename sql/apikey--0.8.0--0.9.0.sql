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
