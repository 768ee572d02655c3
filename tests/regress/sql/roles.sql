-- What each role may do (docs/src/security.md), as the role itself (SET LOCAL ROLE)
-- inside one transaction that is rolled back. Generated ids are shown as <key>/<partner>.
\set ON_ERROR_ROLLBACK on
BEGIN;
SELECT apikey_partner_create('regress roles a') AS a \gset
SELECT apikey_partner_create('regress roles b') AS b \gset
SELECT key_id AS a_manager_id, token AS a_manager FROM apikey_issue(:'a', '{keys:manage}') \gset
SELECT key_id AS a_spare FROM apikey_issue(:'a', '{orders:read}') \gset
SELECT key_id AS a_operator FROM apikey_issue(:'a', '{admin:*}') \gset
SELECT key_id AS b_key, token AS b_token FROM apikey_issue(:'b', '{orders:read}') \gset

CREATE FUNCTION pg_temp.outcome(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(regexp_replace(SQLERRM, 'ak_live_[A-Za-z0-9]{16}', '<key>', 'g'),
                                              '[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}', '<uuid>', 'g');
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.outcome(text) TO PUBLIC;

-- apikey_verifier: verification and identity, nothing else.
SET LOCAL ROLE apikey_verifier;
SELECT valid, reason FROM apikey_verify(:'b_token');
SELECT apikey_current_key() = :'b_key' AS identity_set;
SELECT label AS statement, pg_temp.outcome(s) AS outcome
FROM (VALUES ('SELECT apikey_issue(b, ''{orders:read}'')', 'SELECT apikey_issue(' || quote_literal(:'b') || ', ''{orders:read}'')'),
             ('SELECT apikey_revoke(b_key)', 'SELECT apikey_revoke(' || quote_literal(:'b_key') || ')'),
             ('SELECT count(*) FROM apikey.keys', 'SELECT count(*) FROM apikey.keys'),
             ('SELECT count(*) FROM apikey.audit_log', 'SELECT count(*) FROM apikey.audit_log'),
             ('SELECT apikey_has_scope(''{a:b}'', ''a:b'')', 'SELECT apikey_has_scope(''{a:b}'', ''a:b'')'),
             ('SELECT apikey_status()', 'SELECT apikey_status()'),
             ('SELECT apikey_webhook_create(b, ''https://example.com/'')', 'SELECT apikey_webhook_create(' || quote_literal(:'b') || ', ''https://example.com/'')'),
             ('SELECT apikey_webhook_claim()', 'SELECT apikey_webhook_claim()'),
             ('SELECT apikey_leak_report(b_token)', 'SELECT apikey_leak_report(' || quote_literal(:'b_token') || ')'),
             ('SELECT count(*) FROM apikey.webhook_endpoint_info', 'SELECT count(*) FROM apikey.webhook_endpoint_info')) AS t(label, s);
-- A failed verification ends the identity of the transaction.
SELECT reason, apikey_current_key() IS NULL AS identity_cleared FROM apikey_verify(NULL);
RESET ROLE;

-- apikey_partner: its own partner's keys, with a keys:manage key verified first.
SET LOCAL ROLE apikey_partner;
SELECT pg_temp.outcome('SELECT apikey_revoke(' || quote_literal(:'a_spare') || ')') AS before_verifying;
SELECT count(*) AS keys_seen_before_verifying FROM apikey.keys;
SELECT valid FROM apikey_verify(:'a_manager', '{keys:manage}');
SELECT count(*) AS own_keys_seen FROM apikey.keys;
SELECT label AS statement, pg_temp.outcome(s) AS outcome
FROM (VALUES ('SELECT apikey_set_enabled(a_spare, false)', 'SELECT apikey_set_enabled(' || quote_literal(:'a_spare') || ', false)'),
             ('SELECT apikey_rotate(a_spare, scopes => ''{orders:write}'')', 'SELECT apikey_rotate(' || quote_literal(:'a_spare') || ', scopes => ''{orders:write}'')'),
             ('SELECT apikey_revoke(a_operator)', 'SELECT apikey_revoke(' || quote_literal(:'a_operator') || ')'),
             ('SELECT apikey_revoke(b_key)', 'SELECT apikey_revoke(' || quote_literal(:'b_key') || ')'),
             ('SELECT apikey_issue(a, ''{orders:read}'')', 'SELECT apikey_issue(' || quote_literal(:'a') || ', ''{orders:read}'')'),
             ('SELECT apikey_partner_set_active(a, false)', 'SELECT apikey_partner_set_active(' || quote_literal(:'a') || ', false)'),
             ('SELECT secret_hash FROM apikey.keys', 'SELECT secret_hash FROM apikey.keys'),
             ('UPDATE apikey.keys SET enabled = true', 'UPDATE apikey.keys SET enabled = true'),
             ('DELETE FROM apikey.audit_log', 'DELETE FROM apikey.audit_log'),
             ('SELECT apikey_webhook_create(b, ''https://example.com/'')', 'SELECT apikey_webhook_create(' || quote_literal(:'b') || ', ''https://example.com/'')'),
             ('SELECT apikey_webhook_create(a, ''https://example.com/'')', 'SELECT apikey_webhook_create(' || quote_literal(:'a') || ', ''https://example.com/'')'),
             ('SELECT apikey_webhook_claim()', 'SELECT apikey_webhook_claim()'),
             ('SELECT apikey_webhook_report(1, 200, 1, NULL)', 'SELECT apikey_webhook_report(1, 200, 1, NULL)'),
             ('SELECT apikey_send_reminders()', 'SELECT apikey_send_reminders()'),
             ('SELECT apikey_leak_report(b_token)', 'SELECT apikey_leak_report(' || quote_literal(:'b_token') || ')'),
             ('SELECT secret_sealed FROM apikey.webhook_endpoints', 'SELECT secret_sealed FROM apikey.webhook_endpoints'),
             ('SELECT apikey_revoke(a_spare)', 'SELECT apikey_revoke(' || quote_literal(:'a_spare') || ')')) AS t(label, s);
RESET ROLE;

-- apikey_admin: every partner, but never the hashes, and the audit log stays append-only.
SET LOCAL ROLE apikey_admin;
SELECT label AS statement, pg_temp.outcome(s) AS outcome
FROM (VALUES ('SELECT apikey_issue(b, ''{orders:read}'')', 'SELECT apikey_issue(' || quote_literal(:'b') || ', ''{orders:read}'')'),
             ('SELECT apikey_revoke(b_key)', 'SELECT apikey_revoke(' || quote_literal(:'b_key') || ')'),
             ('SELECT apikey_partner_set_active(b, false)', 'SELECT apikey_partner_set_active(' || quote_literal(:'b') || ', false)'),
             ('SELECT secret_hash FROM apikey.keys', 'SELECT secret_hash FROM apikey.keys'),
             ('SELECT pepper_fingerprint FROM apikey.keys', 'SELECT pepper_fingerprint FROM apikey.keys'),
             ('DELETE FROM apikey.audit_log', 'DELETE FROM apikey.audit_log'),
             ('TRUNCATE apikey.audit_log', 'TRUNCATE apikey.audit_log'),
             ('SELECT secret_sealed FROM apikey.webhook_endpoints', 'SELECT secret_sealed FROM apikey.webhook_endpoints'),
             ('DELETE FROM apikey.webhook_attempts', 'DELETE FROM apikey.webhook_attempts')) AS t(label, s);
RESET ROLE;
ROLLBACK;
