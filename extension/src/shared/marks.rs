//! Which failures were already audited this minute. A failed verification writes an audit
//! row only for the first failure of its kind in its minute: per existing key and reason, or,
//! when the token names no existing key, per client address and reason. A flood of forged
//! tokens thus writes at most one row per address and minute.

use super::table::TableEntry;
use super::{database, fixed, handles, Stat};
use crate::reason::Reason;

const MAX_SUBJECT: usize = 41;

/// Whom a failure is about.
pub enum Subject<'a> {
    Key(&'a str),
    /// The client address's bytes (family, mask, address), or none.
    Address(Option<&'a [u8]>),
}

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MarkTag {
    minute: i64,
    db: u32,
    reason: u8,
    /// 1: a key id; 2: an address.
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

/// Whether this failure is the first of its kind this minute, so its audit row should be
/// written. Without shared memory every failure is audited. When the table is full of this
/// minute's marks, the failure is not audited (and counted as suppressed): the audit log
/// must not be the thing a flood fills.
pub fn first_this_minute(subject: Subject<'_>, reason: Reason, now: i64) -> bool {
    let Some(handles) = handles() else {
        return true;
    };
    let (kind, bytes) = match subject {
        Subject::Key(key_id) => (1, key_id.as_bytes()),
        Subject::Address(address) => (2, address.unwrap_or(&[])),
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
    if table.len() >= crate::guc::max_usage_entries() {
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
    if table.len() < crate::guc::max_usage_entries() && table.get_or_insert(&tag).is_some() {
        true
    } else {
        handles.control.count(Stat::AuditSuppressed, 1);
        false
    }
}
