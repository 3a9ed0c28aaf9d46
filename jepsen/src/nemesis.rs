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
//!   rest through the [`crate::proxy::PeerProxy`], then heal.

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Kill,
    Pause,
    Partition,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
        }
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
    let mut faults = Vec::new();
    loop {
        // Exponential gaps (a Poisson process), clamped so faults neither
        // bunch up completely nor leave long quiet stretches.
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        t += (-u.ln() * interval).clamp(0.3 * interval, 2.0 * interval);
        let kind = opts.kinds[rng.random_range(0..opts.kinds.len())];
        let duration = match kind {
            FaultKind::Kill => rng.random_range(1.0..3.0),
            // Followers notice a silent leader only after about three
            // election timeouts (the randomized timeout plus the leader's
            // lease), so pauses up to 6 × make the paused member come back
            // as a deposed leader about half the time.
            FaultKind::Pause => rng.random_range(2.0 * election..6.0 * election),
            FaultKind::Partition => rng.random_range(2.0..5.0),
        };
        ends.retain(|&end| end > t);
        while ends.len() >= MAX_CONCURRENT {
            let first = ends.iter().copied().fold(f64::INFINITY, f64::min);
            t = first + 0.1;
            ends.retain(|&end| end > t);
        }
        if t + duration > opts.end_by.as_secs_f64() {
            break;
        }
        ends.push(t + duration);
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
    cluster: Arc<Mutex<Cluster>>,
    clients: Vec<Client>,
    clock: RunClock,
    log: Mutex<File>,
    records: Mutex<Vec<FaultRecord>>,
    impairment: Mutex<Impairment>,
    skipped: Mutex<usize>,
}

impl Nemesis {
    pub fn new(
        cluster: Arc<Mutex<Cluster>>,
        clients: Vec<Client>,
        clock: RunClock,
        log_path: &Path,
    ) -> anyhow::Result<Self> {
        let n = clients.len();
        Ok(Self {
            cluster,
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

    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut cluster = self.cluster();
        let mut imp = self.impairment.lock().unwrap_or_else(|e| e.into_inner());
        let n = cluster.len();
        let budget = (n - 1) / 2;
        let impaired = imp.faults.iter().filter(|&&f| f > 0).count();
        let compatible = |m: usize| match fault.kind {
            FaultKind::Kill => cluster.is_running(m),
            FaultKind::Pause => cluster.is_running(m) && !cluster.is_paused(m),
            FaultKind::Partition => !imp.isolated[m],
        };
        let eligible: Vec<usize> = (0..n)
            .filter(|&m| compatible(m) && (imp.faults[m] > 0 || impaired < budget))
            .collect();
        if eligible.is_empty() {
            return None;
        }
        let mut targets = Vec::new();
        match leader.filter(|l| eligible.contains(l)) {
            Some(l) => targets.push(l),
            None => targets.push(eligible[(fault.pick % eligible.len() as u64) as usize]),
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
            FaultKind::Pause => cluster.pause(targets[0]),
            FaultKind::Partition => match cluster.proxy() {
                Some(p) => {
                    p.cut(&proxy::isolating(&targets, n));
                    Ok(())
                }
                None => Err(anyhow::anyhow!("the cluster has no peer proxy")),
            },
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
            FaultKind::Pause => format!("SIGSTOP {}{role} for {ms} ms", names[0]),
            FaultKind::Partition => {
                format!("partition: isolate {}{role} for {ms} ms", names.join(","))
            }
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
        let mut cluster = self.cluster();
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

    /// Resumes paused members, restarts stopped ones and heals every cut.
    pub fn heal_all(&self) {
        let mut cluster = self.cluster();
        let mut done = Vec::new();
        for m in 0..cluster.len() {
            let name = cluster.members[m].name.clone();
            if cluster.is_paused(m) && cluster.resume(m).is_ok() {
                done.push(format!("SIGCONT {name}"));
            }
            if !cluster.is_running(m) && cluster.restart(m).is_ok() {
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
}
