//! etcd's Watch service: one bidi stream multiplexing many watchers, on the
//! member's [`WatchHub`].
//!
//! Each stream runs one task that reads the client's requests, turns the
//! hub's deliveries into `WatchResponse`s and sends them. The task fills what
//! the hub leaves to it: response headers, `prev_kv` (read at the event's
//! revision − 1, as etcd does), and fragments of responses larger than
//! `--max-request-bytes` for watchers that asked for them. Sending waits only
//! for this stream's client; the hub moves a stream that stops reading aside,
//! so a slow client never holds up apply, writers or other streams.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cairn_api::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch, RangeRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use cairn_api::mvccpb::{event::EventType, Event};
use cairn_storage::Store;
use cairn_watch::{CreateWatch, Delivery, StreamHandle, WatchHub};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::Backend;

/// Responses waiting for a client, per stream (etcd's control-stream size).
const OUT_BUFFER: usize = 16;
/// How often a deferred progress request is retried until every watcher of
/// the stream is synced.
const PROGRESS_RETRY: Duration = Duration::from_millis(100);
/// How often a `hasleader` stream checks that the member still has a leader.
const LEADER_CHECK: Duration = Duration::from_millis(250);

pub struct WatchService {
    backend: Backend,
    hub: WatchHub,
    progress_interval: Duration,
    max_request_bytes: usize,
    /// A `hasleader` stream is canceled after this long without a leader.
    leader_grace: Duration,
}

impl WatchService {
    pub fn new(backend: Backend, hub: WatchHub, progress_interval: Duration, max_request_bytes: usize, election: Duration) -> Self {
        Self { backend, hub, progress_interval, max_request_bytes, leader_grace: 3 * election }
    }
}

type WatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

fn create_watch(mut c: WatchCreateRequest) -> CreateWatch {
    // etcd: an empty key watches from the smallest key.
    if c.key.is_empty() {
        c.key = vec![0];
    }
    CreateWatch {
        watch_id: c.watch_id,
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        key: c.key,
        range_end: c.range_end,
        start_revision: c.start_revision,
        prev_kv: c.prev_kv,
        fragment: c.fragment,
        progress_notify: c.progress_notify,
    }
}

/// Fills each non-create event's `prev_kv` with the key's value just before
/// the event (nothing if that revision is compacted, as in etcd).
fn fill_prev_kv(store: &Store, events: &mut [Event]) {
    for ev in events {
        let Some(kv) = &ev.kv else { continue };
        let is_create = ev.r#type == EventType::Put as i32 && kv.version == 1;
        if is_create || kv.mod_revision <= 1 {
            continue;
        }
        let req = RangeRequest { key: kv.key.clone(), revision: kv.mod_revision - 1, ..Default::default() };
        if let Ok(resp) = store.range(&req) {
            ev.prev_kv = resp.kvs.into_iter().next();
        }
    }
}

/// Splits `resp` into fragments of at most `limit` encoded bytes (at least one
/// event each), all but the last marked `fragment`, as etcd's sendFragments.
fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() <= limit || resp.events.len() <= 1 {
        return vec![resp];
    }
    let mut out = Vec::new();
    let mut current = WatchResponse { events: Vec::new(), ..resp.clone() };
    let base = current.encoded_len();
    let mut size = base;
    for ev in resp.events {
        let ev_len = ev.encoded_len() + 8;
        if !current.events.is_empty() && size + ev_len > limit {
            let next = WatchResponse { events: Vec::new(), ..current.clone() };
            out.push(current);
            current = next;
            size = base;
        }
        size += ev_len;
        current.events.push(ev);
    }
    out.push(current);
    let last = out.len() - 1;
    for (i, r) in out.iter_mut().enumerate() {
        r.fragment = i != last;
    }
    out
}

struct StreamTask {
    backend: Backend,
    handle: StreamHandle,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    max_request_bytes: usize,
}

impl StreamTask {
    async fn send(&self, resp: WatchResponse) -> Result<(), ()> {
        self.out.send(Ok(resp)).await.map_err(|_| ())
    }

    async fn on_request(&self, req: WatchRequest, progress_pending: &mut bool) -> Result<(), ()> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => match self.handle.create(create_watch(c)).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let rev = self.backend.store().current_revision();
                    self.send(WatchResponse {
                        header: Some(self.backend.header(rev)),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: e.to_string(),
                        ..Default::default()
                    })
                    .await
                }
            },
            Some(RequestUnion::CancelRequest(c)) => {
                // An unknown id is ignored, as in etcd.
                self.handle.cancel(c.watch_id).await;
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                if !self.handle.request_progress() {
                    *progress_pending = true;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn on_delivery(&self, d: Delivery) -> Result<(), ()> {
        match d {
            Delivery::Created { watch_id, revision } => {
                self.send(WatchResponse {
                    header: Some(self.backend.header(revision)),
                    watch_id,
                    created: true,
                    ..Default::default()
                })
                .await
            }
            Delivery::Progress { watch_id, revision } => {
                self.send(WatchResponse { header: Some(self.backend.header(revision)), watch_id, ..Default::default() })
                    .await
            }
            Delivery::Canceled { watch_id, compact_revision, reason } => {
                let rev = self.backend.store().current_revision();
                self.send(WatchResponse {
                    header: Some(self.backend.header(rev)),
                    watch_id,
                    canceled: true,
                    compact_revision,
                    cancel_reason: reason,
                    ..Default::default()
                })
                .await
            }
            Delivery::Events { watch_id, revision, mut events, prev_kv, fragment } => {
                if prev_kv {
                    let store = self.backend.store().clone();
                    events = tokio::task::spawn_blocking(move || {
                        fill_prev_kv(&store, &mut events);
                        events
                    })
                    .await
                    .map_err(|_| ())?;
                }
                let resp = WatchResponse { header: Some(self.backend.header(revision)), watch_id, events, ..Default::default() };
                if fragment {
                    for part in fragments(resp, self.max_request_bytes) {
                        self.send(part).await?;
                    }
                    Ok(())
                } else {
                    self.send(resp).await
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<WatchStream>, Status> {
        self.backend.refuse_learner()?;
        // clientv3's WithRequireLeader sets `hasleader: true`.
        let require_leader = request.metadata().get("hasleader").is_some_and(|v| v == "true");
        if require_leader && self.backend.node().status().leader.is_none() {
            return Err(Status::unavailable("etcdserver: no leader"));
        }
        let mut requests = request.into_inner();
        let (handle, mut deliveries) = self.hub.open_stream();
        let (out, rx) = mpsc::channel(OUT_BUFFER);
        let task = StreamTask { backend: self.backend.clone(), handle, out, max_request_bytes: self.max_request_bytes };
        let progress_interval = self.progress_interval;
        let leader_grace = self.leader_grace;
        tokio::spawn(async move {
            let mut progress_tick = tokio::time::interval_at(tokio::time::Instant::now() + progress_interval, progress_interval);
            let mut retry_tick = tokio::time::interval(PROGRESS_RETRY);
            let mut leader_tick = tokio::time::interval(LEADER_CHECK);
            let mut progress_pending = false;
            let mut leaderless_since: Option<tokio::time::Instant> = None;
            loop {
                let step = tokio::select! {
                    req = requests.message() => match req {
                        Ok(Some(req)) => task.on_request(req, &mut progress_pending).await,
                        Ok(None) | Err(_) => Err(()),
                    },
                    d = deliveries.recv() => match d {
                        Some(d) => task.on_delivery(d).await,
                        None => Err(()),
                    },
                    _ = progress_tick.tick() => {
                        task.handle.progress_notify_tick();
                        Ok(())
                    }
                    _ = retry_tick.tick(), if progress_pending => {
                        progress_pending = !task.handle.request_progress();
                        Ok(())
                    }
                    _ = leader_tick.tick(), if require_leader => {
                        if task.backend.node().status().leader.is_some() {
                            leaderless_since = None;
                            Ok(())
                        } else {
                            let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
                            if since.elapsed() >= leader_grace {
                                let _ = task.out.send(Err(Status::unavailable("etcdserver: no leader"))).await;
                                Err(())
                            } else {
                                Ok(())
                            }
                        }
                    }
                };
                if step.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Feeds the state machine's changes to the watch hub.
pub struct HubObserver(pub WatchHub);

impl cairn_raft::ApplyObserver for HubObserver {
    fn applied(&self, revision: i64, events: &[Event]) {
        self.0.notify(revision, events);
    }

    fn restored(&self) {
        self.0.on_restore();
    }
}

/// The watch hub needs the store; the service needs the backend.
pub fn observer(hub: &WatchHub) -> Arc<dyn cairn_raft::ApplyObserver> {
    Arc::new(HubObserver(hub.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::mvccpb::KeyValue;

    fn ev(i: usize, len: usize) -> Event {
        Event { kv: Some(KeyValue { key: format!("k{i}").into_bytes(), value: vec![b'x'; len], ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn fragments_split_large_responses_and_mark_all_but_the_last() {
        let resp = WatchResponse { watch_id: 3, events: (0..10).map(|i| ev(i, 100)).collect(), ..Default::default() };
        let parts = fragments(resp.clone(), 350);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.encoded_len() <= 350 && !p.events.is_empty() && p.watch_id == 3));
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts.last().unwrap().fragment);
        let joined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, resp.events);
        // Small responses, and single huge events, are sent whole.
        assert_eq!(fragments(resp.clone(), 1 << 20), vec![resp]);
        let one = WatchResponse { events: vec![ev(0, 1000)], ..Default::default() };
        assert_eq!(fragments(one.clone(), 10), vec![one]);
    }
}
