//! Per-key rate limiting from the key's `rate_per_minute`, behind one small interface so the
//! in-memory token bucket can later give way to limits enforced in the database.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until the next request would be allowed (0 when allowed).
    pub retry_after_secs: u64,
}

// Constants: a `&str` name is parsed and validated on every insert.
const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl Decision {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT, HeaderValue::from(self.limit));
        headers.insert(REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RESET, HeaderValue::from(self.reset_secs));
        if !self.allowed {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(self.retry_after_secs.max(1)),
            );
        }
    }
}

pub trait RateLimiter: Send + Sync {
    /// Takes one request from `key_id`'s allowance of `per_minute`.
    fn check(&self, key_id: &str, per_minute: u32) -> Decision;
}

/// A token bucket per key: capacity `per_minute`, refilled continuously at `per_minute` per
/// 60 s, so bursts up to the whole minute's allowance are allowed.
#[derive(Default)]
pub struct InMemoryLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets idle this long are full again and can be forgotten.
const IDLE: Duration = Duration::from_secs(120);
const SWEEP_ABOVE: usize = 10_000;

impl InMemoryLimiter {
    pub fn check_at(&self, key_id: &str, per_minute: u32, now: Instant) -> Decision {
        let capacity = f64::from(per_minute.max(1));
        let per_second = capacity / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, b| now.saturating_duration_since(b.updated) < IDLE);
        }
        // Looked up before inserting: an entry() would copy the key id on every request.
        let bucket = match buckets.get_mut(key_id) {
            Some(bucket) => bucket,
            None => buckets.entry(key_id.to_string()).or_insert(Bucket {
                tokens: capacity,
                updated: now,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        Decision {
            allowed,
            limit: per_minute,
            remaining: bucket.tokens.floor() as u32,
            reset_secs: ((capacity - bucket.tokens) / per_second).ceil() as u64,
            retry_after_secs: if allowed {
                0
            } else {
                ((1.0 - bucket.tokens) / per_second).ceil() as u64
            },
        }
    }
}

impl RateLimiter for InMemoryLimiter {
    fn check(&self, key_id: &str, per_minute: u32) -> Decision {
        self.check_at(key_id, per_minute, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_minute_allowance_then_refuses_until_refilled() {
        let limiter = InMemoryLimiter::default();
        let t0 = Instant::now();
        for i in 0..3 {
            let d = limiter.check_at("k", 3, t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 2 - i);
        }
        let refused = limiter.check_at("k", 3, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(
            refused.retry_after_secs, 20,
            "one token every 20 s at 3/min"
        );
        assert_eq!(refused.reset_secs, 60);
        assert!(
            limiter
                .check_at("k", 3, t0 + Duration::from_secs(20))
                .allowed
        );
        assert!(
            !limiter
                .check_at("k", 3, t0 + Duration::from_secs(21))
                .allowed
        );
    }

    #[test]
    fn keys_are_independent() {
        let limiter = InMemoryLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.check_at("a", 1, t0).allowed);
        assert!(!limiter.check_at("a", 1, t0).allowed);
        assert!(limiter.check_at("b", 1, t0).allowed);
    }

    #[test]
    fn headers_are_written() {
        let mut headers = HeaderMap::new();
        let limiter = InMemoryLimiter::default();
        let t0 = Instant::now();
        limiter.check_at("k", 1, t0);
        limiter.check_at("k", 1, t0).write_headers(&mut headers);
        assert_eq!(headers["ratelimit-limit"], "1");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(headers["retry-after"], "60");
    }
}
