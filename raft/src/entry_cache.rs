//! [`EntryCache`]: the tail of the Raft log, kept in memory by the log store.
//!
//! Every entry is read back moments after it is appended: on the leader by
//! the replication task of each follower and by the state machine, on a
//! follower by its state machine. Read from RocksDB, each of those reads
//! opens an iterator, seeks the memtable and every table file, copies,
//! checks the CRC and decodes. Served from here it is a clone.
//!
//! The cache only ever holds entries exactly as the log store last wrote
//! them at their index (see [`EntryCache`]'s invariant), so a read it
//! answers is the read RocksDB would have answered.

use std::collections::VecDeque;
use std::mem;

use openraft::entry::RaftEntry;

use crate::types::Entry;

/// Bounds of the cache. Past either, the oldest entries leave it; reads of
/// them (a follower far behind, a restart) go to RocksDB.
#[derive(Clone, Copy, Debug)]
pub struct CacheLimits {
    pub max_entries: usize,
    /// Bound on the sum of [`EntryCache::push`]'s `stored_bytes` plus the
    /// in-memory size of each entry's struct.
    pub max_bytes: usize,
}

/// The log store's default: 1.5 s of entries at 10,000 puts/s of 256-byte
/// values, far more than a healthy follower or the state machine lags, so
/// their reads do not reach RocksDB.
pub const DEFAULT_LIMITS: CacheLimits = CacheLimits {
    max_entries: 16_384,
    max_bytes: 8 << 20,
};

/// A run of consecutive log entries, the newest the store has appended.
///
/// Invariant: the entries are consecutive by index, and each is the entry
/// the log store holds at that index. The store keeps it so by taking
/// entries out of the cache *before* it truncates or purges them in RocksDB
/// and putting them in only *after* RocksDB has them.
#[derive(Debug)]
pub struct EntryCache {
    limits: CacheLimits,
    /// Each entry with the bytes its stored record takes, which is what a
    /// byte-budgeted read counts.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl EntryCache {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.index())
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.index())
    }

    fn cost(stored_bytes: usize) -> usize {
        stored_bytes + mem::size_of::<Entry>()
    }

    /// Adds an entry the store has just written. An entry that does not
    /// follow the cached run starts a new run (the store overwrote or
    /// skipped past the cached tail). The oldest entries leave once the
    /// limits are exceeded.
    pub fn push(&mut self, entry: Entry, stored_bytes: usize) {
        if self
            .last_index()
            .is_some_and(|last| last.checked_add(1) != Some(entry.index()))
        {
            self.clear();
        }
        self.bytes += Self::cost(stored_bytes);
        self.entries.push_back((entry, stored_bytes));
        while self.entries.len() > self.limits.max_entries || self.bytes > self.limits.max_bytes {
            match self.entries.pop_front() {
                Some((_, b)) => self.bytes -= Self::cost(b),
                None => break,
            }
        }
    }

    /// Drops every entry with index `>= from`.
    pub fn remove_from(&mut self, from: u64) {
        while self.last_index().is_some_and(|last| last >= from) {
            if let Some((_, b)) = self.entries.pop_back() {
                self.bytes -= Self::cost(b);
            }
        }
    }

    /// Drops every entry with index `<= upto`.
    pub fn remove_upto(&mut self, upto: u64) {
        while self.first_index().is_some_and(|first| first <= upto) {
            if let Some((_, b)) = self.entries.pop_front() {
                self.bytes -= Self::cost(b);
            }
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries in `[start, end)` if the cache holds all of them, else
    /// `None` (the caller reads RocksDB). With a `budget`, stops after the
    /// entry that brings the stored bytes read to it, as a RocksDB read does.
    pub fn read(&self, start: u64, end: u64, budget: Option<usize>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = self.last_index()?;
        if start >= end || start < first || end - 1 > last {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let want = usize::try_from(end - start).ok()?;
        let mut out = Vec::with_capacity(want.min(1024));
        let mut bytes = 0usize;
        for (entry, stored) in self.entries.iter().skip(skip).take(want) {
            out.push(entry.clone());
            bytes += stored;
            if budget.is_some_and(|b| bytes >= b) {
                break;
            }
        }
        Some(out)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryPayload, TypeConfig};
    use crate::RaftRequest;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: openraft::testing::log_id::<TypeConfig>(term, 1, index),
            payload: EntryPayload::Normal(RaftRequest {
                id: index,
                payload: vec![term as u8; 10],
            }),
        }
    }

    /// The term [`entry`] wrote into the payload.
    fn term_of(e: &Entry) -> u8 {
        match &e.payload {
            EntryPayload::Normal(r) => r.payload[0],
            other => panic!("unexpected payload {other:?}"),
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.index()).collect()
    }

    fn cache_of(limits: CacheLimits, range: std::ops::RangeInclusive<u64>) -> EntryCache {
        let mut c = EntryCache::new(limits);
        for i in range {
            c.push(entry(1, i), 100);
        }
        c
    }

    const ROOMY: CacheLimits = CacheLimits {
        max_entries: 1000,
        max_bytes: 1 << 20,
    };

    #[test]
    fn reads_only_ranges_it_holds_whole() {
        let c = cache_of(ROOMY, 5..=9);
        assert_eq!(indexes(&c.read(5, 10, None).unwrap()), vec![5, 6, 7, 8, 9]);
        assert_eq!(indexes(&c.read(7, 8, None).unwrap()), vec![7]);
        assert!(c.read(4, 6, None).is_none(), "starts before the cache");
        assert!(c.read(8, 11, None).is_none(), "ends after the cache");
        assert!(c.read(7, 7, None).is_none(), "empty range");
        assert!(EntryCache::new(ROOMY).read(0, 1, None).is_none());
    }

    #[test]
    fn a_budgeted_read_stops_after_the_entry_that_reaches_the_budget() {
        let c = cache_of(ROOMY, 1..=10);
        assert_eq!(indexes(&c.read(1, 11, Some(250)).unwrap()), vec![1, 2, 3]);
        assert_eq!(indexes(&c.read(1, 11, Some(300)).unwrap()), vec![1, 2, 3]);
        assert_eq!(indexes(&c.read(4, 11, Some(1)).unwrap()), vec![4]);
    }

    #[test]
    fn the_oldest_entries_leave_past_either_limit() {
        let by_count = cache_of(
            CacheLimits {
                max_entries: 3,
                max_bytes: 1 << 20,
            },
            1..=10,
        );
        assert_eq!(indexes(&by_count.read(8, 11, None).unwrap()), vec![8, 9, 10]);
        assert!(by_count.read(7, 9, None).is_none());

        let per_entry = 100 + mem::size_of::<Entry>();
        let by_bytes = cache_of(
            CacheLimits {
                max_entries: 1000,
                max_bytes: 4 * per_entry,
            },
            1..=10,
        );
        assert_eq!(by_bytes.len(), 4);
        assert_eq!(indexes(&by_bytes.read(7, 11, None).unwrap()), vec![7, 8, 9, 10]);
    }

    #[test]
    fn truncation_purge_and_a_break_in_the_run_keep_it_consecutive() {
        let mut c = cache_of(ROOMY, 1..=10);
        c.remove_from(8);
        assert_eq!(indexes(&c.read(1, 8, None).unwrap()), (1..=7).collect::<Vec<_>>());
        assert!(c.read(7, 9, None).is_none());

        c.push(entry(2, 8), 100);
        let read = c.read(7, 9, None).unwrap();
        assert_eq!(indexes(&read), vec![7, 8]);
        assert_eq!(term_of(&read[1]), 2, "the new entry at 8, not the old");

        c.remove_upto(3);
        assert!(c.read(3, 5, None).is_none());
        assert_eq!(indexes(&c.read(4, 9, None).unwrap()), vec![4, 5, 6, 7, 8]);

        c.push(entry(2, 20), 100);
        assert_eq!(c.len(), 1, "an entry past a gap starts a new run");
        assert!(c.read(8, 9, None).is_none());
        assert_eq!(indexes(&c.read(20, 21, None).unwrap()), vec![20]);

        c.push(entry(3, 20), 100);
        assert_eq!(c.len(), 1, "an overwritten tail starts a new run");
        assert_eq!(term_of(&c.read(20, 21, None).unwrap()[0]), 3);

        c.remove_upto(u64::MAX);
        assert!(c.is_empty());
        c.push(entry(1, 5), 100);
        c.remove_from(0);
        assert!(c.is_empty());
        assert_eq!(c.bytes, 0);
    }
}
