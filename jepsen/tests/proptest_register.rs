//! Property tests of the register checker.
//!
//! - Histories recorded from a real sequential execution, with random
//!   overlaps, unknown and failed outcomes, must be linearizable, with a
//!   witness that an independent replay accepts.
//! - The same histories with one read returning a value nobody wrote must
//!   not be.
//! - On small arbitrary histories the checker must agree with a brute-force
//!   search over all orders.
//!
//! Each test prints its seed; set `CAIRN_JEPSEN_SEED=<seed>` to rerun one.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use serde_json::{json, Value};

use cairn_jepsen::checker::register::{self, Verdict};
use cairn_jepsen::checker::Budget;
use cairn_jepsen::history::{self, Completion, Event, EventType, Operation};

/// A value no generated operation ever writes.
const NEVER_WRITTEN: u64 = 1000;

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
fn runner(test: &str, cases: u32) -> TestRunner {
    let seed = seed();
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

fn run<S: Strategy>(
    test: &str,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = runner(test, cases);
    match runner.run(&strategy, property) {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => {
            panic!("{test}: {reason}\nminimal input: {input:#?}")
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// The budget for generated histories: they are small, so any Unknown is
/// a failure, and the bound keeps a regression from hanging the test.
fn budget() -> Budget {
    Budget {
        timeout: Some(Duration::from_secs(10)),
        ..Budget::default()
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Read,
    Write,
    Cas,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    /// Took effect, but the client never learned it.
    InfoApplied,
    /// Never took effect, and the client never learned it.
    InfoNotApplied,
    /// Never took effect, and the client knows.
    FailNotApplied,
}

/// One operation of a sequential execution: it takes effect at time
/// `100 * (position + 10)`; the client invoked it `before` earlier and
/// learned the outcome `after` later. With gaps of 100 and slack up to 400
/// on either side, up to about 8 operations overlap.
#[derive(Debug, Clone)]
struct PlannedOp {
    kind: Kind,
    key: u8,
    value: u64,
    /// Whether a cas compares against the current value (and succeeds);
    /// otherwise against `value + 1`, which may or may not match.
    cas_hits: bool,
    before: u64,
    after: u64,
    outcome: Outcome,
}

fn planned_op() -> impl Strategy<Value = PlannedOp> {
    (
        prop_oneof![Just(Kind::Read), Just(Kind::Write), Just(Kind::Cas)],
        0..3u8,
        0..5u64,
        any::<bool>(),
        0..400u64,
        0..400u64,
        prop_oneof![
            8 => Just(Outcome::Ok),
            1 => Just(Outcome::InfoApplied),
            1 => Just(Outcome::InfoNotApplied),
            1 => Just(Outcome::FailNotApplied),
        ],
    )
        .prop_map(
            |(kind, key, value, cas_hits, before, after, outcome)| PlannedOp {
                kind,
                key,
                value,
                cas_hits,
                before,
                after,
                outcome,
            },
        )
}

#[derive(Debug, Clone)]
struct Plan {
    ops: Vec<PlannedOp>,
    multi_key: bool,
    /// Picks the read to corrupt in the mutated history.
    mutate: prop::sample::Index,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        prop::collection::vec(planned_op(), 1..40),
        any::<bool>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(ops, multi_key, mutate)| Plan {
            ops,
            multi_key,
            mutate,
        })
}

/// One operation as the client saw it.
struct Recorded {
    key: Option<String>,
    f: &'static str,
    input: Value,
    output: Value,
    call: u64,
    completion: EventType,
    ret: u64,
}

/// Executes the plan on a real register and records what clients saw.
fn execute(plan: &Plan) -> Vec<Recorded> {
    let mut registers: [Option<u64>; 3] = [None; 3];
    let mut recorded = Vec::new();
    for (i, op) in plan.ops.iter().enumerate() {
        let key = if plan.multi_key { op.key } else { 0 };
        let register = &mut registers[key as usize];
        let at = 100 * (i as u64 + 10);
        let applies = matches!(op.outcome, Outcome::Ok | Outcome::InfoApplied);
        let (f, input, output, mut completion) = match op.kind {
            Kind::Read => ("read", Value::Null, json!(*register), EventType::Ok),
            Kind::Write => {
                if applies {
                    *register = Some(op.value);
                }
                ("write", json!(op.value), json!(op.value), EventType::Ok)
            }
            Kind::Cas => {
                let from = match (*register, op.cas_hits) {
                    (Some(current), true) => current,
                    _ => op.value + 1,
                };
                let input = json!([from, op.value]);
                if *register == Some(from) {
                    if applies {
                        *register = Some(op.value);
                    }
                    ("cas", input.clone(), input, EventType::Ok)
                } else {
                    // The compare failed: the cas did not take effect.
                    ("cas", input.clone(), input, EventType::Fail)
                }
            }
        };
        match op.outcome {
            Outcome::Ok => {}
            Outcome::InfoApplied | Outcome::InfoNotApplied => completion = EventType::Info,
            Outcome::FailNotApplied => completion = EventType::Fail,
        }
        recorded.push(Recorded {
            key: plan.multi_key.then(|| format!("k{key}")),
            f,
            input,
            output,
            call: at - op.before,
            completion,
            ret: at + op.after,
        });
    }
    recorded
}

/// Assigns processes (a process runs one operation at a time; after an
/// `info` it is retired, as in Jepsen) and turns the operations into the
/// history's events, in time order.
fn events(recorded: &[Recorded]) -> Vec<Event> {
    let mut by_call: Vec<usize> = (0..recorded.len()).collect();
    by_call.sort_by_key(|&i| (recorded[i].call, i));
    let mut free_at: Vec<u64> = Vec::new();
    let mut timed: Vec<(u64, usize, u8, Event)> = Vec::new();
    for i in by_call {
        let r = &recorded[i];
        let process = match free_at.iter().position(|&t| t < r.call) {
            Some(p) => p,
            None => {
                free_at.push(0);
                free_at.len() - 1
            }
        };
        free_at[process] = if r.completion == EventType::Info {
            u64::MAX
        } else {
            r.ret
        };
        let event = |kind, value: &Value, t_ns| Event {
            index: 0,
            kind,
            process: process as u64,
            f: r.f.to_string(),
            key: r.key.clone(),
            value: value.clone(),
            t_ns,
            node: None,
            error: None,
            rev: None,
        };
        let output = if r.completion == EventType::Ok {
            &r.output
        } else {
            &Value::Null
        };
        timed.push((r.call, i, 0, event(EventType::Invoke, &r.input, r.call)));
        timed.push((r.ret, i, 1, event(r.completion, output, r.ret)));
    }
    timed.sort_by_key(|&(t, i, kind, _)| (t, i, kind));
    timed
        .into_iter()
        .enumerate()
        .map(|(index, (_, _, _, mut event))| {
            event.index = index as u64;
            event
        })
        .collect()
}

/// Pairs the events through a JSONL round trip, as a recorded run would be read back.
fn paired(events: &[Event]) -> Vec<Operation> {
    let mut jsonl = Vec::new();
    history::write_jsonl(&mut jsonl, events).unwrap();
    let events = history::read_jsonl(jsonl.as_slice()).unwrap();
    history::pair(&events).unwrap().ops
}

#[test]
fn sequential_executions_are_linearizable() {
    run(
        "sequential_executions_are_linearizable",
        1000,
        plan(),
        |plan| {
            let ops = paired(&events(&execute(&plan)));
            let report = register::check(&ops, budget()).unwrap();
            match &report.verdict {
                Verdict::Linearizable { witness } => {
                    common::validate_witness(&ops, witness).map_err(TestCaseError::fail)?;
                }
                other => {
                    return Err(TestCaseError::fail(format!(
                        "expected linearizable, got {other:?}"
                    )))
                }
            }
            Ok(())
        },
    );
}

#[test]
fn a_read_of_a_value_never_written_is_caught() {
    run(
        "a_read_of_a_value_never_written_is_caught",
        1000,
        plan(),
        |plan| {
            let mut recorded = execute(&plan);
            let reads: Vec<usize> = (0..recorded.len())
                .filter(|&i| recorded[i].f == "read" && recorded[i].completion == EventType::Ok)
                .collect();
            if reads.is_empty() {
                let last = recorded.iter().map(|r| r.ret).max().unwrap_or(0);
                recorded.push(Recorded {
                    key: plan.multi_key.then(|| "k0".to_string()),
                    f: "read",
                    input: Value::Null,
                    output: json!(NEVER_WRITTEN),
                    call: last + 1,
                    completion: EventType::Ok,
                    ret: last + 2,
                });
            } else {
                recorded[reads[plan.mutate.index(reads.len())]].output = json!(NEVER_WRITTEN);
            }
            let ops = paired(&events(&recorded));
            let report = register::check(&ops, budget()).unwrap();
            match &report.verdict {
                Verdict::NotLinearizable(e) => {
                    // The explanation's prefix must itself be a valid partial linearization.
                    let prefix: Vec<Operation> = e.prefix.iter().map(|&i| ops[i].clone()).collect();
                    let order: Vec<usize> = (0..prefix.len()).collect();
                    common::validate_witness(&prefix, &[order]).map_err(TestCaseError::fail)?;
                }
                other => {
                    return Err(TestCaseError::fail(format!(
                        "expected not linearizable, got {other:?}"
                    )))
                }
            }
            Ok(())
        },
    );
}

/// A small arbitrary history on one register: values 0..3, any overlaps.
fn small_history() -> impl Strategy<Value = Vec<Operation>> {
    let op = (
        0..3u8,
        0..3u64,
        0..3u64,
        prop::option::of(0..3u64),
        0..30u64,
        0..15u64,
        prop::bool::weighted(0.2),
    );
    prop::collection::vec(op, 0..8).prop_map(|spec| {
        spec.into_iter()
            .enumerate()
            .map(|(i, (kind, a, b, seen, call, duration, unknown))| {
                let (f, input, output) = match kind {
                    0 => ("read", Value::Null, json!(seen)),
                    1 => ("write", json!(a), Value::Null),
                    _ => ("cas", json!([a, b]), Value::Null),
                };
                Operation {
                    process: i as u64,
                    f: f.to_string(),
                    key: None,
                    input,
                    call_ns: call,
                    invoke_index: i as u64,
                    completion: if unknown {
                        Completion::Info
                    } else {
                        Completion::Ok {
                            output,
                            return_ns: call + duration,
                            return_index: i as u64,
                        }
                    },
                }
            })
            .collect()
    })
}

/// Tries every order: an operation may go next if no operation still to
/// place returned before it was invoked; an operation with unknown outcome
/// may also never take effect. No memoization, no shared code.
fn brute_force(ops: &[Operation]) -> bool {
    fn search(ops: &[Operation], placed: &mut Vec<bool>, register: Option<Value>) -> bool {
        let pending: Vec<usize> = (0..ops.len()).filter(|&i| !placed[i]).collect();
        if pending
            .iter()
            .all(|&i| ops[i].completion == Completion::Info)
        {
            return true;
        }
        for &i in &pending {
            let op = &ops[i];
            let blocked = pending
                .iter()
                .any(|&j| ops[j].return_ns().is_some_and(|ret| ret < op.call_ns));
            if blocked {
                continue;
            }
            let unknown = op.completion == Completion::Info;
            let next = match op.f.as_str() {
                "read" => match &op.completion {
                    Completion::Info => Some(register.clone()),
                    Completion::Ok { output, .. } => {
                        let seen = (!output.is_null()).then(|| output.clone());
                        (seen == register).then_some(register.clone())
                    }
                },
                "write" => Some(Some(op.input.clone())),
                _ => {
                    let hits = register.as_ref() == Some(&op.input[0]);
                    if hits {
                        Some(Some(op.input[1].clone()))
                    } else if unknown {
                        Some(register.clone())
                    } else {
                        None
                    }
                }
            };
            if let Some(next) = next {
                placed[i] = true;
                let found = search(ops, placed, next);
                placed[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    search(ops, &mut vec![false; ops.len()], None)
}

#[test]
fn small_histories_agree_with_brute_force() {
    let linearizable = std::cell::Cell::new(0u32);
    let total = std::cell::Cell::new(0u32);
    run(
        "small_histories_agree_with_brute_force",
        2000,
        small_history(),
        |ops| {
            let expected = brute_force(&ops);
            let report = register::check(&ops, budget()).unwrap();
            let got = match &report.verdict {
                Verdict::Linearizable { witness } => {
                    common::validate_witness(&ops, witness).map_err(TestCaseError::fail)?;
                    true
                }
                Verdict::NotLinearizable(_) => false,
                Verdict::Unknown(e) => return Err(TestCaseError::fail(format!("unknown: {e}"))),
            };
            prop_assert_eq!(got, expected, "checker says {}", report.verdict.name());
            linearizable.set(linearizable.get() + u32::from(expected));
            total.set(total.get() + 1);
            Ok(())
        },
    );
    // Both answers must be well represented, or the agreement means little.
    let yes = linearizable.get();
    println!("{yes} of {} cases linearizable", total.get());
    assert!(
        (200..=1800).contains(&yes),
        "{yes} of 2000 cases linearizable"
    );
}
