//! `GET /healthz`, `GET /metrics`, `GET /openapi.json`, `GET /v1/limits`: no key needed.

use crate::db;
use crate::error::AppError;
use crate::metrics::PoolUse;
use crate::openapi::answers::ServerErrors;
use crate::openapi::schemas;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use deadpool_postgres::Object;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
        .routes(routes!(limits))
}

/// Health
///
/// One round trip through the connection pool: healthy means the database answers. No key needed.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    operation_id = "health",
    responses(
        (status = 200, description = "The database answers.", body = schemas::Health),
        ServerErrors,
    ),
    security(()),
)]
async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let client = state.connection().await?;
    let session: &Object = &client;
    db::query_one(session, state.config.statements, "SELECT 1", &[]).await?;
    Ok(axum::Json(json!({ "status": "ok" })))
}

/// Prometheus metrics
///
/// Prometheus text format: `apikey_shim_requests_total{route,status}`,
/// `apikey_shim_verify_outcomes_total{reason}`, `apikey_shim_request_duration_seconds{route}`
/// (histogram) `apikey_shim_webhook_attempts_total{outcome}`,
/// `apikey_shim_secret_scanning_tokens_total{label}` (tokens reported by GitHub secret scanning:
/// `true_positive`, `false_positive`) and the pool gauges `apikey_shim_pool_max_size`,
/// `apikey_shim_pool_size`, `apikey_shim_pool_available`, `apikey_shim_pool_waiting`. No key
/// needed: do not expose it publicly.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    operation_id = "metrics",
    responses(
        (
            status = 200,
            description = "Metrics.",
            body = String,
            content_type = crate::metrics::CONTENT_TYPE,
        ),
    ),
    security(()),
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // The server's figures (`apikey_status()`) are left out when the database does not
    // answer: a scrape must not fail because of it.
    let server = server_status(&state).await.ok();
    let pool = state.pool.status();
    let text = state.metrics.render(
        PoolUse {
            max_size: pool.max_size,
            size: pool.size,
            available: pool.available,
            waiting: pool.waiting,
        },
        server.as_ref(),
    );
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}

async fn server_status(state: &AppState) -> Result<serde_json::Value, AppError> {
    let client = state.connection().await?;
    let row = client
        .query_one("SELECT to_jsonb(s) FROM apikey_status() AS s", &[])
        .await?;
    Ok(row.try_get(0)?)
}

/// This document
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    operation_id = "openapi",
    responses(
        (
            status = 200,
            description = "The OpenAPI 3.1 description of this API.",
            body = Object,
            content_type = "application/json",
        ),
    ),
    security(()),
)]
async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
}

/// The limits the API enforces, for clients that check input before sending it (the
/// console does, instead of repeating them).
pub fn limits_document() -> serde_json::Value {
    use apikey_contract::{limits, scope};
    json!({
        "scope_word_pattern": scope::WORD_PATTERN,
        "scope_instance_pattern": scope::INSTANCE_PATTERN,
        "scope_instance_max_bytes": scope::MAX_INSTANCE_LEN,
        "scope_max_bytes": scope::MAX_SCOPE_LEN,
        "scopes_max": scope::MAX_SCOPES,
        "rotation_grace_seconds_max": limits::MAX_ROTATION_GRACE_SECONDS,
        "webhook_secret_grace_seconds_max": limits::MAX_WEBHOOK_SECRET_GRACE_SECONDS,
        "webhook_endpoints_per_partner_max": limits::MAX_WEBHOOK_ENDPOINTS_PER_PARTNER,
        "expiring_soon_days": limits::EXPIRING_SOON_DAYS,
    })
}

/// Limits
///
/// The limits this API enforces on what it is sent, for clients that check input before sending it
/// (the key console does). No key needed; nothing here is secret.
#[utoipa::path(
    get,
    path = "/v1/limits",
    tag = "service",
    operation_id = "limits",
    responses((status = 200, description = "The limits.", body = schemas::Limits)),
    security(()),
)]
async fn limits() -> impl IntoResponse {
    axum::Json(limits_document())
}
