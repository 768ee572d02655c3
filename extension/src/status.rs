//! `apikey_status()`: which of the server-wide features run, how full shared memory is, and
//! what it has counted. The shim's `/metrics` exposes the same figures.

use crate::guc;
use crate::shared::{self, Stat};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::sync::atomic::Ordering;

fn as_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[allow(clippy::type_complexity)] // pgrx needs the result columns spelled out here
#[pg_extern(volatile, parallel_safe)]
fn apikey_status() -> TableIterator<
    'static,
    (
        name!(shared_memory, bool),
        name!(note, Option<String>),
        name!(keys_in_use, Option<i64>),
        name!(keys_capacity, Option<i64>),
        name!(usage_entries, Option<i64>),
        name!(usage_capacity, Option<i64>),
        name!(proof_hits, Option<i64>),
        name!(proof_misses, Option<i64>),
        name!(argon2_verified, Option<i64>),
        name!(argon2_failed, Option<i64>),
        name!(argon2_waits, Option<i64>),
        name!(argon2_running, Option<i32>),
        name!(argon2_max_concurrency, i32),
        name!(rate_limited, Option<i64>),
        name!(usage_dropped, Option<i64>),
        name!(audit_suppressed, Option<i64>),
        name!(keys_evicted, Option<i64>),
        name!(flushes, Option<i64>),
        name!(flush_failures, Option<i64>),
        name!(last_flush, Option<TimestampWithTimeZone>),
        // Last, so that a database still at 0.4.0 (whose definition lacks it) reads every
        // other column where it was.
        name!(argon2_refused, Option<i64>),
    ),
> {
    let max_concurrency = i32::try_from(guc::argon2_max_concurrency()).unwrap_or(i32::MAX);
    let Some(h) = shared::handles() else {
        return TableIterator::once((
            false,
            Some(
                "apikey is not in shared_preload_libraries: proofs are per connection, rate \
                 limits are not enforced, usage and last_used_at are not recorded, and every \
                 failed verification is audited"
                    .to_string(),
            ),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            max_concurrency,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ));
    };
    let stat = |s: Stat| Some(as_i64(h.control.get(s)));
    let last_flush = match h.control.last_flush.load(Ordering::Relaxed) {
        0 => None,
        at => TimestampWithTimeZone::try_from(at).ok(),
    };
    let running = h.control.gate.lock().running;
    TableIterator::once((
        true,
        None,
        Some(as_i64(h.keys.shared().len())),
        Some(as_i64(guc::max_keys())),
        Some(as_i64(h.usage.shared().len())),
        Some(as_i64(guc::max_usage_entries())),
        stat(Stat::ProofHits),
        stat(Stat::ProofMisses),
        stat(Stat::Argon2Verified),
        stat(Stat::Argon2Failed),
        stat(Stat::Argon2Waits),
        Some(i32::try_from(running).unwrap_or(i32::MAX)),
        max_concurrency,
        stat(Stat::RateLimited),
        stat(Stat::UsageDropped),
        stat(Stat::AuditSuppressed),
        stat(Stat::KeysEvicted),
        stat(Stat::Flushes),
        stat(Stat::FlushFailures),
        last_flush,
        stat(Stat::Argon2Refused),
    ))
}
