//! The lease-safety checker on hand-made histories and observer logs: a
//! valid one with every kind of operation (and unknown outcomes) passes,
//! and each violation is caught — among them a lease whose keys are
//! deleted at two revisions, the bug `CAIRN_BUGS=lease-two-revisions`
//! plants in the server.

use std::time::Duration;

use serde_json::Value;

/// The hand-made histories this test shares with the other checkers' tests.
mod common {
    pub mod history;
}

use cairn_jepsen::checker::lease::{
    self, lease_key, lease_of_key, FaultWindow, LeaseAnomalyKind, LeaseCheckError,
    LeaseCheckOptions, LeaseReport, LeaseRequest, LeaseResponse, ObservedEvent, ObserverRecord,
    ReadKv, WatchKind,
};
use cairn_jepsen::history::{Event, EventType};

use common::history::{event, Recorder};

const PREFIX: &str = "/t/";
const MS: u64 = 1_000_000;

enum Done {
    /// The response and its header revision.
    Ok(LeaseResponse, Option<i64>),
    Fail(&'static str),
    Info,
}

/// A history under construction: operations with explicit call and return
/// times (ms), sorted into events at the end, and the observer's log.
struct Case {
    recorder: Recorder,
    observed: Vec<ObserverRecord>,
    faults: Vec<FaultWindow>,
}

fn key(lease: i64, n: usize) -> String {
    lease_key(PREFIX, lease, n)
}

impl Case {
    fn new() -> Self {
        Self {
            recorder: Recorder::default(),
            observed: vec![ObserverRecord::Start {
                t_ns: 0,
                prefix: PREFIX.into(),
                from_rev: 2,
            }],
            faults: Vec::new(),
        }
    }

    fn op(
        &mut self,
        process: u64,
        call: u64,
        ret: u64,
        request: LeaseRequest,
        done: Done,
    ) -> &mut Self {
        let at = |kind, value, t_ms: u64| Event {
            key: request.lease().map(|l| l.to_string()),
            node: Some("m0".into()),
            ..event(kind, process, request.function(), value, t_ms * MS)
        };
        let invoke = at(
            EventType::Invoke,
            serde_json::to_value(&request).unwrap(),
            call,
        );
        let completion = match done {
            Done::Ok(response, rev) => Event {
                rev,
                ..at(EventType::Ok, serde_json::to_value(&response).unwrap(), ret)
            },
            Done::Fail(error) => Event {
                error: Some(error.into()),
                ..at(EventType::Fail, Value::Null, ret)
            },
            Done::Info => Event {
                error: Some("timed out".into()),
                ..at(EventType::Info, Value::Null, ret)
            },
        };
        self.recorder.record(invoke, Some(completion));
        self
    }

    /// Grants lease `id` with a TTL of 2 s on `process` at `at` ms, then puts
    /// `keys` keys under it, one every 10 ms: key `n` holds
    /// `"<process>-<n>"`, is acknowledged at revision `first_rev + n` and is
    /// seen by the observer 1 ms after its put was invoked.
    fn lease_with_keys(
        &mut self,
        process: u64,
        at: u64,
        id: i64,
        keys: usize,
        first_rev: i64,
    ) -> &mut Self {
        self.grant(process, at, id, 2);
        for n in 0..keys {
            let call = at + 10 * (n as u64 + 1);
            let rev = first_rev + n as i64;
            let value = format!("{process}-{n}");
            self.put(process, call, id, n, &value, put_ok(rev))
                .seen_put(call + 1, rev, id, n, &value);
        }
        self
    }

    /// A case that begins with [`Case::lease_with_keys`] for lease 7 on
    /// process 1 at 0 ms, its keys from revision 2: the lease most tests
    /// break.
    fn with_lease_7(keys: usize) -> Self {
        let mut h = Self::new();
        h.lease_with_keys(1, 0, 7, keys, 2);
        h
    }

    fn grant(&mut self, process: u64, call: u64, id: i64, ttl: i64) -> &mut Self {
        self.op(
            process,
            call,
            call + 2,
            LeaseRequest::Grant { ttl },
            Done::Ok(LeaseResponse::Grant { id, ttl }, Some(1)),
        )
    }

    fn put(
        &mut self,
        process: u64,
        call: u64,
        lease: i64,
        n: usize,
        value: &str,
        done: Done,
    ) -> &mut Self {
        self.op(
            process,
            call,
            call + 2,
            LeaseRequest::Put {
                key: key(lease, n),
                value: value.into(),
                lease,
            },
            done,
        )
    }

    fn keepalive(&mut self, process: u64, call: u64, id: i64, ttl: i64) -> &mut Self {
        self.op(
            process,
            call,
            call + 2,
            LeaseRequest::Keepalive { id },
            Done::Ok(LeaseResponse::Keepalive { ttl }, Some(1)),
        )
    }

    fn ttl(&mut self, process: u64, call: u64, id: i64, ttl: i64) -> &mut Self {
        self.op(
            process,
            call,
            call + 2,
            LeaseRequest::Ttl { id },
            Done::Ok(
                LeaseResponse::Ttl {
                    ttl,
                    granted_ttl: ttl.max(0),
                    keys: Vec::new(),
                },
                Some(1),
            ),
        )
    }

    fn revoke(&mut self, process: u64, call: u64, ret: u64, id: i64, done: Done) -> &mut Self {
        self.op(process, call, ret, LeaseRequest::Revoke { id }, done)
    }

    /// An explicit delete of lease `id`'s key `n`.
    fn delete(
        &mut self,
        process: u64,
        call: u64,
        ret: u64,
        id: i64,
        n: usize,
        done: Done,
    ) -> &mut Self {
        let key = key(id, n);
        self.op(process, call, ret, LeaseRequest::Delete { id, key }, done)
    }

    fn read(&mut self, process: u64, call: u64, id: i64, rev: i64, kvs: Vec<ReadKv>) -> &mut Self {
        self.op(
            process,
            call,
            call + 2,
            LeaseRequest::Read {
                id,
                prefix: lease::lease_prefix(PREFIX, id),
            },
            Done::Ok(LeaseResponse::Read { kvs }, Some(rev)),
        )
    }

    fn seen_put(&mut self, t: u64, rev: i64, lease: i64, n: usize, value: &str) -> &mut Self {
        self.observed.push(ObserverRecord::Event(ObservedEvent {
            t_ns: t * MS,
            rev,
            kind: WatchKind::Put,
            key: key(lease, n),
            lease,
            value: Some(value.into()),
        }));
        self
    }

    fn seen_delete(&mut self, t: u64, rev: i64, lease: i64, n: usize) -> &mut Self {
        self.observed.push(ObserverRecord::Event(ObservedEvent {
            t_ns: t * MS,
            rev,
            kind: WatchKind::Delete,
            key: key(lease, n),
            lease,
            value: None,
        }));
        self
    }

    fn events(&self) -> Vec<Event> {
        self.recorder.events()
    }

    /// Checks with the observer ending at the last event's revision, which
    /// is also the target.
    fn check(&self) -> LeaseReport {
        let mut observed = self.observed.clone();
        let last = observed
            .iter()
            .filter_map(|r| match r {
                ObserverRecord::Event(e) => Some(e.rev),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        observed.push(ObserverRecord::End {
            t_ns: 60_000 * MS,
            covered: last,
            target: Some(last),
        });
        self.check_with(&observed)
    }

    fn check_with(&self, observed: &[ObserverRecord]) -> LeaseReport {
        let options = LeaseCheckOptions {
            election_timeout: Duration::from_secs(1),
            faults: self.faults.clone(),
        };
        let report =
            lease::check(&self.events(), observed, &options).expect("a well-formed history");
        for a in &report.anomalies {
            println!(
                "{}: {} (lease {}, ops {:?}, keys {:?}, revisions {:?})",
                a.kind, a.message, a.lease, a.ops, a.keys, a.revisions
            );
        }
        report
    }
}

fn kv(lease: i64, n: usize, value: &str, rev: i64) -> ReadKv {
    ReadKv {
        key: key(lease, n),
        value: value.into(),
        mod_revision: rev,
        lease,
    }
}

fn put_ok(rev: i64) -> Done {
    Done::Ok(LeaseResponse::Put {}, Some(rev))
}

fn revoked_at(rev: i64) -> Done {
    Done::Ok(LeaseResponse::Revoke {}, Some(rev))
}

/// An explicit delete that removed the key, acknowledged at `rev`.
fn deleted_at(rev: i64) -> Done {
    Done::Ok(LeaseResponse::Delete { deleted: 1 }, Some(rev))
}

fn kinds(report: &LeaseReport) -> Vec<LeaseAnomalyKind> {
    report.counts.keys().copied().collect()
}

const NOT_FOUND: &str = "NotFound: etcdserver: requested lease not found";

#[test]
fn key_names_carry_their_lease() {
    assert_eq!(
        lease_of_key(&lease_key("/cairn-jepsen/1-2/", 42, 3)),
        Some(42)
    );
    assert_eq!(lease_of_key("/cairn-jepsen/1-2/final"), None);
    assert_eq!(lease_of_key("/cairn-jepsen/1-2/sentinel"), None);
    assert_eq!(lease_of_key("/cairn-jepsen/1-2/lx/k1"), None);
}

/// Leases revoked, expired, reported missing, with explicit deletes (one
/// of unknown outcome), an unknown put the observer saw, reads before and
/// after, probes after the end: all valid.
#[test]
fn a_valid_history_passes() {
    let (a, b, c, d) = (100, 200, 300, 400);
    let mut h = Case::new();
    // A: kept alive, a key deleted explicitly, then revoked.
    h.lease_with_keys(1, 0, a, 2, 2)
        // B: abandoned with TTL 3 after one put.
        .grant(2, 30, b, 3)
        .put(2, 40, b, 0, "2-0", put_ok(4))
        .seen_put(41, 4, b, 0, "2-0")
        .keepalive(1, 600, a, 2)
        .read(3, 700, a, 4, vec![kv(a, 0, "1-0", 2), kv(a, 1, "1-1", 3)])
        .delete(1, 800, 805, a, 1, deleted_at(5))
        .seen_delete(803, 5, a, 1)
        .ttl(3, 900, a, 2)
        .revoke(1, 1000, 1010, a, revoked_at(6))
        .seen_delete(1008, 6, a, 0)
        // Probes after the revoke: the lease is gone.
        .keepalive(3, 1100, a, 0)
        .put(3, 1200, a, 5, "3-0", Done::Fail(NOT_FOUND))
        .read(3, 1300, a, 6, vec![])
        // B: an unknown put the observer saw, then expiry of both keys.
        .put(4, 2000, b, 1, "4-0", Done::Info)
        .seen_put(2100, 7, b, 1, "4-0")
        .read(3, 2200, b, 7, vec![kv(b, 0, "2-0", 4), kv(b, 1, "4-0", 7)])
        .seen_delete(3600, 8, b, 0)
        .seen_delete(3600, 8, b, 1)
        .read(3, 3700, b, 8, vec![])
        .ttl(3, 3800, b, -1)
        // C: no keys; found, then reported missing after its TTL.
        .grant(5, 4000, c, 2)
        .ttl(5, 4100, c, 2)
        .ttl(5, 6500, c, -1)
        // D: a key deleted by a delete of unknown outcome, at its own
        // revision, then the revoke deletes the other.
        .grant(6, 7000, d, 5)
        .put(6, 7010, d, 0, "6-0", put_ok(9))
        .seen_put(7011, 9, d, 0, "6-0")
        .put(6, 7020, d, 1, "6-1", put_ok(10))
        .seen_put(7021, 10, d, 1, "6-1")
        .delete(6, 7200, 9200, d, 0, Done::Info)
        .seen_delete(7300, 11, d, 0)
        .revoke(7, 7400, 7410, d, revoked_at(12))
        .seen_delete(7405, 12, d, 1)
        // The harness's final write, outside every lease.
        .op(
            8,
            9000,
            9002,
            LeaseRequest::Put {
                key: format!("{PREFIX}final"),
                value: "8-0".into(),
                lease: 0,
            },
            put_ok(13),
        );
    let report = h.check();
    assert!(report.valid(), "{:?}", report.counts);
    assert_eq!(report.leases.granted, 4);
    assert_eq!(report.leases.revoked, 2);
    assert_eq!(report.leases.expired, 2);
    assert_eq!(report.leases.open, 0);
    assert_eq!(report.lease_deletions, 3, "A at 6, B at 8, D at 12");
    assert_eq!(report.keys_deleted, 4);
    assert_eq!(report.reads_checked, 4);
    assert_eq!(report.leases.liveness_checked, 4);
}

/// The planted bug: a revoke (or an expiry) that deletes the lease's keys
/// in two revisions.
#[test]
fn keys_deleted_at_two_revisions_are_flagged() {
    let mut h = Case::with_lease_7(2);
    h.revoke(1, 100, 110, 7, revoked_at(5))
        .seen_delete(105, 4, 7, 0)
        .seen_delete(106, 5, 7, 1);
    // And an expiry that does the same.
    h.lease_with_keys(2, 200, 8, 2, 6)
        .seen_delete(2600, 8, 8, 1)
        .seen_delete(2601, 9, 8, 0);
    let report = h.check();
    assert_eq!(kinds(&report), vec![LeaseAnomalyKind::SplitDeletion]);
    assert_eq!(report.counts[&LeaseAnomalyKind::SplitDeletion], 2);
    let revoked = report.anomalies.iter().find(|a| a.lease == 7).unwrap();
    assert_eq!(revoked.revisions, vec![4, 5]);
    assert_eq!(revoked.keys, vec![key(7, 0), key(7, 1)]);
    let expired = report.anomalies.iter().find(|a| a.lease == 8).unwrap();
    assert_eq!(expired.revisions, vec![8, 9]);
}

/// An explicit delete of a lease's key at its own revision is no split.
#[test]
fn an_acknowledged_explicit_delete_is_not_a_split() {
    // Key 0 deleted explicitly, acknowledged at `rev`, seen at revision 4;
    // key 1 deleted at expiry, at revision 5.
    let explicit_delete_acknowledged_at = |rev| {
        let mut h = Case::with_lease_7(2);
        h.delete(1, 30, 35, 7, 0, deleted_at(rev))
            .seen_delete(33, 4, 7, 0)
            .seen_delete(2600, 5, 7, 1);
        h.check()
    };
    assert!(explicit_delete_acknowledged_at(4).valid());
    // The same delete acknowledged at another revision explains nothing.
    assert!(kinds(&explicit_delete_acknowledged_at(9)).contains(&LeaseAnomalyKind::SplitDeletion));
}

#[test]
fn a_key_left_behind_by_its_lease_is_flagged() {
    let mut h = Case::with_lease_7(2);
    h.seen_delete(2600, 4, 7, 0)
        .read(2, 2700, 7, 4, vec![kv(7, 1, "1-1", 3)]);
    let report = h.check();
    assert_eq!(
        kinds(&report),
        vec![
            LeaseAnomalyKind::KeyOutlivedLease,
            LeaseAnomalyKind::ReadAfterDeletion
        ]
    );
    let outlived = &report.anomalies[0];
    assert_eq!(outlived.keys, vec![key(7, 1)]);
    assert_eq!(outlived.revisions, vec![4]);
    assert!(
        outlived.message.contains("never deleted"),
        "{}",
        outlived.message
    );
}

#[test]
fn use_after_revoke_is_flagged() {
    let mut h = Case::new();
    h.grant(1, 0, 7, 5)
        .put(1, 10, 7, 0, "1-0", put_ok(2))
        .seen_put(11, 2, 7, 0, "1-0")
        .revoke(1, 100, 110, 7, revoked_at(3))
        .seen_delete(105, 3, 7, 0)
        // A put acknowledged at a later revision, and a keep-alive that
        // still renews, both invoked after the revoke returned.
        .put(2, 200, 7, 1, "2-0", put_ok(4))
        .seen_put(201, 4, 7, 1, "2-0")
        .keepalive(3, 300, 7, 5);
    let report = h.check();
    assert!(
        kinds(&report).contains(&LeaseAnomalyKind::UseAfterRevoke),
        "{:?}",
        report.counts
    );
    let a = report
        .anomalies
        .iter()
        .find(|a| a.kind == LeaseAnomalyKind::UseAfterRevoke)
        .unwrap();
    assert_eq!(a.revisions, vec![4]);
    assert_eq!(
        a.ops.len(),
        3,
        "the put by revision and by time, the keep-alive: {:?}",
        a.ops
    );
    assert_eq!(report.leases.revoked, 1);
}

/// A put of unknown outcome that the observer saw after the lease expired.
#[test]
fn an_observed_put_after_expiry_is_flagged() {
    let mut h = Case::with_lease_7(1);
    h.seen_delete(2600, 3, 7, 0)
        .put(2, 2590, 7, 1, "2-0", Done::Info)
        .seen_put(2700, 4, 7, 1, "2-0");
    let report = h.check();
    assert!(
        kinds(&report).contains(&LeaseAnomalyKind::UseAfterExpiry),
        "{:?}",
        report.counts
    );
    // The key put after the deletion also outlives the lease's end in the
    // sense of use-after-expiry only; the one deletion has no split.
    assert!(!kinds(&report).contains(&LeaseAnomalyKind::SplitDeletion));
}

#[test]
fn early_expiry_is_flagged() {
    // Renewed at 1.0 s with TTL 2: alive until at least 3.0 s, but its
    // keys' deletion arrived at 2.5 s.
    let mut h = Case::with_lease_7(1);
    h.keepalive(1, 1000, 7, 2).seen_delete(2500, 3, 7, 0);
    let report = h.check();
    assert_eq!(kinds(&report), vec![LeaseAnomalyKind::EarlyExpiry]);
    assert!(
        report.anomalies[0].message.contains("0.500 s early"),
        "{}",
        report.anomalies[0].message
    );

    // A lease without keys reported missing too early.
    let mut h = Case::with_lease_7(0);
    h.keepalive(1, 1000, 7, 2).ttl(2, 1500, 7, -1);
    assert_eq!(kinds(&h.check()), vec![LeaseAnomalyKind::EarlyExpiry]);

    // The deletion arrived late, but an acknowledged operation at its
    // revision returned at 2.6 s: it had been applied by then.
    let mut h = Case::with_lease_7(1);
    h.keepalive(1, 1000, 7, 2)
        .grant(2, 2500, 9, 5)
        .put(2, 2597, 9, 0, "2-0", put_ok(4))
        .seen_put(2598, 4, 9, 0, "2-0")
        .seen_delete(3500, 3, 7, 0);
    let report = h.check();
    assert_eq!(kinds(&report), vec![LeaseAnomalyKind::EarlyExpiry]);
    assert_eq!(report.anomalies[0].lease, 7);
}

#[test]
fn expiry_at_the_bound_or_after_a_revoke_is_not_early() {
    // 20 ms before the bound: within the tolerance.
    let mut h = Case::with_lease_7(1);
    h.keepalive(1, 1000, 7, 2).seen_delete(2980, 3, 7, 0);
    assert!(h.check().valid());
    // A revoke of unknown outcome was invoked before the deletion.
    let mut h = Case::with_lease_7(1);
    h.keepalive(1, 1000, 7, 2)
        .revoke(1, 1200, 3200, 7, Done::Info)
        .seen_delete(1300, 3, 7, 0);
    let report = h.check();
    assert!(report.valid(), "{:?}", report.counts);
    assert_eq!(report.leases.revoked_or_expired, 1);
}

#[test]
fn stale_and_mismatched_reads_are_flagged() {
    let mut h = Case::with_lease_7(1);
    h.seen_delete(2600, 3, 7, 0)
        // Invoked after the deletion arrived, at an older revision.
        .read(2, 2700, 7, 2, vec![kv(7, 0, "1-0", 2)]);
    assert_eq!(kinds(&h.check()), vec![LeaseAnomalyKind::StaleRead]);

    let mut h = Case::with_lease_7(1);
    h.read(2, 20, 7, 2, vec![kv(7, 0, "1-9", 2)])
        .read(2, 30, 7, 2, vec![])
        .seen_delete(2600, 3, 7, 0);
    let report = h.check();
    assert_eq!(kinds(&report), vec![LeaseAnomalyKind::ReadMismatch]);
    assert_eq!(report.anomalies[0].ops.len(), 2);
}

#[test]
fn a_key_with_another_lease_is_flagged() {
    let mut h = Case::with_lease_7(1);
    if let Some(ObserverRecord::Event(e)) = h.observed.last_mut() {
        e.lease = 8;
    }
    h.seen_delete(2600, 3, 7, 0);
    assert_eq!(kinds(&h.check()), vec![LeaseAnomalyKind::WrongLease]);
}

#[test]
fn a_lease_outliving_its_deadline_is_a_liveness_anomaly_unless_a_fault_explains_it() {
    // Lease 7, TTL 2, granted at 0 and found alive at 6 s, then probed at
    // `probe` ms, with or without a fault from 1 s to 4 s.
    let probed = |fault: bool, probe: u64, ttl: i64| {
        let mut h = Case::new();
        if fault {
            h.faults.push(FaultWindow {
                start_ns: 1000 * MS,
                end_ns: Some(4000 * MS),
            });
        }
        h.grant(1, 0, 7, 2).ttl(2, 6000, 7, 1).ttl(2, probe, 7, ttl);
        h.check()
    };
    // TTL 2, granted at 0: due by 0 + 2 + 1 (election) + 2 (slack) = 5 s.
    let report = probed(false, 7000, -1);
    assert_eq!(kinds(&report), vec![LeaseAnomalyKind::LateExpiry]);
    assert_eq!(report.safety_anomalies(), 0);
    assert_eq!(report.liveness_anomalies(), 1);
    assert!(report.anomalies[0].message.contains("no fault overlapped"));

    // A linearizable read after the deadline at a revision before the keys'
    // deletion shows the same.
    let mut h = Case::with_lease_7(1);
    h.read(3, 5500, 9, 2, vec![]).seen_delete(5600, 3, 7, 0);
    assert_eq!(kinds(&h.check()), vec![LeaseAnomalyKind::LateExpiry]);

    // A fault from 1 s to 4 s: a new leader may restart the clock; due by
    // 4 + 2 (TTL) + 4 (election timeouts) + 2 = 12 s.
    assert!(probed(true, 7000, -1).valid());
    let report = probed(true, 12_500, 1);
    assert_eq!(kinds(&report), vec![LeaseAnomalyKind::LateExpiry]);
    assert!(report.anomalies[0].message.contains("1 overlapping fault"));
}

#[test]
fn an_observer_short_of_the_final_revision_is_flagged() {
    let h = Case::with_lease_7(1);
    let mut observed = h.observed.clone();
    observed.push(ObserverRecord::End {
        t_ns: 9000 * MS,
        covered: 2,
        target: Some(5),
    });
    let report = h.check_with(&observed);
    assert_eq!(kinds(&report), vec![LeaseAnomalyKind::ObserverIncomplete]);
    assert_eq!(report.anomalies[0].revisions, vec![2, 5]);
}

#[test]
fn malformed_histories_are_errors() {
    let h = Case::with_lease_7(0);
    let mut events = h.events();
    events[0].f = "put".into();
    events[1].f = "put".into();
    let options = LeaseCheckOptions {
        election_timeout: Duration::from_secs(1),
        faults: Vec::new(),
    };
    assert!(matches!(
        lease::check(&events, &h.observed, &options),
        Err(LeaseCheckError::FunctionMismatch { index: 0, .. })
    ));
    let mut h = Case::new();
    h.op(
        1,
        0,
        1,
        LeaseRequest::Ttl { id: 7 },
        Done::Ok(LeaseResponse::Revoke {}, Some(1)),
    );
    assert!(matches!(
        lease::check(&h.events(), &h.observed, &options),
        Err(LeaseCheckError::ResponseMismatch { .. })
    ));
}

#[test]
fn observer_logs_round_trip() {
    let mut h = Case::new();
    h.seen_put(11, 2, 7, 0, "1-0").seen_delete(2600, 3, 7, 0);
    h.observed.push(ObserverRecord::Gap {
        t_ns: 5,
        from_rev: 10,
        to_rev: 20,
    });
    let mut buf = Vec::new();
    lease::write_observer_log(&mut buf, &h.observed).unwrap();
    let text = String::from_utf8(buf.clone()).unwrap();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("{\"event\":{\"t_ns\":11000000,\"rev\":2,\"kind\":\"put\""),
        "{text}"
    );
    assert_eq!(
        lease::read_observer_log(buf.as_slice()).unwrap(),
        h.observed
    );
    assert!(matches!(
        lease::read_observer_log("{\"nope\":1}\n".as_bytes()),
        Err(LeaseCheckError::ObserverLog { line: 1, .. })
    ));
}
