//! Importing keys another system issued: `POST /v1/keys/import`, many `apikey_import` calls
//! in one transaction, each in a savepoint of its own so that one refused key costs only
//! itself.

use super::credits::check_interval;
use super::keys::check_cidrs;
use super::Managed;
use crate::caller::Caller;
use crate::db;
use crate::error::AppError;
use crate::extract::Json;
use crate::openapi::answers::{BodyErrors, CallerErrors};
use crate::openapi::schemas;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, State};
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Most keys one request imports.
pub const MAX_KEYS: usize = 1_000;
/// A request of `MAX_KEYS` keys with names, tags and a little metadata fits; the shim's
/// usual limit (`APIKEY_SHIM_MAX_BODY_BYTES`) is for one object.
const MAX_BODY_BYTES: usize = 4 << 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Keys to import, each as `apikey_import` takes it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ImportKeysRequest)]
struct ImportRequest {
    #[schema(max_items = 1000)]
    keys: Vec<ImportedKey>,
}

/// One key from another system, by the hash that system stored (never its token).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ImportedKey {
    partner_id: Uuid,
    /// The other system's stored hash: hex SHA-256, an Argon2id PHC string or a bcrypt
    /// string.
    stored_hash: String,
    /// `sha256`, `argon2id-hmac`, `bcrypt` or `argon2id`.
    #[schema(example = "sha256")]
    hash_format: String,
    #[schema(value_type = Vec<schemas::Scope>, max_items = 64)]
    scopes: Vec<String>,
    /// How a token finds its key: none for `sha256`, the id before the dot for
    /// `argon2id-hmac`, a prefix of the token (4 to 64 characters) for `bcrypt` and `argon2id`.
    lookup: Option<String>,
    #[schema(max_length = 200)]
    name: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    not_before: Option<DateTime<Utc>>,
    #[schema(minimum = 1, default = 300)]
    rate_per_minute: Option<i32>,
    /// CIDRs the key may be used from; `null` (default) means any address.
    #[schema(min_items = 1)]
    allowed_cidrs: Option<Vec<String>>,
    #[schema(schema_with = schemas::environment_schema)]
    environment: Option<String>,
    #[schema(max_items = 32, default = json!([]))]
    tags: Option<Vec<String>>,
    /// A JSON object of at most 16 KiB; default `{}`.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// The prefix of the native token the key rotates to; default from the GUC
    /// `apikey.default_prefix` (`ak`).
    #[schema(pattern = "^[a-z][a-z0-9]{0,15}$")]
    prefix: Option<String>,
    /// A credit balance; `null` (default) means unlimited.
    #[schema(minimum = 0)]
    credits: Option<i64>,
    /// With `credits_refill_interval`: what the balance is set back to at every interval.
    #[schema(minimum = 0)]
    credits_refill_amount: Option<i64>,
    /// PostgreSQL interval text, at least a second (`1 month`, `1 day`).
    credits_refill_interval: Option<String>,
}

/// Import keys from another system
///
/// Calls `apikey_import(...)` for each key, in one transaction: up to 1,000 keys, answered
/// one by one in their order (`imported` with the new `key_id`, `duplicate` when the key's
/// lookup or hash was imported before, or `refused` with the error `apikey_import` gave).
/// Partners keep presenting the tokens they have.
///
/// Needs an operator key (`admin:*`); a partner's key gets 403 `forbidden`.
#[utoipa::path(
    post,
    path = "/v1/keys/import",
    tag = "keys",
    operation_id = "importKeys",
    request_body = ImportRequest,
    responses(
        (
            status = 200,
            description = "One answer per key, in the request's order.",
            body = schemas::ImportResults,
        ),
        CallerErrors,
        BodyErrors,
    ),
)]
async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Json(r): Json<ImportRequest>,
) -> Result<Managed, AppError> {
    if r.keys.len() > MAX_KEYS {
        return Err(AppError::invalid_field(
            "keys",
            format!("at most {MAX_KEYS} keys per request, not {}", r.keys.len()),
        ));
    }
    let mut conn = state.connection().await?;
    let mut tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let mut results = Vec::with_capacity(r.keys.len());
    let mut imported = 0;
    for (index, key) in r.keys.iter().enumerate() {
        let mut result = match import_one(&mut tx, key).await? {
            Ok(key_id) => {
                imported += 1;
                json!({ "outcome": "imported", "key_id": key_id })
            }
            Err(refused) => refused,
        };
        result["index"] = json!(index);
        results.push(result);
    }
    tx.commit().await?;
    Ok(Managed::ok(
        json!({ "imported": imported, "results": results }),
    ))
}

/// One key in a savepoint of its own: `Ok(Ok(key_id))` when imported, `Ok(Err(answer))` when
/// refused (the savepoint rolled back), `Err` when the whole request must fail: the caller may
/// not import at all, or the database failed rather than refused.
async fn import_one(
    tx: &mut Transaction<'_>,
    key: &ImportedKey,
) -> Result<Result<String, Value>, AppError> {
    if let Some(cidrs) = &key.allowed_cidrs {
        if let Err(e) = check_cidrs(cidrs) {
            return Ok(Err(refused(&e, "refused")));
        }
    }
    // Dropping the savepoint unfinished rolls it back.
    let savepoint = tx.savepoint("import_key").await?;
    let interval = key.credits_refill_interval.as_deref();
    if let Err(e) = check_interval(&savepoint, "credits_refill_interval", interval).await {
        return match e {
            AppError::Unprocessable { .. } => Ok(Err(refused(&e, "refused"))),
            e => Err(e),
        };
    }
    let answer = savepoint
        .query_one(
            "SELECT apikey_import($1::uuid, $2::text, $3::text, $4::text[], $5::text, \
                $6::text, $7::timestamptz, $8::timestamptz, coalesce($9::int, 300), \
                $10::text[]::cidr[], coalesce($11::text, 'live'), coalesce($12::text[], '{}'), \
                coalesce($13::jsonb, '{}'), $14::text, $15::bigint, $16::bigint, \
                $17::text::interval)",
            &[
                &key.partner_id,
                &key.stored_hash,
                &key.hash_format,
                &key.scopes,
                &key.lookup,
                &key.name,
                &key.expires_at,
                &key.not_before,
                &key.rate_per_minute,
                &key.allowed_cidrs,
                &key.environment,
                &key.tags,
                &key.metadata,
                &key.prefix,
                &key.credits,
                &key.credits_refill_amount,
                &key.credits_refill_interval,
            ],
        )
        .await;
    match answer {
        Ok(row) => {
            let key_id = row.try_get::<_, String>(0)?;
            savepoint.commit().await?;
            Ok(Ok(key_id))
        }
        Err(e) => refusal(e).map(Err),
    }
}

/// The answer for a key `apikey_import` refused; `Err` when the error is not the key's fault.
fn refusal(e: tokio_postgres::Error) -> Result<Value, AppError> {
    let Some(db) = e.as_db_error() else {
        return Err(AppError::from(e));
    };
    let code = db.code().code().to_string();
    let per_key = code.starts_with("22") || matches!(code.as_str(), "23505" | "P0002" | "55000");
    if !per_key {
        return Err(AppError::from(e));
    }
    let field = db
        .detail()
        .and_then(apikey_contract::argument::from_detail)
        .map(str::to_string);
    let outcome = if code == "23505" {
        "duplicate"
    } else {
        "refused"
    };
    let mut body = refused(&AppError::from(e), outcome);
    if let Some(field) = field {
        body["field"] = json!(field);
    }
    Ok(body)
}

fn refused(e: &AppError, outcome: &str) -> Value {
    let mut body = e.body();
    body["outcome"] = json!(outcome);
    body
}
