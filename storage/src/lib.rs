//! Cairn's MVCC key-value store, with etcd's revision semantics.
//!
//! Every change creates a new store revision; every key keeps its history
//! (create revision, mod revision, version) until compaction. Writes go
//! through [`Store::apply`], a deterministic function of the request and the
//! current state, which is why the same code serves a single member, the Raft
//! state machine and the model-based tests. This crate knows nothing of gRPC
//! or Raft; it speaks the etcd protobuf messages from `cairn-api` only.

pub mod engine;
mod error;
mod index;
pub mod record;
mod revision;
mod store;
mod txn;
pub mod validate;

pub use engine::{Engine, Keyspace, MemEngine, RocksEngine};
pub use error::StorageError;
pub use index::KeyRange;
pub use revision::Revision;
pub use store::{Applied, Store, StoreConfig, WriteRequest, WriteResponse};
