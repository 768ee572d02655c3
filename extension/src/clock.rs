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
