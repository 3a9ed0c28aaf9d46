//! The MVCC store: durable revisions in the engine, the key index in memory,
//! one writer at a time, many concurrent readers.
//!
//! Besides the MVCC records (`Kv`), the engine holds the store's bookkeeping
//! in `Meta`, each record sealed: `applied` (applied log index and revision),
//! `compact_scheduled` / `compact_finished` (logical and physical compaction
//! progress), `raft_state` (the raft layer's opaque blob), `dedup/<index>`
//! (request ids, see [`crate::dedup`]), `lease/<id>` (leases, see
//! [`crate::lease`]) and, only while a snapshot restore is unfinished,
//! `restoring`. Every change to them is part of the same atomic
//! batch as the data it describes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cairn_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::{event::EventType, Event, KeyValue};
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::dedup::{self, Dedup};
use crate::engine::{Engine, Keyspace, MemEngine, Scan, WriteBatch};
use crate::error::StorageError;
use crate::index::TreeIndex;
use crate::lease::{self, LeaseChange, LeaseInfo, Leases};
use crate::record::{seal, unseal, KvRecord, RecordKind};
use crate::revision::Revision;
use crate::snapshot::{read_snapshot, SnapshotSummary, StoreSnapshot};
use crate::txn::{collect_range, fetch_records, finish_range, header, plan_range, WriteTxn, Written};

const META_APPLIED: &[u8] = b"applied";
const META_COMPACT_SCHEDULED: &[u8] = b"compact_scheduled";
const META_COMPACT_FINISHED: &[u8] = b"compact_finished";
const META_RAFT_STATE: &[u8] = b"raft_state";
/// Present from the first write of a restore until its last: the contents
/// are then a mix of nothing and part of a snapshot.
pub(crate) const META_RESTORING: &[u8] = b"restoring";

/// Upper bound of the `Kv` bytes in one restore batch, so a restore never
/// holds more than this (plus one record) in memory.
const RESTORE_BATCH_BYTES: usize = 4 << 20;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Revisions deleted per batch by physical compaction (etcd's
    /// `--compaction-batch-limit`, default 1000).
    pub compaction_batch_limit: usize,
    /// Pause between compaction batches so compaction never starves writes
    /// (etcd's `--compaction-sleep-interval`, default 10 ms).
    pub compaction_sleep: Duration,
    /// fsync every applied batch. Off for tests of the in-memory engine, and
    /// under Raft, whose fsynced log replays whatever a crash lost: the
    /// engine's WAL still keeps a prefix of the batches, each whole.
    pub sync_writes: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { compaction_batch_limit: 1000, compaction_sleep: Duration::from_millis(10), sync_writes: true }
    }
}

/// A request that changes the store (or may: a txn's branch decides).
/// Encoded for the Raft log by [`WriteRequest::encode`].
#[derive(Clone, Debug, PartialEq)]
pub enum WriteRequest {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    /// Grants lease `ID` (non-zero: the proposer picks it) with `TTL` as
    /// given (the proposer applies etcd's minimum and maximum).
    LeaseGrant(LeaseGrantRequest),
    /// Deletes every key attached to the lease in one revision, and the lease.
    LeaseRevoke(LeaseRevokeRequest),
    /// Records each named lease's remaining TTL; unknown ids are ignored.
    LeaseCheckpoint(LeaseCheckpointRequest),
}

#[derive(Clone, Debug, PartialEq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseCheckpoint(LeaseCheckpointResponse),
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

/// One committed Raft log entry, as the state machine hands it to
/// [`Store::apply_entries`].
#[derive(Clone, Copy, Debug)]
pub struct LogEntry<'a> {
    /// The entry's log index; must be above the applied index (and above the
    /// previous entry's in the same call).
    pub index: u64,
    /// The proposer's request id; 0 = none (never deduplicated).
    pub request_id: u64,
    /// `None` for entries without a request (blank, membership): only the
    /// applied index advances.
    pub request: Option<&'a WriteRequest>,
}

/// What [`Store::apply_entries`] did with an entry.
#[derive(Clone, Debug, PartialEq)]
pub enum EntryOutcome {
    /// The request was applied (possibly with a request error in `result`).
    Applied(Applied),
    /// The request id was already applied at `first_index`, within
    /// [`crate::DEDUP_WINDOW`]: nothing changed but the applied index.
    Duplicate { first_index: u64 },
    /// The entry carried no request.
    NoRequest,
}

struct State {
    index: TreeIndex,
    /// Latest published (durable) revision. An empty store is at revision 1.
    rev: i64,
    /// Revision of the last compaction; -1 before any.
    compacted: i64,
    applied_index: u64,
    dedup: Dedup,
    raft_state: Option<Vec<u8>>,
    leases: Leases,
}

pub struct Store {
    engine: Arc<dyn Engine>,
    state: RwLock<State>,
    /// Serializes writers (apply, snapshot views, restore); readers never take it.
    apply_lock: Mutex<()>,
    /// Held shared by everything that reads records from the engine, and
    /// exclusively by a restore, so no read sees a half-restored store. The
    /// value counts restores, so views taken before one can tell.
    contents: Arc<RwLock<u64>>,
    /// Set after a failed engine write: the in-memory index may then be ahead
    /// of the engine, so nothing may be applied or read any more.
    failed: AtomicBool,
    /// The `restoring` marker is stored: the store is empty and takes no
    /// writes until a restore succeeds.
    interrupted: AtomicBool,
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

fn meta_delete(batch: &mut WriteBatch, key: &[u8]) {
    batch.delete(Keyspace::Meta, key.to_vec());
}

fn restore_marker(engine: &dyn Engine) -> Result<bool, StorageError> {
    match engine.get(Keyspace::Meta, META_RESTORING)? {
        None => Ok(false),
        Some(v) => unseal(META_RESTORING, &v).map(|_| true),
    }
}

/// Clears both keyspaces and sets the `restoring` marker, atomically: the
/// first step of a restore, and how open treats a store whose restore was
/// interrupted (its contents are a meaningless mix).
fn wipe_batch() -> WriteBatch {
    let mut batch = WriteBatch::default();
    for ks in Keyspace::ALL {
        batch.delete_range(ks, Vec::new(), ks.upper_bound());
    }
    batch.put(Keyspace::Meta, META_RESTORING.to_vec(), seal(META_RESTORING, &[]));
    batch
}

/// The bookkeeping records, decoded and checked.
struct MetaState {
    applied_index: u64,
    /// The revision stored with the applied index (1 if none).
    rev: i64,
    compacted: i64,
    finished: i64,
    raft_state: Option<Vec<u8>>,
    dedup: Dedup,
    /// Without attachments (those come from the `Kv` records).
    leases: Leases,
}

fn load_meta(engine: &dyn Engine) -> Result<MetaState, StorageError> {
    let (applied_index, rev) = match read_meta(engine, META_APPLIED, 2)? {
        Some(v) => (v[0] as u64, v[1]),
        None => (0, 1),
    };
    // -1 until the first compaction, as in etcd (so `Compact(0)` is accepted once).
    let compacted = read_meta(engine, META_COMPACT_SCHEDULED, 1)?.map_or(-1, |v| v[0]);
    let finished = read_meta(engine, META_COMPACT_FINISHED, 1)?.map_or(-1, |v| v[0]);
    let raft_state = engine
        .get(Keyspace::Meta, META_RAFT_STATE)?
        .map(|v| unseal(META_RAFT_STATE, &v).map(<[u8]>::to_vec))
        .transpose()?;
    let dedup = Dedup::load(engine, applied_index)?;
    let leases = Leases::load(engine)?;
    Ok(MetaState { applied_index, rev, compacted, finished, raft_state, dedup, leases })
}

fn check_kv_below(last_main: i64, rev: i64) -> Result<(), StorageError> {
    if last_main > rev {
        return Err(StorageError::Corruption(format!(
            "stored revision {last_main} is newer than the applied revision {rev}"
        )));
    }
    Ok(())
}

/// Checks a snapshot's meta records as [`load`] would read them, plus that no
/// record is above the snapshot's revision: after this, installing the
/// snapshot cannot fail to load.
pub(crate) fn check_snapshot_meta(meta: &[(Vec<u8>, Vec<u8>)], max_kv_main: i64) -> Result<(), StorageError> {
    let staged = MemEngine::new();
    let mut batch = WriteBatch::default();
    for (k, v) in meta {
        batch.put(Keyspace::Meta, k.clone(), v.clone());
    }
    staged.write(batch, false)?;
    let m = load_meta(&staged)?;
    check_kv_below(max_kv_main, m.rev)
}

/// Everything a store keeps in memory, rebuilt from the engine.
struct Loaded {
    state: State,
    /// Revision physical compaction has finished.
    finished: i64,
    /// A compaction to resume: its revision and the revisions it keeps.
    resume: Option<(i64, HashSet<Revision>)>,
}

/// Rebuilds the in-memory state from the engine: at open, and after a
/// restore, so both see a store the same way.
fn load(engine: &dyn Engine) -> Result<Loaded, StorageError> {
    let m = load_meta(engine)?;
    let mut index = TreeIndex::new();
    let mut last_main = 0;
    // Live keys with a lease → that lease, as of their latest record.
    let mut attached: HashMap<Vec<u8>, i64> = HashMap::new();
    engine.scan(Keyspace::Kv, &[], None, &mut |k, v| {
        let r = Revision::from_key(k)
            .ok_or_else(|| StorageError::Corruption(format!("malformed revision key {k:02x?}")))?;
        let rec = KvRecord::decode(k, v)?;
        match rec.kind {
            RecordKind::Put => {
                index.restore_put(&rec.kv.key, r, rec.kv.create_revision, rec.kv.version);
                if rec.kv.lease != 0 {
                    attached.insert(rec.kv.key, rec.kv.lease);
                } else {
                    attached.remove(&rec.kv.key);
                }
            }
            RecordKind::Tombstone => {
                index.tombstone(&rec.kv.key, r);
                attached.remove(&rec.kv.key);
            }
        }
        last_main = r.main;
        Ok(Scan::Continue)
    })?;
    check_kv_below(last_main, m.rev)?;
    let mut leases = m.leases;
    leases.attach_loaded(attached)?;
    let rev = m.rev.max(m.compacted);
    let keep = (m.compacted >= 0).then(|| index.compact(m.compacted));
    let resume = keep.filter(|_| m.finished < m.compacted).map(|keep| (m.compacted, keep));
    Ok(Loaded {
        state: State {
            index,
            rev,
            compacted: m.compacted,
            applied_index: m.applied_index,
            dedup: m.dedup,
            raft_state: m.raft_state,
            leases,
        },
        finished: m.finished,
        resume,
    })
}

/// A request's effect, computed but not yet durable.
struct Executed {
    result: Result<WriteResponse, StorageError>,
    rev: i64,
    events: Vec<Event>,
    /// A compaction to hand to the compactor once the batch is durable.
    compaction: Option<(i64, HashSet<Revision>)>,
    /// Changes to the leases, applied when the revision is published.
    lease_changes: Vec<LeaseChange>,
}

impl Store {
    /// Opens the store on `engine`, rebuilding the key index from the stored
    /// revisions and resuming an interrupted compaction. A store whose
    /// snapshot restore was interrupted opens empty, with
    /// [`Store::restore_interrupted`] set.
    pub fn open(engine: Arc<dyn Engine>, cfg: StoreConfig) -> Result<Arc<Store>, StorageError> {
        let interrupted = restore_marker(&*engine)?;
        if interrupted {
            tracing::warn!("a snapshot restore was interrupted: the store is empty until a restore succeeds");
            engine.write(wipe_batch(), true)?;
        }
        let loaded = load(&*engine)?;

        let compactor = Arc::new(Compactor::new(loaded.finished, cfg.compaction_batch_limit, cfg.compaction_sleep));
        let thread = {
            let compactor = compactor.clone();
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("cairn-compactor".into())
                .spawn(move || compactor.run(&*engine))
                .map_err(|e| StorageError::Engine(format!("spawn compactor: {e}")))?
        };
        if let Some((rev, keep)) = loaded.resume {
            tracing::info!(compacted = rev, finished = loaded.finished, "resuming interrupted compaction");
            compactor.schedule(rev, keep);
        }
        let st = loaded.state;
        tracing::info!(
            revision = st.rev,
            compacted = st.compacted,
            applied_index = st.applied_index,
            keys = st.index.len(),
            request_ids = st.dedup.len(),
            leases = st.leases.len(),
            "store opened"
        );
        Ok(Arc::new(Store {
            engine,
            state: RwLock::new(st),
            apply_lock: Mutex::new(()),
            contents: Arc::new(RwLock::new(0)),
            failed: AtomicBool::new(false),
            interrupted: AtomicBool::new(interrupted),
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

    /// For writers, under the apply lock (a restore changes `interrupted`
    /// under it too).
    fn check_writable(&self) -> Result<(), StorageError> {
        self.check_usable()?;
        if self.interrupted.load(AtomicOrdering::Acquire) {
            return Err(StorageError::Internal(
                "an interrupted snapshot restore left the store empty: restore a snapshot first".into(),
            ));
        }
        Ok(())
    }

    /// Marks the store failed: memory may be ahead of the engine.
    fn poison(&self) {
        self.failed.store(true, AtomicOrdering::Release);
    }

    /// Writes a batch; a failure poisons the store, since memory may already
    /// reflect the batch.
    fn write_or_poison(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        self.engine.write(batch, sync).inspect_err(|_| self.poison())
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

    /// The blob last stored by [`Store::apply_entries`] or a restore; `None`
    /// if there never was one.
    pub fn raft_state(&self) -> Option<Vec<u8>> {
        self.state.read().raft_state.clone()
    }

    /// The store was opened with an unfinished restore, or the last restore
    /// failed: it is empty, refuses writes and snapshot views, and the caller
    /// must restore a snapshot.
    pub fn restore_interrupted(&self) -> bool {
        self.interrupted.load(AtomicOrdering::Acquire)
    }

    pub fn size_bytes(&self) -> u64 {
        self.engine.size_bytes()
    }

    pub fn live_size_bytes(&self) -> u64 {
        self.engine.live_size_bytes()
    }

    /// Lease `id` as of the latest published revision, with its attached
    /// keys (sorted); `None` if no such lease exists.
    pub fn lease(&self, id: i64) -> Option<LeaseInfo> {
        self.state.read().leases.info(id)
    }

    /// Every lease, sorted by id, each without its keys (`keys` is empty;
    /// use [`Store::lease`] for them).
    pub fn leases(&self) -> Vec<LeaseInfo> {
        self.state.read().leases.infos()
    }

    /// A read at the latest revision, or the one the request names. It may
    /// wait for a restore to finish; see [`Store::try_point_range`].
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StorageError> {
        self.check_usable()?;
        let _contents = self.contents.read();
        self.range_unlocked(req)
    }

    /// [`Store::range`] for a read of one key (no `range_end`), or `None`
    /// when the request names a range or a restore holds the store. Such a
    /// read fetches at most one record and never waits on a lock held for
    /// longer than one request's apply, so an async caller may run it on
    /// its own thread; anything else belongs where blocking is allowed.
    pub fn try_point_range(&self, req: &RangeRequest) -> Option<Result<RangeResponse, StorageError>> {
        if !req.range_end.is_empty() {
            return None;
        }
        if let Err(e) = self.check_usable() {
            return Some(Err(e));
        }
        let _contents = self.contents.try_read()?;
        Some(self.range_unlocked(req))
    }

    /// The read itself; the caller holds `contents` shared.
    fn range_unlocked(&self, req: &RangeRequest) -> Result<RangeResponse, StorageError> {
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

    /// Bug switch `ack-before-commit` only: the response `req` (a Put,
    /// DeleteRange or Txn) would get if it were applied to this store now,
    /// computed on a copy of the index and leaving the store unchanged. The
    /// header revision is therefore the local revision + 1 whenever the
    /// request writes, whatever the cluster commits meanwhile.
    #[cfg(feature = "bug-switches")]
    pub fn preview(&self, req: &WriteRequest) -> Result<WriteResponse, StorageError> {
        self.check_usable()?;
        let _contents = self.contents.read();
        let (mut index, leases, rev, compacted) = {
            let st = self.state.read();
            (st.index.clone(), st.leases.clone(), st.rev, st.compacted)
        };
        let nothing_pending = Written::default();
        let mut txn = WriteTxn::new(&*self.engine, &nothing_pending, &mut index, &leases, rev, compacted);
        match req {
            WriteRequest::Put(r) => txn.put(r).map(WriteResponse::Put),
            WriteRequest::DeleteRange(r) => txn.delete_range(r).map(WriteResponse::DeleteRange),
            WriteRequest::Txn(r) => txn.txn(r).map(WriteResponse::Txn),
            other => Err(StorageError::Internal(format!("cannot preview {other:?}"))),
        }
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
        let _contents = self.contents.read();
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

    /// The change history from revision `from` on, for watchers catching up:
    /// every event of revisions `from..=to` (`to` capped at the current
    /// revision), in revision order, but stopping after `max_revisions`
    /// whole revisions or once `max_bytes` of records were read (never
    /// inside a revision). Returns the events and the first revision not
    /// included. Events carry no `prev_kv` (watchers that want it read it at
    /// `mod_revision - 1`).
    ///
    /// `Compacted` if `from` is below the compaction revision, checked again
    /// after the scan, so physical compaction racing the scan cannot remove
    /// part of what was returned.
    pub fn history(&self, from: i64, to: i64, max_revisions: usize, max_bytes: usize) -> Result<(Vec<Event>, i64), StorageError> {
        self.check_usable()?;
        let _contents = self.contents.read();
        let to = to.min(self.current_revision());
        if from < self.compact_revision() {
            return Err(StorageError::Compacted);
        }
        let mut events = Vec::new();
        let mut next = from.max(1);
        if next > to {
            return Ok((events, next));
        }
        let (mut revisions, mut bytes, mut current_main) = (0usize, 0usize, None);
        let start = Revision::new(next, 0).to_key();
        let end = Revision::new(to + 1, 0).to_key();
        self.engine.scan(Keyspace::Kv, &start, Some(&end), &mut |k, v| {
            let r = Revision::from_key(k)
                .ok_or_else(|| StorageError::Corruption(format!("malformed revision key {k:02x?}")))?;
            if current_main != Some(r.main) {
                if revisions >= max_revisions.max(1) || (revisions > 0 && bytes >= max_bytes) {
                    return Ok(Scan::Stop);
                }
                revisions += 1;
                current_main = Some(r.main);
            }
            bytes += k.len() + v.len();
            let rec = KvRecord::decode(k, v)?;
            let r#type = match rec.kind {
                RecordKind::Put => EventType::Put,
                RecordKind::Tombstone => EventType::Delete,
            };
            events.push(Event { r#type: r#type as i32, kv: Some(rec.kv), prev_kv: None });
            next = r.main + 1;
            Ok(Scan::Continue)
        })?;
        if current_main.is_none() || revisions < max_revisions.max(1) && bytes < max_bytes {
            // Nothing more below `to`: revisions without records (request
            // errors, compactions) are skipped too.
            next = to + 1;
        }
        if from < self.compact_revision() {
            return Err(StorageError::Compacted);
        }
        Ok((events, next))
    }

    /// Rewrites the engine's files to reclaim space (etcd's Defragment).
    pub fn defragment(&self) -> Result<(), StorageError> {
        self.check_usable()?;
        self.engine.compact_files()
    }

    /// Runs `req` against `st` at revision `begin` (the published revision,
    /// or the last one written by an earlier request of the same batch),
    /// adding its records to `batch` and to `written`, which holds those of
    /// the batch's earlier requests (not in the engine yet). The index
    /// already holds the new revisions, invisible until the caller publishes
    /// the revision after the batch is durable.
    fn execute(
        &self,
        st: &mut State,
        begin: i64,
        written: &mut Written,
        req: &WriteRequest,
        batch: &mut WriteBatch,
    ) -> Result<Executed, StorageError> {
        let compacted = st.compacted;
        if let WriteRequest::Compact(c) = req {
            let mut compaction = None;
            let result = if c.revision <= compacted {
                Err(StorageError::Compacted)
            } else if c.revision > begin {
                Err(StorageError::FutureRev)
            } else {
                let keep = st.index.compact(c.revision);
                st.compacted = c.revision;
                meta_put(batch, META_COMPACT_SCHEDULED, &[c.revision]);
                compaction = Some((c.revision, keep));
                Ok(WriteResponse::Compact(CompactionResponse { header: Some(header(begin)) }))
            };
            return Ok(Executed { result, rev: begin, events: Vec::new(), compaction, lease_changes: Vec::new() });
        }
        let mut lease_changes = Vec::new();
        match req {
            WriteRequest::LeaseGrant(g) => {
                let result = if g.id == 0 {
                    // As etcd's lessor: id 0 means "no lease".
                    Err(StorageError::LeaseNotFound)
                } else if st.leases.contains(g.id) {
                    Err(StorageError::LeaseExists)
                } else {
                    meta_put(batch, &lease::key(g.id), &[g.ttl, 0]);
                    lease_changes.push(LeaseChange::Grant { id: g.id, ttl: g.ttl });
                    Ok(WriteResponse::LeaseGrant(LeaseGrantResponse {
                        header: Some(header(begin)),
                        id: g.id,
                        ttl: g.ttl,
                        error: String::new(),
                    }))
                };
                return Ok(Executed { result, rev: begin, events: Vec::new(), compaction: None, lease_changes });
            }
            WriteRequest::LeaseCheckpoint(c) => {
                // The last checkpoint of an id wins, as etcd applies them in order.
                let latest: BTreeMap<i64, i64> = c
                    .checkpoints
                    .iter()
                    .filter(|cp| st.leases.contains(cp.id))
                    .map(|cp| (cp.id, cp.remaining_ttl))
                    .collect();
                for (id, remaining_ttl) in latest {
                    let ttl = st.leases.ttl(id).expect("filtered on existing leases");
                    meta_put(batch, &lease::key(id), &[ttl, remaining_ttl]);
                    lease_changes.push(LeaseChange::Checkpoint { id, remaining_ttl });
                }
                let resp = LeaseCheckpointResponse { header: Some(header(begin)) };
                let result = Ok(WriteResponse::LeaseCheckpoint(resp));
                return Ok(Executed { result, rev: begin, events: Vec::new(), compaction: None, lease_changes });
            }
            WriteRequest::LeaseRevoke(r) if !st.leases.contains(r.id) => {
                let result = Err(StorageError::LeaseNotFound);
                return Ok(Executed { result, rev: begin, events: Vec::new(), compaction: None, lease_changes });
            }
            _ => {}
        }
        let mut txn = WriteTxn::new(&*self.engine, written, &mut st.index, &st.leases, begin, compacted);
        let result = match req {
            WriteRequest::Put(r) => txn.put(r).map(WriteResponse::Put),
            WriteRequest::DeleteRange(r) => txn.delete_range(r).map(WriteResponse::DeleteRange),
            WriteRequest::Txn(r) => txn.txn(r).map(WriteResponse::Txn),
            WriteRequest::LeaseRevoke(r) => txn.revoke(r.id).map(|rev| {
                meta_delete(batch, &lease::key(r.id));
                lease_changes.push(LeaseChange::Revoke(r.id));
                WriteResponse::LeaseRevoke(LeaseRevokeResponse { header: Some(header(rev)) })
            }),
            WriteRequest::Compact(_) | WriteRequest::LeaseGrant(_) | WriteRequest::LeaseCheckpoint(_) => {
                unreachable!("handled above")
            }
        };
        if matches!(&result, Err(e) if e.is_fatal()) {
            self.poison();
            return Err(result.unwrap_err());
        }
        let rev = txn.rev();
        let (changes, events) = txn.into_changes();
        if let (Err(e), false) = (&result, changes.is_empty()) {
            // Every request error is found before the first write; one
            // after it would leave the index half-changed.
            self.poison();
            return Err(StorageError::Internal(format!("request failed after writing: {e}")));
        }
        // Attachment changes go first, so a revoke's lease has no keys left
        // when it is removed.
        let detach_then_revoke = std::mem::take(&mut lease_changes);
        for (rev, rec) in changes {
            let lease = if rec.kind == RecordKind::Put { rec.kv.lease } else { 0 };
            lease_changes.push(LeaseChange::Attach { key: rec.kv.key.clone(), lease });
            batch.put(Keyspace::Kv, rev.to_key().to_vec(), rec.encode(rev));
            written.insert(rev, rec.kv);
        }
        lease_changes.extend(detach_then_revoke);
        Ok(Executed { result, rev, events, compaction: None, lease_changes })
    }

    fn check_index(applied_index: u64, index: u64) {
        assert!(index > applied_index, "apply index {index} not above applied index {applied_index}");
    }

    /// Applies one request at log position `index` (which must be above the
    /// applied index). Data, the new revision and `index` reach the engine in
    /// one atomic batch, so after a crash a request is either fully applied or
    /// not at all. An `Err` is fatal for the member.
    pub fn apply(&self, index: u64, req: &WriteRequest) -> Result<Applied, StorageError> {
        let _writer = self.apply_lock.lock();
        self.check_writable()?;
        let mut batch = WriteBatch::default();
        let ex = {
            let mut st = self.state.write();
            Self::check_index(st.applied_index, index);
            let begin = st.rev;
            self.execute(&mut st, begin, &mut Written::default(), req, &mut batch)?
        };
        meta_put(&mut batch, META_APPLIED, &[index as i64, ex.rev]);
        self.write_or_poison(batch, self.sync_writes)?;
        {
            let mut st = self.state.write();
            st.rev = ex.rev;
            st.applied_index = index;
            st.leases.apply(ex.lease_changes);
        }
        if let Some((rev, keep)) = ex.compaction {
            self.compactor.schedule(rev, keep);
        }
        Ok(Applied { result: ex.result, revision: ex.rev, events: ex.events })
    }

    /// Applies committed Raft log entries, in order, as one atomic batch: for
    /// each, its request unless the request id was applied within the last
    /// [`crate::DEDUP_WINDOW`] indexes, and its id record and the dedup
    /// window's eviction; then the last entry's index and `raft_state`. One
    /// engine write for the lot (rather than one per entry) is what keeps
    /// apply cheap under many small writes; after a crash the entries are
    /// either all applied or none, and the raft log replays them.
    ///
    /// Whether an entry is a duplicate depends only on replicated indexes and
    /// ids, so all members decide alike. A request that fails with a request
    /// error still counts as applied for dedup. An `Err` is fatal for the
    /// member: the store is poisoned.
    pub fn apply_entries(&self, entries: &[LogEntry<'_>], raft_state: &[u8]) -> Result<Vec<EntryOutcome>, StorageError> {
        let _writer = self.apply_lock.lock();
        self.check_writable()?;
        let Some(last) = entries.last() else {
            return Ok(Vec::new());
        };
        let mut batch = WriteBatch::default();
        let mut written = Written::default();
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut compactions = Vec::new();
        let (mut rev, mut prev_index) = {
            let st = self.state.read();
            (st.rev, st.applied_index)
        };
        for entry in entries {
            Self::check_index(prev_index, entry.index);
            prev_index = entry.index;
            // Locked per entry, not per batch, so readers wait for one
            // request's execution at most. They see nothing of the batch
            // until its revision is published below.
            let mut st = self.state.write();
            let decision = st.dedup.decide(entry.index, entry.request_id);
            let outcome = match (entry.request, decision.duplicate_of) {
                (Some(req), None) => {
                    let ex = self.execute(&mut st, rev, &mut written, req, &mut batch).inspect_err(|_| self.poison())?;
                    rev = ex.rev;
                    st.leases.apply(ex.lease_changes);
                    compactions.extend(ex.compaction);
                    EntryOutcome::Applied(Applied { result: ex.result, revision: ex.rev, events: ex.events })
                }
                (Some(_), Some(first_index)) => EntryOutcome::Duplicate { first_index },
                (None, _) => EntryOutcome::NoRequest,
            };
            let record = matches!(outcome, EntryOutcome::Applied(_)).then_some(entry.request_id).filter(|id| *id != 0);
            Dedup::write(&mut batch, &decision, entry.index, record);
            // Later entries of the batch must see this one's id; if the
            // batch fails, the store is poisoned and memory no longer matters.
            st.dedup.commit(&decision, entry.index, record);
            outcomes.push(outcome);
        }
        meta_put(&mut batch, META_APPLIED, &[last.index as i64, rev]);
        batch.put(Keyspace::Meta, META_RAFT_STATE.to_vec(), seal(META_RAFT_STATE, raft_state));
        self.write_or_poison(batch, self.sync_writes)?;
        {
            let mut st = self.state.write();
            st.rev = rev;
            st.applied_index = last.index;
            st.raft_state = Some(raft_state.to_vec());
        }
        for (rev, keep) in compactions {
            self.compactor.schedule(rev, keep);
        }
        Ok(outcomes)
    }

    /// A view of the store exactly at the current applied index, for
    /// [`StoreSnapshot::write_to`]. Taken under the apply lock, so cheap:
    /// it copies the few `Meta` records other than the dedup window, and
    /// the window itself from memory (which matches the stored records
    /// while no apply runs). Reading the window's records back from RocksDB
    /// took 37 ms at 150,000 applied entries (this takes 1-2 ms), stalling
    /// every apply, and Raft takes a view every `--snapshot-count` entries.
    /// Physical compaction deletes nothing until the view is dropped.
    pub fn snapshot_view(&self) -> Result<StoreSnapshot, StorageError> {
        let _writer = self.apply_lock.lock();
        self.check_writable()?;
        // Pause first: from here on, no record the view needs can go.
        let pause = self.compactor.pause();
        let generation = *self.contents.read();
        let mut meta = Vec::new();
        for (start, end) in [(&[][..], Some(dedup::PREFIX)), (dedup::PREFIX_END, None)] {
            self.engine.scan(Keyspace::Meta, start, end, &mut |k, v| {
                unseal(k, v)?;
                meta.push((k.to_vec(), v.to_vec()));
                Ok(Scan::Continue)
            })?;
        }
        let st = self.state.read();
        Ok(StoreSnapshot {
            engine: self.engine.clone(),
            contents: self.contents.clone(),
            generation,
            meta,
            dedup: st.dedup.records(),
            applied_index: st.applied_index,
            revision: st.rev,
            raft_state: st.raft_state.clone(),
            _pause: pause,
        })
    }

    /// Replaces the whole store with a snapshot stream written by
    /// [`StoreSnapshot::write_to`], atomically for readers (they wait until
    /// it is done) and crash-safely:
    ///
    /// 1. one synced batch clears both keyspaces and stores the `restoring`
    ///    marker;
    /// 2. `Kv` records are written as they arrive, in unsynced batches of at
    ///    most 4 MiB;
    /// 3. after the trailer's CRC and the meta records check out, one synced
    ///    batch writes the snapshot's `Meta` records and removes the marker.
    ///
    /// A crash before step 3 leaves the marker, and [`Store::open`] then
    /// opens an empty store with [`Store::restore_interrupted`] set. A bad or
    /// truncated stream gives `Corruption` and leaves the same state in this
    /// process: empty, marker stored, writes refused until a restore
    /// succeeds. Physical compaction is cancelled first and resumed as the
    /// restored records say. Views taken before are invalidated.
    pub fn restore(&self, r: &mut dyn Read) -> Result<SnapshotSummary, StorageError> {
        let _writer = self.apply_lock.lock();
        self.check_usable()?;
        self.compactor.cancel();
        let mut generation = self.contents.write();
        *generation += 1;
        self.interrupted.store(true, AtomicOrdering::Release);
        self.write_or_poison(wipe_batch(), true)?;
        let result = self.restore_stream(r).and_then(|summary| {
            let loaded = load(&*self.engine).inspect_err(|_| self.poison())?;
            Ok((summary, loaded))
        });
        let (summary, loaded) = match result {
            Ok(ok) => ok,
            Err(e) if self.failed.load(AtomicOrdering::Acquire) => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "snapshot restore failed: the store stays empty until a restore succeeds");
                // Drop the records written so far, so the engine holds what
                // memory says: nothing.
                self.write_or_poison(wipe_batch(), true)?;
                let empty = load(&*self.engine).inspect_err(|_| self.poison())?;
                *self.state.write() = empty.state;
                self.compactor.reset(empty.finished, None);
                return Err(e);
            }
        };
        let st = loaded.state;
        tracing::info!(
            bytes = summary.bytes,
            records = summary.records,
            revision = st.rev,
            compacted = st.compacted,
            applied_index = st.applied_index,
            keys = st.index.len(),
            "snapshot restored"
        );
        *self.state.write() = st;
        self.compactor.reset(loaded.finished, loaded.resume);
        self.interrupted.store(false, AtomicOrdering::Release);
        Ok(summary)
    }

    /// Steps 2 and 3 of [`Store::restore`].
    fn restore_stream(&self, r: &mut dyn Read) -> Result<SnapshotSummary, StorageError> {
        let mut batch = WriteBatch::default();
        let mut batch_bytes = 0usize;
        let staged = read_snapshot(r, &mut |k, v| {
            let n = k.len() + v.len();
            if !batch.is_empty() && batch_bytes + n > RESTORE_BATCH_BYTES {
                self.write_or_poison(std::mem::take(&mut batch), false)?;
                batch_bytes = 0;
            }
            batch_bytes += n;
            batch.put(Keyspace::Kv, k, v);
            Ok(())
        })?;
        check_snapshot_meta(&staged.meta, staged.max_kv_main)?;
        for (k, v) in staged.meta {
            batch.put(Keyspace::Meta, k, v);
        }
        batch.delete(Keyspace::Meta, META_RESTORING.to_vec());
        self.write_or_poison(batch, true)?;
        Ok(staged.summary)
    }

    /// Blocks until physical compaction up to `rev` has finished (etcd's
    /// `physical` flag), or the store is closing. While a snapshot view is
    /// alive, compaction is paused, so this waits for the view too.
    pub fn wait_compacted(&self, rev: i64) {
        self.compactor.wait(rev);
    }

    /// Stops background work and flushes the engine. The store must not be used afterwards.
    /// Makes everything applied so far durable, unsynced batches included
    /// (with `StoreConfig::sync_writes` off, a crash may otherwise lose the
    /// latest batches). The Raft layer calls it before purging the log that
    /// could have re-applied them.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.engine.sync_wal()
    }

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

/// What the compactor thread and its controllers share.
#[derive(Default)]
struct CompactorState {
    /// Only the newest pending job matters: everything a compaction at `r1`
    /// may delete, one at `r2 > r1` may delete too.
    pending: Option<CompactJob>,
    /// A job is being worked on.
    running: bool,
    /// The running job must stop at its next write (a restore is coming).
    cancel: bool,
    /// Live snapshot views; while any, no compaction write happens.
    views: usize,
}

/// Deletes superseded revisions in the background, in bounded batches with a
/// pause between them. Each write waits while a snapshot view is alive and
/// happens under the state lock, so a view never sees a delete after it began.
struct Compactor {
    inner: Mutex<CompactorState>,
    /// Notified on every change of `inner`.
    changed: Condvar,
    finished: Mutex<i64>,
    finished_cv: Condvar,
    stopping: AtomicBool,
    batch_limit: usize,
    sleep: Duration,
}

/// Keeps physical compaction from deleting anything while it lives; held by
/// a [`StoreSnapshot`].
pub(crate) struct CompactionPause(Arc<Compactor>);

impl Drop for CompactionPause {
    fn drop(&mut self) {
        self.0.inner.lock().views -= 1;
        self.0.changed.notify_all();
    }
}

impl Compactor {
    fn new(finished: i64, batch_limit: usize, sleep: Duration) -> Self {
        Self {
            inner: Mutex::new(CompactorState::default()),
            changed: Condvar::new(),
            finished: Mutex::new(finished),
            finished_cv: Condvar::new(),
            stopping: AtomicBool::new(false),
            batch_limit: batch_limit.max(1),
            sleep,
        }
    }

    fn schedule(&self, rev: i64, keep: HashSet<Revision>) {
        self.inner.lock().pending = Some(CompactJob { rev, keep });
        self.changed.notify_all();
    }

    fn pause(self: &Arc<Self>) -> CompactionPause {
        self.inner.lock().views += 1;
        CompactionPause(self.clone())
    }

    /// Drops the pending job and waits until the running one (if any) has
    /// stopped: afterwards the compactor writes nothing until the next
    /// `schedule`.
    fn cancel(&self) {
        let mut st = self.inner.lock();
        st.pending = None;
        st.cancel = true;
        self.changed.notify_all();
        while st.running {
            self.changed.wait(&mut st);
        }
    }

    /// After a restore: the restored progress, and the job it implies.
    fn reset(&self, finished: i64, resume: Option<(i64, HashSet<Revision>)>) {
        *self.finished.lock() = finished;
        self.finished_cv.notify_all();
        if let Some((rev, keep)) = resume {
            tracing::info!(compacted = rev, finished, "resuming the restored store's compaction");
            self.schedule(rev, keep);
        }
    }

    fn stop(&self) {
        self.stopping.store(true, AtomicOrdering::Release);
        // Take the locks so a waiter cannot miss the notification.
        drop(self.inner.lock());
        self.changed.notify_all();
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

    /// Waits until no view is alive and returns the state lock, which the
    /// caller holds over its write so no view can begin during it. `None`
    /// if the job is cancelled or the store is closing.
    fn turn(&self) -> Option<MutexGuard<'_, CompactorState>> {
        let mut st = self.inner.lock();
        loop {
            if self.stopping() || st.cancel {
                return None;
            }
            if st.views == 0 {
                return Some(st);
            }
            self.changed.wait(&mut st);
        }
    }

    fn run(&self, engine: &dyn Engine) {
        loop {
            let job = {
                let mut st = self.inner.lock();
                loop {
                    if self.stopping() {
                        return;
                    }
                    if let Some(job) = st.pending.take() {
                        st.running = true;
                        st.cancel = false;
                        break job;
                    }
                    self.changed.wait(&mut st);
                }
            };
            let outcome = self.compact(engine, &job);
            self.inner.lock().running = false;
            self.changed.notify_all();
            match outcome {
                Ok(true) => tracing::info!(revision = job.rev, "compaction finished"),
                Ok(false) => tracing::debug!(revision = job.rev, "compaction interrupted"),
                Err(e) => {
                    // The job stays unfinished on disk and is resumed at the next open.
                    tracing::error!(revision = job.rev, error = %e, "compaction failed");
                    return;
                }
            }
        }
    }

    /// Returns false if interrupted by `stop` or `cancel`.
    fn compact(&self, engine: &dyn Engine, job: &CompactJob) -> Result<bool, StorageError> {
        let end = Revision::new(job.rev + 1, 0).to_key();
        let mut from: Vec<u8> = Vec::new();
        let mut deleted = 0usize;
        loop {
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
            let Some(turn) = self.turn() else { return Ok(false) };
            deleted += batch.len();
            if !batch.is_empty() {
                engine.write(batch, false)?;
            }
            drop(turn);
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
        let Some(_turn) = self.turn() else { return Ok(false) };
        // Still under the lock: a restore's `reset` cannot be overwritten.
        engine.write(batch, true)?;
        *self.finished.lock() = job.rev;
        self.finished_cv.notify_all();
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

    /// The server runs `try_point_range` on its async threads, so it must
    /// answer exactly as `range` does and step aside for ranges and for a
    /// restore in progress.
    #[test]
    fn point_ranges_answer_as_range_does_and_step_aside_for_ranges_and_restores() {
        let store = Store::open(Arc::new(MemEngine::new()), cfg()).unwrap();
        store.apply(1, &put("a", "1")).unwrap();
        store.apply(2, &put("a", "2")).unwrap();
        store.apply(3, &WriteRequest::Compact(CompactionRequest { revision: 2, physical: false })).unwrap();
        for (key, rev) in [("a", 0), ("a", 3), ("missing", 0), ("a", 1), ("a", 9)] {
            let req = RangeRequest { key: key.into(), revision: rev, ..Default::default() };
            assert_eq!(store.try_point_range(&req), Some(store.range(&req)), "{key}@{rev}");
        }
        let ranged = RangeRequest { key: b"a".to_vec(), range_end: vec![0], ..Default::default() };
        assert_eq!(store.try_point_range(&ranged), None);
        let point = RangeRequest { key: b"a".to_vec(), ..Default::default() };
        let restoring = store.contents.write();
        assert_eq!(store.try_point_range(&point), None);
        drop(restoring);
        assert_eq!(store.try_point_range(&point).unwrap().unwrap().kvs[0].value, b"2");
    }

    /// A view copies the dedup window from memory, not from the keyspace;
    /// it must still hold exactly the `Meta` records a scan at the time of
    /// the view returns, also once the window has evicted records and
    /// after later applies.
    #[test]
    fn a_view_holds_the_meta_records_of_its_moment() {
        let engine = Arc::new(MemEngine::new());
        let store = Store::open(engine.clone(), cfg()).unwrap();
        let scan_meta = || {
            let mut records = Vec::new();
            engine
                .scan(Keyspace::Meta, &[], None, &mut |k, v| {
                    records.push((k.to_vec(), v.to_vec()));
                    Ok(Scan::Continue)
                })
                .unwrap();
            records
        };
        let grant = WriteRequest::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 });
        let puts: Vec<WriteRequest> = (0..10).map(|i| put(&format!("k{i}"), "v")).collect();
        let mut index = 1;
        let mut apply_run = |n: u64| {
            for _ in 0..n.div_ceil(1000) {
                let entries: Vec<LogEntry> = (0..1000)
                    .map(|i| LogEntry {
                        index: index + i,
                        request_id: (index + i) * 3 + 1,
                        request: Some(if index + i == 5 { &grant } else { &puts[(i % 10) as usize] }),
                    })
                    .collect();
                store.apply_entries(&entries, b"raft").unwrap();
                index += 1000;
            }
        };
        apply_run(crate::DEDUP_WINDOW + 3000);
        let view = store.snapshot_view().unwrap();
        let at_view = scan_meta();
        assert!(at_view.iter().any(|(k, _)| k.starts_with(b"lease/")), "a record after the window");
        assert!(at_view.iter().any(|(k, _)| k.as_slice() < dedup::PREFIX), "a record before it");
        assert_eq!(at_view.iter().filter(|(k, _)| k.starts_with(dedup::PREFIX)).count() as u64, crate::DEDUP_WINDOW);
        apply_run(2000);
        assert_ne!(scan_meta(), at_view);
        let mut from_view = Vec::new();
        view.each_meta_record(&mut |k, v| {
            from_view.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(from_view, at_view);
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

    /// etcd issue 18089: a delete at exactly the compaction revision must
    /// stay in the history a watch from that revision reads, also after a
    /// reopen rebuilds the index from what physical compaction kept.
    #[test]
    fn a_delete_at_the_compaction_revision_stays_in_the_history() {
        let engine = Arc::new(MemEngine::new());
        let store = Store::open(engine.clone(), cfg()).unwrap();
        store.apply(1, &put("k", "1")).unwrap();
        store.apply(2, &put("k", "2")).unwrap();
        let del = WriteRequest::DeleteRange(DeleteRangeRequest { key: b"k".to_vec(), ..Default::default() });
        assert_eq!(store.apply(3, &del).unwrap().revision, 4);
        store.apply(4, &put("other", "x")).unwrap();
        let c = store.apply(5, &WriteRequest::Compact(CompactionRequest { revision: 4, physical: true })).unwrap();
        assert!(c.result.is_ok());
        store.wait_compacted(4);
        let deletes_at_4 = |store: &Store| {
            let (events, _) = store.history(4, 5, 100, 1 << 20).unwrap();
            events
                .iter()
                .filter(|e| e.r#type == EventType::Delete as i32 && e.kv.as_ref().is_some_and(|kv| kv.key == b"k" && kv.mod_revision == 4))
                .count()
        };
        assert_eq!(deletes_at_4(&store), 1);
        store.close().unwrap();
        drop(store);

        let store = Store::open(engine, cfg()).unwrap();
        store.wait_compacted(4);
        assert_eq!(deletes_at_4(&store), 1, "after a reopen");
        assert_eq!(get(&store, "k", 4).unwrap().kvs, vec![]);
        // The next compaction past the delete drops it.
        store.apply(6, &put("other", "y")).unwrap();
        store.apply(7, &WriteRequest::Compact(CompactionRequest { revision: 6, physical: true })).unwrap();
        store.wait_compacted(6);
        let (events, _) = store.history(6, 7, 100, 1 << 20).unwrap();
        assert!(events.iter().all(|e| e.kv.as_ref().is_some_and(|kv| kv.key == b"other")), "{events:?}");
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

    fn grant(id: i64, ttl: i64) -> WriteRequest {
        WriteRequest::LeaseGrant(LeaseGrantRequest { id, ttl })
    }

    fn put_leased(k: &str, lease: i64) -> WriteRequest {
        WriteRequest::Put(PutRequest { key: k.into(), value: b"v".to_vec(), lease, ..Default::default() })
    }

    /// The Raft path publishes lease changes like `apply` does, and a
    /// duplicate entry changes no lease.
    #[test]
    fn apply_entries_publishes_lease_changes() {
        let store = Store::open(Arc::new(MemEngine::new()), cfg()).unwrap();
        let entry = |index: u64, id: u64, req: &WriteRequest| {
            store.apply_entries(&[LogEntry { index, request_id: id, request: Some(req) }], b"s").unwrap().remove(0)
        };
        assert!(matches!(entry(1, 11, &grant(5, 10)), EntryOutcome::Applied(Applied { result: Ok(_), .. })));
        assert_eq!(entry(2, 11, &grant(5, 10)), EntryOutcome::Duplicate { first_index: 1 });
        entry(3, 12, &put_leased("b", 5));
        entry(4, 13, &put_leased("a", 5));
        assert_eq!(store.lease(5).unwrap().keys, vec![b"a".to_vec(), b"b".to_vec()]);
        let EntryOutcome::Applied(r) = entry(5, 14, &WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: 5 })) else {
            panic!("not applied")
        };
        assert_eq!((r.revision, r.events.len()), (4, 2));
        assert_eq!(store.lease(5), None);
        let blank = LogEntry { index: 6, request_id: 0, request: None };
        assert_eq!(store.apply_entries(&[blank], b"s").unwrap(), vec![EntryOutcome::NoRequest]);
        assert!(store.leases().is_empty());
        assert_eq!(get(&store, "a", 0).unwrap().kvs, vec![]);

        // In one batch, later entries see the lease an earlier one granted,
        // and the revoke sees the keys attached in between.
        let (grant7, put_c, revoke7) =
            (grant(7, 10), put_leased("c", 7), WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: 7 }));
        let batch = [
            LogEntry { index: 7, request_id: 21, request: Some(&grant7) },
            LogEntry { index: 8, request_id: 22, request: Some(&put_c) },
            LogEntry { index: 9, request_id: 21, request: Some(&grant7) },
            LogEntry { index: 10, request_id: 23, request: Some(&revoke7) },
        ];
        let out = store.apply_entries(&batch, b"s").unwrap();
        assert!(matches!(&out[1], EntryOutcome::Applied(Applied { result: Ok(_), .. })), "{out:?}");
        assert_eq!(out[2], EntryOutcome::Duplicate { first_index: 7 });
        let EntryOutcome::Applied(r) = &out[3] else { panic!("not applied: {out:?}") };
        assert_eq!((r.revision, r.events.len()), (6, 1), "the revoke deletes the key put in the same batch");
        assert_eq!(get(&store, "c", 5).unwrap().kvs.len(), 1);
        assert_eq!(get(&store, "c", 0).unwrap().kvs, vec![]);
        assert!(store.leases().is_empty());
    }

    /// A live key naming a lease without a record cannot come from applying
    /// requests: open reports it instead of inventing the lease.
    #[test]
    fn key_attached_to_a_missing_lease_is_corruption() {
        let engine = Arc::new(MemEngine::new());
        let store = Store::open(engine.clone(), cfg()).unwrap();
        store.apply(1, &grant(3, 10)).unwrap();
        store.apply(2, &put_leased("k", 3)).unwrap();
        store.close().unwrap();
        drop(store);
        let mut batch = WriteBatch::default();
        batch.delete(Keyspace::Meta, lease::key(3));
        engine.write(batch, true).unwrap();
        assert!(matches!(Store::open(engine, cfg()), Err(StorageError::Corruption(_))));
    }

    #[test]
    fn lease_records_are_sealed() {
        let engine = Arc::new(MemEngine::new());
        let store = Store::open(engine.clone(), cfg()).unwrap();
        store.apply(1, &grant(3, 10)).unwrap();
        store.close().unwrap();
        drop(store);
        let key = lease::key(3);
        let mut bytes = engine.get(Keyspace::Meta, &key).unwrap().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        engine.corrupt(Keyspace::Meta, &key, bytes);
        assert!(matches!(Store::open(engine, cfg()), Err(StorageError::Corruption(_))));
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
