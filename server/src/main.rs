//! `cairn`: a member of a Cairn cluster, speaking etcd's v3 gRPC API and
//! etcd's HTTP endpoints on its client URLs.

/// mimalloc instead of glibc malloc: the gRPC and Raft paths allocate many
/// small buffers freed on other threads, where glibc's arenas cost about an
/// eighth of the server's CPU under write load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backend;
mod bugs;
mod cluster;
mod config;
mod error;
mod http;
mod identity;
mod ids;
mod kv;
mod lease;
mod maintenance;
mod watch;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cairn_api::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use cairn_raft::{Member, NodeConfig, RaftNode};
use cairn_storage::{RocksEngine, Store, StoreConfig};
use cairn_watch::{HubConfig, WatchHub};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::backend::Backend;
use crate::config::Config;
use crate::identity::Identity;

/// Extra room gRPC allows above `--max-request-bytes`, as etcd does, so that an
/// oversized request reaches our own size check and gets etcd's error text.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How long shutdown waits for in-flight requests before closing connections.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// How many times a joining member asks its peers for a membership that
/// includes it, [`JOIN_RETRY_INTERVAL`] apart, before giving up.
const JOIN_ATTEMPTS: u32 = 20;
const JOIN_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

fn main() -> ExitCode {
    let cfg = match Config::parse_from_env(std::env::args_os().collect::<Vec<OsString>>(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    init_logging(&cfg);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cairn exiting");
            eprintln!("cairn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &Config) {
    let level = match cfg.log_level.as_str() {
        "panic" | "fatal" => "error",
        l => l,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let stdout = cfg.log_outputs == "stdout";
    match (cfg.log_format.as_str(), stdout) {
        ("json", false) => builder.json().with_writer(std::io::stderr).init(),
        ("json", true) => builder.json().with_writer(std::io::stdout).init(),
        (_, false) => builder.with_writer(std::io::stderr).init(),
        (_, true) => builder.with_writer(std::io::stdout).init(),
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    bugs::init(std::env::var_os(bugs::ENV))?;
    cfg.check_timeouts().map_err(anyhow::Error::msg)?;
    let listen = cfg.listen_client_urls().map_err(anyhow::Error::msg)?;
    let listen_peer = cfg.listen_peer_urls().map_err(anyhow::Error::msg)?;
    let data_dir = cfg.data_dir();
    let member_dir = data_dir.join("member");
    let db_dir = member_dir.join("db");
    std::fs::create_dir_all(&db_dir)
        .with_context(|| format!("cannot use data dir {}", data_dir.display()))?;
    let engine = RocksEngine::open(&db_dir).with_context(|| {
        format!("cannot open data dir {} (is another member using it?)", data_dir.display())
    })?;
    // The Raft log is fsynced on a quorum before anything is applied, and
    // openraft re-applies committed entries after a crash, so the state
    // machine's batches need no fsync of their own.
    let store = Store::open(
        Arc::new(engine),
        StoreConfig {
            compaction_batch_limit: cfg.compaction_batch_limit as usize,
            compaction_sleep: cfg.compaction_sleep_interval,
            sync_writes: false,
        },
    )
    .with_context(|| format!("cannot load data dir {}", data_dir.display()))?;

    // Bind every listener before serving anything, so a port in use fails start-up.
    let mut listeners = Vec::new();
    for url in &listen {
        let addr = url.resolve().await.with_context(|| format!("cannot resolve {}", url.url))?;
        let l = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {}", url.url))?;
        listeners.push((url.url.clone(), l));
    }
    let mut peer_listeners = Vec::new();
    for url in &listen_peer {
        let addr = url.resolve().await.with_context(|| format!("cannot resolve {}", url.url))?;
        let l = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {}", url.url))?;
        peer_listeners.push((url.url.clone(), l));
    }

    let (identity, initial_members) = decide_identity(&cfg, &member_dir).await?;
    let node_cfg = NodeConfig {
        id: identity.member_id,
        cluster_id: identity.cluster_id,
        heartbeat: Duration::from_millis(cfg.heartbeat_interval),
        election: Duration::from_millis(cfg.election_timeout),
        snapshot_count: cfg.snapshot_count,
        snapshot_catchup_entries: cfg.snapshot_catchup_entries,
        // etcd: 5 s plus two election timeouts.
        request_timeout: Duration::from_secs(5) + 2 * Duration::from_millis(cfg.election_timeout),
        log_dir: member_dir.join("raft"),
        snapshot_dir: member_dir.join("snap"),
    };
    let hub = WatchHub::new(store.clone(), HubConfig::default());
    let node = RaftNode::start(node_cfg, store.clone(), Some(watch::observer(&hub))).await.context("cannot start raft")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut peer_servers = Vec::new();
    for (url, listener) in peer_listeners {
        let service = node.peer_service();
        let mut stop = stop_rx.clone();
        tracing::info!(url = %url, "serving peer traffic");
        peer_servers.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(no_delay(listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        }));
    }
    if let Some(members) = initial_members {
        node.bootstrap(members).await.context("cannot bootstrap the cluster")?;
    }
    let me = Member { name: cfg.name.clone(), peer_urls: cfg.peer_urls(), client_urls: cfg.advertise_client_urls() };
    let publisher = tokio::spawn({
        let node = node.clone();
        async move { node.publish(me).await }
    });

    let backend = Backend::new(node.clone(), cfg.max_request_bytes as usize);
    let mut servers = Vec::new();
    for (url, listener) in listeners {
        let routes = grpc_routes(&backend, &hub, &cfg);
        let mut stop = stop_rx.clone();
        tracing::info!(url = %url, "serving client requests");
        servers.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .accept_http1(true)
                .layer(tower::layer::layer_fn(error::OversizeAsResourceExhausted))
                .add_routes(routes)
                .serve_with_incoming_shutdown(no_delay(listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        }));
    }
    tracing::info!(
        name = %cfg.name,
        data_dir = %data_dir.display(),
        member_id = format!("{:x}", identity.member_id),
        cluster_id = format!("{:x}", identity.cluster_id),
        advertise_client_urls = ?cfg.advertise_client_urls(),
        revision = store.current_revision(),
        "ready to serve client requests"
    );

    shutdown_signal().await?;
    tracing::info!("shutting down: draining requests");
    publisher.abort();
    let _ = stop_tx.send(true);
    // Connections get GOAWAY and in-flight requests may finish, but clients
    // that keep idle connections open must not hold the shutdown hostage.
    let drain = async {
        for s in &mut servers {
            if let Ok(Err(e)) = s.await {
                tracing::warn!(error = %e, "client server stopped with an error");
            }
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "closing connections still open after the drain timeout");
        for s in &servers {
            s.abort();
        }
    }
    node.shutdown().await;
    hub.shutdown();
    for s in &peer_servers {
        s.abort();
    }
    drop(backend);
    store.close().context("cannot flush the store")?;
    tracing::info!("stopped");
    Ok(())
}

/// Decides (first start) or loads (restart) this member's identity. For the
/// first start of a new cluster's member it also returns the initial
/// membership to bootstrap with.
async fn decide_identity(
    cfg: &Config,
    member_dir: &std::path::Path,
) -> anyhow::Result<(Identity, Option<BTreeMap<u64, Member>>)> {
    let initial = cfg.initial_cluster().map_err(anyhow::Error::msg)?;
    let mut my_urls = cfg.peer_urls();
    my_urls.sort();
    let same_urls = |urls: &[String]| {
        let mut u = urls.to_vec();
        u.sort();
        u == my_urls
    };
    let initial_members = || -> anyhow::Result<BTreeMap<u64, Member>> {
        let mut members = BTreeMap::new();
        for (name, urls) in &initial {
            let id = ids::member_id(urls, &cfg.initial_cluster_token);
            // Identical on every initial member: each publishes its own
            // client URLs once the cluster runs.
            members.insert(id, Member { name: name.clone(), peer_urls: urls.clone(), client_urls: Vec::new() });
        }
        Ok(members)
    };
    if let Some(id) = identity::load(member_dir)? {
        let members = if id.initial { Some(initial_members()?) } else { None };
        return Ok((id, members));
    }
    let Some((_, urls)) = initial.iter().find(|(n, _)| n == &cfg.name) else {
        bail!("couldn't find local name {:?} in the initial cluster configuration", cfg.name);
    };
    if !same_urls(urls) {
        bail!(
            "--initial-cluster has {} mapped to {:?}, but --initial-advertise-peer-urls is {:?}",
            cfg.name,
            urls,
            cfg.peer_urls()
        );
    }
    let (identity, members) = if cfg.initial_cluster_state == "new" {
        let members = initial_members()?;
        let ids: Vec<u64> = members.keys().copied().collect();
        let id = Identity {
            member_id: ids::member_id(&cfg.peer_urls(), &cfg.initial_cluster_token),
            cluster_id: ids::cluster_id(&ids),
            initial: true,
        };
        (id, Some(members))
    } else {
        let mut peers: Vec<String> =
            initial.iter().filter(|(n, _)| n != &cfg.name).flat_map(|(_, u)| u.clone()).collect();
        // No peer may answer yet (they are restarting too), and the peer
        // that answers first may not have applied the MemberAdd yet (a
        // follower that lags, or one just restarted): ask again, starting
        // from the next peer each time, for a bounded while.
        let mut attempt = 0;
        let (cluster_id, me) = loop {
            let error = match RaftNode::discover(&peers).await {
                Ok((cluster_id, members)) => match members.iter().find(|m| same_urls(&m.member.peer_urls)) {
                    Some(me) => break (cluster_id, me.id),
                    None => anyhow::anyhow!(
                        "this member's peer URLs {:?} are not in the cluster's membership; add it first (etcdctl member add)",
                        cfg.peer_urls()
                    ),
                },
                Err(e) => anyhow::Error::new(e).context("cannot join the existing cluster"),
            };
            attempt += 1;
            if attempt >= JOIN_ATTEMPTS {
                return Err(error);
            }
            tracing::info!(attempt, error = format!("{error:#}"), "cannot join yet; asking again");
            peers.rotate_left(1);
            tokio::time::sleep(JOIN_RETRY_INTERVAL).await;
        };
        (Identity { member_id: me, cluster_id, initial: false }, None)
    };
    identity::store(member_dir, &identity)?;
    Ok((identity, members))
}

fn grpc_routes(backend: &Backend, hub: &WatchHub, cfg: &Config) -> tonic::service::Routes {
    let max_decode = cfg.max_request_bytes as usize + GRPC_OVERHEAD_BYTES;
    let kv = KvServer::new(kv::KvService::new(backend.clone(), cfg.max_txn_ops as usize))
        .max_decoding_message_size(max_decode);
    let maintenance = MaintenanceServer::new(maintenance::MaintenanceService::new(backend.clone()))
        .max_decoding_message_size(max_decode);
    let cluster = ClusterServer::new(cluster::ClusterService::new(backend.clone())).max_decoding_message_size(max_decode);
    let watch = WatchServer::new(watch::WatchService::new(
        backend.clone(),
        hub.clone(),
        cfg.watch_progress_notify_interval,
        max_decode,
        Duration::from_millis(cfg.election_timeout),
    ))
    .max_decoding_message_size(max_decode);
    let lease = LeaseServer::new(lease::LeaseService::new(backend.clone(), Duration::from_millis(cfg.election_timeout)))
        .max_decoding_message_size(max_decode);
    // Unknown gRPC methods (services not built yet) fall back to gRPC's
    // Unimplemented; the HTTP endpoints sit beside them on the same port.
    let grpc = tonic::service::Routes::default()
        .add_service(kv)
        .add_service(maintenance)
        .add_service(cluster)
        .add_service(watch)
        .add_service(lease)
        .into_axum_router()
        .fallback(http::fallback);
    tonic::service::Routes::from(grpc.merge(http::router(backend.clone())))
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
    Ok(())
}

/// Accepted connections with Nagle's algorithm off. tonic's own nodelay
/// setting only applies to listeners it binds, and with Nagle on, a small
/// response queued behind a not-yet-acknowledged segment (a watch event and
/// a put's reply on one connection, a Raft append and its ack) waits for
/// the peer's delayed ACK: about 40 ms per request on Linux.
fn no_delay(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
