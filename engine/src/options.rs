//! Engine and iterator options.

use crate::sstable::{Compression, TableOptions};

/// Engine options. Every field says its default.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size of the active memtable (all column families share it) that triggers a switch to
    /// an immutable memtable and a background flush. Default: 64 MiB. Once a memtable has
    /// been flushed the engine keeps up to this much of its arena memory for the next ones
    /// (already-mapped pages: no page fault per 4 KiB inside puts), so a store that has
    /// switched memtables holds about one more memtable's worth than the live ones.
    pub write_buffer_size: usize,
    /// The memtable's key filter (a bloom filter that lets a point read skip a memtable that
    /// never saw the key) takes `write_buffer_size / memtable_filter_ratio` bytes; 0 disables
    /// it. Default: 32 (2 MiB for a 64 MiB memtable).
    pub memtable_filter_ratio: usize,
    /// The memtable's index (a table of pointers, by key hash, to the newest entry of the
    /// keys written lately: a read of such a key's newest version skips the skiplist search)
    /// takes `write_buffer_size / memtable_index_ratio` bytes; 0 disables it. Every put
    /// reads its key's previous version (etcd's `version` and `create_revision`), and a key
    /// written before is usually still there. Default: 32 (2 MiB, 262,144 slots, for a
    /// 64 MiB memtable).
    pub memtable_index_ratio: usize,
    /// Immutable memtables allowed to wait for flush before writers stall. Default: 2.
    pub max_immutable_memtables: usize,
    /// Number of L0 files that triggers an L0 -> L1 compaction. Default: 4.
    pub l0_compaction_trigger: usize,
    /// Number of L0 files at which each write is delayed by 1 ms. Default: 20.
    pub l0_slowdown_trigger: usize,
    /// Number of L0 files at which writes stop until compaction catches up. Default: 36.
    pub l0_stop_trigger: usize,
    /// Target size of L1; each deeper level is `level_multiplier` times larger.
    /// Default: 256 MiB.
    pub max_bytes_for_level_base: u64,
    /// Growth factor between levels. Default: 10.
    pub level_multiplier: u64,
    /// Number of levels (L0 included). Default: 7.
    pub num_levels: usize,
    /// Size at which compaction output is cut into a new file. Default: 64 MiB.
    pub target_file_size: u64,
    /// Background compaction threads. Default: 1.
    pub compaction_threads: usize,
    /// Data block size before compression. Default: 4096.
    pub block_size: usize,
    /// Bloom filter bits per key (0 disables filters). Default: 10.
    pub bloom_bits_per_key: u32,
    /// Block compression. Default: none.
    pub compression: Compression,
    /// Run compactions automatically in the background. Tests turn it off to drive compaction
    /// by hand. Default: true.
    pub auto_compaction: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            write_buffer_size: 64 << 20,
            memtable_filter_ratio: 32,
            memtable_index_ratio: 32,
            max_immutable_memtables: 2,
            l0_compaction_trigger: 4,
            l0_slowdown_trigger: 20,
            l0_stop_trigger: 36,
            max_bytes_for_level_base: 256 << 20,
            level_multiplier: 10,
            num_levels: 7,
            target_file_size: 64 << 20,
            compaction_threads: 1,
            block_size: 4096,
            bloom_bits_per_key: 10,
            compression: Compression::None,
            auto_compaction: true,
        }
    }
}

impl Options {
    /// Bytes of each memtable's key filter (0: none).
    pub(crate) fn memtable_filter_bytes(&self) -> usize {
        match self.memtable_filter_ratio {
            0 => 0,
            r => self.write_buffer_size / r,
        }
    }

    /// Slots of each memtable's index (0: none).
    pub(crate) fn memtable_index_slots(&self) -> usize {
        match self.memtable_index_ratio {
            0 => 0,
            r => self.write_buffer_size / r / std::mem::size_of::<usize>(),
        }
    }

    pub(crate) fn table_options(&self) -> TableOptions {
        TableOptions {
            block_size: self.block_size,
            bloom_bits_per_key: self.bloom_bits_per_key,
            compression: self.compression,
            ..TableOptions::default()
        }
    }
}

/// Options of one iterator.
#[derive(Debug, Clone, Default)]
pub struct IterOptions {
    /// First key to return (inclusive). Default: the start of the column family.
    pub lower_bound: Option<Vec<u8>>,
    /// Key at which iteration stops (exclusive). Default: the end of the column family.
    pub upper_bound: Option<Vec<u8>>,
    /// Iterate from the largest key down. Default: false.
    pub reverse: bool,
}

impl IterOptions {
    /// Iterates `[lower, upper)` forward.
    pub fn range(lower: impl Into<Vec<u8>>, upper: impl Into<Vec<u8>>) -> Self {
        IterOptions {
            lower_bound: Some(lower.into()),
            upper_bound: Some(upper.into()),
            reverse: false,
        }
    }

    /// The same range, iterated in reverse.
    pub fn reversed(mut self) -> Self {
        self.reverse = true;
        self
    }
}
