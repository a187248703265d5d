//! Group commit: a committer takes every queued batch, writes them as one contiguous
//! buffer (one io_uring submission, or `pwrite`), issues one `fdatasync` for the group,
//! applies the batches to the index in log order and wakes their writers.
//!
//! One committer at a time (`Queue::committing`; it also holds the [`Writer`]'s mutex):
//! the writer thread, or a caller blocked in [`crate::LogStore::write`]. A blocking writer
//! that finds no commit in progress commits its batch on its own thread, together with
//! whatever was queued before it, instead of handing it to the writer thread and being
//! woken again: two thread switches fewer per synced write. That is the single store's
//! raft log (one store loop writing and waiting): at C=64 the hand-off cost ~60 µs of a
//! ~280 µs round, and one writer in the raft-log append benchmark runs ~1.5x faster. When
//! blocking writers run concurrently (more than one was in the last group), they leave the
//! commits to the writer thread, which takes the next group the moment it finishes one;
//! writers committing for themselves would take turns in small groups. Batches of
//! [`crate::LogStore::write_async`] are the writer thread's unless a blocking writer's
//! group takes them along; a purge runs only on the writer thread (a blocking writer's
//! commit stops before a queued purge). Tasks leave the queue only in the committer's
//! hands, so batches are committed in the order they were queued.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::aligned::AlignedBuf;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::{
    bind_record, segment_header, Op, END_MARKER, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::fs::{free_path, preparing_path, segment_path, FileSystem, LogFile, DIRECT_BLOCK};
use crate::memtable::{Cache, MemTable};
use crate::purge::PurgeReport;
use crate::uring::Uring;

/// State shared by the store handle, readers and the writer thread.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub fs: Arc<dyn FileSystem>,
    pub cfg: Config,
    pub mem: RwLock<MemTable>,
    pub files: RwLock<BTreeMap<u32, Arc<dyn LogFile>>>,
    pub poisoned: AtomicBool,
    pub queue: Mutex<Queue>,
    pub queue_cv: Condvar,
    pub syncs: AtomicU64,
    pub group_writes: AtomicU64,
    pub batches: AtomicU64,
    pub io_uring: AtomicBool,
    /// Whether the active segment takes unbuffered writes.
    pub direct_io: AtomicBool,
    /// Nanoseconds spent in group writes + syncs.
    pub io_nanos: AtomicU64,
}

/// Who learns that a write finished.
pub(crate) enum Done {
    /// A caller blocked in `LogStore::write`.
    Wait(mpsc::SyncSender<Result<()>>),
    /// A callback of `LogStore::write_async`, run on the writer thread.
    Call(Box<dyn FnOnce(Result<()>) + Send>),
}

impl Done {
    fn finish(self, r: Result<()>) {
        match self {
            Done::Wait(tx) => {
                let _ = tx.send(r);
            }
            Done::Call(f) => f(r),
        }
    }
}

/// Work for a committer.
pub(crate) enum Task {
    Write {
        record: Vec<u8>,
        ops: Vec<Op>,
        sync: bool,
        /// Streams whose entries stay out of the entry cache (sorted).
        uncached: Vec<u64>,
        done: Done,
    },
    Purge {
        done: mpsc::SyncSender<Result<PurgeReport>>,
    },
}

#[derive(Default)]
pub(crate) struct Queue {
    pub tasks: Vec<Task>,
    pub shutdown: bool,
    /// Someone is committing (see the module doc); only they take tasks.
    pub committing: bool,
    /// Blocked writers whose batches were in the last group committed: more than one means
    /// blocking writers run concurrently, and then they leave the commits to the writer
    /// thread (see `LogStore::write`).
    pub last_group_waiters: usize,
}

/// Holds the committer role; gives it up when dropped (also when unwinding, so that a
/// panicking committer cannot leave the role taken forever), waking the writer thread if
/// work is left.
pub(crate) struct Committer<'a> {
    pub shared: &'a Shared,
}

impl Drop for Committer<'_> {
    fn drop(&mut self) {
        let mut q = self.shared.queue.lock();
        q.committing = false;
        if !q.tasks.is_empty() || q.shutdown {
            self.shared.queue_cv.notify_all();
        }
    }
}

/// The segment being appended to.
pub(crate) struct Active {
    pub seq: u32,
    pub file: Arc<dyn LogFile>,
    pub offset: u64,
}

/// The writing side of the store: only the holder of its mutex (see the module doc) writes.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub active: Active,
    ring: Option<Uring>,
    /// One group write being assembled: with `direct`, `tail` then the records; else
    /// the records. Aligned, so that direct writes go straight from it.
    buf: AlignedBuf,
    /// The active segment has writes that were not synced.
    unsynced: bool,
    /// Segment `active.seq + 1`, being prepared under its `.next` name on a background
    /// thread (real file systems only, see `FileSystem::prepare_in_background`).
    next: Option<Preparing>,
    /// Purged segments kept for reuse (old sequence numbers, oldest first; see
    /// `Config::recycle_segments`). Purge fills it, rotation takes from it.
    pub free: std::collections::VecDeque<u32>,
    /// The active segment takes unbuffered, block-aligned writes (`Config::direct_io`).
    direct: bool,
    /// With `direct`: the bytes of the active segment from the start of the block that
    /// holds `active.offset` up to it. Each write starts with them, so that it covers
    /// whole blocks; they are rewritten unchanged.
    tail: Vec<u8>,
}

/// A segment being created (zero-filled or recycled) ahead of rotation.
struct Preparing {
    seq: u32,
    handle: std::thread::JoinHandle<Result<Arc<dyn LogFile>>>,
}

static FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// A copy of a group's failure for each of its writers.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Io { path, source } => Error::io(
            path.clone(),
            std::io::Error::new(source.kind(), source.to_string()),
        ),
        Error::Poisoned => Error::Poisoned,
        Error::Closed => Error::Closed,
        other => Error::InvalidArgument(other.to_string()),
    }
}

impl Writer {
    pub fn new(shared: Arc<Shared>, active: Active, free: Vec<u32>) -> Self {
        let ring = if shared.cfg.use_io_uring {
            match Uring::new() {
                Ok(r) => Some(r),
                Err(e) => {
                    if !FALLBACK_WARNED.swap(true, Ordering::SeqCst) {
                        log::warn!(
                            "io_uring unavailable ({e}); raftlog falls back to pwrite + fdatasync"
                        );
                    }
                    None
                }
            }
        } else {
            None
        };
        shared.io_uring.store(ring.is_some(), Ordering::SeqCst);
        let mut w = Writer {
            shared,
            active,
            ring,
            buf: AlignedBuf::new(),
            unsynced: false,
            next: None,
            free: free.into(),
            direct: false,
            tail: Vec::new(),
        };
        w.activate();
        w.maybe_prepare_next();
        w
    }

    /// Sets up the write mode of a newly active segment: with `Config::direct_io` and a
    /// file that takes unbuffered writes, loads the partial block before its offset.
    fn activate(&mut self) {
        self.direct = false;
        self.tail.clear();
        if !self.shared.cfg.direct_io || !self.active.file.direct() {
            self.shared.direct_io.store(false, Ordering::SeqCst);
            return;
        }
        let offset = self.active.offset;
        let start = offset - offset % DIRECT_BLOCK as u64;
        self.tail.resize((offset - start) as usize, 0);
        match self.active.file.read_exact_at(&mut self.tail, start) {
            Ok(()) => self.direct = true,
            Err(e) => {
                log::warn!(
                    "raftlog: cannot read the last block of segment {} ({e}); its writes stay buffered",
                    self.active.seq
                );
                self.tail.clear();
            }
        }
        self.shared.direct_io.store(self.direct, Ordering::SeqCst);
    }

    /// Starts preparing the next segment once the active one is half full (a store
    /// that is opened and closed quickly, e.g. in tests, does not zero-fill a segment it
    /// never uses; a long one has half a segment of writes to hide the zero fill behind).
    fn maybe_prepare_next(&mut self) {
        if self.next.is_none() && self.active.offset >= self.shared.cfg.target_file_size / 2 {
            self.prepare_next();
        }
    }

    /// Starts preparing segment `active.seq + 1` in the background, if this file system
    /// wants that and segments are preallocated.
    fn prepare_next(&mut self) {
        let shared = &self.shared;
        if !shared.cfg.preallocate || !shared.fs.prepare_in_background() {
            return;
        }
        let Some(seq) = self.active.seq.checked_add(1) else {
            return;
        };
        let (fs, dir, cfg) = (shared.fs.clone(), shared.dir.clone(), shared.cfg.clone());
        let recycled = self.free.pop_front();
        let spawned = std::thread::Builder::new()
            .name("raftlog-prepare".into())
            .spawn(move || {
                let path = preparing_path(&dir, seq);
                let r = prepare_segment(&*fs, &dir, &path, seq, recycled, &cfg);
                if r.is_err() {
                    let _ = fs.remove(&path);
                }
                r
            });
        match spawned {
            Ok(handle) => self.next = Some(Preparing { seq, handle }),
            Err(e) => log::warn!("raftlog: cannot spawn the segment preparer: {e}"),
        }
    }

    /// Waits for the segment being prepared, if any; returns it if it is `seq`.
    fn take_prepared(&mut self, seq: u32) -> Option<Arc<dyn LogFile>> {
        let p = self.next.take()?;
        let r = p.handle.join();
        let path = preparing_path(&self.shared.dir, p.seq);
        match r {
            Ok(Ok(file)) if p.seq == seq => return Some(file),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::warn!("raftlog: preparing segment {} failed: {e}", p.seq),
            Err(_) => log::warn!("raftlog: segment preparer panicked"),
        }
        let _ = self.shared.fs.remove(&path);
        None
    }

    /// The writer thread's loop; returns on shutdown once the queue is drained.
    pub fn run(writer: &Mutex<Writer>, shared: &Shared) {
        loop {
            {
                let mut q = shared.queue.lock();
                while (q.tasks.is_empty() || q.committing) && !q.shutdown {
                    shared.queue_cv.wait(&mut q);
                }
                if q.committing {
                    // Shutting down while a caller commits: let it finish.
                    shared.queue_cv.wait(&mut q);
                    continue;
                }
                if q.tasks.is_empty() {
                    drop(q);
                    writer.lock().close();
                    return;
                }
                q.committing = true;
            }
            let _role = Committer { shared };
            writer.lock().drain(true);
        }
    }

    /// Carries out the queued tasks in order; the caller holds the committer role.
    /// Without `purges`, stops before the first purge and leaves it (and what follows) to
    /// the writer thread: a caller committing its own write does not run a purge's rewrite.
    pub fn drain(&mut self, purges: bool) {
        let tasks = {
            let mut q = self.shared.queue.lock();
            let n = if purges {
                q.tasks.len()
            } else {
                q.tasks
                    .iter()
                    .position(|t| matches!(t, Task::Purge { .. }))
                    .unwrap_or(q.tasks.len())
            };
            let tasks = q.tasks.drain(..n).collect::<Vec<_>>();
            q.last_group_waiters = tasks
                .iter()
                .filter(|t| {
                    matches!(
                        t,
                        Task::Write {
                            done: Done::Wait(_),
                            ..
                        }
                    )
                })
                .count();
            tasks
        };
        let mut writes = Vec::new();
        for task in tasks {
            match task {
                Task::Write { .. } => writes.push(task),
                Task::Purge { done } => {
                    self.commit(std::mem::take(&mut writes));
                    let _ = done.send(crate::purge::purge(self));
                }
            }
        }
        self.commit(writes);
    }

    /// On shutdown, makes writes done without `sync` durable (best effort).
    fn close(&mut self) {
        if let Some(p) = self.next.take() {
            let _ = p.handle.join();
            let _ = self
                .shared
                .fs
                .remove(&preparing_path(&self.shared.dir, p.seq));
        }
        if self.unsynced && !self.shared.poisoned.load(Ordering::SeqCst) {
            let mut empty = AlignedBuf::new();
            let head = self.begin(&mut empty);
            if let Err(e) = self.flush(&mut empty, head, true) {
                log::warn!("raftlog: final sync failed: {e}");
            }
        }
    }

    /// Commits a group of write tasks and answers each.
    fn commit(&mut self, tasks: Vec<Task>) {
        if tasks.is_empty() {
            return;
        }
        let mut groups = Vec::with_capacity(tasks.len());
        let mut replies = Vec::with_capacity(tasks.len());
        for t in tasks {
            if let Task::Write {
                record,
                ops,
                sync,
                uncached,
                done,
            } = t
            {
                groups.push((record, ops, sync, Cache::AllBut(uncached)));
                replies.push(done);
            }
        }
        let result = self.write_records(&groups);
        for done in replies {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(clone_error(e)),
            };
            done.finish(r);
        }
    }

    /// Writes records (with their decoded items) as one group, syncs if any asked for
    /// it, and applies them to the index. On failure the store is poisoned.
    pub fn write_records(&mut self, group: &[(Vec<u8>, Vec<Op>, bool, Cache)]) -> Result<()> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        let r = self.write_inner(group);
        if r.is_err() {
            self.shared.poisoned.store(true, Ordering::SeqCst);
        }
        r
    }

    /// Starts a group buffer for the active segment; returns where its records begin
    /// (after the partial block before the offset, in direct mode).
    fn begin(&self, buf: &mut AlignedBuf) -> usize {
        buf.clear();
        if self.direct {
            buf.extend_from_slice(&self.tail);
        }
        buf.len()
    }

    fn write_inner(&mut self, group: &[(Vec<u8>, Vec<Op>, bool, Cache)]) -> Result<()> {
        let sync = group.iter().any(|g| g.2);
        let target = self.shared.cfg.target_file_size;
        let mut placed = Vec::with_capacity(group.len());
        let mut buf = std::mem::take(&mut self.buf);
        let mut head = self.begin(&mut buf);
        let mut result = Ok(());
        for (record, ..) in group {
            let end = self.active.offset + (buf.len() - head) as u64;
            if end + record.len() as u64 > target && end > SEGMENT_HEADER_LEN {
                result = self
                    .flush(&mut buf, head, true)
                    .and_then(|()| self.rotate());
                if result.is_err() {
                    break;
                }
                head = self.begin(&mut buf);
            }
            placed.push((
                self.active.seq,
                self.active.offset + (buf.len() - head) as u64,
            ));
            let at = buf.len();
            buf.extend_from_slice(record);
            bind_record(&mut buf[at..], self.active.seq);
        }
        if result.is_ok() {
            result = self.flush(&mut buf, head, sync);
        }
        self.buf = buf;
        result?;
        self.shared
            .batches
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let mut mem = self.shared.mem.write();
        for ((record, ops, _, cache), (seq, offset)) in group.iter().zip(placed) {
            let payload = &record[RECORD_HEADER_LEN..];
            mem.apply(ops, payload, seq, offset + RECORD_HEADER_LEN as u64, cache);
        }
        Ok(())
    }

    /// Writes the records in `buf[head..]` (made by [`Writer::begin`]) at the end of the
    /// active segment, followed by the end marker (in the same write: the next write
    /// starts on it), then syncs if asked. In direct mode the write covers whole blocks:
    /// the partial block before the offset (`buf[..head]`), the records, the end marker,
    /// zeros up to the block boundary (in a recycled segment they replace stale bytes past
    /// the end marker, which nothing reads).
    fn flush(&mut self, buf: &mut AlignedBuf, head: usize, sync: bool) -> Result<()> {
        let len = buf.len() - head;
        if len == 0 && !sync {
            return Ok(());
        }
        let offset = self.active.offset;
        let r = if len == 0 {
            self.submit(&[], offset, sync, false)
        } else {
            buf.extend_from_slice(&END_MARKER);
            if self.direct {
                buf.resize(buf.len().next_multiple_of(DIRECT_BLOCK));
                let r = self.submit(buf, offset - head as u64, sync, true);
                if r.is_ok() {
                    let end = head + len;
                    self.tail.clear();
                    self.tail
                        .extend_from_slice(&buf[end - end % DIRECT_BLOCK..end]);
                }
                r
            } else {
                self.submit(buf, offset, sync, false)
            }
        };
        r?;
        self.active.offset += len as u64;
        self.unsynced = !sync && (self.unsynced || len > 0);
        self.maybe_prepare_next();
        Ok(())
    }

    /// Writes `data` at `offset` of the active segment (through its `O_DIRECT`
    /// descriptor if `direct`) and syncs if asked.
    fn submit(&mut self, data: &[u8], offset: u64, sync: bool, direct: bool) -> Result<()> {
        let path = segment_path(&self.shared.dir, self.active.seq);
        let file = &self.active.file;
        let fd = if direct {
            file.direct_fd()
        } else {
            file.raw_fd()
        };
        let t0 = std::time::Instant::now();
        let r = match (self.ring.as_mut(), fd) {
            (Some(ring), Some(fd)) => {
                ring.write_and_sync(fd, data, offset, sync, self.shared.cfg.io_uring_sync)
            }
            _ => {
                let written = if data.is_empty() {
                    Ok(())
                } else if direct {
                    file.write_direct_at(data, offset)
                } else {
                    file.write_all_at(data, offset)
                };
                written.and_then(|()| if sync { file.sync_data() } else { Ok(()) })
            }
        };
        self.shared
            .io_nanos
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r.map_err(|e| Error::io(&path, e))?;
        self.shared.group_writes.fetch_add(1, Ordering::Relaxed);
        if sync {
            self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Starts the next segment. The current one has been synced by the caller.
    fn rotate(&mut self) -> Result<()> {
        let seq = self
            .active
            .seq
            .checked_add(1)
            .ok_or_else(|| Error::InvalidArgument("segment sequence exhausted".into()))?;
        let prepared = self.take_prepared(seq);
        let (fs, dir) = (&*self.shared.fs, &self.shared.dir);
        let file = match prepared {
            Some(file) => {
                // Header, zeros and sync are done: publishing it is a rename.
                let path = segment_path(dir, seq);
                fs.rename(&preparing_path(dir, seq), &path)
                    .map_err(|e| Error::io(&path, e))?;
                fs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
                file
            }
            None => {
                let recycled = self.free.pop_front();
                create_segment(fs, dir, seq, recycled, &self.shared.cfg)?
            }
        };
        self.shared.files.write().insert(seq, file.clone());
        self.active = Active {
            seq,
            file,
            offset: SEGMENT_HEADER_LEN,
        };
        self.activate();
        self.maybe_prepare_next();
        Ok(())
    }
}

/// Creates segment `seq` (from the purged segment `recycled`, if given): header,
/// preallocation, file sync, directory sync.
pub(crate) fn create_segment(
    fs: &dyn FileSystem,
    dir: &std::path::Path,
    seq: u32,
    recycled: Option<u32>,
    cfg: &Config,
) -> Result<Arc<dyn LogFile>> {
    let file = prepare_segment(fs, dir, &segment_path(dir, seq), seq, recycled, cfg)?;
    fs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(file)
}

/// Makes the file at `path` segment `seq`, synced, the directory not synced. With
/// `recycled`, that purged segment gets the header and first end marker of `seq` and is
/// then renamed to `path`: its blocks are written already, so nothing needs
/// zero-filling, and its stale records fail the checksum that binds records to `seq`.
/// Otherwise a new file gets the header and end marker and, if configured, is
/// preallocated.
fn prepare_segment(
    fs: &dyn FileSystem,
    dir: &std::path::Path,
    path: &std::path::Path,
    seq: u32,
    recycled: Option<u32>,
    cfg: &Config,
) -> Result<Arc<dyn LogFile>> {
    // A recycled segment is made ready under its `.free` name and renamed last: if any
    // step fails, no file under a segment name is left with another segment's header
    // (recovery would have to call that corruption).
    let at = match recycled {
        Some(old) => free_path(dir, old),
        None => path.to_path_buf(),
    };
    let io = |e| Error::io(&at, e);
    let file = fs.open(&at).map_err(io)?;
    if cfg.preallocate {
        // A no-op on a recycled segment (at least the target size already).
        file.allocate(cfg.target_file_size).map_err(io)?;
    }
    let mut head = AlignedBuf::new();
    head.extend_from_slice(&segment_header(seq));
    head.extend_from_slice(&END_MARKER);
    if cfg.direct_io && file.direct() {
        // The whole first block, so that the writer's unbuffered writes never meet a
        // page-cache copy of it.
        head.resize(DIRECT_BLOCK);
        file.write_direct_at(&head, 0).map_err(io)?;
    } else {
        file.write_all_at(&head, 0).map_err(io)?;
    }
    file.sync_data().map_err(io)?;
    if at != path {
        fs.rename(&at, path).map_err(io)?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use crate::{Config, Entry, LogBatch, LogStore};

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// On real files the next segment is zero-filled in the background under a `.next`
    /// name, renamed in at rotation, and never left behind.
    #[test]
    fn segments_prepared_ahead_rotate_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            target_file_size: 64 << 10,
            ..Config::default()
        };
        let mut next = 1u64;
        for round in 0..3 {
            let store = LogStore::open(dir.path(), cfg.clone()).unwrap();
            assert_eq!(store.last_index(7).unwrap_or(0), next - 1, "round {round}");
            for _ in 0..40 {
                let es: Vec<Entry> = (next..next + 4)
                    .map(|index| Entry {
                        index,
                        term: 1,
                        data: vec![index as u8; 1000],
                    })
                    .collect();
                let mut b = LogBatch::new();
                b.add_entries(7, &es).unwrap();
                store.write(b, true).unwrap();
                next += 4;
            }
            assert!(store.stats().files >= 3, "rotated");
            let e = store.entries(7, 1, next, u64::MAX).unwrap();
            assert_eq!(e.len() as u64, next - 1);
            assert!(e.iter().all(|e| e.data == vec![e.index as u8; 1000]));
            // The active segment and the next one, zero-filled to the target size.
            let n = names(dir.path());
            let last = n.iter().rfind(|n| n.ends_with(".raftlog")).unwrap();
            assert_eq!(
                std::fs::metadata(dir.path().join(last)).unwrap().len(),
                64 << 10
            );
            drop(store);
            assert!(
                names(dir.path()).iter().all(|n| n.ends_with(".raftlog")),
                "{:?}",
                names(dir.path())
            );
        }
        // A stale `.next` file (crash while preparing) is deleted by recovery.
        std::fs::write(dir.path().join("0000000000000099.raftlog.next"), b"junk").unwrap();
        let store = LogStore::open(dir.path(), cfg).unwrap();
        assert_eq!(store.last_index(7), Some(next - 1));
        assert!(names(dir.path()).iter().all(|n| n.ends_with(".raftlog")));
    }

    /// A busy log with compaction and purge reuses its purged segments (through the
    /// background preparer) instead of creating new ones; what it reads back after a
    /// reopen is exactly what it wrote, never a recycled file's stale records.
    #[test]
    fn purged_segments_are_reused() {
        purged_segments_are_reused_with(true);
        purged_segments_are_reused_with(false);
    }

    /// `direct_io`: on (where the file system takes O_DIRECT, as ext4 and xfs do) or off
    /// (buffered appends, also what a file system refusing O_DIRECT gets).
    fn purged_segments_are_reused_with(direct_io: bool) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            target_file_size: 64 << 10,
            purge_rewrite_lag_files: 1,
            recycle_segments: 2,
            direct_io,
            ..Config::default()
        };
        let mut next = 1u64;
        let mut recycled = 0;
        let mut most_files = 0;
        for round in 0..4 {
            let store = LogStore::open(dir.path(), cfg.clone()).unwrap();
            // Whether this file system takes O_DIRECT at all (tmpfs does not).
            let supported = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(dir.path().join("probe"))
                    .is_ok()
            };
            let _ = std::fs::remove_file(dir.path().join("probe"));
            assert_eq!(store.stats().direct_io, direct_io && supported);
            for _ in 0..15 {
                for _ in 0..20 {
                    let es: Vec<Entry> = (next..next + 4)
                        .map(|index| Entry {
                            index,
                            term: round + 1,
                            data: vec![(index % 251) as u8; 1000],
                        })
                        .collect();
                    let mut b = LogBatch::new();
                    b.add_entries(7, &es).unwrap();
                    store.write(b, true).unwrap();
                    next += 4;
                }
                let mut b = LogBatch::new();
                b.compact_to(7, next - 8);
                store.write(b, true).unwrap();
                let r = store.purge().unwrap();
                recycled += r.recycled_files.len();
                most_files = most_files.max(names(dir.path()).len());
            }
            drop(store);
            let store = LogStore::open(dir.path(), cfg.clone()).unwrap();
            assert_eq!(store.first_index(7), Some(next - 8));
            let e = store.entries(7, next - 8, next, u64::MAX).unwrap();
            assert_eq!(e.len(), 8);
            for e in &e {
                assert_eq!(e.term, round + 1);
                assert_eq!(e.data, vec![(e.index % 251) as u8; 1000]);
            }
        }
        let n = names(dir.path());
        let free = n.iter().filter(|n| n.ends_with(".raftlog.free")).count();
        // ~80 segments' worth of writes: most of them went into reused files.
        assert!(next > 4 * 15 * 20 * 4, "{next}");
        assert!(
            recycled > 40,
            "only {recycled} segments were kept for reuse"
        );
        assert!(free <= 2, "{n:?}");
        assert!(most_files <= 6, "at most {most_files} files at once");
    }
}
