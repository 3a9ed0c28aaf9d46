//! Request checks etcd performs before a request is proposed (etcd's
//! `v3rpc/key.go`). They depend only on the request, so they run on the member
//! that receives it and never reach the log.

use std::collections::HashMap;

use cairn_api::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::error::StorageError;

pub fn check_range(r: &RangeRequest) -> Result<(), StorageError> {
    if r.key.is_empty() {
        return Err(StorageError::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(StorageError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), StorageError> {
    if r.key.is_empty() {
        return Err(StorageError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(StorageError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(StorageError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), StorageError> {
    if r.key.is_empty() {
        return Err(StorageError::EmptyKey);
    }
    Ok(())
}

/// Checks a txn as etcd does: operation counts against `max_txn_ops` (nested
/// txns get what their parent left over), empty keys, and no key written twice.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), StorageError> {
    check_txn_ops(r, max_txn_ops as i64)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnRequest, max_txn_ops: i64) -> Result<(), StorageError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len()) as i64;
    if opc > max_txn_ops {
        return Err(StorageError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(StorageError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, max_txn_ops - opc)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: i64) -> Result<(), StorageError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete(r),
        Some(Request::RequestTxn(t)) => check_txn_ops(t, max_txn_ops),
        None => Err(StorageError::KeyNotFound),
    }
}

/// A delete's key interval as etcd's interval tree sees it. `range_end = "\0"`
/// is taken literally (an empty interval), exactly as etcd does, so a plain put
/// after a from-key delete in one txn is accepted here as there.
///
/// One deliberate difference: a put with `ignore_value`/`ignore_lease` needs
/// its key's previous version, which a from-key delete earlier in the txn may
/// remove. etcd accepts that txn and then panics applying it (on every
/// member); Cairn rejects it up front as a duplicate key.
struct DelInterval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl DelInterval {
    fn covers(&self, k: &[u8], needs_prev: bool) -> bool {
        match &self.end {
            None => k == self.start.as_slice(),
            Some(end) if end.as_slice() == [0] => needs_prev && self.start.as_slice() <= k,
            Some(end) => self.start.as_slice() <= k && k < end.as_slice(),
        }
    }
}

/// Keys a txn branch puts, each with whether the put reads the key's previous
/// version (`ignore_value`/`ignore_lease`).
type Puts = HashMap<Vec<u8>, bool>;

fn covered(dels: &[DelInterval], k: &[u8], needs_prev: bool) -> bool {
    dels.iter().any(|d| d.covers(k, needs_prev))
}

/// Returns the keys put and the intervals deleted by `ops` (both branches of
/// nested txns), failing with `DuplicateKey` where a key would be written twice.
fn check_intervals(ops: &[RequestOp]) -> Result<(Puts, Vec<DelInterval>), StorageError> {
    let mut dels: Vec<DelInterval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(DelInterval {
                start: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();

    let mut puts: Puts = HashMap::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for (k, &needs_prev) in &puts_then {
            if puts.contains_key(k) || covered(&dels, k, needs_prev) {
                return Err(StorageError::DuplicateKey);
            }
            puts.insert(k.clone(), needs_prev);
        }
        for (k, needs_prev) in puts_else {
            // The two branches are exclusive, so a key in both is fine.
            if (puts.contains_key(&k) && !puts_then.contains_key(&k)) || covered(&dels, &k, needs_prev) {
                return Err(StorageError::DuplicateKey);
            }
            let both = needs_prev || puts.get(&k).copied().unwrap_or(false);
            puts.insert(k, both);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }

    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else { continue };
        let needs_prev = p.ignore_value || p.ignore_lease;
        if puts.contains_key(&p.key) || covered(&dels, &p.key, needs_prev) {
            return Err(StorageError::DuplicateKey);
        }
        puts.insert(p.key.clone(), needs_prev);
    }
    Ok((puts, dels))
}
