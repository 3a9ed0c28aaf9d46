//! Cairn's MVCC key-value store, with etcd's revision semantics.
//!
//! Every change creates a new store revision; every key keeps its history
//! (create revision, mod revision, version) until compaction. Writes go
//! through [`Store::apply`], a deterministic function of the request and the
//! current state, which is why the same code serves the Raft state machine
//! ([`Store::apply_entries`] runs the same code) and the model-based tests. This crate knows nothing of gRPC
//! or Raft; it speaks the etcd protobuf messages from `cairn-api` only.
//!
//! What the Raft state machine uses:
//! - [`WriteRequest::encode`] / [`WriteRequest::decode`] (and the same on
//!   [`WriteResponse`]): the deterministic bytes carried in log entries and
//!   forwarded between members.
//! - [`Store::apply_entries`]: applies committed [`LogEntry`]s, skipping a
//!   request id already applied within [`DEDUP_WINDOW`] log indexes, and
//!   stores the raft layer's opaque state ([`Store::raft_state`]) in the same
//!   atomic batch as the data and the applied index (one batch per call).
//! - [`Store::snapshot_view`] → [`StoreSnapshot::write_to`]: a point-in-time
//!   snapshot streamed with bounded memory; [`Store::restore`] installs one
//!   atomically and crash-safely ([`Store::restore_interrupted`] reports a
//!   restore cut short by a crash); [`verify_snapshot`] checks a stream
//!   without installing it. The stream format is described in the
//!   `snapshot` module's source.
//!
//! Everything stored is sealed with a checksum ([`record`]) and verified
//! when read, snapshot streams included.

#[cfg(feature = "bug-switches")]
pub mod bugs;
mod codec;
mod dedup;
pub mod engine;
mod error;
mod index;
mod lease;
pub mod record;
mod revision;
mod snapshot;
mod store;
mod txn;
pub mod validate;

pub use dedup::DEDUP_WINDOW;
pub use engine::{Engine, Keyspace, MemEngine, RocksEngine};
pub use error::StorageError;
pub use index::KeyRange;
pub use lease::LeaseInfo;
pub use revision::Revision;
pub use snapshot::{verify_snapshot, SnapshotSummary, StoreSnapshot};
pub use store::{Applied, EntryOutcome, LogEntry, Store, StoreConfig, WriteRequest, WriteResponse};
