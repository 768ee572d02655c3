//! `GET /v1/audit`: the audit log, newest first, filtered by key, partner, action and time.
//! A partner's key sees only its partner's rows (row-level security).

use super::{decode_cursor, page, page_size, Managed};
use crate::caller::Caller;
use crate::db;
use crate::error::AppError;
use crate::extract::Query;
use crate::openapi::answers::{CallerErrors, InvalidInput};
use crate::openapi::schemas;
use crate::state::AppState;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListAudit {
    /// Only rows about this key id.
    key_id: Option<String>,
    /// Only rows about this partner.
    partner_id: Option<Uuid>,
    /// Only this action, e.g. `revoke` or `verify_failed`.
    action: Option<String>,
    /// Only rows at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Only rows before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Page size (out of range: 422).
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (one this API did not return: 422).
    cursor: Option<String>,
}

/// Read the audit log
///
/// Lifecycle events and failed verifications, newest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    operation_id = "listAudit",
    params(ListAudit),
    responses(
        (status = 200, description = "One page of audit rows.", body = schemas::AuditList),
        CallerErrors,
        InvalidInput,
    ),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<ListAudit>,
) -> Result<Managed, AppError> {
    let limit = page_size(f.limit)?;
    let before: Option<i64> = decode_cursor(f.cursor.as_deref())?;
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let rows = tx
        .query(
            "SELECT to_jsonb(a), a.id FROM apikey.audit_log a \
             WHERE ($1::text IS NULL OR a.key_id = $1) \
               AND ($2::uuid IS NULL OR a.partner_id = $2) \
               AND ($3::text IS NULL OR a.action = $3) \
               AND ($4::timestamptz IS NULL OR a.at >= $4) \
               AND ($5::timestamptz IS NULL OR a.at < $5) \
               AND ($6::bigint IS NULL OR a.id < $6) \
             ORDER BY a.id DESC LIMIT $7",
            &[
                &f.key_id,
                &f.partner_id,
                &f.action,
                &f.from,
                &f.to,
                &before,
                &(limit + 1),
            ],
        )
        .await?;
    tx.commit().await?;
    page(&rows, limit, |row| row.try_get::<_, i64>(1))
}
