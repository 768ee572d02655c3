//! Prometheus text metrics: requests by route and status, verify outcomes by reason, request
//! latency by route, and the connection pool's use.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.observe("/v1/verify", 200, 0.002);
        m.observe("/v1/verify", 401, 0.3);
        m.verify_outcome("ok");
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
    }
}
