//! Credit balances of keys (`apikey_set_credits`, `apikey_add_credits`) and partners
//! (`apikey_partner_set_limits`, `apikey_partner_add_credits`), and the worker's write of
//! spending into `apikey.key_credits` and `apikey.partner_credits`. Verification spends in
//! shared memory (`shared::credits`); every write here moves that spending into the row in the
//! same UPDATE that changes it, so a set or a top-up is exact whatever was spent meanwhile.
//! Both tables draw `credit_id` from one sequence: it names a balance in shared memory.

use crate::access;
use crate::audit::{self, Event};
use crate::clock;
use crate::error::{ApiError, ApiResult, OrRaise};
use crate::events;
use crate::shared::{self, credits::Settled, credits::Shortage};
use apikey_contract::credits::{self, Interval as RefillInterval, Row};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::json;

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_set_credits(
    key_id: Option<&str>,
    remaining: Option<i64>,
    refill_amount: default!(Option<i64>, "NULL"),
    refill_interval: default!(Option<Interval>, "NULL"),
) {
    let balance = Balance {
        remaining,
        refill_amount,
        refill_interval,
    };
    Spi::connect_mut(|client| set(client, key_id, balance)).or_raise()
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_add_credits(key_id: Option<&str>, amount: Option<i64>) -> i64 {
    Spi::connect_mut(|client| add(client, key_id, amount)).or_raise()
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_partner_set_limits(
    partner_id: Option<pgrx::Uuid>,
    rate_per_minute: default!(Option<i32>, "NULL"),
    credits: default!(Option<i64>, "NULL"),
    credits_refill_amount: default!(Option<i64>, "NULL"),
    credits_refill_interval: default!(Option<Interval>, "NULL"),
) {
    let balance = Balance {
        remaining: credits,
        refill_amount: credits_refill_amount,
        refill_interval: credits_refill_interval,
    };
    Spi::connect_mut(|client| set_partner_limits(client, partner_id, rate_per_minute, balance))
        .or_raise()
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_partner_add_credits(partner_id: Option<pgrx::Uuid>, amount: Option<i64>) -> i64 {
    Spi::connect_mut(|client| add_partner(client, partner_id, amount)).or_raise()
}

/// `apikey_credits_state(key_id, partner_id)`: the balance of a key (the one it spends: in
/// its grace period, its successor's) or of a partner, as a verification would find it now,
/// with its refill; no row without a balance. Operators may ask about any; a partner (with a
/// key verified in the transaction) about its own keys and itself; anyone else is told it
/// does not exist.
// The result's column names must be spelled in the signature (pgrx's `name!`).
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_credits_state(
    key_id: default!(Option<&str>, "NULL"),
    partner_id: default!(Option<pgrx::Uuid>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(remaining, i64),
        name!(refill_amount, Option<i64>),
        name!(refill_interval, Option<Interval>),
        name!(next_refill_at, Option<TimestampWithTimeZone>),
    ),
> {
    TableIterator::new(Spi::connect(|client| state(client, key_id, partner_id)).or_raise())
}

type StateRow = (
    i64,
    Option<i64>,
    Option<Interval>,
    Option<TimestampWithTimeZone>,
);

fn state(
    client: &SpiClient<'_>,
    key_id: Option<&str>,
    partner_id: Option<pgrx::Uuid>,
) -> ApiResult<Option<StateRow>> {
    let caller = crate::identity::current().map(|i| i.partner_id);
    let may_see = |owner: pgrx::Uuid| access::is_admin() || caller == Some(owner);
    let (sql, datum): (&str, pgrx::datum::DatumWithOid<'_>) = match (key_id, partner_id) {
        (Some(key_id), None) => {
            let owner = client
                .select(
                    "SELECT partner_id FROM apikey.keys WHERE key_id = $1",
                    Some(1),
                    &[key_id.into()],
                )?
                .next()
                .map(|r| r.get::<pgrx::Uuid>(1))
                .transpose()?
                .flatten();
            if !owner.is_some_and(may_see) {
                return Err(access::key_not_found(key_id));
            }
            // A key in its grace period spends its successor's balance.
            (
                "SELECT c.* FROM apikey.keys k JOIN apikey.key_credits c \
                    ON c.key_id = CASE WHEN k.revoked_at > clock_timestamp() \
                                       THEN coalesce(k.rotated_to, k.key_id) ELSE k.key_id END \
                 WHERE k.key_id = $1",
                key_id.into(),
            )
        }
        (None, Some(partner_id)) => {
            if !may_see(partner_id) {
                return Err(ApiError::not_found(format!("partner_id {partner_id}")));
            }
            (
                "SELECT * FROM apikey.partner_credits WHERE partner_id = $1",
                partner_id.into(),
            )
        }
        _ => {
            return Err(ApiError::invalid(
                "key_id",
                "pass exactly one of key_id and partner_id",
            ))
        }
    };
    let Some(found) = client.select(sql, Some(1), &[datum])?.next() else {
        return Ok(None);
    };
    let missing = || ApiError::internal("a balance row has NULL in a NOT NULL column");
    let at = |t: Option<TimestampWithTimeZone>| t.map(pg_sys::TimestampTz::from);
    let credit_id: i64 = found.get_by_name("credit_id")?.ok_or_else(missing)?;
    let row = Row {
        remaining: found.get_by_name("remaining")?.ok_or_else(missing)?,
        spent_mark: found.get_by_name("spent_mark")?.ok_or_else(missing)?,
        mark_epoch: found.get_by_name("mark_epoch")?.ok_or_else(missing)?,
        refill_amount: found.get_by_name("refill_amount")?,
        next_refill_at: at(found.get_by_name("next_refill_at")?),
    };
    let set_at = at(found.get_by_name("set_at")?).ok_or_else(missing)?;
    let interval: Option<Interval> = found.get_by_name("refill_interval")?;
    let now = clock::now();
    let remaining = shared::credits::peek(credit_id, &row, now).unwrap_or(row.remaining);
    let next = match (row.refill_pending(now), interval.as_ref()) {
        (Some(_), Some(i)) => Some(next_refill(set_at, refill_interval(i), now)?),
        _ => row.next_refill_at,
    };
    Ok(Some((
        remaining,
        row.refill_amount,
        interval,
        next.map(timestamp).transpose()?,
    )))
}

/// The two kinds of balance, each in its own table.
#[derive(Clone, Copy)]
enum Kind {
    Key,
    Partner,
}

impl Kind {
    /// The table and its owner column.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Kind::Key => ("apikey.key_credits", "key_id"),
            Kind::Partner => ("apikey.partner_credits", "partner_id"),
        }
    }
}

/// Whose balance a row is.
#[derive(Clone, Copy)]
enum Owner<'a> {
    Key(&'a str),
    Partner(pgrx::Uuid),
}

impl Owner<'_> {
    /// The table and its owner column.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Owner::Key(_) => Kind::Key.table(),
            Owner::Partner(_) => Kind::Partner.table(),
        }
    }

    fn datum(self) -> pgrx::datum::DatumWithOid<'static> {
        match self {
            Owner::Key(key_id) => key_id.to_string().into(),
            Owner::Partner(partner_id) => partner_id.into(),
        }
    }
}

/// The names of the arguments a balance is set with, for errors that name one.
pub struct BalanceArguments {
    remaining: &'static str,
    refill_amount: &'static str,
    refill_interval: &'static str,
}

/// `apikey_set_credits`'s.
const KEY_ARGUMENTS: BalanceArguments = BalanceArguments {
    remaining: "remaining",
    refill_amount: "refill_amount",
    refill_interval: "refill_interval",
};

/// `apikey_partner_set_limits`'s and `apikey_issue`'s.
pub const CREDITS_ARGUMENTS: BalanceArguments = BalanceArguments {
    remaining: "credits",
    refill_amount: "credits_refill_amount",
    refill_interval: "credits_refill_interval",
};

/// A balance as `apikey_set_credits`, `apikey_partner_set_limits` and `apikey_issue` take it.
pub struct Balance {
    /// `None` removes the balance.
    pub remaining: Option<i64>,
    pub refill_amount: Option<i64>,
    pub refill_interval: Option<Interval>,
}

impl Balance {
    /// Whether any part was given.
    pub fn is_given(&self) -> bool {
        self.remaining.is_some() || self.refill_amount.is_some() || self.refill_interval.is_some()
    }

    pub fn detail(&self) -> serde_json::Value {
        json!({
            "remaining": self.remaining,
            "refill_amount": self.refill_amount,
            "refill_interval": self.refill_interval.map(|i| i.to_string()),
        })
    }
}

/// A balance row, locked.
struct Locked {
    credit_id: i64,
    row: Row,
    set_at: i64,
    refill_interval: Option<RefillInterval>,
}

fn timestamp(at: i64) -> ApiResult<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(at)
        .map_err(|e| ApiError::internal(format!("timestamp out of range: {e:?}")))
}

fn refill_interval(interval: &Interval) -> RefillInterval {
    RefillInterval {
        months: interval.months(),
        days: interval.days(),
        micros: interval.micros(),
    }
}

/// The key `key_id` locked, checked to be the caller's to change and to hold its own balance
/// (a rotated key spends its successor's).
fn lock_key(client: &mut SpiClient<'_>, key_id: Option<&str>) -> ApiResult<(String, pgrx::Uuid)> {
    access::require_admin("changing a key's credits")?;
    let key_id = key_id.ok_or_else(|| ApiError::null("key_id"))?;
    let rows = client.update(
        "SELECT partner_id, rotated_to FROM apikey.keys WHERE key_id = $1 FOR UPDATE",
        Some(1),
        &[key_id.into()],
    )?;
    let Some(row) = rows.into_iter().next() else {
        return Err(access::key_not_found(key_id));
    };
    let partner: pgrx::Uuid = row
        .get(1)?
        .ok_or_else(|| ApiError::internal("key without partner"))?;
    if let Some(successor) = row.get::<String>(2)? {
        return Err(ApiError::state(format!(
            "key {key_id} was rotated to {successor}, whose balance it spends"
        ))
        .with_hint("Change the successor's credits instead."));
    }
    Ok((key_id.to_string(), partner))
}

/// The columns of a balance row a write needs, as [`locked`] reads them.
const BALANCE_COLUMNS: &str = "credit_id, remaining, spent_mark, mark_epoch, refill_amount, \
    next_refill_at, set_at, refill_interval";

/// The partner `partner_id` locked, for an operator.
fn lock_partner(
    client: &mut SpiClient<'_>,
    partner_id: Option<pgrx::Uuid>,
) -> ApiResult<pgrx::Uuid> {
    access::require_admin("changing a partner's limits")?;
    let partner_id = partner_id.ok_or_else(|| ApiError::null("partner_id"))?;
    let rows = client.update(
        "SELECT 1 FROM apikey.partners WHERE partner_id = $1 FOR UPDATE",
        Some(1),
        &[partner_id.into()],
    )?;
    if rows.is_empty() {
        return Err(ApiError::not_found(format!("partner_id {partner_id}")));
    }
    Ok(partner_id)
}

fn lock_balance(client: &mut SpiClient<'_>, owner: Owner<'_>) -> ApiResult<Option<Locked>> {
    let (table, column) = owner.table();
    let rows = client.update(
        &format!("SELECT {BALANCE_COLUMNS} FROM {table} WHERE {column} = $1 FOR UPDATE"),
        Some(1),
        &[owner.datum()],
    )?;
    rows.into_iter().next().map(|row| locked(&row)).transpose()
}

/// A row of the columns [`BALANCE_COLUMNS`] names, in that order.
fn locked(row: &pgrx::spi::SpiHeapTupleData<'_>) -> ApiResult<Locked> {
    let missing = || ApiError::internal("apikey.key_credits row has NULL in a NOT NULL column");
    let at = |t: Option<TimestampWithTimeZone>| t.map(pg_sys::TimestampTz::from);
    Ok(Locked {
        credit_id: row.get(1)?.ok_or_else(missing)?,
        row: Row {
            remaining: row.get(2)?.ok_or_else(missing)?,
            spent_mark: row.get(3)?.ok_or_else(missing)?,
            mark_epoch: row.get(4)?.ok_or_else(missing)?,
            refill_amount: row.get(5)?,
            next_refill_at: at(row.get(6)?),
        },
        set_at: at(row.get(7)?).ok_or_else(missing)?,
        refill_interval: row.get::<Interval>(8)?.as_ref().map(refill_interval),
    })
}

/// What moving the spending counted for `credit_id` into its row sets, in this database.
/// Without shared memory nothing is counted there: the row is what it says.
fn settle(locked: &Locked, now: i64) -> Settled {
    shared::credits::settle(shared::database(), locked.credit_id, &locked.row, now).unwrap_or(
        Settled {
            remaining: locked.row.remaining,
            spent_mark: 0,
            refilled: false,
            epoch: 0,
        },
    )
}

/// The refill after `now` of a schedule that started at `set_at`.
fn next_refill(set_at: i64, interval: RefillInterval, now: i64) -> ApiResult<i64> {
    credits::next_refill_after(set_at, interval, now)
        .map(|(_, at)| at)
        .ok_or_else(|| ApiError::invalid("refill_interval", "the next refill is out of range"))
}

fn set(client: &mut SpiClient<'_>, key_id: Option<&str>, balance: Balance) -> ApiResult<()> {
    let (key_id, partner) = lock_key(client, key_id)?;
    set_balance(client, Owner::Key(&key_id), &balance, &KEY_ARGUMENTS)?;
    let mut event = Event::new("credits_set");
    event.key_id = Some(&key_id);
    event.partner_id = Some(partner);
    event.detail = balance.detail();
    audit::record_action(client, event)?;
    Ok(())
}

fn set_partner_limits(
    client: &mut SpiClient<'_>,
    partner_id: Option<pgrx::Uuid>,
    rate_per_minute: Option<i32>,
    balance: Balance,
) -> ApiResult<()> {
    let partner = lock_partner(client, partner_id)?;
    if rate_per_minute.is_some_and(|r| r < 1) {
        return Err(ApiError::invalid("rate_per_minute", "must be at least 1"));
    }
    set_balance(
        client,
        Owner::Partner(partner),
        &balance,
        &CREDITS_ARGUMENTS,
    )?;
    client.update(
        "UPDATE apikey.partners SET rate_per_minute = $2 WHERE partner_id = $1",
        None,
        &[partner.into(), rate_per_minute.into()],
    )?;
    let mut event = Event::new("partner_limits_set");
    event.partner_id = Some(partner);
    event.detail = json!({ "rate_per_minute": rate_per_minute, "credits": balance.detail() });
    audit::record_action(client, event)?;
    Ok(())
}

/// Gives the key `key_id`, just issued by this transaction, its first balance.
pub fn set_issued(client: &mut SpiClient<'_>, key_id: &str, balance: &Balance) -> ApiResult<()> {
    set_balance(client, Owner::Key(key_id), balance, &CREDITS_ARGUMENTS)
}

/// Sets (or, with `remaining` NULL, removes) the balance of `owner`, whose row in
/// `apikey.keys` or `apikey.partners` the caller has locked. `names` name the arguments in
/// errors.
fn set_balance(
    client: &mut SpiClient<'_>,
    owner: Owner<'_>,
    balance: &Balance,
    names: &BalanceArguments,
) -> ApiResult<()> {
    let now = clock::now();
    let interval = balance.refill_interval.as_ref().map(refill_interval);
    let schedule = match (balance.refill_amount, interval) {
        (None, None) => None,
        (Some(amount), Some(interval)) => {
            if amount < 0 {
                return Err(ApiError::invalid(
                    names.refill_amount,
                    "must not be negative",
                ));
            }
            if !interval.is_valid_refill() {
                return Err(ApiError::invalid(
                    names.refill_interval,
                    "must be positive in every part and at least one second",
                ));
            }
            Some((amount, interval, next_refill(now, interval, now)?))
        }
        (Some(_), None) => return Err(ApiError::null(names.refill_interval)),
        (None, Some(_)) => return Err(ApiError::null(names.refill_amount)),
    };
    if balance.remaining.is_some_and(|r| r < 0) {
        return Err(ApiError::invalid(names.remaining, "must not be negative"));
    }
    if balance.remaining.is_none() && schedule.is_some() {
        return Err(ApiError::null(names.remaining));
    }
    let existing = lock_balance(client, owner)?;
    let (table, column) = owner.table();
    let Some(remaining) = balance.remaining else {
        client.update(
            &format!("DELETE FROM {table} WHERE {column} = $1"),
            None,
            &[owner.datum()],
        )?;
        return Ok(());
    };
    // The spending counted so far is the set's: what is spent from now on is spent from the
    // new balance.
    let (spent_mark, epoch) = match &existing {
        Some(locked) => {
            let settled = settle(locked, now);
            (settled.spent_mark, settled.epoch)
        }
        None => (0, shared::credits::epoch().unwrap_or(0)),
    };
    let (amount, interval, next) = match schedule {
        Some((amount, interval, next)) => (Some(amount), Some(interval), Some(next)),
        None => (None, None, None),
    };
    let interval = interval
        .map(|i| Interval::new(i.months, i.days, i.micros))
        .transpose()
        .map_err(|e| ApiError::invalid(names.refill_interval, format!("{e:?}")))?;
    client.update(
        &format!(
            "INSERT INTO {table} AS c ({column}, remaining, refill_amount, refill_interval, \
                set_at, next_refill_at, spent_mark, mark_epoch) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT ({column}) DO UPDATE SET remaining = excluded.remaining, \
                refill_amount = excluded.refill_amount, \
                refill_interval = excluded.refill_interval, set_at = excluded.set_at, \
                next_refill_at = excluded.next_refill_at, \
                spent_mark = excluded.spent_mark, mark_epoch = excluded.mark_epoch, \
                generation = c.generation + 1"
        ),
        None,
        &[
            owner.datum(),
            remaining.into(),
            amount.into(),
            interval.into(),
            timestamp(now)?.into(),
            next.map(timestamp).transpose()?.into(),
            spent_mark.into(),
            epoch.into(),
        ],
    )?;
    Ok(())
}

fn add(client: &mut SpiClient<'_>, key_id: Option<&str>, amount: Option<i64>) -> ApiResult<i64> {
    let amount = amount.ok_or_else(|| ApiError::null("amount"))?;
    let (key_id, partner) = lock_key(client, key_id)?;
    let balance = add_to_balance(client, Owner::Key(&key_id), amount)?;
    let mut event = Event::new(credits_action(amount));
    event.key_id = Some(&key_id);
    event.partner_id = Some(partner);
    event.detail = json!({ "amount": amount, "balance": balance });
    audit::record_action(client, event)?;
    Ok(balance)
}

fn add_partner(
    client: &mut SpiClient<'_>,
    partner_id: Option<pgrx::Uuid>,
    amount: Option<i64>,
) -> ApiResult<i64> {
    let amount = amount.ok_or_else(|| ApiError::null("amount"))?;
    let partner = lock_partner(client, partner_id)?;
    let balance = add_to_balance(client, Owner::Partner(partner), amount)?;
    let mut event = Event::new(credits_action(amount));
    event.partner_id = Some(partner);
    event.detail = json!({ "amount": amount, "balance": balance, "partner_wide": true });
    audit::record_action(client, event)?;
    Ok(balance)
}

fn credits_action(amount: i64) -> &'static str {
    if amount < 0 {
        "credits_charged"
    } else {
        "credits_added"
    }
}

/// Adds `amount` (negative: charges it) to the balance of `owner`, whose row the caller has
/// locked; the balance after.
fn add_to_balance(client: &mut SpiClient<'_>, owner: Owner<'_>, amount: i64) -> ApiResult<i64> {
    let Some(locked) = lock_balance(client, owner)? else {
        return Err(match owner {
            Owner::Key(key_id) => ApiError::state(format!("key {key_id} has no credit balance"))
                .with_hint("Give it one with apikey_set_credits."),
            Owner::Partner(partner_id) => {
                ApiError::state(format!("partner {partner_id} has no credit balance"))
                    .with_hint("Give it one with apikey_partner_set_limits.")
            }
        });
    };
    let now = clock::now();
    let settled = settle(&locked, now);
    let balance = settled
        .remaining
        .checked_add(amount)
        .ok_or_else(|| ApiError::invalid("amount", "the balance would be out of range"))?;
    let next = match (settled.refilled, locked.refill_interval) {
        (true, Some(interval)) => Some(next_refill(locked.set_at, interval, now)?),
        _ => locked.row.next_refill_at,
    };
    let (table, _) = owner.table();
    client.update(
        &format!(
            "UPDATE {table} SET remaining = $2, spent_mark = $3, mark_epoch = $4, \
                next_refill_at = $5, generation = generation + 1 \
             WHERE credit_id = $1"
        ),
        None,
        &[
            locked.credit_id.into(),
            balance.into(),
            settled.spent_mark.into(),
            settled.epoch.into(),
            next.map(timestamp).transpose()?.into(),
        ],
    )?;
    Ok(balance)
}

/// Moves the spending counted for this database's balances into `apikey.key_credits` and
/// `apikey.partner_credits`, and applies the refills due. Balances whose row a transaction
/// holds (a set or a top-up in progress) are skipped: that transaction moves their spending
/// itself. Returns what was written, for [`shared::credits::written`] once the transaction
/// has committed. With `sweep` (the hourly round), or once the shared table is half full, the
/// shared entries of every balance that no longer exists are dropped, not only those with
/// spending to write: otherwise removed balances would fill the table for good.
pub fn write_spending(client: &mut SpiClient<'_>, db: u32, sweep: bool) -> ApiResult<Written> {
    let now = clock::now();
    let unwritten = shared::credits::unwritten(db);
    let kinds: &[Kind] = if crate::version::schema_has(crate::version::PARTNER_LIMITS)? {
        &[Kind::Key, Kind::Partner]
    } else {
        &[Kind::Key]
    };
    let mut written = Vec::new();
    for kind in kinds {
        written.extend(write_table(client, db, kind.table().0, &unwritten, now)?);
    }
    // Balances that no longer exist (removed, or their key or partner deleted): their
    // spending has nowhere to go, and their ids are never used again. A session still holding
    // such a row may make the entry again; it is then dropped at the next round.
    let candidates = if sweep || shared::credits::filling_up() {
        shared::credits::ids(db)
    } else {
        unwritten.clone()
    };
    let exists = kinds
        .iter()
        .map(|k| format!("EXISTS (SELECT 1 FROM {} WHERE credit_id = x)", k.table().0))
        .collect::<Vec<_>>()
        .join(" OR ");
    let gone: Vec<i64> = client
        .select(
            &format!("SELECT x FROM unnest($1::bigint[]) AS x WHERE NOT ({exists})"),
            None,
            &[candidates.into()],
        )?
        .filter_map(|row| row.get::<i64>(1).ok().flatten())
        .collect();
    shared::credits::forget(db, &gone);
    let announced = announce_shortages(client, db, kinds)?;
    Ok(Written {
        spending: written,
        announced,
    })
}

/// What [`write_spending`] wrote, for the worker to note once its transaction has committed:
/// spending (balance, mark) and the shortages it announced.
#[derive(Default)]
pub struct Written {
    pub spending: Vec<(i64, i64)>,
    pub announced: Vec<(i64, Shortage)>,
}

/// Writes a `key.credits_exhausted` or `partner.credits_exhausted` event for each balance
/// verification found short since it was last set, topped up or refilled (after this
/// transaction's writes, so the balance in the event is the one in the row). A shortage of a
/// balance set or removed since is stale and only noted.
fn announce_shortages(
    client: &mut SpiClient<'_>,
    db: u32,
    kinds: &[Kind],
) -> ApiResult<Vec<(i64, Shortage)>> {
    enum Holder {
        Key(String),
        Partner(pgrx::Uuid),
    }
    let missing = || ApiError::internal("a balance row has NULL in a NOT NULL column");
    let shortages = shared::credits::shortages(db);
    for (credit_id, shortage) in &shortages {
        for &kind in kinds {
            let (table, column) = kind.table();
            let found = client.select(
                &format!(
                    "SELECT {column}, remaining, next_refill_at FROM {table} \
                     WHERE credit_id = $1 AND generation = $2"
                ),
                Some(1),
                &[(*credit_id).into(), shortage.generation.into()],
            )?;
            let Some(row) = found.into_iter().next() else {
                continue;
            };
            let holder = match kind {
                Kind::Key => Holder::Key(row.get(1)?.ok_or_else(missing)?),
                Kind::Partner => Holder::Partner(row.get(1)?.ok_or_else(missing)?),
            };
            let extra = json!({
                "credits_remaining": row.get::<i64>(2)?,
                "next_refill_at": row.get::<TimestampWithTimeZone>(3)?,
            });
            match holder {
                Holder::Key(key_id) => {
                    events::record_key_event(client, events::KEY_CREDITS_EXHAUSTED, &key_id, extra)?
                }
                Holder::Partner(partner_id) => events::record_partner_event(
                    client,
                    events::PARTNER_CREDITS_EXHAUSTED,
                    partner_id,
                    extra,
                )?,
            }
        }
    }
    Ok(shortages)
}

fn write_table(
    client: &mut SpiClient<'_>,
    db: u32,
    table: &str,
    unwritten: &[i64],
    now: i64,
) -> ApiResult<Vec<(i64, i64)>> {
    let rows = client.update(
        &format!(
            "SELECT {BALANCE_COLUMNS} FROM {table} \
             WHERE credit_id = ANY ($1) OR next_refill_at <= $2 FOR UPDATE SKIP LOCKED"
        ),
        None,
        &[unwritten.to_vec().into(), timestamp(now)?.into()],
    )?;
    let balances: Vec<Locked> = rows
        .into_iter()
        .map(|row| locked(&row))
        .collect::<ApiResult<_>>()?;
    let mut written = Vec::new();
    for balance in &balances {
        let Some(settled) = shared::credits::settle(db, balance.credit_id, &balance.row, now)
        else {
            continue;
        };
        let next = match (settled.refilled, balance.refill_interval) {
            (true, Some(interval)) => Some(next_refill(balance.set_at, interval, now)?),
            _ => balance.row.next_refill_at,
        };
        client.update(
            &format!(
                "UPDATE {table} SET remaining = $2, spent_mark = $3, mark_epoch = $4, \
                    next_refill_at = $5 \
                 WHERE credit_id = $1"
            ),
            None,
            &[
                balance.credit_id.into(),
                settled.remaining.into(),
                settled.spent_mark.into(),
                settled.epoch.into(),
                next.map(timestamp).transpose()?.into(),
            ],
        )?;
        written.push((balance.credit_id, settled.spent_mark));
    }
    Ok(written)
}
