//! `put`: single-key Put requests.

use std::sync::Arc;

use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::PutRequest;
use prost::Message;
use rand::rngs::StdRng;
use serde_json::Map;
use tonic::transport::Channel;

use super::{report, warm_and_measure, Ctx, Load, SetupError};
use crate::driver::Worker;
use crate::keys::{random_value, KeyGen};
use crate::report::Report;
use crate::stats::OpError;

#[derive(Debug, Clone, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub load: Load,
    /// Key size in bytes (after --prefix)
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys written
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Write keys in order (0, 1, 2, ... wrapping at --key-space-size) instead of at random
    #[arg(long)]
    pub sequential_keys: bool,
    /// Prefix for every key
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// A new random value for every put instead of one value shared by the
    /// whole run (etcd's `benchmark` shares one): stored data that
    /// compression cannot shrink
    #[arg(long)]
    pub random_values: bool,
}

pub struct PutWorker {
    kv: KvClient<Channel>,
    keys: Arc<KeyGen>,
    value: Arc<[u8]>,
    random_values: bool,
    rng: StdRng,
}

impl Worker for PutWorker {
    async fn op(&mut self, seq: u64) -> Result<(), OpError> {
        let key = self.keys.key(self.keys.index(seq, &mut self.rng));
        let value =
            if self.random_values { random_value(self.value.len(), &mut self.rng) } else { self.value.to_vec() };
        self.kv.put(PutRequest { key, value, ..Default::default() }).await?;
        Ok(())
    }
}

pub async fn run(ctx: &Ctx, args: &PutArgs) -> Result<Report, SetupError> {
    let keys = Arc::new(KeyGen::new(args.prefix.as_bytes(), args.key_size, args.key_space_size, args.sequential_keys)?);
    let value: Arc<[u8]> = random_value(args.val_size, &mut ctx.run_rng()).into();
    let sample = PutRequest { key: keys.key(0), value: value.to_vec(), ..Default::default() };
    ctx.check_size("a put request", sample.encoded_len())?;

    let workers: Vec<PutWorker> = (0..ctx.clients)
        .map(|i| PutWorker {
            kv: ctx.kv(i),
            keys: keys.clone(),
            value: value.clone(),
            random_values: args.random_values,
            rng: ctx.rng(i),
        })
        .collect();
    let (_, phase, warmup_ops) = warm_and_measure(ctx, "put", workers, args.load.plan(ctx.timeout)).await;

    let mut params = Map::new();
    params.insert("key_size".into(), args.key_size.into());
    params.insert("val_size".into(), args.val_size.into());
    params.insert("key_space_size".into(), args.key_space_size.into());
    params.insert("sequential_keys".into(), args.sequential_keys.into());
    params.insert("prefix".into(), args.prefix.clone().into());
    params.insert("random_values".into(), args.random_values.into());
    args.load.params(&mut params);
    Ok(report(ctx, "put", &phase, warmup_ops, params))
}
