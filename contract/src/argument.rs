//! How the extension says which argument an error is about: the error's DETAIL is
//! `argument: <name>`, whatever the message's wording. The shim reads it (never the message
//! text) to name the `field` of a 422.

const DETAIL_PREFIX: &str = "argument: ";

/// The DETAIL of an error about `argument`.
pub fn detail(argument: &str) -> String {
    format!("{DETAIL_PREFIX}{argument}")
}

/// The argument a DETAIL names, when it is one written by [`detail`]: a lower-case name
/// (`rate_per_minute`, `apikey.default_prefix`), nothing else.
pub fn from_detail(detail: &str) -> Option<&str> {
    detail
        .strip_prefix(DETAIL_PREFIX)
        .filter(|name| !name.is_empty())
        .filter(|name| {
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_names_its_argument_and_nothing_else_does() {
        for name in [
            "scopes",
            "rate_per_minute",
            "apikey.default_prefix",
            "url",
            "v2",
        ] {
            assert_eq!(from_detail(&detail(name)), Some(name));
        }
        for other in [
            "",
            "argument: ",
            "argument: Bad Name",
            "argument: a;b",
            "Table \"key_reminders\" references \"keys\".",
            "argument:url",
            "argument: url\n",
        ] {
            assert_eq!(from_detail(other), None, "{other:?}");
        }
    }
}
