//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): a message is signed with
//! HMAC-SHA256 over `<webhook-id>.<webhook-timestamp>.<body>`, sent as `v1,<base64>` in the
//! `webhook-signature` header (several space-separated entries while a secret rotates), with
//! a secret serialized as `whsec_<base64 key>`.

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SECRET_PREFIX: &str = "whsec_";

const STANDARD_ENGINE: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Standard base64 that also reads keys whose padding was dropped or whose last character
/// carries stray low bits, as the reference libraries do.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Why a serialized secret is refused. Never carries the secret itself.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretError {
    Empty,
    NotBase64,
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecretError::Empty => "is empty",
            SecretError::NotBase64 => "is not whsec_ followed by base64",
        })
    }
}

/// The key of a serialized secret, `whsec_` prefix optional.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    if encoded.is_empty() {
        return Err(SecretError::Empty);
    }
    LENIENT.decode(encoded).map_err(|_| SecretError::NotBase64)
}

fn mac(key: &[u8], msg_id: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = crate::hash::hmac_sha256(key);
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// Bytes of a new signing key: within the 24 to 64 the specification asks for.
pub const SECRET_KEY_BYTES: usize = 32;

/// A new signing key and its serialized form, `whsec_<base64>`.
pub fn generate_secret() -> Result<(Vec<u8>, String), getrandom::Error> {
    let mut key = vec![0u8; SECRET_KEY_BYTES];
    getrandom::getrandom(&mut key)?;
    let serialized = format!("{SECRET_PREFIX}{}", STANDARD_ENGINE.encode(&key));
    Ok((key, serialized))
}

/// The `webhook-signature` entry for one message: `v1,<base64>`.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
    let tag = mac(key, msg_id, timestamp, payload).finalize().into_bytes();
    format!("v1,{}", STANDARD_ENGINE.encode(tag))
}

/// A received message, as its headers and body name it.
pub struct Message<'a> {
    pub msg_id: &'a str,
    /// `webhook-timestamp`: seconds since the Unix epoch.
    pub timestamp: i64,
    pub payload: &'a [u8],
    /// `webhook-signature`: space-separated `<version>,<base64>` entries.
    pub signatures: &'a str,
}

/// Whether `message` was signed with `key` no further than `tolerance_seconds` from `now`
/// (both in seconds since the Unix epoch; a timestamp too far in the future is refused like
/// one too old, against replays). Entries of other versions (`v1a`) are skipped; the
/// comparison takes the same time wherever the first difference is.
pub fn verify(key: &[u8], message: &Message<'_>, now: i64, tolerance_seconds: i64) -> bool {
    if now.abs_diff(message.timestamp) > tolerance_seconds.unsigned_abs() {
        return false;
    }
    let expected = mac(key, message.msg_id, message.timestamp, message.payload);
    message
        .signatures
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, encoded)| STANDARD_ENGINE.decode(encoded).ok())
        .any(|tag| expected.clone().verify_slice(&tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference vector of the Standard Webhooks libraries
    // (github.com/standard-webhooks/standard-webhooks, libraries/python/tests/
    // test_webhooks.py, test_sign_function; the same values are in the other libraries'
    // tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const PAYLOAD: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn message(signatures: &str) -> Message<'_> {
        Message {
            msg_id: MSG_ID,
            timestamp: TIMESTAMP,
            payload: PAYLOAD.as_bytes(),
            signatures,
        }
    }

    fn key() -> Vec<u8> {
        secret_key(SECRET).expect("the reference secret")
    }

    #[test]
    fn new_secrets_are_32_random_bytes_serialized_as_whsec() {
        let (key, secret) = generate_secret().expect("random bytes");
        assert_eq!(key.len(), SECRET_KEY_BYTES);
        assert_eq!(secret_key(&secret).expect("readable"), key);
        assert!(
            secret.starts_with("whsec_") && secret.len() == 6 + 44,
            "{secret}"
        );
        let (other, _) = generate_secret().expect("random bytes");
        assert_ne!(key, other);
    }

    #[test]
    fn signs_the_reference_vector() {
        assert_eq!(
            sign(&key(), MSG_ID, TIMESTAMP, PAYLOAD.as_bytes()),
            SIGNATURE
        );
    }

    #[test]
    fn verifies_the_reference_vector_within_the_tolerance_only() {
        assert!(verify(&key(), &message(SIGNATURE), TIMESTAMP, 300));
        assert!(verify(&key(), &message(SIGNATURE), TIMESTAMP + 300, 300));
        assert!(verify(&key(), &message(SIGNATURE), TIMESTAMP - 300, 300));
        assert!(
            !verify(&key(), &message(SIGNATURE), TIMESTAMP + 301, 300),
            "too old"
        );
        assert!(
            !verify(&key(), &message(SIGNATURE), TIMESTAMP - 301, 300),
            "from the future"
        );
    }

    #[test]
    fn any_matching_v1_entry_verifies_and_nothing_else_does() {
        // From the reference tests: a wrong signature, and a list with the right one in it.
        let wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        let listed = format!("{wrong} {SIGNATURE} {wrong}");
        assert!(verify(&key(), &message(&listed), TIMESTAMP, 300));
        for refused in [
            wrong,
            "",
            "v1,",
            "v1,not base64!",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
        ] {
            assert!(
                !verify(&key(), &message(refused), TIMESTAMP, 300),
                "{refused:?}"
            );
        }
        // Any change to what is signed.
        let m = |msg_id, timestamp, payload: &'static str| Message {
            msg_id,
            timestamp,
            payload: payload.as_bytes(),
            signatures: SIGNATURE,
        };
        assert!(!verify(
            &key(),
            &m("msg_other", TIMESTAMP, PAYLOAD),
            TIMESTAMP,
            300
        ));
        assert!(!verify(
            &key(),
            &m(MSG_ID, TIMESTAMP + 1, PAYLOAD),
            TIMESTAMP,
            300
        ));
        assert!(!verify(
            &key(),
            &m(MSG_ID, TIMESTAMP, r#"{"test": 2432232315}"#),
            TIMESTAMP,
            300
        ));
        assert!(!verify(b"another key", &message(SIGNATURE), TIMESTAMP, 300));
    }

    #[test]
    fn secrets_are_read_with_or_without_prefix_and_padding() {
        // From the reference tests: keys that need no, one and two padding characters.
        for (unpadded, padded) in [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS=",
            ),
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr",
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr==",
            ),
        ] {
            let expected = LENIENT.decode(padded).expect("padded base64");
            assert_eq!(secret_key(unpadded).as_ref(), Ok(&expected));
            assert_eq!(secret_key(padded).as_ref(), Ok(&expected));
            assert_eq!(secret_key(&format!("whsec_{unpadded}")), Ok(expected));
        }
        assert_eq!(secret_key(""), Err(SecretError::Empty));
        assert_eq!(secret_key("whsec_"), Err(SecretError::Empty));
        assert_eq!(secret_key("whsec_not base64!"), Err(SecretError::NotBase64));
        assert_eq!(secret_key("whsec_=="), Err(SecretError::NotBase64));
        assert_eq!(secret_key("===="), Err(SecretError::NotBase64));
        assert_eq!(SecretError::Empty.to_string(), "is empty");
        assert_eq!(
            SecretError::NotBase64.to_string(),
            "is not whsec_ followed by base64"
        );
    }
}
