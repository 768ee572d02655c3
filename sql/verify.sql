-- apikey_verify is a C-language function written against the calling convention directly
-- (see extension/src/verify.rs for why); this is its declaration, as the contract states it.
-- It never raises for any token value, NULL included, so it is not STRICT. The rate columns
-- (0.2.0) come from the server-wide rate limit, credits_remaining (0.7.0) from the key's
-- balance; NULL where none was consulted.
CREATE FUNCTION apikey_verify(
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
