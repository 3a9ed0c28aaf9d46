//! The result of a run: one JSON object (`--json`, field names documented in
//! `bench/README.md` and stable) or a compact human-readable table.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::stats::ErrorCount;

/// Latency percentiles in milliseconds. All zero when nothing succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency { min: 0.0, mean: 0.0, p50: 0.0, p90: 0.0, p99: 0.0, p999: 0.0, max: 0.0 };
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            // Like the percentiles, the top of the bucket holding the value,
            // so `p999 <= max` always holds.
            max: ms(h.max()),
        }
    }

    fn cells(&self) -> [f64; 7] {
        [self.min, self.mean, self.p50, self.p90, self.p99, self.p999, self.max]
    }
}

/// Watch event delivery, for the `watch` workload.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub watchers: u64,
    pub streams: u64,
    /// Events each watcher should have received (successful measured puts).
    pub expected_per_watcher: u64,
    /// Events received across all watchers.
    pub events: u64,
    /// Events that some watcher never received (sum over watchers).
    pub missing: u64,
    /// From the first measured put until the last event arrived.
    pub seconds: f64,
    pub events_per_sec: f64,
    /// Time from a put being sent to a watcher receiving its event.
    pub latency_ms: Latency,
}

/// A complete run report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    pub endpoints: Vec<String>,
    pub clients: u64,
    pub conns: u64,
    pub seed: u64,
    /// Operations completed in the measured phase, successful or not.
    pub total: u64,
    /// Operations that succeeded.
    pub ok: u64,
    /// Failed operations (plus, for `watch`, undelivered events).
    pub errors: u64,
    pub error_counts: Vec<ErrorCount>,
    /// Wall time of the measured phase.
    pub seconds: f64,
    /// Successful operations per second (as etcd's `Requests/sec`).
    pub ops_per_sec: f64,
    pub latency_ms: Latency,
    /// Operations run before measuring and left out of everything above.
    pub warmup_ops: u64,
    /// The workload's own settings (key sizes, consistency, ...).
    pub params: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let w = |s: &mut String, k: &str, v: &dyn std::fmt::Display| {
            writeln!(s, "  {k:<14}{v}").expect("writing to a String cannot fail");
        };
        writeln!(s, "Summary ({}):", self.workload).unwrap();
        w(&mut s, "Endpoints:", &self.endpoints.join(","));
        w(&mut s, "Clients:", &format!("{} over {} conns", self.clients, self.conns));
        if !self.params.is_empty() {
            let p: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect();
            w(&mut s, "Params:", &p.join(" "));
        }
        w(&mut s, "Seed:", &self.seed);
        if self.warmup_ops > 0 {
            w(&mut s, "Warmup:", &format!("{} ops (not measured)", self.warmup_ops));
        }
        w(&mut s, "Total:", &format!("{} ops ({} ok, {} errors)", self.total, self.ok, self.errors));
        w(&mut s, "Time:", &format!("{:.4} secs", self.seconds));
        w(&mut s, "Requests/sec:", &format!("{:.1}", self.ops_per_sec));
        if let Some(d) = &self.delivery {
            w(
                &mut s,
                "Watchers:",
                &format!("{} over {} streams, {} events expected each", d.watchers, d.streams, d.expected_per_watcher),
            );
            w(&mut s, "Events:", &format!("{} delivered, {} missing", d.events, d.missing));
            w(&mut s, "Events/sec:", &format!("{:.1}", d.events_per_sec));
        }

        let head = ["min", "mean", "p50", "p90", "p99", "p99.9", "max"];
        let mut rows: Vec<(&str, [f64; 7])> = vec![(self.workload.as_str(), self.latency_ms.cells())];
        if let Some(d) = &self.delivery {
            rows[0].0 = "put";
            rows.push(("delivery", d.latency_ms.cells()));
        }
        let label_w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max("latency (ms)".len());
        let cells: Vec<Vec<String>> = rows.iter().map(|r| r.1.iter().map(|v| format!("{v:.3}")).collect()).collect();
        let col_w = cells.iter().flatten().map(String::len).chain(head.iter().map(|h| h.len())).max().unwrap_or(0);
        writeln!(s).unwrap();
        write!(s, "  {:<label_w$}", "latency (ms)").unwrap();
        for h in head {
            write!(s, "  {h:>col_w$}").unwrap();
        }
        writeln!(s).unwrap();
        for (row, cells) in rows.iter().zip(&cells) {
            write!(s, "  {:<label_w$}", row.0).unwrap();
            for c in cells {
                write!(s, "  {c:>col_w$}").unwrap();
            }
            writeln!(s).unwrap();
        }

        if !self.error_counts.is_empty() {
            writeln!(s, "\n  Errors:").unwrap();
            for e in &self.error_counts {
                writeln!(s, "  {:>9} x {}: {}", e.count, e.code, e.message).unwrap();
            }
        }
        s
    }
}

/// A JSON value without the quotes around strings.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    fn sample_report() -> Report {
        let mut h = new_histogram();
        for us in 1..=1000 {
            h.record(us * 10).unwrap();
        }
        let mut params = Map::new();
        params.insert("key_size".into(), 8.into());
        params.insert("consistency".into(), "l".into());
        Report {
            workload: "put".into(),
            endpoints: vec!["http://127.0.0.1:2379".into()],
            clients: 100,
            conns: 10,
            seed: 42,
            total: 1003,
            ok: 1000,
            errors: 3,
            error_counts: vec![ErrorCount {
                code: "Unavailable".into(),
                message: "etcdserver: no leader".into(),
                count: 3,
            }],
            seconds: 2.0,
            ops_per_sec: 500.0,
            latency_ms: Latency::from_histogram(&h),
            warmup_ops: 0,
            params,
            delivery: None,
        }
    }

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let r = sample_report();
        let l = r.latency_ms;
        assert_eq!(l.min, 0.010);
        assert!((l.mean - 5.005).abs() < 0.01, "{}", l.mean);
        assert!((l.p50 - 5.0).abs() <= 0.01, "{}", l.p50);
        assert!((l.p90 - 9.0).abs() <= 0.01, "{}", l.p90);
        assert!((l.p99 - 9.9).abs() <= 0.01, "{}", l.p99);
        assert!((l.max - 10.0).abs() <= 0.01, "{}", l.max);
        let cells = l.cells();
        assert!(cells[2..].windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(Latency::from_histogram(&new_histogram()).max, 0.0);
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v: Value = serde_json::from_str(&sample_report().to_json()).unwrap();
        for k in [
            "workload",
            "endpoints",
            "clients",
            "conns",
            "seed",
            "total",
            "ok",
            "errors",
            "error_counts",
            "seconds",
            "ops_per_sec",
            "latency_ms",
            "warmup_ops",
            "params",
        ] {
            assert!(v.get(k).is_some(), "missing {k} in {v}");
        }
        assert!(v.get("delivery").is_none());
        for k in ["min", "mean", "p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_ms"][k].is_f64(), "latency_ms.{k} in {v}");
        }
        assert_eq!(v["error_counts"][0]["count"], 3);
        assert_eq!(v["params"]["key_size"], 8);
    }

    #[test]
    fn human_table_is_aligned() {
        let mut r = sample_report();
        r.delivery = Some(Delivery {
            watchers: 4,
            streams: 2,
            expected_per_watcher: 1000,
            events: 4000,
            missing: 0,
            seconds: 2.0,
            events_per_sec: 2000.0,
            latency_ms: r.latency_ms,
        });
        let text = r.render();
        assert!(text.contains("Summary (put):"), "{text}");
        assert!(text.contains("Requests/sec: 500.0"), "{text}");
        assert!(text.contains("consistency=l key_size=8"), "{text}");
        assert!(text.contains("3 x Unavailable: etcdserver: no leader"), "{text}");
        let table: Vec<&str> = text.lines().skip_while(|l| !l.contains("latency (ms)")).take(3).collect();
        assert_eq!(table.len(), 3, "{text}");
        assert!(table[1].trim_start().starts_with("put ") && table[2].trim_start().starts_with("delivery "));
        // Every row is as wide as the header, and each column ends where its header ends.
        assert!(table.iter().all(|l| l.len() == table[0].len()), "{table:#?}");
        let header_end = table[0].find("p99.9").unwrap() + "p99.9".len();
        for row in &table[1..] {
            assert!(row.as_bytes()[header_end - 1].is_ascii_digit(), "{row}");
            assert_eq!(row.as_bytes()[header_end], b' ', "{row}");
        }
    }
}
