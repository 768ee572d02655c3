//! The shim behind Debian's pgbouncer in transaction mode, configured as
//! `docs/poolers/pgbouncer.ini` (which `docs/src/http.md` includes; only its ports, socket and
//! file paths and its pool size are changed here). Each transaction may run on another server
//! connection, so a statement prepared on one is missing on the next: every request must
//! still succeed, verification, management and webhook delivery alike.

use apikey_tests::receiver::Receiver;
use apikey_tests::shim::{Shim, SHIM_ROLE};
use apikey_tests::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PGBOUNCER_INI: &str = include_str!("../../docs/poolers/pgbouncer.ini");
const HTTP_PAGE: &str = include_str!("../../docs/src/http.md");
const PASSWORD: &str = "pooled-shim-password";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `text` with `from` replaced, which must occur exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in pgbouncer.ini");
    text.replacen(from, to, 1)
}

/// pgbouncer as the `postgres` OS user (it refuses to run as root), in a directory of its
/// own; stopped and removed on drop.
struct Pgbouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Pgbouncer {
    /// Server connections per database and user: fewer than the shim's pool, so that the
    /// shim's connections take turns on each of them.
    const SERVER_CONNECTIONS: usize = 2;

    fn start() -> Pgbouncer {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("apikey-pgbouncer"));
        std::fs::create_dir_all(&dir).expect("pgbouncer directory");
        let ini = [
            (
                "apikey = host=/var/run/postgresql port=5432 dbname=apikey",
                format!(
                    "apikey = host={} port={} dbname={}",
                    env_var("APIKEY_TEST_PGHOST"),
                    env_var("APIKEY_TEST_PGPORT"),
                    env_var("APIKEY_TEST_PGDATABASE")
                ),
            ),
            ("listen_port = 6432", format!("listen_port = {port}")),
            (
                "auth_file = /etc/pgbouncer/userlist.txt",
                format!("auth_file = {}/userlist.txt", dir.display()),
            ),
            (
                "default_pool_size = 8",
                format!("default_pool_size = {}", Self::SERVER_CONNECTIONS),
            ),
        ]
        .iter()
        .fold(PGBOUNCER_INI.to_string(), |ini, (from, to)| {
            replace_once(&ini, from, to)
        });
        let ini = format!(
            "{ini}unix_socket_dir =\nlogfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");
        std::fs::write(
            dir.join("userlist.txt"),
            format!("\"{SHIM_ROLE}\" \"{PASSWORD}\"\n"),
        )
        .expect("write userlist.txt");
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown the pgbouncer directory");
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", "/usr/sbin/pgbouncer"])
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer (apt-get install pgbouncer)");
        let pgbouncer = Pgbouncer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen; its log:\n{}",
                pgbouncer.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pgbouncer
    }

    fn database_url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=apikey user={SHIM_ROLE} password={PASSWORD}",
            self.port
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        // runuser passes the signal on to pgbouncer.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_book_shows_the_tested_pgbouncer_configuration() {
    assert!(
        HTTP_PAGE.contains("```ini\n{{#include ../poolers/pgbouncer.ini}}\n```"),
        "docs/src/http.md must include docs/poolers/pgbouncer.ini in an ini block"
    );
    assert!(PGBOUNCER_INI.contains("pool_mode = transaction"));
}

#[test]
fn every_request_succeeds_through_pgbouncer_in_transaction_mode() {
    let pgbouncer = Pgbouncer::start();
    let receiver = Receiver::start();
    let shim = Shim::start_with(&[
        ("DATABASE_URL", &pgbouncer.database_url()),
        ("APIKEY_SHIM_POOL_SIZE", "8"),
        ("APIKEY_SHIM_STATEMENTS", "unnamed"),
        ("APIKEY_SHIM_WEBHOOK_DELIVERY", "true"),
        ("APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("APIKEY_SHIM_WEBHOOK_POLL_MS", "100"),
    ]);
    let mut c = superuser();
    let operator = operator_key(&mut c);
    let partner = create_partner(&mut c);
    let unlimited = |c: &mut postgres::Client, scope: &str| {
        issue_with(
            c,
            "$1, ARRAY[$2], rate_per_minute => 100000",
            &[&partner, &scope],
        )
    };
    let manager = unlimited(&mut c, "keys:manage");
    let reader = unlimited(&mut c, "orders:read");
    c.execute(
        "SELECT apikey_webhook_create($1, $2, '{key.issued}')",
        &[&partner, &receiver.url("/pooled")],
    )
    .expect("a webhook endpoint");

    // Eight clients at once, each mixing every kind of statement the shim sends: the bare
    // verification (with and without required scopes), management transactions (an
    // operator's and a partner's read, an operator's issue), and the health check.
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                let (shim, operator, manager, reader) = (&shim, &operator, &manager, &reader);
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for round in 0..25 {
                        let answers = [
                            ("verify", shim.get_as(&reader.token, "/v1/verify"), 200),
                            (
                                "verify with a scope",
                                shim.get_as(&reader.token, "/v1/verify?scope=orders:read"),
                                200,
                            ),
                            (
                                "refused scope",
                                shim.get_as(&reader.token, "/v1/verify?scope=orders:write"),
                                403,
                            ),
                            ("list keys", shim.get_as(&operator.token, "/v1/keys"), 200),
                            (
                                "a partner's keys",
                                shim.get_as(&manager.token, "/v1/keys"),
                                200,
                            ),
                            ("health", shim.get("/healthz"), 200),
                        ];
                        for (what, response, expected) in answers {
                            if response.status != expected {
                                failures.push(format!(
                                    "worker {worker} round {round}, {what}: {} {}",
                                    response.status, response.body
                                ));
                            }
                        }
                        if round % 5 == 0 {
                            let issued = shim.post_as(
                                &operator.token,
                                "/v1/keys",
                                &serde_json::json!({
                                    "partner_id": partner.to_string(),
                                    "scopes": ["orders:read"],
                                    "name": format!("pooled {worker}/{round}"),
                                }),
                            );
                            if issued.status != 201 {
                                failures.push(format!(
                                    "worker {worker} round {round}, issue: {} {}",
                                    issued.status, issued.body
                                ));
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a client thread"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 1240 requests failed behind pgbouncer, e.g. {:?}\nshim log:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        shim.log()
    );

    // The 40 keys issued over HTTP were delivered as events, claimed and reported through
    // the pooler too.
    eventually("40 key.issued deliveries through pgbouncer", || {
        let delivered = receiver
            .received()
            .iter()
            .filter(|r| r.path == "/pooled")
            .count();
        (delivered >= 40).then_some(())
    });
    let recorded: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.webhook_deliveries \
             WHERE partner_id = $1 AND state = 'delivered'",
            &[&partner],
        )
        .expect("delivered count")
        .get(0);
    assert!(
        recorded >= 40,
        "{recorded} deliveries recorded as delivered"
    );
    assert!(
        !pgbouncer.log().contains("unsupported startup parameter"),
        "{}",
        pgbouncer.log()
    );
}
