//! The Raft peer network: a tonic gRPC service (`cairnraftpb.Raft`, see
//! `proto/raft.proto`) and the openraft client side that calls it.
//!
//! # Wire format
//!
//! Every RPC carries openraft's own request type, bincode-encoded, in a
//! `bytes` field, together with the node id the sender meant to reach. The
//! reply carries the bincode-encoded `Result` of the receiver's
//! [`openraft::Raft`] method, so openraft errors cross the wire unchanged;
//! a gRPC error only ever means a transport or addressing failure.
//!
//! | RPC              | receiver calls                    | request                      |
//! |------------------|-----------------------------------|------------------------------|
//! | `Vote`           | [`Raft::vote`]                    | `VoteRequest`                |
//! | `PreVote`        | [`Raft::pre_vote`]                | `VoteRequest`                |
//! | `AppendEntries`  | [`Raft::append_entries`]          | `AppendEntriesRequest`       |
//! | `StreamAppend`   | [`Raft::stream_append`]           | stream of `AppendEntriesRequest`s |
//! | `Heartbeat`      | [`Raft::append_entries`], in turn | stream of `AppendEntriesRequest`s |
//! | `Snapshot`       | [`Raft::install_full_snapshot`]   | stream of [`SnapshotChunk`]s |
//! | `TransferLeader` | [`Raft::handle_transfer_leader`]  | `TransferLeaderRequest`      |
//! | `Forward`        | the [`ForwardHandler`]            | Cairn's own forwarded calls  |
//!
//! Replication uses `StreamAppend`: one long-lived call per follower for as
//! long as openraft's replication session lasts, requests pipelined (sent
//! without waiting for the answers before them) and answered in order.
//! Heartbeats, which carry a leader's every linearizable read, use one
//! long-lived `Heartbeat` call per follower with one request in flight.
//! Neither pays for opening an HTTP/2 stream (headers, trailers, a server
//! task) per message; both were measured faster than a unary call per
//! message (bench/README.md). A peer that answers either call with
//! `Unimplemented` (a build from before them, during a rolling upgrade) is
//! sent unary `AppendEntries` calls instead, one at a time, by that client
//! from then on.
//!
//! A `Snapshot` call streams the snapshot in chunks of at most
//! [`SNAPSHOT_CHUNK_SIZE`] bytes; the first chunk also carries the leader's
//! vote and the snapshot meta. Every other message is bounded by
//! [`MAX_MESSAGE_SIZE`] on both sides (the log reader's
//! `READ_BUDGET_BYTES` keeps append batches well under it for sane entry
//! sizes).
//!
//! # Errors and timeouts (client side)
//!
//! openraft does not enforce [`RPCOption`]'s deadlines itself, so every call
//! here is bounded: unary RPCs by `soft_ttl`, each request on a stream by
//! `soft_ttl` from when it is sent (an idle stream is not timed), opening a
//! stream by `soft_ttl`, a snapshot transfer by
//! `soft_ttl` per chunk (plus one); both plus a transfer allowance of one
//! second per 8 MiB sent (openraft gives AppendEntries only
//! `heartbeat_interval`, which a big batch cannot meet). Failures map to
//! openraft's errors:
//!
//! - deadline passed: `Timeout`;
//! - the peer cannot be reached (no URL, bad URL, connection refused, the
//!   address now belongs to another node id) or the remote Raft is shut down
//!   (`Fatal`): `Unreachable`, which makes openraft back off;
//! - anything else (undecodable reply, other gRPC status): `NetworkError`.
//!
//! Connections are made lazily (tonic `connect_lazy`) to the first of the
//! member's `peer_urls`, cached per target and lane (replication,
//! heartbeat, snapshot; see [`PeerNetwork`]), and re-made after a transport
//! failure.
//!
//! # Snapshot data
//!
//! A [`SnapshotData`] to send is first made a [`SnapshotFile`] (a leader's
//! store view is written out then); the sender reads the file one
//! chunk at a time as tonic pulls chunks, and the receiver appends chunks to
//! a temporary file in the state machine's snapshot directory, fsyncs it and
//! hands it to `install_full_snapshot`. Neither side holds more than a chunk
//! or two in memory, whatever the snapshot size.
//!
//! # Forwarding
//!
//! `Forward` carries Cairn's own member-to-member calls (a follower's write
//! proposals, read-index requests and membership changes sent to the
//! leader). The network only moves the bytes; a [`ForwardHandler`] installed
//! by the node answers them.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bincode::Options;
use futures_util::{Stream, StreamExt};
use openraft::alias::{SnapshotMetaOf, SnapshotOf};
use openraft::errors::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Timeout,
    Unreachable,
};
use openraft::base::{BoxFuture, BoxStream};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::state_machine::SnapshotData;
use crate::state_machine::{temp_snapshot_path, SnapshotFile, StateMachine};
use crate::types::{NodeId, Vote};
use crate::{Member, TypeConfig};

/// The generated protobuf messages and tonic stubs of `cairnraftpb`.
pub mod pb {
    tonic::include_proto!("cairnraftpb");
}

pub use pb::raft_server::RaftServer;
pub use pb::{RaftMessage, SnapshotChunk};

/// When this node last heard from a leader (an AppendEntries it answered).
/// openraft keeps a follower's `current_leader` until a new leader is
/// elected, which never happens without a quorum; this tells whether that
/// leader is still alive, as etcd's follower forgets its leader when its
/// election timeout fires.
#[derive(Debug)]
pub struct LeaderContact {
    start: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self { start: std::time::Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(u64::MAX) }
    }
}

impl LeaderContact {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Time since the last contact; `None` if there was none.
    pub fn since(&self) -> Option<Duration> {
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        (last != u64::MAX).then(|| self.start.elapsed().saturating_sub(Duration::from_millis(last)))
    }
}

/// Cairn's Raft instance.
pub type CairnRaft = Raft<TypeConfig, StateMachine>;

/// Answers `Forward` calls: bincode-encoded requests in, bincode-encoded
/// replies out (the node defines both types).
#[tonic::async_trait]
pub trait ForwardHandler: Send + Sync + 'static {
    async fn handle(&self, request: Vec<u8>) -> Result<Vec<u8>, Status>;
}

/// A snapshot as the state machine hands it to the network.
pub type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;

/// The largest gRPC message either side sends or accepts.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The most snapshot data one [`SnapshotChunk`] carries.
pub const SNAPSHOT_CHUNK_SIZE: usize = 1024 * 1024;

/// How long establishing a TCP/HTTP2 connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The throughput every peer link is assumed to reach at least: a request of
/// `n` bytes gets `n / MIN_THROUGHPUT` seconds on top of its `soft_ttl`.
/// openraft times AppendEntries by `heartbeat_interval` alone, which a large
/// batch cannot meet on a real network; without the allowance it would time
/// out, be resent, and time out again forever.
const MIN_THROUGHPUT: u64 = 8 * 1024 * 1024;

fn transfer_allowance(bytes: usize) -> Duration {
    Duration::from_micros(bytes as u64 * 1_000_000 / MIN_THROUGHPUT)
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_MESSAGE_SIZE as u64)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, bincode::Error> {
    codec().serialize(v)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    codec().deserialize(bytes)
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

/// The receiving side: the `cairnraftpb.Raft` service for one local node,
/// handing every request to its [`Raft`].
pub struct RaftPeerService {
    id: NodeId,
    raft: CairnRaft,
    /// Set on every AppendEntries (heartbeats included) a leader sends us.
    leader_contact: Option<std::sync::Arc<LeaderContact>>,
    /// Where received snapshots are spooled (the state machine's snapshot dir).
    snapshot_dir: PathBuf,
    forward: Option<std::sync::Arc<dyn ForwardHandler>>,
    /// Before this moment the node refuses (pre-)votes other than a
    /// leadership transfer's (see [`RaftPeerService::with_votes_closed_until`]).
    votes_closed_until: Option<tokio::time::Instant>,
}

impl RaftPeerService {
    /// The service for node `id`, which runs `raft`; received snapshots are
    /// spooled into `snapshot_dir`, and `Forward` calls go to `forward`
    /// (refused when there is none).
    pub fn new(
        id: NodeId,
        raft: CairnRaft,
        snapshot_dir: PathBuf,
        forward: Option<std::sync::Arc<dyn ForwardHandler>>,
    ) -> Self {
        Self { id, raft, snapshot_dir, forward, leader_contact: None, votes_closed_until: None }
    }

    /// Refuses Vote and PreVote requests until `until`, except a leadership
    /// transfer's, with `Unavailable`. A restarted member uses it to keep
    /// the follower lease it gave a leader before the restart, which
    /// openraft keeps only in memory and which the leader's lease reads
    /// rely on (`RaftNode::read_policy`).
    pub fn with_votes_closed_until(mut self, until: Option<tokio::time::Instant>) -> Self {
        self.votes_closed_until = until;
        self
    }

    /// The refusal of `rpc` if votes are still closed.
    fn check_votes_open(&self, rpc: &VoteRequest<TypeConfig>) -> Result<(), Status> {
        match self.votes_closed_until {
            Some(until) if !rpc.leadership_transfer && tokio::time::Instant::now() < until => Err(Status::unavailable(format!(
                "node {} restarted and grants no vote for one election timeout",
                self.id
            ))),
            _ => Ok(()),
        }
    }

    /// Records the time of each AppendEntries received in `contact`.
    pub fn with_leader_contact(mut self, contact: std::sync::Arc<LeaderContact>) -> Self {
        self.leader_contact = Some(contact);
        self
    }

    /// Wraps the service for a tonic `Server`, with the message size limits.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    fn check_target(&self, target: NodeId) -> Result<(), Status> {
        check_target(self.id, target)
    }

    fn request<T: DeserializeOwned>(&self, msg: &RaftMessage) -> Result<T, Status> {
        decode_request(self.id, msg)
    }

    fn reply<T: Serialize>(&self, result: &T) -> Result<Response<RaftMessage>, Status> {
        reply_message(self.id, result).map(Response::new)
    }
}

fn check_target(id: NodeId, target: NodeId) -> Result<(), Status> {
    if target == id {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!("this is node {id}, not node {target}")))
    }
}

/// The request in `msg`, if it was meant for node `id` and decodes.
fn decode_request<T: DeserializeOwned>(id: NodeId, msg: &RaftMessage) -> Result<T, Status> {
    check_target(id, msg.target)?;
    decode(&msg.data).map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))
}

/// `result`, encoded, as node `id`'s reply.
fn reply_message<T: Serialize>(id: NodeId, result: &T) -> Result<RaftMessage, Status> {
    let data = encode(result).map_err(|e| Status::internal(format!("unencodable reply: {e}")))?;
    Ok(RaftMessage { target: id, data })
}

/// Hands `rpc` to Raft, noting the leader's contact if it was accepted.
async fn append(
    raft: &CairnRaft,
    contact: Option<&LeaderContact>,
    rpc: AppendEntriesRequest<TypeConfig>,
) -> Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> {
    let result = raft.append_entries(rpc).await;
    if let (Some(contact), Ok(_)) = (contact, &result) {
        contact.touch();
    }
    result
}

/// The replies of a `StreamAppend` or `Heartbeat` call.
type ReplyStream = std::pin::Pin<Box<dyn Stream<Item = Result<RaftMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftPeerService {
    type StreamAppendStream = ReplyStream;

    /// Hands the request stream to [`Raft::stream_append`], which passes
    /// each request to Raft as it arrives, without waiting for the answer to
    /// the one before (the log store groups their fsyncs), and answers them
    /// in order. A request that is not for this node, does not decode or
    /// breaks off in transport ends the input; the answers to the requests
    /// before it are still sent, then the call fails with its status.
    async fn stream_append(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let id = self.id;
        let failed: Arc<Mutex<Option<Status>>> = Arc::default();
        let input = futures_util::stream::unfold(
            (req.into_inner(), failed.clone()),
            move |(mut messages, failed)| async move {
                let request = match messages.message().await {
                    Ok(None) => return None,
                    Ok(Some(msg)) => decode_request::<AppendEntriesRequest<TypeConfig>>(id, &msg),
                    Err(status) => Err(status),
                };
                match request {
                    Ok(rpc) => Some((rpc, (messages, failed))),
                    Err(status) => {
                        *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                        None
                    }
                }
            },
        );
        let contact = self.leader_contact.clone();
        let replies = self.raft.stream_append(input).map(move |result| {
            if let (Some(contact), Ok(Ok(_))) = (&contact, &result) {
                contact.touch();
            }
            reply_message(id, &result)
        });
        let failure = futures_util::stream::once(async move {
            failed.lock().unwrap_or_else(|e| e.into_inner()).take()
        })
        .filter_map(|status| std::future::ready(status.map(Err)));
        Ok(Response::new(Box::pin(replies.chain(failure))))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<TypeConfig> = self.request(req.get_ref())?;
        self.check_votes_open(&rpc)?;
        self.reply(&self.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<TypeConfig> = self.request(req.get_ref())?;
        self.check_votes_open(&rpc)?;
        self.reply(&self.raft.pre_vote(rpc).await)
    }

    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.request(req.get_ref())?;
        let result = append(&self.raft, self.leader_contact.as_deref(), rpc).await;
        self.reply(&result)
    }

    type HeartbeatStream = ReplyStream;

    /// Answers each request in turn with [`Raft::append_entries`]; the
    /// first request that is not for this node or does not decode fails
    /// the call.
    async fn heartbeat(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let (id, raft, contact) = (self.id, self.raft.clone(), self.leader_contact.clone());
        let replies = futures_util::stream::unfold(Some(req.into_inner()), move |messages| {
            let (raft, contact) = (raft.clone(), contact.clone());
            async move {
                let mut messages = messages?;
                let reply = async {
                    let msg = messages.message().await?.ok_or(None)?;
                    let rpc = decode_request(id, &msg)?;
                    let result = append(&raft, contact.as_deref(), rpc).await;
                    Ok::<_, Option<Status>>(reply_message(id, &result)?)
                };
                match reply.await {
                    Ok(reply) => Some((Ok(reply), Some(messages))),
                    Err(None) => None,
                    Err(Some(status)) => Some((Err(status), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut chunks = req.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        self.check_target(first.target)?;
        let (vote, meta): (Vote, SnapshotMetaOf<TypeConfig>) = decode(&first.header)
            .map_err(|e| Status::invalid_argument(format!("undecodable snapshot header: {e}")))?;
        let path = temp_snapshot_path(&self.snapshot_dir);
        let received = spool_snapshot(&path, first.data, &mut chunks).await;
        let file = match received {
            Ok(f) => f,
            Err(status) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(status);
            }
        };
        tracing::info!(
            node = self.id,
            bytes = file.len(),
            meta = %meta,
            "received snapshot, installing"
        );
        let snapshot = Snapshot { meta, snapshot: SnapshotData::File(file) };
        let result = self.raft.install_full_snapshot(vote, snapshot).await;
        // Installed snapshots were renamed into place; anything left is stale.
        let _ = tokio::fs::remove_file(&path).await;
        self.reply(&result)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: TransferLeaderRequest<TypeConfig> = self.request(req.get_ref())?;
        self.reply(&self.raft.handle_transfer_leader(rpc).await)
    }

    async fn forward(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        // Target 0: a joining member that does not know our id yet.
        if msg.target != 0 {
            self.check_target(msg.target)?;
        }
        let handler = self
            .forward
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this node does not accept forwarded calls"))?;
        let data = handler.handle(msg.data).await?;
        Ok(Response::new(RaftMessage { target: self.id, data }))
    }
}

/// Writes a snapshot stream to `path` (first chunk's data, then the rest),
/// fsyncs it and opens it for reading.
async fn spool_snapshot(
    path: &std::path::Path,
    first: Vec<u8>,
    chunks: &mut Streaming<SnapshotChunk>,
) -> Result<SnapshotFile, Status> {
    let io_err = |e: std::io::Error| Status::internal(format!("spooling snapshot: {e}"));
    if first.len() > SNAPSHOT_CHUNK_SIZE {
        return Err(Status::invalid_argument("snapshot chunk too large"));
    }
    let mut f = tokio::fs::File::create(path).await.map_err(io_err)?;
    f.write_all(&first).await.map_err(io_err)?;
    while let Some(chunk) = chunks.message().await? {
        if chunk.data.len() > SNAPSHOT_CHUNK_SIZE || !chunk.header.is_empty() {
            return Err(Status::invalid_argument("malformed snapshot chunk"));
        }
        f.write_all(&chunk.data).await.map_err(io_err)?;
    }
    f.flush().await.map_err(io_err)?;
    f.sync_all().await.map_err(io_err)?;
    drop(f);
    SnapshotFile::open(path).map_err(io_err)
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// The sending side for node `id`: openraft's network factory, handing out
/// one [`PeerClient`] per target and purpose.
///
/// gRPC channels (HTTP/2 connections) are cached per target, peer URL and
/// lane and shared by the clients openraft creates and drops (it makes a new
/// vote client per election, for instance). Replication, heartbeats and
/// snapshots use separate lanes, so a large append batch or snapshot never
/// delays a heartbeat behind it on one TCP connection. Votes and
/// TransferLeader share the replication lane. A channel is replaced after a
/// transport failure. Channels of members that left stay cached (three per
/// member ever seen; idle ones hold no connection once the peer is gone).
#[derive(Clone, Debug)]
pub struct PeerNetwork {
    id: NodeId,
    channels: Arc<Mutex<HashMap<ChannelKey, Channel>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Lane {
    Replication,
    Heartbeat,
    Snapshot,
    /// Forwarded client calls, so they never queue behind replication.
    Forward,
}

type ChannelKey = (NodeId, String, Lane);

impl PeerNetwork {
    /// The network of local node `id` (used in timeout errors).
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            channels: Arc::default(),
        }
    }

    fn client(&self, target: NodeId, node: &Member, lane: Lane) -> PeerClient {
        PeerClient {
            id: self.id,
            target,
            url: node.peer_urls.first().cloned(),
            lane,
            channels: self.channels.clone(),
            client: None,
            replace_channel: false,
            heartbeats: None,
            unary_only: false,
        }
    }
}

impl PeerNetwork {
    /// Sends a `Forward` call to `target` (reached at `node`'s peer URL) and
    /// returns the handler's reply bytes. Bounded by `timeout`; a transport
    /// failure replaces the cached connection.
    pub async fn forward(
        &self,
        target: NodeId,
        node: &Member,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Status> {
        let mut peer = self.client(target, node, Lane::Forward);
        let mut client = peer.client().map_err(|f| match f {
            Failure::Timeout(_) => Status::deadline_exceeded("forward timed out"),
            Failure::Unreachable(m) | Failure::Network(m) => Status::unavailable(m),
        })?;
        let mut req = Request::new(RaftMessage { target, data });
        req.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.forward(req)).await {
            Err(_) => Err(Status::deadline_exceeded("forward timed out")),
            Ok(Ok(reply)) => Ok(reply.into_inner().data),
            Ok(Err(status)) => {
                if status.code() == tonic::Code::Unavailable {
                    peer.reset();
                    peer.client().ok();
                }
                Err(status)
            }
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        self.client(target, node, Lane::Replication)
    }

    async fn new_heartbeat_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        self.client(target, node, Lane::Heartbeat)
    }

    async fn new_snapshot_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        self.client(target, node, Lane::Snapshot)
    }
}

/// A connection from the local node to one peer.
pub struct PeerClient {
    id: NodeId,
    target: NodeId,
    url: Option<String>,
    lane: Lane,
    channels: Arc<Mutex<HashMap<ChannelKey, Channel>>>,
    client: Option<pb::raft_client::RaftClient<Channel>>,
    /// The last call failed in transport: make a new channel.
    replace_channel: bool,
    /// The open `Heartbeat` call of a heartbeat-lane client, if any.
    heartbeats: Option<HeartbeatSession>,
    /// The peer answered `StreamAppend` or `Heartbeat` with
    /// `Unimplemented`: it is a build from before those calls, so this
    /// client sends it unary `AppendEntries` calls, as that build does.
    /// Keeps a cluster working through a rolling upgrade.
    unary_only: bool,
}

/// One long-lived `Heartbeat` call: each heartbeat is one message on it
/// rather than an HTTP/2 stream of its own, which saves the headers, the
/// trailers and the receiver's per-call task on a leader's every
/// linearizable read. Dropped after any failure, so a late reply can never
/// be taken for the answer to a later heartbeat.
struct HeartbeatSession {
    requests: tokio::sync::mpsc::Sender<RaftMessage>,
    replies: Streaming<RaftMessage>,
}

/// What a transport failure is, before it is put in an openraft error type.
enum Failure {
    Timeout(Duration),
    Unreachable(String),
    Network(String),
}

impl Failure {
    fn from_status(s: &Status) -> Self {
        match s.code() {
            // Not connected / connection refused, or the address is now
            // another node: back off.
            tonic::Code::Unavailable | tonic::Code::FailedPrecondition => {
                Failure::Unreachable(s.to_string())
            }
            _ => Failure::Network(s.to_string()),
        }
    }

    /// Whether the connection is suspect after this failure and is to be
    /// replaced: after anything but a timeout (a slow peer is not a broken
    /// connection).
    fn breaks_connection(&self) -> bool {
        !matches!(self, Failure::Timeout(_))
    }

    fn into_rpc(self, id: NodeId, target: NodeId, action: RPCTypes) -> RPCError<TypeConfig> {
        match self {
            Failure::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id,
                target,
                timeout,
            }),
            Failure::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
            Failure::Network(m) => RPCError::Network(NetworkError::from_string(m)),
        }
    }

    fn into_streaming(self, id: NodeId, target: NodeId) -> StreamingError<TypeConfig> {
        self.into_rpc(id, target, RPCTypes::InstallSnapshot).into()
    }
}

impl PeerClient {
    fn client(&mut self) -> Result<pb::raft_client::RaftClient<Channel>, Failure> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let url = self.url.as_ref().ok_or_else(|| {
            Failure::Unreachable(format!("node {} has no peer URL", self.target))
        })?;
        let key = (self.target, url.clone(), self.lane);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let cached = channels.get(&key).filter(|_| !self.replace_channel).cloned();
        let channel = match cached {
            Some(ch) => ch,
            None => {
                let endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|e| Failure::Unreachable(format!("bad peer URL {url:?}: {e}")))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5));
                let ch = endpoint.connect_lazy();
                channels.insert(key, ch.clone());
                ch
            }
        };
        drop(channels);
        self.replace_channel = false;
        let client = pb::raft_client::RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// After a transport failure: reconnect from scratch next time.
    fn reset(&mut self) {
        self.client = None;
        self.replace_channel = true;
    }

    /// One unary RPC: encode, send within `soft_ttl`, decode the reply's
    /// `Result<Resp, E>`; a remote error `E` means the remote Raft is down.
    async fn unary<Req, Resp, E>(
        &mut self,
        action: RPCTypes,
        pre_vote: bool,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::error::Error + 'static,
    {
        let (id, target) = (self.id, self.target);
        let res = self.unary_inner::<Req, Resp, E>(action, pre_vote, rpc, option).await;
        res.map_err(|f| {
            if f.breaks_connection() {
                self.reset();
            }
            f.into_rpc(id, target, action)
        })
    }

    async fn unary_inner<Req, Resp, E>(
        &mut self,
        action: RPCTypes,
        pre_vote: bool,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Failure>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::error::Error + 'static,
    {
        let mut client = self.client()?;
        let data = encode(rpc).map_err(|e| Failure::Network(format!("encoding request: {e}")))?;
        let ttl = option.soft_ttl() + transfer_allowance(data.len());
        let mut req = Request::new(RaftMessage {
            target: self.target,
            data,
        });
        req.set_timeout(ttl);
        let call = async move {
            match action {
                RPCTypes::Vote if pre_vote => client.pre_vote(req).await,
                RPCTypes::Vote => client.vote(req).await,
                RPCTypes::AppendEntries => client.append_entries(req).await,
                RPCTypes::TransferLeader => client.transfer_leader(req).await,
                RPCTypes::InstallSnapshot => Err(Status::internal("not a unary RPC")),
            }
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_) => return Err(Failure::Timeout(ttl)),
            // tonic enforces the request's grpc-timeout itself, reporting
            // `Cancelled` ("Timeout expired"); the server `DeadlineExceeded`.
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                ) =>
            {
                return Err(Failure::Timeout(ttl))
            }
            Ok(Err(status)) => return Err(Failure::from_status(&status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, E> = decode(&reply.data)
            .map_err(|e| Failure::Network(format!("undecodable reply: {e}")))?;
        result.map_err(|e| Failure::Unreachable(format!("remote node {}: {e}", self.target)))
    }
}

/// The requests of one `StreamAppend` call that are not answered yet,
/// oldest first, shared by the request stream (which adds each request as
/// tonic takes it to send) and the reply stream (which removes one per
/// reply).
#[derive(Default)]
struct InFlight {
    due: Mutex<Unanswered>,
    /// Signalled when a request is added, so a reply stream waiting with
    /// nothing in flight starts timing it.
    sent: tokio::sync::Notify,
    /// Set when a request could not be encoded; the request stream ends there.
    unencodable: Mutex<Option<String>>,
}

#[derive(Default)]
struct Unanswered {
    /// Per request: when its reply is due, the time it was given, its size.
    requests: VecDeque<(tokio::time::Instant, Duration, usize)>,
    bytes: usize,
}

impl InFlight {
    /// Records a request of `bytes` sent now. It is given `soft_ttl` plus
    /// the transfer allowance for every byte unanswered, its own included:
    /// the follower answers in order, so a request waits for the ones
    /// before it.
    fn push(&self, soft_ttl: Duration, bytes: usize) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        due.bytes += bytes;
        let ttl = soft_ttl + transfer_allowance(due.bytes);
        due.requests.push_back((tokio::time::Instant::now() + ttl, ttl, bytes));
        drop(due);
        self.sent.notify_one();
    }

    fn pop(&self) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, bytes)) = due.requests.pop_front() {
            due.bytes -= bytes;
        }
    }

    /// When the oldest unanswered request's reply is due, and its time.
    fn oldest(&self) -> Option<(tokio::time::Instant, Duration)> {
        let due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        due.requests.front().map(|&(at, ttl, _)| (at, ttl))
    }

    fn unanswered(&self) -> usize {
        self.due.lock().unwrap_or_else(|e| e.into_inner()).requests.len()
    }
}

/// The answer to one request of a replication stream.
type StreamReply = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// The receiving half of a `StreamAppend` call on the leader.
struct ReplyReader<'s> {
    peer: &'s mut PeerClient,
    replies: Streaming<RaftMessage>,
    in_flight: Arc<InFlight>,
}

impl ReplyReader<'_> {
    /// The next reply; `None` once the follower has answered every request
    /// and ended the call (the request stream ended first).
    ///
    /// A request unanswered past its due time fails the stream with
    /// `Timeout`: openraft leaves deadlines to the network, and a stream
    /// that is merely idle (nothing in flight) is not timed.
    async fn next(&mut self) -> Option<Result<StreamAppendResult<TypeConfig>, Failure>> {
        loop {
            let oldest = self.in_flight.oldest();
            let message = tokio::select! {
                m = self.replies.message() => m,
                _ = tokio::time::sleep_until(oldest.map_or_else(tokio::time::Instant::now, |o| o.0)),
                    if oldest.is_some() =>
                {
                    let ttl = oldest.map_or(Duration::ZERO, |o| o.1);
                    return Some(Err(Failure::Timeout(ttl)));
                }
                _ = self.in_flight.sent.notified(), if oldest.is_none() => continue,
            };
            return match message {
                Ok(Some(msg)) => {
                    self.in_flight.pop();
                    let result: Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>> =
                        match decode(&msg.data) {
                            Ok(r) => r,
                            Err(e) => {
                                return Some(Err(Failure::Network(format!(
                                    "undecodable reply: {e}"
                                ))))
                            }
                        };
                    Some(result.map_err(|fatal| {
                        Failure::Unreachable(format!("remote node {}: {fatal}", self.peer.target))
                    }))
                }
                Ok(None) => {
                    let unencodable =
                        self.in_flight.unencodable.lock().unwrap_or_else(|e| e.into_inner()).take();
                    let unanswered = self.in_flight.unanswered();
                    if let Some(m) = unencodable {
                        Some(Err(Failure::Network(format!("encoding request: {m}"))))
                    } else if unanswered > 0 {
                        Some(Err(Failure::Network(format!(
                            "replication stream ended with {unanswered} requests unanswered"
                        ))))
                    } else {
                        None
                    }
                }
                Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
                    Some(Err(Failure::Timeout(oldest.map_or(Duration::ZERO, |o| o.1))))
                }
                Err(status) => Some(Err(Failure::from_status(&status))),
            };
        }
    }
}

impl PeerClient {
    /// Opens a `StreamAppend` call carrying `input`; see
    /// [`RaftNetworkV2::stream_append`] below.
    async fn open_stream<S>(
        &mut self,
        input: S,
        option: &RPCOption,
    ) -> Result<(Streaming<RaftMessage>, Arc<InFlight>), Failure>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let mut client = self.client()?;
        let in_flight = Arc::new(InFlight::default());
        let (target, soft_ttl) = (self.target, option.soft_ttl());
        let requests = futures_util::stream::unfold(
            (input, in_flight.clone()),
            move |(mut input, in_flight)| async move {
                let rpc = input.next().await?;
                match encode(&rpc) {
                    Ok(data) => {
                        in_flight.push(soft_ttl, data.len());
                        Some((RaftMessage { target, data }, (input, in_flight)))
                    }
                    Err(e) => {
                        *in_flight.unencodable.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(e.to_string());
                        None
                    }
                }
            },
        );
        match tokio::time::timeout(soft_ttl, client.stream_append(Request::new(requests))).await {
            Err(_) => Err(Failure::Timeout(soft_ttl)),
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                self.unary_only = true;
                Err(Failure::Network(format!(
                    "node {target} does not serve StreamAppend, sending unary calls from now on"
                )))
            }
            Ok(Err(status)) => Err(Failure::from_status(&status)),
            Ok(Ok(reply)) => Ok((reply.into_inner(), in_flight)),
        }
    }
}

impl PeerClient {
    /// Sends one heartbeat on the open `Heartbeat` call (opening one if
    /// needed) and waits for its answer, all within `soft_ttl` plus the
    /// transfer allowance. To a peer without that call, a unary
    /// `AppendEntries`.
    async fn heartbeat(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let (id, target) = (self.id, self.target);
        if !self.unary_only {
            let session = self.heartbeats.take();
            match self.heartbeat_on(session, rpc, option).await {
                Ok(Some((session, resp))) => {
                    self.heartbeats = Some(session);
                    return Ok(resp);
                }
                Ok(None) => {}
                Err(f) => {
                    if f.breaks_connection() {
                        self.reset();
                    }
                    return Err(f.into_rpc(id, target, RPCTypes::AppendEntries));
                }
            }
        }
        self.unary::<_, _, RaftError<TypeConfig>>(RPCTypes::AppendEntries, false, rpc, option)
            .await
    }

    /// `None` if the peer has no `Heartbeat` call.
    async fn heartbeat_on(
        &mut self,
        session: Option<HeartbeatSession>,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<Option<(HeartbeatSession, AppendEntriesResponse<TypeConfig>)>, Failure> {
        let data = encode(rpc).map_err(|e| Failure::Network(format!("encoding request: {e}")))?;
        let ttl = option.soft_ttl() + transfer_allowance(data.len());
        let deadline = tokio::time::Instant::now() + ttl;
        let mut session = match session {
            Some(session) => session,
            None => match tokio::time::timeout_at(deadline, self.open_heartbeats())
                .await
                .map_err(|_| Failure::Timeout(ttl))??
            {
                Some(session) => session,
                None => return Ok(None),
            },
        };
        session
            .requests
            .try_send(RaftMessage { target: self.target, data })
            .map_err(|_| Failure::Network("heartbeat stream closed".into()))?;
        let reply = match tokio::time::timeout_at(deadline, session.replies.message()).await {
            Err(_) => return Err(Failure::Timeout(ttl)),
            Ok(Err(status)) => return Err(Failure::from_status(&status)),
            Ok(Ok(None)) => return Err(Failure::Network("heartbeat stream ended".into())),
            Ok(Ok(Some(reply))) => reply,
        };
        let result: Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> =
            decode(&reply.data).map_err(|e| Failure::Network(format!("undecodable reply: {e}")))?;
        let resp = result
            .map_err(|e| Failure::Unreachable(format!("remote node {}: {e}", self.target)))?;
        Ok(Some((session, resp)))
    }

    /// Opens a `Heartbeat` call; `None` (and unary calls from now on) if
    /// the peer does not serve it.
    async fn open_heartbeats(&mut self) -> Result<Option<HeartbeatSession>, Failure> {
        let mut client = self.client()?;
        let (tx, rx) = tokio::sync::mpsc::channel::<RaftMessage>(1);
        let requests = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|msg| (msg, rx))
        });
        match client.heartbeat(Request::new(requests)).await {
            Ok(replies) => Ok(Some(HeartbeatSession { requests: tx, replies: replies.into_inner() })),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(node = self.target, "peer has no Heartbeat call, sending unary calls");
                self.unary_only = true;
                Ok(None)
            }
            Err(status) => Err(Failure::from_status(&status)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    /// Replication over one long-lived `StreamAppend` call: requests are
    /// sent as openraft produces them, without waiting for earlier answers,
    /// so a follower's fsync of one batch overlaps the sending of the next,
    /// and no message pays for opening an HTTP/2 stream. The call ends when
    /// openraft's request stream ends or on the first failure; a transport
    /// failure also replaces the connection.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, StreamReply>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if self.lane == Lane::Heartbeat || self.unary_only {
            // openraft sends each heartbeat as a stream of one request; a
            // peer without `StreamAppend` gets one unary call at a time.
            return openraft::network::stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let (id, target) = (self.id, self.target);
            let action = RPCTypes::AppendEntries;
            let (replies, in_flight) = match self.open_stream(input, &option).await {
                Ok(opened) => opened,
                Err(f) => {
                    if f.breaks_connection() {
                        self.reset();
                    }
                    return Err(f.into_rpc(id, target, action));
                }
            };
            let reader = ReplyReader { peer: self, replies, in_flight };
            let replies = futures_util::stream::unfold(Some(reader), move |reader| async move {
                let mut reader = reader?;
                match reader.next().await? {
                    Ok(result) => {
                        let go_on = result.is_ok();
                        Some((Ok(result), go_on.then_some(reader)))
                    }
                    Err(f) => {
                        if f.breaks_connection() {
                            reader.peer.reset();
                        }
                        Some((Err(f.into_rpc(id, target, action)), None))
                    }
                }
            });
            let replies: BoxStream<'s, StreamReply> = Box::pin(replies);
            Ok(replies)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if self.lane == Lane::Heartbeat {
            return self.heartbeat(&rpc, &option).await;
        }
        self.unary::<_, _, RaftError<TypeConfig>>(RPCTypes::AppendEntries, false, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary::<_, _, RaftError<TypeConfig>>(RPCTypes::Vote, false, &rpc, &option)
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary::<_, _, RaftError<TypeConfig>>(RPCTypes::Vote, true, &rpc, &option)
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary::<_, _, Fatal<TypeConfig>>(RPCTypes::TransferLeader, false, &req, &option)
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let (id, target) = (self.id, self.target);
        let chunk_size = option
            .snapshot_chunk_size()
            .filter(|n| *n > 0)
            .map_or(SNAPSHOT_CHUNK_SIZE, |n| n.min(SNAPSHOT_CHUNK_SIZE));
        let meta = snapshot.meta;
        let file = snapshot
            .snapshot
            .into_file()
            .await
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        let len = file.len() as usize;
        let n_chunks = len.div_ceil(chunk_size) as u32;
        let ttl = option.soft_ttl() * (n_chunks + 1) + transfer_allowance(len);
        tracing::info!(
            from = id,
            to = target,
            bytes = len,
            meta = %meta,
            "sending snapshot"
        );
        let header = encode(&(vote, meta))
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        let file = file
            .reader()
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        let file = tokio::fs::File::from_std(file);

        // Chunks are read from the file lazily, as tonic pulls them. A read
        // error ends the stream early; the receiver then fails the install
        // (the file is short), and the transfer is retried.
        let chunks = futures_util::stream::unfold(
            (Some(header), file, false),
            move |(header, mut file, done)| async move {
                if done {
                    return None;
                }
                let mut data = vec![0u8; chunk_size];
                let mut filled = 0;
                while filled < chunk_size {
                    match file.read(&mut data[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading snapshot file");
                            return None;
                        }
                    }
                }
                data.truncate(filled);
                let last = filled < chunk_size;
                if header.is_none() && data.is_empty() {
                    return None;
                }
                let chunk = SnapshotChunk {
                    target,
                    header: header.unwrap_or_default(),
                    data,
                };
                Some((chunk, (None, file, last)))
            },
        );

        let mut client = match self.client() {
            Ok(c) => c,
            Err(f) => return Err(f.into_streaming(id, target)),
        };
        let call = tokio::time::timeout(ttl, client.snapshot(Request::new(chunks)));
        let outcome = tokio::select! {
            closed = pin!(cancel) => return Err(StreamingError::Closed(closed)),
            r = call => r,
        };
        let failure = match outcome {
            Err(_) => Failure::Timeout(ttl),
            Ok(Err(status)) => Failure::from_status(&status),
            Ok(Ok(reply)) => {
                let result: Result<Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>, _> =
                    decode(&reply.into_inner().data);
                match result {
                    Ok(Ok(resp)) => return Ok(resp),
                    Ok(Err(fatal)) => {
                        Failure::Unreachable(format!("remote node {target}: {fatal}"))
                    }
                    Err(e) => Failure::Network(format!("undecodable reply: {e}")),
                }
            }
        };
        if failure.breaks_connection() {
            self.reset();
        }
        Err(failure.into_streaming(id, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_request_is_given_time_for_every_byte_ahead_of_it() {
        let soft_ttl = Duration::from_millis(100);
        let in_flight = InFlight::default();
        let mib = 1024 * 1024;
        in_flight.push(soft_ttl, 8 * mib);
        in_flight.push(soft_ttl, 4 * mib);
        assert_eq!(in_flight.oldest().map(|o| o.1), Some(soft_ttl + Duration::from_secs(1)));
        in_flight.pop();
        // The second was sent behind 8 MiB: 12 MiB at 8 MiB/s.
        assert_eq!(in_flight.oldest().map(|o| o.1), Some(soft_ttl + Duration::from_millis(1500)));
        assert_eq!(in_flight.unanswered(), 1);
        in_flight.pop();
        in_flight.push(soft_ttl, 0);
        assert_eq!(in_flight.oldest().map(|o| o.1), Some(soft_ttl));
        in_flight.pop();
        in_flight.pop();
        assert_eq!((in_flight.unanswered(), in_flight.oldest()), (0, None));
    }
}
