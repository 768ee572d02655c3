//! Reminders (`key.expiring`, `key.rotation_due`) are events no one's action writes: time
//! does. Every delivering shim asks the database once per interval to write the ones that
//! are due (`apikey_send_reminders()`); the function sends each reminder once however many
//! shims ask, so no coordination is needed here.

use deadpool_postgres::Pool;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Longest wait for one call: a first call after a long pause may write a backlog.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(pool: Pool, interval: Duration, mut stopping: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => break,
            _ = ticks.tick() => {}
        }
        let sent = tokio::time::timeout(CALL_TIMEOUT, send(&pool))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs())));
        match sent {
            Ok(written) => {
                if failing {
                    tracing::info!("reminders work again");
                }
                failing = false;
                if written > 0 {
                    tracing::info!(reminders = written, "reminders written to the outbox");
                }
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "writing reminders failed; trying again every interval");
            }
            Err(error) => tracing::debug!(%error, "writing reminders failed again"),
        }
    }
}

async fn send(pool: &Pool) -> Result<i64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let row = client
        .query_typed_one("SELECT apikey_send_reminders()", &[])
        .await
        .map_err(|e| match e.code() {
            Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION) => {
                "the database's apikey extension predates reminders (ALTER EXTENSION apikey UPDATE)"
                    .to_string()
            }
            _ => e.to_string(),
        })?;
    row.try_get(0).map_err(|e| e.to_string())
}
