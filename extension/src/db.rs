//! SPI plumbing shared by the SQL-facing modules: plans kept for the life of the backend
//! (hot statements are parsed and planned once, not per call) and transaction state.

use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> =
        RefCell::new(HashMap::new());
}

/// The kept plan for `sql`, preparing it on first use. `mutating` plans run with a fresh
/// snapshot and may write; read-only ones use the calling statement's snapshot.
pub fn plan(
    client: &SpiClient<'_>,
    sql: &'static str,
    arg_types: &[pg_sys::Oid],
    mutating: bool,
) -> SpiResult<Rc<OwnedPreparedStatement>> {
    if let Some(plan) = PLANS.with_borrow(|plans| plans.get(sql).cloned()) {
        return Ok(plan);
    }
    let oids: Vec<PgOid> = arg_types.iter().map(|&o| PgOid::from(o)).collect();
    let prepared = if mutating {
        client.prepare_mut(sql, &oids)?
    } else {
        client.prepare(sql, &oids)?
    };
    let plan = Rc::new(prepared.keep());
    PLANS.with_borrow_mut(|plans| plans.insert(sql, Rc::clone(&plan)));
    Ok(plan)
}

/// False in a READ ONLY transaction and on a standby: there, verification must still work,
/// so bookkeeping writes (last_used_at, audit of failures, re-hashing) are skipped.
pub fn can_write() -> bool {
    // SAFETY: plain reads of backend-global state.
    unsafe { !pg_sys::XactReadOnly && !pg_sys::RecoveryInProgress() }
}
