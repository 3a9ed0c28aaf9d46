use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode,
    Options, ReadOptions, WriteOptions, DB,
};

use super::{BatchOp, Engine, Keyspace, Scan, WriteBatch};
use crate::error::StorageError;

/// RocksDB with one column family per [`Keyspace`].
pub struct RocksEngine {
    db: DB,
}

/// Block cache shared by all column families. Small on purpose: the MVCC
/// index lives in memory, most reads are point lookups of recent data, and
/// the OS page cache holds the (compressed) files anyway.
const BLOCK_CACHE_BYTES: usize = 32 << 20;

/// One memtable of each keyspace. `Kv` keys are revisions, which only grow,
/// so flushed files rarely overlap older ones and small memtables cost
/// little compaction; `Meta` is a few records rewritten on every apply and a
/// sliding window of request ids, which flush to almost nothing. RocksDB
/// keeps a second memtable per family while the first is flushed.
const KV_MEMTABLE_BYTES: usize = 16 << 20;
const META_MEMTABLE_BYTES: usize = 4 << 20;

/// All memtables of the store together (`db_write_buffer_size`): past it,
/// RocksDB flushes the largest. Without it each family could hold two full
/// memtables at once.
const MEMTABLE_BUDGET_BYTES: usize = 24 << 20;

/// Bound on the write-ahead log files kept (see [`RocksEngine::open`]).
const MAX_TOTAL_WAL_BYTES: u64 = 32 << 20;

fn engine_err(e: rocksdb::Error) -> StorageError {
    StorageError::Engine(e.into_string())
}

impl RocksEngine {
    /// Opens (creating if needed) the database in `dir`. Fails if another
    /// process holds it open.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);

        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_compression_type(DBCompressionType::Lz4);
        cf_opts.set_bottommost_compression_type(DBCompressionType::Zstd);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(3);
        db_opts.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
        // A WAL file is kept until every column family with data in it has
        // been flushed; a small, rarely written family (Meta) would otherwise
        // pin WAL files up to RocksDB's default cap of four times all
        // memtables. This forces that flush sooner. (RocksDB also
        // preallocates each WAL file to about one memtable, which is what
        // `du` counts of them.)
        db_opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        // Bug switch `skip-log-fsync` makes `kill -9` act as a power failure
        // would on a member whose Raft log is not fsynced, and that includes
        // this store: its batches are not fsynced either (by design: the log
        // replays what they lose), so they too stay in RocksDB's user-space
        // WAL buffer until it fills or `sync_wal` flushes it. Without this,
        // the store's applied state, which survives `kill -9` in the page
        // cache, would stand in for the lost log tail and hide the bug.
        #[cfg(feature = "bug-switches")]
        if crate::bugs::is_on(crate::bugs::Bug::SkipLogFsync) {
            db_opts.set_manual_wal_flush(true);
        }

        let cfs = Keyspace::ALL.iter().map(|ks| {
            let mut opts = cf_opts.clone();
            opts.set_write_buffer_size(match ks {
                Keyspace::Kv => KV_MEMTABLE_BYTES,
                Keyspace::Meta => META_MEMTABLE_BYTES,
            });
            ColumnFamilyDescriptor::new(ks.name(), opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, dir, cfs).map_err(engine_err)?;
        Ok(Self { db })
    }

    fn cf(&self, ks: Keyspace) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(ks.name())
            .expect("column families are created at open")
    }

    fn int_property(&self, name: &str) -> u64 {
        Keyspace::ALL
            .iter()
            .map(|ks| {
                self.db
                    .property_int_value_cf(self.cf(*ks), name)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Engine for RocksEngine {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(ks), key).map_err(engine_err)
    }

    fn multi_get(&self, ks: Keyspace, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let sorted = keys.windows(2).all(|w| w[0] <= w[1]);
        self.db
            .batched_multi_get_cf(self.cf(ks), keys, sorted)
            .into_iter()
            .map(|r| r.map(|v| v.map(|s| s.to_vec())).map_err(engine_err))
            .collect()
    }

    fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<Scan, StorageError>,
    ) -> Result<(), StorageError> {
        let mut opts = ReadOptions::default();
        if let Some(end) = end {
            opts.set_iterate_upper_bound(end.to_vec());
        }
        let iter = self
            .db
            .iterator_cf_opt(self.cf(ks), opts, IteratorMode::From(start, Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(engine_err)?;
            if f(&k, &v)? == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    fn last(&self, ks: Keyspace) -> Result<Option<(Vec<u8>, Vec<u8>)>, StorageError> {
        let mut iter = self.db.iterator_cf(self.cf(ks), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item.map_err(engine_err)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
        }
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                BatchOp::Put { ks, key, value } => wb.put_cf(self.cf(*ks), key, value),
                BatchOp::Delete { ks, key } => wb.delete_cf(self.cf(*ks), key),
                // An empty range is a no-op on both engines (RocksDB may reject it).
                BatchOp::DeleteRange { ks, start, end } if start < end => {
                    wb.delete_range_cf(self.cf(*ks), start, end)
                }
                BatchOp::DeleteRange { .. } => {}
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(wb, &opts).map_err(engine_err)
    }

    fn size_bytes(&self) -> u64 {
        self.int_property("rocksdb.total-sst-files-size")
            + self.int_property("rocksdb.size-all-mem-tables")
    }

    fn live_size_bytes(&self) -> u64 {
        self.int_property("rocksdb.live-sst-files-size")
            + self.int_property("rocksdb.cur-size-all-mem-tables")
    }

    fn compact_files(&self) -> Result<(), StorageError> {
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for ks in Keyspace::ALL {
            self.db.compact_range_cf_opt(self.cf(ks), None::<&[u8]>, None::<&[u8]>, &opts);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        for ks in Keyspace::ALL {
            self.db.flush_cf(self.cf(ks)).map_err(engine_err)?;
        }
        self.db.flush_wal(true).map_err(engine_err)
    }

    fn sync_wal(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(engine_err)
    }
}
