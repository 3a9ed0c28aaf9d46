//! The Watch service through the etcd-client crate and the raw gRPC API:
//! every create option, historical replay, compaction, progress, fragments,
//! many watchers on one stream, slow receivers, and etcd's guarantees
//! (ordered, no duplicates, atomic revisions, resumable).

mod common;

use std::time::{Duration, Instant};

use cairn_api::etcdserverpb::watch_client::WatchClient as RawWatchClient;
use cairn_api::etcdserverpb::{watch_request::RequestUnion, WatchCreateRequest, WatchRequest, WatchResponse as RawResponse};
use common::Cairn;
use etcd_client::{
    Client, CompactionOptions, EventType, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const STEP: Duration = Duration::from_secs(10);

async fn client(c: &Cairn) -> Client {
    Client::connect([c.endpoint()], None).await.unwrap()
}

/// A 3-member cluster: writes go through `writer`, watches through another
/// member, so every test also checks that a member other than the one
/// taking the write emits its events.
struct Members(common::Cluster);

impl Members {
    fn start(args: &[&str]) -> Members {
        Members(common::Cluster::start(3, args))
    }
    fn writer(&self) -> &Cairn {
        &self.0.members[0]
    }
    fn watcher(&self) -> &Cairn {
        &self.0.members[1]
    }
    fn other(&self) -> &Cairn {
        &self.0.members[2]
    }
}

async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(STEP, stream.message()).await.expect("watch response in time").unwrap().expect("stream open")
}

/// Reads responses until `n` events arrived; returns (revision, key, value, type) per event.
async fn collect(stream: &mut WatchStream, n: usize) -> Vec<(i64, String, String, EventType)> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = next(stream).await;
        assert!(!r.canceled(), "canceled: {r:?}");
        for e in r.events() {
            let kv = e.kv().unwrap();
            out.push((kv.mod_revision(), kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string(), e.event_type()));
        }
    }
    out
}

async fn expect_quiet(stream: &mut WatchStream, d: Duration) {
    if let Ok(r) = tokio::time::timeout(d, stream.message()).await {
        panic!("unexpected watch response: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_options_filters_and_prev_kv() {
    let c = Members::start(&[]);
    let mut kv = client(c.writer()).await;
    let mut w = client(c.watcher()).await;

    let mut single = w.watch("a", None).await.unwrap();
    let created = next(&mut single).await;
    assert!(created.created() && !created.canceled());
    let mut prefix = w.watch("p/", Some(WatchOptions::new().with_prefix().with_prev_key())).await.unwrap();
    assert!(next(&mut prefix).await.created());
    let mut from_key = w.watch("m", Some(WatchOptions::new().with_from_key().with_filters([WatchFilterType::NoPut]))).await.unwrap();
    assert!(next(&mut from_key).await.created());

    kv.put("a", "1", None).await.unwrap(); // rev 2
    kv.put("p/x", "1", None).await.unwrap(); // rev 3
    kv.put("p/x", "2", None).await.unwrap(); // rev 4
    kv.delete("p/x", None).await.unwrap(); // rev 5
    kv.put("z", "1", None).await.unwrap(); // rev 6
    kv.delete("z", None).await.unwrap(); // rev 7

    assert_eq!(collect(&mut single, 1).await, vec![(2, "a".into(), "1".into(), EventType::Put)]);
    let r1 = next(&mut prefix).await;
    let e = &r1.events()[0];
    // Created, not modified: version 1, create == mod revision, no prev_kv.
    assert_eq!((e.kv().unwrap().version(), e.kv().unwrap().create_revision()), (1, 3));
    assert!(e.prev_kv().is_none());
    let r2 = next(&mut prefix).await;
    let e = &r2.events()[0];
    assert_eq!(e.kv().unwrap().version(), 2);
    assert_eq!(e.prev_kv().unwrap().value_str().unwrap(), "1");
    let r3 = next(&mut prefix).await;
    let e = &r3.events()[0];
    assert_eq!(e.event_type(), EventType::Delete);
    assert_eq!(e.kv().unwrap().mod_revision(), 5);
    assert_eq!(e.prev_kv().unwrap().value_str().unwrap(), "2");
    assert_eq!(r3.header().unwrap().revision(), 5);
    // NOPUT on "m" and above: only the deletes of p/x and z.
    assert_eq!(
        collect(&mut from_key, 2).await,
        vec![(5, "p/x".into(), "".into(), EventType::Delete), (7, "z".into(), "".into(), EventType::Delete)]
    );
    expect_quiet(&mut single, Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_ids_duplicates_empty_ranges_and_cancel() {
    let c = Members::start(&[]);
    let mut kv = client(c.writer()).await;
    let mut w = client(c.watcher()).await;
    let mut stream = w.watch("k", Some(WatchOptions::new().with_watch_id(7))).await.unwrap();
    let r = next(&mut stream).await;
    assert_eq!((r.created(), r.watch_id()), (true, 7));
    // A second watcher on the same stream with the same id: etcd's refusal.
    stream.watch("other", Some(WatchOptions::new().with_watch_id(7))).await.unwrap();
    let r = next(&mut stream).await;
    assert!(r.created() && r.canceled(), "{r:?}");
    assert_eq!(r.watch_id(), -1);
    assert_eq!(r.cancel_reason(), "mvcc: duplicate watch ID provided on the WatchStream");
    // key >= range_end: an empty range.
    stream.watch("b", Some(WatchOptions::new().with_range("a"))).await.unwrap();
    let r = next(&mut stream).await;
    assert!(r.canceled(), "{r:?}");
    assert_eq!(r.cancel_reason(), "mvcc: watcher range is empty");
    // Auto ids are distinct from the client's.
    stream.watch("k2", None).await.unwrap();
    let r = next(&mut stream).await;
    assert!(r.created() && !r.canceled());
    assert_ne!(r.watch_id(), 7);
    let auto = r.watch_id();

    stream.cancel(7).await.unwrap();
    let r = next(&mut stream).await;
    assert!(r.canceled() && r.watch_id() == 7, "{r:?}");
    kv.put("k", "v", None).await.unwrap();
    kv.put("k2", "v", None).await.unwrap();
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), auto);
    assert_eq!(r.events()[0].kv().unwrap().key_str().unwrap(), "k2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn historical_replay_is_exact_and_resumable() {
    let seed = common::seed("historical_replay_is_exact_and_resumable");
    let c = Members::start(&[]);
    let mut kv = client(c.writer()).await;
    let mut expected = Vec::new();
    for i in 0..400u64 {
        let key = format!("h/{}", (i * 7 + seed) % 37);
        let rev = if i % 9 == 8 {
            let r = kv.delete(key.clone(), None).await.unwrap();
            if r.deleted() == 0 {
                continue;
            }
            let rev = r.header().unwrap().revision();
            expected.push((rev, key, String::new(), EventType::Delete));
            continue;
        } else {
            kv.put(key.clone(), format!("v{i}"), None).await.unwrap().header().unwrap().revision()
        };
        expected.push((rev, key, format!("v{i}"), EventType::Put));
    }
    // A txn writes three keys in one revision: one response carries all three.
    let txn = Txn::new().and_then([TxnOp::put("h/t1", "x", None), TxnOp::put("h/t2", "y", None), TxnOp::put("h/t3", "z", None)]);
    let trev = kv.txn(txn).await.unwrap().header().unwrap().revision();
    for k in ["h/t1", "h/t2", "h/t3"] {
        expected.push((trev, k.into(), ["x", "y", "z"][(k.as_bytes()[3] - b'1') as usize].into(), EventType::Put));
    }

    let mut w = client(c.watcher()).await;
    let mut stream = w.watch("h/", Some(WatchOptions::new().with_prefix().with_start_revision(1))).await.unwrap();
    assert!(next(&mut stream).await.created());
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let r = next(&mut stream).await;
        let revs: Vec<i64> = r.events().iter().map(|e| e.kv().unwrap().mod_revision()).collect();
        if revs.contains(&trev) {
            assert_eq!(revs.iter().filter(|r| **r == trev).count(), 3, "a revision split across responses: {revs:?}");
        }
        got.extend(collect_events(&r));
    }
    assert_eq!(got, expected);
    expect_quiet(&mut stream, Duration::from_millis(200)).await;

    // Resume from the middle: exactly the rest, again.
    let mid = expected[expected.len() / 2].0;
    let rest: Vec<_> = expected.iter().filter(|e| e.0 >= mid).cloned().collect();
    let mut w2 = client(c.watcher()).await;
    let mut resumed = w2.watch("h/", Some(WatchOptions::new().with_prefix().with_start_revision(mid))).await.unwrap();
    assert!(next(&mut resumed).await.created());
    assert_eq!(collect(&mut resumed, rest.len()).await, rest);
}

fn collect_events(r: &WatchResponse) -> Vec<(i64, String, String, EventType)> {
    r.events()
        .iter()
        .map(|e| {
            let kv = e.kv().unwrap();
            (kv.mod_revision(), kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string(), e.event_type())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compacted_start_revision_is_canceled_with_compact_revision() {
    let c = Members::start(&[]);
    let mut kv = client(c.writer()).await;
    for i in 0..10 {
        kv.put("c", format!("{i}"), None).await.unwrap();
    }
    kv.compact(8, None).await.unwrap();
    let mut w = client(c.watcher()).await;
    // A linearizable read: the watching member has applied the compaction.
    w.get("c", None).await.unwrap();
    let mut stream = w.watch("c", Some(WatchOptions::new().with_start_revision(3))).await.unwrap();
    let created = next(&mut stream).await;
    assert!(created.created());
    let r = next(&mut stream).await;
    assert!(r.canceled(), "{r:?}");
    assert_eq!(r.compact_revision(), 8);
    // From the compaction revision on is still available.
    let mut ok = w.watch("c", Some(WatchOptions::new().with_start_revision(8))).await.unwrap();
    assert!(next(&mut ok).await.created());
    let got = collect(&mut ok, 4).await;
    assert_eq!(got.iter().map(|e| e.0).collect::<Vec<_>>(), vec![8, 9, 10, 11]);
}

/// etcd issue 18089 (found in Cairn by the jepsen soak): a watch from the
/// compaction revision gets that revision's delete, also with physical
/// compaction done and on every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_from_the_compaction_revision_sees_its_delete() {
    let c = Members::start(&[]);
    let mut kv = client(c.writer()).await;
    kv.put("d/a", "1", None).await.unwrap();
    kv.put("d/b", "1", None).await.unwrap();
    let del = kv.delete("d/a", None).await.unwrap().header().unwrap().revision();
    kv.put("d/b", "2", None).await.unwrap();
    kv.compact(del, Some(CompactionOptions::new().with_physical())).await.unwrap();
    let mut w = client(c.watcher()).await;
    w.get("d/", None).await.unwrap();
    let mut stream = w.watch("d/", Some(WatchOptions::new().with_prefix().with_start_revision(del))).await.unwrap();
    assert!(next(&mut stream).await.created());
    let got = collect(&mut stream, 2).await;
    let want = vec![
        (del, "d/a".to_string(), String::new(), EventType::Delete),
        (del + 1, "d/b".to_string(), "2".to_string(), EventType::Put),
    ];
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn future_start_revision_waits() {
    let c = Members::start(&[]);
    let mut kv = client(c.writer()).await;
    let rev = kv.put("f", "0", None).await.unwrap().header().unwrap().revision();
    let mut w = client(c.watcher()).await;
    let mut stream = w.watch("f", Some(WatchOptions::new().with_start_revision(rev + 3))).await.unwrap();
    assert!(next(&mut stream).await.created());
    kv.put("f", "1", None).await.unwrap();
    kv.put("f", "2", None).await.unwrap();
    expect_quiet(&mut stream, Duration::from_millis(300)).await;
    kv.put("f", "3", None).await.unwrap();
    assert_eq!(collect(&mut stream, 1).await, vec![(rev + 3, "f".into(), "3".into(), EventType::Put)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_requests_and_progress_notify() {
    let c = Members::start(&["--watch-progress-notify-interval=300ms"]);
    let mut kv = client(c.writer()).await;
    let rev = kv.put("x", "1", None).await.unwrap().header().unwrap().revision();
    let mut w = client(c.watcher()).await;
    w.get("x", None).await.unwrap();
    let mut stream = w.watch("a", None).await.unwrap();
    assert!(next(&mut stream).await.created());
    stream.watch("b", None).await.unwrap();
    assert!(next(&mut stream).await.created());
    stream.request_progress().await.unwrap();
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), -1, "{r:?}");
    assert!(r.events().is_empty() && !r.created() && !r.canceled());
    assert_eq!(r.header().unwrap().revision(), rev);

    // progress_notify: an idle watcher hears the current revision periodically.
    let mut idle = w.watch("idle", Some(WatchOptions::new().with_progress_notify())).await.unwrap();
    let created = next(&mut idle).await;
    let id = created.watch_id();
    let rev = kv.put("y", "1", None).await.unwrap().header().unwrap().revision();
    w.get("y", None).await.unwrap();
    let started = Instant::now();
    let r = next(&mut idle).await;
    assert_eq!(r.watch_id(), id);
    assert!(r.events().is_empty());
    assert_eq!(r.header().unwrap().revision(), rev);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

/// A raw gRPC watch stream: requests in, responses out, read at the test's pace.
async fn raw_stream(c: &Cairn, create: WatchCreateRequest) -> (mpsc::Sender<WatchRequest>, tonic::Streaming<RawResponse>) {
    let mut raw = RawWatchClient::connect(c.endpoint()).await.unwrap().max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(16);
    tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await.unwrap();
    let stream = raw.watch(ReceiverStream::new(rx)).await.unwrap().into_inner();
    (tx, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_revision_is_fragmented_on_request() {
    let c = Members::start(&["--max-request-bytes=262144"]);
    let mut kv = client(c.writer()).await;
    // Every request is under the 256 KiB limit, but deleting all twelve
    // 200 KiB keys at once is one revision whose watch response, with
    // prev_kv, is ~2.4 MiB: over the limit plus gRPC's allowance.
    let value = vec![b'v'; 200 * 1024];
    for i in 0..12 {
        kv.put(format!("big/{i:02}"), value.clone(), None).await.unwrap();
    }
    let create = |fragment| WatchCreateRequest {
        key: b"big/".to_vec(),
        range_end: b"big0".to_vec(),
        prev_kv: true,
        fragment,
        ..Default::default()
    };
    // A linearizable read through the watching member: it has applied the
    // puts, so the watchers start after them.
    client(c.watcher()).await.get("big/", None).await.unwrap();
    let (_tx, mut stream) = raw_stream(c.watcher(), create(true)).await;
    assert!(stream.message().await.unwrap().unwrap().created);
    let (_tx2, mut whole) = raw_stream(c.watcher(), create(false)).await;
    assert!(whole.message().await.unwrap().unwrap().created);
    let rev = kv.delete("big/", Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap().header().unwrap().revision();

    let mut events = 0;
    let mut parts = 0;
    loop {
        let r = tokio::time::timeout(STEP, stream.message()).await.unwrap().unwrap().unwrap();
        assert!(r.events.iter().all(|e| e.kv.as_ref().unwrap().mod_revision == rev && e.prev_kv.is_some()));
        assert!(prost::Message::encoded_len(&r) <= 262144 + 512 * 1024);
        events += r.events.len();
        parts += 1;
        if !r.fragment {
            break;
        }
    }
    assert_eq!(events, 12);
    assert!(parts >= 3, "only {parts} fragments");
    // Without `fragment`, the revision comes in one response.
    let r = tokio::time::timeout(STEP, whole.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((r.events.len(), r.fragment), (12, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_watchers_on_one_stream() {
    let c = Members::start(&[]);
    let mut kv = client(c.writer()).await;
    let mut w = client(c.watcher()).await;
    let mut stream = w.watch("w/0000", None).await.unwrap();
    assert!(next(&mut stream).await.created());
    for i in 1..1000 {
        stream.watch(format!("w/{i:04}"), None).await.unwrap();
    }
    let mut ids = std::collections::HashSet::new();
    while ids.len() < 999 {
        let r = next(&mut stream).await;
        assert!(r.created());
        ids.insert(r.watch_id());
    }
    // --max-txn-ops is 128: write in txns of 100.
    for chunk in (0..1000).collect::<Vec<_>>().chunks(100) {
        let t = Txn::new().and_then(chunk.iter().map(|i| TxnOp::put(format!("w/{i:04}"), "v", None)).collect::<Vec<_>>());
        kv.txn(t).await.unwrap();
    }
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 1000 {
        let r = next(&mut stream).await;
        assert_eq!(r.events().len(), 1);
        let key = r.events()[0].kv().unwrap().key_str().unwrap().to_string();
        assert!(seen.insert(r.watch_id(), key).is_none(), "watcher {} got two events", r.watch_id());
    }
    let keys: std::collections::HashSet<_> = seen.values().cloned().collect();
    assert_eq!(keys.len(), 1000);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A watcher that stops reading does not slow a fast watcher or writers; once
/// it reads again it gets every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_watcher_stalls_nobody() {
    let c = Members::start(&[]);
    let mut kv = client(c.writer()).await;
    let create = WatchCreateRequest { key: b"s/".to_vec(), range_end: b"s0".to_vec(), ..Default::default() };
    let (_slow_tx, mut slow) = raw_stream(c.watcher(), create).await;
    assert!(slow.message().await.unwrap().unwrap().created);
    let mut fast_client = client(c.other()).await;
    let mut fast = fast_client.watch("s/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    assert!(next(&mut fast).await.created());

    let rss_before = rss_kib(c.watcher().pid().unwrap());
    // ~40 MiB of events: far beyond the slow stream's buffers.
    let value = vec![b'x'; 64 * 1024];
    let n = 640;
    let mut put_latencies = Vec::new();
    let mut fast_seen = 0;
    let mut lag = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let rev = kv.put(format!("s/{}", i % 50), value.clone(), Some(PutOptions::new())).await.unwrap().header().unwrap().revision();
        put_latencies.push(t.elapsed());
        // The fast watcher keeps up: its event arrives promptly.
        let t = Instant::now();
        while fast_seen < i + 1 {
            let r = next(&mut fast).await;
            for e in r.events() {
                assert_eq!(e.kv().unwrap().mod_revision(), rev - (i as i64 - fast_seen as i64));
                fast_seen += 1;
            }
        }
        lag.push(t.elapsed());
    }
    put_latencies.sort();
    lag.sort();
    let p99 = put_latencies[n * 99 / 100];
    let lag99 = lag[n * 99 / 100];
    let rss_after = rss_kib(c.watcher().pid().unwrap());
    // The third member applied the same writes and serves only the fast
    // watcher: the stalled watcher's member may hold at most its bounded
    // buffers (4 MiB stream budget, 16 queued responses) more than it.
    let rss_baseline = rss_kib(c.other().pid().unwrap());
    eprintln!(
        "put p99 {p99:?}, fast watcher delivery p99 {lag99:?} with a stalled watcher; \
         RSS of the stalled watcher's member {rss_before} KiB -> {rss_after} KiB, of a member without it {rss_baseline} KiB"
    );
    assert!(
        rss_after < rss_baseline + 32 * 1024,
        "a stalled watcher cost {} KiB of memory",
        rss_after.saturating_sub(rss_baseline)
    );
    assert!(p99 < Duration::from_millis(500), "put p99 {p99:?}");
    assert!(lag99 < Duration::from_millis(500), "fast watcher p99 {lag99:?}");

    // The slow one now reads: every revision once, in order.
    let first = 2;
    let mut next_rev = first;
    while next_rev < first + n as i64 {
        let r = tokio::time::timeout(STEP, slow.message()).await.unwrap().unwrap().unwrap();
        assert!(!r.canceled, "{r:?}");
        for e in r.events {
            assert_eq!(e.kv.unwrap().mod_revision, next_rev);
            next_rev += 1;
        }
    }
}

/// Follows `f/` from `from` on `endpoint` until `until` revisions were seen
/// or the stream breaks; appends event revisions to `seen`. Returns whether
/// the stream broke.
async fn follow(endpoint: String, from: i64, seen: &mut Vec<i64>, until: usize) -> bool {
    let Ok(mut c) = Client::connect([endpoint], None).await else { return true };
    let Ok(mut stream) = c.watch("f/", Some(WatchOptions::new().with_prefix().with_start_revision(from))).await else {
        return true;
    };
    while seen.len() < until {
        match tokio::time::timeout(STEP, stream.message()).await {
            Ok(Ok(Some(r))) => {
                assert!(!r.canceled(), "{r:?}");
                seen.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
            }
            _ => return true,
        }
    }
    false
}

/// Watchers on followers: the member a watcher is connected to is killed
/// (it resumes elsewhere from its last revision + 1), then the leader is
/// killed. The events seen are exactly the writes' revisions: every
/// acknowledged one, no gap, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_resume_across_member_and_leader_kills() {
    let mut cluster = common::Cluster::start(3, &[]);
    let mut probe = Client::connect([cluster.members[0].endpoint()], None).await.unwrap();
    let leader = probe.status().await.unwrap().leader();
    let mut roles = Vec::new();
    for m in &cluster.members {
        let mut c = Client::connect([m.endpoint()], None).await.unwrap();
        roles.push(c.status().await.unwrap().header().unwrap().member_id() == leader);
    }
    let leader_idx = roles.iter().position(|l| *l).unwrap();
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader_idx).collect();
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();

    // Writer: puts through the leader's member, then any live member.
    let writer_eps = endpoints.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for ep in &writer_eps {
                    let Ok(mut c) = Client::connect([ep.clone()], None).await else { continue };
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        i += 1;
                        match tokio::time::timeout(STEP, c.put(format!("f/{}", i % 13), format!("{i}"), None)).await {
                            Ok(Ok(r)) => acked.lock().unwrap().push(r.header().unwrap().revision()),
                            _ => break,
                        }
                    }
                }
            }
        })
    };

    let mut seen = Vec::new();
    // Phase 1: on follower A until some events, then A is killed.
    let a = followers[0];
    let watch_a = endpoints[a].clone();
    let first = follow(watch_a.clone(), 1, &mut seen, 50).await;
    assert!(!first);
    cluster.members[a].kill9();
    // Resume on follower B from the last revision + 1.
    let b = followers[1];
    let from = seen.last().unwrap() + 1;
    assert!(!follow(endpoints[b].clone(), from, &mut seen, 150).await);
    // Phase 2: kill the leader while the watcher runs on B.
    cluster.members[leader_idx].kill9();
    cluster.members[a].restart();
    // B keeps its stream or we resume on it / on A.
    let from = seen.last().unwrap() + 1;
    if follow(endpoints[b].clone(), from, &mut seen, 300).await {
        let from = seen.last().unwrap() + 1;
        assert!(!follow(endpoints[a].clone(), from, &mut seen, 300).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    // Read the tail up to the last acknowledged write.
    let last_acked = *acked.lock().unwrap().iter().max().unwrap();
    let from = seen.last().unwrap() + 1;
    if from <= last_acked {
        let mut c = Client::connect([endpoints[b].clone()], None).await.unwrap();
        let mut stream = c.watch("f/", Some(WatchOptions::new().with_prefix().with_start_revision(from))).await.unwrap();
        while seen.last().copied().unwrap_or(0) < last_acked {
            let r = next(&mut stream).await;
            seen.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
        }
    }
    // Every write is a put under f/, one per revision from 2 on: the events
    // must be exactly 2, 3, 4, … with nothing missing or repeated.
    for (i, rev) in seen.iter().enumerate() {
        assert_eq!(*rev, 2 + i as i64, "gap or duplicate at position {i}: {:?}", &seen[i.saturating_sub(3)..(i + 3).min(seen.len())]);
    }
    for rev in acked.lock().unwrap().iter() {
        assert!(seen.contains(rev), "acknowledged revision {rev} never seen by a watcher");
    }
    eprintln!("{} events followed across a member kill and a leader kill", seen.len());
}

/// `WithRequireLeader` watch streams are canceled with "no leader" once the
/// member loses its quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn require_leader_streams_end_without_a_leader() {
    let mut cluster = common::Cluster::start(3, &["--heartbeat-interval=50", "--election-timeout=500"]);
    let opts = etcd_client::ConnectOptions::new().with_require_leader(true);
    let mut c = Client::connect([cluster.members[0].endpoint()], Some(opts)).await.unwrap();
    let mut stream = c.watch("l", None).await.unwrap();
    assert!(next(&mut stream).await.created());
    cluster.members[1].kill9();
    cluster.members[2].kill9();
    let started = Instant::now();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(15), stream.message()).await.expect("stream ends in time") {
            Err(e) => break e.to_string(),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream closed without an error"),
        }
    };
    assert!(err.contains("etcdserver: no leader"), "{err}");
    eprintln!("hasleader stream canceled {:?} after quorum loss", started.elapsed());
}
