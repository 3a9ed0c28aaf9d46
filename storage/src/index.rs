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

impl Generation {
    /// The revision holding the value as of `at`, for the generation that
    /// was the key's latest then (created at or before `at`).
    fn get(&self, at: i64) -> Option<Revision> {
        if matches!(self.tombstone, Some(t) if t.main <= at) {
            return None;
        }
        let n = self.revs.partition_point(|r| r.main <= at);
        n.checked_sub(1).map(|i| self.revs[i])
    }
}

/// A live generation holding exactly one readable revision: a key written
/// once, or one whose older revisions compaction has dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Single {
    created: i64,
    version: i64,
    rev: Revision,
}

impl From<Single> for Generation {
    fn from(s: Single) -> Self {
        Generation { created: s.created, version: s.version, revs: vec![s.rev], tombstone: None }
    }
}

/// One key's history. After a bulk load, and after every compaction, nearly
/// every key is a [`Single`], so that case lives inline in the map's node
/// (40 bytes, no allocation of its own); any other history (several
/// revisions, a delete) moves to a vector of generations. This keeps the
/// index at about a third of the memory per key that a vector of
/// generations for every key costs (see `tests::memory_layout`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyIndex {
    Single(Single),
    /// Never empty; may hold one generation (e.g. a deleted key).
    Many(Vec<Generation>),
}

impl KeyIndex {
    /// The revision holding the key's value as of store revision `at`, or
    /// `None` if the key did not exist then.
    fn get(&self, at: i64) -> Option<Revision> {
        match self {
            KeyIndex::Single(s) => (s.created <= at && s.rev.main <= at).then_some(s.rev),
            KeyIndex::Many(gens) => gens
                .iter()
                .rev()
                .find(|g| g.created <= at)
                .and_then(|g| g.get(at)),
        }
    }

    fn is_live(&self) -> bool {
        match self {
            KeyIndex::Single(_) => true,
            KeyIndex::Many(gens) => matches!(gens.last(), Some(g) if g.tombstone.is_none()),
        }
    }

    /// The generations as a vector, converting an inline [`Single`] first:
    /// every change other than creating a key or compacting goes through
    /// here, so there is one implementation of each rule.
    fn generations_mut(&mut self) -> &mut Vec<Generation> {
        if let KeyIndex::Single(s) = *self {
            *self = KeyIndex::Many(vec![s.into()]);
        }
        match self {
            KeyIndex::Many(gens) => gens,
            KeyIndex::Single(_) => unreachable!("converted above"),
        }
    }

    /// Compacts at `at` (see [`TreeIndex::compact`] for the rules), adding
    /// the revisions `<= at` still needed to `keep`. Returns false if nothing
    /// is left. A history left with one live generation of one revision
    /// goes back inline.
    fn compact(&mut self, at: i64, keep: &mut HashSet<Revision>) -> bool {
        let gens = match self {
            KeyIndex::Single(s) => {
                if s.rev.main <= at {
                    keep.insert(s.rev);
                }
                return true;
            }
            KeyIndex::Many(gens) => gens,
        };
        gens.retain_mut(|g| {
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
        if let [Generation { created, version, revs, tombstone: None }] = gens.as_slice() {
            if let [rev] = revs.as_slice() {
                *self = KeyIndex::Single(Single { created: *created, version: *version, rev: *rev });
                return true;
            }
        }
        !gens.is_empty()
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
    /// Boxed slices, not vectors: no capacity word in every map entry.
    keys: BTreeMap<Box<[u8]>, KeyIndex>,
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
        let iter: Box<dyn Iterator<Item = (&Box<[u8]>, &KeyIndex)>> = match range {
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
        let Some(ki) = self.keys.get_mut(key) else {
            self.keys.insert(key.into(), KeyIndex::Single(Single { created: rev.main, version: 1, rev }));
            return PutMeta { create_revision: rev.main, version: 1 };
        };
        let gens = ki.generations_mut();
        match gens.last_mut() {
            Some(g) if g.tombstone.is_none() => {
                g.version += 1;
                g.revs.push(rev);
                PutMeta { create_revision: g.created, version: g.version }
            }
            _ => {
                gens.push(Generation { created: rev.main, version: 1, revs: vec![rev], tombstone: None });
                PutMeta { create_revision: rev.main, version: 1 }
            }
        }
    }

    /// Ends the key's current generation at `rev`. Returns false (and changes
    /// nothing) if the key is not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        match self.keys.get_mut(key) {
            Some(ki) if ki.is_live() => {
                let g = ki.generations_mut().last_mut().expect("a live key has a generation");
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
        let Some(ki) = self.keys.get_mut(key) else {
            let single = Single { created: create_revision, version, rev };
            self.keys.insert(key.into(), KeyIndex::Single(single));
            return;
        };
        let gens = ki.generations_mut();
        match gens.last_mut() {
            Some(g) if g.tombstone.is_none() && g.created == create_revision => {
                g.version = version;
                g.revs.push(rev);
            }
            _ => gens.push(Generation { created: create_revision, version, revs: vec![rev], tombstone: None }),
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
        self.keys.retain(|_, ki| ki.compact(at, &mut keep));
        keep
    }

    /// Whether `key` currently exists (its latest generation is open).
    pub fn is_live(&self, key: &[u8]) -> bool {
        self.keys.get(key).is_some_and(KeyIndex::is_live)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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

    fn is_inline(ix: &TreeIndex, key: &[u8]) -> bool {
        matches!(ix.keys.get(key), Some(KeyIndex::Single(_)))
    }

    /// Every key pays for its map entry, so its size is pinned: a boxed key
    /// and an inline history of at most 40 bytes.
    #[test]
    fn memory_layout() {
        assert_eq!(std::mem::size_of::<Box<[u8]>>(), 16);
        assert!(std::mem::size_of::<KeyIndex>() <= 40, "KeyIndex is {} bytes", std::mem::size_of::<KeyIndex>());
    }

    #[test]
    fn single_revision_keys_stay_inline() {
        let mut ix = TreeIndex::new();
        ix.put(b"a", r(2));
        ix.put(b"b", r(3));
        assert!(is_inline(&ix, b"a") && is_inline(&ix, b"b"));
        ix.put(b"a", r(4));
        assert!(ix.tombstone(b"b", r(5)));
        assert!(!is_inline(&ix, b"a") && !is_inline(&ix, b"b"));

        ix.put(b"c", r(6));

        // Compaction leaves "a" one revision (inline again, its version
        // kept) and forgets "b", whose generation ended before it.
        assert_eq!(ix.compact(6), HashSet::from([r(4), r(6)]));
        assert!(is_inline(&ix, b"a") && is_inline(&ix, b"c"));
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.get(b"a", 6), Some(r(4)));
        assert_eq!(ix.put(b"a", r(7)), PutMeta { create_revision: 2, version: 3 });

        // A rebuilt index takes the same shape from the stored records.
        let mut rebuilt = TreeIndex::new();
        rebuilt.restore_put(b"a", r(4), 2, 2);
        assert!(is_inline(&rebuilt, b"a"));
        rebuilt.restore_put(b"a", r(7), 2, 3);
        assert_eq!(rebuilt.keys.get(&b"a"[..]), ix.keys.get(&b"a"[..]));
    }

    /// A step of [`index_matches_a_replayed_history`]: a put or delete of
    /// key `k`, or a compaction at `back` revisions below the current one.
    #[derive(Clone, Debug)]
    enum Step {
        Put(u8),
        Delete(u8),
        Compact(i64),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let step = prop_oneof![
            4 => (0u8..3).prop_map(Step::Put),
            2 => (0u8..3).prop_map(Step::Delete),
            1 => (0i64..4).prop_map(Step::Compact),
        ];
        proptest::collection::vec(step, 1..40)
    }

    /// The naive reference: every write ever made, in revision order.
    #[derive(Default)]
    struct History {
        /// (key, revision, true for a put).
        writes: Vec<(u8, i64, bool)>,
    }

    impl History {
        fn get(&self, k: u8, at: i64) -> Option<Revision> {
            let last = self.writes.iter().rev().find(|(key, main, _)| *key == k && *main <= at);
            last.and_then(|&(_, main, put)| put.then(|| r(main)))
        }

        /// `create_revision` and `version` of the key's latest put.
        fn meta(&self, k: u8) -> PutMeta {
            let mut meta = PutMeta { create_revision: 0, version: 0 };
            for &(_, main, put) in self.writes.iter().filter(|w| w.0 == k) {
                meta = match (put, meta.version) {
                    (false, _) => PutMeta { create_revision: 0, version: 0 },
                    (true, 0) => PutMeta { create_revision: main, version: 1 },
                    (true, v) => PutMeta { create_revision: meta.create_revision, version: v + 1 },
                };
            }
            meta
        }
    }

    /// Every read at or after the compaction revision agrees with `h`.
    fn check_reads(ix: &TreeIndex, h: &History, compacted: i64, rev: i64) -> Result<(), TestCaseError> {
        for k in 0..3u8 {
            for at in compacted.max(1)..=rev + 1 {
                prop_assert_eq!(ix.get(&[k], at), h.get(k, at), "key {} at {}", k, at);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Puts, deletes and compactions agree with a replayed history, and
        /// an index rebuilt from the records (as a store's open does: every
        /// record, then the compaction) answers the same.
        #[test]
        fn index_matches_a_replayed_history(steps in steps()) {
            let mut ix = TreeIndex::new();
            let mut h = History::default();
            let (mut rev, mut compacted) = (1, 0);
            for step in steps {
                match step {
                    Step::Put(k) => {
                        rev += 1;
                        h.writes.push((k, rev, true));
                        prop_assert_eq!(ix.put(&[k], r(rev)), h.meta(k));
                    }
                    Step::Delete(k) => {
                        let live = h.get(k, rev).is_some();
                        if live {
                            rev += 1;
                            h.writes.push((k, rev, false));
                        }
                        prop_assert_eq!(ix.tombstone(&[k], r(rev)), live);
                    }
                    Step::Compact(back) => {
                        compacted = compacted.max(rev - back);
                        ix.compact(compacted);
                    }
                }
                check_reads(&ix, &h, compacted, rev)?;
            }

            let mut rebuilt = TreeIndex::new();
            let mut replayed = History::default();
            for &(k, main, put) in &h.writes {
                replayed.writes.push((k, main, put));
                if put {
                    let m = replayed.meta(k);
                    rebuilt.restore_put(&[k], r(main), m.create_revision, m.version);
                } else {
                    rebuilt.tombstone(&[k], r(main));
                }
            }
            rebuilt.compact(compacted);
            check_reads(&rebuilt, &h, compacted, rev)?;
            prop_assert_eq!(rebuilt.keys, ix.keys);
        }
    }
}
