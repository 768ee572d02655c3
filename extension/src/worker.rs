//! The background workers: they only schedule; the work is in `flush`.
//!
//! - The launcher (started by the postmaster when the library is preloaded, restarted five
//!   seconds after it dies, not run on a standby) looks once a second for databases with
//!   something in shared memory to write, and starts one flusher per such database.
//! - A flusher connects to its database and writes `last_used_at` and the usage counts at
//!   once, then every `apikey.usage_flush_interval`; once an hour it applies retention. On
//!   SIGTERM (a clean shutdown) it flushes once more before exiting, so a clean restart
//!   loses no counts. It exits after ten idle minutes; the launcher starts it again when
//!   needed. A database without the extension (or dropped) has its shared state discarded.

use crate::flush::{self, Schema};
use crate::shared::{credits, keys, usage};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const LAUNCHER_TICK: Duration = Duration::from_secs(1);
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
const IDLE_EXIT: Duration = Duration::from_secs(600);

/// Registers the launcher; from `_PG_init`, when preloading.
pub fn register() {
    // SAFETY: a read of a flag set by the postmaster around preloading.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    BackgroundWorkerBuilder::new("apikey launcher")
        .set_type("apikey launcher")
        .set_library("apikey")
        .set_function("apikey_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn apikey_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: the launcher reads only the shared catalog pg_database.
    BackgroundWorker::connect_worker_to_spi(None, None);
    let mut flushers: HashMap<u32, DynamicBackgroundWorker> = HashMap::new();
    // Databases already reported as waiting for a worker slot: said once, not every second.
    let mut reported: HashSet<u32> = HashSet::new();
    while BackgroundWorker::wait_latch(Some(LAUNCHER_TICK)) {
        reload_config_if_asked();
        flushers.retain(|_, worker| {
            matches!(
                worker.pid(),
                Ok(_) | Err(pgrx::bgworkers::BackgroundWorkerStatus::NotYetStarted)
            )
        });
        let mut wanted = keys::databases_with_uses();
        wanted.extend(usage::databases());
        wanted.sort_unstable();
        wanted.dedup();
        for db in wanted {
            if flushers.contains_key(&db) {
                continue;
            }
            if !BackgroundWorker::transaction(|| database_exists(db)) {
                keys::forget_database(db);
                usage::forget_database(db);
                continue;
            }
            match start_flusher(db) {
                Some(worker) => {
                    flushers.insert(db, worker);
                    reported.remove(&db);
                }
                // Out of worker slots (max_worker_processes): try again next tick.
                None => {
                    if reported.insert(db) {
                        warning!(
                            "apikey: no background worker slot free to flush database {db}; \
                             raise max_worker_processes"
                        );
                    }
                }
            }
        }
    }
}

fn database_exists(db: u32) -> bool {
    // SAFETY: a syscache probe inside the transaction `BackgroundWorker::transaction` opened.
    unsafe {
        pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::DATABASEOID as i32,
            pg_sys::Datum::from(db),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    }
}

fn start_flusher(db: u32) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("apikey flusher for database {db}"))
        .set_type("apikey flusher")
        .set_library("apikey")
        .set_function("apikey_flusher_main")
        .set_argument(Some(pg_sys::Datum::from(db)))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        // SAFETY: reads this process's pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}

/// Whether transaction `xid` committed (a batch it wrote is in the table).
fn committed(xid: u32) -> bool {
    // SAFETY: a commit-log lookup, valid in any transaction.
    unsafe { pg_sys::TransactionIdDidCommit(pg_sys::TransactionId::from(xid)) }
}

fn reload_config_if_asked() {
    if BackgroundWorker::sighup_received() {
        // SAFETY: the standard reaction to SIGHUP in a worker's main loop.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn apikey_flusher_main(arg: pg_sys::Datum) {
    let db = u32::try_from(arg.value()).unwrap_or(0);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    let mut last_retention: Option<Instant> = None;
    let mut last_work = Instant::now();
    // The first round runs at once: what brought the worker here (counts restored after a
    // restart, a database that had none) must not wait a whole interval.
    let mut running = true;
    loop {
        reload_config_if_asked();
        let retention = last_retention.is_none_or(|at| at.elapsed() >= RETENTION_EVERY);
        let had_work =
            !keys::unwritten_uses(db).is_empty() || !usage::pending(db, |_| true).is_empty();
        match flush_once(db, retention) {
            Some(Schema::Absent) => return,
            Some(_) if retention => last_retention = Some(Instant::now()),
            _ => {}
        }
        if had_work {
            last_work = Instant::now();
        }
        if !running || last_work.elapsed() >= IDLE_EXIT {
            return;
        }
        running = BackgroundWorker::wait_latch(Some(crate::guc::usage_flush_interval()));
    }
}

/// One flush in a transaction of its own. An error is logged, the counts go back to shared
/// memory for the next try, and the worker carries on.
fn flush_once(db: u32, retention: bool) -> Option<Schema> {
    // SAFETY: the documented way for a background worker to run a transaction; every path
    // below ends it (commit, or abort after a caught error).
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(|| {
        let schema = flush::schema().unwrap_or_else(|e| e.raise());
        let rows = match schema {
            Schema::Absent => {
                keys::forget_database(db);
                usage::forget_database(db);
                credits::forget_database(db);
                return Some((schema, Default::default()));
            }
            Schema::WithoutUsage => {
                usage::forget_database(db);
                Vec::new()
            }
            // SAFETY: assigns this transaction its id, which tags the batch in flight.
            Schema::Current => usage::send(
                db,
                unsafe { pg_sys::GetCurrentTransactionId() }.into_inner(),
                committed,
            ),
        };
        let spending = flush::write(db, &schema, &rows, retention).unwrap_or_else(|e| e.raise());
        Some((schema, spending))
    })
    .catch_others(|error| {
        usage::give_back(db);
        let message = match &error {
            pgrx::pg_sys::panic::CaughtError::PostgresError(report)
            | pgrx::pg_sys::panic::CaughtError::ErrorReport(report)
            | pgrx::pg_sys::panic::CaughtError::RustPanic {
                ereport: report, ..
            } => report.message().to_string(),
        };
        warning!("apikey: flushing usage of database {db} failed, will retry: {message}");
        None
    })
    .execute();
    // SAFETY: ends the transaction started above.
    unsafe {
        if outcome.is_some() {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
    let outcome = outcome.map(|(schema, written)| {
        usage::landed(db);
        for (credit_id, spent) in written.spending {
            credits::written(db, credit_id, spent);
        }
        for (credit_id, shortage) in written.announced {
            credits::announced(db, credit_id, shortage);
        }
        schema
    });
    flush::note_flush(outcome.is_some());
    outcome
}
