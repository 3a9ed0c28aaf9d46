//! Real 3-node openraft clusters on 127.0.0.1 over the gRPC peer network
//! (`cairn_raft::network`), each node with a `RocksLogStore` and snapshot
//! directory in a temporary directory and Cairn's state machine over an
//! in-memory MVCC store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_api::etcdserverpb::{PutRequest, RangeRequest};
use cairn_raft::network::pb::raft_server::{Raft as RaftRpc, RaftServer};
use cairn_raft::network::{RaftMessage, SnapshotChunk, SNAPSHOT_CHUNK_SIZE};
use cairn_raft::openraft;
use cairn_raft::{CairnRaft, Member, PeerNetwork, RaftPeerService, RaftRequest, RocksLogStore, StateMachine, TypeConfig};
use cairn_storage::{MemEngine, Store, StoreConfig, WriteRequest};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

/// Every test runs under this bound so a hang fails instead of stalling CI.
const TEST_BOUND: Duration = Duration::from_secs(55);
/// How long any single expected event (election, replication) may take.
const WAIT: Duration = Duration::from_secs(15);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .expect("test exceeded its time bound")
}

fn key(id: u64) -> Vec<u8> {
    format!("k{id:05}").into_bytes()
}

/// Every key in the store with its value and mod revision.
fn contents(store: &Store) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let resp = store
        .range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() })
        .unwrap();
    resp.kvs.into_iter().map(|kv| (kv.key, kv.value, kv.mod_revision)).collect()
}

/// The keys of requests `ids` as a store holds them after applying them in
/// order from an empty store: revision 2 for the first.
fn applied_in_order(store: &Store, ids: std::ops::Range<u64>) -> bool {
    let got: Vec<(Vec<u8>, i64)> = contents(store).into_iter().map(|(k, _, r)| (k, r)).collect();
    let want: Vec<(Vec<u8>, i64)> = ids.clone().map(|id| (key(id), 2 + (id - ids.start) as i64)).collect();
    got == want
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

struct Node {
    id: u64,
    addr: SocketAddr,
    raft: CairnRaft,
    store: Arc<Store>,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn member(&self) -> Member {
        Member {
            name: format!("n{}", self.id),
            peer_urls: vec![format!("http://{}", self.addr)],
            client_urls: vec![],
        }
    }

    fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Stops the Raft node and its gRPC server (the node "dies").
    async fn kill(&mut self) {
        self.raft.shutdown().await.expect("raft shutdown");
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            // Graceful shutdown waits for open peer connections; don't wait long.
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), server).await.is_err() {
                abort.abort();
            }
        }
    }
}

fn config(snapshot_policy: SnapshotPolicy) -> Arc<Config> {
    let config = Config {
        cluster_name: "cairn-test".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        install_snapshot_timeout: 2000,
        enable_pre_vote: Some(true),
        snapshot_policy,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid config"))
}

async fn start_node(id: u64, config: Arc<Config>) -> Node {
    start_node_serving(id, config, false, None).await
}

/// A node whose peer service lacks the `StreamAppend` and `Heartbeat` calls
/// (they answer `Unimplemented`), as a build from before them does.
struct WithoutStreams(RaftPeerService);

#[tonic::async_trait]
impl RaftRpc for WithoutStreams {
    type StreamAppendStream = <RaftPeerService as RaftRpc>::StreamAppendStream;
    type HeartbeatStream = <RaftPeerService as RaftRpc>::HeartbeatStream;
    async fn vote(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.0.vote(r).await
    }
    async fn pre_vote(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.0.pre_vote(r).await
    }
    async fn append_entries(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.0.append_entries(r).await
    }
    async fn stream_append(
        &self,
        _: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        Err(Status::unimplemented("not in this build"))
    }
    async fn heartbeat(&self, _: Request<Streaming<RaftMessage>>) -> Result<Response<Self::HeartbeatStream>, Status> {
        Err(Status::unimplemented("not in this build"))
    }
    async fn snapshot(&self, r: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftMessage>, Status> {
        self.0.snapshot(r).await
    }
    async fn transfer_leader(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.0.transfer_leader(r).await
    }
    async fn forward(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.0.forward(r).await
    }
}

async fn start_node_serving(
    id: u64,
    config: Arc<Config>,
    without_streams: bool,
    votes_closed_until: Option<tokio::time::Instant>,
) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLogStore::open(dir.path().join("log")).unwrap();
    let store = Store::open(Arc::new(MemEngine::new()), StoreConfig { sync_writes: false, ..Default::default() }).unwrap();
    let snap_dir = dir.path().join("snap");
    let sm = StateMachine::open(store.clone(), snap_dir.clone()).unwrap();
    let raft = CairnRaft::new(id, config, PeerNetwork::new(id), log, sm)
        .await
        .expect("raft starts");
    let service = RaftPeerService::new(id, raft.clone(), snap_dir, None).with_votes_closed_until(votes_closed_until);
    let router = if without_streams {
        tonic::transport::Server::builder().add_service(RaftServer::new(WithoutStreams(service)))
    } else {
        tonic::transport::Server::builder().add_service(service.into_server())
    };
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        router
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = rx.await;
                },
            ),
    );
    Node {
        id,
        addr,
        raft,
        store,
        stop_server: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

/// Starts nodes 1..=3 and initializes them as one cluster.
async fn start_cluster(config: Arc<Config>) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node(id, config.clone()).await);
    }
    let members: BTreeMap<u64, Member> = nodes.iter().map(|n| (n.id, n.member())).collect();
    nodes[0].raft.initialize(members).await.expect("initialize");
    nodes
}

async fn shutdown_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        if n.server.is_some() {
            n.kill().await;
        }
    }
}

/// Waits until one live node is a leader ready for writes and every live
/// node follows it.
async fn wait_leader(nodes: &[Node], not: Option<u64>) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let live: Vec<&Node> = nodes.iter().filter(|n| n.server.is_some()).collect();
        let leader = live
            .iter()
            .map(|n| n.metrics())
            // A leader serves writes once an entry of its own term (its
            // blank entry) is committed.
            .find(|m| {
                m.state == ServerState::Leader
                    && Some(m.id) != not
                    && m.cluster_committed.is_some_and(|c| c.leader_id.term == m.current_term)
            })
            .map(|m| m.id);
        if let Some(l) = leader {
            if live.iter().all(|n| n.metrics().current_leader == Some(l)) {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(nodes: &[Node], id: u64) -> &Node {
    nodes.iter().find(|n| n.id == id).unwrap()
}

/// Writes requests `ids` through `leader`, in order; returns the last log index.
async fn write(leader: &Node, ids: std::ops::Range<u64>, payload_len: usize) -> u64 {
    let mut last = 0;
    for id in ids {
        let resp = leader
            .raft
            .client_write(RaftRequest {
                id: id + 1,
                payload: WriteRequest::Put(PutRequest {
                    key: key(id),
                    value: payload(id, payload_len),
                    ..Default::default()
                })
                .encode(),
            })
            .await
            .unwrap_or_else(|e| panic!("write {id} via node {}: {e}", leader.id));
        last = resp.log_id.index;
    }
    last
}

fn payload(id: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (id as usize * 31 + i) as u8).collect()
}

async fn wait_applied(n: &Node, index: u64) {
    n.raft
        .wait(Some(WAIT))
        .applied_index_at_least(Some(index), format!("node {} applies {index}", n.id))
        .await
        .unwrap_or_else(|e| panic!("node {} did not apply {index}: {e}", n.id));
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_are_applied_in_the_same_order_on_every_node() {
    bounded(async {
        let started = Instant::now();
        let mut nodes = start_cluster(config(SnapshotPolicy::Never)).await;
        let leader = wait_leader(&nodes, None).await;
        println!("leader {leader} elected after {:?}", started.elapsed());

        let t = Instant::now();
        let last = write(node(&nodes, leader), 0..200, 100).await;
        println!("200 writes committed in {:?}", t.elapsed());
        for n in &nodes {
            wait_applied(n, last).await;
        }
        let expected: Vec<(Vec<u8>, Vec<u8>, i64)> = (0..200).map(|id| (key(id), payload(id, 100), 2 + id as i64)).collect();
        for n in &nodes {
            assert_eq!(contents(&n.store), expected, "node {} applied state", n.id);
        }
        shutdown_all(&mut nodes).await;
        println!("test took {:?}", started.elapsed());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_is_elected_when_the_leader_dies() {
    bounded(async {
        let started = Instant::now();
        let mut nodes = start_cluster(config(SnapshotPolicy::Never)).await;
        let old = wait_leader(&nodes, None).await;
        let last = write(node(&nodes, old), 0..20, 10).await;
        for n in &nodes {
            wait_applied(n, last).await;
        }

        let old_term = node(&nodes, old).metrics().current_term;
        let t = Instant::now();
        nodes.iter_mut().find(|n| n.id == old).unwrap().kill().await;
        let new = wait_leader(&nodes, Some(old)).await;
        let took = t.elapsed();
        println!("node {old} killed; node {new} elected after {took:?}");
        assert_ne!(new, old);
        assert!(node(&nodes, new).metrics().current_term > old_term);
        // A few election timeouts (max 1 s each), not more.
        assert!(took < Duration::from_secs(5), "election took {took:?}");

        let last = write(node(&nodes, new), 20..40, 10).await;
        let live: Vec<&Node> = nodes.iter().filter(|n| n.id != old).collect();
        for n in &live {
            wait_applied(n, last).await;
            assert!(applied_in_order(&n.store, 0..40), "node {}", n.id);
        }
        shutdown_all(&mut nodes).await;
        println!("test took {:?}", started.elapsed());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_learner_catches_up_from_a_multi_chunk_snapshot() {
    bounded(async {
        let started = Instant::now();
        let cfg = config(SnapshotPolicy::LogsSinceLast(50));
        let mut nodes = start_cluster(cfg.clone()).await;
        let leader = wait_leader(&nodes, None).await;

        // ~3 MiB of state: the snapshot needs several 1 MiB chunks.
        let payload_len = 16 * 1024;
        let count = 200u64;
        let last = write(node(&nodes, leader), 0..count, payload_len).await;
        for n in &nodes {
            wait_applied(n, last).await;
        }
        // Snapshot everything and purge the log, so a new node cannot be
        // fed from the log.
        let l = node(&nodes, leader);
        // A policy snapshot may be in progress, and openraft ignores a
        // trigger while one is: trigger again until one covers `last`.
        let deadline = Instant::now() + WAIT;
        loop {
            l.raft.trigger().snapshot().await.unwrap();
            let done = l
                .raft
                .wait(Some(Duration::from_millis(500)))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= last) && m.purged.is_some_and(|p| p.index >= last),
                    "leader snapshot and purge",
                )
                .await;
            if done.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "leader did not snapshot and purge to {last}: {done:?}");
        }
        let current = l.raft.get_snapshot().await.unwrap().expect("a snapshot");
        assert!(current.meta.last_log_id.is_some_and(|id| id.index >= last), "{}", current.meta);
        let snapshot_bytes = current.snapshot.into_file().await.unwrap().len() as usize;
        assert!(
            snapshot_bytes > 2 * SNAPSHOT_CHUNK_SIZE,
            "snapshot of {snapshot_bytes} bytes should need several chunks"
        );
        println!("leader purged to {last}; snapshot {snapshot_bytes} bytes");
        // The leader's store is its snapshot: nothing was copied to build it,
        // and what was written to send is gone.
        let kept: Vec<_> = std::fs::read_dir(l._dir.path().join("snap")).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(kept.is_empty(), "snapshot files on the leader: {kept:?}");

        let learner = start_node(4, cfg.clone()).await;
        let t = Instant::now();
        l.raft
            .add_learner(4, learner.member(), true)
            .await
            .expect("add learner");
        wait_applied(&learner, last).await;
        println!("learner caught up in {:?}", t.elapsed());
        assert!(learner.raft.get_snapshot().await.unwrap().is_some(), "learner installed a snapshot");
        let kept: Vec<_> = std::fs::read_dir(learner._dir.path().join("snap")).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(kept.is_empty(), "the installed snapshot file was kept: {kept:?}");
        assert_eq!(contents(&learner.store), contents(&l.store), "learner state equals leader state");

        // And it keeps following the log afterwards.
        let last = write(l, count..count + 10, 10).await;
        wait_applied(&learner, last).await;
        assert!(applied_in_order(&learner.store, 0..count + 10));

        nodes.push(learner);
        shutdown_all(&mut nodes).await;
        println!("test took {:?}", started.elapsed());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_is_transferred_to_a_chosen_node() {
    bounded(async {
        let started = Instant::now();
        let mut nodes = start_cluster(config(SnapshotPolicy::Never)).await;
        let old = wait_leader(&nodes, None).await;
        let last = write(node(&nodes, old), 0..10, 10).await;
        for n in &nodes {
            wait_applied(n, last).await;
        }
        // The chosen node: the highest id that is not the leader.
        let target = nodes.iter().map(|n| n.id).filter(|id| *id != old).max().unwrap();
        let t = Instant::now();
        node(&nodes, old)
            .raft
            .trigger()
            .transfer_leader(target)
            .await
            .expect("transfer leader");
        let new = wait_leader(&nodes, Some(old)).await;
        println!("leadership {old} -> {new} in {:?}", t.elapsed());
        assert_eq!(new, target, "the chosen node leads");
        // Faster than an election timeout would have been needed for, with
        // slack for slow CI.
        assert!(t.elapsed() < Duration::from_secs(5));

        let last = write(node(&nodes, new), 10..20, 10).await;
        for n in &nodes {
            wait_applied(n, last).await;
            assert!(applied_in_order(&n.store, 0..20), "node {}", n.id);
        }
        shutdown_all(&mut nodes).await;
        println!("test took {:?}", started.elapsed());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_failures_map_to_openraft_errors() {
    use cairn_raft::types::Vote;
    use openraft::errors::RPCError;
    use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
    use openraft::raft::VoteRequest;

    bounded(async {
        let mut net = PeerNetwork::new(1);
        let vote = || VoteRequest::<TypeConfig>::new(Vote::new(1, 1), None);
        let option = RPCOption::new(Duration::from_millis(400)); // soft_ttl 300 ms
        let at = |url: String| Member {
            name: "peer".into(),
            peer_urls: vec![url],
            client_urls: vec![],
        };
        let unreachable = |r: Result<_, RPCError<TypeConfig>>, what: &str| match r {
            Err(RPCError::Unreachable(e)) => println!("{what}: {e}"),
            other => panic!("{what}: expected Unreachable, got {other:?}"),
        };

        // Nothing listens on the port.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut c = net.new_client(2, &at(format!("http://{closed}"))).await;
        unreachable(c.vote(vote(), option.clone()).await, "closed port");
        // No peer URL; an invalid one.
        let mut c = net.new_client(2, &Member::default()).await;
        unreachable(c.vote(vote(), option.clone()).await, "no peer URL");
        let mut c = net.new_client(2, &at("not a url".into())).await;
        unreachable(c.vote(vote(), option.clone()).await, "bad peer URL");

        // A peer that accepts connections and never answers: a timeout
        // after soft_ttl, well before hard_ttl has long passed.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = silent.accept().await {
                held.push(sock);
            }
        });
        let mut c = net.new_client(2, &at(format!("http://{silent_addr}"))).await;
        let t = Instant::now();
        match c.vote(vote(), option.clone()).await {
            Err(RPCError::Timeout(e)) => {
                println!("silent peer: {e} after {:?}", t.elapsed());
                assert_eq!((e.id, e.target), (1, 2));
            }
            other => panic!("silent peer: expected Timeout, got {other:?}"),
        }
        assert!(t.elapsed() >= Duration::from_millis(290), "{:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_millis(600), "{:?}", t.elapsed());
        holder.abort();

        // A real node: answers under its own id, refuses another id, and
        // once its Raft is shut down (server still up) is unreachable.
        let mut n = start_node(2, config(SnapshotPolicy::Never)).await;
        let mut right = net.new_client(2, &n.member()).await;
        let resp = right.vote(vote(), option.clone()).await.expect("vote reply");
        println!("node 2 answered {resp}");
        let mut wrong = net.new_client(7, &n.member()).await;
        unreachable(wrong.vote(vote(), option.clone()).await, "wrong node id");
        n.raft.shutdown().await.unwrap();
        unreachable(right.vote(vote(), option.clone()).await, "raft shut down");
        n.kill().await;
    })
    .await
}

/// A peer service with votes closed (a restarted member keeping the lease
/// it may have given a leader) refuses Vote and PreVote with `Unavailable`
/// until the moment given, but answers a leadership transfer's vote; after
/// that moment it answers every vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_votes_closed_answers_only_a_transfer_until_they_open() {
    use cairn_raft::types::Vote;
    use openraft::errors::RPCError;
    use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
    use openraft::raft::VoteRequest;

    bounded(async {
        let mut net = PeerNetwork::new(1);
        let option = RPCOption::new(Duration::from_millis(2000));
        let open_at = tokio::time::Instant::now() + Duration::from_millis(1500);
        let mut n = start_node_serving(2, config(SnapshotPolicy::Never), false, Some(open_at)).await;
        let mut c = net.new_client(2, &n.member()).await;
        let vote = |term| VoteRequest::<TypeConfig>::new(Vote::new(term, 1), None);
        let refused = |r: Result<_, RPCError<TypeConfig>>, what: &str| match r {
            Err(RPCError::Unreachable(e)) if e.to_string().contains("grants no vote") => println!("{what}: {e}"),
            other => panic!("{what}: expected a refusal, got {other:?}"),
        };
        refused(c.vote(vote(1), option.clone()).await, "vote");
        refused(c.pre_vote(vote(1), option.clone()).await, "pre-vote");
        assert!(tokio::time::Instant::now() < open_at, "the refusals came too late to test anything");
        assert_eq!(n.metrics().current_term, 0, "a refused vote reached Raft");

        let mut transfer = vote(2);
        transfer.leadership_transfer = true;
        let resp = c.vote(transfer, option.clone()).await.expect("a transfer's vote is answered");
        println!("transfer vote: {resp}");
        assert!(resp.is_granted_to(&Vote::new(2, 1)), "{resp}");

        tokio::time::sleep_until(open_at).await;
        let resp = c.pre_vote(vote(3), option.clone()).await.expect("pre-vote answered once open");
        println!("pre-vote after opening: {resp}");
        let resp = c.vote(vote(3), option.clone()).await.expect("vote answered once open");
        println!("vote after opening: {resp}");
        assert!(resp.is_granted_to(&Vote::new(3, 1)), "{resp}");
        n.kill().await;
    })
    .await
}

/// An AppendEntries with no entries from leader 1 in term 1.
fn empty_append() -> openraft::raft::AppendEntriesRequest<TypeConfig> {
    openraft::raft::AppendEntriesRequest {
        vote: cairn_raft::types::Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_and_heartbeat_streams_answer_in_order_and_recover_from_failures() {
    use futures_util::StreamExt;
    use openraft::errors::RPCError;
    use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};

    bounded(async {
        let mut net = PeerNetwork::new(1);
        let option = RPCOption::new(Duration::from_millis(400));
        let mut n = start_node(2, config(SnapshotPolicy::Never)).await;

        // Replication: three requests on one stream, each appending one
        // blank entry, sent without waiting for answers; each is answered
        // with its own last log id, in order, and the call ends when the
        // requests do.
        let mut repl = net.new_client(2, &n.member()).await;
        let log_id = |index| openraft::testing::log_id::<TypeConfig>(1, 1, index);
        let requests: Vec<_> = (1..=3)
            .map(|index| openraft::raft::AppendEntriesRequest {
                prev_log_id: (index > 1).then(|| log_id(index - 1)),
                entries: vec![cairn_raft::types::Entry {
                    log_id: log_id(index),
                    payload: cairn_raft::types::EntryPayload::Blank,
                }],
                ..empty_append()
            })
            .collect();
        let input = futures_util::stream::iter(requests);
        let replies: Vec<_> = repl.stream_append(input, option.clone()).await.expect("stream opens").collect().await;
        let acked: Vec<_> = replies
            .into_iter()
            .map(|r| match r {
                Ok(Ok(matching)) => matching,
                other => panic!("expected an acknowledgement, got {other:?}"),
            })
            .collect();
        assert_eq!(acked, vec![Some(log_id(1)), Some(log_id(2)), Some(log_id(3))]);

        // A request for another node id fails the stream, like a unary call.
        let mut wrong = net.new_client(7, &n.member()).await;
        let input = futures_util::stream::iter(vec![empty_append()]);
        let replies: Vec<_> = wrong.stream_append(input, option.clone()).await.expect("stream opens").collect().await;
        assert!(matches!(replies.as_slice(), [Err(RPCError::Unreachable(_))]), "{replies:?}");

        // Heartbeats: one call carries many; after a failure (wrong id) the
        // client opens a new call and fails the same way, not on a stale one.
        let mut hb = net.new_heartbeat_client(2, &n.member()).await;
        for _ in 0..5 {
            let resp = hb.append_entries(empty_append(), option.clone()).await.expect("heartbeat answered");
            assert!(resp.is_success(), "{resp}");
        }
        let mut hb_wrong = net.new_heartbeat_client(7, &n.member()).await;
        for _ in 0..2 {
            match hb_wrong.append_entries(empty_append(), option.clone()).await {
                Err(RPCError::Unreachable(e)) => println!("heartbeat to the wrong id: {e}"),
                other => panic!("expected Unreachable, got {other:?}"),
            }
        }
        // Once the node's Raft is down the open heartbeat call reports it.
        n.raft.shutdown().await.unwrap();
        match hb.append_entries(empty_append(), option.clone()).await {
            Err(RPCError::Unreachable(e)) => println!("heartbeat to a shut-down raft: {e}"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
        n.kill().await;
    })
    .await
}

/// A peer whose streams open and are never answered: only the requests in
/// flight are timed, an idle stream is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_stream_requests_time_out_and_idle_streams_do_not() {
    use futures_util::StreamExt;
    use openraft::errors::RPCError;
    use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
    use std::pin::Pin;

    type Replies = Pin<Box<dyn futures_util::Stream<Item = Result<RaftMessage, Status>> + Send>>;
    struct Mute;
    #[tonic::async_trait]
    impl RaftRpc for Mute {
        type StreamAppendStream = Replies;
        type HeartbeatStream = Replies;
        async fn vote(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("mute"))
        }
        async fn pre_vote(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("mute"))
        }
        async fn append_entries(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("mute"))
        }
        async fn stream_append(&self, _: Request<Streaming<RaftMessage>>) -> Result<Response<Replies>, Status> {
            Ok(Response::new(Box::pin(futures_util::stream::pending())))
        }
        async fn heartbeat(&self, _: Request<Streaming<RaftMessage>>) -> Result<Response<Replies>, Status> {
            Ok(Response::new(Box::pin(futures_util::stream::pending())))
        }
        async fn snapshot(&self, _: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("mute"))
        }
        async fn transfer_leader(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("mute"))
        }
        async fn forward(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("mute"))
        }
    }

    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServer::new(Mute))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let peer = Member { name: "mute".into(), peer_urls: vec![format!("http://{addr}")], client_urls: vec![] };
        let mut net = PeerNetwork::new(1);
        let option = RPCOption::new(Duration::from_millis(400)); // soft_ttl 300 ms
        let soft_ttl = Duration::from_millis(300);

        // The stream stays idle for 2 soft_ttl, then one request goes out:
        // the timeout counts from that request, not from the stream's start.
        let mut repl = net.new_client(2, &peer).await;
        let idle = 2 * soft_ttl;
        let input = Box::pin(futures_util::stream::once(async move {
            tokio::time::sleep(idle).await;
            empty_append()
        }));
        let t = Instant::now();
        let mut replies = repl.stream_append(input, option.clone()).await.expect("stream opens");
        match replies.next().await {
            Some(Err(RPCError::Timeout(e))) => println!("replication timed out after {:?}: {e}", t.elapsed()),
            other => panic!("expected a Timeout, got {other:?}"),
        }
        let took = t.elapsed();
        assert!(took >= idle + soft_ttl - Duration::from_millis(10), "{took:?}");
        assert!(took < idle + soft_ttl + Duration::from_millis(300), "{took:?}");
        assert!(replies.next().await.is_none(), "the stream ends after its failure");
        drop(replies);

        // A heartbeat is timed from its send too.
        let mut hb = net.new_heartbeat_client(2, &peer).await;
        let t = Instant::now();
        match hb.append_entries(empty_append(), option.clone()).await {
            Err(RPCError::Timeout(e)) => println!("heartbeat timed out after {:?}: {e}", t.elapsed()),
            other => panic!("expected a Timeout, got {other:?}"),
        }
        assert!(t.elapsed() >= soft_ttl - Duration::from_millis(10), "{:?}", t.elapsed());
        assert!(t.elapsed() < soft_ttl + Duration::from_millis(300), "{:?}", t.elapsed());
        server.abort();
    })
    .await
}

/// A rolling upgrade: a follower from before `StreamAppend` and `Heartbeat`
/// (node 3) still gets every entry and answers heartbeats, over unary calls,
/// so with the other follower down the leader still commits and still
/// confirms its leadership for linearizable reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_without_the_stream_calls_is_sent_unary_calls() {
    bounded(async {
        let config = config(SnapshotPolicy::Never);
        let mut nodes = vec![
            start_node(1, config.clone()).await,
            start_node(2, config.clone()).await,
            start_node_serving(3, config, true, None).await,
        ];
        let members: BTreeMap<u64, Member> = nodes.iter().map(|n| (n.id, n.member())).collect();
        nodes[0].raft.initialize(members).await.expect("initialize");
        let mut leader = wait_leader(&nodes, None).await;
        if leader == 3 {
            node(&nodes, 3).raft.trigger().transfer_leader(1).await.expect("transfer leader");
            leader = wait_leader(&nodes, Some(3)).await;
        }
        let other = if leader == 1 { 2 } else { 1 };
        nodes.iter_mut().find(|n| n.id == other).unwrap().kill().await;
        println!("leader {leader}, node {other} killed, node 3 without stream calls");

        let last = write(node(&nodes, leader), 0..20, 10).await;
        wait_applied(node(&nodes, 3), last).await;
        assert!(applied_in_order(&node(&nodes, 3).store, 0..20));
        node(&nodes, leader)
            .raft
            .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
            .expect("leadership confirmed by node 3's heartbeat answers");
        shutdown_all(&mut nodes).await;
    })
    .await
}
