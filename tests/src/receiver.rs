//! A webhook receiver on 127.0.0.1 for the delivery tests: a plain HTTP/1.1 server on its
//! own threads that records every request and answers with the statuses it is told to
//! (200 once the queue is empty). Written on `std::net` so that what the shim sends is
//! read byte for byte, not through another HTTP library's interpretation.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The status this request was answered with.
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a webhook body is JSON")
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    statuses: VecDeque<u16>,
    /// How long each answer waits.
    delay: Duration,
}

pub struct Receiver {
    port: u16,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let accepted = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&accepted);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Receiver { port, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next `count` requests are answered with `status`.
    pub fn answer_next(&self, count: usize, status: u16) {
        let mut shared = self.shared.lock().expect("receiver state");
        shared.statuses.extend(std::iter::repeat_n(status, count));
    }

    /// Every later answer waits this long: deliveries stay in flight.
    pub fn delay_answers(&self, delay: Duration) {
        self.shared.lock().expect("receiver state").delay = delay;
    }

    /// Forgets the statuses not yet used: every request is answered 200 again.
    pub fn clear_answers(&self) {
        self.shared.lock().expect("receiver state").statuses.clear();
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().expect("receiver state").received.clone()
    }

    /// Waits until a request satisfies `matches`, and returns it.
    pub fn wait_for(&self, what: &str, matches: impl Fn(&Received) -> bool) -> Received {
        crate::eventually(what, || self.received().into_iter().find(|r| matches(r)))
    }
}

fn serve(stream: TcpStream, shared: &Mutex<Shared>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (answered, delay) = {
            let mut shared = shared.lock().expect("receiver state");
            let status = shared.statuses.pop_front().unwrap_or(200);
            shared.received.push(Received {
                method,
                path,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                answered: status,
            });
            (status, shared.delay)
        };
        std::thread::sleep(delay);
        let response = format!(
            "HTTP/1.1 {answered} Answer\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
