//! Test harness: runs the real `cairn` binary on loopback with a temporary
//! data dir, and cleans both up on drop.
#![allow(dead_code)]

pub mod etcdctl;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Cairn {
    child: Option<Child>,
    /// Kept alive for the data dir and logs; removed on drop.
    pub tmp: tempfile::TempDir,
    pub port: u16,
    /// Peer (Raft) port. A single member keeps etcd's default advertised
    /// peer URL (so its ids are etcd's defaults) and only listens here.
    pub peer_port: u16,
    pub name: String,
    /// Cluster flags (`--initial-cluster*`, `--initial-advertise-peer-urls`) for a cluster member.
    pub cluster_args: Vec<String>,
    pub extra_args: Vec<String>,
    restarts: usize,
}

/// A free port on 127.0.0.1 below the kernel's ephemeral range.
///
/// A port from `bind(0)` comes from the ephemeral range, and so does the
/// local end of every outgoing connection the tests running in parallel
/// make: between this check and the server binding the port, a connection
/// could take it ("Address already in use"). Below that range only another
/// test's pick can, which the random choice makes rare.
pub fn free_port() -> u16 {
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(12_000);
    for _ in 0..1000 {
        let port = rand::random_range(10_000..high);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {high} on 127.0.0.1");
}

impl Cairn {
    pub fn start() -> Cairn {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Cairn {
        let tmp = tempfile::Builder::new().prefix("cairn-test-").tempdir().unwrap();
        let mut c = Cairn {
            child: None,
            tmp,
            port: free_port(),
            peer_port: free_port(),
            name: "default".into(),
            cluster_args: Vec::new(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            restarts: 0,
        };
        c.spawn();
        c.wait_ready();
        c
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// Whether the process is running (not killed or stopped by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.tmp.path().join(format!("cairn-{}.log", self.restarts))
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={}", self.peer_url()))
            .args(&self.cluster_args)
            .args(&self.extra_args);
        cmd
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn cairn");
        self.child = Some(child);
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the log contains `needle` within `timeout` (a line may be
    /// written a moment after the effect it reports is visible to clients).
    pub fn log_contains_within(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&mut self) {
        self.wait_health("/health");
    }

    /// Waits until `path` answers 200 (e.g. `/health`, which needs a leader).
    pub fn wait_health(&mut self, path: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cairn exited during start-up with {status}:\n{}", self.logs());
            }
            if let Ok((200, _)) = http_get(self.port, path) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cairn not healthy within {START_TIMEOUT:?}:\n{}", self.logs());
    }

    /// Starts the process without waiting for it to be healthy.
    pub fn spawn_only(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.restarts += 1;
        self.spawn();
    }

    /// SIGKILL: no flush, no graceful anything.
    /// (See [`Cluster`] for several members.)
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("cairn did not exit within 20s of SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the member again on the same data dir and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.restarts += 1;
        self.spawn();
        self.wait_ready();
    }
}

impl Drop for Cairn {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- cairn log ({}) ---\n{}", self.log_path().display(), self.logs());
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
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

/// Finds a required external tool. Missing locally: prints a loud notice and
/// returns None so the test skips. Missing with `CI=true`: fails.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| is_executable(p))
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is required in CI but not on PATH (.ci/run installs it)");
        }
        eprintln!("\n!!!!!!!! SKIPPING: `{name}` not found on PATH; install it (apt-get install etcd-client) to run this test !!!!!!!!\n");
    }
    found
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// A seed from `CAIRN_TEST_SEED` or the clock, printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("CAIRN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("{test}: seed {seed} (set CAIRN_TEST_SEED={seed} to replay)");
    seed
}

/// A cluster of real `cairn` processes on loopback, one temp dir each.
pub struct Cluster {
    pub members: Vec<Cairn>,
    pub initial_cluster: String,
}

impl Cluster {
    /// Starts `n` members of a new cluster with `args` each, and waits until
    /// every one is healthy (has a leader and serves reads).
    pub fn start(n: usize, args: &[&str]) -> Cluster {
        let mut members = Vec::new();
        for i in 0..n {
            let tmp = tempfile::Builder::new().prefix("cairn-cluster-").tempdir().unwrap();
            members.push(Cairn {
                child: None,
                tmp,
                port: free_port(),
                peer_port: free_port(),
                name: format!("m{i}"),
                cluster_args: Vec::new(),
                extra_args: args.iter().map(|s| s.to_string()).collect(),
                restarts: 0,
            });
        }
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",");
        for m in &mut members {
            m.cluster_args = vec![
                format!("--initial-advertise-peer-urls={}", m.peer_url()),
                format!("--initial-cluster={initial_cluster}"),
                "--initial-cluster-state=new".into(),
                "--initial-cluster-token=cairn-test".into(),
            ];
            m.spawn();
        }
        for m in &mut members {
            m.wait_ready();
        }
        Cluster { members, initial_cluster }
    }

    /// `kill -9` of every member, then all of them started again on their
    /// data dirs; returns once each is healthy (has a leader).
    pub fn kill_all_and_restart(&mut self) {
        for m in &mut self.members {
            m.kill9();
        }
        for m in &mut self.members {
            m.spawn_only();
        }
        for m in &mut self.members {
            m.wait_health("/health");
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.is_running()).map(|m| m.endpoint()).collect()
    }

    /// A fresh member (empty data dir, new client port) under the name and
    /// peer URL of member `index`, as after it was removed and added back,
    /// with `--initial-cluster` listing member `ask_first` first (a joining
    /// member asks its peers in that order); not started.
    pub fn rejoiner(&self, index: usize, ask_first: usize) -> Cairn {
        let old = &self.members[index];
        let tmp = tempfile::Builder::new().prefix("cairn-cluster-").tempdir().unwrap();
        let mut m = Cairn {
            child: None,
            tmp,
            port: free_port(),
            peer_port: old.peer_port,
            name: old.name.clone(),
            cluster_args: Vec::new(),
            extra_args: old.extra_args.clone(),
            restarts: 0,
        };
        let mut order: Vec<&Cairn> = vec![&self.members[ask_first]];
        order.extend(self.members.iter().enumerate().filter(|(i, _)| *i != ask_first).map(|(_, m)| m));
        let initial_cluster =
            order.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",");
        m.cluster_args = vec![
            format!("--initial-advertise-peer-urls={}", m.peer_url()),
            format!("--initial-cluster={initial_cluster}"),
            "--initial-cluster-state=existing".into(),
            "--initial-cluster-token=cairn-test".into(),
        ];
        m
    }

    /// A member that joins with `--initial-cluster-state existing` (after
    /// `member add`); not started.
    pub fn new_joiner(&self, name: &str, args: &[&str]) -> Cairn {
        let tmp = tempfile::Builder::new().prefix("cairn-cluster-").tempdir().unwrap();
        let mut m = Cairn {
            child: None,
            tmp,
            port: free_port(),
            peer_port: free_port(),
            name: name.into(),
            cluster_args: Vec::new(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            restarts: 0,
        };
        m.cluster_args = vec![
            format!("--initial-advertise-peer-urls={}", m.peer_url()),
            format!("--initial-cluster={},{}={}", self.initial_cluster, name, m.peer_url()),
            "--initial-cluster-state=existing".into(),
            "--initial-cluster-token=cairn-test".into(),
        ];
        m
    }
}
