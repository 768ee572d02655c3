//! Events and webhooks. So far `apikey_webhook_verify`, which applications call to check a
//! Standard Webhooks signature: the reference vector, fresh signatures against the clock,
//! every way a message can be wrong, bad arguments and who may call it.

use apikey_tests::postgres::Client;
use apikey_tests::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

// The reference vector of the Standard Webhooks libraries
// (github.com/standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py,
// test_sign_function).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TIMESTAMP: i64 = 1614265330;
const PAYLOAD: &str = r#"{"test": 2432232314}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// Long enough for the vector's 2021 timestamp to be within it.
const FOREVER: &str = "100 years";

const CALL: &str = "SELECT apikey_webhook_verify($1, $2, $3, $4, $5, $6::text::interval)";

fn verify(
    c: &mut Client,
    secret: Option<&str>,
    msg_id: Option<&str>,
    timestamp: Option<i64>,
    payload: Option<&str>,
    signature: Option<&str>,
    tolerance: Option<&str>,
) -> Result<Option<bool>, postgres::Error> {
    c.query_one(
        CALL,
        &[
            &secret, &msg_id, &timestamp, &payload, &signature, &tolerance,
        ],
    )
    .map(|row| row.get(0))
}

/// A signature made here, independently of the extension: HMAC-SHA256 over
/// `id.timestamp.payload` with the secret's base64-decoded key.
fn sign(msg_id: &str, timestamp: i64, payload: &str) -> String {
    let key = STANDARD
        .decode(SECRET.strip_prefix("whsec_").expect("prefix"))
        .expect("base64 key");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{msg_id}.{timestamp}.{payload}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

#[test]
fn the_reference_vector_verifies_and_every_change_to_it_does_not() {
    let mut c = superuser();
    let ok = |c: &mut Client, id, ts, payload, sig| {
        verify(
            c,
            Some(SECRET),
            Some(id),
            Some(ts),
            Some(payload),
            Some(sig),
            Some(FOREVER),
        )
        .expect("verify")
    };
    assert_eq!(
        sign(MSG_ID, TIMESTAMP, PAYLOAD),
        SIGNATURE,
        "the test's own signer"
    );
    assert_eq!(
        ok(&mut c, MSG_ID, TIMESTAMP, PAYLOAD, SIGNATURE),
        Some(true)
    );
    // Without the prefix, and as one of several entries (a rotating secret).
    assert_eq!(
        verify(
            &mut c,
            Some(&SECRET["whsec_".len()..]),
            Some(MSG_ID),
            Some(TIMESTAMP),
            Some(PAYLOAD),
            Some(&format!("v1,AAAA {SIGNATURE}")),
            Some(FOREVER)
        )
        .expect("verify"),
        Some(true)
    );
    for (what, id, ts, payload, sig) in [
        ("another id", "msg_other", TIMESTAMP, PAYLOAD, SIGNATURE),
        (
            "another timestamp",
            MSG_ID,
            TIMESTAMP + 1,
            PAYLOAD,
            SIGNATURE,
        ),
        (
            "another body",
            MSG_ID,
            TIMESTAMP,
            r#"{"test": 2432232315}"#,
            SIGNATURE,
        ),
        (
            "a body with a space more",
            MSG_ID,
            TIMESTAMP,
            r#"{"test":  2432232314}"#,
            SIGNATURE,
        ),
        (
            "another signature",
            MSG_ID,
            TIMESTAMP,
            PAYLOAD,
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        ),
        ("no version", MSG_ID, TIMESTAMP, PAYLOAD, &SIGNATURE[3..]),
        (
            "another version",
            MSG_ID,
            TIMESTAMP,
            PAYLOAD,
            &SIGNATURE.replace("v1,", "v1a,"),
        ),
        ("an empty signature", MSG_ID, TIMESTAMP, PAYLOAD, ""),
        ("not base64", MSG_ID, TIMESTAMP, PAYLOAD, "v1,%%%"),
    ] {
        assert_eq!(ok(&mut c, id, ts, payload, sig), Some(false), "{what}");
    }
    // The default tolerance (5 minutes) refuses the 2021 timestamp: a replay.
    let default = c
        .query_one(
            "SELECT apikey_webhook_verify($1, $2, $3, $4, $5)",
            &[&SECRET, &MSG_ID, &TIMESTAMP, &PAYLOAD, &SIGNATURE],
        )
        .expect("verify")
        .get::<_, Option<bool>>(0);
    assert_eq!(default, Some(false));
}

#[test]
fn a_fresh_signature_verifies_within_the_tolerance_from_the_clock() {
    let mut c = superuser();
    let payload = r#"{"type":"key.revoked","data":{"key_id":"ak_live_0123456789abcdef"}}"#;
    let at = |c: &mut Client, ts: i64, tolerance: &str| {
        verify(
            c,
            Some(SECRET),
            Some("msg_1"),
            Some(ts),
            Some(payload),
            Some(&sign("msg_1", ts, payload)),
            Some(tolerance),
        )
        .expect("verify")
    };
    let now = unix_now();
    for (offset, tolerance, verified, what) in [
        (0, "5 minutes", true, "now"),
        (-240, "5 minutes", true, "4 minutes old"),
        (240, "5 minutes", true, "4 minutes ahead"),
        (-600, "5 minutes", false, "10 minutes old"),
        (600, "5 minutes", false, "10 minutes ahead"),
        (-600, "1 hour", true, "a wider tolerance"),
    ] {
        assert_eq!(
            at(&mut c, now + offset, tolerance),
            Some(verified),
            "{what}"
        );
    }
    // A megabyte of body is signed and checked like any other.
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1 << 20));
    let signed = sign("msg_big", now, &big);
    assert_eq!(
        verify(
            &mut c,
            Some(SECRET),
            Some("msg_big"),
            Some(now),
            Some(&big),
            Some(&signed),
            Some("5 minutes")
        )
        .expect("verify"),
        Some(true)
    );
}

#[test]
fn a_missing_part_of_the_message_is_false_and_a_bad_argument_an_error() {
    let mut c = superuser();
    let all = (
        Some(SECRET),
        Some(MSG_ID),
        Some(TIMESTAMP),
        Some(PAYLOAD),
        Some(SIGNATURE),
    );
    let (s, id, ts, p, sig) = all;
    for (what, args) in [
        ("no id", (s, None, ts, p, sig)),
        ("no timestamp", (s, id, None, p, sig)),
        ("no body", (s, id, ts, None, sig)),
        ("no signature", (s, id, ts, p, None)),
    ] {
        let (s, id, ts, p, sig) = args;
        assert_eq!(
            verify(&mut c, s, id, ts, p, sig, Some(FOREVER)).expect("verify"),
            Some(false),
            "{what}"
        );
    }
    let secret_like = "whsec_c2VjcmV0IGluIHRoZSBtZXNzYWdl!";
    for (what, secret, tolerance, expected) in [
        (
            "no secret",
            None,
            Some(FOREVER),
            ("22004", "secret must not be NULL".to_string()),
        ),
        (
            "an empty secret",
            Some("whsec_"),
            Some(FOREVER),
            ("22023", "invalid secret: is empty".into()),
        ),
        (
            "a secret that is not base64",
            Some(secret_like),
            Some(FOREVER),
            (
                "22023",
                "invalid secret: is not whsec_ followed by base64".into(),
            ),
        ),
        (
            "no tolerance",
            Some(SECRET),
            None,
            ("22004", "tolerance must not be NULL".into()),
        ),
        (
            "a negative tolerance",
            Some(SECRET),
            Some("-1 minute"),
            (
                "22023",
                "invalid tolerance: must be zero or more, and finite".into(),
            ),
        ),
    ] {
        let (code, message) = db_error(verify(&mut c, secret, id, ts, p, sig, tolerance));
        assert_eq!(
            (code.as_str(), message.clone()),
            (expected.0, expected.1),
            "{what}"
        );
        assert!(
            !message.contains("c2VjcmV0"),
            "{what}: the secret is never quoted"
        );
    }
}

#[test]
fn admins_and_partners_may_check_a_signature_and_nobody_else() {
    let mut admin = superuser();
    for role in ["apikey_admin", "apikey_partner"] {
        let login = login_role(&mut admin, "webhook_checker", &[role]);
        let mut c = connect(&login);
        assert_eq!(
            verify(
                &mut c,
                Some(SECRET),
                Some(MSG_ID),
                Some(TIMESTAMP),
                Some(PAYLOAD),
                Some(SIGNATURE),
                Some(FOREVER)
            )
            .expect("verify"),
            Some(true),
            "{role}"
        );
    }
    // apikey_verifier is kept to verification (the contract), and PUBLIC gets nothing.
    for groups in [&["apikey_verifier"][..], &[]] {
        let outsider = login_role(&mut admin, "webhook_outsider", groups);
        let mut c = connect(&outsider);
        let refused = verify(
            &mut c,
            Some(SECRET),
            Some(MSG_ID),
            Some(TIMESTAMP),
            Some(PAYLOAD),
            Some(SIGNATURE),
            Some(FOREVER),
        );
        assert_eq!(sqlstate(refused), "42501", "{groups:?}");
    }
}
