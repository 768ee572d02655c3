//! Turning a request into the arguments of `apikey_verify`: which key was presented and from
//! which client address. The decision itself is the database's.

use crate::error::AppError;
use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The key a request presented. Debug output never shows it.
pub struct PresentedKey(Option<String>);

impl std::fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "PresentedKey(<redacted>)"
        } else {
            "PresentedKey(None)"
        })
    }
}

impl PresentedKey {
    pub fn token(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// Reads the key from `X-API-Key`, `Authorization: ApiKey|Bearer <token>` and, when allowed,
/// the `api_key` query parameter. Two different keys in one request are refused rather than
/// guessed between.
pub fn presented_key(
    headers: &HeaderMap,
    query: Option<&str>,
    allow_query_key: bool,
) -> Result<PresentedKey, AppError> {
    let mut found: Vec<String> = Vec::new();
    for value in headers.get_all("x-api-key") {
        let value = value
            .to_str()
            .map_err(|_| AppError::bad_request("X-API-Key must be visible ASCII"))?;
        found.push(value.trim().to_string());
    }
    for value in headers.get_all(axum::http::header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AppError::bad_request("Authorization must be visible ASCII"))?;
        if let Some((scheme, credentials)) = value.trim().split_once(' ') {
            if scheme.eq_ignore_ascii_case("apikey") || scheme.eq_ignore_ascii_case("bearer") {
                found.push(credentials.trim().to_string());
            }
        }
    }
    let query_keys: Vec<String> = query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(name, _)| name == "api_key")
                .map(|(_, value)| value.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    if !query_keys.is_empty() {
        if !allow_query_key {
            return Err(AppError::bad_request(
                "the api_key query parameter is disabled (URLs end up in logs): send the key in the X-API-Key header",
            ));
        }
        found.extend(query_keys);
    }
    found.retain(|k| !k.is_empty());
    // The same key sent twice (in X-API-Key and Authorization, say) is one key.
    found.sort_unstable();
    found.dedup();
    if found.len() > 1 {
        return Err(AppError::bad_request(
            "the request carries two different API keys",
        ));
    }
    Ok(PresentedKey(found.pop()))
}

/// The client address: the TCP peer, or, when the peer is a trusted proxy, the nearest
/// untrusted address in `X-Forwarded-For` (read from the right, where trusted proxies append).
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer_ip = peer.ip().to_canonical();
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer_ip;
        };
        for part in value.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip.to_canonical()),
                // A hop we cannot read: trust nothing to its left.
                Err(_) => hops.clear(),
            }
        }
    }
    let mut client = peer_ip;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !is_trusted(&hop) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn key_sources() {
        let key = |h: &[(&'static str, &str)], q: Option<&str>, allow| {
            presented_key(&headers(h), q, allow)
        };
        assert_eq!(
            key(&[("x-api-key", "t1")], None, false).unwrap().token(),
            Some("t1")
        );
        assert_eq!(
            key(&[("authorization", "ApiKey t2")], None, false)
                .unwrap()
                .token(),
            Some("t2")
        );
        assert_eq!(
            key(&[("authorization", "bearer t3")], None, false)
                .unwrap()
                .token(),
            Some("t3")
        );
        assert_eq!(
            key(&[("authorization", "Basic abc")], None, false)
                .unwrap()
                .token(),
            None
        );
        assert_eq!(key(&[], None, false).unwrap().token(), None);
        assert_eq!(
            key(
                &[("x-api-key", "t1"), ("authorization", "Bearer t1")],
                None,
                false
            )
            .unwrap()
            .token(),
            Some("t1")
        );
        assert!(key(
            &[("x-api-key", "t1"), ("authorization", "Bearer t2")],
            None,
            false
        )
        .is_err());
        assert!(
            key(&[], Some("api_key=t4"), false).is_err(),
            "query key is off by default"
        );
        assert_eq!(
            key(&[], Some("a=1&api_key=t4"), true).unwrap().token(),
            Some("t4")
        );
        assert!(key(&[("x-api-key", "t1")], Some("api_key=t4"), true).is_err());
        // The same key from every source is one key; a different one anywhere is refused.
        assert_eq!(
            key(
                &[("x-api-key", "t1"), ("authorization", "ApiKey t1")],
                Some("api_key=t1"),
                true
            )
            .unwrap()
            .token(),
            Some("t1")
        );
        assert!(key(
            &[
                ("x-api-key", "t1"),
                ("x-api-key", "t2"),
                ("authorization", "Bearer t1")
            ],
            None,
            false
        )
        .is_err());
    }

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.1.1.1")]);
        let proxy: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &xff, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(stranger, &xff, &trusted),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, &HeaderMap::new(), &trusted),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        let garbage = headers(&[("x-forwarded-for", "203.0.113.9, nonsense")]);
        assert_eq!(
            client_ip(proxy, &garbage, &trusted),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:4000".parse().unwrap();
        assert_eq!(
            client_ip(mapped, &HeaderMap::new(), &[]),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let token = "ak_live_0123456789abcdef_secret";
        let key = presented_key(&headers(&[("x-api-key", token)]), None, false).unwrap();
        assert_eq!(key.token(), Some(token));
        assert_eq!(format!("{key:?}"), "PresentedKey(<redacted>)");
        let none = presented_key(&headers(&[]), None, false).unwrap();
        assert_eq!(format!("{none:?}"), "PresentedKey(None)");
    }
}
