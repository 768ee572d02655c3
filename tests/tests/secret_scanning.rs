//! `POST /v1/secret-scanning`, GitHub's secret scanning partner protocol, against the real
//! shim and database: a report signed by a key pair the test generates (published to the shim
//! in GitHub's key list format) revokes the reported key and labels every token; unsigned,
//! wrongly signed, malformed or oversized reports are refused and change nothing.

use apikey_tests::github::GitHub;
use apikey_tests::shim::{send, Response, Shim};
use apikey_tests::*;
use serde_json::{json, Value};

struct Scanner {
    shim: Shim,
    github: GitHub,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scanner(action: &str) -> Scanner {
    let dir = std::env::temp_dir().join(unique("secret-scanning"));
    std::fs::create_dir_all(&dir).expect("create the key directory");
    let github = GitHub::new(7, "github-test-key-1");
    let keys = dir.join("keys.json");
    github.write_key_file(&keys);
    let shim = Shim::start_with(&[
        (
            "APIKEY_SHIM_SECRET_SCANNING_KEYS",
            keys.to_str().expect("UTF-8 path"),
        ),
        ("APIKEY_SHIM_SECRET_SCANNING_ACTION", action),
    ]);
    Scanner {
        shim,
        github,
        _dir: TempDir(dir),
    }
}

fn post(shim: &Shim, body: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = shim
        .request("POST", "/v1/secret-scanning")
        .set("Content-Type", "application/json");
    for (name, value) in headers {
        request = request.set(name, value);
    }
    send(request, Some(body))
}

impl Scanner {
    fn report(&self, body: &str) -> Response {
        let signature = self.github.sign(body.as_bytes());
        post(
            &self.shim,
            body,
            &[
                ("Github-Public-Key-Identifier", &self.github.key_identifier),
                ("Github-Public-Key-Signature", &signature),
            ],
        )
    }
}

fn match_of(token: &str) -> Value {
    json!({ "token": token, "type": "apikey_token", "url": "https://github.com/octo/app/blob/main/.env", "source": "content" })
}

#[test]
fn a_signed_report_revokes_real_keys_and_labels_every_token() {
    let s = scanner("revoke");
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let leaked = issue(&mut c, partner, &["orders:read"]);
    let bystander = issue(&mut c, partner, &["orders:read"]);
    let reversed: String = leaked.secret().chars().rev().collect();
    let forged = forge(&leaked.key_id, &reversed);
    let body = json!([
        match_of(&leaked.token),
        match_of(&forged.token),
        match_of("ak_live_thisisnotatokenatall_x"),
    ])
    .to_string();
    let r = s.report(&body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!([
            { "token_raw": leaked.token, "token_type": "apikey_token", "label": "true_positive" },
            { "token_raw": forged.token, "token_type": "apikey_token", "label": "false_positive" },
            { "token_raw": "ak_live_thisisnotatokenatall_x", "token_type": "apikey_token", "label": "false_positive" },
        ])
    );
    assert_eq!(reason(&mut c, &leaked.token), "revoked");
    assert_eq!(reason(&mut c, &bystander.token), "ok");
    let detail: Value = c
        .query_one(
            "SELECT detail FROM apikey.audit_log WHERE action = 'leak_reported' AND key_id = $1",
            &[&leaked.key_id],
        )
        .expect("the leak_reported row")
        .get(0);
    assert_eq!(detail["url"], "https://github.com/octo/app/blob/main/.env");
    assert_eq!(detail["source"], "content");
    let leaked_events: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.events WHERE key_id = $1 AND type = 'key.leaked'",
            &[&leaked.key_id],
        )
        .expect("events")
        .get(0);
    assert_eq!(leaked_events, 1);

    // GitHub may send the same report again: still labelled, nothing else changes.
    let again = s.report(&body);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()[0]["label"], "true_positive");
    assert!(
        !s.shim.log().contains(leaked.secret()),
        "a reported token in the shim's log"
    );
    assert!(
        s.shim.log().contains(&leaked.key_id),
        "the key id is logged"
    );
}

#[test]
fn flagging_labels_but_leaves_the_key_working() {
    let s = scanner("flag");
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let leaked = issue(&mut c, partner, &["orders:read"]);
    let r = s.report(&json!([match_of(&leaked.token)]).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()[0]["label"], "true_positive");
    assert_eq!(reason(&mut c, &leaked.token), "ok");
    let action: Value = c
        .query_one(
            "SELECT detail->'action' FROM apikey.audit_log WHERE action = 'leak_reported' AND key_id = $1",
            &[&leaked.key_id],
        )
        .expect("the leak_reported row")
        .get(0);
    assert_eq!(action, "flag");
}

#[test]
fn unsigned_forged_malformed_and_oversized_reports_change_nothing() {
    let s = scanner("revoke");
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["orders:read"]);
    let body = json!([match_of(&key.token)]).to_string();
    let signature = s.github.sign(body.as_bytes());
    let impostor = GitHub::new(9, "github-test-key-1");
    let other_body = json!([match_of("ak_live_x")]).to_string();
    let refused: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("unsigned", vec![]),
        (
            "no signature",
            vec![(
                "Github-Public-Key-Identifier",
                s.github.key_identifier.clone(),
            )],
        ),
        (
            "unknown key identifier",
            vec![
                ("Github-Public-Key-Identifier", "someone-else".to_string()),
                ("Github-Public-Key-Signature", signature.clone()),
            ],
        ),
        (
            "signed by another key",
            vec![
                (
                    "Github-Public-Key-Identifier",
                    s.github.key_identifier.clone(),
                ),
                (
                    "Github-Public-Key-Signature",
                    impostor.sign(body.as_bytes()),
                ),
            ],
        ),
        (
            "signature of another body",
            vec![
                (
                    "Github-Public-Key-Identifier",
                    s.github.key_identifier.clone(),
                ),
                (
                    "Github-Public-Key-Signature",
                    s.github.sign(other_body.as_bytes()),
                ),
            ],
        ),
        (
            "not base64",
            vec![
                (
                    "Github-Public-Key-Identifier",
                    s.github.key_identifier.clone(),
                ),
                ("Github-Public-Key-Signature", "%%%".to_string()),
            ],
        ),
    ];
    for (what, headers) in &refused {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = post(&s.shim, &body, &headers);
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert!(!r.body.contains(key.secret()), "{what} echoed the token");
    }

    let bad_json = "[{\"token\": ";
    assert_eq!(s.report(bad_json).status, 400);
    assert_eq!(s.report("{\"token\": \"x\"}").status, 422);
    let mut many: Vec<Value> = (0..100)
        .map(|i| match_of(&format!("ak_live_x{i}")))
        .collect();
    many.push(match_of(&key.token));
    let r = s.report(&Value::Array(many).to_string());
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(reason(&mut c, &key.token), "ok", "nothing was revoked");
    let rows: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.audit_log WHERE action = 'leak_reported' AND key_id = $1",
            &[&key.key_id],
        )
        .expect("count")
        .get(0);
    assert_eq!(rows, 0);

    // Without a key file the route does not exist.
    let plain = Shim::start();
    assert_eq!(post(&plain, &body, &[]).status, 404);
}
