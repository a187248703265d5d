//! Hash maps keyed by ids, for the store loop's per-message lookups (the hasher is the raft
//! log's: one multiplication per id instead of SipHash).

use std::collections::{HashMap, HashSet};

pub(crate) use pontoon_raftlog::ids::IdBuild;

pub(crate) type IdMap<V> = HashMap<u64, V, IdBuild>;
pub(crate) type IdSet = HashSet<u64, IdBuild>;
