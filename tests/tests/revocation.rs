//! Revocation is final and immediate. Every decision about a key's state is taken at the
//! time of the call, not at the start of the caller's transaction; lifecycle functions
//! decide on the row as the last commit left it, so a revoked key is never revived,
//! revoked twice or rotated; a NULL required scope is never met. Interleavings are driven
//! step by step with real sessions (and an advisory lock inside one statement), not sleeps.

use apikey_tests::postgres::{Client, IsolationLevel};
use apikey_tests::shim::Shim;
use apikey_tests::*;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn setup() -> (Client, Uuid) {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    (c, partner)
}

fn reason_in(tx: &mut postgres::Transaction<'_>, token: &str) -> String {
    tx.query_one("SELECT reason FROM apikey_verify($1)", &[&token])
        .expect("verify")
        .get(0)
}

fn revoke(c: &mut Client, key_id: &str, why: &str) -> bool {
    c.query_one("SELECT apikey_revoke($1, $2)", &[&key_id, &why])
        .expect("revoke")
        .get(0)
}

fn count(c: &mut Client, sql: &str, key_id: &str) -> i64 {
    c.query_one(sql, &[&key_id])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[test]
fn a_transaction_that_began_before_a_revoke_sees_it_on_its_next_call() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    for isolation in [
        IsolationLevel::ReadCommitted,
        IsolationLevel::RepeatableRead,
    ] {
        let key = issue(&mut c, partner, &["orders:read"]);
        let mut a = superuser();
        let mut tx = a
            .build_transaction()
            .isolation_level(isolation)
            .start()
            .expect("begin");
        assert_eq!(reason_in(&mut tx, &key.token), "ok");
        assert!(revoke(&mut c, &key.key_id, "leaked"));
        assert_eq!(reason_in(&mut tx, &key.token), "revoked", "{isolation:?}");
        tx.commit().expect("commit");
    }
    assert_eq!(reason(&mut c, &key.token), "ok", "other keys are untouched");
}

#[test]
fn a_long_statement_sees_a_revoke_committed_while_it_runs() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    let lock: i64 = 0x0a91_0009;
    let mut holder = superuser();
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&lock])
        .expect("take the barrier lock");
    let token = key.token.clone();
    let verifier = std::thread::spawn(move || {
        let mut a = superuser();
        let pid: i32 = a
            .query_one("SELECT pg_backend_pid()", &[])
            .expect("pid")
            .get(0);
        // One statement: verify, wait for the barrier, verify again.
        let reasons: Vec<String> = a
            .query_one(
                "SELECT array_agg(v.reason ORDER BY i) \
                 FROM generate_series(1, 2) AS i, \
                 LATERAL (SELECT reason FROM apikey_verify( \
                    CASE WHEN i = 2 AND pg_advisory_lock($2) IS NOT NULL THEN $1 ELSE $1 END)) AS v",
                &[&token, &lock],
            )
            .expect("the long statement")
            .get(0);
        (pid, reasons)
    });
    // Wait (bounded) until the statement has verified once and waits for the barrier.
    let started = Instant::now();
    loop {
        let waiting: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND objid = $1::bigint::oid",
                &[&(lock & 0xffff_ffff)],
            )
            .expect("pg_locks")
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the statement never waited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(revoke(&mut c, &key.key_id, "leaked"));
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&lock])
        .expect("release the barrier");
    let (_, reasons) = verifier.join().expect("verifier thread");
    assert_eq!(reasons, ["ok", "revoked"]);
}

#[test]
fn expiry_and_not_before_are_judged_at_the_time_of_the_call() {
    let (mut c, partner) = setup();
    let expiring = issue_with(
        &mut c,
        "$1, '{orders:read}', expires_at => clock_timestamp() + interval '1 second'",
        &[&partner],
    );
    let starting = issue_with(
        &mut c,
        "$1, '{orders:read}', not_before => clock_timestamp() + interval '1 second'",
        &[&partner],
    );
    let mut a = superuser();
    let mut tx = a.transaction().expect("begin");
    assert_eq!(reason_in(&mut tx, &expiring.token), "ok");
    assert_eq!(reason_in(&mut tx, &starting.token), "not_yet_valid");
    // Only the clock moves here, not the transaction.
    let transaction_start: String = tx
        .query_one("SELECT now()::text", &[])
        .expect("now()")
        .get(0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(reason_in(&mut tx, &expiring.token), "expired");
    assert_eq!(reason_in(&mut tx, &starting.token), "ok");
    let status: Vec<String> = tx
        .query(
            "SELECT status FROM apikey.key_info WHERE key_id = ANY ($1) ORDER BY key_id = $2",
            &[
                &vec![expiring.key_id.clone(), starting.key_id.clone()],
                &starting.key_id,
            ],
        )
        .expect("key_info")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        status,
        ["expired", "live"],
        "key_info judges by the clock too"
    );
    let still: String = tx
        .query_one("SELECT now()::text", &[])
        .expect("now()")
        .get(0);
    assert_eq!(still, transaction_start);
}

#[test]
fn a_revoke_or_rotate_in_a_transaction_older_than_another_revoke_sees_it() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    let mut a = superuser();
    let mut tx = a.transaction().expect("begin");
    tx.query_one("SELECT 1", &[])
        .expect("the transaction has started");
    assert!(revoke(&mut c, &key.key_id, "leaked"));
    let rotated = tx.query("SELECT key_id FROM apikey_rotate($1)", &[&key.key_id]);
    assert_eq!(sqlstate(rotated), "55000", "a revoked key is never rotated");
    tx.rollback().expect("rollback");

    let mut tx = a.transaction().expect("begin");
    tx.query_one("SELECT 1", &[])
        .expect("the transaction has started");
    let key = issue(&mut c, partner, &["orders:read"]);
    assert!(revoke(&mut c, &key.key_id, "leaked"));
    let again: bool = tx
        .query_one("SELECT apikey_revoke($1, 'again')", &[&key.key_id])
        .expect("revoke again")
        .get(0);
    assert!(!again, "already revoked");
    let enabled = tx.execute("SELECT apikey_set_enabled($1, true)", &[&key.key_id]);
    assert_eq!(sqlstate(enabled), "55000", "a revoked key is never enabled");
    tx.rollback().expect("rollback");
    let row = c
        .query_one(
            "SELECT revoke_reason, rotated_to FROM apikey.keys WHERE key_id = $1",
            &[&key.key_id],
        )
        .expect("row");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("leaked"));
    assert_eq!(row.get::<_, Option<String>>(1), None);
}

#[test]
fn under_repeatable_read_a_lifecycle_change_of_a_changed_row_fails_safely() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    let mut a = superuser();
    let mut tx = a
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .expect("begin");
    tx.query_one("SELECT 1", &[]).expect("take the snapshot");
    assert!(revoke(&mut c, &key.key_id, "leaked"));
    let rotated = tx.query("SELECT key_id FROM apikey_rotate($1)", &[&key.key_id]);
    assert_eq!(sqlstate(rotated), "40001");
    drop(tx);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM apikey.keys WHERE rotated_to IS NOT NULL AND key_id = $1",
            &key.key_id
        ),
        0,
        "no successor"
    );
}

/// Runs `call` for one key from 8 sessions at once, `rounds` times; returns per round what
/// each session got (`Ok(text)` or the SQLSTATE).
fn race(
    rounds: usize,
    mut make_key: impl FnMut() -> String,
    call: &'static str,
) -> Vec<(String, Vec<Result<String, String>>)> {
    const SESSIONS: usize = 8;
    let mut clients: Vec<Client> = (0..SESSIONS).map(|_| superuser()).collect();
    let mut results = Vec::new();
    for _ in 0..rounds {
        let key_id = make_key();
        let barrier = Arc::new(Barrier::new(SESSIONS));
        let handles: Vec<_> = clients
            .drain(..)
            .map(|mut client| {
                let (barrier, key_id) = (Arc::clone(&barrier), key_id.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let outcome = client
                        .query_one(call, &[&key_id])
                        .map(|r| r.get::<_, String>(0))
                        .map_err(|e| e.code().map(|c| c.code().to_string()).unwrap_or_default());
                    (client, outcome)
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for handle in handles {
            let (client, outcome) = handle.join().expect("session thread");
            clients.push(client);
            outcomes.push(outcome);
        }
        results.push((key_id, outcomes));
    }
    results
}

#[test]
fn concurrent_revokes_of_one_key_succeed_exactly_once() {
    let (mut c, partner) = setup();
    let rounds = race(
        5,
        || issue(&mut superuser(), partner, &["orders:read"]).key_id,
        "SELECT apikey_revoke($1, 'race')::text",
    );
    for (key_id, outcomes) in rounds {
        let trues = outcomes
            .iter()
            .filter(|o| o.as_deref() == Ok("true"))
            .count();
        let falses = outcomes
            .iter()
            .filter(|o| o.as_deref() == Ok("false"))
            .count();
        assert_eq!((trues, falses), (1, 7), "{outcomes:?}");
        assert_eq!(
            count(
                &mut c,
                "SELECT count(*) FROM apikey.audit_log WHERE key_id = $1 AND action = 'revoke'",
                &key_id
            ),
            1
        );
    }
}

#[test]
fn concurrent_rotations_of_one_key_mint_exactly_one_successor() {
    let (mut c, partner) = setup();
    let rounds = race(
        5,
        || issue(&mut superuser(), partner, &["orders:read"]).key_id,
        "SELECT key_id FROM apikey_rotate($1, '1 hour')",
    );
    for (key_id, outcomes) in rounds {
        let minted = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(minted, 1, "{outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| o.is_ok() || o.as_ref().err().map(String::as_str) == Some("55000")),
            "{outcomes:?}"
        );
        assert_eq!(
            count(&mut c, "SELECT count(*) FROM apikey.keys k JOIN apikey.keys o ON o.rotated_to = k.key_id WHERE o.key_id = $1", &key_id),
            1
        );
        assert_eq!(
            count(
                &mut c,
                "SELECT count(*) FROM apikey.audit_log WHERE key_id = $1 AND action = 'rotate'",
                &key_id
            ),
            1
        );
    }
}

#[test]
fn concurrent_rotate_and_revoke_never_leave_a_live_successor_of_a_revoked_key() {
    let (mut c, partner) = setup();
    for _ in 0..5 {
        let key = issue(&mut c, partner, &["orders:read"]);
        let barrier = Arc::new(Barrier::new(2));
        let spawn = |call: &'static str| {
            let (barrier, key_id) = (Arc::clone(&barrier), key.key_id.clone());
            std::thread::spawn(move || {
                let mut client = superuser();
                barrier.wait();
                client.query(call, &[&key_id]).is_ok()
            })
        };
        let rotation = spawn("SELECT key_id FROM apikey_rotate($1, '1 hour')");
        let revocation = spawn("SELECT apikey_revoke($1, 'leaked')");
        let (rotated, revoked) = (
            rotation.join().expect("rotate"),
            revocation.join().expect("revoke"),
        );
        assert!(revoked);
        let row = c
            .query_one(
                "SELECT revoke_reason, rotated_to FROM apikey.keys WHERE key_id = $1",
                &[&key.key_id],
            )
            .expect("row");
        let (why, successor): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        if rotated {
            // The rotation came first: the old key's grace was ended by the revoke.
            assert_eq!(why.as_deref(), Some("leaked"));
            assert!(successor.is_some());
        } else {
            assert_eq!((why.as_deref(), successor), (Some("leaked"), None));
        }
        assert_eq!(reason(&mut c, &key.token), "revoked");
    }
}

#[test]
fn concurrent_partners_with_one_name_get_one_partner_and_clear_errors() {
    let name = unique("same name");
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (barrier, name) = (Arc::clone(&barrier), name.clone());
            std::thread::spawn(move || {
                let mut client = superuser();
                barrier.wait();
                client
                    .query_one("SELECT apikey_partner_create($1)", &[&name])
                    .map(|_| ())
                    .map_err(|e| {
                        let db = e.as_db_error().expect("a database error");
                        (
                            db.code().code().to_string(),
                            db.message().to_string(),
                            db.detail().map(str::to_string),
                        )
                    })
            })
        })
        .collect();
    let outcomes: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    for outcome in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(outcome.0, "23505");
        assert_eq!(
            outcome.1,
            format!("a partner named \"{name}\" already exists"),
            "{outcome:?}"
        );
        assert_eq!(outcome.2, None, "{outcome:?}");
    }
}

#[test]
fn a_null_required_scope_is_never_met() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["*"]);
    let ask = |c: &mut Client, scopes: &str| -> String {
        c.query_one(
            &format!("SELECT reason FROM apikey_verify($1, {scopes})"),
            &[&key.token],
        )
        .expect("verify")
        .get(0)
    };
    assert_eq!(
        ask(&mut c, "ARRAY['orders:read', NULL]"),
        "insufficient_scope"
    );
    assert_eq!(ask(&mut c, "ARRAY[NULL]::text[]"), "insufficient_scope");
    assert_eq!(ask(&mut c, "ARRAY['not a scope']"), "insufficient_scope");
    assert_eq!(ask(&mut c, "ARRAY['orders:read']"), "ok");
    assert_eq!(ask(&mut c, "NULL"), "ok", "a NULL array is no requirement");
    assert_eq!(ask(&mut c, "'{}'"), "ok");
    let mut tx = c.transaction().expect("begin");
    tx.query_one("SELECT valid FROM apikey_verify($1)", &[&key.token])
        .expect("verify");
    let code = sqlstate(tx.execute("SELECT apikey_require_scope(NULL)", &[]));
    assert_eq!(code, "42501", "requiring NULL fails closed");
}

#[test]
fn over_http_empty_and_bad_entries_are_refused_naming_their_source() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["*"]);
    let shim = Shim::start();
    // SQL treats '' as never met; over HTTP an empty requirement is a client's mistake, never
    // a requirement that silently vanishes and lets any valid key through.
    let response = shim.get_as(&key.token, "/v1/verify?scope=orders:read&scope=");
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(response.json()["field"], "scope");
    let response = apikey_tests::shim::send(
        shim.request("GET", "/v1/verify")
            .set("X-API-Key", &key.token)
            .set("X-Required-Scopes", "orders:read, ,"),
        None,
    );
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(response.json()["field"], "X-Required-Scopes");
    let response = shim.get_as(&key.token, "/v1/verify?scope=orders:read");
    assert_eq!(response.status, 200, "{}", response.body);
    let response = shim.get_as(&key.token, "/v1/verify?scope=orders%20read");
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(response.json()["field"], "scope");
}
