//! The router in process (`tower::ServiceExt::oneshot`), for everything answered before a
//! database is asked: unknown routes, wrong methods, bodies refused by size, type or syntax,
//! the console's security headers, the OpenAPI document, and how an unreachable database
//! is reported. The pool points at a socket directory that does not exist, so any request
//! that did reach the database would fail with 503, not pass. The real binary over real
//! HTTP against a real cluster is tested in tests/.

use apikey_shim::app::router;
use apikey_shim::config::Config;
use apikey_shim::github_signature::KeyFile;
use apikey_shim::routes::console::security_headers;
use apikey_shim::state::AppState;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use clap::Parser;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

const MAX_BODY: usize = 1024;

fn state() -> AppState {
    state_with(MAX_BODY, None)
}

fn state_with(max_body: usize, secret_scanning: Option<Arc<KeyFile>>) -> AppState {
    let config = Config::parse_from([
        "apikey-shim",
        "--database-url",
        "host=/nonexistent/apikey-router-test dbname=apikey user=apikey_shim connect_timeout=1",
        "--max-body-bytes",
        &max_body.to_string(),
    ]);
    AppState::new(config, secret_scanning).expect("the pools")
}

/// Sends one request through a fresh router, as if from 192.0.2.10.
async fn send(method: &str, uri: &str, content_type: Option<&str>, body: Vec<u8>) -> Response {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let mut request = request.body(Body::from(body)).expect("a request");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 10], 40000))));
    router(state()).oneshot(request).await.expect("infallible")
}

async fn json_of(response: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the body");
    serde_json::from_slice(&bytes).expect("a JSON body")
}

/// Status and `reason` of a JSON error.
async fn refusal(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body = json_of(response).await;
    (status, body["reason"].as_str().unwrap_or("-").to_string())
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    for (method, uri, expected) in [
        ("GET", "/nope", (StatusCode::NOT_FOUND, "not_found")),
        ("GET", "/v1/verifyx", (StatusCode::NOT_FOUND, "not_found")),
        (
            "GET",
            "/v1/keys/k/unknown",
            (StatusCode::NOT_FOUND, "not_found"),
        ),
        (
            "DELETE",
            "/v1/verify",
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ),
        (
            "PUT",
            "/healthz",
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ),
        (
            "GET",
            "/v1/keys/k/rotate",
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ),
        (
            "DELETE",
            "/v1/keys",
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ),
        // The gateway form takes every method, those the document does not list included: the
        // request goes on to the database (unreachable here), it is not refused with 405.
        (
            "PROPFIND",
            "/v1/verify/dav/folder",
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ),
        (
            "DELETE",
            "/v1/verify/orders/7",
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ),
    ] {
        let got = refusal(send(method, uri, None, vec![]).await).await;
        assert_eq!((got.0, got.1.as_str()), expected, "{method} {uri}");
    }
}

#[tokio::test]
async fn bodies_are_refused_by_type_size_and_syntax_before_the_database() {
    let json = Some("application/json");
    for (content_type, body, expected) in [
        (
            Some("text/plain"),
            b"{}".to_vec(),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ),
        (
            None,
            b"{}".to_vec(),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ),
        (
            json,
            vec![b' '; MAX_BODY + 1],
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ),
        (
            json,
            b"{".to_vec(),
            (StatusCode::BAD_REQUEST, "bad_request"),
        ),
        (
            json,
            vec![0xff, 0xfe],
            (StatusCode::BAD_REQUEST, "bad_request"),
        ),
        (
            json,
            br#"{"scopes": "orders:read"}"#.to_vec(),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
        ),
    ] {
        let got = refusal(send("POST", "/v1/keys", content_type, body.clone()).await).await;
        assert_eq!(
            (got.0, got.1.as_str()),
            expected,
            "{content_type:?} {} bytes",
            body.len()
        );
    }
}

#[tokio::test]
async fn an_unreachable_database_is_503_with_retry_after() {
    for uri in ["/healthz", "/v1/verify"] {
        let response = send("GET", uri, None, vec![]).await;
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"1"[..]),
            "{uri}"
        );
        let got = refusal(response).await;
        assert_eq!(
            (got.0, got.1.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn every_console_response_carries_the_security_headers() {
    for (method, uri, status) in [
        ("GET", "/console", StatusCode::OK),
        ("GET", "/console/", StatusCode::OK),
        ("GET", "/console/app.js", StatusCode::OK),
        ("GET", "/console/app.css", StatusCode::OK),
        ("GET", "/console/js/api.js", StatusCode::OK),
        ("GET", "/console/js/nope.js", StatusCode::NOT_FOUND),
        ("GET", "/console/js/..%2Fapp.js", StatusCode::NOT_FOUND),
        ("POST", "/console", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let response = send(method, uri, None, vec![]).await;
        assert_eq!(response.status(), status, "{method} {uri}");
        if uri.ends_with(".js") && status == StatusCode::OK {
            assert_eq!(
                response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.as_bytes()),
                Some(&b"application/javascript; charset=utf-8"[..]),
                "a module script must be served as JavaScript"
            );
        }
        for (name, value) in security_headers() {
            assert_eq!(
                response.headers().get(&name),
                Some(&value),
                "{method} {uri}: {name}"
            );
        }
    }
    let api = send("GET", "/nope", None, vec![]).await;
    assert_eq!(
        api.headers().get(header::CONTENT_SECURITY_POLICY),
        None,
        "the API's own answers"
    );
}

/// The other direction of "every route is described": every described route is served (no
/// fallback 404, no 405). Path parameters get a well-formed value; no database is reachable,
/// so most answers are 503, which is the point: the route was found.
#[tokio::test]
async fn every_documented_route_is_served() {
    let doc = apikey_shim::openapi::document();
    let mut tried = 0;
    for (template, item) in doc["paths"].as_object().expect("paths") {
        let path = template
            .replace("{key_id}", "ak_live_x")
            .replace("{partner_id}", "00000000-0000-0000-0000-000000000001")
            .replace("{endpoint_id}", "00000000-0000-0000-0000-000000000002")
            .replace("{module}", "api.js")
            .replace("{rest}", "orders/7");
        assert!(!path.contains('{'), "no sample value for {template}");
        for method in apikey_shim::openapi::METHODS {
            if item.get(method).is_none() {
                continue;
            }
            let method = method.to_ascii_uppercase();
            let response = send(&method, &path, None, vec![]).await;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("the body");
            let unrouted = serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|error| error["error"] == "no such route");
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !unrouted,
                "{method} {path} is documented but not served: {status}"
            );
            tried += 1;
        }
    }
    assert!(tried >= 40, "tried only {tried} operations");
}

#[tokio::test]
async fn the_generated_openapi_document_is_served() {
    let response = send("GET", "/openapi.json", None, vec![]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let served = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    assert_eq!(served, apikey_shim::openapi::json().as_bytes());
}

/// What the console and other clients check before sending, as the contract crate states it.
#[tokio::test]
async fn the_limits_are_served_without_a_key() {
    let response = send("GET", "/v1/limits", None, vec![]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_of(response).await,
        serde_json::json!({
            "scope_word_pattern": "^[A-Za-z0-9_.-]+$",
            "scope_instance_pattern": "^[A-Za-z0-9_.~-]{1,64}$",
            "scope_instance_max_bytes": 64,
            "scope_max_bytes": 128,
            "scopes_max": 64,
            "rotation_grace_seconds_max": 31_622_400,
            "webhook_secret_grace_seconds_max": 604_800,
            "webhook_endpoints_per_partner_max": 16,
            "expiring_soon_days": 7,
        })
    );
    let (status, reason) = refusal(send("POST", "/v1/limits", None, vec![]).await).await;
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

/// Method, URI, content type, body, expected status and `field`.
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    &'a [u8],
    u16,
    Option<&'a str>,
);

#[tokio::test]
async fn webhook_routes_name_the_wrong_field_before_the_database() {
    let json = Some("application/json");
    let id = "0b7c9f0e-6a43-4d8a-9d0e-7f3c2a1b5e6d";
    let cases: Vec<Case> = vec![
        ("POST", "/v1/webhooks/not-a-uuid/test".into(), None, b"", 422, Some("endpoint_id")),
        ("DELETE", "/v1/webhooks/ak_live_x".into(), None, b"", 422, Some("endpoint_id")),
        ("GET", "/v1/webhooks/1/deliveries".into(), None, b"", 422, Some("endpoint_id")),
        (
            "GET",
            format!("/v1/webhooks/{id}/deliveries?limit=501"),
            None,
            b"",
            422,
            Some("limit"),
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json,
            br#"{"url": "https://example.com/in"}"#,
            422,
            Some("partner_id"),
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json,
            br#"{"partner_id": "0b7c9f0e-6a43-4d8a-9d0e-7f3c2a1b5e6d", "url": "https://example.com/in", "events": "key.revoked"}"#,
            422,
            Some("events"),
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json,
            br#"{"partner_id": "0b7c9f0e-6a43-4d8a-9d0e-7f3c2a1b5e6d", "url": "https://example.com/in", "colour": 1}"#,
            422,
            Some("colour"),
        ),
        (
            "POST",
            format!("/v1/webhooks/{id}/rotate-secret"),
            json,
            br#"{"grace_seconds": -1}"#,
            422,
            Some("grace_seconds"),
        ),
        // One second over the limit GET /v1/limits states, and the limit itself.
        (
            "POST",
            format!("/v1/webhooks/{id}/rotate-secret"),
            json,
            br#"{"grace_seconds": 604801}"#,
            422,
            Some("grace_seconds"),
        ),
        (
            "POST",
            format!("/v1/webhooks/{id}/rotate-secret"),
            json,
            br#"{"grace_seconds": 604800}"#,
            503,
            None,
        ),
        (
            "POST",
            "/v1/keys/ak_live_x/rotate".into(),
            json,
            br#"{"grace_seconds": 31622401}"#,
            422,
            Some("grace_seconds"),
        ),
        ("PUT", "/v1/webhooks".into(), None, b"", 405, None),
        ("POST", format!("/v1/webhooks/{id}/deliveries"), None, b"", 405, None),
        // Well-formed: these reach the (unreachable) database.
        ("POST", format!("/v1/webhooks/{id}/test"), None, b"", 503, None),
        ("POST", format!("/v1/webhooks/{id}/rotate-secret"), None, b"", 503, None),
        ("GET", "/v1/webhooks?limit=10".into(), None, b"", 503, None),
    ];
    for (method, uri, content_type, body, status, field) in cases {
        let response = send(method, &uri, content_type, body.to_vec()).await;
        let got = response.status().as_u16();
        let body = json_of(response).await;
        assert_eq!(
            (got, body["field"].as_str()),
            (status, field),
            "{method} {uri}: {body}"
        );
    }
}

/// GitHub's side of a secret scanning report: a key pair, the key list file the shim reads,
/// and signatures over bodies. The private scalar is fixed (RustCrypto's ECDSA signing is
/// deterministic), so nothing here needs randomness.
struct GitHub {
    key: p256::ecdsa::SigningKey,
    key_file: std::path::PathBuf,
}

const GITHUB_KEY_ID: &str = "test-key-1";

impl GitHub {
    fn new(name: &str) -> GitHub {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let key = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).expect("a scalar");
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM");
        let list = serde_json::json!({ "public_keys": [
            { "key_identifier": GITHUB_KEY_ID, "key": pem, "is_current": true }
        ] });
        let key_file = std::env::temp_dir().join(format!(
            "apikey-router-{name}-{}-github-keys.json",
            std::process::id()
        ));
        std::fs::write(&key_file, list.to_string()).expect("write the key list");
        GitHub { key, key_file }
    }

    fn sign(&self, body: &[u8]) -> String {
        sign_with(&self.key, body)
    }

    fn state(&self) -> AppState {
        let keys = KeyFile::load(&self.key_file).expect("the key list");
        state_with(64 * 1024, Some(Arc::new(keys)))
    }
}

impl Drop for GitHub {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.key_file);
    }
}

/// Base64 of the DER signature over the body, as `Github-Public-Key-Signature` carries.
fn sign_with(key: &p256::ecdsa::SigningKey, body: &[u8]) -> String {
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    let signature: p256::ecdsa::Signature = key.sign(body);
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

/// Posts a report with the given signature headers through a fresh router.
async fn report(state: AppState, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut request = Request::builder()
        .method("POST")
        .uri("/v1/secret-scanning")
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::from(body.to_vec())).expect("a request");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 10], 40000))));
    router(state).oneshot(request).await.expect("infallible")
}

/// What is sent, the headers, the body, and the expected status and `reason`.
type ReportCase<'a> = (&'a str, Vec<(&'a str, String)>, &'a [u8], u16, &'a str);

const ID: &str = "github-public-key-identifier";
const SIG: &str = "github-public-key-signature";

#[tokio::test]
async fn secret_scanning_is_404_when_not_configured() {
    let github = GitHub::new("unconfigured");
    let body = br#"[{"token":"t","type":"apikey","url":"","source":"content"}]"#;
    let signature = github.sign(body);
    let response = report(state(), &[(ID, GITHUB_KEY_ID), (SIG, &signature)], body).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = json_of(response).await;
    assert_eq!(body["reason"], "not_found");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("secret scanning is not configured")),
        "{body}"
    );
}

#[tokio::test]
async fn secret_scanning_reports_are_refused_before_the_database_unless_signed_and_sound() {
    let github = GitHub::new("refusals");
    let good = br#"[{"token":"ak_live_x","type":"apikey","url":"https://github.com/o/r","source":"content"}]"#;
    let signature = github.sign(good);
    let someone_else = p256::ecdsa::SigningKey::from_bytes(&[9u8; 32].into()).expect("a scalar");
    let by_someone_else = sign_with(&someone_else, good);
    let signed = |body: &[u8]| github.sign(body);
    let many: Vec<serde_json::Value> = (0..101)
        .map(|i| serde_json::json!({ "token": format!("t{i}"), "type": "apikey" }))
        .collect();
    let many = serde_json::to_vec(&many).expect("JSON");
    let shapeless = br#"{"token":"t"}"#;

    let cases: Vec<ReportCase> = vec![
        ("unsigned", vec![], good, 401, "invalid_signature"),
        (
            "no identifier",
            vec![(SIG, signature.clone())],
            good,
            401,
            "invalid_signature",
        ),
        (
            "no signature",
            vec![(ID, GITHUB_KEY_ID.into())],
            good,
            401,
            "invalid_signature",
        ),
        (
            "unknown identifier",
            vec![(ID, "another-key".into()), (SIG, signature.clone())],
            good,
            401,
            "invalid_signature",
        ),
        (
            "not base64",
            vec![(ID, GITHUB_KEY_ID.into()), (SIG, "%%%".into())],
            good,
            401,
            "invalid_signature",
        ),
        (
            "base64 but not DER",
            vec![(ID, GITHUB_KEY_ID.into()), (SIG, "aGVsbG8=".into())],
            good,
            401,
            "invalid_signature",
        ),
        (
            "signed by another key",
            vec![(ID, GITHUB_KEY_ID.into()), (SIG, by_someone_else)],
            good,
            401,
            "invalid_signature",
        ),
        (
            "signature of another body",
            vec![(ID, GITHUB_KEY_ID.into()), (SIG, signed(b"[]"))],
            good,
            401,
            "invalid_signature",
        ),
        (
            "bad JSON, well signed",
            vec![(ID, GITHUB_KEY_ID.into()), (SIG, signed(b"[{"))],
            b"[{",
            400,
            "bad_request",
        ),
        (
            "not an array, well signed",
            vec![(ID, GITHUB_KEY_ID.into()), (SIG, signed(shapeless))],
            shapeless,
            422,
            "invalid_field",
        ),
        (
            "101 tokens, well signed",
            vec![(ID, GITHUB_KEY_ID.into()), (SIG, signed(&many))],
            &many,
            413,
            "payload_too_large",
        ),
        // Sound: only now is the (unreachable) database asked, and its failure is a 503
        // that GitHub retries.
        (
            "sound report",
            vec![(ID, GITHUB_KEY_ID.into()), (SIG, signature.clone())],
            good,
            503,
            "unavailable",
        ),
    ];
    for (what, headers, body, status, reason) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = report(github.state(), &headers, body).await;
        let got_status = response.status().as_u16();
        let json = json_of(response).await;
        assert_eq!(
            (got_status, json["reason"].as_str()),
            (status, Some(reason)),
            "{what}: {json}"
        );
        assert!(
            !json.to_string().contains("ak_live_x"),
            "{what}: the answer repeats a token: {json}"
        );
    }
}

#[tokio::test]
async fn an_empty_well_signed_report_is_answered_without_the_database() {
    let github = GitHub::new("empty");
    let signature = github.sign(b"[]");
    let response = report(
        github.state(),
        &[(ID, GITHUB_KEY_ID), (SIG, &signature)],
        b"[]",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await, serde_json::json!([]));
    let wrong_method = send("GET", "/v1/secret-scanning", None, vec![]).await;
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
}
