//! `GET /v1/verify`: for partners, and for gateways (nginx auth_request, Traefik
//! ForwardAuth, Envoy ext_authz) that forward the original request's headers.

use crate::abandon::Connection;
use crate::caller::Caller;
use crate::db;
use crate::error::AppError;
use crate::openapi::answers::CallerErrors;
use crate::openapi::{parameters, schemas};
use crate::replicas::Failed;
use crate::state::AppState;
use apikey_contract::reason::Reason;
use apikey_contract::{redact, scope};
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use axum::routing::any;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Parameter, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{IntoParams, IntoResponses, PartialSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

const KEY_ID: HeaderName = HeaderName::from_static("x-apikey-key-id");
const PARTNER: HeaderName = HeaderName::from_static("x-apikey-partner");
const SCOPES: HeaderName = HeaderName::from_static("x-apikey-scopes");

/// The body of a 200: the row of `apikey_verify`, as the contract names its columns.
#[derive(Serialize)]
struct Verified<'a> {
    valid: bool,
    reason: &'static str,
    key_id: &'a str,
    partner_id: &'a str,
    scopes: &'a [&'a str],
    rate_per_minute: i32,
}

/// `/v1/verify/{*rest}` too, with any method: Envoy's ext_authz appends the original path to
/// its `path_prefix` and keeps the original method, so `DELETE /orders/7` is checked as
/// `DELETE /v1/verify/orders/7`. The document lists the standard methods; the route takes
/// every method, WebDAV's and other extensions' included.
pub fn router() -> OpenApiRouter<AppState> {
    let (collected, described, _) = routes!(verify_with_path);
    OpenApiRouter::new().routes(routes!(verify)).routes((
        collected,
        described,
        any(verify_with_path),
    ))
}

/// The scopes a request requires, read from the request in place (a `HeaderMap` extractor
/// would copy every header of every request).
struct RequiredScopes(Vec<String>);

/// The answer of both verify routes to a valid key: the row, and the identity in headers
/// for the gateway to pass upstream.
struct Verification;

impl IntoResponses for Verification {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let header = |schema: RefOr<Schema>, description: &str| {
            HeaderBuilder::new()
                .schema(schema)
                .description(Some(description))
                .build()
        };
        let partner_id = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .into();
        let scopes = ObjectBuilder::new()
            .schema_type(Type::String)
            .examples(["orders:read,orders:write"])
            .into();
        let valid = ResponseBuilder::new()
            .description("Valid key with every required scope, within its rate limit.")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(schemas::VerifyResult::schema()))
                    .build(),
            )
            .header(
                "X-Apikey-Key-Id",
                header(
                    schemas::KeyId::schema(),
                    "Key id of the verified key (for the upstream's logs and policies).",
                ),
            )
            .header(
                "X-Apikey-Partner",
                header(partner_id, "Partner id of the verified key."),
            )
            .header(
                "X-Apikey-Scopes",
                header(scopes, "The key's granted scopes, comma separated."),
            )
            .build();
        BTreeMap::from([("200".to_string(), valid.into())])
    }
}

/// What `required_scopes` reads.
impl IntoParams for RequiredScopes {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut scope = parameters::optional_text(
            "scope",
            ParameterIn::Query,
            "Required scope; repeat the parameter or separate with commas \
             (`scope=orders:read&scope=orders:write`). All are required.",
        );
        scope.schema = Some(Vec::<String>::schema());
        scope.style = Some(ParameterStyle::Form);
        scope.explode = Some(true);
        let mut read = vec![
            scope,
            parameters::optional_text(
                "resource",
                ParameterIn::Query,
                "Protected resource: adds the required scope `<resource>:<action>`, the action \
                 from the original method (`X-Forwarded-Method`, `X-Original-Method` or \
                 `X-Envoy-Original-Method`): GET/HEAD/OPTIONS `read`, POST/PUT/PATCH `write`, \
                 DELETE `delete`. Without one of those headers, or with another method: 400.",
            ),
            parameters::optional_text(
                "X-Required-Scopes",
                ParameterIn::Header,
                "Required scopes, comma separated (added to `scope=`).",
            ),
        ];
        read.extend(METHOD_HEADERS.map(|(name, description)| {
            parameters::optional_text(name, ParameterIn::Header, description)
        }));
        read
    }
}

impl FromRequestParts<AppState> for RequiredScopes {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, AppError> {
        required_scopes(parts.uri.query(), &parts.headers).map(RequiredScopes)
    }
}

/// The credits a verification spends, from `cost=` query parameters (a gateway's own URL):
/// given more than once, the largest applies, so a client that appends its own can only
/// raise it. `None` without one: the database's default of 1.
pub struct Cost(Option<i32>);

impl IntoParams for Cost {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut cost = parameters::optional_text(
            "cost",
            ParameterIn::Query,
            "Credits the verification spends from the key's balance and its partner's (0 to \
             1000000, default 1; 0 checks without spending). Given more than once, the largest \
             applies.",
        );
        cost.schema = Some(i32::schema());
        vec![cost]
    }
}

impl FromRequestParts<AppState> for Cost {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, AppError> {
        cost(parts.uri.query()).map(Cost)
    }
}

fn cost(query: Option<&str>) -> Result<Option<i32>, AppError> {
    let max = apikey_contract::limits::MAX_COST;
    let mut largest = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name != "cost" {
            continue;
        }
        let cost = value
            .parse::<i32>()
            .ok()
            .filter(|c| (0..=max).contains(c))
            .ok_or_else(|| AppError::BadRequest {
                message: format!(
                    "cost must be a whole number from 0 to {max}, not {}",
                    redact::excerpt(&value)
                ),
                field: Some("cost".into()),
            })?;
        largest = largest.max(Some(cost));
    }
    Ok(largest)
}

/// Verify the presented key
///
/// Calls `apikey_verify(token, required_scopes, client_ip, cost)`. For partners checking a key, and
/// for gateways: nginx `auth_request`, Traefik ForwardAuth, Envoy ext_authz. Only requests the
/// database accepted use up the key's rate limit and spend its credits.
#[utoipa::path(
    get,
    path = "/v1/verify",
    tag = "verify",
    operation_id = "verifyKey",
    params(RequiredScopes, Cost, Caller),
    responses(Verification, CallerErrors)
)]
async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    RequiredScopes(required): RequiredScopes,
    Cost(cost): Cost,
) -> Result<Response, AppError> {
    let row = verified(&state, &caller, &required, cost).await?;
    let verdict = db::Verdict::from_row(&row)?;
    state.metrics.verify_outcome(verdict.reason);
    if let Some(key_id) = verdict.key_id {
        caller.note.key_id(key_id);
    }
    verdict.note_limits(&caller);
    if !verdict.valid {
        return Err(verdict.refusal());
    }
    let (Some(key_id), Some(partner_id), Some(scopes), Some(rate)) = (
        verdict.key_id,
        verdict.partner_id,
        verdict.scopes,
        verdict.rate_per_minute,
    ) else {
        return Err(AppError::Internal(
            "apikey_verify returned ok without an identity".into(),
        ));
    };
    let mut uuid_text = Uuid::encode_buffer();
    let partner_id = &*partner_id.hyphenated().encode_lower(&mut uuid_text);
    let body = serde_json::to_vec(&Verified {
        valid: true,
        reason: "ok",
        key_id,
        partner_id,
        scopes: &scopes,
        rate_per_minute: rate,
    })
    .map_err(|e| AppError::Internal(format!("cannot encode the verify response: {e}")))?;
    // Room for these four and the two RateLimit fields the middleware adds.
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in [
        (KEY_ID, key_id),
        (SCOPES, &scopes.join(",")),
        (PARTNER, partner_id),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    let mut response = Response::new(Body::from(body));
    *response.headers_mut() = headers;
    Ok(response)
}

/// The row of `apikey_verify` from the replicas in use, in turn, then from the primary: a
/// replica that fails or does not answer within `APIKEY_SHIM_REPLICA_TIMEOUT_MS` is taken
/// out of use and the next one asked (one merely busy is skipped), so a standby lost under
/// load fails no request. A
/// request a replica refuses (bad input) is refused: no server is taken out of use for it.
/// An `unknown_key` from a replica is asked again of the primary (the key may have been
/// issued a moment ago), waited for as long as a replica; without its answer, the
/// replica's stands.
async fn verified(
    state: &AppState,
    caller: &Caller,
    required: &[String],
    cost: Option<i32>,
) -> Result<tokio_postgres::Row, AppError> {
    let statements = state.config.statements;
    let verify = async |client: &Connection| {
        db::verify(client, statements, &caller.key, required, caller.ip, cost).await
    };
    let mut unknown_on_a_replica = None;
    for replica in state.replicas.in_turn() {
        match state.replicas.ask(replica, verify).await {
            Ok(row) if db::Verdict::from_row(&row)?.reason == Reason::UnknownKey.as_str() => {
                unknown_on_a_replica = Some(row);
                break;
            }
            Ok(row) => {
                replica.answered();
                return Ok(row);
            }
            Err(Failed::Request(e)) => return Err(e),
            Err(Failed::Server(problem)) => replica.out_of_use(problem),
            Err(Failed::Busy) => {}
        }
    }
    let Some(unknown) = unknown_on_a_replica else {
        let client = state.connection().await?;
        return verify(&client).await;
    };
    match state.replicas.ask_primary(&state.pool, verify).await {
        Ok(row) => Ok(row),
        Err(Failed::Request(e)) => Err(e),
        Err(failed) => {
            let problem = state.replicas.problem(failed);
            tracing::warn!(problem = %problem.public, detail = %problem.detail,
                "the primary did not answer for a key unknown to a replica");
            Ok(unknown)
        }
    }
}

/// Verify the presented key (gateway path form)
///
/// Same as `GET /v1/verify`; the rest of the path is ignored. For Envoy ext_authz, whose HTTP
/// service appends the original request path to its `path_prefix` (`/v1/verify` + `/orders/7`).
#[utoipa::path(
    method(get, post, put, patch, delete, head, options, trace),
    path = "/v1/verify/{*rest}",
    tag = "verify",
    operation_id = "verifyKeyWithPath",
    params(("rest" = String, Path, description = "Any path (ignored)."), RequiredScopes, Cost, Caller),
    responses(Verification, CallerErrors),
)]
async fn verify_with_path(
    state: State<AppState>,
    caller: Caller,
    required: RequiredScopes,
    cost: Cost,
) -> Result<Response, AppError> {
    verify(state, caller, required, cost).await
}

/// Headers that carry the original request's method, as gateways name them, with what the
/// document says of each.
const METHOD_HEADERS: [(&str, &str); 3] = [
    (
        "X-Forwarded-Method",
        "Original request method (Traefik ForwardAuth sends it); used with `resource=`.",
    ),
    (
        "X-Original-Method",
        "Original request method (set it in nginx `auth_request`); used with `resource=`.",
    ),
    (
        "X-Envoy-Original-Method",
        "Original request method as Envoy names it; used with `resource=`.",
    ),
];

/// Required scopes: every `scope=` parameter (comma-separated lists allowed), the
/// comma-separated `X-Required-Scopes` header, and, when a `resource=` parameter names the
/// protected resource, one derived from the original method a gateway forwards
/// (`X-Forwarded-Method` / `X-Original-Method` / `X-Envoy-Original-Method`): GET/HEAD/OPTIONS
/// read, POST/PUT/PATCH write, DELETE delete. Bounded like a key's own scopes, and every
/// scope must be valid: a gateway configured wrong gets a 400 naming the input, not a key
/// that silently matches or fails.
fn required_scopes(query: Option<&str>, headers: &HeaderMap) -> Result<Vec<String>, AppError> {
    let mut scopes = Vec::new();
    let mut resource = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "scope" => extend_checked(&mut scopes, &value, "scope")?,
            "resource" => resource = Some(value.into_owned()),
            _ => {}
        }
    }
    for value in headers.get_all("x-required-scopes") {
        let value = value
            .to_str()
            .map_err(|_| AppError::bad_request("X-Required-Scopes must be visible ASCII"))?;
        extend_checked(&mut scopes, value, "X-Required-Scopes")?;
    }
    if let Some(resource) = resource {
        let action = match original_method(headers)?.as_deref() {
            Some("GET" | "HEAD" | "OPTIONS") => "read",
            Some("POST" | "PUT" | "PATCH") => "write",
            Some("DELETE") => "delete",
            Some(other) => {
                return Err(AppError::bad_request(format!(
                    "cannot derive a scope from method {}",
                    redact::excerpt(other)
                )))
            }
            None => {
                return Err(AppError::BadRequest {
                    message: "resource= needs the original method in X-Forwarded-Method or \
                              X-Original-Method"
                        .into(),
                    field: Some("resource".into()),
                })
            }
        };
        extend_checked(&mut scopes, &format!("{resource}:{action}"), "resource")?;
    }
    Ok(scopes)
}

/// The original method, from whichever method headers the request has. When they disagree
/// (a client sent one of its own, which the gateway did not overwrite), the request is
/// refused: deciding by either would let the client choose which scope is checked.
fn original_method(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let mut method: Option<String> = None;
    for (name, _) in METHOD_HEADERS {
        for value in headers.get_all(name) {
            let value = value
                .to_str()
                .map_err(|_| AppError::bad_request(format!("{name} must be visible ASCII")))?
                .trim()
                .to_ascii_uppercase();
            match &method {
                Some(seen) if *seen != value => {
                    return Err(AppError::bad_request(
                        "the method headers (X-Forwarded-Method, X-Original-Method, \
                         X-Envoy-Original-Method) disagree; the gateway must overwrite or clear \
                         every one of them",
                    ))
                }
                _ => method = Some(value),
            }
        }
    }
    Ok(method)
}

/// Adds the comma-separated scopes of `list` to `scopes`, refusing an invalid scope or more
/// than a key can hold (`source` names where they came from). An empty item is refused too:
/// the database treats an empty requirement as never met, so passing it over would let a
/// gateway configured with a blank scope admit every valid key.
fn extend_checked(scopes: &mut Vec<String>, list: &str, source: &str) -> Result<(), AppError> {
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(AppError::BadRequest {
                message: format!("an empty required scope in {source}"),
                field: Some(source.into()),
            });
        }
        if let Err(why) = scope::validate(item) {
            return Err(AppError::BadRequest {
                message: format!("required scope \"{}\" {why}", redact::excerpt(item)),
                field: Some(source.into()),
            });
        }
        if scopes.len() >= scope::MAX_SCOPES {
            return Err(AppError::BadRequest {
                message: format!("at most {} required scopes", scope::MAX_SCOPES),
                field: Some(source.into()),
            });
        }
        scopes.push(item.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_largest_cost_applies_and_a_bad_one_is_refused() {
        assert_eq!(cost(None).unwrap(), None);
        assert_eq!(cost(Some("scope=a:b")).unwrap(), None);
        assert_eq!(cost(Some("cost=5&cost=2&cost=40")).unwrap(), Some(40));
        assert_eq!(cost(Some("cost=0")).unwrap(), Some(0));
        assert_eq!(cost(Some("cost=1000000")).unwrap(), Some(1_000_000));
        for bad in [
            "cost=",
            "cost=-1",
            "cost=1000001",
            "cost=1.5",
            "cost=x",
            "cost=1&cost=%FF",
        ] {
            match cost(Some(bad)) {
                Err(AppError::BadRequest { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("cost"), "{bad}")
                }
                other => panic!("{bad}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn scopes_from_parameters_headers_and_methods() {
        let s = required_scopes(Some("scope=a:read&scope=b:write,c:x"), &HeaderMap::new()).unwrap();
        assert_eq!(s, vec!["a:read", "b:write", "c:x"]);
        let s =
            required_scopes(None, &headers(&[("x-required-scopes", "a:read, b:write")])).unwrap();
        assert_eq!(s, vec!["a:read", "b:write"]);
        let s = required_scopes(
            Some("resource=orders"),
            &headers(&[("x-forwarded-method", "delete")]),
        )
        .unwrap();
        assert_eq!(s, vec!["orders:delete"]);
        let s = required_scopes(
            Some("resource=orders"),
            &headers(&[("x-original-method", "PATCH")]),
        )
        .unwrap();
        assert_eq!(s, vec!["orders:write"]);
        let s = required_scopes(
            Some("resource=orders/7"),
            &headers(&[("x-original-method", "GET")]),
        )
        .unwrap();
        assert_eq!(s, vec!["orders/7:read"]);
        assert!(required_scopes(
            Some("resource=orders/7%208"),
            &headers(&[("x-original-method", "GET")])
        )
        .is_err());
        assert!(required_scopes(Some("resource=orders"), &HeaderMap::new()).is_err());
        assert!(required_scopes(
            Some("resource=orders"),
            &headers(&[("x-forwarded-method", "BREW")])
        )
        .is_err());
        assert!(required_scopes(None, &HeaderMap::new()).unwrap().is_empty());
    }

    #[test]
    fn method_headers_that_disagree_are_refused() {
        let both = headers(&[
            ("x-original-method", "DELETE"),
            ("x-forwarded-method", "GET"),
        ]);
        assert!(required_scopes(Some("resource=orders"), &both).is_err());
        let twice = headers(&[
            ("x-original-method", "DELETE"),
            ("x-original-method", "GET"),
        ]);
        assert!(required_scopes(Some("resource=orders"), &twice).is_err());
        let agreeing = headers(&[
            ("x-original-method", "delete"),
            ("x-forwarded-method", "DELETE"),
        ]);
        assert_eq!(
            required_scopes(Some("resource=orders"), &agreeing).unwrap(),
            vec!["orders:delete"]
        );
    }

    #[test]
    fn required_scopes_are_bounded_and_valid() {
        let many = (0..=scope::MAX_SCOPES)
            .map(|i| format!("r{i}:read"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(required_scopes(None, &headers(&[("x-required-scopes", &many)])).is_err());
        let long = format!("a:{}", "b".repeat(scope::MAX_SCOPE_LEN));
        assert!(required_scopes(Some(&format!("scope={long}")), &HeaderMap::new()).is_err());
        assert!(required_scopes(Some("scope=orders%20read"), &HeaderMap::new()).is_err());
        assert!(required_scopes(
            Some("resource=bad%20name"),
            &headers(&[("x-original-method", "GET")])
        )
        .is_err());
        let Err(AppError::BadRequest { message, field }) = required_scopes(
            None,
            &headers(&[(
                "x-required-scopes",
                "ak_live_0123456789abcdefABCDEFGHIJKLMNOPQRSTUVWXYZ",
            )]),
        ) else {
            panic!("an invalid scope is a bad request");
        };
        assert_eq!(field.as_deref(), Some("X-Required-Scopes"));
        assert!(!message.contains("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), "{message}");
    }

    #[test]
    fn an_empty_required_scope_is_refused_naming_its_source() {
        let from = |query: Option<&str>, header: Option<&str>| {
            let h = header.map_or_else(HeaderMap::new, |v| headers(&[("x-required-scopes", v)]));
            match required_scopes(query, &h) {
                Err(AppError::BadRequest { field, .. }) => field,
                other => panic!("{query:?} {header:?}: {:?}", other.map(|_| ())),
            }
        };
        for query in [
            "scope=",
            "scope=a:read,",
            "scope=,a:read",
            "scope=%20",
            "scope=a:read&scope=",
        ] {
            assert_eq!(from(Some(query), None).as_deref(), Some("scope"), "{query}");
        }
        for header in [",", "", " ", "a:read,,b:read", "a:read, "] {
            assert_eq!(
                from(None, Some(header)).as_deref(),
                Some("X-Required-Scopes"),
                "{header:?}"
            );
        }
        assert_eq!(
            required_scopes(Some("other=&scope=a:read"), &HeaderMap::new()).unwrap(),
            vec!["a:read"]
        );
    }
}
