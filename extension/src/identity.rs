//! The identity proven by the last `apikey_verify` of the current transaction. It lives in
//! backend memory, tagged with the local transaction id, so it cannot be set by `set_config`
//! or survive into the next transaction.

use crate::error::{ApiError, OrRaise};
use crate::sqltypes::OwnedInet;
use crate::{redact, scope};
use pgrx::prelude::*;
use std::cell::RefCell;

#[derive(Clone)]
pub struct Identity {
    pub partner_id: pgrx::Uuid,
    pub key_id: String,
    pub scopes: Vec<String>,
    /// The `client_ip` the key was presented from, recorded in the audit rows of what the
    /// transaction does with it.
    pub client_ip: Option<OwnedInet>,
}

thread_local! {
    static CURRENT: RefCell<Option<(pg_sys::LocalTransactionId, Identity)>> =
        const { RefCell::new(None) };
}

pub fn local_xid() -> pg_sys::LocalTransactionId {
    crate::compat::local_xid()
}

pub fn set(identity: Identity) {
    CURRENT.set(Some((local_xid(), identity)));
}

/// A failed verification forgets any earlier identity: after it, the transaction holds no
/// proven key, so a policy cannot act on a key the caller has just failed to present.
pub fn clear() {
    CURRENT.set(None);
}

pub fn current() -> Option<Identity> {
    let now = local_xid();
    CURRENT.with_borrow(|c| match c {
        Some((lxid, identity)) if *lxid == now => Some(identity.clone()),
        _ => None,
    })
}

#[pg_extern(stable, parallel_restricted)]
fn apikey_current_partner() -> Option<pgrx::Uuid> {
    current().map(|i| i.partner_id)
}

#[pg_extern(stable, parallel_restricted)]
fn apikey_current_key() -> Option<String> {
    current().map(|i| i.key_id)
}

#[pg_extern(stable, parallel_restricted)]
fn apikey_current_scopes() -> Option<Vec<String>> {
    current().map(|i| i.scopes)
}

/// Raises 42501 unless the key verified in this transaction has `required`. A NULL or
/// invalid requirement is never met (fail closed): a failed lookup in the caller's code must
/// not let the statement through.
#[pg_extern(stable, parallel_restricted)]
fn apikey_require_scope(required: Option<&str>) {
    let shown = required.map_or_else(|| "NULL".to_string(), redact::excerpt);
    match current() {
        Some(identity) if scope::has_all(&identity.scopes, [required]) => {}
        Some(identity) => Err(ApiError::denied(format!(
            "key {} lacks scope \"{shown}\"",
            identity.key_id
        )))
        .or_raise(),
        None => Err(ApiError::denied(format!(
            "scope \"{shown}\" required, but no key was verified in this transaction"
        ))
        .with_hint("Call apikey_verify(token, ...) first, in the same transaction."))
        .or_raise(),
    }
}
