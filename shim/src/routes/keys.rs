//! Keys: issue, list, show, rotate, revoke, enable, disable. Each handler is one transaction:
//! verify the caller's key, act as its holder (see `db::act_as_key_holder`), call the
//! extension. What a partner may see or touch is decided by the database.

use super::{decode_cursor, like_pattern, page, page_size, Managed};
use crate::app::Caller;
use crate::db;
use crate::error::AppError;
use crate::extract::{Json, OptionalJson, Path, Query};
use crate::state::AppState;
use apikey_contract::limits;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", post(issue).get(list))
        .route("/v1/keys/{key_id}", get(show))
        .route("/v1/keys/{key_id}/rotate", post(rotate))
        .route("/v1/keys/{key_id}/revoke", post(revoke))
        .route("/v1/keys/{key_id}/enable", post(enable))
        .route("/v1/keys/{key_id}/disable", post(disable))
}

/// A key as `apikey.key_info` shows it, with its partner's name.
const KEY_JSON: &str = "to_jsonb(k) || jsonb_build_object('partner_name', p.name)";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    partner_id: Uuid,
    scopes: Vec<String>,
    name: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    not_before: Option<DateTime<Utc>>,
    rate_per_minute: Option<i32>,
    allowed_cidrs: Option<Vec<String>>,
    environment: Option<String>,
    tags: Option<Vec<String>>,
    metadata: Option<Value>,
    prefix: Option<String>,
}

async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    Json(r): Json<IssueRequest>,
) -> Result<Managed, AppError> {
    let mut conn = state.pool.get().await?;
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
fn check_cidrs(cidrs: &[String]) -> Result<(), AppError> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListKeys {
    partner_id: Option<Uuid>,
    q: Option<String>,
    tag: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

const STATUSES: [&str; 5] = ["live", "disabled", "revoked", "expired", "not_yet_valid"];

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
    let mut conn = state.pool.get().await?;
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

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Managed, AppError> {
    let mut conn = state.pool.get().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let key = fetch_key(&tx, &key_id).await?;
    tx.commit().await?;
    Ok(Managed::ok(key))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// Seconds the old key stays valid (capped at its own expiry by the database).
    grace_seconds: Option<i64>,
    scopes: Option<Vec<String>>,
}

async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
    OptionalJson(r): OptionalJson<RotateRequest>,
) -> Result<Managed, AppError> {
    let grace = super::grace_seconds(r.grace_seconds, 0, limits::MAX_ROTATION_GRACE_SECONDS)?;
    let mut conn = state.pool.get().await?;
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    reason: Option<String>,
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
    OptionalJson(r): OptionalJson<RevokeRequest>,
) -> Result<Managed, AppError> {
    let mut conn = state.pool.get().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let row = tx
        .query_one("SELECT apikey_revoke($1, $2)", &[&key_id, &r.reason])
        .await?;
    let was_live: bool = row.try_get(0)?;
    let key = fetch_key(&tx, &key_id).await?;
    tx.commit().await?;
    Ok(Managed::ok(json!({ "revoked": was_live, "key": key })))
}

async fn enable(
    state: State<AppState>,
    caller: Caller,
    key_id: Path<String>,
) -> Result<Managed, AppError> {
    set_enabled(state, caller, key_id, true).await
}

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
    let mut conn = state.pool.get().await?;
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
