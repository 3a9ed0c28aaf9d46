//! A 3-member cluster of `etcd` or `cairn` on loopback, started with the same
//! etcd flags for both, so the two are compared under equal settings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_api::etcdserverpb::{RangeRequest, StatusRequest};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::sys::{dir_size, process_cpu, rss_bytes, CpuTime, DirSize};
use crate::keys::prefix_range_end;

/// Which server a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Etcd,
    Cairn,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Etcd => "etcd",
            Kind::Cairn => "Cairn",
        })
    }
}

/// The Raft settings both servers get. Everything else stays at each
/// server's default: fsync is on by default in both.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Settings {
    pub members: usize,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        // etcd's defaults, which Cairn shares.
        Settings { members: 3, heartbeat_ms: 100, election_ms: 1000 }
    }
}

/// Up to how long a cluster may take to start and elect a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on each health probe and Status call while waiting and measuring.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const CLUSTER_TOKEN: &str = "cairn-bench-compare";

struct Member {
    name: String,
    child: Child,
    client_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
}

/// A running cluster. Dropping it kills every member (SIGKILL), waits for
/// them and deletes their data directories.
pub struct Cluster {
    pub kind: Kind,
    members: Vec<Member>,
    /// Last, so the members are gone before their directories are deleted.
    tmp: tempfile::TempDir,
}

/// One member's resources at a moment.
#[derive(Debug, Clone, Serialize)]
pub struct MemberUsage {
    pub name: String,
    pub leader: bool,
    pub rss_bytes: Option<u64>,
    pub data_dir: DirSize,
    /// The database size the member reports in Maintenance Status (`dbSize`).
    pub status_db_size: Option<i64>,
}

/// `n` distinct free loopback ports. All are held open until every one is
/// chosen, so the kernel cannot hand out the same port twice.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// The flags member `i` of a cluster gets; identical for etcd and Cairn.
pub fn member_args(
    i: usize,
    client_ports: &[u16],
    peer_ports: &[u16],
    data_dir: &Path,
    settings: &Settings,
) -> Vec<String> {
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let initial: Vec<String> = peer_ports.iter().enumerate().map(|(j, p)| format!("m{}={}", j + 1, url(*p))).collect();
    vec![
        format!("--name=m{}", i + 1),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={}", url(client_ports[i])),
        format!("--advertise-client-urls={}", url(client_ports[i])),
        format!("--listen-peer-urls={}", url(peer_ports[i])),
        format!("--initial-advertise-peer-urls={}", url(peer_ports[i])),
        format!("--initial-cluster={}", initial.join(",")),
        "--initial-cluster-state=new".into(),
        format!("--initial-cluster-token={CLUSTER_TOKEN}"),
        format!("--heartbeat-interval={}", settings.heartbeat_ms),
        format!("--election-timeout={}", settings.election_ms),
    ]
}

/// Makes a child die with this process even if it is killed without a chance
/// to clean up (the kernel sends SIGKILL when the spawning thread exits).
/// Members and benchmark runs are spawned from the main thread, which lives
/// as long as the process.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Cluster {
    /// Starts `settings.members` members of `binary` and waits until every
    /// one is healthy and they agree on a leader.
    pub async fn start(kind: Kind, binary: &Path, settings: &Settings) -> anyhow::Result<Cluster> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("cairn-compare-{}-", kind.to_string().to_lowercase()))
            .tempdir()?;
        let ports = free_ports(2 * settings.members)?;
        let (client_ports, peer_ports) = ports.split_at(settings.members);
        let mut cluster = Cluster { kind, members: Vec::new(), tmp };
        for i in 0..settings.members {
            let name = format!("m{}", i + 1);
            let data_dir = cluster.tmp.path().join(&name);
            let log = cluster.tmp.path().join(format!("{name}.log"));
            let out = std::fs::File::create(&log)?;
            let mut cmd = Command::new(binary);
            cmd.args(member_args(i, client_ports, peer_ports, &data_dir, settings))
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            die_with_parent(&mut cmd);
            let child = cmd.spawn().with_context(|| format!("starting {kind} ({})", binary.display()))?;
            cluster.members.push(Member { name, child, client_port: client_ports[i], data_dir, log });
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client_port)).collect()
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let mut healthy = true;
            for m in &self.members {
                healthy &= matches!(http_get(m.client_port, "/health").await, Ok((200, body)) if body.contains("true"));
            }
            if healthy && self.leader().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} cluster not ready within {READY_TIMEOUT:?}\n{}", self.kind, self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if any member has exited, with the end of its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            if let Some(status) = m.child.try_wait()? {
                bail!("{} member {} exited with {status}:\n{}", self.kind, m.name, tail(&m.log, 30));
            }
        }
        Ok(())
    }

    /// The index of the leader, which every member must name alike.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let mut ids = Vec::with_capacity(self.members.len());
        for ep in self.endpoints() {
            let s = status(&ep).await?;
            ids.push((s.member_id, s.leader));
        }
        let leader = ids[0].1;
        if leader == 0 || ids.iter().any(|(_, l)| *l != leader) {
            bail!("{} members do not agree on a leader: {ids:?}", self.kind);
        }
        ids.iter().position(|(id, _)| *id == leader).ok_or_else(|| anyhow!("the leader {leader:x} is not a member"))
    }

    /// The CPU time all members have used so far. `None` if any is gone.
    pub fn cpu(&self) -> Option<CpuTime> {
        self.members.iter().try_fold(CpuTime::default(), |sum, m| Some(sum.plus(process_cpu(m.child.id())?)))
    }

    /// Every member's RSS, data-dir size and reported database size.
    pub async fn usage(&mut self) -> anyhow::Result<Vec<MemberUsage>> {
        self.check_alive()?;
        let leader = self.leader().await.ok();
        let mut out = Vec::with_capacity(self.members.len());
        for (i, m) in self.members.iter().enumerate() {
            let db = status(&format!("http://127.0.0.1:{}", m.client_port)).await.ok().map(|s| s.db_size);
            out.push(MemberUsage {
                name: m.name.clone(),
                leader: leader == Some(i),
                rss_bytes: rss_bytes(m.child.id()),
                data_dir: dir_size(&m.data_dir).with_context(|| format!("measuring {}", m.data_dir.display()))?,
                status_db_size: db,
            });
        }
        Ok(out)
    }

    /// How many keys start with `prefix` (a linearizable count, so every
    /// acknowledged put is in it).
    pub async fn count_prefix(&self, prefix: &str) -> anyhow::Result<i64> {
        let ep = self.endpoints().remove(0);
        let req = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_range_end(prefix.as_bytes()),
            count_only: true,
            ..Default::default()
        };
        let call = async {
            let mut kv = KvClient::connect(ep).await?;
            anyhow::Ok(kv.range(req).await?.into_inner().count)
        };
        tokio::time::timeout(Duration::from_secs(60), call).await.map_err(|_| anyhow!("counting keys timed out"))?
    }

    /// The last lines of every member's log.
    pub fn log_tails(&self) -> String {
        self.members.iter().map(|m| format!("--- {} {} ---\n{}", self.kind, m.name, tail(&m.log, 15))).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.child.kill();
        }
        for m in &mut self.members {
            let _ = m.child.wait();
        }
    }
}

struct Status {
    member_id: u64,
    leader: u64,
    db_size: i64,
}

async fn status(endpoint: &str) -> anyhow::Result<Status> {
    let call = async {
        let mut c = MaintenanceClient::connect(endpoint.to_string()).await?;
        let s = c.status(StatusRequest {}).await?.into_inner();
        let member_id = s.header.map(|h| h.member_id).ok_or_else(|| anyhow!("Status without a header"))?;
        anyhow::Ok(Status { member_id, leader: s.leader, db_size: s.db_size })
    };
    tokio::time::timeout(PROBE_TIMEOUT, call).await.map_err(|_| anyhow!("Status on {endpoint} timed out"))?
}

/// A minimal HTTP/1.1 GET on loopback: (status code, body).
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let call = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| anyhow!("bad reply"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        anyhow::Ok((code, body))
    };
    tokio::time::timeout(PROBE_TIMEOUT, call).await.map_err(|_| anyhow!("GET {path} timed out"))?
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_get_identical_etcd_flags() {
        let s = Settings::default();
        let a = member_args(1, &[1, 2, 3], &[11, 12, 13], Path::new("/d/m2"), &s);
        assert!(a.contains(&"--name=m2".to_string()));
        assert!(a.contains(&"--listen-client-urls=http://127.0.0.1:2".to_string()));
        assert!(a.contains(&"--initial-advertise-peer-urls=http://127.0.0.1:12".to_string()));
        assert!(a.contains(
            &"--initial-cluster=m1=http://127.0.0.1:11,m2=http://127.0.0.1:12,m3=http://127.0.0.1:13".to_string()
        ));
        assert!(a.contains(&"--heartbeat-interval=100".to_string()));
        assert!(a.contains(&"--election-timeout=1000".to_string()));
        // Only the member's own name, ports and data dir differ between members.
        let b = member_args(0, &[1, 2, 3], &[11, 12, 13], Path::new("/d/m1"), &s);
        let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(differing, 6, "{a:?} vs {b:?}");
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut p = free_ports(6).unwrap();
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), 6);
    }
}
