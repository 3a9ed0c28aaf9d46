//! The system under test: a cluster of real `cairn` processes on loopback
//! that the harness starts, kills, restarts, pauses and partitions, or
//! existing endpoints that it only talks to.
//!
//! Every member listens on 127.0.0.1 only, on free ports, with its own data
//! directory `<data root>/<name>`; its stdout and stderr go to
//! `<log dir>/<name>.log` (appended to across restarts). The data root is
//! removed when the cluster is dropped unless [`Cluster::keep_data`] was
//! called: the harness keeps it for runs that found something. When the cluster
//! has a [`PeerProxy`], each member advertises the proxy's port as its peer
//! URL, so all Raft traffic goes through the proxy and can be cut. Every
//! process is killed when the [`Cluster`] is dropped, also on panic, and on
//! Linux when the harness itself dies (parent-death signal).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};
use rustix::process::{kill_process, Pid, Signal};

use crate::proxy::PeerProxy;

/// Where to find the `cairn` binary: `--cairn`, else next to this
/// executable, else on PATH.
pub fn find_cairn(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if is_executable(path) {
            return Ok(path.to_path_buf());
        }
        bail!("--cairn {} is not an executable file", path.display());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("cairn")));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("cairn"));
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| is_executable(p))
        .context("no cairn binary next to cairn-jepsen or on PATH; pass --cairn PATH")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The lowest port the kernel hands out for outgoing connections and
/// `bind(0)` (`ip_local_port_range`).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A free TCP port on 127.0.0.1, not in `taken`, below the ephemeral range.
///
/// A member's ports must stay free while it is down after a `kill -9`, so
/// it can restart on them. Ports from `bind(0)` and the local ends of
/// outgoing connections (other tests, other servers on the machine) all come
/// from the ephemeral range, so a port below it is very unlikely to be
/// taken meanwhile. Start-up still checks for members that could not bind.
fn free_port(taken: &[u16], rng: &mut impl rand::Rng) -> anyhow::Result<u16> {
    let high = ephemeral_start().max(12_000);
    for _ in 0..1000 {
        let port = rng.random_range(10_000..high);
        if !taken.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port below {high} on 127.0.0.1")
}

/// The variable that turns on a cairn's test-only bug switches.
const BUGS_ENV: &str = "CAIRN_BUGS";

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub binary: PathBuf,
    /// Where each member's log file goes.
    pub log_dir: PathBuf,
    /// Where each member's data directory goes; must not exist yet.
    pub data_root: PathBuf,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Route peer traffic through a [`PeerProxy`] (needed for partitions).
    pub peer_proxy: bool,
    pub token: String,
    /// Bug switches every member gets as `CAIRN_BUGS`; when empty the
    /// variable is removed from their environment, so a switch never comes
    /// from the harness's own environment unrecorded.
    pub bugs: Vec<String>,
}

/// One member: its addresses, files and process.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// The peer URL the member advertises (the proxy's, with a proxy).
    peer_url: String,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    /// Removed from the membership and wiped: must not be restarted with
    /// its old flags (it would bootstrap on its own), only [`Cluster::rejoin`]ed.
    removed: bool,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct Cluster {
    pub members: Vec<Member>,
    proxy: Option<PeerProxy>,
    opts: ClusterOptions,
    /// Remove `opts.data_root` on drop (after the processes are gone).
    remove_data: bool,
}

impl Cluster {
    /// Starts every member. Returns once the processes are spawned; use
    /// [`crate::client::wait_for_leader`] to wait until they serve.
    pub async fn launch(opts: ClusterOptions) -> anyhow::Result<Self> {
        if !(1..=7).contains(&opts.nodes) {
            bail!("--nodes must be between 1 and 7, not {}", opts.nodes);
        }
        std::fs::create_dir_all(&opts.log_dir)
            .with_context(|| format!("cannot create {}", opts.log_dir.display()))?;
        if opts.data_root.exists() {
            bail!("{} already exists", opts.data_root.display());
        }
        std::fs::create_dir_all(&opts.data_root)
            .with_context(|| format!("cannot create {}", opts.data_root.display()))?;
        let mut rng = rand::rng();
        let mut taken = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..opts.nodes {
            let client = free_port(&taken, &mut rng)?;
            taken.push(client);
            let peer = free_port(&taken, &mut rng)?;
            taken.push(peer);
            ports.push((client, peer));
        }
        let proxy = if opts.peer_proxy {
            let targets = ports
                .iter()
                .map(|&(_, peer)| SocketAddr::from((Ipv4Addr::LOCALHOST, peer)))
                .collect();
            Some(
                PeerProxy::start(targets)
                    .await
                    .context("cannot start the peer proxy")?,
            )
        } else {
            None
        };
        let advertised_peer = |i: usize| match &proxy {
            Some(p) => format!("http://{}", p.listen_addr(i)),
            None => format!("http://127.0.0.1:{}", ports[i].1),
        };
        let name = |i: usize| format!("m{i}");
        let initial_cluster = (0..opts.nodes)
            .map(|i| format!("{}={}", name(i), advertised_peer(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, &(client, peer)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client}");
            let data_dir = opts.data_root.join(name(i));
            let args = vec![
                format!("--name={}", name(i)),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls={}", advertised_peer(i)),
                format!("--initial-cluster={initial_cluster}"),
                "--initial-cluster-state=new".to_string(),
                format!("--initial-cluster-token={}", opts.token),
                format!("--heartbeat-interval={}", opts.heartbeat_ms),
                format!("--election-timeout={}", opts.election_ms),
            ];
            members.push(Member {
                name: name(i),
                client_url,
                data_dir,
                log_path: opts.log_dir.join(format!("{}.log", name(i))),
                peer_url: advertised_peer(i),
                args,
                child: None,
                paused: false,
                removed: false,
            });
        }
        let mut cluster = Cluster {
            members,
            proxy,
            opts,
            remove_data: true,
        };
        for i in 0..cluster.members.len() {
            cluster.start(i, "start")?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn proxy(&self) -> Option<&PeerProxy> {
        self.proxy.as_ref()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.members[i].paused
    }

    fn start(&mut self, i: usize, why: &str) -> anyhow::Result<()> {
        let member = &mut self.members[i];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .with_context(|| format!("cannot open {}", member.log_path.display()))?;
        writeln!(log, "==== cairn-jepsen: {why} {} ====", member.name)?;
        let mut command = Command::new(&self.opts.binary);
        command
            .args(&member.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.opts.bugs.is_empty() {
            command.env_remove(BUGS_ENV);
        } else {
            command.env(BUGS_ENV, self.opts.bugs.join(","));
        }
        // SAFETY: the closure runs in the forked child before exec and only
        // makes the prctl system call, which is async-signal-safe. The
        // signal fires when the thread that forked exits; that is a tokio
        // worker or the main thread, which live as long as the harness.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.opts.binary.display()))?;
        let pid = child.id();
        member.child = Some(child);
        member.paused = false;
        if let Some(proxy) = &self.proxy {
            proxy.set_pid(i, Some(pid));
        }
        Ok(())
    }

    /// `kill -9`s member i (also when it is paused) and reaps it.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let member = &mut self.members[i];
        let Some(mut child) = member.child.take() else {
            bail!("{} is not running", member.name);
        };
        member.paused = false;
        child
            .kill()
            .with_context(|| format!("cannot kill {}", member.name))?;
        child.wait()?;
        if let Some(proxy) = &self.proxy {
            proxy.set_pid(i, None);
        }
        Ok(())
    }

    /// Starts member i again on its data directory, with the same flags.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.members[i].child.is_some() {
            bail!("{} is already running", self.members[i].name);
        }
        if self.members[i].removed {
            bail!("{} was removed from the cluster", self.members[i].name);
        }
        self.start(i, "restart")
    }

    pub fn peer_url(&self, i: usize) -> &str {
        &self.members[i].peer_url
    }

    pub fn is_removed(&self, i: usize) -> bool {
        self.members[i].removed
    }

    /// Deletes the data directory of member i, which must be stopped, and
    /// marks it removed.
    pub fn wipe(&mut self, i: usize) -> anyhow::Result<()> {
        let member = &mut self.members[i];
        if member.child.is_some() {
            bail!("{} is running", member.name);
        }
        member.removed = true;
        match std::fs::remove_dir_all(&member.data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", member.data_dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// Starts wiped member i as a new member joining the running cluster
    /// (after MemberAdd), with the membership's `--initial-cluster`. Later
    /// restarts reuse these flags; the member then ignores them, as etcd
    /// does, because its data directory has its identity.
    pub fn rejoin(&mut self, i: usize, initial_cluster: &str) -> anyhow::Result<()> {
        let member = &mut self.members[i];
        if member.child.is_some() {
            bail!("{} is running", member.name);
        }
        for arg in &mut member.args {
            if arg.starts_with("--initial-cluster=") {
                *arg = format!("--initial-cluster={initial_cluster}");
            } else if arg.starts_with("--initial-cluster-state=") {
                *arg = "--initial-cluster-state=existing".to_string();
            }
        }
        member.removed = false;
        self.start(i, "rejoin")
    }

    /// SIGSTOPs member i.
    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, Signal::STOP)?;
        self.members[i].paused = true;
        Ok(())
    }

    /// SIGCONTs member i.
    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, Signal::CONT)?;
        self.members[i].paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, signal: Signal) -> anyhow::Result<()> {
        let member = &self.members[i];
        let pid = member
            .pid()
            .and_then(|p| Pid::from_raw(p as i32))
            .with_context(|| format!("{} is not running", member.name))?;
        kill_process(pid, signal).with_context(|| format!("cannot signal {}", member.name))?;
        Ok(())
    }

    /// Members that exited on their own (not killed by the harness), with
    /// their exit status: a crash the harness did not cause.
    pub fn exited(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, member) in self.members.iter_mut().enumerate() {
            if let Some(child) = &mut member.child {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push((i, status.to_string()));
                }
            }
        }
        out
    }

    /// Keeps the data directories when the cluster is dropped.
    pub fn keep_data(&mut self) {
        self.remove_data = false;
    }

    /// Kills every member now.
    pub fn kill_all(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        if self.remove_data {
            let _ = std::fs::remove_dir_all(&self.opts.data_root);
        }
    }
}
