//! Keys: issue, list, show, rotate, revoke, enable, disable. Each handler is one transaction:
//! verify the caller's key, act as its holder (see `db::act_as_key_holder`), call the
//! extension. What a partner may see or touch is decided by the database.

use super::{decode_cursor, like_pattern, page, page_size, Managed};
use crate::caller::Caller;
use crate::db;
use crate::error::AppError;
use crate::extract::{Json, OptionalJson, Path, Query};
use crate::openapi::answers::{BodyErrors, CallerErrors, Conflict, InvalidInput, NotFound};
use crate::openapi::parameters::KeyIdPath;
use crate::openapi::schemas;
use crate::state::AppState;
use apikey_contract::limits;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue, list))
        .routes(routes!(show))
        .routes(routes!(rotate))
        .routes(routes!(revoke))
        .routes(routes!(enable))
        .routes(routes!(disable))
}

/// A key as `apikey.key_info` shows it, with its partner's name.
const KEY_JSON: &str = "to_jsonb(k) || jsonb_build_object('partner_name', p.name)";

/// The arguments of `apikey_issue`. Omitted and `null` fields take the defaults shown.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = IssueKeyRequest)]
struct IssueRequest {
    partner_id: Uuid,
    #[schema(value_type = Vec<schemas::Scope>, max_items = 64)]
    scopes: Vec<String>,
    #[schema(max_length = 200)]
    name: Option<String>,
    /// Must be in the future.
    expires_at: Option<DateTime<Utc>>,
    not_before: Option<DateTime<Utc>>,
    #[schema(minimum = 1, default = 300)]
    rate_per_minute: Option<i32>,
    /// CIDRs the key may be used from, e.g. `["203.0.113.0/24", "2001:db8::/32"]`; `null`
    /// (default) means any address.
    #[schema(min_items = 1)]
    allowed_cidrs: Option<Vec<String>>,
    #[schema(schema_with = schemas::environment_schema)]
    environment: Option<String>,
    #[schema(max_items = 32, default = json!([]))]
    tags: Option<Vec<String>>,
    /// A JSON object of at most 16 KiB; default `{}`.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Token prefix; default from the GUC `apikey.default_prefix` (`ak`).
    #[schema(pattern = "^[a-z][a-z0-9]{0,15}$")]
    prefix: Option<String>,
}

/// Issue a key
///
/// Calls `apikey_issue(...)`. The response is the only time the token exists.
///
/// Needs an operator key (`admin:*`); a partner's key gets 403 `forbidden` from the database.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    operation_id = "issueKey",
    request_body = IssueRequest,
    responses(
        (
            status = 201,
            description = "The new key and its token (shown once).",
            body = schemas::IssuedKey,
        ),
        CallerErrors,
        BodyErrors,
        NotFound,
        Conflict,
    ),
)]
async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    Json(r): Json<IssueRequest>,
) -> Result<Managed, AppError> {
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    if let Some(cidrs) = &r.allowed_cidrs {
        check_cidrs(cidrs)?;
    }
    let row = tx
        .query_one(
            "SELECT key_id, token FROM apikey_issue($1::uuid, $2::text[], $3::text, $4::timestamptz, \
                $5::timestamptz, coalesce($6::int, 300), $7::text[]::cidr[], coalesce($8::text, 'live'), \
                coalesce($9::text[], '{}'), coalesce($10::jsonb, '{}'), $11::text)",
            &[
                &r.partner_id,
                &r.scopes,
                &r.name,
                &r.expires_at,
                &r.not_before,
                &r.rate_per_minute,
                &r.allowed_cidrs,
                &r.environment,
                &r.tags,
                &r.metadata,
                &r.prefix,
            ],
        )
        .await?;
    let key_id: String = row.try_get(0)?;
    let token: String = row.try_get(1)?;
    let key = fetch_key(&tx, &key_id).await?;
    tx.commit().await?;
    Ok(Managed::created(
        json!({ "key_id": key_id, "token": token, "key": key }),
    ))
}

/// The CIDRs are cast to `cidr[]` in the query, and PostgreSQL's error for a bad one names
/// no argument: they are checked here first, so a mistake is a 422 naming `allowed_cidrs`.
/// Stricter than PostgreSQL in one way: abbreviated networks (`10/8`) must be written out.
pub(super) fn check_cidrs(cidrs: &[String]) -> Result<(), AppError> {
    for cidr in cidrs {
        let network = cidr
            .parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        let problem = match network {
            Err(_) => "is not an IP network such as 10.0.0.0/8 or 2001:db8::/32",
            Ok(net) if net.addr() != net.network() => {
                "has bits set to the right of its mask (write the network address, e.g. 10.0.0.0/8)"
            }
            Ok(_) => continue,
        };
        return Err(AppError::invalid_field(
            "allowed_cidrs",
            format!(
                "invalid allowed_cidrs: \"{}\" {problem}",
                apikey_contract::redact::excerpt(cidr)
            ),
        ));
    }
    Ok(())
}

async fn fetch_key(
    tx: &deadpool_postgres::Transaction<'_>,
    key_id: &str,
) -> Result<Value, AppError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {KEY_JSON} FROM apikey.key_info k JOIN apikey.partners p ON p.partner_id = k.partner_id \
                 WHERE k.key_id = $1"
            ),
            &[&key_id],
        )
        .await?;
    match row {
        Some(row) => Ok(row.try_get(0)?),
        None => Err(AppError::NotFound(format!(
            "key {} does not exist",
            printable(key_id)
        ))),
    }
}

/// Echo a key id only when it looks like one, so a pasted token never reaches a response.
fn printable(key_id: &str) -> String {
    if apikey_contract::token::is_key_id(key_id) {
        format!("\"{key_id}\"")
    } else {
        "named in the path".to_string()
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListKeys {
    /// Only this partner's keys.
    partner_id: Option<Uuid>,
    /// Text search in key id, key name and partner name (case-insensitive substring).
    q: Option<String>,
    /// Only keys carrying this tag.
    tag: Option<String>,
    /// Only keys in this status (another value: 422).
    #[param(value_type = Option<schemas::KeyStatus>)]
    status: Option<String>,
    /// Page size (out of range: 422).
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (one this API did not return: 422).
    cursor: Option<String>,
}

const STATUSES: [&str; 5] = ["live", "disabled", "revoked", "expired", "not_yet_valid"];

/// List keys
///
/// Newest first.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    operation_id = "listKeys",
    params(ListKeys),
    responses(
        (status = 200, description = "One page of keys.", body = schemas::KeyList),
        CallerErrors,
        InvalidInput,
    ),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<ListKeys>,
) -> Result<Managed, AppError> {
    let limit = page_size(f.limit)?;
    if let Some(status) = &f.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(AppError::invalid_field(
                "status",
                format!("status must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let after: Option<(DateTime<Utc>, String)> = decode_cursor(f.cursor.as_deref())?;
    let (after_at, after_key) = after.unzip();
    let search = f.q.as_deref().map(like_pattern);
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let rows = tx
        .query(
            &format!(
                "SELECT {KEY_JSON}, k.created_at, k.key_id \
                 FROM apikey.key_info k JOIN apikey.partners p ON p.partner_id = k.partner_id \
                 WHERE ($1::uuid IS NULL OR k.partner_id = $1) \
                   AND ($2::text IS NULL OR k.key_id ILIKE $2 OR k.name ILIKE $2 OR p.name ILIKE $2) \
                   AND ($3::text IS NULL OR $3 = ANY (k.tags)) \
                   AND ($4::text IS NULL OR k.status = $4) \
                   AND ($5::timestamptz IS NULL OR (k.created_at, k.key_id) < ($5, $6::text)) \
                 ORDER BY k.created_at DESC, k.key_id DESC LIMIT $7"
            ),
            &[&f.partner_id, &search, &f.tag, &f.status, &after_at, &after_key, &(limit + 1)],
        )
        .await?;
    tx.commit().await?;
    page(&rows, limit, |row| {
        Ok((
            row.try_get::<_, DateTime<Utc>>(1)?,
            row.try_get::<_, String>(2)?,
        ))
    })
}

/// Show a key
///
/// One row of `apikey.key_info`.
#[utoipa::path(
    get,
    path = "/v1/keys/{key_id}",
    tag = "keys",
    operation_id = "getKey",
    params(KeyIdPath),
    responses(
        (status = 200, description = "The key.", body = schemas::Key),
        CallerErrors,
        NotFound,
    ),
)]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Managed, AppError> {
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let key = fetch_key(&tx, &key_id).await?;
    tx.commit().await?;
    Ok(Managed::ok(key))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RotateKeyRequest)]
struct RotateRequest {
    /// How long the old key keeps working (never past its own expiry).
    #[schema(minimum = 0, maximum = 31_622_400, default = 0)]
    grace_seconds: Option<i64>,
    /// Scopes of the new key; default: the old key's.
    #[schema(value_type = Option<Vec<schemas::Scope>>, max_items = 64)]
    scopes: Option<Vec<String>>,
}

/// Rotate a key
///
/// Calls `apikey_rotate(key_id, grace, scopes)`: a new key inherits partner, name, scopes (unless
/// given), expiry, rate, CIDRs, tags and metadata; the old one keeps working for `grace_seconds`.
/// The body is optional: empty means the defaults.
#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/rotate",
    tag = "keys",
    operation_id = "rotateKey",
    params(KeyIdPath),
    request_body = Option<RotateRequest>,
    responses(
        (
            status = 201,
            description = "The new key and its token (shown once).",
            body = schemas::RotatedKey,
        ),
        CallerErrors,
        BodyErrors,
        NotFound,
        Conflict,
    ),
)]
async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
    OptionalJson(r): OptionalJson<RotateRequest>,
) -> Result<Managed, AppError> {
    let grace = super::grace_seconds(r.grace_seconds, 0, limits::MAX_ROTATION_GRACE_SECONDS)?;
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let row = tx
        .query_one(
            "SELECT key_id, token FROM apikey_rotate($1, make_interval(secs => $2::bigint), $3)",
            &[&key_id, &grace, &r.scopes],
        )
        .await?;
    let new_key_id: String = row.try_get(0)?;
    let token: String = row.try_get(1)?;
    let key = fetch_key(&tx, &new_key_id).await?;
    tx.commit().await?;
    Ok(Managed::created(
        json!({ "key_id": new_key_id, "token": token, "rotated_from": key_id, "key": key }),
    ))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RevokeKeyRequest)]
struct RevokeRequest {
    /// Stored as `revoke_reason` and in the audit log.
    reason: Option<String>,
}

/// Revoke a key
///
/// Calls `apikey_revoke(key_id, reason)`. Idempotent: revoking a revoked key answers 200 with
/// `revoked: false`. The body is optional: empty means no reason.
#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/revoke",
    tag = "keys",
    operation_id = "revokeKey",
    params(KeyIdPath),
    request_body = Option<RevokeRequest>,
    responses(
        (
            status = 200,
            description = "Whether this call revoked it, and the key.",
            body = schemas::RevokeResult,
        ),
        CallerErrors,
        BodyErrors,
        NotFound,
    ),
)]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
    OptionalJson(r): OptionalJson<RevokeRequest>,
) -> Result<Managed, AppError> {
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let row = tx
        .query_one("SELECT apikey_revoke($1, $2)", &[&key_id, &r.reason])
        .await?;
    let was_live: bool = row.try_get(0)?;
    let key = fetch_key(&tx, &key_id).await?;
    tx.commit().await?;
    Ok(Managed::ok(json!({ "revoked": was_live, "key": key })))
}

/// Enable a key
///
/// Calls `apikey_set_enabled(key_id, true)`: a revoked key cannot be enabled (409). No request
/// body.
#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/enable",
    tag = "keys",
    operation_id = "enableKey",
    params(KeyIdPath),
    responses(
        (status = 200, description = "The key after the change.", body = schemas::Key),
        CallerErrors,
        NotFound,
        Conflict,
    ),
)]
async fn enable(
    state: State<AppState>,
    caller: Caller,
    key_id: Path<String>,
) -> Result<Managed, AppError> {
    set_enabled(state, caller, key_id, true).await
}

/// Disable a key
///
/// Calls `apikey_set_enabled(key_id, false)`: a temporary switch; the key fails with `disabled`
/// until enabled. No request body.
#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/disable",
    tag = "keys",
    operation_id = "disableKey",
    params(KeyIdPath),
    responses(
        (status = 200, description = "The key after the change.", body = schemas::Key),
        CallerErrors,
        NotFound,
    ),
)]
async fn disable(
    state: State<AppState>,
    caller: Caller,
    key_id: Path<String>,
) -> Result<Managed, AppError> {
    set_enabled(state, caller, key_id, false).await
}

async fn set_enabled(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
    enabled: bool,
) -> Result<Managed, AppError> {
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    tx.execute("SELECT apikey_set_enabled($1, $2)", &[&key_id, &enabled])
        .await?;
    let key = fetch_key(&tx, &key_id).await?;
    tx.commit().await?;
    Ok(Managed::ok(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_networks_written_out() {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_cidrs(&owned(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"])).is_ok());
        for bad in [
            "10.0.0.1/8",
            "10/8",
            "not a network",
            "",
            "10.0.0.0/33",
            "ak_live_x",
        ] {
            match check_cidrs(&owned(&["10.0.0.0/8", bad])) {
                Err(AppError::Unprocessable { field, message }) => {
                    assert_eq!(field.as_deref(), Some("allowed_cidrs"), "{bad}");
                    assert!(message.starts_with("invalid allowed_cidrs: "), "{message}");
                }
                _ => panic!("{bad:?} was accepted"),
            }
        }
    }
}
