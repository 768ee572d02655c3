//! Leak reports in SQL (`apikey_leak_report`, which the shim's `POST /v1/secret-scanning`
//! calls for each reported token): a real token is revoked (or only flagged) with an audit
//! row and a `key.leaked` event; anything else is a false positive that changes nothing.

use apikey_tests::postgres::Client;
use apikey_tests::*;
use serde_json::Value;

const URL: &str = "https://github.com/octo/app/blob/3f2a/config.yml";

fn report(
    c: &mut Client,
    token: Option<&str>,
    url: Option<&str>,
    source: Option<&str>,
    revoke: bool,
) -> String {
    c.query_one(
        "SELECT apikey_leak_report($1, $2, $3, $4)",
        &[&token, &url, &source, &revoke],
    )
    .expect("apikey_leak_report never raises for a token")
    .get(0)
}

fn leak_rows(c: &mut Client, key_id: &str) -> Vec<Value> {
    c.query(
        "SELECT detail FROM apikey.audit_log WHERE action = 'leak_reported' AND key_id = $1 ORDER BY id",
        &[&key_id],
    )
    .expect("audit rows")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn event_types(c: &mut Client, key_id: &str) -> Vec<String> {
    c.query(
        "SELECT type FROM apikey.events WHERE key_id = $1 ORDER BY created_at",
        &[&key_id],
    )
    .expect("events")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn a_reported_real_token_is_revoked_with_an_audit_row_and_an_event() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["orders:read"]);
    assert_eq!(
        report(&mut c, Some(&key.token), Some(URL), Some("commit"), true),
        "true_positive"
    );
    assert_eq!(reason(&mut c, &key.token), "revoked");
    let revoke_reason: String = c
        .query_one(
            "SELECT revoke_reason FROM apikey.key_info WHERE key_id = $1",
            &[&key.key_id],
        )
        .expect("key")
        .get(0);
    assert_eq!(revoke_reason, "leaked: reported by secret scanning");
    let rows = leak_rows(&mut c, &key.key_id);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["url"], URL);
    assert_eq!(rows[0]["source"], "commit");
    assert_eq!(rows[0]["action"], "revoke");
    assert_eq!(rows[0]["revoked_now"], true);
    assert_eq!(
        event_types(&mut c, &key.key_id),
        ["key.issued", "key.revoked", "key.leaked"]
    );
    let leaked: Value = c
        .query_one(
            "SELECT payload FROM apikey.events WHERE key_id = $1 AND type = 'key.leaked'",
            &[&key.key_id],
        )
        .expect("the key.leaked event")
        .get(0);
    assert_eq!(leaked["data"]["url"], URL);
    assert_eq!(leaked["data"]["partner_id"], partner.to_string());
    assert!(!leaked.to_string().contains(key.secret()));

    // Reported again: still a real token, already revoked.
    assert_eq!(
        report(&mut c, Some(&key.token), None, None, true),
        "true_positive"
    );
    let rows = leak_rows(&mut c, &key.key_id);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["revoked_now"], false);
    assert_eq!(rows[1]["url"], Value::Null);
}

#[test]
fn flagging_leaves_the_key_working() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["orders:read"]);
    assert_eq!(
        report(&mut c, Some(&key.token), Some(URL), Some("gist"), false),
        "true_positive"
    );
    assert_eq!(reason(&mut c, &key.token), "ok");
    let rows = leak_rows(&mut c, &key.key_id);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["action"], "flag");
    assert_eq!(
        event_types(&mut c, &key.key_id),
        ["key.issued", "key.leaked"]
    );
}

#[test]
fn a_replayed_report_is_recorded_once_even_when_the_copies_race() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["orders:read"]);
    assert_eq!(
        report(&mut c, Some(&key.token), Some(URL), Some("gist"), false),
        "true_positive"
    );
    // Eight copies of the same signed report at once, then one more later.
    std::thread::scope(|s| {
        for _ in 0..8 {
            let token = key.token.clone();
            s.spawn(move || {
                let mut c = superuser();
                assert_eq!(
                    report(&mut c, Some(&token), Some(URL), Some("gist"), false),
                    "true_positive"
                );
            });
        }
    });
    assert_eq!(
        report(&mut c, Some(&key.token), Some(URL), Some("gist"), false),
        "true_positive"
    );
    assert_eq!(leak_rows(&mut c, &key.key_id).len(), 1);
    assert_eq!(
        event_types(&mut c, &key.key_id),
        ["key.issued", "key.leaked"]
    );

    // The same report, now asking for the revocation the first one did not make: that is
    // new, and recorded; its replays are not.
    for _ in 0..3 {
        assert_eq!(
            report(&mut c, Some(&key.token), Some(URL), Some("gist"), true),
            "true_positive"
        );
    }
    assert_eq!(reason(&mut c, &key.token), "revoked");
    let rows = leak_rows(&mut c, &key.key_id);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["action"], "revoke");
    assert_eq!(rows[1]["revoked_now"], true);
    assert_eq!(
        event_types(&mut c, &key.key_id),
        ["key.issued", "key.leaked", "key.revoked", "key.leaked"]
    );

    // Found somewhere else: another report.
    let elsewhere = "https://gist.github.com/octo/9a1b";
    assert_eq!(
        report(
            &mut c,
            Some(&key.token),
            Some(elsewhere),
            Some("gist"),
            true
        ),
        "true_positive"
    );
    assert_eq!(leak_rows(&mut c, &key.key_id).len(), 3);
}

#[test]
fn anything_but_a_real_token_is_a_false_positive_that_changes_nothing() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["orders:read"]);
    let reversed: String = key.secret().chars().rev().collect();
    let wrong_secret = forge(&key.key_id, &reversed);
    let unknown = forge("ak_live_AAAAAAAAAAAAAAAA", key.secret());
    let mut typo = key.token.clone();
    let last = if typo.ends_with('A') { "B" } else { "A" };
    typo.replace_range(typo.len() - 1.., last);
    let huge = "x".repeat(1 << 20);
    // Other tests report real keys meanwhile: count the rows of this test's own URL.
    let url = format!("https://github.com/octo/{}/blob/main/.env", unique("fp"));
    for token in [
        Some(wrong_secret.token.as_str()),
        Some(unknown.token.as_str()),
        Some(typo.as_str()),
        Some(""),
        Some("ghp_notours"),
        Some(huge.as_str()),
        Some("ak_live_\u{7f}\u{ffff}"),
        None,
    ] {
        assert_eq!(
            report(&mut c, token, Some(&url), Some("commit"), true),
            "false_positive",
            "{:?}",
            token.map(|t| t.chars().take(20).collect::<String>())
        );
    }
    assert_eq!(
        reason(&mut c, &key.token),
        "ok",
        "the real key is untouched"
    );
    let rows: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.audit_log WHERE detail->>'url' = $1",
            &[&url],
        )
        .expect("count")
        .get(0);
    assert_eq!(rows, 0, "false positives leave no row");
    assert_eq!(event_types(&mut c, &key.key_id), ["key.issued"]);
    // The count above can see a row: the real token, reported with the same URL, leaves one.
    assert_eq!(
        report(&mut c, Some(&key.token), Some(&url), None, false),
        "true_positive"
    );
    let rows: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.audit_log WHERE detail->>'url' = $1",
            &[&url],
        )
        .expect("count")
        .get(0);
    assert_eq!(rows, 1);
}

#[test]
fn a_report_keeps_bounded_text_and_only_operators_may_send_one() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["orders:read"]);
    let long_url = format!("https://github.com/{}", "a".repeat(5000));
    let long_source = "s".repeat(500);
    assert_eq!(
        report(
            &mut c,
            Some(&key.token),
            Some(&long_url),
            Some(&long_source),
            true
        ),
        "true_positive"
    );
    let rows = leak_rows(&mut c, &key.key_id);
    assert_eq!(
        rows[0]["url"].as_str().map(|u| u.chars().count()),
        Some(2048)
    );
    assert_eq!(
        rows[0]["source"].as_str().map(|s| s.chars().count()),
        Some(100)
    );

    let other = issue(&mut c, partner, &["orders:read"]);
    for role in ["apikey_verifier", "apikey_partner"] {
        let login = login_role(&mut c, "leaks", &[role]);
        let mut session = connect(&login);
        assert_eq!(
            sqlstate(session.query_one("SELECT apikey_leak_report($1)", &[&other.token])),
            "42501",
            "{role}"
        );
    }
    assert_eq!(reason(&mut c, &other.token), "ok");
    let admin = login_role(&mut c, "leaks_admin", &["apikey_admin"]);
    assert_eq!(
        report(&mut connect(&admin), Some(&other.token), None, None, true),
        "true_positive"
    );
}
