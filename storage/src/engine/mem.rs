use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use super::{BatchOp, Engine, Keyspace, Scan, WriteBatch};
use crate::error::StorageError;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory engine with the same atomicity as RocksDB, for tests and
/// simulation. Cloning the `Arc` that holds it and reopening a store on it
/// models a process restart without losing "disk" contents.
#[derive(Default)]
pub struct MemEngine {
    spaces: RwLock<[Map; 2]>,
}

impl MemEngine {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(ks: Keyspace) -> usize {
        match ks {
            Keyspace::Kv => 0,
            Keyspace::Meta => 1,
        }
    }

    /// Overwrites a stored value in place, bypassing all checks, so tests can
    /// simulate on-disk corruption.
    pub fn corrupt(&self, ks: Keyspace, key: &[u8], value: Vec<u8>) {
        self.spaces.write()[Self::slot(ks)].insert(key.to_vec(), value);
    }
}

impl Engine for MemEngine {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.spaces.read()[Self::slot(ks)].get(key).cloned())
    }

    fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<Scan, StorageError>,
    ) -> Result<(), StorageError> {
        // Copy out in chunks so the callback never runs under our lock (it may
        // write to this engine).
        const CHUNK: usize = 256;
        let mut from: Bound<Vec<u8>> = Bound::Included(start.to_vec());
        loop {
            let chunk: Vec<(Vec<u8>, Vec<u8>)> = {
                let spaces = self.spaces.read();
                let upper = match end {
                    Some(e) => Bound::Excluded(e.to_vec()),
                    None => Bound::Unbounded,
                };
                spaces[Self::slot(ks)]
                    .range((from.clone(), upper))
                    .take(CHUNK)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let n = chunk.len();
            for (k, v) in &chunk {
                if f(k, v)? == Scan::Stop {
                    return Ok(());
                }
            }
            if n < CHUNK {
                return Ok(());
            }
            from = Bound::Excluded(chunk[n - 1].0.clone());
        }
    }

    fn last(&self, ks: Keyspace) -> Result<Option<(Vec<u8>, Vec<u8>)>, StorageError> {
        Ok(self.spaces.read()[Self::slot(ks)]
            .iter()
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn write(&self, batch: WriteBatch, _sync: bool) -> Result<(), StorageError> {
        let mut spaces = self.spaces.write();
        for op in batch.ops {
            match op {
                BatchOp::Put { ks, key, value } => {
                    spaces[Self::slot(ks)].insert(key, value);
                }
                BatchOp::Delete { ks, key } => {
                    spaces[Self::slot(ks)].remove(&key);
                }
                BatchOp::DeleteRange { ks, start, end } => {
                    if start < end {
                        let map = &mut spaces[Self::slot(ks)];
                        let mut tail = map.split_off(&start);
                        let mut rest = tail.split_off(&end);
                        map.append(&mut rest);
                    }
                }
            }
        }
        Ok(())
    }

    fn size_bytes(&self) -> u64 {
        self.live_size_bytes()
    }

    fn live_size_bytes(&self) -> u64 {
        let spaces = self.spaces.read();
        spaces
            .iter()
            .flat_map(|m| m.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn sync_wal(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Nothing to reclaim: deleted entries are gone from the maps already.
    fn compact_files(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
