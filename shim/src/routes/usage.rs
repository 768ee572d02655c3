//! `GET /v1/usage`: verification counts per bucket, key and reason (`apikey_usage`), counts
//! not yet written by the background worker included, and for one key its rate-limit state
//! (`apikey_rate_state`). A partner's key sees only its own partner's (the extension decides,
//! as for every management route).

use super::Managed;
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
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// Only this key.
    key_id: Option<String>,
    /// Only this partner's keys.
    partner_id: Option<Uuid>,
    /// From this time (RFC 3339); default 24 hours ago.
    since: Option<DateTime<Utc>>,
    /// Bucket size: a whole number of `s`, `m`, `h` or `d`, from `1m` to `366d`; default `1h`.
    #[param(pattern = "^[0-9]+[smhd]$", default = "1h")]
    bucket: Option<String>,
    /// Most rows returned (1 to 50000, default 5000); `truncated` says whether there were more.
    #[param(minimum = 1, maximum = 50_000, default = 5_000)]
    limit: Option<i64>,
}

pub const DEFAULT_ROWS: i64 = 5_000;
pub const MAX_ROWS: i64 = 50_000;

/// `60s`, `5m`, `1h`, `1d`: a whole number of seconds, minutes, hours or days, from a
/// minute to 366 days.
fn bucket_seconds(text: &str) -> Result<i64, AppError> {
    let refuse = || {
        AppError::invalid_field(
            "bucket",
            "bucket must be a whole number of s, m, h or d (e.g. 5m, 1h), from 1m to 366d",
        )
    };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| refuse())?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(refuse)?,
        "h" => n.checked_mul(3_600).ok_or_else(refuse)?,
        "d" => n.checked_mul(86_400).ok_or_else(refuse)?,
        _ => return Err(refuse()),
    };
    if (60..=366 * 86_400).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(refuse())
    }
}

/// Verification counts per bucket, key and reason
///
/// Counts of every `apikey_verify` outcome (`apikey_usage`), counts not yet written by the
/// background worker included; `key_id` is null for tokens that named no existing key. Buckets are
/// aligned to UTC; `since` is rounded down to the start of its bucket.
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "usage",
    operation_id = "getUsage",
    params(UsageQuery),
    responses(
        (status = 200, description = "The counts, oldest bucket first.", body = schemas::Usage),
        CallerErrors,
        InvalidInput,
    ),
)]
async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<UsageQuery>,
) -> Result<Managed, AppError> {
    let bucket = bucket_seconds(q.bucket.as_deref().unwrap_or("1h"))?;
    let limit = q.limit.unwrap_or(DEFAULT_ROWS);
    if !(1..=MAX_ROWS).contains(&limit) {
        return Err(AppError::invalid_field(
            "limit",
            format!("limit must be between 1 and {MAX_ROWS}"),
        ));
    }
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let rows = tx
        .query(
            // Every column: bucket, key_id, reason, count, and from 0.8.0 spent.
            "SELECT to_jsonb(u) \
             FROM apikey_usage($1, $2, coalesce($3, now() - interval '24 hours'), \
                               make_interval(secs => $4)) AS u \
             LIMIT $5",
            &[
                &q.key_id,
                &q.partner_id,
                &q.since,
                &(bucket as f64),
                &(limit + 1),
            ],
        )
        .await?;
    // For one key, where it stands against its rate limit now (null where the caller may not
    // see the key, or it does not exist: the last statement, so its error costs nothing).
    let rate = match &q.key_id {
        Some(key_id) => tx
            .query_opt(
                "SELECT jsonb_build_object('rate_per_minute', rate_per_minute, \
                        'remaining', remaining, 'reset_seconds', reset_seconds) \
                 FROM apikey_rate_state($1)",
                &[key_id],
            )
            .await
            .ok()
            .flatten()
            .and_then(|row| row.try_get::<_, serde_json::Value>(0).ok()),
        None => None,
    };
    if rate.is_some() || q.key_id.is_none() {
        tx.commit().await?;
    }
    let truncated = rows.len() as i64 > limit;
    let items = rows
        .iter()
        .take(limit as usize)
        .map(|row| row.try_get::<_, serde_json::Value>(0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Managed::ok(json!({
        "bucket_seconds": bucket,
        "items": items,
        "truncated": truncated,
        "rate": rate,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_whole_units_from_a_minute_to_a_year() {
        assert_eq!(bucket_seconds("1h").ok(), Some(3_600));
        assert_eq!(bucket_seconds("5m").ok(), Some(300));
        assert_eq!(bucket_seconds("60s").ok(), Some(60));
        assert_eq!(bucket_seconds("366d").ok(), Some(366 * 86_400));
        for bad in [
            "",
            "h",
            "1",
            "59s",
            "367d",
            "1w",
            "-1h",
            "1.5h",
            "9999999999999999999d",
        ] {
            assert!(bucket_seconds(bad).is_err(), "{bad}");
        }
    }
}
