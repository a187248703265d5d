//! Configuration of a log store.

/// What recovery does with bytes that do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Every byte of every segment must decode; any bad record (even a torn one at the
    /// tail of the last segment) fails `open` with a typed error.
    AbsoluteConsistency,
    /// A bad record at the tail of the last segment (a write torn by a crash) is truncated
    /// away. A bad record that is followed by a valid one, or a bad record in any older
    /// segment, fails `open` with a typed error naming file and offset.
    TolerateCorruptedTail,
    /// Like `TolerateCorruptedTail`, but a bad record in an older segment only ends the
    /// scan of that segment (logged with `log::warn!`); what follows it is lost.
    TolerateAnyCorruption,
}

/// Configuration of a [`crate::LogStore`].
#[derive(Debug, Clone)]
pub struct Config {
    /// A segment is rotated once appending the next group of records would push it past
    /// this size (a single bigger batch still goes in one segment). Must be in
    /// `[4 KiB, 2 GiB]`. Default: 128 MiB.
    pub target_file_size: u64,
    /// How recovery treats bytes that do not decode. Default: `TolerateCorruptedTail`.
    pub recovery_mode: RecoveryMode,
    /// Total bytes of entry payloads kept in memory (latest entries of each stream) so
    /// that recent entries are read without touching the disk. 0 disables the cache.
    /// Default: 64 MiB.
    pub cache_capacity_bytes: usize,
    /// Preallocate each new segment to `target_file_size` by writing zeros (ahead of
    /// time, on a background thread, for real files), so that appends overwrite written
    /// blocks and `fdatasync` has no extent metadata to commit. Default: true.
    pub preallocate: bool,
    /// Do writes and syncs through io_uring. When false, or when `IoUring::new` fails,
    /// the writer uses `pwrite` + `fdatasync` (the fallback is logged once). Default: true.
    pub use_io_uring: bool,
    /// With io_uring in use, also issue the `fdatasync` through the ring (linked after the
    /// write). The kernel runs ring fsyncs on an io-wq worker thread; on hosts where that
    /// hand-off is slow (measured ~150-200 µs per sync on a 2-vCPU VM, and in the append
    /// benchmark 268K vs 721K entries/s with 16 writers) it costs more than it saves, so by
    /// default the sync is a plain `fdatasync` call from the committing thread. Default: false.
    pub io_uring_sync: bool,
    /// `purge()` rewrites a stream forward when the oldest segment it needs is more than
    /// this many segments behind the active one. Default: 4.
    pub purge_rewrite_lag_files: u64,
    /// Streams with more live entry bytes than this are not rewritten by `purge()`; they
    /// are reported as stalled so the caller can compact them. Default: 16 MiB.
    pub purge_rewrite_max_stream_bytes: u64,
    /// Up to this many segments that `purge()` frees are kept (renamed
    /// `{seq:016}.raftlog.free`) and reused as new segments instead of deleted, so that a
    /// busy log writes each byte once: a new segment must otherwise be zero-filled before
    /// appends into it are cheap to sync. Only segments of at least `target_file_size`
    /// bytes are kept. 0 deletes every purged segment. Default: 4 (with the default
    /// segment size, up to 512 MiB of disk kept in reserve).
    pub recycle_segments: usize,
    /// Append with unbuffered (`O_DIRECT`) writes of whole 4 KiB blocks: the partial
    /// last block is kept in memory and rewritten with the next write. A buffered append
    /// followed by `fdatasync` writes back every page-cache folio it dirtied, and on recent kernels
    /// folios are large (up to the size of the write that created them): measured ~1 MiB
    /// written to the device per 10 KB append. Unbuffered writes send the device only
    /// the blocks that changed and skip the page-cache copy. Where the file system refuses
    /// `O_DIRECT` (tmpfs) writes stay buffered (logged once). Default: true.
    pub direct_io: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            target_file_size: 128 << 20,
            recovery_mode: RecoveryMode::TolerateCorruptedTail,
            cache_capacity_bytes: 64 << 20,
            preallocate: true,
            use_io_uring: true,
            io_uring_sync: false,
            purge_rewrite_lag_files: 4,
            purge_rewrite_max_stream_bytes: 16 << 20,
            recycle_segments: 4,
            direct_io: true,
        }
    }
}

impl Config {
    /// Checks the ranges documented on each field.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        if !(4096..=(2u64 << 30)).contains(&self.target_file_size) {
            return Err(crate::Error::InvalidArgument(format!(
                "target_file_size {} not in [4 KiB, 2 GiB]",
                self.target_file_size
            )));
        }
        Ok(())
    }
}
