//! Execution of write requests against the store's state: the deterministic
//! heart of `apply`. A [`WriteTxn`] reads the state as of the revision the
//! request starts from, records every change at the next revision in the
//! in-memory index and in a pending list, and hands the caller a write batch.
//! Nothing it records is visible to readers until the caller publishes the new
//! revision, after the batch is durable.

use std::cmp::Ordering;
use std::collections::HashMap;

use cairn_api::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::{event::EventType, Event, KeyValue};

use crate::engine::{Engine, Keyspace};
use crate::error::StorageError;
use crate::index::{KeyRange, TreeIndex};
use crate::lease::Leases;
use crate::record::{KvRecord, RecordKind};
use crate::revision::Revision;

/// Reads the records behind `revs` from the engine, verifying each.
pub(crate) fn fetch_records(engine: &dyn Engine, revs: &[Revision]) -> Result<Vec<Option<KeyValue>>, StorageError> {
    let keys: Vec<Vec<u8>> = revs.iter().map(|r| r.to_key().to_vec()).collect();
    let values = engine.multi_get(Keyspace::Kv, &keys)?;
    keys.iter()
        .zip(values)
        .map(|(k, v)| match v {
            None => Ok(None),
            Some(v) => KvRecord::decode(k, &v).map(|rec| Some(rec.kv)),
        })
        .collect()
}

/// The revision a range reads at and how many revisions to collect from the
/// index, after etcd's checks.
pub(crate) struct RangePlan {
    pub at: i64,
    /// 0 = all.
    pub collect: usize,
}

pub(crate) fn plan_range(req: &RangeRequest, current: i64, compacted: i64) -> Result<RangePlan, StorageError> {
    let at = if req.revision <= 0 { current } else { req.revision };
    if at > current {
        return Err(StorageError::FutureRev);
    }
    if at < compacted {
        return Err(StorageError::Compacted);
    }
    let default_order = req.sort_order == SortOrder::None as i32
        || (req.sort_target == SortTarget::Key as i32 && req.sort_order == SortOrder::Ascend as i32);
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Sorting or filtering needs every key; otherwise one extra tells `more`.
    let collect = if req.limit <= 0 || !default_order || filtered || req.count_only {
        0
    } else {
        usize::try_from(req.limit).unwrap_or(usize::MAX - 1).saturating_add(1)
    };
    Ok(RangePlan { at, collect })
}

/// Collects `(key revision)`s in the request's range at `plan.at`, and the
/// total number of keys there.
pub(crate) fn collect_range(index: &TreeIndex, req: &RangeRequest, plan: &RangePlan) -> (Vec<Revision>, i64) {
    let mut revs = Vec::new();
    let mut count = 0i64;
    index.visit(KeyRange::new(&req.key, &req.range_end), plan.at, |_, rev| {
        count += 1;
        if !req.count_only && (plan.collect == 0 || revs.len() < plan.collect) {
            revs.push(rev);
        }
        true
    });
    (revs, count)
}

/// Applies etcd's filters, sort and limit to fetched key-values.
pub(crate) fn finish_range(req: &RangeRequest, mut kvs: Vec<KeyValue>, count: i64, header_rev: i64) -> RangeResponse {
    if req.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
    }
    if req.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
    }

    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    let keys_ascending = order == SortOrder::None || (target == SortTarget::Key && order == SortOrder::Ascend);
    if !keys_ascending {
        if target == SortTarget::Key {
            kvs.reverse();
        } else {
            let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
                match target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                }
            };
            // Stable sort: ties keep ascending key order, as Go's sort does in practice for etcd's inputs.
            if order == SortOrder::Descend {
                kvs.sort_by(|a, b| cmp(b, a));
            } else {
                kvs.sort_by(cmp);
            }
        }
    }

    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        header: Some(header(header_rev)),
        kvs,
        more,
        count,
    }
}

pub(crate) fn header(revision: i64) -> ResponseHeader {
    ResponseHeader { revision, ..Default::default() }
}

/// Which branch each txn (depth-first, in request order) takes, decided from
/// the state before the txn writes anything, as etcd does.
struct TxnPath {
    succeeded: bool,
    nested: Vec<TxnPath>,
}

/// Records written by earlier requests of a batch that is not in the engine
/// yet: a later request of the batch reads them from here.
pub(crate) type Written = HashMap<Revision, KeyValue>;

pub(crate) struct WriteTxn<'a> {
    engine: &'a dyn Engine,
    written: &'a Written,
    index: &'a mut TreeIndex,
    /// The leases as of `begin` (no request both changes leases and puts).
    leases: &'a Leases,
    begin: i64,
    compacted: i64,
    /// Changes at revision `begin + 1`, in sub-revision order (`changes[i]`
    /// has sub-revision `i`).
    changes: Vec<KvRecord>,
    events: Vec<Event>,
}

impl<'a> WriteTxn<'a> {
    pub fn new(
        engine: &'a dyn Engine,
        written: &'a Written,
        index: &'a mut TreeIndex,
        leases: &'a Leases,
        begin: i64,
        compacted: i64,
    ) -> Self {
        Self { engine, written, index, leases, begin, compacted, changes: Vec::new(), events: Vec::new() }
    }

    /// The revision reads inside this txn see: its own writes once it has any.
    pub fn rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    pub fn into_changes(self) -> (Vec<(Revision, KvRecord)>, Vec<Event>) {
        let main = self.begin + 1;
        let changes = self
            .changes
            .into_iter()
            .enumerate()
            .map(|(i, rec)| (Revision::new(main, i as i64), rec))
            .collect();
        (changes, self.events)
    }

    fn fetch(&self, revs: &[Revision]) -> Result<Vec<KeyValue>, StorageError> {
        let pending = self.begin + 1;
        let in_memory = |r: &Revision| r.main == pending || self.written.contains_key(r);
        let stored: Vec<Revision> = revs.iter().copied().filter(|r| !in_memory(r)).collect();
        let mut from_engine = fetch_records(self.engine, &stored)?.into_iter();
        revs.iter()
            .map(|r| {
                if r.main == pending {
                    Ok(self.changes[r.sub as usize].kv.clone())
                } else if let Some(kv) = self.written.get(r) {
                    Ok(kv.clone())
                } else {
                    from_engine.next().flatten().ok_or_else(|| {
                        StorageError::Corruption(format!("index names revision {r:?} but no record is stored"))
                    })
                }
            })
            .collect()
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        match self.index.get(key, self.rev()) {
            None => Ok(None),
            Some(rev) => Ok(self.fetch(&[rev])?.pop()),
        }
    }

    fn range_kvs(&self, range: KeyRange<'_>, at: i64) -> Result<Vec<KeyValue>, StorageError> {
        let mut revs = Vec::new();
        self.index.visit(range, at, |_, r| {
            revs.push(r);
            true
        });
        self.fetch(&revs)
    }

    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StorageError> {
        let plan = plan_range(req, self.rev(), self.compacted)?;
        let (revs, count) = collect_range(self.index, req, &plan);
        let kvs = self.fetch(&revs)?;
        Ok(finish_range(req, kvs, count, self.rev()))
    }

    fn check_lease(&self, req: &PutRequest) -> Result<(), StorageError> {
        // etcd rejects a put naming a lease it does not hold. (`ignore_lease`
        // with a lease is rejected before proposing; the lease a key keeps
        // exists, since revoking a lease deletes its keys.)
        if req.lease != 0 && !self.leases.contains(req.lease) {
            return Err(StorageError::LeaseNotFound);
        }
        Ok(())
    }

    fn check_prev_exists(&self, req: &PutRequest) -> Result<(), StorageError> {
        if (req.ignore_value || req.ignore_lease) && !self.index.is_live(&req.key) {
            return Err(StorageError::KeyNotFound);
        }
        Ok(())
    }

    /// A plain Put checks its lease before the key (etcd's `Put`), a put inside
    /// a txn the other way round (etcd's `checkPut`).
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, StorageError> {
        self.check_lease(req)?;
        self.check_prev_exists(req)?;
        self.put_checked(req)
    }

    fn put_checked(&mut self, req: &PutRequest) -> Result<PutResponse, StorageError> {
        let prev = if req.prev_kv || req.ignore_value || req.ignore_lease {
            self.get(&req.key)?
        } else {
            None
        };
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let rev = Revision::new(self.begin + 1, self.changes.len() as i64);
        let meta = self.index.put(&req.key, rev);
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: meta.create_revision,
            mod_revision: rev.main,
            version: meta.version,
            value,
            lease,
        };
        self.events.push(Event { r#type: EventType::Put as i32, kv: Some(kv.clone()), prev_kv: None });
        self.changes.push(KvRecord { kind: RecordKind::Put, kv });
        Ok(PutResponse {
            header: Some(header(rev.main)),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, StorageError> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let mut victims: Vec<(Vec<u8>, Revision)> = Vec::new();
        self.index.visit(range, self.rev(), |k, r| {
            victims.push((k.to_vec(), r));
            true
        });
        let prev_kvs = if req.prev_kv {
            let revs: Vec<Revision> = victims.iter().map(|(_, r)| *r).collect();
            self.fetch(&revs)?
        } else {
            Vec::new()
        };
        let deleted = victims.len() as i64;
        for (key, _) in victims {
            let rev = Revision::new(self.begin + 1, self.changes.len() as i64);
            let removed = self.index.tombstone(&key, rev);
            debug_assert!(removed, "visited keys are live");
            let kv = KeyValue { key, mod_revision: rev.main, ..Default::default() };
            self.events.push(Event { r#type: EventType::Delete as i32, kv: Some(kv.clone()), prev_kv: None });
            self.changes.push(KvRecord { kind: RecordKind::Tombstone, kv });
        }
        Ok(DeleteRangeResponse { header: Some(header(self.rev())), deleted, prev_kvs })
    }

    /// Deletes every key attached to lease `id` (which must exist), in key
    /// order, as one revision; returns the revision after. No keys, no new
    /// revision.
    pub fn revoke(&mut self, id: i64) -> Result<i64, StorageError> {
        let keys: Vec<Vec<u8>> = self.leases.keys(id).into_iter().flatten().cloned().collect();
        for key in keys {
            let del = DeleteRangeRequest { key, ..Default::default() };
            let resp = self.delete_range(&del)?;
            if resp.deleted != 1 {
                return Err(StorageError::Internal(format!(
                    "key {:02x?} attached to lease {id} is not live",
                    del.key
                )));
            }
        }
        Ok(self.rev())
    }

    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, StorageError> {
        let path = self.compare_path(req)?;
        self.check_txn(req, &path)?;
        let mut resp = self.execute_txn(req, &path)?;
        resp.header = Some(header(self.rev()));
        Ok(resp)
    }

    fn compare_path(&self, req: &TxnRequest) -> Result<TxnPath, StorageError> {
        let mut succeeded = true;
        for c in &req.compare {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &req.success } else { &req.failure };
        let nested = ops
            .iter()
            .filter_map(|op| match &op.request {
                Some(Request::RequestTxn(t)) => Some(self.compare_path(t)),
                _ => None,
            })
            .collect::<Result<_, _>>()?;
        Ok(TxnPath { succeeded, nested })
    }

    fn compare(&self, c: &Compare) -> Result<bool, StorageError> {
        let kvs = self.range_kvs(KeyRange::new(&c.key, &c.range_end), self.rev())?;
        if kvs.is_empty() {
            // A missing key has no value to compare; its revisions, version and
            // lease compare as zero.
            if c.target == CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    fn check_txn(&self, req: &TxnRequest, path: &TxnPath) -> Result<(), StorageError> {
        let ops = if path.succeeded { &req.success } else { &req.failure };
        let mut nested = path.nested.iter();
        for op in ops {
            match &op.request {
                // etcd's checkRange: unlike a plain Range, a negative revision
                // inside a txn counts as compacted.
                Some(Request::RequestRange(r)) if r.revision != 0 => {
                    if r.revision > self.rev() {
                        return Err(StorageError::FutureRev);
                    }
                    if r.revision < self.compacted {
                        return Err(StorageError::Compacted);
                    }
                }
                Some(Request::RequestRange(_)) => {}
                Some(Request::RequestPut(p)) => {
                    self.check_prev_exists(p)?;
                    self.check_lease(p)?;
                }
                Some(Request::RequestTxn(t)) => {
                    self.check_txn(t, nested.next().expect("one path per nested txn"))?
                }
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn execute_txn(&mut self, req: &TxnRequest, path: &TxnPath) -> Result<TxnResponse, StorageError> {
        let ops = if path.succeeded { &req.success } else { &req.failure };
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => Some(Response::ResponseRange(self.range(r)?)),
                Some(Request::RequestPut(p)) => Some(Response::ResponsePut(self.put_checked(p)?)),
                Some(Request::RequestDeleteRange(d)) => Some(Response::ResponseDeleteRange(self.delete_range(d)?)),
                Some(Request::RequestTxn(t)) => {
                    let sub = nested.next().expect("one path per nested txn");
                    // etcd leaves nested txn headers empty.
                    let mut r = self.execute_txn(t, sub)?;
                    r.header = Some(ResponseHeader::default());
                    Some(Response::ResponseTxn(r))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse { header: None, succeeded: path.succeeded, responses })
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        Ok(target) => {
            let (actual, wanted) = match target {
                CompareTarget::Version => (kv.version, matches_int(&c.target_union, |u| match u {
                    TargetUnion::Version(v) => Some(*v),
                    _ => None,
                })),
                CompareTarget::Create => (kv.create_revision, matches_int(&c.target_union, |u| match u {
                    TargetUnion::CreateRevision(v) => Some(*v),
                    _ => None,
                })),
                CompareTarget::Mod => (kv.mod_revision, matches_int(&c.target_union, |u| match u {
                    TargetUnion::ModRevision(v) => Some(*v),
                    _ => None,
                })),
                CompareTarget::Lease => (kv.lease, matches_int(&c.target_union, |u| match u {
                    TargetUnion::Lease(v) => Some(*v),
                    _ => None,
                })),
                CompareTarget::Value => unreachable!("handled above"),
            };
            actual.cmp(&wanted)
        }
        // etcd compares nothing for an unknown target and the result check
        // below decides; an unknown result passes.
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

/// The integer a compare names for its target; 0 when the union holds another
/// variant, as in etcd.
fn matches_int(u: &Option<TargetUnion>, pick: impl Fn(&TargetUnion) -> Option<i64>) -> i64 {
    u.as_ref().and_then(pick).unwrap_or(0)
}
