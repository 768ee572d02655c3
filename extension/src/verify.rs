//! `apikey_verify`: token in, exactly one row out, never an error for any token value.
//!
//! Cost model: the first verification of a key in the server pays for Argon2id (through the
//! server's gate) and remembers the proof (`proof`). Later ones, in any backend, take the
//! key's row from `known_keys` (which drops it as soon as PostgreSQL reports a change, so
//! revocation, expiry, enabled, partner state and hash changes apply at once) and compare
//! one HMAC against the proof in constant time; a wrong secret for a proven key is rejected
//! the same way. An unknown key id costs an index probe. Every outcome is counted
//! (`shared::usage`), a success takes from the key's rate limit and notes its use
//! (`shared::keys`), and a failure writes at most one audit row per key (or client address),
//! reason and minute (`shared::marks`).

use crate::audit::{self, Event};
use crate::error::{ApiError, ApiResult, OrRaise};
use crate::hash::{self, Params};
use crate::identity::{self, Identity};
use crate::imported;
use crate::known_keys::{self, StoredKey};
use crate::pepper::PepperSet;
use crate::proof::{self, Checked};
use crate::reason::Reason;
use crate::shared::credits::{self, Spent};
use crate::shared::keys::Rate;
use crate::shared::marks::{self, Subject};
use crate::shared::Stat;
use crate::sqltypes::{self, InetDatum};
use crate::{clock, db, guc, last_rates, redact, scope, shared, srf, token};
use apikey_core::import::{self, Format};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::borrow::Cow;
use std::rc::Rc;

v1_call_info!(pg_finfo_apikey_verify);

/// The SQL declaration lives in `sql/verify.sql`: the function is written against the C
/// calling convention directly because pgrx's set-returning wrapper (per-call SRF state, a
/// second call to end the set, the result descriptor rebuilt from the catalog each time)
/// cost about a tenth of a warm verification. This one runs once per execution and returns
/// its row in materialize mode, with the descriptor the executor already built.
///
/// SECURITY DEFINER without `SET search_path`: see `db::execute`, which pins it for every
/// statement this function runs.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn apikey_verify(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: PostgreSQL calls this with the arguments sql/verify.sql declares (text, text[],
    // inet, and from 0.7.0 integer); NULLs are checked before a datum is read.
    let (token, required, client_ip, cost) = unsafe {
        let cost = if (*fcinfo).nargs > 3 {
            pgrx::fcinfo::pg_getarg::<i32>(fcinfo, 3).ok_or_else(|| ApiError::null("cost"))
        } else {
            Ok(1)
        };
        (
            pgrx::fcinfo::pg_getarg_datum(fcinfo, 0).map(|d| sqltypes::text(d)),
            pgrx::fcinfo::pg_getarg_datum(fcinfo, 1)
                .map(|d| sqltypes::text_array(d))
                .unwrap_or_default(),
            pgrx::fcinfo::pg_getarg_datum(fcinfo, 2).map(|d| InetDatum::new(d)),
            cost,
        )
    };
    let cost = cost.and_then(checked_cost).or_raise();
    let request = Request {
        token: token.as_deref(),
        required: &required,
        client_ip,
        cost,
        now: clock::now(),
    };
    let outcome = verify(&request).or_raise();
    let (mut values, mut nulls) = outcome.into_datums();
    // SAFETY: fcinfo is the call's own; the row matches the declared result columns.
    unsafe { srf::return_one_row(fcinfo, &mut values, &mut nulls) }
}

fn checked_cost(cost: i32) -> ApiResult<i64> {
    use apikey_contract::limits::MAX_COST;
    if (0..=MAX_COST).contains(&cost) {
        Ok(i64::from(cost))
    } else {
        Err(ApiError::invalid(
            "cost",
            format!("{cost} is not between 0 and {MAX_COST}"),
        ))
    }
}

struct Request<'a> {
    token: Option<&'a str>,
    /// `None` for a NULL element, which no key satisfies.
    required: &'a [Option<String>],
    client_ip: Option<InetDatum>,
    /// Credits a verification that is otherwise ok spends from the key's balance and its
    /// partner's.
    cost: i64,
    /// The time of this call (`clock_timestamp()`), which every time comparison uses.
    now: pg_sys::TimestampTz,
}

struct Outcome<'a> {
    reason: Reason,
    /// Borrowed from a native token; an imported key's, found by its lookup, is owned.
    key_id: Option<Cow<'a, str>>,
    row: Option<Rc<StoredKey>>,
    /// The rate buckets after this verification, where they were consulted (shared memory, a
    /// verification that was otherwise ok).
    buckets: Buckets,
    /// The smaller of the key's and its partner's balances after this verification, where
    /// either has one and it was consulted.
    credits: Option<i64>,
    /// Credits this verification spent from a balance (counted in `apikey.usage.spent`).
    spent: i64,
    /// `usage_exceeded`: seconds until the short balance's refill, reported as
    /// `rate_reset_seconds` (the time until one is allowed again).
    refill_in: Option<i32>,
    /// The secret was shown to match the key: only then may a reason reveal its identity.
    authentic: bool,
    /// Set on success when the stored hash uses an old pepper or old Argon2 parameters.
    rehash: Option<Rehash<'a>>,
}

struct Rehash<'a> {
    peppers: Rc<PepperSet>,
    secret: &'a str,
    params: Params,
    /// The row still holds this other system's hash (an imported key's first success).
    imported_from: Option<Format>,
}

/// Columns of the result: the contract's seven, then `rate_remaining` and
/// `rate_reset_seconds` (added in 0.2.0) and `credits_remaining` (0.7.0); a database still
/// declaring fewer gets the leading ones.
const COLUMNS: usize = 10;

impl Outcome<'_> {
    /// The result row: `valid`, `reason`, then the identity columns, which stay NULL unless
    /// the key proved authentic, then the rate-limit columns.
    fn into_datums(self) -> ([pg_sys::Datum; COLUMNS], [bool; COLUMNS]) {
        let valid = self.reason == Reason::Ok;
        let identity = self
            .row
            .filter(|_| self.authentic && self.reason.reveals_identity());
        let (remaining, reset) = match self.buckets.tighter() {
            Some(rate) if self.reason == Reason::UsageExceeded => {
                (Some(rate.remaining), self.refill_in)
            }
            Some(rate) => (Some(rate.remaining), Some(rate.reset_seconds)),
            None => (None, None),
        };
        let columns: [Option<pg_sys::Datum>; COLUMNS] = match identity {
            Some(row) => [
                valid.into_datum(),
                self.reason.as_str().into_datum(),
                self.key_id.as_deref().into_datum(),
                row.partner_id.into_datum(),
                Some(sqltypes::text_array_datum(&row.scopes)),
                row.rate_per_minute.into_datum(),
                row.expires_at.into_datum(),
                remaining.into_datum(),
                reset.into_datum(),
                self.credits.into_datum(),
            ],
            None => [
                valid.into_datum(),
                self.reason.as_str().into_datum(),
                None,
                None,
                None,
                None,
                None,
                remaining.into_datum(),
                reset.into_datum(),
                None,
            ],
        };
        (
            columns.map(|c| c.unwrap_or(pg_sys::Datum::from(0))),
            columns.map(|c| c.is_none()),
        )
    }
}

/// Decides, then does the bookkeeping the decision calls for: the identity, the key's last use
/// (in shared memory), and (where the transaction can write) the audit row of a failure and a
/// re-hash. Only those writes use SPI; a warm success needs none.
fn verify<'a>(request: &Request<'a>) -> ApiResult<Outcome<'a>> {
    let outcome = decide(request)?;
    match (&outcome.row, outcome.key_id.as_deref()) {
        (Some(row), Some(key_id)) if outcome.authentic => {
            last_rates::record(key_id, outcome.buckets, row.partner_rate_per_minute)
        }
        _ => last_rates::clear(),
    }
    // A key is identified when its row exists; counts and audit marks of anything else
    // (no key, malformed, unknown key id) carry no key id.
    let identified = outcome.row.as_ref().and(outcome.key_id.as_deref());
    let partner = outcome.row.as_ref().map(|r| r.partner_id);
    shared::usage::count(
        identified,
        partner.map(|p| *p.as_bytes()),
        outcome.reason,
        request.now,
        shared::usage::Tally {
            verifications: 1,
            spent: u64::try_from(outcome.spent).unwrap_or(0),
        },
    );
    if outcome.reason == Reason::Ok {
        if let (Some(row), Some(key_id)) = (&outcome.row, outcome.key_id.as_deref()) {
            identity::set(Identity {
                partner_id: row.partner_id,
                key_id: key_id.to_string(),
                scopes: row.scopes.clone(),
                client_ip: request.client_ip.map(InetDatum::owned),
            });
            // The use was noted with the rate limit (`shared::keys::take`); last_used_at is
            // written from there by the background worker, never here: an UPDATE would lock
            // the row until the caller's transaction ends, and a revoke would wait for it.
            if let Some(rehash) = &outcome.rehash {
                Spi::connect_mut(|client| rehash_key(client, key_id, row, rehash))?;
            }
        }
        return Ok(outcome);
    }
    identity::clear();
    // One audit row per key (or, without one, per sender network), reason and minute.
    let network = request
        .client_ip
        .and_then(|ip| ip.addr())
        .map(|addr| addr.sender_network().to_bytes());
    let subject = match identified {
        Some(key_id) => Subject::Key(key_id),
        None => Subject::Network(network.as_deref()),
    };
    if marks::first_this_minute(subject, outcome.reason, request.now) {
        let mut event = Event::new("verify_failed");
        event.key_id = outcome.key_id.as_deref();
        event.partner_id = partner;
        event.reason = Some(outcome.reason.as_str());
        event.client_ip = request.client_ip;
        if outcome.reason == Reason::InsufficientScope {
            event.detail = required_scopes_detail(request.required);
        }
        Spi::connect_mut(|client| audit::record(client, event))?;
    }
    Ok(outcome)
}

fn decide<'a>(request: &Request<'a>) -> ApiResult<Outcome<'a>> {
    let fail = |reason, key_id, row| {
        Ok(Outcome {
            reason,
            key_id,
            row,
            buckets: Buckets::default(),
            credits: None,
            spent: 0,
            refill_in: None,
            authentic: false,
            rehash: None,
        })
    };
    let token = match request.token {
        None | Some("") => return fail(Reason::MissingKey, None, None),
        Some(t) => t,
    };
    // A native token is found by its key id. Any other is looked up among imported keys,
    // unless it has the native shape (a typo in a native token stays `malformed`, with no
    // database work).
    let (key_id, secret): (Cow<'a, str>, &'a str) = match token::parse(token) {
        Some(parsed) => (Cow::Borrowed(parsed.key_id), parsed.secret),
        None if token::has_native_shape(token) => return fail(Reason::Malformed, None, None),
        // A token that finds no imported key is in no shape apikey knows: `malformed`.
        None => match imported::find(token, guc::peppers)? {
            Some(found) => (Cow::Owned(found.key_id), found.secret),
            None => return fail(Reason::Malformed, None, None),
        },
    };
    let peppers = guc::peppers()?;
    let params = guc::argon2_params();
    // Key ids are public (logged, listed): an unknown one is answered at the cost of an
    // index probe, not with Argon2id work to hide that it does not exist.
    let Some(row) = known_keys::lookup(&key_id)? else {
        return fail(Reason::UnknownKey, Some(key_id), None);
    };
    let now = request.now;
    let (checked, foreign) = match import::foreign_format(&row.pepper_fingerprint) {
        // Still the other system's hash: checked its way (through the Argon2id gate), and
        // replaced on this first success.
        Some(format) => {
            let digest = imported::proof_digest(&peppers, secret.as_bytes());
            let stored = &row.secret_hash;
            let checked = proof::check_with(&key_id, &row, &digest, now, || {
                imported::verify_foreign(format, stored, secret.as_bytes(), &peppers)
            });
            (checked, Some(format))
        }
        None => {
            let Some(pepper) = peppers.by_fingerprint(&row.pepper_fingerprint) else {
                // The pepper that hashed this key was removed from the file: it can never
                // verify.
                return fail(Reason::SecretMismatch, Some(key_id), Some(row));
            };
            let digest = hash::digest(pepper.bytes(), secret.as_bytes());
            (proof::check(&key_id, &row, &digest, now), None)
        }
    };
    let proof = match checked {
        Checked::Proven(proof) => proof,
        Checked::Mismatch => return fail(Reason::SecretMismatch, Some(key_id), Some(row)),
        // Too many guesses at this key queue for Argon2id: answered at once, so a flood of
        // them holds no caller's connection; a client retries after a second, as after any
        // rate limit. The key is not shown authentic, so its identity stays hidden.
        Checked::Busy => {
            shared::count(Stat::RateLimited);
            return Ok(Outcome {
                reason: Reason::RateLimited,
                key_id: Some(key_id),
                row: Some(row),
                buckets: Buckets {
                    key: Some(Rate::RETRY_IN_A_SECOND),
                    partner: None,
                },
                credits: None,
                spent: 0,
                refill_in: None,
                authentic: false,
                rehash: None,
            });
        }
    };

    let reason = if let Some(refusal) = row.state().refusal_at(now) {
        refusal
    } else if !row.admits(|| request.client_ip.and_then(|ip| ip.addr())) {
        Reason::IpNotAllowed
    } else if !scope::has_all(&row.scopes, request.required.iter().map(Option::as_deref)) {
        Reason::InsufficientScope
    } else {
        Reason::Ok
    };
    let limits = if reason == Reason::Ok {
        take_limits(&key_id, &row, request.cost, now)
    } else {
        Limits::refused(reason, Buckets::default())
    };
    let Limits {
        reason,
        buckets,
        credits,
        spent,
        refill_in,
    } = limits;
    let stale = reason == Reason::Ok
        && (peppers.newest().fingerprint != row.pepper_fingerprint
            || proof::needs_rehash(&key_id, &row.secret_hash, proof, params))
        && db::can_write_rows();
    Ok(Outcome {
        reason,
        key_id: Some(key_id),
        row: Some(row),
        buckets,
        credits,
        spent,
        refill_in,
        authentic: true,
        rehash: stale.then_some(Rehash {
            peppers,
            secret,
            params,
            imported_from: foreign,
        }),
    })
}

/// What [`take_limits`] decided.
struct Limits {
    reason: Reason,
    buckets: Buckets,
    /// The smaller of the two balances after, where either has one and was consulted.
    credits: Option<i64>,
    /// Credits taken from a balance (the cost, when there was one to take from).
    spent: i64,
    /// Refused by a balance: seconds until its refill (`None` without one).
    refill_in: Option<i32>,
}

impl Limits {
    fn refused(reason: Reason, buckets: Buckets) -> Limits {
        Limits {
            reason,
            buckets,
            credits: None,
            spent: 0,
            refill_in: None,
        }
    }
}

/// Takes from every limit a verification that is otherwise ok is held to, all or nothing: one
/// from the key's rate bucket and its partner's, `cost` from the key's balance and its
/// partner's. The first that is short refuses it (`rate_limited` for a bucket,
/// `usage_exceeded` for a balance) and what was taken before it is given back.
fn take_limits(key_id: &str, row: &StoredKey, cost: i64, now: pg_sys::TimestampTz) -> Limits {
    let partner = row.partner_id.as_bytes();
    let bucket = row.rate_bucket(key_id);
    let mut taken = Taken::default();
    let mut buckets = Buckets {
        key: shared::keys::take(key_id, partner, bucket, row.rate_per_minute, now),
        partner: None,
    };
    if let Some(rate) = buckets.key {
        if !rate.allowed {
            shared::count(Stat::RateLimited);
            return Limits::refused(Reason::RateLimited, buckets);
        }
        taken.key_rate = true;
    }
    buckets.partner = row
        .partner_rate_per_minute
        .and_then(|limit| shared::keys::take_partner(partner, limit, now));
    if let Some(rate) = buckets.partner {
        if !rate.allowed {
            shared::count(Stat::RateLimited);
            taken.give_back(bucket, partner, now);
            // The key's token is back: report its bucket as it now stands.
            buckets.key = shared::keys::peek(bucket, row.rate_per_minute, now);
            return Limits::refused(Reason::RateLimited, buckets);
        }
        taken.partner_rate = true;
    }
    let mut smallest: Option<i64> = None;
    let balances = [&row.credits, &row.partner_credits];
    for (i, balance) in balances.into_iter().enumerate() {
        let Some(balance) = balance else { continue };
        let spent = credits::spend(
            balance.credit_id,
            &balance.row,
            balance.generation,
            cost,
            now,
        );
        match spent {
            Spent::Taken(after, receipt) => {
                taken.receipts[i] = Some(receipt);
                smallest = Some(smallest.map_or(after, |s| s.min(after)));
            }
            Spent::Short(left) => {
                taken.give_back(bucket, partner, now);
                return Limits {
                    reason: Reason::UsageExceeded,
                    buckets,
                    credits: Some(smallest.map_or(left, |s| s.min(left))),
                    spent: 0,
                    refill_in: seconds_until(balance.row.next_refill_at, now),
                };
            }
            Spent::Unavailable => {
                taken.give_back(bucket, partner, now);
                return Limits::refused(Reason::UsageExceeded, buckets);
            }
        }
    }
    Limits {
        reason: Reason::Ok,
        buckets,
        credits: smallest,
        spent: if smallest.is_some() { cost } else { 0 },
        refill_in: None,
    }
}

/// The key's rate bucket and its partner's, where a verification consulted them.
#[derive(Clone, Copy, Default)]
pub struct Buckets {
    pub key: Option<Rate>,
    pub partner: Option<Rate>,
}

impl Buckets {
    /// The bucket with fewer verifications left (a refusing one has none): what
    /// `rate_remaining` and `rate_reset_seconds` report.
    fn tighter(&self) -> Option<Rate> {
        match (self.key, self.partner) {
            (Some(k), Some(p)) => Some(if p.remaining < k.remaining { p } else { k }),
            (k, p) => k.or(p),
        }
    }
}

/// Whole seconds (rounded up) from `now` until `at`, when that is in the future.
fn seconds_until(at: Option<pg_sys::TimestampTz>, now: pg_sys::TimestampTz) -> Option<i32> {
    let micros = at? - now;
    (micros > 0).then(|| i32::try_from((micros + 999_999) / 1_000_000).unwrap_or(i32::MAX))
}

/// What [`take_limits`] took so far, to give back when a later limit refuses.
#[derive(Default)]
struct Taken {
    key_rate: bool,
    partner_rate: bool,
    /// The key's balance, then the partner's.
    receipts: [Option<credits::Receipt>; 2],
}

impl Taken {
    fn give_back(&self, bucket: &str, partner: &[u8; 16], now: pg_sys::TimestampTz) {
        if self.key_rate {
            shared::keys::give_back(bucket, now);
        }
        if self.partner_rate {
            shared::keys::give_back_partner(partner, now);
        }
        for receipt in self.receipts.into_iter().flatten() {
            credits::give_back(receipt);
        }
    }
}

/// Most required scopes a failure's audit row lists; the count is always there.
const AUDITED_SCOPES: usize = 16;

/// The required scopes of an `insufficient_scope` failure as its audit row shows them:
/// bounded in number and length, since they come from the caller (over HTTP, from a header).
fn required_scopes_detail(required: &[Option<String>]) -> serde_json::Value {
    let shown: Vec<Option<String>> = required
        .iter()
        .take(AUDITED_SCOPES)
        .map(|s| s.as_deref().map(redact::excerpt))
        .collect();
    serde_json::json!({ "required_scopes": shown, "required_scope_count": required.len() })
}

/// Re-hash with the newest pepper and current parameters. Conditional on the old hash, so
/// two backends re-hashing at once leave one consistent result.
fn rehash_key(
    client: &mut SpiClient<'_>,
    key_id: &str,
    row: &StoredKey,
    rehash: &Rehash<'_>,
) -> ApiResult<()> {
    let (newest, secret, params) = (rehash.peppers.newest(), rehash.secret, rehash.params);
    const UPDATE: &str = "UPDATE apikey.keys SET secret_hash = $2, pepper_fingerprint = $3 \
        WHERE key_id = $1 AND secret_hash = $4";
    let digest = hash::digest(newest.bytes(), secret.as_bytes());
    let phc = hash::hash(&digest, params).map_err(|e| {
        ApiError::config(e).with_hint(
        "Check apikey.argon2_memory_kib, apikey.argon2_iterations and apikey.argon2_parallelism.",
    )
    })?;

    let args = [
        key_id.into(),
        phc.as_str().into(),
        newest.fingerprint.as_str().into(),
        row.secret_hash.as_str().into(),
    ];
    db::execute(client, UPDATE, &[pg_sys::TEXTOID; 4], &args)?;
    proof::proved(key_id, &phc, digest, clock::now());
    let mut event = Event::new("rehash");
    event.key_id = Some(key_id);
    event.partner_id = Some(row.partner_id);
    event.detail = serde_json::json!({
        "memory_kib": params.memory_kib,
        "iterations": params.iterations,
        "parallelism": params.parallelism,
        "pepper_fingerprint": newest.fingerprint,
    });
    if let Some(format) = rehash.imported_from {
        event.detail["imported_from"] = serde_json::json!(format.as_str());
    }
    audit::record(client, event)?;
    Ok(())
}
