//! Request deduplication for replicated log entries.
//!
//! A client (or a member forwarding for one) may propose the same request
//! twice, e.g. when it retries after a leader change without knowing whether
//! the first proposal was committed. Each entry carries a request id; an id
//! seen within the last [`DEDUP_WINDOW`] log indexes is not applied again.
//! The decision depends only on replicated data (entry indexes and ids), and
//! the recorded ids are stored with the applied index and travel in
//! snapshots, so every member decides the same, also after a restart or a
//! snapshot install.
//!
//! On disk: `Meta` key `dedup/<log index, u64 big-endian>` → sealed id (u64
//! big-endian). The key order is index order, so loading rebuilds the maps in
//! eviction order.

use std::collections::{BTreeMap, HashMap};

use crate::engine::{Engine, Keyspace, Scan, WriteBatch};
use crate::error::StorageError;
use crate::record::{seal, unseal};

/// How many log indexes back a request id is remembered. A retry is
/// recognised if it is committed fewer than this many entries after the
/// original; 100 000 entries is far longer than any client retries, and
/// costs a few MiB of memory.
pub const DEDUP_WINDOW: u64 = 100_000;

pub(crate) const PREFIX: &[u8] = b"dedup/";
/// The first key after every `dedup/` key (`'/' + 1`).
pub(crate) const PREFIX_END: &[u8] = b"dedup0";

pub(crate) fn key(index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + 8);
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The request ids applied within the window, by id and by log index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dedup {
    by_id: HashMap<u64, u64>,
    by_index: BTreeMap<u64, u64>,
}

/// What applying the entry at `index` does to the window: the ids it forgets
/// and, if the entry's request is a repeat, where it was first applied.
pub(crate) struct Decision {
    pub evict: Vec<u64>,
    pub duplicate_of: Option<u64>,
}

impl Dedup {
    /// Reads every recorded id. Ids recorded above `applied_index` cannot
    /// exist (they are written with the applied index), so one is corruption.
    pub fn load(engine: &dyn Engine, applied_index: u64) -> Result<Self, StorageError> {
        let mut d = Dedup::default();
        engine.scan(Keyspace::Meta, PREFIX, Some(PREFIX_END), &mut |k, v| {
            let index = k[PREFIX.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corruption(format!("malformed dedup key {k:02x?}")))?;
            let payload = unseal(k, v)?;
            let id = payload
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corruption(format!("dedup record {k:02x?} is {} bytes", payload.len())))?;
            if id == 0 || index == 0 || index > applied_index {
                return Err(StorageError::Corruption(format!(
                    "dedup record for id {id} at index {index}, applied index {applied_index}"
                )));
            }
            d.record(index, id);
            Ok(Scan::Continue)
        })?;
        Ok(d)
    }

    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    /// Every recorded `(index, id)`, in index order, which is key order.
    pub fn records(&self) -> Vec<(u64, u64)> {
        self.by_index.iter().map(|(i, id)| (*i, *id)).collect()
    }

    /// The record [`Dedup::write`] stores for `id` at `index`: key and
    /// sealed value.
    pub fn record_bytes(index: u64, id: u64) -> (Vec<u8>, Vec<u8>) {
        let k = key(index);
        let v = seal(&k, &id.to_be_bytes());
        (k, v)
    }

    /// Decides about the entry at `index` carrying `request_id` (0 = none)
    /// without changing anything, so nothing changes if its batch fails.
    /// Ids recorded at or below `index - DEDUP_WINDOW` have left the window.
    pub fn decide(&self, index: u64, request_id: u64) -> Decision {
        let floor = index.saturating_sub(DEDUP_WINDOW);
        let evict = self.by_index.range(..=floor).map(|(i, _)| *i).collect();
        let duplicate_of = match request_id {
            0 => None,
            id => self.by_id.get(&id).copied().filter(|first| *first > floor),
        };
        Decision { evict, duplicate_of }
    }

    /// Adds the batch ops that persist `decision` and, if `record` names an
    /// id, records it at `index`.
    pub fn write(batch: &mut WriteBatch, decision: &Decision, index: u64, record: Option<u64>) {
        for i in &decision.evict {
            batch.delete(Keyspace::Meta, key(*i));
        }
        if let Some(id) = record {
            let (k, v) = Self::record_bytes(index, id);
            batch.put(Keyspace::Meta, k, v);
        }
    }

    /// Applies to memory what [`Dedup::write`] persisted.
    pub fn commit(&mut self, decision: &Decision, index: u64, record: Option<u64>) {
        for i in &decision.evict {
            if let Some(id) = self.by_index.remove(i) {
                if self.by_id.get(&id) == Some(i) {
                    self.by_id.remove(&id);
                }
            }
        }
        if let Some(id) = record {
            self.record(index, id);
        }
    }

    fn record(&mut self, index: u64, id: u64) {
        self.by_index.insert(index, id);
        self.by_id.insert(id, index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemEngine;

    #[test]
    fn window_and_persistence() {
        let engine = MemEngine::new();
        let mut d = Dedup::default();
        let step = |d: &mut Dedup, index: u64, id: u64| -> Option<u64> {
            let decision = d.decide(index, id);
            let record = (id != 0 && decision.duplicate_of.is_none()).then_some(id);
            let mut b = WriteBatch::default();
            Dedup::write(&mut b, &decision, index, record);
            engine.write(b, false).unwrap();
            d.commit(&decision, index, record);
            decision.duplicate_of
        };
        assert_eq!(step(&mut d, 1, 7), None);
        assert_eq!(step(&mut d, 2, 0), None);
        assert_eq!(step(&mut d, 3, 7), Some(1));
        assert_eq!(step(&mut d, DEDUP_WINDOW, 7), Some(1));
        assert_eq!(step(&mut d, DEDUP_WINDOW + 1, 8), None, "index 1 leaves the window here");
        assert_eq!(Dedup::load(&engine, DEDUP_WINDOW + 1).unwrap(), d);
        assert_eq!(step(&mut d, DEDUP_WINDOW + 2, 7), None);
        assert_eq!(step(&mut d, DEDUP_WINDOW + 3, 8), Some(DEDUP_WINDOW + 1));
        assert_eq!(d.len(), 2);
        assert_eq!(Dedup::load(&engine, DEDUP_WINDOW + 3).unwrap(), d);
        assert!(matches!(Dedup::load(&engine, DEDUP_WINDOW), Err(StorageError::Corruption(_))));
    }
}
