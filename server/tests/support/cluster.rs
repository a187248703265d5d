//! An in-process cluster for fault tests: real engines (on an in-memory fault file system)
//! and real raft-log stores (on the raft-log store's in-memory file system), one store loop
//! per store, and a simulated network whose filters drop, delay or partition messages.
//!
//! A crash is a power loss: the store loop stops, and the store restarts from what its file
//! systems had made durable (the engine's memtable, which has no WAL, is gone; the raft log
//! holds every synced write).

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pontoon_client::proto::raft_serverpb::RaftMessage;
use pontoon_client::proto::{pontoonpb, raft_cmdpb};
use pontoon_engine::{io::FaultFs, Engine, Options};
use pontoon_raftlog::{fault::MemFs, LogStore};
use pontoon_server::node::{Node, NodeConfig};
use pontoon_server::transport::Transport;
use protobuf::Message as _;
use raft::eraftpb::MessageType;
use raft_cmdpb::{CmdType, RaftCmdRequest, RaftCmdResponse, Request};

/// What a filter decides for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    Drop,
    Delay(Duration),
}

/// A network rule. Filters are consulted in order; the first non-`Deliver` verdict wins.
/// `t` is the raft message's type, or `MsgHup` (never sent between raft peers) for the
/// messages between stores that carry no raft message (store heartbeats, region 0).
pub trait Filter: Send + Sync {
    fn check(&self, from: u64, to: u64, t: MessageType) -> Verdict;
}

/// A tiny deterministic-per-seed PRNG shared by filters (xorshift64*).
pub struct Rng(AtomicU64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(AtomicU64::new(seed | 1))
    }

    pub fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A float in [0, 1).
    pub fn unit(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Drops a fraction of all messages.
pub struct DropRate {
    pub rate: f64,
    pub rng: Rng,
}

impl Filter for DropRate {
    fn check(&self, _: u64, _: u64, _: MessageType) -> Verdict {
        if self.rng.unit() < self.rate {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Delays a fraction of messages by up to `max`.
pub struct Delay {
    pub rate: f64,
    pub max: Duration,
    pub rng: Rng,
}

impl Filter for Delay {
    fn check(&self, _: u64, _: u64, _: MessageType) -> Verdict {
        if self.rng.unit() < self.rate {
            let us = self.rng.below(self.max.as_micros() as u64 + 1);
            Verdict::Delay(Duration::from_micros(us))
        } else {
            Verdict::Deliver
        }
    }
}

/// Messages cross only within a group; stores in no group are cut off from everyone.
pub struct Partition(pub Vec<Vec<u64>>);

impl Filter for Partition {
    fn check(&self, from: u64, to: u64, _: MessageType) -> Verdict {
        let group = |s: u64| self.0.iter().position(|g| g.contains(&s));
        match (group(from), group(to)) {
            (Some(a), Some(b)) if a == b => Verdict::Deliver,
            _ => Verdict::Drop,
        }
    }
}

/// Drops every message of one type (e.g. heartbeats or snapshots).
pub struct DropType(pub MessageType);

impl Filter for DropType {
    fn check(&self, _: u64, _: u64, t: MessageType) -> Verdict {
        if t == self.0 {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

struct Delayed {
    due: Instant,
    seq: u64,
    to: u64,
    msg: RaftMessage,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// The simulated network: which store loops are up, and the filters.
#[derive(Default)]
pub struct Router {
    nodes: RwLock<HashMap<u64, Arc<Node>>>,
    filters: RwLock<Vec<Box<dyn Filter>>>,
    /// The current partition, kept apart from the other filters so it can change alone.
    partition: RwLock<Option<Partition>>,
    delayed: Mutex<(BinaryHeap<Reverse<Delayed>>, u64)>,
    wake: Condvar,
    stop: AtomicBool,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
}

impl Router {
    fn deliver(&self, to: u64, msg: RaftMessage) -> bool {
        match self.nodes.read().unwrap().get(&to) {
            Some(n) => n.step(msg),
            None => false,
        }
    }

    fn route(&self, from: u64, msg: RaftMessage) -> bool {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let to = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or_default();
        let t = if msg.region_id == 0 {
            MessageType::MsgHup
        } else {
            raft::eraftpb::Message::parse_from_bytes(&msg.message)
                .map(|m| m.get_msg_type())
                .unwrap_or(MessageType::MsgHup)
        };
        let mut verdict = match &*self.partition.read().unwrap() {
            Some(p) => p.check(from, to, t),
            None => Verdict::Deliver,
        };
        if verdict == Verdict::Deliver {
            for f in self.filters.read().unwrap().iter() {
                verdict = f.check(from, to, t);
                if verdict != Verdict::Deliver {
                    break;
                }
            }
        }
        match verdict {
            Verdict::Deliver => self.deliver(to, msg),
            // Like a network: the sender cannot tell a drop from a slow delivery.
            Verdict::Drop => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Verdict::Delay(d) => {
                let mut q = self.delayed.lock().unwrap();
                q.1 += 1;
                let seq = q.1;
                q.0.push(Reverse(Delayed {
                    due: Instant::now() + d,
                    seq,
                    to,
                    msg,
                }));
                self.wake.notify_one();
                true
            }
        }
    }

    fn run_delayer(self: Arc<Self>) {
        let mut q = self.delayed.lock().unwrap();
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            match q.0.peek() {
                Some(Reverse(d)) if d.due <= now => {
                    if let Some(Reverse(d)) = q.0.pop() {
                        drop(q);
                        self.deliver(d.to, d.msg);
                        q = self.delayed.lock().unwrap();
                    }
                }
                Some(Reverse(d)) => {
                    let wait = d.due - now;
                    q = self.wake.wait_timeout(q, wait).unwrap().0;
                }
                None => {
                    q = self
                        .wake
                        .wait_timeout(q, Duration::from_millis(50))
                        .unwrap()
                        .0;
                }
            }
        }
    }
}

/// One store's end of the simulated network.
struct SimTransport {
    from: u64,
    router: Arc<Router>,
}

impl Transport for SimTransport {
    fn send(&self, msg: RaftMessage) -> bool {
        self.router.route(self.from, msg)
    }
}

/// File systems of one store: they outlive its crashes.
struct Disks {
    engine: FaultFs,
    log: MemFs,
}

/// Cluster settings.
#[derive(Clone)]
pub struct ClusterConfig {
    pub stores: u64,
    pub node: NodeConfig,
    pub engine: Options,
}

impl ClusterConfig {
    pub fn new(stores: u64) -> ClusterConfig {
        ClusterConfig {
            stores,
            node: NodeConfig {
                cluster_id: 7,
                tick_interval: Duration::from_millis(20),
                election_tick: 10,
                heartbeat_tick: 2,
                // Hibernating followers check their membership every half second.
                stale_check_ticks: 25,
                // Membership changes by hand in most tests; the placement tests turn it on.
                placement: false,
                ..NodeConfig::default()
            },
            engine: Options {
                write_buffer_size: 256 << 10,
                ..Options::default()
            },
        }
    }
}

struct Running {
    node: Arc<Node>,
    engine: Arc<Engine>,
    log: Arc<LogStore>,
}

/// The cluster.
pub struct Cluster {
    pub cfg: ClusterConfig,
    pub router: Arc<Router>,
    disks: Mutex<HashMap<u64, Disks>>,
    running: Mutex<HashMap<u64, Running>>,
    joined: Mutex<std::collections::HashSet<u64>>,
    delayer: Option<JoinHandle<()>>,
}

fn log_config() -> pontoon_raftlog::Config {
    pontoon_raftlog::Config {
        target_file_size: 1 << 20,
        ..pontoon_raftlog::Config::default()
    }
}

impl Cluster {
    /// Starts every store.
    pub fn start(cfg: ClusterConfig) -> Cluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let router = Arc::new(Router::default());
        let r = router.clone();
        let delayer = std::thread::Builder::new()
            .name("sim-delayer".into())
            .spawn(move || r.run_delayer())
            .unwrap();
        let c = Cluster {
            cfg,
            router,
            disks: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            joined: Mutex::new(std::collections::HashSet::new()),
            delayer: Some(delayer),
        };
        for id in c.ids() {
            c.disks.lock().unwrap().insert(
                id,
                Disks {
                    engine: FaultFs::new(),
                    log: MemFs::new(),
                },
            );
            c.start_store(id);
        }
        c
    }

    pub fn ids(&self) -> Vec<u64> {
        (1..=self.cfg.stores).collect()
    }

    /// The stores running now, joined ones included.
    pub fn running_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.running.lock().unwrap().keys().copied().collect();
        ids.sort();
        ids
    }

    /// Starts (or restarts) store `id` from its disks.
    pub fn start_store(&self, id: u64) {
        // A store that joined keeps joining on restarts (its command line keeps --join):
        // if it crashed before its first snapshot it must not bootstrap a region.
        let join = self.joined.lock().unwrap().contains(&id);
        self.start_store_with(id, join)
    }

    /// Starts store `id` as a new member joining the running cluster (no bootstrap: it
    /// waits to be added and sent a snapshot).
    pub fn join_store(&self, id: u64) {
        self.joined.lock().unwrap().insert(id);
        self.start_store_with(id, true)
    }

    fn start_store_with(&self, id: u64, join: bool) {
        let (efs, lfs) = {
            let mut d = self.disks.lock().unwrap();
            let d = d.entry(id).or_insert_with(|| Disks {
                engine: FaultFs::new(),
                log: MemFs::new(),
            });
            (d.engine.clone(), d.log.clone())
        };
        let engine = Arc::new(
            Engine::open_with_fs("/engine", self.cfg.engine.clone(), Arc::new(efs)).unwrap(),
        );
        let log =
            Arc::new(LogStore::open_with_fs("/raftlog", log_config(), Arc::new(lfs)).unwrap());
        let mut ncfg = self.cfg.node.clone();
        ncfg.store_id = id;
        ncfg.initial_voters = self.ids();
        ncfg.join = join;
        // Every store knows where the initial ones (and itself) are, as with
        // --initial-cluster; the simulated transport routes by store id.
        ncfg.initial_addresses = self
            .ids()
            .into_iter()
            .chain(std::iter::once(id))
            .map(|s| (s, format!("sim-store-{s}")))
            .collect();
        ncfg.peer_address = format!("sim-store-{id}");
        ncfg.client_address = format!("sim-client-{id}");
        let transport = Arc::new(SimTransport {
            from: id,
            router: self.router.clone(),
        });
        let node = Arc::new(Node::start(ncfg, engine.clone(), log.clone(), transport).unwrap());
        self.router.nodes.write().unwrap().insert(id, node.clone());
        self.running
            .lock()
            .unwrap()
            .insert(id, Running { node, engine, log });
    }

    /// Power loss on store `id`: it stops, and only what its disks had made durable stays.
    pub fn crash_store(&self, id: u64) {
        self.router.nodes.write().unwrap().remove(&id);
        let Some(r) = self.running.lock().unwrap().remove(&id) else {
            return;
        };
        r.node.stop();
        let mut disks = self.disks.lock().unwrap();
        let d = disks.get_mut(&id).unwrap();
        d.engine = d.engine.crash();
        d.log = d.log.crash();
        drop(disks);
        // The old engine may flush on drop: into the old, detached file system.
        drop(r);
    }

    /// Store `id` crashes and loses its disks: it restarts empty, as a new machine would.
    pub fn wipe_store(&self, id: u64) {
        self.crash_store(id);
        let mut disks = self.disks.lock().unwrap();
        disks.insert(
            id,
            Disks {
                engine: FaultFs::new(),
                log: MemFs::new(),
            },
        );
    }

    pub fn is_up(&self, id: u64) -> bool {
        self.running.lock().unwrap().contains_key(&id)
    }

    pub fn node(&self, id: u64) -> Option<Arc<Node>> {
        self.running
            .lock()
            .unwrap()
            .get(&id)
            .map(|r| r.node.clone())
    }

    pub fn engine(&self, id: u64) -> Option<Arc<Engine>> {
        self.running
            .lock()
            .unwrap()
            .get(&id)
            .map(|r| r.engine.clone())
    }

    pub fn log(&self, id: u64) -> Option<Arc<LogStore>> {
        self.running.lock().unwrap().get(&id).map(|r| r.log.clone())
    }

    /// Hands `req` to store `id` and waits for its answer.
    pub fn submit(&self, id: u64, req: RaftCmdRequest) -> RaftCmdResponse {
        let node = self.node(id).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(node.submit(req, tx), "store {id} is stopped");
        rx.blocking_recv().unwrap()
    }

    /// A command of one request to store `id`.
    pub fn request(&self, id: u64, r: Request) -> RaftCmdResponse {
        self.submit(
            id,
            RaftCmdRequest {
                requests: vec![r],
                ..Default::default()
            },
        )
    }

    pub fn add_filter(&self, f: Box<dyn Filter>) {
        self.router.filters.write().unwrap().push(f);
    }

    /// Removes every filter and heals the partition.
    pub fn clear_filters(&self) {
        self.router.filters.write().unwrap().clear();
        self.heal();
    }

    /// Replaces the current partition (other filters stay).
    pub fn partition(&self, groups: Vec<Vec<u64>>) {
        *self.router.partition.write().unwrap() = Some(Partition(groups));
    }

    /// Ends the current partition (other filters stay).
    pub fn heal(&self) {
        *self.router.partition.write().unwrap() = None;
    }

    /// The store a running node believes leads, if a running node leads.
    pub fn leader(&self) -> Option<u64> {
        let running = self.running.lock().unwrap();
        let mut best: Option<(u64, u64)> = None;
        for (id, r) in running.iter() {
            let s = r.node.status();
            if s.leader.load(Ordering::Acquire) == *id {
                let term = s.term.load(Ordering::Acquire);
                if best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, *id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Waits for a leader (panics after `limit`).
    pub fn wait_leader(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops everything (no crash: store loops end cleanly).
    pub fn shutdown(&mut self) {
        self.router.nodes.write().unwrap().clear();
        for (_, r) in self.running.lock().unwrap().drain() {
            r.node.stop();
        }
        self.router.stop.store(true, Ordering::Release);
        self.router.wake.notify_all();
        if let Some(t) = self.delayer.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How a client call ended.
#[derive(Debug)]
pub enum Outcome {
    Ok(Box<RaftCmdResponse>),
    /// No answer in time: the command may or may not have taken effect.
    Unknown,
}

/// A client of the in-process cluster: finds the leader, retries on `NotLeader`, gives up
/// after a deadline. Each client has its own small runtime to wait on replies.
pub struct Client {
    rt: tokio::runtime::Runtime,
    leader_hint: u64,
    pub attempt_timeout: Duration,
    rng: Rng,
}

impl Client {
    pub fn new(seed: u64) -> Client {
        Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap(),
            leader_hint: 0,
            attempt_timeout: Duration::from_millis(1500),
            rng: Rng::new(seed),
        }
    }

    /// Sends `requests` until some store answers without a routing error or `deadline`
    /// passes. A write that timed out on some attempt and then got `NotLeader` may still
    /// have been applied; the outcome is then `Unknown` unless a later attempt succeeds.
    pub fn call(&mut self, c: &Cluster, requests: Vec<Request>, deadline: Duration) -> Outcome {
        self.call_with(c, requests, deadline, true)
    }

    /// Like [`Client::call`]; with `retry_ambiguous` false, an attempt whose outcome is
    /// unknown (no answer in time, or the store stopped) ends the call with `Unknown`
    /// instead of sending the command again. A write sent twice may be applied twice,
    /// which a history of single operations cannot describe.
    pub fn call_with(
        &mut self,
        c: &Cluster,
        requests: Vec<Request>,
        deadline: Duration,
        retry_ambiguous: bool,
    ) -> Outcome {
        match requests.as_slice() {
            [r] if r.cmd_type == CmdType::Range as i32 && r.range.is_some() => {
                self.range_across_regions(c, r.clone(), deadline, retry_ambiguous)
            }
            _ => self.call_once(c, requests, deadline, retry_ambiguous),
        }
    }

    /// A range read over however many regions it spans: the server refuses a range that
    /// leaves the region holding its start (KeyNotInRegion, with that region's bounds), so
    /// it is read region by region and stitched, as the client library does.
    fn range_across_regions(
        &mut self,
        c: &Cluster,
        r: Request,
        deadline: Duration,
        retry_ambiguous: bool,
    ) -> Outcome {
        let end = Instant::now() + deadline;
        let whole = r.range.clone().unwrap();
        let mut cur = whole.key.clone();
        let mut piece_end = whole.range_end.clone();
        let mut acc: Option<RaftCmdResponse> = None;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Outcome::Unknown;
            }
            let mut piece = r.clone();
            if let Some(g) = piece.range.as_mut() {
                g.key = cur.clone();
                g.range_end = piece_end.clone();
            }
            let Outcome::Ok(resp) = self.call_once(c, vec![piece], left, retry_ambiguous) else {
                return Outcome::Unknown;
            };
            let err = resp.header.as_ref().and_then(|h| h.error.clone());
            if let Some(e) = err {
                match e.key_not_in_region {
                    Some(k) if k.start_key <= cur && !k.end_key.is_empty() && cur < k.end_key => {
                        piece_end = if whole.range_end == [0] || whole.range_end > k.end_key {
                            k.end_key
                        } else {
                            whole.range_end.clone()
                        };
                        continue;
                    }
                    Some(_) => {
                        // The store's view of the region is not the current one yet.
                        std::thread::sleep(Duration::from_millis(10));
                        self.leader_hint = 0;
                        continue;
                    }
                    None => return Outcome::Ok(resp),
                }
            }
            let mut resp = *resp;
            match acc.as_mut() {
                None => acc = Some(resp),
                Some(a) => {
                    let (Some(into), Some(from)) = (
                        a.responses[0].range.as_mut(),
                        resp.responses[0].range.take(),
                    ) else {
                        unreachable!("a range response without its range part");
                    };
                    into.kvs.extend(from.kvs);
                    into.count += from.count;
                    into.more |= from.more;
                }
            }
            if piece_end == whole.range_end {
                return Outcome::Ok(Box::new(acc.unwrap()));
            }
            cur = piece_end;
            piece_end = whole.range_end.clone();
        }
    }

    fn call_once(
        &mut self,
        c: &Cluster,
        requests: Vec<Request>,
        deadline: Duration,
        retry_ambiguous: bool,
    ) -> Outcome {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            let target = if self.leader_hint != 0 && c.is_up(self.leader_hint) {
                self.leader_hint
            } else {
                let ids = c.running_ids();
                if ids.is_empty() {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                // After a routing error any store may be the one: pick at random then.
                match c.leader() {
                    Some(l) if self.rng.below(2) == 0 => l,
                    _ => ids[self.rng.below(ids.len() as u64) as usize],
                }
            };
            let Some(node) = c.node(target) else {
                self.leader_hint = 0;
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let req = RaftCmdRequest {
                requests: requests.clone(),
                ..Default::default()
            };
            if !node.submit(req, tx) {
                self.leader_hint = 0;
                continue;
            }
            let wait = self
                .attempt_timeout
                .min(end.saturating_duration_since(Instant::now()));
            let resp = self
                .rt
                .block_on(async { tokio::time::timeout(wait, rx).await });
            match resp {
                Ok(Ok(resp)) => {
                    let err = resp.header.as_ref().and_then(|h| h.error.clone());
                    match err {
                        None => return Outcome::Ok(Box::new(resp)),
                        Some(e) => {
                            if let Some(nl) = e.not_leader {
                                self.leader_hint =
                                    nl.leader.map(|p| p.store_id).unwrap_or_default();
                                if self.leader_hint == 0 {
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                                continue;
                            }
                            if e.message.contains("outcome is unknown") {
                                // Like a timeout: it may or may not have been applied.
                                self.leader_hint = 0;
                                if !retry_ambiguous {
                                    return Outcome::Unknown;
                                }
                                continue;
                            }
                            if e.stale_command.is_some()
                                || e.message.contains("shutting down")
                                || e.epoch_not_match.is_some()
                                || e.region_not_found.is_some()
                                || e.server_is_busy.is_some()
                            {
                                // Split under way, or this store has not caught up with
                                // it: ask again (a write refused this way was not applied).
                                if e.region_not_found.is_some() {
                                    std::thread::sleep(Duration::from_millis(10));
                                }
                                self.leader_hint = 0;
                                continue;
                            }
                            return Outcome::Ok(Box::new(resp));
                        }
                    }
                }
                // Dropped (store stopped) or timed out: try elsewhere.
                Ok(Err(_)) | Err(_) => {
                    self.leader_hint = 0;
                    if !retry_ambiguous {
                        return Outcome::Unknown;
                    }
                }
            }
        }
        Outcome::Unknown
    }
}

/// A `ChangePeer` admin command for store `store` (peer id = store id).
pub fn change_peer(add: bool, store: u64) -> RaftCmdRequest {
    use raft_cmdpb::{AdminCmdType, AdminRequest, ChangePeerRequest, ConfChangeType};
    RaftCmdRequest {
        admin_request: Some(AdminRequest {
            cmd_type: AdminCmdType::ChangePeer as i32,
            change_peer: Some(ChangePeerRequest {
                change_type: if add {
                    ConfChangeType::AddNode
                } else {
                    ConfChangeType::RemoveNode
                } as i32,
                peer: Some(pontoon_client::proto::metapb::Peer {
                    id: store,
                    store_id: store,
                    ..Default::default()
                }),
                peer_addr: if add {
                    format!("sim-store-{store}")
                } else {
                    String::new()
                },
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The region's members as the leader sees them (None if no leader answers).
pub fn members(c: &Cluster) -> Option<Vec<u64>> {
    let l = c.leader()?;
    let node = c.node(l)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.submit(status_request(), tx);
    // Not `Cluster::submit`: the leader may be crashed meanwhile by another thread.
    let r = rx.blocking_recv().ok()?;
    let mut ids: Vec<u64> = r
        .admin_response?
        .status?
        .members
        .iter()
        .map(|m| m.id)
        .collect();
    ids.sort();
    Some(ids)
}

/// The `Status` admin command.
pub fn status_request() -> RaftCmdRequest {
    use raft_cmdpb::{AdminCmdType, AdminRequest};
    RaftCmdRequest {
        admin_request: Some(AdminRequest {
            cmd_type: AdminCmdType::Status as i32,
            status: Some(pontoonpb::StatusRequest {}),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A `BatchSplit` of the region holding `key`, at `key` (the store picks the new ids).
pub fn split_request(key: &[u8]) -> RaftCmdRequest {
    use raft_cmdpb::{AdminCmdType, AdminRequest, BatchSplitRequest, SplitRequest};
    RaftCmdRequest {
        admin_request: Some(AdminRequest {
            cmd_type: AdminCmdType::BatchSplit as i32,
            splits: Some(BatchSplitRequest {
                requests: vec![SplitRequest {
                    split_key: key.to_vec(),
                    ..Default::default()
                }],
                right_derive: false,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sends `req` to the running stores in turn, following NotLeader hints and moving on from
/// stores that do not hold the region (any more), until one answers otherwise. Panics
/// after 20 s.
pub fn submit_to_leader(c: &Cluster, req: RaftCmdRequest) -> RaftCmdResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    let mut target = c.wait_leader(Duration::from_secs(20));
    loop {
        let r = c.submit(target, req.clone());
        let e = r.header.as_ref().and_then(|h| h.error.as_ref());
        let hint = match e {
            Some(e) if e.not_leader.is_some() => {
                e.not_leader.and_then(|nl| nl.leader).map(|p| p.store_id)
            }
            Some(e) if e.region_not_found.is_some() => None,
            _ => return r,
        };
        let ids = c.running_ids();
        i += 1;
        target = hint
            .filter(|&s| s != 0 && c.is_up(s))
            .unwrap_or(ids[i % ids.len()]);
        assert!(Instant::now() < deadline, "no leader answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Submits an admin command to whoever leads, retrying until `limit`. A retried
/// membership change may be applied twice; callers check the outcome with `members`.
pub fn admin(c: &Cluster, req: RaftCmdRequest, limit: Duration) -> RaftCmdResponse {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(l) = c.leader() {
            let node = c.node(l).unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel();
            if node.submit(req.clone(), tx) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                // A leader cut off by a partition never answers: ask again elsewhere.
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(2));
                if let Ok(Ok(r)) = rt.block_on(async { tokio::time::timeout(left, rx).await }) {
                    let e = r.header.as_ref().and_then(|h| h.error.as_ref());
                    if e.is_none_or(|e| e.not_leader.is_none() && e.stale_command.is_none()) {
                        return r;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "admin command not answered in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn put(key: &[u8], value: &[u8]) -> Request {
    Request {
        cmd_type: CmdType::Put as i32,
        put: Some(raft_cmdpb::PutRequest {
            cf: String::new(),
            key: key.to_vec(),
            value: value.to_vec(),
            prev_kv: false,
        }),
        ..Default::default()
    }
}

pub fn get(key: &[u8]) -> Request {
    Request {
        cmd_type: CmdType::Get as i32,
        get: Some(raft_cmdpb::GetRequest {
            cf: String::new(),
            key: key.to_vec(),
        }),
        ..Default::default()
    }
}

pub fn range(key: &[u8], end: &[u8], serializable: bool) -> Request {
    Request {
        cmd_type: CmdType::Range as i32,
        range: Some(pontoonpb::RangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            serializable,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The error of a response, if any.
pub fn error_of(r: &RaftCmdResponse) -> Option<String> {
    r.header
        .as_ref()
        .and_then(|h| h.error.as_ref())
        .map(|e| e.message.clone())
}

/// Reads `[key, end)` from one store's engine directly (serializable, local).
pub fn local_range(c: &Cluster, id: u64, key: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let engine = c.engine(id).unwrap();
    let r = pontoon_server::mvcc::range(&engine, "default", key, end, usize::MAX, false).unwrap();
    r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}
