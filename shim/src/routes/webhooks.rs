//! Webhook endpoints: create, list, show, rotate the secret, delete, enable, disable, send a
//! test event, and read deliveries with their attempts. Each handler is one transaction
//! acting as the caller's key holder (see `db::act_as_key_holder`): a partner's key sees and
//! touches only its partner's endpoints, by row-level security and the extension's checks.

use super::{decode_cursor, page, page_size, Managed};
use crate::caller::Caller;
use crate::db;
use crate::error::AppError;
use crate::extract::{Json, OptionalJson, Path, Query};
use crate::openapi::answers::{BodyErrors, CallerErrors, InvalidInput, NotFound};
use crate::openapi::parameters::EndpointIdPath;
use crate::openapi::schemas;
use crate::state::AppState;
use apikey_contract::limits;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, remove))
        .routes(routes!(rotate_secret))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(send_test))
        .routes(routes!(deliveries))
}

/// The endpoint id of a path, or 422 naming the field. The text is not echoed: it may be
/// anything a client pasted, a token included.
fn endpoint_id(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw)
        .map_err(|_| AppError::invalid_field("endpoint_id", "endpoint_id must be a UUID"))
}

/// An endpoint as `apikey.webhook_endpoint_info` shows it (no secret), or 404 when the caller
/// cannot see it.
async fn fetch_endpoint(tx: &Transaction<'_>, endpoint_id: Uuid) -> Result<Value, AppError> {
    tx.query_opt(
        "SELECT to_jsonb(e) FROM apikey.webhook_endpoint_info e WHERE e.endpoint_id = $1",
        &[&endpoint_id],
    )
    .await?
    .map(|row| row.try_get(0))
    .transpose()?
    .ok_or_else(|| AppError::NotFound(format!("webhook endpoint {endpoint_id} does not exist")))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateWebhookRequest)]
struct CreateRequest {
    /// The partner whose key events the endpoint receives.
    partner_id: Uuid,
    /// http or https URL the events are POSTed to. Private, loopback and reserved addresses
    /// are refused unless the server allows them.
    #[schema(format = "uri")]
    url: String,
    /// Event types to receive (see `WebhookEvents`); default every event.
    #[schema(default = json!(["*"]))]
    events: Option<Vec<String>>,
}

/// Create a webhook endpoint
///
/// Calls `apikey_webhook_create(partner_id, url, events)`. The response is the only time the
/// signing secret (`whsec_...`) is shown; the database keeps it encrypted. Messages follow Standard
/// Webhooks: headers `webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,<base64
/// HMAC-SHA256 of id.timestamp.body>`).
///
/// An invalid `url` or `events` is 422 naming the field; an unknown partner is 404.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "createWebhook",
    request_body = CreateRequest,
    responses(
        (
            status = 201,
            description = "The endpoint and its secret (shown once).",
            body = schemas::CreatedWebhook,
        ),
        CallerErrors,
        BodyErrors,
        NotFound,
    ),
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(r): Json<CreateRequest>,
) -> Result<Managed, AppError> {
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let row = tx
        .query_one(
            "SELECT endpoint_id, secret FROM apikey_webhook_create($1::uuid, $2::text, \
                coalesce($3::text[], '{*}'))",
            &[&r.partner_id, &r.url, &r.events],
        )
        .await?;
    let endpoint_id: Uuid = row.try_get(0)?;
    let secret: String = row.try_get(1)?;
    let endpoint = fetch_endpoint(&tx, endpoint_id).await?;
    tx.commit().await?;
    Ok(Managed::created(
        json!({ "endpoint_id": endpoint_id, "secret": secret, "endpoint": endpoint }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListEndpoints {
    /// Only this partner's endpoints.
    partner_id: Option<Uuid>,
    /// Page size (out of range: 422).
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (one this API did not return: 422).
    cursor: Option<String>,
}

/// List webhook endpoints
///
/// Newest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "listWebhooks",
    params(ListEndpoints),
    responses(
        (status = 200, description = "One page of endpoints.", body = schemas::WebhookList),
        CallerErrors,
        InvalidInput,
    ),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<ListEndpoints>,
) -> Result<Managed, AppError> {
    let limit = page_size(f.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor(f.cursor.as_deref())?;
    let (after_at, after_id) = after.unzip();
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let rows = tx
        .query(
            "SELECT to_jsonb(e), e.created_at, e.endpoint_id \
             FROM apikey.webhook_endpoint_info e \
             WHERE ($1::uuid IS NULL OR e.partner_id = $1) \
               AND ($2::timestamptz IS NULL OR (e.created_at, e.endpoint_id) < ($2, $3::uuid)) \
             ORDER BY e.created_at DESC, e.endpoint_id DESC LIMIT $4",
            &[&f.partner_id, &after_at, &after_id, &(limit + 1)],
        )
        .await?;
    tx.commit().await?;
    page(&rows, limit, |row| {
        Ok((
            row.try_get::<_, DateTime<Utc>>(1)?,
            row.try_get::<_, Uuid>(2)?,
        ))
    })
}

/// Show a webhook endpoint
///
/// A row of `apikey.webhook_endpoint_info` (never a secret).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{endpoint_id}",
    tag = "webhooks",
    operation_id = "getWebhook",
    params(EndpointIdPath),
    responses(
        (status = 200, description = "The endpoint.", body = schemas::WebhookEndpoint),
        CallerErrors,
        InvalidInput,
        NotFound,
    ),
)]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Managed, AppError> {
    let id = endpoint_id(&raw)?;
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let endpoint = fetch_endpoint(&tx, id).await?;
    tx.commit().await?;
    Ok(Managed::ok(endpoint))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RotateWebhookSecretRequest)]
struct RotateSecretRequest {
    /// How long the previous secret keeps signing next to the new one.
    #[schema(minimum = 0, maximum = 604_800, default = 86_400)]
    grace_seconds: Option<i64>,
}

const DEFAULT_GRACE_SECONDS: i64 = 24 * 3600;

/// Rotate an endpoint's signing secret
///
/// Calls `apikey_webhook_rotate_secret(endpoint_id, grace)`. The response is the only time the new
/// secret is shown. Until `previous_secret_until` messages carry two signatures, one with each
/// secret, so the receiver can switch at its own pace. The body is optional: empty means the
/// defaults.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{endpoint_id}/rotate-secret",
    tag = "webhooks",
    operation_id = "rotateWebhookSecret",
    params(EndpointIdPath),
    request_body = Option<RotateSecretRequest>,
    responses(
        (
            status = 200,
            description = "The new secret (shown once).",
            body = schemas::RotatedWebhookSecret,
        ),
        CallerErrors,
        BodyErrors,
        NotFound,
    ),
)]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    OptionalJson(r): OptionalJson<RotateSecretRequest>,
) -> Result<Managed, AppError> {
    let id = endpoint_id(&raw)?;
    let grace = super::grace_seconds(
        r.grace_seconds,
        DEFAULT_GRACE_SECONDS,
        limits::MAX_WEBHOOK_SECRET_GRACE_SECONDS,
    )?;
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let row = tx
        .query_one(
            "SELECT apikey_webhook_rotate_secret($1, make_interval(secs => $2::bigint))",
            &[&id, &grace],
        )
        .await?;
    let secret: String = row.try_get(0)?;
    let endpoint = fetch_endpoint(&tx, id).await?;
    tx.commit().await?;
    Ok(Managed::ok(json!({
        "endpoint_id": id,
        "secret": secret,
        "previous_secret_until": endpoint["previous_secret_until"],
    })))
}

/// Delete a webhook endpoint
///
/// Calls `apikey_webhook_delete(endpoint_id)`: nothing more is sent to it.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{endpoint_id}",
    tag = "webhooks",
    operation_id = "deleteWebhook",
    params(EndpointIdPath),
    responses((status = 204, description = "Deleted."), CallerErrors, InvalidInput, NotFound),
)]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, AppError> {
    let id = endpoint_id(&raw)?;
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    tx.execute("SELECT apikey_webhook_delete($1)", &[&id])
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enable a webhook endpoint
///
/// Calls `apikey_webhook_set_enabled(endpoint_id, true)`. No request body. Enabling also clears
/// `failing_since` and `disabled_*` (an endpoint the database disabled after failing for too long).
#[utoipa::path(
    post,
    path = "/v1/webhooks/{endpoint_id}/enable",
    tag = "webhooks",
    operation_id = "enableWebhook",
    params(EndpointIdPath),
    responses(
        (status = 200, description = "The endpoint, enabled.", body = schemas::WebhookEndpoint),
        CallerErrors,
        InvalidInput,
        NotFound,
    ),
)]
async fn enable(
    state: State<AppState>,
    caller: Caller,
    raw: Path<String>,
) -> Result<Managed, AppError> {
    set_enabled(state, caller, raw, true).await
}

/// Disable a webhook endpoint
///
/// Calls `apikey_webhook_set_enabled(endpoint_id, false)`. No request body. Events are no longer
/// queued for it; deliveries already queued are not sent.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{endpoint_id}/disable",
    tag = "webhooks",
    operation_id = "disableWebhook",
    params(EndpointIdPath),
    responses(
        (status = 200, description = "The endpoint, disabled.", body = schemas::WebhookEndpoint),
        CallerErrors,
        InvalidInput,
        NotFound,
    ),
)]
async fn disable(
    state: State<AppState>,
    caller: Caller,
    raw: Path<String>,
) -> Result<Managed, AppError> {
    set_enabled(state, caller, raw, false).await
}

async fn set_enabled(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    enabled: bool,
) -> Result<Managed, AppError> {
    let id = endpoint_id(&raw)?;
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    tx.execute(
        "SELECT apikey_webhook_set_enabled($1, $2)",
        &[&id, &enabled],
    )
    .await?;
    let endpoint = fetch_endpoint(&tx, id).await?;
    tx.commit().await?;
    Ok(Managed::ok(endpoint))
}

/// Send a test event
///
/// Calls `apikey_webhook_send_test(endpoint_id)`: queues a `webhook.test` event for this endpoint
/// only. It is delivered like any event; follow it in `GET /v1/webhooks/{endpoint_id}/deliveries`.
/// No request body.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{endpoint_id}/test",
    tag = "webhooks",
    operation_id = "testWebhook",
    params(EndpointIdPath),
    responses(
        (status = 202, description = "Queued.", body = schemas::WebhookTestQueued),
        CallerErrors,
        InvalidInput,
        NotFound,
    ),
)]
async fn send_test(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Managed, AppError> {
    let id = endpoint_id(&raw)?;
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let row = tx
        .query_one("SELECT apikey_webhook_send_test($1)", &[&id])
        .await?;
    let event_id: Uuid = row.try_get(0)?;
    tx.commit().await?;
    Ok(Managed {
        status: StatusCode::ACCEPTED,
        body: json!({ "event_id": event_id }),
    })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListDeliveries {
    /// Page size (out of range: 422).
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (one this API did not return: 422).
    cursor: Option<String>,
}

/// A delivery row with its attempts, oldest attempt first; the attempts leave out what the
/// delivery already says.
const DELIVERY_JSON: &str = "to_jsonb(d) || jsonb_build_object('attempts', coalesce(\
        (SELECT jsonb_agg(to_jsonb(a) - ARRAY['delivery_id', 'endpoint_id', 'partner_id', 'event_id'] \
                          ORDER BY a.attempt) \
         FROM apikey.webhook_attempts a WHERE a.delivery_id = d.delivery_id), '[]'::jsonb))";

/// List an endpoint's deliveries
///
/// Newest first, each with its attempts (oldest first): status code, latency and error of each.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{endpoint_id}/deliveries",
    tag = "webhooks",
    operation_id = "listWebhookDeliveries",
    params(EndpointIdPath, ListDeliveries),
    responses(
        (
            status = 200,
            description = "One page of deliveries.",
            body = schemas::WebhookDeliveryList,
        ),
        CallerErrors,
        InvalidInput,
        NotFound,
    ),
)]
async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Query(f): Query<ListDeliveries>,
) -> Result<Managed, AppError> {
    let id = endpoint_id(&raw)?;
    let limit = page_size(f.limit)?;
    let before: Option<i64> = decode_cursor(f.cursor.as_deref())?;
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    // An endpoint the caller cannot see is 404, not an empty list.
    fetch_endpoint(&tx, id).await?;
    let rows = tx
        .query(
            &format!(
                "SELECT {DELIVERY_JSON}, d.delivery_id FROM apikey.webhook_deliveries d \
                 WHERE d.endpoint_id = $1 AND ($2::bigint IS NULL OR d.delivery_id < $2) \
                 ORDER BY d.delivery_id DESC LIMIT $3"
            ),
            &[&id, &before, &(limit + 1)],
        )
        .await?;
    tx.commit().await?;
    page(&rows, limit, |row| row.try_get::<_, i64>(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_ids_are_uuids_and_never_echoed() {
        let id = "0b7c9f0e-6a43-4d8a-9d0e-7f3c2a1b5e6d";
        assert_eq!(endpoint_id(id).unwrap().to_string(), id);
        let token = "ak_live_0123456789abcdef_secretsecretsecret";
        match endpoint_id(token) {
            Err(AppError::Unprocessable { message, field }) => {
                assert_eq!(field.as_deref(), Some("endpoint_id"));
                assert!(!message.contains("secret"), "{message}");
            }
            other => panic!("expected 422, got {other:?}"),
        }
    }
}
