//! The router, and the middleware every request passes: body limit, timeout, and one log
//! line plus metrics per request. Log lines name the matched route (never the raw URI,
//! which may carry an api_key parameter), the status and the key id, never a token.

use crate::auth::{client_ip, presented_key, PresentedKey};
use crate::error::AppError;
use crate::routes;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::verify::router())
        .merge(routes::keys::router())
        .merge(routes::partners::router())
        .merge(routes::audit::router())
        .merge(routes::service::router())
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes,
        ))
        .layer(RequestBodyLimitLayer::new(state.config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            state.config.request_timeout(),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Set by handlers on their response so the request's log line can name the key.
#[derive(Clone)]
pub struct LoggedKeyId(pub String);

async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe(&route, status, elapsed.as_secs_f64());
    let key_id = response
        .extensions()
        .get::<LoggedKeyId>()
        .map(|k| k.0.as_str())
        .unwrap_or("-");
    tracing::info!(%method, %route, status, latency_ms = elapsed.as_secs_f64() * 1000.0, key_id, "request");
    response
}

/// The key a request presented and the address it came from: the inputs of apikey_verify.
pub struct Caller {
    pub key: PresentedKey,
    pub ip: IpAddr,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .ok_or_else(|| AppError::Internal("server started without peer addresses".into()))?;
        Ok(Caller {
            key: presented_key(
                &parts.headers,
                parts.uri.query(),
                state.config.allow_query_key,
            )?,
            ip: client_ip(peer, &parts.headers, &state.config.trusted_proxies),
        })
    }
}
