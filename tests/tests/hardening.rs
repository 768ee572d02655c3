//! What an attacker could make the shim and the extension pay or reveal: method headers a
//! client forges behind a gateway, slow and idle connections, huge required scopes, tokens
//! pasted into other fields, and management audit rows that must name the acting key. Also
//! verification under REPEATABLE READ, errors without Rust backtraces, append-only audit
//! triggers that replica mode cannot skip, what a rotated successor inherits, and the
//! query of a request given up on, which is cancelled rather than left running.

use apikey_tests::postgres::Client;
use apikey_tests::shim::{send, Shim, SHIM_ROLE};
use apikey_tests::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn setup() -> (Client, Uuid) {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    (c, partner)
}

fn audit_rows(c: &mut Client, key_id: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM apikey.audit_log WHERE key_id = $1",
        &[&key_id],
    )
    .expect("count audit rows")
    .get(0)
}

/// Reads from `stream` until the peer closes it, or panics after `limit`: a bound far above
/// the configured timeouts, so a slow machine cannot fail the test, but a connection the
/// shim never closes does.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(_) => {}
        }
        assert!(
            started.elapsed() < limit,
            "the shim kept the connection open for {limit:?}"
        );
    }
}

#[test]
fn method_headers_that_disagree_are_refused() {
    let (mut c, partner) = setup();
    let reader = issue(&mut c, partner, &["orders:read"]);
    let shim = Shim::start();
    let ask = |headers: &[(&str, &str)]| {
        let mut request = shim
            .request("GET", "/v1/verify?resource=orders")
            .set("X-API-Key", &reader.token);
        for (name, value) in headers {
            request = request.set(name, value);
        }
        send(request, None)
    };
    // The gateways chapter's nginx config sets X-Original-Method; a client adds X-Forwarded-Method.
    let forged = ask(&[
        ("X-Original-Method", "DELETE"),
        ("X-Forwarded-Method", "GET"),
    ]);
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert_eq!(forged.reason(), "bad_request");
    let forged = ask(&[
        ("X-Envoy-Original-Method", "GET"),
        ("X-Original-Method", "POST"),
    ]);
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert_eq!(ask(&[("X-Original-Method", "DELETE")]).status, 403);
    assert_eq!(ask(&[("X-Original-Method", "GET")]).status, 200);
    assert_eq!(
        ask(&[("X-Original-Method", "get"), ("X-Forwarded-Method", "GET")]).status,
        200,
        "agreeing headers are fine"
    );
}

#[test]
fn slow_headers_and_idle_connections_are_closed() {
    let shim = Shim::start_with(&[
        ("APIKEY_SHIM_HEADER_TIMEOUT_MS", "1000"),
        ("APIKEY_SHIM_IDLE_TIMEOUT_MS", "1500"),
    ]);
    let connect = || TcpStream::connect(("127.0.0.1", shim.port)).expect("connect");
    let limit = Duration::from_secs(20);

    // A partial request head, then nothing.
    let mut partial = connect();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    closed_within(&mut partial, limit);

    // One header line at a time, never finishing: closed although bytes keep coming.
    let mut trickle = connect();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .expect("write");
    let started = Instant::now();
    let mut closed = false;
    for i in 0..200 {
        std::thread::sleep(Duration::from_millis(100));
        if trickle
            .write_all(format!("X-Slow-{i}: {i}\r\n").as_bytes())
            .is_err()
        {
            closed = true;
            break;
        }
        assert!(
            started.elapsed() < limit,
            "a trickling client kept its connection"
        );
    }
    assert!(closed, "a trickling client was never cut off");

    // A kept-alive connection with no request in progress.
    let mut idle = connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let answer = closed_within(&mut idle, limit);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "the request itself was answered"
    );
    assert_eq!(shim.get("/healthz").status, 200, "the shim stays healthy");
}

#[test]
fn open_connections_are_bounded() {
    let shim = Shim::start_with(&[("APIKEY_SHIM_MAX_CONNECTIONS", "3")]);
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", shim.port)).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).expect("an answer while below the bound");
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            s
        })
        .collect();
    let mut waiting = TcpStream::connect(("127.0.0.1", shim.port)).expect("connect");
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    waiting
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let mut buf = [0u8; 512];
    assert!(
        waiting.read(&mut buf).is_err(),
        "a fourth connection is not served while three are open"
    );
    held.pop();
    let answer = closed_within(&mut waiting, Duration::from_secs(30));
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "served once a slot is free: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn huge_required_scopes_are_refused_before_they_cost_anything() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    let shim = Shim::start();
    let before = audit_rows(&mut c, &key.key_id);
    let huge = vec!["orders:write"; 8000].join(",");
    let response = send(
        shim.request("GET", "/v1/verify")
            .set("X-API-Key", &key.token)
            .set("X-Required-Scopes", &huge),
        None,
    );
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(response.json()["field"], "X-Required-Scopes");
    let long = format!("a:{}", "b".repeat(5000));
    let response = shim.get_as(&key.token, &format!("/v1/verify?scope={long}"));
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(response.body.len() < 1000, "{}", response.body);
    assert_eq!(
        audit_rows(&mut c, &key.key_id),
        before,
        "nothing was written"
    );
}

#[test]
fn an_audit_row_of_a_failure_is_bounded_whatever_is_required() {
    let (mut c, partner) = setup();
    let many: Vec<String> = (0..5000).map(|i| format!("r{i}:read")).collect();
    let long = vec![format!("a:{}", "b".repeat(100_000))];
    let mut keys = Vec::new();
    for required in [many, long] {
        // A key each: a key's failures of one reason are audited once a minute.
        let key = issue(&mut c, partner, &["orders:read"]);
        let reason: String = c
            .query_one(
                "SELECT reason FROM apikey_verify($1, $2)",
                &[&key.token, &required],
            )
            .expect("verify")
            .get(0);
        assert_eq!(reason, "insufficient_scope");
        keys.push(key.key_id);
    }
    let sizes: Vec<i32> = c
        .query(
            "SELECT length(detail::text) FROM apikey.audit_log \
             WHERE key_id = ANY ($1) AND action = 'verify_failed' ORDER BY id",
            &[&keys],
        )
        .expect("audit rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sizes.len(), 2);
    assert!(sizes.iter().all(|&s| s < 2000), "detail sizes {sizes:?}");
    let counts: Vec<i64> = c
        .query(
            "SELECT (detail->>'required_scope_count')::bigint FROM apikey.audit_log \
             WHERE key_id = ANY ($1) AND action = 'verify_failed' ORDER BY id",
            &[&keys],
        )
        .expect("audit rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        counts,
        [5000, 1],
        "the row still says how many were required"
    );
}

#[test]
fn management_audit_rows_name_the_acting_key_and_address() {
    let (mut c, partner) = setup();
    let operator = operator_key(&mut c);
    let manager = issue(&mut c, partner, &["keys:manage"]);
    let target = issue(&mut c, partner, &["orders:read"]);
    let other = issue(&mut c, partner, &["orders:read"]);
    let shim = Shim::start();
    let revoked = shim.post_as(
        &operator.token,
        &format!("/v1/keys/{}/revoke", target.key_id),
        &json!({}),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let disabled = shim.post_as(
        &manager.token,
        &format!("/v1/keys/{}/disable", other.key_id),
        &json!({}),
    );
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    c.execute("SELECT apikey_set_enabled($1, true)", &[&other.key_id])
        .expect("enable in SQL");
    let rows: Vec<(String, String, Option<String>, Option<String>)> = c
        .query(
            "SELECT action, actor, actor_key_id, host(client_ip) FROM apikey.audit_log \
             WHERE key_id = ANY ($1) AND action IN ('revoke', 'disable', 'enable') ORDER BY id",
            &[&vec![target.key_id.clone(), other.key_id.clone()]],
        )
        .expect("audit rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        rows,
        [
            (
                "revoke".to_string(),
                SHIM_ROLE.to_string(),
                Some(operator.key_id.clone()),
                Some("127.0.0.1".to_string())
            ),
            (
                "disable".to_string(),
                "apikey_partner".to_string(),
                Some(manager.key_id.clone()),
                Some("127.0.0.1".to_string())
            ),
            ("enable".to_string(), "postgres".to_string(), None, None),
        ]
    );
}

#[test]
fn verification_never_raises_under_repeatable_read() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    let mut a = superuser();
    let mut tx = a
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .expect("begin");
    tx.query_one("SELECT 1", &[]).expect("take the snapshot");
    // The row changes after the snapshot: a last_used_at write or a re-hash would now fail.
    c.execute("SELECT apikey_set_enabled($1, false)", &[&key.key_id])
        .expect("disable");
    c.execute("SELECT apikey_set_enabled($1, true)", &[&key.key_id])
        .expect("enable");
    let reason_in_tx = |tx: &mut postgres::Transaction<'_>| -> String {
        tx.query_one(
            "SELECT reason FROM apikey_verify($1, '{orders:read}')",
            &[&key.token],
        )
        .expect("verify never raises")
        .get(0)
    };
    assert_eq!(reason_in_tx(&mut tx), "ok");
    c.execute("SELECT apikey_revoke($1)", &[&key.key_id])
        .expect("revoke");
    assert_eq!(
        reason_in_tx(&mut tx),
        "revoked",
        "the latest committed state, not the snapshot's"
    );
    tx.commit().expect("commit");
}

/// In a `SQL_ASCII` database a string may hold any bytes: a token or a required scope that
/// is not UTF-8 is refused like any other bad token, never raised.
#[test]
fn verification_never_raises_on_bytes_that_are_not_utf8() {
    let mut dbs = Databases::default();
    let db = dbs.create_with(
        "apikey_sql_ascii",
        "TEMPLATE template0 ENCODING 'SQL_ASCII' LOCALE 'C'",
    );
    let mut c = connect_to("postgres", &db);
    c.batch_execute("SET client_min_messages = warning; CREATE EXTENSION apikey")
        .expect("CREATE EXTENSION apikey");
    let partner = create_partner(&mut c);
    let key = issue(&mut c, partner, &["orders:read"]);
    let reason_of = |c: &mut Client, token: &str, required: &str| -> String {
        c.query_one(
            &format!("SELECT reason FROM apikey_verify({token}, {required})"),
            &[],
        )
        .unwrap_or_else(|e| panic!("apikey_verify({token}, {required}) raised: {e:?}"))
        .get(0)
    };
    let not_utf8 = |bytes: &str| format!("convert_from('\\x{bytes}'::bytea, 'SQL_ASCII')");
    // A lone continuation byte, a cut sequence, an overlong NUL, a surrogate, and a real
    // token with one byte swapped for 0xff.
    for bytes in ["80", "c328", "c080", "eda080", "ff"] {
        assert_eq!(
            reason_of(&mut c, &not_utf8(bytes), "'{}'"),
            "malformed",
            "{bytes}"
        );
    }
    let mut damaged = key.token.as_bytes().to_vec();
    let last = damaged.len() - 1;
    damaged[last] = 0xff;
    let damaged: String = damaged.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(reason_of(&mut c, &not_utf8(&damaged), "'{}'"), "malformed");
    let token = format!("'{}'", key.token);
    let required = format!("ARRAY[{}]", not_utf8("6f72646572733aff"));
    assert_eq!(reason_of(&mut c, &token, &required), "insufficient_scope");
    assert_eq!(reason_of(&mut c, &token, "'{orders:read}'"), "ok");
}

#[test]
fn errors_that_pass_through_the_extension_carry_no_rust_backtrace() {
    let (mut c, partner) = setup();
    let key = issue(&mut c, partner, &["orders:read"]);
    let mut a = superuser();
    let mut tx = a
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .expect("begin");
    tx.query_one("SELECT 1", &[]).expect("take the snapshot");
    c.execute("SELECT apikey_revoke($1)", &[&key.key_id])
        .expect("revoke");
    let result = tx.execute("SELECT apikey_set_enabled($1, false)", &[&key.key_id]);
    let error = result.expect_err("a lifecycle change of a row changed since the snapshot");
    let db = error.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "40001", "{db:?}");
    let text = format!("{:?} {:?} {:?}", db.message(), db.detail(), db.hint());
    for marker in ["backtrace", ".rs:", "rust_", "pgrx"] {
        assert!(!text.contains(marker), "{marker} in {text}");
    }
}

#[test]
fn replica_mode_does_not_open_the_audit_log() {
    let mut c = superuser();
    let mut tx = c.transaction().expect("begin");
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .expect("replica mode");
    for statement in [
        "DELETE FROM apikey.audit_log WHERE id = (SELECT min(id) FROM apikey.audit_log)",
        "UPDATE apikey.audit_log SET reason = 'x' WHERE id = (SELECT min(id) FROM apikey.audit_log)",
        "TRUNCATE apikey.audit_log",
    ] {
        let mut sp = tx.transaction().expect("savepoint");
        let code = sqlstate(sp.batch_execute(statement));
        assert_eq!(code, "42501", "{statement}");
    }
}

#[test]
fn a_rotated_successor_keeps_the_enabled_state_and_not_before() {
    let (mut c, partner) = setup();
    let key = issue_with(
        &mut c,
        "$1, '{orders:read}', not_before => now() + interval '1 hour'",
        &[&partner],
    );
    c.execute("SELECT apikey_set_enabled($1, false)", &[&key.key_id])
        .expect("disable");
    let successor: String = c
        .query_one("SELECT key_id FROM apikey_rotate($1)", &[&key.key_id])
        .expect("rotate")
        .get(0);
    let row = c
        .query_one(
            "SELECT n.enabled, n.not_before = o.not_before \
             FROM apikey.keys n, apikey.keys o WHERE n.key_id = $1 AND o.key_id = $2",
            &[&successor, &key.key_id],
        )
        .expect("both rows");
    assert!(
        !row.get::<_, bool>(0),
        "a disabled key's successor is disabled"
    );
    assert!(row.get::<_, bool>(1), "and not valid before the same time");
}

#[test]
fn a_request_that_gives_up_cancels_its_query_and_frees_its_connection() {
    let (mut c, partner) = setup();
    let operator = operator_key(&mut c);
    let key = issue(&mut c, partner, &["a:b"]);
    // The connection string sets its own statement_timeout (far away), which the shim
    // keeps: only cancelling the abandoned query can free the server's backend.
    let database_url = format!(
        "host={} port={} user={SHIM_ROLE} dbname={} options='-c statement_timeout=600000'",
        std::env::var("APIKEY_TEST_PGHOST").expect("APIKEY_TEST_PGHOST"),
        std::env::var("APIKEY_TEST_PGPORT").expect("APIKEY_TEST_PGPORT"),
        std::env::var("APIKEY_TEST_PGDATABASE").expect("APIKEY_TEST_PGDATABASE"),
    );
    let shim = Shim::start_with(&[
        ("DATABASE_URL", &database_url),
        ("APIKEY_SHIM_POOL_SIZE", "1"),
        ("APIKEY_SHIM_REQUEST_TIMEOUT_MS", "1000"),
    ]);
    let mut holder = superuser();
    let mut lock = holder.transaction().expect("begin");
    let holder_pid: i32 = lock
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    lock.execute(
        "SELECT 1 FROM apikey.keys WHERE key_id = $1 FOR UPDATE",
        &[&key.key_id],
    )
    .expect("lock the key's row");
    let revoke = shim.post_as(
        &operator.token,
        &format!("/v1/keys/{}/revoke", key.key_id),
        &json!({}),
    );
    assert_eq!(revoke.status, 503, "{}", revoke.body);
    assert_eq!(revoke.reason(), "unavailable", "{}", revoke.body);
    let blocked = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))";
    eventually("the abandoned revoke stops waiting for the lock", || {
        let n: i64 = c
            .query_one(blocked, &[&holder_pid])
            .expect("pg_stat_activity")
            .get(0);
        (n == 0).then_some(())
    });
    // The lock is still held; the shim's one pooled connection serves the next request.
    let verified = shim.get_as(&operator.token, "/v1/verify");
    assert_eq!(verified.status, 200, "{}", verified.body);
    lock.rollback().expect("rollback");
    let revoked: bool = c
        .query_one(
            "SELECT revoked_at IS NOT NULL FROM apikey.keys WHERE key_id = $1",
            &[&key.key_id],
        )
        .expect("key")
        .get(0);
    assert!(!revoked, "the cancelled revoke changed nothing");
}
