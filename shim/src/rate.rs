//! The rate-limit header fields of draft-ietf-httpapi-ratelimit-headers, from what
//! `apikey_verify` returns: the database enforces each key's `rate_per_minute` across the
//! server; the shim keeps no limiter of its own.
//!
//! `RateLimit-Policy: "key";q=300;w=60` (the key's quota per 60 s window) and
//! `RateLimit: "key";r=299;t=1` (verifications left, and seconds until the full allowance is
//! back), plus `Retry-After` on a 429.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const STATE: HeaderName = HeaderName::from_static("ratelimit");

/// Where a key stands: its quota per minute, what is left, and the reset time in seconds
/// (until one is allowed again when refused, until the full allowance is back otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub quota: i32,
    pub remaining: i32,
    pub reset_seconds: i32,
    pub refused: bool,
}

impl Rate {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let policy = format!("\"key\";q={};w=60", self.quota.max(0));
        let state = format!(
            "\"key\";r={};t={}",
            self.remaining.max(0),
            self.reset_seconds.max(0)
        );
        for (name, value) in [(POLICY, policy), (STATE, state)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        if self.refused {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(self.reset_seconds.max(1)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_follow_the_draft() {
        let mut headers = HeaderMap::new();
        Rate {
            quota: 300,
            remaining: 299,
            reset_seconds: 1,
            refused: false,
        }
        .write_headers(&mut headers);
        assert_eq!(headers["ratelimit-policy"], "\"key\";q=300;w=60");
        assert_eq!(headers["ratelimit"], "\"key\";r=299;t=1");
        assert!(headers.get("retry-after").is_none());

        let mut headers = HeaderMap::new();
        Rate {
            quota: 2,
            remaining: 0,
            reset_seconds: 30,
            refused: true,
        }
        .write_headers(&mut headers);
        assert_eq!(headers["ratelimit"], "\"key\";r=0;t=30");
        assert_eq!(headers["retry-after"], "30");
    }
}
