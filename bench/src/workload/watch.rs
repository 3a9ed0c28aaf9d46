//! `watch`: watch event delivery latency, in the style of etcd's
//! `watch-latency`.
//!
//! `--watchers` watchers on one key (or prefix) are spread over `--streams`
//! Watch streams; once every watcher is created, `--clients` clients put
//! `--put-total` values at `--put-rate`. Each value starts with a run tag and
//! the put's send time on the process's monotonic clock, so a watcher
//! computes each event's delivery latency the moment it arrives, with no
//! per-revision bookkeeping shared between tasks. Each watcher checks that
//! revisions only increase and counts events, which proves at the end that it
//! got every one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::watch_client::WatchClient;
use cairn_api::etcdserverpb::{watch_request, PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use hdrhistogram::Histogram;
use prost::Message;
use rand::Rng;
use serde_json::Map;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use super::{report, Ctx, SetupError};
use crate::driver::{run_phase, Plan, Worker};
use crate::duration::parse_duration;
use crate::keys::{prefix_range_end, random_value, KeyGen};
use crate::report::{Delivery, Latency, Report};
use crate::stats::{new_histogram, record, ErrorTally, OpError};

/// Bytes at the start of every value: the run tag and the send time.
pub const STAMP_LEN: usize = 16;

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Total number of watchers
    #[arg(long, default_value_t = 100)]
    pub watchers: u64,
    /// Number of watch streams the watchers are spread over (round-robin over --conns)
    #[arg(long, default_value_t = 10)]
    pub streams: u64,
    /// Key to watch and put [default: cairn-bench-watch-<random hex from --seed>]
    #[arg(long)]
    pub key: Option<String>,
    /// Watch every key under --key; puts go to <key>00, <key>01, ... (--key-space-size keys)
    #[arg(long)]
    pub prefix: bool,
    /// Number of distinct keys put under the prefix (with --prefix)
    #[arg(long, default_value_t = 1, requires = "prefix")]
    pub key_space_size: u64,
    /// Value size in bytes (at least 16: the run tag and send time)
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
    /// Ask for the previous key-value in every event
    #[arg(long)]
    pub prev_kv: bool,
    /// Total number of puts
    #[arg(long = "put-total", visible_alias = "total", default_value_t = 1000)]
    pub put_total: u64,
    /// Put for this long instead (Go syntax: 30s); with --put-total, whichever ends first
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Puts per second across all clients (0 = unlimited)
    #[arg(long = "put-rate", visible_alias = "rate", default_value_t = 100)]
    pub put_rate: u64,
    /// After the last put, how long watchers may take to receive every event
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub delivery_timeout: Duration,
}

/// What a watcher found at the start of an event's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// A measured put, sent this many ns after the run's clock base.
    Measured(u64),
    /// A warmup put.
    Warmup,
    /// Someone else's write.
    Foreign,
}

/// Writes the stamp of a put into `value[..STAMP_LEN]`.
pub fn write_stamp(value: &mut [u8], tag: u64, sent_ns: u64) {
    value[..8].copy_from_slice(&tag.to_le_bytes());
    value[8..STAMP_LEN].copy_from_slice(&sent_ns.to_le_bytes());
}

/// Reads a value's stamp. Warmup puts carry `tag + 1`.
pub fn read_stamp(value: &[u8], tag: u64) -> Stamp {
    let (Some(t), Some(ns)) = (value.get(..8), value.get(8..STAMP_LEN)) else {
        return Stamp::Foreign;
    };
    let t = u64::from_le_bytes(t.try_into().expect("8 bytes"));
    if t == tag {
        Stamp::Measured(u64::from_le_bytes(ns.try_into().expect("8 bytes")))
    } else if t == tag.wrapping_add(1) {
        Stamp::Warmup
    } else {
        Stamp::Foreign
    }
}

/// Where the puts go.
#[derive(Debug, Clone)]
enum Target {
    Key(Vec<u8>),
    Prefix(KeyGen),
}

pub struct WatchPutWorker {
    kv: KvClient<Channel>,
    target: Arc<Target>,
    value: Vec<u8>,
    tag: u64,
    base: Instant,
    /// Highest revision of a successful put.
    max_rev: i64,
}

impl Worker for WatchPutWorker {
    async fn op(&mut self, seq: u64) -> Result<(), OpError> {
        let key = match &*self.target {
            Target::Key(k) => k.clone(),
            Target::Prefix(g) => g.key(seq % g.space()),
        };
        let mut value = self.value.clone();
        write_stamp(&mut value, self.tag, nanos_since(self.base));
        let resp = self.kv.put(PutRequest { key, value, ..Default::default() }).await?.into_inner();
        let rev = resp.header.map_or(0, |h| h.revision);
        self.max_rev = self.max_rev.max(rev);
        Ok(())
    }
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One watcher's progress.
#[derive(Debug, Clone, Copy, Default)]
struct WatcherState {
    /// Measured events received.
    got: u64,
    last_rev: i64,
    /// Canceled by the server: it will get nothing more.
    canceled: bool,
}

/// What one stream's watchers received.
struct StreamOutcome {
    latency: Histogram<u64>,
    got: Vec<u64>,
    errors: ErrorTally,
    last_event: Option<Instant>,
    foreign: u64,
}

/// Opens a Watch stream with `n` watchers created from `create` and waits
/// until the server has confirmed each one.
async fn open_stream(
    mut client: WatchClient<Channel>,
    create: WatchCreateRequest,
    n: usize,
) -> Result<(mpsc::Sender<WatchRequest>, Streaming<WatchResponse>, Vec<i64>), OpError> {
    // The creates go into the channel before the call: the server may hold
    // back the response headers (which the call waits for) until it has
    // something to answer. The channel holds exactly these requests.
    let (tx, rx) = mpsc::channel(n);
    for _ in 0..n {
        let req = WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create.clone())) };
        tx.try_send(req).expect("the channel has room for every create");
    }
    let mut stream = client.watch(ReceiverStream::new(rx)).await?.into_inner();
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let resp =
            stream.message().await?.ok_or_else(|| OpError::new("StreamClosed", "watch stream closed during setup"))?;
        if resp.canceled {
            return Err(OpError::new("Canceled", format!("watch create refused: {}", resp.cancel_reason)));
        }
        if resp.created {
            ids.push(resp.watch_id);
        }
    }
    Ok((tx, stream, ids))
}

/// Receives events until every watcher has the last measured revision
/// (announced through `done` once the puts are over), the stream fails, or
/// `grace` has passed since the announcement.
async fn consume(
    mut stream: Streaming<WatchResponse>,
    ids: Vec<i64>,
    tag: u64,
    base: Instant,
    mut done: watch::Receiver<Option<i64>>,
    grace: Duration,
) -> StreamOutcome {
    let index: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut watchers = vec![WatcherState::default(); ids.len()];
    let mut out = StreamOutcome {
        latency: new_histogram(),
        got: Vec::new(),
        errors: ErrorTally::default(),
        last_event: None,
        foreign: 0,
    };
    let mut target: Option<i64> = None;
    let mut deadline = tokio::time::Instant::now();
    loop {
        if let Some(t) = target {
            if watchers.iter().all(|w| w.canceled || w.last_rev >= t) {
                break;
            }
        }
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(resp)) => on_response(resp, &index, &mut watchers, tag, base, &mut out),
                Ok(None) => {
                    out.errors.add(OpError::new("StreamClosed", "watch stream closed by the server"));
                    break;
                }
                Err(status) => {
                    out.errors.add(status.into());
                    break;
                }
            },
            changed = done.changed(), if target.is_none() => {
                if changed.is_err() {
                    break;
                }
                target = *done.borrow_and_update();
                deadline = tokio::time::Instant::now() + grace;
            }
            () = tokio::time::sleep_until(deadline), if target.is_some() => {
                out.errors.add(OpError::new(
                    "DeliveryTimeout",
                    format!("not every event arrived within {grace:?} of the last put"),
                ));
                break;
            }
        }
    }
    out.got = watchers.iter().map(|w| w.got).collect();
    out
}

fn on_response(
    resp: WatchResponse,
    index: &HashMap<i64, usize>,
    watchers: &mut [WatcherState],
    tag: u64,
    base: Instant,
    out: &mut StreamOutcome,
) {
    let Some(&i) = index.get(&resp.watch_id) else { return };
    let w = &mut watchers[i];
    if resp.canceled {
        w.canceled = true;
        out.errors.add(OpError::new("Canceled", format!("watcher canceled by the server: {}", resp.cancel_reason)));
        return;
    }
    let now = Instant::now();
    for ev in resp.events {
        let Some(kv) = ev.kv else { continue };
        match read_stamp(&kv.value, tag) {
            Stamp::Measured(sent_ns) => {
                if kv.mod_revision <= w.last_rev {
                    out.errors.add(OpError::new(
                        "OutOfOrder",
                        format!("revision {} received after revision {}", kv.mod_revision, w.last_rev),
                    ));
                    continue;
                }
                w.last_rev = kv.mod_revision;
                w.got += 1;
                record(&mut out.latency, now.saturating_duration_since(base + Duration::from_nanos(sent_ns)));
                out.last_event = Some(now);
            }
            Stamp::Warmup => w.last_rev = w.last_rev.max(kv.mod_revision),
            Stamp::Foreign => out.foreign += 1,
        }
    }
}

/// Which stream each watcher goes on (round-robin): stream `s` gets this many.
pub fn watchers_per_stream(watchers: u64, streams: u64) -> Vec<usize> {
    (0..streams).map(|s| (watchers / streams + u64::from(s < watchers % streams)) as usize).collect()
}

pub async fn run(ctx: &Ctx, args: &WatchArgs) -> Result<Report, SetupError> {
    if args.watchers == 0 {
        return Err(SetupError::Invalid("--watchers must be at least 1".into()));
    }
    if args.streams == 0 || args.streams > args.watchers {
        return Err(SetupError::Invalid(format!("--streams must be between 1 and --watchers ({})", args.watchers)));
    }
    if args.val_size < STAMP_LEN {
        return Err(SetupError::Invalid(format!("--val-size must be at least {STAMP_LEN} (tag and send time)")));
    }
    let mut run_rng = ctx.run_rng();
    let key = args.key.clone().unwrap_or_else(|| format!("cairn-bench-watch-{:016x}", run_rng.random::<u64>()));
    let value = random_value(args.val_size, &mut run_rng);
    let target = if args.prefix {
        let width = args.key_space_size.saturating_sub(1).to_string().len();
        Target::Prefix(KeyGen::new(key.as_bytes(), width, args.key_space_size, true)?)
    } else {
        Target::Key(key.clone().into_bytes())
    };
    let sample_key = match &target {
        Target::Key(k) => k.clone(),
        Target::Prefix(g) => g.key(0),
    };
    ctx.check_size(
        "a put request",
        PutRequest { key: sample_key, value: value.clone(), ..Default::default() }.encoded_len(),
    )?;
    let create = WatchCreateRequest {
        key: key.clone().into_bytes(),
        range_end: if args.prefix { prefix_range_end(key.as_bytes()) } else { Vec::new() },
        prev_kv: args.prev_kv,
        ..Default::default()
    };

    // Every stream and watcher exists before the first put, so each watcher
    // must see every measured put as a live event.
    let per_stream = watchers_per_stream(args.watchers, args.streams);
    let mut opening = tokio::task::JoinSet::new();
    for (s, n) in per_stream.iter().copied().enumerate() {
        let client = ctx.watch(s);
        let create = create.clone();
        let timeout = ctx.timeout;
        opening.spawn(async move {
            let res = tokio::time::timeout(timeout, open_stream(client, create, n))
                .await
                .unwrap_or_else(|_| Err(OpError::timeout(timeout)));
            (s, res)
        });
    }
    let mut opened = Vec::with_capacity(per_stream.len());
    while let Some(joined) = opening.join_next().await {
        let (s, res) = joined.expect("watch setup task panicked");
        let stream = res.map_err(|source| SetupError::Rpc { what: format!("opening watch stream {s}"), source })?;
        opened.push(stream);
    }

    let tag: u64 = rand::random();
    let base = Instant::now();
    let (done_tx, done_rx) = watch::channel(None);
    let consumers: Vec<_> = opened
        .into_iter()
        .map(|(tx, stream, ids)| {
            let done = done_rx.clone();
            let grace = args.delivery_timeout;
            tokio::spawn(async move {
                let out = consume(stream, ids, tag, base, done, grace).await;
                // Half-closes the stream only now: etcd ends a watch stream
                // whose client stopped sending.
                drop(tx);
                out
            })
        })
        .collect();

    let target = Arc::new(target);
    let mut workers: Vec<WatchPutWorker> = (0..ctx.clients)
        .map(|i| WatchPutWorker {
            kv: ctx.kv(i),
            target: target.clone(),
            value: value.clone(),
            tag: tag.wrapping_add(1),
            base,
            max_rev: 0,
        })
        .collect();

    let mut warmup_ops = 0;
    if let Some(wp) = ctx.warmup_plan(args.put_rate) {
        let bar = ctx.progress_bar("warmup", wp.total);
        let (w, phase) = run_phase(workers, wp, &bar).await;
        bar.finish_and_clear();
        warmup_ops = phase.stats.ok() + phase.stats.errors.total();
        workers = w;
    }
    for w in &mut workers {
        w.tag = tag;
        w.max_rev = 0;
    }
    let plan = Plan { total: Some(args.put_total), duration: args.duration, rate: args.put_rate, timeout: ctx.timeout };
    let bar = ctx.progress_bar("put", plan.total);
    let (workers, phase) = run_phase(workers, plan, &bar).await;
    bar.finish_and_clear();

    let last_rev = workers.iter().map(|w| w.max_rev).max().unwrap_or(0);
    // No receivers left means every stream already ended; that is fine.
    let _ = done_tx.send(Some(last_rev));
    let mut latency = new_histogram();
    let mut stream_errors = ErrorTally::default();
    let mut got = Vec::with_capacity(args.watchers as usize);
    let mut last_event: Option<Instant> = None;
    let mut foreign = 0;
    for c in consumers {
        let out = c.await.expect("watch consumer panicked");
        latency.add(&out.latency).expect("auto-resizing histograms always merge");
        stream_errors.merge(out.errors);
        got.extend(out.got);
        last_event = last_event.max(out.last_event);
        foreign += out.foreign;
    }
    if foreign > 0 {
        eprintln!("note: watchers saw {foreign} events from other writers to {key:?}; they were ignored");
    }

    let expected = phase.stats.ok();
    let events: u64 = got.iter().sum();
    let missing: u64 = got.iter().map(|g| expected.saturating_sub(*g)).sum();
    let delivery_secs = last_event.map_or(0.0, |t| t.saturating_duration_since(phase.started).as_secs_f64());

    let mut params = Map::new();
    params.insert("key".into(), key.into());
    params.insert("prefix".into(), args.prefix.into());
    params.insert("key_space_size".into(), args.key_space_size.into());
    params.insert("val_size".into(), args.val_size.into());
    params.insert("prev_kv".into(), args.prev_kv.into());
    params.insert("put_rate".into(), args.put_rate.into());
    params.insert("duration_s".into(), args.duration.map(|d| d.as_secs_f64()).into());
    let mut rep = report(ctx, "watch", &phase, warmup_ops, params);
    if missing > 0 {
        stream_errors.add_n(OpError::new("MissingEvents", "events some watcher never received"), missing);
    }
    let mut errors = phase.stats.errors.clone();
    errors.merge(stream_errors);
    rep.errors = errors.total();
    rep.error_counts = errors.summary();
    rep.delivery = Some(Delivery {
        watchers: args.watchers,
        streams: args.streams,
        expected_per_watcher: expected,
        events,
        missing,
        seconds: delivery_secs,
        events_per_sec: if delivery_secs > 0.0 { events as f64 / delivery_secs } else { 0.0 },
        latency_ms: Latency::from_histogram(&latency),
    });
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_tell_runs_apart() {
        let mut v = vec![0xAA; 32];
        write_stamp(&mut v, 77, 123_456_789);
        assert_eq!(read_stamp(&v, 77), Stamp::Measured(123_456_789));
        assert_eq!(v[STAMP_LEN..], [0xAA; 16]);
        assert_eq!(read_stamp(&v, 76), Stamp::Warmup);
        assert_eq!(read_stamp(&v, 78), Stamp::Foreign);
        assert_eq!(read_stamp(b"short", 77), Stamp::Foreign);
    }

    #[test]
    fn watchers_are_spread_evenly() {
        assert_eq!(watchers_per_stream(10, 3), [4, 3, 3]);
        assert_eq!(watchers_per_stream(3, 3), [1, 1, 1]);
        assert_eq!(watchers_per_stream(100, 10).iter().sum::<usize>(), 100);
    }

    fn event_resp(watch_id: i64, revs: &[(i64, u64)]) -> WatchResponse {
        use cairn_api::mvccpb::{Event, KeyValue};
        WatchResponse {
            watch_id,
            events: revs
                .iter()
                .map(|&(rev, tag)| {
                    let mut value = vec![0; STAMP_LEN];
                    write_stamp(&mut value, tag, 0);
                    Event {
                        kv: Some(KeyValue { mod_revision: rev, value, ..Default::default() }),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn responses_are_counted_per_watcher_and_duplicates_flagged() {
        let index: HashMap<i64, usize> = [(5, 0), (9, 1)].into_iter().collect();
        let mut ws = vec![WatcherState::default(); 2];
        let mut out = StreamOutcome {
            latency: new_histogram(),
            got: vec![],
            errors: ErrorTally::default(),
            last_event: None,
            foreign: 0,
        };
        let base = Instant::now();
        on_response(event_resp(5, &[(2, 1), (3, 0), (4, 0)]), &index, &mut ws, 0, base, &mut out);
        on_response(event_resp(9, &[(3, 0)]), &index, &mut ws, 0, base, &mut out);
        on_response(event_resp(5, &[(4, 0), (5, 42)]), &index, &mut ws, 0, base, &mut out);
        on_response(event_resp(77, &[(6, 0)]), &index, &mut ws, 0, base, &mut out);
        assert_eq!((ws[0].got, ws[0].last_rev), (2, 4));
        assert_eq!((ws[1].got, ws[1].last_rev), (1, 3));
        assert_eq!(out.latency.len(), 3);
        assert_eq!(out.foreign, 1);
        assert_eq!(out.errors.summary()[0].code, "OutOfOrder");
        assert!(out.last_event.is_some());
    }
}
