//! Which stored state refuses a key at a given instant, and in what order the refusals are
//! reported. Times are PostgreSQL `timestamptz` values (microseconds); only their order
//! matters here. The boundaries are the contract's: a key is revoked and expired from the
//! exact instant of `revoked_at` and `expires_at` on (a rotated key's grace period ends at
//! its `revoked_at`), and valid from the exact instant of `not_before` on.

use crate::reason::Reason;

/// What a key row says about its own life, independent of the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    pub revoked_at: Option<i64>,
    pub enabled: bool,
    pub partner_active: bool,
    pub expires_at: Option<i64>,
    pub not_before: Option<i64>,
}

impl KeyState {
    /// The reason this key is refused at `now`, before the caller's address and scopes are
    /// looked at, or `None` when its state lets it through.
    pub fn refusal_at(&self, now: i64) -> Option<Reason> {
        if self.revoked_at.is_some_and(|t| t <= now) {
            Some(Reason::Revoked)
        } else if !self.enabled {
            Some(Reason::Disabled)
        } else if !self.partner_active {
            Some(Reason::PartnerInactive)
        } else if self.expires_at.is_some_and(|t| t <= now) {
            Some(Reason::Expired)
        } else if self.not_before.is_some_and(|t| t > now) {
            Some(Reason::NotYetValid)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 817_000_000_000_000;

    fn live() -> KeyState {
        KeyState {
            enabled: true,
            partner_active: true,
            ..KeyState::default()
        }
    }

    #[test]
    fn a_live_key_without_dates_passes() {
        assert_eq!(live().refusal_at(NOW), None);
    }

    #[test]
    fn revoked_from_the_exact_instant_of_revoked_at() {
        let key = |at| KeyState {
            revoked_at: Some(at),
            ..live()
        };
        assert_eq!(
            key(NOW + 1).refusal_at(NOW),
            None,
            "a revocation still to come"
        );
        assert_eq!(key(NOW).refusal_at(NOW), Some(Reason::Revoked));
        assert_eq!(key(NOW - 1).refusal_at(NOW), Some(Reason::Revoked));
    }

    #[test]
    fn a_grace_period_ends_at_the_exact_instant_of_its_end() {
        // Rotation ends the old key's grace by setting its revoked_at to the end.
        let grace_end = NOW + 3_600_000_000;
        let old = KeyState {
            revoked_at: Some(grace_end),
            ..live()
        };
        assert_eq!(old.refusal_at(grace_end - 1), None);
        assert_eq!(old.refusal_at(grace_end), Some(Reason::Revoked));
        assert_eq!(old.refusal_at(grace_end + 1), Some(Reason::Revoked));
    }

    #[test]
    fn expired_from_the_exact_instant_of_expires_at() {
        let key = |at| KeyState {
            expires_at: Some(at),
            ..live()
        };
        assert_eq!(key(NOW + 1).refusal_at(NOW), None);
        assert_eq!(key(NOW).refusal_at(NOW), Some(Reason::Expired));
        assert_eq!(key(NOW - 1).refusal_at(NOW), Some(Reason::Expired));
    }

    #[test]
    fn valid_from_the_exact_instant_of_not_before() {
        let key = |at| KeyState {
            not_before: Some(at),
            ..live()
        };
        assert_eq!(key(NOW + 1).refusal_at(NOW), Some(Reason::NotYetValid));
        assert_eq!(key(NOW).refusal_at(NOW), None);
        assert_eq!(key(NOW - 1).refusal_at(NOW), None);
    }

    #[test]
    fn disabled_keys_and_inactive_partners_are_refused() {
        let disabled = KeyState {
            enabled: false,
            ..live()
        };
        assert_eq!(disabled.refusal_at(NOW), Some(Reason::Disabled));
        let orphan = KeyState {
            partner_active: false,
            ..live()
        };
        assert_eq!(orphan.refusal_at(NOW), Some(Reason::PartnerInactive));
    }

    #[test]
    fn refusals_are_reported_in_the_contract_order() {
        // Every refusal at once, then each one lifted in turn: what remains reports next.
        let mut key = KeyState {
            revoked_at: Some(NOW),
            enabled: false,
            partner_active: false,
            expires_at: Some(NOW),
            not_before: Some(NOW + 1),
        };
        let mut seen = vec![];
        while let Some(reason) = key.refusal_at(NOW) {
            seen.push(reason);
            match reason {
                Reason::Revoked => key.revoked_at = None,
                Reason::Disabled => key.enabled = true,
                Reason::PartnerInactive => key.partner_active = true,
                Reason::Expired => key.expires_at = None,
                Reason::NotYetValid => key.not_before = None,
                other => panic!("not a state refusal: {other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                Reason::Revoked,
                Reason::Disabled,
                Reason::PartnerInactive,
                Reason::Expired,
                Reason::NotYetValid
            ]
        );
    }
}
