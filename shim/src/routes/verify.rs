//! `GET /v1/verify`: for partners, and for gateways (nginx auth_request, Traefik
//! ForwardAuth, Envoy ext_authz) that forward the original request's headers.

use crate::app::Caller;
use crate::db;
use crate::error::AppError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use serde::Serialize;
use uuid::Uuid;

const KEY_ID: HeaderName = HeaderName::from_static("x-apikey-key-id");
const PARTNER: HeaderName = HeaderName::from_static("x-apikey-partner");
const SCOPES: HeaderName = HeaderName::from_static("x-apikey-scopes");

/// The body of a 200: the row of `apikey_verify`, as the contract names its columns.
#[derive(Serialize)]
struct Verified<'a> {
    valid: bool,
    reason: &'static str,
    key_id: &'a str,
    partner_id: &'a str,
    scopes: &'a [&'a str],
    rate_per_minute: i32,
}

/// `/v1/verify/{*rest}` too, with any method: Envoy's ext_authz appends the original path to
/// its `path_prefix` and keeps the original method, so `DELETE /orders/7` is checked as
/// `DELETE /v1/verify/orders/7`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/verify", get(verify))
        .route("/v1/verify/{*rest}", any(verify))
}

/// The scopes a request requires, read from the request in place (a `HeaderMap` extractor
/// would copy every header of every request).
struct RequiredScopes(Vec<String>);

impl FromRequestParts<AppState> for RequiredScopes {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, AppError> {
        required_scopes(parts.uri.query(), &parts.headers).map(RequiredScopes)
    }
}

async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    RequiredScopes(required): RequiredScopes,
) -> Result<Response, AppError> {
    let client = state.pool.get().await?;
    let row = db::verify(&client, &caller.key, &required, caller.ip).await?;
    drop(client);
    let verdict = db::Verdict::from_row(&row)?;
    state.metrics.verify_outcome(verdict.reason);
    if let Some(key_id) = verdict.key_id {
        caller.note.key_id(key_id);
    }
    if !verdict.valid {
        return Err(AppError::from_reason(verdict.reason));
    }
    let (Some(key_id), Some(partner_id), Some(scopes), Some(rate)) = (
        verdict.key_id,
        verdict.partner_id,
        verdict.scopes,
        verdict.rate_per_minute,
    ) else {
        return Err(AppError::Internal(
            "apikey_verify returned ok without an identity".into(),
        ));
    };
    // Only requests the database accepted use up quota.
    let decision = state.limiter.check(key_id, rate.max(1).unsigned_abs());
    if !decision.allowed {
        caller.note.rate(decision.clone());
        state.metrics.verify_outcome("rate_limited");
        return Err(AppError::RateLimited(decision));
    }
    caller.note.rate(decision);
    let mut uuid_text = Uuid::encode_buffer();
    let partner_id = &*partner_id.hyphenated().encode_lower(&mut uuid_text);
    let body = serde_json::to_vec(&Verified {
        valid: true,
        reason: "ok",
        key_id,
        partner_id,
        scopes: &scopes,
        rate_per_minute: rate,
    })
    .map_err(|e| AppError::Internal(format!("cannot encode the verify response: {e}")))?;
    // Room for these four and the three RateLimit-* headers the middleware adds.
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in [
        (KEY_ID, key_id),
        (SCOPES, &scopes.join(",")),
        (PARTNER, partner_id),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    let mut response = Response::new(Body::from(body));
    *response.headers_mut() = headers;
    Ok(response)
}

/// Required scopes: every `scope=` parameter (comma-separated lists allowed), the
/// comma-separated `X-Required-Scopes` header, and, when a `resource=` parameter names the
/// protected resource, one derived from the original method a gateway forwards
/// (`X-Forwarded-Method` / `X-Original-Method`): GET/HEAD/OPTIONS read, POST/PUT/PATCH write,
/// DELETE delete.
fn required_scopes(query: Option<&str>, headers: &HeaderMap) -> Result<Vec<String>, AppError> {
    let mut scopes = Vec::new();
    let mut resource = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "scope" => scopes.extend(split_list(&value)),
            "resource" => resource = Some(value.into_owned()),
            _ => {}
        }
    }
    for value in headers.get_all("x-required-scopes") {
        let value = value
            .to_str()
            .map_err(|_| AppError::bad_request("X-Required-Scopes must be visible ASCII"))?;
        scopes.extend(split_list(value));
    }
    if let Some(resource) = resource {
        let method = [
            "x-forwarded-method",
            "x-original-method",
            "x-envoy-original-method",
        ]
        .iter()
        .find_map(|h| headers.get(*h))
        .map(|v| v.to_str().unwrap_or_default().trim().to_ascii_uppercase());
        let Some(method) = method else {
            return Err(AppError::BadRequest {
                message:
                    "resource= needs the original method in X-Forwarded-Method or X-Original-Method"
                        .into(),
                field: Some("resource".into()),
            });
        };
        let action = match method.as_str() {
            "GET" | "HEAD" | "OPTIONS" => "read",
            "POST" | "PUT" | "PATCH" => "write",
            "DELETE" => "delete",
            other => {
                return Err(AppError::bad_request(format!(
                    "cannot derive a scope from method {}",
                    other.chars().take(16).collect::<String>()
                )))
            }
        };
        scopes.push(format!("{resource}:{action}"));
    }
    Ok(scopes)
}

fn split_list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn scopes_from_parameters_headers_and_methods() {
        let s = required_scopes(Some("scope=a:read&scope=b:write,c:x"), &HeaderMap::new()).unwrap();
        assert_eq!(s, vec!["a:read", "b:write", "c:x"]);
        let s =
            required_scopes(None, &headers(&[("x-required-scopes", "a:read, b:write")])).unwrap();
        assert_eq!(s, vec!["a:read", "b:write"]);
        let s = required_scopes(
            Some("resource=orders"),
            &headers(&[("x-forwarded-method", "delete")]),
        )
        .unwrap();
        assert_eq!(s, vec!["orders:delete"]);
        let s = required_scopes(
            Some("resource=orders"),
            &headers(&[("x-original-method", "PATCH")]),
        )
        .unwrap();
        assert_eq!(s, vec!["orders:write"]);
        assert!(required_scopes(Some("resource=orders"), &HeaderMap::new()).is_err());
        assert!(required_scopes(
            Some("resource=orders"),
            &headers(&[("x-forwarded-method", "BREW")])
        )
        .is_err());
        assert!(required_scopes(None, &HeaderMap::new()).unwrap().is_empty());
    }
}
