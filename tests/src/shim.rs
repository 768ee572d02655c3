//! Starts the real `apikey-shim` binary against the test cluster and speaks real HTTP to it.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The login role the shim uses: a member of all three apikey roles, as the contract says.
pub const SHIM_ROLE: &str = "apikey_shim_test";

pub struct Shim {
    child: Child,
    pub port: u16,
    pub log_path: PathBuf,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A parameter of a rate-limit field (`RateLimit-Policy: "key";q=300;w=60`,
    /// `RateLimit: "key";r=299;t=1`), e.g. `rate("ratelimit", "r")`.
    pub fn rate(&self, field: &str, parameter: &str) -> Option<i64> {
        self.header(field)?
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(name, _)| *name == parameter)
            .and_then(|(_, value)| value.parse().ok())
    }

    /// The `reason` of a JSON error (or verify) body.
    pub fn reason(&self) -> String {
        self.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn shim_binary() -> PathBuf {
    let path = std::env::var("APIKEY_TEST_SHIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/apikey-shim")
        });
    assert!(
        path.exists(),
        "{} is missing: build it with cargo build --release -p apikey-shim",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Creates the shim's login role once per cluster (idempotent, safe in parallel).
fn ensure_shim_role() {
    let mut c = crate::superuser();
    c.batch_execute(&format!(
        "DO $$ BEGIN
           CREATE ROLE {SHIM_ROLE} LOGIN;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$;
         GRANT apikey_verifier, apikey_admin, apikey_partner TO {SHIM_ROLE};"
    ))
    .expect("create the shim's login role");
}

impl Shim {
    pub fn start() -> Shim {
        Shim::start_with(&[])
    }

    /// Starts the shim with extra environment variables (e.g. APIKEY_SHIM_TRUSTED_PROXIES)
    /// and waits until /healthz answers.
    pub fn start_with(env: &[(&str, &str)]) -> Shim {
        ensure_shim_role();
        let port = free_port();
        let log_path = std::env::temp_dir().join(format!(
            "apikey-shim-test-{}-{port}.log",
            std::process::id()
        ));
        let log = std::fs::File::create(&log_path).expect("create the shim log file");
        let database_url = format!(
            "host={} port={} user={SHIM_ROLE} dbname={}",
            std::env::var("APIKEY_TEST_PGHOST").expect("APIKEY_TEST_PGHOST"),
            std::env::var("APIKEY_TEST_PGPORT").expect("APIKEY_TEST_PGPORT"),
            std::env::var("APIKEY_TEST_PGDATABASE").expect("APIKEY_TEST_PGDATABASE"),
        );
        let mut command = Command::new(shim_binary());
        command
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("APIKEY_SHIM_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "debug")
            // Only the delivery tests deliver: a shim of another test would claim their
            // deliveries and send them with its own settings.
            .env("APIKEY_SHIM_WEBHOOK_DELIVERY", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start apikey-shim");
        let shim = Shim {
            child,
            port,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            // Connection refused until it listens: probe without panicking.
            if shim
                .request("GET", "/healthz")
                .call()
                .is_ok_and(|r| r.status() == 200)
            {
                return shim;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "apikey-shim did not become healthy; its log:\n{}",
            shim.log()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Everything the shim wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        ureq::request(method, &self.url(path)).timeout(Duration::from_secs(30))
    }

    pub fn get(&self, path: &str) -> Response {
        send(self.request("GET", path), None)
    }

    /// GET with `X-API-Key: token`.
    pub fn get_as(&self, token: &str, path: &str) -> Response {
        send(self.request("GET", path).set("X-API-Key", token), None)
    }

    /// POST of a JSON body with `X-API-Key: token`.
    pub fn post_as(&self, token: &str, path: &str, body: &serde_json::Value) -> Response {
        let request = self
            .request("POST", path)
            .set("X-API-Key", token)
            .set("Content-Type", "application/json");
        send(request, Some(&body.to_string()))
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// Sends a request; HTTP error statuses are answers here, not failures.
pub fn send(request: ureq::Request, body: Option<&str>) -> Response {
    let result = match body {
        Some(b) => request.send_string(b),
        None => request.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("HTTP request failed: {e}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .flat_map(|name| {
            response
                .all(&name)
                .into_iter()
                .map(|v| (name.clone(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let body = response.into_string().unwrap_or_default();
    Response {
        status,
        headers,
        body,
    }
}

impl Shim {
    /// Sends `request` as raw bytes on a new connection and reads the answer until the server
    /// closes it (send `Connection: close`). For requests a well-behaved client refuses to
    /// build: non-ASCII header bytes, oversized headers. The server may answer and close
    /// before it has read everything, so a failed write is not an error; what it sent back is
    /// the answer. Bodies are returned as sent (no chunked decoding), cut to Content-Length.
    pub fn raw(&self, request: &[u8]) -> Response {
        use std::io::Write;
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the shim");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set a read timeout");
        let _ = stream.write_all(request);
        let mut received = Vec::new();
        // On a reset, the bytes that arrived before it are kept in `received`.
        let _ = stream.read_to_end(&mut received);
        parse_raw_response(&received).unwrap_or_else(|| {
            panic!(
                "no HTTP response to a raw request; received {:?}",
                String::from_utf8_lossy(&received)
            )
        })
    }
}

fn parse_raw_response(bytes: &[u8]) -> Option<Response> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = &bytes[end + 4..];
    if let Some(length) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body = &body[..length.min(body.len())];
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}
