//! Roles, grants and row-level security, exercised with real LOGIN roles: what PUBLIC,
//! `apikey_verifier`, `apikey_admin` and `apikey_partner` may call and read, that powers
//! follow the outer user (`SET ROLE`), that the verified identity is per transaction and
//! cannot be spoofed, and that applications can use it in their own policies.
//!
//! Every test makes its own partners, keys and roles, so they run in parallel with each
//! other and with the other test files against one cluster.

use apikey_tests::postgres::types::ToSql;
use apikey_tests::postgres::{self, Client, Row};
use apikey_tests::*;

const ADMIN: &str = "apikey_admin";
const VERIFIER: &str = "apikey_verifier";
const PARTNER: &str = "apikey_partner";

/// Every relation of schema `apikey` a client might try to read.
const RELATIONS: [&str; 4] = [
    "apikey.partners",
    "apikey.keys",
    "apikey.audit_log",
    "apikey.key_info",
];

/// The columns of `apikey.keys` that no role but the owner may read.
const SECRET_COLUMNS: [&str; 2] = ["secret_hash", "pepper_fingerprint"];

const INSUFFICIENT_PRIVILEGE: &str = "42501";
const NO_DATA_FOUND: &str = "P0002";

/// Two partners with keys, made by the superuser; `su` stays open for checks.
struct Fixture {
    su: Client,
    a: Uuid,
    b: Uuid,
    /// Partner A's key with `keys:manage`.
    a_manager: Issued,
    /// Partner A's key without `keys:manage`.
    a_reader: Issued,
    /// A further key of partner A, for the managers to act on.
    a_spare: Issued,
    /// Partner B's key with `keys:manage`.
    b_manager: Issued,
}

fn fixture() -> Fixture {
    let mut su = superuser();
    let a = create_partner(&mut su);
    let b = create_partner(&mut su);
    let a_manager = issue(&mut su, a, &["keys:manage"]);
    let a_reader = issue(&mut su, a, &["orders:read"]);
    let a_spare = issue(&mut su, a, &["orders:write"]);
    let b_manager = issue(&mut su, b, &["keys:manage"]);
    Fixture {
        su,
        a,
        b,
        a_manager,
        a_reader,
        a_spare,
        b_manager,
    }
}

impl Fixture {
    /// A fresh LOGIN role that is a member of `member_of`, and a connection as it.
    fn login(&mut self, prefix: &str, member_of: &[&str]) -> (String, Client) {
        let name = login_role(&mut self.su, prefix, member_of);
        let client = connect(&name);
        (name, client)
    }

    /// Partner A's key ids, sorted.
    fn a_key_ids(&self) -> Vec<String> {
        sorted(vec![
            self.a_manager.key_id.clone(),
            self.a_reader.key_id.clone(),
            self.a_spare.key_id.clone(),
        ])
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Runs `f` inside `BEGIN` ... `COMMIT` (a COMMIT of a failed transaction rolls it back).
fn in_tx<T>(c: &mut Client, f: impl FnOnce(&mut Client) -> T) -> T {
    c.batch_execute("BEGIN").expect("BEGIN");
    let out = f(c);
    c.batch_execute("COMMIT").expect("COMMIT");
    out
}

/// Runs `f` in a transaction that first verified `token`, so `f` acts with its identity.
fn as_verified<T>(c: &mut Client, token: &str, f: impl FnOnce(&mut Client) -> T) -> T {
    in_tx(c, |c| {
        let verdict = verify(c, Some(token), &[], None);
        assert!(verdict.valid, "the fixture's token verifies: {verdict:?}");
        f(c)
    })
}

/// Runs `sql` in a savepoint so that its failure leaves the surrounding transaction (and
/// the identity it verified) usable. Only inside a transaction.
fn attempt(
    c: &mut Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, postgres::Error> {
    c.batch_execute("SAVEPOINT attempt")
        .expect("SAVEPOINT (attempt runs inside a transaction)");
    let result = c.query(sql, params);
    let cleanup = match result {
        Ok(_) => "RELEASE SAVEPOINT attempt",
        Err(_) => "ROLLBACK TO SAVEPOINT attempt; RELEASE SAVEPOINT attempt",
    };
    c.batch_execute(cleanup).expect("end the savepoint");
    result
}

/// Asserts that every statement fails with `code`; `who` names the caller in messages.
fn assert_all_fail(c: &mut Client, statements: &[String], code: &str, who: &str) {
    for sql in statements {
        let result = attempt(c, sql, &[]);
        let got = match &result {
            Ok(rows) => panic!(
                "{who}: `{sql}` must fail with {code}, but returned {} row(s)",
                rows.len()
            ),
            Err(e) => e.code().map(|s| s.code().to_string()),
        };
        assert_eq!(
            got.as_deref(),
            Some(code),
            "{who}: `{sql}` failed with {result:?}"
        );
    }
}

/// The calls only an admin may make: create and (de)activate partners, issue keys. Key ids
/// and uuids are safe in SQL text (they are `[A-Za-z0-9_]` / hex); tokens never are, and
/// are always bind parameters here.
fn admin_only_calls(partner: Uuid) -> Vec<String> {
    vec![
        format!("SELECT apikey_partner_create('{}')", unique("partner")),
        format!("SELECT apikey_partner_set_active('{partner}', false)"),
        format!("SELECT * FROM apikey_issue('{partner}', '{{orders:read}}')"),
    ]
}

/// Calls of every management function.
fn management_calls(partner: Uuid, key_id: &str) -> Vec<String> {
    let mut calls = admin_only_calls(partner);
    calls.extend(key_calls(key_id));
    calls
}

/// The calls a partner may make on its own keys: rotate, revoke, enable/disable.
fn key_calls(key_id: &str) -> Vec<String> {
    vec![
        format!("SELECT * FROM apikey_rotate('{key_id}')"),
        format!("SELECT apikey_revoke('{key_id}')"),
        format!("SELECT apikey_set_enabled('{key_id}', false)"),
    ]
}

/// Every `apikey_*` function, called with harmless arguments.
fn every_function_call(partner: Uuid, key_id: &str) -> Vec<String> {
    let mut calls = management_calls(partner, key_id);
    calls.extend([
        "SELECT * FROM apikey_verify('ak_live_not_a_token')".to_string(),
        "SELECT apikey_has_scope('{orders:read}', 'orders:read')".to_string(),
        "SELECT apikey_current_partner()".to_string(),
        "SELECT apikey_current_key()".to_string(),
        "SELECT apikey_current_scopes()".to_string(),
        "SELECT apikey_require_scope('orders:read')".to_string(),
    ]);
    calls
}

fn reads_of(relations: &[&str]) -> Vec<String> {
    relations
        .iter()
        .map(|r| format!("SELECT * FROM {r} LIMIT 1"))
        .collect()
}

fn secret_column_reads() -> Vec<String> {
    SECRET_COLUMNS
        .iter()
        .map(|col| format!("SELECT {col} FROM apikey.keys LIMIT 1"))
        .collect()
}

/// The key ids this connection can see in `apikey.key_info`, sorted.
fn visible_key_ids(c: &mut Client) -> Vec<String> {
    c.query("SELECT key_id FROM apikey.key_info ORDER BY key_id", &[])
        .expect("read apikey.key_info")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The `partner_id` of every row of `relation` this connection can see.
fn visible_partner_ids(c: &mut Client, relation: &str) -> Vec<Option<Uuid>> {
    c.query(&format!("SELECT partner_id FROM {relation}"), &[])
        .unwrap_or_else(|e| panic!("read {relation}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The `apikey_*` functions `role` may execute, sorted by name.
fn executable_functions(su: &mut Client, role: &str) -> Vec<String> {
    su.query(
        "SELECT p.proname::text FROM pg_proc p \
         JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass \
         JOIN pg_extension e ON e.oid = d.refobjid AND d.deptype = 'e' \
         WHERE e.extname = 'apikey' AND has_function_privilege($1, p.oid, 'EXECUTE') \
         ORDER BY 1",
        &[&role],
    )
    .expect("list the extension's functions")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn count(c: &mut Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> i64 {
    c.query_one(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

fn current_partner(c: &mut Client) -> Option<Uuid> {
    c.query_one("SELECT apikey_current_partner()", &[])
        .expect("apikey_current_partner")
        .get(0)
}

/// Asserts that this connection, in its current transaction, sees exactly partner
/// `partner`'s rows (and all of them) in key_info, partners and audit_log.
fn assert_sees_exactly_partner(c: &mut Client, su: &mut Client, partner: Uuid, keys: &[String]) {
    assert_eq!(
        visible_key_ids(c),
        keys,
        "key_info shows exactly the partner's own keys"
    );
    assert_eq!(
        visible_partner_ids(c, "apikey.partners"),
        vec![Some(partner)],
        "partners shows exactly the partner's own row"
    );
    let audit = visible_partner_ids(c, "apikey.audit_log");
    assert!(
        audit.iter().all(|p| *p == Some(partner)),
        "audit_log shows only the partner's rows: {audit:?}"
    );
    let own_audit = count(
        su,
        "SELECT count(*) FROM apikey.audit_log WHERE partner_id = $1",
        &[&partner],
    );
    assert!(
        own_audit > 0,
        "the fixture wrote audit rows for the partner"
    );
    assert_eq!(
        audit.len() as i64,
        own_audit,
        "audit_log shows all of the partner's rows"
    );
}

/// Asserts that this connection sees no row at all of any apikey table or view.
fn assert_sees_nothing(c: &mut Client, who: &str) {
    for relation in ["apikey.partners", "apikey.audit_log", "apikey.key_info"] {
        let rows = visible_partner_ids(c, relation);
        assert!(
            rows.is_empty(),
            "{who} sees {} row(s) of {relation}",
            rows.len()
        );
    }
}

fn is_live(su: &mut Client, key_id: &str) -> bool {
    su.query_one(
        "SELECT status = 'live' FROM apikey.key_info WHERE key_id = $1",
        &[&key_id],
    )
    .unwrap_or_else(|e| panic!("status of {key_id}: {e}"))
    .get(0)
}

/// `(action, actor)` of the audit rows whose `column` equals `value`, oldest first.
fn audit_actors(
    su: &mut Client,
    column: &str,
    value: &(dyn ToSql + Sync),
) -> Vec<(String, String)> {
    su.query(
        &format!("SELECT action, actor FROM apikey.audit_log WHERE {column} = $1 ORDER BY id"),
        &[value],
    )
    .expect("read apikey.audit_log as superuser")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

// ---------------------------------------------------------------------------------------
// PUBLIC

#[test]
fn public_role_cannot_execute_any_apikey_function() {
    let mut f = fixture();
    let (name, mut plain) = f.login("plain", &[]);

    let executable = executable_functions(&mut f.su, &name);
    assert_eq!(
        executable,
        Vec::<String>::new(),
        "PUBLIC may execute no function of the extension"
    );

    let calls = every_function_call(f.a, &f.a_manager.key_id);
    in_tx(&mut plain, |c| {
        assert_all_fail(c, &calls, INSUFFICIENT_PRIVILEGE, "plain login role")
    });
    assert!(
        is_live(&mut f.su, &f.a_manager.key_id),
        "nothing was changed"
    );
}

#[test]
fn public_role_cannot_read_any_apikey_table_or_view() {
    let mut f = fixture();
    let (name, mut plain) = f.login("plain", &[]);

    let readable = count(
        &mut f.su,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'apikey' AND c.relkind IN ('r', 'v', 'm', 'p', 'S') \
           AND (has_table_privilege($1, c.oid, 'SELECT') \
                OR has_any_column_privilege($1, c.oid, 'SELECT'))",
        &[&name],
    );
    assert_eq!(readable, 0, "PUBLIC may read no relation of schema apikey");

    in_tx(&mut plain, |c| {
        assert_all_fail(
            c,
            &reads_of(&RELATIONS),
            INSUFFICIENT_PRIVILEGE,
            "plain login role",
        )
    });
}

// ---------------------------------------------------------------------------------------
// apikey_verifier

#[test]
fn verifier_can_verify_and_read_the_verified_identity() {
    let mut f = fixture();
    let (_, mut verifier) = f.login("verifier", &[VERIFIER]);

    let (partner, key, scopes): (Option<Uuid>, Option<String>, Option<Vec<String>>) = as_verified(
        &mut verifier,
        &f.a_reader.token,
        |c| {
            let row = c
                .query_one(
                    "SELECT apikey_current_partner(), apikey_current_key(), apikey_current_scopes()",
                    &[],
                )
                .expect("a verifier may call the apikey_current_* functions");
            (row.get(0), row.get(1), row.get(2))
        },
    );
    assert_eq!(partner, Some(f.a));
    assert_eq!(key, Some(f.a_reader.key_id.clone()));
    assert_eq!(scopes, Some(vec!["orders:read".to_string()]));
}

#[test]
fn verifier_can_call_nothing_else() {
    let mut f = fixture();
    let (name, mut verifier) = f.login("verifier", &[VERIFIER]);

    assert_eq!(
        executable_functions(&mut f.su, &name),
        [
            "apikey_current_key",
            "apikey_current_partner",
            "apikey_current_scopes",
            "apikey_last_rates",
            "apikey_verify",
            "apikey_version"
        ],
        "a verifier may call verify, what it just said (apikey_current_*, apikey_last_rates) \
         and apikey_version, nothing else"
    );

    let mut forbidden = management_calls(f.a, &f.a_spare.key_id);
    forbidden.extend(reads_of(&RELATIONS));
    forbidden.extend([
        "SELECT apikey_has_scope('{orders:read}', 'orders:read')".to_string(),
        "SELECT apikey_require_scope('orders:read')".to_string(),
    ]);
    // Even with a keys:manage key verified in the same transaction.
    as_verified(&mut verifier, &f.a_manager.token, |c| {
        assert_all_fail(c, &forbidden, INSUFFICIENT_PRIVILEGE, "verifier")
    });
    assert!(
        is_live(&mut f.su, &f.a_spare.key_id),
        "the verifier changed nothing"
    );
}

// ---------------------------------------------------------------------------------------
// apikey_admin

#[test]
fn admin_can_manage_partners_and_keys() {
    let mut f = fixture();
    let (_, mut admin) = f.login("admin", &[ADMIN]);

    let partner = create_partner(&mut admin);
    admin
        .execute("SELECT apikey_partner_set_active($1, false)", &[&partner])
        .expect("admin deactivates a partner");
    admin
        .execute("SELECT apikey_partner_set_active($1, true)", &[&partner])
        .expect("admin reactivates a partner");
    let key = issue(&mut admin, partner, &["orders:read"]);
    admin
        .execute("SELECT apikey_set_enabled($1, false)", &[&key.key_id])
        .expect("admin disables a key");
    admin
        .execute("SELECT apikey_set_enabled($1, true)", &[&key.key_id])
        .expect("admin enables a key");
    let successor: String = admin
        .query_one("SELECT key_id FROM apikey_rotate($1)", &[&key.key_id])
        .expect("admin rotates a key")
        .get(0);
    let revoked: bool = admin
        .query_one("SELECT apikey_revoke($1)", &[&successor])
        .expect("admin revokes a key")
        .get(0);
    assert!(revoked, "the successor was live");
    // Other partners' keys too: an admin is not bound to a partner.
    let revoked: bool = admin
        .query_one("SELECT apikey_revoke($1)", &[&f.b_manager.key_id])
        .expect("admin revokes another partner's key")
        .get(0);
    assert!(revoked);
    assert_eq!(reason(&mut f.su, &f.b_manager.token), "revoked");
}

#[test]
fn admin_reads_every_partners_rows() {
    let mut f = fixture();
    let (_, mut admin) = f.login("admin", &[ADMIN]);

    let keys = visible_key_ids(&mut admin);
    for key in f.a_key_ids().iter().chain([&f.b_manager.key_id]) {
        assert!(
            keys.contains(key),
            "admin sees key {key} of either partner in key_info"
        );
    }
    for relation in ["apikey.partners", "apikey.audit_log"] {
        let partners = visible_partner_ids(&mut admin, relation);
        for p in [f.a, f.b] {
            assert!(
                partners.contains(&Some(p)),
                "admin sees partner {p}'s rows in {relation}"
            );
        }
    }
    // The non-secret columns of the table itself are readable too.
    let b_keys = count(
        &mut admin,
        "SELECT count(*) FROM apikey.keys WHERE partner_id = $1",
        &[&f.b],
    );
    assert_eq!(b_keys, 1);
}

#[test]
fn no_role_can_read_the_secret_hash_or_pepper_fingerprint() {
    let mut f = fixture();
    let (_, mut admin) = f.login("admin", &[ADMIN]);
    let (_, mut partner) = f.login("partner", &[PARTNER]);
    let (_, mut shim) = f.login("shim", &[ADMIN, VERIFIER, PARTNER]);

    let mut forbidden = secret_column_reads();
    forbidden.push("SELECT * FROM apikey.keys LIMIT 1".to_string());
    in_tx(&mut admin, |c| {
        assert_all_fail(c, &forbidden, INSUFFICIENT_PRIVILEGE, "admin")
    });
    in_tx(&mut shim, |c| {
        assert_all_fail(c, &forbidden, INSUFFICIENT_PRIVILEGE, "shim")
    });
    as_verified(&mut partner, &f.a_manager.token, |c| {
        assert_all_fail(c, &forbidden, INSUFFICIENT_PRIVILEGE, "verified partner")
    });

    // No grant anywhere: only superusers (the owner) may read the columns. PostgreSQL's own
    // pg_read_all_data bypasses every GRANT by design (it still meets row-level security,
    // so it reads hashes only together with apikey_admin or a verified partner); holding it
    // is a superuser's explicit decision, outside what the extension's grants can express.
    let grantees: Vec<String> =
        f.su.query(
            "SELECT DISTINCT r.rolname FROM pg_roles r, unnest($1::text[]) AS col \
             WHERE has_column_privilege(r.oid, 'apikey.keys', col, 'SELECT') \
               AND NOT r.rolsuper \
               AND NOT pg_has_role(r.oid, 'pg_read_all_data', 'USAGE') ORDER BY 1",
            &[&SECRET_COLUMNS.to_vec()],
        )
        .expect("column privileges")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        grantees,
        Vec::<String>::new(),
        "no non-superuser role can read a secret column"
    );

    let hash: String =
        f.su.query_one(
            "SELECT secret_hash FROM apikey.keys WHERE key_id = $1",
            &[&f.a_reader.key_id],
        )
        .expect("the superuser reads the hash")
        .get(0);
    assert!(
        hash.starts_with("$argon2id$"),
        "stored hash is an Argon2id PHC string: {hash}"
    );

    // key_info has every column of keys but the two, plus status and imported_from.
    let columns = |su: &mut Client, relation: &str| -> Vec<String> {
        su.query(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY 1",
            &[&relation],
        )
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut expected: Vec<String> = columns(&mut f.su, "apikey.keys")
        .into_iter()
        .filter(|c| !SECRET_COLUMNS.contains(&c.as_str()))
        .chain(["status".to_string(), "imported_from".to_string()])
        .collect();
    expected.sort();
    assert_eq!(columns(&mut f.su, "apikey.key_info"), expected);
}

// ---------------------------------------------------------------------------------------
// apikey_partner

#[test]
fn partner_sees_exactly_its_own_rows_after_verify() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);
    let a_keys = f.a_key_ids();

    as_verified(&mut partner, &f.a_reader.token, |c| {
        assert_sees_exactly_partner(c, &mut f.su, f.a, &a_keys)
    });
    // The same login, with B's key, sees exactly B.
    as_verified(&mut partner, &f.b_manager.token, |c| {
        assert_sees_exactly_partner(c, &mut f.su, f.b, &[f.b_manager.key_id.clone()])
    });
}

#[test]
fn partner_sees_nothing_without_a_verified_key() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);
    assert_sees_nothing(&mut partner, "partner before any verify");
}

#[test]
fn partner_identity_ends_with_the_transaction() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);

    // Autocommit: the verify is its own transaction.
    let verdict = verify(&mut partner, Some(&f.a_reader.token), &[], None);
    assert!(verdict.valid, "{verdict:?}");
    assert_eq!(
        current_partner(&mut partner),
        None,
        "identity of an earlier statement"
    );
    assert_sees_nothing(&mut partner, "partner after an autocommitted verify");

    // An explicit transaction: visible inside, gone after COMMIT.
    as_verified(&mut partner, &f.a_reader.token, |c| {
        assert_eq!(current_partner(c), Some(f.a));
    });
    in_tx(&mut partner, |c| {
        assert_eq!(
            current_partner(c),
            None,
            "identity of an earlier transaction"
        );
        assert_sees_nothing(c, "partner in the transaction after a verify");
    });
}

#[test]
fn partner_manages_its_own_keys_with_keys_manage_scope() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);

    let reader = f.a_reader.key_id.clone();
    let spare = f.a_spare.key_id.clone();
    let successor: String = as_verified(&mut partner, &f.a_manager.token, |c| {
        c.execute("SELECT apikey_set_enabled($1, false)", &[&reader])
            .expect("partner disables its own key");
        let revoked: bool = c
            .query_one("SELECT apikey_revoke($1)", &[&spare])
            .expect("partner revokes its own key")
            .get(0);
        assert!(revoked);
        c.query_one(
            "SELECT key_id FROM apikey_rotate($1)",
            &[&f.a_manager.key_id],
        )
        .expect("partner rotates its own key")
        .get(0)
    });

    assert_eq!(reason(&mut f.su, &f.a_reader.token), "disabled");
    assert_eq!(reason(&mut f.su, &f.a_spare.token), "revoked");
    let new_partner: Uuid =
        f.su.query_one(
            "SELECT partner_id FROM apikey.keys WHERE key_id = $1",
            &[&successor],
        )
        .expect("the rotated key exists")
        .get(0);
    assert_eq!(
        new_partner, f.a,
        "the successor belongs to the same partner"
    );
}

#[test]
fn partner_cannot_manage_keys_without_a_key_verified_in_the_transaction() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);

    let calls = key_calls(&f.a_spare.key_id);
    in_tx(&mut partner, |c| {
        assert_all_fail(c, &calls, INSUFFICIENT_PRIVILEGE, "partner without verify")
    });
    // A keys:manage key verified in an earlier transaction does not count.
    as_verified(&mut partner, &f.a_manager.token, |_| ());
    in_tx(&mut partner, |c| {
        assert_all_fail(
            c,
            &calls,
            INSUFFICIENT_PRIVILEGE,
            "partner after an earlier verify",
        )
    });
    assert!(
        is_live(&mut f.su, &f.a_spare.key_id),
        "the key was not touched"
    );
}

#[test]
fn partner_cannot_manage_keys_with_a_key_lacking_keys_manage() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);

    let calls = key_calls(&f.a_spare.key_id);
    as_verified(&mut partner, &f.a_reader.token, |c| {
        assert_all_fail(
            c,
            &calls,
            INSUFFICIENT_PRIVILEGE,
            "partner with an orders:read key",
        )
    });
    assert!(
        is_live(&mut f.su, &f.a_spare.key_id),
        "the key was not touched"
    );
}

#[test]
fn wildcard_scopes_cover_keys_manage() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);

    for scope in ["keys:*", "admin:*", "*"] {
        let manager = issue(&mut f.su, f.a, &[scope]);
        let target = issue(&mut f.su, f.a, &["orders:read"]);
        let revoked: bool = as_verified(&mut partner, &manager.token, |c| {
            c.query_one("SELECT apikey_revoke($1)", &[&target.key_id])
                .unwrap_or_else(|e| panic!("a key with {scope} may revoke its partner's key: {e}"))
                .get(0)
        });
        assert!(revoked, "{scope}");
        assert_eq!(reason(&mut f.su, &target.token), "revoked", "{scope}");
    }
}

#[test]
fn partner_cannot_touch_another_partners_key_and_cannot_tell_it_exists() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);

    let b_key = f.b_manager.key_id.clone();
    let (message, unknown_message) = as_verified(&mut partner, &f.a_manager.token, |c| {
        assert_all_fail(c, &key_calls(&b_key), NO_DATA_FOUND, "partner A on B's key");
        let message = db_error(attempt(c, "SELECT apikey_revoke($1)", &[&b_key]));
        // A key id of the same shape that does not exist at all.
        let last = if b_key.ends_with('x') { "y" } else { "x" };
        let unknown = format!("{}{last}", &b_key[..b_key.len() - 1]);
        let (code, unknown_message) = db_error(attempt(c, "SELECT apikey_revoke($1)", &[&unknown]));
        let unknown_message = (code, unknown_message.replace(&unknown, &b_key));
        (message, unknown_message)
    });
    assert_eq!(
        message,
        (
            "P0002".to_string(),
            format!("key \"{b_key}\" does not exist")
        )
    );
    assert_eq!(
        message, unknown_message,
        "another partner's key looks like an unknown one"
    );
    assert_eq!(
        reason(&mut f.su, &f.b_manager.token),
        "ok",
        "B's key is untouched"
    );
}

#[test]
fn partner_cannot_issue_keys_or_manage_partners() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);

    let star = issue(&mut f.su, f.a, &["*"]);
    let calls = admin_only_calls(f.a);
    as_verified(&mut partner, &star.token, |c| {
        assert_all_fail(c, &calls, INSUFFICIENT_PRIVILEGE, "partner with a * key")
    });
}

#[test]
fn require_scope_needs_the_scope_on_the_key_verified_in_this_transaction() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);
    let require = |scope: &str| format!("SELECT apikey_require_scope('{scope}')");

    in_tx(&mut partner, |c| {
        assert_all_fail(
            c,
            &[require("orders:read")],
            INSUFFICIENT_PRIVILEGE,
            "no verified key",
        )
    });
    as_verified(&mut partner, &f.a_reader.token, |c| {
        attempt(c, &require("orders:read"), &[]).expect("the verified key has orders:read");
        assert_all_fail(
            c,
            &[require("orders:write"), require("keys:manage")],
            INSUFFICIENT_PRIVILEGE,
            "orders:read key",
        );
    });
    let wildcard = issue(&mut f.su, f.a, &["orders:*"]);
    as_verified(&mut partner, &wildcard.token, |c| {
        attempt(c, &require("orders:write"), &[]).expect("orders:* covers orders:write");
    });
    in_tx(&mut partner, |c| {
        assert_all_fail(
            c,
            &[require("orders:read")],
            INSUFFICIENT_PRIVILEGE,
            "next transaction",
        )
    });
}

// ---------------------------------------------------------------------------------------
// Powers follow the outer user

#[test]
fn shim_login_narrowed_with_set_local_role_has_exactly_partner_powers() {
    let mut f = fixture();
    let (_, mut shim) = f.login("shim", &[ADMIN, VERIFIER, PARTNER]);
    let a_keys = f.a_key_ids();

    as_verified(&mut shim, &f.a_manager.token, |c| {
        c.batch_execute("SET LOCAL ROLE apikey_partner")
            .expect("SET LOCAL ROLE apikey_partner");
        assert_sees_exactly_partner(c, &mut f.su, f.a, &a_keys);
        assert_all_fail(
            c,
            &key_calls(&f.b_manager.key_id),
            NO_DATA_FOUND,
            "narrowed shim on B's key",
        );
        assert_all_fail(
            c,
            &admin_only_calls(f.a),
            INSUFFICIENT_PRIVILEGE,
            "narrowed shim",
        );
        let revoked: bool = c
            .query_one("SELECT apikey_revoke($1)", &[&f.a_spare.key_id])
            .expect("narrowed shim revokes its partner's own key")
            .get(0);
        assert!(revoked);
    });
    assert_eq!(
        reason(&mut f.su, &f.b_manager.token),
        "ok",
        "B's key is untouched"
    );
    assert_eq!(reason(&mut f.su, &f.a_spare.token), "revoked");

    // Narrowed but without a verified key: nothing to see, nothing to manage.
    in_tx(&mut shim, |c| {
        c.batch_execute("SET LOCAL ROLE apikey_partner")
            .expect("SET LOCAL ROLE apikey_partner");
        assert_sees_nothing(c, "narrowed shim without verify");
        assert_all_fail(
            c,
            &key_calls(&f.a_reader.key_id),
            INSUFFICIENT_PRIVILEGE,
            "narrowed shim without verify",
        );
    });
}

#[test]
fn shim_login_without_set_role_has_admin_powers() {
    let mut f = fixture();
    let (_, mut shim) = f.login("shim", &[ADMIN, VERIFIER, PARTNER]);

    // Even after verifying partner A's key, the un-narrowed login is an admin.
    let revoked: bool = as_verified(&mut shim, &f.a_reader.token, |c| {
        let keys = visible_key_ids(c);
        assert!(
            keys.contains(&f.b_manager.key_id),
            "sees partner B's key too"
        );
        assert!(keys.contains(&f.a_spare.key_id), "and partner A's");
        issue(c, f.b, &["orders:read"]);
        c.query_one("SELECT apikey_revoke($1)", &[&f.b_manager.key_id])
            .expect("an admin revokes any partner's key")
            .get(0)
    });
    assert!(revoked);
    assert_eq!(reason(&mut f.su, &f.b_manager.token), "revoked");
}

#[test]
fn superuser_loses_its_powers_after_set_role() {
    let mut f = fixture();
    let plain_name = login_role(&mut f.su, "plain", &[]);
    let calls = management_calls(f.a, &f.a_spare.key_id);

    for role in [plain_name.as_str(), VERIFIER] {
        in_tx(&mut f.su, |c| {
            c.batch_execute(&format!("SET LOCAL ROLE \"{role}\""))
                .expect("SET LOCAL ROLE");
            let who = format!("superuser as {role}");
            assert_all_fail(c, &calls, INSUFFICIENT_PRIVILEGE, &who);
            assert_all_fail(c, &reads_of(&RELATIONS), INSUFFICIENT_PRIVILEGE, &who);
        });
    }
    // As apikey_partner it passes the EXECUTE check but the function itself refuses.
    in_tx(&mut f.su, |c| {
        c.batch_execute("SET LOCAL ROLE apikey_partner")
            .expect("SET LOCAL ROLE apikey_partner");
        assert_sees_nothing(c, "superuser as apikey_partner");
        assert_all_fail(
            c,
            &calls,
            INSUFFICIENT_PRIVILEGE,
            "superuser as apikey_partner",
        );
    });
    assert!(
        is_live(&mut f.su, &f.a_spare.key_id),
        "the key was not touched"
    );
    // Back to itself, the superuser manages again.
    let revoked: bool =
        f.su.query_one("SELECT apikey_revoke($1)", &[&f.a_spare.key_id])
            .expect("the superuser revokes")
            .get(0);
    assert!(revoked);
}

// ---------------------------------------------------------------------------------------
// The identity

#[test]
fn identity_cannot_be_spoofed_with_set_config() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);
    let a = f.a.to_string();
    let settings = [
        "apikey.current_partner",
        "apikey.partner_id",
        "apikey.current_key",
        "apikey.identity",
        "app.current_partner",
    ];

    // Session-wide settings. The extension may refuse its own prefix (as good as ignoring
    // it); an application's setting is accepted and must be ignored.
    for name in settings {
        let accepted = partner.query("SELECT set_config($1, $2, false)", &[&name, &a]);
        if !name.starts_with("apikey.") {
            accepted.unwrap_or_else(|e| panic!("set_config({name}): {e}"));
        }
    }
    in_tx(&mut partner, |c| {
        assert_eq!(
            current_partner(c),
            None,
            "session settings give no identity"
        );
        assert_sees_nothing(c, "partner with session settings");
        assert_all_fail(
            c,
            &key_calls(&f.a_spare.key_id),
            INSUFFICIENT_PRIVILEGE,
            "spoofing partner",
        );
    });
    // Transaction-local settings.
    in_tx(&mut partner, |c| {
        for name in settings {
            let _ = attempt(c, "SELECT set_config($1, $2, true)", &[&name, &a]);
        }
        assert_eq!(current_partner(c), None, "local settings give no identity");
        assert_sees_nothing(c, "partner with local settings");
    });
    assert!(
        is_live(&mut f.su, &f.a_spare.key_id),
        "the key was not touched"
    );
}

#[test]
fn current_partner_is_null_before_verify_and_after_a_failed_verify() {
    let mut f = fixture();
    let (_, mut partner) = f.login("partner", &[PARTNER]);
    let revoked = issue(&mut f.su, f.a, &["orders:read"]);
    f.su.execute("SELECT apikey_revoke($1)", &[&revoked.key_id])
        .expect("revoke");

    let failures: [(&str, Option<&str>, &[&str]); 4] = [
        ("malformed", Some("ak_live_garbage"), &[]),
        ("missing_key", None, &[]),
        ("revoked", Some(revoked.token.as_str()), &[]),
        (
            "insufficient_scope",
            Some(f.b_manager.token.as_str()),
            &["orders:write"],
        ),
    ];
    for (expected, token, scopes) in failures {
        in_tx(&mut partner, |c| {
            assert_eq!(current_partner(c), None, "no identity before any verify");
            assert!(verify(c, Some(&f.a_manager.token), &[], None).valid);
            assert_eq!(current_partner(c), Some(f.a));
            let verdict = verify(c, token, scopes, None);
            assert_eq!(verdict.reason, expected, "{verdict:?}");
            assert_eq!(
                current_partner(c),
                None,
                "a failed verify ({expected}) clears the identity"
            );
            assert_sees_nothing(c, &format!("partner after a failed verify ({expected})"));
            assert_all_fail(
                c,
                &key_calls(&f.a_spare.key_id),
                INSUFFICIENT_PRIVILEGE,
                expected,
            );
        });
    }
    assert!(
        is_live(&mut f.su, &f.a_spare.key_id),
        "the key was not touched"
    );
}

#[test]
fn application_policy_sees_only_the_verified_partners_rows() {
    let mut f = fixture();
    let (name, mut app) = f.login("app", &[VERIFIER]);
    let table = unique("app_orders").to_lowercase();
    f.su.batch_execute(&format!(
        "CREATE TABLE \"{table}\" (partner_id uuid NOT NULL, item text NOT NULL);
         ALTER TABLE \"{table}\" ENABLE ROW LEVEL SECURITY;
         ALTER TABLE \"{table}\" FORCE ROW LEVEL SECURITY;
         CREATE POLICY p ON \"{table}\" USING (partner_id = apikey_current_partner());
         GRANT SELECT ON \"{table}\" TO \"{name}\";"
    ))
    .expect("create the application's table");
    f.su.execute(
        &format!("INSERT INTO \"{table}\" VALUES ($1, 'a1'), ($1, 'a2'), ($2, 'b1')"),
        &[&f.a, &f.b],
    )
    .expect("insert orders");

    let items = |c: &mut Client| -> Vec<String> {
        c.query(&format!("SELECT item FROM \"{table}\" ORDER BY item"), &[])
            .expect("the app reads its own table")
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(
        items(&mut app),
        Vec::<String>::new(),
        "no rows before verify"
    );
    assert_eq!(
        as_verified(&mut app, &f.a_reader.token, items),
        ["a1", "a2"]
    );
    assert_eq!(as_verified(&mut app, &f.b_manager.token, items), ["b1"]);
    assert_eq!(
        items(&mut app),
        Vec::<String>::new(),
        "no rows after the transaction"
    );

    f.su.batch_execute(&format!("DROP TABLE \"{table}\""))
        .expect("drop the application's table");
}

/// `docs/examples/orders-policy.sql`, as the SQL reference shows it, in a database of its own: each
/// key sees the orders its resource scopes name, and only its partner's.
#[test]
fn the_documented_instance_policy_shows_each_key_only_its_orders() {
    const POLICY: &str = include_str!("../../docs/examples/orders-policy.sql");
    const SQL_PAGE: &str = include_str!("../../docs/src/sql.md");
    assert!(
        SQL_PAGE.contains("```sql\n{{#include ../examples/orders-policy.sql}}\n```"),
        "docs/src/sql.md must include docs/examples/orders-policy.sql"
    );
    let mut dbs = Databases::default();
    let db = dbs.create("apikey_orders_app");
    let mut su = connect_to("postgres", &db);
    su.batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
        .expect("CREATE EXTENSION apikey");
    let app_role = login_role(&mut su, "orders_app", &[]);
    su.batch_execute(&POLICY.replace("orders_app", &format!("\"{app_role}\"")))
        .expect("the documented policy");
    let a = create_partner(&mut su);
    let b = create_partner(&mut su);
    su.execute(
        "INSERT INTO orders SELECT g, $1, 'a' || g FROM generate_series(1, 9) g",
        &[&a],
    )
    .expect("partner a's orders");
    su.execute("INSERT INTO orders VALUES (10, $1, 'b10')", &[&b])
        .expect("partner b's order");
    let cases: [(Issued, Vec<i64>); 6] = [
        (issue(&mut su, a, &["orders:read"]), (1..=9).collect()),
        (issue(&mut su, a, &["orders/7:read"]), vec![7]),
        (
            issue(&mut su, a, &["orders/3:read", "orders/8:*"]),
            vec![3, 8],
        ),
        // Order 10 is partner b's: an instance scope does not cross partners.
        (issue(&mut su, a, &["orders/10:read"]), vec![]),
        (issue(&mut su, b, &["orders:*"]), vec![10]),
        (
            issue(&mut su, a, &["orders/7:write", "invoices:read"]),
            vec![],
        ),
    ];
    let mut app = connect_to(&app_role, &db);
    let ids = |c: &mut postgres::Transaction<'_>| -> Vec<i64> {
        c.query("SELECT id FROM orders ORDER BY id", &[])
            .expect("the application reads its table")
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    for (key, expected) in &cases {
        let mut tx = app.transaction().expect("begin");
        let valid: bool = tx
            .query_one("SELECT valid FROM apikey_verify($1)", &[&key.token])
            .expect("verify")
            .get(0);
        assert!(valid);
        let scopes: Vec<String> = tx
            .query_one("SELECT apikey_current_scopes()", &[])
            .expect("scopes")
            .get(0);
        assert_eq!(&ids(&mut tx), expected, "{scopes:?}");
        tx.rollback().expect("rollback");
    }
    let mut tx = app.transaction().expect("begin");
    assert_eq!(ids(&mut tx), Vec::<i64>::new(), "no key, no rows");
    tx.rollback().expect("rollback");
}

// ---------------------------------------------------------------------------------------
// Audit

#[test]
fn every_management_call_is_audited_with_the_admin_login_as_actor() {
    let mut f = fixture();
    let (name, mut admin) = f.login("admin", &[ADMIN]);

    let partner = create_partner(&mut admin);
    admin
        .execute("SELECT apikey_partner_set_active($1, false)", &[&partner])
        .expect("deactivate");
    admin
        .execute("SELECT apikey_partner_set_active($1, true)", &[&partner])
        .expect("activate");
    let key = issue(&mut admin, partner, &["orders:read"]);
    admin
        .execute("SELECT apikey_set_enabled($1, false)", &[&key.key_id])
        .expect("disable");
    admin
        .execute("SELECT apikey_set_enabled($1, true)", &[&key.key_id])
        .expect("enable");
    let successor: String = admin
        .query_one("SELECT key_id FROM apikey_rotate($1)", &[&key.key_id])
        .expect("rotate")
        .get(0);
    admin
        .execute("SELECT apikey_revoke($1)", &[&successor])
        .expect("revoke");

    let expected: Vec<(String, String)> = [
        "partner_create",
        "partner_deactivate",
        "partner_activate",
        "issue",
        "disable",
        "enable",
        "rotate",
        "revoke",
    ]
    .iter()
    .map(|action| (action.to_string(), name.clone()))
    .collect();
    assert_eq!(audit_actors(&mut f.su, "partner_id", &partner), expected);

    let created_by: String =
        f.su.query_one(
            "SELECT created_by FROM apikey.keys WHERE key_id = $1",
            &[&successor],
        )
        .expect("created_by")
        .get(0);
    assert_eq!(
        created_by, name,
        "keys record the outer role that made them"
    );
}

#[test]
fn audit_actor_is_the_outer_role_not_the_session_user() {
    let mut f = fixture();
    let (partner_name, mut partner) = f.login("partner", &[PARTNER]);
    let (_, mut shim) = f.login("shim", &[ADMIN, VERIFIER, PARTNER]);
    let superuser_name: String =
        f.su.query_one("SELECT current_user::text", &[])
            .expect("current_user")
            .get(0);

    // The partner login itself, narrowed shim and superuser each revoke one key of A.
    let targets: Vec<Issued> = (0..3)
        .map(|_| issue(&mut f.su, f.a, &["orders:read"]))
        .collect();
    let revoke = |c: &mut Client, key_id: &str| {
        c.execute("SELECT apikey_revoke($1)", &[&key_id])
            .expect("revoke");
    };
    as_verified(&mut partner, &f.a_manager.token, |c| {
        revoke(c, &targets[0].key_id)
    });
    as_verified(&mut shim, &f.a_manager.token, |c| {
        c.batch_execute("SET LOCAL ROLE apikey_partner")
            .expect("SET LOCAL ROLE apikey_partner");
        revoke(c, &targets[1].key_id)
    });
    revoke(&mut f.su, &targets[2].key_id);

    for (target, actor) in
        targets
            .iter()
            .zip([partner_name.as_str(), PARTNER, superuser_name.as_str()])
    {
        assert_eq!(
            audit_actors(&mut f.su, "key_id", &target.key_id),
            [
                ("issue".to_string(), superuser_name.clone()),
                ("revoke".to_string(), actor.to_string())
            ],
            "audit of key {}",
            target.key_id
        );
    }
}
