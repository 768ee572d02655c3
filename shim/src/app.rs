//! The router, and the middleware every request passes: body limit, timeout, and one log
//! line plus metrics per request. Log lines name the matched route (never the raw URI,
//! which may carry an api_key parameter), the status and the key id, never a token.

use crate::auth::{client_ip, presented_key, PresentedKey};
use crate::error::AppError;
use crate::rate::Limits;
use crate::routes;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::IntoParams;

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

/// What handling a request learned about its key: the key id for the log line, and the
/// rate-limit decision and credits whose headers go on every response to a verified key,
/// errors included.
#[derive(Clone, Default)]
pub struct RequestNote(Arc<Mutex<Note>>);

#[derive(Default)]
struct Note {
    key_id: Option<String>,
    limits: Limits,
}

impl RequestNote {
    fn note(&self) -> std::sync::MutexGuard<'_, Note> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn key_id(&self, key_id: &str) {
        self.note().key_id = Some(key_id.to_string());
    }

    pub fn limits(&self, limits: Limits) {
        self.note().limits = limits;
    }
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
    let note = note.note();
    if !note.limits.is_empty() {
        note.limits.write_headers(response.headers_mut());
    }
    let key_id = note.key_id.as_deref().unwrap_or("-");
    tracing::info!(%method, %route, status, latency_ms = elapsed.as_secs_f64() * 1000.0, key_id, "request");
    drop(note);
    response
}

/// The key a request presented and the address it came from: the inputs of apikey_verify.
pub struct Caller {
    pub key: PresentedKey,
    pub ip: IpAddr,
    pub note: RequestNote,
}

/// The key itself is one of the document's security schemes; the header described here is
/// where the client's address comes from.
impl IntoParams for Caller {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![crate::openapi::parameters::optional_text(
            "X-Forwarded-For",
            ParameterIn::Header,
            "Believed only from peers in `APIKEY_SHIM_TRUSTED_PROXIES`: the client address is \
             the right-most address not in that list.",
        )]
    }
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
            note: parts
                .extensions
                .get::<RequestNote>()
                .cloned()
                .unwrap_or_default(),
        })
    }
}
