//! `cairn-bench compare`: starts a 3-member etcd cluster and a 3-member
//! Cairn cluster on loopback with the same flags, runs the same workloads
//! against both in one run, measures memory and disk after a load, runs
//! `etcdctl check perf` against both, and writes the results as markdown,
//! JSON and an SVG chart.
//!
//! Each benchmark run is a separate `cairn-bench` process (this executable)
//! with `--json`: the client's threads, allocations and connections then
//! never mix with the orchestrator's, and every run starts from the same
//! state, as a user running the tool by hand would.

mod chart;
mod cluster;
mod markdown;
mod results;
mod sys;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use self::cluster::{die_with_parent, Cluster, Kind, Settings};
use self::results::{CheckPerf, Comparison, Figures, LoadResult, Meta, Metric, Run, RunCpu, Versions, WorkloadResult};
use self::sys::Machine;
use crate::duration::parse_duration;

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The cairn server binary [default: `cairn` next to this executable, else on PATH]
    #[arg(long)]
    pub cairn: Option<PathBuf>,
    /// The etcd server binary [default: `etcd` on PATH]
    #[arg(long)]
    pub etcd: Option<PathBuf>,
    /// The etcdctl binary, for `check perf` [default: `etcdctl` on PATH]
    #[arg(long)]
    pub etcdctl: Option<PathBuf>,
    /// Directory for compare.md, compare.json and compare.svg
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Keys to load (distinct random 256-byte values) before measuring RSS and data-dir size [default: 1000000, 10000 with --quick]
    #[arg(long)]
    pub keys: Option<u64>,
    /// Stop loading a cluster after this long and report what it holds (Go syntax)
    #[arg(long, value_parser = parse_duration, default_value = "150s")]
    pub load_limit: Duration,
    /// Tiny totals for a smoke run; skips `check perf` unless --check-perf
    #[arg(long)]
    pub quick: bool,
    /// Run `etcdctl check perf` even with --quick
    #[arg(long, conflicts_with = "skip_check_perf")]
    pub check_perf: bool,
    /// Do not run `etcdctl check perf`
    #[arg(long)]
    pub skip_check_perf: bool,
}

/// Value size of the load phase (the issue's 256 B).
const LOAD_VAL_SIZE: usize = 256;
/// Key prefix of the load phase.
const LOAD_PREFIX: &str = "load/";
/// The cluster loaded second must reach the first one's key count, so it
/// gets this many times `--load-limit` (a bound against a stuck run, not a
/// budget).
const SECOND_LOAD_SLACK: u32 = 3;
/// Every `etcdctl check perf` runs for 60 s; beyond this it is stuck.
const CHECK_PERF_TIMEOUT: Duration = Duration::from_secs(240);
/// Bound on one benchmark run (the load has its own, from --load-limit).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// One workload of the comparison.
struct Workload {
    id: &'static str,
    title: &'static str,
    /// Chart label; `\n` starts a second line.
    short: &'static str,
    metric: Metric,
    args: Vec<String>,
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// The workloads, with totals sized so a default run takes 10–15 minutes on
/// a 2-core machine (or a few seconds each with `quick`).
fn workloads(quick: bool) -> Vec<Workload> {
    let t = |full: u64, small: u64| if quick { small } else { full };
    let put = "put --key-size 8 --val-size 256 --key-space-size 100000";
    vec![
        Workload {
            id: "put-1",
            title: "put, 1 client",
            short: "put\n1 client",
            metric: Metric::Requests,
            args: args(&format!("{put} --clients 1 --conns 1 --total {}", t(3_000, 100))),
        },
        Workload {
            id: "put-100",
            title: "put, 100 clients / 10 conns",
            short: "put\n100 clients",
            metric: Metric::Requests,
            args: args(&format!("{put} --clients 100 --conns 10 --total {}", t(50_000, 1_000))),
        },
        Workload {
            id: "put-1000",
            title: "put, 1,000 clients / 100 conns",
            short: "put\n1,000 clients",
            metric: Metric::Requests,
            args: args(&format!("{put} --clients 1000 --conns 100 --total {}", t(100_000, 2_000))),
        },
        Workload {
            id: "range-l-1",
            title: "range linearizable, 1 client",
            short: "range l\n1 client",
            metric: Metric::Requests,
            args: args(&format!("range {RANGE_KEY} --consistency l --clients 1 --conns 1 --total {}", t(5_000, 200))),
        },
        Workload {
            id: "range-l-1000",
            title: "range linearizable, 1,000 clients / 100 conns",
            short: "range l\n1,000 clients",
            metric: Metric::Requests,
            args: args(&format!(
                "range {RANGE_KEY} --consistency l --clients 1000 --conns 100 --total {}",
                t(100_000, 2_000)
            )),
        },
        Workload {
            id: "range-s-1000",
            title: "range serializable, 1,000 clients / 100 conns",
            short: "range s\n1,000 clients",
            metric: Metric::Requests,
            args: args(&format!(
                "range {RANGE_KEY} --consistency s --clients 1000 --conns 100 --total {}",
                t(100_000, 2_000)
            )),
        },
        Workload {
            id: "watch",
            title: "watch, 100 watchers × 2,000 puts (delivery)",
            short: "watch\n100 watchers",
            metric: Metric::WatchDelivery,
            args: args(&format!(
                "watch --watchers 100 --streams 10 --clients 10 --conns 10 --val-size 256 --put-rate 0 --put-total {}",
                t(2_000, 50)
            )),
        },
        Workload {
            id: "lease",
            title: "lease keep-alive, 100 clients / 10 conns",
            short: "lease\nkeep-alive",
            metric: Metric::Requests,
            args: args(&format!("lease-keepalive --clients 100 --conns 10 --total {}", t(50_000, 1_000))),
        },
    ]
}

/// The key the range workloads read: written by the warm-up (sequential
/// keys from 0, `--key-size 8`), with a 256-byte value.
const RANGE_KEY: &str = "00000000";

fn warmup_args(quick: bool) -> Vec<String> {
    let n = if quick { 500 } else { 10_000 };
    args(&format!(
        "put --clients 100 --conns 10 --key-size 8 --val-size 256 --sequential-keys --key-space-size {n} --total {n}"
    ))
}

/// Prints a progress line on stderr, with the time since the start.
struct Progress(Instant);

impl Progress {
    fn say(&self, msg: impl AsRef<str>) {
        eprintln!("[{:>6.1}s] {}", self.0.elapsed().as_secs_f64(), msg.as_ref());
    }
}

/// How [`run`] ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The comparison ran to the end and wrote its report.
    Finished,
    /// This signal (SIGTERM or SIGINT) stopped it.
    Stopped(i32),
}

/// Runs the comparison until it ends or SIGTERM or SIGINT arrives. A
/// signal's default action ends the process without running destructors:
/// the members would still die with it, but the clusters' temporary
/// directories would stay behind. So the signals are caught, and the
/// comparison is dropped instead: that kills and reaps every member,
/// deletes the directories, and kills the benchmark run or `etcdctl` in
/// flight (`kill_on_drop`).
pub async fn run(a: &CompareArgs, seed: Option<u64>) -> anyhow::Result<Ended> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let (signal, name) = tokio::select! {
        // Signals first: Ctrl-C reaches the members too, and the comparison
        // failing because of that must not hide the signal.
        biased;
        _ = term.recv() => (libc::SIGTERM, "SIGTERM"),
        _ = int.recv() => (libc::SIGINT, "SIGINT"),
        done = compare(a, seed) => return done.map(|()| Ended::Finished),
    };
    eprintln!("{name}: stopped; the clusters' members are killed and their directories removed");
    Ok(Ended::Stopped(signal))
}

async fn compare(a: &CompareArgs, seed: Option<u64>) -> anyhow::Result<()> {
    let started = Instant::now();
    let loadavg_start = sys::loadavg();
    let p = Progress(started);
    let cairn = match &a.cairn {
        Some(p) => p.clone(),
        None => default_cairn().context("no cairn binary next to cairn-bench or on PATH; pass --cairn")?,
    };
    let etcd = match &a.etcd {
        Some(p) => p.clone(),
        None => which("etcd").context("etcd is not on PATH (apt-get install etcd-server); pass --etcd")?,
    };
    let run_check_perf = !a.skip_check_perf && (!a.quick || a.check_perf);
    let etcdctl = match (&a.etcdctl, run_check_perf) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(
            which("etcdctl")
                .context("etcdctl is not on PATH (apt-get install etcd-client); pass --etcdctl or --skip-check-perf")?,
        ),
        (None, false) => which("etcdctl"),
    };
    let keys = a.keys.unwrap_or(if a.quick { 10_000 } else { 1_000_000 });
    if keys == 0 {
        bail!("--keys must be at least 1");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let me = std::env::current_exe().context("locating cairn-bench")?;

    let versions = Versions {
        etcd: first_line(&etcd, &["--version"]).await.unwrap_or_else(|| "unknown".into()),
        cairn: first_line(&cairn, &["--version"]).await.unwrap_or_else(|| "unknown".into()),
        etcdctl: match &etcdctl {
            Some(c) => first_line(c, &["version"]).await,
            None => None,
        },
    };
    let settings = Settings::default();
    let machine = Machine::detect();
    p.say(format!("etcd: {} ({})", etcd.display(), versions.etcd));
    p.say(format!("cairn: {} ({})", cairn.display(), versions.cairn));

    let bench = Bench { exe: me, seed };
    let mut workload_results = Vec::new();
    let mut check_perf = Vec::new();
    {
        p.say("starting a 3-member etcd cluster and a 3-member Cairn cluster");
        let mut etcd_c = Cluster::start(Kind::Etcd, &etcd, &settings).await?;
        let mut cairn_c = Cluster::start(Kind::Cairn, &cairn, &settings).await?;
        for c in [&etcd_c, &cairn_c] {
            let run = bench.run(c, &warmup_args(a.quick), Metric::Requests, RUN_TIMEOUT).await;
            match (&run.figures, &run.error) {
                (Some(f), _) => p.say(format!("{:<5} warm-up: {} ops/s", c.kind, results::fmt_rate(f.rate))),
                (None, e) => bail!("{} warm-up failed: {}\n{}", c.kind, e.as_deref().unwrap_or("?"), c.log_tails()),
            }
        }
        for (i, w) in workloads(a.quick).into_iter().enumerate() {
            let etcd_first = i % 2 == 0;
            let mut runs = [None, None];
            for kind in if etcd_first { [Kind::Etcd, Kind::Cairn] } else { [Kind::Cairn, Kind::Etcd] } {
                let c = if kind == Kind::Etcd { &mut etcd_c } else { &mut cairn_c };
                let run = bench.run(c, &w.args, w.metric, RUN_TIMEOUT).await;
                p.say(format!("{kind:<5} {}: {}", w.title, describe(&run, w.metric)));
                c.check_alive()?;
                runs[usize::from(kind == Kind::Cairn)] = Some(run);
            }
            let [e, k] = runs.map(|r| r.expect("both clusters ran"));
            workload_results.push(WorkloadResult {
                id: w.id.into(),
                title: w.title.into(),
                short: w.short.into(),
                metric: w.metric,
                command: w.args.join(" "),
                first: if etcd_first { Kind::Etcd } else { Kind::Cairn },
                etcd: e,
                cairn: k,
            });
        }
        if let (true, Some(etcdctl)) = (run_check_perf, &etcdctl) {
            for (i, load) in ["m", "l"].into_iter().enumerate() {
                let order = if i % 2 == 0 { [&etcd_c, &cairn_c] } else { [&cairn_c, &etcd_c] };
                for c in order {
                    p.say(format!("{:<5} etcdctl check perf --load={load} (about a minute)", c.kind));
                    let r = check_perf_run(etcdctl, c, load).await;
                    p.say(format!("{:<5} check perf --load={load}: {}", c.kind, verdict(&r)));
                    check_perf.push(r);
                }
            }
        }
        p.say("stopping both clusters");
    }

    let mut load = Vec::new();
    let mut target_keys = keys;
    for (i, kind) in [Kind::Etcd, Kind::Cairn].into_iter().enumerate() {
        let binary = if kind == Kind::Etcd { &etcd } else { &cairn };
        p.say(format!(
            "{kind:<5} fresh cluster: loading {} keys of {LOAD_VAL_SIZE} B",
            results::group_thousands(target_keys)
        ));
        let plan = LoadPlan {
            keys: target_keys,
            key_width: key_width(keys),
            limit: if i == 0 { a.load_limit } else { a.load_limit * SECOND_LOAD_SLACK },
            settle: if a.quick { Duration::from_secs(1) } else { Duration::from_secs(5) },
        };
        let r = load_phase(&bench, kind, binary, &settings, &plan).await;
        match &r.error {
            None => p.say(format!(
                "{kind:<5} loaded {} keys at {} puts/s; leader RSS {}, data dir {}",
                results::group_thousands(r.keys),
                results::fmt_rate(r.puts_per_sec),
                r.leader_rss().map_or("?".into(), results::fmt_bytes),
                r.leader_disk().map_or("?".into(), results::fmt_bytes),
            )),
            Some(e) => p.say(format!("{kind:<5} load failed: {e}")),
        }
        // The second cluster gets as many keys as the first one holds, and
        // the time to load them all, so their sizes compare like for like
        // even if the first hit the limit.
        if r.error.is_none() && r.keys > 0 {
            target_keys = target_keys.min(r.keys);
        }
        load.push(r);
    }

    let comparison = Comparison {
        meta: Meta {
            date_utc: utc_now(),
            machine,
            versions,
            settings,
            quick: a.quick,
            wall_seconds: started.elapsed().as_secs_f64(),
            loadavg_start,
            loadavg_end: sys::loadavg(),
        },
        workloads: workload_results,
        check_perf,
        load,
    };
    let md = markdown::render(&comparison);
    let svg = chart::render_svg(&comparison)?;
    let json = serde_json::to_string_pretty(&comparison)?;
    for (name, body) in [("compare.md", &md), ("compare.svg", &svg), ("compare.json", &json)] {
        let path = a.out.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    p.say(format!("wrote compare.md, compare.json and compare.svg in {}", a.out.display()));
    print!("{md}");
    Ok(())
}

/// Runs benchmark workloads as child processes of this executable.
struct Bench {
    exe: PathBuf,
    seed: Option<u64>,
}

impl Bench {
    async fn run(&self, c: &Cluster, workload: &[String], metric: Metric, timeout: Duration) -> Run {
        let mut cmd = Command::new(&self.exe);
        cmd.args(workload).arg("--endpoints").arg(c.endpoints().join(",")).arg("--json");
        if let Some(s) = self.seed {
            cmd.arg("--seed").arg(s.to_string());
        }
        let before = (c.cpu(), sys::finished_children_cpu());
        let out = output(cmd, timeout).await;
        let cpu = match (before, c.cpu()) {
            ((Some(members), client), Some(members_now)) => Some(RunCpu {
                members: members_now.since(members),
                client: sys::finished_children_cpu().since(client),
            }),
            _ => None,
        };
        let failed = |error: String| Run { figures: None, error: Some(error), report: None, cpu };
        match out {
            Err(e) => failed(format!("{e:#}")),
            Ok(out) if !out.status.success() => failed(format!("{}: {}", out.status, last_lines(&out.stderr, 3))),
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                match serde_json::from_str::<Value>(stdout.trim()) {
                    Ok(report) => {
                        let figures = Figures::from_report(&report, metric);
                        let error = figures.is_none().then(|| "the report lacks the expected fields".to_string());
                        Run { figures, error, report: Some(report), cpu }
                    }
                    Err(e) => failed(format!("unreadable report: {e}")),
                }
            }
        }
    }
}

/// Runs `cmd` to completion with its output captured, killing it after
/// `timeout`.
async fn output(mut cmd: Command, timeout: Duration) -> anyhow::Result<std::process::Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("starting {:?}", cmd.as_std().get_program()))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => Ok(out?),
        Err(_) => bail!("killed after {timeout:?}"),
    }
}

fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

fn describe(run: &Run, metric: Metric) -> String {
    match (&run.figures, &run.error) {
        (Some(f), _) => format!(
            "{} {}, p50 {} ms, p99 {} ms, {} errors",
            results::fmt_rate(f.rate),
            metric.rate_unit(),
            results::fmt_ms(f.p50_ms),
            results::fmt_ms(f.p99_ms),
            f.errors
        ),
        (None, e) => format!("FAILED: {}", e.as_deref().unwrap_or("?")),
    }
}

/// What the load phase puts into a cluster.
#[derive(Debug, Clone, Copy)]
struct LoadPlan {
    keys: u64,
    /// Digits of the key index (after the prefix); the same for both
    /// servers even if the second loads fewer keys, so keys are as long.
    key_width: usize,
    /// Stop loading after this long.
    limit: Duration,
    /// Wait this long after the load before measuring.
    settle: Duration,
}

/// Digits needed for key indexes below `keys`.
fn key_width(keys: u64) -> usize {
    keys.saturating_sub(1).to_string().len()
}

/// Loads `plan.keys` keys into a fresh cluster of `kind`, waits for it to
/// settle, and measures every member.
async fn load_phase(bench: &Bench, kind: Kind, binary: &Path, settings: &Settings, plan: &LoadPlan) -> LoadResult {
    let LoadPlan { keys, key_width, limit, settle } = *plan;
    let mut r = LoadResult {
        server: kind,
        requested_keys: keys,
        keys: 0,
        val_size: LOAD_VAL_SIZE,
        puts_per_sec: 0.0,
        members: Vec::new(),
        error: None,
        report: None,
    };
    let mut c = match Cluster::start(kind, binary, settings).await {
        Ok(c) => c,
        Err(e) => {
            r.error = Some(format!("{e:#}"));
            return r;
        }
    };
    let workload = args(&format!(
        "put --clients 1000 --conns 100 --sequential-keys --key-space-size {keys} --key-size {key_width} \
         --val-size {LOAD_VAL_SIZE} --random-values --prefix {LOAD_PREFIX} --total {keys} --duration {}ms",
        limit.as_millis()
    ));
    let run = bench.run(&c, &workload, Metric::Requests, limit + Duration::from_secs(120)).await;
    r.puts_per_sec = run.figures.map_or(0.0, |f| f.rate);
    r.report = run.report;
    if let Some(e) = run.error {
        r.error = Some(format!("load run failed: {e}"));
        return r;
    }
    // Background work the load started (compactions, snapshots) gets a
    // moment, as a cluster would have between bursts.
    tokio::time::sleep(settle).await;
    match c.count_prefix(LOAD_PREFIX).await {
        Ok(n) => r.keys = u64::try_from(n).unwrap_or(0),
        Err(e) => r.error = Some(format!("counting the loaded keys: {e:#}")),
    }
    match c.usage().await {
        Ok(m) => r.members = m,
        Err(e) => r.error = Some(format!("measuring: {e:#}")),
    }
    r
}

/// Runs `etcdctl check perf --load=LOAD` against `c` and reads its verdict.
async fn check_perf_run(etcdctl: &Path, c: &Cluster, load: &str) -> CheckPerf {
    let t0 = Instant::now();
    let mut cmd = Command::new(etcdctl);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", c.endpoints().join(",")))
        .arg("check")
        .arg("perf")
        .arg(format!("--load={load}"));
    let (pass, summary) = match output(cmd, CHECK_PERF_TIMEOUT).await {
        Ok(out) => {
            let (pass, mut lines) = parse_check_perf(&String::from_utf8_lossy(&out.stdout));
            if pass.is_none() {
                lines.push(format!("{}: {}", out.status, last_lines(&out.stderr, 3)));
            }
            (pass, lines)
        }
        Err(e) => (None, vec![format!("{e:#}")]),
    };
    CheckPerf { load: load.into(), server: c.kind, pass, summary, seconds: t0.elapsed().as_secs_f64() }
}

/// The verdict of `etcdctl check perf` (its final `PASS` or `FAIL` line)
/// and the lines before it: `PASS: Throughput is 7990 writes/s`, or, in
/// etcdctl 3.4, failures such as `Slowest request took too long: 0.6s`
/// with no `FAIL:` prefix. The progress bar is drawn with carriage returns
/// and the first summary line follows it without a line break, so each
/// line is taken after its last carriage return and with the bar removed.
pub fn parse_check_perf(stdout: &str) -> (Option<bool>, Vec<String>) {
    let mut lines: Vec<&str> = stdout
        .split('\n')
        .map(|l| strip_progress(l.rsplit('\r').next().unwrap_or(l)).trim())
        .filter(|l| !l.is_empty())
        .collect();
    let verdict = match lines.last() {
        Some(&"PASS") => Some(true),
        Some(&"FAIL") => Some(false),
        _ => None,
    };
    if verdict.is_some() {
        lines.pop();
    }
    (verdict, lines.into_iter().map(str::to_string).collect())
}

/// `line` without a leading `NN / 60   98.33% 00m01s` progress bar.
fn strip_progress(line: &str) -> &str {
    let t = line.trim_start();
    let number = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_digit());
    let mut words = t.split_whitespace();
    let is_bar =
        matches!((words.next(), words.next(), words.next()), (Some(a), Some("/"), Some(b)) if number(a) && number(b));
    if !is_bar {
        return line;
    }
    let Some(pct) = t.find('%') else { return "" };
    let rest = t[pct + 1..].trim_start();
    // An ETA such as `00m01s` may follow the percentage.
    let eta_len = rest.find(|c: char| !(c.is_ascii_digit() || c == 'm' || c == 's')).unwrap_or(rest.len());
    if eta_len > 0 && rest[..eta_len].ends_with('s') && rest[..eta_len].contains('m') {
        &rest[eta_len..]
    } else {
        rest
    }
}

fn verdict(cp: &CheckPerf) -> String {
    let v = match cp.pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "no verdict",
    };
    format!("{v} ({})", cp.summary.join("; "))
}

/// The first line a program prints for `args` (e.g. its version).
async fn first_line(program: &Path, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = output(cmd, Duration::from_secs(10)).await.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

/// `cairn` next to this executable (a workspace build puts both in the same
/// target directory), else on PATH.
fn default_cairn() -> Option<PathBuf> {
    let next_to_me = std::env::current_exe().ok()?.parent()?.join("cairn");
    if is_executable(&next_to_me) {
        return Some(next_to_me);
    }
    which("cairn")
}

fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The current time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since the Unix epoch as a UTC date and time (the civil
/// calendar from days since the epoch, Howard Hinnant's algorithm).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_keys_are_as_wide_as_the_largest_index() {
        assert_eq!(key_width(1), 1);
        assert_eq!(key_width(10), 1);
        assert_eq!(key_width(11), 2);
        assert_eq!(key_width(1_000_000), 6);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_735_787_045), "2025-01-02 03:04:05 UTC");
    }

    #[test]
    fn check_perf_output_is_parsed() {
        // etcdctl 3.4's output, progress bar included.
        let out = "\r 0 / 60    0.00%\r 1 / 60    1.67% 00m59s\r 59 / 60   98.33%PASS: Throughput is 137 writes/s\n\
                   PASS: Slowest request took 0.308587s\nPASS: Stddev is 0.020292s\nPASS\n";
        let (v, lines) = parse_check_perf(out);
        assert_eq!(v, Some(true));
        assert_eq!(
            lines,
            ["PASS: Throughput is 137 writes/s", "PASS: Slowest request took 0.308587s", "PASS: Stddev is 0.020292s"]
        );
        let out = "\r 60 / 60  100.00% 00m00sFAIL: Throughput too low: 5123 writes/s\n\
                   Slowest request took too long: 0.547982s\nPASS: Stddev is 0.036318s\nFAIL\n";
        let (v, lines) = parse_check_perf(out);
        assert_eq!(v, Some(false));
        assert_eq!(
            lines,
            [
                "FAIL: Throughput too low: 5123 writes/s",
                "Slowest request took too long: 0.547982s",
                "PASS: Stddev is 0.036318s"
            ]
        );
        let (v, lines) = parse_check_perf("\r 3 / 60    5.00% 00m57s\r 4 / 60    6.67% 00m56s");
        assert_eq!((v, lines), (None, vec![]), "killed mid-run");
        assert_eq!(strip_progress("Slowest request took too long: 0.5s"), "Slowest request took too long: 0.5s");
    }

    #[test]
    fn workloads_cover_the_issue_and_parse() {
        use clap::Parser;
        let ws = workloads(false);
        let ids: Vec<&str> = ws.iter().map(|w| w.id).collect();
        assert_eq!(
            ids,
            ["put-1", "put-100", "put-1000", "range-l-1", "range-l-1000", "range-s-1000", "watch", "lease"]
        );
        for w in ws.iter().chain(&workloads(true)) {
            let argv = std::iter::once("cairn-bench".to_string()).chain(w.args.iter().cloned());
            crate::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{}: {e}", w.id));
        }
        crate::Cli::try_parse_from(std::iter::once("cairn-bench".to_string()).chain(warmup_args(false))).unwrap();
        // The range workloads read a key the warm-up wrote.
        assert!(warmup_args(true).join(" ").contains("--sequential-keys"));
    }
}
