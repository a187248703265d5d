//! The manifest: an append-only log of [`VersionEdit`]s describing which SSTables make up
//! each column family, plus the column-family set and the flushed sequence.
//!
//! File `CURRENT` names the live manifest (`MANIFEST-NNNNNN`). A new manifest is written as a
//! full snapshot of the current version, fsynced, and made live by writing `CURRENT.tmp`,
//! fsyncing it, renaming it over `CURRENT` and fsyncing the directory. The layout is in
//! `engine/FORMAT.md`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{FileSystem, WritableFile};

/// Magic number at the start of every manifest file ("PNTNMANF" little-endian).
pub const MANIFEST_MAGIC: u64 = u64::from_le_bytes(*b"PNTNMANF");
/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 1;
const HEADER_LEN: usize = 12;
const RECORD_HEADER_LEN: usize = 8;
/// Upper bound on one record, to refuse absurd lengths from damaged files.
const MAX_RECORD_LEN: usize = 256 << 20;

/// What the manifest records about one SSTable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileMeta {
    /// File number; the file is `NNNNNN.sst`.
    pub number: u64,
    /// File size in bytes.
    pub size: u64,
    /// Smallest user key (including range-tombstone starts).
    pub smallest: Vec<u8>,
    /// Largest user key (including range-tombstone ends), inclusive.
    pub largest: Vec<u8>,
    /// Smallest sequence number in the file.
    pub min_seq: u64,
    /// Largest sequence number in the file.
    pub max_seq: u64,
    /// Point entries plus range tombstones.
    pub num_entries: u64,
    /// Point and range tombstones.
    pub num_deletions: u64,
}

impl FileMeta {
    /// True if the file's key range intersects the inclusive range `[lo, hi]`.
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest.as_slice() <= hi && lo <= self.largest.as_slice()
    }
}

impl AsRef<FileMeta> for FileMeta {
    fn as_ref(&self) -> &FileMeta {
        self
    }
}

/// One atomic change to the set of files and column families.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VersionEdit {
    /// Column families created: `(id, name)`.
    pub add_cfs: Vec<(u32, String)>,
    /// Column families dropped, by id.
    pub drop_cfs: Vec<u32>,
    /// Files added: `(cf, level, meta)`.
    pub new_files: Vec<(u32, u32, FileMeta)>,
    /// Files removed: `(cf, level, number)`.
    pub deleted_files: Vec<(u32, u32, u64)>,
    /// Next unused file number.
    pub next_file_number: Option<u64>,
    /// Every write batch with a sequence <= this is in SSTables.
    pub flushed_seq: Option<u64>,
    /// Next unused column family id.
    pub next_cf_id: Option<u32>,
    /// Where round-robin compaction of `(cf, level)` resumes.
    pub compact_pointers: Vec<(u32, u32, Vec<u8>)>,
}

const TAG_ADD_CF: u8 = 1;
const TAG_DROP_CF: u8 = 2;
const TAG_NEW_FILE: u8 = 3;
const TAG_DELETE_FILE: u8 = 4;
const TAG_NEXT_FILE: u8 = 5;
const TAG_FLUSHED_SEQ: u8 = 6;
const TAG_NEXT_CF: u8 = 7;
const TAG_COMPACT_POINTER: u8 = 8;

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    put_u32(b, v.len() as u32);
    b.extend_from_slice(v);
}

impl VersionEdit {
    /// Encodes the edit's payload (without the record header).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for (id, name) in &self.add_cfs {
            b.push(TAG_ADD_CF);
            put_u32(&mut b, *id);
            put_bytes(&mut b, name.as_bytes());
        }
        for id in &self.drop_cfs {
            b.push(TAG_DROP_CF);
            put_u32(&mut b, *id);
        }
        for (cf, level, f) in &self.new_files {
            b.push(TAG_NEW_FILE);
            put_u32(&mut b, *cf);
            put_u32(&mut b, *level);
            put_u64(&mut b, f.number);
            put_u64(&mut b, f.size);
            put_u64(&mut b, f.min_seq);
            put_u64(&mut b, f.max_seq);
            put_u64(&mut b, f.num_entries);
            put_u64(&mut b, f.num_deletions);
            put_bytes(&mut b, &f.smallest);
            put_bytes(&mut b, &f.largest);
        }
        for (cf, level, number) in &self.deleted_files {
            b.push(TAG_DELETE_FILE);
            put_u32(&mut b, *cf);
            put_u32(&mut b, *level);
            put_u64(&mut b, *number);
        }
        if let Some(n) = self.next_file_number {
            b.push(TAG_NEXT_FILE);
            put_u64(&mut b, n);
        }
        if let Some(s) = self.flushed_seq {
            b.push(TAG_FLUSHED_SEQ);
            put_u64(&mut b, s);
        }
        if let Some(n) = self.next_cf_id {
            b.push(TAG_NEXT_CF);
            put_u32(&mut b, n);
        }
        for (cf, level, key) in &self.compact_pointers {
            b.push(TAG_COMPACT_POINTER);
            put_u32(&mut b, *cf);
            put_u32(&mut b, *level);
            put_bytes(&mut b, key);
        }
        b
    }

    /// Decodes a payload. `file` and `base` (offset of the payload in the file) name the place
    /// of any error.
    pub fn decode(payload: &[u8], file: &Path, base: u64) -> Result<VersionEdit> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
            file,
            base,
        };
        let mut e = VersionEdit::default();
        while r.pos < payload.len() {
            let tag = r.u8()?;
            match tag {
                TAG_ADD_CF => {
                    let id = r.u32()?;
                    let name = String::from_utf8(r.bytes()?.to_vec())
                        .map_err(|_| r.err("column family name is not UTF-8"))?;
                    e.add_cfs.push((id, name));
                }
                TAG_DROP_CF => e.drop_cfs.push(r.u32()?),
                TAG_NEW_FILE => {
                    let cf = r.u32()?;
                    let level = r.u32()?;
                    let f = FileMeta {
                        number: r.u64()?,
                        size: r.u64()?,
                        min_seq: r.u64()?,
                        max_seq: r.u64()?,
                        num_entries: r.u64()?,
                        num_deletions: r.u64()?,
                        smallest: r.bytes()?.to_vec(),
                        largest: r.bytes()?.to_vec(),
                    };
                    e.new_files.push((cf, level, f));
                }
                TAG_DELETE_FILE => {
                    let cf = r.u32()?;
                    let level = r.u32()?;
                    e.deleted_files.push((cf, level, r.u64()?));
                }
                TAG_NEXT_FILE => e.next_file_number = Some(r.u64()?),
                TAG_FLUSHED_SEQ => e.flushed_seq = Some(r.u64()?),
                TAG_NEXT_CF => e.next_cf_id = Some(r.u32()?),
                TAG_COMPACT_POINTER => {
                    let cf = r.u32()?;
                    let level = r.u32()?;
                    e.compact_pointers.push((cf, level, r.bytes()?.to_vec()));
                }
                t => return Err(r.err(&format!("unknown version edit tag {t}"))),
            }
        }
        Ok(e)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a Path,
    base: u64,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: &str) -> Error {
        Error::corruption(self.file, self.base + self.pos as u64, reason)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| self.err("version edit field runs past the record"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Frames an edit as a manifest record: `[payload len u32][crc32 u32][payload]`.
pub fn encode_record(edit: &VersionEdit) -> Vec<u8> {
    let payload = edit.encode();
    let mut rec = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    put_u32(&mut rec, payload.len() as u32);
    put_u32(&mut rec, crc32fast::hash(&payload));
    rec.extend_from_slice(&payload);
    rec
}

/// The file header: magic and format version.
pub fn encode_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    put_u64(&mut h, MANIFEST_MAGIC);
    put_u32(&mut h, MANIFEST_VERSION);
    h
}

/// Decodes a whole manifest file into its edits.
///
/// A record cut short at the very end of the file, or a final record whose checksum fails,
/// is a torn write from a crash during an append and is ignored (its edit was never
/// acknowledged). Any other damage is [`Error::Corruption`] / [`Error::ChecksumMismatch`].
pub fn decode_manifest(data: &[u8], file: &Path) -> Result<Vec<VersionEdit>> {
    if data.len() < HEADER_LEN {
        return Err(Error::corruption(
            file,
            0,
            "manifest shorter than its header",
        ));
    }
    let mut m = [0u8; 8];
    m.copy_from_slice(&data[..8]);
    if u64::from_le_bytes(m) != MANIFEST_MAGIC {
        return Err(Error::corruption(file, 0, "bad manifest magic"));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&data[8..12]);
    let version = u32::from_le_bytes(v);
    if version != MANIFEST_VERSION {
        return Err(Error::corruption(
            file,
            8,
            format!("unsupported manifest version {version}"),
        ));
    }
    let mut edits = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < data.len() {
        if data.len() - pos < RECORD_HEADER_LEN {
            break; // torn tail
        }
        let mut l = [0u8; 4];
        l.copy_from_slice(&data[pos..pos + 4]);
        let len = u32::from_le_bytes(l) as usize;
        let mut c = [0u8; 4];
        c.copy_from_slice(&data[pos + 4..pos + 8]);
        let expected = u32::from_le_bytes(c);
        if len > MAX_RECORD_LEN {
            return Err(Error::corruption(
                file,
                pos as u64,
                format!("manifest record length {len} is absurd"),
            ));
        }
        let start = pos + RECORD_HEADER_LEN;
        let Some(end) = start.checked_add(len).filter(|e| *e <= data.len()) else {
            break; // torn tail
        };
        let payload = &data[start..end];
        let actual = crc32fast::hash(payload);
        if actual != expected {
            if end == data.len() {
                break; // torn final record
            }
            return Err(Error::ChecksumMismatch {
                file: file.to_path_buf(),
                offset: pos as u64,
                expected,
                actual,
            });
        }
        edits.push(VersionEdit::decode(payload, file, start as u64)?);
        pos = end;
    }
    Ok(edits)
}

/// Name of manifest number `n`.
pub fn manifest_name(n: u64) -> String {
    format!("MANIFEST-{n:06}")
}

/// Parses a manifest file name.
pub fn parse_manifest_name(name: &str) -> Option<u64> {
    name.strip_prefix("MANIFEST-")?.parse().ok()
}

/// An open manifest being appended to.
pub struct ManifestWriter {
    path: PathBuf,
    file: Box<dyn WritableFile>,
}

impl ManifestWriter {
    /// Writes manifest `number` holding `snapshot`, syncs it, and makes it current (CURRENT
    /// is replaced atomically and the directory synced).
    pub fn create(
        fs: &dyn FileSystem,
        dir: &Path,
        number: u64,
        snapshot: &VersionEdit,
    ) -> Result<ManifestWriter> {
        let name = manifest_name(number);
        let path = dir.join(&name);
        let mut file = fs.create(&path)?;
        file.append(&encode_header())?;
        file.append(&encode_record(snapshot))?;
        file.sync()?;
        let tmp = dir.join("CURRENT.tmp");
        let mut cur = fs.create(&tmp)?;
        cur.append(format!("{name}\n").as_bytes())?;
        cur.sync()?;
        drop(cur);
        fs.rename(&tmp, &dir.join("CURRENT"))?;
        fs.sync_dir(dir)?;
        Ok(ManifestWriter { path, file })
    }

    /// Appends `edit` and fsyncs: when this returns Ok the edit survives a crash.
    pub fn append(&mut self, edit: &VersionEdit) -> Result<()> {
        self.file.append(&encode_record(edit))?;
        self.file.sync()
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.file.len()
    }

    /// Path of the manifest.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads `CURRENT` and returns the live manifest's number, or None for a new directory.
pub fn read_current(fs: &dyn FileSystem, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join("CURRENT");
    if !fs.exists(&path) {
        return Ok(None);
    }
    let data = fs.read_all(&path)?;
    let text = std::str::from_utf8(&data)
        .map_err(|_| Error::corruption(&path, 0, "CURRENT is not UTF-8"))?;
    let n = parse_manifest_name(text.trim_end())
        .ok_or_else(|| Error::corruption(&path, 0, format!("CURRENT names {text:?}")))?;
    Ok(Some(n))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> VersionEdit {
        VersionEdit {
            add_cfs: vec![(4, "extra".into())],
            drop_cfs: vec![2],
            new_files: vec![(
                1,
                0,
                FileMeta {
                    number: 7,
                    size: 100,
                    smallest: b"a".to_vec(),
                    largest: b"z".to_vec(),
                    min_seq: 1,
                    max_seq: 9,
                    num_entries: 3,
                    num_deletions: 1,
                },
            )],
            deleted_files: vec![(1, 1, 3)],
            next_file_number: Some(8),
            flushed_seq: Some(9),
            next_cf_id: Some(5),
            compact_pointers: vec![(1, 2, b"m".to_vec())],
        }
    }

    #[test]
    fn edits_round_trip() {
        let e = sample();
        let mut file = encode_header();
        file.extend(encode_record(&e));
        file.extend(encode_record(&VersionEdit::default()));
        let got = decode_manifest(&file, Path::new("M")).unwrap();
        assert_eq!(got, vec![e, VersionEdit::default()]);
    }

    #[test]
    fn torn_tail_is_ignored_but_middle_damage_is_not() {
        let e = sample();
        let mut file = encode_header();
        file.extend(encode_record(&e));
        let first_end = file.len();
        file.extend(encode_record(&e));
        for cut in first_end..file.len() {
            let got = decode_manifest(&file[..cut], Path::new("M")).unwrap();
            assert_eq!(got.len(), 1, "cut at {cut}");
        }
        // Flip a byte of the first record's payload: that is corruption, not a torn tail.
        let mut bad = file.clone();
        bad[HEADER_LEN + RECORD_HEADER_LEN + 2] ^= 0x40;
        assert!(matches!(
            decode_manifest(&bad, Path::new("M")),
            Err(Error::ChecksumMismatch { offset: 12, .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let e = sample();
        let mut file = encode_header();
        file.extend(encode_record(&e));
        for i in 0..file.len() {
            for bit in [0x01u8, 0x80] {
                let mut f = file.clone();
                f[i] ^= bit;
                let _ = decode_manifest(&f, Path::new("M"));
            }
        }
        for garbage in [&b""[..], b"PNTN", &[0xff; 40]] {
            assert!(decode_manifest(garbage, Path::new("M")).is_err());
        }
    }
}
