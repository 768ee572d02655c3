//! `pg_dump` and restore keep partners, keys and the audit log (the tables are registered
//! with `pg_extension_config_dump`), and restored keys verify with the same pepper.

use apikey_tests::postgres::Client;
use apikey_tests::*;
use std::process::Command;

fn run(tool: &str, args: &[String]) {
    let output = Command::new(pgbin(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        output.status.success(),
        "{tool} {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every row of a table as JSON text, in a stable order: equal in source and restore.
fn table_rows(c: &mut Client, table: &str, order_by: &str) -> Vec<String> {
    c.query(
        &format!("SELECT row_to_json(t)::text FROM apikey.{table} t ORDER BY {order_by}"),
        &[],
    )
    .unwrap_or_else(|e| panic!("read apikey.{table}: {e:?}"))
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// What must survive a dump and restore unchanged.
#[derive(Debug, PartialEq)]
struct Snapshot {
    partners: Vec<String>,
    keys: Vec<String>,
    audit_log: Vec<String>,
    audit_sequence: i64,
    events: Vec<String>,
}

fn snapshot(c: &mut Client) -> Snapshot {
    Snapshot {
        partners: table_rows(c, "partners", "partner_id"),
        keys: table_rows(c, "keys", "key_id"),
        audit_log: table_rows(c, "audit_log", "id"),
        audit_sequence: count(c, "SELECT last_value FROM apikey.audit_log_id_seq"),
        events: table_rows(c, "events", "event_id"),
    }
}

struct Fixture {
    partner: Uuid,
    live: Issued,
    revoked: Issued,
    rotated_old: Issued,
    rotated_new: Issued,
    disabled: Issued,
    inactive_partner: Issued,
}

fn populate(c: &mut Client) -> Fixture {
    let partner = create_partner(c);
    let scopes = vec!["orders:read".to_string(), "orders:write".to_string()];
    let live = issue_with(
        c,
        "$1, $2, name => 'live', tags => '{dump}', metadata => '{\"team\": \"dump\"}', \
         allowed_cidrs => '{10.0.0.0/8}', rate_per_minute => 42",
        &[&partner, &scopes],
    );
    let revoked = issue(c, partner, &["orders:read"]);
    c.execute("SELECT apikey_revoke($1, 'leaked')", &[&revoked.key_id])
        .expect("revoke");
    let rotated_old = issue(c, partner, &["orders:read"]);
    let row = c
        .query_one(
            "SELECT key_id, token FROM apikey_rotate($1, '1 hour')",
            &[&rotated_old.key_id],
        )
        .expect("rotate with grace");
    let rotated_new = Issued {
        key_id: row.get(0),
        token: row.get(1),
    };
    let disabled = issue(c, partner, &["orders:read"]);
    c.execute("SELECT apikey_set_enabled($1, false)", &[&disabled.key_id])
        .expect("disable");
    let other = create_partner(c);
    let inactive_partner = issue(c, other, &["orders:read"]);
    c.execute("SELECT apikey_partner_set_active($1, false)", &[&other])
        .expect("deactivate partner");
    // Failed verifications are audited too; they must survive as well.
    assert_eq!(reason(c, &revoked.token), "revoked");
    assert_eq!(reason(c, &disabled.token), "disabled");
    Fixture {
        partner,
        live,
        revoked,
        rotated_old,
        rotated_new,
        disabled,
        inactive_partner,
    }
}

fn assert_security_intact(c: &mut Client) {
    let rows = c
        .query(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'apikey' AND c.relkind = 'r' ORDER BY c.relname",
            &[],
        )
        .expect("read pg_class");
    let tables: Vec<(String, bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [
        "audit_log",
        "events",
        "import_forms",
        "imported_keys",
        "key_credits",
        "key_reminders",
        "keys",
        "partner_credits",
        "partners",
        "usage",
        "webhook_attempts",
        "webhook_deliveries",
        "webhook_endpoints",
    ];
    assert_eq!(
        tables,
        expected.map(|t| (t.to_string(), true, true)).to_vec(),
        "row-level security enabled and forced on every table"
    );
    let view: Option<Vec<String>> = c
        .query_one(
            "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'apikey' AND c.relname = 'key_info' AND c.relkind = 'v'",
            &[],
        )
        .expect("view apikey.key_info exists")
        .get(0);
    assert_eq!(view, Some(vec!["security_invoker=true".to_string()]));
}

#[test]
fn dump_and_restore_keep_every_key_working() {
    let mut dbs = Databases::default();
    let source = dbs.create("apikey_dump_src");
    let target = dbs.create("apikey_dump_dst");

    let mut src = connect_to("postgres", &source);
    src.batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
        .expect("CREATE EXTENSION apikey");
    let fixture = populate(&mut src);
    src.execute("SELECT apikey_set_credits($1, 42)", &[&fixture.live.key_id])
        .expect("a balance");
    src.execute(
        "SELECT apikey_partner_set_limits($1, 600, 7000)",
        &[&fixture.partner],
    )
    .expect("partner limits");
    let before = snapshot(&mut src);
    assert_eq!(before.keys.len(), 6);
    assert!(
        before.audit_log.len() >= 10,
        "lifecycle and failures were audited"
    );
    assert!(
        before.events.len() >= 8,
        "undelivered events are part of the data"
    );
    let policies_sql = "SELECT count(*) FROM pg_policies WHERE schemaname = 'apikey'";
    let policies = count(&mut src, policies_sql);
    assert!(
        policies > 0,
        "the extension creates row-level security policies"
    );

    let file = std::env::temp_dir().join(format!("{source}.sql"));
    dbs.files.push(file.clone());
    let file_arg = file.to_str().expect("UTF-8 path").to_string();
    let mut dump = cli_args("postgres", &source);
    dump.extend(["--no-password".into(), "-f".into(), file_arg.clone()]);
    run("pg_dump", &dump);
    let mut restore = cli_args("postgres", &target);
    restore.extend(
        [
            "-X",
            "-q",
            "--no-password",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            &file_arg,
        ]
        .map(String::from),
    );
    run("psql", &restore);

    let mut dst = connect_to("postgres", &target);
    // Compared before any verification, which would append to the audit log.
    assert_eq!(
        snapshot(&mut dst),
        before,
        "partners, keys, audit log and its sequence"
    );
    assert_eq!(count(&mut dst, policies_sql), policies, "policies");
    let balances = |c: &mut Client| -> Vec<(String, i64, i64)> {
        c.query(
            "SELECT key_id, credit_id, remaining FROM apikey.key_credits \
             UNION ALL SELECT partner_id || ' ' || rate_per_minute, credit_id, remaining \
             FROM apikey.partner_credits JOIN apikey.partners USING (partner_id) ORDER BY 2",
            &[],
        )
        .expect("key_credits")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    let restored = balances(&mut dst);
    assert_eq!(
        restored,
        balances(&mut src),
        "credit balances and partner limits"
    );
    assert_eq!(restored.len(), 2);
    assert_security_intact(&mut dst);
    assert_eq!(count(&mut dst, "SELECT count(*) FROM apikey.key_info"), 6);

    let live = verify(
        &mut dst,
        Some(&fixture.live.token),
        &["orders:write"],
        Some("10.1.2.3"),
    );
    assert_eq!(
        (
            live.valid,
            live.reason.as_str(),
            live.key_id.as_deref(),
            live.partner_id
        ),
        (
            true,
            "ok",
            Some(fixture.live.key_id.as_str()),
            Some(fixture.partner)
        )
    );
    assert_eq!(
        live.scopes,
        Some(vec!["orders:read".to_string(), "orders:write".to_string()])
    );
    assert_eq!(live.rate_per_minute, Some(42));
    assert_eq!(
        verify(&mut dst, Some(&fixture.live.token), &[], Some("192.0.2.1")).reason,
        "ip_not_allowed"
    );
    for (what, token, expected) in [
        ("revoked key", &fixture.revoked.token, "revoked"),
        ("disabled key", &fixture.disabled.token, "disabled"),
        (
            "rotated key in its grace period",
            &fixture.rotated_old.token,
            "ok",
        ),
        ("key that replaced it", &fixture.rotated_new.token, "ok"),
        (
            "key of an inactive partner",
            &fixture.inactive_partner.token,
            "partner_inactive",
        ),
    ] {
        assert_eq!(reason(&mut dst, token), expected, "{what}");
    }
    let new = verify(&mut dst, Some(&fixture.rotated_new.token), &[], None);
    assert_eq!(
        (new.partner_id, new.scopes),
        (Some(fixture.partner), Some(vec!["orders:read".to_string()]))
    );
    // The restored sequence continues after the restored rows: new audit rows fit in.
    let max_id = count(&mut dst, "SELECT max(id) FROM apikey.audit_log");
    assert!(
        max_id > before.audit_sequence,
        "new audit rows were appended after the restored ones"
    );

    // Management keeps working on restored rows.
    let revoked: bool = dst
        .query_one("SELECT apikey_revoke($1)", &[&fixture.live.key_id])
        .expect("revoke a restored key")
        .get(0);
    assert!(revoked);
    assert_eq!(reason(&mut dst, &fixture.live.token), "revoked");
    // The source database is untouched by what happened in the copy.
    let in_source = verify(&mut src, Some(&fixture.live.token), &[], Some("10.1.2.3"));
    assert_eq!(in_source.reason, "ok");
}

/// `pg_dump` output without the random `\restrict` key newer releases add to each dump.
fn dump_text(role: &str, db: &str, file: &std::path::Path) -> String {
    let mut args = cli_args(role, db);
    args.extend([
        "--no-password".into(),
        "-f".into(),
        file.to_str().expect("UTF-8 path").to_string(),
    ]);
    run("pg_dump", &args);
    std::fs::read_to_string(file)
        .expect("read the dump")
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The backup role the install chapter (docs/src/install.md) documents dumps exactly what a superuser dumps. An
/// `apikey_admin` member cannot: it may not read key hashes, sealed webhook secrets or the
/// audit sequence, and `pg_dump` says what stopped it.
#[test]
fn the_documented_backup_role_dumps_what_a_superuser_dumps() {
    let mut dbs = Databases::default();
    let source = dbs.create("apikey_dump_role");
    let mut src = connect_to("postgres", &source);
    src.batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
        .expect("CREATE EXTENSION apikey");
    populate(&mut src);
    src.batch_execute(
        "SELECT apikey_webhook_create(apikey_partner_create('hooks', 'ops@example.com'), \
                                      'https://hooks.example.com/apikey')",
    )
    .expect("a webhook endpoint");

    let backup = login_role(&mut src, "apikey_backup", &["pg_read_all_data"]);
    src.batch_execute(&format!("ALTER ROLE \"{backup}\" BYPASSRLS"))
        .expect("BYPASSRLS");
    let by_superuser = std::env::temp_dir().join(format!("{source}-superuser.sql"));
    let by_backup = std::env::temp_dir().join(format!("{source}-backup.sql"));
    dbs.files.extend([by_superuser.clone(), by_backup.clone()]);
    let expected = dump_text("postgres", &source, &by_superuser);
    assert!(expected.contains("COPY apikey.webhook_endpoints"));
    assert_eq!(dump_text(&backup, &source, &by_backup), expected);

    let admin = login_role(&mut src, "apikey_dump_admin", &["apikey_admin"]);
    let mut args = cli_args(&admin, &source);
    args.extend(["--no-password".into(), "-f".into(), "/dev/null".into()]);
    let output = Command::new(pgbin("pg_dump"))
        .args(&args)
        .output()
        .expect("run pg_dump");
    assert!(
        !output.status.success(),
        "an apikey_admin member cannot dump"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        // PostgreSQL 18's pg_dump words it "user may lack SELECT privilege".
        stderr.contains("permission denied for") || stderr.contains("lack SELECT privilege"),
        "pg_dump names what stopped it: {stderr}"
    );
}
