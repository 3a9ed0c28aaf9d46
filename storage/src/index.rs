//! The in-memory key index: for every key, the revisions at which it was
//! written, grouped into generations (a generation runs from a key's creation
//! to its deletion). Modelled on etcd's `treeIndex`/`keyIndex`. It is rebuilt
//! from the `Kv` keyspace at open, so it is never persisted itself.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use crate::revision::Revision;

/// Which keys a request addresses, decoded from etcd's `key`/`range_end` pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// `range_end` empty: exactly `key`.
    Single(&'a [u8]),
    /// `[start, end)`.
    Range(&'a [u8], &'a [u8]),
    /// `range_end == "\0"`: every key `>= start`.
    From(&'a [u8]),
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Range(key, end),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => k == key,
            KeyRange::Range(start, end) => start <= k && k < end,
            KeyRange::From(start) => start <= k,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Generation {
    /// `main` of the revision that created the key in this generation.
    created: i64,
    /// Number of puts in this generation so far (the key's `version`); kept
    /// even when compaction drops old revisions.
    version: i64,
    /// Put revisions still readable, ascending. Never empty.
    revs: Vec<Revision>,
    /// Set when the generation ended with a delete.
    tombstone: Option<Revision>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct KeyIndex {
    generations: Vec<Generation>,
}

impl KeyIndex {
    /// The revision holding the key's value as of store revision `at`, or
    /// `None` if the key did not exist then.
    fn get(&self, at: i64) -> Option<Revision> {
        for g in self.generations.iter().rev() {
            if g.created > at {
                continue;
            }
            if matches!(g.tombstone, Some(t) if t.main <= at) {
                return None;
            }
            let n = g.revs.partition_point(|r| r.main <= at);
            return if n == 0 { None } else { Some(g.revs[n - 1]) };
        }
        None
    }

    fn is_live(&self) -> bool {
        matches!(self.generations.last(), Some(g) if g.tombstone.is_none())
    }
}

/// Result of recording a put: the fields the new `KeyValue` must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutMeta {
    pub create_revision: i64,
    pub version: i64,
}

#[derive(Clone, Debug, Default)]
pub struct TreeIndex {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

impl TreeIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys with any history (live or not yet compacted).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<Revision> {
        self.keys.get(key).and_then(|ki| ki.get(at))
    }

    /// Visits, in key order, every key in `range` that exists at `at`, with the
    /// revision holding its value. Stops when `f` returns false.
    pub fn visit(&self, range: KeyRange<'_>, at: i64, mut f: impl FnMut(&[u8], Revision) -> bool) {
        let iter: Box<dyn Iterator<Item = (&Vec<u8>, &KeyIndex)>> = match range {
            KeyRange::Single(k) => Box::new(self.keys.get_key_value(k).into_iter()),
            KeyRange::Range(start, end) => {
                if start >= end {
                    return;
                }
                Box::new(
                    self.keys
                        .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))),
                )
            }
            KeyRange::From(start) => {
                Box::new(self.keys.range::<[u8], _>((Bound::Included(start), Bound::Unbounded)))
            }
        };
        for (k, ki) in iter {
            if let Some(rev) = ki.get(at) {
                if !f(k, rev) {
                    return;
                }
            }
        }
    }

    /// Records a put of `key` at `rev`.
    pub fn put(&mut self, key: &[u8], rev: Revision) -> PutMeta {
        let ki = self.keys.entry(key.to_vec()).or_default();
        match ki.generations.last_mut() {
            Some(g) if g.tombstone.is_none() => {
                g.version += 1;
                g.revs.push(rev);
                PutMeta { create_revision: g.created, version: g.version }
            }
            _ => {
                ki.generations.push(Generation {
                    created: rev.main,
                    version: 1,
                    revs: vec![rev],
                    tombstone: None,
                });
                PutMeta { create_revision: rev.main, version: 1 }
            }
        }
    }

    /// Ends the key's current generation at `rev`. Returns false (and changes
    /// nothing) if the key is not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        match self.keys.get_mut(key).and_then(|ki| ki.generations.last_mut()) {
            Some(g) if g.tombstone.is_none() => {
                g.tombstone = Some(rev);
                true
            }
            _ => false,
        }
    }

    /// Rebuilds the index from a stored put record, which carries the
    /// generation's creation revision and version (earlier records of the
    /// generation may have been compacted away).
    pub fn restore_put(&mut self, key: &[u8], rev: Revision, create_revision: i64, version: i64) {
        let ki = self.keys.entry(key.to_vec()).or_default();
        match ki.generations.last_mut() {
            Some(g) if g.tombstone.is_none() && g.created == create_revision => {
                g.version = version;
                g.revs.push(rev);
            }
            _ => ki.generations.push(Generation {
                created: create_revision,
                version,
                revs: vec![rev],
                tombstone: None,
            }),
        }
    }

    /// Drops history older than `at`: afterwards a read at any revision
    /// `>= at` gives the same answer as before, and a watch from `at` sees
    /// every event of revision `at`. Returns the revisions `<= at` that are
    /// still needed; every other stored record `<= at` may be deleted.
    ///
    /// A generation that ended with a delete at exactly `at` is kept (its
    /// last put and its tombstone), so that delete stays in the history a
    /// watch from the compaction revision reads; the next compaction past it
    /// forgets the key. etcd dropped that tombstone until 3.5.15 (etcd
    /// issue 18089, fixed by "keep tombstone if revision == compactAtRev").
    pub fn compact(&mut self, at: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, ki| {
            ki.generations.retain_mut(|g| {
                match g.tombstone {
                    Some(t) if t.main < at => return false,
                    Some(t) if t.main == at => {
                        keep.insert(t);
                    }
                    _ => {}
                }
                let n = g.revs.partition_point(|r| r.main <= at);
                if n > 1 {
                    g.revs.drain(..n - 1);
                }
                if n >= 1 {
                    keep.insert(g.revs[0]);
                }
                true
            });
            !ki.generations.is_empty()
        });
        keep
    }

    /// Whether `key` currently exists (its latest generation is open).
    pub fn is_live(&self, key: &[u8]) -> bool {
        self.keys.get(key).is_some_and(KeyIndex::is_live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    #[test]
    fn generations_and_lookups() {
        let mut ix = TreeIndex::new();
        assert_eq!(ix.put(b"a", r(2)), PutMeta { create_revision: 2, version: 1 });
        assert_eq!(ix.put(b"a", r(3)), PutMeta { create_revision: 2, version: 2 });
        assert!(ix.tombstone(b"a", r(4)));
        assert!(!ix.tombstone(b"a", r(5)));
        assert_eq!(ix.put(b"a", r(6)), PutMeta { create_revision: 6, version: 1 });

        assert_eq!(ix.get(b"a", 1), None);
        assert_eq!(ix.get(b"a", 2), Some(r(2)));
        assert_eq!(ix.get(b"a", 3), Some(r(3)));
        assert_eq!(ix.get(b"a", 4), None);
        assert_eq!(ix.get(b"a", 5), None);
        assert_eq!(ix.get(b"a", 6), Some(r(6)));
        assert_eq!(ix.get(b"a", 100), Some(r(6)));
    }

    #[test]
    fn compaction_keeps_reads_at_and_after_the_compact_revision() {
        let mut ix = TreeIndex::new();
        ix.put(b"a", r(2));
        ix.put(b"a", r(3));
        ix.put(b"b", r(4));
        ix.tombstone(b"b", r(5));
        ix.put(b"a", r(6));
        ix.put(b"c", r(7));
        let before: Vec<_> = (5..=8).map(|at| (ix.get(b"a", at), ix.get(b"b", at), ix.get(b"c", at))).collect();

        let keep = ix.compact(5);
        // "b" was deleted at the compaction revision itself: its tombstone
        // (and last put) stay, so a watch from revision 5 sees the delete.
        assert_eq!(keep, HashSet::from([r(3), r(4), r(5)]));
        let after: Vec<_> = (5..=8).map(|at| (ix.get(b"a", at), ix.get(b"b", at), ix.get(b"c", at))).collect();
        assert_eq!(before, after);
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.put(b"a", r(9)).version, 4, "version survives compaction");

        // Past the delete, "b" is forgotten entirely.
        let keep = ix.compact(6);
        assert_eq!(keep, HashSet::from([r(6)]));
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.get(b"b", 6), None);
    }

    #[test]
    fn visit_respects_ranges() {
        let mut ix = TreeIndex::new();
        for (i, k) in [&b"a"[..], b"ab", b"b", b"c"].iter().enumerate() {
            ix.put(k, r(i as i64 + 2));
        }
        let collect = |range| {
            let mut out = vec![];
            ix.visit(range, 10, |k, _| {
                out.push(k.to_vec());
                true
            });
            out
        };
        assert_eq!(collect(KeyRange::Single(b"ab")), vec![b"ab".to_vec()]);
        assert_eq!(collect(KeyRange::Range(b"a", b"b")), vec![b"a".to_vec(), b"ab".to_vec()]);
        assert_eq!(collect(KeyRange::From(b"b")), vec![b"b".to_vec(), b"c".to_vec()]);
        assert!(collect(KeyRange::Range(b"c", b"a")).is_empty());
        assert_eq!(KeyRange::new(b"\0", b"\0"), KeyRange::From(b"\0"));
    }
}
