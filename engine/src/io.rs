//! The one seam between the engine and the disk.
//!
//! Every byte the engine reads or writes goes through [`FileSystem`]. [`RealFs`] is the
//! production implementation (buffered appends, `fdatasync`, files read through `memmap2`);
//! [`FaultFs`] is an in-memory file system for tests that injects errors and simulates a
//! crash: [`FaultFs::crash`] keeps only what was fsynced (file contents up to the last
//! `sync`, directory entries as of the last `sync_dir`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// A file being written: append-only, durable after [`WritableFile::sync`].
pub trait WritableFile: Send {
    /// Appends `data` at the end of the file. Not durable until `sync` returns.
    fn append(&mut self, data: &[u8]) -> Result<()>;
    /// Makes everything appended so far durable (`fdatasync`).
    fn sync(&mut self) -> Result<()>;
    /// Bytes appended so far.
    fn len(&self) -> u64;
    /// True if nothing was appended.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An immutable file opened for reading; its bytes never change while it is open.
pub trait ReadableFile: Send + Sync {
    /// The whole contents of the file.
    fn bytes(&self) -> &[u8];
}

/// All file-system operations the engine uses.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> Result<()>;
    /// Creates `path` (truncating an existing file) for appending.
    fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>>;
    /// Opens `path`, which must not change while open, for reading.
    fn open(&self, path: &Path) -> Result<Arc<dyn ReadableFile>>;
    /// Reads the whole of `path`.
    fn read_all(&self, path: &Path) -> Result<Vec<u8>> {
        Ok(self.open(path)?.bytes().to_vec())
    }
    /// Atomically renames `from` to `to`, replacing `to`. Durable after `sync_dir`.
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Removes a file. Durable after `sync_dir`.
    fn remove(&self, path: &Path) -> Result<()>;
    /// Names of the files in `dir`.
    fn list(&self, dir: &Path) -> Result<Vec<String>>;
    /// True if `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> Result<()>;
    /// Takes an exclusive lock on `path` (created if missing) held until the returned guard
    /// drops; fails if another process or engine holds it.
    fn lock(&self, path: &Path) -> Result<Box<dyn Send + Sync>>;
}

// ---------------------------------------------------------------------------------------------
// Real files.

/// The production file system: std files, `fdatasync`, reads through `memmap2`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealWritable {
    path: PathBuf,
    file: BufWriter<File>,
    len: u64,
}

impl WritableFile for RealWritable {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))?;
        self.file
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io(&self.path, e))
    }

    fn len(&self) -> u64 {
        self.len
    }
}

enum RealReadable {
    Mapped(memmap2::Mmap),
    Empty,
}

impl ReadableFile for RealReadable {
    fn bytes(&self) -> &[u8] {
        match self {
            RealReadable::Mapped(m) => m,
            RealReadable::Empty => &[],
        }
    }
}

impl FileSystem for RealFs {
    fn create_dir_all(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
    }

    fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Box::new(RealWritable {
            path: path.to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, file),
            len: 0,
        }))
    }

    fn open(&self, path: &Path) -> Result<Arc<dyn ReadableFile>> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(Arc::new(RealReadable::Empty));
        }
        // SAFETY: the engine only maps files it has finished writing and synced (SSTables,
        // sealed manifests); it never writes to or truncates a file while a map of it is
        // alive, and files are removed only after every reader dropped its map. Another
        // process modifying our data directory is outside the contract (the directory is
        // locked by `FileSystem::lock`).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Arc::new(RealReadable::Mapped(map)))
    }

    fn read_all(&self, path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::io(path, e))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        std::fs::rename(from, to).map_err(|e| Error::io(from, e))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))
    }

    fn lock(&self, path: &Path) -> Result<Box<dyn Send + Sync>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::io(
                path,
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "data directory is locked by another engine",
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fault-injecting in-memory file system.

#[derive(Default)]
struct MemFile {
    data: Vec<u8>,
    synced: usize,
}

#[derive(Default)]
struct FaultState {
    files: HashMap<u64, MemFile>,
    /// The namespace as the running process sees it.
    names: BTreeMap<PathBuf, u64>,
    /// The namespace that would survive a crash.
    durable: BTreeMap<PathBuf, u64>,
    dirs: Vec<PathBuf>,
    next_inode: u64,
    /// Mutating operations performed so far.
    ops: u64,
    /// Mutating operations allowed before every further one fails.
    fail_after: Option<u64>,
    /// Every `sync` fails while set.
    fail_syncs: bool,
    /// Every `append` fails while set.
    fail_writes: bool,
    locks: Vec<PathBuf>,
}

/// An in-memory file system that injects faults and simulates crashes.
///
/// Contents written by [`WritableFile::append`] survive [`FaultFs::crash`] only up to the last
/// [`WritableFile::sync`]; creations, renames and removals only once their directory was
/// synced. After `crash` the old instance is dead (every call fails), so threads of an engine
/// that "lost power" cannot touch the recovered state.
#[derive(Clone)]
pub struct FaultFs {
    state: Arc<Mutex<FaultState>>,
    dead: Arc<AtomicBool>,
}

impl fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultFs")
    }
}

impl Default for FaultFs {
    fn default() -> Self {
        Self::new()
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

impl FaultFs {
    /// An empty file system.
    pub fn new() -> FaultFs {
        FaultFs {
            state: Arc::new(Mutex::new(FaultState::default())),
            dead: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Lets `n` more mutating operations (create, append, sync, rename, remove, sync_dir)
    /// succeed, then fails every one after them. `None` removes the limit.
    pub fn fail_after(&self, n: Option<u64>) {
        let mut s = self.state.lock();
        s.fail_after = n.map(|n| s.ops + n);
    }

    /// Makes every `sync` fail (or succeed again).
    pub fn fail_syncs(&self, on: bool) {
        self.state.lock().fail_syncs = on;
    }

    /// Makes every `append` fail (or succeed again).
    pub fn fail_writes(&self, on: bool) {
        self.state.lock().fail_writes = on;
    }

    /// Mutating operations performed so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Simulates a power loss: returns a new file system holding only what was durable, and
    /// kills this one (every later call on it fails).
    pub fn crash(&self) -> FaultFs {
        self.dead.store(true, Ordering::SeqCst);
        let s = self.state.lock();
        let mut files = HashMap::new();
        for inode in s.durable.values() {
            if let Some(f) = s.files.get(inode) {
                let data = f.data[..f.synced].to_vec();
                let synced = data.len();
                files.insert(*inode, MemFile { data, synced });
            }
        }
        let state = FaultState {
            files,
            names: s.durable.clone(),
            durable: s.durable.clone(),
            dirs: s.dirs.clone(),
            next_inode: s.next_inode,
            ..FaultState::default()
        };
        FaultFs {
            state: Arc::new(Mutex::new(state)),
            dead: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Overwrites byte `offset` of `path` with `byte` (for corruption tests).
    pub fn poke(&self, path: &Path, offset: usize, byte: u8) -> bool {
        let mut s = self.state.lock();
        let Some(inode) = s.names.get(path).copied() else {
            return false;
        };
        match s.files.get_mut(&inode) {
            Some(f) if offset < f.data.len() => {
                f.data[offset] = byte;
                true
            }
            _ => false,
        }
    }

    /// Truncates `path` to `len` bytes (for corruption tests).
    pub fn truncate(&self, path: &Path, len: usize) -> bool {
        let mut s = self.state.lock();
        let Some(inode) = s.names.get(path).copied() else {
            return false;
        };
        match s.files.get_mut(&inode) {
            Some(f) => {
                f.data.truncate(len);
                f.synced = f.synced.min(len);
                true
            }
            None => false,
        }
    }

    /// Byte `offset` of `path` (0 if absent), for corruption tests.
    pub fn state_byte(&self, path: &Path, offset: usize) -> u8 {
        let s = self.state.lock();
        s.names
            .get(path)
            .and_then(|i| s.files.get(i))
            .and_then(|f| f.data.get(offset).copied())
            .unwrap_or(0)
    }

    /// Size of `path`, if it exists.
    pub fn file_len(&self, path: &Path) -> Option<usize> {
        let s = self.state.lock();
        let inode = s.names.get(path)?;
        s.files.get(inode).map(|f| f.data.len())
    }

    fn check_alive(&self, path: &Path) -> Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Error::io(path, injected("file system crashed")));
        }
        Ok(())
    }

    /// Counts one mutating operation; fails it if the budget is spent.
    fn mutate(&self, s: &mut FaultState, path: &Path) -> Result<()> {
        self.check_alive(path)?;
        s.ops += 1;
        if let Some(limit) = s.fail_after {
            if s.ops > limit {
                return Err(Error::io(path, injected("operation budget exhausted")));
            }
        }
        Ok(())
    }
}

struct FaultWritable {
    fs: FaultFs,
    path: PathBuf,
    inode: u64,
    len: u64,
}

impl WritableFile for FaultWritable {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        let mut s = self.fs.state.lock();
        self.fs.mutate(&mut s, &self.path)?;
        if s.fail_writes {
            return Err(Error::io(&self.path, injected("write")));
        }
        let f = s.files.entry(self.inode).or_default();
        f.data.extend_from_slice(data);
        self.len += data.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        let mut s = self.fs.state.lock();
        self.fs.mutate(&mut s, &self.path)?;
        if s.fail_syncs {
            return Err(Error::io(&self.path, injected("fsync")));
        }
        let f = s.files.entry(self.inode).or_default();
        f.synced = f.data.len();
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }
}

struct FaultReadable(Vec<u8>);

impl ReadableFile for FaultReadable {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

struct FaultLock {
    fs: FaultFs,
    path: PathBuf,
}

impl Drop for FaultLock {
    fn drop(&mut self) {
        self.fs.state.lock().locks.retain(|p| p != &self.path);
    }
}

fn not_found(path: &Path) -> Error {
    Error::io(path, io::Error::from(io::ErrorKind::NotFound))
}

impl FileSystem for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> Result<()> {
        self.check_alive(dir)?;
        let mut s = self.state.lock();
        if !s.dirs.iter().any(|d| d == dir) {
            s.dirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let mut s = self.state.lock();
        self.mutate(&mut s, path)?;
        let inode = s.next_inode;
        s.next_inode += 1;
        s.files.insert(inode, MemFile::default());
        s.names.insert(path.to_path_buf(), inode);
        Ok(Box::new(FaultWritable {
            fs: self.clone(),
            path: path.to_path_buf(),
            inode,
            len: 0,
        }))
    }

    fn open(&self, path: &Path) -> Result<Arc<dyn ReadableFile>> {
        self.check_alive(path)?;
        let s = self.state.lock();
        let inode = s.names.get(path).ok_or_else(|| not_found(path))?;
        let data = s
            .files
            .get(inode)
            .map(|f| f.data.clone())
            .unwrap_or_default();
        Ok(Arc::new(FaultReadable(data)))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let mut s = self.state.lock();
        self.mutate(&mut s, from)?;
        let inode = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<()> {
        let mut s = self.state.lock();
        self.mutate(&mut s, path)?;
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        self.check_alive(dir)?;
        let s = self.state.lock();
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.state.lock();
        s.names.contains_key(path) || s.dirs.iter().any(|d| d == path)
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        let mut s = self.state.lock();
        self.mutate(&mut s, dir)?;
        if s.fail_syncs {
            return Err(Error::io(dir, injected("directory fsync")));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable.retain(|p, _| !in_dir(p));
        let current: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable.extend(current);
        Ok(())
    }

    fn lock(&self, path: &Path) -> Result<Box<dyn Send + Sync>> {
        self.check_alive(path)?;
        let mut s = self.state.lock();
        if s.locks.iter().any(|p| p == path) {
            return Err(Error::io(
                path,
                io::Error::new(io::ErrorKind::WouldBlock, "already locked"),
            ));
        }
        s.locks.push(path.to_path_buf());
        Ok(Box::new(FaultLock {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_state() {
        let fs = FaultFs::new();
        let dir = Path::new("/db");
        fs.create_dir_all(dir).unwrap();
        let mut a = fs.create(&dir.join("a")).unwrap();
        a.append(b"hello").unwrap();
        a.sync().unwrap();
        a.append(b" world").unwrap();
        fs.sync_dir(dir).unwrap();
        let mut b = fs.create(&dir.join("b")).unwrap();
        b.append(b"lost").unwrap();
        b.sync().unwrap();
        let fs2 = fs.crash();
        assert_eq!(fs2.read_all(&dir.join("a")).unwrap(), b"hello");
        assert!(
            !fs2.exists(&dir.join("b")),
            "b's directory entry was never synced"
        );
        assert!(a.append(b"x").is_err(), "the crashed fs is dead");
    }

    #[test]
    fn fail_after_budget() {
        let fs = FaultFs::new();
        fs.fail_after(Some(2));
        let mut f = fs.create(Path::new("/x")).unwrap();
        f.append(b"1").unwrap();
        assert!(f.append(b"2").is_err());
        assert_eq!(fs.ops(), 3);
    }
}
