//! The comparison as a markdown report: header, summary, one table per
//! workload, resources after the load, `check perf`, and the targets.

use std::fmt::Write as _;

use super::cluster::Kind;
use super::results::{
    fmt_bytes, fmt_ms, fmt_rate, fmt_ratio, group_thousands, ratio, targets, Comparison, Figures, LoadResult, Run,
    Verdict,
};

/// Column alignment in a markdown table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A markdown table with `|` in cells escaped and every row as wide as the
/// header.
pub fn table(header: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = String::new();
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    out.push_str(&line(header.iter().map(|h| esc(h)).collect()));
    out.push_str(&line(
        (0..header.len())
            .map(|i| match align.get(i).copied().unwrap_or(Align::Left) {
                Align::Left => "---".to_string(),
                Align::Right => "---:".to_string(),
            })
            .collect(),
    ));
    for row in rows {
        let mut cells: Vec<String> = row.iter().map(|c| esc(c)).collect();
        cells.resize(header.len(), String::new());
        out.push_str(&line(cells));
    }
    out
}

fn run_cells(run: &Run) -> Vec<String> {
    match (&run.figures, &run.error) {
        (Some(f), _) => vec![
            fmt_rate(f.rate),
            fmt_ms(f.p50_ms),
            fmt_ms(f.p99_ms),
            fmt_ms(f.p999_ms),
            group_thousands(f.ok),
            group_thousands(f.errors),
        ],
        (None, e) => {
            let mut v = vec![format!("failed: {}", e.as_deref().unwrap_or("no report"))];
            v.resize(6, "–".into());
            v
        }
    }
}

fn ratio_cells(e: Option<Figures>, k: Option<Figures>) -> Vec<String> {
    let r = |f: fn(&Figures) -> f64| fmt_ratio(e.zip(k).and_then(|(e, k)| ratio(f(&k), f(&e))));
    vec![r(|f| f.rate), r(|f| f.p50_ms), r(|f| f.p99_ms), r(|f| f.p999_ms), String::new(), String::new()]
}

/// The whole report.
pub fn render(c: &Comparison) -> String {
    let mut s = String::new();
    let m = &c.meta;
    writeln!(s, "# Cairn vs etcd: 3-member clusters on one machine\n").unwrap();
    if m.quick {
        writeln!(s, "**Quick smoke run (`--quick`): tiny totals, the figures mean little.**\n").unwrap();
    }
    let ram = m.machine.ram_bytes.map_or("unknown".into(), |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64));
    writeln!(s, "- Date: {}", m.date_utc).unwrap();
    write!(s, "- Machine: {}, {} cores, {ram} RAM", m.machine.cpu, m.machine.cores).unwrap();
    if let Some(k) = &m.machine.kernel {
        write!(s, ", Linux {k}").unwrap();
    }
    writeln!(s).unwrap();
    writeln!(s, "- etcd: `{}`", m.versions.etcd).unwrap();
    writeln!(s, "- Cairn: `{}`", m.versions.cairn).unwrap();
    if let Some(v) = &m.versions.etcdctl {
        writeln!(s, "- etcdctl: `{v}`").unwrap();
    }
    writeln!(
        s,
        "- Settings, identical for both: {} members on 127.0.0.1, `--heartbeat-interval={}` \
         `--election-timeout={}`, every other flag at the server's default (fsync on); \
         data dirs on the same local disk. The servers and the benchmark clients share the machine's cores.",
        m.settings.members, m.settings.heartbeat_ms, m.settings.election_ms
    )
    .unwrap();
    writeln!(
        s,
        "- Method: both clusters run side by side; each gets a warm-up put run first, then every workload runs \
         against both, the order alternating from one workload to the next. Each run is a separate \
         `cairn-bench` process over all three client URLs. Ratios are Cairn/etcd from this run: above 1 \
         means Cairn is faster (throughput) or slower (latency). Latencies are in milliseconds.",
    )
    .unwrap();
    let la = |l: &Option<String>| l.clone().unwrap_or_else(|| "unknown".into());
    writeln!(
        s,
        "- Load average (1/5/15 min) at the start: {}; at the end: {}",
        la(&m.loadavg_start),
        la(&m.loadavg_end)
    )
    .unwrap();
    writeln!(s, "- Wall time: {:.0} s\n", m.wall_seconds).unwrap();

    writeln!(s, "## Summary\n").unwrap();
    let rows: Vec<Vec<String>> = c
        .workloads
        .iter()
        .map(|w| {
            let (e, k) = (w.etcd.figures, w.cairn.figures);
            let rate = |f: Option<Figures>| f.map_or("failed".into(), |f| fmt_rate(f.rate));
            let p99 = |f: Option<Figures>| f.map_or("failed".into(), |f| fmt_ms(f.p99_ms));
            vec![
                w.title.clone(),
                w.metric.rate_unit().into(),
                rate(e),
                rate(k),
                fmt_ratio(e.zip(k).and_then(|(e, k)| ratio(k.rate, e.rate))),
                p99(e),
                p99(k),
                fmt_ratio(e.zip(k).and_then(|(e, k)| ratio(k.p99_ms, e.p99_ms))),
            ]
        })
        .collect();
    use Align::{Left as L, Right as R};
    s.push_str(&table(
        &["workload", "unit", "etcd", "Cairn", "Cairn/etcd", "etcd p99", "Cairn p99", "Cairn/etcd p99"],
        &[L, L, R, R, R, R, R, R],
        &rows,
    ));
    writeln!(s, "\n![throughput and latency, Cairn beside etcd](compare.svg)\n").unwrap();

    render_cpu(&mut s, c);

    writeln!(s, "## Workloads\n").unwrap();
    for w in &c.workloads {
        writeln!(s, "### {}\n", w.title).unwrap();
        writeln!(s, "`cairn-bench {}` (first: {})\n", w.command, w.first).unwrap();
        let unit = w.metric.rate_unit();
        let mut rows = vec![];
        let mut etcd = vec!["etcd".to_string()];
        etcd.extend(run_cells(&w.etcd));
        let mut cairn = vec!["Cairn".to_string()];
        cairn.extend(run_cells(&w.cairn));
        let mut r = vec!["Cairn/etcd".to_string()];
        r.extend(ratio_cells(w.etcd.figures, w.cairn.figures));
        rows.extend([etcd, cairn, r]);
        let ok = match w.metric {
            super::results::Metric::Requests => "ok",
            super::results::Metric::WatchDelivery => "events",
        };
        s.push_str(&table(&["", unit, "p50", "p99", "p99.9", ok, "errors"], &[L, R, R, R, R, R, R], &rows));
        for (kind, run) in [(Kind::Etcd, &w.etcd), (Kind::Cairn, &w.cairn)] {
            let errors = run.report.as_ref().and_then(|r| r.get("error_counts")).and_then(|e| e.as_array());
            for e in errors.into_iter().flatten() {
                writeln!(
                    s,
                    "\n{kind} error: {} × {}: {}",
                    e["count"],
                    e["code"].as_str().unwrap_or("?"),
                    e["message"].as_str().unwrap_or("?")
                )
                .unwrap();
            }
        }
        writeln!(s).unwrap();
    }

    render_load(&mut s, c);
    render_check_perf(&mut s, c);

    writeln!(s, "## Targets\n").unwrap();
    let rows: Vec<Vec<String>> = targets(c)
        .into_iter()
        .map(|t| {
            vec![
                t.name,
                t.etcd,
                t.cairn,
                fmt_ratio(t.ratio),
                t.goal.describe(),
                match t.verdict {
                    Verdict::Met => "met".into(),
                    Verdict::Missed => "**missed**".into(),
                    Verdict::Unknown => "not measured".into(),
                    Verdict::Incomparable => "not comparable: unequal loads".into(),
                },
            ]
        })
        .collect();
    s.push_str(&table(&["target", "etcd", "Cairn", "Cairn/etcd", "goal", ""], &[L, R, R, R, L, L], &rows));
    s
}

/// CPU per operation, and the rate it allows on this machine.
fn render_cpu(s: &mut String, c: &Comparison) {
    writeln!(s, "## CPU per operation\n").unwrap();
    let cores = c.meta.machine.cores.max(1);
    writeln!(
        s,
        "Servers: the user and system CPU time of all three members over the run; client: the `cairn-bench` \
         process that drove it; both divided by the operations the run counted (delivered events for watch). \
         Servers and client share the machine's {cores} cores, so a run can go no faster than the ceiling, \
         {cores} CPU-seconds per second divided by their sum; a rate near it is bound by CPU.\n"
    )
    .unwrap();
    let us = |x: f64| if x < 10.0 { format!("{x:.1} µs") } else { format!("{x:.0} µs") };
    let rows: Vec<Vec<String>> = c
        .workloads
        .iter()
        .map(|w| {
            let (e, k) = (w.etcd.cpu_us_per_op(), w.cairn.cpu_us_per_op());
            let cell = |v: Option<(f64, f64)>, pick: fn((f64, f64)) -> f64| v.map_or("–".into(), |v| us(pick(v)));
            let ceiling =
                |v: Option<(f64, f64)>| v.map_or("–".into(), |(m, cl)| fmt_rate(cores as f64 * 1e6 / (m + cl)));
            vec![
                w.title.clone(),
                cell(e, |v| v.0),
                cell(k, |v| v.0),
                fmt_ratio(e.zip(k).and_then(|(e, k)| ratio(k.0, e.0))),
                cell(e, |v| v.1),
                cell(k, |v| v.1),
                ceiling(e),
                ceiling(k),
            ]
        })
        .collect();
    use Align::{Left as L, Right as R};
    s.push_str(&table(
        &["workload", "etcd servers", "Cairn servers", "Cairn/etcd", "etcd client", "Cairn client", "etcd ceiling", "Cairn ceiling"],
        &[L, R, R, R, R, R, R, R],
        &rows,
    ));
    writeln!(s).unwrap();
}

fn render_load(s: &mut String, c: &Comparison) {
    writeln!(s, "## Resources after a load\n").unwrap();
    let Some(any) = c.load.first() else {
        writeln!(s, "Not measured.\n").unwrap();
        return;
    };
    writeln!(
        s,
        "Each server gets a fresh cluster, loaded by 1,000 clients over 100 connections with sequential keys \
         and a distinct random value of {} B each (which compression cannot shrink): etcd with {} keys or as \
         many as it loads within the time limit, then Cairn with as many as etcd holds. A few seconds later \
         the members' RSS (VmRSS) and data-dir sizes are taken. \
         `du` counts allocated blocks, `apparent` the files' lengths.\n",
        any.val_size,
        group_thousands(any.requested_keys)
    )
    .unwrap();
    for l in &c.load {
        if let Some(e) = &l.error {
            writeln!(s, "{} load failed: {e}\n", l.server).unwrap();
        }
    }
    let (e, k) = (c.load_of(Kind::Etcd), c.load_of(Kind::Cairn));
    type Get = fn(&LoadResult) -> Option<u64>;
    let bytes_row = |name: &str, get: Get| -> Vec<String> {
        let (ev, kv) = (e.and_then(get), k.and_then(get));
        vec![
            name.to_string(),
            ev.map_or("–".into(), fmt_bytes),
            kv.map_or("–".into(), fmt_bytes),
            fmt_ratio(ev.zip(kv).and_then(|(e, k)| ratio(k as f64, e as f64))),
        ]
    };
    let count = |l: Option<&LoadResult>| l.map_or("–".into(), |l| group_thousands(l.keys));
    let rate = |l: Option<&LoadResult>| l.map_or("–".into(), |l| fmt_rate(l.puts_per_sec));
    let rows = vec![
        vec![
            "keys loaded".into(),
            count(e),
            count(k),
            fmt_ratio(e.zip(k).and_then(|(e, k)| ratio(k.keys as f64, e.keys as f64))),
        ],
        vec![
            "load throughput (puts/s)".into(),
            rate(e),
            rate(k),
            fmt_ratio(e.zip(k).and_then(|(e, k)| ratio(k.puts_per_sec, e.puts_per_sec))),
        ],
        bytes_row("RSS, leader", LoadResult::leader_rss),
        bytes_row("RSS, largest member", LoadResult::max_rss),
        bytes_row("data dir, leader (du)", LoadResult::leader_disk),
        bytes_row("data dir, largest member (du)", LoadResult::max_disk),
        bytes_row("data dir, leader (apparent)", LoadResult::leader_apparent),
        bytes_row("dbSize in Maintenance Status, leader", |l| {
            l.leader()?.status_db_size.and_then(|b| u64::try_from(b).ok())
        }),
    ];
    use Align::{Left as L, Right as R};
    s.push_str(&table(&["", "etcd", "Cairn", "Cairn/etcd"], &[L, R, R, R], &rows));
    if let (Some(e), Some(k)) = (e, k) {
        if e.keys != k.keys {
            writeln!(s, "\nThe two clusters hold different numbers of keys; compare sizes with care.").unwrap();
        }
    }
    writeln!(s).unwrap();
}

fn render_check_perf(s: &mut String, c: &Comparison) {
    writeln!(s, "## etcdctl check perf\n").unwrap();
    if c.check_perf.is_empty() {
        writeln!(s, "Not run (`--skip-check-perf`, or `--quick` without `--check-perf`).\n").unwrap();
        return;
    }
    let mut loads: Vec<&str> = c.check_perf.iter().map(|cp| cp.load.as_str()).collect();
    loads.dedup();
    let cell = |server: Kind, load: &str| {
        let Some(cp) = c.check_perf_of(server, load) else {
            return "not run".to_string();
        };
        let verdict = match cp.pass {
            Some(true) => "PASS",
            Some(false) => "**FAIL**",
            None => "no verdict",
        };
        let detail: Vec<&str> = cp.summary.iter().map(String::as_str).collect();
        if detail.is_empty() {
            verdict.to_string()
        } else {
            format!("{verdict} — {}", detail.join("; "))
        }
    };
    let rows: Vec<Vec<String>> =
        loads.iter().map(|l| vec![format!("`--load={l}`"), cell(Kind::Etcd, l), cell(Kind::Cairn, l)]).collect();
    s.push_str(&table(&["load", "etcd", "Cairn"], &[Align::Left, Align::Left, Align::Left], &rows));
    writeln!(s).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::results::tests::sample;

    #[test]
    fn tables_escape_pipes_and_pad_rows() {
        let t = table(&["a", "b"], &[Align::Left, Align::Right], &[vec!["x|y".into()], vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n| --- | ---: |\n| x\\|y |  |\n| 1 | 2 |\n");
    }

    #[test]
    fn report_has_every_section_and_figure() {
        let md = render(&sample());
        for h in [
            "# Cairn vs etcd",
            "## Summary",
            "## CPU per operation",
            "## Workloads",
            "## Resources after a load",
            "## etcdctl check perf",
            "## Targets",
        ] {
            assert!(md.contains(h), "{h} missing:\n{md}");
        }
        assert!(md.contains("- Machine: Test CPU, 2 cores, 8.0 GiB RAM"), "{md}");
        assert!(md.contains("at the start: 0.10 0.20 0.30; at the end: unknown"), "{md}");
        // Summary rows: absolute figures and ratios.
        assert!(md.contains("| put-100 title | ops/s | 10,000 | 25,000 | 2.50× | 20.0 | 9.00 | 0.45× |"), "{md}");
        assert!(md.contains("| watch title | events/s | 200,000 | 250,000 | 1.25× |"), "{md}");
        assert!(md.contains("| range-s-1000 title | ops/s | 40,000 | failed | – |"), "{md}");
        // A workload's own table.
        assert!(md.contains("| etcd | 1,000 | 0.500 | 2.00 | 4.00 | 1,000 | 0 |"), "{md}");
        assert!(md.contains("| Cairn/etcd | 1.50× | 0.75× | 0.75× | 0.75× |  |  |"), "{md}");
        assert!(md.contains("| Cairn | failed: exited with 1 | – |"), "{md}");
        assert!(md.contains("| RSS, leader | 400.0 MiB | 100.0 MiB | 0.25× |"), "{md}");
        assert!(md.contains("| RSS, largest member | 800.0 MiB | 200.0 MiB | 0.25× |"), "{md}");
        assert!(md.contains("| `--load=l` | **FAIL** — FAIL: Throughput too low: 5000 writes/s |"), "{md}");
        assert!(
            md.contains("| put throughput, 100 clients | 10,000 ops/s | 25,000 ops/s | 2.50× | ≥ 2.0× | met |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| put throughput, 1,000 clients | 12,000 ops/s | 20,000 ops/s | 1.67× | ≥ 2.0× | **missed** |"
            ),
            "{md}"
        );
        assert!(md.contains("![throughput and latency, Cairn beside etcd](compare.svg)"));
        // Every row of a table has as many cells as its header.
        for block in md.split("\n\n") {
            let widths: Vec<usize> = block
                .lines()
                .filter(|l| l.starts_with('|'))
                .map(|l| l.replace("\\|", "").matches('|').count())
                .collect();
            assert!(widths.windows(2).all(|w| w[0] == w[1]), "{block}");
        }
    }

    #[test]
    fn cpu_per_operation_and_the_ceiling_it_allows() {
        use crate::compare::results::RunCpu;
        use crate::compare::sys::CpuTime;
        let mut c = sample();
        let cpu = |members: (f64, f64), client: (f64, f64)| {
            Some(RunCpu {
                members: CpuTime { user_s: members.0, sys_s: members.1 },
                client: CpuTime { user_s: client.0, sys_s: client.1 },
            })
        };
        let w = c.workloads.iter_mut().find(|w| w.id == "put-1000").unwrap();
        // 1,000 operations each: 180 + 50 µs and 150 + 50 µs per operation.
        w.etcd.cpu = cpu((0.14, 0.04), (0.04, 0.01));
        w.cairn.cpu = cpu((0.10, 0.05), (0.03, 0.02));
        let md = render(&c);
        assert!(
            md.contains("| put-1000 title | 180 µs | 150 µs | 0.83× | 50 µs | 50 µs | 8,696 | 10,000 |"),
            "{md}"
        );
        assert!(md.contains("| put-1 title | – | – | – | – | – | – | – |"), "{md}");
        assert!(md.contains("share the machine's 2 cores"), "{md}");
    }

    #[test]
    fn quick_runs_and_missing_phases_say_so() {
        let mut c = sample();
        c.meta.quick = true;
        c.check_perf.clear();
        c.load.clear();
        let md = render(&c);
        assert!(md.contains("Quick smoke run"));
        assert!(md.contains("## Resources after a load\n\nNot measured."));
        assert!(md.contains("Not run (`--skip-check-perf`"));
    }
}
