//! The key console: one web page (`GET /console`) for operators and partners, which manages
//! keys through the JSON API above and adds no route of its own besides its assets.
//!
//! The assets are plain HTML, CSS and JavaScript modules (`app.js` and `js/*.js`), embedded in
//! the binary so the shim needs nothing next to it and the page fetches nothing from
//! elsewhere. Every console response carries a strict Content-Security-Policy (no inline
//! script or style, requests to this origin only) and refuses framing, caching and
//! referrers: the page handles tokens.

use crate::error::AppError;
use crate::extract::Path;
use crate::openapi::answers::NotFound;
use crate::state::AppState;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// The modules `app.js` imports, served at `/console/js/<name>`.
pub const MODULES: [(&str, &str); 14] = [
    ("api.js", include_str!("../../console/js/api.js")),
    ("credits.js", include_str!("../../console/js/credits.js")),
    ("dom.js", include_str!("../../console/js/dom.js")),
    (
        "key-dialogs.js",
        include_str!("../../console/js/key-dialogs.js"),
    ),
    ("keys.js", include_str!("../../console/js/keys.js")),
    ("limits.js", include_str!("../../console/js/limits.js")),
    ("partners.js", include_str!("../../console/js/partners.js")),
    (
        "reminders.js",
        include_str!("../../console/js/reminders.js"),
    ),
    ("session.js", include_str!("../../console/js/session.js")),
    ("state.js", include_str!("../../console/js/state.js")),
    ("time.js", include_str!("../../console/js/time.js")),
    ("ui.js", include_str!("../../console/js/ui.js")),
    ("usage.js", include_str!("../../console/js/usage.js")),
    ("webhooks.js", include_str!("../../console/js/webhooks.js")),
];

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "application/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

pub fn router() -> OpenApiRouter<AppState> {
    let (pages, described) = OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(page_with_slash))
        .routes(routes!(script))
        .routes(routes!(stylesheet))
        .routes(routes!(module))
        .split_for_parts();
    let pages = pages
        // Answered here, under the layer below, so that the 405 of a wrong method carries the
        // security headers too (the application's own 405 fallback answers outside it).
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(middleware::map_response(with_security_headers));
    OpenApiRouter::with_openapi(described).merge(pages.into())
}

/// Key console page
///
/// The key console (HTML), embedded in the binary. It signs in with a pasted key (kept in the tab's
/// sessionStorage, sent only in `X-API-Key`) and calls the JSON API of this document; it adds no
/// API of its own.
#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    operation_id = "consolePage",
    responses(
        (status = 200, description = "The console page.", body = String, content_type = HTML),
    ),
    security(()),
)]
async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, HTML)], INDEX_HTML)
}

/// Key console page (trailing slash)
///
/// The same page as `GET /console`.
#[utoipa::path(
    get,
    path = "/console/",
    tag = "console",
    operation_id = "consolePageSlash",
    responses(
        (status = 200, description = "The console page.", body = String, content_type = HTML),
    ),
    security(()),
)]
// A typed or bookmarked trailing slash must not fall to the API's 404.
async fn page_with_slash() -> impl IntoResponse {
    page().await
}

/// Key console script
///
/// The console's entry script, an ES module that imports the modules under `/console/js/` (plain
/// JavaScript, no external code).
#[utoipa::path(
    get,
    path = "/console/app.js",
    tag = "console",
    operation_id = "consoleScript",
    responses(
        (status = 200, description = "The script.", body = String, content_type = JAVASCRIPT),
    ),
    security(()),
)]
async fn script() -> impl IntoResponse {
    javascript(APP_JS)
}

fn javascript(source: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, JAVASCRIPT)], source)
}

/// Key console module
///
/// A JavaScript module of the console, imported by `/console/app.js` (plain JavaScript, no external
/// code); an unknown name is 404.
#[utoipa::path(
    get,
    path = "/console/js/{module}",
    tag = "console",
    operation_id = "consoleModule",
    params(("module" = String, Path, description = "The module's file name, e.g. `api.js`.")),
    responses(
        (status = 200, description = "The module.", body = String, content_type = JAVASCRIPT),
        NotFound,
    ),
    security(()),
)]
async fn module(Path(name): Path<String>) -> Result<impl IntoResponse, AppError> {
    MODULES
        .iter()
        .find(|(module, _)| *module == name)
        .map(|(_, source)| javascript(source))
        .ok_or_else(|| AppError::NotFound("no such console module".into()))
}

/// Key console stylesheet
///
/// The console's stylesheet.
#[utoipa::path(
    get,
    path = "/console/app.css",
    tag = "console",
    operation_id = "consoleStylesheet",
    responses((status = 200, description = "The stylesheet.", body = String, content_type = CSS)),
    security(()),
)]
async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CSS)], APP_CSS)
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

    /// Every asset, by file name under `shim/console/`.
    fn assets() -> Vec<(String, &'static str)> {
        let mut assets = vec![
            ("index.html".to_string(), INDEX_HTML),
            ("app.js".to_string(), APP_JS),
            ("app.css".to_string(), APP_CSS),
        ];
        assets.extend(
            MODULES
                .iter()
                .map(|(name, text)| (format!("js/{name}"), *text)),
        );
        assets
    }

    fn scripts() -> impl Iterator<Item = (String, &'static str)> {
        assets()
            .into_iter()
            .filter(|(name, _)| name.ends_with(".js"))
    }

    /// A module added to `js/` and not to `MODULES` would be a 404 in the browser.
    #[test]
    fn every_module_in_the_directory_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console/js");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("shim/console/js")
            .map(|entry| {
                entry
                    .expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        on_disk.sort();
        let served: Vec<String> = MODULES.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(served, on_disk);
    }

    /// Every import names a module that is served, relative to where the importer is served,
    /// and names only what that module exports: a browser refuses the whole page otherwise.
    #[test]
    fn every_import_is_a_served_module_and_export() {
        for (name, text) in scripts() {
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .rsplit_once(" from '")
                    .and_then(|(_, rest)| rest.strip_suffix("';"))
                    .unwrap_or_else(|| panic!("{name}: an import this test cannot read: {line}"));
                let module = if name == "app.js" {
                    target.strip_prefix("./js/")
                } else {
                    target.strip_prefix("./")
                };
                let exporter = MODULES
                    .iter()
                    .find(|(served, _)| module == Some(*served))
                    .unwrap_or_else(|| panic!("{name} imports {target}, which is not served"));
                let names = line
                    .strip_prefix("import { ")
                    .and_then(|rest| rest.split_once(" }"))
                    .map(|(names, _)| names)
                    .unwrap_or_else(|| panic!("{name}: an import this test cannot read: {line}"));
                for imported in names.split(", ") {
                    let exported = ["function", "async function", "const", "let", "class"]
                        .iter()
                        .any(|kind| {
                            exporter.1.lines().any(|l| {
                                l.strip_prefix(&format!("export {kind} {imported}"))
                                    .is_some_and(|rest| rest.starts_with([' ', '(', '=']))
                            })
                        });
                    assert!(
                        exported,
                        "{name} imports {imported} from {target}, which does not export it"
                    );
                }
            }
        }
    }

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
        for (name, text) in assets() {
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
            for (name, text) in scripts() {
                assert!(
                    !text.to_ascii_lowercase().contains(forbidden),
                    "{name} uses {forbidden}"
                );
            }
        }
        let session = MODULES.iter().find(|(name, _)| *name == "session.js");
        assert!(session.is_some_and(|(_, text)| text.contains("sessionStorage")));
        let api = MODULES.iter().find(|(name, _)| *name == "api.js");
        assert!(api.is_some_and(|(_, text)| text.contains("'X-API-Key'")));
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(INDEX_HTML.contains("src=\"/console/app.js\""));
        assert!(INDEX_HTML.contains("href=\"/console/app.css\""));
    }
}
