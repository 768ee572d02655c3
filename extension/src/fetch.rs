//! Primary-key lookups for the verification hot path, without SPI: SPI would
//! parse-plan-cache-check, build an executor and project expressions for what is one index
//! probe; measured, that was most of a warm `apikey_verify`'s cost. A row found once is found
//! again by its heap TID (see `KnownTids`), the index being the fallback.
//!
//! Lookups take a fresh snapshot (the latest committed state plus this transaction's
//! earlier commands, as a non-read-only SPI query would), so a revocation committed a moment
//! ago is seen even inside a long statement or a REPEATABLE READ transaction. The
//! AccessShareLock is kept until the transaction ends, like the executor does.

use crate::compat;
use crate::error::{ApiError, ApiResult};
use pgrx::{pg_guard, pg_sys, FromDatum, IntoDatum};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;

/// A tuple found by [`Snapshot::by_primary_key`], readable by column name while it is pinned.
pub struct Found {
    slot: *mut pg_sys::TupleTableSlot,
}

impl Found {
    /// The value of `column`, copied into Rust memory. `None` for SQL NULL.
    pub fn get<T: FromDatum>(&self, column: &str) -> ApiResult<Option<T>> {
        // SAFETY: the slot holds a valid tuple of the relation whose descriptor it carries,
        // for as long as this `Found` exists (see `by_primary_key`).
        unsafe {
            let desc = (*self.slot).tts_tupleDescriptor;
            let natts = usize::try_from((*desc).natts).unwrap_or(0);
            let Some(index) = (0..natts)
                .map(|i| compat::attribute(desc, i))
                .position(|a| !a.attisdropped && name_is(&a.attname, column))
            else {
                return Err(ApiError::internal(format!(
                    "column {column} is missing from apikey's tables"
                )));
            };
            if i32::from((*self.slot).tts_nvalid) <= index as i32 {
                pg_sys::slot_getsomeattrs_int(self.slot, index as i32 + 1);
            }
            let datum = *(*self.slot).tts_values.add(index);
            let is_null = *(*self.slot).tts_isnull.add(index);
            Ok(T::from_polymorphic_datum(
                datum,
                is_null,
                compat::attribute(desc, index).atttypid,
            ))
        }
    }
}

/// Byte comparison of a NUL-terminated `NameData` with `column`: this runs for every column
/// of every verification, where a UTF-8 conversion per attribute showed in profiles.
fn name_is(name: &pg_sys::NameData, column: &str) -> bool {
    let wanted = column.as_bytes();
    wanted.len() < name.data.len()
        && name.data[wanted.len()] == 0
        && name
            .data
            .iter()
            .zip(wanted)
            .all(|(&have, &want)| have as u8 == want)
}

/// The tables the hot path reads, with their primary-key index and its equality function.
#[derive(Clone, Copy)]
enum Table {
    Keys,
    Partners,
    KeyCredits,
    PartnerCredits,
    ImportedKeys,
}

impl Table {
    fn names(self) -> (&'static CStr, &'static CStr) {
        match self {
            Table::Keys => (c"keys", c"keys_pkey"),
            Table::Partners => (c"partners", c"partners_pkey"),
            Table::KeyCredits => (c"key_credits", c"key_credits_pkey"),
            Table::PartnerCredits => (c"partner_credits", c"partner_credits_pkey"),
            Table::ImportedKeys => (c"imported_keys", c"imported_keys_pkey"),
        }
    }

    fn eq_proc(self) -> pg_sys::Oid {
        pg_sys::Oid::from(match self {
            Table::Keys | Table::KeyCredits | Table::ImportedKeys => pg_sys::F_TEXTEQ,
            Table::Partners | Table::PartnerCredits => pg_sys::F_UUID_EQ,
        })
    }
}

/// (table, index) OIDs per [`Table`], resolved by name once per backend: three catalog
/// lookups per table showed in profiles. Cleared by any relcache invalidation of a cached
/// relation (DROP / CREATE EXTENSION, ALTER), so a stale OID is not used.
type CachedOids = [Option<(pg_sys::Oid, pg_sys::Oid)>; 5];

thread_local! {
    static OIDS: Cell<CachedOids> = const { Cell::new([None; 5]) };
}

/// Registers the invalidation callback. Called once per process, from `_PG_init`.
pub fn init() {
    // SAFETY: registering a callback with a 'static function is allowed at any time.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_invalidation),
            pg_sys::Datum::from(0),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let cached = OIDS.get();
    let affected = relid == pg_sys::InvalidOid
        || cached
            .iter()
            .flatten()
            .any(|&(table, index)| table == relid || index == relid);
    if affected {
        forget_all();
    }
}

fn oids(table: Table) -> ApiResult<(pg_sys::Oid, pg_sys::Oid)> {
    find_oids(table).ok_or_else(|| {
        ApiError::internal(format!(
            "apikey.{} or its index is missing: reinstall the extension",
            table.names().0.to_string_lossy()
        ))
    })
}

/// Whether the database has `apikey.key_credits` (0.7.0 and later).
pub fn has_key_credits() -> bool {
    find_oids(Table::KeyCredits).is_some()
}

/// Whether the database has partner-wide limits: `apikey.partner_credits` and
/// `apikey.partners.rate_per_minute` (0.8.0 and later).
pub fn has_partner_limits() -> bool {
    find_oids(Table::PartnerCredits).is_some()
}

/// Whether the database has `apikey.imported_keys` (0.9.0 and later). Also what makes this
/// backend notice changes to it: an invalidation of a table whose OID is not cached here is
/// ignored.
pub fn has_imported_keys() -> bool {
    find_oids(Table::ImportedKeys).is_some()
}

fn find_oids(table: Table) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    if let Some(found) = OIDS.get()[table as usize] {
        return Some(found);
    }
    let (table_name, index_name) = table.names();
    // SAFETY: catalog lookups by name; missing objects yield InvalidOid, not an error.
    let found = unsafe {
        let namespace = pg_sys::get_namespace_oid(c"apikey".as_ptr(), true);
        (
            pg_sys::get_relname_relid(table_name.as_ptr(), namespace),
            pg_sys::get_relname_relid(index_name.as_ptr(), namespace),
        )
    };
    if found.0 == pg_sys::InvalidOid || found.1 == pg_sys::InvalidOid {
        return None;
    }
    let mut cached = OIDS.get();
    cached[table as usize] = Some(found);
    OIDS.set(cached);
    Some(found)
}

/// Opens `oid` if it still is the relation called `name`, with AccessShareLock.
///
/// # Safety
/// Must run inside a transaction, after invalidation messages were accepted (so `oid` was
/// not dropped before this transaction).
unsafe fn open_if_named(oid: pg_sys::Oid, name: &CStr) -> Option<Opened> {
    // SAFETY: per the contract the relation exists (a DROP racing with this call raises,
    // as it would for any query); the name check guards against a reused OID.
    unsafe {
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let rel = pg_sys::relation_open(oid, lock);
        if CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()) == name {
            Some(Opened(rel))
        } else {
            pg_sys::relation_close(rel, lock);
            None
        }
    }
}

// Guards for what a lookup holds. Each releases it when it goes out of scope on an ordinary
// return, an early `?` included. While a PostgreSQL ERROR unwinds through them, they leave it
// to the transaction abort, which releases everything with the resource owner (calling into
// PostgreSQL in the middle of an ERROR is not allowed). Declared in the order of acquisition,
// they are released in the reverse order, as PostgreSQL requires (slot before relation,
// scan before index).

/// An open relation, closed keeping its lock (released at transaction end, as the executor
/// does).
struct Opened(pg_sys::Relation);

impl Drop for Opened {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: opened by `open_if_named` and not closed elsewhere.
            unsafe { pg_sys::relation_close(self.0, pg_sys::NoLock as pg_sys::LOCKMODE) };
        }
    }
}

/// A tuple slot made for one relation (it may hold a buffer pin).
struct Slot(*mut pg_sys::TupleTableSlot);

impl Slot {
    /// # Safety
    /// `rel` must be open for as long as the slot lives.
    unsafe fn for_relation(rel: &Opened) -> Slot {
        // SAFETY: per the contract.
        Slot(unsafe { pg_sys::table_slot_create(rel.0, std::ptr::null_mut()) })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: made by `Slot::for_relation` and dropped nowhere else; releases its pin.
            unsafe { pg_sys::ExecDropSingleTupleTableSlot(self.0) };
        }
    }
}

/// An index scan in progress.
struct IndexScan(pg_sys::IndexScanDesc);

impl Drop for IndexScan {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: begun by `compat::index_beginscan` and ended nowhere else.
            unsafe { pg_sys::index_endscan(self.0) };
        }
    }
}

#[derive(Clone, Copy)]
enum Part {
    Table,
    Index,
}

/// Opens `table` or its primary-key index, locked until the transaction ends.
///
/// # Safety
/// Must run inside a transaction.
unsafe fn open(table: Table, part: Part) -> ApiResult<Opened> {
    let (table_name, index_name) = table.names();
    let name = match part {
        Part::Table => table_name,
        Part::Index => index_name,
    };
    // A DROP / CREATE EXTENSION since this backend cached the OIDs is noticed here.
    accept_invalidations();
    for _attempt in 0..2 {
        let (table_oid, index_oid) = oids(table)?;
        let oid = match part {
            Part::Table => table_oid,
            Part::Index => index_oid,
        };
        // SAFETY: per this function's contract.
        if let Some(rel) = unsafe { open_if_named(oid, name) } {
            return Ok(rel);
        }
        forget_all();
    }
    Err(ApiError::internal(format!(
        "apikey.{} changed while being read; try again",
        name.to_string_lossy()
    )))
}

/// A primary-key value of a table the hot path reads.
#[derive(Clone, Copy)]
pub enum PrimaryKey<'a> {
    Key(&'a str),
    Partner(pgrx::Uuid),
    /// The balance of a key (`apikey.key_credits`, by key id).
    KeyCredits(&'a str),
    /// The balance a partner's keys share (`apikey.partner_credits`, by partner id).
    PartnerCredits(pgrx::Uuid),
    /// An imported key, by its lookup (`apikey.imported_keys`).
    Imported(&'a str),
}

impl PrimaryKey<'_> {
    fn table(self) -> Table {
        match self {
            PrimaryKey::Key(_) => Table::Keys,
            PrimaryKey::Partner(_) => Table::Partners,
            PrimaryKey::KeyCredits(_) => Table::KeyCredits,
            PrimaryKey::PartnerCredits(_) => Table::PartnerCredits,
            PrimaryKey::Imported(_) => Table::ImportedKeys,
        }
    }

    fn datum(self) -> Option<pg_sys::Datum> {
        match self {
            PrimaryKey::Key(key_id)
            | PrimaryKey::KeyCredits(key_id)
            | PrimaryKey::Imported(key_id) => key_id.into_datum(),
            PrimaryKey::Partner(partner_id) | PrimaryKey::PartnerCredits(partner_id) => {
                partner_id.into_datum()
            }
        }
    }

    /// Whether `found` is the row of this key (a remembered TID may now hold another row).
    fn is_row_of(self, found: &Found) -> ApiResult<bool> {
        Ok(match self {
            PrimaryKey::Key(key_id) | PrimaryKey::KeyCredits(key_id) => {
                found.get::<String>("key_id")?.as_deref() == Some(key_id)
            }
            PrimaryKey::Partner(partner_id) | PrimaryKey::PartnerCredits(partner_id) => {
                found.get::<pgrx::Uuid>("partner_id")? == Some(partner_id)
            }
            PrimaryKey::Imported(lookup) => {
                found.get::<String>("lookup")?.as_deref() == Some(lookup)
            }
        })
    }
}

/// Where rows were found before: the heap TID the primary-key index pointed to (the root of
/// the row's HOT chain). A warm lookup fetches that TID with the snapshot, which finds the
/// row's visible version if it is still in that chain, and skips the index descent; after a
/// non-HOT update, a delete or a VACUUM FULL the TID finds nothing or another row, and the
/// index is probed again. Cleared with the OID cache.
#[derive(Default)]
struct KnownTids {
    keys: HashMap<String, pg_sys::ItemPointerData>,
    partners: HashMap<[u8; 16], pg_sys::ItemPointerData>,
    key_credits: HashMap<String, pg_sys::ItemPointerData>,
    partner_credits: HashMap<[u8; 16], pg_sys::ItemPointerData>,
    imported: HashMap<String, pg_sys::ItemPointerData>,
}

const MAX_KNOWN_TIDS: usize = 10_000;

thread_local! {
    static TIDS: RefCell<KnownTids> = RefCell::new(KnownTids::default());
}

fn known_tid(key: PrimaryKey<'_>) -> Option<pg_sys::ItemPointerData> {
    TIDS.with_borrow(|tids| match key {
        PrimaryKey::Key(key_id) => tids.keys.get(key_id).copied(),
        PrimaryKey::Partner(partner_id) => tids.partners.get(partner_id.as_bytes()).copied(),
        PrimaryKey::KeyCredits(key_id) => tids.key_credits.get(key_id).copied(),
        PrimaryKey::PartnerCredits(partner_id) => {
            tids.partner_credits.get(partner_id.as_bytes()).copied()
        }
        PrimaryKey::Imported(lookup) => tids.imported.get(lookup).copied(),
    })
}

fn set_known_tid(key: PrimaryKey<'_>, tid: Option<pg_sys::ItemPointerData>) {
    TIDS.with_borrow_mut(|tids| {
        let held = tids.keys.len()
            + tids.partners.len()
            + tids.key_credits.len()
            + tids.partner_credits.len()
            + tids.imported.len();
        if held >= MAX_KNOWN_TIDS {
            *tids = KnownTids::default();
        }
        match (key, tid) {
            (PrimaryKey::Key(key_id), Some(tid)) => {
                tids.keys.insert(key_id.to_string(), tid);
            }
            (PrimaryKey::Key(key_id), None) => {
                tids.keys.remove(key_id);
            }
            (PrimaryKey::Partner(partner_id), Some(tid)) => {
                tids.partners.insert(*partner_id.as_bytes(), tid);
            }
            (PrimaryKey::Partner(partner_id), None) => {
                tids.partners.remove(partner_id.as_bytes());
            }
            (PrimaryKey::KeyCredits(key_id), Some(tid)) => {
                tids.key_credits.insert(key_id.to_string(), tid);
            }
            (PrimaryKey::KeyCredits(key_id), None) => {
                tids.key_credits.remove(key_id);
            }
            (PrimaryKey::PartnerCredits(partner_id), Some(tid)) => {
                tids.partner_credits.insert(*partner_id.as_bytes(), tid);
            }
            (PrimaryKey::PartnerCredits(partner_id), None) => {
                tids.partner_credits.remove(partner_id.as_bytes());
            }
            (PrimaryKey::Imported(lookup), Some(tid)) => {
                tids.imported.insert(lookup.to_string(), tid);
            }
            (PrimaryKey::Imported(lookup), None) => {
                tids.imported.remove(lookup);
            }
        }
    });
}

fn forget_all() {
    OIDS.set([None; 5]);
    TIDS.set(KnownTids::default());
    GENERATION.set(GENERATION.get().wrapping_add(1));
}

thread_local! {
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// Moves on whenever this backend's caches of apikey's relations are cleared, i.e. when an
/// invalidation message named apikey.keys, apikey.partners or their indexes, or all
/// relations: whatever was read from them under an older generation may be stale.
pub fn generation() -> u64 {
    GENERATION.get()
}

/// Delivers pending invalidation messages (`generation` moves on if one concerns apikey's
/// tables). A cheap unlocked check when there are none.
pub fn accept_invalidations() {
    // SAFETY: allowed at any point inside a transaction.
    unsafe { pg_sys::AcceptInvalidationMessages() };
}

/// Runs `read_all` with one fresh snapshot (the latest committed state plus this
/// transaction's earlier commands), shared by every [`Snapshot::by_primary_key`] it makes,
/// so the rows it reads are consistent with each other.
pub fn with_latest_snapshot<R>(read_all: impl FnOnce(&Snapshot) -> ApiResult<R>) -> ApiResult<R> {
    // SAFETY: registered here, unregistered when `snapshot` is dropped (or, if `read_all`
    // raises, by the transaction abort with the resource owner).
    let snapshot = Snapshot(unsafe { pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot()) });
    read_all(&snapshot)
}

/// Runs `read` with the latest committed state as the active snapshot, for the few reads the
/// hot path makes through read-only SPI, which reads with the active snapshot and, unlike a
/// mutating statement, assigns no transaction id (a hot standby has none to give).
pub fn with_latest_active_snapshot<R>(read: impl FnOnce() -> R) -> R {
    /// Pops the snapshot pushed below (an ERROR unwinding leaves it to the abort).
    struct Active;
    impl Drop for Active {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                // SAFETY: pops exactly the snapshot pushed below.
                unsafe { pg_sys::PopActiveSnapshot() };
            }
        }
    }
    // SAFETY: PushActiveSnapshot copies the static latest snapshot; popped by `Active`.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
    let _active = Active;
    read()
}

/// A size of `rel` (main fork, in blocks) good enough to tell whether `block` still exists.
///
/// The size this backend's storage manager last saw is reused when it already covers
/// `block`, which saves a `lseek` per lookup: a relation only shrinks by truncation, which
/// sends an immediate invalidation that closes every backend's storage-manager entry for it
/// (taking the remembered size along) and is delivered no later than this transaction's lock
/// on the relation. A remembered size can only be too small (another backend extended the
/// relation), and then the file is asked.
///
/// # Safety
/// `rel` must be open and locked.
unsafe fn known_size(rel: pg_sys::Relation, block: u32) -> u32 {
    let main = pg_sys::ForkNumber::MAIN_FORKNUM;
    // SAFETY: per the contract; rd_smgr is NULL until the storage manager is first used.
    unsafe {
        let smgr = (*rel).rd_smgr;
        if !smgr.is_null() {
            let remembered = (*smgr).smgr_cached_nblocks[main as usize];
            if remembered != pg_sys::InvalidBlockNumber && block < remembered {
                return remembered;
            }
        }
        pg_sys::RelationGetNumberOfBlocksInFork(rel, main)
    }
}

/// A registered snapshot, unregistered when dropped (see the guards above).
pub struct Snapshot(pg_sys::Snapshot);

impl Drop for Snapshot {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: registered by `with_latest_snapshot`, unregistered nowhere else.
            unsafe { pg_sys::UnregisterSnapshot(self.0) };
        }
    }
}

impl Snapshot {
    /// Looks up the single row with primary key `key`, and hands it to `read`.
    pub fn by_primary_key<R>(
        &self,
        key: PrimaryKey<'_>,
        read: impl FnOnce(&Found) -> ApiResult<R>,
    ) -> ApiResult<Option<R>> {
        self.first_by_primary_key(&[key], |_, found| read(found))
    }

    /// Looks up the rows of `keys` (all of one table) in turn, and hands the first that
    /// exists to `read`, with its position in `keys`. The table, its index and one index scan are opened once
    /// for all of them: each further key costs a rescan, not a lookup.
    pub fn first_by_primary_key<R>(
        &self,
        keys: &[PrimaryKey<'_>],
        read: impl FnOnce(usize, &Found) -> ApiResult<R>,
    ) -> ApiResult<Option<R>> {
        let Some(table) = keys.first().map(|k| k.table()) else {
            return Ok(None);
        };
        // SAFETY: standard relation-scan protocol: open with a lock, fetch with a registered
        // snapshot into a slot; the guards drop the scan and the slot before closing the
        // relation. The slot holds its own buffer pin, so the row stays readable after the
        // fetch or index scan has ended.
        unsafe {
            let rel = open(table, Part::Table)?;
            let slot = Slot::for_relation(&rel);
            let found = Found { slot: slot.0 };
            for (i, &key) in keys.iter().enumerate() {
                if let Some(tid) = known_tid(key) {
                    if self.fetch_tid(rel.0, tid, slot.0) && key.is_row_of(&found)? {
                        return read(i, &found).map(Some);
                    }
                }
            }
            let idx = open(table, Part::Index)?;
            let scanning = IndexScan(compat::index_beginscan(rel.0, idx.0, self.0));
            for (i, &key) in keys.iter().enumerate() {
                if probe_index(scanning.0, key, slot.0)? {
                    return read(i, &found).map(Some);
                }
            }
            Ok(None)
        }
    }

    /// Fetches the version of the row at `tid` (a HOT-chain root) this snapshot sees.
    ///
    /// # Safety
    /// `rel` must be open and locked, `slot` made for it.
    unsafe fn fetch_tid(
        &self,
        rel: pg_sys::Relation,
        tid: pg_sys::ItemPointerData,
        slot: *mut pg_sys::TupleTableSlot,
    ) -> bool {
        // SAFETY: per the contract. The block is checked against the relation's size first
        // (VACUUM may have truncated it since the TID was seen); the table AM's index-fetch
        // callbacks are what an index scan itself calls with a TID.
        unsafe {
            let block = (u32::from(tid.ip_blkid.bi_hi) << 16) | u32::from(tid.ip_blkid.bi_lo);
            if block >= known_size(rel, block) {
                return false;
            }
            let am = (*rel).rd_tableam;
            let (Some(begin), Some(fetch), Some(end)) = (
                (*am).index_fetch_begin,
                (*am).index_fetch_tuple,
                (*am).index_fetch_end,
            ) else {
                return false;
            };
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                let scan = begin(rel);
                let mut tid = tid;
                let (mut call_again, mut all_dead) = (false, false);
                let found = fetch(scan, &mut tid, self.0, slot, &mut call_again, &mut all_dead);
                end(scan);
                found
            })
        }
    }
}

/// Probes the primary-key index through `scan` for `key`, storing the row in `slot` and
/// remembering where it was found.
///
/// # Safety
/// `scan` must be an index scan of the table's primary-key index under a registered
/// snapshot, `slot` made for the table.
unsafe fn probe_index(
    scan: pg_sys::IndexScanDesc,
    key: PrimaryKey<'_>,
    slot: *mut pg_sys::TupleTableSlot,
) -> ApiResult<bool> {
    let datum = key
        .datum()
        .ok_or_else(|| ApiError::internal("primary-key value is NULL"))?;
    // SAFETY: per the contract.
    unsafe {
        let mut scan_key = pg_sys::ScanKeyData::default();
        pg_sys::ScanKeyInit(
            &mut scan_key,
            1,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            key.table().eq_proc(),
            datum,
        );
        pg_sys::index_rescan(scan, &mut scan_key, 1, std::ptr::null_mut(), 0);
        // index_getnext_slot, unrolled to keep the TID the index holds: fetching moves
        // xs_heaptid to the chain member found, which is no place to start from later.
        // With an MVCC snapshot, one entry's chain has at most one visible version.
        let mut root = None;
        loop {
            let tid = pg_sys::index_getnext_tid(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tid.is_null() {
                break;
            }
            let entry = *tid;
            if pg_sys::index_fetch_heap(scan, slot) {
                root = Some(entry);
                break;
            }
        }
        let found = root.is_some();
        set_known_tid(key, root);
        Ok(found)
    }
}
