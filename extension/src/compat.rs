//! The server internals whose names or layout differ between the PostgreSQL releases apikey
//! builds for (features `pg15`, `pg16`, `pg17`, `pg18`), each behind one function here so
//! that no other module needs a `cfg`. 17 is built but not tested here: where it differs
//! from 15, it takes the code path of 18 (and of 16 where only 15 differs).

use pgrx::pg_sys;

/// Starts a set-returning function's materialized result (`SetSingleFuncCall` in 15,
/// renamed `InitMaterializedSRF` in 16).
///
/// # Safety
/// As the C function: `fcinfo` is the current call of a set-returning function.
pub unsafe fn init_materialized_srf(fcinfo: pg_sys::FunctionCallInfo, flags: u32) {
    // SAFETY: per the contract.
    unsafe {
        #[cfg(feature = "pg15")]
        pg_sys::SetSingleFuncCall(fcinfo, flags);
        #[cfg(not(feature = "pg15"))]
        pg_sys::InitMaterializedSRF(fcinfo, flags);
    }
}

/// Attribute `i` of a tuple descriptor (in 18 the attributes follow a compact array, and
/// only `TupleDescAttr` finds them).
///
/// # Safety
/// `desc` must be a valid descriptor with more than `i` attributes; the reference lives as
/// long as it does.
pub unsafe fn attribute<'a>(
    desc: pg_sys::TupleDesc,
    i: usize,
) -> &'a pg_sys::FormData_pg_attribute {
    // SAFETY: per the contract.
    unsafe {
        #[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17"))]
        return &(*desc).attrs.as_slice(i + 1)[i];
        #[cfg(feature = "pg18")]
        return &*pg_sys::TupleDescAttr(desc, i as i32);
    }
}

/// `index_beginscan` with one scan key and no ORDER BY keys (18 added an instrumentation
/// argument, here none).
///
/// # Safety
/// As the C function: open, locked relations and a registered snapshot.
pub unsafe fn index_beginscan(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
) -> pg_sys::IndexScanDesc {
    // SAFETY: per the contract.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        return pg_sys::index_beginscan(heap, index, snapshot, 1, 0);
        #[cfg(feature = "pg18")]
        return pg_sys::index_beginscan(heap, index, snapshot, std::ptr::null_mut(), 1, 0);
    }
}

/// This backend's local transaction id (`MyProc->lxid`, `MyProc->vxid.lxid` since 17).
pub fn local_xid() -> pg_sys::LocalTransactionId {
    // SAFETY: MyProc is set for every backend before any SQL function can run.
    unsafe {
        #[cfg(any(feature = "pg15", feature = "pg16"))]
        return (*pg_sys::MyProc).lxid;
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        return (*pg_sys::MyProc).vxid.lxid;
    }
}
