//! The watch checker: what watchers streamed, compared with each other and
//! with the kv history (the `watch` workload).
//!
//! # Input
//!
//! One [`WatchLog`] per watcher: every (re)start with its requested start
//! revision, every response (events with `prev_kv`, `created`, `canceled`,
//! `compact_revision`, `fragment`), every cancel the watcher asked for and
//! every broken stream, in the order the watcher saw them, stamped with the
//! run clock. And the kv history of the same run.
//!
//! # What is checked
//!
//! The properties of etcd's robustness tests (`validate/watch.go`, the shared
//! docs' `testing-and-jepsen.md` §2.5), Jepsen's cross-watcher agreement, and
//! the history:
//!
//! - **filter**: every event is on the watched prefix;
//! - **ordered**: within a watcher (across its restarts) event revisions
//!   never decrease; **unique**: no (revision, key) twice;
//! - **atomic**: a revision's events come in one response, unless the
//!   response is a fragment;
//! - **resumable**: a (re)start at R delivers nothing below R; it must
//!   resume at the first revision the watcher has not seen, except right
//!   after a `compact_revision` C > that revision, when it resumes at C: that
//!   skip, and only that, is accepted. A `compact_revision` must be the
//!   revision of a compaction the history asked for, and above the revision
//!   the watcher needed;
//! - **reliable** (no gaps): a session (one start) *covers* the revisions
//!   from its start to the last event it delivered. The revisions with
//!   events are those any watcher saw and those acknowledged writes took;
//!   a watcher must have every one it covered, whole;
//! - **agreement**: all watchers that have a revision have the same events
//!   there (same set, same order, same key-values);
//! - **history**: at a revision an acknowledged write took, the events are
//!   exactly its changes (in the order of its operations); at any other
//!   revision they are the changes of one write whose outcome is unknown
//!   (its deletes may have found nothing), and such a write appears at one
//!   revision only. A value nobody wrote, or whose write failed, is an
//!   anomaly;
//! - **prev_kv** and versions: replaying the merged stream from the
//!   revision where the prefix was empty, each event's `prev_kv` is the
//!   key's previous state (absent for a create; absent is also accepted
//!   where a compaction at or above the event's revision may have removed
//!   it, and on events that arrive after the watcher asked to cancel, which
//!   etcd 3.4 sends without it), a put's `create_revision` and `version` continue the key's, and a
//!   delete is of a live key. Where no watcher covered a revision and a
//!   write with unknown outcome may hide there, the replay forgets what it
//!   knew;
//! - **liveness**: once the cluster has converged on the final write's
//!   revision, every watcher delivers it.
//!
//! Every check is linear in the events (plus sorting).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::history::{self, Event, EventType, HistoryError};
use crate::ops::{DeleteResponse, Kv, Request, Response, TxnOp, TxnOpResponse};

/// How many anomalies a report describes in full; the rest are only counted.
pub const MAX_REPORTED: usize = 64;
/// How many events one message lists.
const EVENTS_SHOWN: usize = 6;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchEventType {
    Put,
    Delete,
}

/// One event of a watch response. A delete's `kv` has the key and the
/// deletion's revision as `mod_revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: WatchEventType,
    pub kv: Kv,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<Kv>,
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }

    /// The same change: type and key-value (`prev_kv` aside, which a
    /// compaction may remove from one watcher's copy and not another's).
    fn same_change(&self, other: &WatchEvent) -> bool {
        self.kind == other.kind && self.kv == other.kv
    }
}

/// One watch response as the watcher received it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseRecord {
    pub watch_id: i64,
    /// The response header's revision.
    #[serde(default)]
    pub revision: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub created: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub canceled: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compact_revision: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cancel_reason: String,
    /// Whether more of this response's last revision follows. `None`: the
    /// client could not tell (the watchers never ask for fragments, and a
    /// server must then not fragment, so `None` counts as `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragment: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<WatchEvent>,
}

/// What happened to a watcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A watch create request (on a new stream) for every key starting
    /// with `key`, from `start_revision` on.
    Start {
        key: String,
        start_revision: i64,
    },
    Response(ResponseRecord),
    /// The watcher asked the server to cancel `watch_id`, to resume
    /// elsewhere; responses may still follow until the stream is dropped.
    Cancel {
        watch_id: i64,
    },
    /// The stream failed or ended; a `Start` follows if the watcher goes on.
    Broken {
        error: String,
    },
}

/// One line of a watcher's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRecord {
    /// The run clock ([`crate::history::RunClock`]), as in the history.
    pub t_ns: u64,
    /// The member the watcher's stream is on.
    pub member: String,
    #[serde(flatten)]
    pub record: Record,
}

/// Everything one watcher saw, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchLog {
    pub name: String,
    pub records: Vec<WatchRecord>,
}

impl WatchLog {
    /// Writes the records as JSONL, one per line.
    pub fn write_jsonl<W: Write>(&self, mut out: W) -> io::Result<()> {
        for r in &self.records {
            serde_json::to_writer(&mut out, r)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Reads a log written by [`WatchLog::write_jsonl`]; blank lines are
    /// skipped.
    pub fn read_jsonl<R: BufRead>(name: &str, input: R) -> Result<Self, WatchCheckError> {
        let mut records = Vec::new();
        for (n, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let record = serde_json::from_str(&line).map_err(|source| WatchCheckError::Json {
                watcher: name.to_string(),
                line: n + 1,
                source,
            })?;
            records.push(record);
        }
        Ok(Self {
            name: name.to_string(),
            records,
        })
    }
}

/// Reads every `*.jsonl` in `dir` as a watcher's log named after the file,
/// sorted by name.
pub fn read_logs(dir: &Path) -> Result<Vec<WatchLog>, WatchCheckError> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    let mut logs = Vec::new();
    for path in paths {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = std::fs::File::open(&path)?;
        logs.push(WatchLog::read_jsonl(&name, io::BufReader::new(file))?);
    }
    Ok(logs)
}

#[derive(Debug, thiserror::Error)]
pub enum WatchCheckError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("event {index}: `v` is not a kv {what}: {source}")]
    BadValue {
        index: u64,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("event {index}: an ok write without the header revision (`rev`)")]
    MissingRevision { index: u64 },
    #[error("events {first} and {second} both write the value {value:?}; the checker needs unique written values")]
    DuplicateValue {
        first: u64,
        second: u64,
        value: String,
    },
    #[error("watcher {watcher}, line {line}: {detail}")]
    Log {
        watcher: String,
        line: usize,
        detail: &'static str,
    },
    #[error("watcher {watcher}, line {line}: {source}")]
    Json {
        watcher: String,
        line: usize,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The kinds of violation the checker finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchAnomalyKind {
    /// An event on a key outside the watched prefix.
    Filter,
    /// An event's revision is below one the watcher already received.
    Unordered,
    /// The same (revision, key) twice in one watcher.
    Duplicate,
    /// A revision's events split over responses that are not fragments.
    NotAtomic,
    /// A watcher covered a revision with events and missed (some of) them.
    Gap,
    /// Watchers saw different events at one revision.
    Disagreement,
    /// An event below the start revision of its watch.
    ResumeBeforeStart,
    /// A restart that skips unseen revisions without a compaction response
    /// allowing it, or that goes back.
    BadResume,
    /// A `compact_revision` no compaction explains, or at or below the
    /// revision the watcher needed.
    BogusCompaction,
    /// An event's `prev_kv` is not the key's previous state.
    PrevKv,
    /// A put's `create_revision`/`version` does not continue the key's, or a
    /// delete of a key that did not exist.
    EventState,
    /// Events that do not match the write the history says took that
    /// revision (or the value's write), or that no single write explains.
    HistoryMismatch,
    /// A value no operation wrote, or a delete no operation may have done.
    PhantomEvent,
    /// A value whose write definitely failed.
    FailedWriteVisible,
    /// One write's changes at two revisions.
    DuplicateWrite,
    /// A watcher did not deliver the final write's revision after the
    /// cluster converged on it.
    Stalled,
}

impl WatchAnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            WatchAnomalyKind::Filter => "filter",
            WatchAnomalyKind::Unordered => "unordered",
            WatchAnomalyKind::Duplicate => "duplicate",
            WatchAnomalyKind::NotAtomic => "not-atomic",
            WatchAnomalyKind::Gap => "gap",
            WatchAnomalyKind::Disagreement => "disagreement",
            WatchAnomalyKind::ResumeBeforeStart => "resume-before-start",
            WatchAnomalyKind::BadResume => "bad-resume",
            WatchAnomalyKind::BogusCompaction => "bogus-compaction",
            WatchAnomalyKind::PrevKv => "prev-kv",
            WatchAnomalyKind::EventState => "event-state",
            WatchAnomalyKind::HistoryMismatch => "history-mismatch",
            WatchAnomalyKind::PhantomEvent => "phantom-event",
            WatchAnomalyKind::FailedWriteVisible => "failed-write-visible",
            WatchAnomalyKind::DuplicateWrite => "duplicate-write",
            WatchAnomalyKind::Stalled => "stalled",
        }
    }
}

impl fmt::Display for WatchAnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One violation, with what shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchAnomaly {
    pub kind: WatchAnomalyKind,
    /// Names the watchers, their log lines (1-based) and the revisions.
    pub message: String,
    pub watchers: Vec<String>,
    pub revisions: Vec<i64>,
    /// The invoke events (`i`) of the history operations involved.
    pub ops: Vec<u64>,
    /// The keys involved, for finding the surrounding operations.
    pub keys: Vec<String>,
}

/// What one watcher did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WatcherStats {
    pub name: String,
    /// Members its streams were on, in order of first use.
    pub members: Vec<String>,
    /// Starts (the first one and every resume).
    pub starts: usize,
    pub responses: usize,
    /// Events accepted into its stream.
    pub events: usize,
    /// Cancels it asked for (resuming watchers).
    pub cancels: usize,
    /// Streams that broke under it.
    pub broken: usize,
    /// Responses with a `compact_revision`.
    pub compacted: usize,
    /// Revisions skipped after compaction responses.
    pub compacted_revisions: i64,
    pub first_revision: Option<i64>,
    pub last_revision: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WatchReport {
    /// The first [`MAX_REPORTED`] anomalies, in the order found.
    pub anomalies: Vec<WatchAnomaly>,
    /// All anomalies, per kind.
    pub counts: BTreeMap<WatchAnomalyKind, usize>,
    pub watchers: Vec<WatcherStats>,
    /// Revisions with events on the prefix (watched or acknowledged).
    pub revisions: usize,
    /// Acknowledged writes that took a revision.
    pub acknowledged: usize,
    /// Of those, how many no watcher covered (so nothing checked them).
    pub acknowledged_unwatched: usize,
    /// Writes with unknown outcome that watchers showed took effect.
    pub resolved: usize,
    /// Events watchers missed in revisions they covered.
    pub missing_events: usize,
    pub elapsed: Duration,
}

impl WatchReport {
    pub fn valid(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn total_anomalies(&self) -> usize {
        self.counts.values().sum()
    }

    /// Events over all watchers.
    pub fn events(&self) -> usize {
        self.watchers.iter().map(|w| w.events).sum()
    }

    /// Restarts over all watchers (starts after the first).
    pub fn resumes(&self) -> usize {
        self.watchers
            .iter()
            .map(|w| w.starts.saturating_sub(1))
            .sum()
    }
}

/// What the checker must know beyond the logs and the history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// No key under the watched prefix existed at this revision, so the
    /// replay starts from an empty state after it.
    pub empty_at: i64,
    /// The final write's revision, once every member reached it: every
    /// watcher must have delivered it. `None`: the run did not converge.
    pub final_revision: Option<i64>,
    /// When compactions outside the history (the nemesis' `compact`) were
    /// invoked, at revisions the checker does not know: after one, any
    /// `compact_revision` above what the watcher needed, and any missing
    /// `prev_kv`, may be its doing.
    pub foreign_compactions: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Unknown,
}

/// What a write does to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Put { value: String, lease: i64 },
    Delete,
}

/// A write or compaction of the history.
struct HistoryOp {
    /// The invoke event's `i`.
    index: u64,
    outcome: Outcome,
    request: Request,
    /// An ok write's header revision.
    rev: i64,
    /// What an ok write changed, in order (empty: nothing).
    changes: Vec<(String, Change)>,
}

struct ValueWriter {
    op: usize,
    key: String,
    lease: i64,
}

/// The history's writes, indexed for the checks.
struct Writes {
    ops: Vec<HistoryOp>,
    /// Revision → the first acknowledged write that took it.
    by_revision: BTreeMap<i64, usize>,
    by_value: HashMap<String, ValueWriter>,
    /// Keys deleted by a `Delete` request with unknown outcome.
    unknown_deletes: HashSet<String>,
    /// Compactions that did not fail: (revision, invoke time).
    compactions: Vec<(i64, u64)>,
    /// Invoke times of compactions at unknown revisions.
    foreign_compactions: Vec<u64>,
}

fn changes_of(ops: &[TxnOp]) -> Vec<(String, Change)> {
    ops.iter()
        .filter_map(|o| match o {
            TxnOp::Put(p) => Some((
                p.key.clone(),
                Change::Put {
                    value: p.value.clone(),
                    lease: p.lease,
                },
            )),
            TxnOp::Delete(d) => Some((d.key.clone(), Change::Delete)),
            TxnOp::Range(_) => None,
        })
        .collect()
}

/// What an ok operation changed, in order: its puts, and its deletes that
/// found something.
fn ok_changes(request: &Request, response: &Response) -> Vec<(String, Change)> {
    let found = |d: &DeleteResponse| d.deleted > 0;
    match (request, response) {
        (Request::Put(p), Response::Put(_)) => changes_of(&[TxnOp::Put(p.clone())]),
        (Request::Delete(d), Response::Delete(r)) if found(r) => {
            vec![(d.key.clone(), Change::Delete)]
        }
        (Request::Txn(t), Response::Txn(r)) => {
            let branch = if r.succeeded { &t.success } else { &t.failure };
            branch
                .iter()
                .zip(&r.results)
                .filter(|(o, res)| match (o, res) {
                    (TxnOp::Delete(_), TxnOpResponse::Delete(d)) => found(d),
                    (TxnOp::Put(_), _) => true,
                    _ => false,
                })
                .flat_map(|(o, _)| changes_of(std::slice::from_ref(o)))
                .collect()
        }
        _ => Vec::new(),
    }
}

impl Writes {
    fn parse(events: &[Event], foreign_compactions: &[u64]) -> Result<Self, WatchCheckError> {
        let mut writes = Writes {
            ops: Vec::new(),
            by_revision: BTreeMap::new(),
            by_value: HashMap::new(),
            unknown_deletes: HashSet::new(),
            compactions: Vec::new(),
            foreign_compactions: foreign_compactions.to_vec(),
        };
        for pair in history::pair_events(events)? {
            let invoke = &events[pair.invoke];
            let request: Request =
                serde_json::from_value(invoke.value.clone()).map_err(|source| {
                    WatchCheckError::BadValue {
                        index: invoke.index,
                        what: "request",
                        source,
                    }
                })?;
            let is_compact = matches!(request, Request::Compact { .. });
            if !request.may_write() && !is_compact {
                continue;
            }
            let done = pair.completion.map(|c| &events[c]);
            let (outcome, rev, changes) = match done {
                Some(d) if d.kind == EventType::Ok => {
                    let response: Response =
                        serde_json::from_value(d.value.clone()).map_err(|source| {
                            WatchCheckError::BadValue {
                                index: d.index,
                                what: "response",
                                source,
                            }
                        })?;
                    let rev = d
                        .rev
                        .ok_or(WatchCheckError::MissingRevision { index: d.index })?;
                    (Outcome::Ok, rev, ok_changes(&request, &response))
                }
                Some(d) if d.kind == EventType::Fail => (Outcome::Fail, 0, Vec::new()),
                _ => (Outcome::Unknown, 0, Vec::new()),
            };
            let op = writes.ops.len();
            match &request {
                Request::Compact { revision } if outcome != Outcome::Fail => {
                    writes.compactions.push((*revision, invoke.t_ns));
                }
                Request::Delete(d) if outcome == Outcome::Unknown => {
                    writes.unknown_deletes.insert(d.key.clone());
                }
                _ => {}
            }
            let puts: Vec<_> = match &request {
                Request::Put(p) => vec![p.clone()],
                Request::Txn(t) => t
                    .success
                    .iter()
                    .chain(&t.failure)
                    .filter_map(|o| match o {
                        TxnOp::Put(p) => Some(p.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for p in puts {
                let writer = ValueWriter {
                    op,
                    key: p.key.clone(),
                    lease: p.lease,
                };
                if let Some(first) = writes.by_value.insert(p.value.clone(), writer) {
                    if first.op != op {
                        return Err(WatchCheckError::DuplicateValue {
                            first: writes.ops[first.op].index,
                            second: invoke.index,
                            value: p.value,
                        });
                    }
                }
            }
            if outcome == Outcome::Ok && !changes.is_empty() {
                writes.by_revision.entry(rev).or_insert(op);
            }
            writes.ops.push(HistoryOp {
                index: invoke.index,
                outcome,
                request,
                rev,
                changes,
            });
        }
        Ok(writes)
    }

    /// The changes of an unknown write whose put of `value` was seen: the
    /// txn branch holding it.
    fn unknown_changes(&self, op: usize, value: &str) -> Vec<(String, Change)> {
        match &self.ops[op].request {
            Request::Put(p) => changes_of(&[TxnOp::Put(p.clone())]),
            Request::Txn(t) => {
                let holds = |branch: &[TxnOp]| {
                    branch
                        .iter()
                        .any(|o| matches!(o, TxnOp::Put(p) if p.value == value))
                };
                if holds(&t.success) {
                    changes_of(&t.success)
                } else {
                    changes_of(&t.failure)
                }
            }
            _ => Vec::new(),
        }
    }

    /// Whether a compaction at or above `revision`, invoked before `t_ns`,
    /// may have removed the state at `revision - 1`.
    fn compacted_below(&self, revision: i64, t_ns: u64) -> bool {
        self.foreign_before(t_ns)
            || self
                .compactions
                .iter()
                .any(|&(rev, call)| rev >= revision && call <= t_ns)
    }

    /// Whether a compaction at `revision` was invoked before `t_ns`.
    fn compaction_requested(&self, revision: i64, t_ns: u64) -> bool {
        self.foreign_before(t_ns)
            || self
                .compactions
                .iter()
                .any(|&(rev, call)| rev == revision && call <= t_ns)
    }

    /// Whether a compaction at an unknown revision was invoked before `t_ns`.
    fn foreign_before(&self, t_ns: u64) -> bool {
        self.foreign_compactions.iter().any(|&t| t <= t_ns)
    }
}

/// Whether `events` are exactly `changes`, in order; with
/// `deletes_optional`, deletes of `changes` may be missing (an unknown
/// write's delete that found nothing changes nothing).
fn matches_changes(
    events: &[&WatchEvent],
    changes: &[(String, Change)],
    deletes_optional: bool,
) -> bool {
    let mut i = 0;
    for (key, change) in changes {
        let hit = events.get(i).is_some_and(|e| {
            e.kv.key == *key
                && match change {
                    Change::Put { value, lease } => {
                        e.kind == WatchEventType::Put
                            && e.kv.value == *value
                            && e.kv.lease == *lease
                    }
                    Change::Delete => e.kind == WatchEventType::Delete,
                }
        });
        if hit {
            i += 1;
        } else if !(deletes_optional && *change == Change::Delete) {
            return false;
        }
    }
    i == events.len()
}

fn describe_changes(changes: &[(String, Change)]) -> String {
    let mut parts: Vec<String> = changes
        .iter()
        .take(EVENTS_SHOWN)
        .map(|(key, c)| match c {
            Change::Put { value, lease } if *lease != 0 => {
                format!("put {key}={value} (lease {lease})")
            }
            Change::Put { value, .. } => format!("put {key}={value}"),
            Change::Delete => format!("delete {key}"),
        })
        .collect();
    if changes.len() > EVENTS_SHOWN {
        parts.push(format!("… {} more", changes.len() - EVENTS_SHOWN));
    }
    format!("[{}]", parts.join(", "))
}

fn describe_events(events: &[&WatchEvent]) -> String {
    let mut parts: Vec<String> = events
        .iter()
        .take(EVENTS_SHOWN)
        .map(|e| match e.kind {
            WatchEventType::Put => format!(
                "put {}={} (create {}, version {}{})",
                e.kv.key,
                e.kv.value,
                e.kv.create_revision,
                e.kv.version,
                if e.kv.lease != 0 {
                    format!(", lease {}", e.kv.lease)
                } else {
                    String::new()
                }
            ),
            WatchEventType::Delete => format!("delete {}", e.kv.key),
        })
        .collect();
    if events.len() > EVENTS_SHOWN {
        parts.push(format!("… {} more", events.len() - EVENTS_SHOWN));
    }
    format!("[{}]", parts.join(", "))
}

fn describe_kv(kv: Option<&Kv>) -> String {
    match kv {
        None => "absent".to_string(),
        Some(kv) => format!(
            "{}={} (create {}, mod {}, version {}, lease {})",
            kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease
        ),
    }
}

/// A place in a watcher's log, for messages: `m0:57 (3.214s)`.
fn at(log: &WatchLog, record: usize) -> String {
    format!(
        "{}:{} ({:.3}s)",
        log.name,
        record + 1,
        log.records[record].t_ns as f64 / 1e9
    )
}

/// The events one watcher has at one revision.
struct Received<'a> {
    events: Vec<&'a WatchEvent>,
    /// The record that brought the first of them.
    record: usize,
    t_ns: u64,
    /// They came after the watcher asked to cancel the watch: etcd (3.4's
    /// v3rpc forgets a watch's `prev_kv` flag when it reads the cancel)
    /// flushes such events without `prev_kv`.
    after_cancel: bool,
}

/// One start of a watcher and what it delivered: it covers
/// `start..=last`.
struct Coverage {
    start: i64,
    last: i64,
    /// The record of the start.
    record: usize,
}

/// One watcher, parsed.
struct Watcher<'a> {
    log: &'a WatchLog,
    received: BTreeMap<i64, Received<'a>>,
    coverage: Vec<Coverage>,
    stats: WatcherStats,
}

/// Where the merged stream's events at a revision come from.
enum Truth<'a> {
    /// The events most watchers (or those agreeing with the history) saw,
    /// and the watchers that saw exactly these.
    Watched {
        events: Vec<&'a WatchEvent>,
        agreeing: Vec<usize>,
    },
    /// No watcher has the revision; an acknowledged write took it.
    Acknowledged(usize),
}

/// A key's state in the replay; `None` if not known (a write with unknown
/// outcome may have changed it where no watcher looked).
type Slot = Option<Option<Kv>>;

struct Checker<'a> {
    writes: Writes,
    /// The watchers' names, by position (known before they are parsed).
    watcher_names: Vec<String>,
    options: CheckOptions,
    watchers: Vec<Watcher<'a>>,
    truth: BTreeMap<i64, Truth<'a>>,
    /// Unknown writes the watchers showed, with their revision.
    resolved: HashMap<usize, i64>,
    missing_events: usize,
    reported: Vec<WatchAnomaly>,
    counts: BTreeMap<WatchAnomalyKind, usize>,
}

/// Checks watch logs against each other and against the kv history of the
/// same run.
pub fn check(
    events: &[Event],
    logs: &[WatchLog],
    options: &CheckOptions,
) -> Result<WatchReport, WatchCheckError> {
    let started = Instant::now();
    let mut checker = Checker {
        writes: Writes::parse(events, &options.foreign_compactions)?,
        watcher_names: logs.iter().map(|l| l.name.clone()).collect(),
        options: options.clone(),
        watchers: Vec::new(),
        truth: BTreeMap::new(),
        resolved: HashMap::new(),
        missing_events: 0,
        reported: Vec::new(),
        counts: BTreeMap::new(),
    };
    for log in logs {
        let watcher = checker.parse_watcher(log)?;
        checker.watchers.push(watcher);
    }
    checker.merge();
    checker.check_gaps();
    checker.replay();
    checker.check_liveness();
    let acknowledged = checker.writes.by_revision.len();
    let coverage = checker.merged_coverage();
    let acknowledged_unwatched = checker
        .writes
        .by_revision
        .keys()
        .filter(|&&rev| !covered(&coverage, rev))
        .count();
    Ok(WatchReport {
        revisions: checker.truth.len(),
        acknowledged,
        acknowledged_unwatched,
        resolved: checker.resolved.len(),
        missing_events: checker.missing_events,
        watchers: checker.watchers.into_iter().map(|w| w.stats).collect(),
        anomalies: checker.reported,
        counts: checker.counts,
        elapsed: started.elapsed(),
    })
}

impl<'a> Checker<'a> {
    fn anomaly(&mut self, kind: WatchAnomalyKind, message: String, with: Involved) {
        *self.counts.entry(kind).or_default() += 1;
        if self.reported.len() < MAX_REPORTED {
            let Involved {
                watchers,
                revisions,
                ops,
                mut keys,
            } = with;
            keys.sort();
            keys.dedup();
            self.reported.push(WatchAnomaly {
                kind,
                message,
                watchers: watchers
                    .iter()
                    .map(|&w| self.watcher_names[w].clone())
                    .collect(),
                revisions,
                ops: ops.iter().map(|&o| self.writes.ops[o].index).collect(),
                keys,
            });
        }
    }

    /// Per watcher: filter, order, uniqueness, atomicity, resumes and
    /// compaction responses; what it received and which revisions it
    /// covered.
    fn parse_watcher(&mut self, log: &'a WatchLog) -> Result<Watcher<'a>, WatchCheckError> {
        let me = self.watchers.len();
        let mut w = Watcher {
            log,
            received: BTreeMap::new(),
            coverage: Vec::new(),
            stats: WatcherStats {
                name: log.name.clone(),
                ..WatcherStats::default()
            },
        };
        let mut seen: HashSet<(i64, &str)> = HashSet::new();
        let mut last: Option<i64> = None;
        // The lowest revision the watcher has not accounted for.
        let mut next: Option<i64> = None;
        // The current start: (revision, key, record); `None` between a
        // broken stream and the next start.
        let mut session: Option<(i64, &str, usize)> = None;
        let mut session_last: Option<i64> = None;
        // The last event revision of the previous response in this session,
        // and whether that response was a fragment.
        let mut previous_response: Option<(i64, bool, usize)> = None;
        let mut compacted_at: Option<i64> = None;
        let mut cancel_requested = false;
        let close =
            |w: &mut Watcher<'a>, session: Option<(i64, &str, usize)>, last: Option<i64>| {
                if let (Some((start, _, record)), Some(last)) = (session, last) {
                    w.coverage.push(Coverage {
                        start,
                        last,
                        record,
                    });
                }
            };
        for (r, record) in log.records.iter().enumerate() {
            if !w.stats.members.contains(&record.member) {
                w.stats.members.push(record.member.clone());
            }
            match &record.record {
                Record::Start {
                    key,
                    start_revision,
                } => {
                    close(&mut w, session, session_last);
                    let start = *start_revision;
                    w.stats.starts += 1;
                    if let Some(expected) = next {
                        let skip_allowed = compacted_at == Some(start) && expected < start;
                        if start > expected && !skip_allowed {
                            let message = format!(
                                "{} restarted at revision {start}, but had seen everything only up to {} and no compaction response allowed skipping revisions {expected}..={}",
                                at(log, r),
                                expected - 1,
                                start - 1
                            );
                            self.anomaly(
                                WatchAnomalyKind::BadResume,
                                message,
                                Involved::watcher(me).revisions(vec![expected, start]),
                            );
                        } else if start < expected {
                            let message = format!(
                                "{} restarted at revision {start}, below {expected}, the first revision it had not seen: it would receive revisions twice",
                                at(log, r)
                            );
                            self.anomaly(
                                WatchAnomalyKind::BadResume,
                                message,
                                Involved::watcher(me).revisions(vec![start, expected]),
                            );
                        } else if start > expected {
                            w.stats.compacted_revisions += start - expected;
                        }
                    }
                    next = Some(start);
                    session = Some((start, key.as_str(), r));
                    session_last = None;
                    previous_response = None;
                    compacted_at = None;
                    cancel_requested = false;
                }
                Record::Cancel { .. } => {
                    w.stats.cancels += 1;
                    cancel_requested = true;
                }
                Record::Broken { .. } => {
                    w.stats.broken += 1;
                    close(&mut w, session.take(), session_last.take());
                    previous_response = None;
                }
                Record::Response(response) => {
                    let Some((start, key, _)) = session else {
                        return Err(WatchCheckError::Log {
                            watcher: log.name.clone(),
                            line: r + 1,
                            detail:
                                "a response outside any watch (no start since the stream broke)",
                        });
                    };
                    w.stats.responses += 1;
                    let mut first_in_response = true;
                    for event in &response.events {
                        let rev = event.revision();
                        if !event.kv.key.starts_with(key) {
                            let message = format!(
                                "{}: an event on {:?} at revision {rev}, outside the watched prefix {key:?}",
                                at(log, r),
                                event.kv.key
                            );
                            self.anomaly(
                                WatchAnomalyKind::Filter,
                                message,
                                Involved::watcher(me)
                                    .revisions(vec![rev])
                                    .keys(vec![event.kv.key.clone()]),
                            );
                            continue;
                        }
                        if rev < start {
                            let message = format!(
                                "{}: an event at revision {rev} on {}, below the watch's start revision {start}",
                                at(log, r),
                                event.kv.key
                            );
                            self.anomaly(
                                WatchAnomalyKind::ResumeBeforeStart,
                                message,
                                Involved::watcher(me)
                                    .revisions(vec![rev, start])
                                    .keys(vec![event.kv.key.clone()]),
                            );
                            continue;
                        }
                        if let Some(l) = last.filter(|&l| rev < l) {
                            let message = format!(
                                "{}: an event at revision {rev} on {} after one at revision {l}",
                                at(log, r),
                                event.kv.key
                            );
                            self.anomaly(
                                WatchAnomalyKind::Unordered,
                                message,
                                Involved::watcher(me)
                                    .revisions(vec![l, rev])
                                    .keys(vec![event.kv.key.clone()]),
                            );
                            continue;
                        }
                        if !seen.insert((rev, event.kv.key.as_str())) {
                            let message = format!(
                                "{}: a second event at revision {rev} on {}",
                                at(log, r),
                                event.kv.key
                            );
                            self.anomaly(
                                WatchAnomalyKind::Duplicate,
                                message,
                                Involved::watcher(me)
                                    .revisions(vec![rev])
                                    .keys(vec![event.kv.key.clone()]),
                            );
                            continue;
                        }
                        if first_in_response {
                            first_in_response = false;
                            if let Some((prev, false, prev_record)) = previous_response {
                                if prev == rev {
                                    let message = format!(
                                        "revision {rev} split over responses {} and {}, the first not a fragment",
                                        at(log, prev_record),
                                        at(log, r)
                                    );
                                    self.anomaly(
                                        WatchAnomalyKind::NotAtomic,
                                        message,
                                        Involved::watcher(me).revisions(vec![rev]),
                                    );
                                }
                            }
                        }
                        w.received
                            .entry(rev)
                            .or_insert_with(|| Received {
                                events: Vec::new(),
                                record: r,
                                t_ns: record.t_ns,
                                after_cancel: cancel_requested,
                            })
                            .events
                            .push(event);
                        w.stats.events += 1;
                        w.stats.first_revision.get_or_insert(rev);
                        w.stats.last_revision = Some(rev);
                        last = Some(rev);
                        session_last = Some(rev);
                        next = Some(next.map_or(rev + 1, |n| n.max(rev + 1)));
                    }
                    if let Some(rev) = session_last {
                        previous_response = Some((rev, response.fragment == Some(true), r));
                    }
                    if response.compact_revision != 0 {
                        w.stats.compacted += 1;
                        let c = response.compact_revision;
                        let needed = next.unwrap_or(start);
                        let requested = self.writes.compaction_requested(c, record.t_ns);
                        if c <= needed {
                            let message = format!(
                                "{}: compact_revision {c}, but the watcher needed revisions from {needed} on, which compaction at {c} keeps",
                                at(log, r)
                            );
                            self.anomaly(
                                WatchAnomalyKind::BogusCompaction,
                                message,
                                Involved::watcher(me).revisions(vec![needed, c]),
                            );
                        } else if !requested {
                            let message = format!(
                                "{}: compact_revision {c}, but no compaction to revision {c} was requested before",
                                at(log, r)
                            );
                            self.anomaly(
                                WatchAnomalyKind::BogusCompaction,
                                message,
                                Involved::watcher(me).revisions(vec![c]),
                            );
                        }
                        compacted_at = Some(c);
                    }
                }
            }
        }
        close(&mut w, session, session_last);
        Ok(w)
    }

    /// Builds the merged stream: per revision, the watchers' versions
    /// compared with each other and with the history; then the revisions
    /// only acknowledged writes show.
    fn merge(&mut self) {
        let mut revisions: BTreeSet<i64> = BTreeSet::new();
        for w in &self.watchers {
            revisions.extend(w.received.keys().copied());
        }
        for rev in revisions {
            // Distinct versions of the revision, with who saw each.
            let mut groups: Vec<(Vec<&'a WatchEvent>, Vec<usize>)> = Vec::new();
            for (i, w) in self.watchers.iter().enumerate() {
                let Some(got) = w.received.get(&rev) else {
                    continue;
                };
                let same = |g: &Vec<&'a WatchEvent>| {
                    g.len() == got.events.len()
                        && g.iter().zip(&got.events).all(|(a, b)| a.same_change(b))
                };
                match groups.iter_mut().find(|(g, _)| same(g)) {
                    Some((_, who)) => who.push(i),
                    None => groups.push((got.events.clone(), vec![i])),
                }
            }
            let acknowledged = self.writes.by_revision.get(&rev).copied();
            let matches_history = |g: &[&WatchEvent]| {
                acknowledged
                    .is_some_and(|op| matches_changes(g, &self.writes.ops[op].changes, false))
            };
            let canonical = (0..groups.len())
                .max_by_key(|&g| {
                    (
                        matches_history(&groups[g].0),
                        groups[g].1.len(),
                        groups[g].0.len(),
                        std::cmp::Reverse(groups[g].1[0]),
                    )
                })
                .expect("a revision someone received");
            let mut disagreeing = Vec::new();
            for (g, (events, who)) in groups.iter().enumerate() {
                if g == canonical {
                    continue;
                }
                let canon = &groups[canonical].0;
                if is_subsequence(events, canon) {
                    for &w in who {
                        self.missing_events += canon.len() - events.len();
                        let log = self.watchers[w].log;
                        let record = self.watchers[w].received[&rev].record;
                        let message = format!(
                            "{} has {} of the {} events of revision {rev}: {} instead of {} (as {})",
                            at(log, record),
                            events.len(),
                            canon.len(),
                            describe_events(events),
                            describe_events(canon),
                            self.names(&groups[canonical].1)
                        );
                        let keys = canon.iter().map(|e| e.kv.key.clone()).collect();
                        let ops = acknowledged.into_iter().collect();
                        self.anomaly(
                            WatchAnomalyKind::Gap,
                            message,
                            Involved::watcher(w)
                                .revisions(vec![rev])
                                .keys(keys)
                                .ops(ops),
                        );
                    }
                } else {
                    disagreeing.push(g);
                }
            }
            // Partial copies are gaps; the full versions must match the
            // history.
            for &g in std::iter::once(&canonical).chain(&disagreeing) {
                self.check_history(rev, &groups[g].0, &groups[g].1);
            }
            if !disagreeing.is_empty() {
                let mut message = format!(
                    "watchers disagree on revision {rev}: {} saw {}",
                    self.names(&groups[canonical].1),
                    describe_events(&groups[canonical].0)
                );
                let mut who = groups[canonical].1.clone();
                let mut keys: Vec<String> = Vec::new();
                for &g in &disagreeing {
                    message.push_str(&format!(
                        "; {} saw {}",
                        self.names(&groups[g].1),
                        describe_events(&groups[g].0)
                    ));
                    who.extend(&groups[g].1);
                }
                for (events, _) in &groups {
                    keys.extend(events.iter().map(|e| e.kv.key.clone()));
                }
                let ops = acknowledged.into_iter().collect();
                self.anomaly(
                    WatchAnomalyKind::Disagreement,
                    message,
                    Involved {
                        watchers: who,
                        revisions: vec![rev],
                        ops,
                        keys,
                    },
                );
            }
            let (events, agreeing) = groups.swap_remove(canonical);
            self.truth.insert(rev, Truth::Watched { events, agreeing });
        }
        for (&rev, &op) in &self.writes.by_revision {
            self.truth.entry(rev).or_insert(Truth::Acknowledged(op));
        }
    }

    fn names(&self, watchers: &[usize]) -> String {
        watchers
            .iter()
            .map(|&w| self.watcher_names[w].as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One version of a revision against the history: the acknowledged
    /// write that took it, or else one write with unknown outcome.
    fn check_history(&mut self, rev: i64, events: &[&'a WatchEvent], who: &[usize]) {
        let keys: Vec<String> = events.iter().map(|e| e.kv.key.clone()).collect();
        let involved = |ops: Vec<usize>| Involved {
            watchers: who.to_vec(),
            revisions: vec![rev],
            ops,
            keys: keys.clone(),
        };
        if let Some(&op) = self.writes.by_revision.get(&rev) {
            let changes = &self.writes.ops[op].changes;
            if !matches_changes(events, changes, false) {
                let message = format!(
                    "revision {rev}: {} saw {}, but the acknowledged write that took revision {rev} made {}",
                    self.names(who),
                    describe_events(events),
                    describe_changes(changes)
                );
                self.anomaly(
                    WatchAnomalyKind::HistoryMismatch,
                    message,
                    involved(vec![op]),
                );
            }
            return;
        }
        let puts: Vec<&&WatchEvent> = events
            .iter()
            .filter(|e| e.kind == WatchEventType::Put)
            .collect();
        if puts.is_empty() {
            let explained =
                events.len() == 1 && self.writes.unknown_deletes.contains(&events[0].kv.key);
            if !explained {
                let message = format!(
                    "revision {rev}: {} saw {}; no acknowledged write took revision {rev}, and no delete with unknown outcome does that",
                    self.names(who),
                    describe_events(events)
                );
                self.anomaly(
                    WatchAnomalyKind::PhantomEvent,
                    message,
                    involved(Vec::new()),
                );
            }
            return;
        }
        let mut writer: Option<(usize, &str)> = None;
        for e in puts {
            let value = e.kv.value.as_str();
            let Some(vw) = self.writes.by_value.get(value) else {
                let message = format!(
                    "revision {rev}: {} saw {}={value}, a value no operation wrote",
                    self.names(who),
                    e.kv.key
                );
                self.anomaly(
                    WatchAnomalyKind::PhantomEvent,
                    message,
                    involved(Vec::new()),
                );
                return;
            };
            let op = vw.op;
            if vw.key != e.kv.key || vw.lease != e.kv.lease {
                let message = format!(
                    "revision {rev}: {} saw {}={value} with lease {}, but that value was written to {} with lease {}",
                    self.names(who),
                    e.kv.key,
                    e.kv.lease,
                    vw.key,
                    vw.lease
                );
                self.anomaly(
                    WatchAnomalyKind::HistoryMismatch,
                    message,
                    involved(vec![op]),
                );
                return;
            }
            match self.writes.ops[op].outcome {
                Outcome::Fail => {
                    let message = format!(
                        "revision {rev}: {} saw {}={value}, written by an operation that failed",
                        self.names(who),
                        e.kv.key
                    );
                    self.anomaly(
                        WatchAnomalyKind::FailedWriteVisible,
                        message,
                        involved(vec![op]),
                    );
                    return;
                }
                Outcome::Ok => {
                    let message = format!(
                        "revision {rev}: {} saw {}={value}, but the acknowledged write of that value took revision {}",
                        self.names(who),
                        e.kv.key,
                        self.writes.ops[op].rev
                    );
                    self.anomaly(
                        WatchAnomalyKind::HistoryMismatch,
                        message,
                        involved(vec![op]),
                    );
                    return;
                }
                Outcome::Unknown => {}
            }
            match writer {
                Some((other, _)) if other != op => {
                    let message = format!(
                        "revision {rev}: {} saw {}, the changes of two different writes in one revision",
                        self.names(who),
                        describe_events(events)
                    );
                    self.anomaly(
                        WatchAnomalyKind::HistoryMismatch,
                        message,
                        involved(vec![other, op]),
                    );
                    return;
                }
                _ => writer = Some((op, value)),
            }
        }
        let Some((op, value)) = writer else {
            return;
        };
        let changes = self.writes.unknown_changes(op, value);
        if !matches_changes(events, &changes, true) {
            let message = format!(
                "revision {rev}: {} saw {}, but the write (outcome unknown) of {value} would make {}",
                self.names(who),
                describe_events(events),
                describe_changes(&changes)
            );
            self.anomaly(
                WatchAnomalyKind::HistoryMismatch,
                message,
                involved(vec![op]),
            );
            return;
        }
        match self.resolved.get(&op) {
            Some(&other) if other != rev => {
                let message = format!(
                    "the write (outcome unknown) of {value} appears at revision {other} and at revision {rev}"
                );
                let mut with = involved(vec![op]);
                with.revisions = vec![other, rev];
                self.anomaly(WatchAnomalyKind::DuplicateWrite, message, with);
            }
            Some(_) => {}
            None => {
                self.resolved.insert(op, rev);
            }
        }
    }

    /// Every watcher has every revision with events that it covered.
    fn check_gaps(&mut self) {
        let mut found = Vec::new();
        for (w, watcher) in self.watchers.iter().enumerate() {
            for c in &watcher.coverage {
                // Consecutive missing revisions of one start become one
                // anomaly.
                let mut run: Vec<i64> = Vec::new();
                let mut missing_events = 0;
                for (&rev, truth) in self.truth.range(c.start..=c.last) {
                    if watcher.received.contains_key(&rev) {
                        if !run.is_empty() {
                            found.push((w, c, std::mem::take(&mut run), missing_events));
                            missing_events = 0;
                        }
                        continue;
                    }
                    run.push(rev);
                    missing_events += match truth {
                        Truth::Watched { events, .. } => events.len(),
                        Truth::Acknowledged(op) => self.writes.ops[*op].changes.len(),
                    };
                }
                if !run.is_empty() {
                    found.push((w, c, run, missing_events));
                }
            }
        }
        let found: Vec<_> = found
            .into_iter()
            .map(|(w, c, run, missing)| (w, (c.start, c.last, c.record), run, missing))
            .collect();
        for (w, (start, delivered, record), run, missing_events) in found {
            self.missing_events += missing_events;
            let log = self.watchers[w].log;
            let (first, last) = (run[0], run[run.len() - 1]);
            let mut ops = Vec::new();
            let mut keys = Vec::new();
            let mut what = Vec::new();
            for rev in run.iter().take(EVENTS_SHOWN) {
                match &self.truth[rev] {
                    Truth::Watched { events, agreeing } => {
                        keys.extend(events.iter().map(|e| e.kv.key.clone()));
                        what.push(format!(
                            "{rev}: {} (seen by {})",
                            describe_events(events),
                            self.names(agreeing)
                        ));
                    }
                    Truth::Acknowledged(op) => {
                        let changes = &self.writes.ops[*op].changes;
                        keys.extend(changes.iter().map(|(k, _)| k.clone()));
                        what.push(format!(
                            "{rev}: {} (acknowledged write, seen by no watcher)",
                            describe_changes(changes)
                        ));
                    }
                }
                if let Some(&op) = self.writes.by_revision.get(rev) {
                    ops.push(op);
                }
            }
            if run.len() > EVENTS_SHOWN {
                what.push(format!("… {} more", run.len() - EVENTS_SHOWN));
            }
            let message = format!(
                "the watch from revision {start} started at {} delivered revision {delivered} but missed {} earlier revision(s) with events ({first}..={last}, {missing_events} events): {}",
                at(log, record),
                run.len(),
                what.join("; ")
            );
            self.anomaly(
                WatchAnomalyKind::Gap,
                message,
                Involved {
                    watchers: vec![w],
                    revisions: run,
                    ops,
                    keys,
                },
            );
        }
    }

    /// Unknown writes no watcher showed: they may sit at any revision no
    /// watcher covered.
    fn unseen_unknown_writes(&self) -> bool {
        self.writes.ops.iter().enumerate().any(|(i, op)| {
            op.outcome == Outcome::Unknown
                && op.request.may_write()
                && !self.resolved.contains_key(&i)
        })
    }

    /// Merged coverage: sorted, disjoint intervals of revisions some
    /// watcher covered.
    fn merged_coverage(&self) -> Vec<(i64, i64)> {
        let mut all: Vec<(i64, i64)> = self
            .watchers
            .iter()
            .flat_map(|w| w.coverage.iter().map(|c| (c.start, c.last)))
            .collect();
        all.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for (a, b) in all {
            match merged.last_mut() {
                Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged
    }

    /// Replays the merged stream: `prev_kv`, `create_revision`, `version`
    /// and deletes of live keys.
    fn replay(&mut self) {
        let coverage = self.merged_coverage();
        let may_hide = self.unseen_unknown_writes();
        // Whether some revision in `lo..=hi` was covered by no watcher.
        let uncovered = |lo: i64, hi: i64| {
            if lo > hi {
                return false;
            }
            let i = coverage.partition_point(|&(_, b)| b < lo);
            coverage.get(i).is_none_or(|&(a, b)| a > lo || b < hi)
        };
        let mut state: HashMap<String, Slot> = HashMap::new();
        // Keys not in `state`: known missing, until a revision no watcher
        // covered may have hidden an unknown write.
        let mut others_known = true;
        let mut previous = self.options.empty_at;
        let revisions: Vec<i64> = self
            .truth
            .keys()
            .copied()
            .filter(|&r| r > self.options.empty_at)
            .collect();
        let mut found: Vec<(WatchAnomalyKind, String, Involved)> = Vec::new();
        for rev in revisions {
            if may_hide && uncovered(previous + 1, rev - 1) {
                state.clear();
                others_known = false;
            }
            previous = rev;
            let slot = |state: &HashMap<String, Slot>, key: &str| -> Slot {
                match state.get(key) {
                    Some(s) => s.clone(),
                    None if others_known => Some(None),
                    None => None,
                }
            };
            match &self.truth[&rev] {
                Truth::Acknowledged(op) => {
                    for (key, change) in &self.writes.ops[*op].changes {
                        let next = match (change, slot(&state, key)) {
                            (Change::Delete, _) => Some(None),
                            (Change::Put { value, lease }, Some(before)) => Some(Some(Kv {
                                key: key.clone(),
                                value: value.clone(),
                                create_revision: before.as_ref().map_or(rev, |b| b.create_revision),
                                mod_revision: rev,
                                version: before.as_ref().map_or(1, |b| b.version + 1),
                                lease: *lease,
                            })),
                            (Change::Put { .. }, None) => None,
                        };
                        state.insert(key.clone(), next);
                    }
                }
                Truth::Watched { events, agreeing } => {
                    for (position, event) in events.iter().enumerate() {
                        let key = event.kv.key.as_str();
                        let before = slot(&state, key);
                        if let Some(before) = &before {
                            self.check_state(rev, event, before.as_ref(), agreeing, &mut found);
                            let mut wrong: Vec<(usize, String)> = Vec::new();
                            for &w in agreeing {
                                let watcher = &self.watchers[w];
                                let got = &watcher.received[&rev];
                                let copy = got.events[position];
                                let ok = match (&copy.prev_kv, before) {
                                    (Some(p), Some(b)) => p == b,
                                    (Some(_), None) => false,
                                    (None, None) => true,
                                    (None, Some(_)) => {
                                        got.after_cancel
                                            || self.writes.compacted_below(rev, got.t_ns)
                                    }
                                };
                                if !ok {
                                    wrong.push((
                                        w,
                                        format!(
                                            "{} has prev_kv {}",
                                            at(watcher.log, got.record),
                                            describe_kv(copy.prev_kv.as_ref())
                                        ),
                                    ));
                                }
                            }
                            if !wrong.is_empty() {
                                let message = format!(
                                    "revision {rev}, {:?} on {key}: the key was {} before, but {}",
                                    event.kind,
                                    describe_kv(before.as_ref()),
                                    wrong
                                        .iter()
                                        .map(|(_, m)| m.as_str())
                                        .collect::<Vec<_>>()
                                        .join("; ")
                                );
                                let ops = self.writes.by_revision.get(&rev).copied();
                                found.push((
                                    WatchAnomalyKind::PrevKv,
                                    message,
                                    Involved {
                                        watchers: wrong.iter().map(|(w, _)| *w).collect(),
                                        revisions: vec![rev],
                                        ops: ops.into_iter().collect(),
                                        keys: vec![key.to_string()],
                                    },
                                ));
                            }
                        }
                        let next = match event.kind {
                            WatchEventType::Put => Some(Some(event.kv.clone())),
                            WatchEventType::Delete => Some(None),
                        };
                        state.insert(key.to_string(), next);
                    }
                }
            }
        }
        for (kind, message, with) in found {
            self.anomaly(kind, message, with);
        }
    }

    /// A put continues the key's create revision and version; a delete is
    /// of a live key.
    fn check_state(
        &self,
        rev: i64,
        event: &WatchEvent,
        before: Option<&Kv>,
        agreeing: &[usize],
        found: &mut Vec<(WatchAnomalyKind, String, Involved)>,
    ) {
        let key = &event.kv.key;
        let problem = match event.kind {
            WatchEventType::Put => {
                let create = before.map_or(rev, |b| b.create_revision);
                let version = before.map_or(1, |b| b.version + 1);
                (event.kv.create_revision != create || event.kv.version != version).then(|| {
                    format!(
                        "revision {rev}: put of {key} with create_revision {} and version {}, but the key was {} before, so {create} and {version}",
                        event.kv.create_revision,
                        event.kv.version,
                        describe_kv(before)
                    )
                })
            }
            WatchEventType::Delete => before
                .is_none()
                .then(|| format!("revision {rev}: delete of {key}, which did not exist")),
        };
        if let Some(problem) = problem {
            let ops = self.writes.by_revision.get(&rev).copied();
            found.push((
                WatchAnomalyKind::EventState,
                format!("{problem} (seen by {})", self.names(agreeing)),
                Involved {
                    watchers: agreeing.to_vec(),
                    revisions: vec![rev],
                    ops: ops.into_iter().collect(),
                    keys: vec![key.clone()],
                },
            ));
        }
    }

    /// After convergence, every watcher delivered the final write.
    fn check_liveness(&mut self) {
        let Some(target) = self.options.final_revision else {
            return;
        };
        for w in 0..self.watchers.len() {
            let last = self.watchers[w].stats.last_revision;
            if last.is_none_or(|l| l < target) {
                let message = format!(
                    "{} delivered events only up to revision {}, not the final write's revision {target} that every member reached",
                    self.watchers[w].log.name,
                    last.map_or("none".to_string(), |l| l.to_string())
                );
                let ops = self.writes.by_revision.get(&target).copied();
                self.anomaly(
                    WatchAnomalyKind::Stalled,
                    message,
                    Involved::watcher(w)
                        .revisions(vec![target])
                        .ops(ops.into_iter().collect()),
                );
            }
        }
    }
}

/// Whether `rev` is in one of the sorted, disjoint `intervals`.
fn covered(intervals: &[(i64, i64)], rev: i64) -> bool {
    let i = intervals.partition_point(|&(_, b)| b < rev);
    intervals.get(i).is_some_and(|&(a, _)| a <= rev)
}

fn is_subsequence(short: &[&WatchEvent], long: &[&WatchEvent]) -> bool {
    if short.len() >= long.len() {
        return false;
    }
    let mut i = 0;
    for e in long {
        if i < short.len() && short[i].same_change(e) {
            i += 1;
        }
    }
    i == short.len()
}

/// What an anomaly involves, by position in the checker's tables.
struct Involved {
    watchers: Vec<usize>,
    revisions: Vec<i64>,
    ops: Vec<usize>,
    keys: Vec<String>,
}

impl Involved {
    fn watcher(w: usize) -> Self {
        Self {
            watchers: vec![w],
            revisions: Vec::new(),
            ops: Vec::new(),
            keys: Vec::new(),
        }
    }

    fn revisions(mut self, revisions: Vec<i64>) -> Self {
        self.revisions = revisions;
        self
    }

    fn keys(mut self, keys: Vec<String>) -> Self {
        self.keys = keys;
        self
    }

    fn ops(mut self, ops: Vec<usize>) -> Self {
        self.ops = ops;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_tagged_json_lines() {
        let log = WatchLog {
            name: "m0".into(),
            records: vec![
                WatchRecord {
                    t_ns: 5,
                    member: "m0".into(),
                    record: Record::Start {
                        key: "/p/".into(),
                        start_revision: 2,
                    },
                },
                WatchRecord {
                    t_ns: 9,
                    member: "m0".into(),
                    record: Record::Response(ResponseRecord {
                        watch_id: 0,
                        revision: 3,
                        events: vec![WatchEvent {
                            kind: WatchEventType::Put,
                            kv: Kv {
                                key: "/p/a".into(),
                                value: "1-0".into(),
                                create_revision: 3,
                                mod_revision: 3,
                                version: 1,
                                lease: 0,
                            },
                            prev_kv: None,
                        }],
                        ..ResponseRecord::default()
                    }),
                },
                WatchRecord {
                    t_ns: 12,
                    member: "m0".into(),
                    record: Record::Broken {
                        error: "stream ended".into(),
                    },
                },
            ],
        };
        let mut buf = Vec::new();
        log.write_jsonl(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.starts_with(
                "{\"t_ns\":5,\"member\":\"m0\",\"type\":\"start\",\"key\":\"/p/\",\"start_revision\":2}\n"
            ),
            "{text}"
        );
        assert_eq!(WatchLog::read_jsonl("m0", text.as_bytes()).unwrap(), log);
    }

    #[test]
    fn subsequences_are_strictly_shorter_and_in_order() {
        let ev = |key: &str| WatchEvent {
            kind: WatchEventType::Delete,
            kv: Kv {
                key: key.into(),
                value: String::new(),
                create_revision: 0,
                mod_revision: 7,
                version: 0,
                lease: 0,
            },
            prev_kv: None,
        };
        let (a, b, c) = (ev("a"), ev("b"), ev("c"));
        assert!(is_subsequence(&[&a, &c], &[&a, &b, &c]));
        assert!(is_subsequence(&[], &[&a]));
        assert!(!is_subsequence(&[&c, &a], &[&a, &b, &c]));
        assert!(!is_subsequence(&[&a, &b], &[&a, &b]));
    }
}
