//! Hand-made histories for the checker tests: operations are recorded with
//! explicit call and return times, in whatever order reads best, and sorted
//! into a history only when it is checked.

use cairn_jepsen::history::{Event, EventType};
use serde_json::Value;

/// The events of a history under construction, in the order they were
/// recorded, each still at index 0.
#[derive(Clone, Default)]
pub struct Recorder {
    /// Public so a test can move an operation in time after recording it.
    pub recorded: Vec<Event>,
}

impl Recorder {
    /// Records an operation's invoke and, unless the run ended with it in
    /// flight, its completion.
    pub fn record(&mut self, invoke: Event, completion: Option<Event>) {
        self.recorded.push(invoke);
        self.recorded.extend(completion);
    }

    /// The history: events by time, an invoke before a completion at the
    /// same time (so operations that merely touch count as concurrent), and
    /// otherwise in the order recorded; indexed from 0.
    pub fn events(&self) -> Vec<Event> {
        let mut events = self.recorded.clone();
        events.sort_by_key(|e| (e.t_ns, e.kind != EventType::Invoke));
        for (i, e) in events.iter_mut().enumerate() {
            e.index = i as u64;
        }
        events
    }
}

/// An event with the fields every test sets; the optional ones (`key`,
/// `node`, `error`, `rev`) are left empty for struct update to fill in.
pub fn event(kind: EventType, process: u64, f: &str, value: Value, t_ns: u64) -> Event {
    Event {
        index: 0,
        kind,
        process,
        f: f.to_string(),
        key: None,
        value,
        t_ns,
        node: None,
        error: None,
        rev: None,
    }
}
