//! The lease-safety checker (the `lease` workload): etcd's guarantees for
//! leases, checked on the client history together with the log of one
//! watcher (the *observer*) that saw every change under the run's prefix.
//!
//! The history says what clients were told (grants with their TTLs,
//! keep-alive answers, puts attached to leases, revokes, `TimeToLive`
//! answers, reads of a lease's keys); the observer says what the store did
//! and when the harness learnt of it: each put and delete with its revision,
//! the lease of the key and the arrival time, on the history's clock. Expiry
//! is a server-initiated change that no client operation records, so the
//! observer is how the checker sees it. A lease's keys are named
//! `<prefix>l<lease id>/k<n>` ([`lease_key`]), so every event names its lease.
//!
//! Safety (any violation makes the run invalid):
//!
//! 1. **One revision.** Revoking a lease, by a client or on expiry, deletes
//!    all of its keys in one revision: the deletions of a lease's keys that
//!    no explicit delete of the workload explains must all share one revision
//!    `r` (else [`LeaseAnomalyKind::SplitDeletion`]), and every key of the
//!    lease that was live just before `r` must be deleted at `r`
//!    ([`LeaseAnomalyKind::KeyOutlivedLease`]).
//! 2. **No use after the end.** Once a lease has ended, nothing may use it:
//!    no put attached to it may take a revision after the end (the revision
//!    of its keys' deletion, or an acknowledged revoke's header revision; an
//!    observed put counts even if the client never learnt its outcome), and
//!    no put, keep-alive with a TTL above 0 or `TimeToLive` finding it may be
//!    invoked after the end was known: after a revoke was acknowledged, the
//!    keys' deletion was observed, or the server reported the lease missing
//!    ([`LeaseAnomalyKind::UseAfterRevoke`], [`LeaseAnomalyKind::UseAfterExpiry`]).
//!    Grants are not checked: the workload lets the server choose ids, and a
//!    grant naming a revoked id may legitimately create it again.
//! 3. **No early expiry.** A lease that nobody revoked must not end before
//!    `invoke + TTL` of its latest acknowledged renewal (grant or keep-alive
//!    with TTL above 0) invoked before the end: the server renewed it at some
//!    moment after the client sent the request, so its clock cannot run out
//!    before then ([`LeaseAnomalyKind::EarlyExpiry`]). See
//!    [`EARLY_EXPIRY_TOLERANCE`] for the time comparison.
//! 4. **Reads.** A linearizable read of a lease's keys at a revision at or
//!    after the lease's end must return none of them
//!    ([`LeaseAnomalyKind::ReadAfterDeletion`]); one invoked after the end was
//!    known must not return an older state ([`LeaseAnomalyKind::StaleRead`]);
//!    and every read must equal the observer's events replayed up to its
//!    revision ([`LeaseAnomalyKind::ReadMismatch`]). A key that carries
//!    another lease than the one in its name is [`LeaseAnomalyKind::WrongLease`].
//!
//! Liveness (weaker; reported separately, also invalidating the run):
//!
//! 5. **Expiry happens.** A lease must be gone by its [`liveness
//!    deadline`](LeaseCheckOptions): the last moment a renewal may have
//!    reached the server, plus the TTL, one election timeout (a leader that
//!    takes office restarts every lease clock with that much extra, and the
//!    first leader may take office just as the run starts) and
//!    [`EXPIRY_SLACK`]; extended, for
//!    every fault overlapping that window, to the fault's end + TTL + 4
//!    election timeouts + [`FAULT_SLACK`]. Evidence that it outlived the
//!    deadline is an operation invoked after it that still found the lease
//!    (`TimeToLive`, an attached put, a read of its keys) or a linearizable
//!    read at a revision before the keys' deletion
//!    ([`LeaseAnomalyKind::LateExpiry`]). The observer must also have caught
//!    up with the final revision ([`LeaseAnomalyKind::ObserverIncomplete`]).
//!
//! **When a lease ended** is bounded from above by the earliest of: an
//! acknowledged revoke's return; the deletion of its keys, which happened no
//! later than the observer received it, and no later than any acknowledged
//! operation anywhere in the history returned a header revision at or past
//! the deletion's (that member had applied it by then); and any answer that
//! the lease does not exist (keep-alive TTL 0, `TimeToLive` TTL −1, an
//! attached put or a revoke refused with "lease not found"). Every rule
//! compares operations against such upper bounds, so none depends on when
//! exactly the server acted.
//!
//! Writes with unknown outcome are never assumed to have happened or not:
//! an unknown revoke makes a lease's end unattributable (no early-expiry
//! check after its invoke), an unknown delete may explain any deletion of
//! its key after its invoke, and an unknown keep-alive extends the liveness
//! window to its completion.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::history::{self, Event, EventType, HistoryError};
use crate::report::HistoryIndex;

/// The observer's log in the report directory, one [`ObserverRecord`] a line.
pub const OBSERVER_LOG: &str = "lease-observer.jsonl";
/// How many anomalies a report describes in full; the rest are only counted.
pub const MAX_REPORTED: usize = 64;
/// How far before its bound an expiry must be to count as early.
///
/// The bound itself needs no slack: the harness and the server read the
/// same monotonic clock (`CLOCK_MONOTONIC` of one machine); the harness
/// stamps an operation's invoke *before* sending it, so the server renews
/// the lease after that stamp and cannot expire it before stamp + TTL; and
/// the end of the lease is only ever compared through upper bounds (when
/// the observer received the deletion, when some answer revealed it), which
/// are late, never early. 50 ms only keeps the verdict from hinging on a
/// few milliseconds of timestamping (the stamps are taken under the
/// recorder's lock and by tasks that may be scheduled late), far below any
/// real early expiry, which is off by seconds of TTL.
pub const EARLY_EXPIRY_TOLERANCE: Duration = Duration::from_millis(50);
/// Time the server may take, without faults, beyond the TTL: the leader's
/// lease clock ticks every 500 ms, so a granted lease's clock may start up
/// to a tick late and its expiry be noticed up to a tick late; then the
/// revoke must commit through Raft and be applied on two shared cores.
pub const EXPIRY_SLACK: Duration = Duration::from_secs(2);
/// Per overlapping fault, added to `TTL + 4 × election timeout` after the
/// fault ends: a retried revoke proposal and an election that needs more
/// than one round.
pub const FAULT_SLACK: Duration = Duration::from_secs(2);

const NS_PER_SEC: u64 = 1_000_000_000;

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The `v` of a lease workload invoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseRequest {
    /// LeaseGrant with a TTL in seconds; the server chooses the id.
    Grant {
        ttl: i64,
    },
    /// One round of LeaseKeepAlive on lease `id`.
    Keepalive {
        id: i64,
    },
    /// Put of `key` attached to `lease` (0: none, e.g. the final write).
    Put {
        key: String,
        value: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        lease: i64,
    },
    Revoke {
        id: i64,
    },
    /// LeaseTimeToLive with the attached keys.
    Ttl {
        id: i64,
    },
    /// Linearizable Range over the lease's key prefix.
    Read {
        id: i64,
        prefix: String,
    },
    /// Delete of one key of lease `id`.
    Delete {
        id: i64,
        key: String,
    },
}

impl LeaseRequest {
    /// The history's `f`.
    pub fn function(&self) -> &'static str {
        match self {
            LeaseRequest::Grant { .. } => "grant",
            LeaseRequest::Keepalive { .. } => "keepalive",
            LeaseRequest::Put { .. } => "put",
            LeaseRequest::Revoke { .. } => "revoke",
            LeaseRequest::Ttl { .. } => "ttl",
            LeaseRequest::Read { .. } => "read",
            LeaseRequest::Delete { .. } => "delete",
        }
    }

    /// The lease the request is about (none for a grant or a plain put).
    pub fn lease(&self) -> Option<i64> {
        match self {
            LeaseRequest::Grant { .. } => None,
            LeaseRequest::Put { lease, .. } => (*lease != 0).then_some(*lease),
            LeaseRequest::Keepalive { id }
            | LeaseRequest::Revoke { id }
            | LeaseRequest::Ttl { id }
            | LeaseRequest::Read { id, .. }
            | LeaseRequest::Delete { id, .. } => Some(*id),
        }
    }
}

/// A key-value pair a read returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadKv {
    pub key: String,
    pub value: String,
    pub mod_revision: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease: i64,
}

/// The `v` of an `ok` completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseResponse {
    Grant {
        id: i64,
        ttl: i64,
    },
    /// The TTL the keep-alive returned; 0: no such lease.
    Keepalive {
        ttl: i64,
    },
    Put {},
    Revoke {},
    /// Remaining TTL (−1: no such lease), granted TTL and attached keys.
    Ttl {
        ttl: i64,
        granted_ttl: i64,
        keys: Vec<String>,
    },
    Read {
        kvs: Vec<ReadKv>,
    },
    Delete {
        deleted: i64,
    },
}

impl LeaseResponse {
    fn name(&self) -> &'static str {
        match self {
            LeaseResponse::Grant { .. } => "grant",
            LeaseResponse::Keepalive { .. } => "keepalive",
            LeaseResponse::Put {} => "put",
            LeaseResponse::Revoke {} => "revoke",
            LeaseResponse::Ttl { .. } => "ttl",
            LeaseResponse::Read { .. } => "read",
            LeaseResponse::Delete { .. } => "delete",
        }
    }
}

/// The key prefix of lease `lease`'s keys.
pub fn lease_prefix(prefix: &str, lease: i64) -> String {
    format!("{prefix}l{lease}/")
}

/// The `n`th key of lease `lease`.
pub fn lease_key(prefix: &str, lease: i64, n: usize) -> String {
    format!("{prefix}l{lease}/k{n}")
}

/// The lease a key of the form `…/l<lease>/k<n>` belongs to.
pub fn lease_of_key(key: &str) -> Option<i64> {
    let (dir, leaf) = key.rsplit_once('/')?;
    leaf.strip_prefix('k')?.parse::<u64>().ok()?;
    let segment = dir.rsplit_once('/').map_or(dir, |(_, s)| s);
    segment.strip_prefix('l')?.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchKind {
    Put,
    Delete,
}

/// One event the observer received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedEvent {
    /// When the observer received it, on the history's clock.
    pub t_ns: u64,
    /// The revision of the change (the event's `mod_revision`).
    pub rev: i64,
    pub kind: WatchKind,
    pub key: String,
    /// The key's lease: a put's, or for a delete the previous value's (0
    /// when the server sent no previous value).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease: i64,
    /// A put's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// One line of the observer's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObserverRecord {
    /// The observer watches `prefix` from revision `from_rev`.
    Start {
        t_ns: u64,
        prefix: String,
        from_rev: i64,
    },
    Event(ObservedEvent),
    /// A progress notification: every event up to `rev` has been received.
    Progress {
        t_ns: u64,
        rev: i64,
    },
    /// The stream failed or stalled; the observer watches again from
    /// `from_rev`, through `member`.
    Restart {
        t_ns: u64,
        member: String,
        from_rev: i64,
        reason: String,
    },
    /// Revisions `from_rev..to_rev` were compacted before the observer saw
    /// them: their events are missing.
    Gap {
        t_ns: u64,
        from_rev: i64,
        to_rev: i64,
    },
    /// The observer stopped, with every event up to `covered` received;
    /// `target` is the revision it had to reach (the harness's last write).
    End {
        t_ns: u64,
        covered: i64,
        target: Option<i64>,
    },
}

pub fn write_observer_log<W: Write>(mut out: W, records: &[ObserverRecord]) -> io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

pub fn read_observer_log<R: BufRead>(input: R) -> Result<Vec<ObserverRecord>, LeaseCheckError> {
    let mut records = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(serde_json::from_str(&line).map_err(|source| {
            LeaseCheckError::ObserverLog {
                line: n + 1,
                source,
            }
        })?);
    }
    Ok(records)
}

/// Reads the observer log of a report directory.
pub fn read_observer_file(path: &Path) -> Result<Vec<ObserverRecord>, LeaseCheckError> {
    read_observer_log(io::BufReader::new(std::fs::File::open(path)?))
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseCheckError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("event {index}: `v` is not a lease {what}: {source}")]
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
    #[error("event {index}: a `{request}` request answered by a `{response}` response")]
    ResponseMismatch {
        index: u64,
        request: &'static str,
        response: &'static str,
    },
    #[error("observer log line {line}: {source}")]
    ObserverLog {
        line: usize,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A fault's window on the history's clock (`None`: never healed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultWindow {
    pub start_ns: u64,
    pub end_ns: Option<u64>,
}

/// What the liveness deadline depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseCheckOptions {
    /// The members' election timeout.
    pub election_timeout: Duration,
    /// The faults of the run.
    pub faults: Vec<FaultWindow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseAnomalyKind {
    /// A lease's keys were deleted by the lease at more than one revision.
    SplitDeletion,
    /// A key live when its lease's keys were deleted was not deleted then.
    KeyOutlivedLease,
    /// A key carries another lease than its name's.
    WrongLease,
    /// The lease was used (put, keep-alive, found by TimeToLive) after an
    /// acknowledged revoke.
    UseAfterRevoke,
    /// The lease was used after it expired (or was reported missing).
    UseAfterExpiry,
    /// The lease ended before its last renewal's invoke + TTL, unrevoked.
    EarlyExpiry,
    /// A read at or after the lease's end returned its keys.
    ReadAfterDeletion,
    /// A read invoked after the lease's end was known saw an older state.
    StaleRead,
    /// A read disagrees with the observer's events at its revision.
    ReadMismatch,
    /// Liveness: the lease outlived its deadline.
    LateExpiry,
    /// Liveness: the observer did not catch up with the final revision.
    ObserverIncomplete,
}

impl LeaseAnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            LeaseAnomalyKind::SplitDeletion => "split-deletion",
            LeaseAnomalyKind::KeyOutlivedLease => "key-outlived-lease",
            LeaseAnomalyKind::WrongLease => "wrong-lease",
            LeaseAnomalyKind::UseAfterRevoke => "use-after-revoke",
            LeaseAnomalyKind::UseAfterExpiry => "use-after-expiry",
            LeaseAnomalyKind::EarlyExpiry => "early-expiry",
            LeaseAnomalyKind::ReadAfterDeletion => "read-after-deletion",
            LeaseAnomalyKind::StaleRead => "stale-read",
            LeaseAnomalyKind::ReadMismatch => "read-mismatch",
            LeaseAnomalyKind::LateExpiry => "late-expiry",
            LeaseAnomalyKind::ObserverIncomplete => "observer-incomplete",
        }
    }

    /// A liveness anomaly (weaker than a safety one: timing bounds, not
    /// guarantees).
    pub fn is_liveness(self) -> bool {
        matches!(
            self,
            LeaseAnomalyKind::LateExpiry | LeaseAnomalyKind::ObserverIncomplete
        )
    }
}

impl fmt::Display for LeaseAnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One violation, with what demonstrates it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseAnomaly {
    pub kind: LeaseAnomalyKind,
    /// The lease (0 for [`LeaseAnomalyKind::ObserverIncomplete`]).
    pub lease: i64,
    pub message: String,
    /// The invoke events (their `i`) of the operations involved.
    pub ops: Vec<u64>,
    pub keys: Vec<String>,
    pub revisions: Vec<i64>,
}

/// How the leases of a history ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseCounts {
    /// Grants acknowledged.
    pub granted: usize,
    /// Leases with an acknowledged revoke.
    pub revoked: usize,
    /// Leases that ended with no revoke invoked before: expired.
    pub expired: usize,
    /// Leases that ended after a revoke of unknown outcome was invoked.
    pub revoked_or_expired: usize,
    /// Leases not known to have ended.
    pub open: usize,
    /// Leases whose liveness was decided (ended in time, or shown late).
    pub liveness_checked: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeaseReport {
    /// The first [`MAX_REPORTED`] anomalies, in the order found.
    pub anomalies: Vec<LeaseAnomaly>,
    /// All anomalies, per kind.
    pub counts: BTreeMap<LeaseAnomalyKind, usize>,
    pub leases: LeaseCounts,
    pub operations: usize,
    /// Revisions at which some lease deleted keys.
    pub lease_deletions: usize,
    /// Keys deleted by their lease.
    pub keys_deleted: usize,
    pub reads_checked: usize,
    pub observed_events: usize,
    pub observer_restarts: usize,
    pub observer_gaps: usize,
    pub elapsed: Duration,
}

impl LeaseReport {
    pub fn valid(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn total_anomalies(&self) -> usize {
        self.counts.values().sum()
    }

    pub fn safety_anomalies(&self) -> usize {
        self.counts
            .iter()
            .filter(|(k, _)| !k.is_liveness())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn liveness_anomalies(&self) -> usize {
        self.total_anomalies() - self.safety_anomalies()
    }

    /// One line for the run's report.
    pub fn summary_line(&self) -> String {
        let l = &self.leases;
        format!(
            "lease checker: {} ({} leases granted: {} revoked, {} expired, {} revoked or expired, {} still open; \
             {} lease deletions of {} keys; {} reads checked; {} events observed, {} observer restarts; {:.1} ms)",
            if self.valid() {
                "valid".to_string()
            } else {
                format!(
                    "{} safety and {} liveness anomalies",
                    self.safety_anomalies(),
                    self.liveness_anomalies()
                )
            },
            l.granted,
            l.revoked,
            l.expired,
            l.revoked_or_expired,
            l.open,
            self.lease_deletions,
            self.keys_deleted,
            self.reads_checked,
            self.observed_events,
            self.observer_restarts,
            self.elapsed.as_secs_f64() * 1e3
        )
    }

    /// The checker's part of `verdict.json`.
    pub fn to_json(&self) -> Value {
        let counts: serde_json::Map<String, Value> = self
            .counts
            .iter()
            .map(|(k, v)| (k.name().to_string(), json!(v)))
            .collect();
        json!({
            "checker": "lease-safety",
            "valid": self.valid(),
            "safety_anomalies": self.safety_anomalies(),
            "liveness_anomalies": self.liveness_anomalies(),
            "anomalies": counts,
            "leases": {
                "granted": self.leases.granted,
                "revoked": self.leases.revoked,
                "expired": self.leases.expired,
                "revoked_or_expired": self.leases.revoked_or_expired,
                "open": self.leases.open,
                "liveness_checked": self.leases.liveness_checked,
            },
            "lease_deletions": self.lease_deletions,
            "keys_deleted": self.keys_deleted,
            "reads_checked": self.reads_checked,
            "observed_events": self.observed_events,
            "observer_restarts": self.observer_restarts,
            "observer_gaps": self.observer_gaps,
            "elapsed_ms": self.elapsed.as_millis() as u64,
        })
    }

    /// Each anomaly with its window of history operations on the same
    /// lease (involved ones marked `*`).
    pub fn describe(&self, index: &HistoryIndex<'_>) -> String {
        let mut text = String::new();
        for a in &self.anomalies {
            let class = if a.kind.is_liveness() {
                "liveness"
            } else {
                "safety"
            };
            text.push_str(&format!("{} ({class}): {}\n", a.kind, a.message));
            let lease = a.lease.to_string();
            for line in index.window(&a.ops, |e| e.key.as_deref() == Some(lease.as_str())) {
                text.push_str(&format!("    {line}\n"));
            }
        }
        if self.total_anomalies() > self.anomalies.len() {
            text.push_str(&format!(
                "… and {} more anomalies (counts in verdict.json)\n",
                self.total_anomalies() - self.anomalies.len()
            ));
        }
        text
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Unknown,
}

struct Op {
    /// The invoke event's `i`.
    index: u64,
    call: u64,
    /// The completion's time, whatever its kind (`None`: still in flight).
    end: Option<u64>,
    outcome: Outcome,
    request: LeaseRequest,
    response: Option<LeaseResponse>,
    /// An `ok` completion's header revision, if positive.
    rev: Option<i64>,
    error: Option<String>,
}

impl Op {
    /// The return time of an `ok` or `fail` operation.
    fn ret(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok | Outcome::Fail => self.end,
            Outcome::Unknown => None,
        }
    }

    fn lease_not_found(&self) -> bool {
        self.outcome == Outcome::Fail
            && self
                .error
                .as_deref()
                .is_some_and(|e| e.contains("lease not found"))
    }
}

fn parse(events: &[Event]) -> Result<Vec<Op>, LeaseCheckError> {
    let mut ops = Vec::new();
    for pair in history::pair_events(events)? {
        let invoke = &events[pair.invoke];
        let request: LeaseRequest =
            serde_json::from_value(invoke.value.clone()).map_err(|source| {
                LeaseCheckError::BadValue {
                    index: invoke.index,
                    what: "request",
                    source,
                }
            })?;
        if request.function() != invoke.f {
            return Err(LeaseCheckError::FunctionMismatch {
                index: invoke.index,
                f: invoke.f.clone(),
                request: request.function(),
            });
        }
        let done = pair.completion.map(|c| &events[c]);
        let outcome = match done.map(|d| d.kind) {
            Some(EventType::Ok) => Outcome::Ok,
            Some(EventType::Fail) => Outcome::Fail,
            _ => Outcome::Unknown,
        };
        let response = match done {
            Some(d) if outcome == Outcome::Ok => {
                let response: LeaseResponse =
                    serde_json::from_value(d.value.clone()).map_err(|source| {
                        LeaseCheckError::BadValue {
                            index: d.index,
                            what: "response",
                            source,
                        }
                    })?;
                if response.name() != request.function() {
                    return Err(LeaseCheckError::ResponseMismatch {
                        index: d.index,
                        request: request.function(),
                        response: response.name(),
                    });
                }
                Some(response)
            }
            _ => None,
        };
        ops.push(Op {
            index: invoke.index,
            call: invoke.t_ns,
            end: done.map(|d| d.t_ns),
            outcome,
            request,
            response,
            rev: done.and_then(|d| d.rev).filter(|&r| r > 0),
            error: done.and_then(|d| d.error.clone()),
        });
    }
    Ok(ops)
}

/// What the observer's log covers.
#[derive(Debug, Default)]
struct Coverage {
    /// The first revision watched.
    from_rev: Option<i64>,
    /// Every event up to this revision was received (gaps aside).
    covered: i64,
    gaps: Vec<(i64, i64)>,
    restarts: usize,
    /// The last time the observer recorded anything.
    last_ns: u64,
    /// (covered, target) of an observer that stopped short of its target.
    short: Option<(i64, i64, u64)>,
}

impl Coverage {
    fn new(records: &[ObserverRecord]) -> Self {
        let mut c = Coverage::default();
        for r in records {
            match r {
                ObserverRecord::Start { t_ns, from_rev, .. } => {
                    c.from_rev = Some(c.from_rev.map_or(*from_rev, |f: i64| f.min(*from_rev)));
                    c.last_ns = c.last_ns.max(*t_ns);
                }
                ObserverRecord::Event(e) => {
                    c.covered = c.covered.max(e.rev);
                    c.last_ns = c.last_ns.max(e.t_ns);
                }
                ObserverRecord::Progress { t_ns, rev } => {
                    c.covered = c.covered.max(*rev);
                    c.last_ns = c.last_ns.max(*t_ns);
                }
                ObserverRecord::Restart { t_ns, .. } => {
                    c.restarts += 1;
                    c.last_ns = c.last_ns.max(*t_ns);
                }
                ObserverRecord::Gap {
                    t_ns,
                    from_rev,
                    to_rev,
                } => {
                    c.gaps.push((*from_rev, *to_rev));
                    c.last_ns = c.last_ns.max(*t_ns);
                }
                ObserverRecord::End {
                    t_ns,
                    covered,
                    target,
                } => {
                    c.covered = c.covered.max(*covered);
                    c.last_ns = c.last_ns.max(*t_ns);
                    if let Some(target) = target.filter(|&t| t > c.covered) {
                        c.short = Some((c.covered, target, *t_ns));
                    }
                }
            }
        }
        c
    }

    /// Whether every event in revisions `(after, upto]` was received.
    fn complete(&self, after: i64, upto: i64) -> bool {
        self.from_rev.is_some_and(|f| f <= after + 1)
            && upto <= self.covered
            && !self
                .gaps
                .iter()
                .any(|&(from, to)| from <= upto && to > after + 1)
    }
}

/// What the history says about one lease.
#[derive(Default)]
struct Facts {
    /// The acknowledged grant: (op, TTL).
    grant: Option<(usize, i64)>,
    /// Acknowledged renewals (grant, keep-alive with TTL > 0): (op, TTL).
    renewals: Vec<(usize, i64)>,
    /// Keep-alives of unknown outcome.
    maybe_renewals: Vec<usize>,
    /// Revokes that may have taken effect (ok or unknown).
    revokes: Vec<usize>,
    /// Answers that the lease does not exist: (time, op, what).
    absent: Vec<(u64, usize, &'static str)>,
    /// Successful uses of the lease: (op, what).
    uses: Vec<(usize, &'static str)>,
    /// Acknowledged puts attached to the lease.
    puts: Vec<usize>,
    reads: Vec<usize>,
}

/// Reads of one lease that broke one rule.
#[derive(Default)]
struct Findings {
    lines: Vec<String>,
    ops: Vec<u64>,
    keys: BTreeSet<String>,
    revisions: BTreeSet<i64>,
}

/// How the end of a lease is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndEvidence {
    /// An acknowledged revoke returned.
    Revoked(usize),
    /// Its keys' deletion at this revision was known.
    Deleted(i64),
    /// The server answered that it does not exist.
    Missing(usize),
}

#[derive(Debug, Clone, Copy)]
struct End {
    /// An upper bound on when the lease was gone.
    t: u64,
    how: EndEvidence,
    /// A revoke (ok or unknown) of the lease was invoked before `t`.
    revoke_invoked: bool,
}

struct Checker<'a> {
    ops: &'a [Op],
    opts: &'a LeaseCheckOptions,
    coverage: Coverage,
    facts: BTreeMap<i64, Facts>,
    /// Per lease, the observed events on its keys, in revision order.
    watched: BTreeMap<i64, Vec<&'a ObservedEvent>>,
    /// Explicit deletes (ok or unknown) per key.
    deletes: HashMap<&'a str, Vec<usize>>,
    /// Acknowledged operations' (revision, return time), by revision, with
    /// the earliest return at or after each position.
    by_rev: Vec<(i64, u64)>,
    earliest_from: Vec<u64>,
    /// Acknowledged reads' (invoke time, revision), by invoke time, with
    /// the lowest revision at or after each position.
    reads_by_call: Vec<(u64, i64, usize)>,
    lowest_from: Vec<(i64, usize)>,
    reported: Vec<LeaseAnomaly>,
    counts: BTreeMap<LeaseAnomalyKind, usize>,
    leases: LeaseCounts,
    lease_deletions: usize,
    keys_deleted: usize,
    reads_checked: usize,
}

/// Checks a lease history against the observer's log.
pub fn check(
    events: &[Event],
    observed: &[ObserverRecord],
    opts: &LeaseCheckOptions,
) -> Result<LeaseReport, LeaseCheckError> {
    let started = Instant::now();
    let ops = parse(events)?;
    let mut checker = Checker::new(&ops, observed, opts);
    checker.run();
    let observed_events = observed
        .iter()
        .filter(|r| matches!(r, ObserverRecord::Event(_)))
        .count();
    Ok(LeaseReport {
        anomalies: checker.reported,
        counts: checker.counts,
        leases: checker.leases,
        operations: ops.len(),
        lease_deletions: checker.lease_deletions,
        keys_deleted: checker.keys_deleted,
        reads_checked: checker.reads_checked,
        observed_events,
        observer_restarts: checker.coverage.restarts,
        observer_gaps: checker.coverage.gaps.len(),
        elapsed: started.elapsed(),
    })
}

fn secs_ns(ttl: i64) -> u64 {
    (ttl.max(0) as u64).saturating_mul(NS_PER_SEC)
}

fn dur_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn at(t_ns: u64) -> String {
    if t_ns == u64::MAX {
        "never".to_string()
    } else {
        format!("{:.3}s", t_ns as f64 / 1e9)
    }
}

/// The live keys after replaying `events` up to revision `rev`.
fn live_at<'e>(events: &[&'e ObservedEvent], rev: i64) -> BTreeMap<&'e str, &'e ObservedEvent> {
    let mut live = BTreeMap::new();
    for e in events.iter().take_while(|e| e.rev <= rev) {
        match e.kind {
            WatchKind::Put => {
                live.insert(e.key.as_str(), *e);
            }
            WatchKind::Delete => {
                live.remove(e.key.as_str());
            }
        }
    }
    live
}

impl<'a> Checker<'a> {
    fn new(ops: &'a [Op], observed: &'a [ObserverRecord], opts: &'a LeaseCheckOptions) -> Self {
        let mut facts: BTreeMap<i64, Facts> = BTreeMap::new();
        let mut deletes: HashMap<&'a str, Vec<usize>> = HashMap::new();
        let mut by_rev = Vec::new();
        let mut reads_by_call = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if let (Outcome::Ok, Some(rev), Some(ret)) = (op.outcome, op.rev, op.end) {
                by_rev.push((rev, ret));
            }
            if op.outcome == Outcome::Ok && matches!(op.request, LeaseRequest::Read { .. }) {
                if let Some(rev) = op.rev {
                    reads_by_call.push((op.call, rev, i));
                }
            }
            match (&op.request, op.outcome, &op.response) {
                (
                    LeaseRequest::Grant { .. },
                    Outcome::Ok,
                    Some(LeaseResponse::Grant { id, ttl }),
                ) => {
                    let f = facts.entry(*id).or_default();
                    f.grant = Some((i, *ttl));
                    f.renewals.push((i, *ttl));
                }
                (
                    LeaseRequest::Keepalive { id },
                    Outcome::Ok,
                    Some(LeaseResponse::Keepalive { ttl }),
                ) => {
                    let f = facts.entry(*id).or_default();
                    if *ttl > 0 {
                        f.renewals.push((i, *ttl));
                        f.uses.push((i, "a keep-alive renewed it"));
                    } else {
                        f.absent.push((
                            op.end.unwrap_or(u64::MAX),
                            i,
                            "a keep-alive answered TTL 0",
                        ));
                    }
                }
                (LeaseRequest::Keepalive { id }, Outcome::Unknown, _) => {
                    facts.entry(*id).or_default().maybe_renewals.push(i);
                }
                (LeaseRequest::Put { lease, .. }, Outcome::Ok, _) if *lease != 0 => {
                    let f = facts.entry(*lease).or_default();
                    f.puts.push(i);
                    f.uses.push((i, "a put attached to it succeeded"));
                }
                (LeaseRequest::Put { lease, .. }, Outcome::Fail, _)
                    if *lease != 0 && op.lease_not_found() =>
                {
                    facts.entry(*lease).or_default().absent.push((
                        op.end.unwrap_or(u64::MAX),
                        i,
                        "a put attached to it was refused: lease not found",
                    ));
                }
                (LeaseRequest::Revoke { id }, Outcome::Ok | Outcome::Unknown, _) => {
                    facts.entry(*id).or_default().revokes.push(i);
                }
                (LeaseRequest::Revoke { id }, Outcome::Fail, _) if op.lease_not_found() => {
                    facts.entry(*id).or_default().absent.push((
                        op.end.unwrap_or(u64::MAX),
                        i,
                        "a revoke was refused: lease not found",
                    ));
                }
                (LeaseRequest::Ttl { id }, Outcome::Ok, Some(LeaseResponse::Ttl { ttl, .. })) => {
                    let f = facts.entry(*id).or_default();
                    if *ttl >= 0 {
                        f.uses.push((i, "TimeToLive found it"));
                    } else {
                        f.absent.push((
                            op.end.unwrap_or(u64::MAX),
                            i,
                            "TimeToLive answered TTL -1",
                        ));
                    }
                }
                (LeaseRequest::Read { id, .. }, Outcome::Ok, _) => {
                    facts.entry(*id).or_default().reads.push(i);
                }
                (LeaseRequest::Delete { key, .. }, Outcome::Ok | Outcome::Unknown, _) => {
                    deletes.entry(key.as_str()).or_default().push(i);
                }
                _ => {}
            }
        }
        by_rev.sort_unstable();
        let mut earliest_from = vec![u64::MAX; by_rev.len() + 1];
        for i in (0..by_rev.len()).rev() {
            earliest_from[i] = earliest_from[i + 1].min(by_rev[i].1);
        }
        reads_by_call.sort_unstable();
        let mut lowest_from = vec![(i64::MAX, usize::MAX); reads_by_call.len() + 1];
        for i in (0..reads_by_call.len()).rev() {
            let (_, rev, op) = reads_by_call[i];
            lowest_from[i] = lowest_from[i + 1].min((rev, op));
        }

        let mut watched: BTreeMap<i64, Vec<&'a ObservedEvent>> = BTreeMap::new();
        for r in observed {
            if let ObserverRecord::Event(e) = r {
                if let Some(lease) = lease_of_key(&e.key) {
                    watched.entry(lease).or_default().push(e);
                }
            }
        }
        for events in watched.values_mut() {
            events.sort_by_key(|e| e.rev);
        }
        Self {
            ops,
            opts,
            coverage: Coverage::new(observed),
            facts,
            watched,
            deletes,
            by_rev,
            earliest_from,
            reads_by_call,
            lowest_from,
            reported: Vec::new(),
            counts: BTreeMap::new(),
            leases: LeaseCounts::default(),
            lease_deletions: 0,
            keys_deleted: 0,
            reads_checked: 0,
        }
    }

    fn anomaly(&mut self, a: LeaseAnomaly) {
        *self.counts.entry(a.kind).or_default() += 1;
        if self.reported.len() < MAX_REPORTED {
            self.reported.push(a);
        }
    }

    fn index(&self, op: usize) -> u64 {
        self.ops[op].index
    }

    fn describe_op(&self, op: usize) -> String {
        let o = &self.ops[op];
        format!(
            "{} (i={}, {} → {}{})",
            o.request.function(),
            o.index,
            at(o.call),
            at(o.end.unwrap_or(u64::MAX)),
            o.rev.map(|r| format!(", rev {r}")).unwrap_or_default()
        )
    }

    /// The earliest time an acknowledged operation showed that revision
    /// `rev` had been applied somewhere.
    fn applied_by(&self, rev: i64) -> u64 {
        let from = self.by_rev.partition_point(|&(r, _)| r < rev);
        self.earliest_from[from]
    }

    /// Whether an explicit delete of the workload explains the deletion.
    fn explained(&self, e: &ObservedEvent) -> bool {
        self.deletes.get(e.key.as_str()).is_some_and(|ops| {
            ops.iter().any(|&o| {
                let op = &self.ops[o];
                match op.outcome {
                    Outcome::Ok => {
                        op.rev == Some(e.rev)
                            && matches!(op.response, Some(LeaseResponse::Delete { deleted }) if deleted > 0)
                    }
                    Outcome::Unknown => op.call <= e.t_ns,
                    Outcome::Fail => false,
                }
            })
        })
    }

    fn run(&mut self) {
        if let Some((covered, target, t)) = self.coverage.short {
            self.anomaly(LeaseAnomaly {
                kind: LeaseAnomalyKind::ObserverIncomplete,
                lease: 0,
                message: format!(
                    "the observer stopped at {} having received every event up to revision {covered}, short of the final revision {target}",
                    at(t)
                ),
                ops: Vec::new(),
                keys: Vec::new(),
                revisions: vec![covered, target],
            });
        }
        let mut leases: BTreeSet<i64> = self.facts.keys().copied().collect();
        leases.extend(self.watched.keys().copied());
        for lease in leases {
            self.check_lease(lease);
        }
    }

    fn check_lease(&mut self, lease: i64) {
        let facts = self.facts.remove(&lease).unwrap_or_default();
        let events = self.watched.get(&lease).cloned().unwrap_or_default();
        if facts.grant.is_some() {
            self.leases.granted += 1;
        }
        // Events after the grant's revision are all in the log, unless the
        // observer missed some (a gap, or it stopped early).
        let after = facts
            .grant
            .and_then(|(op, _)| self.ops[op].rev)
            .or(self.coverage.from_rev.map(|f| f - 1))
            .unwrap_or(0);
        let observed_fully = self.coverage.complete(after, self.coverage.covered);

        self.check_wrong_lease(lease, &events, &facts);
        let deletion = if observed_fully {
            self.check_deletions(lease, &events)
        } else {
            None
        };
        let end = self.end(&facts, deletion);
        let revoke_acked = facts
            .revokes
            .iter()
            .any(|&o| self.ops[o].outcome == Outcome::Ok);
        match end {
            Some(_) if revoke_acked => self.leases.revoked += 1,
            Some(e) if e.revoke_invoked => self.leases.revoked_or_expired += 1,
            Some(_) => self.leases.expired += 1,
            None => self.leases.open += 1,
        }
        let end_rev = self.end_revision(&facts, deletion);
        self.check_use_after_end(lease, &facts, &events, end, end_rev);
        self.check_early_expiry(lease, &facts, deletion);
        self.check_reads(lease, &facts, &events, end, end_rev, deletion, after);
        self.check_liveness(lease, &facts, end, deletion);
    }

    /// Keys carrying another lease than their name's, in the observer's
    /// events and in reads.
    fn check_wrong_lease(&mut self, lease: i64, events: &[&ObservedEvent], facts: &Facts) {
        let mut keys = BTreeSet::new();
        let mut revisions = BTreeSet::new();
        let mut ops = Vec::new();
        for e in events {
            if e.lease != 0 && e.lease != lease {
                keys.insert(format!(
                    "{} (lease {} at revision {})",
                    e.key, e.lease, e.rev
                ));
                revisions.insert(e.rev);
            }
        }
        for &r in &facts.reads {
            if let Some(LeaseResponse::Read { kvs }) = &self.ops[r].response {
                for kv in kvs.iter().filter(|kv| kv.lease != lease) {
                    keys.insert(format!("{} (lease {} in a read)", kv.key, kv.lease));
                    ops.push(self.index(r));
                }
            }
        }
        if !keys.is_empty() {
            self.anomaly(LeaseAnomaly {
                kind: LeaseAnomalyKind::WrongLease,
                lease,
                message: format!(
                    "keys of lease {lease} carry another lease: {}",
                    keys.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                ops,
                keys: keys.into_iter().collect(),
                revisions: revisions.into_iter().collect(),
            });
        }
    }

    /// The revisions at which the lease deleted its keys; reports a split
    /// deletion and keys left behind. Returns the first such revision and
    /// an upper bound on when it was applied.
    fn check_deletions(&mut self, lease: i64, events: &[&ObservedEvent]) -> Option<(i64, u64)> {
        let mut live: BTreeMap<&str, i64> = BTreeMap::new();
        // revision → (keys deleted by the lease, keys live before, arrival)
        let mut by_lease: BTreeMap<i64, (Vec<String>, BTreeSet<String>, u64)> = BTreeMap::new();
        let mut deleted_at: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
        let mut i = 0;
        while i < events.len() {
            let rev = events[i].rev;
            let group: Vec<&ObservedEvent> = events[i..]
                .iter()
                .take_while(|e| e.rev == rev)
                .copied()
                .collect();
            i += group.len();
            let before: BTreeSet<String> = live.keys().map(|k| k.to_string()).collect();
            for e in &group {
                match e.kind {
                    WatchKind::Put => {
                        live.insert(&e.key, e.rev);
                    }
                    WatchKind::Delete => {
                        live.remove(e.key.as_str());
                        deleted_at.entry(rev).or_default().insert(&e.key);
                        if !self.explained(e) {
                            let entry = by_lease
                                .entry(rev)
                                .or_insert_with(|| (Vec::new(), before.clone(), e.t_ns));
                            entry.0.push(e.key.clone());
                            entry.2 = entry.2.min(e.t_ns);
                        }
                    }
                }
            }
        }
        let (&first, (_, live_before, arrival)) = by_lease.iter().next()?;
        let arrival = *arrival;
        self.lease_deletions += by_lease.len();
        self.keys_deleted += by_lease.values().map(|(k, _, _)| k.len()).sum::<usize>();
        let revisions: Vec<i64> = by_lease.keys().copied().collect();
        if by_lease.len() > 1 {
            let detail: Vec<String> = by_lease
                .iter()
                .map(|(rev, (keys, _, t))| {
                    format!("revision {rev} (received {}): {}", at(*t), keys.join(", "))
                })
                .collect();
            self.anomaly(LeaseAnomaly {
                kind: LeaseAnomalyKind::SplitDeletion,
                lease,
                message: format!(
                    "lease {lease}'s keys were deleted by the lease at {} revisions, not one: {}",
                    by_lease.len(),
                    detail.join("; ")
                ),
                ops: Vec::new(),
                keys: by_lease.values().flat_map(|(k, _, _)| k.clone()).collect(),
                revisions: revisions.clone(),
            });
        }
        let at_first = deleted_at.get(&first).cloned().unwrap_or_default();
        let later: BTreeSet<&str> = by_lease
            .range(first + 1..)
            .flat_map(|(_, (keys, _, _))| keys.iter().map(String::as_str))
            .collect();
        let outlived: Vec<String> = live_before
            .iter()
            .filter(|k| !at_first.contains(k.as_str()) && !later.contains(k.as_str()))
            .cloned()
            .collect();
        if !outlived.is_empty() {
            let fate: Vec<String> = outlived
                .iter()
                .map(|k| {
                    match deleted_at
                        .iter()
                        .find(|(r, keys)| **r > first && keys.contains(k.as_str()))
                    {
                        Some((r, _)) => format!("{k} (deleted explicitly at revision {r})"),
                        None => format!("{k} (never deleted)"),
                    }
                })
                .collect();
            self.anomaly(LeaseAnomaly {
                kind: LeaseAnomalyKind::KeyOutlivedLease,
                lease,
                message: format!(
                    "lease {lease} deleted its keys at revision {first}, but keys live before it were not deleted then: {}",
                    fate.join(", ")
                ),
                ops: Vec::new(),
                keys: outlived,
                revisions: vec![first],
            });
        }
        Some((first, arrival.min(self.applied_by(first))))
    }

    /// The earliest evidence that the lease was gone.
    fn end(&self, facts: &Facts, deletion: Option<(i64, u64)>) -> Option<End> {
        let mut candidates: Vec<(u64, EndEvidence)> = Vec::new();
        for &o in &facts.revokes {
            if let (Outcome::Ok, Some(ret)) = (self.ops[o].outcome, self.ops[o].ret()) {
                candidates.push((ret, EndEvidence::Revoked(o)));
            }
        }
        if let Some((rev, t)) = deletion {
            candidates.push((t, EndEvidence::Deleted(rev)));
        }
        for &(t, o, _) in &facts.absent {
            candidates.push((t, EndEvidence::Missing(o)));
        }
        let (t, how) = candidates.into_iter().min_by_key(|&(t, _)| t)?;
        let revoke_invoked = facts.revokes.iter().any(|&o| self.ops[o].call < t);
        Some(End {
            t,
            how,
            revoke_invoked,
        })
    }

    /// The revision after which the lease certainly no longer existed:
    /// its keys' deletion, or an acknowledged revoke's header revision.
    fn end_revision(&self, facts: &Facts, deletion: Option<(i64, u64)>) -> Option<(i64, bool)> {
        let revoked = facts
            .revokes
            .iter()
            .filter(|&&o| self.ops[o].outcome == Outcome::Ok)
            .filter_map(|&o| self.ops[o].rev)
            .min()
            .map(|r| (r, true));
        let deleted = deletion.map(|(r, _)| (r, false));
        match (revoked, deleted) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    fn check_use_after_end(
        &mut self,
        lease: i64,
        facts: &Facts,
        events: &[&ObservedEvent],
        end: Option<End>,
        end_rev: Option<(i64, bool)>,
    ) {
        let mut lines = Vec::new();
        let mut ops = Vec::new();
        let mut keys = BTreeSet::new();
        let mut revisions = BTreeSet::new();
        if let Some((r_end, _)) = end_rev {
            for &p in &facts.puts {
                if let Some(rev) = self.ops[p].rev.filter(|&rev| rev > r_end) {
                    lines.push(format!(
                        "{} took revision {rev}, after the lease ended at revision {r_end}",
                        self.describe_op(p)
                    ));
                    ops.push(self.index(p));
                    revisions.insert(rev);
                    if let LeaseRequest::Put { key, .. } = &self.ops[p].request {
                        keys.insert(key.clone());
                    }
                }
            }
            for e in events
                .iter()
                .filter(|e| e.kind == WatchKind::Put && e.rev > r_end)
            {
                if revisions.insert(e.rev) {
                    lines.push(format!(
                        "the observer saw {} put at revision {} (received {}), after the lease ended at revision {r_end}",
                        e.key,
                        e.rev,
                        at(e.t_ns)
                    ));
                    keys.insert(e.key.clone());
                }
            }
        }
        if let Some(end) = end {
            let how = match end.how {
                EndEvidence::Revoked(o) => format!("the revoke {} returned", self.describe_op(o)),
                EndEvidence::Deleted(rev) => {
                    format!("its keys' deletion at revision {rev} was known")
                }
                EndEvidence::Missing(o) => format!("{} reported it missing", self.describe_op(o)),
            };
            for &(o, what) in &facts.uses {
                if self.ops[o].call > end.t {
                    lines.push(format!(
                        "{what}: {}, invoked after {how} at {}",
                        self.describe_op(o),
                        at(end.t)
                    ));
                    ops.push(self.index(o));
                }
            }
        }
        if lines.is_empty() {
            return;
        }
        // A revoke invoked before the end (or whose revision ends it) is
        // the likelier cause; otherwise the lease expired.
        let revoked = end.is_some_and(|e| e.revoke_invoked) || end_rev.is_some_and(|(_, r)| r);
        let kind = if revoked {
            LeaseAnomalyKind::UseAfterRevoke
        } else {
            LeaseAnomalyKind::UseAfterExpiry
        };
        self.anomaly(LeaseAnomaly {
            kind,
            lease,
            message: format!(
                "lease {lease} was used after it ended: {}",
                lines.join("; ")
            ),
            ops,
            keys: keys.into_iter().collect(),
            revisions: revisions.into_iter().collect(),
        });
    }

    /// Each piece of evidence that the lease was gone, with no revoke
    /// invoked before it, must come after every acknowledged renewal's
    /// invoke + TTL (renewals invoked before the evidence).
    fn check_early_expiry(&mut self, lease: i64, facts: &Facts, deletion: Option<(i64, u64)>) {
        let mut evidence: Vec<(u64, Option<usize>, String)> = facts
            .absent
            .iter()
            .map(|&(t, o, what)| (t, Some(o), format!("{what} ({})", self.describe_op(o))))
            .collect();
        if let Some((rev, t)) = deletion {
            evidence.push((
                t,
                None,
                format!("its keys' deletion at revision {rev} was known"),
            ));
        }
        let tolerance = dur_ns(EARLY_EXPIRY_TOLERANCE);
        let mut worst: Option<(u64, u64, usize, Option<usize>, String)> = None;
        for (t, op, what) in evidence {
            if facts.revokes.iter().any(|&o| self.ops[o].call < t) {
                continue;
            }
            let bound = facts
                .renewals
                .iter()
                .filter(|&&(o, _)| self.ops[o].call < t)
                .map(|&(o, ttl)| (self.ops[o].call.saturating_add(secs_ns(ttl)), o))
                .max();
            if let Some((bound, renewal)) = bound {
                if t.saturating_add(tolerance) < bound
                    && worst.as_ref().is_none_or(|w| bound - t > w.1 - w.0)
                {
                    worst = Some((t, bound, renewal, op, what));
                }
            }
        }
        if let Some((t, bound, renewal, op, what)) = worst {
            let ttl = facts
                .renewals
                .iter()
                .find(|&&(o, _)| o == renewal)
                .map_or(0, |&(_, ttl)| ttl);
            let mut ops = vec![self.index(renewal)];
            ops.extend(op.map(|o| self.index(o)));
            self.anomaly(LeaseAnomaly {
                kind: LeaseAnomalyKind::EarlyExpiry,
                lease,
                message: format!(
                    "lease {lease} ended {:.3} s early, unrevoked: {what} by {}, but the renewal {} (TTL {ttl} s) keeps it alive until at least {}",
                    (bound - t) as f64 / 1e9,
                    at(t),
                    self.describe_op(renewal),
                    at(bound)
                ),
                ops,
                keys: Vec::new(),
                revisions: deletion.map(|(r, _)| vec![r]).unwrap_or_default(),
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_reads(
        &mut self,
        lease: i64,
        facts: &Facts,
        events: &[&ObservedEvent],
        end: Option<End>,
        end_rev: Option<(i64, bool)>,
        deletion: Option<(i64, u64)>,
        after: i64,
    ) {
        let mut found: BTreeMap<LeaseAnomalyKind, Findings> = BTreeMap::new();
        for &r in &facts.reads {
            let op = &self.ops[r];
            let (Some(LeaseResponse::Read { kvs }), Some(rev)) = (&op.response, op.rev) else {
                continue;
            };
            self.reads_checked += 1;
            let keys: Vec<String> = kvs.iter().map(|kv| kv.key.clone()).collect();
            let problem = if let Some((r_end, _)) =
                end_rev.filter(|&(r_end, _)| rev >= r_end && !kvs.is_empty())
            {
                Some((
                    LeaseAnomalyKind::ReadAfterDeletion,
                    format!(
                        "{} at revision {rev} returned {} though the lease ended at revision {r_end}",
                        self.describe_op(r),
                        keys.join(", ")
                    ),
                ))
            } else if let Some(end) = end.filter(|e| {
                op.call > e.t && (!kvs.is_empty() || deletion.is_some_and(|(d, _)| rev < d))
            }) {
                Some((
                    LeaseAnomalyKind::StaleRead,
                    format!(
                        "{} at revision {rev}, invoked after the lease's end was known at {}, returned {}{}",
                        self.describe_op(r),
                        at(end.t),
                        if keys.is_empty() { "nothing".to_string() } else { keys.join(", ") },
                        deletion.map(|(d, _)| format!(" (the deletion is at revision {d})")).unwrap_or_default()
                    ),
                ))
            } else if self.coverage.complete(after, rev) {
                let live = live_at(events, rev);
                let expected: Vec<(&str, i64, Option<&str>)> = live
                    .values()
                    .map(|e| (e.key.as_str(), e.rev, e.value.as_deref()))
                    .collect();
                let mut got: Vec<(&str, i64, Option<&str>)> = kvs
                    .iter()
                    .map(|kv| (kv.key.as_str(), kv.mod_revision, Some(kv.value.as_str())))
                    .collect();
                got.sort_unstable();
                (got != expected).then(|| {
                    (
                        LeaseAnomalyKind::ReadMismatch,
                        format!(
                            "{} at revision {rev} returned {:?}, but the observed events give {:?} there",
                            self.describe_op(r),
                            got,
                            expected
                        ),
                    )
                })
            } else {
                None
            };
            if let Some((kind, line)) = problem {
                let entry = found.entry(kind).or_default();
                entry.lines.push(line);
                entry.ops.push(op.index);
                entry.keys.extend(keys);
                entry.revisions.insert(rev);
            }
        }
        for (kind, f) in found {
            self.anomaly(LeaseAnomaly {
                kind,
                lease,
                message: format!("lease {lease}: {}", f.lines.join("; ")),
                ops: f.ops,
                keys: f.keys.into_iter().collect(),
                revisions: f.revisions.into_iter().collect(),
            });
        }
    }

    /// The latest moment a renewal may have reached the server, and the
    /// TTL it renewed to; `None` if a keep-alive is still in flight.
    fn last_renewal(&self, facts: &Facts) -> Option<(u64, i64)> {
        let mut latest = 0;
        let mut ttl = 0;
        for &(o, t) in &facts.renewals {
            latest = latest.max(self.ops[o].end?);
            ttl = ttl.max(t);
        }
        for &o in &facts.maybe_renewals {
            latest = latest.max(self.ops[o].end?);
        }
        (ttl > 0).then_some((latest, ttl))
    }

    /// The liveness deadline of a lease last renewed by `renewed` to `ttl`,
    /// and the faults that extended it.
    fn deadline(&self, renewed: u64, ttl: i64) -> (u64, Vec<FaultWindow>) {
        let mut deadline = renewed
            .saturating_add(secs_ns(ttl))
            .saturating_add(dur_ns(self.opts.election_timeout))
            .saturating_add(dur_ns(EXPIRY_SLACK));
        let per_fault = secs_ns(ttl)
            .saturating_add(dur_ns(self.opts.election_timeout).saturating_mul(4))
            .saturating_add(dur_ns(FAULT_SLACK));
        let mut lenient: Vec<FaultWindow> = Vec::new();
        loop {
            let overlapping = self.opts.faults.iter().find(|f| {
                !lenient.contains(f)
                    && f.start_ns <= deadline
                    && f.end_ns.is_none_or(|end| end >= renewed)
            });
            let Some(&fault) = overlapping else { break };
            deadline = deadline.max(
                fault
                    .end_ns
                    .map_or(u64::MAX, |end| end.saturating_add(per_fault)),
            );
            lenient.push(fault);
        }
        (deadline, lenient)
    }

    /// Whether the lease ended by its deadline, when that can be decided.
    fn check_liveness(
        &mut self,
        lease: i64,
        facts: &Facts,
        end: Option<End>,
        deletion: Option<(i64, u64)>,
    ) {
        let Some((renewed, ttl)) = self.last_renewal(facts) else {
            return;
        };
        let (deadline, lenient) = self.deadline(renewed, ttl);
        if deadline == u64::MAX {
            return;
        }
        // Proof that the lease (or its keys) still existed after the deadline.
        let mut proof: Option<(usize, String)> = None;
        for &(o, what) in &facts.uses {
            if self.ops[o].call > deadline && proof.is_none() {
                proof = Some((o, format!("{what}: {}", self.describe_op(o))));
            }
        }
        for &r in &facts.reads {
            let op = &self.ops[r];
            let returned =
                matches!(&op.response, Some(LeaseResponse::Read { kvs }) if !kvs.is_empty());
            if op.call > deadline && returned && proof.is_none() {
                proof = Some((r, format!("{} returned its keys", self.describe_op(r))));
            }
        }
        if let (None, Some((rev, _))) = (&proof, deletion) {
            let from = self
                .reads_by_call
                .partition_point(|&(call, _, _)| call <= deadline);
            let (lowest, op) = self.lowest_from[from];
            if lowest < rev {
                proof = Some((
                    op,
                    format!(
                        "{} read revision {lowest}, before the keys' deletion at revision {rev}",
                        self.describe_op(op)
                    ),
                ));
            }
        }
        let decided = proof.is_some() || end.is_some_and(|e| e.t <= deadline);
        if decided {
            self.leases.liveness_checked += 1;
        }
        let Some((op, what)) = proof else { return };
        let leniency = if lenient.is_empty() {
            "no fault overlapped".to_string()
        } else {
            format!(
                "extended for {} overlapping fault(s) ({}) to each fault's end + TTL + 4 × election timeout + {} s, \
                 since a new leader restarts the lease clock from its last checkpoint (at most the TTL) plus an election timeout",
                lenient.len(),
                lenient
                    .iter()
                    .map(|f| format!("{}–{}", at(f.start_ns), at(f.end_ns.unwrap_or(u64::MAX))))
                    .collect::<Vec<_>>()
                    .join(", "),
                FAULT_SLACK.as_secs()
            )
        };
        self.anomaly(LeaseAnomaly {
            kind: LeaseAnomalyKind::LateExpiry,
            lease,
            message: format!(
                "lease {lease} (TTL {ttl} s, last renewal reached the server by {}) should have been gone by {} \
                 (renewal + TTL + election timeout + {} s; {leniency}), but {what}",
                at(renewed),
                at(deadline),
                EXPIRY_SLACK.as_secs()
            ),
            ops: vec![self.index(op)],
            keys: Vec::new(),
            revisions: deletion.map(|(r, _)| vec![r]).unwrap_or_default(),
        });
    }
}
