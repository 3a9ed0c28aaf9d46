//! The Lease service through the real binary: etcd-client (what Rust users of
//! etcd run), raw generated stubs for the keep-alive stream (etcd-client
//! refuses a TTL 0 answer), and the real `etcdctl` (3.4, `ETCDCTL_API=3`).
//!
//! Grant (ids, minimum and maximum TTL), attaching keys, revoke and expiry
//! deleting every attached key in one revision, TimeToLive, Leases,
//! keep-alive streams, followers forwarding to the leader, a leader failover
//! and a burst of expiring leases.
//!
//! Every etcdctl output below and the gRPC behaviour checked here was taken
//! from etcd 3.4.23 (etcdctl 3.4.23) running the same sequences.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_api::etcdserverpb as pb;
use common::etcdctl::{Ctl, Running};
use common::{Cairn, Cluster};
use etcd_client::{
    Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp, WatchOptions,
    WatchStream,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Bound for one request or one awaited stream message.
const STEP: Duration = Duration::from_secs(10);
/// etcd's largest TTL (`lease.MaxLeaseTTL`).
const MAX_TTL: i64 = 9_000_000_000;
/// The minimum TTL with the default 1000 ms election timeout: ceil(1.5 s).
const MIN_TTL: i64 = 2;
/// How late after its TTL an unrenewed lease may be revoked (etcd: up to an
/// election timeout of extension plus its 500 ms expiry check and the revoke
/// itself).
const EXPIRY_SLACK: Duration = Duration::from_secs(3);

const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const LEASE_EXISTS: &str = "etcdserver: lease already exists";
const TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";

async fn client(c: &Cairn) -> Client {
    within(Client::connect([c.endpoint()], None)).await.expect("connect")
}

/// Awaits `f` for at most [`STEP`].
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP, f).await.expect("answered in time")
}

/// The gRPC status behind an etcd-client error.
fn status(e: etcd_client::Error) -> (Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn not_found() -> (Code, String) {
    (Code::NotFound, LEASE_NOT_FOUND.to_string())
}

async fn ttl_of(cl: &mut Client, id: i64) -> (i64, i64) {
    let r = within(cl.lease_time_to_live(id, None)).await.unwrap();
    assert_eq!(r.id(), id);
    (r.ttl(), r.granted_ttl())
}

async fn keys_of(cl: &mut Client, id: i64) -> BTreeSet<String> {
    let r = within(cl.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))).await.unwrap();
    r.keys().iter().map(|k| String::from_utf8(k.clone()).unwrap()).collect()
}

async fn lease_ids(cl: &mut Client) -> BTreeSet<i64> {
    within(cl.leases()).await.unwrap().leases().iter().map(|l| l.id()).collect()
}

/// (value, lease) of `key`, None if absent.
async fn get_one(cl: &mut Client, key: &str) -> Option<(String, i64)> {
    let r = within(cl.get(key, None)).await.unwrap();
    r.kvs().first().map(|kv| (kv.value_str().unwrap().to_string(), kv.lease()))
}

async fn revision(cl: &mut Client) -> i64 {
    within(cl.get("revision-probe", None)).await.unwrap().header().unwrap().revision()
}

async fn next_watch(stream: &mut WatchStream) -> etcd_client::WatchResponse {
    within(stream.message()).await.unwrap().expect("watch stream open")
}

/// (key, mod_revision, type) of every event in one watch response.
fn events(r: &etcd_client::WatchResponse) -> Vec<(String, i64, EventType)> {
    r.events()
        .iter()
        .map(|e| {
            let kv = e.kv().unwrap();
            (kv.key_str().unwrap().to_string(), kv.mod_revision(), e.event_type())
        })
        .collect()
}

/// Asserts that one watch response deletes exactly `keys`, all in one revision; returns it.
fn assert_one_revision_of_deletes(r: &etcd_client::WatchResponse, keys: &[&str]) -> i64 {
    let evs = events(r);
    assert_eq!(evs.len(), keys.len(), "all attached keys' deletes in one watch response: {evs:?}");
    let rev = evs[0].1;
    assert!(evs.iter().all(|e| e.1 == rev && e.2 == EventType::Delete), "one revision of deletes: {evs:?}");
    let got: BTreeSet<&str> = evs.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(got, keys.iter().copied().collect());
    rev
}

/// A raw LeaseKeepAlive stream: one request in, one response out.
struct KeepAlive {
    tx: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    rx: tonic::Streaming<pb::LeaseKeepAliveResponse>,
}

impl KeepAlive {
    /// Opens a stream on `endpoint` with a first keep-alive of `id` (sent
    /// before the call: a server may hold its headers until the first
    /// message) and returns the stream and its first answer.
    async fn open(endpoint: &str, id: i64) -> (KeepAlive, pb::LeaseKeepAliveResponse) {
        let (ka, first) = Self::try_open(endpoint, id).await.expect("keep-alive stream");
        (ka, first)
    }

    async fn try_open(endpoint: &str, id: i64) -> Result<(KeepAlive, pb::LeaseKeepAliveResponse), String> {
        let connect = pb::lease_client::LeaseClient::connect(endpoint.to_string());
        let mut raw = tokio::time::timeout(STEP, connect).await.map_err(|_| "connect timeout".to_string())?.map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::LeaseKeepAliveRequest { id }).await.unwrap();
        let rx = tokio::time::timeout(STEP, raw.lease_keep_alive(ReceiverStream::new(rx)))
            .await
            .map_err(|_| "open timeout".to_string())?
            .map_err(|e| e.to_string())?
            .into_inner();
        let mut ka = KeepAlive { tx, rx };
        let first = ka.recv().await?;
        Ok((ka, first))
    }

    async fn recv(&mut self) -> Result<pb::LeaseKeepAliveResponse, String> {
        match tokio::time::timeout(STEP, self.rx.message()).await {
            Err(_) => Err("no keep-alive response in time".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(None)) => Err("keep-alive stream closed".into()),
            Ok(Ok(Some(r))) => Ok(r),
        }
    }

    async fn try_ping(&mut self, id: i64) -> Result<pb::LeaseKeepAliveResponse, String> {
        self.tx.send(pb::LeaseKeepAliveRequest { id }).await.map_err(|e| e.to_string())?;
        self.recv().await
    }

    /// Sends a keep-alive of `id`; returns the answer's (ID, TTL).
    async fn ping(&mut self, id: i64) -> (i64, i64) {
        let r = self.try_ping(id).await.unwrap_or_else(|e| panic!("keep-alive of {id:#x}: {e}"));
        (r.id, r.ttl)
    }
}

/// The index of the leader and of the two followers of a 3-member cluster.
async fn roles(cluster: &Cluster) -> (usize, usize, usize) {
    let mut probe = Client::connect([cluster.members[0].endpoint()], None).await.unwrap();
    let leader = within(probe.status()).await.unwrap().leader();
    let mut ids = Vec::new();
    for m in &cluster.members {
        let mut c = Client::connect([m.endpoint()], None).await.unwrap();
        ids.push(within(c.status()).await.unwrap().header().unwrap().member_id());
    }
    let l = ids.iter().position(|id| *id == leader).expect("leader among the members");
    let f: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    (l, f[0], f[1])
}

/// The members a lease check runs on: writes, grants and keep-alives go
/// through `a`; reads, TimeToLive, Leases and watches through `b`. On a
/// single member both are the same; on a cluster they are different members,
/// so each check also shows that what one member did is seen through another.
struct Pair {
    a: Client,
    b: Client,
    a_ep: String,
}

impl Pair {
    async fn single(c: &Cairn) -> Pair {
        Pair::of(c, c).await
    }

    async fn of(a: &Cairn, b: &Cairn) -> Pair {
        Pair { a: client(a).await, b: client(b).await, a_ep: a.endpoint() }
    }
}

/// Revokes every lease (deleting every leased key), so that the next check
/// starts from none.
async fn revoke_all(cl: &mut Client) {
    for id in lease_ids(cl).await {
        within(cl.lease_revoke(id)).await.unwrap();
    }
    assert!(lease_ids(cl).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grant_ids_ttls_and_errors() {
    let c = Cairn::start();
    check_grant(&mut Pair::single(&c).await).await;
}

async fn check_grant(p: &mut Pair) {
    let (a, b) = (&mut p.a, &mut p.b);
    let before = lease_ids(b).await;

    // ID 0: the server picks positive, distinct ids; the response carries the TTL.
    let mut picked = BTreeSet::new();
    for _ in 0..20 {
        let g = within(a.lease_grant(60, None)).await.unwrap();
        assert!(g.id() > 0, "picked id {}", g.id());
        assert_eq!(g.ttl(), 60);
        assert_eq!(g.error(), "");
        assert!(picked.insert(g.id()), "id {:#x} picked twice", g.id());
    }

    // An explicit id is honoured; granting it again is etcd's refusal.
    let g = within(a.lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234)))).await.unwrap();
    assert_eq!((g.id(), g.ttl()), (0x1234, 30));
    let e = within(a.lease_grant(45, Some(LeaseGrantOptions::new().with_id(0x1234)))).await.unwrap_err();
    assert_eq!(status(e), (Code::FailedPrecondition, LEASE_EXISTS.to_string()));
    // The refused grant changed nothing.
    assert_eq!(ttl_of(b, 0x1234).await.1, 30);
    let taken = *picked.iter().next().unwrap();
    let e = within(a.lease_grant(45, Some(LeaseGrantOptions::new().with_id(taken)))).await.unwrap_err();
    assert_eq!(status(e), (Code::FailedPrecondition, LEASE_EXISTS.to_string()));

    // Below the minimum (ceil(1.5 x the 1000 ms election timeout) = 2 s): raised.
    for ttl in [0, 1] {
        let g = within(a.lease_grant(ttl, None)).await.unwrap();
        assert_eq!(g.ttl(), MIN_TTL, "TTL {ttl} granted as");
        assert_eq!(ttl_of(b, g.id()).await.1, MIN_TTL);
        within(a.lease_revoke(g.id())).await.unwrap();
    }
    let above_min = within(a.lease_grant(MIN_TTL + 1, None)).await.unwrap();
    assert_eq!(above_min.ttl(), MIN_TTL + 1);

    // Above etcd's maximum: refused; the maximum itself is fine.
    let e = within(a.lease_grant(MAX_TTL + 1, None)).await.unwrap_err();
    assert_eq!(status(e), (Code::OutOfRange, TTL_TOO_LARGE.to_string()));
    let e = within(a.lease_grant(i64::MAX, Some(LeaseGrantOptions::new().with_id(0x99)))).await.unwrap_err();
    assert_eq!(status(e), (Code::OutOfRange, TTL_TOO_LARGE.to_string()));
    let big = within(a.lease_grant(MAX_TTL, Some(LeaseGrantOptions::new().with_id(0x99)))).await.unwrap();
    assert_eq!((big.id(), big.ttl()), (0x99, MAX_TTL));
    let (ttl, granted) = ttl_of(b, 0x99).await;
    assert_eq!(granted, MAX_TTL);
    assert!(ttl > MAX_TTL - 60 && ttl <= MAX_TTL, "remaining {ttl}");

    // Leases lists exactly the live leases this check granted (the two
    // raised to the minimum were revoked).
    let mut want = picked.clone();
    want.extend([0x1234, 0x99, above_min.id()]);
    let listed: BTreeSet<i64> = lease_ids(b).await.difference(&before).copied().collect();
    assert_eq!(listed, want);
    // A revoked explicit id can be granted again.
    within(a.lease_revoke(0x1234)).await.unwrap();
    assert!(!lease_ids(b).await.contains(&0x1234));
    let g = within(a.lease_grant(20, Some(LeaseGrantOptions::new().with_id(0x1234)))).await.unwrap();
    assert_eq!((g.id(), g.ttl()), (0x1234, 20));
}

/// With `--election-timeout=500` the minimum TTL is ceil(0.75 s) = 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minimum_ttl_follows_the_election_timeout() {
    let c = Cairn::start_with(&["--election-timeout=500", "--heartbeat-interval=50"]);
    let mut cl = client(&c).await;
    for (asked, granted) in [(0, 1), (1, 1), (2, 2)] {
        let g = within(cl.lease_grant(asked, None)).await.unwrap();
        assert_eq!(g.ttl(), granted, "TTL {asked} granted as");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_attaches_keys_and_checks_the_lease() {
    let c = Cairn::start();
    check_put_attach(&mut Pair::single(&c).await).await;
}

async fn check_put_attach(p: &mut Pair) {
    let (a, b) = (&mut p.a, &mut p.b);
    let l1 = within(a.lease_grant(60, None)).await.unwrap().id();
    let l2 = within(a.lease_grant(60, None)).await.unwrap().id();

    within(a.put("k", "v1", Some(PutOptions::new().with_lease(l1)))).await.unwrap();
    assert_eq!(get_one(b, "k").await, Some(("v1".into(), l1)));
    assert_eq!(keys_of(b, l1).await, ["k".to_string()].into());

    // A lease that does not exist: refused, nothing written.
    let rev = revision(b).await;
    let e = within(a.put("k", "v2", Some(PutOptions::new().with_lease(0x5eed)))).await.unwrap_err();
    assert_eq!(status(e), not_found());
    let e = within(a.put("fresh", "v", Some(PutOptions::new().with_lease(0x5eed)))).await.unwrap_err();
    assert_eq!(status(e), not_found());
    // Also inside a txn (checked before anything is applied).
    let txn = Txn::new().and_then([
        TxnOp::put("t1", "x", None),
        TxnOp::put("t2", "y", Some(PutOptions::new().with_lease(0x5eed))),
    ]);
    assert_eq!(status(within(a.txn(txn)).await.unwrap_err()), not_found());
    assert_eq!(revision(b).await, rev, "a refused write changed the revision");
    assert_eq!(get_one(b, "k").await, Some(("v1".into(), l1)));
    assert_eq!(get_one(b, "fresh").await, None);
    assert_eq!(get_one(b, "t1").await, None);

    // A txn put with a live lease attaches too.
    let txn = Txn::new().and_then([TxnOp::put("t1", "x", Some(PutOptions::new().with_lease(l2)))]);
    assert!(within(a.txn(txn)).await.unwrap().succeeded());
    assert_eq!(get_one(b, "t1").await, Some(("x".into(), l2)));

    // ignore_lease keeps the key's lease; a put with another lease moves the
    // key; a plain put detaches it.
    within(a.put("k", "v2", Some(PutOptions::new().with_ignore_lease()))).await.unwrap();
    assert_eq!(get_one(b, "k").await, Some(("v2".into(), l1)));
    assert_eq!(keys_of(b, l1).await, ["k".to_string()].into());
    within(a.put("k", "v3", Some(PutOptions::new().with_lease(l2)))).await.unwrap();
    assert_eq!(get_one(b, "k").await, Some(("v3".into(), l2)));
    assert_eq!(keys_of(b, l1).await, BTreeSet::new());
    assert_eq!(keys_of(b, l2).await, ["k".to_string(), "t1".to_string()].into());
    within(a.put("k", "v4", None)).await.unwrap();
    assert_eq!(get_one(b, "k").await, Some(("v4".into(), 0)));
    assert_eq!(keys_of(b, l2).await, ["t1".to_string()].into());
    // Revoking a lease the key left does not touch it.
    within(a.lease_revoke(l1)).await.unwrap();
    assert_eq!(get_one(b, "k").await, Some(("v4".into(), 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_deletes_every_attached_key_in_one_revision() {
    let c = Cairn::start();
    check_revoke(&mut Pair::single(&c).await).await;
}

async fn check_revoke(p: &mut Pair) {
    let (a, b) = (&mut p.a, &mut p.b);
    let before = lease_ids(b).await;
    let id = within(a.lease_grant(60, None)).await.unwrap().id();
    let other = within(a.lease_grant(60, None)).await.unwrap().id();
    let keys = ["r/a", "r/b", "r/c", "r/d", "r/e"];
    for k in keys {
        within(a.put(k, "v", Some(PutOptions::new().with_lease(id)))).await.unwrap();
    }
    within(a.put("r/plain", "v", None)).await.unwrap();
    within(a.put("r/other", "v", Some(PutOptions::new().with_lease(other)))).await.unwrap();
    assert_eq!(keys_of(b, id).await, keys.iter().map(|k| k.to_string()).collect());

    let mut stream = within(b.watch("r/", Some(WatchOptions::new().with_prefix()))).await.unwrap();
    assert!(next_watch(&mut stream).await.created());
    let rev_before = revision(b).await;
    let r = within(a.lease_revoke(id)).await.unwrap();
    let rev = r.header().unwrap().revision();
    assert_eq!(rev, rev_before + 1, "the revoke is one revision");

    let deletes = next_watch(&mut stream).await;
    assert_eq!(assert_one_revision_of_deletes(&deletes, &keys), rev);
    let left = within(b.get("r/", Some(GetOptions::new().with_prefix().with_keys_only()))).await.unwrap();
    let left: Vec<&str> = left.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(left, ["r/other", "r/plain"]);

    // Gone: TimeToLive says -1 (no error), Leases no longer lists it,
    // revoking again or attaching to it is "not found".
    assert_eq!(ttl_of(b, id).await.0, -1);
    let listed: BTreeSet<i64> = lease_ids(b).await.difference(&before).copied().collect();
    assert_eq!(listed, [other].into());
    assert_eq!(status(within(a.lease_revoke(id)).await.unwrap_err()), not_found());
    assert_eq!(status(within(a.lease_revoke(0x7e57)).await.unwrap_err()), not_found());
    let e = within(a.put("r/a", "again", Some(PutOptions::new().with_lease(id)))).await.unwrap_err();
    assert_eq!(status(e), not_found());
    // A lease without keys is revoked in a revision of its own too (etcd
    // always writes the revoke's txn), but no event is sent.
    let empty = within(a.lease_grant(60, None)).await.unwrap().id();
    within(a.lease_revoke(empty)).await.unwrap();
    if let Ok(r) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("unexpected watch response: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_to_live_reports_remaining_granted_and_keys() {
    let c = Cairn::start();
    check_time_to_live(&mut Pair::single(&c).await).await;
}

async fn check_time_to_live(p: &mut Pair) {
    let (a, b) = (&mut p.a, &mut p.b);
    let id = within(a.lease_grant(30, None)).await.unwrap().id();
    within(a.put("b", "1", Some(PutOptions::new().with_lease(id)))).await.unwrap();
    within(a.put("a", "1", Some(PutOptions::new().with_lease(id)))).await.unwrap();

    let r = within(b.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))).await.unwrap();
    assert_eq!((r.id(), r.granted_ttl()), (id, 30));
    assert!(r.ttl() > 25 && r.ttl() <= 30, "remaining {}", r.ttl());
    let keys: BTreeSet<&[u8]> = r.keys().iter().map(|k| k.as_slice()).collect();
    assert_eq!(keys, [&b"a"[..], &b"b"[..]].into());
    // Without `keys`, none are listed.
    let r = within(b.lease_time_to_live(id, None)).await.unwrap();
    assert!(r.keys().is_empty(), "{:?}", r.keys());

    // It counts down. etcd 3.4.23 reports 27 here (27.9 s truncated); a
    // lease granted just after the member became leader may start with up to
    // an election timeout of extension (etcd extends every lease when a
    // leader takes over), so only "below the granted TTL" is required after
    // 2.1 s, then a whole second less after another 1.1 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (ttl, granted) = ttl_of(b, id).await;
    assert_eq!(granted, 30);
    assert!(ttl > 20 && ttl < 30, "remaining {ttl} two seconds later");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (later, _) = ttl_of(a, id).await;
    assert!(later > 20 && later <= ttl - 1, "remaining {later} 1.1 s after {ttl}");

    // Unknown: TTL -1, grantedTTL 0, no keys, no error.
    let r = within(b.lease_time_to_live(0xdead, Some(LeaseTimeToLiveOptions::new().with_keys()))).await.unwrap();
    assert_eq!((r.id(), r.ttl(), r.granted_ttl()), (0xdead, -1, 0));
    assert!(r.keys().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_stream_renews_and_answers_ttl_0_for_missing_leases() {
    let c = Cairn::start();
    check_keep_alive_stream(&mut Pair::single(&c).await).await;
}

async fn check_keep_alive_stream(p: &mut Pair) {
    let (a, b) = (&mut p.a, &mut p.b);
    let before = lease_ids(b).await;
    let id = within(a.lease_grant(10, None)).await.unwrap().id();
    let revoked = within(a.lease_grant(10, None)).await.unwrap().id();
    within(a.lease_revoke(revoked)).await.unwrap();
    let short = within(a.lease_grant(MIN_TTL, None)).await.unwrap().id();

    let (mut ka, first) = KeepAlive::open(&p.a_ep, id).await;
    assert_eq!((first.id, first.ttl), (id, 10));

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (ttl, _) = ttl_of(b, id).await;
    assert!(ttl <= 8, "remaining {ttl} two seconds after a keep-alive");
    // Each keep-alive answers the full TTL and renews it.
    assert_eq!(ka.ping(id).await, (id, 10));
    let (ttl, _) = ttl_of(b, id).await;
    assert!((9..=10).contains(&ttl), "remaining {ttl} right after a keep-alive");

    // Unknown and revoked leases: TTL 0, the stream stays open.
    assert_eq!(ka.ping(0x7777).await, (0x7777, 0));
    assert_eq!(ka.ping(revoked).await, (revoked, 0));
    assert_eq!(ka.ping(id).await, (id, 10));

    // An expired lease (its TTL ran out, never kept alive): TTL 0 as well.
    let deadline = Instant::now() + Duration::from_secs(MIN_TTL as u64) + EXPIRY_SLACK + Duration::from_secs(1);
    while ttl_of(b, short).await.0 != -1 {
        assert!(Instant::now() < deadline, "lease {short:#x} did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ka.ping(short).await, (short, 0));
    assert_eq!(ka.ping(id).await, (id, 10));
    // Several requests in flight are each answered, in order.
    for i in [id, 0x7777, id] {
        ka.tx.send(pb::LeaseKeepAliveRequest { id: i }).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let r = ka.recv().await.unwrap();
        got.push((r.id, r.ttl));
    }
    assert_eq!(got, vec![(id, 10), (0x7777, 0), (id, 10)]);
    let listed: BTreeSet<i64> = lease_ids(b).await.difference(&before).copied().collect();
    assert_eq!(listed, [id].into());
}

/// An unrenewed lease expires after its TTL (not before) and takes all its
/// keys in one revision; a lease kept alive next to it does not expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_deletes_keys_in_one_revision_and_keep_alive_prevents_it() {
    let c = Cairn::start();
    check_expiry(&mut Pair::single(&c).await).await;
}

async fn check_expiry(p: &mut Pair) {
    let (a, b) = (&mut p.a, &mut p.b);
    let mut stream = within(b.watch("e/", Some(WatchOptions::new().with_prefix()))).await.unwrap();
    assert!(next_watch(&mut stream).await.created());

    // The kept lease: renewed every 500 ms by etcd-client's keeper.
    let kept = within(a.lease_grant(MIN_TTL, None)).await.unwrap().id();
    within(a.put("kept", "v", Some(PutOptions::new().with_lease(kept)))).await.unwrap();
    let (mut keeper, mut replies) = within(a.lease_keep_alive(kept)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let renewals = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut ttls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                within(keeper.keep_alive()).await.unwrap();
                let r = within(replies.message()).await.unwrap().expect("keep-alive stream open");
                ttls.push(r.ttl());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            ttls
        })
    };

    let id = within(a.lease_grant(MIN_TTL, None)).await.unwrap().id();
    let granted = Instant::now();
    let keys = ["e/1", "e/2", "e/3"];
    for k in keys {
        within(a.put(k, "v", Some(PutOptions::new().with_lease(id)))).await.unwrap();
    }
    for _ in keys {
        assert_eq!(events(&next_watch(&mut stream).await)[0].2, EventType::Put);
    }
    let limit = Duration::from_secs(MIN_TTL as u64) + EXPIRY_SLACK;
    let r = tokio::time::timeout(limit, stream.message())
        .await
        .unwrap_or_else(|_| panic!("lease {id:#x} (TTL {MIN_TTL}s) not expired within {limit:?}"))
        .unwrap()
        .unwrap();
    let took = granted.elapsed();
    eprintln!("lease with TTL {MIN_TTL}s expired {took:?} after its grant");
    assert!(took >= Duration::from_millis(MIN_TTL as u64 * 1000 - 500), "expired early, after {took:?}");
    assert_one_revision_of_deletes(&r, &keys);
    assert_eq!(ttl_of(b, id).await, (-1, 0));
    assert!(!lease_ids(b).await.contains(&id));
    assert_eq!(within(b.get("e/", Some(GetOptions::new().with_prefix()))).await.unwrap().count(), 0);

    // The kept lease outlives two more of its TTLs.
    tokio::time::sleep(Duration::from_secs(2 * MIN_TTL as u64)).await;
    assert_eq!(get_one(b, "kept").await, Some(("v".into(), kept)));
    assert!(ttl_of(b, kept).await.0 > 0);
    stop.store(true, Ordering::Relaxed);
    let ttls = within(renewals).await.unwrap();
    assert!(ttls.len() >= 8 && ttls.iter().all(|t| *t == MIN_TTL), "keep-alive answers {ttls:?}");
    // Once no longer renewed, it expires too.
    let deadline = Instant::now() + limit;
    while get_one(b, "kept").await.is_some() {
        assert!(Instant::now() < deadline, "kept lease did not expire once its keep-alives stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every lease RPC through followers (which forward to the leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_rpcs_through_followers() {
    let cluster = Cluster::start(3, &[]);
    let (l, f1, f2) = roles(&cluster).await;
    let ep = |i: usize| cluster.members[i].endpoint();
    let mut c1 = client(&cluster.members[f1]).await;
    let mut c2 = client(&cluster.members[f2]).await;
    let mut cl = client(&cluster.members[l]).await;

    // Ids picked through every member are positive and distinct.
    let mut ids = HashSet::new();
    for c in [&mut c1, &mut c2, &mut cl] {
        for _ in 0..5 {
            let g = within(c.lease_grant(30, None)).await.unwrap();
            assert!(g.id() > 0 && g.ttl() == 30, "{g:?}");
            assert!(ids.insert(g.id()), "id {:#x} picked twice", g.id());
        }
    }
    let id = *ids.iter().next().unwrap();
    let g = within(c2.lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x42)))).await.unwrap();
    assert_eq!((g.id(), g.ttl()), (0x42, 30));
    let e = within(c1.lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x42)))).await.unwrap_err();
    assert_eq!(status(e), (Code::FailedPrecondition, LEASE_EXISTS.to_string()));
    assert_eq!(within(c1.lease_grant(1, None)).await.unwrap().ttl(), MIN_TTL);
    let e = within(c2.lease_grant(MAX_TTL + 1, None)).await.unwrap_err();
    assert_eq!(status(e), (Code::OutOfRange, TTL_TOO_LARGE.to_string()));

    within(c2.put("f/a", "v", Some(PutOptions::new().with_lease(id)))).await.unwrap();
    within(c1.put("f/b", "v", Some(PutOptions::new().with_lease(id)))).await.unwrap();
    let e = within(c1.put("f/c", "v", Some(PutOptions::new().with_lease(0xabc)))).await.unwrap_err();
    assert_eq!(status(e), not_found());
    for c in [&mut c1, &mut c2] {
        let (ttl, granted) = ttl_of(c, id).await;
        assert_eq!(granted, 30);
        assert!(ttl > 25 && ttl <= 30, "remaining {ttl}");
        assert_eq!(keys_of(c, id).await, ["f/a".to_string(), "f/b".to_string()].into());
        let all = lease_ids(c).await;
        assert!(ids.iter().all(|i| all.contains(i)) && all.contains(&0x42), "{all:?}");
        assert_eq!(ttl_of(c, 0xabc).await, (-1, 0));
    }

    // Keys attached through one follower are listed at once through the other.
    for i in 0..50 {
        let key = format!("f/race/{i}");
        within(c1.put(key.as_str(), "v", Some(PutOptions::new().with_lease(0x42)))).await.unwrap();
        assert!(keys_of(&mut c2, 0x42).await.contains(&key), "{key} not yet listed through the other follower");
    }

    // Keep-alive through a follower renews the lease the leader holds.
    let (mut ka, first) = KeepAlive::open(&ep(f1), id).await;
    assert_eq!((first.id, first.ttl), (id, 30));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(ttl_of(&mut c2, id).await.0 <= 28);
    assert_eq!(ka.ping(id).await, (id, 30));
    let (ttl, _) = ttl_of(&mut cl, id).await;
    assert!(ttl >= 29, "remaining {ttl} on the leader right after a keep-alive through a follower");
    assert_eq!(ka.ping(0xabc).await, (0xabc, 0));
    let (mut ka2, first) = KeepAlive::open(&ep(f2), 0xabc).await;
    assert_eq!((first.id, first.ttl), (0xabc, 0));
    assert_eq!(ka2.ping(0x42).await, (0x42, 30));

    // Revoke through a follower: a watcher on the other follower sees both
    // deletes in one response.
    let mut w = client(&cluster.members[f1]).await;
    let mut stream = within(w.watch("f/", Some(WatchOptions::new().with_prefix()))).await.unwrap();
    assert!(next_watch(&mut stream).await.created());
    let rev = within(c2.lease_revoke(id)).await.unwrap().header().unwrap().revision();
    assert_eq!(assert_one_revision_of_deletes(&next_watch(&mut stream).await, &["f/a", "f/b"]), rev);
    assert_eq!(get_one(&mut c1, "f/a").await, None);
    assert_eq!(ttl_of(&mut c1, id).await.0, -1);
    assert_eq!(ka.ping(id).await, (id, 0));
    assert_eq!(status(within(c1.lease_revoke(id)).await.unwrap_err()), not_found());
    assert!(!lease_ids(&mut c1).await.contains(&id));
}

/// Calls `f` with a fresh client on each of `endpoints` in turn until it
/// succeeds or `limit` passes (errors while a new leader is elected are expected).
async fn retry<T, F, Fut>(endpoints: &[String], limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    for ep in endpoints.iter().cycle() {
        assert!(Instant::now() < deadline, "{what}: no success within {limit:?}; last error: {last}");
        let attempt = async {
            let c = Client::connect([ep.clone()], None).await?;
            f(c).await
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timeout".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// Waits (at most 20 s) until one of `survivors` reports a leader other
/// than `old_leader`; returns its id.
async fn wait_new_leader(survivors: &[String], old_leader: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no new leader within 20s");
        for ep in survivors {
            let Ok(Ok(mut c)) = tokio::time::timeout(Duration::from_secs(2), Client::connect([ep.clone()], None)).await else {
                continue;
            };
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await {
                if s.leader() != 0 && s.leader() != old_leader {
                    return s.leader();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader is killed: a lease kept alive through a follower does not
/// expire; an unrenewed 10 s lease granted ~3 s before the kill survives
/// the election (not expired early, remaining TTL within (0, 10]) and then
/// expires within its TTL plus slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_across_a_leader_failover() {
    const KEPT_TTL: i64 = 5;
    const IDLE_TTL: i64 = 10;
    let mut cluster = Cluster::start(3, &[]);
    let (l, f1, f2) = roles(&cluster).await;
    let old_leader = within(client(&cluster.members[l]).await.status()).await.unwrap().leader();
    let survivors = vec![cluster.members[f1].endpoint(), cluster.members[f2].endpoint()];
    let mut c1 = client(&cluster.members[f1]).await;

    let kept = within(c1.lease_grant(KEPT_TTL, None)).await.unwrap().id();
    within(c1.put("kept", "v", Some(PutOptions::new().with_lease(kept)))).await.unwrap();
    let idle = within(c1.lease_grant(IDLE_TTL, None)).await.unwrap().id();
    let idle_granted = Instant::now();
    within(c1.put("idle", "v", Some(PutOptions::new().with_lease(idle)))).await.unwrap();

    // Keeps `kept` alive through follower f1 every 500 ms, reopening the
    // stream whenever it breaks; records every TTL answered.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let keeper = {
        let (stop, answers, ep) = (stop.clone(), answers.clone(), survivors[0].clone());
        tokio::spawn(async move {
            let mut reopened = 0;
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut ka, first)) = KeepAlive::try_open(&ep, kept).await else {
                    reopened += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                answers.lock().unwrap().push(first.ttl);
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match ka.try_ping(kept).await {
                        Ok(r) => answers.lock().unwrap().push(r.ttl),
                        Err(_) => {
                            reopened += 1;
                            break;
                        }
                    }
                }
            }
            reopened
        })
    };

    tokio::time::sleep(Duration::from_secs(3).saturating_sub(idle_granted.elapsed())).await;
    let killed_at = Instant::now();
    cluster.members[l].kill9();

    let new_leader = wait_new_leader(&survivors, old_leader).await;
    let elected = Instant::now();
    eprintln!(
        "new leader {new_leader:x} seen {:?} after the kill, {:?} after the idle lease's grant",
        elected - killed_at,
        elected - idle_granted
    );

    // The idle lease survived the election, with a remaining TTL that was not
    // extended beyond its grant.
    let (ttl, granted) = retry(&survivors, Duration::from_secs(15), "TimeToLive after failover", |mut c| async move {
        let r = c.lease_time_to_live(idle, None).await?;
        Ok((r.ttl(), r.granted_ttl()))
    })
    .await;
    eprintln!("idle lease remaining TTL after the failover: {ttl}s ({:?} after its grant)", idle_granted.elapsed());
    assert_eq!(granted, IDLE_TTL);
    assert!(ttl > 0 && ttl <= IDLE_TTL, "idle lease remaining TTL {ttl} after the failover");
    let idle_value = retry(&survivors, Duration::from_secs(15), "get idle after failover", |mut c| async move {
        Ok(c.get("idle", None).await?.kvs().first().map(|kv| kv.lease()))
    })
    .await;
    assert_eq!(idle_value, Some(idle), "the idle lease's key was gone right after the election");

    // It then expires: not before its TTL since the grant, and within TTL + slack of the election.
    let limit = elected + Duration::from_secs(IDLE_TTL as u64) + EXPIRY_SLACK;
    loop {
        let present = retry(&survivors, Duration::from_secs(10), "get idle", |mut c| async move {
            Ok(!c.get("idle", None).await?.kvs().is_empty())
        })
        .await;
        if !present {
            break;
        }
        assert!(
            Instant::now() < limit,
            "idle lease not expired {:?} after the election (TTL {IDLE_TTL}s)",
            elected.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired_after = idle_granted.elapsed();
    eprintln!("idle lease expired {expired_after:?} after its grant, {:?} after the election", elected.elapsed());
    assert!(
        expired_after >= Duration::from_secs(IDLE_TTL as u64 - 1),
        "idle lease expired early: {expired_after:?} after its grant"
    );
    let (ttl, _) = retry(&survivors, Duration::from_secs(10), "TimeToLive idle", |mut c| async move {
        let r = c.lease_time_to_live(idle, None).await?;
        Ok((r.ttl(), r.granted_ttl()))
    })
    .await;
    assert_eq!(ttl, -1);

    // The kept lease is still there: renewed across the failover, never answered TTL 0.
    let kept_value = retry(&survivors, Duration::from_secs(10), "get kept", |mut c| async move {
        Ok(c.get("kept", None).await?.kvs().first().map(|kv| kv.lease()))
    })
    .await;
    assert_eq!(kept_value, Some(kept), "the kept-alive lease expired across the failover");
    let (ttl, _) = retry(&survivors, Duration::from_secs(10), "TimeToLive kept", |mut c| async move {
        let r = c.lease_time_to_live(kept, None).await?;
        Ok((r.ttl(), r.granted_ttl()))
    })
    .await;
    assert!(ttl > 0 && ttl <= KEPT_TTL + 1, "kept lease remaining TTL {ttl}");
    stop.store(true, Ordering::Relaxed);
    let reopened = within(keeper).await.unwrap();
    let answers = answers.lock().unwrap().clone();
    eprintln!("{} keep-alive answers, stream reopened {reopened} times", answers.len());
    assert!(answers.len() >= 10, "too few keep-alives answered: {answers:?}");
    assert!(answers.iter().all(|t| *t == KEPT_TTL), "keep-alive answers {answers:?}");
}

/// 2,000 leases of TTL 2 s with a key each, none renewed: all expire within
/// ~10 s while plain puts keep a p99 under 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_expiring_leases() {
    let c = Cairn::start();
    burst(&c, None, 2000, MIN_TTL, Duration::from_secs(10)).await;
}

/// 10,000 leases with a key each on a 3-member cluster, granted through a
/// follower with a TTL long enough that they expire together; the leader is
/// killed (-9) while they are being revoked. Revocation (at most 1,000 per
/// second) resumes under the new leader, every key is gone within 45 s of
/// the last grant, and plain puts through the follower keep a p99 under 1 s
/// outside the election.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_leases_expiring_at_once_on_a_cluster_with_a_leader_kill() {
    let mut cluster = Cluster::start(3, &[]);
    let (l, f1, _) = roles(&cluster).await;
    let (follower, leader) = two_members(&mut cluster, f1, l);
    burst(follower, Some(leader), 10_000, 20, Duration::from_secs(45)).await;
}

/// A shared reference to member `i` and a mutable one to member `j` (`i != j`).
fn two_members(cluster: &mut Cluster, i: usize, j: usize) -> (&Cairn, &mut Cairn) {
    assert_ne!(i, j);
    let mut refs: Vec<Option<&mut Cairn>> = cluster.members.iter_mut().map(Some).collect();
    let first = refs[i].take().unwrap();
    let second = refs[j].take().unwrap();
    (first, second)
}

/// One plain put's outcome: when it was sent, how long it took, and whether
/// it succeeded within 5 s.
struct Probe {
    sent: Instant,
    took: Duration,
    ok: bool,
}

/// Grants `n` leases of `ttl` seconds through `c`, each with one key, none
/// renewed, and checks that every key is gone within `expire_within` of the
/// last grant while plain puts through `c` keep a p99 under 1 s. With
/// `kill`, that member (the leader) is killed once a quarter of the keys
/// are gone; puts may then fail only until the new leader serves them, and
/// the p99 leaves that window out.
async fn burst(c: &Cairn, mut kill: Option<&mut Cairn>, n: usize, ttl: i64, expire_within: Duration) {
    const N_WORKERS: usize = 16;
    let cl = client(c).await;
    let started = Instant::now();

    // Plain puts, one after another, for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, mut pc) = (stop.clone(), cl.clone());
        tokio::spawn(async move {
            let mut probes = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let put = pc.put(format!("probe/{}", i % 10), format!("{i}"), None);
                let ok = matches!(tokio::time::timeout(Duration::from_secs(5), put).await, Ok(Ok(_)));
                probes.push(Probe { sent, took: sent.elapsed(), ok });
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            probes
        })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..N_WORKERS {
        let (next, lost, mut wc) = (next.clone(), lost.clone(), cl.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let g = within(wc.lease_grant(ttl, None)).await.unwrap();
                let granted = Instant::now();
                assert_eq!(g.ttl(), ttl);
                match within(wc.put(format!("burst/{i:05}"), "v", Some(PutOptions::new().with_lease(g.id())))).await {
                    Ok(_) => {}
                    // Only possible if the put came a whole TTL after the grant.
                    Err(e) if granted.elapsed() >= Duration::from_millis(ttl as u64 * 1000 - 500) => {
                        assert_eq!(status(e), not_found());
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("put {i} with a lease granted {:?} ago: {e}", granted.elapsed()),
                }
            }
        }));
    }
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w).await.expect("leases granted in time").unwrap();
    }
    let created = Instant::now();
    eprintln!(
        "{n} leases and keys created in {:?} ({} lease(s) expired before their put)",
        created - started,
        lost.load(Ordering::Relaxed)
    );

    let mut cl = cl;
    let deadline = created + expire_within;
    let mut killed_at = None;
    let mut remaining = n as i64;
    loop {
        // Errors are expected only while a new leader is elected.
        let count = cl.get("burst/", Some(GetOptions::new().with_prefix().with_count_only()));
        match tokio::time::timeout(Duration::from_secs(3), count).await {
            Ok(Ok(r)) => remaining = r.count(),
            other => assert!(killed_at.is_some(), "counting the leased keys failed: {other:?}"),
        }
        if remaining == 0 || Instant::now() > deadline {
            break;
        }
        if remaining <= n as i64 * 3 / 4 {
            if let Some(leader) = kill.take() {
                leader.kill9();
                killed_at = Some(Instant::now());
                eprintln!("leader killed with {remaining} leased keys left, {:?} after the first grant", started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let probes = within(prober).await.unwrap();
    assert!(kill.is_none(), "the expiry ended before the leader could be killed");
    assert_eq!(remaining, 0, "{remaining} leased keys left {expire_within:?} after the last grant");
    eprintln!(
        "all {n} leased keys gone {:?} after the first grant, {:?} after the last",
        gone - started,
        gone - created
    );

    // The election window: from the kill until the first put sent after it
    // succeeded, plus a second for the new leader to settle.
    let outage = killed_at.map(|k| {
        let back = probes.iter().find(|p| p.sent >= k && p.ok).map(|p| p.sent + p.took).expect("puts resumed after the kill");
        eprintln!("plain puts failed or stalled for {:?} after the kill", back - k);
        (k, back + Duration::from_secs(1))
    });
    let in_outage = |t: Instant| outage.is_some_and(|(from, to)| t + Duration::from_secs(5) >= from && t < to);
    for p in &probes {
        assert!(p.ok || in_outage(p.sent), "a plain put failed outside the election window, {:?} after the first grant", p.sent - started);
    }

    // Latency of the plain puts issued while leases were expiring (from one
    // TTL after the first grant until the last key was gone).
    let expiry_start = started + Duration::from_secs(ttl as u64);
    let mut during: Vec<Duration> =
        probes.iter().filter(|p| p.sent >= expiry_start && !in_outage(p.sent)).map(|p| p.took).collect();
    let mut all: Vec<Duration> = probes.iter().filter(|p| !in_outage(p.sent)).map(|p| p.took).collect();
    during.sort();
    all.sort();
    assert!(during.len() >= 10, "only {} puts during the expiry", during.len());
    let p99 = during[(during.len() * 99 / 100).min(during.len() - 1)];
    let p99_all = all[(all.len() * 99 / 100).min(all.len() - 1)];
    eprintln!(
        "plain puts during the expiry (election window left out): {} samples, p50 {:?}, p99 {p99:?}, max {:?} (whole run: {} samples, p99 {p99_all:?})",
        during.len(),
        during[during.len() / 2],
        during.last().unwrap(),
        all.len()
    );
    assert!(p99 < Duration::from_secs(1), "put p99 {p99:?} during the expiry");
    let left = lease_ids(&mut cl).await;
    assert!(left.is_empty(), "{} leases left after all their keys expired", left.len());
}

// --- etcdctl ---------------------------------------------------------------

/// The hex id out of `lease <id> granted with TTL(<ttl>s)\n`.
fn granted_id(out: &str, ttl: i64) -> String {
    let id = out
        .strip_prefix("lease ")
        .and_then(|s| s.strip_suffix(&format!(" granted with TTL({ttl}s)\n")))
        .unwrap_or_else(|| panic!("unexpected lease grant output {out:?}"));
    assert!(id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()), "lease id {id:?} is not %016x");
    id.to_string()
}

/// The remaining seconds out of `<prefix><n>s)<suffix>`.
fn remaining(out: &str, prefix: &str, suffix: &str) -> i64 {
    out.strip_prefix(prefix)
        .and_then(|s| s.strip_suffix(suffix))
        .and_then(|n| n.strip_suffix("s)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out:?} is not {prefix}<n>s){suffix}"))
}

#[test]
fn etcdctl_lease_commands() {
    let Some(etcdctl) = common::require_tool("etcdctl") else { return };
    let cairn = Cairn::start();
    check_etcdctl(&Ctl::new(&etcdctl, &cairn));
}

/// Every lease command etcdctl has, and its output. Expects no lease to exist
/// (it checks `lease list` whole).
fn check_etcdctl(ctl: &Ctl) {
    let id = granted_id(&ctl.ok(&["lease", "grant", "60"]), 60);
    let lease_flag = format!("--lease={id}");
    assert_eq!(ctl.ok(&["put", "k", "v", &lease_flag]), "OK\n");

    let prefix = format!("lease {id} granted with TTL(60s), remaining(");
    let n = remaining(&ctl.ok(&["lease", "timetolive", &id]), &prefix, "\n");
    assert!((50..=60).contains(&n), "remaining {n}");
    let n = remaining(&ctl.ok(&["lease", "timetolive", &id, "--keys"]), &prefix, ", attached keys([k])\n");
    assert!((50..=60).contains(&n), "remaining {n}");
    assert_eq!(ctl.ok(&["lease", "list"]), format!("found 1 leases\n{id}\n"));
    assert_eq!(ctl.ok(&["lease", "keep-alive", "--once", &id]), format!("lease {id} keepalived with TTL(60)\n"));
    assert_eq!(ctl.ok(&["get", "k"]), "k\nv\n");
    // `lease keep-alive` without --once renews until killed, a line per renewal.
    // (A 3 s lease: etcdctl renews every TTL/3.)
    let short = granted_id(&ctl.ok(&["lease", "grant", "3"]), 3);
    let lines = Running::start(ctl, &["lease", "keep-alive", &short]).take(3);
    assert_eq!(lines, vec![format!("lease {short} keepalived with TTL(3)"); 3]);
    assert_eq!(ctl.ok(&["lease", "revoke", &short]), format!("lease {short} revoked\n"));

    // JSON carries the same id in decimal.
    let j = ctl.json(&["lease", "timetolive", &id, "--keys"]);
    let dec = i64::from_str_radix(&id, 16).unwrap();
    assert_eq!(j["id"], dec);
    assert_eq!(j["granted-ttl"], 60);
    assert_eq!(j["keys"], serde_json::json!(["aw=="]));

    assert_eq!(ctl.ok(&["lease", "revoke", &id]), format!("lease {id} revoked\n"));
    assert_eq!(ctl.ok(&["get", "k"]), "");
    assert_eq!(ctl.ok(&["lease", "timetolive", &id]), format!("lease {id} already expired\n"));
    assert_eq!(ctl.ok(&["lease", "timetolive", &id, "--keys"]), format!("lease {id} already expired\n"));
    assert_eq!(ctl.ok(&["lease", "list"]), "found 0 leases\n");

    // The errors etcdctl prints for a lease that is gone.
    assert_eq!(
        ctl.err(&["lease", "revoke", &id]),
        "Error: failed to revoke lease (etcdserver: requested lease not found)\n"
    );
    let out = ctl.run(&["lease", "keep-alive", "--once", &id]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.errors(), "Error: etcdserver: requested lease not found\n");
    assert_eq!(ctl.err(&["put", "k2", "v", &lease_flag]), "Error: etcdserver: requested lease not found\n");
    assert_eq!(ctl.ok(&["lease", "timetolive", "1234"]), "lease 0000000000001234 already expired\n");
    let j = ctl.json(&["lease", "timetolive", "1234"]);
    assert_eq!((j["id"].as_i64(), j["ttl"].as_i64(), j["granted-ttl"].as_i64()), (Some(0x1234), Some(-1), Some(0)));

    // The minimum and maximum TTL.
    let short = granted_id(&ctl.ok(&["lease", "grant", "1"]), MIN_TTL);
    assert_eq!(
        ctl.err(&["lease", "grant", "9000000001"]),
        "Error: failed to grant lease (etcdserver: too large lease TTL)\n"
    );
    let j = ctl.json(&["lease", "grant", "60"]);
    assert_eq!(j["TTL"], 60);
    let json_id = j["ID"].as_i64().unwrap();
    assert_eq!(ctl.ok(&["lease", "list"]).lines().next(), Some("found 2 leases"));
    let listed: BTreeSet<String> = ctl.ok(&["lease", "list"]).lines().skip(1).map(String::from).collect();
    assert_eq!(listed, [short, format!("{json_id:016x}")].into());
}

/// Leases, their attached keys and their TTLs survive `kill -9` of every
/// member of a 3-member cluster; afterwards the lease still expires on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_survive_a_restart_of_every_member() {
    let mut cluster = Cluster::start(3, &[]);
    let mut cl = client(&cluster.members[0]).await;
    let long = within(cl.lease_grant(600, None)).await.unwrap().id();
    let short = within(cl.lease_grant(6, None)).await.unwrap().id();
    within(cl.put("r/long", "v", Some(PutOptions::new().with_lease(long)))).await.unwrap();
    within(cl.put("r/short", "v", Some(PutOptions::new().with_lease(short)))).await.unwrap();
    cluster.kill_all_and_restart();
    let restarted = Instant::now();
    let mut cl = client(&cluster.members[1]).await;
    let ttl = within(cl.lease_time_to_live(long, Some(LeaseTimeToLiveOptions::new().with_keys()))).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 600);
    assert!(ttl.ttl() > 0 && ttl.ttl() <= 600, "remaining {}", ttl.ttl());
    assert_eq!(ttl.keys(), [b"r/long".to_vec()]);
    // The short lease was not renewed across the restart: it expires within
    // its TTL plus an election timeout of the new leader, taking its key.
    let deadline = restarted + Duration::from_secs(6 + 5);
    loop {
        let r = within(cl.get("r/short", None)).await.unwrap();
        if r.count() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "r/short still there {:?} after the restart", restarted.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(within(cl.get("r/long", None)).await.unwrap().count(), 1);
    let leases: HashSet<i64> = within(cl.leases()).await.unwrap().leases().iter().map(|l| l.id()).collect();
    assert_eq!(leases, HashSet::from([long]));
}

/// A lease's remaining TTL survives a leader change: checkpointed every
/// 5 s, so 8 s after a 20 s grant the new leader reports at most
/// 20 − 3 + 1 (election timeout) = 18 s, not the full 20 s, and the lease
/// still does not expire before its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remaining_ttl_is_not_reset_by_a_leader_change() {
    let mut cluster = Cluster::start(3, &[]);
    let (l, f1, _) = roles(&cluster).await;
    let mut cl = client(&cluster.members[f1]).await;
    let granted = Instant::now();
    let id = within(cl.lease_grant(20, None)).await.unwrap().id();
    within(cl.put("ckpt/k", "v", Some(PutOptions::new().with_lease(id)))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.members[l].kill9();
    let deadline = Instant::now() + Duration::from_secs(20);
    let remaining = loop {
        assert!(Instant::now() < deadline, "no answer from a new leader");
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(3), cl.lease_time_to_live(id, None)).await {
            break r.ttl();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("remaining TTL {remaining}s reported {:?} after a 20 s grant, across a leader kill", granted.elapsed());
    assert!(remaining > 0 && remaining <= 18, "remaining TTL {remaining} after the failover");
    // Not early: the key is still there before the TTL has passed.
    if granted.elapsed() < Duration::from_secs(19) {
        assert_eq!(within(cl.get("ckpt/k", None)).await.unwrap().count(), 1);
    }
}

/// Every check above on a 3-member cluster, with `kill -9` of the leader in
/// the middle: grants and writes go through one follower and reads and
/// watches through the other; leases granted before the kill keep their
/// keys and TTLs across it; the checks after it run on the two survivors;
/// and etcdctl's commands run through the old leader once it is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_checks_on_a_cluster_with_a_leader_kill() {
    let mut cluster = Cluster::start(3, &[]);
    let (l, f1, f2) = roles(&cluster).await;
    let mut p = Pair::of(&cluster.members[f1], &cluster.members[f2]).await;
    check_grant(&mut p).await;
    revoke_all(&mut p.a).await;
    check_put_attach(&mut p).await;
    revoke_all(&mut p.a).await;
    check_revoke(&mut p).await;
    revoke_all(&mut p.a).await;

    // Leases that live across the kill, a key each.
    let mut held = Vec::new();
    for i in 0..3 {
        let id = within(p.a.lease_grant(60, None)).await.unwrap().id();
        within(p.a.put(format!("held/{i}"), "v", Some(PutOptions::new().with_lease(id)))).await.unwrap();
        held.push(id);
    }
    let old_leader = within(p.b.status()).await.unwrap().leader();
    cluster.members[l].kill9();
    let killed = Instant::now();
    let survivors = [cluster.members[f1].endpoint(), cluster.members[f2].endpoint()];
    let new_leader = wait_new_leader(&survivors, old_leader).await;
    eprintln!("leader {old_leader:x} killed; {new_leader:x} leads {:?} later", killed.elapsed());
    // The first write after an election may still meet the old term.
    retry(&survivors, Duration::from_secs(15), "put after the election", |mut c| async move {
        c.put("after-kill", "v", None).await
    })
    .await;
    for (i, id) in held.iter().enumerate() {
        for c in [&mut p.a, &mut p.b] {
            let r = within(c.lease_time_to_live(*id, Some(LeaseTimeToLiveOptions::new().with_keys()))).await.unwrap();
            assert_eq!(r.granted_ttl(), 60);
            assert!(r.ttl() > 30 && r.ttl() <= 60, "held lease {id:#x}: remaining {} after the kill", r.ttl());
            assert_eq!(r.keys(), [format!("held/{i}").into_bytes()]);
        }
    }
    revoke_all(&mut p.a).await;
    assert_eq!(within(p.b.get("held/", Some(GetOptions::new().with_prefix()))).await.unwrap().count(), 0);

    check_time_to_live(&mut p).await;
    revoke_all(&mut p.a).await;
    check_keep_alive_stream(&mut p).await;
    revoke_all(&mut p.a).await;
    check_expiry(&mut p).await;
    revoke_all(&mut p.a).await;

    cluster.members[l].restart();
    match common::require_tool("etcdctl") {
        Some(etcdctl) => {
            let ctl = Ctl::new(&etcdctl, &cluster.members[l]);
            tokio::task::spawn_blocking(move || check_etcdctl(&ctl)).await.unwrap();
        }
        None => eprintln!("etcdctl part skipped (see above)"),
    }
    // All three members list the same leases.
    let mut lists = Vec::new();
    for m in &cluster.members {
        lists.push(lease_ids(&mut client(m).await).await);
    }
    assert_eq!(lists[0].len(), 2, "{lists:?}");
    assert!(lists.iter().all(|l| *l == lists[0]), "members disagree on the leases: {lists:?}");
}

/// A lease renewed after the leader checkpointed its remaining TTL keeps
/// the renewal's full TTL across a leader kill: the next leader must not
/// resume it from the older checkpoint (etcd clears the checkpoint when it
/// renews). Two checkpoints (every 5 s) record ~10 s left of 20 before the
/// renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewal_after_a_checkpoint_holds_across_a_leader_failover() {
    const TTL: i64 = 20;
    let mut cluster = Cluster::start(3, &[]);
    let (l, f1, f2) = roles(&cluster).await;
    let old_leader = within(client(&cluster.members[l]).await.status()).await.unwrap().leader();
    let survivors = vec![cluster.members[f1].endpoint(), cluster.members[f2].endpoint()];
    let mut c1 = client(&cluster.members[f1]).await;
    let id = within(c1.lease_grant(TTL, None)).await.unwrap().id();
    within(c1.put("renewed", "v", Some(PutOptions::new().with_lease(id)))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (ka, first) = KeepAlive::open(&survivors[0], id).await;
    let renewed = Instant::now();
    assert_eq!(first.ttl, TTL);
    drop(ka);
    cluster.members[l].kill9();
    wait_new_leader(&survivors, old_leader).await;
    let ttl = retry(&survivors, Duration::from_secs(15), "TimeToLive after failover", |mut c| async move {
        Ok(c.lease_time_to_live(id, None).await?.ttl())
    })
    .await;
    // Whole seconds, truncated: at least what the renewal promised, less 1.
    let promised = TTL - renewed.elapsed().as_secs_f64().ceil() as i64;
    eprintln!("remaining TTL after the failover: {ttl}s, {:?} after the renewal", renewed.elapsed());
    assert!(ttl >= promised - 1, "the new leader resumed from an older checkpoint: {ttl}s left, {promised}s promised");
    let present = retry(&survivors, Duration::from_secs(10), "get renewed", |mut c| async move {
        Ok(c.get("renewed", None).await?.kvs().len())
    })
    .await;
    assert_eq!(present, 1);
}
