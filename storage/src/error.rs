use thiserror::Error;

/// Everything the store can report. The first group are etcd's request errors
/// (the server maps each to etcd's exact gRPC code and message); the rest are
/// fatal to the member.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorageError {
    #[error("key is not provided")]
    EmptyKey,
    #[error("key not found")]
    KeyNotFound,
    #[error("value is provided")]
    ValueProvided,
    #[error("lease is provided")]
    LeaseProvided,
    #[error("too many operations in txn request")]
    TooManyOps,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("invalid sort option")]
    InvalidSortOption,
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,

    /// A stored record failed its checksum or could not be decoded.
    #[error("data corruption: {0}")]
    Corruption(String),
    /// The engine (RocksDB) failed; the store must not be used further.
    #[error("storage engine: {0}")]
    Engine(String),
    /// A broken internal invariant; the store must not be used further.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StorageError {
    /// Fatal errors leave the store unusable; request errors change nothing.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StorageError::Corruption(_) | StorageError::Engine(_) | StorageError::Internal(_))
    }
}

impl StorageError {
    /// A compact encoding, so a request error found while applying on the
    /// leader reaches the member that proposed the request unchanged.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, msg): (u8, &str) = match self {
            StorageError::EmptyKey => (1, ""),
            StorageError::KeyNotFound => (2, ""),
            StorageError::ValueProvided => (3, ""),
            StorageError::LeaseProvided => (4, ""),
            StorageError::TooManyOps => (5, ""),
            StorageError::DuplicateKey => (6, ""),
            StorageError::InvalidSortOption => (7, ""),
            StorageError::Compacted => (8, ""),
            StorageError::FutureRev => (9, ""),
            StorageError::LeaseNotFound => (10, ""),
            StorageError::Corruption(m) => (11, m),
            StorageError::Engine(m) => (12, m),
            StorageError::Internal(m) => (13, m),
            StorageError::LeaseExists => (14, ""),
        };
        let mut out = vec![tag];
        out.extend_from_slice(msg.as_bytes());
        out
    }

    /// The inverse of [`StorageError::encode`]; anything unknown decodes as
    /// an internal error (never as a request error that would mislead a client).
    pub fn decode(bytes: &[u8]) -> StorageError {
        let msg = || String::from_utf8_lossy(bytes.get(1..).unwrap_or_default()).into_owned();
        match bytes.first() {
            Some(1) => StorageError::EmptyKey,
            Some(2) => StorageError::KeyNotFound,
            Some(3) => StorageError::ValueProvided,
            Some(4) => StorageError::LeaseProvided,
            Some(5) => StorageError::TooManyOps,
            Some(6) => StorageError::DuplicateKey,
            Some(7) => StorageError::InvalidSortOption,
            Some(8) => StorageError::Compacted,
            Some(9) => StorageError::FutureRev,
            Some(10) => StorageError::LeaseNotFound,
            Some(11) => StorageError::Corruption(msg()),
            Some(12) => StorageError::Engine(msg()),
            Some(13) => StorageError::Internal(msg()),
            Some(14) => StorageError::LeaseExists,
            _ => StorageError::Internal(format!("undecodable storage error {bytes:02x?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StorageError;

    #[test]
    fn encode_decode_roundtrip() {
        let all = [
            StorageError::EmptyKey,
            StorageError::KeyNotFound,
            StorageError::ValueProvided,
            StorageError::LeaseProvided,
            StorageError::TooManyOps,
            StorageError::DuplicateKey,
            StorageError::InvalidSortOption,
            StorageError::Compacted,
            StorageError::FutureRev,
            StorageError::LeaseNotFound,
            StorageError::LeaseExists,
            StorageError::Corruption("c".into()),
            StorageError::Engine("e".into()),
            StorageError::Internal("i".into()),
        ];
        for e in all {
            assert_eq!(StorageError::decode(&e.encode()), e);
        }
        assert!(matches!(StorageError::decode(&[99]), StorageError::Internal(_)));
        assert!(matches!(StorageError::decode(&[]), StorageError::Internal(_)));
    }
}
