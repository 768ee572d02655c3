//! Primary-key lookups straight through the index, for the verification hot path. SPI would
//! parse-plan-cache-check, build an executor and project expressions for what is one index
//! probe; measured, that was most of a warm `apikey_verify`'s cost.
//!
//! The scan takes a fresh snapshot (the latest committed state plus this transaction's
//! earlier commands, as a non-read-only SPI query would), so a revocation committed a moment
//! ago is seen even inside a long statement or a REPEATABLE READ transaction. The
//! AccessShareLock is kept until the transaction ends, like the executor does.

use crate::error::{ApiError, ApiResult};
use pgrx::pg_sys;
use pgrx::FromDatum;
use std::ffi::CStr;

/// A tuple found by [`by_primary_key`], readable by column name while it is pinned.
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
            let natts = (*desc).natts;
            let attrs = (*desc).attrs.as_slice(natts as usize);
            let Some(index) = attrs
                .iter()
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
                attrs[index].atttypid,
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

/// Looks up the single row of `apikey.<table>` whose primary key (index `apikey.<index>`,
/// equality function `eq_proc`) equals `key`, and hands it to `read`.
pub fn by_primary_key<R>(
    table: &CStr,
    index: &CStr,
    eq_proc: u32,
    key: pg_sys::Datum,
    read: impl FnOnce(&Found) -> ApiResult<R>,
) -> ApiResult<Option<R>> {
    // SAFETY: standard relation-scan protocol: open with a lock, scan with the active
    // snapshot, drop the slot and end the scan before closing. Locks are kept (NoLock on
    // close) and released at transaction end; an ERROR in between is cleaned up by the
    // transaction abort (resource owner), as for any scan.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"apikey".as_ptr(), true);
        let rel_oid = pg_sys::get_relname_relid(table.as_ptr(), namespace);
        let index_oid = pg_sys::get_relname_relid(index.as_ptr(), namespace);
        if rel_oid == pg_sys::InvalidOid || index_oid == pg_sys::InvalidOid {
            return Err(ApiError::internal(format!(
                "apikey.{} or its index is missing: reinstall the extension",
                table.to_string_lossy()
            )));
        }
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(rel_oid, lock);
        let idx = pg_sys::index_open(index_oid, lock);
        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot());
        let scan = pg_sys::index_beginscan(rel, idx, snapshot, 1, 0);
        let mut scan_key = pg_sys::ScanKeyData::default();
        pg_sys::ScanKeyInit(
            &mut scan_key,
            1,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::Oid::from(eq_proc),
            key,
        );
        pg_sys::index_rescan(scan, &mut scan_key, 1, std::ptr::null_mut(), 0);
        let result = if pg_sys::index_getnext_slot(
            scan,
            pg_sys::ScanDirection::ForwardScanDirection,
            slot,
        ) {
            read(&Found { slot }).map(Some)
        } else {
            Ok(None)
        };
        pg_sys::index_endscan(scan);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::UnregisterSnapshot(snapshot);
        pg_sys::index_close(idx, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        result
    }
}
