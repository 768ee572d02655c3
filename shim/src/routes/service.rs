//! `GET /healthz`, `GET /metrics`, `GET /openapi.json`, `GET /v1/limits`: no key needed.

use crate::abandon::Connection;
use crate::db;
use crate::error::AppError;
use crate::metrics::{PoolUse, ReplicaUse};
use crate::openapi::answers::ServerErrors;
use crate::openapi::schemas;
use crate::replicas::Failed;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Object;
use serde_json::{json, Value};
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
/// One round trip through the connection pool: healthy means the database answers. With
/// replicas (`APIKEY_SHIM_REPLICA_URLS`), each one's state and lag too, and still 200
/// (`verify_only`) while the primary does not answer but a replica verifies. No key needed.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    operation_id = "health",
    responses(
        (status = 200, description = "The database answers (or, with replicas, verification does).", body = schemas::Health),
        ServerErrors,
    ),
    security(()),
)]
async fn healthz(State(state): State<AppState>) -> Result<Response, AppError> {
    let answers = async |client: &Connection| {
        let session: &Object = client;
        db::query_one(session, state.config.statements, "SELECT 1", &[]).await?;
        Ok::<(), AppError>(())
    };
    if state.replicas.is_empty() {
        answers(&state.connection().await?).await?;
        return Ok(axum::Json(json!({ "status": "ok" })).into_response());
    }
    // With replicas, a primary that does not answer is waited for no longer than one of
    // them: verification goes on without it, and a load balancer asks again soon.
    let primary = match state.replicas.ask_primary(&state.pool, answers).await {
        Ok(()) => Ok(()),
        Err(Failed::Request(e)) => Err(e),
        Err(failed) => {
            let problem = state.replicas.problem(failed);
            tracing::warn!(problem = %problem.public, detail = %problem.detail, "the primary did not answer /healthz");
            Err(AppError::Unavailable(format!(
                "the primary {}",
                problem.public
            )))
        }
    };
    let replicas: Vec<Value> = state
        .replicas
        .servers()
        .iter()
        .map(|r| {
            let health = r.health();
            json!({
                "name": r.name,
                "in_use": health.in_use,
                "lag_ms": health.lag.map(|lag| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX)),
                "problem": health.problem,
            })
        })
        .collect();
    let verifying = replicas.iter().any(|r| r["in_use"] == true);
    let body = match primary {
        Ok(()) => json!({ "status": "ok", "replicas": replicas }),
        // Verification still answers; changes do not.
        Err(e) if verifying => json!({
            "status": "verify_only", "primary_problem": e.body()["error"], "replicas": replicas
        }),
        Err(e) => return Err(e),
    };
    Ok(axum::Json(body).into_response())
}

/// Prometheus metrics
///
/// Prometheus text format: `apikey_shim_requests_total{route,status}`,
/// `apikey_shim_verify_outcomes_total{reason}`, `apikey_shim_request_duration_seconds{route}`
/// (histogram) `apikey_shim_webhook_attempts_total{outcome}`,
/// `apikey_shim_secret_scanning_tokens_total{label}` (tokens reported by GitHub secret scanning:
/// `true_positive`, `false_positive`) and the pool gauges `apikey_shim_pool_max_size`,
/// `apikey_shim_pool_size`, `apikey_shim_pool_available`, `apikey_shim_pool_waiting`, and with
/// replicas `apikey_shim_replica_in_use{replica}`, `apikey_shim_replica_lag_seconds{replica}` and
/// `apikey_shim_replica_verifications_total{replica}`.
/// No key needed: do not expose it publicly.
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
    let replicas: Vec<ReplicaUse> = state
        .replicas
        .servers()
        .iter()
        .map(|r| {
            let health = r.health();
            ReplicaUse {
                name: r.name.clone(),
                in_use: health.in_use,
                lag_seconds: health.lag.map(|lag| lag.as_secs_f64()),
                verifications: r.verifications(),
            }
        })
        .collect();
    let text = state.metrics.render(
        PoolUse {
            max_size: pool.max_size,
            size: pool.size,
            available: pool.available,
            waiting: pool.waiting,
        },
        &replicas,
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
