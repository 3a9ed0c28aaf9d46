//! etcd's Maintenance service: Status, Alarm, HashKV, Defragment and
//! MoveLeader; the rest answer `Unimplemented` until their features exist.

use cairn_api::etcdserverpb::{
    maintenance_server::Maintenance, AlarmRequest, AlarmResponse, DefragmentRequest,
    DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse,
    HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::error::ServerError;

/// The etcd version Cairn reports. Clients such as kube-apiserver gate
/// features on it; Cairn implements the 3.6 API surface.
pub const ETCD_VERSION: &str = "3.6.0";
pub const ETCD_CLUSTER_VERSION: &str = "3.6.0";

/// etcd's default backend quota (2 GiB), reported in `dbSizeQuota`.
const DB_SIZE_QUOTA: i64 = 2 << 30;

pub struct MaintenanceService {
    backend: Backend,
}

impl MaintenanceService {
    pub fn new(backend: Backend) -> Self {
        Self { backend }
    }
}

type SnapshotStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// No alarm can be raised yet (there is no space quota), so the list is empty.
    async fn alarm(&self, _request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        self.backend.refuse_learner()?;
        let store = self.backend.store();
        Ok(Response::new(AlarmResponse {
            header: Some(self.backend.header(store.current_revision())),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let store = self.backend.store();
        let raft = self.backend.node().status();
        let errors = if raft.leader.is_none() { vec!["etcdserver: no leader".to_string()] } else { Vec::new() };
        Ok(Response::new(StatusResponse {
            header: Some(self.backend.header(store.current_revision())),
            version: ETCD_VERSION.to_string(),
            db_size: store.size_bytes() as i64,
            leader: raft.leader.unwrap_or(0),
            raft_index: raft.committed_index.max(raft.applied_index),
            raft_term: raft.term,
            raft_applied_index: raft.applied_index,
            errors,
            db_size_in_use: store.live_size_bytes() as i64,
            is_learner: raft.is_learner,
            storage_version: ETCD_CLUSTER_VERSION.to_string(),
            db_size_quota: DB_SIZE_QUOTA,
            downgrade_info: None,
        }))
    }

    /// Compacts RocksDB's files in place; reads and writes continue meanwhile.
    async fn defragment(&self, _: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        self.backend.refuse_learner()?;
        let store = self.backend.store().clone();
        tokio::task::spawn_blocking(move || store.defragment())
            .await
            .map_err(|_| Status::from(ServerError::Stopped))?
            .map_err(ServerError::Storage)?;
        let rev = self.backend.store().current_revision();
        Ok(Response::new(DefragmentResponse { header: Some(self.backend.header(rev)) }))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(Status::unimplemented("Hash is not implemented yet"))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.backend.refuse_learner()?;
        let rev = request.into_inner().revision;
        let store = self.backend.store().clone();
        let (hash, compact_revision, hash_revision) = tokio::task::spawn_blocking(move || store.hash_kv(rev))
            .await
            .map_err(|_| Status::from(ServerError::Stopped))?
            .map_err(ServerError::Storage)?;
        let current = self.backend.store().current_revision();
        Ok(Response::new(HashKvResponse {
            header: Some(self.backend.header(current)),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented("Snapshot is not implemented yet"))
    }

    /// Must be sent to the leader, as in etcd; returns once the target leads.
    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        self.backend.refuse_learner()?;
        let target = request.into_inner().target_id;
        self.backend.node().transfer_leader(target).await.map_err(ServerError::from)?;
        let rev = self.backend.store().current_revision();
        Ok(Response::new(MoveLeaderResponse { header: Some(self.backend.header(rev)) }))
    }

    async fn downgrade(&self, _: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented("Downgrade is not implemented yet"))
    }
}
