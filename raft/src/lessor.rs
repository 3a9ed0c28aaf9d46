//! The leader's lease clock. Which leases exist, their TTLs and attached keys
//! are replicated state (in the store); *when* each expires is known only to
//! the leader, as in etcd. The leader revokes expired leases and renews
//! kept-alive ones here, and checkpoints remaining TTLs through Raft so that
//! a new leader continues from them instead of from the full TTL.
//!
//! # The bound after a leader change
//!
//! A new leader sets every lease to expire at `now + remaining + election`,
//! where `remaining` is the last checkpointed remaining TTL (or the granted
//! TTL before any checkpoint). Checkpoints are taken every
//! [`CHECKPOINT_INTERVAL`], so no lease expires earlier than it would have
//! under the old leader, and a lease nobody renews expires within
//! `TTL + election timeout` after the new leader takes over (at most
//! `remaining + election`, and `remaining ≤ TTL`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cairn_storage::{LeaseInfo, Store};

/// How often the leader records remaining TTLs through Raft.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Leases revoked per second at most (etcd's `leaseRevokeRate`), so a mass
/// expiry cannot flood the log.
pub const REVOKE_RATE: usize = 1000;
/// Leases per checkpoint proposal.
pub const CHECKPOINT_BATCH: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expires at this instant unless renewed.
    Live(Instant),
    /// A revoke was proposed at this instant; retried if the lease is still
    /// there a while later.
    Revoking(Instant),
}

/// The leader's expiry clocks, one per lease. Empty on followers.
#[derive(Debug, Default)]
pub struct Lessor {
    leases: HashMap<i64, State>,
    primary: bool,
    last_checkpoint: Option<Instant>,
    /// Remaining TTLs were taken by [`Lessor::checkpoint`] and are not
    /// committed yet ([`Lessor::checkpoint_done`]).
    checkpoint_in_flight: bool,
}

/// What a keep-alive found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    Renewed(Renewal),
    /// Past its deadline: being revoked, not renewed.
    Expiring,
}

/// A renewed lease: its TTL, and whether a checkpointed remaining TTL,
/// taken before this renewal, must be cleared before the renewal is
/// acknowledged. A new leader resumes every lease from its checkpoint, so
/// one left in place would expire the lease before the TTL just granted
/// runs out (etcd clears it in `Renew` for the same reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    pub ttl: i64,
    pub clear_checkpoint: bool,
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// This member became the leader: every lease restarts from its last
    /// checkpoint (or full TTL), extended by `extend` (the election timeout).
    pub fn promote(&mut self, leases: &[LeaseInfo], extend: Duration, now: Instant) {
        self.leases.clear();
        for l in leases {
            let remaining = if l.remaining_ttl > 0 { l.remaining_ttl } else { l.ttl };
            self.leases.insert(l.id, State::Live(now + secs(remaining) + extend));
        }
        self.primary = true;
        self.last_checkpoint = Some(now);
    }

    /// This member stopped leading: forget the clocks (the next leader has
    /// the checkpoints).
    pub fn demote(&mut self) {
        self.leases.clear();
        self.primary = false;
        self.last_checkpoint = None;
        self.checkpoint_in_flight = false;
    }

    /// Follows the store: newly granted leases start their clock, revoked
    /// ones are forgotten.
    pub fn sync(&mut self, leases: &[LeaseInfo], now: Instant) {
        let mut present = HashMap::with_capacity(leases.len());
        for l in leases {
            present.insert(l.id, l.ttl);
            self.leases.entry(l.id).or_insert(State::Live(now + secs(l.ttl)));
        }
        self.leases.retain(|id, _| present.contains_key(id));
    }

    /// Renews `id` to its full TTL; `None` if there is no such lease.
    ///
    /// A lease past its deadline is not renewed: its revoke is proposed or
    /// about to be, and would delete the keys of a lease just reported
    /// alive. The caller waits for the revoke instead, as etcd's `Renew`
    /// does.
    pub fn keep_alive(&mut self, store: &Store, id: i64, now: Instant) -> Option<KeepAlive> {
        let lease = store.lease(id)?;
        match self.leases.get(&id) {
            Some(State::Revoking(_)) => return Some(KeepAlive::Expiring),
            Some(State::Live(at)) if *at <= now => return Some(KeepAlive::Expiring),
            _ => {}
        }
        self.leases.insert(id, State::Live(now + secs(lease.ttl)));
        Some(KeepAlive::Renewed(Renewal {
            ttl: lease.ttl,
            clear_checkpoint: lease.remaining_ttl > 0 || self.checkpoint_in_flight,
        }))
    }

    /// (remaining, granted) TTL in seconds; `None` if there is no such lease.
    pub fn time_to_live(&self, store: &Store, id: i64, now: Instant) -> Option<(i64, i64)> {
        let lease = store.lease(id)?;
        let remaining = match self.leases.get(&id) {
            // Whole seconds, truncated, as etcd reports them.
            Some(State::Live(at)) => at.saturating_duration_since(now).as_secs() as i64,
            Some(State::Revoking(_)) => 0,
            None => lease.ttl,
        };
        // A new leader's extension may put the expiry beyond the granted TTL;
        // report at most the TTL, as a client expects.
        Some((remaining.min(lease.ttl), lease.ttl))
    }

    /// Expired leases to revoke now, at most `max`; they are marked as being
    /// revoked (and tried again after `retry` if still present).
    pub fn expired(&mut self, now: Instant, max: usize, retry: Duration) -> Vec<i64> {
        let mut out = Vec::new();
        for (id, state) in self.leases.iter_mut() {
            if out.len() >= max {
                break;
            }
            let due = match *state {
                State::Live(at) => at <= now,
                State::Revoking(since) => now.saturating_duration_since(since) >= retry,
            };
            if due {
                *state = State::Revoking(now);
                out.push(*id);
            }
        }
        out.sort_unstable();
        out
    }

    /// Remaining TTLs to checkpoint, if a checkpoint is due.
    pub fn checkpoint(&mut self, now: Instant) -> Option<Vec<(i64, i64)>> {
        let due = self.last_checkpoint.is_none_or(|t| now.saturating_duration_since(t) >= CHECKPOINT_INTERVAL);
        if !self.primary || !due {
            return None;
        }
        self.last_checkpoint = Some(now);
        self.checkpoint_in_flight = true;
        let mut out: Vec<(i64, i64)> = self
            .leases
            .iter()
            .filter_map(|(id, s)| match s {
                State::Live(at) => Some((*id, (at.saturating_duration_since(now).as_secs_f64().ceil() as i64).max(1))),
                State::Revoking(_) => None,
            })
            .collect();
        out.sort_unstable();
        Some(out)
    }

    /// The remaining TTLs taken by the last [`Lessor::checkpoint`] are
    /// committed (or given up on).
    pub fn checkpoint_done(&mut self) {
        self.checkpoint_in_flight = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: i64, ttl: i64, remaining_ttl: i64) -> LeaseInfo {
        LeaseInfo { id, ttl, remaining_ttl, keys: Vec::new() }
    }

    #[test]
    fn promotion_resumes_from_checkpoints_extended_by_the_election_timeout() {
        let now = Instant::now();
        let mut l = Lessor::default();
        l.promote(&[lease(1, 60, 0), lease(2, 60, 7)], Duration::from_secs(1), now);
        assert!(l.is_primary());
        assert_eq!(l.expired(now + Duration::from_secs(7), 10, Duration::from_secs(5)), Vec::<i64>::new());
        assert_eq!(l.expired(now + Duration::from_secs(8), 10, Duration::from_secs(5)), vec![2]);
        // 1 expires; 2's revoke, proposed 53 s ago, has not taken effect: again.
        assert_eq!(l.expired(now + Duration::from_secs(61), 10, Duration::from_secs(5)), vec![1, 2]);
        // A revoke that did not take effect is retried later, not at once.
        assert_eq!(l.expired(now + Duration::from_secs(62), 10, Duration::from_secs(5)), Vec::<i64>::new());
        assert_eq!(l.expired(now + Duration::from_secs(67), 10, Duration::from_secs(5)), vec![1, 2]);
        l.demote();
        assert!(!l.is_primary());
        assert_eq!(l.expired(now + Duration::from_secs(1000), 10, Duration::from_secs(5)), Vec::<i64>::new());
    }

    /// Grants lease `id` with `ttl` in a fresh in-memory store and, if
    /// `remaining` is set, checkpoints it.
    fn store_with_lease(id: i64, ttl: i64, remaining: Option<i64>) -> std::sync::Arc<Store> {
        use cairn_api::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest};
        use cairn_storage::{MemEngine, StoreConfig, WriteRequest};
        let store = Store::open(std::sync::Arc::new(MemEngine::new()), StoreConfig { sync_writes: false, ..Default::default() })
            .unwrap();
        store.apply(1, &WriteRequest::LeaseGrant(LeaseGrantRequest { id, ttl })).unwrap();
        if let Some(remaining_ttl) = remaining {
            let checkpoints = vec![LeaseCheckpoint { id, remaining_ttl }];
            store.apply(2, &WriteRequest::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints })).unwrap();
        }
        store
    }

    #[test]
    fn a_renewal_clears_a_checkpoint_taken_before_it() {
        let now = Instant::now();
        let mut l = Lessor::default();
        let fresh = store_with_lease(1, 30, None);
        l.promote(&fresh.leases(), Duration::ZERO, now);
        assert_eq!(l.keep_alive(&fresh, 1, now), Some(KeepAlive::Renewed(Renewal { ttl: 30, clear_checkpoint: false })));
        assert_eq!(l.keep_alive(&fresh, 2, now), None);
        // Remaining TTLs taken but not committed yet: they predate a renewal.
        assert!(l.checkpoint(now + CHECKPOINT_INTERVAL).is_some());
        assert_eq!(l.keep_alive(&fresh, 1, now), Some(KeepAlive::Renewed(Renewal { ttl: 30, clear_checkpoint: true })));
        l.checkpoint_done();
        assert_eq!(l.keep_alive(&fresh, 1, now), Some(KeepAlive::Renewed(Renewal { ttl: 30, clear_checkpoint: false })));
        // A committed checkpoint: cleared on the next renewal.
        let checkpointed = store_with_lease(1, 30, Some(12));
        assert_eq!(l.keep_alive(&checkpointed, 1, now), Some(KeepAlive::Renewed(Renewal { ttl: 30, clear_checkpoint: true })));
    }

    #[test]
    fn a_lease_past_its_deadline_is_not_renewed() {
        let now = Instant::now();
        let mut l = Lessor::default();
        let store = store_with_lease(1, 10, None);
        l.promote(&store.leases(), Duration::ZERO, now);
        let late = now + Duration::from_secs(10);
        // Due, though the tick has not proposed its revoke yet.
        assert_eq!(l.keep_alive(&store, 1, late), Some(KeepAlive::Expiring));
        assert_eq!(l.expired(late, 10, Duration::from_secs(5)), vec![1]);
        // Its revoke is in flight.
        assert_eq!(l.keep_alive(&store, 1, late), Some(KeepAlive::Expiring));
        assert_eq!(l.expired(late + Duration::from_secs(1), 10, Duration::from_secs(5)), Vec::<i64>::new());
    }

    #[test]
    fn sync_starts_new_clocks_and_forgets_revoked_leases() {
        let now = Instant::now();
        let mut l = Lessor::default();
        l.promote(&[lease(1, 10, 0)], Duration::ZERO, now);
        l.sync(&[lease(2, 5, 0)], now + Duration::from_secs(1));
        assert_eq!(l.expired(now + Duration::from_secs(20), 10, Duration::from_secs(5)), vec![2]);
    }

    #[test]
    fn expiry_is_rate_limited_and_checkpoints_are_periodic() {
        let now = Instant::now();
        let mut l = Lessor::default();
        let many: Vec<LeaseInfo> = (1..=2500).map(|i| lease(i, 1, 0)).collect();
        l.promote(&many, Duration::ZERO, now);
        let later = now + Duration::from_secs(2);
        assert_eq!(l.expired(later, 1000, Duration::from_secs(5)).len(), 1000);
        assert_eq!(l.expired(later, 1000, Duration::from_secs(5)).len(), 1000);
        assert_eq!(l.expired(later, 1000, Duration::from_secs(5)).len(), 500);
        assert!(l.checkpoint(now + Duration::from_secs(1)).is_none());
        let mut l = Lessor::default();
        l.promote(&[lease(1, 30, 0)], Duration::ZERO, now);
        let cp = l.checkpoint(now + CHECKPOINT_INTERVAL).unwrap();
        assert_eq!(cp, vec![(1, 25)]);
        assert!(l.checkpoint(now + CHECKPOINT_INTERVAL + Duration::from_secs(1)).is_none());
    }
}
