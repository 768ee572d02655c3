//! A backend remembers where apikey's relations are (OIDs), where each key's row was found
//! (heap TIDs) and the key rows themselves until an invalidation says they changed, so a
//! warm verification reads no table. These tests change the tables under a long-lived
//! session, as a DBA, an upgrade or a replication tool would, and check that the session's
//! next verification still reads the truth: after a change of each column verification
//! reads, by the extension's functions or by plain SQL, in replica mode, inside the
//! session's own transaction and after its rollback, after table rewrites, after a row is
//! deleted and its space reused, after TRUNCATE, and after the extension is dropped and
//! created again. Each runs in a database of its own.

use apikey_tests::postgres::Client;
use apikey_tests::*;

fn with_extension(dbs: &mut Databases, prefix: &str) -> (String, Client) {
    let db = dbs.create(prefix);
    let mut c = connect_to("postgres", &db);
    c.batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
        .expect("CREATE EXTENSION apikey");
    (db, c)
}

#[test]
fn rewrites_and_reused_row_space_are_noticed() {
    let mut dbs = Databases::default();
    let (db, mut dba) = with_extension(&mut dbs, "apikey_cache_rows");
    // The long-lived session whose caches are under test.
    let mut pooled = connect_to("postgres", &db);
    let partner = create_partner(&mut dba);
    let first = issue(&mut dba, partner, &["a:b"]);
    let second = issue(&mut dba, partner, &["a:b"]);
    for key in [&first, &second] {
        assert_eq!(reason(&mut pooled, &key.token), "ok");
    }

    for rewrite in [
        "VACUUM FULL apikey.keys",
        "CLUSTER apikey.keys USING keys_pkey",
        "VACUUM FULL apikey.partners",
    ] {
        dba.batch_execute(rewrite).expect(rewrite);
        for key in [&first, &second] {
            let v = verify(&mut pooled, Some(&key.token), &[], None);
            assert_eq!(
                (v.reason.as_str(), v.partner_id),
                ("ok", Some(partner)),
                "after {rewrite}"
            );
        }
    }

    // A row deleted behind the extension's back, its space vacuumed and reused by a new
    // row: whatever now sits where the row was, it is not that key. (VACUUM's statistics
    // update also invalidates the session's cache; fetch.rs checks the key of a row found
    // by TID for the vacuums that change no statistics.)
    let ctid_of = |c: &mut Client, key_id: &str| -> Option<String> {
        c.query_opt(
            "SELECT ctid::text FROM apikey.keys WHERE key_id = $1",
            &[&key_id],
        )
        .expect("ctid")
        .map(|r| r.get(0))
    };
    let old_place = ctid_of(&mut dba, &first.key_id).expect("first key has a row");
    dba.execute(
        "DELETE FROM apikey.keys WHERE key_id = $1",
        &[&first.key_id],
    )
    .expect("delete a key row");
    // The row that sits in a place now, if any: a new key's, or a new version of `second`'s
    // (the worker writes last_used_at).
    let occupant = |c: &mut Client, place: &str| -> Option<String> {
        c.query_opt(
            "SELECT key_id FROM apikey.keys WHERE ctid = $1::text::tid",
            &[&place],
        )
        .expect("row by ctid")
        .map(|r| r.get(0))
    };
    let mut newcomers = Vec::new();
    let started = std::time::Instant::now();
    while newcomers.len() < 40 && started.elapsed() < std::time::Duration::from_secs(60) {
        // Again each round: a VACUUM that ran while another transaction (the background
        // worker writing last_used_at, another test) could still see the deleted row keeps
        // its place. Its report says whether it left a dead row; only then is a new key
        // worth issuing.
        dba.batch_execute("VACUUM apikey.keys").expect("vacuum");
        let dead: i64 = dba
            .query_one(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'apikey.keys'::regclass",
                &[],
            )
            .expect("n_dead_tup")
            .get(0);
        if dead > 0 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        if occupant(&mut dba, &old_place).is_some() {
            break;
        }
        newcomers.push(issue(&mut dba, partner, &["a:b"]));
    }
    let squatter = occupant(&mut dba, &old_place);
    assert!(
        squatter.is_some() && squatter.as_deref() != Some(first.key_id.as_str()),
        "another key's row sits in the deleted row's place (else this test proves nothing): {squatter:?}"
    );
    let v = verify(&mut pooled, Some(&first.token), &[], None);
    assert_eq!((v.valid, v.reason.as_str()), (false, "unknown_key"));
    for key in newcomers.iter().chain([&second]) {
        assert_eq!(reason(&mut pooled, &key.token), "ok");
    }

    // Changes of state still apply on the very next call.
    dba.execute("SELECT apikey_revoke($1)", &[&second.key_id])
        .expect("revoke");
    assert_eq!(reason(&mut pooled, &second.token), "revoked");
    let extra;
    let live = match newcomers.first() {
        Some(key) => key,
        None => {
            extra = issue(&mut dba, partner, &["a:b"]);
            assert_eq!(reason(&mut pooled, &extra.token), "ok");
            &extra
        }
    };
    dba.execute("SELECT apikey_partner_set_active($1, false)", &[&partner])
        .expect("deactivate partner");
    assert_eq!(reason(&mut pooled, &live.token), "partner_inactive");
}

#[test]
fn dropping_and_creating_the_extension_is_noticed() {
    let mut dbs = Databases::default();
    let (db, mut dba) = with_extension(&mut dbs, "apikey_cache_ext");
    let mut pooled = connect_to("postgres", &db);
    let partner = create_partner(&mut dba);
    let before = issue(&mut dba, partner, &["a:b"]);
    assert_eq!(reason(&mut pooled, &before.token), "ok");

    dba.batch_execute(
        "SET client_min_messages = warning; DROP EXTENSION apikey CASCADE; CREATE EXTENSION apikey",
    )
    .expect("drop and create the extension");
    let partner = create_partner(&mut dba);
    let after = issue(&mut dba, partner, &["a:b"]);
    // The same session: its cached OIDs and TIDs belong to tables that no longer exist.
    let v = verify(&mut pooled, Some(&before.token), &[], None);
    assert_eq!((v.valid, v.reason.as_str()), (false, "unknown_key"));
    assert_eq!(reason(&mut pooled, &after.token), "ok");
}

/// Every change to a column verification reads, made with plain SQL behind the extension's
/// back, reaches a session that had the row warm on its very next verification.
#[test]
fn plain_sql_changes_reach_a_session_that_remembers_the_row() {
    let mut dbs = Databases::default();
    let (db, mut dba) = with_extension(&mut dbs, "apikey_cache_sql");
    let mut pooled = connect_to("postgres", &db);
    let partner = create_partner(&mut dba);
    let other_partner = create_partner(&mut dba);
    let key = issue(&mut dba, partner, &["a:b"]);
    let other = issue(&mut dba, partner, &["a:b"]);
    const CLIENT: &str = "192.0.2.1";
    let own_hash: String = dba
        .query_one(
            "SELECT secret_hash FROM apikey.keys WHERE key_id = $1",
            &[&key.key_id],
        )
        .expect("hash")
        .get(0);
    let check = |dba: &mut Client, pooled: &mut Client, change: &str, undo: &str, changed: &str| {
        let warm = verify(pooled, Some(&key.token), &["a:b"], Some(CLIENT));
        assert_eq!(warm.reason, "ok", "before {change}");
        dba.execute(change, &[&key.key_id]).expect(change);
        let v = verify(pooled, Some(&key.token), &["a:b"], Some(CLIENT));
        // Changes that keep the key valid show in the identity columns.
        let seen = if changed.starts_with("rate ") {
            format!("rate {:?}", v.rate_per_minute)
        } else if changed.starts_with("partner ") {
            format!("partner {}", v.partner_id == Some(other_partner))
        } else {
            v.reason.clone()
        };
        assert_eq!(seen, changed, "after {change}");
        dba.execute(undo, &[&key.key_id]).expect(undo);
    };
    let set = |assignment: &str| format!("UPDATE apikey.keys SET {assignment} WHERE key_id = $1");
    for (change, undo, changed) in [
        (set("enabled = false"), set("enabled = true"), "disabled"),
        (
            set("revoked_at = now()"),
            set("revoked_at = NULL"),
            "revoked",
        ),
        (
            set("expires_at = now() - interval '1 second'"),
            set("expires_at = NULL"),
            "expired",
        ),
        (
            set("not_before = now() + interval '1 hour'"),
            set("not_before = NULL"),
            "not_yet_valid",
        ),
        (
            set("scopes = '{x:y}'"),
            set("scopes = '{a:b}'"),
            "insufficient_scope",
        ),
        (
            set("allowed_cidrs = '{10.0.0.0/8}'"),
            set("allowed_cidrs = NULL"),
            "ip_not_allowed",
        ),
        (
            set("rate_per_minute = 7"),
            set("rate_per_minute = 300"),
            "rate Some(7)",
        ),
        (
            format!("UPDATE apikey.keys SET partner_id = '{other_partner}' WHERE key_id = $1"),
            format!("UPDATE apikey.keys SET partner_id = '{partner}' WHERE key_id = $1"),
            "partner true",
        ),
        (
            format!(
                "UPDATE apikey.keys k SET secret_hash = o.secret_hash FROM apikey.keys o \
                 WHERE k.key_id = $1 AND o.key_id = '{}'",
                other.key_id
            ),
            format!("UPDATE apikey.keys SET secret_hash = '{own_hash}' WHERE key_id = $1"),
            "secret_mismatch",
        ),
    ] {
        check(&mut dba, &mut pooled, &change, &undo, changed);
    }
    // The partner's state, and replica mode (logical replication's apply, some restores),
    // in which ordinary triggers do not fire.
    check(
        &mut dba,
        &mut pooled,
        "UPDATE apikey.partners SET active = false WHERE partner_id = \
         (SELECT partner_id FROM apikey.keys WHERE key_id = $1)",
        "UPDATE apikey.partners SET active = true WHERE partner_id = \
         (SELECT partner_id FROM apikey.keys WHERE key_id = $1)",
        "partner_inactive",
    );
    dba.batch_execute("SET session_replication_role = replica")
        .expect("replica mode");
    check(
        &mut dba,
        &mut pooled,
        "UPDATE apikey.keys SET enabled = false WHERE key_id = $1",
        "UPDATE apikey.keys SET enabled = true WHERE key_id = $1",
        "disabled",
    );
    dba.batch_execute("RESET session_replication_role")
        .expect("origin mode");
    assert_eq!(reason(&mut pooled, &key.token), "ok");
    dba.execute(
        "DELETE FROM apikey.keys WHERE key_id = $1",
        &[&other.key_id],
    )
    .expect("delete");
    assert_eq!(reason(&mut pooled, &other.token), "unknown_key");
    dba.batch_execute("TRUNCATE apikey.keys, apikey.key_credits, apikey.imported_keys")
        .expect("truncate");
    assert_eq!(reason(&mut pooled, &key.token), "unknown_key");
}

/// A session's own uncommitted changes are seen by its verifications, and forgotten with
/// them when it rolls back (a row read from them must not outlive the transaction).
#[test]
fn a_sessions_own_changes_are_seen_and_forgotten_on_rollback() {
    let mut dbs = Databases::default();
    let (_db, mut c) = with_extension(&mut dbs, "apikey_cache_own");
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["a:b"]);
    assert_eq!(reason(&mut c, &key.token), "ok");

    c.batch_execute("BEGIN").expect("begin");
    c.execute("SELECT apikey_set_enabled($1, false)", &[&key.key_id])
        .expect("disable");
    assert_eq!(reason(&mut c, &key.token), "disabled");
    c.batch_execute("ROLLBACK").expect("rollback");
    assert_eq!(reason(&mut c, &key.token), "ok");

    c.batch_execute("BEGIN").expect("begin");
    let unborn = issue(&mut c, partner, &["a:b"]);
    assert_eq!(reason(&mut c, &unborn.token), "ok");
    c.batch_execute("ROLLBACK").expect("rollback");
    assert_eq!(reason(&mut c, &unborn.token), "unknown_key");

    c.batch_execute("BEGIN; SAVEPOINT s").expect("savepoint");
    c.execute("SELECT apikey_revoke($1)", &[&key.key_id])
        .expect("revoke");
    assert_eq!(reason(&mut c, &key.token), "revoked");
    c.batch_execute("ROLLBACK TO SAVEPOINT s")
        .expect("rollback to savepoint");
    assert_eq!(reason(&mut c, &key.token), "ok");
    c.batch_execute("COMMIT").expect("commit");
    assert_eq!(reason(&mut c, &key.token), "ok");
}

/// The trigger function is only a trigger, and nobody but the extension's owner may run it.
#[test]
fn the_invalidation_trigger_function_is_not_callable() {
    let mut dbs = Databases::default();
    let (_db, mut c) = with_extension(&mut dbs, "apikey_cache_fn");
    let err = c
        .batch_execute("SELECT apikey.forget_known_keys()")
        .expect_err("a trigger function cannot be called directly");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
    let public: bool = c
        .query_one(
            "SELECT has_function_privilege('public', 'apikey.forget_known_keys()', 'EXECUTE')",
            &[],
        )
        .expect("privilege")
        .get(0);
    assert!(!public, "PUBLIC may not execute apikey.forget_known_keys()");
}

/// Sessions verifying the same key in a loop while another revokes it: every verification
/// that starts after the revocation has returned says `revoked`, in every session.
#[test]
fn a_revocation_reaches_every_busy_session_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};
    let mut dbs = Databases::default();
    let (db, mut dba) = with_extension(&mut dbs, "apikey_cache_busy");
    let partner = create_partner(&mut dba);
    // A rate no loop reaches: this test is about revocation, not the limit.
    let key = issue_with(
        &mut dba,
        "$1, '{a:b}', rate_per_minute => 2000000000",
        &[&partner],
    );
    let revoked = Arc::new(AtomicBool::new(false));
    // Every session has proven the key in its own cache and is in its loop before the
    // revocation is sent.
    let looping = Arc::new(Barrier::new(5));
    let sessions: Vec<_> = (0..4)
        .map(|_| {
            let (db, token, revoked) = (db.clone(), key.token.clone(), Arc::clone(&revoked));
            let looping = Arc::clone(&looping);
            std::thread::spawn(move || {
                let mut c = connect_to("postgres", &db);
                assert_eq!(reason(&mut c, &token), "ok");
                looping.wait();
                let mut after = 0;
                // Bounded, so a revocation that never comes fails the test instead of hanging it.
                for _ in 0..200_000 {
                    if after == 50 {
                        break;
                    }
                    let started_after_revoke = revoked.load(Ordering::SeqCst);
                    let reason = reason(&mut c, &token);
                    if started_after_revoke {
                        assert_eq!(reason, "revoked", "a call started after the revocation");
                        after += 1;
                    } else {
                        assert!(reason == "ok" || reason == "revoked", "{reason}");
                    }
                }
                assert_eq!(after, 50, "the revocation never came");
            })
        })
        .collect();
    looping.wait();
    dba.execute("SELECT apikey_revoke($1)", &[&key.key_id])
        .expect("revoke");
    revoked.store(true, Ordering::SeqCst);
    for session in sessions {
        session
            .join()
            .expect("a session saw the key valid after its revocation");
    }
}
