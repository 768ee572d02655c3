//! Verification counts (and the credits those verifications spent) per database, key, minute
//! and reason, waiting in shared memory for the background worker to add them to
//! `apikey.usage`. When the table is full, further
//! counts are dropped and counted as dropped (`apikey_status()`), never grown past.
//!
//! While the worker writes a batch, its counts are "in flight", tagged with the worker's
//! transaction id, and stay in shared memory until that transaction has committed: a reader
//! (`apikey_usage()`) adds them unless its snapshot already sees the written rows, so a
//! count is never missing from, nor doubled in, what it reports.

use super::table::TableEntry;
use super::{database, fixed, handles, Stat};
use crate::reason::Reason;
use pgrx::spinlock::PgSpinLock;
use pgrx::PGRXSharedMemory;

const MAX_KEY_ID: usize = 42;

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UsageTag {
    /// The minute, as a `TimestampTz` truncated to whole minutes.
    minute: i64,
    db: u32,
    reason: u8,
    /// 0 for counts without a key (no key, malformed, unknown key id).
    len: u8,
    id: [u8; MAX_KEY_ID],
}

/// Verifications and the credits they spent.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Tally {
    pub verifications: u64,
    pub spent: u64,
}

impl Tally {
    fn is_empty(self) -> bool {
        self.verifications == 0 && self.spent == 0
    }
}

impl std::ops::Add for Tally {
    type Output = Tally;

    fn add(self, other: Tally) -> Tally {
        Tally {
            verifications: self.verifications.saturating_add(other.verifications),
            spent: self.spent.saturating_add(other.spent),
        }
    }
}

#[derive(Clone, Copy, Default, Debug)]
pub struct Count {
    /// Counted and not yet sent to the table.
    pub count: Tally,
    /// Being written by the transaction `flight_xid`.
    pub in_flight: Tally,
    pub flight_xid: u32,
    pub partner: Option<[u8; 16]>,
}

// SAFETY: plain old data.
unsafe impl PGRXSharedMemory for Count {}

#[repr(C)]
pub struct UsageEntry {
    tag: UsageTag,
    count: PgSpinLock<Count>,
}

// SAFETY: repr(C), tag first; UsageTag is 8 + 4 + 1 + 1 + 42 = 56 bytes, a multiple of its
// alignment 8, so it has no padding.
unsafe impl TableEntry for UsageEntry {
    type Tag = UsageTag;

    fn new(tag: UsageTag) -> UsageEntry {
        UsageEntry {
            tag,
            count: PgSpinLock::new(Count::default()),
        }
    }
}

/// One row of counts, as `apikey.usage` holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageRow {
    pub minute: i64,
    pub key_id: Option<String>,
    pub partner: Option<[u8; 16]>,
    pub reason: Reason,
    pub count: Tally,
}

pub const MINUTE: i64 = 60_000_000;

fn tag(db: u32, minute: i64, key_id: Option<&str>, reason: Reason) -> Option<UsageTag> {
    let (len, id) = fixed(key_id.unwrap_or("").as_bytes())?;
    Some(UsageTag {
        minute: minute - minute.rem_euclid(MINUTE),
        db,
        reason: reason.code(),
        len,
        id,
    })
}

/// Counts `by` verifications with `reason` of `key_id` (of `partner`) at `now`.
pub fn count(key_id: Option<&str>, partner: Option<[u8; 16]>, reason: Reason, now: i64, by: Tally) {
    let Some(handles) = handles() else { return };
    let Some(tag) = tag(database(), now, key_id, reason) else {
        return;
    };
    let add = |entry: &UsageEntry| {
        let mut c = entry.count.lock();
        c.count = c.count + by;
        if partner.is_some() {
            c.partner = partner;
        }
    };
    {
        let table = handles.usage.shared();
        if let Some(entry) = table.get(&tag) {
            add(entry);
            return;
        }
    }
    let mut table = handles.usage.exclusive();
    let entry = if table.get(&tag).is_some() || table.len() < crate::guc::max_usage_entries() {
        table.get_or_insert(&tag)
    } else {
        None
    };
    match entry {
        Some(entry) => add(entry),
        None => handles.control.count(Stat::UsageDropped, by.verifications),
    }
}

fn row(entry: &UsageEntry, count: Tally) -> UsageRow {
    let c = *entry.count.lock();
    let t = entry.tag;
    UsageRow {
        minute: t.minute,
        key_id: (t.len > 0)
            .then(|| String::from_utf8_lossy(&t.id[..usize::from(t.len)]).into_owned()),
        partner: c.partner,
        reason: Reason::from_code(t.reason).unwrap_or(Reason::Malformed),
        count,
    }
}

/// The counts of database `db` not yet in the table as a reader sees it: counted ones, and
/// those in flight unless `written` says the reader sees their transaction's rows.
pub fn pending(db: u32, written: impl Fn(u32) -> bool) -> Vec<UsageRow> {
    let Some(handles) = handles() else {
        return Vec::new();
    };
    let table = handles.usage.shared();
    table
        .entries()
        .into_iter()
        .filter(|e| e.tag.db == db)
        .filter_map(|e| {
            let c = *e.count.lock();
            let in_flight = if !c.in_flight.is_empty() && written(c.flight_xid) {
                Tally::default()
            } else {
                c.in_flight
            };
            let count = c.count + in_flight;
            (!count.is_empty()).then(|| row(e, count))
        })
        .collect()
}

/// Marks the counts of database `db` as in flight in transaction `xid` and returns them, for
/// the worker to write. A batch left in flight by a transaction that did not commit (a
/// worker that died) is sent again; one that did commit is dropped.
pub fn send(db: u32, xid: u32, committed: impl Fn(u32) -> bool) -> Vec<UsageRow> {
    let Some(handles) = handles() else {
        return Vec::new();
    };
    let table = handles.usage.exclusive();
    table
        .entries()
        .into_iter()
        .filter(|e| e.tag.db == db)
        .filter_map(|e| {
            let earlier = {
                let c = e.count.lock();
                (!c.in_flight.is_empty()).then_some(c.flight_xid)
            };
            let landed = earlier.is_some_and(&committed);
            let mut c = e.count.lock();
            let carried = if landed {
                Tally::default()
            } else {
                c.in_flight
            };
            c.in_flight = carried + c.count;
            c.count = Tally::default();
            c.flight_xid = xid;
            let count = c.in_flight;
            drop(c);
            (!count.is_empty()).then(|| row(e, count))
        })
        .collect()
}

/// After the worker's transaction committed: its batch is in the table now.
pub fn landed(db: u32) {
    settle(db, |c| c.in_flight = Tally::default());
}

/// After the worker's transaction failed: its batch is counted again, for the next try.
pub fn give_back(db: u32) {
    settle(db, |c| {
        c.count = c.count + c.in_flight;
        c.in_flight = Tally::default();
    });
}

fn settle(db: u32, change: impl Fn(&mut Count)) {
    let Some(handles) = handles() else { return };
    let mut table = handles.usage.exclusive();
    let empty: Vec<UsageTag> = table
        .entries()
        .into_iter()
        .filter(|e| e.tag.db == db)
        .filter_map(|e| {
            let mut c = e.count.lock();
            change(&mut c);
            (c.count.is_empty() && c.in_flight.is_empty()).then_some(e.tag)
        })
        .collect();
    for tag in &empty {
        table.remove(tag);
    }
}

/// Every count not yet written, in flight or not, in every database (at shutdown, when no
/// worker runs).
pub fn pending_everywhere() -> Vec<(u32, UsageRow)> {
    let Some(handles) = handles() else {
        return Vec::new();
    };
    let table = handles.usage.shared();
    table
        .entries()
        .into_iter()
        .filter_map(|e| {
            let c = *e.count.lock();
            let count = c.count + c.in_flight;
            (!count.is_empty()).then(|| (e.tag.db, row(e, count)))
        })
        .collect()
}

/// Adds counts brought back by a restart (see `persist`).
pub fn restore(db: u32, rows: &[UsageRow]) {
    let Some(handles) = handles() else { return };
    let mut table = handles.usage.exclusive();
    for r in rows {
        let Some(tag) = tag(db, r.minute, r.key_id.as_deref(), r.reason) else {
            continue;
        };
        let entry = if table.get(&tag).is_some() || table.len() < crate::guc::max_usage_entries() {
            table.get_or_insert(&tag)
        } else {
            None
        };
        match entry {
            Some(entry) => {
                let mut c = entry.count.lock();
                c.count = c.count + r.count;
                c.partner = c.partner.or(r.partner);
            }
            None => handles
                .control
                .count(Stat::UsageDropped, r.count.verifications),
        }
    }
}

/// The databases with counts waiting.
pub fn databases() -> Vec<u32> {
    let Some(handles) = handles() else {
        return Vec::new();
    };
    let table = handles.usage.shared();
    let mut dbs: Vec<u32> = table.entries().into_iter().map(|e| e.tag.db).collect();
    dbs.sort_unstable();
    dbs.dedup();
    dbs
}

/// Drops the counts of database `db` (dropped, or without a usage table).
pub fn forget_database(db: u32) {
    let Some(handles) = handles() else { return };
    let mut table = handles.usage.exclusive();
    let entries: Vec<(UsageTag, u64)> = table
        .entries()
        .into_iter()
        .filter(|e| e.tag.db == db)
        .map(|e| {
            let c = e.count.lock();
            (e.tag, (c.count + c.in_flight).verifications)
        })
        .collect();
    for (tag, _) in &entries {
        table.remove(tag);
    }
    let dropped = entries.iter().map(|(_, n)| n).sum();
    handles.control.count(Stat::UsageDropped, dropped);
}
