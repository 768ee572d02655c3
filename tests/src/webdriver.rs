//! A small W3C WebDriver client for the console's browser tests: it starts the system's
//! `chromedriver`, opens one headless Chromium session and speaks the WebDriver protocol to it
//! over plain HTTP (<https://www.w3.org/TR/webdriver2/>).
//!
//! Only what the tests need is here: navigation, finding elements by CSS selector (with a wait),
//! clicking, typing, reading text and attributes, running a script and taking screenshots.
//! Every wait polls for at most [`WAIT`]; a timeout panics with the page's URL and the path of a
//! screenshot of what the browser showed.

use base64::Engine;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long `find`, `wait_until` and the other waits poll before they give up.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and the one browser session it runs.
pub struct Browser {
    driver: Child,
    /// `http://127.0.0.1:<port>/session/<id>`: every command's URL starts with it.
    session_url: String,
    user_data_dir: PathBuf,
    agent: ureq::Agent,
}

/// A WebDriver error answer: `error` is the W3C error code, e.g. `no such element`.
#[derive(Debug)]
pub struct WebDriverError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port for chromedriver")
}

/// A directory under the system's temp dir that no other browser of this or another test
/// process uses.
fn fresh_temp_dir(prefix: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory for the browser");
    dir
}

/// `<repo>/target/console-screenshots`, created on first use.
pub fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/console-screenshots");
    dir.canonicalize().unwrap_or(dir)
}

/// Sends one WebDriver command and returns the answer's `value`, or the WebDriver error.
fn command(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WebDriverError> {
    let request = agent.request(method, url);
    let result = match body {
        Some(body) => request
            .set("Content-Type", "application/json")
            .send_string(&body.to_string()),
        None => request.call(),
    };
    let (ok, response) = match result {
        Ok(r) => (true, r),
        Err(ureq::Error::Status(_, r)) => (false, r),
        Err(e) => {
            return Err(WebDriverError {
                error: "transport".into(),
                message: format!("{method} {url}: {e}"),
            })
        }
    };
    let answer: Value = response
        .into_string()
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
        .map_err(|e| WebDriverError {
            error: "transport".into(),
            message: format!("{method} {url}: answer is not JSON: {e}"),
        })?;
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    if ok {
        Ok(value)
    } else {
        Err(WebDriverError {
            error: value["error"].as_str().unwrap_or("unknown error").into(),
            message: value["message"].as_str().unwrap_or_default().into(),
        })
    }
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session with a fresh
    /// profile.
    pub fn start() -> Browser {
        for binary in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: install the chromium and chromium-driver packages \
                 (scripts/install-deps.sh does)"
            );
        }
        let port = free_port();
        let mut launcher = Command::new(CHROMEDRIVER);
        launcher
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that Drop can end chromedriver and every browser process
        // it started, even when the session could not be closed politely.
        std::os::unix::process::CommandExt::process_group(&mut launcher, 0);
        let driver = launcher.spawn().expect("start chromedriver");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let user_data_dir = fresh_temp_dir("apikey-chromium");
        // A Browser from here on, so that a failure below still cleans up in Drop.
        let mut browser = Browser {
            driver,
            session_url: String::new(),
            user_data_dir,
            agent,
        };
        let base = format!("http://127.0.0.1:{port}");

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = command(&browser.agent, "GET", &format!("{base}/status"), None);
            if status.is_ok_and(|s| s["ready"] == json!(true)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready on port {port}"
            );
            std::thread::sleep(POLL);
        }

        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--no-first-run",
                            format!("--user-data-dir={}", browser.user_data_dir.display()),
                            "--window-size=1280,800",
                        ],
                    },
                },
            },
        });
        let session = command(
            &browser.agent,
            "POST",
            &format!("{base}/session"),
            Some(capabilities),
        )
        .unwrap_or_else(|e| panic!("chromedriver could not start a Chromium session: {e}"));
        let id = session["sessionId"]
            .as_str()
            .expect("a new session has a sessionId");
        browser.session_url = format!("{base}/session/{id}");
        browser
    }

    /// A command on this session; `path` is relative to the session, e.g. `/url`.
    fn try_cmd(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        command(
            &self.agent,
            method,
            &format!("{}{path}", self.session_url),
            body,
        )
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} failed: {e}"))
    }

    /// Loads `url` and waits until the page has loaded.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The address of the page the browser shows now.
    pub fn current_url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let value = self
            .try_cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .ok()?;
        Some(Element::from_reference(self, &value))
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it to be in the page.
    pub fn find(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(element) = self.try_find(css) {
                return element;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("no element matches {css:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Clicks the first element matching `css`, waiting up to [`WAIT`] for it. Unlike
    /// `find(css).click()`, it looks for the element again when the page re-rendered it
    /// between finding and clicking (a table that reloads, say).
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let result = self.find(css).try_click();
            match result {
                Ok(()) => return,
                Err(e)
                    if Instant::now() < deadline
                        && (e.error == "stale element reference"
                            || is_transient_click_error(&e)) =>
                {
                    std::thread::sleep(POLL)
                }
                Err(e) => self.fail(&format!("click on {css:?} failed: {e}")),
            }
        }
    }

    /// Every element matching `css` now (no wait; possibly none).
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let value = self.cmd(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        );
        value
            .as_array()
            .expect("find elements answers with an array")
            .iter()
            .map(|r| Element::from_reference(self, r))
            .collect()
    }

    /// Polls `f` until it is true, for up to [`WAIT`]; `what` names the awaited condition in
    /// the panic message.
    pub fn wait_until(&self, what: &str, f: impl Fn(&Browser) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if f(self) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out waiting until {what}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The first element matching `css` whose text contains `needle`, waiting up to [`WAIT`].
    pub fn wait_for_text(&self, css: &str, needle: &str) -> Element<'_> {
        let deadline = Instant::now() + WAIT;
        loop {
            // Elements can be replaced between finding and reading them: a stale one is
            // simply looked for again.
            let found = self.try_cmd(
                "POST",
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            );
            if let Ok(Value::Array(references)) = found {
                for reference in &references {
                    let element = Element::from_reference(self, reference);
                    if element.try_text().is_some_and(|t| t.contains(needle)) {
                        return element;
                    }
                }
            }
            if Instant::now() >= deadline {
                let texts: Vec<String> = self
                    .find_all(css)
                    .iter()
                    .filter_map(|e| e.try_text())
                    .collect();
                self.fail(&format!(
                    "no element matching {css:?} contains {needle:?}; their texts: {texts:?}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs `script` as the body of a function in the page (`arguments` holds `args`; an
    /// element is passed as [`Element::to_arg`]) and returns what it returns.
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Saves a PNG of the viewport to `<repo>/target/console-screenshots/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a screenshot is a base64 string"))
            .expect("a screenshot is valid base64");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Makes the page's viewport `width` x `height` CSS pixels, as on a screen of that size:
    /// the window is resized and the viewport is pinned with Chromium's device-metrics
    /// override, because headless Chromium does not make a window narrower than 500 px.
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {
                    "width": width,
                    "height": height,
                    "deviceScaleFactor": 1,
                    "mobile": false,
                },
            })),
        );
    }

    /// Accepts the open `alert`/`confirm` dialog.
    pub fn accept_alert(&self) {
        self.cmd("POST", "/alert/accept", Some(json!({})));
    }

    /// Dismisses the open `alert`/`confirm` dialog.
    pub fn dismiss_alert(&self) {
        self.cmd("POST", "/alert/dismiss", Some(json!({})));
    }

    /// The page's visible text (`document.body.innerText`).
    pub fn body_text(&self) -> String {
        self.exec(
            "return document.body ? document.body.innerText : '';",
            vec![],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Panics with `message`, the page's URL and a screenshot of what the browser shows.
    pub fn fail(&self, message: &str) -> ! {
        static FAILURES: AtomicU32 = AtomicU32::new(0);
        let url = self
            .try_cmd("GET", "/url", None)
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| format!("(unknown: {e})"));
        let name = format!(
            "failure-{}-{}",
            std::process::id(),
            FAILURES.fetch_add(1, Ordering::Relaxed)
        );
        let shot = match self.try_cmd("GET", "/screenshot", None) {
            Ok(_) => self.screenshot(&name).display().to_string(),
            Err(e) => format!("(no screenshot: {e})"),
        };
        panic!("{message}\n  page: {url}\n  screenshot: {shot}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session_url.is_empty() {
            // Closes Chromium; errors are of no use here.
            let _ = self.try_cmd("DELETE", "", None);
        }
        // The whole process group: chromedriver and any browser process still left.
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.driver.id()))
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.user_data_dir);
    }
}

/// A click that may succeed a moment later: the element is covered or not shown yet.
fn is_transient_click_error(e: &WebDriverError) -> bool {
    e.error == "element click intercepted" || e.error == "element not interactable"
}

/// An element of the page, valid until the page replaces it.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl<'b> Element<'b> {
    fn from_reference(browser: &'b Browser, reference: &Value) -> Element<'b> {
        let id = reference[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not an element reference: {reference}"))
            .to_string();
        Element { browser, id }
    }

    /// This element as an argument of [`Browser::exec`].
    pub fn to_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    /// Clicks the element. A click that something else would receive (a dialog still opening,
    /// an element not yet shown) is retried for up to [`WAIT`].
    pub fn click(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.try_click() {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline && is_transient_click_error(&e) => {
                    std::thread::sleep(POLL)
                }
                Err(e) => self.browser.fail(&format!("click failed: {e}")),
            }
        }
    }

    fn try_click(&self) -> Result<(), WebDriverError> {
        self.browser
            .try_cmd("POST", &self.path("/click"), Some(json!({})))
            .map(|_| ())
    }

    /// Types `text` into the element (after what it holds).
    pub fn send_keys(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .browser
                .try_cmd("POST", &self.path("/value"), Some(json!({ "text": text })))
            {
                Ok(_) => return,
                Err(e) if Instant::now() < deadline && e.error == "element not interactable" => {
                    std::thread::sleep(POLL)
                }
                Err(e) => self.browser.fail(&format!("typing failed: {e}")),
            }
        }
    }

    /// Empties an input or textarea.
    pub fn clear(&self) {
        self.browser
            .cmd("POST", &self.path("/clear"), Some(json!({})));
    }

    fn try_text(&self) -> Option<String> {
        self.browser
            .try_cmd("GET", &self.path("/text"), None)
            .ok()
            .map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// The element's rendered text (empty when it is not displayed).
    pub fn text(&self) -> String {
        self.browser
            .cmd("GET", &self.path("/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// An attribute (or, as WebDriver's "get attribute" does for some names such as `value`,
    /// the current property); `None` when absent.
    pub fn attr(&self, name: &str) -> Option<String> {
        self.browser
            .cmd("GET", &self.path(&format!("/attribute/{name}")), None)
            .as_str()
            .map(str::to_string)
    }

    /// The current `value` of an input, select or textarea.
    pub fn value(&self) -> String {
        self.browser
            .cmd("GET", &self.path("/property/value"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn is_displayed(&self) -> bool {
        self.browser
            .cmd("GET", &self.path("/displayed"), None)
            .as_bool()
            .unwrap_or(false)
    }

    /// The first descendant matching `css`, waiting up to [`WAIT`] for it.
    pub fn find(&self, css: &str) -> Element<'b> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.browser.try_cmd(
                "POST",
                &self.path("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            );
            match found {
                Ok(reference) => return Element::from_reference(self.browser, &reference),
                Err(e) if e.error == "stale element reference" => self
                    .browser
                    .fail(&format!("looking for {css:?} in a stale element")),
                Err(_) if Instant::now() < deadline => std::thread::sleep(POLL),
                Err(e) => self
                    .browser
                    .fail(&format!("no descendant matches {css:?}: {e}")),
            }
        }
    }

    /// Chooses the option with value `value` of a `<select>` and fires `input` and `change`
    /// as a user's choice would; panics if there is no such option.
    pub fn select_by_value(&self, value: &str) {
        let chosen = self.browser.exec(
            "const [select, value] = arguments;
             if (![...select.options].some(o => o.value === value)) return false;
             select.value = value;
             select.dispatchEvent(new Event('input', { bubbles: true }));
             select.dispatchEvent(new Event('change', { bubbles: true }));
             return true;",
            vec![self.to_arg(), json!(value)],
        );
        if chosen != json!(true) {
            let options = self.browser.exec(
                "return [...arguments[0].options].map(o => o.value);",
                vec![self.to_arg()],
            );
            self.browser.fail(&format!(
                "the select has no option with value {value:?}; its options: {options}"
            ));
        }
    }
}
