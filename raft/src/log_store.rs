//! [`RocksLogStore`]: openraft's `RaftLogStorage` on its own RocksDB.
//!
//! Layout (column families):
//! - `logs`: key = log index as 8 big-endian bytes (key order is index
//!   order), value = framed bincode of the whole [`Entry`] (log id included).
//! - `meta`: `format` (u32), `vote` ([`Vote`]), `committed` ([`LogId`]),
//!   `purged` ([`LogId`], the last purged log id).
//!
//! Every value is framed by [`crate::record`] (crc32 over key and payload)
//! and verified on every read. See the crate documentation for the
//! durability rules and invariants.

use std::fmt;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;

use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    DBRecoveryMode, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;

use crate::entry_cache::{CacheLimits, EntryCache, DEFAULT_LIMITS};
use crate::error::LogStoreError;
use crate::record;
use crate::types::{Entry, IoFlushed, LogId, LogState, TypeConfig, Vote};

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";

const KEY_FORMAT: &[u8] = b"format";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

/// The on-disk format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Sorts after every 8-byte index key: the exclusive end of "the rest of the
/// log" for range deletions, including index `u64::MAX`.
const LOG_END: [u8; 9] = [0xff; 9];

/// `limited_get_log_entries` stops once it has read this many bytes of
/// entries (always returning at least one entry), so one replication message
/// stays bounded whatever openraft's entry-count limits are.
pub const READ_BUDGET_BYTES: usize = 4 << 20;

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, LogStoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| LogStoreError::Corruption(format!("log key {key:02x?} is not 8 bytes")))
}

/// `[start, end)` of a range of indexes; `end == None` is unbounded. `None`
/// when the range is empty by construction.
fn index_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        // `..=u64::MAX` is the same as unbounded.
        Bound::Included(e) => e.checked_add(1),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    Some((start, end))
}

/// The database, the cache of its newest entries and the poison flag,
/// shared by the store, its readers and the sync thread.
struct Shared {
    db: DB,
    dir: PathBuf,
    /// The newest entries, as `logs` holds them. Filled by `append` once the
    /// batch is written; emptied of entries before `truncate` or `purge`
    /// deletes them. Held only for in-memory work, never across RocksDB.
    cache: parking_lot::Mutex<EntryCache>,
    /// Set by the first failed write or WAL sync; from then on every
    /// operation fails. Like fsync failures generally, a failed sync means
    /// the durability of earlier writes is unknown, so nothing is trusted.
    poison: OnceLock<LogStoreError>,
}

impl Shared {
    fn healthy(&self) -> Result<(), LogStoreError> {
        match self.poison.get() {
            Some(e) => Err(LogStoreError::Poisoned(e.to_string())),
            None => Ok(()),
        }
    }

    /// Poisons the store with `e` (if not already poisoned) and returns it.
    fn fail(&self, e: LogStoreError) -> LogStoreError {
        if self.poison.set(e.clone()).is_ok() {
            tracing::error!(dir = %self.dir.display(), error = %e, "raft log store poisoned");
        }
        e
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, LogStoreError> {
        self.healthy()?;
        match self.db.get_pinned_cf(self.cf(CF_META), key) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => record::decode(key, &v).map(Some),
            Err(e) => Err(LogStoreError::engine(e)),
        }
    }

    /// Writes `batch` through the WAL; with `sync` it is fsynced before
    /// this returns. A failure poisons the store.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), LogStoreError> {
        self.healthy()?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        opts.disable_wal(false);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| self.fail(LogStoreError::engine(e)))
    }

    /// fsyncs every WAL byte written so far (RocksDB `SyncWAL`, which covers
    /// closed WAL files too). A failure poisons the store.
    fn sync_wal(&self) -> Result<(), LogStoreError> {
        self.healthy()?;
        self.db
            .flush_wal(true)
            .map_err(|e| self.fail(LogStoreError::engine(e)))
    }

    /// Entries with index in `[start, end)`, in order, verified. With a
    /// `budget`, stops after the entry that brings the bytes read to it.
    /// From the cache when it holds the whole range, else from one RocksDB
    /// iterator, so one consistent point-in-time view.
    fn read_entries(
        &self,
        start: u64,
        end: Option<u64>,
        budget: Option<usize>,
    ) -> Result<Vec<Entry>, LogStoreError> {
        self.healthy()?;
        if end.is_some_and(|end| start >= end) {
            return Ok(Vec::new());
        }
        if let Some(end) = end {
            if let Some(cached) = self.cache.lock().read(start, end, budget) {
                return Ok(cached);
            }
        }
        let mut opts = ReadOptions::default();
        if let Some(end) = end {
            opts.set_iterate_upper_bound(index_key(end).to_vec());
        }
        let start_key = index_key(start);
        let iter = self.db.iterator_cf_opt(
            self.cf(CF_LOGS),
            opts,
            IteratorMode::From(&start_key, Direction::Forward),
        );
        let mut out: Vec<Entry> = Vec::new();
        let mut bytes = 0usize;
        for item in iter {
            let (key, value) = item.map_err(LogStoreError::engine)?;
            let entry = decode_entry(&key, &value)?;
            if let Some(prev) = out.last() {
                if prev.index() + 1 != entry.index() {
                    return Err(LogStoreError::Corruption(format!(
                        "hole in the raft log: entry {} follows entry {}",
                        entry.index(),
                        prev.index()
                    )));
                }
            }
            out.push(entry);
            bytes += value.len();
            if budget.is_some_and(|b| bytes >= b) {
                break;
            }
        }
        Ok(out)
    }

    /// Last purged log id and last log id, read from one snapshot so a
    /// concurrent purge cannot be seen half-done.
    fn log_state(&self) -> Result<LogState, LogStoreError> {
        self.healthy()?;
        let snap = self.db.snapshot();
        let purged: Option<LogId> = match snap.get_pinned_cf(self.cf(CF_META), KEY_PURGED) {
            Ok(None) => None,
            Ok(Some(v)) => Some(record::decode(KEY_PURGED, &v)?),
            Err(e) => return Err(LogStoreError::engine(e)),
        };
        let last = match snap.iterator_cf(self.cf(CF_LOGS), IteratorMode::End).next() {
            None => None,
            Some(item) => {
                let (key, value) = item.map_err(LogStoreError::engine)?;
                Some(decode_entry(&key, &value)?.log_id())
            }
        };
        if let (Some(p), Some(l)) = (&purged, &last) {
            if l.index <= p.index {
                return Err(LogStoreError::Corruption(format!(
                    "entry {} survives although the log is purged up to {}",
                    l.index, p.index
                )));
            }
        }
        Ok(LogState {
            last_log_id: last.or_else(|| purged.clone()),
            last_purged_log_id: purged,
        })
    }
}

/// Decodes an entry and checks it sits under its own index.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, LogStoreError> {
    let index = key_index(key)?;
    let entry: Entry = record::decode(key, value)?;
    if entry.index() != index {
        return Err(LogStoreError::Corruption(format!(
            "entry {} stored under index {index}",
            entry.index()
        )));
    }
    Ok(entry)
}

/// The sync thread's end of the queue of `append` callbacks.
struct Syncer {
    tx: mpsc::Sender<IoFlushed>,
    handle: thread::JoinHandle<()>,
}

/// The sync thread: waits for appended-but-unsynced batches, fsyncs the WAL
/// once for all of them (group commit), then completes their callbacks in
/// the order the appends happened.
///
/// Correctness: a callback is queued only after its batch's `write` returned,
/// so the batch's WAL record precedes the `SyncWAL` that follows the
/// dequeue; one FIFO queue and one thread complete callbacks in append order.
fn run_syncer(shared: Arc<Shared>, rx: mpsc::Receiver<IoFlushed>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let result = sync_group(&shared);
        tracing::trace!(
            appends = group.len(),
            ok = result.is_ok(),
            "raft log WAL synced"
        );
        for callback in group {
            callback.io_completed(result.clone().map_err(io::Error::from));
        }
    }
}

/// Makes a group of appends durable: one `SyncWAL` for all of them.
fn sync_group(shared: &Shared) -> Result<(), LogStoreError> {
    // Bug switch `skip-log-fsync`: report the appends durable as they are,
    // still in RocksDB's user-space WAL buffer (see `RocksLogStore::open`).
    #[cfg(feature = "bug-switches")]
    if cairn_storage::bugs::is_on(cairn_storage::bugs::Bug::SkipLogFsync) {
        return Ok(());
    }
    shared.sync_wal()
}

/// Bound on the write-ahead log files kept (see [`RocksLogStore::open`]).
const MAX_TOTAL_WAL_BYTES: u64 = 16 << 20;

/// One memtable of `logs`, and of `meta` (a few small records). Entries are
/// appended, read back within moments (to apply and replicate them, from
/// the memtable) and purged a few thousand entries later, so a memtable
/// only needs to absorb writes while the previous one is flushed.
const LOGS_MEMTABLE_BYTES: usize = 8 << 20;
const META_MEMTABLE_BYTES: usize = 1 << 20;

/// All memtables together (`db_write_buffer_size`); past it RocksDB flushes
/// the largest.
const MEMTABLE_BUDGET_BYTES: usize = 12 << 20;

/// Block cache for both families. Only entries already flushed are read
/// from files (a follower far behind, a restart), so little is needed;
/// without one RocksDB gives each family its own 32 MiB cache.
const BLOCK_CACHE_BYTES: usize = 8 << 20;

/// A durable Raft log and vote store in its own RocksDB. See the crate
/// documentation for its durability rules.
///
/// Dropping it completes every pending `append` callback and fsyncs the
/// WAL; the database closes when the store and all its readers are dropped.
pub struct RocksLogStore {
    shared: Arc<Shared>,
    syncer: Option<Syncer>,
    /// The highest index the log covers: its last entry, or the last purged
    /// id when nothing after it is stored. `None` for a pristine log. Used
    /// to refuse an `append` that would leave a hole.
    last_index: Option<u64>,
    /// The last purged index, if any: nothing may be appended at or below it.
    purged_index: Option<u64>,
}

impl fmt::Debug for RocksLogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksLogStore")
            .field("dir", &self.shared.dir)
            .field("last_index", &self.last_index)
            .field("purged_index", &self.purged_index)
            .field("poisoned", &self.shared.poison.get())
            .finish()
    }
}

impl RocksLogStore {
    /// Opens (creating if needed) the log store in `dir`. Fails if another
    /// process holds it open, if it was written in an unknown format, or if
    /// its last entry or metadata is corrupt.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LogStoreError> {
        Self::open_with_cache(dir, DEFAULT_LIMITS)
    }

    /// [`open`](Self::open) with the bounds of the in-memory cache of the
    /// newest entries (tests use small ones to read past it).
    pub fn open_with_cache(
        dir: impl AsRef<Path>,
        cache: CacheLimits,
    ) -> Result<Self, LogStoreError> {
        let dir = dir.as_ref().to_path_buf();

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(BLOCK_CACHE_BYTES));
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_compression_type(DBCompressionType::Lz4);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
        // Replay the WAL up to the first damaged record and stop: the
        // recovered state is always a prefix of the writes made (see the
        // crate docs). This is RocksDB's default; the durability argument
        // depends on it, so it is spelled out.
        db_opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        // Every write reaches the OS when `write` returns (not buffered in
        // RocksDB), and `SyncWAL` works (it does not with mmap writes).
        db_opts.set_manual_wal_flush(false);
        db_opts.set_allow_mmap_writes(false);
        // Bug switch `skip-log-fsync`: WAL records stay in RocksDB's buffer,
        // in this process, until it fills (1 MiB) or a synced write (a vote)
        // or a close flushes it. `kill -9` does not lose the OS page cache,
        // so merely skipping the fsync would be invisible to it; losing the
        // buffer is what an unsynced log loses in a power failure.
        #[cfg(feature = "bug-switches")]
        if cairn_storage::bugs::is_on(cairn_storage::bugs::Bug::SkipLogFsync) {
            db_opts.set_manual_wal_flush(true);
        }
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(3);
        // A WAL file is kept until every column family with data in it has
        // been flushed; a small, rarely written family (Meta) would otherwise
        // pin WAL files up to RocksDB's default cap of four times all
        // memtables. This forces that flush sooner. The log holds a few
        // thousand entries after each purge, so a small cap costs only an
        // occasional memtable flush.
        db_opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);

        let memtables = [
            (CF_LOGS, LOGS_MEMTABLE_BYTES),
            (CF_META, META_MEMTABLE_BYTES),
        ];
        let cfs = memtables.map(|(name, bytes)| {
            let mut opts = cf_opts.clone();
            opts.set_write_buffer_size(bytes);
            ColumnFamilyDescriptor::new(name, opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, &dir, cfs).map_err(LogStoreError::engine)?;
        let shared = Arc::new(Shared {
            db,
            dir,
            cache: parking_lot::Mutex::new(EntryCache::new(cache)),
            poison: OnceLock::new(),
        });

        match shared.get_meta::<u32>(KEY_FORMAT)? {
            Some(FORMAT_VERSION) => {}
            Some(found) => {
                return Err(LogStoreError::UnsupportedFormat {
                    found,
                    supported: FORMAT_VERSION,
                })
            }
            None => {
                let empty = shared
                    .db
                    .iterator_cf(shared.cf(CF_LOGS), IteratorMode::Start)
                    .next()
                    .is_none()
                    && shared
                        .db
                        .iterator_cf(shared.cf(CF_META), IteratorMode::Start)
                        .next()
                        .is_none();
                if !empty {
                    return Err(LogStoreError::Corruption(
                        "raft log store has data but no format marker".into(),
                    ));
                }
                let mut batch = WriteBatch::default();
                batch.put_cf(
                    shared.cf(CF_META),
                    KEY_FORMAT,
                    record::encode(KEY_FORMAT, &FORMAT_VERSION)?,
                );
                shared.write(batch, true)?;
            }
        }

        let state = shared.log_state()?;
        let last_index = state.last_log_id.map(|l| l.index);
        let purged_index = state.last_purged_log_id.map(|l| l.index);

        let (tx, rx) = mpsc::channel();
        let for_thread = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || run_syncer(for_thread, rx))
            .map_err(|e| {
                LogStoreError::Engine(format!("cannot start the raft log sync thread: {e}"))
            })?;

        Ok(Self {
            shared,
            syncer: Some(Syncer { tx, handle }),
            last_index,
            purged_index,
        })
    }

    /// Completes every pending `append` callback, then fsyncs the WAL so
    /// every write (including committed/truncate/purge, which do not sync on
    /// their own) is durable. Reports what dropping the store would ignore.
    pub fn close(mut self) -> Result<(), LogStoreError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), LogStoreError> {
        if let Some(Syncer { tx, handle }) = self.syncer.take() {
            drop(tx);
            if handle.join().is_err() {
                tracing::error!("raft log sync thread panicked");
            }
        }
        self.shared.sync_wal()
    }

    /// A reader sharing this store's database.
    pub fn reader(&self) -> RocksLogReader {
        RocksLogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    fn append_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
        callback: IoFlushed,
    ) -> Result<(), LogStoreError> {
        self.shared.healthy()?;
        let logs = self.shared.cf(CF_LOGS);
        let mut batch = WriteBatch::default();
        let mut range: Option<(u64, u64)> = None;
        let mut written: Vec<(Entry, usize)> = Vec::new();
        for entry in entries {
            let index = entry.index();
            range = match range {
                None => Some((index, index)),
                Some((first, prev)) if prev.checked_add(1) == Some(index) => Some((first, index)),
                Some((_, prev)) => {
                    return Err(LogStoreError::InvalidAppend(format!(
                        "entry {index} follows entry {prev} in one append"
                    )))
                }
            };
            let key = index_key(index);
            let value = record::encode(&key, &entry)?;
            batch.put_cf(logs, key, &value);
            written.push((entry, value.len()));
        }
        if let Some((first, last)) = range {
            if let Some(purged) = self.purged_index {
                if first <= purged {
                    return Err(LogStoreError::InvalidAppend(format!(
                        "appending at {first}, at or below the purged index {purged}"
                    )));
                }
            }
            if let Some(covered) = self.last_index {
                if first > covered.saturating_add(1) {
                    return Err(LogStoreError::InvalidAppend(format!(
                        "appending at {first} would leave a hole after {covered}"
                    )));
                }
            }
            // An overwritten tail leaves the cache before RocksDB changes.
            self.shared.cache.lock().remove_from(first);
            // Not synced here: readable on return, durable when the sync
            // thread's next SyncWAL completes, which is when `callback` fires.
            self.shared.write(batch, false)?;
            self.last_index = Some(self.last_index.map_or(last, |c| c.max(last)));
            let mut cache = self.shared.cache.lock();
            for (entry, stored_bytes) in written {
                cache.push(entry, stored_bytes);
            }
        }
        // Even an empty append goes through the queue, so callbacks
        // complete in the order of the appends.
        let syncer = self
            .syncer
            .as_ref()
            .expect("the sync thread runs until the store is dropped");
        syncer.tx.send(callback).map_err(|_| {
            self.shared
                .fail(LogStoreError::Engine("raft log sync thread is gone".into()))
        })
    }

    fn save_vote_sync(&mut self, vote: &Vote) -> Result<(), LogStoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.shared.cf(CF_META),
            KEY_VOTE,
            record::encode(KEY_VOTE, vote)?,
        );
        // Synced: openraft takes the vote as durable when this returns. The
        // sync also covers every earlier, not yet synced write.
        self.shared.write(batch, true)
    }

    fn save_committed_id(&mut self, committed: Option<LogId>) -> Result<(), LogStoreError> {
        let meta = self.shared.cf(CF_META);
        let mut batch = WriteBatch::default();
        match committed {
            Some(c) => batch.put_cf(meta, KEY_COMMITTED, record::encode(KEY_COMMITTED, &c)?),
            None => batch.delete_cf(meta, KEY_COMMITTED),
        }
        // Not synced: `committed` is an optimization (it lets the state
        // machine catch up at startup without a leader). WAL order keeps it
        // behind the entries it covers; the next sync makes it durable.
        self.shared.write(batch, false)
    }

    fn truncate(&mut self, after: Option<LogId>) -> Result<(), LogStoreError> {
        let from = match &after {
            Some(id) => match id.index.checked_add(1) {
                Some(from) => from,
                None => return Ok(()),
            },
            None => 0,
        };
        if self.last_index.is_none_or(|last| last < from) {
            return Ok(());
        }
        self.shared.cache.lock().remove_from(from);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.shared.cf(CF_LOGS), &index_key(from)[..], &LOG_END[..]);
        // Not synced: see the crate docs (durable no later than the next
        // append's callback or vote, and never reordered with them).
        self.shared.write(batch, false)?;
        self.last_index = self.shared.log_state()?.last_log_id.map(|l| l.index);
        Ok(())
    }

    fn purge_upto(&mut self, upto: LogId) -> Result<(), LogStoreError> {
        if let Some(purged) = self.shared.get_meta::<LogId>(KEY_PURGED)? {
            if purged.index >= upto.index {
                return Ok(());
            }
        }
        self.shared.cache.lock().remove_upto(upto.index);
        let mut batch = WriteBatch::default();
        let logs = self.shared.cf(CF_LOGS);
        match upto.index.checked_add(1) {
            Some(end) => batch.delete_range_cf(logs, &index_key(0)[..], &index_key(end)[..]),
            None => batch.delete_range_cf(logs, &index_key(0)[..], &LOG_END[..]),
        }
        batch.put_cf(
            self.shared.cf(CF_META),
            KEY_PURGED,
            record::encode(KEY_PURGED, &upto)?,
        );
        // One atomic batch: the purge mark and the deletion never diverge.
        // Not synced, like truncation.
        self.shared.write(batch, false)?;
        self.last_index = Some(self.last_index.map_or(upto.index, |c| c.max(upto.index)));
        self.purged_index = Some(upto.index);
        Ok(())
    }
}

impl Drop for RocksLogStore {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "raft log store closed without a final WAL sync");
        }
    }
}

impl RaftLogStorage<TypeConfig> for RocksLogStore {
    type LogReader = RocksLogReader;

    async fn get_log_state(&mut self) -> Result<LogState, io::Error> {
        Ok(self.shared.log_state()?)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        Ok(self.save_vote_sync(vote)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        Ok(self.save_committed_id(committed)?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.shared.get_meta(KEY_COMMITTED)?)
    }

    async fn append<I>(&mut self, entries: I, callback: IoFlushed) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        Ok(self.append_entries(entries, callback)?)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        Ok(self.truncate(last_log_id)?)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        Ok(self.purge_upto(log_id)?)
    }
}

/// Reads the log and the vote; cheap to clone, usable concurrently with the
/// store (openraft's replication tasks each hold one).
#[derive(Clone)]
pub struct RocksLogReader {
    shared: Arc<Shared>,
}

impl fmt::Debug for RocksLogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksLogReader")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

fn try_get(shared: &Shared, range: &impl RangeBounds<u64>) -> Result<Vec<Entry>, LogStoreError> {
    match index_bounds(range) {
        None => Ok(Vec::new()),
        Some((start, end)) => shared.read_entries(start, end, None),
    }
}

/// The store and its readers read the same way, through their shared handle.
macro_rules! impl_log_reader {
    ($t:ty) => {
        impl RaftLogReader<TypeConfig> for $t {
            async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
                &mut self,
                range: RB,
            ) -> Result<Vec<Entry>, io::Error> {
                Ok(try_get(&self.shared, &range)?)
            }

            async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
                Ok(self.shared.get_meta(KEY_VOTE)?)
            }

            async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
                Ok(self.shared.read_entries(start, Some(end), Some(READ_BUDGET_BYTES))?)
            }
        }
    };
}

impl_log_reader!(RocksLogReader);
impl_log_reader!(RocksLogStore);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_as_indexes() {
        let mut idx = vec![0u64, 1, 255, 256, 65_535, 1 << 40, u64::MAX - 1, u64::MAX];
        let mut keys: Vec<[u8; 8]> = idx.iter().map(|i| index_key(*i)).collect();
        keys.sort();
        idx.sort();
        assert_eq!(
            keys.iter()
                .map(|k| key_index(k).unwrap())
                .collect::<Vec<_>>(),
            idx
        );
        assert!(index_key(u64::MAX)[..] < LOG_END[..]);
        assert!(key_index(&[1, 2, 3]).is_err());
    }

    #[test]
    fn index_bounds_cover_every_range_form() {
        assert_eq!(index_bounds(&(3..7)), Some((3, Some(7))));
        assert_eq!(index_bounds(&(3..=7)), Some((3, Some(8))));
        assert_eq!(index_bounds(&(3..)), Some((3, None)));
        assert_eq!(index_bounds(&(..7)), Some((0, Some(7))));
        assert_eq!(index_bounds(&(..)), Some((0, None)));
        assert_eq!(index_bounds(&(5..=u64::MAX)), Some((5, None)));
        assert_eq!(
            index_bounds(&(Bound::Excluded(u64::MAX), Bound::Unbounded)),
            None
        );
        assert_eq!(
            index_bounds(&(Bound::Excluded(4), Bound::Included(6))),
            Some((5, Some(7)))
        );
    }

    #[test]
    fn open_refuses_an_unknown_format_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RocksLogStore::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put_cf(
                store.shared.cf(CF_META),
                KEY_FORMAT,
                record::encode(KEY_FORMAT, &2u32).unwrap(),
            );
            store.shared.write(batch, true).unwrap();
        }
        let err = RocksLogStore::open(dir.path()).unwrap_err();
        assert_eq!(
            err,
            LogStoreError::UnsupportedFormat {
                found: 2,
                supported: FORMAT_VERSION
            }
        );
    }

    #[test]
    fn open_refuses_data_without_a_format_marker() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RocksLogStore::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            batch.delete_cf(store.shared.cf(CF_META), KEY_FORMAT);
            batch.put_cf(store.shared.cf(CF_META), KEY_VOTE, b"x");
            store.shared.write(batch, true).unwrap();
        }
        assert!(matches!(
            RocksLogStore::open(dir.path()),
            Err(LogStoreError::Corruption(_))
        ));
    }

    #[test]
    fn a_poisoned_store_refuses_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksLogStore::open(dir.path()).unwrap();
        store.shared.fail(LogStoreError::Engine("injected".into()));
        assert!(matches!(
            store.shared.log_state(),
            Err(LogStoreError::Poisoned(_))
        ));
        assert!(matches!(
            store.shared.read_entries(0, None, None),
            Err(LogStoreError::Poisoned(_))
        ));
        assert!(matches!(
            store.shared.get_meta::<Vote>(KEY_VOTE),
            Err(LogStoreError::Poisoned(_))
        ));
        assert!(matches!(
            store.shared.sync_wal(),
            Err(LogStoreError::Poisoned(_))
        ));
        assert!(matches!(
            store.shared.write(WriteBatch::default(), false),
            Err(LogStoreError::Poisoned(_))
        ));
        assert!(matches!(store.close(), Err(LogStoreError::Poisoned(_))));
    }
}
