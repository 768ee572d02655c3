//! The outbox, `apikey.events`: what partners are told about their keys, written by the
//! lifecycle functions in the caller's transaction, next to the change it announces, so a
//! change that rolls back announces nothing. A payload carries the key's public fields
//! (`key_id`, `partner_id`, `name`, `scopes`, `environment`, `expires_at`, `revoked_at`: for
//! `key.rotated` the end of the grace period) and what the event adds, never a token or a
//! secret.

use crate::error::ApiResult;
use crate::version;
use pgrx::spi::SpiClient;
use pgrx::JsonB;

pub use crate::outbox::{
    KEY_CREDITS_EXHAUSTED, KEY_DISABLED, KEY_ENABLED, KEY_ISSUED, KEY_REVOKED, KEY_ROTATED,
    PARTNER_CREDITS_EXHAUSTED,
};

/// The `timestamp` of a body: the row's own `created_at` (`now.at`), in UTC.
macro_rules! body_timestamp {
    () => {
        "to_char(now.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    };
}

/// The body is the Standard Webhooks shape: `{"type", "timestamp", "data"}`.
macro_rules! insert_key_event {
    () => {
        concat!(
            "WITH k AS (SELECT key_id, partner_id, name, scopes, environment, expires_at, revoked_at \
                       FROM apikey.keys WHERE key_id = $2), \
                 now AS (SELECT clock_timestamp() AS at) \
             INSERT INTO apikey.events (created_at, partner_id, type, key_id, payload) \
             SELECT now.at, k.partner_id, $1, k.key_id, jsonb_build_object( \
                 'type', $1::text, 'timestamp', ",
            body_timestamp!(),
            ", 'data', to_jsonb(k) || $3::jsonb) \
             FROM k, now"
        )
    };
}

const INSERT: &str = insert_key_event!();

/// After a CTE `event` that inserted one event (`RETURNING event_id, partner_id, type,
/// created_at`): a delivery to each enabled endpoint of its partner subscribed to its type
/// (`*`, the type's family such as `key.*`, or the type itself).
macro_rules! fan_out {
    () => {
        "INSERT INTO apikey.webhook_deliveries \
             (event_id, endpoint_id, partner_id, event_type, created_at, next_attempt_at) \
         SELECT event.event_id, w.endpoint_id, event.partner_id, event.type, event.created_at, \
                event.created_at \
         FROM event JOIN apikey.webhook_endpoints w ON w.partner_id = event.partner_id \
         WHERE w.enabled \
           AND w.events && ARRAY['*', event.type, split_part(event.type, '.', 1) || '.*']"
    };
}

/// [`INSERT`], and a delivery to each enabled endpoint of the partner subscribed to the type
/// (`*`, `key.*` or the type itself), in the same statement and transaction.
const INSERT_AND_FAN_OUT: &str = concat!(
    "WITH event AS (",
    insert_key_event!(),
    " RETURNING event_id, partner_id, type, created_at) ",
    fan_out!()
);

/// Records `event_type` about `key_id`, with `extra` added to the key's fields. A database
/// still at a release without the outbox gets nothing.
pub fn record_key_event(
    client: &mut SpiClient<'_>,
    event_type: &str,
    key_id: &str,
    extra: serde_json::Value,
) -> ApiResult<()> {
    if !version::schema_has(version::EVENTS)? {
        return Ok(());
    }
    let statement = if version::schema_has(version::WEBHOOKS)? {
        INSERT_AND_FAN_OUT
    } else {
        INSERT
    };
    client.update(
        statement,
        None,
        &[event_type.into(), key_id.into(), JsonB(extra).into()],
    )?;
    Ok(())
}

/// Records `event_type` about partner `partner_id` (its `partner_id` and `name`, with
/// `extra` added) and a delivery to each enabled endpoint of the partner subscribed to it
/// (`*`, `partner.*` or the type itself). Only for releases with webhooks (0.4.0).
pub fn record_partner_event(
    client: &mut SpiClient<'_>,
    event_type: &str,
    partner_id: pgrx::Uuid,
    extra: serde_json::Value,
) -> ApiResult<()> {
    const INSERT_PARTNER_EVENT: &str = concat!(
        "WITH p AS (SELECT partner_id, name FROM apikey.partners WHERE partner_id = $2), \
              now AS (SELECT clock_timestamp() AS at), \
         event AS ( \
            INSERT INTO apikey.events (created_at, partner_id, type, payload) \
            SELECT now.at, p.partner_id, $1, jsonb_build_object('type', $1::text, 'timestamp', ",
        body_timestamp!(),
        ", 'data', to_jsonb(p) || $3::jsonb) \
            FROM p, now RETURNING event_id, partner_id, type, created_at) ",
        fan_out!()
    );
    client.update(
        INSERT_PARTNER_EVENT,
        None,
        &[event_type.into(), partner_id.into(), JsonB(extra).into()],
    )?;
    Ok(())
}

/// A `webhook.test` event about endpoint `endpoint_id` of `partner_id`, queued for that
/// endpoint alone, whatever it subscribes to. Returns the event's id.
pub fn record_test_event(
    client: &mut SpiClient<'_>,
    endpoint_id: pgrx::Uuid,
    partner_id: pgrx::Uuid,
) -> ApiResult<pgrx::Uuid> {
    const INSERT_TEST: &str = concat!(
        "WITH now AS (SELECT clock_timestamp() AS at), \
         event AS ( \
            INSERT INTO apikey.events (created_at, partner_id, type, payload) \
            SELECT now.at, $2, $3, jsonb_build_object('type', $3::text, 'timestamp', ",
        body_timestamp!(),
        ", 'data', jsonb_build_object('endpoint_id', $1::uuid, 'partner_id', $2::uuid)) \
            FROM now RETURNING event_id, created_at) \
         INSERT INTO apikey.webhook_deliveries \
            (event_id, endpoint_id, partner_id, event_type, created_at, next_attempt_at) \
         SELECT event_id, $1, $2, $3, created_at, created_at FROM event \
         RETURNING event_id"
    );
    client
        .update(
            INSERT_TEST,
            Some(1),
            &[
                endpoint_id.into(),
                partner_id.into(),
                crate::outbox::WEBHOOK_TEST.into(),
            ],
        )?
        .first()
        .get::<pgrx::Uuid>(1)?
        .ok_or_else(|| crate::error::ApiError::internal("the test event was not written"))
}
