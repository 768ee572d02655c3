//! Argument checks for the management functions: pure, so they are unit-tested without a
//! database. Each error says what is wrong; the caller adds which argument it was.

use crate::outbox;
use crate::redact::{self, excerpt};
use crate::scope;
use apikey_contract::address;

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_LEN: usize = 64;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_REASON_LEN: usize = 500;
const MAX_EMAIL_LEN: usize = 254;

/// Scopes as stored: validated, duplicates removed, order kept.
pub fn scopes(scopes: &[Option<String>]) -> Result<Vec<String>, String> {
    if scopes.len() > scope::MAX_SCOPES {
        return Err(format!("at most {} scopes", scope::MAX_SCOPES));
    }
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for s in scopes {
        let s = s.as_deref().ok_or("a scope is NULL")?;
        scope::validate(s).map_err(|why| format!("scope \"{}\" {why}", excerpt(s)))?;
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

pub fn tags(tags: &[Option<String>]) -> Result<Vec<String>, String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags"));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        let t = t.as_deref().ok_or("a tag is NULL")?;
        let ok = !t.is_empty()
            && t.len() <= MAX_TAG_LEN
            && t.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/')
            });
        if !ok {
            return Err(format!(
                "tag \"{}\" must be 1 to {MAX_TAG_LEN} letters, digits or _ - . : /",
                excerpt(t)
            ));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

/// A display name: optional, but not blank, not huge, no control characters.
pub fn name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be blank".into());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    no_token(name)
}

/// Text stored in clear (names, tags, reasons, metadata, e-mail addresses) must not hold a
/// token: pasted there by mistake it would sit in a table, a dump and every listing.
fn no_token(text: &str) -> Result<(), String> {
    if redact::contains_token(text) {
        Err("contains an API token, which is never stored: name the key by its key id".into())
    } else {
        Ok(())
    }
}

pub fn reason(reason: &str) -> Result<(), String> {
    if reason.chars().count() > MAX_REASON_LEN {
        return Err(format!("longer than {MAX_REASON_LEN} characters"));
    }
    no_token(reason)
}

/// Deliberately loose (one `@`, something on each side, no spaces): the address is for humans
/// to read, and stricter checks reject real addresses.
pub fn email(email: &str) -> Result<(), String> {
    let ok = email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !ok {
        return Err(format!("\"{}\" is not an email address", excerpt(email)));
    }
    no_token(email)
}

pub fn metadata(value: &serde_json::Value) -> Result<(), String> {
    if !value.is_object() {
        return Err("must be a JSON object".into());
    }
    let text = value.to_string();
    if text.len() > MAX_METADATA_BYTES {
        return Err(format!("larger than {MAX_METADATA_BYTES} bytes"));
    }
    no_token(&text)
}

pub fn rate_per_minute(rate: i32) -> Result<(), String> {
    if rate > 0 {
        Ok(())
    } else {
        Err(format!("must be positive, got {rate}"))
    }
}

pub const MAX_URL_LEN: usize = 2048;
pub const MAX_EVENT_FILTERS: usize = 16;

/// A webhook endpoint's URL, normalized (`url`'s WHATWG parsing: lower-case scheme and host,
/// punycode, percent-encoding). http(s) only; no user name or password (the request is
/// signed, and credentials in a URL end up in listings); no fragment. With `allow_private`
/// false, a literal private, loopback or otherwise non-public address or `localhost` is
/// refused here; names are checked by the shim each time it resolves them.
pub fn webhook_url(raw: &str, allow_private: bool) -> Result<String, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("longer than {MAX_URL_LEN} bytes"));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| format!("\"{}\" is not an absolute URL ({e})", excerpt(raw)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme \"{}\" is not http or https",
            excerpt(url.scheme())
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".into());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment (#...)".into());
    }
    let private = match url.host() {
        None => return Err("has no host".into()),
        Some(url::Host::Ipv4(ip)) => !address::is_public(ip.into()),
        Some(url::Host::Ipv6(ip)) => !address::is_public(ip.into()),
        Some(url::Host::Domain(name)) => {
            // `localhost.` is the same name, fully qualified.
            let name = name.trim_end_matches('.');
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    if private && !allow_private {
        return Err(format!(
            "host {} is a private, loopback or reserved address; a server that must call one sets apikey.webhook_allow_private_urls = on",
            url.host_str().unwrap_or_default()
        ));
    }
    no_token(url.as_str())?;
    Ok(url.into())
}

/// The events an endpoint subscribes to: `*`, `key.*`, `partner.*`, or exact event types; duplicates
/// removed, order kept.
pub fn webhook_events(events: &[Option<String>]) -> Result<Vec<String>, String> {
    if events.is_empty() {
        return Err("is empty; pass '{*}' for every event".into());
    }
    if events.len() > MAX_EVENT_FILTERS {
        return Err(format!("at most {MAX_EVENT_FILTERS} entries"));
    }
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        let e = e.as_deref().ok_or("an event type is NULL")?;
        if !(e == "*" || e == "key.*" || e == "partner.*" || outbox::EVENT_TYPES.contains(&e)) {
            return Err(format!(
                "\"{}\" is not an event type (one of *, key.*, partner.*, {})",
                excerpt(e),
                outbox::EVENT_TYPES.join(", ")
            ));
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_http_with_a_host_and_no_credentials() {
        assert_eq!(
            webhook_url("HTTPS://Example.COM:8443/hooks?a=1", false).unwrap(),
            "https://example.com:8443/hooks?a=1"
        );
        assert_eq!(
            webhook_url("http://8.8.8.8/x", false).unwrap(),
            "http://8.8.8.8/x"
        );
        for (url, why) in [
            ("", "is not an absolute URL"),
            ("/hooks", "is not an absolute URL"),
            ("ftp://example.com/", "scheme \"ftp\" is not http or https"),
            ("file:///etc/passwd", "scheme \"file\""),
            ("javascript:alert(1)", "scheme \"javascript\""),
            ("https://user:pw@example.com/", "user name or password"),
            ("https://user@example.com/", "user name or password"),
            ("https://example.com/#top", "fragment"),
            ("http://127.0.0.1:9/", "host 127.0.0.1 is a private"),
            ("http://[::1]/", "host [::1] is a private"),
            ("http://10.1.2.3/", "private"),
            ("http://169.254.169.254/latest/meta-data", "private"),
            ("http://0x7f000001/", "host 127.0.0.1"),
            ("http://localhost:8080/", "host localhost"),
            ("http://api.localhost/", "private"),
            ("http://localhost./", "host localhost. is a private"),
            ("http://api.localhost../", "private"),
            ("http://[64:ff9b:1::a00:1]/", "private"),
            ("http://[::ffff:0:7f00:1]/", "private"),
            ("http://168.63.129.16/", "private"),
        ] {
            let err = webhook_url(url, false).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
        assert_eq!(
            webhook_url("http://127.0.0.1:9/a", true).unwrap(),
            "http://127.0.0.1:9/a"
        );
        assert_eq!(
            webhook_url("http://localhost/", true).unwrap(),
            "http://localhost/"
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(
            webhook_url(&long, true).unwrap_err(),
            "longer than 2048 bytes"
        );
        let at_limit = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN - 20));
        assert_eq!(webhook_url(&at_limit, false).unwrap(), at_limit);
    }

    #[test]
    fn a_webhook_url_never_holds_a_token() {
        let token = apikey_contract::token::generate("ak", "live").unwrap();
        let url = format!("https://example.com/hook?key={}", token.token);
        let err = webhook_url(&url, false).unwrap_err();
        assert!(
            err.contains("API token") && !err.contains(token.secret()),
            "{err}"
        );
    }

    #[test]
    fn webhook_event_filters_name_known_events() {
        assert_eq!(
            webhook_events(&owned(&["key.revoked", "*", "key.revoked", "key.*"])).unwrap(),
            vec!["key.revoked", "*", "key.*"]
        );
        for event in outbox::EVENT_TYPES {
            assert_eq!(webhook_events(&owned(&[event])).unwrap(), vec![*event]);
        }
        assert!(webhook_events(&[]).unwrap_err().contains("is empty"));
        assert_eq!(
            webhook_events(&[None]).unwrap_err(),
            "an event type is NULL"
        );
        for bad in [
            "key.Revoked",
            "webhook.test",
            "",
            "key",
            "*.*",
            "key.issued ",
        ] {
            assert!(
                webhook_events(&owned(&[bad]))
                    .unwrap_err()
                    .contains("is not an event type"),
                "{bad}"
            );
        }
        let many: Vec<&str> = std::iter::repeat_n("*", MAX_EVENT_FILTERS + 1).collect();
        assert_eq!(
            webhook_events(&owned(&many)).unwrap_err(),
            "at most 16 entries"
        );
        let at_limit: Vec<&str> = std::iter::repeat_n("*", MAX_EVENT_FILTERS).collect();
        assert_eq!(webhook_events(&owned(&at_limit)).unwrap(), vec!["*"]);
    }

    fn owned(items: &[&str]) -> Vec<Option<String>> {
        items.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn scopes_are_validated_and_deduplicated() {
        assert_eq!(
            scopes(&owned(&["a:b", "c:*", "a:b"])).unwrap(),
            vec!["a:b", "c:*"]
        );
        assert_eq!(scopes(&[]).unwrap(), Vec::<String>::new());
        assert!(scopes(&[None]).unwrap_err().contains("NULL"));
        assert!(scopes(&owned(&["bad scope"]))
            .unwrap_err()
            .contains("bad scope"));
        let many: Vec<Option<String>> = (0..=scope::MAX_SCOPES)
            .map(|i| Some(format!("r:{i}")))
            .collect();
        assert!(scopes(&many).is_err());
        let huge = format!("a:{}", "b".repeat(100_000));
        assert!(scopes(&owned(&[&huge])).unwrap_err().len() < 300);
    }

    #[test]
    fn tags_rules() {
        assert_eq!(
            tags(&owned(&["team:pay", "prod", "prod"])).unwrap(),
            vec!["team:pay", "prod"]
        );
        for bad in ["", "has space", "tab\t", &"x".repeat(65)] {
            assert!(tags(&owned(&[bad])).is_err(), "{bad:?}");
        }
        assert!(tags(&[None]).is_err());
    }

    #[test]
    fn names_emails_reasons() {
        assert!(name("Acme Corp").is_ok());
        assert!(name("  ").is_err());
        assert!(name("a\u{0}b").is_err());
        assert!(name(&"é".repeat(MAX_NAME_LEN)).is_ok());
        assert!(name(&"é".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(email("ops@example.com").is_ok());
        for bad in [
            "",
            "ops",
            "@x",
            "x@",
            "a@b@c",
            "a b@c",
            &format!("{}@x", "a".repeat(300)),
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
        let token = apikey_contract::token::generate("ak", "live")
            .unwrap()
            .token;
        assert!(name(&format!("copy of {token}")).is_err());
        assert!(reason(&token).is_err());
        assert!(email(&format!("{token}@example.com")).is_err());
        assert!(metadata(&serde_json::json!({ "note": token })).is_err());
        assert!(reason("rotated after leak").is_ok());
        assert!(reason(&"r".repeat(MAX_REASON_LEN + 1)).is_err());
    }

    #[test]
    fn metadata_and_rate() {
        assert!(metadata(&serde_json::json!({"team": "payments"})).is_ok());
        assert!(metadata(&serde_json::json!([1, 2])).is_err());
        assert!(metadata(&serde_json::json!("x")).is_err());
        assert!(metadata(&serde_json::json!({"big": "x".repeat(MAX_METADATA_BYTES)})).is_err());
        assert!(rate_per_minute(1).is_ok());
        assert!(rate_per_minute(0).is_err());
        assert!(rate_per_minute(-5).is_err());
    }

    #[test]
    fn every_limit_admits_exactly_its_maximum() {
        let many =
            |n: usize, f: fn(usize) -> String| (0..n).map(|i| Some(f(i))).collect::<Vec<_>>();
        let scope_n = |i: usize| format!("r{i}:read");
        let tag_n = |i: usize| format!("t{i}");

        assert_eq!(
            scopes(&many(scope::MAX_SCOPES, scope_n)).map(|v| v.len()),
            Ok(scope::MAX_SCOPES)
        );
        assert_eq!(
            scopes(&many(scope::MAX_SCOPES + 1, scope_n)),
            Err(format!("at most {} scopes", scope::MAX_SCOPES))
        );
        assert_eq!(tags(&many(MAX_TAGS, tag_n)).map(|v| v.len()), Ok(MAX_TAGS));
        assert_eq!(
            tags(&many(MAX_TAGS + 1, tag_n)),
            Err(format!("at most {MAX_TAGS} tags"))
        );
        assert_eq!(tags(&many(0, tag_n)), Ok(vec![]));

        let longest_reason = "r".repeat(MAX_REASON_LEN);
        assert_eq!(reason(&longest_reason), Ok(()));
        assert_eq!(
            reason(&format!("{longest_reason}r")),
            Err(format!("longer than {MAX_REASON_LEN} characters"))
        );

        // {"k":"vvv..."}: 8 bytes around the value.
        let at = |bytes: usize| serde_json::json!({ "k": "v".repeat(bytes - 8) });
        assert_eq!(MAX_METADATA_BYTES, 16384);
        assert_eq!(at(MAX_METADATA_BYTES).to_string().len(), MAX_METADATA_BYTES);
        assert_eq!(metadata(&at(MAX_METADATA_BYTES)), Ok(()));
        assert_eq!(
            metadata(&at(MAX_METADATA_BYTES + 1)),
            Err(format!("larger than {MAX_METADATA_BYTES} bytes"))
        );
    }
}
