//! Model-based tests of the MVCC store.
//!
//! [`Model`] is a deliberately naive reference implementation of etcd's MVCC
//! semantics: it keeps every change ever made as a flat list and answers a
//! read at revision `r` by replaying the list up to `r`. proptest generates
//! random sequences of requests over a tiny key alphabet (with prefix and
//! `"\0"` edge cases); every request goes through the same pre-apply checks
//! the server runs (`cairn_storage::validate`, compared against the model's
//! own copy of etcd's `v3rpc/key.go` checks) and then to both the store and
//! the model, whose answers must be identical: responses, headers, errors,
//! the store revision, the applied index and the watch events. After every
//! step the whole readable history is compared as well. Sequences include
//! compactions (sometimes waiting for physical deletion), restarts, and
//! snapshots restored into a new store or back into the same one, and the
//! deterministic part of leases (grant, revoke, checkpoint, keys attached by
//! puts), whose state is compared after every step too.
//!
//! The semantics mirrored are etcd 3.6's (`server/etcdserver/txn/*.go`,
//! `server/storage/mvcc/kvstore*.go`, `server/etcdserver/api/v3rpc/key.go`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use cairn_api::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseCheckpoint,
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::{event::EventType, Event, KeyValue};
use cairn_storage::{
    validate, verify_snapshot, Applied, Engine, Keyspace, LeaseInfo, MemEngine, Revision, RocksEngine, StorageError, Store,
    StoreConfig, WriteRequest, WriteResponse,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use tempfile::TempDir;

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

/// Live keys at some revision.
type State = BTreeMap<Vec<u8>, KeyValue>;

/// One change to one key: a put (value, lease) or a delete (`None`).
#[derive(Clone, Debug)]
struct Change {
    main: i64,
    key: Vec<u8>,
    put: Option<(Vec<u8>, i64)>,
}

fn apply_change(state: &mut State, c: &Change) {
    match &c.put {
        Some((value, lease)) => {
            let (create_revision, version) = match state.get(&c.key) {
                Some(kv) => (kv.create_revision, kv.version + 1),
                None => (c.main, 1),
            };
            state.insert(
                c.key.clone(),
                KeyValue {
                    key: c.key.clone(),
                    create_revision,
                    mod_revision: c.main,
                    version,
                    value: value.clone(),
                    lease: *lease,
                },
            );
        }
        None => {
            state.remove(&c.key);
        }
    }
}

/// `range_end` as etcd reads it: empty = the single key, `"\0"` = every key
/// `>= key`, otherwise `[key, range_end)`.
fn in_range(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    match range_end {
        [] => k == key,
        [0] => k >= key,
        end => k >= key && k < end,
    }
}

fn hdr(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

#[derive(Clone, Debug)]
struct Model {
    /// Every change ever made, in (revision, sub-revision) order.
    history: Vec<Change>,
    /// Current store revision; an empty store is at 1.
    rev: i64,
    /// etcd's `compactMainRev`: -1 until the first compaction.
    first_rev: i64,
    /// Lease id → (granted TTL, last checkpointed remaining TTL).
    leases: BTreeMap<i64, (i64, i64)>,
}

impl Model {
    fn new() -> Self {
        Self {
            history: Vec::new(),
            rev: 1,
            first_rev: -1,
            leases: BTreeMap::new(),
        }
    }

    /// Every lease with the current keys whose latest version names it.
    fn lease_infos(&self) -> Vec<LeaseInfo> {
        let state = self.state_at(self.rev);
        self.leases
            .iter()
            .map(|(&id, &(ttl, remaining_ttl))| LeaseInfo {
                id,
                ttl,
                remaining_ttl,
                keys: state.values().filter(|kv| kv.lease == id).map(|kv| kv.key.clone()).collect(),
            })
            .collect()
    }

    fn state_at(&self, at: i64) -> State {
        let mut s = State::new();
        for c in self.history.iter().take_while(|c| c.main <= at) {
            apply_change(&mut s, c);
        }
        s
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, StorageError> {
        Ctx::new(self).range(r)
    }

    /// Applies a write; returns the result and the watch events.
    fn apply(&mut self, req: &WriteRequest) -> (Result<WriteResponse, StorageError>, Vec<Event>) {
        if let WriteRequest::Compact(c) = req {
            let result = if c.revision <= self.first_rev {
                Err(StorageError::Compacted)
            } else if c.revision > self.rev {
                Err(StorageError::FutureRev)
            } else {
                self.first_rev = c.revision;
                Ok(WriteResponse::Compact(CompactionResponse { header: hdr(self.rev) }))
            };
            return (result, Vec::new());
        }
        match req {
            WriteRequest::LeaseGrant(g) => {
                let result = if g.id == 0 {
                    Err(StorageError::LeaseNotFound)
                } else if self.leases.contains_key(&g.id) {
                    Err(StorageError::LeaseExists)
                } else {
                    self.leases.insert(g.id, (g.ttl, 0));
                    Ok(WriteResponse::LeaseGrant(LeaseGrantResponse {
                        header: hdr(self.rev),
                        id: g.id,
                        ttl: g.ttl,
                        error: String::new(),
                    }))
                };
                return (result, Vec::new());
            }
            WriteRequest::LeaseCheckpoint(c) => {
                for cp in &c.checkpoints {
                    if let Some(l) = self.leases.get_mut(&cp.id) {
                        l.1 = cp.remaining_ttl;
                    }
                }
                let resp = LeaseCheckpointResponse { header: hdr(self.rev) };
                return (Ok(WriteResponse::LeaseCheckpoint(resp)), Vec::new());
            }
            WriteRequest::LeaseRevoke(r) if !self.leases.contains_key(&r.id) => {
                return (Err(StorageError::LeaseNotFound), Vec::new());
            }
            _ => {}
        }
        let mut ctx = Ctx::new(self);
        let result = match req {
            WriteRequest::LeaseRevoke(r) => {
                let attached: Vec<Vec<u8>> = ctx
                    .working
                    .values()
                    .filter(|kv| kv.lease == r.id)
                    .map(|kv| kv.key.clone())
                    .collect();
                for key in attached {
                    ctx.delete(&DeleteRangeRequest {
                        key,
                        ..Default::default()
                    });
                }
                Ok(WriteResponse::LeaseRevoke(LeaseRevokeResponse { header: hdr(ctx.rev()) }))
            }
            WriteRequest::Put(p) => {
                // etcd's top-level Put looks the lease up before anything else.
                if p.lease != 0 && !ctx.model.leases.contains_key(&p.lease) {
                    Err(StorageError::LeaseNotFound)
                } else if (p.ignore_value || p.ignore_lease) && !ctx.working.contains_key(&p.key) {
                    Err(StorageError::KeyNotFound)
                } else {
                    Ok(WriteResponse::Put(ctx.put(p)))
                }
            }
            WriteRequest::DeleteRange(d) => Ok(WriteResponse::DeleteRange(ctx.delete(d))),
            WriteRequest::Txn(t) => match ctx.check_txn(t) {
                Err(e) => Err(e),
                Ok(()) => {
                    let mut resp = ctx.exec_txn(t);
                    resp.header = hdr(ctx.rev());
                    Ok(WriteResponse::Txn(resp))
                }
            },
            WriteRequest::Compact(_) | WriteRequest::LeaseGrant(_) | WriteRequest::LeaseCheckpoint(_) => unreachable!(),
        };
        let pending = std::mem::take(&mut ctx.pending);
        drop(ctx);
        if let (WriteRequest::LeaseRevoke(r), Ok(_)) = (req, &result) {
            self.leases.remove(&r.id);
        }
        let mut s = self.state_at(self.rev);
        let events = pending
            .iter()
            .map(|c| {
                apply_change(&mut s, c);
                match &c.put {
                    Some(_) => Event {
                        r#type: EventType::Put as i32,
                        kv: s.get(&c.key).cloned(),
                        prev_kv: None,
                    },
                    None => Event {
                        r#type: EventType::Delete as i32,
                        kv: Some(KeyValue {
                            key: c.key.clone(),
                            mod_revision: c.main,
                            ..Default::default()
                        }),
                        prev_kv: None,
                    },
                }
            })
            .collect();
        if !pending.is_empty() {
            self.rev += 1;
            self.history.extend(pending);
        }
        (result, events)
    }
}

/// One request's view of the model: the state it started from (compares and
/// checks read it) and the state including its own writes so far.
struct Ctx<'m> {
    model: &'m Model,
    begin: i64,
    begin_state: State,
    working: State,
    pending: Vec<Change>,
}

impl<'m> Ctx<'m> {
    fn new(model: &'m Model) -> Self {
        let begin_state = model.state_at(model.rev);
        Self {
            model,
            begin: model.rev,
            working: begin_state.clone(),
            begin_state,
            pending: Vec::new(),
        }
    }

    /// The revision reads see: the pending one once anything was written.
    fn rev(&self) -> i64 {
        if self.pending.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    fn record(&mut self, c: Change) {
        apply_change(&mut self.working, &c);
        self.pending.push(c);
    }

    /// etcd's `rangeKeys` + `executeRange`.
    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, StorageError> {
        let cur = self.rev();
        if r.revision > cur {
            return Err(StorageError::FutureRev);
        }
        let at = if r.revision <= 0 { cur } else { r.revision };
        if at < self.model.first_rev {
            return Err(StorageError::Compacted);
        }
        let state = if at == cur {
            self.working.clone()
        } else {
            self.model.state_at(at)
        };
        let all: Vec<KeyValue> = state
            .values()
            .filter(|kv| in_range(&r.key, &r.range_end, &kv.key))
            .cloned()
            .collect();
        let count = all.len() as i64;

        let order = r.sort_order;
        let target = r.sort_target;
        let none = SortOrder::None as i32;
        let asc = SortOrder::Ascend as i32;
        let key = SortTarget::Key as i32;
        let default_order = order == none || (target == key && order == asc);
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        // etcd fetches limit+1 keys (in key order) unless it must sort or filter.
        let mut fetch = if !default_order || filtered { 0 } else { r.limit };
        if fetch > 0 {
            fetch += 1;
        }
        let mut kvs: Vec<KeyValue> = if r.count_only {
            Vec::new()
        } else if fetch > 0 {
            all.into_iter().take(fetch as usize).collect()
        } else {
            all
        };
        if r.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
        }
        if r.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
        }
        if r.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
        }
        if r.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
        }
        let mut order = order;
        if target != key && order == none {
            order = asc;
        }
        if !(order == none || (target == key && order == asc)) {
            // Go sorts these small slices with insertion sort, which is stable:
            // ties keep ascending key order.
            let field = |kv: &KeyValue| -> (i64, Vec<u8>) {
                match SortTarget::try_from(target).expect("valid sort target") {
                    SortTarget::Key => (0, kv.key.clone()),
                    SortTarget::Version => (kv.version, vec![]),
                    SortTarget::Create => (kv.create_revision, vec![]),
                    SortTarget::Mod => (kv.mod_revision, vec![]),
                    SortTarget::Value => (0, kv.value.clone()),
                }
            };
            if order == SortOrder::Descend as i32 {
                kvs.sort_by(|a, b| field(b).cmp(&field(a)));
            } else {
                kvs.sort_by_key(field);
            }
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() as i64 > r.limit {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            header: hdr(cur),
            kvs,
            more,
            count,
        })
    }

    /// A put whose checks passed.
    fn put(&mut self, p: &PutRequest) -> PutResponse {
        let prev = self.working.get(&p.key).cloned();
        // `ignore_*` on a key this txn deleted is rejected by the duplicate-key
        // check, so a missing previous version here means the key is new.
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        self.record(Change {
            main: self.begin + 1,
            key: p.key.clone(),
            put: Some((value, lease)),
        });
        PutResponse {
            header: hdr(self.begin + 1),
            prev_kv: if p.prev_kv { prev } else { None },
        }
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let victims: Vec<KeyValue> = self
            .working
            .values()
            .filter(|kv| in_range(&d.key, &d.range_end, &kv.key))
            .cloned()
            .collect();
        for v in &victims {
            self.record(Change {
                main: self.begin + 1,
                key: v.key.clone(),
                put: None,
            });
        }
        DeleteRangeResponse {
            header: hdr(self.rev()),
            deleted: victims.len() as i64,
            prev_kvs: if d.prev_kv { victims } else { Vec::new() },
        }
    }

    fn compare_holds(&self, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = self
            .begin_state
            .values()
            .filter(|kv| in_range(&c.key, &c.range_end, &kv.key))
            .collect();
        if kvs.is_empty() {
            if c.target == CompareTarget::Value as i32 {
                return false;
            }
            return compare_kv(c, &KeyValue::default());
        }
        kvs.into_iter().all(|kv| compare_kv(c, kv))
    }

    /// Every compare (nested ones too) reads the state before the txn.
    fn branch<'t>(&self, t: &'t TxnRequest) -> (bool, &'t [RequestOp]) {
        let ok = t.compare.iter().all(|c| self.compare_holds(c));
        (ok, if ok { &t.success } else { &t.failure })
    }

    /// etcd's `checkTxn` on the branch each txn takes.
    fn check_txn(&self, t: &TxnRequest) -> Result<(), StorageError> {
        let (_, ops) = self.branch(t);
        for op in ops {
            match &op.request {
                Some(Request::RequestRange(r)) => {
                    if r.revision == 0 {
                    } else if r.revision > self.begin {
                        return Err(StorageError::FutureRev);
                    } else if r.revision < self.model.first_rev {
                        return Err(StorageError::Compacted);
                    }
                }
                Some(Request::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease) && !self.begin_state.contains_key(&p.key) {
                        return Err(StorageError::KeyNotFound);
                    }
                    if p.lease != 0 && !self.model.leases.contains_key(&p.lease) {
                        return Err(StorageError::LeaseNotFound);
                    }
                }
                Some(Request::RequestTxn(t)) => self.check_txn(t)?,
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn exec_txn(&mut self, t: &TxnRequest) -> TxnResponse {
        let (succeeded, ops) = self.branch(t);
        let mut responses = Vec::new();
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    Some(Response::ResponseRange(self.range(r).expect("checked before the txn")))
                }
                Some(Request::RequestPut(p)) => Some(Response::ResponsePut(self.put(p))),
                Some(Request::RequestDeleteRange(d)) => Some(Response::ResponseDeleteRange(self.delete(d))),
                Some(Request::RequestTxn(t)) => {
                    let mut r = self.exec_txn(t);
                    // etcd leaves nested txn headers empty.
                    r.header = Some(ResponseHeader::default());
                    Some(Response::ResponseTxn(r))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        TxnResponse {
            header: None,
            succeeded,
            responses,
        }
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let int = |pick: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(pick).unwrap_or(0);
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        Ok(CompareTarget::Version) => kv.version.cmp(&int(|u| match u {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int(|u| match u {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int(|u| match u {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int(|u| match u {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}

// --- etcd's pre-apply request checks (v3rpc/key.go), independently of `validate` ---

fn m_check_range(r: &RangeRequest) -> Result<(), StorageError> {
    if r.key.is_empty() {
        return Err(StorageError::EmptyKey);
    }
    Ok(())
}

fn m_check_put(p: &PutRequest) -> Result<(), StorageError> {
    if p.key.is_empty() {
        Err(StorageError::EmptyKey)
    } else if p.ignore_value && !p.value.is_empty() {
        Err(StorageError::ValueProvided)
    } else if p.ignore_lease && p.lease != 0 {
        Err(StorageError::LeaseProvided)
    } else {
        Ok(())
    }
}

fn m_check_delete(d: &DeleteRangeRequest) -> Result<(), StorageError> {
    if d.key.is_empty() {
        return Err(StorageError::EmptyKey);
    }
    Ok(())
}

fn m_check_txn_request(t: &TxnRequest, max_ops: i64) -> Result<(), StorageError> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len()) as i64;
    if opc > max_ops {
        return Err(StorageError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(StorageError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => m_check_range(r)?,
            Some(Request::RequestPut(p)) => m_check_put(p)?,
            Some(Request::RequestDeleteRange(d)) => m_check_delete(d)?,
            Some(Request::RequestTxn(t)) => m_check_txn_request(t, max_ops - opc)?,
            None => return Err(StorageError::KeyNotFound),
        }
    }
    Ok(())
}

/// A deleted interval: a point (`None`) or `[start, end)` taken literally,
/// except that a put needing the key's previous version (`ignore_value` or
/// `ignore_lease`) is also hit by a from-key (`"\0"`) delete: Cairn rejects
/// those txns, which etcd 3.6 accepts and then panics applying.
type Del = (Vec<u8>, Option<Vec<u8>>);

fn hits(dels: &[Del], k: &[u8], needs_prev: bool) -> bool {
    dels.iter().any(|(s, e)| match e {
        None => k == s.as_slice(),
        Some(e) if e.as_slice() == b"\0" => needs_prev && s.as_slice() <= k,
        Some(e) => s.as_slice() <= k && k < e.as_slice(),
    })
}

/// etcd's `checkIntervals`: no key may be written twice by one txn. Puts map
/// to whether they need the key's previous version.
fn m_check_intervals(ops: &[RequestOp]) -> Result<(HashMap<Vec<u8>, bool>, Vec<Del>), StorageError> {
    let mut dels: Vec<Del> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => {
                Some((d.key.clone(), (!d.range_end.is_empty()).then(|| d.range_end.clone())))
            }
            _ => None,
        })
        .collect();
    let mut puts: HashMap<Vec<u8>, bool> = HashMap::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = m_check_intervals(&t.success)?;
        let (puts_else, dels_else) = m_check_intervals(&t.failure)?;
        for (k, &np) in &puts_then {
            if puts.contains_key(k) || hits(&dels, k, np) {
                return Err(StorageError::DuplicateKey);
            }
            puts.insert(k.clone(), np);
        }
        for (k, &np) in &puts_else {
            if (puts.contains_key(k) && !puts_then.contains_key(k)) || hits(&dels, k, np) {
                return Err(StorageError::DuplicateKey);
            }
            let prev = puts.get(k).copied().unwrap_or(false);
            puts.insert(k.clone(), np || prev);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        let np = p.ignore_value || p.ignore_lease;
        if puts.contains_key(&p.key) || hits(&dels, &p.key, np) {
            return Err(StorageError::DuplicateKey);
        }
        puts.insert(p.key.clone(), np);
    }
    Ok((puts, dels))
}

fn m_check_txn(t: &TxnRequest) -> Result<(), StorageError> {
    m_check_txn_request(t, MAX_TXN_OPS as i64)?;
    m_check_intervals(&t.success)?;
    m_check_intervals(&t.failure)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The system under test
// ---------------------------------------------------------------------------

fn test_config() -> StoreConfig {
    StoreConfig {
        compaction_batch_limit: 3,
        compaction_sleep: Duration::ZERO,
        sync_writes: false,
    }
}

enum Backing {
    Mem(Arc<MemEngine>),
    Rocks(TempDir),
}

/// A store plus what it takes to restart it, and a log of every request for
/// failure messages.
struct Harness {
    name: &'static str,
    backing: Backing,
    cfg: StoreConfig,
    engine: Option<Arc<dyn Engine>>,
    store: Option<Arc<Store>>,
    next_index: u64,
    log: Vec<String>,
}

impl Harness {
    fn mem(cfg: StoreConfig) -> Self {
        Self::new("mem", Backing::Mem(Arc::new(MemEngine::new())), cfg)
    }

    fn rocks(cfg: StoreConfig) -> Self {
        Self::new("rocksdb", Backing::Rocks(TempDir::new().expect("temp dir")), cfg)
    }

    fn new(name: &'static str, backing: Backing, cfg: StoreConfig) -> Self {
        let mut h = Self {
            name,
            backing,
            cfg,
            engine: None,
            store: None,
            next_index: 1,
            log: Vec::new(),
        };
        h.open();
        h
    }

    fn open(&mut self) {
        let engine: Arc<dyn Engine> = match &self.backing {
            Backing::Mem(e) => e.clone(),
            Backing::Rocks(dir) => Arc::new(RocksEngine::open(dir.path()).expect("open rocksdb")),
        };
        let store = Store::open(engine.clone(), self.cfg.clone()).expect("open store");
        // Every apply persists its index, so the store resumes where it stopped.
        assert_eq!(
            store.applied_index() + 1,
            self.next_index,
            "[{}] applied index after open",
            self.name
        );
        self.next_index = store.applied_index() + 1;
        self.engine = Some(engine);
        self.store = Some(store);
    }

    fn close(&mut self) {
        let store = self.store.take().expect("open");
        store.close().expect("close");
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "[{}] someone still holds the store",
            self.name
        );
        drop(store);
        self.engine = None;
    }

    fn reopen(&mut self) {
        self.close();
        self.open();
    }

    /// Replaces the store's contents with a snapshot of themselves, possibly
    /// on a new engine. Nothing observable may change.
    fn snapshot_restore(&mut self, fresh: bool) {
        let store = self.store().clone();
        let hash = store.hash_kv(0).expect("hash_kv");
        let mut bytes = Vec::new();
        let summary = store
            .snapshot_view()
            .and_then(|view| view.write_to(&mut bytes))
            .unwrap_or_else(|e| self.fail(&format!("snapshot failed: {e:?}")));
        self.expect_eq("verified snapshot", verify_snapshot(&mut &bytes[..]), Ok(summary));
        drop(store);
        if fresh {
            self.close();
            self.backing = match &self.backing {
                Backing::Mem(_) => Backing::Mem(Arc::new(MemEngine::new())),
                Backing::Rocks(_) => Backing::Rocks(TempDir::new().expect("temp dir")),
            };
            let next_index = std::mem::replace(&mut self.next_index, 1);
            self.open();
            self.next_index = next_index;
        }
        let restored = self.store().restore(&mut &bytes[..]);
        self.expect_eq("restore", restored, Ok(summary));
        self.expect_eq("applied index after restore", self.store().applied_index() + 1, self.next_index);
        self.expect_eq("hash after restore", self.store().hash_kv(0).expect("hash_kv"), hash);
    }

    fn store(&self) -> &Arc<Store> {
        self.store.as_ref().expect("open")
    }

    fn apply(&mut self, req: &WriteRequest) -> Applied {
        let index = self.next_index;
        self.next_index += 1;
        let applied = self
            .store()
            .apply(index, req)
            .unwrap_or_else(|e| self.fail(&format!("fatal apply error {e:?}")));
        assert_eq!(self.store().applied_index(), index);
        applied
    }

    /// Blocks until physical compaction reached `rev`, failing instead of hanging.
    fn wait_compacted(&self, rev: i64) {
        let store = self.store().clone();
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            store.wait_compacted(rev);
            let _ = tx.send(());
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            self.fail(&format!("physical compaction to {rev} did not finish"));
        }
        t.join().expect("waiter");
    }

    /// Records in the `Kv` keyspace (every stored revision).
    fn kv_records(&self) -> usize {
        let mut n = 0;
        self.engine
            .as_ref()
            .expect("open")
            .scan(Keyspace::Kv, &[], None, &mut |_, _| {
                n += 1;
                Ok(cairn_storage::engine::Scan::Continue)
            })
            .expect("scan");
        n
    }

    fn fail(&self, msg: &str) -> ! {
        let tail = self.log.len().saturating_sub(60);
        panic!(
            "[{}] {}\nrequests so far (last {}):\n{}",
            self.name,
            bytes_as_strings(msg),
            self.log.len() - tail,
            bytes_as_strings(&self.log[tail..].join("\n"))
        )
    }

    fn expect_eq<T: PartialEq + Debug>(&self, what: &str, store: T, model: T) {
        if store != model {
            self.fail(&format!(
                "{what}: store and model disagree\n store: {store:#?}\n model: {model:#?}"
            ));
        }
    }

    /// Compares the store's and the model's views of the whole readable
    /// history: every revision from 1 to one past the current.
    fn check_history(&self, model: &Model) {
        let s = self.store();
        self.expect_eq("current revision", s.current_revision(), model.rev);
        self.expect_eq("compact revision", s.compact_revision(), model.first_rev);
        for at in 0..=model.rev + 1 {
            let req = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: at,
                ..Default::default()
            };
            self.expect_eq(
                &format!("everything at revision {at}"),
                s.range(&req),
                model.range(&req),
            );
        }
        let leases = model.lease_infos();
        for l in &leases {
            self.expect_eq(&format!("lease {}", l.id), s.lease(l.id), Some(l.clone()));
        }
        let without_keys: Vec<LeaseInfo> = leases
            .into_iter()
            .map(|l| LeaseInfo { keys: Vec::new(), ..l })
            .collect();
        self.expect_eq("leases", s.leases(), without_keys);
    }
}

// ---------------------------------------------------------------------------
// Generated operations
// ---------------------------------------------------------------------------

/// A revision chosen relative to the store's revision when the op runs, so
/// that generated sequences hit live, compacted and future revisions alike.
#[derive(Clone, Copy, Debug)]
enum Rev {
    Zero,
    Neg(i64),
    Abs(i64),
    /// `current - n`
    Back(i64),
    /// `current + n`
    Ahead(i64),
}

impl Rev {
    fn at(self, cur: i64) -> i64 {
        match self {
            Rev::Zero => 0,
            Rev::Neg(n) => -n,
            Rev::Abs(n) => n,
            Rev::Back(n) => cur - n,
            Rev::Ahead(n) => cur + n,
        }
    }
}

#[derive(Clone, Debug)]
struct RangeT {
    key: Vec<u8>,
    range_end: Vec<u8>,
    limit: i64,
    revision: Rev,
    sort_order: i32,
    sort_target: i32,
    keys_only: bool,
    count_only: bool,
    min_mod: Rev,
    max_mod: Rev,
    min_create: Rev,
    max_create: Rev,
}

impl RangeT {
    fn build(&self, cur: i64) -> RangeRequest {
        RangeRequest {
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            limit: self.limit,
            revision: self.revision.at(cur),
            sort_order: self.sort_order,
            sort_target: self.sort_target,
            serializable: false,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: self.min_mod.at(cur),
            max_mod_revision: self.max_mod.at(cur),
            min_create_revision: self.min_create.at(cur),
            max_create_revision: self.max_create.at(cur),
        }
    }
}

#[derive(Clone, Debug)]
struct CompareT {
    key: Vec<u8>,
    range_end: Vec<u8>,
    target: i32,
    result: i32,
    /// 0..8: the union matches the target; 8: no union; 9: another variant.
    union_kind: u8,
    int: i64,
    rev: Rev,
    value: Vec<u8>,
}

impl CompareT {
    fn build(&self, cur: i64) -> Compare {
        let matched = match CompareTarget::try_from(self.target).expect("valid target") {
            CompareTarget::Version => TargetUnion::Version(self.int),
            CompareTarget::Create => TargetUnion::CreateRevision(self.rev.at(cur)),
            CompareTarget::Mod => TargetUnion::ModRevision(self.rev.at(cur)),
            CompareTarget::Value => TargetUnion::Value(self.value.clone()),
            CompareTarget::Lease => TargetUnion::Lease(if self.int % 2 == 0 { 0 } else { 5 }),
        };
        let target_union = match self.union_kind {
            0..=7 => Some(matched),
            8 => None,
            _ => Some(match matched {
                TargetUnion::Value(_) => TargetUnion::Version(self.int),
                _ => TargetUnion::Value(self.value.clone()),
            }),
        };
        Compare {
            result: self.result,
            target: self.target,
            key: self.key.clone(),
            target_union,
            range_end: self.range_end.clone(),
        }
    }
}

#[derive(Clone, Debug)]
enum TOp {
    Range(RangeT),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnT),
    Empty,
}

#[derive(Clone, Debug)]
struct TxnT {
    compare: Vec<CompareT>,
    success: Vec<TOp>,
    failure: Vec<TOp>,
}

impl TxnT {
    fn build(&self, cur: i64) -> TxnRequest {
        let ops = |v: &[TOp]| -> Vec<RequestOp> {
            v.iter()
                .map(|op| RequestOp {
                    request: match op {
                        TOp::Range(r) => Some(Request::RequestRange(r.build(cur))),
                        TOp::Put(p) => Some(Request::RequestPut(p.clone())),
                        TOp::Delete(d) => Some(Request::RequestDeleteRange(d.clone())),
                        TOp::Txn(t) => Some(Request::RequestTxn(t.build(cur))),
                        TOp::Empty => None,
                    },
                })
                .collect()
        };
        TxnRequest {
            compare: self.compare.iter().map(|c| c.build(cur)).collect(),
            success: ops(&self.success),
            failure: ops(&self.failure),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeT),
    Txn(TxnT),
    /// Revision `max(rev.at(current), 0)`, or -1 for `Rev::Neg`; optionally
    /// wait for physical compaction afterwards.
    Compact {
        rev: Rev,
        wait: bool,
    },
    Reopen,
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseCheckpoint(LeaseCheckpointRequest),
    /// Stream a snapshot and restore it into a new store on a fresh engine
    /// (`fresh`) or back into the same store, which then carries on.
    Snapshot {
        fresh: bool,
    },
}

const KEYS: &[&[u8]] = &[b"a", b"ab", b"b", b"b\0", b"c", b"d", b"\0"];
const ENDS: &[&[u8]] = &[b"a", b"ab", b"b", b"b\0", b"b\x01", b"c", b"d", b"e", b"\xff"];
const VALUES: &[&[u8]] = &[b"", b"v1", b"v2", b"w"];

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        60 => prop::sample::select(KEYS).prop_map(|k| k.to_vec()),
        1 => Just(Vec::new()),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(VALUES).prop_map(|v| v.to_vec())
}

fn prefix_end(k: &[u8]) -> Vec<u8> {
    let mut e = k.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return e;
        }
    }
    vec![0]
}

/// `(key, range_end)`: single keys, ranges (some inverted), prefixes, from-key
/// and everything.
fn key_range() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        4 => key().prop_map(|k| (k, Vec::new())),
        3 => (key(), prop::sample::select(ENDS)).prop_map(|(k, e)| (k, e.to_vec())),
        1 => key().prop_map(|k| (k, vec![0])),
        1 => key().prop_map(|k| { let e = prefix_end(&k); (k, e) }),
        1 => Just((vec![0], vec![0])),
    ]
}

const WIDE_STARTS: &[&[u8]] = &[b"a", b"ab", b"b", b"\0"];
const WIDE_ENDS: &[&[u8]] = &[b"c", b"d", b"e", b"\xff"];
const FROM_KEYS: &[&[u8]] = &[b"a", b"b", b"\0"];

/// Ranges likely to hold several keys.
fn wide_range() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        2 => (prop::sample::select(WIDE_STARTS), prop::sample::select(WIDE_ENDS))
            .prop_map(|(k, e)| (k.to_vec(), e.to_vec())),
        1 => Just((b"a".to_vec(), b"b".to_vec())),
        1 => Just((b"b".to_vec(), b"c".to_vec())),
        1 => prop::sample::select(FROM_KEYS).prop_map(|k| (k.to_vec(), vec![0])),
        2 => Just((vec![0], vec![0])),
    ]
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        value(),
        prop_oneof![12 => Just(0i64), 2 => Just(5i64), 1 => Just(6i64)],
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(key, mut value, lease, prev_kv, ignore_value, ignore_lease, keep_value)| {
                if ignore_value && !keep_value {
                    value.clear();
                }
                PutRequest {
                    key,
                    value,
                    lease,
                    prev_kv,
                    ignore_value,
                    ignore_lease,
                }
            },
        )
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (key_range(), any::<bool>()).prop_map(|((key, range_end), prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn read_rev() -> impl Strategy<Value = Rev> {
    prop_oneof![
        6 => Just(Rev::Zero),
        1 => (1..3i64).prop_map(Rev::Neg),
        2 => (1..8i64).prop_map(Rev::Abs),
        4 => (0..6i64).prop_map(Rev::Back),
        1 => (1..3i64).prop_map(Rev::Ahead),
    ]
}

fn filter_rev() -> impl Strategy<Value = Rev> {
    prop_oneof![
        30 => Just(Rev::Zero),
        1 => (0..5i64).prop_map(Rev::Back),
        1 => (1..8i64).prop_map(Rev::Abs),
    ]
}

fn range_t() -> impl Strategy<Value = RangeT> {
    (
        prop_oneof![1 => key_range(), 2 => wide_range()],
        prop_oneof![3 => Just(0i64), 4 => 1..3i64, 1 => 3..5i64, 1 => Just(-1i64)],
        read_rev(),
        prop_oneof![1 => Just((0, 0)), 3 => (0..3i32, 0..5i32)],
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        (filter_rev(), filter_rev(), filter_rev(), filter_rev()),
    )
        .prop_map(
            |((key, range_end), limit, revision, (sort_order, sort_target), keys_only, count_only, f)| RangeT {
                key,
                range_end,
                limit,
                revision,
                sort_order,
                sort_target,
                keys_only,
                count_only,
                min_mod: f.0,
                max_mod: f.1,
                min_create: f.2,
                max_create: f.3,
            },
        )
}

fn compare_t() -> impl Strategy<Value = CompareT> {
    (
        prop_oneof![4 => key().prop_map(|k| (k, Vec::new())), 1 => key_range()],
        0..5i32,
        0..4i32,
        0..10u8,
        0..4i64,
        prop_oneof![3 => (0..5i64).prop_map(Rev::Back), 1 => (0..6i64).prop_map(Rev::Abs)],
        value(),
    )
        .prop_map(
            |((key, range_end), target, result, union_kind, int, rev, value)| CompareT {
                key,
                range_end,
                target,
                result,
                union_kind,
                int,
                rev,
                value,
            },
        )
}

fn txn_t(depth: u32) -> BoxedStrategy<TxnT> {
    let leaf = prop_oneof![
        40 => range_t().prop_map(TOp::Range),
        50 => put_req().prop_map(TOp::Put),
        20 => delete_req().prop_map(TOp::Delete),
        1 => Just(TOp::Empty),
    ];
    let op: BoxedStrategy<TOp> = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![6 => leaf, 1 => txn_t(depth - 1).prop_map(TOp::Txn)].boxed()
    };
    (
        prop::collection::vec(compare_t(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnT {
            compare,
            success,
            failure,
        })
        .boxed()
}

/// A txn that writes a key and then runs a nested txn comparing that key,
/// which must still see the value from before the outer txn.
fn write_then_nested_compare() -> impl Strategy<Value = TxnT> {
    (
        prop_oneof![3 => put_req().prop_map(TOp::Put), 1 => delete_req().prop_map(TOp::Delete)],
        compare_t(),
        txn_t(0),
        prop::collection::vec(range_t().prop_map(TOp::Range), 0..2),
    )
        .prop_map(|(write, mut cmp, mut inner, reads)| {
            match &write {
                TOp::Put(p) => {
                    cmp.key = p.key.clone();
                    cmp.range_end.clear();
                }
                TOp::Delete(d) => {
                    cmp.key = d.key.clone();
                    cmp.range_end = d.range_end.clone();
                }
                _ => unreachable!(),
            }
            inner.compare = vec![cmp];
            let mut success = vec![write, TOp::Txn(inner)];
            success.extend(reads);
            TxnT {
                compare: Vec::new(),
                success,
                failure: Vec::new(),
            }
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => put_req().prop_map(Op::Put),
        2 => delete_req().prop_map(Op::Delete),
        6 => range_t().prop_map(Op::Range),
        5 => txn_t(2).prop_map(Op::Txn),
        1 => write_then_nested_compare().prop_map(Op::Txn),
        2 => (
            prop_oneof![
                4 => (0..4i64).prop_map(Rev::Back),
                2 => (0..10i64).prop_map(Rev::Abs),
                1 => Just(Rev::Neg(1)),
                1 => (1..3i64).prop_map(Rev::Ahead),
            ],
            any::<bool>(),
        )
            .prop_map(|(rev, wait)| Op::Compact { rev, wait }),
        1 => Just(Op::Reopen),
        1 => any::<bool>().prop_map(|fresh| Op::Snapshot { fresh }),
        2 => (prop_oneof![1 => Just(0i64), 4 => Just(5i64), 3 => Just(6i64)], 1..100i64)
            .prop_map(|(id, ttl)| Op::LeaseGrant(LeaseGrantRequest { id, ttl })),
        1 => prop_oneof![Just(5i64), Just(6i64), Just(7i64)].prop_map(|id| Op::LeaseRevoke(LeaseRevokeRequest { id })),
        1 => prop::collection::vec((5..8i64, 0..100i64), 0..3).prop_map(|cps| {
            Op::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: cps
                    .into_iter()
                    .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                    .collect(),
            })
        }),
    ]
}

/// A generated sequence; its Debug output (which proptest prints for the
/// minimal failing case) shows byte strings as `b"..."`.
#[derive(Clone)]
struct Ops(Vec<Op>);

impl Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&bytes_as_strings(&format!("{:#?}", self.0)))
    }
}

/// A few puts to start from a populated store, then anything.
fn ops() -> impl Strategy<Value = Ops> {
    (
        prop::collection::vec(put_req().prop_map(Op::Put), 0..6),
        prop::collection::vec(op(), 1..36),
    )
        .prop_map(|(mut seed, rest)| {
            seed.extend(rest);
            Ops(seed)
        })
}

/// Rewrites every non-empty `[n, n, ...]` list of bytes in Debug output as
/// `b"..."`, so keys and values in failure messages are readable.
fn bytes_as_strings(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let bytes = after.find(']').and_then(|close| {
            let inner = &after[..close];
            let nums: Vec<&str> = inner.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
            let parsed: Option<Vec<u8>> = nums.iter().map(|t| t.parse::<u8>().ok()).collect();
            parsed.filter(|b| !b.is_empty()).map(|b| (b, close))
        });
        match bytes {
            Some((b, close)) => {
                out.push_str(&format!("b\"{}\"", b.escape_ascii()));
                rest = &after[close + 1..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// Running a sequence
// ---------------------------------------------------------------------------

/// Runs a write through the pre-apply checks (store's and model's must agree),
/// then through store and model, and compares everything.
fn write(
    h: &mut Harness,
    model: &mut Model,
    req: WriteRequest,
    validation: (Result<(), StorageError>, Result<(), StorageError>),
) {
    h.log.push(format!("#{} apply {req:?}", h.log.len()));
    let (store_check, model_check) = validation;
    h.expect_eq("pre-apply check", &store_check, &model_check);
    if store_check.is_err() {
        // Rejected before the log: nothing happens.
        return;
    }
    let before = model.rev;
    let applied = h.apply(&req);
    let (result, events) = model.apply(&req);
    h.expect_eq("apply result", &applied.result, &result);
    h.expect_eq("revision after apply", applied.revision, model.rev);
    h.expect_eq("events", &applied.events, &events);
    if result.is_err() {
        h.expect_eq("revision after a failed request", model.rev, before);
    }
}

fn run_op(h: &mut Harness, model: &mut Model, op: &Op) {
    let cur = model.rev;
    match op {
        Op::Put(p) => {
            let v = (validate::check_put(p), m_check_put(p));
            write(h, model, WriteRequest::Put(p.clone()), v);
        }
        Op::Delete(d) => {
            let v = (validate::check_delete(d), m_check_delete(d));
            write(h, model, WriteRequest::DeleteRange(d.clone()), v);
        }
        Op::Txn(t) => {
            let t = t.build(cur);
            let v = (validate::check_txn(&t, MAX_TXN_OPS), m_check_txn(&t));
            write(h, model, WriteRequest::Txn(t), v);
        }
        Op::Range(r) => {
            let r = r.build(cur);
            h.log.push(format!("#{} range {r:?}", h.log.len()));
            h.expect_eq("range check", validate::check_range(&r), m_check_range(&r));
            if validate::check_range(&r).is_ok() {
                h.expect_eq("range", h.store().range(&r), model.range(&r));
            }
        }
        Op::Compact { rev, wait } => {
            let revision = match rev {
                Rev::Neg(_) => -1,
                r => r.at(cur).max(0),
            };
            write(
                h,
                model,
                WriteRequest::Compact(CompactionRequest {
                    revision,
                    physical: *wait,
                }),
                (Ok(()), Ok(())),
            );
            if *wait && model.first_rev == revision {
                h.log.push(format!("#{} wait_compacted({revision})", h.log.len()));
                h.wait_compacted(revision);
            }
        }
        Op::LeaseGrant(g) => write(h, model, WriteRequest::LeaseGrant(g.clone()), (Ok(()), Ok(()))),
        Op::LeaseRevoke(r) => write(h, model, WriteRequest::LeaseRevoke(r.clone()), (Ok(()), Ok(()))),
        Op::LeaseCheckpoint(c) => write(h, model, WriteRequest::LeaseCheckpoint(c.clone()), (Ok(()), Ok(()))),
        Op::Reopen => {
            h.log.push(format!("#{} reopen", h.log.len()));
            h.reopen();
        }
        Op::Snapshot { fresh } => {
            h.log.push(format!("#{} snapshot and restore (fresh: {fresh})", h.log.len()));
            h.snapshot_restore(*fresh);
        }
    }
    h.check_history(model);
}

fn run_sequence(h: &mut Harness, ops: &[Op]) -> Model {
    let mut model = Model::new();
    h.check_history(&model);
    for op in ops {
        run_op(h, &mut model, op);
    }
    // A final restart and a full physical compaction must not change any answer.
    h.reopen();
    h.check_history(&model);
    if model.first_rev >= 0 {
        h.wait_compacted(model.first_rev);
        h.check_history(&model);
    }
    model
}

/// `cases` unless PROPTEST_CASES asks for more (or fewer), e.g. for a soak run.
fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        // Keep the source tree clean; the failing input and the request log
        // are printed, and PROPTEST_RNG_SEED reproduces a run.
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn store_matches_model_mem(ops in ops()) {
        let mut h = Harness::mem(test_config());
        run_sequence(&mut h, &ops.0);
    }
}

proptest! {
    #![proptest_config(proptest_config(32))]

    /// The same sequence on RocksDB and on the in-memory engine.
    #[test]
    fn store_matches_model_rocksdb(ops in ops()) {
        let mut rocks = Harness::rocks(test_config());
        run_sequence(&mut rocks, &ops.0);
        let mut mem = Harness::mem(test_config());
        run_sequence(&mut mem, &ops.0);
    }
}

// ---------------------------------------------------------------------------
// Targeted tests
// ---------------------------------------------------------------------------

fn put(key: &str, value: &str) -> WriteRequest {
    WriteRequest::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn get_at(key: &str, revision: i64) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        revision,
        ..Default::default()
    }
}

fn everything_at(revision: i64) -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..Default::default()
    }
}

fn is_corruption<T: Debug>(r: &Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::Corruption(_)))
}

#[test]
fn corrupted_records_are_detected() {
    let engine = Arc::new(MemEngine::new());
    let store = Store::open(engine.clone(), test_config()).unwrap();
    for (i, req) in [put("a", "v1"), put("b", "v2"), put("a", "v3"), put("c", "v4")]
        .iter()
        .enumerate()
    {
        store.apply(i as u64 + 1, req).unwrap().result.unwrap();
    }
    // Revisions: a@2, b@3, a@4, c@5.
    let rec = |main: i64| {
        let k = Revision::new(main, 0).to_key();
        // The documented layout: 16-byte big-endian (main, sub).
        let mut manual = [0u8; 16];
        manual[..8].copy_from_slice(&(main as u64).to_be_bytes());
        assert_eq!(k, manual);
        k
    };

    // One flipped bit in a's first version.
    let mut bytes = engine.get(Keyspace::Kv, &rec(2)).unwrap().expect("stored");
    *bytes.last_mut().unwrap() ^= 0x01;
    engine.corrupt(Keyspace::Kv, &rec(2), bytes);
    // A valid record, but under the wrong key: the checksum covers the key.
    let moved = engine.get(Keyspace::Kv, &rec(4)).unwrap().expect("stored");
    engine.corrupt(Keyspace::Kv, &rec(3), moved);

    // Reads that don't touch the damaged records still work.
    assert_eq!(store.range(&get_at("a", 0)).unwrap().kvs[0].value, b"v3");
    assert_eq!(store.range(&get_at("c", 0)).unwrap().kvs[0].value, b"v4");
    // Reads that do report corruption.
    assert!(
        is_corruption(&store.range(&get_at("a", 2))),
        "{:?}",
        store.range(&get_at("a", 2))
    );
    assert!(is_corruption(&store.range(&get_at("b", 0))));
    assert!(is_corruption(&store.range(&everything_at(3))));
    assert!(is_corruption(&store.range(&everything_at(0))));
    // count_only never fetches records, so it still answers.
    let count = store
        .range(&RangeRequest {
            count_only: true,
            ..everything_at(0)
        })
        .unwrap();
    assert_eq!(count.count, 3);

    // A write that has to read a damaged record fails fatally and the store
    // refuses all further work.
    let txn = WriteRequest::Txn(TxnRequest {
        compare: vec![Compare {
            key: b"b".to_vec(),
            target: CompareTarget::Value as i32,
            target_union: Some(TargetUnion::Value(b"v2".to_vec())),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: b"d".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    });
    let err = store.apply(5, &txn).unwrap_err();
    assert!(matches!(err, StorageError::Corruption(_)), "{err:?}");
    assert!(err.is_fatal());
    assert!(matches!(store.range(&get_at("a", 0)), Err(StorageError::Engine(_))));
    assert!(store.apply(6, &put("e", "x")).is_err());
    store.close().unwrap();
    drop(store);

    // Rebuilding the index at open reads every record, so open fails.
    let reopened = Store::open(engine.clone(), test_config());
    assert!(
        matches!(reopened, Err(StorageError::Corruption(_))),
        "{:?}",
        reopened.as_ref().err()
    );

    // A record shorter than its checksum is corruption too.
    let engine = Arc::new(MemEngine::new());
    let store = Store::open(engine.clone(), test_config()).unwrap();
    store.apply(1, &put("a", "v1")).unwrap().result.unwrap();
    engine.corrupt(Keyspace::Kv, &rec(2), vec![1, 2]);
    assert!(is_corruption(&store.range(&get_at("a", 0))));
}

/// Builds a long history, compacts without waiting and restarts while the
/// compactor is still deleting; the reopened store must resume the compaction
/// and answer exactly as before.
fn interrupted_compaction(mut h: Harness) {
    let mut model = Model::new();
    let keys = ["a", "ab", "b", "c"];
    for i in 0..40usize {
        let req = if i % 7 == 6 {
            WriteRequest::DeleteRange(DeleteRangeRequest {
                key: keys[i % 4].into(),
                range_end: prefix_end(keys[i % 4].as_bytes()),
                prev_kv: true,
            })
        } else {
            put(keys[i % 4], &format!("v{i}"))
        };
        write(&mut h, &mut model, req, (Ok(()), Ok(())));
    }
    h.check_history(&model);
    let records_before = h.kv_records();

    let at = model.rev - 5;
    write(
        &mut h,
        &mut model,
        WriteRequest::Compact(CompactionRequest {
            revision: at,
            physical: false,
        }),
        (Ok(()), Ok(())),
    );
    // Stop while the compactor is mid-way (one revision per batch, 20 ms apart).
    std::thread::sleep(Duration::from_millis(30));
    h.close();
    h.open();
    let records_after_stop = h.kv_records();
    assert!(records_after_stop <= records_before);
    h.check_history(&model);

    // The compaction counts as done for requests even though it is unfinished on disk.
    write(
        &mut h,
        &mut model,
        WriteRequest::Compact(CompactionRequest {
            revision: at,
            physical: false,
        }),
        (Ok(()), Ok(())),
    );
    // Writes continue at the next revision while compaction resumes.
    write(&mut h, &mut model, put("a", "after"), (Ok(()), Ok(())));
    h.check_history(&model);

    // Restart a second time, still before it can have finished.
    h.reopen();
    h.check_history(&model);
    h.wait_compacted(at);
    let records_done = h.kv_records();
    assert!(
        records_done < records_after_stop,
        "[{}] {records_done} vs {records_after_stop}",
        h.name
    );
    h.check_history(&model);
    // What is left: one record per key live at `at`, the last put and the
    // tombstone of each key deleted exactly at `at` (a watch from `at` must
    // see that delete), and everything after it.
    let live_at_compaction = model.state_at(at).len();
    let deleted_at_compaction = model
        .history
        .iter()
        .filter(|c| c.main == at && c.put.is_none())
        .count();
    let newer = model.history.iter().filter(|c| c.main > at).count();
    assert_eq!(
        records_done,
        live_at_compaction + 2 * deleted_at_compaction + newer,
        "[{}] records after full compaction",
        h.name
    );

    h.reopen();
    h.check_history(&model);
}

fn slow_compaction_config() -> StoreConfig {
    StoreConfig {
        compaction_batch_limit: 1,
        compaction_sleep: Duration::from_millis(20),
        sync_writes: false,
    }
}

#[test]
fn reopen_during_compaction_mem() {
    interrupted_compaction(Harness::mem(slow_compaction_config()));
}

#[test]
fn reopen_during_compaction_rocksdb() {
    interrupted_compaction(Harness::rocks(slow_compaction_config()));
}

/// etcd's top-level Put looks up the lease before it looks at the key, so a
/// put with a lease that does not exist fails with LeaseNotFound even when
/// `ignore_value` names a missing key (inside a txn the order is reversed).
#[test]
fn put_checks_lease_before_key() {
    let mut h = Harness::mem(test_config());
    let mut model = Model::new();
    let p = PutRequest {
        key: b"a".to_vec(),
        lease: 7,
        ignore_value: true,
        ..Default::default()
    };
    write(
        &mut h,
        &mut model,
        WriteRequest::Put(p.clone()),
        (validate::check_put(&p), m_check_put(&p)),
    );
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestPut(p)),
        }],
        ..Default::default()
    };
    let v = (validate::check_txn(&txn, MAX_TXN_OPS), m_check_txn(&txn));
    write(&mut h, &mut model, WriteRequest::Txn(txn), v);
}

/// etcd's txn `checkRange` rejects any revision below `compactMainRev`,
/// which is -1 before the first compaction: so -2 is "compacted" even on a
/// fresh store, and any negative revision is once something was compacted.
#[test]
fn txn_range_with_negative_revision() {
    let mut h = Harness::mem(test_config());
    let mut model = Model::new();
    let txn_reading = |revision: i64| TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: b"a".to_vec(),
                revision,
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    write(&mut h, &mut model, put("a", "1"), (Ok(()), Ok(())));
    for rev in [-1, -2] {
        write(
            &mut h,
            &mut model,
            WriteRequest::Txn(txn_reading(rev)),
            (Ok(()), Ok(())),
        );
    }
    write(
        &mut h,
        &mut model,
        WriteRequest::Compact(CompactionRequest {
            revision: 2,
            physical: false,
        }),
        (Ok(()), Ok(())),
    );
    for rev in [-1, -2] {
        write(
            &mut h,
            &mut model,
            WriteRequest::Txn(txn_reading(rev)),
            (Ok(()), Ok(())),
        );
    }
    // Top-level reads at negative revisions read the latest revision.
    let r = get_at("a", -3);
    h.expect_eq("range at -3", h.store().range(&r), model.range(&r));
}

/// Writes inside one txn: later ops see earlier ones; a nested txn's compare
/// sees the state before the outer txn; a put followed by a nested delete of
/// the same key (which etcd's duplicate check allows) leaves it deleted.
#[test]
fn txn_sees_its_own_writes() {
    let mut h = Harness::mem(test_config());
    let mut model = Model::new();
    write(&mut h, &mut model, put("a", "1"), (Ok(()), Ok(())));
    let op = |r: Request| RequestOp { request: Some(r) };
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            op(Request::RequestTxn(TxnRequest {
                success: vec![op(Request::RequestPut(PutRequest {
                    key: b"b".to_vec(),
                    value: b"x".to_vec(),
                    ..Default::default()
                }))],
                ..Default::default()
            })),
            op(Request::RequestRange(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })),
            op(Request::RequestTxn(TxnRequest {
                // "b" did not exist when the outer txn started.
                compare: vec![Compare {
                    key: b"b".to_vec(),
                    target: CompareTarget::Version as i32,
                    ..Default::default()
                }],
                success: vec![op(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: b"a".to_vec(),
                    range_end: vec![0],
                    prev_kv: true,
                }))],
                ..Default::default()
            })),
            op(Request::RequestRange(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: 2,
                ..Default::default()
            })),
        ],
        failure: vec![],
    };
    let v = (validate::check_txn(&txn, MAX_TXN_OPS), m_check_txn(&txn));
    assert_eq!(v.0, Ok(()));
    write(&mut h, &mut model, WriteRequest::Txn(txn), v);
    h.check_history(&model);
    assert_eq!(model.rev, 3);
    assert!(model.state_at(3).is_empty());
    h.reopen();
    h.check_history(&model);
}

/// A from-key delete (range_end "\0") followed by a put of a key it removed:
/// a plain put is accepted (as etcd does, reading "\0" literally), a put with
/// `ignore_value` is rejected up front (etcd 3.6 accepts it and then panics).
#[test]
fn ignore_value_put_after_from_key_delete_in_one_txn() {
    let mut h = Harness::mem(test_config());
    let mut model = Model::new();
    write(&mut h, &mut model, put("b", "old"), (Ok(()), Ok(())));
    let op = |r: Request| RequestOp { request: Some(r) };
    let txn = |ignore_value: bool| TxnRequest {
        compare: vec![],
        success: vec![
            op(Request::RequestDeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: vec![0],
                prev_kv: true,
            })),
            op(Request::RequestPut(PutRequest {
                key: b"b".to_vec(),
                value: if ignore_value { vec![] } else { b"new".to_vec() },
                ignore_value,
                prev_kv: true,
                ..Default::default()
            })),
        ],
        failure: vec![],
    };
    let rejected = txn(true);
    let v = (validate::check_txn(&rejected, MAX_TXN_OPS), m_check_txn(&rejected));
    assert_eq!(v, (Err(StorageError::DuplicateKey), Err(StorageError::DuplicateKey)));

    let accepted = txn(false);
    let v = (validate::check_txn(&accepted, MAX_TXN_OPS), m_check_txn(&accepted));
    assert_eq!(v.0, Ok(()));
    write(&mut h, &mut model, WriteRequest::Txn(accepted), v);
    let b = model
        .state_at(model.rev)
        .remove(&b"b".to_vec())
        .expect("b was written again");
    assert_eq!((b.value.as_slice(), b.version, b.create_revision), (&b"new"[..], 1, 3));
    h.check_history(&model);
}

fn grant(id: i64, ttl: i64) -> WriteRequest {
    WriteRequest::LeaseGrant(LeaseGrantRequest { id, ttl })
}

fn revoke(id: i64) -> WriteRequest {
    WriteRequest::LeaseRevoke(LeaseRevokeRequest { id })
}

fn put_leased(key: &str, value: &str, lease: i64) -> WriteRequest {
    WriteRequest::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..Default::default()
    })
}

fn lease_keys(h: &Harness, id: i64) -> Option<Vec<&'static str>> {
    h.store().lease(id).map(|l| {
        l.keys
            .into_iter()
            .map(|k| &*String::from_utf8(k).unwrap().leak())
            .collect()
    })
}

/// The deterministic half of leases, step by step, on one engine; every
/// write is also checked against the model (responses, revisions, events,
/// the whole history and every lease's state).
fn lease_lifecycle(mut h: Harness) {
    let mut model = Model::new();
    let w = |h: &mut Harness, model: &mut Model, req: WriteRequest| {
        write(h, model, req, (Ok(()), Ok(())));
        h.check_history(model);
    };

    // Grants: id 0 is "no lease", a second grant of an id is refused.
    let g = h.apply(&grant(1, 30));
    assert_eq!(
        g.result,
        Ok(WriteResponse::LeaseGrant(LeaseGrantResponse {
            header: hdr(1),
            id: 1,
            ttl: 30,
            error: String::new()
        }))
    );
    assert_eq!(g.revision, 1, "a grant does not change the revision");
    assert_eq!(model.apply(&grant(1, 30)).0, g.result);
    assert_eq!(h.apply(&grant(1, 60)).result, Err(StorageError::LeaseExists));
    assert_eq!(h.apply(&grant(0, 60)).result, Err(StorageError::LeaseNotFound));
    w(&mut h, &mut model, grant(2, 60));
    assert_eq!(
        h.store().lease(1),
        Some(LeaseInfo { id: 1, ttl: 30, remaining_ttl: 0, keys: vec![] })
    );

    // A put naming a missing lease changes nothing.
    let before = h.store().current_revision();
    let r = h.apply(&put_leased("a", "x", 9));
    assert_eq!((r.result, r.revision, r.events.len()), (Err(StorageError::LeaseNotFound), before, 0));

    // Puts attach; a re-put moves or detaches; ignore_lease keeps the lease.
    w(&mut h, &mut model, put_leased("c", "1", 1));
    w(&mut h, &mut model, put_leased("a", "1", 1));
    w(&mut h, &mut model, put_leased("b", "1", 2));
    w(&mut h, &mut model, put_leased("d", "1", 1));
    assert_eq!(lease_keys(&h, 1), Some(vec!["a", "c", "d"]));
    let kv = h.store().range(&get_at("a", 0)).unwrap().kvs.remove(0);
    assert_eq!(kv.lease, 1);
    w(&mut h, &mut model, put_leased("d", "2", 2));
    w(&mut h, &mut model, put("b", "2"));
    assert_eq!(lease_keys(&h, 1), Some(vec!["a", "c"]));
    assert_eq!(lease_keys(&h, 2), Some(vec!["d"]));
    let keep = WriteRequest::Put(PutRequest {
        key: b"c".to_vec(),
        value: b"3".to_vec(),
        ignore_lease: true,
        ..Default::default()
    });
    w(&mut h, &mut model, keep);
    assert_eq!(h.store().range(&get_at("c", 0)).unwrap().kvs[0].lease, 1);
    assert_eq!(lease_keys(&h, 1), Some(vec!["a", "c"]));

    // A txn put attaches (and checks its lease, after the key).
    let op = |r: Request| RequestOp { request: Some(r) };
    let txn = TxnRequest {
        success: vec![
            op(Request::RequestPut(PutRequest {
                key: b"e".to_vec(),
                lease: 1,
                ..Default::default()
            })),
            op(Request::RequestPut(PutRequest {
                key: b"f".to_vec(),
                lease: 2,
                ..Default::default()
            })),
        ],
        ..Default::default()
    };
    w(&mut h, &mut model, WriteRequest::Txn(txn));
    let bad_txn = TxnRequest {
        success: vec![op(Request::RequestPut(PutRequest {
            key: b"g".to_vec(),
            lease: 9,
            ..Default::default()
        }))],
        ..Default::default()
    };
    assert_eq!(h.apply(&WriteRequest::Txn(bad_txn)).result, Err(StorageError::LeaseNotFound));
    assert_eq!(lease_keys(&h, 1), Some(vec!["a", "c", "e"]));
    assert_eq!(lease_keys(&h, 2), Some(vec!["d", "f"]));

    // Deleting detaches.
    let del = WriteRequest::DeleteRange(DeleteRangeRequest {
        key: b"f".to_vec(),
        ..Default::default()
    });
    w(&mut h, &mut model, del);
    assert_eq!(lease_keys(&h, 2), Some(vec!["d"]));

    // Checkpoints record the remaining TTL (unknown ids ignored, last wins).
    let cp = WriteRequest::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![
            LeaseCheckpoint { id: 1, remaining_ttl: 20 },
            LeaseCheckpoint { id: 42, remaining_ttl: 5 },
            LeaseCheckpoint { id: 1, remaining_ttl: 17 },
        ],
    });
    let rev = h.store().current_revision();
    let c = h.apply(&cp);
    assert_eq!(
        (c.result.clone(), c.revision),
        (Ok(WriteResponse::LeaseCheckpoint(LeaseCheckpointResponse { header: hdr(rev) })), rev)
    );
    assert_eq!(model.apply(&cp).0, c.result);
    assert_eq!(h.store().lease(1).unwrap().remaining_ttl, 17);
    w(&mut h, &mut model, grant(3, 5));

    // Everything survives a restart and snapshots.
    let leases = h.store().leases();
    assert_eq!(
        leases,
        vec![
            LeaseInfo { id: 1, ttl: 30, remaining_ttl: 17, keys: vec![] },
            LeaseInfo { id: 2, ttl: 60, remaining_ttl: 0, keys: vec![] },
            LeaseInfo { id: 3, ttl: 5, remaining_ttl: 0, keys: vec![] },
        ]
    );
    h.reopen();
    h.check_history(&model);
    h.snapshot_restore(true);
    h.check_history(&model);
    assert_eq!(lease_keys(&h, 1), Some(vec!["a", "c", "e"]));

    // Revoke: every attached key deleted in one revision, in key order.
    let rev = h.store().current_revision();
    let r = h.apply(&revoke(1));
    assert_eq!(
        r.result,
        Ok(WriteResponse::LeaseRevoke(LeaseRevokeResponse { header: hdr(rev + 1) }))
    );
    assert_eq!(r.revision, rev + 1);
    let events: Vec<(i32, Vec<u8>, i64)> = r
        .events
        .iter()
        .map(|e| (e.r#type, e.kv.as_ref().unwrap().key.clone(), e.kv.as_ref().unwrap().mod_revision))
        .collect();
    let del = EventType::Delete as i32;
    assert_eq!(
        events,
        vec![(del, b"a".to_vec(), rev + 1), (del, b"c".to_vec(), rev + 1), (del, b"e".to_vec(), rev + 1)]
    );
    let (model_result, model_events) = model.apply(&revoke(1));
    assert_eq!((r.result.clone(), r.events.clone()), (model_result, model_events));
    h.check_history(&model);
    assert_eq!(h.store().lease(1), None);
    assert_eq!(h.apply(&revoke(1)).result, Err(StorageError::LeaseNotFound));
    assert_eq!(h.store().current_revision(), rev + 1);
    // The key left on lease 2 goes; lease 3 has none: the revision stays.
    w(&mut h, &mut model, revoke(2));
    assert_eq!(h.store().current_revision(), rev + 2);
    let r = h.apply(&revoke(3));
    assert_eq!((r.revision, r.events.len()), (rev + 2, 0));
    assert_eq!(
        r.result,
        Ok(WriteResponse::LeaseRevoke(LeaseRevokeResponse { header: hdr(rev + 2) }))
    );
    assert_eq!(model.apply(&revoke(3)), (r.result, r.events));
    assert!(h.store().leases().is_empty());
    // A revoked id can be granted again, and the state survives all the way.
    w(&mut h, &mut model, grant(1, 10));
    w(&mut h, &mut model, put_leased("z", "1", 1));
    h.snapshot_restore(false);
    h.check_history(&model);
    h.reopen();
    h.check_history(&model);
    assert_eq!(lease_keys(&h, 1), Some(vec!["z"]));
}

#[test]
fn lease_lifecycle_mem() {
    lease_lifecycle(Harness::mem(test_config()));
}

#[test]
fn lease_lifecycle_rocksdb() {
    lease_lifecycle(Harness::rocks(test_config()));
}
