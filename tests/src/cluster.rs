//! A private PostgreSQL cluster a test starts for itself, for what the shared test cluster
//! must not suffer: restarts, killed backends, other server settings. Stopped and deleted
//! when dropped, whatever happened.

use postgres::{Client, NoTls};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crate::env_var;

/// Runs a PostgreSQL program as the postgres OS user (PostgreSQL refuses to run as root),
/// from `/` because postgres cannot read the test's working directory.
pub fn as_postgres(tool: &str, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(crate::pgbin(tool))
        .args(args)
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("run {tool} through runuser: {e}"))
}

/// Exit status, stdout and stderr of a program, for a failure message.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn check(what: &str, output: Output) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        describe(&output)
    );
}

pub struct PrivateCluster {
    dir: PathBuf,
    pub port: u16,
}

impl PrivateCluster {
    /// initdb, the test cluster's pepper file, `settings` (postgresql.conf lines), start,
    /// and database `apikey` with the extension.
    pub fn start(settings: &[&str]) -> PrivateCluster {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(&env_var("APIKEY_TEST_STATE_DIR"))
            .join(format!("private-{}-{n}", std::process::id()));
        let base: u16 = env_var("APIKEY_TEST_PGPORT").parse().expect("a port");
        let port = (0..200)
            .map(|i| base + 400 + (std::process::id() % 100) as u16 + n * 7 + i)
            .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
            .expect("a free port");
        let cluster = PrivateCluster { dir, port };
        check(
            "install -d",
            Command::new("install")
                .args(["-d", "-o", "postgres", "-g", "postgres", "-m", "0700"])
                .arg(&cluster.dir)
                .arg(cluster.dir.join("socket"))
                .output()
                .expect("run install"),
        );
        let pepper = cluster.dir.join("pepper");
        std::fs::copy(crate::pepper_file_path(), &pepper).expect("copy the pepper file");
        check(
            "chown the pepper",
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(&pepper)
                .output()
                .expect("run chown"),
        );
        check(
            "initdb",
            as_postgres(
                "initdb",
                &[
                    "-D",
                    &cluster.pgdata(),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ],
            ),
        );
        let mut conf = format!(
            "\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\n\
             apikey.pepper_file = '{}'\nmax_connections = 40\nshared_buffers = 16MB\n",
            cluster.socket_dir(),
            pepper.display()
        );
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = Path::new(&cluster.pgdata()).join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).expect("write postgresql.conf");
        cluster.pg_ctl(&["start", "-w", "-t", "60"]);
        let mut c = cluster.connect("postgres");
        c.batch_execute("CREATE DATABASE apikey")
            .expect("CREATE DATABASE");
        cluster
            .connect("apikey")
            .batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
            .expect("CREATE EXTENSION");
        cluster
    }

    fn pgdata(&self) -> String {
        self.dir.join("pgdata").display().to_string()
    }

    fn socket_dir(&self) -> String {
        self.dir.join("socket").display().to_string()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let (pgdata, log) = (self.pgdata(), self.dir.join("log").display().to_string());
        let mut all: Vec<&str> = vec!["-D", &pgdata, "-l", &log];
        all.extend_from_slice(args);
        check(&format!("pg_ctl {args:?}"), as_postgres("pg_ctl", &all));
    }

    pub fn connect(&self, db: &str) -> Client {
        let config = format!(
            "host={} port={} user=postgres dbname={db} application_name=apikey-tests",
            self.socket_dir(),
            self.port
        );
        Client::connect(&config, NoTls).unwrap_or_else(|e| panic!("connect to {db}: {e}"))
    }

    /// A connection string for `role` to `db`, e.g. a shim's `DATABASE_URL`.
    pub fn database_url(&self, role: &str, db: &str) -> String {
        format!(
            "host={} port={} user={role} dbname={db}",
            self.socket_dir(),
            self.port
        )
    }

    /// A clean restart (smart shutdown waits for clients; fast rolls them back).
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"]);
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Waits (bounded) until the server accepts connections again, e.g. after a crash
    /// restart.
    pub fn wait_until_up(&self) -> Client {
        crate::eventually("the server accepts connections again", || {
            let config = format!(
                "host={} port={} user=postgres dbname=apikey connect_timeout=2",
                self.socket_dir(),
                self.port
            );
            let mut c = Client::connect(&config, NoTls).ok()?;
            c.query_one("SELECT 1", &[]).ok()?;
            Some(c)
        })
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let pgdata = self.pgdata();
        let _ = as_postgres("pg_ctl", &["-D", &pgdata, "-m", "immediate", "-w", "stop"]);
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
