//! `cairn`: a member of a Cairn cluster, speaking etcd's v3 gRPC API and
//! etcd's HTTP endpoints on its client URLs.

mod backend;
mod config;
mod error;
mod http;
mod ids;
mod kv;
mod maintenance;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cairn_api::etcdserverpb::{kv_server::KvServer, maintenance_server::MaintenanceServer};
use cairn_storage::{RocksEngine, Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::backend::Backend;
use crate::config::Config;

/// Extra room gRPC allows above `--max-request-bytes`, as etcd does, so that an
/// oversized request reaches our own size check and gets etcd's error text.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How long shutdown waits for in-flight requests before closing connections.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

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
    let listen = cfg.listen_client_urls().map_err(anyhow::Error::msg)?;
    let data_dir = cfg.data_dir();
    let db_dir = data_dir.join("member").join("db");
    std::fs::create_dir_all(&db_dir)
        .with_context(|| format!("cannot use data dir {}", data_dir.display()))?;
    let engine = RocksEngine::open(&db_dir).with_context(|| {
        format!("cannot open data dir {} (is another member using it?)", data_dir.display())
    })?;
    let store = Store::open(
        Arc::new(engine),
        StoreConfig {
            compaction_batch_limit: cfg.compaction_batch_limit as usize,
            compaction_sleep: cfg.compaction_sleep_interval,
            sync_writes: true,
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

    let member_id = ids::member_id(&cfg.peer_urls(), &cfg.initial_cluster_token);
    let cluster_id = ids::cluster_id(&[member_id]);
    let (backend, writer) = Backend::start(store.clone(), cfg.max_request_bytes as usize, member_id, cluster_id)
        .context("cannot start the writer thread")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    for (url, listener) in listeners {
        let routes = grpc_routes(&backend, &cfg);
        let mut stop = stop_rx.clone();
        tracing::info!(url = %url, "serving client requests");
        servers.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .accept_http1(true)
                .layer(tower::layer::layer_fn(error::OversizeAsResourceExhausted))
                .add_routes(routes)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        }));
    }
    tracing::info!(
        name = %cfg.name,
        data_dir = %data_dir.display(),
        member_id = format!("{member_id:x}"),
        cluster_id = format!("{cluster_id:x}"),
        advertise_client_urls = ?cfg.advertise_client_urls(),
        revision = store.current_revision(),
        "ready to serve client requests"
    );

    shutdown_signal().await?;
    tracing::info!("shutting down: draining requests");
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
    backend.stop().await;
    tokio::task::spawn_blocking(move || writer.join()).await.ok();
    store.close().context("cannot flush the store")?;
    tracing::info!("stopped");
    Ok(())
}

fn grpc_routes(backend: &Backend, cfg: &Config) -> tonic::service::Routes {
    let max_decode = cfg.max_request_bytes as usize + GRPC_OVERHEAD_BYTES;
    let kv = KvServer::new(kv::KvService::new(backend.clone(), cfg.max_txn_ops as usize))
        .max_decoding_message_size(max_decode);
    let maintenance = MaintenanceServer::new(maintenance::MaintenanceService::new(backend.clone()))
        .max_decoding_message_size(max_decode);
    // Unknown gRPC methods (services not built yet) fall back to gRPC's
    // Unimplemented; the HTTP endpoints sit beside them on the same port.
    let grpc = tonic::service::Routes::default()
        .add_service(kv)
        .add_service(maintenance)
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
