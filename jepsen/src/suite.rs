//! Many runs: `cairn-jepsen suite` (the fixed set CI runs on every change)
//! and `cairn-jepsen soak` (random combinations for hours).
//!
//! Both build each run's arguments as its command line would, so a run
//! from a suite or a soak is reproduced by the `cairn-jepsen run …` line
//! they print for it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, ValueEnum};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cli::{parse_duration, RunArgs};
use crate::nemesis::FaultKind;
use crate::run::{self, RunSummary};
use crate::workload::WorkloadKind;

/// One run of the suite and what it must reach besides being valid.
#[derive(Debug, Clone)]
pub struct SuiteEntry {
    pub name: &'static str,
    pub args: Vec<String>,
    pub min_ops: usize,
    pub min_faults: usize,
}

/// What CI runs: every workload with a checker, under the faults that
/// matter to it, each history long enough for ≥ 10,000 operations and
/// ≥ 10 faults at this machine's throughput. The fault plan depends only on
/// the seed: over 5,000 seeds, 45 s at a 2.5 s interval planned as few as 8
/// pauses and partitions (1 seed in 100 fewer than 10); over 1,000,000
/// seeds, 60 s at 3 s planned as few as 8 faults for the watch run (1 seed
/// in 13,000 fewer than 10), at 2.5 s 10. At the intervals below no entry
/// plans fewer than 12 over those 1,000,000 seeds, which
/// `every_suite_entry_plans_its_minimum_faults` checks over 200,000.
/// (Injected faults can be fewer than planned: the lease run that had 8 at
/// 2.5 s had 11 at 1.5 s.)
pub fn ci_entries() -> Vec<SuiteEntry> {
    let entry = |name, args: &[&str], min_ops, min_faults| SuiteEntry {
        name,
        args: args.iter().map(|a| a.to_string()).collect(),
        min_ops,
        min_faults,
    };
    vec![
        entry(
            "watch: kv + watchers, every fault but kill-all",
            &[
                "--workload",
                "watch",
                "--nemesis",
                "kill,pause,partition,member,transfer,compact",
                "--time-limit",
                "60s",
                "--nemesis-interval",
                "2s",
            ],
            10_000,
            10,
        ),
        entry(
            "append: kill, pause, partition",
            &[
                "--workload",
                "append",
                "--nemesis",
                "kill,pause,partition",
                "--time-limit",
                "45s",
                "--nemesis-interval",
                "1.5s",
            ],
            10_000,
            10,
        ),
        entry(
            "lease: pause, partition",
            &[
                "--workload",
                "lease",
                "--nemesis",
                "pause,partition",
                "--time-limit",
                "45s",
                "--nemesis-interval",
                "1.5s",
            ],
            10_000,
            10,
        ),
        entry(
            "register: kill-all, kill, transfer",
            &[
                "--workload",
                "register",
                "--nemesis",
                "kill-all,kill,transfer",
                "--time-limit",
                "45s",
                "--nemesis-interval",
                "1.5s",
            ],
            10_000,
            10,
        ),
    ]
}

/// Options common to `suite` and `soak`.
#[derive(Debug, Clone, Args)]
pub struct ManyArgs {
    /// Where the runs' report directories go; default `jepsen/reports`.
    #[arg(long)]
    pub report_root: Option<PathBuf>,
    /// The cairn binary; default: next to cairn-jepsen, else on PATH.
    #[arg(long)]
    pub cairn: Option<PathBuf>,
    /// Seed of the runs' seeds; random if absent, always printed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the report directories of valid runs too (failing runs'
    /// directories are always kept).
    #[arg(long)]
    pub keep_all: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    #[command(flatten)]
    pub many: ManyArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub many: ManyArgs,
    /// How long to keep starting runs, in hours (e.g. `1`, `0.25`).
    #[arg(long)]
    pub hours: f64,
    /// How long each run's clients run.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub run_time: Duration,
    /// Workloads to draw from, comma-separated; default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub workloads: Vec<WorkloadKind>,
}

/// Parses run arguments the way `cairn-jepsen run` does.
#[derive(Debug, Parser)]
struct RunLine {
    #[command(flatten)]
    run: RunArgs,
}

/// The outcome of one run of a suite or soak.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub command: String,
    pub passed: bool,
    /// Why a run counts as failed although it completed (too few
    /// operations or faults), or the error that stopped it.
    pub problem: Option<String>,
    pub summary: Option<RunSummary>,
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn report_root(many: &ManyArgs) -> PathBuf {
    many.report_root
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reports"))
}

/// Runs one `cairn-jepsen run` with `args` (plus seed, report dir and
/// binary) and judges it.
async fn run_one(
    name: &str,
    args: &[String],
    seed: u64,
    report_dir: &Path,
    many: &ManyArgs,
    min_ops: usize,
    min_faults: usize,
) -> Outcome {
    let mut line: Vec<String> = vec!["run".into()];
    line.extend(args.iter().cloned());
    line.extend(["--seed".into(), seed.to_string()]);
    line.extend(["--report-dir".into(), report_dir.display().to_string()]);
    if let Some(cairn) = &many.cairn {
        line.extend(["--cairn".into(), cairn.display().to_string()]);
    }
    let command = format!("cairn-jepsen {}", line.join(" "));
    let parsed = match RunLine::try_parse_from(&line) {
        Ok(parsed) => parsed.run,
        Err(e) => {
            return Outcome {
                name: name.to_string(),
                command,
                passed: false,
                problem: Some(format!("bad arguments: {e}")),
                summary: None,
            }
        }
    };
    match run::run(&parsed).await {
        Ok(summary) => {
            let mut problems = Vec::new();
            if !summary.valid {
                problems.push("the run is INVALID (see report.txt)".to_string());
            }
            if summary.operations < min_ops {
                problems.push(format!(
                    "{} operations, fewer than {min_ops}",
                    summary.operations
                ));
            }
            if summary.faults < min_faults {
                problems.push(format!("{} faults, fewer than {min_faults}", summary.faults));
            }
            let passed = problems.is_empty();
            if passed && !many.keep_all {
                let _ = std::fs::remove_dir_all(report_dir);
            }
            Outcome {
                name: name.to_string(),
                command,
                passed,
                problem: (!passed).then(|| problems.join("; ")),
                summary: Some(summary),
            }
        }
        Err(e) => Outcome {
            name: name.to_string(),
            command,
            passed: false,
            problem: Some(format!("the run failed: {e:#}")),
            summary: None,
        },
    }
}

fn print_outcome(o: &Outcome, elapsed: Duration) {
    let status = if o.passed { "PASS" } else { "FAIL" };
    println!("{status} [{:>6.1}s] {}", elapsed.as_secs_f64(), o.name);
    if let Some(s) = &o.summary {
        println!("    {}", s.line);
    }
    if let Some(p) = &o.problem {
        println!("    {p}");
        println!("    reproduce: {}", o.command);
    }
}

/// Prints the totals line; returns whether everything passed.
fn print_totals(what: &str, outcomes: &[Outcome], elapsed: Duration) -> bool {
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let failed = outcomes.len() - passed;
    println!(
        "{what}: {passed} passed, {failed} failed ({:.1} s)",
        elapsed.as_secs_f64()
    );
    for o in outcomes.iter().filter(|o| !o.passed) {
        let report = o
            .summary
            .as_ref()
            .map(|s| s.report_dir.display().to_string())
            .unwrap_or_default();
        println!("    failed: {} {report}", o.name);
    }
    failed == 0
}

/// Runs [`ci_entries`] one after another; returns whether all passed.
pub async fn suite(args: &SuiteArgs) -> anyhow::Result<bool> {
    let seed = args.many.seed.unwrap_or_else(clock_seed);
    let root = report_root(&args.many);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    println!("cairn-jepsen suite: seed {seed}, reports under {}", root.display());
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for (i, entry) in ci_entries().into_iter().enumerate() {
        let run_seed: u64 = rng.random_range(0..1_000_000_000);
        let dir = root.join(format!("suite-{seed}-{i}"));
        let t = Instant::now();
        let outcome = run_one(
            entry.name,
            &entry.args,
            run_seed,
            &dir,
            &args.many,
            entry.min_ops,
            entry.min_faults,
        )
        .await;
        print_outcome(&outcome, t.elapsed());
        outcomes.push(outcome);
    }
    Ok(print_totals("suite", &outcomes, started.elapsed()))
}

/// A random combination for the soak: workload, 3 or 5 members, and a
/// non-empty set of fault classes (kill-all in about a third of them).
pub fn soak_args(
    rng: &mut StdRng,
    workloads: &[WorkloadKind],
    run_time: Duration,
) -> (String, Vec<String>) {
    let workloads = if workloads.is_empty() {
        WorkloadKind::value_variants()
    } else {
        workloads
    };
    let workload = workloads[rng.random_range(0..workloads.len())];
    let nodes = if rng.random_bool(0.3) { 5 } else { 3 };
    let mut kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|&k| k != FaultKind::KillAll && rng.random_bool(0.5))
        .collect();
    if kinds.is_empty() || rng.random_bool(0.3) {
        kinds.push(FaultKind::KillAll);
    }
    let nemesis = kinds
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(",");
    let name = format!("{} on {nodes} members, {nemesis}", workload.name());
    let args = vec![
        "--workload".to_string(),
        workload.name().to_string(),
        "--nodes".to_string(),
        nodes.to_string(),
        "--nemesis".to_string(),
        nemesis,
        "--time-limit".to_string(),
        format!("{}ms", run_time.as_millis()),
    ];
    (name, args)
}

/// Starts random runs until `--hours` have passed; keeps every failing
/// run's report. Returns whether all passed.
pub async fn soak(args: &SoakArgs) -> anyhow::Result<bool> {
    if !(args.hours > 0.0 && args.hours.is_finite()) {
        anyhow::bail!("--hours must be a positive number, not {}", args.hours);
    }
    let seed = args.many.seed.unwrap_or_else(clock_seed);
    let root = report_root(&args.many);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let until = Instant::now() + Duration::from_secs_f64(args.hours * 3600.0);
    println!(
        "cairn-jepsen soak: seed {seed}, {} h, reports of failing runs under {}",
        args.hours,
        root.display()
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut outcomes = Vec::new();
    let mut i = 0;
    while Instant::now() < until {
        let (name, run_args) = soak_args(&mut rng, &args.workloads, args.run_time);
        let run_seed: u64 = rng.random_range(0..1_000_000_000);
        let dir = root.join(format!("soak-{seed}-{i}"));
        let t = Instant::now();
        let outcome = run_one(&name, &run_args, run_seed, &dir, &args.many, 0, 0).await;
        print_outcome(&outcome, t.elapsed());
        outcomes.push(outcome);
        i += 1;
    }
    Ok(print_totals("soak", &outcomes, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_entry_parses_as_a_run() {
        for entry in ci_entries() {
            let mut line = vec!["run".to_string()];
            line.extend(entry.args.clone());
            if let Err(e) = RunLine::try_parse_from(&line) {
                panic!("{}: {e}", entry.name);
            }
        }
    }

    /// Seeds per suite entry in `every_suite_entry_plans_its_minimum_faults`:
    /// enough to find the watch run's 1 seed in 13,000 that planned fewer
    /// than 10 at a 3 s interval (5,000 did not), in under 2 s.
    const PLAN_SEEDS: u64 = 200_000;
    /// First of those seeds; fixed so a failure is reproducible.
    const PLAN_BASE_SEED: u64 = 0;

    /// The schedule depends only on the seed and the entry's arguments, and
    /// a run records at most one fault per planned one (a compact retried
    /// through a second member is the exception, and only adds), so a seed
    /// planning fewer than `min_faults` fails the suite whatever the
    /// cluster does. Checks every entry over [`PLAN_SEEDS`] seeds with the
    /// options `run` plans with.
    #[test]
    fn every_suite_entry_plans_its_minimum_faults() {
        println!("base seed {PLAN_BASE_SEED}, {PLAN_SEEDS} seeds per entry");
        for entry in ci_entries() {
            let mut line = vec!["run".to_string()];
            line.extend(entry.args.clone());
            let args = RunLine::try_parse_from(&line).unwrap().run;
            let options = run::plan_options(&args, &run::fault_kinds(&args), args.nodes);
            let (fewest, seed) = (PLAN_BASE_SEED..PLAN_BASE_SEED + PLAN_SEEDS)
                .map(|seed| (crate::nemesis::plan(seed, &options).len(), seed))
                .min()
                .unwrap();
            println!(
                "{}: at least {fewest} faults planned (seed {seed})",
                entry.name
            );
            assert!(
                fewest >= entry.min_faults,
                "{}: seed {seed} plans {fewest} faults, fewer than {}",
                entry.name,
                entry.min_faults
            );
        }
    }

    #[test]
    fn soak_combinations_parse_and_vary() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut names = std::collections::HashSet::new();
        for _ in 0..50 {
            let (name, args) = soak_args(&mut rng, &[], Duration::from_secs(60));
            let mut line = vec!["run".to_string()];
            line.extend(args);
            let parsed = RunLine::try_parse_from(&line).unwrap().run;
            assert!(!parsed.fault_kinds().unwrap().is_empty(), "{name}");
            names.insert(name);
        }
        assert!(names.len() > 20, "{names:?}");
    }
}
