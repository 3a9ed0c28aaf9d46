//! The hub against a real in-memory store, through the public API only.
//! Every test is bounded by [`bounded`]; the randomized one prints its seed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_api::etcdserverpb::{request_op, CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use cairn_api::mvccpb::{event::EventType, Event};
use cairn_storage::{Applied, MemEngine, Store, StoreConfig, WriteRequest};
use cairn_watch::{CreateWatch, Delivery, HubConfig, StreamHandle, StreamReceiver, WatchError, WatchHub};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Upper bound of any single test.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound of waiting for one delivery.
const RECV_LIMIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f).await.expect("test exceeded its time limit");
}

fn store_config() -> StoreConfig {
    StoreConfig { sync_writes: false, compaction_sleep: Duration::ZERO, ..Default::default() }
}

fn new_store() -> Arc<Store> {
    Store::open(Arc::new(MemEngine::new()), store_config()).unwrap()
}

fn fast_sync() -> HubConfig {
    HubConfig { sync_interval: Duration::from_millis(5), ..Default::default() }
}

/// A store, its hub, and a writer that applies and notifies in order, as the
/// state machine does. The log of applied events is the test's model.
struct Env {
    store: Arc<Store>,
    hub: WatchHub,
    writer: Mutex<Writer>,
}

struct Writer {
    index: u64,
    log: Vec<(i64, Vec<Event>)>,
}

impl Env {
    fn new(cfg: HubConfig) -> Arc<Env> {
        let store = new_store();
        let hub = WatchHub::new(store.clone(), cfg);
        Arc::new(Env { store, hub, writer: Mutex::new(Writer { index: 0, log: Vec::new() }) })
    }

    fn write(&self, req: WriteRequest) -> Applied {
        let mut w = self.writer.lock();
        w.index += 1;
        let applied = self.store.apply(w.index, &req).unwrap();
        assert!(applied.result.is_ok(), "{req:?}: {:?}", applied.result);
        if !applied.events.is_empty() {
            self.hub.notify(applied.revision, &applied.events);
            w.log.push((applied.revision, applied.events.clone()));
        }
        applied
    }

    fn put(&self, key: &str, value: &str) -> i64 {
        self.write(put_req(key, value)).revision
    }

    fn delete(&self, key: &str, range_end: &str) -> i64 {
        self.write(WriteRequest::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: false,
        }))
        .revision
    }

    fn compact(&self, revision: i64) {
        self.write(WriteRequest::Compact(CompactionRequest { revision, physical: true }));
        self.store.wait_compacted(revision);
    }

    /// Replaces the store's contents with a snapshot of `other`, then tells
    /// the hub, as the state machine does on a snapshot install.
    fn restore_from(&self, other: &Store) {
        let mut w = self.writer.lock();
        let mut buf = Vec::new();
        other.snapshot_view().unwrap().write_to(&mut buf).unwrap();
        self.store.restore(&mut &buf[..]).unwrap();
        w.index = self.store.applied_index();
        self.hub.on_restore();
    }

    /// Every logged event matching `keep`, from revision `from` on.
    fn expected(&self, from: i64, keep: impl Fn(&Event) -> bool) -> Vec<Ev> {
        let w = self.writer.lock();
        w.log
            .iter()
            .filter(|(rev, _)| *rev >= from)
            .flat_map(|(_, evs)| evs.iter())
            .filter(|e| keep(e))
            .map(ev)
            .collect()
    }
}

fn put_req(key: &str, value: &str) -> WriteRequest {
    WriteRequest::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

fn delete_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

/// An event, summarized: (type, key, mod revision, value).
type Ev = (EventType, String, i64, String);

fn ev(e: &Event) -> Ev {
    let kv = e.kv.as_ref().expect("events carry a kv");
    (
        EventType::try_from(e.r#type).unwrap(),
        String::from_utf8(kv.key.clone()).unwrap(),
        kv.mod_revision,
        String::from_utf8(kv.value.clone()).unwrap(),
    )
}

fn watch(key: &str, range_end: &str) -> CreateWatch {
    CreateWatch { key: key.into(), range_end: range_end.into(), ..Default::default() }
}

async fn next(rx: &mut StreamReceiver) -> Delivery {
    tokio::time::timeout(RECV_LIMIT, rx.recv()).await.expect("no delivery in time").expect("stream ended")
}

/// Requests progress until every watcher of the stream is synced, and
/// returns everything received before the `Progress { watch_id: -1 }`:
/// since that progress is queued after all events up to the hub revision,
/// this is everything the stream will get for what was written so far.
async fn drain_until_synced(handle: &StreamHandle, rx: &mut StreamReceiver) -> Vec<Delivery> {
    let reader = async {
        let mut got = Vec::new();
        loop {
            match next(rx).await {
                Delivery::Progress { watch_id: -1, .. } => return got,
                d => got.push(d),
            }
        }
    };
    let requester = async {
        while !handle.request_progress() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        got = reader => got,
        _ = requester => unreachable!(),
    }
}

/// The events of `watch_id`'s deliveries, checking along the way that no
/// revision is split across deliveries and that header revisions cover the
/// events.
fn events_of(deliveries: &[Delivery], watch_id: i64) -> Vec<Ev> {
    let mut out: Vec<Ev> = Vec::new();
    for d in deliveries {
        if let Delivery::Events { watch_id: id, revision, events, .. } = d {
            if *id != watch_id {
                continue;
            }
            assert!(!events.is_empty(), "empty Events delivery");
            let evs: Vec<Ev> = events.iter().map(ev).collect();
            let first = evs[0].2;
            let last = evs[evs.len() - 1].2;
            assert!(*revision >= last, "header revision {revision} below event revision {last}");
            if let Some(prev) = out.last() {
                assert!(prev.2 < first, "revision {first} split across deliveries or out of order");
            }
            out.extend(evs);
        }
    }
    out
}

fn key_starts_with(prefix: &'static str) -> impl Fn(&Event) -> bool {
    move |e| e.kv.as_ref().unwrap().key.starts_with(prefix.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_events_reach_a_synced_watcher() {
    bounded(async {
        let env = Env::new(fast_sync());
        let (h, mut rx) = env.hub.open_stream();
        assert_eq!(env.hub.revision(), 1);
        let id = h.create(watch("foo", "")).await.unwrap();
        assert_eq!(next(&mut rx).await, Delivery::Created { watch_id: id, revision: 1 });
        let r1 = env.put("foo", "1");
        env.put("bar", "x");
        let r3 = env.delete("foo", "");
        assert_eq!(env.hub.revision(), r3);
        let got = drain_until_synced(&h, &mut rx).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], Delivery::Events { revision, .. } if *revision == r1));
        assert!(matches!(&got[1], Delivery::Events { revision, .. } if *revision == r3));
        assert_eq!(
            events_of(&got, id),
            vec![(EventType::Put, "foo".into(), r1, "1".into()), (EventType::Delete, "foo".into(), r3, String::new())]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn historical_replay_in_small_batches_while_writing() {
    bounded(async {
        let cfg = HubConfig { max_revisions_per_batch: 7, max_batch_bytes: 300, ..fast_sync() };
        let env = Env::new(cfg);
        for i in 0..300 {
            if i % 10 == 9 {
                env.delete(&format!("a/{}", i % 7), "");
            } else {
                env.put(&format!("a/{}", i % 7), &format!("v{i}"));
            }
            if i % 5 == 0 {
                env.put("b", "other");
            }
        }
        let (h, mut rx) = env.hub.open_stream();
        let id = h.create(CreateWatch { start_revision: 1, ..watch("a/", "a0") }).await.unwrap();
        let writer = {
            let env = env.clone();
            tokio::task::spawn_blocking(move || {
                for i in 0..200 {
                    env.put(&format!("a/{}", i % 3), &format!("w{i}"));
                    env.put("b", "other");
                }
            })
        };
        writer.await.unwrap();
        let got = drain_until_synced(&h, &mut rx).await;
        assert!(matches!(got[0], Delivery::Created { .. }));
        let want = env.expected(1, key_starts_with("a/"));
        assert!(want.len() > 450, "{}", want.len());
        assert_eq!(events_of(&got, id), want);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watching_a_future_revision_skips_earlier_events() {
    bounded(async {
        let env = Env::new(fast_sync());
        env.put("k", "0");
        let now = env.hub.revision();
        let (h, mut rx) = env.hub.open_stream();
        let id = h.create(CreateWatch { start_revision: now + 3, ..watch("k", "") }).await.unwrap();
        assert_eq!(next(&mut rx).await, Delivery::Created { watch_id: id, revision: now });
        for i in 1..=5 {
            env.put("k", &i.to_string());
        }
        let got = drain_until_synced(&h, &mut rx).await;
        let revs: Vec<i64> = events_of(&got, id).iter().map(|e| e.2).collect();
        assert_eq!(revs, vec![now + 3, now + 4, now + 5]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefix_and_open_ended_ranges() {
    bounded(async {
        let env = Env::new(fast_sync());
        let (h, mut rx) = env.hub.open_stream();
        let prefix = h.create(watch("p/", "p0")).await.unwrap();
        let from_m = h.create(watch("m", "\0")).await.unwrap();
        let all = h.create(watch("", "\0")).await.unwrap();
        let single_empty = h.create(watch("", "")).await.unwrap();
        for k in ["a", "m", "p/1", "p0", "p/", "z"] {
            env.put(k, "v");
        }
        let got = drain_until_synced(&h, &mut rx).await;
        let keys = |id| events_of(&got, id).into_iter().map(|e| e.1).collect::<Vec<_>>();
        assert_eq!(keys(prefix), ["p/1", "p/"]);
        assert_eq!(keys(from_m), ["m", "p/1", "p0", "p/", "z"]);
        assert_eq!(keys(all), ["a", "m", "p/1", "p0", "p/", "z"]);
        assert!(keys(single_empty).is_empty(), "an empty key watches only \"\\0\"");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_and_delete_filters() {
    bounded(async {
        let env = Env::new(fast_sync());
        let (h, mut rx) = env.hub.open_stream();
        let no_put = h.create(CreateWatch { no_put: true, ..watch("k", "l") }).await.unwrap();
        let no_delete = h.create(CreateWatch { no_delete: true, ..watch("k", "l") }).await.unwrap();
        let both = h.create(CreateWatch { no_put: true, no_delete: true, ..watch("k", "l") }).await.unwrap();
        env.put("k1", "a");
        env.put("k2", "b");
        env.delete("k1", "");
        env.put("k1", "c");
        env.delete("k", "l");
        let got = drain_until_synced(&h, &mut rx).await;
        let types = |id| events_of(&got, id).into_iter().map(|e| (e.0, e.1)).collect::<Vec<_>>();
        assert_eq!(
            types(no_put),
            [(EventType::Delete, "k1".into()), (EventType::Delete, "k1".into()), (EventType::Delete, "k2".into())]
        );
        assert_eq!(
            types(no_delete),
            [(EventType::Put, "k1".into()), (EventType::Put, "k2".into()), (EventType::Put, "k1".into())]
        );
        assert!(types(both).is_empty());
        // The same filters apply when catching up from the store.
        let (h2, mut rx2) = env.hub.open_stream();
        let hist = h2.create(CreateWatch { start_revision: 1, no_put: true, ..watch("k", "l") }).await.unwrap();
        let got2 = drain_until_synced(&h2, &mut rx2).await;
        assert_eq!(events_of(&got2, hist), events_of(&got, no_put));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creation_errors_and_automatic_ids() {
    bounded(async {
        let env = Env::new(fast_sync());
        let (h, mut rx) = env.hub.open_stream();
        assert_eq!(h.create(watch("b", "a")).await, Err(WatchError::EmptyRange));
        assert_eq!(h.create(watch("a", "a")).await, Err(WatchError::EmptyRange));
        assert_eq!(h.create(CreateWatch { watch_id: 2, ..watch("a", "") }).await, Ok(2));
        assert_eq!(h.create(CreateWatch { watch_id: 2, ..watch("b", "") }).await, Err(WatchError::DuplicateId));
        // Automatic ids: etcd's counter from 0, skipping ids in use.
        assert_eq!(h.create(watch("a", "\0")).await, Ok(0));
        assert_eq!(h.create(watch("a", "b")).await, Ok(1));
        assert_eq!(h.create(watch("a", "")).await, Ok(3));
        assert!(h.cancel(0).await);
        assert_eq!(h.create(watch("a", "")).await, Ok(4), "the counter does not go back");
        assert_eq!(h.watcher_count(), 4);
        // Errors queue nothing; every success queued its Created first.
        let got = drain_until_synced(&h, &mut rx).await;
        let created: Vec<i64> = got
            .iter()
            .filter_map(|d| match d {
                Delivery::Created { watch_id, .. } => Some(*watch_id),
                _ => None,
            })
            .collect();
        assert_eq!(created, [2, 0, 1, 3, 4]);
        // Ids are per stream.
        let (h2, _rx2) = env.hub.open_stream();
        assert_eq!(h2.create(CreateWatch { watch_id: 2, ..watch("a", "") }).await, Ok(2));
        assert_eq!(h2.create(watch("a", "")).await, Ok(0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_txn_revision_is_one_delivery_live_and_replayed() {
    bounded(async {
        let cfg = HubConfig { max_revisions_per_batch: 1, max_batch_bytes: 1, ..fast_sync() };
        let env = Env::new(cfg);
        env.put("x/0", "old");
        let before = env.hub.revision();
        let (h, mut rx) = env.hub.open_stream();
        let live = h.create(watch("x/", "x0")).await.unwrap();
        let txn = TxnRequest {
            compare: vec![],
            success: vec![put_op("x/1", "a"), put_op("x/2", "b"), delete_op("x/0"), put_op("x/3", "c")],
            failure: vec![],
        };
        let rev = env.write(WriteRequest::Txn(txn)).revision;
        env.put("x/1", "after");
        let replay = h.create(CreateWatch { start_revision: before, ..watch("x/", "x0") }).await.unwrap();
        let got = drain_until_synced(&h, &mut rx).await;
        for id in [live, replay] {
            let batches: Vec<Vec<Ev>> = got
                .iter()
                .filter_map(|d| match d {
                    Delivery::Events { watch_id, events, .. } if *watch_id == id => {
                        Some(events.iter().map(ev).collect())
                    }
                    _ => None,
                })
                .collect();
            let txn_batch = batches.iter().find(|b| b[0].2 == rev).expect("txn revision delivered");
            assert_eq!(txn_batch.len(), 4, "watcher {id}: {batches:?}");
            assert!(txn_batch.iter().all(|e| e.2 == rev));
            assert_eq!(events_of(&got, id).last().unwrap().3, "after");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compacted_start_revision_is_canceled() {
    bounded(async {
        let env = Env::new(fast_sync());
        for i in 0..10 {
            env.put(&format!("k{i}"), "v");
        }
        env.compact(6);
        let (h, mut rx) = env.hub.open_stream();
        let old = h.create(CreateWatch { start_revision: 3, ..watch("k", "l") }).await.unwrap();
        assert!(matches!(next(&mut rx).await, Delivery::Created { watch_id, .. } if watch_id == old));
        assert_eq!(
            next(&mut rx).await,
            Delivery::Canceled { watch_id: old, compact_revision: 6, reason: String::new() }
        );
        assert_eq!(h.watcher_count(), 0);
        // The compaction revision itself is still readable.
        let at = h.create(CreateWatch { start_revision: 6, ..watch("k", "l") }).await.unwrap();
        let got = drain_until_synced(&h, &mut rx).await;
        let revs: Vec<i64> = events_of(&got, at).iter().map(|e| e.2).collect();
        assert_eq!(revs, (6..=11).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_moved_aside_past_a_compaction_is_canceled() {
    bounded(async {
        let env = Env::new(HubConfig { stream_buffer_bytes: 300, ..fast_sync() });
        let (h, mut rx) = env.hub.open_stream();
        let id = h.create(watch("k", "")).await.unwrap();
        let first = env.hub.revision() + 1;
        for i in 0..50 {
            env.put("k", &format!("value-{i}"));
        }
        assert!(!h.request_progress(), "the unread stream's watcher was moved aside");
        let last = env.hub.revision();
        env.compact(last);
        let mut got = Vec::new();
        let canceled = loop {
            match next(&mut rx).await {
                Delivery::Canceled { watch_id, compact_revision, reason } => {
                    assert_eq!((watch_id, reason.as_str()), (id, ""));
                    break compact_revision;
                }
                d => got.push(d),
            }
        };
        assert_eq!(canceled, last);
        let revs: Vec<i64> = events_of(&got, id).iter().map(|e| e.2).collect();
        assert!(!revs.is_empty() && revs.len() < 50, "{revs:?}");
        assert_eq!(revs, (first..first + revs.len() as i64).collect::<Vec<_>>(), "a prefix, in order");
        assert_eq!(h.watcher_count(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_stream_blocks_neither_notify_nor_a_fast_stream() {
    bounded(async {
        let env = Env::new(HubConfig { stream_buffer_bytes: 400, ..fast_sync() });
        let (slow_h, mut slow_rx) = env.hub.open_stream();
        let (fast_h, mut fast_rx) = env.hub.open_stream();
        let slow = slow_h.create(watch("k", "")).await.unwrap();
        let fast = fast_h.create(watch("k", "")).await.unwrap();
        assert_eq!(next(&mut fast_rx).await, Delivery::Created { watch_id: fast, revision: env.hub.revision() });
        let first = env.hub.revision() + 1;
        const N: i64 = 300;
        let fast_reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while (got.len() as i64) < N {
                if let Delivery::Events { events, .. } = next(&mut fast_rx).await {
                    got.extend(events.iter().map(ev));
                }
            }
            got
        });
        let writer = {
            let env = env.clone();
            tokio::task::spawn_blocking(move || {
                for i in 0..N {
                    env.put("k", &format!("value-{i}"));
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(20), writer).await.expect("notify blocked").unwrap();
        let fast_got = tokio::time::timeout(Duration::from_secs(20), fast_reader).await.expect("fast stream stalled").unwrap();
        let want = env.expected(first, |_| true);
        assert_eq!(fast_got, want);
        assert_eq!(fast_h.watcher_count(), 1);
        assert!(!slow_h.request_progress(), "the slow stream's watcher was moved aside");
        // Reading again, the slow stream gets everything exactly once, in order.
        let got = drain_until_synced(&slow_h, &mut slow_rx).await;
        assert_eq!(got[0], Delivery::Created { watch_id: slow, revision: first - 1 });
        assert_eq!(events_of(&got, slow), want);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_resyncs_every_watcher_from_the_store() {
    bounded(async {
        let env = Env::new(fast_sync());
        let other = new_store();
        let mut index = 0;
        let mut both = |req: WriteRequest| {
            index += 1;
            other.apply(index, &req).unwrap();
            env.write(req);
        };
        for i in 0..5 {
            both(put_req(&format!("k/{i}"), "a"));
        }
        let (h, mut rx) = env.hub.open_stream();
        let live = h.create(watch("k/", "k0")).await.unwrap();
        let hist = h.create(CreateWatch { start_revision: 3, ..watch("k/1", "") }).await.unwrap();
        let before = drain_until_synced(&h, &mut rx).await;
        let hist_before: Vec<i64> = events_of(&before, hist).iter().map(|e| e.2).collect();
        assert_eq!(hist_before, [3], "k/1 was written at revision 3");
        assert!(events_of(&before, live).is_empty());
        let restored_from = env.hub.revision() + 1;
        // The other member moves on; this one installs its snapshot.
        for i in 0..6 {
            index += 1;
            other.apply(index, &put_req(&format!("k/{}", i % 2), &format!("b{i}"))).unwrap();
        }
        env.restore_from(&other);
        assert_eq!(env.hub.revision(), other.current_revision());
        let after_restore = env.put("k/1", "c");
        let got = drain_until_synced(&h, &mut rx).await;
        let revs: Vec<i64> = events_of(&got, live).iter().map(|e| e.2).collect();
        assert_eq!(revs, (restored_from..=after_restore).collect::<Vec<_>>());
        let hist_revs: Vec<i64> = events_of(&got, hist).iter().map(|e| e.2).collect();
        assert_eq!(hist_revs, vec![restored_from + 1, restored_from + 3, restored_from + 5, after_restore]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_ignores_old_revisions_and_fills_gaps_from_the_store() {
    bounded(async {
        let env = Env::new(fast_sync());
        let (h, mut rx) = env.hub.open_stream();
        let id = h.create(watch("k", "l")).await.unwrap();
        let r1 = env.put("k1", "a");
        let mut w = env.writer.lock();
        w.index += 1;
        let skipped = env.store.apply(w.index, &put_req("k2", "b")).unwrap();
        w.index += 1;
        let applied = env.store.apply(w.index, &put_req("k3", "c")).unwrap();
        w.log.push((skipped.revision, skipped.events.clone()));
        w.log.push((applied.revision, applied.events.clone()));
        drop(w);
        // A repeated notification delivers nothing twice.
        let first = env.writer.lock().log[0].1.clone();
        env.hub.notify(r1, &first);
        // `skipped` was never notified: the hub moves the watcher aside and
        // the store fills the gap.
        env.hub.notify(applied.revision, &applied.events);
        assert_eq!(env.hub.revision(), applied.revision);
        let got = drain_until_synced(&h, &mut rx).await;
        let revs: Vec<i64> = events_of(&got, id).iter().map(|e| e.2).collect();
        assert_eq!(revs, [r1, skipped.revision, applied.revision]);
        assert_eq!(events_of(&got, id), env.expected(r1, |_| true));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_watchers_on_one_stream() {
    bounded(async {
        let env = Env::new(fast_sync());
        let (h, mut rx) = env.hub.open_stream();
        for i in 0..1000 {
            let req = if i % 2 == 0 { watch("k", "") } else { watch("", "\0") };
            assert_eq!(h.create(req).await, Ok(i));
        }
        assert_eq!(h.watcher_count(), 1000);
        let rk = env.put("k", "1");
        let rz = env.put("z", "2");
        let got = drain_until_synced(&h, &mut rx).await;
        let mut per_watcher: HashMap<i64, Vec<i64>> = HashMap::new();
        for d in &got {
            if let Delivery::Events { watch_id, events, .. } = d {
                per_watcher.entry(*watch_id).or_default().extend(events.iter().map(|e| ev(e).2));
            }
        }
        assert_eq!(per_watcher.len(), 1000);
        for (id, revs) in per_watcher {
            let want = if id % 2 == 0 { vec![rk] } else { vec![rk, rz] };
            assert_eq!(revs, want, "watcher {id}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_requests_wait_for_every_watcher_to_be_synced() {
    bounded(async {
        let env = Env::new(HubConfig { stream_buffer_bytes: 200, ..fast_sync() });
        let big = "x".repeat(100);
        for _ in 0..50 {
            env.put("k", &big);
        }
        let hub_rev = env.hub.revision();
        // No watchers: nothing to wait for, nothing queued.
        let (h, mut rx) = env.hub.open_stream();
        assert!(h.request_progress());
        // Catching up needs more than the budget while Created is unread:
        // the watcher stays unsynced until the client reads.
        let id = h.create(CreateWatch { start_revision: 1, ..watch("k", "") }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!h.request_progress());
        assert_eq!(next(&mut rx).await, Delivery::Created { watch_id: id, revision: hub_rev });
        let got = drain_until_synced(&h, &mut rx).await;
        assert_eq!(events_of(&got, id).len(), 50);
        // A synced stream answers at once, with the hub revision.
        let (h2, mut rx2) = env.hub.open_stream();
        let id2 = h2.create(watch("k", "")).await.unwrap();
        assert!(h2.request_progress());
        assert_eq!(next(&mut rx2).await, Delivery::Created { watch_id: id2, revision: hub_rev });
        assert_eq!(next(&mut rx2).await, Delivery::Progress { watch_id: -1, revision: hub_rev });
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_notify_ticks_report_idle_synced_watchers() {
    bounded(async {
        let env = Env::new(fast_sync());
        let (h, mut rx) = env.hub.open_stream();
        let notified = h.create(CreateWatch { progress_notify: true, ..watch("a", "") }).await.unwrap();
        let quiet = h.create(watch("a", "")).await.unwrap();
        let other = h.create(CreateWatch { progress_notify: true, ..watch("b", "") }).await.unwrap();
        drain_until_synced(&h, &mut rx).await;
        let rev = env.hub.revision();

        h.progress_notify_tick();
        let mut got = drain_until_synced(&h, &mut rx).await;
        got.sort_by_key(|d| format!("{d:?}"));
        let mut want = vec![
            Delivery::Progress { watch_id: notified, revision: rev },
            Delivery::Progress { watch_id: other, revision: rev },
        ];
        want.sort_by_key(|d| format!("{d:?}"));
        assert_eq!(got, want);

        // A watcher that had events since the last tick gets no progress.
        let r = env.put("a", "1");
        h.progress_notify_tick();
        let got = drain_until_synced(&h, &mut rx).await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.contains(&Delivery::Progress { watch_id: other, revision: r }));
        assert_eq!(events_of(&got, notified).len(), 1);
        assert_eq!(events_of(&got, quiet).len(), 1);
        // ...but does at the next tick.
        h.progress_notify_tick();
        let mut got = drain_until_synced(&h, &mut rx).await;
        got.sort_by_key(|d| format!("{d:?}"));
        let mut want =
            vec![Delivery::Progress { watch_id: notified, revision: r }, Delivery::Progress { watch_id: other, revision: r }];
        want.sort_by_key(|d| format!("{d:?}"));
        assert_eq!(got, want);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_follows_queued_events_and_stops_delivery() {
    bounded(async {
        let env = Env::new(fast_sync());
        let (h, mut rx) = env.hub.open_stream();
        let id = h.create(watch("k", "")).await.unwrap();
        let keep = h.create(watch("k", "")).await.unwrap();
        let r = env.put("k", "1");
        assert!(h.cancel(id).await);
        assert!(!h.cancel(id).await);
        assert!(!h.cancel(77).await);
        env.put("k", "2");
        let got = drain_until_synced(&h, &mut rx).await;
        let mine: Vec<&Delivery> = got
            .iter()
            .filter(|d| matches!(d, Delivery::Events { watch_id, .. } | Delivery::Canceled { watch_id, .. } if *watch_id == id))
            .collect();
        assert_eq!(mine.len(), 2, "{mine:?}");
        assert!(matches!(mine[0], Delivery::Events { revision, .. } if *revision == r));
        assert_eq!(*mine[1], Delivery::Canceled { watch_id: id, compact_revision: 0, reason: String::new() });
        assert_eq!(events_of(&got, keep).len(), 2);
        assert_eq!(h.watcher_count(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_streams_and_shutting_down() {
    bounded(async {
        let env = Env::new(fast_sync());
        // Receiver dropped: creating fails, notify carries on.
        let (h, rx) = env.hub.open_stream();
        h.create(watch("k", "")).await.unwrap();
        drop(rx);
        assert_eq!(h.create(watch("k", "")).await, Err(WatchError::Closed));
        env.put("k", "1");
        // Handle dropped: its watchers are gone; the receiver drains, then ends.
        let (h, mut rx) = env.hub.open_stream();
        let id = h.create(watch("k", "")).await.unwrap();
        let r = env.put("k", "2");
        drop(h);
        assert!(matches!(next(&mut rx).await, Delivery::Created { .. }));
        assert!(matches!(next(&mut rx).await, Delivery::Events { watch_id, revision, .. } if watch_id == id && revision == r));
        assert_eq!(rx.recv().await, None);
        // Shutdown ends every stream.
        let (h, mut rx) = env.hub.open_stream();
        h.create(watch("k", "")).await.unwrap();
        env.hub.shutdown();
        assert!(matches!(next(&mut rx).await, Delivery::Created { .. }));
        assert_eq!(rx.recv().await, None);
        assert_eq!(h.create(watch("k", "")).await, Err(WatchError::Closed));
        assert_eq!(h.watcher_count(), 0);
        env.put("k", "3");
        let (_h, mut rx) = env.hub.open_stream();
        assert_eq!(rx.recv().await, None);
        // Dropping the last hub clone shuts down too.
        let store = new_store();
        let hub = WatchHub::new(store, fast_sync());
        let (h, mut rx) = hub.open_stream();
        h.create(watch("k", "")).await.unwrap();
        drop(hub.clone());
        assert!(h.create(watch("k", "")).await.is_ok(), "a clone is still alive");
        drop(hub);
        assert!(matches!(next(&mut rx).await, Delivery::Created { .. }));
        assert!(matches!(next(&mut rx).await, Delivery::Created { .. }));
        assert_eq!(rx.recv().await, None);
    })
    .await;
}

/// Random writes against watchers of every kind on streams read at
/// different speeds; each watcher must see exactly the model's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_workload_matches_the_model() {
    let seed: u64 = std::env::var("CAIRN_WATCH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed: {seed} (rerun with CAIRN_WATCH_SEED={seed})");
    bounded(async move {
        for round in 0..4u64 {
            random_round(seed.wrapping_add(round)).await;
        }
    })
    .await;
}

async fn random_round(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let cfg = HubConfig {
        stream_buffer_bytes: rng.random_range(150..4000),
        sync_interval: Duration::from_millis(5),
        max_watchers_per_sync: rng.random_range(1..6),
        max_revisions_per_batch: rng.random_range(1..20),
        max_batch_bytes: rng.random_range(1..2000),
    };
    let env = Env::new(cfg.clone());
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
    let random_op = |rng: &mut StdRng| -> WriteRequest {
        let key = keys[rng.random_range(0..keys.len())];
        let value = "v".repeat(rng.random_range(0..40));
        match rng.random_range(0..10) {
            0..=5 => put_req(key, &value),
            6 => WriteRequest::DeleteRange(DeleteRangeRequest { key: key.into(), ..Default::default() }),
            7 => WriteRequest::DeleteRange(DeleteRangeRequest { key: "k2".into(), range_end: "k5".into(), ..Default::default() }),
            _ => {
                let mut picked: Vec<&str> = keys.to_vec();
                picked.retain(|_| rng.random_bool(0.3));
                picked.push("k7x");
                let ops = picked
                    .iter()
                    .map(|k| if rng.random_bool(0.7) { put_op(k, &value) } else { delete_op(k) })
                    .collect();
                WriteRequest::Txn(TxnRequest { compare: vec![], success: ops, failure: vec![] })
            }
        }
    };
    for _ in 0..rng.random_range(0..60) {
        env.write(random_op(&mut rng));
    }

    struct W {
        id: i64,
        from: i64,
        req: CreateWatch,
    }
    let mut streams = Vec::new();
    for s in 0..3 {
        let (h, rx) = env.hub.open_stream();
        let mut ws = Vec::new();
        for _ in 0..rng.random_range(1..5) {
            let (key, end) = match rng.random_range(0..4) {
                0 => (keys[rng.random_range(0..keys.len())], ""),
                1 => ("k", "l"),
                2 => ("k2", "k5"),
                _ => ("k4", "\0"),
            };
            let now = env.hub.revision();
            let start = match rng.random_range(0..3) {
                0 => 0,
                1 => rng.random_range(1..=now),
                _ => now + rng.random_range(1..5),
            };
            let req = CreateWatch {
                start_revision: start,
                no_put: rng.random_bool(0.2),
                no_delete: rng.random_bool(0.2),
                ..watch(key, end)
            };
            let id = h.create(req.clone()).await.unwrap();
            ws.push(W { id, from: if start == 0 { now + 1 } else { start }, req });
        }
        streams.push((s, h, rx, ws));
    }

    let n_writes = rng.random_range(100..400);
    let ops: Vec<WriteRequest> = (0..n_writes).map(|_| random_op(&mut rng)).collect();
    let writer = {
        let env = env.clone();
        tokio::task::spawn_blocking(move || {
            for op in ops {
                env.write(op);
            }
        })
    };
    let pause_ms = rng.random_range(0..3);
    let mut results: Vec<(Vec<Delivery>, Vec<W>)> = Vec::new();
    let mut readers = Vec::new();
    let mut late = Vec::new();
    for (s, h, mut rx, ws) in streams {
        if s == 2 {
            // Not read at all until the writes are done.
            late.push((h, rx, ws));
            continue;
        }
        // Stream 0 reads as fast as it can, stream 1 with pauses, both while
        // the writes go on, until the progress that ends the test.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match next(&mut rx).await {
                    Delivery::Progress { watch_id: -1, .. } => return got,
                    d => got.push(d),
                }
                if s == 1 {
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                }
            }
        });
        readers.push((h, reader, ws));
    }
    writer.await.unwrap();
    for (h, reader, ws) in readers {
        while !h.request_progress() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        results.push((reader.await.unwrap(), ws));
    }
    for (h, mut rx, ws) in late {
        results.push((drain_until_synced(&h, &mut rx).await, ws));
    }

    for (got, ws) in results {
        for w in ws {
            let created = got.iter().position(|d| matches!(d, Delivery::Created { watch_id, .. } if *watch_id == w.id));
            let first_event = got.iter().position(|d| matches!(d, Delivery::Events { watch_id, .. } if *watch_id == w.id));
            assert!(created.is_some(), "seed {seed}: watcher {} has no Created", w.id);
            if let Some(e) = first_event {
                assert!(created < Some(e), "seed {seed}: watcher {}: an event before Created", w.id);
            }
            let range_end = w.req.range_end.clone();
            let key = w.req.key.clone();
            let want = env.expected(w.from, |e| {
                let k = &e.kv.as_ref().unwrap().key;
                let in_range = match range_end.as_slice() {
                    [] => *k == key,
                    [0] => *k >= key,
                    end => *k >= key && k.as_slice() < end,
                };
                let is_put = e.r#type == EventType::Put as i32;
                in_range && !(is_put && w.req.no_put) && !(!is_put && w.req.no_delete)
            });
            assert_eq!(events_of(&got, w.id), want, "seed {seed}: watcher {} {:?} from {}", w.id, w.req, w.from);
        }
    }
}
