//! The reason codes of `apikey_verify`, exactly as the contract spells them, and what the
//! shim answers for each.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Ok,
    MissingKey,
    Malformed,
    UnknownKey,
    SecretMismatch,
    Revoked,
    Disabled,
    Expired,
    NotYetValid,
    PartnerInactive,
    IpNotAllowed,
    InsufficientScope,
    RateLimited,
    /// A balance the verification spends from holds less than its cost.
    UsageExceeded,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
        Reason::Ok,
        Reason::MissingKey,
        Reason::Malformed,
        Reason::UnknownKey,
        Reason::SecretMismatch,
        Reason::Revoked,
        Reason::Disabled,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::PartnerInactive,
        Reason::IpNotAllowed,
        Reason::InsufficientScope,
        Reason::RateLimited,
        Reason::UsageExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::MissingKey => "missing_key",
            Reason::Malformed => "malformed",
            Reason::UnknownKey => "unknown_key",
            Reason::SecretMismatch => "secret_mismatch",
            Reason::Revoked => "revoked",
            Reason::Disabled => "disabled",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::PartnerInactive => "partner_inactive",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::RateLimited => "rate_limited",
            Reason::UsageExceeded => "usage_exceeded",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// Its position in [`Reason::ALL`], a compact code for shared memory.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Reason> {
        Reason::ALL.get(usize::from(code)).copied()
    }

    /// Failures after which the key is known to be authentic, so its identity is returned.
    pub fn reveals_identity(self) -> bool {
        matches!(
            self,
            Reason::Ok
                | Reason::IpNotAllowed
                | Reason::InsufficientScope
                | Reason::RateLimited
                | Reason::UsageExceeded
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for (i, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(reason.code()), i);
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::from_code(14), None);
        assert_eq!(Reason::parse("OK"), None);
    }

    #[test]
    fn only_failures_of_an_authentic_key_reveal_its_identity() {
        let revealing: Vec<Reason> = Reason::ALL
            .into_iter()
            .filter(|r| r.reveals_identity())
            .collect();
        assert_eq!(
            revealing,
            [
                Reason::Ok,
                Reason::IpNotAllowed,
                Reason::InsufficientScope,
                Reason::RateLimited,
                Reason::UsageExceeded
            ]
        );
    }
}
