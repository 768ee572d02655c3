//! Webhook endpoints: create, rotate the secret, enable or disable, delete, send a test
//! event. Operators manage any partner's endpoints, a partner its own after verifying a
//! `keys:manage` key in the same transaction (see `access`); every change writes an audit
//! row. The signing secret is returned once and stored sealed (`apikey_core::seal`).

use crate::access;
use crate::audit::{self, Event};
use crate::error::{ApiError, ApiResult, OrRaise};
use crate::{events, guc, seal, validate, version};
use apikey_core::webhook;
use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::json;

// More endpoints per partner would make every key event a longer fan-out; a secret's grace
// is long enough for a deploy, short enough that a leaked secret dies.
use apikey_contract::limits::{
    MAX_WEBHOOK_ENDPOINTS_PER_PARTNER as MAX_ENDPOINTS_PER_PARTNER,
    MAX_WEBHOOK_SECRET_GRACE_SECONDS as MAX_GRACE_SECONDS,
};

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_webhook_create(
    partner_id: Option<pgrx::Uuid>,
    url: Option<&str>,
    events: default!(Option<Vec<Option<String>>>, "'{*}'"),
) -> TableIterator<'static, (name!(endpoint_id, pgrx::Uuid), name!(secret, String))> {
    let created = Spi::connect_mut(|client| create(client, partner_id, url, events)).or_raise();
    TableIterator::once(created)
}

fn create(
    client: &mut SpiClient<'_>,
    partner_id: Option<pgrx::Uuid>,
    url: Option<&str>,
    events: Option<Vec<Option<String>>>,
) -> ApiResult<(pgrx::Uuid, String)> {
    let partner_id = partner_id.ok_or_else(|| ApiError::null("partner_id"))?;
    let url = url.ok_or_else(|| ApiError::null("url"))?;
    let events = events.ok_or_else(|| ApiError::null("events"))?;
    let partner_missing = || ApiError::not_found(format!("partner_id {partner_id}"));
    access::require_manager_of(partner_id, "webhooks", partner_missing)?;
    let url = validate::webhook_url(url, guc::webhook_allow_private_urls())
        .map_err(|e| ApiError::invalid("url", e))?;
    let events = validate::webhook_events(&events).map_err(|e| ApiError::invalid("events", e))?;
    // Concurrent creates for one partner take turns here, and each counts after the one
    // before it committed (a new statement, a new snapshot): the limit holds under any race.
    // NO KEY UPDATE leaves issuing keys for the partner (a foreign key check) unblocked.
    let partner = client.update(
        "SELECT 1 FROM apikey.partners WHERE partner_id = $1 FOR NO KEY UPDATE",
        Some(1),
        &[partner_id.into()],
    )?;
    if partner.is_empty() {
        return Err(partner_missing());
    }
    let row = client.select(
        "SELECT (SELECT count(*) FROM apikey.webhook_endpoints WHERE partner_id = $1), \
                gen_random_uuid()",
        Some(1),
        &[partner_id.into()],
    )?;
    let row = row.first();
    if row.get::<i64>(1)?.unwrap_or(0) >= MAX_ENDPOINTS_PER_PARTNER {
        return Err(ApiError::state(format!(
            "partner {partner_id} already has {MAX_ENDPOINTS_PER_PARTNER} webhook endpoints, the most allowed"
        ))
        .with_hint("Delete one, or subscribe an existing endpoint to more events."));
    }
    let endpoint_id = row
        .get::<pgrx::Uuid>(2)?
        .ok_or_else(|| ApiError::internal("gen_random_uuid() returned NULL"))?;
    let (sealed, pepper, secret) = new_sealed_secret(endpoint_id)?;
    client.update(
        "INSERT INTO apikey.webhook_endpoints \
            (endpoint_id, partner_id, url, events, secret_sealed, secret_pepper) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        None,
        &[
            endpoint_id.into(),
            partner_id.into(),
            url.as_str().into(),
            events.clone().into(),
            sealed.into(),
            pepper.into(),
        ],
    )?;
    let mut event = Event::new("webhook_create");
    event.partner_id = Some(partner_id);
    event.detail = json!({ "endpoint_id": endpoint_id.to_string(), "url": url, "events": events });
    audit::record_action(client, event)?;
    Ok((endpoint_id, secret))
}

/// A new secret for `endpoint_id`: sealed under the newest pepper, that pepper's
/// fingerprint, and the serialized secret to show once.
fn new_sealed_secret(endpoint_id: pgrx::Uuid) -> ApiResult<(Vec<u8>, String, String)> {
    let random_failed = |_| ApiError::internal("the OS random number generator failed");
    let (key, secret) = webhook::generate_secret().map_err(random_failed)?;
    let peppers = guc::peppers()?;
    let pepper = peppers.newest();
    let sealed = seal::seal(pepper, endpoint_id.as_bytes(), &key)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((sealed, pepper.fingerprint.clone(), secret))
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_webhook_rotate_secret(
    endpoint_id: Option<pgrx::Uuid>,
    grace: default!(Option<Interval>, "'24 hours'"),
) -> String {
    Spi::connect_mut(|client| rotate_secret(client, endpoint_id, grace)).or_raise()
}

fn rotate_secret(
    client: &mut SpiClient<'_>,
    endpoint_id: Option<pgrx::Uuid>,
    grace: Option<Interval>,
) -> ApiResult<String> {
    let endpoint = Endpoint::for_change(client, endpoint_id)?;
    let grace = grace.ok_or_else(|| ApiError::null("grace"))?;
    let grace_seconds = grace.as_micros() / 1_000_000;
    if grace.as_micros() < 0 || grace_seconds > i128::from(MAX_GRACE_SECONDS) {
        return Err(ApiError::invalid(
            "grace",
            "must be between 0 and 7 days; the previous secret signs until it ends",
        ));
    }
    let (sealed, pepper, secret) = new_sealed_secret(endpoint.endpoint_id)?;
    client.update(
        "UPDATE apikey.webhook_endpoints SET \
            previous_secret_sealed = CASE WHEN $2 > interval '0' THEN secret_sealed END, \
            previous_secret_pepper = CASE WHEN $2 > interval '0' THEN secret_pepper END, \
            previous_secret_until = CASE WHEN $2 > interval '0' THEN clock_timestamp() + $2 END, \
            secret_sealed = $3, secret_pepper = $4, \
            secret_rotated_at = clock_timestamp(), updated_at = clock_timestamp() \
         WHERE endpoint_id = $1",
        None,
        &[
            endpoint.endpoint_id.into(),
            grace.into(),
            sealed.into(),
            pepper.into(),
        ],
    )?;
    endpoint.audit(
        client,
        "webhook_rotate_secret",
        json!({ "grace_seconds": grace_seconds as i64 }),
    )?;
    Ok(secret)
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_webhook_delete(endpoint_id: Option<pgrx::Uuid>) {
    Spi::connect_mut(|client| {
        let endpoint = Endpoint::for_change(client, endpoint_id)?;
        client.update(
            "DELETE FROM apikey.webhook_endpoints WHERE endpoint_id = $1",
            None,
            &[endpoint.endpoint_id.into()],
        )?;
        endpoint.audit(client, "webhook_delete", json!({}))
    })
    .or_raise()
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_webhook_set_enabled(endpoint_id: Option<pgrx::Uuid>, enabled: Option<bool>) {
    Spi::connect_mut(|client| {
        let endpoint = Endpoint::for_change(client, endpoint_id)?;
        let enabled = enabled.ok_or_else(|| ApiError::null("enabled"))?;
        set_enabled(client, endpoint.endpoint_id, enabled, None)?;
        let action = if enabled {
            "webhook_enable"
        } else {
            "webhook_disable"
        };
        endpoint.audit(client, action, json!({}))
    })
    .or_raise()
}

/// Enabling clears the failure record, so an endpoint disabled for failing gets a fresh
/// start; `reason` says why it was disabled (NULL: by someone's choice).
pub fn set_enabled(
    client: &mut SpiClient<'_>,
    endpoint_id: pgrx::Uuid,
    enabled: bool,
    reason: Option<&str>,
) -> ApiResult<()> {
    client.update(
        "UPDATE apikey.webhook_endpoints SET enabled = $2, updated_at = clock_timestamp(), \
            disabled_at = CASE WHEN $2 THEN NULL ELSE coalesce(disabled_at, clock_timestamp()) END, \
            disabled_reason = CASE WHEN $2 THEN NULL ELSE $3 END, \
            failing_since = CASE WHEN $2 THEN NULL ELSE failing_since END \
         WHERE endpoint_id = $1",
        None,
        &[endpoint_id.into(), enabled.into(), reason.into()],
    )?;
    if enabled && version::schema_has(version::ROUND_THREE)? {
        client.update(
            "UPDATE apikey.webhook_endpoints SET failures_in_a_row = 0, paused_until = NULL \
             WHERE endpoint_id = $1",
            None,
            &[endpoint_id.into()],
        )?;
    }
    Ok(())
}

/// Queues a `webhook.test` event for this endpoint alone, whatever it subscribes to.
#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_webhook_send_test(endpoint_id: Option<pgrx::Uuid>) -> pgrx::Uuid {
    Spi::connect_mut(|client| {
        let endpoint = Endpoint::for_change(client, endpoint_id)?;
        if !endpoint.enabled {
            return Err(ApiError::state(format!(
                "webhook endpoint {} is disabled: enable it before sending a test event",
                endpoint.endpoint_id
            )));
        }
        let event_id =
            events::record_test_event(client, endpoint.endpoint_id, endpoint.partner_id)?;
        endpoint.audit(
            client,
            "webhook_test",
            json!({ "event_id": event_id.to_string() }),
        )?;
        Ok(event_id)
    })
    .or_raise()
}

/// An endpoint about to be changed, locked, after the caller's right to change it was
/// checked. A partner naming another partner's endpoint is told it does not exist.
struct Endpoint {
    endpoint_id: pgrx::Uuid,
    partner_id: pgrx::Uuid,
    enabled: bool,
}

impl Endpoint {
    fn for_change(client: &mut SpiClient<'_>, endpoint_id: Option<pgrx::Uuid>) -> ApiResult<Self> {
        let endpoint_id = endpoint_id.ok_or_else(|| ApiError::null("endpoint_id"))?;
        let missing = || ApiError::not_found(format!("webhook endpoint {endpoint_id}"));
        let rows = client.update(
            "SELECT partner_id, enabled FROM apikey.webhook_endpoints \
             WHERE endpoint_id = $1 FOR UPDATE",
            Some(1),
            &[endpoint_id.into()],
        )?;
        if rows.is_empty() {
            return Err(missing());
        }
        let row = rows.first();
        let partner_id = row
            .get::<pgrx::Uuid>(1)?
            .ok_or_else(|| ApiError::internal("webhook endpoint without a partner"))?;
        access::require_manager_of(partner_id, "webhooks", missing)?;
        Ok(Endpoint {
            endpoint_id,
            partner_id,
            enabled: row.get::<bool>(2)?.unwrap_or(false),
        })
    }

    fn audit(
        &self,
        client: &mut SpiClient<'_>,
        action: &str,
        detail: serde_json::Value,
    ) -> ApiResult<()> {
        let mut event = Event::new(action);
        event.partner_id = Some(self.partner_id);
        let mut detail = detail;
        detail["endpoint_id"] = json!(self.endpoint_id.to_string());
        event.detail = detail;
        audit::record_action(client, event)
    }
}
