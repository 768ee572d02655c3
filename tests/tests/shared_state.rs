//! One server-wide state: rate limits spent by many sessions, two shims and SQL together;
//! proofs shared by fresh connections (checked with `apikey_status()` counters, not
//! timings); proofs that never outlive the hash they proved; two databases with one key id
//! kept apart; usage written by the worker, kept across a clean restart, recovered after a
//! crash; retention; a flood of forged tokens that writes almost nothing, and one from many
//! networks that cannot hide failures against real keys; a partner with many keys that
//! cannot evict another's; and the same extension without `shared_preload_libraries`.

use apikey_tests::cluster::PrivateCluster;
use apikey_tests::postgres::Client;
use apikey_tests::shim::Shim;
use apikey_tests::*;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

/// Tests that read the server-wide counters, and tests that make Argon2id fail (which those
/// counters see), run one at a time (other test files run before or after this one, never
/// alongside).
fn counters_alone() -> MutexGuard<'static, ()> {
    static ALONE: Mutex<()> = Mutex::new(());
    ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn status(c: &mut Client, column: &str) -> i64 {
    c.query_one(
        &format!("SELECT {column}::bigint FROM apikey_status()"),
        &[],
    )
    .unwrap_or_else(|e| panic!("apikey_status().{column}: {e}"))
    .get(0)
}

fn setup() -> (Client, Uuid) {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    (c, partner)
}

#[test]
fn many_sessions_never_spend_more_than_the_limit() {
    let (mut c, partner) = setup();
    let key = issue_with(&mut c, "$1, '{a:b}', rate_per_minute => 30", &[&partner]);
    const SESSIONS: usize = 8;
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let started = std::time::Instant::now();
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let (barrier, token) = (Arc::clone(&barrier), key.token.clone());
            std::thread::spawn(move || {
                let mut c = superuser();
                barrier.wait();
                (0..20).map(|_| reason(&mut c, &token)).collect::<Vec<_>>()
            })
        })
        .collect();
    let reasons: Vec<String> = sessions
        .into_iter()
        .flat_map(|s| s.join().expect("session"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let ok = reasons.iter().filter(|r| *r == "ok").count();
    let limited = reasons.iter().filter(|r| *r == "rate_limited").count();
    assert_eq!(ok + limited, SESSIONS * 20, "{reasons:?}");
    // The burst of one minute's allowance, plus what refilled while the test ran (30/min).
    let refilled = (elapsed * 30.0 / 60.0).ceil() as usize;
    assert!(
        (30..=30 + refilled).contains(&ok),
        "{ok} accepted in {elapsed:.1}s at 30/min"
    );
}

#[test]
fn two_shims_and_sql_share_one_limit() {
    let (mut c, partner) = setup();
    let key = issue_with(&mut c, "$1, '{a:b}', rate_per_minute => 6", &[&partner]);
    let (a, b) = (Shim::start(), Shim::start());
    for shim in [&a, &b, &a, &b] {
        let r = shim.get_as(&key.token, "/v1/verify");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(reason(&mut c, &key.token), "ok");
    let last = b.get_as(&key.token, "/v1/verify");
    assert_eq!(last.status, 200, "the sixth of six: {}", last.body);
    assert_eq!(last.rate("ratelimit", "r"), Some(0));
    for shim in [&a, &b] {
        let r = shim.get_as(&key.token, "/v1/verify");
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.reason(), "rate_limited");
    }
    let row = c
        .query_one(
            "SELECT valid, reason, key_id, rate_remaining, rate_reset_seconds \
             FROM apikey_verify($1)",
            &[&key.token],
        )
        .expect("verify");
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "rate_limited");
    assert_eq!(
        row.get::<_, Option<String>>(2),
        Some(key.key_id.clone()),
        "identity set"
    );
    assert_eq!(row.get::<_, Option<i32>>(3), Some(0));
    let reset: i32 = row.get::<_, Option<i32>>(4).expect("rate_reset_seconds");
    assert!(
        (1..=10).contains(&reset),
        "one more in at most 10 s at 6/min: {reset}"
    );
}

#[test]
fn a_proof_is_shared_by_fresh_connections_and_refutes_wrong_secrets() {
    let _alone = counters_alone();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    let verified = status(&mut c, "argon2_verified");
    assert_eq!(reason(&mut superuser(), &key.token), "ok");
    assert_eq!(
        status(&mut c, "argon2_verified"),
        verified + 1,
        "the first pays Argon2id"
    );
    for _ in 0..3 {
        assert_eq!(reason(&mut superuser(), &key.token), "ok");
    }
    assert_eq!(
        status(&mut c, "argon2_verified"),
        verified + 1,
        "fresh connections use the server's proof"
    );
    let failed = status(&mut c, "argon2_failed");
    let mut warm = superuser();
    for _ in 0..20 {
        assert_eq!(reason(&mut warm, &key.token), "ok");
    }
    assert_eq!(
        (
            status(&mut c, "argon2_verified"),
            status(&mut c, "argon2_failed")
        ),
        (verified + 1, failed),
        "a warm connection pays no Argon2id"
    );
    let wrong = forge(&key.key_id, &"W".repeat(43));
    for _ in 0..5 {
        assert_eq!(reason(&mut superuser(), &wrong.token), "secret_mismatch");
    }
    assert_eq!(
        status(&mut c, "argon2_failed"),
        failed,
        "a wrong secret for a proven key costs no Argon2id"
    );
}

#[test]
fn guesses_at_an_unproven_key_are_refused_at_once_beyond_a_bounded_queue() {
    let _alone = counters_alone();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    let failed = status(&mut c, "argon2_failed");
    let minute_before: String = c
        .query_one("SELECT date_trunc('minute', clock_timestamp())::text", &[])
        .expect("minute")
        .get(0);
    let started = std::time::Instant::now();
    const SESSIONS: usize = 12;
    const GUESSES: usize = 40;
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let answers: Vec<
        Vec<(
            String,
            Option<String>,
            Option<Uuid>,
            Option<i32>,
            Option<i32>,
        )>,
    > = (0..SESSIONS)
        .map(|session| {
            let (barrier, key_id) = (barrier.clone(), key.key_id.clone());
            std::thread::spawn(move || {
                let mut c = superuser();
                barrier.wait();
                (0..GUESSES)
                    .map(|guess| {
                        let wrong = forge(&key_id, &format!("{session:02}{guess:041}"));
                        let row = c
                            .query_one(
                                "SELECT reason, key_id, partner_id, rate_remaining, \
                                     rate_reset_seconds FROM apikey_verify($1)",
                                &[&wrong.token],
                            )
                            .expect("apikey_verify never raises");
                        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
                    })
                    .collect()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("a guessing session"))
        .collect();
    let elapsed = started.elapsed().as_secs() as i64 + 1;
    let all: Vec<_> = answers.into_iter().flatten().collect();
    let refused: Vec<_> = all.iter().filter(|a| a.0 == "rate_limited").collect();
    assert!(
        all.iter()
            .all(|a| a.0 == "rate_limited" || a.0 == "secret_mismatch"),
        "{all:?}"
    );
    assert!(
        !refused.is_empty(),
        "twelve sessions guessing at once: some are refused instead of queueing"
    );
    for answer in &refused {
        assert_eq!(
            (&answer.1, &answer.2, answer.3, answer.4),
            (&None, &None, Some(0), Some(1)),
            "a refused guess shows no identity and asks to retry in a second"
        );
    }
    // Three failures make the key suspect; then its guesses share a budget of five Argon2id
    // a second (a burst of five), with at most one running and two waiting at a time.
    let spent = status(&mut c, "argon2_failed") - failed;
    assert!(
        spent <= 3 + 3 + 5 + 5 * elapsed,
        "{spent} Argon2id refutations in {elapsed} s"
    );
    let counted: i64 = c
        .query_one(
            "SELECT coalesce(sum(count), 0)::bigint FROM apikey_usage(since => $1::text::timestamptz) \
             WHERE key_id = $2",
            &[&minute_before, &key.key_id],
        )
        .expect("apikey_usage")
        .get(0);
    assert_eq!(
        counted,
        (SESSIONS * GUESSES) as i64,
        "every guess is counted"
    );
    // The right secret gets through once the guessing stops (at most a second's wait).
    eventually("the right secret verifies after the guessing", || {
        (reason(&mut c, &key.token) == "ok").then_some(())
    });

    // A guess Argon2id refuted is refused again without Argon2id (a retry, or an attacker
    // repeating it).
    let other = issue(&mut c, partner, &["a:b"]);
    let wrong = forge(&other.key_id, &"R".repeat(43));
    let failed = status(&mut c, "argon2_failed");
    assert_eq!(reason(&mut superuser(), &wrong.token), "secret_mismatch");
    assert_eq!(status(&mut c, "argon2_failed"), failed + 1);
    for _ in 0..3 {
        assert_eq!(reason(&mut superuser(), &wrong.token), "secret_mismatch");
    }
    assert_eq!(
        status(&mut c, "argon2_failed"),
        failed + 1,
        "a refuted digest is refused from memory"
    );
    assert_eq!(
        reason(&mut c, &other.token),
        "ok",
        "and the right one still verifies"
    );
}

#[test]
fn a_proof_never_outlives_the_hash_it_proved() {
    let _alone = counters_alone();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    let other = issue(&mut c, partner, &["a:b"]);
    let mut warm = superuser();
    assert_eq!(reason(&mut warm, &key.token), "ok");
    // The stored hash becomes another key's: the proof of the old one must not count.
    c.execute(
        "UPDATE apikey.keys k SET secret_hash = o.secret_hash, \
             pepper_fingerprint = o.pepper_fingerprint \
         FROM apikey.keys o WHERE k.key_id = $1 AND o.key_id = $2",
        &[&key.key_id, &other.key_id],
    )
    .expect("swap the hash");
    assert_eq!(reason(&mut warm, &key.token), "secret_mismatch");
    assert_eq!(reason(&mut superuser(), &key.token), "secret_mismatch");
    c.execute("SELECT apikey_partner_set_active($1, false)", &[&partner])
        .expect("deactivate");
    assert_eq!(reason(&mut warm, &other.token), "partner_inactive");
}

#[test]
fn two_databases_with_one_key_id_are_kept_apart() {
    let _alone = counters_alone();
    let mut dbs = Databases::default();
    let second = dbs.create("apikey_shared_second");
    let mut first = superuser();
    let partner = create_partner(&mut first);
    let key = issue_with(&mut first, "$1, '{a:b}', rate_per_minute => 2", &[&partner]);
    let mut other = connect_to("postgres", &second);
    other
        .batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
        .expect("CREATE EXTENSION");
    let copy = first
        .query_one(
            "SELECT secret_hash, pepper_fingerprint FROM apikey.keys WHERE key_id = $1",
            &[&key.key_id],
        )
        .expect("the key row");
    let (hash, fingerprint): (String, String) = (copy.get(0), copy.get(1));
    let partner2 = create_partner(&mut other);
    other
        .execute(
            "INSERT INTO apikey.keys (key_id, partner_id, secret_hash, pepper_fingerprint, \
                 environment, rate_per_minute) VALUES ($1, $2, $3, $4, 'live', 3)",
            &[&key.key_id, &partner2, &hash, &fingerprint],
        )
        .expect("the same key id in the second database");
    // Limits are per database: the first's allowance spent, the second's untouched (three
    // there, for the three verifications below).
    assert_eq!(reason(&mut first, &key.token), "ok");
    assert_eq!(reason(&mut first, &key.token), "ok");
    assert_eq!(reason(&mut first, &key.token), "rate_limited");
    assert_eq!(reason(&mut other, &key.token), "ok");
    assert_eq!(
        verify(&mut other, Some(&key.token), &[], None).partner_id,
        Some(partner2)
    );
    // A revocation in one does not touch the other.
    first
        .execute("SELECT apikey_revoke($1)", &[&key.key_id])
        .expect("revoke");
    assert_eq!(reason(&mut first, &key.token), "revoked");
    assert_eq!(reason(&mut other, &key.token), "ok");
    // A different hash under the same key id: no proof from the first database counts.
    let stranger = issue(&mut other, partner2, &["a:b"]);
    other
        .execute(
            "UPDATE apikey.keys k SET secret_hash = s.secret_hash FROM apikey.keys s \
             WHERE k.key_id = $1 AND s.key_id = $2",
            &[&key.key_id, &stranger.key_id],
        )
        .expect("another hash");
    assert_eq!(reason(&mut other, &key.token), "secret_mismatch");
}

#[test]
fn usage_is_written_by_the_worker_and_readable_at_once() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    assert_eq!(reason(&mut c, &key.token), "ok");
    assert_eq!(reason(&mut c, &key.token), "ok");
    assert_eq!(
        verify(&mut c, Some(&key.token), &["x:y"], None).reason,
        "insufficient_scope"
    );
    // Counted at once (from shared memory), written within the flush interval.
    let counts = |c: &mut Client| -> Vec<(String, i64)> {
        c.query(
            "SELECT reason, sum(count)::bigint FROM apikey_usage(key_id => $1) GROUP BY 1 ORDER BY 1",
            &[&key.key_id],
        )
        .expect("apikey_usage")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let expected = vec![("insufficient_scope".to_string(), 1), ("ok".to_string(), 2)];
    assert_eq!(counts(&mut c), expected);
    eventually("the worker writes the counts", || {
        let written: i64 = c
            .query_one(
                "SELECT coalesce(sum(count), 0)::bigint FROM apikey.usage WHERE key_id = $1",
                &[&key.key_id],
            )
            .expect("apikey.usage")
            .get(0);
        (written == 3).then_some(())
    });
    assert_eq!(
        counts(&mut c),
        expected,
        "written counts are not counted twice"
    );
    let partner_of_rows: Vec<Option<Uuid>> = c
        .query(
            "SELECT DISTINCT partner_id FROM apikey.usage WHERE key_id = $1",
            &[&key.key_id],
        )
        .expect("apikey.usage")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(partner_of_rows, [Some(partner)]);
}

/// The worker's flush gives way to DDL: while another transaction holds a lock the flush
/// would wait for (here SHARE on apikey.keys, as CREATE INDEX in an upgrade script takes
/// before an ALTER TABLE), the flush gives up at once instead of waiting (and deadlocking
/// with the upgrade), keeps its counts, and writes them all once the lock is gone.
#[test]
fn a_flush_gives_way_to_a_table_lock_and_loses_nothing() {
    let mut dbs = Databases::default();
    let db = dbs.create("apikey_flush_lock");
    let mut c = connect_to("postgres", &db);
    c.batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
        .expect("CREATE EXTENSION");
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["a:b"]);
    let log_from = std::fs::metadata(server_log_path()).map_or(0, |m| m.len() as usize);
    let mut locker = connect_to("postgres", &db);
    let mut lock = locker.transaction().expect("begin");
    lock.batch_execute("LOCK TABLE apikey.keys IN SHARE MODE")
        .expect("lock the keys table");
    for _ in 0..5 {
        assert_eq!(
            reason(&mut c, &key.token),
            "ok",
            "verification needs no write lock"
        );
    }
    eventually("a flush that gave way to the lock", || {
        let log = std::fs::read(server_log_path()).unwrap_or_default();
        String::from_utf8_lossy(&log[log_from.min(log.len())..])
            .lines()
            .any(|l| {
                l.contains("flushing usage of database")
                    && l.contains("could not obtain lock on relation")
            })
            .then_some(())
    });
    lock.rollback().expect("release the lock");
    eventually("every count written after the lock is gone", || {
        let written: i64 = c
            .query_one(
                "SELECT coalesce(sum(count), 0)::bigint FROM apikey.usage WHERE key_id = $1",
                &[&key.key_id],
            )
            .expect("apikey.usage")
            .get(0);
        (written == 5).then_some(())
    });
    assert!(last_used_at(&mut c, &key.key_id).is_some());
}

#[test]
fn a_partner_sees_only_its_own_usage() {
    let (mut c, partner) = setup();
    let other_partner = create_partner(&mut c);
    let manager = issue(&mut c, partner, &["keys:manage"]);
    let stranger = issue(&mut c, other_partner, &["a:b"]);
    assert_eq!(reason(&mut c, &stranger.token), "ok");
    let name = login_role(&mut c, "usage_partner", &["apikey_partner"]);
    let mut p = connect(&name);
    let mut tx = p.transaction().expect("begin");
    tx.query_one(
        "SELECT valid FROM apikey_verify($1, '{keys:manage}')",
        &[&manager.token],
    )
    .expect("verify");
    let seen: Vec<Option<String>> = tx
        .query(
            "SELECT DISTINCT key_id FROM apikey_usage(since => now() - interval '1 hour')",
            &[],
        )
        .expect("apikey_usage")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        seen,
        [Some(manager.key_id.clone())],
        "only its own key's counts"
    );
    let asked: i64 = tx
        .query_one(
            "SELECT count(*) FROM apikey_usage(key_id => $1, partner_id => $2)",
            &[&stranger.key_id, &other_partner],
        )
        .expect("apikey_usage")
        .get(0);
    assert_eq!(asked, 0, "asking for another partner's key shows nothing");
    let table: i64 = tx
        .query_one(
            "SELECT count(*) FROM apikey.usage WHERE key_id = $1",
            &[&stranger.key_id],
        )
        .expect("apikey.usage")
        .get(0);
    assert_eq!(table, 0, "row-level security on apikey.usage");
}

#[test]
fn a_rotation_family_shares_one_rate_limit() {
    let (mut c, partner) = setup();
    let old = issue_with(&mut c, "$1, '{a:b}', rate_per_minute => 4", &[&partner]);
    let row = c
        .query_one(
            "SELECT key_id, token FROM apikey_rotate($1, '1 hour')",
            &[&old.key_id],
        )
        .expect("rotate with a grace period");
    let (new_key_id, new_token): (String, String) = (row.get(0), row.get(1));
    let reasons: Vec<String> = (0..6)
        .map(|i| reason(&mut c, if i % 2 == 0 { &old.token } else { &new_token }))
        .collect();
    assert_eq!(
        reasons,
        ["ok", "ok", "ok", "ok", "rate_limited", "rate_limited"],
        "the old token in its grace and the new one spend one bucket of 4"
    );
    for key_id in [&old.key_id, &new_key_id] {
        let remaining: Option<i32> = c
            .query_one("SELECT remaining FROM apikey_rate_state($1)", &[key_id])
            .expect("apikey_rate_state")
            .get(0);
        assert_eq!(remaining, Some(0), "{key_id} shows the family's bucket");
    }
    // Each token's use is its own key's.
    let used: i64 = eventually("both keys' last use is written", || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM apikey.keys WHERE key_id IN ($1, $2) AND last_used_at IS NOT NULL",
                &[&old.key_id, &new_key_id],
            )
            .expect("last_used_at")
            .get(0);
        (n == 2).then_some(n)
    });
    assert_eq!(used, 2);
}

#[test]
fn a_flood_of_forged_tokens_writes_almost_nothing() {
    let _alone = counters_alone();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    assert_eq!(reason(&mut c, &key.token), "ok", "the key is proven");
    // Other tests run alongside: count only this test's rows.
    let rows_of_the_flood = "SELECT count(*) FROM apikey.audit_log WHERE action = 'verify_failed' \
         AND (key_id = $1 OR host(client_ip) IN ('198.51.100.61', '198.51.100.62'))";
    let before: i64 = c
        .query_one(rows_of_the_flood, &[&key.key_id])
        .expect("count")
        .get(0);
    let minute_before: String = c
        .query_one("SELECT date_trunc('minute', clock_timestamp())::text", &[])
        .expect("minute")
        .get(0);
    let failed = status(&mut c, "argon2_failed");
    for i in 0..300 {
        let unknown = forge(&format!("ak_live_{:016}", i), &"x".repeat(43));
        let ip = if i % 2 == 0 {
            "198.51.100.61"
        } else {
            "198.51.100.62"
        };
        assert_eq!(
            verify(&mut c, Some(&unknown.token), &[], Some(ip)).reason,
            "unknown_key"
        );
        let wrong = forge(&key.key_id, &format!("{:043}", i));
        assert_eq!(
            verify(&mut c, Some(&wrong.token), &[], Some(ip)).reason,
            "secret_mismatch"
        );
    }
    let minutes: i64 = c
        .query_one(
            "SELECT extract(epoch FROM date_trunc('minute', clock_timestamp()) - $1::text::timestamptz)::bigint / 60 + 1",
            &[&minute_before],
        )
        .expect("minutes")
        .get(0);
    let after: i64 = c
        .query_one(rows_of_the_flood, &[&key.key_id])
        .expect("count")
        .get(0);
    // Two addresses for unknown key ids, one key for wrong secrets, per minute spanned.
    assert!(
        after - before <= 3 * minutes,
        "{} audit rows for 600 failures over {minutes} minute(s)",
        after - before
    );
    assert_eq!(
        status(&mut c, "argon2_failed"),
        failed,
        "neither unknown key ids nor wrong secrets for a proven key cost Argon2id"
    );
    let counted: i64 = c
        .query_one(
            "SELECT coalesce(sum(count), 0)::bigint FROM apikey_usage(since => $1::text::timestamptz) \
             WHERE key_id = $2 AND reason = 'secret_mismatch'",
            &[&minute_before, &key.key_id],
        )
        .expect("apikey_usage")
        .get(0);
    assert_eq!(counted, 300, "every failure is counted");
}

#[test]
fn a_partner_with_many_keys_cannot_evict_another_partners_keys() {
    let cluster = PrivateCluster::start(&[
        "shared_preload_libraries = 'apikey'",
        "apikey.max_keys = 100",
    ]);
    let mut c = cluster.connect("apikey");
    let (small, big) = (create_partner(&mut c), create_partner(&mut c));
    let kept: Vec<Issued> = (0..10).map(|_| issue(&mut c, small, &["a:b"])).collect();
    for key in &kept {
        assert_eq!(
            reason(&mut c, &key.token),
            "ok",
            "the small partner's key is proven"
        );
    }
    // 150 keys of one partner pass through a table of 100.
    for _ in 0..150 {
        let key = issue(&mut c, big, &["a:b"]);
        assert_eq!(reason(&mut c, &key.token), "ok");
    }
    assert!(status(&mut c, "keys_evicted") > 0, "the table overflowed");
    let argon2 = status(&mut c, "argon2_verified");
    for key in &kept {
        assert_eq!(reason(&mut c, &key.token), "ok");
    }
    assert_eq!(
        status(&mut c, "argon2_verified"),
        argon2,
        "the small partner's keys are still proven: none was evicted"
    );
    assert!(
        cluster
            .log()
            .contains("the shared key table is full (apikey.max_keys = 100)"),
        "eviction is logged"
    );
}

#[test]
fn a_flood_from_many_networks_cannot_hide_failures_against_real_keys() {
    // A table of 100 marks: sender networks may take 50 of them per minute.
    let cluster = PrivateCluster::start(&[
        "shared_preload_libraries = 'apikey'",
        "apikey.max_usage_entries = 100",
    ]);
    let mut c = cluster.connect("apikey");
    let partner = create_partner(&mut c);
    let keys: Vec<Issued> = (0..60).map(|_| issue(&mut c, partner, &["a:b"])).collect();
    for key in &keys {
        assert_eq!(reason(&mut c, &key.token), "ok", "the key is proven");
    }
    let minute_before: String = c
        .query_one("SELECT date_trunc('minute', clock_timestamp())::text", &[])
        .expect("minute")
        .get(0);
    let suppressed = status(&mut c, "audit_suppressed");
    let unknown = |i: usize| forge(&format!("ak_live_{i:016}"), &"x".repeat(43)).token;
    let fail_unknown = |c: &mut Client, i: usize, ip: &str| {
        assert_eq!(
            verify(c, Some(&unknown(i)), &[], Some(ip)).reason,
            "unknown_key"
        );
    };
    // Addresses of one network count as one sender: an IPv4 /24, an IPv6 /64, and the
    // IPv4-mapped form of the /24's addresses.
    for i in 0..200 {
        fail_unknown(&mut c, i, &format!("203.0.113.{}", i + 1));
        fail_unknown(&mut c, i, &format!("2001:db8:1:2:{i:x}::1"));
        fail_unknown(&mut c, i, &format!("::ffff:203.0.113.{}", i + 1));
    }
    // 300 networks, more than the table lets them mark.
    for i in 0..300 {
        fail_unknown(&mut c, i, &format!("10.{}.{}.1", i / 256, i % 256));
    }
    // Then every real key meets a wrong secret: more keys than the networks left room for.
    for (i, key) in keys.iter().enumerate() {
        let wrong = forge(&key.key_id, &format!("{i:043}"));
        let verdict = verify(&mut c, Some(&wrong.token), &[], Some("10.250.0.1"));
        assert_eq!(verdict.reason, "secret_mismatch");
    }
    let minutes: i64 = c
        .query_one(
            "SELECT extract(epoch FROM date_trunc('minute', clock_timestamp()) - $1::text::timestamptz)::bigint / 60 + 1",
            &[&minute_before],
        )
        .expect("minutes")
        .get(0);
    let rows = |c: &mut Client, filter: &str| -> i64 {
        c.query_one(
            &format!(
                "SELECT count(*) FROM apikey.audit_log WHERE action = 'verify_failed' AND {filter}"
            ),
            &[],
        )
        .expect("audit rows")
        .get(0)
    };
    let ids: Vec<String> = keys.iter().map(|k| format!("'{}'", k.key_id)).collect();
    let distinct: i64 = c
        .query_one(
            &format!(
                "SELECT count(DISTINCT key_id) FROM apikey.audit_log WHERE action = 'verify_failed' \
                 AND reason = 'secret_mismatch' AND key_id IN ({})",
                ids.join(",")
            ),
            &[],
        )
        .expect("audited keys")
        .get(0);
    assert_eq!(
        distinct, 60,
        "a failure against an existing key is always audited"
    );
    for (network, filter) in [
        (
            "203.0.113.0/24",
            "client_ip << '203.0.113.0/24' OR client_ip << '::ffff:203.0.113.0/120'",
        ),
        ("2001:db8:1:2::/64", "client_ip << '2001:db8:1:2::/64'"),
    ] {
        let written = rows(&mut c, &format!("({filter})"));
        assert!(
            (1..=minutes).contains(&written),
            "{written} rows for 200 senders of {network} over {minutes} minute(s)"
        );
    }
    let many = rows(
        &mut c,
        "reason = 'unknown_key' AND client_ip << '10.0.0.0/8'",
    );
    assert!(
        (1..=50 * minutes).contains(&many),
        "{many} rows for 300 networks over {minutes} minute(s)"
    );
    let hidden = status(&mut c, "audit_suppressed") - suppressed;
    assert_eq!(
        hidden,
        300 - many,
        "every failure of the 300 networks was audited or counted as suppressed"
    );
}

#[test]
fn counts_and_proofs_survive_a_clean_restart_and_the_worker_recovers_from_a_crash() {
    let cluster = PrivateCluster::start(&[
        "shared_preload_libraries = 'apikey'",
        "apikey.usage_flush_interval = '1h'",
    ]);
    let mut c = cluster.connect("apikey");
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["a:b"]);
    for _ in 0..4 {
        assert_eq!(reason(&mut c, &key.token), "ok");
    }
    // A second key, proven before the restart, for the proofs: its uses are not among the
    // counts below, which a crash may or may not have let the worker write.
    let proven = issue(&mut c, partner, &["a:b"]);
    assert_eq!(reason(&mut c, &proven.token), "ok");
    let written = |c: &mut Client| -> i64 {
        c.query_one(
            "SELECT coalesce(sum(count), 0)::bigint FROM apikey.usage WHERE key_id = $1",
            &[&key.key_id],
        )
        .expect("apikey.usage")
        .get(0)
    };
    // A flusher starts for the database and writes at once; after that it waits an hour.
    eventually("the first flush", || (written(&mut c) == 4).then_some(()));
    for _ in 0..3 {
        assert_eq!(reason(&mut c, &key.token), "ok");
    }
    assert_eq!(written(&mut c), 4, "the next flush is an hour away");
    drop(c);
    cluster.restart();
    let mut c = cluster.connect("apikey");
    assert_eq!(
        written(&mut c),
        7,
        "a clean shutdown writes what was counted"
    );
    assert!(
        last_used_at(&mut c, &key.key_id).is_some(),
        "and last_used_at"
    );
    // The proof came back with the counts: no Argon2id for the key after the restart.
    assert_eq!(reason(&mut c, &proven.token), "ok");
    assert_eq!(
        (
            status(&mut c, "argon2_verified"),
            status(&mut c, "proof_hits")
        ),
        (0, 1),
        "the saved proof answered"
    );
    // A proof proves only what it proved: a wrong secret for the key is still refused.
    let wrong = forge(&proven.key_id, &"W".repeat(43));
    assert_eq!(reason(&mut c, &wrong.token), "secret_mismatch");

    // A crash: every backend is reset, shared memory with it (what it held is lost); the
    // server and the worker come back and count again.
    kill_backend(c);
    let mut c = cluster.wait_until_up();
    assert_eq!(reason(&mut c, &key.token), "ok");
    assert_eq!(
        status(&mut c, "argon2_verified"),
        1,
        "a crash saves nothing: the key paid Argon2id again"
    );
    let shared: bool = c
        .query_one("SELECT shared_memory FROM apikey_status()", &[])
        .expect("status")
        .get(0);
    assert!(shared);
    eventually("the launcher is back", || {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'apikey launcher'",
            &[],
        )
        .ok()
        .map(|r| r.get::<_, i64>(0))
        .filter(|n| *n > 0)
    });
    drop(c);
    cluster.restart();
    let mut c = cluster.connect("apikey");
    // Counted after the crash, written (before the shutdown, or right after the start from
    // what the shutdown saved).
    eventually("the count made after the crash is written", || {
        (written(&mut c) == 8).then_some(())
    });
}

#[test]
fn retention_deletes_only_old_rows() {
    let cluster = PrivateCluster::start(&[
        "shared_preload_libraries = 'apikey'",
        "apikey.usage_flush_interval = '100ms'",
        "apikey.usage_retention = '1h'",
        "apikey.audit_retention = '1h'",
        "apikey.event_retention = '1h'",
    ]);
    let mut c = cluster.connect("apikey");
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["a:b"]);
    c.batch_execute(&format!(
        "INSERT INTO apikey.usage VALUES (now() - interval '2 hours', '{k}', '{partner}', 'ok', 7), \
                                         (now() - interval '10 minutes', '{k}', '{partner}', 'ok', 5);
         INSERT INTO apikey.audit_log (at, action, key_id, actor) VALUES
             (now() - interval '2 hours', 'old', '{k}', 'test'),
             (now() - interval '10 minutes', 'recent', '{k}', 'test');
         INSERT INTO apikey.events (created_at, partner_id, type, key_id, payload) VALUES
             (now() - interval '2 hours', '{partner}', 'test.old', '{k}', '{{}}'),
             (now() - interval '10 minutes', '{partner}', 'test.recent', '{k}', '{{}}');",
        k = key.key_id
    ))
    .expect("old and recent rows");
    // A verification gives the database a flusher, whose first round applies retention.
    assert_eq!(reason(&mut c, &key.token), "ok");
    eventually("retention runs", || {
        let old: i64 = c
            .query_one(
                "SELECT (SELECT count(*) FROM apikey.usage WHERE count = 7) \
                      + (SELECT count(*) FROM apikey.audit_log WHERE action = 'old') \
                      + (SELECT count(*) FROM apikey.events WHERE type = 'test.old')",
                &[],
            )
            .expect("count")
            .get(0);
        (old == 0).then_some(())
    });
    let kept: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM apikey.usage WHERE count = 5) \
                  + (SELECT count(*) FROM apikey.audit_log WHERE action IN ('recent', 'issue')) \
                  + (SELECT count(*) FROM apikey.events WHERE type IN ('test.recent', 'key.issued'))",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(kept, 5, "recent rows stay");
    // Nobody else may delete audit rows.
    let code = sqlstate(c.batch_execute("DELETE FROM apikey.audit_log WHERE action = 'recent'"));
    assert_eq!(code, "42501");
}

#[test]
fn without_preloading_verification_works_and_status_says_what_is_off() {
    let cluster = PrivateCluster::start(&[]);
    let mut c = cluster.connect("apikey");
    let partner = create_partner(&mut c);
    let key = issue_with(&mut c, "$1, '{a:b}', rate_per_minute => 1", &[&partner]);
    let row = c
        .query_one(
            "SELECT reason, rate_remaining, rate_reset_seconds FROM apikey_verify($1)",
            &[&key.token],
        )
        .expect("verify");
    assert_eq!(row.get::<_, String>(0), "ok");
    assert_eq!(row.get::<_, Option<i32>>(1), None);
    assert_eq!(row.get::<_, Option<i32>>(2), None);
    assert_eq!(reason(&mut c, &key.token), "ok", "no limit is enforced");
    let (shared, note): (bool, Option<String>) = {
        let r = c
            .query_one("SELECT shared_memory, note FROM apikey_status()", &[])
            .expect("status");
        (r.get(0), r.get(1))
    };
    assert!(!shared);
    let note = note.expect("a note");
    assert!(note.contains("shared_preload_libraries"), "{note}");
    let usage: i64 = c
        .query_one("SELECT count(*) FROM apikey_usage()", &[])
        .expect("apikey_usage")
        .get(0);
    assert_eq!(usage, 0, "nothing counted");
}

#[test]
fn usage_and_the_servers_figures_over_http() {
    let (mut c, partner) = setup();
    let other = create_partner(&mut c);
    let operator = operator_key(&mut c);
    let manager = issue(&mut c, partner, &["keys:manage"]);
    let used = issue(&mut c, partner, &["a:b"]);
    let stranger = issue(&mut c, other, &["a:b"]);
    for token in [&used.token, &used.token, &stranger.token] {
        assert_eq!(reason(&mut c, token), "ok");
    }
    let shim = Shim::start();
    let path = |key: &Issued| format!("/v1/usage?key_id={}&bucket=1d", key.key_id);
    let r = shim.get_as(&operator.token, &path(&used));
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["bucket_seconds"], 86_400);
    assert_eq!(body["truncated"], false);
    let items = body["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["key_id"], used.key_id.as_str());
    assert_eq!(items[0]["reason"], "ok");
    assert_eq!(items[0]["count"], 2);
    assert!(
        items[0]["bucket"]
            .as_str()
            .is_some_and(|b| b.ends_with("T00:00:00+00:00")),
        "{body}"
    );

    // A partner sees its own keys' counts, and nothing of another partner's.
    let own = shim.get_as(&manager.token, &path(&used));
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.json()["items"].as_array().map(Vec::len), Some(1));
    let foreign = shim.get_as(&manager.token, &path(&stranger));
    assert_eq!(foreign.status, 200, "{}", foreign.body);
    assert_eq!(foreign.json()["items"], serde_json::json!([]));
    let plain = shim.get_as(&used.token, "/v1/usage");
    assert_eq!(
        plain.status, 403,
        "a key without keys:manage: {}",
        plain.body
    );

    for bad in [
        "bucket=1w",
        "bucket=30s",
        "limit=0",
        "since=yesterday",
        "colour=red",
    ] {
        let r = shim.get_as(&operator.token, &format!("/v1/usage?{bad}"));
        assert!(
            matches!(r.status, 400 | 422),
            "{bad}: {} {}",
            r.status,
            r.body
        );
    }
    let r = shim.get_as(&operator.token, "/v1/usage?bucket=1w");
    assert_eq!(r.json()["field"], "bucket");

    let metrics = shim.get("/metrics");
    assert_eq!(metrics.status, 200);
    for line in [
        "\napikey_shared_memory 1\n",
        "# TYPE apikey_proof_hits_total counter\n",
    ] {
        assert!(
            metrics.body.contains(line),
            "{line:?} missing from /metrics:\n{}",
            metrics.body
        );
    }
}

#[test]
fn a_count_is_never_missing_or_doubled_while_the_worker_writes_it() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["a:b"]);
    for _ in 0..5 {
        assert_eq!(reason(&mut c, &key.token), "ok");
    }
    let total = |c: &mut Client| -> i64 {
        c.query_one(
            "SELECT coalesce(sum(count), 0)::bigint FROM apikey_usage(key_id => $1)",
            &[&key.key_id],
        )
        .expect("apikey_usage")
        .get(0)
    };
    // Read over and over while the worker (every 200 ms here) takes the counts out of shared
    // memory and writes them: every read must see exactly five.
    let started = std::time::Instant::now();
    let mut reads = 0;
    while started.elapsed() < std::time::Duration::from_secs(2) {
        assert_eq!(total(&mut c), 5, "after {reads} reads");
        reads += 1;
    }
    eventually("the counts are in the table", || {
        let written: i64 = c
            .query_one(
                "SELECT coalesce(sum(count), 0)::bigint FROM apikey.usage WHERE key_id = $1",
                &[&key.key_id],
            )
            .expect("apikey.usage")
            .get(0);
        (written == 5).then_some(())
    });
    assert_eq!(total(&mut c), 5);
}

/// The settings table of `docs/src/operations.md` is the server's own description of every
/// `apikey.*` setting (the GUC definitions, as `pg_settings` shows them); a stale table fails
/// here. After changing a setting: `APIKEY_WRITE_DOCS=1 scripts/test.sh --test shared_state`.
#[test]
fn the_settings_table_is_generated_from_the_servers_definitions() {
    let mut c = superuser();
    let mut table = String::from("| setting | default | set by | meaning |\n|---|---|---|---|\n");
    for row in c
        .query(
            "SELECT name, coalesce(boot_val, ''), coalesce(unit, ''), context, short_desc, coalesce(extra_desc, '') \
             FROM pg_settings WHERE name LIKE 'apikey.%' ORDER BY name",
            &[],
        )
        .expect("pg_settings")
    {
        let (name, default, unit, context): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let default = match (default.as_str(), unit.as_str()) {
            ("", _) => "(none)".to_string(),
            (value, "") => format!("`{value}`"),
            (value, unit) => format!("`{value}` {unit}"),
        };
        let set_by = match context.as_str() {
            "postmaster" => "postgresql.conf, restart",
            "sighup" => "postgresql.conf, reload",
            "superuser" => "a superuser's SET, postgresql.conf",
            "user" => "anyone's SET, postgresql.conf",
            other => other,
        };
        let meaning = format!("{} {}", row.get::<_, String>(4), row.get::<_, String>(5));
        table.push_str(&format!(
            "| `{name}` | {default} | {set_by} | {} |\n",
            meaning.trim().replace('|', "\\|")
        ));
    }
    check_generated_blocks(
        "operations.md",
        &[("settings", table)],
        "scripts/test.sh --test shared_state",
    );
}
