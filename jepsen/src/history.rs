//! The operation history a test run records, and the pairing of its events
//! into operations.
//!
//! A history is a sequence of [`Event`]s, one per line of a JSONL file. Every
//! client operation appears twice: an `invoke` when the client sends it and a
//! completion (`ok`, `fail` or `info`) when the client learns its outcome.
//! Each logical process runs one operation at a time, so a process's
//! completion always belongs to its latest invoke.
//!
//! All timestamps come from one monotonic clock in the harness process
//! ([`RunClock`]): the checkers only compare times of events recorded by the
//! same process, so no cross-host clock is ever trusted.
//!
//! The three completion types mean what they mean in Jepsen:
//! - `ok`: the operation took effect, between its invoke and its completion;
//! - `fail`: the operation definitely did not take effect, so checkers drop it;
//! - `info`: the outcome is unknown. The operation may have taken effect at
//!   any time after its invoke — even after the run ended — or never, so its
//!   completion time is +infinity ([`Completion::Info`]).

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an event records: the start of an operation or one of its outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client is about to send the operation.
    Invoke,
    /// The operation took effect.
    Ok,
    /// The operation definitely did not take effect.
    Fail,
    /// The outcome is unknown (timeout, connection lost after sending, …).
    Info,
}

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position of the event in the history; unique and increasing.
    #[serde(rename = "i")]
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Logical process (client) id.
    #[serde(rename = "p")]
    pub process: u64,
    /// The function: `read`, `write`, `cas`, … (meaning depends on the workload).
    pub f: String,
    /// The key the operation is on, for workloads over several independent
    /// objects; checkers partition the history by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The argument on invoke; the result on `ok` (e.g. the value a read saw).
    #[serde(rename = "v", default)]
    pub value: Value,
    /// Nanoseconds since the run started, from [`RunClock`].
    pub t_ns: u64,
    /// The cluster member the client sent the operation to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why a `fail` or `info` completion happened, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On an `ok` completion from an etcd-like store: the response header's
    /// revision (the store's revision when the request was served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i64>,
}

/// The run's single monotonic clock.
///
/// Every timestamp in a history comes from one `RunClock`, so the real-time
/// order the checkers rely on ("A returned before B was invoked") is the
/// order of one `Instant` source, never of wall clocks that may step.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    /// Starts the clock: time 0 is now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since [`RunClock::start`].
    pub fn now_ns(&self) -> u64 {
        // u64 nanoseconds last 584 years, so the conversion cannot saturate in a run.
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// It took effect before `return_ns`; `output` is the completion's value.
    Ok {
        output: Value,
        return_ns: u64,
        return_index: u64,
    },
    /// Unknown: it may take effect at any time after its invoke, or never.
    /// Also what an invoke without any completion becomes.
    Info,
}

/// An invoke paired with its completion. `fail`ed operations never become
/// an `Operation`: they did not happen.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub process: u64,
    pub f: String,
    pub key: Option<String>,
    /// The invoke's value: the operation's argument.
    pub input: Value,
    pub call_ns: u64,
    /// The invoke event's [`Event::index`], to point humans at the history.
    pub invoke_index: u64,
    pub completion: Completion,
}

impl Operation {
    /// The completion time, or `None` for +infinity (an `info` operation).
    pub fn return_ns(&self) -> Option<u64> {
        match self.completion {
            Completion::Ok { return_ns, .. } => Some(return_ns),
            Completion::Info => None,
        }
    }
}

/// The operations of a history, in invoke order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paired {
    pub ops: Vec<Operation>,
    /// How many operations failed and were dropped.
    pub failed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("event {index}: process {process} invoked again while its operation from event {pending} is still in flight")]
    InvokeWhilePending {
        index: u64,
        process: u64,
        pending: u64,
    },
    #[error("event {index}: completion for process {process}, which has no operation in flight")]
    CompletionWithoutInvoke { index: u64, process: u64 },
    #[error("event {index}: completion of `{completion}` on key {completion_key:?} for process {process}, whose operation in flight (event {pending}) is `{invoke}` on key {invoke_key:?}")]
    MismatchedCompletion {
        index: u64,
        process: u64,
        pending: u64,
        invoke: String,
        invoke_key: Option<String>,
        completion: String,
        completion_key: Option<String>,
    },
    #[error("event {index}: completion at t_ns {return_ns} precedes its invoke at t_ns {call_ns}")]
    CompletionBeforeInvoke {
        index: u64,
        call_ns: u64,
        return_ns: u64,
    },
    #[error("line {line}: {source}")]
    Json {
        line: usize,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes events as JSONL, one event per line.
pub fn write_jsonl<W: Write>(mut out: W, events: &[Event]) -> io::Result<()> {
    for event in events {
        serde_json::to_writer(&mut out, event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads a JSONL history; blank lines are skipped.
pub fn read_jsonl<R: BufRead>(input: R) -> Result<Vec<Event>, HistoryError> {
    let mut events = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|source| HistoryError::Json {
            line: n + 1,
            source,
        })?;
        events.push(event);
    }
    Ok(events)
}

/// An invoke and its completion, as positions in the event slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPair {
    pub invoke: usize,
    /// `None`: the run ended with the operation still in flight.
    pub completion: Option<usize>,
}

/// Pairs each invoke with its process's next completion, keeping every
/// operation (failed ones too), in invoke order, and checking that the
/// history is well-formed: one operation in flight per process, each
/// completion matching its invoke's function and key and not preceding it.
pub fn pair_events(events: &[Event]) -> Result<Vec<EventPair>, HistoryError> {
    let mut pairs: Vec<EventPair> = Vec::new();
    let mut in_flight: HashMap<u64, usize> = HashMap::new();
    for (pos, event) in events.iter().enumerate() {
        match event.kind {
            EventType::Invoke => {
                if let Some(&slot) = in_flight.get(&event.process) {
                    return Err(HistoryError::InvokeWhilePending {
                        index: event.index,
                        process: event.process,
                        pending: events[pairs[slot].invoke].index,
                    });
                }
                in_flight.insert(event.process, pairs.len());
                pairs.push(EventPair {
                    invoke: pos,
                    completion: None,
                });
            }
            EventType::Ok | EventType::Fail | EventType::Info => {
                let Some(slot) = in_flight.remove(&event.process) else {
                    return Err(HistoryError::CompletionWithoutInvoke {
                        index: event.index,
                        process: event.process,
                    });
                };
                let invoke = &events[pairs[slot].invoke];
                if invoke.f != event.f || invoke.key != event.key {
                    return Err(HistoryError::MismatchedCompletion {
                        index: event.index,
                        process: event.process,
                        pending: invoke.index,
                        invoke: invoke.f.clone(),
                        invoke_key: invoke.key.clone(),
                        completion: event.f.clone(),
                        completion_key: event.key.clone(),
                    });
                }
                if event.t_ns < invoke.t_ns {
                    return Err(HistoryError::CompletionBeforeInvoke {
                        index: event.index,
                        call_ns: invoke.t_ns,
                        return_ns: event.t_ns,
                    });
                }
                pairs[slot].completion = Some(pos);
            }
        }
    }
    Ok(pairs)
}

/// Pairs each invoke with its process's next completion.
///
/// `fail` operations are dropped (counted in [`Paired::failed`]). Invokes
/// still in flight at the end of the history become `info`: the run ended
/// before their outcome was known, which is exactly an unknown outcome.
pub fn pair(events: &[Event]) -> Result<Paired, HistoryError> {
    let mut paired = Paired::default();
    for EventPair { invoke, completion } in pair_events(events)? {
        let invoke = &events[invoke];
        let completion = match completion.map(|c| &events[c]) {
            Some(done) if done.kind == EventType::Fail => {
                paired.failed += 1;
                continue;
            }
            Some(done) if done.kind == EventType::Ok => Completion::Ok {
                output: done.value.clone(),
                return_ns: done.t_ns,
                return_index: done.index,
            },
            _ => Completion::Info,
        };
        paired.ops.push(Operation {
            process: invoke.process,
            f: invoke.f.clone(),
            key: invoke.key.clone(),
            input: invoke.value.clone(),
            call_ns: invoke.t_ns,
            invoke_index: invoke.index,
            completion,
        });
    }
    Ok(paired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(index: u64, kind: EventType, process: u64, f: &str, value: Value) -> Event {
        Event {
            index,
            kind,
            process,
            f: f.to_string(),
            key: None,
            value,
            t_ns: index * 10,
            node: None,
            error: None,
            rev: None,
        }
    }

    #[test]
    fn jsonl_round_trip_uses_the_documented_field_names() {
        let mut event = ev(3, EventType::Ok, 7, "read", json!("7-55"));
        event.key = Some("k3".into());
        event.node = Some("n2".into());
        let mut buf = Vec::new();
        write_jsonl(&mut buf, std::slice::from_ref(&event)).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "{\"i\":3,\"type\":\"ok\",\"p\":7,\"f\":\"read\",\"key\":\"k3\",\"v\":\"7-55\",\"t_ns\":30,\"node\":\"n2\"}\n"
        );
        assert_eq!(read_jsonl(text.as_bytes()).unwrap(), vec![event]);
    }

    #[test]
    fn read_jsonl_reports_the_bad_line() {
        let text = "{\"i\":0,\"type\":\"invoke\",\"p\":1,\"f\":\"read\",\"t_ns\":0}\n\nnot json\n";
        match read_jsonl(text.as_bytes()) {
            Err(HistoryError::Json { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected a JSON error on line 3, got {other:?}"),
        }
    }

    #[test]
    fn pair_drops_fails_and_turns_dangling_invokes_into_info() {
        let events = vec![
            ev(0, EventType::Invoke, 1, "write", json!(1)),
            ev(1, EventType::Invoke, 2, "cas", json!([1, 2])),
            ev(2, EventType::Ok, 1, "write", json!(1)),
            ev(3, EventType::Fail, 2, "cas", json!([1, 2])),
            ev(4, EventType::Invoke, 2, "read", Value::Null),
            ev(5, EventType::Invoke, 3, "write", json!(3)),
            ev(6, EventType::Info, 3, "write", json!(3)),
            ev(7, EventType::Ok, 2, "read", json!(1)),
            ev(8, EventType::Invoke, 1, "write", json!(4)),
        ];
        let paired = pair(&events).unwrap();
        assert_eq!(paired.failed, 1);
        let summary: Vec<_> = paired
            .ops
            .iter()
            .map(|op| (op.process, op.f.as_str(), op.call_ns, op.return_ns()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, "write", 0, Some(20)),
                (2, "read", 40, Some(70)),
                (3, "write", 50, None),
                (1, "write", 80, None),
            ]
        );
        assert_eq!(
            paired.ops[1].completion,
            Completion::Ok {
                output: json!(1),
                return_ns: 70,
                return_index: 7
            }
        );
    }

    #[test]
    fn pair_rejects_malformed_histories() {
        let double_invoke = vec![
            ev(0, EventType::Invoke, 1, "write", json!(1)),
            ev(1, EventType::Invoke, 1, "write", json!(2)),
        ];
        assert!(matches!(
            pair(&double_invoke),
            Err(HistoryError::InvokeWhilePending {
                index: 1,
                process: 1,
                pending: 0
            })
        ));
        let orphan = vec![ev(0, EventType::Ok, 1, "write", json!(1))];
        assert!(matches!(
            pair(&orphan),
            Err(HistoryError::CompletionWithoutInvoke { index: 0, .. })
        ));
        let mismatched = vec![
            ev(0, EventType::Invoke, 1, "write", json!(1)),
            ev(1, EventType::Ok, 1, "read", json!(1)),
        ];
        assert!(matches!(
            pair(&mismatched),
            Err(HistoryError::MismatchedCompletion { index: 1, .. })
        ));
        let mut backwards = vec![
            ev(0, EventType::Invoke, 1, "write", json!(1)),
            ev(1, EventType::Ok, 1, "write", json!(1)),
        ];
        backwards[1].t_ns = 0;
        backwards[0].t_ns = 5;
        assert!(matches!(
            pair(&backwards),
            Err(HistoryError::CompletionBeforeInvoke { index: 1, .. })
        ));
    }

    #[test]
    fn run_clock_is_monotonic() {
        let clock = RunClock::start();
        let a = clock.now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = clock.now_ns();
        assert!(b >= a + 2_000_000, "{a} then {b}");
    }
}
