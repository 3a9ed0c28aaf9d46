//! `range KEY [END]`: Range requests, linearizable or serializable.

use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::RangeRequest;
use serde_json::Map;
use tonic::transport::Channel;

use super::{report, warm_and_measure, Ctx, Load, SetupError};
use crate::driver::Worker;
use crate::keys::prefix_range_end;
use crate::report::Report;
use crate::stats::OpError;

/// `--consistency`: etcd's spelling, `l` or `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// Linearizable: the server confirms it is current before answering
    L,
    /// Serializable: answered from the member's local store
    S,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RangeArgs {
    /// Key to read (the start of the range with END or --prefix; may be omitted with --prefix for all keys)
    #[arg(required_unless_present = "prefix")]
    pub key: Option<String>,
    /// End of the range (exclusive)
    #[arg(conflicts_with = "prefix")]
    pub end: Option<String>,
    #[command(flatten)]
    pub load: Load,
    /// Linearizable (l) or serializable (s) reads
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Maximum number of keys returned per request (0 = no limit)
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Return only the count of keys
    #[arg(long, conflicts_with = "keys_only")]
    pub count_only: bool,
    /// Return only the keys, no values
    #[arg(long)]
    pub keys_only: bool,
    /// Read every key that starts with KEY
    #[arg(long)]
    pub prefix: bool,
}

impl RangeArgs {
    /// The request every client sends.
    pub fn request(&self) -> RangeRequest {
        let key = self.key.clone().unwrap_or_default().into_bytes();
        let range_end =
            if self.prefix { prefix_range_end(&key) } else { self.end.clone().unwrap_or_default().into_bytes() };
        // The empty key with a range end means "from the first key", which
        // etcd spells as "\0".
        let key = if key.is_empty() && !range_end.is_empty() { vec![0] } else { key };
        RangeRequest {
            key,
            range_end,
            limit: self.limit,
            serializable: self.consistency == Consistency::S,
            count_only: self.count_only,
            keys_only: self.keys_only,
            ..Default::default()
        }
    }
}

pub struct RangeWorker {
    kv: KvClient<Channel>,
    req: RangeRequest,
}

impl Worker for RangeWorker {
    async fn op(&mut self, _seq: u64) -> Result<(), OpError> {
        self.kv.range(self.req.clone()).await?;
        Ok(())
    }
}

pub async fn run(ctx: &Ctx, args: &RangeArgs) -> Result<Report, SetupError> {
    if args.limit < 0 {
        return Err(SetupError::Invalid("--limit must not be negative".into()));
    }
    let req = args.request();
    let workers: Vec<RangeWorker> = (0..ctx.clients).map(|i| RangeWorker { kv: ctx.kv(i), req: req.clone() }).collect();
    let (_, phase, warmup_ops) = warm_and_measure(ctx, "range", workers, args.load.plan(ctx.timeout)).await;

    let mut params = Map::new();
    params.insert("key".into(), String::from_utf8_lossy(&req.key).into());
    params.insert("range_end".into(), String::from_utf8_lossy(&req.range_end).into());
    params.insert("consistency".into(), if req.serializable { "s" } else { "l" }.into());
    params.insert("limit".into(), args.limit.into());
    params.insert("count_only".into(), args.count_only.into());
    params.insert("keys_only".into(), args.keys_only.into());
    args.load.params(&mut params);
    Ok(report(ctx, "range", &phase, warmup_ops, params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: RangeArgs,
    }

    fn req(argv: &[&str]) -> RangeRequest {
        let mut full = vec!["t"];
        full.extend_from_slice(argv);
        T::try_parse_from(full).unwrap().args.request()
    }

    #[test]
    fn builds_the_request_etcd_benchmark_sends() {
        let r = req(&["foo"]);
        assert_eq!((r.key.as_slice(), r.range_end.as_slice(), r.serializable), (&b"foo"[..], &b""[..], false));
        let r = req(&["a", "b", "--consistency", "s", "--limit", "5"]);
        assert_eq!(
            (r.key.as_slice(), r.range_end.as_slice(), r.serializable, r.limit),
            (&b"a"[..], &b"b"[..], true, 5)
        );
        let r = req(&["foo", "--prefix", "--count-only"]);
        assert_eq!((r.range_end.as_slice(), r.count_only), (&b"fop"[..], true));
        let r = req(&["--prefix"]);
        assert_eq!((r.key.as_slice(), r.range_end.as_slice()), (&b"\0"[..], &b"\0"[..]));
    }

    #[test]
    fn rejects_contradictory_flags() {
        assert!(T::try_parse_from(["t"]).is_err());
        assert!(T::try_parse_from(["t", "a", "b", "--prefix"]).is_err());
        assert!(T::try_parse_from(["t", "a", "--count-only", "--keys-only"]).is_err());
        assert!(T::try_parse_from(["t", "a", "--consistency", "x"]).is_err());
    }
}
