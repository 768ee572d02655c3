//! `GET /healthz`, `GET /metrics`, `GET /openapi.json`, `GET /v1/limits`: no key needed.

use crate::error::AppError;
use crate::metrics::PoolUse;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/limits", get(limits))
}

/// One round trip through the pool: healthy means the database answers.
async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let client = state.pool.get().await?;
    let statement = client.prepare_cached("SELECT 1").await?;
    client.query_one(&statement, &[]).await?;
    Ok(axum::Json(json!({ "status": "ok" })))
}

/// The shim's own figures and the server's (`apikey_status()`), which are left out when the
/// database does not answer: a scrape must not fail because of it.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
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
    let client = state.pool.get().await?;
    let row = client
        .query_one("SELECT to_jsonb(s) FROM apikey_status() AS s", &[])
        .await?;
    Ok(row.try_get(0)?)
}

pub const OPENAPI: &str = include_str!("../../openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The limits the API enforces, for clients that check input before sending it (the
/// console does, instead of repeating them).
pub fn limits_document() -> serde_json::Value {
    use apikey_contract::{limits, scope};
    json!({
        "scope_word_pattern": scope::WORD_PATTERN,
        "scope_max_bytes": scope::MAX_SCOPE_LEN,
        "scopes_max": scope::MAX_SCOPES,
        "rotation_grace_seconds_max": limits::MAX_ROTATION_GRACE_SECONDS,
        "webhook_secret_grace_seconds_max": limits::MAX_WEBHOOK_SECRET_GRACE_SECONDS,
        "webhook_endpoints_per_partner_max": limits::MAX_WEBHOOK_ENDPOINTS_PER_PARTNER,
        "expiring_soon_days": limits::EXPIRING_SOON_DAYS,
    })
}

async fn limits() -> impl IntoResponse {
    axum::Json(limits_document())
}
