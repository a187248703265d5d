//! [`LogBatch`]: the unit of atomic writes, already encoded in the on-disk item format.

use crate::error::{Error, Result};
use crate::format::{
    ITEM_COMPACT_TO, ITEM_DELETE_STATE, ITEM_ENTRIES, ITEM_PUT_STATE, ITEM_REMOVE_STREAM,
    MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN,
};

/// One raft log entry of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// Raft index (>= 1).
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Opaque payload (e.g. an encoded `eraftpb::Entry`).
    pub data: Vec<u8>,
}

/// A set of changes to any number of streams, written atomically by
/// [`crate::LogStore::write`]: after a crash either all of it is there or none of it.
///
/// Items apply in the order they were added. Semantics of each:
/// - [`LogBatch::add_entries`]: entries `i..i+n`. If `i <= last_index + 1` the stream's
///   entries from `i` on are replaced (raft's conflicting-suffix truncation; if `i` is below
///   the first index, all entries are replaced). If `i > last_index + 1` (a gap, e.g. after
///   a snapshot) all entries are dropped and the stream restarts at `i`.
/// - [`LogBatch::put_state`] / [`LogBatch::delete_state`]: small keyed records per stream.
/// - [`LogBatch::compact_to`]: drops entries below `index`; if `index > last_index + 1`
///   the stream becomes empty with first index `index`.
/// - [`LogBatch::remove_stream`]: forgets the stream, its entries and its states.
#[derive(Debug, Clone)]
pub struct LogBatch {
    /// Record header space followed by the encoded items.
    buf: Vec<u8>,
    /// Streams whose entries in this batch stay out of the entry cache.
    uncached: Vec<u64>,
}

impl Default for LogBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl LogBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty batch with room for `bytes` of items.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(RECORD_HEADER_LEN + bytes);
        buf.resize(RECORD_HEADER_LEN, 0);
        LogBatch {
            buf,
            uncached: Vec::new(),
        }
    }

    /// True if nothing was added.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == RECORD_HEADER_LEN
    }

    /// Encoded size of the items in bytes.
    pub fn size_bytes(&self) -> usize {
        self.buf.len() - RECORD_HEADER_LEN
    }

    /// Removes everything, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.truncate(RECORD_HEADER_LEN);
        self.uncached.clear();
    }

    /// Keeps the entries this batch appends to `stream` out of the store's entry cache
    /// ([`Config::cache_capacity_bytes`](crate::Config::cache_capacity_bytes)): for a caller
    /// that holds them in memory itself for as long as it reads them, and for whom the
    /// cache's copy would only cost an allocation and a copy per entry. They are still read
    /// back from disk if asked for. The cache holds an unbroken run of each stream's newest
    /// entries, so the stream's entries cached before these leave it too.
    pub fn skip_cache(&mut self, stream: u64) {
        self.uncached.push(stream);
    }

    /// The streams [`LogBatch::skip_cache`] named, sorted, without duplicates; leaves none.
    pub(crate) fn take_uncached(&mut self) -> Vec<u64> {
        let mut v = std::mem::take(&mut self.uncached);
        v.sort_unstable();
        v.dedup();
        v
    }

    fn item(&mut self, kind: u8, stream: u64) {
        self.buf.push(kind);
        self.buf.extend_from_slice(&stream.to_le_bytes());
    }

    /// Appends entries to `stream`. They must have contiguous indices starting at >= 1.
    /// Errors with `InvalidArgument` (and leaves the batch unchanged) otherwise.
    pub fn add_entries(&mut self, stream: u64, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        self.add_entries_with(stream, first.index, entries, |e, buf| {
            buf.extend_from_slice(&e.data);
            (e.index, e.term)
        })
    }

    /// Appends one entry to `stream` per item of `items`, with `first_index` for the first
    /// and each next index one higher. `encode` appends an item's payload to the buffer it
    /// is given (the batch's own: no payload is built apart and copied in) and returns the
    /// item's `(index, term)`. Errors with `InvalidArgument` (and leaves the batch
    /// unchanged) if `first_index` is 0, an index is not the one expected, or a payload is
    /// 4 GiB or larger.
    pub fn add_entries_with<T>(
        &mut self,
        stream: u64,
        first_index: u64,
        items: &[T],
        mut encode: impl FnMut(&T, &mut Vec<u8>) -> (u64, u64),
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        if first_index == 0 {
            return Err(Error::InvalidArgument("entry index 0".into()));
        }
        let count = u32::try_from(items.len())
            .map_err(|_| Error::InvalidArgument("2^32 entries or more".into()))?;
        let start = self.buf.len();
        self.item(ITEM_ENTRIES, stream);
        self.buf.extend_from_slice(&first_index.to_le_bytes());
        self.buf.extend_from_slice(&count.to_le_bytes());
        for (i, item) in items.iter().enumerate() {
            let at = self.buf.len();
            // The term and the payload's length, filled in once the payload is there.
            self.buf.extend_from_slice(&[0u8; 12]);
            let (index, term) = encode(item, &mut self.buf);
            let len = self.buf.len() - at - 12;
            let problem = if Some(index) != first_index.checked_add(i as u64) {
                Some(format!("entries not contiguous at index {index}"))
            } else if u32::try_from(len).is_err() {
                Some("entry larger than 4 GiB".to_string())
            } else {
                None
            };
            if let Some(p) = problem {
                self.buf.truncate(start);
                return Err(Error::InvalidArgument(p));
            }
            if let Some(head) = self.buf.get_mut(at..at + 12) {
                head[..8].copy_from_slice(&term.to_le_bytes());
                head[8..].copy_from_slice(&(len as u32).to_le_bytes());
            }
        }
        Ok(())
    }

    /// Puts the state record `key` of `stream` (key at most 65535 bytes).
    pub fn put_state(&mut self, stream: u64, key: &[u8], value: &[u8]) -> Result<()> {
        let klen = u16::try_from(key.len())
            .map_err(|_| Error::InvalidArgument("state key longer than 65535 bytes".into()))?;
        let vlen = u32::try_from(value.len())
            .map_err(|_| Error::InvalidArgument("state value larger than 4 GiB".into()))?;
        self.item(ITEM_PUT_STATE, stream);
        self.buf.extend_from_slice(&klen.to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&vlen.to_le_bytes());
        self.buf.extend_from_slice(value);
        Ok(())
    }

    /// Deletes the state record `key` of `stream`.
    pub fn delete_state(&mut self, stream: u64, key: &[u8]) -> Result<()> {
        let klen = u16::try_from(key.len())
            .map_err(|_| Error::InvalidArgument("state key longer than 65535 bytes".into()))?;
        self.item(ITEM_DELETE_STATE, stream);
        self.buf.extend_from_slice(&klen.to_le_bytes());
        self.buf.extend_from_slice(key);
        Ok(())
    }

    /// Logically truncates `stream`: entries below `index` are dropped.
    pub fn compact_to(&mut self, stream: u64, index: u64) {
        self.item(ITEM_COMPACT_TO, stream);
        self.buf.extend_from_slice(&index.to_le_bytes());
    }

    /// Removes `stream` entirely.
    pub fn remove_stream(&mut self, stream: u64) {
        self.item(ITEM_REMOVE_STREAM, stream);
    }

    /// Seals the record header and hands out the record bytes.
    pub(crate) fn into_record(mut self) -> Result<Vec<u8>> {
        if self.size_bytes() > MAX_RECORD_PAYLOAD {
            return Err(Error::InvalidArgument(format!(
                "batch of {} bytes exceeds the {MAX_RECORD_PAYLOAD}-byte limit",
                self.size_bytes()
            )));
        }
        crate::format::seal_record(&mut self.buf);
        Ok(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{decode_batch, Op};

    #[test]
    fn encodes_and_decodes_every_item() {
        let mut b = LogBatch::new();
        let es = vec![
            Entry {
                index: 5,
                term: 2,
                data: b"ab".to_vec(),
            },
            Entry {
                index: 6,
                term: 3,
                data: vec![],
            },
        ];
        b.add_entries(7, &es).unwrap();
        b.put_state(7, b"hs", b"v").unwrap();
        b.delete_state(7, b"x").unwrap();
        b.compact_to(7, 4);
        b.remove_stream(9);
        let rec = b.into_record().unwrap();
        let payload = &rec[RECORD_HEADER_LEN..];
        let ops = decode_batch(payload).unwrap();
        assert_eq!(ops.len(), 5);
        match &ops[0] {
            Op::Entries {
                stream,
                first_index,
                entries,
            } => {
                assert_eq!((*stream, *first_index, entries.len()), (7, 5, 2));
                let e = entries[0];
                assert_eq!(
                    &payload[e.offset as usize..(e.offset + e.len) as usize],
                    b"ab"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ops[4], Op::RemoveStream { stream: 9 });
    }

    #[test]
    fn rejects_non_contiguous_entries() {
        let mut b = LogBatch::new();
        let es = vec![
            Entry {
                index: 1,
                term: 1,
                data: vec![],
            },
            Entry {
                index: 3,
                term: 1,
                data: vec![],
            },
        ];
        assert!(matches!(
            b.add_entries(1, &es),
            Err(Error::InvalidArgument(_))
        ));
        assert!(b.is_empty());
    }

    #[test]
    fn entries_encoded_in_place_are_the_same_bytes() {
        let es: Vec<Entry> = (10..14)
            .map(|i| Entry {
                index: i,
                term: i / 2,
                data: vec![i as u8; i as usize],
            })
            .collect();
        let mut a = LogBatch::new();
        a.put_state(3, b"k", b"v").unwrap();
        a.add_entries(3, &es).unwrap();
        let mut b = LogBatch::new();
        b.put_state(3, b"k", b"v").unwrap();
        b.add_entries_with(3, 10, &es, |e, buf| {
            buf.extend_from_slice(&e.data);
            (e.index, e.term)
        })
        .unwrap();
        assert_eq!(a.buf, b.buf);
        // A wrong index or a zero first index leaves what was there before.
        let before = b.buf.clone();
        let err = b.add_entries_with(3, 11, &es, |e, buf| {
            buf.extend_from_slice(&e.data);
            (e.index, e.term)
        });
        assert!(matches!(err, Err(Error::InvalidArgument(_))));
        let err = b.add_entries_with(3, 0, &es, |e, _| (e.index, e.term));
        assert!(matches!(err, Err(Error::InvalidArgument(_))));
        assert_eq!(b.buf, before);
        // Nothing to add is fine at any index.
        b.add_entries_with(3, 0, &es[..0], |e, _| (e.index, e.term))
            .unwrap();
        assert_eq!(b.buf, before);
    }
}
