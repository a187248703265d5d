//! Writing sorted runs: the garbage-collection rules shared by flush and compaction, and the
//! writer that cuts a stream of internal keys into SSTables.
//!
//! GC rules. Live snapshots split the sequence space into stripes (a snapshot at `s` sees
//! every sequence `<= s`). Within one stripe only the newest version of a key is observable,
//! so older versions in the same stripe are dropped, as are versions hidden by a range
//! tombstone of the same stripe. A point tombstone, and a range tombstone, is dropped only when
//! the output is the bottom of the tree for its key range (nothing older can lie beneath it)
//! and every live snapshot sees it (it is in the lowest stripe).

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::key::{self, ValueKind};
use crate::manifest::FileMeta;
use crate::range_del::{Fragments, RangeTombstone};
use crate::sstable::{TableBuilder, TableOptions, TableProperties};
use crate::version::table_name;

/// Decides which versions survive a flush or compaction.
pub(crate) struct Gc {
    snapshots: Vec<u64>,
    bottommost: bool,
    /// The inputs' range tombstones, fragmented separately for each stripe.
    frags: Vec<Fragments>,
    last_key: Option<Vec<u8>>,
    last_stripe: usize,
}

impl Gc {
    /// `snapshots` sorted ascending; `tombstones` are the range tombstones of the inputs.
    pub(crate) fn new(snapshots: Vec<u64>, bottommost: bool, tombstones: &[RangeTombstone]) -> Gc {
        let stripe = |seq: u64| snapshots.partition_point(|s| *s < seq);
        let frags = (0..=snapshots.len())
            .map(|i| Fragments::new(tombstones.iter().filter(|t| stripe(t.seq) == i), u64::MAX))
            .collect();
        Gc {
            snapshots,
            bottommost,
            frags,
            last_key: None,
            last_stripe: 0,
        }
    }

    fn stripe(&self, seq: u64) -> usize {
        self.snapshots.partition_point(|s| *s < seq)
    }

    /// Whether the entry under `ikey` (entries come in internal-key order) is kept.
    pub(crate) fn keep(&mut self, ikey: &[u8]) -> Result<bool> {
        let p = key::parse(ikey)
            .ok_or_else(|| Error::corruption("<compaction>", 0, "internal key too short"))?;
        let stripe = self.stripe(p.seq);
        if self.last_key.as_deref() == Some(p.user_key) && stripe == self.last_stripe {
            return Ok(false); // shadowed by a newer version nobody can tell apart from it
        }
        if self.last_key.as_deref() != Some(p.user_key) {
            self.last_key = Some(p.user_key.to_vec());
        }
        self.last_stripe = stripe;
        if self.frags[stripe].hides(p.user_key, p.seq) {
            return Ok(false); // hidden by a range tombstone every reader of this stripe sees
        }
        if p.kind == ValueKind::Delete as u8 && self.bottommost && stripe == 0 {
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether a range tombstone of the inputs is kept.
    pub(crate) fn keep_tombstone(&self, t: &RangeTombstone) -> bool {
        !(self.bottommost && self.stripe(t.seq) == 0) && t.start < t.end
    }
}

/// Cuts a stream of internal keys into SSTables of about `target_size` bytes, splitting only
/// between user keys.
pub(crate) struct OutputWriter<'a> {
    fs: &'a Arc<dyn FileSystem>,
    dir: &'a Path,
    opts: TableOptions,
    target_size: Option<u64>,
    builder: Option<(u64, TableBuilder)>,
    last_user_key: Vec<u8>,
    want_split: bool,
    outputs: Vec<FileMeta>,
    bytes_written: u64,
}

impl<'a> OutputWriter<'a> {
    /// `target_size = None` writes a single file.
    pub(crate) fn new(
        fs: &'a Arc<dyn FileSystem>,
        dir: &'a Path,
        opts: TableOptions,
        target_size: Option<u64>,
    ) -> Self {
        OutputWriter {
            fs,
            dir,
            opts,
            target_size,
            builder: None,
            last_user_key: Vec::new(),
            want_split: false,
            outputs: Vec::new(),
            bytes_written: 0,
        }
    }

    fn start(&mut self, number: u64) -> Result<()> {
        let path = self.dir.join(table_name(number));
        let file = self.fs.create(&path)?;
        self.builder = Some((number, TableBuilder::new(file, path, self.opts.clone())));
        Ok(())
    }

    fn finish_current(&mut self) -> Result<()> {
        if let Some((number, b)) = self.builder.take() {
            let props = b.finish()?;
            self.bytes_written += props.file_size;
            self.outputs.push(meta_from(number, &props));
        }
        Ok(())
    }

    /// Adds one entry; `alloc` hands out file numbers for new outputs.
    pub(crate) fn add(
        &mut self,
        ikey: &[u8],
        value: &[u8],
        alloc: &mut dyn FnMut() -> u64,
    ) -> Result<()> {
        let uk = key::user_key(ikey);
        if self.want_split && uk != self.last_user_key.as_slice() {
            self.finish_current()?;
            self.want_split = false;
        }
        if self.builder.is_none() {
            self.start(alloc())?;
        }
        if let Some((_, b)) = &mut self.builder {
            b.add(ikey, value)?;
            if let Some(t) = self.target_size {
                if b.estimated_size() >= t {
                    self.want_split = true;
                }
            }
        }
        self.last_user_key.clear();
        self.last_user_key.extend_from_slice(uk);
        Ok(())
    }

    /// Adds the range tombstones to the last output (creating one if needed) and finishes
    /// every file (each is fsynced). Returns the outputs and the bytes written.
    pub(crate) fn finish(
        mut self,
        tombstones: Vec<RangeTombstone>,
        alloc: &mut dyn FnMut() -> u64,
    ) -> Result<(Vec<FileMeta>, u64)> {
        if !tombstones.is_empty() {
            if self.builder.is_none() {
                self.start(alloc())?;
            }
            if let Some((_, b)) = &mut self.builder {
                for t in tombstones {
                    b.add_range_tombstone(t);
                }
            }
        }
        self.finish_current()?;
        Ok((self.outputs, self.bytes_written))
    }
}

fn meta_from(number: u64, p: &TableProperties) -> FileMeta {
    FileMeta {
        number,
        size: p.file_size,
        smallest: p.smallest_user_key.clone(),
        largest: p.largest_user_key.clone(),
        min_seq: p.min_seq,
        max_seq: p.max_seq,
        num_entries: p.num_entries,
        num_deletions: p.num_deletions + p.num_range_deletions,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn k(uk: &str, seq: u64, kind: ValueKind) -> Vec<u8> {
        key::encode(uk.as_bytes(), seq, kind as u8)
    }

    #[test]
    fn without_snapshots_only_the_newest_version_survives() {
        let mut gc = Gc::new(vec![], false, &[]);
        assert!(gc.keep(&k("a", 9, ValueKind::Put)).unwrap());
        assert!(!gc.keep(&k("a", 5, ValueKind::Put)).unwrap());
        assert!(
            gc.keep(&k("b", 7, ValueKind::Delete)).unwrap(),
            "not bottommost"
        );
        assert!(!gc.keep(&k("b", 3, ValueKind::Put)).unwrap());
    }

    #[test]
    fn snapshots_keep_the_versions_they_see() {
        let mut gc = Gc::new(vec![6], true, &[]);
        assert!(
            gc.keep(&k("a", 9, ValueKind::Delete)).unwrap(),
            "above the snapshot"
        );
        assert!(
            gc.keep(&k("a", 5, ValueKind::Put)).unwrap(),
            "the snapshot reads it"
        );
        assert!(!gc.keep(&k("a", 4, ValueKind::Put)).unwrap());
        assert!(
            !gc.keep(&k("b", 3, ValueKind::Delete)).unwrap(),
            "bottom, seen by all"
        );
    }

    #[test]
    fn range_tombstones_hide_older_versions_in_their_stripe() {
        let t = RangeTombstone {
            start: b"a".to_vec(),
            end: b"c".to_vec(),
            seq: 10,
        };
        let mut gc = Gc::new(vec![], false, std::slice::from_ref(&t));
        assert!(gc.keep(&k("a", 11, ValueKind::Put)).unwrap());
        assert!(!gc.keep(&k("b", 5, ValueKind::Put)).unwrap());
        assert!(gc.keep(&k("c", 5, ValueKind::Put)).unwrap());
        assert!(gc.keep_tombstone(&t));
        let mut gc = Gc::new(vec![7], true, std::slice::from_ref(&t));
        assert!(
            gc.keep(&k("b", 5, ValueKind::Put)).unwrap(),
            "snapshot 7 still reads b@5"
        );
        assert!(
            gc.keep_tombstone(&t),
            "snapshot 7 does not see the tombstone yet"
        );
        assert!(!Gc::new(vec![], true, &[]).keep_tombstone(&t));
    }
}
