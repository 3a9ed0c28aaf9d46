//! The deterministic half of etcd's leases: which leases exist (granted
//! through the log), their granted and last checkpointed TTL, and which keys
//! are attached to each. Expiry (the clock) lives outside the store; it
//! proposes `LeaseRevoke` / `LeaseCheckpoint` requests like any other write.
//!
//! On disk: `Meta` key `lease/<id, i64 big-endian>` → sealed
//! `ttl ‖ remaining_ttl` (two i64 big-endian). Attachments are not stored:
//! a key is attached to the lease its latest `KeyValue` names, so they are
//! rebuilt from the `Kv` records at open and after a restore.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::engine::{Engine, Keyspace, Scan};
use crate::error::StorageError;
use crate::record::unseal;

const PREFIX: &[u8] = b"lease/";
/// The first key after every `lease/` key (`'/' + 1`).
const PREFIX_END: &[u8] = b"lease0";

pub(crate) fn key(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + 8);
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// A lease as [`crate::Store::lease`] reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    /// The TTL granted, in seconds.
    pub ttl: i64,
    /// The remaining TTL recorded by the last checkpoint; 0 = none.
    pub remaining_ttl: i64,
    /// The attached keys, sorted (empty in [`crate::Store::leases`]).
    pub keys: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Lease {
    ttl: i64,
    remaining_ttl: i64,
    keys: BTreeSet<Vec<u8>>,
}

/// A change to the leases, computed while executing a request and applied
/// to [`Leases`] only once the request's batch is durable (together with
/// publishing the revision), so readers never see an unpublished change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LeaseChange {
    Grant { id: i64, ttl: i64 },
    Revoke(i64),
    Checkpoint { id: i64, remaining_ttl: i64 },
    /// `key`'s latest version names `lease` (0 = none): it leaves the lease
    /// it was attached to, if any, and joins `lease`.
    Attach { key: Vec<u8>, lease: i64 },
}

/// Every lease and the keys attached to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Leases {
    by_id: BTreeMap<i64, Lease>,
    /// Attached keys (lease != 0 only) → their lease.
    by_key: HashMap<Vec<u8>, i64>,
}

impl Leases {
    /// Reads the lease records (without attachments; see [`Leases::attach_loaded`]).
    pub fn load(engine: &dyn Engine) -> Result<Self, StorageError> {
        let mut leases = Leases::default();
        engine.scan(Keyspace::Meta, PREFIX, Some(PREFIX_END), &mut |k, v| {
            let id = k[PREFIX.len()..]
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| StorageError::Corruption(format!("malformed lease key {k:02x?}")))?;
            let payload = unseal(k, v)?;
            if payload.len() != 16 {
                return Err(StorageError::Corruption(format!("lease record {id} has {} bytes, want 16", payload.len())));
            }
            let ttl = i64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
            let remaining_ttl = i64::from_be_bytes(payload[8..].try_into().expect("8 bytes"));
            leases.by_id.insert(id, Lease { ttl, remaining_ttl, keys: BTreeSet::new() });
            Ok(Scan::Continue)
        })?;
        Ok(leases)
    }

    /// Attaches the live keys found at load (key → the lease of its latest
    /// version). A key naming a lease without a record is corruption: a lease
    /// is revoked together with its keys.
    pub fn attach_loaded(&mut self, attached: HashMap<Vec<u8>, i64>) -> Result<(), StorageError> {
        for (key, id) in &attached {
            let lease = self.by_id.get_mut(id).ok_or_else(|| {
                StorageError::Corruption(format!("key {key:02x?} is attached to lease {id}, which does not exist"))
            })?;
            lease.keys.insert(key.clone());
        }
        self.by_key = attached;
        Ok(())
    }

    pub fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The attached keys of lease `id`, in key order.
    pub fn keys(&self, id: i64) -> Option<impl Iterator<Item = &Vec<u8>>> {
        self.by_id.get(&id).map(|l| l.keys.iter())
    }

    pub fn ttl(&self, id: i64) -> Option<i64> {
        self.by_id.get(&id).map(|l| l.ttl)
    }

    pub fn info(&self, id: i64) -> Option<LeaseInfo> {
        self.by_id.get(&id).map(|l| LeaseInfo {
            id,
            ttl: l.ttl,
            remaining_ttl: l.remaining_ttl,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    pub fn infos(&self) -> Vec<LeaseInfo> {
        self.by_id
            .iter()
            .map(|(&id, l)| LeaseInfo { id, ttl: l.ttl, remaining_ttl: l.remaining_ttl, keys: Vec::new() })
            .collect()
    }

    /// Applies changes the executing request validated.
    pub fn apply(&mut self, changes: Vec<LeaseChange>) {
        for c in changes {
            match c {
                LeaseChange::Grant { id, ttl } => {
                    let old = self.by_id.insert(id, Lease { ttl, remaining_ttl: 0, keys: BTreeSet::new() });
                    debug_assert!(old.is_none(), "lease {id} granted twice");
                }
                LeaseChange::Revoke(id) => {
                    // Its keys were deleted by the same request (detached
                    // before this change), so nothing refers to it any more.
                    let old = self.by_id.remove(&id);
                    debug_assert!(old.is_some_and(|l| l.keys.is_empty()), "lease {id} revoked with keys");
                }
                LeaseChange::Checkpoint { id, remaining_ttl } => {
                    if let Some(l) = self.by_id.get_mut(&id) {
                        l.remaining_ttl = remaining_ttl;
                    }
                }
                LeaseChange::Attach { key, lease } => {
                    if let Some(old) = self.by_key.remove(&key) {
                        if let Some(l) = self.by_id.get_mut(&old) {
                            l.keys.remove(&key);
                        }
                    }
                    if lease != 0 {
                        match self.by_id.get_mut(&lease) {
                            Some(l) => {
                                l.keys.insert(key.clone());
                                self.by_key.insert(key, lease);
                            }
                            None => debug_assert!(false, "key attached to missing lease {lease}"),
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_moves_keys_between_leases() {
        let mut l = Leases::default();
        l.apply(vec![
            LeaseChange::Grant { id: 1, ttl: 10 },
            LeaseChange::Grant { id: 2, ttl: 20 },
            LeaseChange::Attach { key: b"b".to_vec(), lease: 1 },
            LeaseChange::Attach { key: b"a".to_vec(), lease: 1 },
            LeaseChange::Attach { key: b"c".to_vec(), lease: 2 },
            LeaseChange::Attach { key: b"c".to_vec(), lease: 1 },
            LeaseChange::Attach { key: b"b".to_vec(), lease: 0 },
            LeaseChange::Checkpoint { id: 2, remaining_ttl: 7 },
            LeaseChange::Checkpoint { id: 9, remaining_ttl: 7 },
        ]);
        assert_eq!(l.info(1).unwrap().keys, vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(l.info(2).unwrap(), LeaseInfo { id: 2, ttl: 20, remaining_ttl: 7, keys: vec![] });
        assert_eq!(l.info(9), None);
        assert_eq!(l.infos().iter().map(|i| i.id).collect::<Vec<_>>(), vec![1, 2]);
        assert!(!l.by_key.contains_key(&b"b"[..]));
    }

    #[test]
    fn keys_are_big_endian_ids_under_the_prefix() {
        assert_eq!(key(1), [&PREFIX[..], &[0, 0, 0, 0, 0, 0, 0, 1]].concat());
        assert!(key(i64::MAX).as_slice() < PREFIX_END && key(-1).as_slice() < PREFIX_END);
    }
}
