//! apikey_verify on a hot standby (a streaming replica of the test cluster): a standby is
//! read-only, so verification must answer without its bookkeeping writes (last_used_at,
//! re-hashing, audit rows of failures) instead of raising SQLSTATE 25006, the identity
//! functions must work there, and a revocation on the primary must reach the standby's
//! answers once replayed, even after the standby's backend has cached a proof for the key.
//!
//! Each test makes its own standby (`apikey_tests::standby`).

use apikey_tests::postgres::Client;
use apikey_tests::standby::Standby;
use apikey_tests::*;

/// Audit rows of failed verifications would carry these addresses; one per test, because
/// the tests run in parallel against the same primary.
const CLIENT_IP: &str = "198.51.100.23";
const REVOKED_CLIENT_IP: &str = "198.51.100.24";

/// The newest audit row id on the primary: rows written later have larger ids.
fn audit_watermark(primary: &mut Client) -> i64 {
    primary
        .query_one("SELECT coalesce(max(id), 0) FROM apikey.audit_log", &[])
        .expect("max audit id")
        .get(0)
}

/// Audit rows after `watermark` about `key_id` or from `client_ip`, as "action/reason".
fn audit_rows_since(
    primary: &mut Client,
    watermark: i64,
    key_id: &str,
    client_ip: &str,
) -> Vec<String> {
    primary
        .query(
            "SELECT action || '/' || coalesce(reason, '') FROM apikey.audit_log \
             WHERE id > $1 AND (key_id = $2 OR client_ip = $3::text::inet) ORDER BY id",
            &[&watermark, &key_id, &client_ip],
        )
        .expect("read the audit log")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn verify_on_a_standby_answers_without_writing() {
    let mut primary = superuser();
    let partner = create_partner(&mut primary);
    let key = issue(&mut primary, partner, &["orders:read"]);
    // Like the shim's role, narrowed to what verification and identity need.
    let role = login_role(
        &mut primary,
        "standby_app",
        &["apikey_verifier", "apikey_partner"],
    );
    let watermark = audit_watermark(&mut primary);

    let standby = Standby::start();
    standby.catch_up(&mut primary);
    let mut s = standby.connect(&role);

    // The standby refuses writes even to a superuser: a verify that attempted its
    // bookkeeping there would raise this error instead of answering.
    let mut admin = standby.connect(&env_var("APIKEY_TEST_PGUSER"));
    let write = admin.execute(
        "UPDATE apikey.keys SET last_used_at = now() WHERE key_id = $1",
        &[&key.key_id],
    );
    assert_eq!(sqlstate(write), "25006", "read-only transaction");

    // Success, cold (Argon2id) then warm (cached proof). Touching last_used_at here would
    // raise 25006 on the standby, and `verify` panics on any error.
    let ok = verify(&mut s, Some(&key.token), &["orders:read"], Some(CLIENT_IP));
    assert_eq!((ok.valid, ok.reason.as_str()), (true, "ok"), "{ok:?}");
    assert_eq!(ok.key_id.as_deref(), Some(key.key_id.as_str()));
    assert_eq!(ok.partner_id, Some(partner));
    assert_eq!(ok.scopes, Some(vec!["orders:read".to_string()]));
    assert_eq!(
        verify(&mut s, Some(&key.token), &["orders:read"], Some(CLIENT_IP)),
        ok,
        "warm"
    );

    // Failures return their reason; their audit rows are skipped, not attempted.
    let denied = verify(&mut s, Some(&key.token), &["orders:write"], Some(CLIENT_IP));
    assert_eq!(
        (denied.valid, denied.reason.as_str()),
        (false, "insufficient_scope")
    );
    assert_eq!(denied.key_id.as_deref(), Some(key.key_id.as_str()));
    assert_eq!(denied.partner_id, Some(partner));
    let malformed = verify(&mut s, Some("ak_live_garbage"), &[], Some(CLIENT_IP));
    assert_eq!(
        (malformed.valid, malformed.reason.as_str()),
        (false, "malformed")
    );
    assert_eq!(
        verify(&mut s, None, &[], Some(CLIENT_IP)).reason,
        "missing_key"
    );

    // The identity of a verification lives in its transaction, on the standby too.
    let mut tx = s.transaction().expect("begin on the standby");
    let reason: String = tx
        .query_one(
            "SELECT reason FROM apikey_verify($1, '{orders:read}', $2::text::inet)",
            &[&key.token, &CLIENT_IP],
        )
        .expect("apikey_verify in a standby transaction")
        .get(0);
    assert_eq!(reason, "ok");
    let identity = tx
        .query_one(
            "SELECT apikey_current_partner(), apikey_current_key(), apikey_current_scopes()",
            &[],
        )
        .expect("apikey_current_* on the standby");
    assert_eq!(identity.get::<_, Option<Uuid>>(0), Some(partner));
    assert_eq!(
        identity.get::<_, Option<String>>(1).as_deref(),
        Some(key.key_id.as_str())
    );
    assert_eq!(
        identity.get::<_, Option<Vec<String>>>(2),
        Some(vec!["orders:read".to_string()])
    );
    tx.execute("SELECT apikey_require_scope('orders:read')", &[])
        .expect("apikey_require_scope after a successful verify on the standby");
    tx.commit().expect("commit on the standby");
    let after: Option<Uuid> = s
        .query_one("SELECT apikey_current_partner()", &[])
        .expect("apikey_current_partner after commit")
        .get(0);
    assert_eq!(after, None, "the identity ends with its transaction");

    // Nothing reached the primary: no last_used_at, no audit row of the standby's calls.
    assert_eq!(last_used_at(&mut primary, &key.key_id), None);
    assert_eq!(
        audit_rows_since(&mut primary, watermark, &key.key_id, CLIENT_IP),
        Vec::<String>::new()
    );

    // Control: the same calls on the primary do write both, so the checks above can fail.
    assert_eq!(
        verify(
            &mut primary,
            Some(&key.token),
            &["orders:read"],
            Some(CLIENT_IP)
        )
        .reason,
        "ok"
    );
    assert_eq!(
        verify(
            &mut primary,
            Some(&key.token),
            &["orders:write"],
            Some(CLIENT_IP)
        )
        .reason,
        "insufficient_scope"
    );
    eventually("the primary's worker writes last_used_at", || {
        last_used_at(&mut primary, &key.key_id)
    });
    assert_eq!(
        audit_rows_since(&mut primary, watermark, &key.key_id, CLIENT_IP),
        vec!["verify_failed/insufficient_scope".to_string()]
    );
}

#[test]
fn a_revocation_reaches_the_standby_once_replayed() {
    let mut primary = superuser();
    let partner = create_partner(&mut primary);
    let key = issue(&mut primary, partner, &["orders:read"]);
    let role = login_role(&mut primary, "standby_verifier", &["apikey_verifier"]);

    let standby = Standby::start();
    standby.catch_up(&mut primary);
    let mut s = standby.connect(&role);
    // Twice: this backend now holds a cached proof for the key.
    assert_eq!(reason(&mut s, &key.token), "ok");
    assert_eq!(reason(&mut s, &key.token), "ok", "warm");

    let watermark = audit_watermark(&mut primary);
    let was_live: bool = primary
        .query_one("SELECT apikey_revoke($1, 'standby test')", &[&key.key_id])
        .expect("apikey_revoke on the primary")
        .get(0);
    assert!(was_live);
    standby.catch_up(&mut primary);

    let warm = verify(
        &mut s,
        Some(&key.token),
        &["orders:read"],
        Some(REVOKED_CLIENT_IP),
    );
    assert_eq!((warm.valid, warm.reason.as_str()), (false, "revoked"));
    assert_eq!(
        (warm.key_id, warm.partner_id, warm.scopes),
        (None, None, None),
        "a revoked key reveals no identity"
    );
    let mut fresh = standby.connect(&role);
    assert_eq!(reason(&mut fresh, &key.token), "revoked", "cold backend");

    // Only the primary's revocation is in the audit log, not the standby's failures.
    assert_eq!(
        audit_rows_since(&mut primary, watermark, &key.key_id, REVOKED_CLIENT_IP),
        vec!["revoke/standby test".to_string()]
    );
}
