//! Who a request is: the key it presented and the address it came from (`Caller`, the
//! extractor handlers take), and what handling it learned of that key (`RequestNote`, which
//! the router's middleware turns into the log line and the rate-limit headers).

use crate::auth::{client_ip, presented_key, PresentedKey};
use crate::error::AppError;
use crate::rate::Limits;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::IntoParams;

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

    /// Writes the rate-limit headers noted (if any) to a response's, and returns the key id
    /// noted, for the log line.
    pub fn finish(&self, headers: &mut HeaderMap) -> Option<String> {
        let note = self.note();
        if !note.limits.is_empty() {
            note.limits.write_headers(headers);
        }
        note.key_id.clone()
    }
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
