//! Whether a digest (HMAC of pepper and secret) matches a key's stored Argon2id hash, paying
//! for Argon2id as rarely as possible: first this backend's proofs, then the server's shared
//! ones (`shared::keys`), and only then Argon2id itself, through the server's gate
//! (`shared::argon2`). A proof names the exact stored hash it was shown against, so a changed
//! hash (re-hash, pepper rotation, a DBA's UPDATE) is never matched by an old proof; and a
//! digest other than the proven one is a wrong secret, rejected without Argon2id.

use crate::hash::{self, Digest, Params};
use crate::known_keys::StoredKey;
use crate::shared::argon2::{self, Admission};
use crate::shared::keys::{self as shared_keys, Proof};
use crate::shared::{self, Stat};
use std::cell::RefCell;
use std::collections::HashMap;

/// What the check found.
pub enum Checked {
    Proven(Proven),
    Mismatch,
    /// Only Argon2id could tell, and the key has all the Argon2id work it may queue (see
    /// `shared::argon2`): nothing is known about the secret.
    Busy,
}

/// Checks `digest` against `row`'s stored hash at `now`.
pub fn check(key_id: &str, row: &StoredKey, digest: &Digest, now: i64) -> Checked {
    check_with(key_id, row, digest, now, || {
        hash::verify(&row.secret_hash, digest)
    })
}

/// As [`check`], with `matches_stored` telling, at the price of the Argon2id gate, whether
/// the secret `digest` stands for matches the stored hash: for an imported key still holding
/// another system's hash, that system's check; its proof is kept under `digest` all the same.
pub fn check_with(
    key_id: &str,
    row: &StoredKey,
    digest: &Digest,
    now: i64,
    matches_stored: impl FnOnce() -> bool,
) -> Checked {
    match local(key_id, &row.secret_hash, digest) {
        Local::Matches(proven) => {
            shared::count(Stat::ProofHits);
            return Checked::Proven(proven);
        }
        Local::Differs => {
            shared::count(Stat::ProofHits);
            return Checked::Mismatch;
        }
        Local::Unknown => {}
    }
    let settled = || match shared_keys::proof(
        key_id,
        &row.secret_hash_fingerprint,
        digest,
        crate::clock::now(),
    ) {
        Some(Proof::Matches) => Some(true),
        Some(Proof::Differs) => Some(false),
        Some(Proof::Unknown) | None => None,
    };
    let matches = match settled() {
        Some(known) => {
            shared::count(Stat::ProofHits);
            known
        }
        None => match argon2::claim(key_id, digest, now, settled) {
            Admission::Busy => return Checked::Busy,
            // Proven (or refuted) by another backend while this one waited for the key.
            Admission::Settled(known) => {
                shared::count(Stat::ProofHits);
                known
            }
            Admission::Run(claim) => {
                let known = settled();
                let matches = known.unwrap_or_else(|| {
                    shared::count(Stat::ProofMisses);
                    let matches = matches_stored();
                    if matches {
                        shared::count(Stat::Argon2Verified);
                        shared_keys::prove(key_id, &row.secret_hash_fingerprint, digest, now);
                    } else {
                        shared::count(Stat::Argon2Failed);
                        shared_keys::failed(key_id, &row.secret_hash_fingerprint, digest, now);
                    }
                    matches
                });
                drop(claim);
                matches
            }
        },
    };
    if matches {
        Checked::Proven(remember(key_id, &row.secret_hash, *digest))
    } else {
        Checked::Mismatch
    }
}

/// Remembers, in this backend and the server, that `digest` matches the stored hash `phc`
/// (after a re-hash made it).
pub fn proved(key_id: &str, phc: &str, digest: Digest, now: i64) {
    shared_keys::prove(key_id, &hash::fingerprint(phc), &digest, now);
    remember(key_id, phc, digest);
}

/// What this backend's proof says.
enum Local {
    Matches(Proven),
    Differs,
    Unknown,
}

fn local(key_id: &str, stored_hash: &str, digest: &Digest) -> Local {
    PROOFS.with_borrow(|proofs| match proofs.get(key_id) {
        Some(p) if p.stored_hash == stored_hash => {
            if hash::digests_equal(&p.digest, digest) {
                Local::Matches(Proven {
                    current_for: p.current_for,
                })
            } else {
                Local::Differs
            }
        }
        _ => Local::Unknown,
    })
}

/// Proofs one backend keeps (besides the server's): answering from them takes no lock at
/// all. Past this many, the map starts over rather than growing without bound.
const MAX_ENTRIES: usize = 10_000;

struct LocalProof {
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
    static PROOFS: RefCell<HashMap<String, LocalProof>> = RefCell::new(HashMap::new());
}

fn remember(key_id: &str, stored_hash: &str, digest: Digest) -> Proven {
    let proof = LocalProof {
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
