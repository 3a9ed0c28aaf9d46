//! Plain HTTP endpoints served on the client port next to gRPC, as etcd does.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cairn_api::etcdserverpb::RangeRequest;

use crate::backend::Backend;
use crate::maintenance::{ETCD_CLUSTER_VERSION, ETCD_VERSION};

/// etcd's default request timeout (5 s + 2 × the 1 s election timeout).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(7);

pub fn router(backend: Backend) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .with_state(backend)
}

/// Anything unrouted: gRPC's Unimplemented for gRPC calls (services not built
/// yet), and etcd's plain `404 page not found` for everything else.
pub async fn fallback(req: axum::extract::Request) -> axum::response::Response {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if is_grpc {
        // grpc-go's wording for a service the server does not register.
        let service = req.uri().path().trim_start_matches('/').split('/').next().unwrap_or_default();
        tonic::Status::unimplemented(format!("unknown service {service}")).into_http()
    } else {
        (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "404 page not found\n")
            .into_response()
    }
}

fn json(status: StatusCode, body: String) -> impl IntoResponse {
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// Healthy when the member has a leader and can serve a read, like etcd's
/// `/health`; `?serializable=true` skips the leader check and reads locally
/// (what a learner or a member cut off from the quorum can still do).
async fn health(State(backend): State<Backend>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let serializable = query.as_deref().is_some_and(|q| q.split('&').any(|p| p == "serializable=true"));
    let probe = RangeRequest { key: b"health".to_vec(), keys_only: true, limit: 1, serializable, ..Default::default() };
    let reason = if !serializable && backend.node().status().leader.is_none() {
        "RAFT NO LEADER".to_string()
    } else {
        match tokio::time::timeout(HEALTH_TIMEOUT, backend.range(probe)).await {
            Ok(Ok(_)) => return json(StatusCode::OK, r#"{"health":"true","reason":""}"#.to_string()),
            Ok(Err(e)) => format!("RANGE ERROR: {e}"),
            Err(_) => "RANGE TIMEOUT".to_string(),
        }
    };
    tracing::warn!(%reason, "serving /health false");
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(r#"{{"health":"false","reason":{}}}"#, quote(&reason)),
    )
}

async fn version() -> impl IntoResponse {
    json(
        StatusCode::OK,
        format!(r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}"}}"#),
    )
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
