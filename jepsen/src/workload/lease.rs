//! The `lease` workload: leases granted, kept alive, attached to keys,
//! revoked and left to expire, checked by [`crate::checker::lease`].
//!
//! Each logical process owns up to [`MAX_OWNED`] leases, granted with a TTL
//! of 2–6 s. Some it keeps alive (one keep-alive round every TTL/3) for
//! 2–8 s and then revokes; the others it abandons right after granting,
//! using them only until their TTL (plus a second, so some puts race the
//! expiry) has passed. A process whose operation had an unknown outcome
//! takes a new id and so abandons whatever it owned. The mix, after renewals
//! and revokes that are due and a first key for a lease that has none:
//!
//! | share | operation |
//! |---|---|
//! | 23 % | grant |
//! | 30 % | put of a key attached to an owned lease: a new key while it has fewer than `--keys` (60 %), else an overwrite |
//! | 20 % | linearizable read of a lease's keys (an owned or a recent lease, ended ones included) |
//! | 10 % | `TimeToLive` with keys of an owned or recent lease |
//! | 7 % | a probe of an ended lease: an attached put (must fail) or a keep-alive (must answer TTL 0) |
//! | 4 % | delete of one key of an owned lease |
//! | 6 % | an extra keep-alive of an owned kept lease |
//!
//! An operation that does not apply (a grant with [`MAX_OWNED`] leases
//! owned, a put with none, a probe with no ended lease, …) becomes the next
//! one in the table that does, else a grant or a read. A lease's keys are
//! `<prefix>l<lease>/k<n>`, each value unique.
//!
//! Expiry is invisible to client operations, so the workload runs an
//! [`Observer`] beside them: one watcher on the prefix from the revision
//! after setup, resuming where it left off whenever its stream fails or
//! stalls, recording every event with its arrival time on the history's
//! clock. After the run, [`LeaseWorkload::drain`] waits (bounded) until
//! every lease has ended, asking `TimeToLive` of the open ones every second
//! (recorded in the history), then writes a sentinel key, waits for the
//! observer to receive it and writes the observer's log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, DeleteOptions, GetOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Action, Executed, PlannedOp, Values, Workload};
use crate::checker::lease::{
    lease_key, lease_prefix, write_observer_log, LeaseRequest, LeaseResponse, ObservedEvent,
    ObserverRecord, ReadKv, WatchKind, OBSERVER_LOG,
};
use crate::client::{self, Recorder};
use crate::history::{EventType, RunClock};

/// Leases a process owns at a time, at most.
pub const MAX_OWNED: usize = 2;
/// Granted TTLs, in seconds (etcd's minimum with a 1 s election timeout is 2).
const TTL_RANGE: std::ops::RangeInclusive<i64> = 2..=6;
pub const MAX_TTL: Duration = Duration::from_secs(6);
/// How long a kept lease lives before its owner revokes it, in ms.
const KEPT_MS: std::ops::Range<u64> = 2_000..8_000;
/// Share of grants whose lease is kept alive (the rest are abandoned).
const KEEP_SHARE: f64 = 0.6;
/// Recent leases other processes read and probe.
const RECENT: usize = 32;
/// Process ids of the drain's `TimeToLive` operations, apart from the
/// workers' and the harness's final writes (`1 << 40`).
const DRAIN_PROCESS: u64 = 1 << 41;
/// How long the observer waits for its stream before asking for progress,
/// and how long an unanswered progress request means a stalled member.
const OBSERVER_IDLE: Duration = Duration::from_secs(1);
const OBSERVER_STALL: Duration = Duration::from_secs(3);
const OBSERVER_CONNECT: Duration = Duration::from_secs(2);
const OBSERVER_RETRY: Duration = Duration::from_millis(200);
/// How long the observer gets to receive the sentinel after the run.
const OBSERVER_CATCH_UP: Duration = Duration::from_secs(10);

/// A lease operation: the request and, for a grant, what to do with the lease.
#[derive(Debug, Clone)]
pub struct LeaseAction {
    /// The process that plans it (it owns the leases it grants).
    pub process: u64,
    pub request: LeaseRequest,
    /// A grant's plan: keep the lease alive this long, then revoke it;
    /// `None`: abandon it to expire.
    pub keep_for: Option<Duration>,
}

/// A lease its process uses.
#[derive(Debug)]
struct Owned {
    id: i64,
    ttl: i64,
    /// Kept alive until then, then revoked; `None`: abandoned.
    keep_until: Option<Instant>,
    /// An abandoned lease is used until then.
    use_until: Instant,
    last_renewal: Instant,
    next_key: usize,
    /// Keys written and not deleted, as far as the owner knows.
    live: Vec<String>,
}

impl Owned {
    fn kept(&self) -> bool {
        self.keep_until.is_some()
    }

    fn renewal_due(&self, now: Instant) -> bool {
        let every = Duration::from_millis((self.ttl.max(1) as u64) * 1000 / 3);
        self.kept() && now.saturating_duration_since(self.last_renewal) >= every
    }
}

#[derive(Debug, Clone, Copy)]
struct Known {
    id: i64,
    /// Revoked, or reported missing by the server.
    ended: bool,
}

#[derive(Default)]
struct State {
    /// The store's revision when the run started.
    start_rev: i64,
    owned: HashMap<u64, Vec<Owned>>,
    /// Every lease granted, in grant order.
    leases: Vec<Known>,
}

impl State {
    fn end(&mut self, id: i64) {
        for owned in self.owned.values_mut() {
            owned.retain(|o| o.id != id);
        }
        if let Some(k) = self.leases.iter_mut().find(|k| k.id == id) {
            k.ended = true;
        }
    }

    fn owned_by(&mut self, process: u64, id: i64) -> Option<&mut Owned> {
        self.owned
            .get_mut(&process)?
            .iter_mut()
            .find(|o| o.id == id)
    }
}

pub struct LeaseWorkload {
    prefix: String,
    keys_per_lease: usize,
    values: Values,
    state: Mutex<State>,
    observer: Mutex<Option<Observer>>,
}

fn planned(process: u64, request: LeaseRequest, keep_for: Option<Duration>) -> PlannedOp {
    PlannedOp {
        f: request.function(),
        key: request.lease().map(|l| l.to_string()),
        value: serde_json::to_value(&request).expect("requests serialize"),
        idempotent: matches!(
            request,
            LeaseRequest::Ttl { .. } | LeaseRequest::Read { .. }
        ),
        action: Action::Lease(LeaseAction {
            process,
            request,
            keep_for,
        }),
    }
}

impl LeaseWorkload {
    pub fn new(prefix: String, keys_per_lease: usize) -> Self {
        Self {
            prefix,
            keys_per_lease: keys_per_lease.max(1),
            values: Values::default(),
            state: Mutex::new(State::default()),
            observer: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the starting revision; the prefix must be empty.
    pub async fn setup(&self, client: &mut Client) -> anyhow::Result<()> {
        let start = super::require_empty_prefix(client, &self.prefix).await?;
        self.lock().start_rev = start.unwrap_or(0);
        Ok(())
    }

    /// Starts the observer from the revision after setup.
    pub fn start(&self, urls: &[String], clock: RunClock) {
        let from_rev = self.lock().start_rev + 1;
        let observer = Observer::spawn(urls.to_vec(), self.prefix.clone(), from_rev, clock);
        *self.observer.lock().unwrap_or_else(|e| e.into_inner()) = Some(observer);
    }

    fn put(&self, process: u64, owned: &mut Owned, rng: &mut StdRng) -> PlannedOp {
        let key = if owned.next_key < self.keys_per_lease
            && (owned.live.is_empty() || rng.random_bool(0.6))
        {
            owned.next_key += 1;
            lease_key(&self.prefix, owned.id, owned.next_key - 1)
        } else {
            owned
                .live
                .choose(rng)
                .cloned()
                .unwrap_or_else(|| lease_key(&self.prefix, owned.id, 0))
        };
        planned(
            process,
            LeaseRequest::Put {
                key,
                value: self.values.next(process),
                lease: owned.id,
            },
            None,
        )
    }

    fn read_or_ttl(&self, process: u64, id: i64, read: bool) -> PlannedOp {
        let request = if read {
            LeaseRequest::Read {
                id,
                prefix: lease_prefix(&self.prefix, id),
            }
        } else {
            LeaseRequest::Ttl { id }
        };
        planned(process, request, None)
    }

    fn grant(&self, process: u64, rng: &mut StdRng) -> PlannedOp {
        let keep_for = rng
            .random_bool(KEEP_SHARE)
            .then(|| Duration::from_millis(rng.random_range(KEPT_MS)));
        planned(
            process,
            LeaseRequest::Grant {
                ttl: rng.random_range(TTL_RANGE),
            },
            keep_for,
        )
    }

    pub fn plan(&self, rng: &mut StdRng, process: u64) -> PlannedOp {
        let now = Instant::now();
        let mut guard = self.lock();
        let state = &mut *guard;
        let owned = state.owned.entry(process).or_default();
        owned.retain(|o| o.kept() || now < o.use_until);

        if let Some(o) = owned
            .iter()
            .filter(|o| o.renewal_due(now))
            .min_by_key(|o| o.last_renewal)
        {
            return planned(process, LeaseRequest::Keepalive { id: o.id }, None);
        }
        if let Some(o) = owned
            .iter()
            .find(|o| o.keep_until.is_some_and(|t| now >= t))
        {
            return planned(process, LeaseRequest::Revoke { id: o.id }, None);
        }
        if let Some(o) = owned.iter_mut().find(|o| o.next_key == 0) {
            return self.put(process, o, rng);
        }

        let recent: Vec<Known> = state.leases.iter().rev().take(RECENT).copied().collect();
        let ended: Vec<i64> = recent.iter().filter(|k| k.ended).map(|k| k.id).collect();
        // An owned lease half of the time, else a recent one (perhaps ended).
        let some_lease = |rng: &mut StdRng, owned: &[Owned]| -> Option<i64> {
            match (owned.choose(rng), recent.choose(rng)) {
                (Some(o), Some(k)) => Some(if rng.random_bool(0.5) { o.id } else { k.id }),
                (o, k) => o.map(|o| o.id).or(k.map(|k| k.id)),
            }
        };
        let has_keys = owned.iter().any(|o| !o.live.is_empty());
        let has_kept = owned.iter().any(Owned::kept);
        let roll = rng.random_range(0..100);
        match roll {
            0..=14 | 92..=99 if owned.len() < MAX_OWNED => self.grant(process, rng),
            0..=44 if !owned.is_empty() => {
                let i = rng.random_range(0..owned.len());
                self.put(process, &mut owned[i], rng)
            }
            45..=74 if !owned.is_empty() || !recent.is_empty() => {
                let id = some_lease(rng, owned).expect("a lease exists");
                self.read_or_ttl(process, id, roll < 65)
            }
            75..=81 if !ended.is_empty() => {
                let id = *ended.choose(rng).expect("not empty");
                if rng.random_bool(0.5) {
                    planned(
                        process,
                        LeaseRequest::Put {
                            key: lease_key(&self.prefix, id, 0),
                            value: self.values.next(process),
                            lease: id,
                        },
                        None,
                    )
                } else {
                    planned(process, LeaseRequest::Keepalive { id }, None)
                }
            }
            82..=85 if has_keys => {
                let o = owned
                    .iter()
                    .filter(|o| !o.live.is_empty())
                    .collect::<Vec<_>>()
                    .choose(rng)
                    .map(|o| (o.id, o.live.clone()))
                    .expect("a lease with keys");
                let key = o.1.choose(rng).expect("not empty").clone();
                planned(process, LeaseRequest::Delete { id: o.0, key }, None)
            }
            86..=91 if has_kept => {
                let id = owned
                    .iter()
                    .filter(|o| o.kept())
                    .collect::<Vec<_>>()
                    .choose(rng)
                    .map(|o| o.id)
                    .expect("a kept lease");
                planned(process, LeaseRequest::Keepalive { id }, None)
            }
            _ if owned.len() < MAX_OWNED => self.grant(process, rng),
            _ => {
                let id = owned.choose(rng).expect("MAX_OWNED leases").id;
                self.read_or_ttl(process, id, true)
            }
        }
    }

    /// A put without a lease, outside every lease's keys.
    pub fn final_write(&self, process: u64) -> PlannedOp {
        planned(
            process,
            LeaseRequest::Put {
                key: format!("{}final", self.prefix),
                value: self.values.next(process),
                lease: 0,
            },
            None,
        )
    }

    pub fn observe(&self, op: &PlannedOp, kind: EventType, value: &Value) {
        let Action::Lease(action) = &op.action else {
            return;
        };
        let response = match kind {
            EventType::Ok => serde_json::from_value::<LeaseResponse>(value.clone()).ok(),
            _ => None,
        };
        let now = Instant::now();
        let mut state = self.lock();
        match (&action.request, response) {
            (LeaseRequest::Grant { .. }, Some(LeaseResponse::Grant { id, ttl })) => {
                let ttl_left = Duration::from_secs(ttl.max(0) as u64);
                state.owned.entry(action.process).or_default().push(Owned {
                    id,
                    ttl,
                    keep_until: action.keep_for.map(|d| now + d),
                    use_until: now + ttl_left + Duration::from_secs(1),
                    last_renewal: now,
                    next_key: 0,
                    live: Vec::new(),
                });
                state.leases.push(Known { id, ended: false });
            }
            (LeaseRequest::Keepalive { id }, Some(LeaseResponse::Keepalive { ttl })) => {
                if ttl > 0 {
                    if let Some(o) = state.owned_by(action.process, *id) {
                        o.last_renewal = now;
                    }
                } else {
                    state.end(*id);
                }
            }
            (LeaseRequest::Ttl { id }, Some(LeaseResponse::Ttl { ttl, .. })) if ttl < 0 => {
                state.end(*id);
            }
            (LeaseRequest::Revoke { id }, Some(_)) => state.end(*id),
            // An unknown or refused revoke: the owner lets the lease go
            // rather than retrying a revoke that may be refused forever.
            (LeaseRequest::Revoke { id }, None) => {
                if let Some(owned) = state.owned.get_mut(&action.process) {
                    owned.retain(|o| o.id != *id);
                }
            }
            (LeaseRequest::Put { key, lease, .. }, Some(_)) => {
                if let Some(o) = state.owned_by(action.process, *lease) {
                    if !o.live.contains(key) {
                        o.live.push(key.clone());
                    }
                }
            }
            (LeaseRequest::Delete { id, key }, Some(_)) => {
                if let Some(o) = state.owned_by(action.process, *id) {
                    o.live.retain(|k| k != key);
                }
            }
            _ => {}
        }
    }

    /// After the run and the heal: waits (bounded) for every lease to end,
    /// asking `TimeToLive` of the open ones every second (recorded in the
    /// history through `run::perform`); then writes a sentinel key under the
    /// prefix (not recorded: it is no lease's key), lets the observer
    /// receive it, stops the observer and writes its log into `report_dir`.
    pub async fn drain(
        &self,
        workload: &Workload,
        recorder: &Recorder,
        control: &mut [Client],
        report_dir: &Path,
        op_timeout: Duration,
        election_timeout: Duration,
    ) -> anyhow::Result<()> {
        // The longest a kept lease renewed just before the end can live,
        // with one leader change: TTL + 4 election timeouts, and slack.
        let deadline = Instant::now() + MAX_TTL + election_timeout * 4 + Duration::from_secs(3);
        let process = DRAIN_PROCESS;
        loop {
            let open: Vec<i64> = self
                .lock()
                .leases
                .iter()
                .filter(|k| !k.ended)
                .map(|k| k.id)
                .collect();
            if open.is_empty() || Instant::now() >= deadline {
                break;
            }
            for (n, id) in open.into_iter().enumerate() {
                let member = n % control.len();
                let op = planned(process, LeaseRequest::Ttl { id }, None);
                crate::run::perform(
                    workload,
                    recorder,
                    &mut control[member],
                    &op,
                    process,
                    &format!("m{member}"),
                    op_timeout,
                )
                .await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }

        let sentinel = self.sentinel(control, op_timeout).await;
        let observer = self
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(observer) = observer {
            if let Some(rev) = sentinel {
                observer.wait_for(rev, OBSERVER_CATCH_UP).await;
            }
            let records = observer.stop(sentinel).await;
            let file = std::fs::File::create(report_dir.join(OBSERVER_LOG))?;
            write_observer_log(std::io::BufWriter::new(file), &records)?;
        }
        Ok(())
    }

    /// Puts `<prefix>sentinel` through the first member that takes it;
    /// returns its revision.
    async fn sentinel(&self, control: &mut [Client], op_timeout: Duration) -> Option<i64> {
        let key = format!("{}sentinel", self.prefix);
        for client in control.iter_mut() {
            let put = tokio::time::timeout(op_timeout, client.put(key.as_str(), "end", None)).await;
            if let Ok(Ok(response)) = put {
                return response.header().map(|h| h.revision());
            }
        }
        None
    }
}

fn revision(header: Option<&etcd_client::ResponseHeader>) -> Option<i64> {
    header.map(|h| h.revision()).filter(|&r| r > 0)
}

fn ok(response: LeaseResponse, header: Option<&etcd_client::ResponseHeader>) -> Executed {
    Executed {
        kind: EventType::Ok,
        value: serde_json::to_value(&response).expect("responses serialize"),
        rev: revision(header),
        error: None,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub async fn execute(
    client: &mut Client,
    action: &LeaseAction,
) -> Result<Executed, etcd_client::Error> {
    match &action.request {
        LeaseRequest::Grant { ttl } => {
            let r = client.lease_grant(*ttl, None).await?;
            Ok(ok(
                LeaseResponse::Grant {
                    id: r.id(),
                    ttl: r.ttl(),
                },
                r.header(),
            ))
        }
        LeaseRequest::Keepalive { id } => keep_alive(client, *id).await,
        LeaseRequest::Put { key, value, lease } => {
            let options = if *lease != 0 {
                PutOptions::new().with_lease(*lease)
            } else {
                PutOptions::new()
            };
            let r = client
                .put(key.as_str(), value.as_str(), Some(options))
                .await?;
            Ok(ok(LeaseResponse::Put {}, r.header()))
        }
        LeaseRequest::Revoke { id } => {
            let r = client.lease_revoke(*id).await?;
            Ok(ok(LeaseResponse::Revoke {}, r.header()))
        }
        LeaseRequest::Ttl { id } => {
            let r = client
                .lease_time_to_live(*id, Some(LeaseTimeToLiveOptions::new().with_keys()))
                .await?;
            Ok(ok(
                LeaseResponse::Ttl {
                    ttl: r.ttl(),
                    granted_ttl: r.granted_ttl(),
                    keys: r.keys().iter().map(|k| text(k)).collect(),
                },
                r.header(),
            ))
        }
        LeaseRequest::Read { prefix, .. } => {
            let r = client
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
                .await?;
            let kvs = r
                .kvs()
                .iter()
                .map(|kv| ReadKv {
                    key: text(kv.key()),
                    value: text(kv.value()),
                    mod_revision: kv.mod_revision(),
                    lease: kv.lease(),
                })
                .collect();
            Ok(ok(LeaseResponse::Read { kvs }, r.header()))
        }
        LeaseRequest::Delete { key, .. } => {
            let r = client
                .delete(key.as_str(), Some(DeleteOptions::new()))
                .await?;
            Ok(ok(
                LeaseResponse::Delete {
                    deleted: r.deleted(),
                },
                r.header(),
            ))
        }
    }
}

/// One keep-alive, recording the TTL the server returned.
///
/// `etcd-client` opens a keep-alive stream with one round whose answer it
/// consumes: a TTL of 0 (no such lease) becomes the error "lease not found",
/// any other TTL is dropped. So a second round on the same stream is sent
/// for the TTL and header. Both rounds happen after the invoke, so the
/// checker's bound (invoke + TTL) holds for either; if the second round
/// fails after the first renewed, the outcome is recorded as unknown.
async fn keep_alive(client: &mut Client, id: i64) -> Result<Executed, etcd_client::Error> {
    let (mut keeper, mut stream) = match client.lease_keep_alive(id).await {
        Ok(opened) => opened,
        Err(etcd_client::Error::LeaseKeepAliveError(m)) if m == "lease not found" => {
            return Ok(ok(LeaseResponse::Keepalive { ttl: 0 }, None));
        }
        Err(e) => return Err(e),
    };
    let second = async {
        keeper.keep_alive().await?;
        stream.message().await
    }
    .await;
    Ok(match second {
        Ok(Some(r)) => ok(LeaseResponse::Keepalive { ttl: r.ttl() }, r.header()),
        Ok(None) => Executed {
            kind: EventType::Info,
            value: Value::Null,
            rev: None,
            error: Some(
                "renewed once, then the stream ended before the second round's answer".into(),
            ),
        },
        Err(e) => Executed {
            kind: EventType::Info,
            value: Value::Null,
            rev: None,
            error: Some(format!(
                "renewed once, then the second round failed: {}",
                client::describe(&e)
            )),
        },
    })
}

/// The watcher beside the workload.
pub struct Observer {
    log: Arc<Mutex<Vec<ObserverRecord>>>,
    covered: watch::Receiver<i64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    clock: RunClock,
}

/// What one watch stream's task shares with the observer.
struct Follow<'a> {
    prefix: &'a str,
    clock: RunClock,
    log: &'a Mutex<Vec<ObserverRecord>>,
    covered: &'a watch::Sender<i64>,
    /// The next revision to watch from.
    next: i64,
}

impl Follow<'_> {
    fn record(&self, r: ObserverRecord) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    /// Every event before `next` was received.
    fn advance(&mut self, next: i64) {
        self.next = self.next.max(next);
        let covered = self.next - 1;
        self.covered.send_if_modified(|c| {
            let grew = covered > *c;
            *c = (*c).max(covered);
            grew
        });
    }

    /// Follows one watch stream through `url` until it fails or stalls;
    /// returns why it ended.
    async fn follow(&mut self, url: &str) -> String {
        let mut client = match client::connect(url).await {
            Ok(c) => c,
            Err(e) => return format!("connect: {e}"),
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.next)
            .with_prev_key();
        let mut stream =
            match tokio::time::timeout(OBSERVER_CONNECT, client.watch(self.prefix, Some(options)))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return client::describe(&e),
                Err(_) => return format!("no watch within {OBSERVER_CONNECT:?}"),
            };
        let mut asked: Option<Instant> = None;
        loop {
            match tokio::time::timeout(OBSERVER_IDLE, stream.message()).await {
                Ok(Ok(Some(response))) => {
                    asked = None;
                    if response.canceled() {
                        let compacted = response.compact_revision();
                        if compacted > self.next {
                            self.record(ObserverRecord::Gap {
                                t_ns: self.clock.now_ns(),
                                from_rev: self.next,
                                to_rev: compacted,
                            });
                            self.next = compacted;
                        }
                        return format!("watch canceled: {:?}", response.cancel_reason());
                    }
                    if response.events().is_empty() {
                        // A progress notification: everything up to the
                        // header's revision has been sent.
                        if let (false, Some(h)) = (response.created(), response.header()) {
                            if h.revision() >= self.next {
                                self.record(ObserverRecord::Progress {
                                    t_ns: self.clock.now_ns(),
                                    rev: h.revision(),
                                });
                                self.advance(h.revision() + 1);
                            }
                        }
                        continue;
                    }
                    let t_ns = self.clock.now_ns();
                    let mut last = self.next - 1;
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let put = event.event_type() == etcd_client::EventType::Put;
                        last = last.max(kv.mod_revision());
                        self.record(ObserverRecord::Event(ObservedEvent {
                            t_ns,
                            rev: kv.mod_revision(),
                            kind: if put {
                                WatchKind::Put
                            } else {
                                WatchKind::Delete
                            },
                            key: text(kv.key()),
                            lease: if put {
                                kv.lease()
                            } else {
                                event.prev_kv().map_or(0, |p| p.lease())
                            },
                            value: put.then(|| text(kv.value())),
                        }));
                    }
                    self.advance(last + 1);
                }
                Ok(Ok(None)) => return "the server closed the stream".into(),
                Ok(Err(e)) => return client::describe(&e),
                Err(_) => match asked {
                    Some(t) if t.elapsed() >= OBSERVER_STALL => {
                        return format!("no answer to a progress request within {OBSERVER_STALL:?}")
                    }
                    Some(_) => {}
                    None => {
                        if let Err(e) = stream.request_progress().await {
                            return client::describe(&e);
                        }
                        asked = Some(Instant::now());
                    }
                },
            }
        }
    }
}

impl Observer {
    fn spawn(urls: Vec<String>, prefix: String, from_rev: i64, clock: RunClock) -> Self {
        let log = Arc::new(Mutex::new(vec![ObserverRecord::Start {
            t_ns: clock.now_ns(),
            prefix: prefix.clone(),
            from_rev,
        }]));
        let (covered_tx, covered) = watch::channel(from_rev - 1);
        let (stop, mut stopped) = watch::channel(false);
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut follow = Follow {
                prefix: &prefix,
                clock,
                log: &shared,
                covered: &covered_tx,
                next: from_rev,
            };
            for attempt in 0usize.. {
                let member = attempt % urls.len();
                let reason = tokio::select! {
                    _ = stopped.changed() => return,
                    reason = follow.follow(&urls[member]) => reason,
                };
                let next_member = (attempt + 1) % urls.len();
                follow.record(ObserverRecord::Restart {
                    t_ns: clock.now_ns(),
                    member: format!("m{next_member}"),
                    from_rev: follow.next,
                    reason: format!("m{member}: {reason}"),
                });
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(OBSERVER_RETRY) => {}
                }
            }
        });
        Self {
            log,
            covered,
            stop,
            task,
            clock,
        }
    }

    /// Waits until every event up to `rev` has been received, at most
    /// `timeout` (the log's `End` record tells how far it got).
    pub async fn wait_for(&self, rev: i64, timeout: Duration) {
        let mut covered = self.covered.clone();
        let reached = tokio::time::timeout(timeout, async {
            covered.wait_for(|&c| c >= rev).await.is_ok()
        })
        .await;
        if !matches!(reached, Ok(true)) {
            eprintln!(
                "cairn-jepsen: the lease observer did not receive revision {rev} within {timeout:?}"
            );
        }
    }

    /// Stops the watcher; returns its log, ending with what it covered and
    /// the revision it had to reach.
    pub async fn stop(self, target: Option<i64>) -> Vec<ObserverRecord> {
        // The task returns as soon as it sees the signal; if it has already
        // ended, there is nothing to wait for.
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            eprintln!("cairn-jepsen: the lease observer task failed: {e}");
        }
        let covered = *self.covered.borrow();
        let mut log = std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()));
        log.push(ObserverRecord::End {
            t_ns: self.clock.now_ns(),
            covered,
            target,
        });
        log
    }
}
