//! Operator power never reaches a partner: a partner's `keys:manage` key may rotate its own
//! keys only to scopes they already grant, and may not rotate, revoke, enable or disable a
//! key that holds an operator scope (`admin:*`, `*`), even one issued to its own partner.
//! Checked as a real login role that is only `apikey_partner`, as the shim narrowed to
//! `apikey_partner`, and over HTTP.

use apikey_tests::postgres::Client;
use apikey_tests::shim::Shim;
use apikey_tests::*;
use serde_json::json;

const INSUFFICIENT_PRIVILEGE: &str = "42501";

struct Partner {
    su: Client,
    partner: Uuid,
    manager: Issued,
    reader: Issued,
    wide: Issued,
    operator_of_own_partner: Issued,
}

fn partner() -> Partner {
    let mut su = superuser();
    let partner = create_partner(&mut su);
    let manager = issue(&mut su, partner, &["keys:manage"]);
    let reader = issue(&mut su, partner, &["orders:read"]);
    let wide = issue(&mut su, partner, &["orders:*", "invoices:read"]);
    let operator_of_own_partner = issue(&mut su, partner, &["admin:*"]);
    Partner {
        su,
        partner,
        manager,
        reader,
        wide,
        operator_of_own_partner,
    }
}

/// A login that is a member of `apikey_partner` only.
fn partner_login(su: &mut Client) -> Client {
    let name = login_role(su, "escalation", &["apikey_partner"]);
    connect(&name)
}

/// Runs `sql` in a transaction that first verified `token` with `keys:manage`; rolls back.
fn as_manager(c: &mut Client, token: &str, sql: &str) -> Result<Vec<String>, postgres::Error> {
    let mut tx = c.transaction().expect("begin");
    let ok: bool = tx
        .query_one(
            "SELECT valid FROM apikey_verify($1, '{keys:manage}')",
            &[&token],
        )
        .expect("verify")
        .get(0);
    assert!(ok, "the manager key verifies");
    let rows = tx.query(sql, &[])?;
    let out = rows
        .iter()
        .map(|r| r.try_get::<_, String>(0).unwrap_or_default())
        .collect();
    tx.commit()?;
    Ok(out)
}

fn scopes_of(su: &mut Client, key_id: &str) -> Vec<String> {
    su.query_one(
        "SELECT scopes FROM apikey.keys WHERE key_id = $1",
        &[&key_id],
    )
    .expect("scopes")
    .get(0)
}

fn keys_of(su: &mut Client, partner: Uuid) -> i64 {
    su.query_one(
        "SELECT count(*) FROM apikey.keys WHERE partner_id = $1",
        &[&partner],
    )
    .expect("count keys")
    .get(0)
}

#[test]
fn a_partner_cannot_rotate_a_key_to_wider_scopes_in_sql() {
    let mut p = partner();
    let mut c = partner_login(&mut p.su);
    let before = keys_of(&mut p.su, p.partner);
    for scopes in [
        "{admin:*}",
        "{*}",
        "{orders:read,keys:manage}",
        "{orders:write}",
        "{orders:*}",
    ] {
        let sql = format!(
            "SELECT key_id FROM apikey_rotate('{}', '0', '{scopes}')",
            p.reader.key_id
        );
        let code = sqlstate(as_manager(&mut c, &p.manager.token, &sql));
        assert_eq!(
            code, INSUFFICIENT_PRIVILEGE,
            "rotating orders:read to {scopes}"
        );
    }
    assert_eq!(keys_of(&mut p.su, p.partner), before, "no key was minted");
    assert_eq!(scopes_of(&mut p.su, &p.reader.key_id), ["orders:read"]);
    assert_eq!(
        reason(&mut p.su, &p.reader.token),
        "ok",
        "the key stays live"
    );
}

#[test]
fn a_partner_may_keep_or_narrow_scopes() {
    let mut p = partner();
    let mut c = partner_login(&mut p.su);
    let narrowed = as_manager(
        &mut c,
        &p.manager.token,
        &format!(
            "SELECT key_id FROM apikey_rotate('{}', '0', '{{orders:read}}')",
            p.wide.key_id
        ),
    )
    .expect("narrowing orders:*,invoices:read to orders:read");
    assert_eq!(scopes_of(&mut p.su, &narrowed[0]), ["orders:read"]);
    let kept = as_manager(
        &mut c,
        &p.manager.token,
        &format!("SELECT key_id FROM apikey_rotate('{}')", p.reader.key_id),
    )
    .expect("rotation inheriting the scopes");
    assert_eq!(scopes_of(&mut p.su, &kept[0]), ["orders:read"]);
}

/// Narrowing follows the matching rules: `orders:read` may become `orders/9:read` (one
/// order), and an instance key never widens back to the resource or to another instance.
#[test]
fn a_partner_may_narrow_to_one_instance_and_never_back() {
    let mut p = partner();
    let mut c = partner_login(&mut p.su);
    let rotate = |key_id: &str, scopes: &str| {
        format!("SELECT key_id FROM apikey_rotate('{key_id}', '0', '{scopes}')")
    };
    let one_order = as_manager(
        &mut c,
        &p.manager.token,
        &rotate(&p.reader.key_id, "{orders/9:read}"),
    )
    .expect("narrowing orders:read to orders/9:read");
    assert_eq!(scopes_of(&mut p.su, &one_order[0]), ["orders/9:read"]);
    let from_wildcard = as_manager(
        &mut c,
        &p.manager.token,
        &rotate(&p.wide.key_id, "{orders/9:*,invoices/1:read}"),
    )
    .expect("narrowing orders:*,invoices:read to instances");
    assert_eq!(
        scopes_of(&mut p.su, &from_wildcard[0]),
        ["orders/9:*", "invoices/1:read"]
    );
    for wider in [
        "{orders:read}",
        "{orders/8:read}",
        "{orders/9:*}",
        "{orders/9:write}",
    ] {
        assert_eq!(
            sqlstate(as_manager(
                &mut c,
                &p.manager.token,
                &rotate(&one_order[0], wider)
            )),
            INSUFFICIENT_PRIVILEGE,
            "rotating orders/9:read to {wider}"
        );
    }
    assert_eq!(scopes_of(&mut p.su, &one_order[0]), ["orders/9:read"]);
}

#[test]
fn a_partner_cannot_enable_a_key_an_operator_disabled() {
    let mut p = partner();
    let mut c = partner_login(&mut p.su);
    let set = |key_id: &str, enabled: bool| {
        format!("SELECT apikey_set_enabled('{key_id}', {enabled})::text")
    };
    p.su.execute("SELECT apikey_set_enabled($1, false)", &[&p.reader.key_id])
        .expect("an operator disables the key");
    assert_eq!(
        db_error(as_manager(
            &mut c,
            &p.manager.token,
            &set(&p.reader.key_id, true)
        )),
        (
            INSUFFICIENT_PRIVILEGE.to_string(),
            format!(
                "key {} was disabled by an operator: only an operator may enable it",
                p.reader.key_id
            )
        )
    );
    // Its successor inherits the operator's disable.
    let successor = as_manager(
        &mut c,
        &p.manager.token,
        &format!("SELECT key_id FROM apikey_rotate('{}')", p.reader.key_id),
    )
    .expect("the partner may still rotate it")
    .remove(0);
    assert_eq!(
        sqlstate(as_manager(&mut c, &p.manager.token, &set(&successor, true))),
        INSUFFICIENT_PRIVILEGE
    );
    assert_eq!(reason(&mut p.su, &p.reader.token), "revoked");
    // A key the partner disabled itself, the partner may enable again.
    as_manager(&mut c, &p.manager.token, &set(&p.wide.key_id, false)).expect("disable");
    as_manager(&mut c, &p.manager.token, &set(&p.wide.key_id, true)).expect("enable");
    assert_eq!(reason(&mut p.su, &p.wide.token), "ok");
    // The operator's enable lifts it; a later partner disable is the partner's again.
    p.su.execute("SELECT apikey_set_enabled($1, true)", &[&successor])
        .expect("an operator enables the key");
    as_manager(&mut c, &p.manager.token, &set(&successor, false)).expect("disable");
    as_manager(&mut c, &p.manager.token, &set(&successor, true)).expect("enable");
}

#[test]
fn rotating_again_ends_the_older_grace_and_grace_is_bounded_for_everyone() {
    let mut p = partner();
    let mut c = partner_login(&mut p.su);
    let rotate = |key_id: &str, grace: &str| {
        format!("SELECT key_id || ' ' || token FROM apikey_rotate('{key_id}', '{grace}')")
    };
    for grace in ["1000 years", "367 days"] {
        let expected = (
            "22023".to_string(),
            "invalid grace: must be at most 366 days".to_string(),
        );
        assert_eq!(
            db_error(as_manager(
                &mut c,
                &p.manager.token,
                &rotate(&p.reader.key_id, grace)
            )),
            expected,
            "as the partner, {grace}"
        );
        assert_eq!(
            db_error(p.su.query(&rotate(&p.reader.key_id, grace), &[])),
            expected,
            "as an operator, {grace}"
        );
    }
    let before = keys_of(&mut p.su, p.partner);
    let mut tokens = vec![p.reader.token.clone()];
    let mut key_id = p.reader.key_id.clone();
    for _ in 0..5 {
        let rotated = as_manager(&mut c, &p.manager.token, &rotate(&key_id, "366 days"))
            .expect("rotate with the longest grace")
            .remove(0);
        let (new_key_id, token) = rotated.split_once(' ').expect("key_id and token");
        key_id = new_key_id.to_string();
        tokens.push(token.to_string());
    }
    assert_eq!(keys_of(&mut p.su, p.partner), before + 5);
    let reasons: Vec<String> = tokens.iter().map(|t| reason(&mut p.su, t)).collect();
    assert_eq!(
        reasons,
        ["revoked", "revoked", "revoked", "revoked", "ok", "ok"],
        "only the newest key and its one predecessor in grace are live"
    );
    let ended: i64 =
        p.su.query_one(
            "SELECT count(*) FROM apikey.audit_log WHERE action = 'revoke' AND reason = 'rotated' \
             AND detail ? 'grace_ended_by_rotation_of' AND partner_id = $1",
            &[&p.partner],
        )
        .expect("audit rows")
        .get(0);
    assert_eq!(ended, 4, "each ended grace is audited");
}

#[test]
fn a_partner_cannot_touch_an_operator_key_of_its_own_partner() {
    let mut p = partner();
    let mut c = partner_login(&mut p.su);
    let key = &p.operator_of_own_partner.key_id;
    for call in [
        format!("SELECT key_id FROM apikey_rotate('{key}')"),
        format!("SELECT key_id FROM apikey_rotate('{key}', '0', '{{orders:read}}')"),
        format!("SELECT apikey_revoke('{key}')::text"),
        format!("SELECT 'done' FROM apikey_set_enabled('{key}', false)"),
    ] {
        assert_eq!(
            sqlstate(as_manager(&mut c, &p.manager.token, &call)),
            INSUFFICIENT_PRIVILEGE,
            "{call}"
        );
    }
    let star = issue(&mut p.su, p.partner, &["*"]);
    let call = format!("SELECT key_id FROM apikey_rotate('{}')", star.key_id);
    assert_eq!(
        sqlstate(as_manager(&mut c, &p.manager.token, &call)),
        INSUFFICIENT_PRIVILEGE
    );
    assert_eq!(reason(&mut p.su, &p.operator_of_own_partner.token), "ok");
}

#[test]
fn the_shim_narrowed_to_a_partner_is_bound_the_same_way() {
    let mut p = partner();
    let name = login_role(
        &mut p.su,
        "escalation_shim",
        &["apikey_verifier", "apikey_admin", "apikey_partner"],
    );
    let mut c = connect(&name);
    let mut tx = c.transaction().expect("begin");
    tx.query_one(
        "SELECT valid FROM apikey_verify($1, '{keys:manage}')",
        &[&p.manager.token],
    )
    .expect("verify");
    tx.batch_execute("SET LOCAL ROLE apikey_partner")
        .expect("narrow");
    let result = tx.query(
        "SELECT key_id FROM apikey_rotate($1, '0', '{admin:*}')",
        &[&p.reader.key_id],
    );
    assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE);
}

#[test]
fn operators_may_give_any_valid_scopes() {
    let mut p = partner();
    let rotated: String =
        p.su.query_one(
            "SELECT key_id FROM apikey_rotate($1, '0', '{admin:*}')",
            &[&p.reader.key_id],
        )
        .expect("an operator widens a key")
        .get(0);
    assert_eq!(scopes_of(&mut p.su, &rotated), ["admin:*"]);
}

#[test]
fn over_http_a_partner_key_cannot_mint_an_operator_token() {
    let mut p = partner();
    let shim = Shim::start();
    let before = keys_of(&mut p.su, p.partner);
    for scopes in [
        json!(["admin:*"]),
        json!(["*"]),
        json!(["orders:read", "keys:manage"]),
    ] {
        let response = shim.post_as(
            &p.manager.token,
            &format!("/v1/keys/{}/rotate", p.reader.key_id),
            &json!({ "scopes": scopes }),
        );
        assert_eq!(response.status, 403, "{scopes}: {}", response.body);
        assert_eq!(response.reason(), "forbidden");
    }
    let response = shim.post_as(
        &p.manager.token,
        &format!("/v1/keys/{}/rotate", p.operator_of_own_partner.key_id),
        &json!({}),
    );
    assert_eq!(response.status, 403, "{}", response.body);
    assert_eq!(keys_of(&mut p.su, p.partner), before, "no key was minted");

    let response = shim.post_as(
        &p.manager.token,
        &format!("/v1/keys/{}/rotate", p.wide.key_id),
        &json!({ "scopes": ["orders:read"] }),
    );
    assert_eq!(response.status, 201, "{}", response.body);
    assert_eq!(response.json()["key"]["scopes"], json!(["orders:read"]));
    let token = response.json()["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let listed = shim.get_as(&token, "/v1/keys");
    assert_eq!(
        listed.status, 403,
        "the narrowed key cannot manage: {}",
        listed.body
    );
}
