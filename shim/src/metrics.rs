//! Prometheus text metrics: requests by route and status, verify outcomes by reason, request
//! latency by route, webhook delivery attempts by outcome, tokens reported by GitHub secret
//! scanning by label, and the connection pool's use.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    verify_outcomes: BTreeMap<String, u64>,
    latency: BTreeMap<String, Histogram>,
    webhook_attempts: [u64; WebhookOutcome::ALL.len()],
    leak_reports: [u64; LeakLabel::ALL.len()],
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

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

pub struct PoolUse {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        let mut inner = self.inner();
        *inner
            .requests
            .entry((route.to_string(), status))
            .or_default() += 1;
        let h = inner.latency.entry(route.to_string()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn verify_outcome(&self, reason: &str) {
        let mut inner = self.inner();
        match inner.verify_outcomes.get_mut(reason) {
            Some(count) => *count += 1,
            None => {
                inner.verify_outcomes.insert(reason.to_string(), 1);
            }
        }
    }

    pub fn webhook_attempt(&self, outcome: WebhookOutcome) {
        self.inner().webhook_attempts[outcome as usize] += 1;
    }

    pub fn leak_reported(&self, label: LeakLabel) {
        self.inner().leak_reports[label as usize] += 1;
    }

    pub fn render(&self, pool: PoolUse) -> String {
        let inner = self.inner();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP apikey_shim_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE apikey_shim_requests_total counter");
        for ((route, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "apikey_shim_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP apikey_shim_verify_outcomes_total Key verifications by apikey_verify reason."
        );
        let _ = writeln!(out, "# TYPE apikey_shim_verify_outcomes_total counter");
        for (reason, n) in &inner.verify_outcomes {
            let _ = writeln!(
                out,
                "apikey_shim_verify_outcomes_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP apikey_shim_request_duration_seconds Request latency by route."
        );
        let _ = writeln!(out, "# TYPE apikey_shim_request_duration_seconds histogram");
        for (route, h) in &inner.latency {
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "apikey_shim_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "apikey_shim_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "apikey_shim_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "apikey_shim_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        // Every outcome, zeros included, so that a rate of failures exists before the first.
        let _ = writeln!(
            out,
            "# HELP apikey_shim_webhook_attempts_total Webhook delivery attempts by outcome: \
             delivered (2xx), retrying (failed, to be retried), failed (given up), error (not \
             recorded, to be retried)."
        );
        let _ = writeln!(out, "# TYPE apikey_shim_webhook_attempts_total counter");
        for outcome in WebhookOutcome::ALL {
            let _ = writeln!(
                out,
                "apikey_shim_webhook_attempts_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                inner.webhook_attempts[outcome as usize]
            );
        }
        let _ = writeln!(
            out,
            "# HELP apikey_shim_secret_scanning_tokens_total Tokens reported by GitHub secret \
             scanning, by label: true_positive (a real key, revoked or flagged), false_positive."
        );
        let _ = writeln!(
            out,
            "# TYPE apikey_shim_secret_scanning_tokens_total counter"
        );
        for label in LeakLabel::ALL {
            let _ = writeln!(
                out,
                "apikey_shim_secret_scanning_tokens_total{{label=\"{}\"}} {}",
                label.as_str(),
                inner.leak_reports[label as usize]
            );
        }
        for (name, help, value) in [
            (
                "apikey_shim_pool_max_size",
                "Largest number of database connections.",
                pool.max_size,
            ),
            (
                "apikey_shim_pool_size",
                "Database connections open.",
                pool.size,
            ),
            (
                "apikey_shim_pool_available",
                "Open connections idle in the pool.",
                pool.available,
            ),
            (
                "apikey_shim_pool_waiting",
                "Requests waiting for a connection.",
                pool.waiting,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// `apikey_status()` as Prometheus text: counters for what only grows, gauges for the rest.
/// Columns that are NULL (no shared memory) are left out, but `apikey_shared_memory` is
/// always there.
pub fn render_server_status(status: &serde_json::Value) -> String {
    const COUNTERS: [(&str, &str); 11] = [
        (
            "proof_hits",
            "Verifications answered by a proof, without Argon2id.",
        ),
        ("proof_misses", "Verifications that needed Argon2id."),
        ("argon2_verified", "Argon2id verifications that matched."),
        (
            "argon2_failed",
            "Argon2id verifications that did not match.",
        ),
        (
            "argon2_waits",
            "Verifications that waited for the Argon2id gate.",
        ),
        (
            "rate_limited",
            "Verifications refused by a key's rate limit.",
        ),
        (
            "usage_dropped",
            "Usage counts dropped because shared memory was full.",
        ),
        (
            "audit_suppressed",
            "Failure audit rows not written because shared memory was full.",
        ),
        ("keys_evicted", "Keys evicted from shared memory."),
        ("flushes", "Background worker flushes."),
        (
            "flush_failures",
            "Background worker flushes that failed and will be retried.",
        ),
    ];
    const GAUGES: [(&str, &str); 6] = [
        ("keys_in_use", "Keys held in shared memory."),
        (
            "keys_capacity",
            "Keys shared memory can hold (apikey.max_keys).",
        ),
        ("usage_entries", "Usage counts waiting for the worker."),
        (
            "usage_capacity",
            "Usage counts shared memory can hold (apikey.max_usage_entries).",
        ),
        ("argon2_running", "Argon2id verifications running now."),
        (
            "argon2_max_concurrency",
            "Argon2id verifications allowed at once.",
        ),
    ];
    let mut out = String::new();
    let shared = status["shared_memory"].as_bool().unwrap_or(false);
    let _ = writeln!(
        out,
        "# HELP apikey_shared_memory Whether the server runs apikey with shared memory (shared_preload_libraries).\n\
         # TYPE apikey_shared_memory gauge\napikey_shared_memory {}",
        u8::from(shared)
    );
    for (kind, items) in [("counter", &COUNTERS[..]), ("gauge", &GAUGES[..])] {
        for (column, help) in items {
            let Some(value) = status[column].as_i64() else {
                continue;
            };
            let name = if kind == "counter" {
                format!("apikey_{column}_total")
            } else {
                format!("apikey_{column}")
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
    if let Some(at) = status["last_flush"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        let _ = writeln!(
            out,
            "# HELP apikey_last_flush_timestamp_seconds When the background worker last flushed.\n\
             # TYPE apikey_last_flush_timestamp_seconds gauge\napikey_last_flush_timestamp_seconds {}",
            at.timestamp()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_servers_status() {
        let text = render_server_status(&serde_json::json!({
            "shared_memory": true, "proof_hits": 7, "keys_in_use": 3, "argon2_running": 0,
            "last_flush": "2026-12-01T10:00:00+00:00", "note": null
        }));
        assert!(text.contains("\napikey_shared_memory 1\n"), "{text}");
        assert!(
            text.contains("# TYPE apikey_proof_hits_total counter\napikey_proof_hits_total 7\n"),
            "{text}"
        );
        assert!(text.contains("\napikey_keys_in_use 3\n"), "{text}");
        assert!(text.contains("\napikey_argon2_running 0\n"), "{text}");
        assert!(
            text.contains("apikey_last_flush_timestamp_seconds 1796119200\n"),
            "{text}"
        );
        let off = render_server_status(
            &serde_json::json!({ "shared_memory": false, "proof_hits": null }),
        );
        assert_eq!(
            off.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            ["apikey_shared_memory 0"]
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
        let text = m.render(PoolUse {
            max_size: 16,
            size: 2,
            available: 1,
            waiting: 0,
        });
        assert!(text.contains("apikey_shim_requests_total{route=\"/v1/verify\",status=\"200\"} 1"));
        assert!(text.contains("apikey_shim_verify_outcomes_total{reason=\"ok\"} 1"));
        assert!(text.contains(
            "apikey_shim_request_duration_seconds_bucket{route=\"/v1/verify\",le=\"0.0025\"} 1"
        ));
        assert!(text.contains(
            "apikey_shim_request_duration_seconds_bucket{route=\"/v1/verify\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("apikey_shim_pool_size 2"));
        assert!(text.contains("apikey_shim_webhook_attempts_total{outcome=\"retrying\"} 2\n"));
        assert!(text.contains("apikey_shim_webhook_attempts_total{outcome=\"delivered\"} 1\n"));
        assert!(text.contains("apikey_shim_webhook_attempts_total{outcome=\"failed\"} 0\n"));
        assert!(text.contains("apikey_shim_webhook_attempts_total{outcome=\"error\"} 0\n"));
        assert!(
            text.contains("apikey_shim_secret_scanning_tokens_total{label=\"true_positive\"} 0\n")
        );
        m.leak_reported(LeakLabel::FalsePositive);
        let text = m.render(PoolUse {
            max_size: 1,
            size: 0,
            available: 0,
            waiting: 0,
        });
        assert!(
            text.contains("apikey_shim_secret_scanning_tokens_total{label=\"false_positive\"} 1\n")
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
