//! Prometheus text metrics: requests by route and status, verify outcomes by reason, request
//! latency by route, webhook delivery attempts by outcome, tokens reported by GitHub secret
//! scanning by label, the connection pool's use, and the server's `apikey_status()`.
//!
//! The series are kept and written by `prometheus-client` (the Prometheus project's own
//! crate), in the Prometheus text format (0.0.4) that every scraper reads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The `Content-Type` of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Label {
    label: &'static str,
}

type LatencyFamily = Family<Route, Histogram, fn() -> Histogram>;

/// The shim's own series. Cloning a family shares its counts, so every scrape registers
/// clones of these in a registry of its own, next to the gauges read at that moment.
pub struct Metrics {
    requests: Family<RouteStatus, Counter>,
    verify_outcomes: Family<Reason, Counter>,
    latency: LatencyFamily,
    webhook_attempts: Family<Outcome, Counter>,
    leak_reports: Family<Label, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            requests: Family::default(),
            verify_outcomes: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            webhook_attempts: Family::default(),
            leak_reports: Family::default(),
        };
        // Every outcome and label from the start, zeros included, so that a rate of failures
        // exists before the first one.
        for outcome in WebhookOutcome::ALL {
            metrics
                .webhook_attempts
                .get_or_create(&Outcome {
                    outcome: outcome.as_str(),
                })
                .inc_by(0);
        }
        for label in LeakLabel::ALL {
            metrics
                .leak_reports
                .get_or_create(&Label {
                    label: label.as_str(),
                })
                .inc_by(0);
        }
        metrics
    }
}

/// What `apikey_leak_report` said of a token GitHub's secret scanning reported, as counted
/// and as answered to GitHub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeakLabel {
    /// A real key of this database (now revoked, or flagged).
    TruePositive,
    /// Anything else.
    FalsePositive,
}

impl LeakLabel {
    pub const ALL: [LeakLabel; 2] = [LeakLabel::TruePositive, LeakLabel::FalsePositive];

    pub fn as_str(self) -> &'static str {
        match self {
            LeakLabel::TruePositive => "true_positive",
            LeakLabel::FalsePositive => "false_positive",
        }
    }

    pub fn parse(label: &str) -> Option<Self> {
        LeakLabel::ALL.into_iter().find(|l| l.as_str() == label)
    }
}

/// How a webhook delivery attempt ended, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempt failed; the database will retry the delivery later.
    Retrying,
    /// The attempt failed and the database gave the delivery up.
    Failed,
    /// The attempt could not be recorded (the database did not answer, or answered
    /// something unknown); the delivery's lease expires and it is tried again.
    Error,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 4] = [
        WebhookOutcome::Delivered,
        WebhookOutcome::Retrying,
        WebhookOutcome::Failed,
        WebhookOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Delivered => "delivered",
            WebhookOutcome::Retrying => "retrying",
            WebhookOutcome::Failed => "failed",
            WebhookOutcome::Error => "error",
        }
    }

    /// The outcome for a delivery state returned by `apikey_webhook_report`.
    pub fn of_state(state: &str) -> Self {
        match state {
            "delivered" => WebhookOutcome::Delivered,
            "pending" => WebhookOutcome::Retrying,
            "failed" => WebhookOutcome::Failed,
            _ => WebhookOutcome::Error,
        }
    }
}

pub struct PoolUse {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

/// One replica of `APIKEY_SHIM_REPLICA_URLS` as the shim sees it now.
pub struct ReplicaUse {
    pub name: String,
    pub in_use: bool,
    /// `None` while the replica does not answer.
    pub lag_seconds: Option<f64>,
    /// Verifications it answered.
    pub verifications: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabel {
    replica: String,
}

impl Metrics {
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RouteStatus {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&Route {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    pub fn verify_outcome(&self, reason: &str) {
        self.verify_outcomes
            .get_or_create(&Reason {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn webhook_attempt(&self, outcome: WebhookOutcome) {
        self.webhook_attempts
            .get_or_create(&Outcome {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn leak_reported(&self, label: LeakLabel) {
        self.leak_reports
            .get_or_create(&Label {
                label: label.as_str(),
            })
            .inc();
    }

    /// Everything `/metrics` shows: the shim's series, the pool's use, and the server's
    /// `apikey_status()` as a JSON object when the database answered (`None` leaves its
    /// series out: a scrape must not fail because of the database).
    pub fn render(
        &self,
        pool: PoolUse,
        replicas: &[ReplicaUse],
        server_status: Option<&serde_json::Value>,
    ) -> String {
        let mut registry = Registry::default();
        registry.register(
            "apikey_shim_requests",
            "HTTP requests by route and status",
            self.requests.clone(),
        );
        registry.register(
            "apikey_shim_verify_outcomes",
            "Key verifications by apikey_verify reason",
            self.verify_outcomes.clone(),
        );
        registry.register(
            "apikey_shim_request_duration_seconds",
            "Request latency by route",
            self.latency.clone(),
        );
        registry.register(
            "apikey_shim_webhook_attempts",
            "Webhook delivery attempts by outcome: delivered (2xx), retrying (failed, to be \
             retried), failed (given up), error (not recorded, to be retried)",
            self.webhook_attempts.clone(),
        );
        registry.register(
            "apikey_shim_secret_scanning_tokens",
            "Tokens reported by GitHub secret scanning, by label: true_positive (a real key, \
             revoked or flagged), false_positive",
            self.leak_reports.clone(),
        );
        for (name, help, value) in [
            (
                "apikey_shim_pool_max_size",
                "Largest number of database connections",
                pool.max_size,
            ),
            (
                "apikey_shim_pool_size",
                "Database connections open",
                pool.size,
            ),
            (
                "apikey_shim_pool_available",
                "Open connections idle in the pool",
                pool.available,
            ),
            (
                "apikey_shim_pool_waiting",
                "Requests waiting for a connection",
                pool.waiting,
            ),
        ] {
            registry.register(name, help, ConstGauge::new(saturating_i64(value)));
        }
        if !replicas.is_empty() {
            register_replicas(&mut registry, replicas);
        }
        if let Some(status) = server_status {
            register_server_status(&mut registry, status);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }
}

/// One series `/metrics` can show, as its `# TYPE` and `# HELP` lines say.
#[derive(Debug, PartialEq, Eq)]
pub struct Described {
    pub name: String,
    pub kind: String,
    pub help: String,
}

/// Every series `/metrics` can show, read off a rendering in which the database answered
/// with every `apikey_status()` column: the reference documentation is generated from this.
pub fn catalogue() -> Vec<Described> {
    let mut status = serde_json::json!({
        "shared_memory": true,
        "last_flush": "2026-01-01T00:00:00Z",
    });
    for (column, _) in SERVER_COUNTERS.iter().chain(SERVER_GAUGES.iter()) {
        status[*column] = serde_json::json!(0);
    }
    let pool = PoolUse {
        max_size: 0,
        size: 0,
        available: 0,
        waiting: 0,
    };
    // A family with labels shows only once it has a series.
    let metrics = Metrics::default();
    metrics.observe("/v1/verify", 200, 0.001);
    metrics.verify_outcome("ok");
    let replicas = [ReplicaUse {
        name: "standby-1:5432".into(),
        in_use: true,
        lag_seconds: Some(0.0),
        verifications: 0,
    }];
    let text = metrics.render(pool, &replicas, Some(&status));
    let mut described: Vec<Described> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            described.push(Described {
                name: name.to_string(),
                kind: String::new(),
                help: help.to_string(),
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some(last) = described.last_mut().filter(|d| d.name == name) {
                last.kind = kind.to_string();
            }
        }
    }
    described
}

fn saturating_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `apikey_status()`'s columns: counters for what only grows, gauges for the rest. Columns
/// that are NULL (no shared memory) are left out, but `apikey_shared_memory` is always there.
const SERVER_COUNTERS: [(&str, &str); 12] = [
    (
        "proof_hits",
        "Verifications answered by a proof, without Argon2id",
    ),
    ("proof_misses", "Verifications that needed Argon2id"),
    ("argon2_verified", "Argon2id verifications that matched"),
    ("argon2_failed", "Argon2id verifications that did not match"),
    (
        "argon2_waits",
        "Verifications that waited for the Argon2id gate",
    ),
    (
        "argon2_refused",
        "Guesses at a key answered rate_limited without Argon2id: its queue was full or its attack budget spent",
    ),
    (
        "rate_limited",
        "Verifications refused by a key's rate limit",
    ),
    (
        "usage_dropped",
        "Usage counts dropped because shared memory was full",
    ),
    (
        "audit_suppressed",
        "Unknown-key failures not audited: their sender networks' share of the marks was used up",
    ),
    ("keys_evicted", "Keys evicted from shared memory"),
    ("flushes", "Background worker flushes"),
    (
        "flush_failures",
        "Background worker flushes that failed and will be retried",
    ),
];
const SERVER_GAUGES: [(&str, &str); 6] = [
    ("keys_in_use", "Keys held in shared memory"),
    (
        "keys_capacity",
        "Keys shared memory can hold (apikey.max_keys)",
    ),
    ("usage_entries", "Usage counts waiting for the worker"),
    (
        "usage_capacity",
        "Usage counts shared memory can hold (apikey.max_usage_entries)",
    ),
    ("argon2_running", "Argon2id verifications running now"),
    (
        "argon2_max_concurrency",
        "Argon2id verifications allowed at once",
    ),
];

fn register_replicas(registry: &mut Registry, replicas: &[ReplicaUse]) {
    let in_use = Family::<ReplicaLabel, Gauge>::default();
    let lag = Family::<ReplicaLabel, Gauge<f64, AtomicU64>>::default();
    let answered = Family::<ReplicaLabel, Counter>::default();
    for replica in replicas {
        let label = ReplicaLabel {
            replica: replica.name.clone(),
        };
        in_use.get_or_create(&label).set(i64::from(replica.in_use));
        answered.get_or_create(&label).inc_by(replica.verifications);
        if let Some(seconds) = replica.lag_seconds {
            lag.get_or_create(&label).set(seconds);
        }
    }
    registry.register(
        "apikey_shim_replica_in_use",
        "Whether verification uses the replica (APIKEY_SHIM_REPLICA_URLS): it answers and is \
         within APIKEY_SHIM_MAX_REPLICA_LAG_MS of the primary",
        in_use,
    );
    registry.register(
        "apikey_shim_replica_lag_seconds",
        "How far the replica's replay is behind the primary (absent while it does not answer)",
        lag,
    );
    registry.register(
        "apikey_shim_replica_verifications",
        "Verifications the replica answered (an unknown_key asked again of the primary is the \
         primary's)",
        answered,
    );
}

fn register_server_status(registry: &mut Registry, status: &serde_json::Value) {
    let shared = status["shared_memory"].as_bool().unwrap_or(false);
    registry.register(
        "apikey_shared_memory",
        "Whether the server runs apikey with shared memory (shared_preload_libraries)",
        ConstGauge::new(i64::from(shared)),
    );
    for (column, help) in SERVER_COUNTERS {
        if let Some(value) = status[column].as_u64() {
            registry.register(format!("apikey_{column}"), help, ConstCounter::new(value));
        }
    }
    for (column, help) in SERVER_GAUGES {
        if let Some(value) = status[column].as_i64() {
            registry.register(format!("apikey_{column}"), help, ConstGauge::new(value));
        }
    }
    if let Some(at) = status["last_flush"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        registry.register(
            "apikey_last_flush_timestamp_seconds",
            "When the background worker last flushed",
            ConstGauge::new(at.timestamp()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: PoolUse = PoolUse {
        max_size: 16,
        size: 2,
        available: 1,
        waiting: 0,
    };

    #[test]
    fn renders_the_servers_status() {
        let status = serde_json::json!({
            "shared_memory": true, "proof_hits": 7, "keys_in_use": 3, "argon2_running": 0,
            "last_flush": "2026-12-01T10:00:00+00:00", "note": null
        });
        let text = Metrics::default().render(POOL, &[], Some(&status));
        assert!(text.contains("\napikey_shared_memory 1\n"), "{text}");
        assert!(
            text.contains(
                "# HELP apikey_proof_hits_total Verifications answered by a proof, without \
                 Argon2id.\n# TYPE apikey_proof_hits_total counter\napikey_proof_hits_total 7\n"
            ),
            "{text}"
        );
        assert!(text.contains("\napikey_keys_in_use 3\n"), "{text}");
        assert!(text.contains("\napikey_argon2_running 0\n"), "{text}");
        assert!(
            text.contains("\napikey_last_flush_timestamp_seconds 1796119200\n"),
            "{text}"
        );
        let server_lines = |text: &str| {
            text.lines()
                .filter(|l| l.starts_with("apikey_") && !l.starts_with("apikey_shim_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let off = serde_json::json!({ "shared_memory": false, "proof_hits": null });
        assert_eq!(
            server_lines(&Metrics::default().render(POOL, &[], Some(&off))),
            ["apikey_shared_memory 0"]
        );
        assert_eq!(
            server_lines(&Metrics::default().render(POOL, &[], None)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.observe("/v1/verify", 200, 0.002);
        m.observe("/v1/verify", 401, 0.3);
        m.verify_outcome("ok");
        m.webhook_attempt(WebhookOutcome::of_state("pending"));
        m.webhook_attempt(WebhookOutcome::of_state("delivered"));
        m.webhook_attempt(WebhookOutcome::of_state("pending"));
        let text = m.render(POOL, &[], None);
        for line in [
            "# HELP apikey_shim_requests_total HTTP requests by route and status.",
            "# TYPE apikey_shim_requests_total counter",
            "apikey_shim_requests_total{route=\"/v1/verify\",status=\"200\"} 1",
            "apikey_shim_verify_outcomes_total{reason=\"ok\"} 1",
            "# TYPE apikey_shim_request_duration_seconds histogram",
            "apikey_shim_request_duration_seconds_bucket{route=\"/v1/verify\",le=\"0.001\"} 0",
            "apikey_shim_request_duration_seconds_bucket{route=\"/v1/verify\",le=\"0.0025\"} 1",
            "apikey_shim_request_duration_seconds_bucket{route=\"/v1/verify\",le=\"0.5\"} 2",
            "apikey_shim_request_duration_seconds_bucket{route=\"/v1/verify\",le=\"+Inf\"} 2",
            "apikey_shim_request_duration_seconds_sum{route=\"/v1/verify\"} 0.302",
            "apikey_shim_request_duration_seconds_count{route=\"/v1/verify\"} 2",
            "# TYPE apikey_shim_pool_size gauge",
            "apikey_shim_pool_size 2",
            "apikey_shim_pool_max_size 16",
            "apikey_shim_webhook_attempts_total{outcome=\"retrying\"} 2",
            "apikey_shim_webhook_attempts_total{outcome=\"delivered\"} 1",
            "apikey_shim_webhook_attempts_total{outcome=\"failed\"} 0",
            "apikey_shim_webhook_attempts_total{outcome=\"error\"} 0",
            "apikey_shim_secret_scanning_tokens_total{label=\"true_positive\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        m.leak_reported(LeakLabel::FalsePositive);
        let text = m.render(POOL, &[], None);
        assert!(
            text.contains("apikey_shim_secret_scanning_tokens_total{label=\"false_positive\"} 1\n")
        );
        assert!(
            !text.contains(".."),
            "help text ends in one period:\n{text}"
        );
    }

    #[test]
    fn leak_labels_round_trip() {
        for label in LeakLabel::ALL {
            assert_eq!(LeakLabel::parse(label.as_str()), Some(label));
        }
        assert_eq!(LeakLabel::parse("True_Positive"), None);
    }

    #[test]
    fn webhook_states_map_to_outcomes() {
        for (state, outcome) in [
            ("delivered", "delivered"),
            ("pending", "retrying"),
            ("failed", "failed"),
            ("something new", "error"),
        ] {
            assert_eq!(WebhookOutcome::of_state(state).as_str(), outcome, "{state}");
        }
    }
}
