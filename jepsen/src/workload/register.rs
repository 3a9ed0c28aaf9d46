//! The `register` workload: linearizable reads, writes and compare-and-set
//! on independent registers, one etcd key each.
//!
//! A fixed number of registers is active at a time; each is retired after
//! [`OPS_PER_KEY`] operations and replaced by a fresh key, as Jepsen's
//! `independent` generator does, so every key's history stays small enough
//! for the linearizability search however long the run.

use std::collections::HashMap;
use std::sync::Mutex;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::{Action, Executed, PlannedOp, Values};
use crate::history::EventType;

/// Operations on one register before it is retired.
pub const OPS_PER_KEY: u32 = 300;

#[derive(Debug, Clone)]
pub enum RegisterAction {
    Read {
        key: String,
    },
    Write {
        key: String,
        value: String,
    },
    Cas {
        key: String,
        from: String,
        to: String,
    },
}

pub struct Register {
    prefix: String,
    values: Values,
    state: Mutex<State>,
}

struct State {
    /// Active registers: (id, operations so far).
    slots: Vec<(u64, u32)>,
    next_id: u64,
    /// The latest value known per register, for cas to compare against.
    known: HashMap<String, String>,
}

impl Register {
    pub fn new(prefix: String, keys: usize) -> Self {
        let keys = keys.max(1);
        Self {
            prefix,
            values: Values::default(),
            state: Mutex::new(State {
                slots: (0..keys as u64).map(|id| (id, 0)).collect(),
                next_id: keys as u64,
                known: HashMap::new(),
            }),
        }
    }

    fn etcd_key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn plan(&self, rng: &mut StdRng, process: u64) -> PlannedOp {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = rng.random_range(0..state.slots.len());
        let (id, count) = state.slots[slot];
        if count + 1 >= OPS_PER_KEY {
            state.slots[slot] = (state.next_id, 0);
            state.next_id += 1;
        } else {
            state.slots[slot].1 += 1;
        }
        let name = format!("r{id}");
        let key = self.etcd_key(&name);
        let roll = rng.random_range(0..10);
        let known = state.known.get(&name).cloned();
        drop(state);
        let (f, value, action, idempotent) = match (roll, known) {
            (0..=3, _) => ("read", Value::Null, RegisterAction::Read { key }, true),
            (4..=6, Some(from)) => {
                let to = self.values.next(process);
                (
                    "cas",
                    json!([from, to]),
                    RegisterAction::Cas { key, from, to },
                    false,
                )
            }
            _ => {
                let value = self.values.next(process);
                (
                    "write",
                    json!(value),
                    RegisterAction::Write { key, value },
                    false,
                )
            }
        };
        PlannedOp {
            f,
            key: Some(name),
            value,
            idempotent,
            action: Action::Register(action),
        }
    }

    pub fn final_write(&self, process: u64) -> PlannedOp {
        let value = self.values.next(process);
        PlannedOp {
            f: "write",
            key: Some("final".to_string()),
            value: json!(value),
            idempotent: false,
            action: Action::Register(RegisterAction::Write {
                key: self.etcd_key("final"),
                value,
            }),
        }
    }

    pub fn observe(&self, op: &PlannedOp, kind: EventType, value: &Value) {
        let Some(name) = &op.key else {
            return;
        };
        let seen = match (&op.action, kind) {
            (Action::Register(RegisterAction::Read { .. }), EventType::Ok) => {
                value.as_str().map(str::to_string)
            }
            (Action::Register(RegisterAction::Write { value, .. }), EventType::Ok) => {
                Some(value.clone())
            }
            (Action::Register(RegisterAction::Cas { to, .. }), EventType::Ok) => Some(to.clone()),
            _ => None,
        };
        if let Some(seen) = seen {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.known.insert(name.clone(), seen);
        }
    }
}

pub async fn execute(
    client: &mut Client,
    action: &RegisterAction,
) -> Result<Executed, etcd_client::Error> {
    match action {
        RegisterAction::Read { key } => {
            let response = client.get(key.as_str(), None).await?;
            let value = match response.kvs().first() {
                Some(kv) => json!(String::from_utf8_lossy(kv.value())),
                None => Value::Null,
            };
            Ok(Executed {
                kind: EventType::Ok,
                value,
                rev: response.header().map(|h| h.revision()),
                error: None,
            })
        }
        RegisterAction::Write { key, value } => {
            let response = client.put(key.as_str(), value.as_str(), None).await?;
            Ok(Executed {
                kind: EventType::Ok,
                value: json!(value),
                rev: response.header().map(|h| h.revision()),
                error: None,
            })
        }
        RegisterAction::Cas { key, from, to } => {
            let txn = Txn::new()
                .when([Compare::value(
                    key.as_str(),
                    CompareOp::Equal,
                    from.as_str(),
                )])
                .and_then([TxnOp::put(key.as_str(), to.as_str(), None)]);
            let response = client.txn(txn).await?;
            let succeeded = response.succeeded();
            Ok(Executed {
                kind: if succeeded {
                    EventType::Ok
                } else {
                    EventType::Fail
                },
                value: json!([from, to]),
                rev: response.header().map(|h| h.revision()),
                error: (!succeeded).then(|| "compare failed".to_string()),
            })
        }
    }
}
