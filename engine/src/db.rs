//! The engine: open/recover, the write path, reads, snapshots, column families, and the
//! background flush and compaction threads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::batch::{BatchOp, WriteBatch};
use crate::error::{Error, Result};
use crate::io::{FileSystem, RealFs};
use crate::iterator::{
    EngineIterator, LevelSource, MemSource, MergingIter, Source, Start, TableSource,
};
use crate::manifest::{self, ManifestWriter, VersionEdit};
use crate::memtable::{Lookup, MemTable};
use crate::options::{IterOptions, Options};
use crate::range_del::{Fragments, RangeTombstone};
use crate::version::{parse_table_name, Recovered, TableFile, Version};
use crate::DEFAULT_CFS;

/// One operation of a write, borrowed from the caller.
enum OpRef<'a> {
    Put(&'a [u8], &'a [u8]),
    PutInPlace(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    DeleteRange(&'a [u8], &'a [u8]),
}

/// A manifest larger than this is rewritten as a fresh snapshot.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The read state at one moment: memtables and the version, swapped atomically.
pub(crate) struct SuperVersion {
    pub(crate) mem: Arc<MemTable>,
    /// Immutable memtables, newest first.
    pub(crate) imms: Vec<Arc<MemTable>>,
    pub(crate) version: Arc<Version>,
}

impl SuperVersion {
    fn max_l0_files(&self) -> usize {
        self.version
            .cfs
            .values()
            .map(|t| t.levels.first().map_or(0, Vec::len))
            .max()
            .unwrap_or(0)
    }
}

struct State {
    manifest: ManifestWriter,
    next_file_number: u64,
    next_cf_id: u32,
    /// Files being compacted.
    busy: HashSet<u64>,
    manual_compaction: bool,
    running_compactions: usize,
}

#[derive(Default)]
struct Counters {
    flushes: AtomicU64,
    compactions: AtomicU64,
    trivial_moves: AtomicU64,
    write_stalls: AtomicU64,
    write_stall_micros: AtomicU64,
    write_slowdowns: AtomicU64,
    bytes_flushed: AtomicU64,
    bytes_compacted: AtomicU64,
}

/// A point-in-time view of the engine's counters and shape.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Flushes completed.
    pub flushes: u64,
    /// Compactions completed (trivial moves included).
    pub compactions: u64,
    /// Compactions that only moved a file down a level.
    pub trivial_moves: u64,
    /// Times a writer had to wait for flush or L0 compaction.
    pub write_stalls: u64,
    /// Total time writers spent stalled, in microseconds.
    pub write_stall_micros: u64,
    /// Writes delayed by 1 ms because L0 was filling up.
    pub write_slowdowns: u64,
    /// Bytes written by flushes.
    pub bytes_flushed: u64,
    /// Bytes written by compactions.
    pub bytes_compacted: u64,
    /// Files per level, summed over column families.
    pub level_files: Vec<usize>,
    /// Bytes per level, summed over column families.
    pub level_bytes: Vec<u64>,
    /// Immutable memtables waiting for flush.
    pub immutable_memtables: usize,
    /// Approximate bytes in the active memtable.
    pub memtable_bytes: usize,
    /// Sequence of the newest write.
    pub last_seq: u64,
    /// Every write with a sequence up to this is durable.
    pub flushed_seq: u64,
}

pub(crate) struct Inner {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    opts: Options,
    _lock: Box<dyn Send + Sync>,
    write_mu: Mutex<()>,
    last_seq: AtomicU64,
    flushed_seq: AtomicU64,
    sv: RwLock<Arc<SuperVersion>>,
    /// Full-size arena chunks of flushed memtables, for the next ones (one memtable's
    /// worth at most).
    chunk_pool: Arc<crate::skiplist::ChunkPool>,
    cf_ids: RwLock<HashMap<String, u32>>,
    state: Mutex<State>,
    /// Signalled whenever background work may be available or has finished.
    event_mu: Mutex<()>,
    event_cv: Condvar,
    snapshots: Mutex<BTreeMap<u64, usize>>,
    poison: Mutex<Option<String>>,
    poisoned: AtomicBool,
    shutdown: AtomicBool,
    counters: Counters,
}

/// The storage engine. Cheap to share behind an `Arc`; every method takes `&self`.
///
/// Dropping the engine stops its background threads after a best-effort flush; call
/// [`Engine::close`] to flush and see any error.
pub struct Engine {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// A consistent read-only view of the engine at the moment it was taken. While it lives,
/// compaction keeps every version it can read.
pub struct Snapshot {
    inner: Arc<Inner>,
    seq: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("seq", &self.seq).finish()
    }
}

impl Snapshot {
    /// The sequence number the snapshot reads at.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Reads `key` from column family `cf` as of the snapshot.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let id = self.inner.cf_id(cf)?;
        let sv = self.inner.sv.read().clone();
        // A snapshot never retries: slots were settled when it was taken.
        Ok(self
            .inner
            .get_at(&sv, id, key, self.seq, false)?
            .unwrap_or_default())
    }

    /// Iterates column family `cf` as of the snapshot.
    pub fn iter(&self, cf: &str, opts: IterOptions) -> Result<EngineIterator> {
        let id = self.inner.cf_id(cf)?;
        let sv = self.inner.sv.read().clone();
        self.inner.iter_at(sv, id, self.seq, opts)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut s = self.inner.snapshots.lock();
        if let Some(c) = s.get_mut(&self.seq) {
            *c -= 1;
            if *c == 0 {
                s.remove(&self.seq);
            }
        }
    }
}

/// Longest key or value the engine stores: memtable nodes and table blocks hold 32-bit
/// lengths.
pub const MAX_ENTRY_LEN: usize = u32::MAX as usize;

/// Rejects a key or value (or range bound) longer than [`MAX_ENTRY_LEN`].
fn check_len(a: &[u8], b: &[u8]) -> Result<()> {
    let longest = a.len().max(b.len());
    if longest > MAX_ENTRY_LEN {
        return Err(Error::InvalidArgument(format!(
            "a key or value of {longest} bytes is longer than the engine's limit of {MAX_ENTRY_LEN}"
        )));
    }
    Ok(())
}

impl Engine {
    /// Opens (creating if needed) the engine in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Engine> {
        Self::open_with_fs(dir, opts, Arc::new(RealFs))
    }

    /// Opens the engine in `dir` through `fs`.
    ///
    /// Recovery reads `CURRENT` and the manifest it names, opens every live SSTable, writes a
    /// fresh manifest holding the recovered state, and removes files no version references
    /// (leftovers of flushes and compactions cut short by a crash).
    pub fn open_with_fs(
        dir: impl AsRef<Path>,
        opts: Options,
        fs: Arc<dyn FileSystem>,
    ) -> Result<Engine> {
        if opts.num_levels < 2 {
            return Err(Error::InvalidArgument(
                "num_levels must be at least 2".into(),
            ));
        }
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir)?;
        let lock = fs.lock(&dir.join("LOCK"))?;
        let mut rec = Recovered {
            next_file_number: 1,
            ..Recovered::default()
        };
        let old_manifest = manifest::read_current(fs.as_ref(), &dir)?;
        if let Some(n) = old_manifest {
            let path = dir.join(manifest::manifest_name(n));
            let data = fs.read_all(&path)?;
            for edit in manifest::decode_manifest(&data, &path)? {
                rec.apply(&edit, opts.num_levels, &path)?;
            }
            rec.next_file_number = rec.next_file_number.max(n + 1);
        }
        // The default column families always exist.
        for name in DEFAULT_CFS {
            if !rec.cfs.values().any(|(n, _, _)| n == name) {
                let id = rec.next_cf_id;
                rec.next_cf_id += 1;
                rec.cfs.insert(
                    id,
                    (
                        name.to_string(),
                        vec![BTreeMap::new(); opts.num_levels],
                        vec![None; opts.num_levels],
                    ),
                );
            }
        }
        let version = rec.open(&fs, &dir, opts.num_levels)?;
        let manifest_number = rec.next_file_number;
        let next_file_number = manifest_number + 1;
        let mut snap = version.snapshot_edit();
        snap.next_file_number = Some(next_file_number);
        snap.flushed_seq = Some(rec.flushed_seq);
        snap.next_cf_id = Some(rec.next_cf_id);
        let manifest = ManifestWriter::create(fs.as_ref(), &dir, manifest_number, &snap)?;
        remove_orphans(fs.as_ref(), &dir, &version, manifest_number)?;

        let cf_ids = version
            .cfs
            .iter()
            .map(|(id, t)| (t.name.clone(), *id))
            .collect();
        let chunk_pool = crate::skiplist::ChunkPool::new(opts.write_buffer_size);
        let inner = Arc::new(Inner {
            dir,
            fs,
            _lock: lock,
            write_mu: Mutex::new(()),
            last_seq: AtomicU64::new(rec.flushed_seq),
            flushed_seq: AtomicU64::new(rec.flushed_seq),
            sv: RwLock::new(Arc::new(SuperVersion {
                mem: Arc::new(MemTable::with_pool(
                    opts.memtable_filter_bytes(),
                    opts.memtable_index_slots(),
                    Some(chunk_pool.clone()),
                )),
                imms: Vec::new(),
                version: Arc::new(version),
            })),
            chunk_pool,
            cf_ids: RwLock::new(cf_ids),
            state: Mutex::new(State {
                manifest,
                next_file_number,
                next_cf_id: rec.next_cf_id,
                busy: HashSet::new(),
                manual_compaction: false,
                running_compactions: 0,
            }),
            event_mu: Mutex::new(()),
            event_cv: Condvar::new(),
            snapshots: Mutex::new(BTreeMap::new()),
            poison: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            counters: Counters::default(),
            opts,
        });
        let mut threads = Vec::new();
        let flusher = inner.clone();
        threads.push(spawn("pontoon-flush", move || {
            flusher.background_loop(Inner::flush_one)
        })?);
        if inner.opts.auto_compaction {
            for i in 0..inner.opts.compaction_threads.max(1) {
                let c = inner.clone();
                threads.push(spawn(&format!("pontoon-compact-{i}"), move || {
                    c.background_loop(Inner::compact_once)
                })?);
            }
        }
        Ok(Engine {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// Applies `batch` atomically and returns the sequence number of its last operation (the
    /// engine's sequence after the write). The batch is visible to readers when this returns
    /// and durable once [`Engine::flushed_seq`] reaches that number. An empty batch returns
    /// the current sequence.
    ///
    /// Writers are slowed (1 ms per write) when L0 fills up and stopped while too many
    /// memtables wait for flush or L0 is full; each stall is counted in [`Stats`] and logged.
    ///
    /// Fails with [`Error::InvalidArgument`], writing nothing, if a key, value or range bound
    /// is longer than [`MAX_ENTRY_LEN`].
    pub fn write(&self, batch: &WriteBatch) -> Result<u64> {
        self.inner.write(batch)
    }

    /// Sets `key` to `value` in `cf` (a one-operation batch).
    pub fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<u64> {
        check_len(key, value)?;
        let id = self.inner.cf_id(cf)?;
        self.inner
            .write_ops(1, std::iter::once((id, OpRef::Put(key, value))))
    }

    /// Deletes `key` from `cf` (a one-operation batch).
    pub fn delete(&self, cf: &str, key: &[u8]) -> Result<u64> {
        check_len(key, b"")?;
        let id = self.inner.cf_id(cf)?;
        self.inner
            .write_ops(1, std::iter::once((id, OpRef::Delete(key))))
    }

    /// Reads the newest value of `key` in `cf`.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let id = self.inner.cf_id(cf)?;
        loop {
            let (sv, seq) = self.inner.read_view();
            match self.inner.get_at(&sv, id, key, seq, true)? {
                Some(found) => return Ok(found),
                // An in-place write of this key, newer than `seq`, is being published.
                None => std::thread::yield_now(),
            }
        }
    }

    /// Iterates `cf` at the current sequence within `opts`' bounds.
    pub fn iter(&self, cf: &str, opts: IterOptions) -> Result<EngineIterator> {
        let id = self.inner.cf_id(cf)?;
        let (sv, seq) = self.inner.read_view();
        if !sv.mem.has_slots_in(id) {
            return self.inner.iter_at(sv, id, seq, opts);
        }
        // Iterators read the skiplist only: settle the slots of `cf` first and take the view
        // before any other write can fill one again.
        let (sv, seq) = {
            let _w = self.inner.write_mu.lock();
            let view = self.inner.read_view();
            view.0.mem.settle();
            view
        };
        self.inner.iter_at(sv, id, seq, opts)
    }

    /// Approximate bytes of keys and values of column family `cf` in `[start, end)`
    /// (`end` empty: no upper bound), for split decisions and statistics: memtables
    /// count every version in the range, table files count whole (compressed) data blocks
    /// with their encoding overhead, found by two index searches per overlapping file. Reads no data block, so it costs
    /// far less than iterating the range; overwritten and deleted versions not yet
    /// compacted away are included.
    pub fn approximate_size(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<u64> {
        let id = self.inner.cf_id(cf)?;
        let sv = self.inner.sv.read().clone();
        let mut total = 0u64;
        for mem in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            total += mem.range_bytes(id, start, end);
        }
        let Some(tree) = sv.version.cfs.get(&id) else {
            return Ok(total);
        };
        for files in &tree.levels {
            for f in files {
                let (lo, hi) = (f.meta.smallest.as_slice(), f.meta.largest.as_slice());
                if hi < start || (!end.is_empty() && lo >= end) {
                    continue;
                }
                total += if start <= lo && (end.is_empty() || hi < end) {
                    f.meta.size
                } else {
                    f.table.approximate_range_bytes(start, end)
                };
            }
        }
        Ok(total)
    }

    /// Pins the current state for consistent reads.
    pub fn snapshot(&self) -> Snapshot {
        // In-place slots hold only their newest value: settle them (with writes held off) so
        // that what the snapshot sees stays in the skiplist whatever is written later.
        let _w = self.inner.write_mu.lock();
        self.inner.sv.read().mem.settle();
        let mut snaps = self.inner.snapshots.lock();
        let seq = self.inner.last_seq.load(Ordering::Acquire);
        *snaps.entry(seq).or_insert(0) += 1;
        Snapshot {
            inner: self.inner.clone(),
            seq,
        }
    }

    /// Sequence of the newest write.
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    /// Every write batch with a sequence `<=` this survives a crash: it is in SSTables
    /// recorded in the manifest.
    pub fn flushed_seq(&self) -> u64 {
        self.inner.flushed_seq.load(Ordering::Acquire)
    }

    /// Flushes everything written so far (all column families, in one manifest edit) and
    /// waits for it. Returns the flushed sequence.
    pub fn flush(&self) -> Result<u64> {
        let target = {
            let _w = self.inner.write_mu.lock();
            self.inner.check_writable()?;
            self.inner.switch_memtable();
            self.inner.last_seq.load(Ordering::Acquire)
        };
        self.inner.notify();
        loop {
            self.inner.check_writable()?;
            if self.inner.flushed_seq.load(Ordering::Acquire) >= target
                && self.inner.sv.read().imms.is_empty()
            {
                return Ok(self.flushed_seq());
            }
            self.inner.wait_event();
        }
    }

    /// Compacts every column family all the way down: after it, each holds its data in the
    /// last level only (minus what snapshots pin). Flushes first.
    pub fn compact_all(&self) -> Result<()> {
        self.flush()?;
        self.inner.compact_all()
    }

    /// Runs the automatic compactions that are due until none is (for tests and tools that
    /// run with `auto_compaction` off).
    pub fn compact_pending(&self) -> Result<()> {
        while self.inner.compact_once()? {}
        Ok(())
    }

    /// Creates column family `name`. Durable when this returns.
    pub fn create_cf(&self, name: &str) -> Result<()> {
        self.inner.create_cf(name)
    }

    /// Drops column family `name` and its data. The default column families cannot be
    /// dropped. Durable when this returns.
    pub fn drop_cf(&self, name: &str) -> Result<()> {
        self.inner.drop_cf(name)
    }

    /// Names of every column family, sorted.
    pub fn cf_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.cf_ids.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Counters and shape of the tree.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let sv = self.inner.sv.read().clone();
        let n = self.inner.opts.num_levels;
        let mut level_files = vec![0; n];
        let mut level_bytes = vec![0; n];
        for tree in sv.version.cfs.values() {
            for (l, files) in tree.levels.iter().enumerate() {
                level_files[l] += files.len();
                level_bytes[l] += files.iter().map(|f| f.meta.size).sum::<u64>();
            }
        }
        Stats {
            flushes: c.flushes.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            trivial_moves: c.trivial_moves.load(Ordering::Relaxed),
            write_stalls: c.write_stalls.load(Ordering::Relaxed),
            write_stall_micros: c.write_stall_micros.load(Ordering::Relaxed),
            write_slowdowns: c.write_slowdowns.load(Ordering::Relaxed),
            bytes_flushed: c.bytes_flushed.load(Ordering::Relaxed),
            bytes_compacted: c.bytes_compacted.load(Ordering::Relaxed),
            level_files,
            level_bytes,
            immutable_memtables: sv.imms.len(),
            memtable_bytes: sv.mem.approximate_bytes(),
            last_seq: self.last_seq(),
            flushed_seq: self.flushed_seq(),
        }
    }

    /// Flushes, stops the background threads and releases the directory.
    pub fn close(self) -> Result<()> {
        let r = if self.inner.poisoned.load(Ordering::Acquire) {
            Ok(())
        } else {
            self.flush().map(|_| ())
        };
        self.stop_threads();
        r
    }

    fn stop_threads(&self) {
        self.inner.shutdown.store(true, Ordering::Release);
        self.inner.notify();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.threads.lock().is_empty() {
            if !self.inner.poisoned.load(Ordering::Acquire) {
                if let Err(e) = self.flush() {
                    log::warn!("flush on drop failed: {e}");
                }
            }
            self.stop_threads();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::io(name, e))
}

/// Removes SSTables no version references, old manifests and temp files.
fn remove_orphans(fs: &dyn FileSystem, dir: &Path, version: &Version, manifest: u64) -> Result<()> {
    let live: HashSet<u64> = version.live_files().into_iter().collect();
    let mut removed = false;
    for name in fs.list(dir)? {
        let orphan = match (
            parse_table_name(&name),
            manifest::parse_manifest_name(&name),
        ) {
            (Some(n), _) => !live.contains(&n),
            (_, Some(n)) => n != manifest,
            _ => name == "CURRENT.tmp",
        };
        if orphan {
            log::info!("removing orphan file {name}");
            fs.remove(&dir.join(&name))?;
            removed = true;
        }
    }
    if removed {
        fs.sync_dir(dir)?;
    }
    Ok(())
}

mod background;

impl Inner {
    fn cf_id(&self, cf: &str) -> Result<u32> {
        self.cf_ids
            .read()
            .get(cf)
            .copied()
            .ok_or_else(|| Error::ColumnFamilyNotFound(cf.to_string()))
    }

    /// The current read state and the sequence to read at, taken together so that no flush or
    /// compaction can slip between them.
    fn read_view(&self) -> (Arc<SuperVersion>, u64) {
        let guard = self.sv.read();
        let seq = self.last_seq.load(Ordering::Acquire);
        (guard.clone(), seq)
    }

    fn check_writable(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            let why = self.poison.lock().clone().unwrap_or_default();
            return Err(Error::Poisoned(why));
        }
        if self.shutdown.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn poison(&self, e: &Error) {
        log::error!("engine poisoned: {e}");
        let mut p = self.poison.lock();
        if p.is_none() {
            *p = Some(e.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
        self.notify();
    }

    fn notify(&self) {
        let _g = self.event_mu.lock();
        self.event_cv.notify_all();
    }

    fn wait_event(&self) {
        let mut g = self.event_mu.lock();
        self.event_cv.wait_for(&mut g, Duration::from_millis(50));
    }

    // ---- writes ---------------------------------------------------------------------------

    fn write(&self, batch: &WriteBatch) -> Result<u64> {
        // Resolve column families before taking the write lock (one lookup per run of
        // operations on the same column family).
        let ids: Vec<u32> = {
            let map = self.cf_ids.read();
            let mut last: Option<(&str, u32)> = None;
            let mut ids = Vec::with_capacity(batch.ops.len());
            for op in &batch.ops {
                let cf: &str = match op {
                    BatchOp::Put { cf, key, value } | BatchOp::PutInPlace { cf, key, value } => {
                        check_len(key, value)?;
                        cf
                    }
                    BatchOp::Delete { cf, key } => {
                        check_len(key, b"")?;
                        cf
                    }
                    BatchOp::DeleteRange { cf, start, end } => {
                        check_len(start, end)?;
                        cf
                    }
                };
                let id = match last {
                    Some((name, id)) if name == cf => id,
                    _ => *map
                        .get(cf)
                        .ok_or_else(|| Error::ColumnFamilyNotFound(cf.to_string()))?,
                };
                last = Some((cf, id));
                ids.push(id);
            }
            ids
        };
        let ops = batch.ops.iter().zip(ids).map(|(op, cf)| {
            let op = match op {
                BatchOp::Put { key, value, .. } => OpRef::Put(key, value),
                BatchOp::PutInPlace { key, value, .. } => OpRef::PutInPlace(key, value),
                BatchOp::Delete { key, .. } => OpRef::Delete(key),
                BatchOp::DeleteRange { start, end, .. } => OpRef::DeleteRange(start, end),
            };
            (cf, op)
        });
        self.write_ops(batch.ops.len(), ops)
    }

    /// Applies `n` operations as one batch (see [`Engine::write`]).
    fn write_ops<'a>(&self, n: usize, ops: impl Iterator<Item = (u32, OpRef<'a>)>) -> Result<u64> {
        let mut guard = self.write_mu.lock();
        self.check_writable()?;
        if n == 0 {
            return Ok(self.last_seq.load(Ordering::Acquire));
        }
        self.maybe_stall(&mut guard)?;
        let full = self.sv.read().mem.approximate_bytes() >= self.opts.write_buffer_size;
        if full {
            self.switch_memtable();
            self.notify();
        }
        // Never hold two read guards at once: parking_lot's RwLock is fair, so a second
        // read behind a waiting writer deadlocks.
        let mem = self.sv.read().mem.clone();
        let base = self.last_seq.load(Ordering::Acquire) + 1;
        let mut count = 0u64;
        for (cf, op) in ops.take(n) {
            let seq = base + count;
            count += 1;
            match op {
                OpRef::Put(key, value) => mem.put(cf, key, seq, value),
                OpRef::PutInPlace(key, value) => mem.put_in_place(cf, key, seq, value),
                OpRef::Delete(key) => mem.delete(cf, key, seq),
                OpRef::DeleteRange(start, end) => {
                    if start < end {
                        mem.delete_range(cf, start, end, seq)
                    }
                }
            }
        }
        let last = base + count.max(1) - 1;
        mem.set_last_seq(last);
        // Publishing the sequence makes the whole batch visible at once.
        self.last_seq.store(last, Ordering::Release);
        drop(guard);
        Ok(last)
    }

    /// Called with the write lock held: waits while flush or L0 compaction is behind.
    fn maybe_stall(&self, guard: &mut parking_lot::MutexGuard<'_, ()>) -> Result<()> {
        let mut stalled_since: Option<Instant> = None;
        loop {
            let (imms, l0) = {
                let sv = self.sv.read();
                (sv.imms.len(), sv.max_l0_files())
            };
            let stop = imms >= self.opts.max_immutable_memtables || l0 >= self.opts.l0_stop_trigger;
            if !stop {
                if let Some(t) = stalled_since {
                    let us = t.elapsed().as_micros() as u64;
                    self.counters
                        .write_stall_micros
                        .fetch_add(us, Ordering::Relaxed);
                    log::info!("write stall over after {us} us");
                }
                if l0 >= self.opts.l0_slowdown_trigger {
                    self.counters
                        .write_slowdowns
                        .fetch_add(1, Ordering::Relaxed);
                    parking_lot::MutexGuard::unlocked(guard, || {
                        std::thread::sleep(Duration::from_millis(1))
                    });
                }
                return Ok(());
            }
            if stalled_since.is_none() {
                stalled_since = Some(Instant::now());
                self.counters.write_stalls.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "write stall: {imms} immutable memtables waiting for flush (limit {}), {l0} L0 files (stop at {})",
                    self.opts.max_immutable_memtables,
                    self.opts.l0_stop_trigger
                );
                self.notify();
            }
            parking_lot::MutexGuard::unlocked(guard, || self.wait_event());
            self.check_writable()?;
        }
    }

    /// Makes the active memtable immutable (if it holds anything). Caller holds `write_mu`.
    fn switch_memtable(&self) {
        let mut sv = self.sv.write();
        if sv.mem.is_empty() {
            return;
        }
        // An immutable memtable holds everything in its skiplist (flush reads only that).
        sv.mem.settle();
        let mut imms = Vec::with_capacity(sv.imms.len() + 1);
        imms.push(sv.mem.clone());
        imms.extend(sv.imms.iter().cloned());
        *sv = Arc::new(SuperVersion {
            mem: Arc::new(MemTable::with_pool(
                self.opts.memtable_filter_bytes(),
                self.opts.memtable_index_slots(),
                Some(self.chunk_pool.clone()),
            )),
            imms,
            version: sv.version.clone(),
        });
    }

    // ---- reads ----------------------------------------------------------------------------

    /// Reads `key` at `seq`; `latest` for a read of the newest state, which may be told to
    /// retry (`Ok(None)`, see [`MemTable::get`]).
    fn get_at(
        &self,
        sv: &SuperVersion,
        cf: u32,
        key: &[u8],
        seq: u64,
        latest: bool,
    ) -> Result<Option<Option<Vec<u8>>>> {
        let mut tomb = 0u64;
        let hash = crate::sstable::hash64(key);
        for mem in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            tomb = tomb.max(mem.max_covering_tombstone(cf, key, seq));
            match mem.get(cf, key, hash, seq, latest) {
                Lookup::Value(s, v) => return Ok(Some((s > tomb).then_some(v))),
                Lookup::Deleted => return Ok(Some(None)),
                Lookup::Absent => {}
                Lookup::Retry => return Ok(None),
            }
        }
        let Some(tree) = sv.version.cfs.get(&cf) else {
            return Ok(Some(None));
        };
        for (level, files) in tree.levels.iter().enumerate() {
            let candidates: &[Arc<TableFile>] = if level == 0 {
                files
            } else {
                // Files whose range may hold the key: at most two (adjacent files can share a
                // boundary key through a range tombstone's exclusive end).
                let from = files.partition_point(|f| f.meta.largest.as_slice() < key);
                let to = from
                    + files[from..]
                        .iter()
                        .take_while(|f| f.meta.smallest.as_slice() <= key)
                        .count();
                &files[from..to]
            };
            let mut found: Option<(u64, u8, Vec<u8>)> = None;
            for f in candidates {
                if !f.meta.overlaps(key, key) || f.meta.min_seq > seq {
                    continue;
                }
                for t in f.table.range_tombstones() {
                    if t.seq <= seq && t.covers(key) {
                        tomb = tomb.max(t.seq);
                    }
                }
                if let Some(hit) = f.table.get_hashed(key, hash, seq)? {
                    if found.as_ref().is_none_or(|(s, _, _)| hit.0 > *s) {
                        found = Some(hit);
                    }
                    if level == 0 {
                        break; // L0 is newest first
                    }
                }
            }
            if let Some((s, kind, v)) = found {
                let live = kind == crate::key::ValueKind::Put as u8 && s > tomb;
                return Ok(Some(live.then_some(v)));
            }
        }
        Ok(Some(None))
    }

    fn iter_at(
        &self,
        sv: Arc<SuperVersion>,
        cf: u32,
        seq: u64,
        opts: IterOptions,
    ) -> Result<EngineIterator> {
        let start = Start {
            reverse: opts.reverse,
            lower: opts.lower_bound,
            upper: opts.upper_bound,
        };
        let in_bounds = |lo: &[u8], hi: &[u8]| {
            start.lower.as_deref().is_none_or(|l| hi >= l)
                && start.upper.as_deref().is_none_or(|u| lo < u)
        };
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        let mut tombstones: Vec<RangeTombstone> = Vec::new();
        for mem in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            tombstones.extend(mem.range_tombstones(cf));
            sources.push(Box::new(MemSource::new(mem.clone(), cf, &start)));
        }
        if let Some(tree) = sv.version.cfs.get(&cf) {
            for (level, files) in tree.levels.iter().enumerate() {
                let files: Vec<Arc<TableFile>> = files
                    .iter()
                    .filter(|f| in_bounds(&f.meta.smallest, &f.meta.largest))
                    .cloned()
                    .collect();
                for f in &files {
                    tombstones.extend(f.table.range_tombstones().iter().cloned());
                }
                if files.is_empty() {
                    continue;
                }
                if level == 0 {
                    for f in &files {
                        sources.push(Box::new(TableSource::new(f, &start)?));
                    }
                } else {
                    sources.push(Box::new(LevelSource::new(files, &start)?));
                }
            }
        }
        let frags = Fragments::new(&tombstones, seq);
        Ok(EngineIterator::new(
            MergingIter::new(sources, start.reverse),
            seq,
            frags,
            start,
        ))
    }

    // ---- version changes -----------------------------------------------------------------

    /// Writes `edit` to the manifest and installs the resulting version. `imm` is the
    /// memtable a flush just wrote, removed from the read state in the same swap.
    fn log_and_apply(
        &self,
        state: &mut State,
        mut edit: VersionEdit,
        mut opened: HashMap<u64, Arc<TableFile>>,
        imm: Option<&Arc<MemTable>>,
    ) -> Result<Arc<Version>> {
        edit.next_file_number = Some(state.next_file_number);
        let current = self.sv.read().version.clone();
        let manifest_path = state.manifest.path().to_path_buf();
        let new_version =
            current.apply(&edit, &mut opened, self.opts.num_levels, &manifest_path)?;
        if let Err(e) = state.manifest.append(&edit) {
            self.poison(&e);
            return Err(e);
        }
        let new_version = Arc::new(new_version);
        {
            let mut sv = self.sv.write();
            let imms = sv
                .imms
                .iter()
                .filter(|m| imm.is_none_or(|i| !Arc::ptr_eq(m, i)))
                .cloned()
                .collect();
            *sv = Arc::new(SuperVersion {
                mem: sv.mem.clone(),
                imms,
                version: new_version.clone(),
            });
        }
        if state.manifest.size() > MAX_MANIFEST_BYTES {
            self.roll_manifest(state, &new_version)?;
        }
        Ok(new_version)
    }

    fn roll_manifest(&self, state: &mut State, version: &Version) -> Result<()> {
        let number = state.next_file_number;
        state.next_file_number += 1;
        let mut snap = version.snapshot_edit();
        snap.next_file_number = Some(state.next_file_number);
        snap.flushed_seq = Some(self.flushed_seq.load(Ordering::Acquire));
        snap.next_cf_id = Some(state.next_cf_id);
        let writer = match ManifestWriter::create(self.fs.as_ref(), &self.dir, number, &snap) {
            Ok(w) => w,
            Err(e) => {
                self.poison(&e);
                return Err(e);
            }
        };
        let old = std::mem::replace(&mut state.manifest, writer);
        if let Err(e) = self.fs.remove(old.path()) {
            log::warn!(
                "could not remove old manifest {}: {e}",
                old.path().display()
            );
        }
        Ok(())
    }

    fn create_cf(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("column family name is empty".into()));
        }
        let _w = self.write_mu.lock();
        self.check_writable()?;
        let mut state = self.state.lock();
        if self.cf_ids.read().contains_key(name) {
            return Err(Error::ColumnFamilyExists(name.to_string()));
        }
        let id = state.next_cf_id;
        state.next_cf_id += 1;
        let edit = VersionEdit {
            add_cfs: vec![(id, name.to_string())],
            next_cf_id: Some(state.next_cf_id),
            ..VersionEdit::default()
        };
        self.log_and_apply(&mut state, edit, HashMap::new(), None)?;
        self.cf_ids.write().insert(name.to_string(), id);
        Ok(())
    }

    fn drop_cf(&self, name: &str) -> Result<()> {
        if DEFAULT_CFS.contains(&name) {
            return Err(Error::InvalidArgument(format!(
                "column family {name:?} is built in and cannot be dropped"
            )));
        }
        let _w = self.write_mu.lock();
        self.check_writable()?;
        let mut state = self.state.lock();
        let id = self.cf_id(name)?;
        let files: Vec<Arc<TableFile>> = self
            .sv
            .read()
            .version
            .cfs
            .get(&id)
            .map(|t| t.levels.iter().flatten().cloned().collect())
            .unwrap_or_default();
        let edit = VersionEdit {
            drop_cfs: vec![id],
            ..VersionEdit::default()
        };
        self.log_and_apply(&mut state, edit, HashMap::new(), None)?;
        self.cf_ids.write().remove(name);
        for f in files {
            f.mark_obsolete();
        }
        Ok(())
    }
}
