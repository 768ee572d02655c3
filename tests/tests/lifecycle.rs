//! Issue, rotate, revoke, enable/disable and partners: validation with SQLSTATEs,
//! inheritance on rotation, grace periods, concurrency, and one audit row per event.

use apikey_tests::*;
use postgres::Client;
use std::sync::{Arc, Barrier};

fn setup() -> (Client, Uuid) {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    (c, partner)
}

/// `clock_timestamp()` as text, at full precision.
fn clock(c: &mut Client) -> String {
    c.query_one("SELECT clock_timestamp()::text", &[])
        .expect("clock")
        .get(0)
}

fn key_column<T: for<'a> postgres::types::FromSql<'a>>(
    c: &mut Client,
    key_id: &str,
    expr: &str,
) -> T {
    c.query_one(
        &format!("SELECT {expr} FROM apikey.keys WHERE key_id = $1"),
        &[&key_id],
    )
    .unwrap_or_else(|e| panic!("{expr}: {e}"))
    .get(0)
}

fn audit_actions(c: &mut Client, key_id: &str) -> Vec<String> {
    c.query(
        "SELECT action FROM apikey.audit_log WHERE key_id = $1 ORDER BY id",
        &[&key_id],
    )
    .expect("audit")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn issue_defaults_and_token_shape() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    assert!(key.key_id.starts_with("ak_live_"), "{}", key.key_id);
    assert!(key.token.starts_with(&format!("{}_", key.key_id)));
    assert!(key
        .token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    assert!(key.secret().len() >= 43, "at least 256 bits of base62");
    let row = c
        .query_one(
            "SELECT environment, rate_per_minute, enabled, scopes, tags, metadata::text, created_by, \
                    secret_hash LIKE '$argon2id$v=19$m=19456,t=2,p=1$%' \
             FROM apikey.keys WHERE key_id = $1",
            &[&key.key_id],
        )
        .expect("row");
    assert_eq!(row.get::<_, String>(0), "live");
    assert_eq!(row.get::<_, i32>(1), 300);
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, Vec<String>>(3), vec!["orders:read"]);
    assert_eq!(row.get::<_, Vec<String>>(4), Vec::<String>::new());
    assert_eq!(row.get::<_, String>(5), "{}");
    assert_eq!(row.get::<_, String>(6), "postgres");
    assert!(
        row.get::<_, bool>(7),
        "Argon2id with the default parameters"
    );

    let custom: String = c
        .query_one(
            "SELECT token FROM apikey_issue($1, '{a:b}', environment => 'test', prefix => 'acme')",
            &[&partner],
        )
        .expect("issue")
        .get(0);
    assert!(custom.starts_with("acme_test_"));
    assert_eq!(reason(&mut c, &custom), "ok");

    let mut tx = c.transaction().expect("begin");
    tx.batch_execute("SET LOCAL apikey.default_prefix = 'corp'")
        .expect("set prefix");
    let row = tx
        .query_one("SELECT key_id FROM apikey_issue($1, '{a:b}')", &[&partner])
        .expect("issue");
    assert!(row.get::<_, String>(0).starts_with("corp_live_"));
}

#[test]
fn issue_rejects_bad_arguments_with_sqlstates_naming_them() {
    let (mut c, partner) = setup();
    let cases: [(&str, &str, &str); 17] = [
        ("apikey_issue(NULL, '{a:b}')", "22004", "partner_id"),
        ("apikey_issue('00000000-0000-0000-0000-000000000000', '{a:b}')", "P0002", "partner"),
        ("apikey_issue($1, NULL)", "22004", "scopes"),
        ("apikey_issue($1, '{bad scope}')", "22023", "scopes"),
        ("apikey_issue($1, '{orders}')", "22023", "scopes"),
        ("apikey_issue($1, ARRAY[NULL::text])", "22023", "scopes"),
        ("apikey_issue($1, '{a:b}', rate_per_minute => 0)", "22023", "rate_per_minute"),
        ("apikey_issue($1, '{a:b}', rate_per_minute => -5)", "22023", "rate_per_minute"),
        ("apikey_issue($1, '{a:b}', rate_per_minute => NULL)", "22004", "rate_per_minute"),
        ("apikey_issue($1, '{a:b}', expires_at => now() - interval '1 minute')", "22023", "expires_at"),
        ("apikey_issue($1, '{a:b}', expires_at => now() + interval '1 day', not_before => now() + interval '2 days')", "22023", "not_before"),
        ("apikey_issue($1, '{a:b}', environment => 'prod')", "22023", "environment"),
        ("apikey_issue($1, '{a:b}', prefix => 'Bad_Prefix')", "22023", "prefix"),
        ("apikey_issue($1, '{a:b}', tags => '{\"has space\"}')", "22023", "tags"),
        ("apikey_issue($1, '{a:b}', metadata => '[1,2]')", "22023", "metadata"),
        ("apikey_issue($1, '{a:b}', allowed_cidrs => '{}')", "22023", "allowed_cidrs"),
        ("apikey_issue($1, '{a:b}', name => repeat('n', 100000))", "22023", "name"),
    ];
    for (call, code, argument) in cases {
        let sql = format!("SELECT * FROM {call}");
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = if call.contains("$1") {
            vec![&partner]
        } else {
            vec![]
        };
        let result = c.query(&sql, &params);
        let message = match &result {
            Err(e) => e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default(),
            Ok(_) => String::new(),
        };
        assert_eq!(sqlstate(result), code, "{call}");
        assert!(
            message.contains(argument),
            "{call}: message {message:?} should name {argument}"
        );
        assert!(message.len() < 400, "{call}: message is bounded");
    }
    let count: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.keys WHERE partner_id = $1",
            &[&partner],
        )
        .expect("count")
        .get(0);
    assert_eq!(count, 0, "no failed issue left a row behind");
}

#[test]
fn rotation_inherits_and_links() {
    let (mut c, partner) = setup();
    let old: (String, String) = {
        let row = c
            .query_one(
                "SELECT key_id, token FROM apikey_issue($1, '{orders:read,orders:write}', name => 'billing', \
                   expires_at => now() + interval '30 days', rate_per_minute => 42, \
                   allowed_cidrs => '{192.0.2.0/24}', environment => 'test', tags => '{team:pay}', \
                   metadata => '{\"owner\": \"ana\"}', prefix => 'acme')",
                &[&partner],
            )
            .expect("issue");
        (row.get(0), row.get(1))
    };
    let new = c
        .query_one("SELECT key_id, token FROM apikey_rotate($1)", &[&old.0])
        .expect("rotate");
    let (new_id, new_token): (String, String) = (new.get(0), new.get(1));
    assert!(
        new_id.starts_with("acme_test_"),
        "prefix and environment kept: {new_id}"
    );
    let same: bool = c
        .query_one(
            "SELECT (o.partner_id, o.name, o.scopes, o.expires_at, o.rate_per_minute, o.allowed_cidrs, o.tags, o.metadata) \
                  = (n.partner_id, n.name, n.scopes, n.expires_at, n.rate_per_minute, n.allowed_cidrs, n.tags, n.metadata) \
             FROM apikey.keys o, apikey.keys n WHERE o.key_id = $1 AND n.key_id = $2",
            &[&old.0, &new_id],
        )
        .expect("compare")
        .get(0);
    assert!(
        same,
        "the new key inherits partner, name, scopes, expiry, rate, CIDRs, tags, metadata"
    );
    assert_eq!(
        key_column::<Option<String>>(&mut c, &old.0, "rotated_to"),
        Some(new_id.clone())
    );
    assert_eq!(
        verify(
            &mut c,
            Some(&new_token),
            &["orders:write"],
            Some("192.0.2.9")
        )
        .reason,
        "ok"
    );
    assert_eq!(
        verify(&mut c, Some(&old.1), &[], Some("192.0.2.9")).reason,
        "revoked",
        "no grace"
    );
    assert!(audit_actions(&mut c, &old.0).contains(&"rotate".to_string()));

    let narrowed = c
        .query_one(
            "SELECT key_id FROM apikey_rotate($1, scopes => '{orders:read}')",
            &[&new_id],
        )
        .expect("rotate with scopes");
    let narrowed_id: String = narrowed.get(0);
    assert_eq!(
        key_column::<Vec<String>>(&mut c, &narrowed_id, "scopes"),
        vec!["orders:read"]
    );
    assert_eq!(
        sqlstate(c.query(
            "SELECT * FROM apikey_rotate($1, scopes => '{bad}')",
            &[&narrowed_id]
        )),
        "22023"
    );
}

#[test]
fn grace_period_keeps_the_old_key_valid_but_never_past_its_expiry() {
    let (mut c, partner) = setup();
    let old = issue(&mut c, partner, &["a:b"]);
    let before = clock(&mut c);
    let new: String = c
        .query_one(
            "SELECT token FROM apikey_rotate($1, '1 hour')",
            &[&old.key_id],
        )
        .expect("rotate")
        .get(0);
    let after = clock(&mut c);
    // The grace period ends exactly one hour after the rotation, taken at the rotation's
    // own instant (between the two clock readings), not at its transaction's start.
    let grace_end_in_window: bool = c
        .query_one(
            "SELECT revoked_at - interval '1 hour' BETWEEN $2::text::timestamptz AND $3::text::timestamptz \
             FROM apikey.keys WHERE key_id = $1",
            &[&old.key_id, &before, &after],
        )
        .expect("grace end")
        .get(0);
    assert!(
        grace_end_in_window,
        "grace end outside [{before}, {after}] + 1 hour"
    );
    assert_eq!(
        reason(&mut c, &old.token),
        "ok",
        "old key valid during grace"
    );
    assert_eq!(reason(&mut c, &new), "ok");
    // Revoking during grace ends it at once.
    assert!(c
        .query_one("SELECT apikey_revoke($1)", &[&old.key_id])
        .expect("revoke")
        .get::<_, bool>(0));
    assert_eq!(reason(&mut c, &old.token), "revoked");

    let short: String = c
        .query_one("SELECT key_id FROM apikey_issue($1, '{a:b}', expires_at => now() + interval '10 minutes')", &[&partner])
        .expect("issue")
        .get(0);
    c.query("SELECT * FROM apikey_rotate($1, '7 days')", &[&short])
        .expect("rotate");
    let capped: bool = key_column(&mut c, &short, "revoked_at = expires_at");
    assert!(capped, "grace is capped at the old key's own expiry");

    let another = issue(&mut c, partner, &["a:b"]);
    assert_eq!(
        sqlstate(c.query(
            "SELECT * FROM apikey_rotate($1, '-1 hour')",
            &[&another.key_id]
        )),
        "22023"
    );
    assert_eq!(
        reason(&mut c, &another.token),
        "ok",
        "a refused rotation changes nothing"
    );
}

#[test]
fn rotation_refusals() {
    let (mut c, partner) = setup();
    let revoked = issue(&mut c, partner, &["a:b"]);
    c.query("SELECT apikey_revoke($1)", &[&revoked.key_id])
        .expect("revoke");
    assert_eq!(
        sqlstate(c.query("SELECT * FROM apikey_rotate($1)", &[&revoked.key_id])),
        "55000"
    );

    let rotated = issue(&mut c, partner, &["a:b"]);
    let successor: String = c
        .query_one(
            "SELECT key_id FROM apikey_rotate($1, '1 hour')",
            &[&rotated.key_id],
        )
        .expect("rotate")
        .get(0);
    assert_eq!(
        db_error(c.query("SELECT * FROM apikey_rotate($1)", &[&rotated.key_id])),
        (
            "55000".to_string(),
            format!("key {} was already rotated to {successor}", rotated.key_id)
        )
    );

    let expired = issue(&mut c, partner, &["a:b"]);
    c.execute(
        "UPDATE apikey.keys SET expires_at = now() - interval '1 second' WHERE key_id = $1",
        &[&expired.key_id],
    )
    .expect("expire");
    assert_eq!(
        sqlstate(c.query("SELECT * FROM apikey_rotate($1)", &[&expired.key_id])),
        "55000"
    );

    assert_eq!(
        sqlstate(c.query(
            "SELECT * FROM apikey_rotate('ak_live_0000000000000000')",
            &[]
        )),
        "P0002"
    );
    assert_eq!(
        sqlstate(c.query("SELECT * FROM apikey_rotate(NULL)", &[])),
        "22004"
    );
}

#[test]
fn concurrent_rotations_leave_exactly_one_successor() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let key_id = key.key_id.clone();
            std::thread::spawn(move || {
                let mut c = superuser();
                let mut tx = c.transaction().expect("begin");
                barrier.wait();
                let result = tx.query("SELECT key_id FROM apikey_rotate($1, '1 hour')", &[&key_id]);
                // Hold the lock a moment so the other rotation really has to wait for it.
                std::thread::sleep(std::time::Duration::from_millis(200));
                match result {
                    Ok(_) => tx
                        .commit()
                        .map(|_| "ok".to_string())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.code().map(|s| s.code().to_string()).unwrap_or_default()),
                }
            })
        })
        .collect();
    let mut outcomes: Vec<Result<String, String>> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec![Ok("ok".to_string()), Err("55000".to_string())]
    );
    let successors: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.keys WHERE partner_id = $1 AND key_id <> $2",
            &[&partner, &key.key_id],
        )
        .expect("count")
        .get(0);
    assert_eq!(successors, 1);
}

#[test]
fn revoke_reports_whether_the_key_was_live() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    let revoke = |c: &mut Client| -> bool {
        c.query_one(
            "SELECT apikey_revoke($1, 'leaked in a screenshot')",
            &[&key.key_id],
        )
        .expect("revoke")
        .get(0)
    };
    assert!(revoke(&mut c));
    assert!(!revoke(&mut c));
    assert_eq!(reason(&mut c, &key.token), "revoked");
    assert_eq!(
        key_column::<Option<String>>(&mut c, &key.key_id, "revoke_reason").as_deref(),
        Some("leaked in a screenshot")
    );
    assert_eq!(
        sqlstate(c.query("SELECT apikey_revoke('ak_live_0000000000000000')", &[])),
        "P0002"
    );
    assert_eq!(sqlstate(c.query("SELECT apikey_revoke('')", &[])), "P0002");
    assert_eq!(
        sqlstate(c.query("SELECT apikey_revoke(NULL)", &[])),
        "22004"
    );
    assert_eq!(
        sqlstate(c.query(
            "SELECT apikey_revoke($1, repeat('r', 10000))",
            &[&key.key_id]
        )),
        "22023"
    );
    assert_eq!(
        audit_actions(&mut c, &key.key_id),
        vec!["issue", "revoke", "verify_failed"]
    );
}

#[test]
fn enable_and_disable() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    c.execute("SELECT apikey_set_enabled($1, false)", &[&key.key_id])
        .expect("disable");
    assert_eq!(reason(&mut c, &key.token), "disabled");
    c.execute("SELECT apikey_set_enabled($1, true)", &[&key.key_id])
        .expect("enable");
    assert_eq!(reason(&mut c, &key.token), "ok");
    assert_eq!(
        sqlstate(c.execute("SELECT apikey_set_enabled($1, NULL)", &[&key.key_id])),
        "22004"
    );
    c.query("SELECT apikey_revoke($1)", &[&key.key_id])
        .expect("revoke");
    assert_eq!(
        sqlstate(c.execute("SELECT apikey_set_enabled($1, true)", &[&key.key_id])),
        "55000"
    );
    assert_eq!(
        audit_actions(&mut c, &key.key_id),
        vec!["issue", "disable", "verify_failed", "enable", "revoke"]
    );
}

#[test]
fn partners() {
    let mut c = superuser();
    let name = unique("Acme");
    let partner: Uuid = c
        .query_one("SELECT apikey_partner_create($1)", &[&name])
        .expect("create")
        .get(0);
    assert_eq!(
        sqlstate(c.query("SELECT apikey_partner_create($1)", &[&name.to_uppercase()])),
        "23505"
    );
    assert_eq!(
        sqlstate(c.query("SELECT apikey_partner_create(NULL)", &[])),
        "22004"
    );
    assert_eq!(
        sqlstate(c.query("SELECT apikey_partner_create('   ')", &[])),
        "22023"
    );
    assert_eq!(
        sqlstate(c.query(
            "SELECT apikey_partner_create($1, 'not-an-email')",
            &[&unique("p")]
        )),
        "22023"
    );
    assert_eq!(
        sqlstate(c.query("SELECT apikey_partner_create(repeat('x', 1000000))", &[])),
        "22023"
    );
    assert_eq!(
        sqlstate(c.query(
            "SELECT apikey_partner_set_active('00000000-0000-0000-0000-000000000000', false)",
            &[]
        )),
        "P0002"
    );
    assert_eq!(
        sqlstate(c.query("SELECT apikey_partner_set_active($1, NULL)", &[&partner])),
        "22004"
    );
    c.query("SELECT apikey_partner_set_active($1, false)", &[&partner])
        .expect("deactivate");
    let actions: Vec<String> = c
        .query(
            "SELECT action FROM apikey.audit_log WHERE partner_id = $1 ORDER BY id",
            &[&partner],
        )
        .expect("audit")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actions, vec!["partner_create", "partner_deactivate"]);
}

#[test]
fn audit_log_is_append_only() {
    let (mut c, partner) = setup();
    issue(&mut c, partner, &["a:b"]);
    for statement in [
        "UPDATE apikey.audit_log SET reason = 'x' WHERE partner_id = $1",
        "DELETE FROM apikey.audit_log WHERE partner_id = $1",
    ] {
        assert_eq!(
            sqlstate(c.execute(statement, &[&partner])),
            "42501",
            "{statement}"
        );
    }
    assert_eq!(
        sqlstate(c.batch_execute("TRUNCATE apikey.audit_log")),
        "42501"
    );
}
