//! Leak reports: a token found in public (GitHub's secret scanning sends them to the shim's
//! `POST /v1/secret-scanning`) is looked up, and when it is a real key of this database it is
//! revoked (or, by the caller's choice, only flagged), with an audit row `leak_reported` and
//! a `key.leaked` event for its partner.
//!
//! Deciding "real" costs what a verification costs: the checksum first (a random string
//! never reaches the table), then the key id's index probe, then the secret against the
//! key's proof, Argon2id only for a key no backend has proven, through the server's gate.

use crate::access;
use crate::audit::{self, Event};
use crate::error::{ApiError, ApiResult, OrRaise};
use crate::known_keys;
use crate::proof::{self, Checked};
use crate::{clock, events, guc, hash, lifecycle, outbox, redact, token};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::json;

pub const TRUE_POSITIVE: &str = "true_positive";
pub const FALSE_POSITIVE: &str = "false_positive";

/// Longest `url` and `source` kept from a report (they come from outside).
const MAX_URL_CHARS: usize = 2048;
const MAX_SOURCE_CHARS: usize = 100;

/// `true_positive` when `token` is a real key of this database (revoked ones included),
/// else `false_positive`. Never raises for any token value, so that one odd token does not
/// fail a report of many.
#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_leak_report(
    token: Option<&str>,
    url: default!(Option<&str>, "NULL"),
    source: default!(Option<&str>, "NULL"),
    revoke: default!(Option<bool>, true),
) -> &'static str {
    Spi::connect_mut(|client| {
        access::require_admin("apikey_leak_report")?;
        let Some((key_id, partner_id)) = real_key(token)? else {
            return Ok(FALSE_POSITIVE);
        };
        let report = Report {
            key_id: &key_id,
            partner_id,
            url: url.map(|u| cut(u, MAX_URL_CHARS)),
            source: source.map(|s| cut(s, MAX_SOURCE_CHARS)),
            revoke: revoke.unwrap_or(true),
        };
        record(client, &report)?;
        Ok(TRUE_POSITIVE)
    })
    .or_raise()
}

/// The key id and partner of `token` when its secret is the key's.
fn real_key(token: Option<&str>) -> ApiResult<Option<(String, pgrx::Uuid)>> {
    let Some(parsed) = token.and_then(token::parse) else {
        return Ok(None);
    };
    let Some(row) = known_keys::lookup(parsed.key_id)? else {
        return Ok(None);
    };
    let peppers = guc::peppers()?;
    // A key whose pepper left the file can never verify: reporting it changes nothing.
    let Some(pepper) = peppers.by_fingerprint(&row.pepper_fingerprint) else {
        return Ok(None);
    };
    let digest = hash::digest(pepper.bytes(), parsed.secret.as_bytes());
    Ok(
        match proof::check(parsed.key_id, &row, &digest, clock::now()) {
            Checked::Proven(_) => Some((parsed.key_id.to_string(), row.partner_id)),
            Checked::Mismatch => None,
            // A real leak must not be dismissed as a false positive because guesses at the
            // same key hold its Argon2id: the reporter is asked to send it again.
            Checked::Busy => {
                return Err(ApiError::new(
                    PgSqlErrorCode::ERRCODE_TOO_MANY_CONNECTIONS,
                    "this key's secret cannot be checked now: too many verifications of it \
                     are waiting for Argon2id",
                )
                .with_hint("Report it again in a second."))
            }
        },
    )
}

struct Report<'a> {
    key_id: &'a str,
    partner_id: pgrx::Uuid,
    url: Option<String>,
    source: Option<String>,
    revoke: bool,
}

/// Records the report once: a replay of the same token with the same `url` and `source`
/// (GitHub resends a report it got no answer to, and anyone holding a signed body can
/// resend it) adds no audit row and no event, unless it revokes a key an earlier report only
/// flagged.
fn record(client: &mut SpiClient<'_>, report: &Report<'_>) -> ApiResult<()> {
    // The key's row lock orders concurrent copies of one report: the second one in sees
    // the first one's audit row.
    client.update(
        "SELECT 1 FROM apikey.keys WHERE key_id = $1 FOR NO KEY UPDATE",
        None,
        &[report.key_id.into()],
    )?;
    let revoked = report.revoke
        && lifecycle::revoke(
            client,
            Some(report.key_id),
            Some("leaked: reported by secret scanning"),
        )?;
    if !revoked && already_recorded(client, report)? {
        return Ok(());
    }
    let detail = json!({
        "url": report.url,
        "source": report.source,
        "action": if report.revoke { "revoke" } else { "flag" },
        "revoked_now": revoked,
    });
    let mut event = Event::new("leak_reported");
    event.key_id = Some(report.key_id);
    event.partner_id = Some(report.partner_id);
    event.detail = detail.clone();
    audit::record_action(client, event)?;
    events::record_key_event(client, outbox::KEY_LEAKED, report.key_id, detail)
}

fn already_recorded(client: &SpiClient<'_>, report: &Report<'_>) -> ApiResult<bool> {
    let found = client.select(
        "SELECT EXISTS (SELECT 1 FROM apikey.audit_log \
                        WHERE key_id = $1 AND action = 'leak_reported' \
                          AND detail->>'url' IS NOT DISTINCT FROM $2 \
                          AND detail->>'source' IS NOT DISTINCT FROM $3)",
        Some(1),
        &[
            report.key_id.into(),
            report.url.as_deref().into(),
            report.source.as_deref().into(),
        ],
    )?;
    Ok(found.first().get::<bool>(1)?.unwrap_or(false))
}

/// `text` bounded, and with any token in it cut back to its key id. Only then: a long run
/// of letters and digits in a URL is a commit hash worth keeping, not a secret.
fn cut(text: &str, max_chars: usize) -> String {
    let kept = if redact::contains_token(text) {
        redact::without_secrets(text)
    } else {
        text.to_string()
    };
    kept.chars().take(max_chars).collect()
}
