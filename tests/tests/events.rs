//! The outbox, `apikey.events`: every lifecycle change of a key writes exactly one event in
//! its own transaction (none when it rolls back), with the Standard Webhooks body and the
//! key's public fields, never a token; partners read only their own, nobody writes.

use apikey_tests::postgres::Client;
use apikey_tests::*;
use serde_json::{json, Value};

/// The events about `key_id`, oldest first: (type, payload, payload timestamp = created_at).
fn events_of(c: &mut Client, key_id: &str) -> Vec<(String, Value, bool)> {
    c.query(
        "SELECT type, payload, payload->>'timestamp' = \
                to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
         FROM apikey.events WHERE key_id = $1 ORDER BY created_at",
        &[&key_id],
    )
    .expect("events")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn types(events: &[(String, Value, bool)]) -> Vec<&str> {
    events.iter().map(|e| e.0.as_str()).collect()
}

#[test]
fn each_lifecycle_change_writes_one_event_with_the_keys_fields() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue_with(
        &mut c,
        "$1, '{orders:read}', name => 'checkout', expires_at => '2099-01-02 03:04:05+00'",
        &[&partner],
    );
    let issued = events_of(&mut c, &key.key_id);
    assert_eq!(types(&issued), ["key.issued"]);
    let (_, payload, timestamp_is_created_at) = &issued[0];
    assert!(timestamp_is_created_at, "{payload}");
    assert_eq!(payload["type"], "key.issued");
    assert_eq!(
        payload["data"],
        json!({
            "key_id": key.key_id,
            "partner_id": partner.to_string(),
            "name": "checkout",
            "scopes": ["orders:read"],
            "environment": "live",
            "expires_at": payload["data"]["expires_at"],
            "revoked_at": null,
        })
    );
    let expires_at: bool = c
        .query_one(
            "SELECT ($1::jsonb->>'expires_at')::timestamptz = '2099-01-02 03:04:05+00'",
            &[&payload["data"]],
        )
        .expect("expires_at")
        .get(0);
    assert!(expires_at, "{payload}");

    c.execute("SELECT apikey_set_enabled($1, false)", &[&key.key_id])
        .expect("disable");
    c.execute("SELECT apikey_set_enabled($1, true)", &[&key.key_id])
        .expect("enable");
    let successor: String = c
        .query_one(
            "SELECT key_id FROM apikey_rotate($1, '1 hour')",
            &[&key.key_id],
        )
        .expect("rotate")
        .get(0);
    c.execute("SELECT apikey_revoke($1, 'leaked')", &[&key.key_id])
        .expect("revoke");
    // Revoking again changes nothing and announces nothing.
    c.execute("SELECT apikey_revoke($1, 'twice')", &[&key.key_id])
        .expect("revoke again");
    let all = events_of(&mut c, &key.key_id);
    assert_eq!(
        types(&all),
        [
            "key.issued",
            "key.disabled",
            "key.enabled",
            "key.rotated",
            "key.revoked"
        ]
    );
    assert!(
        all.iter().all(|e| e.2),
        "every timestamp is its row's created_at"
    );
    let rotated = &all[3].1["data"];
    assert_eq!(rotated["rotated_to"], successor.as_str());
    let grace_end_is_revoked_at: bool = c
        .query_one(
            "SELECT ($1::jsonb->>'revoked_at')::timestamptz - now() BETWEEN interval '59 minutes' AND interval '61 minutes'",
            &[rotated],
        )
        .expect("grace end")
        .get(0);
    assert!(grace_end_is_revoked_at, "{rotated}");
    assert_eq!(all[4].1["data"]["reason"], "leaked");
    // key.rotated names the successor, which is not announced again.
    assert_eq!(types(&events_of(&mut c, &successor)), Vec::<&str>::new());

    // Nothing in any payload is a token or a secret.
    let text: String = c
        .query_one(
            "SELECT string_agg(payload::text, ' ') FROM apikey.events WHERE key_id = ANY ($1)",
            &[&vec![key.key_id.clone(), successor.clone()]],
        )
        .expect("payloads")
        .get(0);
    assert!(!text.contains(key.secret()), "{text}");
    assert!(!text.contains(&key.token), "{text}");
}

#[test]
fn a_change_that_rolls_back_announces_nothing() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["a:b"]);
    let mut tx = c.transaction().expect("begin");
    tx.execute("SELECT apikey_revoke($1)", &[&key.key_id])
        .expect("revoke");
    let seen: i64 = tx
        .query_one(
            "SELECT count(*) FROM apikey.events WHERE key_id = $1 AND type = 'key.revoked'",
            &[&key.key_id],
        )
        .expect("count")
        .get(0);
    assert_eq!(seen, 1, "the event is in the revoking transaction");
    tx.rollback().expect("rollback");
    assert_eq!(types(&events_of(&mut c, &key.key_id)), ["key.issued"]);
    assert_eq!(reason(&mut c, &key.token), "ok");

    // A failed change writes no event either.
    let mut tx = c.transaction().expect("begin");
    let failed = tx.execute("SELECT apikey_set_enabled($1, NULL)", &[&key.key_id]);
    assert_eq!(sqlstate(failed), "22004");
    tx.rollback().expect("rollback");
    assert_eq!(types(&events_of(&mut c, &key.key_id)), ["key.issued"]);
}

#[test]
fn partners_read_only_their_own_events_and_nobody_writes_them() {
    let mut su = superuser();
    let a = create_partner(&mut su);
    let b = create_partner(&mut su);
    let a_key = issue(&mut su, a, &["orders:read"]);
    let b_key = issue(&mut su, b, &["orders:read"]);

    let partner_login = login_role(&mut su, "events_partner", &["apikey_partner"]);
    let mut p = connect(&partner_login);
    let mut tx = p.transaction().expect("begin");
    let verdict = tx
        .query_one("SELECT valid FROM apikey_verify($1)", &[&a_key.token])
        .expect("verify")
        .get::<_, bool>(0);
    assert!(verdict);
    let visible: Vec<String> = tx
        .query(
            "SELECT DISTINCT partner_id::text FROM apikey.events WHERE key_id = ANY ($1)",
            &[&vec![a_key.key_id.clone(), b_key.key_id.clone()]],
        )
        .expect("events as a partner")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(visible, [a.to_string()]);
    let insert = tx.execute(
        "INSERT INTO apikey.events (partner_id, type, payload) VALUES ($1, 'key.forged', '{}')",
        &[&a],
    );
    assert_eq!(sqlstate(insert), "42501");
    drop(tx);

    let admin_login = login_role(&mut su, "events_admin", &["apikey_admin"]);
    let mut admin = connect(&admin_login);
    let seen: i64 = admin
        .query_one(
            "SELECT count(*) FROM apikey.events WHERE key_id = ANY ($1)",
            &[&vec![a_key.key_id.clone(), b_key.key_id.clone()]],
        )
        .expect("events as an admin")
        .get(0);
    assert_eq!(seen, 2);
    for statement in [
        "DELETE FROM apikey.events",
        "UPDATE apikey.events SET type = 'x'",
    ] {
        assert_eq!(
            sqlstate(admin.batch_execute(statement)),
            "42501",
            "{statement}"
        );
    }

    let verifier_login = login_role(&mut su, "events_verifier", &["apikey_verifier"]);
    let mut verifier = connect(&verifier_login);
    assert_eq!(
        sqlstate(verifier.query("SELECT * FROM apikey.events", &[])),
        "42501"
    );
}

fn send_reminders(c: &mut Client) -> i64 {
    c.query_one("SELECT apikey_send_reminders()", &[])
        .expect("apikey_send_reminders")
        .get(0)
}

fn reminders_of(c: &mut Client, key_id: &str) -> Vec<(String, Value)> {
    events_of(c, key_id)
        .into_iter()
        .filter(|(t, _, _)| t == "key.expiring" || t == "key.rotation_due")
        .map(|(t, payload, _)| (t, payload["data"].clone()))
        .collect()
}

fn issue_expiring_in(c: &mut Client, partner: Uuid, interval: &str) -> Issued {
    issue_with(
        c,
        "$1, '{a:b}', expires_at => clock_timestamp() + $2::text::interval",
        &[&partner, &interval],
    )
}

#[test]
fn expiry_reminders_are_sent_once_each_however_often_they_are_asked_for() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let in_three_days = issue_expiring_in(&mut c, partner, "3 days");
    let in_two_hours = issue_expiring_in(&mut c, partner, "2 hours");
    let in_thirty_days = issue_expiring_in(&mut c, partner, "30 days");
    let revoked = issue_expiring_in(&mut c, partner, "3 days");
    c.execute("SELECT apikey_revoke($1)", &[&revoked.key_id])
        .expect("revoke");
    let unlimited = issue(&mut c, partner, &["a:b"]);

    assert!(send_reminders(&mut c) >= 2);
    for _ in 0..5 {
        send_reminders(&mut c);
    }
    let expiring = |days: i64| ("key.expiring".to_string(), days);
    let summary = |r: Vec<(String, Value)>| -> Vec<(String, i64)> {
        r.into_iter()
            .map(|(t, data)| (t, data["days_before"].as_i64().unwrap_or(-1)))
            .collect()
    };
    assert_eq!(
        summary(reminders_of(&mut c, &in_three_days.key_id)),
        [expiring(7)]
    );
    assert_eq!(
        summary(reminders_of(&mut c, &in_two_hours.key_id)),
        [expiring(1)],
        "inside the last day: only the 1-day reminder"
    );
    assert!(reminders_of(&mut c, &in_thirty_days.key_id).is_empty());
    assert!(
        reminders_of(&mut c, &revoked.key_id).is_empty(),
        "a revoked key needs no reminder"
    );
    assert!(reminders_of(&mut c, &unlimited.key_id).is_empty());

    // The key enters its last day: the 1-day reminder, once.
    c.execute(
        "UPDATE apikey.keys SET expires_at = clock_timestamp() + interval '20 hours' WHERE key_id = $1",
        &[&in_three_days.key_id],
    )
    .expect("move the expiry");
    for _ in 0..5 {
        send_reminders(&mut c);
    }
    assert_eq!(
        summary(reminders_of(&mut c, &in_three_days.key_id)),
        [expiring(7), expiring(1)]
    );
    let data = &reminders_of(&mut c, &in_three_days.key_id)[1].1;
    assert_eq!(data["key_id"], in_three_days.key_id.as_str());
    assert!(data["expires_at"].is_string(), "{data}");
}

#[test]
fn concurrent_callers_send_a_reminder_once() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue_expiring_in(&mut c, partner, "5 days");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut c = superuser();
                barrier.wait();
                for _ in 0..3 {
                    send_reminders(&mut c);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("a caller panicked");
    }
    assert_eq!(reminders_of(&mut c, &key.key_id).len(), 1);
}

#[test]
fn a_key_older_than_the_rotation_period_is_due_for_rotation_once() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let old = issue(&mut c, partner, &["a:b"]);
    let young = issue(&mut c, partner, &["a:b"]);
    c.execute(
        "UPDATE apikey.keys SET created_at = clock_timestamp() - interval '100 days' WHERE key_id = $1",
        &[&old.key_id],
    )
    .expect("age the key");
    for _ in 0..3 {
        send_reminders(&mut c);
    }
    assert!(
        reminders_of(&mut c, &old.key_id).is_empty(),
        "off by default"
    );

    c.batch_execute("SET apikey.rotation_period = '90d'")
        .expect("set the rotation period");
    for _ in 0..3 {
        send_reminders(&mut c);
    }
    let due = reminders_of(&mut c, &old.key_id);
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].0, "key.rotation_due");
    assert_eq!(due[0].1["rotation_period_seconds"], 90 * 86_400);
    assert!(reminders_of(&mut c, &young.key_id).is_empty());

    // Rotated: the successor is young, the old key is in its grace (revoked_at set).
    let rotated = c
        .query_one(
            "SELECT key_id FROM apikey_rotate($1, '1 hour')",
            &[&old.key_id],
        )
        .expect("rotate")
        .get::<_, String>(0);
    send_reminders(&mut c);
    assert!(reminders_of(&mut c, &rotated).is_empty());
    assert_eq!(reminders_of(&mut c, &old.key_id).len(), 1);
    c.batch_execute("RESET apikey.rotation_period")
        .expect("reset");

    for role in ["apikey_verifier", "apikey_partner"] {
        let login = login_role(&mut c, "reminders", &[role]);
        let mut other = connect(&login);
        assert_eq!(
            sqlstate(other.query_one("SELECT apikey_send_reminders()", &[])),
            "42501",
            "{role}"
        );
    }
    let admin = login_role(&mut c, "reminders_admin", &["apikey_admin"]);
    assert!(connect(&admin)
        .query_one("SELECT apikey_send_reminders()", &[])
        .is_ok());
}
