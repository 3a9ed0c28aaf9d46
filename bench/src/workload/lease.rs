//! `lease-keepalive`: keep-alive requests over bidirectional LeaseKeepAlive
//! streams (one per client), timed from request to response.

use std::time::Duration;

use cairn_api::etcdserverpb::lease_client::LeaseClient;
use cairn_api::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest};
use serde_json::Map;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use super::{report, warm_and_measure, Ctx, Load, SetupError};
use crate::driver::Worker;
use crate::report::Report;
use crate::stats::OpError;

/// How many grants or revokes are in flight at once during setup and cleanup.
const ADMIN_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, clap::Args)]
pub struct LeaseArgs {
    #[command(flatten)]
    pub load: Load,
    /// Number of leases to grant and keep alive [default: --clients]
    #[arg(long)]
    pub leases: Option<u64>,
    /// TTL of each lease, in seconds
    #[arg(long, default_value_t = 100)]
    pub ttl: i64,
}

/// Which leases client `client` keeps alive: with at least as many leases as
/// clients, every lease belongs to exactly one client (round-robin);
/// with fewer, clients share them.
pub fn leases_of(client: usize, clients: usize, ids: &[i64]) -> Vec<i64> {
    if ids.len() >= clients {
        ids.iter().skip(client).step_by(clients).copied().collect()
    } else {
        vec![ids[client % ids.len()]]
    }
}

/// The open keep-alive stream: requests go into `tx`, answers come from `rx`.
struct KeepAliveStream {
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    rx: Streaming<LeaseKeepAliveResponse>,
}

pub struct KeepAliveWorker {
    client: LeaseClient<Channel>,
    leases: Vec<i64>,
    next: usize,
    stream: Option<KeepAliveStream>,
}

impl KeepAliveWorker {
    async fn send(&mut self, req: LeaseKeepAliveRequest) -> Result<LeaseKeepAliveResponse, OpError> {
        let closed = || OpError::new("StreamClosed", "lease keep-alive stream closed");
        let stream = match self.stream.take() {
            Some(s) => {
                s.tx.send(req).await.map_err(|_| closed())?;
                s
            }
            None => {
                // The request goes into the channel before the call: a
                // server may hold back the response headers (which the
                // call waits for) until it has something to answer.
                let (tx, rx) = mpsc::channel(1);
                tx.try_send(req).expect("a fresh channel has room");
                let rx = self.client.lease_keep_alive(ReceiverStream::new(rx)).await?.into_inner();
                KeepAliveStream { tx, rx }
            }
        };
        // Taken out above, so a failed send or open leaves no stream and the
        // next request opens a fresh one; a failed answer drops it below, and
        // a timeout while waiting here drops it in `reset`.
        let stream = self.stream.insert(stream);
        match stream.rx.message().await {
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => {
                self.stream = None;
                Err(closed())
            }
            Err(status) => {
                self.stream = None;
                Err(status.into())
            }
        }
    }
}

impl Worker for KeepAliveWorker {
    async fn op(&mut self, _seq: u64) -> Result<(), OpError> {
        let id = self.leases[self.next % self.leases.len()];
        self.next = self.next.wrapping_add(1);
        let resp = self.send(LeaseKeepAliveRequest { id }).await?;
        if resp.id != id {
            return Err(OpError::new("Mismatch", "keep-alive answered for another lease"));
        }
        if resp.ttl <= 0 {
            // etcd answers a keep-alive for an unknown lease with TTL 0.
            return Err(OpError::new("NotFound", "etcdserver: requested lease not found"));
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.stream = None;
    }
}

/// Runs `f` on every item with at most [`ADMIN_CONCURRENCY`] at once, each
/// bounded by `timeout`; returns the results in order.
async fn for_each_bounded<T, R, F, Fut>(items: Vec<T>, timeout: Duration, f: F) -> Vec<Result<R, OpError>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<R, OpError>> + Send + 'static,
{
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(ADMIN_CONCURRENCY));
    let tasks: Vec<_> = items
        .into_iter()
        .map(|item| {
            let fut = f(item);
            let limit = limit.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore never closed");
                tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| Err(OpError::timeout(timeout)))
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("admin task panicked"));
    }
    out
}

pub async fn run(ctx: &Ctx, args: &LeaseArgs) -> Result<Report, SetupError> {
    let leases = args.leases.unwrap_or(ctx.clients as u64);
    if leases == 0 {
        return Err(SetupError::Invalid("--leases must be at least 1".into()));
    }
    if args.ttl <= 0 {
        return Err(SetupError::Invalid("--ttl must be at least 1 second".into()));
    }
    let leases = usize::try_from(leases).map_err(|_| SetupError::Invalid("--leases is too large".into()))?;

    let ttl = args.ttl;
    let grants = for_each_bounded((0..leases).collect(), ctx.timeout, |i| {
        let mut client = ctx.lease(i);
        async move { Ok(client.lease_grant(LeaseGrantRequest { ttl, id: 0 }).await?.into_inner().id) }
    })
    .await;
    let mut ids = Vec::with_capacity(leases);
    let mut grant_error = None;
    for g in grants {
        match g {
            Ok(id) => ids.push(id),
            Err(e) => grant_error = Some(e),
        }
    }
    if let Some(source) = grant_error {
        revoke(ctx, ids).await;
        return Err(SetupError::Rpc { what: "granting leases".into(), source });
    }

    let workers: Vec<KeepAliveWorker> = (0..ctx.clients)
        .map(|i| KeepAliveWorker {
            client: ctx.lease(i),
            leases: leases_of(i, ctx.clients, &ids),
            next: 0,
            stream: None,
        })
        .collect();
    let (workers, phase, warmup_ops) =
        warm_and_measure(ctx, "lease-keepalive", workers, args.load.plan(ctx.timeout)).await;
    // Close the keep-alive streams before revoking.
    drop(workers);
    revoke(ctx, ids).await;

    let mut params = Map::new();
    params.insert("leases".into(), leases.into());
    params.insert("ttl".into(), args.ttl.into());
    args.load.params(&mut params);
    Ok(report(ctx, "lease-keepalive", &phase, warmup_ops, params))
}

/// Revokes the leases; failures are reported on stderr only (the leases
/// expire by themselves after their TTL).
async fn revoke(ctx: &Ctx, ids: Vec<i64>) {
    let n = ids.len();
    let results = for_each_bounded(ids.into_iter().enumerate().collect(), ctx.timeout, |(i, id)| {
        let mut client = ctx.lease(i);
        async move {
            client.lease_revoke(LeaseRevokeRequest { id }).await?;
            Ok(())
        }
    })
    .await;
    let failed: Vec<OpError> = results.into_iter().filter_map(Result::err).collect();
    if let Some(first) = failed.first() {
        eprintln!(
            "warning: {} of {n} leases were not revoked (first error: {first}); they expire after their TTL",
            failed.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn leases_are_split_between_clients() {
        let ids: Vec<i64> = (100..107).collect();
        let per: Vec<Vec<i64>> = (0..3).map(|c| leases_of(c, 3, &ids)).collect();
        assert_eq!(per, [vec![100, 103, 106], vec![101, 104], vec![102, 105]]);
        let all: HashSet<i64> = per.into_iter().flatten().collect();
        assert_eq!(all.len(), ids.len());
    }

    #[test]
    fn fewer_leases_than_clients_are_shared() {
        let ids = [7, 8];
        let per: Vec<Vec<i64>> = (0..5).map(|c| leases_of(c, 5, &ids)).collect();
        assert_eq!(per, [vec![7], vec![8], vec![7], vec![8], vec![7]]);
    }
}
