//! The memtable: one concurrent skiplist shared by every column family.
//!
//! Entries are keyed by `(cf id, internal key)`. Sharing one structure across column families
//! makes the flush atomic by construction: switching the memtable switches every column family
//! at the same batch boundary.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;

use crate::key::{self, ValueKind, MAX_SEQ};
use crate::range_del::RangeTombstone;

/// A skiplist key: 4-byte big-endian column family id followed by an internal key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct MemKey(Vec<u8>);

impl MemKey {
    pub(crate) fn new(cf: u32, user_key: &[u8], seq: u64, kind: u8) -> MemKey {
        let mut v = Vec::with_capacity(4 + user_key.len() + key::TRAILER_LEN);
        v.extend_from_slice(&cf.to_be_bytes());
        key::encode_into(&mut v, user_key, seq, kind);
        MemKey(v)
    }

    pub(crate) fn cf(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[..4]);
        u32::from_be_bytes(b)
    }

    /// The internal key (without the column family prefix).
    pub(crate) fn ikey(&self) -> &[u8] {
        &self.0[4..]
    }
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match self.0[..4].cmp(&other.0[..4]) {
            Ordering::Equal => key::compare(&self.0[4..], &other.0[4..]),
            o => o,
        }
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a memtable knows about one key at one sequence.
pub(crate) enum Lookup {
    /// Newest visible version is a value.
    Value(u64, Vec<u8>),
    /// Newest visible version is a point tombstone.
    Deleted,
    /// No version of the key at or below the sequence.
    Absent,
}

/// One memtable. Writers are serialised by the engine; readers run concurrently.
pub(crate) struct MemTable {
    map: SkipMap<MemKey, Vec<u8>>,
    range_dels: RwLock<Vec<(u32, RangeTombstone)>>,
    has_range_dels: AtomicBool,
    approximate_bytes: AtomicUsize,
    /// Sequence of the newest batch inserted (0 if none).
    last_seq: AtomicU64,
}

impl MemTable {
    pub(crate) fn new() -> MemTable {
        MemTable {
            map: SkipMap::new(),
            range_dels: RwLock::new(Vec::new()),
            has_range_dels: AtomicBool::new(false),
            approximate_bytes: AtomicUsize::new(0),
            last_seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn put(&self, cf: u32, user_key: &[u8], seq: u64, value: &[u8]) {
        self.approximate_bytes
            .fetch_add(user_key.len() + value.len() + 48, AtomicOrdering::Relaxed);
        self.map.insert(
            MemKey::new(cf, user_key, seq, ValueKind::Put as u8),
            value.to_vec(),
        );
    }

    pub(crate) fn delete(&self, cf: u32, user_key: &[u8], seq: u64) {
        self.approximate_bytes
            .fetch_add(user_key.len() + 48, AtomicOrdering::Relaxed);
        self.map.insert(
            MemKey::new(cf, user_key, seq, ValueKind::Delete as u8),
            Vec::new(),
        );
    }

    pub(crate) fn delete_range(&self, cf: u32, start: &[u8], end: &[u8], seq: u64) {
        self.approximate_bytes
            .fetch_add(start.len() + end.len() + 64, AtomicOrdering::Relaxed);
        self.range_dels.write().push((
            cf,
            RangeTombstone {
                start: start.to_vec(),
                end: end.to_vec(),
                seq,
            },
        ));
        self.has_range_dels.store(true, AtomicOrdering::Release);
    }

    /// Records that every batch up to `seq` is in this memtable.
    pub(crate) fn set_last_seq(&self, seq: u64) {
        self.last_seq.store(seq, AtomicOrdering::Release);
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq.load(AtomicOrdering::Acquire)
    }

    pub(crate) fn approximate_bytes(&self) -> usize {
        self.approximate_bytes.load(AtomicOrdering::Relaxed)
    }

    /// True if no batch was written to this memtable (a batch of no-ops still counts: its
    /// sequence numbers must be flushed too).
    pub(crate) fn is_empty(&self) -> bool {
        self.last_seq() == 0
    }

    /// Newest version of `user_key` in `cf` with sequence <= `seq`.
    pub(crate) fn get(&self, cf: u32, user_key: &[u8], seq: u64) -> Lookup {
        let target = MemKey::new(cf, user_key, seq, key::KIND_SEEK);
        let Some(entry) = self.map.lower_bound(Bound::Included(&target)) else {
            return Lookup::Absent;
        };
        let k = entry.key();
        if k.cf() != cf {
            return Lookup::Absent;
        }
        match key::parse(k.ikey()) {
            Some(p) if p.user_key == user_key => {
                if p.kind == ValueKind::Put as u8 {
                    Lookup::Value(p.seq, entry.value().clone())
                } else {
                    Lookup::Deleted
                }
            }
            _ => Lookup::Absent,
        }
    }

    /// Newest range tombstone of `cf` covering `user_key` with sequence <= `seq`, or 0.
    pub(crate) fn max_covering_tombstone(&self, cf: u32, user_key: &[u8], seq: u64) -> u64 {
        if !self.has_range_dels.load(AtomicOrdering::Acquire) {
            return 0;
        }
        self.range_dels
            .read()
            .iter()
            .filter(|(c, t)| *c == cf && t.seq <= seq && t.covers(user_key))
            .map(|(_, t)| t.seq)
            .max()
            .unwrap_or(0)
    }

    /// Range tombstones of `cf`.
    pub(crate) fn range_tombstones(&self, cf: u32) -> Vec<RangeTombstone> {
        if !self.has_range_dels.load(AtomicOrdering::Acquire) {
            return Vec::new();
        }
        self.range_dels
            .read()
            .iter()
            .filter(|(c, _)| *c == cf)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Column family ids with any entry, in order.
    pub(crate) fn column_families(&self) -> Vec<u32> {
        let mut cfs: Vec<u32> = Vec::new();
        let mut cursor = self.map.front();
        while let Some(e) = cursor {
            let cf = e.key().cf();
            cfs.push(cf);
            // Jump past every key of this column family.
            if cf == u32::MAX {
                break;
            }
            let next = MemKey::new(cf + 1, b"", MAX_SEQ, key::KIND_SEEK);
            cursor = self.map.lower_bound(Bound::Included(&next));
        }
        for (cf, _) in self.range_dels.read().iter() {
            if !cfs.contains(cf) {
                cfs.push(*cf);
            }
        }
        cfs.sort_unstable();
        cfs
    }

    /// Up to `limit` entries of `cf` strictly after `after` (or from `start`) in the given
    /// direction, as `(internal key, value)`. `start` / `after` are internal keys.
    pub(crate) fn scan(
        &self,
        cf: u32,
        from: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
        out: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) {
        let wrap = |ik: &[u8]| {
            let mut v = Vec::with_capacity(4 + ik.len());
            v.extend_from_slice(&cf.to_be_bytes());
            v.extend_from_slice(ik);
            MemKey(v)
        };
        // The whole column family: from (cf, "") at the newest sequence to the start of cf+1.
        let cf_lo = MemKey::new(cf, b"", MAX_SEQ, key::KIND_SEEK);
        let push = |out: &mut Vec<(Vec<u8>, Vec<u8>)>, k: &MemKey, v: &Vec<u8>| {
            out.push((k.ikey().to_vec(), v.clone()));
        };
        if !reverse {
            let lo = match from {
                Bound::Included(k) => Bound::Included(wrap(k)),
                Bound::Excluded(k) => Bound::Excluded(wrap(k)),
                Bound::Unbounded => Bound::Included(cf_lo),
            };
            for e in self.map.range((lo, Bound::Unbounded)) {
                if e.key().cf() != cf || out.len() >= limit {
                    break;
                }
                push(out, e.key(), e.value());
            }
        } else {
            let hi = match from {
                Bound::Included(k) => Bound::Included(wrap(k)),
                Bound::Excluded(k) => Bound::Excluded(wrap(k)),
                Bound::Unbounded => match cf.checked_add(1) {
                    Some(n) => Bound::Excluded(MemKey::new(n, b"", MAX_SEQ, key::KIND_SEEK)),
                    None => Bound::Unbounded,
                },
            };
            for e in self.map.range((Bound::Included(cf_lo), hi)).rev() {
                if e.key().cf() != cf || out.len() >= limit {
                    break;
                }
                push(out, e.key(), e.value());
            }
        }
    }

    /// Every entry of `cf` in internal-key order (for flush).
    pub(crate) fn for_each_in_cf(&self, cf: u32, mut f: impl FnMut(&[u8], &[u8]) -> bool) {
        let lo = MemKey::new(cf, b"", MAX_SEQ, key::KIND_SEEK);
        for e in self.map.range(lo..) {
            if e.key().cf() != cf {
                break;
            }
            if !f(e.key().ikey(), e.value()) {
                break;
            }
        }
    }
}
