//! Credit balances of keys (`apikey_set_credits`, `apikey_add_credits`), partner-wide limits
//! (`apikey_partner_set_limits`, `apikey_partner_add_credits`) and `apikey_verify(..., cost)`,
//! against the test cluster (shared memory preloaded) and, for restarts and crashes, a cluster
//! of their own.

use apikey_tests::cluster::PrivateCluster;
use apikey_tests::postgres::Client;
use apikey_tests::*;
use std::time::Duration;

/// A key of a new partner with a rate no test here meets.
fn key(c: &mut Client) -> Issued {
    let partner = create_partner(c);
    issue_with(c, "$1, '{a:b}', rate_per_minute => 100000", &[&partner])
}

/// `apikey_verify` with a cost: (reason, credits_remaining).
fn spend(c: &mut Client, token: &str, cost: i32) -> (String, Option<i64>) {
    let row = c
        .query_one(
            "SELECT reason, credits_remaining FROM apikey_verify($1, '{}', NULL, $2)",
            &[&token, &cost],
        )
        .expect("apikey_verify");
    (row.get(0), row.get(1))
}

fn set(c: &mut Client, key_id: &str, remaining: Option<i64>) {
    c.execute("SELECT apikey_set_credits($1, $2)", &[&key_id, &remaining])
        .expect("apikey_set_credits");
}

/// One session per token, all at once, each verifying `tries` times at cost 1: how many
/// were accepted in all.
fn accepted_at_once(tokens: &[&str], tries: usize) -> usize {
    let sessions: Vec<_> = tokens
        .iter()
        .map(|token| {
            let token = token.to_string();
            std::thread::spawn(move || {
                let mut c = superuser();
                (0..tries)
                    .map(|_| spend(&mut c, &token, 1).0)
                    .filter(|r| r == "ok")
                    .count()
            })
        })
        .collect();
    sessions
        .into_iter()
        .map(|s| s.join().expect("session"))
        .sum()
}

#[test]
fn concurrent_verifications_spend_exactly_the_balance() {
    let mut c = superuser();
    let key = key(&mut c);
    set(&mut c, &key.key_id, Some(100));
    let accepted = accepted_at_once(&[key.token.as_str(); 8], 40);
    assert_eq!(accepted, 100, "8 sessions x 40 against 100 credits");
    assert_eq!(
        spend(&mut c, &key.token, 1),
        ("usage_exceeded".into(), Some(0))
    );
    // The refusal shows the key's identity (it is authentic) and takes nothing from the rate.
    let row = c
        .query_one(
            "SELECT valid, key_id, partner_id IS NOT NULL FROM apikey_verify($1)",
            &[&key.token],
        )
        .expect("verify");
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, Option<String>>(1),
            row.get::<_, bool>(2)
        ),
        (false, Some(key.key_id.clone()), true)
    );
}

#[test]
fn cost_is_checked_and_spent_all_or_nothing() {
    let mut c = superuser();
    let key = key(&mut c);
    assert_eq!(
        spend(&mut c, &key.token, 5),
        ("ok".into(), None),
        "no balance: unlimited"
    );
    set(&mut c, &key.key_id, Some(10));
    assert_eq!(spend(&mut c, &key.token, 3), ("ok".into(), Some(7)));
    assert_eq!(
        spend(&mut c, &key.token, 0),
        ("ok".into(), Some(7)),
        "cost 0 spends nothing"
    );
    assert_eq!(
        spend(&mut c, &key.token, 8),
        ("usage_exceeded".into(), Some(7))
    );
    assert_eq!(spend(&mut c, &key.token, 7), ("ok".into(), Some(0)));
    assert_eq!(spend(&mut c, &key.token, 0), ("ok".into(), Some(0)));
    assert_eq!(
        reason(&mut c, &key.token),
        "usage_exceeded",
        "three arguments spend 1"
    );
    for cost in [-1, 1_000_001, i32::MIN] {
        let error = c
            .query_one(
                "SELECT * FROM apikey_verify($1, '{}', NULL, $2)",
                &[&key.token, &cost],
            )
            .expect_err("an invalid cost raises");
        let db = error.as_db_error().expect("a database error");
        assert_eq!(
            (db.code().code(), db.detail()),
            ("22023", Some("argument: cost")),
            "cost {cost}: {}",
            db.message()
        );
    }
    assert_eq!(
        sqlstate(c.query_one(
            "SELECT * FROM apikey_verify($1, '{}', NULL, NULL)",
            &[&key.token]
        )),
        "22004"
    );
    assert_eq!(spend(&mut c, &key.token, 1_000_000).0, "usage_exceeded");
    // A failure before the balance (a wrong scope) spends nothing and shows no balance.
    set(&mut c, &key.key_id, Some(1));
    let row = c
        .query_one(
            "SELECT reason, credits_remaining FROM apikey_verify($1, '{x:y}', NULL, 1)",
            &[&key.token],
        )
        .expect("verify");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<i64>>(1)),
        ("insufficient_scope".into(), None)
    );
    assert_eq!(spend(&mut c, &key.token, 1), ("ok".into(), Some(0)));
}

#[test]
fn top_ups_charges_and_removal() {
    let mut c = superuser();
    let key = key(&mut c);
    set(&mut c, &key.key_id, Some(2));
    assert_eq!(spend(&mut c, &key.token, 2).1, Some(0));
    let add = |c: &mut Client, amount: i64| -> i64 {
        c.query_one("SELECT apikey_add_credits($1, $2)", &[&key.key_id, &amount])
            .expect("apikey_add_credits")
            .get(0)
    };
    assert_eq!(add(&mut c, 5), 5);
    assert_eq!(spend(&mut c, &key.token, 1).1, Some(4));
    // A charge after the fact may take the balance below zero; verification never does.
    assert_eq!(add(&mut c, -6), -2);
    assert_eq!(
        spend(&mut c, &key.token, 0),
        ("usage_exceeded".into(), Some(-2))
    );
    // A top-up in a transaction that rolls back adds nothing.
    c.batch_execute("BEGIN").expect("begin");
    assert_eq!(add(&mut c, 100), 98);
    c.batch_execute("ROLLBACK").expect("rollback");
    assert_eq!(spend(&mut c, &key.token, 0).1, Some(-2));
    set(&mut c, &key.key_id, None);
    assert_eq!(
        spend(&mut c, &key.token, 50),
        ("ok".into(), None),
        "unlimited again"
    );
    assert_eq!(
        sqlstate(c.query_one("SELECT apikey_add_credits($1, 1)", &[&key.key_id])),
        "55000",
        "no balance to add to"
    );
    for (args, code) in [
        ("NULL::text, 1::bigint", "22004"),
        ("'nope_live_0000000000000000', 1::bigint", "P0002"),
        ("$1, -1::bigint", "22023"),
        ("$1, 5::bigint, 5::bigint", "22004"),
        ("$1, 5::bigint, -1::bigint, '1 day'::interval", "22023"),
        ("$1, 5::bigint, 1::bigint, '0.5 seconds'::interval", "22023"),
        ("$1, 5::bigint, 1::bigint, '-1 day'::interval", "22023"),
        (
            "$1, 5::bigint, 1::bigint, '1 month -40 days'::interval",
            "22023",
        ),
        ("$1, NULL::bigint, 1::bigint, '1 day'::interval", "22004"),
    ] {
        let sql = format!("SELECT apikey_set_credits({args})");
        let result = if args.contains("$1") {
            c.query_one(&sql, &[&key.key_id])
        } else {
            c.query_one(&sql, &[])
        };
        assert_eq!(sqlstate(result), code, "{args}");
    }
    // Balances are money: a partner cannot top up its own key.
    let role = login_role(&mut c, "credits_partner", &["apikey_partner"]);
    let mut partner = connect(&role);
    assert_eq!(
        sqlstate(partner.query_one("SELECT apikey_add_credits($1, 1000)", &[&key.key_id])),
        "42501"
    );
    assert_eq!(
        sqlstate(partner.query_one("SELECT count(*) FROM apikey.key_credits", &[])),
        "42501"
    );
    let audited: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.audit_log WHERE key_id = $1 \
             AND action IN ('credits_set', 'credits_added', 'credits_charged')",
            &[&key.key_id],
        )
        .expect("audit")
        .get(0);
    assert_eq!(
        audited, 4,
        "set, add, charge, set NULL (the rolled-back add left nothing)"
    );
}

#[test]
fn a_rotation_family_spends_one_balance() {
    let mut c = superuser();
    let old = key(&mut c);
    set(&mut c, &old.key_id, Some(5));
    assert_eq!(spend(&mut c, &old.token, 1).1, Some(4));
    let row = c
        .query_one(
            "SELECT key_id, token FROM apikey_rotate($1, grace => '1 hour')",
            &[&old.key_id],
        )
        .expect("rotate");
    let new = Issued {
        key_id: row.get(0),
        token: row.get(1),
    };
    assert_eq!(spend(&mut c, &new.token, 2).1, Some(2));
    assert_eq!(
        spend(&mut c, &old.token, 2).1,
        Some(0),
        "the old token spends the successor's"
    );
    assert_eq!(spend(&mut c, &new.token, 1).0, "usage_exceeded");
    assert_eq!(spend(&mut c, &old.token, 1).0, "usage_exceeded");
    assert_eq!(
        sqlstate(c.query_one("SELECT apikey_add_credits($1, 1)", &[&old.key_id])),
        "55000",
        "the old key holds no balance of its own"
    );
    let balance: i64 = c
        .query_one("SELECT apikey_add_credits($1, 3)", &[&new.key_id])
        .expect("top up the successor")
        .get(0);
    assert_eq!(balance, 3);
    assert_eq!(spend(&mut c, &old.token, 3).1, Some(0));
}

#[test]
fn a_balance_refills_on_its_schedule() {
    let mut c = superuser();
    let key = key(&mut c);
    c.execute(
        "SELECT apikey_set_credits($1, 2, 3, '2 seconds')",
        &[&key.key_id],
    )
    .expect("set with a refill");
    assert_eq!(spend(&mut c, &key.token, 2).1, Some(0));
    assert_eq!(spend(&mut c, &key.token, 1).0, "usage_exceeded");
    let reset: Option<i32> = c
        .query_one(
            "SELECT rate_reset_seconds FROM apikey_verify($1)",
            &[&key.token],
        )
        .expect("verify")
        .get(0);
    assert!(
        reset.is_some_and(|s| (1..=2).contains(&s)),
        "usage_exceeded: seconds until the refill, {reset:?}"
    );
    let refilled = eventually("the refill", || {
        std::thread::sleep(Duration::from_millis(100));
        let (reason, left) = spend(&mut c, &key.token, 1);
        (reason == "ok").then_some(left)
    });
    assert_eq!(refilled, Some(2), "set back to 3, one spent");
    // The refill sets the balance back, it does not add: two more, then short until the next.
    assert_eq!(spend(&mut c, &key.token, 2).1, Some(0));
    assert_eq!(spend(&mut c, &key.token, 1).0, "usage_exceeded");
}

#[test]
fn a_key_can_be_issued_with_its_balance() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let key = issue_with(
        &mut c,
        "$1, '{a:b}', credits => 3, credits_refill_amount => 10, \
         credits_refill_interval => '1 day'",
        &[&partner],
    );
    assert_eq!(spend(&mut c, &key.token, 3), ("ok".into(), Some(0)));
    assert_eq!(spend(&mut c, &key.token, 1).0, "usage_exceeded");
    let row = c
        .query_one(
            "SELECT c.refill_amount, c.next_refill_at = c.set_at + interval '1 day', \
                a.detail -> 'credits' ->> 'remaining' \
             FROM apikey.key_credits c JOIN apikey.audit_log a USING (key_id) \
             WHERE key_id = $1 AND a.action = 'issue'",
            &[&key.key_id],
        )
        .expect("the stored balance and the issue's audit row");
    assert_eq!(
        (
            row.get::<_, Option<i64>>(0),
            row.get::<_, bool>(1),
            row.get::<_, Option<String>>(2)
        ),
        (Some(10), true, Some("3".into()))
    );
    for (args, detail) in [
        ("credits => -1", "argument: credits"),
        (
            "credits_refill_amount => 5",
            "argument: credits_refill_interval",
        ),
        (
            "credits_refill_amount => 5, credits_refill_interval => '1 day'",
            "argument: credits",
        ),
    ] {
        let error = c
            .query_one(
                &format!("SELECT * FROM apikey_issue($1, '{{a:b}}', {args})"),
                &[&partner],
            )
            .expect_err(args);
        let db = error.as_db_error().expect("a database error");
        assert_eq!(
            (db.code().code() < "23", db.detail()),
            (true, Some(detail)),
            "{args}"
        );
    }
    let keys: i64 = c
        .query_one(
            "SELECT count(*) FROM apikey.keys WHERE partner_id = $1",
            &[&partner],
        )
        .expect("count keys")
        .get(0);
    assert_eq!(keys, 1, "a refused issue leaves no key behind");
}

#[test]
fn usage_counts_the_credits_spent() {
    let mut c = superuser();
    let key = key(&mut c);
    let partner = partner_of(&mut c, &key.key_id);
    let unmetered = issue_with(&mut c, "$1, '{a:b}'", &[&partner]);
    set(&mut c, &key.key_id, Some(10));
    assert_eq!(spend(&mut c, &key.token, 3).0, "ok");
    assert_eq!(spend(&mut c, &key.token, 4).0, "ok");
    assert_eq!(spend(&mut c, &key.token, 4).0, "usage_exceeded");
    assert_eq!(spend(&mut c, &unmetered.token, 4).0, "ok");
    let report = |c: &mut Client, sql: &str, key_id: &str| -> Vec<(String, i64, i64)> {
        c.query(sql, &[&key_id])
            .expect("usage")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    let expected = vec![
        ("ok".to_string(), 2, 7),
        ("usage_exceeded".to_string(), 1, 0),
    ];
    let from_function = "SELECT reason, sum(count)::bigint, sum(spent)::bigint \
        FROM apikey_usage($1) GROUP BY 1 ORDER BY 1";
    assert_eq!(report(&mut c, from_function, &key.key_id), expected);
    assert_eq!(
        report(&mut c, from_function, &unmetered.key_id),
        vec![("ok".to_string(), 1, 0)],
        "a key without a balance spends nothing"
    );
    let from_table = "SELECT reason, sum(count)::bigint, sum(spent)::bigint \
        FROM apikey.usage WHERE key_id = $1 GROUP BY 1 ORDER BY 1";
    eventually("the worker writes what was spent", || {
        (report(&mut c, from_table, &key.key_id) == expected).then_some(())
    });
    assert_eq!(
        report(&mut c, from_function, &key.key_id),
        expected,
        "written counts are not added twice"
    );
}

#[test]
fn a_shortage_is_announced_once_until_the_balance_is_topped_up() {
    let mut c = superuser();
    let key = key(&mut c);
    let partner = partner_of(&mut c, &key.key_id);
    let endpoint: uuid::Uuid = c
        .query_one(
            "SELECT endpoint_id FROM apikey_webhook_create($1, 'http://127.0.0.1:9/unused', \
                '{partner.*,key.credits_exhausted}')",
            &[&partner],
        )
        .expect("an endpoint for credit events")
        .get(0);
    set(&mut c, &key.key_id, Some(1));
    c.execute(
        "SELECT apikey_partner_set_limits($1, credits => 2)",
        &[&partner],
    )
    .expect("a partner balance");
    let events = |c: &mut Client| -> Vec<(String, Option<i64>)> {
        c.query(
            "SELECT type, (payload -> 'data' ->> 'credits_remaining')::bigint \
             FROM apikey.events WHERE partner_id = $1 AND type LIKE '%credits_exhausted' \
             ORDER BY created_at",
            &[&partner],
        )
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    assert_eq!(spend(&mut c, &key.token, 1).0, "ok");
    for _ in 0..5 {
        assert_eq!(spend(&mut c, &key.token, 1).0, "usage_exceeded");
    }
    let key_event = ("key.credits_exhausted".to_string(), Some(0));
    eventually("the key's shortage is announced", || {
        (events(&mut c) == vec![key_event.clone()]).then_some(())
    });
    // Topped up, then short again: a new shortage. The partner's balance runs out first
    // this time (1 left of 2).
    assert_eq!(
        c.query_one("SELECT apikey_add_credits($1, 10)", &[&key.key_id])
            .expect("top up")
            .get::<_, i64>(0),
        10
    );
    assert_eq!(spend(&mut c, &key.token, 1).0, "ok");
    for _ in 0..3 {
        assert_eq!(spend(&mut c, &key.token, 1).0, "usage_exceeded");
    }
    let partner_event = ("partner.credits_exhausted".to_string(), Some(0));
    eventually("the partner's shortage is announced", || {
        (events(&mut c) == vec![key_event.clone(), partner_event.clone()]).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(
        events(&mut c).len(),
        2,
        "once per shortage, over several flushes"
    );
    let (named, deliveries): (Option<String>, i64) = {
        let row = c
            .query_one(
                "SELECT (SELECT payload -> 'data' ->> 'name' FROM apikey.events \
                    WHERE partner_id = $1 AND type = 'partner.credits_exhausted'), \
                    (SELECT count(*) FROM apikey.webhook_deliveries WHERE endpoint_id = $2)",
                &[&partner, &endpoint],
            )
            .expect("deliveries");
        (row.get(0), row.get(1))
    };
    assert!(named.is_some(), "the partner event names the partner");
    assert_eq!(
        deliveries, 2,
        "partner.* and key.credits_exhausted both delivered"
    );
}

fn partner_of(c: &mut Client, key_id: &str) -> uuid::Uuid {
    c.query_one(
        "SELECT partner_id FROM apikey.keys WHERE key_id = $1",
        &[&key_id],
    )
    .expect("partner of a key")
    .get(0)
}

#[test]
fn two_keys_of_a_partner_spend_one_partner_balance() {
    let mut c = superuser();
    let first = key(&mut c);
    let partner = partner_of(&mut c, &first.key_id);
    let second = issue_with(
        &mut c,
        "$1, '{a:b}', rate_per_minute => 100000",
        &[&partner],
    );
    c.execute(
        "SELECT apikey_partner_set_limits($1, credits => 5)",
        &[&partner],
    )
    .expect("apikey_partner_set_limits");
    let tokens = [&first, &second, &first, &second].map(|k| k.token.as_str());
    let accepted = accepted_at_once(&tokens, 10);
    assert_eq!(accepted, 5, "4 sessions x 10 over two keys against 5");
    assert_eq!(
        spend(&mut c, &second.token, 1),
        ("usage_exceeded".into(), Some(0))
    );

    // All or nothing: a key balance is not spent when the partner's is short, and the
    // smaller of the two is what verification reports.
    set(&mut c, &first.key_id, Some(10));
    let add = |c: &mut Client, amount: i64| -> i64 {
        c.query_one(
            "SELECT apikey_partner_add_credits($1, $2)",
            &[&partner, &amount],
        )
        .expect("apikey_partner_add_credits")
        .get(0)
    };
    assert_eq!(add(&mut c, 3), 3);
    assert_eq!(spend(&mut c, &first.token, 2), ("ok".into(), Some(1)));
    assert_eq!(
        spend(&mut c, &first.token, 2),
        ("usage_exceeded".into(), Some(1))
    );
    assert_eq!(spend(&mut c, &second.token, 1), ("ok".into(), Some(0)));
    c.execute("SELECT apikey_partner_set_limits($1)", &[&partner])
        .expect("remove the partner's limits");
    assert_eq!(
        balance(&mut c, &first.token),
        Some(8),
        "the key paid only for what it was granted"
    );
    assert_eq!(spend(&mut c, &second.token, 100).1, None, "unlimited again");
    assert_eq!(
        sqlstate(c.query_one("SELECT apikey_partner_add_credits($1, 1)", &[&partner])),
        "55000",
        "no partner balance to add to"
    );
}

#[test]
fn a_partner_rate_is_shared_by_its_keys() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let fast = issue_with(
        &mut c,
        "$1, '{a:b}', rate_per_minute => 100000",
        &[&partner],
    );
    let slow = issue_with(&mut c, "$1, '{a:b}', rate_per_minute => 2", &[&partner]);
    c.execute(
        "SELECT apikey_partner_set_limits($1, rate_per_minute => 3)",
        &[&partner],
    )
    .expect("a partner rate");
    let verify = |c: &mut Client, token: &str| -> (String, Option<i32>) {
        let row = c
            .query_one(
                "SELECT reason, rate_remaining FROM apikey_verify($1)",
                &[&token],
            )
            .expect("verify");
        (row.get(0), row.get(1))
    };
    assert_eq!(verify(&mut c, &fast.token), ("ok".into(), Some(2)));
    assert_eq!(verify(&mut c, &slow.token), ("ok".into(), Some(1)));
    assert_eq!(verify(&mut c, &fast.token), ("ok".into(), Some(0)));
    assert_eq!(verify(&mut c, &slow.token).0, "rate_limited");
    assert_eq!(verify(&mut c, &fast.token).0, "rate_limited");
    c.execute("SELECT apikey_partner_set_limits($1)", &[&partner])
        .expect("remove the partner rate");
    // The refusal by the partner's bucket gave the key's token back: one of two is left.
    assert_eq!(verify(&mut c, &slow.token), ("ok".into(), Some(0)));
    assert_eq!(verify(&mut c, &slow.token).0, "rate_limited");
}

#[test]
fn each_bucket_is_told_apart_by_apikey_last_rates() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let own = issue_with(&mut c, "$1, '{a:b}', rate_per_minute => 50", &[&partner]);
    let other = issue_with(&mut c, "$1, '{a:b}', rate_per_minute => 50", &[&partner]);
    let last = |c: &mut Client, token: &str, key_id: &str| -> Option<Vec<Option<i32>>> {
        c.query_one("SELECT reason FROM apikey_verify($1)", &[&token])
            .expect("verify");
        c.query_one("SELECT apikey_last_rates($1)", &[&key_id])
            .expect("apikey_last_rates")
            .get(0)
    };
    assert_eq!(
        last(&mut c, &own.token, &own.key_id),
        None,
        "no partner rate: nothing to tell apart"
    );
    c.execute(
        "SELECT apikey_partner_set_limits($1, rate_per_minute => 10)",
        &[&partner],
    )
    .expect("a partner rate");
    let rates = last(&mut c, &own.token, &own.key_id).expect("both buckets");
    assert_eq!(
        (rates[0], rates[2], rates[3]),
        (Some(48), Some(10), Some(9)),
        "key left (after two verifications), partner quota, partner left: {rates:?}"
    );
    assert_eq!(
        c.query_one("SELECT apikey_last_rates($1)", &[&other.key_id])
            .expect("another key")
            .get::<_, Option<Vec<Option<i32>>>>(0),
        None,
        "only the key the last verification verified"
    );
    // Another last character (a token ending in x once made this the token itself).
    let (head, last_char) = own.token.split_at(own.token.len() - 1);
    let wrong = format!("{head}{}", if last_char == "x" { "y" } else { "x" });
    assert_eq!(last(&mut c, &wrong, &own.key_id), None, "a failed proof");
    let verifier = login_role(&mut c, "last_rates_verifier", &["apikey_verifier"]);
    assert!(
        last(&mut connect(&verifier), &other.token, &other.key_id).is_some(),
        "the verification-only role may ask too"
    );
}

#[test]
fn the_partner_bucket_is_its_own_ratelimit_policy_over_http() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    let fast = issue_with(
        &mut c,
        "$1, '{a:b}', rate_per_minute => 100000",
        &[&partner],
    );
    c.execute(
        "SELECT apikey_partner_set_limits($1, rate_per_minute => 2)",
        &[&partner],
    )
    .expect("a partner rate");
    let shim = apikey_tests::shim::Shim::start();
    let ok = shim.get_as(&fast.token, "/v1/verify");
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("ratelimit-policy"),
        Some("\"key\";q=100000;w=60, \"partner\";q=2;w=60")
    );
    let state = ok.header("ratelimit").expect("RateLimit");
    assert!(
        state.starts_with("\"key\";r=99999;t=1, \"partner\";r=1;t="),
        "{state}"
    );
    assert_eq!(shim.get_as(&fast.token, "/v1/verify").status, 200);
    let refused = shim.get_as(&fast.token, "/v1/verify");
    assert_eq!(
        (refused.status, refused.reason()),
        (429, "rate_limited".to_string())
    );
    let state = refused.header("ratelimit").expect("RateLimit on a 429");
    assert!(
        state.starts_with("\"key\";r=") && state.contains(", \"partner\";r=0;t="),
        "the key's bucket, and the partner's empty: {state}"
    );
    let retry: i64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        state.ends_with(&format!(";t={retry}")),
        "Retry-After is the partner's reset: {retry} in {state}"
    );
    assert!(
        (1..=30).contains(&retry),
        "one of 2 a minute back within 30 s: {retry}"
    );
}

#[test]
fn partner_limits_take_clear_errors_and_only_from_an_operator() {
    let mut c = superuser();
    let partner = create_partner(&mut c);
    for (args, code, detail) in [
        ("NULL::uuid", "22004", Some("argument: partner_id")),
        ("gen_random_uuid()", "P0002", None),
        ("$1, 0", "22023", Some("argument: rate_per_minute")),
        ("$1, NULL, -1", "22023", Some("argument: credits")),
        (
            "$1, NULL, 5, 5",
            "22004",
            Some("argument: credits_refill_interval"),
        ),
        (
            "$1, NULL, NULL, 5, '1 day'",
            "22004",
            Some("argument: credits"),
        ),
        (
            "$1, NULL, 5, 5, '0.5 seconds'",
            "22023",
            Some("argument: credits_refill_interval"),
        ),
        (
            "$1, NULL, 5, -5, '1 day'",
            "22023",
            Some("argument: credits_refill_amount"),
        ),
    ] {
        let sql = format!("SELECT apikey_partner_set_limits({args})");
        let result = if args.contains("$1") {
            c.query_one(&sql, &[&partner])
        } else {
            c.query_one(&sql, &[])
        };
        let error = result.expect_err(args);
        let db = error.as_db_error().expect("a database error");
        assert_eq!((db.code().code(), db.detail()), (code, detail), "{args}");
    }
    assert_eq!(
        sqlstate(c.query_one("SELECT apikey_partner_add_credits($1, NULL)", &[&partner])),
        "22004"
    );
    c.execute(
        "SELECT apikey_partner_set_limits($1, 60, 1000, 1000, '1 month')",
        &[&partner],
    )
    .expect("limits with a monthly refill");
    let (rate, remaining, next): (Option<i32>, i64, bool) = {
        let row = c
            .query_one(
                "SELECT p.rate_per_minute, c.remaining,                     c.next_refill_at = c.set_at + interval '1 month'                  FROM apikey.partners p JOIN apikey.partner_credits c USING (partner_id)                  WHERE partner_id = $1",
                &[&partner],
            )
            .expect("the stored limits");
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!((rate, remaining, next), (Some(60), 1000, true));
    let role = login_role(&mut c, "partner_limits_partner", &["apikey_partner"]);
    let mut own = connect(&role);
    for sql in [
        "SELECT apikey_partner_set_limits($1, credits => 1000000)",
        "SELECT apikey_partner_add_credits($1, 1000000)",
    ] {
        assert_eq!(sqlstate(own.query_one(sql, &[&partner])), "42501", "{sql}");
    }
    assert_eq!(
        sqlstate(own.query_one("SELECT count(*) FROM apikey.partner_credits", &[])),
        "42501"
    );
    let audited: Vec<String> = c
        .query(
            "SELECT action FROM apikey.audit_log WHERE partner_id = $1 AND key_id IS NULL \
             ORDER BY id",
            &[&partner],
        )
        .expect("audit")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        audited.ends_with(&["partner_limits_set".to_string()]),
        "{audited:?}"
    );
}

fn balance(c: &mut Client, token: &str) -> Option<i64> {
    spend(c, token, 0).1
}

#[test]
fn spending_is_written_by_the_worker_kept_by_a_restart_and_never_doubled_by_a_crash() {
    let cluster = PrivateCluster::start(&[
        "shared_preload_libraries = 'apikey'",
        "apikey.usage_flush_interval = '1h'",
    ]);
    let mut c = cluster.connect("apikey");
    let key = key(&mut c);
    set(&mut c, &key.key_id, Some(50));
    let partner = partner_of(&mut c, &key.key_id);
    c.execute(
        "SELECT apikey_partner_set_limits($1, credits => 1050)",
        &[&partner],
    )
    .expect("a partner balance");
    // The key's balance; the partner's, which the same verifications spend, is 1000 more.
    let stored = |c: &mut Client| -> i64 {
        let row = c
            .query_one(
                "SELECT k.remaining, p.remaining FROM apikey.key_credits k, \
                    apikey.partner_credits p WHERE k.key_id = $1 AND p.partner_id = $2",
                &[&key.key_id, &partner],
            )
            .expect("key_credits");
        let (key, partner): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(partner - key, 1000, "written in one transaction");
        key
    };
    for _ in 0..3 {
        assert_eq!(spend(&mut c, &key.token, 1).0, "ok");
    }
    // The flusher starts for the database and writes at once; then it waits an hour.
    eventually("the first write of spending", || {
        (stored(&mut c) == 47).then_some(())
    });
    for _ in 0..7 {
        assert_eq!(spend(&mut c, &key.token, 1).0, "ok");
    }
    assert_eq!(balance(&mut c, &key.token), Some(40));
    assert_eq!(stored(&mut c), 47, "the next write is an hour away");
    drop(c);
    cluster.restart();
    let mut c = cluster.connect("apikey");
    assert_eq!(
        balance(&mut c, &key.token),
        Some(40),
        "a clean restart keeps the balance"
    );
    let spent: i64 = c
        .query_one(
            "SELECT sum(spent)::bigint FROM apikey_usage($1)",
            &[&key.key_id],
        )
        .expect("usage")
        .get(0);
    assert_eq!(spent, 10, "and what usage says was spent");
    eventually("the shutdown wrote the spending", || {
        (stored(&mut c) == 40).then_some(())
    });

    for _ in 0..5 {
        assert_eq!(spend(&mut c, &key.token, 1).0, "ok");
    }
    kill_backend(c);
    let mut c = cluster.wait_until_up();
    // A crash may give back what was spent since the last write (5 here), never charge twice.
    let after = balance(&mut c, &key.token).expect("a balance");
    assert!(
        (35..=40).contains(&after),
        "balance after the crash: {after}"
    );
    assert_eq!(spend(&mut c, &key.token, 1).1, Some(after - 1));
    drop(c);
    cluster.restart();
    let mut c = cluster.connect("apikey");
    assert_eq!(balance(&mut c, &key.token), Some(after - 1));
}

#[test]
fn removed_balances_do_not_fill_the_shared_table() {
    let cluster = PrivateCluster::start(&[
        "shared_preload_libraries = 'apikey'",
        "apikey.max_keys = 100",
        "apikey.usage_flush_interval = '100ms'",
    ]);
    let mut c = cluster.connect("apikey");
    let key = key(&mut c);
    // Each set after a removal is a new balance (a new credit id) with its own shared entry;
    // its spending is written before it is removed, so only a sweep can reclaim the entry.
    for round in 0..110 {
        set(&mut c, &key.key_id, Some(5));
        let (reason, left) = eventually(
            &format!("round {round}: a new balance can be spent"),
            || {
                let answer = spend(&mut c, &key.token, 1);
                (answer.0 == "ok").then_some(answer)
            },
        );
        assert_eq!((reason.as_str(), left), ("ok", Some(4)));
        eventually(&format!("round {round}: the spending is written"), || {
            let stored: i64 = c
                .query_one(
                    "SELECT remaining FROM apikey.key_credits WHERE key_id = $1",
                    &[&key.key_id],
                )
                .expect("key_credits")
                .get(0);
            (stored == 4).then_some(())
        });
        set(&mut c, &key.key_id, None);
    }
}

#[test]
fn a_spent_balance_is_a_429_over_http() {
    let mut c = superuser();
    let key = key(&mut c);
    set(&mut c, &key.key_id, Some(10));
    let shim = apikey_tests::shim::Shim::start();
    let ok = shim.get_as(&key.token, "/v1/verify?cost=3");
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("ratelimit"),
        Some("\"key\";r=99999;t=1, \"credits\";r=7")
    );
    // A client appending its own cost to a gateway's URL can only raise it.
    let raised = shim.get_as(&key.token, "/v1/verify?cost=5&cost=1");
    assert_eq!(raised.status, 200);
    assert!(raised
        .header("ratelimit")
        .is_some_and(|f| f.ends_with("\"credits\";r=2")));
    let refused = shim.get_as(&key.token, "/v1/verify?cost=3");
    assert_eq!(
        (refused.status, refused.reason()),
        (429, "usage_exceeded".to_string())
    );
    assert_eq!(refused.header("ratelimit"), Some("\"credits\";r=2"));
    assert_eq!(
        refused.header("retry-after"),
        None,
        "no refill scheduled: no time to come back"
    );
    for bad in ["cost=-1", "cost=1000001", "cost=two", "cost="] {
        let answer = shim.get_as(&key.token, &format!("/v1/verify?{bad}"));
        assert_eq!(answer.status, 400, "{bad}");
    }
    assert_eq!(shim.get_as(&key.token, "/v1/verify?cost=2").status, 200);
    assert_eq!(shim.get_as(&key.token, "/v1/verify?cost=0").status, 200);

    // With a refill: come back when it is due.
    c.execute(
        "SELECT apikey_set_credits($1, 0, 5, '1 hour')",
        &[&key.key_id],
    )
    .expect("a balance with an hourly refill");
    let refused = shim.get_as(&key.token, "/v1/verify");
    assert_eq!(refused.status, 429);
    let retry: i64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After until the refill");
    assert!((3590..=3600).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        refused.header("ratelimit"),
        Some(format!("\"credits\";r=0;t={retry}").as_str())
    );
    assert!(
        !shim.log().contains(key.secret()),
        "no secret in the shim's log"
    );
}

#[test]
fn operators_set_and_top_up_balances_over_http_and_partners_read_their_own() {
    let mut c = superuser();
    let operator = operator_key(&mut c);
    let key = key(&mut c);
    let partner = partner_of(&mut c, &key.key_id);
    let manager = issue(&mut c, partner, &["keys:manage"]);
    let shim = apikey_tests::shim::Shim::start();
    let send = |token: &str, method: &str, path: &str, body: Option<serde_json::Value>| {
        let request = shim
            .request(method, path)
            .set("X-API-Key", token)
            .set("Content-Type", "application/json");
        apikey_tests::shim::send(request, body.map(|b| b.to_string()).as_deref())
    };
    let credits = format!("/v1/keys/{}/credits", key.key_id);
    let shown = shim.get_as(&operator.token, &credits);
    assert_eq!(shown.status, 200);
    assert_eq!(
        shown.json(),
        serde_json::json!({ "key_id": key.key_id, "credits": null })
    );
    let set = send(
        &operator.token,
        "PUT",
        &credits,
        Some(serde_json::json!({
            "remaining": 100, "refill_amount": 100, "refill_interval": "1 month"
        })),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    let balance = &set.json()["credits"];
    assert_eq!(balance["remaining"], 100);
    assert_eq!(balance["refill_interval"], "1 mon");
    assert!(balance["next_refill_at"].is_string());
    assert_eq!(shim.get_as(&key.token, "/v1/verify?cost=30").status, 200);
    let topped = send(
        &operator.token,
        "POST",
        &credits,
        Some(serde_json::json!({ "amount": 5 })),
    );
    assert_eq!(topped.status, 200);
    assert_eq!(
        topped.json()["credits"]["remaining"],
        75,
        "what verification spent is in the balance shown"
    );
    // A partner reads its own key's balance but cannot change it.
    let own = shim.get_as(&manager.token, &credits);
    assert_eq!(
        (own.status, own.json()["credits"]["remaining"].clone()),
        (200, 75.into())
    );
    let refused = send(
        &manager.token,
        "POST",
        &credits,
        Some(serde_json::json!({ "amount": 1000 })),
    );
    assert_eq!(
        (refused.status, refused.reason()),
        (403, "forbidden".to_string())
    );
    for (body, field) in [
        (serde_json::json!({ "remaining": -1 }), "remaining"),
        (
            serde_json::json!({ "remaining": 1, "refill_amount": 1, "refill_interval": "soon" }),
            "refill_interval",
        ),
        (
            serde_json::json!({ "remaining": 1, "refill_amount": 1, "refill_interval": "0.5 seconds" }),
            "refill_interval",
        ),
        (
            serde_json::json!({ "remaining": 1, "refill_amount": 1 }),
            "refill_interval",
        ),
    ] {
        let answer = send(&operator.token, "PUT", &credits, Some(body.clone()));
        assert_eq!(
            (answer.status, answer.json()["field"].clone()),
            (422, field.into()),
            "{body}"
        );
    }
    let missing = shim.get_as(&operator.token, "/v1/keys/ak_live_0000000000000000/credits");
    assert_eq!(missing.status, 404);

    // Partner-wide limits.
    let limits = format!("/v1/partners/{partner}/limits");
    let set = send(
        &operator.token,
        "PUT",
        &limits,
        Some(serde_json::json!({ "rate_per_minute": 500, "credits": 40 })),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.json()["rate_per_minute"], 500);
    assert_eq!(set.json()["credits"]["remaining"], 40);
    assert_eq!(shim.get_as(&key.token, "/v1/verify?cost=10").status, 200);
    let topped = send(
        &operator.token,
        "POST",
        &format!("/v1/partners/{partner}/credits"),
        Some(serde_json::json!({ "amount": -35 })),
    );
    assert_eq!(
        topped.json()["credits"]["remaining"],
        -5,
        "a charge may go below zero"
    );
    let refused = shim.get_as(&key.token, "/v1/verify?cost=0");
    assert_eq!(
        (
            refused.status,
            refused.header("ratelimit").map(str::to_string)
        ),
        (429, Some("\"credits\";r=0".to_string()))
    );
    let own = shim.get_as(&manager.token, &limits);
    assert_eq!(
        own.status, 429,
        "a balance below zero refuses management too"
    );
    c.execute("SELECT apikey_partner_add_credits($1, 100)", &[&partner])
        .expect("top up");
    for _ in 0..2 {
        let own = shim.get_as(&manager.token, &limits);
        assert_eq!(own.status, 200);
        assert_eq!(own.json()["rate_per_minute"], 500);
        assert_eq!(
            own.json()["credits"]["remaining"],
            95,
            "management spends no credits"
        );
    }
    let other = create_partner(&mut c);
    let hidden = shim.get_as(&manager.token, &format!("/v1/partners/{other}/limits"));
    assert_eq!(hidden.status, 404, "another partner's limits are not found");
    let cleared = send(&operator.token, "PUT", &limits, Some(serde_json::json!({})));
    assert_eq!(
        cleared.json(),
        serde_json::json!({ "partner_id": partner.to_string(), "rate_per_minute": null, "credits": null })
    );
}
