//! The deliverer's side of the outbox, called by `apikey-shim`: lease due deliveries with
//! their signed requests (`apikey_webhook_claim`), then report each attempt
//! (`apikey_webhook_report`). Signatures are computed here, so a webhook secret never leaves
//! the database; what to do after a failure (retry when, give up, disable the endpoint) is
//! decided here too, so every shim follows one schedule.

use crate::access;
use crate::audit::{self, Event};
use crate::clock;
use crate::error::{ApiError, ApiResult, OrRaise};
use crate::webhook_endpoints;
use crate::{guc, outbox, redact, seal, version};
use apikey_core::pepper::PepperSet;
use apikey_core::webhook;
use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::json;

const MAX_BATCH: i32 = 1000;
const MAX_LEASE_SECONDS: i128 = 3600;
const MAX_ERROR_CHARS: usize = 500;

/// Due deliveries of enabled endpoints that are not paused, leased to the caller, shared
/// out fairly: an endpoint has at most `$4` attempts in flight (across every deliverer), a
/// partner at most `$3`, and what is free goes to partners in turn, the one with the fewest
/// in flight first, each partner's oldest first. A hanging receiver thus holds at most a
/// few slots and only now and then (its failures pause it, `outbox::endpoint_pause_seconds`),
/// and no partner's backlog delays another's events.
///
/// Rows another transaction is claiming are skipped, and a leased row is offered again only
/// once its lease has run out (its deliverer died or hung), which is what makes delivery at
/// least once without two deliverers sending one event at the same time. The lease test is
/// repeated where the rows are locked: a row another claim leased meanwhile is re-checked
/// there (READ COMMITTED re-evaluates only that level's conditions), not in `ready`.
const CLAIM: &str = "\
    WITH in_flight AS MATERIALIZED ( \
        SELECT endpoint_id, partner_id FROM apikey.webhook_deliveries \
        WHERE state = 'pending' AND leased_until > clock_timestamp()), \
    ready AS ( \
        SELECT d.delivery_id, d.endpoint_id, d.partner_id, d.next_attempt_at, \
            row_number() OVER (PARTITION BY d.endpoint_id \
                ORDER BY d.next_attempt_at, d.delivery_id) AS place \
        FROM apikey.webhook_deliveries d \
        JOIN apikey.webhook_endpoints w ON w.endpoint_id = d.endpoint_id \
        WHERE d.state = 'pending' AND d.next_attempt_at <= clock_timestamp() \
          AND (d.leased_until IS NULL OR d.leased_until <= clock_timestamp()) AND w.enabled \
          AND {NOT_PAUSED}), \
    ranked AS ( \
        SELECT r.delivery_id, r.next_attempt_at, \
            row_number() OVER (PARTITION BY r.partner_id \
                ORDER BY r.place, r.next_attempt_at, r.delivery_id) \
            + (SELECT count(*) FROM in_flight f WHERE f.partner_id = r.partner_id) AS turn \
        FROM ready r \
        WHERE r.place + (SELECT count(*) FROM in_flight f WHERE f.endpoint_id = r.endpoint_id) <= $4), \
    due AS ( \
        SELECT d.delivery_id FROM apikey.webhook_deliveries d \
        JOIN ranked ON ranked.delivery_id = d.delivery_id \
        WHERE ranked.turn <= $3 AND d.state = 'pending' \
          AND (d.leased_until IS NULL OR d.leased_until <= clock_timestamp()) \
        ORDER BY ranked.turn, ranked.next_attempt_at \
        LIMIT $1 \
        FOR UPDATE OF d SKIP LOCKED) \
    UPDATE apikey.webhook_deliveries d SET leased_until = clock_timestamp() + $2 \
    FROM due, apikey.webhook_endpoints w, apikey.events e \
    WHERE d.delivery_id = due.delivery_id AND w.endpoint_id = d.endpoint_id \
      AND e.event_id = d.event_id \
    RETURNING d.delivery_id, d.endpoint_id, w.url, e.event_id::text, e.payload::text, \
        d.attempts + 1, w.secret_sealed, w.secret_pepper, \
        CASE WHEN w.previous_secret_until > clock_timestamp() THEN w.previous_secret_sealed END, \
        w.previous_secret_pepper";

/// An endpoint that is not paused; a database before 0.5.0 has no pauses.
const NOT_PAUSED: (&str, &str) = (
    "{NOT_PAUSED}",
    "(w.paused_until IS NULL OR w.paused_until <= clock_timestamp())",
);

type Claimed = (i64, pgrx::Uuid, String, String, i64, String, String, i32);

#[allow(clippy::type_complexity)]
#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_webhook_claim(
    max_deliveries: default!(Option<i32>, 10),
    lease: default!(Option<Interval>, "'1 minute'"),
) -> TableIterator<
    'static,
    (
        name!(delivery_id, i64),
        name!(endpoint_id, pgrx::Uuid),
        name!(url, String),
        name!(msg_id, String),
        name!(msg_timestamp, i64),
        name!(payload, String),
        name!(signature, String),
        name!(attempt, i32),
    ),
> {
    let claimed = Spi::connect_mut(|client| claim(client, max_deliveries, lease)).or_raise();
    TableIterator::new(claimed)
}

fn claim(
    client: &mut SpiClient<'_>,
    max_deliveries: Option<i32>,
    lease: Option<Interval>,
) -> ApiResult<Vec<Claimed>> {
    access::require_admin("apikey_webhook_claim")?;
    let max = max_deliveries.ok_or_else(|| ApiError::null("max_deliveries"))?;
    if !(1..=MAX_BATCH).contains(&max) {
        return Err(ApiError::invalid(
            "max_deliveries",
            format!("must be between 1 and {MAX_BATCH}"),
        ));
    }
    let lease = lease.ok_or_else(|| ApiError::null("lease"))?;
    if !(1_000_000..=MAX_LEASE_SECONDS * 1_000_000).contains(&lease.as_micros()) {
        return Err(ApiError::invalid(
            "lease",
            "must be between 1 second and 1 hour",
        ));
    }
    let not_paused = if version::schema_has(version::ROUND_THREE)? {
        NOT_PAUSED.1
    } else {
        "true"
    };
    let rows = client.update(
        &CLAIM.replace(NOT_PAUSED.0, not_paused),
        None,
        &[
            max.into(),
            lease.into(),
            i64::from(guc::webhook_partner_concurrency()).into(),
            i64::from(outbox::ENDPOINT_CONCURRENCY).into(),
        ],
    )?;
    let peppers = guc::peppers()?;
    let now = clock::unix_seconds();
    let mut claimed = Vec::with_capacity(rows.len());
    let mut unsignable = Vec::new();
    for row in rows {
        let get_text = |i: usize| -> ApiResult<String> {
            row.get::<String>(i)?
                .ok_or_else(|| ApiError::internal("a claimed delivery lacks a column"))
        };
        let delivery_id = row.get::<i64>(1)?.unwrap_or_default();
        let endpoint_id = row
            .get::<pgrx::Uuid>(2)?
            .ok_or_else(|| ApiError::internal("a claimed delivery lacks its endpoint"))?;
        let msg_id = get_text(4)?;
        let payload = get_text(5)?;
        let sealed_secret = |sealed: usize, pepper: usize| -> ApiResult<_> {
            Ok(row.get::<Vec<u8>>(sealed)?.zip(row.get::<String>(pepper)?))
        };
        let current = sealed_secret(7, 8)?
            .ok_or_else(|| ApiError::internal("a webhook endpoint without its secret"))?;
        let key = match open(&peppers, endpoint_id, &current) {
            Ok(key) => key,
            Err(why) => {
                unsignable.push((delivery_id, why));
                continue;
            }
        };
        let mut signature = webhook::sign(&key, &msg_id, now, payload.as_bytes());
        // During a rotation's grace the previous secret signs too; a receiver still on it
        // must not be cut off because its pepper has gone meanwhile, so that is no error.
        if let Some(Ok(previous)) = sealed_secret(9, 10)?.map(|p| open(&peppers, endpoint_id, &p)) {
            signature.push(' ');
            signature.push_str(&webhook::sign(&previous, &msg_id, now, payload.as_bytes()));
        }
        claimed.push((
            delivery_id,
            endpoint_id,
            get_text(3)?,
            msg_id,
            now,
            payload,
            signature,
            row.get::<i32>(6)?.unwrap_or(1),
        ));
    }
    for (delivery_id, why) in unsignable {
        report(client, Some(delivery_id), None, Some(0), Some(&why))?;
    }
    Ok(claimed)
}

/// Counts a failure in a row and pauses the endpoint for it, or ends the pause after a
/// success. The endpoint's row is locked by the report, so concurrent reports count every
/// failure.
fn pause(client: &mut SpiClient<'_>, endpoint_id: pgrx::Uuid, delivered: bool) -> ApiResult<()> {
    let failures = client
        .update(
            "UPDATE apikey.webhook_endpoints SET failures_in_a_row = \
                CASE WHEN $2 THEN 0 ELSE least(failures_in_a_row, 1000000) + 1 END \
             WHERE endpoint_id = $1 RETURNING failures_in_a_row",
            None,
            &[endpoint_id.into(), delivered.into()],
        )?
        .first()
        .get::<i32>(1)?
        .unwrap_or_default();
    let pause = (!delivered).then(|| outbox::endpoint_pause_seconds(failures) as f64);
    client.update(
        "UPDATE apikey.webhook_endpoints \
         SET paused_until = clock_timestamp() + make_interval(secs => $2) WHERE endpoint_id = $1",
        None,
        &[endpoint_id.into(), pause.into()],
    )?;
    Ok(())
}

/// The key of a sealed secret. A pepper taken out of the file leaves its endpoints'
/// secrets unopenable: the error says what to do, never what the secret is.
fn open(
    peppers: &PepperSet,
    endpoint_id: pgrx::Uuid,
    (sealed, fingerprint): &(Vec<u8>, String),
) -> Result<Vec<u8>, String> {
    let pepper = peppers.by_fingerprint(fingerprint).ok_or_else(|| {
        format!(
            "cannot sign: the pepper {fingerprint} that sealed this endpoint's secret is no longer in {}; rotate the endpoint's secret",
            crate::pepper::GUC
        )
    })?;
    seal::open(pepper, endpoint_id.as_bytes(), sealed).map_err(|e| format!("cannot sign: {e}"))
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_webhook_report(
    delivery_id: Option<i64>,
    status_code: Option<i32>,
    latency_ms: Option<i32>,
    error: Option<&str>,
) -> String {
    Spi::connect_mut(|client| {
        access::require_admin("apikey_webhook_report")?;
        report(client, delivery_id, status_code, latency_ms, error)
    })
    .or_raise()
}

/// Records one attempt and moves the delivery on: delivered on a 2xx, otherwise retried
/// after the schedule's next delay, or failed after the last attempt. An endpoint that has
/// had nothing but failures for `outbox::DISABLE_AFTER_SECONDS` is disabled, with an audit
/// row. A failed attempt pauses the endpoint (`outbox::endpoint_pause_seconds`), a success
/// ends the pause. Returns the delivery's state. A report for a delivery another deliverer already
/// finished (its lease had run out) is recorded and changes nothing else.
fn report(
    client: &mut SpiClient<'_>,
    delivery_id: Option<i64>,
    status_code: Option<i32>,
    latency_ms: Option<i32>,
    error: Option<&str>,
) -> ApiResult<String> {
    let delivery_id = delivery_id.ok_or_else(|| ApiError::null("delivery_id"))?;
    if let Some(status) = status_code.filter(|s| !(100..=599).contains(s)) {
        return Err(ApiError::invalid(
            "status_code",
            format!("{status} is not an HTTP status (100 to 599)"),
        ));
    }
    if latency_ms.is_some_and(|ms| ms < 0) {
        return Err(ApiError::invalid("latency_ms", "must not be negative"));
    }
    let delivered = status_code.is_some_and(|s| (200..=299).contains(&s));
    let error = match (delivered, error, status_code) {
        (true, _, _) => None,
        (false, Some(e), _) => Some(
            redact::without_secrets(e)
                .chars()
                .take(MAX_ERROR_CHARS)
                .collect(),
        ),
        (false, None, Some(status)) => Some(format!("HTTP {status}")),
        (false, None, None) => Some("no answer".to_string()),
    };
    let rows = client.update(
        "SELECT d.attempts + 1, d.state, d.endpoint_id, d.partner_id, d.event_id, \
                w.failing_since <= clock_timestamp() - make_interval(secs => $2) \
         FROM apikey.webhook_deliveries d \
         JOIN apikey.webhook_endpoints w ON w.endpoint_id = d.endpoint_id \
         WHERE d.delivery_id = $1 FOR UPDATE OF d, w",
        Some(1),
        &[
            delivery_id.into(),
            (outbox::DISABLE_AFTER_SECONDS as f64).into(),
        ],
    )?;
    if rows.is_empty() {
        return Err(ApiError::not_found(format!("delivery_id {delivery_id}")));
    }
    let row = rows.first();
    let attempt = row.get::<i32>(1)?.unwrap_or(1);
    let state = row.get::<String>(2)?.unwrap_or_default();
    let endpoint_id = row
        .get::<pgrx::Uuid>(3)?
        .ok_or_else(|| ApiError::internal("delivery without endpoint"))?;
    let partner_id = row
        .get::<pgrx::Uuid>(4)?
        .ok_or_else(|| ApiError::internal("delivery without partner"))?;
    let event_id = row
        .get::<pgrx::Uuid>(5)?
        .ok_or_else(|| ApiError::internal("delivery without event"))?;
    let failing_too_long = row.get::<bool>(6)?.unwrap_or(false);
    client.update(
        "INSERT INTO apikey.webhook_attempts \
            (delivery_id, endpoint_id, partner_id, event_id, attempt, status_code, latency_ms, error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        None,
        &[
            delivery_id.into(),
            endpoint_id.into(),
            partner_id.into(),
            event_id.into(),
            attempt.into(),
            status_code.into(),
            latency_ms.into(),
            error.as_deref().into(),
        ],
    )?;
    if state != "pending" {
        return Ok(state);
    }
    let retry_in = if delivered {
        None
    } else {
        outbox::retry_delay_seconds(attempt)
    };
    let new_state = match (delivered, retry_in) {
        (true, _) => "delivered",
        (false, Some(_)) => "pending",
        (false, None) => "failed",
    };
    client.update(
        "UPDATE apikey.webhook_deliveries SET state = $2, attempts = $3, leased_until = NULL, \
            next_attempt_at = clock_timestamp() + make_interval(secs => coalesce($4, 0)), \
            delivered_at = CASE WHEN $2 = 'delivered' THEN clock_timestamp() END, \
            last_status = $5, last_error = $6 \
         WHERE delivery_id = $1",
        None,
        &[
            delivery_id.into(),
            new_state.into(),
            attempt.into(),
            retry_in.map(|s| s as f64).into(),
            status_code.into(),
            error.as_deref().into(),
        ],
    )?;
    client.update(
        "UPDATE apikey.webhook_endpoints SET failing_since = \
            CASE WHEN $2 THEN NULL ELSE coalesce(failing_since, clock_timestamp()) END \
         WHERE endpoint_id = $1",
        None,
        &[endpoint_id.into(), delivered.into()],
    )?;
    if version::schema_has(version::ROUND_THREE)? {
        pause(client, endpoint_id, delivered)?;
    }
    if !delivered && failing_too_long {
        let reason = format!(
            "every delivery failed for more than {} days",
            outbox::DISABLE_AFTER_SECONDS / 86_400
        );
        webhook_endpoints::set_enabled(client, endpoint_id, false, Some(&reason))?;
        let mut event = Event::new("webhook_disable");
        event.partner_id = Some(partner_id);
        event.reason = Some(&reason);
        event.detail = json!({ "endpoint_id": endpoint_id.to_string(), "last_error": error });
        audit::record_action(client, event)?;
    }
    Ok(new_state.to_string())
}
