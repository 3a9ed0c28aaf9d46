//! The MVCC store: durable revisions in the engine, the key index in memory,
//! one writer at a time, many concurrent readers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cairn_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::{Event, KeyValue};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::engine::{Engine, Keyspace, Scan, WriteBatch};
use crate::error::StorageError;
use crate::index::TreeIndex;
use crate::record::{seal, unseal, KvRecord, RecordKind};
use crate::revision::Revision;
use crate::txn::{collect_range, fetch_records, finish_range, header, plan_range, WriteTxn};

const META_APPLIED: &[u8] = b"applied";
const META_COMPACT_SCHEDULED: &[u8] = b"compact_scheduled";
const META_COMPACT_FINISHED: &[u8] = b"compact_finished";

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Revisions deleted per batch by physical compaction (etcd's
    /// `--compaction-batch-limit`, default 1000).
    pub compaction_batch_limit: usize,
    /// Pause between compaction batches so compaction never starves writes
    /// (etcd's `--compaction-sleep-interval`, default 10 ms).
    pub compaction_sleep: Duration,
    /// fsync every applied batch. Only tests of the in-memory engine turn it off.
    pub sync_writes: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { compaction_batch_limit: 1000, compaction_sleep: Duration::from_millis(10), sync_writes: true }
    }
}

/// A request that changes the store (or may: a txn's branch decides).
#[derive(Clone, Debug, PartialEq)]
pub enum WriteRequest {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

#[derive(Clone, Debug, PartialEq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
}

/// The outcome of applying one request. A request error (e.g. compacted
/// revision, key not found) is in `result`; the applied index still advanced
/// and nothing else changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub result: Result<WriteResponse, StorageError>,
    /// Store revision after the request.
    pub revision: i64,
    /// One event per key changed, in sub-revision order (for watchers).
    pub events: Vec<Event>,
}

struct State {
    index: TreeIndex,
    /// Latest published (durable) revision. An empty store is at revision 1.
    rev: i64,
    /// Revision of the last compaction; -1 before any.
    compacted: i64,
    applied_index: u64,
}

pub struct Store {
    engine: Arc<dyn Engine>,
    state: RwLock<State>,
    /// Serializes writers; readers never take it.
    apply_lock: Mutex<()>,
    /// Set after a failed engine write: the in-memory index may then be ahead
    /// of the engine, so nothing may be applied or read any more.
    failed: AtomicBool,
    sync_writes: bool,
    compactor: Arc<Compactor>,
    compactor_thread: Mutex<Option<JoinHandle<()>>>,
}

fn encode_i64s(vals: &[i64]) -> Vec<u8> {
    vals.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn decode_i64s(key: &[u8], value: &[u8], n: usize) -> Result<Vec<i64>, StorageError> {
    let payload = unseal(key, value)?;
    if payload.len() != 8 * n {
        return Err(StorageError::Corruption(format!(
            "meta record {:?} has {} bytes, want {}",
            String::from_utf8_lossy(key),
            payload.len(),
            8 * n
        )));
    }
    Ok(payload.chunks(8).map(|c| i64::from_be_bytes(c.try_into().expect("8 bytes"))).collect())
}

fn read_meta(engine: &dyn Engine, key: &[u8], n: usize) -> Result<Option<Vec<i64>>, StorageError> {
    engine.get(Keyspace::Meta, key)?.map(|v| decode_i64s(key, &v, n)).transpose()
}

fn meta_put(batch: &mut WriteBatch, key: &[u8], vals: &[i64]) {
    batch.put(Keyspace::Meta, key.to_vec(), seal(key, &encode_i64s(vals)));
}

impl Store {
    /// Opens the store on `engine`, rebuilding the key index from the stored
    /// revisions and resuming an interrupted compaction.
    pub fn open(engine: Arc<dyn Engine>, cfg: StoreConfig) -> Result<Arc<Store>, StorageError> {
        let (applied_index, mut rev) = match read_meta(&*engine, META_APPLIED, 2)? {
            Some(v) => (v[0] as u64, v[1]),
            None => (0, 1),
        };
        // -1 until the first compaction, as in etcd (so `Compact(0)` is accepted once).
        let compacted = read_meta(&*engine, META_COMPACT_SCHEDULED, 1)?.map_or(-1, |v| v[0]);
        let finished = read_meta(&*engine, META_COMPACT_FINISHED, 1)?.map_or(-1, |v| v[0]);

        let mut index = TreeIndex::new();
        let mut last_main = 0;
        engine.scan(Keyspace::Kv, &[], None, &mut |k, v| {
            let r = Revision::from_key(k)
                .ok_or_else(|| StorageError::Corruption(format!("malformed revision key {k:02x?}")))?;
            let rec = KvRecord::decode(k, v)?;
            match rec.kind {
                RecordKind::Put => index.restore_put(&rec.kv.key, r, rec.kv.create_revision, rec.kv.version),
                RecordKind::Tombstone => {
                    index.tombstone(&rec.kv.key, r);
                }
            }
            last_main = r.main;
            Ok(Scan::Continue)
        })?;
        if last_main > rev {
            return Err(StorageError::Corruption(format!(
                "stored revision {last_main} is newer than the applied revision {rev}"
            )));
        }
        rev = rev.max(compacted);
        let keep = (compacted >= 0).then(|| index.compact(compacted));

        let compactor = Arc::new(Compactor::new(finished, cfg.compaction_batch_limit, cfg.compaction_sleep));
        let thread = {
            let compactor = compactor.clone();
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("cairn-compactor".into())
                .spawn(move || compactor.run(&*engine))
                .map_err(|e| StorageError::Engine(format!("spawn compactor: {e}")))?
        };
        if let Some(keep) = keep {
            if finished < compacted {
                tracing::info!(compacted, finished, "resuming interrupted compaction");
                compactor.schedule(compacted, keep);
            }
        }
        tracing::info!(revision = rev, compacted, applied_index, keys = index.len(), "store opened");
        Ok(Arc::new(Store {
            engine,
            state: RwLock::new(State { index, rev, compacted, applied_index }),
            apply_lock: Mutex::new(()),
            failed: AtomicBool::new(false),
            sync_writes: cfg.sync_writes,
            compactor,
            compactor_thread: Mutex::new(Some(thread)),
        }))
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if self.failed.load(AtomicOrdering::Acquire) {
            return Err(StorageError::Engine("store is unusable after an earlier failure".into()));
        }
        Ok(())
    }

    pub fn current_revision(&self) -> i64 {
        self.state.read().rev
    }

    pub fn compact_revision(&self) -> i64 {
        self.state.read().compacted
    }

    pub fn applied_index(&self) -> u64 {
        self.state.read().applied_index
    }

    pub fn size_bytes(&self) -> u64 {
        self.engine.size_bytes()
    }

    pub fn live_size_bytes(&self) -> u64 {
        self.engine.live_size_bytes()
    }

    /// A read at the latest revision, or the one the request names.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StorageError> {
        self.check_usable()?;
        let (plan, revs, count, current) = {
            let st = self.state.read();
            let plan = plan_range(req, st.rev, st.compacted)?;
            let (revs, count) = collect_range(&st.index, req, &plan);
            (plan, revs, count, st.rev)
        };
        let fetched = fetch_records(&*self.engine, &revs)?;
        let mut kvs: Vec<KeyValue> = Vec::with_capacity(fetched.len());
        for (rev, kv) in revs.iter().zip(fetched) {
            match kv {
                Some(kv) => kvs.push(kv),
                // Compaction ran between the index lookup and the fetch.
                None if plan.at < self.compact_revision() => return Err(StorageError::Compacted),
                None => {
                    return Err(StorageError::Corruption(format!(
                        "index names revision {rev:?} but no record is stored"
                    )))
                }
            }
        }
        Ok(finish_range(req, kvs, count, current))
    }

    /// etcd's HashKV: a CRC32 over the MVCC records visible at revision `rev`
    /// (0 = current) back to the compaction revision, counting a record at or
    /// below the compaction revision only if it is still needed there. Members
    /// that applied the same requests agree on it whatever their physical
    /// compaction progress. Returns `(hash, compact_revision, hash_revision)`.
    /// The hash is Cairn's own (CRC32 over Cairn's record encoding); it is
    /// comparable between Cairn members, not with etcd's numbers.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64), StorageError> {
        self.check_usable()?;
        let (at, compacted) = {
            let st = self.state.read();
            let at = if rev <= 0 { st.rev } else { rev };
            if at > st.rev {
                return Err(StorageError::FutureRev);
            }
            if at < st.compacted {
                return Err(StorageError::Compacted);
            }
            (at, st.compacted)
        };
        let mut hasher = crc32fast::Hasher::new();
        let end = Revision::new(at + 1, 0).to_key();
        self.engine.scan(Keyspace::Kv, &[], Some(&end), &mut |k, v| {
            let rec = KvRecord::decode(k, v)?;
            let r = Revision::from_key(k)
                .ok_or_else(|| StorageError::Corruption(format!("malformed revision key {k:02x?}")))?;
            if r.main <= compacted {
                let st = self.state.read();
                if st.compacted != compacted {
                    return Err(StorageError::Compacted);
                }
                if rec.kind == RecordKind::Tombstone || st.index.get(&rec.kv.key, compacted) != Some(r) {
                    return Ok(Scan::Continue);
                }
            }
            hasher.update(k);
            hasher.update(v);
            Ok(Scan::Continue)
        })?;
        if self.compact_revision() != compacted {
            return Err(StorageError::Compacted);
        }
        Ok((hasher.finalize(), compacted, at))
    }

    /// Rewrites the engine's files to reclaim space (etcd's Defragment).
    pub fn defragment(&self) -> Result<(), StorageError> {
        self.check_usable()?;
        self.engine.compact_files()
    }

    /// Applies one request at log position `index` (which must be above the
    /// applied index). Data, the new revision and `index` reach the engine in
    /// one atomic batch, so after a crash a request is either fully applied or
    /// not at all. An `Err` is fatal for the member.
    pub fn apply(&self, index: u64, req: &WriteRequest) -> Result<Applied, StorageError> {
        self.check_usable()?;
        let _writer = self.apply_lock.lock();
        let mut batch = WriteBatch::default();
        let mut scheduled_compaction = None;
        let (result, new_rev, events) = {
            let mut st = self.state.write();
            assert!(
                index > st.applied_index,
                "apply index {index} not above applied index {}",
                st.applied_index
            );
            let begin = st.rev;
            let compacted = st.compacted;
            if let WriteRequest::Compact(c) = req {
                let result = if c.revision <= compacted {
                    Err(StorageError::Compacted)
                } else if c.revision > begin {
                    Err(StorageError::FutureRev)
                } else {
                    let keep = st.index.compact(c.revision);
                    st.compacted = c.revision;
                    meta_put(&mut batch, META_COMPACT_SCHEDULED, &[c.revision]);
                    scheduled_compaction = Some((c.revision, keep));
                    Ok(WriteResponse::Compact(CompactionResponse { header: Some(header(begin)) }))
                };
                (result, begin, Vec::new())
            } else {
                let mut txn = WriteTxn::new(&*self.engine, &mut st.index, begin, compacted);
                let result = match req {
                    WriteRequest::Put(r) => txn.put(r).map(WriteResponse::Put),
                    WriteRequest::DeleteRange(r) => txn.delete_range(r).map(WriteResponse::DeleteRange),
                    WriteRequest::Txn(r) => txn.txn(r).map(WriteResponse::Txn),
                    WriteRequest::Compact(_) => unreachable!("handled above"),
                };
                if matches!(&result, Err(e) if e.is_fatal()) {
                    self.failed.store(true, AtomicOrdering::Release);
                    return Err(result.unwrap_err());
                }
                let new_rev = txn.rev();
                let (changes, events) = txn.into_changes();
                if let (Err(e), false) = (&result, changes.is_empty()) {
                    // Every request error is found before the first write; one
                    // after it would leave the index half-changed.
                    self.failed.store(true, AtomicOrdering::Release);
                    return Err(StorageError::Internal(format!("request failed after writing: {e}")));
                }
                for (rev, rec) in changes {
                    batch.put(Keyspace::Kv, rev.to_key().to_vec(), rec.encode(rev));
                }
                (result, new_rev, events)
            }
        };
        meta_put(&mut batch, META_APPLIED, &[index as i64, new_rev]);
        if let Err(e) = self.engine.write(batch, self.sync_writes) {
            self.failed.store(true, AtomicOrdering::Release);
            return Err(e);
        }
        {
            let mut st = self.state.write();
            st.rev = new_rev;
            st.applied_index = index;
        }
        if let Some((rev, keep)) = scheduled_compaction {
            self.compactor.schedule(rev, keep);
        }
        Ok(Applied { result, revision: new_rev, events })
    }

    /// Blocks until physical compaction up to `rev` has finished (etcd's
    /// `physical` flag), or the store is closing.
    pub fn wait_compacted(&self, rev: i64) {
        self.compactor.wait(rev);
    }

    /// Stops background work and flushes the engine. The store must not be used afterwards.
    pub fn close(&self) -> Result<(), StorageError> {
        self.compactor.stop();
        if let Some(t) = self.compactor_thread.lock().take() {
            let _ = t.join();
        }
        self.engine.flush()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.compactor.stop();
        if let Some(t) = self.compactor_thread.lock().take() {
            let _ = t.join();
        }
    }
}

struct CompactJob {
    rev: i64,
    keep: HashSet<Revision>,
}

/// Deletes superseded revisions in the background, in bounded batches with a
/// pause between them. Only the newest pending job matters: everything a
/// compaction at `r1` may delete, one at `r2 > r1` may delete too.
struct Compactor {
    pending: Mutex<Option<CompactJob>>,
    wake: Condvar,
    finished: Mutex<i64>,
    finished_cv: Condvar,
    stopping: AtomicBool,
    batch_limit: usize,
    sleep: Duration,
}

impl Compactor {
    fn new(finished: i64, batch_limit: usize, sleep: Duration) -> Self {
        Self {
            pending: Mutex::new(None),
            wake: Condvar::new(),
            finished: Mutex::new(finished),
            finished_cv: Condvar::new(),
            stopping: AtomicBool::new(false),
            batch_limit: batch_limit.max(1),
            sleep,
        }
    }

    fn schedule(&self, rev: i64, keep: HashSet<Revision>) {
        *self.pending.lock() = Some(CompactJob { rev, keep });
        self.wake.notify_one();
    }

    fn stop(&self) {
        self.stopping.store(true, AtomicOrdering::Release);
        // Take the locks so a waiter cannot miss the notification.
        drop(self.pending.lock());
        self.wake.notify_all();
        drop(self.finished.lock());
        self.finished_cv.notify_all();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(AtomicOrdering::Acquire)
    }

    fn wait(&self, rev: i64) {
        let mut finished = self.finished.lock();
        while *finished < rev && !self.stopping() {
            self.finished_cv.wait_for(&mut finished, Duration::from_millis(100));
        }
    }

    fn run(&self, engine: &dyn Engine) {
        loop {
            let job = {
                let mut pending = self.pending.lock();
                loop {
                    if self.stopping() {
                        return;
                    }
                    if let Some(job) = pending.take() {
                        break job;
                    }
                    self.wake.wait(&mut pending);
                }
            };
            match self.compact(engine, &job) {
                Ok(true) => {
                    *self.finished.lock() = job.rev;
                    self.finished_cv.notify_all();
                    tracing::info!(revision = job.rev, "compaction finished");
                }
                Ok(false) => return,
                Err(e) => {
                    // The job stays unfinished on disk and is resumed at the next open.
                    tracing::error!(revision = job.rev, error = %e, "compaction failed");
                    return;
                }
            }
        }
    }

    /// Returns false if interrupted by `stop`.
    fn compact(&self, engine: &dyn Engine, job: &CompactJob) -> Result<bool, StorageError> {
        let end = Revision::new(job.rev + 1, 0).to_key();
        let mut from: Vec<u8> = Vec::new();
        let mut deleted = 0usize;
        loop {
            if self.stopping() {
                return Ok(false);
            }
            let mut batch = WriteBatch::default();
            let mut scanned = 0usize;
            let mut last: Option<Vec<u8>> = None;
            engine.scan(Keyspace::Kv, &from, Some(&end), &mut |k, _| {
                scanned += 1;
                let rev = Revision::from_key(k)
                    .ok_or_else(|| StorageError::Corruption(format!("malformed revision key {k:02x?}")))?;
                if !job.keep.contains(&rev) {
                    batch.delete(Keyspace::Kv, k.to_vec());
                }
                last = Some(k.to_vec());
                Ok(if scanned >= self.batch_limit { Scan::Stop } else { Scan::Continue })
            })?;
            deleted += batch.len();
            if !batch.is_empty() {
                engine.write(batch, false)?;
            }
            match last {
                Some(mut k) if scanned >= self.batch_limit => {
                    k.push(0);
                    from = k;
                    std::thread::sleep(self.sleep);
                }
                _ => break,
            }
        }
        let mut batch = WriteBatch::default();
        meta_put(&mut batch, META_COMPACT_FINISHED, &[job.rev]);
        engine.write(batch, true)?;
        tracing::debug!(revision = job.rev, deleted, "compaction deleted revisions");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemEngine;
    use cairn_api::etcdserverpb::{request_op, RequestOp};
    use cairn_api::mvccpb::event::EventType;

    fn cfg() -> StoreConfig {
        StoreConfig { compaction_batch_limit: 2, compaction_sleep: Duration::ZERO, sync_writes: false }
    }

    fn put(k: &str, v: &str) -> WriteRequest {
        WriteRequest::Put(PutRequest { key: k.into(), value: v.into(), ..Default::default() })
    }

    fn get(store: &Store, k: &str, rev: i64) -> Result<RangeResponse, StorageError> {
        store.range(&RangeRequest { key: k.into(), revision: rev, ..Default::default() })
    }

    #[test]
    fn events_follow_sub_revisions() {
        let store = Store::open(Arc::new(MemEngine::new()), cfg()).unwrap();
        let a = store.apply(1, &put("a", "1")).unwrap();
        assert_eq!(a.revision, 2);
        assert_eq!(a.events.len(), 1);
        store.apply(2, &put("b", "1")).unwrap();
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key: b"c".to_vec(), ..Default::default() })) },
                RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                        key: b"a".to_vec(),
                        range_end: b"c".to_vec(),
                        ..Default::default()
                    })),
                },
            ],
            failure: vec![],
        };
        let t = store.apply(3, &WriteRequest::Txn(txn)).unwrap();
        assert_eq!(t.revision, 4);
        let summary: Vec<(i32, Vec<u8>, i64)> = t
            .events
            .iter()
            .map(|e| (e.r#type, e.kv.as_ref().unwrap().key.clone(), e.kv.as_ref().unwrap().mod_revision))
            .collect();
        assert_eq!(
            summary,
            vec![
                (EventType::Put as i32, b"c".to_vec(), 4),
                (EventType::Delete as i32, b"a".to_vec(), 4),
                (EventType::Delete as i32, b"b".to_vec(), 4),
            ]
        );
        assert_eq!(store.applied_index(), 3);
    }

    #[test]
    fn request_errors_advance_the_applied_index_only() {
        let store = Store::open(Arc::new(MemEngine::new()), cfg()).unwrap();
        store.apply(1, &put("a", "1")).unwrap();
        let bad = WriteRequest::Put(PutRequest { key: b"zz".to_vec(), ignore_value: true, ..Default::default() });
        let r = store.apply(2, &bad).unwrap();
        assert_eq!(r.result, Err(StorageError::KeyNotFound));
        assert!(r.events.is_empty());
        assert_eq!((store.applied_index(), store.current_revision()), (2, 2));
    }

    #[test]
    fn reopen_restores_revision_history_and_compaction() {
        let engine = Arc::new(MemEngine::new());
        let store = Store::open(engine.clone(), cfg()).unwrap();
        for i in 1..=10u64 {
            store.apply(i, &put(if i % 2 == 0 { "even" } else { "odd" }, &i.to_string())).unwrap();
        }
        let c = store.apply(11, &WriteRequest::Compact(CompactionRequest { revision: 6, physical: false })).unwrap();
        assert!(c.result.is_ok());
        store.close().unwrap();
        drop(store);

        let store = Store::open(engine, cfg()).unwrap();
        assert_eq!((store.current_revision(), store.compact_revision(), store.applied_index()), (11, 6, 11));
        store.wait_compacted(6);
        assert_eq!(get(&store, "odd", 5), Err(StorageError::Compacted));
        let r = get(&store, "odd", 6).unwrap();
        assert_eq!(r.kvs[0].value, b"5");
        assert_eq!(r.kvs[0].version, 3);
        assert_eq!(get(&store, "even", 0).unwrap().kvs[0].value, b"10");
        let next = store.apply(12, &put("even", "12")).unwrap();
        assert_eq!(next.revision, 12);
        assert_eq!(get(&store, "even", 0).unwrap().kvs[0].version, 6);
    }

    #[test]
    fn hash_kv_ignores_physical_compaction_progress() {
        let run = |wait: bool| {
            let store = Store::open(Arc::new(MemEngine::new()), cfg()).unwrap();
            for i in 1..=8u64 {
                store.apply(i, &put(["a", "b", "c"][i as usize % 3], &i.to_string())).unwrap();
            }
            store.apply(9, &WriteRequest::DeleteRange(DeleteRangeRequest { key: b"c".to_vec(), ..Default::default() })).unwrap();
            let before = store.hash_kv(0).unwrap();
            store.apply(10, &WriteRequest::Compact(CompactionRequest { revision: 7, physical: false })).unwrap();
            if wait {
                store.wait_compacted(7);
            }
            (before, store.hash_kv(0).unwrap(), store.hash_kv(9).unwrap())
        };
        let (before, after_waited, at9_waited) = run(true);
        let (_, after, at9) = run(false);
        assert_eq!(after, after_waited);
        assert_eq!(at9, at9_waited);
        assert_eq!(after.1, 7);
        assert_eq!(after.2, 10);
        assert_ne!(before.0, after.0, "compaction changes what is hashed");

        let store = Store::open(Arc::new(MemEngine::new()), cfg()).unwrap();
        store.apply(1, &put("a", "1")).unwrap();
        assert_eq!(store.hash_kv(5), Err(StorageError::FutureRev));
        let other = Store::open(Arc::new(MemEngine::new()), cfg()).unwrap();
        other.apply(1, &put("a", "2")).unwrap();
        assert_ne!(store.hash_kv(0).unwrap().0, other.hash_kv(0).unwrap().0);
    }

    #[test]
    fn corrupt_record_is_an_error_not_data() {
        let engine = Arc::new(MemEngine::new());
        let store = Store::open(engine.clone(), cfg()).unwrap();
        store.apply(1, &put("k", "v")).unwrap();
        let key = Revision::new(2, 0).to_key();
        let mut bytes = engine.get(Keyspace::Kv, &key).unwrap().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        engine.corrupt(Keyspace::Kv, &key, bytes);
        assert!(matches!(get(&store, "k", 0), Err(StorageError::Corruption(_))));
        store.close().unwrap();
        drop(store);
        assert!(matches!(Store::open(engine, cfg()), Err(StorageError::Corruption(_))));
    }
}
