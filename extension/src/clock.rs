//! The one rule for time: every decision about a key's state (revoked, expired, not yet
//! valid, in its grace period) is taken against the time of the call, `clock_timestamp()`,
//! never against `now()`, the start of the caller's transaction. A transaction that began
//! before a revocation committed must not go on seeing the key as live, and a revoke that
//! waited for another one must see that the key is already revoked.

use pgrx::pg_sys;

/// The current time, as `clock_timestamp()` gives it.
pub fn now() -> pg_sys::TimestampTz {
    // SAFETY: reads the system clock; no backend state involved.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_IN_UNIX_SECONDS: i64 = 946_684_800;

/// [`now`] in whole seconds since the Unix epoch, as webhook timestamps count.
pub fn unix_seconds() -> i64 {
    now() / 1_000_000 + POSTGRES_EPOCH_IN_UNIX_SECONDS
}
