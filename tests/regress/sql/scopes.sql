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

-- Resource scopes: a type-wide grant covers each instance, an instance grant only itself.
INSERT INTO issued
SELECT g.what, i.key_id, i.token
FROM (VALUES ('order 7', '{orders/7:read,sites/s~1:*}'::text[])) AS g(what, scopes),
     apikey_issue(:'partner', g.scopes) i;
SELECT i.what, r.required::text, v.reason
FROM (VALUES (1, 'narrow', '{orders/7:read}'::text[]), (2, 'narrow', '{invoices/9:delete}'),
             (3, 'narrow', '{orders/7:write}'), (4, 'order 7', '{orders/7:read}'),
             (5, 'order 7', '{orders/8:read}'), (6, 'order 7', '{orders:read}'),
             (7, 'order 7', '{orders/7:*}'), (8, 'order 7', '{sites/s~1:write,orders/7:read}'),
             (9, 'order 7', '{sites/s1:write}'), (10, 'admin', '{orders/7:delete}'))
       AS r(n, what, required)
JOIN issued i USING (what),
     apikey_verify(i.token, r.required) v
ORDER BY r.n;

-- Instance scopes are validated like every scope on issue.
CREATE FUNCTION pg_temp.issue_error(partner uuid, scope text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM apikey_issue(partner, ARRAY[scope]);
    RETURN 'issued';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
SELECT s.scope, pg_temp.issue_error(:'partner', s.scope)
FROM (VALUES ('orders/:read'), ('orders/7/8:read'), ('orders/*:read'), ('orders/a b:read'),
             ('orders/' || repeat('7', 65) || ':read')) AS s(scope);

-- apikey_has_any_scope: any one valid requirement met; NULL in, NULL out; a NULL, empty or
-- invalid requirement is never met; huge and hostile strings answer without raising.
SELECT c.call, c.answer
FROM (VALUES
    ('{orders/7:read}, {orders/8:read,orders/7:read}',
     apikey_has_any_scope('{orders/7:read}', '{orders/8:read,orders/7:read}')),
    ('{orders:*}, {orders/9:delete}', apikey_has_any_scope('{orders:*}', '{orders/9:delete}')),
    ('{orders/7:read}, {orders:read}', apikey_has_any_scope('{orders/7:read}', '{orders:read}')),
    ('{*}, {}', apikey_has_any_scope('{*}', '{}')),
    ('{*}, {NULL,"",orders/:read}', apikey_has_any_scope('{*}', ARRAY[NULL, '', 'orders/:read'])),
    ('{*}, {NULL,a:b}', apikey_has_any_scope('{*}', ARRAY[NULL, 'a:b'])),
    ('NULL, {a:b}', apikey_has_any_scope(NULL, '{a:b}')),
    ('{a:b}, NULL', apikey_has_any_scope('{a:b}', NULL)),
    ('{NULL,a:*}, {a/1:b}', apikey_has_any_scope(ARRAY[NULL, 'a:*'], '{a/1:b}')),
    ('{*}, 1 MB', apikey_has_any_scope('{*}', ARRAY[repeat('a', 1000000)])),
    ('{1 MB}, {a:b}', apikey_has_any_scope(ARRAY[repeat('x', 1000000)], '{a:b}')),
    ('{*}, 10000 requirements',
     apikey_has_any_scope('{*}', ARRAY(SELECT 'a/' || g || ':b' FROM generate_series(1, 10000) g))),
    ('{a:*}, {a/1'';DROP:b}', apikey_has_any_scope('{a:*}', ARRAY['a/1'';DROP:b']))) AS c(call, answer);

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
