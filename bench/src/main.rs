//! `cairn-bench`: a load generator for the etcd v3 gRPC API, modelled on
//! etcd's `tools/benchmark`, so Cairn and etcd can be measured with the same
//! tool and the same flags.
//!
//! It talks to the server through the raw tonic stubs rather than a client
//! library: `--conns N` is then exactly N HTTP/2 connections, and the
//! tool's own per-request work stays small next to the server's.
//!
//! `compare` runs the workloads against a 3-member etcd cluster and a
//! 3-member Cairn cluster that it starts itself, and reports both.

mod compare;
mod conn;
mod driver;
mod duration;
mod keys;
mod null_server;
mod report;
mod stats;
mod workload;

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::duration::{parse_duration, Warmup};
use crate::workload::Ctx;

/// The server's default `--max-request-bytes` (etcd's and Cairn's).
const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

#[derive(Debug, Parser)]
#[command(name = "cairn-bench", version, about = "A benchmark tool for etcd v3 API servers (Cairn, etcd)")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Flags every subcommand takes, before or after its name (as etcd's
/// `benchmark` persistent flags).
#[derive(Debug, clap::Args)]
struct Common {
    /// gRPC endpoints, comma-separated (http://host:port or host:port)
    #[arg(long, global = true, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Total number of gRPC (HTTP/2) connections
    #[arg(long, global = true, default_value_t = 1)]
    conns: usize,
    /// Total number of concurrent clients, one request in flight each
    #[arg(long, global = true, default_value_t = 1)]
    clients: usize,
    /// Print one JSON object on stdout instead of the table (and no progress bar)
    #[arg(long, global = true)]
    json: bool,
    /// Seed for random keys and values [default: random; printed in the report]
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// Run this many operations (e.g. 1000) or this long (e.g. 5s) first, not measured
    #[arg(long, global = true)]
    warmup: Option<Warmup>,
    /// Give up on a request after this long (counted as an error)
    #[arg(long, global = true, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Give up connecting after this long
    #[arg(long, global = true, value_parser = parse_duration, default_value = "5s")]
    dial_timeout: Duration,
    /// Refuse to run with requests larger than this (the server's --max-request-bytes)
    #[arg(long, global = true, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Benchmark put
    Put(workload::put::PutArgs),
    /// Benchmark range
    Range(workload::range::RangeArgs),
    /// Benchmark transactions of puts
    TxnPut(workload::txn::TxnPutArgs),
    /// Benchmark watch event delivery latency (etcd: watch-latency)
    #[command(visible_alias = "watch-latency")]
    Watch(workload::watch::WatchArgs),
    /// Benchmark lease keep-alive
    LeaseKeepalive(workload::lease::LeaseArgs),
    /// Start a 3-member etcd and a 3-member Cairn cluster, run every workload against both, report side by side
    Compare(compare::CompareArgs),
    /// Serve etcd's KV Put doing nothing: what the gRPC transport alone costs
    NullServer(null_server::NullServerArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let c = &cli.common;
    if let Cmd::Compare(a) = &cli.cmd {
        // Awaited here, on the main thread, not spawned: the servers and
        // benchmark runs it starts die with the thread that spawned them.
        return match compare::run(a, c.seed).await? {
            compare::Ended::Finished => Ok(()),
            // The status a shell reports for a process the signal killed.
            compare::Ended::Stopped(signal) => std::process::exit(128 + signal),
        };
    }
    if let Cmd::NullServer(a) = &cli.cmd {
        return null_server::run(a).await;
    }
    if c.conns == 0 || c.clients == 0 {
        bail!("--conns and --clients must be at least 1");
    }
    if c.conns > c.clients && !matches!(cli.cmd, Cmd::Watch(_)) {
        eprintln!("note: --conns {} > --clients {}: {} connections stay idle", c.conns, c.clients, c.conns - c.clients);
    }
    let endpoints = conn::normalize_endpoints(&c.endpoints)?;
    let channels = conn::connect(&endpoints, c.conns, c.dial_timeout).await?;
    let ctx = Ctx {
        endpoints,
        channels,
        clients: c.clients,
        seed: c.seed.unwrap_or_else(rand::random),
        warmup: c.warmup,
        timeout: c.timeout,
        max_request_bytes: c.max_request_bytes,
        progress: !c.json,
    };

    let report = match &cli.cmd {
        Cmd::Put(a) => workload::put::run(&ctx, a).await,
        Cmd::Range(a) => workload::range::run(&ctx, a).await,
        Cmd::TxnPut(a) => workload::txn::run(&ctx, a).await,
        Cmd::Watch(a) => workload::watch::run(&ctx, a).await,
        Cmd::LeaseKeepalive(a) => workload::lease::run(&ctx, a).await,
        Cmd::Compare(_) | Cmd::NullServer(_) => unreachable!("handled before connecting"),
    }
    .context("benchmark setup failed")?;

    if c.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_flags_go_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["b", "--clients", "5", "put", "--conns", "2", "--total", "7"]).unwrap();
        assert_eq!((a.common.clients, a.common.conns), (5, 2));
        let Cmd::Put(p) = a.cmd else { panic!("not put") };
        assert_eq!(p.load.total, Some(7));
        let a =
            Cli::try_parse_from(["b", "range", "foo", "--endpoints", "h1:1,h2:2", "--warmup", "2s", "--json"]).unwrap();
        assert_eq!(a.common.endpoints, ["h1:1", "h2:2"]);
        assert_eq!(a.common.warmup, Some(Warmup::For(Duration::from_secs(2))));
        assert!(a.common.json);
    }

    #[test]
    fn defaults_match_etcd_benchmark() {
        let a = Cli::try_parse_from(["b", "put"]).unwrap();
        assert_eq!(a.common.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!((a.common.conns, a.common.clients), (1, 1));
        let Cmd::Put(p) = a.cmd else { panic!("not put") };
        assert_eq!((p.key_size, p.val_size, p.key_space_size, p.sequential_keys), (8, 8, 1, false));
        assert_eq!(p.load.plan(Duration::from_secs(1)).total, Some(10_000));
        let a = Cli::try_parse_from(["b", "put", "--duration", "1m"]).unwrap();
        let Cmd::Put(p) = a.cmd else { panic!("not put") };
        let plan = p.load.plan(Duration::from_secs(1));
        assert_eq!((plan.total, plan.duration), (None, Some(Duration::from_secs(60))));
    }

    #[test]
    fn watch_takes_etcd_watch_latency_spellings() {
        let a = Cli::try_parse_from(["b", "watch-latency", "--put-total", "5", "--put-rate", "9"]).unwrap();
        let Cmd::Watch(w) = a.cmd else { panic!("not watch") };
        assert_eq!((w.put_total, w.put_rate, w.watchers, w.streams), (5, 9, 100, 10));
        let a = Cli::try_parse_from(["b", "watch", "--total", "6", "--rate", "0"]).unwrap();
        let Cmd::Watch(w) = a.cmd else { panic!("not watch") };
        assert_eq!((w.put_total, w.put_rate), (6, 0));
        assert!(Cli::try_parse_from(["b", "watch", "--key-space-size", "3"]).is_err(), "needs --prefix");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
