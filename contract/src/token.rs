//! Token format: `<prefix>_<environment>_<id>_<secret><checksum>`, e.g.
//! `ak_live_3xF0q9LmZ2bT7cYw_<43 base62 chars><6 base62 chars>`.
//!
//! * Only `[A-Za-z0-9_]`, so a double-click selects the whole token and it survives URLs.
//! * `key_id` is everything before the last `_` (`ak_live_3xF0q9LmZ2bT7cYw`): it is public,
//!   safe to log, and is read out of the token without touching the database.
//! * The secret is 43 base62 characters drawn uniformly from the OS CSPRNG: 43 * log2(62)
//!   = 256.03 bits.
//! * The checksum is CRC32 over everything before it, as 6 base62 digits, so typos and
//!   garbage are rejected before any table access and secret scanners can recognise tokens.

pub const ENVIRONMENTS: [&str; 2] = ["live", "test"];
pub const MAX_PREFIX_LEN: usize = 16;
const ID_LEN: usize = 16;
const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// The length of a token whose prefix is `prefix_len` characters long.
pub const fn token_len(prefix_len: usize) -> usize {
    prefix_len + 1 + 4 + 1 + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN
}

/// Longest well-formed token; anything longer is rejected before it is even scanned.
pub const MAX_TOKEN_LEN: usize = token_len(MAX_PREFIX_LEN);

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly minted token. `token` must be shown to the caller once and then dropped.
pub struct NewToken {
    pub key_id: String,
    pub token: String,
}

impl NewToken {
    pub fn secret(&self) -> &str {
        &self.token[self.key_id.len() + 1..self.token.len() - CHECKSUM_LEN]
    }
}

/// The two halves of a syntactically valid token, borrowed from it.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    pub key_id: &'a str,
    pub secret: &'a str,
}

pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    let mut chars = prefix.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if starts_with_letter && rest_ok && prefix.len() <= MAX_PREFIX_LEN {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {MAX_PREFIX_LEN} lowercase letters or digits, starting with a letter"
        ))
    }
}

pub fn validate_environment(environment: &str) -> Result<(), String> {
    if ENVIRONMENTS.contains(&environment) {
        Ok(())
    } else {
        Err("must be 'live' or 'test'".to_string())
    }
}

/// Mints a token. Fails only if the OS CSPRNG fails; the prefix and environment must already
/// have been validated.
pub fn generate(prefix: &str, environment: &str) -> Result<NewToken, getrandom::Error> {
    let mut random = RandomBase62::default();
    let id = random.chars(ID_LEN)?;
    let secret = random.chars(SECRET_LEN)?;
    let key_id = format!("{prefix}_{environment}_{id}");
    let mut token = format!("{key_id}_{secret}");
    let checksum = checksum(token.as_bytes());
    token.push_str(&checksum);
    Ok(NewToken { key_id, token })
}

/// Checks shape and checksum. `None` means malformed; nothing here touches the database.
pub fn parse(token: &str) -> Option<ParsedToken<'_>> {
    let (parsed, checksum_part) = shape(token)?;
    if checksum(&token.as_bytes()[..token.len() - CHECKSUM_LEN]) != checksum_part {
        return None;
    }
    Some(parsed)
}

/// Whether `token` has the shape of one of apikey's own, its checksum right or not: such a
/// token is never taken for an imported key's, so a typo in one still fails `malformed`.
pub fn has_native_shape(token: &str) -> bool {
    shape(token).is_some()
}

/// The parts of a token of the native shape, and its checksum, unchecked.
fn shape(token: &str) -> Option<(ParsedToken<'_>, &str)> {
    if token.len() > MAX_TOKEN_LEN
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    let (key_id, tail) = token.rsplit_once('_')?;
    if tail.len() != SECRET_LEN + CHECKSUM_LEN || !is_key_id(key_id) {
        return None;
    }
    let (secret, checksum_part) = tail.split_at(SECRET_LEN);
    Some((ParsedToken { key_id, secret }, checksum_part))
}

/// True when `key_id` has the shape of a key id: `<prefix>_<environment>_<16 base62>`.
pub fn is_key_id(key_id: &str) -> bool {
    let mut parts = key_id.split('_');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(prefix), Some(environment), Some(id), None) => {
            validate_prefix(prefix).is_ok()
                && validate_environment(environment).is_ok()
                && id.len() == ID_LEN
                && id.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        _ => false,
    }
}

/// The prefix and environment a key id was minted with.
pub fn key_id_parts(key_id: &str) -> Option<(&str, &str)> {
    if !is_key_id(key_id) {
        return None;
    }
    let mut parts = key_id.split('_');
    Some((parts.next()?, parts.next()?))
}

fn checksum(body: &[u8]) -> String {
    let mut value = crc32fast::hash(body) as u64;
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    // 62^6 > 2^32, so every CRC32 fits and the digits are ASCII.
    String::from_utf8_lossy(&digits).into_owned()
}

/// Uniform base62 characters from the OS CSPRNG by rejection sampling: a byte is used only
/// when it is below 248 (= 4 * 62), so `byte % 62` has no bias.
#[derive(Default)]
struct RandomBase62 {
    pool: Vec<u8>,
}

/// The base62 character a random byte stands for, or `None` for the 8 bytes (248..=255)
/// that would make the low characters more likely.
fn unbiased_base62(byte: u8) -> Option<char> {
    (byte < 248).then(|| BASE62[usize::from(byte % 62)] as char)
}

impl RandomBase62 {
    fn chars(&mut self, count: usize) -> Result<String, getrandom::Error> {
        let mut out = String::with_capacity(count);
        while out.len() < count {
            if self.pool.is_empty() {
                let mut buf = [0u8; 64];
                getrandom::getrandom(&mut buf)?;
                self.pool.extend_from_slice(&buf);
            }
            if let Some(c) = self.pool.pop().and_then(unbiased_base62) {
                out.push(c);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> NewToken {
        generate("ak", "live").expect("CSPRNG available")
    }

    #[test]
    fn generated_tokens_parse_back() {
        let new = fresh();
        let parsed = parse(&new.token).expect("a fresh token parses");
        assert_eq!(parsed.key_id, new.key_id);
        assert_eq!(parsed.secret, new.secret());
        assert_eq!(parsed.secret.len(), SECRET_LEN);
        assert!(new.token.starts_with("ak_live_"));
        assert!(new
            .token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        assert!(new.token.len() <= MAX_TOKEN_LEN);
    }

    #[test]
    fn key_id_is_a_prefix_of_the_token_and_recognisable() {
        let new = generate("acme2", "test").unwrap();
        assert!(new.token.starts_with(&format!("{}_", new.key_id)));
        assert_eq!(key_id_parts(&new.key_id), Some(("acme2", "test")));
    }

    #[test]
    fn tokens_are_unique() {
        let a = fresh();
        let b = fresh();
        assert_ne!(a.token, b.token);
        assert_ne!(a.key_id, b.key_id);
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let new = fresh();
        let bytes = new.token.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'0', b'z', b'_', b'Q'] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut typo = bytes.to_vec();
                typo[i] = replacement;
                let typo = String::from_utf8(typo).unwrap();
                assert_eq!(parse(&typo), None, "typo at {i} accepted: {typo}");
            }
        }
    }

    #[test]
    fn a_native_shape_is_recognised_with_a_wrong_checksum_and_nothing_else() {
        let new = fresh();
        assert!(has_native_shape(&new.token));
        let mut typo = new.token.clone().into_bytes();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == b'0' { b'1' } else { b'0' };
        let typo = String::from_utf8(typo).unwrap();
        assert!(parse(&typo).is_none() && has_native_shape(&typo));
        for foreign in [
            "mbk_live_Zq8rT2vW9xY4aB6cD1eF3gH5jK7mN0pQ",
            "mpk_7f3a.s3cr3t",
            &new.token[..new.token.len() - 1],
            "",
        ] {
            assert!(!has_native_shape(foreign), "{foreign}");
        }
    }

    #[test]
    fn truncated_extended_and_garbage_tokens_are_malformed() {
        let new = fresh();
        let t = &new.token;
        for bad in [
            "",
            "_",
            "ak",
            "ak_live_",
            &t[..t.len() - 1],
            &format!("{t}0"),
            &format!(" {t}"),
            &format!("{t}\n"),
            &t.replace("live", "prod"),
            &t.replacen("ak", "AK", 1),
            "ak_live_0000000000000000_000000000000000000000000000000000000000000000000",
            "ünïcödé_live_0000000000000000_x",
            &"a".repeat(1 << 20),
        ] {
            assert_eq!(parse(bad), None, "accepted {bad:?}");
        }
    }

    #[test]
    fn random_characters_are_unbiased_enough() {
        let mut random = RandomBase62::default();
        let sample = random.chars(62 * 400).unwrap();
        let mut counts = [0usize; 62];
        for b in sample.bytes() {
            counts[BASE62.iter().position(|&c| c == b).unwrap()] += 1;
        }
        // Each symbol expects 400; a biased `% 62` over 256 would give the first 8 symbols ~20%
        // more. Bounds are ~7 standard deviations wide, so the test does not flake.
        assert!(
            counts.iter().all(|&c| (260..=540).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn prefix_rules() {
        for ok in ["ak", "a", "acme2", "abcdefghijklmnop"] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "2ak",
            "Ak",
            "a_b",
            "a-b",
            "abcdefghijklmnopq",
            "ak ",
            "äk",
        ] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_rules() {
        assert!(validate_environment("live").is_ok());
        assert!(validate_environment("test").is_ok());
        for bad in ["", "LIVE", "prod", "live "] {
            assert!(validate_environment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_id_shape() {
        let new = fresh();
        assert!(is_key_id(&new.key_id));
        assert!(!is_key_id(&new.token));
        assert!(!is_key_id("ak_live_short"));
        assert!(!is_key_id("ak_prod_0000000000000000"));
        assert_eq!(key_id_parts("nope"), None);
    }

    #[test]
    fn checksum_is_six_base62_digits() {
        assert_eq!(checksum(b"").len(), CHECKSUM_LEN);
        assert_eq!(checksum(b"ak_live_x"), checksum(b"ak_live_x"));
        assert_ne!(checksum(b"ak_live_x"), checksum(b"ak_live_y"));
        // CRC-32's check value (0xCBF43926 for "123456789") in six base62 digits, computed
        // outside this code.
        assert_eq!(checksum(b"123456789"), "3jZRME");
    }

    #[test]
    fn random_bytes_past_the_last_whole_alphabet_are_dropped() {
        assert_eq!(unbiased_base62(0), Some('0'));
        assert_eq!(unbiased_base62(61), Some('z'));
        assert_eq!(unbiased_base62(62), Some('0'));
        assert_eq!(unbiased_base62(247), Some('z'));
        for byte in 248..=255 {
            assert_eq!(unbiased_base62(byte), None, "{byte}");
        }
    }

    /// `body` (everything before the checksum) with its correct checksum appended.
    fn signed(body: &str) -> String {
        format!("{body}{}", checksum(body.as_bytes()))
    }

    #[test]
    fn the_longest_prefix_makes_the_longest_token_that_parses() {
        let t = generate(&"p".repeat(MAX_PREFIX_LEN), "test").expect("CSPRNG available");
        assert_eq!(t.token.len(), MAX_TOKEN_LEN);
        assert_eq!(parse(&t.token).map(|p| p.key_id), Some(t.key_id.as_str()));
    }

    #[test]
    fn a_correct_checksum_does_not_make_a_bad_shape_valid() {
        let t = fresh();
        let body = &t.token[..t.token.len() - CHECKSUM_LEN];
        assert!(parse(&signed(body)).is_some(), "the control case parses");
        // A character outside [A-Za-z0-9_] in the secret.
        let dashed = format!(
            "{}-{}",
            &body[..body.len() - 1 - 20],
            &body[body.len() - 20..]
        );
        assert_eq!(dashed.len(), body.len());
        assert_eq!(parse(&signed(&dashed)), None, "{dashed}");
        // A key id of the wrong shape (an unknown environment) with a secret of the right length.
        let id = &t.key_id[t.key_id.len() - ID_LEN..];
        let prod = format!("ak_prod_{id}_{}", t.secret());
        assert_eq!(parse(&signed(&prod)), None, "{prod}");
    }
}
