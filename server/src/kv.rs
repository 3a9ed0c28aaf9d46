//! etcd's KV service.

use cairn_api::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use cairn_storage::{validate, WriteRequest, WriteResponse};
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::error::ServerError;

pub struct KvService {
    backend: Backend,
    max_txn_ops: usize,
}

impl KvService {
    pub fn new(backend: Backend, max_txn_ops: usize) -> Self {
        Self { backend, max_txn_ops }
    }
}

/// Unwraps the response variant a request of that kind always produces.
macro_rules! expect_response {
    ($resp:expr, $variant:ident) => {
        match $resp {
            WriteResponse::$variant(r) => r,
            other => unreachable!("{} request answered with {other:?}", stringify!($variant)),
        }
    };
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        validate::check_range(&req).map_err(ServerError::Storage)?;
        let mut resp = self.backend.range(req).await?;
        self.backend.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        validate::check_put(&req).map_err(ServerError::Storage)?;
        let resp = self.backend.write(WriteRequest::Put(req)).await?;
        let mut resp = expect_response!(resp, Put);
        self.backend.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        validate::check_delete(&req).map_err(ServerError::Storage)?;
        let resp = self.backend.write(WriteRequest::DeleteRange(req)).await?;
        let mut resp = expect_response!(resp, DeleteRange);
        self.backend.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        validate::check_txn(&req, self.max_txn_ops).map_err(ServerError::Storage)?;
        let resp = self.backend.write(WriteRequest::Txn(req)).await?;
        let mut resp = expect_response!(resp, Txn);
        self.backend.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = request.into_inner();
        let (rev, physical) = (req.revision, req.physical);
        let resp = self.backend.write(WriteRequest::Compact(req)).await?;
        let mut resp = expect_response!(resp, Compact);
        if physical {
            let store = self.backend.store().clone();
            tokio::task::spawn_blocking(move || store.wait_compacted(rev))
                .await
                .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        }
        self.backend.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }
}
