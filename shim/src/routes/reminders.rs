//! Reminders: the live keys that need someone's attention now, the keys expiring within 7
//! days and the keys due for rotation, for the console's Reminders panel. One transaction
//! acting as the caller's key holder (see `db::act_as_key_holder`): a partner's key sees
//! only its own partner's keys and events, by row-level security.
//!
//! "Due for rotation" is what the extension decided, not a second rule computed here: a
//! `key.rotation_due` event exists for the key (`apikey_send_reminders` writes it once, when
//! the key is older than `apikey.rotation_period`, a setting only the database knows).

use super::Managed;
use crate::caller::Caller;
use crate::db;
use crate::error::AppError;
use crate::extract::Query;
use crate::openapi::answers::{CallerErrors, InvalidInput};
use crate::openapi::schemas;
use crate::state::AppState;
use apikey_contract::limits;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(reminders))
}

/// Most keys in each list. The panel is a to-do list, not a report: a partner with more
/// than this needs the keys table's filters, and `truncated` says so.
const MAX_ITEMS: i64 = 200;

/// A key as `GET /v1/keys` shows it (`apikey.key_info` and its partner's name), expiring
/// within `EXPIRING_SOON_DAYS` ($3), the window of `key.expiring`'s first reminder and of the
/// console's "expiring" status.
/// Keys in a rotation's grace (`rotated_to` set) are left out of both lists: their successor
/// exists, and the extension sends them no reminder either.
const EXPIRING_SQL: &str = "SELECT to_jsonb(k) || jsonb_build_object('partner_name', p.name) \
     FROM apikey.key_info k JOIN apikey.partners p ON p.partner_id = k.partner_id \
     WHERE k.status = 'live' AND k.rotated_to IS NULL \
       AND k.expires_at <= now() + make_interval(days => $3) \
       AND ($1::uuid IS NULL OR k.partner_id = $1) \
     ORDER BY k.expires_at, k.key_id LIMIT $2";

/// `due_since` is the first `key.rotation_due` event of the key (there is one, unless the
/// retention removed it; then the key is no longer listed here, though still old).
const ROTATION_DUE_SQL: &str = "SELECT to_jsonb(k) || jsonb_build_object('partner_name', p.name, \
            'due_since', e.due_since) \
     FROM (SELECT ev.key_id, min(ev.created_at) AS due_since FROM apikey.events ev \
           WHERE ev.type = 'key.rotation_due' AND ev.key_id IS NOT NULL \
             AND ($1::uuid IS NULL OR ev.partner_id = $1) \
           GROUP BY ev.key_id) e \
     JOIN apikey.key_info k ON k.key_id = e.key_id \
     JOIN apikey.partners p ON p.partner_id = k.partner_id \
     WHERE k.status = 'live' AND k.rotated_to IS NULL \
     ORDER BY e.due_since, k.key_id LIMIT $2";

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListReminders {
    /// Only this partner's keys.
    partner_id: Option<Uuid>,
}

/// Keys expiring soon and keys due for rotation
///
/// Live keys that need attention, for the console's Reminders panel: `expiring`, keys whose
/// `expires_at` is within 7 days, soonest first; `rotation_due`, keys for which the extension wrote
/// a `key.rotation_due` event (`apikey_send_reminders`, when a key is older than
/// `apikey.rotation_period`), with `due_since`, that event's time, oldest first. Keys in a
/// rotation's grace (`rotated_to` set) are in neither list. Each list holds at most 200 keys;
/// `truncated` says whether one was cut.
#[utoipa::path(
    get,
    path = "/v1/reminders",
    tag = "keys",
    operation_id = "listReminders",
    params(ListReminders),
    responses(
        (status = 200, description = "The two lists.", body = schemas::Reminders),
        CallerErrors,
        InvalidInput,
    ),
)]
async fn reminders(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<ListReminders>,
) -> Result<Managed, AppError> {
    let mut conn = state.connection().await?;
    let tx = db::begin_as_key_holder(&mut conn, &state, &caller).await?;
    let expiring = tx
        .query(
            EXPIRING_SQL,
            &[&f.partner_id, &(MAX_ITEMS + 1), &limits::EXPIRING_SOON_DAYS],
        )
        .await?;
    let rotation_due = tx
        .query(ROTATION_DUE_SQL, &[&f.partner_id, &(MAX_ITEMS + 1)])
        .await?;
    tx.commit().await?;
    let (expiring, expiring_cut) = capped(&expiring)?;
    let (rotation_due, rotation_cut) = capped(&rotation_due)?;
    Ok(Managed::ok(json!({
        "expiring": expiring,
        "rotation_due": rotation_due,
        "truncated": expiring_cut || rotation_cut,
    })))
}

/// The JSON of column 0 of at most `MAX_ITEMS` rows (the queries ask for one more), and
/// whether there were more.
fn capped(rows: &[tokio_postgres::Row]) -> Result<(Vec<Value>, bool), AppError> {
    let max = usize::try_from(MAX_ITEMS).unwrap_or(usize::MAX);
    let items = rows
        .iter()
        .take(max)
        .map(|row| row.try_get::<_, Value>(0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((items, rows.len() > max))
}
