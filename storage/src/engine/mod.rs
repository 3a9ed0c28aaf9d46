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

    /// A key above every key Cairn stores in this keyspace, so
    /// `[b"", upper_bound())` covers all of it: `Kv` keys are 16-byte
    /// revisions, `Meta` keys are ASCII names (some followed by binary
    /// suffixes).
    pub fn upper_bound(self) -> Vec<u8> {
        match self {
            Keyspace::Kv => vec![0xff; 17],
            Keyspace::Meta => vec![0xff],
        }
    }

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
    /// Deletes every key in `[start, end)`.
    DeleteRange { ks: Keyspace, start: Vec<u8>, end: Vec<u8> },
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

    /// Deletes every key in `[start, end)`. Later ops in the same batch win
    /// over it, so a batch can clear a keyspace and then write into it.
    pub fn delete_range(&mut self, ks: Keyspace, start: Vec<u8>, end: Vec<u8>) {
        self.ops.push(BatchOp::DeleteRange { ks, start, end });
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

    /// Makes every write made so far durable (unsynced writes included),
    /// without flushing memtables: one WAL fsync.
    fn sync_wal(&self) -> Result<(), StorageError>;

    /// Rewrites stored files to drop deleted data (etcd's defragment).
    fn compact_files(&self) -> Result<(), StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn keys(e: &dyn Engine, ks: Keyspace) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        e.scan(ks, &[], None, &mut |k, _| {
            out.push(k.to_vec());
            Ok(Scan::Continue)
        })
        .unwrap();
        out
    }

    /// Range deletes behave the same on both engines: end exclusive, only the
    /// named keyspace, empty ranges ignored, later ops in the batch win.
    fn range_delete(e: Arc<dyn Engine>) {
        let mut b = WriteBatch::default();
        for k in [&b"a"[..], b"b", b"bb", b"c", b"d"] {
            b.put(Keyspace::Kv, k.to_vec(), b"v".to_vec());
            b.put(Keyspace::Meta, k.to_vec(), b"v".to_vec());
        }
        e.write(b, false).unwrap();

        let mut b = WriteBatch::default();
        b.delete_range(Keyspace::Kv, b"b".to_vec(), b"d".to_vec());
        b.delete_range(Keyspace::Kv, b"d".to_vec(), b"a".to_vec());
        b.put(Keyspace::Kv, b"bb".to_vec(), b"again".to_vec());
        e.write(b, true).unwrap();
        assert_eq!(keys(&*e, Keyspace::Kv), vec![b"a".to_vec(), b"bb".to_vec(), b"d".to_vec()]);
        assert_eq!(e.get(Keyspace::Kv, b"bb").unwrap(), Some(b"again".to_vec()));
        assert_eq!(keys(&*e, Keyspace::Meta).len(), 5);

        let mut b = WriteBatch::default();
        b.delete_range(Keyspace::Meta, Vec::new(), Keyspace::Meta.upper_bound());
        b.put(Keyspace::Meta, b"marker".to_vec(), b"m".to_vec());
        e.write(b, true).unwrap();
        assert_eq!(keys(&*e, Keyspace::Meta), vec![b"marker".to_vec()]);
    }

    #[test]
    fn range_delete_mem() {
        range_delete(Arc::new(MemEngine::new()));
    }

    #[test]
    fn range_delete_rocksdb() {
        let dir = tempfile::TempDir::new().unwrap();
        range_delete(Arc::new(RocksEngine::open(dir.path()).unwrap()));
    }
}
