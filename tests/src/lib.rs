//! Shared helpers for the end-to-end tests. They talk to the private cluster that
//! `scripts/test.sh` starts (socket directory, port and paths come from its environment),
//! as the superuser or as real login roles.

pub mod cluster;
pub mod github;
pub mod receiver;
pub mod shim;
pub mod standby;
pub mod webdriver;

use postgres::types::ToSql;
use postgres::{Client, NoTls};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub use postgres;
pub use uuid::Uuid;

/// A setting `scripts/test.sh` exports to the end-to-end tests (APIKEY_TEST_*).
pub fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the end-to-end tests through scripts/test.sh")
    })
}

pub fn server_log_path() -> String {
    env_var("APIKEY_TEST_LOG")
}

pub fn pepper_file_path() -> String {
    env_var("APIKEY_TEST_PEPPER_FILE")
}

pub fn pgbin(tool: &str) -> String {
    format!("{}/{tool}", env_var("APIKEY_TEST_PGBIN"))
}

/// libpq-style arguments (-h -p -U) for the cluster's command-line tools.
pub fn cli_args(role: &str, db: &str) -> Vec<String> {
    vec![
        "-h".into(),
        env_var("APIKEY_TEST_PGHOST"),
        "-p".into(),
        env_var("APIKEY_TEST_PGPORT"),
        "-U".into(),
        role.into(),
        "-d".into(),
        db.into(),
    ]
}

/// Connects over the private unix socket (trust auth) as `role` to database `db`.
pub fn connect_to(role: &str, db: &str) -> Client {
    connect_at(
        &env_var("APIKEY_TEST_PGHOST"),
        &env_var("APIKEY_TEST_PGPORT"),
        role,
        db,
    )
}

/// Connects to another server than the test cluster (e.g. a standby a test started):
/// `host` is a socket directory or host name.
pub fn connect_at(host: &str, port: &str, role: &str, db: &str) -> Client {
    let config =
        format!("host={host} port={port} user={role} dbname={db} application_name=apikey-tests");
    Client::connect(&config, NoTls)
        .unwrap_or_else(|e| panic!("connect as {role} to {db} at {host}:{port}: {e}"))
}

pub fn connect(role: &str) -> Client {
    connect_to(role, &env_var("APIKEY_TEST_PGDATABASE"))
}

pub fn superuser() -> Client {
    connect(&env_var("APIKEY_TEST_PGUSER"))
}

/// A name no other test (or earlier run against the same cluster) has used.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A LOGIN role that is a member of `member_of`; created fresh for each call.
pub fn login_role(admin: &mut Client, prefix: &str, member_of: &[&str]) -> String {
    let name = unique(prefix).to_lowercase();
    admin
        .batch_execute(&format!("CREATE ROLE \"{name}\" LOGIN"))
        .expect("create login role");
    for group in member_of {
        admin
            .batch_execute(&format!("GRANT {group} TO \"{name}\""))
            .expect("grant role membership");
    }
    name
}

/// Kills the server process of `c` with SIGKILL: a crash, after which the postmaster resets
/// every backend and shared memory.
pub fn kill_backend(mut c: Client) {
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
}

pub fn create_partner(c: &mut Client) -> Uuid {
    c.query_one(
        "SELECT apikey_partner_create($1, 'ops@example.com')",
        &[&unique("partner")],
    )
    .expect("apikey_partner_create")
    .get(0)
}

pub struct Issued {
    pub key_id: String,
    pub token: String,
}

impl Issued {
    /// The secret part of the token: everything after the key id and its `_`, without the
    /// 6-character checksum.
    pub fn secret(&self) -> &str {
        &self.token[self.key_id.len() + 1..self.token.len() - 6]
    }
}

pub fn issue(c: &mut Client, partner: Uuid, scopes: &[&str]) -> Issued {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    issue_with(c, "$1, $2", &[&partner, &scopes])
}

/// An `admin:*` key of a partner of its own, with a rate high enough that no test meets it.
pub fn operator_key(c: &mut Client) -> Issued {
    let operators = create_partner(c);
    issue_with(
        c,
        "$1, '{admin:*}', rate_per_minute => 100000",
        &[&operators],
    )
}

/// `apikey_issue` with the given argument list, e.g. `"$1, '{a:b}', environment => 'test'"`.
pub fn issue_with(c: &mut Client, sql_args: &str, params: &[&(dyn ToSql + Sync)]) -> Issued {
    let row = c
        .query_one(
            &format!("SELECT key_id, token FROM apikey_issue({sql_args})"),
            params,
        )
        .expect("apikey_issue");
    Issued {
        key_id: row.get(0),
        token: row.get(1),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub valid: bool,
    pub reason: String,
    pub key_id: Option<String>,
    pub partner_id: Option<Uuid>,
    pub scopes: Option<Vec<String>>,
    pub rate_per_minute: Option<i32>,
}

/// `apikey_verify` with the token as a bind parameter, as applications should call it (a
/// literal token in the SQL text could reach the server log if the statement fails).
pub fn verify(c: &mut Client, token: Option<&str>, scopes: &[&str], ip: Option<&str>) -> Verdict {
    try_verify(c, token, scopes, ip).expect("apikey_verify never raises for a token value")
}

pub fn try_verify(
    c: &mut Client,
    token: Option<&str>,
    scopes: &[&str],
    ip: Option<&str>,
) -> Result<Verdict, postgres::Error> {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let rows = c.query(
        "SELECT valid, reason, key_id, partner_id, scopes, rate_per_minute \
         FROM apikey_verify($1, $2, $3::text::inet)",
        &[&token, &scopes, &ip],
    )?;
    assert_eq!(rows.len(), 1, "apikey_verify returns exactly one row");
    let row = &rows[0];
    Ok(Verdict {
        valid: row.get(0),
        reason: row.get(1),
        key_id: row.get(2),
        partner_id: row.get(3),
        scopes: row.get(4),
        rate_per_minute: row.get(5),
    })
}

pub fn reason(c: &mut Client, token: &str) -> String {
    verify(c, Some(token), &[], None).reason
}

/// Waits until `done` holds, polling every 50 ms, and panics naming `what` after 60 s: a
/// bound far above anything expected (the background worker flushes every 200 ms in the
/// test cluster), so a slow machine does not fail a test, but something that never happens
/// does.
pub fn eventually<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `last_used_at` of a key as text, NULL as `None`.
pub fn last_used_at(c: &mut Client, key_id: &str) -> Option<String> {
    c.query_one(
        "SELECT last_used_at::text FROM apikey.keys WHERE key_id = $1",
        &[&key_id],
    )
    .expect("the key's row")
    .get(0)
}

/// The SQLSTATE of a failed statement, or a panic if it did not fail.
pub fn sqlstate<T: std::fmt::Debug>(result: Result<T, postgres::Error>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| panic!("error without SQLSTATE: {e}")),
    }
}

/// The SQLSTATE and message of a failed statement, or a panic if it did not fail.
pub fn db_error<T: std::fmt::Debug>(result: Result<T, postgres::Error>) -> (String, String) {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => match e.as_db_error() {
            Some(d) => (d.code().code().to_string(), d.message().to_string()),
            None => panic!("not an error of the server: {e}"),
        },
    }
}

/// CRC32 (IEEE), as the token checksum uses.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `body` followed by its checksum: CRC32 as 6 base62 digits.
pub fn with_checksum(body: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut value = u64::from(crc32(body.as_bytes()));
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    format!("{body}{}", String::from_utf8_lossy(&digits))
}

/// A well-formed token (valid checksum) for `key_id` with `secret`, as an attacker can make
/// one offline: only the database can refuse it.
pub fn forge(key_id: &str, secret: &str) -> Issued {
    Issued {
        key_id: key_id.to_string(),
        token: with_checksum(&format!("{key_id}_{secret}")),
    }
}

/// Fresh databases created by the test, dropped when it ends, whatever happened.
#[derive(Default)]
pub struct Databases {
    names: Vec<String>,
    /// Files to remove with the databases (dumps).
    pub files: Vec<PathBuf>,
}

impl Databases {
    pub fn create(&mut self, prefix: &str) -> String {
        self.create_with(prefix, "")
    }

    /// A database made with `CREATE DATABASE ... options` (e.g. its encoding).
    pub fn create_with(&mut self, prefix: &str, options: &str) -> String {
        let name = unique(prefix).to_lowercase();
        superuser()
            .batch_execute(&format!("CREATE DATABASE \"{name}\" {options}"))
            .expect("CREATE DATABASE");
        self.names.push(name.clone());
        name
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        let mut admin = superuser();
        for name in &self.names {
            if let Err(e) =
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            {
                eprintln!("could not drop database {name}: {e:?}");
            }
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Checks that the chapter `page` of the book (a path under `docs/src`) holds, in each of its
/// generated blocks (between `<!-- generated: NAME ... -->` and `<!-- end generated -->`),
/// the table given for it; with `APIKEY_WRITE_DOCS` set it rewrites them instead. `regenerate`
/// is the command that does so, named in the failure.
pub fn check_generated_blocks(page: &str, blocks: &[(&str, String)], regenerate: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/src")
        .join(page);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {page}: {e}"));
    let generated = blocks.iter().fold(text.clone(), |text, (name, table)| {
        with_generated_block(&text, name, table)
    });
    if std::env::var_os("APIKEY_WRITE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("write {page}: {e}"));
        return;
    }
    assert!(
        text == generated,
        "a generated table of docs/src/{page} is stale: run `APIKEY_WRITE_DOCS=1 {regenerate}` \
         and review the diff"
    );
}

fn with_generated_block(page: &str, name: &str, table: &str) -> String {
    let open = format!("<!-- generated: {name} ");
    let start = page
        .find(&open)
        .unwrap_or_else(|| panic!("no {open}--> in the page"));
    let body = start + page[start..].find("-->\n").expect("the marker's end") + 4;
    let end = body
        + page[body..]
            .find("<!-- end generated -->")
            .expect("the block's end");
    format!("{}{table}{}", &page[..body], &page[end..])
}
