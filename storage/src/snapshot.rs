//! Point-in-time snapshots of a store, as a byte stream, for Raft snapshot
//! transfer and for installing a member from another's state.
//!
//! # Why a view needs no engine snapshot
//!
//! The `Kv` keyspace only ever grows at revisions above the current one, and
//! the only thing that removes records is physical compaction. So the state at
//! revision `r` is fully described by the `Meta` records at that moment (a few
//! small bookkeeping records plus the dedup window, a few MiB at most) and the
//! `Kv` records with `main <= r`, provided compaction deletes nothing while the
//! view is alive. [`Store::snapshot_view`](crate::Store::snapshot_view) copies
//! the `Meta` records under the apply lock (the dedup window from memory) and
//! pauses compaction deletes until the view is dropped;
//! [`StoreSnapshot::write_to`] scans the `Kv` records lazily, so memory stays
//! bounded whatever the store's size. A restore of the
//! store itself does remove records a view needs; it bumps a generation
//! number, and a view taken before it refuses to write (see
//! [`StoreSnapshot::write_to`]).
//!
//! # Stream format (version 1)
//!
//! ```text
//! header   "CAIRNSNP" | format version: u32
//! frame*   keyspace: u8 (1 = kv, 2 = meta) | key len: u32 | key | value len: u32 | value
//! trailer  0u8 | record count: u64 | crc32 of every preceding byte: u32
//! ```
//!
//! Integers are big-endian. Values are the records exactly as stored, each
//! already sealed with its own checksum ([`crate::record`]), so a restored
//! store holds byte-identical records. Within each keyspace, keys are strictly
//! ascending (meta frames come first). Nothing may follow the trailer. The
//! trailer's CRC covers the whole stream, but it can only be checked at the
//! end: a restore therefore writes records as they arrive and makes them
//! visible only with its final batch (see [`Store::restore`](crate::Store::restore)).

use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::dedup::{self, Dedup};
use crate::engine::{Engine, Keyspace, Scan};
use crate::error::StorageError;
use crate::record::{unseal, KvRecord};
use crate::revision::Revision;
use crate::store::{check_snapshot_meta, CompactionPause, META_RESTORING};

const MAGIC: &[u8; 8] = b"CAIRNSNP";
const FORMAT_VERSION: u32 = 1;

const FRAME_END: u8 = 0;
const FRAME_KV: u8 = 1;
const FRAME_META: u8 = 2;

/// Meta records are held in memory while a snapshot is read; legitimate ones
/// are a few MiB (see [`crate::DEDUP_WINDOW`]), so more is a broken stream.
const MAX_META_BYTES: u64 = 64 << 20;

const IO_BUFFER: usize = 64 << 10;

/// Size of a snapshot stream: all its bytes (header and trailer included) and
/// the records it carries (both keyspaces).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub bytes: u64,
    pub records: u64,
}

/// The store as of one applied index, ready to be written as a snapshot
/// stream any number of times. While any view is alive, physical compaction
/// deletes nothing (it resumes when the last view is dropped), so drop views
/// promptly. It holds the engine, not the [`Store`](crate::Store): it stays
/// usable after the store is closed, and keeps a RocksDB directory open.
pub struct StoreSnapshot {
    pub(crate) engine: Arc<dyn Engine>,
    /// The store's restore generation; shared, so writing blocks a restore.
    pub(crate) contents: Arc<RwLock<u64>>,
    /// The generation the view was taken in.
    pub(crate) generation: u64,
    /// Every `Meta` record at the time of the view except the dedup
    /// window's, verified, in key order.
    pub(crate) meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// The dedup window at the time of the view, `(index, id)` in index
    /// order; written out as the `Meta` records the store holds for it.
    pub(crate) dedup: Vec<(u64, u64)>,
    pub(crate) applied_index: u64,
    pub(crate) revision: i64,
    pub(crate) raft_state: Option<Vec<u8>>,
    pub(crate) _pause: CompactionPause,
}

/// The raft layer moves views to a blocking thread to stream them.
const _: fn() = || {
    fn movable<T: Send + Sync + 'static>() {}
    movable::<StoreSnapshot>();
};

impl fmt::Debug for StoreSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSnapshot")
            .field("applied_index", &self.applied_index)
            .field("revision", &self.revision)
            .field("meta_records", &self.meta.len())
            .field("dedup_records", &self.dedup.len())
            .field("raft_state_bytes", &self.raft_state.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl StoreSnapshot {
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The raft layer's blob as of the view (`None` if never stored).
    pub fn raft_state(&self) -> Option<&[u8]> {
        self.raft_state.as_deref()
    }

    /// Calls `f` with every `Meta` record of the view, in key order: what a
    /// scan of the keyspace at the time of the view would have returned.
    /// The dedup records' keys form one contiguous run of the key space, so
    /// they go where such a scan would meet them.
    pub(crate) fn each_meta_record(
        &self,
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let split = self.meta.partition_point(|(k, _)| k.as_slice() < dedup::PREFIX);
        for (k, v) in &self.meta[..split] {
            f(k, v)?;
        }
        for (index, id) in &self.dedup {
            let (k, v) = Dedup::record_bytes(*index, *id);
            f(&k, &v)?;
        }
        for (k, v) in &self.meta[split..] {
            f(k, v)?;
        }
        Ok(())
    }

    /// Streams the snapshot to `w` (buffered here; pass the sink directly).
    /// Every record is verified as it is read. A restore of the store waits
    /// for a `write_to` in progress; a view taken before a restore fails with
    /// `Compacted` (its records are gone), a non-fatal error. A failing `w`
    /// is reported as `Engine`, since `StorageError` has no I/O variant;
    /// the store itself is unaffected.
    pub fn write_to(&self, w: &mut dyn Write) -> Result<SnapshotSummary, StorageError> {
        let generation = self.contents.read();
        if *generation != self.generation {
            return Err(StorageError::Compacted);
        }
        let mut out = FrameWriter::new(w)?;
        self.each_meta_record(&mut |k, v| out.frame(FRAME_META, k, v))?;
        let end = Revision::new(self.revision + 1, 0).to_key();
        self.engine.scan(Keyspace::Kv, &[], Some(&end), &mut |k, v| {
            unseal(k, v)?;
            out.frame(FRAME_KV, k, v)?;
            Ok(Scan::Continue)
        })?;
        out.finish()
    }
}

/// Checks a snapshot stream completely (format, every record's checksum and
/// decoding, key order, the meta records a restore would load, the trailer's
/// count and CRC) without installing anything. `Ok` means
/// [`Store::restore`](crate::Store::restore) of the same bytes can only fail
/// on an engine error.
pub fn verify_snapshot(r: &mut dyn Read) -> Result<SnapshotSummary, StorageError> {
    let staged = read_snapshot(r, &mut |_, _| Ok(()))?;
    check_snapshot_meta(&staged.meta, staged.max_kv_main)?;
    Ok(staged.summary)
}

fn write_err(e: io::Error) -> StorageError {
    StorageError::Engine(format!("writing snapshot: {e}"))
}

fn read_err(e: io::Error) -> StorageError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => StorageError::Corruption("snapshot stream is truncated".into()),
        io::ErrorKind::InvalidData => StorageError::Corruption(format!("snapshot stream is invalid: {e}")),
        _ => StorageError::Engine(format!("reading snapshot: {e}")),
    }
}

fn corrupt(msg: impl fmt::Display) -> StorageError {
    StorageError::Corruption(format!("snapshot stream: {msg}"))
}

struct FrameWriter<'a> {
    out: BufWriter<&'a mut dyn Write>,
    crc: crc32fast::Hasher,
    bytes: u64,
    records: u64,
}

impl<'a> FrameWriter<'a> {
    fn new(w: &'a mut dyn Write) -> Result<Self, StorageError> {
        let out = BufWriter::with_capacity(IO_BUFFER, w);
        let mut fw = Self { out, crc: crc32fast::Hasher::new(), bytes: 0, records: 0 };
        fw.put(MAGIC)?;
        fw.put(&FORMAT_VERSION.to_be_bytes())?;
        Ok(fw)
    }

    fn put(&mut self, b: &[u8]) -> Result<(), StorageError> {
        self.crc.update(b);
        self.bytes += b.len() as u64;
        self.out.write_all(b).map_err(write_err)
    }

    fn frame(&mut self, ks: u8, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let len = |n: usize| {
            u32::try_from(n).map_err(|_| StorageError::Internal(format!("snapshot field of {n} bytes exceeds u32")))
        };
        let (klen, vlen) = (len(key.len())?, len(value.len())?);
        self.put(&[ks])?;
        self.put(&klen.to_be_bytes())?;
        self.put(key)?;
        self.put(&vlen.to_be_bytes())?;
        self.put(value)?;
        self.records += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<SnapshotSummary, StorageError> {
        self.put(&[FRAME_END])?;
        self.put(&self.records.to_be_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_be_bytes()).map_err(write_err)?;
        self.out.flush().map_err(write_err)?;
        Ok(SnapshotSummary { bytes: self.bytes + 4, records: self.records })
    }
}

/// Reads through a buffer, hashing and counting every byte consumed.
struct HashingReader<'a> {
    inner: BufReader<&'a mut dyn Read>,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl HashingReader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StorageError> {
        let mut b = [0u8; N];
        self.read_exact(&mut b).map_err(read_err)?;
        Ok(b)
    }

    /// A length-prefixed field. Reads incrementally, so a garbage length in a
    /// short stream fails as truncated instead of allocating gigabytes.
    fn field(&mut self) -> Result<Vec<u8>, StorageError> {
        let len = u64::from(u32::from_be_bytes(self.array()?));
        let mut v = Vec::new();
        self.by_ref().take(len).read_to_end(&mut v).map_err(read_err)?;
        if v.len() as u64 != len {
            return Err(read_err(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(v)
    }
}

/// A checked snapshot stream, minus the `Kv` records handed out while reading.
pub(crate) struct Staged {
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// Highest `main` among the `Kv` records (0 if none).
    pub max_kv_main: i64,
    pub summary: SnapshotSummary,
}

/// Reads and checks a whole stream: every frame and record, key order, and at
/// the end the trailer. Each `Kv` record goes to `kv` as soon as it is
/// checked; `Meta` records are kept and returned.
pub(crate) fn read_snapshot(
    r: &mut dyn Read,
    kv: &mut dyn FnMut(Vec<u8>, Vec<u8>) -> Result<(), StorageError>,
) -> Result<Staged, StorageError> {
    let mut rd = HashingReader { inner: BufReader::with_capacity(IO_BUFFER, r), crc: crc32fast::Hasher::new(), bytes: 0 };
    if &rd.array::<8>()? != MAGIC {
        return Err(corrupt("not a Cairn snapshot (bad magic)"));
    }
    let version = u32::from_be_bytes(rd.array()?);
    if version != FORMAT_VERSION {
        return Err(corrupt(format_args!("unsupported format version {version}")));
    }
    let mut meta: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut meta_bytes = 0u64;
    let mut last_kv: Option<Vec<u8>> = None;
    let mut max_kv_main = 0i64;
    let mut records = 0u64;
    loop {
        let [ks] = rd.array::<1>()?;
        if ks == FRAME_END {
            break;
        }
        let key = rd.field()?;
        let value = rd.field()?;
        records += 1;
        match ks {
            FRAME_KV => {
                let rev = Revision::from_key(&key)
                    .ok_or_else(|| corrupt(format_args!("malformed revision key {key:02x?}")))?;
                KvRecord::decode(&key, &value)?;
                if last_kv.as_ref().is_some_and(|last| *last >= key) {
                    return Err(corrupt(format_args!("kv key {key:02x?} out of order")));
                }
                max_kv_main = max_kv_main.max(rev.main);
                last_kv = Some(key.clone());
                kv(key, value)?;
            }
            FRAME_META => {
                unseal(&key, &value)?;
                if key == META_RESTORING {
                    return Err(corrupt("snapshot of a store with an unfinished restore"));
                }
                if meta.last().is_some_and(|(last, _)| *last >= key) {
                    return Err(corrupt(format_args!("meta key {key:02x?} out of order")));
                }
                meta_bytes += (key.len() + value.len()) as u64;
                if meta_bytes > MAX_META_BYTES {
                    return Err(corrupt(format_args!("meta records exceed {MAX_META_BYTES} bytes")));
                }
                meta.push((key, value));
            }
            other => return Err(corrupt(format_args!("unknown frame kind {other}"))),
        }
    }
    let count = u64::from_be_bytes(rd.array()?);
    let computed = rd.crc.clone().finalize();
    let mut stored = [0u8; 4];
    rd.inner.read_exact(&mut stored).map_err(read_err)?;
    let stored = u32::from_be_bytes(stored);
    if count != records {
        return Err(corrupt(format_args!("trailer counts {count} records, stream has {records}")));
    }
    if stored != computed {
        return Err(corrupt(format_args!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")));
    }
    let bytes = rd.bytes + 4;
    let mut extra = [0u8; 1];
    loop {
        match rd.inner.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => return Err(corrupt("bytes after the trailer")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        }
    }
    Ok(Staged { meta, max_kv_main, summary: SnapshotSummary { bytes, records } })
}
