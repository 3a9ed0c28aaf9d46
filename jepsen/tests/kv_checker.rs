//! The kv revision-order checker on hand-made histories: a valid one passes,
//! and each kind of violation is caught, including around writes whose
//! outcome is unknown.

/// The hand-made histories this test shares with the watch checker's.
mod common {
    pub mod history;
    pub mod kv;
}

use cairn_jepsen::checker::kv::{self, AnomalyKind, KvReport};
use cairn_jepsen::ops::{
    Compare, CompareTarget, Kv, PutRequest, PutResponse, RangeRequest, RangeResponse, Request,
    Response, TxnOp, TxnOpResponse, TxnRequest, TxnResponse,
};

use common::kv::{delete, deleted, kv, put, put_ok, range, Done, History};

/// Checks the history, printing each anomaly found.
fn check(h: &History) -> KvReport {
    let report = kv::check(&h.events()).expect("a well-formed history");
    for a in &report.anomalies {
        println!(
            "{}: {} (ops {:?}, keys {:?})",
            a.kind, a.message, a.ops, a.keys
        );
    }
    report
}

/// A history that begins with process 1 putting `/k/a` = 1.1 at revision 2,
/// from 0 to 10 ns.
fn a_put() -> History {
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), put_ok(None, 2));
    h
}

/// [`a_put`], then process 1 overwriting `/k/a` with 1.2 at revision 3, from
/// 11 to 20 ns.
fn a_overwritten() -> History {
    let mut h = a_put();
    h.op(
        1,
        11,
        20,
        put("/k/a", "1.2"),
        put_ok(Some(kv("/k/a", "1.1", 2, 2, 1)), 3),
    );
    h
}

fn get(key: &str) -> Request {
    Request::Range(range(key))
}

fn list(prefix: &str, limit: i64) -> Request {
    Request::Range(RangeRequest {
        prefix: true,
        limit,
        ..range(prefix)
    })
}

fn get_at(key: &str, revision: i64) -> Request {
    Request::Range(RangeRequest {
        revision,
        ..range(key)
    })
}

/// A range that returned `kvs` of `count` matching keys, `more` saying
/// whether a limit left some out, served at revision `rev`.
fn listed(kvs: Vec<Kv>, count: i64, more: bool, rev: i64) -> Done {
    Done::Ok(Response::Range(RangeResponse { kvs, count, more }), rev)
}

/// A read that found `kvs`, served at revision `rev`.
fn found(kvs: Vec<Kv>, rev: i64) -> Done {
    let count = kvs.len() as i64;
    listed(kvs, count, false, rev)
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
        failure: vec![TxnOp::Range(range(key))],
    })
}

fn cas_succeeded(prev: Kv, rev: i64) -> Done {
    Done::Ok(
        Response::Txn(TxnResponse {
            succeeded: true,
            results: vec![TxnOpResponse::Put(PutResponse {
                prev_kv: Some(prev),
            })],
        }),
        rev,
    )
}

fn cas_failed(current: Vec<Kv>, rev: i64) -> Done {
    Done::Ok(
        Response::Txn(TxnResponse {
            succeeded: false,
            results: vec![TxnOpResponse::Range(RangeResponse {
                count: current.len() as i64,
                kvs: current,
                more: false,
            })],
        }),
        rev,
    )
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
    let mut h = a_put();
    h.op(2, 5, 15, put("/k/b", "2.1"), put_ok(None, 3))
        .op(
            3,
            20,
            30,
            list("/k/", 1),
            listed(vec![kv("/k/a", "1.1", 2, 2, 1)], 2, true, 3),
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
            found(vec![kv("/k/a", "1.2", 2, 4, 2)], 5),
        )
        .op(
            2,
            61,
            70,
            cas("/k/a", 4, "2.2"),
            cas_succeeded(kv("/k/a", "1.2", 2, 4, 2), 6),
        )
        .op(
            3,
            62,
            71,
            cas("/k/b", 2, "3.1"),
            cas_failed(vec![kv("/k/b", "2.1", 3, 3, 1)], 6),
        )
        .op(
            3,
            72,
            80,
            delete("/k/b"),
            deleted(vec![kv("/k/b", "2.1", 3, 3, 1)], 7),
        )
        .op(
            1,
            81,
            90,
            get_at("/k/a", 3),
            found(vec![kv("/k/a", "1.1", 2, 2, 1)], 7),
        )
        .op(2, 81, 90, get("/k/b"), found(vec![], 7))
        .op(
            4,
            91,
            95,
            Request::Range(RangeRequest {
                serializable: true,
                ..range("/k/a")
            }),
            found(vec![kv("/k/a", "1.2", 2, 4, 2)], 5),
        )
        .op(5, 96, 99, put("/k/b", "5.1"), Done::Fail);
    h
}

#[test]
fn a_valid_history_passes() {
    let report = check(&valid_history());
    assert!(report.valid(), "{:?}", report.counts);
    assert_eq!(report.resolved, 1);
    assert_eq!(report.writes, 4);
    assert!(report.reads_checked >= 8, "{}", report.reads_checked);
}

#[test]
fn duplicate_revisions_are_caught() {
    let mut h = a_put();
    h.op(2, 0, 10, put("/k/b", "2.1"), put_ok(None, 2));
    assert_only(&check(&h), AnomalyKind::DuplicateRevision);
}

#[test]
fn stale_reads_are_caught() {
    // The read is at revision 3, after the second write, yet returns the
    // first write's value.
    let mut h = a_overwritten();
    h.op(
        2,
        21,
        30,
        get("/k/a"),
        found(vec![kv("/k/a", "1.1", 2, 2, 1)], 3),
    );
    assert_only(&check(&h), AnomalyKind::ReadMismatch);
}

#[test]
fn reads_that_do_not_match_the_replay_are_caught() {
    // A key that was put and never deleted is missing.
    let mut h = a_put();
    h.op(2, 11, 20, get("/k/a"), found(vec![], 2));
    assert_only(&check(&h), AnomalyKind::ReadMismatch);

    // A wrong count on a prefix list.
    let mut h = a_put();
    h.op(1, 11, 20, put("/k/b", "1.2"), put_ok(None, 3)).op(
        2,
        21,
        30,
        list("/k/", 1),
        listed(vec![kv("/k/a", "1.1", 2, 2, 1)], 1, false, 3),
    );
    assert_only(&check(&h), AnomalyKind::ReadMismatch);

    // A wrong version.
    let mut h = a_put();
    h.op(
        2,
        11,
        20,
        get("/k/a"),
        found(vec![kv("/k/a", "1.1", 2, 2, 3)], 2),
    );
    assert_only(&check(&h), AnomalyKind::ReadMismatch);
}

#[test]
fn real_time_violations_are_caught() {
    // The read sees revision 2 although the write of revision 3 returned
    // before it started: its content matches revision 2, but it is stale.
    let mut h = a_put();
    h.op(1, 11, 20, put("/k/b", "1.2"), put_ok(None, 3)).op(
        2,
        21,
        30,
        get("/k/a"),
        found(vec![kv("/k/a", "1.1", 2, 2, 1)], 2),
    );
    assert_only(&check(&h), AnomalyKind::RealTime);

    // Writes whose revisions go backwards in real time.
    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), put_ok(None, 3)).op(
        2,
        11,
        20,
        put("/k/b", "2.1"),
        put_ok(None, 2),
    );
    assert_only(&check(&h), AnomalyKind::RealTime);
}

#[test]
fn unknown_writes_explain_what_they_can_and_nothing_more() {
    // A delete with unknown outcome, invoked before the read returned,
    // explains the key being gone: revision 3 is a gap it can fill.
    let mut h = a_put();
    h.op(1, 11, 20, delete("/k/a"), Done::Info)
        .op(2, 12, 25, get("/k/a"), found(vec![], 3));
    let report = check(&h);
    assert!(report.valid(), "{:?}", report.counts);

    // Invoked only after the read returned, it cannot.
    let mut h = a_put();
    h.op(2, 12, 25, get("/k/a"), found(vec![], 3))
        .op(1, 30, 40, delete("/k/a"), Done::Info);
    assert_only(&check(&h), AnomalyKind::ReadMismatch);

    // Nor can it when no revision is free for it.
    let mut h = a_put();
    h.op(1, 11, 20, delete("/k/a"), Done::Info)
        .op(3, 11, 20, put("/k/b", "3.1"), put_ok(None, 3))
        .op(2, 21, 25, get("/k/a"), found(vec![], 3));
    assert_only(&check(&h), AnomalyKind::ReadMismatch);

    // An unknown write seen at a revision that was already taken.
    let mut h = a_put();
    h.op(1, 11, 20, put("/k/a", "1.2"), Done::Info).op(
        2,
        21,
        30,
        get("/k/a"),
        found(vec![kv("/k/a", "1.2", 2, 2, 2)], 2),
    );
    let report = check(&h);
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
        found(vec![kv("/k/a", "9.9", 2, 2, 1)], 2),
    );
    assert!(check(&h).counts.contains_key(&AnomalyKind::PhantomValue));

    let mut h = History::default();
    h.op(1, 0, 10, put("/k/a", "1.1"), Done::Fail).op(
        2,
        11,
        20,
        get("/k/a"),
        found(vec![kv("/k/a", "1.1", 2, 2, 1)], 2),
    );
    assert!(check(&h)
        .counts
        .contains_key(&AnomalyKind::FailedWriteVisible));
}

#[test]
fn txns_taking_the_wrong_branch_are_caught() {
    // The key's mod revision is 2, so a CAS expecting 3 must fail.
    let mut h = a_put();
    h.op(
        2,
        11,
        20,
        cas("/k/a", 3, "2.1"),
        cas_succeeded(kv("/k/a", "1.1", 2, 2, 1), 3),
    );
    assert_only(&check(&h), AnomalyKind::TxnOutcome);
}

#[test]
fn reads_below_an_acknowledged_compaction_are_caught() {
    let mut h = a_overwritten();
    h.op(
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
        found(vec![kv("/k/a", "1.1", 2, 2, 1)], 3),
    );
    assert_only(&check(&h), AnomalyKind::CompactedRead);
}
