//! The rate-limit header fields of draft-ietf-httpapi-ratelimit-headers, from what
//! `apikey_verify` returns: the database enforces each key's `rate_per_minute` and credit
//! balance across the server; the shim keeps no limiter of its own.
//!
//! `RateLimit-Policy: "key";q=300;w=60` (the key's quota per 60 s window) and
//! `RateLimit: "key";r=299;t=1, "credits";r=41` (verifications left and seconds until the full
//! allowance is back; credits left, with the seconds until their refill when a verification
//! was refused for want of them), plus `Retry-After` on a 429.

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

/// Where a key's credits stand (the smaller of its own balance and its partner's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credits {
    pub remaining: i64,
    /// Refused for want of credits: seconds until the short balance's refill, if one is due.
    pub refill_in: Option<i32>,
    pub refused: bool,
}

impl Rate {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        write_fields(headers, Some(self), None);
    }
}

impl Credits {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        write_fields(headers, None, Some(self));
    }
}

/// The RateLimit fields of every policy that was consulted, and `Retry-After` when one
/// refused the request (after a refill that is not scheduled, never: no `Retry-After`).
pub fn write_fields(headers: &mut HeaderMap, rate: Option<&Rate>, credits: Option<&Credits>) {
    let mut state = Vec::new();
    if let Some(rate) = rate {
        let policy = format!("\"key\";q={};w=60", rate.quota.max(0));
        if let Ok(value) = HeaderValue::from_str(&policy) {
            headers.insert(POLICY, value);
        }
        state.push(format!(
            "\"key\";r={};t={}",
            rate.remaining.max(0),
            rate.reset_seconds.max(0)
        ));
    }
    if let Some(credits) = credits {
        let mut item = format!("\"credits\";r={}", credits.remaining.max(0));
        if let Some(seconds) = credits.refill_in {
            item.push_str(&format!(";t={}", seconds.max(0)));
        }
        state.push(item);
    }
    if !state.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&state.join(", ")) {
            headers.insert(STATE, value);
        }
    }
    let retry_after = match (rate, credits) {
        (Some(rate), _) if rate.refused => Some(rate.reset_seconds),
        (_, Some(credits)) if credits.refused => credits.refill_in,
        _ => None,
    };
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
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

    #[test]
    fn credits_join_the_key_policy_and_give_retry_after_only_with_a_refill() {
        let rate = Rate {
            quota: 60,
            remaining: 59,
            reset_seconds: 1,
            refused: false,
        };
        let mut headers = HeaderMap::new();
        let left = Credits {
            remaining: 41,
            refill_in: None,
            refused: false,
        };
        write_fields(&mut headers, Some(&rate), Some(&left));
        assert_eq!(headers["ratelimit"], "\"key\";r=59;t=1, \"credits\";r=41");
        assert!(headers.get("retry-after").is_none());

        let mut headers = HeaderMap::new();
        let short = Credits {
            remaining: 0,
            refill_in: Some(3600),
            refused: true,
        };
        short.write_headers(&mut headers);
        assert_eq!(headers["ratelimit"], "\"credits\";r=0;t=3600");
        assert_eq!(headers["retry-after"], "3600");
        assert!(headers.get("ratelimit-policy").is_none());

        let mut headers = HeaderMap::new();
        Credits {
            refill_in: None,
            ..short
        }
        .write_headers(&mut headers);
        assert_eq!(headers["ratelimit"], "\"credits\";r=0");
        assert!(
            headers.get("retry-after").is_none(),
            "no refill: no time to come back"
        );
    }
}
