//! Low-level encodings shared by the SSTable builder and reader: block handles, block
//! trailers and checksums, the footer, varints, the properties and range-tombstone blocks.
//! `engine/FORMAT.md` documents every byte.

use std::borrow::Cow;
use std::path::Path;

use crate::error::{Error, Result};
use crate::range_del::RangeTombstone;

use super::TableProperties;

/// Magic number at the very end of every SSTable (`"PONTSST1"` read as big-endian bytes).
pub(crate) const MAGIC: u64 = 0x504F_4E54_5353_5431;
/// Current (and only) format version.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Size of the footer in bytes.
pub(crate) const FOOTER_LEN: usize = 80;
/// Size of the trailer after every block: compression type (1) + crc32 (4).
pub(crate) const TRAILER_LEN: usize = 5;
/// Compression type byte: block stored as is.
pub(crate) const TYPE_NONE: u8 = 0;
/// Compression type byte: `[uncompressed len u32][lz4 block]`.
pub(crate) const TYPE_LZ4: u8 = 1;
/// Bytes of one encoded block handle.
pub(crate) const HANDLE_LEN: usize = 16;

/// Location of a block inside the file; `size` excludes the trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BlockHandle {
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

impl BlockHandle {
    pub(crate) fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
    }

    /// Decodes a handle from exactly [`HANDLE_LEN`] bytes; `None` on a wrong length.
    pub(crate) fn decode(b: &[u8]) -> Option<BlockHandle> {
        if b.len() != HANDLE_LEN {
            return None;
        }
        Some(BlockHandle {
            offset: u64_at(b, 0)?,
            size: u64_at(b, 8)?,
        })
    }
}

/// Little-endian u32 at `pos`, or `None` when out of bounds.
#[inline]
pub(crate) fn u32_at(b: &[u8], pos: usize) -> Option<u32> {
    let s = b.get(pos..pos.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_le_bytes(a))
}

/// Little-endian u64 at `pos`, or `None` when out of bounds.
#[inline]
pub(crate) fn u64_at(b: &[u8], pos: usize) -> Option<u64> {
    let s = b.get(pos..pos.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Appends `v` as a LEB128 varint (at most 5 bytes).
#[inline]
pub(crate) fn put_varint32(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes a LEB128 varint of at most 5 bytes that fits a u32 at `*pos`, advancing `*pos`.
#[inline]
pub(crate) fn get_varint32(b: &[u8], pos: &mut usize) -> Option<u32> {
    let mut result: u32 = 0;
    for i in 0..5 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        let bits = (byte & 0x7F) as u32;
        if i == 4 && bits > 0x0F {
            return None;
        }
        result |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some(result);
        }
    }
    None
}

/// crc32 over a block's stored bytes followed by its compression type byte.
pub(crate) fn block_crc(data: &[u8], ctype: u8) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(data);
    h.update(&[ctype]);
    h.finalize()
}

/// Reads the block at `handle` from `file` (which must end before `limit`), verifies its
/// checksum and decompresses it. Uncompressed blocks are borrowed from `file` (zero-copy).
pub(crate) fn read_block<'a>(
    file: &'a [u8],
    limit: usize,
    handle: BlockHandle,
    path: &Path,
) -> Result<Cow<'a, [u8]>> {
    let bad = |reason: &str| Error::corruption(path, handle.offset, reason);
    let start = usize::try_from(handle.offset).map_err(|_| bad("block offset out of range"))?;
    let size = usize::try_from(handle.size).map_err(|_| bad("block size out of range"))?;
    let end = start
        .checked_add(size)
        .ok_or_else(|| bad("block size overflows"))?;
    let trailer_end = end
        .checked_add(TRAILER_LEN)
        .ok_or_else(|| bad("block size overflows"))?;
    if trailer_end > limit.min(file.len()) {
        return Err(bad("block extends past the end of its region"));
    }
    let data = &file[start..end];
    let ctype = file[end];
    let expected = u32_at(file, end + 1).ok_or_else(|| bad("truncated block trailer"))?;
    let actual = block_crc(data, ctype);
    if expected != actual {
        return Err(Error::ChecksumMismatch {
            file: path.to_path_buf(),
            offset: handle.offset,
            expected,
            actual,
        });
    }
    match ctype {
        TYPE_NONE => Ok(Cow::Borrowed(data)),
        TYPE_LZ4 => {
            let raw_len = u32_at(data, 0).ok_or_else(|| bad("lz4 block too short"))? as usize;
            let body = &data[4..];
            // lz4 cannot expand more than ~255x; refuse absurd sizes before allocating.
            if raw_len > body.len().saturating_mul(255).saturating_add(64) {
                return Err(bad("lz4 block claims an impossible uncompressed size"));
            }
            let mut out = vec![0u8; raw_len];
            match lz4_flex::block::decompress_into(body, &mut out) {
                Ok(n) if n == raw_len => Ok(Cow::Owned(out)),
                Ok(_) => Err(bad("lz4 block decompressed to the wrong size")),
                Err(e) => Err(bad(&format!("lz4 decompression failed: {e}"))),
            }
        }
        t => Err(bad(&format!("unknown compression type {t}"))),
    }
}

/// The fixed-size footer at the end of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Footer {
    pub(crate) filter: BlockHandle,
    pub(crate) range_del: BlockHandle,
    pub(crate) properties: BlockHandle,
    pub(crate) index: BlockHandle,
}

impl Footer {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FOOTER_LEN);
        self.filter.encode_to(&mut out);
        self.range_del.encode_to(&mut out);
        self.properties.encode_to(&mut out);
        self.index.encode_to(&mut out);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out
    }

    /// Decodes and validates the footer at the end of `file`.
    pub(crate) fn decode(file: &[u8], path: &Path) -> Result<Footer> {
        if file.len() < FOOTER_LEN {
            return Err(Error::corruption(
                path,
                0,
                format!("file of {} bytes is too short for a table", file.len()),
            ));
        }
        let at = file.len() - FOOTER_LEN;
        let f = &file[at..];
        let bad = |off: usize, reason: String| Error::corruption(path, (at + off) as u64, reason);
        let magic = u64_at(f, 72).ok_or_else(|| bad(72, "short footer".into()))?;
        if magic != MAGIC {
            return Err(bad(72, format!("bad magic {magic:#018x}")));
        }
        let expected = u32_at(f, 68).ok_or_else(|| bad(68, "short footer".into()))?;
        let actual = crc32fast::hash(&f[..68]);
        if expected != actual {
            return Err(Error::ChecksumMismatch {
                file: path.to_path_buf(),
                offset: at as u64,
                expected,
                actual,
            });
        }
        let version = u32_at(f, 64).ok_or_else(|| bad(64, "short footer".into()))?;
        if version != FORMAT_VERSION {
            return Err(bad(64, format!("unsupported format version {version}")));
        }
        let h = |i: usize| {
            BlockHandle::decode(&f[i * HANDLE_LEN..(i + 1) * HANDLE_LEN])
                .ok_or_else(|| bad(i * HANDLE_LEN, "short handle".into()))
        };
        Ok(Footer {
            filter: h(0)?,
            range_del: h(1)?,
            properties: h(2)?,
            index: h(3)?,
        })
    }
}

/// A bounds-checked reader over a byte slice for the fixed-width meta blocks.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let v = u32_at(self.b, self.pos)?;
        self.pos += 4;
        Some(v)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        let v = u64_at(self.b, self.pos)?;
        self.pos += 8;
        Some(v)
    }

    /// A `u32` length followed by that many bytes.
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        let s = self.b.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some(s)
    }

    pub(crate) fn done(&self) -> bool {
        self.pos == self.b.len()
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Keys are at most u32::MAX bytes (the builder rejects longer ones).
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Encodes the properties block. `file_size` is not stored (it is the file's length).
pub(crate) fn encode_properties(p: &TableProperties, data_bytes: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + p.smallest_user_key.len() + p.largest_user_key.len());
    put_bytes(&mut out, &p.smallest_user_key);
    put_bytes(&mut out, &p.largest_user_key);
    for v in [
        p.num_entries,
        p.num_deletions,
        p.num_range_deletions,
        p.min_seq,
        p.max_seq,
        p.raw_key_bytes,
        p.raw_value_bytes,
        data_bytes,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes the properties block; `None` if malformed. Sets `file_size` to 0.
pub(crate) fn decode_properties(b: &[u8]) -> Option<TableProperties> {
    let mut r = Reader::new(b);
    let smallest_user_key = r.bytes()?.to_vec();
    let largest_user_key = r.bytes()?.to_vec();
    let p = TableProperties {
        smallest_user_key,
        largest_user_key,
        num_entries: r.u64()?,
        num_deletions: r.u64()?,
        num_range_deletions: r.u64()?,
        min_seq: r.u64()?,
        max_seq: r.u64()?,
        raw_key_bytes: r.u64()?,
        raw_value_bytes: r.u64()?,
        file_size: 0,
    };
    let _data_bytes = r.u64()?;
    r.done().then_some(p)
}

/// Encodes the range-tombstone block.
pub(crate) fn encode_range_dels(ts: &[RangeTombstone]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(ts.len() as u32).to_le_bytes());
    for t in ts {
        put_bytes(&mut out, &t.start);
        put_bytes(&mut out, &t.end);
        out.extend_from_slice(&t.seq.to_le_bytes());
    }
    out
}

/// Decodes the range-tombstone block; `None` if malformed.
pub(crate) fn decode_range_dels(b: &[u8]) -> Option<Vec<RangeTombstone>> {
    let mut r = Reader::new(b);
    let n = r.u32()? as usize;
    // Each tombstone takes at least 16 bytes: never trust `n` for the allocation.
    let mut out = Vec::with_capacity(n.min(b.len() / 16));
    for _ in 0..n {
        let start = r.bytes()?.to_vec();
        let end = r.bytes()?.to_vec();
        let seq = r.u64()?;
        out.push(RangeTombstone { start, end, seq });
    }
    r.done().then_some(out)
}
