//! The on-disk format (see `FORMAT.md`): segment header, record framing and the items of
//! a batch record. Decoders are bounds-checked and never panic on arbitrary bytes.

use std::ops::Range;

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PNTNRLOG";
/// Format version written by this code (2: record checksums are bound to the segment's
/// sequence number, so a recycled segment's stale records never read as valid).
pub const FORMAT_VERSION: u32 = 2;
/// The first version; still read (its checksums do not cover the sequence number).
pub const FORMAT_VERSION_1: u32 = 1;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: u64 = 16;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 12;
/// Record type of a log batch.
pub const RECORD_BATCH: u8 = 1;
/// Largest payload of one record (one batch).
pub const MAX_RECORD_PAYLOAD: usize = 1 << 30;
/// Written after the last record of every group write: an all-zero record header, which
/// ends the records of a segment (the next write starts on it). In a recycled segment
/// the bytes after it are stale.
pub const END_MARKER: [u8; RECORD_HEADER_LEN] = [0; RECORD_HEADER_LEN];

pub(crate) const ITEM_ENTRIES: u8 = 1;
pub(crate) const ITEM_PUT_STATE: u8 = 2;
pub(crate) const ITEM_DELETE_STATE: u8 = 3;
pub(crate) const ITEM_COMPACT_TO: u8 = 4;
pub(crate) const ITEM_REMOVE_STREAM: u8 = 5;

/// Bytes of the header of segment `seq`.
pub fn segment_header(seq: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&seq.to_le_bytes());
    h
}

/// Checks the header of segment `seq` (the number in its file name). Returns the
/// checksum seed of its records (`Some(seq)` for version 2, `None` for version 1), or
/// `Err(reason)` when it is not a header this code reads.
pub fn check_segment_header(bytes: &[u8], seq: u32) -> Result<Option<u32>, String> {
    let h = bytes
        .get(..SEGMENT_HEADER_LEN as usize)
        .ok_or_else(|| format!("segment shorter than its {SEGMENT_HEADER_LEN}-byte header"))?;
    if h[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let field = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    match version {
        FORMAT_VERSION if field == seq => Ok(Some(seq)),
        FORMAT_VERSION => Err(format!(
            "segment header names sequence {field}, its file name {seq}"
        )),
        FORMAT_VERSION_1 if field == 0 => Ok(None),
        FORMAT_VERSION_1 => Err("non-zero reserved field in a version 1 header".into()),
        _ => Err(format!("unsupported format version {version}")),
    }
}

/// Checksum of a record: crc32 over header bytes 4..12, the payload and (version 2)
/// the segment's sequence number as u32 LE.
pub fn record_crc(header_tail: &[u8], payload: &[u8], seed: Option<u32>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header_tail);
    h.update(payload);
    let crc = h.finalize();
    match seed {
        Some(seq) => bind_crc(crc, seq),
        None => crc,
    }
}

/// Extends the checksum of header tail + payload with the segment sequence number.
fn bind_crc(crc: u32, seq: u32) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(&seq.to_le_bytes());
    h.finalize()
}

/// Fills in the header of a record whose payload follows it in `buf[12..]`, with the
/// checksum of header tail + payload only: [`bind_record`] finishes it once the record's
/// segment is known.
pub fn seal_record(buf: &mut [u8]) {
    let payload_len = (buf.len() - RECORD_HEADER_LEN) as u32;
    buf[4..8].copy_from_slice(&payload_len.to_le_bytes());
    buf[8] = RECORD_BATCH;
    buf[9..12].fill(0);
    let crc = record_crc(&buf[4..RECORD_HEADER_LEN], &buf[RECORD_HEADER_LEN..], None);
    buf[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Binds a sealed record (its header at the start of `record`) to segment `seq`: four
/// bytes more of CRC, not a pass over the payload.
pub fn bind_record(record: &mut [u8], seq: u32) {
    let crc = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
    record[0..4].copy_from_slice(&bind_crc(crc, seq).to_le_bytes());
}

/// What sits at a position of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordRead<'a> {
    /// A valid record: its payload and total length (header included).
    Valid {
        /// Payload bytes.
        payload: &'a [u8],
        /// Header + payload length.
        total_len: usize,
    },
    /// End of data: an all-zero header ([`END_MARKER`], or preallocated space) or the end
    /// of the file.
    End,
    /// Bytes that are not a valid record.
    Invalid {
        /// What is wrong.
        reason: String,
        /// `(expected, actual)` when the framing was intact but the checksum differs.
        checksum: Option<(u32, u32)>,
        /// Length the header claims (header included), when it fits in the file.
        claimed_len: Option<usize>,
    },
}

/// Reads the record at the start of `buf`, in a segment whose checksum seed is `seed`
/// (see [`check_segment_header`]).
pub fn read_record(buf: &[u8], seed: Option<u32>) -> RecordRead<'_> {
    if buf.is_empty() {
        return RecordRead::End;
    }
    let Some(header) = buf.get(..RECORD_HEADER_LEN) else {
        if buf.iter().all(|&b| b == 0) {
            return RecordRead::End;
        }
        return invalid("truncated record header".into());
    };
    if header.iter().all(|&b| b == 0) {
        return RecordRead::End;
    }
    let expected = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > MAX_RECORD_PAYLOAD {
        return invalid(format!("record length {len} too large"));
    }
    let total_len = RECORD_HEADER_LEN + len;
    let Some(payload) = buf.get(RECORD_HEADER_LEN..total_len) else {
        return invalid(format!(
            "record of {len} bytes runs past the end of the file"
        ));
    };
    if header[8] != RECORD_BATCH || header[9..12] != [0, 0, 0] {
        return RecordRead::Invalid {
            reason: format!("unknown record type {}", header[8]),
            checksum: None,
            claimed_len: Some(total_len),
        };
    }
    let actual = record_crc(&header[4..RECORD_HEADER_LEN], payload, seed);
    if actual != expected {
        return RecordRead::Invalid {
            reason: "checksum mismatch".into(),
            checksum: Some((expected, actual)),
            claimed_len: Some(total_len),
        };
    }
    RecordRead::Valid { payload, total_len }
}

fn invalid<'a>(reason: String) -> RecordRead<'a> {
    RecordRead::Invalid {
        reason,
        checksum: None,
        claimed_len: None,
    }
}

/// One entry of an `Entries` item, located inside the batch payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef {
    /// Raft term.
    pub term: u64,
    /// Offset of the entry data inside the payload.
    pub offset: u32,
    /// Length of the entry data.
    pub len: u32,
}

/// One decoded item of a batch, referring to ranges of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Contiguous entries starting at `first_index`.
    Entries {
        /// Stream id.
        stream: u64,
        /// Index of the first entry.
        first_index: u64,
        /// The entries in index order.
        entries: Vec<EntryRef>,
    },
    /// Put a state record.
    PutState {
        /// Stream id.
        stream: u64,
        /// Key bytes in the payload.
        key: Range<usize>,
        /// Value bytes in the payload.
        value: Range<usize>,
    },
    /// Delete a state record.
    DeleteState {
        /// Stream id.
        stream: u64,
        /// Key bytes in the payload.
        key: Range<usize>,
    },
    /// Drop entries below `index`.
    CompactTo {
        /// Stream id.
        stream: u64,
        /// New first index (if higher than the current one).
        index: u64,
    },
    /// Remove the stream with all its entries and states.
    RemoveStream {
        /// Stream id.
        stream: u64,
    },
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<Range<usize>, String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("item runs past the end of the batch at {}", self.pos))?;
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let r = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[r]);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.bytes()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
}

/// Decodes the items of a batch payload. `Err(reason)` on any malformed byte.
pub fn decode_batch(payload: &[u8]) -> Result<Vec<Op>, String> {
    let mut c = Cursor {
        buf: payload,
        pos: 0,
    };
    let mut ops = Vec::new();
    while c.pos < payload.len() {
        let kind = c.u8()?;
        let stream = c.u64()?;
        let op = match kind {
            ITEM_ENTRIES => {
                let first_index = c.u64()?;
                let count = c.u32()? as usize;
                // Each entry takes at least 12 bytes: bound the allocation by the input.
                if count > (payload.len() - c.pos) / 12 {
                    return Err(format!("entry count {count} exceeds the batch"));
                }
                if first_index == 0 || first_index.checked_add(count as u64).is_none() {
                    return Err(format!("bad first index {first_index}"));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let term = c.u64()?;
                    let len = c.u32()?;
                    let r = c.take(len as usize)?;
                    entries.push(EntryRef {
                        term,
                        offset: r.start as u32,
                        len,
                    });
                }
                Op::Entries {
                    stream,
                    first_index,
                    entries,
                }
            }
            ITEM_PUT_STATE => {
                let klen = c.u16()? as usize;
                let key = c.take(klen)?;
                let vlen = c.u32()? as usize;
                let value = c.take(vlen)?;
                Op::PutState { stream, key, value }
            }
            ITEM_DELETE_STATE => {
                let klen = c.u16()? as usize;
                let key = c.take(klen)?;
                Op::DeleteState { stream, key }
            }
            ITEM_COMPACT_TO => Op::CompactTo {
                stream,
                index: c.u64()?,
            },
            ITEM_REMOVE_STREAM => Op::RemoveStream { stream },
            other => return Err(format!("unknown item type {other}")),
        };
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip_and_zero_end() {
        let mut buf = vec![0u8; RECORD_HEADER_LEN];
        buf.extend_from_slice(b"hello");
        seal_record(&mut buf);
        // Version 1: the sealed checksum as it is.
        assert!(matches!(read_record(&buf, None), RecordRead::Valid { .. }));
        bind_record(&mut buf, 7);
        match read_record(&buf, Some(7)) {
            RecordRead::Valid { payload, total_len } => {
                assert_eq!(payload, b"hello");
                assert_eq!(total_len, buf.len());
            }
            other => panic!("{other:?}"),
        }
        // The same bytes in another segment (a recycled file's stale record) are invalid.
        for seed in [Some(6), Some(8), None] {
            assert!(matches!(
                read_record(&buf, seed),
                RecordRead::Invalid {
                    checksum: Some(_),
                    ..
                }
            ));
        }
        assert_eq!(read_record(&[0u8; 40], Some(7)), RecordRead::End);
        assert_eq!(read_record(&[0u8; 5], Some(7)), RecordRead::End);
        buf[14] ^= 1;
        assert!(matches!(
            read_record(&buf, Some(7)),
            RecordRead::Invalid {
                checksum: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn segment_headers() {
        assert_eq!(check_segment_header(&segment_header(9), 9), Ok(Some(9)));
        assert!(check_segment_header(&segment_header(9), 10).is_err());
        let mut v1 = segment_header(0);
        v1[8..12].copy_from_slice(&FORMAT_VERSION_1.to_le_bytes());
        assert_eq!(check_segment_header(&v1, 3), Ok(None));
        v1[12] = 1;
        assert!(check_segment_header(&v1, 3).is_err());
        assert!(check_segment_header(&segment_header(1)[..15], 1).is_err());
    }

    #[test]
    fn decode_garbage_never_panics() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 7) as u8
                })
                .collect();
            let _ = decode_batch(&bytes);
            let _ = read_record(&bytes, Some(1));
            let _ = read_record(&bytes, None);
        }
    }
}
