//! The key console (`/console`) in a real headless Chromium, driven over WebDriver, against
//! the real shim and the test cluster. Each test starts its own shim and browser and creates
//! its own partners and keys, so they run in parallel.
//!
//! The tests use only the selectors of the console's DOM contract (ids, `data-*` attributes);
//! what a click did is checked outside the browser too: tokens the page shows are verified with
//! real HTTP calls to `/v1/verify`, and changes are read back from the database.
//!
//! Screenshots of the main states go to `target/console-screenshots/` (paths are printed).

use apikey_tests::postgres::Client;
use apikey_tests::receiver::Receiver;
use apikey_tests::shim::Shim;
use apikey_tests::webdriver::Browser;
use apikey_tests::*;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;

// ---------------------------------------------------------------------------------------------
// The WebDriver client on its own
// ---------------------------------------------------------------------------------------------

#[test]
fn browser_starts_and_reads_a_page() {
    let browser = Browser::start();
    browser.goto(
        "data:text/html,<title>t</title><p id=greeting class=x data-n=7>Hello, <b>console</b></p>\
         <input id=name><select id=pick><option value=a>A</option><option value=b>B</option>\
         </select><p id=hidden hidden>not shown</p>",
    );
    let greeting = browser.find("#greeting");
    assert_eq!(greeting.text(), "Hello, console");
    assert_eq!(greeting.attr("data-n").as_deref(), Some("7"));
    assert_eq!(greeting.attr("data-missing"), None);
    assert_eq!(greeting.find("b").text(), "console");
    assert!(greeting.is_displayed());
    assert!(!browser.find("#hidden").is_displayed());
    assert_eq!(browser.find_all("p").len(), 2);
    assert!(browser.find_all("#nothing-here").is_empty());

    let name = browser.find("#name");
    name.send_keys("partner A");
    assert_eq!(name.value(), "partner A");
    name.clear();
    assert_eq!(name.value(), "");

    let pick = browser.find("#pick");
    browser.exec(
        "arguments[0].addEventListener('change', e => document.title = 'changed ' + e.target.value);",
        vec![pick.to_arg()],
    );
    pick.select_by_value("b");
    assert_eq!(pick.value(), "b");
    browser.wait_until("the change event fired", |b| {
        b.exec("return document.title;", vec![]) == json!("changed b")
    });
    assert_eq!(
        browser.exec(
            "return arguments[0] + arguments[1];",
            vec![json!(40), json!(2)]
        ),
        json!(42)
    );
    browser.wait_for_text("p", "console");

    browser.set_window_size(390, 844);
    assert_eq!(
        browser.exec("return [window.innerWidth, window.innerHeight];", vec![]),
        json!([390, 844]),
        "the viewport was resized"
    );
    let shot = browser.screenshot("webdriver-self-test");
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        shot.display()
    );
}

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// One test's world: its own shim and browser, a superuser connection and an operator
/// (`admin:*`) key of a partner no other test touches.
struct Console {
    shim: Shim,
    browser: Browser,
    db: RefCell<Client>,
    operator: Issued,
}

/// A partner created in SQL, with the name the console shows.
struct Partner {
    id: Uuid,
    name: String,
}

impl Console {
    fn start() -> Console {
        Console::start_with(&[])
    }

    /// With extra environment for the shim (e.g. webhook delivery, see `Shim::start_with`).
    fn start_with(env: &[(&str, &str)]) -> Console {
        let shim = Shim::start_with(env);
        let mut db = superuser();
        let operator = operator_key(&mut db);
        Console {
            shim,
            browser: Browser::start(),
            db: RefCell::new(db),
            operator,
        }
    }

    fn partner(&self) -> Partner {
        let name = unique("console");
        let id = self
            .db
            .borrow_mut()
            .query_one(
                "SELECT apikey_partner_create($1, 'ops@example.com')",
                &[&name],
            )
            .expect("apikey_partner_create")
            .get(0);
        Partner { id, name }
    }

    fn issue(&self, partner: &Partner, scopes: &[&str]) -> Issued {
        issue(&mut self.db.borrow_mut(), partner.id, scopes)
    }

    /// Loads the console, signed out.
    fn open(&self) {
        self.browser.goto(&self.shim.url("/console"));
        self.browser.find("#signin-form");
    }

    /// Signs in with `token` as a user would: paste it, submit; waits for `#whoami`.
    fn sign_in(&self, token: &str) {
        self.open();
        self.browser.find("#signin-key").send_keys(token);
        self.browser.click("#signin-submit");
        self.browser.wait_until("#whoami shows who signed in", |b| {
            b.find_all("#whoami")
                .first()
                .is_some_and(|w| w.is_displayed() && !w.text().trim().is_empty())
        });
    }

    /// A new partner with one `scopes` key, the operator signed in, and the key's row on
    /// screen as live: where most key-action tests start.
    fn operator_with_live_key(&self, scopes: &[&str]) -> (Partner, Issued) {
        let partner = self.partner();
        let key = self.issue(&partner, scopes);
        self.sign_in_as_operator();
        self.filter_keys(&partner.name);
        self.wait_for_status(&key.key_id, "live");
        (partner, key)
    }

    /// Opens the issue dialog with `partner_id` chosen.
    fn open_issue_dialog(&self, partner_id: &Uuid) {
        self.browser.click("#issue-open");
        self.wait_displayed("#issue-dialog");
        self.choose("#issue-partner", &partner_id.to_string());
    }

    fn sign_in_as_operator(&self) {
        self.sign_in(&self.operator.token);
        let whoami = self.browser.wait_for_text("#whoami", "operator");
        assert!(
            whoami.text().contains(&self.operator.key_id),
            "#whoami names the key: {:?}",
            whoami.text()
        );
    }

    /// Shows only the keys whose id, name or partner name contains `q`.
    fn filter_keys(&self, q: &str) {
        self.browser.click("#nav-keys");
        self.browser.find("#keys-view");
        let filter = self.browser.find("#filter-q");
        filter.clear();
        filter.send_keys(q);
        self.browser.click("#filter-apply");
    }

    fn row_selector(key_id: &str) -> String {
        format!("#keys-table tbody tr[data-key-id=\"{key_id}\"]")
    }

    /// The `data-status` of the key's row, if the table shows it.
    fn row_status(&self, key_id: &str) -> Option<String> {
        self.browser
            .exec(
                "const row = document.querySelector(arguments[0]);
                 return row ? row.getAttribute('data-status') : null;",
                vec![json!(Self::row_selector(key_id))],
            )
            .as_str()
            .map(str::to_string)
    }

    fn wait_for_status(&self, key_id: &str, status: &str) {
        self.browser.wait_until(
            &format!("the row of {key_id} has data-status {status:?}"),
            |_| self.row_status(key_id).as_deref() == Some(status),
        );
    }

    /// Clicks the row's button `data-action="<action>"`.
    fn row_action(&self, key_id: &str, action: &str) {
        self.browser.click(&format!(
            "{} button[data-action=\"{action}\"]",
            Self::row_selector(key_id)
        ));
    }

    /// Waits until the element (a view, a dialog) is in the page and displayed.
    fn wait_displayed(&self, css: &str) {
        self.browser
            .wait_until(&format!("{css} is displayed"), |b| {
                b.find_all(css).first().is_some_and(|d| d.is_displayed())
            });
    }

    /// Chooses `value` in a `<select>` once its options have loaded.
    fn choose(&self, css: &str, value: &str) {
        self.browser
            .wait_until(&format!("{css} offers the option {value:?}"), |b| {
                b.exec(
                    "const s = document.querySelector(arguments[0]);
                     return !!s && [...s.options].some(o => o.value === arguments[1]);",
                    vec![json!(css), json!(value)],
                ) == json!(true)
            });
        self.browser.find(css).select_by_value(value);
    }

    /// The token the one-time panel shows, once it is there.
    fn read_token_panel(&self) -> String {
        self.wait_displayed("#token-panel");
        self.browser.wait_until("#token-value holds a token", |b| {
            b.find_all("#token-value")
                .first()
                .is_some_and(|t| t.text().trim().len() > 20)
        });
        self.browser.find("#token-value").text().trim().to_string()
    }

    /// Closes the one-time panel and checks the token left the page.
    fn close_token_panel(&self, token: &str) {
        self.browser.click("#token-close");
        self.browser
            .wait_until("the token is gone from the page", |b| {
                token_in_page(b, token) == json!(false)
            });
    }

    /// The status and reason of `GET /v1/verify` with `token`.
    fn verify_http(&self, token: &str) -> (u16, String) {
        let response = self.shim.get_as(token, "/v1/verify");
        (response.status, response.reason())
    }

    /// The key id a live token belongs to, asked over HTTP.
    fn key_id_of(&self, token: &str) -> String {
        let response = self.shim.get_as(token, "/v1/verify");
        assert_eq!(response.status, 200, "{}", response.body);
        response
            .header("x-apikey-key-id")
            .expect("a 200 from /v1/verify names the key")
            .to_string()
    }

    fn key_count(&self, partner: Uuid) -> i64 {
        self.db
            .borrow_mut()
            .query_one(
                "SELECT count(*) FROM apikey.keys WHERE partner_id = $1",
                &[&partner],
            )
            .expect("count the partner's keys")
            .get(0)
    }

    fn screenshot(&self, name: &str) {
        let path = self.browser.screenshot(name);
        println!("screenshot {name}: {}", path.display());
    }
}

/// Whether `token` is anywhere in the page: its text, its markup, or a form field's value.
/// (Returned as JSON, `false` when absent, else where it was seen.)
fn token_in_page(browser: &Browser, token: &str) -> Value {
    browser.exec(
        "const t = arguments[0];
         const where = [];
         if (document.body.innerText.includes(t)) where.push('innerText');
         if (document.documentElement.outerHTML.includes(t)) where.push('markup');
         for (const f of document.querySelectorAll('input, textarea, select'))
           if (f.value && f.value.includes(t)) where.push('value of ' + (f.id || f.name || f.tagName));
         return where.length ? where : false;",
        vec![json!(token)],
    )
}

// ---------------------------------------------------------------------------------------------
// Security of the page itself
// ---------------------------------------------------------------------------------------------

#[test]
fn console_headers_forbid_framing_inline_script_and_referrers() {
    let shim = Shim::start();
    let page = shim.get("/console");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        page.header("content-type")
    );
    let csp = page
        .header("content-security-policy")
        .expect("/console sends a Content-Security-Policy");
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .or_else(|| {
            csp.split(';')
                .map(str::trim)
                .find(|d| d.starts_with("default-src"))
        })
        .unwrap_or_else(|| panic!("the CSP restricts scripts: {csp}"));
    assert!(script_src.contains("'self'"), "{csp}");
    assert!(
        !script_src.contains("'unsafe-inline'") && !script_src.contains("'unsafe-eval'"),
        "no inline script or eval: {csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert!(
        !page.body.contains("<script>") && !page.body.contains(" onclick="),
        "no inline script in index.html"
    );

    for (path, kind) in [
        ("/console/app.js", "javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let asset = shim.get(path);
        assert_eq!(asset.status, 200, "{path}");
        assert!(
            asset
                .header("content-type")
                .is_some_and(|t| t.contains(kind)),
            "{path}: {:?}",
            asset.header("content-type")
        );
    }
}

#[test]
fn the_key_stays_in_session_storage_and_sign_out_forgets_it() {
    let console = Console::start();
    console.open();
    console.screenshot("01-signed-out");
    console.sign_in_as_operator();
    let browser = &console.browser;
    let token = &console.operator.token;

    assert_eq!(
        browser.exec("return localStorage.length;", vec![]),
        json!(0)
    );
    assert_eq!(browser.exec("return document.cookie;", vec![]), json!(""));
    assert!(
        !browser.current_url().contains(token.as_str()),
        "the token is not in the URL"
    );
    assert_eq!(
        browser.exec(
            "return sessionStorage.getItem('apikey.console.key');",
            vec![]
        ),
        json!(token),
        "the key is kept in sessionStorage under apikey.console.key"
    );

    // A reload keeps the session (the key is in sessionStorage) and still puts nothing in
    // the URL, localStorage or cookies.
    browser.goto(&console.shim.url("/console"));
    browser.wait_for_text("#whoami", "operator");
    assert!(!browser.current_url().contains(token.as_str()));
    assert_eq!(
        browser.exec(
            "return localStorage.length + document.cookie.length;",
            vec![]
        ),
        json!(0)
    );

    browser.click("#signout");
    browser.wait_until("the sign-in form is back", |b| {
        b.find_all("#signin-form")
            .first()
            .is_some_and(|f| f.is_displayed())
    });
    assert_eq!(
        browser.exec("return sessionStorage.length;", vec![]),
        json!(0),
        "sign-out clears sessionStorage"
    );
    assert_eq!(token_in_page(browser, token), json!(false));
    assert_eq!(
        browser.exec("return localStorage.length;", vec![]),
        json!(0)
    );
}

#[test]
fn a_wrong_key_is_refused_at_sign_in() {
    let console = Console::start();
    console.open();
    let browser = &console.browser;
    // Well-formed but unknown: right shape, wrong checksum is `malformed`; either way refused.
    let forged = format!("{}x", console.operator.token);
    browser.find("#signin-key").send_keys(&forged);
    browser.click("#signin-submit");
    browser.wait_until("#signin-error says why", |b| {
        b.find_all("#signin-error")
            .first()
            .is_some_and(|e| e.is_displayed() && !e.text().trim().is_empty())
    });
    assert!(
        browser
            .find_all("#whoami")
            .first()
            .is_none_or(|w| !w.is_displayed()),
        "not signed in"
    );
    assert_eq!(
        browser.exec(
            "return sessionStorage.length + localStorage.length;",
            vec![]
        ),
        json!(0),
        "a refused key is not kept"
    );
}

// ---------------------------------------------------------------------------------------------
// Operator flows
// ---------------------------------------------------------------------------------------------

#[test]
fn operator_creates_a_partner_and_issues_a_key_shown_once() {
    let console = Console::start();
    console.sign_in_as_operator();
    let browser = &console.browser;

    // Partners view: create a partner.
    let name = unique("console_ui_partner");
    browser.click("#nav-partners");
    console.wait_displayed("#partners-view");
    browser.find("#partner-name").send_keys(&name);
    browser.find("#partner-email").send_keys("ops@example.com");
    browser.click("#partner-create");
    let row = browser.wait_for_text("#partners-table tbody tr[data-partner-id]", &name);
    let partner_id: Uuid = row
        .attr("data-partner-id")
        .expect("a partner row carries data-partner-id")
        .parse()
        .expect("data-partner-id is a uuid");
    let stored: String = console
        .db
        .borrow_mut()
        .query_one(
            "SELECT name FROM apikey.partners WHERE partner_id = $1",
            &[&partner_id],
        )
        .expect("the partner the page shows exists")
        .get(0);
    assert_eq!(stored, name);
    console.screenshot("05-partners-view");

    // Keys view: issue a key for it.
    browser.click("#nav-keys");
    console.wait_displayed("#keys-view");
    browser.set_window_size(1280, 800);
    console.screenshot("02-keys-table-1280x800");
    console.open_issue_dialog(&partner_id);
    browser.find("#issue-name").send_keys("checkout");
    browser.find("#issue-scopes-extra").send_keys("orders:read");
    console.screenshot("03-issue-dialog");
    browser.click("#issue-submit");

    let token = console.read_token_panel();
    console.screenshot("04-token-panel");
    let verified = console.shim.get_as(&token, "/v1/verify?scope=orders:read");
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(
        verified.header("x-apikey-partner"),
        Some(partner_id.to_string().as_str())
    );
    let key_id = verified
        .header("x-apikey-key-id")
        .expect("x-apikey-key-id")
        .to_string();
    let (scopes, key_name): (Vec<String>, Option<String>) = {
        let row = console
            .db
            .borrow_mut()
            .query_one(
                "SELECT scopes, name FROM apikey.key_info WHERE key_id = $1",
                &[&key_id],
            )
            .expect("the issued key is in key_info");
        (row.get(0), row.get(1))
    };
    assert_eq!(scopes, vec!["orders:read".to_string()]);
    assert_eq!(key_name.as_deref(), Some("checkout"));

    // Shown once: closing the panel takes the token out of the page for good.
    console.close_token_panel(&token);
    assert_eq!(
        browser.exec(
            "return localStorage.length + document.cookie.length;",
            vec![]
        ),
        json!(0)
    );
    assert!(!browser.current_url().contains(&token));

    // The new key is in the table, live, and its row does not hold the token either.
    console.filter_keys(&name);
    console.wait_for_status(&key_id, "live");
    assert_eq!(token_in_page(browser, &token), json!(false));
}

#[test]
fn rotating_with_a_grace_period_keeps_both_tokens_valid() {
    let console = Console::start();
    let (partner, old) = console.operator_with_live_key(&["orders:read"]);

    console.row_action(&old.key_id, "rotate");
    console.wait_displayed("#rotate-dialog");
    console.choose("#rotate-grace", "3600");
    console.browser.click("#rotate-submit");
    let new_token = console.read_token_panel();
    assert_ne!(new_token, old.token);

    assert_eq!(console.verify_http(&old.token), (200, "ok".to_string()));
    assert_eq!(console.verify_http(&new_token), (200, "ok".to_string()));
    let new_key_id = console.key_id_of(&new_token);
    assert_ne!(new_key_id, old.key_id);
    let (rotated_to, grace_left): (Option<String>, f64) = {
        let row = console
            .db
            .borrow_mut()
            .query_one(
                "SELECT rotated_to, extract(epoch FROM revoked_at - now())::float8 \
                 FROM apikey.key_info WHERE key_id = $1",
                &[&old.key_id],
            )
            .expect("the old key");
        (row.get(0), row.get(1))
    };
    assert_eq!(rotated_to.as_deref(), Some(new_key_id.as_str()));
    assert!(
        (3500.0..=3600.0).contains(&grace_left),
        "the old key stays valid for an hour, left: {grace_left} s"
    );

    console.close_token_panel(&new_token);
    console.filter_keys(&partner.name);
    console.wait_for_status(&new_key_id, "live");
    // Still valid after the panel closed: only the page forgot the token.
    assert_eq!(console.verify_http(&new_token).0, 200);
}

#[test]
fn revoking_with_a_reason_kills_the_key_at_once() {
    let console = Console::start();
    let partner = console.partner();
    let key = console.issue(&partner, &["orders:read"]);
    assert_eq!(console.verify_http(&key.token).0, 200);
    console.sign_in_as_operator();
    console.filter_keys(&partner.name);
    console.wait_for_status(&key.key_id, "live");

    console.row_action(&key.key_id, "revoke");
    console.wait_displayed("#revoke-dialog");
    console
        .browser
        .find("#revoke-reason")
        .send_keys("leaked in a build log");
    console.browser.click("#revoke-confirm");
    console.wait_for_status(&key.key_id, "revoked");

    assert_eq!(
        console.verify_http(&key.token),
        (401, "revoked".to_string())
    );
    let reason: Option<String> = console
        .db
        .borrow_mut()
        .query_one(
            "SELECT revoke_reason FROM apikey.key_info WHERE key_id = $1",
            &[&key.key_id],
        )
        .expect("the revoked key")
        .get(0);
    assert_eq!(reason.as_deref(), Some("leaked in a build log"));
}

#[test]
fn cancelling_revoke_leaves_the_key_live() {
    let console = Console::start();
    let (_, key) = console.operator_with_live_key(&["orders:read"]);

    console.row_action(&key.key_id, "revoke");
    console.wait_displayed("#revoke-dialog");
    console.browser.click("#revoke-cancel");
    console.browser.wait_until("the revoke dialog closed", |b| {
        !b.find("#revoke-dialog").is_displayed()
    });
    assert_eq!(console.verify_http(&key.token).0, 200);
    assert_eq!(console.row_status(&key.key_id).as_deref(), Some("live"));
}

#[test]
fn disabling_and_enabling_a_key_switches_verification() {
    let console = Console::start();
    let (_, key) = console.operator_with_live_key(&["orders:read"]);

    console.row_action(&key.key_id, "disable");
    console.wait_for_status(&key.key_id, "disabled");
    assert_eq!(
        console.verify_http(&key.token),
        (401, "disabled".to_string())
    );

    console.row_action(&key.key_id, "enable");
    console.wait_for_status(&key.key_id, "live");
    assert_eq!(console.verify_http(&key.token), (200, "ok".to_string()));
}

#[test]
fn the_audit_dialog_lists_a_keys_history() {
    let console = Console::start();
    let partner = console.partner();
    let key = console.issue(&partner, &["orders:read"]);
    console
        .db
        .borrow_mut()
        .query(
            "SELECT apikey_set_enabled($1, false), apikey_set_enabled($1, true), \
                    apikey_revoke($1, 'end of contract')",
            &[&key.key_id],
        )
        .expect("disable, enable and revoke in SQL");
    console.sign_in_as_operator();
    console.filter_keys(&partner.name);
    console.wait_for_status(&key.key_id, "revoked");

    console.row_action(&key.key_id, "audit");
    console.wait_displayed("#audit-dialog");
    for action in ["issue", "disable", "enable", "revoke"] {
        console.browser.wait_for_text("#audit-list li", action);
    }
    console.screenshot("07-audit-dialog");
    console.browser.click("#audit-close");
    console.browser.wait_until("the audit dialog closed", |b| {
        !b.find("#audit-dialog").is_displayed()
    });
}

#[test]
fn the_usage_dialog_charts_a_keys_outcomes_and_its_rate() {
    let console = Console::start();
    let partner = console.partner();
    let key = issue_with(
        &mut console.db.borrow_mut(),
        "$1, '{orders:read}', rate_per_minute => 2",
        &[&partner.id],
    );
    {
        let mut db = console.db.borrow_mut();
        let reasons: Vec<String> = (0..3).map(|_| reason(&mut db, &key.token)).collect();
        assert_eq!(reasons, ["ok", "ok", "rate_limited"]);
        assert_eq!(
            verify(&mut db, Some(&key.token), &["orders:write"], None).reason,
            "insufficient_scope"
        );
    }
    console.sign_in_as_operator();
    console.filter_keys(&partner.name);
    console.wait_for_status(&key.key_id, "live");
    console.row_action(&key.key_id, "usage");
    console.wait_displayed("#usage-dialog");
    console
        .browser
        .wait_for_text("#usage-status", "4 verifications");
    for (reason, count) in [("ok", 2), ("rate_limited", 1), ("refused", 1)] {
        let drawn = console.browser.exec(
            "return Array.from(document.querySelectorAll(`#usage-chart rect[data-reason='${arguments[0]}']`))
               .reduce((sum, r) => sum + Number(r.getAttribute('data-count')), 0);",
            vec![json!(reason)],
        );
        assert_eq!(drawn.as_i64(), Some(count), "{reason} bars");
    }
    console.browser.wait_for_text("#usage-legend", "ok: 2");
    console
        .browser
        .wait_for_text("#usage-legend", "rate limited: 1");
    console
        .browser
        .wait_for_text("#usage-rate", "Rate limit 2 per minute: 0 left now");
    console.screenshot("08-usage-dialog");
    console.browser.click("#usage-close");
    console.browser.wait_until("the usage dialog closed", |b| {
        !b.find("#usage-dialog").is_displayed()
    });
}

#[test]
fn credits_are_set_topped_up_and_charted_in_the_console() {
    let console = Console::start();
    let (partner, key) = console.operator_with_live_key(&["orders:read"]);
    console.row_action(&key.key_id, "credits");
    console.wait_displayed("#credits-dialog");
    console
        .browser
        .wait_for_text("#credits-balance", "No balance");
    console.browser.find("#credits-remaining").send_keys("100");
    console
        .browser
        .find("#credits-refill-interval")
        .select_by_value("1 month");
    console
        .browser
        .find("#credits-refill-amount")
        .send_keys("100");
    console.browser.click("#credits-save");
    console.browser.wait_for_text(
        "#credits-balance",
        "100 credits left; set back to 100 every month",
    );
    let answer = console.shim.get_as(&key.token, "/v1/verify?cost=30");
    assert_eq!(answer.status, 200);
    console.browser.find("#credits-amount").send_keys("5");
    console.browser.click("#credits-add");
    console
        .browser
        .wait_for_text("#credits-balance", "75 credits left");
    console.screenshot("09-credits-dialog");
    console.browser.click("#credits-close");

    console.row_action(&key.key_id, "usage");
    console.wait_displayed("#usage-dialog");
    console
        .browser
        .wait_for_text("#usage-legend", "credits spent: 30");
    let line = console.browser.exec(
        "const l = document.querySelector('#usage-chart polyline.usage-spent');
         return l ? Number(l.getAttribute('data-max-spent')) : null;",
        vec![],
    );
    assert_eq!(line.as_i64(), Some(30), "the spend is drawn per hour");
    console.screenshot("10-usage-with-credits");
    console.browser.click("#usage-close");

    // A partner's limits, from the partners view.
    console.browser.click("#nav-partners");
    let row = format!(
        "#partners-table tbody tr[data-partner-id=\"{}\"]",
        partner.id
    );
    console.wait_displayed(&row);
    console
        .browser
        .click(&format!("{row} button[data-action=\"limits\"]"));
    console.wait_displayed("#credits-dialog");
    console
        .browser
        .wait_for_text("#credits-balance", "No partner-wide rate.");
    console.browser.find("#credits-rate").send_keys("600");
    console.browser.find("#credits-remaining").send_keys("1000");
    console.browser.click("#credits-save");
    console
        .browser
        .wait_for_text("#credits-balance", "At most 600 verifications a minute");
    let stored: (Option<i32>, i64) = {
        let row = console
            .db
            .borrow_mut()
            .query_one(
                "SELECT p.rate_per_minute, c.remaining FROM apikey.partners p \
                 JOIN apikey.partner_credits c USING (partner_id) WHERE partner_id = $1",
                &[&partner.id],
            )
            .expect("the partner's limits");
        (row.get(0), row.get(1))
    };
    assert_eq!(stored, (Some(600), 1000));
    console.browser.find("#credits-rate").clear();
    console.browser.find("#credits-rate").send_keys("0");
    console.browser.click("#credits-save");
    console.browser.wait_for_text(
        "#credits-dialog .dialog-error",
        "rate per minute must be a whole number",
    );
    console.browser.click("#credits-close");

    // A partner reads its own balance and cannot change it.
    let manager = console.issue(&partner, &["keys:manage"]);
    console.browser.click("#signout");
    console.sign_in(&manager.token);
    console.filter_keys(&key.key_id);
    console.wait_for_status(&key.key_id, "live");
    console.row_action(&key.key_id, "credits");
    console.wait_displayed("#credits-dialog");
    console
        .browser
        .wait_for_text("#credits-balance", "credits left");
    console.wait_displayed("#credits-readonly");
    assert!(!console.browser.find("#credits-form").is_displayed());
}

// ---------------------------------------------------------------------------------------------
// Partners
// ---------------------------------------------------------------------------------------------

#[test]
fn a_partner_sees_only_its_own_keys() {
    let console = Console::start();
    let a = console.partner();
    let b = console.partner();
    let a_manager = console.issue(&a, &["keys:manage"]);
    let a_other = console.issue(&a, &["orders:read"]);
    let b_key = console.issue(&b, &["orders:read"]);

    console.sign_in(&a_manager.token);
    let browser = &console.browser;
    let whoami = browser.wait_for_text("#whoami", "partner");
    assert!(
        whoami.text().contains(&a_manager.key_id),
        "{}",
        whoami.text()
    );

    let expected: BTreeSet<String> = [a_manager.key_id.clone(), a_other.key_id.clone()].into();
    let shown = || -> BTreeSet<String> {
        browser
            .exec(
                "return [...document.querySelectorAll('#keys-table tbody tr[data-key-id]')]
                         .map(r => r.getAttribute('data-key-id'));",
                vec![],
            )
            .as_array()
            .expect("an array of key ids")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    browser.wait_until("the table shows partner A's keys", |_| shown() == expected);
    assert!(!shown().contains(&b_key.key_id));

    let partners_nav = browser.find_all("#nav-partners");
    assert!(
        partners_nav.iter().all(|n| !n.is_displayed()),
        "#nav-partners is hidden for a partner"
    );
    assert!(
        browser
            .find_all("#partners-view")
            .iter()
            .all(|v| !v.is_displayed()),
        "the partners view is not shown to a partner"
    );

    // Its own key can be disabled from the page (the database allows a partner that).
    console.row_action(&a_other.key_id, "disable");
    console.wait_for_status(&a_other.key_id, "disabled");
    assert_eq!(
        console.verify_http(&a_other.token),
        (401, "disabled".to_string())
    );
}

#[test]
fn an_imported_key_shows_the_format_it_came_in() {
    let console = Console::start();
    let a = console.partner();
    let manager = console.issue(&a, &["keys:manage"]);
    let token = format!("kp_{}", unique("imported"));
    let imported: String = console
        .db
        .borrow_mut()
        .query_one(
            "SELECT apikey_import($1, encode(sha256(convert_to($2, 'UTF8')), 'hex'), 'sha256', \
             '{orders:read}', name => 'moved from keypal')",
            &[&a.id, &token],
        )
        .expect("import a key")
        .get(0);
    // Signed in as the partner: key_info shows it its own key's format (row-level security).
    console.sign_in(&manager.token);
    let browser = &console.browser;
    let note = |key_id: &str| -> Option<String> {
        browser
            .exec(
                "const row = [...document.querySelectorAll('#keys-table tbody tr[data-key-id]')]
                   .find(r => r.getAttribute('data-key-id') === arguments[0]);
                 const note = row && row.querySelector('.imported');
                 return row ? (note ? note.textContent : '') : null;",
                vec![serde_json::json!(key_id)],
            )
            .as_str()
            .map(str::to_string)
    };
    browser.wait_until("the imported key's row notes its format", |_| {
        note(&imported).as_deref() == Some("imported (sha256)")
    });
    assert_eq!(
        note(&manager.key_id).as_deref(),
        Some(""),
        "a key issued here has no note"
    );
    assert_eq!(console.verify_http(&token), (200, "ok".to_string()));
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The visible text of `#issue-dialog .dialog-error`, once it is not empty.
fn issue_dialog_error(console: &Console) -> String {
    console
        .browser
        .wait_until("#issue-dialog .dialog-error shows an error", |b| {
            b.find_all("#issue-dialog .dialog-error")
                .first()
                .is_some_and(|e| e.is_displayed() && !e.text().trim().is_empty())
        });
    console.browser.find("#issue-dialog .dialog-error").text()
}

#[test]
fn a_bad_scope_is_refused_before_any_key_is_made() {
    let console = Console::start();
    let partner = console.partner();
    console.sign_in_as_operator();
    let browser = &console.browser;
    console.open_issue_dialog(&partner.id);
    browser.find("#issue-scopes-extra").send_keys("bad scope");
    browser.click("#issue-submit");

    let error = issue_dialog_error(&console);
    println!("error shown for a bad scope: {error:?}");
    assert!(
        browser
            .find_all("#token-panel")
            .iter()
            .all(|p| !p.is_displayed()),
        "no token panel"
    );
    assert_eq!(console.key_count(partner.id), 0, "no key was created");
    let issue_requests = issue_requests(&console.shim);
    assert!(
        issue_requests.is_empty(),
        "the scope was refused in the browser, without a request: {issue_requests:?}"
    );
}

/// A scope for one resource instance is checked in the browser with the server's instance
/// pattern: a bad instance is refused before any request, a good one is issued as typed.
#[test]
fn an_instance_scope_is_checked_and_issued() {
    let console = Console::start();
    let partner = console.partner();
    console.sign_in_as_operator();
    let browser = &console.browser;
    console.open_issue_dialog(&partner.id);
    browser
        .find("#issue-scopes-extra")
        .send_keys("orders/7 8:read");
    browser.click("#issue-submit");
    let error = issue_dialog_error(&console);
    assert!(
        error.contains("the instance after '/' must be 1 to 64"),
        "{error}"
    );
    assert!(
        issue_requests(&console.shim).is_empty(),
        "refused in the browser"
    );

    browser.find("#issue-scopes-extra").clear();
    browser
        .find("#issue-scopes-extra")
        .send_keys("orders/7:read, sites/site~1:*");
    browser.click("#issue-submit");
    assert!(console.read_token_panel().starts_with("ak_live_"));
    let scopes: Vec<String> = console
        .db
        .borrow_mut()
        .query_one(
            "SELECT scopes FROM apikey.keys WHERE partner_id = $1",
            &[&partner.id],
        )
        .expect("the issued key")
        .get(0);
    assert_eq!(scopes, ["orders/7:read", "sites/site~1:*"]);
}

/// The page learns the limits from `GET /v1/limits` (the contract crate's numbers), states them
/// and checks input with them before sending anything.
#[test]
fn the_page_states_and_checks_the_servers_limits() {
    let console = Console::start();
    let limits = console.shim.get("/v1/limits");
    assert_eq!(limits.status, 200);
    let limits: Value = serde_json::from_str(&limits.body).expect("JSON limits");
    let partner = console.partner();
    console.sign_in_as_operator();
    let browser = &console.browser;
    let days = limits["expiring_soon_days"]
        .as_i64()
        .expect("expiring_soon_days");
    assert_eq!(
        browser.exec(
            "return document.querySelector(\"#filter-status option[value='expiring']\").textContent;",
            vec![]
        ),
        json!(format!("Expiring within {days} days"))
    );
    assert_eq!(
        browser.find("#rotate-grace-custom").attr("max"),
        Some(limits["rotation_grace_seconds_max"].to_string())
    );

    console.open_issue_dialog(&partner.id);
    let max = limits["scope_max_bytes"].as_u64().expect("scope_max_bytes") as usize;
    let too_long = format!("orders:{}", "r".repeat(max + 1 - "orders:".len()));
    browser.find("#issue-scopes-extra").send_keys(&too_long);
    browser.click("#issue-submit");
    let error = issue_dialog_error(&console);
    assert!(
        error.contains(&format!("is longer than {max} bytes")),
        "{error}"
    );
    assert!(
        issue_requests(&console.shim).is_empty(),
        "refused in the browser"
    );

    // One byte less is a scope the server takes.
    let longest = &too_long[..max];
    browser.find("#issue-scopes-extra").clear();
    browser.find("#issue-scopes-extra").send_keys(longest);
    browser.click("#issue-submit");
    assert!(console.read_token_panel().starts_with("ak_live_"));
    assert_eq!(console.key_count(partner.id), 1);
}

/// The shim's log lines of `POST /v1/keys` (issue) requests.
fn issue_requests(shim: &Shim) -> Vec<String> {
    without_ansi_colours(&shim.log())
        .lines()
        .filter(|l| l.contains("method=POST") && l.contains("route=/v1/keys status"))
        .map(str::to_string)
        .collect()
}

/// The text of a log without the ANSI colour codes the shim's text log may carry.
fn without_ansi_colours(log: &str) -> String {
    let mut text = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            text.push(c);
        }
    }
    text
}

#[test]
fn an_api_error_is_shown_in_the_issue_dialog() {
    let console = Console::start();
    let partner = console.partner();
    console.sign_in_as_operator();
    let browser = &console.browser;
    console.open_issue_dialog(&partner.id);
    browser.find("#issue-scopes-extra").send_keys("orders:read");
    // The partner disappears while the dialog is open (as if another operator removed it):
    // only the server can know.
    console
        .db
        .borrow_mut()
        .execute(
            "DELETE FROM apikey.partners WHERE partner_id = $1",
            &[&partner.id],
        )
        .expect("delete the partner in SQL");
    browser.click("#issue-submit");

    let error = issue_dialog_error(&console);
    println!("error shown for a vanished partner: {error:?}");
    assert!(
        error.contains("not_found"),
        "the reason code is shown: {error:?}"
    );
    assert!(
        browser
            .find_all("#token-panel")
            .iter()
            .all(|p| !p.is_displayed()),
        "no token panel"
    );
    assert_eq!(console.key_count(partner.id), 0);
}

// ---------------------------------------------------------------------------------------------
// Reminders
// ---------------------------------------------------------------------------------------------

impl Console {
    /// Makes `key_id` due for rotation as time would: 100 days old, a 90-day rotation period
    /// (a superuser setting, for this session only) and a reminder pass, which writes its
    /// `key.rotation_due` event.
    fn make_rotation_due(&self, key_ids: &[&str]) {
        let mut db = self.db.borrow_mut();
        for key_id in key_ids {
            db.execute(
                "UPDATE apikey.keys SET created_at = clock_timestamp() - interval '100 days' \
                 WHERE key_id = $1",
                &[key_id],
            )
            .expect("age the key");
        }
        db.batch_execute("SET apikey.rotation_period = '90d'")
            .expect("set the rotation period");
        // At most 1000 reminders a call: repeat until everything due was written.
        while db
            .query_one("SELECT apikey_send_reminders()", &[])
            .expect("apikey_send_reminders")
            .get::<_, i64>(0)
            > 0
        {}
        db.batch_execute("RESET apikey.rotation_period")
            .expect("reset the rotation period");
    }

    /// The `data-key-id`s of the rows of a reminders table (`#expiring-table`, `#rotation-table`).
    fn reminder_rows(&self, table: &str) -> BTreeSet<String> {
        self.browser
            .exec(
                "return [...document.querySelectorAll(arguments[0] + ' tbody tr[data-key-id]')]
                   .map(r => r.getAttribute('data-key-id'));",
                vec![json!(table)],
            )
            .as_array()
            .expect("an array of key ids")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    fn open_reminders(&self) {
        self.browser.click("#nav-reminders");
        self.wait_displayed("#reminders-view");
    }
}

#[test]
fn the_reminders_panel_shows_expiring_and_rotation_due_keys_to_whom_they_belong() {
    let console = Console::start();
    let a = console.partner();
    let b = console.partner();
    let in_3_days = "$1, '{orders:read}', expires_at => now() + interval '3 days'";
    let a_expiring = issue_with(&mut console.db.borrow_mut(), in_3_days, &[&a.id]);
    let b_expiring = issue_with(&mut console.db.borrow_mut(), in_3_days, &[&b.id]);
    let a_old = console.issue(&a, &["orders:read"]);
    let b_old = console.issue(&b, &["orders:read"]);
    let a_manager = console.issue(&a, &["keys:manage"]);
    console.make_rotation_due(&[&a_old.key_id, &b_old.key_id]);

    // The route itself: a partner's key reads its own partner's reminders, nobody else's.
    let own = console
        .shim
        .get_as(&a_manager.token, "/v1/reminders")
        .json();
    let ids = |list: &Value| -> BTreeSet<String> {
        list.as_array()
            .expect("a list of keys")
            .iter()
            .map(|k| k["key_id"].as_str().expect("key_id").to_string())
            .collect()
    };
    assert_eq!(ids(&own["expiring"]), [a_expiring.key_id.clone()].into());
    assert_eq!(ids(&own["rotation_due"]), [a_old.key_id.clone()].into());
    assert!(own["rotation_due"][0]["due_since"].is_string(), "{own}");
    assert_eq!(own["rotation_due"][0]["partner_name"], json!(a.name));
    let other = console
        .shim
        .get_as(
            &a_manager.token,
            &format!("/v1/reminders?partner_id={}", b.id),
        )
        .json();
    assert_eq!(other["expiring"], json!([]), "{other}");
    assert_eq!(other["rotation_due"], json!([]), "{other}");

    // An operator sees both partners' keys, soonest expiry and longest due first.
    console.sign_in_as_operator();
    console.open_reminders();
    let browser = &console.browser;
    browser.wait_until("both expiring keys are listed", |_| {
        let rows = console.reminder_rows("#expiring-table");
        rows.contains(&a_expiring.key_id) && rows.contains(&b_expiring.key_id)
    });
    browser.wait_until("both keys due for rotation are listed", |_| {
        let rows = console.reminder_rows("#rotation-table");
        rows.contains(&a_old.key_id) && rows.contains(&b_old.key_id)
    });
    let expiring_row = format!("#expiring-table tr[data-key-id=\"{}\"]", a_expiring.key_id);
    browser.wait_for_text(&expiring_row, "expiring in 3 days");
    browser.wait_for_text(&expiring_row, &a.name);
    browser.wait_for_text(
        &format!("#rotation-table tr[data-key-id=\"{}\"]", a_old.key_id),
        "ago",
    );
    let count = browser.find("#reminders-count");
    assert!(count.is_displayed(), "the nav counts the reminders");
    console.screenshot("09-reminders");

    // Narrowed to partner B: A's keys leave both lists.
    console.choose("#reminders-partner", &b.id.to_string());
    browser.click("#reminders-refresh");
    browser.wait_until("only B's reminders are listed", |_| {
        console.reminder_rows("#expiring-table") == [b_expiring.key_id.clone()].into()
            && console.reminder_rows("#rotation-table") == [b_old.key_id.clone()].into()
    });

    // Partner A's keys:manage key sees A's keys only, with no partner to choose.
    browser.click("#signout");
    console.wait_displayed("#signin-form");
    console.sign_in(&a_manager.token);
    browser.wait_for_text("#whoami", "partner");
    console.open_reminders();
    browser.wait_until("A's own reminders, and only them", |_| {
        console.reminder_rows("#expiring-table") == [a_expiring.key_id.clone()].into()
            && console.reminder_rows("#rotation-table") == [a_old.key_id.clone()].into()
    });
    assert!(
        !browser.find("#reminders-partner-field").is_displayed(),
        "a partner has no partner to choose"
    );
    browser.set_window_size(390, 844);
    console.screenshot("14-reminders-390x844");
    assert_fits_the_width(browser);

    // "Rotate" opens the keys view's rotate dialog; the rotated key leaves the list.
    browser.click(&format!(
        "#rotation-table tr[data-key-id=\"{}\"] button[data-action=\"rotate\"]",
        a_old.key_id
    ));
    console.wait_displayed("#rotate-dialog");
    browser.wait_for_text("#rotate-dialog .dialog-key", &a_old.key_id);
    browser.click("#rotate-submit");
    let token = console.read_token_panel();
    let new_key_id = console.key_id_of(&token);
    assert_ne!(new_key_id, a_old.key_id);
    console.close_token_panel(&token);
    browser.wait_until("the rotated key left the rotation list", |_| {
        console.reminder_rows("#rotation-table").is_empty()
    });
    console.wait_displayed("#rotation-empty");
    assert_eq!(
        console.reminder_rows("#expiring-table"),
        [a_expiring.key_id.clone()].into()
    );
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

impl Console {
    fn open_webhooks(&self) {
        self.browser.click("#nav-webhooks");
        self.wait_displayed("#webhooks-view");
    }

    fn card_selector(endpoint_id: &Uuid) -> String {
        format!("#webhooks-list article[data-endpoint-id=\"{endpoint_id}\"]")
    }

    /// Clicks the endpoint card's button `data-action="<action>"`.
    fn endpoint_action(&self, endpoint_id: &Uuid, action: &str) {
        self.browser.click(&format!(
            "{} button[data-action=\"{action}\"]",
            Self::card_selector(endpoint_id)
        ));
    }

    /// The ids of the partner's endpoints, newest first, read in SQL.
    fn endpoints_of(&self, partner: &Partner) -> Vec<Uuid> {
        self.db
            .borrow_mut()
            .query(
                "SELECT endpoint_id FROM apikey.webhook_endpoints WHERE partner_id = $1 \
                 ORDER BY created_at DESC",
                &[&partner.id],
            )
            .expect("the partner's endpoints")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

#[test]
fn an_endpoint_made_in_the_console_receives_a_test_event_and_shows_the_attempt() {
    let receiver = Receiver::start();
    let console = Console::start_with(&[
        ("APIKEY_SHIM_WEBHOOK_DELIVERY", "true"),
        ("APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("APIKEY_SHIM_WEBHOOK_POLL_MS", "100"),
    ]);
    let partner = console.partner();
    let url = receiver.url("/hooks/console");
    console.sign_in_as_operator();
    console.open_webhooks();
    let browser = &console.browser;

    console.choose("#webhook-partner", &partner.id.to_string());
    browser.find("#webhook-url").send_keys(&url);
    browser.click("#webhook-create");

    // The secret: shown once, in the token panel, and gone from the page once it is closed.
    let secret = console.read_token_panel();
    assert!(secret.starts_with("whsec_"), "{secret}");
    browser.wait_for_text("#token-panel", "secret is shown only once");
    console.screenshot("10-webhook-secret");
    console.close_token_panel(&secret);
    let endpoint_id = *console
        .endpoints_of(&partner)
        .first()
        .expect("the endpoint was created");
    let card = Console::card_selector(&endpoint_id);
    browser.wait_for_text(&card, &url);
    browser.wait_for_text(&card, &partner.name);
    browser.wait_for_text(&format!("{card} .deliveries-empty"), "Nothing sent yet");
    assert_eq!(token_in_page(browser, &secret), json!(false));
    assert_eq!(
        browser.exec(
            "return localStorage.length + document.cookie.length + sessionStorage.length;",
            vec![]
        ),
        json!(1),
        "only the console's key is stored"
    );

    console.endpoint_action(&endpoint_id, "test");
    let received = receiver.wait_for("the webhook.test POST", |r| {
        r.method == "POST" && r.path == "/hooks/console" && r.json()["type"] == "webhook.test"
    });
    // Signed with the secret the page showed.
    let signed: bool = console
        .db
        .borrow_mut()
        .query_one(
            "SELECT apikey_webhook_verify($1, $2, $3::text::bigint, $4, $5)",
            &[
                &secret,
                &received.header("webhook-id"),
                &received.header("webhook-timestamp"),
                &received.body,
                &received.header("webhook-signature"),
            ],
        )
        .expect("apikey_webhook_verify")
        .get(0);
    assert!(signed, "the webhook is signed with the secret shown once");

    // The page follows the delivery until it is no longer pending: the attempt, 200.
    let attempt = format!(
        "{card} tr[data-event-type=\"webhook.test\"][data-state=\"delivered\"] \
         li[data-status-code=\"200\"]"
    );
    browser.wait_until("the delivery log shows the attempt answered 200", |b| {
        !b.find_all(&attempt).is_empty()
    });
    browser.wait_for_text(&attempt, "#1 200");
    browser.wait_for_text(&attempt, " ms");
    // And "Refresh deliveries" reads the same from the server.
    console.endpoint_action(&endpoint_id, "refresh");
    browser.wait_for_text(&format!("{card} .deliveries-status"), "Updated");
    browser.wait_for_text(&attempt, "#1 200");
    console.screenshot("11-webhooks");

    browser.set_window_size(390, 844);
    browser.exec(
        "document.querySelector(arguments[0]).scrollIntoView();",
        vec![json!(format!("{card} .endpoint-actions"))],
    );
    console.screenshot("12-webhooks-390x844");
    assert_fits_the_width(browser);
}

/// No horizontal scrolling: the page is at most as wide as the window.
fn assert_fits_the_width(browser: &Browser) {
    let overflow = browser.exec(
        "return document.documentElement.scrollWidth - window.innerWidth;",
        vec![],
    );
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the page fits the window: {overflow} px too wide"
    );
}

#[test]
fn an_endpoints_secret_is_rotated_and_it_is_disabled_enabled_and_deleted_in_the_console() {
    let console = Console::start();
    let partner = console.partner();
    let manager = console.issue(&partner, &["keys:manage"]);
    let (endpoint_id, first_secret): (Uuid, String) = {
        let row = console
            .db
            .borrow_mut()
            .query_one(
                "SELECT endpoint_id, secret FROM apikey_webhook_create($1, 'http://127.0.0.1:9/unused', '{key.revoked}')",
                &[&partner.id],
            )
            .expect("apikey_webhook_create");
        (row.get(0), row.get(1))
    };
    let enabled = || -> Option<bool> {
        console
            .db
            .borrow_mut()
            .query_opt(
                "SELECT enabled FROM apikey.webhook_endpoints WHERE endpoint_id = $1",
                &[&endpoint_id],
            )
            .expect("read the endpoint")
            .map(|r| r.get(0))
    };

    // A partner's keys:manage key manages its own endpoints.
    console.sign_in(&manager.token);
    console.open_webhooks();
    let browser = &console.browser;
    let card = Console::card_selector(&endpoint_id);
    browser.wait_for_text(&card, "key.revoked");
    assert_eq!(token_in_page(browser, &first_secret), json!(false));

    console.endpoint_action(&endpoint_id, "rotate-secret");
    console.wait_displayed("#webhook-rotate-dialog");
    browser.wait_for_text("#webhook-rotate-dialog .dialog-endpoint", "127.0.0.1:9");
    console.screenshot("13-webhook-rotate-dialog");
    browser.click("#webhook-rotate-submit");
    let secret = console.read_token_panel();
    assert!(secret.starts_with("whsec_") && secret != first_secret);
    browser.wait_for_text("#token-panel", "keeps signing too until");
    console.close_token_panel(&secret);
    browser.wait_for_text(&card, "Old secret signs until");
    let rotated: bool = console
        .db
        .borrow_mut()
        .query_one(
            "SELECT secret_rotated_at IS NOT NULL AND previous_secret_until > now() \
             FROM apikey.webhook_endpoints WHERE endpoint_id = $1",
            &[&endpoint_id],
        )
        .expect("read the endpoint")
        .get(0);
    assert!(rotated, "a new secret, the old one in its 24-hour grace");

    console.endpoint_action(&endpoint_id, "disable");
    browser.wait_until("the card shows the endpoint disabled", |b| {
        b.find_all(&format!("{card}[data-state=\"disabled\"]"))
            .len()
            == 1
    });
    assert_eq!(enabled(), Some(false));
    console.endpoint_action(&endpoint_id, "enable");
    browser.wait_until("the card shows the endpoint enabled", |b| {
        b.find_all(&format!("{card}[data-state=\"live\"]")).len() == 1
    });
    assert_eq!(enabled(), Some(true));

    // Delete asks first; cancelling keeps the endpoint.
    console.endpoint_action(&endpoint_id, "delete");
    console.wait_displayed("#webhook-delete-dialog");
    browser.click("#webhook-delete-cancel");
    browser.wait_until("the delete dialog closed", |b| {
        !b.find("#webhook-delete-dialog").is_displayed()
    });
    assert_eq!(enabled(), Some(true));
    console.endpoint_action(&endpoint_id, "delete");
    console.wait_displayed("#webhook-delete-dialog");
    browser.click("#webhook-delete-confirm");
    browser.wait_until("the card is gone", |b| b.find_all(&card).is_empty());
    browser.wait_for_text("#webhooks-empty", "No webhook endpoints");
    assert_eq!(enabled(), None, "the endpoint was deleted");
}

// ---------------------------------------------------------------------------------------------
// Small screens
// ---------------------------------------------------------------------------------------------

#[test]
fn the_keys_view_works_on_a_phone() {
    let console = Console::start();
    let partner = console.partner();
    let key = console.issue(&partner, &["orders:read"]);
    console.browser.set_window_size(390, 844);
    console.sign_in_as_operator();
    console.filter_keys(&partner.name);
    console.wait_for_status(&key.key_id, "live");
    console.screenshot("06-keys-390x844");

    // Every row action stays reachable: disabling works by tapping at this size.
    console.row_action(&key.key_id, "disable");
    console.wait_for_status(&key.key_id, "disabled");
    let overflow = console.browser.exec(
        "return document.documentElement.scrollWidth - window.innerWidth;",
        vec![],
    );
    println!("horizontal overflow of the page at 390 px: {overflow} px");
}
