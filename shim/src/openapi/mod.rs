//! The OpenAPI document served at `/openapi.json`, generated from the router.
//!
//! Every route is registered through `utoipa_axum::routes!` from its handler's
//! `#[utoipa::path]` (see `routes::all`), so no route is served without being described.
//! Request bodies and query strings are described by the handlers' own types (`ToSchema`,
//! `IntoParams`). What the database answers (keys, partners, audit rows...) is JSON built in
//! SQL, not a Rust type; it is described once, by hand, in `openapi/base.json`, together with
//! the document's info, tags, security schemes and shared error responses, and the handlers
//! refer to it by name.

use crate::error::SHIM_REASONS;
use crate::routes;
use apikey_contract::reason::Reason;
use serde_json::{json, Map, Value};
use std::sync::LazyLock;

pub mod answers;
pub mod parameters;
pub mod schemas;

const BASE: &str = include_str!("../../openapi/base.json");

/// The document, pretty-printed as `shim/openapi.json` holds it. Built once, when the router
/// is (`app::router`), so that a broken `base.json` stops the shim at its start.
pub fn json() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        let mut text = serde_json::to_string_pretty(&document()).expect("a JSON value serializes");
        text.push('\n');
        text
    });
    &DOCUMENT
}

/// `openapi/base.json` with the paths and request schemas of the router.
pub fn document() -> Value {
    let generated = serde_json::to_value(routes::all().into_openapi())
        .expect("a utoipa document serializes to JSON");
    let mut doc: Value = serde_json::from_str(BASE).expect("shim/openapi/base.json is JSON");
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    let reasons: Vec<&str> = Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .chain(SHIM_REASONS)
        .collect();
    doc["components"]["schemas"]["Reason"]["enum"] = json!(reasons);
    if let Some(schemas) = generated["components"]["schemas"].as_object() {
        let base_schemas = doc["components"]["schemas"]
            .as_object_mut()
            .expect("base.json has components.schemas");
        for (name, schema) in schemas {
            let names_itself = schema["$ref"] == json!(format!("#/components/schemas/{name}"));
            match base_schemas.get(name) {
                // A name of `schemas`, used in a handler's types: base.json has it.
                Some(_) if names_itself => {}
                Some(_) => panic!("schema {name} is both derived and in openapi/base.json"),
                None => {
                    base_schemas.insert(name.clone(), schema.clone());
                }
            }
        }
    }
    let mut paths = Map::new();
    if let Some(generated_paths) = generated["paths"].as_object() {
        for (path, item) in generated_paths {
            let mut item = item.clone();
            normalize_path_item(&mut item);
            paths.insert(openapi_template(path), item);
        }
    }
    // Paths before components, as readers of the checked-in copy expect them.
    let mut ordered = Map::new();
    for (key, value) in doc.as_object_mut().map(std::mem::take).unwrap_or_default() {
        if key == "components" {
            ordered.insert(
                "paths".to_string(),
                Value::Object(std::mem::take(&mut paths)),
            );
        }
        ordered.insert(key, value);
    }
    Value::Object(ordered)
}

/// axum's catch-all `{*rest}` in OpenAPI's template syntax, `{rest}`.
fn openapi_template(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// What utoipa cannot say, or says otherwise than this API behaves:
/// - one handler serving several methods gives them one operation id; ids must be unique, so
///   every method after the first gets its name appended;
/// - a body that may be left out is written `Option<T>`, which utoipa describes as
///   "T or JSON null"; the shim takes no `null`, only an empty body, and says so;
/// - every route that takes a key answers with its rate-limit headers (`app::observe` adds
///   them), errors included; on its success answers they are listed;
/// - a route that needs no key says `security(())`, which utoipa writes `[{}]` ("a key is
///   optional"); the API means `[]`, no key at all.
fn normalize_path_item(item: &mut Value) {
    let mut seen_ids = Vec::new();
    for method in METHODS {
        let Some(operation) = item.get_mut(method) else {
            continue;
        };
        if let Some(id) = operation["operationId"].as_str().map(str::to_string) {
            if seen_ids.contains(&id) {
                operation["operationId"] = json!(format!("{id}_{method}"));
            }
            seen_ids.push(id);
        }
        if let Some(content) = operation
            .pointer_mut("/requestBody/content")
            .and_then(Value::as_object_mut)
        {
            let mut optional = false;
            for media in content.values_mut() {
                if let Some(present) = optional_body_schema(&media["schema"]) {
                    media["schema"] = present;
                    optional = true;
                }
            }
            let body = &mut operation["requestBody"];
            if optional && body.get("description").is_none() {
                body["description"] = json!(OPTIONAL_BODY);
            }
        }
        if operation["security"] == json!([{}]) {
            operation["security"] = json!([]);
        }
        let keyed = operation["responses"].get("429").is_some();
        if let (true, Some(responses)) = (keyed, operation["responses"].as_object_mut()) {
            for (status, response) in responses.iter_mut() {
                if status.starts_with('2') {
                    let headers = response
                        .as_object_mut()
                        .expect("a success response is an object")
                        .entry("headers")
                        .or_insert_with(|| json!({}));
                    for name in ["RateLimit-Policy", "RateLimit"] {
                        headers[name] = json!({ "$ref": format!("#/components/headers/{name}") });
                    }
                }
            }
        }
    }
}

const OPTIONAL_BODY: &str = "May be left out: an empty body takes the defaults.";

/// `X` of a schema `oneOf: [{type: null}, X]`.
fn optional_body_schema(schema: &Value) -> Option<Value> {
    let [first, second] = schema["oneOf"].as_array()?.as_slice() else {
        return None;
    };
    (first == &json!({ "type": "null" })).then(|| second.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_bodies_lose_their_null() {
        let schema = json!({ "oneOf": [{ "type": "null" }, { "$ref": "#/x" }] });
        assert_eq!(
            optional_body_schema(&schema),
            Some(json!({ "$ref": "#/x" }))
        );
        assert_eq!(optional_body_schema(&json!({ "$ref": "#/x" })), None);
    }

    #[test]
    fn catch_all_parameters_become_templates() {
        assert_eq!(openapi_template("/v1/verify/{*rest}"), "/v1/verify/{rest}");
        assert_eq!(openapi_template("/v1/keys/{key_id}"), "/v1/keys/{key_id}");
    }

    #[test]
    fn methods_sharing_a_handler_get_distinct_operation_ids() {
        let mut item = json!({
            "get": { "operationId": "verify", "responses": {} },
            "post": { "operationId": "verify", "responses": {} },
        });
        normalize_path_item(&mut item);
        assert_eq!(item["get"]["operationId"], "verify");
        assert_eq!(item["post"]["operationId"], "verify_post");
    }
}
