//! Per key, in shared memory: the proof that a digest matches its stored hash, its rate-limit
//! bucket, when it was last used (for the background worker to write `last_used_at`), and
//! whether an Argon2id verification of it is running. Entries are tagged with the database,
//! since two databases may hold the same key id. When the table is full, a twentieth of it is
//! evicted, taken first from partners holding more than an equal share, and logged: an
//! evicted key only pays Argon2id again, restarts its bucket full and may lose a minute of
//! `last_used_at`.

use super::table::{Locked, TableEntry};
use super::{database, fixed, handles, Handles, Stat};
use crate::hash::{self, Digest};
use pgrx::spinlock::PgSpinLock;
use pgrx::PGRXSharedMemory;

/// Longest key id a tag holds: a 16-character prefix, `_live_`, 16 characters.
pub const MAX_KEY_ID: usize = 39;

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyTag {
    db: u32,
    len: u8,
    id: [u8; MAX_KEY_ID],
}

impl KeyTag {
    pub fn new(db: u32, key_id: &str) -> Option<KeyTag> {
        let (len, id) = fixed(key_id.as_bytes())?;
        Some(KeyTag { db, len, id })
    }

    pub fn key_id(&self) -> String {
        String::from_utf8_lossy(&self.id[..usize::from(self.len)]).into_owned()
    }
}

/// What the server knows of one key between verifications. Plain data behind a spinlock:
/// every update is a few instructions.
#[derive(Clone, Copy, Default, Debug)]
pub struct KeyState {
    /// SHA-256 of the stored hash (PHC string) that `proof` was shown to match.
    pub proof_of: [u8; 32],
    /// HMAC-SHA256(pepper, secret) proven to match that hash.
    pub proof: [u8; 32],
    pub proven: bool,
    /// Token bucket: verifications left, as of `refilled_at` (a `TimestampTz`).
    pub tokens: f64,
    pub refilled_at: i64,
    /// Last successful verification, and the value last written to `last_used_at`.
    pub last_used: i64,
    pub written_used: i64,
    /// An Argon2id verification of this key is running in some backend, of this digest.
    pub hashing: bool,
    pub hashing_digest: [u8; 32],
    /// Backends waiting to run Argon2id of this key with a digest other than the running one
    /// (each a guess Argon2id must refute on its own): bounded, see `argon2`.
    pub waiting_others: u32,
    /// The last digest Argon2id refuted against the stored hash fingerprinted `refuted_of`:
    /// asked again (a client's retry, an attacker repeating one guess), it is refused without
    /// Argon2id.
    pub refuted: [u8; 32],
    pub refuted_of: [u8; 32],
    pub has_refuted: bool,
    /// Failed Argon2id verifications in minute `failure_minute` (marks a key under attack).
    pub failures: u32,
    pub failure_minute: i64,
    /// Last time any backend used the entry, for eviction.
    pub touched: i64,
    /// The key's partner, noted by every verification that takes from its bucket (zero
    /// before the first): eviction takes from partners holding more than their share first.
    pub partner: [u8; 16],
}

// SAFETY: plain old data, no pointers.
unsafe impl PGRXSharedMemory for KeyState {}

#[repr(C)]
pub struct KeyEntry {
    tag: KeyTag,
    pub state: PgSpinLock<KeyState>,
}

// SAFETY: repr(C) with the tag first; KeyTag is 4 + 1 + 39 = 44 bytes with alignment 4,
// so it has no padding.
unsafe impl TableEntry for KeyEntry {
    type Tag = KeyTag;

    fn new(tag: KeyTag) -> KeyEntry {
        KeyEntry {
            tag,
            state: PgSpinLock::new(KeyState::default()),
        }
    }
}

/// The Argon2id gate, in `Control`: how many verifications run, how many of those are for
/// keys under attack, and what is left of the budget of such verifications per second.
#[derive(Clone, Copy, Default, Debug)]
pub struct Gate {
    pub running: u32,
    pub running_suspect: u32,
    pub suspect_budget: f64,
    pub suspect_budget_at: i64,
}

// SAFETY: plain old data.
unsafe impl PGRXSharedMemory for Gate {}

/// Runs `f` on the state of `key_id` in this database, creating the entry if needed.
/// `None` without shared memory (or for a key id too long to be one).
pub fn with_key<R>(key_id: &str, now: i64, f: impl FnOnce(&mut KeyState) -> R) -> Option<R> {
    with_key_in(database(), key_id, now, f)
}

/// [`with_key`] for database `db`.
fn with_key_in<R>(
    db: u32,
    key_id: &str,
    now: i64,
    f: impl FnOnce(&mut KeyState) -> R,
) -> Option<R> {
    let handles = handles()?;
    let tag = KeyTag::new(db, key_id)?;
    {
        let table = handles.keys.shared();
        if let Some(entry) = table.get(&tag) {
            return Some(update(entry, now, f));
        }
    }
    let mut table = handles.keys.exclusive();
    let evicted = if table.get(&tag).is_none() && table.len() >= crate::guc::max_keys() {
        evict_oldest(handles, &mut table)
    } else {
        0
    };
    let entry = table.get_or_insert(&tag)?;
    let result = update(entry, now, f);
    drop(table);
    if evicted > 0 {
        // Logged after the lock is released: writing the log must not stall verifications.
        pgrx::log!(
            "apikey: the shared key table is full (apikey.max_keys = {}): evicted the {evicted} \
             least recently used keys, which pay Argon2id again and start with a full rate \
             bucket; raise apikey.max_keys if this repeats",
            crate::guc::max_keys()
        );
    }
    Some(result)
}

fn update<R>(entry: &KeyEntry, now: i64, f: impl FnOnce(&mut KeyState) -> R) -> R {
    let mut state = entry.state.lock();
    state.touched = now;
    f(&mut state)
}

/// Removes a twentieth of the table (at least one entry), chosen by [`eviction_order`].
/// Returns how many it removed.
fn evict_oldest(handles: &Handles, table: &mut Locked<'_, KeyEntry>) -> usize {
    let (tags, candidates): (Vec<KeyTag>, Vec<Candidate>) = table
        .entries()
        .into_iter()
        .map(|e| {
            let state = e.state.lock();
            let candidate = Candidate {
                partner: state.partner,
                unwritten: state.last_used > state.written_used,
                touched: state.touched,
            };
            (e.tag, candidate)
        })
        .unzip();
    let victims = (tags.len() / 20).max(1);
    for index in eviction_order(&candidates).into_iter().take(victims) {
        table.remove(&tags[index]);
    }
    handles.control.count(Stat::KeysEvicted, victims as u64);
    victims
}

/// What eviction weighs of an entry.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    partner: [u8; 16],
    unwritten: bool,
    touched: i64,
}

/// The entries in the order eviction takes them: first those of partners holding more than
/// an equal share of the table (so no partner's keys, however many, push out the keys of
/// one within its share), then those whose last use is already written (so `last_used_at`
/// is lost only when nothing else can go), each group least recently used first.
fn eviction_order(candidates: &[Candidate]) -> Vec<usize> {
    let mut held: std::collections::HashMap<[u8; 16], usize> = std::collections::HashMap::new();
    for c in candidates {
        *held.entry(c.partner).or_default() += 1;
    }
    let share = candidates.len() / held.len().max(1);
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|&i| {
        let c = &candidates[i];
        (held[&c.partner] <= share, c.unwritten, c.touched)
    });
    order
}

/// Records a use of `key_id` at `at` in database `db` (what a restart brings back; a
/// verification notes its use in [`take`]).
pub fn used_in(db: u32, key_id: &str, at: i64) {
    with_key_in(db, key_id, at, |state| {
        state.last_used = state.last_used.max(at);
    });
}

/// What `pick` takes from each key's entry, in every database, read under the table's
/// shared lock. Empty without shared memory.
fn collect<T>(mut pick: impl FnMut(&KeyTag, KeyState) -> Option<T>) -> Vec<T> {
    let Some(handles) = handles() else {
        return Vec::new();
    };
    let table = handles.keys.shared();
    table
        .entries()
        .into_iter()
        .filter_map(|e| pick(&e.tag, *e.state.lock()))
        .collect()
}

/// Every use not yet written, in every database: `(db, key id, last used)`.
pub fn unwritten_uses_everywhere() -> Vec<(u32, String, i64)> {
    collect(|tag, state| {
        (state.last_used > state.written_used).then(|| (tag.db, tag.key_id(), state.last_used))
    })
}

/// Every proof, in every database: `(db, key id, when last touched, stored-hash fingerprint,
/// proven digest)`, what a clean shutdown saves.
pub fn proofs_everywhere() -> Vec<(u32, String, i64, Digest, Digest)> {
    collect(|tag, state| {
        state.proven.then(|| {
            (
                tag.db,
                tag.key_id(),
                state.touched,
                state.proof_of,
                state.proof,
            )
        })
    })
}

/// Brings back a proof the last clean shutdown saved. It proves what it proved before: a
/// digest matching the stored hash fingerprinted `stored`, and nothing once that hash
/// changes.
pub fn proven_in(db: u32, key_id: &str, touched: i64, stored: &Digest, digest: &Digest) {
    with_key_in(db, key_id, touched, |state| {
        state.proof_of = *stored;
        state.proof = *digest;
        state.proven = true;
    });
}

/// A minute, in `TimestampTz` units.
pub const MINUTE: i64 = 60_000_000;

/// What the shared proof of a key says about a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// The digest was shown to match this very stored hash.
    Matches,
    /// A different digest was shown to match it, or this one was refuted: a wrong secret.
    Differs,
    /// No proof for this stored hash yet: only Argon2id can tell.
    Unknown,
}

/// Checks `digest` against the shared proof of `key_id` for the stored hash whose
/// fingerprint is `stored`. `None` without shared memory.
pub fn proof(key_id: &str, stored: &Digest, digest: &Digest, now: i64) -> Option<Proof> {
    with_key(key_id, now, |state| {
        if state.has_refuted
            && state.refuted_of == *stored
            && hash::digests_equal(&state.refuted, digest)
        {
            Proof::Differs
        } else if !state.proven || state.proof_of != *stored {
            Proof::Unknown
        } else if hash::digests_equal(&state.proof, digest) {
            Proof::Matches
        } else {
            Proof::Differs
        }
    })
}

/// Remembers that `digest` matches the stored hash fingerprinted `stored`.
pub fn prove(key_id: &str, stored: &Digest, digest: &Digest, now: i64) {
    with_key(key_id, now, |state| {
        state.proof_of = *stored;
        state.proof = *digest;
        state.proven = true;
    });
}

/// Failed Argon2id verifications of one key in one minute after which it counts as under
/// attack, and gets only part of the server's Argon2id capacity (`argon2`).
pub const SUSPECT_AFTER: u32 = 3;

/// Notes a failed Argon2id verification of `key_id`: `digest` does not match the stored hash
/// fingerprinted `stored`.
pub fn failed(key_id: &str, stored: &Digest, digest: &Digest, now: i64) {
    let minute = now - now.rem_euclid(MINUTE);
    with_key(key_id, now, |state| {
        state.refuted = *digest;
        state.refuted_of = *stored;
        state.has_refuted = true;
        if state.failure_minute != minute {
            state.failure_minute = minute;
            state.failures = 0;
        }
        state.failures = state.failures.saturating_add(1);
    });
}

/// Whether `key_id` failed Argon2id often this minute.
pub fn suspect(key_id: &str, now: i64) -> bool {
    let minute = now - now.rem_euclid(MINUTE);
    with_key(key_id, now, |state| {
        state.failure_minute == minute && state.failures >= SUSPECT_AFTER
    })
    .unwrap_or(false)
}

/// Where a key stands against its rate limit after one more verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub allowed: bool,
    /// Verifications left now.
    pub remaining: i32,
    /// Refused: seconds until one is allowed again; allowed: until the full allowance is back.
    pub reset_seconds: i32,
}

impl Rate {
    /// A refusal that asks to come back in a second.
    pub const RETRY_IN_A_SECOND: Rate = Rate {
        allowed: false,
        remaining: 0,
        reset_seconds: 1,
    };
}

/// Takes one verification of `key_id` (of `partner`) from the bucket of `bucket_of` (the key itself, or for
/// a key in its grace period its successor, so a rotation family shares one limit):
/// `rate_per_minute` tokens, refilled continuously, so a key may burst one minute's
/// allowance. An allowed one is `key_id`'s last use (for `last_used_at`). `None` without
/// shared memory.
pub fn take(
    key_id: &str,
    partner: &[u8; 16],
    bucket_of: &str,
    rate_per_minute: i32,
    now: i64,
) -> Option<Rate> {
    let own = key_id == bucket_of;
    let rate = with_key(bucket_of, now, |state| {
        state.partner = *partner;
        let (tokens, rate) = bucket::take(state.tokens, state.refilled_at, rate_per_minute, now);
        state.tokens = tokens;
        state.refilled_at = now;
        if rate.allowed && own {
            state.last_used = state.last_used.max(now);
        }
        rate
    })?;
    if rate.allowed && !own {
        with_key(key_id, now, |state| {
            state.partner = *partner;
            state.last_used = state.last_used.max(now);
        });
    }
    Some(rate)
}

/// Gives back the verification [`take`] took from the bucket of `bucket_of` for one that
/// was refused after all (its balance was short).
pub fn give_back(bucket_of: &str, now: i64) {
    with_key(bucket_of, now, |state| state.tokens += 1.0);
}

/// The name a partner's shared bucket has in the key table: no key id starts with `#`, and
/// entries under it never hold a proof or a use, so nothing else reads them.
fn partner_bucket(partner: &[u8; 16]) -> String {
    format!("#{}", hash::to_hex(partner))
}

/// Takes one verification from the bucket that every key of `partner` shares.
pub fn take_partner(partner: &[u8; 16], rate_per_minute: i32, now: i64) -> Option<Rate> {
    with_key(&partner_bucket(partner), now, |state| {
        state.partner = *partner;
        let (tokens, rate) = bucket::take(state.tokens, state.refilled_at, rate_per_minute, now);
        state.tokens = tokens;
        state.refilled_at = now;
        rate
    })
}

/// Gives back what [`take_partner`] took, for a verification refused after all.
pub fn give_back_partner(partner: &[u8; 16], now: i64) {
    give_back(&partner_bucket(partner), now);
}

/// Where `key_id` stands now, without taking anything: `None` without shared memory.
pub fn peek(key_id: &str, rate_per_minute: i32, now: i64) -> Option<Rate> {
    let handles = handles()?;
    let tag = KeyTag::new(database(), key_id)?;
    let table = handles.keys.shared();
    let (tokens, refilled_at) = match table.get(&tag) {
        Some(entry) => {
            let state = entry.state.lock();
            (state.tokens, state.refilled_at)
        }
        None => (0.0, 0),
    };
    Some(bucket::peek(tokens, refilled_at, rate_per_minute, now))
}

/// The token bucket, as pure arithmetic.
pub mod bucket {
    use super::Rate;

    const SECOND: f64 = 1_000_000.0;

    /// Tokens in the bucket at `now`, its capacity, and the refill per second. A bucket never
    /// filled (`refilled_at` 0) is full.
    fn level(tokens: f64, refilled_at: i64, rate_per_minute: i32, now: i64) -> (f64, f64, f64) {
        let capacity = f64::from(rate_per_minute.max(1));
        let per_second = capacity / 60.0;
        let elapsed = if refilled_at == 0 {
            f64::INFINITY
        } else {
            (now - refilled_at).max(0) as f64 / SECOND
        };
        (
            (tokens + elapsed * per_second).min(capacity),
            capacity,
            per_second,
        )
    }

    /// Whole seconds to refill `missing` tokens at `per_second`.
    fn seconds_for(missing: f64, per_second: f64) -> i32 {
        (missing / per_second).ceil().clamp(0.0, i32::MAX as f64) as i32
    }

    /// What the bucket says at `now`, taking nothing.
    pub fn peek(tokens: f64, refilled_at: i64, rate_per_minute: i32, now: i64) -> Rate {
        let (available, capacity, per_second) = level(tokens, refilled_at, rate_per_minute, now);
        Rate {
            allowed: available >= 1.0,
            remaining: available.floor() as i32,
            reset_seconds: seconds_for(capacity - available, per_second),
        }
    }

    /// The bucket after one more verification at `now`, and what it says.
    pub fn take(tokens: f64, refilled_at: i64, rate_per_minute: i32, now: i64) -> (f64, Rate) {
        let (available, capacity, per_second) = level(tokens, refilled_at, rate_per_minute, now);
        let seconds = |missing: f64| seconds_for(missing, per_second);
        if available >= 1.0 {
            let left = available - 1.0;
            let rate = Rate {
                allowed: true,
                remaining: left.floor() as i32,
                reset_seconds: seconds(capacity - left),
            };
            (left, rate)
        } else {
            let rate = Rate {
                allowed: false,
                remaining: 0,
                reset_seconds: seconds(1.0 - available).max(1),
            };
            (available, rate)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const S: i64 = 1_000_000;

        #[test]
        fn a_full_minute_then_refusal_then_refill() {
            let (mut tokens, mut at) = (0.0, 0);
            let now = 1_000 * S;
            for i in 0..60 {
                let (t, rate) = take(tokens, at, 60, now);
                assert!(rate.allowed, "burst {i}");
                assert_eq!(rate.remaining, 59 - i);
                (tokens, at) = (t, now);
            }
            let (t, rate) = take(tokens, at, 60, now);
            assert!(!rate.allowed);
            assert_eq!((rate.remaining, rate.reset_seconds), (0, 1));
            (tokens, at) = (t, now);
            // One a second comes back at 60 per minute.
            let (t, rate) = take(tokens, at, 60, now + S);
            assert!(rate.allowed);
            assert_eq!(rate.remaining, 0);
            assert_eq!(
                rate.reset_seconds, 60,
                "a full minute until all 60 are back"
            );
            let (_, rate) = take(t, now + S, 60, now + S + S / 2);
            assert!(!rate.allowed);
            assert_eq!(rate.reset_seconds, 1);
        }

        #[test]
        fn the_bucket_never_holds_more_than_a_minute() {
            let (tokens, rate) = take(5.0, 1, 300, 3_600 * S);
            assert!(rate.allowed);
            assert_eq!(tokens, 299.0);
            assert_eq!(rate.reset_seconds, 1);
            // A lowered rate clamps what is left.
            let (tokens, _) = take(299.0, 3_600 * S, 10, 3_600 * S);
            assert_eq!(tokens, 9.0);
        }

        #[test]
        fn peeking_takes_nothing() {
            let rate = peek(0.0, 0, 60, 10 * S);
            assert_eq!(
                (rate.allowed, rate.remaining, rate.reset_seconds),
                (true, 60, 0)
            );
            let rate = peek(30.0, 10 * S, 60, 10 * S);
            assert_eq!((rate.remaining, rate.reset_seconds), (30, 30));
            assert_eq!(peek(0.5, 10 * S, 60, 10 * S).allowed, false);
        }

        #[test]
        fn a_slow_rate_refuses_for_seconds() {
            let (tokens, _) = take(0.0, 0, 1, 10 * S);
            assert_eq!(tokens, 0.0);
            let (_, rate) = take(tokens, 10 * S, 1, 40 * S);
            assert!(!rate.allowed);
            assert_eq!(rate.reset_seconds, 30);
        }
    }
}

/// Keys of database `db` whose `last_used_at` is due to be written: used since it was last
/// written, and at least a minute later than that (so a busy key is written once a minute).
pub fn unwritten_uses(db: u32) -> Vec<(String, i64)> {
    collect(|tag, state| {
        let due = tag.db == db
            && state.last_used > 0
            && (state.written_used == 0 || state.last_used >= state.written_used + MINUTE);
        due.then(|| (tag.key_id(), state.last_used))
    })
}

/// Notes that `last_used_at` of `key_id` in `db` now holds `at`.
pub fn written(db: u32, key_id: &str, at: i64) {
    let (Some(handles), Some(tag)) = (handles(), KeyTag::new(db, key_id)) else {
        return;
    };
    let table = handles.keys.shared();
    if let Some(entry) = table.get(&tag) {
        let mut state = entry.state.lock();
        state.written_used = state.written_used.max(at);
    }
}

/// The databases that have keys with unwritten uses.
pub fn databases_with_uses() -> Vec<u32> {
    let mut dbs = collect(|tag, state| (state.last_used > state.written_used).then_some(tag.db));
    dbs.sort_unstable();
    dbs.dedup();
    dbs
}

/// Drops every entry of database `db` (dropped, or without the extension).
pub fn forget_database(db: u32) {
    let Some(handles) = handles() else {
        return;
    };
    handles.keys.exclusive().remove_where(|tag| tag.db == db);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(partner: u8, unwritten: bool, touched: i64) -> Candidate {
        Candidate {
            partner: [partner; 16],
            unwritten,
            touched,
        }
    }

    #[test]
    fn a_partner_over_its_share_is_evicted_before_others_however_recent() {
        // Partner 1 holds 6 of 8 entries (share: 4), all used more recently than 2's and 3's.
        let mut entries: Vec<Candidate> = (0..6).map(|i| entry(1, false, 100 + i)).collect();
        entries.push(entry(2, false, 1));
        entries.push(entry(3, false, 2));
        let order = eviction_order(&entries);
        assert_eq!(
            &order[..6],
            &[0, 1, 2, 3, 4, 5],
            "partner 1's, oldest first"
        );
        assert_eq!(&order[6..], &[6, 7]);
    }

    #[test]
    fn within_a_share_written_uses_go_first_then_the_least_recently_used() {
        let entries = [
            entry(1, true, 1),
            entry(2, false, 5),
            entry(1, false, 9),
            entry(2, true, 0),
        ];
        assert_eq!(eviction_order(&entries), [1, 2, 3, 0]);
        assert!(eviction_order(&[]).is_empty());
    }
}
