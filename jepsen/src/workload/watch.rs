//! The `watch` workload: the [`kv`](super::kv) workload's clients, plus
//! watchers streaming every change under the run's prefix, checked by
//! [`crate::checker::watch`] (and the history by the kv checker).
//!
//! [`WatchWorkload::setup`] (after the kv workload's) reads the prefix: it
//! must be empty, and the header revision of that read, `empty_at`, is
//! where the merged stream starts (nothing on the prefix can have a
//! revision at or below it). [`WatchWorkload::start`] starts the watchers
//! when the run clock starts, before the processes. Every watcher starts at
//! `empty_at + 1` rather than at revision 1: on a fresh cairn cluster that
//! makes no difference (nothing happened at revision 1), but on
//! `--endpoints` (a real etcd with older data) revision 1 may be compacted,
//! and nothing before `empty_at` is on the prefix anyway. Then:
//!
//! - one **oracle** watcher per member (`oracle-m<i>`), on that member for
//!   the whole run, with `prev_kv`; whenever its stream breaks (the member
//!   was killed, a request timed out) it starts again on the same member at
//!   the revision after the last event it received;
//! - [`RESUMERS`] **resuming** watchers (`resume-<i>`): each cancels its
//!   watch after 1–4 s and, three times in ten after staying away for
//!   1.5–4 s so that the kv workload's compactions pass it, resumes at the
//!   revision after its last event on a random member.
//!
//! A watch response with a `compact_revision` C (the resume point was
//! compacted) makes the watcher start again at C, the only skip the checker
//! accepts. Every start, response (events, `created`, `canceled`,
//! `compact_revision`, cancel reason), requested cancel and broken stream is
//! recorded with the run clock in the watcher's log.
//!
//! [`WatchWorkload::drain`], after the final write, lets every watcher catch
//! up to that write's revision (bounded), stops them and writes
//! `watch/<watcher>.jsonl` and `watch/watchers.json` (where the stream
//! starts, the final revision) into the report directory, where
//! [`check_report`] finds them. Records and events held in memory
//! are capped at [`MAX_RECORDED`] over all watchers; a run that exceeds it
//! fails instead of checking a truncated stream.

use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use etcd_client::{Client, WatchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::kv::KvWorkload;
use super::{Action, PlannedOp};
use crate::checker::watch::{
    self as watch_checker, CheckOptions, Record, ResponseRecord, WatchEvent, WatchEventType,
    WatchLog, WatchRecord, WatchReport,
};
use crate::client;
use crate::history::{Event, EventType, RunClock};
use crate::nemesis::{FaultKind, FaultRecord};
use crate::ops::{Kv, Request};
use crate::report::HistoryIndex;

/// The report directory's folder for the watchers' logs.
pub const WATCH_DIR: &str = "watch";
const META_FILE: &str = "watchers.json";
/// Resuming watchers, besides one oracle watcher per member.
pub const RESUMERS: usize = 2;
/// Records plus events all watchers may hold; beyond it the run fails.
pub const MAX_RECORDED: usize = 2_000_000;
/// How long opening a watch may take before the attempt counts as broken.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before a broken watch is started again.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// How long a resuming watcher waits for the answer to its cancel.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long watchers get to deliver the final write after convergence.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a stopped watcher gets to finish before it is aborted.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The kv workload's operations, plus the watchers.
pub struct WatchWorkload {
    kv: KvWorkload,
    prefix: String,
    /// The revision at which setup found the prefix empty.
    empty_at: Mutex<Option<i64>>,
    watchers: Mutex<Option<Watchers>>,
    /// The final write's revision, once it succeeded.
    final_revision: Mutex<Option<i64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WatchWorkload {
    pub fn new(prefix: String, keys: usize) -> Self {
        Self {
            kv: KvWorkload::new(prefix.clone(), keys),
            prefix,
            empty_at: Mutex::new(None),
            watchers: Mutex::new(None),
            final_revision: Mutex::new(None),
        }
    }

    /// The kv workload's setup, then the revision where the stream starts.
    pub async fn setup(&self, client: &mut Client) -> anyhow::Result<()> {
        self.kv.setup(client).await?;
        let revision = tokio::time::timeout(OPEN_TIMEOUT, super::require_empty_prefix(client, &self.prefix))
            .await
            .context("reading the prefix timed out")??
            .context("a range response without a header")?;
        *lock(&self.empty_at) = Some(revision);
        Ok(())
    }

    /// Starts the watchers (after [`WatchWorkload::setup`]); `seed` drives
    /// the resuming watchers' choices.
    pub fn start(&self, urls: &[String], clock: RunClock, seed: u64) {
        let Some(empty_at) = *lock(&self.empty_at) else {
            // `run` always sets up first; without it there is no stream
            // start, and the report says no watcher ran.
            return;
        };
        let watchers = Watchers::start(urls, &self.prefix, clock, seed, empty_at);
        *lock(&self.watchers) = Some(watchers);
    }

    /// After the final write: lets the watchers deliver it, stops them and
    /// writes their logs under `report_dir`.
    pub async fn drain(&self, report_dir: &Path) -> anyhow::Result<()> {
        let Some(watchers) = lock(&self.watchers).take() else {
            bail!("the watchers were never started");
        };
        let final_revision = *lock(&self.final_revision);
        watchers.stop(final_revision).await?.write(report_dir)
    }

    pub fn plan(&self, rng: &mut StdRng, process: u64) -> PlannedOp {
        self.kv.plan(rng, process)
    }

    pub fn final_write(&self, process: u64) -> PlannedOp {
        self.kv.final_write(process)
    }

    /// The kv workload learns; the final write's revision is kept.
    pub fn observe(&self, op: &PlannedOp, kind: EventType, value: &Value, rev: Option<i64>) {
        self.kv.observe(op, kind, value, rev);
        let final_key = format!("{}final", self.prefix);
        if let (EventType::Ok, Some(rev), Action::Kv(Request::Put(p))) = (kind, rev, &op.action) {
            if p.key == final_key {
                *lock(&self.final_revision) = Some(rev);
            }
        }
    }
}

/// What watchers do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Run,
    /// Stop once the events of this revision are in.
    CatchUp(i64),
    Stop,
}

/// The running watchers of a run.
pub struct Watchers {
    empty_at: i64,
    phase: watch::Sender<Phase>,
    tasks: Vec<Running>,
    recorded: Arc<AtomicUsize>,
}

/// One watcher's task and the log it fills.
struct Running {
    name: String,
    log: Arc<Mutex<Vec<WatchRecord>>>,
    handle: JoinHandle<()>,
}

/// Everything the watchers recorded, and where their stream starts.
#[derive(Debug, Clone, Default)]
pub struct WatchLogs {
    /// The prefix was empty at this revision.
    pub empty_at: i64,
    /// The revision the watchers were asked to catch up to: the final
    /// write's, if it succeeded.
    pub final_revision: Option<i64>,
    pub logs: Vec<WatchLog>,
}

/// What a watcher task needs.
struct WatcherTask {
    /// `None`: a resuming watcher, which picks members with `rng`.
    home: Option<usize>,
    rng: StdRng,
    /// One per member, connected when the task starts.
    clients: Vec<Client>,
    prefix: String,
    clock: RunClock,
    phase: watch::Receiver<Phase>,
    log: Arc<Mutex<Vec<WatchRecord>>>,
    recorded: Arc<AtomicUsize>,
    /// Where the next start goes: after the last event, or a compaction.
    next: i64,
    last_event: Option<i64>,
}

/// How a session (one watch) ended.
enum End {
    /// The stream broke or the server canceled the watch: retry soon.
    Broken,
    /// The server answered with a compaction revision: start there now.
    Compacted,
    /// A resuming watcher let go of its watch.
    Resumed,
    Stop,
    /// The record cap was reached.
    Full,
}

impl Watchers {
    /// Starts every watcher at `empty_at + 1`. `urls` are the members'
    /// client URLs, in member order.
    pub fn start(urls: &[String], prefix: &str, clock: RunClock, seed: u64, empty_at: i64) -> Self {
        let (phase, receiver) = watch::channel(Phase::Run);
        let recorded = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let watchers = (0..urls.len())
            .map(|m| (format!("oracle-m{m}"), Some(m)))
            .chain((0..RESUMERS).map(|r| (format!("resume-{r}"), None)));
        for (n, (name, home)) in watchers.enumerate() {
            let log = Arc::new(Mutex::new(Vec::new()));
            let task = WatcherTask {
                home,
                // Apart from the workers' seeds (seed + 1 …).
                rng: StdRng::seed_from_u64(seed ^ (0x5741_5443_4800 + n as u64)),
                clients: Vec::new(),
                prefix: prefix.to_string(),
                clock,
                phase: receiver.clone(),
                log: log.clone(),
                recorded: recorded.clone(),
                next: empty_at + 1,
                last_event: None,
            };
            tasks.push(Running {
                name,
                log,
                handle: tokio::spawn(task.run(urls.to_vec())),
            });
        }
        Self {
            empty_at,
            phase,
            tasks,
            recorded,
        }
    }

    /// Lets every watcher deliver `final_revision` (at most
    /// [`CATCH_UP_DEADLINE`]; those that do not are stalled, which the
    /// checker reports), stops them and returns their logs. `None`: the
    /// final write did not succeed; stop at once.
    pub async fn stop(mut self, final_revision: Option<i64>) -> anyhow::Result<WatchLogs> {
        let phase = &self.phase;
        // Each task's outcome, once it ended (a handle is polled only until
        // then).
        let mut tasks: Vec<_> = std::mem::take(&mut self.tasks)
            .into_iter()
            .map(|r| (r, None))
            .collect();
        if let Some(rev) = final_revision {
            phase.send_replace(Phase::CatchUp(rev));
            let deadline = Instant::now() + CATCH_UP_DEADLINE;
            for (Running { handle, .. }, ended) in &mut tasks {
                // A task still running at the deadline is stopped below.
                if let Ok(result) = tokio::time::timeout_at(deadline, &mut *handle).await {
                    *ended = Some(result);
                }
            }
        }
        phase.send_replace(Phase::Stop);
        let deadline = Instant::now() + STOP_DEADLINE;
        let mut logs = Vec::new();
        for (running, ended) in tasks {
            let Running {
                name,
                log,
                mut handle,
            } = running;
            let ended = match ended {
                Some(result) => Some(result),
                None => tokio::time::timeout_at(deadline, &mut handle).await.ok(),
            };
            match ended {
                Some(Err(e)) if e.is_panic() => bail!("watcher {name} panicked: {e}"),
                Some(_) => {}
                None => handle.abort(),
            }
            let records = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
            logs.push(WatchLog { name, records });
        }
        let total = self.recorded.load(Ordering::Relaxed);
        if total > MAX_RECORDED {
            bail!(
                "the watchers received more than {MAX_RECORDED} records and events, the memory cap of the watch workload; run it for a shorter time"
            );
        }
        Ok(WatchLogs {
            empty_at: self.empty_at,
            final_revision,
            logs,
        })
    }
}

/// Watchers not stopped (the run failed before the end) must not outlive
/// it: they would keep dialing the members.
impl Drop for Watchers {
    fn drop(&mut self) {
        for running in &self.tasks {
            running.handle.abort();
        }
    }
}

impl WatcherTask {
    async fn run(mut self, urls: Vec<String>) {
        for url in &urls {
            match client::connect(url).await {
                Ok(c) => self.clients.push(c),
                Err(e) => {
                    // Connecting is lazy, so only a malformed URL gets here;
                    // the watcher delivers nothing and the checker says so.
                    self.record(
                        self.clients.len(),
                        Record::Broken {
                            error: format!("{e:#}"),
                        },
                    );
                    return;
                }
            }
        }
        loop {
            if self.done() {
                return;
            }
            let member = match self.home {
                Some(m) => m,
                None => self.rng.random_range(0..self.clients.len()),
            };
            match self.session(member).await {
                End::Stop | End::Full => return,
                End::Compacted => {}
                End::Broken => {
                    if !self.pause(RETRY_DELAY).await {
                        return;
                    }
                }
                End::Resumed => {
                    let running = *self.phase.borrow() == Phase::Run;
                    if running && self.rng.random_bool(0.3) {
                        let away = Duration::from_millis(self.rng.random_range(1500..4000));
                        if !self.pause(away).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Whether the watcher is finished: stopped, or caught up.
    fn done(&self) -> bool {
        match *self.phase.borrow() {
            Phase::Run => false,
            Phase::CatchUp(rev) => self.last_event.is_some_and(|l| l >= rev),
            Phase::Stop => true,
        }
    }

    /// Waits `d`, less if the phase changes; false if the watcher is done.
    async fn pause(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return !self.done(),
                changed = self.phase.changed() => {
                    if changed.is_err() || self.done() {
                        return false;
                    }
                    if *self.phase.borrow() != Phase::Run {
                        // Catching up: no more waiting around.
                        return true;
                    }
                }
            }
        }
    }

    /// Appends a record; false once the cap is reached (the record is
    /// dropped and the run will fail).
    fn record(&self, member: usize, record: Record) -> bool {
        let weight = 1 + match &record {
            Record::Response(r) => r.events.len(),
            _ => 0,
        };
        if self.recorded.fetch_add(weight, Ordering::Relaxed) + weight > MAX_RECORDED {
            return false;
        }
        let record = WatchRecord {
            t_ns: self.clock.now_ns(),
            member: format!("m{member}"),
            record,
        };
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
        true
    }

    /// One watch on `member` from `self.next`, until it breaks, is
    /// compacted, is let go (resuming watchers) or the watcher is done.
    async fn session(&mut self, member: usize) -> End {
        let start = self.next;
        let started = self.record(
            member,
            Record::Start {
                key: self.prefix.clone(),
                start_revision: start,
            },
        );
        if !started {
            return End::Full;
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(start);
        let mut client = self.clients[member].clone();
        let opened = tokio::time::timeout(
            OPEN_TIMEOUT,
            client.watch(self.prefix.as_str(), Some(options)),
        )
        .await;
        let stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return self.broken(member, client::describe(&e)),
            Err(_) => {
                return self.broken(
                    member,
                    format!("no answer to the watch request within {OPEN_TIMEOUT:?}"),
                )
            }
        };
        let (mut sender, mut responses) = stream.split();
        let far = Instant::now() + Duration::from_secs(86_400);
        // Resuming watchers let go of the watch after a while.
        let let_go_at = match self.home {
            Some(_) => far,
            None => Instant::now() + Duration::from_millis(self.rng.random_range(1000..4000)),
        };
        let mut watch_id: Option<i64> = None;
        let mut cancel_deadline: Option<Instant> = None;
        loop {
            let letting_go = self.home.is_none()
                && cancel_deadline.is_none()
                && *self.phase.borrow() == Phase::Run;
            tokio::select! {
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        let record = response_record(&response);
                        if record.created {
                            watch_id = Some(record.watch_id);
                        }
                        if let Some(last) = record.events.last() {
                            self.last_event = Some(last.revision());
                            self.next = self.next.max(last.revision() + 1);
                        }
                        let (canceled, compacted) = (record.canceled, record.compact_revision);
                        if !self.record(member, Record::Response(record)) {
                            return End::Full;
                        }
                        if compacted != 0 {
                            self.next = self.next.max(compacted);
                            return End::Compacted;
                        }
                        if canceled {
                            return if cancel_deadline.is_some() {
                                End::Resumed
                            } else {
                                End::Broken
                            };
                        }
                        if self.done() {
                            return End::Stop;
                        }
                    }
                    Ok(None) => return self.broken(member, "the server ended the stream".to_string()),
                    Err(e) => return self.broken(member, client::describe(&e)),
                },
                _ = tokio::time::sleep_until(let_go_at), if letting_go => {
                    let Some(id) = watch_id else {
                        // Not even created yet: just drop the stream.
                        return End::Resumed;
                    };
                    if !self.record(member, Record::Cancel { watch_id: id }) {
                        return End::Full;
                    }
                    if sender.cancel(id).await.is_err() {
                        return End::Resumed;
                    }
                    cancel_deadline = Some(Instant::now() + CANCEL_TIMEOUT);
                }
                _ = tokio::time::sleep_until(cancel_deadline.unwrap_or(far)), if cancel_deadline.is_some() => {
                    return End::Resumed;
                }
                changed = self.phase.changed() => {
                    if changed.is_err() || self.done() {
                        return End::Stop;
                    }
                }
            }
        }
    }

    fn broken(&self, member: usize, error: String) -> End {
        if self.record(member, Record::Broken { error }) {
            End::Broken
        } else {
            End::Full
        }
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

fn response_record(r: &etcd_client::WatchResponse) -> ResponseRecord {
    let events = r
        .events()
        .iter()
        .map(|e| WatchEvent {
            kind: match e.event_type() {
                etcd_client::EventType::Put => WatchEventType::Put,
                etcd_client::EventType::Delete => WatchEventType::Delete,
            },
            // An event without a key-value has an empty key, which the
            // checker reports as outside the prefix.
            kv: e.kv().map(kv_of).unwrap_or(Kv {
                key: String::new(),
                value: String::new(),
                create_revision: 0,
                mod_revision: 0,
                version: 0,
                lease: 0,
            }),
            prev_kv: e.prev_kv().map(kv_of),
        })
        .collect();
    ResponseRecord {
        watch_id: r.watch_id(),
        revision: r.header().map_or(0, |h| h.revision()),
        created: r.created(),
        canceled: r.canceled(),
        compact_revision: r.compact_revision(),
        cancel_reason: r.cancel_reason().to_string(),
        // etcd-client 0.21 exposes no `fragment` (without its
        // `pub-response-field` feature); the watchers never ask for
        // fragments, so a server must not send any.
        fragment: None,
        events,
    }
}

/// `watch/watchers.json`: what the checker needs beyond the logs.
#[derive(Debug, Serialize, Deserialize)]
struct WatchMeta {
    empty_at: i64,
    final_revision: Option<i64>,
}

impl WatchLogs {
    /// Writes `<dir>/watch/<watcher>.jsonl` and `<dir>/watch/watchers.json`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let dir = dir.join(WATCH_DIR);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for log in &self.logs {
            let file = std::fs::File::create(dir.join(format!("{}.jsonl", log.name)))?;
            log.write_jsonl(BufWriter::new(file))?;
        }
        let meta = WatchMeta {
            empty_at: self.empty_at,
            final_revision: self.final_revision,
        };
        std::fs::write(dir.join(META_FILE), serde_json::to_string_pretty(&meta)?)?;
        Ok(())
    }

    /// Reads what [`WatchLogs::write`] wrote under `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join(WATCH_DIR);
        let meta_path = dir.join(META_FILE);
        let meta: WatchMeta = serde_json::from_slice(
            &std::fs::read(&meta_path)
                .with_context(|| format!("cannot read {}", meta_path.display()))?,
        )?;
        Ok(Self {
            empty_at: meta.empty_at,
            final_revision: meta.final_revision,
            logs: watch_checker::read_logs(&dir)?,
        })
    }

    /// Checks the logs against `events`; `foreign_compactions` are the
    /// invoke times of compactions the history does not hold.
    pub fn check(
        &self,
        events: &[Event],
        foreign_compactions: Vec<u64>,
    ) -> Result<WatchReport, watch_checker::WatchCheckError> {
        watch_checker::check(
            events,
            &self.logs,
            &CheckOptions {
                empty_at: self.empty_at,
                final_revision: self.final_revision,
                foreign_compactions,
            },
        )
    }
}

/// The watch checker's part of a run's verdict, on the logs under
/// `report_dir`: whether it passed, its JSON, its summary lines; each
/// anomaly (with the window of history operations on its keys) is appended
/// to `anomaly_text`. Unless the cluster `converged`, watchers are not
/// required to deliver the final write. The nemesis' compactions (in
/// `faults`) are not in the history; their revisions are unknown.
pub fn check_report(
    report_dir: &Path,
    events: &[Event],
    faults: &[FaultRecord],
    converged: bool,
    index: &HistoryIndex<'_>,
    anomaly_text: &mut String,
) -> anyhow::Result<(bool, Value, String)> {
    let mut logs = WatchLogs::read(report_dir)?;
    if !converged {
        logs.final_revision = None;
    }
    let foreign = faults
        .iter()
        .filter(|f| f.kind == FaultKind::Compact)
        .map(|f| f.start_ns)
        .collect();
    let report = logs.check(events, foreign)?;
    for a in &report.anomalies {
        anomaly_text.push_str(&format!("watch {}: {}\n", a.kind, a.message));
        let keys = &a.keys;
        let lines = index.window(&a.ops, |e| {
            serde_json::from_value::<crate::ops::Request>(e.value.clone())
                .is_ok_and(|r| r.keys().iter().any(|k| keys.iter().any(|a| a == k)))
        });
        for line in lines {
            anomaly_text.push_str(&format!("    {line}\n"));
        }
    }
    if report.total_anomalies() > report.anomalies.len() {
        anomaly_text.push_str(&format!(
            "… and {} more watch anomalies (counts in verdict.json)\n",
            report.total_anomalies() - report.anomalies.len()
        ));
    }
    let mut line = format!(
        "watch checker: {} ({} watchers, {} events, {} revisions with events, {} acknowledged writes of which {} no watcher covered, {} unknown writes resolved, {} resumes, {:.1} ms)",
        if report.valid() {
            "valid".to_string()
        } else {
            format!("{} anomalies", report.total_anomalies())
        },
        report.watchers.len(),
        report.events(),
        report.revisions,
        report.acknowledged,
        report.acknowledged_unwatched,
        report.resolved,
        report.resumes(),
        report.elapsed.as_secs_f64() * 1e3
    );
    for w in &report.watchers {
        line.push_str(&format!(
            "\n    {}: {} events, revisions {}..={}, {} starts ({} broken streams, {} cancels, {} compaction responses skipping {} revisions), members {}",
            w.name,
            w.events,
            w.first_revision.unwrap_or(0),
            w.last_revision.unwrap_or(0),
            w.starts,
            w.broken,
            w.cancels,
            w.compacted,
            w.compacted_revisions,
            w.members.join(",")
        ));
    }
    let counts: serde_json::Map<String, Value> = report
        .counts
        .iter()
        .map(|(k, v)| (k.name().to_string(), json!(v)))
        .collect();
    let json = json!({
        "checker": "watch",
        "valid": report.valid(),
        "anomalies": counts,
        "empty_at": logs.empty_at,
        "final_revision": logs.final_revision,
        "revisions": report.revisions,
        "acknowledged": report.acknowledged,
        "acknowledged_unwatched": report.acknowledged_unwatched,
        "resolved": report.resolved,
        "missing_events": report.missing_events,
        "watchers": report.watchers,
        "elapsed_ms": report.elapsed.as_millis() as u64,
    });
    Ok((report.valid(), json, line))
}
