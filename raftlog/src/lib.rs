//! Pontoon's raft log store: the only write-ahead log of a Pontoon node.
//!
//! One set of segment files holds the raft entries, hard/conf states and small state
//! records of thousands of streams (region peers). Writes are [`LogBatch`]es applied
//! atomically; concurrent writers are merged into one write and one `fdatasync` (group
//! commit) through an io_uring ring (or `pwrite` + `fdatasync` where io_uring is
//! unavailable), by a writer thread or by a lone blocking writer on its own thread. Reads
//! come from an in-memory index (about 12 bytes per live entry plus 16 bytes per term
//! change) and a bounded cache of recent entries. `purge()` deletes segments no stream
//! needs, rewriting small idle streams forward. Recovery rebuilds the index by scanning the
//! segments; see `FORMAT.md` for the bytes.
#![deny(missing_docs, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod aligned;
mod config;
mod error;
pub mod fault;
pub mod format;
pub mod fs;
pub mod ids;
mod log_batch;
mod memtable;
mod purge;
mod recovery;
mod store;
mod uring;
mod writer;

pub use config::{Config, RecoveryMode};
pub use error::{Error, Result};
pub use log_batch::{Entry, LogBatch};
pub use purge::PurgeReport;
pub use store::{LogStore, Stats};
