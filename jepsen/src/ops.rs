//! The vocabulary of the `kv` workload's history: etcd KV requests and
//! responses as they appear in the `v` field of history events.
//!
//! An invoke's `v` is a [`Request`] and an `ok` completion's `v` the
//! matching [`Response`]; the response header's revision is the event's
//! `rev`. Only what the checkers need is recorded, but of that everything
//! the server said: every returned key-value pair with its revisions,
//! version and lease, counts, `more`, deleted counts and previous values.
//!
//! Keys and values are UTF-8 strings: the workloads only write such, and a
//! server returning bytes that are not UTF-8 is recorded lossily (and then
//! matches no write, which the checker reports).

use serde::{Deserialize, Serialize};

/// A key-value pair as the server returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A Range: one key, or every key under a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub key: String,
    /// Range over every key starting with `key`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prefix: bool,
    /// At most this many keys (0: no limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: i64,
    /// Read the state at this revision (0: the current one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: i64,
    /// Served from the member's local state, without a read barrier.
    #[serde(default, skip_serializing_if = "is_false")]
    pub serializable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub key: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease: i64,
}

/// A DeleteRange of exactly one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub key: String,
}

/// What a txn compare looks at; every compare is an equality.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareTarget {
    Value(String),
    /// 0 compares equal for a missing key.
    ModRevision(i64),
    /// 0 compares equal for a missing key.
    Version(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    pub target: CompareTarget,
}

/// An operation inside a txn branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOp {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRequest),
}

impl TxnOp {
    /// The key (or prefix) the operation is on.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Range(r) => &r.key,
            TxnOp::Put(p) => &p.key,
            TxnOp::Delete(d) => &d.key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// The `v` of an invoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRequest),
    Txn(TxnRequest),
    Compact { revision: i64 },
}

impl Request {
    /// The history's `f` for this request.
    pub fn function(&self) -> &'static str {
        match self {
            Request::Range(_) => "range",
            Request::Put(_) => "put",
            Request::Delete(_) => "delete",
            Request::Txn(_) => "txn",
            Request::Compact { .. } => "compact",
        }
    }

    /// Whether it can change keys (and so take a revision).
    pub fn may_write(&self) -> bool {
        match self {
            Request::Put(_) | Request::Delete(_) => true,
            Request::Txn(t) => t
                .success
                .iter()
                .chain(&t.failure)
                .any(|op| !matches!(op, TxnOp::Range(_))),
            Request::Range(_) | Request::Compact { .. } => false,
        }
    }

    /// A key the request is about, for partitioning reports by key: the
    /// range's key (or prefix), the written key, or a txn's first compare
    /// or operation key.
    pub fn first_key(&self) -> Option<&str> {
        match self {
            Request::Range(r) => Some(&r.key),
            Request::Put(p) => Some(&p.key),
            Request::Delete(d) => Some(&d.key),
            Request::Txn(t) => t
                .compare
                .first()
                .map(|c| c.key.as_str())
                .or_else(|| t.success.iter().chain(&t.failure).next().map(TxnOp::key)),
            Request::Compact { .. } => None,
        }
    }

    /// Every key the request names (ranges by their key or prefix).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Request::Range(r) => vec![&r.key],
            Request::Put(p) => vec![&p.key],
            Request::Delete(d) => vec![&d.key],
            Request::Txn(t) => {
                let mut keys: Vec<&str> = t.compare.iter().map(|c| c.key.as_str()).collect();
                keys.extend(t.success.iter().chain(&t.failure).map(TxnOp::key));
                keys.sort_unstable();
                keys.dedup();
                keys
            }
            Request::Compact { .. } => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<Kv>,
    pub count: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The key's previous value (the workload always asks for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<Kv>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub deleted: i64,
    /// The deleted pairs (the workload always asks for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prev_kvs: Vec<Kv>,
}

/// The response to one operation of the branch a txn took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOpResponse {
    Range(RangeResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub results: Vec<TxnOpResponse>,
}

/// The `v` of an `ok` completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
    Txn(TxnResponse),
    Compact {},
}
