//! The load generator's report: etcd `benchmark`-style text (summary, response time
//! histogram, latency distribution) or a one-line JSON summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// What one run measured.
#[derive(Debug)]
pub struct Report {
    /// Workload name (`put`, `range`).
    pub workload: String,
    /// Concurrent client tasks.
    pub clients: usize,
    /// Connections (client instances).
    pub conns: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies of successful requests, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Failed requests by error message.
    pub errors: BTreeMap<String, u64>,
}

impl Report {
    /// An empty report.
    pub fn new(workload: &str, clients: usize, conns: usize) -> Report {
        Report {
            workload: workload.to_string(),
            clients,
            conns,
            elapsed: Duration::ZERO,
            latency_us: new_histogram(),
            errors: BTreeMap::new(),
        }
    }

    fn ok(&self) -> u64 {
        self.latency_us.len()
    }

    fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    fn requests_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok() as f64 / secs
        } else {
            0.0
        }
    }

    fn secs(&self, us: u64) -> f64 {
        us as f64 / 1e6
    }

    /// etcd `benchmark`'s text report, plus p50/p90/p99/p99.9 and the error distribution.
    pub fn text(&self) -> String {
        let h = &self.latency_us;
        let mut s = String::new();
        let _ = writeln!(s, "\nSummary:");
        let _ = writeln!(s, "  Total:\t{:.4} secs.", self.elapsed.as_secs_f64());
        if !h.is_empty() {
            let _ = writeln!(s, "  Slowest:\t{:.4} secs.", self.secs(h.max()));
            let _ = writeln!(s, "  Fastest:\t{:.4} secs.", self.secs(h.min()));
            let _ = writeln!(s, "  Average:\t{:.4} secs.", h.mean() / 1e6);
            let _ = writeln!(s, "  Stddev:\t{:.4} secs.", h.stdev() / 1e6);
        }
        let _ = writeln!(s, "  Requests/sec:\t{:.4}", self.requests_per_sec());
        if !h.is_empty() {
            let _ = writeln!(s, "\nResponse time histogram:");
            s.push_str(&self.histogram_text());
            let _ = writeln!(s, "\nLatency distribution:");
            for q in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
                let _ = writeln!(
                    s,
                    "  {q}% in {:.4} secs.",
                    self.secs(h.value_at_quantile(q / 100.0))
                );
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\nError distribution:");
            for (e, n) in &self.errors {
                let _ = writeln!(s, "  [{n}]\t{e}");
            }
        }
        s
    }

    /// etcd's histogram: 10 linear buckets from fastest to slowest, bars of up to 40 `∎`.
    fn histogram_text(&self) -> String {
        const BUCKETS: usize = 10;
        const BAR: u64 = 40;
        let h = &self.latency_us;
        let (min, max) = (h.min(), h.max());
        let step = ((max - min) as f64 / BUCKETS as f64).max(0.0);
        let mut marks = Vec::with_capacity(BUCKETS + 1);
        for i in 0..=BUCKETS {
            marks.push(min as f64 + step * i as f64);
        }
        let mut counts = vec![0u64; BUCKETS + 1];
        for v in h.iter_recorded() {
            let x = h.median_equivalent(v.value_iterated_to()) as f64;
            let idx = marks.iter().position(|&m| x <= m).unwrap_or(BUCKETS);
            counts[idx] += v.count_at_value();
        }
        let most = counts.iter().copied().max().unwrap_or(0).max(1);
        let mut s = String::new();
        for (m, c) in marks.iter().zip(&counts) {
            let bar = "∎".repeat((c * BAR / most) as usize);
            let _ = writeln!(s, "  {:.4} [{c}]\t|{bar}", m / 1e6);
        }
        s
    }

    /// One-line machine-readable summary.
    pub fn json(&self) -> serde_json::Value {
        let h = &self.latency_us;
        let ms = |us: u64| us as f64 / 1e3;
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(p))
            }
        };
        serde_json::json!({
            "workload": self.workload,
            "clients": self.clients,
            "conns": self.conns,
            "ok": self.ok(),
            "errors": self.failed(),
            "error_kinds": self.errors,
            "elapsed_secs": self.elapsed.as_secs_f64(),
            "requests_per_sec": self.requests_per_sec(),
            "latency_ms": {
                "avg": if h.is_empty() { 0.0 } else { h.mean() / 1e3 },
                "stddev": if h.is_empty() { 0.0 } else { h.stdev() / 1e3 },
                "min": if h.is_empty() { 0.0 } else { ms(h.min()) },
                "p50": q(0.50),
                "p90": q(0.90),
                "p99": q(0.99),
                "p99_9": q(0.999),
                "max": if h.is_empty() { 0.0 } else { ms(h.max()) },
            },
        })
    }
}

/// A histogram of microseconds from 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid static histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_have_the_etcd_sections() {
        let mut r = Report::new("put", 2, 1);
        r.elapsed = Duration::from_secs(2);
        for us in [100u64, 200, 300, 400, 1000] {
            r.latency_us.record(us).unwrap();
        }
        r.errors.insert("context deadline exceeded".into(), 1);
        let t = r.text();
        assert!(t.contains("Summary:\n  Total:\t2.0000 secs."));
        assert!(t.contains("Requests/sec:\t2.5000"));
        assert!(t.contains("Response time histogram:\n  0.0001 [1]\t|"));
        assert!(t.contains("99.9% in 0.0010 secs."));
        assert!(t.contains("[1]\tcontext deadline exceeded"));
        let j = r.json();
        assert_eq!(j["ok"], 5);
        assert_eq!(j["errors"], 1);
        assert_eq!(j["requests_per_sec"], 2.5);
    }
}
