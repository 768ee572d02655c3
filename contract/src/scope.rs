//! Scopes are `resource:action` strings. A granted scope satisfies a required one when they
//! are equal, when the grant is `resource:*` for the same resource, or when the grant is `*`
//! or `admin:*`, which mean everything. Required scopes are all-of.

pub const MAX_SCOPE_LEN: usize = 128;
pub const MAX_SCOPES: usize = 64;

/// A scope's resource, and an action other than `*`, as a regular expression (JavaScript and
/// most other dialects read it alike): what [`validate`] accepts, for clients that check
/// before sending.
pub const WORD_PATTERN: &str = "^[A-Za-z0-9_.-]+$";

/// Why a scope string was refused; the text completes "scope '...' is invalid: ".
pub fn validate(scope: &str) -> Result<(), String> {
    if scope.len() > MAX_SCOPE_LEN {
        return Err(format!("longer than {MAX_SCOPE_LEN} bytes"));
    }
    if scope == "*" {
        return Ok(());
    }
    let Some((resource, action)) = scope.split_once(':') else {
        return Err("expected resource:action, e.g. orders:read".into());
    };
    if !is_word(resource) {
        return Err("the resource must be letters, digits, '_', '-' or '.'".into());
    }
    if action != "*" && !is_word(action) {
        return Err("the action must be '*' or letters, digits, '_', '-' or '.'".into());
    }
    Ok(())
}

fn is_word(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether one granted scope covers one required scope.
pub fn grants(granted: &str, required: &str) -> bool {
    if granted == "*" || granted == "admin:*" || granted == required {
        return true;
    }
    match granted.strip_suffix(":*") {
        Some(resource) => required
            .strip_prefix(resource)
            .is_some_and(|rest| rest.starts_with(':')),
        None => false,
    }
}

/// Whether any of `granted` covers `required`.
pub fn has_scope<'a>(granted: impl IntoIterator<Item = &'a str>, required: &str) -> bool {
    granted.into_iter().any(|g| grants(g, required))
}

/// Scopes that grant everything: only operators hold them, and only operators may hand them
/// out or obtain a new token for a key that has one.
pub fn is_operator(scope: &str) -> bool {
    scope == "*" || scope == "admin:*"
}

/// Whether `granted` covers every one of `required`. A requirement that is missing (a SQL
/// NULL) or is not a valid scope is never met, whatever is granted: a failed lookup or a typo
/// in the caller's code must close the door, not open it.
pub fn has_all<'a>(
    granted: &[String],
    required: impl IntoIterator<Item = Option<&'a str>>,
) -> bool {
    required.into_iter().all(|r| {
        r.is_some_and(|r| validate(r).is_ok() && has_scope(granted.iter().map(String::as_str), r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_table() {
        let cases = [
            ("orders:read", "orders:read", true),
            ("orders:read", "orders:write", false),
            ("orders:*", "orders:read", true),
            ("orders:*", "orders:*", true),
            ("orders:*", "ordersx:read", false),
            ("orders:*", "other:read", false),
            ("orders:read", "orders:*", false),
            ("*", "anything:at_all", true),
            ("admin:*", "orders:delete", true),
            ("admin:read", "orders:read", false),
            ("orders:read", "", false),
            ("", "orders:read", false),
        ];
        for (granted, required, expected) in cases {
            assert_eq!(
                grants(granted, required),
                expected,
                "{granted} vs {required}"
            );
        }
    }

    #[test]
    fn required_scopes_are_all_of() {
        let granted = vec!["orders:read".to_string(), "invoices:*".to_string()];
        assert!(has_all(
            &granted,
            [Some("orders:read"), Some("invoices:write")]
        ));
        assert!(!has_all(
            &granted,
            [Some("orders:read"), Some("orders:write")]
        ));
        assert!(has_all(&granted, []));
        assert!(!has_all(&[], [Some("orders:read")]));
    }

    #[test]
    fn missing_or_invalid_requirements_are_never_met() {
        let everything = vec!["*".to_string()];
        assert!(has_all(&everything, [Some("orders:read")]));
        assert!(!has_all(&everything, [Some("orders:read"), None]));
        assert!(!has_all(&everything, [None]));
        for bad in ["", "orders", "orders read", &"a:".repeat(100)] {
            assert!(!has_all(&everything, [Some(bad)]), "{bad:?}");
        }
    }

    #[test]
    fn operator_scopes() {
        assert!(is_operator("*"));
        assert!(is_operator("admin:*"));
        for other in ["admin:read", "keys:manage", "orders:*", "admin"] {
            assert!(!is_operator(other), "{other}");
        }
    }

    #[test]
    fn validation() {
        for ok in ["orders:read", "orders:*", "*", "admin:*", "a.b-c_d:e.f"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        let too_long = format!("a:{}", "b".repeat(MAX_SCOPE_LEN));
        for bad in [
            "",
            "orders",
            "orders:",
            ":read",
            "orders read",
            "orders:read ",
            "a:b:c",
            "*:read",
            "orders:re*d",
            "ordérs:read",
            "orders:\n",
            &too_long,
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_scope_may_be_exactly_the_longest_allowed() {
        let longest = format!("orders:{}", "r".repeat(MAX_SCOPE_LEN - "orders:".len()));
        assert_eq!(longest.len(), MAX_SCOPE_LEN);
        assert_eq!(validate(&longest), Ok(()));
        assert_eq!(
            validate(&format!("{longest}r")),
            Err(format!("longer than {MAX_SCOPE_LEN} bytes"))
        );
    }

    /// `WORD_PATTERN`'s character class, read as a regular expression would, accepts exactly
    /// the bytes `validate` does.
    #[test]
    fn the_word_pattern_says_what_validate_accepts() {
        let class = WORD_PATTERN
            .strip_prefix("^[")
            .and_then(|rest| rest.strip_suffix("]+$"))
            .expect("^[CLASS]+$")
            .as_bytes();
        let in_class = |byte: u8| {
            let mut i = 0;
            while i < class.len() {
                // A '-' between two characters is a range; anywhere else, itself.
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    if (class[i]..=class[i + 2]).contains(&byte) {
                        return true;
                    }
                    i += 3;
                } else {
                    if class[i] == byte {
                        return true;
                    }
                    i += 1;
                }
            }
            false
        };
        for byte in 0..=255u8 {
            let word = [byte];
            let Ok(text) = std::str::from_utf8(&word) else {
                continue;
            };
            assert_eq!(is_word(text), in_class(byte), "byte {byte:#04x}");
        }
        assert!(!is_word(""), "the pattern's + needs one character at least");
    }
}
