//! SPI plumbing shared by the SQL-facing modules: plans kept for the life of the backend
//! (hot statements are parsed and planned once, not per call) and transaction state.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> =
        RefCell::new(HashMap::new());
}

/// The kept plan for `sql`, prepared on first use. Mutating (not read-only): it runs with a
/// fresh snapshot, like `fetch`, and may write.
fn plan(
    client: &SpiClient<'_>,
    sql: &'static str,
    arg_types: &[pg_sys::Oid],
) -> SpiResult<Rc<OwnedPreparedStatement>> {
    if let Some(plan) = PLANS.with_borrow(|plans| plans.get(sql).cloned()) {
        return Ok(plan);
    }
    let oids: Vec<PgOid> = arg_types.iter().map(|&o| PgOid::from(o)).collect();
    let plan = Rc::new(client.prepare_mut(sql, &oids)?.keep());
    PLANS.with_borrow_mut(|plans| plans.insert(sql, Rc::clone(&plan)));
    Ok(plan)
}

/// Runs the kept (mutating) plan for `sql` with `search_path` pinned to `pg_catalog, pg_temp`
/// for this statement only.
///
/// apikey_verify carries no `SET search_path` clause: that clause re-parses the setting on
/// every call and invalidates the caller's cached search path, which measured 13% of a warm
/// verification. Its hot path does not resolve names at all (`fetch` works by OID), so the
/// pin is applied here, around the few statements it does run.
pub fn execute<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    arg_types: &[pg_sys::Oid],
    args: &[DatumWithOid<'_>],
) -> SpiResult<SpiTupleTable<'conn>> {
    // SAFETY: the nest level is popped below; if the statement raises, transaction (or
    // subtransaction) abort pops it, as it does for a function's SET clause.
    let level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        level
    };
    let result = plan(client, sql, arg_types).and_then(|plan| client.update(&*plan, None, args));
    // SAFETY: pops exactly the level pushed above.
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    result
}

/// False in a READ ONLY transaction and on a standby: there, verification must still work,
/// so bookkeeping writes (last_used_at, audit of failures, re-hashing) are skipped.
pub fn can_write() -> bool {
    // SAFETY: plain reads of backend-global state.
    unsafe { !pg_sys::XactReadOnly && !pg_sys::RecoveryInProgress() }
}

/// Whether verification may update a key's row: not where [`can_write`] says no, and not in
/// a REPEATABLE READ or SERIALIZABLE transaction, where updating a row that changed since the
/// transaction's snapshot raises a serialization failure, and verification never raises for
/// a change of a row. Such updates (a re-hash) wait for a later verification.
pub fn can_write_rows() -> bool {
    // SAFETY: plain read of backend-global state (IsolationUsesXactSnapshot() in C).
    can_write() && unsafe { pg_sys::XactIsoLevel } < pg_sys::XACT_REPEATABLE_READ as i32
}
