//! Command-line flags, named and defaulted like etcd's. Every flag can also be
//! set through the environment as `ETCD_<FLAG>` (etcd's convention) or
//! `CAIRN_<FLAG>`; a flag on the command line wins, then `CAIRN_`, then `ETCD_`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a consistent key-value store speaking etcd's v3 API",
    disable_help_subcommand = true
)]
pub struct Config {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,

    /// Path to the data directory [default: ${name}.cairn].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Comma-separated URLs to listen on for client traffic (gRPC and HTTP).
    #[arg(long, default_value = "http://localhost:2379")]
    pub listen_client_urls: String,

    /// Comma-separated client URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2379")]
    pub advertise_client_urls: String,

    /// This member's peer URLs; with the cluster token they determine the member ID.
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,

    /// Initial cluster token; determines the cluster ID.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,

    /// Comma-separated URLs to listen on for peer (Raft) traffic.
    #[arg(long, default_value = "http://localhost:2380")]
    pub listen_peer_urls: String,

    /// Initial cluster configuration for bootstrapping: `name=peerURL,...`.
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,

    /// `new` to form a new cluster, `existing` to join one (after `member add`).
    #[arg(long, default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to time out.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,

    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_count: u64,

    /// Interval of progress notifications to idle watchers that asked for them (e.g. 10m).
    #[arg(long, alias = "experimental-watch-progress-notify-interval", default_value = "10m", value_parser = parse_duration)]
    pub watch_progress_notify_interval: Duration,

    /// Number of entries kept behind a snapshot for slow followers to catch up from.
    #[arg(long, alias = "experimental-snapshot-catchup-entries", default_value_t = 5000)]
    pub snapshot_catchup_entries: u64,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1_572_864)]
    pub max_request_bytes: u32,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    pub max_txn_ops: u32,

    /// Revisions deleted per batch by compaction.
    #[arg(long, alias = "experimental-compaction-batch-limit", default_value_t = 1000)]
    pub compaction_batch_limit: u32,

    /// Pause between compaction batches (e.g. 10ms).
    #[arg(long, alias = "experimental-compaction-sleep-interval", default_value = "10ms", value_parser = parse_duration)]
    pub compaction_sleep_interval: Duration,

    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, default_value = "info", value_parser = ["debug", "info", "warn", "error", "panic", "fatal"])]
    pub log_level: String,

    /// Logger implementation; only etcd's `zap` (structured) exists here.
    #[arg(long, default_value = "zap", value_parser = ["zap"])]
    pub logger: String,

    /// Where logs go: default (stderr), stderr or stdout.
    #[arg(long, default_value = "default", value_parser = ["default", "stderr", "stdout"])]
    pub log_outputs: String,

    /// Log format: text or json.
    #[arg(long, default_value = "json", value_parser = ["json", "console"])]
    pub log_format: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "ns"));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

impl Config {
    /// Parses flags from `args` (the first item is the program name), filling
    /// unset flags from `env`.
    pub fn parse_from_env<I, E>(args: I, env: E) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = OsString>,
        E: Fn(&str) -> Option<String>,
    {
        let mut args: Vec<OsString> = args.into_iter().map(go_style_flag).collect();
        let given: Vec<String> = args
            .iter()
            .filter_map(|a| a.to_str())
            .filter_map(|a| a.strip_prefix("--"))
            .map(|a| a.split('=').next().unwrap_or(a).to_string())
            .collect();
        let cmd = Config::command();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let names: Vec<&str> = std::iter::once(long).chain(arg.get_all_aliases().unwrap_or_default()).collect();
            if names.iter().any(|n| given.iter().any(|g| g == n)) {
                continue;
            }
            let var = long.to_ascii_uppercase().replace('-', "_");
            if let Some(v) = env(&format!("CAIRN_{var}")).or_else(|| env(&format!("ETCD_{var}"))) {
                args.push(format!("--{long}={v}").into());
            }
        }
        Config::try_parse_from(args)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)))
    }

    pub fn listen_client_urls(&self) -> Result<Vec<ListenUrl>, String> {
        split_urls(&self.listen_client_urls).map(|u| ListenUrl::parse(&u)).collect()
    }

    pub fn advertise_client_urls(&self) -> Vec<String> {
        split_urls(&self.advertise_client_urls).collect()
    }

    pub fn peer_urls(&self) -> Vec<String> {
        split_urls(&self.initial_advertise_peer_urls).collect()
    }

    pub fn listen_peer_urls(&self) -> Result<Vec<ListenUrl>, String> {
        split_urls(&self.listen_peer_urls).map(|u| ListenUrl::parse(&u)).collect()
    }

    /// `--initial-cluster` as (name, peer URLs) in the order given; a name
    /// listed several times collects all its URLs, as in etcd.
    pub fn initial_cluster(&self) -> Result<Vec<(String, Vec<String>)>, String> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for item in split_urls(&self.initial_cluster) {
            let (name, url) = item
                .split_once('=')
                .ok_or_else(|| format!("--initial-cluster entry {item:?}: want name=peerURL"))?;
            ListenUrl::parse(url).map_err(|e| format!("--initial-cluster: {e}"))?;
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => out.push((name.to_string(), vec![url.to_string()])),
            }
        }
        if out.is_empty() {
            return Err("--initial-cluster is empty".into());
        }
        Ok(out)
    }

    /// etcd's validation: heartbeat below election timeout, both positive.
    pub fn check_timeouts(&self) -> Result<(), String> {
        if self.heartbeat_interval == 0 || self.election_timeout == 0 {
            return Err("--heartbeat-interval and --election-timeout must be positive".into());
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        Ok(())
    }
}

/// Go's flag package accepts `-flag`; clap wants `--flag`.
fn go_style_flag(a: OsString) -> OsString {
    match a.to_str() {
        Some(s) if s.starts_with('-') && !s.starts_with("--") && s.len() > 2 => format!("-{s}").into(),
        _ => a,
    }
}

fn split_urls(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string)
}

/// A client listen address, `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenUrl {
    pub url: String,
    pub host: String,
    pub port: u16,
}

impl ListenUrl {
    pub fn parse(url: &str) -> Result<ListenUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("listen URL {url:?}: only http:// URLs are supported (no TLS yet)"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6.split_once("]:").ok_or_else(|| format!("listen URL {url:?}: want [addr]:port"))?;
            (h.to_string(), p)
        } else {
            let (h, p) = rest.rsplit_once(':').ok_or_else(|| format!("listen URL {url:?}: missing port"))?;
            (h.to_string(), p)
        };
        let port = port.parse().map_err(|_| format!("listen URL {url:?}: bad port {port:?}"))?;
        Ok(ListenUrl { url: url.to_string(), host, port })
    }

    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        let mut addrs = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
        let all: Vec<SocketAddr> = addrs.by_ref().collect();
        all.iter()
            .find(|a| a.is_ipv4())
            .or(all.first())
            .copied()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} resolves to nothing", self.host)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, clap::Error> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::parse_from_env(
            std::iter::once("cairn").chain(args.iter().copied()).map(OsString::from),
            |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
        )
    }

    #[test]
    fn defaults_match_etcd() {
        let c = parse(&[], &[]).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir(), PathBuf::from("default.cairn"));
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.listen_client_urls().unwrap()[0].port, 2379);
        assert_eq!(c.compaction_sleep_interval, Duration::from_millis(10));
        assert_eq!(c.initial_cluster().unwrap(), vec![("default".to_string(), vec!["http://localhost:2380".to_string()])]);
        assert_eq!((c.heartbeat_interval, c.election_timeout), (100, 1000));
        assert_eq!(c.initial_cluster_state, "new");
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(600));
    }

    #[test]
    fn initial_cluster_and_timeouts() {
        let c = parse(&["--initial-cluster=a=http://127.0.0.1:1,b=http://127.0.0.1:2,a=http://127.0.0.1:3"], &[]).unwrap();
        assert_eq!(
            c.initial_cluster().unwrap(),
            vec![
                ("a".to_string(), vec!["http://127.0.0.1:1".to_string(), "http://127.0.0.1:3".to_string()]),
                ("b".to_string(), vec!["http://127.0.0.1:2".to_string()]),
            ]
        );
        assert!(parse(&["--initial-cluster=a"], &[]).unwrap().initial_cluster().is_err());
        assert!(parse(&["--initial-cluster-state=maybe"], &[]).is_err());
        assert!(parse(&["--election-timeout=300"], &[]).unwrap().check_timeouts().is_err());
        assert!(parse(&["--election-timeout=500"], &[]).unwrap().check_timeouts().is_ok());
    }

    #[test]
    fn flags_then_cairn_env_then_etcd_env() {
        let c = parse(&["--name=a"], &[("ETCD_NAME", "b"), ("ETCD_MAX_TXN_OPS", "7"), ("CAIRN_MAX_TXN_OPS", "9")]).unwrap();
        assert_eq!(c.name, "a");
        assert_eq!(c.max_txn_ops, 9);
        let c = parse(&["-name", "x", "--data-dir", "/tmp/d"], &[("ETCD_DATA_DIR", "/nope")]).unwrap();
        assert_eq!(c.name, "x");
        assert_eq!(c.data_dir(), PathBuf::from("/tmp/d"));
        let c = parse(&[], &[("ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT", "5"), ("ETCD_COMPACTION_BATCH_LIMIT", "6")]).unwrap();
        assert_eq!(c.compaction_batch_limit, 6);
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(parse(&["--max-txn-ops=lots"], &[]).is_err());
        assert!(parse(&["--no-such-flag"], &[]).is_err());
        assert!(parse(&["--log-level=loud"], &[]).is_err());
        assert!(parse(&[], &[("ETCD_MAX_REQUEST_BYTES", "-1")]).is_err());
    }

    #[test]
    fn listen_urls() {
        assert_eq!(
            ListenUrl::parse("http://127.0.0.1:2379").unwrap(),
            ListenUrl { url: "http://127.0.0.1:2379".into(), host: "127.0.0.1".into(), port: 2379 }
        );
        assert_eq!(ListenUrl::parse("http://[::1]:23").unwrap().host, "::1");
        assert!(ListenUrl::parse("https://127.0.0.1:2379").is_err());
        assert!(ListenUrl::parse("http://127.0.0.1").is_err());
        assert!(ListenUrl::parse("http://127.0.0.1:x").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10ms").unwrap(), Duration::from_millis(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
