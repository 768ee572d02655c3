//! End-to-end tests of `GET /v1/verify` and the service routes (`/healthz`, `/metrics`,
//! `/openapi.json`) of the real `apikey-shim` binary, speaking HTTP to it while the test
//! arranges key states in SQL.
//!
//! Every test holds the read side of `DATABASE` for its whole run; the database restart test
//! holds the write side, so no other test of this binary runs while the cluster is down.

use apikey_tests::postgres::Client;
use apikey_tests::shim::{send, Response, Shim};
use apikey_tests::*;
use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

static DATABASE: RwLock<()> = RwLock::new(());

/// Taken by every test that needs the database up.
fn database_up() -> RwLockReadGuard<'static, ()> {
    DATABASE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Taken by the test that stops the database.
fn database_exclusive() -> RwLockWriteGuard<'static, ()> {
    DATABASE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn setup() -> (Client, Uuid) {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    (c, partner)
}

/// GET with extra request headers.
fn get_with(shim: &Shim, path: &str, headers: &[(&str, &str)]) -> Response {
    let request = headers
        .iter()
        .fold(shim.request("GET", path), |r, (name, value)| {
            r.set(name, value)
        });
    send(request, None)
}

fn assert_ok(response: &Response, key: &Issued) {
    assert_eq!(response.status, 200, "body: {}", response.body);
    assert_eq!(
        response.header("x-apikey-key-id"),
        Some(key.key_id.as_str()),
        "the verified key's id"
    );
}

/// A refusal: exact status, JSON `{"error", "reason"}`, and a challenge naming the reason
/// on 401.
fn assert_refused(response: &Response, status: u16, reason: &str) {
    assert_eq!(
        (response.status, response.reason().as_str()),
        (status, reason),
        "body: {}",
        response.body
    );
    let body = response.json();
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "an error message: {body}"
    );
    let challenge = response.header("www-authenticate");
    if status == 401 {
        let challenge = challenge.expect("a 401 carries WWW-Authenticate");
        assert!(
            challenge.starts_with("ApiKey ") && challenge.contains(&format!("error=\"{reason}\"")),
            "challenge names the scheme and the reason {reason}: {challenge}"
        );
    } else {
        assert_eq!(challenge, None, "only a 401 challenges");
    }
}

fn header_u64(response: &Response, name: &str) -> u64 {
    response
        .header(name)
        .unwrap_or_else(|| panic!("{name} is missing; headers {:?}", response.headers))
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not a number: {e}"))
}

/// A parameter of a rate-limit field, e.g. `r` of `RateLimit`.
fn rate(response: &Response, field: &str, parameter: &str) -> i64 {
    response
        .rate(field, parameter)
        .unwrap_or_else(|| panic!("{field} has no {parameter}; headers {:?}", response.headers))
}

/// A token whose checksum no longer matches (its last character changed).
fn with_bad_checksum(token: &str) -> String {
    let last = token.chars().last().expect("a non-empty token");
    let replacement = if last == 'A' { 'B' } else { 'A' };
    format!("{}{replacement}", &token[..token.len() - 1])
}

/// For each of `needles` (what, text) found in the log (ignoring ASCII case), a report
/// quoting the first line that holds it; empty when none occurs.
fn leaks(log: &str, needles: &[(String, String)]) -> Vec<String> {
    needles
        .iter()
        .filter_map(|(what, text)| {
            let text = text.to_ascii_lowercase();
            let line = log
                .lines()
                .find(|l| l.to_ascii_lowercase().contains(&text))?;
            Some(format!("{what} is logged: {}", without_colours(line)))
        })
        .collect()
}

/// The line without ANSI colour sequences (ESC [ ... m).
fn without_colours(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// `client_ip` of the key's failed verifications, oldest first.
fn failed_verify_ips(c: &mut Client, key_id: &str) -> Vec<String> {
    c.query(
        "SELECT host(client_ip) FROM apikey.audit_log \
         WHERE action = 'verify_failed' AND key_id = $1 ORDER BY id",
        &[&key_id],
    )
    .expect("read the audit log")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

// ---------------------------------------------------------------------------------------
// Reasons and statuses

#[test]
fn ok_carries_identity_and_rate_limit_headers() {
    let _db = database_up();
    let shim = Shim::start();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read", "invoices:read"]);

    let r = shim.get_as(&key.token, "/v1/verify?scope=orders:read");
    assert_ok(&r, &key);
    assert_eq!(
        r.header("x-apikey-partner"),
        Some(partner.to_string().as_str())
    );
    let mut scopes: Vec<&str> = r
        .header("x-apikey-scopes")
        .expect("X-Apikey-Scopes")
        .split(',')
        .collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["invoices:read", "orders:read"]);
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"key\";q=300;w=60"),
        "the default rate"
    );
    assert_eq!(rate(&r, "ratelimit", "r"), 299);
    let reset = rate(&r, "ratelimit", "t");
    assert!(
        (1..=60).contains(&reset),
        "reset within the minute: {reset}"
    );
    assert_eq!(r.header("retry-after"), None, "only a 429 asks to retry");
    let body = r.json();
    assert_eq!(body["valid"], true);
    assert_eq!(body["reason"], "ok");
    assert_eq!(body["key_id"], key.key_id.as_str());
}

#[test]
fn every_unauthenticated_reason_is_a_401_with_a_challenge() {
    let _db = database_up();
    let shim = Shim::start();
    let (mut c, partner) = setup();

    let unknown = issue(&mut c, partner, &["a:b"]);
    c.execute(
        "DELETE FROM apikey.keys WHERE key_id = $1",
        &[&unknown.key_id],
    )
    .expect("delete the key row");

    let mismatched = issue(&mut c, partner, &["a:b"]);
    let other = issue(&mut c, partner, &["a:b"]);
    c.execute(
        "UPDATE apikey.keys k SET secret_hash = o.secret_hash, \
                pepper_fingerprint = o.pepper_fingerprint \
         FROM apikey.keys o WHERE k.key_id = $1 AND o.key_id = $2",
        &[&mismatched.key_id, &other.key_id],
    )
    .expect("give the key another key's hash");

    let revoked = issue(&mut c, partner, &["a:b"]);
    c.execute("SELECT apikey_revoke($1)", &[&revoked.key_id])
        .expect("revoke");

    let disabled = issue(&mut c, partner, &["a:b"]);
    c.execute("SELECT apikey_set_enabled($1, false)", &[&disabled.key_id])
        .expect("disable");

    let expired = issue(&mut c, partner, &["a:b"]);
    c.execute(
        "UPDATE apikey.keys SET expires_at = now() - interval '1 minute' WHERE key_id = $1",
        &[&expired.key_id],
    )
    .expect("expire");

    let early = issue_with(
        &mut c,
        "$1, '{a:b}', not_before => now() + interval '1 hour'",
        &[&partner],
    );

    let inactive_partner = create_partner(&mut c);
    let inactive = issue(&mut c, inactive_partner, &["a:b"]);
    c.execute(
        "SELECT apikey_partner_set_active($1, false)",
        &[&inactive_partner],
    )
    .expect("deactivate the partner");

    let missing = shim.get("/v1/verify");
    assert_refused(&missing, 401, "missing_key");

    let malformed = with_bad_checksum(&other.token);
    let cases: [(&str, &str); 9] = [
        ("malformed", &malformed),
        ("malformed", "ak_live_not_a_token"),
        ("unknown_key", &unknown.token),
        ("secret_mismatch", &mismatched.token),
        ("revoked", &revoked.token),
        ("disabled", &disabled.token),
        ("expired", &expired.token),
        ("not_yet_valid", &early.token),
        ("partner_inactive", &inactive.token),
    ];
    for (reason, token) in cases {
        let r = shim.get_as(token, "/v1/verify");
        assert_refused(&r, 401, reason);
        assert_eq!(r.header("x-apikey-key-id"), None, "{reason}: no identity");
    }
    // The key whose hash was borrowed still works: the failures above changed nothing else.
    assert_ok(&shim.get_as(&other.token, "/v1/verify"), &other);
}

#[test]
fn scope_and_address_refusals_are_403() {
    let _db = database_up();
    let shim = Shim::start();
    let (mut c, partner) = setup();
    let reader = issue(&mut c, partner, &["orders:read"]);
    let fenced = issue_with(
        &mut c,
        "$1, '{orders:read}', allowed_cidrs => '{10.0.0.0/8}'",
        &[&partner],
    );

    assert_refused(
        &shim.get_as(&reader.token, "/v1/verify?scope=orders:write"),
        403,
        "insufficient_scope",
    );
    assert_refused(
        &shim.get_as(&fenced.token, "/v1/verify"),
        403,
        "ip_not_allowed",
    );
    assert_eq!(
        failed_verify_ips(&mut c, &fenced.key_id),
        ["127.0.0.1"],
        "the refusal is audited with the TCP peer's address"
    );
}

#[test]
fn a_revoked_key_is_refused_on_the_very_next_request() {
    let _db = database_up();
    let shim = Shim::start();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    assert_ok(&shim.get_as(&key.token, "/v1/verify"), &key);
    assert_ok(&shim.get_as(&key.token, "/v1/verify"), &key);
    c.execute("SELECT apikey_revoke($1, 'leaked')", &[&key.key_id])
        .expect("revoke");
    assert_refused(&shim.get_as(&key.token, "/v1/verify"), 401, "revoked");
}

// ---------------------------------------------------------------------------------------
// Where the key comes from

/// Envoy's ext_authz check: the original method on `/v1/verify` plus the original path.
fn envoy_check(shim: &Shim, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let request = headers
        .iter()
        .fold(shim.request(method, path), |r, (name, value)| {
            r.set(name, value)
        });
    send(request, None)
}

#[test]
fn the_envoy_form_checks_any_method_under_the_verify_prefix() {
    let _db = database_up();
    let shim = Shim::start();
    let (mut c, partner) = setup();
    let reader = issue(&mut c, partner, &["orders:read"]);
    let writer = issue(
        &mut c,
        partner,
        &["orders:read", "orders:write", "orders:delete"],
    );

    for (method, path) in [
        ("GET", "/v1/verify/orders"),
        ("GET", "/v1/verify/orders/7?expand=lines"),
        ("POST", "/v1/verify/orders/7/lines"),
        ("DELETE", "/v1/verify/orders/7"),
        ("PUT", "/v1/verify/a/b/c/d"),
        ("OPTIONS", "/v1/verify/orders"),
    ] {
        let required = if method == "GET" || method == "OPTIONS" {
            "orders:read"
        } else {
            "orders:write"
        };
        let headers = [
            ("x-api-key", writer.token.as_str()),
            ("x-required-scopes", required),
        ];
        let r = envoy_check(&shim, method, path, &headers);
        assert_ok(&r, &writer);
        assert_eq!(
            r.header("x-apikey-partner"),
            Some(partner.to_string().as_str()),
            "{method} {path}"
        );
        let r = envoy_check(
            &shim,
            method,
            path,
            &[
                ("x-api-key", reader.token.as_str()),
                ("x-required-scopes", "orders:write"),
            ],
        );
        assert_refused(&r, 403, "insufficient_scope");
        let r = envoy_check(&shim, method, path, &[("x-required-scopes", required)]);
        assert_refused(&r, 401, "missing_key");
    }

    // A client's own query string reaches the check too, and can only add requirements.
    let r = envoy_check(
        &shim,
        "GET",
        "/v1/verify/orders?scope=admin:all",
        &[("x-api-key", writer.token.as_str())],
    );
    assert_refused(&r, 403, "insufficient_scope");

    // The method Envoy forwards in X-Envoy-Original-Method derives the scope of resource=.
    let delete_as = |key: &Issued| {
        let bearer = format!("Bearer {}", key.token);
        let headers = [
            ("authorization", bearer.as_str()),
            ("x-envoy-original-method", "DELETE"),
        ];
        envoy_check(
            &shim,
            "DELETE",
            "/v1/verify/orders/7?resource=orders",
            &headers,
        )
    };
    assert_refused(&delete_as(&reader), 403, "insufficient_scope");
    assert_ok(&delete_as(&writer), &writer);

    // HEAD answers like GET, without a body.
    let r = envoy_check(
        &shim,
        "HEAD",
        "/v1/verify/orders/7",
        &[("x-api-key", reader.token.as_str())],
    );
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(r.header("x-apikey-key-id"), Some(reader.key_id.as_str()));

    // Only the verify prefix is the check: a sibling path is not.
    let r = envoy_check(
        &shim,
        "GET",
        "/v1/verifyorders",
        &[("x-api-key", reader.token.as_str())],
    );
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn keys_are_read_from_x_api_key_and_authorization() {
    let _db = database_up();
    let shim = Shim::start();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    let other = issue(&mut c, partner, &["orders:read"]);
    let api_key = format!("ApiKey {}", key.token);
    let bearer = format!("Bearer {}", key.token);
    let lower_bearer = format!("bearer {}", key.token);

    for headers in [
        vec![("X-API-Key", key.token.as_str())],
        vec![("Authorization", api_key.as_str())],
        vec![("Authorization", bearer.as_str())],
        vec![("Authorization", lower_bearer.as_str())],
        // The same key twice is one key.
        vec![
            ("X-API-Key", key.token.as_str()),
            ("Authorization", &bearer),
        ],
    ] {
        assert_ok(&get_with(&shim, "/v1/verify", &headers), &key);
    }

    let two_keys = get_with(
        &shim,
        "/v1/verify",
        &[
            ("X-API-Key", key.token.as_str()),
            ("Authorization", &format!("ApiKey {}", other.token)),
        ],
    );
    assert_refused(&two_keys, 400, "bad_request");

    // Another scheme is not a key: nothing was presented.
    let basic = get_with(
        &shim,
        "/v1/verify",
        &[("Authorization", "Basic dXNlcjpwYXNzd29yZA==")],
    );
    assert_refused(&basic, 401, "missing_key");
}

#[test]
fn the_api_key_query_parameter_is_refused_unless_enabled() {
    let _db = database_up();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    let other = issue(&mut c, partner, &["orders:read"]);
    let in_query = format!("/v1/verify?scope=orders:read&api_key={}", key.token);

    let mut strict = Shim::start();
    assert_refused(&strict.get(&in_query), 400, "bad_request");
    // Refused even when a header carries the same key: the URL already leaked it.
    assert_refused(&strict.get_as(&key.token, &in_query), 400, "bad_request");

    let mut lenient = Shim::start_with(&[("APIKEY_SHIM_ALLOW_QUERY_KEY", "true")]);
    assert_ok(&lenient.get(&in_query), &key);
    assert_ok(&lenient.get_as(&key.token, &in_query), &key);
    assert_refused(&lenient.get_as(&other.token, &in_query), 400, "bad_request");
    let wrong = format!("/v1/verify?api_key={}", with_bad_checksum(&key.token));
    assert_refused(&lenient.get(&wrong), 401, "malformed");

    assert!(strict.terminate(), "strict shim exits cleanly");
    assert!(lenient.terminate(), "lenient shim exits cleanly");
    let needles = [
        ("the token".to_string(), key.token.clone()),
        ("the secret".to_string(), key.secret().to_string()),
        ("the query".to_string(), "api_key=".to_string()),
    ];
    for (name, shim) in [("strict", &strict), ("lenient", &lenient)] {
        let found = leaks(&shim.log(), &needles);
        assert!(found.is_empty(), "{name} shim: {found:#?}");
    }
    assert!(
        lenient.log().contains(&key.key_id),
        "the lenient shim logs the verified key's id"
    );
}

// ---------------------------------------------------------------------------------------
// Required scopes

/// Query string, extra headers, expected status.
type ScopeCase<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);

#[test]
fn required_scopes_come_from_parameters_headers_and_the_original_method() {
    let _db = database_up();
    let shim = Shim::start();
    let (mut c, partner) = setup();
    let key = issue(
        &mut c,
        partner,
        &["orders:read", "orders:write", "invoices:read"],
    );
    let deleter = issue(&mut c, partner, &["orders:delete"]);
    let t = key.token.as_str();

    // (query, headers, expected status): every source adds to one all-of list.
    let cases: &[ScopeCase] = &[
        ("?scope=orders:read&scope=invoices:read", &[], 200),
        ("?scope=orders:read&scope=invoices:write", &[], 403),
        ("?scope=orders:read,invoices:read", &[], 200),
        ("?scope=orders:read%2Cinvoices:write", &[], 403),
        (
            "",
            &[("X-Required-Scopes", "orders:read, invoices:read")],
            200,
        ),
        (
            "",
            &[("X-Required-Scopes", "orders:read, invoices:write")],
            403,
        ),
        (
            "?scope=orders:read",
            &[("X-Required-Scopes", "invoices:write")],
            403,
        ),
        ("?resource=orders", &[("X-Forwarded-Method", "DELETE")], 403),
        ("?resource=orders", &[("X-Forwarded-Method", "get")], 200),
        ("?resource=orders", &[("X-Original-Method", "DELETE")], 403),
        ("?resource=orders", &[("X-Original-Method", "PATCH")], 200),
        ("?resource=invoices", &[("X-Original-Method", "POST")], 403),
    ];
    for (query, headers, status) in cases {
        let mut headers = headers.to_vec();
        headers.push(("X-API-Key", t));
        let r = get_with(&shim, &format!("/v1/verify{query}"), &headers);
        if *status == 200 {
            assert_ok(&r, &key);
        } else {
            assert_refused(&r, 403, "insufficient_scope");
        }
    }
    // What was required, as the database recorded the first refusal: one audit row per key,
    // reason and minute, however many refusals follow.
    let required: Vec<serde_json::Value> = c
        .query(
            "SELECT detail->'required_scopes' FROM apikey.audit_log \
             WHERE key_id = $1 AND reason = 'insufficient_scope' ORDER BY id",
            &[&key.key_id],
        )
        .expect("read the audit log")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<serde_json::Value> =
        [serde_json::json!(["orders:read", "invoices:write"])].into();
    assert_eq!(required, expected);

    let delete = get_with(
        &shim,
        "/v1/verify?resource=orders",
        &[
            ("X-API-Key", &deleter.token),
            ("X-Forwarded-Method", "DELETE"),
        ],
    );
    assert_ok(&delete, &deleter);

    let no_method = shim.get_as(t, "/v1/verify?resource=orders");
    assert_refused(&no_method, 400, "bad_request");
    assert_eq!(no_method.json()["field"], "resource");
    let odd_method = get_with(
        &shim,
        "/v1/verify?resource=orders",
        &[("X-API-Key", t), ("X-Forwarded-Method", "BREW")],
    );
    assert_refused(&odd_method, 400, "bad_request");
}

// ---------------------------------------------------------------------------------------
// Client address

#[test]
fn x_forwarded_for_counts_only_from_trusted_proxies() {
    let _db = database_up();
    let (mut c, partner) = setup();
    // One key per refusal: a key's failures of one reason are audited once a minute.
    let fenced = |c: &mut Client| {
        issue_with(
            c,
            "$1, '{orders:read}', allowed_cidrs => '{203.0.113.0/24}'",
            &[&partner],
        )
    };
    let keys = [fenced(&mut c), fenced(&mut c), fenced(&mut c)];
    let key = &keys[0];
    let via_as = |shim: &Shim, key: &Issued, xff: &str| {
        get_with(
            shim,
            "/v1/verify",
            &[("X-API-Key", &key.token), ("X-Forwarded-For", xff)],
        )
    };
    let via = |shim: &Shim, xff: &str| via_as(shim, key, xff);

    let direct = Shim::start();
    assert_refused(&via(&direct, "203.0.113.5"), 403, "ip_not_allowed");

    let proxied = Shim::start_with(&[("APIKEY_SHIM_TRUSTED_PROXIES", "127.0.0.1/32")]);
    assert_ok(&via(&proxied, "203.0.113.5"), key);
    // Trusted hops on the right are skipped.
    assert_ok(&via(&proxied, "203.0.113.5, 127.0.0.1"), key);
    // A client cannot spoof by prepending: the nearest untrusted hop is the client.
    assert_refused(
        &via_as(&proxied, &keys[1], "203.0.113.5, 198.51.100.7"),
        403,
        "ip_not_allowed",
    );
    // No header: the trusted proxy itself is the client.
    assert_refused(
        &proxied.get_as(&keys[2].token, "/v1/verify"),
        403,
        "ip_not_allowed",
    );

    let audited: Vec<Vec<String>> = keys
        .iter()
        .map(|k| failed_verify_ips(&mut c, &k.key_id))
        .collect();
    assert_eq!(
        audited,
        [vec!["127.0.0.1"], vec!["198.51.100.7"], vec!["127.0.0.1"]],
        "each refusal is audited with the address the shim derived"
    );
}

// ---------------------------------------------------------------------------------------
// Rate limiting

#[test]
fn the_rate_limit_counts_only_accepted_requests() {
    let _db = database_up();
    let shim = Shim::start_with(&[("APIKEY_SHIM_TRUSTED_PROXIES", "127.0.0.1/32")]);
    let (mut c, partner) = setup();
    let key = issue_with(
        &mut c,
        "$1, '{orders:read}', rate_per_minute => 3, allowed_cidrs => '{203.0.113.0/24}'",
        &[&partner],
    );
    let request = |path: &str, client: &str| {
        get_with(
            &shim,
            path,
            &[("X-API-Key", &key.token), ("X-Forwarded-For", client)],
        )
    };

    // Refusals by the database use up nothing.
    for _ in 0..5 {
        assert_refused(
            &request("/v1/verify?scope=orders:write", "203.0.113.5"),
            403,
            "insufficient_scope",
        );
        assert_refused(
            &request("/v1/verify", "198.51.100.1"),
            403,
            "ip_not_allowed",
        );
    }

    let mut resets = Vec::new();
    for remaining in [2, 1, 0] {
        let r = request("/v1/verify", "203.0.113.5");
        assert_ok(&r, &key);
        assert_eq!(rate(&r, "ratelimit-policy", "q"), 3);
        assert_eq!(rate(&r, "ratelimit", "r"), remaining);
        resets.push(rate(&r, "ratelimit", "t"));
    }
    assert_eq!(resets[0], 20, "one request refills in 20 s at 3/min");
    assert!(
        resets.windows(2).all(|w| w[0] < w[1]) && resets[2] <= 60,
        "the bucket empties: resets {resets:?}"
    );

    let limited = request("/v1/verify", "203.0.113.5");
    assert_refused(&limited, 429, "rate_limited");
    let retry = header_u64(&limited, "retry-after");
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(rate(&limited, "ratelimit-policy", "q"), 3);
    assert_eq!(rate(&limited, "ratelimit", "r"), 0);
    assert_eq!(rate(&limited, "ratelimit", "t"), retry as i64);
    assert_eq!(limited.header("x-apikey-key-id"), None);
}

// ---------------------------------------------------------------------------------------
// Bad input

#[test]
fn oversized_and_invalid_input_is_a_client_error() {
    let _db = database_up();
    let shim = Shim::start();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    let megabyte = "a".repeat(1 << 20);

    let huge_header = shim.raw(
        format!(
            "GET /v1/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: {megabyte}\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(
        [400, 431].contains(&huge_header.status),
        "1 MB header: {} {}",
        huge_header.status,
        huge_header.body
    );

    let huge_body = post_raw(&shim, "/v1/keys", &key.token, &megabyte_json());
    assert_eq!(huge_body.status, 413, "1 MB body: {}", huge_body.body);

    let with_header = |line: &[u8]| {
        let mut request = b"GET /v1/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n\r\n");
        shim.raw(&request)
    };
    let invalid: [&[u8]; 3] = [
        "X-API-Key: ключ_live_секрет".as_bytes(),
        b"Authorization: ApiKey \xff\xfe\xfd",
        b"X-API-Key: ak_live_\x01",
    ];
    for line in invalid {
        let r = with_header(line);
        assert_eq!(
            r.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(line),
            r.body
        );
    }
    let mut scopes = format!("X-API-Key: {}\r\n", key.token).into_bytes();
    scopes.extend_from_slice(b"X-Required-Scopes: orders:r\xe9ad");
    let r = with_header(&scopes);
    assert_refused(&r, 400, "bad_request");
    let r = with_header("X-API-Key: ключ".as_bytes());
    assert_refused(&r, 400, "bad_request");

    let unknown = shim.get("/v1/no-such-route");
    assert_refused(&unknown, 404, "not_found");
    // verify is GET only; the refusal has the same JSON shape as every other error.
    let wrong_method = send(shim.request("DELETE", "/v1/verify"), None);
    assert_refused(&wrong_method, 405, "method_not_allowed");

    // Still serving.
    assert_eq!(shim.get("/healthz").status, 200);
    assert_ok(&shim.get_as(&key.token, "/v1/verify"), &key);
}

/// `{"name": "aaa..."}`, a little over 1 MB.
fn megabyte_json() -> String {
    format!("{{\"name\": \"{}\"}}", "a".repeat(1 << 20))
}

/// A POST written raw: the shim answers 413 before reading a body that is too large, and a
/// client that insists on writing all of it sees a broken pipe instead of the answer.
fn post_raw(shim: &Shim, path: &str, token: &str, body: &str) -> Response {
    shim.raw(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nX-API-Key: {token}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn an_oversized_body_gets_the_json_error_shape() {
    let _db = database_up();
    let shim = Shim::start();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["admin:*"]);
    let body = megabyte_json();

    // Without a Content-Length the limit applies while the handler reads the body.
    let chunked = shim.raw(
        format!(
            "POST /v1/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nX-API-Key: {}\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            key.token,
            body.len()
        )
        .as_bytes(),
    );
    assert_refused(&chunked, 413, "payload_too_large");

    // With a Content-Length it is refused before any handler runs: the same answer.
    for path in ["/v1/keys", "/v1/partners"] {
        let declared = post_raw(&shim, path, &key.token, &body);
        assert_eq!(
            declared.header("content-type"),
            Some("application/json"),
            "{path}: body {:?}",
            declared.body
        );
        assert_refused(&declared, 413, "payload_too_large");
    }
}

// ---------------------------------------------------------------------------------------
// Service routes and process

#[test]
fn healthz_metrics_and_openapi() {
    let _db = database_up();
    let shim = Shim::start();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);

    let health = shim.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({"status": "ok"}));

    assert_ok(&shim.get_as(&key.token, "/v1/verify"), &key);
    assert_ok(&shim.get_as(&key.token, "/v1/verify"), &key);
    assert_refused(&shim.get("/v1/verify"), 401, "missing_key");

    let metrics = shim.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "Prometheus text format: {:?}",
        metrics.header("content-type")
    );
    let text = &metrics.body;
    for line in [
        "apikey_shim_requests_total{route=\"/v1/verify\",status=\"200\"} 2",
        "apikey_shim_requests_total{route=\"/v1/verify\",status=\"401\"} 1",
        "apikey_shim_verify_outcomes_total{reason=\"ok\"} 2",
        "apikey_shim_verify_outcomes_total{reason=\"missing_key\"} 1",
        "# TYPE apikey_shim_request_duration_seconds histogram",
        "apikey_shim_request_duration_seconds_bucket{route=\"/v1/verify\",le=\"+Inf\"} 3",
        "apikey_shim_request_duration_seconds_count{route=\"/v1/verify\"} 3",
        "apikey_shim_pool_max_size 16",
        "apikey_shim_pool_waiting 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "/metrics lacks {line:?}:\n{text}"
        );
    }
    let gauge = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("/metrics lacks {name}:\n{text}"))
            .parse()
            .expect("a gauge value")
    };
    assert!(gauge("apikey_shim_pool_size") >= 1, "a connection is open");
    assert!(gauge("apikey_shim_pool_available") <= gauge("apikey_shim_pool_size"));

    let openapi = shim.get("/openapi.json");
    assert_eq!(openapi.status, 200);
    assert!(
        openapi
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        openapi.header("content-type")
    );
    // The binary serves the checked-in document (which shim/tests/openapi.rs holds against
    // the router), byte for byte.
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../shim/openapi.json"))
            .expect("shim/openapi.json");
    assert_eq!(openapi.body, checked_in);
}

#[test]
fn sigterm_stops_the_shim_cleanly() {
    let _db = database_up();
    let mut shim = Shim::start();
    assert_eq!(shim.get("/healthz").status, 200);
    assert!(shim.terminate(), "exit status 0 after SIGTERM");
    assert!(
        shim.request("GET", "/healthz").call().is_err(),
        "nothing listens after the exit"
    );
    assert!(
        shim.log().contains("shutdown signal received"),
        "{}",
        shim.log()
    );
}

#[test]
fn the_log_shows_key_ids_but_never_tokens_or_key_headers() {
    let _db = database_up();
    let mut shim = Shim::start_with(&[("APIKEY_SHIM_ALLOW_QUERY_KEY", "true")]);
    let (mut c, partner) = setup();
    let good = issue(&mut c, partner, &["orders:read"]);
    let revoked = issue(&mut c, partner, &["orders:read"]);
    c.execute("SELECT apikey_revoke($1)", &[&revoked.key_id])
        .expect("revoke");
    let mismatched = issue(&mut c, partner, &["orders:read"]);
    c.execute(
        "UPDATE apikey.keys k SET secret_hash = o.secret_hash, \
                pepper_fingerprint = o.pepper_fingerprint \
         FROM apikey.keys o WHERE k.key_id = $1 AND o.key_id = $2",
        &[&mismatched.key_id, &good.key_id],
    )
    .expect("give the key another key's hash");
    let limited = issue_with(
        &mut c,
        "$1, '{orders:read}', rate_per_minute => 1",
        &[&partner],
    );
    let typo = with_bad_checksum(&good.token);
    let sentinel = "ak_live_sentinelHeaderValue0123456789";
    let basic = "Basic c2VudGluZWw6c2VjcmV0UGFzc3dvcmQ=";

    let expect = |headers: &[(&str, &str)], path: &str, status: u16| {
        let r = get_with(&shim, path, headers);
        assert_eq!(r.status, status, "{path} {}", r.body);
    };
    let api_key = |t: &str| format!("ApiKey {t}");
    let bearer = |t: &str| format!("Bearer {t}");
    expect(&[("X-API-Key", &good.token)], "/v1/verify", 200);
    expect(
        &[("Authorization", &api_key(&good.token))],
        "/v1/verify",
        200,
    );
    expect(
        &[("Authorization", &bearer(&good.token))],
        "/v1/verify?scope=orders:write",
        403,
    );
    expect(&[], &format!("/v1/verify?api_key={}", good.token), 200);
    expect(
        &[("Authorization", &bearer(&revoked.token))],
        "/v1/verify",
        401,
    );
    expect(&[("X-API-Key", &mismatched.token)], "/v1/verify", 401);
    expect(&[("X-API-Key", &typo)], "/v1/verify", 401);
    expect(&[("X-API-Key", sentinel)], "/v1/verify", 401);
    expect(&[("Authorization", basic)], "/v1/verify", 401);
    expect(
        &[
            ("X-API-Key", &good.token),
            ("Authorization", &bearer(&revoked.token)),
        ],
        "/v1/verify",
        400,
    );
    expect(&[], &format!("/v1/verify?api_key={}", revoked.token), 401);
    expect(&[("X-API-Key", &limited.token)], "/v1/verify", 200);
    expect(&[("X-API-Key", &limited.token)], "/v1/verify", 429);
    // The management path verifies too (and refuses a key without admin:* / keys:manage).
    let manage = shim.post_as(
        &good.token,
        "/v1/partners",
        &serde_json::json!({"name": "x"}),
    );
    assert_refused(&manage, 403, "insufficient_scope");

    assert!(shim.terminate(), "clean exit");
    let log = shim.log();
    let mut needles = Vec::new();
    for key in [&good, &revoked, &mismatched, &limited] {
        needles.push((format!("token of {}", key.key_id), key.token.clone()));
        needles.push((
            format!("secret of {}", key.key_id),
            key.secret().to_string(),
        ));
    }
    for value in [
        typo.as_str(),
        sentinel,
        basic,
        "c2VudGluZWw6c2VjcmV0UGFzc3dvcmQ=",
    ] {
        needles.push((format!("header value {value}"), value.to_string()));
    }
    for header in ["x-api-key", "authorization", "api_key="] {
        needles.push((
            format!("header or parameter name {header}"),
            header.to_string(),
        ));
    }
    let found = leaks(&log, &needles);
    assert!(found.is_empty(), "{found:#?}");
    assert!(
        log.contains(&good.key_id) && log.contains(&limited.key_id),
        "the log names verified keys by id:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// Database restart: runs alone (write lock), the cluster always comes back up.

fn pg_ctl(args: &[&str]) -> Result<(), String> {
    let pgdata = std::env::var("APIKEY_TEST_PGDATA").map_err(|_| "APIKEY_TEST_PGDATA is unset")?;
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pgbin("pg_ctl"))
        .args(["-D", &pgdata])
        .args(args)
        .current_dir("/")
        .output()
        .map_err(|e| format!("run pg_ctl: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pg_ctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Starts the cluster again when dropped, also when the test failed while it was down.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let log = server_log_path();
        if let Err(e) = pg_ctl(&["-l", &log, "-w", "-t", "60", "start"]) {
            if std::thread::panicking() {
                eprintln!("could not restart the database: {e}");
            } else {
                panic!("could not restart the database: {e}");
            }
        }
    }
}

/// Answers quickly, with a status; what a hang or a dropped connection would not do.
fn timed(what: &str, f: impl FnOnce() -> Response) -> Response {
    let started = Instant::now();
    let r = f();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "{what} took {elapsed:?} while the database was down"
    );
    r
}

#[test]
fn the_same_shim_survives_a_database_restart() {
    let _exclusive = database_exclusive();
    let shim = Shim::start();
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    assert_ok(&shim.get_as(&key.token, "/v1/verify"), &key);
    drop(c);

    // Armed before stopping: a stop that fails half way still ends with a start attempt.
    let restart = RestartOnDrop;
    pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]).expect("stop the database");

    for _ in 0..3 {
        let health = timed("/healthz", || shim.get("/healthz"));
        assert_refused(&health, 503, "unavailable");
        assert_eq!(health.header("retry-after"), Some("1"));
        let verify = timed("/v1/verify", || shim.get_as(&key.token, "/v1/verify"));
        assert_refused(&verify, 503, "unavailable");
    }
    assert_eq!(shim.get("/metrics").status, 200, "metrics need no database");

    drop(restart);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut statuses = Vec::new();
    loop {
        let r = shim.get_as(&key.token, "/v1/verify");
        statuses.push(r.status);
        if r.status == 200 {
            assert_ok(&r, &key);
            break;
        }
        assert_refused(&r, 503, "unavailable");
        assert!(
            Instant::now() < deadline,
            "no 200 within 10 s of the restart: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = shim.get("/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
}
