//! The memtable: one skiplist ([`crate::skiplist`]) shared by every column family.
//!
//! Entries are keyed by `(cf id, internal key)`. Sharing one structure across column families
//! makes the flush atomic by construction: switching the memtable switches every column family
//! at the same batch boundary.
//!
//! Beside the skiplist, a memtable keeps *in-place slots*: values written with
//! [`WriteBatch::put_in_place`](crate::WriteBatch::put_in_place) wait in a slot per key, each
//! write replacing the last, until something needs them ordered among the other entries (a
//! snapshot, an iterator over their column family, the memtable's switch to immutable), when
//! [`MemTable::settle`] moves them into the skiplist with their own sequence numbers. A key
//! rewritten by nearly every batch (a region's applied index) then costs a hash-map update per
//! write instead of a skiplist node, and the memtable holds one version of it, not thousands.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use parking_lot::{Mutex, RwLock};

use crate::key::{self, ValueKind, MAX_SEQ};
use crate::range_del::RangeTombstone;
use crate::skiplist::{Entry, Indexing, Probe, SkipList};
use crate::sstable::hash64;

/// A skiplist probe for an internal key of `cf`; a short one can only be a bare user-key
/// bound (seek targets), which probes before every version of that key.
fn probe_of_ikey(cf: u32, ikey: &[u8]) -> Probe<'_> {
    match key::parse(ikey) {
        Some(p) => Probe {
            cf,
            key: p.user_key,
            trailer: key::pack_trailer(p.seq, p.kind),
        },
        None => seek_probe(cf, ikey),
    }
}

/// A probe before every version of `user_key` in `cf`.
fn seek_probe(cf: u32, user_key: &[u8]) -> Probe<'_> {
    Probe {
        cf,
        key: user_key,
        trailer: key::pack_trailer(MAX_SEQ, key::KIND_SEEK),
    }
}

/// Appends the internal key of `e` (user key ++ trailer) to `buf`.
fn ikey_into(e: &Entry<'_>, buf: &mut Vec<u8>) {
    buf.extend_from_slice(e.user_key());
    buf.extend_from_slice(&e.trailer().to_le_bytes());
}

/// What a memtable knows about one key at one sequence.
pub(crate) enum Lookup {
    /// Newest visible version is a value.
    Value(u64, Vec<u8>),
    /// Newest visible version is a point tombstone.
    Deleted,
    /// No version of the key at or below the sequence.
    Absent,
    /// An in-place write newer than the sequence replaced the value at it: read again at a
    /// newer sequence.
    Retry,
}

/// Probes per key in the memtable's key filter.
const FILTER_PROBES: u64 = 6;

/// A bloom filter over the user keys (all column families together) with a point entry in
/// one memtable — RocksDB's memtable whole-key filter. Every put reads the key's previous
/// version first (etcd's `version` and `create_revision`), and for a new key that read
/// misses every memtable: the filter answers most such misses with one cache line instead
/// of a skiplist search.
///
/// Cache-line blocked like the table filters: the probes of a key fall in one line of 8
/// words, line `(h >> 32) & (lines - 1)`, probe `i` at bit `(h + i * ((h >> 21) | 1)) % 512`.
/// Bits are only ever set. A key's bits are set before its entry is inserted, and the
/// engine publishes a batch's sequence (release) after inserting it, so a reader at a
/// sequence it loaded (acquire) sees the bits of every entry it could find.
struct KeyFilter {
    lines: Box<[[AtomicU64; 8]]>,
}

impl KeyFilter {
    /// A filter of about `bytes` (rounded up to a power of two of 64-byte lines).
    fn new(bytes: usize) -> KeyFilter {
        let lines = (bytes / 64).max(1).next_power_of_two();
        KeyFilter {
            lines: (0..lines).map(|_| Default::default()).collect(),
        }
    }

    /// The line of `h` and the words of it that `h`'s probes set.
    #[inline]
    fn probe(&self, h: u64) -> (&[AtomicU64; 8], [u64; 8]) {
        let line = ((h >> 32) as usize) & (self.lines.len() - 1);
        let stride = (h >> 21) | 1;
        let mut words = [0u64; 8];
        for i in 0..FILTER_PROBES {
            let bit = h.wrapping_add(i.wrapping_mul(stride)) % 512;
            words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        (&self.lines[line], words)
    }

    fn insert(&self, h: u64) {
        let (line, words) = self.probe(h);
        for (slot, w) in line.iter().zip(words) {
            if w != 0 {
                slot.fetch_or(w, AtomicOrdering::Relaxed);
            }
        }
    }

    /// False only if no key with hash `h` was inserted.
    #[inline]
    fn may_contain(&self, h: u64) -> bool {
        let (line, words) = self.probe(h);
        line.iter()
            .zip(words)
            .all(|(slot, w)| slot.load(AtomicOrdering::Relaxed) & w == w)
    }
}

/// The in-place slots of one column family: user key -> `(sequence, value)`.
type Slots = HashMap<Vec<u8>, (u64, Vec<u8>), SlotBuild>;

/// Hashes the in-place slots' keys with the key filter's hash instead of SipHash: a
/// region's apply-state key is rewritten with every applied batch, so the lookup runs once
/// per region and round. In-place keys are few and chosen by the embedding store (Pontoon's
/// are its regions' apply-state keys), not by its clients, so SipHash's resistance to
/// chosen keys buys nothing here.
#[derive(Default, Clone, Copy)]
struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = (self.0.rotate_left(29) ^ hash64(bytes)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type SlotBuild = std::hash::BuildHasherDefault<SlotHasher>;

/// One memtable. Writers are serialised by the engine; readers run concurrently.
pub(crate) struct MemTable {
    list: SkipList,
    /// Filter over the user keys of point entries; `None` when disabled.
    filter: Option<KeyFilter>,
    range_dels: RwLock<Vec<(u32, RangeTombstone)>>,
    has_range_dels: AtomicBool,
    approximate_bytes: AtomicUsize,
    /// Sequence of the newest batch inserted (0 if none).
    last_seq: AtomicU64,
    /// In-place slots not yet settled into the skiplist, by column family and user key:
    /// `(sequence, value)` of the newest write.
    slots: Mutex<HashMap<u32, Slots, SlotBuild>>,
    /// True while `slots` may hold anything (set before a slot is filled, so a reader that
    /// sees a slot's sequence published sees this too).
    has_slots: AtomicBool,
}

impl MemTable {
    /// An empty memtable with a key filter of about `filter_bytes` (0: no filter) and a
    /// newest-entry index of about `index_slots` entries (0: none).
    #[cfg(test)]
    pub(crate) fn new(filter_bytes: usize, index_slots: usize) -> MemTable {
        MemTable::with_pool(filter_bytes, index_slots, None)
    }

    /// [`MemTable::new`] whose arenas take full-size chunks from `pool` first and leave
    /// them there when it drops.
    pub(crate) fn with_pool(
        filter_bytes: usize,
        index_slots: usize,
        pool: Option<std::sync::Arc<crate::skiplist::ChunkPool>>,
    ) -> MemTable {
        MemTable {
            list: SkipList::with_index(index_slots, pool),
            filter: (filter_bytes > 0).then(|| KeyFilter::new(filter_bytes)),
            range_dels: RwLock::new(Vec::new()),
            has_range_dels: AtomicBool::new(false),
            approximate_bytes: AtomicUsize::new(0),
            last_seq: AtomicU64::new(0),
            slots: Mutex::new(HashMap::default()),
            has_slots: AtomicBool::new(false),
        }
    }

    /// Writes `value` into the in-place slot of `user_key` in `cf`, replacing what an earlier
    /// in-place write left there. Reads see it as a put at `seq`.
    pub(crate) fn put_in_place(&self, cf: u32, user_key: &[u8], seq: u64, value: &[u8]) {
        self.has_slots.store(true, AtomicOrdering::Release);
        let mut slots = self.slots.lock();
        let keys = slots.entry(cf).or_default();
        match keys.get_mut(user_key) {
            // The key filter has the key since the slot's first write (a slot lives in one
            // memtable): no second insert, which cost a cache miss per region and round.
            Some(slot) => {
                slot.0 = seq;
                slot.1.clear();
                slot.1.extend_from_slice(value);
            }
            None => {
                if let Some(f) = &self.filter {
                    f.insert(hash64(user_key));
                }
                self.approximate_bytes
                    .fetch_add(user_key.len() + value.len() + 48, AtomicOrdering::Relaxed);
                keys.insert(user_key.to_vec(), (seq, value.to_vec()));
            }
        }
    }

    /// True if an in-place slot of `cf` waits to be settled.
    pub(crate) fn has_slots_in(&self, cf: u32) -> bool {
        self.has_slots.load(AtomicOrdering::Acquire)
            && self.slots.lock().get(&cf).is_some_and(|k| !k.is_empty())
    }

    /// Moves every in-place slot into the skiplist as a put at its sequence. The engine
    /// calls it with its write lock held, before taking a snapshot or an iterator that must
    /// see the slots in order, and before the memtable becomes immutable. A reader looking
    /// at the same time finds the value in the slot or in the skiplist (slots are emptied
    /// only after their entries are linked).
    pub(crate) fn settle(&self) {
        if !self.has_slots.load(AtomicOrdering::Acquire) {
            return;
        }
        let mut slots = self.slots.lock();
        for (&cf, keys) in slots.iter() {
            for (key, (seq, value)) in keys {
                self.list.insert(
                    cf,
                    key,
                    key::pack_trailer(*seq, ValueKind::Put as u8),
                    value,
                    Indexing::IfNewer(hash64(key)),
                );
            }
        }
        slots.clear();
        self.has_slots.store(false, AtomicOrdering::Release);
    }

    /// The unsettled in-place value of `user_key` in `cf`, if any, as `(sequence, value)`.
    fn slot(&self, cf: u32, user_key: &[u8]) -> Option<(u64, Vec<u8>)> {
        if !self.has_slots.load(AtomicOrdering::Acquire) {
            return None;
        }
        self.slots
            .lock()
            .get(&cf)
            .and_then(|k| k.get(user_key))
            .map(|(seq, v)| (*seq, v.clone()))
    }

    pub(crate) fn put(&self, cf: u32, user_key: &[u8], seq: u64, value: &[u8]) {
        self.approximate_bytes
            .fetch_add(user_key.len() + value.len() + 48, AtomicOrdering::Relaxed);
        let hash = hash64(user_key);
        if let Some(f) = &self.filter {
            f.insert(hash);
        }
        self.list.insert(
            cf,
            user_key,
            key::pack_trailer(seq, ValueKind::Put as u8),
            value,
            Indexing::Newest(hash),
        );
    }

    pub(crate) fn delete(&self, cf: u32, user_key: &[u8], seq: u64) {
        self.approximate_bytes
            .fetch_add(user_key.len() + 48, AtomicOrdering::Relaxed);
        let hash = hash64(user_key);
        if let Some(f) = &self.filter {
            f.insert(hash);
        }
        self.list.insert(
            cf,
            user_key,
            key::pack_trailer(seq, ValueKind::Delete as u8),
            b"",
            Indexing::Newest(hash),
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

    /// Newest version of `user_key` in `cf` with sequence <= `seq`; `hash` is
    /// `hash64(user_key)`. An in-place slot written after `seq` hides the value it replaced,
    /// which is what a read at `seq` should see: for a read of the newest state (`latest`)
    /// that is [`Lookup::Retry`] (read again at a newer sequence, once that write is
    /// published); a snapshot or iterator ignores it, because taking one settles the slots,
    /// so everything at its sequence is in the skiplist.
    pub(crate) fn get(
        &self,
        cf: u32,
        user_key: &[u8],
        hash: u64,
        seq: u64,
        latest: bool,
    ) -> Lookup {
        if self.filter.as_ref().is_some_and(|f| !f.may_contain(hash)) {
            return Lookup::Absent;
        }
        // The slot first: `settle` links an entry before emptying its slot, so a value that
        // leaves the slot after this look is in the skiplist for the search below.
        let slot = match self.slot(cf, user_key) {
            Some((s, _)) if s > seq && latest => return Lookup::Retry,
            Some((s, v)) if s <= seq => Some((s, v)),
            _ => None,
        };
        match (slot, self.list_get(cf, user_key, hash, seq)) {
            (Some((s, v)), Some((ls, _))) if s > ls => Lookup::Value(s, v),
            (Some((s, v)), None) => Lookup::Value(s, v),
            (_, Some((ls, Some(v)))) => Lookup::Value(ls, v),
            (_, Some((_, None))) => Lookup::Deleted,
            (None, None) => Lookup::Absent,
        }
    }

    /// The newest skiplist version of `user_key` with sequence <= `seq`: its sequence and
    /// its value (`None`: a tombstone).
    fn list_get(
        &self,
        cf: u32,
        user_key: &[u8],
        hash: u64,
        seq: u64,
    ) -> Option<(u64, Option<Vec<u8>>)> {
        let trailer = key::pack_trailer(seq, key::KIND_SEEK);
        // The index knows the newest entries of recently written keys (one or two cache
        // misses instead of a search's dozen).
        let e = match self.list.newest(cf, user_key, hash, trailer) {
            Some(e) => e,
            None => {
                let target = Probe {
                    cf,
                    key: user_key,
                    trailer,
                };
                let e = self.list.seek(&target)?;
                if e.cf() != cf || e.user_key() != user_key {
                    return None;
                }
                e
            }
        };
        let s = e.trailer() >> 8;
        if (e.trailer() & 0xFF) as u8 == ValueKind::Put as u8 {
            Some((s, Some(e.value().to_vec())))
        } else {
            Some((s, None))
        }
    }

    /// Bytes of user keys and values of `cf` in `[start, end)` (`end` empty: no upper
    /// bound), every version counted.
    pub(crate) fn range_bytes(&self, cf: u32, start: &[u8], end: &[u8]) -> u64 {
        let mut n = 0u64;
        let mut cur = self.list.seek(&seek_probe(cf, start));
        while let Some(e) = cur {
            if e.cf() != cf || (!end.is_empty() && e.user_key() >= end) {
                break;
            }
            n += (e.user_key().len() + e.value().len()) as u64;
            cur = e.next();
        }
        n
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
        let mut cursor = self.list.first();
        while let Some(e) = cursor {
            let cf = e.cf();
            cfs.push(cf);
            // Jump past every key of this column family.
            let Some(next) = cf.checked_add(1) else {
                break;
            };
            cursor = self.list.seek(&seek_probe(next, b""));
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
        let push = |out: &mut Vec<(Vec<u8>, Vec<u8>)>, e: &Entry<'_>| {
            let mut k = Vec::with_capacity(e.user_key().len() + key::TRAILER_LEN);
            ikey_into(e, &mut k);
            out.push((k, e.value().to_vec()));
        };
        if !reverse {
            let mut cur = match from {
                Bound::Included(k) => self.list.seek(&probe_of_ikey(cf, k)),
                Bound::Excluded(k) => {
                    let p = probe_of_ikey(cf, k);
                    self.list
                        .seek(&p)
                        .and_then(|e| if e.is_at(&p) { e.next() } else { Some(e) })
                }
                Bound::Unbounded => self.list.seek(&seek_probe(cf, b"")),
            };
            while let Some(e) = cur {
                if e.cf() != cf || out.len() >= limit {
                    break;
                }
                push(out, &e);
                cur = e.next();
            }
        } else {
            let mut cur = match from {
                Bound::Included(k) => {
                    let p = probe_of_ikey(cf, k);
                    match self.list.seek(&p) {
                        Some(e) if e.is_at(&p) => Some(e),
                        _ => self.list.seek_before(Some(&p)),
                    }
                }
                Bound::Excluded(k) => self.list.seek_before(Some(&probe_of_ikey(cf, k))),
                Bound::Unbounded => match cf.checked_add(1) {
                    Some(n) => self.list.seek_before(Some(&seek_probe(n, b""))),
                    None => self.list.seek_before(None),
                },
            };
            // Stepping back is a search from the top for what precedes the current entry.
            while let Some(e) = cur {
                if e.cf() != cf || out.len() >= limit {
                    break;
                }
                push(out, &e);
                cur = self.list.seek_before(Some(&Probe {
                    cf,
                    key: e.user_key(),
                    trailer: e.trailer(),
                }));
            }
        }
    }

    /// Every entry of `cf` in internal-key order (for flush).
    pub(crate) fn for_each_in_cf(&self, cf: u32, mut f: impl FnMut(&[u8], &[u8]) -> bool) {
        let mut ikey = Vec::new();
        let mut cur = self.list.seek(&seek_probe(cf, b""));
        while let Some(e) = cur {
            if e.cf() != cf {
                break;
            }
            ikey.clear();
            ikey_into(&e, &mut ikey);
            if !f(&ikey, e.value()) {
                break;
            }
            cur = e.next();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn value_of(l: Lookup) -> Option<Vec<u8>> {
        match l {
            Lookup::Value(_, v) => Some(v),
            Lookup::Deleted | Lookup::Absent | Lookup::Retry => None,
        }
    }

    #[test]
    fn the_key_filter_never_hides_a_written_key_and_rejects_most_others() {
        // A deliberately small filter (8 lines) so that it fills up.
        let m = MemTable::new(512, 0);
        for i in 0..2_000u32 {
            let k = format!("key-{i}");
            if i % 3 == 0 {
                m.delete(1, k.as_bytes(), u64::from(i) + 1);
            } else {
                m.put(1, k.as_bytes(), u64::from(i) + 1, &i.to_le_bytes());
            }
        }
        for i in 0..2_000u32 {
            let k = format!("key-{i}");
            let got = m.get(1, k.as_bytes(), hash64(k.as_bytes()), MAX_SEQ, false);
            if i % 3 == 0 {
                assert!(matches!(got, Lookup::Deleted), "tombstone of {k} found");
            } else {
                assert_eq!(value_of(got), Some(i.to_le_bytes().to_vec()), "{k}");
            }
        }
        // Lightly loaded: a large filter rejects nearly every absent key.
        let big = MemTable::new(64 << 10, 0);
        let hashes = |prefix: &'static str| {
            (0..1_000u32).map(move |i| hash64(format!("{prefix}-{i}").as_bytes()))
        };
        for (i, h) in hashes("present").enumerate() {
            big.filter.as_ref().unwrap().insert(h);
            assert!(big.filter.as_ref().unwrap().may_contain(h), "key {i}");
        }
        let false_positives = hashes("absent")
            .filter(|&h| big.filter.as_ref().unwrap().may_contain(h))
            .count();
        assert!(
            false_positives < 10,
            "{false_positives} of 1000 absent keys pass"
        );
    }

    #[test]
    fn scans_start_at_inclusive_and_exclusive_bounds_in_both_directions() {
        let m = MemTable::new(0, 0);
        // cf 1: a@3 a@1 b@2 c@4 (internal-key order); cf 0 and cf 2 around it.
        m.put(0, b"z", 9, b"cf0");
        m.put(1, b"a", 1, b"a1");
        m.put(1, b"b", 2, b"b2");
        m.put(1, b"a", 3, b"a3");
        m.delete(1, b"c", 4);
        m.put(2, b"a", 5, b"cf2");
        let ik = |k: &[u8], seq: u64, kind: ValueKind| key::encode(k, seq, kind as u8);
        let scan = |from: Bound<&[u8]>, reverse: bool, limit: usize| {
            let mut out = Vec::new();
            m.scan(1, from, reverse, limit, &mut out);
            out.into_iter()
                .map(|(k, v)| {
                    let p = key::parse(&k).unwrap();
                    (p.user_key.to_vec(), p.seq, v)
                })
                .collect::<Vec<_>>()
        };
        let e = |k: &[u8], seq: u64, v: &[u8]| (k.to_vec(), seq, v.to_vec());
        let all = vec![
            e(b"a", 3, b"a3"),
            e(b"a", 1, b"a1"),
            e(b"b", 2, b"b2"),
            e(b"c", 4, b""),
        ];
        assert_eq!(scan(Bound::Unbounded, false, 10), all);
        let mut rev = all.clone();
        rev.reverse();
        assert_eq!(scan(Bound::Unbounded, true, 10), rev);
        assert_eq!(scan(Bound::Unbounded, false, 2), all[..2].to_vec());
        let a1 = ik(b"a", 1, ValueKind::Put);
        assert_eq!(scan(Bound::Included(&a1), false, 10), all[1..].to_vec());
        assert_eq!(scan(Bound::Excluded(&a1), false, 10), all[2..].to_vec());
        assert_eq!(
            scan(Bound::Included(&a1), true, 10),
            vec![all[1].clone(), all[0].clone()]
        );
        assert_eq!(scan(Bound::Excluded(&a1), true, 10), vec![all[0].clone()]);
        // A bare user key (a seek bound) sits before every version of that key.
        assert_eq!(scan(Bound::Included(b"b"), false, 10), all[2..].to_vec());
        assert_eq!(
            scan(Bound::Included(b"b"), true, 10),
            vec![all[1].clone(), all[0].clone()]
        );
        // Bounds outside the column family's keys.
        assert_eq!(scan(Bound::Included(b"d"), false, 10), vec![]);
        assert_eq!(
            scan(Bound::Excluded(&ik(b"a", 3, ValueKind::Put)), true, 10),
            vec![]
        );
        assert_eq!(m.column_families(), vec![0, 1, 2]);
        assert_eq!(m.range_bytes(1, b"a", b"c"), 3 * 3);
        let mut flushed = Vec::new();
        m.for_each_in_cf(1, |k, v| {
            flushed.push((k.to_vec(), v.to_vec()));
            true
        });
        assert_eq!(flushed.len(), 4);
        assert_eq!(flushed[3].0, ik(b"c", 4, ValueKind::Delete));
    }

    #[test]
    fn a_rewritten_slot_passes_the_key_filter() {
        // The filter learns a slot's key at its first write only; rewrites must still be
        // found, and keys never written still miss.
        let m = MemTable::new(4 << 10, 0);
        let newest = |key: &[u8], seq| m.get(0, key, hash64(key), seq, true);
        for (seq, v) in [(1, b"s1"), (2, b"s2"), (3, b"s3")] {
            m.put_in_place(0, b"apply/7", seq, v);
        }
        assert_eq!(value_of(newest(b"apply/7", 3)), Some(b"s3".to_vec()));
        assert!(matches!(newest(b"apply/8", 3), Lookup::Absent));
        // Settled and written again: a new slot, still found.
        m.settle();
        m.put_in_place(0, b"apply/7", 4, b"s4");
        assert_eq!(value_of(newest(b"apply/7", 4)), Some(b"s4".to_vec()));
    }

    #[test]
    fn in_place_slots_read_like_puts_and_settle_into_the_list() {
        let m = MemTable::new(4 << 10, 0);
        m.put(3, b"applied", 1, b"v1");
        m.put_in_place(3, b"applied", 2, b"v2");
        m.put_in_place(3, b"applied", 4, b"v4");
        m.put(3, b"other", 5, b"o5");
        let h = hash64(b"applied");
        // One slot, newest value; an older list version below it.
        assert_eq!(m.slots.lock()[&3].len(), 1);
        assert_eq!(
            value_of(m.get(3, b"applied", h, 5, true)),
            Some(b"v4".to_vec())
        );
        assert_eq!(
            value_of(m.get(3, b"applied", h, 4, false)),
            Some(b"v4".to_vec())
        );
        // Below the slot's sequence its value (v2 was replaced) is unknown: a newest-state
        // read retries, a snapshot-style read falls to the list (callers settle first).
        assert!(matches!(m.get(3, b"applied", h, 3, true), Lookup::Retry));
        assert_eq!(
            value_of(m.get(3, b"applied", h, 3, false)),
            Some(b"v1".to_vec())
        );
        assert!(m.has_slots_in(3));
        assert!(!m.has_slots_in(0));
        // A later tombstone in the list hides the slot; a later slot write shows again.
        m.delete(3, b"applied", 6);
        assert!(matches!(m.get(3, b"applied", h, 6, true), Lookup::Deleted));
        m.put_in_place(3, b"applied", 7, b"v7");
        assert_eq!(
            value_of(m.get(3, b"applied", h, 7, true)),
            Some(b"v7".to_vec())
        );
        m.settle();
        assert!(!m.has_slots_in(3));
        assert!(m.slots.lock().is_empty());
        assert_eq!(
            value_of(m.get(3, b"applied", h, 7, true)),
            Some(b"v7".to_vec())
        );
        assert!(matches!(m.get(3, b"applied", h, 6, false), Lookup::Deleted));
        // The flush sees the settled entry with its own sequence, newest first.
        let mut seqs = Vec::new();
        m.for_each_in_cf(3, |k, _| {
            let p = key::parse(k).unwrap();
            if p.user_key == b"applied" {
                seqs.push(p.seq);
            }
            true
        });
        assert_eq!(seqs, vec![7, 6, 1]);
    }

    #[test]
    fn without_a_filter_every_read_searches() {
        let m = MemTable::new(0, 0);
        assert!(m.filter.is_none());
        m.put(0, b"a", 1, b"1");
        assert_eq!(
            value_of(m.get(0, b"a", hash64(b"a"), 1, false)),
            Some(b"1".to_vec())
        );
        assert!(matches!(
            m.get(0, b"b", hash64(b"b"), 1, false),
            Lookup::Absent
        ));
        // The sequence still bounds what a read sees.
        assert!(matches!(
            m.get(0, b"a", hash64(b"a"), 0, false),
            Lookup::Absent
        ));
    }
    fn same(a: Lookup, b: Lookup) -> bool {
        match (a, b) {
            (Lookup::Value(s, v), Lookup::Value(t, w)) => s == t && v == w,
            (Lookup::Deleted, Lookup::Deleted)
            | (Lookup::Absent, Lookup::Absent)
            | (Lookup::Retry, Lookup::Retry) => true,
            _ => false,
        }
    }

    #[test]
    fn the_index_answers_exactly_what_a_search_answers() {
        // Eight slots for 48 keys in two column families: most slots are fought over, and
        // in-place writes settle below and above the keys' list entries.
        for seed in 1..=20u64 {
            let indexed = MemTable::new(512, 8);
            let plain = MemTable::new(0, 0);
            indexed.put(1, b"fresh", 1, b"v");
            let e = indexed.list.newest(
                1,
                b"fresh",
                hash64(b"fresh"),
                key::pack_trailer(1, key::KIND_SEEK),
            );
            assert!(
                e.is_some_and(|e| e.value() == b"v"),
                "the index knows a key just written"
            );
            assert!(indexed
                .list
                .newest(
                    1,
                    b"fresh",
                    hash64(b"fresh"),
                    key::pack_trailer(0, key::KIND_SEEK)
                )
                .is_none());
            let indexed = MemTable::new(512, 8);
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let key = |n: u64| format!("k{}", n % 24).into_bytes();
            let mut seq = 0u64;
            for _ in 0..600 {
                seq += 1;
                let (cf, k) = ((next() % 2) as u32, key(next()));
                let v = seq.to_le_bytes();
                match next() % 10 {
                    0..=5 => {
                        indexed.put(cf, &k, seq, &v);
                        plain.put(cf, &k, seq, &v);
                    }
                    6 => {
                        indexed.delete(cf, &k, seq);
                        plain.delete(cf, &k, seq);
                    }
                    7 | 8 => {
                        indexed.put_in_place(cf, &k, seq, &v);
                        plain.put_in_place(cf, &k, seq, &v);
                    }
                    _ => {
                        indexed.settle();
                        plain.settle();
                    }
                }
                for _ in 0..8 {
                    let (cf, k) = ((next() % 2) as u32, key(next()));
                    let h = hash64(&k);
                    let at = 1 + next() % seq;
                    for (at, latest) in [(seq, true), (at, false), (at, true)] {
                        assert!(
                            same(
                                indexed.get(cf, &k, h, at, latest),
                                plain.get(cf, &k, h, at, latest)
                            ),
                            "seed {seed}: {k:?} in cf {cf} at {at} (latest {latest})"
                        );
                    }
                }
            }
            // The same entries in the same order (the index places entries too).
            for cf in 0..2 {
                let entries = |m: &MemTable| {
                    let mut all = Vec::new();
                    m.for_each_in_cf(cf, |k, v| {
                        all.push((k.to_vec(), v.to_vec()));
                        true
                    });
                    all
                };
                assert_eq!(entries(&indexed), entries(&plain), "seed {seed}: cf {cf}");
            }
            assert!(indexed.list.placed_by_index.load(AtomicOrdering::Relaxed) > 0);
        }
    }

    #[test]
    fn a_read_through_the_index_sees_the_newest_version_at_its_sequence() {
        const KEYS: u64 = 20;
        // One writer puts keys k0..k19 in turn (key = seq % 20, value = seq) and publishes each
        // sequence after the insert, as the engine does; readers read at the published
        // sequence and must get exactly the newest version at or below it. A one-bucket
        // index (8 ways) is fought over by the twenty keys; a large one holds them all.
        for slots in [8usize, 1 << 10] {
            let m = std::sync::Arc::new(MemTable::new(0, slots));
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let (m, stop) = (m.clone(), stop.clone());
                    std::thread::spawn(move || {
                        let mut reads = 0u64;
                        while !stop.load(AtomicOrdering::Relaxed) {
                            let at = m.last_seq();
                            for k in 0..KEYS {
                                let key = format!("k{k}");
                                let want = (at >= k.max(1)).then(|| at - (at + KEYS - k) % KEYS);
                                let got = match m.get(
                                    0,
                                    key.as_bytes(),
                                    hash64(key.as_bytes()),
                                    at,
                                    true,
                                ) {
                                    Lookup::Value(s, v) => {
                                        assert_eq!(v, s.to_le_bytes(), "value of {key} at {s}");
                                        Some(s)
                                    }
                                    Lookup::Absent => None,
                                    Lookup::Deleted | Lookup::Retry => panic!("no such writes"),
                                };
                                assert_eq!(got, want.filter(|&s| s > 0), "{key} read at {at}");
                                reads += 1;
                            }
                        }
                        reads
                    })
                })
                .collect();
            for seq in 1..=30_000u64 {
                m.put(
                    0,
                    format!("k{}", seq % KEYS).as_bytes(),
                    seq,
                    &seq.to_le_bytes(),
                );
                m.set_last_seq(seq);
            }
            stop.store(true, AtomicOrdering::Relaxed);
            for r in readers {
                assert!(r.join().unwrap() > 0);
            }
        }
    }
}
