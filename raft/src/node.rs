//! A Cairn member's Raft node: openraft, the log store, the state machine
//! and the peer network put together, behind an API in etcd's terms
//! (propose a write, linearize a read, change membership, move the leader).
//! The server never names an openraft type.
//!
//! # Any member serves
//!
//! Writes, read-index requests and membership changes must run on the
//! leader. A follower forwards them over the peer network's `Forward` RPC
//! ([`ForwardRequest`]); the leader runs them as its own. Every call is bounded
//! by [`NodeConfig::request_timeout`]: while there is no leader, or the leader
//! changes, the call waits for the next one and retries until the deadline,
//! then fails with [`ClusterError::NoLeader`] (never had one) or
//! [`ClusterError::Timeout`] (the outcome is unknown), as etcd does.
//!
//! Proposals and read-index requests, the calls every client request makes,
//! travel in batches: a follower's [`Forwarder`] sends whatever queued up
//! while its previous batches were in flight as one `Forward` call, and the
//! leader runs the batch's calls concurrently (openraft then appends the
//! proposals together, and the reads share a quorum round). Under load this
//! turns thousands of forwarded calls a second into a few hundred.
//!
//! # Retried writes are applied once
//!
//! A proposal carries a random id, kept across retries. If the leader changes
//! after the first attempt was appended, the retry goes to the new leader; if
//! the first attempt commits after all, the state machine recognises the id
//! and skips the second (see [`crate::state_machine`]).
//!
//! # Reads
//!
//! A linearizable read asks the leader for a read index: openraft's
//! `ReadIndex` policy confirms leadership with a quorum, sharing one
//! heartbeat round among all reads waiting at that moment, and returns the
//! log index the read must observe. The member then waits until it has
//! applied that index and reads its own store. An isolated old leader cannot
//! confirm leadership, so it never serves a stale read; the read fails at the
//! deadline instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_api::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest};
use cairn_storage::{StorageError, Store, WriteRequest, WriteResponse};
use futures_util::StreamExt as _;
use openraft::errors::{ChangeMembershipError, ClientWriteError, LinearizableReadError, RaftError};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::storage::RaftLogReader as _;
use openraft::{ChangeMembers, Config, Instant as _, LinearizerOption, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::time::Instant;

use crate::log_store::RocksLogStore;
use crate::network::{CairnRaft, ForwardHandler, LeaderContact, PeerNetwork, RaftPeerService, RaftServer};
use crate::lessor::{KeepAlive, Lessor, CHECKPOINT_BATCH, REVOKE_RATE};
use crate::state_machine::{ApplyObserver, StateMachine};
use crate::types::{Member, NodeId, RaftRequest, RaftResponse};

/// How a member is set up; mostly etcd's flags.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This member's id (etcd's member id).
    pub id: NodeId,
    /// The cluster id, reported to members that join.
    pub cluster_id: u64,
    /// `--heartbeat-interval`.
    pub heartbeat: Duration,
    /// `--election-timeout`: a follower that stops hearing from the leader
    /// starts an election after a random wait in `[1.5 × election,
    /// 2 × election)` (etcd: `[election, 2 × election)`); see
    /// [`RaftNode::start`] for how openraft's timers make that up.
    pub election: Duration,
    /// `--snapshot-count`: entries applied between snapshots.
    pub snapshot_count: u64,
    /// `--experimental-snapshot-catchup-entries`: entries kept behind a
    /// snapshot so a slightly lagging follower needs no snapshot.
    pub snapshot_catchup_entries: u64,
    /// How long one client call may wait for a leader and an outcome.
    pub request_timeout: Duration,
    /// The Raft log's RocksDB directory.
    pub log_dir: PathBuf,
    /// Where snapshots are built, received and kept.
    pub snapshot_dir: PathBuf,
}

/// What clients of the node see go wrong, in etcd's categories. It crosses
/// the peer network (a follower reports the leader's verdict unchanged).
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ClusterError {
    #[error("no leader")]
    NoLeader,
    #[error("request timed out")]
    Timeout,
    #[error("not leader")]
    NotLeader,
    #[error("server stopped")]
    Stopped,
    #[error("member not found")]
    MemberNotFound,
    #[error("member ID already exists")]
    IdExists,
    #[error("peer URLs already exist")]
    PeerUrlsExist,
    #[error("member is not a learner")]
    NotLearner,
    #[error("learner is not in sync with the leader")]
    LearnerNotReady,
    #[error("too many learner members")]
    TooManyLearners,
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    #[error("the request would leave the cluster without voters")]
    EmptyMembership,
    #[error("cannot join: {0}")]
    Join(String),
    #[error("raft failure: {0}")]
    Fatal(String),
}

/// One member as membership lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub member: Member,
    pub is_learner: bool,
}

/// The node's view of Raft, for Status and response headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub committed_index: u64,
    pub is_learner: bool,
}

/// Calls a follower sends to the leader (or a joining member to anyone).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardRequest {
    Propose(RaftRequest),
    ReadIndex,
    AddMember { id: NodeId, peer_urls: Vec<String>, learner: bool },
    RemoveMember { id: NodeId },
    UpdateMember { id: NodeId, peer_urls: Vec<String> },
    PromoteMember { id: NodeId },
    /// A started member records its name and client URLs (etcd's publish).
    Publish { id: NodeId, member: Member },
    /// The membership as the leader knows it, and the cluster id; any
    /// member takes it (a member joining with `--initial-cluster-state
    /// existing` asks whichever it reaches).
    ListMembers,
    /// Renews a lease on the leader's clock.
    LeaseKeepAlive { id: i64 },
    /// A lease's remaining and granted TTL on the leader's clock.
    LeaseTimeToLive { id: i64 },
    /// Proposals and read-index requests queued together (see [`Forwarder`]).
    Batch(Vec<ForwardRequest>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    Proposed(RaftResponse),
    ReadIndex(u64),
    Members { cluster_id: u64, members: Vec<MemberInfo> },
    /// The TTL granted by a keep-alive; 0 = no such lease.
    LeaseTtl(i64),
    /// (remaining, granted) TTL; `None` = no such lease.
    LeaseStatus(Option<(i64, i64)>),
    /// One result per call of a [`ForwardRequest::Batch`], in order.
    Batch(Vec<ForwardResult>),
}

type ForwardResult = Result<ForwardReply, ClusterError>;

/// A learner may be promoted once its log has reached this share of the
/// leader's (etcd's `readyPercentThreshold`).
const PROMOTE_READY_RATIO: f64 = 0.9;
/// etcd 3.5's limit on learners in a cluster.
const MAX_LEARNERS: usize = 1;
/// Pause before retrying after a transient refusal (leader changing, a
/// membership change in progress).
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Bound on one forwarded call; the overall deadline still applies.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls waiting for a forwarded batch; a caller beyond this waits for room.
const FORWARD_QUEUE: usize = 16 * 1024;
/// Batches in flight to the leader at once. While all are out, calls queue
/// up and go together in the next batch.
const FORWARD_IN_FLIGHT: usize = 4;
/// Bounds on one batch: calls, and (estimated) encoded bytes, well under
/// the peer network's message limit.
const FORWARD_BATCH_CALLS: usize = 512;
const FORWARD_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Proposals waiting for the leader's log; a caller beyond this waits for room.
const PROPOSE_QUEUE: usize = 16 * 1024;
/// Groups of proposals on their way to being applied at once (see
/// [`Proposer`]). One measured best (bench/README.md).
const PROPOSE_IN_FLIGHT: usize = 1;
/// Bounds on one group of proposals handed to Raft at once: entries, and
/// payload bytes.
const PROPOSE_BATCH_CALLS: usize = 1024;
const PROPOSE_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A running Raft member. Cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NodeConfig,
    raft: CairnRaft,
    network: PeerNetwork,
    forwarder: Forwarder,
    proposer: Proposer,
    store: Arc<Store>,
    leader_contact: Arc<LeaderContact>,
    lessor: parking_lot::Mutex<Lessor>,
    /// Held by the membership call running on this leader (see
    /// [`RaftNode::change_members`]).
    membership_turn: tokio::sync::Mutex<()>,
    /// Orders lease checkpoints in the log (see [`RaftNode::clear_lease_checkpoint`]).
    checkpoint_turn: tokio::sync::Mutex<()>,
    /// Until when this member, restarted with a vote it may have given a
    /// leader, neither campaigns nor grants votes (see
    /// [`RaftNode::read_policy`]); `None` for a member that never voted.
    votes_open_at: Option<Instant>,
    /// How old the last quorum acknowledgement of this leader's messages
    /// may be for a linearizable read to skip a heartbeat round (see
    /// [`RaftNode::read_policy`]).
    read_lease: Duration,
}

/// A forwarded call whose transport failed: it is unknown whether it
/// arrived. Before the caller's deadline it is retried (with the same
/// request id) as after a leader change; at the deadline its outcome is
/// unknown, which etcd reports as a timeout.
fn forward_failed(deadline: Instant) -> ClusterError {
    if Instant::now() >= deadline {
        ClusterError::Timeout
    } else {
        ClusterError::NotLeader
    }
}

fn fatal<E: std::fmt::Display>(e: E) -> ClusterError {
    ClusterError::Fatal(e.to_string())
}

/// Lets a restarted member campaign again once it has kept the leader
/// lease it may have given before the restart: at `at` (one election
/// timeout after it started), or at once when it turns out to be the only
/// voter, whom no other member's leadership can depend on.
async fn enable_elections(raft: CairnRaft, at: Instant, lease: Duration) {
    // The first metrics openraft reports carry the membership it recovered.
    let recovered = raft
        .wait(Some(lease))
        .metrics(|m| m.membership_config.membership().voter_ids().next().is_some(), "membership recovered")
        .await;
    let alone = recovered.is_ok_and(|m| m.membership_config.membership().voter_ids().count() == 1);
    if !alone {
        tokio::time::sleep_until(at).await;
    }
    raft.runtime_config().elect(true);
}

impl RaftNode {
    /// Opens the log store, recovers the state machine over `store` and
    /// starts Raft. The node serves nothing until its peer service is
    /// mounted ([`RaftNode::peer_service`]) and, for a new cluster,
    /// [`RaftNode::bootstrap`] is called.
    pub async fn start(
        cfg: NodeConfig,
        store: Arc<Store>,
        observer: Option<Arc<dyn ApplyObserver>>,
    ) -> Result<RaftNode, ClusterError> {
        let heartbeat = cfg.heartbeat.as_millis().max(1) as u64;
        let election = (cfg.election.as_millis() as u64).max(heartbeat * 4);
        // openraft starts an election once `leader lease + sampled timeout`
        // has passed since the leader was last heard from, where the lease
        // is `election_timeout_max` and the timeout is sampled in
        // `[min, max)`. etcd's followers campaign after `[E, 2E)` and refuse
        // votes for `E` after hearing from a leader. With max = E and
        // min = E/2 the lease is etcd's E and elections start after
        // `[1.5E, 2E)`; the former [E, 2E) timer gave [3E, 4E), a 3-4 s
        // failover at the default 1 s.
        // Entries per replication message: openraft's most. The log
        // reader's byte budget (`log_store::READ_BUDGET_BYTES`) is what
        // bounds a message; a count derived from the largest possible
        // entry (31 at the default `--max-request-bytes`) cut one leader
        // group into 6-8 messages per follower at 1,000 clients.
        let max_payload_entries = 4096;
        let config = Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: heartbeat,
            election_timeout_min: election / 2,
            election_timeout_max: election,
            install_snapshot_timeout: 30_000,
            max_payload_entries,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(1)),
            max_in_snapshot_log_to_keep: cfg.snapshot_catchup_entries,
            enable_pre_vote: Some(true),
            // Until `votes_open_at` below has decided whether this member
            // must sit out its leader lease first.
            enable_elect: false,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(fatal)?);
        let mut log_store = RocksLogStore::open(&cfg.log_dir).map_err(fatal)?;
        let restarted = log_store.read_vote().await.map_err(fatal)?.is_some_and(|v| v.leader_id.term > 0);
        let lease = Duration::from_millis(election);
        let votes_open_at = restarted.then(|| Instant::now() + lease);
        let mut sm = StateMachine::open(store.clone(), cfg.snapshot_dir.clone()).map_err(fatal)?;
        if let Some(observer) = observer {
            sm = sm.with_observer(observer);
        }
        let network = PeerNetwork::new(cfg.id);
        let raft = CairnRaft::new(cfg.id, config, network.clone(), log_store, sm).await.map_err(fatal)?;
        match votes_open_at {
            None => raft.runtime_config().elect(true),
            Some(at) => {
                tokio::spawn(enable_elections(raft.clone(), at, lease));
            }
        }
        let read_lease = lease / 2;
        let leader_contact = Arc::default();
        let lessor = Default::default();
        let forwarder = Forwarder::start(network.clone());
        let proposer = Proposer::start(raft.clone());
        let node = RaftNode { inner: Arc::new(Inner {
            cfg,
            raft,
            network,
            forwarder,
            proposer,
            store,
            leader_contact,
            lessor,
            membership_turn: Default::default(),
            checkpoint_turn: Default::default(),
            votes_open_at,
            read_lease,
        }) };
        tokio::spawn(node.clone().run_lessor());
        Ok(node)
    }

    /// The `cairnraftpb.Raft` service to mount on the peer listener.
    pub fn peer_service(&self) -> RaftServer<RaftPeerService> {
        let handler: Arc<dyn ForwardHandler> = Arc::new(self.clone());
        RaftPeerService::new(self.id(), self.inner.raft.clone(), self.inner.cfg.snapshot_dir.clone(), Some(handler))
            .with_leader_contact(self.inner.leader_contact.clone())
            .with_votes_closed_until(self.inner.votes_open_at)
            .into_server()
    }

    pub fn id(&self) -> NodeId {
        self.inner.cfg.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.cfg.cluster_id
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Forms a new cluster from `members` (every initial member calls this
    /// with the same map; it is a no-op once the node has any Raft state).
    pub async fn bootstrap(&self, members: BTreeMap<NodeId, Member>) -> Result<(), ClusterError> {
        if self.inner.raft.is_initialized().await.map_err(fatal)? {
            return Ok(());
        }
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another member's initial entry reached us first: the same membership.
            Err(RaftError::APIError(e)) => {
                tracing::info!(error = %e, "cluster already initialized");
                Ok(())
            }
            Err(e) => Err(fatal(e)),
        }
    }

    /// Asks the members at `peer_urls` for the membership (for a member
    /// joining an existing cluster). Returns the cluster id and members.
    pub async fn discover(peer_urls: &[String]) -> Result<(u64, Vec<MemberInfo>), ClusterError> {
        let network = PeerNetwork::new(0);
        let req = bincode::serialize(&ForwardRequest::ListMembers).map_err(fatal)?;
        let mut last = String::from("no peer URL given");
        for url in peer_urls {
            let node = Member { peer_urls: vec![url.clone()], ..Default::default() };
            match network.forward(0, &node, req.clone(), FORWARD_TIMEOUT).await {
                Ok(reply) => match bincode::deserialize::<ForwardResult>(&reply) {
                    Ok(Ok(ForwardReply::Members { cluster_id, members })) => return Ok((cluster_id, members)),
                    Ok(Ok(other)) => last = format!("{url}: unexpected reply {other:?}"),
                    Ok(Err(e)) => last = format!("{url}: {e}"),
                    Err(e) => last = format!("{url}: undecodable reply: {e}"),
                },
                Err(status) => last = format!("{url}: {}", status.message()),
            }
        }
        Err(ClusterError::Join(format!("no existing member answered ({last})")))
    }

    /// Raft's state as this member sees it.
    pub fn status(&self) -> RaftStatus {
        let rx = self.inner.raft.metrics();
        let m = rx.borrow_watched();
        // A member that is not (yet) a voter in the membership it knows — a
        // learner, or a joining member that has not caught up — serves only
        // what a learner may.
        let is_learner = !m.membership_config.membership().voter_ids().any(|id| id == self.id());
        // A leader counts only while it is in touch with a quorum (leader:
        // acknowledged within the election timeout; follower: heard from it
        // within that time), as etcd's raft forgets a leader when its
        // election timer fires.
        let lease = self.inner.cfg.election;
        let leader = match m.state {
            ServerState::Leader => {
                let acked = m.last_quorum_acked.as_ref().map(|t| t.elapsed());
                let alone = m.membership_config.membership().voter_ids().count() == 1;
                (alone || acked.is_some_and(|d| d < lease)).then_some(self.id())
            }
            _ => m.current_leader.filter(|_| self.inner.leader_contact.since().is_some_and(|d| d < lease)),
        };
        RaftStatus {
            leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            committed_index: m.local_committed.map_or(0, |l| l.index),
            is_learner,
        }
    }

    /// Raft's current term (for response headers).
    pub fn term(&self) -> u64 {
        self.inner.raft.metrics().borrow_watched().current_term
    }

    pub fn is_learner(&self) -> bool {
        self.status().is_learner
    }

    /// The members in the latest membership this node knows.
    pub fn members(&self) -> Vec<MemberInfo> {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        membership
            .nodes()
            .map(|(id, member)| MemberInfo { id: *id, member: member.clone(), is_learner: learners.contains(id) })
            .collect()
    }

    fn leader(&self) -> Option<(NodeId, Member)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }

    /// Waits for a leader until `deadline`.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<(NodeId, Member), ClusterError> {
        let mut rx = self.inner.raft.metrics();
        loop {
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            if rx.borrow_watched().running_state.is_err() {
                return Err(ClusterError::Stopped);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Err(ClusterError::NoLeader),
                Ok(Err(_)) => return Err(ClusterError::Stopped),
                Ok(Ok(())) => {}
            }
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.cfg.request_timeout
    }

    /// Runs `req` on the leader: locally when this node leads, forwarded
    /// otherwise; retried (same request) across leader changes until the
    /// deadline.
    async fn on_leader(&self, req: ForwardRequest) -> ForwardResult {
        let deadline = self.deadline();
        let mut attempted = false;
        // An attempt that ended with the leader gone may have taken effect.
        let mut maybe_applied = false;
        loop {
            let (leader, node) = match self.wait_for_leader(deadline).await {
                Ok(l) => l,
                Err(ClusterError::NoLeader) if attempted => return Err(ClusterError::Timeout),
                Err(e) => return Err(e),
            };
            attempted = true;
            let result = if leader == self.id() {
                // A leader cut off from its quorum cannot commit; the caller
                // hears "timed out" at the deadline, never hangs.
                tokio::time::timeout_at(deadline, self.handle_local(req.clone()))
                    .await
                    .unwrap_or(Err(ClusterError::Timeout))
            } else if matches!(req, ForwardRequest::Propose(_) | ForwardRequest::ReadIndex) {
                self.inner.forwarder.call(leader, node, req.clone(), deadline).await
            } else {
                self.forward(leader, &node, &req, deadline).await
            };
            match result {
                Err(ClusterError::NotLeader) | Err(ClusterError::NoLeader) => {
                    maybe_applied = true;
                    if tokio::time::timeout_at(deadline, tokio::time::sleep(RETRY_PAUSE)).await.is_err() {
                        return Err(ClusterError::Timeout);
                    }
                }
                Err(e) if maybe_applied && done_by_earlier_attempt(&req, &e) => {
                    return Ok(self.members_reply_without(&req));
                }
                other => return other,
            }
        }
    }

    async fn forward(&self, leader: NodeId, node: &Member, req: &ForwardRequest, deadline: Instant) -> ForwardResult {
        let data = bincode::serialize(req).map_err(fatal)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClusterError::Timeout);
        }
        match self.inner.network.forward(leader, node, data, left.min(FORWARD_TIMEOUT)).await {
            Ok(reply) => bincode::deserialize::<ForwardResult>(&reply).map_err(fatal)?,
            Err(status) => {
                tracing::debug!(leader, error = %status, "forwarding to the leader failed");
                Err(forward_failed(deadline))
            }
        }
    }

    /// Proposes a write and returns its outcome once applied on this member's
    /// leader. `Ok(Err(_))` is a request-level error (e.g. compacted).
    pub async fn propose(&self, req: &WriteRequest) -> Result<Result<WriteResponse, StorageError>, ClusterError> {
        #[cfg(feature = "bug-switches")]
        if let WriteRequest::LeaseRevoke(r) = req {
            if cairn_storage::bugs::is_on(cairn_storage::bugs::Bug::LeaseTwoRevisions) {
                self.delete_half_of_leased_keys(r.id).await?;
            }
        }
        self.propose_once(req).await
    }

    /// Bug switch `lease-two-revisions`: before a lease's revocation is
    /// proposed, deletes the first half of its keys (as this member knows
    /// them) in a revision of their own, so the revocation deletes only the
    /// rest. Readers and watchers then see the lease's keys go in two steps.
    #[cfg(feature = "bug-switches")]
    async fn delete_half_of_leased_keys(&self, lease: i64) -> Result<(), ClusterError> {
        use cairn_api::etcdserverpb::{request_op::Request, DeleteRangeRequest, RequestOp, TxnRequest};

        let keys = self.inner.store.lease(lease).map(|l| l.keys).unwrap_or_default();
        if keys.len() < 2 {
            return Ok(());
        }
        let success = keys[..keys.len() / 2]
            .iter()
            .map(|key| RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest { key: key.clone(), ..Default::default() })),
            })
            .collect();
        let txn = WriteRequest::Txn(TxnRequest { success, ..Default::default() });
        if let Err(e) = self.propose_once(&txn).await? {
            tracing::warn!(lease, error = %e, "lease-two-revisions: deleting the first half of the lease's keys");
        }
        Ok(())
    }

    async fn propose_once(&self, req: &WriteRequest) -> Result<Result<WriteResponse, StorageError>, ClusterError> {
        let id = loop {
            let id = rand::random::<u64>();
            if id != 0 {
                break id;
            }
        };
        let req = ForwardRequest::Propose(RaftRequest { id, payload: req.encode() });
        match self.on_leader(req).await? {
            ForwardReply::Proposed(RaftResponse::Written(b)) => Ok(Ok(WriteResponse::decode(&b).map_err(fatal)?)),
            ForwardReply::Proposed(RaftResponse::Rejected(b)) => Ok(Err(StorageError::decode(&b))),
            // Applied once already; that response is gone, so the outcome
            // is reported as unknown, as a lost response would be.
            ForwardReply::Proposed(RaftResponse::Duplicate { .. }) => Err(ClusterError::Timeout),
            other => Err(fatal(format!("unexpected reply to a proposal: {other:?}"))),
        }
    }

    /// Returns once this member's state machine reflects every write
    /// acknowledged before the call (a linearizable read may follow).
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        let deadline = self.deadline();
        let index = match self.on_leader(ForwardRequest::ReadIndex).await? {
            ForwardReply::ReadIndex(i) => i,
            other => return Err(fatal(format!("unexpected reply to a read index: {other:?}"))),
        };
        self.await_applied(Some(index), deadline, "read barrier").await
    }

    /// Waits until this node has applied `index`, at the latest by `deadline`.
    async fn await_applied(&self, index: Option<u64>, deadline: Instant, what: &str) -> Result<(), ClusterError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.inner.raft.wait(Some(left)).applied_index_at_least(index, what).await {
            Ok(_) => Ok(()),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(ClusterError::Timeout),
            Err(_) => Err(ClusterError::Stopped),
        }
    }

    /// Waits until this node has applied every entry it knows committed,
    /// as etcd's leader does before answering a lease's time to live
    /// (`waitAppliedIndex`). A follower can apply a committed revoke, and a
    /// client see it in a watch, before the leader has applied it itself;
    /// without this the leader would still report the lease alive.
    async fn await_applied_committed(&self) -> Result<(), ClusterError> {
        let committed = self.inner.raft.metrics().borrow_watched().local_committed.map(|c| c.index);
        self.await_applied(committed, self.deadline(), "applied up to the commit").await
    }

    pub async fn add_member(&self, id: NodeId, peer_urls: Vec<String>, learner: bool) -> Result<Vec<MemberInfo>, ClusterError> {
        self.membership_call(ForwardRequest::AddMember { id, peer_urls, learner }).await
    }

    pub async fn remove_member(&self, id: NodeId) -> Result<Vec<MemberInfo>, ClusterError> {
        self.membership_call(ForwardRequest::RemoveMember { id }).await
    }

    pub async fn update_member(&self, id: NodeId, peer_urls: Vec<String>) -> Result<Vec<MemberInfo>, ClusterError> {
        self.membership_call(ForwardRequest::UpdateMember { id, peer_urls }).await
    }

    pub async fn promote_member(&self, id: NodeId) -> Result<Vec<MemberInfo>, ClusterError> {
        self.membership_call(ForwardRequest::PromoteMember { id }).await
    }

    /// Records this member's name and client URLs in the membership if they
    /// differ (etcd's publish), retrying until it succeeds or the node stops.
    pub async fn publish(&self, me: Member) {
        loop {
            let current = self.members().into_iter().find(|m| m.id == self.id());
            match current {
                Some(m) if m.member.name == me.name && m.member.client_urls == me.client_urls => return,
                Some(m) => {
                    let member = Member { peer_urls: m.member.peer_urls, ..me.clone() };
                    match self.membership_call(ForwardRequest::Publish { id: self.id(), member }).await {
                        Ok(_) => return,
                        Err(ClusterError::Stopped) | Err(ClusterError::MemberNotFound) => return,
                        Err(e) => tracing::debug!(error = %e, "publishing member attributes; will retry"),
                    }
                }
                None => {}
            }
            let mut rx = self.inner.raft.metrics();
            if rx.borrow_watched().running_state.is_err() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
        }
    }

    async fn membership_call(&self, req: ForwardRequest) -> Result<Vec<MemberInfo>, ClusterError> {
        match self.on_leader(req).await? {
            ForwardReply::Members { members, .. } => Ok(members),
            other => Err(fatal(format!("unexpected reply to a membership change: {other:?}"))),
        }
    }

    /// Hands leadership to `target`; must be called on the leader (etcd's
    /// MoveLeader). Returns once `target` leads, or times out.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<(), ClusterError> {
        let status = self.status();
        if status.leader != Some(self.id()) {
            return Err(ClusterError::NotLeader);
        }
        let voters: BTreeSet<NodeId> = self.inner.raft.voter_ids().collect();
        if !voters.contains(&target) {
            return Err(ClusterError::BadLeaderTransferee);
        }
        if target == self.id() {
            return Ok(());
        }
        self.inner.raft.trigger().transfer_leader(target).await.map_err(fatal)?;
        let deadline = self.deadline();
        let mut rx = self.inner.raft.metrics();
        loop {
            if rx.borrow_watched().current_leader == Some(target) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Err(ClusterError::Timeout),
                Ok(Err(_)) => return Err(ClusterError::Stopped),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Renews lease `id` on the leader's clock; returns its TTL, 0 if there
    /// is no such lease (etcd's keep-alive answer).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, ClusterError> {
        match self.on_leader(ForwardRequest::LeaseKeepAlive { id }).await? {
            ForwardReply::LeaseTtl(ttl) => Ok(ttl),
            other => Err(fatal(format!("unexpected reply to a keep-alive: {other:?}"))),
        }
    }

    /// (remaining, granted) TTL of lease `id` on the leader's clock.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<Option<(i64, i64)>, ClusterError> {
        match self.on_leader(ForwardRequest::LeaseTimeToLive { id }).await? {
            ForwardReply::LeaseStatus(s) => Ok(s),
            other => Err(fatal(format!("unexpected reply to a time-to-live: {other:?}"))),
        }
    }

    /// The leader's lease clock: every tick, follow leadership changes and
    /// the store's leases, propose revokes of expired leases (at most
    /// [`REVOKE_RATE`] per second) and, periodically, checkpoints.
    async fn run_lessor(self) {
        const TICK: Duration = Duration::from_millis(500);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.inner.raft.metrics().borrow_watched().running_state.is_err() {
                return;
            }
            let leading = self.status().leader == Some(self.id());
            // Held from taking the remaining TTLs until they are committed,
            // so that a renewal's clearing lands after them in the log.
            let checkpoint_turn = self.inner.checkpoint_turn.lock().await;
            let leases = self.inner.store.leases();
            let now = std::time::Instant::now();
            let (expired, checkpoint) = {
                let mut lessor = self.inner.lessor.lock();
                if !leading {
                    if lessor.is_primary() {
                        lessor.demote();
                    }
                    continue;
                }
                if !lessor.is_primary() {
                    lessor.promote(&leases, self.inner.cfg.election, now);
                } else {
                    lessor.sync(&leases, now);
                }
                let max = REVOKE_RATE * TICK.as_millis() as usize / 1000;
                (lessor.expired(now, max, self.inner.cfg.request_timeout), lessor.checkpoint(now))
            };
            let revokes = expired.into_iter().map(|id| {
                let node = self.clone();
                async move {
                    let req = WriteRequest::LeaseRevoke(LeaseRevokeRequest { id });
                    match node.propose(&req).await {
                        Ok(Ok(_)) | Ok(Err(StorageError::LeaseNotFound)) => {}
                        Ok(Err(e)) => tracing::warn!(lease = id, error = %e, "revoking an expired lease"),
                        Err(e) => tracing::debug!(lease = id, error = %e, "revoking an expired lease; will retry"),
                    }
                }
            });
            let Some(checkpoint) = checkpoint else {
                drop(checkpoint_turn);
                futures_util::future::join_all(revokes).await;
                continue;
            };
            for chunk in checkpoint.chunks(CHECKPOINT_BATCH) {
                let checkpoints = chunk.iter().map(|(id, remaining_ttl)| LeaseCheckpoint { id: *id, remaining_ttl: *remaining_ttl }).collect();
                let req = WriteRequest::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints });
                if let Err(e) = self.propose(&req).await {
                    tracing::debug!(error = %e, "lease checkpoint");
                }
            }
            self.inner.lessor.lock().checkpoint_done();
            drop(checkpoint_turn);
            futures_util::future::join_all(revokes).await;
        }
    }

    /// Answers a keep-alive of a lease past its deadline once its revoke has
    /// taken effect here (TTL 0: gone, as etcd answers). If this member
    /// stops leading first, the caller retries on the next leader, which
    /// decides afresh.
    async fn await_lease_revoked(&self, id: i64) -> ForwardResult {
        let deadline = self.deadline();
        while self.inner.store.lease(id).is_some() {
            if !self.inner.lessor.lock().is_primary() {
                return Err(ClusterError::NotLeader);
            }
            if tokio::time::timeout_at(deadline, tokio::time::sleep(RETRY_PAUSE)).await.is_err() {
                return Err(ClusterError::Timeout);
            }
        }
        Ok(ForwardReply::LeaseTtl(0))
    }

    /// Clears lease `id`'s checkpointed remaining TTL (a checkpoint of 0:
    /// "resume from the full TTL") after any checkpoint in flight, and
    /// returns once that is committed and applied here.
    async fn clear_lease_checkpoint(&self, id: i64) -> Result<(), ClusterError> {
        let Ok(_turn) = tokio::time::timeout_at(self.deadline(), self.inner.checkpoint_turn.lock()).await else {
            return Err(ClusterError::Timeout);
        };
        let checkpoints = vec![LeaseCheckpoint { id, remaining_ttl: 0 }];
        let payload = WriteRequest::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints }).encode();
        let request = RaftRequest { id: rand::random::<u64>().max(1), payload };
        match self.inner.raft.client_write(request).await {
            // Rejected: the lease is gone (revoked meanwhile), nothing to clear.
            Ok(_) => Ok(()),
            Err(e) => Err(write_error(e)),
        }
    }

    /// Stops Raft (the log store is flushed and closed when dropped).
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    /// How the leader confirms a linearizable read: from its lease when a
    /// quorum has acknowledged heartbeats (or appends) sent less than
    /// `read_lease`, half an election timeout, ago; otherwise with a new
    /// heartbeat round, as ReadIndex does, waited for up to one election
    /// timeout. The round is most of what a lone client's linearizable
    /// read costs (`bench/README.md`).
    ///
    /// Why the lease is sound: a member that accepts a leader's message
    /// grants no vote and starts no (pre-)vote for one election timeout
    /// after receiving it (openraft's follower lease). A message is
    /// stamped when sent, so once a quorum has acknowledged messages sent
    /// at `t`, no other leader can win before `t` + one election timeout,
    /// and until `t` + half of it this leader is the only one. The other
    /// half is the margin for members' clocks running at different rates.
    /// A restarted member has lost the lease it kept in memory, so it
    /// keeps it by waiting ([`enable_elections`], and its peer service
    /// refuses votes until `votes_open_at`). A leadership transfer's vote
    /// ignores leases, but a leader that starts a transfer answers no more
    /// reads.
    fn read_policy(&self) -> LinearizerOption {
        LinearizerOption::new(Some(self.inner.read_lease), true)
    }

    /// Runs a call that must execute on the leader, here. Answers
    /// `NotLeader` when this node does not lead (any more).
    async fn handle_local(&self, req: ForwardRequest) -> ForwardResult {
        let raft = &self.inner.raft;
        match req {
            ForwardRequest::Propose(r) => self.inner.proposer.propose(r).await,
            ForwardRequest::ReadIndex => match raft.ensure_linearizable(self.read_policy()).await {
                Ok(read_log_id) => Ok(ForwardReply::ReadIndex(read_log_id.index())),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => Err(ClusterError::NotLeader),
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => Err(ClusterError::NotLeader),
                Err(e) => Err(fatal(e)),
            },
            ForwardRequest::ListMembers => Ok(self.members_reply()),
            ForwardRequest::Batch(_) => Err(fatal("a batch is answered call by call, never run as one")),
            ForwardRequest::LeaseKeepAlive { id } => {
                let renewal = {
                    let mut lessor = self.inner.lessor.lock();
                    if !lessor.is_primary() {
                        // Leading, but the clock has not taken over yet.
                        return Err(ClusterError::NotLeader);
                    }
                    lessor.keep_alive(&self.inner.store, id, std::time::Instant::now())
                };
                let renewal = match renewal {
                    None => return Ok(ForwardReply::LeaseTtl(0)),
                    Some(KeepAlive::Expiring) => return self.await_lease_revoked(id).await,
                    Some(KeepAlive::Renewed(renewal)) => renewal,
                };
                if renewal.clear_checkpoint {
                    self.clear_lease_checkpoint(id).await?;
                }
                Ok(ForwardReply::LeaseTtl(renewal.ttl))
            }
            ForwardRequest::LeaseTimeToLive { id } => {
                self.await_applied_committed().await?;
                let lessor = self.inner.lessor.lock();
                if !lessor.is_primary() {
                    return Err(ClusterError::NotLeader);
                }
                Ok(ForwardReply::LeaseStatus(lessor.time_to_live(&self.inner.store, id, std::time::Instant::now())))
            }
            req @ (ForwardRequest::AddMember { .. }
            | ForwardRequest::RemoveMember { .. }
            | ForwardRequest::UpdateMember { .. }
            | ForwardRequest::Publish { .. }
            | ForwardRequest::PromoteMember { .. }) => {
                // A change takes several entries, each awaited in turn (the
                // joint membership, then the final one; a removal then drops
                // the node). Once begun it runs to its end even if the caller
                // goes away (a client's deadline, a dropped forwarding call):
                // stopping between them would leave a membership no one
                // asked for, such as a joint one that needs both majorities.
                let node = self.clone();
                tokio::spawn(async move { node.change_members(req).await }).await.unwrap_or_else(|e| Err(fatal(e)))
            }
        }
    }

    /// Runs one membership call on the leader, one at a time: each retries
    /// while another change is in flight, so running them in turn is what
    /// Raft would do anyway, without the polling.
    async fn change_members(&self, req: ForwardRequest) -> ForwardResult {
        let Ok(_turn) = tokio::time::timeout_at(self.deadline(), self.inner.membership_turn.lock()).await else {
            return Err(ClusterError::Timeout);
        };
        match req {
            ForwardRequest::AddMember { id, peer_urls, learner } => {
                let members = self.members();
                if let Some(existing) = members.iter().find(|m| m.id == id) {
                    // The ID is drawn once per client call, so this is the
                    // same call retried after a leader change took its
                    // answer: finish it rather than refuse it.
                    if existing.member.peer_urls != peer_urls {
                        return Err(ClusterError::IdExists);
                    }
                    if existing.is_learner && !learner {
                        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
                    }
                    return Ok(self.members_reply());
                }
                if members.iter().any(|m| m.member.peer_urls.iter().any(|u| peer_urls.contains(u))) {
                    return Err(ClusterError::PeerUrlsExist);
                }
                if learner && members.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
                    return Err(ClusterError::TooManyLearners);
                }
                let member = Member { name: String::new(), peer_urls, client_urls: Vec::new() };
                let nodes = BTreeMap::from([(id, member)]);
                // A voter is added by one change (joint, then final
                // membership), never as a learner first and promoted by a
                // second call that a leader change could cut off.
                let change = if learner { ChangeMembers::AddNodes(nodes) } else { ChangeMembers::AddVoters(nodes) };
                self.change(change).await?;
                Ok(self.members_reply())
            }
            ForwardRequest::RemoveMember { id } => {
                let m = self.members().into_iter().find(|m| m.id == id).ok_or(ClusterError::MemberNotFound)?;
                if m.is_learner {
                    self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await?;
                } else {
                    self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
                    if self.members().iter().any(|m| m.id == id) {
                        self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await?;
                    }
                }
                Ok(self.members_reply())
            }
            ForwardRequest::UpdateMember { id, peer_urls } => {
                let members = self.members();
                let m = members.iter().find(|m| m.id == id).ok_or(ClusterError::MemberNotFound)?;
                if members.iter().any(|o| o.id != id && o.member.peer_urls.iter().any(|u| peer_urls.contains(u))) {
                    return Err(ClusterError::PeerUrlsExist);
                }
                let member = Member { peer_urls, ..m.member.clone() };
                self.change(ChangeMembers::SetNodes(BTreeMap::from([(id, member)]))).await?;
                Ok(self.members_reply())
            }
            ForwardRequest::Publish { id, member } => {
                if !self.members().iter().any(|m| m.id == id) {
                    return Err(ClusterError::MemberNotFound);
                }
                self.change(ChangeMembers::SetNodes(BTreeMap::from([(id, member)]))).await?;
                Ok(self.members_reply())
            }
            ForwardRequest::PromoteMember { id } => {
                let m = self.members().into_iter().find(|m| m.id == id).ok_or(ClusterError::MemberNotFound)?;
                if !m.is_learner {
                    return Err(ClusterError::NotLearner);
                }
                let (matched, last) = {
                    let metrics = self.inner.raft.metrics();
                    let metrics = metrics.borrow_watched();
                    let matched = metrics
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .map_or(0, |l| l.index);
                    (matched, metrics.last_log_index.unwrap_or(0))
                };
                if (matched as f64) < (last as f64) * PROMOTE_READY_RATIO {
                    return Err(ClusterError::LearnerNotReady);
                }
                self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
                Ok(self.members_reply())
            }
            other => Err(fatal(format!("{other:?} is not a membership call"))),
        }
    }

    fn members_reply(&self) -> ForwardReply {
        ForwardReply::Members { cluster_id: self.cluster_id(), members: self.members() }
    }

    /// The answer to a retried removal that an earlier attempt carried out:
    /// the membership without the removed member (this member may not have
    /// applied the removal yet).
    fn members_reply_without(&self, req: &ForwardRequest) -> ForwardReply {
        let mut members = self.members();
        if let ForwardRequest::RemoveMember { id } = req {
            members.retain(|m| m.id != *id);
        }
        ForwardReply::Members { cluster_id: self.cluster_id(), members }
    }

    /// One membership change, retried while another one is still in flight.
    async fn change(&self, change: ChangeMembers<NodeId, Member>) -> Result<(), ClusterError> {
        let deadline = self.deadline();
        loop {
            match self.inner.raft.change_membership(change.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => match e {
                    ChangeMembershipError::InProgress(_) | ChangeMembershipError::UncommittedLeaderLog(_) => {
                        if tokio::time::timeout_at(deadline, tokio::time::sleep(RETRY_PAUSE)).await.is_err() {
                            return Err(ClusterError::Timeout);
                        }
                    }
                    ChangeMembershipError::EmptyMembership(_) => return Err(ClusterError::EmptyMembership),
                    ChangeMembershipError::LearnerNotFound(_) => return Err(ClusterError::MemberNotFound),
                    other => return Err(fatal(other)),
                },
                Err(e) => return Err(write_error(e)),
            }
        }
    }
}

/// Whether `error`, answering a retry of `req`, is what the retry sees when
/// an earlier attempt of the same call (whose answer a leader change took)
/// already made the change: the member it removed is gone, the learner it
/// promoted is a voter. Adding is made idempotent by its member ID instead.
fn done_by_earlier_attempt(req: &ForwardRequest, error: &ClusterError) -> bool {
    matches!(
        (req, error),
        (ForwardRequest::RemoveMember { .. }, ClusterError::MemberNotFound)
            | (ForwardRequest::PromoteMember { .. }, ClusterError::NotLearner)
    )
}

fn write_error(e: RaftError<crate::TypeConfig, ClientWriteError<crate::TypeConfig>>) -> ClusterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ClusterError::NotLeader,
        // The entry may still commit under the new leader; the retry's id
        // makes that harmless.
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => ClusterError::NotLeader,
        RaftError::Fatal(_) => ClusterError::Stopped,
        other => fatal(other),
    }
}

#[tonic::async_trait]
impl ForwardHandler for RaftNode {
    async fn handle(&self, request: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
        let req: ForwardRequest = bincode::deserialize(&request)
            .map_err(|e| tonic::Status::invalid_argument(format!("undecodable forwarded call: {e}")))?;
        let result = match req {
            // A joining member takes its ID from this list, found by its
            // peer URL. A member that lags (just restarted, cut off) may
            // still list the removed member that had that URL before, so
            // the list comes from the leader.
            ForwardRequest::ListMembers => match self.leader() {
                Some((leader, _)) if leader == self.id() => Ok(self.members_reply()),
                Some((leader, node)) => {
                    let deadline = Instant::now() + FORWARD_TIMEOUT;
                    self.forward(leader, &node, &ForwardRequest::ListMembers, deadline).await
                }
                None => Err(ClusterError::NoLeader),
            },
            ForwardRequest::Batch(calls) if self.status().leader == Some(self.id()) => {
                let timeout = self.inner.cfg.request_timeout;
                let results = futures_util::future::join_all(calls.into_iter().map(|call| async move {
                    match call {
                        ForwardRequest::Propose(_) | ForwardRequest::ReadIndex => {
                            tokio::time::timeout(timeout, self.handle_local(call)).await.unwrap_or(Err(ClusterError::Timeout))
                        }
                        other => Err(fatal(format!("{other:?} cannot be batched"))),
                    }
                }))
                .await;
                Ok(ForwardReply::Batch(results))
            }
            req if self.status().leader == Some(self.id()) => {
                tokio::time::timeout(self.inner.cfg.request_timeout, self.handle_local(req))
                    .await
                    .unwrap_or(Err(ClusterError::Timeout))
            }
            _ => Err(ClusterError::NotLeader),
        };
        bincode::serialize(&result).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// A call waiting to be forwarded in a batch.
struct Queued {
    leader: NodeId,
    node: Member,
    call: ForwardRequest,
    deadline: Instant,
    reply: tokio::sync::oneshot::Sender<ForwardResult>,
}

/// Sends a follower's proposals and read-index requests to the leader in
/// batches: one task takes what has queued up, at most
/// [`FORWARD_IN_FLIGHT`] batches are out at once, and each caller gets its
/// own call's result. A transport failure fails every call in the batch as
/// "not leader" (its outcome unknown; the caller retries with the same
/// request id), as it would have failed each call sent alone.
struct Forwarder {
    queue: tokio::sync::mpsc::Sender<Queued>,
}

impl Forwarder {
    fn start(network: PeerNetwork) -> Forwarder {
        let (queue, rx) = tokio::sync::mpsc::channel(FORWARD_QUEUE);
        tokio::spawn(Self::run(network, rx));
        Forwarder { queue }
    }

    /// Forwards `call` to `leader` in the next batch and waits (until
    /// `deadline`) for its result.
    async fn call(&self, leader: NodeId, node: Member, call: ForwardRequest, deadline: Instant) -> ForwardResult {
        let (reply, result) = tokio::sync::oneshot::channel();
        let queued = Queued { leader, node, call, deadline, reply };
        match tokio::time::timeout_at(deadline, self.queue.send(queued)).await {
            Err(_) => return Err(ClusterError::Timeout),
            Ok(Err(_)) => return Err(ClusterError::Stopped),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, result).await {
            Err(_) => Err(ClusterError::Timeout),
            Ok(Err(_)) => Err(ClusterError::Stopped),
            Ok(Ok(r)) => r,
        }
    }

    async fn run(network: PeerNetwork, mut rx: tokio::sync::mpsc::Receiver<Queued>) {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(FORWARD_IN_FLIGHT));
        loop {
            // Wait for room first: calls arriving meanwhile join this batch.
            let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
            let Some(first) = rx.recv().await else { return };
            let batch = take_queued(first, &mut rx, FORWARD_BATCH_CALLS, FORWARD_BATCH_BYTES, |q| q.call.estimated_size());
            // Calls queued before and after a leader change go to different leaders.
            let mut by_leader: BTreeMap<NodeId, Vec<Queued>> = BTreeMap::new();
            for q in batch {
                by_leader.entry(q.leader).or_default().push(q);
            }
            let network = network.clone();
            tokio::spawn(async move {
                let _permit = permit;
                for (leader, calls) in by_leader {
                    Self::send(&network, leader, calls).await;
                }
            });
        }
    }

    async fn send(network: &PeerNetwork, leader: NodeId, calls: Vec<Queued>) {
        let node = calls[0].node.clone();
        let latest = calls.iter().map(|q| q.deadline).max().expect("a batch is never empty");
        let (meta, reqs): (Vec<_>, Vec<_>) =
            calls.into_iter().map(|q| ((q.deadline, q.reply), q.call)).unzip();
        let n = reqs.len();
        let results: Vec<ForwardResult> = match bincode::serialize(&ForwardRequest::Batch(reqs)) {
            Err(e) => vec![Err(fatal(e)); n],
            Ok(data) => {
                let left = latest.saturating_duration_since(Instant::now()).min(FORWARD_TIMEOUT);
                match network.forward(leader, &node, data, left).await {
                    Ok(reply) => match bincode::deserialize::<ForwardResult>(&reply) {
                        Ok(Ok(ForwardReply::Batch(results))) if results.len() == n => results,
                        Ok(Ok(other)) => vec![Err(fatal(format!("unexpected reply to a batch: {other:?}"))); n],
                        // The whole batch was refused (e.g. "not leader").
                        Ok(Err(e)) => vec![Err(e); n],
                        Err(e) => vec![Err(fatal(e)); n],
                    },
                    Err(status) => {
                        tracing::debug!(leader, error = %status, calls = n, "forwarding a batch to the leader failed");
                        meta.iter().map(|(deadline, _)| Err(forward_failed(*deadline))).collect()
                    }
                }
            }
        };
        for ((_, reply), result) in meta.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// `first` and whatever has queued up in `rx` behind it, without waiting:
/// at most `max_items`, and no more once their `size`s reach `max_bytes`.
/// The `Forwarder`'s batches and the `Proposer`'s groups are taken so.
fn take_queued<T>(
    first: T,
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<T> {
    let mut bytes = size(&first);
    let mut taken = vec![first];
    while taken.len() < max_items && bytes < max_bytes {
        match rx.try_recv() {
            Ok(item) => {
                bytes += size(&item);
                taken.push(item);
            }
            Err(_) => break,
        }
    }
    taken
}

/// A proposal waiting for the leader's log.
struct Pending {
    request: RaftRequest,
    reply: tokio::sync::oneshot::Sender<ForwardResult>,
}

/// Hands this leader's proposals to Raft in groups: while
/// [`PROPOSE_IN_FLIGHT`] groups are still on their way to being applied,
/// new proposals wait and then go together. A lone client's proposal goes
/// at once (nothing is in flight). Under load, a group costs one log write
/// on the leader and one replication message per follower; handed to Raft
/// one by one, proposals from 100 clients made 2.9 entries per leader log
/// write and 8.5 per replication message, and a put cost the members
/// half as much CPU again as at 1,000 clients (bench/README.md). etcd
/// gets the same group commit from its loop, which takes in new proposals
/// only between persisting one `Ready` and the next.
struct Proposer {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

impl Proposer {
    fn start(raft: CairnRaft) -> Proposer {
        let (queue, rx) = tokio::sync::mpsc::channel(PROPOSE_QUEUE);
        tokio::spawn(Self::run(raft, rx));
        Proposer { queue }
    }

    /// Proposes `request` in the next group and waits for its outcome: the
    /// state machine's response once applied here, or "not leader".
    async fn propose(&self, request: RaftRequest) -> ForwardResult {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.queue.send(Pending { request, reply }).await.map_err(|_| ClusterError::Stopped)?;
        result.await.unwrap_or(Err(ClusterError::Stopped))
    }

    async fn run(raft: CairnRaft, mut rx: tokio::sync::mpsc::Receiver<Pending>) {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(PROPOSE_IN_FLIGHT));
        loop {
            // Wait for room first: proposals arriving meanwhile join this group.
            let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
            let Some(first) = rx.recv().await else { return };
            let group = take_queued(first, &mut rx, PROPOSE_BATCH_CALLS, PROPOSE_BATCH_BYTES, |p| p.request.payload.len());
            let (requests, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|p| (p.request, p.reply)).unzip();
            // Submitted here, in arrival order; the outcomes are awaited apart.
            let outcomes = raft.client_write_many(requests).await;
            tokio::spawn(async move {
                let _permit = permit;
                let mut outcomes = match outcomes {
                    Ok(stream) => stream,
                    Err(_) => {
                        for reply in replies {
                            let _ = reply.send(Err(ClusterError::Stopped));
                        }
                        return;
                    }
                };
                for reply in replies {
                    let result = match outcomes.next().await {
                        Some(Ok(Ok(written))) => Ok(ForwardReply::Proposed(written.response)),
                        Some(Ok(Err(e))) => Err(write_error(RaftError::APIError(e))),
                        Some(Err(_)) | None => Err(ClusterError::Stopped),
                    };
                    let _ = reply.send(result);
                }
            });
        }
    }
}

impl ForwardRequest {
    /// Roughly its encoded size, to bound a batch.
    fn estimated_size(&self) -> usize {
        match self {
            ForwardRequest::Propose(r) => r.payload.len() + 32,
            _ => 32,
        }
    }
}
