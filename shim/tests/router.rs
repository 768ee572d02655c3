//! The router in process (`tower::ServiceExt::oneshot`), for everything answered before a
//! database is asked: unknown routes, wrong methods, bodies refused by size, type or syntax,
//! the console's security headers, the OpenAPI document, and how an unreachable database
//! is reported. The pool points at a socket directory that does not exist, so any request
//! that did reach the database would fail with 503, not pass. The real binary over real
//! HTTP against a real cluster is tested in tests/.

use apikey_shim::app::router;
use apikey_shim::config::Config;
use apikey_shim::metrics::Metrics;
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
    let config = Config::parse_from([
        "apikey-shim",
        "--database-url",
        "host=/nonexistent/apikey-router-test dbname=apikey user=apikey_shim connect_timeout=1",
        "--max-body-bytes",
        &MAX_BODY.to_string(),
    ]);
    AppState {
        pool: apikey_shim::db::pool(&config.database_url, 1).expect("a pool"),
        config: Arc::new(config),
        metrics: Arc::new(Metrics::default()),
    }
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
        ("POST", "/console", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let response = send(method, uri, None, vec![]).await;
        assert_eq!(response.status(), status, "{method} {uri}");
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

#[tokio::test]
async fn the_openapi_document_is_served_as_checked_in() {
    let response = send("GET", "/openapi.json", None, vec![]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let served = json_of(response).await;
    let checked_in: serde_json::Value =
        serde_json::from_str(include_str!("../openapi.json")).expect("openapi.json");
    assert_eq!(served, checked_in);
}
