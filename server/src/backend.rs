//! The member's write path and read path. A single writer thread applies
//! requests in order, each durably (fsynced) before it is acknowledged; reads
//! run on the blocking pool against the store's published revision.

use std::sync::Arc;
use std::thread::JoinHandle;

use cairn_api::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use cairn_storage::{Applied, StorageError, Store, WriteRequest, WriteResponse};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::error::ServerError;

/// Writes waiting for the writer thread. Senders wait when it is full, which
/// pushes back on clients instead of growing memory.
const WRITE_QUEUE: usize = 1024;

/// The single member's Raft term. There is no election yet, so it is constant.
pub const TERM: u64 = 1;

enum Job {
    Write {
        req: WriteRequest,
        done: oneshot::Sender<Result<Applied, StorageError>>,
    },
    /// Sent at shutdown: writes queued before it are applied, later ones fail.
    Stop,
}

#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    writes: mpsc::Sender<Job>,
    max_request_bytes: usize,
    member_id: u64,
    cluster_id: u64,
}

pub struct WriterHandle(JoinHandle<()>);

impl WriterHandle {
    /// Waits for the writer to apply what was queued before `Backend::stop`.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Backend {
    pub fn start(
        store: Arc<Store>,
        max_request_bytes: usize,
        member_id: u64,
        cluster_id: u64,
    ) -> std::io::Result<(Backend, WriterHandle)> {
        let (tx, mut rx) = mpsc::channel::<Job>(WRITE_QUEUE);
        let writer_store = store.clone();
        let thread = std::thread::Builder::new().name("cairn-writer".into()).spawn(move || {
            while let Some(Job::Write { req, done }) = rx.blocking_recv() {
                let index = writer_store.applied_index() + 1;
                let outcome = writer_store.apply(index, &req);
                if let Err(e) = &outcome {
                    // The store refuses further use; everything queued fails too.
                    tracing::error!(error = %e, index, "apply failed; member cannot continue");
                }
                let _ = done.send(outcome);
            }
        })?;
        let inner = Inner { store, writes: tx, max_request_bytes, member_id, cluster_id };
        Ok((Backend { inner: Arc::new(inner) }, WriterHandle(thread)))
    }

    /// Stops the writer after the writes already queued. Connections that
    /// outlive the server may still hold clones of this backend; their writes
    /// fail with "server stopped".
    pub async fn stop(&self) {
        let _ = self.inner.writes.send(Job::Stop).await;
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    pub fn member_id(&self) -> u64 {
        self.inner.member_id
    }

    /// Fills the member-level fields etcd puts in every response header.
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>) {
        let h = header.get_or_insert_with(Default::default);
        h.cluster_id = self.inner.cluster_id;
        h.member_id = self.inner.member_id;
        h.raft_term = TERM;
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        let mut h = Some(ResponseHeader { revision, ..Default::default() });
        self.fill_header(&mut h);
        h.expect("just set")
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, ServerError> {
        let store = self.inner.store.clone();
        let resp = tokio::task::spawn_blocking(move || store.range(&req))
            .await
            .map_err(|_| ServerError::Stopped)??;
        Ok(resp)
    }

    /// Applies a write and returns its response once it is durable.
    pub async fn write(&self, req: WriteRequest) -> Result<WriteResponse, ServerError> {
        let size = match &req {
            WriteRequest::Put(r) => r.encoded_len(),
            WriteRequest::DeleteRange(r) => r.encoded_len(),
            WriteRequest::Txn(r) => r.encoded_len(),
            WriteRequest::Compact(r) => r.encoded_len(),
        };
        if size > self.inner.max_request_bytes {
            return Err(ServerError::RequestTooLarge);
        }
        let (done, wait) = oneshot::channel();
        self.inner
            .writes
            .send(Job::Write { req, done })
            .await
            .map_err(|_| ServerError::Stopped)?;
        let applied = wait.await.map_err(|_| ServerError::Stopped)??;
        Ok(applied.result?)
    }
}
