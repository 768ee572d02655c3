-- What the management functions refuse: the SQLSTATE a client branches on and a message
-- naming the argument (docs/src/decisions.md). Generated ids in messages
-- are shown as <partner> and <key>. Everything is rolled back.
\set ON_ERROR_ROLLBACK on
BEGIN;
SELECT apikey_partner_create('regress lifecycle') AS partner \gset
SELECT key_id AS k FROM apikey_issue(:'partner', '{orders:read}') \gset
SELECT key_id AS gone FROM apikey_issue(:'partner', '{orders:read}') \gset
SELECT apikey_revoke(:'gone');

-- Runs `call` (with $partner, $key and $revoked standing for the ids above) and says how it
-- ended: "ok", or "<SQLSTATE>: <message> [<detail>]".
CREATE FUNCTION pg_temp.outcome(call text, partner uuid, k text, revoked text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    sql text := replace(replace(replace(call, '$partner', quote_literal(partner)),
                                '$key', quote_literal(k)), '$revoked', quote_literal(revoked));
    detail text;
BEGIN
    EXECUTE 'SELECT ' || sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    -- The DETAIL names the argument for programs (the shim's 422 field): [argument: x].
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || regexp_replace(replace(SQLERRM, partner::text, '<partner>'),
                                              'ak_live_[A-Za-z0-9]{16}', '<key>', 'g')
        || coalesce(' [' || nullif(detail, '') || ']', '');
END
$$;

SELECT call, pg_temp.outcome(call, :'partner', :'k', :'gone') AS outcome
FROM (VALUES
    ('apikey_issue(NULL, ''{orders:read}'')'),
    ('apikey_issue($partner, NULL)'),
    ('apikey_issue($partner, ''{orders}'')'),
    ('apikey_issue($partner, ''{orders:read,NULL}'')'),
    ('apikey_issue($partner, ''{orders:read}'', rate_per_minute => 0)'),
    ('apikey_issue($partner, ''{orders:read}'', expires_at => now() - interval ''1 minute'')'),
    ('apikey_issue($partner, ''{orders:read}'', expires_at => now() + interval ''1 day'', not_before => now() + interval ''2 days'')'),
    ('apikey_issue($partner, ''{orders:read}'', name => ''   '')'),
    ('apikey_issue($partner, ''{orders:read}'', tags => ''{"has space"}'')'),
    ('apikey_issue($partner, ''{orders:read}'', metadata => ''[1, 2]'')'),
    ('apikey_issue($partner, ''{orders:read}'', prefix => ''Bad-Prefix'')'),
    ('apikey_issue($partner, ''{orders:read}'', environment => ''prod'')'),
    ('apikey_issue(''00000000-0000-0000-0000-000000000000'', ''{orders:read}'')'),
    ('apikey_rotate($key, grace => ''-1 hour'')'),
    ('apikey_rotate($key, scopes => ''{bad}'')'),
    ('apikey_rotate(NULL)'),
    ('apikey_rotate($revoked)'),
    ('apikey_revoke(NULL)'),
    ('apikey_revoke($key, repeat(''r'', 501))'),
    ('apikey_revoke(''not a key id'')'),
    ('apikey_revoke(''ak_live_0000000000000000'')'),
    ('apikey_revoke($revoked)'),
    ('apikey_set_enabled($key, NULL)'),
    ('apikey_set_enabled($revoked, true)'),
    ('apikey_partner_create(NULL)'),
    ('apikey_partner_create('''')'),
    ('apikey_partner_create(''REGRESS lifecycle'')'),
    ('apikey_partner_create(''x'', ''not an address'')'),
    ('apikey_partner_set_active(NULL, false)'),
    ('apikey_webhook_create($partner, ''ftp://example.com/'')'),
    ('apikey_webhook_create($partner, ''https://user:pw@example.com/'')'),
    ('apikey_webhook_create($partner, ''https://example.com/'', ''{key.nope}'')'),
    ('apikey_webhook_create($partner, ''https://example.com/'', ''{}'')'),
    ('apikey_webhook_rotate_secret(NULL)'),
    ('apikey_webhook_set_enabled(''00000000-0000-0000-0000-000000000000'', true)'),
    ('apikey_webhook_report(NULL, 200, 1, NULL)'),
    ('apikey_webhook_report(1, 99, 1, NULL)'),
    ('apikey_webhook_claim(0)')
) AS calls(call);

-- Rotating twice: the second rotation names the successor.
SELECT count(*) FROM apikey_rotate(:'k', grace => '1 hour');
SELECT pg_temp.outcome('apikey_rotate($key)', :'partner', :'k', :'gone') AS outcome;
ROLLBACK;
