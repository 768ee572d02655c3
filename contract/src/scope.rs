//! Scopes are `resource:action` strings, or `resource/instance:action` for one instance of a
//! resource (an order, a site, a project). A granted scope satisfies a required one when:
//! they are equal; the grant is `*` or `admin:*` (everything); the grant is `resource:*` and
//! the requirement is for that resource or any of its instances; the grant is
//! `resource:action` and the requirement is that action on one of its instances; or the grant
//! is `resource/instance:*` and the requirement is an action on that instance. An instance
//! grant never covers the whole resource nor another instance. Required scopes are all-of
//! ([`has_all`]) or any-of ([`has_any`]).

pub const MAX_SCOPE_LEN: usize = 128;
pub const MAX_SCOPES: usize = 64;
pub const MAX_INSTANCE_LEN: usize = 64;

/// A scope's resource, and an action other than `*`, as a regular expression (JavaScript and
/// most other dialects read it alike): what [`validate`] accepts, for clients that check
/// before sending.
pub const WORD_PATTERN: &str = "^[A-Za-z0-9_.-]+$";

/// A resource instance, as a regular expression: what [`validate`] accepts after the `/`.
pub const INSTANCE_PATTERN: &str = "^[A-Za-z0-9_.~-]{1,64}$";

/// The parts of a valid scope other than `*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parts<'a> {
    resource: &'a str,
    instance: Option<&'a str>,
    /// `None` for `*`.
    action: Option<&'a str>,
}

/// Why a scope string was refused; the text completes "scope '...' is invalid: ".
pub fn validate(scope: &str) -> Result<(), String> {
    if scope.len() > MAX_SCOPE_LEN {
        return Err(format!("longer than {MAX_SCOPE_LEN} bytes"));
    }
    if scope == "*" {
        return Ok(());
    }
    parts(scope).map(|_| ())
}

fn parts(scope: &str) -> Result<Parts<'_>, String> {
    let Some((head, action)) = scope.split_once(':') else {
        return Err("expected resource:action, e.g. orders:read".into());
    };
    let (resource, instance) = match head.split_once('/') {
        Some((resource, instance)) => (resource, Some(instance)),
        None => (head, None),
    };
    if !is_word(resource) {
        return Err("the resource must be letters, digits, '_', '-' or '.'".into());
    }
    if instance.is_some_and(|i| !is_instance(i)) {
        return Err(format!(
            "the instance after '/' must be 1 to {MAX_INSTANCE_LEN} letters, digits, '_', '-', '.' or '~'"
        ));
    }
    let action = match action {
        "*" => None,
        named if is_word(named) => Some(named),
        _ => return Err("the action must be '*' or letters, digits, '_', '-' or '.'".into()),
    };
    Ok(Parts {
        resource,
        instance,
        action,
    })
}

fn is_word(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn is_instance(part: &str) -> bool {
    (1..=MAX_INSTANCE_LEN).contains(&part.len())
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~'))
}

/// Whether one granted scope covers one required scope.
pub fn grants(granted: &str, required: &str) -> bool {
    if is_operator(granted) || granted == required {
        return true;
    }
    let (Ok(g), Ok(r)) = (parts(granted), parts(required)) else {
        return false;
    };
    let same_instance = match (g.instance, r.instance) {
        // A grant for the whole resource covers each of its instances.
        (None, _) => true,
        (Some(g), Some(r)) => g == r,
        (Some(_), None) => false,
    };
    let action_covered = match (g.action, r.action) {
        (None, _) => true,
        (Some(g), Some(r)) => g == r,
        (Some(_), None) => false,
    };
    g.resource == r.resource && same_instance && action_covered
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

/// A requirement that is missing (a SQL NULL) or is not a valid scope is never met, whatever
/// is granted: a failed lookup or a typo in the caller's code must close the door, not open it.
fn meets(granted: &[String], required: Option<&str>) -> bool {
    required
        .is_some_and(|r| validate(r).is_ok() && has_scope(granted.iter().map(String::as_str), r))
}

/// Whether `granted` covers every one of `required`; a NULL or invalid requirement is never met.
pub fn has_all<'a>(
    granted: &[String],
    required: impl IntoIterator<Item = Option<&'a str>>,
) -> bool {
    required.into_iter().all(|r| meets(granted, r))
}

/// Whether `granted` covers at least one of `required` (so never for none); a NULL or invalid
/// requirement is never met.
pub fn has_any<'a>(
    granted: &[String],
    required: impl IntoIterator<Item = Option<&'a str>>,
) -> bool {
    required.into_iter().any(|r| meets(granted, r))
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
            // Resource instances: a type-wide grant covers each instance, an instance grant
            // only itself.
            ("orders:read", "orders/7:read", true),
            ("orders:*", "orders/7:read", true),
            ("orders:*", "orders/7:*", true),
            ("orders:read", "orders/7:write", false),
            ("orders:read", "orders/7:*", false),
            ("orders/7:*", "orders/7:read", true),
            ("orders/7:*", "orders/7:*", true),
            ("orders/7:read", "orders/7:read", true),
            ("orders/7:read", "orders/7:write", false),
            ("orders/7:read", "orders:read", false),
            ("orders/7:*", "orders:read", false),
            ("orders/7:*", "orders:*", false),
            ("orders/7:read", "orders/8:read", false),
            ("orders/7:*", "orders/8:read", false),
            ("orders/7:read", "orders/77:read", false),
            ("orders/7:read", "orders/7:read:x", false),
            ("orders:read", "invoices/7:read", false),
            ("orders/7:read", "invoices/7:read", false),
            ("*", "orders/7:delete", true),
            ("admin:*", "orders/7:delete", true),
            ("admin/7:*", "orders/7:delete", false),
            ("orders:read", "orders/:read", false),
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
    fn any_of_needs_one_valid_requirement_met() {
        let granted = vec!["orders/7:read".to_string(), "sites:*".to_string()];
        assert!(has_any(
            &granted,
            [Some("orders/8:read"), Some("orders/7:read")]
        ));
        assert!(has_any(&granted, [Some("sites/s1:write")]));
        assert!(!has_any(
            &granted,
            [Some("orders/8:read"), Some("orders:read")]
        ));
        assert!(!has_any(&granted, []));
        let everything = vec!["*".to_string()];
        assert!(!has_any(
            &everything,
            [None, Some(""), Some("orders/:read")]
        ));
        assert!(has_any(&everything, [None, Some("orders/1:read")]));
    }

    #[test]
    fn the_messages_name_the_part_that_is_wrong() {
        assert_eq!(
            validate("orders/a b:read"),
            Err(format!(
                "the instance after '/' must be 1 to {MAX_INSTANCE_LEN} letters, digits, '_', '-', '.' or '~'"
            ))
        );
        assert_eq!(
            validate("ord ers/7:read"),
            Err("the resource must be letters, digits, '_', '-' or '.'".into())
        );
        assert_eq!(
            validate("orders/7:re ad"),
            Err("the action must be '*' or letters, digits, '_', '-' or '.'".into())
        );
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
        let longest_instance = format!("orders/{}:read", "7".repeat(MAX_INSTANCE_LEN));
        for ok in [
            "orders:read",
            "orders:*",
            "*",
            "admin:*",
            "a.b-c_d:e.f",
            "orders/7:read",
            "orders/A-z_0.9~x:*",
            &longest_instance,
        ] {
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
            "orders/:read",
            "/7:read",
            "orders/7/8:read",
            "orders/7 :read",
            "orders/*:read",
            "orders/7:re/ad",
            "orders:read/7",
            "*/7:read",
            &format!("orders/{}:read", "7".repeat(MAX_INSTANCE_LEN + 1)),
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

    /// Whether `byte` is in the bracketed character class `class` of a regular expression.
    fn in_class(class: &[u8], byte: u8) -> bool {
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
    }

    /// The patterns served to clients, read as a regular expression would, accept exactly
    /// the bytes `validate` does.
    #[test]
    fn the_patterns_say_what_validate_accepts() {
        let word_class = WORD_PATTERN
            .strip_prefix("^[")
            .and_then(|rest| rest.strip_suffix("]+$"))
            .expect("^[CLASS]+$")
            .as_bytes();
        let instance_suffix = format!("]{{1,{MAX_INSTANCE_LEN}}}$");
        let instance_class = INSTANCE_PATTERN
            .strip_prefix("^[")
            .and_then(|rest| rest.strip_suffix(instance_suffix.as_str()))
            .expect("^[CLASS]{1,MAX}$")
            .as_bytes();
        for byte in 0..=255u8 {
            let one = [byte];
            let Ok(text) = std::str::from_utf8(&one) else {
                continue;
            };
            assert_eq!(
                is_word(text),
                in_class(word_class, byte),
                "byte {byte:#04x}"
            );
            assert_eq!(
                is_instance(text),
                in_class(instance_class, byte),
                "instance byte {byte:#04x}"
            );
        }
        assert!(!is_word(""), "the pattern's + needs one character at least");
        assert!(!is_instance(""));
        assert!(is_instance(&"a".repeat(MAX_INSTANCE_LEN)));
        assert!(!is_instance(&"a".repeat(MAX_INSTANCE_LEN + 1)));
    }
}
