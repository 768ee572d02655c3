//! `apikey_usage(...)`: verification counts and the credits they spent per bucket, key and
//! reason, from `apikey.usage` plus what the server has counted but the worker not yet
//! written. Operators see every
//! partner's; a partner (a `keys:manage` key verified in the transaction) only its own.

use crate::error::{ApiError, ApiResult, OrRaise};
use crate::shared::{self, usage};
use crate::{access, flush, identity};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;

#[pg_extern(name = "apikey_usage", stable, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_usage_with_spent(
    key_id: default!(Option<&str>, "NULL"),
    partner_id: default!(Option<pgrx::Uuid>, "NULL"),
    since: default!(Option<TimestampWithTimeZone>, "now() - interval '24 hours'"),
    bucket: default!(Option<Interval>, "'1 hour'"),
) -> TableIterator<
    'static,
    (
        name!(bucket, TimestampWithTimeZone),
        name!(key_id, Option<String>),
        name!(reason, String),
        name!(count, i64),
        name!(spent, i64),
    ),
> {
    TableIterator::new(report(key_id, partner_id, since, bucket, true).or_raise())
}

/// `apikey_usage` as releases before 0.8.0 declare it (without `spent`), for a database not
/// yet updated to this library's release; never declared by this release's SQL.
#[pg_extern(sql = false, stable, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_usage(
    key_id: Option<&str>,
    partner_id: Option<pgrx::Uuid>,
    since: Option<TimestampWithTimeZone>,
    bucket: Option<Interval>,
) -> TableIterator<
    'static,
    (
        name!(bucket, TimestampWithTimeZone),
        name!(key_id, Option<String>),
        name!(reason, String),
        name!(count, i64),
    ),
> {
    let rows = report(key_id, partner_id, since, bucket, false).or_raise();
    TableIterator::new(rows.into_iter().map(|(b, k, r, c, _)| (b, k, r, c)))
}

type Row = (TimestampWithTimeZone, Option<String>, String, i64, i64);

/// Whether the rows transaction `xid` wrote are in what this query reads (committed before
/// its snapshot): then counts that transaction had in flight are not added again.
fn visible(xid: u32) -> bool {
    let xid = pg_sys::TransactionId::from(xid);
    // SAFETY: the active snapshot is the query's own while the function runs; the checks
    // only read the snapshot and the commit log.
    unsafe {
        !pg_sys::XidInMVCCSnapshot(xid, pg_sys::GetActiveSnapshot())
            && pg_sys::TransactionIdDidCommit(xid)
    }
}

/// `apikey_rate_state(key_id)`: where a key stands against its rate limit now, taking
/// nothing (for the console). Operators may ask about any key; a partner (with a key verified
/// in the transaction) about its own; anyone else is told the key does not exist.
#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_rate_state(
    key_id: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(rate_per_minute, i32),
        name!(remaining, Option<i32>),
        name!(reset_seconds, Option<i32>),
    ),
> {
    TableIterator::once(rate_state(key_id).or_raise())
}

fn rate_state(key_id: Option<&str>) -> ApiResult<(i32, Option<i32>, Option<i32>)> {
    let key_id = key_id.ok_or_else(|| ApiError::null("key_id"))?;
    // A key in its grace period spends its successor's bucket (`StoredKey::rate_bucket`).
    let row = Spi::get_three_with_args::<pgrx::Uuid, i32, String>(
        "SELECT partner_id, rate_per_minute, \
            CASE WHEN revoked_at > clock_timestamp() THEN rotated_to END \
         FROM apikey.keys WHERE key_id = $1",
        &[key_id.into()],
    );
    let (partner, rate, successor) = match row {
        Ok((Some(partner), Some(rate), successor)) => (partner, rate, successor),
        _ => return Err(access::key_not_found(key_id)),
    };
    let allowed = access::is_admin()
        || identity::current().is_some_and(|caller| caller.partner_id == partner);
    if !allowed {
        return Err(access::key_not_found(key_id));
    }
    let bucket = successor.as_deref().unwrap_or(key_id);
    let state = shared::keys::peek(bucket, rate, crate::clock::now());
    Ok((
        rate,
        state.map(|s| s.remaining),
        state.map(|s| s.reset_seconds),
    ))
}

fn report(
    key_id: Option<&str>,
    partner_id: Option<pgrx::Uuid>,
    since: Option<TimestampWithTimeZone>,
    bucket: Option<Interval>,
    with_spent: bool,
) -> ApiResult<Vec<Row>> {
    let since = since.ok_or_else(|| ApiError::null("since"))?;
    let bucket = bucket.ok_or_else(|| ApiError::null("bucket"))?;
    // Operators choose any partner; a partner sees its own rows whatever it asks for.
    let partner = if access::is_admin() {
        partner_id
    } else {
        match identity::current() {
            Some(caller) if partner_id.is_none_or(|p| p == caller.partner_id) => {
                Some(caller.partner_id)
            }
            _ => return Ok(Vec::new()),
        }
    };
    let [minutes, key_ids, partners, reasons, counts, spent] =
        flush::usage_arrays(&usage::pending(shared::database(), visible))?;
    // A database before 0.8.0 has no apikey.usage.spent (and no balances to spend from).
    let stored_spent = if with_spent {
        "spent"
    } else {
        "0::bigint AS spent"
    };
    Spi::connect(|client| {
        let valid = client
            .select(
                "SELECT $1 >= interval '1 minute' AND date_part('month', $1) = 0 \
                        AND date_part('year', $1) = 0",
                Some(1),
                &[bucket.into()],
            )?
            .first()
            .get::<bool>(1)?
            .unwrap_or(false);
        if !valid {
            return Err(ApiError::invalid(
                "bucket",
                "must be at least a minute and hold no months or years",
            ));
        }
        let rows = client.select(
            &format!(
                "WITH everything AS ( \
                     SELECT minute, key_id, partner_id, reason, count, {stored_spent} \
                     FROM apikey.usage \
                     UNION ALL \
                     SELECT * FROM unnest($5::timestamptz[], $6::text[], $7::uuid[], \
                                          $8::text[], $9::bigint[], $10::bigint[]) \
                 ) \
                 SELECT date_bin($4, minute, timestamptz '2000-01-01 00:00:00+00'), key_id, \
                        reason, sum(count)::bigint, sum(spent)::bigint \
                 FROM everything \
                 WHERE minute >= date_bin($4, $3, timestamptz '2000-01-01 00:00:00+00') \
                   AND ($1::text IS NULL OR key_id = $1) \
                   AND ($2::uuid IS NULL OR partner_id = $2) \
                 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ),
            None,
            &[
                key_id.into(),
                partner.into(),
                since.into(),
                bucket.into(),
                minutes,
                key_ids,
                partners,
                reasons,
                counts,
                spent,
            ],
        )?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    row.get::<TimestampWithTimeZone>(1)?
                        .ok_or_else(|| ApiError::internal("a usage bucket without a time"))?,
                    row.get::<String>(2)?,
                    row.get::<String>(3)?.unwrap_or_default(),
                    row.get::<i64>(4)?.unwrap_or(0),
                    row.get::<i64>(5)?.unwrap_or(0),
                ))
            })
            .collect()
    })
}
