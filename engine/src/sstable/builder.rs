//! Writing tables.

use std::cmp::Ordering;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::io::WritableFile;
use crate::key::{self, ValueKind};
use crate::range_del::RangeTombstone;

use super::block::BlockBuilder;
use super::format::{
    block_crc, encode_properties, encode_range_dels, BlockHandle, Footer, TYPE_LZ4, TYPE_NONE,
};
use super::{bloom, Compression, TableOptions, TableProperties};

/// Largest key or value the format can hold (lengths are varint32 inside blocks).
const MAX_ENTRY: usize = (u32::MAX as usize) / 2;

/// Writes one table. Point entries must be added in strictly increasing internal-key order;
/// range tombstones may be added at any time. Nothing is durable before [`finish`]
/// returns.
///
/// [`finish`]: TableBuilder::finish
pub struct TableBuilder {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    opts: TableOptions,
    data: BlockBuilder,
    index: BlockBuilder,
    offset: u64,
    hashes: Vec<u64>,
    tombstones: Vec<RangeTombstone>,
    props: TableProperties,
    has_points: bool,
    last_key: Vec<u8>,
    data_bytes: u64,
    compress_buf: Vec<u8>,
    failed: bool,
}

impl TableBuilder {
    /// Starts a table in `file` (an empty file created at `path`).
    pub fn new(file: Box<dyn WritableFile>, path: PathBuf, opts: TableOptions) -> TableBuilder {
        let offset = file.len();
        TableBuilder {
            file,
            path,
            data: BlockBuilder::new(opts.restart_interval),
            index: BlockBuilder::new(1),
            opts,
            offset,
            hashes: Vec::new(),
            tombstones: Vec::new(),
            props: TableProperties {
                min_seq: u64::MAX,
                ..TableProperties::default()
            },
            has_points: false,
            last_key: Vec::new(),
            data_bytes: 0,
            compress_buf: Vec::new(),
            failed: false,
        }
    }

    /// Adds a point entry. Internal keys must be strictly increasing by [`key::compare`]
    /// (checked: a debug assertion, [`Error::InvalidArgument`] in release builds).
    pub fn add(&mut self, ikey: &[u8], value: &[u8]) -> Result<()> {
        if self.failed {
            return Err(Error::Poisoned(format!(
                "an earlier write to {} failed",
                self.path.display()
            )));
        }
        let Some(parsed) = key::parse(ikey) else {
            return Err(Error::InvalidArgument(format!(
                "internal key of {} bytes has no trailer",
                ikey.len()
            )));
        };
        if ikey.len() > MAX_ENTRY || value.len() > MAX_ENTRY - ikey.len() {
            return Err(Error::InvalidArgument(
                "key and value too large for a table entry".into(),
            ));
        }
        if self.has_points && key::compare(&self.last_key, ikey) != Ordering::Less {
            debug_assert!(false, "table keys out of order");
            return Err(Error::InvalidArgument(
                "table keys must be strictly increasing".into(),
            ));
        }
        let block_size = self.opts.block_size;
        // Keep every block well below 4 GiB whatever the options say.
        if !self.data.is_empty()
            && self.data.size_estimate() + ikey.len() + value.len() + 16 > MAX_ENTRY
        {
            self.flush_data_block()?;
        }
        let user_key = parsed.user_key;
        let new_user_key = !self.has_points || key::user_key(&self.last_key) != user_key;
        if new_user_key {
            if self.opts.bloom_bits_per_key > 0 {
                self.hashes.push(bloom::hash64(user_key));
            }
            if !self.has_points {
                self.props.smallest_user_key = user_key.to_vec();
            }
        }
        self.data.add(ikey, value);
        self.last_key.clear();
        self.last_key.extend_from_slice(ikey);
        self.has_points = true;
        self.props.num_entries += 1;
        if parsed.kind == ValueKind::Delete as u8 {
            self.props.num_deletions += 1;
        }
        self.props.min_seq = self.props.min_seq.min(parsed.seq);
        self.props.max_seq = self.props.max_seq.max(parsed.seq);
        self.props.raw_key_bytes += ikey.len() as u64;
        self.props.raw_value_bytes += value.len() as u64;
        if self.data.size_estimate() >= block_size {
            self.flush_data_block()?;
        }
        Ok(())
    }

    /// Adds a range tombstone (any order).
    pub fn add_range_tombstone(&mut self, t: RangeTombstone) {
        self.props.num_range_deletions += 1;
        self.props.min_seq = self.props.min_seq.min(t.seq);
        self.props.max_seq = self.props.max_seq.max(t.seq);
        self.tombstones.push(t);
    }

    /// Entries added so far: point entries plus range tombstones.
    pub fn num_entries(&self) -> u64 {
        self.props.num_entries + self.tombstones.len() as u64
    }

    /// Bytes written so far plus the pending data block.
    pub fn estimated_size(&self) -> u64 {
        let pending = if self.data.is_empty() {
            0
        } else {
            self.data.size_estimate() as u64
        };
        self.offset + pending
    }

    /// Writes the remaining blocks and the footer, fsyncs the file and returns the table's
    /// properties (with `file_size` set).
    pub fn finish(mut self) -> Result<TableProperties> {
        if self.failed {
            return Err(Error::Poisoned(format!(
                "an earlier write to {} failed",
                self.path.display()
            )));
        }
        if !self.data.is_empty() {
            self.flush_data_block()?;
        }
        self.data_bytes = self.offset;
        let filter = bloom::build(&self.hashes, self.opts.bloom_bits_per_key);
        let filter = self.write_block(&filter, false)?;
        self.tombstones.sort_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(b.seq.cmp(&a.seq))
                .then(a.end.cmp(&b.end))
        });
        let mut props = std::mem::take(&mut self.props);
        let (mut lo, mut hi) = if self.has_points {
            (
                Some(props.smallest_user_key.as_slice()),
                Some(key::user_key(&self.last_key)),
            )
        } else {
            (None, None)
        };
        for t in &self.tombstones {
            if lo.is_none_or(|l| t.start.as_slice() < l) {
                lo = Some(&t.start);
            }
            if hi.is_none_or(|h| t.end.as_slice() > h) {
                hi = Some(&t.end);
            }
        }
        let (lo, hi) = (
            lo.unwrap_or_default().to_vec(),
            hi.unwrap_or_default().to_vec(),
        );
        props.smallest_user_key = lo;
        props.largest_user_key = hi;
        if props.num_entries == 0 && self.tombstones.is_empty() {
            props.min_seq = 0;
        }
        let range_dels = encode_range_dels(&self.tombstones);
        let range_del = self.write_block(&range_dels, false)?;
        let properties = self.write_block(&encode_properties(&props, self.data_bytes), false)?;
        let index_bytes = self.index.finish().to_vec();
        let index = self.write_block(&index_bytes, false)?;
        let footer = Footer {
            filter,
            range_del,
            properties,
            index,
        };
        self.append(&footer.encode())?;
        let r = self.file.sync();
        self.fail_on(r)?;
        props.file_size = self.offset;
        Ok(props)
    }

    fn flush_data_block(&mut self) -> Result<()> {
        let compress = self.opts.compression == Compression::Lz4;
        let mut block = std::mem::replace(&mut self.data, BlockBuilder::new(1));
        let r = self.write_block(block.finish(), compress);
        block.reset();
        self.data = block;
        let handle = r?;
        let mut h = Vec::with_capacity(16);
        handle.encode_to(&mut h);
        self.index.add(&self.last_key, &h);
        Ok(())
    }

    fn write_block(&mut self, raw: &[u8], compress: bool) -> Result<BlockHandle> {
        let mut ctype = TYPE_NONE;
        let mut body: &[u8] = raw;
        if compress && raw.len() >= 64 {
            let max = lz4_flex::block::get_maximum_output_size(raw.len()) + 4;
            self.compress_buf.clear();
            self.compress_buf.resize(max, 0);
            self.compress_buf[..4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
            if let Ok(n) = lz4_flex::block::compress_into(raw, &mut self.compress_buf[4..]) {
                if n + 4 < raw.len() - raw.len() / 8 {
                    self.compress_buf.truncate(n + 4);
                    ctype = TYPE_LZ4;
                }
            }
        }
        let buf = std::mem::take(&mut self.compress_buf);
        if ctype == TYPE_LZ4 {
            body = &buf;
        }
        let handle = BlockHandle {
            offset: self.offset,
            size: body.len() as u64,
        };
        let mut trailer = [0u8; 5];
        trailer[0] = ctype;
        trailer[1..].copy_from_slice(&block_crc(body, ctype).to_le_bytes());
        let r = self.append(body).and_then(|_| self.append(&trailer));
        self.compress_buf = buf;
        r?;
        Ok(handle)
    }

    fn append(&mut self, data: &[u8]) -> Result<()> {
        let r = self.file.append(data);
        self.fail_on(r)?;
        self.offset += data.len() as u64;
        Ok(())
    }

    fn fail_on(&mut self, r: Result<()>) -> Result<()> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }
}
