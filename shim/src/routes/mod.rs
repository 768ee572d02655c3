//! One module per resource, each with its own `router()`. Routes are registered only with
//! `utoipa_axum::routes!`, from the handlers' `#[utoipa::path]`: that is what puts them in
//! the OpenAPI document (see `crate::openapi`).

pub mod audit;
pub mod console;
pub mod credits;
pub mod import;
pub mod keys;
pub mod partners;
pub mod reminders;
pub mod secret_scanning;
pub mod service;
pub mod usage;
pub mod verify;
pub mod webhooks;

use crate::error::AppError;
use crate::state::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;

/// Every route of the shim, with its description.
pub fn all() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(verify::router())
        .merge(keys::router())
        .merge(import::router())
        .merge(partners::router())
        .merge(credits::router())
        .merge(audit::router())
        .merge(usage::router())
        .merge(reminders::router())
        .merge(webhooks::router())
        .merge(secret_scanning::router())
        .merge(service::router())
        .merge(console::router())
}

/// A management response. The acting key's rate-limit headers are added by the request
/// middleware (see `caller::RequestNote`), to errors as well.
pub struct Managed {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl Managed {
    pub fn ok(body: serde_json::Value) -> Self {
        Managed {
            status: StatusCode::OK,
            body,
        }
    }

    pub fn created(body: serde_json::Value) -> Self {
        Managed {
            status: StatusCode::CREATED,
            body,
        }
    }
}

impl IntoResponse for Managed {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// One page of a list query that fetched `limit + 1` rows with the item's JSON in column 0;
/// `position` reads a row's keyset position, which becomes the next page's cursor.
pub fn page<P: Serialize>(
    rows: &[tokio_postgres::Row],
    limit: i64,
    position: impl Fn(&tokio_postgres::Row) -> Result<P, tokio_postgres::Error>,
) -> Result<Managed, AppError> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let items = rows
        .iter()
        .take(limit)
        .map(|row| row.try_get::<_, serde_json::Value>(0))
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = match (
        rows.len() > limit,
        limit.checked_sub(1).and_then(|i| rows.get(i)),
    ) {
        (true, Some(last)) => Some(encode_cursor(&position(last)?)),
        _ => None,
    };
    Ok(Managed::ok(
        serde_json::json!({ "items": items, "next_cursor": next_cursor }),
    ))
}

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 500;

pub fn page_size(limit: Option<i64>) -> Result<i64, AppError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(AppError::invalid_field(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// Cursors are opaque to clients: base64url of the JSON position of the last item returned.
fn encode_cursor<T: Serialize>(position: &T) -> String {
    let json = serde_json::to_vec(position).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

pub fn decode_cursor<T: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<T>, AppError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let invalid = || AppError::invalid_field("cursor", "cursor is not one this API returned");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| invalid())
}

/// `%`, `_` and `\` match literally in a user's search text.
pub fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// A request's `grace_seconds` (`default` when absent), refused with a 422 on
/// `grace_seconds` outside 0..=`max`.
pub fn grace_seconds(value: Option<i64>, default: i64, max: i64) -> Result<i64, AppError> {
    let grace = value.unwrap_or(default);
    if (0..=max).contains(&grace) {
        Ok(grace)
    } else {
        Err(AppError::invalid_field(
            "grace_seconds",
            format!("grace_seconds must be between 0 and {max}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(&("2026-01-01T00:00:00Z", "ak_live_x"));
        let back: Option<(String, String)> = decode_cursor(Some(&c)).unwrap();
        assert_eq!(
            back,
            Some(("2026-01-01T00:00:00Z".into(), "ak_live_x".into()))
        );
        assert!(decode_cursor::<(String, String)>(Some("!!")).is_err());
        assert!(decode_cursor::<(String, String)>(None).unwrap().is_none());
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(None).unwrap(), DEFAULT_PAGE);
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(MAX_PAGE + 1)).is_err());
    }
}
