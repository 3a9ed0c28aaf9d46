//! The byte-level storage engine under the MVCC layer.
//!
//! MVCC code talks only to [`Engine`], so the same logic runs on RocksDB in
//! production and on [`MemEngine`] in tests and simulations. Nothing outside
//! `engine/rocks.rs` names `rocksdb`.

mod mem;
mod rocks;

pub use mem::MemEngine;
pub use rocks::RocksEngine;

use crate::error::StorageError;

/// Separate ordered key spaces inside one engine. On RocksDB each is a column
/// family; a [`WriteBatch`] may span several and is still atomic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// MVCC records keyed by revision (16-byte big-endian `main`,`sub`).
    Kv,
    /// Small bookkeeping records: applied index, revisions, compaction state.
    Meta,
}

impl Keyspace {
    pub const ALL: [Keyspace; 2] = [Keyspace::Kv, Keyspace::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Kv => "kv",
            Keyspace::Meta => "meta",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    Put { ks: Keyspace, key: Vec<u8>, value: Vec<u8> },
    Delete { ks: Keyspace, key: Vec<u8> },
}

/// An ordered list of writes applied atomically by [`Engine::write`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn put(&mut self, ks: Keyspace, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put { ks, key, value });
    }

    pub fn delete(&mut self, ks: Keyspace, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete { ks, key });
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What a scan callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    Continue,
    Stop,
}

pub trait Engine: Send + Sync + 'static {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Point lookups of many keys; engines that can batch them (RocksDB's
    /// MultiGet) override this.
    fn multi_get(&self, ks: Keyspace, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        keys.iter().map(|k| self.get(ks, k)).collect()
    }

    /// Visits keys in `[start, end)` (`end = None`: to the end) in ascending order.
    fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<Scan, StorageError>,
    ) -> Result<(), StorageError>;

    /// The last key (and its value) in the keyspace, if any.
    fn last(&self, ks: Keyspace) -> Result<Option<(Vec<u8>, Vec<u8>)>, StorageError>;

    /// Applies the batch atomically. With `sync`, it is durable (fsynced) on return.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError>;

    /// Bytes the engine occupies (etcd's `dbSize`).
    fn size_bytes(&self) -> u64;

    /// Bytes holding live data (etcd's `dbSizeInUse`).
    fn live_size_bytes(&self) -> u64;

    /// Flushes memtables and syncs; called on graceful shutdown.
    fn flush(&self) -> Result<(), StorageError>;

    /// Rewrites stored files to drop deleted data (etcd's defragment).
    fn compact_files(&self) -> Result<(), StorageError>;
}
