//! The in-memory index: for every stream, where each live entry is on disk, the terms
//! as runs, the state records, and a bounded cache of the latest entry payloads.
//!
//! Cost per live entry: one 12-byte [`Loc`] in a `VecDeque` (plus the deque's spare
//! capacity), and 16 bytes per *term change* (not per entry). Entry payloads are only in
//! memory while they are in the bounded cache.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::error::{Error, Result};
use crate::format::Op;
use crate::ids::IdBuild;
use crate::log_batch::Entry;

/// Where an entry's payload is: segment, byte offset, length. 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub file: u32,
    pub offset: u32,
    pub len: u32,
}

/// What a reader must fetch for one entry.
pub(crate) enum Piece {
    /// Served from the cache.
    Cached(Entry),
    /// Must be read from disk.
    Disk { index: u64, term: u64, loc: Loc },
}

pub(crate) struct Stream {
    /// Index of `locs[0]`; when `locs` is empty, the index the next append continues at.
    first: u64,
    locs: VecDeque<Loc>,
    /// `(first index of the run, term)`, increasing; covers `first..first+locs.len()`.
    terms: VecDeque<(u64, u64)>,
    /// Segment of the record that last set `first` while dropping all entries; needed to
    /// rebuild `first` when there are no entries.
    anchor_file: u32,
    states: BTreeMap<Vec<u8>, (Vec<u8>, u32)>,
    /// Index of `cache[0]`; the cache is always a suffix of the live entries.
    cache_first: u64,
    cache: VecDeque<Vec<u8>>,
    live_bytes: u64,
}

impl Stream {
    fn new(first: u64, file: u32) -> Self {
        Stream {
            first: first.max(1),
            locs: VecDeque::new(),
            terms: VecDeque::new(),
            anchor_file: file,
            states: BTreeMap::new(),
            cache_first: first.max(1),
            cache: VecDeque::new(),
            live_bytes: 0,
        }
    }

    fn next_index(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    /// Oldest segment this stream needs.
    fn min_file(&self) -> u32 {
        let base = self.locs.front().map_or(self.anchor_file, |l| l.file);
        self.states.values().map(|(_, f)| *f).fold(base, u32::min)
    }
}

/// Per-stream facts the purger needs.
pub(crate) struct StreamUsage {
    pub stream: u64,
    pub min_file: u32,
    pub live_bytes: u64,
}

/// Everything of a stream, for rewriting it forward.
pub(crate) struct StreamDump {
    pub first: u64,
    pub pieces: Vec<Piece>,
    pub states: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Which entries of a write go into the entry cache.
#[derive(Debug)]
pub(crate) enum Cache {
    /// None (recovery, purge rewrites).
    Nothing,
    /// All but those of these streams (sorted): see [`crate::LogBatch::skip_cache`].
    AllBut(Vec<u64>),
}

impl Cache {
    fn takes(&self, stream: u64) -> bool {
        match self {
            Cache::Nothing => false,
            Cache::AllBut(skip) => skip.binary_search(&stream).is_err(),
        }
    }
}

/// All streams of the store.
pub(crate) struct MemTable {
    streams: HashMap<u64, Stream, IdBuild>,
    cache_cap: usize,
    cache_bytes: usize,
    cache_entries: usize,
    /// Cached entries in insertion order, for eviction; may hold stale items.
    cache_queue: VecDeque<(u64, u64)>,
}

impl MemTable {
    pub fn new(cache_cap: usize) -> Self {
        MemTable {
            streams: HashMap::default(),
            cache_cap,
            cache_bytes: 0,
            cache_entries: 0,
            cache_queue: VecDeque::new(),
        }
    }

    /// Applies the decoded items of one batch record whose payload starts at byte
    /// `payload_offset` of segment `file`. `cache` fills the entry cache.
    pub fn apply(
        &mut self,
        ops: &[Op],
        payload: &[u8],
        file: u32,
        payload_offset: u64,
        cache: &Cache,
    ) {
        for op in ops {
            match op {
                Op::Entries {
                    stream,
                    first_index,
                    entries,
                } => self.append(
                    *stream,
                    *first_index,
                    entries,
                    payload,
                    file,
                    payload_offset,
                    cache.takes(*stream),
                ),
                Op::PutState { stream, key, value } => {
                    let (Some(k), Some(v)) = (payload.get(key.clone()), payload.get(value.clone()))
                    else {
                        continue;
                    };
                    let s = self.stream_mut(*stream, 1, file);
                    // A region rewrites the same few keys (its hard state with most writes):
                    // update in place rather than allocate a key and a value each time.
                    match s.states.get_mut(k) {
                        Some((old, f)) => {
                            old.clear();
                            old.extend_from_slice(v);
                            *f = file;
                        }
                        None => {
                            s.states.insert(k.to_vec(), (v.to_vec(), file));
                        }
                    }
                }
                Op::DeleteState { stream, key } => {
                    let Some(k) = payload.get(key.clone()) else {
                        continue;
                    };
                    let s = self.stream_mut(*stream, 1, file);
                    s.states.remove(k);
                }
                Op::CompactTo { stream, index } => self.compact(*stream, *index, file),
                Op::RemoveStream { stream } => {
                    if let Some(s) = self.streams.remove(stream) {
                        self.uncache(s.cache.iter().map(Vec::len).sum(), s.cache.len());
                    }
                }
            }
        }
        self.evict();
    }

    fn stream_mut(&mut self, stream: u64, first: u64, file: u32) -> &mut Stream {
        self.streams
            .entry(stream)
            .or_insert_with(|| Stream::new(first, file))
    }

    fn uncache(&mut self, bytes: usize, entries: usize) {
        self.cache_bytes -= bytes;
        self.cache_entries -= entries;
    }

    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        stream: u64,
        first_index: u64,
        entries: &[crate::format::EntryRef],
        payload: &[u8],
        file: u32,
        payload_offset: u64,
        cache: bool,
    ) {
        let cache = cache && self.cache_cap > 0;
        let s = self
            .streams
            .entry(stream)
            .or_insert_with(|| Stream::new(first_index, file));
        let (mut freed_bytes, mut freed_entries) = (0usize, 0usize);
        if first_index < s.first || first_index > s.next_index() {
            // Below the first index or after a gap: the entries restart at first_index.
            freed_bytes += s.cache.iter().map(Vec::len).sum::<usize>();
            freed_entries += s.cache.len();
            s.cache.clear();
            s.locs.clear();
            s.terms.clear();
            s.live_bytes = 0;
            s.first = first_index;
            s.anchor_file = file;
        } else {
            // Raft semantics: the conflicting suffix from first_index on is replaced.
            let keep = (first_index - s.first) as usize;
            for l in s.locs.drain(keep..) {
                s.live_bytes -= u64::from(l.len);
            }
            while s.terms.back().is_some_and(|r| r.0 >= first_index) {
                s.terms.pop_back();
            }
            if first_index < s.cache_first + s.cache.len() as u64 {
                let keep = first_index.saturating_sub(s.cache_first) as usize;
                for d in s.cache.drain(keep..) {
                    freed_bytes += d.len();
                    freed_entries += 1;
                }
            }
        }
        if !cache && !entries.is_empty() && !s.cache.is_empty() {
            // The cache must stay a suffix of the live entries (`pieces` finds an entry at
            // `cache_first + offset`): entries that skip it end it.
            freed_bytes += s.cache.iter().map(Vec::len).sum::<usize>();
            freed_entries += s.cache.len();
            s.cache.clear();
        }
        if s.cache.is_empty() {
            s.cache_first = s.next_index();
        }
        let mut added_bytes = 0usize;
        for (i, e) in entries.iter().enumerate() {
            let index = first_index + i as u64;
            // Offsets fit in u32: segments are at most 2 GiB plus one batch of <= 1 GiB.
            let offset = (payload_offset + u64::from(e.offset)) as u32;
            s.locs.push_back(Loc {
                file,
                offset,
                len: e.len,
            });
            s.live_bytes += u64::from(e.len);
            if s.terms.back().map(|r| r.1) != Some(e.term) {
                s.terms.push_back((index, e.term));
            }
            if cache {
                let data = payload
                    .get(e.offset as usize..(e.offset as usize + e.len as usize))
                    .unwrap_or_default();
                added_bytes += data.len();
                s.cache.push_back(data.to_vec());
                self.cache_queue.push_back((stream, index));
            }
        }
        if cache {
            self.cache_entries += entries.len();
            self.cache_bytes += added_bytes;
        }
        self.uncache(freed_bytes, freed_entries);
    }

    fn compact(&mut self, stream: u64, index: u64, file: u32) {
        let s = self
            .streams
            .entry(stream)
            .or_insert_with(|| Stream::new(index, file));
        let (mut freed_bytes, mut freed_entries) = (0usize, 0usize);
        if index < s.next_index() && index <= s.first {
            return;
        }
        if index >= s.next_index() {
            // Everything goes (an empty stream re-anchors here: purge relies on that).
            freed_bytes += s.cache.iter().map(Vec::len).sum::<usize>();
            freed_entries += s.cache.len();
            s.cache.clear();
            s.locs.clear();
            s.terms.clear();
            s.live_bytes = 0;
            s.first = index;
            s.cache_first = index;
            s.anchor_file = file;
        } else {
            let drop = (index - s.first) as usize;
            for l in s.locs.drain(..drop) {
                s.live_bytes -= u64::from(l.len);
            }
            while s.terms.len() >= 2 && s.terms[1].0 <= index {
                s.terms.pop_front();
            }
            while s.cache_first < index && !s.cache.is_empty() {
                if let Some(d) = s.cache.pop_front() {
                    freed_bytes += d.len();
                    freed_entries += 1;
                }
                s.cache_first += 1;
            }
            if s.cache.is_empty() {
                s.cache_first = s.cache_first.max(index);
            }
            s.first = index;
        }
        self.uncache(freed_bytes, freed_entries);
    }

    /// Drops the oldest cached payloads until the cache fits its capacity.
    fn evict(&mut self) {
        while self.cache_bytes > self.cache_cap {
            let Some((stream, index)) = self.cache_queue.pop_front() else {
                break;
            };
            let Some(s) = self.streams.get_mut(&stream) else {
                continue;
            };
            if s.cache_first == index {
                if let Some(d) = s.cache.pop_front() {
                    s.cache_first += 1;
                    self.cache_bytes -= d.len();
                    self.cache_entries -= 1;
                }
            }
        }
        // Stale queue items (of truncated or compacted entries) are bounded: rebuild
        // when they outnumber the live ones.
        if self.cache_queue.len() > 2 * self.cache_entries + 1024 {
            let streams = &self.streams;
            self.cache_queue.retain(|(sid, i)| {
                streams.get(sid).is_some_and(|s| {
                    *i >= s.cache_first && *i < s.cache_first + s.cache.len() as u64
                })
            });
        }
    }

    /// First index of `stream` (the next append index when it has no entries).
    pub fn first_index(&self, stream: u64) -> Option<u64> {
        self.streams.get(&stream).map(|s| s.first)
    }

    /// Last index of `stream` (`first_index - 1` when it has no entries).
    pub fn last_index(&self, stream: u64) -> Option<u64> {
        self.streams.get(&stream).map(|s| s.next_index() - 1)
    }

    fn check(&self, stream: u64, index: u64) -> Result<&Stream> {
        let s = self
            .streams
            .get(&stream)
            .ok_or(Error::Unavailable { stream, index })?;
        if index < s.first {
            return Err(Error::Compacted { stream, index });
        }
        if index >= s.next_index() {
            return Err(Error::Unavailable { stream, index });
        }
        Ok(s)
    }

    /// Term of entry `index` of `stream`.
    pub fn term(&self, stream: u64, index: u64) -> Result<u64> {
        let s = self.check(stream, index)?;
        let run = s.terms.partition_point(|r| r.0 <= index);
        Ok(s.terms.get(run.wrapping_sub(1)).map_or(0, |r| r.1))
    }

    /// What to fetch for entries `lo..hi`, stopping once `max_bytes` is exceeded (at least
    /// one entry is returned).
    pub fn pieces(&self, stream: u64, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Piece>> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let s = self.check(stream, lo)?;
        if hi > s.next_index() {
            return Err(Error::Unavailable {
                stream,
                index: hi - 1,
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut run = s.terms.partition_point(|r| r.0 <= lo).saturating_sub(1);
        for index in lo..hi {
            let loc = s.locs[(index - s.first) as usize];
            if !out.is_empty() && bytes + u64::from(loc.len) > max_bytes {
                break;
            }
            bytes += u64::from(loc.len);
            while run + 1 < s.terms.len() && s.terms[run + 1].0 <= index {
                run += 1;
            }
            let term = s.terms.get(run).map_or(0, |r| r.1);
            let piece = match index.checked_sub(s.cache_first) {
                Some(ci) if (ci as usize) < s.cache.len() => Piece::Cached(Entry {
                    index,
                    term,
                    data: s.cache[ci as usize].clone(),
                }),
                _ => Piece::Disk { index, term, loc },
            };
            out.push(piece);
        }
        Ok(out)
    }

    /// The state record `key` of `stream`.
    pub fn get_state(&self, stream: u64, key: &[u8]) -> Option<Vec<u8>> {
        self.streams
            .get(&stream)?
            .states
            .get(key)
            .map(|v| v.0.clone())
    }

    /// Ids of all streams, sorted.
    pub fn stream_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Oldest segment each stream needs.
    pub fn usage(&self) -> Vec<StreamUsage> {
        self.streams
            .iter()
            .map(|(id, s)| StreamUsage {
                stream: *id,
                min_file: s.min_file(),
                live_bytes: s.live_bytes,
            })
            .collect()
    }

    /// Everything of `stream`, to rewrite it forward.
    pub fn dump(&self, stream: u64) -> Option<StreamDump> {
        let s = self.streams.get(&stream)?;
        let pieces = if s.locs.is_empty() {
            Vec::new()
        } else {
            self.pieces(stream, s.first, s.next_index(), u64::MAX)
                .ok()?
        };
        Some(StreamDump {
            first: s.first,
            pieces,
            states: s
                .states
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        })
    }

    /// Number of live entries and bytes the index (not the cache) uses for them.
    pub fn index_size(&self) -> (u64, u64) {
        let mut entries = 0u64;
        let mut bytes = 0u64;
        for s in self.streams.values() {
            entries += s.locs.len() as u64;
            bytes += (s.locs.capacity() * std::mem::size_of::<Loc>()) as u64
                + (s.terms.capacity() * 16) as u64;
        }
        (entries, bytes)
    }

    /// Bytes of entry payloads in the cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::EntryRef;

    fn append(m: &mut MemTable, stream: u64, first: u64, terms: &[u64], file: u32) {
        let payload = vec![9u8; terms.len() * 4];
        let entries: Vec<EntryRef> = terms
            .iter()
            .enumerate()
            .map(|(i, &term)| EntryRef {
                term,
                offset: (i * 4) as u32,
                len: 4,
            })
            .collect();
        let op = Op::Entries {
            stream,
            first_index: first,
            entries,
        };
        m.apply(&[op], &payload, file, 100, &Cache::AllBut(Vec::new()));
    }

    #[test]
    fn term_runs_follow_truncation_and_compaction() {
        let mut m = MemTable::new(1 << 20);
        append(&mut m, 1, 1, &[1, 1, 2, 2, 3], 1);
        assert_eq!(m.streams[&1].terms.len(), 3);
        assert_eq!(m.term(1, 2).unwrap(), 1);
        assert_eq!(m.term(1, 4).unwrap(), 2);
        // Conflict at 4 with term 4: 4..=5 replaced.
        append(&mut m, 1, 4, &[4, 4], 2);
        assert_eq!(m.term(1, 3).unwrap(), 2);
        assert_eq!(m.term(1, 5).unwrap(), 4);
        assert_eq!(m.streams[&1].terms.len(), 3);
        m.apply(
            &[Op::CompactTo {
                stream: 1,
                index: 4,
            }],
            &[],
            3,
            0,
            &Cache::AllBut(Vec::new()),
        );
        assert_eq!(m.term(1, 4).unwrap(), 4);
        assert!(matches!(m.term(1, 3), Err(Error::Compacted { .. })));
        assert_eq!(m.streams[&1].terms.len(), 1);
        assert_eq!(m.usage()[0].min_file, 2);
    }

    #[test]
    fn cache_accounting_stays_exact() {
        let mut m = MemTable::new(10);
        for round in 0..20u64 {
            append(&mut m, round % 3, 1 + round / 3 * 2, &[1, 1], 1);
            assert!(m.cache_bytes <= 10);
            let counted: usize = m
                .streams
                .values()
                .map(|s| s.cache.iter().map(Vec::len).sum::<usize>())
                .sum();
            assert_eq!(counted, m.cache_bytes);
        }
        m.apply(
            &[Op::RemoveStream { stream: 0 }],
            &[],
            1,
            0,
            &Cache::AllBut(Vec::new()),
        );
        let counted: usize = m
            .streams
            .values()
            .map(|s| s.cache.iter().map(Vec::len).sum::<usize>())
            .sum();
        assert_eq!(counted, m.cache_bytes);
    }

    #[test]
    fn a_rewritten_state_holds_the_new_value_and_moves_to_its_segment() {
        let mut m = MemTable::new(1 << 20);
        let put = |m: &mut MemTable, payload: &[u8], klen: usize, file: u32| {
            let op = Op::PutState {
                stream: 7,
                key: 0..klen,
                value: klen..payload.len(),
            };
            m.apply(&[op], payload, file, 0, &Cache::Nothing);
        };
        put(&mut m, b"hslong value", 2, 1);
        put(&mut m, b"xyother", 1, 1);
        // Shorter, then longer than before: the value is replaced, not merged.
        put(&mut m, b"hsv2", 2, 2);
        assert_eq!(m.get_state(7, b"hs").as_deref(), Some(&b"v2"[..]));
        put(&mut m, b"xyanother, longer value", 1, 3);
        assert_eq!(
            m.get_state(7, b"x").as_deref(),
            Some(&b"yanother, longer value"[..])
        );
        // Each record now lives in its new segment: the old one no longer holds the stream's
        // states.
        let files: Vec<u32> = m.streams[&7].states.values().map(|v| v.1).collect();
        assert_eq!(files, vec![2, 3]);
    }
}
