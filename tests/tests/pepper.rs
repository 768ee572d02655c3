//! The pepper file (`apikey.pepper_file`) and the Argon2id cost settings: misconfiguration is
//! a clear error that never echoes a pepper, the file format, pepper rotation with re-hashing,
//! and re-hashing when the Argon2id parameters change.
//!
//! `apikey.pepper_file` is cluster-wide, so every test here holds `CLUSTER_PEPPER` and puts
//! the original setting back (through `PepperConfig`'s `Drop`) even when an assertion fails.

use apikey_tests::postgres::Client;
use apikey_tests::*;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const GUC: &str = "apikey.pepper_file";
const CONFIG_FILE_ERROR: &str = "F0000";

static CLUSTER_PEPPER: Mutex<()> = Mutex::new(());

/// Serialises the tests of this file; a test that failed while holding the lock must not
/// fail all the others with a poisoned mutex.
fn exclusive() -> MutexGuard<'static, ()> {
    CLUSTER_PEPPER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 64 hex characters from the OS CSPRNG: a valid pepper no other test uses.
fn random_pepper() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn show_pepper_file(c: &mut Client) -> String {
    c.query_one(&format!("SHOW {GUC}"), &[])
        .expect("SHOW apikey.pepper_file as superuser")
        .get(0)
}

/// `ALTER SYSTEM SET apikey.pepper_file`, reload, and wait until new sessions see `value`.
fn set_pepper_file(value: &str) -> Result<(), String> {
    let mut c = superuser();
    // Two statements: ALTER SYSTEM cannot run in the implicit transaction of a batch.
    c.batch_execute(&format!(
        "ALTER SYSTEM SET {GUC} = {}",
        quote_literal(value)
    ))
    .and_then(|_| c.batch_execute("SELECT pg_reload_conf()"))
    .map_err(|e| format!("ALTER SYSTEM SET {GUC} and reload: {e:?}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = show_pepper_file(&mut superuser());
        if seen == value {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "after pg_reload_conf() new sessions still see {GUC} = {seen:?}, not {value:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A backend trusts the pepper file it loaded for up to a second before looking at it again
/// (core/src/pepper.rs, RECHECK_AFTER); a rewritten file is in force after that.
fn wait_for_recheck() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// Owns the pepper files a test writes and the cluster's `apikey.pepper_file` setting while
/// the test runs: on drop the files are removed and the original setting is restored.
struct PepperConfig {
    dir: PathBuf,
    owner: (u32, u32),
    files: Vec<PathBuf>,
    _lock: MutexGuard<'static, ()>,
}

impl PepperConfig {
    fn new() -> Self {
        let lock = exclusive();
        let original = PathBuf::from(pepper_file_path());
        // The original file is owned by the server's OS user, in a directory the server can
        // read: test files go next to it, with the same owner.
        let meta = std::fs::metadata(&original).expect("stat the cluster's pepper file");
        PepperConfig {
            dir: original
                .parent()
                .expect("pepper file has a directory")
                .to_path_buf(),
            owner: (meta.uid(), meta.gid()),
            files: Vec::new(),
            _lock: lock,
        }
    }

    fn fresh_path(&mut self, label: &str) -> PathBuf {
        let path = self.dir.join(unique(&format!("test-pepper-{label}")));
        self.files.push(path.clone());
        path
    }

    /// Writes `contents` to a new file owned by the server's OS user with `mode`; returns
    /// its path.
    fn write(&mut self, label: &str, contents: &str, mode: u32) -> String {
        let path = self.fresh_path(label);
        self.write_at(&path, contents, mode);
        path.to_str().expect("UTF-8 path").to_string()
    }

    /// Replaces the file at `path` atomically (write a sibling, then rename), as an operator
    /// rotating a pepper would.
    fn replace(&mut self, path: &str, contents: &str) {
        let tmp = self.fresh_path("tmp");
        self.write_at(&tmp, contents, 0o600);
        std::fs::rename(&tmp, path).expect("rename the new pepper file into place");
    }

    fn write_at(&self, path: &Path, contents: &str, mode: u32) {
        std::fs::write(path, contents).expect("write pepper file");
        std::os::unix::fs::chown(path, Some(self.owner.0), Some(self.owner.1))
            .expect("chown pepper file to the server's OS user");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .expect("chmod pepper file");
    }

    fn restore(&self) -> Result<(), String> {
        set_pepper_file(&pepper_file_path())
    }
}

impl Drop for PepperConfig {
    fn drop(&mut self) {
        // Never panic here: this runs while a failed assertion unwinds.
        if let Err(e) = self.restore() {
            eprintln!("could not restore {GUC}: {e}");
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file).or_else(|_| std::fs::remove_dir(file));
        }
    }
}

fn try_issue(c: &mut Client, partner: Uuid) -> Result<(String, String), postgres::Error> {
    let scopes = vec!["pepper:test".to_string()];
    c.query_one(
        "SELECT key_id, token FROM apikey_issue($1, $2)",
        &[&partner, &scopes],
    )
    .map(|row| (row.get(0), row.get(1)))
}

/// (secret_hash, pepper_fingerprint) of a key.
fn stored_hash(c: &mut Client, key_id: &str) -> (String, String) {
    let row = c
        .query_one(
            "SELECT secret_hash, pepper_fingerprint FROM apikey.keys WHERE key_id = $1",
            &[&key_id],
        )
        .expect("read the key row");
    (row.get(0), row.get(1))
}

fn rehash_rows(c: &mut Client, key_id: &str) -> Vec<serde_json::Value> {
    c.query(
        "SELECT detail FROM apikey.audit_log WHERE action = 'rehash' AND key_id = $1 ORDER BY id",
        &[&key_id],
    )
    .expect("read rehash audit rows")
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// Asserts `result` failed with F0000 and a message naming the GUC and none of `peppers`.
fn assert_config_error<T: std::fmt::Debug>(
    case: &str,
    what: &str,
    result: Result<T, postgres::Error>,
    peppers: &[&str],
) -> String {
    let err = match result {
        Ok(v) => panic!("{case}: {what} succeeded ({v:?}) but the pepper file is unusable"),
        Err(e) => e,
    };
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{case}: {what}: not a database error: {err}"));
    assert_eq!(
        db.code().code(),
        CONFIG_FILE_ERROR,
        "{case}: {what}: {}",
        db.message()
    );
    let text = format!("{} {:?} {:?}", db.message(), db.detail(), db.hint());
    assert!(
        text.contains(GUC),
        "{case}: {what}: message does not name {GUC}: {text}"
    );
    for pepper in peppers {
        assert!(
            !text.contains(pepper),
            "{case}: {what}: message contains the pepper: {text}"
        );
    }
    db.message().to_string()
}

#[test]
fn misconfigured_pepper_is_a_config_error_that_names_the_guc_and_never_the_pepper() {
    let mut config = PepperConfig::new();
    let mut admin = superuser();
    let partner = create_partner(&mut admin);
    let key = issue(&mut admin, partner, &["pepper:test"]);

    let good = random_pepper();
    let short = &random_pepper()[..31];
    let missing = config
        .fresh_path("missing")
        .to_str()
        .expect("UTF-8")
        .to_string();
    let directory = config.fresh_path("dir");
    std::fs::create_dir(&directory).expect("create a directory");
    let directory = directory.to_str().expect("UTF-8").to_string();
    let not_server_readable = {
        let path = config.write("root-owned", &format!("{good}\n"), 0o600);
        std::os::unix::fs::chown(&path, Some(0), Some(0)).expect("chown to root");
        path
    };
    let cases: Vec<(&str, String)> = vec![
        ("GUC set to ''", String::new()),
        ("GUC set to blanks", "   ".to_string()),
        ("file missing", missing),
        ("path is a directory", directory),
        ("file not readable by the server", not_server_readable),
        (
            "mode 0640",
            config.write("0640", &format!("{good}\n"), 0o640),
        ),
        (
            "mode 0644",
            config.write("0644", &format!("{good}\n"), 0o644),
        ),
        (
            "mode 0604",
            config.write("0604", &format!("{good}\n"), 0o604),
        ),
        (
            "only comments and blank lines",
            config.write("comments", &format!("# {good}\n\n   \n#\n"), 0o600),
        ),
        (
            "pepper of 31 bytes",
            config.write("short", &format!("{short}\n"), 0o600),
        ),
        (
            "second pepper of 31 bytes",
            config.write("short2", &format!("{good}\n{short}\n"), 0o600),
        ),
    ];

    let peppers = [good.as_str(), short];
    let mut messages = Vec::new();
    for (case, value) in &cases {
        set_pepper_file(value).expect("switch apikey.pepper_file");
        let mut c = superuser();
        messages.push(assert_config_error(
            case,
            "apikey_issue",
            try_issue(&mut c, partner),
            &peppers,
        ));
        messages.push(assert_config_error(
            case,
            "apikey_verify",
            try_verify(&mut c, Some(&key.token), &[], None),
            &peppers,
        ));
        // Tokens that are rejected on their shape never need the pepper.
        assert_eq!(
            verify(&mut c, None, &[], None).reason,
            "missing_key",
            "{case}"
        );
        assert_eq!(
            verify(&mut c, Some(""), &[], None).reason,
            "missing_key",
            "{case}"
        );
        let malformed = format!("{}x", key.token);
        assert_eq!(
            verify(&mut c, Some(&malformed), &[], None).reason,
            "malformed",
            "{case}"
        );
    }

    // Back to the real pepper: the key issued before still verifies, nothing was changed.
    config.restore().expect("restore apikey.pepper_file");
    assert_eq!(reason(&mut superuser(), &key.token), "ok");

    // The errors were logged (the ERROR line), but no pepper went with them.
    let log = std::fs::read_to_string(server_log_path()).expect("read the server log");
    let last = messages.last().expect("at least one error");
    assert!(
        log.contains(last.as_str()),
        "the server log lacks the error {last:?}"
    );
    for pepper in peppers {
        assert!(!log.contains(pepper), "the server log contains a pepper");
    }
}

#[test]
fn pepper_file_format_trims_lines_and_skips_comments() {
    let mut config = PepperConfig::new();
    let mut admin = superuser();
    let partner = create_partner(&mut admin);
    // Exactly 32 bytes is long enough.
    let pepper = random_pepper()[..32].to_string();

    let decorated = config.write(
        "decorated",
        &format!("# apikey pepper, rotated today\n\n   \t{pepper}  \t\r\n\n# end\n"),
        0o600,
    );
    set_pepper_file(&decorated).expect("use the decorated file");
    let key = issue(&mut superuser(), partner, &["pepper:test"]);
    assert_eq!(reason(&mut superuser(), &key.token), "ok");
    let before = stored_hash(&mut admin, &key.key_id);

    // The same pepper as a bare line is the same pepper: same fingerprint, no re-hash.
    let bare = config.write("bare", &pepper, 0o600);
    set_pepper_file(&bare).expect("use the bare file");
    assert_eq!(reason(&mut superuser(), &key.token), "ok");
    assert_eq!(stored_hash(&mut admin, &key.key_id), before);
    assert!(rehash_rows(&mut admin, &key.key_id).is_empty());

    // Whitespace inside the line is part of the pepper: this one differs.
    let spaced = format!("{} {}", &pepper[..16], &pepper[16..]);
    let other = config.write("spaced", &format!("{spaced}\n"), 0o600);
    set_pepper_file(&other).expect("use the other file");
    assert_eq!(reason(&mut superuser(), &key.token), "secret_mismatch");
}

#[test]
fn rotating_the_pepper_keeps_old_keys_and_rehashes_them_on_success() {
    let mut config = PepperConfig::new();
    let mut admin = superuser();
    let partner = create_partner(&mut admin);
    let (old, new) = (random_pepper(), random_pepper());

    let path = config.write("rotation", &format!("{old}\n"), 0o600);
    set_pepper_file(&path).expect("use the rotation file");
    // A long-lived session, as in a connection pool: it must notice the file changing.
    let mut pooled = superuser();
    let first = issue(&mut pooled, partner, &["pepper:test"]);
    let never_verified = issue(&mut pooled, partner, &["pepper:test"]);
    let cached = issue(&mut pooled, partner, &["pepper:test"]);
    let (_, old_fingerprint) = stored_hash(&mut admin, &first.key_id);
    assert_eq!(
        stored_hash(&mut admin, &never_verified.key_id).1,
        old_fingerprint
    );
    // Proves `cached` in this session's proof cache under the old pepper.
    assert_eq!(reason(&mut pooled, &cached.token), "ok");
    assert!(rehash_rows(&mut admin, &cached.key_id).is_empty());

    // Step 1: the new pepper goes first, the old one stays.
    config.replace(&path, &format!("# new\n{new}\n# old\n{old}\n"));
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .expect("reload");
    wait_for_recheck();
    let (old_hash, _) = stored_hash(&mut admin, &first.key_id);
    assert_eq!(reason(&mut pooled, &first.token), "ok");
    let (new_hash, new_fingerprint) = stored_hash(&mut admin, &first.key_id);
    assert_ne!(
        new_fingerprint, old_fingerprint,
        "re-hashed with the newest pepper"
    );
    assert_ne!(new_hash, old_hash);
    let rehashes = rehash_rows(&mut admin, &first.key_id);
    assert_eq!(rehashes.len(), 1, "one rehash audit row: {rehashes:?}");
    assert_eq!(rehashes[0]["pepper_fingerprint"], new_fingerprint.as_str());
    // Re-hashed once: the next success changes nothing.
    assert_eq!(reason(&mut superuser(), &first.token), "ok");
    assert_eq!(
        stored_hash(&mut admin, &first.key_id),
        (new_hash, new_fingerprint.clone())
    );
    assert_eq!(rehash_rows(&mut admin, &first.key_id).len(), 1);
    // New keys use the newest pepper.
    let fresh = issue(&mut superuser(), partner, &["pepper:test"]);
    assert_eq!(stored_hash(&mut admin, &fresh.key_id).1, new_fingerprint);
    assert_eq!(
        stored_hash(&mut admin, &never_verified.key_id).1,
        old_fingerprint
    );

    // Step 2: the old pepper is removed.
    config.replace(&path, &format!("{new}\n"));
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .expect("reload");
    wait_for_recheck();
    for session in [&mut pooled, &mut superuser()] {
        assert_eq!(reason(session, &first.token), "ok", "re-hashed key");
        assert_eq!(
            reason(session, &fresh.token),
            "ok",
            "key issued after the rotation"
        );
        // Its pepper is gone: it can never verify again, not even from a warm proof cache.
        let v = verify(session, Some(&never_verified.token), &[], None);
        assert_eq!((v.valid, v.reason.as_str()), (false, "secret_mismatch"));
        assert_eq!(v.partner_id, None);
        let v = verify(session, Some(&cached.token), &[], None);
        assert_eq!((v.valid, v.reason.as_str()), (false, "secret_mismatch"));
    }
    assert_eq!(
        stored_hash(&mut admin, &never_verified.key_id).1,
        old_fingerprint
    );
}

#[test]
fn changed_argon2_parameters_rehash_on_the_next_success() {
    let _config = PepperConfig::new();
    let mut admin = superuser();
    let partner = create_partner(&mut admin);
    let set_params = |c: &mut Client, m: u32, t: u32, p: u32| {
        c.batch_execute(&format!(
            "SET apikey.argon2_memory_kib = {m}; SET apikey.argon2_iterations = {t}; \
             SET apikey.argon2_parallelism = {p};"
        ))
        .expect("superuser may set the Argon2id GUCs per session");
    };
    let params_of = |phc: &str| {
        phc.split('$')
            .nth(3)
            .unwrap_or_else(|| panic!("not a PHC string: {phc}"))
            .to_string()
    };

    let mut cheap = superuser();
    set_params(&mut cheap, 64, 1, 1);
    let key = issue(&mut cheap, partner, &["pepper:test"]);
    let (hash, fingerprint) = stored_hash(&mut admin, &key.key_id);
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert_eq!(params_of(&hash), "m=64,t=1,p=1");
    // Same parameters: nothing to re-hash.
    assert_eq!(reason(&mut cheap, &key.token), "ok");
    assert_eq!(stored_hash(&mut admin, &key.key_id).0, hash);
    assert!(rehash_rows(&mut admin, &key.key_id).is_empty());

    let mut other = superuser();
    set_params(&mut other, 256, 3, 2);
    assert_eq!(reason(&mut other, &key.token), "ok");
    let (hash, same_fingerprint) = stored_hash(&mut admin, &key.key_id);
    assert_eq!(params_of(&hash), "m=256,t=3,p=2");
    assert_eq!(same_fingerprint, fingerprint, "same pepper");
    let rows = rehash_rows(&mut admin, &key.key_id);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let detail = &rows[0];
    assert_eq!(
        ["memory_kib", "iterations", "parallelism"].map(|k| detail[k].as_u64()),
        [Some(256), Some(3), Some(2)],
        "{detail}"
    );
    assert_eq!(reason(&mut other, &key.token), "ok");
    assert_eq!(
        rehash_rows(&mut admin, &key.key_id).len(),
        1,
        "no second re-hash"
    );

    // A session with the defaults (19456 KiB, 2 iterations, 1 lane) upgrades it again.
    let mut defaults = superuser();
    assert_eq!(reason(&mut defaults, &key.token), "ok");
    assert_eq!(
        params_of(&stored_hash(&mut admin, &key.key_id).0),
        "m=19456,t=2,p=1"
    );
    assert_eq!(rehash_rows(&mut admin, &key.key_id).len(), 2);

    // The old, cheaper setting still verifies the upgraded key (and downgrades it: the
    // current settings always win).
    assert_eq!(reason(&mut cheap, &key.token), "ok");
    assert_eq!(
        params_of(&stored_hash(&mut admin, &key.key_id).0),
        "m=64,t=1,p=1"
    );

    // Lowering the cost is a superuser's decision only.
    let plain = login_role(&mut admin, "argon_plain", &["apikey_admin"]);
    let mut plain = connect(&plain);
    for (guc, value) in [
        ("argon2_memory_kib", 64),
        ("argon2_iterations", 1),
        ("argon2_parallelism", 1),
    ] {
        assert_eq!(
            sqlstate(plain.batch_execute(&format!("SET apikey.{guc} = {value}"))),
            "42501",
            "SET apikey.{guc} by a non-superuser"
        );
    }
}

#[test]
fn the_pepper_setting_is_a_superuser_secret() {
    let mut admin = superuser();
    let shown_to = |c: &mut Client| -> i64 {
        c.query_one("SELECT count(*) FROM pg_settings WHERE name = $1", &[&GUC])
            .expect("pg_settings")
            .get(0)
    };
    let in_show_all = |c: &mut Client| -> bool {
        c.simple_query("SHOW ALL")
            .expect("SHOW ALL")
            .iter()
            .any(|m| matches!(m, postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(GUC)))
    };
    // The checks below mean something only because a superuser does see the setting.
    assert_eq!(shown_to(&mut admin), 1);
    assert!(in_show_all(&mut admin));

    for groups in [
        &["apikey_admin"][..],
        &["apikey_partner"],
        &["apikey_verifier"],
        &[],
    ] {
        let role = login_role(&mut admin, "pepper_reader", groups);
        let mut c = connect(&role);
        for statement in [
            format!("SHOW {GUC}"),
            format!("SELECT current_setting('{GUC}')"),
            format!("SELECT current_setting('{GUC}', true)"),
            format!("ALTER SYSTEM SET {GUC} = '/tmp/elsewhere'"),
        ] {
            assert_eq!(
                sqlstate(c.batch_execute(&statement)),
                "42501",
                "{statement} as a member of {groups:?}"
            );
        }
        // A SIGHUP setting cannot be changed in a session at all.
        assert_eq!(
            sqlstate(c.batch_execute(&format!("SET {GUC} = '/tmp/elsewhere'"))),
            "55P02",
            "SET as a member of {groups:?}"
        );
        assert_eq!(shown_to(&mut c), 0, "pg_settings for {groups:?}");
        assert!(!in_show_all(&mut c), "SHOW ALL for {groups:?}");
    }
}
