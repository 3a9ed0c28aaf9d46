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

pub mod checker;
pub mod cli;
pub mod history;
pub mod jepsen_log;
