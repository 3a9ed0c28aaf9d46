//! Fault injection on a seeded schedule.
//!
//! [`plan`] turns the seed into a list of faults — when, what kind, how
//! long, and whether to aim at the leader — so a run's schedule is
//! reproducible (the interleaving with the clients is not: the processes
//! are real). Faults overlap, at most [`MAX_CONCURRENT`] at a time, and each
//! ends before the run does.
//!
//! [`Nemesis::run`] carries the plan out against the [`Cluster`]. Targets
//! are chosen when a fault starts (the leader moves), never so that more
//! than a minority of members is impaired at once: an overlapping fault
//! picks a member that is already impaired when the budget is used up. So
//! the cluster loses its quorum only while a fault is active on the member
//! it needs, never for good. Every fault is healed when its time is up, and
//! everything is healed again at the end ([`Nemesis::heal_all`]).
//!
//! - `kill`: `kill -9`, then a restart on the same data directory;
//! - `pause`: SIGSTOP for 2–6 election timeouts, then SIGCONT;
//! - `partition`: cut a member (or, with 5 members, two) off from the
//!   rest through the [`crate::proxy::PeerProxy`], then heal;
//! - `kill-all`: `kill -9` of every member at once, all restarted 1–3 s
//!   later. The one fault that takes the quorum away: it is never planned
//!   to overlap another, and nothing acknowledged may be lost across it
//!   (acknowledged means fsynced on a quorum);
//! - `member`: remove a follower from the membership (MemberRemove), kill
//!   it and wipe its data, then add it back (MemberAdd with the same peer
//!   URL, so a new member id) and start it empty with
//!   `--initial-cluster-state=existing`: it catches up by snapshot;
//! - `transfer`: MoveLeader from the current leader to a random follower;
//! - `compact`: compact the keyspace a little behind the current revision.
//!
//! `transfer` and `compact` are instants: they impair no member and do not
//! count against [`MAX_CONCURRENT`].

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::ValueEnum;
use etcd_client::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use crate::client;
use crate::cluster::Cluster;
use crate::history::RunClock;
use crate::proxy;

/// Faults active at the same time, at most.
pub const MAX_CONCURRENT: usize = 2;
/// How long one cluster call (MoveLeader, Compact, MemberAdd/Remove) may take.
const CLUSTER_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a membership change keeps retrying before giving up.
const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(30);
/// A compaction lands up to this many revisions behind the current one.
const COMPACT_BEHIND_MAX: u64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Kill,
    KillAll,
    Pause,
    Partition,
    Member,
    Transfer,
    Compact,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::KillAll,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Member,
        FaultKind::Transfer,
        FaultKind::Compact,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillAll => "kill-all",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Member => "member",
            FaultKind::Transfer => "transfer",
            FaultKind::Compact => "compact",
        }
    }

    /// Done at an instant: impairs no member, has no duration.
    pub fn is_instant(self) -> bool {
        matches!(self, FaultKind::Transfer | FaultKind::Compact)
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedFault {
    /// Start, from the beginning of the workload.
    pub at_ms: u64,
    pub kind: FaultKind,
    pub duration_ms: u64,
    /// Aim at the current leader (else a member picked with `pick`).
    pub leader: bool,
    /// How many members a partition cuts off (1, or 2 with 5 members).
    pub group: usize,
    /// Chooses among the eligible members.
    pub pick: u64,
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub kinds: Vec<FaultKind>,
    pub nodes: usize,
    /// Mean time between fault starts.
    pub interval: Duration,
    /// No fault before this.
    pub start_after: Duration,
    /// Every fault is over by then.
    pub end_by: Duration,
    pub election_timeout: Duration,
}

/// The seeded schedule.
pub fn plan(seed: u64, opts: &PlanOptions) -> Vec<PlannedFault> {
    if opts.kinds.is_empty() {
        return Vec::new();
    }
    // A stream of its own, so the schedule does not depend on the clients.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let interval = opts.interval.as_secs_f64();
    let election = opts.election_timeout.as_secs_f64();
    let mut t = opts.start_after.as_secs_f64();
    let mut ends: Vec<f64> = Vec::new();
    // Nothing starts before a kill-all has been healed.
    let mut exclusive_until = 0.0_f64;
    let mut faults = Vec::new();
    loop {
        // Exponential gaps (a Poisson process), clamped so faults neither
        // bunch up completely nor leave long quiet stretches.
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        t += (-u.ln() * interval).clamp(0.3 * interval, 2.0 * interval);
        t = t.max(exclusive_until);
        let kind = opts.kinds[rng.random_range(0..opts.kinds.len())];
        let duration = match kind {
            FaultKind::Kill | FaultKind::KillAll => rng.random_range(1.0..3.0),
            // A cairn follower campaigns 1.5–2 election timeouts after the
            // leader falls silent (etcd: 1–2), so most pauses of a leader
            // outlast that and it comes back deposed; the shorter ones test
            // a leader that resumes in time.
            FaultKind::Pause => rng.random_range(2.0 * election..6.0 * election),
            FaultKind::Partition => rng.random_range(2.0..5.0),
            // Long enough for the removal, the wipe and a catch-up that
            // needs a snapshot.
            FaultKind::Member => rng.random_range(3.0..8.0),
            FaultKind::Transfer | FaultKind::Compact => 0.0,
        };
        ends.retain(|&end| end > t);
        if kind == FaultKind::KillAll {
            t = ends.iter().copied().fold(t, f64::max) + 0.1;
            ends.clear();
        }
        while !kind.is_instant() && ends.len() >= MAX_CONCURRENT {
            let first = ends.iter().copied().fold(f64::INFINITY, f64::min);
            t = first + 0.1;
            ends.retain(|&end| end > t);
        }
        if t + duration > opts.end_by.as_secs_f64() {
            break;
        }
        if kind == FaultKind::KillAll {
            exclusive_until = t + duration + 0.5;
        }
        if !kind.is_instant() {
            ends.push(t + duration);
        }
        let group = if kind == FaultKind::Partition && opts.nodes >= 5 && rng.random_bool(0.5) {
            2
        } else {
            1
        };
        faults.push(PlannedFault {
            at_ms: (t * 1e3) as u64,
            kind,
            duration_ms: (duration * 1e3) as u64,
            leader: rng.random_bool(0.5),
            group,
            pick: rng.random(),
        });
    }
    faults
}

/// A fault as it happened, on the run clock.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub targets: Vec<String>,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
}

/// Per-member bookkeeping of active faults.
#[derive(Default)]
struct Impairment {
    /// Active faults per member.
    faults: Vec<usize>,
    /// Members cut off by an active partition.
    isolated: Vec<bool>,
}

pub struct Nemesis {
    /// The cluster the harness started; `None` for `--endpoints`, where
    /// only the instants (transfer, compact) can be done, through the API.
    cluster: Option<Arc<Mutex<Cluster>>>,
    /// Member names by index (`m0`, `m1`, … as in the history's `node`).
    names: Vec<String>,
    clients: Vec<Client>,
    clock: RunClock,
    log: Mutex<File>,
    records: Mutex<Vec<FaultRecord>>,
    impairment: Mutex<Impairment>,
    skipped: Mutex<usize>,
}

impl Nemesis {
    pub fn new(
        cluster: Option<Arc<Mutex<Cluster>>>,
        clients: Vec<Client>,
        clock: RunClock,
        log_path: &Path,
    ) -> anyhow::Result<Self> {
        let n = clients.len();
        Ok(Self {
            cluster,
            names: (0..n).map(|i| format!("m{i}")).collect(),
            clients,
            clock,
            log: Mutex::new(File::create(log_path)?),
            records: Mutex::new(Vec::new()),
            impairment: Mutex::new(Impairment {
                faults: vec![0; n],
                isolated: vec![false; n],
            }),
            skipped: Mutex::new(0),
        })
    }

    fn cluster(&self) -> Option<std::sync::MutexGuard<'_, Cluster>> {
        self.cluster
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Appends a line to `nemesis.log`, stamped with the run clock.
    pub fn log(&self, line: &str) {
        let t = self.clock.now_ns();
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(log, "{t:>14} {:>9.3}s {line}", t as f64 / 1e9);
        let _ = log.flush();
    }

    pub fn records(&self) -> Vec<FaultRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn skipped(&self) -> usize {
        *self.skipped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the schedule from `start`; returns when every fault is healed.
    /// No fault lasts past `end_by`.
    pub async fn run(self: Arc<Self>, faults: Vec<PlannedFault>, start: Instant, end_by: Instant) {
        let mut tasks = Vec::new();
        for fault in faults {
            let nemesis = self.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_millis(fault.at_ms)).await;
                nemesis.one(&fault, end_by).await;
            }));
        }
        for task in tasks {
            if let Err(e) = task.await {
                self.log(&format!("nemesis task failed: {e}"));
            }
        }
    }

    /// Injects one fault for its planned duration, then heals it. When no
    /// member is eligible yet (the faults already active hold the only ones
    /// it could take without costing the quorum), it waits for one, as long
    /// as it can still end by `end_by`: overlapping plans then delay faults
    /// instead of dropping them.
    async fn one(&self, fault: &PlannedFault, end_by: Instant) {
        if self.cluster.is_none() && !fault.kind.is_instant() {
            return self.skip(&format!(
                "{} skipped: external endpoints allow only transfer and compact",
                fault.kind.name()
            ));
        }
        match fault.kind {
            FaultKind::Transfer => return self.transfer(fault).await,
            FaultKind::Compact => return self.compact(fault).await,
            FaultKind::Member => return self.membership(fault, end_by).await,
            FaultKind::Kill | FaultKind::KillAll | FaultKind::Pause | FaultKind::Partition => {}
        }
        let duration = Duration::from_millis(fault.duration_ms);
        let (targets, record) = loop {
            let leader = if fault.leader {
                let mut clients = self.clients.clone();
                client::find_leader(&mut clients, Duration::from_millis(500)).await
            } else {
                None
            };
            if let Some(injected) = self.inject(fault, leader, duration) {
                break injected;
            }
            if Instant::now() + duration > end_by {
                *self.skipped.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                self.log(&format!(
                    "{} skipped: no eligible member in time",
                    fault.kind.name()
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokio::time::sleep(duration).await;
        self.heal(fault.kind, &targets);
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records[record].end_ns = Some(self.clock.now_ns());
    }

    /// Picks targets and injects; returns them and the record's index.
    fn inject(
        &self,
        fault: &PlannedFault,
        leader: Option<usize>,
        duration: Duration,
    ) -> Option<(Vec<usize>, usize)> {
        let mut cluster = self.cluster()?;
        let mut imp = self.impairment.lock().unwrap_or_else(|e| e.into_inner());
        let n = cluster.len();
        let budget = (n - 1) / 2;
        let impaired = imp.faults.iter().filter(|&&f| f > 0).count();
        if fault.kind == FaultKind::KillAll {
            // Only from a healthy cluster, so it is the only fault active.
            if impaired > 0 || (0..n).any(|m| !cluster.is_running(m)) {
                return None;
            }
        }
        let compatible = |m: usize| match fault.kind {
            FaultKind::Kill | FaultKind::KillAll => cluster.is_running(m),
            FaultKind::Pause => cluster.is_running(m) && !cluster.is_paused(m),
            FaultKind::Partition => !imp.isolated[m],
            FaultKind::Member | FaultKind::Transfer | FaultKind::Compact => false,
        };
        let eligible: Vec<usize> = (0..n)
            .filter(|&m| {
                compatible(m)
                    && (imp.faults[m] > 0 || impaired < budget || fault.kind == FaultKind::KillAll)
            })
            .collect();
        if eligible.is_empty() {
            return None;
        }
        let mut targets = Vec::new();
        if fault.kind == FaultKind::KillAll {
            targets = eligible.clone();
        } else {
            match leader.filter(|l| eligible.contains(l)) {
                Some(l) => targets.push(l),
                None => targets.push(eligible[(fault.pick % eligible.len() as u64) as usize]),
            }
        }
        if fault.group > 1 {
            let offset = (fault.pick / 7) as usize;
            let mut newly = targets.iter().filter(|&&m| imp.faults[m] == 0).count();
            for j in 0..eligible.len() {
                if targets.len() >= fault.group {
                    break;
                }
                let m = eligible[(offset + j) % eligible.len()];
                let fresh = imp.faults[m] == 0;
                if targets.contains(&m) || (fresh && impaired + newly + 1 > budget) {
                    continue;
                }
                newly += usize::from(fresh);
                targets.push(m);
            }
        }
        let names: Vec<String> = targets
            .iter()
            .map(|&m| cluster.members[m].name.clone())
            .collect();
        let outcome = match fault.kind {
            FaultKind::Kill => cluster.kill(targets[0]),
            FaultKind::KillAll => targets.iter().try_for_each(|&m| cluster.kill(m)),
            FaultKind::Pause => cluster.pause(targets[0]),
            FaultKind::Partition => match cluster.proxy() {
                Some(p) => {
                    p.cut(&proxy::isolating(&targets, n));
                    Ok(())
                }
                None => Err(anyhow::anyhow!("the cluster has no peer proxy")),
            },
            FaultKind::Member | FaultKind::Transfer | FaultKind::Compact => Err(anyhow::anyhow!(
                "{} is not injected by signals or cuts",
                fault.kind.name()
            )),
        };
        let role = if leader.is_some_and(|l| targets.contains(&l)) {
            " (leader)"
        } else {
            ""
        };
        if let Err(e) = outcome {
            drop(imp);
            drop(cluster);
            self.log(&format!(
                "{} {}{role} failed: {e:#}",
                fault.kind.name(),
                names.join(",")
            ));
            return None;
        }
        for &m in &targets {
            imp.faults[m] += 1;
            if fault.kind == FaultKind::Partition {
                imp.isolated[m] = true;
            }
        }
        drop(imp);
        drop(cluster);
        let start_ns = self.clock.now_ns();
        let ms = duration.as_millis();
        let detail = match fault.kind {
            FaultKind::Kill => format!("kill -9 {}{role}, restart in {ms} ms", names[0]),
            FaultKind::KillAll => format!(
                "kill -9 every member ({}), restart in {ms} ms",
                names.join(",")
            ),
            FaultKind::Pause => format!("SIGSTOP {}{role} for {ms} ms", names[0]),
            FaultKind::Partition => {
                format!("partition: isolate {}{role} for {ms} ms", names.join(","))
            }
            FaultKind::Member | FaultKind::Transfer | FaultKind::Compact => String::new(),
        };
        self.log(&detail);
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.push(FaultRecord {
            kind: fault.kind,
            targets: names,
            start_ns,
            end_ns: None,
        });
        Some((targets, records.len() - 1))
    }

    fn heal(&self, kind: FaultKind, targets: &[usize]) {
        let Some(mut cluster) = self.cluster() else {
            return;
        };
        let n = cluster.len();
        let names: Vec<String> = targets
            .iter()
            .map(|&m| cluster.members[m].name.clone())
            .collect();
        let outcome = match kind {
            FaultKind::Kill if !cluster.is_running(targets[0]) => {
                cluster.restart(targets[0]).map(|_| "restart".to_string())
            }
            FaultKind::Kill => Ok("already running:".to_string()),
            FaultKind::KillAll => targets
                .iter()
                .try_for_each(|&m| {
                    if cluster.is_running(m) {
                        Ok(())
                    } else {
                        cluster.restart(m)
                    }
                })
                .map(|_| "restart".to_string()),
            // A member killed while paused is no longer paused.
            FaultKind::Pause if cluster.is_paused(targets[0]) => {
                cluster.resume(targets[0]).map(|_| "SIGCONT".to_string())
            }
            FaultKind::Pause => Ok("no longer paused:".to_string()),
            FaultKind::Partition => match cluster.proxy() {
                Some(p) => {
                    p.heal(&proxy::isolating(targets, n));
                    let stats = p.stats();
                    Ok(format!(
                        "heal partition of (proxy so far: {} connections forwarded, {} black-holed, {} from an unidentified process)",
                        stats.forwarded, stats.blackholed, stats.unidentified
                    ))
                }
                None => Ok("heal partition of".to_string()),
            },
            FaultKind::Member | FaultKind::Transfer | FaultKind::Compact => {
                Ok(format!("nothing to heal for {}:", kind.name()))
            }
        };
        drop(cluster);
        let mut imp = self.impairment.lock().unwrap_or_else(|e| e.into_inner());
        for &m in targets {
            imp.faults[m] = imp.faults[m].saturating_sub(1);
            if kind == FaultKind::Partition {
                imp.isolated[m] = false;
            }
        }
        drop(imp);
        match outcome {
            Ok(what) => self.log(&format!("{what} {}", names.join(","))),
            Err(e) => self.log(&format!(
                "healing {} {} failed: {e:#}",
                kind.name(),
                names.join(",")
            )),
        }
    }

    fn record(&self, kind: FaultKind, targets: Vec<String>, start_ns: u64) -> usize {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.push(FaultRecord {
            kind,
            targets,
            start_ns,
            end_ns: None,
        });
        records.len() - 1
    }

    fn end_record(&self, record: usize) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records[record].end_ns = Some(self.clock.now_ns());
    }

    fn skip(&self, why: &str) {
        *self.skipped.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.log(why);
    }

    /// Members that can answer a cluster call: running, not paused, not
    /// cut off; the leader first when it is one of them.
    fn reachable(&self, leader: Option<usize>, except: Option<usize>) -> Vec<usize> {
        let cluster = self.cluster();
        let imp = self.impairment.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<usize> = (0..self.names.len())
            .filter(|&m| {
                Some(m) != except
                    && cluster
                        .as_ref()
                        .is_none_or(|c| c.is_running(m) && !c.is_paused(m))
                    && !imp.isolated[m]
            })
            .collect();
        if let Some(l) = leader {
            if let Some(i) = out.iter().position(|&m| m == l) {
                out.swap(0, i);
            }
        }
        out
    }

    /// MoveLeader from the current leader to a reachable follower.
    async fn transfer(&self, fault: &PlannedFault) {
        let mut clients = self.clients.clone();
        let Some(leader) = client::find_leader(&mut clients, Duration::from_millis(500)).await
        else {
            return self.skip("transfer skipped: no leader");
        };
        let followers = self.reachable(None, Some(leader));
        if followers.is_empty() {
            return self.skip("transfer skipped: no reachable follower");
        }
        let target = followers[(fault.pick % followers.len() as u64) as usize];
        let Some(status) = client::status(&mut clients[target], Duration::from_secs(1)).await
        else {
            return self.skip("transfer skipped: the chosen follower did not answer Status");
        };
        let (from, to) = (self.names[leader].clone(), self.names[target].clone());
        let record = self.record(FaultKind::Transfer, vec![to.clone()], self.clock.now_ns());
        let moved = tokio::time::timeout(
            CLUSTER_CALL_TIMEOUT,
            clients[leader].move_leader(status.member_id),
        )
        .await;
        self.end_record(record);
        match moved {
            Ok(Ok(_)) => self.log(&format!("transfer: leadership moved from {from} to {to}")),
            Ok(Err(e)) => self.log(&format!(
                "transfer from {from} to {to} failed: {}",
                client::describe(&e)
            )),
            Err(_) => self.log(&format!(
                "transfer from {from} to {to}: no answer within {CLUSTER_CALL_TIMEOUT:?}"
            )),
        }
    }

    /// Compacts up to a revision a little behind the newest one a
    /// reachable member reports, so reads and watches at older revisions
    /// start failing mid-run. A member that cannot take it (a member still
    /// joining answers only Status) passes it to the next.
    async fn compact(&self, fault: &PlannedFault) {
        let mut clients = self.clients.clone();
        let leader = client::find_leader(&mut clients, Duration::from_millis(500)).await;
        let members = self.reachable(leader, None);
        let mut newest = None;
        for &m in &members {
            if let Some(status) = client::status(&mut clients[m], Duration::from_secs(1)).await {
                newest = newest.max(Some(status.revision));
            }
        }
        let Some(newest) = newest else {
            return self.skip("compact skipped: no member answered Status");
        };
        let revision = (newest - (fault.pick % COMPACT_BEHIND_MAX) as i64).max(1);
        for m in members {
            let name = self.names[m].clone();
            let record = self.record(FaultKind::Compact, vec![name.clone()], self.clock.now_ns());
            let compacted =
                tokio::time::timeout(CLUSTER_CALL_TIMEOUT, clients[m].compact(revision, None))
                    .await;
            self.end_record(record);
            let error = match compacted {
                Ok(Ok(_)) => {
                    return self.log(&format!("compact at revision {revision} through {name}"))
                }
                Ok(Err(e)) => client::describe(&e),
                Err(_) => format!("no answer within {CLUSTER_CALL_TIMEOUT:?}"),
            };
            self.log(&format!(
                "compact at revision {revision} through {name} failed: {error}"
            ));
            if !error.contains("not supported for learner") {
                return;
            }
        }
    }

    /// Takes a running, unimpaired follower for a membership change, if
    /// the budget allows another impaired member.
    fn claim_follower(&self, fault: &PlannedFault, leader: Option<usize>) -> Option<usize> {
        let cluster = self.cluster()?;
        let mut imp = self.impairment.lock().unwrap_or_else(|e| e.into_inner());
        let n = cluster.len();
        let impaired = imp.faults.iter().filter(|&&f| f > 0).count();
        if impaired >= (n - 1) / 2 {
            return None;
        }
        let eligible: Vec<usize> = (0..n)
            .filter(|&m| {
                Some(m) != leader
                    && imp.faults[m] == 0
                    && cluster.is_running(m)
                    && !cluster.is_paused(m)
            })
            .collect();
        if eligible.is_empty() {
            return None;
        }
        let m = eligible[(fault.pick % eligible.len() as u64) as usize];
        imp.faults[m] += 1;
        Some(m)
    }

    fn release(&self, m: usize) {
        let mut imp = self.impairment.lock().unwrap_or_else(|e| e.into_inner());
        imp.faults[m] = imp.faults[m].saturating_sub(1);
    }

    /// Removes a follower, kills it and wipes its data, waits, then adds
    /// it back as a new member and starts it empty.
    async fn membership(&self, fault: &PlannedFault, end_by: Instant) {
        let duration = Duration::from_millis(fault.duration_ms);
        let mut clients = self.clients.clone();
        let (target, leader) = loop {
            let leader = client::find_leader(&mut clients, Duration::from_millis(500)).await;
            if leader.is_some() {
                if let Some(m) = self.claim_follower(fault, leader) {
                    break (m, leader);
                }
            }
            if Instant::now() + duration > end_by {
                return self.skip("member skipped: no leader or no eligible follower in time");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let name = self.names[target].clone();
        let Some(status) = client::status(&mut clients[target], Duration::from_secs(1)).await
        else {
            self.release(target);
            return self.skip(&format!("member skipped: {name} did not answer Status"));
        };
        let start_ns = self.clock.now_ns();
        if let Err(e) = self.remove_member(&mut clients, leader, target, status.member_id).await {
            self.release(target);
            return self.log(&format!("member: removing {name} failed: {e:#}"));
        }
        let record = self.record(FaultKind::Member, vec![name.clone()], start_ns);
        if let Some(mut cluster) = self.cluster() {
            if cluster.is_running(target) {
                if let Err(e) = cluster.kill(target) {
                    self.log(&format!("member: killing removed {name} failed: {e:#}"));
                }
            }
            if let Err(e) = cluster.wipe(target) {
                self.log(&format!("member: wiping {name}'s data failed: {e:#}"));
            }
        }
        self.log(&format!(
            "member: removed {name} (id {:x}), killed it and wiped its data; re-adding in {} ms",
            status.member_id,
            duration.as_millis()
        ));
        tokio::time::sleep(duration).await;
        match self.add_member(&mut clients, target).await {
            Ok(initial_cluster) => {
                let started = match self.cluster() {
                    Some(mut cluster) => cluster.rejoin(target, &initial_cluster),
                    None => Err(anyhow::anyhow!("no cluster to start it in")),
                };
                match started {
                    Ok(()) => self.log(&format!(
                        "member: added {name} back and started it empty (--initial-cluster={initial_cluster})"
                    )),
                    Err(e) => self.log(&format!("member: starting {name} again failed: {e:#}")),
                }
            }
            Err(e) => self.log(&format!(
                "member: adding {name} back failed: {e:#}; it stays out of the cluster"
            )),
        }
        self.release(target);
        self.end_record(record);
    }

    /// MemberRemove through a reachable member (the leader first), retried
    /// until [`MEMBERSHIP_DEADLINE`]. "member not found" after an attempt
    /// whose answer was lost means that attempt removed it.
    async fn remove_member(
        &self,
        clients: &mut [Client],
        leader: Option<usize>,
        target: usize,
        id: u64,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + MEMBERSHIP_DEADLINE;
        let mut attempted = false;
        loop {
            for m in self.reachable(leader, Some(target)) {
                match tokio::time::timeout(CLUSTER_CALL_TIMEOUT, clients[m].member_remove(id))
                    .await
                {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) if attempted && client::describe(&e).contains("member not found") => {
                        return Ok(())
                    }
                    Ok(Err(e)) if client::describe(&e).contains("member not found") => {
                        anyhow::bail!("member {id:x} is not in the membership")
                    }
                    _ => attempted = true,
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!("no member removed {id:x} within {MEMBERSHIP_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// MemberAdd of `target`'s peer URL, retried until
    /// [`MEMBERSHIP_DEADLINE`]; returns the `--initial-cluster` it must
    /// start with. "Peer URLs already exists" after an attempt whose answer
    /// was lost means that attempt added it.
    async fn add_member(&self, clients: &mut [Client], target: usize) -> anyhow::Result<String> {
        let name = self.names[target].clone();
        let peer_url = match self.cluster() {
            Some(cluster) => cluster.peer_url(target).to_string(),
            None => anyhow::bail!("membership changes need a cluster the harness started"),
        };
        let deadline = Instant::now() + MEMBERSHIP_DEADLINE;
        loop {
            let leader = client::find_leader(clients, Duration::from_millis(500)).await;
            for m in self.reachable(leader, Some(target)) {
                let added = tokio::time::timeout(
                    CLUSTER_CALL_TIMEOUT,
                    clients[m].member_add([peer_url.as_str()], None),
                )
                .await;
                let members = match added {
                    Ok(Ok(r)) => r.member_list().to_vec(),
                    Ok(Err(e)) if client::describe(&e).contains("Peer URLs already exists") => {
                        match tokio::time::timeout(CLUSTER_CALL_TIMEOUT, clients[m].member_list())
                            .await
                        {
                            Ok(Ok(r)) => r.members().to_vec(),
                            _ => continue,
                        }
                    }
                    _ => continue,
                };
                // Members added but not started yet have no name; etcdctl
                // lists them as `=URL`, which a starting member does not need.
                return Ok(members
                    .iter()
                    .filter(|member| {
                        !member.name().is_empty() || member.peer_urls().contains(&peer_url)
                    })
                    .map(|member| {
                        let urls = member.peer_urls().join(",");
                        if member.peer_urls().iter().any(|u| u == &peer_url) {
                            format!("{name}={urls}")
                        } else {
                            format!("{}={urls}", member.name())
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(","));
            }
            if Instant::now() >= deadline {
                anyhow::bail!("no member added {peer_url} within {MEMBERSHIP_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Resumes paused members, restarts stopped ones and heals every cut.
    pub fn heal_all(&self) {
        let Some(mut cluster) = self.cluster() else {
            return self.log("final heal: nothing to heal (external endpoints)");
        };
        let mut done = Vec::new();
        for m in 0..cluster.len() {
            let name = cluster.members[m].name.clone();
            if cluster.is_paused(m) && cluster.resume(m).is_ok() {
                done.push(format!("SIGCONT {name}"));
            }
            if cluster.is_removed(m) {
                done.push(format!("{name} stays removed (adding it back failed)"));
            } else if !cluster.is_running(m) && cluster.restart(m).is_ok() {
                done.push(format!("restart {name}"));
            }
        }
        if let Some(p) = cluster.proxy() {
            if p.has_cuts() {
                p.heal_all();
                done.push("heal all partitions".to_string());
            }
        }
        drop(cluster);
        if done.is_empty() {
            self.log("final heal: nothing to heal");
        } else {
            self.log(&format!("final heal: {}", done.join("; ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kinds: Vec<FaultKind>) -> PlanOptions {
        PlanOptions {
            kinds,
            nodes: 3,
            interval: Duration::from_secs(3),
            start_after: Duration::from_secs(2),
            end_by: Duration::from_secs(60),
            election_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn plans_are_seeded_bounded_and_never_too_concurrent() {
        let all = opts(vec![
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Partition,
        ]);
        let a = plan(42, &all);
        let b = plan(42, &all);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_ne!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&plan(43, &all)).unwrap()
        );
        assert!(a.len() >= 10, "{} faults in 60 s", a.len());
        for f in &a {
            assert!(f.at_ms >= 2000);
            assert!(f.at_ms + f.duration_ms <= 60_000);
            let overlapping = a
                .iter()
                .filter(|g| g.at_ms <= f.at_ms && f.at_ms < g.at_ms + g.duration_ms)
                .count();
            assert!(overlapping <= MAX_CONCURRENT, "{a:?}");
            if f.kind == FaultKind::Pause {
                assert!((2000..=6000).contains(&f.duration_ms));
            }
        }
        for kind in [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition] {
            assert!(a.iter().any(|f| f.kind == kind), "no {kind:?} in {a:?}");
        }
        assert!(plan(1, &opts(Vec::new())).is_empty());
    }

    #[test]
    fn kill_all_never_overlaps_and_instants_take_no_time() {
        let mut all = opts(FaultKind::ALL.to_vec());
        all.end_by = Duration::from_secs(300);
        for seed in 0..20 {
            let faults = plan(seed, &all);
            for kind in FaultKind::ALL {
                assert!(
                    faults.iter().any(|f| f.kind == kind),
                    "seed {seed}: no {kind:?}"
                );
            }
            for f in &faults {
                assert_eq!(f.kind.is_instant(), f.duration_ms == 0, "seed {seed}: {f:?}");
                assert!(f.at_ms + f.duration_ms <= 300_000);
            }
            for k in faults.iter().filter(|f| f.kind == FaultKind::KillAll) {
                let (start, end) = (k.at_ms, k.at_ms + k.duration_ms);
                for other in faults.iter().filter(|f| !std::ptr::eq(*f, k)) {
                    let (s, e) = (other.at_ms, other.at_ms + other.duration_ms);
                    assert!(
                        e < start || s > end,
                        "seed {seed}: {other:?} overlaps the kill-all {k:?}"
                    );
                }
            }
        }
    }
}
