//! The closed-loop load driver shared by all workloads.
//!
//! Each client is one tokio task with exactly one request in flight. Tasks
//! take operation numbers from a shared atomic counter (so `--total` is met
//! exactly without a request channel), wait for the shared rate limiter if
//! `--rate` is set, and record latencies into their own histogram.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::stats::{record, OpError, Stats};

/// One client: issues operations one at a time.
pub trait Worker: Send + 'static {
    /// Performs operation number `seq` of the phase (0-based, unique across
    /// all clients) and returns once its response is in.
    fn op(&mut self, seq: u64) -> impl Future<Output = Result<(), OpError>> + Send;

    /// Called after an operation was abandoned at the client timeout, so a
    /// worker holding a stream can drop it: a late response on it would be
    /// taken for the answer to the next request.
    fn reset(&mut self) {}
}

/// When a phase ends and how fast it may go.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Stop after this many operations.
    pub total: Option<u64>,
    /// Stop issuing operations after this long.
    pub duration: Option<Duration>,
    /// Operations per second across all clients; 0 = unlimited.
    pub rate: u64,
    /// Per-operation client timeout.
    pub timeout: Duration,
}

/// What a phase measured.
#[derive(Debug)]
pub struct Phase {
    pub stats: Stats,
    /// From the phase start until the last client finished.
    pub elapsed: Duration,
    /// When the phase started (the first operation was taken).
    pub started: Instant,
}

/// Runs `plan` on `workers` (one task each) and hands the workers back so the
/// measured phase can reuse what the warmup set up.
pub async fn run_phase<W: Worker>(workers: Vec<W>, plan: Plan, progress: &ProgressBar) -> (Vec<W>, Phase) {
    let next = Arc::new(AtomicU64::new(0));
    let limiter = RateLimiter::new(plan.rate).map(Arc::new);
    let started = Instant::now();
    let deadline = plan.duration.map(|d| started + d);

    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let next = next.clone();
            let limiter = limiter.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut stats = Stats::default();
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if plan.total.is_some_and(|t| seq >= t) {
                        break;
                    }
                    if let Some(l) = &limiter {
                        l.wait(deadline).await;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let t0 = Instant::now();
                    match tokio::time::timeout(plan.timeout, w.op(seq)).await {
                        Ok(Ok(())) => record(&mut stats.latency, t0.elapsed()),
                        Ok(Err(e)) => stats.errors.add(e),
                        Err(_) => {
                            stats.errors.add(OpError::timeout(plan.timeout));
                            w.reset();
                        }
                    }
                    progress.inc(1);
                }
                (w, stats)
            })
        })
        .collect();

    let mut workers = Vec::with_capacity(tasks.len());
    let mut stats = Stats::default();
    for t in tasks {
        let (w, s) = t.await.expect("client task panicked");
        workers.push(w);
        stats.merge(s);
    }
    (workers, Phase { stats, elapsed: started.elapsed(), started })
}

/// A shared pacing clock for `--rate`: each operation reserves the next free
/// slot, one interval after the previous one. Like Go's `rate.Limiter` with a
/// burst of 1 (what etcd's `benchmark` uses), time spent below the rate is not
/// banked for a later burst.
#[derive(Debug)]
pub struct RateLimiter {
    base: Instant,
    interval_ns: u64,
    /// The earliest time (ns after `base`) the next operation may start.
    next_ns: AtomicU64,
}

impl RateLimiter {
    /// `None` for an unlimited rate (0).
    pub fn new(per_sec: u64) -> Option<Self> {
        (per_sec > 0).then(|| RateLimiter {
            base: Instant::now(),
            interval_ns: (1_000_000_000 / per_sec).max(1),
            next_ns: AtomicU64::new(0),
        })
    }

    /// Reserves a slot for an operation asked for at `now_ns` (ns after the
    /// limiter's creation) and returns when that operation may start.
    pub fn reserve(&self, now_ns: u64) -> u64 {
        let mut cur = self.next_ns.load(Ordering::Relaxed);
        loop {
            let slot = cur.max(now_ns);
            match self.next_ns.compare_exchange_weak(cur, slot + self.interval_ns, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return slot,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Waits for this operation's slot, or until `deadline` if that is sooner.
    pub async fn wait(&self, deadline: Option<Instant>) {
        let now_ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let slot = self.reserve(now_ns);
        if slot > now_ns {
            let at = self.base + Duration::from_nanos(slot);
            let at = deadline.map_or(at, |d| at.min(d));
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn limiter_spaces_slots_and_does_not_bank_idle_time() {
        let l = RateLimiter::new(1000).unwrap(); // 1 ms apart
        assert_eq!(l.reserve(0), 0);
        assert_eq!(l.reserve(0), 1_000_000);
        assert_eq!(l.reserve(500_000), 2_000_000);
        // Idle until t = 10 ms: the next slot is "now", not a burst of the
        // seven slots that went unused.
        assert_eq!(l.reserve(10_000_000), 10_000_000);
        assert_eq!(l.reserve(10_000_000), 11_000_000);
        assert!(RateLimiter::new(0).is_none());
    }

    /// Counts operations and fails every third one.
    struct Counter {
        seen: Arc<AtomicUsize>,
        seqs: Vec<u64>,
    }

    impl Worker for Counter {
        async fn op(&mut self, seq: u64) -> Result<(), OpError> {
            self.seen.fetch_add(1, Ordering::Relaxed);
            self.seqs.push(seq);
            if seq % 3 == 2 {
                Err(OpError::new("Internal", "every third"))
            } else {
                Ok(())
            }
        }
    }

    fn plan(total: Option<u64>, duration: Option<Duration>, rate: u64) -> Plan {
        Plan { total, duration, rate, timeout: Duration::from_secs(5) }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn total_is_met_exactly_across_clients() {
        let seen = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..7).map(|_| Counter { seen: seen.clone(), seqs: vec![] }).collect();
        let (workers, phase) = run_phase(workers, plan(Some(1000), None, 0), &ProgressBar::hidden()).await;
        assert_eq!(seen.load(Ordering::Relaxed), 1000);
        let mut seqs: Vec<u64> = workers.iter().flat_map(|w| w.seqs.iter().copied()).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..1000).collect::<Vec<_>>());
        assert_eq!(phase.stats.errors.total(), 333);
        assert_eq!(phase.stats.ok(), 667);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_bounds_throughput() {
        let seen = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..4).map(|_| Counter { seen: seen.clone(), seqs: vec![] }).collect();
        let t0 = Instant::now();
        let (_, phase) = run_phase(workers, plan(Some(50), None, 200), &ProgressBar::hidden()).await;
        // 50 ops at 200/s: the 50th slot is 49 intervals (245 ms) in.
        assert!(t0.elapsed() >= Duration::from_millis(240), "{:?}", t0.elapsed());
        assert_eq!(phase.stats.ok() + phase.stats.errors.total(), 50);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn duration_ends_an_unbounded_phase() {
        let seen = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2).map(|_| Counter { seen: seen.clone(), seqs: vec![] }).collect();
        let (_, phase) =
            run_phase(workers, plan(None, Some(Duration::from_millis(200)), 100), &ProgressBar::hidden()).await;
        let n = seen.load(Ordering::Relaxed);
        // 100/s for 0.2 s: about 20 ops, never far more.
        assert!((10..=22).contains(&n), "{n} ops");
        assert!(phase.elapsed >= Duration::from_millis(200) && phase.elapsed < Duration::from_secs(2));
    }

    struct Stuck {
        resets: usize,
    }

    impl Worker for Stuck {
        async fn op(&mut self, _seq: u64) -> Result<(), OpError> {
            std::future::pending().await
        }
        fn reset(&mut self) {
            self.resets += 1;
        }
    }

    #[tokio::test]
    async fn timed_out_ops_are_errors_and_reset_the_worker() {
        let p = Plan { total: Some(2), duration: None, rate: 0, timeout: Duration::from_millis(20) };
        let (workers, phase) = run_phase(vec![Stuck { resets: 0 }], p, &ProgressBar::hidden()).await;
        assert_eq!(workers[0].resets, 2);
        assert_eq!(phase.stats.ok(), 0);
        let s = phase.stats.errors.summary();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].code.as_str(), s[0].count), ("DeadlineExceeded", 2));
    }
}
