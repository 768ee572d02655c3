//! `apikey_webhook_verify`: checks a Standard Webhooks signature, for applications that
//! receive such webhooks. The rules are `apikey_core::webhook`'s; this is the SQL face.

use crate::clock;
use crate::error::{ApiError, ApiResult, OrRaise};
use apikey_core::webhook::{self, Message};
use pgrx::prelude::*;

/// A wrong or missing signature, id, timestamp or body is `false`: that is what a forged or
/// mangled request looks like. A missing or unreadable secret, or a tolerance that is NULL
/// or negative, is the caller's configuration and raises 22004 / 22023 naming the argument
/// (never quoting the secret).
#[pg_extern(volatile, parallel_safe)]
fn apikey_webhook_verify(
    secret: Option<&str>,
    msg_id: Option<&str>,
    msg_timestamp: Option<i64>,
    payload: Option<&str>,
    signature: Option<&str>,
    tolerance: default!(Option<Interval>, "'5 minutes'"),
) -> bool {
    check(secret, msg_id, msg_timestamp, payload, signature, tolerance).or_raise()
}

fn check(
    secret: Option<&str>,
    msg_id: Option<&str>,
    msg_timestamp: Option<i64>,
    payload: Option<&str>,
    signature: Option<&str>,
    tolerance: Option<Interval>,
) -> ApiResult<bool> {
    let key = webhook::secret_key(secret.ok_or_else(|| ApiError::null("secret"))?)
        .map_err(|why| ApiError::invalid("secret", why))?;
    let tolerance = tolerance.ok_or_else(|| ApiError::null("tolerance"))?;
    let tolerance_seconds = i64::try_from(tolerance.as_micros() / 1_000_000)
        .ok()
        .filter(|s| *s >= 0)
        .ok_or_else(|| ApiError::invalid("tolerance", "must be zero or more, and finite"))?;
    let (Some(msg_id), Some(timestamp), Some(payload), Some(signatures)) =
        (msg_id, msg_timestamp, payload, signature)
    else {
        return Ok(false);
    };
    let now = clock::unix_seconds();
    let message = Message {
        msg_id,
        timestamp,
        payload: payload.as_bytes(),
        signatures,
    };
    Ok(webhook::verify(&key, &message, now, tolerance_seconds))
}
