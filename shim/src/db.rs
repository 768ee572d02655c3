//! The connection pool and the two ways a request meets the database: a single
//! `apikey_verify` call, or a transaction that starts with one and then acts as the key's
//! holder (an operator, or a partner narrowed with `SET LOCAL ROLE apikey_partner`).
//!
//! Behind a pooler in transaction mode (pgbouncer) each transaction may run on another server
//! connection, where a statement prepared on the last one does not exist. So no statement is
//! kept across requests, except those of [`query_one`] with [`Statements::Prepared`], and
//! the rest are sent unnamed with their parameter types (`query_typed`) or prepared and
//! closed within one transaction.

use crate::auth::PresentedKey;
use crate::caller::Caller;
use crate::error::AppError;
use crate::rate::{Credits, Limits, Rate};
use crate::state::AppState;
use apikey_contract::reason::Reason;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Transaction,
};
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;
use uuid::Uuid;

/// The pool of connections to `database_url`. Each connection's statements are cut off by
/// the server after `statement_timeout` (a request past its own time limit has been
/// answered already), and connecting is given up on after `connect_timeout` (a host that
/// drops packets is otherwise waited for minutes), unless the connection string sets its
/// own `statement_timeout` or `connect_timeout`.
pub fn pool(
    database_url: &str,
    size: usize,
    statement_timeout: Duration,
    connect_timeout: Duration,
) -> Result<Pool, String> {
    let mut config = connection_config(database_url, statement_timeout)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(connect_timeout);
    }
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        // Fast recycling: a connection whose socket closed (server restart) is replaced; one
        // that breaks unnoticed fails its request with 503 and is dropped. Verified recycling
        // would add a round trip to every request.
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        // Timers for the limits replicas put on waiting and connecting (`connect_timeout`
        // bounds only the TCP connect, not a startup a stopped server never answers).
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| format!("cannot build the connection pool: {e}"))
}

fn connection_config(
    database_url: &str,
    statement_timeout: Duration,
) -> Result<tokio_postgres::Config, String> {
    let mut config = tokio_postgres::Config::from_str(database_url)
        .map_err(|e| format!("DATABASE_URL is not a valid connection string: {e}"))?;
    let options = config.get_options().unwrap_or_default().to_string();
    if !options.contains("statement_timeout") {
        let ms = statement_timeout.as_millis().max(1);
        config.options(format!("{options} -c statement_timeout={ms}").trim_start());
    }
    Ok(config)
}

/// One row of `apikey_verify`, read in place from the row it came in.
pub struct Verdict<'r> {
    pub valid: bool,
    pub reason: &'r str,
    pub key_id: Option<&'r str>,
    pub partner_id: Option<Uuid>,
    pub scopes: Option<Vec<&'r str>>,
    pub rate_per_minute: Option<i32>,
    pub limits: Limits,
}

impl<'r> Verdict<'r> {
    /// Columns by position, in the contract's order (`SELECT *`), then
    /// `apikey_last_rates(key_id)`; `expires_at` (6) is not needed.
    pub fn from_row(row: &'r Row) -> Result<Self, AppError> {
        let reason: &str = row.try_get(1)?;
        let rate_per_minute: Option<i32> = row.try_get(5)?;
        let limits = limits_of(
            reason,
            rate_per_minute,
            row.try_get(7)?,
            row.try_get(8)?,
            row.try_get(9)?,
            row.try_get(10)?,
        );
        Ok(Verdict {
            valid: row.try_get(0)?,
            reason,
            key_id: row.try_get(2)?,
            partner_id: row.try_get(3)?,
            scopes: row.try_get(4)?,
            rate_per_minute,
            limits,
        })
    }

    /// Notes the limits for the response's fields.
    pub fn note_limits(&self, caller: &Caller) {
        caller.note.limits(self.limits);
    }

    /// The error for a verification that failed.
    pub fn refusal(&self) -> AppError {
        refusal(self.reason, self.limits)
    }
}

/// The limits as `apikey_verify` reports them (`rate_remaining`, `rate_reset_seconds`,
/// `credits_remaining`), each bucket told apart by `apikey_last_rates` when the partner has a
/// rate of its own (`{key_remaining, key_reset_seconds, partner_rate_per_minute,
/// partner_remaining, partner_reset_seconds}`; the key's bucket refuses before the partner's is
/// consulted, so with both, a refusal is the partner's). Refused for want of credits, the
/// reset is the time until the short balance's refill (NULL without one), and no bucket is
/// reported: what was taken from them was given back.
fn limits_of(
    reason: &str,
    quota: Option<i32>,
    remaining: Option<i32>,
    reset_seconds: Option<i32>,
    credits: Option<i64>,
    buckets: Option<Vec<Option<i32>>>,
) -> Limits {
    let short = reason == Reason::UsageExceeded.as_str();
    let refused = reason == Reason::RateLimited.as_str();
    let credits = credits.map(|remaining| Credits {
        remaining,
        refill_in: if short { reset_seconds } else { None },
        refused: short,
    });
    if short {
        return Limits {
            credits,
            ..Limits::default()
        };
    }
    let bucket = |quota: Option<i32>, remaining, reset_seconds, refused| {
        Some(Rate {
            quota: quota?,
            remaining: remaining?,
            reset_seconds: reset_seconds?,
            refused,
        })
    };
    match buckets.as_deref() {
        Some(&[key_left, key_reset, partner_quota, partner_left, partner_reset]) => Limits {
            key: bucket(quota, key_left, key_reset, false),
            partner: bucket(partner_quota, partner_left, partner_reset, refused),
            credits,
        },
        _ => Limits {
            key: bucket(quota, remaining, reset_seconds, refused),
            partner: None,
            credits,
        },
    }
}

/// The error for a failed verification with `reason`: 429 with the rate-limit or credit
/// fields, or the status of the reason.
fn refusal(reason: &str, limits: Limits) -> AppError {
    let refused_by_bucket = [limits.key, limits.partner]
        .into_iter()
        .flatten()
        .any(|rate| rate.refused);
    if refused_by_bucket {
        AppError::RateLimited(limits)
    } else if limits.credits.is_some_and(|c| c.refused) {
        AppError::UsageExceeded(limits)
    } else {
        AppError::from_reason(reason)
    }
}

/// How the statements of the hot paths (verification, health) reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Statements {
    /// Prepared once per pooled connection and reused: the server neither parses nor plans
    /// them again.
    Prepared,
    /// Sent unnamed with their parameter types, parsed and planned each time: what a pooler
    /// in transaction mode needs.
    Unnamed,
}

/// A pooled connection or a transaction on one: with deadpool's statement cache, and as the
/// tokio-postgres client under it, which sends unnamed statements.
pub trait Session: GenericClient {
    type Plain: tokio_postgres::GenericClient + Sync;
    fn plain(&self) -> &Self::Plain;
}

impl Session for Object {
    type Plain = tokio_postgres::Client;
    fn plain(&self) -> &tokio_postgres::Client {
        self
    }
}

impl<'a> Session for Transaction<'a> {
    type Plain = tokio_postgres::Transaction<'a>;
    fn plain(&self) -> &tokio_postgres::Transaction<'a> {
        self
    }
}

/// The one row of `sql`, sent as `statements` says.
pub async fn query_one(
    session: &impl Session,
    statements: Statements,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Row, tokio_postgres::Error> {
    match statements {
        Statements::Prepared => {
            let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
            let statement = session.prepare_typed_cached(sql, &types).await?;
            let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
            session.query_one(&statement, &values).await
        }
        Statements::Unnamed => {
            tokio_postgres::GenericClient::query_typed_one(session.plain(), sql, params).await
        }
    }
}

/// Calls `apikey_verify`; read the row with [`Verdict::from_row`]. `cost`: the credits the
/// verification spends, when not the default of 1.
pub async fn verify(
    client: &Object,
    statements: Statements,
    key: &PresentedKey,
    required_scopes: &[String],
    client_ip: IpAddr,
    cost: Option<i32>,
) -> Result<Row, AppError> {
    // All columns, in the contract's order, so the server need not project; without
    // required scopes the default '{}' stands in for an array parameter to encode and decode.
    let token = key.token();
    let row = if let Some(cost) = cost {
        query_one(
            client,
            statements,
            "SELECT v.*, apikey_last_rates(v.key_id) FROM apikey_verify($1, $2, $3, $4) v",
            &[
                (&token, Type::TEXT),
                (&required_scopes, Type::TEXT_ARRAY),
                (&client_ip, Type::INET),
                (&cost, Type::INT4),
            ],
        )
        .await?
    } else if required_scopes.is_empty() {
        query_one(
            client,
            statements,
            "SELECT v.*, apikey_last_rates(v.key_id) FROM apikey_verify($1, client_ip => $2) v",
            &[(&token, Type::TEXT), (&client_ip, Type::INET)],
        )
        .await?
    } else {
        query_one(
            client,
            statements,
            "SELECT v.*, apikey_last_rates(v.key_id) FROM apikey_verify($1, $2, $3) v",
            &[
                (&token, Type::TEXT),
                (&required_scopes, Type::TEXT_ARRAY),
                (&client_ip, Type::INET),
            ],
        )
        .await?
    };
    Ok(row)
}

/// Starts the transaction of a management request acting as the caller's key holder. If
/// the key is refused, the transaction is still committed: it holds the audit row of the
/// failed verification, which a rollback would erase.
pub async fn begin_as_key_holder<'c>(
    conn: &'c mut Object,
    state: &AppState,
    caller: &Caller,
) -> Result<Transaction<'c>, AppError> {
    let tx = conn.transaction().await?;
    match act_as_key_holder(&tx, state, caller).await {
        Ok(()) => Ok(tx),
        Err(refusal) => {
            tx.commit().await?;
            Err(refusal)
        }
    }
}

/// Verifies the presented key inside `tx` and makes the transaction act with that key's
/// powers: an `admin:*` key keeps the shim's operator role; a `keys:manage` key switches to
/// `apikey_partner` for the rest of the transaction, so row-level security and the
/// extension's own checks confine it to its partner. Any other key is refused. Managing
/// spends no credits (cost 0): a key or partner whose balance is below zero is refused.
async fn act_as_key_holder(
    tx: &Transaction<'_>,
    state: &AppState,
    caller: &Caller,
) -> Result<(), AppError> {
    let row = query_one(
        tx,
        state.config.statements,
        "SELECT v.valid, v.reason, v.key_id, v.rate_per_minute, \
                    coalesce(apikey_has_scope(v.scopes, 'admin:*'), false), \
                    coalesce(apikey_has_scope(v.scopes, 'keys:manage'), false), \
                    v.rate_remaining, v.rate_reset_seconds, v.credits_remaining, \
                    apikey_last_rates(v.key_id) \
             FROM apikey_verify($1, '{}', $2, 0) AS v",
        &[(&caller.key.token(), Type::TEXT), (&caller.ip, Type::INET)],
    )
    .await?;
    let valid: bool = row.try_get(0)?;
    let reason: String = row.try_get(1)?;
    state.metrics.verify_outcome(&reason);
    let limits = limits_of(
        &reason,
        row.try_get(3)?,
        row.try_get(6)?,
        row.try_get(7)?,
        row.try_get(8)?,
        row.try_get(9)?,
    );
    caller.note.limits(limits);
    if let Some(key_id) = row.try_get::<_, Option<String>>(2)? {
        caller.note.key_id(&key_id);
    }
    if !valid {
        return Err(refusal(&reason, limits));
    }
    let is_admin: bool = row.try_get(4)?;
    let can_manage: bool = row.try_get(5)?;
    if !is_admin && !can_manage {
        return Err(AppError::Forbidden {
            reason: "insufficient_scope".into(),
            message: "managing keys needs a key with scope admin:* or keys:manage".into(),
        });
    }
    if !is_admin {
        tx.batch_execute("SET LOCAL ROLE apikey_partner").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_cut_off_at_the_request_time_limit_unless_the_url_says_otherwise() {
        let second = Duration::from_secs(1);
        let options = |url: &str| {
            connection_config(url, second)
                .expect("a valid url")
                .get_options()
                .map(str::to_string)
        };
        assert_eq!(
            options("host=/run/x dbname=apikey").as_deref(),
            Some("-c statement_timeout=1000")
        );
        assert_eq!(
            options("host=/run/x options='-c search_path=a'").as_deref(),
            Some("-c search_path=a -c statement_timeout=1000")
        );
        assert_eq!(
            options("postgresql://u@h/db?options=-c%20statement_timeout%3D5s").as_deref(),
            Some("-c statement_timeout=5s")
        );
        assert!(connection_config("host='unterminated", second).is_err());
    }
}
