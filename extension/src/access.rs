//! Who may do what. Powers come from the *outer* user (`GetOuterUserId()`), which follows
//! `SET ROLE` and is unchanged by SECURITY DEFINER: the shim logs in as a member of every
//! role and narrows itself with `SET LOCAL ROLE apikey_partner`, and must then have exactly
//! a partner's powers. `session_user` would still say "member of apikey_admin".

use crate::error::{ApiError, ApiResult};
use crate::identity;
use crate::scope;
use pgrx::prelude::*;
use std::ffi::CStr;

pub const MANAGE_SCOPE: &str = "keys:manage";

fn outer_user() -> pg_sys::Oid {
    // SAFETY: plain read of backend state, valid in any transaction.
    unsafe { pg_sys::GetOuterUserId() }
}

fn has_role(role: &CStr) -> bool {
    // SAFETY: missing_ok = true, so an absent role yields InvalidOid instead of an ERROR.
    unsafe {
        let role_oid = pg_sys::get_role_oid(role.as_ptr(), true);
        role_oid != pg_sys::InvalidOid && pg_sys::has_privs_of_role(outer_user(), role_oid)
    }
}

/// The role name recorded as `actor` in the audit log and `created_by` on keys.
pub fn actor() -> String {
    // SAFETY: noerr = true returns NULL for a dropped role instead of raising.
    unsafe {
        let name = pg_sys::GetUserNameFromId(outer_user(), true);
        if name.is_null() {
            format!("oid {}", outer_user().to_u32())
        } else {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }
}

pub fn is_admin() -> bool {
    has_role(c"apikey_admin")
}

pub fn require_admin(action: &str) -> ApiResult<()> {
    if is_admin() {
        Ok(())
    } else {
        Err(ApiError::denied(format!(
            "{action} requires the apikey_admin role"
        )))
    }
}

/// Who passed [`require_manager_of`].
pub enum Manager {
    Operator,
    Partner,
}

/// Whether the caller may manage `what` (keys, webhooks) belonging to partner `owner`: an
/// operator, or a partner whose key with scope `keys:manage`, verified in this transaction,
/// belongs to `owner`. A partner asking about another partner's object gets `hidden()`: it
/// is told the object does not exist, so ids of other partners cannot be probed.
pub fn require_manager_of(
    owner: pgrx::Uuid,
    what: &str,
    hidden: impl FnOnce() -> ApiError,
) -> ApiResult<Manager> {
    if is_admin() {
        return Ok(Manager::Operator);
    }
    if !has_role(c"apikey_partner") {
        return Err(ApiError::denied(format!(
            "managing {what} requires the apikey_admin or apikey_partner role"
        )));
    }
    let Some(identity) = identity::current() else {
        return Err(ApiError::denied(format!(
            "managing {what} as a partner requires a key with scope {MANAGE_SCOPE} verified in this transaction"
        ))
        .with_hint("Call apikey_verify(token, '{keys:manage}') first, in the same transaction."));
    };
    if identity.partner_id != owner {
        return Err(hidden());
    }
    if !scope::has_scope(identity.scopes.iter().map(String::as_str), MANAGE_SCOPE) {
        return Err(ApiError::denied(format!(
            "key {} lacks scope {MANAGE_SCOPE}",
            identity.key_id
        )));
    }
    Ok(Manager::Partner)
}

/// Whether the caller may rotate, revoke, enable or disable the key `key_id` of partner
/// `key_partner` that holds `key_scopes`. A key holding an operator scope (`admin:*`, `*`)
/// is an operator's alone, even one issued to the partner's own account: a partner that
/// could rotate it would obtain an operator's token.
pub fn require_key_manager(
    key_id: &str,
    key_partner: pgrx::Uuid,
    key_scopes: &[String],
) -> ApiResult<()> {
    if let Manager::Operator = require_manager_of(key_partner, "keys", || key_not_found(key_id))? {
        return Ok(());
    }
    if key_scopes.iter().any(|s| scope::is_operator(s)) {
        return Err(ApiError::denied(format!(
            "key {key_id} holds an operator scope (admin:* or *): only an operator may manage it"
        )));
    }
    Ok(())
}

/// A partner may rotate a key only to scopes its current ones already grant (or keep them):
/// rotation never widens a key. Operators may give any valid scopes.
pub fn require_narrowing(key_id: &str, current: &[String], requested: &[String]) -> ApiResult<()> {
    if is_admin() {
        return Ok(());
    }
    match requested
        .iter()
        .find(|r| !scope::has_scope(current.iter().map(String::as_str), r))
    {
        None => Ok(()),
        Some(wider) => Err(ApiError::denied(format!(
            "rotating key {key_id} cannot add scope \"{wider}\": a partner may only keep or narrow a key's scopes"
        ))),
    }
}

pub fn key_not_found(key_id: &str) -> ApiError {
    if crate::token::is_key_id(key_id) {
        ApiError::not_found(format!("key \"{key_id}\""))
    } else {
        // Never echo it: a mistyped or padded token pasted here would put its secret into the
        // error message and the server log.
        ApiError::not_found("the key named by key_id")
            .with_hint("A key_id looks like ak_live_3xF0q9LmZ2bT7cYw: the token up to its last '_'. Was a token passed instead?")
    }
}
