//! What the outbox delivers and how persistently: the event types a webhook endpoint may
//! subscribe to, and the retry schedule of a delivery that fails.

/// Every event a partner can subscribe to. `webhook.test` is not among them: it is sent to
/// the one endpoint that asked for it, whatever that endpoint subscribes to.
pub const EVENT_TYPES: &[&str] = &[
    KEY_ISSUED,
    KEY_ROTATED,
    KEY_REVOKED,
    KEY_DISABLED,
    KEY_ENABLED,
    KEY_EXPIRING,
    KEY_ROTATION_DUE,
    KEY_LEAKED,
    KEY_CREDITS_EXHAUSTED,
    PARTNER_CREDITS_EXHAUSTED,
];
pub const KEY_ISSUED: &str = "key.issued";
pub const KEY_ROTATED: &str = "key.rotated";
pub const KEY_REVOKED: &str = "key.revoked";
pub const KEY_DISABLED: &str = "key.disabled";
pub const KEY_ENABLED: &str = "key.enabled";
pub const KEY_EXPIRING: &str = "key.expiring";
pub const KEY_ROTATION_DUE: &str = "key.rotation_due";
pub const KEY_LEAKED: &str = "key.leaked";
pub const KEY_CREDITS_EXHAUSTED: &str = "key.credits_exhausted";
pub const PARTNER_CREDITS_EXHAUSTED: &str = "partner.credits_exhausted";
pub const WEBHOOK_TEST: &str = "webhook.test";

/// Days before `expires_at` at which `key.expiring` is sent, once each. A key that enters a
/// window already inside the next (issued to expire in 12 hours) gets only the later one.
pub const EXPIRY_REMINDER_DAYS: [i32; 2] = [apikey_contract::limits::EXPIRING_SOON_DAYS, 1];

/// Seconds to wait after each failed attempt before the next, the schedule the Standard
/// Webhooks specification suggests: eight attempts spread over 27.6 hours, so a receiver
/// that is down for a day still gets every event.
const RETRY_DELAYS: &[i64] = &[5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];

pub const MAX_ATTEMPTS: i32 = RETRY_DELAYS.len() as i32 + 1;

/// After the `attempts_made`-th attempt failed: how long until the next one, or `None` when
/// that was the last.
pub fn retry_delay_seconds(attempts_made: i32) -> Option<i64> {
    let index = usize::try_from(attempts_made.checked_sub(1)?).ok()?;
    RETRY_DELAYS.get(index).copied()
}

/// After an endpoint's `failures_in_a_row`-th failed attempt in a row, how long none of its
/// deliveries is attempted: doubling from 1 s to at most [`MAX_ENDPOINT_PAUSE_SECONDS`]. A
/// receiver that hangs or errors then holds a delivery slot only now and then, whatever
/// the number of events queued for it; its first success ends the pause.
pub fn endpoint_pause_seconds(failures_in_a_row: i32) -> i64 {
    let doublings = failures_in_a_row.clamp(1, 32) - 1;
    (1i64 << doublings).min(MAX_ENDPOINT_PAUSE_SECONDS)
}

pub const MAX_ENDPOINT_PAUSE_SECONDS: i64 = 60;

/// Attempts to one endpoint in flight at once, across every deliverer.
pub const ENDPOINT_CONCURRENCY: i32 = 2;

/// An endpoint whose deliveries have failed without a single success for this long is
/// disabled (with an audit row) until someone re-enables it.
pub const DISABLE_AFTER_SECONDS: i64 = 5 * 24 * 3600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_schedule_and_stop_after_the_last_attempt() {
        let delays: Vec<Option<i64>> = (0..=9).map(retry_delay_seconds).collect();
        assert_eq!(
            delays,
            [
                None,
                Some(5),
                Some(300),
                Some(1800),
                Some(7200),
                Some(18000),
                Some(36000),
                Some(36000),
                None,
                None
            ]
        );
        assert_eq!(retry_delay_seconds(-1), None);
        assert_eq!(retry_delay_seconds(i32::MIN), None);
        assert_eq!(retry_delay_seconds(i32::MAX), None);
        assert_eq!(MAX_ATTEMPTS, 8);
    }

    #[test]
    fn a_failing_endpoint_pauses_longer_each_time_up_to_a_minute() {
        let pauses: Vec<i64> = (1..=8).map(endpoint_pause_seconds).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(endpoint_pause_seconds(0), 1);
        assert_eq!(endpoint_pause_seconds(-5), 1);
        assert_eq!(endpoint_pause_seconds(i32::MAX), MAX_ENDPOINT_PAUSE_SECONDS);
        assert!(MAX_ENDPOINT_PAUSE_SECONDS < retry_delay_seconds(2).unwrap_or_default());
    }

    #[test]
    fn retries_last_more_than_a_day() {
        let total: i64 = (1..MAX_ATTEMPTS).filter_map(retry_delay_seconds).sum();
        assert!(total > 24 * 3600, "{total}");
        assert!(DISABLE_AFTER_SECONDS > total);
    }
}
