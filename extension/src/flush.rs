//! What the background worker does in one database, as ordinary SPI code: write what
//! verification recorded in shared memory (`last_used_at`, usage counts) into the tables, and
//! delete rows past their retention. The worker (`worker.rs`) only schedules these.

use crate::error::{ApiError, ApiResult};
use crate::shared::{self, keys, usage, Stat};
use crate::{guc, version};
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::cell::Cell;

/// What a database's objects allow the worker to do.
pub enum Schema {
    /// The extension is not installed (or was dropped): its shared state is of no use.
    Absent,
    /// A release before `apikey.usage` existed: only `last_used_at` can be written.
    WithoutUsage,
    Current,
}

pub fn schema() -> ApiResult<Schema> {
    Ok(match version::installed_release()? {
        None => Schema::Absent,
        Some(release) if release < version::USAGE => Schema::WithoutUsage,
        Some(_) => Schema::Current,
    })
}

fn timestamp(at: i64) -> ApiResult<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(at)
        .map_err(|e| ApiError::internal(format!("timestamp out of range: {e:?}")))
}

/// Writes `last_used_at` of the keys of this database used since it was last written. Keys
/// whose row another transaction holds locked (a revoke in progress) are skipped and written
/// next time: the worker never waits for a lifecycle change.
pub fn write_last_used(client: &mut SpiClient<'_>, db: u32) -> ApiResult<()> {
    let due = keys::unwritten_uses(db);
    if due.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = due.iter().map(|(id, _)| id.clone()).collect();
    let times: Vec<TimestampWithTimeZone> = due
        .iter()
        .map(|(_, at)| timestamp(*at))
        .collect::<ApiResult<_>>()?;
    let locked: Vec<String> = client
        .update(
            "SELECT key_id FROM apikey.keys WHERE key_id = ANY ($1) FOR UPDATE SKIP LOCKED",
            None,
            &[ids.clone().into()],
        )?
        .filter_map(|row| row.get::<String>(1).ok().flatten())
        .collect();
    client.update(
        "UPDATE apikey.keys k SET last_used_at = u.at \
         FROM unnest($1::text[], $2::timestamptz[]) AS u(key_id, at) \
         WHERE k.key_id = u.key_id AND k.key_id = ANY ($3) \
           AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        None,
        &[ids.clone().into(), times.into(), locked.clone().into()],
    )?;
    let gone: Vec<String> = client
        .select(
            "SELECT x FROM unnest($1::text[]) AS x \
             WHERE NOT EXISTS (SELECT 1 FROM apikey.keys WHERE key_id = x)",
            None,
            &[ids.into()],
        )?
        .filter_map(|row| row.get::<String>(1).ok().flatten())
        .collect();
    for (key_id, at) in &due {
        if locked.contains(key_id) || gone.contains(key_id) {
            keys::written(db, key_id, *at);
        }
    }
    Ok(())
}

/// Usage rows as six SQL arrays (minute, key id, partner, reason, count, spent), for
/// `unnest`.
pub fn usage_arrays(rows: &[usage::UsageRow]) -> ApiResult<[DatumWithOid<'static>; 6]> {
    let minutes: Vec<TimestampWithTimeZone> = rows
        .iter()
        .map(|r| timestamp(r.minute))
        .collect::<ApiResult<_>>()?;
    let key_ids: Vec<Option<String>> = rows.iter().map(|r| r.key_id.clone()).collect();
    let partners: Vec<Option<pgrx::Uuid>> = rows
        .iter()
        .map(|r| r.partner.map(pgrx::Uuid::from_bytes))
        .collect();
    let reasons: Vec<String> = rows.iter().map(|r| r.reason.as_str().to_string()).collect();
    let bigint = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let counts: Vec<i64> = rows.iter().map(|r| bigint(r.count.verifications)).collect();
    let spent: Vec<i64> = rows.iter().map(|r| bigint(r.count.spent)).collect();
    Ok([
        minutes.into(),
        key_ids.into(),
        partners.into(),
        reasons.into(),
        counts.into(),
        spent.into(),
    ])
}

/// Adds this database's pending usage counts to `apikey.usage`. The counts are taken out of
/// shared memory first; if the transaction fails, the caller gives them back. A database
/// before 0.8.0 has no `spent` column: what was spent is in the balances all the same.
pub fn write_usage(client: &mut SpiClient<'_>, rows: &[usage::UsageRow]) -> ApiResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let [minutes, key_ids, partners, reasons, counts, spent] = usage_arrays(rows)?;
    if version::schema_has(version::USAGE_SPENT)? {
        client.update(
            "INSERT INTO apikey.usage AS u (minute, key_id, partner_id, reason, count, spent) \
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::uuid[], $4::text[], \
                                  $5::bigint[], $6::bigint[]) \
             ON CONFLICT (minute, key_id, reason) DO UPDATE \
             SET count = u.count + excluded.count, spent = u.spent + excluded.spent, \
                 partner_id = coalesce(excluded.partner_id, u.partner_id)",
            None,
            &[minutes, key_ids, partners, reasons, counts, spent],
        )?;
    } else {
        client.update(
            "INSERT INTO apikey.usage AS u (minute, key_id, partner_id, reason, count) \
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::uuid[], $4::text[], \
                                  $5::bigint[]) \
             ON CONFLICT (minute, key_id, reason) DO UPDATE \
             SET count = u.count + excluded.count, \
                 partner_id = coalesce(excluded.partner_id, u.partner_id)",
            None,
            &[minutes, key_ids, partners, reasons, counts],
        )?;
    }
    Ok(())
}

/// Rows deleted per statement, so that retention never holds a long transaction.
const RETENTION_BATCH: i64 = 10_000;

/// Deletes usage, event and audit rows older than their retention settings.
pub fn apply_retention(client: &mut SpiClient<'_>) -> ApiResult<()> {
    delete_older(
        client,
        "DELETE FROM apikey.usage WHERE ctid = ANY (ARRAY(SELECT ctid FROM apikey.usage \
           WHERE minute < clock_timestamp() - make_interval(secs => $1) LIMIT $2))",
        guc::usage_retention_seconds(),
    )?;
    if version::schema_has(version::EVENTS)? {
        delete_older(
            client,
            "DELETE FROM apikey.events WHERE event_id = ANY (ARRAY(SELECT event_id \
               FROM apikey.events \
               WHERE created_at < clock_timestamp() - make_interval(secs => $1) LIMIT $2))",
            guc::event_retention_seconds(),
        )?;
    }
    let keep = guc::audit_retention_seconds();
    if keep == 0 {
        return Ok(());
    }
    let _allowed = RetentionDeletes::allow();
    delete_older(
        client,
        "DELETE FROM apikey.audit_log WHERE id = ANY (ARRAY(SELECT id FROM apikey.audit_log \
           WHERE at < clock_timestamp() - make_interval(secs => $1) LIMIT $2))",
        keep,
    )
}

/// Runs `delete` (parameters: the age in seconds, the batch size) until a batch comes back
/// short.
fn delete_older(client: &mut SpiClient<'_>, delete: &str, seconds: i64) -> ApiResult<()> {
    loop {
        let deleted = client.update(
            delete,
            None,
            &[(seconds as f64).into(), RETENTION_BATCH.into()],
        )?;
        if (deleted.len() as i64) < RETENTION_BATCH {
            return Ok(());
        }
    }
}

thread_local! {
    static RETENTION_DELETES: Cell<bool> = const { Cell::new(false) };
}

/// While alive, `apikey.audit_log`'s append-only trigger lets this process's DELETEs
/// through. Only the worker's retention makes one; nothing reachable from SQL can.
struct RetentionDeletes;

impl RetentionDeletes {
    fn allow() -> RetentionDeletes {
        RETENTION_DELETES.set(true);
        RetentionDeletes
    }
}

impl Drop for RetentionDeletes {
    fn drop(&mut self) {
        RETENTION_DELETES.set(false);
    }
}

v1_call_info!(pg_finfo_apikey_audit_log_is_append_only);

/// `apikey.audit_log_is_append_only()`, the trigger function that keeps the audit log
/// append-only: UPDATE, DELETE and TRUNCATE raise 42501, except the background worker's
/// retention DELETEs.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn apikey_audit_log_is_append_only(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is PostgreSQL's; its context is only read as TriggerData after the
    // node tag says it is one.
    let event = unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            ApiError::new(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "apikey.audit_log_is_append_only() may only be called as a trigger",
            )
            .raise();
        }
        (*context.cast::<pg_sys::TriggerData>()).tg_event
    };
    let operation = event & pg_sys::TRIGGER_EVENT_OPMASK;
    let is_delete = operation == pg_sys::TRIGGER_EVENT_DELETE;
    if is_delete && RETENTION_DELETES.get() {
        // A BEFORE row trigger lets the row go by returning it (tg_trigtuple for DELETE).
        // SAFETY: as above; a row-level DELETE event carries the old tuple.
        return unsafe {
            let trigger = (*fcinfo).context.cast::<pg_sys::TriggerData>();
            pg_sys::Datum::from((*trigger).tg_trigtuple)
        };
    }
    let what = match operation {
        pg_sys::TRIGGER_EVENT_INSERT => "INSERT",
        pg_sys::TRIGGER_EVENT_UPDATE => "UPDATE",
        pg_sys::TRIGGER_EVENT_DELETE => "DELETE",
        _ => "TRUNCATE",
    };
    ApiError::denied(format!(
        "apikey.audit_log is append-only: {what} is not allowed"
    ))
    .raise()
}

/// Writes what shared memory holds for database `db` (`rows`: its usage counts, already
/// taken out), and applies retention when `retention`. Runs in the caller's transaction; an
/// ERROR leaves it to the caller to give `rows` back. Returns the credit spending written
/// and the shortages announced, for the caller to note once the transaction has committed.
pub fn write(
    db: u32,
    schema: &Schema,
    rows: &[usage::UsageRow],
    retention: bool,
) -> ApiResult<crate::credits::Written> {
    Spi::connect_mut(|client| {
        lock_tables_or_give_way(client)?;
        write_last_used(client, db)?;
        let mut spending = crate::credits::Written::default();
        if matches!(schema, Schema::Current) {
            write_usage(client, rows)?;
            if version::schema_has(version::CREDITS)? {
                spending = crate::credits::write_spending(client, db, retention)?;
            }
            if retention {
                apply_retention(client)?;
            }
        }
        Ok(spending)
    })
}

/// Takes the flush's lock on every table of the extension at once, or fails at once. Taken
/// one by one as its statements reach them, a flush could hold a lock on one table while
/// waiting for another, and deadlock with DDL that does the same the other way round
/// (`ALTER EXTENSION apikey UPDATE` builds an index or a constraint on a table before it
/// alters it). ROW EXCLUSIVE conflicts with no reader or writer, only with DDL and explicit
/// locks; a flush that meets one gives way, and its counts wait for the next interval.
fn lock_tables_or_give_way(client: &mut SpiClient<'_>) -> ApiResult<()> {
    let tables: Option<String> = client
        .select(
            "SELECT string_agg(format('%I.%I', schemaname, tablename), ', ' ORDER BY tablename) \
             FROM pg_catalog.pg_tables WHERE schemaname = 'apikey'",
            Some(1),
            &[],
        )?
        .first()
        .get(1)?;
    if let Some(tables) = tables {
        client.update(
            &format!("LOCK TABLE {tables} IN ROW EXCLUSIVE MODE NOWAIT"),
            None,
            &[],
        )?;
    }
    Ok(())
}

/// Notes a finished flush in the server-wide counters.
pub fn note_flush(ok: bool) {
    if let Some(h) = shared::handles() {
        h.control.count(
            if ok {
                Stat::Flushes
            } else {
                Stat::FlushFailures
            },
            1,
        );
        if ok {
            h.control
                .last_flush
                .store(crate::clock::now(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}
