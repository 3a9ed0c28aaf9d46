//! Talking to the cluster: one independent `etcd-client` per logical
//! process, the history recorder, the classification of errors into
//! definite failures and unknown outcomes, and the maintenance calls the
//! harness itself makes (leader, revision, hash).

use std::sync::Mutex;
use std::time::Duration;

use etcd_client::Client;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::Code;

use crate::history::{Event, EventType, RunClock};

/// Connects a client to one endpoint. The channel connects lazily, so
/// this never waits for the server; a request to a server that refuses
/// connections fails at once with a connect error.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let channel = Channel::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(Client::from_channel(etcd_client::Channel::Tonic(channel), None).await?)
}

/// Appends events to the history, stamping each with the next index and
/// the run clock, under one lock so index order is time order.
pub struct Recorder {
    clock: RunClock,
    events: Mutex<Vec<Event>>,
}

/// What an operation's completion records.
pub struct Completion {
    pub kind: EventType,
    pub value: Value,
    pub error: Option<String>,
    pub rev: Option<i64>,
}

impl Recorder {
    pub fn new(clock: RunClock) -> Self {
        Self {
            clock,
            events: Mutex::new(Vec::new()),
        }
    }

    fn push(&self, make: impl FnOnce(u64, u64) -> Event) -> u64 {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let t_ns = self.clock.now_ns();
        let index = events.len() as u64;
        events.push(make(index, t_ns));
        t_ns
    }

    /// Records an invoke; returns its time.
    pub fn invoke(
        &self,
        process: u64,
        f: &str,
        key: Option<&str>,
        value: &Value,
        node: &str,
    ) -> u64 {
        self.push(|index, t_ns| Event {
            index,
            kind: EventType::Invoke,
            process,
            f: f.to_string(),
            key: key.map(str::to_string),
            value: value.clone(),
            t_ns,
            node: Some(node.to_string()),
            error: None,
            rev: None,
        })
    }

    /// Records a completion; returns its time.
    pub fn complete(
        &self,
        process: u64,
        f: &str,
        key: Option<&str>,
        node: &str,
        done: Completion,
    ) -> u64 {
        self.push(|index, t_ns| Event {
            index,
            kind: done.kind,
            process,
            f: f.to_string(),
            key: key.map(str::to_string),
            value: done.value,
            t_ns,
            node: Some(node.to_string()),
            error: done.error,
            rev: done.rev,
        })
    }

    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// How an error ends an operation: `Fail` if the operation certainly did
/// not take effect, `Info` if it may have.
///
/// Reads (`idempotent`) change nothing, so an unknown read is as good as a
/// failed one: they always `Fail`, and their process lives on.
///
/// For writes, only errors that prove the request was never applied are
/// definite: etcd's validation and precondition errors (invalid argument,
/// compacted or future revision, lease not found, not leader, learner),
/// and connections that were refused, so nothing was sent. Everything else
/// — timeouts, "no leader" and "request timed out" (the proposal may
/// already be in the log), a connection lost after sending, a server
/// stopping — leaves the outcome unknown.
pub fn classify(err: &etcd_client::Error, idempotent: bool) -> (EventType, String) {
    let text = describe(err);
    if idempotent {
        return (EventType::Fail, text);
    }
    let kind = match err {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::InvalidArgument
            | Code::OutOfRange
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::ResourceExhausted
            | Code::Unimplemented => EventType::Fail,
            Code::Unavailable if status.message().contains("rpc not supported for learner") => {
                EventType::Fail
            }
            _ if never_connected(err) => EventType::Fail,
            _ => EventType::Info,
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            if never_connected(err) {
                EventType::Fail
            } else {
                EventType::Info
            }
        }
        // Rejected by the client library before anything was sent.
        etcd_client::Error::InvalidArgs(_)
        | etcd_client::Error::InvalidUri(_)
        | etcd_client::Error::Utf8Error(_)
        | etcd_client::Error::InvalidMetadataValue(_)
        | etcd_client::Error::EndpointError(_)
        | etcd_client::Error::EndpointsNotManaged => EventType::Fail,
        _ => EventType::Info,
    };
    (kind, text)
}

/// The error's cause chain. `etcd_client::Error` reports no source of its
/// own, so the chain starts at the error it wraps.
fn causes(err: &etcd_client::Error) -> Option<&(dyn std::error::Error + 'static)> {
    match err {
        etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s),
        etcd_client::Error::TransportError(e) => Some(e),
        etcd_client::Error::IoError(e) => Some(e),
        _ => None,
    }
}

/// Whether the error chain says the TCP connection was refused (nothing
/// was sent).
fn never_connected(err: &etcd_client::Error) -> bool {
    let mut source = causes(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// The error with its causes, on one line.
pub fn describe(err: &etcd_client::Error) -> String {
    let mut text = match err {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    let mut source = causes(err);
    while let Some(e) = source {
        let cause = e.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = e.source();
    }
    text
}

/// A member's view from Maintenance Status.
#[derive(Debug, Clone, Copy)]
pub struct MemberStatus {
    pub member_id: u64,
    pub leader: u64,
    pub revision: i64,
}

pub async fn status(client: &mut Client, timeout: Duration) -> Option<MemberStatus> {
    let response = tokio::time::timeout(timeout, client.status())
        .await
        .ok()?
        .ok()?;
    let header = response.header()?;
    Some(MemberStatus {
        member_id: header.member_id(),
        leader: response.leader(),
        revision: header.revision(),
    })
}

/// The index of the member that reports itself as a live leader, if any.
pub async fn find_leader(clients: &mut [Client], timeout: Duration) -> Option<usize> {
    let statuses = futures_statuses(clients, timeout).await;
    statuses
        .iter()
        .position(|s| s.is_some_and(|s| s.leader != 0 && s.leader == s.member_id))
}

async fn futures_statuses(clients: &mut [Client], timeout: Duration) -> Vec<Option<MemberStatus>> {
    let mut tasks = Vec::new();
    for client in clients.iter() {
        let mut client = client.clone();
        tasks.push(tokio::spawn(
            async move { status(&mut client, timeout).await },
        ));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.ok().flatten());
    }
    out
}

/// Whether some member is a live leader and a linearizable read through
/// every member succeeds.
pub async fn serving(clients: &mut [Client]) -> bool {
    if find_leader(clients, Duration::from_millis(500))
        .await
        .is_none()
    {
        return false;
    }
    for client in clients.iter_mut() {
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            client.get("cairn-jepsen-probe", None),
        )
        .await;
        if !matches!(read, Ok(Ok(_))) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing listens on the port: the put was never sent, so it failed.
    #[tokio::test]
    async fn a_refused_connection_is_a_definite_failure() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut client = connect(&format!("http://127.0.0.1:{port}")).await.unwrap();
        let err = client.put("k", "v", None).await.unwrap_err();
        assert!(
            describe(&err).contains("Connection refused"),
            "{}",
            describe(&err)
        );
        assert_eq!(
            classify(&err, false).0,
            EventType::Fail,
            "{}",
            describe(&err)
        );
    }
}
