//! Webhook secrets at rest: sealed with ChaCha20-Poly1305 under a key derived from a pepper,
//! so a table, a dump or a stolen backup holds nothing that signs. The endpoint's id is the
//! associated data: a sealed secret copied onto another endpoint's row does not open there.
//!
//! Layout: one version byte, the 12-byte random nonce, then ciphertext and tag.

use crate::pepper::Pepper;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::Mac;

const VERSION: u8 = 1;
const NONCE_BYTES: usize = 12;

#[derive(Debug, PartialEq, Eq)]
pub enum SealError {
    Random,
    /// Wrong pepper, wrong endpoint, or altered bytes: AEAD does not say which.
    Unopenable,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SealError::Random => "the OS random number generator failed",
            SealError::Unopenable => {
                "the sealed webhook secret does not open with its pepper (altered, or copied from another endpoint)"
            }
        })
    }
}

fn cipher(pepper: &Pepper) -> ChaCha20Poly1305 {
    let mut mac = crate::hash::hmac_sha256(pepper.bytes());
    mac.update(b"apikey webhook secret seal v1");
    ChaCha20Poly1305::new(Key::from_slice(&mac.finalize().into_bytes()))
}

pub fn seal(pepper: &Pepper, endpoint_id: &[u8], secret: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut nonce).map_err(|_| SealError::Random)?;
    let sealed = cipher(pepper)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: endpoint_id,
            },
        )
        .map_err(|_| SealError::Unopenable)?;
    let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

pub fn open(pepper: &Pepper, endpoint_id: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let Some((&VERSION, rest)) = sealed.split_first() else {
        return Err(SealError::Unopenable);
    };
    let Some((nonce, ciphertext)) = rest.split_at_checked(NONCE_BYTES) else {
        return Err(SealError::Unopenable);
    };
    cipher(pepper)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: endpoint_id,
            },
        )
        .map_err(|_| SealError::Unopenable)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINT: &[u8] = b"0123456789abcdef";
    const SECRET: &[u8] = b"a webhook signing key of 32 byte";

    fn pepper(fill: u8) -> Pepper {
        Pepper::new(vec![fill; 32])
    }

    #[test]
    fn opens_what_it_sealed_and_hides_the_secret() {
        let sealed = seal(&pepper(1), ENDPOINT, SECRET).unwrap();
        assert_eq!(sealed.len(), 1 + NONCE_BYTES + SECRET.len() + 16);
        assert_eq!(sealed[0], VERSION);
        assert!(!sealed.windows(8).any(|w| SECRET.windows(8).any(|s| s == w)));
        assert_eq!(open(&pepper(1), ENDPOINT, &sealed).unwrap(), SECRET);
    }

    #[test]
    fn errors_say_what_went_wrong_without_the_secret() {
        assert_eq!(
            SealError::Random.to_string(),
            "the OS random number generator failed"
        );
        assert!(SealError::Unopenable
            .to_string()
            .starts_with("the sealed webhook secret does not open"));
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let a = seal(&pepper(1), ENDPOINT, SECRET).unwrap();
        let b = seal(&pepper(1), ENDPOINT, SECRET).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn refuses_another_pepper_endpoint_version_or_any_altered_byte() {
        let sealed = seal(&pepper(1), ENDPOINT, SECRET).unwrap();
        assert_eq!(
            open(&pepper(2), ENDPOINT, &sealed),
            Err(SealError::Unopenable)
        );
        assert_eq!(
            open(&pepper(1), b"fedcba9876543210", &sealed),
            Err(SealError::Unopenable)
        );
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 1;
            assert_eq!(
                open(&pepper(1), ENDPOINT, &altered),
                Err(SealError::Unopenable),
                "byte {i}"
            );
        }
        for len in 0..=NONCE_BYTES + 1 {
            assert_eq!(
                open(&pepper(1), ENDPOINT, &sealed[..len]),
                Err(SealError::Unopenable)
            );
        }
    }
}
