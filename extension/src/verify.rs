//! `apikey_verify`: token in, exactly one row out, never an error for any token value.
//!
//! Cost model: the first successful verification of a key in a backend pays for Argon2id and
//! remembers the proof (key id, stored hash, HMAC digest). Later ones take the key's row
//! from `known_keys` (which drops it as soon as PostgreSQL reports a change, so revocation,
//! expiry, enabled, partner state and hash changes apply at once) and compare one HMAC
//! against the proof in constant time. Unknown key ids and wrong secrets both pay
//! one Argon2id verification, so timing does not tell which key ids exist.

use crate::audit::{self, Event};
use crate::error::{ApiError, ApiResult, OrRaise};
use crate::hash::{self, Digest, Params};
use crate::identity::{self, Identity};
use crate::known_keys::{self, StoredKey};
use crate::pepper::{Pepper, PepperSet};
use crate::sqltypes::{self, InetDatum};
use crate::{db, guc, scope, srf, token};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Ok,
    MissingKey,
    Malformed,
    UnknownKey,
    SecretMismatch,
    Revoked,
    Disabled,
    Expired,
    NotYetValid,
    PartnerInactive,
    IpNotAllowed,
    InsufficientScope,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::MissingKey => "missing_key",
            Reason::Malformed => "malformed",
            Reason::UnknownKey => "unknown_key",
            Reason::SecretMismatch => "secret_mismatch",
            Reason::Revoked => "revoked",
            Reason::Disabled => "disabled",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::PartnerInactive => "partner_inactive",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::InsufficientScope => "insufficient_scope",
        }
    }

    /// Failures after which the key is known to be authentic, so its identity is returned.
    fn reveals_identity(self) -> bool {
        matches!(
            self,
            Reason::Ok | Reason::IpNotAllowed | Reason::InsufficientScope
        )
    }
}

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
    // SAFETY: PostgreSQL calls this with the three arguments sql/verify.sql declares
    // (text, text[], inet); NULLs are checked before a datum is read.
    let (token, required, client_ip) = unsafe {
        (
            pgrx::fcinfo::pg_getarg::<&str>(fcinfo, 0),
            pgrx::fcinfo::pg_getarg_datum(fcinfo, 1)
                .map(|d| sqltypes::text_array(d))
                .unwrap_or_default(),
            pgrx::fcinfo::pg_getarg_datum(fcinfo, 2).map(|d| InetDatum::new(d)),
        )
    };
    let request = Request {
        token,
        required: &required,
        client_ip,
        // SAFETY: plain read of backend state.
        now: unsafe { pg_sys::GetCurrentTransactionStartTimestamp() },
    };
    let outcome = verify(&request).or_raise();
    let (mut values, mut nulls) = outcome.into_datums();
    // SAFETY: fcinfo is the call's own; the row matches the declared result columns.
    unsafe { srf::return_one_row(fcinfo, &mut values, &mut nulls) }
}

struct Request<'a> {
    token: Option<&'a str>,
    required: &'a [String],
    client_ip: Option<InetDatum>,
    /// The transaction's start, `now()`, which every time comparison uses.
    now: pg_sys::TimestampTz,
}

struct Outcome<'a> {
    reason: Reason,
    key_id: Option<&'a str>,
    row: Option<Rc<StoredKey>>,
    /// Set on success when the stored hash uses an old pepper or old Argon2 parameters.
    rehash: Option<Rehash<'a>>,
}

struct Rehash<'a> {
    peppers: Rc<PepperSet>,
    secret: &'a [u8],
    params: Params,
}

impl Outcome<'_> {
    /// The result row: `valid`, `reason`, then the identity columns, which stay NULL unless
    /// the key proved authentic.
    fn into_datums(self) -> ([pg_sys::Datum; 7], [bool; 7]) {
        let valid = self.reason == Reason::Ok;
        let identity = self.row.filter(|_| self.reason.reveals_identity());
        let columns: [Option<pg_sys::Datum>; 7] = match identity {
            Some(row) => [
                valid.into_datum(),
                self.reason.as_str().into_datum(),
                self.key_id.into_datum(),
                row.partner_id.into_datum(),
                Some(sqltypes::text_array_datum(&row.scopes)),
                row.rate_per_minute.into_datum(),
                row.expires_at.into_datum(),
            ],
            None => [
                valid.into_datum(),
                self.reason.as_str().into_datum(),
                None,
                None,
                None,
                None,
                None,
            ],
        };
        (
            columns.map(|c| c.unwrap_or(pg_sys::Datum::from(0))),
            columns.map(|c| c.is_none()),
        )
    }
}

/// A minute, in PostgreSQL timestamp units (microseconds).
const MINUTE: i64 = 60_000_000;

/// Decides, then does the bookkeeping the decision calls for: the identity, and (where the
/// transaction can write) the audit row of a failure, a re-hash and `last_used_at`. Only
/// that bookkeeping uses SPI; a warm success usually needs none of it.
fn verify<'a>(request: &Request<'a>) -> ApiResult<Outcome<'a>> {
    let outcome = decide(request)?;
    if outcome.reason == Reason::Ok {
        if let (Some(row), Some(key_id)) = (&outcome.row, outcome.key_id) {
            identity::set(Identity {
                partner_id: row.partner_id,
                key_id: key_id.to_string(),
                scopes: row.scopes.clone(),
            });
            let now = request.now;
            let touch = row.last_used_at.get().is_none_or(|t| t < now - MINUTE) && db::can_write();
            if outcome.rehash.is_some() || touch {
                Spi::connect_mut(|client| {
                    if let Some(rehash) = &outcome.rehash {
                        rehash_key(client, key_id, row, rehash)?;
                    }
                    if touch {
                        touch_key(client, key_id)?;
                        row.last_used_at.set(Some(now));
                    }
                    Ok::<_, ApiError>(())
                })?;
            }
        }
    } else {
        identity::clear();
        let mut event = Event::new("verify_failed");
        event.key_id = outcome.key_id;
        event.partner_id = outcome.row.as_ref().map(|r| r.partner_id);
        event.reason = Some(outcome.reason.as_str());
        event.client_ip = request.client_ip;
        if outcome.reason == Reason::InsufficientScope {
            event.detail = serde_json::json!({ "required_scopes": request.required });
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
            rehash: None,
        })
    };
    let token = match request.token {
        None | Some("") => return fail(Reason::MissingKey, None, None),
        Some(t) => t,
    };
    let Some(parsed) = token::parse(token) else {
        return fail(Reason::Malformed, None, None);
    };
    let peppers = guc::peppers()?;
    let params = guc::argon2_params();
    let secret = parsed.secret.as_bytes();
    let key_id = parsed.key_id;

    let Some(row) = known_keys::lookup(key_id)? else {
        spend_like_a_mismatch(peppers.newest(), secret, params)?;
        return fail(Reason::UnknownKey, Some(key_id), None);
    };
    let Some(pepper) = peppers.by_fingerprint(&row.pepper_fingerprint) else {
        // The pepper that hashed this key was removed from the file: it can never verify.
        spend_like_a_mismatch(peppers.newest(), secret, params)?;
        return fail(Reason::SecretMismatch, Some(key_id), Some(row));
    };
    let digest = hash::digest(pepper.bytes(), secret);
    let proof = match proofs::proven(key_id, &row.secret_hash, &digest) {
        Some(proof) => proof,
        None if hash::verify(&row.secret_hash, &digest) => {
            proofs::remember(key_id, &row.secret_hash, digest)
        }
        None => return fail(Reason::SecretMismatch, Some(key_id), Some(row)),
    };

    let now = request.now;
    let reason = if row.revoked_at.is_some_and(|t| t <= now) {
        Reason::Revoked
    } else if !row.enabled {
        Reason::Disabled
    } else if !row.partner_active {
        Reason::PartnerInactive
    } else if row.expires_at_tz().is_some_and(|t| t <= now) {
        Reason::Expired
    } else if row.not_before.is_some_and(|t| t > now) {
        Reason::NotYetValid
    } else if !row.admits(|| request.client_ip.and_then(|ip| ip.addr())) {
        Reason::IpNotAllowed
    } else if !scope::has_all(&row.scopes, request.required.iter().map(String::as_str)) {
        Reason::InsufficientScope
    } else {
        Reason::Ok
    };
    let stale = reason == Reason::Ok
        && (peppers.newest().fingerprint != row.pepper_fingerprint
            || proofs::needs_rehash(key_id, &row.secret_hash, proof, params))
        && db::can_write();
    Ok(Outcome {
        reason,
        key_id: Some(key_id),
        row: Some(row),
        rehash: stale.then_some(Rehash {
            peppers,
            secret,
            params,
        }),
    })
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
    let digest = hash::digest(newest.bytes(), secret);
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
    proofs::remember(key_id, &phc, digest);
    let mut event = Event::new("rehash");
    event.key_id = Some(key_id);
    event.partner_id = Some(row.partner_id);
    event.detail = serde_json::json!({
        "memory_kib": params.memory_kib,
        "iterations": params.iterations,
        "parallelism": params.parallelism,
        "pepper_fingerprint": newest.fingerprint,
    });
    audit::record(client, event)?;
    Ok(())
}

/// `last_used_at`, at most once a minute per key. SKIP LOCKED: if another session is
/// updating the row right now, its timestamp is as good as ours and we do not wait. The
/// recency test is repeated here because this backend's copy of the row does not see other
/// sessions' touches (`known_keys`).
fn touch_key(client: &mut SpiClient<'_>, key_id: &str) -> ApiResult<()> {
    const TOUCH: &str = "UPDATE apikey.keys SET last_used_at = now() WHERE key_id = \
        (SELECT key_id FROM apikey.keys WHERE key_id = $1 \
           AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute') \
         FOR UPDATE SKIP LOCKED)";
    db::execute(client, TOUCH, &[pg_sys::TEXTOID], &[key_id.into()])?;
    Ok(())
}

thread_local! {
    static DECOY: RefCell<Option<(Params, String)>> = const { RefCell::new(None) };
}

/// One Argon2id verification against a decoy hash made with the current parameters, so an
/// unknown key id costs what a wrong secret costs.
fn spend_like_a_mismatch(pepper: &Pepper, secret: &[u8], params: Params) -> ApiResult<()> {
    let decoy = DECOY.with_borrow(|d| {
        d.as_ref()
            .filter(|(p, _)| *p == params)
            .map(|(_, h)| h.clone())
    });
    let decoy = match decoy {
        Some(h) => h,
        None => {
            let h = hash::hash(&[0u8; 32], params).map_err(ApiError::config)?;
            DECOY.set(Some((params, h.clone())));
            h
        }
    };
    let _ = hash::verify(&decoy, &hash::digest(pepper.bytes(), secret));
    Ok(())
}

/// Per-backend proofs that a digest matched a stored hash. An entry is only trusted while the
/// row still holds that exact hash. Kept apart from `known_keys`, whose rows are dropped on
/// every change of the tables: a proof outlives them, so issuing one key does not make every
/// backend pay Argon2id again for every other key.
mod proofs {
    use super::*;

    const MAX_ENTRIES: usize = 10_000;

    struct Proof {
        stored_hash: String,
        digest: Digest,
        /// Parameters the stored hash was last found to match, so the warm path need not
        /// parse the PHC string again to decide about re-hashing.
        current_for: Option<Params>,
    }

    /// What a proof says about the stored hash: the parameters it was last found current
    /// for, if any.
    #[derive(Clone, Copy)]
    pub struct Proven {
        current_for: Option<Params>,
    }

    thread_local! {
        static PROOFS: RefCell<HashMap<String, Proof>> = RefCell::new(HashMap::new());
    }

    pub fn proven(key_id: &str, stored_hash: &str, digest: &Digest) -> Option<Proven> {
        PROOFS.with_borrow(|proofs| {
            proofs
                .get(key_id)
                .filter(|p| p.stored_hash == stored_hash && hash::digests_equal(&p.digest, digest))
                .map(|p| Proven {
                    current_for: p.current_for,
                })
        })
    }

    pub fn remember(key_id: &str, stored_hash: &str, digest: Digest) -> Proven {
        let proof = Proof {
            stored_hash: stored_hash.to_string(),
            digest,
            current_for: None,
        };
        PROOFS.with_borrow_mut(|proofs| {
            if proofs.len() >= MAX_ENTRIES && !proofs.contains_key(key_id) {
                proofs.clear();
            }
            proofs.insert(key_id.to_string(), proof);
        });
        Proven { current_for: None }
    }

    /// Whether the proven `stored_hash` was made with parameters other than `params`.
    pub fn needs_rehash(key_id: &str, stored_hash: &str, proven: Proven, params: Params) -> bool {
        if proven.current_for == Some(params) {
            return false;
        }
        let stale = hash::needs_rehash(stored_hash, params);
        if !stale {
            PROOFS.with_borrow_mut(|proofs| {
                if let Some(p) = proofs.get_mut(key_id) {
                    p.current_for = Some(params);
                }
            });
        }
        stale
    }
}
