//! `cairn-bench null-server`: an etcd KV endpoint that answers every Put at
//! once and stores nothing (other KV calls get Unimplemented).
//!
//! It measures what the gRPC transport alone costs on this machine. No
//! server speaking etcd's API over tonic can serve a put more cheaply than
//! this one, so its CPU per put, with the load generator's, bounds any such
//! server's put throughput from above. `bench/README.md` ("The put
//! throughput target") uses it to size what a 3-member cluster may spend.

use std::net::SocketAddr;

use anyhow::Context;
use cairn_api::etcdserverpb::kv_server::{Kv, KvServer};
use cairn_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

#[derive(Debug, clap::Args)]
pub struct NullServerArgs {
    /// Address to serve on (loopback only)
    #[arg(long, default_value = "127.0.0.1:23790")]
    listen: SocketAddr,
}

struct NullKv;

#[tonic::async_trait]
impl Kv for NullKv {
    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Err(Status::unimplemented("null-server answers Put only"))
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(PutResponse {
            header: Some(ResponseHeader { revision: 1, ..Default::default() }),
            prev_kv: None,
        }))
    }

    async fn delete_range(&self, _: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("null-server answers Put only"))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("null-server answers Put only"))
    }

    async fn compact(&self, _: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("null-server answers Put only"))
    }
}

/// Serves until the process is killed.
pub async fn run(args: &NullServerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.listen.ip().is_loopback(), "null-server listens on loopback only, not {}", args.listen);
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("null-server: answering Put on {}", args.listen);
    tonic::transport::Server::builder()
        .add_service(KvServer::new(NullKv))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}
