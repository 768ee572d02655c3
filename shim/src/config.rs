//! Configuration from flags or the environment; `apikey-shim --help` documents each one.

use crate::db::Statements;
use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;
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

    /// Comma-separated connection strings of hot standbys of DATABASE_URL's server, one
    /// server each: verification goes to the ones in use in turn (a pool of
    /// APIKEY_SHIM_POOL_SIZE each), everything else to DATABASE_URL. Never logged.
    #[arg(
        long,
        env = "APIKEY_SHIM_REPLICA_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub replica_urls: Vec<String>,

    /// A replica further behind the primary than this many milliseconds is not verified
    /// with until it catches up.
    #[arg(long, env = "APIKEY_SHIM_MAX_REPLICA_LAG_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=crate::replicas::MAX_LAG_LIMIT_MS))]
    pub max_replica_lag_ms: u64,

    /// A replica that has not connected or answered a query (a verification, the probe's)
    /// within this many milliseconds is taken out of use and the next server asked; one with
    /// no free pooled connection for as long is skipped for that request. The primary's
    /// answer for a key a replica did not know is waited for as long, then the replica's
    /// stands.
    #[arg(long, env = "APIKEY_SHIM_REPLICA_TIMEOUT_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub replica_timeout_ms: u64,

    /// A change made through the shim answers once every replica in use has replayed it;
    /// one that has not after this many milliseconds is taken out of use.
    #[arg(long, env = "APIKEY_SHIM_REPLICA_WAIT_MS", default_value_t = 5_000)]
    pub replica_wait_ms: u64,

    /// Address and port to listen on.
    #[arg(long, env = "APIKEY_SHIM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Maximum number of database connections in the pool.
    #[arg(long, env = "APIKEY_SHIM_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,

    /// How verifications reach the database: `prepared` (named statements prepared once per
    /// connection, the fastest) or `unnamed` (parsed each time, for a connection pooler in
    /// transaction mode, e.g. pgbouncer before 1.21).
    #[arg(
        long,
        env = "APIKEY_SHIM_STATEMENTS",
        value_enum,
        default_value_t = Statements::Prepared
    )]
    pub statements: Statements,

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

    /// Deliver webhook events from the database's outbox. Any number of shims may deliver
    /// at once without sending a message twice at the same time; set false on shims that
    /// should only serve HTTP.
    #[arg(
        long,
        env = "APIKEY_SHIM_WEBHOOK_DELIVERY",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_delivery: bool,

    /// Milliseconds between looks for due webhook deliveries while none are due (a full
    /// batch is followed by the next at once).
    #[arg(long, env = "APIKEY_SHIM_WEBHOOK_POLL_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_poll_ms: u64,

    /// Most webhook deliveries in flight at once, and so most claimed from the database at
    /// once.
    #[arg(long, env = "APIKEY_SHIM_WEBHOOK_BATCH", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub webhook_batch: u16,

    /// Time limit in milliseconds of one webhook attempt (connecting, at most 5 s of it,
    /// sending, and waiting for the answer). A delivery is leased for twice this plus 5 s.
    #[arg(long, env = "APIKEY_SHIM_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub webhook_timeout_ms: u64,

    /// Also send webhooks to private, loopback, link-local, CGNAT, multicast, documentation
    /// and other non-public addresses. Off by default: a partner's URL must not reach into
    /// the network the shim runs in (databases, cloud metadata services). For development and
    /// for receivers on a private network you trust.
    #[arg(
        long,
        env = "APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_allow_private: bool,

    /// Milliseconds between asks to the database for the reminders that are due
    /// (`key.expiring`, `key.rotation_due`); delivering shims only.
    #[arg(long, env = "APIKEY_SHIM_REMINDER_INTERVAL_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(100..=86_400_000))]
    pub reminder_interval_ms: u64,

    /// GitHub's secret scanning public keys: a JSON file in the format of
    /// https://api.github.com/meta/public_keys/secret_scanning ({"public_keys":
    /// [{"key_identifier", "key" (PEM), "is_current"}]}). Reports to POST /v1/secret-scanning
    /// must be signed by one of them. Read at startup (a bad file stops the shim) and again
    /// whenever its modification time changes. Unset: the route answers 404.
    #[arg(long, env = "APIKEY_SHIM_SECRET_SCANNING_KEYS")]
    pub secret_scanning_keys: Option<PathBuf>,

    /// What a token reported by GitHub secret scanning gets when it is a real key: `revoke`
    /// it, or only `flag` it (audit row and `key.leaked` event, key left working).
    #[arg(
        long,
        env = "APIKEY_SHIM_SECRET_SCANNING_ACTION",
        value_enum,
        default_value_t = LeakAction::Revoke
    )]
    pub secret_scanning_action: LeakAction,
}

/// What a leaked key reported by GitHub secret scanning gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LeakAction {
    /// Revoke it at once.
    Revoke,
    /// Record the leak and tell the partner, but leave the key working.
    Flag,
}

impl LeakAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LeakAction::Revoke => "revoke",
            LeakAction::Flag => "flag",
        }
    }
}

impl Config {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn webhook_settings(&self) -> crate::delivery::Settings {
        crate::delivery::Settings {
            poll: Duration::from_millis(self.webhook_poll_ms),
            batch: usize::from(self.webhook_batch),
            timeout: Duration::from_millis(self.webhook_timeout_ms),
            allow_private: self.webhook_allow_private,
            reminder_interval: Duration::from_millis(self.reminder_interval_ms),
        }
    }

    pub fn connection_limits(&self) -> crate::serve::Limits {
        crate::serve::Limits {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let mut args = vec!["apikey-shim", "--database-url", "host=/nonexistent"];
        args.extend_from_slice(extra);
        Config::try_parse_from(args)
    }

    #[test]
    fn webhook_settings_have_defaults_and_limits() {
        let config = parse(&[]).expect("defaults");
        assert!(config.webhook_delivery);
        let settings = config.webhook_settings();
        assert_eq!(settings.poll, Duration::from_millis(250));
        assert_eq!(settings.batch, 16);
        assert_eq!(settings.timeout, Duration::from_millis(10_000));
        assert!(!settings.allow_private);

        let config = parse(&[
            "--webhook-delivery",
            "false",
            "--webhook-allow-private",
            "yes",
            "--webhook-batch",
            "4",
        ])
        .expect("explicit values");
        assert!(!config.webhook_delivery);
        assert!(config.webhook_allow_private);
        assert_eq!(config.webhook_settings().batch, 4);

        for refused in [
            &["--webhook-batch", "0"][..],
            &["--webhook-poll-ms", "0"],
            &["--webhook-timeout-ms", "0"],
            &["--webhook-delivery", "maybe"],
        ] {
            assert!(parse(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn replica_limits_are_bounded_by_what_the_shim_can_measure() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(
            (config.max_replica_lag_ms, config.replica_timeout_ms),
            (1_000, 1_000)
        );
        let longest = crate::replicas::MAX_LAG_LIMIT_MS.to_string();
        assert!(parse(&["--max-replica-lag-ms", &longest]).is_ok());
        let too_long = (crate::replicas::MAX_LAG_LIMIT_MS + 1).to_string();
        for refused in [
            &["--max-replica-lag-ms", &too_long][..],
            &["--max-replica-lag-ms", "0"],
            &["--replica-timeout-ms", "0"],
        ] {
            assert!(parse(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn secret_scanning_is_off_by_default_and_revokes_when_on() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.secret_scanning_keys, None);
        assert_eq!(config.secret_scanning_action, LeakAction::Revoke);
        let config = parse(&[
            "--secret-scanning-keys",
            "/etc/apikey/github-keys.json",
            "--secret-scanning-action",
            "flag",
        ])
        .expect("explicit values");
        assert_eq!(
            config.secret_scanning_keys.as_deref(),
            Some(std::path::Path::new("/etc/apikey/github-keys.json"))
        );
        assert_eq!(config.secret_scanning_action, LeakAction::Flag);
        assert_eq!(config.secret_scanning_action.as_str(), "flag");
        assert!(parse(&["--secret-scanning-action", "delete"]).is_err());
    }

    #[test]
    fn statements_are_prepared_unless_a_pooler_needs_them_unnamed() {
        assert_eq!(
            parse(&[]).expect("defaults").statements,
            Statements::Prepared
        );
        let config = parse(&["--statements", "unnamed"]).expect("unnamed");
        assert_eq!(config.statements, Statements::Unnamed);
        assert!(parse(&["--statements", "named"]).is_err());
    }
}
