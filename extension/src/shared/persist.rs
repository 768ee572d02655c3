//! What shared memory holds that no flusher wrote before a clean shutdown (a database whose
//! flusher had not started yet, counts made after its last round) is saved to a file by the
//! postmaster as it exits and loaded back at the next start, for the flushers to write then,
//! as `pg_stat_statements` keeps its counts across a restart. The keys' proofs are saved too,
//! so that a restart does not make every key pay Argon2id again. A crash saves nothing.
//!
//! The file is text, one entry a line: `u <db> <minute> <reason code> <count> <partner or ->
//! <key id or -> <credits spent>` for usage counts (a file from 0.7.0 or earlier has no
//! credits), `l <db> <last used> <key id>` for unwritten uses, and
//! `p <db> <touched> <key id> <stored-hash fingerprint> <digest>` (hex) for proofs, and
//! `c <db> <credit id> <credits>` for credit spending not yet written. Key ids
//! are `[A-Za-z0-9_]`, so nothing needs quoting. It lives in the data directory (only the
//! server's OS user reads it) between a shutdown and the next start, which removes it. A
//! proof is HMAC-SHA256 under the pepper, which is not in the data directory.

use super::{credits, keys, usage};
use crate::hash::to_hex as hex;
use crate::reason::Reason;
use std::io::Write;

/// Relative to the data directory, the postmaster's working directory.
const FILE: &str = "pg_stat/apikey.pending";

/// Writes the pending state; called by the postmaster on a clean exit.
pub fn save() {
    let mut text = String::new();
    for (db, row) in usage::pending_everywhere() {
        let partner = row.partner.map(|p| hex(&p)).unwrap_or_else(|| "-".into());
        text.push_str(&format!(
            "u {db} {} {} {} {partner} {} {}\n",
            row.minute,
            row.reason.code(),
            row.count.verifications,
            row.key_id.as_deref().unwrap_or("-"),
            row.count.spent,
        ));
    }
    for (db, key_id, at) in keys::unwritten_uses_everywhere() {
        text.push_str(&format!("l {db} {at} {key_id}\n"));
    }
    for (db, key_id, touched, stored, digest) in keys::proofs_everywhere() {
        text.push_str(&format!(
            "p {db} {touched} {key_id} {} {}\n",
            hex(&stored),
            hex(&digest)
        ));
    }
    for (db, credit_id, unwritten) in credits::unwritten_everywhere() {
        text.push_str(&format!("c {db} {credit_id} {unwritten}\n"));
    }
    if text.is_empty() {
        return;
    }
    let written = std::fs::File::create(FILE).and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        pgrx::log!("apikey: could not save pending usage counts to {FILE}: {e}");
    }
}

/// Loads and removes the file a clean shutdown left; called by the postmaster at start.
pub fn load() {
    let Ok(text) = std::fs::read_to_string(FILE) else {
        return;
    };
    let _ = std::fs::remove_file(FILE);
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["u", db, minute, reason, count, partner, key_id, spent @ ..] => {
                let (Ok(db), Ok(minute), Some(reason), Ok(verifications), Some(spent)) = (
                    db.parse::<u32>(),
                    minute.parse::<i64>(),
                    reason.parse::<u8>().ok().and_then(Reason::from_code),
                    count.parse::<u64>(),
                    match spent {
                        [] => Some(0),
                        [spent] => spent.parse::<u64>().ok(),
                        _ => None,
                    },
                ) else {
                    continue;
                };
                let row = usage::UsageRow {
                    minute,
                    key_id: (*key_id != "-").then(|| key_id.to_string()),
                    partner: parse_hex(partner),
                    reason,
                    count: usage::Tally {
                        verifications,
                        spent,
                    },
                };
                usage::restore(db, std::slice::from_ref(&row));
            }
            ["l", db, at, key_id] => {
                if let (Ok(db), Ok(at)) = (db.parse::<u32>(), at.parse::<i64>()) {
                    keys::used_in(db, key_id, at);
                }
            }
            ["p", db, touched, key_id, stored, digest] => {
                if let (Ok(db), Ok(touched), Some(stored), Some(digest)) = (
                    db.parse::<u32>(),
                    touched.parse::<i64>(),
                    parse_hex(stored),
                    parse_hex(digest),
                ) {
                    keys::proven_in(db, key_id, touched, &stored, &digest);
                }
            }
            ["c", db, credit_id, unwritten] => {
                if let (Ok(db), Ok(credit_id), Ok(unwritten)) = (
                    db.parse::<u32>(),
                    credit_id.parse::<i64>(),
                    unwritten.parse::<i64>(),
                ) {
                    credits::restore(db, credit_id, unwritten);
                }
            }
            _ => {}
        }
    }
}

/// `N` bytes from `2 * N` hex digits; `None` for anything else (a `-`, a cut line).
fn parse_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_through_hex() {
        let partner = [0xab; 16];
        assert_eq!(parse_hex(&hex(&partner)), Some(partner));
        let digest: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(parse_hex(&hex(&digest)), Some(digest));
        assert_eq!(parse_hex::<16>("-"), None);
        assert_eq!(parse_hex::<16>(&"zz".repeat(16)), None);
        assert_eq!(
            parse_hex::<32>(&hex(&partner)),
            None,
            "a partner is no digest"
        );
    }
}
