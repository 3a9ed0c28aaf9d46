//! The `cairn-jepsen` command line.

use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::checker::register::{self, Verdict};
use crate::checker::Budget;
use crate::history::{self, Event};
use crate::jepsen_log;
use crate::nemesis::FaultKind;
use crate::workload::WorkloadKind;

#[derive(Debug, Parser)]
#[command(
    name = "cairn-jepsen",
    version,
    about = "Cairn's Jepsen-style test harness and history checkers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check histories of read/write/cas registers for linearizability.
    ///
    /// Prints one line per file: `FILE: linearizable`, `FILE: not
    /// linearizable` followed by an indented explanation, or `FILE: unknown
    /// (REASON)` when the budget ran out. Exits 0 iff every file was decided
    /// (either way), 1 otherwise.
    CheckRegister(CheckRegisterArgs),
    /// Run a workload against a cluster under faults, record the history,
    /// check it and write a report directory.
    ///
    /// Starts `--nodes` real `cairn` processes on 127.0.0.1 (or uses
    /// `--endpoints`), runs `--concurrency` clients for `--time-limit` while
    /// the nemesis kills, pauses and partitions members on a schedule drawn
    /// from `--seed`, heals, checks that a write succeeds and that all
    /// members converge, then checks the history. Prints one summary line.
    /// Exits 0 iff the run is valid.
    Run(RunArgs),
    /// Run the fixed set of histories CI runs on every change (every
    /// workload under its faults, each ≥ 10,000 operations and ≥ 10
    /// faults) one after another; print `N passed, N failed`. Exits 0 iff
    /// all passed.
    Suite(crate::suite::SuiteArgs),
    /// Start random runs (workload, 3 or 5 members, fault classes, seed)
    /// for `--hours`; keep the report of every failing run. Exits 0 iff all
    /// passed.
    Soak(crate::suite::SoakArgs),
}

/// A nemesis fault class, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NemesisArg {
    Kill,
    KillAll,
    Pause,
    Partition,
    Member,
    Transfer,
    Compact,
    /// Every fault class, kill-all included.
    All,
    None,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// What the clients do.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Register)]
    pub workload: WorkloadKind,
    /// Cluster size (3 or 5 for fault tests).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// How long the clients run, e.g. `60s`, `2m`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub time_limit: Duration,
    /// Logical processes, each with its own client, one operation at a time.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Fault classes, comma-separated: kill, kill-all, pause, partition,
    /// member, transfer, compact, all, or none. Default: all but kill-all
    /// for a cluster the harness starts, none with --endpoints.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub nemesis: Option<Vec<NemesisArg>>,
    /// Mean time between fault starts.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub nemesis_interval: Duration,
    /// Seed of the fault schedule and the clients' choices; random if
    /// absent. Always printed and stored in config.json.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Test these existing servers (comma-separated client URLs, e.g. a
    /// real etcd) instead of starting cairn; of the faults only transfer
    /// and compact (done through the API) work there.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Where the report goes; default
    /// `jepsen/reports/<timestamp>-<workload>-<seed>`.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// The cairn binary; default: next to cairn-jepsen, else on PATH.
    #[arg(long)]
    pub cairn: Option<PathBuf>,
    /// How long one client operation may take before its outcome counts
    /// as unknown.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub op_timeout: Duration,
    /// Passed to every member, in ms.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Passed to every member, in ms; pauses last 2–6 times this.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Registers active at a time (register), or keys (kv).
    #[arg(long, default_value_t = 10)]
    pub keys: usize,
    /// Time limit for the register linearizability check.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub check_timeout: Duration,
    /// Test-only bug switches to turn on in every member, comma-separated
    /// (e.g. `lin-read-local`): passed as `CAIRN_BUGS`, which only a cairn
    /// built with `--features bug-switches` accepts. See the README's "Bug
    /// switches".
    #[arg(long, value_delimiter = ',')]
    pub bugs: Vec<String>,
}

impl RunArgs {
    /// The requested fault classes (`none` drops out), if any were given.
    pub fn fault_kinds(&self) -> Option<Vec<FaultKind>> {
        self.nemesis.as_ref().map(|args| {
            let mut kinds: Vec<FaultKind> = args
                .iter()
                .flat_map(|a| match a {
                    NemesisArg::Kill => vec![FaultKind::Kill],
                    NemesisArg::KillAll => vec![FaultKind::KillAll],
                    NemesisArg::Pause => vec![FaultKind::Pause],
                    NemesisArg::Partition => vec![FaultKind::Partition],
                    NemesisArg::Member => vec![FaultKind::Member],
                    NemesisArg::Transfer => vec![FaultKind::Transfer],
                    NemesisArg::Compact => vec![FaultKind::Compact],
                    NemesisArg::All => FaultKind::ALL.to_vec(),
                    NemesisArg::None => Vec::new(),
                })
                .collect();
            kinds.sort_by_key(|k| k.name());
            kinds.dedup();
            kinds
        })
    }

    /// `--endpoints` as URLs (`host:port` gets `http://`).
    pub fn endpoint_urls(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect()
    }
}

#[derive(Debug, Args)]
pub struct CheckRegisterArgs {
    /// History files: Jepsen logs, or JSONL histories (see --format).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Time limit per file, e.g. `30s`, `500ms`, `2m` or `1.5` (seconds); `0` for none.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Limit on search steps per file; unlike --timeout, its outcome does not
    /// depend on the machine's speed.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Limit on the memoization cache per key, in MiB; `0` for none.
    #[arg(long, default_value_t = 2048)]
    pub max_memory_mib: usize,
    /// Input format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Also print per-file statistics (operations, keys, steps, time) to stderr.
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// JSONL for files ending in `.jsonl`, Jepsen log otherwise.
    Auto,
    /// Jepsen's text log (`INFO  jepsen.util - <process> :<type> :<f> <value>`).
    JepsenLog,
    /// Cairn's JSONL history, one event per line.
    Jsonl,
}

/// Parses `30s`, `500ms`, `2m`, `1.5` (seconds) and `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_secs) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s, 500ms or 2m"))?;
    Duration::try_from_secs_f64(value * unit_secs).map_err(|e| format!("`{text}`: {e}"))
}

/// Runs `check-register`: writes the per-file verdicts to `out` and, with
/// `--verbose`, statistics to `err`. Returns whether every file was decided.
pub fn check_register(
    args: &CheckRegisterArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<bool> {
    let budget = Budget {
        timeout: (!args.timeout.is_zero()).then_some(args.timeout),
        max_steps: args.max_steps,
        max_memory_bytes: (args.max_memory_mib != 0)
            .then(|| args.max_memory_mib.saturating_mul(1 << 20)),
    };
    let mut all_decided = true;
    for file in &args.files {
        let name = file.display();
        let ops = match load(file, args.format) {
            Ok(paired) => paired,
            Err(e) => {
                writeln!(out, "{name}: error ({e})")?;
                all_decided = false;
                continue;
            }
        };
        let report = match register::check(&ops.ops, budget) {
            Ok(report) => report,
            Err(e) => {
                writeln!(out, "{name}: error ({e})")?;
                all_decided = false;
                continue;
            }
        };
        match &report.verdict {
            Verdict::Linearizable { .. } => writeln!(out, "{name}: linearizable")?,
            Verdict::NotLinearizable(explanation) => {
                writeln!(out, "{name}: not linearizable")?;
                write!(out, "{}", explanation.display(&ops.ops, "    "))?;
            }
            Verdict::Unknown(reason) => {
                writeln!(out, "{name}: unknown ({reason})")?;
                all_decided = false;
            }
        }
        if args.verbose {
            writeln!(
                err,
                "{name}: {} operations ({} failed and dropped, {} unknown and unobserved), {} keys, {} steps, {} configurations, {:.3} ms",
                report.operations,
                ops.failed,
                report.pruned,
                report.keys,
                report.steps,
                report.configurations,
                report.elapsed.as_secs_f64() * 1e3
            )?;
        }
    }
    Ok(all_decided)
}

fn load(file: &Path, format: Format) -> Result<history::Paired, String> {
    let format = match format {
        Format::Auto if file.extension().is_some_and(|e| e == "jsonl") => Format::Jsonl,
        Format::Auto => Format::JepsenLog,
        explicit => explicit,
    };
    let events: Vec<Event> = match format {
        Format::Jsonl => {
            let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
            history::read_jsonl(BufReader::new(f)).map_err(|e| e.to_string())?
        }
        Format::JepsenLog | Format::Auto => {
            let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
            jepsen_log::parse(&text).map_err(|e| e.to_string())?
        }
    };
    history::pair(&events).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
