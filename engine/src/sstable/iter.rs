//! Bidirectional iteration over a table.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::key::{self, ValueKind};

use super::block::{BlockRef, DecodedEntry};
use super::Table;

/// Iterates a table's point entries in internal-key order, in both directions.
///
/// Decodes one data block at a time (verifying its checksum) into reusable buffers. Values of
/// uncompressed blocks are read in place from the file. After an error the iterator is
/// invalid until the next seek.
pub struct TableIter {
    table: Arc<Table>,
    /// Index of the loaded block, if any.
    block: Option<usize>,
    keys: Vec<u8>,
    entries: Vec<DecodedEntry>,
    /// Decompressed block bytes, when the loaded block was compressed.
    owned: Vec<u8>,
    /// Offset of the loaded block in the file, when values are read in place.
    in_file: Option<usize>,
    cur: usize,
    valid: bool,
}

impl TableIter {
    /// An unpositioned (invalid) iterator over `table`.
    pub fn new(table: Arc<Table>) -> TableIter {
        TableIter {
            table,
            block: None,
            keys: Vec::new(),
            entries: Vec::new(),
            owned: Vec::new(),
            in_file: None,
            cur: 0,
            valid: false,
        }
    }

    /// Positions at the first entry with internal key `>= target`.
    pub fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.valid = false;
        let idx = self.table.find_block(target);
        if idx >= self.table.index_len() {
            return Ok(());
        }
        self.load(idx)?;
        self.cur = self.entries.partition_point(|e| {
            key::compare(&self.keys[e.key.0..e.key.1], target) == Ordering::Less
        });
        self.valid = true;
        self.skip_forward()
    }

    /// Positions at the last entry with internal key `<= target`.
    pub fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        self.valid = false;
        let idx = self.table.find_block(target);
        if idx >= self.table.index_len() {
            return self.seek_to_last();
        }
        self.load(idx)?;
        let p = self.entries.partition_point(|e| {
            key::compare(&self.keys[e.key.0..e.key.1], target) != Ordering::Greater
        });
        if p == 0 {
            return self.prev_block();
        }
        self.cur = p - 1;
        self.valid = true;
        Ok(())
    }

    /// Positions at the first entry.
    pub fn seek_to_first(&mut self) -> Result<()> {
        self.valid = false;
        if self.table.index_len() == 0 {
            return Ok(());
        }
        self.load(0)?;
        self.cur = 0;
        self.valid = true;
        self.skip_forward()
    }

    /// Positions at the last entry.
    pub fn seek_to_last(&mut self) -> Result<()> {
        self.valid = false;
        let n = self.table.index_len();
        if n == 0 {
            return Ok(());
        }
        self.load(n - 1)?;
        self.cur = self.entries.len().saturating_sub(1);
        self.valid = true;
        Ok(())
    }

    /// True if positioned at an entry.
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The current internal key (empty when invalid).
    pub fn key(&self) -> &[u8] {
        match self.entries.get(self.cur) {
            Some(e) if self.valid => &self.keys[e.key.0..e.key.1],
            _ => &[],
        }
    }

    /// The current value (empty when invalid).
    pub fn value(&self) -> &[u8] {
        let Some(e) = self.entries.get(self.cur).filter(|_| self.valid) else {
            return &[];
        };
        let (block, base) = match self.in_file {
            Some(base) => (self.table.file_bytes(), base),
            None => (self.owned.as_slice(), 0),
        };
        block
            .get(base + e.value.0..base + e.value.1)
            .unwrap_or_default()
    }

    /// Moves to the next entry; invalid after the last one.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<()> {
        if !self.valid {
            return Ok(());
        }
        self.cur += 1;
        self.skip_forward()
    }

    /// Moves to the previous entry; invalid before the first one.
    pub fn prev(&mut self) -> Result<()> {
        if !self.valid {
            return Ok(());
        }
        if self.cur > 0 {
            self.cur -= 1;
            return Ok(());
        }
        self.valid = false;
        self.prev_block()
    }

    /// If `cur` is past the loaded block, moves to the first entry of the next block.
    fn skip_forward(&mut self) -> Result<()> {
        if self.cur < self.entries.len() {
            return Ok(());
        }
        self.valid = false;
        let next = self.block.map_or(0, |b| b + 1);
        if next >= self.table.index_len() {
            return Ok(());
        }
        self.load(next)?;
        self.cur = 0;
        self.valid = true;
        Ok(())
    }

    /// Moves to the last entry of the block before the loaded one (invalid if none).
    fn prev_block(&mut self) -> Result<()> {
        self.valid = false;
        let Some(b) = self.block.filter(|&b| b > 0) else {
            return Ok(());
        };
        self.load(b - 1)?;
        self.cur = self.entries.len() - 1;
        self.valid = true;
        Ok(())
    }

    /// Loads and fully decodes data block `idx`; data blocks are never empty.
    fn load(&mut self, idx: usize) -> Result<()> {
        self.valid = false;
        self.block = None;
        let table = Arc::clone(&self.table);
        let Some(entry) = table.index_entry(idx) else {
            return Err(Error::corruption(
                table.path(),
                0,
                "index entry out of range",
            ));
        };
        let offset = entry.handle.offset;
        let corrupt = |reason: &str| Error::corruption(table.path(), offset, reason);
        let data = table.read_data_block(entry.handle)?;
        let blk = BlockRef::new(&data).ok_or_else(|| corrupt("malformed data block"))?;
        blk.decode_all(&mut self.keys, &mut self.entries)
            .ok_or_else(|| corrupt("malformed data block"))?;
        if self.entries.is_empty() {
            return Err(corrupt("empty data block"));
        }
        // Keys increase across blocks too: start after the previous block's last key.
        let mut prev: Option<&[u8]> = idx
            .checked_sub(1)
            .and_then(|i| table.index_entry(i))
            .map(|e| table.index_key(e));
        for e in &self.entries {
            let k = &self.keys[e.key.0..e.key.1];
            let Some(p) = key::parse(k) else {
                return Err(corrupt("internal key without trailer"));
            };
            if ValueKind::from_u8(p.kind).is_none() {
                return Err(corrupt("unknown value kind"));
            }
            if prev.is_some_and(|pk| key::compare(pk, k) != Ordering::Less) {
                return Err(corrupt("data block keys out of order"));
            }
            prev = Some(k);
        }
        // The block must hold exactly the keys the index promises: its last key.
        if prev != Some(table.index_key(entry)) {
            return Err(corrupt("data block does not match its index entry"));
        }
        match data {
            Cow::Borrowed(_) => {
                self.in_file = Some(offset as usize);
                self.owned.clear();
            }
            Cow::Owned(v) => {
                self.in_file = None;
                self.owned = v;
            }
        }
        self.block = Some(idx);
        Ok(())
    }
}
