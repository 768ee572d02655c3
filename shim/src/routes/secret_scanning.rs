//! `POST /v1/secret-scanning`: GitHub's secret scanning partner program. GitHub posts the
//! tokens it found in public places, signed with one of its keys (see `github_signature`);
//! each is handed to `apikey_leak_report`, which revokes (or only flags) a real key, and the
//! answer labels each token so GitHub can tell its users which leaks were real.
//!
//! No API key is presented: the signature is the authentication, so the calls run on a
//! pooled connection as the shim's own role (a member of apikey_admin), outside
//! `db::begin_as_key_holder`. Nothing is looked up before the signature is checked, and
//! tokens never reach a log line: only counts, labels and the key ids of real keys.

use crate::error::AppError;
use crate::extract::RawBody;
use crate::metrics::LeakLabel;
use crate::openapi::answers::{BadRequest, InvalidInput, ServerErrors};
use crate::openapi::schemas;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Type;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const KEY_IDENTIFIER: HeaderName = HeaderName::from_static("github-public-key-identifier");
const KEY_SIGNATURE: HeaderName = HeaderName::from_static("github-public-key-signature");

/// Most tokens one report may hold. GitHub sends its matches in batches; every token costs a
/// database call (an Argon2id verification for an unproven key), and a report must be
/// answered within the request time limit, so a larger one is refused whole (413) before any
/// token is looked up.
pub const MAX_TOKENS: usize = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(report))
}

/// One match as GitHub sends it. Fields GitHub may add are ignored; `url` may be empty.
#[derive(Deserialize)]
struct Match {
    token: String,
    #[serde(rename = "type", default)]
    token_type: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

/// One element of the answer, in the feedback format GitHub's documentation gives. The raw
/// token goes back to GitHub, who sent it (their format's alternative, `token_hash`, leaves
/// its encoding unspecified); it goes nowhere else.
#[derive(Serialize)]
struct Labelled {
    token_raw: String,
    token_type: String,
    label: &'static str,
}

/// Report leaked tokens (GitHub secret scanning)
///
/// The endpoint of GitHub's secret scanning partner program. No API key: the raw body must be
/// signed by GitHub (ECDSA P-256 over SHA-256; `Github-Public-Key-Signature` is base64 of the DER
/// signature) with a key that `Github-Public-Key-Identifier` names in the file given by
/// `APIKEY_SHIM_SECRET_SCANNING_KEYS` (GitHub's list from
/// https://api.github.com/meta/public_keys/secret_scanning; re-read when it changes). Without that
/// setting the route answers 404.
///
/// Checked in this order, nothing looked up before the last: configured (404), signature (401),
/// JSON (400, or 422 for the wrong shape), at most 100 matches (413). Then each match is given to
/// `apikey_leak_report(token, url, source, revoke)`, one after the other: a real key of this
/// database is revoked (`APIKEY_SHIM_SECRET_SCANNING_ACTION=revoke`, the default) or only flagged
/// (`flag`), with a `leak_reported` audit row and a `key.leaked` event for its partner. The answer
/// labels every match, in order, in GitHub's feedback format. Any database failure is 503, so that
/// GitHub retries; a retry is harmless (a key already revoked is still a true positive). Tokens are
/// never logged: the shim logs counts, labels and the key ids of real keys.
#[utoipa::path(
    post,
    path = "/v1/secret-scanning",
    tag = "secret-scanning",
    operation_id = "reportLeakedTokens",
    params(
        (
            "Github-Public-Key-Identifier" = String,
            Header,
            description = "The `key_identifier` of the GitHub key that signed the body.",
        ),
        (
            "Github-Public-Key-Signature" = String,
            Header,
            description = "Base64 of the DER-encoded ECDSA P-256 / SHA-256 signature over the raw \
                body.",
        ),
    ),
    request_body = schemas::SecretScanningReport,
    responses(
        (
            status = 200,
            description = "Every match, labelled, in the order reported.",
            body = schemas::SecretScanningLabels,
            example = json!([
                {
                    "token_raw": "ak_live_3xF0q9LmZ2bT7cYw_…",
                    "token_type": "apikey_token",
                    "label": "true_positive",
                },
                {
                    "token_raw": "ak_live_notakeyatall",
                    "token_type": "apikey_token",
                    "label": "false_positive",
                },
            ]),
        ),
        (
            status = 401,
            description = "The signature is missing, names no configured key, is not base64 of a \
                DER ECDSA signature, or does not match the body (`reason: invalid_signature`). \
                Nothing was looked up or changed.",
            body = schemas::Error,
            example = json!({
                "error": "the signature does not match the body",
                "reason": "invalid_signature",
            }),
        ),
        (
            status = 404,
            description = "Secret scanning is not configured (`APIKEY_SHIM_SECRET_SCANNING_KEYS` \
                unset).",
            body = schemas::Error,
            example = json!({
                "error": "secret scanning is not configured on this server \
                    (APIKEY_SHIM_SECRET_SCANNING_KEYS)",
                "reason": "not_found",
            }),
        ),
        (
            status = 413,
            description = "More than 100 matches in one report, or a body larger than \
                `APIKEY_SHIM_MAX_BODY_BYTES`. Nothing was looked up.",
            body = schemas::Error,
            example = json!({
                "error": "a report may hold at most 100 tokens; this one holds 101",
                "reason": "payload_too_large",
            }),
        ),
        InvalidInput,
        ServerErrors,
        BadRequest,
    ),
    security(()),
)]
async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::Json<Vec<Labelled>>, AppError> {
    let keys = state.secret_scanning.as_ref().ok_or_else(|| {
        AppError::NotFound(
            "secret scanning is not configured on this server \
             (APIKEY_SHIM_SECRET_SCANNING_KEYS)"
                .into(),
        )
    })?;
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    keys.keys()
        .verify(header(&KEY_IDENTIFIER), header(&KEY_SIGNATURE), &body)
        .map_err(|refusal| AppError::BadSignature(refusal.message()))?;
    let matches = parse(&body)?;
    if matches.len() > MAX_TOKENS {
        return Err(AppError::TooManyItems(format!(
            "a report may hold at most {MAX_TOKENS} tokens; this one holds {}",
            matches.len()
        )));
    }
    let revoke = state.config.secret_scanning_action == crate::config::LeakAction::Revoke;
    let labels = look_up(&state, &matches, revoke).await?;

    let mut true_positives = 0;
    let mut leaked_key_ids = Vec::new();
    for (m, label) in matches.iter().zip(&labels) {
        state.metrics.leak_reported(*label);
        if *label == LeakLabel::TruePositive {
            true_positives += 1;
            // A true positive has a token's shape, so its key id (public) can be cut out.
            if let Some(parsed) = apikey_contract::token::parse(&m.token) {
                leaked_key_ids.push(parsed.key_id.to_string());
            }
        }
    }
    tracing::info!(
        tokens = matches.len(),
        true_positive = true_positives,
        false_positive = matches.len() - true_positives,
        action = state.config.secret_scanning_action.as_str(),
        key_ids = ?leaked_key_ids,
        "GitHub secret scanning report"
    );
    Ok(axum::Json(
        matches
            .into_iter()
            .zip(labels)
            .map(|(m, label)| Labelled {
                token_raw: m.token,
                token_type: m.token_type,
                label: label.as_str(),
            })
            .collect(),
    ))
}

/// Syntax errors are 400; a body of the wrong shape is 422 naming the field of the first
/// wrong match. Neither message quotes a token (serde quotes values of wrong types, which
/// `AppError` cuts back to a key id anyway).
fn parse(body: &[u8]) -> Result<Vec<Match>, AppError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        // "[3].token" names the field "token"; a body that is no array names none.
        let field = path
            .rsplit('.')
            .next()
            .filter(|f| !f.is_empty() && !f.starts_with('['))
            .map(str::to_string);
        let message = if path == "." {
            format!("the body must be a JSON array of matches: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        };
        AppError::Unprocessable { message, field }
    })
}

/// `apikey_leak_report` for each match, in order, on one pooled connection. Any database
/// failure is a 503, whatever its SQLSTATE: GitHub retries a report that was not answered,
/// and a retry is harmless (a key already revoked is still a true positive).
async fn look_up(
    state: &AppState,
    matches: &[Match],
    revoke: bool,
) -> Result<Vec<LeakLabel>, AppError> {
    let mut labels = Vec::with_capacity(matches.len());
    if matches.is_empty() {
        return Ok(labels);
    }
    let client = state.connection().await?;
    for m in matches {
        // PostgreSQL text cannot hold NUL: such a token is no key of ours, and the audit
        // fields keep the rest of their text.
        if m.token.contains('\0') {
            labels.push(LeakLabel::FalsePositive);
            continue;
        }
        let url = audit_text(m.url.as_deref());
        let source = audit_text(m.source.as_deref());
        let row = client
            .query_typed_one(
                "SELECT apikey_leak_report($1, $2, $3, $4)",
                &[
                    (&m.token, Type::TEXT),
                    (&url, Type::TEXT),
                    (&source, Type::TEXT),
                    (&revoke, Type::BOOL),
                ],
            )
            .await
            .map_err(retry_later)?;
        let label: Option<String> = row.try_get(0).map_err(retry_later)?;
        labels.push(label.as_deref().and_then(LeakLabel::parse).ok_or_else(|| {
            AppError::Unavailable(format!(
                "apikey_leak_report answered {label:?}, not true_positive or \
                         false_positive: is the extension up to date?"
            ))
        })?);
    }
    Ok(labels)
}

/// A url or source as the audit row keeps it: NULL when empty, NUL characters replaced.
fn audit_text(text: Option<&str>) -> Option<String> {
    text.filter(|t| !t.is_empty())
        .map(|t| t.replace('\0', "\u{FFFD}"))
}

fn retry_later(e: tokio_postgres::Error) -> AppError {
    let detail = match e.as_db_error() {
        Some(db) => format!("SQLSTATE {}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    AppError::Unavailable(format!("apikey_leak_report: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_are_read_as_github_sends_them() {
        let body = br#"[
            {"token": "t1", "type": "apikey_token", "url": "https://github.com/o/r/blob/x/a.txt", "source": "content"},
            {"token": "t2", "type": "apikey_token", "url": "", "source": "commit", "new_field": {"x": 1}},
            {"token": "t3"}
        ]"#;
        let matches = parse(body).expect("three matches");
        assert_eq!(matches.len(), 3);
        assert_eq!(matches[0].token, "t1");
        assert_eq!(matches[0].token_type, "apikey_token");
        assert_eq!(matches[0].source.as_deref(), Some("content"));
        assert_eq!(audit_text(matches[1].url.as_deref()), None);
        assert_eq!(matches[2].token_type, "");
        assert_eq!(matches[2].url, None);
        assert!(parse(b"[]").expect("no matches").is_empty());
    }

    #[test]
    fn wrong_bodies_are_400_or_422_naming_the_field() {
        for body in [&b"[{"[..], b"", b"\xff", b"not json"] {
            assert!(
                matches!(parse(body), Err(AppError::BadRequest { .. })),
                "{body:?}"
            );
        }
        let cases: [(&[u8], Option<&str>); 5] = [
            (br#"{"token": "t"}"#, None),
            (br#"[{"type": "x"}]"#, None),
            (br#"[{"token": "t"}, {"token": 5}]"#, Some("token")),
            (br#"[{"token": "t", "url": 1}]"#, Some("url")),
            (br#"["t"]"#, None),
        ];
        for (body, expected) in cases {
            match parse(body) {
                Err(AppError::Unprocessable { field, .. }) => {
                    assert_eq!(
                        field.as_deref(),
                        expected,
                        "{}",
                        String::from_utf8_lossy(body)
                    )
                }
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("{} parsed", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn audit_fields_are_null_when_empty_and_never_hold_nul() {
        assert_eq!(audit_text(None), None);
        assert_eq!(audit_text(Some("")), None);
        assert_eq!(audit_text(Some("a\0b")).as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(
            audit_text(Some("https://github.com/o/r")).as_deref(),
            Some("https://github.com/o/r")
        );
    }
}
