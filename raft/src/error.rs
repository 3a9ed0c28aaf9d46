//! The log store's errors, and their conversion to the `std::io::Error`
//! openraft's storage traits return.

use std::io;

use thiserror::Error;

/// Everything [`crate::RocksLogStore`] can report. Every variant is fatal to
/// the store except [`LogStoreError::InvalidAppend`] (a caller bug that wrote
/// nothing): after an engine or sync failure the store is poisoned and
/// refuses all further reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LogStoreError {
    /// A stored record failed its checksum, could not be decoded, or sits
    /// under a key that contradicts its contents (including a hole in the log).
    #[error("raft log corruption: {0}")]
    Corruption(String),
    /// RocksDB failed.
    #[error("raft log engine: {0}")]
    Engine(String),
    /// The store failed earlier (engine or sync error) and is unusable.
    #[error("raft log store is poisoned by an earlier failure: {0}")]
    Poisoned(String),
    /// `append` was asked to write something that would break the log's
    /// shape (non-consecutive indexes, a hole after the last entry).
    #[error("invalid raft log append: {0}")]
    InvalidAppend(String),
    /// The directory holds a log store written in a format this build does
    /// not know.
    #[error("unsupported raft log format version {found} (this build reads {supported})")]
    UnsupportedFormat { found: u32, supported: u32 },
    /// A value could not be serialized (not expected for Cairn's types).
    #[error("raft log encoding: {0}")]
    Encode(String),
}

impl LogStoreError {
    pub(crate) fn engine(e: rocksdb::Error) -> Self {
        LogStoreError::Engine(e.into_string())
    }
}

impl From<LogStoreError> for io::Error {
    fn from(e: LogStoreError) -> Self {
        let kind = match e {
            LogStoreError::Corruption(_) | LogStoreError::UnsupportedFormat { .. } => {
                io::ErrorKind::InvalidData
            }
            LogStoreError::InvalidAppend(_) => io::ErrorKind::InvalidInput,
            LogStoreError::Engine(_) | LogStoreError::Poisoned(_) | LogStoreError::Encode(_) => {
                io::ErrorKind::Other
            }
        };
        io::Error::new(kind, e)
    }
}
