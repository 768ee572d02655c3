//! Per credit balance, in shared memory: the server's running count of credits spent from it
//! (see `apikey_contract::credits` for why a running count and a mark in the row make
//! spending exact), what of that the worker has written, and the refill it first saw due.
//!
//! Entries are never evicted while their database has the extension: an entry forgotten
//! while a session still holds an older row would let that session spend again what the
//! table already counts. When the table is full, balances without an entry cannot be spent
//! from (verification answers `usage_exceeded`, and the log says so once a minute); the
//! worker removes the entries of balances that no longer exist (those with spending to write
//! at every flush, all of them hourly and, once the table is half full, at every flush).

use super::table::TableEntry;
use super::{database, handles, Handles};
use apikey_contract::credits::{self, Row, Spending};
use pgrx::spinlock::PgSpinLock;
use pgrx::PGRXSharedMemory;
use std::sync::atomic::Ordering;

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CreditTag {
    db: u32,
    /// Always zero: makes the padding before `credit_id` an explicit field.
    zero: u32,
    credit_id: i64,
}

impl CreditTag {
    fn new(db: u32, credit_id: i64) -> CreditTag {
        CreditTag {
            db,
            zero: 0,
            credit_id,
        }
    }
}

#[derive(Clone, Copy, Default, Debug)]
pub struct CreditState {
    pub spending: Spending,
    /// `spending.spent` as of the worker's last committed write.
    pub written: i64,
    /// The last time verification found the balance short, and the last shortage the
    /// worker announced (a `credits_exhausted` event): one event per shortage.
    pub found_short: Option<Shortage>,
    pub announced: Option<Shortage>,
}

/// A balance found short, named by what a set, a top-up or a refill changes: the row's
/// `generation` (moved on by sets and top-ups) and the refill this server last saw due. A
/// balance short again after either is a new shortage.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Shortage {
    pub generation: i64,
    pub refill_due: i64,
}

// SAFETY: plain old data.
unsafe impl PGRXSharedMemory for CreditState {}

#[repr(C)]
pub struct CreditEntry {
    tag: CreditTag,
    state: PgSpinLock<CreditState>,
}

// SAFETY: repr(C), tag first; CreditTag is 4 + 4 + 8 = 16 bytes with alignment 8 and no
// padding.
unsafe impl TableEntry for CreditEntry {
    type Tag = CreditTag;

    fn new(tag: CreditTag) -> CreditEntry {
        CreditEntry {
            tag,
            state: PgSpinLock::new(CreditState::default()),
        }
    }
}

/// The epoch of this shared memory (see `apikey_contract::credits`).
pub fn epoch() -> Option<i64> {
    handles().map(|h| h.control.epoch)
}

/// Runs `f` on the state of balance `credit_id` of database `db`, creating the entry if
/// needed; `None` without shared memory or when the table is full.
fn with_balance<R>(db: u32, credit_id: i64, f: impl FnOnce(&mut CreditState) -> R) -> Option<R> {
    let handles = handles()?;
    let tag = CreditTag::new(db, credit_id);
    {
        let table = handles.credits.shared();
        if let Some(entry) = table.get(&tag) {
            return Some(f(&mut entry.state.lock()));
        }
    }
    let mut table = handles.credits.exclusive();
    if table.get(&tag).is_none() && table.len() >= crate::guc::max_keys() {
        drop(table);
        note_full(handles);
        return None;
    }
    let entry = table.get_or_insert(&tag)?;
    let result = f(&mut entry.state.lock());
    Some(result)
}

/// Logs, at most once a minute, that a balance could not be spent from for want of room.
fn note_full(handles: &Handles) {
    // SAFETY: reads the clock.
    let now = unsafe { pgrx::pg_sys::GetCurrentTimestamp() };
    let last = handles.control.credits_full_logged.load(Ordering::Relaxed);
    if now - last >= super::keys::MINUTE
        && handles
            .control
            .credits_full_logged
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        pgrx::log!(
            "apikey: the shared credit table is full (apikey.max_keys = {}): balances not yet \
             in it answer usage_exceeded; raise apikey.max_keys",
            crate::guc::max_keys()
        );
    }
}

/// What spending from a balance came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spent {
    /// Taken: the balance after, and what [`give_back`] needs to undo it.
    Taken(i64, Receipt),
    /// Short; the balance, nothing taken.
    Short(i64),
    /// The server cannot count spending now (no shared memory, or its table is full).
    Unavailable,
}

/// Spends `cost` from balance `credit_id`, whose row (as this session read it) is `row` of
/// `generation`. A shortage is noted for the worker to announce.
pub fn spend(credit_id: i64, row: &Row, generation: i64, cost: i64, now: i64) -> Spent {
    let Some(epoch) = epoch() else {
        return Spent::Unavailable;
    };
    match with_balance(database(), credit_id, |state| {
        let spent = credits::spend(row, &mut state.spending, epoch, now, cost);
        if spent.is_err() {
            let shortage = Shortage {
                generation,
                refill_due: state.spending.refill_due,
            };
            if state.announced != Some(shortage) {
                state.found_short = Some(shortage);
            }
        }
        spent.map(|after| (after, state.spending.refill_due))
    }) {
        Some(Ok((after, refill_due))) => Spent::Taken(
            after,
            Receipt {
                credit_id,
                cost,
                refill_due,
            },
        ),
        Some(Err(balance)) => Spent::Short(balance),
        None => Spent::Unavailable,
    }
}

/// A spend that may still be given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    credit_id: i64,
    cost: i64,
    refill_due: i64,
}

/// Gives back a spend of this session's database, for a verification refused after all.
pub fn give_back(receipt: Receipt) {
    with_balance(database(), receipt.credit_id, |state| {
        credits::give_back(&mut state.spending, receipt.cost, receipt.refill_due);
    });
}

/// The balance of `credit_id` (row `row`) at `now` as verification would find it, changing
/// nothing; `None` without shared memory.
pub fn peek(credit_id: i64, row: &Row, now: i64) -> Option<i64> {
    let handles = handles()?;
    let epoch = handles.control.epoch;
    let mut spending = {
        let table = handles.credits.shared();
        table
            .get(&CreditTag::new(database(), credit_id))
            .map(|entry| entry.state.lock().spending)
            .unwrap_or_default()
    };
    Some(credits::balance(row, &mut spending, epoch, now))
}

/// What a write that moves the spending of `credit_id` (row `row`) into the table sets:
/// `remaining`, `spent_mark`, whether it applies the refill due at `now`, and the epoch to
/// mark the row with. A due refill is noted first, as a verification would note it.
pub fn settle(db: u32, credit_id: i64, row: &Row, now: i64) -> Option<Settled> {
    let epoch = epoch()?;
    with_balance(db, credit_id, |state| {
        credits::balance(row, &mut state.spending, epoch, now);
        let (remaining, spent_mark, refilled) = credits::settle(row, &state.spending, epoch);
        Settled {
            remaining,
            spent_mark,
            refilled,
            epoch,
        }
    })
}

#[derive(Clone, Copy, Debug)]
pub struct Settled {
    pub remaining: i64,
    pub spent_mark: i64,
    pub refilled: bool,
    pub epoch: i64,
}

/// What `pick` takes from the state of each balance of database `db`, with its credit id.
fn collect<T>(db: u32, pick: impl Fn(&CreditState) -> Option<T>) -> Vec<(i64, T)> {
    let Some(handles) = handles() else {
        return Vec::new();
    };
    let table = handles.credits.shared();
    table
        .entries()
        .into_iter()
        .filter(|e| e.tag.db == db)
        .filter_map(|e| pick(&e.state.lock()).map(|t| (e.tag.credit_id, t)))
        .collect()
}

/// The balances of database `db` with spending the table does not hold yet.
pub fn unwritten(db: u32) -> Vec<i64> {
    collect(db, |state| {
        (state.spending.spent != state.written).then_some(())
    })
    .into_iter()
    .map(|(id, ())| id)
    .collect()
}

/// After a committed write of `credit_id` in `db` marked with `spent`. The refill noted
/// stays noted: a session still holding the row from before the refill computes the same
/// balance from it as from the refilled row, and the next refill is noted by its own time.
pub fn written(db: u32, credit_id: i64, spent: i64) {
    with_balance(db, credit_id, |state| state.written = spent);
}

/// The shortages of database `db`'s balances not yet announced.
pub fn shortages(db: u32) -> Vec<(i64, Shortage)> {
    collect(db, |state| {
        let found = state.found_short?;
        (state.announced != Some(found)).then_some(found)
    })
}

/// After a committed write that announced `shortage` of `credit_id` in `db` (or found it
/// stale: the balance was set or removed since).
pub fn announced(db: u32, credit_id: i64, shortage: Shortage) {
    with_balance(db, credit_id, |state| state.announced = Some(shortage));
}

/// Drops the entries of balances of `db` that no longer exist (ids are never reused).
pub fn forget(db: u32, credit_ids: &[i64]) {
    let Some(handles) = handles() else { return };
    handles
        .credits
        .exclusive()
        .remove_where(|tag| tag.db == db && credit_ids.contains(&tag.credit_id));
}

/// Drops every entry of database `db` (dropped, or without the extension).
pub fn forget_database(db: u32) {
    let Some(handles) = handles() else { return };
    handles.credits.exclusive().remove_where(|tag| tag.db == db);
}

/// Whether the table holds more than half its capacity: time to look for entries of removed
/// balances at every flush, not only hourly.
pub fn filling_up() -> bool {
    handles().is_some_and(|h| h.credits.shared().len() * 2 > crate::guc::max_keys())
}

/// Every balance of database `db` with an entry.
pub fn ids(db: u32) -> Vec<i64> {
    collect(db, |_| Some(()))
        .into_iter()
        .map(|(id, ())| id)
        .collect()
}

/// Spending not yet written, in every database: `(db, credit id, credits)`, what a clean
/// shutdown saves.
pub fn unwritten_everywhere() -> Vec<(u32, i64, i64)> {
    let Some(handles) = handles() else {
        return Vec::new();
    };
    let table = handles.credits.shared();
    table
        .entries()
        .into_iter()
        .filter_map(|e| {
            let state = e.state.lock();
            let unwritten = state.spending.spent - state.written;
            (unwritten != 0).then_some((e.tag.db, e.tag.credit_id, unwritten))
        })
        .collect()
}

/// Brings back spending a clean shutdown saved. The new epoch's counter starts at it, and
/// rows marked by the old epoch count as marked at zero, so the balance is what it was.
pub fn restore(db: u32, credit_id: i64, unwritten: i64) {
    with_balance(db, credit_id, |state| {
        state.spending.spent = state.spending.spent.saturating_add(unwritten);
    });
}
