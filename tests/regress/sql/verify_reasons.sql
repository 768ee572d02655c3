-- Every reason apikey_verify gives (docs/src/sql.md, "Reason codes"), and which of them name the key.
-- Keys are put into each state the way an operator would, or by plain SQL where no function
-- does it (an expiry in the past, a hash that does not match). Everything is rolled back.
\set ON_ERROR_ROLLBACK on
BEGIN;
SELECT apikey_partner_create('regress verify') AS partner \gset
SELECT apikey_partner_create('regress inactive') AS inactive_partner \gset

CREATE TEMP TABLE issued (what text PRIMARY KEY, key_id text, token text);
CREATE FUNCTION pg_temp.issue(what text, partner uuid, scopes text[],
                              rate int DEFAULT 300, cidrs cidr[] DEFAULT NULL,
                              not_before timestamptz DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO issued
    SELECT what, i.key_id, i.token
    FROM apikey_issue(partner, scopes, rate_per_minute => rate, allowed_cidrs => cidrs,
                      not_before => not_before) i
$$;
SELECT pg_temp.issue('live', :'partner', '{orders:read}');
SELECT pg_temp.issue('revoked', :'partner', '{orders:read}');
SELECT pg_temp.issue('disabled', :'partner', '{orders:read}');
SELECT pg_temp.issue('expired', :'partner', '{orders:read}');
SELECT pg_temp.issue('not yet valid', :'partner', '{orders:read}',
                     not_before => now() + interval '1 day');
SELECT pg_temp.issue('inactive partner', :'inactive_partner', '{orders:read}');
SELECT pg_temp.issue('allow-listed', :'partner', '{orders:read}', cidrs => '{10.0.0.0/8}');
SELECT pg_temp.issue('one a minute', :'partner', '{orders:read}', rate => 1);
SELECT pg_temp.issue('wrong hash', :'partner', '{orders:read}');
SELECT pg_temp.issue('deleted', :'partner', '{orders:read}');

SELECT apikey_revoke(key_id, 'regress') FROM issued WHERE what = 'revoked';
SELECT apikey_set_enabled(key_id, false) FROM issued WHERE what = 'disabled';
UPDATE apikey.keys SET expires_at = clock_timestamp() - interval '1 second'
WHERE key_id = (SELECT key_id FROM issued WHERE what = 'expired');
SELECT apikey_partner_set_active(:'inactive_partner', false);
UPDATE apikey.keys SET secret_hash = (SELECT secret_hash FROM apikey.keys
                                      WHERE key_id = (SELECT key_id FROM issued WHERE what = 'live'))
WHERE key_id = (SELECT key_id FROM issued WHERE what = 'wrong hash');
DELETE FROM apikey.keys WHERE key_id = (SELECT key_id FROM issued WHERE what = 'deleted');

-- The state reasons, and `identified`: whether the key's id and partner come back.
SELECT i.what, v.valid, v.reason, v.key_id IS NOT NULL AS identified
FROM issued i, apikey_verify(i.token, '{orders:read}', '192.0.2.1') v
WHERE i.what <> 'one a minute'
ORDER BY i.what;

-- Scopes: a missing one, a wildcard requirement never met, NULL and invalid ones.
SELECT r.required, v.reason, v.key_id IS NOT NULL AS identified
FROM issued i,
     (VALUES ('{orders:read}'::text[]), ('{orders:write}'), ('{orders:read,orders:write}'),
             ('{}'), (ARRAY[NULL]::text[]), ('{not-a-scope}')) AS r(required),
     apikey_verify(i.token, r.required) v
WHERE i.what = 'live';

-- The allow-listed key from inside its network, from outside, and with no address.
SELECT a.ip, v.reason
FROM issued i, (VALUES ('10.1.2.3'::inet), ('192.0.2.1'), (NULL)) AS a(ip),
     apikey_verify(i.token, '{}', a.ip) v
WHERE i.what = 'allow-listed';

-- The rate limit (one a minute): the second call is refused, with what is left.
SELECT n, v.reason, v.rate_remaining
FROM issued i, generate_series(1, 2) n, apikey_verify(i.token) v
WHERE i.what = 'one a minute'
ORDER BY n;

-- Tokens that are not tokens never raise.
SELECT x.token, v.valid, v.reason, v.key_id
FROM (VALUES ('NULL', NULL), ('empty', ''), ('garbage', 'garbage'),
             ('too short', 'ak_live_short_x'), ('100 kB', repeat('a', 100000)),
             ('non-ASCII', 'ak_live_ÄÖÜ_ßßß'), ('NUL-free control', E'ak\t live')) AS x(token, t),
     apikey_verify(x.t) v;
-- A real token with its last character changed fails its checksum.
SELECT v.reason
FROM issued i,
     apikey_verify(left(i.token, -1) || CASE WHEN right(i.token, 1) = 'A' THEN 'B' ELSE 'A' END) v
WHERE i.what = 'live';
ROLLBACK;
