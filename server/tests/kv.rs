//! The KV service through the real binary, with the `etcd-client` crate (what
//! Rust users of etcd run) and, for malformed requests etcd-client cannot
//! build, with raw generated stubs.

mod common;

use cairn_api::etcdserverpb as pb;
use common::Cairn;
use etcd_client::{
    Client, Compare, CompareOp, CompactionOptions, DeleteOptions, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tonic::Code;

async fn client(c: &Cairn) -> Client {
    Client::connect([c.endpoint()], None).await.expect("connect")
}

async fn raw(c: &Cairn) -> pb::kv_client::KvClient<tonic::transport::Channel> {
    pb::kv_client::KvClient::connect(c.endpoint()).await.expect("connect").max_decoding_message_size(64 << 20)
}

/// The gRPC status behind an etcd-client error.
fn status(e: etcd_client::Error) -> (Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn keys(kvs: &[etcd_client::KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| kv.key_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn put_get_revisions_versions() {
    let c = Cairn::start();
    let mut cl = client(&c).await;

    let r = cl.get("missing", None).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 1, "an empty store is at revision 1");
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 0);

    let p = cl.put("k", "v1", None).await.unwrap();
    assert_eq!(p.header().unwrap().revision(), 2);
    assert!(p.prev_key().is_none());
    let p = cl.put("k", "v2", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(p.header().unwrap().revision(), 3);
    assert_eq!(p.prev_key().unwrap().value(), b"v1");

    let kv = cl.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.create_revision(), kv.mod_revision(), kv.version()), (2, 3, 2));
    assert_eq!(kv.value(), b"v2");
    assert_eq!(kv.lease(), 0);

    // Delete ends the generation; a new put starts version 1 again.
    let d = cl.delete("k", Some(DeleteOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(d.deleted(), 1);
    assert_eq!(d.header().unwrap().revision(), 4);
    assert_eq!(d.prev_kvs()[0].value(), b"v2");
    cl.put("k", "v3", None).await.unwrap();
    let kv = cl.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.create_revision(), kv.mod_revision(), kv.version()), (5, 5, 1));

    // History.
    let at = |rev| GetOptions::new().with_revision(rev);
    assert_eq!(cl.get("k", Some(at(2))).await.unwrap().kvs()[0].value(), b"v1");
    assert_eq!(cl.get("k", Some(at(3))).await.unwrap().kvs()[0].value(), b"v2");
    assert!(cl.get("k", Some(at(4))).await.unwrap().kvs().is_empty());
    let r = cl.get("k", Some(at(3))).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 5, "header carries the current revision");

    // Deleting nothing does not create a revision.
    let d = cl.delete("nothing", None).await.unwrap();
    assert_eq!(d.deleted(), 0);
    assert_eq!(d.header().unwrap().revision(), 5);

    let h = r.header().unwrap();
    assert_eq!(format!("{:x}", h.member_id()), "8e9e05c52164694d");
    assert_eq!(format!("{:x}", h.cluster_id()), "cdf818194e3a8c32");
    assert!(h.raft_term() >= 1);
}

#[tokio::test]
async fn ranges_prefix_from_key_limit_sort_filters() {
    let c = Cairn::start();
    let mut cl = client(&c).await;
    // Created in this order: revisions 2..=7.
    for (k, v) in [("b", "3"), ("a", "9"), ("ab", "1"), ("abc", "5"), ("c", "2"), ("a\u{7f}", "0")] {
        cl.put(k, v, None).await.unwrap();
    }
    cl.put("b", "4", None).await.unwrap(); // b: version 2, mod 8

    let r = cl.get("a", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(keys(r.kvs()), ["a", "ab", "abc", "a\u{7f}"]);
    assert_eq!(r.count(), 4);

    let r = cl.get("ab", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(keys(r.kvs()), ["ab", "abc", "a\u{7f}", "b", "c"]);

    let r = cl.get("ab", Some(GetOptions::new().with_range("b"))).await.unwrap();
    assert_eq!(keys(r.kvs()), ["ab", "abc", "a\u{7f}"]);

    // key "\0" with range_end "\0": every key.
    let r = cl.get("\0", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(r.count(), 6);
    let r = cl.get("", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(r.count(), 6, "etcd-client sends the empty prefix as \\0..\\0");

    let r = cl.get("a", Some(GetOptions::new().with_prefix().with_limit(2))).await.unwrap();
    assert_eq!(keys(r.kvs()), ["a", "ab"]);
    assert!(r.more());
    assert_eq!(r.count(), 4, "count ignores limit");
    let r = cl.get("a", Some(GetOptions::new().with_prefix().with_limit(4))).await.unwrap();
    assert!(!r.more());

    let sorted = |t, o| GetOptions::new().with_from_key().with_sort(t, o);
    let r = cl.get("\0", Some(sorted(SortTarget::Key, SortOrder::Descend))).await.unwrap();
    assert_eq!(keys(r.kvs()), ["c", "b", "a\u{7f}", "abc", "ab", "a"]);
    let r = cl.get("\0", Some(sorted(SortTarget::Value, SortOrder::Ascend))).await.unwrap();
    assert_eq!(keys(r.kvs()), ["a\u{7f}", "ab", "c", "b", "abc", "a"]);
    let r = cl.get("\0", Some(sorted(SortTarget::Create, SortOrder::Descend))).await.unwrap();
    assert_eq!(keys(r.kvs()), ["a\u{7f}", "c", "abc", "ab", "a", "b"]);
    let r = cl.get("\0", Some(sorted(SortTarget::Mod, SortOrder::Descend).with_limit(2))).await.unwrap();
    assert_eq!(keys(r.kvs()), ["b", "a\u{7f}"]);
    assert!(r.more());
    let r = cl.get("\0", Some(sorted(SortTarget::Version, SortOrder::Descend).with_limit(1))).await.unwrap();
    assert_eq!(keys(r.kvs()), ["b"]);
    // A non-key target with no order sorts ascending (etcd's rule).
    let r = cl.get("\0", Some(sorted(SortTarget::Value, SortOrder::None))).await.unwrap();
    assert_eq!(keys(r.kvs())[0], "a\u{7f}");

    let r = cl.get("\0", Some(GetOptions::new().with_from_key().with_keys_only())).await.unwrap();
    assert!(r.kvs().iter().all(|kv| kv.value().is_empty()));
    assert_eq!(r.kvs().len(), 6);
    let r = cl.get("\0", Some(GetOptions::new().with_from_key().with_count_only())).await.unwrap();
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 6);

    let r = cl
        .get("\0", Some(GetOptions::new().with_from_key().with_min_mod_revision(4).with_max_mod_revision(6)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["ab", "abc", "c"]);
    assert_eq!(r.count(), 6, "count ignores the revision filters");
    let r = cl
        .get("\0", Some(GetOptions::new().with_from_key().with_min_create_revision(6).with_limit(1)))
        .await
        .unwrap();
    assert_eq!(keys(r.kvs()), ["a\u{7f}"]);
    assert!(r.more());

    let r = cl.get("a", Some(GetOptions::new().with_prefix().with_serializable())).await.unwrap();
    assert_eq!(r.count(), 4);
}

#[tokio::test]
async fn put_flags_and_their_errors() {
    let c = Cairn::start();
    let mut cl = client(&c).await;
    cl.put("k", "v", None).await.unwrap();

    let p = cl.put("k", "", Some(PutOptions::new().with_ignore_value().with_prev_key())).await.unwrap();
    assert_eq!(p.prev_key().unwrap().value(), b"v");
    let kv = cl.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.version()), (&b"v"[..], 2));
    cl.put("k", "w", Some(PutOptions::new().with_ignore_lease())).await.unwrap();
    assert_eq!(cl.get("k", None).await.unwrap().kvs()[0].value(), b"w");

    let cases: Vec<(&str, &str, PutOptions, Code, &str)> = vec![
        ("missing", "", PutOptions::new().with_ignore_value(), Code::InvalidArgument, "etcdserver: key not found"),
        ("missing", "x", PutOptions::new().with_ignore_lease(), Code::InvalidArgument, "etcdserver: key not found"),
        ("k", "x", PutOptions::new().with_ignore_value(), Code::InvalidArgument, "etcdserver: value is provided"),
        ("k", "x", PutOptions::new().with_ignore_lease().with_lease(5), Code::InvalidArgument, "etcdserver: lease is provided"),
        ("k", "x", PutOptions::new().with_lease(12345), Code::NotFound, "etcdserver: requested lease not found"),
        ("", "x", PutOptions::new(), Code::InvalidArgument, "etcdserver: key is not provided"),
    ];
    let before = cl.get("k", None).await.unwrap().header().unwrap().revision();
    for (k, v, opts, code, msg) in cases {
        let e = status(cl.put(k, v, Some(opts)).await.unwrap_err());
        assert_eq!(e, (code, msg.to_string()), "put {k:?}");
    }
    let after = cl.get("k", None).await.unwrap();
    assert_eq!(after.header().unwrap().revision(), before, "failed puts change nothing");
    assert!(cl.get("missing", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn delete_ranges() {
    let c = Cairn::start();
    let mut cl = client(&c).await;
    for k in ["a", "a1", "a2", "b", "c"] {
        cl.put(k, k, None).await.unwrap();
    }
    let d = cl.delete("a", Some(DeleteOptions::new().with_prefix().with_prev_key())).await.unwrap();
    assert_eq!(d.deleted(), 3);
    assert_eq!(keys(d.prev_kvs()), ["a", "a1", "a2"]);
    let rev = d.header().unwrap().revision();
    assert_eq!(rev, 7, "one revision for every key deleted");
    // All three tombstones share the revision: nothing is visible right after it.
    let r = cl.get("a", Some(GetOptions::new().with_prefix().with_revision(6))).await.unwrap();
    assert_eq!(r.count(), 3);
    let r = cl.get("a", Some(GetOptions::new().with_prefix().with_revision(7))).await.unwrap();
    assert_eq!(r.count(), 0);

    let d = cl.delete("b", Some(DeleteOptions::new().with_from_key())).await.unwrap();
    assert_eq!(d.deleted(), 2);
    assert_eq!(cl.get("\0", Some(GetOptions::new().with_from_key())).await.unwrap().count(), 0);
    let e = status(cl.delete("", None).await.unwrap_err());
    assert_eq!(e, (Code::InvalidArgument, "etcdserver: key is not provided".into()));
}

#[tokio::test]
async fn txn_compares_branches_and_one_revision() {
    let c = Cairn::start();
    let mut cl = client(&c).await;
    cl.put("k", "v", None).await.unwrap(); // rev 2
    cl.put("x1", "1", None).await.unwrap(); // rev 3
    cl.put("x2", "2", None).await.unwrap(); // rev 4

    let t = Txn::new()
        .when([
            Compare::value("k", CompareOp::Equal, "v"),
            Compare::version("k", CompareOp::Equal, 1),
            Compare::create_revision("k", CompareOp::Less, 3),
            Compare::mod_revision("k", CompareOp::NotEqual, 99),
            Compare::lease("k", CompareOp::Equal, 0),
        ])
        .and_then([TxnOp::put("k", "v2", None), TxnOp::put("n", "new", None), TxnOp::get("k", None), TxnOp::delete("x1", None)])
        .or_else([TxnOp::put("failed", "1", None)]);
    let r = cl.txn(t).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 5);
    let resps = r.op_responses();
    assert_eq!(resps.len(), 4);
    match &resps[2] {
        TxnOpResponse::Get(g) => {
            assert_eq!(g.kvs()[0].value(), b"v2", "reads inside a txn see its earlier writes");
            assert_eq!(g.kvs()[0].mod_revision(), 5);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Every write landed at revision 5.
    for k in ["k", "n"] {
        assert_eq!(cl.get(k, None).await.unwrap().kvs()[0].mod_revision(), 5);
    }
    assert!(cl.get("x1", None).await.unwrap().kvs().is_empty());

    // Failing compare runs the failure branch.
    let r = cl
        .txn(Txn::new().when([Compare::value("k", CompareOp::Equal, "nope")]).or_else([TxnOp::put("failed", "1", None)]))
        .await
        .unwrap();
    assert!(!r.succeeded());
    assert_eq!(cl.get("failed", None).await.unwrap().kvs()[0].value(), b"1");

    // A value compare on a missing key always fails; other targets compare to 0.
    let r = cl.txn(Txn::new().when([Compare::value("absent", CompareOp::NotEqual, "x")])).await.unwrap();
    assert!(!r.succeeded());
    let r = cl.txn(Txn::new().when([Compare::create_revision("absent", CompareOp::Equal, 0)])).await.unwrap();
    assert!(r.succeeded());

    // Range compare: every key in [x, y) must satisfy it.
    let r = cl
        .txn(Txn::new().when([Compare::mod_revision("x", CompareOp::Greater, 3).with_range("y")]))
        .await
        .unwrap();
    assert!(r.succeeded(), "only x2 (mod 4) is left in range");
    let r = cl
        .txn(Txn::new().when([Compare::mod_revision("a", CompareOp::Greater, 4).with_range("z")]))
        .await
        .unwrap();
    assert!(!r.succeeded(), "x2 has mod 4");

    // A read-only txn does not bump the revision.
    let before = cl.get("k", None).await.unwrap().header().unwrap().revision();
    let r = cl.txn(Txn::new().and_then([TxnOp::get("k", None)])).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), before);

    // Nested txn: its compare sees the state before the outer txn's writes.
    let nested = Txn::new()
        .when([Compare::value("k", CompareOp::Equal, "v2")])
        .and_then([TxnOp::put("inner", "yes", None)])
        .or_else([TxnOp::put("inner", "no", None)]);
    let r = cl.txn(Txn::new().and_then([TxnOp::put("k", "v3", None), TxnOp::txn(nested)])).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(cl.get("inner", None).await.unwrap().kvs()[0].value(), b"yes");
    assert_eq!(cl.get("inner", None).await.unwrap().kvs()[0].mod_revision(), r.header().unwrap().revision());
}

#[tokio::test]
async fn txn_validation_errors_change_nothing() {
    let c = Cairn::start_with(&["--max-txn-ops=4"]);
    let mut cl = client(&c).await;
    let mut kv = raw(&c).await;
    cl.put("a", "1", None).await.unwrap();
    let rev = 2;

    let put = |k: &str| pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(pb::PutRequest { key: k.into(), value: b"x".to_vec(), ..Default::default() })) };
    let del = |k: &str, end: &str| pb::RequestOp { request: Some(pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest { key: k.into(), range_end: end.into(), ..Default::default() })) };
    let txn = |success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>| pb::TxnRequest { compare: vec![], success, failure };
    let nested = |t: pb::TxnRequest| pb::RequestOp { request: Some(pb::request_op::Request::RequestTxn(t)) };

    let cases = vec![
        (txn(vec![put("a"), put("a")], vec![]), "etcdserver: duplicate key given in txn request"),
        (txn(vec![del("a", "c"), put("b")], vec![]), "etcdserver: duplicate key given in txn request"),
        (txn(vec![put("b"), nested(txn(vec![put("b")], vec![]))], vec![]), "etcdserver: duplicate key given in txn request"),
        // A put that keeps the old value cannot follow a from-key delete of its key
        // (etcd 3.6 accepts this and then panics applying it).
        (
            txn(
                vec![
                    del("a", "\0"),
                    pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(pb::PutRequest { key: b"a".to_vec(), ignore_value: true, ..Default::default() })) },
                ],
                vec![],
            ),
            "etcdserver: duplicate key given in txn request",
        ),
        (txn(vec![put("1"), put("2"), put("3"), put("4"), put("5")], vec![]), "etcdserver: too many operations in txn request"),
        (txn(vec![], vec![put("1"), put("2"), put("3"), put("4"), put("5")]), "etcdserver: too many operations in txn request"),
        // Nested txns get what the parent left: 4 - 3 = 1 op.
        (txn(vec![put("1"), put("2"), nested(txn(vec![put("3"), put("4")], vec![]))], vec![]), "etcdserver: too many operations in txn request"),
        (txn(vec![put("")], vec![]), "etcdserver: key is not provided"),
        (txn(vec![pb::RequestOp { request: None }], vec![]), "etcdserver: key not found"),
    ];
    for (t, msg) in cases {
        let e = kv.txn(t.clone()).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg), "{t:?}");
    }
    // The two branches are exclusive: the same key in both is fine.
    kv.txn(txn(vec![nested(txn(vec![put("z")], vec![put("z")]))], vec![])).await.unwrap();
    // A put in both branches of a txn is fine too.
    kv.txn(txn(vec![put("y")], vec![put("y")])).await.unwrap();

    let r = cl.get("\0", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(keys(r.kvs()), ["a", "y", "z"]);
    assert_eq!(r.header().unwrap().revision(), rev + 2);

    // A txn whose chosen branch reads a compacted or future revision fails as a whole.
    let range_at = |rev: i64| pb::RequestOp { request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest { key: b"a".to_vec(), revision: rev, ..Default::default() })) };
    let e = kv.txn(txn(vec![put("w"), range_at(100)], vec![])).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision"));
    assert!(cl.get("w", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn range_errors() {
    let c = Cairn::start();
    let mut cl = client(&c).await;
    let mut kv = raw(&c).await;
    cl.put("a", "1", None).await.unwrap();
    let e = status(cl.get("", None).await.unwrap_err());
    assert_eq!(e, (Code::InvalidArgument, "etcdserver: key is not provided".into()));
    let e = status(cl.get("a", Some(GetOptions::new().with_revision(3))).await.unwrap_err());
    assert_eq!(e, (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".into()));
    for (order, target) in [(7, 0), (0, 9), (-1, 0)] {
        let e = kv
            .range(pb::RangeRequest { key: b"a".to_vec(), sort_order: order, sort_target: target, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "etcdserver: invalid sort option"));
    }
}

#[tokio::test]
async fn compaction() {
    let c = Cairn::start_with(&["--compaction-batch-limit=2"]);
    let mut cl = client(&c).await;
    for i in 0..10 {
        cl.put("k", format!("v{i}"), None).await.unwrap(); // revs 2..=11
    }
    cl.put("gone", "x", None).await.unwrap(); // 12
    cl.delete("gone", None).await.unwrap(); // 13

    let r = cl.compact(6, Some(CompactionOptions::new().with_physical())).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 13);
    let e = status(cl.get("k", Some(GetOptions::new().with_revision(5))).await.unwrap_err());
    assert_eq!(e, (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into()));
    assert_eq!(cl.get("k", Some(GetOptions::new().with_revision(6))).await.unwrap().kvs()[0].value(), b"v4");
    assert_eq!(cl.get("k", Some(GetOptions::new().with_revision(11))).await.unwrap().kvs()[0].value(), b"v9");

    for (rev, code, msg) in [
        (6, Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted"),
        (3, Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted"),
        (14, Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision"),
    ] {
        assert_eq!(status(cl.compact(rev, None).await.unwrap_err()), (code, msg.to_string()), "compact {rev}");
    }
    // Compacting to the current revision is allowed; the deleted key's history goes.
    cl.compact(13, Some(CompactionOptions::new().with_physical())).await.unwrap();
    let r = cl.get("k", Some(GetOptions::new().with_revision(13))).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"v9");
    assert_eq!(r.kvs()[0].version(), 10, "version survives compaction");
    assert!(cl.get("gone", None).await.unwrap().kvs().is_empty());
    // The next write continues the revision sequence and the key's version.
    let p = cl.put("k", "v10", None).await.unwrap();
    assert_eq!(p.header().unwrap().revision(), 14);
    assert_eq!(cl.get("k", None).await.unwrap().kvs()[0].version(), 11);
}

#[tokio::test]
async fn request_size_limit() {
    let c = Cairn::start_with(&["--max-request-bytes=1024"]);
    let mut cl = client(&c).await;
    let e = status(cl.put("k", vec![b'x'; 2000], None).await.unwrap_err());
    assert_eq!(e, (Code::InvalidArgument, "etcdserver: request is too large".into()));
    assert!(cl.get("k", None).await.unwrap().kvs().is_empty());
    cl.put("k", vec![b'x'; 900], None).await.unwrap();
    // Beyond the limit plus gRPC's overhead, the transport refuses to decode it, with grpc-go's words.
    let e = status(cl.put("k", vec![b'x'; 2 << 20], None).await.unwrap_err());
    assert_eq!(e.0, Code::ResourceExhausted, "{e:?}");
    assert!(e.1.starts_with("grpc: received message larger than max ("), "{e:?}");
    // Responses are not limited.
    let r = cl.get("k", None).await.unwrap();
    assert_eq!(r.kvs()[0].value().len(), 900);
}

#[tokio::test]
async fn status_and_http_endpoints() {
    let c = Cairn::start();
    let mut cl = client(&c).await;
    cl.put("a", "b", None).await.unwrap();
    let s = cl.status().await.unwrap();
    assert_eq!(s.version(), "3.6.0");
    assert_eq!(s.leader(), s.header().unwrap().member_id());
    assert!(s.raft_index() >= 1);
    assert!(s.raft_term() >= 1);
    assert!(s.db_size() > 0);
    assert_eq!(s.header().unwrap().revision(), 2);

    let (code, body) = common::http_get(c.port, "/health").unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["health"], "true");
    let (code, body) = common::http_get(c.port, "/version").unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["etcdserver"], "3.6.0");
    assert_eq!(v["etcdcluster"], "3.6.0");

    // Services that do not exist yet answer Unimplemented.
    let e = cl.lock("lock-name", None).await.unwrap_err();
    assert_eq!(status(e).0, Code::Unimplemented);
}

#[tokio::test]
async fn hash_kv_and_defragment() {
    let c = Cairn::start();
    let mut cl = client(&c).await;
    for i in 0..20 {
        cl.put(format!("k{}", i % 5), format!("v{i}"), None).await.unwrap();
    }
    let h = cl.hash_kv(0).await.unwrap();
    assert_eq!(h.header().unwrap().revision(), 21);
    assert_eq!(cl.hash_kv(0).await.unwrap().hash(), h.hash(), "stable while nothing changes");
    let at10 = cl.hash_kv(10).await.unwrap().hash();
    assert_ne!(at10, h.hash());
    cl.put("k0", "new", None).await.unwrap();
    assert_ne!(cl.hash_kv(0).await.unwrap().hash(), h.hash());
    assert_eq!(cl.hash_kv(21).await.unwrap().hash(), h.hash(), "history does not change");
    let e = status(cl.hash_kv(99).await.unwrap_err());
    assert_eq!(e, (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".into()));

    cl.compact(15, Some(CompactionOptions::new().with_physical())).await.unwrap();
    let e = status(cl.hash_kv(10).await.unwrap_err());
    assert_eq!(e, (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into()));
    cl.defragment().await.unwrap();
    let r = cl.get("k", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(r.count(), 5);
    assert_eq!(cl.hash_kv(22).await.unwrap().hash(), cl.hash_kv(0).await.unwrap().hash());
}
