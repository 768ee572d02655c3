//! Hot standbys the shim verifies with (`APIKEY_SHIM_REPLICA_URLS`).
//!
//! Verification goes to the replicas in use, in turn; everything else to the primary
//! (`DATABASE_URL`). A replica is in use while it answers and has replayed everything the
//! primary wrote more than `APIKEY_SHIM_MAX_REPLICA_LAG_MS` ago. Lag is read off the
//! primary's WAL position, which a probe task samples: a replica's lag is the age of the
//! oldest sample it has not replayed yet, so an idle primary makes no lag (where
//! `pg_last_xact_replay_timestamp()` would grow without end).
//!
//! After a change made through the shim, [`Replicas::wait_for_replay`] holds the answer until
//! every replica in use has replayed it, or takes the laggard out of use: a revoke that
//! answered 200 is in effect wherever the shim verifies.

use crate::abandon::{self, Connection};
use crate::error::AppError;
use deadpool_postgres::{Pool, PoolError, TimeoutType, Timeouts};
use std::collections::VecDeque;
use std::fmt::Display;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the probe task samples the primary and asks each replica how far it replayed.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How often a change's answer asks a replica again whether it replayed the change.
const REPLAY_POLL: Duration = Duration::from_millis(2);
/// The most samples kept: 102 s of a busy primary, past the longest lag limit the shim takes
/// (`MAX_LAG_LIMIT`). A replica further behind reads as this far behind.
const MAX_SAMPLES: usize = 1024;
/// The longest `APIKEY_SHIM_MAX_REPLICA_LAG_MS` the samples can measure.
pub const MAX_LAG_LIMIT_MS: u64 = 60_000;

/// `(lsn - '0/0')`: a WAL position as a number.
const PRIMARY_POSITION: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8";
/// A promoted replica (no longer in recovery) replays nothing: it is at its own position.
const REPLAYED_POSITION: &str = "SELECT CASE WHEN pg_is_in_recovery() \
     THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8 \
     ELSE (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 END";

pub struct Replicas {
    servers: Vec<Replica>,
    turn: AtomicUsize,
    max_lag: Duration,
    wait: Duration,
    /// Each step of asking a server (waiting for a connection, connecting, the query) is
    /// given up on after this long (`APIKEY_SHIM_REPLICA_TIMEOUT_MS`): a server that stopped
    /// answering must not hold a request until its own time limit.
    timeout: Duration,
    samples: Mutex<Samples>,
    /// A change was made whose WAL position could not be read: every replica is out of use
    /// until the primary's position is read again, and then owes it.
    change_at_unknown_position: AtomicBool,
}

/// Why a server did not answer as asked.
pub enum Failed {
    /// It did not answer in time, or failed: take it out of use, ask another.
    Server(Problem),
    /// The request itself was refused (bad input): the server is well, and the answer stands.
    Request(AppError),
    /// No connection of its pool came free in time: it is busy, not lost; ask another.
    Busy,
}

/// What `/healthz` says of a server's failure, and (for the log only) the server's own
/// words, which may name hosts, roles and databases.
pub struct Problem {
    pub public: String,
    pub detail: String,
}

impl Problem {
    fn new(public: impl Into<String>, detail: impl Display) -> Problem {
        Problem {
            public: public.into(),
            detail: detail.to_string(),
        }
    }

    fn of(error: &AppError) -> Problem {
        let public = match error {
            AppError::Unavailable(_) => "cannot be reached",
            AppError::TimedOut => "does not answer",
            _ => "failed a query",
        };
        Problem::new(public, format!("{error:?}"))
    }
}

pub struct Replica {
    /// Host and port, for `/healthz`, `/metrics` and the log (never the connection string,
    /// which may hold a password).
    pub name: String,
    pool: Pool,
    health: Mutex<Health>,
    /// Verifications this replica answered.
    answered: AtomicU64,
    /// The WAL position of a change it did not replay in time: it stays out of use until it
    /// has (0: nothing owed), however small its lag.
    owed: AtomicI64,
}

/// What the shim knows of one replica.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    pub in_use: bool,
    /// `None` until the replica first answered, and while it does not.
    pub lag: Option<Duration>,
    /// Why the replica is out of use, when it is.
    pub problem: Option<String>,
}

/// The primary's WAL positions, oldest first, each with the moment it was first seen.
#[derive(Default)]
struct Samples(VecDeque<(Instant, i64)>);

impl Samples {
    fn record(&mut self, at: Instant, position: i64) {
        if self.0.back().is_some_and(|&(_, last)| last >= position) {
            return;
        }
        if self.0.len() == MAX_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back((at, position));
    }

    /// How long ago the primary was first seen past `replayed`: zero when the replica has
    /// replayed every position sampled.
    fn lag(&self, replayed: i64, now: Instant) -> Duration {
        self.0
            .iter()
            .find(|&&(_, position)| position > replayed)
            .map_or(Duration::ZERO, |&(at, _)| now.saturating_duration_since(at))
    }

    /// Forgets what every replica has replayed, keeping the newest (the next replica to
    /// fall behind is measured from it).
    fn forget_before(&mut self, replayed_by_all: i64) {
        while self.0.len() > 1 && self.0.get(1).is_some_and(|&(_, p)| p <= replayed_by_all) {
            self.0.pop_front();
        }
    }
}

impl Replicas {
    /// One pool per connection string, built as the primary's (`make_pool`); no connection
    /// is opened until the probe task runs.
    pub fn new(
        urls: &[String],
        make_pool: impl Fn(&str) -> Result<Pool, String>,
        max_lag: Duration,
        wait: Duration,
        timeout: Duration,
    ) -> Result<Replicas, String> {
        let servers = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let which = format!("APIKEY_SHIM_REPLICA_URLS, replica {}", i + 1);
                Ok(Replica {
                    name: server_name(url).map_err(|e| format!("{which}: {e}"))?,
                    pool: make_pool(url).map_err(|e| format!("{which}: {e}"))?,
                    health: Mutex::new(Health {
                        in_use: false,
                        lag: None,
                        problem: Some("not probed yet".into()),
                    }),
                    answered: AtomicU64::new(0),
                    owed: AtomicI64::new(0),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Replicas {
            servers,
            turn: AtomicUsize::new(0),
            max_lag,
            wait,
            timeout,
            samples: Mutex::default(),
            change_at_unknown_position: AtomicBool::new(false),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    pub fn servers(&self) -> &[Replica] {
        &self.servers
    }

    /// The replicas in use, each once, starting from the next one's turn.
    pub fn in_turn(&self) -> impl Iterator<Item = &Replica> {
        let n = self.servers.len();
        let start = if n == 0 {
            0
        } else {
            self.turn.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n)
            .map(move |i| &self.servers[(start + i) % n])
            .filter(|r| r.health().in_use)
    }

    /// Samples the primary and asks each replica how far it replayed, every
    /// `PROBE_INTERVAL`, until the shim stops.
    pub fn spawn_probe(self: &Arc<Self>, primary: Pool) -> tokio::task::JoinHandle<()> {
        let replicas = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                replicas.probe(&primary).await;
            }
        })
    }

    async fn probe(&self, primary: &Pool) {
        // An unreachable primary writes nothing a replica could miss: the samples stay.
        // A sample skipped (the primary busy or away) costs nothing: the next tick takes one.
        if let Ok(position) = self.position(primary, PRIMARY_POSITION).await {
            // Whatever the primary wrote before the shim started is owed too: the first
            // sample cannot tell a replica minutes behind from one just behind.
            let first = self.samples().0.is_empty();
            self.samples().record(Instant::now(), position);
            if first
                || self
                    .change_at_unknown_position
                    .swap(false, Ordering::Relaxed)
            {
                for replica in &self.servers {
                    replica.owe(position, None);
                }
            }
        }
        let held_out = self.change_at_unknown_position.load(Ordering::Relaxed);
        // All at once: one server that does not answer delays no other's probe.
        let replayed = futures_util::future::join_all(
            self.servers
                .iter()
                .map(|replica| self.position(&replica.pool, REPLAYED_POSITION)),
        )
        .await;
        let mut replayed_by_all = i64::MAX;
        for (replica, replayed) in self.servers.iter().zip(replayed) {
            match replayed {
                Ok(replayed) if held_out => replayed_by_all = replayed_by_all.min(replayed),
                Ok(replayed) => {
                    replayed_by_all = replayed_by_all.min(replayed);
                    let lag = self.samples().lag(replayed, Instant::now());
                    replica.observe(replayed, lag, self.max_lag);
                }
                // Its position unknown, no sample it may still need is forgotten.
                Err(Failed::Busy) => replayed_by_all = i64::MIN,
                Err(failed) => replica.out_of_use(self.problem(failed)),
            }
        }
        self.samples().forget_before(replayed_by_all);
    }

    /// A WAL position (`sql`) read on `pool`, within the limits of [`Replicas::ask`].
    async fn position(&self, pool: &Pool, sql: &str) -> Result<i64, Failed> {
        self.within(pool, async |client| {
            Ok(client.query_one(sql, &[]).await?.try_get::<_, i64>(0)?)
        })
        .await
    }

    /// `work` on a connection of the replica's pool. Each step is given up on after
    /// `APIKEY_SHIM_REPLICA_TIMEOUT_MS`: waiting for a free connection ([`Failed::Busy`]: a
    /// busy replica is not a lost one), connecting (a stopped server accepts the TCP
    /// connection and never answers the startup), and `work` itself, whose connection is
    /// then discarded (its query cancelled), never returned to the pool still running it.
    pub async fn ask<T>(
        &self,
        replica: &Replica,
        work: impl AsyncFnOnce(&Connection) -> Result<T, AppError>,
    ) -> Result<T, Failed> {
        self.within(&replica.pool, work).await
    }

    /// As [`Replicas::ask`], of the primary: for an answer that is not needed (a replica gave one already, or
    /// verification goes on without the primary), so no longer waited for than a replica.
    pub async fn ask_primary<T>(
        &self,
        primary: &Pool,
        work: impl AsyncFnOnce(&Connection) -> Result<T, AppError>,
    ) -> Result<T, Failed> {
        self.within(primary, work).await
    }

    async fn within<T>(
        &self,
        pool: &Pool,
        work: impl AsyncFnOnce(&Connection) -> Result<T, AppError>,
    ) -> Result<T, Failed> {
        let limits = Timeouts {
            wait: Some(self.timeout),
            create: Some(self.timeout),
            recycle: Some(self.timeout),
        };
        let client = match abandon::connection_within(pool, &limits).await {
            Ok(client) => client,
            Err(PoolError::Timeout(TimeoutType::Wait)) => return Err(Failed::Busy),
            Err(PoolError::Timeout(_)) => return Err(Failed::Server(self.no_answer())),
            Err(e) => {
                return Err(Failed::Server(Problem::new("cannot be connected to", e)));
            }
        };
        match tokio::time::timeout(self.timeout, work(&client)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(
                e @ (AppError::Unavailable(_) | AppError::TimedOut | AppError::Internal(_)),
            )) => Err(Failed::Server(Problem::of(&e))),
            Ok(Err(e)) => Err(Failed::Request(e)),
            Err(_) => {
                client.discard();
                Err(Failed::Server(self.no_answer()))
            }
        }
    }

    /// What a server's failure is taken for where no other server can be asked instead.
    pub fn problem(&self, failed: Failed) -> Problem {
        match failed {
            Failed::Server(problem) => problem,
            Failed::Request(e) => Problem::of(&e),
            Failed::Busy => Problem::new(
                format!(
                    "had no free connection within {} ms (APIKEY_SHIM_REPLICA_TIMEOUT_MS)",
                    self.timeout.as_millis()
                ),
                "busy",
            ),
        }
    }

    fn no_answer(&self) -> Problem {
        Problem::new(
            format!(
                "did not answer within {} ms (APIKEY_SHIM_REPLICA_TIMEOUT_MS)",
                self.timeout.as_millis()
            ),
            "timed out",
        )
    }

    /// Waits until every replica in use has replayed what the primary has written so far
    /// (a change just committed through the shim); a replica that has not after
    /// `APIKEY_SHIM_REPLICA_WAIT_MS` is taken out of use until it catches up.
    pub async fn wait_for_replay(&self, primary: &Pool) {
        if !self.servers.iter().any(|r| r.health().in_use) {
            return;
        }
        let target = match self.position(primary, PRIMARY_POSITION).await {
            Ok(position) => position,
            Err(failed) => {
                let problem = self.problem(failed);
                // Which position the change is at is unknown: every replica is out of use
                // until it has replayed what the primary is next seen to have written.
                self.change_at_unknown_position
                    .store(true, Ordering::Relaxed);
                for replica in &self.servers {
                    replica.out_of_use(Problem::new(
                        "a change's WAL position could not be read from the primary",
                        problem.detail.as_str(),
                    ));
                }
                return;
            }
        };
        let deadline = Instant::now() + self.wait;
        for replica in &self.servers {
            // One out of use now must replay the change before it is back in use.
            if !replica.health().in_use {
                replica.owe(target, None);
                continue;
            }
            loop {
                match self.position(&replica.pool, REPLAYED_POSITION).await {
                    Ok(replayed) if replayed >= target => break,
                    Ok(_) if Instant::now() >= deadline => {
                        replica.owe(
                            target,
                            Some(Problem::new(
                                format!(
                                    "did not replay a change within {} ms (APIKEY_SHIM_REPLICA_WAIT_MS)",
                                    self.wait.as_millis()
                                ),
                                "waited",
                            )),
                        );
                        break;
                    }
                    Ok(_) => tokio::time::sleep(REPLAY_POLL).await,
                    Err(Failed::Busy) if Instant::now() < deadline => {}
                    Err(failed) => {
                        replica.owe(target, Some(self.problem(failed)));
                        break;
                    }
                }
            }
        }
    }

    fn samples(&self) -> MutexGuard<'_, Samples> {
        self.samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Replica {
    pub fn health(&self) -> Health {
        self.lock().clone()
    }

    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// Verifications this replica answered since the shim started.
    pub fn verifications(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// The replica failed a request or a probe: out of use until a probe finds it answering
    /// and caught up.
    pub fn out_of_use(&self, problem: Problem) {
        let mut health = self.lock();
        self.leave_use(&mut health, problem);
    }

    fn leave_use(&self, health: &mut Health, problem: Problem) {
        if health.in_use {
            tracing::warn!(replica = %self.name, problem = %problem.public, detail = %problem.detail, "replica taken out of use");
        }
        *health = Health {
            in_use: false,
            lag: None,
            problem: Some(problem.public),
        };
    }

    /// The replica must replay WAL up to `position` before it is (back) in use; with a
    /// `problem`, it is out of use now. Under the health lock, so that a probe's `observe`
    /// cannot put it back in use in between.
    fn owe(&self, position: i64, problem: Option<Problem>) {
        let mut health = self.lock();
        self.owed.fetch_max(position, Ordering::Relaxed);
        if let Some(problem) = problem {
            self.leave_use(&mut health, problem);
        }
    }

    fn observe(&self, replayed: i64, lag: Duration, max_lag: Duration) {
        let mut health = self.lock();
        let owed = self.owed.load(Ordering::Relaxed);
        let problem = if replayed < owed {
            Some("has not replayed a change made through the shim yet".to_string())
        } else {
            self.owed.store(0, Ordering::Relaxed);
            (lag > max_lag).then(|| {
                format!(
                    "{} ms behind the primary (APIKEY_SHIM_MAX_REPLICA_LAG_MS is {})",
                    lag.as_millis(),
                    max_lag.as_millis()
                )
            })
        };
        let in_use = problem.is_none();
        if in_use && !health.in_use {
            tracing::info!(replica = %self.name, lag_ms = lag.as_millis(), "replica in use");
        }
        *health = Health {
            in_use,
            lag: Some(lag),
            problem,
        };
    }

    fn lock(&self) -> MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `host:port` of a one-server connection string (URL or key=value).
fn server_name(url: &str) -> Result<String, String> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| format!("not a valid connection string: {e}"))?;
    let [host] = config.get_hosts() else {
        return Err("name exactly one server (host) per replica".into());
    };
    let host = match host {
        tokio_postgres::config::Host::Tcp(name) => name.clone(),
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_position_not_replayed() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut samples = Samples::default();
        samples.record(at(0), 100);
        samples.record(at(100), 100);
        samples.record(at(200), 300);
        samples.record(at(300), 500);
        assert_eq!(
            samples.0.len(),
            3,
            "an unchanged position is kept from its first sight"
        );
        assert_eq!(samples.lag(500, at(400)), Duration::ZERO);
        assert_eq!(samples.lag(600, at(400)), Duration::ZERO);
        assert_eq!(samples.lag(300, at(400)), Duration::from_millis(100));
        assert_eq!(samples.lag(299, at(400)), Duration::from_millis(200));
        assert_eq!(samples.lag(0, at(400)), Duration::from_millis(400));
        samples.record(at(500), 400);
        assert_eq!(
            samples.0.len(),
            3,
            "a position older than the newest is ignored"
        );
    }

    #[test]
    fn samples_every_replica_replayed_are_forgotten_but_the_newest() {
        let start = Instant::now();
        let mut samples = Samples::default();
        for (i, position) in [10, 20, 30, 40].into_iter().enumerate() {
            samples.record(start + Duration::from_millis(i as u64), position);
        }
        samples.forget_before(30);
        assert_eq!(
            samples.0.iter().map(|&(_, p)| p).collect::<Vec<_>>(),
            [30, 40]
        );
        samples.forget_before(i64::MAX);
        assert_eq!(samples.0.iter().map(|&(_, p)| p).collect::<Vec<_>>(), [40]);
        for i in 0..2 * MAX_SAMPLES {
            samples.record(start + Duration::from_secs(i as u64), 100 + i as i64);
        }
        assert_eq!(samples.0.len(), MAX_SAMPLES, "bounded");
    }

    #[test]
    fn replicas_are_named_by_host_and_port_never_by_their_password() {
        assert_eq!(
            server_name("postgresql://shim:s3cret@db-2.internal:5433/app").as_deref(),
            Ok("db-2.internal:5433")
        );
        assert_eq!(
            server_name("host=/run/postgresql user=shim password=s3cret").as_deref(),
            Ok("/run/postgresql:5432")
        );
        let several = server_name("host=a,b user=shim").expect_err("two hosts");
        assert!(several.contains("one server"), "{several}");
        let bad = server_name("postgresql://shim:s3cret@[::1").expect_err("not a URL");
        assert!(!bad.contains("s3cret"), "{bad}");
    }

    #[test]
    fn a_lagging_replica_leaves_use_and_comes_back_when_caught_up() {
        let pool = crate::db::pool(
            "host=/nonexistent",
            1,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .expect("a pool, connecting lazily");
        let replica = Replica {
            name: "r:5432".into(),
            pool,
            health: Mutex::new(Health {
                in_use: false,
                lag: None,
                problem: None,
            }),
            answered: AtomicU64::new(0),
            owed: AtomicI64::new(0),
        };
        let limit = Duration::from_millis(1000);
        replica.observe(10, Duration::from_millis(1000), limit);
        assert!(replica.health().in_use);
        replica.observe(10, Duration::from_millis(1001), limit);
        let health = replica.health();
        assert!(!health.in_use);
        assert!(health.problem.is_some_and(|p| p.contains("1001 ms")));
        replica.observe(10, Duration::ZERO, limit);
        assert_eq!(
            replica.health(),
            Health {
                in_use: true,
                lag: Some(Duration::ZERO),
                problem: None
            }
        );
        replica.out_of_use(Problem::new("cannot be reached", "connection refused"));
        assert_eq!(replica.health().lag, None);
        assert!(!replica.health().in_use);

        // A change it did not replay in time keeps it out, however small its lag.
        replica.owe(20, None);
        replica.observe(19, Duration::ZERO, limit);
        assert!(!replica.health().in_use);
        replica.observe(20, Duration::ZERO, limit);
        assert!(replica.health().in_use);
        assert_eq!(
            replica.owed.load(Ordering::Relaxed),
            0,
            "nothing owed any more"
        );
    }
}
