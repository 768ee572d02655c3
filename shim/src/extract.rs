//! Extractors whose rejection is our error type, so a bad body, query string or path gets
//! the same JSON error shape as everything else, naming the field that was wrong.

use crate::error::AppError;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A required JSON body (Content-Type: application/json).
pub struct Json<T>(pub T);

/// The body's bytes as sent, for a signature over them; too large a body is our JSON 413.
pub struct RawBody(pub axum::body::Bytes);

/// A JSON body that may be left out entirely (rotate and revoke options): an empty body
/// means the defaults; a non-empty one must be JSON like any other.
pub struct OptionalJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let headers = request.headers().clone();
        let body = axum::body::Bytes::from_request(request, state).await?;
        require_json_content_type(&headers)?;
        parse(&body).map(Json)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let headers = request.headers().clone();
        let body = axum::body::Bytes::from_request(request, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        require_json_content_type(&headers)?;
        parse(&body).map(OptionalJson)
    }
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        Ok(RawBody(
            axum::body::Bytes::from_request(request, state).await?,
        ))
    }
}

fn require_json_content_type(headers: &HeaderMap) -> Result<(), AppError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(AppError::UnsupportedMediaType(
            "expected Content-Type: application/json".into(),
        ))
    }
}

/// Syntax errors are 400; type errors, unknown or missing fields and NUL characters (which
/// PostgreSQL text cannot hold) are 422 naming the field.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if let Some(field) = field_with_nul(&value, None) {
        return Err(AppError::invalid_field(
            &field,
            format!("{field} contains a NUL character"),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let (field, message) = match path.as_str() {
            "." | "" => (field_in(&message), message),
            // "scopes[2]" and "metadata.team" name the field "scopes" and "metadata".
            p => (
                p.split(['.', '[']).next().map(str::to_string),
                format!("{p}: {message}"),
            ),
        };
        AppError::Unprocessable { message, field }
    })
}

/// The top-level field of the first string (or object key) containing NUL.
fn field_with_nul(value: &Value, top: Option<&str>) -> Option<String> {
    match value {
        Value::String(s) if s.contains('\0') => Some(top.unwrap_or("body").to_string()),
        Value::Array(items) => items.iter().find_map(|v| field_with_nul(v, top)),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let field = top.unwrap_or(k);
            if k.contains('\0') {
                Some(field.to_string())
            } else {
                field_with_nul(v, Some(field))
            }
        }),
        _ => None,
    }
}

impl From<BytesRejection> for AppError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else {
            AppError::bad_request(rejection.body_text())
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        let text = rejection.body_text();
        let text = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text)
            .to_string();
        AppError::BadRequest {
            field: field_in(&text),
            message: text,
        }
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError::bad_request(rejection.body_text())
    }
}

/// serde names the field in backquotes: "unknown field `x`", "missing field `scopes`",
/// or before a colon: "limit: invalid digit found in string".
fn field_in(text: &str) -> Option<String> {
    for marker in ["field `", "variant `"] {
        if let Some(rest) = text.split_once(marker).map(|(_, r)| r) {
            return rest.split_once('`').map(|(f, _)| f.to_string());
        }
    }
    text.split_once(": ")
        .map(|(name, _)| name.trim())
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields)]
    struct Issue {
        #[allow(dead_code)]
        name: Option<String>,
        #[allow(dead_code)]
        scopes: Vec<String>,
        #[allow(dead_code)]
        rate_per_minute: Option<i32>,
    }

    fn field(body: &str) -> Option<String> {
        match parse::<Issue>(body.as_bytes()) {
            Err(AppError::Unprocessable { field, .. }) => field,
            other => panic!("expected 422 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn every_data_error_names_its_field() {
        assert_eq!(
            field(r#"{"scopes": [], "colour": 1}"#).as_deref(),
            Some("colour")
        );
        assert_eq!(field(r#"{"name": "x"}"#).as_deref(), Some("scopes"));
        assert_eq!(field(r#"{"scopes": null}"#).as_deref(), Some("scopes"));
        assert_eq!(field(r#"{"scopes": [1]}"#).as_deref(), Some("scopes"));
        assert_eq!(
            field(r#"{"scopes": [], "rate_per_minute": "x"}"#).as_deref(),
            Some("rate_per_minute")
        );
        assert_eq!(
            field(r#"{"scopes": [], "name": 5}"#).as_deref(),
            Some("name")
        );
        assert_eq!(
            field(r#"{"scopes": ["a\u0000"]}"#).as_deref(),
            Some("scopes")
        );
        assert_eq!(
            field(r#"{"scopes": [], "name": "a\u0000b"}"#).as_deref(),
            Some("name")
        );
    }

    #[test]
    fn nested_errors_say_where_and_top_level_ones_do_not() {
        let message = |body: &str| match parse::<Issue>(body.as_bytes()) {
            Err(AppError::Unprocessable { message, .. }) => message,
            other => panic!("expected 422 for {body}, got {other:?}"),
        };
        assert_eq!(
            message(r#"{"scopes": [1]}"#),
            "scopes[0]: invalid type: integer `1`, expected a string"
        );
        assert_eq!(message(r#"{"name": "x"}"#), "missing field `scopes`");
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(
            parse::<Issue>(b"{"),
            Err(AppError::BadRequest { .. })
        ));
        assert!(matches!(
            parse::<Issue>(b"[1,"),
            Err(AppError::BadRequest { .. })
        ));
    }

    #[test]
    fn content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            require_json_content_type(&h).is_ok()
        };
        assert!(with("application/json"));
        assert!(with("application/json; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(require_json_content_type(&HeaderMap::new()).is_err());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413() {
        use axum::body::{Body, Bytes};
        let over = Request::new(Body::from(vec![b'x'; (2 << 20) + 1]));
        let rejection = Bytes::from_request(over, &())
            .await
            .expect_err("over axum's 2 MB");
        assert!(matches!(
            AppError::from(rejection),
            AppError::PayloadTooLarge
        ));
    }

    #[test]
    fn fields_are_read_from_serde_and_query_messages() {
        let cases = [
            ("unknown field `colour`, expected `name`", Some("colour")),
            (
                "unknown variant `purple`, expected one of `a`",
                Some("purple"),
            ),
            ("limit: invalid digit found in string", Some("limit")),
            ("rate_per_minute: number too large", Some("rate_per_minute")),
            (": no name", None),
            ("two words: no name", None),
            ("a-b: no name", None),
            ("no colon at all", None),
        ];
        for (text, field) in cases {
            assert_eq!(field_in(text).as_deref(), field, "{text}");
        }
    }
}
