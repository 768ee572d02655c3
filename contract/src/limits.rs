//! Limits that more than one part enforces or shows: the extension, the HTTP API and the
//! console (which reads them from `GET /v1/limits` instead of repeating them).

/// A key expiring within this many days is "expiring": the first `key.expiring` reminder is
/// sent then, and the console and `GET /v1/reminders` list it.
pub const EXPIRING_SOON_DAYS: i32 = 7;

/// The longest grace period `POST /v1/keys/{key_id}/rotate` accepts (366 days).
pub const MAX_ROTATION_GRACE_SECONDS: i64 = 366 * 86_400;

/// The longest time a rotated webhook secret keeps signing (7 days).
pub const MAX_WEBHOOK_SECRET_GRACE_SECONDS: i64 = 7 * 86_400;

/// Webhook endpoints one partner may have.
pub const MAX_WEBHOOK_ENDPOINTS_PER_PARTNER: i64 = 16;

/// Most credits one verification may spend (`apikey_verify`'s `cost`, the shim's `cost=`).
pub const MAX_COST: i32 = 1_000_000;
