//! Hot standbys of the test cluster, made with pg_basebackup, for the tests of verification
//! on standbys and of the shim's replicas. Each is stopped and deleted when dropped, whatever
//! happened.

use crate::cluster::{as_postgres, describe};
use crate::postgres::Client;
use crate::{connect_at, env_var};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a standby may take to replay what the primary just committed.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// A port nothing listens on, near the primary's; tests running in parallel get different
/// candidates. The standby does not listen on TCP at all (only on its own socket directory),
/// so the port only names its socket file; a free one just avoids confusing anybody.
fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let primary: u16 = env_var("APIKEY_TEST_PGPORT")
        .parse()
        .expect("APIKEY_TEST_PGPORT is a port number");
    let offset = 100 + (std::process::id() % 200) as u16 + NEXT.fetch_add(10, Ordering::Relaxed);
    (0..50)
        .filter_map(|i| primary.checked_add(offset + i))
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port for the standby")
}

/// A running hot standby of the test cluster, stopped and deleted on drop.
pub struct Standby {
    /// postgres-owned, 0700: holds pgdata/, socket/ and log.
    dir: PathBuf,
    pub port: u16,
    started: bool,
}

impl Standby {
    pub fn start() -> Standby {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let dir = Path::new(&env_var("APIKEY_TEST_STATE_DIR")).join(format!(
            "standby-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // From here on, dropping `standby` (a failed step below panics) removes `dir`.
        let mut standby = Standby {
            dir,
            port: free_port(),
            started: false,
        };
        let installed = Command::new("install")
            .args(["-d", "-o", "postgres", "-g", "postgres", "-m", "0700"])
            .arg(&standby.dir)
            .arg(standby.socket_dir())
            .output()
            .expect("run install -d");
        assert!(
            installed.status.success(),
            "create {}: {}",
            standby.dir.display(),
            describe(&installed)
        );

        let pgdata = standby.pgdata();
        // One base backup at a time: PostgreSQL 15 can invalidate the temporary replication
        // slot of one pg_basebackup while the checkpoint another one forced is running (seen
        // in CI as "terminating process ... to release replication slot").
        static ONE_BASE_BACKUP: Mutex<()> = Mutex::new(());
        let one_at_a_time = ONE_BASE_BACKUP
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // -R writes primary_conninfo (the primary's socket directory and port) and
        // standby.signal; the copied apikey.conf keeps shared_preload_libraries and the
        // pepper file, so the standby loads the extension with the primary's pepper.
        let backup = as_postgres(
            "pg_basebackup",
            &[
                "-h",
                &env_var("APIKEY_TEST_PGHOST"),
                "-p",
                &env_var("APIKEY_TEST_PGPORT"),
                "-U",
                &env_var("APIKEY_TEST_PGUSER"),
                "-D",
                &pgdata,
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
            ],
        );
        drop(one_at_a_time);
        assert!(
            backup.status.success(),
            "pg_basebackup: {}",
            describe(&backup)
        );

        // Command-line options override apikey.conf's port, socket directory and address.
        let options = format!(
            "-p {} -k '{}' -c listen_addresses=''",
            standby.port,
            standby.socket_dir()
        );
        // Set before starting: a start that times out may still leave a postmaster behind.
        standby.started = true;
        let started = as_postgres(
            "pg_ctl",
            &[
                "-D",
                &pgdata,
                "-l",
                &standby.log(),
                "-w",
                "-t",
                "60",
                "start",
                "-o",
                &options,
            ],
        );
        assert!(
            started.status.success(),
            "pg_ctl start of the standby: {}\nstandby log:\n{}",
            describe(&started),
            std::fs::read_to_string(standby.log()).unwrap_or_default()
        );
        standby
    }

    fn pgdata(&self) -> String {
        self.dir.join("pgdata").display().to_string()
    }

    pub fn socket_dir(&self) -> String {
        self.dir.join("socket").display().to_string()
    }

    pub fn log(&self) -> String {
        self.dir.join("log").display().to_string()
    }

    /// A libpq connection string for `role` on this standby (its socket directory).
    pub fn conninfo(&self, role: &str) -> String {
        format!(
            "host={} port={} user={role} dbname={}",
            self.socket_dir(),
            self.port,
            env_var("APIKEY_TEST_PGDATABASE")
        )
    }

    /// Kills the postmaster and its backends with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.signal("-KILL").expect("the standby killed");
        // Backends forked after the first signal would exit on their own: their postmaster
        // is gone.
        if let Ok(pid) = self.postmaster_pid() {
            let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).output();
        }
        self.started = false;
    }

    /// Stops the postmaster and its processes with SIGSTOP: the server accepts connections
    /// (the kernel does) and answers nothing, as a host that hangs. Until `resume`.
    pub fn pause(&self) {
        self.signal("-STOP").expect("the standby paused");
    }

    pub fn resume(&self) {
        self.signal("-CONT").expect("the standby resumed");
    }

    /// `signal` to the postmaster and its children. The postmaster is stopped before its
    /// children, so it forks none after they were listed; it gets other signals after them,
    /// while they are still its children.
    fn signal(&self, signal: &str) -> Result<(), String> {
        let pid = self.postmaster_pid()?;
        let postmaster = || {
            let done = Command::new("kill").args([signal, &pid]).output();
            match done {
                Ok(o) if o.status.success() => Ok(()),
                other => Err(format!("kill {signal} {pid}: {other:?}")),
            }
        };
        let children = || {
            // pkill exits 1 when the postmaster has no children: nothing to signal.
            let done = Command::new("pkill").args([signal, "-P", &pid]).output();
            match done {
                Ok(o) if o.status.code().is_some_and(|c| c <= 1) => Ok(()),
                other => Err(format!("pkill {signal} -P {pid}: {other:?}")),
            }
        };
        if signal == "-STOP" {
            postmaster()?;
            children()
        } else {
            children()?;
            postmaster()
        }
    }

    fn postmaster_pid(&self) -> Result<String, String> {
        let pid_file = std::fs::read_to_string(self.dir.join("pgdata").join("postmaster.pid"))
            .map_err(|e| format!("postmaster.pid of the standby: {e}"))?;
        pid_file
            .lines()
            .next()
            .map(|pid| pid.trim().to_string())
            .ok_or_else(|| "postmaster.pid names no pid".to_string())
    }

    /// A connection as `role` to the server whatever it is now (a promoted standby too).
    pub fn connect_promoted(&self, role: &str) -> Client {
        connect_at(
            &self.socket_dir(),
            &self.port.to_string(),
            role,
            &env_var("APIKEY_TEST_PGDATABASE"),
        )
    }

    /// Promotes the standby to a primary of its own (it stops following the test cluster).
    pub fn promote(&self) {
        let promoted = as_postgres("pg_ctl", &["-D", &self.pgdata(), "-w", "promote"]);
        assert!(
            promoted.status.success(),
            "pg_ctl promote: {}",
            describe(&promoted)
        );
    }

    /// A connection as `role`, asserting the server is still a standby.
    pub fn connect(&self, role: &str) -> Client {
        let mut c = self.connect_promoted(role);
        let in_recovery: bool = c
            .query_one("SELECT pg_is_in_recovery()", &[])
            .expect("pg_is_in_recovery")
            .get(0);
        assert!(in_recovery, "the standby is in recovery (read-only)");
        c
    }

    /// Waits until the standby has replayed everything `primary` has committed so far.
    pub fn catch_up(&self, primary: &mut Client) {
        let lsn: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .expect("pg_current_wal_lsn on the primary")
            .get(0);
        let mut c = self.connect(&env_var("APIKEY_TEST_PGUSER"));
        let deadline = Instant::now() + REPLAY_TIMEOUT;
        loop {
            let row = c
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn, \
                     pg_last_wal_replay_lsn()::text",
                    &[&lsn],
                )
                .expect("pg_last_wal_replay_lsn on the standby");
            if row.get::<_, Option<bool>>(0) == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the standby did not replay {lsn} within {REPLAY_TIMEOUT:?} (replayed: {:?})\n\
                 standby log:\n{}",
                row.get::<_, Option<String>>(1),
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        if self.started {
            // A paused standby would never stop.
            let _ = self.signal("-CONT");
            let stopped = as_postgres(
                "pg_ctl",
                &["-D", &self.pgdata(), "-m", "immediate", "-w", "stop"],
            );
            if !stopped.status.success() {
                eprintln!("could not stop the standby: {}", describe(&stopped));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
        }
    }
}
