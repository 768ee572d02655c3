//! What of a client's input an error message may repeat. Messages reach the client, the shim's
//! log and the server log, so a token pasted into the wrong field must not travel with them:
//! anything shaped like a token is cut back to its key id, any other long run of letters and
//! digits (a bare secret) is cut short, control characters are escaped, and the whole excerpt
//! is bounded.

use crate::token;

/// Most characters an excerpt shows, the ellipsis included.
pub const MAX_EXCERPT_CHARS: usize = 40;
/// Longest run of letters and digits shown whole: a key id's random part is 16, a secret 43.
const MAX_RUN: usize = 24;
/// What a longer run is cut to.
const RUN_KEPT: usize = 8;
const CUT: char = '…';

/// `value` as a message may quote it.
pub fn excerpt(value: &str) -> String {
    let printable: String = without_secrets(value)
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if printable.chars().count() <= MAX_EXCERPT_CHARS {
        return printable;
    }
    let mut out: String = printable.chars().take(MAX_EXCERPT_CHARS - 1).collect();
    out.push(CUT);
    out
}

/// A whole message with every token-shaped word and long run cut as in [`excerpt`], but not
/// shortened: for messages built from several parts, some of them input.
pub fn without_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4096));
    let mut rest = text;
    while !rest.is_empty() {
        let word_len = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
        if word_len == 0 {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let (word, tail) = rest.split_at(word_len);
        push_word(&mut out, word);
        rest = tail;
    }
    out
}

/// Whether `text` holds a whole token (right shape and checksum) anywhere: such text must not
/// be stored as a name, tag, reason or metadata, where it would sit in a table in clear.
pub fn contains_token(text: &str) -> bool {
    text.split(|c: char| !is_word_char(c)).any(|word| {
        // A token may be glued to other word characters: try each place a prefix could
        // start (the word's start, after each `_`), with the one length its prefix implies.
        std::iter::once(0)
            .chain(word.match_indices('_').map(|(i, _)| i + 1))
            .any(|start| {
                let candidate = &word[start..];
                candidate.find('_').is_some_and(|prefix_len| {
                    let len = token::token_len(prefix_len);
                    candidate.len() >= len && token::parse(&candidate[..len]).is_some()
                })
            })
    })
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A word of `[A-Za-z0-9_]`: a token (or a key id followed by anything) keeps only its key
/// id; otherwise each `_`-separated run longer than [`MAX_RUN`] is cut.
fn push_word(out: &mut String, word: &str) {
    let mut parts = word.splitn(4, '_');
    if let (Some(prefix), Some(environment), Some(id), Some(secret)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    {
        let key_id = &word[..prefix.len() + environment.len() + id.len() + 2];
        if token::is_key_id(key_id) {
            out.push_str(key_id);
            if !secret.is_empty() {
                out.push('_');
                out.push(CUT);
            }
            return;
        }
    }
    for (i, run) in word.split('_').enumerate() {
        if i > 0 {
            out.push('_');
        }
        if run.chars().count() > MAX_RUN {
            out.extend(run.chars().take(RUN_KEPT));
            out.push(CUT);
        } else {
            out.push_str(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> token::NewToken {
        token::generate("ak", "live").expect("CSPRNG available")
    }

    #[test]
    fn tokens_are_cut_to_their_key_id_wherever_they_stand() {
        let t = token();
        for text in [
            t.token.clone(),
            format!("scope \"{}\" is invalid", t.token),
            format!("{},orders:read", t.token),
            format!("x{}", t.token),
        ] {
            let cleaned = without_secrets(&text);
            assert!(!cleaned.contains(t.secret()), "{cleaned}");
            assert!(!cleaned.contains(&t.secret()[..RUN_KEPT + 1]), "{cleaned}");
        }
        assert_eq!(without_secrets(&t.token), format!("{}_…", t.key_id));
        assert_eq!(excerpt(&t.token), format!("{}_…", t.key_id));
    }

    #[test]
    fn whole_tokens_are_found_in_text() {
        let t = token();
        assert!(contains_token(&t.token));
        assert!(contains_token(&format!("name {} here", t.token)));
        assert!(
            contains_token(&format!("x_{}", t.token)),
            "glued after a '_'"
        );
        assert!(
            contains_token(&format!("{}_tail", t.token)),
            "glued before a '_'"
        );
        assert!(!contains_token(&t.key_id));
        assert!(
            !contains_token(&t.token[..t.token.len() - 1]),
            "checksum incomplete"
        );
        assert!(!contains_token("Acme payments, team 7"));
    }

    #[test]
    fn bare_secrets_and_long_runs_are_cut() {
        let t = token();
        let cleaned = without_secrets(&format!("secret {} here", t.secret()));
        assert_eq!(cleaned, format!("secret {}… here", &t.secret()[..RUN_KEPT]));
        assert_eq!(without_secrets("orders:read"), "orders:read");
        assert_eq!(without_secrets(&t.key_id), t.key_id, "key ids are public");
    }

    #[test]
    fn excerpts_are_short_and_printable() {
        let long = "a:b ".repeat(100);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), MAX_EXCERPT_CHARS);
        assert!(e.ends_with(CUT));
        assert_eq!(excerpt("tab\there\n"), "tab\\there\\n");
        assert_eq!(excerpt("éèê"), "éèê");
        assert_eq!(excerpt(""), "");
        let exact = format!("{}a", "ab ".repeat(13));
        assert_eq!(
            excerpt(&exact),
            exact,
            "{MAX_EXCERPT_CHARS} characters are kept whole"
        );
    }

    #[test]
    fn a_run_is_cut_only_when_longer_than_the_limit() {
        let limit = "x".repeat(MAX_RUN);
        assert_eq!(without_secrets(&limit), limit);
        let longer = "y".repeat(MAX_RUN + 1);
        assert_eq!(
            without_secrets(&longer),
            format!("{}{CUT}", &longer[..RUN_KEPT])
        );
    }
}
