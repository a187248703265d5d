//! Region snapshots: the bytes a raft `Snapshot.data` carries to a follower too far behind
//! the leader's log to catch up from entries.
//!
//! [`build`] reads every key of a region's range in every *data* column family (every column
//! family except [`RAFT_CF`]) from ONE engine [`Snapshot`](pontoon_engine::Snapshot), together
//! with the region's [`ApplyState`] read through that same snapshot, so the applied index in
//! the meta describes exactly the data that follows it. [`verify`] checks and decodes a
//! snapshot completely without touching an engine. [`apply`] verifies, then replaces the
//! region's range with the snapshot's contents in ONE engine write batch (which also carries
//! the new apply state) and flushes, so a crash leaves either the old region or the new one,
//! never a mix, and the raft log may be truncated as soon as `apply` returns.
//!
//! # Format, version 1
//!
//! Every integer is little-endian; every length is a `u32` counting bytes.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"PNSN"` |
//! | 4 | 4 | format version, `u32` = 1 |
//! | 8 | 8 | region id, `u64` |
//! | 16 | 8 | applied index, `u64` |
//! | 24 | 8 | applied term, `u64` |
//! | 32 | 8 | revision, `i64` |
//! | 40 | 4 + n | start key: length, bytes |
//! | … | 4 + n | end key: length, bytes (empty = unbounded) |
//! | … | 4 | column-family count `C`, `u32` |
//! | … | C × (4 + n) | column-family table: name length, UTF-8 name |
//! | … | … | records, each `cf u32 \| key length u32 \| key \| value length u32 \| value` |
//! | len − 12 | 8 | record count, `u64` |
//! | len − 4 | 4 | crc32 (`crc32fast`, IEEE) of every byte before it |
//!
//! A record's `cf` is an index into the column-family table. The table lists every data
//! column family of the source engine (empty ones too, so that the receiver can tell "no keys
//! here" from "unknown column family"), names sorted strictly ascending, none of them `raft`.
//! Records are sorted strictly ascending by `(cf, key)` (no duplicates), every key lies in
//! `[start, end)`, and the records end exactly where the 12-byte trailer begins. Values are the
//! engine's stored values verbatim, including the mvcc metadata `mvcc` prefixes them with.
//! [`verify`] enforces every one of these rules, because [`apply`] deletes `[start, end)` and
//! writes whatever records it finds: a record outside the range would write outside the
//! region.
//!
//! # Known limits
//!
//! The whole snapshot is built, held and applied in memory: [`build`] returns one `Vec<u8>`,
//! and [`apply`] stages every record into one `WriteBatch` (a copy of the data), so applying
//! takes about twice the snapshot's size. That is fine for today's region sizes; streaming
//! (SST ingestion or a chunked writer) is the fix when regions grow.

use pontoon_engine::{Engine, IterOptions, WriteBatch};

use crate::mvcc::{self, ApplyState, RAFT_CF};

/// First bytes of every snapshot.
const MAGIC: &[u8; 4] = b"PNSN";
/// The format version this build writes and reads.
const VERSION: u32 = 1;
/// magic + version + region id + applied index + applied term + revision.
const FIXED_HEADER_LEN: usize = 4 + 4 + 8 * 4;
/// record count + crc32.
const TRAILER_LEN: usize = 8 + 4;
/// The smallest well-formed snapshot: empty keys, no column family, no record.
const MIN_LEN: usize = FIXED_HEADER_LEN + 4 + 4 + 4 + TRAILER_LEN;

/// Errors of building, verifying and applying snapshots.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] pontoon_engine::Error),
    /// The region's stored apply state does not decode.
    #[error(transparent)]
    Mvcc(#[from] mvcc::Error),
    /// The bytes do not start with the snapshot magic.
    #[error("not a region snapshot: bad magic")]
    BadMagic,
    /// The snapshot was written in a format version this build cannot read.
    #[error("snapshot format version {0} is not supported (this build reads {VERSION})")]
    UnsupportedVersion(u32),
    /// The stored checksum does not match the bytes.
    #[error("snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The crc32 in the trailer.
        stored: u32,
        /// The crc32 of the bytes before it.
        computed: u32,
    },
    /// The bytes pass the checksum but break the format.
    #[error("snapshot is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// Offset of the offending field.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// `start_key` is not below a non-empty `end_key`.
    #[error("invalid key range: start {start:?} is not below end {end:?}")]
    InvalidRange {
        /// The start key.
        start: Vec<u8>,
        /// The end key.
        end: Vec<u8>,
    },
    /// The snapshot names a column family this engine does not have. Applying it would lose
    /// that column family's data, and creating column families is not a snapshot's business.
    #[error("snapshot names column family {0:?}, which this engine does not have")]
    UnknownColumnFamily(String),
    /// A column family was created or dropped while the snapshot was being taken, so the set
    /// of column families it read is not the one of its moment. Retry.
    #[error("column families changed while the snapshot was taken; retry")]
    ColumnFamiliesChanged,
    /// A key, value or name does not fit the format's `u32` lengths.
    #[error("{what} of {len} bytes is too large for a snapshot")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// What a snapshot carries besides the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The region the snapshot belongs to.
    pub region_id: u64,
    /// The region's apply state at the snapshot's moment (applied index and term, revision).
    pub apply: ApplyState,
    /// First key of the region's range (inclusive; empty = the smallest key).
    pub start_key: Vec<u8>,
    /// End of the region's range (exclusive; empty = unbounded).
    pub end_key: Vec<u8>,
}

fn check_range(start: &[u8], end: &[u8]) -> Result<()> {
    if !end.is_empty() && start >= end {
        return Err(Error::InvalidRange {
            start: start.to_vec(),
            end: end.to_vec(),
        });
    }
    Ok(())
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

// ---- encoding -------------------------------------------------------------------------------

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

/// Appends `bytes` with its `u32` length.
fn put_bytes(out: &mut Vec<u8>, what: &'static str, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| Error::TooLarge {
        what,
        len: bytes.len(),
    })?;
    put_u32(out, len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// Starts a snapshot: everything before the first record.
fn encode_header(out: &mut Vec<u8>, meta: &SnapshotMeta, cfs: &[String]) -> Result<()> {
    out.extend_from_slice(MAGIC);
    put_u32(out, VERSION);
    put_u64(out, meta.region_id);
    put_u64(out, meta.apply.applied_index);
    put_u64(out, meta.apply.applied_term);
    // The revision is an i64 stored as its two's-complement bits, as `ApplyState` does.
    put_u64(out, meta.apply.revision as u64);
    put_bytes(out, "start key", &meta.start_key)?;
    put_bytes(out, "end key", &meta.end_key)?;
    let count = u32::try_from(cfs.len()).map_err(|_| Error::TooLarge {
        what: "column-family table",
        len: cfs.len(),
    })?;
    put_u32(out, count);
    for cf in cfs {
        put_bytes(out, "column-family name", cf.as_bytes())?;
    }
    Ok(())
}

fn encode_record(out: &mut Vec<u8>, cf: u32, key: &[u8], value: &[u8]) -> Result<()> {
    put_u32(out, cf);
    put_bytes(out, "key", key)?;
    put_bytes(out, "value", value)
}

/// Ends a snapshot: record count and the checksum of everything before it.
fn encode_trailer(out: &mut Vec<u8>, records: u64) {
    put_u64(out, records);
    let crc = crc32fast::hash(out);
    put_u32(out, crc);
}

/// Encodes every key in `[start_key, end_key)` (`end_key` empty = unbounded) of every data
/// column family (every column family except `raft`) of `engine`, read from ONE consistent
/// engine snapshot, together with the region's apply state read through that same snapshot.
///
/// Returns the meta and the snapshot's bytes (see the module docs for the format). Fails with
/// [`Error::InvalidRange`] if `start_key` is not below a non-empty `end_key`, and with
/// [`Error::ColumnFamiliesChanged`] if a column family was created or dropped meanwhile.
pub fn build(
    engine: &Engine,
    region_id: u64,
    start_key: &[u8],
    end_key: &[u8],
) -> Result<(SnapshotMeta, Vec<u8>)> {
    check_range(start_key, end_key)?;
    // The engine's snapshot pins data, not the set of column families. Reading the list on
    // both sides of it and requiring them equal proves the list is the snapshot's: a column
    // family created later holds nothing the snapshot can see, and one dropped later is
    // reported by its iterator.
    let before = engine.cf_names();
    let snap = engine.snapshot();
    let names = engine.cf_names();
    if names != before {
        return Err(Error::ColumnFamiliesChanged);
    }
    let cfs: Vec<String> = names.into_iter().filter(|c| c != RAFT_CF).collect();
    let meta = SnapshotMeta {
        region_id,
        apply: ApplyState::load_at(&snap, region_id)?,
        start_key: start_key.to_vec(),
        end_key: end_key.to_vec(),
    };
    let mut out = Vec::new();
    encode_header(&mut out, &meta, &cfs)?;
    let mut records = 0u64;
    for (index, cf) in cfs.iter().enumerate() {
        // `encode_header` has checked that the table's length fits a u32.
        let index = u32::try_from(index).map_err(|_| Error::TooLarge {
            what: "column-family table",
            len: cfs.len(),
        })?;
        let opts = IterOptions {
            lower_bound: Some(start_key.to_vec()),
            upper_bound: (!end_key.is_empty()).then(|| end_key.to_vec()),
            reverse: false,
        };
        for item in snap.iter(cf, opts)? {
            let (key, value) = item?;
            encode_record(&mut out, index, &key, &value)?;
            records += 1;
        }
    }
    encode_trailer(&mut out, records);
    Ok((meta, out))
}

// ---- decoding -------------------------------------------------------------------------------

/// One record, borrowed from the snapshot's bytes.
struct Record<'a> {
    /// Index into [`Decoded::cfs`].
    cf: usize,
    key: &'a [u8],
    value: &'a [u8],
}

/// A fully checked snapshot.
struct Decoded<'a> {
    meta: SnapshotMeta,
    cfs: Vec<String>,
    records: Vec<Record<'a>>,
}

/// A bounds-checked cursor over the checksummed body (the bytes before the trailer).
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, reason: &'static str) -> Error {
        Error::Corrupt {
            offset: self.pos,
            reason,
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.corrupt(what))?;
        let b = &self.data[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }

    /// A `u32` length and that many bytes. The length is checked against what is left before
    /// anything is sliced, so a forged length can neither overrun nor allocate.
    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let start = self.pos;
        let len = self.u32(what)?;
        let len = usize::try_from(len).map_err(|_| self.corrupt(what))?;
        self.take(len, what).map_err(|_| Error::Corrupt {
            offset: start,
            reason: what,
        })
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

/// Checks and decodes everything; the records borrow from `data`.
fn decode(data: &[u8]) -> Result<Decoded<'_>> {
    // Magic and version come before the checksum: a snapshot of a later format may place its
    // checksum elsewhere, and saying "unsupported version" beats "checksum mismatch".
    if data.len() < MAGIC.len() + 4 {
        return Err(Error::Corrupt {
            offset: data.len(),
            reason: "truncated: shorter than magic and version",
        });
    }
    if &data[..MAGIC.len()] != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = le_u32(&data[4..8]);
    if version != VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    if data.len() < MIN_LEN {
        return Err(Error::Corrupt {
            offset: data.len(),
            reason: "truncated: shorter than the smallest snapshot",
        });
    }
    let (covered, crc) = data.split_at(data.len() - 4);
    let stored = le_u32(crc);
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(Error::ChecksumMismatch { stored, computed });
    }
    let (body, count) = covered.split_at(covered.len() - 8);
    let mut a = [0u8; 8];
    a.copy_from_slice(count);
    let declared = u64::from_le_bytes(a);

    let mut r = Reader {
        data: body,
        pos: MAGIC.len() + 4,
    };
    let region_id = r.u64("region id")?;
    let applied_index = r.u64("applied index")?;
    let applied_term = r.u64("applied term")?;
    let revision = r.u64("revision")? as i64;
    let start_pos = r.pos;
    let start_key = r.bytes("start key")?;
    let end_key = r.bytes("end key")?;
    if !end_key.is_empty() && start_key >= end_key {
        return Err(Error::Corrupt {
            offset: start_pos,
            reason: "start key is not below end key",
        });
    }
    let cf_count = r.u32("column-family count")?;
    let mut cfs: Vec<String> = Vec::new();
    // No `with_capacity(cf_count)`: the count is untrusted until the names are read.
    for _ in 0..cf_count {
        let pos = r.pos;
        let name = r.bytes("column-family name")?;
        let name = std::str::from_utf8(name).map_err(|_| Error::Corrupt {
            offset: pos,
            reason: "column-family name is not UTF-8",
        })?;
        let bad = if name.is_empty() {
            Some("empty column-family name")
        } else if name == RAFT_CF {
            Some("the raft column family is not region data")
        } else if cfs.last().is_some_and(|last| last.as_str() >= name) {
            Some("column-family names are not strictly ascending")
        } else {
            None
        };
        if let Some(reason) = bad {
            return Err(Error::Corrupt {
                offset: pos,
                reason,
            });
        }
        cfs.push(name.to_string());
    }
    let mut records: Vec<Record<'_>> = Vec::new();
    let mut last: Option<(usize, &[u8])> = None;
    while !r.is_empty() {
        let pos = r.pos;
        let cf = r.u32("record column family")?;
        let cf = usize::try_from(cf)
            .ok()
            .filter(|&c| c < cfs.len())
            .ok_or(Error::Corrupt {
                offset: pos,
                reason: "record names a column family outside the table",
            })?;
        let key = r.bytes("record key")?;
        let value = r.bytes("record value")?;
        if !in_range(key, start_key, end_key) {
            return Err(Error::Corrupt {
                offset: pos,
                reason: "record key outside the snapshot's range",
            });
        }
        if last.is_some_and(|prev| prev >= (cf, key)) {
            return Err(Error::Corrupt {
                offset: pos,
                reason: "records are not strictly ascending by (column family, key)",
            });
        }
        last = Some((cf, key));
        records.push(Record { cf, key, value });
    }
    if records.len() as u64 != declared {
        return Err(Error::Corrupt {
            offset: body.len(),
            reason: "record count does not match the records",
        });
    }
    Ok(Decoded {
        meta: SnapshotMeta {
            region_id,
            apply: ApplyState {
                applied_index,
                applied_term,
                revision,
            },
            start_key: start_key.to_vec(),
            end_key: end_key.to_vec(),
        },
        cfs,
        records,
    })
}

/// Checks and decodes a snapshot's bytes completely (magic, version, checksum, meta,
/// column-family table, every record's framing, order and range, record count) without
/// touching any engine. Never panics, whatever the input.
pub fn verify(data: &[u8]) -> Result<SnapshotMeta> {
    decode(data).map(|d| d.meta)
}

/// Replaces the region's data in `engine` with the snapshot's and returns its meta.
///
/// The snapshot is verified completely before anything is written. Then ONE write batch
/// deletes `[start, end)` in every data column family of `engine`, puts every record, and
/// stages the meta's apply state (`ApplyState::stage`), so a reader or a crash sees the old
/// region or the new one, never a mix; then the engine is flushed, because the engine has no
/// WAL and the caller truncates the raft log right after. A column family named by the
/// snapshot but missing here is an error ([`Error::UnknownColumnFamily`]), detected before any
/// write.
///
/// The caller must be the region's only writer while this runs (the store loop applies a
/// snapshot in place of entries): with an unbounded end, the end of the deleted range is the
/// last key present when `apply` looks.
pub fn apply(engine: &Engine, data: &[u8]) -> Result<SnapshotMeta> {
    let decoded = decode(data)?;
    let present = engine.cf_names();
    if let Some(missing) = decoded.cfs.iter().find(|cf| !present.contains(cf)) {
        return Err(Error::UnknownColumnFamily(missing.clone()));
    }
    let meta = decoded.meta;
    let mut batch = WriteBatch::new();
    for cf in present.iter().filter(|c| c.as_str() != RAFT_CF) {
        if let Some(end) = clear_end(engine, cf, &meta.start_key, &meta.end_key)? {
            batch.delete_range(cf, &meta.start_key, &end);
        }
    }
    for rec in &decoded.records {
        // `decode` checked every index against the table.
        let Some(cf) = decoded.cfs.get(rec.cf) else {
            return Err(Error::Corrupt {
                offset: 0,
                reason: "record names a column family outside the table",
            });
        };
        batch.put(cf, rec.key, rec.value);
    }
    meta.apply.stage(&mut batch, meta.region_id);
    engine.write(&batch)?;
    engine.flush()?;
    Ok(meta)
}

/// The exclusive end of the range to clear in `cf`: `end` itself when bounded. A range
/// tombstone needs a finite end and no byte string is above every key, so for an unbounded
/// range it is just past the last key at or after `start` (`None` when there is none).
fn clear_end(engine: &Engine, cf: &str, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
    if !end.is_empty() {
        return Ok(Some(end.to_vec()));
    }
    let opts = IterOptions {
        lower_bound: Some(start.to_vec()),
        upper_bound: None,
        reverse: true,
    };
    match engine.iter(cf, opts)?.next() {
        Some(item) => {
            let (mut last, _) = item?;
            // The smallest key above `last`.
            last.push(0);
            Ok(Some(last))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use pontoon_engine::Options;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Every data column family the tests use (`meta` is created on top of the defaults).
    const DATA_CFS: [&str; 4] = ["default", "lock", "meta", "write"];
    const REGION: u64 = 7;

    type Contents = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

    fn open(dir: &std::path::Path) -> Engine {
        let engine = Engine::open(dir, Options::default()).unwrap();
        if !engine.cf_names().iter().any(|c| c == "meta") {
            engine.create_cf("meta").unwrap();
        }
        engine
    }

    fn scan(engine: &Engine, cf: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
        engine
            .iter(cf, IterOptions::default())
            .unwrap()
            .map(|i| i.unwrap())
            .collect()
    }

    fn contents(engine: &Engine) -> Contents {
        DATA_CFS
            .iter()
            .map(|cf| (cf.to_string(), scan(engine, cf)))
            .collect()
    }

    /// Keys of `c` restricted to `[start, end)` (or to its complement with `inside` false).
    fn part(c: &Contents, start: &[u8], end: &[u8], inside: bool) -> Contents {
        c.iter()
            .map(|(cf, kvs)| {
                let kvs = kvs
                    .iter()
                    .filter(|(k, _)| in_range(k, start, end) == inside)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (cf.clone(), kvs)
            })
            .collect()
    }

    /// What a snapshot holds, per column family.
    fn records(data: &[u8]) -> Contents {
        let d = decode(data).unwrap();
        let mut c: Contents = d
            .cfs
            .iter()
            .map(|cf| (cf.clone(), BTreeMap::new()))
            .collect();
        for r in &d.records {
            c.get_mut(&d.cfs[r.cf])
                .unwrap()
                .insert(r.key.to_vec(), r.value.to_vec());
        }
        c
    }

    fn put_all(engine: &Engine, keys: &[(&str, &str, &str)], state: Option<ApplyState>) {
        let mut b = WriteBatch::new();
        for (cf, k, v) in keys {
            b.put(cf, k.as_bytes(), v.as_bytes());
        }
        if let Some(s) = state {
            s.stage(&mut b, REGION);
        }
        engine.write(&b).unwrap();
    }

    /// The leader: keys in every data column family, in and out of `[b, m)`, some flushed to
    /// SSTables and some only in the memtable, one deleted, and the apply state of the region.
    fn leader(dir: &std::path::Path) -> (Engine, ApplyState) {
        let engine = open(dir);
        put_all(
            &engine,
            &[
                ("default", "a", "out-before"),
                ("default", "b", "v-b"),
                ("default", "c", "v-c"),
                ("default", "gone", "deleted below"),
                ("lock", "d", "lock-d"),
                ("write", "e", "write-e"),
                ("write", "m", "out-at-end"),
                ("meta", "f", "meta-f"),
            ],
            Some(ApplyState {
                applied_index: 5,
                applied_term: 2,
                revision: 4,
            }),
        );
        engine.flush().unwrap();
        engine.delete("default", b"gone").unwrap();
        let state = ApplyState {
            applied_index: 9,
            applied_term: 3,
            revision: 8,
        };
        put_all(
            &engine,
            &[
                ("default", "c", "v-c2"),
                ("lock", "l", "lock-l"),
                ("write", "z", "out-after"),
                ("default", "", "empty key"),
            ],
            Some(state),
        );
        // Another region's apply state must not leak into REGION's snapshot.
        let mut b = WriteBatch::new();
        ApplyState {
            applied_index: 100,
            applied_term: 100,
            revision: 100,
        }
        .stage(&mut b, 8);
        engine.write(&b).unwrap();
        (engine, state)
    }

    /// The follower: stale keys in and out of the range, and raft-CF keys that are not
    /// REGION's apply state.
    fn follower(dir: &std::path::Path) -> Engine {
        let engine = open(dir);
        put_all(
            &engine,
            &[
                ("default", "a", "f-a"),
                ("default", "b", "stale-b"),
                ("default", "bb", "stale-bb"),
                ("lock", "k", "stale-k"),
                ("write", "m", "f-m"),
                ("write", "\u{7f}\u{7f}", "f-high"),
                ("meta", "c", "stale-meta"),
                ("raft", "other", "untouched"),
                ("raft", "apply/\0\0\0\0\0\0\0\x08", "region 8"),
            ],
            Some(ApplyState {
                applied_index: 3,
                applied_term: 1,
                revision: 2,
            }),
        );
        engine.flush().unwrap();
        put_all(&engine, &[("write", "j", "stale-j in memtable")], None);
        engine
    }

    fn raft_others(engine: &Engine) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut m = scan(engine, RAFT_CF);
        m.remove(&b"apply/\0\0\0\0\0\0\0\x07"[..]);
        m
    }

    #[test]
    fn build_then_apply_replaces_exactly_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let (leader, state) = leader(&dir.path().join("leader"));
        let (meta, data) = build(&leader, REGION, b"b", b"m").unwrap();
        assert_eq!(
            meta,
            SnapshotMeta {
                region_id: REGION,
                apply: state,
                start_key: b"b".to_vec(),
                end_key: b"m".to_vec(),
            }
        );
        assert_eq!(verify(&data).unwrap(), meta);
        let want = part(&contents(&leader), b"b", b"m", true);
        assert_eq!(records(&data), want);
        assert_eq!(
            want["default"].len(),
            2,
            "b and the newest c; not the deleted key"
        );
        assert_eq!(want["default"][&b"c"[..]], b"v-c2");

        let fdir = dir.path().join("follower");
        let f = follower(&fdir);
        let before = contents(&f);
        let raft_before = raft_others(&f);
        assert_eq!(apply(&f, &data).unwrap(), meta);
        // Durable when `apply` returns, not only after the flush a clean shutdown does.
        assert_eq!(f.flushed_seq(), f.last_seq());
        let check = |f: &Engine| {
            let after = contents(f);
            assert_eq!(part(&after, b"b", b"m", true), want);
            assert_eq!(
                part(&after, b"b", b"m", false),
                part(&before, b"b", b"m", false),
                "keys outside the range are untouched"
            );
            assert_eq!(raft_others(f), raft_before, "other raft-CF keys untouched");
            assert_eq!(ApplyState::load(f, REGION).unwrap(), meta.apply);
        };
        check(&f);
        // Flushed: the data survives a restart (the engine has no WAL).
        drop(f);
        let f = open(&fdir);
        check(&f);
    }

    #[test]
    fn unbounded_ranges_replace_everything_from_start() {
        let dir = tempfile::tempdir().unwrap();
        let (leader, state) = leader(&dir.path().join("leader"));
        for start in [&b""[..], b"c"] {
            let (meta, data) = build(&leader, REGION, start, b"").unwrap();
            assert_eq!(meta.apply, state);
            let want = part(&contents(&leader), start, b"", true);
            assert_eq!(records(&data), want);
            let fdir = dir.path().join(format!("follower-{}", start.len()));
            let f = follower(&fdir);
            let before = contents(&f);
            let raft_before = raft_others(&f);
            apply(&f, &data).unwrap();
            drop(f);
            let f = open(&fdir);
            let after = contents(&f);
            assert_eq!(part(&after, start, b"", true), want);
            assert_eq!(
                part(&after, start, b"", false),
                part(&before, start, b"", false)
            );
            assert_eq!(raft_others(&f), raft_before);
            assert_eq!(ApplyState::load(&f, REGION).unwrap(), state);
        }
    }

    #[test]
    fn an_empty_region_snapshot_clears_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let leader = open(&dir.path().join("leader"));
        let (meta, data) = build(&leader, REGION, b"b", b"m").unwrap();
        assert_eq!(meta.apply, ApplyState::default());
        let f = follower(&dir.path().join("follower"));
        apply(&f, &data).unwrap();
        let after = contents(&f);
        assert!(part(&after, b"b", b"m", true)
            .values()
            .all(|m| m.is_empty()));
        assert_eq!(ApplyState::load(&f, REGION).unwrap(), ApplyState::default());
    }

    #[test]
    fn unknown_column_family_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (leader, _) = leader(&dir.path().join("leader"));
        leader.create_cf("extra").unwrap();
        let (_, data) = build(&leader, REGION, b"", b"").unwrap();
        let f = follower(&dir.path().join("follower"));
        let before = contents(&f);
        let state = ApplyState::load(&f, REGION).unwrap();
        assert!(matches!(
            apply(&f, &data),
            Err(Error::UnknownColumnFamily(cf)) if cf == "extra"
        ));
        assert_eq!(contents(&f), before);
        assert_eq!(ApplyState::load(&f, REGION).unwrap(), state);
    }

    #[test]
    fn build_rejects_inverted_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        for (s, e) in [(&b"m"[..], &b"b"[..]), (b"b", b"b")] {
            assert!(matches!(
                build(&engine, REGION, s, e),
                Err(Error::InvalidRange { .. })
            ));
        }
    }

    fn small_snapshot() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        put_all(
            &engine,
            &[
                ("default", "k1", "v1"),
                ("lock", "k2", ""),
                ("write", "k3", "v3"),
            ],
            Some(ApplyState {
                applied_index: 4,
                applied_term: 2,
                revision: 3,
            }),
        );
        build(&engine, REGION, b"k", b"l").unwrap().1
    }

    #[test]
    fn verify_rejects_every_flip_and_truncation() {
        let data = small_snapshot();
        assert!(verify(&data).is_ok());
        for pos in 0..data.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = data.clone();
                bad[pos] ^= mask;
                assert!(verify(&bad).is_err(), "flip {mask:#x} at {pos} accepted");
            }
        }
        for len in 0..data.len() {
            assert!(
                verify(&data[..len]).is_err(),
                "truncation to {len} accepted"
            );
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(verify(&longer).is_err());
    }

    /// Hand-made snapshots that pass the checksum but break a rule of the format.
    #[test]
    fn verify_rejects_checksummed_format_violations() {
        let meta = SnapshotMeta {
            region_id: REGION,
            apply: ApplyState::default(),
            start_key: b"b".to_vec(),
            end_key: b"m".to_vec(),
        };
        let make = |meta: &SnapshotMeta, cfs: &[&str], recs: &[(u32, &str)], count: u64| {
            let cfs: Vec<String> = cfs.iter().map(|s| s.to_string()).collect();
            let mut out = Vec::new();
            encode_header(&mut out, meta, &cfs).unwrap();
            for (cf, k) in recs {
                encode_record(&mut out, *cf, k.as_bytes(), b"v").unwrap();
            }
            encode_trailer(&mut out, count);
            out
        };
        let good = make(
            &meta,
            &["default", "lock"],
            &[(0, "c"), (0, "d"), (1, "c")],
            3,
        );
        assert_eq!(verify(&good).unwrap(), meta);
        let corrupt = |data: Vec<u8>, why: &str| {
            assert!(
                matches!(verify(&data), Err(Error::Corrupt { .. })),
                "{why}: {:?}",
                verify(&data)
            );
        };
        corrupt(make(&meta, &["default"], &[(0, "a")], 1), "key below start");
        corrupt(make(&meta, &["default"], &[(0, "m")], 1), "key at end");
        corrupt(make(&meta, &["default"], &[(1, "c")], 1), "cf out of table");
        corrupt(
            make(&meta, &["default"], &[(0, "d"), (0, "c")], 2),
            "unsorted",
        );
        corrupt(
            make(&meta, &["default"], &[(0, "c"), (0, "c")], 2),
            "duplicate",
        );
        corrupt(make(&meta, &["default"], &[(0, "c")], 2), "count too high");
        corrupt(make(&meta, &["default"], &[(0, "c")], 0), "count too low");
        corrupt(make(&meta, &["lock", "default"], &[], 0), "cfs unsorted");
        corrupt(make(&meta, &["lock", "lock"], &[], 0), "cfs duplicated");
        corrupt(make(&meta, &["default", "raft"], &[], 0), "raft cf");
        corrupt(make(&meta, &[""], &[], 0), "empty cf name");
        let inverted = SnapshotMeta {
            start_key: b"m".to_vec(),
            end_key: b"b".to_vec(),
            ..meta.clone()
        };
        corrupt(make(&inverted, &[], &[], 0), "inverted range");
        // A record cut short: drop the last value byte, then re-checksum.
        let mut cut = good[..good.len() - TRAILER_LEN - 1].to_vec();
        encode_trailer(&mut cut, 3);
        corrupt(cut, "record cut short");
        // A name that is not UTF-8.
        let mut bad_name = Vec::new();
        encode_header(&mut bad_name, &meta, &["a".to_string()]).unwrap();
        let at = bad_name.len() - 1;
        bad_name[at] = 0xff;
        encode_trailer(&mut bad_name, 0);
        corrupt(bad_name, "non-UTF-8 name");
        // Another version is refused as such, checksum or not.
        let mut v2 = good.clone();
        v2[4] = 2;
        assert!(matches!(verify(&v2), Err(Error::UnsupportedVersion(2))));
        assert!(matches!(verify(b"NOPE\x01\0\0\0"), Err(Error::BadMagic)));
    }

    /// Rewrites the trailer's checksum so that mutated bytes reach the structural decoder.
    fn rechecksum(data: &mut [u8]) {
        if data.len() >= 4 {
            let n = data.len() - 4;
            let crc = crc32fast::hash(&data[..n]);
            data[n..].copy_from_slice(&crc.to_le_bytes());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn verify_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = verify(&data);
            // With the magic and version in front and a valid checksum behind, the bytes get
            // past the cheap checks into the structural decoder.
            let mut framed = b"PNSN\x01\0\0\0".to_vec();
            framed.extend_from_slice(&data);
            framed.extend_from_slice(&[0; 4]);
            rechecksum(&mut framed);
            let _ = verify(&framed);
        }

        #[test]
        fn verify_never_panics_on_mutated_snapshots(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut data = SMALL.with(|s| s.clone());
            for (i, b) in &edits {
                let i = i.index(data.len());
                data[i] = *b;
            }
            if truncate {
                data.truncate(cut.index(data.len()));
            }
            rechecksum(&mut data);
            if let Ok(meta) = verify(&data) {
                // Whatever passes must decode consistently.
                prop_assert_eq!(meta, decode(&data).unwrap().meta);
            }
        }
    }

    thread_local! {
        static SMALL: Vec<u8> = small_snapshot();
    }

    /// A snapshot taken while writes continue holds exactly the writes up to its applied
    /// index: each write puts its keys and the applied index in one batch.
    #[test]
    fn snapshot_under_concurrent_writes_matches_its_apply_state() {
        use std::sync::atomic::{AtomicU64, Ordering};
        /// Writes at least this many batches...
        const MIN_WRITES: u64 = 2000;
        /// ...and keeps writing until this many snapshots were built meanwhile.
        const MIN_SNAPSHOTS: u64 = 3;
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(
            dir.path(),
            Options {
                // Small memtables so that flushes run while snapshots are built.
                write_buffer_size: 64 << 10,
                ..Options::default()
            },
        )
        .unwrap();
        let key = |i: u64| format!("k{i:06}").into_bytes();
        let built = AtomicU64::new(0);
        // The index of the writer's last batch, 0 while it still writes.
        let last = AtomicU64::new(0);
        let snaps = std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 1;
                loop {
                    // Decided BEFORE the final write, so the snapshots counted here all
                    // finished before it: each of them was taken while writes continued.
                    let final_write =
                        i >= MIN_WRITES && built.load(Ordering::Acquire) >= MIN_SNAPSHOTS;
                    let mut b = WriteBatch::new();
                    b.put("default", &key(i), &[7u8; 100]);
                    // Other data CFs move too; their keys must track the index as well.
                    b.put(if i % 2 == 0 { "lock" } else { "write" }, &key(i), b"x");
                    // Outside the range: never in the snapshot.
                    b.put("default", format!("z{i}").as_bytes(), b"out");
                    ApplyState {
                        applied_index: i,
                        applied_term: 1,
                        revision: i as i64 + 1,
                    }
                    .stage(&mut b, REGION);
                    engine.write(&b).unwrap();
                    if final_write {
                        last.store(i, Ordering::Release);
                        return;
                    }
                    i += 1;
                }
            });
            let mut snaps = Vec::new();
            while last.load(Ordering::Acquire) == 0 {
                snaps.push(build(&engine, REGION, b"k", b"l").unwrap());
                built.fetch_add(1, Ordering::Release);
            }
            snaps.push(build(&engine, REGION, b"k", b"l").unwrap());
            snaps
        });
        let last = last.load(Ordering::Acquire);
        let mut during = 0;
        for (meta, data) in &snaps {
            let n = meta.apply.applied_index;
            assert_eq!(meta.apply.revision, if n == 0 { 1 } else { n as i64 + 1 });
            if n < last {
                during += 1;
            }
            let c = records(data);
            let want: Vec<Vec<u8>> = (1..=n).map(key).collect();
            assert_eq!(c["default"].keys().cloned().collect::<Vec<_>>(), want);
            let lock: Vec<Vec<u8>> = (1..=n).filter(|i| i % 2 == 0).map(key).collect();
            assert_eq!(c["lock"].keys().cloned().collect::<Vec<_>>(), lock);
            assert_eq!(c["write"].len() + c["lock"].len(), n as usize);
        }
        assert!(
            during >= MIN_SNAPSHOTS,
            "only {during} snapshots during writes"
        );
        assert_eq!(
            snaps.last().unwrap().0.apply.applied_index,
            last,
            "the last snapshot sees every write"
        );
    }

    /// A crash at any point of `apply` (the write, the flush's files, its manifest edit)
    /// leaves the old region or the new one, never a mix.
    #[test]
    fn crash_during_apply_is_all_or_nothing() {
        use pontoon_engine::io::FaultFs;
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let (leader, state) = leader(dir.path());
        let (_, data) = build(&leader, REGION, b"b", b"m").unwrap();
        let snap = part(&contents(&leader), b"b", b"m", true);
        let opts = || Options {
            auto_compaction: false,
            ..Options::default()
        };
        let start = |fs: &FaultFs| {
            let e = Engine::open_with_fs("/f", opts(), Arc::new(fs.clone())).unwrap();
            e.create_cf("meta").unwrap();
            put_all(
                &e,
                &[
                    ("default", "b", "stale-b"),
                    ("lock", "k", "stale-k"),
                    ("default", "a", "f-a"),
                ],
                Some(ApplyState {
                    applied_index: 3,
                    applied_term: 1,
                    revision: 2,
                }),
            );
            e.flush().unwrap();
            e
        };
        // Count the file-system operations of one clean apply.
        let fs = FaultFs::new();
        let e = start(&fs);
        let old = contents(&e);
        let base = fs.ops();
        apply(&e, &data).unwrap();
        let total = fs.ops() - base;
        drop(e);
        let mut saw = (false, false);
        for k in 0..=total {
            let fs = FaultFs::new();
            let e = start(&fs);
            fs.fail_after(Some(k));
            let result = apply(&e, &data);
            let after = fs.crash();
            drop(e);
            let e = Engine::open_with_fs("/f", opts(), Arc::new(after)).unwrap();
            let got = contents(&e);
            let applied = ApplyState::load(&e, REGION).unwrap();
            if applied == state {
                assert_eq!(part(&got, b"b", b"m", true), snap, "crash after op {k}");
                assert_eq!(part(&got, b"b", b"m", false), part(&old, b"b", b"m", false));
                saw.1 = true;
            } else {
                assert!(result.is_err(), "apply reported success but was lost");
                assert_eq!(applied.applied_index, 3, "crash after op {k}");
                assert_eq!(got, old, "crash after op {k}");
                saw.0 = true;
            }
        }
        assert_eq!(saw, (true, true), "both outcomes were exercised");
    }
}
