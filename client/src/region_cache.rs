//! [`RegionCache`]: the client's map from keys to regions and their leaders.
//!
//! The key space is split into regions `[start_key, end_key)` (an empty `end_key` is
//! unbounded). The cache holds the regions the client last heard of, keyed by start key,
//! each with the leader last known. It is pure data: it never talks to a store. The
//! [`Client`](crate::client::Client) fills it from the stores' `Status` answers, from
//! `EpochNotMatch` errors and from splits, and reads it to route commands.
//!
//! **Merge rule.** Information about a region is only as good as its epoch. Inserting a
//! region first looks at every cached region with the same id or an overlapping range:
//! if any of them has a newer epoch (higher `version`, then higher `conf_ver`), the
//! inserted one is stale and dropped; otherwise they are all removed and the inserted one
//! takes their place. When the removed region is the same region at the same epoch, its
//! leader is kept unless the inserted one knows a leader of a term at least as recent, and
//! the larger `approximate_size` and `revision` are kept.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::proto::metapb;
use crate::proto::pontoonpb::RegionStatus;

/// One region as the cache knows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedRegion {
    /// Id, `[start_key, end_key)`, epoch and peers.
    pub region: metapb::Region,
    /// The leader last known; `None` if unknown.
    pub leader: Option<metapb::Peer>,
    /// Raft term in which `leader` was reported (0: unknown). A leader reported for a
    /// higher term replaces one reported for a lower term.
    pub leader_term: u64,
    /// Bytes of keys and values, as a store last measured them (0: unknown).
    pub approximate_size: u64,
    /// The region's revision as last reported (revisions are per region).
    pub revision: i64,
}

impl CachedRegion {
    /// A region with no leader known.
    pub fn new(region: metapb::Region) -> CachedRegion {
        CachedRegion {
            region,
            ..Default::default()
        }
    }

    /// The region as a store's `Status` describes it. A leader with store id 0 is "none".
    pub fn from_status(st: RegionStatus) -> CachedRegion {
        CachedRegion {
            region: st.region.unwrap_or_default(),
            leader: st.leader.filter(|p| p.store_id != 0),
            leader_term: st.raft_term,
            approximate_size: st.approximate_size,
            revision: st.revision,
        }
    }

    /// The region id.
    pub fn id(&self) -> u64 {
        self.region.id
    }

    /// The epoch as `(version, conf_ver)`, the order in which epochs compare.
    pub fn epoch(&self) -> (u64, u64) {
        epoch_order(&self.region)
    }

    /// True if `key` is in `[start_key, end_key)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.region.start_key.as_slice() && before_end(key, &self.region.end_key)
    }

    /// The region's peer on `store_id`, if it has one.
    pub fn peer_on(&self, store_id: u64) -> Option<&metapb::Peer> {
        self.region
            .peers
            .iter()
            .find(|p| store_id != 0 && p.store_id == store_id)
    }

    /// Store id of the leader last known (0: unknown).
    pub fn leader_store_id(&self) -> u64 {
        self.leader.as_ref().map_or(0, |p| p.store_id)
    }
}

/// An epoch as `(version, conf_ver)`: tuples compare the way epochs do (a split bumps
/// `version`, a membership change `conf_ver`; `version` decides first).
pub fn epoch_order(region: &metapb::Region) -> (u64, u64) {
    region
        .region_epoch
        .as_ref()
        .map_or((0, 0), |e| (e.version, e.conf_ver))
}

/// True if `key` lies before the exclusive `end` (an empty `end` is unbounded).
pub fn before_end(key: &[u8], end: &[u8]) -> bool {
    end.is_empty() || key < end
}

/// True if the ranges of `a` and `b` share a key.
pub fn overlaps(a: &metapb::Region, b: &metapb::Region) -> bool {
    // [a.start, a.end) and [b.start, b.end) overlap iff each starts before the other ends.
    before_end(&a.start_key, &b.end_key) && before_end(&b.start_key, &a.end_key)
}

/// Regions by start key; see the module documentation for the merge rule.
///
/// Entries are shared (`Arc`): routing a request takes a reference to its region rather
/// than a copy of its keys and peers (four allocations per request).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegionCache {
    by_start: BTreeMap<Vec<u8>, Arc<CachedRegion>>,
}

impl RegionCache {
    /// An empty cache.
    pub fn new() -> RegionCache {
        RegionCache::default()
    }

    /// Number of regions cached.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// True if no region is cached.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// The cached regions in key order.
    pub fn regions(&self) -> impl Iterator<Item = &CachedRegion> {
        self.by_start.values().map(|r| &**r)
    }

    /// The region whose range contains `key`, if cached.
    pub fn locate(&self, key: &[u8]) -> Option<&CachedRegion> {
        self.locate_shared(key).map(|r| &**r)
    }

    /// [`RegionCache::locate`], as a shared reference the caller may keep.
    pub fn locate_shared(&self, key: &[u8]) -> Option<&Arc<CachedRegion>> {
        self.by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.contains(key))
    }

    /// The region with id `id`, if cached.
    pub fn get(&self, id: u64) -> Option<&CachedRegion> {
        self.by_start.values().find(|r| r.id() == id).map(|r| &**r)
    }

    /// Inserts `new` unless a cached region with the same id or an overlapping range has a
    /// newer epoch; removes the regions it replaces. Returns true if `new` was inserted.
    pub fn insert(&mut self, new: CachedRegion) -> bool {
        let conflicts: Vec<Vec<u8>> = self
            .by_start
            .iter()
            .filter(|(_, c)| c.id() == new.id() || overlaps(&c.region, &new.region))
            .map(|(k, _)| k.clone())
            .collect();
        let stale = conflicts
            .iter()
            .filter_map(|k| self.by_start.get(k))
            .any(|c| c.epoch() > new.epoch());
        if stale {
            return false;
        }
        let mut merged = new;
        for k in conflicts {
            let Some(old) = self.by_start.remove(&k) else {
                continue;
            };
            if old.id() != merged.id() {
                continue;
            }
            let keep_old_leader = match (&merged.leader, &old.leader) {
                (None, Some(l)) => merged.peer_on(l.store_id).is_some(),
                (Some(_), Some(_)) => old.leader_term > merged.leader_term,
                _ => false,
            };
            if keep_old_leader {
                merged.leader = old.leader;
                merged.leader_term = old.leader_term;
            }
            if old.epoch() == merged.epoch() {
                merged.approximate_size = merged.approximate_size.max(old.approximate_size);
                merged.revision = merged.revision.max(old.revision);
            }
        }
        self.by_start
            .insert(merged.region.start_key.clone(), Arc::new(merged));
        true
    }

    /// Inserts every region of a store's `Status` answer (see [`RegionCache::insert`]).
    pub fn merge_statuses(&mut self, statuses: impl IntoIterator<Item = RegionStatus>) {
        for st in statuses {
            if st.region.is_some() {
                self.insert(CachedRegion::from_status(st));
            }
        }
    }

    /// Removes region `id`; returns it if it was cached.
    pub fn remove(&mut self, id: u64) -> Option<CachedRegion> {
        let key = self
            .by_start
            .iter()
            .find(|(_, r)| r.id() == id)
            .map(|(k, _)| k.clone())?;
        self.by_start.remove(&key).map(Arc::unwrap_or_clone)
    }

    /// Records `leader` as the leader of region `id` (from a `NotLeader` hint, which is
    /// newer than anything cached). Returns false if the region is not cached.
    pub fn set_leader(&mut self, id: u64, leader: metapb::Peer) -> bool {
        match self.by_start.values_mut().find(|r| r.id() == id) {
            Some(r) => {
                Arc::make_mut(r).leader = Some(leader);
                true
            }
            None => false,
        }
    }

    /// Forgets the leader of region `id` (a store said it has none).
    pub fn clear_leader(&mut self, id: u64) {
        if let Some(r) = self.by_start.values_mut().find(|r| r.id() == id) {
            Arc::make_mut(r).leader = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(store: u64) -> metapb::Peer {
        metapb::Peer {
            id: store * 10,
            store_id: store,
            role: 0,
        }
    }

    fn region(id: u64, start: &str, end: &str, version: u64, conf_ver: u64) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            region_epoch: Some(metapb::RegionEpoch { conf_ver, version }),
            peers: vec![peer(1), peer(2), peer(3)],
        }
    }

    fn led(r: metapb::Region, store: u64, term: u64) -> CachedRegion {
        CachedRegion {
            region: r,
            leader: Some(peer(store)),
            leader_term: term,
            ..Default::default()
        }
    }

    fn ids(c: &RegionCache) -> Vec<u64> {
        c.regions().map(|r| r.id()).collect()
    }

    #[test]
    fn locate_finds_the_region_holding_a_key() {
        let mut c = RegionCache::new();
        c.insert(CachedRegion::new(region(1, "", "g", 2, 1)));
        c.insert(CachedRegion::new(region(2, "g", "p", 2, 1)));
        c.insert(CachedRegion::new(region(3, "p", "", 2, 1)));
        assert_eq!(c.locate(b"").map(|r| r.id()), Some(1));
        assert_eq!(c.locate(b"a").map(|r| r.id()), Some(1));
        assert_eq!(c.locate(b"g").map(|r| r.id()), Some(2));
        assert_eq!(c.locate(b"ozzz").map(|r| r.id()), Some(2));
        assert_eq!(c.locate(b"p").map(|r| r.id()), Some(3));
        assert_eq!(c.locate(b"\xff\xff").map(|r| r.id()), Some(3));
        c.remove(2);
        assert!(c.locate(b"h").is_none());
        assert_eq!(c.locate(b"f").map(|r| r.id()), Some(1));
    }

    #[test]
    fn newer_epoch_wins_in_either_order() {
        let old = CachedRegion::new(region(1, "", "", 1, 1));
        let left = CachedRegion::new(region(1, "", "m", 2, 1));
        let right = CachedRegion::new(region(5, "m", "", 2, 1));
        let mut a = RegionCache::new();
        assert!(a.insert(old.clone()));
        assert!(a.insert(left.clone()));
        assert!(a.insert(right.clone()));
        let mut b = RegionCache::new();
        assert!(b.insert(right.clone()));
        assert!(b.insert(left.clone()));
        assert!(!b.insert(old.clone()), "the pre-split region is stale");
        assert_eq!(ids(&a), vec![1, 5]);
        assert_eq!(a, b);
        // The pre-split region overlapped only the right half in a: still stale.
        let mut c = RegionCache::new();
        c.insert(right);
        assert!(!c.insert(old));
        assert_eq!(ids(&c), vec![5]);
    }

    #[test]
    fn conf_ver_breaks_version_ties_and_same_id_moves() {
        let mut c = RegionCache::new();
        c.insert(CachedRegion::new(region(1, "a", "c", 3, 2)));
        assert!(!c.insert(CachedRegion::new(region(1, "a", "c", 3, 1))));
        assert!(c.insert(CachedRegion::new(region(1, "a", "c", 3, 4))));
        assert_eq!(c.get(1).map(|r| r.epoch()), Some((3, 4)));
        // The same id with a new range (a merge would do this) replaces the old entry.
        assert!(c.insert(CachedRegion::new(region(1, "a", "e", 4, 4))));
        assert_eq!(c.len(), 1);
        assert_eq!(c.locate(b"d").map(|r| r.id()), Some(1));
    }

    #[test]
    fn leaders_merge_by_term_and_survive_an_epoch_bump() {
        let mut c = RegionCache::new();
        c.insert(led(region(1, "", "", 1, 1), 2, 7));
        // Same epoch, no leader known by that store: keep store 2.
        c.insert(CachedRegion::new(region(1, "", "", 1, 1)));
        assert_eq!(c.get(1).map(|r| r.leader_store_id()), Some(2));
        // An older term's leader does not replace a newer one.
        c.insert(led(region(1, "", "", 1, 1), 3, 6));
        assert_eq!(c.get(1).map(|r| r.leader_store_id()), Some(2));
        c.insert(led(region(1, "", "", 1, 1), 3, 8));
        assert_eq!(c.get(1).map(|r| r.leader_store_id()), Some(3));
        // A split keeps the leader where it was when no newer one is known.
        c.insert(CachedRegion::new(region(1, "", "m", 2, 1)));
        assert_eq!(c.get(1).map(|r| r.leader_store_id()), Some(3));
        c.set_leader(1, peer(1));
        assert_eq!(c.get(1).map(|r| r.leader_store_id()), Some(1));
        c.clear_leader(1);
        assert_eq!(c.get(1).map(|r| r.leader_store_id()), Some(0));
    }

    #[test]
    fn statuses_from_several_stores_merge() {
        let st = |r: metapb::Region, leader: u64, term: u64, size: u64, rev: i64| RegionStatus {
            region: Some(r),
            leader: Some(if leader == 0 {
                metapb::Peer::default()
            } else {
                peer(leader)
            }),
            raft_term: term,
            applied_index: 0,
            revision: rev,
            approximate_size: size,
        };
        let mut c = RegionCache::new();
        // Store 3 lags: it has not applied the split yet.
        c.merge_statuses(vec![st(region(1, "", "", 1, 1), 0, 2, 100, 4)]);
        c.merge_statuses(vec![
            st(region(1, "", "m", 2, 1), 1, 2, 60, 5),
            st(region(5, "m", "", 2, 1), 1, 2, 40, 5),
        ]);
        c.merge_statuses(vec![st(region(5, "m", "", 2, 1), 0, 2, 45, 6)]);
        let all: Vec<_> = c
            .regions()
            .map(|r| (r.id(), r.leader_store_id(), r.approximate_size, r.revision))
            .collect();
        assert_eq!(all, vec![(1, 1, 60, 5), (5, 1, 45, 6)]);
    }
}
