//! The engine's one error type.

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong inside the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation touched.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// On-disk bytes do not decode: the file is damaged or not ours.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged structure inside the file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A block's crc32 did not match its contents.
    #[error("checksum mismatch in {file} at offset {offset}: expected {expected:#010x}, got {actual:#010x}")]
    ChecksumMismatch {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the block.
        offset: u64,
        /// Checksum stored on disk.
        expected: u32,
        /// Checksum of the bytes read.
        actual: u32,
    },
    /// An earlier write or fsync failed, so the durable state is unknown. The engine refuses
    /// every write until it is reopened (which recovers from what is really on disk).
    #[error("engine is poisoned by an earlier I/O failure ({0}); reopen it")]
    Poisoned(String),
    /// The named column family does not exist.
    #[error("column family {0:?} does not exist")]
    ColumnFamilyNotFound(String),
    /// A column family of that name already exists.
    #[error("column family {0:?} already exists")]
    ColumnFamilyExists(String),
    /// The caller asked for something the engine cannot do.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The engine is shutting down.
    #[error("engine is closed")]
    Closed,
}

impl Error {
    /// Builds an [`Error::Io`] from a path and an OS error.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Corruption`].
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}
