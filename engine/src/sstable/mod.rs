//! Sorted string tables: immutable files of sorted internal keys.
//!
//! A table holds data blocks of prefix-compressed entries with restart points, a bloom
//! filter over user keys, the table's range tombstones, a properties block and an index
//! block, followed by a fixed footer. Every block carries a crc32 that is checked on every
//! read; damaged bytes surface as [`Error::Corruption`](crate::Error::Corruption) or
//! [`Error::ChecksumMismatch`](crate::Error::ChecksumMismatch) naming the file and offset,
//! never as wrong data or a panic. `engine/FORMAT.md` documents the layout byte for byte.
//!
//! [`TableBuilder`] writes a table, [`Table`] opens one for point lookups and [`TableIter`]
//! iterates it in both directions.

mod block;
mod bloom;
mod builder;
mod format;
mod iter;
mod table;
#[cfg(test)]
mod tests;

pub use bloom::hash64;
pub use builder::TableBuilder;
pub use iter::TableIter;
pub use table::{BytesFile, Table};

/// Block compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Blocks are stored as is.
    None,
    /// Data blocks are compressed with lz4 (kept uncompressed when that saves under 1/8).
    Lz4,
}

/// Options for building tables.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// Target size of an uncompressed data block. Default: 4096.
    pub block_size: usize,
    /// Entries between restart points in data blocks. Default: 16.
    pub restart_interval: usize,
    /// Bloom filter bits per user key; 0 disables the filter. Default: 10 (about 1% false
    /// positives).
    pub bloom_bits_per_key: u32,
    /// Data block compression. Default: [`Compression::None`].
    pub compression: Compression,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_size: 4096,
            restart_interval: 16,
            bloom_bits_per_key: 10,
            compression: Compression::None,
        }
    }
}

/// Summary of a table, stored in its properties block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableProperties {
    /// Smallest user key of any point entry or range tombstone start.
    pub smallest_user_key: Vec<u8>,
    /// Largest user key of any point entry or range tombstone end (tombstone ends are
    /// exclusive, so this bound is conservative).
    pub largest_user_key: Vec<u8>,
    /// Point entries (puts and point deletes; range tombstones are not counted).
    pub num_entries: u64,
    /// Point deletes.
    pub num_deletions: u64,
    /// Range tombstones.
    pub num_range_deletions: u64,
    /// Smallest sequence number of any point entry or range tombstone (0 if empty).
    pub min_seq: u64,
    /// Largest sequence number of any point entry or range tombstone (0 if empty).
    pub max_seq: u64,
    /// Total bytes of the internal keys of the point entries.
    pub raw_key_bytes: u64,
    /// Total bytes of the values of the point entries.
    pub raw_value_bytes: u64,
    /// Size of the file in bytes.
    pub file_size: u64,
}
