//! Pontoon's LSM storage engine.
//!
//! A log-structured merge tree with column families, built for a store whose write-ahead log
//! lives elsewhere (Pontoon's raft log). The engine therefore has **no WAL**: a write lands in
//! the memtable and is durable only once a flush has put it into an SSTable and recorded that
//! in the manifest. Flushes are *atomic across column families*: after a crash the engine
//! holds exactly the writes of some prefix of the write batches, and that prefix includes
//! everything reported by [`Engine::flushed_seq`] before the crash. Callers that need to know
//! what survived write their own marker (e.g. a raft applied index) in the same batch as the
//! data it describes.
//!
//! See `ARCHITECTURE.md` at the repository root for the data flow and `engine/FORMAT.md` for
//! the on-disk formats.

#![deny(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod batch;
mod compaction;
mod db;
pub mod error;
pub mod io;
mod iterator;
pub mod key;
pub mod manifest;
mod memtable;
pub mod options;
pub mod picker;
pub mod range_del;
mod skiplist;
pub mod sstable;
mod version;

pub use batch::WriteBatch;
pub use db::{Engine, Snapshot, Stats, MAX_ENTRY_LEN};
pub use error::{Error, Result};
pub use iterator::EngineIterator;
pub use options::{IterOptions, Options};

/// Column families that always exist.
pub const DEFAULT_CFS: [&str; 4] = ["default", "lock", "write", "raft"];
