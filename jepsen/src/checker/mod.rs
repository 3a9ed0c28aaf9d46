//! Checkers for recorded histories.
//!
//! [`wgl`] is a generic linearizability search (Wing & Gong with Lowe's
//! memoization, as in porcupine and Knossos' `wgl`) over any sequential
//! [`wgl::Model`]; [`register`] applies it to read/write/cas registers,
//! one key at a time.
//!
//! Searches are exponential in the worst case, so every check runs under a
//! [`Budget`]. Running out of it yields "unknown", never a guess.
//!
//! [`kv`] needs no search: it checks etcd KV histories against the total
//! order of revisions the server reports, in O(n log n).
//!
//! [`watch`] compares what watchers streamed with each other and with the
//! kv history (ordered, unique, atomic, reliable, resumable, `prev_kv`).
//!
//! [`append`] is an Elle-style checker of list-append transactions: version
//! orders from reads, a dependency graph, and cycles in it, in linear time
//! plus a bounded cycle search.
//!
//! [`lease`] checks etcd's lease guarantees (one-revision deletion, no use
//! after revoke or expiry, no early expiry, reads, and expiry liveness) on
//! a lease history and the log of a watcher that observed the prefix.

pub mod append;
pub mod kv;
pub mod lease;
pub mod register;
pub mod watch;
pub mod wgl;

use std::fmt;
use std::time::{Duration, Instant};

/// Limits for one check (one history, all of its partitions together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Wall-clock limit for the whole check; `None` for none.
    pub timeout: Option<Duration>,
    /// Limit on search steps (one step = one entry of the history examined);
    /// `None` for none. Unlike the timeout, this makes a check's outcome
    /// independent of machine speed.
    pub max_steps: Option<u64>,
    /// Limit on the memoization cache of one partition, in bytes; `None` for
    /// none. Each step may add one configuration to the cache, and a hard
    /// history can fill memory long before the timeout.
    pub max_memory_bytes: Option<usize>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(60)),
            max_steps: None,
            max_memory_bytes: Some(2 << 30),
        }
    }
}

/// Which limit of the [`Budget`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    Timeout(Duration),
    Steps(u64),
    Memory(usize),
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exhausted::Timeout(limit) => write!(f, "timed out after {limit:?}"),
            Exhausted::Steps(limit) => write!(f, "step budget of {limit} exhausted"),
            Exhausted::Memory(limit) => write!(
                f,
                "memoization cache reached its limit of {} MiB",
                limit >> 20
            ),
        }
    }
}

/// Tracks a check's use of its [`Budget`] across partitions.
#[derive(Debug)]
pub struct Meter {
    budget: Budget,
    started: Instant,
    deadline: Option<Instant>,
    steps: u64,
    configurations: u64,
}

impl Meter {
    /// Starts the clock for a check.
    pub fn start(budget: Budget) -> Self {
        let started = Instant::now();
        Self {
            budget,
            started,
            deadline: budget.timeout.map(|t| started + t),
            steps: 0,
            configurations: 0,
        }
    }

    /// Search steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Configurations memoized so far, over all partitions.
    pub fn configurations(&self) -> u64 {
        self.configurations
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Accounts for `steps` more steps and `configurations` more cached
    /// configurations, with the current partition's cache at
    /// `cache_bytes`, and says whether the check may go on.
    fn charge(
        &mut self,
        steps: u64,
        configurations: u64,
        cache_bytes: usize,
    ) -> Result<(), Exhausted> {
        self.steps += steps;
        self.configurations += configurations;
        if let Some(limit) = self.budget.max_steps {
            if self.steps > limit {
                return Err(Exhausted::Steps(limit));
            }
        }
        if let Some(limit) = self.budget.max_memory_bytes {
            if cache_bytes > limit {
                return Err(Exhausted::Memory(limit));
            }
        }
        if let (Some(deadline), Some(limit)) = (self.deadline, self.budget.timeout) {
            if Instant::now() >= deadline {
                return Err(Exhausted::Timeout(limit));
            }
        }
        Ok(())
    }
}
