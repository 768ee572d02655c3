//! Upgrades in place: a database created at any earlier release (the frozen install scripts
//! `sql/apikey--<release>.sql`, run with today's library) keeps verifying its keys, and after
//! `ALTER EXTENSION apikey UPDATE` answers exactly as before and has exactly the schema a
//! fresh install has, compared over the catalogs (`tests/sql/catalog_fingerprint.sql`). A
//! change to the SQL without a matching upgrade script fails here.

use apikey_tests::postgres::{Client, SimpleQueryMessage};
use apikey_tests::*;

/// Every earlier release, each frozen as `sql/apikey--<release>.sql`.
const RELEASES: [&str; 8] = [
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0",
];
const FINGERPRINT: &str = include_str!("../sql/catalog_fingerprint.sql");

fn superuser_of(db: &str) -> Client {
    connect_to(
        &std::env::var("APIKEY_TEST_PGUSER").expect("APIKEY_TEST_PGUSER"),
        db,
    )
}

fn fingerprint(c: &mut Client) -> Vec<String> {
    c.simple_query(FINGERPRINT)
        .expect("catalog fingerprint query")
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect()
}

/// The version this database's apikey objects are at, as PostgreSQL records it.
fn extension_version(c: &mut Client) -> String {
    c.query_one(
        "SELECT extversion FROM pg_extension WHERE extname = 'apikey'",
        &[],
    )
    .expect("extversion")
    .get(0)
}

fn library_version(c: &mut Client) -> String {
    c.query_one("SELECT library_version FROM apikey_version()", &[])
        .expect("apikey_version()")
        .get(0)
}

/// One question asked of `apikey_verify` before and after the upgrade.
struct Case {
    what: &'static str,
    token: String,
    scopes: &'static [&'static str],
    ip: Option<&'static str>,
}

/// The full answer row, `expires_at` included (as text, so any change shows).
fn answer(c: &mut Client, case: &Case) -> String {
    let scopes: Vec<String> = case.scopes.iter().map(|s| s.to_string()).collect();
    c.query_one(
        "SELECT row(valid, reason, key_id, partner_id, scopes, rate_per_minute, expires_at)::text \
         FROM apikey_verify($1, $2, $3::text::inet)",
        &[&case.token, &scopes, &case.ip],
    )
    .unwrap_or_else(|e| panic!("verify {}: {e}", case.what))
    .get(0)
}

/// Keys in every state a database of an earlier release can hold, with audit rows of each kind.
fn populate(c: &mut Client) -> Vec<Case> {
    let partner = create_partner(c);
    let quiet = create_partner(c);
    let live = issue_with(
        c,
        "$1, '{orders:read,orders:write}', name => 'live', tags => '{team:pay}', \
         metadata => '{\"tier\": \"gold\"}', rate_per_minute => 120, \
         expires_at => now() + interval '30 days'",
        &[&partner],
    );
    let cidr = issue_with(
        c,
        "$1, '{orders:read}', allowed_cidrs => '{10.1.0.0/16,2001:db8::/32}'",
        &[&partner],
    );
    let expired = issue(c, partner, &["orders:read"]);
    c.execute(
        "UPDATE apikey.keys SET expires_at = now() - interval '1 day' WHERE key_id = $1",
        &[&expired.key_id],
    )
    .expect("expire a key");
    let in_grace = issue(c, partner, &["orders:*"]);
    let successor: String = c
        .query_one(
            "SELECT key_id FROM apikey_rotate($1, interval '1 hour')",
            &[&in_grace.key_id],
        )
        .expect("rotate with grace")
        .get(0);
    assert!(!successor.is_empty());
    let revoked = issue(c, partner, &["orders:read"]);
    c.execute("SELECT apikey_revoke($1, 'leaked')", &[&revoked.key_id])
        .expect("revoke");
    let disabled = issue(c, partner, &["orders:read"]);
    c.execute("SELECT apikey_set_enabled($1, false)", &[&disabled.key_id])
        .expect("disable");
    let later = issue_with(
        c,
        "$1, '{orders:read}', not_before => now() + interval '1 day'",
        &[&partner],
    );
    let inactive = issue(c, quiet, &["orders:read"]);
    c.execute("SELECT apikey_partner_set_active($1, false)", &[&quiet])
        .expect("deactivate a partner");

    let wrong_secret = format!("{}_{}", live.key_id, "x".repeat(49));
    let cases = vec![
        Case {
            what: "live",
            token: live.token.clone(),
            scopes: &["orders:read"],
            ip: None,
        },
        Case {
            what: "live, scope missing",
            token: live.token.clone(),
            scopes: &["invoices:read"],
            ip: None,
        },
        Case {
            what: "allow-listed, inside",
            token: cidr.token.clone(),
            scopes: &[],
            ip: Some("10.1.2.3"),
        },
        Case {
            what: "allow-listed, outside",
            token: cidr.token.clone(),
            scopes: &[],
            ip: Some("192.0.2.1"),
        },
        Case {
            what: "allow-listed, v6",
            token: cidr.token,
            scopes: &[],
            ip: Some("2001:db8::1"),
        },
        Case {
            what: "expired",
            token: expired.token,
            scopes: &[],
            ip: None,
        },
        Case {
            what: "rotated, in grace",
            token: in_grace.token,
            scopes: &["orders:write"],
            ip: None,
        },
        Case {
            what: "revoked",
            token: revoked.token,
            scopes: &[],
            ip: None,
        },
        Case {
            what: "disabled",
            token: disabled.token,
            scopes: &[],
            ip: None,
        },
        Case {
            what: "not yet valid",
            token: later.token,
            scopes: &[],
            ip: None,
        },
        Case {
            what: "partner inactive",
            token: inactive.token,
            scopes: &[],
            ip: None,
        },
        Case {
            what: "malformed",
            token: wrong_secret,
            scopes: &[],
            ip: None,
        },
    ];
    // Failed verifications leave audit rows too.
    for case in &cases {
        answer(c, case);
    }
    cases
}

#[test]
fn a_database_at_0_1_0_upgrades_to_what_a_fresh_install_gives() {
    upgrades_to_what_a_fresh_install_gives("0.1.0");
}

#[test]
fn a_database_at_0_2_0_upgrades_to_what_a_fresh_install_gives() {
    upgrades_to_what_a_fresh_install_gives("0.2.0");
}

#[test]
fn a_database_at_0_3_0_upgrades_to_what_a_fresh_install_gives() {
    upgrades_to_what_a_fresh_install_gives("0.3.0");
}

#[test]
fn a_database_at_0_4_0_upgrades_to_what_a_fresh_install_gives() {
    upgrades_to_what_a_fresh_install_gives("0.4.0");
}

#[test]
fn a_database_at_0_5_0_upgrades_to_what_a_fresh_install_gives() {
    upgrades_to_what_a_fresh_install_gives("0.5.0");
}

#[test]
fn a_database_at_0_6_0_upgrades_to_what_a_fresh_install_gives() {
    upgrades_to_what_a_fresh_install_gives("0.6.0");
}

#[test]
fn a_database_at_0_7_0_upgrades_to_what_a_fresh_install_gives() {
    upgrades_to_what_a_fresh_install_gives("0.7.0");
}

#[test]
fn a_database_at_0_8_0_upgrades_to_what_a_fresh_install_gives() {
    upgrades_to_what_a_fresh_install_gives("0.8.0");
}

#[test]
fn every_frozen_release_is_tested() {
    let sql = concat!(env!("CARGO_MANIFEST_DIR"), "/../sql");
    let mut frozen: Vec<String> = std::fs::read_dir(sql)
        .expect("sql/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let release = name.strip_prefix("apikey--")?.strip_suffix(".sql")?;
            (!release.contains("--")).then(|| release.to_string())
        })
        .collect();
    frozen.sort();
    assert_eq!(
        frozen, RELEASES,
        "each frozen release in sql/ needs its upgrade test"
    );
}

fn upgrades_to_what_a_fresh_install_gives(release: &str) {
    let mut dbs = Databases::default();
    let old = dbs.create(&format!("upgrade_from_{}", release.replace('.', "_")));
    let fresh = dbs.create("upgrade_fresh");
    let mut c = superuser_of(&old);
    c.batch_execute(&format!(
        "SET client_min_messages = warning; CREATE EXTENSION apikey VERSION '{release}'"
    ))
    .expect("CREATE EXTENSION at an earlier release");
    let cases = populate(&mut c);

    // The new library serves the old schema until the database is updated.
    let before: Vec<String> = cases.iter().map(|case| answer(&mut c, case)).collect();
    let reasons: Vec<&str> = before
        .iter()
        .map(|a| a.split(',').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(
        reasons,
        [
            "ok",
            "insufficient_scope",
            "ok",
            "ip_not_allowed",
            "ok",
            "expired",
            "ok",
            "revoked",
            "disabled",
            "not_yet_valid",
            "partner_inactive",
            "malformed"
        ],
        "answers at {release} with the new library: {before:#?}"
    );
    if release != "0.1.0" {
        let lined_up: bool = c
            .query_one(
                "SELECT keys_capacity = current_setting('apikey.max_keys')::bigint \
                        AND argon2_max_concurrency > 0 AND coalesce(last_flush <= clock_timestamp(), true) \
                 FROM apikey_status()",
                &[],
            )
            .expect("apikey_status() at an earlier release")
            .get(0);
        assert!(
            lined_up,
            "apikey_status() at {release} reads its columns where they were"
        );
    }
    let audit_rows: i64 = c
        .query_one("SELECT count(*) FROM apikey.audit_log", &[])
        .expect("count audit rows")
        .get(0);

    c.batch_execute("ALTER EXTENSION apikey UPDATE")
        .expect("ALTER EXTENSION apikey UPDATE");
    assert_eq!(
        extension_version(&mut c),
        library_version(&mut c),
        "updated to the library's release"
    );
    let after: Vec<String> = cases.iter().map(|case| answer(&mut c, case)).collect();
    assert_eq!(
        before, after,
        "every key answers as it did before the upgrade"
    );
    let kept: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.audit_log WHERE id <= $1",
            &[&audit_rows],
        )
        .expect("count audit rows")
        .get(0);
    assert_eq!(kept, audit_rows, "the audit log is kept");

    let partner = create_partner(&mut c);
    let new_key = issue(&mut c, partner, &["orders:read"]);
    assert_eq!(
        reason(&mut c, &new_key.token),
        "ok",
        "a key issued after the upgrade"
    );

    let mut f = superuser_of(&fresh);
    f.batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
        .expect("CREATE EXTENSION");
    let (upgraded, installed) = (fingerprint(&mut c), fingerprint(&mut f));
    assert!(
        installed.len() > 100,
        "the fingerprint sees the schema: {installed:#?}"
    );
    let only_upgraded: Vec<&String> = upgraded.iter().filter(|l| !installed.contains(l)).collect();
    let only_fresh: Vec<&String> = installed.iter().filter(|l| !upgraded.contains(l)).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgraded schema differs from a fresh install's.\n\
         Only after the upgrade:\n{only_upgraded:#?}\nOnly in a fresh install:\n{only_fresh:#?}"
    );
    assert_eq!(upgraded, installed);
}

#[test]
fn an_unknown_target_version_gets_postgresqls_own_error() {
    let mut dbs = Databases::default();
    let db = dbs.create("upgrade_unknown");
    let mut c = superuser_of(&db);
    c.batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
        .expect("CREATE EXTENSION");
    let installed = extension_version(&mut c);
    assert_eq!(
        db_error(c.batch_execute("ALTER EXTENSION apikey UPDATE TO '9.9.9'")),
        (
            "22023".to_string(),
            format!(
                "extension \"apikey\" has no update path from version \"{installed}\" to version \"9.9.9\""
            )
        )
    );
    // A failed update changes nothing.
    let version: String = c
        .query_one("SELECT extension_version FROM apikey_version()", &[])
        .expect("apikey_version()")
        .get(0);
    assert_eq!(version, library_version(&mut c));
}

#[test]
fn apikey_version_names_both_versions() {
    let mut c = superuser();
    let row = c
        .query_one(
            "SELECT extension_version, library_version FROM apikey_version()",
            &[],
        )
        .expect("apikey_version()");
    let (sql, library): (String, String) = (row.get(0), row.get(1));
    assert_eq!(sql, library);
    assert!(
        library.split('.').count() == 3 && library.split('.').all(|p| p.parse::<u32>().is_ok()),
        "semver: {library}"
    );
    assert!(
        !RELEASES.contains(&library.as_str()),
        "{library} is a new release"
    );
}
