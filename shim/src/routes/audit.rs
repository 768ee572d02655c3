//! `GET /v1/audit`: the audit log, newest first, filtered by key, partner, action and time.
//! A partner's key sees only its partner's rows (row-level security).

use super::{decode_cursor, page, page_size, Managed};
use crate::app::Caller;
use crate::db;
use crate::error::AppError;
use crate::extract::Query;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListAudit {
    key_id: Option<String>,
    partner_id: Option<Uuid>,
    action: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<ListAudit>,
) -> Result<Managed, AppError> {
    let limit = page_size(f.limit)?;
    let before: Option<i64> = decode_cursor(f.cursor.as_deref())?;
    let mut conn = state.pool.get().await?;
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
