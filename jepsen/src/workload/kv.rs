//! The `kv` workload: a mix of etcd KV operations over a small key space,
//! modelled on etcd's robustness traffic (`EtcdPutDeleteLease`):
//!
//! | share | operation |
//! |---|---|
//! | 24 % | linearizable get of one key |
//! | 8 % | prefix range over all keys, half of them with a limit of 1–4 |
//! | 6 % | range at an older revision (one key or the prefix) |
//! | 6 % | serializable get or prefix range |
//! | 20 % | put (with its previous value) |
//! | 5 % | put attached to a lease |
//! | 8 % | delete of one key (with its previous value) |
//! | 10 % | multi-op txn: if `a`'s mod revision is the last seen, put `a`, delete `b`, get `c`; else get `a` and `b` |
//! | 12 % | CAS on mod revision: if `k`'s mod revision is the last seen, put `k`, else get `k` |
//! | ≤ 1 % | compaction to 100 revisions back, at most every 3 s |
//!
//! Leases are granted once at setup with a TTL far beyond any run, so no
//! key disappears behind the checker's back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{Client, CompareOp, DeleteOptions, GetOptions, PutOptions};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::Value;

use super::{Action, Executed, PlannedOp, Values};
use crate::history::EventType;
use crate::ops::{
    Compare, CompareTarget, DeleteRequest, DeleteResponse, Kv, PutRequest, PutResponse,
    RangeRequest, RangeResponse, Request, Response, TxnOp, TxnOpResponse, TxnRequest, TxnResponse,
};

/// Leases granted at setup; their TTL outlasts any run.
const LEASES: usize = 2;
const LEASE_TTL_SECS: i64 = 3600;
/// How far behind the latest revision a compaction goes.
const COMPACT_DISTANCE: i64 = 100;
const COMPACT_EVERY: Duration = Duration::from_secs(3);

pub struct KvWorkload {
    prefix: String,
    keys: Vec<String>,
    values: Values,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    leases: Vec<i64>,
    /// The latest mod revision seen per key (0: seen missing).
    mod_revisions: HashMap<String, i64>,
    /// The largest header revision seen.
    latest: i64,
    /// The revision when the run started.
    start: i64,
    /// The latest acknowledged compaction.
    compacted: i64,
    last_compaction: Option<Instant>,
}

fn range(key: &str, prefix: bool) -> RangeRequest {
    RangeRequest {
        key: key.to_string(),
        prefix,
        limit: 0,
        revision: 0,
        serializable: false,
    }
}

impl KvWorkload {
    pub fn new(prefix: String, keys: usize) -> Self {
        let keys = (0..keys.max(3)).map(|i| format!("{prefix}k{i}")).collect();
        Self {
            prefix,
            keys,
            values: Values::default(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn setup(&self, client: &mut Client) -> anyhow::Result<()> {
        let mut leases = Vec::new();
        for _ in 0..LEASES {
            leases.push(client.lease_grant(LEASE_TTL_SECS, None).await?.id());
        }
        let start = super::require_empty_prefix(client, &self.prefix).await?;
        let mut state = self.lock();
        state.leases = leases;
        state.start = start.unwrap_or(1);
        state.latest = state.start;
        Ok(())
    }

    pub fn plan(&self, rng: &mut StdRng, process: u64) -> PlannedOp {
        let roll = rng.random_range(0..100);
        let key = self.keys.choose(rng).expect("at least 3 keys").clone();
        let state = self.lock();
        let seen = |k: &str| state.mod_revisions.get(k).copied().unwrap_or(0);
        let request = match roll {
            0..=23 => Request::Range(range(&key, false)),
            24..=31 => {
                let mut r = range(&self.prefix, true);
                if rng.random_bool(0.5) {
                    r.limit = rng.random_range(1..=4);
                }
                Request::Range(r)
            }
            32..=37 => {
                let lowest = state.start.max(state.compacted).max(1);
                let mut r = if rng.random_bool(0.5) {
                    range(&key, false)
                } else {
                    range(&self.prefix, true)
                };
                r.revision = rng.random_range(lowest..=state.latest.max(lowest));
                Request::Range(r)
            }
            38..=43 => {
                let mut r = if rng.random_bool(0.5) {
                    range(&key, false)
                } else {
                    range(&self.prefix, true)
                };
                r.serializable = true;
                Request::Range(r)
            }
            44..=63 => Request::Put(PutRequest {
                key,
                value: self.values.next(process),
                lease: 0,
            }),
            64..=68 => Request::Put(PutRequest {
                key,
                value: self.values.next(process),
                lease: *state.leases.choose(rng).unwrap_or(&0),
            }),
            69..=76 => Request::Delete(DeleteRequest { key }),
            77..=86 => {
                let picked: Vec<&String> = self.keys.choose_multiple(rng, 3).collect();
                let (a, b, c) = (picked[0], picked[1], picked[2]);
                Request::Txn(TxnRequest {
                    compare: vec![Compare {
                        key: a.clone(),
                        target: CompareTarget::ModRevision(seen(a)),
                    }],
                    success: vec![
                        TxnOp::Put(PutRequest {
                            key: a.clone(),
                            value: self.values.next(process),
                            lease: 0,
                        }),
                        TxnOp::Delete(DeleteRequest { key: b.clone() }),
                        TxnOp::Range(range(c, false)),
                    ],
                    failure: vec![TxnOp::Range(range(a, false)), TxnOp::Range(range(b, false))],
                })
            }
            87..=98 => Request::Txn(TxnRequest {
                compare: vec![Compare {
                    key: key.clone(),
                    target: CompareTarget::ModRevision(seen(&key)),
                }],
                success: vec![TxnOp::Put(PutRequest {
                    key: key.clone(),
                    value: self.values.next(process),
                    lease: 0,
                })],
                failure: vec![TxnOp::Range(range(&key, false))],
            }),
            _ => {
                let target = state.latest - COMPACT_DISTANCE;
                let due = state
                    .last_compaction
                    .is_none_or(|t| t.elapsed() >= COMPACT_EVERY);
                if due && target > state.compacted.max(state.start) {
                    Request::Compact { revision: target }
                } else {
                    Request::Range(range(&key, false))
                }
            }
        };
        drop(state);
        if matches!(request, Request::Compact { .. }) {
            self.lock().last_compaction = Some(Instant::now());
        }
        planned(request)
    }

    pub fn final_write(&self, process: u64) -> PlannedOp {
        planned(Request::Put(PutRequest {
            key: format!("{}final", self.prefix),
            value: self.values.next(process),
            lease: 0,
        }))
    }

    pub fn observe(&self, op: &PlannedOp, kind: EventType, value: &Value, rev: Option<i64>) {
        if kind != EventType::Ok {
            return;
        }
        let (Action::Kv(request), Some(rev)) = (&op.action, rev) else {
            return;
        };
        let Ok(response) = serde_json::from_value::<Response>(value.clone()) else {
            return;
        };
        let mut state = self.lock();
        state.latest = state.latest.max(rev);
        let seen_range = |r: &RangeRequest, res: &RangeResponse, state: &mut State| {
            if r.revision != 0 {
                return;
            }
            for kv in &res.kvs {
                state.mod_revisions.insert(kv.key.clone(), kv.mod_revision);
            }
            if !r.prefix && res.kvs.is_empty() {
                state.mod_revisions.insert(r.key.clone(), 0);
            }
        };
        match (request, &response) {
            (Request::Range(r), Response::Range(res)) => seen_range(r, res, &mut state),
            (Request::Put(p), Response::Put(_)) => {
                state.mod_revisions.insert(p.key.clone(), rev);
            }
            (Request::Delete(d), Response::Delete(_)) => {
                state.mod_revisions.insert(d.key.clone(), 0);
            }
            (Request::Txn(t), Response::Txn(res)) => {
                let branch = if res.succeeded {
                    &t.success
                } else {
                    &t.failure
                };
                for (o, result) in branch.iter().zip(&res.results) {
                    match (o, result) {
                        (TxnOp::Range(r), TxnOpResponse::Range(rr)) => {
                            seen_range(r, rr, &mut state)
                        }
                        (TxnOp::Put(p), _) => {
                            state.mod_revisions.insert(p.key.clone(), rev);
                        }
                        (TxnOp::Delete(d), _) => {
                            state.mod_revisions.insert(d.key.clone(), 0);
                        }
                        _ => {}
                    }
                }
            }
            (Request::Compact { revision }, Response::Compact {}) => {
                state.compacted = state.compacted.max(*revision);
            }
            _ => {}
        }
    }
}

fn planned(request: Request) -> PlannedOp {
    PlannedOp {
        f: request.function(),
        key: None,
        value: serde_json::to_value(&request).expect("requests serialize"),
        idempotent: !request.may_write() && !matches!(request, Request::Compact { .. }),
        action: Action::Kv(request),
    }
}

fn kv_of(kv: &etcd_client::KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn get_options(r: &RangeRequest) -> GetOptions {
    let mut options = GetOptions::new();
    if r.prefix {
        options = options.with_prefix();
    }
    if r.limit > 0 {
        options = options.with_limit(r.limit);
    }
    if r.revision > 0 {
        options = options.with_revision(r.revision);
    }
    if r.serializable {
        options = options.with_serializable();
    }
    options
}

fn put_options(p: &PutRequest) -> PutOptions {
    let options = PutOptions::new().with_prev_key();
    if p.lease != 0 {
        options.with_lease(p.lease)
    } else {
        options
    }
}

fn range_response(r: &etcd_client::GetResponse) -> RangeResponse {
    RangeResponse {
        kvs: r.kvs().iter().map(kv_of).collect(),
        count: r.count(),
        more: r.more(),
    }
}

fn delete_response(d: &etcd_client::DeleteResponse) -> DeleteResponse {
    DeleteResponse {
        deleted: d.deleted(),
        prev_kvs: d.prev_kvs().iter().map(kv_of).collect(),
    }
}

fn ok(response: Response, header: Option<&etcd_client::ResponseHeader>) -> Executed {
    Executed {
        kind: EventType::Ok,
        value: serde_json::to_value(&response).expect("responses serialize"),
        rev: header.map(|h| h.revision()),
        error: None,
    }
}

pub async fn execute(
    client: &mut Client,
    request: &Request,
) -> Result<Executed, etcd_client::Error> {
    match request {
        Request::Range(r) => {
            let response = client.get(r.key.as_str(), Some(get_options(r))).await?;
            Ok(ok(
                Response::Range(range_response(&response)),
                response.header(),
            ))
        }
        Request::Put(p) => {
            let response = client
                .put(p.key.as_str(), p.value.as_str(), Some(put_options(p)))
                .await?;
            let prev_kv = response.prev_key().map(kv_of);
            Ok(ok(
                Response::Put(PutResponse { prev_kv }),
                response.header(),
            ))
        }
        Request::Delete(d) => {
            let response = client
                .delete(d.key.as_str(), Some(DeleteOptions::new().with_prev_key()))
                .await?;
            Ok(ok(
                Response::Delete(delete_response(&response)),
                response.header(),
            ))
        }
        Request::Txn(t) => {
            let compares: Vec<etcd_client::Compare> = t
                .compare
                .iter()
                .map(|c| match &c.target {
                    CompareTarget::Value(v) => {
                        etcd_client::Compare::value(c.key.as_str(), CompareOp::Equal, v.as_str())
                    }
                    CompareTarget::ModRevision(m) => {
                        etcd_client::Compare::mod_revision(c.key.as_str(), CompareOp::Equal, *m)
                    }
                    CompareTarget::Version(n) => {
                        etcd_client::Compare::version(c.key.as_str(), CompareOp::Equal, *n)
                    }
                })
                .collect();
            let ops = |ops: &[TxnOp]| -> Vec<etcd_client::TxnOp> {
                ops.iter()
                    .map(|o| match o {
                        TxnOp::Range(r) => {
                            etcd_client::TxnOp::get(r.key.as_str(), Some(get_options(r)))
                        }
                        TxnOp::Put(p) => etcd_client::TxnOp::put(
                            p.key.as_str(),
                            p.value.as_str(),
                            Some(put_options(p)),
                        ),
                        TxnOp::Delete(d) => etcd_client::TxnOp::delete(
                            d.key.as_str(),
                            Some(DeleteOptions::new().with_prev_key()),
                        ),
                    })
                    .collect()
            };
            let txn = etcd_client::Txn::new()
                .when(compares)
                .and_then(ops(&t.success))
                .or_else(ops(&t.failure));
            let response = client.txn(txn).await?;
            let results = response
                .op_responses()
                .iter()
                .map(|r| match r {
                    etcd_client::TxnOpResponse::Get(g) => {
                        Ok(TxnOpResponse::Range(range_response(g)))
                    }
                    etcd_client::TxnOpResponse::Put(p) => Ok(TxnOpResponse::Put(PutResponse {
                        prev_kv: p.prev_key().map(kv_of),
                    })),
                    etcd_client::TxnOpResponse::Delete(d) => {
                        Ok(TxnOpResponse::Delete(delete_response(d)))
                    }
                    // The workload never nests txns. The txn may still
                    // have been applied, so this is an unknown outcome.
                    etcd_client::TxnOpResponse::Txn(_) => Err(etcd_client::Error::Internal(
                        "a nested txn response to a txn without nested txns".to_string(),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let response_value = Response::Txn(TxnResponse {
                succeeded: response.succeeded(),
                results,
            });
            Ok(ok(response_value, response.header()))
        }
        Request::Compact { revision } => {
            let response = client.compact(*revision, None).await?;
            Ok(ok(Response::Compact {}, response.header()))
        }
    }
}
