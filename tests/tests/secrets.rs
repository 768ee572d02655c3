//! Tokens, their secret parts and the pepper never reach a table, a log line or an error
//! message, whatever a client does with them; and `apikey_verify` never raises for any
//! token value.

use apikey_tests::postgres::Client;
use apikey_tests::*;
use base64::Engine;
use std::collections::HashMap;
use std::process::Command;

/// A secret counts as leaked if any run of this many of its characters shows up.
const WINDOW: usize = 12;
const NO_DATA_FOUND: &str = "P0002";

fn reversed(s: &str) -> String {
    s.chars().rev().collect()
}

/// Every run of `WINDOW` characters of every secret, token secret part and pepper, so that
/// a text is scanned once whatever the number of secrets.
#[derive(Default)]
struct Needles(HashMap<Vec<u8>, String>);

impl Needles {
    fn add(&mut self, label: &str, secret: &str) {
        assert!(secret.len() >= WINDOW, "{label} is too short to scan for");
        for window in secret.as_bytes().windows(WINDOW) {
            self.0.insert(window.to_vec(), label.to_string());
        }
    }

    fn add_token(&mut self, label: &str, issued: &Issued) {
        self.add(label, issued.secret());
    }

    /// Where `text` (found at `place`) contains part of a secret, with some context.
    fn find(&self, place: &str, text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        let (offset, label) = bytes
            .windows(WINDOW)
            .enumerate()
            .find_map(|(offset, w)| self.0.get(w).map(|label| (offset, label)))?;
        let context = &bytes[offset.saturating_sub(80)..(offset + 120).min(bytes.len())];
        Some(format!(
            "{place} contains part of {label} at byte {offset}: ...{}...",
            String::from_utf8_lossy(context)
        ))
    }

    fn assert_absent(&self, place: &str, text: &str) {
        if let Some(leak) = self.find(place, text) {
            panic!("{leak}");
        }
    }
}

fn peppers() -> Vec<String> {
    std::fs::read_to_string(pepper_file_path())
        .expect("read the pepper file")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn server_log_len() -> usize {
    std::fs::metadata(server_log_path())
        .expect("stat the server log")
        .len() as usize
}

/// The server log from byte `from` on (0: all of it).
fn server_log_since(from: usize) -> String {
    let bytes = std::fs::read(server_log_path()).expect("read the server log");
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

fn rotate(c: &mut Client, key_id: &str, grace: &str) -> Issued {
    let row = c
        .query_one(
            "SELECT key_id, token FROM apikey_rotate($1, $2::text::interval)",
            &[&key_id, &grace],
        )
        .expect("apikey_rotate");
    Issued {
        key_id: row.get(0),
        token: row.get(1),
    }
}

/// The full text of an error a client sees: message, detail, hint, context.
fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} | {:?} | {:?} | {:?}",
            db.message(),
            db.detail(),
            db.hint(),
            db.where_()
        ),
        None => e.to_string(),
    }
}

/// Calls a key-management function with `not_a_key_id` where a key id belongs; asserts it
/// fails with P0002; returns its message and its full text (see `error_text`).
fn manage_with(c: &mut Client, call: &str, not_a_key_id: &str) -> (String, String) {
    let err = c
        .query(&format!("SELECT {call}"), &[&not_a_key_id])
        .expect_err("a token is not a key id");
    let code = err.code().map(|s| s.code().to_string());
    assert_eq!(
        code.as_deref(),
        Some(NO_DATA_FOUND),
        "{call}: {}",
        error_text(&err)
    );
    let message = err
        .as_db_error()
        .expect("database error")
        .message()
        .to_string();
    (message, error_text(&err))
}

const MANAGEMENT_CALLS: [&str; 3] = [
    "apikey_revoke($1)",
    "apikey_rotate($1, '1 hour')",
    "apikey_set_enabled($1, false)",
];

fn pg_dump_text(db: &str) -> String {
    let output = Command::new(pgbin("pg_dump"))
        .args(cli_args("postgres", db))
        .arg("--no-password")
        .output()
        .expect("run pg_dump");
    assert!(
        output.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("pg_dump output is UTF-8")
}

/// Everything the database will show a superuser, one labelled text per source.
fn database_texts(c: &mut Client) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    let relations: Vec<String> = c
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'apikey' AND c.relkind IN ('r', 'v', 'm', 'p') ORDER BY 1",
            &[],
        )
        .expect("list the relations of schema apikey")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        relations.len() >= 4,
        "partners, keys, audit_log, key_info: {relations:?}"
    );
    for relation in relations {
        let rows: String = c
            .query_one(
                &format!(
                    "SELECT coalesce(string_agg(row_to_json(t)::text, E'\\n'), '') \
                     FROM apikey.\"{relation}\" t"
                ),
                &[],
            )
            .unwrap_or_else(|e| panic!("read apikey.{relation}: {e:?}"))
            .get(0);
        texts.push((format!("apikey.{relation}"), rows));
    }
    for (label, sql) in [
        (
            "pg_stat_activity",
            "SELECT string_agg(row_to_json(a)::text, E'\\n') FROM pg_stat_activity a",
        ),
        (
            "pg_settings",
            "SELECT string_agg(name || '=' || coalesce(setting, ''), E'\\n') FROM pg_settings",
        ),
        (
            "pg_prepared_statements",
            "SELECT coalesce(string_agg(statement, E'\\n'), '') FROM pg_prepared_statements",
        ),
    ] {
        let text: String = c
            .query_one(sql, &[])
            .unwrap_or_else(|e| panic!("{label}: {e:?}"))
            .get(0);
        texts.push((label.to_string(), text));
    }
    let db: String = c
        .query_one("SELECT current_database()", &[])
        .expect("db")
        .get(0);
    texts.push(("pg_dump of the database".to_string(), pg_dump_text(&db)));
    texts
}

/// (expected reason, token, required scopes, client IP)
type VerifyCase<'a> = (&'a str, Option<&'a str>, &'a [&'a str], Option<&'a str>);

#[test]
fn tokens_secrets_and_the_pepper_never_reach_tables_logs_or_errors() {
    let log_start = server_log_len();
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let mut needles = Needles::default();
    for (i, pepper) in peppers().iter().enumerate() {
        needles.add(&format!("pepper #{i}"), pepper);
    }

    let reader = issue(&mut c, partner, &["orders:read"]);
    let restricted = issue_with(
        &mut c,
        "$1, '{orders:read}', name => 'restricted', environment => 'test', prefix => 'sk', \
         allowed_cidrs => '{10.0.0.0/8}', tags => '{secret-scan}', metadata => '{\"k\": 1}'",
        &[&partner],
    );
    let to_revoke = issue(&mut c, partner, &["orders:read"]);
    let to_disable = issue(&mut c, partner, &["orders:read"]);
    let manager = issue(&mut c, partner, &["keys:manage"]);
    let rotated = rotate(&mut c, &reader.key_id, "1 hour");
    let replaced = rotate(&mut c, &manager.key_id, "0");
    c.execute(
        "SELECT apikey_revoke($1, 'compromised')",
        &[&to_revoke.key_id],
    )
    .expect("revoke");
    c.execute(
        "SELECT apikey_set_enabled($1, false)",
        &[&to_disable.key_id],
    )
    .expect("disable");
    // Webhook secrets: shown once, then sealed. Scanned for as their base64 and as the hex
    // of their key bytes (how a bytea column prints).
    let (endpoint_id, first_secret): (Uuid, String) = {
        let row = c
            .query_one(
                "SELECT endpoint_id, secret FROM apikey_webhook_create($1, 'https://example.com/hook', '{key.expiring}')",
                &[&partner],
            )
            .expect("apikey_webhook_create");
        (row.get(0), row.get(1))
    };
    let second_secret: String = c
        .query_one(
            "SELECT apikey_webhook_rotate_secret($1, '1 hour')",
            &[&endpoint_id],
        )
        .expect("apikey_webhook_rotate_secret")
        .get(0);
    for (label, secret) in [
        ("webhook secret", &first_secret),
        ("rotated webhook secret", &second_secret),
    ] {
        let encoded = secret.strip_prefix("whsec_").expect("whsec_ prefix");
        needles.add(label, encoded);
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        needles.add(&format!("{label} (hex)"), &hex);
    }

    // Self-checks, so that a passing scan means something.
    assert_eq!(
        forge(&reader.key_id, reader.secret()).token,
        reader.token,
        "checksum helper"
    );
    let mut probe = Needles::default();
    probe.add_token("probe", &reader);
    assert!(probe
        .find("probe", &format!("x{}x", &reader.secret()[5..5 + WINDOW]))
        .is_some());
    let unknown_id = format!("ak_live_{}", &reversed(rotated.secret())[..16]);
    let wrong_secret = forge(&rotated.key_id, &reversed(reader.secret()));
    let stolen_secret = forge(&unknown_id, reader.secret());
    for (label, issued) in [
        ("reader", &reader),
        ("restricted", &restricted),
        ("to_revoke", &to_revoke),
        ("to_disable", &to_disable),
        ("manager", &manager),
        ("rotated", &rotated),
        ("replaced", &replaced),
        ("forged wrong secret", &wrong_secret),
        ("forged unknown key", &stolen_secret),
    ] {
        needles.add_token(label, issued);
    }

    // Every way a verification can end, each of which writes the audit log or not.
    let typo = {
        let mut t = rotated.token.clone();
        let last = if t.ends_with('A') { "B" } else { "A" };
        t.replace_range(t.len() - 1.., last);
        t
    };
    let cases: Vec<VerifyCase> = vec![
        ("ok", Some(&reader.token), &[], None),
        ("ok", Some(&rotated.token), &["orders:read"], None),
        ("ok", Some(&replaced.token), &[], None),
        ("ok", Some(&restricted.token), &[], Some("10.9.8.7")),
        (
            "ip_not_allowed",
            Some(&restricted.token),
            &[],
            Some("192.0.2.1"),
        ),
        (
            "insufficient_scope",
            Some(&rotated.token),
            &["orders:write"],
            None,
        ),
        ("revoked", Some(&to_revoke.token), &[], None),
        ("revoked", Some(&manager.token), &[], None),
        ("disabled", Some(&to_disable.token), &[], None),
        ("secret_mismatch", Some(&wrong_secret.token), &[], None),
        ("unknown_key", Some(&stolen_secret.token), &[], None),
        ("malformed", Some(&typo), &[], None),
        (
            "malformed",
            Some(&rotated.token[..rotated.token.len() - 1]),
            &[],
            None,
        ),
        ("missing_key", None, &[], None),
    ];
    for (expected, token, scopes, ip) in &cases {
        let v = verify(&mut c, *token, scopes, *ip);
        assert_eq!(v.reason, *expected, "verify {token:?} {scopes:?} {ip:?}");
    }

    // A token where a key id belongs: "does not exist", without echoing the token.
    let mut errors = Vec::new();
    for call in MANAGEMENT_CALLS {
        for token in [&rotated.token, &wrong_secret.token, &stolen_secret.token] {
            let (message, full) = manage_with(&mut c, call, token);
            needles.assert_absent(&format!("error of {call} given a token"), &full);
            errors.push(message);
        }
    }
    // A real key id is safe to echo; its error marks this run in the log.
    let (marker, _) = manage_with(&mut c, "apikey_revoke($1)", &unknown_id);
    assert!(
        marker.contains(&unknown_id),
        "the message names the unknown key id: {marker}"
    );

    for (place, text) in database_texts(&mut c) {
        needles.assert_absent(&place, &text);
    }
    needles.assert_absent("the server log", &server_log_since(0));
    // Not vacuous: the errors above did reach the log.
    let this_run = server_log_since(log_start);
    for message in errors.iter().chain([&marker]) {
        assert!(
            this_run.contains(&format!("ERROR:  {message}")),
            "the server log lacks the error {message:?}"
        );
    }
}

#[test]
fn a_mistyped_or_padded_token_given_as_key_id_is_not_echoed() {
    let log_start = server_log_len();
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["orders:read"]);
    let mut needles = Needles::default();
    needles.add_token("the key's secret", &key);

    let mut typo = key.token.clone();
    let last = if typo.ends_with('A') { "B" } else { "A" };
    typo.replace_range(typo.len() - 1.., last);
    let mut leaks = Vec::new();
    for (what, almost_a_token) in [
        ("with a checksum typo", typo),
        (
            "one character short",
            key.token[..key.token.len() - 1].to_string(),
        ),
        ("pasted with a newline", format!("{}\n", key.token)),
        ("pasted with spaces", format!("  {}  ", key.token)),
        ("in quotes", format!("\"{}\"", key.token)),
    ] {
        for call in MANAGEMENT_CALLS {
            let (_, full) = manage_with(&mut c, call, &almost_a_token);
            leaks.extend(needles.find(&format!("error of {call} given a token {what}"), &full));
        }
    }
    leaks.extend(needles.find("the server log", &server_log_since(log_start)));
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

#[test]
fn verify_never_raises_for_hostile_input() {
    let mut admin = superuser();
    let partner = create_partner(&mut admin);
    let key = issue(&mut admin, partner, &["orders:read"]);
    let verifier = login_role(&mut admin, "secrets_verifier", &["apikey_verifier"]);
    let mut verifier = connect(&verifier);

    let megabyte = "a".repeat(1 << 20);
    let long_token_shape = format!("{}{}", key.token, "A".repeat(1 << 20));
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("NULL", None, "missing_key"),
        ("empty", Some(String::new()), "missing_key"),
        ("1 MB of letters", Some(megabyte), "malformed"),
        (
            "a token followed by 1 MB",
            Some(long_token_shape),
            "malformed",
        ),
        (
            "Cyrillic",
            Some("ключ_live_секрет_значение".to_string()),
            "malformed",
        ),
        (
            "emoji in a token",
            Some(format!("{}🔑", key.token)),
            "malformed",
        ),
        (
            "control characters",
            Some("ak_live_\u{1}\u{7}\t\r\n\u{1b}[0m\u{7f}".to_string()),
            "malformed",
        ),
        (
            "SQL",
            Some("'; DROP TABLE apikey.keys; --".to_string()),
            "malformed",
        ),
        ("underscores only", Some("_".repeat(80)), "malformed"),
        ("key id alone", Some(key.key_id.clone()), "malformed"),
    ];
    for c in [&mut admin, &mut verifier] {
        for (what, token, expected) in &cases {
            let v = try_verify(c, token.as_deref(), &[], None)
                .unwrap_or_else(|e| panic!("{what}: apikey_verify raised {}", error_text(&e)));
            assert_eq!(
                (
                    v.valid,
                    v.reason.as_str(),
                    v.key_id,
                    v.partner_id,
                    v.scopes,
                    v.rate_per_minute
                ),
                (false, *expected, None, None, None, None),
                "{what}"
            );
        }
    }
}

/// A token pasted into any other argument or field: refused, and neither the answer nor a
/// log line carries its secret (0.1.0 echoed 39 of its 43 secret characters from `scopes`).
#[test]
fn a_token_pasted_into_another_field_is_never_echoed() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let victim = issue(&mut c, partner, &["orders:read"]);
    let mut needles = Needles::default();
    needles.add_token("the pasted token", &victim);
    let log_from = server_log_len();
    let t = victim.token.as_str();
    let calls: [(&str, &[&(dyn postgres::types::ToSql + Sync)]); 9] = [
        ("SELECT * FROM apikey_issue($1, ARRAY[$2])", &[&partner, &t]),
        ("SELECT * FROM apikey_issue($1, '{a:b}', tags => ARRAY[$2])", &[&partner, &t]),
        ("SELECT * FROM apikey_issue($1, '{a:b}', name => $2)", &[&partner, &t]),
        ("SELECT * FROM apikey_issue($1, '{a:b}', metadata => jsonb_build_object('note', $2::text))", &[&partner, &t]),
        ("SELECT * FROM apikey_issue($1, '{a:b}', prefix => $2)", &[&partner, &t]),
        ("SELECT apikey_partner_create($2, $1::text)", &[&t, &t]),
        ("SELECT apikey_revoke($1, $2)", &[&victim.key_id, &t]),
        ("SELECT * FROM apikey_rotate($1, '0', ARRAY[$2])", &[&victim.key_id, &t]),
        ("SELECT apikey_require_scope($1)", &[&t]),
    ];
    for (sql, params) in calls {
        let err = c.query(sql, params).expect_err(sql);
        let code = err.code().map(|s| s.code().to_string()).unwrap_or_default();
        assert!(
            matches!(code.as_str(), "22023" | "42501"),
            "{sql}: {code} {}",
            error_text(&err)
        );
        needles.assert_absent(sql, &error_text(&err));
    }
    assert_eq!(
        reason(&mut c, &victim.token),
        "ok",
        "the victim key is untouched"
    );

    let shim = apikey_tests::shim::Shim::start();
    let operator = operator_key(&mut c);
    for body in [
        serde_json::json!({ "partner_id": partner.to_string(), "scopes": [t] }),
        serde_json::json!({ "partner_id": partner.to_string(), "scopes": ["a:b"], "name": t }),
        serde_json::json!({ "partner_id": t, "scopes": ["a:b"] }),
        serde_json::json!({ "partner_id": partner.to_string(), "scopes": ["a:b"], t: 1 }),
    ] {
        let response = shim.post_as(&operator.token, "/v1/keys", &body);
        assert!(
            matches!(response.status, 400 | 422),
            "{}: {}",
            response.status,
            response.body
        );
        needles.assert_absent("a 4xx of POST /v1/keys", &response.body);
    }
    let scoped = apikey_tests::shim::send(
        shim.request("GET", "/v1/verify")
            .set("X-API-Key", &operator.token)
            .set("X-Required-Scopes", t),
        None,
    );
    assert_eq!(scoped.status, 400, "{}", scoped.body);
    needles.assert_absent("a 400 of GET /v1/verify", &scoped.body);
    needles.assert_absent("the shim's log", &shim.log());
    needles.assert_absent("the server log", &server_log_since(log_from));
}
