//! The console's browser tests drive one headless Chromium through the system's
//! `chromedriver` with `fantoccini`, a maintained W3C WebDriver client
//! (<https://www.w3.org/TR/webdriver2/>).
//!
//! What this module adds on top is what the tests need and WebDriver leaves to its users: a
//! chromedriver process and a fresh browser profile per test, a blocking API (the tests are
//! plain `#[test]` functions), waits that poll for at most [`WAIT`], clicks retried while a
//! dialog is still opening, and failures that panic with the page's URL and the path of a
//! screenshot of what the browser showed.

use fantoccini::elements::Element as WebElement;
use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long `find`, `wait_until` and the other waits poll before they give up.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// A chromedriver process and the one browser session it runs.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    /// `None` only while the browser is dropped.
    client: Option<Client>,
    driver: Child,
    user_data_dir: PathBuf,
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

/// Chromium's own command (`Emulation.setDeviceMetricsOverride` over chromedriver's CDP
/// endpoint), which fantoccini, sticking to the standard, does not offer.
#[derive(Debug)]
struct SetDeviceMetrics {
    width: u32,
    height: u32,
}

impl WebDriverCompatibleCommand for SetDeviceMetrics {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({
            "cmd": "Emulation.setDeviceMetricsOverride",
            "params": {
                "width": self.width,
                "height": self.height,
                "deviceScaleFactor": 1,
                "mobile": false,
            },
        });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// A click that may succeed a moment later: the element is covered or not shown yet.
fn is_transient_click_error(e: &CmdError) -> bool {
    matches!(e, CmdError::Standard(w) if w.error == ErrorStatus::ElementClickIntercepted)
        || e.is_element_not_interactable()
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the WebDriver client");
        // A Browser from here on, so that a failure below still cleans up in Drop.
        let mut browser = Browser {
            runtime,
            client: None,
            driver,
            user_data_dir: fresh_temp_dir("apikey-chromium"),
        };

        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("pageLoadStrategy".into(), json!("normal"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
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
            }),
        );
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        let url = format!("http://127.0.0.1:{port}");
        // chromedriver takes a moment to listen: connecting is retried until it does.
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match browser.runtime.block_on(builder.connect(&url)) {
                Ok(client) => break client,
                Err(_) if Instant::now() < deadline => std::thread::sleep(POLL),
                Err(e) => panic!("chromedriver could not start a Chromium session: {e}"),
            }
        };
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser's session is open")
    }

    /// Runs one WebDriver command to its end.
    fn run<T>(&self, command: impl Future<Output = Result<T, CmdError>>) -> Result<T, CmdError> {
        self.runtime.block_on(command)
    }

    /// Runs one command that must succeed; `what` names it in the failure.
    fn must<T>(&self, what: &str, command: impl Future<Output = Result<T, CmdError>>) -> T {
        self.run(command)
            .unwrap_or_else(|e| self.fail(&format!("{what} failed: {e}")))
    }

    /// Loads `url` and waits until the page has loaded.
    pub fn goto(&self, url: &str) {
        self.must(&format!("loading {url}"), self.client().goto(url));
    }

    /// The address of the page the browser shows now.
    pub fn current_url(&self) -> String {
        self.must("reading the URL", self.client().current_url())
            .to_string()
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it to be in the page.
    pub fn find(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(element) = self.run(self.client().find(Locator::Css(css))) {
                return Element {
                    browser: self,
                    element,
                };
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
            match self.run(self.find(css).element.click()) {
                Ok(()) => return,
                Err(e)
                    if Instant::now() < deadline
                        && (e.is_stale_element_reference() || is_transient_click_error(&e)) =>
                {
                    std::thread::sleep(POLL)
                }
                Err(e) => self.fail(&format!("click on {css:?} failed: {e}")),
            }
        }
    }

    /// Every element matching `css` now (no wait; possibly none).
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        self.must(
            &format!("finding {css:?}"),
            self.client().find_all(Locator::Css(css)),
        )
        .into_iter()
        .map(|element| Element {
            browser: self,
            element,
        })
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
            if let Ok(elements) = self.run(self.client().find_all(Locator::Css(css))) {
                for element in elements {
                    let element = Element {
                        browser: self,
                        element,
                    };
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
        self.must("running a script", self.client().execute(script, args))
    }

    /// Saves a PNG of the viewport to `<repo>/target/console-screenshots/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.must("taking a screenshot", self.client().screenshot());
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Makes the page's viewport `width` x `height` CSS pixels, as on a screen of that size:
    /// the window is resized and the viewport is pinned with Chromium's device-metrics
    /// override, because headless Chromium does not make a window narrower than 500 px.
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.must(
            "resizing the window",
            self.client().set_window_size(width, height),
        );
        self.must(
            "overriding the device metrics",
            self.client().issue_cmd(SetDeviceMetrics { width, height }),
        );
    }

    /// Accepts the open `alert`/`confirm` dialog.
    pub fn accept_alert(&self) {
        self.must("accepting the dialog", self.client().accept_alert());
    }

    /// Dismisses the open `alert`/`confirm` dialog.
    pub fn dismiss_alert(&self) {
        self.must("dismissing the dialog", self.client().dismiss_alert());
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
        let url = match self.run(self.client().current_url()) {
            Ok(url) => url.to_string(),
            Err(e) => format!("(unknown: {e})"),
        };
        let name = format!(
            "failure-{}-{}",
            std::process::id(),
            FAILURES.fetch_add(1, Ordering::Relaxed)
        );
        let shot = match self.run(self.client().screenshot()) {
            Ok(png) => {
                let path = screenshot_dir().join(format!("{name}.png"));
                match std::fs::write(&path, png) {
                    Ok(()) => path.display().to_string(),
                    Err(e) => format!("(not saved: {e})"),
                }
            }
            Err(e) => format!("(no screenshot: {e})"),
        };
        panic!("{message}\n  page: {url}\n  screenshot: {shot}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Closes Chromium; errors are of no use here.
            let _ = self.runtime.block_on(client.close());
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

/// An element of the page, valid until the page replaces it.
pub struct Element<'b> {
    browser: &'b Browser,
    element: WebElement,
}

impl<'b> Element<'b> {
    /// This element as an argument of [`Browser::exec`].
    pub fn to_arg(&self) -> Value {
        serde_json::to_value(&self.element).expect("an element reference is JSON")
    }

    /// Clicks the element. A click that something else would receive (a dialog still opening,
    /// an element not yet shown) is retried for up to [`WAIT`].
    pub fn click(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.browser.run(self.element.click()) {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline && is_transient_click_error(&e) => {
                    std::thread::sleep(POLL)
                }
                Err(e) => self.browser.fail(&format!("click failed: {e}")),
            }
        }
    }

    /// Types `text` into the element (after what it holds).
    pub fn send_keys(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.browser.run(self.element.send_keys(text)) {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline && e.is_element_not_interactable() => {
                    std::thread::sleep(POLL)
                }
                Err(e) => self.browser.fail(&format!("typing failed: {e}")),
            }
        }
    }

    /// Empties an input or textarea.
    pub fn clear(&self) {
        self.browser.must("clearing a field", self.element.clear());
    }

    fn try_text(&self) -> Option<String> {
        self.browser.run(self.element.text()).ok()
    }

    /// The element's rendered text (empty when it is not displayed).
    pub fn text(&self) -> String {
        self.browser.must("reading a text", self.element.text())
    }

    /// An attribute (or, as WebDriver's "get attribute" does for some names such as `value`,
    /// the current property); `None` when absent.
    pub fn attr(&self, name: &str) -> Option<String> {
        self.browser.must(
            &format!("reading attribute {name}"),
            self.element.attr(name),
        )
    }

    /// The current `value` of an input, select or textarea.
    pub fn value(&self) -> String {
        self.browser
            .must("reading a value", self.element.prop("value"))
            .unwrap_or_default()
    }

    pub fn is_displayed(&self) -> bool {
        self.browser
            .must("reading visibility", self.element.is_displayed())
    }

    /// The first descendant matching `css`, waiting up to [`WAIT`] for it.
    pub fn find(&self, css: &str) -> Element<'b> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.browser.run(self.element.find(Locator::Css(css))) {
                Ok(element) => {
                    return Element {
                        browser: self.browser,
                        element,
                    }
                }
                Err(e) if e.is_stale_element_reference() => self
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
