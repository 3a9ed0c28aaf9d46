/// An MVCC revision: `main` is the store revision a write created, `sub`
/// orders the changes inside one revision (one txn writes many keys at one
/// `main`). Ordered by (main, sub), like etcd's `revision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

pub const REVISION_KEY_LEN: usize = 16;

impl Revision {
    pub fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// Big-endian so that byte order equals revision order in the engine.
    pub fn to_key(self) -> [u8; REVISION_KEY_LEN] {
        let mut k = [0u8; REVISION_KEY_LEN];
        k[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        k[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        k
    }

    pub fn from_key(k: &[u8]) -> Option<Self> {
        if k.len() != REVISION_KEY_LEN {
            return None;
        }
        let main = u64::from_be_bytes(k[..8].try_into().ok()?) as i64;
        let sub = u64::from_be_bytes(k[8..].try_into().ok()?) as i64;
        Some(Self { main, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_revision_order() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(255, 7),
            Revision::new(256, 0),
            Revision::new(1 << 40, 3),
        ];
        for w in revs.windows(2) {
            assert!(w[0].to_key() < w[1].to_key(), "{:?} vs {:?}", w[0], w[1]);
        }
        for r in revs {
            assert_eq!(Revision::from_key(&r.to_key()), Some(r));
        }
        assert_eq!(Revision::from_key(b"short"), None);
    }
}
