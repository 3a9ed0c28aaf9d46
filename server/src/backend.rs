//! The member's write path and read path, on Raft.
//!
//! Writes are proposed through [`RaftNode::propose`] (forwarded to the leader
//! when this member follows) and answered once applied. Linearizable reads
//! wait for a read index (one quorum round shared by concurrent reads) and
//! then read this member's store; serializable reads read it at once.

use std::sync::Arc;

use cairn_api::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use cairn_raft::RaftNode;
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
}

impl Backend {
    pub fn new(node: RaftNode, max_request_bytes: usize) -> Backend {
        Backend { inner: Arc::new(Inner { node, max_request_bytes }) }
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
            self.inner.node.read_barrier().await?;
        }
        let store = self.store().clone();
        let resp = tokio::task::spawn_blocking(move || store.range(&req))
            .await
            .map_err(|_| ServerError::Stopped)??;
        Ok(resp)
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
        Ok(self.inner.node.propose(&req).await??)
    }
}
