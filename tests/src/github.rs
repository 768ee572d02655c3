//! GitHub's side of secret scanning, for the leak report tests: a P-256 key pair whose public
//! key is written in GitHub's key list format (what `APIKEY_SHIM_SECRET_SCANNING_KEYS` names),
//! and signatures of report bodies as GitHub makes them (ECDSA P-256 over SHA-256 of the raw
//! body, DER, base64, in `Github-Public-Key-Signature`).

use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use std::path::Path;

pub struct GitHub {
    key: SigningKey,
    pub key_identifier: String,
}

impl GitHub {
    /// A fixed key: `seed` (1 to 255) repeated is a valid P-256 scalar, and RFC 6979 makes
    /// signing deterministic, so failures reproduce.
    pub fn new(seed: u8, key_identifier: &str) -> GitHub {
        GitHub {
            key: SigningKey::from_bytes(&[seed; 32].into()).expect("a valid P-256 scalar"),
            key_identifier: key_identifier.to_string(),
        }
    }

    /// Writes GitHub's public key list naming this key.
    pub fn write_key_file(&self, path: &Path) {
        let pem = self
            .key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM");
        let list = serde_json::json!({ "public_keys": [
            { "key_identifier": self.key_identifier, "key": pem, "is_current": true } ] });
        std::fs::write(path, list.to_string()).expect("write the key list");
    }

    pub fn sign(&self, body: &[u8]) -> String {
        let signature: Signature = self.key.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}
