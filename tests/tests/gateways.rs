//! The book's gateway configurations, run for real: Debian's nginx (`auth_request`) and
//! Caddy (`forward_auth`) in front of the real shim and a small application server, with a
//! client that forges every header the shim reads. The configurations are the files in
//! `docs/gateways/`, which `docs/src/gateways.md` includes (checked here too); only the
//! three ports are changed to free ones.

use apikey_tests::postgres::Client;
use apikey_tests::shim::{send, Response, Shim};
use apikey_tests::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NGINX_CONF: &str = include_str!("../../docs/gateways/nginx.conf");
const CADDYFILE: &str = include_str!("../../docs/gateways/Caddyfile");
const GATEWAYS_PAGE: &str = include_str!("../../docs/src/gateways.md");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What the application behind the gateway received: method, path and headers (names in
/// lower case) of every request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

/// A tiny HTTP/1 application server on a thread: answers 200 "ok" and records requests.
struct App {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl App {
    fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the application");
        let port = listener.local_addr().expect("address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(request) = read_head(&stream) {
                    record.lock().expect("lock").push(request);
                }
                let mut stream = stream;
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\napp",
                );
            }
        });
        App { port, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn read_head(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Some(Seen {
        method,
        path,
        headers,
    })
}

/// A gateway process, killed when dropped.
struct Gateway {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    fn wait_until_listening(self) -> Gateway {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the gateway did not listen; its directory: {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = ureq::request(method, &format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(30));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        send(request, None)
    }
}

/// `text` with `from` replaced by `to`, which must occur exactly `times` times.
fn replaced(text: &str, from: &str, to: &str, times: usize) -> String {
    assert_eq!(
        text.matches(from).count(),
        times,
        "{from:?} in the gateway configuration"
    );
    text.replace(from, to)
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn nginx(shim: u16, app: u16) -> Gateway {
    let port = free_port();
    let dir = scratch_dir("nginx");
    let site = replaced(
        NGINX_CONF,
        "listen 80;",
        &format!("listen 127.0.0.1:{port};"),
        1,
    );
    let site = replaced(&site, "127.0.0.1:8080", &format!("127.0.0.1:{shim}"), 1);
    let site = replaced(&site, "127.0.0.1:9000", &format!("127.0.0.1:{app}"), 1);
    let d = dir.display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         {site}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx (Debian's nginx package)");
    Gateway { child, port, dir }.wait_until_listening()
}

fn caddy(shim: u16, app: u16) -> Gateway {
    let port = free_port();
    let dir = scratch_dir("caddy");
    let site = replaced(CADDYFILE, ":80 {", &format!(":{port} {{"), 1);
    let site = replaced(&site, "127.0.0.1:8080", &format!("127.0.0.1:{shim}"), 1);
    let site = replaced(&site, "127.0.0.1:9000", &format!("127.0.0.1:{app}"), 1);
    let conf = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}");
    let path = dir.join("Caddyfile");
    std::fs::write(&path, conf).expect("write the Caddyfile");
    let log = std::fs::File::create(dir.join("caddy.log")).expect("caddy log");
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start caddy (Debian's caddy package)");
    Gateway { child, port, dir }.wait_until_listening()
}

struct Keys {
    partner: Uuid,
    reader: Issued,
    writer: Issued,
    deleter: Issued,
    fenced: Issued,
}

fn keys(c: &mut Client) -> Keys {
    let partner = create_partner(c);
    Keys {
        partner,
        reader: issue(c, partner, &["orders:read"]),
        writer: issue(c, partner, &["orders:write"]),
        deleter: issue(c, partner, &["orders:delete"]),
        fenced: issue_with(
            c,
            "$1, '{orders:read}', allowed_cidrs => '{10.0.0.0/8}'",
            &[&partner],
        ),
    }
}

/// Every case a client could try against `gateway`.
fn attack(gateway: &Gateway, app: &App, k: &Keys) {
    let reached = || app.requests().len();
    let refused = |what: &str, status: u16, response: Response, before: usize| {
        assert_eq!(response.status, status, "{what}: {}", response.body);
        assert_eq!(reached(), before, "{what}: the application was reached");
    };

    // The legitimate paths.
    let before = reached();
    let response = gateway.request("GET", "/orders/7", &[("X-API-Key", &k.reader.token)]);
    assert_eq!(
        response.status, 200,
        "read with orders:read: {}",
        response.body
    );
    assert_eq!(response.body, "app");
    let seen = &app.requests()[before];
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/orders/7")
    );
    assert_eq!(seen.headers.get("x-apikey-key-id"), Some(&k.reader.key_id));
    assert_eq!(
        seen.headers.get("x-apikey-partner"),
        Some(&k.partner.to_string())
    );
    assert_eq!(
        seen.headers.get("x-apikey-scopes").map(String::as_str),
        Some("orders:read")
    );
    assert_eq!(
        seen.headers.get("x-api-key"),
        None,
        "the token never reaches the app"
    );
    let response = gateway.request(
        "POST",
        "/orders/7",
        &[("Authorization", &format!("Bearer {}", k.writer.token))],
    );
    assert_eq!(
        response.status, 200,
        "write with orders:write: {}",
        response.body
    );
    assert_eq!(
        app.requests()
            .last()
            .and_then(|s| s.headers.get("authorization")),
        None
    );
    let response = gateway.request("DELETE", "/orders/7", &[("X-API-Key", &k.deleter.token)]);
    assert_eq!(
        response.status, 200,
        "delete with orders:delete: {}",
        response.body
    );

    // A read-only key trying to delete, with every method header forged.
    let before = reached();
    let reader = k.reader.token.as_str();
    refused(
        "DELETE",
        403,
        gateway.request("DELETE", "/orders/7", &[("X-API-Key", reader)]),
        before,
    );
    for forged in [
        "X-Forwarded-Method",
        "X-Original-Method",
        "X-Envoy-Original-Method",
    ] {
        let response = gateway.request(
            "DELETE",
            "/orders/7",
            &[("X-API-Key", reader), (forged, "GET")],
        );
        assert!(
            response.status == 403 || response.status == 400,
            "DELETE with {forged}: GET got {}: {}",
            response.status,
            response.body
        );
        assert_eq!(
            reached(),
            before,
            "DELETE with {forged}: GET reached the application"
        );
    }
    let response = gateway.request(
        "DELETE",
        "/orders/7",
        &[
            ("X-API-Key", reader),
            ("X-Forwarded-Method", "GET"),
            ("X-Original-Method", "GET"),
            ("X-Envoy-Original-Method", "GET"),
        ],
    );
    assert!(matches!(response.status, 400 | 403), "{}", response.body);
    assert_eq!(reached(), before);

    // Forged identity headers are replaced by the verified key's.
    let before = reached();
    let forged_partner = Uuid::nil().to_string();
    let response = gateway.request(
        "GET",
        "/orders/7",
        &[
            ("X-API-Key", reader),
            ("X-Apikey-Key-Id", "ak_live_0000000000000000"),
            ("X-Apikey-Partner", &forged_partner),
            ("X-Apikey-Scopes", "admin:*"),
        ],
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let seen = &app.requests()[before];
    assert_eq!(seen.headers.get("x-apikey-key-id"), Some(&k.reader.key_id));
    assert_eq!(
        seen.headers.get("x-apikey-partner"),
        Some(&k.partner.to_string())
    );
    assert_eq!(
        seen.headers.get("x-apikey-scopes").map(String::as_str),
        Some("orders:read")
    );

    // No key, forged identity: refused before the application.
    let before = reached();
    refused(
        "no key",
        401,
        gateway.request("GET", "/orders/7", &[("X-Apikey-Partner", &forged_partner)]),
        before,
    );

    // A client's own X-Required-Scopes is dropped (it cannot even restrict itself), and a
    // forged X-Forwarded-For does not get a fenced key past its allow-list.
    let response = gateway.request(
        "DELETE",
        "/orders/7",
        &[
            ("X-API-Key", &k.deleter.token),
            ("X-Required-Scopes", "admin:*"),
        ],
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let before = reached();
    refused(
        "forged X-Forwarded-For",
        403,
        gateway.request(
            "GET",
            "/orders/7",
            &[
                ("X-API-Key", &k.fenced.token),
                ("X-Forwarded-For", "10.1.2.3"),
            ],
        ),
        before,
    );
}

fn shim_behind_a_gateway() -> Shim {
    Shim::start_with(&[("APIKEY_SHIM_TRUSTED_PROXIES", "127.0.0.1/32")])
}

#[test]
fn nginx_auth_request_as_documented_resists_forged_headers() {
    let mut c = superuser();
    let k = keys(&mut c);
    let shim = shim_behind_a_gateway();
    let app = App::start();
    let gateway = nginx(shim.port, app.port);
    attack(&gateway, &app, &k);
}

/// The documented `map` fills the order from the path: a key for order 7 reads order 7 and
/// nothing else, while type-wide keys keep every order.
#[test]
fn nginx_checks_a_key_for_one_order_against_the_order_in_the_path() {
    let mut c = superuser();
    let k = keys(&mut c);
    let order_7 = issue(&mut c, k.partner, &["orders/7:read"]);
    let shim = shim_behind_a_gateway();
    let app = App::start();
    let gateway = nginx(shim.port, app.port);
    let as_order_7 = [("X-API-Key", order_7.token.as_str())];
    for path in ["/orders/7", "/orders/7?page=2"] {
        let before = app.requests().len();
        let response = gateway.request("GET", path, &as_order_7);
        assert_eq!(response.status, 200, "GET {path}: {}", response.body);
        assert_eq!(app.requests().len(), before + 1);
    }
    let before = app.requests().len();
    for (method, path) in [
        ("GET", "/orders/8"),
        ("GET", "/orders/77"),
        ("GET", "/orders/"),
        ("GET", "/orders/7/items"),
        ("GET", "/orders/%37"),
        ("DELETE", "/orders/7"),
    ] {
        let response = gateway.request(method, path, &as_order_7);
        assert_eq!(response.status, 403, "{method} {path}: {}", response.body);
    }
    assert_eq!(
        app.requests().len(),
        before,
        "the application was not reached"
    );
    let response = gateway.request("GET", "/orders/8", &[("X-API-Key", &k.reader.token)]);
    assert_eq!(response.status, 200, "orders:read reads every order");
}

#[test]
fn caddy_forward_auth_as_documented_resists_forged_headers() {
    let mut c = superuser();
    let k = keys(&mut c);
    let shim = shim_behind_a_gateway();
    let app = App::start();
    let gateway = caddy(shim.port, app.port);
    attack(&gateway, &app, &k);
}

#[test]
fn the_book_shows_the_tested_configurations() {
    for (fence, include) in [
        ("```nginx\n", "../gateways/nginx.conf"),
        ("```caddyfile\n", "../gateways/Caddyfile"),
    ] {
        let block = format!("{fence}{{{{#include {include}}}}}\n```");
        assert!(
            GATEWAYS_PAGE.contains(&block),
            "docs/src/gateways.md must include {include} in a {} block",
            fence.trim()
        );
    }
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/gateways")
        .is_dir());
}
