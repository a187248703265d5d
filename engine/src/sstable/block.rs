//! Blocks of sorted key/value entries with prefix-compressed keys and restart points.
//!
//! Entry: `varint32 shared | varint32 unshared | varint32 value_len | key[shared..] | value`.
//! Every `restart_interval`-th entry stores its whole key (`shared == 0`) and its offset is
//! listed in the restart array at the end of the block: `u32 offsets... | u32 count`.
//! Every decoder here is bounds-checked and reports malformed bytes as `None`.

use std::cmp::Ordering;
use std::ops::Range;

use super::format::{get_varint32, put_varint32, u32_at};

/// Builds one block.
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    counter: usize,
    interval: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl BlockBuilder {
    /// A builder with a restart point every `interval` entries (0 is treated as 1).
    pub(crate) fn new(interval: usize) -> Self {
        BlockBuilder {
            buf: Vec::new(),
            restarts: vec![0],
            counter: 0,
            interval: interval.max(1),
            last_key: Vec::new(),
            entries: 0,
        }
    }

    /// Appends an entry; keys must arrive in increasing order and the block must stay below
    /// 4 GiB (the table builder guarantees both).
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.counter >= self.interval {
            self.restarts.push(self.buf.len() as u32);
            self.counter = 0;
            0
        } else {
            self.last_key
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        put_varint32(&mut self.buf, shared as u32);
        put_varint32(&mut self.buf, (key.len() - shared) as u32);
        put_varint32(&mut self.buf, value.len() as u32);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.counter += 1;
        self.entries += 1;
    }

    /// True if no entry was added since the last reset.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Size of the finished block if it were finished now.
    pub(crate) fn size_estimate(&self) -> usize {
        self.buf.len() + self.restarts.len() * 4 + 4
    }

    /// Appends the restart array and returns the finished block. Call `reset` before reuse.
    pub(crate) fn finish(&mut self) -> &[u8] {
        for r in &self.restarts {
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        &self.buf
    }

    /// Empties the builder for the next block.
    pub(crate) fn reset(&mut self) {
        self.buf.clear();
        self.restarts.clear();
        self.restarts.push(0);
        self.counter = 0;
        self.last_key.clear();
        self.entries = 0;
    }
}

/// One decoded entry header: ranges index the block's bytes.
pub(crate) struct RawEntry {
    pub(crate) shared: usize,
    pub(crate) key_suffix: Range<usize>,
    pub(crate) value: Range<usize>,
    pub(crate) next: usize,
}

/// One entry of a fully decoded block (see [`BlockRef::decode_all`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodedEntry {
    /// Range of the whole key in the key buffer.
    pub(crate) key: (usize, usize),
    /// Range of the value in the block's bytes.
    pub(crate) value: (usize, usize),
}

/// A validated view of a block's bytes.
#[derive(Clone, Copy)]
pub(crate) struct BlockRef<'a> {
    data: &'a [u8],
    /// Offset where the entries end and the restart array starts.
    restarts_off: usize,
    num_restarts: usize,
}

impl<'a> BlockRef<'a> {
    /// Checks the restart array's framing; `None` if malformed. Blocks hold at least one
    /// restart point.
    pub(crate) fn new(data: &'a [u8]) -> Option<BlockRef<'a>> {
        let n = u32_at(data, data.len().checked_sub(4)?)? as usize;
        let array = n.checked_mul(4)?.checked_add(4)?;
        let restarts_off = data.len().checked_sub(array)?;
        if n == 0 {
            return None;
        }
        Some(BlockRef {
            data,
            restarts_off,
            num_restarts: n,
        })
    }

    fn restart(&self, i: usize) -> Option<usize> {
        let off = u32_at(self.data, self.restarts_off + 4 * i)? as usize;
        (off < self.restarts_off).then_some(off)
    }

    /// Decodes the entry header at `pos`, given the length of the previous key.
    #[inline]
    pub(crate) fn entry_at(&self, pos: usize, prev_key_len: usize) -> Option<RawEntry> {
        let entries = &self.data[..self.restarts_off];
        let mut p = pos;
        let shared = get_varint32(entries, &mut p)? as usize;
        let unshared = get_varint32(entries, &mut p)? as usize;
        let vlen = get_varint32(entries, &mut p)? as usize;
        if shared > prev_key_len {
            return None;
        }
        let key_end = p.checked_add(unshared)?;
        let value_end = key_end.checked_add(vlen)?;
        if value_end > self.restarts_off {
            return None;
        }
        Some(RawEntry {
            shared,
            key_suffix: p..key_end,
            value: key_end..value_end,
            next: value_end,
        })
    }

    /// The whole key stored at restart point `i` (restart entries share nothing).
    fn restart_key(&self, i: usize) -> Option<&'a [u8]> {
        let e = self.entry_at(self.restart(i)?, 0)?;
        Some(&self.data[e.key_suffix])
    }

    /// Finds the first entry whose key is not less than the target, where `cmp(key)` orders a
    /// key against the target. On success `key` holds that entry's key and the value's range
    /// is returned; `Some(None)` if every key is less than the target; `None` if malformed.
    pub(crate) fn seek(
        &self,
        cmp: impl Fn(&[u8]) -> Ordering,
        key: &mut Vec<u8>,
    ) -> Option<Option<Range<usize>>> {
        // Last restart point whose key is less than the target (or the first one).
        let (mut left, mut right) = (0usize, self.num_restarts - 1);
        while left < right {
            let mid = left + (right - left).div_ceil(2);
            if cmp(self.restart_key(mid)?) == Ordering::Less {
                left = mid;
            } else {
                right = mid - 1;
            }
        }
        let mut pos = self.restart(left)?;
        key.clear();
        while pos < self.restarts_off {
            let e = self.entry_at(pos, key.len())?;
            key.truncate(e.shared);
            key.extend_from_slice(&self.data[e.key_suffix]);
            if cmp(key) != Ordering::Less {
                return Some(Some(e.value));
            }
            pos = e.next;
        }
        Some(None)
    }

    /// Decodes every entry: whole keys are appended to `keys` (cleared first), and `out`
    /// (cleared first) receives each entry's key range in `keys` and value range in the
    /// block. `None` if malformed.
    pub(crate) fn decode_all(&self, keys: &mut Vec<u8>, out: &mut Vec<DecodedEntry>) -> Option<()> {
        keys.clear();
        out.clear();
        let mut pos = 0;
        let mut prev = (0usize, 0usize);
        while pos < self.restarts_off {
            let e = self.entry_at(pos, prev.1 - prev.0)?;
            let start = keys.len();
            keys.extend_from_within(prev.0..prev.0 + e.shared);
            keys.extend_from_slice(&self.data[e.key_suffix]);
            prev = (start, keys.len());
            out.push(DecodedEntry {
                key: prev,
                value: (e.value.start, e.value.end),
            });
            pos = e.next;
        }
        Some(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn build(n: usize, interval: usize) -> (Vec<u8>, Entries) {
        let mut b = BlockBuilder::new(interval);
        let mut model = Vec::new();
        for i in 0..n {
            let k = format!("key{:05}", i * 3).into_bytes();
            let v = format!("v{i}").into_bytes();
            b.add(&k, &v);
            model.push((k, v));
        }
        (b.finish().to_vec(), model)
    }

    #[test]
    fn block_seek_and_decode_all() {
        for interval in [1, 2, 16] {
            let (data, model) = build(100, interval);
            let blk = BlockRef::new(&data).unwrap();
            let mut keys = Vec::new();
            let mut ents = Vec::new();
            blk.decode_all(&mut keys, &mut ents).unwrap();
            assert_eq!(ents.len(), model.len());
            for (e, (k, v)) in ents.iter().zip(&model) {
                assert_eq!(&keys[e.key.0..e.key.1], &k[..]);
                assert_eq!(&data[e.value.0..e.value.1], &v[..]);
            }
            let mut scratch = Vec::new();
            for i in 0..310 {
                let t = format!("key{:05}", i).into_bytes();
                let want = model.iter().find(|(k, _)| *k >= t);
                let got = blk.seek(|k| k.cmp(&t), &mut scratch).unwrap();
                match (want, got) {
                    (Some((k, v)), Some(r)) => {
                        assert_eq!(&scratch, k);
                        assert_eq!(&data[r], &v[..]);
                    }
                    (None, None) => {}
                    (w, g) => panic!("mismatch at {i}: {w:?} vs {g:?}"),
                }
            }
        }
    }

    #[test]
    fn block_decoders_never_panic_on_garbage() {
        let (data, _) = build(20, 4);
        let mut keys = Vec::new();
        let mut ents = Vec::new();
        let mut scratch = Vec::new();
        for len in 0..data.len() {
            for flip in 0..len {
                let mut d = data[..len].to_vec();
                d[flip] ^= 0xA5;
                if let Some(b) = BlockRef::new(&d) {
                    let _ = b.decode_all(&mut keys, &mut ents);
                    let _ = b.seek(|k| k.cmp(b"key00030"), &mut scratch);
                }
            }
        }
    }
}
