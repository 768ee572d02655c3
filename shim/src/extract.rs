//! Axum's extractors with our error type as their rejection, so a bad body, query string or
//! path gets the same JSON error shape as everything else, naming what was wrong.

use crate::error::AppError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use serde::de::DeserializeOwned;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => AppError::Unprocessable {
                message: data_error_message(&e.body_text()),
                field: field_in(&e.body_text()),
            },
            JsonRejection::JsonSyntaxError(e) => {
                AppError::bad_request(data_error_message(&e.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => {
                AppError::UnsupportedMediaType("expected Content-Type: application/json".into())
            }
            JsonRejection::BytesRejection(e)
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                AppError::PayloadTooLarge
            }
            other => AppError::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        let text = rejection.body_text();
        AppError::BadRequest {
            message: text.clone(),
            field: field_in(&text),
        }
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError::bad_request(rejection.body_text())
    }
}

/// serde names the field in backquotes: "unknown field `x`", "missing field `scopes`",
/// "scopes: invalid type: ...".
fn field_in(text: &str) -> Option<String> {
    let after_colon = text.rsplit_once(": ").map(|(_, t)| t).unwrap_or(text);
    for marker in ["field `", "variant `"] {
        if let Some(rest) = after_colon.split_once(marker).map(|(_, r)| r) {
            return rest.split_once('`').map(|(f, _)| f.to_string());
        }
    }
    text.split_once(": ")
        .map(|(path, _)| path.rsplit(": ").next().unwrap_or(path).trim())
        .filter(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']'))
        })
        .map(|p| p.split('.').next_back().unwrap_or(p).to_string())
}

fn data_error_message(text: &str) -> String {
    text.strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .or_else(|| text.strip_prefix("Failed to parse the request body as JSON: "))
        .unwrap_or(text)
        .to_string()
}

/// For POST routes whose body is optional (revoke reason, rotate options): empty body means
/// defaults, otherwise it must be JSON.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        let field = field_in(&message);
        if e.is_data() {
            AppError::Unprocessable { message, field }
        } else {
            AppError::BadRequest {
                message,
                field: None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_in_serde_messages() {
        assert_eq!(
            field_in("unknown field `colour`, expected one of `name`").as_deref(),
            Some("colour")
        );
        assert_eq!(
            field_in("missing field `scopes` at line 1 column 2").as_deref(),
            Some("scopes")
        );
        assert_eq!(
            field_in(
                "rate_per_minute: invalid type: string \"x\", expected i32 at line 1 column 30"
            )
            .as_deref(),
            Some("rate_per_minute")
        );
    }

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields)]
    struct Options {
        #[allow(dead_code)]
        reason: Option<String>,
    }

    #[test]
    fn optional_bodies() {
        assert!(optional_json::<Options>(b"").is_ok());
        assert!(optional_json::<Options>(b"  \n").is_ok());
        assert!(optional_json::<Options>(br#"{"reason": "x"}"#).is_ok());
        assert!(matches!(
            optional_json::<Options>(b"{"),
            Err(AppError::BadRequest { .. })
        ));
        assert!(matches!(
            optional_json::<Options>(br#"{"colour": 1}"#),
            Err(AppError::Unprocessable { field: Some(f), .. }) if f == "colour"
        ));
    }
}
