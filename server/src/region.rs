//! Region metadata: key ranges, epochs, the persisted region state, snapshot framing and
//! cluster-unique ids for the regions and peers a split creates.
//!
//! A region owns `[start_key, end_key)` (an empty `end_key` is unbounded). Its
//! `RegionLocalState` (state + `metapb::Region`: range, epoch, peers) lives in the engine's
//! `raft` column family under `region/<id BE>`, written in the same `WriteBatch` as the apply
//! that changed it, so a flushed engine always holds a region record matching its data and
//! apply state.

use std::sync::Arc;

use pontoon_client::prost::Message as _;
use pontoon_client::proto::metapb::{self, PeerRole};
use pontoon_client::proto::raft_serverpb::{PeerState, RegionLocalState};
use pontoon_engine::{Engine, IterOptions, WriteBatch};
use pontoon_raftlog::{LogBatch, LogStore};
use raft::eraftpb::ConfState;

use crate::mvcc;

/// The region every cluster starts with: all keys, bootstrapped with peer ids equal to the
/// store ids of the initial members.
pub const FIRST_REGION_ID: u64 = 1;

const REGION_PREFIX: &[u8] = b"region/";

/// The raft-log stream that holds this store's own records (the id allocator). Region ids
/// are allocated far below it.
const STORE_STREAM: u64 = u64::MAX;
const KEY_NEXT_ID: &[u8] = b"next_id";
/// Ids reserved per durable allocator write.
const ID_BLOCK: u64 = 1024;

/// Errors of region metadata.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] pontoon_engine::Error),
    /// The raft-log store failed.
    #[error(transparent)]
    Log(#[from] pontoon_raftlog::Error),
    /// A stored record does not decode.
    #[error("stored region record {key} is corrupt: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Store ids must leave room for the allocator's per-store id space.
    #[error("store id {0} is too large: store ids must be below 2^31")]
    StoreIdTooLarge(u64),
}

fn region_key(region: u64) -> Vec<u8> {
    let mut k = REGION_PREFIX.to_vec();
    k.extend_from_slice(&region.to_be_bytes());
    k
}

/// Stages the region's local state into the `raft` column family.
pub fn stage_state(batch: &mut WriteBatch, region: &metapb::Region, state: PeerState) {
    let st = RegionLocalState {
        state: state as i32,
        region: Some(region.clone()),
    };
    batch.put(mvcc::RAFT_CF, &region_key(region.id), &st.encode_to_vec());
}

fn decode_state(key: &[u8], v: &[u8]) -> Result<RegionLocalState, Error> {
    RegionLocalState::decode(v).map_err(|e| Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// The stored state of one region, if any.
pub fn load_state(engine: &Engine, region: u64) -> Result<Option<RegionLocalState>, Error> {
    let key = region_key(region);
    match engine.get(mvcc::RAFT_CF, &key)? {
        None => Ok(None),
        Some(v) => decode_state(&key, &v).map(Some),
    }
}

/// Every stored region state, by region id.
pub fn load_states(engine: &Engine) -> Result<Vec<RegionLocalState>, Error> {
    let mut end = REGION_PREFIX.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let iter = engine.iter(
        mvcc::RAFT_CF,
        IterOptions {
            lower_bound: Some(REGION_PREFIX.to_vec()),
            upper_bound: Some(end),
            ..Default::default()
        },
    )?;
    let mut out = Vec::new();
    for item in iter {
        let (k, v) = item?;
        out.push(decode_state(&k, &v)?);
    }
    Ok(out)
}

/// True if `key` is in `[start_key, end_key)`.
pub fn key_in_region(key: &[u8], region: &metapb::Region) -> bool {
    key >= region.start_key.as_slice()
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// True if the etcd-style range `[key, range_end)` lies inside the region (empty
/// `range_end` = `key` alone; `"\0"` = every key from `key` on).
pub fn range_in_region(key: &[u8], range_end: &[u8], region: &metapb::Region) -> bool {
    if !key_in_region(key, region) {
        return false;
    }
    if range_end.is_empty() {
        return true;
    }
    if range_end == [0] {
        return region.end_key.is_empty();
    }
    region.end_key.is_empty() || range_end <= region.end_key.as_slice()
}

/// True if the two regions' ranges overlap.
pub fn overlaps(a: &metapb::Region, b: &metapb::Region) -> bool {
    let a_before_b = !a.end_key.is_empty() && a.end_key <= b.start_key;
    let b_before_a = !b.end_key.is_empty() && b.end_key <= a.start_key;
    !a_before_b && !b_before_a
}

/// The region's epoch (zero if absent).
pub fn epoch(region: &metapb::Region) -> metapb::RegionEpoch {
    region.region_epoch.unwrap_or_default()
}

/// The raft configuration the region's peers describe.
pub fn conf_state_of(region: &metapb::Region) -> ConfState {
    let mut cs = ConfState::default();
    for p in &region.peers {
        if p.role == PeerRole::Learner as i32 {
            cs.learners.push(p.id);
        } else {
            cs.voters.push(p.id);
        }
    }
    cs
}

/// This store's peer in the region.
pub fn find_peer(region: &metapb::Region, store_id: u64) -> Option<metapb::Peer> {
    region
        .peers
        .iter()
        .find(|p| p.store_id == store_id)
        .copied()
}

/// Raft snapshot data: the encoded `metapb::Region` (u32 LE length first), then the bytes of
/// [`crate::snapshot`].
pub fn encode_snapshot_data(region: &metapb::Region, data: &[u8]) -> Vec<u8> {
    let r = region.encode_to_vec();
    let mut out = Vec::with_capacity(4 + r.len() + data.len());
    // A region record is far below 4 GiB; a bogus length would fail the decoder.
    out.extend_from_slice(&u32::try_from(r.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&r);
    out.extend_from_slice(data);
    out
}

/// Splits raft snapshot data into the region and the snapshot bytes; `None` if malformed.
pub fn decode_snapshot_data(data: &[u8]) -> Option<(metapb::Region, &[u8])> {
    let (len, rest) = data.split_at_checked(4)?;
    let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
    let (r, rest) = rest.split_at_checked(len)?;
    let region = metapb::Region::decode(r).ok()?;
    Some((region, rest))
}

/// Hands out ids that no other store hands out: `store_id << 32 | n`. Region 1's bootstrap
/// peers use the store ids themselves (below 2^32), so they never collide either. The high
/// mark is persisted (synced) in blocks before any id of a block is used, so a restart never
/// reuses one.
pub struct IdAllocator {
    log: Arc<LogStore>,
    base: u64,
    next: u64,
    limit: u64,
}

impl IdAllocator {
    /// Opens the allocator of `store_id`.
    pub fn open(log: Arc<LogStore>, store_id: u64) -> Result<IdAllocator, Error> {
        if store_id >= 1 << 31 {
            return Err(Error::StoreIdTooLarge(store_id));
        }
        let limit = match log.get_state(STORE_STREAM, KEY_NEXT_ID) {
            None => 1,
            Some(b) => {
                let arr: [u8; 8] = b.as_slice().try_into().map_err(|_| Error::Corrupt {
                    key: "next_id".into(),
                    reason: "not 8 bytes".into(),
                })?;
                u64::from_le_bytes(arr)
            }
        };
        Ok(IdAllocator {
            log,
            base: store_id << 32,
            next: limit,
            limit,
        })
    }

    /// A fresh cluster-unique id.
    pub fn alloc(&mut self) -> Result<u64, Error> {
        if self.next >= self.limit {
            let limit = self.next + ID_BLOCK;
            let mut b = LogBatch::new();
            b.put_state(STORE_STREAM, KEY_NEXT_ID, &limit.to_le_bytes())?;
            self.log.write(b, true)?;
            self.limit = limit;
        }
        let id = self.base | (self.next & 0xffff_ffff);
        self.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn region(start: &str, end: &str) -> metapb::Region {
        metapb::Region {
            id: 9,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn ranges_follow_etcd_rules() {
        let r = region("b", "d");
        assert!(key_in_region(b"b", &r));
        assert!(key_in_region(b"c\xff", &r));
        assert!(!key_in_region(b"d", &r));
        assert!(!key_in_region(b"a", &r));
        assert!(range_in_region(b"b", b"d", &r));
        assert!(!range_in_region(b"b", b"d\0", &r));
        assert!(!range_in_region(b"b", b"\0", &r));
        assert!(range_in_region(b"c", b"", &r));
        let all = region("", "");
        assert!(range_in_region(b"a", b"\0", &all));
        assert!(key_in_region(b"", &all));
        assert!(overlaps(&r, &all));
        assert!(!overlaps(&r, &region("d", "")));
        assert!(!overlaps(&r, &region("", "b")));
        assert!(overlaps(&r, &region("c", "")));
    }

    #[test]
    fn snapshot_framing_round_trips_and_rejects_garbage() {
        let r = region("a", "z");
        let data = encode_snapshot_data(&r, b"payload");
        let (back, rest) = decode_snapshot_data(&data).unwrap();
        assert_eq!(back, r);
        assert_eq!(rest, b"payload");
        assert!(decode_snapshot_data(&data[..3]).is_none());
        assert!(decode_snapshot_data(&[255, 255, 255, 255, 1]).is_none());
    }

    #[test]
    fn ids_are_unique_across_restarts_and_stores() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(LogStore::open(dir.path(), pontoon_raftlog::Config::default()).unwrap());
        let mut a = IdAllocator::open(log.clone(), 3).unwrap();
        let first: Vec<u64> = (0..5).map(|_| a.alloc().unwrap()).collect();
        drop(a);
        let mut b = IdAllocator::open(log.clone(), 3).unwrap();
        let again = b.alloc().unwrap();
        assert!(first.iter().all(|&id| id != again && id >> 32 == 3));
        let mut other = IdAllocator::open(log, 4).unwrap();
        assert_eq!(other.alloc().unwrap() >> 32, 4);
        assert!(IdAllocator::open(
            Arc::new(LogStore::open(dir.path().join("x"), Default::default()).unwrap()),
            1 << 40
        )
        .is_err());
    }
}
