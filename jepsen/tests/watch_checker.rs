//! The watch checker on hand-made watch logs and kv histories: a valid run
//! (restarts, a cancel and resume, an accepted compaction gap, a `prev_kv`
//! removed by compaction, a write with unknown outcome revealed by the
//! watchers) passes, and each property violation is caught, alone.

use std::collections::BTreeSet;

/// The hand-made histories this test shares with the kv checker's.
mod common {
    pub mod history;
    pub mod kv;
}

use cairn_jepsen::checker::watch::{
    self, CheckOptions, Record, ResponseRecord, WatchAnomalyKind, WatchEvent, WatchEventType,
    WatchLog, WatchRecord, WatchReport,
};
use cairn_jepsen::ops::{
    Compare, CompareTarget, DeleteRequest, DeleteResponse, Kv, PutRequest, PutResponse,
    RangeResponse, Request, Response, TxnOp, TxnOpResponse, TxnRequest, TxnResponse,
};

use common::kv::{delete, deleted, kv, put, put_ok, range, Done, History};
use WatchAnomalyKind::*;

fn put_event(current: Kv, prev: Option<Kv>) -> WatchEvent {
    WatchEvent {
        kind: WatchEventType::Put,
        kv: current,
        prev_kv: prev,
    }
}

fn delete_event(key: &str, revision: i64, prev: Option<Kv>) -> WatchEvent {
    WatchEvent {
        kind: WatchEventType::Delete,
        kv: Kv {
            key: key.into(),
            value: String::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            lease: 0,
        },
        prev_kv: prev,
    }
}

/// A watcher's log under construction; every record one tick after the
/// previous, all after the history's operations.
struct Log {
    log: WatchLog,
    t: u64,
    member: String,
}

impl Log {
    fn new(name: &str, member: &str) -> Self {
        Self {
            log: WatchLog {
                name: name.into(),
                records: Vec::new(),
            },
            t: 1000,
            member: member.into(),
        }
    }

    fn push(mut self, record: Record) -> Self {
        self.t += 1;
        self.log.records.push(WatchRecord {
            t_ns: self.t,
            member: self.member.clone(),
            record,
        });
        self
    }

    fn start(mut self, member: &str, revision: i64) -> Self {
        self.member = member.into();
        self.push(Record::Start {
            key: "/p/".into(),
            start_revision: revision,
        })
    }

    fn created(self) -> Self {
        self.push(Record::Response(ResponseRecord {
            created: true,
            revision: 1,
            ..ResponseRecord::default()
        }))
    }

    fn events(self, events: Vec<WatchEvent>) -> Self {
        let revision = events.last().map_or(0, |e| e.kv.mod_revision);
        self.push(Record::Response(ResponseRecord {
            revision,
            events,
            ..ResponseRecord::default()
        }))
    }

    fn canceled(self, compact_revision: i64) -> Self {
        self.push(Record::Response(ResponseRecord {
            canceled: true,
            compact_revision,
            cancel_reason: if compact_revision != 0 {
                "mvcc: required revision has been compacted".into()
            } else {
                String::new()
            },
            ..ResponseRecord::default()
        }))
    }

    fn cancel(self) -> Self {
        self.push(Record::Cancel { watch_id: 0 })
    }

    fn broken(self) -> Self {
        self.push(Record::Broken {
            error: "Unavailable: connection refused".into(),
        })
    }

    fn done(self) -> WatchLog {
        self.log
    }
}

/// The events of the base run, by revision.
struct Events;

impl Events {
    fn e2() -> WatchEvent {
        put_event(kv("/p/a", "1-0", 2, 2, 1), None)
    }
    fn e3() -> WatchEvent {
        put_event(kv("/p/b", "2-0", 3, 3, 1), None)
    }
    fn e4() -> Vec<WatchEvent> {
        vec![
            put_event(kv("/p/a", "1-1", 2, 4, 2), Some(kv("/p/a", "1-0", 2, 2, 1))),
            delete_event("/p/b", 4, Some(kv("/p/b", "2-0", 3, 3, 1))),
        ]
    }
    fn e5() -> WatchEvent {
        put_event(kv("/p/c", "3-0", 5, 5, 1), None)
    }
    fn e6() -> WatchEvent {
        delete_event("/p/a", 6, Some(kv("/p/a", "1-1", 2, 4, 2)))
    }
    fn e7() -> WatchEvent {
        put_event(kv("/p/a", "1-2", 7, 7, 1), None)
    }
    fn e8() -> WatchEvent {
        put_event(kv("/p/final", "9-0", 8, 8, 1), None)
    }
}

struct Scenario {
    history: History,
    logs: Vec<WatchLog>,
    options: CheckOptions,
}

impl Scenario {
    /// Revisions 2–8 on an empty prefix (empty at 1):
    /// 2 put a, 3 put b, 4 txn (put a, delete b), 5 put c with unknown
    /// outcome, 6 delete a, compaction to 6, 7 put a (a create again),
    /// 8 the final write; plus a failed put of c and a delete of a missing
    /// key (no revision). Three watchers: `oracle-m0` sees everything in
    /// one stream; `oracle-m1` breaks after revision 3 and resumes at 4
    /// (once refused); `resume-0` cancels after revision 2, resumes at 3 on
    /// another member, is told revision 6 is the compaction point, resumes
    /// there and gets revision 6 without `prev_kv` (compacted).
    fn base() -> Self {
        let mut h = History::default();
        h.op(1, 10, 12, put("/p/a", "1-0"), put_ok(None, 2))
            .op(2, 13, 15, put("/p/b", "2-0"), put_ok(None, 3))
            .op(
                1,
                16,
                18,
                Request::Txn(TxnRequest {
                    compare: vec![Compare {
                        key: "/p/a".into(),
                        target: CompareTarget::ModRevision(2),
                    }],
                    success: vec![
                        TxnOp::Put(PutRequest {
                            key: "/p/a".into(),
                            value: "1-1".into(),
                            lease: 0,
                        }),
                        TxnOp::Delete(DeleteRequest { key: "/p/b".into() }),
                        TxnOp::Range(range("/p/c")),
                    ],
                    failure: vec![TxnOp::Range(range("/p/a")), TxnOp::Range(range("/p/b"))],
                }),
                Done::Ok(
                    Response::Txn(TxnResponse {
                        succeeded: true,
                        results: vec![
                            TxnOpResponse::Put(PutResponse {
                                prev_kv: Some(kv("/p/a", "1-0", 2, 2, 1)),
                            }),
                            TxnOpResponse::Delete(DeleteResponse {
                                deleted: 1,
                                prev_kvs: vec![kv("/p/b", "2-0", 3, 3, 1)],
                            }),
                            TxnOpResponse::Range(RangeResponse {
                                kvs: Vec::new(),
                                count: 0,
                                more: false,
                            }),
                        ],
                    }),
                    4,
                ),
            )
            .op(3, 20, 25, put("/p/c", "3-0"), Done::Info)
            .op(4, 21, 23, put("/p/c", "3-1"), Done::Fail)
            .op(2, 26, 27, delete("/p/d"), deleted(Vec::new(), 5))
            .op(
                2,
                30,
                32,
                delete("/p/a"),
                deleted(vec![kv("/p/a", "1-1", 2, 4, 2)], 6),
            )
            .op(
                5,
                40,
                41,
                Request::Compact { revision: 6 },
                Done::Ok(Response::Compact {}, 6),
            )
            .op(1, 42, 44, put("/p/a", "1-2"), put_ok(None, 7))
            .op(6, 50, 52, put("/p/final", "9-0"), put_ok(None, 8));
        let m0 = Log::new("oracle-m0", "m0")
            .start("m0", 2)
            .created()
            .events(vec![Events::e2()])
            .events(vec![Events::e3()])
            .events(Events::e4())
            .events(vec![Events::e5()])
            .events(vec![Events::e6()])
            .events(vec![Events::e7()])
            .events(vec![Events::e8()])
            .done();
        let m1 = Log::new("oracle-m1", "m1")
            .start("m1", 2)
            .created()
            .events(vec![Events::e2(), Events::e3()])
            .broken()
            .start("m1", 4)
            .broken()
            .start("m1", 4)
            .created()
            .events(Events::e4())
            .events(vec![Events::e5(), Events::e6()])
            .events(vec![Events::e7(), Events::e8()])
            .done();
        let mut e6_compacted = Events::e6();
        e6_compacted.prev_kv = None;
        let resume = Log::new("resume-0", "m2")
            .start("m2", 2)
            .created()
            .events(vec![Events::e2()])
            .cancel()
            .canceled(0)
            .start("m1", 3)
            .created()
            .canceled(6)
            .start("m0", 6)
            .created()
            .events(vec![e6_compacted])
            .events(vec![Events::e7(), Events::e8()])
            .done();
        Self {
            history: h,
            logs: vec![m0, m1, resume],
            options: CheckOptions {
                empty_at: 1,
                final_revision: Some(8),
                foreign_compactions: Vec::new(),
            },
        }
    }

    fn check(&self) -> WatchReport {
        let report = watch::check(&self.history.events(), &self.logs, &self.options)
            .expect("well-formed logs and history");
        for a in &report.anomalies {
            println!(
                "{}: {} (watchers {:?}, revisions {:?}, ops {:?}, keys {:?})",
                a.kind, a.message, a.watchers, a.revisions, a.ops, a.keys
            );
        }
        report
    }

    fn log(&mut self, name: &str) -> &mut WatchLog {
        self.logs
            .iter_mut()
            .find(|l| l.name == name)
            .expect("a watcher of the scenario")
    }

    /// The response holding `revision`'s first event in `watcher`'s log.
    fn response_with(&mut self, watcher: &str, revision: i64) -> &mut ResponseRecord {
        let log = self.log(watcher);
        let i = record_with(log, revision);
        response_mut(log, i)
    }

    /// `watcher` restarts at `revision + 1` wherever it restarted at
    /// `revision`, and never receives `revision`.
    fn skip_on_resume(&mut self, watcher: &str, revision: i64) {
        let log = self.log(watcher);
        for r in &mut log.records {
            if let Record::Start { start_revision, .. } = &mut r.record {
                if *start_revision == revision {
                    *start_revision = revision + 1;
                }
            }
        }
        let i = record_with(log, revision);
        log.records.remove(i);
    }

    /// Every watcher receives `event` as revision 9, right after revision 8.
    fn deliver_everywhere(&mut self, event: WatchEvent) {
        for log in &mut self.logs {
            let i = record_with(log, 8);
            log.records.insert(
                i + 1,
                WatchRecord {
                    t_ns: 2000,
                    member: "m0".into(),
                    record: Record::Response(ResponseRecord {
                        revision: 9,
                        events: vec![event.clone()],
                        ..ResponseRecord::default()
                    }),
                },
            );
        }
    }

    /// Moves the compaction after every watch record.
    fn delay_compaction(&mut self) {
        for e in &mut self.history.recorder.recorded {
            if e.f == "compact" {
                e.t_ns += 10_000;
            }
        }
    }

    /// Every response of every watcher, for changing events everywhere.
    fn responses(&mut self) -> impl Iterator<Item = &mut ResponseRecord> {
        self.logs
            .iter_mut()
            .flat_map(|l| l.records.iter_mut())
            .filter_map(|r| match &mut r.record {
                Record::Response(resp) => Some(resp),
                _ => None,
            })
    }
}

fn kinds(report: &WatchReport) -> BTreeSet<WatchAnomalyKind> {
    report.counts.keys().copied().collect()
}

/// The position of the record holding `revision`'s first event.
fn record_with(log: &WatchLog, revision: i64) -> usize {
    log.records
        .iter()
        .position(|r| {
            matches!(&r.record, Record::Response(resp) if resp.events.iter().any(|e| e.kv.mod_revision == revision))
        })
        .expect("a record with the revision")
}

fn response_mut(log: &mut WatchLog, i: usize) -> &mut ResponseRecord {
    match &mut log.records[i].record {
        Record::Response(r) => r,
        other => panic!("record {i} is not a response: {other:?}"),
    }
}

#[test]
fn a_valid_run_with_restarts_resumes_and_a_compaction_gap_passes() {
    let report = Scenario::base().check();
    assert!(report.valid(), "{:?}", report.counts);
    assert_eq!(report.revisions, 7);
    assert_eq!(report.acknowledged, 6, "revisions 2, 3, 4, 6, 7, 8");
    assert_eq!(report.acknowledged_unwatched, 0);
    assert_eq!(report.resolved, 1, "the put of 3-0 took revision 5");
    assert_eq!(report.missing_events, 0);
    let resume = &report.watchers[2];
    assert_eq!(
        (
            resume.starts,
            resume.cancels,
            resume.compacted,
            resume.compacted_revisions
        ),
        (3, 1, 1, 3),
        "{resume:?}"
    );
    assert_eq!(resume.members, vec!["m2", "m1", "m0"]);
    assert_eq!(report.events(), 8 + 8 + 4);
    assert_eq!(report.resumes(), 2 + 2);
}

#[test]
fn one_missing_event_in_one_watcher_is_a_gap() {
    // A single-event revision.
    let mut s = Scenario::base();
    let log = s.log("oracle-m0");
    let i = record_with(log, 5);
    log.records.remove(i);
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([Gap]));
    assert_eq!(report.counts[&Gap], 1);
    assert_eq!(report.missing_events, 1);
    assert_eq!(report.anomalies[0].watchers, vec!["oracle-m0"]);
    assert_eq!(report.anomalies[0].revisions, vec![5]);

    // The first of two revisions in one response.
    let mut s = Scenario::base();
    s.response_with("oracle-m1", 2)
        .events
        .retain(|e| e.kv.mod_revision != 2);
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([Gap]));
    assert_eq!(report.anomalies[0].revisions, vec![2]);
    assert_eq!(
        report.anomalies[0].ops.len(),
        1,
        "the acknowledged put of a"
    );

    // One event of a two-event revision.
    let mut s = Scenario::base();
    s.response_with("oracle-m0", 4).events.pop();
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([Gap]));
    assert_eq!(report.missing_events, 1);
}

#[test]
fn an_acknowledged_write_no_watcher_delivered_is_a_gap_in_each_that_covered_it() {
    let mut s = Scenario::base();
    for name in ["oracle-m0", "oracle-m1", "resume-0"] {
        let log = s.log(name);
        let i = record_with(log, 7);
        let response = response_mut(log, i);
        response.events.retain(|e| e.kv.mod_revision != 7);
        if response.events.is_empty() {
            log.records.remove(i);
        }
    }
    let report = s.check();
    // Each delivered revision 8 after it, so each covered 7.
    assert_eq!(kinds(&report), BTreeSet::from([Gap]));
    assert_eq!(report.counts[&Gap], 3);
    assert_eq!(report.revisions, 7, "revision 7 is known from the history");
    assert_eq!(report.acknowledged_unwatched, 0);
}

#[test]
fn events_out_of_order_or_twice_are_caught() {
    let mut s = Scenario::base();
    let log = s.log("oracle-m0");
    let (i, j) = (record_with(log, 2), record_with(log, 3));
    log.records.swap(i, j);
    let report = s.check();
    assert!(
        report.counts.contains_key(&Unordered),
        "{:?}",
        report.counts
    );
    // The revision that arrived late is dropped from the stream: a gap.
    assert_eq!(kinds(&report), BTreeSet::from([Unordered, Gap]));

    let mut s = Scenario::base();
    let log = s.log("oracle-m0");
    let i = record_with(log, 3);
    let again = log.records[i].clone();
    log.records.insert(i + 1, again);
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([Duplicate]));
}

#[test]
fn a_revision_split_over_responses_is_not_atomic_unless_fragmented() {
    let split = |fragment: Option<bool>| {
        let mut s = Scenario::base();
        let log = s.log("oracle-m0");
        let i = record_with(log, 4);
        let mut second = log.records[i].clone();
        let first = response_mut(log, i);
        let tail = first.events.pop().expect("two events");
        first.fragment = fragment;
        if let Record::Response(r) = &mut second.record {
            r.events = vec![tail];
        }
        log.records.insert(i + 1, second);
        s.check()
    };
    assert_eq!(kinds(&split(None)), BTreeSet::from([NotAtomic]));
    assert_eq!(kinds(&split(Some(false))), BTreeSet::from([NotAtomic]));
    assert!(split(Some(true)).valid());
}

#[test]
fn wrong_or_missing_prev_kv_is_caught_unless_compaction_explains_it() {
    let mut s = Scenario::base();
    s.response_with("oracle-m1", 4).events[0].prev_kv = Some(kv("/p/a", "1-9", 2, 3, 1));
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([PrevKv]));
    assert_eq!(report.anomalies[0].watchers, vec!["oracle-m1"]);

    // Missing prev_kv on events that came after the watcher asked to
    // cancel: etcd 3.4 sends those without it. (The compaction moves after
    // every record, so only the cancel can explain it; resume-0's
    // compaction response is then unexplained either way.)
    let strip = |cancel_first: bool| {
        let mut s = Scenario::base();
        s.delay_compaction();
        s.response_with("resume-0", 6).events[0].prev_kv = Some(kv("/p/a", "1-1", 2, 4, 2));
        let log = s.log("oracle-m0");
        let i = record_with(log, 4);
        for e in &mut response_mut(log, i).events {
            e.prev_kv = None;
        }
        if cancel_first {
            let cancel = WatchRecord {
                t_ns: log.records[i].t_ns,
                member: "m0".into(),
                record: Record::Cancel { watch_id: 0 },
            };
            log.records.insert(i, cancel);
        }
        kinds(&s.check())
    };
    assert_eq!(strip(false), BTreeSet::from([PrevKv, BogusCompaction]));
    assert_eq!(strip(true), BTreeSet::from([BogusCompaction]));

    // A prev_kv on a create.
    let mut s = Scenario::base();
    s.response_with("oracle-m0", 7).events[0].prev_kv = Some(kv("/p/a", "1-1", 2, 4, 2));
    assert_eq!(kinds(&s.check()), BTreeSet::from([PrevKv]));

    // resume-0 got revision 6 without prev_kv: accepted only because a
    // compaction at 6 was invoked before it received it.
    let mut s = Scenario::base();
    s.delay_compaction();
    // (resume-0's compaction response is now unexplained too.)
    assert_eq!(kinds(&s.check()), BTreeSet::from([PrevKv, BogusCompaction]));
    // A compaction at an unknown revision (the nemesis') before it explains
    // both.
    s.options.foreign_compactions = vec![900];
    assert!(s.check().valid());
    s.options.foreign_compactions = vec![5000];
    assert_eq!(kinds(&s.check()), BTreeSet::from([PrevKv, BogusCompaction]));
}

#[test]
fn watchers_that_disagree_are_caught() {
    let mut s = Scenario::base();
    let e7 = s
        .response_with("oracle-m1", 7)
        .events
        .iter_mut()
        .find(|e| e.kv.mod_revision == 7)
        .expect("revision 7");
    e7.kv.version = 2;
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([Disagreement]));
    assert_eq!(
        report.anomalies[0].watchers,
        vec!["oracle-m0", "resume-0", "oracle-m1"]
    );
}

#[test]
fn a_restart_must_resume_exactly_after_the_last_event() {
    // An event below the restart's revision.
    let mut s = Scenario::base();
    s.response_with("oracle-m1", 4)
        .events
        .insert(0, Events::e3());
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([ResumeBeforeStart]));

    // Resuming past an unseen revision without a compaction response.
    let mut s = Scenario::base();
    s.skip_on_resume("oracle-m1", 4);
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([BadResume]));

    // After the compaction response at 6, resuming at 7 skips more than
    // the compaction allows.
    let mut s = Scenario::base();
    s.skip_on_resume("resume-0", 6);
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([BadResume]));
}

#[test]
fn compaction_responses_must_match_a_requested_compaction_above_the_need() {
    // compact_revision 7: no compaction to 7 was requested.
    let mut s = Scenario::base();
    s.skip_on_resume("resume-0", 6);
    for r in &mut s.log("resume-0").records {
        if let Record::Response(resp) = &mut r.record {
            if resp.compact_revision == 6 {
                resp.compact_revision = 7;
            }
        }
    }
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([BogusCompaction]));

    // compact_revision 3 (requested) when the watcher needed revision 3,
    // which a compaction at 3 keeps.
    let mut s = Scenario::base();
    s.history.op(
        7,
        33,
        34,
        Request::Compact { revision: 3 },
        Done::Ok(Response::Compact {}, 6),
    );
    let log = s.log("resume-0");
    let cancel = log
        .records
        .iter()
        .position(|r| matches!(r.record, Record::Cancel { .. }))
        .expect("a cancel");
    response_mut(log, cancel + 1).compact_revision = 3;
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([BogusCompaction]));
}

#[test]
fn events_must_match_the_history() {
    // A different value at an acknowledged write's revision, everywhere.
    let mut s = Scenario::base();
    for r in s.responses() {
        for e in &mut r.events {
            if e.kv.mod_revision == 7 {
                e.kv.value = "1-9".into();
            }
        }
    }
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([HistoryMismatch]));
    assert_eq!(report.anomalies[0].ops.len(), 1);

    // A further revision nobody wrote, seen by every watcher.
    let mut s = Scenario::base();
    s.deliver_everywhere(put_event(
        kv("/p/a", "x-1", 7, 9, 2),
        Some(kv("/p/a", "1-2", 7, 7, 1)),
    ));
    assert_eq!(kinds(&s.check()), BTreeSet::from([PhantomEvent]));

    // The value of a failed write.
    let mut s = Scenario::base();
    s.deliver_everywhere(put_event(
        kv("/p/c", "3-1", 5, 9, 2),
        Some(kv("/p/c", "3-0", 5, 5, 1)),
    ));
    assert_eq!(kinds(&s.check()), BTreeSet::from([FailedWriteVisible]));

    // The write with unknown outcome, a second time.
    let mut s = Scenario::base();
    s.deliver_everywhere(put_event(
        kv("/p/c", "3-0", 5, 9, 2),
        Some(kv("/p/c", "3-0", 5, 5, 1)),
    ));
    assert_eq!(kinds(&s.check()), BTreeSet::from([DuplicateWrite]));

    // A delete no write explains, then one a delete with unknown outcome
    // explains.
    let mut s = Scenario::base();
    s.deliver_everywhere(delete_event("/p/c", 9, Some(kv("/p/c", "3-0", 5, 5, 1))));
    assert_eq!(kinds(&s.check()), BTreeSet::from([PhantomEvent]));
    s.history.op(8, 60, 61, delete("/p/c"), Done::Info);
    let report = s.check();
    assert!(report.valid(), "{:?}", report.counts);
}

#[test]
fn an_unknown_txn_whose_delete_found_nothing_explains_its_put_alone() {
    let mut s = Scenario::base();
    s.history.op(
        8,
        60,
        61,
        Request::Txn(TxnRequest {
            compare: Vec::new(),
            success: vec![
                TxnOp::Put(PutRequest {
                    key: "/p/c".into(),
                    value: "8-0".into(),
                    lease: 0,
                }),
                TxnOp::Delete(DeleteRequest { key: "/p/b".into() }),
            ],
            failure: Vec::new(),
        }),
        Done::Info,
    );
    s.deliver_everywhere(put_event(
        kv("/p/c", "8-0", 5, 9, 2),
        Some(kv("/p/c", "3-0", 5, 5, 1)),
    ));
    let report = s.check();
    assert!(report.valid(), "{:?}", report.counts);
    assert_eq!(report.resolved, 2);
}

#[test]
fn versions_must_continue_the_key() {
    let mut s = Scenario::base();
    for r in s.responses() {
        for e in &mut r.events {
            if e.kv.mod_revision == 7 {
                e.kv.version = 3;
            }
        }
    }
    assert_eq!(kinds(&s.check()), BTreeSet::from([EventState]));
}

#[test]
fn a_watcher_that_never_delivers_the_final_write_is_stalled() {
    let mut s = Scenario::base();
    let log = s.log("resume-0");
    let i = record_with(log, 8);
    log.records.truncate(i);
    let report = s.check();
    assert_eq!(kinds(&report), BTreeSet::from([Stalled]));
    assert_eq!(report.anomalies[0].watchers, vec!["resume-0"]);

    // Without convergence nothing is required.
    s.options.final_revision = None;
    assert!(s.check().valid());
}

#[test]
fn events_outside_the_prefix_are_caught() {
    let mut s = Scenario::base();
    s.response_with("oracle-m0", 8).events.push(put_event(
        Kv {
            key: "/q/x".into(),
            value: "0-0".into(),
            create_revision: 8,
            mod_revision: 8,
            version: 1,
            lease: 0,
        },
        None,
    ));
    assert_eq!(kinds(&s.check()), BTreeSet::from([Filter]));
}

#[test]
fn a_response_outside_any_watch_is_a_malformed_log() {
    let mut s = Scenario::base();
    let log = s.log("oracle-m1");
    let broken = log
        .records
        .iter()
        .position(|r| matches!(r.record, Record::Broken { .. }))
        .expect("a broken stream");
    let stray = log.records[1].clone();
    log.records.insert(broken + 1, stray);
    let err = watch::check(&s.history.events(), &s.logs, &s.options).unwrap_err();
    assert!(err.to_string().contains("oracle-m1, line"), "{err}");
}

#[test]
fn logs_round_trip_through_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::base();
    for log in &s.logs {
        let file = std::fs::File::create(dir.path().join(format!("{}.jsonl", log.name))).unwrap();
        log.write_jsonl(std::io::BufWriter::new(file)).unwrap();
    }
    let mut read = watch::read_logs(dir.path()).unwrap();
    let mut expected = s.logs.clone();
    read.sort_by(|a, b| a.name.cmp(&b.name));
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(read, expected);
}
