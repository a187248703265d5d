//! [`LogStore`]: the public handle. Writes are group-committed (see `writer.rs`: by the
//! writer thread, or by a blocking writer itself); reads are served from the index, the
//! entry cache, and positioned reads of segments.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::{decode_batch, RECORD_HEADER_LEN};
use crate::fs::{segment_path, FileSystem, StdFs};
use crate::log_batch::{Entry, LogBatch};
use crate::memtable::Piece;
use crate::purge::PurgeReport;
use crate::recovery::recover;
use crate::writer::{Committer, Done, Queue, Shared, Task, Writer};

/// Counters of a store, for tests, benchmarks and metrics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// `fdatasync`s issued by the writer (one per group that asked for durability).
    pub syncs: u64,
    /// Group writes issued (one write submission each).
    pub group_writes: u64,
    /// Batches committed.
    pub batches: u64,
    /// Live entries in the index.
    pub index_entries: u64,
    /// Bytes the index uses for live entries (locations + term runs, capacity included).
    pub index_bytes: u64,
    /// Bytes of entry payloads in the cache.
    pub cache_bytes: u64,
    /// Segment files in use.
    pub files: usize,
    /// Whether writes go through io_uring (false: the pwrite + fdatasync fallback).
    pub io_uring: bool,
    /// Whether the active segment takes unbuffered (`O_DIRECT`) writes.
    pub direct_io: bool,
    /// Time spent in group writes and syncs, in microseconds.
    pub io_micros: u64,
}

/// A multi-stream raft log store in one directory.
///
/// Thread-safe: share it with `Arc`. Concurrent [`LogStore::write`]s are merged into one
/// write and one `fdatasync` (group commit).
pub struct LogStore {
    shared: Arc<Shared>,
    writer: Arc<Mutex<Writer>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

/// A batch as the writer takes it: the sealed record, its decoded operations, and the
/// streams whose entries skip the entry cache.
fn prepare(mut batch: LogBatch) -> Result<(Vec<u8>, Vec<crate::format::Op>, Vec<u64>)> {
    let uncached = batch.take_uncached();
    let record = batch.into_record()?;
    let ops = decode_batch(&record[RECORD_HEADER_LEN..]).map_err(Error::InvalidArgument)?;
    Ok((record, ops, uncached))
}

impl LogStore {
    /// Opens (or creates) the store in `dir` on the real file system, recovering the
    /// index from its segments. A torn tail of the last segment is cut away (durably)
    /// before this returns, per `config.recovery_mode`.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        Self::open_with_fs(dir, config, Arc::new(StdFs))
    }

    /// Like [`LogStore::open`], through the given file system (e.g.
    /// [`crate::fault::MemFs`]).
    pub fn open_with_fs(
        dir: impl AsRef<Path>,
        config: Config,
        fs: Arc<dyn FileSystem>,
    ) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let rec = recover(&*fs, &dir, &config)?;
        let shared = Arc::new(Shared {
            dir,
            fs,
            cfg: config,
            mem: RwLock::new(rec.mem),
            files: RwLock::new(rec.files),
            poisoned: AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            syncs: AtomicU64::new(0),
            group_writes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            io_uring: AtomicBool::new(false),
            direct_io: AtomicBool::new(false),
            io_nanos: AtomicU64::new(0),
        });
        let writer = Arc::new(Mutex::new(Writer::new(
            shared.clone(),
            rec.active,
            rec.free,
        )));
        let handle = {
            let (w, s) = (writer.clone(), shared.clone());
            std::thread::Builder::new()
                .name("raftlog-writer".into())
                .spawn(move || Writer::run(&w, &s))
                .map_err(|e| Error::io(&shared.dir, e))?
        };
        Ok(LogStore {
            shared,
            writer,
            thread: Some(handle),
        })
    }

    fn submit(&self, task: Task) {
        self.shared.queue.lock().tasks.push(task);
        self.shared.queue_cv.notify_one();
    }

    /// Writes `batch` atomically: after a crash either all of it or none of it is there.
    /// When this returns `Ok`, the batch is visible to reads and, if `sync`, durable
    /// (`fdatasync`ed, possibly together with other writers' batches). Without `sync`
    /// the batch becomes durable with the next synced write; an empty batch written with
    /// `sync` makes all earlier writes durable.
    ///
    /// The write happens on the calling thread, together with the batches queued before
    /// it (their `write_async` callbacks run here then), unless a commit is in progress or
    /// other threads write this way at the same time: then the writer thread commits it
    /// with the next group (see `writer.rs`).
    ///
    /// Errors: `InvalidArgument` for a batch over 1 GiB; an I/O error if the write or
    /// sync failed, after which the store is poisoned and every later write returns
    /// `Poisoned` until it is reopened.
    pub fn write(&self, batch: LogBatch, sync: bool) -> Result<()> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        if batch.is_empty() && !sync {
            return Ok(());
        }
        let (record, ops, uncached) = prepare(batch)?;
        let (tx, rx) = mpsc::sync_channel(1);
        let lead = {
            let mut q = self.shared.queue.lock();
            q.tasks.push(Task::Write {
                record,
                ops,
                sync,
                uncached,
                done: Done::Wait(tx),
            });
            let lead = !q.committing && q.last_group_waiters <= 1;
            if lead {
                q.committing = true;
            } else {
                self.shared.queue_cv.notify_one();
            }
            lead
        };
        if lead {
            let _role = Committer {
                shared: &self.shared,
            };
            self.writer.lock().drain(false);
        }
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Like [`LogStore::write`], without waiting: the writer thread commits it, and `done`
    /// runs once the batch is visible to reads and, if `sync`, durable (or with the error
    /// that poisoned the store), on the thread that committed it: the writer thread or one
    /// blocked in [`LogStore::write`]. Batches become durable in the order they were
    /// submitted, mixed freely with blocking writes, so a caller can keep several in
    /// flight and let group commit merge them. `done` must be quick (it holds up the
    /// committer) and must not block on the thread that writes: send a message, no I/O.
    ///
    /// Errors found before the batch is queued (poisoned store, oversized batch) are
    /// returned at once and `done` is not called.
    pub fn write_async(
        &self,
        batch: LogBatch,
        sync: bool,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<()> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        let (record, ops, uncached) = prepare(batch)?;
        self.submit(Task::Write {
            record,
            ops,
            sync,
            uncached,
            done: Done::Call(Box::new(done)),
        });
        Ok(())
    }

    /// Rewrites streams that pin old segments (see `Config::purge_rewrite_lag_files`)
    /// into the active segment, then deletes every segment no stream needs. When this
    /// returns `Ok`, the rewrite is durable and the deletions are durable (directory
    /// synced). Safe to run concurrently with reads and writes.
    pub fn purge(&self) -> Result<PurgeReport> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Task::Purge { done: tx });
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Entries `lo..hi` of `stream`, stopping before the total payload exceeds
    /// `max_bytes` (at least one entry is returned). Errors: `Compacted` if
    /// `lo < first_index`, `Unavailable` if `hi > last_index + 1` or the stream does not
    /// exist. Cached entries are served without disk I/O.
    pub fn entries(&self, stream: u64, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        let (pieces, files) = {
            let mem = self.shared.mem.read();
            let pieces = mem.pieces(stream, lo, hi, max_bytes)?;
            // Take file handles while the index is locked: a purge cannot delete a file
            // the index still points to, and an open handle outlives the deletion.
            let files = self.shared.files.read();
            let mut handles = std::collections::BTreeMap::new();
            for p in &pieces {
                if let Piece::Disk { loc, .. } = p {
                    if let Some(f) = files.get(&loc.file) {
                        handles.entry(loc.file).or_insert_with(|| f.clone());
                    }
                }
            }
            (pieces, handles)
        };
        let mut out = Vec::with_capacity(pieces.len());
        let mut i = 0;
        while i < pieces.len() {
            match &pieces[i] {
                Piece::Cached(e) => {
                    out.push(e.clone());
                    i += 1;
                }
                Piece::Disk { loc, .. } => {
                    // Coalesce entries that sit close together in one file into one read.
                    let start = loc.offset;
                    let mut end = u64::from(loc.offset) + u64::from(loc.len);
                    let mut j = i + 1;
                    while let Some(Piece::Disk { loc: next, .. }) = pieces.get(j) {
                        let gap_ok = next.file == loc.file
                            && u64::from(next.offset) >= end
                            && u64::from(next.offset) - end <= 64
                            && u64::from(next.offset) + u64::from(next.len) - u64::from(start)
                                <= 8 << 20;
                        if !gap_ok {
                            break;
                        }
                        end = u64::from(next.offset) + u64::from(next.len);
                        j += 1;
                    }
                    let path = segment_path(&self.shared.dir, loc.file);
                    let file = files
                        .get(&loc.file)
                        .ok_or_else(|| Error::io(&path, std::io::ErrorKind::NotFound.into()))?;
                    let mut buf = vec![0u8; (end - u64::from(start)) as usize];
                    file.read_exact_at(&mut buf, u64::from(start))
                        .map_err(|e| Error::io(&path, e))?;
                    for p in &pieces[i..j] {
                        if let Piece::Disk { index, term, loc } = p {
                            let from = (loc.offset - start) as usize;
                            let data = buf
                                .get(from..from + loc.len as usize)
                                .map(<[u8]>::to_vec)
                                .unwrap_or_default();
                            out.push(Entry {
                                index: *index,
                                term: *term,
                                data,
                            });
                        }
                    }
                    i = j;
                }
            }
        }
        Ok(out)
    }

    /// Term of entry `index` of `stream`, from memory (no disk I/O). Errors: `Compacted`
    /// or `Unavailable` as for [`LogStore::entries`].
    pub fn term(&self, stream: u64, index: u64) -> Result<u64> {
        self.shared.mem.read().term(stream, index)
    }

    /// First live index of `stream` (the next append index if it has no entries), or
    /// `None` if the stream does not exist.
    pub fn first_index(&self, stream: u64) -> Option<u64> {
        self.shared.mem.read().first_index(stream)
    }

    /// Last index of `stream` (`first_index - 1` if it has no entries), or `None` if the
    /// stream does not exist.
    pub fn last_index(&self, stream: u64) -> Option<u64> {
        self.shared.mem.read().last_index(stream)
    }

    /// The state record `key` of `stream`, from memory.
    pub fn get_state(&self, stream: u64, key: &[u8]) -> Option<Vec<u8>> {
        self.shared.mem.read().get_state(stream, key)
    }

    /// Ids of all existing streams, sorted.
    pub fn streams(&self) -> Vec<u64> {
        self.shared.mem.read().stream_ids()
    }

    /// Write and purge requests queued and not yet picked up by a committer.
    pub fn pending_writes(&self) -> usize {
        self.shared.queue.lock().tasks.len()
    }

    /// True once a write or sync failed; reopen the store to clear it.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::SeqCst)
    }

    /// Group writes so far (the `group_writes` of [`LogStore::stats`], without its walk
    /// over every stream's index).
    pub fn group_writes(&self) -> u64 {
        self.shared.group_writes.load(Ordering::Relaxed)
    }

    /// Current counters (walks every stream's index: not for a hot path).
    pub fn stats(&self) -> Stats {
        let mem = self.shared.mem.read();
        let (index_entries, index_bytes) = mem.index_size();
        Stats {
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            group_writes: self.shared.group_writes.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
            index_entries,
            index_bytes,
            cache_bytes: mem.cache_bytes() as u64,
            files: self.shared.files.read().len(),
            io_uring: self.shared.io_uring.load(Ordering::SeqCst),
            direct_io: self.shared.direct_io.load(Ordering::SeqCst),
            io_micros: self.shared.io_nanos.load(Ordering::Relaxed) / 1000,
        }
    }
}

/// Dropping the store stops the writer thread after it has committed every queued
/// write, and syncs writes that were made without `sync`.
impl Drop for LogStore {
    fn drop(&mut self) {
        self.shared.queue.lock().shutdown = true;
        self.shared.queue_cv.notify_all();
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}
