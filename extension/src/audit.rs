//! Appends to `apikey.audit_log`. Rows carry key ids, never tokens or secrets.

use crate::access;
use crate::db;
use crate::sqltypes::InetDatum;
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

/// Records `event` unless the transaction cannot write (read-only or standby).
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
