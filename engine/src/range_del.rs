//! Range tombstones: `delete_range(start, end)` at a sequence number hides every version of
//! every key in `[start, end)` written before it.
//!
//! Readers collect the tombstones of every source they read, drop those their snapshot does
//! not see, and fragment them into non-overlapping pieces, each carrying the newest sequence
//! that covers it ([`Fragments`]). A key version `(k, s)` is hidden iff the fragment holding
//! `k` has a sequence greater than `s`.

/// One `delete_range` as stored in memtables and SSTables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeTombstone {
    /// First user key covered (inclusive).
    pub start: Vec<u8>,
    /// First user key not covered (exclusive).
    pub end: Vec<u8>,
    /// Sequence number of the deletion.
    pub seq: u64,
}

impl RangeTombstone {
    /// True if `user_key` lies in `[start, end)`.
    pub fn covers(&self, user_key: &[u8]) -> bool {
        self.start.as_slice() <= user_key && user_key < self.end.as_slice()
    }
}

/// Non-overlapping fragments of a set of tombstones, each with the newest covering sequence.
#[derive(Debug, Default, Clone)]
pub struct Fragments {
    /// Sorted, non-overlapping `(start, end, seq)`.
    frags: Vec<(Vec<u8>, Vec<u8>, u64)>,
}

impl Fragments {
    /// Fragments the tombstones visible at `snapshot_seq` (those with `seq <= snapshot_seq`).
    pub fn new<'a>(
        tombstones: impl IntoIterator<Item = &'a RangeTombstone>,
        snapshot_seq: u64,
    ) -> Self {
        let ts: Vec<&RangeTombstone> = tombstones
            .into_iter()
            .filter(|t| t.seq <= snapshot_seq && t.start < t.end)
            .collect();
        if ts.is_empty() {
            return Fragments::default();
        }
        let mut bounds: Vec<&[u8]> = ts
            .iter()
            .flat_map(|t| [t.start.as_slice(), t.end.as_slice()])
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let mut frags: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
        for w in bounds.windows(2) {
            let (lo, hi) = (w[0], w[1]);
            let seq = ts
                .iter()
                .filter(|t| t.start.as_slice() <= lo && hi <= t.end.as_slice())
                .map(|t| t.seq)
                .max();
            if let Some(seq) = seq {
                match frags.last_mut() {
                    Some(last) if last.1.as_slice() == lo && last.2 == seq => last.1 = hi.to_vec(),
                    _ => frags.push((lo.to_vec(), hi.to_vec(), seq)),
                }
            }
        }
        Fragments { frags }
    }

    /// True if there are no tombstones.
    pub fn is_empty(&self) -> bool {
        self.frags.is_empty()
    }

    /// The newest tombstone sequence covering `user_key`, or 0.
    pub fn max_covering_seq(&self, user_key: &[u8]) -> u64 {
        // Last fragment whose start <= key.
        let idx = self.frags.partition_point(|f| f.0.as_slice() <= user_key);
        if idx == 0 {
            return 0;
        }
        let f = &self.frags[idx - 1];
        if user_key < f.1.as_slice() {
            f.2
        } else {
            0
        }
    }

    /// True if the version `(user_key, seq)` is hidden by a tombstone.
    pub fn hides(&self, user_key: &[u8], seq: u64) -> bool {
        !self.frags.is_empty() && self.max_covering_seq(user_key) > seq
    }

    /// The fragments, sorted and non-overlapping.
    pub fn iter(&self) -> impl Iterator<Item = &(Vec<u8>, Vec<u8>, u64)> {
        self.frags.iter()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str, e: &str, seq: u64) -> RangeTombstone {
        RangeTombstone {
            start: s.as_bytes().to_vec(),
            end: e.as_bytes().to_vec(),
            seq,
        }
    }

    #[test]
    fn overlapping_tombstones_fragment() {
        let ts = [t("a", "m", 5), t("f", "z", 9), t("c", "d", 20)];
        let f = Fragments::new(&ts, 10);
        assert_eq!(f.max_covering_seq(b"a"), 5);
        assert_eq!(f.max_covering_seq(b"c"), 5, "seq 20 is above the snapshot");
        assert_eq!(f.max_covering_seq(b"g"), 9);
        assert_eq!(f.max_covering_seq(b"z"), 0);
        assert!(f.hides(b"b", 4));
        assert!(!f.hides(b"b", 5));
        let all = Fragments::new(&ts, 100);
        assert_eq!(all.max_covering_seq(b"c"), 20);
        assert_eq!(all.max_covering_seq(b"d"), 5);
    }
}
