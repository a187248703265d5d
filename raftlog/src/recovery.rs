//! Recovery: rebuilds the index by scanning every segment in order (through the
//! file's `read_all`, a `memmap2` map for real files), deciding what to do with bytes
//! that do not decode according to the [`RecoveryMode`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, RecoveryMode};
use crate::error::{Error, Result};
use crate::format::{
    check_segment_header, decode_batch, read_record, RecordRead, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::fs::{
    free_path, parse_free_name, parse_segment_name, segment_path, FileSystem, LogFile,
    PREPARING_SUFFIX,
};
use crate::memtable::{Cache, MemTable};
use crate::writer::{create_segment, Active};

/// What recovery hands to the store.
pub(crate) struct Recovered {
    pub mem: MemTable,
    pub files: BTreeMap<u32, Arc<dyn LogFile>>,
    pub active: Active,
    /// Purged segments kept for reuse (old sequence numbers, oldest first).
    pub free: Vec<u32>,
}

/// A bad spot found while scanning a segment.
struct Bad {
    offset: u64,
    reason: String,
    checksum: Option<(u32, u32)>,
    /// True when the bytes cannot be a write torn by a crash (a valid record follows, or
    /// a record with a valid checksum does not decode).
    surely_corrupt: bool,
}

impl Bad {
    fn into_error(self, path: &Path) -> Error {
        match self.checksum {
            Some((expected, actual)) => Error::ChecksumMismatch {
                file: path.to_path_buf(),
                offset: self.offset,
                expected,
                actual,
            },
            None => Error::Corruption {
                file: path.to_path_buf(),
                offset: self.offset,
                reason: self.reason,
            },
        }
    }
}

/// Scans one segment into `mem`. Returns the end of the valid records, the first bad
/// spot, if any, and whether the segment is of format version 1.
fn scan(bytes: &[u8], seq: u32, mem: &mut MemTable) -> (u64, Option<Bad>, bool) {
    let seed = match check_segment_header(bytes, seq) {
        Ok(seed) => seed,
        Err(reason) => {
            let zero = bytes.iter().all(|&b| b == 0);
            let bad = Bad {
                offset: 0,
                reason,
                checksum: None,
                surely_corrupt: !zero && bytes.len() > SEGMENT_HEADER_LEN as usize,
            };
            return (0, Some(bad), false);
        }
    };
    let v1 = seed.is_none();
    let mut pos = SEGMENT_HEADER_LEN as usize;
    loop {
        let rest = &bytes[pos..];
        match read_record(rest, seed) {
            RecordRead::End => {
                // Version 2 segments may be recycled files: what follows the end marker
                // is stale. Version 1 segments were zero-filled and never reused.
                if seed.is_some() || rest.iter().all(|&b| b == 0) {
                    return (pos as u64, None, v1);
                }
                let bad = Bad {
                    offset: pos as u64,
                    reason: "non-zero bytes after the end of the records".into(),
                    checksum: None,
                    surely_corrupt: false,
                };
                return (pos as u64, Some(bad), v1);
            }
            RecordRead::Invalid {
                reason,
                checksum,
                claimed_len,
            } => {
                // A valid record right after the bad one means the bad one was complete
                // when written: not a torn tail.
                let followed = claimed_len.and_then(|l| rest.get(l..)).is_some_and(|next| {
                    matches!(read_record(next, seed), RecordRead::Valid { .. })
                });
                let bad = Bad {
                    offset: pos as u64,
                    reason,
                    checksum,
                    surely_corrupt: followed,
                };
                return (pos as u64, Some(bad), v1);
            }
            RecordRead::Valid { payload, total_len } => {
                if (pos + total_len) as u64 > u64::from(u32::MAX) {
                    let bad = Bad {
                        offset: pos as u64,
                        reason: "segment larger than 4 GiB".into(),
                        checksum: None,
                        surely_corrupt: true,
                    };
                    return (pos as u64, Some(bad), v1);
                }
                match decode_batch(payload) {
                    Ok(ops) => {
                        let payload_offset = (pos + RECORD_HEADER_LEN) as u64;
                        mem.apply(&ops, payload, seq, payload_offset, &Cache::Nothing);
                    }
                    Err(reason) => {
                        let bad = Bad {
                            offset: pos as u64,
                            reason,
                            checksum: None,
                            surely_corrupt: true,
                        };
                        return (pos as u64, Some(bad), v1);
                    }
                }
                pos += total_len;
            }
        }
    }
}

/// Opens every segment of `dir`, rebuilds the index and prepares the active segment.
pub(crate) fn recover(fs: &dyn FileSystem, dir: &Path, cfg: &Config) -> Result<Recovered> {
    fs.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let names = fs.list(dir).map_err(|e| Error::io(dir, e))?;
    for name in names.iter().filter(|n| n.ends_with(PREPARING_SUFFIX)) {
        // A segment prepared ahead of rotation that never became part of the log.
        let path = dir.join(name);
        fs.remove(&path).map_err(|e| Error::io(&path, e))?;
    }
    let mut seqs: Vec<u32> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    seqs.sort_unstable();
    let mut mem = MemTable::new(cfg.cache_capacity_bytes);
    let mut files = BTreeMap::new();
    let mut last_end = None;
    let mut last_v1 = false;
    for (i, &seq) in seqs.iter().enumerate() {
        let is_last = i + 1 == seqs.len();
        let path = segment_path(dir, seq);
        let file = fs.open(&path).map_err(|e| Error::io(&path, e))?;
        let bytes = file.read_all().map_err(|e| Error::io(&path, e))?;
        let (end, bad, v1) = scan(&bytes, seq, &mut mem);
        last_v1 = v1;
        drop(bytes);
        if let Some(bad) = bad {
            match cfg.recovery_mode {
                RecoveryMode::AbsoluteConsistency => return Err(bad.into_error(&path)),
                _ if is_last && !bad.surely_corrupt => {
                    log::warn!(
                        "raftlog: truncating torn tail of {} at offset {}: {}",
                        path.display(),
                        bad.offset,
                        bad.reason
                    );
                }
                RecoveryMode::TolerateAnyCorruption => {
                    log::warn!(
                        "raftlog: skipping the rest of {} from offset {}: {}",
                        path.display(),
                        bad.offset,
                        bad.reason
                    );
                }
                RecoveryMode::TolerateCorruptedTail => return Err(bad.into_error(&path)),
            }
            if is_last {
                last_end = Some((end, true));
            }
        } else if is_last {
            last_end = Some((end, false));
        }
        files.insert(seq, file);
    }
    let free = recycled_segments(fs, dir, &names, cfg)?;
    let active = match (seqs.last(), last_end) {
        (Some(&seq), Some((end, damaged))) => {
            let path = segment_path(dir, seq);
            let io = |e| Error::io(&path, e);
            let file = files
                .get(&seq)
                .cloned()
                .ok_or_else(|| Error::InvalidArgument("last segment vanished".into()))?;
            let mut offset = end;
            if damaged {
                // Cut the torn bytes away durably before appending after them.
                file.set_len(end).map_err(io)?;
                if end < SEGMENT_HEADER_LEN {
                    file.write_all_at(&crate::format::segment_header(seq), 0)
                        .map_err(io)?;
                    offset = SEGMENT_HEADER_LEN;
                }
                if cfg.preallocate {
                    file.allocate(cfg.target_file_size).map_err(io)?;
                }
                file.sync_data().map_err(io)?;
            }
            if last_v1 {
                // A version 1 segment takes no version 2 records: appends go to a new one.
                let seq = seq
                    .checked_add(1)
                    .ok_or_else(|| Error::InvalidArgument("segment sequence exhausted".into()))?;
                new_active(fs, dir, seq, cfg, &mut files)?
            } else {
                Active { seq, file, offset }
            }
        }
        _ => new_active(fs, dir, 1, cfg, &mut files)?,
    };
    Ok(Recovered {
        mem,
        files,
        active,
        free,
    })
}

/// Creates segment `seq` as the (empty) active one and adds it to `files`.
fn new_active(
    fs: &dyn FileSystem,
    dir: &Path,
    seq: u32,
    cfg: &Config,
    files: &mut BTreeMap<u32, Arc<dyn LogFile>>,
) -> Result<Active> {
    let file = create_segment(fs, dir, seq, None, cfg)?;
    files.insert(seq, file.clone());
    Ok(Active {
        seq,
        file,
        offset: SEGMENT_HEADER_LEN,
    })
}

/// The purged segments of `dir` kept for reuse (`{seq:016}.raftlog.free`), oldest
/// first: at most `cfg.recycle_segments` of them, each at least `target_file_size` long;
/// the others are deleted.
fn recycled_segments(
    fs: &dyn FileSystem,
    dir: &Path,
    names: &[String],
    cfg: &Config,
) -> Result<Vec<u32>> {
    let mut seqs: Vec<u32> = names.iter().filter_map(|n| parse_free_name(n)).collect();
    seqs.sort_unstable();
    let mut keep = Vec::new();
    for seq in seqs {
        let path = free_path(dir, seq);
        let size = fs
            .open(&path)
            .and_then(|f| f.file_size())
            .map_err(|e| Error::io(&path, e))?;
        if keep.len() < cfg.recycle_segments && size >= cfg.target_file_size {
            keep.push(seq);
        } else {
            fs.remove(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::fault::MemFs;
    use crate::format::{segment_header, FORMAT_VERSION_1};
    use crate::{Config, Entry, LogBatch, LogStore};

    /// A store written by format version 1 (no seq in the header or the checksums, no end
    /// markers) opens, and its appends go to a new version 2 segment.
    #[test]
    fn version_1_segments_are_read_and_rotated_away() {
        let dir = Path::new("/v1");
        let mut head = segment_header(0);
        head[8..12].copy_from_slice(&FORMAT_VERSION_1.to_le_bytes());
        let mut bytes = head.to_vec();
        for first in [1u64, 4] {
            let es: Vec<Entry> = (first..first + 3)
                .map(|index| Entry {
                    index,
                    term: 2,
                    data: vec![index as u8; 10],
                })
                .collect();
            let mut b = LogBatch::new();
            b.add_entries(5, &es).unwrap();
            // Sealed, not bound to a segment: a version 1 record.
            bytes.extend_from_slice(&b.into_record().unwrap());
        }
        bytes.resize(bytes.len() + 100, 0);
        let fs = MemFs::new();
        fs.put_file(&dir.join("0000000000000003.raftlog"), &bytes);
        let cfg = Config {
            preallocate: false,
            target_file_size: 1 << 20,
            ..Config::default()
        };
        let store = LogStore::open_with_fs(dir, cfg.clone(), Arc::new(fs.clone())).unwrap();
        assert_eq!(
            (store.first_index(5), store.last_index(5)),
            (Some(1), Some(6))
        );
        let mut b = LogBatch::new();
        b.add_entries(
            5,
            &[Entry {
                index: 7,
                term: 3,
                data: b"v2".to_vec(),
            }],
        )
        .unwrap();
        store.write(b, true).unwrap();
        assert_eq!(store.stats().files, 2);
        drop(store);
        let store = LogStore::open_with_fs(dir, cfg, Arc::new(fs.crash())).unwrap();
        let es = store.entries(5, 1, 8, u64::MAX).unwrap();
        assert_eq!(es.len(), 7);
        assert_eq!(es[6].data, b"v2");
        assert_eq!(store.term(5, 3).unwrap(), 2);
    }
}
