//! Keys another system issued, brought in by their stored hash (never their token), and how a
//! token in that system's shape finds and proves its key.
//!
//! A key is found by a *lookup*, unique among imported keys, that verification can compute
//! from the token alone:
//! - `hmac:<hex>` (`sha256`): an HMAC under the newest pepper of the stored SHA-256 of the
//!   whole token, which verification computes from the token under each pepper of the file
//!   (the digest itself is kept only as the key's hash, until its first success);
//! - `id:<id>`: an `<id>.<secret>` token's id (`argon2id-hmac`);
//! - `prefix:<p>`: the first characters of the token (`bcrypt`, `argon2id`).
//!
//! bcrypt comes from the `bcrypt` crate (maintained, pure Rust over RustCrypto's `blowfish`,
//! the same `$2a$`/`$2b$`/`$2y$` strings Python's `bcrypt` and npm's `bcryptjs` write); it
//! truncates a token to 72 bytes, as those libraries did when they made the hashes.

use crate::hash::{self, to_hex};
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use subtle::ConstantTimeEq;

/// The formats `apikey_import` takes, by their SQL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Hex SHA-256 of the whole token.
    Sha256,
    /// Argon2id PHC string of HMAC-SHA256(pepper, secret) of an `<id>.<secret>` token.
    Argon2idHmac,
    /// bcrypt of the whole token.
    Bcrypt,
    /// Argon2id PHC string of the whole token.
    Argon2id,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::Sha256,
        Format::Argon2idHmac,
        Format::Bcrypt,
        Format::Argon2id,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Sha256 => "sha256",
            Format::Argon2idHmac => "argon2id-hmac",
            Format::Bcrypt => "bcrypt",
            Format::Argon2id => "argon2id",
        }
    }

    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// Marks a key row whose `secret_hash` is still the other system's (in `pepper_fingerprint`,
/// which no pepper's fingerprint can equal): `imported:<format>`.
pub const FOREIGN_MARK: &str = "imported:";

/// The format of a row still holding another system's hash, from its `pepper_fingerprint`.
pub fn foreign_format(pepper_fingerprint: &str) -> Option<Format> {
    Format::parse(pepper_fingerprint.strip_prefix(FOREIGN_MARK)?)
}

/// Longest foreign token looked at; anything longer, or with a character outside visible
/// ASCII (what an HTTP header carries), is no imported key's.
pub const MAX_TOKEN_LEN: usize = 512;
const MAX_ID_LEN: usize = 128;
const PREFIX_LENGTHS: std::ops::RangeInclusive<usize> = 4..=64;
/// Bounds on the work one verification of an imported hash may cost: the other system's
/// parameters are taken as they are, within these.
const MAX_ARGON2_MEMORY_KIB: u32 = 262_144;
const MAX_ARGON2_PASSES: u32 = 16;
const MAX_ARGON2_LANES: u32 = 16;
const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=15;

/// A key ready to be stored: its lookup and the hash as stored.
#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    pub lookup: String,
    pub stored_hash: String,
    /// For a `prefix:` lookup, its length (verification tries each length in use).
    pub prefix_length: Option<usize>,
}

/// A refusal: the argument at fault and why.
pub type Refusal = (&'static str, String);

/// Checks an imported key's arguments and derives its lookup (`pepper`: the newest).
pub fn prepare(
    format: Format,
    stored_hash: &str,
    lookup: Option<&str>,
    pepper: &[u8],
) -> Result<Prepared, Refusal> {
    let stored_hash = stored_hash.trim();
    match format {
        Format::Sha256 => {
            if lookup.is_some() {
                return Err((
                    "lookup",
                    "must be NULL for sha256: the key is found by the token's digest".into(),
                ));
            }
            let hex = stored_hash.to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(("stored_hash", "must be 64 hex digits (SHA-256)".into()));
            }
            Ok(Prepared {
                lookup: peppered_lookup(pepper, &hex),
                stored_hash: hex,
                prefix_length: None,
            })
        }
        Format::Argon2idHmac => {
            check_argon2id(stored_hash)?;
            let id = lookup.ok_or(("lookup", "is required: the id before the dot".to_string()))?;
            if id.is_empty() || id.len() > MAX_ID_LEN || !visible(id) || id.contains('.') {
                return Err((
                    "lookup",
                    format!("must be the token's id: 1 to {MAX_ID_LEN} visible characters without a dot"),
                ));
            }
            Ok(Prepared {
                lookup: format!("id:{id}"),
                stored_hash: stored_hash.to_string(),
                prefix_length: None,
            })
        }
        Format::Bcrypt | Format::Argon2id => {
            if format == Format::Bcrypt {
                check_bcrypt(stored_hash)?;
            } else {
                check_argon2id(stored_hash)?;
            }
            let prefix = lookup.ok_or((
                "lookup",
                "is required: a prefix of the token, unique among imported keys".to_string(),
            ))?;
            if !PREFIX_LENGTHS.contains(&prefix.len()) || !visible(prefix) {
                return Err((
                    "lookup",
                    format!(
                        "must be the token's first {} to {} characters (visible ASCII)",
                        PREFIX_LENGTHS.start(),
                        PREFIX_LENGTHS.end()
                    ),
                ));
            }
            Ok(Prepared {
                lookup: format!("prefix:{prefix}"),
                stored_hash: stored_hash.to_string(),
                prefix_length: Some(prefix.len()),
            })
        }
    }
}

fn visible(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

fn check_argon2id(phc: &str) -> Result<(), Refusal> {
    let refuse = |why: String| Err(("stored_hash", why));
    let Ok(parsed) = PasswordHash::new(phc) else {
        return refuse(
            "must be an Argon2id PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash)".into(),
        );
    };
    if parsed.algorithm.as_str() != "argon2id" || parsed.hash.is_none() {
        return refuse("must be an Argon2id PHC string with its hash".into());
    }
    let value = |name: &str| parsed.params.get_decimal(name).unwrap_or(u32::MAX);
    if value("m") > MAX_ARGON2_MEMORY_KIB
        || value("t") > MAX_ARGON2_PASSES
        || value("p") > MAX_ARGON2_LANES
    {
        return refuse(format!(
            "asks for more work than a verification may cost (at most m={MAX_ARGON2_MEMORY_KIB}, \
             t={MAX_ARGON2_PASSES}, p={MAX_ARGON2_LANES})"
        ));
    }
    Ok(())
}

fn check_bcrypt(stored: &str) -> Result<(), Refusal> {
    let version_ok = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|v| stored.starts_with(v));
    let parts: Option<bcrypt::HashParts> = stored.parse().ok();
    match parts {
        Some(parts) if version_ok && stored.len() == 60 => {
            let cost = parts.get_cost();
            if BCRYPT_COSTS.contains(&cost) {
                Ok(())
            } else {
                Err((
                    "stored_hash",
                    format!(
                        "bcrypt cost {cost} is outside {}..={}",
                        BCRYPT_COSTS.start(),
                        BCRYPT_COSTS.end()
                    ),
                ))
            }
        }
        _ => Err((
            "stored_hash",
            "must be a bcrypt string ($2b$<cost>$<53 characters>)".into(),
        )),
    }
}

/// Which lookup forms the database's imported keys use: verification computes only those.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forms {
    pub hmac: bool,
    pub id: bool,
    pub prefix_lengths: Vec<usize>,
}

impl Forms {
    pub fn is_empty(&self) -> bool {
        !self.hmac && !self.id && self.prefix_lengths.is_empty()
    }
}

/// Whether `token` could be an imported key's at all.
pub fn could_be_foreign(token: &str) -> bool {
    token.len() <= MAX_TOKEN_LEN && !token.is_empty() && visible(token)
}

/// Every lookup under which `token` may have been imported, given the forms in use and the
/// peppers of the pepper file.
pub fn candidates<'p>(
    token: &str,
    forms: &Forms,
    peppers: impl Iterator<Item = &'p [u8]>,
) -> Vec<String> {
    let mut out = Vec::new();
    if !could_be_foreign(token) {
        return out;
    }
    if forms.hmac {
        use sha2::Digest as _;
        let digest = to_hex(&sha2::Sha256::digest(token.as_bytes()));
        out.extend(peppers.map(|pepper| peppered_lookup(pepper, &digest)));
    }
    if forms.id {
        if let Some((id, _)) = token.split_once('.') {
            if !id.is_empty() && id.len() <= MAX_ID_LEN {
                out.push(format!("id:{id}"));
            }
        }
    }
    for &length in &forms.prefix_lengths {
        if token.len() > length {
            out.push(format!("prefix:{}", &token[..length]));
        }
    }
    out
}

/// The lookup of a `sha256` key: an HMAC under `pepper` of the token's SHA-256 (hex), kept
/// apart from the digests proofs use by a label.
pub fn peppered_lookup(pepper: &[u8], sha256_hex: &str) -> String {
    let mut labelled = Vec::with_capacity(sha256_hex.len() + 16);
    labelled.extend_from_slice(b"apikey-lookup\0");
    labelled.extend_from_slice(sha256_hex.as_bytes());
    format!("hmac:{}", to_hex(&hash::digest(pepper, &labelled)))
}

/// The part of `token` its stored hash covers: after the dot for an `id:` lookup, all of it
/// otherwise.
pub fn secret_of<'t>(lookup: &str, token: &'t str) -> &'t str {
    if lookup.starts_with("id:") {
        token.split_once('.').map_or(token, |(_, secret)| secret)
    } else {
        token
    }
}

/// Whether `secret` matches another system's `stored` hash. `peppers`: for `argon2id-hmac`,
/// each pepper of the file is tried (the other system's is one of them).
pub fn verify<'p>(
    format: Format,
    stored: &str,
    secret: &[u8],
    mut peppers: impl Iterator<Item = &'p [u8]>,
) -> bool {
    match format {
        Format::Sha256 => {
            use sha2::Digest as _;
            let digest = to_hex(&sha2::Sha256::digest(secret));
            digest.as_bytes().ct_eq(stored.as_bytes()).into()
        }
        Format::Argon2idHmac => {
            peppers.any(|pepper| hash::verify(stored, &hash::digest(pepper, secret)))
        }
        Format::Bcrypt => bcrypt::verify(secret, stored).unwrap_or(false),
        Format::Argon2id => match PasswordHash::new(stored) {
            Ok(parsed) => Argon2::default().verify_password(secret, &parsed).is_ok(),
            Err(_) => false,
        },
    }
}

/// The digest a proof of an imported key's secret is kept under while its row holds the other
/// system's hash: the newest pepper's HMAC of the secret, bound to every pepper of the file,
/// since whether an `argon2id-hmac` hash matches depends on which peppers the file holds (a
/// secret refused before the old pepper was added must not stay refused after).
/// `peppers`: newest first.
pub fn proof_digest<'p>(
    mut peppers: impl Iterator<Item = &'p [u8]>,
    secret: &[u8],
) -> hash::Digest {
    use hmac::Mac;
    let mut mac = hash::hmac_sha256(peppers.next().unwrap_or_default());
    mac.update(secret);
    for pepper in peppers {
        mac.update(&hash::digest(pepper, b"apikey-pepper-set"));
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "mbk_live_Zq8rT2vW9xY4aB6cD1eF3gH5jK7mN0pQ";
    const PEPPER: &[u8] = b"the newest pepper";

    #[test]
    fn formats_parse_by_their_sql_names_only() {
        for format in Format::ALL {
            assert_eq!(Format::parse(format.as_str()), Some(format));
            assert_eq!(
                foreign_format(&format!("imported:{}", format.as_str())),
                Some(format)
            );
        }
        for bad in ["", "SHA256", "md5", "bcrypt ", "argon2i"] {
            assert_eq!(Format::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            foreign_format("3f2a..."),
            None,
            "a pepper fingerprint is no format"
        );
    }

    #[test]
    fn a_sha256_key_is_found_by_an_hmac_of_its_digest() {
        use sha2::Digest as _;
        let hex = to_hex(&sha2::Sha256::digest(TOKEN.as_bytes()));
        let prepared =
            prepare(Format::Sha256, &hex.to_ascii_uppercase(), None, PEPPER).expect("valid");
        assert_eq!(prepared.stored_hash, hex, "kept in lower case");
        assert!(
            prepared.lookup.starts_with("hmac:") && !prepared.lookup.contains(&hex),
            "peppered: {}",
            prepared.lookup
        );
        let forms = Forms {
            hmac: true,
            ..Forms::default()
        };
        let peppers: [&[u8]; 2] = [b"a newer pepper", PEPPER];
        assert_eq!(
            candidates(TOKEN, &forms, peppers.into_iter())[1],
            prepared.lookup,
            "found under the pepper it was imported with"
        );
        assert!(verify(
            Format::Sha256,
            &hex,
            TOKEN.as_bytes(),
            std::iter::empty()
        ));
        assert!(!verify(
            Format::Sha256,
            &hex,
            b"mbk_live_other",
            std::iter::empty()
        ));
        assert_eq!(
            prepare(Format::Sha256, &hex, Some("x"), PEPPER)
                .unwrap_err()
                .0,
            "lookup"
        );
        for bad in ["", "abc", &hex[1..], &format!("{}g", &hex[1..])] {
            assert_eq!(
                prepare(Format::Sha256, bad, None, PEPPER).unwrap_err().0,
                "stored_hash",
                "{bad}"
            );
        }
    }

    #[test]
    fn lookups_are_checked_and_derived_per_format() {
        let phc =
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$6xJMq0pbH4Lg0dVYq+8TK3XGBSwx2cQmrWzEyLm5DB8";
        let id = prepare(Format::Argon2idHmac, phc, Some("mpk_7f3a"), PEPPER).expect("valid");
        assert_eq!(id.lookup, "id:mpk_7f3a");
        for bad in [None, Some(""), Some("a.b"), Some("has space")] {
            assert_eq!(
                prepare(Format::Argon2idHmac, phc, bad, PEPPER)
                    .unwrap_err()
                    .0,
                "lookup",
                "{bad:?}"
            );
        }
        let prefix = prepare(Format::Argon2id, phc, Some(&TOKEN[..16]), PEPPER).expect("valid");
        assert_eq!(
            (prefix.lookup.as_str(), prefix.prefix_length),
            ("prefix:mbk_live_Zq8rT2v", Some(16))
        );
        for bad in [None, Some("abc"), Some(&TOKEN[..0])] {
            assert_eq!(
                prepare(Format::Argon2id, phc, bad, PEPPER).unwrap_err().0,
                "lookup",
                "{bad:?}"
            );
        }
        let forms = Forms {
            id: true,
            prefix_lengths: vec![16],
            ..Forms::default()
        };
        assert_eq!(
            candidates("mpk_7f3a.s3cr3t", &forms, std::iter::empty()),
            vec!["id:mpk_7f3a".to_string()],
            "too short for the prefix"
        );
        assert_eq!(
            candidates(TOKEN, &forms, std::iter::empty()),
            vec![prefix.lookup]
        );
        assert_eq!(secret_of("id:mpk_7f3a", "mpk_7f3a.s3cr3t"), "s3cr3t");
        assert_eq!(secret_of("prefix:mbk_", TOKEN), TOKEN);
    }

    #[test]
    fn hashes_are_refused_when_malformed_or_too_costly() {
        for bad in ["", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$6xJMq0pbH4Lg0dVYq+8TK3XGBSwx2cQmrWzEyLm5DB8",
            "$argon2id$v=19$m=1048576,t=1,p=1$c2FsdHNhbHQ$6xJMq0pbH4Lg0dVYq+8TK3XGBSwx2cQmrWzEyLm5DB8",
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ"]
        {
            assert_eq!(prepare(Format::Argon2id, bad, Some("abcd"), PEPPER).unwrap_err().0, "stored_hash", "{bad}");
        }
        let good = bcrypt::hash_with_salt(TOKEN, 4, [7; 16])
            .expect("bcrypt")
            .to_string();
        assert!(prepare(Format::Bcrypt, &good, Some("mbk_live"), PEPPER).is_ok());
        let costly = bcrypt::hash_with_salt(TOKEN, 4, [7; 16])
            .expect("bcrypt")
            .format_for_version(bcrypt::Version::TwoB)
            .replacen("$04$", "$16$", 1);
        for bad in [
            "",
            "$2b$04$short",
            costly.as_str(),
            &good.replacen("$2b$", "$2x$", 1),
        ] {
            assert_eq!(
                prepare(Format::Bcrypt, bad, Some("mbk_live"), PEPPER)
                    .unwrap_err()
                    .0,
                "stored_hash",
                "{bad}"
            );
        }
        assert!(verify(
            Format::Bcrypt,
            &good,
            TOKEN.as_bytes(),
            std::iter::empty()
        ));
        assert!(!verify(
            Format::Bcrypt,
            &good,
            b"mbk_live_wrong",
            std::iter::empty()
        ));
        assert!(!verify(
            Format::Bcrypt,
            "garbage",
            TOKEN.as_bytes(),
            std::iter::empty()
        ));
    }

    #[test]
    fn an_argon2id_hmac_key_is_proved_under_any_pepper_of_the_file() {
        let params = hash::Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let phc = hash::hash(&hash::digest(b"their pepper", b"s3cr3t"), params).expect("hash");
        let peppers: [&[u8]; 2] = [b"our pepper", b"their pepper"];
        assert!(verify(
            Format::Argon2idHmac,
            &phc,
            b"s3cr3t",
            peppers.into_iter()
        ));
        assert!(!verify(
            Format::Argon2idHmac,
            &phc,
            b"s3cr3t",
            [b"our pepper".as_slice()].into_iter()
        ));
        assert!(!verify(
            Format::Argon2idHmac,
            &phc,
            b"wrong",
            peppers.into_iter()
        ));
    }

    #[test]
    fn a_peppered_lookup_depends_on_the_pepper_and_is_no_digest_a_proof_uses() {
        use sha2::Digest as _;
        let hex = to_hex(&sha2::Sha256::digest(TOKEN.as_bytes()));
        let lookup = peppered_lookup(b"pepper", &hex);
        assert!(lookup.starts_with("hmac:"));
        assert_ne!(lookup, peppered_lookup(b"other", &hex));
        assert_ne!(
            &lookup[5..],
            to_hex(&hash::digest(b"pepper", TOKEN.as_bytes()))
        );
        assert_ne!(
            &lookup[5..],
            to_hex(&hash::digest(b"pepper", hex.as_bytes()))
        );
    }

    #[test]
    fn a_proof_digest_changes_with_the_pepper_set() {
        let one: [&[u8]; 1] = [b"ours"];
        let two: [&[u8]; 2] = [b"ours", b"theirs"];
        let digest = proof_digest(one.into_iter(), b"secret");
        assert_eq!(digest, proof_digest(one.into_iter(), b"secret"));
        assert_ne!(digest, proof_digest(two.into_iter(), b"secret"));
        assert_ne!(digest, proof_digest(one.into_iter(), b"other"));
    }

    #[test]
    fn garbage_has_no_candidates() {
        let forms = Forms {
            hmac: true,
            id: true,
            prefix_lengths: vec![4],
        };
        for garbage in [
            "",
            "with space.x",
            "tab\t.x",
            &"x".repeat(MAX_TOKEN_LEN + 1),
            "é.é",
        ] {
            assert!(
                candidates(garbage, &forms, std::iter::empty()).is_empty(),
                "{garbage:?}"
            );
        }
        assert!(Forms::default().is_empty());
    }
}
