//! Verification counts per database, key, minute and reason, waiting in shared memory for
//! the background worker to add them to `apikey.usage`. When the table is full, further
//! counts are dropped and counted as dropped (`apikey_status()`), never grown past.

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

#[derive(Clone, Copy, Default, Debug)]
pub struct Count {
    pub count: u64,
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
    pub count: u64,
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
pub fn count(key_id: Option<&str>, partner: Option<[u8; 16]>, reason: Reason, now: i64, by: u64) {
    let Some(handles) = handles() else { return };
    let Some(tag) = tag(database(), now, key_id, reason) else {
        return;
    };
    let add = |entry: &UsageEntry| {
        let mut c = entry.count.lock();
        c.count += by;
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
        None => handles.control.count(Stat::UsageDropped, by),
    }
}

fn row(entry: &UsageEntry) -> UsageRow {
    let c = *entry.count.lock();
    let t = entry.tag;
    UsageRow {
        minute: t.minute,
        key_id: (t.len > 0)
            .then(|| String::from_utf8_lossy(&t.id[..usize::from(t.len)]).into_owned()),
        partner: c.partner,
        reason: Reason::from_code(t.reason).unwrap_or(Reason::Malformed),
        count: c.count,
    }
}

/// Every count not yet written, in every database.
pub fn pending_everywhere() -> Vec<(u32, UsageRow)> {
    let Some(handles) = handles() else {
        return Vec::new();
    };
    let table = handles.usage.shared();
    table
        .entries()
        .into_iter()
        .map(|e| (e.tag.db, row(e)))
        .collect()
}

/// The counts of database `db` not yet written, without removing them.
pub fn pending(db: u32) -> Vec<UsageRow> {
    let Some(handles) = handles() else {
        return Vec::new();
    };
    let table = handles.usage.shared();
    table
        .entries()
        .into_iter()
        .filter(|e| e.tag.db == db)
        .map(row)
        .collect()
}

/// Removes and returns the counts of database `db`, for the worker to write; a failed write
/// gives them back with [`give_back`].
pub fn take(db: u32) -> Vec<UsageRow> {
    let Some(handles) = handles() else {
        return Vec::new();
    };
    let mut table = handles.usage.exclusive();
    let entries: Vec<(UsageTag, UsageRow)> = table
        .entries()
        .into_iter()
        .filter(|e| e.tag.db == db)
        .map(|e| (e.tag, row(e)))
        .collect();
    for (tag, _) in &entries {
        table.remove(tag);
    }
    entries.into_iter().map(|(_, row)| row).collect()
}

/// Puts counts back that could not be written.
pub fn give_back(db: u32, rows: &[UsageRow]) {
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
                c.count += r.count;
                c.partner = c.partner.or(r.partner);
            }
            None => handles.control.count(Stat::UsageDropped, r.count),
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
    let dropped: u64 = take(db).iter().map(|r| r.count).sum();
    if let Some(handles) = handles() {
        handles.control.count(Stat::UsageDropped, dropped);
    }
}
