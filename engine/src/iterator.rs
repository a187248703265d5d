//! Iterators: per-source cursors over internal keys, a merging iterator, and the user-facing
//! [`EngineIterator`] that resolves versions at one snapshot, honours point and range
//! tombstones and the key bounds.

use std::ops::Bound;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::key::{self, ValueKind, KIND_SEEK, MAX_SEQ};
use crate::memtable::MemTable;
use crate::range_del::Fragments;
use crate::sstable::TableIter;
use crate::version::TableFile;

/// A cursor over internal keys moving in one fixed direction.
pub(crate) trait Source: Send {
    fn valid(&self) -> bool;
    fn key(&self) -> &[u8];
    fn value(&self) -> &[u8];
    /// Moves one entry in the cursor's direction.
    fn advance(&mut self) -> Result<()>;
}

/// Where a cursor starts: forward cursors at the first entry of user key >= `lower`,
/// reverse cursors at the last entry of user key < `upper`.
#[derive(Clone)]
pub(crate) struct Start {
    pub(crate) reverse: bool,
    pub(crate) lower: Option<Vec<u8>>,
    pub(crate) upper: Option<Vec<u8>>,
}

impl Start {
    /// Internal-key target for seek (forward) or seek_for_prev (reverse); None = from the end.
    fn target(&self) -> Option<Vec<u8>> {
        if self.reverse {
            // The smallest internal key of `upper`: everything before it has a smaller user key.
            self.upper
                .as_ref()
                .map(|u| key::encode(u, MAX_SEQ, KIND_SEEK))
        } else {
            self.lower
                .as_ref()
                .map(|l| key::encode(l, MAX_SEQ, KIND_SEEK))
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// A memtable cursor that copies entries out in growing chunks (no borrow of the skiplist
/// outlives a call).
pub(crate) struct MemSource {
    mem: Arc<MemTable>,
    cf: u32,
    reverse: bool,
    buf: Vec<(Vec<u8>, Vec<u8>)>,
    pos: usize,
    chunk: usize,
    exhausted: bool,
}

impl MemSource {
    pub(crate) fn new(mem: Arc<MemTable>, cf: u32, start: &Start) -> MemSource {
        let mut s = MemSource {
            mem,
            cf,
            reverse: start.reverse,
            buf: Vec::new(),
            pos: 0,
            chunk: 16,
            exhausted: false,
        };
        let target = start.target();
        let from = match &target {
            // Seek keys never equal a stored key, so inclusive vs exclusive does not matter.
            Some(t) => Bound::Included(t.as_slice()),
            None => Bound::Unbounded,
        };
        s.fill(from);
        s
    }

    fn fill(&mut self, from: Bound<&[u8]>) {
        let mut out = Vec::with_capacity(self.chunk);
        self.mem
            .scan(self.cf, from, self.reverse, self.chunk, &mut out);
        self.exhausted = out.len() < self.chunk;
        self.chunk = (self.chunk * 2).min(1024);
        self.buf = out;
        self.pos = 0;
    }
}

impl Source for MemSource {
    fn valid(&self) -> bool {
        self.pos < self.buf.len()
    }
    fn key(&self) -> &[u8] {
        &self.buf[self.pos].0
    }
    fn value(&self) -> &[u8] {
        &self.buf[self.pos].1
    }
    fn advance(&mut self) -> Result<()> {
        self.pos += 1;
        if self.pos >= self.buf.len() && !self.exhausted {
            if let Some((last, _)) = self.buf.last() {
                let last = last.clone();
                self.fill(Bound::Excluded(&last));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

/// A cursor over one SSTable.
pub(crate) struct TableSource {
    it: TableIter,
    reverse: bool,
}

impl TableSource {
    pub(crate) fn new(file: &Arc<TableFile>, start: &Start) -> Result<TableSource> {
        let mut it = TableIter::new(file.table.clone());
        position(&mut it, start)?;
        Ok(TableSource {
            it,
            reverse: start.reverse,
        })
    }
}

fn position(it: &mut TableIter, start: &Start) -> Result<()> {
    match (start.target(), start.reverse) {
        (Some(t), false) => it.seek(&t),
        (Some(t), true) => it.seek_for_prev(&t),
        (None, false) => it.seek_to_first(),
        (None, true) => it.seek_to_last(),
    }
}

impl Source for TableSource {
    fn valid(&self) -> bool {
        self.it.valid()
    }
    fn key(&self) -> &[u8] {
        self.it.key()
    }
    fn value(&self) -> &[u8] {
        self.it.value()
    }
    fn advance(&mut self) -> Result<()> {
        if self.reverse {
            self.it.prev()
        } else {
            self.it.next()
        }
    }
}

/// A cursor over one sorted level (L1+): its files one after another.
pub(crate) struct LevelSource {
    files: Vec<Arc<TableFile>>,
    /// Index of the file `it` reads; moves up (forward) or down (reverse).
    idx: usize,
    it: Option<TableIter>,
    reverse: bool,
}

impl LevelSource {
    pub(crate) fn new(files: Vec<Arc<TableFile>>, start: &Start) -> Result<LevelSource> {
        let mut s = LevelSource {
            files,
            idx: 0,
            it: None,
            reverse: start.reverse,
        };
        if s.files.is_empty() {
            return Ok(s);
        }
        if start.reverse {
            let n = match &start.upper {
                Some(u) => s
                    .files
                    .partition_point(|f| f.meta.smallest.as_slice() < u.as_slice()),
                None => s.files.len(),
            };
            if n == 0 {
                return Ok(s);
            }
            s.idx = n - 1;
        } else {
            s.idx = match &start.lower {
                Some(l) => s
                    .files
                    .partition_point(|f| f.meta.largest.as_slice() < l.as_slice()),
                None => 0,
            };
            if s.idx >= s.files.len() {
                return Ok(s);
            }
        }
        let mut it = TableIter::new(s.files[s.idx].table.clone());
        position(&mut it, start)?;
        s.it = Some(it);
        s.skip_exhausted()?;
        Ok(s)
    }

    /// Moves to the next file while the current one is exhausted.
    fn skip_exhausted(&mut self) -> Result<()> {
        while let Some(it) = &self.it {
            if it.valid() {
                return Ok(());
            }
            let next = if self.reverse {
                self.idx.checked_sub(1)
            } else {
                Some(self.idx + 1).filter(|i| *i < self.files.len())
            };
            let Some(next) = next else {
                self.it = None;
                return Ok(());
            };
            self.idx = next;
            let mut it = TableIter::new(self.files[next].table.clone());
            if self.reverse {
                it.seek_to_last()?;
            } else {
                it.seek_to_first()?;
            }
            self.it = Some(it);
        }
        Ok(())
    }
}

impl Source for LevelSource {
    fn valid(&self) -> bool {
        self.it.as_ref().is_some_and(|i| i.valid())
    }
    fn key(&self) -> &[u8] {
        self.it.as_ref().map_or(&[], |i| i.key())
    }
    fn value(&self) -> &[u8] {
        self.it.as_ref().map_or(&[], |i| i.value())
    }
    fn advance(&mut self) -> Result<()> {
        if let Some(it) = &mut self.it {
            if self.reverse {
                it.prev()?;
            } else {
                it.next()?;
            }
        }
        self.skip_exhausted()
    }
}

// ---------------------------------------------------------------------------------------------

/// Merges cursors that move in the same direction into one ordered stream. Sources are few
/// (memtables, L0 files, one per level), so a linear scan for the head is cheaper than a heap.
pub(crate) struct MergingIter {
    sources: Vec<Box<dyn Source>>,
    reverse: bool,
    current: Option<usize>,
}

impl MergingIter {
    pub(crate) fn new(sources: Vec<Box<dyn Source>>, reverse: bool) -> MergingIter {
        let mut m = MergingIter {
            sources,
            reverse,
            current: None,
        };
        m.find_head();
        m
    }

    fn find_head(&mut self) {
        let mut best: Option<usize> = None;
        for (i, s) in self.sources.iter().enumerate() {
            if !s.valid() {
                continue;
            }
            best = match best {
                None => Some(i),
                Some(b) => {
                    let ord = key::compare(s.key(), self.sources[b].key());
                    let better = if self.reverse {
                        ord == std::cmp::Ordering::Greater
                    } else {
                        ord == std::cmp::Ordering::Less
                    };
                    Some(if better { i } else { b })
                }
            };
        }
        self.current = best;
    }

    pub(crate) fn valid(&self) -> bool {
        self.current.is_some()
    }

    pub(crate) fn key(&self) -> &[u8] {
        self.current.map_or(&[], |i| self.sources[i].key())
    }

    pub(crate) fn value(&self) -> &[u8] {
        self.current.map_or(&[], |i| self.sources[i].value())
    }

    pub(crate) fn advance(&mut self) -> Result<()> {
        if let Some(i) = self.current {
            self.sources[i].advance()?;
        }
        self.find_head();
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

/// An iterator over one column family at one snapshot, yielding `(key, value)` pairs in key
/// order (or reverse order) within the bounds it was created with. It pins the memtables and
/// files it reads, so it keeps a consistent view however long it lives.
pub struct EngineIterator {
    merged: MergingIter,
    seq: u64,
    frags: Fragments,
    lower: Option<Vec<u8>>,
    upper: Option<Vec<u8>>,
    reverse: bool,
    last_key: Option<Vec<u8>>,
    done: bool,
}

impl EngineIterator {
    pub(crate) fn new(
        merged: MergingIter,
        seq: u64,
        frags: Fragments,
        start: Start,
    ) -> EngineIterator {
        EngineIterator {
            merged,
            seq,
            frags,
            lower: start.lower,
            upper: start.upper,
            reverse: start.reverse,
            last_key: None,
            done: false,
        }
    }

    fn corrupt_key(&self) -> Error {
        Error::corruption("<iterator>", 0, "internal key shorter than its trailer")
    }

    fn next_forward(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        while self.merged.valid() {
            let p = key::parse(self.merged.key()).ok_or_else(|| self.corrupt_key())?;
            if let Some(u) = &self.upper {
                if p.user_key >= u.as_slice() {
                    return Ok(None);
                }
            }
            let seen = self.last_key.as_deref() == Some(p.user_key);
            if p.seq > self.seq || seen {
                self.merged.advance()?;
                continue;
            }
            // The newest version of this key visible at the snapshot.
            self.last_key = Some(p.user_key.to_vec());
            let live = p.kind == ValueKind::Put as u8 && !self.frags.hides(p.user_key, p.seq);
            let item = live.then(|| (p.user_key.to_vec(), self.merged.value().to_vec()));
            self.merged.advance()?;
            if item.is_some() {
                return Ok(item);
            }
        }
        Ok(None)
    }

    fn next_reverse(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        while self.merged.valid() {
            let uk = key::user_key(self.merged.key()).to_vec();
            if let Some(l) = &self.lower {
                if uk.as_slice() < l.as_slice() {
                    return Ok(None);
                }
            }
            // Versions of one key arrive oldest first; keep the newest visible one.
            let mut best: Option<(u64, u8, Vec<u8>)> = None;
            while self.merged.valid() && key::user_key(self.merged.key()) == uk.as_slice() {
                let p = key::parse(self.merged.key()).ok_or_else(|| self.corrupt_key())?;
                if p.seq <= self.seq {
                    best = Some((p.seq, p.kind, self.merged.value().to_vec()));
                }
                self.merged.advance()?;
            }
            if let Some((seq, kind, value)) = best {
                if kind == ValueKind::Put as u8 && !self.frags.hides(&uk, seq) {
                    return Ok(Some((uk, value)));
                }
            }
        }
        Ok(None)
    }
}

impl Iterator for EngineIterator {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = if self.reverse {
            self.next_reverse()
        } else {
            self.next_forward()
        };
        match r {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
