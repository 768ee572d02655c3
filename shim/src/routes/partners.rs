//! Partners: create, list, activate, deactivate. Creating and (de)activating need an
//! operator key; the database refuses partners (403).

use super::{decode_cursor, like_pattern, page, page_size, Managed};
use crate::app::Caller;
use crate::db;
use crate::error::AppError;
use crate::extract::{Json, Path, Query};
use crate::state::AppState;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/partners", post(create).get(list))
        .route("/v1/partners/{partner_id}/activate", post(activate))
        .route("/v1/partners/{partner_id}/deactivate", post(deactivate))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePartner {
    name: String,
    contact_email: Option<String>,
}

async fn fetch_partner(
    tx: &deadpool_postgres::Transaction<'_>,
    partner_id: Uuid,
) -> Result<Value, AppError> {
    tx.query_opt(
        "SELECT to_jsonb(p) FROM apikey.partners p WHERE p.partner_id = $1",
        &[&partner_id],
    )
    .await?
    .map(|row| row.try_get(0))
    .transpose()?
    .ok_or_else(|| AppError::NotFound(format!("partner {partner_id} does not exist")))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(r): Json<CreatePartner>,
) -> Result<Managed, AppError> {
    let mut conn = state.pool.get().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let row = tx
        .query_one(
            "SELECT apikey_partner_create($1, $2)",
            &[&r.name, &r.contact_email],
        )
        .await?;
    let partner = fetch_partner(&tx, row.try_get(0)?).await?;
    tx.commit().await?;
    Ok(Managed::created(partner))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListPartners {
    q: Option<String>,
    active: Option<bool>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<ListPartners>,
) -> Result<Managed, AppError> {
    let limit = page_size(f.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor(f.cursor.as_deref())?;
    let (after_at, after_id) = after.unzip();
    let search = f.q.as_deref().map(like_pattern);
    let mut conn = state.pool.get().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let rows = tx
        .query(
            "SELECT to_jsonb(p) || jsonb_build_object('key_count', \
                    (SELECT count(*) FROM apikey.key_info k WHERE k.partner_id = p.partner_id)), \
                    p.created_at, p.partner_id \
             FROM apikey.partners p \
             WHERE ($1::text IS NULL OR p.name ILIKE $1 OR p.contact_email ILIKE $1) \
               AND ($2::boolean IS NULL OR p.active = $2) \
               AND ($3::timestamptz IS NULL OR (p.created_at, p.partner_id) < ($3, $4::uuid)) \
             ORDER BY p.created_at DESC, p.partner_id DESC LIMIT $5",
            &[&search, &f.active, &after_at, &after_id, &(limit + 1)],
        )
        .await?;
    tx.commit().await?;
    page(&rows, limit, |row| {
        Ok((
            row.try_get::<_, DateTime<Utc>>(1)?,
            row.try_get::<_, Uuid>(2)?,
        ))
    })
}

async fn activate(
    state: State<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<Managed, AppError> {
    set_active(state, caller, id, true).await
}

async fn deactivate(
    state: State<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<Managed, AppError> {
    set_active(state, caller, id, false).await
}

async fn set_active(
    State(state): State<AppState>,
    caller: Caller,
    Path(partner_id): Path<Uuid>,
    active: bool,
) -> Result<Managed, AppError> {
    let mut conn = state.pool.get().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    tx.execute(
        "SELECT apikey_partner_set_active($1, $2)",
        &[&partner_id, &active],
    )
    .await?;
    let partner = fetch_partner(&tx, partner_id).await?;
    tx.commit().await?;
    Ok(Managed::ok(partner))
}
