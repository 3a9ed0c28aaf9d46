//! Cairn's Raft layer, on [openraft](https://docs.rs/openraft) (pinned to
//! `=0.10.0-alpha.37`). This crate is the only one that names openraft; the
//! rest of Cairn uses [`TypeConfig`], the aliases in [`types`] and, where an
//! openraft item is unavoidable, the re-export [`openraft`].
//!
//! It holds the durable log store ([`RocksLogStore`]), the state machine on
//! `cairn-storage` with file-backed snapshots ([`StateMachine`]), the gRPC
//! peer network ([`network`]: [`PeerNetwork`] to send, [`RaftPeerService`]
//! to receive) and the member's node API ([`RaftNode`]: propose, read
//! barrier, membership, leader transfer), which is all the server uses.
//!
//! # Why the log store is built this way
//!
//! Raft is only safe if what a node acknowledged survives a crash: a vote it
//! granted (or it may vote twice in a term) and log entries it reported as
//! persisted (or a "committed" entry may exist on fewer than a quorum). And
//! the two must become durable **in the order they were issued**: if a
//! follower persisted a term-5 entry but crashed before its term-5 vote was
//! durable, it could come back at term 1 and let the old term-1 leader
//! overwrite an entry term 5 already counted as committed (openraft's
//! `docs::protocol::io_ordering`).
//!
//! `RocksLogStore` lives in its own RocksDB (separate from the MVCC store,
//! so log writes and their fsyncs do not contend with state-machine
//! compaction) with column families `logs` (index → entry) and `meta`.
//! Every write goes through one WAL, in the order openraft issues it
//! (openraft calls the storage methods one at a time, through `&mut self`):
//!
//! - **`save_vote`** is a synced write: durable before it returns.
//! - **`append`** writes all its entries in one `WriteBatch` *without* sync,
//!   so they are readable when `append` returns, and hands the callback to a
//!   dedicated sync thread. That thread takes every callback queued so far,
//!   calls RocksDB's `SyncWAL` once for all of them (group commit: many
//!   appends, one fsync), then completes them **in append order**. The Raft
//!   core never waits for an fsync to submit the next append.
//! - **`truncate_after`**, **`purge`** (a range deletion plus the purge mark
//!   in one batch) and **`save_committed`** are unsynced writes; they become
//!   durable with the next sync (an append's group, a vote, or closing).
//!
//! Durability follows issue order because of how RocksDB recovers: the WAL
//! is one sequential log, and with `WALRecoveryMode::PointInTime` recovery
//! replays it up to the first damaged record and stops. After any crash the
//! store therefore holds the result of a *prefix* of the writes issued; a
//! sync makes every earlier write part of every future prefix. So a durable
//! vote implies every append issued before it is durable, an acknowledged
//! append implies the truncation before it is durable, and so on — vote and
//! log I/O are never reordered. (RocksDB keeps this across column families:
//! before flushing one family's memtable it syncs the closed WALs, so an SST
//! never holds data whose WAL predecessors could be lost.)
//!
//! A callback may fire after later operations have returned (a vote synced
//! in the meantime already made that append durable); openraft tolerates
//! late completions — its flushed watermark only moves forward.
//!
//! # Invariants
//!
//! - The recovered store is always the effect of a prefix of the issued
//!   writes, and that prefix contains every write acknowledged as durable
//!   (a returned `save_vote`; an `append` whose callback reported `Ok`).
//! - Callbacks complete in append order, each only after a WAL sync that
//!   started after its batch was written.
//! - The log has no holes: an append must continue the log (or overwrite its
//!   tail), entries of one append are consecutive, and reads fail on a gap.
//! - Every stored record carries `crc32(key ‖ payload)`, checked on every
//!   read; a mismatch, an undecodable record or an entry under the wrong
//!   index is an error, never returned data.
//! - `purge` deletes entries and records the purged id atomically; after a
//!   full purge the last log id is the purged id.
//! - A failed write or sync poisons the store: every later call fails (the
//!   durability of earlier writes is then unknown).
//! - Every entry in the in-memory [`entry_cache`] is the entry the store
//!   holds at its index: entries leave it before a truncation or purge
//!   deletes them and enter it after their append is written.

pub mod entry_cache;
pub mod error;
pub mod lessor;
pub mod log_store;
pub mod network;
pub mod node;
mod record;
pub mod state_machine;
pub mod types;

pub use error::LogStoreError;
pub use log_store::{RocksLogReader, RocksLogStore};
pub use network::{CairnRaft, LeaderContact, PeerClient, PeerNetwork, RaftPeerService, SnapshotData};
pub use node::{ClusterError, MemberInfo, NodeConfig, RaftNode, RaftStatus};
pub use state_machine::{ApplyObserver, SnapshotFile, StateMachine};
/// The pinned openraft, for the few places outside this crate (and its
/// tests) that need an openraft item directly.
pub use openraft;
pub use types::{Member, RaftRequest, RaftResponse, TypeConfig};
