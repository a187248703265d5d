//! An in-memory file system with fault injection and simulated crashes.
//!
//! Each file keeps its current bytes and its durable bytes (a copy taken at the last
//! `sync_data`); each directory entry is durable only after `sync_dir`. [`MemFs::crash`]
//! returns a new file system holding only the durable state, as after a power failure.
//! Faults: fail every operation after the k-th ([`MemFs::fail_after`]), fail all writes
//! or all syncs.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{FileBytes, FileSystem, LogFile};

#[derive(Default)]
struct FileData {
    data: Vec<u8>,
    durable: Vec<u8>,
}

struct Faults {
    ops: AtomicU64,
    fail_after: AtomicU64,
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
    syncs: AtomicU64,
    reads: AtomicU64,
    paused: parking_lot::Mutex<bool>,
    resumed: parking_lot::Condvar,
    waiting: AtomicU64,
    direct: AtomicBool,
}

impl Faults {
    fn new() -> Self {
        Faults {
            ops: AtomicU64::new(0),
            fail_after: AtomicU64::new(u64::MAX),
            fail_writes: AtomicBool::new(false),
            fail_syncs: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            paused: parking_lot::Mutex::new(false),
            resumed: parking_lot::Condvar::new(),
            waiting: AtomicU64::new(0),
            direct: AtomicBool::new(false),
        }
    }

    /// Counts one mutating operation and decides whether it fails.
    fn op(&self) -> io::Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        if n > self.fail_after.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fault"));
        }
        Ok(())
    }
}

#[derive(Default)]
struct Dir {
    live: BTreeMap<PathBuf, Arc<Mutex<FileData>>>,
    durable: BTreeMap<PathBuf, Arc<Mutex<FileData>>>,
}

/// In-memory fault-injecting file system. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MemFs {
    dir: Arc<Mutex<Dir>>,
    faults: Arc<Faults>,
}

impl Default for MemFs {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemFs")
            .field("files", &self.dir.lock().live.len())
            .finish()
    }
}

impl MemFs {
    /// An empty file system without faults.
    pub fn new() -> Self {
        MemFs {
            dir: Arc::new(Mutex::new(Dir::default())),
            faults: Arc::new(Faults::new()),
        }
    }

    /// Every mutating operation (write, sync, set_len, allocate, create, remove,
    /// sync_dir) after the `k`-th from now fails with an I/O error.
    pub fn fail_after(&self, k: u64) {
        let now = self.faults.ops.load(Ordering::SeqCst);
        self.faults
            .fail_after
            .store(now.saturating_add(k), Ordering::SeqCst);
    }

    /// Makes every write fail (`true`) or succeed again (`false`).
    pub fn set_fail_writes(&self, fail: bool) {
        self.faults.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Makes every `sync_data` fail (`true`) or succeed again (`false`).
    pub fn set_fail_syncs(&self, fail: bool) {
        self.faults.fail_syncs.store(fail, Ordering::SeqCst);
    }

    /// Number of mutating operations so far.
    pub fn op_count(&self) -> u64 {
        self.faults.ops.load(Ordering::SeqCst)
    }

    /// Makes every `sync_data` block until [`MemFs::resume_syncs`] (for deterministic
    /// group-commit tests).
    pub fn pause_syncs(&self) {
        *self.faults.paused.lock() = true;
    }

    /// Lets blocked and future `sync_data` calls proceed.
    pub fn resume_syncs(&self) {
        *self.faults.paused.lock() = false;
        self.faults.resumed.notify_all();
    }

    /// Number of `sync_data` calls blocked by [`MemFs::pause_syncs`] right now.
    pub fn waiting_syncs(&self) -> u64 {
        self.faults.waiting.load(Ordering::SeqCst)
    }

    /// Number of positioned reads (`read_exact_at`) so far.
    pub fn read_count(&self) -> u64 {
        self.faults.reads.load(Ordering::SeqCst)
    }

    /// Number of successful `sync_data` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.faults.syncs.load(Ordering::SeqCst)
    }

    /// Makes files take unbuffered writes ([`LogFile::direct`]), with the alignment
    /// rules of real `O_DIRECT` checked on every one, so that the store's block-aligned
    /// write path runs under fault injection too.
    pub fn set_direct(&self, on: bool) {
        self.faults.direct.store(on, Ordering::SeqCst);
    }

    /// Simulates a power failure: a new file system (without faults) holding only what
    /// was durable here — synced bytes of files whose directory entries were synced.
    pub fn crash(&self) -> MemFs {
        let dir = self.dir.lock();
        let mut files = BTreeMap::new();
        for (path, file) in &dir.durable {
            let durable = file.lock().durable.clone();
            let data = FileData {
                data: durable.clone(),
                durable,
            };
            files.insert(path.clone(), Arc::new(Mutex::new(data)));
        }
        // Faults are gone after the crash; the kind of file system stays.
        let faults = Faults::new();
        faults
            .direct
            .store(self.faults.direct.load(Ordering::SeqCst), Ordering::SeqCst);
        MemFs {
            dir: Arc::new(Mutex::new(Dir {
                live: files.clone(),
                durable: files,
            })),
            faults: Arc::new(faults),
        }
    }

    /// Writes a whole file and makes it (and its directory entry) durable, bypassing
    /// fault injection. For tests and fuzzing.
    pub fn put_file(&self, path: &Path, bytes: &[u8]) {
        let file = Arc::new(Mutex::new(FileData {
            data: bytes.to_vec(),
            durable: bytes.to_vec(),
        }));
        let mut dir = self.dir.lock();
        dir.live.insert(path.to_path_buf(), file.clone());
        dir.durable.insert(path.to_path_buf(), file);
    }

    /// The current (not necessarily durable) bytes of a file.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        self.dir
            .lock()
            .live
            .get(path)
            .map(|f| f.lock().data.clone())
    }

    /// Paths of the live files, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dir.lock().live.keys().cloned().collect()
    }
}

struct MemFile {
    data: Arc<Mutex<FileData>>,
    faults: Arc<Faults>,
}

impl LogFile for MemFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.faults.reads.fetch_add(1, Ordering::SeqCst);
        let f = self.data.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = f.data.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.faults.op()?;
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected write fault"));
        }
        let mut f = self.data.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start + data.len();
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        f.data[start..end].copy_from_slice(data);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        {
            let mut paused = self.faults.paused.lock();
            if *paused {
                self.faults.waiting.fetch_add(1, Ordering::SeqCst);
                while *paused {
                    self.faults.resumed.wait(&mut paused);
                }
                self.faults.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.faults.op()?;
        if self.faults.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected sync fault"));
        }
        let mut f = self.data.lock();
        f.durable = f.data.clone();
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn file_size(&self) -> io::Result<u64> {
        Ok(self.data.lock().data.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.op()?;
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.data.lock().data.resize(len, 0);
        Ok(())
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.faults.op()?;
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut f = self.data.lock();
        if f.data.len() < len {
            f.data.resize(len, 0);
        }
        Ok(())
    }
    fn read_all(&self) -> io::Result<FileBytes> {
        Ok(FileBytes::Owned(self.data.lock().data.clone()))
    }
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
    fn direct(&self) -> bool {
        self.faults.direct.load(Ordering::SeqCst)
    }
    fn write_direct_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        crate::fs::check_direct(data, offset)?;
        self.write_all_at(data, offset)
    }
}

impl FileSystem for MemFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let mut dir = self.dir.lock();
        let data = match dir.live.get(path) {
            Some(d) => d.clone(),
            None => {
                self.faults.op()?;
                let d = Arc::new(Mutex::new(FileData::default()));
                dir.live.insert(path.to_path_buf(), d.clone());
                d
            }
        };
        Ok(Arc::new(MemFile {
            data,
            faults: self.faults.clone(),
        }))
    }
    fn list(&self, dir_path: &Path) -> io::Result<Vec<String>> {
        let dir = self.dir.lock();
        Ok(dir
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir_path))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from))
            .collect())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.faults.op()?;
        let mut dir = self.dir.lock();
        match dir.live.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.faults.op()?;
        let mut dir = self.dir.lock();
        let data = dir.live.remove(from).ok_or(io::ErrorKind::NotFound)?;
        dir.live.insert(to.to_path_buf(), data);
        Ok(())
    }
    fn sync_dir(&self, dir_path: &Path) -> io::Result<()> {
        self.faults.op()?;
        let mut dir = self.dir.lock();
        let in_dir = |p: &PathBuf| p.parent() == Some(dir_path);
        let keep: BTreeSet<PathBuf> = dir.durable.keys().filter(|p| !in_dir(p)).cloned().collect();
        let mut durable: BTreeMap<_, _> = dir
            .durable
            .iter()
            .filter(|(p, _)| keep.contains(*p))
            .map(|(p, f)| (p.clone(), f.clone()))
            .collect();
        for (p, f) in dir.live.iter().filter(|(p, _)| in_dir(p)) {
            durable.insert(p.clone(), f.clone());
        }
        dir.durable = durable;
        Ok(())
    }
}
