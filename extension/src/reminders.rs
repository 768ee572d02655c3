//! Reminders: `key.expiring` (7 days and 1 day before a key expires) and `key.rotation_due`
//! (once a key is older than `apikey.rotation_period`), written to the outbox by
//! `apikey_send_reminders()`, which every delivering shim calls once a minute. Each reminder
//! is sent once per key: `apikey.key_reminders` remembers what was sent (events themselves
//! are deleted after `apikey.event_retention`), and its primary key makes concurrent callers
//! agree on who sends it.

use crate::access;
use crate::error::{ApiResult, OrRaise};
use crate::events;
use crate::{guc, outbox};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::json;

/// Most reminders one call writes: a backlog (the first call after a long pause, or after
/// `apikey.rotation_period` was first set) is spread over the following minutes instead of
/// one long transaction.
const MAX_PER_CALL: i64 = 1000;

/// Keys entering a reminder window, the innermost window each has entered, minus what was
/// already sent. Live keys only: a revoked key (or one in a rotation's grace, already
/// replaced) needs no reminder.
const DUE: &str = "\
    WITH due AS ( \
        SELECT k.key_id, 'expiring_' || min(d.days) || 'd' AS kind, min(d.days) AS days \
        FROM apikey.keys k, unnest($1::int[]) AS d(days) \
        WHERE k.revoked_at IS NULL AND k.expires_at > clock_timestamp() \
          AND k.expires_at <= clock_timestamp() + make_interval(days => d.days) \
        GROUP BY k.key_id \
        UNION ALL \
        SELECT k.key_id, 'rotation_due', NULL FROM apikey.keys k \
        WHERE $2 > 0 AND k.revoked_at IS NULL \
          AND (k.expires_at IS NULL OR k.expires_at > clock_timestamp()) \
          AND k.created_at <= clock_timestamp() - make_interval(secs => $2) \
    ), fresh AS ( \
        SELECT due.* FROM due \
        WHERE NOT EXISTS (SELECT 1 FROM apikey.key_reminders r \
                          WHERE r.key_id = due.key_id AND r.kind = due.kind) \
        LIMIT $3 \
    ), sent AS ( \
        INSERT INTO apikey.key_reminders (key_id, kind) SELECT key_id, kind FROM fresh \
        ON CONFLICT DO NOTHING RETURNING key_id, kind \
    ) \
    SELECT sent.key_id, fresh.days FROM sent JOIN fresh USING (key_id, kind)";

/// Writes the reminders that are due and returns how many. Idempotent: calling it again
/// (from any number of sessions) writes nothing new until another reminder falls due.
#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_send_reminders() -> i64 {
    Spi::connect_mut(send_reminders).or_raise()
}

fn send_reminders(client: &mut SpiClient<'_>) -> ApiResult<i64> {
    access::require_admin("apikey_send_reminders")?;
    let rotation_period = guc::rotation_period_seconds();
    let due: Vec<(String, Option<i32>)> = client
        .update(
            DUE,
            None,
            &[
                outbox::EXPIRY_REMINDER_DAYS.to_vec().into(),
                (rotation_period as f64).into(),
                MAX_PER_CALL.into(),
            ],
        )?
        .map(|row| {
            Ok((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<i32>(2)?,
            ))
        })
        .collect::<ApiResult<_>>()?;
    for (key_id, days) in &due {
        match days {
            Some(days) => events::record_key_event(
                client,
                outbox::KEY_EXPIRING,
                key_id,
                json!({ "days_before": days }),
            )?,
            None => events::record_key_event(
                client,
                outbox::KEY_ROTATION_DUE,
                key_id,
                json!({ "rotation_period_seconds": rotation_period }),
            )?,
        }
    }
    Ok(due.len() as i64)
}
