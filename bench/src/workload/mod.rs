//! The workloads (one module per subcommand) and what they share: the run
//! context, the load flags, and the warmup-then-measure sequence.

pub mod lease;
pub mod put;
pub mod range;
pub mod txn;
pub mod watch;

use std::io::IsTerminal;
use std::time::Duration;

use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::lease_client::LeaseClient;
use cairn_api::etcdserverpb::watch_client::WatchClient;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{Map, Value};
use tonic::transport::Channel;

use crate::conn::{ConnError, MAX_RESPONSE_BYTES};
use crate::driver::{run_phase, Phase, Plan, Worker};
use crate::duration::{parse_duration, Warmup};
use crate::keys::KeyError;
use crate::report::{Latency, Report};
use crate::stats::OpError;

/// Why a workload could not run (as opposed to operations that failed,
/// which are counted in the report).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("{what} would be {size} bytes encoded, over the {max}-byte request limit (--max-request-bytes, the server's default)")]
    TooLarge { what: &'static str, size: usize, max: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Rpc { what: String, source: OpError },
}

/// `--total`, `--duration` and `--rate`, shared by the request/response
/// workloads. (`watch` has its own, named after etcd's `watch-latency`.)
#[derive(Debug, Clone, clap::Args)]
pub struct Load {
    /// Total number of requests [default: 10000, or unlimited with --duration]
    #[arg(long)]
    pub total: Option<u64>,
    /// Run for this long (Go syntax: 30s, 1m30s); with --total, whichever ends first
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Maximum requests per second across all clients (0 = unlimited)
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

impl Load {
    pub const DEFAULT_TOTAL: u64 = 10_000;

    pub fn plan(&self, timeout: Duration) -> Plan {
        let total = self.total.or(if self.duration.is_none() { Some(Self::DEFAULT_TOTAL) } else { None });
        Plan { total, duration: self.duration, rate: self.rate, timeout }
    }

    /// The load settings as report parameters.
    pub fn params(&self, params: &mut Map<String, Value>) {
        params.insert("rate".into(), self.rate.into());
        params.insert("duration_s".into(), self.duration.map(|d| d.as_secs_f64()).into());
    }
}

/// Everything a workload needs from the command line and the connections.
#[derive(Debug)]
pub struct Ctx {
    pub endpoints: Vec<String>,
    /// One per `--conns`: each is its own HTTP/2 connection.
    pub channels: Vec<Channel>,
    pub clients: usize,
    pub seed: u64,
    pub warmup: Option<Warmup>,
    /// Per-request client timeout.
    pub timeout: Duration,
    pub max_request_bytes: usize,
    /// Whether to draw progress bars (stderr is a terminal and no `--json`).
    pub progress: bool,
}

impl Ctx {
    /// The connection client `i` uses (round-robin over `--conns`).
    pub fn channel(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }

    pub fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i)).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn lease(&self, i: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(i)).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn watch(&self, i: usize) -> WatchClient<Channel> {
        WatchClient::new(self.channel(i)).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The random source of client `i`: derived from `--seed`, independent
    /// per client, so a run's keys are reproducible per client.
    pub fn rng(&self, i: usize) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The random source for values and other run-wide choices.
    pub fn run_rng(&self) -> StdRng {
        StdRng::seed_from_u64(self.seed)
    }

    /// Refuses requests the server would reject for size anyway.
    pub fn check_size(&self, what: &'static str, size: usize) -> Result<(), SetupError> {
        if size > self.max_request_bytes {
            return Err(SetupError::TooLarge { what, size, max: self.max_request_bytes });
        }
        Ok(())
    }

    /// A progress bar on stderr over `len` operations (a counter if the
    /// phase is bounded by time only); hidden unless `self.progress`.
    pub fn progress_bar(&self, label: &str, len: Option<u64>) -> ProgressBar {
        if !self.progress || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let (bar, template) = match len {
            Some(n) => (ProgressBar::new(n), "{prefix:>8} [{bar:40}] {pos}/{len} {per_sec:>12} eta {eta}"),
            None => (ProgressBar::new_spinner(), "{prefix:>8} {spinner} {pos} ops {per_sec:>12} {elapsed}"),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template(template).expect("valid progress template").progress_chars("=> "));
        bar.set_prefix(label.to_string());
        bar
    }

    /// The plan for the warmup phase, if any.
    fn warmup_plan(&self, rate: u64) -> Option<Plan> {
        let (total, duration) = match self.warmup? {
            Warmup::Ops(0) => return None,
            Warmup::Ops(n) => (Some(n), None),
            Warmup::For(d) if d.is_zero() => return None,
            Warmup::For(d) => (None, Some(d)),
        };
        Some(Plan { total, duration, rate, timeout: self.timeout })
    }
}

/// Runs the warmup (if asked for) and then the measured phase on the same
/// workers. Returns the workers, the measured phase and the number of warmup
/// operations.
pub async fn warm_and_measure<W: Worker>(
    ctx: &Ctx,
    workload: &str,
    workers: Vec<W>,
    plan: Plan,
) -> (Vec<W>, Phase, u64) {
    let mut workers = workers;
    let mut warmup_ops = 0;
    if let Some(wp) = ctx.warmup_plan(plan.rate) {
        let bar = ctx.progress_bar("warmup", wp.total);
        let (w, phase) = run_phase(workers, wp, &bar).await;
        bar.finish_and_clear();
        workers = w;
        warmup_ops = phase.stats.ok() + phase.stats.errors.total();
    }
    let bar = ctx.progress_bar(workload, plan.total);
    let (workers, phase) = run_phase(workers, plan, &bar).await;
    bar.finish_and_clear();
    (workers, phase, warmup_ops)
}

/// The report for a measured phase.
pub fn report(ctx: &Ctx, workload: &str, phase: &Phase, warmup_ops: u64, params: Map<String, Value>) -> Report {
    let ok = phase.stats.ok();
    let errors = phase.stats.errors.total();
    let seconds = phase.elapsed.as_secs_f64();
    Report {
        workload: workload.to_string(),
        endpoints: ctx.endpoints.clone(),
        clients: ctx.clients as u64,
        conns: ctx.channels.len() as u64,
        seed: ctx.seed,
        total: ok + errors,
        ok,
        errors,
        error_counts: phase.stats.errors.summary(),
        seconds,
        ops_per_sec: if seconds > 0.0 { ok as f64 / seconds } else { 0.0 },
        latency_ms: Latency::from_histogram(&phase.stats.latency),
        warmup_ops,
        params,
        delivery: None,
    }
}
