//! `cairn-jepsen run`: one test run from start to verdict.
//!
//! 1. Start the cluster (or connect to `--endpoints`) and wait until it
//!    serves; prepare the workload; write `config.json`.
//! 2. For `--time-limit`, run `--concurrency` logical processes, each with
//!    its own client on one member, one operation at a time, while the
//!    nemesis carries out the seeded fault schedule.
//! 3. Heal everything; a write must then succeed within 10 s; every member
//!    must reach that write's revision and report the same `HashKV` there.
//! 4. Check the history (register: linearizability per key; kv: the
//!    revision-order checker) and write the report directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use etcd_client::Client;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Value};

use crate::checker::register::{self as register_checker, Verdict};
use crate::checker::{kv as kv_checker, Budget};
use crate::cli::RunArgs;
use crate::client::{self, Completion, Recorder};
use crate::cluster::{self, Cluster, ClusterOptions};
use crate::history::{self, Event, EventType, RunClock};
use crate::nemesis::{self, FaultKind, FaultRecord, Nemesis, PlanOptions, PlannedFault};
use crate::report::HistoryIndex;
use crate::workload::{PlannedOp, Workload, WorkloadKind};

/// How long a write may take to succeed once everything is healed.
const LIVENESS_DEADLINE: Duration = Duration::from_secs(10);
/// How long members get to reach the final revision.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a fresh cluster gets to elect a leader and serve.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Process ids of the harness's own final writes, apart from the workers'.
const FINAL_PROCESS_BASE: u64 = 1 << 40;

/// Everything that defines a run, as `config.json`.
#[derive(Debug, Serialize)]
struct RunConfig {
    workload: WorkloadKind,
    seed: u64,
    nodes: usize,
    time_limit_ms: u64,
    concurrency: usize,
    op_timeout_ms: u64,
    nemesis: Vec<FaultKind>,
    nemesis_interval_ms: u64,
    endpoints: Vec<String>,
    external: bool,
    cairn: Option<PathBuf>,
    heartbeat_interval_ms: u64,
    election_timeout_ms: u64,
    keys: usize,
    key_prefix: String,
    check_timeout_ms: u64,
    report_dir: PathBuf,
    schedule: Vec<PlannedFault>,
    /// Test-only bug switches on in every member (`--bugs`).
    bugs: Vec<String>,
}

/// What a run found, for the caller.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub valid: bool,
    pub operations: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    pub faults: usize,
    pub report_dir: PathBuf,
    pub line: String,
}

/// The outcome of the final liveness and convergence checks.
#[derive(Debug, Serialize)]
struct Convergence {
    ok: bool,
    final_write_revision: Option<i64>,
    final_write_after_ms: Option<u64>,
    final_write_attempts: usize,
    members: Vec<MemberHash>,
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct MemberHash {
    endpoint: String,
    revision: Option<i64>,
    hash: Option<u32>,
    compact_revision: Option<i64>,
}

fn default_report_dir(workload: WorkloadKind, seed: u64) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("reports")
        .join(format!("{}-{}-{seed}", utc_timestamp(), workload.name()))
}

/// `YYYYMMDDTHHMMSSZ` for now.
fn utc_timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The fault classes a run injects: `--nemesis`, else every class but
/// kill-all for a cluster the harness starts and none with `--endpoints`.
pub fn fault_kinds(args: &RunArgs) -> Vec<FaultKind> {
    match args.fault_kinds() {
        Some(kinds) => kinds,
        None if !args.endpoint_urls().is_empty() => Vec::new(),
        None => FaultKind::ALL
            .into_iter()
            .filter(|&k| k != FaultKind::KillAll)
            .collect(),
    }
}

/// The options a run plans its fault schedule with, against `nodes`
/// members. Public so the suite's tests check the schedules runs carry out.
pub fn plan_options(args: &RunArgs, kinds: &[FaultKind], nodes: usize) -> PlanOptions {
    let heal_margin = Duration::from_millis(args.election_timeout * 2).max(Duration::from_secs(2));
    PlanOptions {
        kinds: kinds.to_vec(),
        nodes,
        interval: args.nemesis_interval,
        start_after: (args.time_limit / 10).min(Duration::from_secs(3)),
        end_by: args.time_limit.saturating_sub(heal_margin),
        election_timeout: Duration::from_millis(args.election_timeout),
    }
}

pub async fn run(args: &RunArgs) -> anyhow::Result<RunSummary> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let endpoints = args.endpoint_urls();
    let external = !endpoints.is_empty();
    let kinds = fault_kinds(args);
    if external {
        if let Some(kind) = kinds.iter().find(|k| !k.is_instant()) {
            bail!(
                "--endpoints targets servers the harness does not own: {} needs a cluster it started (with --endpoints only transfer and compact work)",
                kind.name()
            );
        }
    }
    if external && !args.bugs.is_empty() {
        bail!("--bugs switches bugs on in members the harness starts; it cannot with --endpoints");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let report_dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| default_report_dir(args.workload, seed));
    let log_dir = report_dir.join("logs");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    eprintln!(
        "cairn-jepsen run: workload {}, seed {seed}, report {}",
        args.workload.name(),
        report_dir.display()
    );

    let (cluster, urls, binary, mut control) = if external {
        let mut control = Vec::new();
        for url in &endpoints {
            control.push(client::connect(url).await?);
        }
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        while !client::serving(&mut control).await {
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{endpoints:?} did not have a leader and serve reads within {START_DEADLINE:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (None, endpoints, None, control)
    } else {
        let binary = cluster::find_cairn(args.cairn.as_deref())?;
        let (cluster, control) = start_cluster(ClusterOptions {
            nodes: args.nodes,
            binary: binary.clone(),
            log_dir: log_dir.clone(),
            data_root: report_dir.join("data"),
            heartbeat_ms: args.heartbeat_interval,
            election_ms: args.election_timeout,
            peer_proxy: kinds.contains(&FaultKind::Partition),
            token: format!("cairn-jepsen-{seed}"),
            bugs: args.bugs.clone(),
        })
        .await?;
        let urls = cluster.client_urls();
        (
            Some(Arc::new(Mutex::new(cluster))),
            urls,
            Some(binary),
            control,
        )
    };

    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let prefix = format!("/cairn-jepsen/{seed}-{unix_ms}/");
    let workload = Arc::new(Workload::new(args.workload, prefix.clone(), args.keys));
    workload
        .setup(&mut control[0])
        .await
        .context("workload setup")?;

    let schedule_options = plan_options(args, &kinds, urls.len());
    let faults_end_by = schedule_options.end_by;
    let schedule = nemesis::plan(seed, &schedule_options);
    let config = RunConfig {
        workload: args.workload,
        seed,
        nodes: urls.len(),
        time_limit_ms: args.time_limit.as_millis() as u64,
        concurrency: args.concurrency,
        op_timeout_ms: args.op_timeout.as_millis() as u64,
        nemesis: kinds.clone(),
        nemesis_interval_ms: args.nemesis_interval.as_millis() as u64,
        endpoints: urls.clone(),
        external,
        cairn: binary,
        heartbeat_interval_ms: args.heartbeat_interval,
        election_timeout_ms: args.election_timeout,
        keys: args.keys,
        key_prefix: prefix,
        check_timeout_ms: args.check_timeout.as_millis() as u64,
        report_dir: report_dir.clone(),
        schedule: schedule.clone(),
        bugs: args.bugs.clone(),
    };
    std::fs::write(
        report_dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;

    // The run clock and the schedule's clock start together.
    let clock = RunClock::start();
    let start = tokio::time::Instant::now();
    let recorder = Arc::new(Recorder::new(clock));
    let deadline = start + args.time_limit;
    workload.start(&urls, clock, seed);

    let nemesis = if cluster.is_some() || !kinds.is_empty() {
        Some(Arc::new(Nemesis::new(
            cluster.clone(),
            control.clone(),
            clock,
            &report_dir.join("nemesis.log"),
        )?))
    } else {
        std::fs::write(
            report_dir.join("nemesis.log"),
            "no nemesis: external endpoints and --nemesis none\n",
        )?;
        None
    };
    let nemesis_task = nemesis
        .clone()
        .map(|n| tokio::spawn(n.run(schedule, start, start + faults_end_by)));

    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let url = urls[w % urls.len()].clone();
        let node = member_name(&urls, &url);
        let client = client::connect(&url).await?;
        let ctx = Worker {
            first_process: w as u64,
            stride: args.concurrency as u64,
            node,
            op_timeout: args.op_timeout,
            workload: workload.clone(),
            recorder: recorder.clone(),
            rng: StdRng::seed_from_u64(seed.wrapping_add(w as u64 + 1)),
        };
        workers.push(tokio::spawn(ctx.run(client, deadline)));
    }
    for w in workers {
        w.await.context("a worker panicked")?;
    }
    if let Some(task) = nemesis_task {
        task.await.context("the nemesis panicked")?;
    }
    if let Some(n) = &nemesis {
        n.heal_all();
    }

    let convergence = converge(&workload, &recorder, &urls, &mut control, args.op_timeout).await;
    workload
        .drain(
            &recorder,
            &mut control,
            &report_dir,
            args.op_timeout,
            Duration::from_millis(args.election_timeout),
        )
        .await
        .context("workload drain")?;
    let end_ns = clock.now_ns();
    let crashed = match &cluster {
        Some(c) => {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            let crashed: Vec<String> = c
                .exited()
                .into_iter()
                .map(|(i, status)| format!("{} exited on its own: {status}", c.members[i].name))
                .collect();
            c.kill_all();
            crashed
        }
        None => Vec::new(),
    };
    let faults: Vec<FaultRecord> = nemesis.as_ref().map(|n| n.records()).unwrap_or_default();
    let skipped = nemesis.as_ref().map_or(0, |n| n.skipped());
    drop(nemesis);

    let events = recorder.take();
    let file = std::fs::File::create(report_dir.join("history.jsonl"))?;
    history::write_jsonl(std::io::BufWriter::new(file), &events)?;

    let summary = finish(FinishInput {
        args,
        seed,
        report_dir: &report_dir,
        events: &events,
        faults: &faults,
        skipped,
        convergence,
        crashed,
        end_ns,
        data_kept: cluster.is_some(),
    })?;
    if let Some(cluster) = cluster {
        if !summary.valid {
            // The members' data is evidence of what went wrong.
            cluster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keep_data();
        }
    }
    Ok(summary)
}

/// Starts the cluster and waits until it serves. A member that exits
/// during start-up (most likely because another process took one of its
/// ports) makes it start over on new ports, up to three times.
async fn start_cluster(opts: ClusterOptions) -> anyhow::Result<(Cluster, Vec<Client>)> {
    for attempt in 1..=3 {
        let mut cluster = Cluster::launch(opts.clone()).await?;
        let mut control = Vec::new();
        for url in cluster.client_urls() {
            control.push(client::connect(&url).await?);
        }
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            if let Some((i, status)) = cluster.exited().into_iter().next() {
                eprintln!(
                    "cairn-jepsen: {} exited during start-up ({status}; see logs/{}.log); starting the cluster again (attempt {attempt} of 3)",
                    cluster.members[i].name, cluster.members[i].name
                );
                break;
            }
            if client::serving(&mut control).await {
                return Ok((cluster, control));
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the cluster did not elect a leader and serve reads within {START_DEADLINE:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    bail!("the cluster failed to start three times")
}

fn member_name(urls: &[String], url: &str) -> String {
    let i = urls.iter().position(|u| u == url).unwrap_or(0);
    format!("m{i}")
}

/// One logical process slot: runs operations back to back until the
/// deadline, taking a new process id after every unknown outcome.
struct Worker {
    first_process: u64,
    stride: u64,
    node: String,
    op_timeout: Duration,
    workload: Arc<Workload>,
    recorder: Arc<Recorder>,
    rng: StdRng,
}

impl Worker {
    async fn run(mut self, mut client: Client, deadline: tokio::time::Instant) {
        let mut process = self.first_process;
        while tokio::time::Instant::now() < deadline {
            let op = self.workload.plan(&mut self.rng, process);
            let (done, errored, _) = perform(
                &self.workload,
                &self.recorder,
                &mut client,
                &op,
                process,
                &self.node,
                self.op_timeout,
            )
            .await;
            if done == EventType::Info {
                // Jepsen's rule: a process whose operation may still take
                // effect is never reused.
                process += self.stride;
            }
            if errored {
                // Do not spin on a member that is down.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs one operation and records it; returns how it ended, whether the
/// server or the connection reported an error, and the revision of an ok
/// response.
pub(crate) async fn perform(
    workload: &Workload,
    recorder: &Recorder,
    client: &mut Client,
    op: &PlannedOp,
    process: u64,
    node: &str,
    timeout: Duration,
) -> (EventType, bool, Option<i64>) {
    recorder.invoke(process, op.f, op.key.as_deref(), &op.value, node);
    let (completion, errored) =
        match tokio::time::timeout(timeout, workload.execute(client, op)).await {
            Ok(Ok(executed)) => (
                Completion {
                    kind: executed.kind,
                    value: executed.value,
                    error: executed.error,
                    rev: executed.rev,
                },
                false,
            ),
            Ok(Err(e)) => {
                let (kind, error) = client::classify(&e, op.idempotent);
                (
                    Completion {
                        kind,
                        value: Value::Null,
                        error: Some(error),
                        rev: None,
                    },
                    true,
                )
            }
            Err(_) => (
                Completion {
                    kind: if op.idempotent {
                        EventType::Fail
                    } else {
                        EventType::Info
                    },
                    value: Value::Null,
                    error: Some(format!("timed out after {timeout:?}")),
                    rev: None,
                },
                false,
            ),
        };
    let (kind, rev) = (completion.kind, completion.rev);
    workload.observe(op, kind, &completion.value, rev);
    recorder.complete(process, op.f, op.key.as_deref(), node, completion);
    (kind, errored, rev)
}

/// After healing: a write must succeed within [`LIVENESS_DEADLINE`], then
/// every member must reach its revision and agree on the hash there.
async fn converge(
    workload: &Workload,
    recorder: &Recorder,
    urls: &[String],
    control: &mut [Client],
    op_timeout: Duration,
) -> Convergence {
    let mut result = Convergence {
        ok: false,
        final_write_revision: None,
        final_write_after_ms: None,
        final_write_attempts: 0,
        members: Vec::new(),
        problems: Vec::new(),
    };
    let healed = tokio::time::Instant::now();
    let mut attempt = 0u64;
    while healed.elapsed() < LIVENESS_DEADLINE {
        let member = attempt as usize % urls.len();
        let process = FINAL_PROCESS_BASE + attempt;
        let op = workload.final_write(process);
        let node = member_name(urls, &urls[member]);
        let timeout = op_timeout.min(LIVENESS_DEADLINE.saturating_sub(healed.elapsed()));
        attempt += 1;
        let (kind, errored, rev) = perform(
            workload,
            recorder,
            &mut control[member],
            &op,
            process,
            &node,
            timeout,
        )
        .await;
        if kind == EventType::Ok {
            result.final_write_after_ms = Some(healed.elapsed().as_millis() as u64);
            result.final_write_revision = rev;
            break;
        }
        if errored {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    result.final_write_attempts = attempt as usize;
    let Some(rev) = result.final_write_revision else {
        result.problems.push(format!(
            "no write succeeded within {LIVENESS_DEADLINE:?} after healing ({attempt} attempts)"
        ));
        return result;
    };
    for (url, c) in urls.iter().zip(control.iter_mut()) {
        result.members.push(member_hash(url, c, rev).await);
    }
    for m in &result.members {
        if m.hash.is_none() {
            result.problems.push(format!(
                "{} did not reach revision {rev} within {CATCH_UP_DEADLINE:?} (at {:?})",
                m.endpoint, m.revision
            ));
        }
    }
    let hashes: Vec<(u32, i64)> = result
        .members
        .iter()
        .filter_map(|m| Some((m.hash?, m.compact_revision?)))
        .collect();
    if hashes.windows(2).any(|w| w[0] != w[1]) {
        result.problems.push(format!(
            "members disagree on HashKV at revision {rev}: {hashes:?}"
        ));
    }
    result.ok = result.problems.is_empty();
    result
}

async fn member_hash(url: &str, client: &mut Client, rev: i64) -> MemberHash {
    let deadline = tokio::time::Instant::now() + CATCH_UP_DEADLINE;
    let mut seen = None;
    loop {
        if let Some(status) = client::status(client, Duration::from_secs(1)).await {
            seen = Some(status.revision);
            if status.revision >= rev {
                let hashed =
                    tokio::time::timeout(Duration::from_secs(5), client.hash_kv(rev)).await;
                if let Ok(Ok(h)) = hashed {
                    return MemberHash {
                        endpoint: url.to_string(),
                        revision: Some(status.revision),
                        hash: Some(h.hash()),
                        compact_revision: Some(h.compact_version()),
                    };
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return MemberHash {
                endpoint: url.to_string(),
                revision: seen,
                hash: None,
                compact_revision: None,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct FinishInput<'a> {
    args: &'a RunArgs,
    seed: u64,
    report_dir: &'a Path,
    events: &'a [Event],
    faults: &'a [FaultRecord],
    skipped: usize,
    convergence: Convergence,
    crashed: Vec<String>,
    end_ns: u64,
    /// The members' data directories are under the report directory and
    /// are kept if the run is invalid.
    data_kept: bool,
}

/// Checks the history and writes `verdict.json`, `report.txt` and
/// `latency.svg`.
fn finish(input: FinishInput<'_>) -> anyhow::Result<RunSummary> {
    let FinishInput {
        args,
        seed,
        report_dir,
        events,
        faults,
        skipped,
        convergence,
        crashed,
        end_ns,
        data_kept,
    } = input;
    let index = HistoryIndex::new(events)?;
    let mut counts = [0usize; 3];
    let mut completions = 0;
    for e in events {
        match e.kind {
            EventType::Invoke => {}
            EventType::Ok => counts[0] += 1,
            EventType::Fail => counts[1] += 1,
            EventType::Info => counts[2] += 1,
        }
        completions += usize::from(e.kind != EventType::Invoke);
    }
    let operations = events
        .iter()
        .filter(|e| e.kind == EventType::Invoke)
        .count();
    let in_flight = operations - completions;
    let [ok, failed, unknown] = counts;
    let unknown = unknown + in_flight;

    let mut text = String::new();
    let mut anomaly_text = String::new();
    let (checker_valid, checker_json, checker_line) = match args.workload {
        WorkloadKind::Register => {
            let paired = history::pair(events)?;
            let budget = Budget {
                timeout: Some(args.check_timeout),
                ..Budget::default()
            };
            let report = register_checker::check(&paired.ops, budget)?;
            let valid = matches!(report.verdict, Verdict::Linearizable { .. });
            if let Verdict::NotLinearizable(explanation) = &report.verdict {
                anomaly_text.push_str("not linearizable:\n");
                anomaly_text.push_str(&explanation.display(&paired.ops, "    ").to_string());
                let blocked = &paired.ops[explanation.blocked];
                let key = explanation.key.clone();
                let mut involved = vec![blocked.invoke_index];
                involved.extend(
                    explanation
                        .candidates
                        .iter()
                        .map(|&c| paired.ops[c].invoke_index),
                );
                involved.extend(
                    explanation
                        .prefix
                        .iter()
                        .rev()
                        .take(3)
                        .map(|&p| paired.ops[p].invoke_index),
                );
                anomaly_text.push_str(
                    "  window (operations on the key overlapping the ones above; * = involved):\n",
                );
                for line in index.window(&involved, |e| e.key == key) {
                    anomaly_text.push_str(&format!("    {line}\n"));
                }
            }
            let line = format!(
                "register checker: {} ({} operations on {} keys, {} unknown writes unobserved, {} steps, {:.1} ms)",
                report.verdict.name(),
                report.operations,
                report.keys,
                report.pruned,
                report.steps,
                report.elapsed.as_secs_f64() * 1e3
            );
            let json = json!({
                "checker": "register-wgl",
                "verdict": report.verdict.name(),
                "unknown_reason": match &report.verdict { Verdict::Unknown(e) => Some(e.to_string()), _ => None },
                "operations": report.operations,
                "keys": report.keys,
                "pruned": report.pruned,
                "steps": report.steps,
                "elapsed_ms": report.elapsed.as_millis() as u64,
            });
            (valid, json, line)
        }
        WorkloadKind::Kv | WorkloadKind::Watch => {
            let report = kv_checker::check(events)?;
            for a in &report.anomalies {
                anomaly_text.push_str(&format!("{}: {}\n", a.kind, a.message));
                let keys = a.keys.clone();
                let lines = index.window(&a.ops, |e| {
                    serde_json::from_value::<crate::ops::Request>(e.value.clone()).is_ok_and(|r| {
                        r.keys()
                            .iter()
                            .any(|k| keys.iter().any(|a| a == k || a.starts_with(k)))
                    })
                });
                for line in lines {
                    anomaly_text.push_str(&format!("    {line}\n"));
                }
            }
            if report.total_anomalies() > report.anomalies.len() {
                anomaly_text.push_str(&format!(
                    "… and {} more anomalies (counts in verdict.json)\n",
                    report.total_anomalies() - report.anomalies.len()
                ));
            }
            let counts: serde_json::Map<String, Value> = report
                .counts
                .iter()
                .map(|(k, v)| (k.name().to_string(), json!(v)))
                .collect();
            let line = format!(
                "kv checker: {} ({} writes acknowledged, {} unknown writes resolved, {} reads checked, {:.1} ms)",
                if report.valid() {
                    "valid".to_string()
                } else {
                    format!("{} anomalies", report.total_anomalies())
                },
                report.writes,
                report.resolved,
                report.reads_checked,
                report.elapsed.as_secs_f64() * 1e3
            );
            let json = json!({
                "checker": "kv-revision-order",
                "valid": report.valid(),
                "anomalies": counts,
                "writes": report.writes,
                "resolved": report.resolved,
                "reads_checked": report.reads_checked,
                "elapsed_ms": report.elapsed.as_millis() as u64,
            });
            (report.valid(), json, line)
        }
        WorkloadKind::Lease => {
            use crate::checker::lease::{self as lease_checker, FaultWindow, LeaseCheckOptions};
            let observed =
                lease_checker::read_observer_file(&report_dir.join(lease_checker::OBSERVER_LOG))?;
            let options = LeaseCheckOptions {
                election_timeout: Duration::from_millis(args.election_timeout),
                faults: faults
                    .iter()
                    .map(|f| FaultWindow {
                        start_ns: f.start_ns,
                        end_ns: f.end_ns,
                    })
                    .collect(),
            };
            let report = lease_checker::check(events, &observed, &options)?;
            anomaly_text.push_str(&report.describe(&index));
            (report.valid(), report.to_json(), report.summary_line())
        }
        WorkloadKind::Append => {
            let report = crate::checker::append::check(events)?;
            anomaly_text.push_str(&report.describe(&index));
            (report.valid(), report.to_json(), report.summary_line())
        }
    };
    // A watch run's history is a kv history: the kv checker (above) and the
    // watch checker must both pass.
    let (checker_valid, checker_json, checker_line) = if args.workload == WorkloadKind::Watch {
        let (valid, json, line) = crate::workload::watch::check_report(
            report_dir,
            events,
            faults,
            convergence.ok,
            &index,
            &mut anomaly_text,
        )?;
        (
            checker_valid && valid,
            json!({"kv": checker_json, "watch": json}),
            format!("{checker_line}\n{line}"),
        )
    } else {
        (checker_valid, checker_json, checker_line)
    };
    let valid = checker_valid && convergence.ok && crashed.is_empty();

    let mut by_kind: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for f in faults {
        *by_kind.entry(f.kind.name()).or_default() += 1;
    }
    let verdict = json!({
        "valid": valid,
        "workload": args.workload.name(),
        "seed": seed,
        "operations": {"total": operations, "ok": ok, "fail": failed, "info": unknown},
        "faults": {"injected": faults.len(), "skipped": skipped, "by_kind": by_kind, "records": faults},
        "checker": checker_json,
        "convergence": convergence,
        "crashed_members": crashed,
    });
    std::fs::write(
        report_dir.join("verdict.json"),
        serde_json::to_string_pretty(&verdict)?,
    )?;

    let faults_text = by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    text.push_str(&format!(
        "cairn-jepsen run: workload {}, seed {seed}, {} s, concurrency {}\n",
        args.workload.name(),
        args.time_limit.as_secs_f64(),
        args.concurrency
    ));
    text.push_str(&format!(
        "operations: {operations} (ok {ok}, fail {failed}, info {unknown})\n"
    ));
    let faults_text = if faults_text.is_empty() {
        String::new()
    } else {
        format!(" ({faults_text})")
    };
    text.push_str(&format!(
        "faults: {} injected{faults_text}, {skipped} skipped for lack of an eligible member\n",
        faults.len()
    ));
    text.push_str(&checker_line);
    text.push('\n');
    if convergence.ok {
        text.push_str(&format!(
            "convergence: ok: a write succeeded {} ms after healing (revision {}), and all {} members report the same HashKV there\n",
            convergence.final_write_after_ms.unwrap_or(0),
            convergence.final_write_revision.unwrap_or(0),
            convergence.members.len()
        ));
    } else {
        text.push_str("convergence: FAILED\n");
        for p in &convergence.problems {
            text.push_str(&format!("    {p}\n"));
        }
    }
    for c in &crashed {
        text.push_str(&format!("crash: {c}\n"));
    }
    text.push_str(&format!(
        "verdict: {}\n",
        if valid { "valid" } else { "INVALID" }
    ));
    if !valid && data_kept {
        text.push_str("the members' data directories are kept in data/\n");
    }
    if !anomaly_text.is_empty() {
        text.push_str("\nanomalies (each with its window of operations; * = involved):\n");
        text.push_str(&anomaly_text);
    }
    std::fs::write(report_dir.join("report.txt"), &text)?;

    let title = format!(
        "cairn-jepsen {} seed {seed}: {operations} ops, {} faults — {}",
        args.workload.name(),
        faults.len(),
        if valid { "valid" } else { "INVALID" }
    );
    crate::chart::latency_svg(
        &report_dir.join("latency.svg"),
        &title,
        events,
        faults,
        end_ns,
    )?;

    let line = format!(
        "{} seed={seed} ops={operations} ok={ok} fail={failed} info={unknown} faults={} verdict={} report={}",
        args.workload.name(),
        faults.len(),
        if valid { "valid" } else { "INVALID" },
        report_dir.display()
    );
    Ok(RunSummary {
        valid,
        operations,
        ok,
        failed,
        unknown,
        faults: faults.len(),
        report_dir: report_dir.to_path_buf(),
        line,
    })
}
