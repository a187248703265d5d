//! Reading tables: open, bloom check and point lookups.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::ReadableFile;
use crate::key::{self, ValueKind, MAX_SEQ};
use crate::range_del::RangeTombstone;

use super::block::{BlockRef, DecodedEntry};
use super::bloom::{self, Bloom};
use super::format::{
    decode_properties, decode_range_dels, read_block, BlockHandle, Footer, FOOTER_LEN,
};
use super::TableProperties;

/// A [`ReadableFile`] over bytes in memory (for tests and fuzzing).
#[derive(Debug, Clone, Default)]
pub struct BytesFile(pub Vec<u8>);

impl ReadableFile for BytesFile {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// One index entry: the last key of a data block and the block's location.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexEntry {
    key: (usize, usize),
    pub(crate) handle: BlockHandle,
}

/// An open table. Cheap to share behind an `Arc`; every read verifies block checksums.
pub struct Table {
    file: Arc<dyn ReadableFile>,
    path: PathBuf,
    props: TableProperties,
    tombstones: Vec<RangeTombstone>,
    filter: Bloom,
    index_keys: Vec<u8>,
    index: Vec<IndexEntry>,
    /// End of the data region (start of the filter block).
    data_end: usize,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("props", &self.props)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Key scratch buffer for point lookups (avoids an allocation per `get`).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Orders internal key `ikey` against the target `(user_key, trailer)` like
/// [`key::compare`].
#[inline]
pub(crate) fn cmp_target(ikey: &[u8], user_key: &[u8], trailer: u64) -> Ordering {
    match key::user_key(ikey).cmp(user_key) {
        Ordering::Equal => {
            let t = key::parse(ikey).map_or(0, |p| key::pack_trailer(p.seq, p.kind));
            trailer.cmp(&t)
        }
        o => o,
    }
}

impl Table {
    /// Opens a table: verifies the footer and the checksums of the index, filter,
    /// properties and range-tombstone blocks, and decodes them.
    pub fn open(file: Arc<dyn ReadableFile>, path: PathBuf) -> Result<Table> {
        let bytes = file.bytes();
        let footer = Footer::decode(bytes, &path)?;
        let meta_limit = bytes.len() - FOOTER_LEN;
        let corrupt = |h: BlockHandle, what: &str| {
            Error::corruption(&path, h.offset, format!("malformed {what} block"))
        };

        let b = read_block(bytes, meta_limit, footer.filter, &path)?;
        let filter = Bloom::decode(&b).ok_or_else(|| corrupt(footer.filter, "filter"))?;
        let b = read_block(bytes, meta_limit, footer.range_del, &path)?;
        let tombstones =
            decode_range_dels(&b).ok_or_else(|| corrupt(footer.range_del, "range-tombstone"))?;
        let b = read_block(bytes, meta_limit, footer.properties, &path)?;
        let mut props =
            decode_properties(&b).ok_or_else(|| corrupt(footer.properties, "properties"))?;
        props.file_size = bytes.len() as u64;

        let b = read_block(bytes, meta_limit, footer.index, &path)?;
        let blk = BlockRef::new(&b).ok_or_else(|| corrupt(footer.index, "index"))?;
        let mut index_keys = Vec::new();
        let mut raw: Vec<DecodedEntry> = Vec::new();
        blk.decode_all(&mut index_keys, &mut raw)
            .ok_or_else(|| corrupt(footer.index, "index"))?;
        // Data blocks live before the first meta block.
        let data_end = [
            footer.filter,
            footer.range_del,
            footer.properties,
            footer.index,
        ]
        .iter()
        .map(|h| h.offset)
        .min()
        .unwrap_or(0) as usize;
        let mut index = Vec::with_capacity(raw.len());
        for e in &raw {
            let handle = BlockHandle::decode(&b[e.value.0..e.value.1])
                .ok_or_else(|| corrupt(footer.index, "index"))?;
            let key = &index_keys[e.key.0..e.key.1];
            if key.len() < key::TRAILER_LEN
                || index.last().is_some_and(|p: &IndexEntry| {
                    key::compare(&index_keys[p.key.0..p.key.1], key) != Ordering::Less
                })
            {
                return Err(corrupt(footer.index, "index"));
            }
            index.push(IndexEntry { key: e.key, handle });
        }
        Ok(Table {
            file,
            path,
            props,
            tombstones,
            filter,
            index_keys,
            index,
            data_end,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The table's properties (`file_size` is the file's length).
    pub fn properties(&self) -> &TableProperties {
        &self.props
    }

    /// The table's range tombstones.
    pub fn range_tombstones(&self) -> &[RangeTombstone] {
        &self.tombstones
    }

    /// Bloom check on a user key: false only if the table certainly has no point entry for
    /// it (always true when the table has no filter).
    pub fn may_contain(&self, user_key: &[u8]) -> bool {
        self.filter.may_contain_hash(bloom::hash64(user_key))
    }

    /// The newest point entry for `user_key` with sequence `<= seq`, as
    /// `(seq, kind, value)`; `None` if the table has none. Range tombstones are not
    /// applied (see [`Table::range_tombstones`]).
    pub fn get(&self, user_key: &[u8], seq: u64) -> Result<Option<(u64, u8, Vec<u8>)>> {
        self.get_hashed(user_key, bloom::hash64(user_key), seq)
    }

    /// [`Table::get`] with `hash64(user_key)` computed by the caller (once for every table
    /// a point read looks at).
    pub fn get_hashed(
        &self,
        user_key: &[u8],
        hash: u64,
        seq: u64,
    ) -> Result<Option<(u64, u8, Vec<u8>)>> {
        if !self.filter.may_contain_hash(hash) {
            return Ok(None);
        }
        let trailer = key::pack_trailer(seq.min(MAX_SEQ), key::KIND_SEEK);
        let idx = self.index.partition_point(|e| {
            cmp_target(self.index_key(e), user_key, trailer) == Ordering::Less
        });
        let Some(entry) = self.index.get(idx) else {
            return Ok(None);
        };
        let block = self.read_data_block(entry.handle)?;
        let corrupt = || Error::corruption(&self.path, entry.handle.offset, "malformed data block");
        let blk = BlockRef::new(&block).ok_or_else(corrupt)?;
        SCRATCH.with(|s| {
            let mut scratch = s.borrow_mut();
            let found = blk
                .seek(|k| cmp_target(k, user_key, trailer), &mut scratch)
                .ok_or_else(corrupt)?;
            let Some(value) = found else {
                return Ok(None);
            };
            let p = key::parse(&scratch).ok_or_else(corrupt)?;
            if ValueKind::from_u8(p.kind).is_none() {
                return Err(Error::corruption(
                    &self.path,
                    entry.handle.offset,
                    format!("unknown value kind {}", p.kind),
                ));
            }
            if p.user_key != user_key {
                return Ok(None);
            }
            Ok(Some((p.seq, p.kind, block[value].to_vec())))
        })
    }

    pub(crate) fn index_len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn index_entry(&self, i: usize) -> Option<&IndexEntry> {
        self.index.get(i)
    }

    pub(crate) fn index_key(&self, e: &IndexEntry) -> &[u8] {
        &self.index_keys[e.key.0..e.key.1]
    }

    /// Index of the first data block whose last key is `>= target`.
    pub(crate) fn find_block(&self, target: &[u8]) -> usize {
        self.index
            .partition_point(|e| key::compare(self.index_key(e), target) == Ordering::Less)
    }

    /// Approximate bytes of the data blocks holding user keys in `[start, end)` (`end`
    /// empty: to the end of the table): from the block that may hold `start` to the one
    /// that may hold `end`. Two index searches; no block is read.
    pub(crate) fn approximate_range_bytes(&self, start: &[u8], end: &[u8]) -> u64 {
        let offset = |i: usize| {
            self.index
                .get(i)
                .map_or(self.data_end as u64, |e| e.handle.offset)
        };
        let lo = offset(self.find_block(&key::seek_key(start, key::MAX_SEQ)));
        let hi = if end.is_empty() {
            self.data_end as u64
        } else {
            offset(self.find_block(&key::seek_key(end, key::MAX_SEQ)))
        };
        hi.saturating_sub(lo)
    }

    /// Reads and verifies a data block (zero-copy when uncompressed).
    pub(crate) fn read_data_block(&self, handle: BlockHandle) -> Result<Cow<'_, [u8]>> {
        read_block(self.file.bytes(), self.data_end, handle, &self.path)
    }

    /// The whole file (for zero-copy value access).
    pub(crate) fn file_bytes(&self) -> &[u8] {
        self.file.bytes()
    }
}
