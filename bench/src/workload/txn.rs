//! `txn-put`: transactions of `--txn-ops` puts each, no compares.

use std::sync::Arc;

use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::{request_op, PutRequest, RequestOp, TxnRequest};
use prost::Message;
use serde_json::Map;
use tonic::transport::Channel;

use super::{report, warm_and_measure, Ctx, Load, SetupError};
use crate::driver::Worker;
use crate::keys::{random_value, KeyGen};
use crate::report::Report;
use crate::stats::OpError;

#[derive(Debug, Clone, clap::Args)]
pub struct TxnPutArgs {
    #[command(flatten)]
    pub load: Load,
    /// Key size in bytes
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of puts per transaction
    #[arg(long, default_value_t = 1)]
    pub txn_ops: u64,
    /// Number of distinct keys written (at least --txn-ops)
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
}

/// The puts of transaction `seq`. Like etcd's `benchmark`, keys are
/// sequential over the key space: put `j` of transaction `seq` writes key
/// `(seq * ops + j) % space`, so the keys of one transaction are distinct
/// (etcd rejects a transaction that puts the same key twice) as long as
/// `ops <= space`.
pub fn txn_keys(keys: &KeyGen, ops: u64, seq: u64) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..ops).map(move |j| keys.key(seq.wrapping_mul(ops).wrapping_add(j) % keys.space()))
}

fn txn(keys: &KeyGen, ops: u64, value: &[u8], seq: u64) -> TxnRequest {
    let success = txn_keys(keys, ops, seq)
        .map(|key| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key,
                value: value.to_vec(),
                ..Default::default()
            })),
        })
        .collect();
    TxnRequest { success, ..Default::default() }
}

pub struct TxnPutWorker {
    kv: KvClient<Channel>,
    keys: Arc<KeyGen>,
    ops: u64,
    value: Arc<[u8]>,
}

impl Worker for TxnPutWorker {
    async fn op(&mut self, seq: u64) -> Result<(), OpError> {
        self.kv.txn(txn(&self.keys, self.ops, &self.value, seq)).await?;
        Ok(())
    }
}

pub async fn run(ctx: &Ctx, args: &TxnPutArgs) -> Result<Report, SetupError> {
    if args.txn_ops == 0 {
        return Err(SetupError::Invalid("--txn-ops must be at least 1".into()));
    }
    if args.txn_ops > args.key_space_size {
        return Err(SetupError::Invalid(format!(
            "--txn-ops ({}) must not exceed --key-space-size ({}): a transaction may not put the same key twice",
            args.txn_ops, args.key_space_size
        )));
    }
    let keys = Arc::new(KeyGen::new(b"", args.key_size, args.key_space_size, true)?);
    let value: Arc<[u8]> = random_value(args.val_size, &mut ctx.run_rng()).into();
    // Check the size before building a sample, so an absurd --txn-ops is
    // refused without allocating it.
    let per_op = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: keys.key(0),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
    .encoded_len()
        + 2;
    ctx.check_size("a txn-put request", per_op.saturating_mul(usize::try_from(args.txn_ops).unwrap_or(usize::MAX)))?;
    ctx.check_size("a txn-put request", txn(&keys, args.txn_ops, &value, 0).encoded_len())?;

    let workers: Vec<TxnPutWorker> = (0..ctx.clients)
        .map(|i| TxnPutWorker { kv: ctx.kv(i), keys: keys.clone(), ops: args.txn_ops, value: value.clone() })
        .collect();
    let (_, phase, warmup_ops) = warm_and_measure(ctx, "txn-put", workers, args.load.plan(ctx.timeout)).await;

    let mut params = Map::new();
    params.insert("key_size".into(), args.key_size.into());
    params.insert("val_size".into(), args.val_size.into());
    params.insert("txn_ops".into(), args.txn_ops.into());
    params.insert("key_space_size".into(), args.key_space_size.into());
    args.load.params(&mut params);
    Ok(report(ctx, "txn-put", &phase, warmup_ops, params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_of_a_txn_are_distinct_and_walk_the_space() {
        let keys = KeyGen::new(b"", 2, 10, true).unwrap();
        let t0: Vec<_> = txn_keys(&keys, 3, 0).collect();
        assert_eq!(t0, [b"00".to_vec(), b"01".to_vec(), b"02".to_vec()]);
        let t3: Vec<_> = txn_keys(&keys, 3, 3).collect();
        assert_eq!(t3, [b"09".to_vec(), b"00".to_vec(), b"01".to_vec()]);
        for seq in 0..100 {
            assert_eq!(txn_keys(&keys, 10, seq).collect::<HashSet<_>>().len(), 10);
        }
    }

    #[test]
    fn txn_holds_one_put_per_op() {
        let keys = KeyGen::new(b"", 4, 100, true).unwrap();
        let t = txn(&keys, 5, b"vv", 1);
        assert_eq!(t.success.len(), 5);
        assert!(t.compare.is_empty() && t.failure.is_empty());
        let Some(request_op::Request::RequestPut(p)) = &t.success[4].request else { panic!("not a put") };
        assert_eq!((p.key.as_slice(), p.value.as_slice()), (&b"0009"[..], &b"vv"[..]));
    }
}
