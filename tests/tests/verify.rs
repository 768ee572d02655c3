//! apikey_verify: every reason code, bad tokens, identity, read-only transactions, and
//! that the warm path never keeps a dead key alive.

use apikey_tests::*;

fn setup() -> (postgres::Client, Uuid) {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    (c, partner)
}

/// Only authentic keys reveal who they belong to.
fn assert_anonymous(v: &Verdict, reason: &str) {
    assert_eq!(v.reason, reason);
    assert!(!v.valid);
    assert_eq!(
        (&v.key_id, v.partner_id, &v.scopes, v.rate_per_minute),
        (&None, None, &None, None),
        "{v:?}"
    );
}

#[test]
fn ok_returns_the_identity() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read", "invoices:*"]);
    let v = verify(
        &mut c,
        Some(&key.token),
        &["orders:read", "invoices:write"],
        None,
    );
    assert!(v.valid);
    assert_eq!(v.reason, "ok");
    assert_eq!(v.key_id.as_deref(), Some(key.key_id.as_str()));
    assert_eq!(v.partner_id, Some(partner));
    assert_eq!(
        v.scopes,
        Some(vec!["orders:read".to_string(), "invoices:*".to_string()])
    );
    assert_eq!(v.rate_per_minute, Some(300));
    // The warm path (proof cache) gives the same answer.
    assert_eq!(verify(&mut c, Some(&key.token), &["orders:read"], None), v);
}

#[test]
fn missing_and_malformed_tokens_never_raise() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    assert_anonymous(&verify(&mut c, None, &[], None), "missing_key");
    assert_anonymous(&verify(&mut c, Some(""), &[], None), "missing_key");
    let mut typo = key.token.clone().into_bytes();
    let i = key.key_id.len() + 5;
    typo[i] = if typo[i] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).expect("ascii");
    let huge = "a".repeat(1 << 20);
    let truncated = &key.token[..key.token.len() - 1];
    for bad in [
        "garbage",
        "ak_live_",
        huge.as_str(),
        "ключ_live_0000000000000000_секрет",
        "ak_live_\t\r\n",
        typo.as_str(),
        truncated,
        &format!("{} ", key.token),
        &key.key_id,
    ] {
        assert_anonymous(&verify(&mut c, Some(bad), &[], None), "malformed");
    }
}

#[test]
fn unknown_key_id() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    c.execute("DELETE FROM apikey.keys WHERE key_id = $1", &[&key.key_id])
        .expect("delete");
    assert_anonymous(&verify(&mut c, Some(&key.token), &[], None), "unknown_key");
}

#[test]
fn secret_mismatch_even_after_a_warm_success() {
    let (mut c, partner) = setup();
    let a = issue(&mut c, partner, &["a:b"]);
    let b = issue(&mut c, partner, &["a:b"]);
    assert_eq!(reason(&mut c, &a.token), "ok");
    // Give key a the hash of key b's secret: a's token no longer matches its row. The proof
    // cached by the success above must not hide the change.
    c.execute(
        "UPDATE apikey.keys k SET secret_hash = o.secret_hash, pepper_fingerprint = o.pepper_fingerprint \
         FROM apikey.keys o WHERE k.key_id = $1 AND o.key_id = $2",
        &[&a.key_id, &b.key_id],
    )
    .expect("swap hash");
    assert_anonymous(
        &verify(&mut c, Some(&a.token), &[], None),
        "secret_mismatch",
    );
    assert_eq!(reason(&mut c, &b.token), "ok");
}

#[test]
fn state_reasons_apply_on_the_very_next_call() {
    let (mut c, partner) = setup();
    let mut other = superuser();
    let cases: [(&str, &str); 4] = [
        ("revoked", "SELECT apikey_revoke($1)"),
        ("disabled", "SELECT apikey_set_enabled($1, false)"),
        (
            "expired",
            "UPDATE apikey.keys SET expires_at = now() - interval '1 second' WHERE key_id = $1",
        ),
        (
            "not_yet_valid",
            "UPDATE apikey.keys SET not_before = now() + interval '1 hour' WHERE key_id = $1",
        ),
    ];
    for (expected, change) in cases {
        let key = issue(&mut c, partner, &["a:b"]);
        assert_eq!(reason(&mut c, &key.token), "ok");
        assert_eq!(reason(&mut c, &key.token), "ok", "warm");
        other.execute(change, &[&key.key_id]).expect(change);
        assert_anonymous(&verify(&mut c, Some(&key.token), &[], None), expected);
    }
}

#[test]
fn partner_inactive_and_back() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    c.execute("SELECT apikey_partner_set_active($1, false)", &[&partner])
        .expect("deactivate");
    assert_anonymous(
        &verify(&mut c, Some(&key.token), &[], None),
        "partner_inactive",
    );
    c.execute("SELECT apikey_partner_set_active($1, true)", &[&partner])
        .expect("activate");
    assert_eq!(reason(&mut c, &key.token), "ok");
}

#[test]
fn not_before_and_expiry_at_issue() {
    let (mut c, partner) = setup();
    let row = c
        .query_one(
            "SELECT token FROM apikey_issue($1, '{a:b}', not_before => now() + interval '1 day', \
             expires_at => now() + interval '2 days')",
            &[&partner],
        )
        .expect("issue");
    let token: String = row.get(0);
    assert_anonymous(&verify(&mut c, Some(&token), &[], None), "not_yet_valid");
    // The key's own expiry comes back to the microsecond; none comes back as NULL.
    let expiry = "2099-03-04 05:06:07.891234+00";
    let (returned, exact): (Option<String>, Option<bool>) = {
        let row = c
            .query_one(
                "SELECT v.expires_at::text, v.expires_at = $2::text::timestamptz \
                 FROM apikey_issue($1, '{a:b}', expires_at => $2::text::timestamptz) i \
                 CROSS JOIN LATERAL apikey_verify(i.token) v",
                &[&partner, &expiry],
            )
            .expect("issue + verify");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        exact,
        Some(true),
        "verify returned {returned:?}, not {expiry}"
    );
    let plain = issue(&mut c, partner, &["a:b"]);
    let none: Option<bool> = c
        .query_one(
            "SELECT expires_at IS NULL FROM apikey_verify($1)",
            &[&plain.token],
        )
        .expect("verify")
        .get(0);
    assert_eq!(none, Some(true), "a key without expiry");
}

#[test]
fn ip_allow_list_with_authentic_identity() {
    let (mut c, partner) = setup();
    let token: String = c
        .query_one(
            "SELECT token FROM apikey_issue($1, '{a:b}', allowed_cidrs => '{10.0.0.0/8, 2001:db8::/32}')",
            &[&partner],
        )
        .expect("issue")
        .get(0);
    assert_eq!(
        verify(&mut c, Some(&token), &[], Some("10.20.30.40")).reason,
        "ok"
    );
    assert_eq!(
        verify(&mut c, Some(&token), &[], Some("2001:db8::1")).reason,
        "ok"
    );
    for ip in [Some("11.0.0.1"), Some("2001:db9::1"), None] {
        let v = verify(&mut c, Some(&token), &[], ip);
        assert_eq!(v.reason, "ip_not_allowed", "{ip:?}");
        assert!(!v.valid);
        assert_eq!(v.partner_id, Some(partner), "the key was authentic");
    }
}

/// The allow-list check runs in Rust (core/src/net.rs); PostgreSQL's own `<<=` is the
/// reference. Every address is tried against a key per network list, and the verdict must
/// be `ok` exactly when `ip <<= ANY (list)` is true.
#[test]
fn ip_allow_list_matches_postgresql_containment() {
    let (mut c, partner) = setup();
    let lists = [
        "{10.0.0.0/8}",
        "{10.1.128.0/17}",
        "{192.0.2.7/32}",
        "{0.0.0.0/0}",
        "{2001:db8::/32, 10.0.0.0/8}",
        "{2001:db8:0:1::/64}",
        "{::/0}",
        "{::ffff:10.0.0.0/104}",
        "{NULL, 198.51.100.0/24}",
        "{}",
    ];
    let addresses = [
        "10.0.0.1",
        "10.1.200.1",
        "10.1.100.1",
        "10.0.0.0/8",
        "10.0.0.0/7",
        "192.0.2.7",
        "192.0.2.8",
        "198.51.100.255",
        "203.0.113.9",
        "2001:db8::1",
        "2001:db8:0:1::99",
        "2001:db8:0:2::1",
        "2001:db9::1",
        "::ffff:10.1.2.3",
        "::1",
    ];
    for list in lists {
        // An empty list is refused by apikey_issue, so the list is written to the table.
        let key = issue_with(&mut c, "$1, '{a:b}'", &[&partner]);
        c.execute(
            "UPDATE apikey.keys SET allowed_cidrs = $2::text::cidr[] WHERE key_id = $1",
            &[&key.key_id, &list],
        )
        .expect("set allowed_cidrs");
        for ip in addresses {
            let expected: bool = c
                .query_one(
                    "SELECT coalesce($1::text::inet <<= ANY ($2::text::cidr[]), false)",
                    &[&ip, &list],
                )
                .expect("reference containment")
                .get(0);
            let v = verify(&mut c, Some(&key.token), &[], Some(ip));
            let want = if expected { "ok" } else { "ip_not_allowed" };
            assert_eq!(v.reason, want, "{ip} against {list}");
        }
    }
}

#[test]
fn identity_lasts_one_transaction_and_a_failure_clears_it() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    let identity = "SELECT apikey_current_partner(), apikey_current_key(), apikey_current_scopes()";
    let mut tx = c.transaction().expect("begin");
    let before = tx.query_one(identity, &[]).expect("identity");
    assert_eq!(before.get::<_, Option<Uuid>>(0), None);
    tx.query("SELECT * FROM apikey_verify($1)", &[&key.token])
        .expect("verify");
    let during = tx.query_one(identity, &[]).expect("identity");
    assert_eq!(during.get::<_, Option<Uuid>>(0), Some(partner));
    assert_eq!(during.get::<_, Option<String>>(1), Some(key.key_id.clone()));
    assert_eq!(
        during.get::<_, Option<Vec<String>>>(2),
        Some(vec!["orders:read".to_string()])
    );
    tx.execute("SELECT apikey_require_scope('orders:read')", &[])
        .expect("has scope");
    assert_eq!(
        sqlstate(tx.execute("SELECT apikey_require_scope('orders:write')", &[])),
        "42501"
    );
    tx.rollback().expect("rollback");

    assert_eq!(
        c.query_one(identity, &[])
            .expect("identity")
            .get::<_, Option<Uuid>>(0),
        None,
        "next transaction"
    );

    let mut tx = c.transaction().expect("begin");
    tx.query("SELECT * FROM apikey_verify($1)", &[&key.token])
        .expect("verify");
    tx.query("SELECT * FROM apikey_verify('garbage')", &[])
        .expect("verify");
    assert_eq!(
        tx.query_one(identity, &[])
            .expect("identity")
            .get::<_, Option<Uuid>>(0),
        None
    );
    assert_eq!(
        sqlstate(tx.execute("SELECT apikey_require_scope('orders:read')", &[])),
        "42501"
    );
}

#[test]
fn identity_cannot_be_set_with_set_config() {
    let (mut c, partner) = setup();
    let mut tx = c.transaction().expect("begin");
    for name in [
        "apikey.current_partner",
        "apikey.partner_id",
        "apikey.current_key",
    ] {
        tx.query_one(
            "SELECT set_config($1, $2, true)",
            &[&name, &partner.to_string()],
        )
        .expect("set_config");
    }
    let row = tx
        .query_one("SELECT apikey_current_partner(), apikey_current_key()", &[])
        .expect("identity");
    assert_eq!(row.get::<_, Option<Uuid>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1), None);
}

#[test]
fn verify_works_in_a_read_only_transaction() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    let audit_rows = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM apikey.audit_log WHERE key_id = $1",
            &[&key.key_id],
        )
        .expect("count")
        .get(0)
    };
    let before = audit_rows(&mut c);
    let mut tx = c
        .build_transaction()
        .read_only(true)
        .start()
        .expect("begin read only");
    let cold = tx
        .query_one(
            "SELECT reason FROM apikey_verify($1, '{a:b}')",
            &[&key.token],
        )
        .expect("verify");
    assert_eq!(cold.get::<_, String>(0), "ok");
    let denied = tx
        .query_one(
            "SELECT reason FROM apikey_verify($1, '{c:d}')",
            &[&key.token],
        )
        .expect("verify");
    assert_eq!(denied.get::<_, String>(0), "insufficient_scope");
    tx.commit().expect("commit");
    assert_eq!(
        audit_rows(&mut c),
        before,
        "nothing written in a read-only transaction"
    );
    // The use itself is recorded outside the transaction, by the background worker.
    eventually(
        "the worker writes last_used_at of a key used read-only",
        || last_used_at(&mut c, &key.key_id),
    );
}

#[test]
fn last_used_at_is_written_by_the_worker_at_most_once_a_minute() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    assert_eq!(last_used_at(&mut c, &key.key_id), None);
    let before: String = c
        .query_one("SELECT clock_timestamp()::text", &[])
        .expect("clock")
        .get(0);
    assert_eq!(reason(&mut c, &key.token), "ok");
    let first = eventually("the worker writes last_used_at", || {
        last_used_at(&mut c, &key.key_id)
    });
    let later: bool = c
        .query_one(
            "SELECT $1::text::timestamptz >= $2::text::timestamptz",
            &[&first, &before],
        )
        .expect("compare")
        .get(0);
    assert!(
        later,
        "{first} is the time of the verification, not earlier than {before}"
    );
    // Used again within the minute: not written again, however many flushes pass.
    assert_eq!(reason(&mut c, &key.token), "ok");
    let flushes = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT flushes FROM apikey_status()", &[])
            .expect("apikey_status()")
            .get(0)
    };
    let seen = flushes(&mut c);
    eventually("three more flushes", || {
        (flushes(&mut c) >= seen + 3).then_some(())
    });
    assert_eq!(
        last_used_at(&mut c, &key.key_id),
        Some(first),
        "a second use within a minute is not written"
    );
}

#[test]
fn failed_verifications_are_audited_without_the_token() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    let v = verify(&mut c, Some(&key.token), &["x:y"], Some("192.0.2.7"));
    assert_eq!(v.reason, "insufficient_scope");
    let row = c
        .query_one(
            "SELECT action, reason, partner_id, client_ip::text, actor, detail::text FROM apikey.audit_log \
             WHERE key_id = $1 ORDER BY id DESC LIMIT 1",
            &[&key.key_id],
        )
        .expect("audit row");
    assert_eq!(row.get::<_, String>(0), "verify_failed");
    assert_eq!(row.get::<_, String>(1), "insufficient_scope");
    assert_eq!(row.get::<_, Option<Uuid>>(2), Some(partner));
    assert_eq!(row.get::<_, String>(3), "192.0.2.7/32");
    assert_eq!(row.get::<_, String>(4), "postgres");
    assert!(!row.get::<_, String>(5).contains(key.secret()));
}

#[test]
fn concurrent_verifications_agree() {
    let (mut c, partner) = setup();
    let keys: Vec<Issued> = (0..4).map(|_| issue(&mut c, partner, &["a:b"])).collect();
    let tokens: Vec<String> = keys.iter().map(|k| k.token.clone()).collect();
    // All four sessions connect first and start together, so their calls overlap.
    let start = std::sync::Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let tokens = tokens.clone();
            let start = std::sync::Arc::clone(&start);
            std::thread::spawn(move || {
                let mut c = superuser();
                start.wait();
                (0..40)
                    .map(|i| reason(&mut c, &tokens[(t + i) % tokens.len()]))
                    .filter(|r| r != "ok")
                    .count()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(
            h.join().expect("thread"),
            0,
            "every concurrent verification is ok"
        );
    }
}

#[test]
fn a_hostile_search_path_cannot_hijack_what_verify_runs() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    let evil = unique("evil").to_lowercase();
    c.batch_execute(&format!(
        "CREATE SCHEMA {evil};
         CREATE FUNCTION {evil}.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2001-01-01'::timestamptz $$;
         CREATE FUNCTION {evil}.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2001-01-01'::timestamptz $$;
         GRANT USAGE ON SCHEMA {evil} TO PUBLIC;"
    ))
    .expect("hostile schema");
    let mut tx = c.transaction().expect("begin");
    tx.batch_execute(&format!(
        "SET LOCAL search_path = {evil}, pg_catalog, public"
    ))
    .expect("hostile search_path");
    let v = tx
        .query_one("SELECT reason FROM public.apikey_verify($1)", &[&key.token])
        .expect("verify");
    assert_eq!(v.get::<_, String>(0), "ok");
    // A failure makes verify run a statement of its own (the audit row).
    let v = tx
        .query_one(
            "SELECT reason FROM public.apikey_verify($1, '{x:y}')",
            &[&key.token],
        )
        .expect("verify");
    assert_eq!(v.get::<_, String>(0), "insufficient_scope");
    let hijacked: bool = tx
        .query_one(
            "SELECT at < '2020-01-01' FROM apikey.audit_log WHERE key_id = $1 \
             AND action = 'verify_failed'",
            &[&key.key_id],
        )
        .expect("the failure's audit row")
        .get(0);
    assert!(
        !hijacked,
        "verify's statements must resolve clock_timestamp() in pg_catalog, not in {evil}"
    );
    tx.commit().expect("commit");
    c.batch_execute(&format!("DROP SCHEMA {evil} CASCADE"))
        .expect("drop hostile schema");
}
