//! A TCP proxy in front of every member's peer port, so the harness can cut
//! the network between chosen pairs of members.
//!
//! Why one proxy per member and not one per directed pair: every member
//! must be given the same `--initial-cluster` (member ids are hashes of the
//! peer URLs), and members learn each other's peer URLs from the replicated
//! membership, so a member has exactly one peer URL that everybody dials.
//! That URL is the proxy's port, which forwards to the member's real
//! `--listen-peer-urls` port.
//!
//! On loopback every connection comes from 127.0.0.1, so the proxy finds out
//! which member dialed by looking the connection's source port up in
//! `/proc/net/tcp` (the socket's inode) and then in the members' open file
//! descriptors (`/proc/<pid>/fd`). A cut between members i and j blocks
//! every connection i dials to j's proxy and every one j dials to i's:
//! together, all Raft traffic between them, both ways.
//!
//! Cutting closes the existing connections of the pair at once and
//! black-holes new ones: they are accepted, and whatever arrives is read
//! and dropped (so memory stays bounded) without ever being answered, like
//! packets lost in a real partition. Healing closes the black-holed
//! connections, so the members reconnect through a working path.
//! Forwarding itself uses fixed-size buffers in both directions.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// The largest amount of data a forwarding direction holds.
const BUFFER_BYTES: usize = 64 * 1024;

/// Connection counts, for the nemesis log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    pub forwarded: u64,
    pub blackholed: u64,
    pub unidentified: u64,
}

/// Proxies for the peer ports of a cluster's members.
pub struct PeerProxy {
    shared: Arc<Shared>,
    listen: Vec<SocketAddr>,
    accept_tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    /// Where member i really listens for peers.
    targets: Vec<SocketAddr>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Cut pairs (smaller index first), with how many faults cut each.
    cuts: HashMap<(usize, usize), usize>,
    /// Current process id of each member, for finding who dialed.
    pids: Vec<Option<u32>>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    /// Connections forwarded and black-holed so far, and how many of all
    /// connections came from a process that could not be identified.
    forwarded: u64,
    blackholed: u64,
    unidentified: u64,
}

struct Conn {
    from: Option<usize>,
    to: usize,
    blackholed: bool,
    abort: AbortHandle,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn blocked(&self, from: Option<usize>, to: usize) -> bool {
        match from {
            Some(from) => self.cuts.contains_key(&pair(from, to)),
            // Who dialed is unknown (it exited meanwhile): only safe to
            // forward if nothing cuts the target at all.
            None => self.cuts.keys().any(|&(a, b)| a == to || b == to),
        }
    }
}

impl PeerProxy {
    /// Starts one proxy per member on a free loopback port, forwarding to
    /// `targets[i]`.
    pub async fn start(targets: Vec<SocketAddr>) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pids: vec![None; targets.len()],
                ..State::default()
            }),
            targets,
        });
        let mut listen = Vec::new();
        let mut accept_tasks = Vec::new();
        for to in 0..shared.targets.len() {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let addr = listener.local_addr()?;
            listen.push(addr);
            accept_tasks.push(tokio::spawn(accept_loop(
                shared.clone(),
                listener,
                addr,
                to,
            )));
        }
        Ok(Self {
            shared,
            listen,
            accept_tasks,
        })
    }

    /// The address members dial to reach member i.
    pub fn listen_addr(&self, member: usize) -> SocketAddr {
        self.listen[member]
    }

    /// Records member i's current process (or that it is not running).
    pub fn set_pid(&self, member: usize, pid: Option<u32>) {
        self.shared.lock().pids[member] = pid;
    }

    /// Cuts the given pairs: their open connections close now, new ones
    /// are black-holed until [`PeerProxy::heal`] of the same pairs.
    pub fn cut(&self, pairs: &[(usize, usize)]) {
        let mut state = self.shared.lock();
        for &(a, b) in pairs {
            *state.cuts.entry(pair(a, b)).or_default() += 1;
        }
        let doomed: Vec<u64> = state
            .conns
            .iter()
            .filter(|(_, c)| !c.blackholed && state.blocked(c.from, c.to))
            .map(|(&id, _)| id)
            .collect();
        for id in doomed {
            if let Some(conn) = state.conns.remove(&id) {
                conn.abort.abort();
            }
        }
    }

    /// Undoes one [`PeerProxy::cut`] of the given pairs. Black-holed
    /// connections that are no longer blocked are closed, so their members
    /// reconnect.
    pub fn heal(&self, pairs: &[(usize, usize)]) {
        let mut state = self.shared.lock();
        for &(a, b) in pairs {
            let key = pair(a, b);
            if let Some(n) = state.cuts.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    state.cuts.remove(&key);
                }
            }
        }
        let freed: Vec<u64> = state
            .conns
            .iter()
            .filter(|(_, c)| c.blackholed && !state.blocked(c.from, c.to))
            .map(|(&id, _)| id)
            .collect();
        for id in freed {
            if let Some(conn) = state.conns.remove(&id) {
                conn.abort.abort();
            }
        }
    }

    /// Removes every cut.
    pub fn heal_all(&self) {
        let pairs: Vec<(usize, usize)> = {
            let state = self.shared.lock();
            state
                .cuts
                .iter()
                .flat_map(|(&p, &n)| std::iter::repeat_n(p, n))
                .collect()
        };
        self.heal(&pairs);
    }

    /// Whether any pair is cut.
    pub fn has_cuts(&self) -> bool {
        !self.shared.lock().cuts.is_empty()
    }

    /// Connections forwarded, black-holed, and from an unidentified
    /// process, so far.
    pub fn stats(&self) -> ProxyStats {
        let state = self.shared.lock();
        ProxyStats {
            forwarded: state.forwarded,
            blackholed: state.blackholed,
            unidentified: state.unidentified,
        }
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        for task in &self.accept_tasks {
            task.abort();
        }
        for (_, conn) in self.shared.lock().conns.drain() {
            conn.abort.abort();
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, addr: SocketAddr, to: usize) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: try again shortly
            // rather than lose the member's only peer address.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let pids = shared.lock().pids.clone();
        let from = tokio::task::spawn_blocking(move || dialer(peer, addr, &pids))
            .await
            .ok()
            .flatten();
        let mut state = shared.lock();
        state.unidentified += u64::from(from.is_none());
        let id = state.next_conn;
        state.next_conn += 1;
        let blackholed = state.blocked(from, to);
        // The task removes itself when done; it needs the lock for that,
        // which it cannot get before it is registered below.
        let task = if blackholed {
            state.blackholed += 1;
            tokio::spawn(blackhole(shared.clone(), id, stream))
        } else {
            state.forwarded += 1;
            tokio::spawn(forward(shared.clone(), id, stream, shared.targets[to]))
        };
        state.conns.insert(
            id,
            Conn {
                from,
                to,
                blackholed,
                abort: task.abort_handle(),
            },
        );
    }
}

async fn forward(shared: Arc<Shared>, id: u64, mut inbound: TcpStream, target: SocketAddr) {
    if let Ok(mut outbound) = TcpStream::connect(target).await {
        let _ = outbound.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional_with_sizes(
            &mut inbound,
            &mut outbound,
            BUFFER_BYTES,
            BUFFER_BYTES,
        )
        .await;
    }
    shared.lock().conns.remove(&id);
}

/// Reads and drops everything until the peer gives up or the cut heals.
async fn blackhole(shared: Arc<Shared>, id: u64, mut inbound: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while matches!(inbound.read(&mut buf).await, Ok(n) if n > 0) {}
    shared.lock().conns.remove(&id);
}

/// Which member dialed: the one whose process holds the client end of the
/// connection from `peer` to `local`.
fn dialer(peer: SocketAddr, local: SocketAddr, pids: &[Option<u32>]) -> Option<usize> {
    let (SocketAddr::V4(peer), SocketAddr::V4(local)) = (peer, local) else {
        return None;
    };
    let inode = socket_inode(peer, local)?;
    let needle = format!("socket:[{inode}]");
    pids.iter().position(|pid| {
        let Some(pid) = pid else {
            return false;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == needle.as_str())
        })
    })
}

/// The inode of the socket whose local address is `local` and remote
/// address `remote`, from `/proc/net/tcp`.
fn socket_inode(local: SocketAddrV4, remote: SocketAddrV4) -> Option<u64> {
    let hex = |a: SocketAddrV4| {
        format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        )
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// Every pair between a member of `group` and one outside it: the cut that
/// separates `group` from the rest of `n` members.
pub fn isolating(group: &[usize], n: usize) -> Vec<(usize, usize)> {
    let inside: HashSet<usize> = group.iter().copied().collect();
    let mut pairs = Vec::new();
    for &a in group {
        for b in (0..n).filter(|b| !inside.contains(b)) {
            pairs.push(pair(a, b));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn isolating_a_group_cuts_every_pair_across() {
        assert_eq!(isolating(&[1], 3), vec![(0, 1), (1, 2)]);
        assert_eq!(
            isolating(&[0, 4], 5),
            vec![(0, 1), (0, 2), (0, 3), (1, 4), (2, 4), (3, 4)]
        );
    }

    /// The proxy forwards, identifies the dialing process (this test's own
    /// process plays member 0), black-holes cut pairs and heals.
    #[tokio::test]
    async fn forwards_cuts_and_heals() {
        let echo = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = PeerProxy::start(vec![echo_addr; 3]).await.unwrap();
        proxy.set_pid(0, Some(std::process::id()));
        let roundtrip = |addr| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            tokio::time::timeout(
                std::time::Duration::from_millis(500),
                s.read_exact(&mut buf),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        };
        assert!(roundtrip(proxy.listen_addr(1)).await);

        // An open connection of a pair closes when the pair is cut.
        let mut open = TcpStream::connect(proxy.listen_addr(1)).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.unwrap();
        proxy.cut(&[(0, 1)]);
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(2), open.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");

        assert!(
            !roundtrip(proxy.listen_addr(1)).await,
            "a cut pair must not get through"
        );
        assert!(proxy.stats().blackholed >= 1);
        assert_eq!(proxy.stats().unidentified, 0);
        proxy.heal(&[(0, 1)]);
        assert!(roundtrip(proxy.listen_addr(1)).await);

        // A cut between two other members does not block member 0.
        proxy.cut(&[(1, 2)]);
        assert!(roundtrip(proxy.listen_addr(1)).await);
        proxy.heal_all();
        assert!(!proxy.has_cuts());
        assert!(roundtrip(proxy.listen_addr(1)).await);
    }
}
