//! The router, and the middleware every request passes: body limit, timeout, and one log
//! line plus metrics per request. Log lines name the matched route (never the raw URI,
//! which may carry an api_key parameter), the status and the key id, never a token.

use crate::caller::RequestNote;
use crate::error::AppError;
use crate::routes;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::time::Instant;

pub fn router(state: AppState) -> Router {
    crate::openapi::json();
    Router::from(routes::all())
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        // Enforced by the body extractors (Json, RawBody), whose rejection is our JSON 413.
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            replayed_everywhere,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::map_response(no_store))
        .with_state(state)
}

/// Answers carry new tokens, webhook secrets and one caller's keys and audit: no browser,
/// proxy or gateway in between may keep a copy. A route that sets its own policy keeps it.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Answers 503 with the usual JSON error once a request has taken longer than
/// APIKEY_SHIM_REQUEST_TIMEOUT_MS (waiting for a pooled connection included). The queries
/// of a request given up on, here or by its client, are cancelled (`abandon`).
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let handling = crate::abandon::watched(next.run(request));
    match tokio::time::timeout(state.config.request_timeout(), handling).await {
        Ok(response) => response,
        Err(_) => AppError::TimedOut.into_response(),
    }
}

/// A change made through the shim (a request that may write, answered with success) answers
/// once every replica the shim verifies with has replayed it (`Replicas::wait_for_replay`):
/// a key revoked or issued here is revoked or known on the next verification, wherever it
/// goes. Verification itself writes nothing a replica needs.
async fn replayed_everywhere(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let writes = !request.method().is_safe()
        && !request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| p.as_str().starts_with("/v1/verify"));
    let response = next.run(request).await;
    if writes && response.status().is_success() && !state.replicas.is_empty() {
        state.replicas.wait_for_replay(&state.pool).await;
    }
    response
}

async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let note = RequestNote::default();
    request.extensions_mut().insert(note.clone());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let mut response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe(&route, status, elapsed.as_secs_f64());
    let key_id = note.finish(response.headers_mut());
    let key_id = key_id.as_deref().unwrap_or("-");
    tracing::info!(%method, %route, status, latency_ms = elapsed.as_secs_f64() * 1000.0, key_id, "request");
    response
}
