//! The revision-order checker for etcd KV histories (the `kv` workload).
//!
//! etcd exposes its claimed total order of writes: every change gets the
//! next revision, responses carry the store's revision in their header, and
//! every returned key carries the revision of its last change. This checker
//! holds the server to that claim without any search, in O(n log n) plus
//! the size of the results (the shared docs' `testing-and-jepsen.md`, §3.3):
//!
//! 1. **Writers.** Every written value is unique, so each value a read
//!    returns names the one operation that wrote it. A value nobody wrote, a
//!    value whose write `fail`ed, a value at the wrong key or at a
//!    `mod_revision` other than its acknowledged write's revision is an
//!    anomaly. A write with unknown outcome (`info`) whose value is seen is
//!    *resolved*: it took effect, at that `mod_revision`.
//! 2. **Unique revisions.** Acknowledged writes that changed something, and
//!    resolved ones, each claim their revision; two claiming the same one is
//!    an anomaly.
//! 3. **Real time.** Each operation is keyed `(revision, 0)` if it changed
//!    something and `(revision, 1)` otherwise (the header revision; a
//!    resolved `info` write has no return time). If A returned before B was
//!    invoked, key(A) ≤ key(B): writes take revisions in real-time order, and
//!    a read sees at least every write acknowledged before it started.
//!    Serializable reads may be stale by design and are exempt.
//! 4. **Replay.** Every read (a Range; a txn's ranges; a put's `prev_kv`; a
//!    delete's count and `prev_kvs`) must equal the state that the known
//!    writes, replayed in revision order, give at the revision it read:
//!    each returned key must carry its latest write at or before that
//!    revision (value, `mod_revision`, lease; version and `create_revision`
//!    too where decidable), each key left out must not be live there, and
//!    `count`/`more` must agree. A txn's `succeeded` must match its compares
//!    against the state before it.
//! 5. **Compaction.** A linearizable read at a revision below an
//!    acknowledged compaction, started after that compaction returned, must
//!    fail.
//!
//! Writes with unknown outcome that nobody observed stay unknown. They can
//! only sit at revisions no known write claims (*gaps*), later than
//! anything acknowledged before they were invoked. A read that disagrees
//! with the known writes is an anomaly only if no such write could explain
//! it (e.g. a key missing where only an unknown delete of it, placed in a
//! gap, could have removed it). So the checker never reports a history
//! that some placement of the unknown writes makes valid, within what it
//! checks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use crate::history::{self, Event, EventType, HistoryError};
use crate::ops::{
    CompareTarget, DeleteResponse, Kv, PutResponse, RangeRequest, RangeResponse, Request, Response,
    TxnOp, TxnOpResponse,
};

/// How many anomalies a report describes in full; the rest are only counted.
pub const MAX_REPORTED: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum KvCheckError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("event {index}: `v` is not a kv {what}: {source}")]
    BadValue {
        index: u64,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("event {index}: the `{f}` invoke's value is a `{request}` request")]
    FunctionMismatch {
        index: u64,
        f: String,
        request: &'static str,
    },
    #[error("event {index}: an ok completion without the header revision (`rev`)")]
    MissingRevision { index: u64 },
    #[error("event {index}: the response does not match its request ({detail})")]
    ResponseMismatch { index: u64, detail: &'static str },
    #[error("events {first} and {second} both write the value {value:?}; the checker needs unique written values")]
    DuplicateValue {
        first: u64,
        second: u64,
        value: String,
    },
}

/// The kinds of violation the checker finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// A read returned a value no operation wrote.
    PhantomValue,
    /// A read returned a value whose write definitely failed.
    FailedWriteVisible,
    /// A value was returned at a key or `mod_revision` its write did not have.
    WrongWriteRevision,
    /// Two writes claim the same revision.
    DuplicateRevision,
    /// An operation that started after another returned has a smaller revision.
    RealTime,
    /// A read does not match the replay of the writes up to its revision.
    ReadMismatch,
    /// A txn took the branch its compares do not select.
    TxnOutcome,
    /// A read below an acknowledged compaction succeeded.
    CompactedRead,
}

impl AnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::PhantomValue => "phantom-value",
            AnomalyKind::FailedWriteVisible => "failed-write-visible",
            AnomalyKind::WrongWriteRevision => "wrong-write-revision",
            AnomalyKind::DuplicateRevision => "duplicate-revision",
            AnomalyKind::RealTime => "real-time",
            AnomalyKind::ReadMismatch => "read-mismatch",
            AnomalyKind::TxnOutcome => "txn-outcome",
            AnomalyKind::CompactedRead => "compacted-read",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One violation, with the operations that demonstrate it.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub message: String,
    /// The invoke events (their `i`) of the operations involved.
    pub ops: Vec<u64>,
    /// The keys involved, for finding the surrounding operations.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KvReport {
    /// The first [`MAX_REPORTED`] anomalies, in the order found.
    pub anomalies: Vec<Anomaly>,
    /// All anomalies, per kind.
    pub counts: BTreeMap<AnomalyKind, usize>,
    pub operations: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Acknowledged writes that took a revision.
    pub writes: usize,
    /// Writes with unknown outcome whose revision a read revealed.
    pub resolved: usize,
    /// Reads checked against the replay (ranges, txn ranges, previous values).
    pub reads_checked: usize,
    pub elapsed: Duration,
}

impl KvReport {
    pub fn valid(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn total_anomalies(&self) -> usize {
        self.counts.values().sum()
    }
}

/// A write's changes, key by key, in order.
type Effects = Vec<(String, Effect)>;

/// What a write does to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    Put { value: String, lease: i64 },
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Unknown,
}

/// One operation of the history.
struct Op {
    /// The invoke event's `i`.
    index: u64,
    call: u64,
    /// `None` for operations that did not return `ok` or `fail`.
    ret: Option<u64>,
    outcome: Outcome,
    request: Request,
    response: Option<Response>,
    /// The response header's revision (ok operations).
    rev: i64,
}

/// Where a written value came from.
#[derive(Debug, Clone)]
struct Writer {
    op: usize,
    key: String,
    lease: i64,
}

/// An unknown write that no read resolved: it may sit in any gap after
/// `low_rev`, if invoked before the read that could have seen it returned.
struct Unresolved {
    call: u64,
    low_rev: i64,
}

/// The keys unknown writes may have put or deleted.
#[derive(Default)]
struct MaybeWrites {
    puts: Vec<usize>,
    deletes: Vec<usize>,
}

/// A read to check against the replay.
struct Observation<'a> {
    op: usize,
    /// The revision whose state the read reflects.
    at: i64,
    range: &'a RangeRequest,
    result: &'a RangeResponse,
    /// Writes of the same txn before this read, visible to it, at revision `at + 1`.
    own: &'a [(String, Effect)],
}

/// Checks a kv history.
pub fn check(events: &[Event]) -> Result<KvReport, KvCheckError> {
    let started = Instant::now();
    let ops = parse(events)?;
    let mut checker = Checker::new(&ops);
    checker.run()?;
    let mut report = KvReport {
        anomalies: checker.reported,
        counts: checker.counts,
        operations: ops.len(),
        ok: ops.iter().filter(|o| o.outcome == Outcome::Ok).count(),
        failed: ops.iter().filter(|o| o.outcome == Outcome::Fail).count(),
        unknown: ops.iter().filter(|o| o.outcome == Outcome::Unknown).count(),
        writes: checker.acknowledged_writes,
        resolved: checker.resolved.len(),
        reads_checked: checker.reads_checked,
        elapsed: Duration::ZERO,
    };
    report.elapsed = started.elapsed();
    Ok(report)
}

fn parse(events: &[Event]) -> Result<Vec<Op>, KvCheckError> {
    let mut ops = Vec::new();
    for pair in history::pair_events(events)? {
        let invoke = &events[pair.invoke];
        let request: Request = serde_json::from_value(invoke.value.clone()).map_err(|source| {
            KvCheckError::BadValue {
                index: invoke.index,
                what: "request",
                source,
            }
        })?;
        if request.function() != invoke.f {
            return Err(KvCheckError::FunctionMismatch {
                index: invoke.index,
                f: invoke.f.clone(),
                request: request.function(),
            });
        }
        let done = pair.completion.map(|c| &events[c]);
        let (outcome, ret, response, rev) = match done {
            Some(done) if done.kind == EventType::Ok => {
                let response: Response =
                    serde_json::from_value(done.value.clone()).map_err(|source| {
                        KvCheckError::BadValue {
                            index: done.index,
                            what: "response",
                            source,
                        }
                    })?;
                check_shape(&request, &response, done.index)?;
                let rev = done
                    .rev
                    .ok_or(KvCheckError::MissingRevision { index: done.index })?;
                (Outcome::Ok, Some(done.t_ns), Some(response), rev)
            }
            Some(done) if done.kind == EventType::Fail => (Outcome::Fail, Some(done.t_ns), None, 0),
            _ => (Outcome::Unknown, None, None, 0),
        };
        ops.push(Op {
            index: invoke.index,
            call: invoke.t_ns,
            ret,
            outcome,
            request,
            response,
            rev,
        });
    }
    Ok(ops)
}

/// Rejects responses of the wrong kind for their request: a recording bug,
/// not something the server can cause through the etcd client.
fn check_shape(request: &Request, response: &Response, index: u64) -> Result<(), KvCheckError> {
    let mismatch = |detail| Err(KvCheckError::ResponseMismatch { index, detail });
    match (request, response) {
        (Request::Range(_), Response::Range(_))
        | (Request::Put(_), Response::Put(_))
        | (Request::Delete(_), Response::Delete(_))
        | (Request::Compact { .. }, Response::Compact {}) => Ok(()),
        (Request::Txn(t), Response::Txn(r)) => {
            let branch = if r.succeeded { &t.success } else { &t.failure };
            if branch.len() != r.results.len() {
                return mismatch("txn result count");
            }
            for (op, result) in branch.iter().zip(&r.results) {
                let same = matches!(
                    (op, result),
                    (TxnOp::Range(_), TxnOpResponse::Range(_))
                        | (TxnOp::Put(_), TxnOpResponse::Put(_))
                        | (TxnOp::Delete(_), TxnOpResponse::Delete(_))
                );
                if !same {
                    return mismatch("txn result kind");
                }
            }
            Ok(())
        }
        _ => mismatch("response kind"),
    }
}

struct Checker<'a> {
    ops: &'a [Op],
    writers: HashMap<&'a str, Writer>,
    /// Per key: revision → (effect, op) of every known write.
    timeline: HashMap<String, BTreeMap<i64, (Effect, usize)>>,
    /// Revision → the op that claimed it.
    claimed: BTreeMap<i64, usize>,
    /// Unknown writes resolved to a revision, with the value that showed it.
    resolved: HashMap<usize, (i64, &'a str)>,
    unresolved: HashMap<usize, Unresolved>,
    maybe: HashMap<String, MaybeWrites>,
    /// Revisions in the observed span that no known write claims.
    gaps: Vec<i64>,
    /// Every key written or read, for prefix ranges.
    keys: BTreeSet<String>,
    acknowledged_writes: usize,
    reads_checked: usize,
    reported: Vec<Anomaly>,
    counts: BTreeMap<AnomalyKind, usize>,
}

impl<'a> Checker<'a> {
    fn new(ops: &'a [Op]) -> Self {
        Self {
            ops,
            writers: HashMap::new(),
            timeline: HashMap::new(),
            claimed: BTreeMap::new(),
            resolved: HashMap::new(),
            unresolved: HashMap::new(),
            maybe: HashMap::new(),
            gaps: Vec::new(),
            keys: BTreeSet::new(),
            acknowledged_writes: 0,
            reads_checked: 0,
            reported: Vec::new(),
            counts: BTreeMap::new(),
        }
    }

    fn anomaly(&mut self, kind: AnomalyKind, message: String, ops: &[usize], keys: &[&str]) {
        *self.counts.entry(kind).or_default() += 1;
        if self.reported.len() < MAX_REPORTED {
            self.reported.push(Anomaly {
                kind,
                message,
                ops: ops.iter().map(|&o| self.ops[o].index).collect(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
            });
        }
    }

    fn run(&mut self) -> Result<(), KvCheckError> {
        self.index_writers()?;
        self.resolve_observed_values();
        self.build_timeline();
        self.check_real_time();
        self.find_unresolved();
        self.check_reads();
        self.check_compactions();
        Ok(())
    }

    /// Step 1a: who wrote each value.
    fn index_writers(&mut self) -> Result<(), KvCheckError> {
        let ops = self.ops;
        for (i, op) in ops.iter().enumerate() {
            let puts: Vec<_> = match &op.request {
                Request::Put(p) => vec![p],
                Request::Txn(t) => t
                    .success
                    .iter()
                    .chain(&t.failure)
                    .filter_map(|o| match o {
                        TxnOp::Put(p) => Some(p),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for p in puts {
                self.keys.insert(p.key.clone());
                let writer = Writer {
                    op: i,
                    key: p.key.clone(),
                    lease: p.lease,
                };
                if let Some(first) = self.writers.insert(&p.value, writer) {
                    if first.op != i {
                        return Err(KvCheckError::DuplicateValue {
                            first: ops[first.op].index,
                            second: op.index,
                            value: p.value.clone(),
                        });
                    }
                }
            }
            for key in op.request.keys() {
                if !matches!(&op.request, Request::Range(r) if r.prefix) {
                    self.keys.insert(key.to_string());
                }
            }
        }
        Ok(())
    }

    /// Every key-value pair an ok operation returned, with the op.
    fn returned_kvs(&self) -> Vec<(usize, &'a Kv)> {
        let ops = self.ops;
        let mut out = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let Some(response) = &op.response else {
                continue;
            };
            let mut push_range = |r: &'a RangeResponse| out.extend(r.kvs.iter().map(|kv| (i, kv)));
            match response {
                Response::Range(r) => push_range(r),
                Response::Put(PutResponse { prev_kv }) => {
                    out.extend(prev_kv.iter().map(|kv| (i, kv)));
                }
                Response::Delete(DeleteResponse { prev_kvs, .. }) => {
                    out.extend(prev_kvs.iter().map(|kv| (i, kv)));
                }
                Response::Txn(t) => {
                    for result in &t.results {
                        match result {
                            TxnOpResponse::Range(r) => out.extend(r.kvs.iter().map(|kv| (i, kv))),
                            TxnOpResponse::Put(PutResponse { prev_kv }) => {
                                out.extend(prev_kv.iter().map(|kv| (i, kv)));
                            }
                            TxnOpResponse::Delete(DeleteResponse { prev_kvs, .. }) => {
                                out.extend(prev_kvs.iter().map(|kv| (i, kv)));
                            }
                        }
                    }
                }
                Response::Compact {} => {}
            }
        }
        out
    }

    /// Step 1b: every returned value must come from a write that can have
    /// produced it; unknown writes that were seen get their revision.
    fn resolve_observed_values(&mut self) {
        let ops = self.ops;
        for (reader, kv) in self.returned_kvs() {
            let Some(writer) = self.writers.get(kv.value.as_str()).cloned() else {
                self.anomaly(
                    AnomalyKind::PhantomValue,
                    format!(
                        "read {:?} = {:?} (mod_revision {}), a value no operation wrote",
                        kv.key, kv.value, kv.mod_revision
                    ),
                    &[reader],
                    &[&kv.key],
                );
                continue;
            };
            let w = &ops[writer.op];
            if writer.key != kv.key || writer.lease != kv.lease {
                self.anomaly(
                    AnomalyKind::WrongWriteRevision,
                    format!(
                        "read {:?} = {:?} with lease {}, but that value was written to {:?} with lease {}",
                        kv.key, kv.value, kv.lease, writer.key, writer.lease
                    ),
                    &[writer.op, reader],
                    &[&kv.key, &writer.key],
                );
                continue;
            }
            match w.outcome {
                Outcome::Fail => self.anomaly(
                    AnomalyKind::FailedWriteVisible,
                    format!(
                        "read {:?} = {:?} (mod_revision {}), written by an operation that failed",
                        kv.key, kv.value, kv.mod_revision
                    ),
                    &[writer.op, reader],
                    &[&kv.key],
                ),
                Outcome::Ok => {
                    if self.write_revision(writer.op) != Some(kv.mod_revision) {
                        let took = match self.write_revision(writer.op) {
                            Some(rev) => format!("took revision {rev}"),
                            None => "changed nothing".to_string(),
                        };
                        self.anomaly(
                            AnomalyKind::WrongWriteRevision,
                            format!(
                                "read {:?} = {:?} at mod_revision {}, but the write of that value {took}",
                                kv.key, kv.value, kv.mod_revision
                            ),
                            &[writer.op, reader],
                            &[&kv.key],
                        );
                    }
                }
                Outcome::Unknown => match self.resolved.get(&writer.op) {
                    Some(&(rev, _)) if rev != kv.mod_revision => self.anomaly(
                        AnomalyKind::WrongWriteRevision,
                        format!(
                            "{:?} = {:?} was read at mod_revision {rev} and at mod_revision {}",
                            kv.key, kv.value, kv.mod_revision
                        ),
                        &[writer.op, reader],
                        &[&kv.key],
                    ),
                    Some(_) => {}
                    None => {
                        self.resolved
                            .insert(writer.op, (kv.mod_revision, kv.value.as_str()));
                    }
                },
            }
        }
    }

    /// The revision an ok op's writes took, `None` if it changed nothing.
    fn write_revision(&self, op: usize) -> Option<i64> {
        let op = &self.ops[op];
        (op.outcome == Outcome::Ok && !self.ok_effects(op).is_empty()).then_some(op.rev)
    }

    /// What an ok operation changed, in order.
    fn ok_effects(&self, op: &Op) -> Vec<(String, Effect)> {
        let put = |p: &crate::ops::PutRequest| {
            (
                p.key.clone(),
                Effect::Put {
                    value: p.value.clone(),
                    lease: p.lease,
                },
            )
        };
        match (&op.request, &op.response) {
            (Request::Put(p), Some(Response::Put(_))) => vec![put(p)],
            (Request::Delete(d), Some(Response::Delete(r))) if r.deleted > 0 => {
                vec![(d.key.clone(), Effect::Delete)]
            }
            (Request::Txn(t), Some(Response::Txn(r))) => {
                let branch = if r.succeeded { &t.success } else { &t.failure };
                branch
                    .iter()
                    .zip(&r.results)
                    .filter_map(|(o, res)| match (o, res) {
                        (TxnOp::Put(p), _) => Some(put(p)),
                        (TxnOp::Delete(d), TxnOpResponse::Delete(dr)) if dr.deleted > 0 => {
                            Some((d.key.clone(), Effect::Delete))
                        }
                        _ => None,
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// What a resolved unknown operation changed: the txn branch holding
    /// the value that was seen. Its deletes may have found nothing, which
    /// changes no state, so they count as deletes either way.
    fn resolved_effects(op: &Op, seen_value: &str) -> Vec<(String, Effect)> {
        let to_effects = |ops: &[TxnOp]| -> Vec<(String, Effect)> {
            ops.iter()
                .filter_map(|o| match o {
                    TxnOp::Put(p) => Some((
                        p.key.clone(),
                        Effect::Put {
                            value: p.value.clone(),
                            lease: p.lease,
                        },
                    )),
                    TxnOp::Delete(d) => Some((d.key.clone(), Effect::Delete)),
                    TxnOp::Range(_) => None,
                })
                .collect()
        };
        match &op.request {
            Request::Put(p) => to_effects(&[TxnOp::Put(p.clone())]),
            Request::Txn(t) => {
                let holds = |branch: &[TxnOp]| {
                    branch
                        .iter()
                        .any(|o| matches!(o, TxnOp::Put(p) if p.value == seen_value))
                };
                if holds(&t.success) {
                    to_effects(&t.success)
                } else {
                    to_effects(&t.failure)
                }
            }
            _ => Vec::new(),
        }
    }

    /// Step 2: the known writes by revision and by key; gaps.
    fn build_timeline(&mut self) {
        let ops = self.ops;
        let mut claims: Vec<(i64, usize, Effects)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if op.outcome == Outcome::Ok {
                let effects = self.ok_effects(op);
                if !effects.is_empty() {
                    self.acknowledged_writes += 1;
                    claims.push((op.rev, i, effects));
                }
            }
        }
        for (&i, &(rev, value)) in &self.resolved {
            claims.push((rev, i, Self::resolved_effects(&ops[i], value)));
        }
        claims.sort_by_key(|&(rev, op, _)| (rev, op));
        for (rev, op, effects) in claims {
            if let Some(&other) = self.claimed.get(&rev) {
                self.anomaly(
                    AnomalyKind::DuplicateRevision,
                    format!("two writes took revision {rev}"),
                    &[other, op],
                    &[],
                );
                continue;
            }
            self.claimed.insert(rev, op);
            for (key, effect) in effects {
                self.timeline
                    .entry(key)
                    .or_default()
                    .insert(rev, (effect, op));
            }
        }
        let revs = ops
            .iter()
            .filter(|o| o.outcome == Outcome::Ok && !matches!(&o.request, Request::Compact { .. }))
            .map(|o| o.rev);
        if let (Some(lo), Some(hi)) = (revs.clone().min(), revs.max()) {
            self.gaps = (lo..=hi)
                .filter(|r| !self.claimed.contains_key(r))
                .collect();
        }
    }

    /// The real-time key of an op: (revision, 0) for writes, (revision, 1)
    /// for everything else; `None` if exempt.
    fn rt_key(&self, i: usize) -> Option<(i64, u8)> {
        let op = &self.ops[i];
        match op.outcome {
            Outcome::Ok => {
                if matches!(&op.request, Request::Range(r) if r.serializable) {
                    return None;
                }
                Some(match self.write_revision(i) {
                    Some(rev) => (rev, 0),
                    None => (op.rev, 1),
                })
            }
            Outcome::Unknown => self.resolved.get(&i).map(|&(rev, _)| (rev, 0)),
            Outcome::Fail => None,
        }
    }

    /// Step 3: if A returned before B was invoked, key(A) ≤ key(B).
    fn check_real_time(&mut self) {
        let mut items: Vec<(usize, (i64, u8))> = (0..self.ops.len())
            .filter_map(|i| self.rt_key(i).map(|k| (i, k)))
            .collect();
        // Descending by key; each group of equal keys is compared with the
        // earliest return among strictly greater keys.
        items.sort_by_key(|&(_, key)| std::cmp::Reverse(key));
        let mut earliest: Option<(u64, usize)> = None;
        let mut g = 0;
        let mut found = Vec::new();
        while g < items.len() {
            let end = g + items[g..].iter().take_while(|x| x.1 == items[g].1).count();
            for &(i, key) in &items[g..end] {
                if let Some((ret, by)) = earliest {
                    if ret < self.ops[i].call {
                        found.push((by, i, key));
                    }
                }
            }
            for &(i, _) in &items[g..end] {
                if let Some(ret) = self.ops[i].ret {
                    if earliest.is_none_or(|(r, _)| ret < r) {
                        earliest = Some((ret, i));
                    }
                }
            }
            g = end;
        }
        for (before, after, key) in found {
            let bkey = self.rt_key(before).expect("keyed");
            let what = |k: (i64, u8)| {
                if k.1 == 0 {
                    format!("wrote at revision {}", k.0)
                } else {
                    format!("observed revision {}", k.0)
                }
            };
            let keys = self.ops[before]
                .request
                .first_key()
                .into_iter()
                .chain(self.ops[after].request.first_key())
                .collect::<Vec<_>>();
            let message = format!(
                "an operation that {} returned before one that {} was invoked",
                what(bkey),
                what(key)
            );
            self.anomaly(AnomalyKind::RealTime, message, &[before, after], &keys);
        }
    }

    /// Step 4a: unknown writes nobody saw, with the keys they may change.
    fn find_unresolved(&mut self) {
        // Earliest-return order of everything with a real-time key, with
        // the running maximum revision: what an op invoked at time t must
        // come after.
        let mut done: Vec<(u64, i64)> = (0..self.ops.len())
            .filter_map(|i| Some((self.ops[i].ret?, self.rt_key(i)?.0)))
            .collect();
        done.sort_unstable();
        let mut running = i64::MIN;
        for d in &mut done {
            running = running.max(d.1);
            d.1 = running;
        }
        for (i, op) in self.ops.iter().enumerate() {
            if op.outcome != Outcome::Unknown
                || self.resolved.contains_key(&i)
                || !op.request.may_write()
            {
                continue;
            }
            let n = done.partition_point(|&(ret, _)| ret < op.call);
            let low_rev = if n == 0 { i64::MIN } else { done[n - 1].1 };
            self.unresolved.insert(
                i,
                Unresolved {
                    call: op.call,
                    low_rev,
                },
            );
            let mut add = |key: &str, put: bool| {
                let m = self.maybe.entry(key.to_string()).or_default();
                if put {
                    m.puts.push(i);
                } else {
                    m.deletes.push(i);
                }
            };
            match &op.request {
                Request::Put(p) => add(&p.key, true),
                Request::Delete(d) => add(&d.key, false),
                Request::Txn(t) => {
                    for o in t.success.iter().chain(&t.failure) {
                        match o {
                            TxnOp::Put(p) => add(&p.key, true),
                            TxnOp::Delete(d) => add(&d.key, false),
                            TxnOp::Range(_) => {}
                        }
                    }
                }
                Request::Range(_) | Request::Compact { .. } => {}
            }
        }
    }

    /// Could an unknown write (a put if `put`, else a delete) of `key` sit
    /// at a revision in (lo, hi], given a read that returned at `read_ret`?
    fn maybe_written(&self, key: &str, put: bool, lo: i64, hi: i64, read_ret: u64) -> bool {
        let Some(m) = self.maybe.get(key) else {
            return false;
        };
        let candidates = if put { &m.puts } else { &m.deletes };
        candidates.iter().any(|u| {
            let u = &self.unresolved[u];
            if u.call > read_ret {
                return false;
            }
            let from = lo.max(u.low_rev);
            let g = self.gaps.partition_point(|&g| g <= from);
            self.gaps.get(g).is_some_and(|&g| g <= hi)
        })
    }

    /// The latest known write to `key` at or before `rev`.
    fn latest(&self, key: &str, rev: i64) -> Option<(i64, &Effect, usize)> {
        self.timeline
            .get(key)?
            .range(..=rev)
            .next_back()
            .map(|(&r, (e, op))| (r, e, *op))
    }

    /// Step 4b: every read against the replay.
    fn check_reads(&mut self) {
        let ops = self.ops;
        for (i, op) in ops.iter().enumerate() {
            let Some(response) = &op.response else {
                continue;
            };
            match (&op.request, response) {
                (Request::Range(r), Response::Range(res)) => {
                    if r.revision > op.rev {
                        self.anomaly(
                            AnomalyKind::ReadMismatch,
                            format!(
                                "a read at revision {} succeeded while the store was at revision {}",
                                r.revision, op.rev
                            ),
                            &[i],
                            &[&r.key],
                        );
                        continue;
                    }
                    let at = if r.revision > 0 { r.revision } else { op.rev };
                    self.check_observation(&Observation {
                        op: i,
                        at,
                        range: r,
                        result: res,
                        own: &[],
                    });
                }
                (Request::Put(p), Response::Put(res)) => {
                    let single = RangeRequest {
                        key: p.key.clone(),
                        prefix: false,
                        limit: 0,
                        revision: 0,
                        serializable: false,
                    };
                    let result = range_of(res.prev_kv.iter().cloned().collect());
                    self.check_observation(&Observation {
                        op: i,
                        at: op.rev - 1,
                        range: &single,
                        result: &result,
                        own: &[],
                    });
                }
                (Request::Delete(d), Response::Delete(res)) => {
                    self.check_delete(i, &d.key, res, op.rev);
                }
                (Request::Txn(_), Response::Txn(_)) => self.check_txn(i),
                _ => {}
            }
        }
    }

    /// A delete that removed the key saw it at `rev - 1` (its `prev_kvs`);
    /// one that removed nothing saw it missing at `rev`.
    fn check_delete(&mut self, i: usize, key: &str, res: &DeleteResponse, rev: i64) {
        let single = RangeRequest {
            key: key.to_string(),
            prefix: false,
            limit: 0,
            revision: 0,
            serializable: false,
        };
        if res.deleted > 0 {
            if res.prev_kvs.len() as i64 != res.deleted {
                self.anomaly(
                    AnomalyKind::ReadMismatch,
                    format!(
                        "delete of {key:?} reports {} deleted but {} previous values",
                        res.deleted,
                        res.prev_kvs.len()
                    ),
                    &[i],
                    &[key],
                );
                return;
            }
            let result = range_of(res.prev_kvs.clone());
            self.check_observation(&Observation {
                op: i,
                at: rev - 1,
                range: &single,
                result: &result,
                own: &[],
            });
        } else {
            let result = range_of(Vec::new());
            self.check_observation(&Observation {
                op: i,
                at: rev,
                range: &single,
                result: &result,
                own: &[],
            });
        }
    }

    fn check_txn(&mut self, i: usize) {
        let op = &self.ops[i];
        let (Request::Txn(t), Some(Response::Txn(r))) = (&op.request, &op.response) else {
            return;
        };
        // A txn that wrote took revision `rev` and saw the state at rev - 1;
        // a read-only txn saw the state at rev.
        let wrote = self.write_revision(i).is_some();
        let base = if wrote { op.rev - 1 } else { op.rev };
        let ret = op.ret.unwrap_or(u64::MAX);
        let mut all_true = Some(true);
        for c in &t.compare {
            match self.key_state(&c.key, base, ret) {
                Some(state) => {
                    let holds = match (&c.target, &state) {
                        (CompareTarget::Value(v), Some(s)) => &s.value == v,
                        (CompareTarget::Value(_), None) => false,
                        (CompareTarget::ModRevision(m), s) => {
                            s.as_ref().map_or(0, |s| s.mod_revision) == *m
                        }
                        (CompareTarget::Version(n), s) => match s {
                            Some(s) => s.version == Some(*n),
                            None => *n == 0,
                        },
                    };
                    let undecided = matches!((&c.target, &state), (CompareTarget::Version(_), Some(s)) if s.version.is_none());
                    if undecided {
                        all_true = None;
                    } else if !holds {
                        all_true = all_true.map(|_| false);
                        break;
                    }
                }
                None => all_true = None,
            }
        }
        if let Some(expected) = all_true {
            if expected != r.succeeded {
                let keys: Vec<&str> = t.compare.iter().map(|c| c.key.as_str()).collect();
                self.anomaly(
                    AnomalyKind::TxnOutcome,
                    format!(
                        "txn {} at revision {}, but its compares are {} against the state at revision {base}",
                        if r.succeeded { "succeeded" } else { "failed" },
                        op.rev,
                        expected
                    ),
                    &[i],
                    &keys,
                );
            }
        }
        let branch = if r.succeeded { &t.success } else { &t.failure };
        let mut own: Vec<(String, Effect)> = Vec::new();
        for (o, res) in branch.iter().zip(&r.results) {
            match (o, res) {
                (TxnOp::Range(rr), TxnOpResponse::Range(result)) => {
                    self.check_observation(&Observation {
                        op: i,
                        at: base,
                        range: rr,
                        result,
                        own: &own,
                    });
                }
                (TxnOp::Put(p), TxnOpResponse::Put(pr)) => {
                    let single = RangeRequest {
                        key: p.key.clone(),
                        prefix: false,
                        limit: 0,
                        revision: 0,
                        serializable: false,
                    };
                    let result = range_of(pr.prev_kv.iter().cloned().collect());
                    self.check_observation(&Observation {
                        op: i,
                        at: base,
                        range: &single,
                        result: &result,
                        own: &own,
                    });
                    own.push((
                        p.key.clone(),
                        Effect::Put {
                            value: p.value.clone(),
                            lease: p.lease,
                        },
                    ));
                }
                (TxnOp::Delete(d), TxnOpResponse::Delete(dr)) => {
                    let single = RangeRequest {
                        key: d.key.clone(),
                        prefix: false,
                        limit: 0,
                        revision: 0,
                        serializable: false,
                    };
                    let result = range_of(dr.prev_kvs.clone());
                    if dr.deleted as usize != dr.prev_kvs.len() {
                        self.anomaly(
                            AnomalyKind::ReadMismatch,
                            format!(
                                "txn delete of {:?} reports {} deleted but {} previous values",
                                d.key,
                                dr.deleted,
                                dr.prev_kvs.len()
                            ),
                            &[i],
                            &[&d.key],
                        );
                    } else {
                        self.check_observation(&Observation {
                            op: i,
                            at: base,
                            range: &single,
                            result: &result,
                            own: &own,
                        });
                    }
                    own.push((d.key.clone(), Effect::Delete));
                }
                _ => {}
            }
        }
    }

    /// The state of `key` at `rev` if it is certain for a reader that
    /// returned at `ret`: `Some(None)` missing, `Some(Some(..))` present;
    /// `None` if an unknown write could have changed it.
    fn key_state(&self, key: &str, rev: i64, ret: u64) -> Option<Option<KeyState>> {
        match self.latest(key, rev) {
            Some((r, Effect::Put { value, .. }, _)) => {
                if self.maybe_written(key, false, r, rev, ret)
                    || self.maybe_written(key, true, r, rev, ret)
                {
                    return None;
                }
                Some(Some(KeyState {
                    value: value.clone(),
                    mod_revision: r,
                    version: self.version_of(key, r, ret).map(|(v, _)| v),
                }))
            }
            Some((r, Effect::Delete, _)) => {
                (!self.maybe_written(key, true, r, rev, ret)).then_some(None)
            }
            None => (!self.maybe_written(key, true, i64::MIN, rev, ret)).then_some(None),
        }
    }

    /// The version and create revision of `key` after its write at `rev`,
    /// if no unknown write could change them.
    fn version_of(&self, key: &str, rev: i64, ret: u64) -> Option<(i64, i64)> {
        let line = self.timeline.get(key)?;
        let mut version = 0;
        let mut created = rev;
        let mut since = i64::MIN;
        for (&r, (effect, _)) in line.range(..=rev).rev() {
            match effect {
                Effect::Put { .. } => {
                    version += 1;
                    created = r;
                }
                Effect::Delete => {
                    since = r;
                    break;
                }
            }
        }
        let uncertain = self.maybe_written(key, true, since, rev, ret)
            || self.maybe_written(key, false, since, rev, ret);
        (!uncertain).then_some((version, created))
    }

    /// Checks one read against the replay at `obs.at` (plus the txn's own
    /// earlier writes).
    fn check_observation(&mut self, obs: &Observation<'_>) {
        self.reads_checked += 1;
        let ret = self.ops[obs.op].ret.unwrap_or(u64::MAX);
        let (range, result) = (obs.range, obs.result);
        let in_range = |k: &str| {
            if range.prefix {
                k.starts_with(range.key.as_str())
            } else {
                k == range.key
            }
        };
        let mut problems: Vec<(String, String)> = Vec::new();
        for pair in result.kvs.windows(2) {
            if pair[0].key >= pair[1].key {
                problems.push((pair[1].key.clone(), "keys out of order or repeated".into()));
            }
        }
        if range.limit > 0 && result.kvs.len() as i64 > range.limit {
            problems.push((
                range.key.clone(),
                format!("{} keys for limit {}", result.kvs.len(), range.limit),
            ));
        }
        let returned: HashMap<&str, &Kv> =
            result.kvs.iter().map(|kv| (kv.key.as_str(), kv)).collect();
        for kv in &result.kvs {
            if !in_range(&kv.key) {
                problems.push((kv.key.clone(), "key outside the requested range".into()));
            }
        }
        let limited_after = (range.limit > 0 && result.kvs.len() as i64 >= range.limit)
            .then(|| result.kvs.last().map(|kv| kv.key.clone()))
            .flatten();
        let universe: Vec<String> = if range.prefix {
            self.keys
                .range(range.key.clone()..)
                .take_while(|k| k.starts_with(range.key.as_str()))
                .cloned()
                .collect()
        } else {
            vec![range.key.clone()]
        };
        let (mut live_min, mut live_max) = (0i64, 0i64);
        for key in &universe {
            let own = obs.own.iter().rev().find(|(k, _)| k == key).map(|(_, e)| e);
            let known = match own {
                Some(e) => Some((obs.at + 1, e.clone())),
                None => self.latest(key, obs.at).map(|(r, e, _)| (r, e.clone())),
            };
            let after = known.as_ref().map_or(i64::MIN, |(r, _)| *r);
            let check_unknown = own.is_none();
            let maybe_deleted = check_unknown && self.maybe_written(key, false, after, obs.at, ret);
            let maybe_put = check_unknown && self.maybe_written(key, true, after, obs.at, ret);
            let live = matches!(known, Some((_, Effect::Put { .. })));
            match (live, maybe_deleted) {
                (true, false) => {
                    live_min += 1;
                    live_max += 1;
                }
                (true, true) => live_max += 1,
                (false, _) if maybe_put => live_max += 1,
                (false, _) => {}
            }
            match returned.get(key.as_str()) {
                Some(kv) => {
                    let expected = match &known {
                        Some((r, Effect::Put { value, lease })) => {
                            *r == kv.mod_revision && value == &kv.value && *lease == kv.lease
                        }
                        _ => false,
                    };
                    if kv.mod_revision > obs.at && own.is_none() {
                        problems.push((
                            key.clone(),
                            format!(
                                "returned {:?} written at revision {}, after the revision read",
                                kv.value, kv.mod_revision
                            ),
                        ));
                    } else if !expected {
                        problems.push((key.clone(), format!(
                            "returned {:?} (mod_revision {}), but the latest write at or before revision {} is {}",
                            kv.value, kv.mod_revision, obs.at, describe_known(&known)
                        )));
                    } else if own.is_none() {
                        if let Some((version, created)) = self.version_of(key, kv.mod_revision, ret)
                        {
                            if version != kv.version || created != kv.create_revision {
                                problems.push((key.clone(), format!(
                                    "returned version {} and create_revision {}, the replay gives version {version} and create_revision {created}",
                                    kv.version, kv.create_revision
                                )));
                            }
                        }
                    }
                }
                None => {
                    let beyond_limit = limited_after.as_ref().is_some_and(|last| key > last);
                    if live && !maybe_deleted && !beyond_limit {
                        problems.push((
                            key.clone(),
                            format!(
                                "missing, but the latest write at or before revision {} is {}",
                                obs.at,
                                describe_known(&known)
                            ),
                        ));
                    }
                }
            }
        }
        if !(live_min..=live_max).contains(&result.count) {
            let expected = if live_min == live_max {
                live_min.to_string()
            } else {
                format!("between {live_min} and {live_max}")
            };
            problems.push((
                range.key.clone(),
                format!("count {} but the replay gives {expected}", result.count),
            ));
        }
        if result.more != (result.count > result.kvs.len() as i64) {
            problems.push((
                range.key.clone(),
                format!(
                    "more = {} with count {} and {} keys returned",
                    result.more,
                    result.count,
                    result.kvs.len()
                ),
            ));
        }
        for (key, problem) in problems {
            let op = &self.ops[obs.op];
            let mut involved = vec![obs.op];
            if let Some((_, _, writer)) = self.latest(&key, obs.at) {
                if writer != obs.op {
                    involved.insert(0, writer);
                }
            }
            let what = match &op.request {
                Request::Range(r) if r.serializable => "serializable read",
                Request::Range(_) => "read",
                Request::Put(_) => "put's previous value",
                Request::Delete(_) => "delete's previous value",
                Request::Txn(_) => "txn read",
                Request::Compact { .. } => "compaction",
            };
            self.anomaly(
                AnomalyKind::ReadMismatch,
                format!("{what} of {key:?} at revision {}: {problem}", obs.at),
                &involved,
                &[&key],
            );
        }
    }

    /// Step 5: reads below an acknowledged compaction must fail.
    fn check_compactions(&mut self) {
        let ops = self.ops;
        let compactions: Vec<(usize, i64, u64)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match (&o.request, o.outcome) {
                (Request::Compact { revision }, Outcome::Ok) => Some((i, *revision, o.ret?)),
                _ => None,
            })
            .collect();
        for (i, op) in ops.iter().enumerate() {
            let Request::Range(r) = &op.request else {
                continue;
            };
            if op.outcome != Outcome::Ok || r.serializable || r.revision == 0 {
                continue;
            }
            if let Some(&(c, rev, _)) = compactions
                .iter()
                .find(|&&(_, rev, done)| r.revision < rev && done < op.call)
            {
                self.anomaly(
                    AnomalyKind::CompactedRead,
                    format!(
                        "a linearizable read at revision {} succeeded after the compaction at revision {rev} was acknowledged",
                        r.revision
                    ),
                    &[c, i],
                    &[&r.key],
                );
            }
        }
    }
}

struct KeyState {
    value: String,
    mod_revision: i64,
    /// `None` if an unknown write could have changed it.
    version: Option<i64>,
}

fn range_of(kvs: Vec<Kv>) -> RangeResponse {
    RangeResponse {
        count: kvs.len() as i64,
        kvs,
        more: false,
    }
}

fn describe_known(known: &Option<(i64, Effect)>) -> String {
    match known {
        None => "none".to_string(),
        Some((r, Effect::Delete)) => format!("a delete at revision {r}"),
        Some((r, Effect::Put { value, .. })) => format!("a put of {value:?} at revision {r}"),
    }
}
