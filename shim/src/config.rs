//! Configuration from flags or the environment; `apikey-shim --help` documents each one.

use clap::Parser;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser, Clone)]
#[command(
    name = "apikey-shim",
    version,
    about = "HTTP front end of the apikey PostgreSQL extension: verifies API keys for partners \
             and gateways (nginx auth_request, Traefik ForwardAuth, Envoy ext_authz) and offers \
             a JSON management API. Every decision is made by the database."
)]
pub struct Config {
    /// PostgreSQL connection string (URL or key=value). The role must be a member of
    /// apikey_verifier, apikey_admin and apikey_partner. Never logged.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Address and port to listen on.
    #[arg(long, env = "APIKEY_SHIM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Maximum number of database connections in the pool.
    #[arg(long, env = "APIKEY_SHIM_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,

    /// Per-request time limit in milliseconds (including waiting for a pooled connection).
    #[arg(long, env = "APIKEY_SHIM_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed. The client
    /// IP is otherwise the TCP peer. Example: 127.0.0.1/32,10.0.0.0/8
    #[arg(long, env = "APIKEY_SHIM_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,

    /// Also accept the key from an `api_key` query parameter. Off by default because URLs end
    /// up in access logs; when on, the parameter is never logged by the shim.
    #[arg(long, env = "APIKEY_SHIM_ALLOW_QUERY_KEY")]
    pub allow_query_key: bool,

    /// Time in milliseconds a client has to send a complete request head (request line and
    /// headers), counted from its first byte; slower connections are closed.
    #[arg(long, env = "APIKEY_SHIM_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Time in milliseconds a kept-alive connection may stay open with no request in
    /// progress. Keep it above the idle timeout of a gateway's connection pool (nginx
    /// `keepalive_timeout` in an upstream block: 60 s by default).
    #[arg(long, env = "APIKEY_SHIM_IDLE_TIMEOUT_MS", default_value_t = 75_000)]
    pub idle_timeout_ms: u64,

    /// Most client connections open at once; further ones wait to be accepted.
    #[arg(long, env = "APIKEY_SHIM_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, env = "APIKEY_SHIM_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Log format: `text` or `json`. Verbosity follows RUST_LOG (default `info`).
    #[arg(long, env = "APIKEY_SHIM_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Config {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn connection_limits(&self) -> crate::serve::Limits {
        crate::serve::Limits {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
        }
    }
}
