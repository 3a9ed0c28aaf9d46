//! What a comparison measured, and the targets evaluated on it.
//! Everything here is plain data, so the rendering and the target
//! evaluation are tested without servers.

use serde::Serialize;
use serde_json::Value;

use super::cluster::{Kind, MemberUsage, Settings};
use super::sys::{CpuTime, Machine};

/// Which figures of a benchmark report a workload is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Requests per second and request latency.
    Requests,
    /// Watch events delivered per second (over all watchers) and the
    /// put-sent → event-received latency.
    WatchDelivery,
}

impl Metric {
    /// The unit of the throughput column.
    pub fn rate_unit(self) -> &'static str {
        match self {
            Metric::Requests => "ops/s",
            Metric::WatchDelivery => "events/s",
        }
    }
}

/// The figures the comparison shows for one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Successful requests (delivered events for watch).
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
}

impl Figures {
    /// Reads the figures `metric` names from a `cairn-bench --json` report.
    pub fn from_report(report: &Value, metric: Metric) -> Option<Figures> {
        let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
        let (source, rate, ok, seconds) = match metric {
            Metric::Requests => {
                (report, num(report, "ops_per_sec")?, report.get("ok")?.as_u64()?, num(report, "seconds")?)
            }
            Metric::WatchDelivery => {
                let d = report.get("delivery")?;
                (d, num(d, "events_per_sec")?, d.get("events")?.as_u64()?, num(d, "seconds")?)
            }
        };
        let lat = source.get("latency_ms")?;
        Some(Figures {
            rate,
            p50_ms: num(lat, "p50")?,
            p99_ms: num(lat, "p99")?,
            p999_ms: num(lat, "p999")?,
            ok,
            errors: report.get("errors")?.as_u64()?,
            seconds,
        })
    }
}

/// One benchmark run of one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// `None` if the run failed; `error` says why.
    pub figures: Option<Figures>,
    pub error: Option<String>,
    /// The tool's whole JSON report.
    pub report: Option<Value>,
    /// CPU time used over the whole run, the client's start-up included
    /// (which the report's counts leave out); `None` if a member was gone.
    pub cpu: Option<RunCpu>,
}

/// CPU time a run cost: the cluster's members together, and the
/// `cairn-bench` process that drove it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunCpu {
    pub members: CpuTime,
    pub client: CpuTime,
}

impl Run {
    /// Microseconds of CPU per counted operation (per delivered event for
    /// watch): (members, client).
    pub fn cpu_us_per_op(&self) -> Option<(f64, f64)> {
        let (cpu, f) = (self.cpu?, self.figures?);
        if f.ok == 0 {
            return None;
        }
        let per_op = |t: CpuTime| t.total_s() * 1e6 / f.ok as f64;
        Some((per_op(cpu.members), per_op(cpu.client)))
    }
}

/// A workload, run once against each cluster.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    pub id: String,
    pub title: String,
    /// The label on the chart.
    pub short: String,
    pub metric: Metric,
    /// The workload's command line (without endpoints).
    pub command: String,
    /// Which cluster ran it first.
    pub first: Kind,
    pub etcd: Run,
    pub cairn: Run,
}

impl WorkloadResult {
    pub fn both(&self) -> Option<(Figures, Figures)> {
        Some((self.etcd.figures?, self.cairn.figures?))
    }
}

/// One `etcdctl check perf` run.
#[derive(Debug, Clone, Serialize)]
pub struct CheckPerf {
    pub load: String,
    pub server: Kind,
    /// `Some(true)` for PASS, `Some(false)` for FAIL, `None` if it did not
    /// come to a verdict (timeout, failed to start).
    pub pass: Option<bool>,
    /// Its PASS/FAIL lines, or what went wrong.
    pub summary: Vec<String>,
    pub seconds: f64,
}

/// The load phase on one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub server: Kind,
    pub requested_keys: u64,
    /// Keys present after the load (counted on the cluster).
    pub keys: u64,
    pub val_size: usize,
    pub puts_per_sec: f64,
    pub members: Vec<MemberUsage>,
    pub error: Option<String>,
    pub report: Option<Value>,
}

impl LoadResult {
    pub fn leader(&self) -> Option<&MemberUsage> {
        self.members.iter().find(|m| m.leader)
    }
    pub fn leader_rss(&self) -> Option<u64> {
        self.leader()?.rss_bytes
    }
    pub fn max_rss(&self) -> Option<u64> {
        self.members.iter().filter_map(|m| m.rss_bytes).max()
    }
    /// Disk used by the leader's data dir (allocated blocks, as `du`).
    pub fn leader_disk(&self) -> Option<u64> {
        Some(self.leader()?.data_dir.allocated_bytes)
    }
    pub fn max_disk(&self) -> Option<u64> {
        self.members.iter().map(|m| m.data_dir.allocated_bytes).max()
    }
    pub fn leader_apparent(&self) -> Option<u64> {
        Some(self.leader()?.data_dir.apparent_bytes)
    }
}

/// Versions of the programs compared.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub etcd: String,
    pub cairn: String,
    pub etcdctl: Option<String>,
}

/// Everything about the run other than its measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub date_utc: String,
    pub machine: Machine,
    pub versions: Versions,
    pub settings: Settings,
    pub quick: bool,
    pub wall_seconds: f64,
    /// Load averages (1, 5, 15 min) when the run started and ended.
    pub loadavg_start: Option<String>,
    pub loadavg_end: Option<String>,
}

/// A whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub meta: Meta,
    pub workloads: Vec<WorkloadResult>,
    pub check_perf: Vec<CheckPerf>,
    pub load: Vec<LoadResult>,
}

impl Comparison {
    pub fn workload(&self, id: &str) -> Option<&WorkloadResult> {
        self.workloads.iter().find(|w| w.id == id)
    }

    pub fn load_of(&self, server: Kind) -> Option<&LoadResult> {
        self.load.iter().find(|l| l.server == server && l.error.is_none())
    }

    pub fn check_perf_of(&self, server: Kind, load: &str) -> Option<&CheckPerf> {
        self.check_perf.iter().find(|c| c.server == server && c.load == load)
    }
}

/// `cairn / etcd`, if both are known and etcd's is positive.
pub fn ratio(cairn: f64, etcd: f64) -> Option<f64> {
    (etcd > 0.0 && cairn.is_finite() && etcd.is_finite()).then(|| cairn / etcd)
}

/// What a target asks of the measured value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// The Cairn/etcd ratio must be at least this.
    AtLeast(f64),
    /// The Cairn/etcd ratio must be at most this.
    AtMost(f64),
    /// The check must pass.
    Pass,
}

impl Goal {
    pub fn describe(self) -> String {
        match self {
            Goal::AtLeast(x) => format!("≥ {x:.1}×"),
            Goal::AtMost(x) => format!("≤ {x:.1}×"),
            Goal::Pass => "PASS".into(),
        }
    }
}

/// Whether a target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// Not measured in this run (skipped or failed).
    Unknown,
    /// Measured on unequal loads (the clusters hold different numbers of
    /// keys), so the ratio says nothing about the target.
    Incomparable,
}

/// One of the targets, evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub etcd: String,
    pub cairn: String,
    /// The Cairn/etcd ratio, for ratio goals.
    pub ratio: Option<f64>,
    pub goal: Goal,
    pub verdict: Verdict,
}

fn judge(goal: Goal, ratio: Option<f64>) -> Verdict {
    match (goal, ratio) {
        (Goal::AtLeast(x), Some(r)) if r >= x => Verdict::Met,
        (Goal::AtMost(x), Some(r)) if r <= x => Verdict::Met,
        (_, Some(_)) => Verdict::Missed,
        (_, None) => Verdict::Unknown,
    }
}

/// The targets from the issue, evaluated on `c` (ratios Cairn/etcd from
/// the same run).
pub fn targets(c: &Comparison) -> Vec<Target> {
    let mut out = Vec::new();
    let by_rate = |out: &mut Vec<Target>, name: &str, id: &str, goal: Goal| {
        let w = c.workload(id);
        let figs = w.and_then(WorkloadResult::both);
        let unit = w.map_or("ops/s", |w| w.metric.rate_unit());
        out.push(Target {
            name: name.into(),
            etcd: figs.map_or("–".into(), |(e, _)| format!("{} {unit}", fmt_rate(e.rate))),
            cairn: figs.map_or("–".into(), |(_, k)| format!("{} {unit}", fmt_rate(k.rate))),
            ratio: figs.and_then(|(e, k)| ratio(k.rate, e.rate)),
            goal,
            verdict: judge(goal, figs.and_then(|(e, k)| ratio(k.rate, e.rate))),
        });
    };
    by_rate(&mut out, "put throughput, 100 clients", "put-100", Goal::AtLeast(2.0));
    by_rate(&mut out, "put throughput, 1,000 clients", "put-1000", Goal::AtLeast(2.0));
    by_rate(&mut out, "linearizable range throughput, 1 client", "range-l-1", Goal::AtLeast(1.5));
    by_rate(&mut out, "linearizable range throughput, 1,000 clients", "range-l-1000", Goal::AtLeast(1.5));
    by_rate(&mut out, "serializable range throughput, 1,000 clients", "range-s-1000", Goal::AtLeast(2.0));
    by_rate(&mut out, "watch delivery", "watch", Goal::AtLeast(1.0));

    let by_p99 = |out: &mut Vec<Target>, name: &str, id: &str| {
        let figs = c.workload(id).and_then(WorkloadResult::both);
        let r = figs.and_then(|(e, k)| ratio(k.p99_ms, e.p99_ms));
        out.push(Target {
            name: name.into(),
            etcd: figs.map_or("–".into(), |(e, _)| format!("{} ms", fmt_ms(e.p99_ms))),
            cairn: figs.map_or("–".into(), |(_, k)| format!("{} ms", fmt_ms(k.p99_ms))),
            ratio: r,
            goal: Goal::AtMost(1.0),
            verdict: judge(Goal::AtMost(1.0), r),
        });
    };
    by_p99(&mut out, "put p99, 1 client", "put-1");
    by_p99(&mut out, "watch delivery p99", "watch");

    let (le, lc) = (c.load_of(Kind::Etcd), c.load_of(Kind::Cairn));
    let equal_loads = le.zip(lc).is_none_or(|(e, k)| e.keys == k.keys);
    let by_bytes = |out: &mut Vec<Target>, name: &str, get: fn(&LoadResult) -> Option<u64>| {
        let e = le.and_then(get);
        let k = lc.and_then(get);
        let r = e.zip(k).and_then(|(e, k)| ratio(k as f64, e as f64));
        let verdict = match judge(Goal::AtMost(0.5), r) {
            Verdict::Met | Verdict::Missed if !equal_loads => Verdict::Incomparable,
            v => v,
        };
        out.push(Target {
            name: name.into(),
            etcd: e.map_or("–".into(), fmt_bytes),
            cairn: k.map_or("–".into(), fmt_bytes),
            ratio: r,
            goal: Goal::AtMost(0.5),
            verdict,
        });
    };
    by_bytes(&mut out, "RSS after the load, leader", LoadResult::leader_rss);
    by_bytes(&mut out, "data dir after the load, leader (du)", LoadResult::leader_disk);

    let verdict_text = |cp: Option<&CheckPerf>| match cp.map(|cp| cp.pass) {
        Some(Some(true)) => "PASS".to_string(),
        Some(Some(false)) => "FAIL".to_string(),
        Some(None) => "no verdict".to_string(),
        None => "not run".to_string(),
    };
    let cairn_l = c.check_perf_of(Kind::Cairn, "l");
    out.push(Target {
        name: "`etcdctl check perf --load=l` on Cairn".into(),
        etcd: verdict_text(c.check_perf_of(Kind::Etcd, "l")),
        cairn: verdict_text(cairn_l),
        ratio: None,
        goal: Goal::Pass,
        verdict: match cairn_l.and_then(|cp| cp.pass) {
            Some(true) => Verdict::Met,
            Some(false) => Verdict::Missed,
            None => Verdict::Unknown,
        },
    });
    out
}

/// `12,345` for rates of at least 100, else one decimal.
pub fn fmt_rate(x: f64) -> String {
    if x >= 100.0 {
        group_thousands(x.round() as u64)
    } else {
        format!("{x:.1}")
    }
}

/// An integer with `,` between thousands.
pub fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Milliseconds with three significant digits or so.
pub fn fmt_ms(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.3}")
    } else if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// Bytes in MiB (GiB from 10 GiB).
pub fn fmt_bytes(b: u64) -> String {
    let mib = b as f64 / (1024.0 * 1024.0);
    if mib >= 10.0 * 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}×"))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::compare::sys::DirSize;

    pub fn figures(rate: f64, p99: f64) -> Figures {
        Figures { rate, p50_ms: p99 / 4.0, p99_ms: p99, p999_ms: p99 * 2.0, ok: 1000, errors: 0, seconds: 1.0 }
    }

    fn run(f: Option<Figures>) -> Run {
        Run { figures: f, error: f.is_none().then(|| "exited with 1".into()), report: None, cpu: None }
    }

    pub fn workload(id: &str, metric: Metric, etcd: Option<Figures>, cairn: Option<Figures>) -> WorkloadResult {
        WorkloadResult {
            id: id.into(),
            title: format!("{id} title"),
            short: id.replacen('-', "\n", 1),
            metric,
            command: format!("{id} --total 10"),
            first: Kind::Etcd,
            etcd: run(etcd),
            cairn: run(cairn),
        }
    }

    fn load(server: Kind, rss: u64, disk: u64) -> LoadResult {
        let member = |leader: bool, rss: u64| MemberUsage {
            name: "m".into(),
            leader,
            rss_bytes: Some(rss),
            data_dir: DirSize { apparent_bytes: disk * 2, allocated_bytes: disk, files: 3 },
            status_db_size: Some(disk as i64),
        };
        LoadResult {
            server,
            requested_keys: 1000,
            keys: 1000,
            val_size: 256,
            puts_per_sec: 5000.0,
            members: vec![member(false, rss * 2), member(true, rss), member(false, rss / 2)],
            error: None,
            report: None,
        }
    }

    pub fn sample() -> Comparison {
        let w = |id: &str, e: (f64, f64), k: (f64, f64)| {
            workload(id, Metric::Requests, Some(figures(e.0, e.1)), Some(figures(k.0, k.1)))
        };
        Comparison {
            meta: Meta {
                date_utc: "2025-01-02 03:04:05 UTC".into(),
                machine: Machine { cpu: "Test CPU".into(), cores: 2, ram_bytes: Some(8 << 30), kernel: None },
                versions: Versions { etcd: "etcd Version: 3.4.23".into(), cairn: "cairn 0.1.0".into(), etcdctl: None },
                settings: Settings::default(),
                quick: false,
                wall_seconds: 600.0,
                loadavg_start: Some("0.10 0.20 0.30".into()),
                loadavg_end: None,
            },
            workloads: vec![
                w("put-1", (1000.0, 2.0), (1500.0, 1.5)),
                w("put-100", (10000.0, 20.0), (25000.0, 9.0)),
                w("put-1000", (12000.0, 200.0), (20000.0, 90.0)),
                w("range-l-1", (3000.0, 1.0), (4000.0, 0.8)),
                w("range-l-1000", (30000.0, 80.0), (60000.0, 40.0)),
                workload("range-s-1000", Metric::Requests, Some(figures(40000.0, 60.0)), None),
                workload("watch", Metric::WatchDelivery, Some(figures(200000.0, 30.0)), Some(figures(250000.0, 40.0))),
                w("lease", (20000.0, 10.0), (30000.0, 5.0)),
            ],
            check_perf: vec![
                CheckPerf {
                    load: "l".into(),
                    server: Kind::Etcd,
                    pass: Some(false),
                    summary: vec!["FAIL: Throughput too low: 5000 writes/s".into()],
                    seconds: 61.0,
                },
                CheckPerf {
                    load: "l".into(),
                    server: Kind::Cairn,
                    pass: Some(true),
                    summary: vec!["PASS: Throughput is 7900 writes/s".into()],
                    seconds: 61.0,
                },
            ],
            load: vec![load(Kind::Etcd, 400 << 20, 600 << 20), load(Kind::Cairn, 100 << 20, 400 << 20)],
        }
    }

    #[test]
    fn figures_come_from_the_report_or_its_delivery_section() {
        let r = serde_json::json!({
            "ops_per_sec": 1234.5, "ok": 1000, "errors": 2, "seconds": 0.81,
            "latency_ms": {"p50": 1.0, "p99": 5.0, "p999": 9.0},
            "delivery": {"events_per_sec": 99000.0, "events": 200000, "seconds": 2.02,
                         "latency_ms": {"p50": 3.0, "p99": 7.0, "p999": 11.0}}
        });
        let f = Figures::from_report(&r, Metric::Requests).unwrap();
        assert_eq!((f.rate, f.p99_ms, f.ok, f.errors), (1234.5, 5.0, 1000, 2));
        let d = Figures::from_report(&r, Metric::WatchDelivery).unwrap();
        assert_eq!((d.rate, d.p50_ms, d.p999_ms, d.ok, d.errors, d.seconds), (99000.0, 3.0, 11.0, 200000, 2, 2.02));
        assert!(Figures::from_report(&serde_json::json!({"ok": 1}), Metric::Requests).is_none());
    }

    #[test]
    fn targets_judge_ratios_and_check_perf() {
        let t = targets(&sample());
        let get = |name: &str| t.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name} in {t:#?}"));
        let put100 = get("put throughput, 100 clients");
        assert_eq!((put100.ratio, put100.verdict), (Some(2.5), Verdict::Met));
        assert_eq!(put100.etcd, "10,000 ops/s");
        let put1000 = get("put throughput, 1,000 clients");
        assert_eq!(put1000.verdict, Verdict::Missed, "{put1000:?}");
        assert_eq!(get("put p99, 1 client").verdict, Verdict::Met);
        assert_eq!(get("linearizable range throughput, 1 client").verdict, Verdict::Missed);
        assert_eq!(get("linearizable range throughput, 1,000 clients").verdict, Verdict::Met);
        let s = get("serializable range throughput, 1,000 clients");
        assert_eq!((s.verdict, s.cairn.as_str()), (Verdict::Unknown, "–"));
        assert_eq!(get("watch delivery").verdict, Verdict::Met);
        assert_eq!(get("watch delivery").etcd, "200,000 events/s");
        assert_eq!(get("watch delivery p99").verdict, Verdict::Missed);
        let rss = get("RSS after the load, leader");
        assert_eq!((rss.ratio, rss.verdict), (Some(0.25), Verdict::Met));
        assert_eq!(rss.etcd, "400.0 MiB");
        let disk = get("data dir after the load, leader (du)");
        assert_eq!(disk.verdict, Verdict::Missed);
        let cp = get("`etcdctl check perf --load=l` on Cairn");
        assert_eq!((cp.etcd.as_str(), cp.cairn.as_str(), cp.verdict), ("FAIL", "PASS", Verdict::Met));
        assert_eq!(t.len(), 11);
    }

    #[test]
    fn targets_without_measurements_are_unknown() {
        let mut c = sample();
        c.check_perf.clear();
        c.load[1].error = Some("timed out".into());
        let t = targets(&c);
        assert!(t.iter().filter(|t| t.name.contains("after the load")).all(|t| t.verdict == Verdict::Unknown));
        let cp = t.last().unwrap();
        assert_eq!((cp.cairn.as_str(), cp.verdict), ("not run", Verdict::Unknown));
    }

    #[test]
    fn sizes_after_unequal_loads_are_not_judged() {
        let mut c = sample();
        c.load[1].keys = 900;
        let t = targets(&c);
        let rss = t.iter().find(|t| t.name == "RSS after the load, leader").unwrap();
        assert_eq!((rss.ratio, rss.verdict), (Some(0.25), Verdict::Incomparable));
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1234567), "1,234,567");
        assert_eq!(fmt_rate(12345.6), "12,346");
        assert_eq!(fmt_rate(42.25), "42.2");
        assert_eq!(fmt_ms(0.4567), "0.457");
        assert_eq!(fmt_ms(4.567), "4.57");
        assert_eq!(fmt_ms(45.67), "45.7");
        assert_eq!(fmt_ms(456.7), "457");
        assert_eq!(fmt_bytes(3 << 20), "3.0 MiB");
        assert_eq!(fmt_bytes(20 << 30), "20.0 GiB");
        assert_eq!(fmt_ratio(Some(2.0 / 3.0)), "0.67×");
        assert_eq!(fmt_ratio(None), "–");
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
    }
}
