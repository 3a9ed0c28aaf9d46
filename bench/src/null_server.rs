//! `cairn-bench null-server`: an etcd KV endpoint that answers every Put at
//! once and stores nothing. Range finds nothing and DeleteRange deletes
//! nothing; Txn and Compact get Unimplemented.
//!
//! It measures what the gRPC transport alone costs on this machine. No
//! server speaking etcd's API over tonic can serve a put more cheaply than
//! this one, so its CPU per put, with the load generator's, bounds any such
//! server's put throughput from above. `bench/README.md` ("Why put
//! throughput is not 2× etcd's here") uses it to size what a 3-member
//! cluster may spend. The empty Range and DeleteRange let `etcdctl check
//! perf` run against it (it reads and deletes its key prefix around the
//! puts), which shows how fast that client can go here whatever the server.

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
        Ok(Response::new(RangeResponse { header: Some(header()), ..Default::default() }))
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(PutResponse { header: Some(header()), prev_kv: None }))
    }

    async fn delete_range(&self, _: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(DeleteRangeResponse { header: Some(header()), ..Default::default() }))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("null-server answers Put, Range and DeleteRange only"))
    }

    async fn compact(&self, _: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("null-server answers Put, Range and DeleteRange only"))
    }
}

fn header() -> ResponseHeader {
    ResponseHeader { revision: 1, ..Default::default() }
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
