//! A backend remembers where apikey's relations are (OIDs) and where each key's row was
//! found (heap TIDs), so a warm verification skips catalog lookups and the index descent.
//! These tests change the tables under a long-lived session, as a DBA or an upgrade would,
//! and check that the session's next verification still reads the truth: after table
//! rewrites, after a row is deleted and its space reused, and after the extension is dropped
//! and created again. Each runs in a database of its own.

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
    dba.batch_execute("VACUUM apikey.keys").expect("vacuum");
    let mut newcomers = Vec::new();
    while newcomers.len() < 20 {
        let key = issue(&mut dba, partner, &["a:b"]);
        let landed = ctid_of(&mut dba, &key.key_id);
        newcomers.push(key);
        if landed.as_deref() == Some(old_place.as_str()) {
            break;
        }
    }
    let squatter = newcomers.last().expect("at least one new key");
    assert_eq!(
        ctid_of(&mut dba, &squatter.key_id),
        Some(old_place),
        "a new key reuses the deleted row's place (else this test proves nothing)"
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
    dba.execute("SELECT apikey_partner_set_active($1, false)", &[&partner])
        .expect("deactivate partner");
    assert_eq!(reason(&mut pooled, &newcomers[0].token), "partner_inactive");
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
