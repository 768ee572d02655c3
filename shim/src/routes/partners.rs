//! Partners: create, list, activate, deactivate. Creating and (de)activating need an
//! operator key; the database refuses partners (403).

use super::{decode_cursor, like_pattern, page, page_size, Managed};
use crate::caller::Caller;
use crate::db;
use crate::error::AppError;
use crate::extract::{Json, Path, Query};
use crate::openapi::answers::{BodyErrors, CallerErrors, Conflict, InvalidInput, NotFound};
use crate::openapi::parameters::PartnerIdPath;
use crate::openapi::schemas;
use crate::state::AppState;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(activate))
        .routes(routes!(deactivate))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreatePartnerRequest)]
struct CreatePartner {
    /// Unique, case-insensitively.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[schema(max_length = 254, format = Email)]
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

/// Create a partner
///
/// Calls `apikey_partner_create(name, contact_email)`.
///
/// Needs an operator key (`admin:*`); a partner's key gets 403 `forbidden` from the database.
#[utoipa::path(
    post,
    path = "/v1/partners",
    tag = "partners",
    operation_id = "createPartner",
    request_body = CreatePartner,
    responses(
        (status = 201, description = "The new partner.", body = schemas::Partner),
        CallerErrors,
        BodyErrors,
        Conflict,
    ),
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(r): Json<CreatePartner>,
) -> Result<Managed, AppError> {
    let mut conn = state.connection().await?;
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListPartners {
    /// Text search in name and contact email (case-insensitive substring).
    q: Option<String>,
    /// Only active (`true`) or inactive (`false`) partners.
    active: Option<bool>,
    /// Page size (out of range: 422).
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (one this API did not return: 422).
    cursor: Option<String>,
}

/// List partners
///
/// Newest first, with each partner's key count.
#[utoipa::path(
    get,
    path = "/v1/partners",
    tag = "partners",
    operation_id = "listPartners",
    params(ListPartners),
    responses(
        (status = 200, description = "One page of partners.", body = schemas::PartnerList),
        CallerErrors,
        InvalidInput,
    ),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<ListPartners>,
) -> Result<Managed, AppError> {
    let limit = page_size(f.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor(f.cursor.as_deref())?;
    let (after_at, after_id) = after.unzip();
    let search = f.q.as_deref().map(like_pattern);
    let mut conn = state.connection().await?;
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

/// Activate a partner
///
/// Calls `apikey_partner_set_active(partner_id, true)`. No request body.
///
/// Needs an operator key (`admin:*`); a partner's key gets 403 `forbidden` from the database.
#[utoipa::path(
    post,
    path = "/v1/partners/{partner_id}/activate",
    tag = "partners",
    operation_id = "activatePartner",
    params(PartnerIdPath),
    responses(
        (status = 200, description = "The partner after the change.", body = schemas::Partner),
        CallerErrors,
        NotFound,
    ),
)]
async fn activate(
    state: State<AppState>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<Managed, AppError> {
    set_active(state, caller, id, true).await
}

/// Deactivate a partner
///
/// Calls `apikey_partner_set_active(partner_id, false)`. Keys of an inactive partner fail
/// verification with `partner_inactive`. No request body.
///
/// Needs an operator key (`admin:*`); a partner's key gets 403 `forbidden` from the database.
#[utoipa::path(
    post,
    path = "/v1/partners/{partner_id}/deactivate",
    tag = "partners",
    operation_id = "deactivatePartner",
    params(PartnerIdPath),
    responses(
        (status = 200, description = "The partner after the change.", body = schemas::Partner),
        CallerErrors,
        NotFound,
    ),
)]
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
    let mut conn = state.connection().await?;
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
