//! Partners: the organisations keys are issued to. Admin-only.

use crate::access;
use crate::audit::{self, Event};
use crate::error::{ApiError, ApiResult, OrRaise};
use crate::{redact, validate};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_partner_create(
    name: Option<&str>,
    contact_email: default!(Option<&str>, "NULL"),
) -> pgrx::Uuid {
    Spi::connect_mut(|client| create(client, name, contact_email)).or_raise()
}

fn create(
    client: &mut SpiClient<'_>,
    name: Option<&str>,
    email: Option<&str>,
) -> ApiResult<pgrx::Uuid> {
    access::require_admin("apikey_partner_create")?;
    let name = name.ok_or_else(|| ApiError::null("name"))?;
    validate::name(name).map_err(|e| ApiError::invalid("name", e))?;
    if let Some(email) = email {
        validate::email(email).map_err(|e| ApiError::invalid("contact_email", e))?;
    }
    // ON CONFLICT rather than a check first: two sessions creating the same name at once
    // must both get this error, not one of them PostgreSQL's unique violation (whose DETAIL
    // would repeat the name).
    let inserted = client.update(
        "INSERT INTO apikey.partners (name, contact_email) VALUES ($1, $2) \
         ON CONFLICT ((lower(name))) DO NOTHING RETURNING partner_id",
        Some(1),
        &[name.into(), email.into()],
    )?;
    if inserted.is_empty() {
        return Err(ApiError::new(
            PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            format!(
                "a partner named \"{}\" already exists",
                redact::excerpt(name)
            ),
        ));
    }
    let partner_id = inserted
        .first()
        .get::<pgrx::Uuid>(1)?
        .ok_or_else(|| ApiError::internal("INSERT returned no partner_id"))?;
    let mut event = Event::new("partner_create");
    event.partner_id = Some(partner_id);
    event.detail = serde_json::json!({ "name": name });
    audit::record_action(client, event)?;
    Ok(partner_id)
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_partner_set_active(partner_id: Option<pgrx::Uuid>, active: Option<bool>) {
    Spi::connect_mut(|client| set_active(client, partner_id, active)).or_raise()
}

fn set_active(
    client: &mut SpiClient<'_>,
    partner_id: Option<pgrx::Uuid>,
    active: Option<bool>,
) -> ApiResult<()> {
    access::require_admin("apikey_partner_set_active")?;
    let partner_id = partner_id.ok_or_else(|| ApiError::null("partner_id"))?;
    let active = active.ok_or_else(|| ApiError::null("active"))?;
    let updated = client.update(
        "UPDATE apikey.partners SET active = $2, updated_at = now() WHERE partner_id = $1 RETURNING 1",
        None,
        &[partner_id.into(), active.into()],
    )?;
    if updated.is_empty() {
        return Err(ApiError::not_found(format!("partner_id {partner_id}")));
    }
    let mut event = Event::new(if active {
        "partner_activate"
    } else {
        "partner_deactivate"
    });
    event.partner_id = Some(partner_id);
    audit::record_action(client, event)?;
    Ok(())
}
