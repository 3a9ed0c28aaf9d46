//! The kv revision-order checker on hand-made histories: a valid one passes,
//! and each kind of violation is caught, including around writes whose
//! outcome is unknown.

use serde_json::Value;

use cairn_jepsen::checker::kv::{self, AnomalyKind, KvReport};
use cairn_jepsen::history::{Event, EventType};
use cairn_jepsen::ops::{
    Compare, CompareTarget, DeleteRequest, DeleteResponse, Kv, PutRequest, PutResponse,
    RangeRequest, RangeResponse, Request, Response, TxnOp, TxnOpResponse, TxnRequest, TxnResponse,
};

enum Done {
    Ok(Response, i64),
    Fail,
    Info,
}

/// A history under construction: operations with explicit call and return
/// times, sorted into events at the end.
#[derive(Default)]
struct History {
    timed: Vec<(u64, u8, Event)>,
}

impl History {
    fn op(&mut self, process: u64, call: u64, ret: u64, request: Request, done: Done) -> &mut Self {
        let f = request.function().to_string();
        let event = |kind, value: Value, t_ns, rev| Event {
            index: 0,
            kind,
            process,
            f: f.clone(),
            key: None,
            value,
            t_ns,
            node: None,
            error: None,
            rev,
        };
        self.timed.push((
            call,
            0,
            event(
                EventType::Invoke,
                serde_json::to_value(&request).unwrap(),
                call,
                None,
            ),
        ));
        let completion = match done {
            Done::Ok(response, rev) => event(
                EventType::Ok,
                serde_json::to_value(&response).unwrap(),
                ret,
                Some(rev),
            ),
            Done::Fail => event(EventType::Fail, Value::Null, ret, None),
            Done::Info => event(EventType::Info, Value::Null, ret, None),
        };
        self.timed.push((ret, 1, completion));
        self
    }

    fn check(&self) -> KvReport {
        let mut timed: Vec<_> = self.timed.clone();
        timed.sort_by_key(|(t, kind, _)| (*t, *kind));
        let events: Vec<Event> = timed
            .into_iter()
            .enumerate()
            .map(|(i, (_, _, mut e))| {
                e.index = i as u64;
                e
            })
            .collect();
        let report = kv::check(&events).expect("a well-formed history");
        for a in &report.anomalies {
            println!(
                "{}: {} (ops {:?}, keys {:?})",
                a.kind, a.message, a.ops, a.keys
            );
        }
        report
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        lease: 0,
    })
}

fn put_ok(prev: Option<Kv>) -> Response {
    Response::Put(PutResponse { prev_kv: prev })
}

fn get(key: &str) -> Request {
    Request::Range(RangeRequest {
        key: key.into(),
        prefix: false,
        limit: 0,
        revision: 0,
        serializable: false,
    })
}

fn list(prefix: &str, limit: i64) -> Request {
    Request::Range(RangeRequest {
        key: prefix.into(),
        prefix: true,
        limit,
        revision: 0,
        serializable: false,
    })
}

fn get_at(key: &str, revision: i64) -> Request {
    Request::Range(RangeRequest {
        key: key.into(),
        prefix: false,
        limit: 0,
        revision,
        serializable: false,
    })
}

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Kv {
    Kv {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease: 0,
    }
}

fn found(kvs: Vec<Kv>) -> Response {
    Response::Range(RangeResponse {
        count: kvs.len() as i64,
        kvs,
        more: false,
    })
}

fn delete(key: &str) -> Request {
    Request::Delete(DeleteRequest { key: key.into() })
}

fn deleted(prev: Vec<Kv>) -> Response {
    Response::Delete(DeleteResponse {
        deleted: prev.len() as i64,
        prev_kvs: prev,
    })
}

/// If `key`'s mod revision is `m`, put `value`; otherwise read `key`.
fn cas(key: &str, m: i64, value: &str) -> Request {
    Request::Txn(TxnRequest {
        compare: vec![Compare {
            key: key.into(),
            target: CompareTarget::ModRevision(m),
        }],
        success: vec![TxnOp::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            lease: 0,
        })],
        failure: vec![TxnOp::Range(RangeRequest {
            key: key.into(),
            prefix: false,
            limit: 0,
            revision: 0,
            serializable: false,
        })],
    })
}

fn cas_succeeded(prev: Kv) -> Response {
    Response::Txn(TxnResponse {
        succeeded: true,
        results: vec![TxnOpResponse::Put(PutResponse {
            prev_kv: Some(prev),
        })],
    })
}

fn cas_failed(current: Vec<Kv>) -> Response {
    Response::Txn(TxnResponse {
        succeeded: false,
        results: vec![TxnOpResponse::Range(RangeResponse {
            count: current.len() as i64,
            kvs: current,
            more: false,
        })],
    })
}

fn assert_only(report: &KvReport, kind: AnomalyKind) {
    assert!(!report.valid(), "expected {kind}, got a valid verdict");
    assert!(
        report.counts.keys().all(|&k| k == kind),
        "expected only {kind}, got {:?}",
        report.counts
    );
}

/// A valid history with every kind of operation: puts, a prefix list with a
/// limit, a delete, CAS both ways, concurrent operations, a write with
/// unknown outcome resolved by a later read and one never seen, a historical
/// read and a serializable read at an older revision.
fn valid_history() -> History {
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(2, 5, 15, put("/k/b", "2.1"), Done::Ok(put_ok(None), 3))
        .op(
            3,
            20,
            30,
            list("/k/", 1),
            Done::Ok(
                Response::Range(RangeResponse {
                    kvs: vec![kv("/k/a", "1.1", 2, 2, 1)],
                    count: 2,
                    more: true,
                }),
                3,
            ),
        )
        // Unknown outcome, seen later at revision 4.
        .op(1, 31, 40, put("/k/a", "1.2"), Done::Info)
        // Unknown outcome, never seen.
        .op(4, 32, 45, put("/k/c", "4.1"), Done::Info)
        .op(
            2,
            50,
            60,
            get("/k/a"),
            Done::Ok(found(vec![kv("/k/a", "1.2", 2, 4, 2)]), 5),
        )
        .op(
            2,
            61,
            70,
            cas("/k/a", 4, "2.2"),
            Done::Ok(cas_succeeded(kv("/k/a", "1.2", 2, 4, 2)), 6),
        )
        .op(
            3,
            62,
            71,
            cas("/k/b", 2, "3.1"),
            Done::Ok(cas_failed(vec![kv("/k/b", "2.1", 3, 3, 1)]), 6),
        )
        .op(
            3,
            72,
            80,
            delete("/k/b"),
            Done::Ok(deleted(vec![kv("/k/b", "2.1", 3, 3, 1)]), 7),
        )
        .op(
            1,
            81,
            90,
            get_at("/k/a", 3),
            Done::Ok(found(vec![kv("/k/a", "1.1", 2, 2, 1)]), 7),
        )
        .op(2, 81, 90, get("/k/b"), Done::Ok(found(vec![]), 7))
        .op(
            4,
            91,
            95,
            Request::Range(RangeRequest {
                key: "/k/a".into(),
                prefix: false,
                limit: 0,
                revision: 0,
                serializable: true,
            }),
            Done::Ok(found(vec![kv("/k/a", "1.2", 2, 4, 2)]), 5),
        )
        .op(5, 96, 99, put("/k/b", "5.1"), Done::Fail);
    h
}

#[test]
fn a_valid_history_passes() {
    let report = valid_history().check();
    assert!(report.valid(), "{:?}", report.counts);
    assert_eq!(report.resolved, 1);
    assert_eq!(report.writes, 4);
    assert!(report.reads_checked >= 8, "{}", report.reads_checked);
}

#[test]
fn duplicate_revisions_are_caught() {
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(2, 0, 10, put("/k/b", "2.1"), Done::Ok(put_ok(None), 2));
    assert_only(&h.check(), AnomalyKind::DuplicateRevision);
}

#[test]
fn stale_reads_are_caught() {
    // The read is at revision 3, after the second write, yet returns the
    // first write's value.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(
            1,
            11,
            20,
            put("/k/a", "1.2"),
            Done::Ok(put_ok(Some(kv("/k/a", "1.1", 2, 2, 1))), 3),
        )
        .op(
            2,
            21,
            30,
            get("/k/a"),
            Done::Ok(found(vec![kv("/k/a", "1.1", 2, 2, 1)]), 3),
        );
    assert_only(&h.check(), AnomalyKind::ReadMismatch);
}

#[test]
fn reads_that_do_not_match_the_replay_are_caught() {
    // A key that was put and never deleted is missing.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(2, 11, 20, get("/k/a"), Done::Ok(found(vec![]), 2));
    assert_only(&h.check(), AnomalyKind::ReadMismatch);

    // A wrong count on a prefix list.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(1, 11, 20, put("/k/b", "1.2"), Done::Ok(put_ok(None), 3))
        .op(
            2,
            21,
            30,
            list("/k/", 1),
            Done::Ok(
                Response::Range(RangeResponse {
                    kvs: vec![kv("/k/a", "1.1", 2, 2, 1)],
                    count: 1,
                    more: false,
                }),
                3,
            ),
        );
    assert_only(&h.check(), AnomalyKind::ReadMismatch);

    // A wrong version.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(
            2,
            11,
            20,
            get("/k/a"),
            Done::Ok(found(vec![kv("/k/a", "1.1", 2, 2, 3)]), 2),
        );
    assert_only(&h.check(), AnomalyKind::ReadMismatch);
}

#[test]
fn real_time_violations_are_caught() {
    // The read sees revision 2 although the write of revision 3 returned
    // before it started: its content matches revision 2, but it is stale.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(1, 11, 20, put("/k/b", "1.2"), Done::Ok(put_ok(None), 3))
        .op(
            2,
            21,
            30,
            get("/k/a"),
            Done::Ok(found(vec![kv("/k/a", "1.1", 2, 2, 1)]), 2),
        );
    assert_only(&h.check(), AnomalyKind::RealTime);

    // Writes whose revisions go backwards in real time.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 3))
        .op(2, 11, 20, put("/k/b", "2.1"), Done::Ok(put_ok(None), 2));
    assert_only(&h.check(), AnomalyKind::RealTime);
}

#[test]
fn unknown_writes_explain_what_they_can_and_nothing_more() {
    // A delete with unknown outcome, invoked before the read returned,
    // explains the key being gone: revision 3 is a gap it can fill.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(1, 11, 20, delete("/k/a"), Done::Info)
        .op(2, 12, 25, get("/k/a"), Done::Ok(found(vec![]), 3));
    let report = h.check();
    assert!(report.valid(), "{:?}", report.counts);

    // Invoked only after the read returned, it cannot.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(2, 12, 25, get("/k/a"), Done::Ok(found(vec![]), 3))
        .op(1, 30, 40, delete("/k/a"), Done::Info);
    assert_only(&h.check(), AnomalyKind::ReadMismatch);

    // Nor can it when no revision is free for it.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(1, 11, 20, delete("/k/a"), Done::Info)
        .op(3, 11, 20, put("/k/b", "3.1"), Done::Ok(put_ok(None), 3))
        .op(2, 21, 25, get("/k/a"), Done::Ok(found(vec![]), 3));
    assert_only(&h.check(), AnomalyKind::ReadMismatch);

    // An unknown write seen at a revision that was already taken.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(1, 11, 20, put("/k/a", "1.2"), Done::Info)
        .op(
            2,
            21,
            30,
            get("/k/a"),
            Done::Ok(found(vec![kv("/k/a", "1.2", 2, 2, 2)]), 2),
        );
    let report = h.check();
    assert!(
        report.counts.contains_key(&AnomalyKind::DuplicateRevision),
        "{:?}",
        report.counts
    );
}

#[test]
fn values_from_nowhere_or_from_failed_writes_are_caught() {
    let mut h = History::default();
    h.op(
        2,
        0,
        10,
        get("/k/a"),
        Done::Ok(found(vec![kv("/k/a", "9.9", 2, 2, 1)]), 2),
    );
    assert!(h.check().counts.contains_key(&AnomalyKind::PhantomValue));

    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Fail).op(
        2,
        11,
        20,
        get("/k/a"),
        Done::Ok(found(vec![kv("/k/a", "1.1", 2, 2, 1)]), 2),
    );
    assert!(h
        .check()
        .counts
        .contains_key(&AnomalyKind::FailedWriteVisible));
}

#[test]
fn txns_taking_the_wrong_branch_are_caught() {
    // The key's mod revision is 2, so a CAS expecting 3 must fail.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(
            2,
            11,
            20,
            cas("/k/a", 3, "2.1"),
            Done::Ok(cas_succeeded(kv("/k/a", "1.1", 2, 2, 1)), 3),
        );
    assert_only(&h.check(), AnomalyKind::TxnOutcome);
}

#[test]
fn reads_below_an_acknowledged_compaction_are_caught() {
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Ok(put_ok(None), 2))
        .op(
            1,
            11,
            20,
            put("/k/a", "1.2"),
            Done::Ok(put_ok(Some(kv("/k/a", "1.1", 2, 2, 1))), 3),
        )
        .op(
            1,
            21,
            30,
            Request::Compact { revision: 3 },
            Done::Ok(Response::Compact {}, 3),
        )
        .op(
            2,
            31,
            40,
            get_at("/k/a", 2),
            Done::Ok(found(vec![kv("/k/a", "1.1", 2, 2, 1)]), 3),
        );
    assert_only(&h.check(), AnomalyKind::CompactedRead);
}
