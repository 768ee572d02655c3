//! One delivery attempt: POST a message to its endpoint and say how it went. Nothing here
//! touches the database, so every way an attempt can end is tested against local receivers
//! (shim/tests/delivery.rs).
//!
//! What an attempt refuses to do: follow a redirect (a 3xx is a failed attempt: following
//! one would let a receiver point the shim anywhere), use a proxy from the environment, speak
//! anything but http and https, connect to a non-public address (see `address`), wait longer
//! than the configured timeout, or read more than [`MAX_RESPONSE_BYTES`] of an answer nobody
//! needs.

use super::address::{check, GuardedResolver, RefusedAddress};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use std::error::Error as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Most of a response body that is read. Reading some lets a kept-alive connection be reused
/// for small answers; past this the connection is dropped instead.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Longest wait for a TCP (and TLS) connection, within the attempt's timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub const USER_AGENT: &str = concat!("apikey-shim/", env!("CARGO_PKG_VERSION"));

/// A message as `apikey_webhook_claim` hands it out: signed by the database, sent as is.
pub struct Message<'a> {
    pub url: &'a str,
    /// `webhook-id`.
    pub msg_id: &'a str,
    /// `webhook-timestamp`, seconds since the Unix epoch.
    pub timestamp: i64,
    /// `webhook-signature`, one or more `v1,<base64>` entries. Never logged.
    pub signature: &'a str,
    /// The exact request body.
    pub payload: &'a str,
}

/// How an attempt went, in the terms of `apikey_webhook_report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status, `None` when there was no answer.
    pub status: Option<u16>,
    /// From the start of the attempt to the response's head (or to the failure).
    pub latency_ms: i32,
    /// `None` for a 2xx; otherwise why the attempt failed, short, without the URL (which may
    /// carry a receiver's secret).
    pub error: Option<String>,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }

    fn failed(status: Option<u16>, started: Instant, error: String) -> Self {
        Outcome {
            status,
            latency_ms: millis(started.elapsed()),
            error: Some(error),
        }
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Sends webhooks; cheap to clone (one connection pool inside).
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    timeout: Duration,
    connect_timeout: Duration,
    allow_private: bool,
}

impl Sender {
    /// `timeout` bounds a whole attempt: connecting, sending, and waiting for the answer.
    pub fn new(timeout: Duration, allow_private: bool) -> Result<Sender, String> {
        let connect_timeout = timeout.min(MAX_CONNECT_TIMEOUT);
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            // HTTP(S)_PROXY would send the request somewhere the address check never sees.
            .no_proxy()
            .referer(false)
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Sender {
            client,
            timeout,
            connect_timeout,
            allow_private,
        })
    }

    /// One attempt. Never fails: every failure is an [`Outcome`] with an error.
    pub async fn send(&self, message: &Message<'_>) -> Outcome {
        let started = Instant::now();
        let request = match self.request(message) {
            Ok(request) => request,
            Err(error) => return Outcome::failed(None, started, error),
        };
        // reqwest's own timeout covers the same span; this one also covers what reqwest does
        // before it starts its clock, and names the limit in the error either way.
        let deadline = started + self.timeout;
        let response = match tokio::time::timeout_at(deadline, self.client.execute(request)).await {
            Err(_) => return Outcome::failed(None, started, self.timed_out()),
            Ok(Err(e)) => return Outcome::failed(None, started, self.describe(&e)),
            Ok(Ok(response)) => response,
        };
        let latency_ms = millis(started.elapsed());
        let status = response.status();
        // The answer is the status; the body is read only so the connection can be reused,
        // and only as far as the limit and the deadline allow.
        let _ = tokio::time::timeout_at(deadline, drain(response, MAX_RESPONSE_BYTES)).await;
        let error = if status.is_success() {
            None
        } else if status.is_redirection() {
            Some(format!("redirect not followed (HTTP {})", status.as_u16()))
        } else {
            Some(format!("HTTP {}", status.as_u16()))
        };
        Outcome {
            status: Some(status.as_u16()),
            latency_ms,
            error,
        }
    }

    fn request(&self, m: &Message<'_>) -> Result<reqwest::Request, String> {
        let url = target(m.url, self.allow_private)?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static("webhook-id"),
            header_value("webhook-id", m.msg_id)?,
        );
        headers.insert(
            HeaderName::from_static("webhook-timestamp"),
            HeaderValue::from(m.timestamp),
        );
        headers.insert(
            HeaderName::from_static("webhook-signature"),
            header_value("webhook-signature", m.signature)?,
        );
        self.client
            .post(url)
            .headers(headers)
            .body(m.payload.to_owned())
            .build()
            .map_err(|e| format!("cannot build the request: {}", innermost(&e)))
    }

    fn timed_out(&self) -> String {
        format!("timed out after {} ms", self.timeout.as_millis())
    }

    /// A short reason for a failed request, from the innermost causes: reqwest's own text
    /// repeats the URL.
    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_connect() && e.is_timeout() {
            return format!(
                "connect timed out after {} ms",
                self.connect_timeout.as_millis()
            );
        }
        if e.is_timeout() {
            return self.timed_out();
        }
        let mut dns = false;
        let mut cause = e.source();
        while let Some(c) = cause {
            if let Some(refused) = c.downcast_ref::<RefusedAddress>() {
                return refused.to_string();
            }
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                    std::io::ErrorKind::ConnectionReset => return "connection reset".into(),
                    std::io::ErrorKind::TimedOut => return self.timed_out(),
                    _ => {}
                }
            }
            // hyper-util's connect error says "dns error" and keeps the resolver's as source.
            dns |= c.to_string() == "dns error";
            cause = c.source();
        }
        let what = if dns {
            "cannot resolve the host"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        format!("{what}: {}", innermost(e))
    }
}

/// The deepest cause of an error: the one that says what actually happened.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = e;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    deepest.to_string()
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(value).map_err(|_| format!("{name} is not a valid header value"))
}

/// The URL of an attempt, when it is one the shim may send to: http or https, with a host
/// that, when it is a literal IP (which no resolver sees), is a public address.
pub fn target(url: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported URL scheme \"{}\": only http and https",
            parsed.scheme()
        ));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "the URL has no host".to_string())?;
    // The URL parser has already normalised IPv4 spellings (0x7f.1, 2130706433); IPv6
    // literals come in brackets.
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        check(ip.to_canonical(), allow_private).map_err(|refused| refused.to_string())?;
    }
    Ok(parsed)
}

/// Reads and discards at most about `limit` bytes of the body (a chunk may overshoot by its
/// own size, which hyper bounds); returns how many were read.
async fn drain(mut response: reqwest::Response, limit: usize) -> usize {
    let mut read = 0;
    while read < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_to_public_literal_addresses_are_targets() {
        let cases: &[(&str, bool, Result<&str, &str>)] = &[
            (
                "https://hooks.example.com/in?x=1",
                false,
                Ok("https://hooks.example.com/in?x=1"),
            ),
            ("http://93.184.216.34:8080/", false, Ok("http://93.184.216.34:8080/")),
            ("http://[2606:4700::1111]/", false, Ok("http://[2606:4700::1111]/")),
            ("HTTPS://Example.COM", false, Ok("https://example.com/")),
            ("http://127.0.0.1:9/", true, Ok("http://127.0.0.1:9/")),
            (
                "http://127.0.0.1/",
                false,
                Err("address 127.0.0.1 is private, loopback or reserved; set APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE=true to allow"),
            ),
            // Other spellings of loopback and metadata addresses.
            ("http://0x7f.1/", false, Err("address 127.0.0.1 is private")),
            ("http://2130706433/", false, Err("address 127.0.0.1 is private")),
            ("http://[::1]/", false, Err("address ::1 is private")),
            ("http://[::ffff:127.0.0.1]/", false, Err("address 127.0.0.1 is private")),
            ("http://169.254.169.254/latest/meta-data/", false, Err("address 169.254.169.254 is private")),
            ("http://0.0.0.0:8080/", false, Err("address 0.0.0.0 is private")),
            ("ftp://example.com/", false, Err("unsupported URL scheme \"ftp\"")),
            ("file:///etc/passwd", true, Err("unsupported URL scheme \"file\"")),
            ("gopher://example.com/", false, Err("unsupported URL scheme \"gopher\"")),
            ("not a url", false, Err("invalid URL")),
            ("/relative", false, Err("invalid URL")),
        ];
        for (url, allow_private, expected) in cases {
            match (target(url, *allow_private), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got.as_str(), *want, "{url}"),
                (Err(got), Err(want)) => assert!(got.starts_with(want), "{url}: {got}"),
                (got, want) => panic!("{url}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn outcomes_say_whether_they_delivered() {
        let ok = Outcome {
            status: Some(204),
            latency_ms: 3,
            error: None,
        };
        assert!(ok.delivered());
        let failed = Outcome::failed(Some(500), Instant::now(), "HTTP 500".into());
        assert!(!failed.delivered());
        assert_eq!(millis(Duration::from_secs(u64::MAX)), i32::MAX);
    }
}
