//! Snapshots, restore and replicated-entry application (`apply_entries`,
//! request dedup), on both engines.
//!
//! Random workloads use a seed printed at the start of each test; set
//! `CAIRN_TEST_SEED` to replay one.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use cairn_api::etcdserverpb::{
    request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    TxnRequest,
};
use cairn_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_storage::engine::Scan;
use cairn_storage::{
    record, verify_snapshot, Engine, EntryOutcome, Keyspace, LogEntry, MemEngine, RocksEngine, StorageError, Store,
    StoreConfig, WriteRequest, DEDUP_WINDOW,
};
use tempfile::TempDir;

fn cfg() -> StoreConfig {
    StoreConfig { compaction_batch_limit: 7, compaction_sleep: Duration::ZERO, sync_writes: false }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Mem,
    Rocks,
}

/// A store on either engine, reopenable without losing its contents.
struct Node {
    kind: Kind,
    cfg: StoreConfig,
    mem: Arc<MemEngine>,
    dir: TempDir,
    engine: Option<Arc<dyn Engine>>,
    store: Option<Arc<Store>>,
}

impl Node {
    fn new(kind: Kind) -> Self {
        Self::with_cfg(kind, cfg())
    }

    fn with_cfg(kind: Kind, cfg: StoreConfig) -> Self {
        let mut n =
            Node { kind, cfg, mem: Arc::new(MemEngine::new()), dir: TempDir::new().unwrap(), engine: None, store: None };
        n.open();
        n
    }

    fn open(&mut self) {
        let engine: Arc<dyn Engine> = match self.kind {
            Kind::Mem => self.mem.clone(),
            Kind::Rocks => Arc::new(RocksEngine::open(self.dir.path()).unwrap()),
        };
        self.store = Some(Store::open(engine.clone(), self.cfg.clone()).unwrap());
        self.engine = Some(engine);
    }

    fn reopen(&mut self) {
        let store = self.store.take().unwrap();
        store.close().unwrap();
        assert_eq!(Arc::strong_count(&store), 1);
        drop(store);
        self.engine = None;
        self.open();
    }

    fn s(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn engine(&self) -> &dyn Engine {
        &**self.engine.as_ref().unwrap()
    }

    fn count(&self, ks: Keyspace, start: &[u8], end: Option<&[u8]>) -> usize {
        let mut n = 0;
        self.engine()
            .scan(ks, start, end, &mut |_, _| {
                n += 1;
                Ok(Scan::Continue)
            })
            .unwrap();
        n
    }
}

/// splitmix64: enough randomness for workloads, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Self {
        let seed = std::env::var("CAIRN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("{test}: CAIRN_TEST_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn put(k: &str, v: &str) -> WriteRequest {
    WriteRequest::Put(PutRequest { key: k.into(), value: v.into(), ..Default::default() })
}

fn op_put(k: &str, v: &str) -> RequestOp {
    let put = PutRequest { key: k.into(), value: v.into(), ..Default::default() };
    RequestOp { request: Some(request_op::Request::RequestPut(put)) }
}

fn all_at(rev: i64) -> RangeRequest {
    RangeRequest { key: vec![0], range_end: vec![0], revision: rev, ..Default::default() }
}

fn state_blob(index: u64) -> Vec<u8> {
    format!("log-id {index}, membership {{1,2,3}}").into_bytes()
}

/// Applies an entry carrying `req` (or none) with the raft blob for `index`.
fn entry(store: &Store, index: u64, id: u64, req: Option<&WriteRequest>) -> EntryOutcome {
    let blob = state_blob(index);
    let mut out = store.apply_entries(&[LogEntry { index, request_id: id, request: req }], &blob).unwrap();
    assert_eq!(out.len(), 1);
    out.pop().unwrap()
}

/// An entry as [`workload_log`] applied it, with its outcome.
struct Logged {
    index: u64,
    id: u64,
    req: Option<WriteRequest>,
    outcome: EntryOutcome,
}

/// A random mix of puts, deletes, txns and blank entries over a few keys,
/// with request ids (some repeated), one compaction in the middle.
fn workload(store: &Store, rng: &mut Rng, first_index: u64, entries: u64) -> u64 {
    first_index + workload_log(store, rng, first_index, entries).len() as u64
}

/// [`workload`], returning the entries applied one at a time.
fn workload_log(store: &Store, rng: &mut Rng, first_index: u64, entries: u64) -> Vec<Logged> {
    let mut log = Vec::new();
    let key = |rng: &mut Rng| format!("k{:02}", rng.below(24));
    for (n, index) in (0..entries).zip(first_index..) {
        let req = match rng.below(20) {
            0..=9 => Some(put(&key(rng), &format!("v{n}"))),
            10..=11 => {
                let k = key(rng);
                let end = if rng.below(2) == 0 { Vec::new() } else { format!("{}~", &k[..2]).into_bytes() };
                Some(WriteRequest::DeleteRange(DeleteRangeRequest { key: k.into_bytes(), range_end: end, prev_kv: true }))
            }
            12..=15 => {
                let k = key(rng);
                Some(WriteRequest::Txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Greater as i32,
                        target: CompareTarget::Version as i32,
                        key: k.clone().into_bytes(),
                        range_end: vec![],
                        target_union: Some(TargetUnion::Version(1)),
                    }],
                    success: vec![op_put(&k, "again"), op_put(&key(rng), &format!("t{n}"))],
                    failure: vec![op_put(&k, "first")],
                }))
            }
            16 => None,
            _ => Some(put(&key(rng), &"x".repeat(rng.below(300) as usize))),
        };
        // Ids repeat now and then, so some entries are duplicates; the
        // compaction has none, so it always applies.
        let id = if rng.below(4) == 0 { 0 } else { 1 + rng.below(entries) };
        let (id, req) = if n == entries / 2 {
            (0, Some(WriteRequest::Compact(CompactionRequest { revision: store.current_revision() - 5, physical: false })))
        } else {
            (id, req)
        };
        let outcome = entry(store, index, id, req.as_ref());
        log.push(Logged { index, id, req, outcome });
    }
    log
}

fn snapshot_bytes(store: &Store) -> Vec<u8> {
    let view = store.snapshot_view().unwrap();
    assert_eq!(view.applied_index(), store.applied_index());
    assert_eq!(view.revision(), store.current_revision());
    assert_eq!(view.raft_state().map(<[u8]>::to_vec), store.raft_state());
    let mut out = Vec::new();
    let summary = view.write_to(&mut out).unwrap();
    assert_eq!(summary.bytes, out.len() as u64);
    assert_eq!(verify_snapshot(&mut &out[..]).unwrap(), summary);
    out
}

/// Everything a reader or the raft layer can observe, at every readable revision.
#[derive(Debug, PartialEq)]
struct Observed {
    applied_index: u64,
    revision: i64,
    compacted: i64,
    raft_state: Option<Vec<u8>>,
    hashes: Vec<(u32, i64, i64)>,
    ranges: Vec<Result<RangeResponse, StorageError>>,
}

fn observe(store: &Store) -> Observed {
    let (rev, compacted) = (store.current_revision(), store.compact_revision());
    let revs: Vec<i64> = (compacted.max(1) - 1..=rev + 1).collect();
    Observed {
        applied_index: store.applied_index(),
        revision: rev,
        compacted,
        raft_state: store.raft_state(),
        hashes: [0, rev, (compacted + rev) / 2, compacted].iter().map(|r| store.hash_kv(*r).unwrap()).collect(),
        ranges: revs.into_iter().map(|r| store.range(&all_at(r))).collect(),
    }
}

fn roundtrip(from: Kind, to: Kind) {
    let mut rng = Rng::seeded(&format!("roundtrip {from:?} -> {to:?}"));
    let src = Node::new(from);
    let next = workload(src.s(), &mut rng, 1, 400);
    assert!(src.s().compact_revision() > 1, "the workload compacts");
    let before = observe(src.s());
    let bytes = snapshot_bytes(src.s());

    // Into a fresh store, and over a populated one.
    let mut fresh = Node::new(to);
    let mut busy = Node::new(to);
    workload(busy.s(), &mut Rng(rng.next()), 1, 150);
    for dst in [&mut fresh, &mut busy] {
        let summary = dst.s().restore(&mut &bytes[..]).unwrap();
        assert_eq!(summary.bytes, bytes.len() as u64);
        assert!(!dst.s().restore_interrupted());
        assert_eq!(observe(dst.s()), before);
        dst.reopen();
        assert_eq!(observe(dst.s()), before);
        // The view may have caught physical compaction half done (the
        // restored store resumes it); once both are done, they are identical.
        src.s().wait_compacted(src.s().compact_revision());
        dst.s().wait_compacted(dst.s().compact_revision());
        assert_eq!(snapshot_bytes(dst.s()), snapshot_bytes(src.s()), "byte-identical stores");
    }

    // All three go on identically, duplicates included.
    let mut seed = Rng(rng.next());
    let tail: Vec<(u64, Option<WriteRequest>)> = (0..60)
        .map(|n| (1 + seed.below(450), Some(put(&format!("k{:02}", seed.below(24)), &format!("after{n}")))))
        .collect();
    let mut outcomes = Vec::new();
    for node in [&src, &fresh, &busy] {
        let got: Vec<EntryOutcome> = tail
            .iter()
            .enumerate()
            .map(|(i, (id, req))| entry(node.s(), next + i as u64, *id, req.as_ref()))
            .collect();
        assert!(got.iter().any(|o| matches!(o, EntryOutcome::Duplicate { .. })));
        outcomes.push(got);
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert_eq!(outcomes[0], outcomes[2]);
    src.s().wait_compacted(src.s().compact_revision());
    fresh.s().wait_compacted(fresh.s().compact_revision());
    assert_eq!(observe(fresh.s()), observe(src.s()));
    assert_eq!(observe(busy.s()), observe(src.s()));
}

#[test]
fn roundtrip_mem() {
    roundtrip(Kind::Mem, Kind::Mem);
}

#[test]
fn roundtrip_rocksdb() {
    roundtrip(Kind::Rocks, Kind::Rocks);
}

#[test]
fn roundtrip_across_engines() {
    roundtrip(Kind::Mem, Kind::Rocks);
    roundtrip(Kind::Rocks, Kind::Mem);
}

#[test]
fn empty_store_roundtrip() {
    let src = Node::new(Kind::Mem);
    let bytes = snapshot_bytes(src.s());
    let dst = Node::new(Kind::Rocks);
    entry(dst.s(), 1, 5, Some(&put("a", "1")));
    dst.s().restore(&mut &bytes[..]).unwrap();
    assert_eq!(observe(dst.s()), observe(src.s()));
    assert_eq!(dst.s().raft_state(), None);
    assert_eq!(dst.count(Keyspace::Meta, &[], None), 0);
}

/// Writes and a compaction after the view (some while it streams) change
/// nothing in what it writes; compaction resumes once the view is dropped.
fn point_in_time(kind: Kind) {
    let mut rng = Rng::seeded(&format!("point_in_time {kind:?}"));
    let node = Node::new(kind);
    let store = node.store.clone().unwrap();
    let index = workload(&store, &mut rng, 1, 300);
    let expected = observe(&store);
    let view = store.snapshot_view().unwrap();
    let mut first = Vec::new();
    view.write_to(&mut first).unwrap();

    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut index = index;
            for i in 0..200u64 {
                let req = if i == 100 {
                    WriteRequest::Compact(CompactionRequest { revision: store.current_revision(), physical: true })
                } else {
                    put(&format!("k{:02}", i % 30), &format!("late{i}"))
                };
                entry(&store, index, 0, Some(&req));
                index += 1;
            }
            index
        })
    };
    let mut during = Vec::new();
    view.write_to(&mut during).unwrap();
    let index = writer.join().unwrap();
    let kv_with_view = node.count(Keyspace::Kv, &[], None);
    let mut after = Vec::new();
    view.write_to(&mut after).unwrap();
    assert_eq!(first, during);
    assert_eq!(first, after);
    assert_eq!(node.count(Keyspace::Kv, &[], None), kv_with_view, "compaction is paused by the view");

    drop(view);
    store.wait_compacted(store.compact_revision());
    assert!(node.count(Keyspace::Kv, &[], None) < kv_with_view, "compaction resumed");

    let dst = Node::new(kind);
    dst.s().restore(&mut &first[..]).unwrap();
    assert_eq!(observe(dst.s()), expected);
    assert_eq!(index, 301 + 200);
    assert_ne!(snapshot_bytes(&store), first);
}

#[test]
fn point_in_time_mem() {
    point_in_time(Kind::Mem);
}

#[test]
fn point_in_time_rocksdb() {
    point_in_time(Kind::Rocks);
}

#[test]
fn view_taken_before_a_restore_refuses_to_write() {
    let node = Node::new(Kind::Mem);
    entry(node.s(), 1, 0, Some(&put("a", "1")));
    let bytes = snapshot_bytes(node.s());
    let view = node.s().snapshot_view().unwrap();
    node.s().restore(&mut &bytes[..]).unwrap();
    assert_eq!(view.write_to(&mut Vec::new()), Err(StorageError::Compacted));
    let mut again = Vec::new();
    node.s().snapshot_view().unwrap().write_to(&mut again).unwrap();
    assert_eq!(again, bytes);
}

/// Waits for physical compaction to reach `rev`, failing instead of hanging.
fn wait_compacted(store: &Arc<Store>, rev: i64) {
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.wait_compacted(rev);
            let _ = tx.send(());
        })
    };
    rx.recv_timeout(Duration::from_secs(30)).expect("physical compaction finishes");
    waiter.join().unwrap();
}

/// A view taken while a compaction is scheduled but not done carries that
/// state; the restored store finishes the compaction itself.
fn restore_resumes_unfinished_compaction(kind: Kind) {
    let src = Node::new(kind);
    for i in 1..=40u64 {
        entry(src.s(), i, 0, Some(&put(&format!("k{}", i % 4), &i.to_string())));
    }
    let pin = src.s().snapshot_view().unwrap();
    entry(src.s(), 41, 0, Some(&WriteRequest::Compact(CompactionRequest { revision: 35, physical: true })));
    let bytes = snapshot_bytes(src.s());
    drop(pin);
    let expected = observe(src.s());
    let src_store = src.store.clone().unwrap();
    wait_compacted(&src_store, 35);

    let dst = Node::new(kind);
    dst.s().restore(&mut &bytes[..]).unwrap();
    assert_eq!(observe(dst.s()), expected);
    wait_compacted(dst.store.as_ref().unwrap(), 35);
    assert_eq!(dst.count(Keyspace::Kv, &[], None), src.count(Keyspace::Kv, &[], None));
    assert_eq!(snapshot_bytes(dst.s()), snapshot_bytes(src.s()));
}

#[test]
fn restore_resumes_unfinished_compaction_mem() {
    restore_resumes_unfinished_compaction(Kind::Mem);
}

#[test]
fn restore_resumes_unfinished_compaction_rocksdb() {
    restore_resumes_unfinished_compaction(Kind::Rocks);
}

/// A restore over a store whose compactor is busy stops that job first: its
/// keep-set belongs to the old contents and would delete restored records.
#[test]
fn restore_cancels_a_running_compaction() {
    let mut rng = Rng::seeded("restore_cancels_a_running_compaction");
    let src = Node::new(Kind::Mem);
    workload(src.s(), &mut rng, 1, 300);
    let src_store = src.store.clone().unwrap();
    wait_compacted(&src_store, src.s().compact_revision());
    let bytes = snapshot_bytes(src.s());
    let expected = observe(src.s());

    let slow = StoreConfig { compaction_batch_limit: 1, compaction_sleep: Duration::from_millis(2), sync_writes: false };
    let dst = Node::with_cfg(Kind::Mem, slow);
    for i in 1..=400u64 {
        entry(dst.s(), i, 0, Some(&put(&format!("k{:02}", i % 24), "old")));
    }
    entry(dst.s(), 401, 0, Some(&WriteRequest::Compact(CompactionRequest { revision: 400, physical: true })));
    std::thread::sleep(Duration::from_millis(20));
    dst.s().restore(&mut &bytes[..]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(observe(dst.s()), expected);
    assert_eq!(snapshot_bytes(dst.s()), bytes);
}

fn dedup_records(node: &Node) -> usize {
    node.count(Keyspace::Meta, b"dedup/", Some(b"dedup0"))
}

fn dedup(kind: Kind) {
    let mut node = Node::new(kind);
    let a1 = put("a", "1");
    let s = node.s();
    let EntryOutcome::Applied(first) = entry(s, 1, 7, Some(&a1)) else { panic!("first apply") };
    assert_eq!(first.revision, 2);
    assert_eq!(entry(s, 2, 7, Some(&put("a", "2"))), EntryOutcome::Duplicate { first_index: 1 });
    assert_eq!((s.current_revision(), s.applied_index(), s.raft_state()), (2, 2, Some(state_blob(2))));
    assert_eq!(s.range(&all_at(0)).unwrap().kvs[0].value, b"1");
    // Id 0 is never deduplicated; an entry without a request only advances.
    assert!(matches!(entry(s, 3, 0, Some(&put("b", "1"))), EntryOutcome::Applied(_)));
    assert!(matches!(entry(s, 4, 0, Some(&put("b", "2"))), EntryOutcome::Applied(_)));
    assert_eq!(entry(s, 5, 7, None), EntryOutcome::NoRequest);
    assert_eq!((s.current_revision(), s.applied_index()), (4, 5));
    // A request error counts as applied.
    let future = WriteRequest::Compact(CompactionRequest { revision: 99, physical: false });
    let EntryOutcome::Applied(failed) = entry(s, 6, 9, Some(&future)) else { panic!("applied with an error") };
    assert_eq!(failed.result, Err(StorageError::FutureRev));
    assert_eq!(entry(s, 7, 9, Some(&put("c", "1"))), EntryOutcome::Duplicate { first_index: 6 });
    assert_eq!(dedup_records(&node), 2);

    node.reopen();
    let s = node.s();
    assert_eq!(s.raft_state(), Some(state_blob(7)));
    assert_eq!(entry(s, 8, 7, Some(&a1)), EntryOutcome::Duplicate { first_index: 1 });
    // Index 1 is still inside the window at 1 + DEDUP_WINDOW - 1 ...
    assert_eq!(entry(s, DEDUP_WINDOW, 7, Some(&a1)), EntryOutcome::Duplicate { first_index: 1 });
    let bytes = snapshot_bytes(s);

    // ... and leaves it at 1 + DEDUP_WINDOW, on the original, after a
    // restore and after a reopen alike.
    let restored = Node::new(kind);
    restored.s().restore(&mut &bytes[..]).unwrap();
    for n in [&node, &restored] {
        let EntryOutcome::Applied(again) = entry(n.s(), DEDUP_WINDOW + 1, 7, Some(&a1)) else { panic!("window passed") };
        assert_eq!(again.revision, 5);
        assert_eq!(dedup_records(n), 2, "index 1 evicted, {} recorded", DEDUP_WINDOW + 1);
        assert_eq!(entry(n.s(), DEDUP_WINDOW + 2, 7, None), EntryOutcome::NoRequest);
        assert_eq!(
            entry(n.s(), DEDUP_WINDOW + 3, 9, Some(&a1)),
            EntryOutcome::Duplicate { first_index: 6 }
        );
    }
    let mut restored = restored;
    restored.reopen();
    node.reopen();
    for n in [&node, &restored] {
        // A jump past the whole window evicts everything at once.
        let index = 3 * DEDUP_WINDOW;
        assert!(matches!(entry(n.s(), index, 9, Some(&a1)), EntryOutcome::Applied(_)));
        assert_eq!(dedup_records(n), 1);
        assert_eq!(entry(n.s(), index + 1, 9, Some(&a1)), EntryOutcome::Duplicate { first_index: index });
    }
    assert_eq!(observe(node.s()), observe(restored.s()));
}

#[test]
fn dedup_mem() {
    dedup(Kind::Mem);
}

#[test]
fn dedup_rocksdb() {
    dedup(Kind::Rocks);
}

/// Entries applied in batches of random sizes answer exactly as they do one
/// at a time and leave the same store, before and after a reopen: a later
/// entry of a batch sees what an earlier one wrote (txn compares, prev_kv,
/// ids recorded earlier in the batch, a compaction).
fn batched_apply(kind: Kind) {
    let mut rng = Rng::seeded(&format!("batched_apply {kind:?}"));
    let one_by_one = Node::new(kind);
    let log = workload_log(one_by_one.s(), &mut rng, 1, 500);
    assert!(log.iter().any(|l| matches!(l.outcome, EntryOutcome::Duplicate { .. })));

    let mut batched = Node::new(kind);
    let mut sizes = Vec::new();
    let mut rest = &log[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(60) as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        let entries: Vec<LogEntry> =
            chunk.iter().map(|l| LogEntry { index: l.index, request_id: l.id, request: l.req.as_ref() }).collect();
        let last = chunk.last().unwrap().index;
        let got = batched.s().apply_entries(&entries, &state_blob(last)).unwrap();
        let want: Vec<EntryOutcome> = chunk.iter().map(|l| l.outcome.clone()).collect();
        assert_eq!(got, want, "entries {}..={last}", chunk[0].index);
        assert_eq!(batched.s().applied_index(), last);
        sizes.push(n);
        rest = tail;
    }
    assert!(sizes.iter().any(|n| *n > 20), "some batches are large: {sizes:?}");
    for node in [&one_by_one, &batched] {
        node.s().wait_compacted(node.s().compact_revision());
    }
    let expected = observe(one_by_one.s());
    assert_eq!(observe(batched.s()), expected);
    batched.reopen();
    assert_eq!(observe(batched.s()), expected);
    assert_eq!(dedup_records(&batched), dedup_records(&one_by_one));
}

#[test]
fn batched_apply_mem() {
    batched_apply(Kind::Mem);
}

#[test]
fn batched_apply_rocksdb() {
    batched_apply(Kind::Rocks);
}

/// Gives `limit` bytes, then fails like a dropped connection.
struct Failing<'a> {
    data: &'a [u8],
    limit: usize,
}

impl Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.limit == 0 {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer went away"));
        }
        let n = buf.len().min(self.limit).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.limit -= n;
        Ok(n)
    }
}

fn interrupted_restore(kind: Kind) {
    let mut rng = Rng::seeded(&format!("interrupted_restore {kind:?}"));
    let src = Node::new(Kind::Mem);
    workload(src.s(), &mut rng, 1, 300);
    let bytes = snapshot_bytes(src.s());
    let expected = observe(src.s());

    let mut dst = Node::new(kind);
    workload(dst.s(), &mut rng, 1, 50);
    let truncated = &bytes[..bytes.len() * 2 / 3];
    assert!(matches!(dst.s().restore(&mut &truncated[..]), Err(StorageError::Corruption(_))));
    let check_empty = |n: &Node| {
        let s = n.s();
        assert!(s.restore_interrupted());
        assert_eq!((s.applied_index(), s.current_revision(), s.compact_revision(), s.raft_state()), (0, 1, -1, None));
        assert!(s.range(&all_at(0)).unwrap().kvs.is_empty());
        assert_eq!(n.count(Keyspace::Kv, &[], None), 0);
        assert_eq!(n.count(Keyspace::Meta, &[], None), 1, "only the marker");
        assert!(s.apply(1, &put("a", "1")).is_err());
        assert!(s.apply_entries(&[LogEntry { index: 1, request_id: 0, request: None }], b"").is_err());
        assert!(s.snapshot_view().is_err());
    };
    check_empty(&dst);
    dst.reopen();
    check_empty(&dst);

    // A flipped byte, a failing reader, trailing bytes: still interrupted.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    assert!(matches!(dst.s().restore(&mut &flipped[..]), Err(StorageError::Corruption(_))));
    let mut failing = Failing { data: &bytes, limit: bytes.len() / 2 };
    assert!(matches!(dst.s().restore(&mut failing), Err(StorageError::Engine(_))));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(dst.s().restore(&mut &trailing[..]), Err(StorageError::Corruption(_))));
    check_empty(&dst);

    dst.s().restore(&mut &bytes[..]).unwrap();
    assert!(!dst.s().restore_interrupted());
    assert_eq!(observe(dst.s()), expected);
    dst.reopen();
    assert!(!dst.s().restore_interrupted());
    assert_eq!(observe(dst.s()), expected);
    assert!(matches!(entry(dst.s(), expected.applied_index + 1, 0, Some(&put("z", "1"))), EntryOutcome::Applied(_)));
}

#[test]
fn interrupted_restore_mem() {
    interrupted_restore(Kind::Mem);
}

#[test]
fn interrupted_restore_rocksdb() {
    interrupted_restore(Kind::Rocks);
}

/// A crash in the middle of a restore leaves the marker and part of the
/// records; open must not trust any of it.
#[test]
fn crash_during_restore_opens_empty() {
    let mut rng = Rng::seeded("crash_during_restore_opens_empty");
    let mut node = Node::new(Kind::Rocks);
    workload(node.s(), &mut rng, 1, 100);
    node.s().wait_compacted(node.s().compact_revision());
    let bytes = snapshot_bytes(node.s());
    let marker = record::seal(b"restoring", b"");
    let mut batch = cairn_storage::engine::WriteBatch::default();
    batch.put(Keyspace::Meta, b"restoring".to_vec(), marker);
    node.engine().write(batch, true).unwrap();
    assert!(node.count(Keyspace::Kv, &[], None) > 0);
    node.reopen();
    assert!(node.s().restore_interrupted());
    assert_eq!(node.count(Keyspace::Kv, &[], None), 0);
    assert_eq!(node.s().current_revision(), 1);
    node.s().restore(&mut &bytes[..]).unwrap();
    assert_eq!(snapshot_bytes(node.s()), bytes);
}

#[test]
fn verify_snapshot_rejects_any_damage() {
    let node = Node::new(Kind::Mem);
    entry(node.s(), 1, 3, Some(&put("a", "1")));
    entry(node.s(), 2, 4, Some(&put("b", "2")));
    entry(node.s(), 3, 0, Some(&WriteRequest::DeleteRange(DeleteRangeRequest { key: b"a".to_vec(), ..Default::default() })));
    let bytes = snapshot_bytes(node.s());
    let summary = verify_snapshot(&mut &bytes[..]).unwrap();
    // applied, raft_state, 2 dedup records; 3 kv records.
    assert_eq!(summary.records, 7);
    for i in 0..bytes.len() {
        for bit in [0x01, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= bit;
            assert!(
                matches!(verify_snapshot(&mut &bad[..]), Err(StorageError::Corruption(_))),
                "flipped bit {bit:#x} of byte {i} accepted"
            );
        }
    }
    for len in 0..bytes.len() {
        assert!(matches!(verify_snapshot(&mut &bytes[..len]), Err(StorageError::Corruption(_))), "truncated to {len}");
    }
}

/// A restore batches at most 4 MiB of records: a store several times that
/// size restores, and so do records larger than a batch.
#[test]
fn large_restore_rocksdb() {
    let src = Node::new(Kind::Rocks);
    let big = "b".repeat(5 << 20);
    let value = "v".repeat(60 << 10);
    for i in 1..=300u64 {
        let v = if i % 100 == 0 { &big } else { &value };
        entry(src.s(), i, i, Some(&put(&format!("key{i}"), v)));
    }
    let bytes = snapshot_bytes(src.s());
    assert!(bytes.len() > 30 << 20);
    let dst = Node::new(Kind::Rocks);
    let summary = dst.s().restore(&mut &bytes[..]).unwrap();
    assert_eq!(summary.records, 300 + 300 + 2);
    assert_eq!(dst.s().hash_kv(0).unwrap(), src.s().hash_kv(0).unwrap());
    assert_eq!(dst.s().range(&all_at(0)).unwrap(), src.s().range(&all_at(0)).unwrap());
}
