//! Key and value generation.
//!
//! Keys are `prefix` followed by the key index as zero-padded decimal,
//! `key_size` digits wide (`--key-size 8`, index 42 → `00000042`). etcd's
//! `benchmark` writes a varint into a zeroed buffer instead; decimal keeps the
//! same size and uniqueness guarantees while staying printable, so a run's
//! keys can be inspected and ranged over with `etcdctl`.

use rand::{Rng, RngCore};

/// Why a key configuration cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("--key-space-size must be at least 1")]
    EmptySpace,
    #[error("--key-size must be at least 1")]
    ZeroSize,
    #[error("--key-space-size {space} needs keys of at least {needed} digits, but --key-size is {size}")]
    SpaceTooLarge { space: u64, size: usize, needed: usize },
}

/// Maps operation numbers to keys, sequentially or uniformly at random over
/// the key space.
#[derive(Debug, Clone)]
pub struct KeyGen {
    prefix: Vec<u8>,
    width: usize,
    space: u64,
    sequential: bool,
}

impl KeyGen {
    pub fn new(prefix: &[u8], key_size: usize, space: u64, sequential: bool) -> Result<Self, KeyError> {
        if space == 0 {
            return Err(KeyError::EmptySpace);
        }
        if key_size == 0 {
            return Err(KeyError::ZeroSize);
        }
        // The largest index is space - 1; it must fit in `key_size` digits,
        // otherwise two indices would share a key.
        let needed = digits(space - 1);
        if needed > key_size {
            return Err(KeyError::SpaceTooLarge { space, size: key_size, needed });
        }
        Ok(KeyGen { prefix: prefix.to_vec(), width: key_size, space, sequential })
    }

    /// The number of distinct keys.
    pub fn space(&self) -> u64 {
        self.space
    }

    /// The length in bytes of every generated key.
    pub fn key_len(&self) -> usize {
        self.prefix.len() + self.width
    }

    /// The key index for operation `seq`: `seq` modulo the key space when
    /// sequential, else uniform over the key space.
    pub fn index(&self, seq: u64, rng: &mut impl Rng) -> u64 {
        if self.sequential {
            seq % self.space
        } else {
            rng.random_range(0..self.space)
        }
    }

    /// The key with index `index`.
    pub fn key(&self, index: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.key_len());
        key.extend_from_slice(&self.prefix);
        let digits = index.to_string();
        key.resize(key.len() + self.width.saturating_sub(digits.len()), b'0');
        key.extend_from_slice(digits.as_bytes());
        key
    }
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// A random value of `len` bytes. Workloads share one per run, as etcd's
/// `benchmark` does, so generating it costs nothing per op; `put
/// --random-values` makes one per put.
pub fn random_value(len: usize, rng: &mut impl RngCore) -> Vec<u8> {
    let mut v = vec![0; len];
    rng.fill_bytes(&mut v);
    v
}

/// The `range_end` that makes a request cover every key starting with
/// `prefix` (clientv3's `GetPrefixRangeEnd`): the prefix with its last byte
/// below 0xff incremented and the rest dropped, or `"\0"` (every key) if there
/// is no such byte, as for the empty prefix.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashSet;

    #[test]
    fn keys_are_fixed_width_and_prefixed() {
        let g = KeyGen::new(b"p/", 8, 1000, true).unwrap();
        assert_eq!(g.key(42), b"p/00000042");
        assert_eq!(g.key(0), b"p/00000000");
        assert_eq!(g.key(999), b"p/00000999");
        assert_eq!(g.key_len(), 10);
    }

    #[test]
    fn sequential_keys_cycle_through_the_space() {
        let g = KeyGen::new(b"", 3, 5, true).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let idx: Vec<u64> = (0..12).map(|s| g.index(s, &mut rng)).collect();
        assert_eq!(idx, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
    }

    #[test]
    fn random_keys_stay_in_the_space_and_follow_the_seed() {
        let g = KeyGen::new(b"", 4, 50, false).unwrap();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..2000).map(|s| g.index(s, &mut rng)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert!(a.iter().all(|&i| i < 50));
        // 2000 uniform draws over 50 keys hit every key (missing one has
        // probability 50 * (49/50)^2000, about 1e-16).
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 50);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
    }

    #[test]
    fn every_index_in_the_space_has_its_own_key() {
        let g = KeyGen::new(b"k", 2, 100, true).unwrap();
        let keys: HashSet<Vec<u8>> = (0..100).map(|i| g.key(i)).collect();
        assert_eq!(keys.len(), 100);
        assert!(keys.iter().all(|k| k.len() == 3));
    }

    #[test]
    fn refuses_spaces_that_do_not_fit_the_key_size() {
        assert_eq!(
            KeyGen::new(b"", 2, 101, true).unwrap_err(),
            KeyError::SpaceTooLarge { space: 101, size: 2, needed: 3 }
        );
        assert!(KeyGen::new(b"", 2, 100, true).is_ok());
        assert_eq!(KeyGen::new(b"", 2, 0, true).unwrap_err(), KeyError::EmptySpace);
        assert_eq!(KeyGen::new(b"", 0, 1, true).unwrap_err(), KeyError::ZeroSize);
        assert!(KeyGen::new(b"", 20, u64::MAX, false).is_ok());
    }

    #[test]
    fn prefix_range_end_matches_clientv3() {
        assert_eq!(prefix_range_end(b"foo"), b"fop");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_range_end(b""), b"\0");
    }

    #[test]
    fn random_value_has_the_requested_length() {
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(random_value(0, &mut rng).len(), 0);
        let v = random_value(64, &mut rng);
        assert_eq!(v.len(), 64);
        assert!(v.iter().any(|&b| b != 0));
    }
}
