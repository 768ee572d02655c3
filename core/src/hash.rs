//! Stored hash = Argon2id PHC string of HMAC-SHA256(pepper, secret). The HMAC digest is what
//! the per-backend proof cache remembers, so a warm verification costs one HMAC, not Argon2id.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Version};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub type Digest = [u8; 32];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Params {
    fn argon2(&self) -> Result<Argon2<'static>, String> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| {
                format!("invalid Argon2id parameters: {e} (memory must be at least 8 KiB per lane)")
            })?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// HMAC-SHA256 keyed with `key`, ready for input.
pub fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    // HMAC hashes a key longer than a block and pads a shorter one: every length is valid.
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

pub fn digest(pepper: &[u8], secret: &[u8]) -> Digest {
    let mut mac = hmac_sha256(pepper);
    mac.update(secret);
    mac.finalize().into_bytes().into()
}

/// SHA-256 of a stored PHC string: names the exact hash a shared proof was shown against,
/// in 32 bytes of shared memory instead of the whole string.
pub fn fingerprint(phc: &str) -> Digest {
    use sha2::Digest as _;
    Sha256::digest(phc.as_bytes()).into()
}

/// Lower-case hex of `bytes`, as fingerprints, saved digests and imported keys' lookups are
/// written (on the path of every token that might be an imported key's: one allocation).
pub fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

pub fn digests_equal(a: &Digest, b: &Digest) -> bool {
    a.ct_eq(b).into()
}

/// A new PHC string for `digest` with a fresh random salt.
pub fn hash(digest: &Digest, params: Params) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt)
        .map_err(|e| format!("OS random number generator failed: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    params
        .argon2()?
        .hash_password(digest, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("Argon2id hashing failed: {e}"))
}

/// Verifies `digest` against a stored PHC string using the parameters recorded in it. A
/// corrupt stored hash verifies as false rather than raising: the caller reports a mismatch.
pub fn verify(phc: &str, digest: &Digest) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(digest, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Whether `phc` was made with parameters other than `current` (and should be re-hashed).
pub fn needs_rehash(phc: &str, current: Params) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    let value = |name: &str| parsed.params.get_decimal(name);
    parsed.algorithm.as_str() != "argon2id"
        || value("m") != Some(current.memory_kib)
        || value("t") != Some(current.iterations)
        || value("p") != Some(current.parallelism)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Small parameters keep the unit tests fast; production defaults come from the GUCs.
    const FAST: Params = Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn digest_depends_on_pepper_and_secret() {
        let d = digest(b"pepper-one-pepper-one-pepper-one", b"secret");
        assert_eq!(d, digest(b"pepper-one-pepper-one-pepper-one", b"secret"));
        assert_ne!(d, digest(b"pepper-two-pepper-two-pepper-two", b"secret"));
        assert_ne!(d, digest(b"pepper-one-pepper-one-pepper-one", b"secreT"));
        assert!(digests_equal(&d, &d.clone()));
        assert!(!digests_equal(&d, &[0u8; 32]));
    }

    #[test]
    fn hash_then_verify() {
        let d = digest(b"pepper-one-pepper-one-pepper-one", b"secret");
        let phc = hash(&d, FAST).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(verify(&phc, &d));
        assert!(!verify(&phc, &[0u8; 32]));
        assert!(!verify("not a phc string", &d));
        assert_ne!(phc, hash(&d, FAST).unwrap(), "salts are random");
    }

    #[test]
    fn rehash_detection() {
        let d = [7u8; 32];
        let phc = hash(&d, FAST).unwrap();
        assert!(!needs_rehash(&phc, FAST));
        assert!(needs_rehash(
            &phc,
            Params {
                memory_kib: 128,
                ..FAST
            }
        ));
        assert!(needs_rehash(
            &phc,
            Params {
                iterations: 2,
                ..FAST
            }
        ));
        assert!(needs_rehash(
            &phc,
            Params {
                parallelism: 2,
                memory_kib: 64,
                ..FAST
            }
        ));
        assert!(needs_rehash("garbage", FAST));
    }

    #[test]
    fn invalid_parameters_are_an_error_not_a_panic() {
        let err = hash(
            &[0u8; 32],
            Params {
                memory_kib: 1,
                iterations: 1,
                parallelism: 1,
            },
        );
        assert!(err.unwrap_err().contains("Argon2id"));
    }

    #[test]
    fn a_fingerprint_is_the_sha256_of_the_stored_string() {
        assert_eq!(
            to_hex(&fingerprint("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(fingerprint("$argon2id$a"), fingerprint("$argon2id$b"));
    }
}
