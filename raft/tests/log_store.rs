//! Tests of `RocksLogStore`: openraft's own storage suite, reopen, corruption,
//! callback ordering, and kill -9 durability.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, BufRead, BufReader, Cursor};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_raft::openraft;
use cairn_raft::types::{Entry, EntryPayload, LogId, Membership, StoredMembership, Vote};
use cairn_raft::entry_cache::{CacheLimits, DEFAULT_LIMITS};
use cairn_raft::{Member, RaftRequest, RaftResponse, RocksLogStore, TypeConfig};
use futures_util::{Stream, StreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{
    EntryResponder, IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{OptionalSend, StorageError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every test runs under this bound so a hang fails instead of stalling CI.
const TEST_BOUND: Duration = Duration::from_secs(50);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .expect("test exceeded its time bound")
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

/// The payload the tests write at `index`: varied length, derived from the
/// index so a reader can check it.
fn payload_for(index: u64) -> Vec<u8> {
    index.to_le_bytes().repeat((index % 7 + 1) as usize)
}

fn normal(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(RaftRequest {
            id: index,
            payload: payload_for(index),
        }),
    }
}

fn member(id: u64) -> Member {
    Member {
        name: format!("m{id}"),
        peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + id)],
        client_urls: vec![format!("http://127.0.0.1:{}", 2379 + 10 * id)],
    }
}

fn membership(term: u64, index: u64, ids: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = ids.iter().copied().collect();
    let nodes: BTreeMap<u64, Member> = ids.iter().map(|id| (*id, member(*id))).collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes).unwrap()),
    }
}

/// Appends and waits until the store reports the entries durable.
async fn append(store: &mut RocksLogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await
        .expect("callback dropped")
        .expect("append not durable");
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index()).collect()
}

// ---------------------------------------------------------------------------
// openraft's storage suite
// ---------------------------------------------------------------------------

/// A minimal in-memory state machine, here only because openraft's storage
/// suite tests a log store and a state machine together. It is not Cairn's
/// state machine; it records the applied log id and membership, and its
/// "snapshot" is those two.
#[derive(Default)]
struct SmState {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    current: Option<(openraft::alias::SnapshotMetaOf<TypeConfig>, Vec<u8>)>,
}

#[derive(Clone, Default)]
struct TestStateMachine {
    state: Arc<Mutex<SmState>>,
}

type TestSnapshot = openraft::alias::SnapshotOf<TypeConfig, Cursor<Vec<u8>>>;

impl RaftSnapshotBuilder<TypeConfig> for TestStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<TestSnapshot, io::Error> {
        let mut st = self.state.lock().unwrap();
        let meta = openraft::alias::SnapshotMetaOf::<TypeConfig> {
            last_log_id: st.last_applied.clone(),
            last_membership: st.last_membership.clone(),
        };
        let data = format!("{:?}", meta).into_bytes();
        st.current = Some((meta.clone(), data.clone()));
        Ok(TestSnapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for TestStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.state.lock().unwrap();
        Ok((st.last_applied.clone(), st.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            {
                let mut st = self.state.lock().unwrap();
                st.last_applied = Some(entry.log_id());
                if let Some(m) = entry.get_membership() {
                    st.last_membership = StoredMembership::new(Some(entry.log_id()), m);
                }
            }
            if let Some(r) = responder {
                r.send(RaftResponse::Empty);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &openraft::alias::SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let mut st = self.state.lock().unwrap();
        st.last_applied = meta.last_log_id.clone();
        st.last_membership = meta.last_membership.clone();
        st.current = Some((meta.clone(), snapshot.into_inner()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<TestSnapshot>, io::Error> {
        let st = self.state.lock().unwrap();
        Ok(st.current.as_ref().map(|(meta, data)| TestSnapshot {
            meta: meta.clone(),
            snapshot: Cursor::new(data.clone()),
        }))
    }
}

/// Builds a fresh `RocksLogStore` with the given entry-cache bounds in a
/// temporary directory (kept alive by the returned guard) for every suite
/// case.
struct RocksBuilder(CacheLimits);

impl StoreBuilder<TypeConfig, RocksLogStore, TestStateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RocksLogStore, TestStateMachine), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RocksLogStore::open_with_cache(dir.path(), self.0).expect("open log store");
        Ok((dir, store, TestStateMachine::default()))
    }
}

/// Runs openraft's storage suite against stores with these cache bounds.
async fn storage_suite(cache: CacheLimits) {
    let started = Instant::now();
    bounded(Suite::<
        TypeConfig,
        RocksLogStore,
        TestStateMachine,
        RocksBuilder,
        tempfile::TempDir,
    >::test_all(RocksBuilder(cache)))
    .await
    .expect("openraft storage suite");
    println!("openraft storage suite passed in {:?} with {cache:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    storage_suite(DEFAULT_LIMITS).await
}

/// With an entry cache of three entries, the suite's reads are served
/// partly from the cache and partly from RocksDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_with_a_tiny_entry_cache() {
    storage_suite(CacheLimits {
        max_entries: 3,
        max_bytes: 1 << 20,
    })
    .await
}

// ---------------------------------------------------------------------------
// Reopen
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reopen_restores_vote_committed_entries_and_purge() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new_committed(3, 2);
        let entries_before: Vec<Entry>;
        {
            let mut store = RocksLogStore::open(dir.path()).unwrap();
            store.save_vote(&Vote::new(1, 1)).await.unwrap();
            append(&mut store, vec![membership(1, 1, &[1, 2, 3])]).await;
            append(&mut store, (2..=20).map(|i| normal(1, i)).collect()).await;
            // A conflicting tail is replaced by a newer leader's entries.
            store.truncate_after(Some(log_id(1, 15))).await.unwrap();
            store.save_vote(&vote).await.unwrap();
            append(&mut store, (16..=25).map(|i| normal(3, i)).collect()).await;
            store.save_committed(Some(log_id(3, 22))).await.unwrap();
            store.purge(log_id(1, 5)).await.unwrap();
            entries_before = store.try_get_log_entries(..).await.unwrap();
            assert_eq!(indexes(&entries_before), (6..=25).collect::<Vec<_>>());
            store.close().unwrap();
        }

        let mut store = RocksLogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 22)));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
        assert_eq!(state.last_log_id, Some(log_id(3, 25)));
        let entries = store.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(entries, entries_before);
        assert_eq!(entries[9].log_id, log_id(1, 15));
        assert_eq!(entries[10], normal(3, 16));
        // The reader sees the same, and the vote.
        let mut reader = store.get_log_reader().await;
        assert_eq!(
            reader.try_get_log_entries(6..=7).await.unwrap(),
            vec![normal(1, 6), normal(1, 7)]
        );
        assert_eq!(reader.read_vote().await.unwrap(), Some(vote));
        drop(reader);

        // The log continues after reopening, and a full purge survives too.
        append(&mut store, vec![normal(3, 26)]).await;
        store.purge(log_id(3, 26)).await.unwrap();
        drop(store);
        let mut store = RocksLogStore::open(dir.path()).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(3, 26)));
        assert_eq!(
            state.last_log_id,
            Some(log_id(3, 26)),
            "after a full purge the last log id is the purged id"
        );
        assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
        append(&mut store, vec![normal(3, 27)]).await;
        assert_eq!(
            store.try_get_log_entries(..).await.unwrap(),
            vec![normal(3, 27)]
        );
    })
    .await
}

#[tokio::test]
async fn membership_entries_round_trip_with_members() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksLogStore::open(dir.path()).unwrap();
        let e = membership(2, 1, &[1, 2]);
        append(&mut store, vec![e.clone()]).await;
        drop(store);
        let mut store = RocksLogStore::open(dir.path()).unwrap();
        let got = store.try_get_log_entries(1..2).await.unwrap();
        assert_eq!(got, vec![e]);
        let m = got[0].get_membership().unwrap();
        assert_eq!(
            m.nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect::<Vec<_>>(),
            vec![(1, member(1)), (2, member(2))]
        );
    })
    .await
}

// ---------------------------------------------------------------------------
// Appends: visibility, callback order, holes, read budget
// ---------------------------------------------------------------------------

#[tokio::test]
async fn appends_are_readable_on_return_and_complete_in_order() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksLogStore::open(dir.path()).unwrap();
        let mut reader = store.get_log_reader().await;
        let mut pending = Vec::new();
        let mut next = 1;
        for round in 0..200u64 {
            let n = round % 5 + 1;
            let entries: Vec<Entry> = (next..next + n).map(|i| normal(1, i)).collect();
            let (tx, rx) = TypeConfig::oneshot();
            store.append(entries, IOFlushed::signal(tx)).await.unwrap();
            // Readable as soon as append returns, whether or not durable yet.
            let got = reader.try_get_log_entries(next..next + n).await.unwrap();
            assert_eq!(indexes(&got), (next..next + n).collect::<Vec<_>>());
            next += n;
            pending.push(rx);
        }
        // When callback k has fired, every earlier callback has fired too.
        let mut pending: Vec<_> = pending.into_iter().map(Some).collect();
        let n = pending.len();
        for k in (3..n).step_by(7).chain([n - 1]) {
            let Some(rx) = pending[k].take() else {
                continue;
            };
            rx.await.unwrap().unwrap();
            for (j, earlier) in pending[..k].iter_mut().enumerate() {
                if let Some(rx) = earlier {
                    match rx.try_recv() {
                        Ok(r) => r.unwrap(),
                        Err(e) => panic!(
                            "callback {j} not completed although later callback {k} was: {e:?}"
                        ),
                    }
                    *earlier = None;
                }
            }
        }
        // An empty append still gets its (ordered) completion.
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append(Vec::new(), IOFlushed::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, next - 1))
        );
    })
    .await
}

#[tokio::test]
async fn append_refuses_holes() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksLogStore::open(dir.path()).unwrap();
        append(&mut store, (1..=3).map(|i| normal(1, i)).collect()).await;

        let err = store
            .append(vec![normal(1, 5)], IOFlushed::noop())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let err = store
            .append(vec![normal(1, 4), normal(1, 6)], IOFlushed::noop())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        // Nothing of a refused append was written, and the store still works.
        assert_eq!(
            indexes(&store.try_get_log_entries(..).await.unwrap()),
            vec![1, 2, 3]
        );
        append(&mut store, vec![normal(1, 4)]).await;

        // After purging past the end, the log continues right after the purge point.
        store.purge(log_id(1, 10)).await.unwrap();
        assert!(store
            .append(vec![normal(1, 12)], IOFlushed::noop())
            .await
            .is_err());
        // Nor may anything be appended at or below the purge point.
        let err = store
            .append(vec![normal(1, 10)], IOFlushed::noop())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("purged"), "{err}");
        append(&mut store, vec![normal(1, 11)]).await;
        // After truncation, the log continues right after the truncation point.
        append(&mut store, (12..=15).map(|i| normal(1, i)).collect()).await;
        store.truncate_after(Some(log_id(1, 12))).await.unwrap();
        assert!(store
            .append(vec![normal(2, 14)], IOFlushed::noop())
            .await
            .is_err());
        append(&mut store, vec![normal(2, 13)]).await;
        assert_eq!(
            indexes(&store.try_get_log_entries(..).await.unwrap()),
            vec![11, 12, 13]
        );
    })
    .await
}

#[tokio::test]
async fn limited_reads_stay_within_the_byte_budget() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksLogStore::open(dir.path()).unwrap();
        let big = |i: u64| Entry {
            log_id: log_id(1, i),
            payload: EntryPayload::Normal(RaftRequest {
                id: i,
                payload: vec![i as u8; 1 << 20],
            }),
        };
        append(&mut store, (1..=10).map(big).collect()).await;
        let mut reader = store.get_log_reader().await;
        let got = reader.limited_get_log_entries(1, 11).await.unwrap();
        let budget_entries = cairn_raft::log_store::READ_BUDGET_BYTES.div_ceil(1 << 20);
        assert_eq!(
            indexes(&got),
            (1..=budget_entries as u64).collect::<Vec<_>>()
        );
        // Never empty for a non-empty range, however large the entry.
        assert_eq!(
            indexes(&reader.limited_get_log_entries(10, 11).await.unwrap()),
            vec![10]
        );
        assert!(reader
            .limited_get_log_entries(11, 20)
            .await
            .unwrap()
            .is_empty());
        // try_get_log_entries is never limited.
        assert_eq!(reader.try_get_log_entries(1..11).await.unwrap().len(), 10);
    })
    .await
}

// ---------------------------------------------------------------------------
// Entry cache
// ---------------------------------------------------------------------------

/// The in-memory cache of the newest entries never changes what a read
/// returns: two stores get the same random appends (with overwritten
/// tails), truncations and purges, one with no cache (every read from
/// RocksDB) and one with a small cache, and every read is compared.
#[tokio::test]
async fn reads_through_the_entry_cache_match_reads_from_rocksdb() {
    bounded(async {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let (plain_dir, cached_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let none = CacheLimits {
            max_entries: 0,
            max_bytes: 0,
        };
        let small = CacheLimits {
            max_entries: 12,
            max_bytes: 1 << 20,
        };
        let mut plain = RocksLogStore::open_with_cache(plain_dir.path(), none).unwrap();
        let mut cached = RocksLogStore::open_with_cache(cached_dir.path(), small).unwrap();
        let (mut first, mut last, mut term) = (1u64, 0u64, 1u64);
        for step in 0..600 {
            match rng.random_range(0..10) {
                0 if last >= first => {
                    let after = rng.random_range(first - 1..=last);
                    let id = Some(log_id(term, after)).filter(|_| after > 0);
                    plain.truncate_after(id.clone()).await.unwrap();
                    cached.truncate_after(id).await.unwrap();
                    last = after;
                }
                1 if last >= first => {
                    let upto = rng.random_range(first..=last.min(first + 5));
                    plain.purge(log_id(term, upto)).await.unwrap();
                    cached.purge(log_id(term, upto)).await.unwrap();
                    first = upto + 1;
                }
                _ => {
                    // Either continue the log or overwrite part of its tail
                    // with a newer term, as a follower does after a conflict.
                    let from = if last >= first && rng.random_bool(0.2) {
                        term += 1;
                        rng.random_range(first..=last)
                    } else {
                        last + 1
                    };
                    let n = rng.random_range(1..=6);
                    let entries: Vec<Entry> = (from..from + n).map(|i| normal(term, i)).collect();
                    append(&mut plain, entries.clone()).await;
                    append(&mut cached, entries).await;
                    last = last.max(from + n - 1);
                }
            }
            for _ in 0..4 {
                let start = rng.random_range(first.saturating_sub(2)..=last + 2);
                let end = rng.random_range(start..=last + 3);
                let want = plain.try_get_log_entries(start..end).await.unwrap();
                let got = cached.try_get_log_entries(start..end).await.unwrap();
                assert_eq!(got, want, "step {step}: entries {start}..{end}");
                let want = plain.limited_get_log_entries(start, end).await.unwrap();
                let got = cached.limited_get_log_entries(start, end).await.unwrap();
                assert_eq!(got, want, "step {step}: limited {start}..{end}");
            }
        }
        // The two stores hold the same log, whatever the cache served.
        assert_eq!(
            cached.try_get_log_entries(..).await.unwrap(),
            plain.try_get_log_entries(..).await.unwrap()
        );
    })
    .await
}

// ---------------------------------------------------------------------------
// Corruption
// ---------------------------------------------------------------------------

/// Opens the store's RocksDB directly, applies `f` to it, and closes it.
fn with_raw_db(dir: &Path, f: impl FnOnce(&rocksdb::DB)) {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let db = rocksdb::DB::open_cf(&opts, dir, ["default", "logs", "meta"]).unwrap();
    f(&db);
    db.flush_wal(true).unwrap();
}

fn flip_byte(db: &rocksdb::DB, cf: &str, key: &[u8], at: usize) {
    let cf = db.cf_handle(cf).unwrap();
    let mut v = db.get_cf(cf, key).unwrap().expect("record to corrupt");
    let at = at.min(v.len() - 1);
    v[at] ^= 0x01;
    db.put_cf(cf, key, v).unwrap();
}

#[tokio::test]
async fn a_corrupted_entry_is_an_error_never_data() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = RocksLogStore::open(dir.path()).unwrap();
            append(&mut store, (1..=10).map(|i| normal(1, i)).collect()).await;
        }
        // One bit in the payload of entry 5 (past the 4-byte checksum).
        with_raw_db(dir.path(), |db| {
            flip_byte(db, "logs", &5u64.to_be_bytes(), 9)
        });

        let mut store = RocksLogStore::open(dir.path()).unwrap();
        for range in [1..11, 5..6, 3..8] {
            let err = store.try_get_log_entries(range.clone()).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{range:?}: {err}");
            assert!(err.to_string().contains("checksum"), "{err}");
        }
        let mut reader = store.get_log_reader().await;
        assert!(reader.try_get_log_entries(4..=6).await.is_err());
        assert!(reader.limited_get_log_entries(5, 6).await.is_err());
        // Entries around it are intact and still readable.
        assert_eq!(
            indexes(&store.try_get_log_entries(1..5).await.unwrap()),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(6..).await.unwrap()),
            (6..=10).collect::<Vec<_>>()
        );
    })
    .await
}

#[tokio::test]
async fn an_entry_under_the_wrong_index_or_a_hole_is_an_error() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = RocksLogStore::open(dir.path()).unwrap();
            append(&mut store, (1..=6).map(|i| normal(1, i)).collect()).await;
        }
        with_raw_db(dir.path(), |db| {
            let logs = db.cf_handle("logs").unwrap();
            // Entry 3's intact record copied under index 4.
            let three = db.get_cf(logs, 3u64.to_be_bytes()).unwrap().unwrap();
            db.put_cf(logs, 4u64.to_be_bytes(), three).unwrap();
            // Entry 2 removed: a hole between 1 and 3.
            db.delete_cf(logs, 2u64.to_be_bytes()).unwrap();
        });
        let mut store = RocksLogStore::open(dir.path()).unwrap();
        let err = store.try_get_log_entries(4..5).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // 2 is missing between 1 and 3: a hole, not a short read.
        let err = store.try_get_log_entries(1..4).await.unwrap_err();
        assert!(err.to_string().contains("hole"), "{err}");
        assert_eq!(
            indexes(&store.try_get_log_entries(5..).await.unwrap()),
            vec![5, 6]
        );
    })
    .await
}

#[tokio::test]
async fn corrupted_metadata_is_an_error() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = RocksLogStore::open(dir.path()).unwrap();
            store.save_vote(&Vote::new(4, 2)).await.unwrap();
            append(&mut store, (1..=3).map(|i| normal(4, i)).collect()).await;
            store.save_committed(Some(log_id(4, 2))).await.unwrap();
            store.purge(log_id(4, 1)).await.unwrap();
        }
        with_raw_db(dir.path(), |db| {
            flip_byte(db, "meta", b"vote", 6);
            flip_byte(db, "meta", b"committed", 1);
        });
        let mut store = RocksLogStore::open(dir.path()).unwrap();
        assert_eq!(
            store.read_vote().await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            store
                .get_log_reader()
                .await
                .read_vote()
                .await
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            store.read_committed().await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        drop(store);

        // A corrupt purge mark or last entry makes the log state unknowable:
        // opening fails rather than guessing.
        with_raw_db(dir.path(), |db| flip_byte(db, "meta", b"purged", 5));
        let err = RocksLogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, cairn_raft::LogStoreError::Corruption(_)),
            "{err}"
        );
    })
    .await
}

// ---------------------------------------------------------------------------
// kill -9
// ---------------------------------------------------------------------------

const CRASH_TEST: &str = "kill9_keeps_every_acknowledged_append_vote_and_purge";
const CHILD_DIR_ENV: &str = "CAIRN_RAFT_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "CAIRN_RAFT_CRASH_CHILD_SEED";
const SEED_ENV: &str = "CAIRN_RAFT_CRASH_SEED";
const CRASH_ROUNDS: usize = 6;
const ROUND_BOUND: Duration = Duration::from_secs(20);

/// The child: appends batches (up to 16 in flight) under an occasionally
/// bumped vote, sometimes purges, and prints `acked I` once the append
/// ending at index I reported durable, `vote T` once `save_vote` returned,
/// and `purged I` once `purge` returned. It runs until killed (or, as a
/// safety net, for at most 30 s).
fn crash_child(dir: PathBuf, seed: u64) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut store = RocksLogStore::open(&dir).expect("child opens the store");
        let state = store.get_log_state().await.unwrap();
        let mut next = state.last_log_id.map_or(1, |l| l.index + 1);
        let mut term = store
            .read_vote()
            .await
            .unwrap()
            .map_or(1, |v| v.leader_id().term);
        let mut acked = next - 1;
        let mut pending: VecDeque<(u64, tokio::sync::oneshot::Receiver<Result<(), io::Error>>)> =
            VecDeque::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if rng.random_ratio(1, 25) {
                term += 1;
                store
                    .save_vote(&Vote::new_committed(term, 1))
                    .await
                    .unwrap();
                println!("vote {term}");
            }
            if rng.random_ratio(1, 40) && acked > 20 {
                let upto = acked - rng.random_range(0..20);
                let purged = store
                    .get_log_state()
                    .await
                    .unwrap()
                    .last_purged_log_id
                    .map_or(0, |l| l.index);
                if upto > purged {
                    let id = store.try_get_log_entries(upto..=upto).await.unwrap()[0]
                        .log_id
                        .clone();
                    store.purge(id).await.unwrap();
                    // Appends from `next` on are issued after this purge.
                    println!("purged {upto} {next}");
                }
            }
            let n = rng.random_range(1..=8);
            let entries: Vec<Entry> = (next..next + n).map(|i| normal(term, i)).collect();
            let (tx, rx) = TypeConfig::oneshot();
            store.append(entries, IOFlushed::signal(tx)).await.unwrap();
            next += n;
            pending.push_back((next - 1, rx));
            loop {
                let in_flight = pending.len();
                let Some((last, rx)) = pending.front_mut() else {
                    break;
                };
                let last = *last;
                let done = if in_flight > 16 {
                    Some(rx.await)
                } else {
                    match rx.try_recv() {
                        Ok(r) => Some(Ok(r)),
                        Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
                        Err(e) => panic!("callback dropped: {e}"),
                    }
                };
                match done {
                    None => break,
                    Some(r) => {
                        r.expect("callback dropped").expect("append failed");
                        pending.pop_front();
                        acked = last;
                        println!("acked {last}");
                    }
                }
            }
            tokio::task::yield_now().await;
        }
    });
    eprintln!("crash child was never killed");
    std::process::exit(3)
}

#[derive(Debug, Default)]
struct Acknowledged {
    /// Highest index acknowledged durable.
    index: u64,
    /// Highest vote term whose `save_vote` returned.
    term: u64,
    /// Highest purge point that must be durable: some append issued after
    /// that purge returned was acknowledged.
    purged_before_ack: u64,
    /// Purges seen: (purged up to, first index appended after the purge).
    purges: Vec<(u64, u64)>,
}

#[test]
fn kill9_keeps_every_acknowledged_append_vote_and_purge() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let seed = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
        crash_child(PathBuf::from(dir), seed);
    }

    let seed: u64 = match std::env::var(SEED_ENV) {
        Ok(s) => s.parse().expect("CAIRN_RAFT_CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    println!("kill -9 test seed {seed} (replay the kill points with {SEED_ENV}={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Acknowledged::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();

    for round in 0..CRASH_ROUNDS {
        let kill_after = rng.random_range(1..=400u64);
        let child_seed: u64 = rng.random();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([CRASH_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_SEED_ENV, child_seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        // Returns whether `line` acknowledged an append.
        let handle = |line: &str, acked: &mut Acknowledged| -> bool {
            let mut words = line.split_whitespace();
            let what = words.next();
            let nums: Vec<u64> = words.map_while(|w| w.parse().ok()).collect();
            match (what, nums.as_slice()) {
                (Some("acked"), [n]) => {
                    assert!(
                        *n > acked.index,
                        "acks go forward: {n} after {}",
                        acked.index
                    );
                    acked.index = *n;
                    for (upto, issued_before) in &acked.purges {
                        if *issued_before <= *n {
                            acked.purged_before_ack = acked.purged_before_ack.max(*upto);
                        }
                    }
                    true
                }
                (Some("vote"), [t]) => {
                    acked.term = acked.term.max(*t);
                    false
                }
                (Some("purged"), [upto, next]) => {
                    acked.purges.push((*upto, *next));
                    false
                }
                _ => false,
            }
        };

        let deadline = Instant::now() + ROUND_BOUND;
        let mut acks_this_round = 0;
        while acks_this_round < kill_after {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if handle(&line, &mut acked) {
                        acks_this_round += 1;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("round {round}: child stopped acknowledging after {acks_this_round} acks: {e:?}");
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the child was killed, not finished: {status}"
        );
        // Everything the child printed before dying was acknowledged too.
        for line in rx.iter() {
            handle(&line, &mut acked);
        }
        reader.join().unwrap();

        rt.block_on(async {
            let mut store = RocksLogStore::open(dir.path()).unwrap();
            let state = store.get_log_state().await.unwrap();
            let purged = state.last_purged_log_id.map_or(0, |l| l.index);
            let last = state.last_log_id.map_or(0, |l| l.index);
            assert!(last >= acked.index, "round {round}: acked up to {} but the log ends at {last}", acked.index);
            assert!(
                purged >= acked.purged_before_ack,
                "round {round}: purge to {} preceded an acked append but the log is purged only to {purged}",
                acked.purged_before_ack
            );
            let vote = store.read_vote().await.unwrap();
            let vote_term = vote.map_or(0, |v| v.leader_id().term);
            assert!(vote_term >= acked.term, "round {round}: vote {} returned but {vote_term} recovered", acked.term);

            // Every entry present (acked or not) is intact, consecutive and
            // exactly what was written; none is from a term after the vote.
            let entries = store.try_get_log_entries(..).await.unwrap();
            let expected_first = purged + 1;
            assert_eq!(entries.first().map(|e| e.index()), (last >= expected_first).then_some(expected_first));
            for e in &entries {
                let i = e.index();
                assert!(e.log_id.leader_id.term <= vote_term.max(1), "entry {i} is from a term after the vote");
                assert_eq!(e.payload, normal(e.log_id.leader_id.term, i).payload, "entry {i} content");
            }
            println!(
                "round {round}: killed after {kill_after} acks; acked {} vote {} purged>={}; recovered last {last} purged {purged} vote {vote_term}",
                acked.index, acked.term, acked.purged_before_ack
            );
            // The next child continues after what was recovered, so its
            // acks stay above every earlier one.
            store.close().unwrap();
        });
    }
    println!(
        "kill -9 test: {CRASH_ROUNDS} rounds in {:?}",
        started.elapsed()
    );
}
