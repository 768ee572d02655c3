//! Which failures were already audited this minute. A failed verification writes an audit
//! row only for the first failure of its kind in its minute: per existing key and reason, or,
//! when the token names no existing key, per sender network (the client's /24 or /64) and
//! reason. A flood of forged tokens thus writes at most one row per network and minute, and
//! the networks of one minute may take only half the table, so no flood of them can crowd
//! out the marks of real keys: a failure against an existing key is always audited.

use super::table::TableEntry;
use super::{database, fixed, handles, Stat};
use crate::reason::Reason;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

const MAX_SUBJECT: usize = 41;

/// Whom a failure is about.
pub enum Subject<'a> {
    Key(&'a str),
    /// The client's sender network (`NetAddr::sender_network`) as bytes, or none.
    Network(Option<&'a [u8]>),
}

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MarkTag {
    minute: i64,
    db: u32,
    reason: u8,
    /// 1: a key id; 2: a sender network.
    kind: u8,
    len: u8,
    subject: [u8; MAX_SUBJECT],
}

#[repr(C)]
pub struct MarkEntry {
    tag: MarkTag,
}

// SAFETY: repr(C), tag first; MarkTag is 8 + 4 + 1 + 1 + 1 + 41 = 56 bytes, a multiple of its
// alignment 8, so it has no padding.
unsafe impl TableEntry for MarkEntry {
    type Tag = MarkTag;

    fn new(tag: MarkTag) -> MarkEntry {
        MarkEntry { tag }
    }
}

const MINUTE: i64 = 60_000_000;

/// Sender networks of the current minute hold at most this share of the table.
const NETWORK_SHARE_DIVISOR: usize = 2;

/// How many marks of sender networks the current minute has, kept in `Control` and changed
/// only under the marks table's exclusive lock.
#[derive(Default)]
#[repr(C)]
pub struct NetworkShare {
    minute: AtomicI64,
    used: AtomicUsize,
}

impl NetworkShare {
    /// Takes one place for a network's mark in `minute`, if this minute has one left.
    fn take(&self, minute: i64, capacity: usize) -> bool {
        if self.minute.load(Ordering::Relaxed) < minute {
            self.minute.store(minute, Ordering::Relaxed);
            self.used.store(0, Ordering::Relaxed);
        }
        let used = self.used.load(Ordering::Relaxed);
        let room = used < capacity / NETWORK_SHARE_DIVISOR;
        if room {
            self.used.store(used + 1, Ordering::Relaxed);
        }
        room
    }
}

/// Whether this failure should write its audit row: the first of its kind this minute.
/// Without shared memory every failure is audited. A failure against an existing key is
/// audited even when the table has no room for its mark (that takes more distinct keys
/// failing in one minute than half the table); one from an unknown key whose network finds
/// no room is not, and is counted as suppressed: the audit log must not be what a flood
/// fills.
pub fn first_this_minute(subject: Subject<'_>, reason: Reason, now: i64) -> bool {
    let Some(handles) = handles() else {
        return true;
    };
    let (kind, bytes) = match subject {
        Subject::Key(key_id) => (1, key_id.as_bytes()),
        Subject::Network(network) => (2, network.unwrap_or(&[])),
    };
    let Some((len, subject)) = fixed(bytes) else {
        return true;
    };
    let minute = now - now.rem_euclid(MINUTE);
    let tag = MarkTag {
        minute,
        db: database(),
        reason: reason.code(),
        kind,
        len,
        subject,
    };
    if handles.marks.shared().get(&tag).is_some() {
        return false;
    }
    let mut table = handles.marks.exclusive();
    if table.get(&tag).is_some() {
        return false;
    }
    let capacity = crate::guc::max_usage_entries();
    if kind == 2 && !handles.control.network_marks.take(minute, capacity) {
        handles.control.count(Stat::AuditSuppressed, 1);
        return false;
    }
    if table.len() >= capacity {
        let old: Vec<MarkTag> = table
            .entries()
            .into_iter()
            .filter(|e| e.tag.minute < minute)
            .map(|e| e.tag)
            .collect();
        for tag in &old {
            table.remove(tag);
        }
    }
    let marked = table.len() < capacity && table.get_or_insert(&tag).is_some();
    if !marked && kind == 2 {
        handles.control.count(Stat::AuditSuppressed, 1);
    }
    marked || kind == 1
}
