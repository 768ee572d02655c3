//! GitHub's secret scanning signatures: a report's raw body is signed with ECDSA P-256 over
//! SHA-256 (`Github-Public-Key-Signature`: base64 of the DER signature) by the key that
//! `Github-Public-Key-Identifier` names in GitHub's public key list
//! (<https://api.github.com/meta/public_keys/secret_scanning>). The list is read from a file,
//! so the shim never fetches anything at request time; an operator (or a cron job) refreshes
//! the file and the shim re-reads it when its modification time changes.
//!
//! Pure code apart from [`KeyFile`], which only reads the file.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// The keys a report may be signed with, by identifier.
#[derive(Debug)]
pub struct KeySet {
    keys: BTreeMap<String, VerifyingKey>,
}

/// Why a signature was refused. Each is a 401; none says more than the client already knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingIdentifier,
    MissingSignature,
    /// No key of that identifier in the configured list (retired, or never GitHub's).
    UnknownKey,
    /// The signature is not base64 of a DER-encoded ECDSA signature.
    Malformed,
    /// A well-formed signature that the key does not confirm for this body.
    Mismatch,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::MissingIdentifier => "missing Github-Public-Key-Identifier header",
            Refusal::MissingSignature => "missing Github-Public-Key-Signature header",
            Refusal::UnknownKey => "Github-Public-Key-Identifier names no configured public key",
            Refusal::Malformed => {
                "Github-Public-Key-Signature is not base64 of a DER-encoded ECDSA signature"
            }
            Refusal::Mismatch => "the signature does not match the body",
        }
    }
}

/// GitHub's list format. `is_current` is read but not used: a key GitHub has just retired may
/// still sign reports in flight, so every listed key is accepted until it leaves the list.
/// Unknown fields are tolerated, as GitHub may add some.
#[derive(Deserialize)]
struct KeyList {
    public_keys: Vec<ListedKey>,
}

#[derive(Deserialize)]
struct ListedKey {
    key_identifier: String,
    key: String,
    #[allow(dead_code)]
    #[serde(default)]
    is_current: Option<bool>,
}

impl KeySet {
    /// Parses GitHub's public key list. Every listed key must be a P-256 public key in PEM
    /// (SubjectPublicKeyInfo); an empty list is refused, since it would refuse every report.
    pub fn parse(json: &[u8]) -> Result<KeySet, String> {
        let list: KeyList = serde_json::from_slice(json).map_err(|e| {
            format!("not a GitHub public key list ({{\"public_keys\": [...]}}): {e}")
        })?;
        if list.public_keys.is_empty() {
            return Err("the public_keys list is empty".into());
        }
        let mut keys = BTreeMap::new();
        for listed in list.public_keys {
            let id = listed.key_identifier.trim().to_string();
            if id.is_empty() {
                return Err("a key has an empty key_identifier".into());
            }
            let key = VerifyingKey::from_public_key_pem(listed.key.trim())
                .map_err(|e| format!("key {id}: not a PEM-encoded ECDSA P-256 public key: {e}"))?;
            if keys.insert(id.clone(), key).is_some() {
                return Err(format!("key {id} is listed twice"));
            }
        }
        Ok(KeySet { keys })
    }

    /// How many keys; never 0 (`parse` refuses an empty list).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Checks the signature headers' values against the raw body.
    pub fn verify(
        &self,
        identifier: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let identifier = identifier
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(Refusal::MissingIdentifier)?;
        let signature = signature
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(Refusal::MissingSignature)?;
        let key = self.keys.get(identifier).ok_or(Refusal::UnknownKey)?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| Refusal::Malformed)?;
        let signature = Signature::from_der(&der).map_err(|_| Refusal::Malformed)?;
        key.verify(body, &signature).map_err(|_| Refusal::Mismatch)
    }
}

/// The configured key file, re-read when its modification time changes. A file that turns
/// bad after startup does not switch verification off: the keys read last stay in use and
/// the problem is logged once per change.
pub struct KeyFile {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

struct Loaded {
    modified: Option<SystemTime>,
    keys: Arc<KeySet>,
}

impl KeyFile {
    /// Reads and parses the file; the error names the path and what is wrong with it.
    pub fn load(path: &Path) -> Result<KeyFile, String> {
        let modified = modified(path);
        let keys = read(path)?;
        Ok(KeyFile {
            path: path.to_path_buf(),
            loaded: RwLock::new(Loaded {
                modified,
                keys: Arc::new(keys),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys in force: those of the file as it is now, or as it was last readable.
    pub fn keys(&self) -> Arc<KeySet> {
        let now = modified(&self.path);
        {
            let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
            // Unchanged. A file that cannot be looked at (being replaced) is a change: the
            // read below fails, the old keys stay, and the file is read again once it is back.
            if now == loaded.modified {
                return Arc::clone(&loaded.keys);
            }
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        if now != loaded.modified {
            loaded.modified = now;
            match read(&self.path) {
                Ok(keys) => {
                    tracing::info!(
                        path = %self.path.display(),
                        keys = keys.len(),
                        "secret scanning public keys reloaded"
                    );
                    loaded.keys = Arc::new(keys);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "secret scanning public keys not reloaded; the previous keys stay in use"
                ),
            }
        }
        Arc::clone(&loaded.keys)
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path) -> Result<KeySet, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    KeySet::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    /// A fixed private scalar: ECDSA signing in RustCrypto is deterministic (RFC 6979), so the
    /// tests need no randomness.
    fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32].into()).expect("a valid scalar")
    }

    fn pem(key: &SigningKey) -> String {
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM")
    }

    fn key_list(keys: &[(&str, &SigningKey)]) -> Vec<u8> {
        let list: Vec<_> = keys
            .iter()
            .map(|(id, key)| {
                serde_json::json!({ "key_identifier": id, "key": pem(key), "is_current": true })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "public_keys": list })).expect("JSON")
    }

    fn sign(key: &SigningKey, body: &[u8]) -> String {
        let signature: Signature = key.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    #[test]
    fn a_body_signed_by_a_listed_key_is_accepted_and_anything_else_refused() {
        let (a, b) = (signing_key(1), signing_key(2));
        let keys = KeySet::parse(&key_list(&[("a", &a), ("b", &b)])).expect("keys");
        assert_eq!(keys.len(), 2);
        let body = br#"[{"token":"x","type":"t","url":"u","source":"content"}]"#;
        let by_a = sign(&a, body);
        assert_eq!(keys.verify(Some("a"), Some(&by_a), body), Ok(()));
        assert_eq!(
            keys.verify(Some(" a "), Some(&format!("{by_a}\n")), body),
            Ok(())
        );
        assert_eq!(keys.verify(Some("b"), Some(&sign(&b, body)), body), Ok(()));
        let cases = [
            (
                None,
                Some(by_a.as_str()),
                &body[..],
                Refusal::MissingIdentifier,
            ),
            (Some(""), Some(&by_a), body, Refusal::MissingIdentifier),
            (Some("a"), None, body, Refusal::MissingSignature),
            (Some("a"), Some("  "), body, Refusal::MissingSignature),
            (Some("c"), Some(&by_a), body, Refusal::UnknownKey),
            (Some("a"), Some("not base64!"), body, Refusal::Malformed),
            (Some("a"), Some("AAAA"), body, Refusal::Malformed),
            // Signed by a, presented as b's.
            (Some("b"), Some(&by_a), body, Refusal::Mismatch),
            // The body changed by one byte (a space GitHub did not send).
            (
                Some("a"),
                Some(&by_a),
                b"[{\"token\":\"x\", \"type\":\"t\"}]",
                Refusal::Mismatch,
            ),
        ];
        for (id, signature, body, refusal) in cases {
            assert_eq!(
                keys.verify(id, signature, body),
                Err(refusal),
                "{id:?} {signature:?}"
            );
        }
    }

    #[test]
    fn each_refusal_says_which_part_is_wrong() {
        let messages = [
            (
                Refusal::MissingIdentifier,
                "missing Github-Public-Key-Identifier header",
            ),
            (
                Refusal::MissingSignature,
                "missing Github-Public-Key-Signature header",
            ),
            (
                Refusal::UnknownKey,
                "Github-Public-Key-Identifier names no configured public key",
            ),
            (
                Refusal::Malformed,
                "Github-Public-Key-Signature is not base64 of a DER-encoded ECDSA signature",
            ),
            (Refusal::Mismatch, "the signature does not match the body"),
        ];
        for (refusal, message) in messages {
            assert_eq!(refusal.message(), message);
        }
    }

    /// The signed sample request of GitHub's documentation, with the key GitHub lists under
    /// its identifier: our reading of their key and signature formats matches theirs.
    #[test]
    fn githubs_documented_sample_verifies() {
        let id = "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c";
        let list = serde_json::json!({ "public_keys": [{
            "key_identifier": id,
            "key": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYAGMWO8XgCamYKMJS6jc/qgvSlAd\nAjPuDPRcXU22YxgBrz+zoN19MzuRyW87qEt9/AmtoNP5GrobzUvQSyJFVw==\n-----END PUBLIC KEY-----\n",
            "is_current": true
        }]});
        let keys = KeySet::parse(list.to_string().as_bytes()).expect("GitHub's key");
        let body = br#"[{"source":"commit","token":"some_token","type":"some_type","url":"https://example.com/base-repo-url/"}]"#;
        let signature = "MEQCIQDaMKqrGnE27S0kgMrEK0eYBmyG0LeZismAEz/BgZyt7AIfXt9fErtRS4XaeSt/AO1RtBY66YcAdjxji410VQV4xg==";
        assert_eq!(keys.verify(Some(id), Some(signature), body), Ok(()));
        assert_eq!(
            keys.verify(Some(id), Some(signature), &body[1..]),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn bad_key_lists_are_refused_with_the_reason() {
        let a = signing_key(1);
        let good_pem = pem(&a);
        let cases: [(String, &str); 8] = [
            ("{".into(), "not a GitHub public key list"),
            ("[]".into(), "not a GitHub public key list"),
            (r#"{"keys": []}"#.into(), "not a GitHub public key list"),
            (r#"{"public_keys": []}"#.into(), "empty"),
            (
                r#"{"public_keys": [{"key_identifier": "k", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}]}"#.into(),
                "key k: not a PEM-encoded ECDSA P-256 public key",
            ),
            (
                r#"{"public_keys": [{"key_identifier": "k", "key": "hello"}]}"#.into(),
                "key k: not a PEM-encoded",
            ),
            (
                serde_json::json!({ "public_keys": [{ "key_identifier": " ", "key": good_pem }] })
                    .to_string(),
                "empty key_identifier",
            ),
            (
                serde_json::json!({ "public_keys": [
                    { "key_identifier": "k", "key": good_pem },
                    { "key_identifier": "k", "key": good_pem }
                ] })
                .to_string(),
                "key k is listed twice",
            ),
        ];
        for (json, expected) in cases {
            let error = KeySet::parse(json.as_bytes()).expect_err(&json);
            assert!(error.contains(expected), "{json}: {error}");
        }
        // Unknown fields (GitHub may add some) and a missing is_current are fine.
        let extra = serde_json::json!({ "public_keys": [
            { "key_identifier": "k", "key": good_pem, "is_current": false, "new": 1 }
        ], "more": true });
        assert_eq!(
            KeySet::parse(extra.to_string().as_bytes()).map(|k| k.len()),
            Ok(1)
        );
    }

    #[test]
    fn key_files_name_their_path_and_are_reread_when_changed() {
        let dir = std::env::temp_dir().join(format!("apikey-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let path = dir.join("keys.json");
        let _ = std::fs::remove_file(&path);
        let missing = KeyFile::load(&path)
            .err()
            .expect("a missing file is an error");
        assert!(
            missing.contains(&path.display().to_string()) && missing.contains("cannot read"),
            "{missing}"
        );
        std::fs::write(&path, b"{\"public_keys\": 1}").expect("write");
        let bad = KeyFile::load(&path).err().expect("bad JSON is an error");
        assert!(bad.starts_with(&format!("{}: ", path.display())), "{bad}");

        let (a, b) = (signing_key(1), signing_key(2));
        let set_time = |secs: u64| {
            let file = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            file.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .expect("set mtime");
        };
        std::fs::write(&path, key_list(&[("a", &a)])).expect("write");
        set_time(1_000);
        let file = KeyFile::load(&path).expect("a good file");
        let body = b"[]";
        assert!(file
            .keys()
            .verify(Some("a"), Some(&sign(&a, body)), body)
            .is_ok());

        // Replaced: the new list is used.
        std::fs::write(&path, key_list(&[("b", &b)])).expect("write");
        set_time(2_000);
        let keys = file.keys();
        assert!(keys.verify(Some("b"), Some(&sign(&b, body)), body).is_ok());
        assert_eq!(
            keys.verify(Some("a"), Some(&sign(&a, body)), body),
            Err(Refusal::UnknownKey)
        );

        // Broken: the last good keys stay in force.
        std::fs::write(&path, b"{").expect("write");
        set_time(3_000);
        assert!(file
            .keys()
            .verify(Some("b"), Some(&sign(&b, body)), body)
            .is_ok());
        // Removed for a moment (being replaced): likewise.
        std::fs::remove_file(&path).expect("remove");
        assert!(file
            .keys()
            .verify(Some("b"), Some(&sign(&b, body)), body)
            .is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
