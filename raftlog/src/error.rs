//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong in the raft log store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A segment holds bytes that do not decode.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        /// Segment file.
        file: PathBuf,
        /// Byte offset of the bad record (or header) in the file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A record's checksum does not match its bytes.
    #[error("checksum mismatch in {file} at offset {offset}: expected {expected:#010x}, actual {actual:#010x}")]
    ChecksumMismatch {
        /// Segment file.
        file: PathBuf,
        /// Byte offset of the record in the file.
        offset: u64,
        /// Checksum stored in the record header.
        expected: u32,
        /// Checksum computed over the record bytes.
        actual: u32,
    },
    /// An earlier write or fsync failed, so the durability of the log is unknown.
    /// Every write fails with this until the store is reopened.
    #[error("the log store is poisoned by an earlier I/O failure; reopen it")]
    Poisoned,
    /// The caller passed something the store cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The requested index is below the first index of the stream (logically truncated).
    #[error("stream {stream}: index {index} is compacted")]
    Compacted {
        /// Stream id.
        stream: u64,
        /// Requested index.
        index: u64,
    },
    /// The requested index is above the last index of the stream, or the stream does not exist.
    #[error("stream {stream}: index {index} is unavailable")]
    Unavailable {
        /// Stream id.
        stream: u64,
        /// Requested index.
        index: u64,
    },
    /// The store's writer thread has stopped (the store is being dropped).
    #[error("the log store is closed")]
    Closed,
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
