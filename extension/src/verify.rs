//! `apikey_verify`: token in, exactly one row out, never an error for any token value.
//!
//! Cost model: the first successful verification of a key in a backend pays for Argon2id and
//! remembers the proof (key id, stored hash, HMAC digest). Later ones read the row fresh
//! (revocation, expiry, enabled, partner state, hash changes all apply at once) and compare
//! one HMAC against the proof in constant time. Unknown key ids and wrong secrets both pay
//! one Argon2id verification, so timing does not tell which key ids exist.

use crate::audit::{self, Event};
use crate::db;
use crate::error::{ApiError, ApiResult, OrRaise};
use crate::hash::{self, Digest, Params};
use crate::identity::{self, Identity};
use crate::pepper::{self, Pepper};
use crate::{fetch, guc, scope, token};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Inet;
use std::cell::RefCell;
use std::collections::HashMap;

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

type VerifyRow = (
    bool,
    String,
    Option<String>,
    Option<pgrx::Uuid>,
    Option<Vec<String>>,
    Option<i32>,
    Option<TimestampWithTimeZone>,
);

/// SECURITY DEFINER without `SET search_path`: see `db::execute`, which pins it for every
/// statement this function runs.
// The signature is the contract's result columns, spelled the way pgrx needs them.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, security_definer, parallel_unsafe)]
fn apikey_verify(
    token: Option<&str>,
    required_scopes: default!(Option<Vec<Option<String>>>, "'{}'"),
    client_ip: default!(Option<Inet>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(valid, bool),
        name!(reason, String),
        name!(key_id, Option<String>),
        name!(partner_id, Option<pgrx::Uuid>),
        name!(scopes, Option<Vec<String>>),
        name!(rate_per_minute, Option<i32>),
        name!(expires_at, Option<TimestampWithTimeZone>),
    ),
> {
    let required: Vec<String> = required_scopes
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    let request = Request {
        token,
        required: &required,
        client_ip: client_ip.as_ref(),
    };
    let outcome = Spi::connect_mut(|client| verify(client, &request)).or_raise();
    TableIterator::once(outcome.into_row())
}

struct Request<'a> {
    token: Option<&'a str>,
    required: &'a [String],
    client_ip: Option<&'a Inet>,
}

/// The key row as verification needs it; time comparisons are made by the database with
/// the transaction's `now()`.
struct KeyRow {
    partner_id: pgrx::Uuid,
    secret_hash: String,
    pepper_fingerprint: String,
    scopes: Vec<String>,
    rate_per_minute: i32,
    expires_at: Option<TimestampWithTimeZone>,
    enabled: bool,
    partner_active: bool,
    revoked: bool,
    not_yet_valid: bool,
    expired: bool,
    ip_allowed: bool,
    touch_due: bool,
}

struct Outcome {
    reason: Reason,
    key_id: Option<String>,
    row: Option<KeyRow>,
}

impl Outcome {
    fn into_row(self) -> VerifyRow {
        let identity = if self.reason.reveals_identity() {
            self.row
        } else {
            None
        };
        let key_id = identity.as_ref().and(self.key_id);
        match identity {
            Some(row) => (
                self.reason == Reason::Ok,
                self.reason.as_str().to_string(),
                key_id,
                Some(row.partner_id),
                Some(row.scopes),
                Some(row.rate_per_minute),
                row.expires_at,
            ),
            None => (
                false,
                self.reason.as_str().to_string(),
                None,
                None,
                None,
                None,
                None,
            ),
        }
    }
}

/// A minute, in PostgreSQL timestamp units (microseconds).
const MINUTE: i64 = 60_000_000;

fn lookup(
    client: &mut SpiClient<'_>,
    key_id: &str,
    client_ip: Option<&Inet>,
) -> ApiResult<Option<KeyRow>> {
    // SAFETY: plain read of the transaction start time, i.e. now().
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let at = |t: Option<TimestampWithTimeZone>| t.map(pg_sys::TimestampTz::from);
    let missing = || ApiError::internal("apikey.keys row has NULL in a NOT NULL column");
    let key = key_id.into_datum().ok_or_else(missing)?;
    let found = fetch::by_primary_key(c"keys", c"keys_pkey", pg_sys::F_TEXTEQ, key, |row| {
        let expires_at: Option<TimestampWithTimeZone> = row.get("expires_at")?;
        Ok((
            KeyRow {
                partner_id: row.get("partner_id")?.ok_or_else(missing)?,
                secret_hash: row.get("secret_hash")?.ok_or_else(missing)?,
                pepper_fingerprint: row.get("pepper_fingerprint")?.ok_or_else(missing)?,
                scopes: row.get::<Vec<String>>("scopes")?.ok_or_else(missing)?,
                rate_per_minute: row.get("rate_per_minute")?.ok_or_else(missing)?,
                expires_at,
                enabled: row.get("enabled")?.ok_or_else(missing)?,
                partner_active: false,
                revoked: at(row.get("revoked_at")?).is_some_and(|t| t <= now),
                not_yet_valid: at(row.get("not_before")?).is_some_and(|t| t > now),
                expired: at(expires_at).is_some_and(|t| t <= now),
                ip_allowed: true,
                touch_due: at(row.get("last_used_at")?).is_none_or(|t| t < now - MINUTE),
            },
            row.get::<pgrx::AnyArray>("allowed_cidrs")?.is_some(),
        ))
    })?;
    let Some((mut row, ip_restricted)) = found else {
        return Ok(None);
    };
    let partner = row.partner_id.into_datum().ok_or_else(missing)?;
    row.partner_active = fetch::by_primary_key(
        c"partners",
        c"partners_pkey",
        pg_sys::F_UUID_EQ,
        partner,
        |p| p.get::<bool>("active"),
    )?
    .flatten()
    .unwrap_or(false);
    if ip_restricted {
        row.ip_allowed = client_ip.is_some() && ip_in_allowed_cidrs(client, key_id, client_ip)?;
    }
    Ok(Some(row))
}

/// Only keys with an allow-list pay for this query.
fn ip_in_allowed_cidrs(
    client: &mut SpiClient<'_>,
    key_id: &str,
    client_ip: Option<&Inet>,
) -> ApiResult<bool> {
    const CHECK: &str =
        "SELECT coalesce($2 <<= ANY (allowed_cidrs), false) FROM apikey.keys WHERE key_id = $1";
    let table = db::execute(
        client,
        CHECK,
        &[pg_sys::TEXTOID, pg_sys::INETOID],
        &[key_id.into(), client_ip.cloned().into()],
    )?;
    Ok(table
        .into_iter()
        .next()
        .map(|r| r.get::<bool>(1))
        .transpose()?
        .flatten()
        .unwrap_or(false))
}

fn verify(client: &mut SpiClient<'_>, request: &Request<'_>) -> ApiResult<Outcome> {
    let outcome = decide(client, request)?;
    if outcome.reason == Reason::Ok {
        if let Some(row) = &outcome.row {
            identity::set(Identity {
                partner_id: row.partner_id,
                key_id: outcome.key_id.clone().unwrap_or_default(),
                scopes: row.scopes.clone(),
            });
        }
    } else {
        identity::clear();
        let mut event = Event::new("verify_failed");
        event.key_id = outcome.key_id.as_deref();
        event.partner_id = outcome.row.as_ref().map(|r| r.partner_id);
        event.reason = Some(outcome.reason.as_str());
        event.client_ip = request.client_ip;
        if outcome.reason == Reason::InsufficientScope {
            event.detail = serde_json::json!({ "required_scopes": request.required });
        }
        audit::record(client, event)?;
    }
    Ok(outcome)
}

fn decide(client: &mut SpiClient<'_>, request: &Request<'_>) -> ApiResult<Outcome> {
    let fail = |reason, key_id: Option<&str>, row| {
        Ok(Outcome {
            reason,
            key_id: key_id.map(str::to_string),
            row,
        })
    };
    let token = match request.token {
        None | Some("") => return fail(Reason::MissingKey, None, None),
        Some(t) => t,
    };
    let Some(parsed) = token::parse(token) else {
        return fail(Reason::Malformed, None, None);
    };
    let peppers = pepper::load(guc::pepper_file().as_deref())?;
    let params = guc::argon2_params();
    let secret = parsed.secret.as_bytes();
    let key_id = parsed.key_id;

    let Some(row) = lookup(client, key_id, request.client_ip)? else {
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

    let reason = if row.revoked {
        Reason::Revoked
    } else if !row.enabled {
        Reason::Disabled
    } else if !row.partner_active {
        Reason::PartnerInactive
    } else if row.expired {
        Reason::Expired
    } else if row.not_yet_valid {
        Reason::NotYetValid
    } else if !row.ip_allowed {
        Reason::IpNotAllowed
    } else if !scope::has_all(&row.scopes, request.required.iter().map(String::as_str)) {
        Reason::InsufficientScope
    } else {
        Reason::Ok
    };
    if reason == Reason::Ok && db::can_write() {
        let newest = peppers.newest();
        if newest.fingerprint != row.pepper_fingerprint
            || proofs::needs_rehash(key_id, &proof, params)
        {
            rehash(client, key_id, &row, newest, secret, params)?;
        }
        if row.touch_due {
            touch(client, key_id)?;
        }
    }
    fail(reason, Some(key_id), Some(row))
}

/// Re-hash with the newest pepper and current parameters. Conditional on the old hash, so
/// two backends re-hashing at once leave one consistent result.
fn rehash(
    client: &mut SpiClient<'_>,
    key_id: &str,
    row: &KeyRow,
    newest: &Pepper,
    secret: &[u8],
    params: Params,
) -> ApiResult<()> {
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
/// updating the row right now, its timestamp is as good as ours and we do not wait.
fn touch(client: &mut SpiClient<'_>, key_id: &str) -> ApiResult<()> {
    const TOUCH: &str = "UPDATE apikey.keys SET last_used_at = now() WHERE key_id = \
        (SELECT key_id FROM apikey.keys WHERE key_id = $1 FOR UPDATE SKIP LOCKED)";
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
/// row still holds that exact hash, and it never stands in for reading the row.
mod proofs {
    use super::*;

    const MAX_ENTRIES: usize = 10_000;

    #[derive(Clone)]
    pub struct Proof {
        stored_hash: String,
        digest: Digest,
        /// Parameters the stored hash was last found to match, so the warm path need not
        /// parse the PHC string again to decide about re-hashing.
        current_for: Option<Params>,
    }

    thread_local! {
        static PROOFS: RefCell<HashMap<String, Proof>> = RefCell::new(HashMap::new());
    }

    pub fn proven(key_id: &str, stored_hash: &str, digest: &Digest) -> Option<Proof> {
        PROOFS.with_borrow(|proofs| {
            proofs
                .get(key_id)
                .filter(|p| p.stored_hash == stored_hash && hash::digests_equal(&p.digest, digest))
                .cloned()
        })
    }

    pub fn remember(key_id: &str, stored_hash: &str, digest: Digest) -> Proof {
        let proof = Proof {
            stored_hash: stored_hash.to_string(),
            digest,
            current_for: None,
        };
        PROOFS.with_borrow_mut(|proofs| {
            if proofs.len() >= MAX_ENTRIES && !proofs.contains_key(key_id) {
                proofs.clear();
            }
            proofs.insert(key_id.to_string(), proof.clone());
        });
        proof
    }

    /// Whether the proven hash was made with parameters other than `params`.
    pub fn needs_rehash(key_id: &str, proof: &Proof, params: Params) -> bool {
        if proof.current_for == Some(params) {
            return false;
        }
        let stale = hash::needs_rehash(&proof.stored_hash, params);
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
