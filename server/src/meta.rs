//! Cluster metadata: `Cluster {id, max_peer_count}` and the `Store {id, address,
//! peer_address, state}` records, kept as ONE record under the empty key of the internal
//! `meta` column family.
//!
//! Why there: the empty key always belongs to region 1 (splits keep the left part under the
//! old id), so the record is replicated by region 1's raft group, changed only by commands
//! applied there (`PutStore`, `SetStoreState`), carried by region 1's snapshots with its data
//! and written in the same batch as its apply state. Region 1's leader store sends the record
//! in its store heartbeats, so every store knows the cluster's stores.

use pontoon_client::prost::Message as _;
use pontoon_client::proto::metapb::{self, StoreState};
use pontoon_client::proto::pontoonpb::ClusterMeta;
use pontoon_engine::{Engine, WriteBatch};

/// The internal column family holding the record (not addressable by clients).
pub const META_CF: &str = "meta";
const META_KEY: &[u8] = b"";

/// Errors reading the record.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] pontoon_engine::Error),
    /// The stored record does not decode.
    #[error("cluster metadata record is corrupt: {0}")]
    Corrupt(String),
}

/// Creates the column family if this engine does not have it yet.
pub fn ensure_cf(engine: &Engine) -> Result<(), Error> {
    if !engine.cf_names().iter().any(|c| c == META_CF) {
        engine.create_cf(META_CF)?;
    }
    Ok(())
}

/// The record, if this store holds region 1's data.
pub fn load(engine: &Engine) -> Result<Option<ClusterMeta>, Error> {
    match engine.get(META_CF, META_KEY)? {
        None => Ok(None),
        Some(v) => ClusterMeta::decode(&v[..])
            .map(Some)
            .map_err(|e| Error::Corrupt(e.to_string())),
    }
}

/// Stages the record into `batch`.
pub fn stage(batch: &mut WriteBatch, meta: &ClusterMeta) {
    batch.put(META_CF, META_KEY, &meta.encode_to_vec());
}

/// The record of a cluster bootstrapped with `stores`.
pub fn initial(cluster_id: u64, max_peer_count: u32, stores: Vec<metapb::Store>) -> ClusterMeta {
    ClusterMeta {
        cluster: Some(metapb::Cluster {
            id: cluster_id,
            max_peer_count,
        }),
        stores,
        version: 1,
    }
}

/// The store's state (an unknown store counts as Up: region 1's initial members are all
/// recorded, and a store only gets replicas after it registered).
pub fn state_of(meta: &ClusterMeta, store: u64) -> StoreState {
    meta.stores
        .iter()
        .find(|s| s.id == store)
        .map(|s| StoreState::try_from(s.state).unwrap_or(StoreState::Up))
        .unwrap_or(StoreState::Up)
}

/// `max_peer_count` (at least 1).
pub fn max_peers(meta: &ClusterMeta) -> usize {
    meta.cluster
        .map(|c| c.max_peer_count.max(1) as usize)
        .unwrap_or(3)
}

/// Inserts or updates a store's addresses (its state stays). Refused for a Tombstone store.
pub fn put_store(meta: &mut ClusterMeta, store: &metapb::Store) -> Result<(), String> {
    match meta.stores.iter_mut().find(|s| s.id == store.id) {
        Some(s) if s.state == StoreState::Tombstone as i32 => {
            Err(format!("store {} is a tombstone", store.id))
        }
        Some(s) => {
            if !store.address.is_empty() {
                s.address = store.address.clone();
            }
            if !store.peer_address.is_empty() {
                s.peer_address = store.peer_address.clone();
            }
            Ok(())
        }
        None => {
            meta.stores.push(metapb::Store {
                id: store.id,
                address: store.address.clone(),
                peer_address: store.peer_address.clone(),
                state: StoreState::Up as i32,
                version: String::new(),
            });
            meta.stores.sort_by_key(|s| s.id);
            Ok(())
        }
    }
}

/// Changes a store's state, under the rules: Tombstone is final and only follows Offline;
/// a store goes Offline only if enough Up stores remain for `max_peer_count` replicas.
pub fn set_state(
    meta: &mut ClusterMeta,
    id: u64,
    state: StoreState,
) -> Result<metapb::Store, String> {
    let max = max_peers(meta);
    let up_others = meta
        .stores
        .iter()
        .filter(|s| s.id != id && s.state == StoreState::Up as i32)
        .count();
    let Some(s) = meta.stores.iter_mut().find(|s| s.id == id) else {
        return Err(format!("store {id} is not a member of the cluster"));
    };
    let cur = StoreState::try_from(s.state).unwrap_or(StoreState::Up);
    match (cur, state) {
        (StoreState::Tombstone, _) => return Err(format!("store {id} is a tombstone")),
        (_, StoreState::Tombstone) if cur != StoreState::Offline => {
            return Err(format!("store {id} must be Offline before it becomes a tombstone"))
        }
        (StoreState::Up, StoreState::Offline) if up_others < max => {
            return Err(format!(
                "only {up_others} Up stores would remain and every region needs {max} replicas (max_peer_count): add a store first"
            ))
        }
        _ => {}
    }
    s.state = state as i32;
    Ok(s.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store(id: u64) -> metapb::Store {
        metapb::Store {
            id,
            peer_address: format!("p{id}"),
            ..Default::default()
        }
    }

    #[test]
    fn store_states_follow_the_rules() {
        let mut m = initial(7, 3, (1..=3).map(store).collect());
        // Three Up stores and three replicas per region: none may leave.
        assert!(set_state(&mut m, 1, StoreState::Offline)
            .unwrap_err()
            .contains("add a store first"));
        put_store(&mut m, &store(4)).unwrap();
        assert_eq!(state_of(&m, 4), StoreState::Up);
        assert!(set_state(&mut m, 1, StoreState::Tombstone).is_err());
        set_state(&mut m, 1, StoreState::Offline).unwrap();
        // Cancelled, then again, then final.
        set_state(&mut m, 1, StoreState::Up).unwrap();
        set_state(&mut m, 1, StoreState::Offline).unwrap();
        set_state(&mut m, 1, StoreState::Tombstone).unwrap();
        assert!(set_state(&mut m, 1, StoreState::Up).is_err());
        assert!(put_store(&mut m, &store(1)).is_err());
        assert!(set_state(&mut m, 9, StoreState::Offline).is_err());
        // Addresses update, the state stays.
        let mut s2 = store(2);
        s2.address = "c2".into();
        put_store(&mut m, &s2).unwrap();
        let got = m.stores.iter().find(|s| s.id == 2).unwrap();
        assert_eq!(
            (got.address.as_str(), got.peer_address.as_str()),
            ("c2", "p2")
        );
    }
}
