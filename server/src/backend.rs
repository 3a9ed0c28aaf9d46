//! The member's write path and read path, on Raft.
//!
//! Writes are proposed through [`RaftNode::propose`] (forwarded to the leader
//! when this member follows) and answered once applied. Linearizable reads
//! wait for a read index (one quorum round shared by concurrent reads) and
//! then read this member's store; serializable reads read it at once.

use std::sync::Arc;

use cairn_api::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use cairn_raft::RaftNode;
#[cfg(feature = "bug-switches")]
use cairn_storage::bugs::Bug;
use cairn_storage::{Store, WriteRequest, WriteResponse};
use prost::Message;

use crate::error::ServerError;

#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    node: RaftNode,
    max_request_bytes: usize,
    /// Bug switch `ack-before-commit`: writes acknowledged but still being
    /// proposed, at most [`EARLY_ACKS_IN_FLIGHT`].
    #[cfg(feature = "bug-switches")]
    early_acks: Arc<tokio::sync::Semaphore>,
}

/// Bound on the proposals of writes acknowledged early (`ack-before-commit`);
/// beyond it a write waits for one to finish before it is acknowledged.
#[cfg(feature = "bug-switches")]
const EARLY_ACKS_IN_FLIGHT: usize = 1024;

impl Backend {
    pub fn new(node: RaftNode, max_request_bytes: usize) -> Backend {
        Backend {
            inner: Arc::new(Inner {
                node,
                max_request_bytes,
                #[cfg(feature = "bug-switches")]
                early_acks: Arc::new(tokio::sync::Semaphore::new(EARLY_ACKS_IN_FLIGHT)),
            }),
        }
    }

    pub fn node(&self) -> &RaftNode {
        &self.inner.node
    }

    pub fn store(&self) -> &Arc<Store> {
        self.inner.node.store()
    }

    /// Fills the member-level fields etcd puts in every response header.
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>) {
        let h = header.get_or_insert_with(Default::default);
        h.cluster_id = self.inner.node.cluster_id();
        h.member_id = self.inner.node.id();
        h.raft_term = self.inner.node.term();
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        let mut h = Some(ResponseHeader { revision, ..Default::default() });
        self.fill_header(&mut h);
        h.expect("just set")
    }

    /// Learners serve only Status and serializable reads, as in etcd.
    pub fn refuse_learner(&self) -> Result<(), ServerError> {
        if self.inner.node.is_learner() {
            return Err(ServerError::NotSupportedForLearner);
        }
        Ok(())
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, ServerError> {
        if !req.serializable {
            self.refuse_learner()?;
            self.read_barrier().await?;
        }
        // A one-key read costs a few microseconds, less than the two thread
        // hand-offs of the blocking pool; ranges may read without bound.
        if let Some(resp) = self.store().try_point_range(&req) {
            return Ok(resp?);
        }
        let store = self.store().clone();
        let resp = tokio::task::spawn_blocking(move || store.range(&req))
            .await
            .map_err(|_| ServerError::Stopped)??;
        Ok(resp)
    }

    /// Returns once this member's store reflects every write acknowledged
    /// before the call, so a linearizable read may follow.
    async fn read_barrier(&self) -> Result<(), ServerError> {
        #[cfg(feature = "bug-switches")]
        if cairn_storage::bugs::is_on(Bug::LinReadLocal) {
            return Ok(());
        }
        Ok(self.inner.node.read_barrier().await?)
    }

    /// Replicates a write and returns its response once applied.
    pub async fn write(&self, req: WriteRequest) -> Result<WriteResponse, ServerError> {
        let size = match &req {
            WriteRequest::Put(r) => r.encoded_len(),
            WriteRequest::DeleteRange(r) => r.encoded_len(),
            WriteRequest::Txn(r) => r.encoded_len(),
            WriteRequest::Compact(r) => r.encoded_len(),
            WriteRequest::LeaseGrant(r) => r.encoded_len(),
            WriteRequest::LeaseRevoke(r) => r.encoded_len(),
            WriteRequest::LeaseCheckpoint(r) => r.encoded_len(),
        };
        if size > self.inner.max_request_bytes {
            return Err(ServerError::RequestTooLarge);
        }
        self.refuse_learner()?;
        #[cfg(feature = "bug-switches")]
        if cairn_storage::bugs::is_on(Bug::AckBeforeCommit) && changes_data(&req) {
            return self.ack_before_commit(req).await;
        }
        Ok(self.inner.node.propose(&req).await??)
    }

    /// Bug switch `ack-before-commit`: answers `req` with the response it
    /// would get on this member's store as it is now, and proposes it in the
    /// background. The client hears "done" for a write that may never
    /// commit (the proposal can fail, or the member die), or commit at
    /// another revision and after reads that miss it.
    #[cfg(feature = "bug-switches")]
    async fn ack_before_commit(&self, req: WriteRequest) -> Result<WriteResponse, ServerError> {
        let permit = self.inner.early_acks.clone().acquire_owned().await.map_err(|_| ServerError::Stopped)?;
        let store = self.store().clone();
        let preview = req.clone();
        let resp = tokio::task::spawn_blocking(move || store.preview(&preview))
            .await
            .map_err(|_| ServerError::Stopped)??;
        let node = self.inner.node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match node.propose(&req).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "a write acknowledged early was rejected"),
                Err(e) => tracing::debug!(error = %e, "a write acknowledged early failed"),
            }
        });
        Ok(resp)
    }
}

/// Whether `req` is a Put, a DeleteRange or a Txn with a write in either
/// branch (at any depth): the writes `ack-before-commit` answers early.
#[cfg(feature = "bug-switches")]
fn changes_data(req: &WriteRequest) -> bool {
    use cairn_api::etcdserverpb::{request_op::Request, TxnRequest};

    fn txn_writes(txn: &TxnRequest) -> bool {
        txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_writes(nested),
            Some(Request::RequestRange(_)) | None => false,
        })
    }
    match req {
        WriteRequest::Put(_) | WriteRequest::DeleteRange(_) => true,
        WriteRequest::Txn(txn) => txn_writes(txn),
        _ => false,
    }
}
