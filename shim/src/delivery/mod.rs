//! Delivering the webhook outbox. The database decides what is due, signs it, and decides
//! retries, backoff and giving up; this task only carries messages: it leases due
//! deliveries (`apikey_webhook_claim`), POSTs each (`send`), and reports how each attempt
//! went (`apikey_webhook_report`).
//!
//! Delivery is at least once. A lease that runs out (the shim stopped, crashed, or could not
//! report) makes the delivery due again, for this shim or another: `FOR UPDATE SKIP LOCKED`
//! in the claim keeps several shims from holding the same delivery at once.
//!
//! `address` keeps attempts off private networks; `send` makes one attempt; `reminders`
//! asks the database every minute to write the reminders that have fallen due.

pub mod address;
mod reminders;
pub mod send;

use crate::metrics::{Metrics, WebhookOutcome};
use deadpool_postgres::Pool;
use send::{Message, Outcome, Sender};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_postgres::types::Type;
use uuid::Uuid;

/// The delivery task's configuration (see `Config` for each setting).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Pause between claims when nothing was due.
    pub poll: Duration,
    /// Most attempts in flight at once, and so most deliveries claimed at once.
    pub batch: usize,
    /// Time limit of one attempt.
    pub timeout: Duration,
    /// Whether webhooks may go to private, loopback and other non-public addresses.
    pub allow_private: bool,
    /// How often the database is asked to write the reminders that are due.
    pub reminder_interval: Duration,
}

impl Settings {
    /// How long a claimed delivery stays this shim's: its attempt, then reporting it (which
    /// may wait for a pooled connection), with room to spare. Shorter would let another shim
    /// send it again while this one still works on it.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }

    /// Longest wait for the database in a claim or a report (pooled connection included):
    /// an attempt and its report end a second before the lease does. A database that does
    /// not answer must not hold a slot, or shutdown, forever.
    pub fn database_timeout(&self) -> Duration {
        self.timeout + Duration::from_secs(4)
    }
}

/// Longest pause after the database failed; also how often a database without the
/// webhook functions (an extension older than 0.4.0) is asked again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long stopping waits for attempts in flight before abandoning them (their leases
/// expire and they are sent again).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Starts the delivery task; it runs until `stopping` turns true (or its sender is dropped),
/// then finishes or abandons what is in flight within [`SHUTDOWN_GRACE`].
pub fn spawn(
    pool: Pool,
    settings: Settings,
    metrics: Arc<Metrics>,
    stopping: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let sender = Sender::new(settings.timeout, settings.allow_private)?;
    tracing::info!(
        poll_ms = settings.poll.as_millis() as u64,
        batch = settings.batch,
        timeout_ms = settings.timeout.as_millis() as u64,
        allow_private = settings.allow_private,
        "webhook delivery started"
    );
    let reminders = tokio::spawn(reminders::run(
        pool.clone(),
        settings.reminder_interval,
        stopping.clone(),
    ));
    let worker = Arc::new(Worker {
        pool,
        settings,
        sender,
        metrics,
    });
    let deliveries = tokio::spawn(worker.run(stopping));
    Ok(tokio::spawn(async move {
        let _ = deliveries.await;
        let _ = reminders.await;
    }))
}

struct Worker {
    pool: Pool,
    settings: Settings,
    sender: Sender,
    metrics: Arc<Metrics>,
}

/// A delivery leased by `apikey_webhook_claim`.
struct Claimed {
    delivery_id: i64,
    endpoint_id: Uuid,
    url: String,
    msg_id: String,
    msg_timestamp: i64,
    payload: String,
    signature: String,
    attempt: i32,
}

impl Claimed {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Claimed {
            delivery_id: row.try_get("delivery_id")?,
            endpoint_id: row.try_get("endpoint_id")?,
            url: row.try_get("url")?,
            msg_id: row.try_get("msg_id")?,
            msg_timestamp: row.try_get("msg_timestamp")?,
            payload: row.try_get("payload")?,
            signature: row.try_get("signature")?,
            attempt: row.try_get("attempt")?,
        })
    }

    fn message(&self) -> Message<'_> {
        Message {
            url: &self.url,
            msg_id: &self.msg_id,
            timestamp: self.msg_timestamp,
            signature: &self.signature,
            payload: &self.payload,
        }
    }
}

/// Why a claim found nothing to do.
enum ClaimError {
    /// SQLSTATE 42883: the database's extension predates webhooks.
    NotInstalled,
    Failed(String),
}

impl From<tokio_postgres::Error> for ClaimError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION) {
            ClaimError::NotInstalled
        } else {
            ClaimError::Failed(e.to_string())
        }
    }
}

impl From<deadpool_postgres::PoolError> for ClaimError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ClaimError::Failed(e.to_string())
    }
}

impl Worker {
    async fn run(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        let batch = self.settings.batch.max(1);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut trouble = Trouble::default();
        let mut next_claim = Instant::now();
        // More may be due: the last claim found something, or an attempt has just ended
        // (the database lets an endpoint and a partner have only a few attempts in flight,
        // so the end of one may make the next claimable). A free slot is then filled at
        // once instead of after the poll interval.
        let mut backlog = false;
        loop {
            if *stopping.borrow() {
                break;
            }
            let free = batch.saturating_sub(in_flight.len());
            if free > 0 && (backlog || Instant::now() >= next_claim) {
                let claimed = tokio::select! {
                    claimed = self.claim(free) => claimed,
                    _ = stopping.wait_for(|stop| *stop) => break,
                };
                match claimed {
                    Ok(claimed) => {
                        trouble.cleared();
                        backlog = !claimed.is_empty();
                        for delivery in claimed {
                            in_flight.spawn(Arc::clone(&self).deliver(delivery));
                        }
                        next_claim = Instant::now() + self.settings.poll;
                    }
                    Err(e) => {
                        backlog = false;
                        next_claim = Instant::now() + trouble.pause(e, self.settings.poll);
                    }
                }
                continue;
            }
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => break,
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "a webhook attempt task failed");
                    }
                    backlog = true;
                }
                () = tokio::time::sleep_until(next_claim), if free > 0 && !backlog => {}
            }
        }
        finish(in_flight).await;
    }

    /// Leases up to `max` due deliveries, on a pooled connection given back before any is
    /// sent (attempts take seconds; requests need the connections).
    async fn claim(&self, max: usize) -> Result<Vec<Claimed>, ClaimError> {
        tokio::time::timeout(self.settings.database_timeout(), self.try_claim(max))
            .await
            .unwrap_or_else(|_| {
                Err(ClaimError::Failed(format!(
                    "no answer within {} ms",
                    self.settings.database_timeout().as_millis()
                )))
            })
    }

    async fn try_claim(&self, max: usize) -> Result<Vec<Claimed>, ClaimError> {
        let client = self.pool.get().await?;
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let lease = self.settings.lease().as_secs_f64();
        let rows = client
            .query_typed(
                "SELECT delivery_id, endpoint_id, url, msg_id, msg_timestamp, payload, signature, attempt \
                 FROM apikey_webhook_claim($1::int, make_interval(secs => $2::float8))",
                &[(&max, Type::INT4), (&lease, Type::FLOAT8)],
            )
            .await?;
        drop(client);
        Ok(rows
            .iter()
            .map(Claimed::from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn deliver(self: Arc<Self>, delivery: Claimed) {
        let outcome = self.sender.send(&delivery.message()).await;
        let reported = tokio::time::timeout(
            self.settings.database_timeout(),
            self.report(delivery.delivery_id, &outcome),
        )
        .await
        .unwrap_or_else(|_| Err("the database did not answer in time".into()));
        let counted = match reported {
            Ok(state) => {
                tracing::info!(
                    delivery_id = delivery.delivery_id,
                    endpoint_id = %delivery.endpoint_id,
                    attempt = delivery.attempt,
                    status = outcome.status,
                    latency_ms = outcome.latency_ms,
                    error = outcome.error.as_deref(),
                    state = %state,
                    "webhook attempt"
                );
                WebhookOutcome::of_state(&state)
            }
            Err(e) => {
                tracing::warn!(
                    delivery_id = delivery.delivery_id,
                    endpoint_id = %delivery.endpoint_id,
                    attempt = delivery.attempt,
                    status = outcome.status,
                    latency_ms = outcome.latency_ms,
                    error = %e,
                    "webhook attempt not recorded; it is sent again when its lease expires"
                );
                WebhookOutcome::Error
            }
        };
        self.metrics.webhook_attempt(counted);
    }

    /// Records an attempt; returns the delivery's new state.
    async fn report(
        &self,
        delivery_id: i64,
        outcome: &Outcome,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let client = self.pool.get().await?;
        let status = outcome.status.map(i32::from);
        let row = client
            .query_typed_one(
                "SELECT apikey_webhook_report($1::bigint, $2::int, $3::int, $4::text)",
                &[
                    (&delivery_id, Type::INT8),
                    (&status, Type::INT4),
                    (&outcome.latency_ms, Type::INT4),
                    (&outcome.error, Type::TEXT),
                ],
            )
            .await?;
        Ok(row.try_get(0)?)
    }
}

/// Waits up to [`SHUTDOWN_GRACE`] for attempts in flight, then abandons the rest.
async fn finish(mut in_flight: JoinSet<()>) {
    if !in_flight.is_empty() {
        tracing::info!(
            in_flight = in_flight.len(),
            "webhook delivery stopping: finishing attempts in flight"
        );
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = in_flight.len(),
                "webhook attempts abandoned at shutdown; they are sent again when their leases expire"
            );
            in_flight.shutdown().await;
        }
    }
    tracing::info!("webhook delivery stopped");
}

/// What went wrong with claiming, so that a lasting problem is logged once, not once per
/// poll, and the database is asked less often while it fails.
#[derive(Default)]
struct Trouble {
    not_installed: bool,
    failures: u32,
}

impl Trouble {
    /// The pause before the next claim after `e`.
    fn pause(&mut self, e: ClaimError, poll: Duration) -> Duration {
        match e {
            ClaimError::NotInstalled => {
                if !self.not_installed {
                    tracing::info!(
                        "webhook delivery waits: the database has no apikey_webhook_claim (its apikey \
                         extension predates webhooks); asking again every {} s",
                        MAX_BACKOFF.as_secs()
                    );
                }
                self.not_installed = true;
                MAX_BACKOFF
            }
            ClaimError::Failed(error) => {
                if self.failures == 0 {
                    tracing::warn!(%error, "webhook claim failed; retrying with backoff");
                } else {
                    tracing::debug!(%error, failures = self.failures + 1, "webhook claim failed again");
                }
                self.failures = self.failures.saturating_add(1);
                backoff(poll, self.failures)
            }
        }
    }

    fn cleared(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "webhook claims work again after failing"
            );
        } else if self.not_installed {
            tracing::info!("webhook delivery running: the database has apikey_webhook_claim now");
        }
        *self = Trouble::default();
    }
}

/// The pause after the `failures`-th failure in a row: the poll interval doubled each time,
/// at most [`MAX_BACKOFF`].
fn backoff(poll: Duration, failures: u32) -> Duration {
    let doubled = poll.saturating_mul(1u32 << failures.min(16));
    doubled.min(MAX_BACKOFF).max(poll.min(MAX_BACKOFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let poll = Duration::from_secs(1);
        let pauses: Vec<u64> = (1..=7).map(|n| backoff(poll, n).as_secs()).collect();
        assert_eq!(pauses, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(poll, u32::MAX), MAX_BACKOFF);
        assert_eq!(
            backoff(Duration::from_secs(60), 1),
            MAX_BACKOFF,
            "a long poll interval still retries within the maximum"
        );
        assert_eq!(backoff(Duration::from_millis(10), 1).as_millis(), 20);
    }

    #[test]
    fn a_missing_function_is_asked_about_slowly_and_failures_back_off() {
        let poll = Duration::from_millis(100);
        let mut trouble = Trouble::default();
        assert_eq!(trouble.pause(ClaimError::NotInstalled, poll), MAX_BACKOFF);
        assert_eq!(trouble.pause(ClaimError::NotInstalled, poll), MAX_BACKOFF);
        assert!(trouble.not_installed);
        trouble.cleared();
        let pauses: Vec<u128> = (0..3)
            .map(|_| {
                trouble
                    .pause(ClaimError::Failed("down".into()), poll)
                    .as_millis()
            })
            .collect();
        assert_eq!(pauses, [200, 400, 800]);
        trouble.cleared();
        assert_eq!(trouble.failures, 0);
    }

    #[test]
    fn the_lease_outlasts_an_attempt_and_its_report() {
        let settings = Settings {
            poll: Duration::from_secs(1),
            batch: 16,
            timeout: Duration::from_secs(10),
            allow_private: false,
            reminder_interval: Duration::from_secs(60),
        };
        assert_eq!(settings.lease(), Duration::from_secs(25));
        assert!(settings.timeout + settings.database_timeout() < settings.lease());
    }
}
