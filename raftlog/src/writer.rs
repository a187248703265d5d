//! Group commit: the writer thread takes every queued batch, writes them as one
//! contiguous buffer (one io_uring submission, or `pwrite`), issues one `fdatasync` for
//! the group, applies the batches to the index in log order and wakes their writers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::{segment_header, Op, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::fs::{segment_path, FileSystem, LogFile};
use crate::memtable::MemTable;
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
    /// Nanoseconds spent in group writes + syncs.
    pub io_nanos: AtomicU64,
}

/// Work for the writer thread.
pub(crate) enum Task {
    Write {
        record: Vec<u8>,
        ops: Vec<Op>,
        sync: bool,
        cache: bool,
        done: mpsc::SyncSender<Result<()>>,
    },
    Purge {
        done: mpsc::SyncSender<Result<PurgeReport>>,
    },
}

#[derive(Default)]
pub(crate) struct Queue {
    pub tasks: Vec<Task>,
    pub shutdown: bool,
}

/// The segment being appended to.
pub(crate) struct Active {
    pub seq: u32,
    pub file: Arc<dyn LogFile>,
    pub offset: u64,
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub active: Active,
    ring: Option<Uring>,
    buf: Vec<u8>,
    /// The active segment has writes that were not synced.
    unsynced: bool,
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
    pub fn new(shared: Arc<Shared>, active: Active) -> Self {
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
        Writer {
            shared,
            active,
            ring,
            buf: Vec::new(),
            unsynced: false,
        }
    }

    /// The writer thread's loop; returns on shutdown once the queue is drained.
    pub fn run(mut self) {
        loop {
            let tasks = {
                let mut q = self.shared.queue.lock();
                while q.tasks.is_empty() && !q.shutdown {
                    self.shared.queue_cv.wait(&mut q);
                }
                if q.tasks.is_empty() {
                    drop(q);
                    self.close();
                    return;
                }
                std::mem::take(&mut q.tasks)
            };
            let mut writes = Vec::new();
            for task in tasks {
                match task {
                    Task::Write { .. } => writes.push(task),
                    Task::Purge { done } => {
                        self.commit(std::mem::take(&mut writes));
                        let _ = done.send(crate::purge::purge(&mut self));
                    }
                }
            }
            self.commit(writes);
        }
    }

    /// On shutdown, makes writes done without `sync` durable (best effort).
    fn close(&mut self) {
        if self.unsynced && !self.shared.poisoned.load(Ordering::SeqCst) {
            if let Err(e) = self.flush(&[], true) {
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
                cache,
                done,
            } = t
            {
                groups.push((record, ops, sync, cache));
                replies.push(done);
            }
        }
        let result = self.write_records(&groups);
        for done in replies {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(clone_error(e)),
            };
            let _ = done.send(r);
        }
    }

    /// Writes records (with their decoded items) as one group, syncs if any asked for
    /// it, and applies them to the index. On failure the store is poisoned.
    pub fn write_records(&mut self, group: &[(Vec<u8>, Vec<Op>, bool, bool)]) -> Result<()> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        let r = self.write_inner(group);
        if r.is_err() {
            self.shared.poisoned.store(true, Ordering::SeqCst);
        }
        r
    }

    fn write_inner(&mut self, group: &[(Vec<u8>, Vec<Op>, bool, bool)]) -> Result<()> {
        let sync = group.iter().any(|g| g.2);
        let target = self.shared.cfg.target_file_size;
        let mut placed = Vec::with_capacity(group.len());
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut result = Ok(());
        for (record, ..) in group {
            let end = self.active.offset + buf.len() as u64;
            if end + record.len() as u64 > target && end > SEGMENT_HEADER_LEN {
                result = self.flush(&buf, true).and_then(|()| self.rotate());
                buf.clear();
                if result.is_err() {
                    break;
                }
            }
            placed.push((self.active.seq, self.active.offset + buf.len() as u64));
            buf.extend_from_slice(record);
        }
        if result.is_ok() {
            result = self.flush(&buf, sync);
        }
        self.buf = buf;
        result?;
        self.shared
            .batches
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let mut mem = self.shared.mem.write();
        for ((record, ops, _, cache), (seq, offset)) in group.iter().zip(placed) {
            let payload = &record[RECORD_HEADER_LEN..];
            mem.apply(ops, payload, seq, offset + RECORD_HEADER_LEN as u64, *cache);
        }
        Ok(())
    }

    /// Writes `buf` at the end of the active segment, then syncs if asked.
    fn flush(&mut self, buf: &[u8], sync: bool) -> Result<()> {
        if buf.is_empty() && !sync {
            return Ok(());
        }
        let path = segment_path(&self.shared.dir, self.active.seq);
        let file = &self.active.file;
        let offset = self.active.offset;
        let t0 = std::time::Instant::now();
        let r = match (self.ring.as_mut(), file.raw_fd()) {
            (Some(ring), Some(fd)) => {
                ring.write_and_sync(fd, buf, offset, sync, self.shared.cfg.io_uring_sync)
            }
            _ => file.write_all_at(buf, offset).and_then(|()| {
                if sync {
                    file.sync_data()
                } else {
                    Ok(())
                }
            }),
        };
        self.shared
            .io_nanos
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r.map_err(|e| Error::io(&path, e))?;
        self.shared.group_writes.fetch_add(1, Ordering::Relaxed);
        if sync {
            self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        self.active.offset += buf.len() as u64;
        self.unsynced = !sync && (self.unsynced || !buf.is_empty());
        Ok(())
    }

    /// Starts the next segment. The current one has been synced by the caller.
    fn rotate(&mut self) -> Result<()> {
        let seq = self
            .active
            .seq
            .checked_add(1)
            .ok_or_else(|| Error::InvalidArgument("segment sequence exhausted".into()))?;
        let file = create_segment(&*self.shared.fs, &self.shared.dir, seq, &self.shared.cfg)?;
        self.shared.files.write().insert(seq, file.clone());
        self.active = Active {
            seq,
            file,
            offset: SEGMENT_HEADER_LEN,
        };
        Ok(())
    }
}

/// Creates segment `seq`: header, preallocation, file sync, directory sync.
pub(crate) fn create_segment(
    fs: &dyn FileSystem,
    dir: &std::path::Path,
    seq: u32,
    cfg: &Config,
) -> Result<Arc<dyn LogFile>> {
    let path = segment_path(dir, seq);
    let io = |e| Error::io(&path, e);
    let file = fs.open(&path).map_err(io)?;
    file.write_all_at(&segment_header(), 0).map_err(io)?;
    if cfg.preallocate {
        file.allocate(cfg.target_file_size).map_err(io)?;
    }
    file.sync_data().map_err(io)?;
    fs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(file)
}
