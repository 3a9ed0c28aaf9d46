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
