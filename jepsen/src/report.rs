//! Human-readable accounts of a run: one line per operation, and for each
//! anomaly the smallest window of the history that shows it — the
//! operations involved plus those on the same keys that overlap them in
//! time.

use std::collections::HashMap;

use serde_json::Value;

use crate::history::{self, Event, EventPair, EventType, HistoryError};

/// How many operations a window lists at most.
pub const WINDOW_LIMIT: usize = 40;
/// How much of a value one line shows.
const VALUE_CHARS: usize = 240;

/// The history's operations, findable by their invoke's `i`.
pub struct HistoryIndex<'a> {
    events: &'a [Event],
    pairs: Vec<EventPair>,
    by_invoke: HashMap<u64, usize>,
}

impl<'a> HistoryIndex<'a> {
    pub fn new(events: &'a [Event]) -> Result<Self, HistoryError> {
        let pairs = history::pair_events(events)?;
        let by_invoke = pairs
            .iter()
            .enumerate()
            .map(|(p, pair)| (events[pair.invoke].index, p))
            .collect();
        Ok(Self {
            events,
            pairs,
            by_invoke,
        })
    }

    fn call(&self, p: usize) -> u64 {
        self.events[self.pairs[p].invoke].t_ns
    }

    /// The completion time, or `None` if the operation never completed
    /// (or its outcome is unknown, which means it may still take effect).
    fn ret(&self, p: usize) -> Option<u64> {
        self.pairs[p]
            .completion
            .map(|c| &self.events[c])
            .filter(|e| e.kind != EventType::Info)
            .map(|e| e.t_ns)
    }

    fn end(&self, p: usize) -> u64 {
        self.pairs[p]
            .completion
            .map_or(u64::MAX, |c| self.events[c].t_ns)
    }

    /// One line describing the operation whose invoke has index `i`.
    pub fn describe(&self, i: u64) -> String {
        match self.by_invoke.get(&i) {
            Some(&p) => self.describe_pair(p),
            None => format!("i={i}: no such operation"),
        }
    }

    fn describe_pair(&self, p: usize) -> String {
        let invoke = &self.events[self.pairs[p].invoke];
        let done = self.pairs[p].completion.map(|c| &self.events[c]);
        let mut line = format!(
            "i={} p={} {} [{:.3}s",
            invoke.index,
            invoke.process,
            invoke.node.as_deref().unwrap_or("-"),
            invoke.t_ns as f64 / 1e9
        );
        match done {
            Some(d) => line.push_str(&format!(" → {:.3}s]", d.t_ns as f64 / 1e9)),
            None => line.push_str(" → never]"),
        }
        line.push(' ');
        line.push_str(&invoke.f);
        if let Some(key) = &invoke.key {
            line.push_str(&format!(" {key}"));
        }
        if !invoke.value.is_null() {
            line.push(' ');
            line.push_str(&short(&invoke.value));
        }
        match done {
            None => line.push_str(" ⇒ in flight at the end"),
            Some(d) => {
                let kind = match d.kind {
                    EventType::Ok => "ok",
                    EventType::Fail => "fail",
                    EventType::Info => "info",
                    EventType::Invoke => "invoke",
                };
                line.push_str(&format!(" ⇒ {kind}"));
                if let Some(rev) = d.rev {
                    line.push_str(&format!(" rev={rev}"));
                }
                if d.kind == EventType::Ok && !d.value.is_null() && d.value != invoke.value {
                    line.push(' ');
                    line.push_str(&short(&d.value));
                }
                if let Some(e) = &d.error {
                    line.push_str(&format!(" ({e})"));
                }
            }
        }
        line
    }

    /// The operations involved (marked `*`) and every other operation
    /// touching one of `keys` that overlaps their span, in invoke order,
    /// at most [`WINDOW_LIMIT`]. `touches(invoke)` says whether an
    /// operation is about one of the keys.
    pub fn window(&self, involved: &[u64], touches: impl Fn(&Event) -> bool) -> Vec<String> {
        let marked: Vec<usize> = involved
            .iter()
            .filter_map(|i| self.by_invoke.get(i).copied())
            .collect();
        if marked.is_empty() {
            return Vec::new();
        }
        let lo = marked.iter().map(|&p| self.call(p)).min().unwrap_or(0);
        let hi = marked
            .iter()
            .map(|&p| self.ret(p).unwrap_or_else(|| self.call(p)))
            .max()
            .unwrap_or(u64::MAX);
        let mut chosen: Vec<usize> = (0..self.pairs.len())
            .filter(|p| {
                marked.contains(p)
                    || (self.call(*p) <= hi
                        && self.end(*p) >= lo
                        && touches(&self.events[self.pairs[*p].invoke]))
            })
            .collect();
        if chosen.len() > WINDOW_LIMIT {
            // Keep the involved operations and those closest to them.
            let centre = |p: usize| {
                marked
                    .iter()
                    .map(|&m| self.call(m).abs_diff(self.call(p)))
                    .min()
                    .unwrap_or(0)
            };
            chosen.sort_by_key(|&p| (!marked.contains(&p), centre(p)));
            chosen.truncate(WINDOW_LIMIT);
            chosen.sort_unstable();
        }
        chosen
            .into_iter()
            .map(|p| {
                let mark = if marked.contains(&p) { '*' } else { ' ' };
                format!("{mark} {}", self.describe_pair(p))
            })
            .collect()
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= VALUE_CHARS {
        return text;
    }
    let cut: String = text.chars().take(VALUE_CHARS).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(index: u64, kind: EventType, process: u64, key: &str, value: Value, t: u64) -> Event {
        Event {
            index,
            kind,
            process,
            f: "write".into(),
            key: Some(key.into()),
            value,
            t_ns: t * 1_000_000,
            node: Some("m0".into()),
            error: None,
            rev: (kind == EventType::Ok).then_some(index as i64),
        }
    }

    #[test]
    fn windows_hold_the_involved_and_overlapping_operations_on_the_keys() {
        let events = vec![
            ev(0, EventType::Invoke, 1, "a", json!("1"), 0),
            ev(1, EventType::Ok, 1, "a", json!("1"), 10),
            ev(2, EventType::Invoke, 2, "a", json!("2"), 20),
            ev(3, EventType::Invoke, 3, "b", json!("3"), 21),
            ev(4, EventType::Invoke, 4, "a", json!("4"), 22),
            ev(5, EventType::Ok, 2, "a", json!("2"), 30),
            ev(6, EventType::Info, 4, "a", json!("4"), 31),
            ev(7, EventType::Ok, 3, "b", json!("3"), 32),
            ev(8, EventType::Invoke, 1, "a", json!("5"), 40),
            ev(9, EventType::Ok, 1, "a", json!("5"), 50),
        ];
        let index = HistoryIndex::new(&events).unwrap();
        let lines = index.window(&[2], |e| e.key.as_deref() == Some("a"));
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[0].starts_with("* i=2 p=2 m0 [0.020s → 0.030s] write a \"2\" ⇒ ok rev=5"),
            "{lines:#?}"
        );
        assert!(lines[1].starts_with("  i=4 p=4"), "{lines:#?}");
        assert!(lines[1].contains("⇒ info"), "{lines:#?}");
    }
}
