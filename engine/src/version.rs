//! Versions: the immutable set of SSTables of every column family at one moment.
//!
//! A new version is made by applying a [`VersionEdit`] to the current one; readers hold an
//! `Arc<Version>` so the files they read stay alive. A file no version needs any more is
//! deleted when its last handle drops (see [`TableFile`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::manifest::{FileMeta, VersionEdit};
use crate::sstable::Table;

/// Name of SSTable number `n`.
pub(crate) fn table_name(n: u64) -> String {
    format!("{n:06}.sst")
}

/// Parses an SSTable file name.
pub(crate) fn parse_table_name(name: &str) -> Option<u64> {
    name.strip_suffix(".sst")?.parse().ok()
}

/// An open SSTable and its manifest record.
pub(crate) struct TableFile {
    pub(crate) meta: FileMeta,
    pub(crate) table: Arc<Table>,
    path: PathBuf,
    fs: Arc<dyn FileSystem>,
    /// Set once no future version will contain the file; it is removed on drop.
    obsolete: AtomicBool,
}

impl TableFile {
    pub(crate) fn open(
        fs: &Arc<dyn FileSystem>,
        dir: &std::path::Path,
        meta: FileMeta,
    ) -> Result<TableFile> {
        let path = dir.join(table_name(meta.number));
        let file = fs.open(&path)?;
        if file.bytes().len() as u64 != meta.size {
            return Err(Error::corruption(
                &path,
                file.bytes().len() as u64,
                format!(
                    "file is {} bytes, the manifest says {}",
                    file.bytes().len(),
                    meta.size
                ),
            ));
        }
        let table = Table::open(file, path.clone())?;
        Ok(TableFile {
            meta,
            table: Arc::new(table),
            path,
            fs: fs.clone(),
            obsolete: AtomicBool::new(false),
        })
    }

    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl AsRef<FileMeta> for Arc<TableFile> {
    fn as_ref(&self) -> &FileMeta {
        &self.meta
    }
}

impl Drop for TableFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            if let Err(e) = self.fs.remove(&self.path) {
                log::warn!(
                    "could not remove obsolete table {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

/// One column family's tree.
#[derive(Clone)]
pub(crate) struct CfTree {
    pub(crate) name: String,
    /// `levels[0]` is L0, newest file first; deeper levels are sorted by smallest key and do
    /// not overlap (adjacent files may share a boundary key through a range tombstone's end).
    pub(crate) levels: Vec<Vec<Arc<TableFile>>>,
    pub(crate) compact_pointers: Vec<Option<Vec<u8>>>,
}

impl CfTree {
    pub(crate) fn new(name: String, num_levels: usize) -> CfTree {
        CfTree {
            name,
            levels: vec![Vec::new(); num_levels],
            compact_pointers: vec![None; num_levels],
        }
    }

    fn sort_level(&mut self, level: usize) {
        if level == 0 {
            self.levels[0].sort_by(|a, b| {
                (b.meta.max_seq, b.meta.number).cmp(&(a.meta.max_seq, a.meta.number))
            });
        } else {
            self.levels[level].sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
        }
    }
}

/// The whole tree: every column family.
#[derive(Clone, Default)]
pub(crate) struct Version {
    pub(crate) cfs: BTreeMap<u32, CfTree>,
}

impl Version {
    /// Applies `edit`. `opened` holds the handles of the edit's new files (keyed by number);
    /// a new file missing from it, a deleted file that is not there, or a level out of range
    /// is a corruption of the manifest.
    pub(crate) fn apply(
        &self,
        edit: &VersionEdit,
        opened: &mut HashMap<u64, Arc<TableFile>>,
        num_levels: usize,
        manifest: &std::path::Path,
    ) -> Result<Version> {
        let mut v = self.clone();
        for (id, name) in &edit.add_cfs {
            v.cfs.insert(*id, CfTree::new(name.clone(), num_levels));
        }
        for id in &edit.drop_cfs {
            v.cfs.remove(id);
        }
        let bad = |what: String| Error::corruption(manifest, 0, what);
        let mut touched: Vec<(u32, usize)> = Vec::new();
        for (cf, level, number) in &edit.deleted_files {
            let Some(tree) = v.cfs.get_mut(cf) else {
                continue; // the column family was dropped
            };
            let files = tree
                .levels
                .get_mut(*level as usize)
                .ok_or_else(|| bad(format!("level {level} out of range")))?;
            let before = files.len();
            files.retain(|f| f.meta.number != *number);
            if files.len() == before {
                return Err(bad(format!(
                    "deleted file {number} is not in cf {cf} L{level}"
                )));
            }
        }
        for (cf, level, meta) in &edit.new_files {
            let Some(tree) = v.cfs.get_mut(cf) else {
                return Err(bad(format!(
                    "file {} added to unknown cf {cf}",
                    meta.number
                )));
            };
            let handle = opened
                .remove(&meta.number)
                .ok_or_else(|| bad(format!("file {} was not opened", meta.number)))?;
            tree.levels
                .get_mut(*level as usize)
                .ok_or_else(|| bad(format!("level {level} out of range")))?
                .push(handle);
            touched.push((*cf, *level as usize));
        }
        for (cf, level) in touched {
            if let Some(t) = v.cfs.get_mut(&cf) {
                t.sort_level(level);
            }
        }
        for (cf, level, key) in &edit.compact_pointers {
            if let Some(p) = v
                .cfs
                .get_mut(cf)
                .and_then(|t| t.compact_pointers.get_mut(*level as usize))
            {
                *p = Some(key.clone());
            }
        }
        Ok(v)
    }

    /// Every live file number.
    pub(crate) fn live_files(&self) -> Vec<u64> {
        self.cfs
            .values()
            .flat_map(|t| t.levels.iter().flatten().map(|f| f.meta.number))
            .collect()
    }

    /// An edit that recreates this version from nothing (the start of a new manifest).
    pub(crate) fn snapshot_edit(&self) -> VersionEdit {
        let mut e = VersionEdit::default();
        for (id, tree) in &self.cfs {
            e.add_cfs.push((*id, tree.name.clone()));
            for (level, files) in tree.levels.iter().enumerate() {
                for f in files {
                    e.new_files.push((*id, level as u32, f.meta.clone()));
                }
            }
            for (level, p) in tree.compact_pointers.iter().enumerate() {
                if let Some(p) = p {
                    e.compact_pointers.push((*id, level as u32, p.clone()));
                }
            }
        }
        e
    }
}

/// Folds manifest edits into metadata only (no file is opened): `cf -> (name, levels)`.
/// One recovered column family: name, files per level (by number), compaction pointers.
pub(crate) type RecoveredCf = (String, Vec<BTreeMap<u64, FileMeta>>, Vec<Option<Vec<u8>>>);

#[derive(Default)]
pub(crate) struct Recovered {
    pub(crate) cfs: BTreeMap<u32, RecoveredCf>,
    pub(crate) next_file_number: u64,
    pub(crate) flushed_seq: u64,
    pub(crate) next_cf_id: u32,
}

impl Recovered {
    pub(crate) fn apply(
        &mut self,
        e: &VersionEdit,
        num_levels: usize,
        manifest: &std::path::Path,
    ) -> Result<()> {
        let bad = |what: String| Error::corruption(manifest, 0, what);
        for (id, name) in &e.add_cfs {
            self.cfs.insert(
                *id,
                (
                    name.clone(),
                    vec![BTreeMap::new(); num_levels],
                    vec![None; num_levels],
                ),
            );
        }
        for id in &e.drop_cfs {
            self.cfs.remove(id);
        }
        for (cf, level, number) in &e.deleted_files {
            if let Some((_, levels, _)) = self.cfs.get_mut(cf) {
                levels
                    .get_mut(*level as usize)
                    .ok_or_else(|| bad(format!("level {level} out of range")))?
                    .remove(number);
            }
        }
        for (cf, level, meta) in &e.new_files {
            let (_, levels, _) = self
                .cfs
                .get_mut(cf)
                .ok_or_else(|| bad(format!("file {} added to unknown cf {cf}", meta.number)))?;
            levels
                .get_mut(*level as usize)
                .ok_or_else(|| bad(format!("level {level} out of range")))?
                .insert(meta.number, meta.clone());
        }
        for (cf, level, key) in &e.compact_pointers {
            if let Some(p) = self
                .cfs
                .get_mut(cf)
                .and_then(|(_, _, p)| p.get_mut(*level as usize))
            {
                *p = Some(key.clone());
            }
        }
        if let Some(n) = e.next_file_number {
            self.next_file_number = self.next_file_number.max(n);
        }
        if let Some(s) = e.flushed_seq {
            self.flushed_seq = self.flushed_seq.max(s);
        }
        if let Some(n) = e.next_cf_id {
            self.next_cf_id = self.next_cf_id.max(n);
        }
        Ok(())
    }

    /// Opens every file and builds the version.
    pub(crate) fn open(
        &self,
        fs: &Arc<dyn FileSystem>,
        dir: &std::path::Path,
        num_levels: usize,
    ) -> Result<Version> {
        let mut v = Version::default();
        for (id, (name, levels, pointers)) in &self.cfs {
            let mut tree = CfTree::new(name.clone(), num_levels);
            for (level, files) in levels.iter().enumerate() {
                for meta in files.values() {
                    tree.levels[level].push(Arc::new(TableFile::open(fs, dir, meta.clone())?));
                }
                tree.sort_level(level);
            }
            tree.compact_pointers = pointers.clone();
            v.cfs.insert(*id, tree);
        }
        Ok(v)
    }
}
