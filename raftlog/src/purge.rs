//! Purge: deletes (or keeps for reuse) segments no stream needs, after rewriting small
//! streams that pin old segments into the active one. Runs on the writer thread holding the
//! writer's mutex, so no user batch is applied between reading a stream and writing its
//! rewritten copy.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{decode_batch, MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN};
use crate::fs::{free_path, segment_path};
use crate::log_batch::{Entry, LogBatch};
use crate::memtable::{Cache, Piece};
use crate::writer::Writer;

/// What one [`crate::LogStore::purge`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Sequence numbers of the segments taken out of the log (deleted or kept for reuse).
    pub removed_files: Vec<u32>,
    /// Those of `removed_files` kept for reuse as new segments
    /// (`Config::recycle_segments`).
    pub recycled_files: Vec<u32>,
    /// Streams whose entries and states were rewritten into the active segment.
    pub rewritten_streams: Vec<u64>,
    /// Bytes of records written by the rewrite.
    pub rewritten_bytes: u64,
    /// Streams that pin old segments but hold more than
    /// `Config::purge_rewrite_max_stream_bytes` of live entries: the caller should
    /// compact them (`LogBatch::compact_to`).
    pub stalled_streams: Vec<u64>,
}

/// Rewrites pinning streams, then deletes unneeded segments (oldest first, so the
/// segments left after a crash are always a suffix of the log).
pub(crate) fn purge(w: &mut Writer) -> Result<PurgeReport> {
    let shared = w.shared.clone();
    if shared.poisoned.load(Ordering::SeqCst) {
        return Err(Error::Poisoned);
    }
    let mut report = PurgeReport::default();
    let threshold = u64::from(w.active.seq).saturating_sub(shared.cfg.purge_rewrite_lag_files);
    let usage = shared.mem.read().usage();
    let mut candidates = Vec::new();
    for u in usage {
        if u64::from(u.min_file) >= threshold {
            continue;
        }
        if u.live_bytes > shared.cfg.purge_rewrite_max_stream_bytes {
            report.stalled_streams.push(u.stream);
        } else {
            candidates.push(u.stream);
        }
    }
    candidates.sort_unstable();
    report.stalled_streams.sort_unstable();

    let mut batch = LogBatch::new();
    for &stream in &candidates {
        let Some(dump) = shared.mem.read().dump(stream) else {
            continue;
        };
        let mut entries = Vec::with_capacity(dump.pieces.len());
        for p in dump.pieces {
            entries.push(match p {
                Piece::Cached(e) => e,
                Piece::Disk { index, term, loc } => {
                    let file = shared.files.read().get(&loc.file).cloned();
                    let path = segment_path(&shared.dir, loc.file);
                    let file =
                        file.ok_or_else(|| Error::io(&path, std::io::ErrorKind::NotFound.into()))?;
                    let mut data = vec![0u8; loc.len as usize];
                    file.read_exact_at(&mut data, u64::from(loc.offset))
                        .map_err(|e| Error::io(&path, e))?;
                    Entry { index, term, data }
                }
            });
        }
        batch.compact_to(stream, dump.first);
        batch.add_entries(stream, &entries)?;
        for (k, v) in &dump.states {
            batch.put_state(stream, k, v)?;
        }
        report.rewritten_streams.push(stream);
        if batch.size_bytes() >= MAX_RECORD_PAYLOAD / 4 {
            report.rewritten_bytes += write_rewrite(w, std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        report.rewritten_bytes += write_rewrite(w, batch)?;
    }

    let keep_from = shared
        .mem
        .read()
        .usage()
        .iter()
        .map(|u| u.min_file)
        .fold(w.active.seq, u32::min);
    let doomed: Vec<u32> = shared
        .files
        .read()
        .range(..keep_from)
        .map(|(s, _)| *s)
        .collect();
    for seq in doomed {
        let path = segment_path(&shared.dir, seq);
        // Out of the map first: no reader can pick the file up from now on, so one that
        // holds it still keeps its own handle (count > 1) and the file is deleted, not
        // reused under it.
        let Some(file) = shared.files.write().remove(&seq) else {
            continue;
        };
        let reuse = w.free.len() < shared.cfg.recycle_segments
            && Arc::strong_count(&file) == 1
            && file
                .file_size()
                .is_ok_and(|n| n >= shared.cfg.target_file_size);
        drop(file);
        let r = if reuse {
            shared.fs.rename(&path, &free_path(&shared.dir, seq))
        } else {
            shared.fs.remove(&path)
        };
        if let Err(e) = r {
            shared.poisoned.store(true, Ordering::SeqCst);
            return Err(Error::io(&path, e));
        }
        if reuse {
            w.free.push_back(seq);
            report.recycled_files.push(seq);
        }
        report.removed_files.push(seq);
    }
    if !report.removed_files.is_empty() {
        if let Err(e) = shared.fs.sync_dir(&shared.dir) {
            shared.poisoned.store(true, Ordering::SeqCst);
            return Err(Error::io(&shared.dir, e));
        }
    }
    Ok(report)
}

/// Writes one rewrite batch synchronously (not cached: rewritten entries are cold).
fn write_rewrite(w: &mut Writer, batch: LogBatch) -> Result<u64> {
    let record = batch.into_record()?;
    let ops = decode_batch(&record[RECORD_HEADER_LEN..]).map_err(Error::InvalidArgument)?;
    let len = record.len() as u64;
    w.write_records(&[(record, ops, true, Cache::Nothing)])?;
    Ok(len)
}
