//! The rate-limit header fields of draft-ietf-httpapi-ratelimit-headers, from what
//! `apikey_verify` returns: the database enforces each key's `rate_per_minute`, its partner's
//! and their credit balances across the server; the shim keeps no limiter of its own.
//!
//! `RateLimit-Policy: "key";q=300;w=60, "partner";q=600;w=60` (each bucket's quota per 60 s
//! window) and `RateLimit: "key";r=299;t=1, "partner";r=590;t=1, "credits";r=41`
//! (verifications left and seconds until the full allowance is back; credits left, with the
//! seconds until their refill when a verification was refused for want of them), plus
//! `Retry-After` on a 429.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const STATE: HeaderName = HeaderName::from_static("ratelimit");

/// Where a rate bucket stands: its quota per minute, what is left, and the reset time in
/// seconds (until one is allowed again when refused, until the full allowance is back
/// otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub quota: i32,
    pub remaining: i32,
    pub reset_seconds: i32,
    pub refused: bool,
}

impl Rate {
    /// A refusal without a bucket to show (Argon2id work the database would not queue for):
    /// come back in a second.
    pub const RETRY_IN_A_SECOND: Rate = Rate {
        quota: 0,
        remaining: 0,
        reset_seconds: 1,
        refused: true,
    };
}

/// Where a key's credits stand (the smaller of its own balance and its partner's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credits {
    pub remaining: i64,
    /// Refused for want of credits: seconds until the short balance's refill, if one is due.
    pub refill_in: Option<i32>,
    pub refused: bool,
}

/// Every limit a verification was held to, each a policy of the RateLimit fields: the key's
/// bucket, its partner's (when the partner has a rate of its own) and the credits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub key: Option<Rate>,
    pub partner: Option<Rate>,
    pub credits: Option<Credits>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.partner.is_none() && self.credits.is_none()
    }

    /// The RateLimit fields of every policy, and `Retry-After` when one refused the request
    /// (after a refill that is not scheduled, never: no `Retry-After`).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let buckets = [("key", self.key), ("partner", self.partner)];
        let buckets = buckets
            .iter()
            .filter_map(|(name, rate)| Some((*name, (*rate)?)));
        let mut policy = Vec::new();
        let mut state = Vec::new();
        for (name, rate) in buckets.clone() {
            policy.push(format!("\"{name}\";q={};w=60", rate.quota.max(0)));
            state.push(format!(
                "\"{name}\";r={};t={}",
                rate.remaining.max(0),
                rate.reset_seconds.max(0)
            ));
        }
        if let Some(credits) = self.credits {
            let mut item = format!("\"credits\";r={}", credits.remaining.max(0));
            if let Some(seconds) = credits.refill_in {
                item.push_str(&format!(";t={}", seconds.max(0)));
            }
            state.push(item);
        }
        for (name, items) in [(POLICY, policy), (STATE, state)] {
            if let Ok(value) = HeaderValue::from_str(&items.join(", ")) {
                if !items.is_empty() {
                    headers.insert(name, value);
                }
            }
        }
        let refused_rate = buckets
            .filter(|(_, r)| r.refused)
            .map(|(_, r)| r.reset_seconds);
        let retry_after = refused_rate.max().or(match self.credits {
            Some(credits) if credits.refused => credits.refill_in,
            _ => None,
        });
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Rate = Rate {
        quota: 300,
        remaining: 299,
        reset_seconds: 1,
        refused: false,
    };

    fn headers_of(limits: Limits) -> HeaderMap {
        let mut headers = HeaderMap::new();
        limits.write_headers(&mut headers);
        headers
    }

    #[test]
    fn fields_follow_the_draft() {
        let headers = headers_of(Limits {
            key: Some(KEY),
            ..Limits::default()
        });
        assert_eq!(headers["ratelimit-policy"], "\"key\";q=300;w=60");
        assert_eq!(headers["ratelimit"], "\"key\";r=299;t=1");
        assert!(headers.get("retry-after").is_none());

        let headers = headers_of(Limits {
            key: Some(Rate {
                quota: 2,
                remaining: 0,
                reset_seconds: 30,
                refused: true,
            }),
            ..Limits::default()
        });
        assert_eq!(headers["ratelimit"], "\"key\";r=0;t=30");
        assert_eq!(headers["retry-after"], "30");
        assert!(headers_of(Limits::default()).is_empty());
    }

    #[test]
    fn the_partner_bucket_is_a_policy_of_its_own_and_gives_retry_after_when_it_refuses() {
        let partner = Rate {
            quota: 600,
            remaining: 0,
            reset_seconds: 4,
            refused: true,
        };
        let headers = headers_of(Limits {
            key: Some(KEY),
            partner: Some(partner),
            credits: None,
        });
        assert_eq!(
            headers["ratelimit-policy"],
            "\"key\";q=300;w=60, \"partner\";q=600;w=60"
        );
        assert_eq!(
            headers["ratelimit"],
            "\"key\";r=299;t=1, \"partner\";r=0;t=4"
        );
        assert_eq!(headers["retry-after"], "4");
    }

    #[test]
    fn credits_join_the_key_policy_and_give_retry_after_only_with_a_refill() {
        let left = Credits {
            remaining: 41,
            refill_in: None,
            refused: false,
        };
        let headers = headers_of(Limits {
            key: Some(KEY),
            partner: None,
            credits: Some(left),
        });
        assert_eq!(headers["ratelimit"], "\"key\";r=299;t=1, \"credits\";r=41");
        assert!(headers.get("retry-after").is_none());

        let short = Credits {
            remaining: 0,
            refill_in: Some(3600),
            refused: true,
        };
        let headers = headers_of(Limits {
            credits: Some(short),
            ..Limits::default()
        });
        assert_eq!(headers["ratelimit"], "\"credits\";r=0;t=3600");
        assert_eq!(headers["retry-after"], "3600");
        assert!(headers.get("ratelimit-policy").is_none());

        let headers = headers_of(Limits {
            credits: Some(Credits {
                refill_in: None,
                ..short
            }),
            ..Limits::default()
        });
        assert_eq!(headers["ratelimit"], "\"credits\";r=0");
        assert!(
            headers.get("retry-after").is_none(),
            "no refill: no time to come back"
        );
    }
}
