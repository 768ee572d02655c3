//! What shared memory holds that no flusher wrote before a clean shutdown (a database whose
//! flusher had not started yet, counts made after its last round) is saved to a file by the
//! postmaster as it exits and loaded back at the next start, for the flushers to write then,
//! as `pg_stat_statements` keeps its counts across a restart. A crash saves nothing.
//!
//! The file is text, one entry a line: `u <db> <minute> <reason code> <count> <partner or ->
//! <key id or ->` for usage counts and `l <db> <last used> <key id>` for unwritten uses. Key
//! ids are `[A-Za-z0-9_]`, so nothing needs quoting.

use super::{keys, usage};
use crate::reason::Reason;
use std::io::Write;

/// Relative to the data directory, the postmaster's working directory.
const FILE: &str = "pg_stat/apikey.pending";

/// Writes the pending state; called by the postmaster on a clean exit.
pub fn save() {
    let mut text = String::new();
    for (db, row) in usage::pending_everywhere() {
        let partner = row
            .partner
            .map(|p| p.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .unwrap_or_else(|| "-".into());
        text.push_str(&format!(
            "u {db} {} {} {} {partner} {}\n",
            row.minute,
            row.reason.code(),
            row.count,
            row.key_id.as_deref().unwrap_or("-")
        ));
    }
    for (db, key_id, at) in keys::unwritten_uses_everywhere() {
        text.push_str(&format!("l {db} {at} {key_id}\n"));
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
            ["u", db, minute, reason, count, partner, key_id] => {
                let (Ok(db), Ok(minute), Some(reason), Ok(count)) = (
                    db.parse::<u32>(),
                    minute.parse::<i64>(),
                    reason.parse::<u8>().ok().and_then(Reason::from_code),
                    count.parse::<u64>(),
                ) else {
                    continue;
                };
                let row = usage::UsageRow {
                    minute,
                    key_id: (*key_id != "-").then(|| key_id.to_string()),
                    partner: parse_partner(partner),
                    reason,
                    count,
                };
                usage::restore(db, std::slice::from_ref(&row));
            }
            ["l", db, at, key_id] => {
                if let (Ok(db), Ok(at)) = (db.parse::<u32>(), at.parse::<i64>()) {
                    keys::used_in(db, key_id, at);
                }
            }
            _ => {}
        }
    }
}

fn parse_partner(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partners_round_trip_through_hex() {
        let partner = [0xab; 16];
        let hex: String = partner.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_partner(&hex), Some(partner));
        assert_eq!(parse_partner("-"), None);
        assert_eq!(parse_partner(&"zz".repeat(16)), None);
    }
}
