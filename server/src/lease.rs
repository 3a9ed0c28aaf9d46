//! etcd's Lease service. Grants and revocations are replicated writes;
//! keep-alives and remaining TTLs are answered by the leader's lease clock
//! (forwarded there from any member), as in etcd.

use std::pin::Pin;

use cairn_api::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use cairn_storage::{StorageError, WriteRequest, WriteResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::Backend;
use crate::error::ServerError;

/// etcd's `MaxLeaseTTL`.
const MAX_TTL: i64 = 9_000_000_000;
/// Keep-alive responses waiting for a slow client, per stream.
const KEEPALIVE_BUFFER: usize = 16;

pub struct LeaseService {
    backend: Backend,
    /// etcd's minimum TTL: 1.5 election timeouts, rounded up to seconds.
    min_ttl: i64,
}

impl LeaseService {
    pub fn new(backend: Backend, election: std::time::Duration) -> Self {
        let min_ttl = (election.as_secs_f64() * 1.5).ceil().max(1.0) as i64;
        Self { backend, min_ttl }
    }
}

type KeepAliveStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

fn random_id() -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 {
            return id;
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        if req.ttl > MAX_TTL {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        let ttl = req.ttl.max(self.min_ttl);
        // The id is chosen before proposing, so apply stays deterministic; a
        // chosen id that happens to exist is drawn again.
        for _ in 0..8 {
            let id = if req.id == 0 { random_id() } else { req.id };
            match self.backend.write(WriteRequest::LeaseGrant(LeaseGrantRequest { ttl, id })).await {
                Ok(WriteResponse::LeaseGrant(mut resp)) => {
                    self.backend.fill_header(&mut resp.header);
                    return Ok(Response::new(resp));
                }
                Err(ServerError::Storage(StorageError::LeaseExists)) if req.id == 0 => continue,
                Err(e) => return Err(e.into()),
                Ok(other) => return Err(Status::internal(format!("unexpected response {other:?}"))),
            }
        }
        Err(Status::internal("could not find a free lease id"))
    }

    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let req = request.into_inner();
        match self.backend.write(WriteRequest::LeaseRevoke(req)).await? {
            WriteResponse::LeaseRevoke(mut resp) => {
                self.backend.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(Status::internal(format!("unexpected response {other:?}"))),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    /// One response per request: the lease's TTL, or 0 for a lease that does
    /// not exist (the stream stays open), as etcd.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        self.backend.refuse_learner()?;
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER);
        let backend = self.backend.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = requests.message().await {
                let resp = match backend.node().lease_keep_alive(req.id).await {
                    Ok(ttl) => {
                        let rev = backend.store().current_revision();
                        Ok(LeaseKeepAliveResponse { header: Some(backend.header(rev)), id: req.id, ttl })
                    }
                    Err(e) => Err(Status::from(ServerError::from(e))),
                };
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.backend.refuse_learner()?;
        let req = request.into_inner();
        // The TTL comes from the leader's clock, the keys from this member's
        // store: a read barrier first makes them include every write
        // acknowledged before this request, wherever it was made.
        if req.keys {
            self.backend.node().read_barrier().await.map_err(ServerError::from)?;
        }
        let status = self.backend.node().lease_time_to_live(req.id).await.map_err(ServerError::from)?;
        let rev = self.backend.store().current_revision();
        let header = Some(self.backend.header(rev));
        let resp = match status {
            // etcd answers a missing lease with TTL -1, not an error.
            None => LeaseTimeToLiveResponse { header, id: req.id, ttl: -1, granted_ttl: 0, keys: Vec::new() },
            Some((ttl, granted_ttl)) => {
                let keys = if req.keys {
                    self.backend.store().lease(req.id).map(|l| l.keys).unwrap_or_default()
                } else {
                    Vec::new()
                };
                LeaseTimeToLiveResponse { header, id: req.id, ttl, granted_ttl, keys }
            }
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(&self, _request: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.backend.refuse_learner()?;
        self.backend.node().read_barrier().await.map_err(ServerError::from)?;
        let leases = self.backend.store().leases().into_iter().map(|l| LeaseStatus { id: l.id }).collect();
        let rev = self.backend.store().current_revision();
        Ok(Response::new(LeaseLeasesResponse { header: Some(self.backend.header(rev)), leases }))
    }
}
