//! Appends to `apikey.audit_log`. Rows carry key ids, never tokens or secrets.

use crate::error::ApiResult;
use crate::sqltypes::InetDatum;
use crate::{access, db, identity, version};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;

pub struct Event<'a> {
    pub action: &'a str,
    pub key_id: Option<&'a str>,
    pub partner_id: Option<pgrx::Uuid>,
    pub reason: Option<&'a str>,
    pub client_ip: Option<InetDatum>,
    pub detail: serde_json::Value,
}

impl<'a> Event<'a> {
    pub fn new(action: &'a str) -> Self {
        Event {
            action,
            key_id: None,
            partner_id: None,
            reason: None,
            client_ip: None,
            detail: serde_json::Value::Object(Default::default()),
        }
    }
}

const INSERT: &str = "INSERT INTO apikey.audit_log \
    (action, key_id, partner_id, actor, reason, client_ip, detail) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

const INSERT_ACTION: &str = "INSERT INTO apikey.audit_log \
    (action, key_id, partner_id, actor, reason, client_ip, detail, actor_key_id) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Records a management action (issue, rotate, revoke, ...) by the caller: its role, and the
/// key verified in this transaction with the address it was presented from, which is how a
/// request through the shim names the key that made it. A database still at a release
/// without `actor_key_id` gets the row it can hold.
pub fn record_action(client: &mut SpiClient<'_>, event: Event<'_>) -> ApiResult<()> {
    if !version::schema_has(version::ACTOR_KEY_ID)? {
        return Ok(record(client, event)?);
    }
    let acting = identity::current();
    db::execute(
        client,
        INSERT_ACTION,
        &[
            pg_sys::TEXTOID,
            pg_sys::TEXTOID,
            pg_sys::UUIDOID,
            pg_sys::TEXTOID,
            pg_sys::TEXTOID,
            pg_sys::INETOID,
            pg_sys::JSONBOID,
            pg_sys::TEXTOID,
        ],
        &[
            event.action.into(),
            event.key_id.into(),
            event.partner_id.into(),
            access::actor().into(),
            event.reason.into(),
            acting.as_ref().and_then(|a| a.client_ip.clone()).into(),
            JsonB(event.detail).into(),
            acting.as_ref().map(|a| a.key_id.as_str()).into(),
        ],
    )?;
    Ok(())
}

/// Records an event of a verification (a failure, a re-hash) unless the transaction cannot
/// write (read-only or standby).
pub fn record(client: &mut SpiClient<'_>, event: Event<'_>) -> pgrx::spi::SpiResult<()> {
    if !db::can_write() {
        return Ok(());
    }
    db::execute(
        client,
        INSERT,
        &[
            pg_sys::TEXTOID,
            pg_sys::TEXTOID,
            pg_sys::UUIDOID,
            pg_sys::TEXTOID,
            pg_sys::TEXTOID,
            pg_sys::INETOID,
            pg_sys::JSONBOID,
        ],
        &[
            event.action.into(),
            event.key_id.into(),
            event.partner_id.into(),
            access::actor().into(),
            event.reason.into(),
            event.client_ip.into(),
            JsonB(event.detail).into(),
        ],
    )?;
    Ok(())
}
