//! The two rate buckets the last `apikey_verify` of this session took from. `apikey_verify`
//! reports the tighter of a key's bucket and its partner's in one pair of columns (the
//! contract's); the shim lists each as its own RateLimit policy, so it asks, in the same
//! statement, `apikey_last_rates(v.key_id)`. Kept in backend memory: it describes only what
//! this session was just told, and costs a verification nothing but a copy.

use crate::verify::Buckets;
use pgrx::prelude::*;
use std::cell::RefCell;

struct Last {
    /// Empty when the last verification identified no key.
    key_id: String,
    buckets: Buckets,
    partner_rate_per_minute: Option<i32>,
}

thread_local! {
    static LAST: RefCell<Last> = const {
        RefCell::new(Last {
            key_id: String::new(),
            buckets: Buckets { key: None, partner: None },
            partner_rate_per_minute: None,
        })
    };
}

/// Remembers the buckets of a verification of `key_id` (the allocation is reused).
pub fn record(key_id: &str, buckets: Buckets, partner_rate_per_minute: Option<i32>) {
    LAST.with_borrow_mut(|last| {
        last.key_id.clear();
        last.key_id.push_str(key_id);
        last.buckets = buckets;
        last.partner_rate_per_minute = partner_rate_per_minute;
    });
}

/// A verification that identified no key (or showed none authentic) leaves nothing to ask.
pub fn clear() {
    LAST.with_borrow_mut(|last| last.key_id.clear());
}

/// `apikey_last_rates(key_id)`: NULL unless this session's last `apikey_verify` verified
/// `key_id` and took from its partner's bucket; then `{key_remaining, key_reset_seconds,
/// partner_rate_per_minute, partner_remaining, partner_reset_seconds}`, each bucket as that
/// verification left it. An array rather than a row: a set-returning function costs the
/// call several times more than a scalar one, and the shim makes it with every verification.
#[pg_extern(volatile, parallel_restricted)]
fn apikey_last_rates(key_id: Option<&str>) -> Option<Vec<Option<i32>>> {
    let key_id = key_id.filter(|k| !k.is_empty())?;
    LAST.with_borrow(|last| {
        if last.key_id != key_id {
            return None;
        }
        let partner = last.buckets.partner?;
        let key = last.buckets.key;
        Some(vec![
            key.map(|k| k.remaining),
            key.map(|k| k.reset_seconds),
            last.partner_rate_per_minute,
            Some(partner.remaining),
            Some(partner.reset_seconds),
        ])
    })
}
