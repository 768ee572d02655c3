//! One webhook attempt (`delivery::send`) against receivers on 127.0.0.1, no database: what
//! is sent, byte for byte, and how each way of answering (or not) becomes an outcome.

use apikey_shim::delivery::send::{Message, Outcome, Sender, USER_AGENT};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const PAYLOAD: &str = r#"{"type":"key.revoked","timestamp":"2026-01-01T00:00:00Z","data":{"key_id":"ak_live_x","name":"Zürich  "}}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";

fn message(url: &str) -> Message<'_> {
    Message {
        url,
        msg_id: "msg_2f1a0c",
        timestamp: 1_767_225_600,
        signature: SIGNATURE,
        payload: PAYLOAD,
    }
}

fn sender(timeout_ms: u64) -> Sender {
    Sender::new(Duration::from_millis(timeout_ms), true).expect("a sender")
}

/// A request as received: the head's lines and the body.
struct Received {
    head: Vec<String>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one HTTP/1.1 request with a Content-Length body.
async fn read_request(stream: &mut TcpStream) -> Received {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).await.expect("read the request");
        assert!(n > 0, "the connection closed mid-request");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head: Vec<String> = String::from_utf8(buffer[..head_end].to_vec())
        .expect("an ASCII head")
        .split("\r\n")
        .map(str::to_string)
        .collect();
    let mut received = Received {
        head,
        body: buffer[head_end + 4..].to_vec(),
    };
    let length: usize = received
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while received.body.len() < length {
        let n = stream.read(&mut chunk).await.expect("read the body");
        assert!(n > 0, "the connection closed mid-body");
        received.body.extend_from_slice(&chunk[..n]);
    }
    received
}

/// A receiver that takes one request, hands it to the test, then does `answer` with the
/// connection. Returns the URL to send to.
async fn receiver<F, Fut>(answer: F) -> (String, oneshot::Receiver<Received>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/hooks/in?tenant=7",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let received = read_request(&mut stream).await;
        let _ = tx.send(received);
        answer(stream).await;
    });
    (url, rx)
}

/// A receiver that answers every request with `response` (raw HTTP).
async fn answering(response: &'static str) -> (String, oneshot::Receiver<Received>) {
    receiver(move |mut stream| async move {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await
}

fn outcome(status: Option<u16>, error: Option<&str>, got: &Outcome) {
    assert_eq!(
        (got.status, got.error.as_deref()),
        (status, error),
        "{got:?}"
    );
    assert!(got.latency_ms >= 0);
}

#[tokio::test]
async fn headers_and_body_are_sent_exactly() {
    let (url, received) = answering("HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
    let got = sender(5_000).send(&message(&url)).await;
    outcome(Some(204), None, &got);
    assert!(got.delivered());
    let request = received.await.expect("a request");
    assert_eq!(request.head[0], "POST /hooks/in?tenant=7 HTTP/1.1");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("webhook-id"), Some("msg_2f1a0c"));
    assert_eq!(request.header("webhook-timestamp"), Some("1767225600"));
    assert_eq!(request.header("webhook-signature"), Some(SIGNATURE));
    assert_eq!(request.header("user-agent"), Some(USER_AGENT));
    assert!(USER_AGENT.starts_with("apikey-shim/"));
    assert_eq!(
        request.header("content-length"),
        Some(PAYLOAD.len().to_string().as_str())
    );
    assert_eq!(request.body, PAYLOAD.as_bytes(), "the body, byte for byte");
    assert_eq!(request.header("referer"), None);
}

#[tokio::test]
async fn every_2xx_delivers_and_anything_else_fails_with_its_status() {
    for (response, status, error) in [
        ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 200, None),
        (
            "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
            202,
            None,
        ),
        (
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops",
            500,
            Some("HTTP 500"),
        ),
        (
            "HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n",
            410,
            Some("HTTP 410"),
        ),
        (
            "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n",
            429,
            Some("HTTP 429"),
        ),
    ] {
        let (url, _received) = answering(response).await;
        let got = sender(5_000).send(&message(&url)).await;
        outcome(Some(status), error, &got);
    }
}

#[tokio::test]
async fn redirects_are_failed_attempts_and_never_followed() {
    let elsewhere = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let location = format!("http://{}/", elsewhere.local_addr().unwrap());
    let response: &'static str = Box::leak(
        format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n")
            .into_boxed_str(),
    );
    let (url, _received) = answering(response).await;
    let got = sender(5_000).send(&message(&url)).await;
    outcome(Some(302), Some("redirect not followed (HTTP 302)"), &got);
    let followed = tokio::time::timeout(Duration::from_millis(300), elsewhere.accept()).await;
    assert!(followed.is_err(), "the redirect target was contacted");
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let (url, _received) = receiver(|stream| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    })
    .await;
    let started = Instant::now();
    let got = sender(300).send(&message(&url)).await;
    outcome(None, Some("timed out after 300 ms"), &got);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(got.latency_ms >= 300, "{got:?}");
}

#[tokio::test]
async fn a_huge_answer_is_not_read_whole() {
    const HUNDRED_MB: usize = 100 << 20;
    let (written_tx, written) = oneshot::channel();
    let (url, _received) = receiver(move |mut stream| async move {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {HUNDRED_MB}\r\n\r\n");
        let mut sent = 0;
        if stream.write_all(head.as_bytes()).await.is_ok() {
            let block = vec![b'x'; 64 * 1024];
            while sent < HUNDRED_MB {
                match stream.write_all(&block).await {
                    Ok(()) => sent += block.len(),
                    Err(_) => break,
                }
            }
        }
        let _ = written_tx.send(sent);
    })
    .await;
    let started = Instant::now();
    let got = sender(20_000).send(&message(&url)).await;
    outcome(Some(200), None, &got);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let sent = tokio::time::timeout(Duration::from_secs(10), written)
        .await
        .expect("the receiver noticed the connection closed")
        .expect("a count");
    // What the socket buffers absorbed, at most a few megabytes: not 100 MB.
    assert!(sent < 32 << 20, "the receiver wrote {sent} bytes");
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let got = sender(5_000).send(&message(&url)).await;
    outcome(None, Some("connection refused"), &got);
}

#[tokio::test]
async fn private_addresses_are_refused_without_a_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().unwrap().port();
    let strict = Sender::new(Duration::from_secs(5), false).expect("a sender");
    // A literal IP (no resolver involved) and a name that resolves to loopback.
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
    ] {
        let got = strict.send(&message(&url)).await;
        assert_eq!(got.status, None, "{url}");
        let error = got.error.unwrap_or_default();
        assert!(
            error.starts_with("address ")
                && error.contains(
                    " is private, loopback or reserved; set APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE=true to allow"
                ),
            "{url}: {error}"
        );
    }
    let contacted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(contacted.is_err(), "a refused address was connected to");
}

#[tokio::test]
async fn only_http_and_https_are_sent() {
    for url in ["ftp://127.0.0.1/x", "file:///etc/passwd", "not a url"] {
        let got = sender(5_000).send(&message(url)).await;
        assert_eq!(got.status, None, "{url}");
        assert!(got.error.is_some(), "{url}");
    }
}

#[tokio::test]
async fn a_signature_that_is_no_header_value_is_an_error_without_a_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let mut bad = message(&url);
    bad.signature = "v1,abc\r\nx-injected: 1";
    let got = sender(5_000).send(&bad).await;
    outcome(
        None,
        Some("webhook-signature is not a valid header value"),
        &got,
    );
    let contacted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(contacted.is_err());
}

/// The delivery task outlives a database it cannot reach, and stops promptly when told to.
#[tokio::test]
async fn the_task_survives_an_unreachable_database_and_stops_on_request() {
    use apikey_shim::delivery::{spawn, Settings};
    use apikey_shim::metrics::Metrics;
    use std::sync::Arc;
    let pool = apikey_shim::db::pool(
        "host=/nonexistent/apikey-delivery-test dbname=apikey user=apikey_shim",
        2,
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .expect("a pool");
    let settings = Settings {
        poll: Duration::from_millis(20),
        batch: 4,
        timeout: Duration::from_secs(1),
        allow_private: false,
        reminder_interval: Duration::from_secs(60),
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let task = spawn(pool, settings, Arc::new(Metrics::default()), stopping).expect("started");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "a database outage ended the task");
    let started = Instant::now();
    stop.send(true).expect("the task listens");
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stopped within 2 s")
        .expect("no panic");
    assert!(started.elapsed() < Duration::from_secs(2));
}
