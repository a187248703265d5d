//! Several stores sharing several regions, each region with its own leader, as the
//! multi-raft server will be. One [`ClusterState`] is the truth every store answers from;
//! tests change it (split, move a leader, drop a peer) to make the client's cache stale.
//!
//! A store checks a command in TiKV's order and answers the first failure:
//! 1. `header.peer.store_id` (when set) is not this store: `StoreNotMatch`;
//! 2. the region (`header.region_id`, 0 = the region holding the empty key) has no peer
//!    here: `RegionNotFound`;
//! 3. this store does not lead the region: `NotLeader` (with the leader if there is one);
//! 4. `header.region_epoch` (when set) has another `version` (or, for a split, another
//!    `conf_ver`): `EpochNotMatch` with the region and the regions split along with it;
//! 5. a key, or a range `[key, range_end)`, is not entirely inside the region:
//!    `KeyNotInRegion`.
//!
//! `Status` is answered locally by any store, listing the regions it has a peer of.
//!
//! The cluster metadata (the cluster, its stores and their states) is kept as the
//! metadata of region 1: `StoreList` is answered locally by any store (but a store in
//! [`ClusterState::no_meta`] answers an error with only a message, as a store that learnt
//! no metadata yet), and `SetStoreState`, sent with region 0, goes through the checks
//! above to the leader of the region holding the empty key, which refuses unknown and
//! Tombstone stores, a Tombstone state, and taking a store Offline when fewer Up stores
//! than `max_peer_count` would remain.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pontoon_client::proto::errorpb;
use pontoon_client::proto::metapb;
use pontoon_client::proto::pontoonpb::{
    RegionStatus, ResponseHeader, SetStoreStateResponse, StatusResponse, StoreInfo,
    StoreListResponse,
};
use pontoon_client::proto::raft_cmdpb::{
    AdminCmdType, AdminResponse, BatchSplitResponse, RaftCmdRequest, RaftCmdResponse,
    RaftResponseHeader,
};
use tokio::task::JoinHandle;

use super::{error_response, message_error, request_spans, serve, Handler, Kv};

/// Cluster id the stores announce.
pub const CLUSTER_ID: u64 = 7;

/// One region of the truth.
#[derive(Debug, Clone)]
pub struct MockRegion {
    pub meta: metapb::Region,
    /// Store id of the leader (0: none, an election is under way).
    pub leader: u64,
    pub term: u64,
    pub kv: Kv,
}

impl MockRegion {
    fn contains(&self, key: &[u8]) -> bool {
        key >= self.meta.start_key.as_slice()
            && (self.meta.end_key.is_empty() || key < self.meta.end_key.as_slice())
    }

    fn has_store(&self, store: u64) -> bool {
        self.meta.peers.iter().any(|p| p.store_id == store)
    }

    fn peer_on(&self, store: u64) -> Option<metapb::Peer> {
        self.meta
            .peers
            .iter()
            .find(|p| store != 0 && p.store_id == store)
            .cloned()
    }

    /// True if etcd's `(start, end)` lies entirely inside the region.
    fn holds_span(&self, start: &[u8], end: &[u8]) -> bool {
        let region_end = &self.meta.end_key;
        self.contains(start)
            && match end {
                [] => true,
                [0] => region_end.is_empty(),
                _ if end <= start => true,
                _ => region_end.is_empty() || end <= region_end.as_slice(),
            }
    }

    fn epoch(&self) -> metapb::RegionEpoch {
        self.meta.region_epoch.unwrap_or_default()
    }
}

/// A command a store received and the region error it answered, if any.
#[derive(Debug, Clone)]
pub struct Logged {
    pub store: u64,
    pub req: RaftCmdRequest,
    pub error: Option<errorpb::Error>,
}

impl Logged {
    pub fn is_status(&self) -> bool {
        self.req
            .admin_request
            .as_ref()
            .is_some_and(|a| a.cmd_type == AdminCmdType::Status as i32)
    }

    pub fn region_id(&self) -> u64 {
        self.req.header.as_ref().map_or(0, |h| h.region_id)
    }

    /// The admin command type, if the command is an admin one.
    pub fn admin_type(&self) -> Option<AdminCmdType> {
        self.req
            .admin_request
            .as_ref()
            .and_then(|a| AdminCmdType::try_from(a.cmd_type).ok())
    }
}

/// What every store answers from.
#[derive(Debug)]
pub struct ClusterState {
    /// By start key.
    pub regions: Vec<MockRegion>,
    /// Next id handed out for a region or a peer.
    pub next_id: u64,
    /// Every command received, in order.
    pub log: Vec<Logged>,
    /// Errors answered instead of executing: the next non-Status command store `s`
    /// receives gets the first error queued for `s`.
    pub inject: Vec<(u64, errorpb::Error)>,
    /// `Status` answers given instead of the truth, by store (a store lagging behind).
    pub stale_status: HashMap<u64, Vec<RegionStatus>>,
    /// The cluster (id [`CLUSTER_ID`], `max_peer_count` 3).
    pub cluster: metapb::Cluster,
    /// The stores of the cluster metadata, in the order they were started (not sorted):
    /// id, client address, peer address `10.0.0.<id>:2380`, state.
    pub stores: Vec<metapb::Store>,
    /// Stores that learnt no cluster metadata yet: they cannot answer `StoreList`.
    pub no_meta: HashSet<u64>,
    /// Stores reported as not alive (stopped ones).
    pub dead: HashSet<u64>,
}

impl ClusterState {
    pub fn region(&self, id: u64) -> &MockRegion {
        self.regions.iter().find(|r| r.meta.id == id).unwrap()
    }

    pub fn region_mut(&mut self, id: u64) -> &mut MockRegion {
        self.regions.iter_mut().find(|r| r.meta.id == id).unwrap()
    }

    pub fn region_of(&self, key: &[u8]) -> &MockRegion {
        self.regions.iter().find(|r| r.contains(key)).unwrap()
    }

    /// Makes store `store` (0: none) the leader of region `id`, in a new term.
    pub fn set_leader(&mut self, id: u64, store: u64) {
        let r = self.region_mut(id);
        r.leader = store;
        r.term += 1;
    }

    /// Removes store `store`'s peer of region `id` (a membership change).
    pub fn remove_peer(&mut self, id: u64, store: u64) {
        let r = self.region_mut(id);
        r.meta.peers.retain(|p| p.store_id != store);
        if let Some(e) = r.meta.region_epoch.as_mut() {
            e.conf_ver += 1;
        }
    }

    /// Splits region `id` at `key`: the left part keeps the id, the right one gets a new
    /// id and new peer ids on the same stores, and the same leader. Returns both.
    pub fn split(&mut self, id: u64, key: &[u8]) -> Result<Vec<metapb::Region>, String> {
        let idx = self
            .regions
            .iter()
            .position(|r| r.meta.id == id)
            .ok_or("no such region")?;
        let r = &self.regions[idx];
        if key <= r.meta.start_key.as_slice() || !r.contains(key) {
            return Err(format!(
                "invalid split key {:?} for region {id} [{:?}, {:?})",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&r.meta.start_key),
                String::from_utf8_lossy(&r.meta.end_key)
            ));
        }
        let new_id = self.next_id;
        self.next_id += 1;
        let mut peer_ids = Vec::new();
        for _ in 0..self.regions[idx].meta.peers.len() {
            peer_ids.push(self.next_id);
            self.next_id += 1;
        }
        let left = &mut self.regions[idx];
        let mut right = left.clone();
        if let Some(e) = left.meta.region_epoch.as_mut() {
            e.version += 1;
        }
        left.meta.end_key = key.to_vec();
        right.meta.region_epoch = left.meta.region_epoch;
        right.meta.id = new_id;
        right.meta.start_key = key.to_vec();
        for (p, id) in right.meta.peers.iter_mut().zip(peer_ids) {
            p.id = id;
        }
        right.kv.kvs = left.kv.kvs.split_off(key);
        let out = vec![left.meta.clone(), right.meta.clone()];
        self.regions.insert(idx + 1, right);
        Ok(out)
    }

    /// Store `id` of the metadata.
    pub fn store_mut(&mut self, id: u64) -> &mut metapb::Store {
        self.stores.iter_mut().find(|s| s.id == id).unwrap()
    }

    /// Store `asking`'s answer to `StoreList`: every store of the metadata, with the
    /// region peers it holds and the regions it leads.
    fn store_list(&self, asking: u64) -> StoreListResponse {
        let stores = self
            .stores
            .iter()
            .map(|s| StoreInfo {
                store: Some(s.clone()),
                region_count: self.regions.iter().filter(|r| r.has_store(s.id)).count() as u64,
                leader_count: self.regions.iter().filter(|r| r.leader == s.id).count() as u64,
                alive: s.id == asking || !self.dead.contains(&s.id),
            })
            .collect();
        StoreListResponse {
            cluster: Some(self.cluster),
            stores,
        }
    }

    /// Applies `SetStoreState` (by region 1's leader).
    fn set_store_state(&mut self, id: u64, state: i32) -> Result<metapb::Store, String> {
        let max = self.cluster.max_peer_count as usize;
        let up_others = self
            .stores
            .iter()
            .filter(|s| s.id != id && s.state == metapb::StoreState::Up as i32)
            .count();
        let Some(store) = self.stores.iter_mut().find(|s| s.id == id) else {
            return Err(format!("store {id} not found"));
        };
        if store.state == metapb::StoreState::Tombstone as i32 {
            return Err(format!("store {id} is Tombstone"));
        }
        match metapb::StoreState::try_from(state) {
            Ok(metapb::StoreState::Up) => {}
            Ok(metapb::StoreState::Offline) => {
                if store.state == metapb::StoreState::Up as i32 && up_others < max {
                    return Err(format!(
                        "cannot take store {id} offline: {up_others} Up stores would remain, \
                         fewer than max_peer_count {max}"
                    ));
                }
            }
            _ => return Err("invalid store state: Tombstone is set by the cluster".into()),
        }
        store.state = state;
        Ok(store.clone())
    }

    fn status(&self, store: u64) -> StatusResponse {
        let regions = match self.stale_status.get(&store) {
            Some(stale) => stale.clone(),
            None => self
                .regions
                .iter()
                .filter(|r| r.has_store(store))
                .map(|r| RegionStatus {
                    region: Some(r.meta.clone()),
                    leader: Some(r.peer_on(r.leader).unwrap_or_default()),
                    raft_term: r.term,
                    applied_index: 10,
                    revision: r.kv.revision,
                    approximate_size: r.kv.size(),
                })
                .collect(),
        };
        let first = self.region_of(b"");
        StatusResponse {
            member_id: store,
            leader: first.leader,
            raft_term: first.term,
            regions,
            ..Default::default()
        }
    }

    /// Store `store`'s answer to `req`.
    fn answer(&mut self, store: u64, req: &RaftCmdRequest) -> RaftCmdResponse {
        let header = |rev: i64, term: u64| ResponseHeader {
            cluster_id: CLUSTER_ID,
            member_id: store,
            revision: rev,
            raft_term: term,
        };
        let admin_type = req
            .admin_request
            .as_ref()
            .and_then(|a| AdminCmdType::try_from(a.cmd_type).ok());
        if admin_type == Some(AdminCmdType::Status) {
            let first = self.region_of(b"");
            let h = header(first.kv.revision, first.term);
            return RaftCmdResponse {
                admin_response: Some(AdminResponse {
                    cmd_type: AdminCmdType::Status as i32,
                    status: Some(self.status(store)),
                    ..Default::default()
                }),
                response_header: Some(h),
                ..Default::default()
            };
        }
        if admin_type == Some(AdminCmdType::StoreList) {
            if self.no_meta.contains(&store) {
                return error_response(message_error(format!(
                    "store {store} knows no cluster metadata yet"
                )));
            }
            let first = self.region_of(b"");
            let h = header(first.kv.revision, first.term);
            return RaftCmdResponse {
                admin_response: Some(AdminResponse {
                    cmd_type: AdminCmdType::StoreList as i32,
                    store_list: Some(self.store_list(store)),
                    ..Default::default()
                }),
                response_header: Some(h),
                ..Default::default()
            };
        }
        if let Some(i) = self.inject.iter().position(|(s, _)| *s == store) {
            return error_response(self.inject.remove(i).1);
        }
        let h = req.header.clone().unwrap_or_default();
        if let Some(p) = h
            .peer
            .as_ref()
            .filter(|p| p.store_id != 0 && p.store_id != store)
        {
            return error_response(errorpb::Error {
                message: format!("store not match: {} != {store}", p.store_id),
                store_not_match: Some(errorpb::StoreNotMatch {
                    request_store_id: p.store_id,
                    actual_store_id: store,
                }),
                ..Default::default()
            });
        }
        let idx = if h.region_id == 0 {
            self.regions.iter().position(|r| r.contains(b""))
        } else {
            self.regions.iter().position(|r| r.meta.id == h.region_id)
        };
        let Some(idx) = idx.filter(|&i| self.regions[i].has_store(store)) else {
            return error_response(errorpb::Error {
                message: format!("region {} not found", h.region_id),
                region_not_found: Some(errorpb::RegionNotFound {
                    region_id: h.region_id,
                }),
                ..Default::default()
            });
        };
        let region = &self.regions[idx];
        if region.leader != store {
            return error_response(errorpb::Error {
                message: "not leader".into(),
                not_leader: Some(errorpb::NotLeader {
                    region_id: region.meta.id,
                    leader: region.peer_on(region.leader),
                }),
                ..Default::default()
            });
        }
        if let Some(e) = h.region_epoch {
            let cur = region.epoch();
            let split = admin_type == Some(AdminCmdType::BatchSplit);
            if e.version != cur.version || (split && e.conf_ver != cur.conf_ver) {
                let current_regions = self
                    .regions
                    .iter()
                    .filter(|r| r.has_store(store) && r.epoch().version == cur.version)
                    .map(|r| r.meta.clone())
                    .collect();
                return error_response(errorpb::Error {
                    message: "epoch not match".into(),
                    epoch_not_match: Some(errorpb::EpochNotMatch { current_regions }),
                    ..Default::default()
                });
            }
        }
        for r in &req.requests {
            for (start, end) in request_spans(r) {
                if !region.holds_span(&start, &end) {
                    return error_response(errorpb::Error {
                        message: "key not in region".into(),
                        key_not_in_region: Some(errorpb::KeyNotInRegion {
                            key: start,
                            region_id: region.meta.id,
                            start_key: region.meta.start_key.clone(),
                            end_key: region.meta.end_key.clone(),
                        }),
                        ..Default::default()
                    });
                }
            }
        }
        let id = region.meta.id;
        let mut resp = RaftCmdResponse::default();
        match admin_type {
            None => {}
            Some(AdminCmdType::BatchSplit) => {
                let key = req
                    .admin_request
                    .as_ref()
                    .and_then(|a| a.splits.as_ref())
                    .and_then(|s| s.requests.first())
                    .map(|s| s.split_key.clone())
                    .unwrap_or_default();
                match self.split(id, &key) {
                    Ok(regions) => {
                        resp.admin_response = Some(AdminResponse {
                            cmd_type: AdminCmdType::BatchSplit as i32,
                            splits: Some(BatchSplitResponse { regions }),
                            ..Default::default()
                        })
                    }
                    Err(message) => return error_response(message_error(message)),
                }
            }
            Some(AdminCmdType::SetStoreState) => {
                let r = req
                    .admin_request
                    .as_ref()
                    .and_then(|a| a.set_store_state)
                    .unwrap_or_default();
                match self.set_store_state(r.store_id, r.state) {
                    Ok(store) => {
                        resp.admin_response = Some(AdminResponse {
                            cmd_type: AdminCmdType::SetStoreState as i32,
                            set_store_state: Some(SetStoreStateResponse { store: Some(store) }),
                            ..Default::default()
                        })
                    }
                    Err(message) => return error_response(message_error(message)),
                }
            }
            Some(_) => return error_response(message_error("unsupported admin command")),
        }
        let region = self.region_mut(id);
        match region.kv.execute(&req.requests) {
            Ok(responses) => resp.responses = responses,
            Err(message) => return error_response(message_error(message)),
        }
        resp.header = Some(RaftResponseHeader {
            current_term: region.term,
            ..Default::default()
        });
        resp.response_header = Some(header(region.kv.revision, region.term));
        resp
    }
}

struct StoreHandler {
    id: u64,
    state: Arc<Mutex<ClusterState>>,
}

impl Handler for StoreHandler {
    fn handle(&self, req: &RaftCmdRequest) -> Option<(RaftCmdResponse, Option<Duration>)> {
        let mut st = self.state.lock().unwrap();
        let resp = st.answer(self.id, req);
        let error = resp.header.as_ref().and_then(|h| h.error.clone());
        st.log.push(Logged {
            store: self.id,
            req: req.clone(),
            error,
        });
        Some((resp, None))
    }
}

/// A region to start with: `[start, end)`, the stores holding a peer, the leader's store.
pub struct RegionSpec<'a> {
    pub start: &'a [u8],
    pub end: &'a [u8],
    pub stores: &'a [u64],
    pub leader: u64,
}

/// Running stores sharing one [`ClusterState`].
pub struct MockCluster {
    /// `(store id, address)` in the order given.
    pub stores: Vec<(u64, SocketAddr)>,
    pub state: Arc<Mutex<ClusterState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl MockCluster {
    /// Starts one store per id of `stores` on 127.0.0.1 (port 0), with `regions` (ids 1,
    /// 2, ... in the order given; peer ids are `10 * region id + store id`, version 1,
    /// conf_ver 1).
    pub async fn start(stores: &[u64], regions: &[RegionSpec<'_>]) -> MockCluster {
        let mut list: Vec<MockRegion> = regions
            .iter()
            .zip(1u64..)
            .map(|(spec, id)| MockRegion {
                meta: metapb::Region {
                    id,
                    start_key: spec.start.to_vec(),
                    end_key: spec.end.to_vec(),
                    region_epoch: Some(metapb::RegionEpoch {
                        conf_ver: 1,
                        version: 1,
                    }),
                    peers: spec
                        .stores
                        .iter()
                        .map(|&s| metapb::Peer {
                            id: 10 * id + s,
                            store_id: s,
                            role: 0,
                        })
                        .collect(),
                },
                leader: spec.leader,
                term: 2,
                kv: Kv::default(),
            })
            .collect();
        list.sort_by(|a, b| a.meta.start_key.cmp(&b.meta.start_key));
        let state = Arc::new(Mutex::new(ClusterState {
            regions: list,
            next_id: 1000,
            log: Vec::new(),
            inject: Vec::new(),
            stale_status: HashMap::new(),
            cluster: metapb::Cluster {
                id: CLUSTER_ID,
                max_peer_count: 3,
            },
            stores: Vec::new(),
            no_meta: HashSet::new(),
            dead: HashSet::new(),
        }));
        let mut out = MockCluster {
            stores: Vec::new(),
            state: Arc::clone(&state),
            tasks: Vec::new(),
        };
        for &id in stores {
            let handler = Arc::new(StoreHandler {
                id,
                state: Arc::clone(&state),
            });
            let (addr, task) = serve("127.0.0.1:0", CLUSTER_ID, id, handler)
                .await
                .expect("bind 127.0.0.1:0");
            out.stores.push((id, addr));
            out.tasks.push(task);
            state.lock().unwrap().stores.push(metapb::Store {
                id,
                address: addr.to_string(),
                peer_address: format!("10.0.0.{id}:2380"),
                ..Default::default()
            });
        }
        out
    }

    /// Stops store `id`: it stops listening and closes its connections, and the others
    /// report it as not alive.
    pub fn stop(&mut self, id: u64) {
        if let Some(i) = self.stores.iter().position(|(s, _)| *s == id) {
            self.tasks[i].abort();
        }
        self.with(|s| s.dead.insert(id));
    }

    /// The stores' addresses, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.stores.iter().map(|(_, a)| a.to_string()).collect()
    }

    /// Runs `f` on the shared state.
    pub fn with<R>(&self, f: impl FnOnce(&mut ClusterState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// The commands received so far.
    pub fn log(&self) -> Vec<Logged> {
        self.with(|s| s.log.clone())
    }

    /// Forgets the commands received so far.
    pub fn clear_log(&self) {
        self.with(|s| s.log.clear());
    }

    /// `Status` commands received per store since the log was cleared.
    pub fn status_calls(&self, store: u64) -> usize {
        self.log()
            .iter()
            .filter(|l| l.store == store && l.is_status())
            .count()
    }
}
