//! The one error type of the shim. Every failure becomes JSON `{"error", "reason"}` (plus
//! `field` when one input was wrong) with the status a client can act on. Client mistakes are
//! never 500s and are not logged; internal failures are logged once and hidden from clients.

use apikey_contract::redact;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub enum AppError {
    /// apikey_verify said no: missing, malformed, unknown, wrong, revoked, disabled, expired...
    Unauthorized {
        reason: String,
    },
    /// Authentic key without the right (scope, IP, or the database refused the action).
    Forbidden {
        reason: String,
        message: String,
    },
    RateLimited(crate::rate::Rate),
    BadRequest {
        message: String,
        field: Option<String>,
    },
    Unprocessable {
        message: String,
        field: Option<String>,
    },
    NotFound(String),
    MethodNotAllowed,
    Conflict(String),
    PayloadTooLarge,
    UnsupportedMediaType(String),
    /// The database is down or unreachable (or misconfigured): retry later.
    Unavailable(String),
    /// The request took longer than the configured time limit.
    TimedOut,
    Internal(String),
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::BadRequest {
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        AppError::Unprocessable {
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    /// Status for an apikey_verify failure reason.
    pub fn from_reason(reason: &str) -> Self {
        match reason {
            // Only reached without the rate columns (a database without shared memory never
            // says it): a 429 that asks to retry in a second.
            "rate_limited" => AppError::RateLimited(crate::rate::Rate {
                quota: 0,
                remaining: 0,
                reset_seconds: 1,
                refused: true,
            }),
            "insufficient_scope" => AppError::Forbidden {
                reason: reason.into(),
                message: "the key lacks a required scope".into(),
            },
            "ip_not_allowed" => AppError::Forbidden {
                reason: reason.into(),
                message: "the key may not be used from this address".into(),
            },
            _ => AppError::Unauthorized {
                reason: reason.into(),
            },
        }
    }

    fn parts(&self) -> (StatusCode, &str, String, Option<&str>) {
        match self {
            AppError::Unauthorized { reason } => (
                StatusCode::UNAUTHORIZED,
                reason,
                unauthorized_message(reason).into(),
                None,
            ),
            AppError::Forbidden { reason, message } => {
                (StatusCode::FORBIDDEN, reason, message.clone(), None)
            }
            AppError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limit exceeded".into(),
                None,
            ),
            AppError::BadRequest { message, field } => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                message.clone(),
                field.as_deref(),
            ),
            AppError::Unprocessable { message, field } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                message.clone(),
                field.as_deref(),
            ),
            AppError::NotFound(message) => {
                (StatusCode::NOT_FOUND, "not_found", message.clone(), None)
            }
            AppError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method".into(),
                None,
            ),
            AppError::Conflict(message) => {
                (StatusCode::CONFLICT, "conflict", message.clone(), None)
            }
            AppError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body too large".into(),
                None,
            ),
            AppError::UnsupportedMediaType(message) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message.clone(),
                None,
            ),
            AppError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the key database is unavailable; retry later".into(),
                None,
            ),
            AppError::TimedOut => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the request took longer than the shim's time limit; retry later".into(),
                None,
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
                None,
            ),
        }
    }
}

fn unauthorized_message(reason: &str) -> &'static str {
    match reason {
        "missing_key" => "no API key: send it in X-API-Key or Authorization: ApiKey <token>",
        "malformed" => "the API key is malformed",
        "revoked" => "the API key was revoked",
        "disabled" => "the API key is disabled",
        "expired" => "the API key has expired",
        "not_yet_valid" => "the API key is not valid yet",
        "partner_inactive" => "the API key's partner is inactive",
        _ => "the API key is not valid",
    }
}

/// Longest error message a client is sent.
const MAX_MESSAGE_CHARS: usize = 300;

/// A message as it may leave the shim: whatever in it is shaped like a token cut back to
/// its key id (see `apikey_contract::redact`), and bounded. Messages can quote a client's
/// input (serde names unknown fields and bad values), and a token pasted into the wrong
/// field must not come back in the answer or go into a log.
fn shown(message: &str) -> String {
    let cleaned = redact::without_secrets(message);
    if cleaned.chars().count() <= MAX_MESSAGE_CHARS {
        return cleaned;
    }
    let mut cut: String = cleaned.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            AppError::Internal(detail) => {
                tracing::error!(error = %shown(detail), "internal error")
            }
            AppError::Unavailable(detail) => {
                tracing::warn!(error = %shown(detail), "database unavailable")
            }
            _ => {}
        }
        let (status, reason, message, field) = self.parts();
        let mut body = json!({ "error": shown(&message), "reason": reason });
        if let Some(field) = field {
            body["field"] = json!(redact::excerpt(field));
        }
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            AppError::Unauthorized { reason } => {
                let challenge = format!("ApiKey realm=\"apikey\", error=\"{reason}\"");
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            AppError::RateLimited(decision) => decision.write_headers(headers),
            AppError::Unavailable(_) | AppError::TimedOut => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// Maps a database error by SQLSTATE. The extension's messages name the offending argument
/// and never contain a token, so they are passed to the client as they are.
impl From<tokio_postgres::Error> for AppError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            return AppError::Unavailable(e.to_string());
        };
        let message = db.message().to_string();
        match db.code().code() {
            "42501" => AppError::Forbidden {
                reason: "forbidden".into(),
                message,
            },
            "P0002" => AppError::NotFound(message),
            "55000" | "23505" => AppError::Conflict(message),
            code if code.starts_with("22") => {
                let field = field_of(&message);
                AppError::Unprocessable { message, field }
            }
            "F0000" | "57P01" | "57P02" | "57P03" | "53300" => AppError::Unavailable(message),
            code if code.starts_with("08") => AppError::Unavailable(message),
            code => AppError::Internal(format!("SQLSTATE {code}: {message}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AppError::Unavailable(e.to_string())
    }
}

/// The argument an extension error is about: "invalid scopes: ..." or "rate_per_minute must
/// not be NULL".
fn field_of(message: &str) -> Option<String> {
    let candidate = message
        .strip_prefix("invalid ")
        .and_then(|rest| rest.split_once(':'))
        .map(|(field, _)| field)
        .or_else(|| {
            message
                .split_once(" must not be NULL")
                .map(|(field, _)| field)
        })?;
    candidate
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
        .then(|| candidate.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_come_from_extension_messages() {
        assert_eq!(
            field_of("invalid scopes: scope \"x\" ...").as_deref(),
            Some("scopes")
        );
        assert_eq!(
            field_of("rate_per_minute must not be NULL").as_deref(),
            Some("rate_per_minute")
        );
        assert_eq!(field_of("invalid input syntax for type uuid: \"x\""), None);
        assert_eq!(field_of("something else"), None);
    }

    #[test]
    fn messages_never_carry_a_token_and_are_bounded() {
        let token = "ak_live_0123456789abcdef_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq012345";
        let e = AppError::Unprocessable {
            message: format!("unknown field `{token}`, expected one of `a`"),
            field: Some(token.into()),
        };
        let response = e.into_response();
        let body = futures_body(response);
        assert!(!body.contains("ABCDEFGHIJ"), "{body}");
        assert!(body.contains("ak_live_0123456789abcdef_…"), "{body}");
        assert!(shown(&"word ".repeat(1000)).chars().count() <= MAX_MESSAGE_CHARS);
    }

    fn futures_body(response: Response) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .expect("the body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn verify_reasons_map_to_statuses() {
        let status = |r: &str| AppError::from_reason(r).parts().0;
        assert_eq!(status("insufficient_scope"), StatusCode::FORBIDDEN);
        assert_eq!(status("ip_not_allowed"), StatusCode::FORBIDDEN);
        for r in [
            "missing_key",
            "malformed",
            "unknown_key",
            "secret_mismatch",
            "revoked",
            "disabled",
            "expired",
            "not_yet_valid",
            "partner_inactive",
        ] {
            assert_eq!(status(r), StatusCode::UNAUTHORIZED, "{r}");
        }
    }
}
