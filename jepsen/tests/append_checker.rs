//! The list-append (Elle-style) checker on hand-made histories: each
//! anomaly class is caught and named, valid histories with concurrency,
//! unknown and failed outcomes pass; plus property tests (histories
//! recorded from serial executions always pass) and a 20,000-transaction
//! history checked within a time bound.
//!
//! The property tests print their seed; set `CAIRN_JEPSEN_SEED=<seed>` to
//! rerun one.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The hand-made histories this test shares with the other checkers' tests.
mod common {
    pub mod history;
}

use cairn_jepsen::checker::append::{
    self, txn_to_json, AnomalyKind, AppendCheckError, AppendReport, MicroOp, Observed, Rel,
};
use cairn_jepsen::history::{Event, EventType};
use cairn_jepsen::report::HistoryIndex;

use common::history::{event, Recorder};

fn r(key: &str, list: &[u64]) -> MicroOp {
    MicroOp::Read {
        key: key.to_string(),
        value: Some(Observed::List(list.to_vec())),
    }
}

fn a(key: &str, element: u64) -> MicroOp {
    MicroOp::Append {
        key: key.to_string(),
        element,
    }
}

/// The micro-operations as invoked: reads without their values.
fn invoked(mops: &[MicroOp]) -> Vec<MicroOp> {
    mops.iter()
        .map(|m| match m {
            MicroOp::Read { key, .. } => MicroOp::Read {
                key: key.clone(),
                value: None,
            },
            other => other.clone(),
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Done {
    Ok,
    Fail,
    Info,
    /// No completion: the run ended with the transaction in flight.
    Pending,
}

/// A history under construction: transactions with explicit call and
/// return times, each on its own process, sorted into events at the end.
#[derive(Default)]
struct History {
    recorder: Recorder,
    processes: u64,
}

impl History {
    fn txn(&mut self, call: u64, ret: u64, done: Done, mops: Vec<MicroOp>) -> &mut Self {
        self.processes += 1;
        let process = self.processes;
        let at = |kind, value, t_ns| event(kind, process, "txn", value, t_ns);
        let planned = txn_to_json(&invoked(&mops));
        let invoke = at(EventType::Invoke, planned.clone(), call);
        let completion = match done {
            Done::Ok => Some(at(EventType::Ok, txn_to_json(&mops), ret)),
            Done::Fail => Some(at(EventType::Fail, planned, ret)),
            Done::Info => Some(at(EventType::Info, planned, ret)),
            Done::Pending => None,
        };
        self.recorder.record(invoke, completion);
        self
    }

    fn ok(&mut self, call: u64, ret: u64, mops: Vec<MicroOp>) -> &mut Self {
        self.txn(call, ret, Done::Ok, mops)
    }

    fn events(&self) -> Vec<Event> {
        self.recorder.events()
    }

    fn check(&self) -> AppendReport {
        let report = append::check(&self.events()).expect("a well-formed history");
        for a in &report.anomalies {
            println!(
                "{}: {} (ops {:?}, keys {:?})",
                a.kind, a.message, a.ops, a.keys
            );
        }
        report
    }
}

fn assert_valid(report: &AppendReport) {
    assert!(report.valid(), "expected valid, got {:?}", report.counts);
}

/// The report flags `kind`, and only kinds in `also` besides.
fn assert_flags(report: &AppendReport, kind: AnomalyKind, also: &[AnomalyKind]) {
    assert!(
        report.counts.contains_key(&kind),
        "expected {kind}, got {:?}",
        report.counts
    );
    for k in report.counts.keys() {
        assert!(
            *k == kind || also.contains(k),
            "unexpected {k} besides {kind}: {:?}",
            report.counts
        );
    }
}

fn cycle_of(report: &AppendReport, kind: AnomalyKind) -> Vec<Rel> {
    let anomaly = report
        .anomalies
        .iter()
        .find(|a| a.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} described"));
    assert!(anomaly.ops.len() >= 2, "{anomaly:?}");
    assert_eq!(anomaly.cycle.len(), anomaly.ops.len());
    for (step, next) in anomaly
        .cycle
        .iter()
        .zip(anomaly.cycle.iter().cycle().skip(1))
    {
        assert_eq!(step.to, next.from, "the steps form a cycle: {anomaly:?}");
    }
    anomaly.cycle.iter().map(|s| s.rel).collect()
}

#[test]
fn a_valid_history_with_concurrency_unknown_and_failed_outcomes_passes() {
    let mut h = History::default();
    h.ok(0, 10, vec![r("x", &[]), a("x", 1), a("y", 1)])
        // Concurrent with the next: either order is fine.
        .ok(20, 40, vec![a("x", 2), r("x", &[1, 2])])
        .ok(
            25,
            45,
            vec![r("y", &[1]), a("y", 2), a("y", 3), r("y", &[1, 2, 3])],
        )
        // Failed: never seen, and not in the graph.
        .txn(30, 50, Done::Fail, vec![a("x", 3), a("z", 1)])
        // Unknown, and seen: it committed, after x 2.
        .txn(50, 60, Done::Info, vec![a("x", 4), a("z", 2)])
        // Unknown and never seen: it may or may not have happened.
        .txn(55, 65, Done::Info, vec![a("y", 4)])
        .txn(56, 0, Done::Pending, vec![a("x", 5)])
        // Read-only, read of a key nobody appended to.
        .ok(70, 80, vec![r("x", &[1, 2, 4]), r("z", &[2]), r("w", &[])])
        .ok(90, 100, vec![r("y", &[1, 2, 3])]);
    let report = h.check();
    assert_valid(&report);
    assert_eq!(
        (report.txns, report.ok, report.failed, report.unknown),
        (9, 5, 1, 3)
    );
    assert_eq!(report.graph_txns, 6, "the ok txns and the unknown one seen");
    assert!(report.edges.realtime > 0 && report.edges.ww > 0 && report.edges.rw > 0);
    assert_eq!(report.cycles, 0);
}

#[test]
fn g0_write_cycle() {
    let mut h = History::default();
    h.ok(0, 100, vec![a("x", 1), a("y", 1)])
        .ok(0, 100, vec![a("x", 2), a("y", 2)])
        .ok(200, 300, vec![r("x", &[1, 2]), r("y", &[2, 1])]);
    let report = h.check();
    assert_flags(&report, AnomalyKind::G0, &[]);
    assert_eq!(cycle_of(&report, AnomalyKind::G0), vec![Rel::Ww, Rel::Ww]);
}

#[test]
fn g1c_circular_information_flow() {
    let mut h = History::default();
    h.ok(0, 100, vec![a("x", 1), r("y", &[1])])
        .ok(0, 100, vec![a("y", 1), r("x", &[1])]);
    let report = h.check();
    assert_flags(&report, AnomalyKind::G1c, &[]);
    assert_eq!(cycle_of(&report, AnomalyKind::G1c), vec![Rel::Wr, Rel::Wr]);
}

#[test]
fn g_single_read_skew() {
    let mut h = History::default();
    h.ok(0, 100, vec![a("x", 1), a("y", 1)])
        .ok(0, 100, vec![r("x", &[]), r("y", &[1])]);
    let report = h.check();
    assert_flags(&report, AnomalyKind::GSingle, &[]);
    let mut rels = cycle_of(&report, AnomalyKind::GSingle);
    rels.sort_by_key(|r| r.name());
    assert_eq!(rels, vec![Rel::Rw, Rel::Wr]);
    // The report shows the window, with both transactions marked.
    let events = h.events();
    let text = report.describe(&HistoryIndex::new(&events).unwrap());
    assert_eq!(text.matches("\n    * i=").count(), 2, "{text}");
}

#[test]
fn g2_item_write_skew() {
    let mut h = History::default();
    h.ok(0, 100, vec![r("x", &[]), a("y", 1)])
        .ok(0, 100, vec![r("y", &[]), a("x", 1)])
        .ok(200, 300, vec![r("x", &[1]), r("y", &[1])]);
    let report = h.check();
    assert_flags(&report, AnomalyKind::G2Item, &[]);
    assert_eq!(
        cycle_of(&report, AnomalyKind::G2Item),
        vec![Rel::Rw, Rel::Rw]
    );
}

#[test]
fn g_nonadjacent_needs_rw_edges_apart() {
    let mut h = History::default();
    h.ok(0, 100, vec![r("x", &[]), r("w", &[1])])
        .ok(0, 100, vec![a("x", 1), a("y", 1)])
        .ok(0, 100, vec![r("y", &[1]), r("z", &[])])
        .ok(0, 100, vec![a("z", 1), a("w", 1)]);
    let report = h.check();
    assert_flags(&report, AnomalyKind::GNonadjacent, &[]);
    let rels = cycle_of(&report, AnomalyKind::GNonadjacent);
    assert_eq!(rels.len(), 4);
    assert_eq!(rels.iter().filter(|&&r| r == Rel::Rw).count(), 2);
}

#[test]
fn g_single_realtime_stale_read() {
    let mut h = History::default();
    h.ok(0, 10, vec![a("x", 1)])
        .ok(20, 30, vec![r("x", &[])])
        .ok(40, 50, vec![r("x", &[1])]);
    let report = h.check();
    assert_flags(&report, AnomalyKind::GSingleRealtime, &[]);
    let mut rels = cycle_of(&report, AnomalyKind::GSingleRealtime);
    rels.sort_by_key(|r| r.name());
    assert_eq!(rels, vec![Rel::Realtime, Rel::Rw]);
}

/// Appends x 1, then x 2 after the first returned, then reads x as `read`.
fn x1_then_x2_then_read(read: &[u64]) -> History {
    let mut h = History::default();
    h.ok(0, 10, vec![a("x", 1)])
        .ok(20, 30, vec![a("x", 2)])
        .ok(40, 50, vec![r("x", read)]);
    h
}

#[test]
fn g0_realtime_appends_ordered_against_real_time() {
    let h = x1_then_x2_then_read(&[2, 1]);
    assert_flags(&h.check(), AnomalyKind::G0Realtime, &[]);
}

#[test]
fn g0_realtime_lost_append() {
    // x 1 was acknowledged, then x 2 was appended after it in real time,
    // but reads show only x 2: 1 was lost (it can only come after 2).
    let h = x1_then_x2_then_read(&[2]);
    assert_flags(
        &h.check(),
        AnomalyKind::G0Realtime,
        &[AnomalyKind::GSingleRealtime],
    );
}

#[test]
fn g1c_realtime_read_from_the_future() {
    let mut h = History::default();
    h.ok(0, 10, vec![r("x", &[1])]).ok(20, 30, vec![a("x", 1)]);
    assert_flags(&h.check(), AnomalyKind::G1cRealtime, &[]);
}

#[test]
fn g2_item_realtime() {
    let mut h = History::default();
    // T3 returns before T1 starts; T2 overlaps both.
    h.ok(20, 30, vec![r("x", &[])])
        .ok(0, 40, vec![a("x", 1), r("y", &[])])
        .ok(0, 10, vec![a("y", 1)])
        .ok(50, 60, vec![r("x", &[1]), r("y", &[1])]);
    let report = h.check();
    assert_flags(&report, AnomalyKind::G2ItemRealtime, &[]);
    let rels = cycle_of(&report, AnomalyKind::G2ItemRealtime);
    assert_eq!(rels.len(), 3);
    assert!(rels.contains(&Rel::Realtime));
}

#[test]
fn g1a_aborted_read() {
    let mut h = History::default();
    h.txn(0, 10, Done::Fail, vec![a("x", 1)])
        .ok(20, 30, vec![r("x", &[1])]);
    assert_flags(&h.check(), AnomalyKind::G1a, &[]);
}

#[test]
fn g1b_intermediate_read() {
    let mut h = History::default();
    h.ok(0, 100, vec![a("x", 1), a("x", 2)])
        .ok(0, 100, vec![r("x", &[1])]);
    // The reader also missed the writer's second append, which follows
    // the state it read: a G-single cycle too.
    assert_flags(&h.check(), AnomalyKind::G1b, &[AnomalyKind::GSingle]);
}

#[test]
fn dirty_update_builds_on_a_failed_append() {
    let mut h = History::default();
    h.txn(0, 10, Done::Fail, vec![a("x", 1)])
        .ok(20, 30, vec![a("x", 2)])
        .ok(40, 50, vec![r("x", &[1, 2])]);
    assert_flags(&h.check(), AnomalyKind::DirtyUpdate, &[AnomalyKind::G1a]);
}

#[test]
fn lost_update_two_appends_on_the_same_state() {
    let mut h = History::default();
    h.ok(0, 100, vec![r("x", &[]), a("x", 1)])
        .ok(0, 100, vec![r("x", &[]), a("x", 2)])
        .ok(200, 300, vec![r("x", &[1, 2])]);
    // Both read [] and appended: the second did not see the first's
    // append but came after it, a G-single cycle too.
    assert_flags(&h.check(), AnomalyKind::LostUpdate, &[AnomalyKind::GSingle]);
}

#[test]
fn duplicate_elements() {
    let mut h = History::default();
    h.ok(0, 10, vec![a("x", 1)])
        .ok(20, 30, vec![r("x", &[1, 1])]);
    assert_flags(&h.check(), AnomalyKind::DuplicateElements, &[]);
}

#[test]
fn incompatible_order() {
    let mut h = History::default();
    h.ok(0, 10, vec![a("x", 1)])
        .ok(0, 10, vec![a("x", 2)])
        .ok(0, 10, vec![a("x", 3)])
        .ok(20, 30, vec![r("x", &[1, 2])])
        .ok(20, 30, vec![r("x", &[1, 3, 2])]);
    assert_flags(
        &h.check(),
        AnomalyKind::IncompatibleOrder,
        // The longest read's order contradicts the other read's edges.
        &[
            AnomalyKind::GSingle,
            AnomalyKind::G2Item,
            AnomalyKind::GNonadjacent,
        ],
    );
}

#[test]
fn internal_inconsistency() {
    let mut h = History::default();
    h.ok(0, 10, vec![a("x", 1), r("x", &[])]);
    let report = h.check();
    assert_flags(&report, AnomalyKind::Internal, &[]);
    let mut h = History::default();
    h.ok(0, 10, vec![a("x", 1)])
        .ok(20, 30, vec![r("x", &[1]), r("x", &[])]);
    // Reading [] also puts the reader before the append it read first.
    assert_flags(&h.check(), AnomalyKind::Internal, &[AnomalyKind::GSingle]);
}

#[test]
fn future_read() {
    let mut h = History::default();
    h.ok(0, 10, vec![r("x", &[1]), a("x", 1)]);
    assert_flags(
        &h.check(),
        AnomalyKind::FutureRead,
        &[AnomalyKind::Internal],
    );
}

#[test]
fn phantom_and_garbage_reads() {
    let mut h = History::default();
    h.ok(0, 10, vec![a("x", 1)])
        .ok(20, 30, vec![r("x", &[1, 9])])
        .ok(
            20,
            30,
            vec![MicroOp::Read {
                key: "y".to_string(),
                value: Some(Observed::Garbage("1 two".to_string())),
            }],
        );
    let report = h.check();
    assert_flags(
        &report,
        AnomalyKind::PhantomElement,
        &[AnomalyKind::GarbageRead],
    );
    assert!(report.counts.contains_key(&AnomalyKind::GarbageRead));
}

#[test]
fn malformed_histories_are_errors() {
    let mut h = History::default();
    h.ok(0, 10, vec![a("x", 1)]).ok(20, 30, vec![a("x", 1)]);
    assert!(matches!(
        append::check(&h.events()),
        Err(AppendCheckError::DuplicateAppend { element: 1, .. })
    ));
    let mut h = History::default();
    h.ok(0, 10, vec![a("x", 1)]);
    let mut events = h.events();
    events[1].value = txn_to_json(&[a("x", 2)]);
    assert!(matches!(
        append::check(&events),
        Err(AppendCheckError::CompletionMismatch { .. })
    ));
    events[1].value = txn_to_json(&invoked(&[r("x", &[])]));
    events[0].value = events[1].value.clone();
    assert!(matches!(
        append::check(&events),
        Err(AppendCheckError::CompletionMismatch { .. })
    ));
}

/// One planned transaction of a generated serial execution.
#[derive(Debug, Clone)]
struct Planned {
    /// (key, append?) per micro-operation.
    mops: Vec<(u8, bool)>,
    /// 0–6 ok, 7 fail, 8 unknown and applied, 9 unknown and not applied.
    outcome: u8,
    /// How far before and after its place in the serial order the
    /// transaction is invoked and returns.
    before: u64,
    after: u64,
    /// Unknown outcomes: whether the completion is missing altogether.
    pending: bool,
}

impl Planned {
    /// Whether the transaction took effect.
    fn applied(&self) -> bool {
        self.outcome <= 6 || self.outcome == 8
    }

    /// How the transaction is recorded as ending.
    fn done(&self) -> Done {
        match self.outcome {
            0..=6 => Done::Ok,
            7 => Done::Fail,
            _ if self.pending => Done::Pending,
            _ => Done::Info,
        }
    }
}

fn planned() -> impl Strategy<Value = Planned> {
    (
        prop::collection::vec((0u8..4, any::<bool>()), 1..5),
        0u8..10,
        0u64..400,
        0u64..400,
        any::<bool>(),
    )
        .prop_map(|(mops, outcome, before, after, pending)| Planned {
            mops,
            outcome,
            before,
            after,
            pending,
        })
}

/// Runs the transactions one after another against lists in memory and
/// returns each one's micro-operations as observed, and its outcome.
fn execute(plan: &[Planned]) -> Vec<(Vec<MicroOp>, Done)> {
    let mut lists: HashMap<String, Vec<u64>> = HashMap::new();
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut executed = Vec::new();
    for p in plan {
        let mut state = lists.clone();
        let mut mops = Vec::new();
        for &(k, append) in &p.mops {
            let key = format!("k{k}");
            if append {
                let element = next.entry(key.clone()).or_insert(1);
                mops.push(a(&key, *element));
                state.entry(key).or_default().push(*element);
                *element += 1;
            } else {
                mops.push(r(&key, state.get(&key).map_or(&[][..], |l| l)));
            }
        }
        if p.applied() {
            lists = state;
        }
        executed.push((mops, p.done()));
    }
    executed
}

/// The serial execution recorded with the i-th transaction at time
/// 1000 + 100·i, invoked up to `before` earlier and returning up to
/// `after` later: every real-time order in the history agrees with the
/// serial order.
fn serial_history(plan: &[Planned]) -> History {
    let mut h = History::default();
    for (i, (p, (mops, done))) in plan.iter().zip(execute(plan)).enumerate() {
        let at = 1000 + 100 * i as u64;
        h.txn(at - p.before, at + p.after, done, mops);
    }
    h
}

fn seed() -> u64 {
    match std::env::var("CAIRN_JEPSEN_SEED") {
        Ok(s) => s.parse().expect("CAIRN_JEPSEN_SEED must be an integer"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// A runner whose randomness comes only from a printed seed.
fn runner(test: &str, cases: u32, seed: u64) -> TestRunner {
    println!("{test}: seed {seed} (rerun with CAIRN_JEPSEN_SEED={seed})");
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&seed.wrapping_add(i as u64).to_le_bytes());
    }
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Fails the test with the shrunk plan if a property did not hold.
fn assert_held(result: Result<(), TestError<Vec<Planned>>>) {
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => {
            panic!("{reason}\nminimal input: {input:#?}")
        }
        Err(e) => panic!("{e}"),
    }
}

/// Checks a generated history, failing the case if it is malformed.
fn check_generated(h: &History) -> Result<AppendReport, TestCaseError> {
    append::check(&h.events()).map_err(|e| TestCaseError::fail(e.to_string()))
}

#[test]
fn serial_executions_always_pass() {
    let mut runner = runner("serial_executions_always_pass", 300, seed());
    let strategy = prop::collection::vec(planned(), 1..60);
    let result = runner.run(&strategy, |plan| {
        let h = serial_history(&plan);
        let report = check_generated(&h)?;
        prop_assert!(
            report.valid(),
            "{:?}: {:#?}",
            report.counts,
            report.anomalies
        );
        Ok(())
    });
    assert_held(result);
}

#[test]
fn serial_executions_recorded_in_reverse_real_time_are_judged_exactly() {
    // Committed transactions, one after another in real time, but in the
    // reverse of the order they executed in: the only order real time
    // allows is the reverse one. The history is valid exactly when
    // replaying the transactions in that order gives every read.
    let mut runner = runner(
        "serial_executions_recorded_in_reverse_real_time_are_judged_exactly",
        300,
        seed(),
    );
    let strategy = prop::collection::vec(planned(), 2..40);
    // How many generated histories were valid and invalid: both must occur.
    let outcomes = std::cell::Cell::new((0u32, 0u32));
    let result = runner.run(&strategy, |mut plan| {
        for p in &mut plan {
            p.outcome %= 7;
        }
        let executed = execute(&plan);
        let mut h = History::default();
        let end = 1000 + 100 * plan.len() as u64;
        for (i, (mops, done)) in executed.iter().enumerate() {
            let at = end - 100 * i as u64;
            h.txn(at - 10, at, *done, mops.clone());
        }
        let mut lists: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut replays = true;
        for (mops, _) in executed.iter().rev() {
            for m in mops {
                match m {
                    MicroOp::Append { key, element } => {
                        lists.entry(key.as_str()).or_default().push(*element)
                    }
                    MicroOp::Read {
                        key,
                        value: Some(Observed::List(list)),
                    } => replays &= lists.get(key.as_str()).map_or(&[][..], |l| l) == list,
                    MicroOp::Read { .. } => unreachable!("executed reads have values"),
                }
            }
        }
        let report = check_generated(&h)?;
        let (valid, invalid) = outcomes.get();
        outcomes.set(if replays {
            (valid + 1, invalid)
        } else {
            (valid, invalid + 1)
        });
        prop_assert_eq!(
            report.valid(),
            replays,
            "{:?}: {:#?}",
            report.counts,
            report.anomalies
        );
        Ok(())
    });
    assert_held(result);
    let (valid, invalid) = outcomes.get();
    println!("{valid} valid and {invalid} invalid histories");
    assert!(valid > 0 && invalid > 0, "{valid} valid, {invalid} invalid");
}

/// 20,000 transactions as the workload makes them (ten keys active, each
/// retired after 128 appends, ten processes overlapping), some failed or
/// unknown, recorded from a serial execution.
#[test]
fn twenty_thousand_transactions_check_quickly() {
    let seed = seed();
    println!("twenty_thousand_transactions_check_quickly: seed {seed} (rerun with CAIRN_JEPSEN_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut slots: Vec<(u64, u64)> = (0..10).map(|id| (id, 1)).collect();
    let mut next_id = 10;
    let plan: Vec<Planned> = (0..20_000)
        .map(|_| {
            let len = rng.random_range(1..=4);
            let mops = (0..len)
                .map(|_| (rng.random_range(0..10u8), rng.random_bool(0.5)))
                .collect();
            Planned {
                mops,
                outcome: rng.random_range(0..10),
                before: rng.random_range(0..500),
                after: rng.random_range(0..500),
                pending: false,
            }
        })
        .collect();
    // Map slot numbers to rotating keys: retire a slot's key after 128
    // appends.
    let mut lists: HashMap<String, Vec<u64>> = HashMap::new();
    let mut h = History::default();
    for (i, p) in plan.iter().enumerate() {
        let at = 1000 + 100 * i as u64;
        let mut state = lists.clone();
        let mut mops = Vec::new();
        for &(slot, append) in &p.mops {
            let (id, element) = slots[slot as usize];
            let key = format!("k{id}");
            if append {
                mops.push(a(&key, element));
                state.entry(key).or_default().push(element);
                if element == 128 {
                    slots[slot as usize] = (next_id, 1);
                    next_id += 1;
                } else {
                    slots[slot as usize].1 += 1;
                }
            } else {
                mops.push(r(&key, state.get(&key).map_or(&[][..], |l| l)));
            }
        }
        if p.applied() {
            lists = state;
        }
        h.txn(at - p.before, at + p.after, p.done(), mops);
    }
    let events = h.events();
    let started = Instant::now();
    let report = append::check(&events).expect("well-formed");
    let elapsed = started.elapsed();
    println!("{}", report.summary_line());
    println!("checked {} events in {elapsed:?}", events.len());
    assert_valid(&report);
    assert_eq!(report.txns, 20_000);
    assert!(
        report.edges.realtime < 20 * report.txns,
        "real-time edges stay few"
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}
