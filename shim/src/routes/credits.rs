//! Credit balances and partner-wide limits: show, set and top up. Setting and topping up is
//! for operators (balances are money: the database refuses a partner's key); a partner's
//! `keys:manage` key may read its own keys' balances and its own limits.

use super::Managed;
use crate::caller::Caller;
use crate::db;
use crate::error::AppError;
use crate::extract::{Json, Path};
use crate::openapi::answers::{BodyErrors, CallerErrors, Conflict, NotFound};
use crate::openapi::parameters::{KeyIdPath, PartnerIdPath};
use crate::openapi::schemas;
use crate::state::AppState;
use axum::extract::State;
use deadpool_postgres::Transaction;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show_key_credits, set_key_credits, add_key_credits))
        .routes(routes!(show_partner_limits, set_partner_limits))
        .routes(routes!(add_partner_credits))
}

/// A balance as `apikey_credits_state` reports it, or JSON null.
const BALANCE_JSON: &str = "(SELECT jsonb_build_object('remaining', remaining, \
        'refill_amount', refill_amount, 'refill_interval', refill_interval::text, \
        'next_refill_at', next_refill_at) FROM apikey_credits_state($1, $2))";

async fn key_credits(tx: &Transaction<'_>, key_id: &str) -> Result<Value, AppError> {
    let row = tx
        .query_one(&format!("SELECT {BALANCE_JSON}"), &[&key_id, &None::<Uuid>])
        .await?;
    let credits: Option<Value> = row.try_get(0)?;
    Ok(json!({ "key_id": key_id, "credits": credits }))
}

async fn partner_limits(tx: &Transaction<'_>, partner_id: Uuid) -> Result<Value, AppError> {
    // Row-level security shows a partner only itself: another partner is not found.
    let row = tx
        .query_opt(
            &format!(
                "SELECT rate_per_minute, {BALANCE_JSON} FROM apikey.partners \
                 WHERE partner_id = $2"
            ),
            &[&None::<String>, &partner_id],
        )
        .await?
        .ok_or_else(|| AppError::NotFound(format!("partner_id {partner_id}")))?;
    let rate: Option<i32> = row.try_get(0)?;
    let credits: Option<Value> = row.try_get(1)?;
    Ok(json!({ "partner_id": partner_id, "rate_per_minute": rate, "credits": credits }))
}

/// Runs `work` in the transaction of a management request acting as the caller's key holder
/// (`db::begin_as_key_holder`) and commits: its answer is the 200 body.
async fn managed(
    state: &AppState,
    caller: &Caller,
    work: impl AsyncFnOnce(&Transaction<'_>) -> Result<Value, AppError>,
) -> Result<Managed, AppError> {
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, state, caller).await?;
    let body = work(&tx).await?;
    tx.commit().await?;
    Ok(Managed::ok(body))
}

/// An interval cast on its own first, so a mistake is a 422 naming its field (PostgreSQL's own
/// error for a bad interval names no argument). A failed cast aborts `tx`.
pub(super) async fn check_interval(
    tx: &Transaction<'_>,
    field: &str,
    interval: Option<&str>,
) -> Result<(), AppError> {
    let Some(interval) = interval else {
        return Ok(());
    };
    tx.query_one("SELECT $1::text::interval", &[&interval])
        .await
        .map(|_| ())
        .map_err(|e| match e.as_db_error() {
            Some(db) if db.code().code().starts_with("22") => {
                AppError::invalid_field(field, format!("invalid {field}: {}", db.message()))
            }
            _ => AppError::from(e),
        })
}

/// Show a key's credit balance
///
/// Calls `apikey_credits_state(key_id)`: the balance the key spends (in its grace period, its
/// successor's) as a verification would find it now; `credits` is null without one.
#[utoipa::path(
    get,
    path = "/v1/keys/{key_id}/credits",
    tag = "credits",
    operation_id = "showKeyCredits",
    params(KeyIdPath),
    responses(
        (status = 200, description = "The key's balance.", body = schemas::KeyCredits),
        CallerErrors,
        NotFound,
    ),
)]
async fn show_key_credits(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Managed, AppError> {
    managed(&state, &caller, async |tx| key_credits(tx, &key_id).await).await
}

/// The arguments of `apikey_set_credits`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SetKeyCreditsRequest)]
struct SetKeyCredits {
    /// The balance; `null` removes it (unlimited again).
    #[schema(minimum = 0)]
    remaining: Option<i64>,
    /// With `refill_interval`: what the balance is set back to at every interval.
    #[schema(minimum = 0)]
    refill_amount: Option<i64>,
    /// PostgreSQL interval text, at least a second: `1 month` refills on the same day of
    /// every month (UTC), `1 day`, `12 hours`.
    refill_interval: Option<String>,
}

/// Set a key's credit balance
///
/// Calls `apikey_set_credits(key_id, remaining, refill_amount, refill_interval)`.
///
/// Needs an operator key (`admin:*`); a partner's key gets 403 `forbidden` from the database.
#[utoipa::path(
    put,
    path = "/v1/keys/{key_id}/credits",
    tag = "credits",
    operation_id = "setKeyCredits",
    params(KeyIdPath),
    request_body = SetKeyCredits,
    responses(
        (status = 200, description = "The key's balance after the change.", body = schemas::KeyCredits),
        CallerErrors,
        BodyErrors,
        NotFound,
        Conflict,
    ),
)]
async fn set_key_credits(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
    Json(r): Json<SetKeyCredits>,
) -> Result<Managed, AppError> {
    managed(&state, &caller, async |tx| {
        check_interval(tx, "refill_interval", r.refill_interval.as_deref()).await?;
        tx.execute(
            "SELECT apikey_set_credits($1, $2, $3, $4::text::interval)",
            &[&key_id, &r.remaining, &r.refill_amount, &r.refill_interval],
        )
        .await?;
        key_credits(tx, &key_id).await
    })
    .await
}

/// A top-up, or (negative) a charge after the fact.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AddCreditsRequest)]
struct AddCredits {
    /// Added to the balance; negative charges it, and may take it below zero.
    amount: i64,
}

/// Top up (or charge) a key's credits
///
/// Calls `apikey_add_credits(key_id, amount)`; a key without a balance gets 409.
///
/// Needs an operator key (`admin:*`); a partner's key gets 403 `forbidden` from the database.
#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/credits",
    tag = "credits",
    operation_id = "addKeyCredits",
    params(KeyIdPath),
    request_body = AddCredits,
    responses(
        (status = 200, description = "The key's balance after the change.", body = schemas::KeyCredits),
        CallerErrors,
        BodyErrors,
        NotFound,
        Conflict,
    ),
)]
async fn add_key_credits(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
    Json(r): Json<AddCredits>,
) -> Result<Managed, AppError> {
    managed(&state, &caller, async |tx| {
        tx.execute("SELECT apikey_add_credits($1, $2)", &[&key_id, &r.amount])
            .await?;
        key_credits(tx, &key_id).await
    })
    .await
}

/// Show a partner's limits
///
/// The partner's rate (`apikey.partners.rate_per_minute`) and its balance as
/// `apikey_credits_state(partner_id => ...)` reports it, both shared by all its keys.
#[utoipa::path(
    get,
    path = "/v1/partners/{partner_id}/limits",
    tag = "credits",
    operation_id = "showPartnerLimits",
    params(PartnerIdPath),
    responses(
        (status = 200, description = "The partner's limits.", body = schemas::PartnerLimits),
        CallerErrors,
        NotFound,
    ),
)]
async fn show_partner_limits(
    State(state): State<AppState>,
    caller: Caller,
    Path(partner_id): Path<Uuid>,
) -> Result<Managed, AppError> {
    managed(&state, &caller, async |tx| {
        partner_limits(tx, partner_id).await
    })
    .await
}

/// The arguments of `apikey_partner_set_limits`: each call sets every limit, and one left
/// out or `null` is removed.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SetPartnerLimitsRequest)]
struct SetPartnerLimits {
    /// Verifications a minute across all the partner's keys.
    #[schema(minimum = 1)]
    rate_per_minute: Option<i32>,
    /// The balance all the partner's keys spend from.
    #[schema(minimum = 0)]
    credits: Option<i64>,
    #[schema(minimum = 0)]
    credits_refill_amount: Option<i64>,
    /// PostgreSQL interval text, as for a key's `refill_interval`.
    credits_refill_interval: Option<String>,
}

/// Set a partner's limits
///
/// Calls `apikey_partner_set_limits(partner_id, rate_per_minute, credits, credits_refill_amount,
/// credits_refill_interval)`.
///
/// Needs an operator key (`admin:*`); a partner's key gets 403 `forbidden` from the database.
#[utoipa::path(
    put,
    path = "/v1/partners/{partner_id}/limits",
    tag = "credits",
    operation_id = "setPartnerLimits",
    params(PartnerIdPath),
    request_body = SetPartnerLimits,
    responses(
        (status = 200, description = "The partner's limits after the change.", body = schemas::PartnerLimits),
        CallerErrors,
        BodyErrors,
        NotFound,
    ),
)]
async fn set_partner_limits(
    State(state): State<AppState>,
    caller: Caller,
    Path(partner_id): Path<Uuid>,
    Json(r): Json<SetPartnerLimits>,
) -> Result<Managed, AppError> {
    managed(&state, &caller, async |tx| {
        let interval = r.credits_refill_interval.as_deref();
        check_interval(tx, "credits_refill_interval", interval).await?;
        tx.execute(
            "SELECT apikey_partner_set_limits($1, $2, $3, $4, $5::text::interval)",
            &[
                &partner_id,
                &r.rate_per_minute,
                &r.credits,
                &r.credits_refill_amount,
                &r.credits_refill_interval,
            ],
        )
        .await?;
        partner_limits(tx, partner_id).await
    })
    .await
}

/// Top up (or charge) a partner's credits
///
/// Calls `apikey_partner_add_credits(partner_id, amount)`; a partner without a balance gets
/// 409.
///
/// Needs an operator key (`admin:*`); a partner's key gets 403 `forbidden` from the database.
#[utoipa::path(
    post,
    path = "/v1/partners/{partner_id}/credits",
    tag = "credits",
    operation_id = "addPartnerCredits",
    params(PartnerIdPath),
    request_body = AddCredits,
    responses(
        (status = 200, description = "The partner's limits after the change.", body = schemas::PartnerLimits),
        CallerErrors,
        BodyErrors,
        NotFound,
        Conflict,
    ),
)]
async fn add_partner_credits(
    State(state): State<AppState>,
    caller: Caller,
    Path(partner_id): Path<Uuid>,
    Json(r): Json<AddCredits>,
) -> Result<Managed, AppError> {
    managed(&state, &caller, async |tx| {
        tx.execute(
            "SELECT apikey_partner_add_credits($1, $2)",
            &[&partner_id, &r.amount],
        )
        .await?;
        partner_limits(tx, partner_id).await
    })
    .await
}
