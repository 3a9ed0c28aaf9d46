//! Linearizability of registers: `read`, `write v` and `cas [from to]` on
//! keys that each start out missing.
//!
//! History conventions (see [`crate::history`]):
//! - `read`: the invoke's value is ignored; an `ok` read's value is what it
//!   saw, `null` for a missing key. A read with an unknown outcome changed
//!   nothing and observed nothing, so it is dropped.
//! - `write`: the invoke's value is written.
//! - `cas`: the invoke's value is `[from, to]`; an `ok` cas found `from`
//!   and wrote `to`. A cas whose compare failed must be recorded as `fail`
//!   (not applied) and is dropped like every failed operation.
//!
//! Keys are independent registers, so the history is linearizable iff each
//! key's sub-history is (P-compositionality, Horn & Kroening 2015); each key
//! gets its own, much smaller, search. Values are compared as JSON and
//! interned to integers, so a model state is one `Option<u32>`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde_json::Value;

use super::wgl::{self, Call, Model, Outcome, WglError};
use super::{Budget, Exhausted, Meter};
use crate::history::{Completion, Operation};

/// A register operation with its observed result; values are interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read that returned this value (`None`: the key was missing).
    Read(Option<u32>),
    /// A write, acknowledged or with unknown outcome.
    Write(u32),
    /// An acknowledged cas: the register held `from` and now holds `to`.
    Cas { from: u32, to: u32 },
    /// A cas with unknown outcome: when it takes effect, it writes `to` if
    /// the register holds `from` and does nothing otherwise.
    CasUnknown { from: u32, to: u32 },
}

/// The sequential register; `None` is the missing key.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type Op = RegisterOp;
    type State = Option<u32>;

    fn init(&self) -> Option<u32> {
        None
    }

    fn step(&self, state: &Option<u32>, op: &RegisterOp) -> Option<Option<u32>> {
        match *op {
            RegisterOp::Read(seen) => (*state == seen).then_some(*state),
            RegisterOp::Write(v) => Some(Some(v)),
            RegisterOp::Cas { from, to } => (*state == Some(from)).then_some(Some(to)),
            RegisterOp::CasUnknown { from, to } => Some(if *state == Some(from) {
                Some(to)
            } else {
                *state
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("event {index}: `{f}` is not a register operation (read, write, cas)")]
    UnsupportedFunction { index: u64, f: String },
    #[error("event {index}: `{f}` needs {expected}, got {value}")]
    BadValue {
        index: u64,
        f: String,
        expected: &'static str,
        value: Value,
    },
    #[error("key {key:?}: {source}")]
    Search {
        key: Option<String>,
        source: WglError,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every key's sub-history is linearizable. `witness` holds, per key
    /// (in key order), its operations as indices into the checked slice,
    /// in an order the register model accepts and that respects real time.
    Linearizable {
        witness: Vec<Vec<usize>>,
    },
    NotLinearizable(Box<Explanation>),
    /// The budget ran out before any key was found non-linearizable.
    Unknown(Exhausted),
}

impl Verdict {
    /// `linearizable`, `not linearizable` or `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Linearizable { .. } => "linearizable",
            Verdict::NotLinearizable(_) => "not linearizable",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

/// A minimal account of why a history is not linearizable, from the deepest
/// point the search reached on the first key found non-linearizable.
/// Operations are indices into the checked slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub key: Option<String>,
    /// Operations of that key that took part in the search (after pruning).
    pub key_operations: usize,
    /// The longest linearizable prefix, in linearization order.
    pub prefix: Vec<usize>,
    /// The register after `prefix` (`None`: missing).
    pub value_after_prefix: Option<Value>,
    /// The operation that had to take effect next but cannot.
    pub blocked: usize,
    /// The other operations pending at that point. None of them can take
    /// effect after the prefix either: one that could would have given a
    /// longer prefix.
    pub candidates: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub verdict: Verdict,
    /// Operations that took part in the check (`fail`ed operations never
    /// reach the checker; reads with unknown outcome are dropped here).
    pub operations: usize,
    /// Of those, writes and cas with unknown outcome whose written value no
    /// other operation reads or compares against. Such an operation can be
    /// taken to have never happened without changing the verdict, so it is
    /// not searched.
    pub pruned: usize,
    pub keys: usize,
    pub steps: u64,
    pub configurations: u64,
    pub elapsed: Duration,
}

/// Checks a paired history of register operations.
pub fn check(ops: &[Operation], budget: Budget) -> Result<Report, RegisterError> {
    let mut meter = Meter::start(budget);
    let mut values = Interner::default();
    let mut partitions: BTreeMap<Option<&str>, Partition> = BTreeMap::new();
    let mut operations = 0;
    for (i, op) in ops.iter().enumerate() {
        let Some(register_op) = to_register_op(op, &mut values)? else {
            continue;
        };
        operations += 1;
        let partition = partitions.entry(op.key.as_deref()).or_default();
        partition.indices.push(i);
        partition.calls.push(Call {
            op: register_op,
            call: op.call_ns,
            ret: op.return_ns(),
        });
    }
    let keys = partitions.len();
    let mut witness = Vec::with_capacity(keys);
    let mut exhausted = None;
    let mut pruned = 0;
    for (key, partition) in partitions {
        let (Partition { indices, calls }, unobserved) = prune_unobserved(partition);
        pruned += unobserved.len();
        let outcome = wgl::check(&RegisterModel, &calls, &mut meter).map_err(|source| {
            RegisterError::Search {
                key: key.map(str::to_string),
                source,
            }
        })?;
        match outcome {
            Outcome::Linearizable { order } => {
                // Never taking effect is the same as taking effect after
                // everything else, so the pruned operations go last.
                witness.push(
                    order
                        .into_iter()
                        .map(|i| indices[i])
                        .chain(unobserved)
                        .collect(),
                );
            }
            Outcome::NotLinearizable(failure) => {
                let candidates = failure.candidates.iter().map(|&c| indices[c]).collect();
                let explanation = Explanation {
                    key: key.map(str::to_string),
                    key_operations: calls.len(),
                    prefix: failure.prefix.iter().map(|&i| indices[i]).collect(),
                    value_after_prefix: failure.state.map(|v| values.value(v).clone()),
                    blocked: indices[failure.blocked],
                    candidates,
                };
                return Ok(Report {
                    verdict: Verdict::NotLinearizable(Box::new(explanation)),
                    operations,
                    pruned,
                    keys,
                    steps: meter.steps(),
                    configurations: meter.configurations(),
                    elapsed: meter.elapsed(),
                });
            }
            Outcome::Unknown(e) => {
                // A later key may still prove the history non-linearizable,
                // which is a definite answer. After a timeout nothing is
                // left to try; after the step limit, keys that need fewer
                // than a batch of steps still finish; the memory limit is
                // per key.
                exhausted.get_or_insert(e);
                if matches!(e, Exhausted::Timeout(_)) {
                    break;
                }
            }
        }
    }
    let verdict = match exhausted {
        Some(e) => Verdict::Unknown(e),
        None => Verdict::Linearizable { witness },
    };
    Ok(Report {
        verdict,
        operations,
        pruned,
        keys,
        steps: meter.steps(),
        configurations: meter.configurations(),
        elapsed: meter.elapsed(),
    })
}

/// One key's operations: `calls[i]` is `ops[indices[i]]` of the checked slice.
#[derive(Default)]
struct Partition {
    indices: Vec<usize>,
    calls: Vec<Call<RegisterOp>>,
}

/// Removes the writes and cas with unknown outcome whose effect nothing
/// observes: an unknown write of `v` (or unknown cas to `v`) such that no
/// read returned `v` and no cas compares against `v`. Returns the remaining
/// partition and the pruned operations' indices into the checked slice.
///
/// Why this is sound: take any linearization in which such an operation `u`
/// takes effect. Until the next write, the register holds `v`, so no read and
/// no acknowledged cas can sit in that stretch (they would observe `v`), and
/// each unknown cas there found no `v` and did nothing. Remove `u` and move
/// those unknown cas to the very end — legal for operations that never
/// return — and every other operation sees the same state as before. So the
/// history is linearizable iff it is without `u`. Removing one such operation
/// only removes observations, so the others stay removable.
///
/// This matters for speed: an unknown operation never returns, so it stays
/// a candidate for the rest of the search and doubles its branching. With
/// unique written values — what the harness records — most unknown writes
/// are never read and cost nothing.
fn prune_unobserved(partition: Partition) -> (Partition, Vec<usize>) {
    let mut observed = HashSet::new();
    for call in &partition.calls {
        match call.op {
            RegisterOp::Read(Some(v)) => {
                observed.insert(v);
            }
            RegisterOp::Cas { from, .. } | RegisterOp::CasUnknown { from, .. } => {
                observed.insert(from);
            }
            RegisterOp::Read(None) | RegisterOp::Write(_) => {}
        }
    }
    let mut kept = Partition::default();
    let mut pruned = Vec::new();
    for (index, call) in partition.indices.into_iter().zip(partition.calls) {
        let written = match call.op {
            RegisterOp::Write(v) | RegisterOp::CasUnknown { to: v, .. } => Some(v),
            RegisterOp::Read(_) | RegisterOp::Cas { .. } => None,
        };
        match written {
            Some(v) if call.ret.is_none() && !observed.contains(&v) => pruned.push(index),
            _ => {
                kept.indices.push(index);
                kept.calls.push(call);
            }
        }
    }
    (kept, pruned)
}

/// The checker's view of one operation; `None` for a read with unknown
/// outcome, which constrains nothing.
fn to_register_op(
    op: &Operation,
    values: &mut Interner,
) -> Result<Option<RegisterOp>, RegisterError> {
    let bad = |expected, value: &Value| RegisterError::BadValue {
        index: op.invoke_index,
        f: op.f.clone(),
        expected,
        value: value.clone(),
    };
    let unknown = matches!(op.completion, Completion::Info);
    let register_op = match op.f.as_str() {
        "read" => match &op.completion {
            Completion::Info => return Ok(None),
            Completion::Ok { output, .. } => {
                RegisterOp::Read((!output.is_null()).then(|| values.intern(output)))
            }
        },
        "write" => {
            if op.input.is_null() {
                return Err(bad("a value", &op.input));
            }
            RegisterOp::Write(values.intern(&op.input))
        }
        "cas" => {
            let (from, to) = match op.input.as_array().map(Vec::as_slice) {
                Some([from, to]) if !from.is_null() && !to.is_null() => {
                    (values.intern(from), values.intern(to))
                }
                _ => return Err(bad("[from, to]", &op.input)),
            };
            if unknown {
                RegisterOp::CasUnknown { from, to }
            } else {
                RegisterOp::Cas { from, to }
            }
        }
        _ => {
            return Err(RegisterError::UnsupportedFunction {
                index: op.invoke_index,
                f: op.f.clone(),
            })
        }
    };
    Ok(Some(register_op))
}

/// Maps each distinct JSON value (by its canonical text, so `1` and `"1"`
/// differ) to a small integer.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    values: Vec<Value>,
}

impl Interner {
    fn intern(&mut self, value: &Value) -> u32 {
        let next = self.values.len() as u32;
        let id = *self.ids.entry(value.to_string()).or_insert(next);
        if id == next {
            self.values.push(value.clone());
        }
        id
    }

    fn value(&self, id: u32) -> &Value {
        &self.values[id as usize]
    }
}

/// How many operations of the prefix an explanation shows: the end of the
/// prefix is what leads to the blocked operation.
const PREFIX_SHOWN: usize = 8;

impl Explanation {
    /// Renders the explanation, one fact per line, each line prefixed with
    /// `indent`. `ops` must be the slice that was checked.
    pub fn display<'a>(&'a self, ops: &'a [Operation], indent: &'a str) -> impl fmt::Display + 'a {
        ExplanationDisplay {
            explanation: self,
            ops,
            indent,
        }
    }
}

struct ExplanationDisplay<'a> {
    explanation: &'a Explanation,
    ops: &'a [Operation],
    indent: &'a str,
}

impl fmt::Display for ExplanationDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (e, ops, indent) = (self.explanation, self.ops, self.indent);
        let key = match &e.key {
            Some(key) => format!("key {key:?}: "),
            None => String::new(),
        };
        let value = match &e.value_after_prefix {
            Some(v) => v.to_string(),
            None => "missing".to_string(),
        };
        writeln!(
            f,
            "{indent}{key}longest linearizable prefix: {} of {} operations, after which the register is {value}",
            e.prefix.len(),
            e.key_operations
        )?;
        if !e.prefix.is_empty() {
            let shown = e.prefix.len().min(PREFIX_SHOWN);
            let skipped = e.prefix.len() - shown;
            let ellipsis = if skipped > 0 {
                format!(" (last {shown})")
            } else {
                String::new()
            };
            writeln!(f, "{indent}prefix{ellipsis}:")?;
            for &op in &e.prefix[skipped..] {
                writeln!(f, "{indent}  {}", describe(&ops[op]))?;
            }
        }
        writeln!(
            f,
            "{indent}cannot take effect next, yet everything left was invoked after it returned:"
        )?;
        writeln!(f, "{indent}  {}", describe(&ops[e.blocked]))?;
        if e.candidates.is_empty() {
            writeln!(f, "{indent}no other operation was pending")?;
        } else {
            writeln!(
                f,
                "{indent}other pending operations, none of which can take effect here either:"
            )?;
            for &c in &e.candidates {
                writeln!(f, "{indent}  {}", describe(&ops[c]))?;
            }
        }
        Ok(())
    }
}

/// One operation as a human reads it, with the history events it spans.
fn describe(op: &Operation) -> String {
    let what = match (op.f.as_str(), &op.completion) {
        ("read", Completion::Ok { output, .. }) if output.is_null() => {
            "read -> missing".to_string()
        }
        ("read", Completion::Ok { output, .. }) => format!("read -> {output}"),
        ("write", _) => format!("write {}", op.input),
        ("cas", _) => match op.input.as_array().map(Vec::as_slice) {
            Some([from, to]) => format!("cas {from} -> {to}"),
            _ => format!("cas {}", op.input),
        },
        (f, _) => format!("{f} {}", op.input),
    };
    let when = match &op.completion {
        Completion::Ok {
            return_index,
            return_ns,
            ..
        } => format!(
            "events {}..{}, t_ns {}..{}",
            op.invoke_index, return_index, op.call_ns, return_ns
        ),
        Completion::Info => format!(
            "event {}.., t_ns {}.., outcome unknown",
            op.invoke_index, op.call_ns
        ),
    };
    format!("process {} {what} ({when})", op.process)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `(process, f, input, output, call, ret)`; `ret: None` is an unknown outcome.
    type Spec<'a> = (u64, &'a str, Value, Value, u64, Option<u64>);

    fn ops(spec: &[Spec]) -> Vec<Operation> {
        spec.iter()
            .enumerate()
            .map(|(i, (process, f, input, output, call, ret))| Operation {
                process: *process,
                f: f.to_string(),
                key: None,
                input: input.clone(),
                call_ns: *call,
                invoke_index: i as u64,
                completion: match ret {
                    Some(ret) => Completion::Ok {
                        output: output.clone(),
                        return_ns: *ret,
                        return_index: i as u64,
                    },
                    None => Completion::Info,
                },
            })
            .collect()
    }

    fn verdict(history: &[Operation]) -> Verdict {
        check(history, Budget::default()).unwrap().verdict
    }

    fn assert_linearizable(history: &[Operation]) -> Vec<Vec<usize>> {
        match verdict(history) {
            Verdict::Linearizable { witness } => witness,
            other => panic!("expected linearizable, got {other:?}"),
        }
    }

    fn assert_not_linearizable(history: &[Operation]) -> Explanation {
        match verdict(history) {
            Verdict::NotLinearizable(e) => *e,
            other => panic!("expected not linearizable, got {other:?}"),
        }
    }

    const NIL: Value = Value::Null;

    #[test]
    fn concurrent_write_and_read_in_either_order() {
        // The read overlaps the write, so it may see the old or the new value.
        for (seen, order) in [(json!(null), vec![1, 0]), (json!(1), vec![0, 1])] {
            let history = ops(&[
                (0, "write", json!(1), NIL, 0, Some(10)),
                (1, "read", NIL, seen, 5, Some(15)),
            ]);
            assert_eq!(assert_linearizable(&history), vec![order]);
        }
    }

    #[test]
    fn stale_read_is_rejected() {
        // write 1, then write 2 completes, then a read invoked afterwards sees 1.
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "write", json!(2), NIL, 20, Some(30)),
            (2, "read", NIL, json!(1), 40, Some(50)),
        ]);
        let e = assert_not_linearizable(&history);
        assert_eq!(e.prefix, vec![0, 1]);
        assert_eq!(e.value_after_prefix, Some(json!(2)));
        assert_eq!(e.blocked, 2);
        assert!(e.candidates.is_empty());
        // The same read concurrent with the second write is fine.
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "write", json!(2), NIL, 20, Some(45)),
            (2, "read", NIL, json!(1), 40, Some(50)),
        ]);
        assert_eq!(assert_linearizable(&history), vec![vec![0, 2, 1]]);
    }

    #[test]
    fn read_of_a_missing_key_after_a_write_is_rejected() {
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "read", NIL, NIL, 11, Some(12)),
        ]);
        assert_eq!(assert_not_linearizable(&history).blocked, 1);
    }

    #[test]
    fn cas_succeeds_only_on_the_expected_value() {
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "cas", json!([1, 2]), NIL, 20, Some(30)),
            (2, "read", NIL, json!(2), 40, Some(50)),
        ]);
        assert_linearizable(&history);
        // Two sequential cas from the same value cannot both succeed.
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "cas", json!([1, 2]), NIL, 20, Some(30)),
            (2, "cas", json!([1, 3]), NIL, 40, Some(50)),
        ]);
        let e = assert_not_linearizable(&history);
        assert_eq!((e.prefix, e.blocked), (vec![0, 1], 2));
        // Concurrent, one of them can go first — but still not both.
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "cas", json!([1, 2]), NIL, 20, Some(50)),
            (2, "cas", json!([1, 3]), NIL, 30, Some(60)),
        ]);
        let e = assert_not_linearizable(&history);
        assert_eq!((e.prefix, e.blocked, e.candidates), (vec![0, 1], 2, vec![]));
        // A cas on a missing key cannot succeed.
        let history = ops(&[(0, "cas", json!([1, 2]), NIL, 0, Some(10))]);
        assert_not_linearizable(&history);
    }

    #[test]
    fn cas_chain_through_concurrency() {
        // Three overlapping cas that only work in the order 1->2->3->4.
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(5)),
            (1, "cas", json!([3, 4]), NIL, 10, Some(40)),
            (2, "cas", json!([2, 3]), NIL, 11, Some(41)),
            (3, "cas", json!([1, 2]), NIL, 12, Some(42)),
            (4, "read", NIL, json!(4), 50, Some(60)),
        ]);
        assert_eq!(assert_linearizable(&history), vec![vec![0, 3, 2, 1, 4]]);
    }

    #[test]
    fn unknown_write_may_take_effect_late() {
        // The write never completed, yet a read long after its invoke sees it,
        // and a read before that did not.
        let history = ops(&[
            (0, "write", json!(7), NIL, 0, None),
            (1, "read", NIL, NIL, 10, Some(20)),
            (1, "read", NIL, json!(7), 1000, Some(1010)),
        ]);
        assert_eq!(assert_linearizable(&history), vec![vec![1, 0, 2]]);
    }

    #[test]
    fn unknown_write_may_never_take_effect() {
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "write", json!(2), NIL, 20, None),
            (2, "read", NIL, json!(1), 30, Some(40)),
            (2, "read", NIL, json!(1), 50, Some(60)),
        ]);
        assert_eq!(assert_linearizable(&history), vec![vec![0, 2, 3, 1]]);
    }

    #[test]
    fn unknown_write_cannot_take_effect_before_its_invoke() {
        let history = ops(&[
            (0, "read", NIL, json!(5), 0, Some(10)),
            (1, "write", json!(5), NIL, 20, None),
        ]);
        assert_not_linearizable(&history);
    }

    #[test]
    fn unknown_write_takes_effect_at_most_once() {
        // Seeing 1, then 2, then 1 again needs two writes of 1 after the 2.
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, None),
            (1, "write", json!(2), NIL, 0, Some(10)),
            (2, "read", NIL, json!(1), 20, Some(30)),
            (2, "read", NIL, json!(2), 40, Some(50)),
            (2, "read", NIL, json!(1), 60, Some(70)),
        ]);
        let e = assert_not_linearizable(&history);
        assert_eq!((e.prefix, e.blocked), (vec![1, 0, 2], 3));
    }

    #[test]
    fn unknown_cas_applies_only_if_it_matches() {
        let base = [
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "cas", json!([1, 2]), NIL, 20, None),
        ];
        let mut seen_two = base.to_vec();
        seen_two.push((2, "read", NIL, json!(2), 30, Some(40)));
        assert_linearizable(&ops(&seen_two));
        let mut seen_one = base.to_vec();
        seen_one.push((2, "read", NIL, json!(1), 30, Some(40)));
        assert_linearizable(&ops(&seen_one));
        // With the register at 3, the cas from 1 cannot produce 2.
        let history = ops(&[
            (0, "write", json!(3), NIL, 0, Some(10)),
            (1, "cas", json!([1, 2]), NIL, 20, None),
            (2, "read", NIL, json!(2), 30, Some(40)),
        ]);
        assert_not_linearizable(&history);
    }

    #[test]
    fn failed_and_unknown_reads_are_ignored() {
        let events = crate::jepsen_log::parse(
            "INFO  jepsen.util - 0\t:invoke\t:write\t1\n\
             INFO  jepsen.util - 0\t:ok\t:write\t1\n\
             INFO  jepsen.util - 1\t:invoke\t:write\t2\n\
             INFO  jepsen.util - 1\t:fail\t:write\t2\n\
             INFO  jepsen.util - 2\t:invoke\t:cas\t[1 3]\n\
             INFO  jepsen.util - 2\t:fail\t:cas\t[1 3]\n\
             INFO  jepsen.util - 3\t:invoke\t:read\tnil\n\
             INFO  jepsen.util - 3\t:info\t:read\t:timed-out\n\
             INFO  jepsen.util - 0\t:invoke\t:read\tnil\n\
             INFO  jepsen.util - 0\t:ok\t:read\t1\n",
        )
        .unwrap();
        let paired = crate::history::pair(&events).unwrap();
        assert_eq!(paired.failed, 2);
        let report = check(&paired.ops, Budget::default()).unwrap();
        assert_eq!(report.operations, 2);
        assert!(matches!(report.verdict, Verdict::Linearizable { .. }));
        // Had the failed write of 2 been applied, the read of 1 would be stale —
        // and a read of 2 is impossible, because it failed.
        let mut with_bad_read = paired.ops.clone();
        with_bad_read.push(Operation {
            process: 4,
            f: "read".into(),
            key: None,
            input: NIL,
            call_ns: 100,
            invoke_index: 100,
            completion: Completion::Ok {
                output: json!(2),
                return_ns: 101,
                return_index: 101,
            },
        });
        assert!(matches!(
            check(&with_bad_read, Budget::default()).unwrap().verdict,
            Verdict::NotLinearizable(_)
        ));
    }

    #[test]
    fn unknown_operations_nobody_observes_are_pruned() {
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "write", json!(9), NIL, 5, None),
            (2, "cas", json!([1, 7]), NIL, 6, None),
            (3, "read", NIL, json!(1), 20, Some(30)),
        ]);
        let report = check(&history, Budget::default()).unwrap();
        assert_eq!(report.pruned, 2);
        assert_eq!(
            report.verdict,
            Verdict::Linearizable {
                witness: vec![vec![0, 3, 1, 2]]
            }
        );
        // Once a cas compares against 9, the unknown write of 9 matters:
        // that cas succeeds only if the write took effect, after the read.
        let mut history = history;
        history.extend(ops(&[(4, "cas", json!([9, 3]), NIL, 40, Some(50))]));
        history[4].invoke_index = 4;
        let report = check(&history, Budget::default()).unwrap();
        assert_eq!(report.pruned, 1);
        assert_eq!(
            report.verdict,
            Verdict::Linearizable {
                witness: vec![vec![0, 3, 1, 4, 2]]
            }
        );
    }

    #[test]
    fn keys_are_independent_registers() {
        let mut history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "write", json!(2), NIL, 20, Some(30)),
            (2, "read", NIL, json!(1), 40, Some(50)),
        ]);
        history[0].key = Some("a".into());
        history[1].key = Some("b".into());
        history[2].key = Some("a".into());
        let report = check(&history, Budget::default()).unwrap();
        assert_eq!(report.keys, 2);
        assert_eq!(
            report.verdict,
            Verdict::Linearizable {
                witness: vec![vec![0, 2], vec![1]]
            }
        );
        history[1].key = Some("a".into());
        let e = assert_not_linearizable(&history);
        assert_eq!(e.key.as_deref(), Some("a"));
    }

    #[test]
    fn values_compare_as_json() {
        let history = ops(&[
            (0, "write", json!("1"), NIL, 0, Some(10)),
            (1, "read", NIL, json!(1), 20, Some(30)),
        ]);
        assert_not_linearizable(&history);
        let history = ops(&[
            (0, "write", json!("7-55"), NIL, 0, Some(10)),
            (1, "read", NIL, json!("7-55"), 20, Some(30)),
        ]);
        assert_linearizable(&history);
    }

    #[test]
    fn malformed_operations_are_errors() {
        for (f, input) in [
            ("write", NIL),
            ("cas", json!([1])),
            ("cas", json!(1)),
            ("cas", json!([null, 1])),
            ("delete", json!(1)),
        ] {
            let history = ops(&[(0, f, input.clone(), NIL, 0, Some(1))]);
            assert!(check(&history, Budget::default()).is_err(), "{f} {input}");
        }
    }

    #[test]
    fn explanation_lists_pending_operations() {
        // After write 1, the read of 2 must go next; the pending cas from 3 cannot help.
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "read", NIL, json!(2), 20, Some(30)),
            (2, "cas", json!([3, 4]), NIL, 25, Some(60)),
        ]);
        let e = assert_not_linearizable(&history);
        assert_eq!((e.prefix, e.blocked, e.candidates), (vec![0], 1, vec![2]));
    }

    #[test]
    fn explanation_names_the_operations() {
        let history = ops(&[
            (0, "write", json!(1), NIL, 0, Some(10)),
            (1, "write", json!(2), NIL, 20, Some(30)),
            (3, "cas", json!([5, 1]), NIL, 35, None),
            (4, "cas", json!([7, 8]), NIL, 38, Some(60)),
            (2, "read", NIL, json!(1), 40, Some(50)),
        ]);
        let e = assert_not_linearizable(&history);
        let text = e.display(&history, "  ").to_string();
        let expected = "  longest linearizable prefix: 3 of 5 operations, after which the register is 2\n\
                        \x20 prefix:\n\
                        \x20   process 0 write 1 (events 0..0, t_ns 0..10)\n\
                        \x20   process 1 write 2 (events 1..1, t_ns 20..30)\n\
                        \x20   process 3 cas 5 -> 1 (event 2.., t_ns 35.., outcome unknown)\n\
                        \x20 cannot take effect next, yet everything left was invoked after it returned:\n\
                        \x20   process 2 read -> 1 (events 4..4, t_ns 40..50)\n\
                        \x20 other pending operations, none of which can take effect here either:\n\
                        \x20   process 4 cas 7 -> 8 (events 3..3, t_ns 38..60)\n";
        assert_eq!(text, expected);
        let prefix = ops(&(0..10)
            .map(|i| (0, "write", json!(i), NIL, 10 * i, Some(10 * i + 1)))
            .chain([(1, "read", NIL, json!(3), 200, Some(201))])
            .collect::<Vec<_>>());
        let text = assert_not_linearizable(&prefix)
            .display(&prefix, "")
            .to_string();
        assert!(text.contains("longest linearizable prefix: 10 of 11 operations, after which the register is 9\nprefix (last 8):\n  process 0 write 2 "), "{text}");
        assert!(
            text.ends_with(
                "read -> 3 (events 10..10, t_ns 200..201)\nno other operation was pending\n"
            ),
            "{text}"
        );
    }
}
