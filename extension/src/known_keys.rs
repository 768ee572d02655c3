//! Key rows as verification needs them, remembered per backend until PostgreSQL says they
//! may have changed.
//!
//! A warm verification used to read the key and its partner on every call (two relation
//! opens and locks, a snapshot, two heap fetches): about a sixth of its cost. Now a row read
//! once is kept, and dropped when an invalidation message names `apikey.keys` or
//! `apikey.partners`. Those messages come from:
//! - the triggers in `sql/known_keys.sql`: any INSERT, DELETE or TRUNCATE of keys, any change
//!   of a column verification reads, any change of partners (whoever makes it: the
//!   extension's functions, a DBA's UPDATE, logical replication: the triggers are ENABLE
//!   ALWAYS);
//! - PostgreSQL itself: DDL, VACUUM FULL, CLUSTER, TRUNCATE, statistics updates, DROP
//!   EXTENSION, and a full reset when a backend falls behind the message queue.
//!
//! Why this reads the latest committed state, as the fresh snapshot did: a committing
//! transaction makes its changes visible before it sends its invalidations, and both before
//! its client is told it committed. Every lookup first accepts pending messages; a row is
//! only kept if no message arrived between that point (before the snapshot it was read
//! with) and the end of the read. So once a revocation has returned to its caller, every
//! later verification in any session either has no remembered row or has dropped it. Rows a
//! transaction read from its own uncommitted changes are dropped on abort, when PostgreSQL
//! replays that transaction's invalidations locally. On a hot standby the messages arrive
//! with the replayed commit records.
//!
//! Not invalidating on `last_used_at`: the background worker writes it for every used key,
//! and dropping every backend's rows for that would undo the cache; verification does not
//! read it.

use crate::error::{ApiError, ApiResult};
use crate::fetch::{self, PrimaryKey};
use crate::net::NetAddr;
use crate::sqltypes::{CidrList, TextList};
use apikey_contract::key_state::KeyState;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::{pg_guard, pg_sys};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A key row and its partner's `active`, independent of the time and of the caller.
pub struct StoredKey {
    pub partner_id: pgrx::Uuid,
    pub secret_hash: String,
    /// SHA-256 of `secret_hash`, naming it in the server's shared proofs.
    pub secret_hash_fingerprint: crate::hash::Digest,
    pub pepper_fingerprint: String,
    pub scopes: Vec<String>,
    pub rate_per_minute: i32,
    pub expires_at: Option<TimestampWithTimeZone>,
    pub not_before: Option<pg_sys::TimestampTz>,
    pub revoked_at: Option<pg_sys::TimestampTz>,
    pub enabled: bool,
    pub partner_active: bool,
    /// NULL allows every address; a list (even an empty one) only its own networks.
    pub allowed_cidrs: Option<CidrList>,
    /// The successor of a rotated key. Rotation sets it with `revoked_at`, whose change is
    /// what makes every session read the row again.
    pub rotated_to: Option<String>,
    /// The balance this key spends (its own, or in its grace period its successor's).
    pub credits: Option<StoredCredits>,
    /// The partner's own limits, shared by all its keys (0.8.0): a rate and a balance.
    pub partner_rate_per_minute: Option<i32>,
    pub partner_credits: Option<StoredCredits>,
}

/// A balance's row as verification reads it (`apikey.key_credits`).
pub struct StoredCredits {
    pub credit_id: i64,
    /// Moved on by every set and top-up (names a shortage, `shared::credits::Shortage`).
    pub generation: i64,
    pub row: apikey_contract::credits::Row,
}

impl StoredKey {
    /// Whether a caller at `client` may use the key. The address is only decoded for keys
    /// that have a list.
    pub fn admits(&self, client: impl FnOnce() -> Option<NetAddr>) -> bool {
        self.allowed_cidrs
            .as_ref()
            .is_none_or(|list| client().is_some_and(|ip| list.admits(&ip)))
    }

    /// The key whose rate bucket a verification of `key_id` spends: its successor while it
    /// is in its grace period (a key past it is never admitted), so rotating never adds to
    /// a key's limit.
    pub fn rate_bucket<'a>(&'a self, key_id: &'a str) -> &'a str {
        self.rotated_to.as_deref().unwrap_or(key_id)
    }

    pub fn state(&self) -> KeyState {
        KeyState {
            revoked_at: self.revoked_at,
            enabled: self.enabled,
            partner_active: self.partner_active,
            expires_at: self.expires_at.map(pg_sys::TimestampTz::from),
            not_before: self.not_before,
        }
    }
}

/// Enough for a busy pool; past it the map starts over rather than growing without bound.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
struct Known {
    /// `fetch::generation()` the rows were read under; any other value means an
    /// invalidation arrived since, and every row is dropped.
    generation: u64,
    rows: HashMap<String, Rc<StoredKey>>,
}

thread_local! {
    static KNOWN: RefCell<Known> = RefCell::new(Known::default());
}

/// The row of `key_id`, remembered or read now; `None` if there is no such key.
pub fn lookup(key_id: &str) -> ApiResult<Option<Rc<StoredKey>>> {
    fetch::accept_invalidations();
    let generation = fetch::generation();
    let remembered = KNOWN.with_borrow_mut(|known| {
        if known.generation != generation {
            known.rows.clear();
            known.generation = generation;
        }
        known.rows.get(key_id).cloned()
    });
    if remembered.is_some() {
        return Ok(remembered);
    }
    let Some(row) = read(key_id)? else {
        return Ok(None);
    };
    let row = Rc::new(row);
    KNOWN.with_borrow_mut(|known| {
        // An invalidation delivered while reading (taking the locks accepts messages) may
        // be for a change the snapshot missed: use the row this once, keep nothing.
        if fetch::generation() == generation {
            if known.rows.len() >= MAX_ENTRIES {
                known.rows.clear();
            }
            known.rows.insert(key_id.to_string(), Rc::clone(&row));
        }
    });
    Ok(Some(row))
}

/// Reads the key and its partner with one fresh snapshot, without SPI (`fetch`).
fn read(key_id: &str) -> ApiResult<Option<StoredKey>> {
    let at = |t: Option<TimestampWithTimeZone>| t.map(pg_sys::TimestampTz::from);
    let missing = || ApiError::internal("apikey.keys row has NULL in a NOT NULL column");
    fetch::with_latest_snapshot(|snapshot| {
        let found = snapshot.by_primary_key(PrimaryKey::Key(key_id), |row| {
            Ok(StoredKey {
                partner_id: row.get("partner_id")?.ok_or_else(missing)?,
                secret_hash: row.get("secret_hash")?.ok_or_else(missing)?,
                secret_hash_fingerprint: [0; 32],
                pepper_fingerprint: row.get("pepper_fingerprint")?.ok_or_else(missing)?,
                scopes: row.get::<TextList>("scopes")?.ok_or_else(missing)?.0,
                rate_per_minute: row.get("rate_per_minute")?.ok_or_else(missing)?,
                expires_at: row.get("expires_at")?,
                not_before: at(row.get("not_before")?),
                revoked_at: at(row.get("revoked_at")?),
                enabled: row.get("enabled")?.ok_or_else(missing)?,
                partner_active: false,
                allowed_cidrs: row.get("allowed_cidrs")?,
                rotated_to: row.get("rotated_to")?,
                credits: None,
                partner_rate_per_minute: None,
                partner_credits: None,
            })
        })?;
        let Some(mut row) = found else {
            return Ok(None);
        };
        let balance = |c: &fetch::Found| {
            Ok(StoredCredits {
                credit_id: c.get("credit_id")?.ok_or_else(missing)?,
                generation: c.get("generation")?.ok_or_else(missing)?,
                row: apikey_contract::credits::Row {
                    remaining: c.get("remaining")?.ok_or_else(missing)?,
                    spent_mark: c.get("spent_mark")?.ok_or_else(missing)?,
                    mark_epoch: c.get("mark_epoch")?.ok_or_else(missing)?,
                    refill_amount: c.get("refill_amount")?,
                    next_refill_at: at(c.get("next_refill_at")?),
                },
            })
        };
        if fetch::has_key_credits() {
            let bucket = row.rate_bucket(key_id).to_string();
            row.credits = snapshot.by_primary_key(PrimaryKey::KeyCredits(&bucket), balance)?;
        }
        row.secret_hash_fingerprint = crate::hash::fingerprint(&row.secret_hash);
        let partner_limits = fetch::has_partner_limits();
        let partner = snapshot.by_primary_key(PrimaryKey::Partner(row.partner_id), |p| {
            let rate = if partner_limits {
                p.get::<i32>("rate_per_minute")?
            } else {
                None
            };
            Ok((p.get::<bool>("active")?.unwrap_or(false), rate))
        })?;
        (row.partner_active, row.partner_rate_per_minute) = partner.unwrap_or((false, None));
        if partner_limits {
            row.partner_credits =
                snapshot.by_primary_key(PrimaryKey::PartnerCredits(row.partner_id), balance)?;
        }
        Ok(Some(row))
    })
}

v1_call_info!(pg_finfo_apikey_forget_known_keys);

/// `apikey.forget_known_keys()`, the trigger function of `sql/known_keys.sql`: queues a
/// relcache invalidation of the table the trigger fired on. PostgreSQL delivers it to this
/// backend at the next command and to every other backend after commit; `fetch`'s callback
/// then moves the generation on. Raises when called other than as a trigger.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn apikey_forget_known_keys(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is PostgreSQL's; its context is only read as TriggerData after the
    // node tag says it is one.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "apikey.forget_known_keys() may only be called as a trigger"
            );
        }
        let trigger = context.cast::<pg_sys::TriggerData>();
        pg_sys::CacheInvalidateRelcache((*trigger).tg_relation);
    }
    // An AFTER trigger's result is ignored.
    pg_sys::Datum::from(0)
}
