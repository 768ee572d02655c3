//! The shim's JSON management API over real HTTP: partners, keys and the audit log, as an
//! operator (`admin:*`) and as a partner (`keys:manage`, confined by the database's
//! row-level security), with every error outcome a client can cause.
//!
//! Each test starts its own shim and creates its own partners and keys, so they run in
//! parallel against one cluster. Requests are plain HTTP; the database is only used to set up
//! an operator key and, in one place, to make a key expired without waiting.

use apikey_tests::postgres::Client;
use apikey_tests::shim::{send, Response, Shim, SHIM_ROLE};
use apikey_tests::*;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Barrier;

const RATE_LIMIT_HEADERS: [&str; 2] = ["ratelimit-policy", "ratelimit"];

/// The columns of `apikey.key_info` that every key JSON carries, plus the partner's name.
const KEY_FIELDS: [&str; 20] = [
    "key_id",
    "partner_id",
    "partner_name",
    "name",
    "scopes",
    "tags",
    "metadata",
    "environment",
    "enabled",
    "not_before",
    "expires_at",
    "revoked_at",
    "revoke_reason",
    "rotated_to",
    "rate_per_minute",
    "allowed_cidrs",
    "created_at",
    "created_by",
    "last_used_at",
    "status",
];

// ---------------------------------------------------------------------------------------------
// Fixture and request helpers
// ---------------------------------------------------------------------------------------------

/// One test's world: its own shim, a superuser connection and an operator (`admin:*`) key of
/// a partner no other test touches.
struct Env {
    shim: Shim,
    db: RefCell<Client>,
    operator: Issued,
}

impl Env {
    fn start() -> Env {
        let shim = Shim::start();
        let mut db = superuser();
        let operator = operator_key(&mut db);
        Env {
            shim,
            db: RefCell::new(db),
            operator,
        }
    }

    fn op(&self) -> As<'_> {
        self.as_key(&self.operator.token)
    }

    fn as_key<'a>(&'a self, token: &'a str) -> As<'a> {
        As {
            shim: &self.shim,
            token,
        }
    }

    /// `clock_timestamp() + offset` in the database, as RFC 3339 UTC for a JSON body or a
    /// query string (no `+`, which a query string would turn into a space).
    fn db_time(&self, offset: &str) -> String {
        self.db
            .borrow_mut()
            .query_one(
                "SELECT to_char((clock_timestamp() + $1::text::interval) AT TIME ZONE 'UTC', \
                        'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                &[&offset],
            )
            .expect("read the database clock")
            .get(0)
    }
}

/// Requests made with one key in `X-API-Key`.
struct As<'a> {
    shim: &'a Shim,
    token: &'a str,
}

impl As<'_> {
    fn get(&self, path: &str) -> Response {
        self.shim.get_as(self.token, path)
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        self.shim.post_as(self.token, path, body)
    }

    /// POST without a body or a Content-Type (enable, disable, activate, deactivate, and the
    /// optional bodies of rotate and revoke).
    fn post_empty(&self, path: &str) -> Response {
        send(
            self.shim.request("POST", path).set("X-API-Key", self.token),
            None,
        )
    }

    /// POST of `body` exactly as given, with the given Content-Type (or none).
    fn post_raw(&self, path: &str, content_type: Option<&str>, body: &str) -> Response {
        let mut request = self.shim.request("POST", path).set("X-API-Key", self.token);
        if let Some(content_type) = content_type {
            request = request.set("Content-Type", content_type);
        }
        send(request, Some(body))
    }
}

/// A key as POST /v1/keys or POST /v1/keys/{id}/rotate returned it.
struct NewKey {
    key_id: String,
    token: String,
    key: Value,
}

fn issue_http(op: &As, body: Value) -> NewKey {
    let response = op.post("/v1/keys", &body);
    assert_not_stored(&response, "POST /v1/keys");
    let json = expect_json(&response, 201, "POST /v1/keys");
    new_key(json, "POST /v1/keys")
}

fn rotate_http(caller: &As, key_id: &str, body: Value) -> NewKey {
    let response = caller.post(&format!("/v1/keys/{key_id}/rotate"), &body);
    assert_not_stored(&response, "POST /v1/keys/{id}/rotate");
    let json = expect_json(&response, 201, "POST /v1/keys/{id}/rotate");
    assert_eq!(json["rotated_from"], key_id, "rotated_from: {json}");
    new_key(json, "rotate")
}

/// An answer with a token in it must not be kept by a browser or a proxy.
#[track_caller]
fn assert_not_stored(response: &Response, what: &str) {
    assert_eq!(
        response.header("cache-control"),
        Some("no-store"),
        "{what}: Cache-Control"
    );
}

/// Checks the shape every issue/rotate answer has and that the token is only in `token`.
fn new_key(json: Value, what: &str) -> NewKey {
    let key_id = json["key_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no key_id in {json}"))
        .to_string();
    let token = json["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no token in {json}"))
        .to_string();
    assert!(
        token.starts_with(&format!("{key_id}_")),
        "{what}: the token starts with its key id: {json}"
    );
    let key = json["key"].clone();
    assert_key_json(&key);
    assert_eq!(key["key_id"], key_id.as_str(), "{what}: key.key_id");
    assert!(
        !key.to_string().contains(secret_of(&token)),
        "{what}: the key object must not repeat the token: {json}"
    );
    NewKey { key_id, token, key }
}

fn create_partner_http(op: &As, name: &str) -> Uuid {
    let response = op.post(
        "/v1/partners",
        &json!({ "name": name, "contact_email": "ops@example.com" }),
    );
    let partner = expect_json(&response, 201, "POST /v1/partners");
    assert_eq!(partner["name"], name, "{partner}");
    assert_eq!(partner["active"], true, "{partner}");
    partner_id_of(&partner)
}

fn partner_id_of(partner: &Value) -> Uuid {
    let text = partner["partner_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no partner_id in {partner}"));
    Uuid::parse_str(text).expect("partner_id is a UUID")
}

/// A minimal valid issue body for `partner`.
fn issue_body(partner: Uuid, scopes: &[&str]) -> Value {
    json!({ "partner_id": partner.to_string(), "scopes": scopes })
}

/// Asserts a successful management answer: its status, the rate-limit headers of the key
/// that made it, and a JSON body, which it returns.
#[track_caller]
fn expect_json(response: &Response, status: u16, what: &str) -> Value {
    assert_eq!(response.status, status, "{what}: {}", response.body);
    for header in RATE_LIMIT_HEADERS {
        assert!(
            response.header(header).is_some(),
            "{what}: {header} missing; headers {:?}",
            response.headers
        );
    }
    response.json()
}

/// Asserts a JSON error `{"error": "...", "reason": reason}` with `status`.
#[track_caller]
fn expect_error(response: &Response, status: u16, reason: &str) {
    if let Some(mismatch) = error_mismatch(response, status, reason, None) {
        panic!("{mismatch}");
    }
}

/// What is wrong with an error response, if anything: status, JSON shape, reason, field.
fn error_mismatch(
    response: &Response,
    status: u16,
    reason: &str,
    field: Option<&str>,
) -> Option<String> {
    let got = format!("{} {}", response.status, response.body);
    if response.status != status {
        return Some(format!("expected {status} {reason}, got {got}"));
    }
    let Ok(json) = serde_json::from_str::<Value>(&response.body) else {
        return Some(format!(
            "expected a JSON error body, got {got} (content-type {:?})",
            response.header("content-type")
        ));
    };
    if json["error"].as_str().is_none_or(str::is_empty) {
        return Some(format!("no error message in {got}"));
    }
    if json["reason"] != reason {
        return Some(format!("expected reason {reason}, got {got}"));
    }
    if let Some(field) = field {
        // An element of an array field may be named with its index: scopes[0].
        let named = json["field"]
            .as_str()
            .is_some_and(|f| f == field || f.starts_with(&format!("{field}[")));
        if !named {
            return Some(format!("expected field {field:?}, got {got}"));
        }
    }
    None
}

/// Collects mismatches so a table of bad inputs reports every failing case at once.
#[derive(Default)]
struct Mismatches(Vec<String>);

impl Mismatches {
    fn check(&mut self, case: &str, response: &Response, status: u16, reason: &str) {
        if let Some(m) = error_mismatch(response, status, reason, None) {
            self.0.push(format!("{case}: {m}"));
        }
    }

    fn check_invalid(&mut self, case: &str, response: &Response, field: &str) {
        if let Some(m) = error_mismatch(response, 422, "invalid_field", Some(field)) {
            self.0.push(format!("{case}: {m}"));
        }
    }

    #[track_caller]
    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} case(s) answered wrongly:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// The secret part of a token (after its key id), which no response but issue/rotate may
/// contain. The key id itself is public and legitimately appears everywhere.
fn secret_of(token: &str) -> &str {
    let (key_id_end, _) = token
        .match_indices('_')
        .nth(2)
        .expect("a token has the shape prefix_env_keyid_secret");
    &token[key_id_end + 1..]
}

#[track_caller]
fn assert_no_secrets(response: &Response, tokens: &[&str], what: &str) {
    for token in tokens {
        assert!(
            !response.body.contains(secret_of(token)),
            "{what} leaks a token: {}",
            response.body
        );
    }
}

/// A key JSON: the `key_info` columns plus `partner_name`, and never the hash.
#[track_caller]
fn assert_key_json(key: &Value) {
    let object = key
        .as_object()
        .unwrap_or_else(|| panic!("a key is a JSON object: {key}"));
    for field in KEY_FIELDS {
        assert!(object.contains_key(field), "key JSON lacks {field}: {key}");
    }
    for secret in ["secret_hash", "pepper_fingerprint"] {
        assert!(
            !object.contains_key(secret),
            "key JSON shows {secret}: {key}"
        );
    }
    assert!(
        !key.to_string().contains("$argon2"),
        "key JSON contains a hash: {key}"
    );
}

/// GET a list route; asserts 200 and returns `items`.
#[track_caller]
fn list(caller: &As, path: &str) -> Vec<Value> {
    let response = caller.get(path);
    let json = expect_json(&response, 200, path);
    json["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no items array in {json}"))
        .clone()
}

/// Follows `next_cursor` from the first page to the last; asserts every page's size.
fn walk_pages(caller: &As, path: &str, limit: usize) -> (Vec<Value>, Vec<usize>) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut page_sizes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            None => format!("{path}{sep}limit={limit}"),
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
        };
        let response = caller.get(&url);
        let page = expect_json(&response, 200, &url);
        let page_items = page["items"].as_array().expect("items").clone();
        assert!(page_items.len() <= limit, "{url}: page over limit: {page}");
        page_sizes.push(page_items.len());
        items.extend(page_items);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                assert!(page["next_cursor"].is_null(), "{url}: {page}");
                return (items, page_sizes);
            }
        }
    }
    panic!("{path}: pagination did not end after 100 pages");
}

fn strings(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| {
            i[field]
                .as_str()
                .unwrap_or_else(|| panic!("no {field} in {i}"))
                .to_string()
        })
        .collect()
}

fn key_id_set(items: &[Value]) -> BTreeSet<String> {
    strings(items, "key_id").into_iter().collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// GET /v1/verify: the status and, on failure, the reason.
fn verify_http(shim: &Shim, token: &str) -> (u16, String) {
    let response = shim.get_as(token, "/v1/verify");
    let reason = if response.status == 200 {
        "ok".to_string()
    } else {
        response.reason()
    };
    (response.status, reason)
}

#[track_caller]
fn assert_verifies(shim: &Shim, token: &str, what: &str) {
    assert_eq!(verify_http(shim, token), (200, "ok".into()), "{what}");
}

#[track_caller]
fn assert_refused(shim: &Shim, token: &str, reason: &str, what: &str) {
    assert_eq!(verify_http(shim, token), (401, reason.into()), "{what}");
}

fn show(caller: &As, key_id: &str) -> Value {
    let response = caller.get(&format!("/v1/keys/{key_id}"));
    let key = expect_json(&response, 200, "GET /v1/keys/{id}");
    assert_key_json(&key);
    key
}

/// Every management route with a body that passes extraction, for checks that must hold on
/// all of them (authentication, scope).
struct Route {
    method: &'static str,
    path: String,
    body: Option<Value>,
}

fn management_routes(partner: Uuid, key_id: &str) -> Vec<Route> {
    let route = |method, path: String, body| Route { method, path, body };
    vec![
        route("GET", "/v1/keys".into(), None),
        route("GET", format!("/v1/keys?partner_id={partner}"), None),
        route("GET", format!("/v1/keys/{key_id}"), None),
        route(
            "POST",
            "/v1/keys".into(),
            Some(issue_body(partner, &["orders:read"])),
        ),
        route(
            "POST",
            format!("/v1/keys/{key_id}/rotate"),
            Some(json!({ "grace_seconds": 60 })),
        ),
        route(
            "POST",
            format!("/v1/keys/{key_id}/revoke"),
            Some(json!({ "reason": "test" })),
        ),
        route("POST", format!("/v1/keys/{key_id}/enable"), None),
        route("POST", format!("/v1/keys/{key_id}/disable"), None),
        route("GET", "/v1/partners".into(), None),
        route(
            "POST",
            "/v1/partners".into(),
            Some(json!({ "name": unique("route_partner") })),
        ),
        route("POST", format!("/v1/partners/{partner}/activate"), None),
        route("POST", format!("/v1/partners/{partner}/deactivate"), None),
        route("GET", "/v1/audit".into(), None),
        route("GET", format!("/v1/audit?partner_id={partner}"), None),
    ]
}

fn call(shim: &Shim, route: &Route, token: Option<&str>) -> Response {
    let mut request = shim.request(route.method, &route.path);
    if let Some(token) = token {
        request = request.set("X-API-Key", token);
    }
    match &route.body {
        Some(body) => send(
            request.set("Content-Type", "application/json"),
            Some(&body.to_string()),
        ),
        None => send(request, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Partners
// ---------------------------------------------------------------------------------------------

#[test]
fn operator_creates_lists_activates_and_deactivates_partners() {
    let env = Env::start();
    let op = env.op();
    let stem = unique("plist");

    let response = op.post(
        "/v1/partners",
        &json!({ "name": format!("{stem}_one"), "contact_email": "one@example.com" }),
    );
    let one = expect_json(&response, 201, "POST /v1/partners");
    for field in [
        "partner_id",
        "name",
        "contact_email",
        "active",
        "created_at",
        "updated_at",
    ] {
        assert!(
            one.get(field).is_some(),
            "partner JSON lacks {field}: {one}"
        );
    }
    assert_eq!(one["contact_email"], "one@example.com");
    let one_id = partner_id_of(&one);
    // contact_email is optional.
    let two = expect_json(
        &op.post("/v1/partners", &json!({ "name": format!("{stem}_two") })),
        201,
        "POST /v1/partners without contact_email",
    );
    assert!(two["contact_email"].is_null(), "{two}");
    let three_id = create_partner_http(&op, &format!("{stem}_three"));

    // Names are unique, case-insensitively.
    for name in [format!("{stem}_one"), format!("{stem}_ONE")] {
        let duplicate = op.post("/v1/partners", &json!({ "name": name }));
        expect_error(&duplicate, 409, "conflict");
    }

    // q filters by name, newest first.
    let found = list(&op, &format!("/v1/partners?q={stem}"));
    assert_eq!(
        strings(&found, "name"),
        [
            format!("{stem}_three"),
            format!("{stem}_two"),
            format!("{stem}_one")
        ],
        "GET /v1/partners?q="
    );
    assert!(found.iter().all(|p| p["key_count"] == 0), "{found:?}");
    let (paged, sizes) = walk_pages(&op, &format!("/v1/partners?q={stem}"), 2);
    assert_eq!(sizes, [2, 1], "pages of GET /v1/partners");
    assert_eq!(paged, found, "walking the pages gives the same partners");

    // Deactivate, then filter by active.
    let response = op.post_empty(&format!("/v1/partners/{one_id}/deactivate"));
    let deactivated = expect_json(&response, 200, "deactivate");
    assert_eq!(deactivated["partner_id"], one_id.to_string());
    assert_eq!(deactivated["active"], false, "{deactivated}");
    let inactive = list(&op, &format!("/v1/partners?q={stem}&active=false"));
    assert_eq!(strings(&inactive, "name"), [format!("{stem}_one")]);
    let active = list(&op, &format!("/v1/partners?q={stem}&active=true"));
    assert_eq!(
        strings(&active, "name"),
        [format!("{stem}_three"), format!("{stem}_two")]
    );

    let response = op.post_empty(&format!("/v1/partners/{one_id}/activate"));
    let activated = expect_json(&response, 200, "activate");
    assert_eq!(activated["active"], true, "{activated}");
    assert_eq!(
        list(&op, &format!("/v1/partners?q={stem}&active=false")).len(),
        0
    );

    // key_count follows the partner's keys.
    issue_http(&op, issue_body(three_id, &["orders:read"]));
    let three = list(&op, &format!("/v1/partners?q={stem}_three"));
    assert_eq!(three.len(), 1);
    assert_eq!(three[0]["key_count"], 1, "{three:?}");

    // Unknown partner: 404. Not a UUID in the path: 400.
    let unknown = Uuid::parse_str("00000000-0000-4000-8000-000000000000").expect("uuid");
    for action in ["activate", "deactivate"] {
        expect_error(
            &op.post_empty(&format!("/v1/partners/{unknown}/{action}")),
            404,
            "not_found",
        );
        expect_error(
            &op.post_empty(&format!("/v1/partners/not-a-uuid/{action}")),
            400,
            "bad_request",
        );
    }
}

#[test]
fn partner_create_rejects_bad_input() {
    let env = Env::start();
    let op = env.op();
    let mut bad = Mismatches::default();
    let post = |body: &str| op.post_raw("/v1/partners", Some("application/json"), body);

    bad.check("malformed JSON", &post("{\"name\": "), 400, "bad_request");
    bad.check(
        "trailing garbage",
        &post("{\"name\": \"x\"} x"),
        400,
        "bad_request",
    );
    bad.check_invalid("missing name", &post("{}"), "name");
    bad.check_invalid("name null", &post("{\"name\": null}"), "name");
    bad.check_invalid("name a number", &post("{\"name\": 5}"), "name");
    bad.check_invalid("name an array", &post("{\"name\": [\"x\"]}"), "name");
    bad.check_invalid(
        "contact_email a number",
        &post(&json!({ "name": unique("p"), "contact_email": 5 }).to_string()),
        "contact_email",
    );
    bad.check_invalid(
        "unknown field",
        &post(&json!({ "name": unique("p"), "colour": "red" }).to_string()),
        "colour",
    );
    bad.check_invalid(
        "contact_email not an address",
        &post(&json!({ "name": unique("p"), "contact_email": "nope" }).to_string()),
        "contact_email",
    );

    // Strings the database refuses: 422 naming the field, never a 500.
    let names = [
        ("blank name", "   ".to_string()),
        ("201 characters", "n".repeat(201)),
        ("201 emoji (804 bytes)", "🔑".repeat(201)),
        ("10 000 characters", "x".repeat(10_000)),
        ("60 KB, just under the body limit", "y".repeat(60 * 1024)),
        ("a control character", format!("{}\u{7}", unique("bell"))),
        ("a NUL character", format!("{}\u{0}", unique("nul"))),
    ];
    for (case, name) in &names {
        bad.check_invalid(case, &post(&json!({ "name": name }).to_string()), "name");
    }
    // Unicode within the limit is kept exactly: 200 characters of 4 bytes each, and a mix of
    // scripts, combining marks and right-to-left text.
    let stem = unique("k");
    let at_limit = format!("{stem}{}", "🔑".repeat(200 - stem.chars().count()));
    let mixed = format!("{} Ünïcödé 日本語 עברית e\u{301}", unique("u"));
    for name in [at_limit, mixed] {
        let created = op.post("/v1/partners", &json!({ "name": name }));
        let partner = expect_json(&created, 201, "unicode partner name");
        assert_eq!(partner["name"], name.as_str(), "the name round-trips");
    }
    bad.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Keys as an operator
// ---------------------------------------------------------------------------------------------

#[test]
fn operator_issues_shows_and_the_token_verifies() {
    let env = Env::start();
    let op = env.op();
    let partner_name = unique("issue_partner");
    let partner = create_partner_http(&op, &partner_name);
    let not_before = env.db_time("-1 minute");
    let expires_at = env.db_time("30 days");

    let issued = issue_http(
        &op,
        json!({
            "partner_id": partner.to_string(),
            "scopes": ["orders:read", "orders:write"],
            "name": "checkout service",
            "expires_at": expires_at,
            "not_before": not_before,
            "rate_per_minute": 120,
            "allowed_cidrs": ["127.0.0.0/8", "10.0.0.0/8"],
            "environment": "test",
            "tags": ["blue", "checkout"],
            "metadata": { "owner": "team-a", "n": 1 },
            "prefix": "acme",
        }),
    );
    assert!(
        issued.token.starts_with("acme_test_"),
        "prefix and environment make the token's start: {}",
        issued.token
    );
    let key = &issued.key;
    assert_eq!(key["partner_id"], partner.to_string());
    assert_eq!(key["partner_name"], partner_name.as_str());
    assert_eq!(key["name"], "checkout service");
    assert_eq!(key["scopes"], json!(["orders:read", "orders:write"]));
    assert_eq!(key["tags"], json!(["blue", "checkout"]));
    assert_eq!(key["metadata"], json!({ "owner": "team-a", "n": 1 }));
    assert_eq!(key["environment"], "test");
    assert_eq!(key["rate_per_minute"], 120);
    assert_eq!(key["allowed_cidrs"], json!(["127.0.0.0/8", "10.0.0.0/8"]));
    assert_eq!(key["status"], "live");
    assert_eq!(key["enabled"], true);
    assert_eq!(key["created_by"], SHIM_ROLE);
    assert!(key["expires_at"].is_string() && key["not_before"].is_string());

    // The token works on /v1/verify, with the issued scopes.
    let verified = env
        .shim
        .get_as(&issued.token, "/v1/verify?scope=orders:write");
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(
        verified.header("x-apikey-key-id"),
        Some(issued.key_id.as_str())
    );

    // Defaults: only partner_id and scopes, everything else null is the same as absent.
    let plain = issue_http(
        &op,
        json!({
            "partner_id": partner.to_string(), "scopes": ["orders:read"], "name": null,
            "expires_at": null, "not_before": null, "rate_per_minute": null,
            "allowed_cidrs": null, "environment": null, "tags": null, "metadata": null,
            "prefix": null,
        }),
    );
    assert!(plain.token.starts_with("ak_live_"), "{}", plain.token);
    assert_eq!(plain.key["rate_per_minute"], 300);
    assert_eq!(plain.key["tags"], json!([]));
    assert_eq!(plain.key["metadata"], json!({}));
    assert!(plain.key["allowed_cidrs"].is_null() && plain.key["name"].is_null());
    assert_verifies(&env.shim, &plain.token, "a key issued with defaults");

    // Show: the same key, without the token; also with Authorization: Bearer / ApiKey.
    let tokens = [issued.token.as_str(), plain.token.as_str()];
    eventually("the worker writes last_used_at", || {
        last_used_at(&mut superuser(), &issued.key_id)
    });
    let response = op.get(&format!("/v1/keys/{}", issued.key_id));
    let shown = expect_json(&response, 200, "GET /v1/keys/{id}");
    assert_no_secrets(&response, &tokens, "GET /v1/keys/{id}");
    // Show returns what issue returned, except that verifying has since set last_used_at.
    let mut expected = issued.key.clone();
    expected["last_used_at"] = shown["last_used_at"].clone();
    assert_eq!(shown, expected, "show returns what issue returned");
    assert!(
        shown["last_used_at"].is_string(),
        "verify sets last_used_at"
    );
    for scheme in ["Bearer", "ApiKey"] {
        let request = env
            .shim
            .request("GET", &format!("/v1/keys/{}", issued.key_id))
            .set("Authorization", &format!("{scheme} {}", env.operator.token));
        let response = send(request, None);
        assert_eq!(expect_json(&response, 200, scheme)["key_id"], issued.key_id);
    }

    // Unknown key ids are 404; a pasted token in the path is 404 and is not echoed.
    expect_error(
        &op.get("/v1/keys/ak_live_AAAAAAAAAAAAAAAA"),
        404,
        "not_found",
    );
    let pasted = op.get(&format!("/v1/keys/{}", plain.token));
    expect_error(&pasted, 404, "not_found");
    assert_not_stored(&pasted, "an error answer");
    assert_not_stored(&response, "GET /v1/keys/{id}");
    assert_no_secrets(&pasted, &tokens, "404 for a pasted token");
}

#[test]
fn operator_lists_keys_by_partner_text_tag_and_status() {
    let env = Env::start();
    let op = env.op();
    let partner_name = unique("filters");
    let partner = create_partner_http(&op, &partner_name);
    let other = create_partner_http(&op, &unique("filters_other"));
    let name_stem = unique("named");

    let body = |name: &str, tags: &[&str]| {
        json!({
            "partner_id": partner.to_string(), "scopes": ["orders:read"],
            "name": format!("{name_stem} {name}"), "tags": tags,
        })
    };
    let live = issue_http(&op, body("live", &["blue", "common"]));
    let disabled = issue_http(&op, body("disabled", &["common"]));
    let revoked = issue_http(&op, body("revoked", &[]));
    let expired = issue_http(&op, body("expired", &[]));
    let mut future = body("future", &[]);
    future["not_before"] = json!(env.db_time("1 day"));
    let not_yet_valid = issue_http(&op, future);
    let elsewhere = issue_http(&op, issue_body(other, &["orders:read"]));

    expect_json(
        &op.post_empty(&format!("/v1/keys/{}/disable", disabled.key_id)),
        200,
        "disable",
    );
    expect_json(
        &op.post(&format!("/v1/keys/{}/revoke", revoked.key_id), &json!({})),
        200,
        "revoke",
    );
    // An expiry cannot be set in the past through the API; move it there in the database
    // instead of sleeping until it passes.
    env.db
        .borrow_mut()
        .execute(
            "UPDATE apikey.keys SET expires_at = now() - interval '1 minute' WHERE key_id = $1",
            &[&expired.key_id],
        )
        .expect("expire the key");

    let ours = [
        &live,
        &disabled,
        &revoked,
        &expired,
        &not_yet_valid,
        &elsewhere,
    ];
    let tokens: Vec<&str> = ours.iter().map(|k| k.token.as_str()).collect();
    let check = |query: &str, expected: &[&NewKey]| {
        let path = format!("/v1/keys?{query}");
        let response = op.get(&path);
        let json = expect_json(&response, 200, &path);
        assert_no_secrets(&response, &tokens, &path);
        let items = json["items"].as_array().expect("items").clone();
        items.iter().for_each(assert_key_json);
        let expected: BTreeSet<String> = expected.iter().map(|k| k.key_id.clone()).collect();
        assert_eq!(key_id_set(&items), expected, "{path}");
        assert_eq!(items.len(), expected.len(), "{path}: no duplicates");
        items
    };

    let by_partner = check(
        &format!("partner_id={partner}"),
        &[&live, &disabled, &revoked, &expired, &not_yet_valid],
    );
    let created: Vec<&str> = by_partner
        .iter()
        .map(|k| k["created_at"].as_str().expect("created_at"))
        .collect();
    let mut newest_first = created.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(created, newest_first, "keys are listed newest first");
    check(&format!("partner_id={other}"), &[&elsewhere]);

    // q matches the key id, the key's name and the partner's name, case-insensitively.
    check(&format!("q={}", live.key_id), &[&live]);
    check(&format!("q={name_stem}%20disabled"), &[&disabled]);
    check(
        &format!("q={}", name_stem.to_uppercase().replace(' ', "%20")),
        &[&live, &disabled, &revoked, &expired, &not_yet_valid],
    );
    check(
        &format!("q={partner_name}"),
        &[&live, &disabled, &revoked, &expired, &not_yet_valid],
    );
    // LIKE wildcards in q are literal.
    check(&format!("partner_id={partner}&q=%25"), &[]);

    check(&format!("partner_id={partner}&tag=blue"), &[&live]);
    check(
        &format!("partner_id={partner}&tag=common"),
        &[&live, &disabled],
    );
    check(&format!("partner_id={partner}&tag=absent"), &[]);

    for (status, key) in [
        ("live", &live),
        ("disabled", &disabled),
        ("revoked", &revoked),
        ("expired", &expired),
        ("not_yet_valid", &not_yet_valid),
    ] {
        let items = check(&format!("partner_id={partner}&status={status}"), &[key]);
        assert_eq!(items[0]["status"], status, "{items:?}");
    }
    // Filters combine.
    check(
        &format!("q={partner_name}&tag=common&status=disabled"),
        &[&disabled],
    );
}

#[test]
fn key_pagination_returns_every_key_exactly_once() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("pages"));
    let issued: BTreeSet<String> = (0..7)
        .map(|_| issue_http(&op, issue_body(partner, &["orders:read"])).key_id)
        .collect();

    let (items, sizes) = walk_pages(&op, &format!("/v1/keys?partner_id={partner}"), 3);
    assert_eq!(sizes, [3, 3, 1], "7 keys in pages of 3");
    let walked = strings(&items, "key_id");
    assert_eq!(walked.len(), 7, "no key twice: {walked:?}");
    assert_eq!(walked.iter().cloned().collect::<BTreeSet<_>>(), issued);
    let all_at_once = list(&op, &format!("/v1/keys?partner_id={partner}&limit=500"));
    assert_eq!(items, all_at_once, "pages concatenate to the unpaged list");

    // A page size equal to the count: one page, no cursor.
    let (_, sizes) = walk_pages(&op, &format!("/v1/keys?partner_id={partner}"), 7);
    assert_eq!(sizes, [7]);
}

#[test]
fn operator_rotates_revokes_disables_and_deactivates() {
    let env = Env::start();
    let op = env.op();
    let shim = &env.shim;
    // Bodies of answers other than issue/rotate, checked for tokens at the end.
    let mut answers: Vec<String> = Vec::new();
    let partner = create_partner_http(&op, &unique("lifecycle"));
    let first = issue_http(&op, issue_body(partner, &["orders:read"]));
    assert_verifies(shim, &first.token, "a new key");

    // Rotate with a grace period: both keys work, the old one points at the new one.
    let second = rotate_http(&op, &first.key_id, json!({ "grace_seconds": 3600 }));
    assert_ne!(second.key_id, first.key_id);
    assert_eq!(second.key["partner_id"], partner.to_string());
    assert_eq!(
        second.key["scopes"],
        json!(["orders:read"]),
        "scopes inherited"
    );
    assert_verifies(shim, &first.token, "the old key during its grace period");
    assert_verifies(shim, &second.token, "the successor");
    let old = show(&op, &first.key_id);
    assert_eq!(old["rotated_to"], second.key_id.as_str(), "{old}");
    assert!(
        old["revoked_at"].is_string(),
        "grace end is recorded: {old}"
    );

    // A key is rotated once.
    let again = op.post(&format!("/v1/keys/{}/rotate", first.key_id), &json!({}));
    expect_error(&again, 409, "conflict");

    // Rotate with new scopes and no grace (empty body = defaults for the rest).
    let third = rotate_http(&op, &second.key_id, json!({ "scopes": ["orders:write"] }));
    assert_eq!(third.key["scopes"], json!(["orders:write"]));
    assert_refused(shim, &second.token, "revoked", "rotated without grace");
    assert_verifies(shim, &third.token, "the second successor");

    // Revoke: true the first time, false after.
    let revoke_path = format!("/v1/keys/{}/revoke", third.key_id);
    let response = op.post(&revoke_path, &json!({ "reason": "leaked in a ticket" }));
    let revoked = expect_json(&response, 200, "revoke");
    answers.push(response.body.clone());
    assert_eq!(revoked["revoked"], true, "{revoked}");
    assert_eq!(revoked["key"]["status"], "revoked");
    assert_eq!(revoked["key"]["revoke_reason"], "leaked in a ticket");
    assert_key_json(&revoked["key"]);
    let response = op.post_empty(&revoke_path);
    answers.push(response.body.clone());
    assert_eq!(
        expect_json(&response, 200, "revoke again")["revoked"],
        false
    );
    assert_refused(shim, &third.token, "revoked", "a revoked key");
    // A revoked key is neither rotated nor re-enabled.
    expect_error(
        &op.post(&format!("/v1/keys/{}/rotate", third.key_id), &json!({})),
        409,
        "conflict",
    );
    expect_error(
        &op.post_empty(&format!("/v1/keys/{}/enable", third.key_id)),
        409,
        "conflict",
    );

    // Disable / enable.
    let other = issue_http(&op, issue_body(partner, &["orders:read"]));
    let response = op.post_empty(&format!("/v1/keys/{}/disable", other.key_id));
    let disabled = expect_json(&response, 200, "disable");
    answers.push(response.body.clone());
    assert_key_json(&disabled);
    assert_eq!(
        (&disabled["enabled"], &disabled["status"]),
        (&json!(false), &json!("disabled"))
    );
    assert_refused(shim, &other.token, "disabled", "a disabled key");
    let response = op.post_empty(&format!("/v1/keys/{}/enable", other.key_id));
    let enabled = expect_json(&response, 200, "enable");
    answers.push(response.body.clone());
    assert_eq!(enabled["status"], "live", "{enabled}");
    assert_verifies(shim, &other.token, "a re-enabled key");

    // Deactivating the partner stops its keys; activating brings them back.
    expect_json(
        &op.post_empty(&format!("/v1/partners/{partner}/deactivate")),
        200,
        "deactivate",
    );
    assert_refused(shim, &other.token, "partner_inactive", "inactive partner");
    expect_json(
        &op.post_empty(&format!("/v1/partners/{partner}/activate")),
        200,
        "activate",
    );
    assert_verifies(shim, &other.token, "partner active again");

    // Unknown keys: 404 on every key route.
    let unknown = "ak_live_AAAAAAAAAAAAAAAA";
    for action in ["rotate", "revoke", "enable", "disable"] {
        expect_error(
            &op.post_empty(&format!("/v1/keys/{unknown}/{action}")),
            404,
            "not_found",
        );
    }

    // No answer but issue/rotate carried a token.
    let tokens = [&first, &second, &third, &other].map(|k| k.token.as_str());
    for path in [
        format!("/v1/keys?partner_id={partner}"),
        format!("/v1/keys/{}", first.key_id),
        format!("/v1/audit?partner_id={partner}"),
        "/v1/partners".to_string(),
    ] {
        answers.push(op.get(&path).body);
    }
    for body in &answers {
        for token in tokens {
            assert!(!body.contains(secret_of(token)), "a token leaked: {body}");
        }
    }
}

#[test]
fn rotate_and_revoke_accept_an_empty_body() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("empty_body"));

    // No body at all, an empty one and whitespace, none with a Content-Type: the defaults.
    for body in [None, Some(""), Some("  \n")] {
        let key = issue_http(&op, issue_body(partner, &["orders:read"]));
        let path = format!("/v1/keys/{}/rotate", key.key_id);
        let response = match body {
            None => op.post_empty(&path),
            Some(text) => op.post_raw(&path, None, text),
        };
        let rotated = expect_json(&response, 201, &format!("rotate with body {body:?}"));
        assert_eq!(rotated["rotated_from"], key.key_id.as_str());
        assert_eq!(rotated["key"]["scopes"], json!(["orders:read"]));
        assert_refused(&env.shim, &key.token, "revoked", "rotated without grace");
    }

    let key = issue_http(&op, issue_body(partner, &["orders:read"]));
    let revoke = op.post_empty(&format!("/v1/keys/{}/revoke", key.key_id));
    let revoked = expect_json(&revoke, 200, "revoke without a body");
    assert_eq!(revoked["revoked"], true, "{revoked}");
    assert_eq!(revoked["key"]["revoke_reason"], "revoked", "{revoked}");
}

#[test]
fn concurrent_rotations_of_one_key_produce_exactly_one_successor() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("race"));
    for round in 0..3 {
        let key = issue_http(&op, issue_body(partner, &["orders:read"]));
        let path = format!("/v1/keys/{}/rotate", key.key_id);
        let barrier = Barrier::new(2);
        let responses: Vec<Response> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        op.post(&path, &json!({ "grace_seconds": 60 }))
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("rotate thread"))
                .collect()
        });
        let mut statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
        statuses.sort();
        let bodies: Vec<&str> = responses.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(statuses, [201, 409], "round {round}: {bodies:?}");
        let winner = responses
            .iter()
            .find(|r| r.status == 201)
            .expect("one rotation won");
        let loser = responses
            .iter()
            .find(|r| r.status == 409)
            .expect("one lost");
        expect_error(loser, 409, "conflict");
        let successor = winner.json()["key_id"]
            .as_str()
            .expect("key_id")
            .to_string();

        // The old key points at the winner, and only the winner descends from it.
        assert_eq!(show(&op, &key.key_id)["rotated_to"], successor.as_str());
        let rotations = list(
            &op,
            &format!("/v1/audit?key_id={}&action=rotate", key.key_id),
        );
        assert_eq!(rotations.len(), 1, "one rotate audit row: {rotations:?}");
        assert_eq!(rotations[0]["detail"]["rotated_to"], successor.as_str());
    }
    // Three originals and three successors, nothing more.
    let keys = list(&op, &format!("/v1/keys?partner_id={partner}"));
    assert_eq!(keys.len(), 6, "{keys:?}");
}

// ---------------------------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------------------------

#[test]
fn audit_shows_lifecycle_events_filtered_by_key_action_time_and_paged() {
    let env = Env::start();
    let partner = create_partner_http(&env.op(), &unique("audit"));
    let first = issue_http(&env.op(), issue_body(partner, &["orders:read"]));
    let second = rotate_http(&env.op(), &first.key_id, json!({ "grace_seconds": 60 }));
    let after_rotate = env.db_time("0");
    expect_json(
        &env.op()
            .post_empty(&format!("/v1/keys/{}/disable", second.key_id)),
        200,
        "disable",
    );
    expect_json(
        &env.op()
            .post_empty(&format!("/v1/keys/{}/enable", second.key_id)),
        200,
        "enable",
    );
    let after_enable = env.db_time("0");
    expect_json(
        &env.op().post(
            &format!("/v1/keys/{}/revoke", second.key_id),
            &json!({ "reason": "audit test" }),
        ),
        200,
        "revoke",
    );
    let op = env.op();
    let tokens = [first.token.as_str(), second.token.as_str()];
    let actions = |query: &str| -> Vec<String> {
        let path = format!("/v1/audit?{query}");
        let response = op.get(&path);
        let json = expect_json(&response, 200, &path);
        assert_no_secrets(&response, &tokens, &path);
        let items = json["items"].as_array().expect("items").clone();
        let ids: Vec<i64> = items
            .iter()
            .map(|i| i["id"].as_i64().expect("id"))
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] > w[1]),
            "{path}: newest first: {ids:?}"
        );
        strings(&items, "action")
    };

    assert_eq!(
        actions(&format!("key_id={}", first.key_id)),
        ["rotate", "issue"]
    );
    assert_eq!(
        actions(&format!("key_id={}", second.key_id)),
        ["revoke", "enable", "disable"]
    );
    let all = list(&op, &format!("/v1/audit?partner_id={partner}"));
    assert_eq!(
        strings(&all, "action"),
        [
            "revoke",
            "enable",
            "disable",
            "rotate",
            "issue",
            "partner_create"
        ]
    );
    for row in &all {
        assert_eq!(row["actor"], SHIM_ROLE, "{row}");
        assert_eq!(row["partner_id"], partner.to_string(), "{row}");
    }
    let rotate = &all[3];
    assert_eq!(rotate["key_id"], first.key_id.as_str());
    assert_eq!(rotate["detail"]["rotated_to"], second.key_id.as_str());
    assert_eq!(all[0]["reason"], "audit test");

    // By action.
    assert_eq!(
        actions(&format!("partner_id={partner}&action=disable")),
        ["disable"]
    );
    assert_eq!(
        actions(&format!("key_id={}&action=issue", first.key_id)),
        ["issue"]
    );
    assert!(actions(&format!("partner_id={partner}&action=no_such_action")).is_empty());

    // By time: from is inclusive, to exclusive.
    assert_eq!(
        actions(&format!("partner_id={partner}&from={after_rotate}")),
        ["revoke", "enable", "disable"]
    );
    assert_eq!(
        actions(&format!("partner_id={partner}&to={after_rotate}")),
        ["rotate", "issue", "partner_create"]
    );
    assert_eq!(
        actions(&format!(
            "partner_id={partner}&from={after_rotate}&to={after_enable}"
        )),
        ["enable", "disable"]
    );

    // Paged: the pages concatenate to the whole list.
    let (paged, sizes) = walk_pages(&op, &format!("/v1/audit?partner_id={partner}"), 2);
    assert_eq!(sizes, [2, 2, 2]);
    assert_eq!(paged, all);
}

/// The contract's audit log holds failed verifications; a refused management call is one.
#[test]
fn a_refused_management_call_is_audited_as_a_failed_verification() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("audit_fail"));
    let admin = issue_http(&op, issue_body(partner, &["admin:*"]));
    expect_json(
        &op.post_empty(&format!("/v1/keys/{}/revoke", admin.key_id)),
        200,
        "revoke",
    );

    let refused = env.as_key(&admin.token).get("/v1/keys");
    expect_error(&refused, 401, "revoked");
    let failures = || {
        list(
            &op,
            &format!("/v1/audit?key_id={}&action=verify_failed", admin.key_id),
        )
    };
    let rows = failures();
    assert_eq!(
        rows.len(),
        1,
        "the refused GET /v1/keys is audited: {rows:?}"
    );
    assert_eq!(rows[0]["reason"], "revoked", "{rows:?}");
    // The same failure again within the minute, on /v1/verify: counted in the usage, but
    // not audited again (one row per key, reason and minute).
    assert_refused(&env.shim, &admin.token, "revoked", "revoked admin key");
    assert_eq!(failures().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Partner isolation
// ---------------------------------------------------------------------------------------------

/// Two partners, each with a `keys:manage` key and an ordinary key, issued by the operator.
struct TwoPartners {
    a: Uuid,
    a_name: String,
    b: Uuid,
    a_manage: NewKey,
    a_plain: NewKey,
    b_manage: NewKey,
    b_plain: NewKey,
}

impl TwoPartners {
    fn create(op: &As) -> TwoPartners {
        let stem = unique("iso");
        let a_name = format!("{stem}_a");
        let a = create_partner_http(op, &a_name);
        let b = create_partner_http(op, &format!("{stem}_b"));
        let key = |partner: Uuid, scope: &str| issue_http(op, issue_body(partner, &[scope]));
        TwoPartners {
            a,
            a_name,
            b,
            a_manage: key(a, "keys:manage"),
            a_plain: key(a, "orders:read"),
            b_manage: key(b, "keys:manage"),
            b_plain: key(b, "orders:read"),
        }
    }

    fn tokens(&self) -> [&str; 4] {
        [&self.a_manage, &self.a_plain, &self.b_manage, &self.b_plain].map(|k| k.token.as_str())
    }
}

#[test]
fn a_partner_key_reads_only_its_own_keys_audit_and_partner() {
    let env = Env::start();
    let op = env.op();
    let p = TwoPartners::create(&op);
    let a = env.as_key(&p.a_manage.token);
    let tokens = p.tokens();
    let get = |path: &str| {
        let response = a.get(path);
        assert_no_secrets(&response, &tokens, path);
        response
    };

    // Keys: only A's, whatever the filter asks for.
    let response = get("/v1/keys");
    let mine = expect_json(&response, 200, "GET /v1/keys as A")["items"]
        .as_array()
        .expect("items")
        .clone();
    assert_eq!(
        key_id_set(&mine),
        set(&[&p.a_manage.key_id, &p.a_plain.key_id]),
        "A sees exactly its own keys"
    );
    assert!(mine.iter().all(|k| k["partner_id"] == p.a.to_string()));
    assert_eq!(
        list(&a, &format!("/v1/keys?partner_id={}", p.a)).len(),
        2,
        "A filtering on itself"
    );
    for query in [
        format!("partner_id={}", p.b),
        format!("q={}", p.b_plain.key_id),
        format!("q={}", p.a_name.replace("_a", "_b")),
    ] {
        let path = format!("/v1/keys?{query}");
        let response = get(&path);
        let json = expect_json(&response, 200, &path);
        assert_eq!(json["items"], json!([]), "{path} as A");
    }
    for key in [&p.b_manage, &p.b_plain] {
        expect_error(&get(&format!("/v1/keys/{}", key.key_id)), 404, "not_found");
    }
    assert_eq!(
        show(&a, &p.a_plain.key_id)["key_id"],
        p.a_plain.key_id.as_str()
    );

    // Audit: only A's rows.
    let rows = list(&a, "/v1/audit");
    assert!(!rows.is_empty(), "A sees its own audit rows");
    for row in &rows {
        assert_eq!(row["partner_id"], p.a.to_string(), "A sees {row}");
    }
    let issued: BTreeSet<String> = rows
        .iter()
        .filter(|r| r["action"] == "issue")
        .map(|r| r["key_id"].as_str().expect("key_id").to_string())
        .collect();
    assert_eq!(issued, set(&[&p.a_manage.key_id, &p.a_plain.key_id]));
    for query in [
        format!("partner_id={}", p.b),
        format!("key_id={}", p.b_plain.key_id),
        format!("key_id={}", p.b_manage.key_id),
    ] {
        let path = format!("/v1/audit?{query}");
        let response = get(&path);
        assert_eq!(
            expect_json(&response, 200, &path)["items"],
            json!([]),
            "{path} as A"
        );
    }

    // Partners: only A.
    let response = get("/v1/partners");
    let partners = expect_json(&response, 200, "GET /v1/partners as A");
    assert_eq!(
        strings(partners["items"].as_array().expect("items"), "partner_id"),
        [p.a.to_string()],
        "A sees only itself: {partners}"
    );

    // The operator sees both partners' keys.
    let stem = p.a_name.trim_end_matches("_a");
    let everything = list(&op, &format!("/v1/keys?q={stem}"));
    assert_eq!(
        key_id_set(&everything),
        set(&[
            &p.a_manage.key_id,
            &p.a_plain.key_id,
            &p.b_manage.key_id,
            &p.b_plain.key_id
        ]),
        "the operator sees A's and B's keys"
    );
    let operator_rows = list(&op, &format!("/v1/audit?partner_id={}", p.b));
    assert!(
        !operator_rows.is_empty(),
        "the operator sees B's audit rows"
    );
}

#[test]
fn a_partner_key_cannot_touch_another_partners_keys() {
    let env = Env::start();
    let op = env.op();
    let p = TwoPartners::create(&op);
    let a = env.as_key(&p.a_manage.token);

    for key in [&p.b_plain, &p.b_manage] {
        for (action, body) in [
            ("rotate", json!({ "grace_seconds": 0 })),
            ("revoke", json!({ "reason": "hostile" })),
            ("disable", json!({})),
            ("enable", json!({})),
        ] {
            let response = a.post(&format!("/v1/keys/{}/{action}", key.key_id), &body);
            expect_error(&response, 404, "not_found");
            assert_no_secrets(&response, &p.tokens(), action);
        }
    }

    // Nothing happened to B's keys.
    for key in [&p.b_plain, &p.b_manage] {
        assert_verifies(&env.shim, &key.token, "B's key after A's attempts");
        let shown = show(&op, &key.key_id);
        assert_eq!(shown["status"], "live", "{shown}");
        assert!(shown["rotated_to"].is_null() && shown["revoked_at"].is_null());
    }
    let b_history = list(&op, &format!("/v1/audit?partner_id={}", p.b));
    assert_eq!(
        strings(&b_history, "action"),
        ["issue", "issue", "partner_create"],
        "no lifecycle event on B"
    );
}

#[test]
fn a_partner_key_cannot_issue_keys_or_manage_partners() {
    let env = Env::start();
    let op = env.op();
    let p = TwoPartners::create(&op);
    let a = env.as_key(&p.a_manage.token);

    for partner in [p.a, p.b] {
        let response = a.post("/v1/keys", &issue_body(partner, &["orders:read"]));
        expect_error(&response, 403, "forbidden");
    }
    let name = unique("by_partner");
    expect_error(
        &a.post("/v1/partners", &json!({ "name": name })),
        403,
        "forbidden",
    );
    for partner in [p.a, p.b] {
        for action in ["deactivate", "activate"] {
            let response = a.post_empty(&format!("/v1/partners/{partner}/{action}"));
            expect_error(&response, 403, "forbidden");
        }
    }

    // Nothing was created or switched off.
    assert!(list(&op, &format!("/v1/partners?q={name}")).is_empty());
    for partner in [p.a, p.b] {
        let keys = list(&op, &format!("/v1/keys?partner_id={partner}"));
        assert_eq!(keys.len(), 2, "no key issued for {partner}: {keys:?}");
    }
    for key in [&p.a_plain, &p.b_plain] {
        assert_verifies(&env.shim, &key.token, "partners stay active");
    }
}

#[test]
fn a_partner_key_manages_its_own_keys() {
    let env = Env::start();
    let op = env.op();
    let p = TwoPartners::create(&op);
    let a = env.as_key(&p.a_manage.token);

    let successor = rotate_http(&a, &p.a_plain.key_id, json!({ "grace_seconds": 3600 }));
    assert_eq!(successor.key["partner_id"], p.a.to_string());
    assert_verifies(&env.shim, &successor.token, "A's rotated key");
    assert_verifies(&env.shim, &p.a_plain.token, "A's old key in its grace");

    let disabled = expect_json(
        &a.post_empty(&format!("/v1/keys/{}/disable", successor.key_id)),
        200,
        "A disables its key",
    );
    assert_eq!(disabled["status"], "disabled");
    assert_refused(&env.shim, &successor.token, "disabled", "disabled by A");
    let enabled = expect_json(
        &a.post_empty(&format!("/v1/keys/{}/enable", successor.key_id)),
        200,
        "A enables its key",
    );
    assert_eq!(enabled["status"], "live");

    let response = a.post(
        &format!("/v1/keys/{}/revoke", p.a_plain.key_id),
        &json!({ "reason": "done" }),
    );
    let revoked = expect_json(&response, 200, "A revokes its key");
    assert_eq!(revoked["revoked"], true, "{revoked}");
    assert_no_secrets(&response, &p.tokens(), "revoke");
    assert_refused(&env.shim, &p.a_plain.token, "revoked", "revoked by A");

    // A's listing now has its three keys; B is untouched.
    let mine = list(&a, "/v1/keys");
    assert_eq!(
        key_id_set(&mine),
        set(&[&p.a_manage.key_id, &p.a_plain.key_id, &successor.key_id])
    );
    assert_verifies(&env.shim, &p.b_plain.token, "B's key");
}

#[test]
fn a_key_without_admin_or_manage_scope_is_refused_everywhere() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("scopeless"));
    let plain = issue_http(&op, issue_body(partner, &["orders:read", "orders:*"]));

    for route in management_routes(partner, &plain.key_id) {
        let response = call(&env.shim, &route, Some(&plain.token));
        if let Some(m) = error_mismatch(&response, 403, "insufficient_scope", None) {
            panic!("{} {}: {m}", route.method, route.path);
        }
    }
    // None of those calls changed anything.
    let key = show(&op, &plain.key_id);
    assert_eq!(key["status"], "live", "{key}");
    assert!(key["rotated_to"].is_null(), "{key}");
    assert_eq!(
        list(&op, &format!("/v1/keys?partner_id={partner}")).len(),
        1
    );
    assert_verifies(&env.shim, &plain.token, "the key itself still works");
}

#[test]
fn bad_keys_get_401_with_the_verify_reason_on_every_route() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("badkeys"));
    let target = issue_http(&op, issue_body(partner, &["orders:read"]));
    let revoked = issue_http(&op, issue_body(partner, &["admin:*"]));
    expect_json(
        &op.post_empty(&format!("/v1/keys/{}/revoke", revoked.key_id)),
        200,
        "revoke",
    );
    let garbage = "not-a-token";

    for route in management_routes(partner, &target.key_id) {
        for (token, reason) in [
            (None, "missing_key"),
            (Some(garbage), "malformed"),
            (Some(revoked.token.as_str()), "revoked"),
        ] {
            let response = call(&env.shim, &route, token);
            if let Some(m) = error_mismatch(&response, 401, reason, None) {
                panic!("{} {}: {m}", route.method, route.path);
            }
            assert!(
                response.header("www-authenticate").is_some(),
                "{} {}: 401 without WWW-Authenticate",
                route.method,
                route.path
            );
        }
    }

    // A disabled operator key and one of an inactive partner.
    let disabled = issue_http(&op, issue_body(partner, &["admin:*"]));
    expect_json(
        &op.post_empty(&format!("/v1/keys/{}/disable", disabled.key_id)),
        200,
        "disable",
    );
    expect_error(
        &env.as_key(&disabled.token).get("/v1/keys"),
        401,
        "disabled",
    );
    let inactive = create_partner_http(&op, &unique("inactive"));
    let of_inactive = issue_http(&op, issue_body(inactive, &["admin:*"]));
    expect_json(
        &op.post_empty(&format!("/v1/partners/{inactive}/deactivate")),
        200,
        "deactivate",
    );
    expect_error(
        &env.as_key(&of_inactive.token).get("/v1/audit"),
        401,
        "partner_inactive",
    );
    // The target was never touched.
    assert_eq!(show(&op, &target.key_id)["status"], "live");
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn issue_rejects_bad_input_with_the_field_named() {
    let env = Env::start();
    let past = env.db_time("-1 hour");
    let soon = env.db_time("1 hour");
    let later = env.db_time("2 hours");
    let op = env.op();
    let partner = create_partner_http(&op, &unique("bad_issue"));
    let p = partner.to_string();
    let post = |body: &str| op.post_raw("/v1/keys", Some("application/json"), body);
    // A valid body with one field set to `value`.
    let with = |field: &str, value: Value| {
        let mut body = json!({ "partner_id": p, "scopes": ["orders:read"] });
        body[field] = value;
        post(&body.to_string())
    };
    let mut bad = Mismatches::default();

    bad.check(
        "malformed JSON",
        &post("{\"partner_id\": "),
        400,
        "bad_request",
    );
    bad.check("not JSON at all", &post("partner_id=x"), 400, "bad_request");
    bad.check_invalid(
        "missing partner_id",
        &post(&json!({ "scopes": ["a:b"] }).to_string()),
        "partner_id",
    );
    bad.check_invalid(
        "missing scopes",
        &post(&json!({ "partner_id": p }).to_string()),
        "scopes",
    );
    for (case, field, value) in [
        ("partner_id null", "partner_id", json!(null)),
        ("partner_id a number", "partner_id", json!(42)),
        ("partner_id not a UUID", "partner_id", json!("not-a-uuid")),
        ("scopes null", "scopes", json!(null)),
        ("scopes a string", "scopes", json!("orders:read")),
        ("a scope null", "scopes", json!([null])),
        ("a scope a number", "scopes", json!([1])),
        ("rate_per_minute a string", "rate_per_minute", json!("fast")),
        ("rate_per_minute fractional", "rate_per_minute", json!(1.5)),
        (
            "rate_per_minute over i32",
            "rate_per_minute",
            json!(1u64 << 40),
        ),
        ("expires_at not a time", "expires_at", json!("tomorrow")),
        ("expires_at a number", "expires_at", json!(1700000000)),
        ("tags a string", "tags", json!("blue")),
        (
            "allowed_cidrs a string",
            "allowed_cidrs",
            json!("10.0.0.0/8"),
        ),
        ("name a number", "name", json!(7)),
        ("environment a bool", "environment", json!(true)),
    ] {
        bad.check_invalid(case, &with(field, value), field);
    }
    bad.check_invalid("unknown field", &with("colour", json!("red")), "colour");

    // Checked by the database; the field comes from its message.
    for (case, field, value) in [
        ("scope with a space", "scopes", json!(["orders read"])),
        ("scope with an empty part", "scopes", json!(["orders:"])),
        ("rate_per_minute 0", "rate_per_minute", json!(0)),
        ("rate_per_minute negative", "rate_per_minute", json!(-5)),
        ("expires_at in the past", "expires_at", json!(past)),
        ("environment prod", "environment", json!("prod")),
        ("cidr with a /33", "allowed_cidrs", json!(["10.0.0.0/33"])),
        (
            "cidr not an address",
            "allowed_cidrs",
            json!(["not-a-cidr"]),
        ),
        (
            "cidr with host bits",
            "allowed_cidrs",
            json!(["10.0.0.1/8"]),
        ),
        ("no cidrs", "allowed_cidrs", json!([])),
        ("tag with a space", "tags", json!(["bad tag"])),
        ("metadata not an object", "metadata", json!([1])),
        ("prefix with a dash", "prefix", json!("BAD-")),
        ("blank name", "name", json!(" ")),
        (
            "name of 10 000 characters",
            "name",
            json!("x".repeat(10_000)),
        ),
        (
            "name with a control character",
            "name",
            json!("a\u{1b}[31m"),
        ),
        ("name with a NUL", "name", json!("a\u{0}b")),
    ] {
        bad.check_invalid(case, &with(field, value), field);
    }
    let mut inverted = json!({ "partner_id": p, "scopes": ["a:b"] });
    inverted["not_before"] = json!(later);
    inverted["expires_at"] = json!(soon);
    bad.check_invalid(
        "not_before after expires_at",
        &post(&inverted.to_string()),
        "not_before",
    );
    bad.check(
        "unknown partner",
        &with("partner_id", json!("00000000-0000-4000-8000-000000000000")),
        404,
        "not_found",
    );
    bad.assert_none();

    let keys = list(&op, &format!("/v1/keys?partner_id={partner}"));
    assert!(keys.is_empty(), "a refused issue left a key: {keys:?}");
}

#[test]
fn rotate_and_revoke_reject_bad_input_with_the_field_named() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("bad_rotate"));
    let key = issue_http(&op, issue_body(partner, &["orders:read"]));
    let rotate = format!("/v1/keys/{}/rotate", key.key_id);
    let revoke = format!("/v1/keys/{}/revoke", key.key_id);
    let post = |path: &str, body: &str| op.post_raw(path, Some("application/json"), body);
    let mut bad = Mismatches::default();

    bad.check("rotate: malformed", &post(&rotate, "{"), 400, "bad_request");
    bad.check(
        "revoke: malformed",
        &post(&revoke, "{\"reason\""),
        400,
        "bad_request",
    );
    for (case, body, field) in [
        (
            "grace_seconds a string",
            json!({ "grace_seconds": "x" }),
            "grace_seconds",
        ),
        (
            "grace_seconds fractional",
            json!({ "grace_seconds": 1.5 }),
            "grace_seconds",
        ),
        (
            "grace_seconds negative",
            json!({ "grace_seconds": -1 }),
            "grace_seconds",
        ),
        (
            "grace_seconds over a year",
            json!({ "grace_seconds": 1u64 << 40 }),
            "grace_seconds",
        ),
        ("scopes a string", json!({ "scopes": "a:b" }), "scopes"),
        (
            "a scope invalid",
            json!({ "scopes": ["bad scope"] }),
            "scopes",
        ),
        ("unknown field", json!({ "grace": 5 }), "grace"),
    ] {
        bad.check_invalid(
            &format!("rotate: {case}"),
            &post(&rotate, &body.to_string()),
            field,
        );
    }
    for (case, body, field) in [
        ("reason a number", json!({ "reason": 5 }), "reason"),
        (
            "reason of 600 characters",
            json!({ "reason": "r".repeat(600) }),
            "reason",
        ),
        (
            "unknown field",
            json!({ "reason": "x", "extra": 1 }),
            "extra",
        ),
    ] {
        bad.check_invalid(
            &format!("revoke: {case}"),
            &post(&revoke, &body.to_string()),
            field,
        );
    }
    bad.assert_none();

    let after = show(&op, &key.key_id);
    assert_eq!(
        after["status"], "live",
        "refused requests changed the key: {after}"
    );
    assert!(after["rotated_to"].is_null(), "{after}");
}

#[test]
fn json_routes_need_a_json_content_type() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("ctype"));
    let issue = issue_body(partner, &["orders:read"]).to_string();
    let create = json!({ "name": unique("ctype_partner") }).to_string();
    for (path, body) in [("/v1/keys", &issue), ("/v1/partners", &create)] {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let response = op.post_raw(path, content_type, body);
            if let Some(m) = error_mismatch(&response, 415, "unsupported_media_type", None) {
                panic!("POST {path} with Content-Type {content_type:?}: {m}");
            }
        }
    }
    assert!(list(&op, &format!("/v1/keys?partner_id={partner}")).is_empty());
}

/// Rotate and revoke take an optional body; when one is sent, it must be declared JSON like
/// every other body route.
#[test]
fn optional_bodies_with_a_non_json_content_type_get_415() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("ctype_optional"));
    let mut bad = Mismatches::default();
    for (action, body) in [
        ("rotate", r#"{"grace_seconds": 60}"#),
        ("revoke", r#"{"reason": "x"}"#),
    ] {
        for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
            let key = issue_http(&op, issue_body(partner, &["orders:read"]));
            let response = op.post_raw(
                &format!("/v1/keys/{}/{action}", key.key_id),
                Some(content_type),
                body,
            );
            bad.check(
                &format!("{action} with {content_type}"),
                &response,
                415,
                "unsupported_media_type",
            );
        }
    }
    bad.assert_none();
}

#[test]
fn bodies_over_64_kib_get_a_413_json_error() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("huge"));
    let key = issue_http(&op, issue_body(partner, &["orders:read"]));
    let megabyte = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024));
    let mut bad = Mismatches::default();
    for path in [
        "/v1/keys".to_string(),
        "/v1/partners".to_string(),
        format!("/v1/keys/{}/rotate", key.key_id),
        format!("/v1/keys/{}/revoke", key.key_id),
    ] {
        for framing in [Framing::ContentLength, Framing::Chunked] {
            let response = post_large(
                &env.shim,
                &env.operator.token,
                &path,
                megabyte.as_bytes(),
                framing,
            );
            bad.check(
                &format!("POST {path} ({framing:?})"),
                &response,
                413,
                "payload_too_large",
            );
        }
    }
    bad.assert_none();
    assert_eq!(show(&op, &key.key_id)["status"], "live");
    let keys = list(&op, &format!("/v1/keys?partner_id={partner}"));
    assert_eq!(keys.len(), 1, "nothing issued or rotated: {keys:?}");
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    ContentLength,
    Chunked,
}

/// POSTs a JSON `body` over a raw connection and reads the answer while the body is still
/// being written: a server may answer 413 before reading a large body, and a client that
/// reads only after writing everything (ureq) sees a broken pipe instead of the answer.
fn post_large(shim: &Shim, token: &str, path: &str, body: &[u8], framing: Framing) -> Response {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};

    let mut stream = TcpStream::connect(("127.0.0.1", shim.port)).expect("connect to the shim");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("set a read timeout");
    let framing_header = match framing {
        Framing::ContentLength => format!("Content-Length: {}", body.len()),
        Framing::Chunked => "Transfer-Encoding: chunked".to_string(),
    };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {token}\r\n\
         Content-Type: application/json\r\n{framing_header}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    match framing {
        Framing::ContentLength => request.extend_from_slice(body),
        Framing::Chunked => {
            request.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
            request.extend_from_slice(body);
            request.extend_from_slice(b"\r\n0\r\n\r\n");
        }
    }
    let mut writer = stream
        .try_clone()
        .expect("a second handle on the connection");
    let raw = std::thread::scope(|s| {
        // A write error only means the server stopped reading, which is what a 413 may do.
        s.spawn(move || writer.write_all(&request).is_ok());
        let mut raw = Vec::new();
        // Bytes read before a connection reset stay in `raw`.
        let _ = stream.read_to_end(&mut raw);
        let _ = stream.shutdown(Shutdown::Both);
        raw
    });
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete HTTP answer: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn list_parameters_are_validated() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("params"));
    for _ in 0..2 {
        issue_http(&op, issue_body(partner, &["orders:read"]));
    }
    let keys_page = op.get(&format!("/v1/keys?partner_id={partner}&limit=1"));
    let keys_cursor = expect_json(&keys_page, 200, "first page")["next_cursor"]
        .as_str()
        .expect("a second page exists")
        .to_string();
    let mut bad = Mismatches::default();

    for route in ["/v1/keys", "/v1/partners", "/v1/audit"] {
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=1000", "limit"),
            ("limit=-1", "limit"),
            ("cursor=not-a-cursor", "cursor"),
            ("cursor=%21%21", "cursor"),
            // base64url of JSON that is not a position.
            ("cursor=eyJ4IjoxfQ", "cursor"),
        ] {
            let path = format!("{route}?{query}");
            bad.check_invalid(&path, &op.get(&path), field);
        }
    }
    for status in ["dead", "LIVE", ""] {
        let path = format!("/v1/keys?status={status}");
        bad.check_invalid(&path, &op.get(&path), "status");
    }
    // A cursor of one list is not a cursor of another.
    for route in ["/v1/audit", "/v1/partners"] {
        let path = format!("{route}?cursor={keys_cursor}");
        bad.check_invalid(&path, &op.get(&path), "cursor");
    }

    // Values that do not parse as their type: 400, with the parameter named in the message.
    for (path, parameter) in [
        ("/v1/keys?partner_id=not-a-uuid", "partner_id"),
        ("/v1/keys?limit=abc", "limit"),
        ("/v1/partners?active=maybe", "active"),
        ("/v1/audit?from=yesterday", "from"),
        ("/v1/audit?to=2026-13-01T00:00:00Z", "to"),
        ("/v1/audit?partner_id=42", "partner_id"),
    ] {
        let response = op.get(path);
        match error_mismatch(&response, 400, "bad_request", None) {
            Some(m) => bad.0.push(format!("{path}: {m}")),
            None => {
                let message = response.json()["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if !message.contains(parameter) {
                    bad.0.push(format!(
                        "{path}: message does not name {parameter}: {message}"
                    ));
                }
            }
        }
    }
    // Unknown parameters are refused, naming them.
    for path in [
        "/v1/keys?colour=red",
        "/v1/audit?keyid=x",
        "/v1/partners?name=x",
    ] {
        let response = op.get(path);
        let field = path
            .split_once('?')
            .and_then(|(_, q)| q.split_once('='))
            .map(|(f, _)| f);
        if let Some(m) = error_mismatch(&response, 400, "bad_request", field) {
            bad.0.push(format!("{path}: {m}"));
        }
    }
    bad.assert_none();
}

#[test]
fn management_answers_carry_the_callers_rate_limit() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("rl"));
    let slow = issue_http(
        &op,
        json!({ "partner_id": partner.to_string(), "scopes": ["admin:*"], "rate_per_minute": 5 }),
    );
    let caller = env.as_key(&slow.token);
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let response = caller.get("/v1/partners?limit=1");
        expect_json(&response, 200, "within the allowance");
        assert_eq!(
            response.rate("ratelimit-policy", "q"),
            Some(5),
            "the key's rate"
        );
        remaining.push(
            response
                .rate("ratelimit", "r")
                .expect("a numeric remaining count in RateLimit"),
        );
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0], "each request takes one");
    let refused = caller.get("/v1/partners?limit=1");
    expect_error(&refused, 429, "rate_limited");
    assert!(
        refused.header("retry-after").is_some(),
        "429 without Retry-After"
    );
    // Another key is not affected.
    expect_json(&op.get("/v1/partners?limit=1"), 200, "the operator key");
}

/// A client that made a valid, rate-counted request learns its remaining allowance even
/// when the request then fails.
#[test]
fn verified_management_errors_carry_rate_limit_headers() {
    let env = Env::start();
    let op = env.op();
    let partner = create_partner_http(&op, &unique("rl_errors"));
    let key = issue_http(&op, issue_body(partner, &["orders:read"]));
    expect_json(
        &op.post_empty(&format!("/v1/keys/{}/revoke", key.key_id)),
        200,
        "revoke",
    );
    let duplicate = unique("rl_dup");
    create_partner_http(&op, &duplicate);
    let mut missing = Vec::new();
    for (what, response) in [
        (
            "404 unknown key",
            op.get("/v1/keys/ak_live_AAAAAAAAAAAAAAAA"),
        ),
        (
            "409 rotate a revoked key",
            op.post(&format!("/v1/keys/{}/rotate", key.key_id), &json!({})),
        ),
        (
            "409 duplicate partner",
            op.post("/v1/partners", &json!({ "name": duplicate })),
        ),
        (
            "422 from the database",
            op.post(
                "/v1/keys",
                &json!({ "partner_id": partner.to_string(), "scopes": ["bad scope"] }),
            ),
        ),
    ] {
        if RATE_LIMIT_HEADERS
            .iter()
            .any(|h| response.header(h).is_none())
        {
            missing.push(format!(
                "{what}: {} {} headers {:?}",
                response.status, response.body, response.headers
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "verified requests answered without RateLimit-Policy and RateLimit:\n{}",
        missing.join("\n")
    );
}
