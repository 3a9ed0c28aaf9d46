//! Test harness: a real server (`cairn` or `etcd`) on loopback with a
//! temporary data dir, the built `cairn-bench` binary, and a few direct gRPC
//! checks through the tonic stubs.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::lease_client::LeaseClient;
use cairn_api::etcdserverpb::{LeaseLeasesRequest, RangeRequest, RangeResponse};
use serde_json::Value;

pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one `cairn-bench` run in these tests.
pub const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `cairn` server binary. Only the server crate gets
/// `CARGO_BIN_EXE_cairn`; a workspace build puts it next to this crate's
/// binaries, i.e. two levels above the test executable
/// (`target/release/deps/bench-…` → `target/release/cairn`).
pub fn cairn_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent().and_then(Path::parent) {
            candidates.push(dir.join("cairn"));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("release").join("cairn"));
    }
    candidates.into_iter().find(|p| is_executable(p)).unwrap_or_else(|| {
        panic!(
            "the cairn binary is not built next to this test ({:?}); build it in the same target dir first: \
             cargo build --release --bin cairn (cargo nextest run --release --workspace does)",
            std::env::current_exe().ok()
        )
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Finds `name` on PATH. Missing locally: a loud notice and `None`, so the
/// test skips. Missing with `CI=true`: the test fails.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| is_executable(p)));
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is required in CI but not on PATH (apt-get install etcd-server)");
        }
        eprintln!("\n!!!!!!!! SKIPPING: `{name}` not found on PATH; install it (apt-get install etcd-server) to run this test !!!!!!!!\n");
    }
    found
}

/// A single-member server process; killed and its data removed on drop.
pub struct Server {
    child: Child,
    tmp: tempfile::TempDir,
    pub port: u16,
    pub kind: &'static str,
}

impl Server {
    pub fn cairn() -> Server {
        Self::start("cairn", cairn_binary(), |data, client, peer| {
            vec![
                format!("--data-dir={data}"),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
            ]
        })
    }

    pub fn etcd(binary: PathBuf) -> Server {
        Self::start("etcd", binary, |data, client, peer| {
            vec![
                format!("--data-dir={data}"),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=default={peer}"),
            ]
        })
    }

    fn start(kind: &'static str, binary: PathBuf, args: impl Fn(&str, &str, &str) -> Vec<String>) -> Server {
        let tmp = tempfile::Builder::new().prefix(&format!("cairn-bench-{kind}-")).tempdir().unwrap();
        let port = free_port();
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", free_port());
        let data = tmp.path().join("data");
        let log = std::fs::File::create(tmp.path().join("server.log")).unwrap();
        let child = Command::new(&binary)
            .args(args(data.to_str().unwrap(), &client, &peer))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut s = Server { child, tmp, port, kind };
        s.wait_healthy();
        s
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited during start-up with {status}:\n{}", self.kind, self.logs());
            }
            if let Ok((200, body)) = http_get(self.port, "/health") {
                if body.contains("true") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} not healthy within {START_TIMEOUT:?}:\n{}", self.kind, self.logs());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("server.log")).unwrap_or_default()
    }

    /// Runs `cairn-bench --endpoints <this server> ARGS --json` and returns
    /// its report, failing the test if it does not succeed.
    pub fn bench(&self, args: &[&str]) -> Value {
        let out = self.bench_raw(&[args, &["--json"]].concat());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "cairn-bench {args:?} failed ({}):\n{stderr}", out.status);
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("cairn-bench {args:?} printed no JSON ({e}):\n{stdout}\n{stderr}"))
    }

    /// Runs `cairn-bench --endpoints <this server> ARGS` as is.
    pub fn bench_raw(&self, args: &[&str]) -> Output {
        let ep = self.endpoint();
        // Without a scheme: the tool must accept etcd's host:port spelling.
        let ep = ep.trim_start_matches("http://");
        run_bench(&[&["--endpoints", ep], args].concat())
    }

    /// A direct Range through the tonic stubs.
    pub fn range(&self, req: RangeRequest) -> RangeResponse {
        let ep = self.endpoint();
        block_on(async move {
            let mut kv = KvClient::connect(ep).await.expect("connect");
            kv.range(req).await.expect("range").into_inner()
        })
    }

    /// How many keys start with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> i64 {
        let range_end = prefix_end(prefix.as_bytes());
        self.range(RangeRequest { key: prefix.into(), range_end, count_only: true, ..Default::default() }).count
    }

    /// The values of every key starting with `prefix`, in key order.
    pub fn values_with_prefix(&self, prefix: &str) -> Vec<Vec<u8>> {
        let range_end = prefix_end(prefix.as_bytes());
        let r = self.range(RangeRequest { key: prefix.into(), range_end, ..Default::default() });
        r.kvs.into_iter().map(|kv| kv.value).collect()
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.range(RangeRequest { key: b"\0".to_vec(), count_only: true, ..Default::default() })
            .header
            .expect("header")
            .revision
    }

    /// The ids of all leases that exist.
    pub fn leases(&self) -> Vec<i64> {
        let ep = self.endpoint();
        block_on(async move {
            let mut lease = LeaseClient::connect(ep).await.expect("connect");
            lease
                .lease_leases(LeaseLeasesRequest {})
                .await
                .expect("leases")
                .into_inner()
                .leases
                .iter()
                .map(|l| l.id)
                .collect()
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.kind, self.logs());
        }
    }
}

/// Runs the built `cairn-bench` with `args`, killing it after [`BENCH_TIMEOUT`].
pub fn run_bench(args: &[&str]) -> Output {
    run_bench_env(args, &[])
}

/// [`run_bench`] with these environment variables set too.
pub fn run_bench_env(args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn-bench");
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        stdout.read_to_end(&mut b).map(|_| b)
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        stderr.read_to_end(&mut b).map(|_| b)
    });
    let deadline = Instant::now() + BENCH_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cairn-bench {args:?} did not finish within {BENCH_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_t.join().unwrap().unwrap(), stderr: err_t.join().unwrap().unwrap() }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move { tokio::time::timeout(Duration::from_secs(30), f).await.expect("gRPC call timed out") })
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A minimal HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {buf:?}")))?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// The checks every successful report must pass: `total` operations, all
/// of them ok, and sane, ordered latencies.
pub fn check_report(r: &Value, workload: &str, total: u64) {
    assert_eq!(r["workload"], workload, "{r}");
    assert_eq!(r["total"], total, "{r}");
    assert_eq!(r["ok"], total, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["error_counts"], serde_json::json!([]), "{r}");
    let secs = r["seconds"].as_f64().unwrap();
    assert!(secs > 0.0, "{r}");
    let ops = r["ops_per_sec"].as_f64().unwrap();
    assert!((ops - total as f64 / secs).abs() <= 1e-6 * ops.max(1.0), "{r}");
    assert!(r["seed"].is_u64(), "{r}");
    check_latency(&r["latency_ms"]);
}

/// min <= p50 <= p90 <= p99 <= p99.9 <= max, mean within [min, max], and
/// every figure positive (a real request takes at least a microsecond).
pub fn check_latency(l: &Value) {
    let get = |k: &str| l[k].as_f64().unwrap_or_else(|| panic!("latency field {k} missing in {l}"));
    let ordered = ["min", "p50", "p90", "p99", "p999", "max"].map(get);
    assert!(ordered[0] > 0.0, "{l}");
    assert!(ordered.windows(2).all(|w| w[0] <= w[1]), "percentiles out of order: {l}");
    let mean = get("mean");
    assert!(ordered[0] <= mean && mean <= ordered[5], "{l}");
}
