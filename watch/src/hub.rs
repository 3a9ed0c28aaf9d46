//! The hub's state, its API, and the background sync task.
//!
//! Everything about watchers lives in one [`HubState`] under one short lock:
//! `notify`, registration, cancellation and the sync task's bookkeeping all
//! take it, and none of them waits for I/O or for a client while holding it
//! (queues are only *tried*; history is read outside it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use cairn_api::mvccpb::{event::EventType, Event};
use cairn_storage::{KeyRange, StorageError, Store};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::queue::{delivery_size, Queue, Receiver, TrySend};
use crate::{CreateWatch, Delivery, HubConfig, WatchError};

type StreamId = u64;
/// Watch ids are per stream, so a watcher is named by both.
type WatcherKey = (StreamId, i64);

/// Which events a watcher wants. Immutable once created, and shared, so the
/// sync task can filter a history batch with it outside the hub lock.
struct Selector {
    /// Normalized: never empty (an empty key means `"\0"`).
    key: Vec<u8>,
    /// etcd's conventions (empty: single key; `"\0"`: `>= key`).
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
}

impl Selector {
    fn wants(&self, ev: &Event) -> bool {
        let Some(kv) = &ev.kv else { return false };
        let filtered = match EventType::try_from(ev.r#type) {
            Ok(EventType::Put) => self.no_put,
            Ok(EventType::Delete) => self.no_delete,
            Err(_) => false,
        };
        !filtered && KeyRange::new(&self.key, &self.range_end).contains(&kv.key)
    }

    fn is_single_key(&self) -> bool {
        self.range_end.is_empty()
    }
}

struct Watcher {
    sel: Arc<Selector>,
    /// The next revision this watcher must receive. For a synced watcher it
    /// may lag behind the hub revision + 1 (it is not bumped for revisions
    /// that did not concern it); the effective value is then the larger.
    next_rev: i64,
    synced: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// An `Events` delivery was queued since the last progress tick.
    delivered_since_tick: bool,
}

struct StreamState {
    queue: Arc<Queue>,
    /// Ids of this stream's watchers.
    ids: HashSet<i64>,
    /// etcd's `nextID`: where the search for a free automatic id starts.
    next_auto_id: i64,
}

struct HubState {
    /// The last revision handed to `notify` (or read from the store at start
    /// and after a restore).
    revision: i64,
    /// Bumped by `on_restore`, so history read before a restore is never
    /// applied after it.
    epoch: u64,
    shut: bool,
    next_stream: StreamId,
    streams: HashMap<StreamId, StreamState>,
    watchers: HashMap<WatcherKey, Watcher>,
    /// Synced single-key watchers by key: `notify` finds them by hash.
    synced_single: HashMap<Vec<u8>, HashSet<WatcherKey>>,
    /// Synced range watchers: `notify` scans them.
    synced_ranges: HashSet<WatcherKey>,
    /// Unsynced watchers grouped by `next_rev`: one history read serves a group.
    unsynced: BTreeMap<i64, HashSet<WatcherKey>>,
    /// Bug switch `watch-drop-event`.
    #[cfg(feature = "bug-switches")]
    drop_event: DropOneEvent,
}

/// Bug switch `watch-drop-event`: counts the events `notify` hands to
/// watchers and removes the [`DropOneEvent::AT`]th from its watcher's
/// delivery, once per process. That watcher silently misses it; the
/// others, and the store, still have it.
#[cfg(feature = "bug-switches")]
#[derive(Default)]
struct DropOneEvent {
    delivered: u64,
    dropped: bool,
}

#[cfg(feature = "bug-switches")]
impl DropOneEvent {
    const AT: u64 = 100;

    /// `events` for watcher `k`, the one event removed if its turn came;
    /// `None` if nothing is left to deliver.
    fn filter(&mut self, k: WatcherKey, revision: i64, mut events: Vec<Event>) -> Option<Vec<Event>> {
        if self.dropped || !cairn_storage::bugs::is_on(cairn_storage::bugs::Bug::WatchDropEvent) {
            return Some(events);
        }
        let before = self.delivered;
        self.delivered += events.len() as u64;
        if self.delivered >= Self::AT {
            let dropped = events.remove((Self::AT - 1 - before) as usize);
            self.dropped = true;
            let key = dropped.kv.map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).unwrap_or_default();
            tracing::warn!(stream = k.0, watch_id = k.1, revision, key = %key, "watch-drop-event: dropped an event");
        }
        (!events.is_empty()).then_some(events)
    }
}

impl HubState {
    /// Removes `k` from the synced or unsynced index (not from `watchers`).
    fn unindex(&mut self, k: WatcherKey) {
        let Some(w) = self.watchers.get(&k) else { return };
        if w.synced {
            if w.sel.is_single_key() {
                if let Some(set) = self.synced_single.get_mut(&w.sel.key) {
                    set.remove(&k);
                    if set.is_empty() {
                        self.synced_single.remove(&w.sel.key);
                    }
                }
            } else {
                self.synced_ranges.remove(&k);
            }
        } else if let Some(set) = self.unsynced.get_mut(&w.next_rev) {
            set.remove(&k);
            if set.is_empty() {
                self.unsynced.remove(&w.next_rev);
            }
        }
    }

    /// Adds `k` to the index its `synced` flag and `next_rev` call for.
    fn index(&mut self, k: WatcherKey) {
        let Some(w) = self.watchers.get(&k) else { return };
        if w.synced {
            if w.sel.is_single_key() {
                self.synced_single.entry(w.sel.key.clone()).or_default().insert(k);
            } else {
                self.synced_ranges.insert(k);
            }
        } else {
            self.unsynced.entry(w.next_rev).or_default().insert(k);
        }
    }

    fn set_unsynced(&mut self, k: WatcherKey, next_rev: i64) {
        self.unindex(k);
        if let Some(w) = self.watchers.get_mut(&k) {
            w.synced = false;
            w.next_rev = next_rev;
        }
        self.index(k);
    }

    fn set_synced(&mut self, k: WatcherKey, next_rev: i64) {
        self.unindex(k);
        if let Some(w) = self.watchers.get_mut(&k) {
            w.synced = true;
            w.next_rev = next_rev;
        }
        self.index(k);
    }

    fn insert(&mut self, k: WatcherKey, w: Watcher) {
        self.watchers.insert(k, w);
        self.index(k);
        if let Some(s) = self.streams.get_mut(&k.0) {
            s.ids.insert(k.1);
        }
    }

    fn remove(&mut self, k: WatcherKey) -> bool {
        self.unindex(k);
        if let Some(s) = self.streams.get_mut(&k.0) {
            s.ids.remove(&k.1);
        }
        self.watchers.remove(&k).is_some()
    }

    fn synced_keys(&self) -> Vec<WatcherKey> {
        self.synced_single.values().flatten().chain(self.synced_ranges.iter()).copied().collect()
    }

    /// Every synced watcher goes back to catching up from `from` (or its
    /// own later `next_rev`, for watchers of a future revision).
    fn unsync_all(&mut self, from: i64) -> bool {
        let keys = self.synced_keys();
        for &k in &keys {
            let next = self.watchers.get(&k).map_or(from, |w| w.next_rev.max(from));
            self.set_unsynced(k, next);
        }
        !keys.is_empty()
    }

    fn queue(&self, stream: StreamId) -> Option<&Arc<Queue>> {
        self.streams.get(&stream).map(|s| &s.queue)
    }

    /// The queue of `k` if it is unsynced and waits for revision `from`.
    fn waiting_at(&self, k: WatcherKey, from: i64) -> Option<&Arc<Queue>> {
        match self.watchers.get(&k) {
            Some(w) if !w.synced && w.next_rev == from => self.queue(k.0),
            _ => None,
        }
    }
}

struct Inner {
    store: Arc<Store>,
    cfg: HubConfig,
    state: Mutex<HubState>,
    /// Wakes the sync task (stored permit: a wake during a round is not lost).
    sync_wake: Arc<Notify>,
}

/// Shuts the hub down when the last [`WatchHub`] clone goes away. Streams
/// keep `Inner` alive but not this, so open streams do not keep the sync
/// task running after its owner is gone.
struct Owner(Arc<Inner>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// The hub: one per member, shared by the state machine (which calls
/// [`WatchHub::notify`]) and the Watch service (which opens streams).
#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<Inner>,
    _owner: Arc<Owner>,
}

impl fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.lock();
        f.debug_struct("WatchHub")
            .field("revision", &st.revision)
            .field("streams", &st.streams.len())
            .field("watchers", &st.watchers.len())
            .field("unsynced", &st.unsynced.values().map(HashSet::len).sum::<usize>())
            .field("shut", &st.shut)
            .finish()
    }
}

impl WatchHub {
    /// Must be called inside a tokio runtime: spawns the background sync
    /// task (stopped by [`WatchHub::shutdown`] or when the last `WatchHub`
    /// clone is dropped).
    pub fn new(store: Arc<Store>, cfg: HubConfig) -> WatchHub {
        let revision = store.current_revision();
        let inner = Arc::new(Inner {
            store,
            cfg: cfg.sanitized(),
            state: Mutex::new(HubState {
                revision,
                epoch: 0,
                shut: false,
                next_stream: 0,
                streams: HashMap::new(),
                watchers: HashMap::new(),
                synced_single: HashMap::new(),
                synced_ranges: HashSet::new(),
                unsynced: BTreeMap::new(),
                #[cfg(feature = "bug-switches")]
                drop_event: DropOneEvent::default(),
            }),
            sync_wake: Arc::new(Notify::new()),
        });
        tokio::spawn(sync_loop(inner.clone()));
        WatchHub { _owner: Arc::new(Owner(inner.clone())), inner }
    }

    /// Called by the state machine, in revision order, once the store has
    /// published `revision`. Never blocks on a slow stream: a stream without
    /// room gets its concerned watchers moved aside, to be caught up from
    /// the store. A revision not above the hub's is ignored (it was
    /// delivered already); a gap (revisions never notified) moves every
    /// synced watcher aside, so the store fills it in.
    pub fn notify(&self, revision: i64, events: &[Event]) {
        let mut guard = self.inner.state.lock();
        let st = &mut *guard;
        if st.shut {
            return;
        }
        if revision <= st.revision {
            tracing::warn!(revision, hub_revision = st.revision, "watch hub notified of an old revision; ignored");
            return;
        }
        let mut wake = false;
        if revision > st.revision + 1 {
            tracing::warn!(revision, hub_revision = st.revision, "watch hub skipped revisions; watchers catch up from the store");
            wake |= st.unsync_all(st.revision + 1);
        }
        st.revision = revision;

        // Each matching watcher's events of this revision, in event order.
        let mut batches: Vec<(WatcherKey, Vec<Event>)> = Vec::new();
        let mut slot: HashMap<WatcherKey, usize> = HashMap::new();
        for ev in events {
            let Some(kv) = &ev.kv else { continue };
            let single = st.synced_single.get(&kv.key).into_iter().flatten();
            for k in single.chain(st.synced_ranges.iter()) {
                let w = &st.watchers[k];
                // `next_rev > revision`: a watcher of a future revision.
                if w.next_rev > revision || !w.sel.wants(ev) {
                    continue;
                }
                let i = *slot.entry(*k).or_insert_with(|| {
                    batches.push((*k, Vec::new()));
                    batches.len() - 1
                });
                batches[i].1.push(ev.clone());
            }
        }
        for (k, events) in batches {
            #[cfg(feature = "bug-switches")]
            let Some(events) = st.drop_event.filter(k, revision, events) else {
                st.watchers.get_mut(&k).expect("matched watchers exist").next_rev = revision + 1;
                continue;
            };
            let w = st.watchers.get_mut(&k).expect("matched watchers exist");
            let d = Delivery::Events { watch_id: k.1, revision, events, prev_kv: w.prev_kv, fragment: w.fragment };
            let queue = &st.streams[&k.0].queue;
            match queue.try_send(d) {
                TrySend::Sent => {
                    w.next_rev = revision + 1;
                    w.delivered_since_tick = true;
                }
                TrySend::Gone => w.next_rev = revision + 1,
                TrySend::Full => {
                    st.set_unsynced(k, revision);
                    wake = true;
                }
            }
        }
        drop(guard);
        if wake {
            self.inner.sync_wake.notify_one();
        }
    }

    /// After the store was replaced by a snapshot: every watcher goes back
    /// to catching up from the store (or is canceled as compacted), and the
    /// hub's revision becomes the store's.
    pub fn on_restore(&self) {
        let mut st = self.inner.state.lock();
        if st.shut {
            return;
        }
        let from = st.revision + 1;
        st.unsync_all(from);
        st.revision = self.inner.store.current_revision();
        st.epoch += 1;
        drop(st);
        self.inner.sync_wake.notify_one();
    }

    /// The last revision handed to [`WatchHub::notify`] (initially the
    /// store's current revision).
    pub fn revision(&self) -> i64 {
        self.inner.state.lock().revision
    }

    /// A new stream. After shutdown the stream is born closed: `recv` ends
    /// at once and `create` fails with [`WatchError::Closed`].
    pub fn open_stream(&self) -> (StreamHandle, StreamReceiver) {
        let queue = Arc::new(Queue::new(self.inner.cfg.stream_buffer_bytes, self.inner.sync_wake.clone()));
        let mut st = self.inner.state.lock();
        let id = st.next_stream;
        st.next_stream += 1;
        if st.shut {
            queue.close();
        } else {
            st.streams.insert(id, StreamState { queue: queue.clone(), ids: HashSet::new(), next_auto_id: 0 });
        }
        drop(st);
        let handle = StreamHandle { inner: self.inner.clone(), id, queue: queue.clone() };
        (handle, StreamReceiver { rx: Receiver(queue) })
    }

    /// Stops the sync task, drops every watcher and closes every stream
    /// (receivers get what is already queued, then `None`). Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Inner {
    fn shutdown(&self) {
        let mut st = self.state.lock();
        if st.shut {
            return;
        }
        st.shut = true;
        for s in st.streams.values_mut() {
            s.queue.close();
            s.ids.clear();
        }
        st.watchers.clear();
        st.synced_single.clear();
        st.synced_ranges.clear();
        st.unsynced.clear();
        drop(st);
        self.sync_wake.notify_one();
    }

    fn is_shut(&self) -> bool {
        self.state.lock().shut
    }
}

/// One client stream's side of the hub: create and cancel its watchers.
/// Dropping it removes all its watchers and ends its receiver (after what is
/// already queued).
pub struct StreamHandle {
    inner: Arc<Inner>,
    id: StreamId,
    queue: Arc<Queue>,
}

impl fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamHandle").field("id", &self.id).finish_non_exhaustive()
    }
}

impl StreamHandle {
    /// Registers a watcher. Its [`Delivery::Created`] is queued under the
    /// hub lock at the moment it is registered, so nothing about it can
    /// precede it; room for it is awaited first (which only backpressures
    /// this stream).
    pub async fn create(&self, req: CreateWatch) -> Result<i64, WatchError> {
        let key = if req.key.is_empty() { vec![0] } else { req.key };
        let range_end = req.range_end;
        if !range_end.is_empty() && range_end != [0] && key >= range_end {
            return Err(WatchError::EmptyRange);
        }
        let created_size = delivery_size(&Delivery::Created { watch_id: 0, revision: 0 });
        let room = self.queue.reserve(created_size).await.map_err(|_| WatchError::Closed)?;

        let mut guard = self.inner.state.lock();
        let st = &mut *guard;
        if st.shut {
            return Err(WatchError::Closed);
        }
        let Some(stream) = st.streams.get_mut(&self.id) else { return Err(WatchError::Closed) };
        let watch_id = if req.watch_id == 0 {
            while stream.ids.contains(&stream.next_auto_id) {
                stream.next_auto_id += 1;
            }
            stream.next_auto_id += 1;
            stream.next_auto_id - 1
        } else if stream.ids.contains(&req.watch_id) {
            return Err(WatchError::DuplicateId);
        } else {
            req.watch_id
        };
        let hub_rev = st.revision;
        // etcd: start 0 or beyond the current revision is synced at once
        // (a future start skips events below it); anything else catches up.
        let (next_rev, synced) = match req.start_revision {
            0 => (hub_rev + 1, true),
            s if s > hub_rev => (s, true),
            s => (s.max(1), false),
        };
        room.send(Delivery::Created { watch_id, revision: hub_rev });
        let w = Watcher {
            sel: Arc::new(Selector { key, range_end, no_put: req.no_put, no_delete: req.no_delete }),
            next_rev,
            synced,
            prev_kv: req.prev_kv,
            fragment: req.fragment,
            progress_notify: req.progress_notify,
            delivered_since_tick: false,
        };
        st.insert((self.id, watch_id), w);
        drop(guard);
        if !synced {
            self.inner.sync_wake.notify_one();
        }
        Ok(watch_id)
    }

    /// Removes the watcher and queues its `Canceled` (compact revision 0, no
    /// reason) after anything already queued for it; false if there is no
    /// such watcher. Room is reserved before the removal, so the id cannot
    /// be reused (and a new `Created` queued) before this `Canceled`.
    pub async fn cancel(&self, watch_id: i64) -> bool {
        let canceled = Delivery::Canceled { watch_id, compact_revision: 0, reason: String::new() };
        let room = self.queue.reserve(delivery_size(&canceled)).await;
        let mut st = self.inner.state.lock();
        let existed = st.remove((self.id, watch_id));
        if let (true, Ok(room)) = (existed, room) {
            room.send(canceled);
        }
        existed
    }

    /// etcd 3.5's progress request: if every watcher of this stream is
    /// synced, queue `Progress { watch_id: -1, revision: hub revision }` and
    /// return true; otherwise (or if the queue has no room) return false and
    /// the caller retries later. With no watchers: true, nothing queued.
    pub fn request_progress(&self) -> bool {
        let st = self.inner.state.lock();
        if st.shut {
            return false;
        }
        let Some(stream) = st.streams.get(&self.id) else { return false };
        if stream.ids.is_empty() {
            return true;
        }
        let all_synced = stream.ids.iter().all(|id| st.watchers.get(&(self.id, *id)).is_some_and(|w| w.synced));
        all_synced && stream.queue.try_send(Delivery::Progress { watch_id: -1, revision: st.revision }) != TrySend::Full
    }

    /// The periodic `progress_notify`: each watcher created with it that is
    /// synced and got no `Events` since the previous tick is sent
    /// `Progress { watch_id, revision: hub revision }` (skipped if the queue
    /// is full: events are pending then anyway).
    pub fn progress_notify_tick(&self) {
        let mut guard = self.inner.state.lock();
        let st = &mut *guard;
        if st.shut {
            return;
        }
        let Some(stream) = st.streams.get(&self.id) else { return };
        for id in &stream.ids {
            let Some(w) = st.watchers.get_mut(&(self.id, *id)) else { continue };
            if w.progress_notify && w.synced && !w.delivered_since_tick {
                stream.queue.try_send(Delivery::Progress { watch_id: *id, revision: st.revision });
            }
            w.delivered_since_tick = false;
        }
    }

    pub fn watcher_count(&self) -> usize {
        self.inner.state.lock().streams.get(&self.id).map_or(0, |s| s.ids.len())
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock();
        if let Some(stream) = st.streams.remove(&self.id) {
            for id in stream.ids {
                st.unindex((self.id, id));
                st.watchers.remove(&(self.id, id));
            }
        }
        drop(st);
        self.queue.close();
    }
}

/// One client stream's deliveries.
pub struct StreamReceiver {
    rx: Receiver,
}

impl fmt::Debug for StreamReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReceiver").finish_non_exhaustive()
    }
}

impl StreamReceiver {
    /// The next delivery; `None` once the stream's handle was dropped or the
    /// hub shut down, and everything queued before was received. Receiving
    /// frees the message's bytes from the stream's budget.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.0.recv().await
    }
}

/// What a sync round achieved, to decide whether to run another at once.
struct RoundOutcome {
    /// Some watcher advanced, was promoted, or was canceled.
    progressed: bool,
    /// Unsynced watchers left.
    remaining: usize,
}

/// Catches up unsynced watchers: at once when woken, otherwise every
/// `sync_interval`. While rounds make progress and work remains, it runs
/// them back to back, pausing as long as the last one took (etcd's rule),
/// so catching up cannot monopolize the store.
async fn sync_loop(inner: Arc<Inner>) {
    loop {
        if inner.is_shut() {
            return;
        }
        loop {
            let started = Instant::now();
            let outcome = sync_round(&inner).await;
            if inner.is_shut() {
                return;
            }
            if !outcome.progressed || outcome.remaining == 0 {
                break;
            }
            tokio::time::sleep(started.elapsed().min(inner.cfg.sync_interval)).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(inner.cfg.sync_interval) => {}
            _ = inner.sync_wake.notified() => {}
        }
    }
}

/// One round: promote watchers that need nothing from the store, pick up to
/// `max_watchers_per_sync` unsynced watchers on streams with room (oldest
/// `next_rev` first), read each group's next batch outside the lock, and
/// deliver it under the lock to the watchers still waiting for exactly it.
async fn sync_round(inner: &Inner) -> RoundOutcome {
    let cfg = &inner.cfg;
    let mut progressed = false;
    let (hub_rev, epoch, groups) = {
        let mut st = inner.state.lock();
        if st.shut {
            return RoundOutcome { progressed: false, remaining: 0 };
        }
        let hub_rev = st.revision;
        // A watcher at or beyond hub_rev + 1 has nothing to read.
        let ready: Vec<WatcherKey> = st.unsynced.range(hub_rev + 1..).flat_map(|(_, set)| set.iter().copied()).collect();
        for k in ready {
            let next = st.watchers[&k].next_rev;
            st.set_synced(k, next);
            progressed = true;
        }
        let mut budget = cfg.max_watchers_per_sync;
        let mut groups: Vec<(i64, Vec<WatcherKey>)> = Vec::new();
        for (&rev, set) in &st.unsynced {
            let keys: Vec<WatcherKey> =
                set.iter().filter(|k| st.queue(k.0).is_some_and(|q| q.accepting())).take(budget).copied().collect();
            budget -= keys.len();
            if !keys.is_empty() {
                groups.push((rev, keys));
            }
            if budget == 0 {
                break;
            }
        }
        (hub_rev, st.epoch, groups)
    };

    'groups: for (from, keys) in groups {
        let store = inner.store.clone();
        let (max_revs, max_bytes) = (cfg.max_revisions_per_batch, cfg.max_batch_bytes);
        let read = tokio::task::spawn_blocking(move || {
            let r = store.history(from, hub_rev, max_revs, max_bytes);
            let compacted = store.compact_revision();
            (r, compacted)
        })
        .await;
        let (result, compact_rev) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, from, "watch history read panicked or was cancelled");
                break;
            }
        };
        let (events, next) = match result {
            Ok(batch) => batch,
            Err(StorageError::Compacted) => {
                let mut guard = inner.state.lock();
                let st = &mut *guard;
                if st.shut || st.epoch != epoch {
                    break;
                }
                for k in keys {
                    let Some(queue) = st.waiting_at(k, from) else { continue };
                    let d = Delivery::Canceled { watch_id: k.1, compact_revision: compact_rev, reason: String::new() };
                    // No room: retried next round.
                    if queue.try_send(d) != TrySend::Full {
                        st.remove(k);
                        progressed = true;
                    }
                }
                continue;
            }
            Err(e) => {
                // A fatal store error: the member is going down. Retry at the
                // next interval rather than spin.
                tracing::error!(error = %e, from, "watch history read failed");
                break;
            }
        };
        for k in keys {
            // Filter outside the lock (copying a batch can take a while),
            // then re-check under it that the watcher still waits for
            // exactly this batch. An epoch change (restore) discards the
            // rest of the round: what was read may not match the new store.
            let sel = {
                let st = inner.state.lock();
                if st.shut || st.epoch != epoch {
                    break 'groups;
                }
                match st.waiting_at(k, from) {
                    Some(queue) if queue.accepting() => st.watchers[&k].sel.clone(),
                    _ => continue,
                }
            };
            let mine: Vec<Event> = events.iter().filter(|ev| sel.wants(ev)).cloned().collect();
            let mut guard = inner.state.lock();
            let st = &mut *guard;
            if st.shut || st.epoch != epoch {
                break 'groups;
            }
            let Some(queue) = st.waiting_at(k, from).cloned() else { continue };
            let w = st.watchers.get_mut(&k).expect("waiting_at found it");
            let sent = mine.is_empty() || {
                let d = Delivery::Events {
                    watch_id: k.1,
                    revision: hub_rev,
                    events: mine,
                    prev_kv: w.prev_kv,
                    fragment: w.fragment,
                };
                match queue.try_send(d) {
                    TrySend::Sent => {
                        w.delivered_since_tick = true;
                        true
                    }
                    TrySend::Gone => true,
                    TrySend::Full => false,
                }
            };
            if sent {
                progressed = true;
                // Synced only if nothing was notified past the read's end.
                if next > st.revision {
                    st.set_synced(k, next);
                } else {
                    st.set_unsynced(k, next);
                }
            }
        }
    }
    let remaining = inner.state.lock().unsynced.values().map(HashSet::len).sum();
    RoundOutcome { progressed, remaining }
}
