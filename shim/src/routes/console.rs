//! The key console: one web page (`GET /console`) for operators and partners, which manages
//! keys through the JSON API above and adds no route of its own besides its assets.
//!
//! The assets are plain HTML, CSS and one JavaScript file, embedded in the binary so the shim
//! needs nothing next to it and the page fetches nothing from elsewhere. Every console
//! response carries a strict Content-Security-Policy (no inline script or style, requests to
//! this origin only) and refuses framing, caching and referrers: the page handles tokens.

use crate::error::AppError;
use crate::state::AppState;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// `/console/` too, so a typed or bookmarked trailing slash does not fall to the API's 404.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(page))
        .route("/console/", get(page))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(stylesheet))
        // Answered here, under the layer below, so that the 405 of a wrong method carries the
        // security headers too (the application's own 405 fallback answers outside it).
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(middleware::map_response(with_security_headers))
}

async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

async fn script() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/javascript; charset=utf-8",
        )],
        APP_JS,
    )
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS)
}

/// Same origin only, nothing inline: a script injected into the page could neither run nor
/// send a token anywhere else. `data:` images only for the empty favicon.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The headers of every console response.
pub fn security_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

async fn with_security_headers(mut response: Response) -> Response {
    response.headers_mut().extend(security_headers());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASSETS: [(&str, &str); 3] = [
        ("index.html", INDEX_HTML),
        ("app.js", APP_JS),
        ("app.css", APP_CSS),
    ];

    #[test]
    fn every_security_header_is_set_as_specified() {
        let headers: std::collections::HashMap<_, _> = security_headers()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store");
        assert!(!headers["content-security-policy"].contains("unsafe"));
    }

    /// The CSP would block inline code anyway; this catches it before a browser silently does.
    #[test]
    fn the_page_has_no_inline_script_style_or_handlers() {
        let html = INDEX_HTML.to_ascii_lowercase();
        let mut rest = html.as_str();
        while let Some(at) = rest.find("<script") {
            let tag_end = rest[at..].find('>').expect("unterminated <script") + at;
            assert!(
                rest[at..tag_end].contains(" src=\"/console/"),
                "a <script> without our src: {}",
                &rest[at..tag_end]
            );
            assert!(
                rest[tag_end + 1..].starts_with("</script>"),
                "a <script> with an inline body"
            );
            rest = &rest[tag_end..];
        }
        assert!(!html.contains("<style"), "inline <style> element");
        assert!(!html.contains("=\"javascript:"), "javascript: URL");
        for attribute in html.split(|c: char| c.is_whitespace()).skip(1) {
            let is_handler = attribute.starts_with("on")
                && attribute
                    .split_once('=')
                    .is_some_and(|(name, _)| name.bytes().all(|b| b.is_ascii_lowercase()));
            assert!(!is_handler, "inline event handler {attribute}");
        }
    }

    #[test]
    fn no_asset_uses_inline_styles_or_the_internet() {
        for (name, text) in ASSETS {
            // The SVG namespace is a name, never fetched: document.createElementNS needs it.
            let lower = text
                .to_ascii_lowercase()
                .replace("'http://www.w3.org/2000/svg'", "");
            assert!(!lower.contains("style="), "{name}: style attribute");
            assert!(!lower.contains("http://"), "{name}: http:// URL");
            assert!(!lower.contains("https://"), "{name}: https:// URL");
            assert!(
                !lower.contains("//cdn"),
                "{name}: protocol-relative CDN URL"
            );
        }
    }

    /// The script builds the DOM from text (never parses API data as HTML), styles only by
    /// class (the CSP forbids inline styles) and keeps the key out of persistent storage.
    #[test]
    fn the_script_avoids_html_parsing_inline_styles_and_persistent_storage() {
        for forbidden in [
            ".innerhtml",
            ".outerhtml",
            "insertadjacenthtml",
            "document.write",
            ".style.",
            ".style =",
            "setattribute('style'",
            "csstext",
            "localstorage",
            "document.cookie",
            "eval(",
            "new function",
        ] {
            assert!(
                !APP_JS.to_ascii_lowercase().contains(forbidden),
                "app.js uses {forbidden}"
            );
        }
        assert!(APP_JS.contains("sessionStorage"));
        assert!(APP_JS.contains("'X-API-Key'"));
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(INDEX_HTML.contains("src=\"/console/app.js\""));
        assert!(INDEX_HTML.contains("href=\"/console/app.css\""));
    }
}
