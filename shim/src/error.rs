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
    /// A rate bucket (the key's or its partner's) is empty: every limit, as the database said.
    RateLimited(crate::rate::Limits),
    /// The key's credit balance (or its partner's) holds less than the request's cost: every
    /// limit, as far as the database said.
    UsageExceeded(crate::rate::Limits),
    /// A request authenticated by a signature (GitHub's secret scanning reports) whose
    /// signature is missing, names no configured key, or does not match.
    BadSignature(&'static str),
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
    /// A body within the size limit that holds more items than the route takes at once.
    TooManyItems(String),
    UnsupportedMediaType(String),
    /// The database is down or unreachable (or misconfigured): retry later.
    Unavailable(String),
    /// The request took longer than the configured time limit.
    TimedOut,
    Internal(String),
}

/// The reasons the shim answers with besides those of `apikey_verify`
/// (`apikey_contract::reason::Reason`); the OpenAPI document lists both.
pub const SHIM_REASONS: [&str; 11] = [
    "bad_request",
    "invalid_field",
    "not_found",
    "conflict",
    "forbidden",
    "payload_too_large",
    "unsupported_media_type",
    "unavailable",
    "internal",
    "method_not_allowed",
    "invalid_signature",
];

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
            // Reached without the key's limit: guesses at a key not yet proven queue for
            // Argon2id beyond what the database lets wait (it shows no identity then), or a
            // database older than the rate columns. A 429 that asks to retry in a second.
            "rate_limited" => AppError::RateLimited(crate::rate::Limits {
                key: Some(crate::rate::Rate::RETRY_IN_A_SECOND),
                ..Default::default()
            }),
            "usage_exceeded" => AppError::UsageExceeded(Default::default()),
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
            AppError::UsageExceeded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "usage_exceeded",
                "the key's credits are used up".into(),
                None,
            ),
            AppError::BadSignature(message) => (
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                (*message).into(),
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
            AppError::TooManyItems(message) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                message.clone(),
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

impl AppError {
    /// The JSON an answer with this error carries: `{error, reason, field?}`.
    pub fn body(&self) -> serde_json::Value {
        let (_, reason, message, field) = self.parts();
        let mut body = json!({ "error": shown(&message), "reason": reason });
        if let Some(field) = field {
            body["field"] = json!(redact::excerpt(field));
        }
        body
    }
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
        let status = self.parts().0;
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            AppError::Unauthorized { reason } => {
                let challenge = format!("ApiKey realm=\"apikey\", error=\"{reason}\"");
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            AppError::RateLimited(limits) | AppError::UsageExceeded(limits) => {
                limits.write_headers(headers)
            }
            AppError::Unavailable(_) | AppError::TimedOut => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// A database error: by SQLSTATE when the server answered, unavailable when it could not.
impl From<tokio_postgres::Error> for AppError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => AppError::from_sqlstate(db.code().code(), db.message(), db.detail()),
            None => AppError::Unavailable(e.to_string()),
        }
    }
}

impl AppError {
    /// The extension's messages never contain a token, so they are passed to the client as
    /// they are; which argument a 22xxx error is about comes from its DETAIL
    /// (`apikey_contract::argument`), never from the message's wording.
    fn from_sqlstate(code: &str, message: &str, detail: Option<&str>) -> Self {
        let message = message.to_string();
        match code {
            "42501" => AppError::Forbidden {
                reason: "forbidden".into(),
                message,
            },
            "P0002" => AppError::NotFound(message),
            "55000" | "23505" => AppError::Conflict(message),
            code if code.starts_with("22") => {
                let field = detail
                    .and_then(apikey_contract::argument::from_detail)
                    .map(str::to_string);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Names every variant: a new one does not compile until it is added here and to
    /// `one_of_each` below.
    fn variant_name(error: &AppError) -> &'static str {
        match error {
            AppError::Unauthorized { .. } => "Unauthorized",
            AppError::Forbidden { .. } => "Forbidden",
            AppError::RateLimited(_) => "RateLimited",
            AppError::UsageExceeded(_) => "UsageExceeded",
            AppError::BadSignature(_) => "BadSignature",
            AppError::BadRequest { .. } => "BadRequest",
            AppError::Unprocessable { .. } => "Unprocessable",
            AppError::NotFound(_) => "NotFound",
            AppError::MethodNotAllowed => "MethodNotAllowed",
            AppError::Conflict(_) => "Conflict",
            AppError::PayloadTooLarge => "PayloadTooLarge",
            AppError::TooManyItems(_) => "TooManyItems",
            AppError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            AppError::Unavailable(_) => "Unavailable",
            AppError::TimedOut => "TimedOut",
            AppError::Internal(_) => "Internal",
        }
    }

    #[test]
    fn every_variant_answers_a_reason_the_document_lists() {
        let one_of_each = [
            AppError::from_reason("revoked"),
            AppError::from_sqlstate("42501", "permission denied", None),
            AppError::from_reason("rate_limited"),
            AppError::from_reason("usage_exceeded"),
            AppError::BadSignature("no signature"),
            AppError::bad_request("bad"),
            AppError::invalid_field("limit", "bad"),
            AppError::NotFound("gone".into()),
            AppError::MethodNotAllowed,
            AppError::Conflict("taken".into()),
            AppError::PayloadTooLarge,
            AppError::TooManyItems("many".into()),
            AppError::UnsupportedMediaType("text/plain".into()),
            AppError::Unavailable("down".into()),
            AppError::TimedOut,
            AppError::Internal("bug".into()),
        ];
        let names: std::collections::BTreeSet<_> = one_of_each.iter().map(variant_name).collect();
        assert_eq!(
            names.len(),
            one_of_each.len(),
            "one of each variant: {names:?}"
        );
        let answered: std::collections::BTreeSet<&str> = one_of_each
            .iter()
            .map(|error| error.parts().1)
            .filter(|reason| apikey_contract::reason::Reason::parse(reason).is_none())
            .collect();
        assert_eq!(
            answered,
            SHIM_REASONS.into_iter().collect(),
            "SHIM_REASONS lists a reason no variant answers"
        );
        for error in &one_of_each {
            let reason = error.parts().1;
            assert!(
                apikey_contract::reason::Reason::parse(reason).is_some()
                    || SHIM_REASONS.contains(&reason),
                "{} answers {reason}, which SHIM_REASONS does not list",
                variant_name(error)
            );
        }
    }

    #[test]
    fn the_field_comes_from_the_detail_never_from_the_message() {
        let detail = apikey_contract::argument::detail("url");
        for (message, detail, field) in [
            ("invalid url: not http", Some(detail.as_str()), Some("url")),
            (
                "a message worded any way at all",
                Some(detail.as_str()),
                Some("url"),
            ),
            ("invalid scopes: looks like a field", None, None),
            (
                "invalid input syntax for type uuid",
                Some("Token \"x\" is invalid."),
                None,
            ),
        ] {
            match AppError::from_sqlstate("22023", message, detail) {
                AppError::Unprocessable { field: got, .. } => {
                    assert_eq!(got.as_deref(), field, "{message}")
                }
                _ => panic!("{message}: not a 422"),
            }
        }
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

    /// Status, JSON body and the headers a client acts on, as sent.
    fn sent(e: AppError) -> (u16, serde_json::Value, Vec<(String, String)>) {
        let response = e.into_response();
        let status = response.status().as_u16();
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter(|(name, _)| *name != header::CONTENT_TYPE && *name != header::CONTENT_LENGTH)
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_string()))
            .collect();
        headers.sort();
        let body = serde_json::from_str(&futures_body(response)).expect("a JSON body");
        (status, body, headers)
    }

    fn header(name: &str, value: &str) -> (String, String) {
        (name.to_string(), value.to_string())
    }

    #[test]
    fn sqlstates_map_to_statuses_reasons_and_fields() {
        let cases: [(&str, &str, u16, &str, Option<&str>); 17] = [
            ("42501", "permission denied", 403, "forbidden", None),
            (
                "P0002",
                "key ak_live_x does not exist",
                404,
                "not_found",
                None,
            ),
            ("55000", "key already rotated", 409, "conflict", None),
            ("23505", "partner already exists", 409, "conflict", None),
            (
                "22023",
                "invalid scopes: scope \"x\" is invalid",
                422,
                "invalid_field",
                Some("scopes"),
            ),
            (
                "22023",
                "invalid url: only https URLs are accepted",
                422,
                "invalid_field",
                Some("url"),
            ),
            (
                "22023",
                "invalid events: \"key.nope\" is not an event type",
                422,
                "invalid_field",
                Some("events"),
            ),
            (
                "P0002",
                "webhook endpoint 0b7c9f0e-6a43-4d8a-9d0e-7f3c2a1b5e6d does not exist",
                404,
                "not_found",
                None,
            ),
            (
                "22004",
                "rate_per_minute must not be NULL",
                422,
                "invalid_field",
                Some("rate_per_minute"),
            ),
            (
                "22P02",
                "invalid input syntax for type uuid",
                422,
                "invalid_field",
                None,
            ),
            ("F0000", "pepper file unreadable", 503, "unavailable", None),
            ("57P01", "terminating connection", 503, "unavailable", None),
            ("57P02", "crash shutdown", 503, "unavailable", None),
            (
                "57P03",
                "the database system is starting up",
                503,
                "unavailable",
                None,
            ),
            ("53300", "too many connections", 503, "unavailable", None),
            ("08006", "connection failure", 503, "unavailable", None),
            ("XX000", "something broke", 500, "internal", None),
        ];
        for (code, message, status, reason, field) in cases {
            let detail = field.map(apikey_contract::argument::detail);
            let (got_status, body, _) =
                sent(AppError::from_sqlstate(code, message, detail.as_deref()));
            assert_eq!(
                (got_status, body["reason"].as_str(), body["field"].as_str()),
                (status, Some(reason), field),
                "{code}"
            );
            let shown_message = body["error"].as_str().expect("a message");
            if status < 500 {
                assert_eq!(
                    shown_message, message,
                    "{code}: a client error says what is wrong"
                );
            } else {
                assert!(
                    !shown_message.contains(message),
                    "{code}: server detail stays in the log"
                );
            }
        }
    }

    #[test]
    fn each_variant_has_its_status_reason_and_headers() {
        let rate = crate::rate::Rate {
            quota: 300,
            remaining: 0,
            reset_seconds: 30,
            refused: true,
        };
        let cases = [
            (
                AppError::from_reason("expired"),
                401,
                "expired",
                "the API key has expired",
                vec![header(
                    "www-authenticate",
                    "ApiKey realm=\"apikey\", error=\"expired\"",
                )],
            ),
            (
                AppError::from_reason("insufficient_scope"),
                403,
                "insufficient_scope",
                "the key lacks a required scope",
                vec![],
            ),
            (
                AppError::from_reason("ip_not_allowed"),
                403,
                "ip_not_allowed",
                "the key may not be used from this address",
                vec![],
            ),
            (
                AppError::from_reason("rate_limited"),
                429,
                "rate_limited",
                "rate limit exceeded",
                vec![
                    header("ratelimit", "\"key\";r=0;t=1"),
                    header("ratelimit-policy", "\"key\";q=0;w=60"),
                    header("retry-after", "1"),
                ],
            ),
            (
                AppError::RateLimited(crate::rate::Limits {
                    key: Some(rate),
                    ..Default::default()
                }),
                429,
                "rate_limited",
                "rate limit exceeded",
                vec![
                    header("ratelimit", "\"key\";r=0;t=30"),
                    header("ratelimit-policy", "\"key\";q=300;w=60"),
                    header("retry-after", "30"),
                ],
            ),
            (
                AppError::from_reason("usage_exceeded"),
                429,
                "usage_exceeded",
                "the key's credits are used up",
                vec![],
            ),
            (
                AppError::UsageExceeded(crate::rate::Limits {
                    credits: Some(crate::rate::Credits {
                        remaining: 2,
                        refill_in: Some(90),
                        refused: true,
                    }),
                    ..Default::default()
                }),
                429,
                "usage_exceeded",
                "the key's credits are used up",
                vec![
                    header("ratelimit", "\"credits\";r=2;t=90"),
                    header("retry-after", "90"),
                ],
            ),
            (
                AppError::bad_request("no"),
                400,
                "bad_request",
                "no",
                vec![],
            ),
            (
                AppError::invalid_field("name", "too long"),
                422,
                "invalid_field",
                "too long",
                vec![],
            ),
            (
                AppError::NotFound("gone".into()),
                404,
                "not_found",
                "gone",
                vec![],
            ),
            (
                AppError::MethodNotAllowed,
                405,
                "method_not_allowed",
                "this route does not accept that method",
                vec![],
            ),
            (
                AppError::Conflict("twice".into()),
                409,
                "conflict",
                "twice",
                vec![],
            ),
            (
                AppError::PayloadTooLarge,
                413,
                "payload_too_large",
                "request body too large",
                vec![],
            ),
            (
                AppError::TooManyItems("at most 100 tokens per report".into()),
                413,
                "payload_too_large",
                "at most 100 tokens per report",
                vec![],
            ),
            (
                AppError::BadSignature("the signature does not match the body"),
                401,
                "invalid_signature",
                "the signature does not match the body",
                vec![],
            ),
            (
                AppError::UnsupportedMediaType("send JSON".into()),
                415,
                "unsupported_media_type",
                "send JSON",
                vec![],
            ),
            (
                AppError::Unavailable("connection refused".into()),
                503,
                "unavailable",
                "the key database is unavailable; retry later",
                vec![header("retry-after", "1")],
            ),
            (
                AppError::TimedOut,
                503,
                "unavailable",
                "the request took longer than the shim's time limit; retry later",
                vec![header("retry-after", "1")],
            ),
            (
                AppError::Internal("SQLSTATE XX000: detail".into()),
                500,
                "internal",
                "internal error",
                vec![],
            ),
        ];
        for (error, status, reason, message, headers) in cases {
            let what = format!("{error:?}");
            let (got_status, body, got_headers) = sent(error);
            assert_eq!(got_status, status, "{what}");
            assert_eq!(body["reason"], reason, "{what}");
            assert_eq!(body["error"], message, "{what}");
            assert_eq!(got_headers, headers, "{what}");
        }
        let (_, body, _) = sent(AppError::invalid_field("name", "too long"));
        assert_eq!(body["field"], "name");
    }

    #[test]
    fn every_unauthorized_reason_has_its_own_message() {
        let cases = [
            (
                "missing_key",
                "no API key: send it in X-API-Key or Authorization: ApiKey <token>",
            ),
            ("malformed", "the API key is malformed"),
            ("revoked", "the API key was revoked"),
            ("disabled", "the API key is disabled"),
            ("expired", "the API key has expired"),
            ("not_yet_valid", "the API key is not valid yet"),
            ("partner_inactive", "the API key's partner is inactive"),
            ("unknown_key", "the API key is not valid"),
            ("secret_mismatch", "the API key is not valid"),
        ];
        for (reason, message) in cases {
            assert_eq!(unauthorized_message(reason), message);
        }
    }

    #[test]
    fn messages_are_cut_only_past_the_limit() {
        let limit = "word ".repeat(MAX_MESSAGE_CHARS / 5);
        assert_eq!(limit.chars().count(), MAX_MESSAGE_CHARS);
        assert_eq!(shown(&limit), limit);
        let longer = format!("{limit}w");
        let cut = shown(&longer);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS);
        assert_eq!(cut, format!("{}…", &limit[..MAX_MESSAGE_CHARS - 1]));
    }

    /// What the shim logs while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("sink").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&buffer.lock().expect("sink")).into_owned();
        text
    }

    #[test]
    fn server_failures_are_logged_once_and_client_mistakes_not_at_all() {
        let token = "ak_live_0123456789abcdef_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq012345";
        let internal = logged(|| {
            drop(AppError::Internal(format!("SQLSTATE XX000: broke near {token}")).into_response());
        });
        assert_eq!(internal.lines().count(), 1, "{internal}");
        assert!(
            internal.contains("ERROR") && internal.contains("internal error"),
            "{internal}"
        );
        assert!(
            internal.contains("SQLSTATE XX000: broke near ak_live_0123456789abcdef_…"),
            "{internal}"
        );
        assert!(!internal.contains("ABCDEFGHIJ"), "{internal}");

        let unavailable = logged(|| {
            drop(AppError::Unavailable("connection refused".into()).into_response());
        });
        assert_eq!(unavailable.lines().count(), 1, "{unavailable}");
        assert!(
            unavailable.contains("WARN")
                && unavailable.contains("database unavailable")
                && unavailable.contains("connection refused"),
            "{unavailable}"
        );

        let quiet = logged(|| {
            for quiet in [
                AppError::from_reason("revoked"),
                AppError::bad_request("no"),
                AppError::TimedOut,
            ] {
                drop(quiet.into_response());
            }
        });
        assert_eq!(quiet, "");
    }
}
