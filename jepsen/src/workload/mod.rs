//! Workloads: what the logical processes do, and how each operation is run
//! against etcd and recorded.
//!
//! - [`register`]: read / write / compare-and-set on independent registers
//!   (one etcd key each), checked for linearizability per key;
//! - [`kv`]: etcd's KV API mixed (ranges of every kind, puts with and
//!   without leases, deletes, multi-op txns, CAS on mod revision,
//!   compaction), checked by the revision-order checker;
//! - [`lease`]: leases granted, kept alive, attached to keys, revoked and
//!   left to expire, with an observer watching the prefix, checked by the
//!   lease-safety checker;
//! - [`append`]: Elle-style list-append transactions (reads and appends
//!   over a few keys, each a guarded etcd txn), checked for strict
//!   serializability by the cycle checker;
//! - [`watch`]: the `kv` workload's operations while watchers stream every
//!   change on the prefix, checked by the kv and the watch checkers.
//!
//! Every written value is unique in the run (`<process>-<counter>`), so a
//! value read names the one write that produced it.

pub mod append;
pub mod kv;
pub mod lease;
pub mod register;
pub mod watch;

use std::sync::atomic::{AtomicU64, Ordering};

use clap::ValueEnum;
use etcd_client::{Client, GetOptions};
use rand::rngs::StdRng;
use serde_json::Value;

use crate::history::EventType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Register,
    Kv,
    Lease,
    Append,
    Watch,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Kv => "kv",
            WorkloadKind::Lease => "lease",
            WorkloadKind::Append => "append",
            WorkloadKind::Watch => "watch",
        }
    }
}

/// An operation about to run.
#[derive(Debug, Clone)]
pub struct PlannedOp {
    /// The history's `f`.
    pub f: &'static str,
    /// The history's `key` (register workload: the register's name).
    pub key: Option<String>,
    /// The invoke's value.
    pub value: Value,
    /// A read: an unknown outcome counts as a failure.
    pub idempotent: bool,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Action {
    Register(register::RegisterAction),
    Kv(crate::ops::Request),
    Lease(lease::LeaseAction),
    Append(append::AppendTxn),
}

/// The outcome of an operation the server answered.
#[derive(Debug, Clone)]
pub struct Executed {
    /// `Ok`, or `Fail` when the answer itself says nothing was done (a
    /// register cas whose compare failed).
    pub kind: EventType,
    pub value: Value,
    pub rev: Option<i64>,
    pub error: Option<String>,
}

/// A workload and its shared generator state.
pub enum Workload {
    Register(register::Register),
    Kv(kv::KvWorkload),
    Lease(lease::LeaseWorkload),
    Append(append::AppendWorkload),
    Watch(watch::WatchWorkload),
}

impl Workload {
    pub fn new(kind: WorkloadKind, prefix: String, keys: usize) -> Self {
        match kind {
            WorkloadKind::Register => Workload::Register(register::Register::new(prefix, keys)),
            WorkloadKind::Kv => Workload::Kv(kv::KvWorkload::new(prefix, keys)),
            WorkloadKind::Lease => Workload::Lease(lease::LeaseWorkload::new(prefix, keys)),
            WorkloadKind::Append => Workload::Append(append::AppendWorkload::new(prefix, keys)),
            WorkloadKind::Watch => Workload::Watch(watch::WatchWorkload::new(prefix, keys)),
        }
    }

    /// One-time preparation before the processes start (e.g. leases).
    pub async fn setup(&self, client: &mut Client) -> anyhow::Result<()> {
        match self {
            Workload::Register(_) | Workload::Append(_) => Ok(()),
            Workload::Kv(w) => w.setup(client).await,
            Workload::Lease(w) => w.setup(client).await,
            Workload::Watch(w) => w.setup(client).await,
        }
    }

    /// Starts what runs beside the processes, once the run clock has
    /// started (lease: the observer watching the prefix; watch: the
    /// watchers, whose choices `seed` drives).
    pub fn start(&self, urls: &[String], clock: crate::history::RunClock, seed: u64) {
        match self {
            Workload::Lease(w) => w.start(urls, clock),
            Workload::Watch(w) => w.start(urls, clock, seed),
            _ => {}
        }
    }

    /// After the final write, before the members are stopped: lets the
    /// workload finish what runs beside the processes and write its logs
    /// into the report directory (lease: wait for the leases to end, stop
    /// the observer; watch: let the watchers deliver the final write, stop
    /// them, write `watch/`).
    pub async fn drain(
        &self,
        recorder: &crate::client::Recorder,
        control: &mut [Client],
        report_dir: &std::path::Path,
        op_timeout: std::time::Duration,
        election_timeout: std::time::Duration,
    ) -> anyhow::Result<()> {
        match self {
            Workload::Lease(w) => {
                w.drain(self, recorder, control, report_dir, op_timeout, election_timeout)
                    .await
            }
            Workload::Watch(w) => w.drain(report_dir).await,
            _ => Ok(()),
        }
    }

    pub fn plan(&self, rng: &mut StdRng, process: u64) -> PlannedOp {
        match self {
            Workload::Register(w) => w.plan(rng, process),
            Workload::Kv(w) => w.plan(rng, process),
            Workload::Lease(w) => w.plan(rng, process),
            Workload::Append(w) => w.plan(rng, process),
            Workload::Watch(w) => w.plan(rng, process),
        }
    }

    /// A write that must succeed once the faults are healed.
    pub fn final_write(&self, process: u64) -> PlannedOp {
        match self {
            Workload::Register(w) => w.final_write(process),
            Workload::Kv(w) => w.final_write(process),
            Workload::Lease(w) => w.final_write(process),
            Workload::Append(w) => w.final_write(process),
            Workload::Watch(w) => w.final_write(process),
        }
    }

    pub async fn execute(
        &self,
        client: &mut Client,
        op: &PlannedOp,
    ) -> Result<Executed, etcd_client::Error> {
        match &op.action {
            Action::Register(a) => register::execute(client, a).await,
            Action::Kv(r) => kv::execute(client, r).await,
            Action::Lease(a) => lease::execute(client, a).await,
            Action::Append(t) => append::execute(client, t).await,
        }
    }

    /// Learns from an operation's outcome (values to compare against,
    /// revisions to read at).
    pub fn observe(&self, op: &PlannedOp, kind: EventType, value: &Value, rev: Option<i64>) {
        match self {
            Workload::Register(w) => w.observe(op, kind, value),
            Workload::Kv(w) => w.observe(op, kind, value, rev),
            Workload::Lease(w) => w.observe(op, kind, value),
            // Transactions read what they append to; nothing to learn.
            Workload::Append(_) => {}
            Workload::Watch(w) => w.observe(op, kind, value, rev),
        }
    }
}

/// Unique values for writes.
#[derive(Debug, Default)]
pub struct Values(AtomicU64);

impl Values {
    pub fn next(&self, process: u64) -> String {
        format!("{process}-{}", self.0.fetch_add(1, Ordering::Relaxed))
    }
}

/// Checks that no key exists under `prefix` (a run's keys must start from
/// nothing) and returns the revision the check read at, if the response
/// carried a header.
pub(crate) async fn require_empty_prefix(client: &mut Client, prefix: &str) -> anyhow::Result<Option<i64>> {
    let existing = client.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await?;
    if existing.count() != 0 {
        anyhow::bail!("{} keys already exist under {:?}", existing.count(), prefix);
    }
    Ok(existing.header().map(|h| h.revision()))
}
