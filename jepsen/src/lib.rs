//! Cairn's Jepsen-style test harness: the operation history model and the
//! checkers that judge recorded histories.
//!
//! - [`history`]: events (invoke/ok/fail/info) as JSONL, and their pairing
//!   into operations;
//! - [`jepsen_log`]: a reader for Jepsen's own text logs, so the checkers can
//!   be validated on histories with known verdicts;
//! - [`checker`]: linearizability search ([`checker::wgl`]) and the register
//!   model ([`checker::register`]);
//! - [`cli`]: the `cairn-jepsen` subcommands.
//!
//! The harness behind `cairn-jepsen run`:
//! - [`cluster`]: real `cairn` processes on loopback (start, kill -9,
//!   restart, SIGSTOP/SIGCONT), behind a [`proxy`] that can partition them;
//! - [`client`]: independent etcd clients, the history [`client::Recorder`]
//!   and the classification of errors into failed and unknown outcomes;
//! - [`workload`]: the `register` and `kv` workloads, with [`ops`] the
//!   vocabulary of kv histories;
//! - [`nemesis`]: the seeded fault schedule and its execution;
//! - [`run`]: one run end to end, [`report`] and [`chart`] its outputs;
//! - [`suite`]: many runs: the fixed CI set and the random soak.

pub mod chart;
pub mod checker;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod history;
pub mod jepsen_log;
pub mod nemesis;
pub mod ops;
pub mod proxy;
pub mod report;
pub mod run;
pub mod suite;
pub mod workload;
