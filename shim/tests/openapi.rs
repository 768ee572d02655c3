//! The OpenAPI document the shim generates from its router (`apikey_shim::openapi`).
//!
//! Routes are registered only through `utoipa_axum::routes!`, so the document lists every
//! route by construction; these tests check that what it says is complete and consistent,
//! and that `shim/openapi.json`, the copy kept for readers and reviews, is the current one.
//! After changing a route: `APIKEY_WRITE_OPENAPI=1 cargo test -p apikey-shim --test openapi`.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

use apikey_shim::openapi::{document, METHODS};

#[test]
fn the_checked_in_copy_is_the_generated_document() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = apikey_shim::openapi::json();
    if std::env::var_os("APIKEY_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, generated).expect("write shim/openapi.json");
    }
    let checked_in = std::fs::read_to_string(&path).expect("read shim/openapi.json");
    assert!(
        checked_in == generated,
        "shim/openapi.json is not what the router generates; after changing a route run \
         `APIKEY_WRITE_OPENAPI=1 cargo test -p apikey-shim --test openapi` and review the diff"
    );
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
fn the_document_has_every_kind_of_route() {
    let routes = routes_in_document(&document());
    for (method, path) in [
        ("get", "/v1/verify"),
        ("delete", "/v1/verify/{rest}"),
        ("post", "/v1/keys"),
        ("get", "/v1/keys"),
        ("post", "/v1/keys/{key_id}/revoke"),
        ("delete", "/v1/webhooks/{endpoint_id}"),
        ("post", "/v1/secret-scanning"),
        ("get", "/openapi.json"),
        ("get", "/console/"),
        ("get", "/console/js/{module}"),
    ] {
        assert!(
            routes.contains(&(method.to_string(), path.to_string())),
            "{method} {path} missing from {routes:?}"
        );
    }
}

#[test]
fn operation_ids_are_unique() {
    let doc = document();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            }
        }
    }
}

#[test]
fn routes_with_a_key_list_their_rate_limit_headers() {
    let doc = document();
    let revoke = &doc["paths"]["/v1/keys/{key_id}/revoke"]["post"]["responses"]["200"];
    assert_eq!(
        revoke["headers"]["RateLimit"]["$ref"],
        "#/components/headers/RateLimit"
    );
    let health = &doc["paths"]["/healthz"]["get"]["responses"]["200"];
    assert!(health.get("headers").is_none(), "{health}");
}

#[test]
fn optional_bodies_are_optional_and_never_null() {
    let doc = document();
    let body = &doc["paths"]["/v1/keys/{key_id}/rotate"]["post"]["requestBody"];
    assert_ne!(body["required"], true, "{body}");
    assert_eq!(
        body["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/RotateKeyRequest"
    );
    let issue = &doc["paths"]["/v1/keys"]["post"]["requestBody"];
    assert_eq!(issue["required"], true, "{issue}");
}

#[test]
fn request_bodies_refuse_unknown_fields_as_the_handlers_do() {
    let doc = document();
    for name in [
        "CreatePartnerRequest",
        "IssueKeyRequest",
        "RotateKeyRequest",
        "RevokeKeyRequest",
        "CreateWebhookRequest",
        "RotateWebhookSecretRequest",
    ] {
        let schema = &doc["components"]["schemas"][name];
        assert_eq!(schema["additionalProperties"], false, "{name}: {schema}");
    }
}

/// utoipa's attributes take literal numbers only: the limits written there must be the ones
/// the code enforces.
#[test]
fn documented_limits_are_the_enforced_ones() {
    use apikey_contract::{limits, scope};
    use apikey_shim::routes::{usage, DEFAULT_PAGE, MAX_PAGE};
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["IssueKeyRequest"]["properties"]["scopes"]["maxItems"],
        scope::MAX_SCOPES
    );
    assert_eq!(
        schemas["RotateKeyRequest"]["properties"]["scopes"]["maxItems"],
        scope::MAX_SCOPES
    );
    assert_eq!(
        schemas["RotateKeyRequest"]["properties"]["grace_seconds"]["maximum"],
        limits::MAX_ROTATION_GRACE_SECONDS
    );
    assert_eq!(
        schemas["RotateWebhookSecretRequest"]["properties"]["grace_seconds"]["maximum"],
        limits::MAX_WEBHOOK_SECRET_GRACE_SECONDS
    );
    let mut pages = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(parameters) = item["get"]["parameters"].as_array() else {
            continue;
        };
        for limit in parameters.iter().filter(|p| p["name"] == "limit") {
            if path == "/v1/usage" {
                assert_eq!(limit["schema"]["maximum"], usage::MAX_ROWS);
                assert_eq!(limit["schema"]["default"], usage::DEFAULT_ROWS);
                continue;
            }
            assert_eq!(limit["schema"]["maximum"], MAX_PAGE, "{path}");
            assert_eq!(limit["schema"]["default"], DEFAULT_PAGE, "{path}");
            pages += 1;
        }
    }
    assert!(pages >= 5, "found only {pages} paged routes");
}

#[test]
fn no_schema_is_only_a_reference_to_itself() {
    let doc = document();
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        assert_ne!(
            schema["$ref"],
            format!("#/components/schemas/{name}"),
            "{name} refers to itself"
        );
    }
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
/// The list itself is built from `apikey_contract::reason` and `error::SHIM_REASONS` (whose
/// unit test holds it to the error type); here: that both halves arrive, once each.
fn error_schema_lists_every_reason() {
    let doc = document();
    let listed: Vec<&str> = doc["components"]["schemas"]["Reason"]["enum"]
        .as_array()
        .expect("Reason enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for reason in [
        "ok",
        "secret_mismatch",
        "rate_limited",
        "not_found",
        "invalid_signature",
    ] {
        assert!(listed.contains(&reason), "{reason} missing from {listed:?}");
    }
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "a reason is listed twice");
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error", "reason"]));
    assert!(error["properties"]["field"].is_object());
}
