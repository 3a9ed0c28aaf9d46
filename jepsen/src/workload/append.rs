//! The `append` workload: Elle-style list-append transactions through etcd
//! txns, checked for strict serializability by [`crate::checker::append`],
//! as Jepsen's etcd `append` test does.
//!
//! Each operation is a transaction of 1–[`MAX_TXN_LEN`] micro-operations
//! over the active keys: `["r", k, null]` reads key `k`'s list,
//! `["append", k, e]` appends `e`, the next element of a per-key counter
//! (so unique per key). A list is stored as its elements separated by
//! spaces. The `ok` completion repeats the micro-operations with every
//! read's list filled in; `rev` is the write txn's header revision.
//!
//! **Through etcd, in at most two RPCs.** A transaction that appends first
//! reads the lists it appends to (one txn of ranges, so one revision), then
//! sends one `Txn` that
//! - compares each appended key's `mod_revision` with the one read (0 for
//!   a missing key, which etcd compares as 0);
//! - on success, runs the micro-operations in order: a read is a range of
//!   the key, and a key's appends are one put of the list read plus all of
//!   them, at the place of the key's last append — etcd refuses two puts
//!   of one key in a txn, and ranges in a txn see its earlier puts;
//! - on failure does nothing, so a failed compare is a definite `fail`.
//!
//! A read-only transaction is that one `Txn` without compares, and
//! idempotent. One put per key means a read between two appends to the
//! same key cannot be expressed, so the generator never plans one; a read
//! before a key's first append or after its last is fine.
//!
//! An error in the read phase is reported like any other error (refused
//! connection: `fail`; otherwise unknown), so the harness backs off from
//! a member that is down; nothing was written, so at worst an unknown
//! outcome nobody observes.
//!
//! **Bounded values.** A key takes [`APPENDS_PER_KEY`] planned appends and
//! is then retired for a fresh one, as Jepsen's `max-writes-per-key` does:
//! lists, and so values, reads and the checker's work per read, stay short.

use std::sync::Mutex;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use rand::rngs::StdRng;
use rand::Rng;

use super::{Action, Executed, PlannedOp};
use crate::checker::append::{txn_to_json, MicroOp, Observed};
use crate::history::EventType;

/// Appends planned on one key before it is retired.
pub const APPENDS_PER_KEY: u64 = 128;
/// Micro-operations per transaction, at most.
pub const MAX_TXN_LEN: usize = 4;
/// The key the harness appends to after healing, apart from the workers'.
const FINAL_KEY: &str = "final";

/// A transaction to run: its micro-operations (reads without values) and
/// where the keys live in etcd.
#[derive(Debug, Clone)]
pub struct AppendTxn {
    pub prefix: String,
    pub mops: Vec<MicroOp>,
}

impl AppendTxn {
    fn etcd_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

pub struct AppendWorkload {
    prefix: String,
    state: Mutex<State>,
}

struct State {
    /// Active keys: (id, next element).
    slots: Vec<(u64, u64)>,
    next_id: u64,
    /// The next element for the final key.
    next_final: u64,
}

impl AppendWorkload {
    pub fn new(prefix: String, keys: usize) -> Self {
        let keys = keys.max(1) as u64;
        Self {
            prefix,
            state: Mutex::new(State {
                slots: (0..keys).map(|id| (id, 1)).collect(),
                next_id: keys,
                next_final: 1,
            }),
        }
    }

    pub fn plan(&self, rng: &mut StdRng, _process: u64) -> PlannedOp {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let len = rng.random_range(1..=MAX_TXN_LEN);
        let mut mops: Vec<MicroOp> = Vec::with_capacity(len);
        for _ in 0..len {
            let slot = rng.random_range(0..state.slots.len());
            let (id, next) = state.slots[slot];
            let key = format!("k{id}");
            let appended = mops
                .iter()
                .any(|m| matches!(m, MicroOp::Append { key: k, .. } if *k == key));
            let read_since_append = appended
                && mops
                    .iter()
                    .rev()
                    .take_while(|m| !matches!(m, MicroOp::Append { key: k, .. } if *k == key))
                    .any(|m| matches!(m, MicroOp::Read { key: k, .. } if *k == key));
            // Another append after a read that followed an append of the
            // same key would need a second put of it (see the module doc).
            if rng.random_bool(0.5) && !read_since_append {
                mops.push(MicroOp::Append { key, element: next });
                if next >= APPENDS_PER_KEY {
                    state.slots[slot] = (state.next_id, 1);
                    state.next_id += 1;
                } else {
                    state.slots[slot].1 += 1;
                }
            } else {
                mops.push(MicroOp::Read { key, value: None });
            }
        }
        drop(state);
        self.planned(mops)
    }

    fn planned(&self, mops: Vec<MicroOp>) -> PlannedOp {
        PlannedOp {
            f: "txn",
            key: None,
            value: txn_to_json(&mops),
            idempotent: mops.iter().all(|m| matches!(m, MicroOp::Read { .. })),
            action: Action::Append(AppendTxn {
                prefix: self.prefix.clone(),
                mops,
            }),
        }
    }

    /// An append to a key of its own, checked with the rest of the history.
    pub fn final_write(&self, _process: u64) -> PlannedOp {
        let element = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.next_final += 1;
            state.next_final - 1
        };
        self.planned(vec![MicroOp::Append {
            key: FINAL_KEY.to_string(),
            element,
        }])
    }
}

/// Encodes a list as stored in etcd.
fn encode(list: &[u64]) -> String {
    list.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Decodes a stored value; `None` if it is not a list of elements.
fn decode(value: &[u8]) -> Option<Vec<u64>> {
    std::str::from_utf8(value)
        .ok()?
        .split_ascii_whitespace()
        .map(|e| e.parse().ok())
        .collect()
}

fn observed(response: &etcd_client::GetResponse) -> Observed {
    match response.kvs().first() {
        None => Observed::List(Vec::new()),
        Some(kv) => match decode(kv.value()) {
            Some(list) => Observed::List(list),
            None => Observed::Garbage(String::from_utf8_lossy(kv.value()).into_owned()),
        },
    }
}

/// What the success branch does at each micro-operation.
enum Step {
    /// The micro-operation's read is the branch's operation with this index.
    Read(usize),
    /// An append folded into a later put of the key, or this put.
    Append,
}

pub async fn execute(client: &mut Client, txn: &AppendTxn) -> Result<Executed, etcd_client::Error> {
    // The keys appended to, in order of first append, with their lists.
    let mut appended: Vec<(&str, Vec<u64>, i64)> = Vec::new();
    for m in &txn.mops {
        if let MicroOp::Append { key, .. } = m {
            if !appended.iter().any(|(k, _, _)| k == key) {
                appended.push((key, Vec::new(), 0));
            }
        }
    }
    if !appended.is_empty() {
        let reads: Vec<TxnOp> = appended
            .iter()
            .map(|(k, _, _)| TxnOp::get(txn.etcd_key(k), None))
            .collect();
        let response = client.txn(Txn::new().and_then(reads)).await?;
        let results = response.op_responses();
        if results.len() != appended.len() {
            return Err(etcd_client::Error::InvalidArgs(format!(
                "the read phase returned {} results for {} ranges",
                results.len(),
                appended.len()
            )));
        }
        for ((key, list, revision), result) in appended.iter_mut().zip(&results) {
            let TxnOpResponse::Get(get) = result else {
                return Err(etcd_client::Error::InvalidArgs(format!(
                    "the read phase returned {result:?} for a range of {key}"
                )));
            };
            match observed(get) {
                Observed::List(l) => *list = l,
                // Nothing was written: a definite failure, surfaced by
                // the reads of the key, which record the raw value.
                Observed::Garbage(raw) => {
                    return Err(etcd_client::Error::InvalidArgs(format!(
                        "{key} holds {raw:?}, which is not a list of elements"
                    )))
                }
            }
            *revision = get.kvs().first().map_or(0, |kv| kv.mod_revision());
        }
    }

    let mut success: Vec<TxnOp> = Vec::new();
    let mut steps: Vec<Step> = Vec::with_capacity(txn.mops.len());
    for (i, m) in txn.mops.iter().enumerate() {
        match m {
            MicroOp::Read { key, .. } => {
                let appended_before = txn.mops[..i]
                    .iter()
                    .any(|p| matches!(p, MicroOp::Append { key: k, .. } if k == key));
                let appended_after = txn.mops[i + 1..]
                    .iter()
                    .any(|p| matches!(p, MicroOp::Append { key: k, .. } if k == key));
                if appended_before && appended_after {
                    return Err(etcd_client::Error::InvalidArgs(format!(
                        "a read of {key} between two appends to it needs two puts of it in one txn"
                    )));
                }
                steps.push(Step::Read(success.len()));
                success.push(TxnOp::get(txn.etcd_key(key), None));
            }
            MicroOp::Append { key, element } => {
                let (_, list, _) = appended
                    .iter_mut()
                    .find(|(k, _, _)| k == key)
                    .expect("every appended key was read");
                list.push(*element);
                let last = !txn.mops[i + 1..]
                    .iter()
                    .any(|p| matches!(p, MicroOp::Append { key: k, .. } if k == key));
                if last {
                    success.push(TxnOp::put(txn.etcd_key(key), encode(list), None));
                }
                steps.push(Step::Append);
            }
        }
    }
    let compares: Vec<Compare> = appended
        .iter()
        .map(|(k, _, revision)| Compare::mod_revision(txn.etcd_key(k), CompareOp::Equal, *revision))
        .collect();
    let response = client
        .txn(Txn::new().when(compares).and_then(success))
        .await?;
    let rev = response.header().map(|h| h.revision());
    if !response.succeeded() {
        return Ok(Executed {
            kind: EventType::Fail,
            value: txn_to_json(&txn.mops),
            rev,
            error: Some("compare failed: a key changed since it was read".to_string()),
        });
    }
    let results = response.op_responses();
    let mut completed = Vec::with_capacity(txn.mops.len());
    for (m, step) in txn.mops.iter().zip(&steps) {
        match (m, step) {
            (MicroOp::Read { key, .. }, Step::Read(at)) => {
                let Some(TxnOpResponse::Get(get)) = results.get(*at) else {
                    // The txn was applied, but its reads are lost: an
                    // unknown outcome for the harness.
                    return Err(etcd_client::Error::Internal(format!(
                        "the txn's result {at} is not the range of {key}"
                    )));
                };
                completed.push(MicroOp::Read {
                    key: key.clone(),
                    value: Some(observed(get)),
                });
            }
            _ => completed.push(m.clone()),
        }
    }
    Ok(Executed {
        kind: EventType::Ok,
        value: txn_to_json(&completed),
        rev,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use rand::SeedableRng;

    #[test]
    fn lists_round_trip_and_garbage_is_recognized() {
        assert_eq!(
            decode(encode(&[1, 22, 333]).as_bytes()),
            Some(vec![1, 22, 333])
        );
        assert_eq!(decode(b""), Some(vec![]));
        assert_eq!(decode(b"1 x 3"), None);
        assert_eq!(decode(&[0xff, 0x20]), None);
    }

    #[test]
    fn plans_are_bounded_unique_per_key_and_expressible_in_one_txn() {
        let workload = AppendWorkload::new("/p/".to_string(), 3);
        let mut rng = StdRng::seed_from_u64(7);
        let mut elements: HashMap<String, Vec<u64>> = HashMap::new();
        for _ in 0..5_000 {
            let op = workload.plan(&mut rng, 0);
            let Action::Append(txn) = &op.action else {
                panic!("an append plan");
            };
            assert!((1..=MAX_TXN_LEN).contains(&txn.mops.len()));
            assert_eq!(op.value, txn_to_json(&txn.mops));
            assert_eq!(
                op.idempotent,
                txn.mops.iter().all(|m| matches!(m, MicroOp::Read { .. }))
            );
            for (i, m) in txn.mops.iter().enumerate() {
                match m {
                    MicroOp::Append { key, element } => {
                        elements.entry(key.clone()).or_default().push(*element)
                    }
                    MicroOp::Read { key, value } => {
                        assert!(value.is_none());
                        let is_append =
                            |p: &MicroOp| matches!(p, MicroOp::Append { key: k, .. } if k == key);
                        assert!(
                            !(txn.mops[..i].iter().any(is_append)
                                && txn.mops[i + 1..].iter().any(is_append)),
                            "a read between two appends: {:?}",
                            txn.mops
                        );
                    }
                }
            }
        }
        assert!(elements.len() > 3, "keys were retired");
        for (key, list) in &elements {
            let expected: Vec<u64> = (1..=list.len() as u64).collect();
            assert_eq!(list, &expected, "{key}: elements are a counter");
            assert!(list.len() as u64 <= APPENDS_PER_KEY, "{key} was retired");
        }
    }
}
