//! `GET /openapi.json` must describe exactly the routes the router registers.
//!
//! The routes are read from the shim's own source at test time: every
//! `.route("PATH", get(a).post(b))` in `src/**/*.rs` (outside `#[cfg(test)]` code). A route
//! added without documentation, or documentation left behind for a removed route, fails here.

use apikey_shim::routes::service::OPENAPI;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("shim/openapi.json is not valid JSON")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The source with comments blanked out (string literals kept), cut at the first
/// `#[cfg(test)]`: test modules may build routers of their own.
fn code_of(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if b[i] == b'\'' && (b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\')) {
            // A char literal such as '"' or '\'': copied whole, so its quote starts no string.
            let start = i;
            i += if b[i + 1] == b'\\' { 3 } else { 2 };
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
            out.push_str(&source[start..i.min(b.len())]);
        } else if b[i] == b'"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str(&source[start..i.min(b.len())]);
        } else {
            let c = source[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    match out.find("#[cfg(test)]") {
        Some(cut) => out[..cut].to_string(),
        None => out,
    }
}

/// The methods of an axum method router expression such as `post(issue).get(list)`: the
/// calls at its top nesting level.
fn methods_of(expr: &str, context: &str) -> Vec<&'static str> {
    let b = expr.as_bytes();
    let mut methods = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            c if depth == 0 && (c.is_ascii_alphabetic() || c == b'_') => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let name = &expr[start..i];
                let rest = expr[i..].trim_start();
                if rest.starts_with('(') {
                    let bare = name.rsplit("::").next().unwrap_or(name);
                    let bare = bare.strip_suffix("_service").unwrap_or(bare);
                    if bare == "any" {
                        methods.extend(METHODS);
                    } else if let Some(m) = METHODS.iter().find(|m| **m == bare) {
                        methods.push(*m);
                    } else {
                        panic!(
                            "{context}: cannot tell the HTTP methods of `{name}(...)` in `{expr}`; \
                             teach shim/tests/openapi.rs this form"
                        );
                    }
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    assert!(
        !methods.is_empty(),
        "{context}: no method in route expression `{expr}`"
    );
    methods
}

/// Every (method, OpenAPI path) the router registers, read from the source.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut routes = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        routes.extend(routes_in_code(
            &code_of(&source),
            &file.display().to_string(),
        ));
    }
    routes
}

/// The (method, OpenAPI path) pairs of the `.route(...)` calls in `code` (comments removed).
fn routes_in_code(code: &str, context: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for forbidden in [".nest(", ".nest_service(", ".route_service("] {
        assert!(
            !code.contains(forbidden),
            "{context}: `{forbidden}` is not understood by shim/tests/openapi.rs; teach it"
        );
    }
    let mut rest = code;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let after_quote = rest
            .trim_start()
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("{context}: .route( without a string literal path"));
        let end = after_quote.find('"').expect("unterminated route path");
        let axum_path = &after_quote[..end];
        let tail = after_quote[end + 1..]
            .trim_start()
            .strip_prefix(',')
            .unwrap_or_else(|| panic!("{context}: no method router after {axum_path}"));
        // The method router runs to the parenthesis that closes `.route(`.
        let close = closing_bracket(tail)
            .unwrap_or_else(|| panic!("{context}: unbalanced .route(\"{axum_path}\""));
        let expr = tail[..close].trim();
        let expr = expr.strip_suffix(',').unwrap_or(expr).trim();
        let path = openapi_path(axum_path);
        for method in methods_of(expr, &format!("{context} {axum_path}")) {
            routes.insert((method.to_string(), path.clone()));
        }
    }
    routes
}

/// Index of the first closing bracket in `s` that closes nothing opened in `s`, skipping
/// string literals.
fn closing_bracket(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut depth = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth == 0 => return Some(i),
            b')' | b']' | b'}' => depth -= 1,
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[test]
fn route_reader_understands_formatting_comments_and_tests() {
    let source = r#"
        // .route("/commented", get(x))
        Router::new()
            .route(
                "/a/{id}",
                post(create)
                    .get(list), // trailing comment
            )
            .route("/b/{*rest}", axum::routing::any(|| async { "(" }))
            .route("/c", get_service(ServeDir::new(".")).head(h));
        let quote = '"'; let escaped = '\''; let r#static: &'static str = "x";
        Router::new().route("/d", delete(d));
        #[cfg(test)]
        mod tests { fn t() { Router::new().route("/test-only", get(t)); } }
    "#;
    let routes = routes_in_code(&code_of(source), "example");
    let has = |m: &str, p: &str| routes.contains(&(m.to_string(), p.to_string()));
    assert!(
        has("post", "/a/{id}") && has("get", "/a/{id}"),
        "{routes:?}"
    );
    assert!(METHODS.iter().all(|m| has(m, "/b/{rest}")), "{routes:?}");
    assert!(has("get", "/c") && has("head", "/c"), "{routes:?}");
    assert!(!routes
        .iter()
        .any(|(_, p)| p == "/commented" || p == "/test-only"));
    assert!(
        has("delete", "/d"),
        "char literals must not start strings: {routes:?}"
    );
    assert_eq!(routes.len(), 2 + METHODS.len() + 3, "{routes:?}");
}

/// axum's `/v1/keys/{key_id}` and `/v1/verify/{*rest}` in OpenAPI's template syntax.
fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

fn routes_in_document(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("document has no paths");
    let mut routes = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("path item is an object");
        for method in METHODS {
            if item.contains_key(method) {
                routes.insert((method.to_string(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn every_registered_route_is_documented_and_nothing_else() {
    let source = routes_in_source();
    assert!(
        source.len() >= 17,
        "found only {} routes in the source; is the route reader broken? {source:?}",
        source.len()
    );
    for expected in [
        ("get", "/v1/verify"),
        ("post", "/v1/keys"),
        ("get", "/openapi.json"),
    ] {
        assert!(
            source.contains(&(expected.0.to_string(), expected.1.to_string())),
            "route reader missed {expected:?}: {source:?}"
        );
    }
    let documented = routes_in_document(&document());
    let undocumented: Vec<_> = source.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&source).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "shim/openapi.json is out of date.\n  registered but not documented: {undocumented:?}\n  \
         documented but not registered: {stale:?}"
    );
}

#[test]
fn document_is_openapi_3_1_of_this_version() {
    let doc = document();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "openapi must be 3.1.x, got {}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "apikey-shim");
    assert_eq!(
        doc["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "info.version must follow the crate version"
    );
}

fn each_ref<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => each_ref(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| each_ref(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut refs = Vec::new();
    each_ref(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references are used, got {r}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

/// Resolves a local `$ref` (one level is enough for parameters and responses here).
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => v,
    }
}

#[test]
fn operations_declare_their_path_parameters_and_responses() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| deref(&doc, p))
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                templated, declared,
                "{method} {path}: path parameters in the template and in `parameters` differ"
            );
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} has no responses"));
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success status"
            );
            for (status, response) in responses {
                assert!(
                    deref(&doc, response)["description"].is_string(),
                    "{method} {path} {status}: a response needs a description"
                );
            }
        }
    }
}

#[test]
fn error_schema_lists_every_reason() {
    let doc = document();
    let reasons: BTreeSet<&str> = doc["components"]["schemas"]["Reason"]["enum"]
        .as_array()
        .expect("Reason enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for r in [
        "ok",
        "missing_key",
        "malformed",
        "unknown_key",
        "secret_mismatch",
        "revoked",
        "disabled",
        "expired",
        "not_yet_valid",
        "partner_inactive",
        "ip_not_allowed",
        "insufficient_scope",
        "rate_limited",
        "bad_request",
        "invalid_field",
        "not_found",
        "conflict",
        "forbidden",
        "payload_too_large",
        "unsupported_media_type",
        "unavailable",
        "internal",
    ] {
        assert!(reasons.contains(r), "Reason enum lacks {r}");
    }
    // And every reason the shim's error type can answer with, read from its source, so a new
    // error variant cannot go undocumented.
    for r in reasons_in_error_rs() {
        assert!(
            reasons.contains(r.as_str()),
            "Reason enum lacks {r} (from src/error.rs)"
        );
    }
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error", "reason"]));
    assert!(error["properties"]["field"].is_object());
}

/// The reason codes in `src/error.rs`: the string right after each `StatusCode::NAME,`.
fn reasons_in_error_rs() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/error.rs");
    let source = std::fs::read_to_string(&path).expect("read src/error.rs");
    let mut found = Vec::new();
    for (_, rest) in source
        .match_indices("StatusCode::")
        .map(|(i, _)| ((), &source[i..]))
    {
        let Some((_, after_comma)) = rest.split_once(',') else {
            continue;
        };
        let after_comma = after_comma.trim_start();
        if let Some(literal) = after_comma.strip_prefix('"') {
            if let Some((reason, _)) = literal.split_once('"') {
                if !reason.is_empty() && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                {
                    found.push(reason.to_string());
                }
            }
        }
    }
    assert!(
        found.len() >= 10,
        "expected to find the reason codes in src/error.rs, found {found:?}"
    );
    found
}
