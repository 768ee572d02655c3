//! Webhook endpoints and delivery, end to end: endpoints made in SQL and over HTTP, events
//! delivered by real `apikey-shim` processes to a receiver on 127.0.0.1, each signature
//! checked by an implementation written here from the Standard Webhooks specification
//! (HMAC-SHA256 over "id.timestamp.body", base64, `v1,` entries), not by the product's code.
//!
//! The tests of this file run one at a time: every delivering shim claims any due delivery
//! of the database, so a test's shims would deliver another test's events with their own
//! settings.

use apikey_tests::cluster::PrivateCluster;
use apikey_tests::postgres::Client;
use apikey_tests::receiver::{Received, Receiver};
use apikey_tests::shim::{send, Shim, SHIM_ROLE};
use apikey_tests::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

type Param = Box<dyn postgres::types::ToSql + Sync>;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A shim that delivers quickly to this machine's receivers.
fn delivering_shim() -> Shim {
    Shim::start_with(&[
        ("APIKEY_SHIM_WEBHOOK_DELIVERY", "true"),
        ("APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("APIKEY_SHIM_WEBHOOK_POLL_MS", "100"),
        ("APIKEY_SHIM_WEBHOOK_TIMEOUT_MS", "3000"),
    ])
}

struct Endpoint {
    endpoint_id: Uuid,
    secret: String,
}

fn send_test_event(c: &mut Client, endpoint_id: Uuid) -> Uuid {
    c.query_one("SELECT apikey_webhook_send_test($1)", &[&endpoint_id])
        .expect("send a test event")
        .get(0)
}

fn create_endpoint(c: &mut Client, partner: Uuid, url: &str, events: &[&str]) -> Endpoint {
    let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    let row = c
        .query_one(
            "SELECT endpoint_id, secret FROM apikey_webhook_create($1, $2, $3)",
            &[&partner, &url, &events],
        )
        .expect("apikey_webhook_create");
    Endpoint {
        endpoint_id: row.get(0),
        secret: row.get(1),
    }
}

/// The specification's signature, computed here: HMAC-SHA256 keyed with the base64 after
/// `whsec_`, over "msg_id.timestamp.body".
fn expected_signature(secret: &str, r: &Received) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("the secret is base64");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
    mac.update(
        format!(
            "{}.{}.{}",
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            r.body
        )
        .as_bytes(),
    );
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn signed_by(secret: &str, r: &Received) -> bool {
    let expected = expected_signature(secret, r);
    r.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn of_type<'a>(received: &'a [Received], event_type: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.json()["type"] == event_type)
        .collect()
}

fn delivery_state(c: &mut Client, event_id: &str) -> Vec<(String, i32)> {
    c.query(
        "SELECT state, attempts FROM apikey.webhook_deliveries WHERE event_id = $1::text::uuid",
        &[&event_id],
    )
    .expect("read deliveries")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[test]
fn every_key_event_reaches_the_partner_signed_and_recorded() {
    let _serial = one_at_a_time();
    let receiver = Receiver::start();
    let _shim = delivering_shim();
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let other_partner = create_partner(&mut c);
    let endpoint = create_endpoint(&mut c, partner, &receiver.url("/hooks/all"), &["*"]);
    let revocations = create_endpoint(
        &mut c,
        partner,
        &receiver.url("/hooks/revoked"),
        &["key.revoked"],
    );
    create_endpoint(&mut c, other_partner, &receiver.url("/hooks/other"), &["*"]);

    let key = issue(&mut c, partner, &["orders:read"]);
    let rotated_to: String = c
        .query_one(
            "SELECT key_id FROM apikey_rotate($1, '1 hour')",
            &[&key.key_id],
        )
        .expect("rotate")
        .get(0);
    c.execute("SELECT apikey_set_enabled($1, false)", &[&rotated_to])
        .expect("disable");
    c.execute("SELECT apikey_set_enabled($1, true)", &[&rotated_to])
        .expect("enable");
    c.execute("SELECT apikey_revoke($1, 'leaving')", &[&rotated_to])
        .expect("revoke");

    let all = |r: &Received| r.path == "/hooks/all";
    crate::eventually("five key events at /hooks/all", || {
        (receiver.received().iter().filter(|r| all(r)).count() >= 5).then_some(())
    });
    receiver.wait_for("the revocation at /hooks/revoked", |r| {
        r.path == "/hooks/revoked"
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let received = receiver.received();
    let at_all: Vec<Received> = received.iter().filter(|r| all(r)).cloned().collect();
    let types: Vec<String> = at_all
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or("").to_string())
        .collect();
    let mut sorted = types.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "key.disabled",
            "key.enabled",
            "key.issued",
            "key.revoked",
            "key.rotated"
        ],
        "each event once, the rotation's successor not announced as issued"
    );
    assert!(
        received.iter().all(|r| r.path != "/hooks/other"),
        "another partner's endpoint hears nothing"
    );
    let at_revoked: Vec<&Received> = received
        .iter()
        .filter(|r| r.path == "/hooks/revoked")
        .collect();
    assert_eq!(
        at_revoked.len(),
        1,
        "an endpoint subscribed to key.revoked gets only that"
    );
    assert!(signed_by(&revocations.secret, at_revoked[0]));
    assert!(
        !signed_by(&endpoint.secret, at_revoked[0]),
        "each endpoint has its own secret"
    );

    for r in &at_all {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type"), "application/json");
        assert!(
            r.header("user-agent").starts_with("apikey-shim/"),
            "{:?}",
            r.headers
        );
        assert!(signed_by(&endpoint.secret, r), "signature of {}", r.body);
        assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
        let timestamp: i64 = r
            .header("webhook-timestamp")
            .parse()
            .expect("a unix timestamp");
        assert!(
            (timestamp - now_unix()).abs() < 120,
            "timestamp {timestamp}"
        );
        let stored: serde_json::Value = c
            .query_one(
                "SELECT payload FROM apikey.events WHERE event_id = $1::text::uuid",
                &[&r.header("webhook-id")],
            )
            .expect("webhook-id is the event's id")
            .get(0);
        assert_eq!(r.json(), stored, "the body is the stored event");
        assert!(!r.body.contains(&key.token) && !r.body.contains(key.secret()));
        let endpoints_subscribed = if r.json()["type"] == "key.revoked" {
            2
        } else {
            1
        };
        assert_eq!(
            delivery_state(&mut c, r.header("webhook-id")).len(),
            endpoints_subscribed
        );
    }
    let rotated = of_type(&at_all, "key.rotated")[0].json();
    assert_eq!(rotated["data"]["key_id"], key.key_id.as_str());
    assert_eq!(rotated["data"]["rotated_to"], rotated_to.as_str());
    assert_eq!(
        of_type(&at_all, "key.revoked")[0].json()["data"]["reason"],
        "leaving"
    );

    let attempts: Vec<(i32, Option<i32>, Option<String>, String)> = c
        .query(
            "SELECT a.attempt, a.status_code, a.error, d.state FROM apikey.webhook_attempts a \
             JOIN apikey.webhook_deliveries d USING (delivery_id) WHERE a.endpoint_id = $1",
            &[&endpoint.endpoint_id],
        )
        .expect("read attempts")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(attempts.len(), 5);
    assert!(
        attempts
            .iter()
            .all(|a| *a == (1, Some(200), None, "delivered".to_string())),
        "{attempts:?}"
    );
}

#[test]
fn a_rolled_back_change_sends_nothing() {
    let _serial = one_at_a_time();
    let receiver = Receiver::start();
    let _shim = delivering_shim();
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let endpoint = create_endpoint(&mut c, partner, &receiver.url("/hooks"), &["*"]);
    let key = issue(&mut c, partner, &["a:b"]);
    receiver.wait_for("key.issued", |r| r.json()["type"] == "key.issued");

    let mut tx = c.transaction().expect("begin");
    tx.execute("SELECT apikey_revoke($1)", &[&key.key_id])
        .expect("revoke");
    tx.rollback().expect("rollback");
    // A test event after the rollback: once it arrives, anything queued before it has had
    // its chance to arrive too.
    let marker: Uuid = send_test_event(&mut c, endpoint.endpoint_id);
    let test = receiver.wait_for("the test event", |r| r.json()["type"] == "webhook.test");
    assert_eq!(test.header("webhook-id"), marker.to_string());
    assert_eq!(
        test.json()["data"]["endpoint_id"],
        endpoint.endpoint_id.to_string()
    );
    assert!(signed_by(&endpoint.secret, &test));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        of_type(&receiver.received(), "key.revoked").is_empty(),
        "the revoke rolled back, so nothing announced it"
    );
}

#[test]
fn failed_attempts_are_retried_on_schedule_across_a_shim_restart() {
    let _serial = one_at_a_time();
    let receiver = Receiver::start();
    receiver.answer_next(2, 500);
    let mut shim = delivering_shim();
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let endpoint = create_endpoint(&mut c, partner, &receiver.url("/hooks"), &["*"]);
    let event_id: Uuid = send_test_event(&mut c, endpoint.endpoint_id);
    let event = event_id.to_string();

    // First attempt: 500. The next is scheduled 5 s later, per the retry schedule.
    eventually("the first attempt", || {
        (delivery_state(&mut c, &event) == [("pending".to_string(), 1)]).then_some(())
    });
    let (status, error, wait): (Option<i32>, Option<String>, f64) = {
        let row = c
            .query_one(
                "SELECT last_status, last_error, \
                        extract(epoch FROM next_attempt_at - (SELECT max(at) FROM apikey.webhook_attempts a WHERE a.delivery_id = d.delivery_id))::float8 \
                 FROM apikey.webhook_deliveries d WHERE event_id = $1",
                &[&event_id],
            )
            .expect("read the delivery");
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(status, Some(500));
    assert_eq!(error.as_deref(), Some("HTTP 500"));
    assert!((4.9..5.5).contains(&wait), "retry after 5 s, got {wait}");

    // Second attempt, 500 again: the next one waits 5 minutes. The shim is restarted, and
    // the clock of this delivery moved to now: the new process delivers it.
    eventually("the second attempt", || {
        (delivery_state(&mut c, &event) == [("pending".to_string(), 2)]).then_some(())
    });
    let second_wait: f64 = c
        .query_one(
            "SELECT extract(epoch FROM next_attempt_at - clock_timestamp())::float8 \
             FROM apikey.webhook_deliveries WHERE event_id = $1",
            &[&event_id],
        )
        .expect("read the delivery")
        .get(0);
    assert!(
        (240.0..=300.0).contains(&second_wait),
        "then 5 minutes, got {second_wait}"
    );
    assert!(shim.terminate(), "the shim stops cleanly");
    c.execute(
        "UPDATE apikey.webhook_deliveries SET next_attempt_at = clock_timestamp() WHERE event_id = $1",
        &[&event_id],
    )
    .expect("make the retry due");
    let _restarted = delivering_shim();
    eventually("the third attempt, by the restarted shim", || {
        (delivery_state(&mut c, &event) == [("delivered".to_string(), 3)]).then_some(())
    });
    let statuses: Vec<u16> = receiver.received().iter().map(|r| r.answered).collect();
    assert_eq!(statuses, [500, 500, 200]);
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert!(
        ids.iter().all(|id| *id == event),
        "every attempt carries the same webhook-id"
    );
    assert!(receiver
        .received()
        .iter()
        .all(|r| signed_by(&endpoint.secret, r)));
    let attempts: Vec<(i32, Option<i32>)> = c
        .query(
            "SELECT attempt, status_code FROM apikey.webhook_attempts WHERE event_id = $1 ORDER BY attempt",
            &[&event_id],
        )
        .expect("read attempts")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(attempts, [(1, Some(500)), (2, Some(500)), (3, Some(200))]);
}

#[test]
fn the_last_failure_gives_up_and_days_of_failures_disable_the_endpoint() {
    let _serial = one_at_a_time();
    let receiver = Receiver::start();
    receiver.answer_next(100, 503);
    let _shim = delivering_shim();
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let endpoint = create_endpoint(&mut c, partner, &receiver.url("/hooks"), &["*"]);
    // As if seven attempts had failed already, and the endpoint had been failing for six
    // days: the retry schedule is days long, the test is not.
    c.execute(
        "UPDATE apikey.webhook_endpoints SET failing_since = clock_timestamp() - interval '6 days' \
         WHERE endpoint_id = $1",
        &[&endpoint.endpoint_id],
    )
    .expect("age the endpoint's failures");
    let event_id: Uuid = send_test_event(&mut c, endpoint.endpoint_id);
    c.execute(
        "UPDATE apikey.webhook_deliveries SET attempts = 7 WHERE event_id = $1",
        &[&event_id],
    )
    .expect("as if seven attempts failed");
    eventually("the eighth and last attempt", || {
        (delivery_state(&mut c, &event_id.to_string()) == [("failed".to_string(), 8)]).then_some(())
    });
    let row = c
        .query_one(
            "SELECT enabled, disabled_reason FROM apikey.webhook_endpoint_info WHERE endpoint_id = $1",
            &[&endpoint.endpoint_id],
        )
        .expect("read the endpoint");
    assert!(!row.get::<_, bool>(0), "disabled after days of failures");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("every delivery failed for more than 5 days")
    );
    let audit: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.audit_log WHERE action = 'webhook_disable' \
             AND detail->>'endpoint_id' = $1 AND reason LIKE 'every delivery failed%'",
            &[&endpoint.endpoint_id.to_string()],
        )
        .expect("read the audit log")
        .get(0);
    assert_eq!(audit, 1);

    // Disabled: it is sent nothing, and a test event is refused.
    let (code, message) = db_error(c.query_one(
        "SELECT apikey_webhook_send_test($1)",
        &[&endpoint.endpoint_id],
    ));
    assert_eq!(code, "55000");
    assert!(message.contains("is disabled"), "{message}");
    let sent = receiver.received().len();
    issue(&mut c, partner, &["a:b"]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(
        receiver.received().len(),
        sent,
        "a disabled endpoint gets nothing"
    );

    // Enabled again, with a clean record: deliveries resume.
    receiver.clear_answers();
    c.execute(
        "SELECT apikey_webhook_set_enabled($1, true)",
        &[&endpoint.endpoint_id],
    )
    .expect("enable");
    let row = c
        .query_one(
            "SELECT enabled, failing_since IS NULL, disabled_at IS NULL, disabled_reason IS NULL \
             FROM apikey.webhook_endpoint_info WHERE endpoint_id = $1",
            &[&endpoint.endpoint_id],
        )
        .expect("read the endpoint");
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, bool>(1),
            row.get::<_, bool>(2),
            row.get::<_, bool>(3)
        ),
        (true, true, true, true)
    );
    let event_id: Uuid = send_test_event(&mut c, endpoint.endpoint_id);
    let delivered = receiver.wait_for("the test event after enabling", |r| {
        r.header("webhook-id") == event_id.to_string() && r.answered == 200
    });
    assert!(signed_by(&endpoint.secret, &delivered));
}

#[test]
fn two_shims_share_the_outbox_without_sending_an_event_twice() {
    let _serial = one_at_a_time();
    let receiver = Receiver::start();
    let _first = delivering_shim();
    let _second = delivering_shim();
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let endpoint = create_endpoint(&mut c, partner, &receiver.url("/hooks"), &["*"]);
    let events: Vec<Uuid> = (0..60)
        .map(|_| send_test_event(&mut c, endpoint.endpoint_id))
        .collect();
    eventually("every event delivered", || {
        (receiver.received().len() >= events.len()).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in receiver.received() {
        *seen.entry(r.header("webhook-id").to_string()).or_default() += 1;
    }
    assert_eq!(seen.len(), events.len());
    assert!(seen.values().all(|n| *n == 1), "each event once: {seen:?}");
    let by_shim: i64 = c
        .query_one(
            "SELECT count(DISTINCT state) FROM apikey.webhook_deliveries WHERE endpoint_id = $1",
            &[&endpoint.endpoint_id],
        )
        .expect("read deliveries")
        .get(0);
    assert_eq!(by_shim, 1, "all delivered");
}

#[test]
fn a_partner_whose_receivers_hang_does_not_delay_another_partners_events() {
    let _serial = one_at_a_time();
    let hanging = Receiver::start();
    hanging.delay_answers(std::time::Duration::from_secs(120));
    let healthy = Receiver::start();
    // Attempts time out after 20 s: the healthy partner's event must arrive while the
    // hanging partner's first attempts are all still waiting.
    let _shim = Shim::start_with(&[
        ("APIKEY_SHIM_WEBHOOK_DELIVERY", "true"),
        ("APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("APIKEY_SHIM_WEBHOOK_POLL_MS", "100"),
        ("APIKEY_SHIM_WEBHOOK_TIMEOUT_MS", "20000"),
    ]);
    let mut c = superuser();
    let partner_cap: i64 = c
        .query_one(
            "SELECT current_setting('apikey.webhook_partner_concurrency')::bigint",
            &[],
        )
        .expect("the partner's share")
        .get(0);
    let attacker = create_partner(&mut c);
    let endpoints: Vec<Endpoint> = (0..16)
        .map(|i| {
            create_endpoint(
                &mut c,
                attacker,
                &hanging.url(&format!("/hang/{i}")),
                &["*"],
            )
        })
        .collect();
    for endpoint in &endpoints {
        for _ in 0..3 {
            send_test_event(&mut c, endpoint.endpoint_id);
        }
    }
    hanging.wait_for("the hanging partner's attempts are in flight", |_| {
        hanging.received().len() as i64 >= partner_cap
    });
    let other = create_partner(&mut c);
    let endpoint = create_endpoint(&mut c, other, &healthy.url("/healthy"), &["*"]);
    let event = send_test_event(&mut c, endpoint.endpoint_id).to_string();
    healthy.wait_for("the other partner's event", |r| {
        r.header("webhook-id") == event
    });
    let attacker_attempts: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.webhook_attempts WHERE partner_id = $1",
            &[&attacker],
        )
        .expect("count attempts")
        .get(0);
    assert_eq!(
        attacker_attempts, 0,
        "delivered while every hanging attempt was still waiting"
    );
    let held = hanging.received();
    assert_eq!(
        held.len() as i64,
        partner_cap,
        "one partner holds its share of the slots, no more"
    );
    let mut per_endpoint: HashMap<&str, usize> = HashMap::new();
    for r in &held {
        *per_endpoint.entry(r.path.as_str()).or_default() += 1;
    }
    assert!(
        per_endpoint.values().all(|n| *n <= 2),
        "at most two attempts in flight per endpoint: {per_endpoint:?}"
    );

    // The hanging attempts time out; each failing endpoint pauses before its next attempt.
    let ids: Vec<Uuid> = endpoints.iter().map(|e| e.endpoint_id).collect();
    let paused = eventually("the failed endpoints are paused", || {
        let rows = c
            .query(
                "SELECT w.failures_in_a_row, extract(epoch FROM w.paused_until - a.at)::float8 \
                 FROM apikey.webhook_endpoints w \
                 JOIN apikey.webhook_attempts a ON a.endpoint_id = w.endpoint_id \
                 WHERE w.endpoint_id = ANY ($1) AND w.failures_in_a_row = 1",
                &[&ids],
            )
            .expect("read endpoints");
        (!rows.is_empty()).then_some(rows)
    });
    for row in paused {
        let pause: Option<f64> = row.get(1);
        assert!(
            pause.is_some_and(|p| (0.0..=1.5).contains(&p)),
            "a first failure pauses its endpoint for a second: {pause:?}"
        );
    }
    let healthy_state: i32 = c
        .query_one(
            "SELECT failures_in_a_row FROM apikey.webhook_endpoint_info WHERE endpoint_id = $1",
            &[&endpoint.endpoint_id],
        )
        .expect("read endpoint")
        .get(0);
    assert_eq!(healthy_state, 0);
    for id in ids {
        c.execute("SELECT apikey_webhook_delete($1)", &[&id])
            .expect("delete the hanging endpoints and their deliveries");
    }
}

#[test]
fn during_a_secret_rotation_both_secrets_sign() {
    let _serial = one_at_a_time();
    let receiver = Receiver::start();
    let _shim = delivering_shim();
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let endpoint = create_endpoint(&mut c, partner, &receiver.url("/hooks"), &["*"]);
    let send_test = |c: &mut Client| -> Received {
        let event_id: Uuid = send_test_event(c, endpoint.endpoint_id);
        receiver.wait_for("the test event", |r| {
            r.header("webhook-id") == event_id.to_string()
        })
    };

    let new_secret: String = c
        .query_one(
            "SELECT apikey_webhook_rotate_secret($1, '1 hour')",
            &[&endpoint.endpoint_id],
        )
        .expect("rotate with grace")
        .get(0);
    assert!(new_secret.starts_with("whsec_") && new_secret != endpoint.secret);
    let during = send_test(&mut c);
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    assert!(signed_by(&new_secret, &during) && signed_by(&endpoint.secret, &during));
    let until: bool = c
        .query_one(
            "SELECT previous_secret_until BETWEEN clock_timestamp() + interval '59 minutes' \
                    AND clock_timestamp() + interval '1 hour' \
             FROM apikey.webhook_endpoint_info WHERE endpoint_id = $1",
            &[&endpoint.endpoint_id],
        )
        .expect("read the endpoint")
        .get(0);
    assert!(until, "the previous secret signs for the grace period");

    let newest: String = c
        .query_one(
            "SELECT apikey_webhook_rotate_secret($1, '0')",
            &[&endpoint.endpoint_id],
        )
        .expect("rotate without grace")
        .get(0);
    let after = send_test(&mut c);
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    assert!(signed_by(&newest, &after));
    assert!(!signed_by(&new_secret, &after) && !signed_by(&endpoint.secret, &after));
}

#[test]
fn private_addresses_are_refused_unless_allowed() {
    let _serial = one_at_a_time();
    let receiver = Receiver::start();
    let mut c = superuser();
    let partner = create_partner(&mut c);

    // In SQL: the setting is on in the test cluster (as in scripts/up.sh); production
    // leaves it off, and then a literal private address is refused at once.
    c.batch_execute("SET apikey.webhook_allow_private_urls = off")
        .expect("set");
    for url in [
        "http://127.0.0.1:9/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://localhost/",
    ] {
        let (code, message) = db_error(c.query_one(
            "SELECT * FROM apikey_webhook_create($1, $2)",
            &[&partner, &url],
        ));
        assert_eq!(code, "22023", "{url}");
        assert!(
            message.starts_with("invalid url: host ") && message.contains("private"),
            "{message}"
        );
    }
    c.batch_execute("RESET apikey.webhook_allow_private_urls")
        .expect("reset");
    let endpoint = create_endpoint(&mut c, partner, &receiver.url("/hooks"), &["*"]);
    let (code, _) = db_error(c.batch_execute("SET apikey.webhook_allow_private_urls = on; SET ROLE apikey_admin; SET apikey.webhook_allow_private_urls = off"));
    assert_eq!(code, "42501", "only a superuser changes it");
    c.batch_execute("RESET ROLE").expect("reset role");

    // In the shim: a delivery to 127.0.0.1 without APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE is an
    // attempt that failed without a request, recorded with why.
    let shim = Shim::start_with(&[
        ("APIKEY_SHIM_WEBHOOK_DELIVERY", "true"),
        ("APIKEY_SHIM_WEBHOOK_POLL_MS", "100"),
    ]);
    let event_id: Uuid = send_test_event(&mut c, endpoint.endpoint_id);
    let error: String = eventually("the refused attempt", || {
        c.query_opt(
            "SELECT error FROM apikey.webhook_attempts WHERE event_id = $1",
            &[&event_id],
        )
        .expect("read attempts")
        .and_then(|r| r.get(0))
    });
    assert!(
        error.contains("127.0.0.1") && error.contains("APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE"),
        "{error}"
    );
    assert!(receiver.received().is_empty(), "no request was made");
    drop(shim);
    c.execute("SELECT apikey_webhook_delete($1)", &[&endpoint.endpoint_id])
        .expect("delete");
}

#[test]
fn endpoints_are_managed_over_http_by_operators_and_by_their_own_partner() {
    let _serial = one_at_a_time();
    let receiver = Receiver::start();
    let shim = delivering_shim();
    let mut c = superuser();
    let operator = operator_key(&mut c);
    let partner = create_partner(&mut c);
    let other = create_partner(&mut c);
    let manager = issue(&mut c, partner, &["keys:manage"]);
    let reader = issue(&mut c, partner, &["orders:read"]);

    let created = shim.post_as(
        &manager.token,
        "/v1/webhooks",
        &serde_json::json!({ "partner_id": partner.to_string(), "url": receiver.url("/own"), "events": ["key.*"] }),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.header("cache-control"),
        Some("no-store"),
        "a secret is not cached"
    );
    let body = created.json();
    let secret = body["secret"]
        .as_str()
        .expect("the secret, shown once")
        .to_string();
    let endpoint_id = body["endpoint_id"]
        .as_str()
        .expect("endpoint_id")
        .to_string();
    assert_eq!(body["endpoint"]["events"], serde_json::json!(["key.*"]));
    assert!(body["endpoint"].get("secret_sealed").is_none());

    let foreign = shim.post_as(
        &manager.token,
        "/v1/webhooks",
        &serde_json::json!({ "partner_id": other.to_string(), "url": receiver.url("/x") }),
    );
    assert_eq!(
        foreign.status, 404,
        "another partner's account: {}",
        foreign.body
    );
    let unscoped = shim.post_as(
        &reader.token,
        "/v1/webhooks",
        &serde_json::json!({ "partner_id": partner.to_string(), "url": receiver.url("/x") }),
    );
    assert_eq!(unscoped.status, 403, "{}", unscoped.body);
    for (body, field) in [
        (
            serde_json::json!({ "partner_id": partner.to_string(), "url": "ftp://example.com/" }),
            "url",
        ),
        (
            serde_json::json!({ "partner_id": partner.to_string(), "url": "https://example.com/", "events": ["nope"] }),
            "events",
        ),
        (
            serde_json::json!({ "partner_id": partner.to_string(), "url": "x".repeat(3000) }),
            "url",
        ),
    ] {
        let r = shim.post_as(&operator.token, "/v1/webhooks", &body);
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.json()["field"], field, "{}", r.body);
    }
    let others = shim.post_as(
        &operator.token,
        "/v1/webhooks",
        &serde_json::json!({ "partner_id": other.to_string(), "url": receiver.url("/other") }),
    );
    assert_eq!(
        others.status, 201,
        "an operator serves any partner: {}",
        others.body
    );
    let others_id = others.json()["endpoint_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let listed = shim.get_as(&manager.token, "/v1/webhooks");
    assert_eq!(listed.status, 200);
    let ids: Vec<String> = listed.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["endpoint_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        ids,
        std::slice::from_ref(&endpoint_id),
        "a partner lists its own endpoints only"
    );
    assert_eq!(
        shim.get_as(
            &manager.token,
            &format!("/v1/webhooks/{others_id}/deliveries")
        )
        .status,
        404
    );
    let delete_other = send(
        shim.request("DELETE", &format!("/v1/webhooks/{others_id}"))
            .set("X-API-Key", &manager.token),
        None,
    );
    assert_eq!(delete_other.status, 404);

    // A key event of this partner reaches the endpoint, and its delivery is readable.
    issue(&mut c, partner, &["a:b"]);
    let delivered = receiver.wait_for("key.issued at /own", |r| r.path == "/own");
    assert!(signed_by(&secret, &delivered));
    let deliveries = eventually("a delivered delivery", || {
        let r = shim.get_as(
            &manager.token,
            &format!("/v1/webhooks/{endpoint_id}/deliveries"),
        );
        let items = r.json()["items"].clone();
        (items[0]["state"] == "delivered").then_some(items)
    });
    assert_eq!(deliveries[0]["event_type"], "key.issued");
    assert_eq!(deliveries[0]["attempts"][0]["status_code"], 200);

    let rotated = shim.post_as(
        &manager.token,
        &format!("/v1/webhooks/{endpoint_id}/rotate-secret"),
        &serde_json::json!({ "grace_seconds": 60 }),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(
        rotated.header("cache-control"),
        Some("no-store"),
        "a secret is not cached"
    );
    let new_secret = rotated.json()["secret"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let tested = shim.post_as(
        &manager.token,
        &format!("/v1/webhooks/{endpoint_id}/test"),
        &serde_json::json!({}),
    );
    assert_eq!(tested.status, 202, "{}", tested.body);
    let test = receiver.wait_for("the test event at /own", |r| {
        r.path == "/own" && r.json()["type"] == "webhook.test"
    });
    assert!(signed_by(&new_secret, &test) && signed_by(&secret, &test));

    let deleted = send(
        shim.request("DELETE", &format!("/v1/webhooks/{endpoint_id}"))
            .set("X-API-Key", &manager.token),
        None,
    );
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(
        shim.get_as(&manager.token, "/v1/webhooks").json()["items"],
        serde_json::json!([])
    );
    let actions: Vec<String> = c
        .query(
            "SELECT action FROM apikey.audit_log WHERE detail->>'endpoint_id' = $1 ORDER BY id",
            &[&endpoint_id],
        )
        .expect("read the audit log")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        actions,
        [
            "webhook_create",
            "webhook_rotate_secret",
            "webhook_test",
            "webhook_delete"
        ]
    );

    // The secrets shown once are nowhere else: not in the shim's log, the server's log, or
    // any table as text.
    let logs = shim.log() + &std::fs::read_to_string(server_log_path()).unwrap_or_default();
    for s in [&secret, &new_secret] {
        let encoded = s.trim_start_matches("whsec_");
        assert!(!logs.contains(encoded), "a webhook secret in a log");
        let in_tables: i64 = c
            .query_one(
                "SELECT count(*) FROM apikey.webhook_endpoints e, apikey.audit_log a \
                 WHERE e::text LIKE '%' || $1 || '%' OR a::text LIKE '%' || $1 || '%'",
                &[&encoded],
            )
            .expect("scan tables")
            .get(0);
        assert_eq!(in_tables, 0);
    }
}

#[test]
fn bad_arguments_and_callers_get_clear_errors() {
    let _serial = one_at_a_time();
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let endpoint = create_endpoint(
        &mut c,
        partner,
        "https://example.com/hooks",
        &["key.revoked"],
    );
    let missing = Uuid::from_u128(7);
    let long_url = format!("https://example.com/{}", "a".repeat(2100));
    let cases: Vec<(&str, Vec<Param>, &str, &str)> = vec![
        (
            "SELECT * FROM apikey_webhook_create($1, $2)",
            vec![Box::new(None::<Uuid>), Box::new("https://e.com/")],
            "22004",
            "partner_id must not be NULL",
        ),
        (
            "SELECT * FROM apikey_webhook_create($1, $2)",
            vec![Box::new(partner), Box::new(None::<String>)],
            "22004",
            "url must not be NULL",
        ),
        (
            "SELECT * FROM apikey_webhook_create($1, $2, NULL)",
            vec![Box::new(partner), Box::new("https://e.com/")],
            "22004",
            "events must not be NULL",
        ),
        (
            "SELECT * FROM apikey_webhook_create($1, $2)",
            vec![Box::new(partner), Box::new("")],
            "22023",
            "invalid url: \"\" is not an absolute URL",
        ),
        (
            "SELECT * FROM apikey_webhook_create($1, $2)",
            vec![Box::new(partner), Box::new(long_url)],
            "22023",
            "invalid url: longer than 2048 bytes",
        ),
        (
            "SELECT * FROM apikey_webhook_create($1, $2)",
            vec![Box::new(partner), Box::new("gopher://e.com/")],
            "22023",
            "invalid url: scheme \"gopher\" is not http or https",
        ),
        (
            "SELECT * FROM apikey_webhook_create($1, $2, '{}')",
            vec![Box::new(partner), Box::new("https://e.com/")],
            "22023",
            "invalid events: is empty",
        ),
        (
            "SELECT * FROM apikey_webhook_create($1, $2, '{key.revoked,NULL}')",
            vec![Box::new(partner), Box::new("https://e.com/")],
            "22023",
            "invalid events: an event type is NULL",
        ),
        (
            "SELECT * FROM apikey_webhook_create($1, $2)",
            vec![Box::new(missing), Box::new("https://e.com/")],
            "P0002",
            "partner_id 00000000-0000-0000-0000-000000000007 does not exist",
        ),
        (
            "SELECT apikey_webhook_rotate_secret($1)",
            vec![Box::new(missing)],
            "P0002",
            "webhook endpoint 00000000-0000-0000-0000-000000000007 does not exist",
        ),
        (
            "SELECT apikey_webhook_rotate_secret($1, '-1 second')",
            vec![Box::new(endpoint.endpoint_id)],
            "22023",
            "invalid grace: must be between 0 and 7 days",
        ),
        (
            "SELECT apikey_webhook_rotate_secret($1, '8 days')",
            vec![Box::new(endpoint.endpoint_id)],
            "22023",
            "invalid grace",
        ),
        (
            "SELECT apikey_webhook_rotate_secret($1, NULL)",
            vec![Box::new(endpoint.endpoint_id)],
            "22004",
            "grace must not be NULL",
        ),
        (
            "SELECT apikey_webhook_delete($1)",
            vec![Box::new(None::<Uuid>)],
            "22004",
            "endpoint_id must not be NULL",
        ),
        (
            "SELECT apikey_webhook_set_enabled($1, NULL)",
            vec![Box::new(endpoint.endpoint_id)],
            "22004",
            "enabled must not be NULL",
        ),
        (
            "SELECT * FROM apikey_webhook_claim(0)",
            vec![],
            "22023",
            "invalid max_deliveries",
        ),
        (
            "SELECT * FROM apikey_webhook_claim(1, '0 seconds')",
            vec![],
            "22023",
            "invalid lease",
        ),
        (
            "SELECT apikey_webhook_report(NULL, 200, 1, NULL)",
            vec![],
            "22004",
            "delivery_id must not be NULL",
        ),
        (
            "SELECT apikey_webhook_report(-1, 200, 1, NULL)",
            vec![],
            "P0002",
            "delivery_id -1 does not exist",
        ),
        (
            "SELECT apikey_webhook_report(1, 1000, 1, NULL)",
            vec![],
            "22023",
            "invalid status_code: 1000 is not an HTTP status",
        ),
        (
            "SELECT apikey_webhook_report(1, 200, -1, NULL)",
            vec![],
            "22023",
            "invalid latency_ms",
        ),
    ];
    for (sql, params, code, message) in &cases {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref()).collect();
        let (got_code, got_message) = db_error(c.query(*sql, &params));
        assert_eq!(
            (got_code.as_str(), got_message.starts_with(message)),
            (*code, true),
            "{sql}: {got_message}"
        );
    }

    // Which argument is wrong is also in the DETAIL, for programs (the shim's 422 field).
    for (sql, detail) in [
        (
            "SELECT * FROM apikey_webhook_create(gen_random_uuid(), 'ftp://x/')",
            Some("argument: url"),
        ),
        (
            "SELECT * FROM apikey_webhook_create(NULL, 'https://x/')",
            Some("argument: partner_id"),
        ),
        (
            "SELECT apikey_webhook_rotate_secret(gen_random_uuid())",
            None,
        ),
    ] {
        let error = c.query(sql, &[]).expect_err(sql);
        let db = error.as_db_error().expect("a database error");
        assert_eq!(db.detail(), detail, "{sql}");
    }

    // Endpoints are capped per partner, also when created at the same moment: 12 exist,
    // 8 sessions each create one, 4 succeed.
    let capped = create_partner(&mut c);
    for i in 0..12 {
        create_endpoint(&mut c, capped, &format!("https://example.com/{i}"), &["*"]);
    }
    let start = std::sync::Arc::new(std::sync::Barrier::new(8));
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let start = std::sync::Arc::clone(&start);
            std::thread::spawn(move || {
                let mut c = superuser();
                start.wait();
                c.query_one(
                    "SELECT endpoint_id FROM apikey_webhook_create($1, $2)",
                    &[&capped, &format!("https://example.com/race/{i}")],
                )
                .map_err(|e| e.code().map(|c| c.code().to_string()))
                .map(|_| ())
            })
        })
        .collect();
    let outcomes: Vec<Result<(), Option<String>>> = racers
        .into_iter()
        .map(|r| r.join().expect("a racing create"))
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        4,
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| o
            .as_ref()
            .err()
            .is_none_or(|code| code.as_deref() == Some("55000"))),
        "{outcomes:?}"
    );
    let (code, message) = db_error(c.query_one(
        "SELECT * FROM apikey_webhook_create($1, 'https://example.com/17')",
        &[&capped],
    ));
    assert_eq!(code, "55000");
    assert!(
        message.contains("already has 16 webhook endpoints"),
        "{message}"
    );

    // Roles: a verifier manages nothing; a partner needs a keys:manage key of its own
    // partner verified in the transaction; only operators claim and report.
    let verifier = login_role(&mut c, "wh_verifier", &["apikey_verifier"]);
    let mut v = connect(&verifier);
    assert_eq!(
        sqlstate(v.query_one(
            "SELECT * FROM apikey_webhook_create($1, 'https://e.com/')",
            &[&partner]
        )),
        "42501"
    );
    let partner_role = login_role(&mut c, "wh_partner", &["apikey_partner"]);
    let mut p = connect(&partner_role);
    let (code, message) = db_error(p.query_one(
        "SELECT * FROM apikey_webhook_create($1, 'https://e.com/')",
        &[&partner],
    ));
    assert_eq!(code, "42501");
    assert!(
        message.contains("managing webhooks as a partner requires a key with scope keys:manage"),
        "{message}"
    );
    let manager = issue(&mut c, partner, &["keys:manage"]);
    let foreign = create_partner(&mut c);
    let foreign_endpoint = create_endpoint(&mut c, foreign, "https://example.com/foreign", &["*"]);
    let results: Vec<String> = {
        let mut tx = p.transaction().expect("begin");
        tx.query_one(
            "SELECT valid FROM apikey_verify($1, '{keys:manage}')",
            &[&manager.token],
        )
        .expect("verify");
        let own = tx
            .query_one(
                "SELECT apikey_webhook_rotate_secret($1, '0')",
                &[&endpoint.endpoint_id],
            )
            .map(|_| "ok".to_string())
            .unwrap_or_else(|e| e.to_string());
        tx.rollback().expect("rollback");
        let mut tx = p.transaction().expect("begin");
        tx.query_one(
            "SELECT valid FROM apikey_verify($1, '{keys:manage}')",
            &[&manager.token],
        )
        .expect("verify");
        let theirs = sqlstate(tx.query_one(
            "SELECT apikey_webhook_rotate_secret($1)",
            &[&foreign_endpoint.endpoint_id],
        ));
        tx.rollback().expect("rollback");
        let claim = sqlstate(p.query("SELECT * FROM apikey_webhook_claim()", &[]));
        vec![own, theirs, claim]
    };
    assert_eq!(
        results,
        ["ok", "P0002", "42501"],
        "own endpoint, another partner's (hidden), claiming"
    );
    let visible: i64 = {
        let mut tx = p.transaction().expect("begin");
        tx.query_one(
            "SELECT valid FROM apikey_verify($1, '{keys:manage}')",
            &[&manager.token],
        )
        .expect("verify");
        let n = tx
            .query_one("SELECT count(*) FROM apikey.webhook_endpoint_info", &[])
            .expect("read endpoints")
            .get(0);
        tx.rollback().expect("rollback");
        n
    };
    assert_eq!(visible, 1, "a partner sees its own endpoint only");
    assert_eq!(
        sqlstate(p.query("SELECT secret_sealed FROM apikey.webhook_endpoints", &[])),
        "42501",
        "no role reads the sealed secrets"
    );
}

#[test]
fn reminders_are_delivered_once_by_the_shims_minute_job() {
    let _serial = one_at_a_time();
    let receiver = Receiver::start();
    let _shims = [200, 300].map(|interval_ms| {
        let interval = interval_ms.to_string();
        Shim::start_with(&[
            ("APIKEY_SHIM_WEBHOOK_DELIVERY", "true"),
            ("APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("APIKEY_SHIM_WEBHOOK_POLL_MS", "100"),
            ("APIKEY_SHIM_REMINDER_INTERVAL_MS", interval.as_str()),
        ])
    });
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let endpoint = create_endpoint(
        &mut c,
        partner,
        &receiver.url("/expiring"),
        &["key.expiring", "key.rotation_due", "key.leaked"],
    );
    let key = issue_with(
        &mut c,
        "$1, '{a:b}', expires_at => clock_timestamp() + interval '3 days'",
        &[&partner],
    );
    let reminder = receiver.wait_for("the 7-day reminder", |r| {
        r.json()["data"]["key_id"] == key.key_id.as_str()
    });
    assert_eq!(reminder.json()["type"], "key.expiring");
    assert_eq!(reminder.json()["data"]["days_before"], 7);
    assert!(signed_by(&endpoint.secret, &reminder));
    // Two shims asking five times a second for two seconds: still one reminder.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let about_key = receiver
        .received()
        .iter()
        .filter(|r| r.json()["data"]["key_id"] == key.key_id.as_str())
        .count();
    assert_eq!(
        about_key, 1,
        "key.issued is not subscribed to; the reminder came once"
    );

    // The other events no request to the shim writes: a rotation reminder (written here in a
    // session with its own rotation period) and a leak report.
    c.execute(
        "UPDATE apikey.keys SET created_at = clock_timestamp() - interval '100 days' WHERE key_id = $1",
        &[&key.key_id],
    )
    .expect("age the key");
    c.batch_execute("SET apikey.rotation_period = '90d'; SELECT apikey_send_reminders(); RESET apikey.rotation_period")
        .expect("rotation reminders");
    let due = receiver.wait_for("key.rotation_due", |r| {
        r.json()["type"] == "key.rotation_due"
    });
    assert_eq!(due.json()["data"]["key_id"], key.key_id.as_str());
    assert!(signed_by(&endpoint.secret, &due));
    let label: String = c
        .query_one(
            "SELECT apikey_leak_report($1, 'https://github.com/o/r/blob/main/x', 'commit')",
            &[&key.token],
        )
        .expect("report the leak")
        .get(0);
    assert_eq!(label, "true_positive");
    let leaked = receiver.wait_for("key.leaked", |r| r.json()["type"] == "key.leaked");
    assert_eq!(leaked.json()["data"]["key_id"], key.key_id.as_str());
    assert_eq!(
        leaked.json()["data"]["url"],
        "https://github.com/o/r/blob/main/x"
    );
    assert!(signed_by(&endpoint.secret, &leaked));
    assert!(!leaked.body.contains(key.secret()));
}

#[test]
fn a_database_restart_during_delivery_loses_nothing() {
    let _serial = one_at_a_time();
    let cluster = PrivateCluster::start(&["apikey.webhook_allow_private_urls = on"]);
    let mut c = cluster.connect("apikey");
    c.batch_execute(&format!(
        "CREATE ROLE {SHIM_ROLE} LOGIN; GRANT apikey_verifier, apikey_admin, apikey_partner TO {SHIM_ROLE}"
    ))
    .expect("the shim's role in the private cluster");
    let receiver = Receiver::start();
    // Slow answers keep deliveries in flight when the server goes down.
    receiver.delay_answers(std::time::Duration::from_millis(150));
    let partner = create_partner(&mut c);
    let endpoint = create_endpoint(&mut c, partner, &receiver.url("/hooks"), &["*"]);
    let database_url = cluster.database_url(SHIM_ROLE, "apikey");
    let _shim = Shim::start_with(&[
        ("DATABASE_URL", database_url.as_str()),
        ("APIKEY_SHIM_WEBHOOK_DELIVERY", "true"),
        ("APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("APIKEY_SHIM_WEBHOOK_POLL_MS", "100"),
        ("APIKEY_SHIM_WEBHOOK_BATCH", "4"),
        ("APIKEY_SHIM_WEBHOOK_TIMEOUT_MS", "1000"),
    ]);
    let events: Vec<Uuid> = (0..24)
        .map(|_| send_test_event(&mut c, endpoint.endpoint_id))
        .collect();
    eventually("deliveries under way", || {
        (receiver.received().len() >= 4).then_some(())
    });
    drop(c);
    cluster.restart();
    let mut c = cluster.wait_until_up();
    eventually("every event delivered after the restart", || {
        let pending: i64 = c
            .query_one(
                "SELECT count(*) FROM apikey.webhook_deliveries WHERE state <> 'delivered'",
                &[],
            )
            .ok()?
            .get(0);
        (pending == 0).then_some(())
    });
    let mut arrivals: HashMap<String, usize> = HashMap::new();
    for r in receiver.received() {
        assert!(signed_by(&endpoint.secret, &r));
        *arrivals
            .entry(r.header("webhook-id").to_string())
            .or_default() += 1;
    }
    for event in &events {
        assert!(
            arrivals.contains_key(&event.to_string()),
            "event {event} never arrived"
        );
    }
    // At least once: only what was in flight when the server went down (at most a batch,
    // whose reports were lost) may arrive twice.
    let repeated: usize = arrivals.values().map(|n| n - 1).sum();
    assert!(repeated <= 4, "{repeated} repeated arrivals: {arrivals:?}");
}
