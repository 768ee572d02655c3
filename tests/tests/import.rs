//! Keys imported from other systems (`apikey_import`), each hashed by that system's own
//! library (Python's `hashlib`, `bcrypt` and `argon2-cffi`, installed by
//! scripts/install-deps.sh): they verify in their original shape with every rule of a native
//! key, and their first success replaces the other system's hash with apikey's own.

use apikey_tests::postgres::Client;
use apikey_tests::*;
use std::io::Read;
use std::process::Command;

/// Runs `script` with the Python that has the other systems' libraries; its printed line.
fn python(script: &str, args: &[&str]) -> String {
    let python = std::env::var("APIKEY_TEST_PYTHON")
        .unwrap_or_else(|_| "/opt/apikey-python/bin/python".to_string());
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {python} (scripts/install-deps.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .trim()
        .to_string()
}

const SHA256: &str = "import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())";
const BCRYPT: &str =
    "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())";
const ARGON2ID: &str = "import argon2, sys; \
    print(argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(sys.argv[1]))";
/// The PAR pack's design: Argon2id of the raw HMAC-SHA256(pepper, secret) (node's `argon2`
/// and `crypto.createHmac`, here their Python equivalents).
const ARGON2ID_HMAC: &str = "import argon2, hashlib, hmac, sys; \
    d = hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).digest(); \
    print(argon2.PasswordHasher(time_cost=1, memory_cost=19456, parallelism=1).hash(d))";

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn import(
    c: &mut Client,
    partner: &uuid::Uuid,
    hash: &str,
    format: &str,
    lookup: Option<&str>,
) -> Result<String, postgres::Error> {
    c.query_one(
        "SELECT apikey_import($1, $2, $3, '{orders:read}', lookup => $4, name => 'moved')",
        &[partner, &hash, &format, &lookup],
    )
    .map(|row| row.get(0))
}

/// `(reason, key_id)` of a verification.
fn verify(c: &mut Client, token: &str) -> (String, Option<String>) {
    let row = c
        .query_one("SELECT reason, key_id FROM apikey_verify($1)", &[&token])
        .expect("apikey_verify");
    (row.get(0), row.get(1))
}

fn stored(c: &mut Client, key_id: &str) -> (String, String, String) {
    let row = c
        .query_one(
            "SELECT k.secret_hash, k.pepper_fingerprint, i.lookup \
             FROM apikey.keys k JOIN apikey.imported_keys i USING (key_id) WHERE key_id = $1",
            &[&key_id],
        )
        .expect("the imported key's rows");
    (row.get(0), row.get(1), row.get(2))
}

#[test]
fn keys_hashed_by_their_own_systems_verify_and_their_first_success_rehashes_them() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let keypal = format!("kp_{}", random_hex(24));
    let mind_block = format!("mbk_live_{}", random_hex(20));
    let own_argon = format!("oa_{}", random_hex(20));
    let digest = python(SHA256, &[&keypal]);
    let cases = [
        (keypal.clone(), digest.clone(), "sha256", None),
        (
            mind_block.clone(),
            python(BCRYPT, &[&mind_block]),
            "bcrypt",
            Some(mind_block[..16].to_string()),
        ),
        (
            own_argon.clone(),
            python(ARGON2ID, &[&own_argon]),
            "argon2id",
            Some(own_argon[..16].to_string()),
        ),
    ];
    for (token, hash, format, lookup) in &cases {
        let key_id = import(&mut c, &partner, hash, format, lookup.as_deref()).expect(format);
        let (before, mark, lookup_before) = stored(&mut c, &key_id);
        if *format == "sha256" {
            assert!(
                lookup_before.starts_with("hmac:") && !lookup_before.contains(hash.as_str()),
                "found by an HMAC under the pepper, not by the digest: {lookup_before}"
            );
        }
        assert_eq!(
            (before.as_str(), mark.as_str()),
            (hash.as_str(), format!("imported:{format}").as_str())
        );

        let wrong = format!("{}{}", &token[..token.len() - 2], "zz");
        let refused = verify(&mut c, &wrong);
        if *format == "sha256" {
            assert_eq!(
                refused,
                ("malformed".into(), None),
                "{format}: another token's digest finds no key"
            );
        } else {
            assert_eq!(refused, ("secret_mismatch".into(), None), "{format}");
        }
        assert_eq!(
            stored(&mut c, &key_id).0,
            *hash,
            "{format}: a failure changes nothing"
        );

        assert_eq!(
            verify(&mut c, token),
            ("ok".into(), Some(key_id.clone())),
            "{format}"
        );
        let (after, fingerprint, lookup_after) = stored(&mut c, &key_id);
        assert!(
            after.starts_with("$argon2id$") && after != *hash,
            "{format}: {after}"
        );
        assert!(
            !fingerprint.starts_with("imported:"),
            "{format}: peppered now"
        );
        assert_eq!(lookup_after, lookup_before, "{format}: found the same way");
        // Found and proved the new way, in this session and in a fresh one.
        assert_eq!(
            verify(&mut c, token),
            ("ok".into(), Some(key_id.clone())),
            "{format}"
        );
        assert_eq!(
            verify(&mut superuser(), token),
            ("ok".into(), Some(key_id.clone()))
        );
        let actions: Vec<String> = c
            .query(
                "SELECT action || coalesce(':' || (detail->>'imported_from'), '') \
                 FROM apikey.audit_log WHERE key_id = $1 AND action IN ('imported', 'rehash') ORDER BY id",
                &[&key_id],
            )
            .expect("audit")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            actions,
            ["imported".to_string(), format!("rehash:{format}")]
        );
    }

    // No unpeppered digest of a used key is left: not in the tables, not in a dump.
    let dump = Command::new(pgbin("pg_dump"))
        .args(cli_args(
            &env_var("APIKEY_TEST_PGUSER"),
            &env_var("APIKEY_TEST_PGDATABASE"),
        ))
        .output()
        .expect("pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("apikey.imported_keys") || dump.contains("imported_keys"));
    assert!(!dump.contains(&digest), "the keypal digest is gone");
    for (token, ..) in &cases {
        assert!(!dump.contains(token.as_str()), "no token in a dump");
    }
}

/// Replaces the cluster's pepper file in place (same path, so the setting stays): `contents`
/// until the guard is dropped, then the original again. One test at a time.
struct PepperFileContents {
    path: String,
    original: Vec<u8>,
    _only_one: std::sync::MutexGuard<'static, ()>,
}

static PEPPER_FILE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl PepperFileContents {
    /// The pepper file with `line` added after the others.
    fn with_added(line: &str) -> Self {
        let only_one = PEPPER_FILE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let path = pepper_file_path();
        let original = std::fs::read(&path).expect("read the pepper file");
        let mut contents = original.clone();
        contents.extend_from_slice(format!("\n{line}\n").as_bytes());
        replace_file(&path, &contents);
        // A backend trusts the file it loaded for a second (core/src/pepper.rs).
        std::thread::sleep(std::time::Duration::from_millis(1100));
        PepperFileContents {
            path,
            original,
            _only_one: only_one,
        }
    }
}

impl Drop for PepperFileContents {
    fn drop(&mut self) {
        replace_file(&self.path, &self.original);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
}

/// Writes a sibling owned like `path` (the server's OS user, 0600), then renames it over.
fn replace_file(path: &str, contents: &[u8]) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).expect("stat the pepper file");
    let tmp = format!("{path}.{}", random_hex(4));
    std::fs::write(&tmp, contents).expect("write the new pepper file");
    std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid())).expect("chown");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename over the pepper file");
}

#[test]
fn a_par_pack_key_verifies_with_its_old_pepper_added_to_the_file() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let old_pepper = random_hex(32);
    let id = format!("mpk_{}", &random_hex(6));
    let secret = random_hex(32);
    let token = format!("{id}.{secret}");
    let hash = python(ARGON2ID_HMAC, &[&old_pepper, &secret]);
    let key_id = import(&mut c, &partner, &hash, "argon2id-hmac", Some(&id)).expect("import");

    assert_eq!(
        verify(&mut c, &token).0,
        "secret_mismatch",
        "without the old pepper in the file nothing proves it"
    );
    let _with_old_pepper = PepperFileContents::with_added(&old_pepper);
    let mut c = superuser();
    assert_eq!(verify(&mut c, &token), ("ok".into(), Some(key_id.clone())));
    let (after, fingerprint, lookup) = stored(&mut c, &key_id);
    assert!(after.starts_with("$argon2id$") && after != hash);
    assert!(!fingerprint.starts_with("imported:"));
    assert_eq!(lookup, format!("id:{id}"));
    assert_eq!(
        verify(&mut c, &format!("{id}.{}", random_hex(32))),
        ("secret_mismatch".into(), None)
    );
    let identity: Option<uuid::Uuid> = c
        .query_one(
            "SELECT apikey_current_partner() FROM apikey_verify($1)",
            &[&token],
        )
        .expect("identity")
        .get(0);
    assert_eq!(
        identity,
        Some(partner),
        "the identity a row-level policy sees"
    );
}

/// The DETAIL of a refusal (`argument: <name>`).
fn detail_of<T>(result: &Result<T, postgres::Error>) -> String {
    result
        .as_ref()
        .err()
        .and_then(|e| e.as_db_error())
        .and_then(|e| e.detail())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn imports_are_refused_with_clear_errors_and_leave_nothing_behind() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let token = format!("kp_{}", random_hex(24));
    let digest = python(SHA256, &[&token]);
    let bcrypt = python(BCRYPT, &[&token]);
    let keys = |c: &mut Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM apikey.keys WHERE partner_id = $1",
            &[&partner],
        )
        .expect("count")
        .get(0)
    };
    for (hash, format, lookup, code, argument) in [
        (digest.as_str(), "md5", None, "22023", "hash_format"),
        (digest.as_str(), "SHA256", None, "22023", "hash_format"),
        (digest.as_str(), "sha256", Some("kp_"), "22023", "lookup"),
        ("abc", "sha256", None, "22023", "stored_hash"),
        (&"é".repeat(40), "sha256", None, "22023", "stored_hash"),
        (bcrypt.as_str(), "bcrypt", None, "22023", "lookup"),
        (bcrypt.as_str(), "bcrypt", Some("kp"), "22023", "lookup"),
        (
            digest.as_str(),
            "bcrypt",
            Some("kp_x"),
            "22023",
            "stored_hash",
        ),
        (
            bcrypt.as_str(),
            "argon2id",
            Some("kp_x"),
            "22023",
            "stored_hash",
        ),
        (
            &"$".repeat(100_000),
            "argon2id",
            Some("kp_x"),
            "22023",
            "stored_hash",
        ),
    ] {
        let result = import(&mut c, &partner, hash, format, lookup);
        let detail = detail_of(&result);
        assert_eq!(sqlstate(result), code, "{format} {lookup:?}");
        assert!(
            detail.contains(argument),
            "{format}: names {argument}: {detail}"
        );
    }
    for (args, argument) in [
        (
            "NULL, $2, 'sha256', '{}', name => $1::uuid::text",
            "partner_id",
        ),
        ("$1, NULL, 'sha256', '{}', name => $2", "stored_hash"),
        ("$1, $2, NULL, '{}'", "hash_format"),
        ("$1, $2, 'sha256', NULL", "scopes"),
    ] {
        let sql = format!("SELECT apikey_import({args})");
        let result = c.query_one(&sql, &[&partner, &digest]);
        let detail = detail_of(&result);
        assert_eq!(sqlstate(result), "22004", "{argument}");
        assert!(detail.contains(argument), "names {argument}: {detail}");
    }
    assert_eq!(keys(&mut c), 0, "no key left by a refused import");

    let first = import(&mut c, &partner, &digest, "sha256", None).expect("first import");
    let again = import(&mut c, &partner, &digest.to_uppercase(), "sha256", None);
    let message = again
        .as_ref()
        .err()
        .and_then(|e| e.as_db_error())
        .map(|e| e.message().to_string());
    assert_eq!(sqlstate(again), "23505");
    assert!(
        message.as_deref().is_some_and(|m| m.contains(&first)),
        "names the key already imported: {message:?}"
    );
    assert_eq!(keys(&mut c), 1);

    // The tests of this file that find keys by a prefix all use 16 characters.
    import(&mut c, &partner, &bcrypt, "bcrypt", Some(&token[..16])).expect("a 16-character prefix");
    let shorter = import(&mut c, &partner, &bcrypt, "bcrypt", Some(&token[..12]));
    let detail = detail_of(&shorter);
    let message = shorter
        .as_ref()
        .err()
        .and_then(|e| e.as_db_error())
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert_eq!(sqlstate(shorter), "22023", "{message}");
    assert!(detail.contains("lookup"), "names lookup: {detail}");
    assert!(
        message.contains("first 16 characters"),
        "says the length: {message}"
    );
    assert_eq!(keys(&mut c), 2);

    let role = login_role(&mut c, "import_partner", &["apikey_partner"]);
    let refused = import(
        &mut connect(&role),
        &partner,
        &bcrypt,
        "bcrypt",
        Some("kp_xy"),
    );
    assert!(
        !format!("{refused:?}").contains(&token),
        "no token in an error"
    );
    assert_eq!(sqlstate(refused), "42501", "a partner may not import");
}

#[test]
fn imported_keys_follow_every_rule_of_a_native_key_and_rotate_to_a_native_one() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let token = format!("kp_{}", random_hex(24));
    let key_id =
        import(&mut c, &partner, &python(SHA256, &[&token]), "sha256", None).expect("import");
    let reasons = |c: &mut Client, scopes: &str| -> String {
        c.query_one(
            &format!("SELECT reason FROM apikey_verify($1, '{scopes}')"),
            &[&token],
        )
        .expect("verify")
        .get(0)
    };
    let events = |c: &mut Client| -> Vec<String> {
        c.query(
            // The worker writes key.credits_exhausted when it flushes: at no set moment.
            "SELECT type FROM apikey.events WHERE key_id = $1 \
             AND type <> 'key.credits_exhausted' ORDER BY created_at",
            &[&key_id],
        )
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert!(
        events(&mut c).is_empty(),
        "an import announces nothing: the partner has held the key all along"
    );
    assert_eq!(reasons(&mut c, "{orders:read}"), "ok");
    assert_eq!(reasons(&mut c, "{orders:write}"), "insufficient_scope");
    c.execute("SELECT apikey_set_credits($1, 1)", &[&key_id])
        .expect("a balance");
    assert_eq!(reasons(&mut c, "{}"), "ok");
    assert_eq!(reasons(&mut c, "{}"), "usage_exceeded");
    c.execute("SELECT apikey_set_credits($1, NULL)", &[&key_id])
        .expect("no balance");

    let rotated = c
        .query_one(
            "SELECT key_id, token FROM apikey_rotate($1, grace => interval '1 hour')",
            &[&key_id],
        )
        .expect("rotate an imported key");
    let (new_key, new_token): (String, String) = (rotated.get(0), rotated.get(1));
    assert!(
        new_token.starts_with(&format!("{new_key}_")),
        "the successor is a native key"
    );
    assert_eq!(verify(&mut c, &new_token), ("ok".into(), Some(new_key)));
    assert_eq!(
        verify(&mut c, &token).0,
        "ok",
        "the old token in its grace period"
    );
    c.execute("SELECT apikey_revoke($1)", &[&key_id])
        .expect("revoke");
    assert_eq!(verify(&mut c, &token).0, "revoked");
    assert_eq!(
        events(&mut c),
        ["key.rotated", "key.revoked"],
        "an imported key's changes are announced as a native key's"
    );
}

#[test]
fn a_typo_in_a_native_token_and_garbage_find_no_key_and_raise_nothing() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let token = format!("kp_{}", random_hex(24));
    import(&mut c, &partner, &python(SHA256, &[&token]), "sha256", None).expect("import");
    let native = issue(&mut c, partner, &[]);
    let mut typo = native.token.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'0' { b'1' } else { b'0' };
    let typo = String::from_utf8(typo).expect("ASCII");
    assert_eq!(verify(&mut c, &typo), ("malformed".into(), None));
    // Anything that finds no imported key is in no shape apikey knows.
    for garbage in [
        "kp_guess".to_string(),
        "a.b".to_string(),
        "x".repeat(512),
        "x".repeat(513),
        "with space".to_string(),
        "é".to_string(),
    ] {
        assert_eq!(
            verify(&mut c, &garbage),
            ("malformed".into(), None),
            "{garbage}"
        );
    }
    assert_eq!(verify(&mut c, &token).0, "ok", "the imported key itself");
}

#[test]
fn an_imported_key_verifies_through_the_shim() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let token = format!("mbk_live_{}", random_hex(20));
    let key_id = import(
        &mut c,
        &partner,
        &python(BCRYPT, &[&token]),
        "bcrypt",
        Some(&token[..16]),
    )
    .expect("import");
    let shim = apikey_tests::shim::Shim::start();
    for _ in 0..2 {
        let ok = shim.get_as(&token, "/v1/verify?scope=orders:read");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("x-apikey-key-id"), Some(key_id.as_str()));
    }
    let wrong = shim.get_as(&format!("{}zz", &token[..token.len() - 2]), "/v1/verify");
    assert_eq!(
        (wrong.status, wrong.reason()),
        (401, "secret_mismatch".to_string())
    );
    assert!(!shim.log().contains(&token), "no token in the shim's log");
}

#[test]
fn keys_are_imported_in_bulk_over_http_with_an_answer_for_each() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let operator = operator_key(&mut c);
    let tokens: Vec<String> = (0..3).map(|_| format!("kp_{}", random_hex(24))).collect();
    let digests: Vec<String> = tokens.iter().map(|t| python(SHA256, &[t])).collect();
    let shim = apikey_tests::shim::Shim::start();
    let key = |hash: &str, format: &str| {
        serde_json::json!({
            "partner_id": partner.to_string(), "stored_hash": hash, "hash_format": format,
            "scopes": ["orders:read"], "name": "moved over"
        })
    };
    let body = serde_json::json!({ "keys": [
        key(&digests[0], "sha256"),
        key(&digests[1], "sha256"),
        key(&digests[0], "sha256"),
        key(&digests[2], "md5"),
        key("not a hash", "sha256"),
    ]});
    let answer = shim.post_as(&operator.token, "/v1/keys/import", &body);
    assert_eq!(answer.status, 200, "{}", answer.json());
    let answer = answer.json();
    assert_eq!(answer["imported"], 2);
    let results = answer["results"].as_array().expect("results");
    assert_eq!(
        outcomes(&answer),
        [
            ("imported", None),
            ("imported", None),
            ("duplicate", Some("stored_hash")),
            ("refused", Some("hash_format")),
            ("refused", Some("stored_hash")),
        ]
    );
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i);
    }
    let first = results[0]["key_id"].as_str().expect("key_id");
    let ok = shim.get_as(&tokens[0], "/v1/verify?scope=orders:read");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-apikey-key-id"), Some(first));
    assert_eq!(
        shim.get_as(&tokens[2], "/v1/verify").reason(),
        "malformed",
        "a refused key was not imported"
    );

    // Every option of apikey_issue, each checked for its own key.
    let extra: Vec<String> = (0..5).map(|_| format!("kp_{}", random_hex(24))).collect();
    let with = |token: &str, options: serde_json::Value| {
        let mut k = key(&python(SHA256, &[token]), "sha256");
        for (name, value) in options.as_object().expect("options") {
            k[name] = value.clone();
        }
        k
    };
    let body_with_options = serde_json::json!({ "keys": [
        with(&extra[0], serde_json::json!({
            "allowed_cidrs": ["10.0.0.0/8"], "prefix": "mv", "credits": 5,
            "credits_refill_amount": 5, "credits_refill_interval": "1 day"
        })),
        with(&extra[1], serde_json::json!({ "allowed_cidrs": ["10.0.0.1/8"] })),
        with(&extra[2], serde_json::json!({ "credits": 5, "credits_refill_amount": 5,
                                            "credits_refill_interval": "fortnightly" })),
        with(&extra[3], serde_json::json!({ "prefix": "Not-A-Prefix" })),
        with(&extra[4], serde_json::json!({ "credits": -1 })),
    ]});
    let answer = shim.post_as(&operator.token, "/v1/keys/import", &body_with_options);
    assert_eq!(answer.status, 200, "{}", answer.json());
    let answer = answer.json();
    assert_eq!(
        outcomes(&answer),
        [
            ("imported", None),
            ("refused", Some("allowed_cidrs")),
            ("refused", Some("credits_refill_interval")),
            ("refused", Some("prefix")),
            ("refused", Some("credits")),
        ],
        "{answer}"
    );
    let with_options = answer["results"][0]["key_id"].as_str().expect("key_id");
    let row = c
        .query_one(
            "SELECT k.allowed_cidrs::text[], b.remaining, b.refill_amount, b.refill_interval::text \
             FROM apikey.keys k, apikey_credits_state(k.key_id) b WHERE k.key_id = $1",
            &[&with_options],
        )
        .expect("the imported key");
    assert_eq!(row.get::<_, Vec<String>>(0), ["10.0.0.0/8"]);
    assert_eq!(
        (row.get::<_, i64>(1), row.get::<_, Option<i64>>(2)),
        (5, Some(5))
    );
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("1 day"));
    assert_eq!(
        shim.get_as(&extra[0], "/v1/verify").reason(),
        "ip_not_allowed",
        "the shim's client is outside the key's network"
    );
    let rotated: String = c
        .query_one("SELECT key_id FROM apikey_rotate($1)", &[&with_options])
        .expect("rotate")
        .get(0);
    assert!(rotated.starts_with("mv_"), "{rotated} has the prefix given");
    for token in &extra[1..] {
        assert_eq!(shim.get_as(token, "/v1/verify").reason(), "malformed");
    }

    let too_many = serde_json::json!({
        "keys": (0..1001).map(|i| key(&format!("{i:064x}"), "sha256")).collect::<Vec<_>>()
    });
    let refused = shim.post_as(&operator.token, "/v1/keys/import", &too_many);
    assert_eq!(refused.status, 422, "{}", refused.json());
    assert_eq!(refused.json()["field"], "keys");
    let thousand = serde_json::json!({
        "keys": (0..1000).map(|i| key(&format!("{:064x}", i + 7_000_000), "sha256")).collect::<Vec<_>>()
    });
    let answer = shim.post_as(&operator.token, "/v1/keys/import", &thousand);
    assert_eq!(answer.status, 200, "a thousand keys fit in one request");
    assert_eq!(answer.json()["imported"], 1000);

    let partner_key = issue(&mut c, partner, &["keys:manage"]);
    let forbidden = shim.post_as(&partner_key.token, "/v1/keys/import", &body);
    assert_eq!(
        (forbidden.status, forbidden.reason()),
        (403, "forbidden".to_string())
    );
    for digest in &digests {
        assert!(
            !shim.log().contains(digest.as_str()),
            "no stored hash in the log"
        );
    }
}

/// `docs/examples/import-par-pack.sql`, as the migration guide shows it, against the PAR
/// pack's tables in a database of their own, with keys hashed the PAR pack's way.
#[test]
fn the_migration_guide_moves_a_par_pack_installation_in_one_statement() {
    const STATEMENT: &str = include_str!("../../docs/examples/import-par-pack.sql");
    const GUIDE: &str = include_str!("../../docs/src/migrating.md");
    assert!(
        GUIDE.contains("```sql\n{{#include ../examples/import-par-pack.sql}}\n```"),
        "docs/src/migrating.md must include docs/examples/import-par-pack.sql"
    );
    let mut dbs = Databases::default();
    let db = dbs.create("apikey_par_pack");
    let mut c = connect_to(&env_var("APIKEY_TEST_PGUSER"), &db);
    c.batch_execute(
        "SET client_min_messages = warning; CREATE EXTENSION apikey;
         CREATE TABLE partners (
           partner_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
           name TEXT NOT NULL,
           contact_email TEXT,
           active BOOLEAN NOT NULL DEFAULT TRUE,
           created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
           updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
         CREATE TABLE api_keys (
           key_id VARCHAR(64) PRIMARY KEY,
           partner_id UUID NOT NULL REFERENCES partners(partner_id),
           secret_hash TEXT NOT NULL,
           scopes TEXT NOT NULL,
           status VARCHAR(16) NOT NULL DEFAULT 'active',
           not_before TIMESTAMPTZ NOT NULL DEFAULT now(),
           not_after TIMESTAMPTZ,
           rate_per_minute INT NOT NULL DEFAULT 300,
           created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
           last_used_at TIMESTAMPTZ);",
    )
    .expect("the PAR pack's tables");
    let par_pepper = random_hex(32);
    let partner = |c: &mut Client, name: &str, active: bool| -> uuid::Uuid {
        c.query_one(
            "INSERT INTO partners (name, contact_email, active) VALUES ($1, $1 || '@example.com', $2) \
             RETURNING partner_id",
            &[&name, &active],
        )
        .expect("a PAR partner")
        .get(0)
    };
    let (acme, globex, gone) = (
        partner(&mut c, &unique("acme"), true),
        partner(&mut c, &unique("globex"), true),
        partner(&mut c, &unique("gone"), false),
    );
    // issueApiKey: keyId `mpk_<12 hex>`, a 64-hex secret, token `<keyId>.<secret>`.
    let mut add = |partner: uuid::Uuid, scopes: &str, status: &str, not_after: &str| -> String {
        let key_id = format!("mpk_{}", random_hex(6));
        let secret = random_hex(32);
        let hash = python(ARGON2ID_HMAC, &[&par_pepper, &secret]);
        c.execute(
            &format!(
                "INSERT INTO api_keys (key_id, partner_id, secret_hash, scopes, status, not_after) \
                 VALUES ($1, $2, $3, $4, $5, {not_after})"
            ),
            &[&key_id, &partner, &hash, &scopes, &status],
        )
        .expect("a PAR key");
        format!("{key_id}.{secret}")
    };
    let live = add(acme, "assets:read,status:update", "active", "NULL");
    let expiring = add(globex, "audit:read", "active", "now() + interval '30 days'");
    let revoked = add(acme, "assets:read", "revoked", "NULL");
    let expired = add(globex, "assets:read", "active", "now() - interval '1 day'");
    let inactive = add(gone, "assets:read", "active", "NULL");

    let _with_par_pepper = PepperFileContents::with_added(&par_pepper);
    let mut c = connect_to(&env_var("APIKEY_TEST_PGUSER"), &db);
    let moved: Vec<(String, String)> = c
        .query(STATEMENT, &[])
        .expect("the guide's statement")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut moved_ids: Vec<&str> = moved.iter().map(|(par, _)| par.as_str()).collect();
    moved_ids.sort_unstable();
    let mut expected = [id_of(&live), id_of(&expiring)];
    expected.sort_unstable();
    assert_eq!(
        moved_ids, expected,
        "the live keys of active partners, nothing else"
    );

    let check = |c: &mut Client, token: &str, scopes: &[&str]| -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        c.query_one(
            "SELECT reason FROM apikey_verify($1, $2)",
            &[&token, &scopes],
        )
        .expect("verify")
        .get(0)
    };
    assert_eq!(
        check(&mut c, &live, &["assets:read", "status:update"]),
        "ok"
    );
    assert_eq!(check(&mut c, &live, &["assets:mint"]), "insufficient_scope");
    assert_eq!(check(&mut c, &expiring, &["audit:read"]), "ok");
    for left_behind in [&revoked, &expired, &inactive] {
        assert_eq!(
            check(&mut c, left_behind, &[]),
            "malformed",
            "{left_behind}"
        );
    }
    let partners: Vec<String> = c
        .query(
            "SELECT p.name FROM apikey.partners p JOIN apikey.keys k USING (partner_id) \
             ORDER BY p.name",
            &[],
        )
        .expect("the moved partners")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(partners.len(), 2, "{partners:?}");
    assert!(
        partners
            .iter()
            .all(|name| name.starts_with("acme") || name.starts_with("globex")),
        "{partners:?}"
    );
}

/// The PAR key id of a `<keyId>.<secret>` token.
fn id_of(token: &str) -> &str {
    token.split_once('.').map_or(token, |(id, _)| id)
}

/// Each key's outcome in a bulk import's answer, with the field a refusal names.
fn outcomes(answer: &serde_json::Value) -> Vec<(&str, Option<&str>)> {
    answer["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|r| (r["outcome"].as_str().unwrap_or(""), r["field"].as_str()))
                .collect()
        })
        .unwrap_or_default()
}
