-- Scopes: a key's grants against an application's required scopes (all of them, with
-- wildcards), and the scope functions given NULLs and huge strings. Everything is rolled back.
\set ON_ERROR_ROLLBACK on
BEGIN;
SELECT apikey_partner_create('regress scopes') AS partner \gset

CREATE TEMP TABLE issued (what text PRIMARY KEY, key_id text, token text);
INSERT INTO issued
SELECT g.what, i.key_id, i.token
FROM (VALUES ('narrow', '{orders:read,invoices:*}'::text[]), ('admin', '{admin:*}'), ('star', '{*}')) AS g(what, scopes),
     apikey_issue(:'partner', g.scopes) i;

-- All of the required scopes must be granted; resource:* grants that resource's actions, and
-- admin:* and * grant everything. A refusal still names the (authentic) key.
SELECT i.what, coalesce(r.required::text, 'NULL') AS required, v.reason,
       v.key_id = i.key_id AS identified
FROM (VALUES (1, 'narrow', '{orders:read}'::text[]), (2, 'narrow', '{invoices:delete,orders:read}'),
             (3, 'narrow', '{orders:read,orders:write}'), (4, 'narrow', '{orders:*}'),
             (5, 'narrow', '{}'), (6, 'narrow', NULL),
             (7, 'admin', '{orders:write,billing:refund}'), (8, 'star', '{anything:at_all}'))
       AS r(n, what, required)
JOIN issued i USING (what),
     apikey_verify(i.token, r.required) v
ORDER BY r.n;

-- apikey_has_scope is strict (NULL in, NULL out), skips NULL grants, and answers huge
-- strings without raising.
SELECT c.call, c.answer
FROM (VALUES
    ('NULL, a:b', apikey_has_scope(NULL, 'a:b')),
    ('{a:b}, NULL', apikey_has_scope('{a:b}', NULL)),
    ('{NULL,a:*}, a:b', apikey_has_scope(ARRAY[NULL, 'a:*'], 'a:b')),
    ('{}, a:b', apikey_has_scope('{}', 'a:b')),
    ('{a:*}, 1 MB', apikey_has_scope('{a:*}', repeat('a', 1000000))),
    ('{1 MB}, a:b', apikey_has_scope(ARRAY[repeat('x', 1000000)], 'a:b'))) AS c(call, answer);

-- apikey_require_scope refuses what the verified key lacks with 42501, and a bounded message
-- even for a huge requirement.
SELECT v.reason FROM issued i, apikey_verify(i.token) v WHERE i.what = 'narrow';
CREATE FUNCTION pg_temp.refusal(required text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM apikey_require_scope(required);
    RETURN 'granted';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ', message of ' || CASE WHEN length(SQLERRM) < 300 THEN 'under' ELSE 'over' END
        || ' 300 characters';
END
$$;
SELECT r.label, pg_temp.refusal(r.required)
FROM (VALUES ('NULL', NULL), ('empty', ''), ('1 MB', repeat('x', 1000000)),
             ('orders:write', 'orders:write'), ('orders:read', 'orders:read')) AS r(label, required);
ROLLBACK;
