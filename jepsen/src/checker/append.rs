//! An Elle-style checker for list-append transactions (the `append`
//! workload), for strict serializability.
//!
//! Each transaction is a list of micro-operations on named lists: `["r",
//! key, list]` reads a whole list, `["append", key, element]` appends one
//! element, unique per key. Because a read returns every element appended
//! so far, in order, reads reveal each key's *version order*, and from it
//! the dependencies between transactions, without any search (Kingsbury &
//! Alvaro, "Elle: Inferring Isolation Anomalies from Experimental
//! Observations", VLDB 2020; `elle.list-append`):
//!
//! 1. **Per read.** A list with an element twice (`duplicate-elements`), an
//!    element nobody appended to that key (`phantom-element`), a stored
//!    value that is no list at all (`garbage-read`), an element whose
//!    transaction failed (`G1a`), a list ending in an element its
//!    transaction followed with another append to the same key (`G1b`).
//! 2. **Per transaction.** A read that disagrees with the transaction's own
//!    earlier reads and appends of the key (`internal`), or that contains
//!    an element the transaction appends only later (`future-read`); two
//!    committed transactions that read the same state of a key and both
//!    appended to it (`lost-update`).
//! 3. **Version orders.** The longest read of each key is its version order;
//!    every other read must be a prefix of it (`incompatible-order`). A
//!    failed append followed in that order by a committed one is a
//!    `dirty-update`.
//! 4. **Dependency graph** over the committed transactions and those with
//!    unknown outcome whose appends someone read (so they committed): `ww`
//!    (appended the element right after one another), `wr` (read a list
//!    ending in the other's element), `rw` (read the state right before the
//!    other's append), and `realtime` (returned before the other was
//!    invoked). An append nobody read comes after every element anybody
//!    read, since a read of any later state would include it. Real-time
//!    edges are kept to O(n · concurrency) with Elle's frontier: a completed
//!    transaction stops being linked to later ones once a transaction that
//!    started after it has completed, since that one carries the order on.
//! 5. **Cycles.** Tarjan's algorithm finds the strongly connected
//!    components; any with two or more transactions is an anomaly. For each
//!    one the search tries, in order, the subgraphs that define the
//!    anomalies (`ww` only: G0; `ww`+`wr`: G1c; one `rw` edge closing a
//!    `ww`/`wr` path: G-single; all data edges: G-nonadjacent or G2-item),
//!    first without and then with real-time edges (the `-realtime`
//!    variants), and reports the shortest cycle it finds in the first
//!    subgraph that has one, by breadth-first search.
//!
//! Everything but the cycle search is linear in the size of the history.
//! The cycle search is bounded: each component gets [`SCC_SEARCH_BUDGET`]
//! edge visits and all of them [`TOTAL_SEARCH_BUDGET`]. A cycle is always
//! reported for every component (one breadth-first search per subgraph is
//! always allowed); running out of budget only means a shorter cycle or a
//! stronger classification may have been missed, which the report counts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::history::{self, Event, EventType, HistoryError};
use crate::report::HistoryIndex;

/// How many anomalies a report describes in full; the rest are only counted.
pub const MAX_REPORTED: usize = 64;
/// Edge visits the cycle search may spend on one strongly connected
/// component beyond the one search per subgraph it always makes.
pub const SCC_SEARCH_BUDGET: u64 = 2_000_000;
/// Edge visits the cycle search may spend on all components together.
pub const TOTAL_SEARCH_BUDGET: u64 = 20_000_000;
/// How many elements of a list a message shows.
const LIST_SHOWN: usize = 8;

/// What a read observed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Observed {
    /// The list's elements, oldest first; empty if the key was missing.
    List(Vec<u64>),
    /// A stored value that is not a list of elements, verbatim.
    Garbage(String),
}

/// One micro-operation of a transaction, as recorded in the history:
/// `["r", key, value]` or `["append", key, element]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MicroOp {
    /// `value` is `None` (`null`) on invokes and when the outcome is unknown.
    Read {
        key: String,
        value: Option<Observed>,
    },
    Append {
        key: String,
        element: u64,
    },
}

impl MicroOp {
    pub fn key(&self) -> &str {
        match self {
            MicroOp::Read { key, .. } | MicroOp::Append { key, .. } => key,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            MicroOp::Read { key, value: None } => json!(["r", key, null]),
            MicroOp::Read {
                key,
                value: Some(Observed::List(list)),
            } => json!(["r", key, list]),
            MicroOp::Read {
                key,
                value: Some(Observed::Garbage(raw)),
            } => json!(["r", key, raw]),
            MicroOp::Append { key, element } => json!(["append", key, element]),
        }
    }

    pub fn from_json(value: &Value) -> Result<Self, String> {
        let parts = match value.as_array() {
            Some(parts) if parts.len() == 3 => parts,
            _ => return Err(format!("{value} is not a [f, key, value] triple")),
        };
        let key = parts[1]
            .as_str()
            .ok_or_else(|| format!("{value}: the key is not a string"))?
            .to_string();
        match parts[0].as_str() {
            Some("r") => {
                let observed = match &parts[2] {
                    Value::Null => None,
                    Value::String(raw) => Some(Observed::Garbage(raw.clone())),
                    Value::Array(items) => Some(Observed::List(
                        items
                            .iter()
                            .map(|e| {
                                e.as_u64().ok_or_else(|| {
                                    format!("{value}: the element {e} is not an unsigned integer")
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    )),
                    other => return Err(format!("{value}: {other} is not a list")),
                };
                Ok(MicroOp::Read {
                    key,
                    value: observed,
                })
            }
            Some("append") => {
                let element = parts[2].as_u64().ok_or_else(|| {
                    format!("{value}: the appended element is not an unsigned integer")
                })?;
                Ok(MicroOp::Append { key, element })
            }
            _ => Err(format!(
                "{value}: the function is neither \"r\" nor \"append\""
            )),
        }
    }
}

/// A transaction's micro-operations as a history value.
pub fn txn_to_json(mops: &[MicroOp]) -> Value {
    Value::Array(mops.iter().map(MicroOp::to_json).collect())
}

/// Parses a history value into micro-operations.
pub fn txn_from_json(value: &Value) -> Result<Vec<MicroOp>, String> {
    value
        .as_array()
        .ok_or_else(|| "not a list of micro-operations".to_string())?
        .iter()
        .map(MicroOp::from_json)
        .collect()
}

/// The keys a history value's micro-operations touch, leniently (for
/// finding the operations around an anomaly; malformed parts are skipped).
pub fn txn_keys(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|mops| {
            mops.iter()
                .filter_map(|m| m.get(1)?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum AppendCheckError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("event {index}: `{f}` is not a list-append `txn`")]
    NotTxn { index: u64, f: String },
    #[error("event {index}: `v` is not a list-append transaction: {detail}")]
    BadValue { index: u64, detail: String },
    #[error("event {index}: the completion does not match its invoke ({detail})")]
    CompletionMismatch { index: u64, detail: String },
    #[error("events {first} and {second} both append {element} to {key}; the checker needs elements unique per key")]
    DuplicateAppend {
        first: u64,
        second: u64,
        key: String,
        element: u64,
    },
}

/// The anomalies the checker finds, named as Elle names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// A read returned a list holding an element more than once.
    DuplicateElements,
    /// A read returned an element nobody appended to that key.
    PhantomElement,
    /// A read returned a value that is not a list of elements.
    GarbageRead,
    /// Two reads of a key are not prefixes of one another.
    IncompatibleOrder,
    /// A read disagrees with its own transaction's earlier micro-operations.
    Internal,
    /// A read contains an element its own transaction appends later.
    FutureRead,
    /// Aborted read: a read saw an element of a failed transaction.
    G1a,
    /// Intermediate read: a read ended in an element that its transaction
    /// followed with another append to the key.
    G1b,
    /// A failed append is followed in the version order by a committed one.
    DirtyUpdate,
    /// Two committed transactions read the same state of a key and both
    /// appended to it.
    LostUpdate,
    /// A cycle of `ww` edges.
    G0,
    /// A cycle of `ww` and `wr` edges, at least one `wr`.
    G1c,
    /// A cycle with exactly one `rw` edge.
    GSingle,
    /// A cycle with several `rw` edges, no two adjacent.
    GNonadjacent,
    /// A cycle with adjacent `rw` edges.
    G2Item,
    G0Realtime,
    G1cRealtime,
    GSingleRealtime,
    GNonadjacentRealtime,
    G2ItemRealtime,
}

impl AnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::DuplicateElements => "duplicate-elements",
            AnomalyKind::PhantomElement => "phantom-element",
            AnomalyKind::GarbageRead => "garbage-read",
            AnomalyKind::IncompatibleOrder => "incompatible-order",
            AnomalyKind::Internal => "internal",
            AnomalyKind::FutureRead => "future-read",
            AnomalyKind::G1a => "G1a",
            AnomalyKind::G1b => "G1b",
            AnomalyKind::DirtyUpdate => "dirty-update",
            AnomalyKind::LostUpdate => "lost-update",
            AnomalyKind::G0 => "G0",
            AnomalyKind::G1c => "G1c",
            AnomalyKind::GSingle => "G-single",
            AnomalyKind::GNonadjacent => "G-nonadjacent",
            AnomalyKind::G2Item => "G2-item",
            AnomalyKind::G0Realtime => "G0-realtime",
            AnomalyKind::G1cRealtime => "G1c-realtime",
            AnomalyKind::GSingleRealtime => "G-single-realtime",
            AnomalyKind::GNonadjacentRealtime => "G-nonadjacent-realtime",
            AnomalyKind::G2ItemRealtime => "G2-item-realtime",
        }
    }

    /// Whether the anomaly is a cycle in the dependency graph.
    pub fn is_cycle(self) -> bool {
        self >= AnomalyKind::G0
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dependency between two transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rel {
    /// The second appended the element right after the first's.
    Ww,
    /// The second read a list ending in the first's element.
    Wr,
    /// The first read the state right before the second's append.
    Rw,
    /// The first returned before the second was invoked.
    Realtime,
}

impl Rel {
    pub fn name(self) -> &'static str {
        match self {
            Rel::Ww => "ww",
            Rel::Wr => "wr",
            Rel::Rw => "rw",
            Rel::Realtime => "realtime",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Rel::Ww => WW,
            Rel::Wr => WR,
            Rel::Rw => RW,
            Rel::Realtime => RT,
        }
    }
}

/// One edge of a reported cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleStep {
    /// The invoke events (their `i`) of the two transactions.
    pub from: u64,
    pub to: u64,
    pub rel: Rel,
    /// Why the edge exists, for humans.
    pub explanation: String,
}

/// One violation, with the transactions that demonstrate it.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub message: String,
    /// The invoke events (their `i`) of the transactions involved.
    pub ops: Vec<u64>,
    /// The keys involved, for finding the surrounding operations.
    pub keys: Vec<String>,
    /// For cycles: the edges, in order, the last one returning to the first
    /// transaction.
    pub cycle: Vec<CycleStep>,
}

/// Edges of the dependency graph, per relation (an edge with several
/// relations counts for each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeCounts {
    pub ww: usize,
    pub wr: usize,
    pub rw: usize,
    pub realtime: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppendReport {
    /// The first [`MAX_REPORTED`] anomalies, in the order found.
    pub anomalies: Vec<Anomaly>,
    /// All anomalies, per kind.
    pub counts: BTreeMap<AnomalyKind, usize>,
    pub txns: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Transactions in the dependency graph: the committed ones and those
    /// with unknown outcome whose appends were read.
    pub graph_txns: usize,
    pub keys: usize,
    pub edges: EdgeCounts,
    /// Strongly connected components with two or more transactions.
    pub cycles: usize,
    /// Components whose search ran out of budget, so that a shorter cycle
    /// or a stronger classification may exist.
    pub truncated_searches: usize,
    pub elapsed: Duration,
}

impl AppendReport {
    pub fn valid(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn total_anomalies(&self) -> usize {
        self.counts.values().sum()
    }

    /// The line `report.txt` shows for the checker.
    pub fn summary_line(&self) -> String {
        format!(
            "append checker: {} ({} txns, {} in the graph over {} keys; edges ww {} wr {} rw {} realtime {}; {} cycles{}; {:.1} ms)",
            if self.valid() {
                "valid".to_string()
            } else {
                format!("{} anomalies", self.total_anomalies())
            },
            self.txns,
            self.graph_txns,
            self.keys,
            self.edges.ww,
            self.edges.wr,
            self.edges.rw,
            self.edges.realtime,
            self.cycles,
            if self.truncated_searches > 0 {
                format!(", {} searches cut short by the budget", self.truncated_searches)
            } else {
                String::new()
            },
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
            "checker": "append-elle",
            "valid": self.valid(),
            "anomalies": counts,
            "txns": {"total": self.txns, "ok": self.ok, "fail": self.failed, "info": self.unknown},
            "graph_txns": self.graph_txns,
            "keys": self.keys,
            "edges": {
                "ww": self.edges.ww,
                "wr": self.edges.wr,
                "rw": self.edges.rw,
                "realtime": self.edges.realtime,
            },
            "cycles": self.cycles,
            "truncated_searches": self.truncated_searches,
            "elapsed_ms": self.elapsed.as_millis() as u64,
        })
    }

    /// Each described anomaly with its window of the history: the
    /// transactions involved (marked `*`) and those on the same keys
    /// overlapping them.
    pub fn describe(&self, index: &HistoryIndex<'_>) -> String {
        let mut text = String::new();
        for a in &self.anomalies {
            text.push_str(&format!("{}: {}\n", a.kind, a.message));
            let lines = index.window(&a.ops, |e| {
                txn_keys(&e.value).iter().any(|k| a.keys.contains(k))
            });
            for line in lines {
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

const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Unknown,
}

/// A micro-operation with its key interned.
#[derive(Debug, Clone)]
enum Mop {
    Read { key: u32, value: Option<Observed> },
    Append { key: u32, element: u64 },
}

struct Txn {
    /// The invoke event's `i`.
    index: u64,
    call: u64,
    /// The return time of an `ok` transaction.
    ret: Option<u64>,
    outcome: Outcome,
    mops: Vec<Mop>,
}

impl Txn {
    fn reads(&self) -> impl Iterator<Item = (u32, &[u64])> {
        self.mops.iter().filter_map(|m| match m {
            Mop::Read {
                key,
                value: Some(Observed::List(list)),
            } => Some((*key, list.as_slice())),
            _ => None,
        })
    }

    fn appends(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.mops.iter().filter_map(|m| match m {
            Mop::Append { key, element } => Some((*key, *element)),
            Mop::Read { .. } => None,
        })
    }
}

/// Which transaction appended an element.
#[derive(Debug, Clone, Copy)]
struct Writer {
    txn: u32,
    /// The transaction appended to the key again afterwards.
    intermediate: bool,
}

/// A key's version order, from its longest read.
#[derive(Default)]
struct Order {
    elements: Vec<u64>,
    position: HashMap<u64, u32>,
}

impl Order {
    /// The number of elements before `element` in the version order, i.e.
    /// the state its append followed. An element nobody read follows
    /// everything anybody read.
    fn state_before(&self, element: u64) -> usize {
        self.position
            .get(&element)
            .map_or(self.elements.len(), |&p| p as usize)
    }
}

/// Collects anomalies: all counted, the first [`MAX_REPORTED`] described.
#[derive(Default)]
struct Findings {
    reported: Vec<Anomaly>,
    counts: BTreeMap<AnomalyKind, usize>,
}

impl Findings {
    fn add(&mut self, kind: AnomalyKind, describe: impl FnOnce() -> Anomaly) {
        *self.counts.entry(kind).or_default() += 1;
        if self.reported.len() < MAX_REPORTED {
            let anomaly = describe();
            debug_assert_eq!(anomaly.kind, kind);
            self.reported.push(anomaly);
        }
    }
}

/// Checks a list-append history for strict serializability.
pub fn check(events: &[Event]) -> Result<AppendReport, AppendCheckError> {
    let started = Instant::now();
    let (txns, keys) = parse(events)?;
    let writers = index_writers(&txns, &keys)?;
    let mut findings = Findings::default();
    let history = Analysis::new(txns, keys, writers);
    history.check_reads(&mut findings);
    history.check_internal(&mut findings);
    history.check_lost_updates(&mut findings);
    let analysis = history.with_orders(&mut findings);
    analysis.check_dirty_updates(&mut findings);
    let graph = analysis.graph();
    let edges = graph.counts();
    let (cycles, truncated_searches) = analysis.check_cycles(&graph, &mut findings);
    let count = |o: Outcome| analysis.txns.iter().filter(|t| t.outcome == o).count();
    Ok(AppendReport {
        anomalies: findings.reported,
        counts: findings.counts,
        txns: analysis.txns.len(),
        ok: count(Outcome::Ok),
        failed: count(Outcome::Fail),
        unknown: count(Outcome::Unknown),
        graph_txns: analysis.node_txn.len(),
        keys: analysis.keys.len(),
        edges,
        cycles,
        truncated_searches,
        elapsed: started.elapsed(),
    })
}

/// Key names, interned.
#[derive(Default)]
struct Keys {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Keys {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    fn len(&self) -> usize {
        self.names.len()
    }
}

fn parse(events: &[Event]) -> Result<(Vec<Txn>, Keys), AppendCheckError> {
    let mut keys = Keys::default();
    let mut txns = Vec::new();
    for pair in history::pair_events(events)? {
        let invoke = &events[pair.invoke];
        if invoke.f != "txn" {
            return Err(AppendCheckError::NotTxn {
                index: invoke.index,
                f: invoke.f.clone(),
            });
        }
        let bad = |index: u64| move |detail: String| AppendCheckError::BadValue { index, detail };
        let planned = txn_from_json(&invoke.value).map_err(bad(invoke.index))?;
        let done = pair.completion.map(|c| &events[c]);
        let (outcome, ret, mops) = match done {
            Some(d) if d.kind == EventType::Ok => {
                let completed = txn_from_json(&d.value).map_err(bad(d.index))?;
                check_completion(&planned, &completed).map_err(|detail| {
                    AppendCheckError::CompletionMismatch {
                        index: d.index,
                        detail,
                    }
                })?;
                (Outcome::Ok, Some(d.t_ns), completed)
            }
            Some(d) if d.kind == EventType::Fail => (Outcome::Fail, None, planned),
            _ => (Outcome::Unknown, None, planned),
        };
        let mops = mops
            .into_iter()
            .map(|m| match m {
                // Only a committed transaction's reads are observations.
                MicroOp::Read { key, value } => Mop::Read {
                    key: keys.intern(&key),
                    value: value.filter(|_| outcome == Outcome::Ok),
                },
                MicroOp::Append { key, element } => Mop::Append {
                    key: keys.intern(&key),
                    element,
                },
            })
            .collect();
        txns.push(Txn {
            index: invoke.index,
            call: invoke.t_ns,
            ret,
            outcome,
            mops,
        });
    }
    Ok((txns, keys))
}

/// An `ok` completion must repeat its invoke's micro-operations, with every
/// read's value filled in.
fn check_completion(planned: &[MicroOp], completed: &[MicroOp]) -> Result<(), String> {
    if planned.len() != completed.len() {
        return Err(format!(
            "{} micro-operations invoked, {} completed",
            planned.len(),
            completed.len()
        ));
    }
    for (i, (p, c)) in planned.iter().zip(completed).enumerate() {
        match (p, c) {
            (MicroOp::Read { key: a, .. }, MicroOp::Read { key: b, value }) if a == b => {
                if value.is_none() {
                    return Err(format!("micro-operation {i}: a read without its value"));
                }
            }
            (MicroOp::Append { .. }, MicroOp::Append { .. }) if p == c => {}
            _ => return Err(format!("micro-operation {i}: {p:?} became {c:?}")),
        }
    }
    Ok(())
}

/// Maps every appended element to its transaction, per key.
fn index_writers(txns: &[Txn], keys: &Keys) -> Result<Vec<HashMap<u64, Writer>>, AppendCheckError> {
    let mut writers: Vec<HashMap<u64, Writer>> = vec![HashMap::new(); keys.len()];
    for (t, txn) in txns.iter().enumerate() {
        let mut last: Vec<(u32, u64)> = Vec::new();
        for (key, element) in txn.appends() {
            let slot = &mut writers[key as usize];
            if let Some(first) = slot.insert(
                element,
                Writer {
                    txn: t as u32,
                    intermediate: false,
                },
            ) {
                return Err(AppendCheckError::DuplicateAppend {
                    first: txns[first.txn as usize].index,
                    second: txn.index,
                    key: keys.names[key as usize].clone(),
                    element,
                });
            }
            match last.iter_mut().find(|(k, _)| *k == key) {
                Some((_, previous)) => {
                    if let Some(w) = slot.get_mut(previous) {
                        w.intermediate = true;
                    }
                    *previous = element;
                }
                None => last.push((key, element)),
            }
        }
    }
    Ok(writers)
}

/// The history, indexed.
struct Analysis {
    txns: Vec<Txn>,
    keys: Keys,
    writers: Vec<HashMap<u64, Writer>>,
    orders: Vec<Order>,
    /// Per key and state (number of elements in the version order), the
    /// graph nodes that read it.
    readers: Vec<Vec<Vec<u32>>>,
    /// The graph node of each transaction, or [`NONE`].
    node_of: Vec<u32>,
    /// The transaction of each graph node.
    node_txn: Vec<u32>,
}

impl Analysis {
    fn new(txns: Vec<Txn>, keys: Keys, writers: Vec<HashMap<u64, Writer>>) -> Self {
        Self {
            txns,
            keys,
            writers,
            orders: Vec::new(),
            readers: Vec::new(),
            node_of: Vec::new(),
            node_txn: Vec::new(),
        }
    }

    fn key(&self, key: u32) -> &str {
        &self.keys.names[key as usize]
    }

    fn writer(&self, key: u32, element: u64) -> Option<Writer> {
        self.writers[key as usize].get(&element).copied()
    }

    fn txn_index(&self, t: u32) -> u64 {
        self.txns[t as usize].index
    }

    fn ok_txns(&self) -> impl Iterator<Item = (u32, &Txn)> {
        self.txns
            .iter()
            .enumerate()
            .filter(|(_, t)| t.outcome == Outcome::Ok)
            .map(|(i, t)| (i as u32, t))
    }

    /// Duplicate, phantom and garbage values, G1a and G1b.
    fn check_reads(&self, findings: &mut Findings) {
        for (t, txn) in self.ok_txns() {
            for mop in &txn.mops {
                let Mop::Read {
                    key,
                    value: Some(observed),
                } = mop
                else {
                    continue;
                };
                let key = *key;
                let list = match observed {
                    Observed::List(list) => list,
                    Observed::Garbage(raw) => {
                        findings.add(AnomalyKind::GarbageRead, || Anomaly {
                            kind: AnomalyKind::GarbageRead,
                            message: format!(
                                "i={} read {} = {raw:?}, which is not a list of elements",
                                txn.index,
                                self.key(key)
                            ),
                            ops: vec![txn.index],
                            keys: vec![self.key(key).to_string()],
                            cycle: Vec::new(),
                        });
                        continue;
                    }
                };
                self.check_read(t, key, list, findings);
            }
        }
    }

    fn check_read(&self, t: u32, key: u32, list: &[u64], findings: &mut Findings) {
        let reader = self.txn_index(t);
        let name = self.key(key);
        let single = |kind, message, mut ops: Vec<u64>| {
            ops.insert(0, reader);
            Anomaly {
                kind,
                message,
                ops,
                keys: vec![name.to_string()],
                cycle: Vec::new(),
            }
        };
        let mut seen = HashSet::with_capacity(list.len());
        let repeated: Vec<u64> = list.iter().filter(|e| !seen.insert(**e)).copied().collect();
        if !repeated.is_empty() {
            findings.add(AnomalyKind::DuplicateElements, || {
                single(
                    AnomalyKind::DuplicateElements,
                    format!(
                        "i={reader} read {name} = {}, in which {repeated:?} appear more than once",
                        show(list)
                    ),
                    Vec::new(),
                )
            });
        }
        for &element in list {
            match self.writer(key, element) {
                None => findings.add(AnomalyKind::PhantomElement, || {
                    single(
                        AnomalyKind::PhantomElement,
                        format!(
                            "i={reader} read {name} = {}, containing {element}, which no transaction appended to {name}",
                            show(list)
                        ),
                        Vec::new(),
                    )
                }),
                Some(w) if self.txns[w.txn as usize].outcome == Outcome::Fail => {
                    let writer = self.txn_index(w.txn);
                    findings.add(AnomalyKind::G1a, || {
                        single(
                            AnomalyKind::G1a,
                            format!(
                                "i={reader} read {name} = {}, containing {element}, appended by i={writer}, which failed",
                                show(list)
                            ),
                            vec![writer],
                        )
                    });
                }
                Some(_) => {}
            }
        }
        if let Some(&last) = list.last() {
            if let Some(w) = self
                .writer(key, last)
                .filter(|w| w.intermediate && w.txn != t)
            {
                let writer = self.txn_index(w.txn);
                findings.add(AnomalyKind::G1b, || {
                    single(
                        AnomalyKind::G1b,
                        format!(
                            "i={reader} read {name} = {}, ending in {last}, which i={writer} followed with another append to {name}: an intermediate state",
                            show(list)
                        ),
                        vec![writer],
                    )
                });
            }
        }
    }

    /// Reads that disagree with their own transaction's earlier
    /// micro-operations (Elle's `internal`), and reads of elements the
    /// transaction appends later (`future-read`).
    fn check_internal(&self, findings: &mut Findings) {
        for (_, txn) in self.ok_txns() {
            // Per key: whether the whole state is known (else only its
            // tail: the transaction's own appends), and that state.
            let mut expected: Vec<(u32, bool, Vec<u64>)> = Vec::new();
            let mut read: Vec<(u32, &[u64])> = Vec::new();
            let mut internal_reported = false;
            for mop in &txn.mops {
                match mop {
                    Mop::Append { key, element } => {
                        if let Some(&(_, list)) = read
                            .iter()
                            .find(|(k, list)| k == key && list.contains(element))
                        {
                            let name = self.key(*key);
                            findings.add(AnomalyKind::FutureRead, || Anomaly {
                                kind: AnomalyKind::FutureRead,
                                message: format!(
                                    "i={} read {name} = {}, containing {element}, which it appends afterwards",
                                    txn.index,
                                    show(list)
                                ),
                                ops: vec![txn.index],
                                keys: vec![name.to_string()],
                                cycle: Vec::new(),
                            });
                        }
                        match expected.iter_mut().find(|(k, _, _)| k == key) {
                            Some((_, _, state)) => state.push(*element),
                            None => expected.push((*key, false, vec![*element])),
                        }
                    }
                    Mop::Read {
                        key,
                        value: Some(Observed::List(list)),
                    } => {
                        read.push((*key, list));
                        let entry = expected.iter_mut().find(|(k, _, _)| k == key);
                        if let Some((_, whole, state)) = &entry {
                            let agrees = if *whole {
                                state == list
                            } else {
                                list.ends_with(state)
                            };
                            if !agrees && !internal_reported {
                                internal_reported = true;
                                let name = self.key(*key);
                                let wanted = if *whole {
                                    show(state)
                                } else {
                                    format!("a list ending in {}", show(state))
                                };
                                findings.add(AnomalyKind::Internal, || Anomaly {
                                    kind: AnomalyKind::Internal,
                                    message: format!(
                                        "i={} read {name} = {}, but its own earlier micro-operations on {name} imply {wanted}",
                                        txn.index,
                                        show(list)
                                    ),
                                    ops: vec![txn.index],
                                    keys: vec![name.to_string()],
                                    cycle: Vec::new(),
                                });
                            }
                        }
                        match entry {
                            Some((_, whole, state)) => {
                                *whole = true;
                                state.clone_from(list);
                            }
                            None => expected.push((*key, true, list.clone())),
                        }
                    }
                    Mop::Read { key, .. } => expected.retain(|(k, _, _)| k != key),
                }
            }
        }
    }

    /// Committed transactions that read the same state of a key before
    /// appending to it: one of the appends was based on a stale state.
    fn check_lost_updates(&self, findings: &mut Findings) {
        let mut groups: HashMap<(u32, &[u64]), Vec<u32>> = HashMap::new();
        for (t, txn) in self.ok_txns() {
            let mut first_read: Vec<(u32, &[u64])> = Vec::new();
            let mut written: Vec<u32> = Vec::new();
            for mop in &txn.mops {
                match mop {
                    Mop::Read {
                        key,
                        value: Some(Observed::List(list)),
                    } if !first_read.iter().any(|(k, _)| k == key) => {
                        first_read.push((*key, list));
                    }
                    Mop::Append { key, .. } if !written.contains(key) => {
                        written.push(*key);
                        if let Some(&(_, list)) = first_read.iter().find(|(k, _)| k == key) {
                            groups.entry((*key, list)).or_default().push(t);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut collisions: Vec<_> = groups.into_iter().filter(|(_, g)| g.len() > 1).collect();
        collisions.sort_by_key(|(_, g)| g[0]);
        for ((key, list), group) in collisions {
            let name = self.key(key);
            let ops: Vec<u64> = group.iter().map(|&t| self.txn_index(t)).collect();
            findings.add(AnomalyKind::LostUpdate, || Anomaly {
                kind: AnomalyKind::LostUpdate,
                message: format!(
                    "{} committed transactions ({}) all read {name} = {} and then appended to it",
                    ops.len(),
                    ops.iter()
                        .map(|i| format!("i={i}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    show(list)
                ),
                ops: ops.clone(),
                keys: vec![name.to_string()],
                cycle: Vec::new(),
            });
        }
    }

    /// Derives each key's version order from its longest read, flags reads
    /// that are not prefixes of it, and indexes who read which state.
    fn with_orders(mut self, findings: &mut Findings) -> Self {
        let mut longest: Vec<Option<(u32, &[u64])>> = vec![None; self.keys.len()];
        for (t, txn) in self.ok_txns() {
            for (key, list) in txn.reads() {
                let slot = &mut longest[key as usize];
                if slot.is_none_or(|(_, l)| list.len() > l.len()) {
                    *slot = Some((t, list));
                }
            }
        }
        let mut orders: Vec<Order> = Vec::with_capacity(self.keys.len());
        for slot in &longest {
            let mut order = Order::default();
            for &e in slot.map_or(&[][..], |(_, l)| l) {
                if let std::collections::hash_map::Entry::Vacant(v) = order.position.entry(e) {
                    v.insert(order.elements.len() as u32);
                    order.elements.push(e);
                }
            }
            orders.push(order);
        }
        // Per key: the first read that is not a prefix of the longest, and
        // how many are not.
        let mut incompatible: Vec<Option<(u32, &[u64], usize)>> = vec![None; self.keys.len()];
        for (t, txn) in self.ok_txns() {
            for (key, list) in txn.reads() {
                let Some((_, long)) = longest[key as usize] else {
                    continue;
                };
                if !long.starts_with(list) {
                    match &mut incompatible[key as usize] {
                        Some((_, _, n)) => *n += 1,
                        slot => *slot = Some((t, list, 1)),
                    }
                }
            }
        }
        for (key, found) in incompatible.iter().enumerate() {
            let (Some((t, list, n)), Some((lt, long))) = (found, longest[key]) else {
                continue;
            };
            let name = self.key(key as u32);
            let at = list.iter().zip(long).take_while(|(a, b)| a == b).count();
            let (reader, longest_reader) = (self.txn_index(*t), self.txn_index(lt));
            findings.add(AnomalyKind::IncompatibleOrder, || Anomaly {
                kind: AnomalyKind::IncompatibleOrder,
                message: format!(
                    "{name}: i={reader} read {}, which is not a prefix of the longest read, {} by i={longest_reader} (they differ at position {at}); {n} read(s) of {name} disagree with the longest",
                    show_around(list, at),
                    show_around(long, at)
                ),
                ops: vec![reader, longest_reader],
                keys: vec![name.to_string()],
                cycle: Vec::new(),
            });
        }

        let observed =
            |key: u32, element: u64| orders[key as usize].position.contains_key(&element);
        let mut node_of = vec![NONE; self.txns.len()];
        let mut node_txn = Vec::new();
        for (t, txn) in self.txns.iter().enumerate() {
            let in_graph = match txn.outcome {
                Outcome::Ok => true,
                Outcome::Unknown => txn.appends().any(|(k, e)| observed(k, e)),
                Outcome::Fail => false,
            };
            if in_graph {
                node_of[t] = node_txn.len() as u32;
                node_txn.push(t as u32);
            }
        }
        let mut readers: Vec<Vec<Vec<u32>>> = orders
            .iter()
            .map(|o| vec![Vec::new(); o.elements.len() + 1])
            .collect();
        for (t, txn) in self.ok_txns() {
            for (key, list) in txn.reads() {
                let state = match list.last() {
                    None => Some(0),
                    Some(e) => orders[key as usize]
                        .position
                        .get(e)
                        .map(|&p| p as usize + 1),
                };
                if let Some(state) = state {
                    let node = node_of[t as usize];
                    let r = &mut readers[key as usize][state];
                    if r.last() != Some(&node) {
                        r.push(node);
                    }
                }
            }
        }
        self.orders = orders;
        self.readers = readers;
        self.node_of = node_of;
        self.node_txn = node_txn;
        self
    }

    /// A failed append followed in the version order by a committed one,
    /// with Elle's rules for unknown outcomes in between.
    fn check_dirty_updates(&self, findings: &mut Findings) {
        for (key, order) in self.orders.iter().enumerate() {
            let key = key as u32;
            // The transaction whose state the order is in, and the elements
            // since; the initial state counts as committed.
            let mut current: (Outcome, Option<u32>) = (Outcome::Ok, None);
            let mut since: Vec<u64> = Vec::new();
            for &element in &order.elements {
                let Some(w) = self.writer(key, element) else {
                    continue;
                };
                let outcome = self.txns[w.txn as usize].outcome;
                match (current.0, outcome) {
                    (Outcome::Fail, Outcome::Ok) => {
                        since.push(element);
                        let name = self.key(key);
                        let failed = current.1.map(|t| self.txn_index(t)).unwrap_or_default();
                        let committed = self.txn_index(w.txn);
                        let shown = show(&since);
                        findings.add(AnomalyKind::DirtyUpdate, || Anomaly {
                            kind: AnomalyKind::DirtyUpdate,
                            message: format!(
                                "{name}: i={committed} committed an append ({element}) on top of the state of i={failed}, which failed (elements {shown})"
                            ),
                            ops: vec![failed, committed],
                            keys: vec![name.to_string()],
                            cycle: Vec::new(),
                        });
                        current = (outcome, Some(w.txn));
                        since = vec![element];
                    }
                    (_, Outcome::Unknown) | (Outcome::Fail, Outcome::Fail) => since.push(element),
                    _ => {
                        current = (outcome, Some(w.txn));
                        since = vec![element];
                    }
                }
            }
        }
    }

    /// The dependency graph over [`Analysis::node_txn`].
    fn graph(&self) -> Graph {
        let mut edges: Vec<(u32, u32, u8)> = Vec::new();
        for (b, &t) in self.node_txn.iter().enumerate() {
            let b = b as u32;
            let txn = &self.txns[t as usize];
            for (key, list) in txn.reads() {
                if let Some(&last) = list.last() {
                    if let Some(a) = self.writer_node(key, last).filter(|&a| a != b) {
                        edges.push((a, b, WR));
                    }
                }
            }
            for (key, element) in txn.appends() {
                let order = &self.orders[key as usize];
                let state = order.state_before(element);
                if state > 0 {
                    let previous = order.elements[state - 1];
                    if let Some(a) = self.writer_node(key, previous).filter(|&a| a != b) {
                        edges.push((a, b, WW));
                    }
                }
                for &r in &self.readers[key as usize][state] {
                    if r != b {
                        edges.push((r, b, RW));
                    }
                }
            }
        }
        self.realtime_edges(&mut edges);
        Graph::new(self.node_txn.len(), edges)
    }

    fn writer_node(&self, key: u32, element: u64) -> Option<u32> {
        let w = self.writer(key, element)?;
        let node = self.node_of[w.txn as usize];
        (node != NONE).then_some(node)
    }

    /// Real-time edges, transitively reduced with Elle's frontier: the
    /// completed transactions not yet followed by a completed transaction
    /// that started after them. A transaction invoked now follows each of
    /// them; when it completes, those it followed leave the frontier, since
    /// anything invoked later follows them through it. The frontier's
    /// members overlap one another in time, so there are at most as many
    /// as there are processes at once.
    fn realtime_edges(&self, edges: &mut Vec<(u32, u32, u8)>) {
        // (time, 0 = invoke / 1 = completion, node): at equal times an
        // invoke sorts first, so operations with equal stamps stay concurrent.
        let mut points: Vec<(u64, u8, u32)> = Vec::with_capacity(self.node_txn.len() * 2);
        for (n, &t) in self.node_txn.iter().enumerate() {
            let txn = &self.txns[t as usize];
            points.push((txn.call, 0, n as u32));
            if let Some(ret) = txn.ret {
                points.push((ret, 1, n as u32));
            }
        }
        points.sort_unstable();
        let mut frontier: Vec<u32> = Vec::new();
        let mut predecessors: HashMap<u32, Vec<u32>> = HashMap::new();
        for (_, kind, node) in points {
            if kind == 0 {
                edges.extend(frontier.iter().map(|&f| (f, node, RT)));
                if self.txns[self.node_txn[node as usize] as usize]
                    .ret
                    .is_some()
                {
                    predecessors.insert(node, frontier.clone());
                }
            } else {
                let before = predecessors.remove(&node).unwrap_or_default();
                frontier.retain(|f| !before.contains(f));
                frontier.push(node);
            }
        }
    }

    /// Finds the strongly connected components and reports a cycle in
    /// each. Returns the number of components and of truncated searches.
    fn check_cycles(&self, graph: &Graph, findings: &mut Findings) -> (usize, usize) {
        let mut scratch = Scratch::new(graph.len());
        let components = scratch.components(graph, None, |_| true, ALL);
        let mut component_of = vec![NONE; graph.len()];
        for (c, nodes) in components.iter().enumerate() {
            for &n in nodes {
                component_of[n as usize] = c as u32;
            }
        }
        let mut total = TOTAL_SEARCH_BUDGET;
        let mut truncated = 0;
        for (c, nodes) in components.iter().enumerate() {
            let mut budget = SCC_SEARCH_BUDGET.min(total);
            let member = |n: u32| component_of[n as usize] == c as u32;
            let found = find_cycle(graph, nodes, &member, &mut scratch, &mut budget);
            total -= SCC_SEARCH_BUDGET.min(total) - budget;
            let Some(found) = found else {
                continue;
            };
            truncated += usize::from(found.truncated);
            self.report_cycle(&found.steps, findings);
        }
        (components.len(), truncated)
    }

    fn report_cycle(&self, steps: &[(u32, u32, Rel)], findings: &mut Findings) {
        let kind = classify(steps.iter().map(|s| s.2));
        findings.add(kind, || {
            let mut keys: Vec<String> = Vec::new();
            let cycle: Vec<CycleStep> = steps
                .iter()
                .map(|&(a, b, rel)| {
                    let (explanation, key) = self.explain(a, b, rel);
                    if let Some(key) = key {
                        if !keys.iter().any(|k| k == self.key(key)) {
                            keys.push(self.key(key).to_string());
                        }
                    }
                    CycleStep {
                        from: self.node_index(a),
                        to: self.node_index(b),
                        rel,
                        explanation,
                    }
                })
                .collect();
            let ops: Vec<u64> = steps.iter().map(|s| self.node_index(s.0)).collect();
            let mut message = format!(
                "a cycle of {} transactions: {} i={}",
                ops.len(),
                cycle
                    .iter()
                    .map(|s| format!("i={} –{}→", s.from, s.rel.name()))
                    .collect::<Vec<_>>()
                    .join(" "),
                ops[0]
            );
            for s in &cycle {
                message.push_str(&format!(
                    "\n    i={} –{}→ i={}: {}",
                    s.from,
                    s.rel.name(),
                    s.to,
                    s.explanation
                ));
            }
            Anomaly {
                kind,
                message,
                ops,
                keys,
                cycle,
            }
        });
    }

    fn node_index(&self, node: u32) -> u64 {
        self.txn_index(self.node_txn[node as usize])
    }

    /// Why the edge `a → b` of relation `rel` exists, and its key.
    fn explain(&self, a: u32, b: u32, rel: Rel) -> (String, Option<u32>) {
        let (ta, tb) = (self.node_txn[a as usize], self.node_txn[b as usize]);
        let (ia, ib) = (self.txn_index(ta), self.txn_index(tb));
        let txn_b = &self.txns[tb as usize];
        match rel {
            Rel::Ww => {
                for (key, element) in txn_b.appends() {
                    let order = &self.orders[key as usize];
                    let state = order.state_before(element);
                    if state == 0 {
                        continue;
                    }
                    let previous = order.elements[state - 1];
                    if self.writer_node(key, previous) == Some(a) {
                        let unread = if state == order.elements.len()
                            && !order.position.contains_key(&element)
                        {
                            " (never read, so after every element read)"
                        } else {
                            ""
                        };
                        return (
                            format!(
                                "i={ib} appended {element} to {} right after i={ia} appended {previous}{unread}",
                                self.key(key)
                            ),
                            Some(key),
                        );
                    }
                }
            }
            Rel::Wr => {
                for (key, list) in txn_b.reads() {
                    if let Some(&last) = list.last() {
                        if self.writer_node(key, last) == Some(a) {
                            return (
                                format!(
                                    "i={ib} read {} = {}, ending in i={ia}'s append of {last}",
                                    self.key(key),
                                    show(list)
                                ),
                                Some(key),
                            );
                        }
                    }
                }
            }
            Rel::Rw => {
                for (key, element) in txn_b.appends() {
                    let state = self.orders[key as usize].state_before(element);
                    if !self.readers[key as usize][state].contains(&a) {
                        continue;
                    }
                    let list = self.txns[ta as usize]
                        .reads()
                        .find(|(k, list)| *k == key && self.state_of(key, list) == Some(state))
                        .map(|(_, l)| show(l))
                        .unwrap_or_default();
                    return (
                        format!(
                            "i={ia} read {} = {list}, the state right before i={ib}'s append of {element}",
                            self.key(key)
                        ),
                        Some(key),
                    );
                }
            }
            Rel::Realtime => {
                let ret = self.txns[ta as usize].ret.unwrap_or_default();
                return (
                    format!(
                        "i={ia} returned at {:.6}s, before i={ib} was invoked at {:.6}s",
                        ret as f64 / 1e9,
                        txn_b.call as f64 / 1e9
                    ),
                    None,
                );
            }
        }
        (format!("i={ia} –{}→ i={ib}", rel.name()), None)
    }

    fn state_of(&self, key: u32, list: &[u64]) -> Option<usize> {
        match list.last() {
            None => Some(0),
            Some(e) => self.orders[key as usize]
                .position
                .get(e)
                .map(|&p| p as usize + 1),
        }
    }
}

/// The anomaly a cycle with these edges shows.
fn classify(rels: impl Iterator<Item = Rel>) -> AnomalyKind {
    let rels: Vec<Rel> = rels.collect();
    let realtime = rels.contains(&Rel::Realtime);
    let rw = rels.iter().filter(|&&r| r == Rel::Rw).count();
    let adjacent_rw =
        (0..rels.len()).any(|i| rels[i] == Rel::Rw && rels[(i + 1) % rels.len()] == Rel::Rw);
    match (rw, realtime) {
        (0, false) if rels.contains(&Rel::Wr) => AnomalyKind::G1c,
        (0, false) => AnomalyKind::G0,
        (0, true) if rels.contains(&Rel::Wr) => AnomalyKind::G1cRealtime,
        (0, true) => AnomalyKind::G0Realtime,
        (1, false) => AnomalyKind::GSingle,
        (1, true) => AnomalyKind::GSingleRealtime,
        (_, false) if adjacent_rw => AnomalyKind::G2Item,
        (_, false) => AnomalyKind::GNonadjacent,
        (_, true) if adjacent_rw => AnomalyKind::G2ItemRealtime,
        (_, true) => AnomalyKind::GNonadjacentRealtime,
    }
}

const ALL: u8 = WW | WR | RW | RT;

/// The subgraphs searched for a cycle, strongest anomaly first: the data
/// dependencies alone, then with real-time edges. `Single(mask)` looks for
/// a cycle of one `rw` edge and a path over `mask`.
#[derive(Clone, Copy)]
enum Search {
    Plain(u8),
    Single(u8),
}

const SEARCHES: [Search; 8] = [
    Search::Plain(WW),
    Search::Plain(WW | WR),
    Search::Single(WW | WR),
    Search::Plain(WW | WR | RW),
    Search::Plain(WW | RT),
    Search::Plain(WW | WR | RT),
    Search::Single(WW | WR | RT),
    Search::Plain(ALL),
];

/// The edges' preferred labels, strongest evidence first.
const LABELS: [Rel; 4] = [Rel::Ww, Rel::Wr, Rel::Rw, Rel::Realtime];

fn label(mask: u8) -> Rel {
    LABELS
        .into_iter()
        .find(|r| mask & r.bit() != 0)
        .expect("an edge has a relation")
}

/// The dependency graph in compressed adjacency form.
struct Graph {
    offsets: Vec<usize>,
    targets: Vec<u32>,
    masks: Vec<u8>,
}

impl Graph {
    fn new(nodes: usize, mut edges: Vec<(u32, u32, u8)>) -> Self {
        edges.sort_unstable();
        let mut offsets = vec![0usize; nodes + 1];
        let mut targets: Vec<u32> = Vec::with_capacity(edges.len());
        let mut masks: Vec<u8> = Vec::with_capacity(edges.len());
        let mut last: Option<(u32, u32)> = None;
        for (a, b, mask) in edges {
            if last == Some((a, b)) {
                *masks.last_mut().expect("a previous edge") |= mask;
                continue;
            }
            last = Some((a, b));
            offsets[a as usize + 1] += 1;
            targets.push(b);
            masks.push(mask);
        }
        for i in 0..nodes {
            offsets[i + 1] += offsets[i];
        }
        Self {
            offsets,
            targets,
            masks,
        }
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn out(&self, node: u32) -> Range<usize> {
        self.offsets[node as usize]..self.offsets[node as usize + 1]
    }

    fn counts(&self) -> EdgeCounts {
        let count = |bit: u8| self.masks.iter().filter(|&&m| m & bit != 0).count();
        EdgeCounts {
            ww: count(WW),
            wr: count(WR),
            rw: count(RW),
            realtime: count(RT),
        }
    }
}

/// A cycle found in one component.
struct Found {
    steps: Vec<(u32, u32, Rel)>,
    truncated: bool,
}

/// Reusable per-node state for Tarjan's algorithm and breadth-first search.
struct Scratch {
    index: Vec<u32>,
    low: Vec<u32>,
    on_stack: Vec<bool>,
    /// Breadth-first search: the search that last reached each node, and
    /// from where (node, edge).
    stamp: Vec<u32>,
    parent: Vec<(u32, usize)>,
    current: u32,
}

impl Scratch {
    fn new(nodes: usize) -> Self {
        Self {
            index: vec![NONE; nodes],
            low: vec![0; nodes],
            on_stack: vec![false; nodes],
            stamp: vec![0; nodes],
            parent: vec![(NONE, 0); nodes],
            current: 0,
        }
    }

    /// Tarjan's strongly connected components, iteratively, of the subgraph
    /// of the nodes `within` (all if `None`) for which `member` holds, over
    /// edges with a relation in `allowed`. Returns the components with two
    /// or more nodes, and leaves the scratch state clean for the next call.
    fn components(
        &mut self,
        graph: &Graph,
        within: Option<&[u32]>,
        member: impl Fn(u32) -> bool,
        allowed: u8,
    ) -> Vec<Vec<u32>> {
        let all: Vec<u32>;
        let nodes = match within {
            Some(nodes) => nodes,
            None => {
                all = (0..graph.len() as u32).collect();
                &all
            }
        };
        let mut found = Vec::new();
        let mut counter = 0u32;
        let mut stack: Vec<u32> = Vec::new();
        let mut calls: Vec<(u32, usize)> = Vec::new();
        for &root in nodes {
            if self.index[root as usize] != NONE {
                continue;
            }
            self.visit(root, &mut counter, &mut stack);
            calls.push((root, graph.out(root).start));
            while let Some(&mut (v, ref mut cursor)) = calls.last_mut() {
                if *cursor < graph.out(v).end {
                    let e = *cursor;
                    *cursor += 1;
                    let w = graph.targets[e];
                    if graph.masks[e] & allowed == 0 || !member(w) {
                        continue;
                    }
                    if self.index[w as usize] == NONE {
                        self.visit(w, &mut counter, &mut stack);
                        calls.push((w, graph.out(w).start));
                    } else if self.on_stack[w as usize] {
                        self.low[v as usize] = self.low[v as usize].min(self.index[w as usize]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(u, _)) = calls.last() {
                    self.low[u as usize] = self.low[u as usize].min(self.low[v as usize]);
                }
                if self.low[v as usize] == self.index[v as usize] {
                    let mut component = Vec::new();
                    loop {
                        let w = stack.pop().expect("v is on the stack");
                        self.on_stack[w as usize] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.reverse();
                        found.push(component);
                    }
                }
            }
        }
        for &n in nodes {
            self.index[n as usize] = NONE;
        }
        found
    }

    fn visit(&mut self, v: u32, counter: &mut u32, stack: &mut Vec<u32>) {
        self.index[v as usize] = *counter;
        self.low[v as usize] = *counter;
        *counter += 1;
        stack.push(v);
        self.on_stack[v as usize] = true;
    }

    /// The shortest path from `from` to `to` (`from` itself excluded, so
    /// `from == to` gives the shortest cycle through it) over edges in
    /// `allowed` and nodes for which `member` holds, as edge indexes. Each
    /// edge examined costs one unit of `budget`; with `budget` `None` the
    /// search is not limited. `None` if there is no path or the budget ran
    /// out.
    fn shortest_path(
        &mut self,
        graph: &Graph,
        from: u32,
        to: u32,
        allowed: u8,
        member: &impl Fn(u32) -> bool,
        mut budget: Option<&mut u64>,
    ) -> Option<Vec<(u32, usize)>> {
        self.current += 1;
        let stamp = self.current;
        let mut queue = std::collections::VecDeque::from([from]);
        self.stamp[from as usize] = stamp;
        while let Some(v) = queue.pop_front() {
            for e in graph.out(v) {
                if let Some(b) = budget.as_deref_mut() {
                    if *b == 0 {
                        return None;
                    }
                    *b -= 1;
                }
                let w = graph.targets[e];
                if graph.masks[e] & allowed == 0 || !member(w) {
                    continue;
                }
                if w == to {
                    let mut path = vec![(v, e)];
                    let mut at = v;
                    while at != from {
                        let (p, pe) = self.parent[at as usize];
                        path.push((p, pe));
                        at = p;
                    }
                    path.reverse();
                    return Some(path);
                }
                if self.stamp[w as usize] != stamp {
                    self.stamp[w as usize] = stamp;
                    self.parent[w as usize] = (v, e);
                    queue.push_back(w);
                }
            }
        }
        None
    }
}

/// The strongest anomaly's shortest cycle in one component (see
/// [`SEARCHES`]), within `budget` edge visits beyond the first search of
/// each subgraph.
fn find_cycle(
    graph: &Graph,
    nodes: &[u32],
    member: &impl Fn(u32) -> bool,
    scratch: &mut Scratch,
    budget: &mut u64,
) -> Option<Found> {
    let mut truncated = false;
    for search in SEARCHES {
        let mut best: Option<Vec<(u32, u32, Rel)>> = None;
        let better =
            |best: &Option<Vec<_>>, len: usize| best.as_ref().is_none_or(|b| len < b.len());
        match search {
            Search::Plain(allowed) => {
                let subs = scratch.components(graph, Some(nodes), member, allowed);
                'starts: for sub in &subs {
                    for &start in sub {
                        // The first search always runs: the start is on a
                        // cycle, so it finds one.
                        let limit = if best.is_some() {
                            Some(&mut *budget)
                        } else {
                            None
                        };
                        let exhausted_before = limit.as_ref().is_some_and(|b| **b == 0);
                        if exhausted_before {
                            truncated = true;
                            break 'starts;
                        }
                        let path =
                            scratch.shortest_path(graph, start, start, allowed, member, limit);
                        if let Some(path) = path.filter(|p| better(&best, p.len())) {
                            best = Some(
                                path.into_iter()
                                    .map(|(v, e)| {
                                        (v, graph.targets[e], label(graph.masks[e] & allowed))
                                    })
                                    .collect(),
                            );
                        }
                        if best.as_ref().is_some_and(|b| b.len() == 2) {
                            break 'starts;
                        }
                    }
                }
            }
            Search::Single(path_allowed) => {
                'edges: for &a in nodes {
                    for e in graph.out(a) {
                        let b = graph.targets[e];
                        if graph.masks[e] & RW == 0 || !member(b) {
                            continue;
                        }
                        if *budget == 0 {
                            truncated = true;
                            break 'edges;
                        }
                        let Some(path) = scratch.shortest_path(
                            graph,
                            b,
                            a,
                            path_allowed,
                            member,
                            Some(&mut *budget),
                        ) else {
                            continue;
                        };
                        if better(&best, path.len() + 1) {
                            let mut steps = vec![(a, b, Rel::Rw)];
                            steps.extend(path.into_iter().map(|(v, pe)| {
                                (v, graph.targets[pe], label(graph.masks[pe] & path_allowed))
                            }));
                            best = Some(steps);
                        }
                        if best.as_ref().is_some_and(|b| b.len() == 2) {
                            break 'edges;
                        }
                    }
                }
            }
        }
        truncated |= *budget == 0;
        if let Some(steps) = best {
            return Some(Found { steps, truncated });
        }
    }
    None
}

/// A list for a message: the whole of a short one, else its last elements.
fn show(list: &[u64]) -> String {
    let join = |l: &[u64]| l.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    if list.len() <= LIST_SHOWN {
        format!("[{}]", join(list))
    } else {
        format!(
            "[… {}] ({} elements)",
            join(&list[list.len() - LIST_SHOWN..]),
            list.len()
        )
    }
}

/// A list for a message, around position `at`.
fn show_around(list: &[u64], at: usize) -> String {
    let from = at.saturating_sub(3);
    let to = (at + 4).min(list.len());
    let join = |l: &[u64]| l.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    format!(
        "[{}{}{}] ({} elements)",
        if from > 0 { "… " } else { "" },
        join(&list[from..to]),
        if to < list.len() { " …" } else { "" },
        list.len()
    )
}
