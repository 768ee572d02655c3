//! The shim in front of a primary and its hot standbys (`APIKEY_SHIM_REPLICA_URLS`):
//! verification answered by the standbys, changes answered once they replayed them, a standby
//! killed under load, the primary out of reach, and management following a promoted standby.
//!
//! The test cluster is the primary, shared with the other tests, so it is never stopped: a
//! primary out of reach is a `DATABASE_URL` naming a port nothing listens on.

use apikey_tests::shim::{Shim, SHIM_ROLE};
use apikey_tests::standby::Standby;
use apikey_tests::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A connection string of a server that refuses every connection at once.
const UNREACHABLE: &str = "host=127.0.0.1 port=1 connect_timeout=1";

fn replica_urls(standbys: &[&Standby]) -> String {
    standbys
        .iter()
        .map(|s| s.conninfo(SHIM_ROLE))
        .collect::<Vec<_>>()
        .join(",")
}

fn health(shim: &Shim) -> Value {
    let answer = shim.get("/healthz");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

fn wait_until_in_use(shim: &Shim, count: usize) {
    eventually("the replicas in use", || {
        let replicas = health(shim)["replicas"].clone();
        replicas
            .as_array()
            .is_some_and(|r| r.iter().filter(|r| r["in_use"] == true).count() == count)
            .then_some(())
    });
}

/// `apikey_shim_replica_verifications_total` of each replica, in `/metrics` order.
fn verifications_by_replica(shim: &Shim) -> Vec<u64> {
    shim.get("/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with("apikey_shim_replica_verifications_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

fn issue_over_http(
    shim: &Shim,
    operator: &str,
    partner: uuid::Uuid,
    rate: i32,
) -> (String, String) {
    let issued = shim.post_as(
        operator,
        "/v1/keys",
        &json!({ "partner_id": partner.to_string(), "scopes": ["orders:read"],
                 "rate_per_minute": rate }),
    );
    assert_eq!(issued.status, 201, "{}", issued.body);
    let issued = issued.json();
    (
        issued["key_id"].as_str().expect("key_id").to_string(),
        issued["token"].as_str().expect("token").to_string(),
    )
}

#[test]
fn standbys_verify_and_a_change_answers_once_every_one_replayed_it() {
    let mut primary = superuser();
    let partner = create_partner(&mut primary);
    let operator = operator_key(&mut primary);
    let (first, second) = (Standby::start(), Standby::start());
    let shim = Shim::start_with(&[(
        "APIKEY_SHIM_REPLICA_URLS",
        &replica_urls(&[&first, &second]),
    )]);
    wait_until_in_use(&shim, 2);

    for round in 0..100 {
        let (key_id, token) = issue_over_http(&shim, &operator.token, partner, 300);
        let verified = shim.get_as(&token, "/v1/verify?scope=orders:read");
        assert_eq!(verified.status, 200, "round {round}: issued, then verified");
        let revoked = shim.post_as(
            &operator.token,
            &format!("/v1/keys/{key_id}/revoke"),
            &json!({}),
        );
        assert_eq!(revoked.status, 200, "{}", revoked.body);
        let after = shim.get_as(&token, "/v1/verify");
        assert_eq!(
            (after.status, after.reason()),
            (401, "revoked".to_string()),
            "round {round}: revoked, then verified"
        );
    }
    let answered = verifications_by_replica(&shim);
    assert_eq!(answered.len(), 2, "a series per replica");
    assert!(
        answered.iter().all(|&n| n >= 50),
        "both standbys answered, in turn: {answered:?}"
    );
    let metrics = shim.get("/metrics").body;
    assert!(
        metrics.contains("apikey_shim_replica_in_use{replica=")
            && metrics.contains("apikey_shim_replica_lag_seconds{replica="),
        "{metrics}"
    );
    let replicas = health(&shim)["replicas"].clone();
    for replica in replicas.as_array().expect("replicas") {
        assert_eq!(replica["in_use"], true, "{replica}");
        assert!(replica["lag_ms"].as_u64().is_some(), "{replica}");
        let name = replica["name"].as_str().unwrap_or_default();
        assert!(
            name.ends_with(&format!(":{}", first.port))
                || name.ends_with(&format!(":{}", second.port)),
            "{name}"
        );
    }
}

#[test]
fn a_standby_that_stopped_replaying_is_asked_no_more_than_it_knows() {
    let mut primary = superuser();
    let partner = create_partner(&mut primary);
    let operator = operator_key(&mut primary);
    let standby = Standby::start();
    standby.catch_up(&mut primary);
    let shim = Shim::start_with(&[
        ("APIKEY_SHIM_REPLICA_URLS", &standby.conninfo(SHIM_ROLE)),
        // In use however far behind: only a change's wait takes it out.
        ("APIKEY_SHIM_MAX_REPLICA_LAG_MS", "60000"),
        ("APIKEY_SHIM_REPLICA_WAIT_MS", "300"),
    ]);
    wait_until_in_use(&shim, 1);
    standby
        .connect(&env_var("APIKEY_TEST_PGUSER"))
        .execute("SELECT pg_wal_replay_pause()", &[])
        .expect("pause replay");

    // Issued on the primary, unknown to the paused standby: asked again of the primary.
    let key = issue(&mut primary, partner, &["orders:read"]);
    let verified = shim.get_as(&key.token, "/v1/verify?scope=orders:read");
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verifications_by_replica(&shim), [0], "the primary's answer");
    assert_eq!(health(&shim)["replicas"][0]["in_use"], true);

    let revoked = shim.post_as(
        &operator.token,
        &format!("/v1/keys/{}/revoke", key.key_id),
        &json!({}),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let replica = health(&shim)["replicas"][0].clone();
    assert_eq!(replica["in_use"], false, "{replica}");
    assert!(
        replica["problem"]
            .as_str()
            .is_some_and(|p| p.contains("did not replay")),
        "{replica}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        health(&shim)["replicas"][0]["in_use"],
        false,
        "not back in use before it replayed the change, however small the lag allowed"
    );
    let after = shim.get_as(&key.token, "/v1/verify");
    assert_eq!(after.reason(), "revoked", "verified on the primary");
    standby
        .connect(&env_var("APIKEY_TEST_PGUSER"))
        .execute("SELECT pg_wal_replay_resume()", &[])
        .expect("resume replay");
    wait_until_in_use(&shim, 1);
}

/// Verifications of `token` from 4 threads: 200 of them, then `fault`, then 500 more. The
/// number sent, and the answers that were not 200.
fn under_load(shim: &Shim, token: &str, fault: impl FnOnce()) -> (usize, Vec<String>) {
    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let answer = shim.get_as(token, "/v1/verify?scope=orders:read");
                    sent.fetch_add(1, Ordering::Relaxed);
                    if answer.status != 200 {
                        if let Ok(mut f) = failures.lock() {
                            f.push(format!("{} {}", answer.status, answer.body));
                        }
                    }
                }
            });
        }
        let started = Instant::now();
        while sent.load(Ordering::Relaxed) < 200 && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let answered = verifications_by_replica(shim);
        assert!(
            answered[0] > 0,
            "the first standby was verifying: {answered:?}"
        );
        fault();
        let faulted_at = sent.load(Ordering::Relaxed);
        while sent.load(Ordering::Relaxed) < faulted_at + 500
            && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    (sent.load(Ordering::Relaxed), failures)
}

/// A key with room for any load, two standbys that replayed it, and a shim verifying with
/// both (in that order), with `env` besides.
fn two_standbys_verifying(env: &[(&str, &str)]) -> (Issued, Standby, Standby, Shim) {
    let mut primary = superuser();
    let partner = create_partner(&mut primary);
    let key = issue_with(
        &mut primary,
        "$1, '{orders:read}', rate_per_minute => 1000000",
        &[&partner],
    );
    let (first, second) = (Standby::start(), Standby::start());
    first.catch_up(&mut primary);
    second.catch_up(&mut primary);
    let urls = replica_urls(&[&first, &second]);
    let mut env = env.to_vec();
    env.push(("APIKEY_SHIM_REPLICA_URLS", &urls));
    let shim = Shim::start_with(&env);
    wait_until_in_use(&shim, 2);
    (key, first, second, shim)
}

#[test]
fn a_standby_killed_under_load_fails_no_request() {
    let (key, mut doomed, _survivor, shim) = two_standbys_verifying(&[]);
    let (sent, failures) = under_load(&shim, &key.token, || doomed.kill());
    assert!(sent >= 700, "the load ran: {sent} requests");
    assert!(failures.is_empty(), "of {sent} requests: {failures:?}");
    let replicas = health(&shim)["replicas"].clone();
    let replicas = replicas.as_array().expect("replicas");
    assert_eq!(replicas[0]["in_use"], false, "{replicas:?}");
    assert!(replicas[0]["problem"].is_string(), "{replicas:?}");
    assert_eq!(replicas[1]["in_use"], true, "{replicas:?}");
    assert!(
        !shim.log().contains(&key.token),
        "no token in the shim's log"
    );
}

/// A standby that accepts connections and answers nothing (SIGSTOP) holds no request
/// longer than `APIKEY_SHIM_REPLICA_TIMEOUT_MS`: far within the request's time limit, so
/// none fails; back in use once it answers again.
#[test]
fn a_standby_that_hangs_under_load_fails_no_request() {
    let (key, hung, _other, shim) = two_standbys_verifying(&[
        ("APIKEY_SHIM_REPLICA_TIMEOUT_MS", "500"),
        ("APIKEY_SHIM_REQUEST_TIMEOUT_MS", "5000"),
    ]);
    let (sent, failures) = under_load(&shim, &key.token, || hung.pause());
    let replicas = health(&shim)["replicas"].clone();
    hung.resume();
    assert!(sent >= 700, "the load ran: {sent} requests");
    assert!(failures.is_empty(), "of {sent} requests: {failures:?}");
    let replicas = replicas.as_array().expect("replicas");
    assert_eq!(replicas[0]["in_use"], false, "{replicas:?}");
    assert_eq!(
        replicas[0]["problem"], "did not answer within 500 ms (APIKEY_SHIM_REPLICA_TIMEOUT_MS)",
        "{replicas:?}"
    );
    assert_eq!(replicas[1]["in_use"], true, "{replicas:?}");
    wait_until_in_use(&shim, 2);
}

#[test]
fn with_the_primary_out_of_reach_the_standbys_still_verify() {
    let mut primary = superuser();
    let partner = create_partner(&mut primary);
    let operator = operator_key(&mut primary);
    let key = issue(&mut primary, partner, &["orders:read"]);
    // A well-formed token whose key is gone: unknown_key everywhere.
    let gone = issue(&mut primary, partner, &[]);
    primary
        .execute("DELETE FROM apikey.keys WHERE key_id = $1", &[&gone.key_id])
        .expect("delete a key");
    let standby = Standby::start();
    standby.catch_up(&mut primary);
    let database = format!(
        "{UNREACHABLE} user={SHIM_ROLE} dbname={}",
        env_var("APIKEY_TEST_PGDATABASE")
    );
    let shim = Shim::start_with(&[
        ("DATABASE_URL", &database),
        ("APIKEY_SHIM_REPLICA_URLS", &standby.conninfo(SHIM_ROLE)),
    ]);
    wait_until_in_use(&shim, 1);
    let health = health(&shim);
    assert_eq!(health["status"], "verify_only", "{health}");
    assert!(health["primary_problem"].is_string(), "{health}");

    for _ in 0..10 {
        let verified = shim.get_as(&key.token, "/v1/verify?scope=orders:read");
        assert_eq!(verified.status, 200, "{}", verified.body);
    }
    let unknown = shim.get_as(&gone.token, "/v1/verify");
    assert_eq!(
        (unknown.status, unknown.reason()),
        (401, "unknown_key".to_string()),
        "the standby's answer stands when the primary cannot be asked"
    );
    let managed = shim.get_as(&operator.token, "/v1/partners");
    assert_eq!(managed.status, 503, "management needs the primary");
}

#[test]
fn management_follows_a_promoted_standby_without_a_restart() {
    let mut primary = superuser();
    let operator = operator_key(&mut primary);
    let standby = Standby::start();
    standby.catch_up(&mut primary);
    // The standby is the second host: until it is promoted, no host takes writes.
    let database = format!(
        "host=127.0.0.1,{} port=1,{} user={SHIM_ROLE} dbname={} connect_timeout=2 \
         target_session_attrs=read-write",
        standby.socket_dir(),
        standby.port,
        env_var("APIKEY_TEST_PGDATABASE")
    );
    let shim = Shim::start_with(&[
        ("DATABASE_URL", &database),
        ("APIKEY_SHIM_REPLICA_URLS", &standby.conninfo(SHIM_ROLE)),
    ]);
    wait_until_in_use(&shim, 1);
    assert_eq!(shim.get_as(&operator.token, "/v1/partners").status, 503);
    standby.promote();
    eventually("management through the promoted standby", || {
        (shim.get_as(&operator.token, "/v1/partners").status == 200).then_some(())
    });
    let partner: uuid::Uuid = standby
        .connect_promoted(&env_var("APIKEY_TEST_PGUSER"))
        .query_one(
            "SELECT apikey_partner_create('after the promotion', NULL)",
            &[],
        )
        .expect("a partner on the new primary")
        .get(0);
    let (_, token) = issue_over_http(&shim, &operator.token, partner, 300);
    assert_eq!(shim.get_as(&token, "/v1/verify").status, 200);
    assert_eq!(health(&shim)["status"], "ok");
}
