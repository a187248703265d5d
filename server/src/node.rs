//! The store loop: one thread that drives the region's raft-rs `RawNode`, hands each ready's
//! entries and hard state to the raft-log store (asynchronously: several readies in flight
//! share the writer's group commit), sends raft messages to other stores, applies committed
//! commands to the engine together with the apply state, and answers.
//!
//! Write path: a command arrives on the channel -> `propose` -> the leader's appends go to
//! the transport while its own raft-log write is under way -> raft commits the entry once a
//! quorum has it durable -> each committed command is applied to the engine in one
//! `WriteBatch` holding the data and the region's [`ApplyState`] -> the reply is sent.
//! Linearizable reads use raft's ReadIndex (on the leader or a follower) and are served once
//! the applied index reaches the read index; serializable reads are served from the engine
//! at once. Admin commands: `CompactLog`, `ChangePeer`, `TransferLeader`, `Status`.
//!
//! Restart: the engine's apply state says which entry was applied last (the engine has no
//! WAL, so that is the last *flushed* one); raft replays every committed entry after it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pontoon_client::prost::Message as _;
use pontoon_client::proto::raft_serverpb::RaftMessage;
use pontoon_client::proto::{errorpb, metapb, pontoonpb, raft_cmdpb};
use pontoon_engine::{Engine, WriteBatch};
use pontoon_raftlog::{LogBatch, LogStore};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use raft_cmdpb::{AdminCmdType, CmdType, RaftCmdRequest, RaftCmdResponse, Request, Response};
use raft_proto::ConfChangeI as _;

use crate::mvcc::{self, ApplyState, Op, OpResult};
use crate::peer_storage::PeerStorage;
use crate::transport::Transport;

/// The one region every store serves until multi-raft (issue 6) splits it.
pub const FIRST_REGION_ID: u64 = 1;

/// A bootstrapped region starts as if from a snapshot at this index...
const INIT_INDEX: u64 = 5;
/// ...and term, so that the first election makes term 2, as on a fresh etcd member.
const INIT_TERM: u64 = 1;

/// Where a reply goes.
pub type Reply = tokio::sync::oneshot::Sender<RaftCmdResponse>;

/// Node settings. Every field says its default.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Cluster id carried in every response header. Default: 1.
    pub cluster_id: u64,
    /// This store's id (also its peer id in the first region). Default: 1.
    pub store_id: u64,
    /// Voters of the first region at bootstrap (store ids). Default: `[store_id]`.
    pub initial_voters: Vec<u64>,
    /// Raft tick. Default: 100 ms.
    pub tick_interval: Duration,
    /// Ticks without a leader before an election. Default: 10.
    pub election_tick: usize,
    /// Ticks between leader heartbeats. Default: 3.
    pub heartbeat_tick: usize,
    /// The leader proposes `CompactLog` once the region's applied log holds this many
    /// entries. Followers more than half of this behind then catch up by snapshot.
    /// Default: 10,000.
    pub compact_log_count: u64,
    /// ... or once the applied log holds about this many bytes (estimated from the
    /// average entry size). Default: 64 MiB.
    pub compact_log_bytes: u64,
    /// Ticks between two checks of the log size on the leader. Default: 10.
    pub compact_check_ticks: usize,
    /// Join an existing cluster instead of bootstrapping one: the region starts with no
    /// configuration and waits for the leader (after `member add`) to send it a snapshot.
    /// Ignored once the store has state. Default: false.
    pub join: bool,
    /// Peer addresses of the initial members, for `member list` (stores added later bring
    /// theirs in `ChangePeer`). Default: empty.
    pub initial_addresses: Vec<(u64, String)>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            cluster_id: 1,
            store_id: 1,
            initial_voters: Vec::new(),
            tick_interval: Duration::from_millis(100),
            election_tick: 10,
            heartbeat_tick: 3,
            compact_log_count: 10_000,
            compact_log_bytes: 64 << 20,
            compact_check_ticks: 10,
            join: false,
            initial_addresses: Vec::new(),
        }
    }
}

/// Errors starting or running the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] pontoon_engine::Error),
    /// The raft-log store failed.
    #[error(transparent)]
    Log(#[from] pontoon_raftlog::Error),
    /// The raft storage bridge failed.
    #[error(transparent)]
    Storage(#[from] crate::peer_storage::Error),
    /// The apply state or a stored value is damaged.
    #[error(transparent)]
    Mvcc(#[from] mvcc::Error),
    /// raft-rs refused.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// An asynchronous raft-log write failed (the log store is poisoned).
    #[error("raft-log write failed: {0}")]
    LogWrite(String),
    /// A snapshot could not be built or applied.
    #[error("snapshot: {0}")]
    Snapshot(#[from] crate::snapshot::Error),
    /// A thread could not start.
    #[error("cannot start the store loop: {0}")]
    Spawn(std::io::Error),
}

/// What the node publishes for status and headers, updated by the store loop.
#[derive(Debug, Default)]
pub struct NodeStatus {
    /// Current raft term.
    pub term: AtomicU64,
    /// Peer id of the leader (0 = unknown).
    pub leader: AtomicU64,
    /// Raft commit index.
    pub committed: AtomicU64,
    /// Last applied index.
    pub applied: AtomicU64,
    /// The region's revision.
    pub revision: AtomicI64,
    /// Snapshots this store has applied since it started.
    pub snapshots_applied: AtomicU64,
    /// Index of the first entry still in the raft log.
    pub first_log_index: AtomicU64,
}

enum Msg {
    Cmd(Box<RaftCmdRequest>, Reply),
    Raft(Box<RaftMessage>),
    /// The raft-log write with this id finished (with an error message if it failed).
    Persisted(u64, Option<String>),
    Stop,
}

/// A raft-log write on its way to disk, and what waits for it.
struct InflightWrite {
    id: u64,
    /// The last raft ready the write persists.
    number: u64,
    /// Messages that may only leave once it is durable.
    messages: Vec<raft::eraftpb::Message>,
}

/// A running store loop. Commands are submitted with [`Node::submit`]; every one gets
/// exactly one reply (unless the node is stopped first, which drops the reply sender).
pub struct Node {
    tx: mpsc::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    status: Arc<NodeStatus>,
    cluster_id: u64,
    store_id: u64,
}

impl Node {
    /// Opens the region from `engine` and `log` (bootstrapping it on first start) and starts
    /// the store loop.
    pub fn start(
        cfg: NodeConfig,
        engine: Arc<Engine>,
        log: Arc<LogStore>,
        transport: Arc<dyn Transport>,
    ) -> Result<Node, Error> {
        let voters = if cfg.join {
            Vec::new()
        } else if cfg.initial_voters.is_empty() {
            vec![cfg.store_id]
        } else {
            cfg.initial_voters.clone()
        };
        let region = FIRST_REGION_ID;
        let mut storage = PeerStorage::open(log.clone(), region, &voters)?;
        storage.set_engine(engine.clone());
        let mut apply = ApplyState::load(&engine, region)?;
        let mut batch = LogBatch::new();
        let fresh = log.get_state(region, b"cs").is_none() && apply.applied_index == 0;
        if log.get_state(region, b"cs").is_none() {
            let cs = raft::Storage::initial_state(&storage)?.conf_state;
            storage.set_conf_state(&mut batch, cs)?;
        }
        if fresh && !cfg.join {
            // Bootstrap the region as if from a snapshot at INIT_INDEX holding the initial
            // membership (TiKV does the same): the membership is not in the log, so a store
            // that joins later must start from a snapshot, never replay the log from 1 into
            // an empty configuration. The engine first (flushed), then the log.
            let cs = storage.conf_state().clone();
            apply = ApplyState {
                applied_index: INIT_INDEX,
                applied_term: INIT_TERM,
                revision: 1,
            };
            let mut wb = WriteBatch::new();
            apply.stage(&mut wb, region);
            stage_region(&mut wb, region, &cs, 1);
            engine.write(&wb)?;
            engine.flush()?;
            storage.reset_to_snapshot(&mut batch, INIT_INDEX, INIT_TERM, cs)?;
        }
        // A snapshot is applied to the engine (and flushed) before the log is reset; a crash
        // in between leaves the engine ahead of the log. Finish the reset now.
        let region_state = load_region_state(&engine, region)?;
        let conf_ver = region_state.as_ref().map(|r| r.0).unwrap_or(1);
        let last = raft::Storage::last_index(&storage)?;
        if apply.applied_index > last {
            let cs = region_state
                .map(|r| r.1)
                .unwrap_or_else(|| storage.conf_state().clone());
            log::info!(
                "region {region}: the engine is at index {} beyond the log's {last}; finishing a snapshot",
                apply.applied_index
            );
            storage.reset_to_snapshot(&mut batch, apply.applied_index, apply.applied_term, cs)?;
        }
        // The commit index is persisted lazily; everything applied was committed.
        let mut hs = storage.hard_state().clone();
        if hs.commit < apply.applied_index {
            hs.commit = apply.applied_index;
            storage.set_hard_state(&mut batch, hs)?;
        }
        if !batch.is_empty() {
            log.write(batch, true)?;
        }
        let raft_cfg = raft_config(
            cfg.store_id,
            cfg.election_tick,
            cfg.heartbeat_tick,
            apply.applied_index,
        );
        let single_voter = storage.conf_state().voters == [cfg.store_id];
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&raft_cfg, storage, &logger)?;
        if single_voter {
            raw.campaign()?;
        }
        let status = Arc::new(NodeStatus::default());
        status.revision.store(apply.revision, Ordering::Release);
        status.applied.store(apply.applied_index, Ordering::Release);
        let (tx, rx) = mpsc::channel();
        let mut lp = StoreLoop {
            raw,
            engine,
            log,
            apply,
            rx,
            transport,
            status: status.clone(),
            cluster_id: cfg.cluster_id,
            store_id: cfg.store_id,
            tick_interval: cfg.tick_interval,
            pending_writes: VecDeque::new(),
            pending_reads: VecDeque::new(),
            next_read_ctx: 1,
            flush_marks: VecDeque::new(),
            compact_log_count: cfg.compact_log_count.max(1),
            compact_log_bytes: cfg.compact_log_bytes.max(1),
            compact_check_ticks: cfg.compact_check_ticks.max(1),
            ticks: 0,
            compact_target: 0,
            compact_proposed: 0,
            durable_applied: apply.applied_index,
            conf_ver,
            removed: false,
            pending_transfer: None,
            election_tick: cfg.election_tick,
            self_tx: tx.clone(),
            inflight: VecDeque::new(),
            next_write_id: 0,
            fatal: None,
            addresses: std::collections::BTreeMap::new(),
            avg_entry_bytes: 0.0,
            cfs: Vec::new(),
        };
        lp.cfs = lp.engine.cf_names();
        for (id, addr) in &cfg.initial_addresses {
            lp.addresses.insert(*id, addr.clone());
        }
        for (id, addr) in load_addresses(&lp.engine)? {
            lp.transport.set_address(id, &addr);
            lp.addresses.insert(id, addr);
        }
        let thread = std::thread::Builder::new()
            .name("pontoon-store".into())
            .spawn(move || lp.run())
            .map_err(Error::Spawn)?;
        Ok(Node {
            tx,
            thread: Mutex::new(Some(thread)),
            status,
            cluster_id: cfg.cluster_id,
            store_id: cfg.store_id,
        })
    }

    /// Queues a command; the answer arrives on `reply`. Returns false if the node stopped.
    pub fn submit(&self, req: RaftCmdRequest, reply: Reply) -> bool {
        self.tx.send(Msg::Cmd(Box::new(req), reply)).is_ok()
    }

    /// Hands a raft message from another store to the store loop. Returns false if the
    /// node stopped.
    pub fn step(&self, msg: RaftMessage) -> bool {
        self.tx.send(Msg::Raft(Box::new(msg))).is_ok()
    }

    /// Status published by the store loop.
    pub fn status(&self) -> &NodeStatus {
        &self.status
    }

    /// Cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Store id.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// Stops the loop after it has answered every command already queued, and waits for it.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A linearizable read waiting for its read index and then for apply to reach it.
struct PendingRead {
    ctx: Vec<u8>,
    req: Box<RaftCmdRequest>,
    reply: Reply,
    /// True once handed to raft. raft-rs silently drops a ReadIndex until the leader has
    /// committed an entry of its own term, so reads wait here until then.
    issued: bool,
    index: Option<u64>,
    /// The raft term when it was handed to raft: a read of an older term may never come
    /// back (the leader changed), so it is answered with a retriable error instead.
    term: u64,
    since: Instant,
}

struct StoreLoop {
    raw: RawNode<PeerStorage>,
    engine: Arc<Engine>,
    log: Arc<LogStore>,
    apply: ApplyState,
    rx: mpsc::Receiver<Msg>,
    transport: Arc<dyn Transport>,
    status: Arc<NodeStatus>,
    cluster_id: u64,
    store_id: u64,
    tick_interval: Duration,
    /// Proposed writes in log order: (index, term, reply).
    pending_writes: VecDeque<(u64, u64, Reply)>,
    pending_reads: VecDeque<PendingRead>,
    next_read_ctx: u64,
    /// `(engine sequence, applied index, applied term)` of apply writes, oldest first: once
    /// the engine has flushed a sequence, the raft log up to that index is no longer needed
    /// for recovery.
    flush_marks: VecDeque<(u64, u64, u64)>,
    compact_log_count: u64,
    compact_log_bytes: u64,
    compact_check_ticks: usize,
    ticks: usize,
    /// The highest index a committed `CompactLog` allows this replica to drop (it drops
    /// only what the engine has flushed, too).
    compact_target: u64,
    /// The highest compact index this peer proposed as leader (not to propose it twice).
    compact_proposed: u64,
    /// The highest applied index the engine has flushed.
    durable_applied: u64,
    /// The region epoch's `conf_ver`: bumped by every applied membership change.
    conf_ver: u64,
    /// This peer was removed from the region.
    removed: bool,
    /// A leader transfer waiting to complete: (target, reply, give-up time).
    pending_transfer: Option<(u64, Reply, Instant)>,
    election_tick: usize,
    /// Peer addresses of the stores this one knows.
    addresses: std::collections::BTreeMap<u64, String>,
    /// The loop's own channel, for the raft-log writer's completions.
    self_tx: mpsc::Sender<Msg>,
    /// Raft-log writes not yet durable, oldest first.
    inflight: VecDeque<InflightWrite>,
    next_write_id: u64,
    /// The error that stopped the loop.
    fatal: Option<Error>,
    /// Moving average of appended entry sizes, for the byte limit.
    avg_entry_bytes: f64,
    /// Column families clients may address (read once: the server never changes them).
    cfs: Vec<String>,
}

fn region_error(message: impl Into<String>) -> errorpb::Error {
    errorpb::Error {
        message: message.into(),
        ..Default::default()
    }
}

/// A proposal whose log slot went to another leader's entry (or under a snapshot): it
/// was not applied, and the client may retry.
fn stale_command() -> errorpb::Error {
    errorpb::Error {
        message: "stale command".into(),
        stale_command: Some(errorpb::StaleCommand {}),
        ..Default::default()
    }
}

fn cf_of(name: &str) -> &str {
    if name.is_empty() {
        "default"
    } else {
        name
    }
}

fn to_pb(kv: &mvcc::KeyValue) -> pontoonpb::KeyValue {
    pontoonpb::KeyValue {
        key: kv.key.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.clone(),
        lease: kv.lease,
    }
}

/// raft-rs settings: pre-vote and check-quorum on (a partitioned node cannot disrupt the
/// cluster when it comes back, and a cut-off leader steps down).
fn raft_config(id: u64, election_tick: usize, heartbeat_tick: usize, applied: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick,
        heartbeat_tick,
        applied,
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        // Followers learn a new commit index with the next append or heartbeat instead of
        // an extra append broadcast per commit (as TiKV does): ~12% more replicated puts/s
        // here, at the cost of followers applying a little later.
        skip_bcast_commit: true,
        ..raft::Config::default()
    }
}

fn transfer_done() -> RaftCmdResponse {
    RaftCmdResponse {
        admin_response: Some(raft_cmdpb::AdminResponse {
            cmd_type: AdminCmdType::TransferLeader as i32,
            transfer_leader: Some(raft_cmdpb::TransferLeaderResponse {}),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn address_key(store: u64) -> Vec<u8> {
    let mut k = ADDRESS_PREFIX.to_vec();
    k.extend_from_slice(&store.to_be_bytes());
    k
}

const ADDRESS_PREFIX: &[u8] = b"store_addr/";

/// Peer addresses recorded by applied `ChangePeer` commands.
fn load_addresses(engine: &Engine) -> Result<Vec<(u64, String)>, Error> {
    let mut end = ADDRESS_PREFIX.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let mut out = Vec::new();
    let iter = engine.iter(
        mvcc::RAFT_CF,
        pontoon_engine::IterOptions {
            lower_bound: Some(ADDRESS_PREFIX.to_vec()),
            upper_bound: Some(end),
            ..Default::default()
        },
    )?;
    for item in iter {
        let (k, v) = item?;
        let Some(id) = k
            .get(ADDRESS_PREFIX.len()..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
        else {
            continue;
        };
        out.push((
            u64::from_be_bytes(id),
            String::from_utf8_lossy(&v).into_owned(),
        ));
    }
    Ok(out)
}

fn region_key(region: u64) -> Vec<u8> {
    let mut k = b"region/".to_vec();
    k.extend_from_slice(&region.to_be_bytes());
    k
}

/// Stages the region's membership record (`conf_ver` u64 LE, then the encoded raft
/// `ConfState`) into the raft column family, next to the apply state.
pub(crate) fn stage_region(batch: &mut WriteBatch, region: u64, cs: &ConfState, conf_ver: u64) {
    let mut v = conf_ver.to_le_bytes().to_vec();
    v.extend_from_slice(&cs.write_to_bytes().unwrap_or_default());
    batch.put(mvcc::RAFT_CF, &region_key(region), &v);
}

/// Loads the region's membership record: `(conf_ver, conf state)`.
pub(crate) fn load_region_state(
    engine: &Engine,
    region: u64,
) -> Result<Option<(u64, ConfState)>, Error> {
    let Some(v) = engine.get(mvcc::RAFT_CF, &region_key(region))? else {
        return Ok(None);
    };
    let corrupt = |reason: &'static str| {
        Error::Mvcc(mvcc::Error::Corrupt {
            key: format!("region/{region}"),
            reason,
        })
    };
    let (ver, rest) = v.split_at_checked(8).ok_or_else(|| corrupt("too short"))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(ver);
    let cs =
        ConfState::parse_from_bytes(rest).map_err(|_| corrupt("conf state does not decode"))?;
    Ok(Some((u64::from_le_bytes(b), cs)))
}

/// The region as clients see it (peer ids are store ids in the first region).
pub(crate) fn region_of(cs: &ConfState, conf_ver: u64) -> metapb::Region {
    let peer = |id: u64, role: metapb::PeerRole| metapb::Peer {
        id,
        store_id: peer_store(id),
        role: role as i32,
    };
    metapb::Region {
        id: FIRST_REGION_ID,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver,
            version: 1,
        }),
        peers: cs
            .voters
            .iter()
            .map(|&id| peer(id, metapb::PeerRole::Voter))
            .chain(
                cs.learners
                    .iter()
                    .map(|&id| peer(id, metapb::PeerRole::Learner)),
            )
            .collect(),
        ..Default::default()
    }
}

/// Raft snapshot data: the region epoch's `conf_ver` (u64 LE), then the bytes of
/// [`crate::snapshot`].
pub(crate) fn split_snapshot_data(data: &[u8]) -> Option<(u64, &[u8])> {
    let (ver, rest) = data.split_at_checked(8)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(ver);
    Some((u64::from_le_bytes(b), rest))
}

/// The store holding peer `peer_id` of the first region: peer ids equal store ids until
/// membership changes hand out fresh peer ids (issue 6).
fn peer_store(peer_id: u64) -> u64 {
    peer_id
}

fn cmd_type(r: &Request) -> CmdType {
    CmdType::try_from(r.cmd_type).unwrap_or(CmdType::Invalid)
}

fn is_read(r: &Request) -> bool {
    matches!(cmd_type(r), CmdType::Get | CmdType::Range | CmdType::Snap)
}

impl StoreLoop {
    fn run(&mut self) {
        let mut last_tick = Instant::now();
        let mut stopping = false;
        while !stopping {
            let wait = self.tick_interval.saturating_sub(last_tick.elapsed());
            match self.rx.recv_timeout(wait) {
                Ok(msg) => {
                    stopping |= self.on_msg(msg);
                    // Take everything else already queued: one raft-log write for all of it.
                    while let Ok(msg) = self.rx.try_recv() {
                        stopping |= self.on_msg(msg);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stopping = true,
            }
            if last_tick.elapsed() >= self.tick_interval {
                self.raw.tick();
                last_tick = Instant::now();
                self.ticks += 1;
                if self.ticks.is_multiple_of(self.compact_check_ticks) {
                    self.maybe_propose_compact_log();
                }
            }
            let mut result = match self.fatal.take() {
                Some(e) => Err(e),
                None => self.on_ready(),
            };
            if result.is_ok() && self.removed {
                result = self.destroy();
            }
            self.check_transfer();
            if let Err(e) = result {
                // A failed raft-log write poisons the log store; nothing acknowledged is
                // lost, but the node cannot go on.
                log::error!("store loop stopped: {e}");
                self.fail_all(&format!("store failed: {e}"));
                return;
            }
        }
        // Answer what is still waiting: the loop is gone.
        self.fail_all("node is shutting down");
    }

    fn fail_all(&mut self, why: &str) {
        for (_, _, reply) in self.pending_writes.drain(..) {
            let _ = reply.send(RaftCmdResponse::default().with_error(region_error(why)));
        }
        for r in self.pending_reads.drain(..) {
            let _ = r
                .reply
                .send(RaftCmdResponse::default().with_error(region_error(why)));
        }
    }

    /// Handles one message; returns true on stop.
    fn on_msg(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Stop => true,
            Msg::Cmd(req, reply) => {
                self.on_command(req, reply);
                false
            }
            Msg::Raft(m) => {
                self.on_raft_message(*m);
                false
            }
            Msg::Persisted(id, error) => {
                if let Err(e) = self.on_persisted(id, error) {
                    self.fatal = Some(e);
                    return true;
                }
                false
            }
        }
    }

    /// Steps a message from another store into raft. Messages for another region or peer,
    /// or that do not decode, are dropped (raft retries what matters).
    fn on_raft_message(&mut self, m: RaftMessage) {
        if m.region_id != FIRST_REGION_ID {
            log::debug!("dropping a raft message for unknown region {}", m.region_id);
            return;
        }
        let msg = match raft::eraftpb::Message::parse_from_bytes(&m.message) {
            Ok(msg) => msg,
            Err(e) => {
                log::warn!("dropping an undecodable raft message: {e}");
                return;
            }
        };
        if msg.to != self.raw.raft.id {
            log::debug!("dropping a raft message for peer {}", msg.to);
            return;
        }
        let mut msg = msg;
        if msg.get_msg_type() == MessageType::MsgHeartbeat {
            // raft-rs panics when a heartbeat commits past the local log. That happens only
            // if this store lost a log the leader had seen (a wiped data directory under an
            // old identity); refuse to crash on it and say what to do.
            let last = self.raw.raft.raft_log.last_index();
            if msg.commit > last {
                log::warn!(
                    "the leader believes this store holds entries up to {} but its log ends at {last}: was the data directory wiped? remove this store and add it back",
                    msg.commit
                );
                msg.commit = last;
            }
        }
        if let Err(e) = self.raw.step(msg) {
            log::debug!("raft refused a message: {e}");
        }
    }

    /// Hands raft's outgoing messages to the transport. A message the transport drops at
    /// once marks its peer unreachable (raft then probes instead of pipelining); a snapshot
    /// is reported finished once handed over (if it is lost on the way the follower rejects
    /// the next append and raft sends a new snapshot).
    fn send_messages(&mut self, msgs: Vec<raft::eraftpb::Message>) {
        for m in msgs {
            let to = m.to;
            let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let rm = RaftMessage {
                region_id: FIRST_REGION_ID,
                from_peer: Some(metapb::Peer {
                    id: self.raw.raft.id,
                    store_id: self.store_id,
                    ..Default::default()
                }),
                to_peer: Some(metapb::Peer {
                    id: to,
                    store_id: peer_store(to),
                    ..Default::default()
                }),
                message: m.write_to_bytes().unwrap_or_default(),
                ..Default::default()
            };
            let sent = self.transport.send(rm);
            if !sent {
                self.raw.report_unreachable(to);
            }
            if is_snapshot {
                let status = if sent {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
        }
    }

    fn header(&self) -> pontoonpb::ResponseHeader {
        pontoonpb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.store_id,
            revision: self.apply.revision,
            raft_term: self.raw.raft.term,
        }
    }

    fn respond(&self, reply: Reply, mut resp: RaftCmdResponse) {
        resp.response_header = Some(self.header());
        let mut h = resp.header.take().unwrap_or_default();
        h.current_term = self.raw.raft.term;
        resp.header = Some(h);
        let _ = reply.send(resp);
    }

    fn not_leader(&self) -> errorpb::Error {
        let leader = self.raw.raft.leader_id;
        errorpb::Error {
            message: "not leader".into(),
            not_leader: Some(errorpb::NotLeader {
                region_id: FIRST_REGION_ID,
                leader: (leader != 0).then_some(metapb::Peer {
                    id: leader,
                    store_id: leader,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    /// Checks what can be checked before raft: region, keys, column families.
    fn validate(&self, req: &RaftCmdRequest) -> Result<(), Box<errorpb::Error>> {
        if let Some(h) = &req.header {
            if h.region_id != 0 && h.region_id != FIRST_REGION_ID {
                return Err(Box::new(errorpb::Error {
                    message: format!("region {} not found", h.region_id),
                    region_not_found: Some(errorpb::RegionNotFound {
                        region_id: h.region_id,
                    }),
                    ..Default::default()
                }));
            }
        }
        if let Some(a) = &req.admin_request {
            if !req.requests.is_empty() {
                return Err(Box::new(region_error(
                    "a command is either an admin command or requests, not both",
                )));
            }
            let ok = match AdminCmdType::try_from(a.cmd_type).unwrap_or(AdminCmdType::InvalidAdmin)
            {
                AdminCmdType::CompactLog => a.compact_log.is_some(),
                AdminCmdType::Status => true,
                AdminCmdType::TransferLeader => a
                    .transfer_leader
                    .as_ref()
                    .is_some_and(|t| t.peer.as_ref().is_some_and(|p| p.id != 0)),
                AdminCmdType::ChangePeer => a
                    .change_peer
                    .as_ref()
                    .is_some_and(|c| c.peer.as_ref().is_some_and(|p| p.id != 0)),
                _ => false,
            };
            if !ok {
                return Err(Box::new(region_error(
                    "unsupported or incomplete admin command",
                )));
            }
            return Ok(());
        }
        if req.requests.is_empty() {
            return Err(Box::new(region_error("empty command")));
        }
        let reads = req.requests.iter().filter(|r| is_read(r)).count();
        if reads != 0 && reads != req.requests.len() {
            return Err(Box::new(region_error(
                "a command either reads or writes, not both",
            )));
        }
        for r in &req.requests {
            let (cf, key): (&str, &[u8]) = match cmd_type(r) {
                CmdType::Get => match &r.get {
                    Some(g) => (&g.cf, &g.key),
                    None => return Err(Box::new(region_error("get request without body"))),
                },
                CmdType::Put => match &r.put {
                    Some(p) => (&p.cf, &p.key),
                    None => return Err(Box::new(region_error("put request without body"))),
                },
                CmdType::Delete => match &r.delete {
                    Some(d) => (&d.cf, &d.key),
                    None => return Err(Box::new(region_error("delete request without body"))),
                },
                CmdType::DeleteRange => match &r.delete_range {
                    Some(d) => (&d.cf, &d.start_key),
                    None => {
                        return Err(Box::new(region_error("delete_range request without body")))
                    }
                },
                CmdType::Range => match &r.range {
                    Some(g) => (&g.cf, &g.key),
                    None => return Err(Box::new(region_error("range request without body"))),
                },
                CmdType::Snap => ("default", b"-"),
                CmdType::Invalid => return Err(Box::new(region_error("invalid command type"))),
            };
            if key.is_empty() {
                return Err(Box::new(region_error("etcdserver: key is not provided")));
            }
            let cf = cf_of(cf);
            if !self.cfs.iter().any(|c| c == cf) || cf == mvcc::RAFT_CF {
                return Err(Box::new(region_error(format!(
                    "unknown column family {cf:?}"
                ))));
            }
        }
        Ok(())
    }

    fn on_command(&mut self, req: Box<RaftCmdRequest>, reply: Reply) {
        if let Err(e) = self.validate(&req) {
            self.respond(reply, RaftCmdResponse::default().with_error(*e));
            return;
        }
        if req.admin_request.is_some() {
            self.on_admin(req, reply);
            return;
        }
        if req.requests.iter().all(is_read) {
            let serializable = req.requests.iter().all(|r| {
                cmd_type(r) == CmdType::Range && r.range.as_ref().is_some_and(|g| g.serializable)
            });
            if serializable {
                let resp = self.execute_reads(&req);
                self.respond(reply, resp);
                return;
            }
            // A follower serves linearizable reads too (as etcd members do): raft-rs asks
            // the leader for the read index, and the read waits for the local apply.
            if self.raw.raft.state != StateRole::Leader && self.raw.raft.leader_id == 0 {
                let e = self.not_leader();
                self.respond(reply, RaftCmdResponse::default().with_error(e));
                return;
            }
            let ctx = self.next_read_ctx.to_le_bytes().to_vec();
            self.next_read_ctx += 1;
            self.pending_reads.push_back(PendingRead {
                ctx,
                req,
                reply,
                issued: false,
                index: None,
                term: self.raw.raft.term,
                since: Instant::now(),
            });
            self.issue_reads();
            return;
        }
        if self.raw.raft.state != StateRole::Leader {
            let e = self.not_leader();
            self.respond(reply, RaftCmdResponse::default().with_error(e));
            return;
        }
        let data = req.encode_to_vec();
        let before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(Vec::new(), data);
        self.track_proposal(before, proposed, reply, None);
    }

    /// After a proposal: the reply waits for the entry to be applied, or hears at once that
    /// raft did not append it (not leader, or a refused membership change when `what`
    /// names one).
    fn track_proposal(
        &mut self,
        before: u64,
        proposed: raft::Result<()>,
        reply: Reply,
        what: Option<&str>,
    ) {
        let index = self.raw.raft.raft_log.last_index();
        let e = match (proposed, what) {
            (Ok(()), _) if index > before => {
                self.pending_writes
                    .push_back((index, self.raw.raft.term, reply));
                return;
            }
            (Err(err), Some(what)) => region_error(format!("{what} refused: {err}")),
            _ => self.not_leader(),
        };
        self.respond(reply, RaftCmdResponse::default().with_error(e));
    }

    /// Handles one raft ready. Log writes are asynchronous: the ready's entries and hard
    /// state go to the raft-log writer and the loop goes on proposing, stepping and applying
    /// while the write is synced; several readies can be in flight, and the writer's group
    /// commit merges them into one fdatasync. raft-rs only hands out committed entries that
    /// are persisted here, and messages that promise persistence (votes, append acks) wait
    /// in `inflight` until their write is durable. A ready carrying a snapshot is written
    /// synchronously.
    fn on_ready(&mut self) -> Result<(), Error> {
        if !self.raw.has_ready() {
            self.serve_reads()?;
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // A leader's appends and heartbeats go out now, in parallel with its own log write.
        if !ready.messages().is_empty() {
            self.send_messages(ready.take_messages());
        }
        let mut batch = LogBatch::new();
        let has_snapshot = !ready.snapshot().is_empty();
        if has_snapshot {
            self.apply_snapshot(ready.snapshot().clone(), &mut batch)?;
        }
        for e in ready.entries() {
            self.avg_entry_bytes = 0.95 * self.avg_entry_bytes + 0.05 * e.data.len() as f64;
        }
        let write_id = self.next_write_id + 1;
        {
            let store = self.raw.mut_store();
            store.append(&mut batch, ready.entries(), write_id)?;
            if let Some(hs) = ready.hs() {
                store.set_hard_state(&mut batch, hs.clone())?;
            }
        }
        for rs in ready.take_read_states() {
            if let Some(r) = self
                .pending_reads
                .iter_mut()
                .find(|r| r.ctx == rs.request_ctx)
            {
                r.index = Some(rs.index);
            }
        }
        // Committed entries are persisted here already (raft-rs holds back the others).
        let committed = ready.take_committed_entries();
        self.apply_entries(committed)?;
        let persisted_msgs = ready.take_persisted_messages();
        let number = ready.number();
        if has_snapshot {
            // Synchronous: behind every write in flight (the writer is FIFO), so all of
            // them are durable when this returns.
            self.log.write(batch, true)?;
            self.next_write_id = write_id;
            self.raw.mut_store().written(write_id);
            for w in std::mem::take(&mut self.inflight) {
                self.send_messages(w.messages);
            }
            self.advance_persisted(ready, persisted_msgs)?;
        } else if batch.is_empty() {
            match self.inflight.back_mut() {
                // Nothing of its own to persist, but it must not overtake earlier writes.
                Some(w) => {
                    w.number = number;
                    w.messages.extend(persisted_msgs);
                    self.raw.advance_append_async(ready);
                }
                None => self.advance_persisted(ready, persisted_msgs)?,
            }
        } else {
            self.next_write_id = write_id;
            let id = write_id;
            let tx = self.self_tx.clone();
            self.log.write_async(batch, ready.must_sync(), move |r| {
                let _ = tx.send(Msg::Persisted(id, r.err().map(|e| e.to_string())));
            })?;
            self.inflight.push_back(InflightWrite {
                id,
                number,
                messages: persisted_msgs,
            });
            self.raw.advance_append_async(ready);
        }
        self.raw.advance_apply_to(self.apply.applied_index);
        self.publish();
        self.gc_log()?;
        self.serve_reads()
    }

    /// Finishes a ready whose state is durable already (nothing of its own to write, or
    /// written synchronously, with no write in flight before it).
    fn advance_persisted(
        &mut self,
        ready: raft::Ready,
        persisted_msgs: Vec<raft::eraftpb::Message>,
    ) -> Result<(), Error> {
        self.send_messages(persisted_msgs);
        let mut light = self.raw.advance_append(ready);
        self.send_messages(light.take_messages());
        self.apply_entries(light.take_committed_entries())
    }

    /// A log write finished: tell raft, and send what waited for it.
    fn on_persisted(&mut self, id: u64, error: Option<String>) -> Result<(), Error> {
        if let Some(e) = error {
            return Err(Error::LogWrite(e));
        }
        self.raw.mut_store().written(id);
        // Writes finish in order; one already covered by a synchronous write is gone.
        if self.inflight.front().is_none_or(|w| w.id != id) {
            return Ok(());
        }
        if let Some(w) = self.inflight.pop_front() {
            self.raw.on_persist_ready(w.number);
            self.send_messages(w.messages);
        }
        Ok(())
    }

    /// Drops the raft log up to what a committed `CompactLog` allows AND the engine has
    /// flushed (never further: a restart replays from the engine's flushed apply state),
    /// and lets the log store delete the segments nobody needs.
    fn gc_log(&mut self) -> Result<(), Error> {
        let flushed = self.engine.flushed_seq();
        let mut durable = None;
        while let Some(&(seq, index, term)) = self.flush_marks.front() {
            if seq > flushed {
                break;
            }
            durable = Some((index, term));
            self.flush_marks.pop_front();
        }
        if let Some(d) = durable {
            self.durable_applied = self.durable_applied.max(d.0);
        }
        let index = self.compact_target.min(self.durable_applied);
        if index <= self.raw.store().truncated().0 {
            return Ok(());
        }
        let Ok(term) = raft::Storage::term(self.raw.store(), index) else {
            return Ok(()); // already compacted
        };
        let mut batch = LogBatch::new();
        self.raw.mut_store().compact_to(&mut batch, index, term)?;
        self.log.write(batch, false)?;
        let report = self.log.purge()?;
        if !report.removed_files.is_empty() {
            log::debug!(
                "raft log compacted to {index}; removed {} segments",
                report.removed_files.len()
            );
        }
        Ok(())
    }

    /// On the leader: proposes `CompactLog` once the applied log is over its entry-count or
    /// byte limit. Followers within half the count limit keep their entries (the compact
    /// index stops at the slowest of them); one further behind gets a snapshot instead.
    fn maybe_propose_compact_log(&mut self) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let first = self.raw.store().truncated().0 + 1;
        let applied = self.apply.applied_index;
        if applied < first {
            return;
        }
        let entries = applied - first + 1;
        let bytes = entries as f64 * self.avg_entry_bytes;
        if entries < self.compact_log_count && bytes < self.compact_log_bytes as f64 {
            return;
        }
        let me = self.raw.raft.id;
        let slowest = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(_, p)| p.matched)
            .min()
            .unwrap_or(applied);
        let keep_for_followers = applied.saturating_sub(self.compact_log_count / 2);
        let index = if slowest >= keep_for_followers {
            slowest.min(applied)
        } else {
            applied
        };
        if index < first || index <= self.compact_proposed {
            return;
        }
        let Ok(term) = raft::Storage::term(self.raw.store(), index) else {
            return;
        };
        let req = RaftCmdRequest {
            admin_request: Some(raft_cmdpb::AdminRequest {
                cmd_type: raft_cmdpb::AdminCmdType::CompactLog as i32,
                compact_log: Some(raft_cmdpb::CompactLogRequest {
                    compact_index: index,
                    compact_term: term,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        if self.raw.propose(Vec::new(), req.encode_to_vec()).is_ok() {
            self.compact_proposed = index;
            log::debug!("proposed CompactLog to {index} ({entries} entries applied)");
        }
    }

    /// Applies a snapshot from the leader: the engine first (data and apply state in one
    /// batch, then flushed, since the engine has no WAL), then the raft log is reset to
    /// start after the snapshot, staged into `batch`, which the caller writes with sync. A
    /// crash between the two is finished at the next start (see [`Node::start`]).
    fn apply_snapshot(
        &mut self,
        snap: raft::eraftpb::Snapshot,
        batch: &mut LogBatch,
    ) -> Result<(), Error> {
        let md = snap.get_metadata();
        let (index, term) = (md.index, md.term);
        let cs = md.get_conf_state().clone();
        let Some((conf_ver, data)) = split_snapshot_data(&snap.data) else {
            return Err(Error::Snapshot(crate::snapshot::Error::Corrupt {
                offset: 0,
                reason: "shorter than its epoch prefix",
            }));
        };
        // Not durable on its own (no WAL): the snapshot's flush below persists it with the
        // data, and a crash before that loses both.
        let mut wb = WriteBatch::new();
        stage_region(&mut wb, FIRST_REGION_ID, &cs, conf_ver);
        self.engine.write(&wb)?;
        self.conf_ver = conf_ver;
        let meta = crate::snapshot::apply(&self.engine, data)?;
        if meta.apply.applied_index != index || meta.apply.applied_term != term {
            log::warn!(
                "snapshot data is at {}/{} but raft says {index}/{term}",
                meta.apply.applied_index,
                meta.apply.applied_term
            );
        }
        self.apply = meta.apply;
        self.apply.applied_index = index;
        self.apply.applied_term = term;
        self.durable_applied = index;
        self.flush_marks.clear();
        self.raw
            .mut_store()
            .reset_to_snapshot(batch, index, term, cs)?;
        log::info!("applied a snapshot at index {index}, term {term}");
        self.status.snapshots_applied.fetch_add(1, Ordering::AcqRel);
        // Proposals waiting for entries the snapshot covers will never see them applied.
        while self
            .pending_writes
            .front()
            .is_some_and(|(i, _, _)| *i <= index)
        {
            if let Some((_, _, reply)) = self.pending_writes.pop_front() {
                self.respond(
                    reply,
                    RaftCmdResponse::default().with_error(stale_command()),
                );
            }
        }
        Ok(())
    }

    fn publish(&self) {
        let s = &self.status;
        s.term.store(self.raw.raft.term, Ordering::Release);
        s.leader.store(self.raw.raft.leader_id, Ordering::Release);
        s.committed
            .store(self.raw.raft.raft_log.committed, Ordering::Release);
        s.applied.store(self.apply.applied_index, Ordering::Release);
        s.revision.store(self.apply.revision, Ordering::Release);
        s.first_log_index
            .store(self.raw.store().truncated().0 + 1, Ordering::Release);
    }

    /// Hands waiting reads to raft once the leader can answer them.
    fn issue_reads(&mut self) {
        let ready = match self.raw.raft.state {
            StateRole::Leader => self.raw.raft.commit_to_current_term(),
            // The leader answers once it can (or drops it; then the read times out).
            _ => self.raw.raft.leader_id != 0,
        };
        if !ready {
            return;
        }
        let term = self.raw.raft.term;
        let mut ctxs = Vec::new();
        for r in self.pending_reads.iter_mut().filter(|r| !r.issued) {
            r.issued = true;
            r.term = term;
            ctxs.push(r.ctx.clone());
        }
        for ctx in ctxs {
            self.raw.read_index(ctx);
        }
    }

    fn serve_reads(&mut self) -> Result<(), Error> {
        self.issue_reads();
        while let Some(front) = self.pending_reads.front() {
            match front.index {
                Some(i) if i <= self.apply.applied_index => {}
                _ => break,
            }
            if let Some(r) = self.pending_reads.pop_front() {
                // Nobody waits for it any more (the client gave up): under overload,
                // executing abandoned reads is how a store stops making progress.
                if r.reply.is_closed() {
                    continue;
                }
                let resp = self.execute_reads(&r.req);
                self.respond(r.reply, resp);
            }
        }
        // A read whose index never came back (the term changed, or the leader dropped it)
        // is answered with an error the client retries on, so later reads are not stuck
        // behind it.
        let timeout = self.tick_interval * (2 * self.election_tick as u32);
        let term = self.raw.raft.term;
        while let Some(front) = self.pending_reads.front() {
            let no_leader = self.raw.raft.leader_id == 0;
            let stale = front.index.is_none()
                && ((front.issued && (front.term != term || no_leader))
                    || front.since.elapsed() > timeout);
            if !stale {
                break;
            }
            if let Some(r) = self.pending_reads.pop_front() {
                let e = if self.raw.raft.leader_id == 0 || r.term != term {
                    self.not_leader()
                } else {
                    errorpb::Error {
                        message: "read index timed out; retry".into(),
                        server_is_busy: Some(errorpb::ServerIsBusy {
                            reason: "read index timed out".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                };
                self.respond(r.reply, RaftCmdResponse::default().with_error(e));
            }
        }
        Ok(())
    }

    fn execute_reads(&self, req: &RaftCmdRequest) -> RaftCmdResponse {
        let mut resp = RaftCmdResponse::default();
        for r in &req.requests {
            match self.execute_read(r) {
                Ok(x) => resp.responses.push(x),
                Err(e) => {
                    return RaftCmdResponse::default().with_error(region_error(e.to_string()))
                }
            }
        }
        resp
    }

    fn execute_read(&self, r: &Request) -> Result<Response, mvcc::Error> {
        let mut out = Response {
            cmd_type: r.cmd_type,
            ..Default::default()
        };
        match cmd_type(r) {
            CmdType::Get => {
                if let Some(g) = &r.get {
                    let kv = mvcc::get(&self.engine, cf_of(&g.cf), &g.key)?;
                    out.get = Some(raft_cmdpb::GetResponse {
                        value: kv.as_ref().map(|k| k.value.clone()).unwrap_or_default(),
                        kv: kv.as_ref().map(|k| {
                            let mut pb = to_pb(k);
                            pb.value.clear();
                            pb
                        }),
                    });
                }
            }
            CmdType::Range => {
                if let Some(g) = &r.range {
                    let limit = usize::try_from(g.limit.max(0)).unwrap_or(usize::MAX);
                    let res = mvcc::range(
                        &self.engine,
                        cf_of(&g.cf),
                        &g.key,
                        &g.range_end,
                        limit,
                        g.keys_only,
                    )?;
                    out.range = Some(pontoonpb::RangeResponse {
                        kvs: if g.count_only {
                            Vec::new()
                        } else {
                            res.kvs.iter().map(to_pb).collect()
                        },
                        more: res.more && !g.count_only,
                        count: res.count,
                    });
                }
            }
            CmdType::Snap => {
                out.snap = Some(raft_cmdpb::SnapResponse {
                    region: Some(metapb::Region {
                        id: FIRST_REGION_ID,
                        ..Default::default()
                    }),
                });
            }
            _ => {}
        }
        Ok(out)
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), Error> {
        for e in entries {
            self.apply_entry(e)?;
        }
        Ok(())
    }

    fn apply_entry(&mut self, e: Entry) -> Result<(), Error> {
        let mut batch = WriteBatch::new();
        let mut resp = RaftCmdResponse::default();
        match e.get_entry_type() {
            EntryType::EntryNormal if !e.data.is_empty() => {
                match RaftCmdRequest::decode(&e.data[..]) {
                    Ok(req) => match &req.admin_request {
                        Some(admin) => resp = self.apply_admin(admin, e.index),
                        None => resp = self.apply_command(&req, &mut batch)?,
                    },
                    Err(err) => {
                        resp = resp.with_error(region_error(format!("undecodable command: {err}")))
                    }
                }
            }
            // A new leader's empty entry, or a proposal raft-rs replaced by an empty entry
            // (it does that to a second membership change while one is pending).
            EntryType::EntryNormal => {
                resp = resp.with_error(region_error(
                    "the command was dropped: another membership change is in progress",
                ))
            }
            EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                resp = self.apply_conf_change(&e, &mut batch)?
            }
        }
        self.apply.applied_index = e.index;
        self.apply.applied_term = e.term;
        self.apply.stage(&mut batch, FIRST_REGION_ID);
        let seq = self.engine.write(&batch)?;
        if e.index.is_multiple_of(128) {
            self.flush_marks.push_back((seq, e.index, e.term));
        }
        // Answer the proposer of this entry; older proposals that lost their slot to another
        // leader's entries are stale.
        while self
            .pending_writes
            .front()
            .is_some_and(|(index, _, _)| *index <= e.index)
        {
            let Some((index, term, reply)) = self.pending_writes.pop_front() else {
                break;
            };
            if index == e.index && term == e.term {
                self.respond(reply, std::mem::take(&mut resp));
            } else {
                self.respond(
                    reply,
                    RaftCmdResponse::default().with_error(stale_command()),
                );
            }
        }
        Ok(())
    }

    /// Applies a committed membership change to raft, persists the new conf state (in the
    /// raft log for raft, and in the engine batch with a bumped `conf_ver` for snapshots and
    /// restarts). Both encodings are read as a `ConfChangeV2`; an entry that does not decode
    /// changes nothing (every replica skips it alike).
    fn apply_conf_change(
        &mut self,
        e: &Entry,
        batch: &mut WriteBatch,
    ) -> Result<RaftCmdResponse, Error> {
        let cc = if e.get_entry_type() == EntryType::EntryConfChange {
            ConfChange::parse_from_bytes(&e.data).map(|c| c.into_v2())
        } else {
            ConfChangeV2::parse_from_bytes(&e.data)
        };
        let Ok(cc) = cc else {
            log::warn!("entry {} holds an undecodable conf change", e.index);
            return Ok(RaftCmdResponse::default()
                .with_error(region_error("undecodable membership change")));
        };
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(err) => {
                // raft-rs refuses e.g. removing the last voter; every replica refuses alike.
                return Ok(RaftCmdResponse::default()
                    .with_error(region_error(format!("membership change refused: {err}"))));
            }
        };
        // A store added with its address: remember it, and tell the transport.
        if let Ok(req) = RaftCmdRequest::decode(cc.get_context()) {
            if let Some(cp) = req.admin_request.and_then(|a| a.change_peer) {
                let store = cp.peer.map(|p| p.store_id).unwrap_or_default();
                if store != 0 && !cp.peer_addr.is_empty() {
                    batch.put(mvcc::RAFT_CF, &address_key(store), cp.peer_addr.as_bytes());
                    self.transport.set_address(store, &cp.peer_addr);
                    self.addresses.insert(store, cp.peer_addr);
                }
            }
        }
        let mut lb = LogBatch::new();
        self.raw.mut_store().set_conf_state(&mut lb, cs.clone())?;
        self.log.write(lb, true)?;
        self.conf_ver += 1;
        stage_region(batch, FIRST_REGION_ID, &cs, self.conf_ver);
        let me = self.raw.raft.id;
        if !cs.voters.contains(&me) && !cs.learners.contains(&me) {
            self.removed = true;
        }
        let region = region_of(&cs, self.conf_ver);
        log::info!(
            "membership changed at index {}: voters {:?}, learners {:?}",
            e.index,
            cs.voters,
            cs.learners
        );
        Ok(RaftCmdResponse {
            admin_response: Some(raft_cmdpb::AdminResponse {
                cmd_type: AdminCmdType::ChangePeer as i32,
                change_peer: Some(raft_cmdpb::ChangePeerResponse {
                    region: Some(region),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// This peer was removed from the region: delete its data and its log, and become an
    /// empty peer with no configuration. If the store is added back, the leader's messages
    /// find this empty peer, which catches up from a snapshot like any new member.
    fn destroy(&mut self) -> Result<(), Error> {
        log::info!(
            "store {}: removed from region {FIRST_REGION_ID}; deleting its data",
            self.store_id
        );
        let mut wb = WriteBatch::new();
        for cf in &self.cfs {
            if cf == mvcc::RAFT_CF {
                continue;
            }
            let last = self
                .engine
                .iter(
                    cf,
                    pontoon_engine::IterOptions {
                        reverse: true,
                        ..Default::default()
                    },
                )?
                .next()
                .transpose()?
                .map(|(k, _)| k);
            if let Some(mut end) = last {
                end.push(0);
                wb.delete_range(cf, b"", &end);
            }
        }
        ApplyState::default().stage(&mut wb, FIRST_REGION_ID);
        wb.delete(mvcc::RAFT_CF, &region_key(FIRST_REGION_ID));
        self.engine.write(&wb)?;
        self.engine.flush()?;
        let mut lb = LogBatch::new();
        lb.remove_stream(FIRST_REGION_ID);
        self.log.write(lb, true)?;
        let mut storage = PeerStorage::open(self.log.clone(), FIRST_REGION_ID, &[])?;
        storage.set_engine(self.engine.clone());
        let raft_cfg = raft_config(
            self.raw.raft.id,
            self.election_tick,
            self.raw.raft.heartbeat_timeout(),
            0,
        );
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        self.raw = RawNode::new(&raft_cfg, storage, &logger)?;
        self.apply = ApplyState::default();
        self.inflight.clear();
        self.conf_ver = 1;
        self.removed = false;
        self.compact_target = 0;
        self.compact_proposed = 0;
        self.durable_applied = 0;
        self.flush_marks.clear();
        self.fail_all("this store was removed from the region");
        self.publish();
        Ok(())
    }

    /// Admin commands: `CompactLog` and `ChangePeer` go through the log;
    /// `TransferLeader` is the leader's local business (raft-rs runs the transfer).
    fn on_admin(&mut self, req: Box<RaftCmdRequest>, reply: Reply) {
        let is_status = req
            .admin_request
            .as_ref()
            .is_some_and(|a| a.cmd_type == AdminCmdType::Status as i32);
        if is_status {
            let resp = self.status_response();
            self.respond(reply, resp);
            return;
        }
        if self.raw.raft.state != StateRole::Leader {
            let e = self.not_leader();
            self.respond(reply, RaftCmdResponse::default().with_error(e));
            return;
        }
        let Some(admin) = req.admin_request.as_ref() else {
            return;
        };
        match AdminCmdType::try_from(admin.cmd_type).unwrap_or(AdminCmdType::InvalidAdmin) {
            AdminCmdType::TransferLeader => {
                let target = admin
                    .transfer_leader
                    .as_ref()
                    .and_then(|t| t.peer.as_ref())
                    .map(|p| p.id)
                    .unwrap_or_default();
                if target == self.raw.raft.id {
                    self.respond(reply, transfer_done());
                    return;
                }
                let cs = self.raw.store().conf_state();
                if !cs.voters.contains(&target) {
                    self.respond(
                        reply,
                        RaftCmdResponse::default().with_error(region_error(format!(
                            "store {target} is not a voting member"
                        ))),
                    );
                    return;
                }
                self.raw.transfer_leader(target);
                let deadline =
                    Instant::now() + self.tick_interval * (self.election_tick as u32 * 2);
                if let Some((_, old, _)) = self.pending_transfer.replace((target, reply, deadline))
                {
                    let _ = old.send(
                        RaftCmdResponse::default()
                            .with_error(region_error("superseded by another leader transfer")),
                    );
                }
            }
            AdminCmdType::ChangePeer => {
                let Some(cp) = admin.change_peer.as_ref() else {
                    return;
                };
                let peer = cp.peer.unwrap_or_default();
                if peer.id == self.raw.raft.id
                    && cp.change_type == raft_cmdpb::ConfChangeType::RemoveNode as i32
                {
                    self.respond(
                        reply,
                        RaftCmdResponse::default().with_error(region_error(
                            "cannot remove the leader: move the leadership first (pontoonctl move-leader)",
                        )),
                    );
                    return;
                }
                let mut cc = ConfChange::default();
                cc.set_change_type(
                    match raft_cmdpb::ConfChangeType::try_from(cp.change_type)
                        .unwrap_or(raft_cmdpb::ConfChangeType::AddNode)
                    {
                        raft_cmdpb::ConfChangeType::AddNode => {
                            raft::eraftpb::ConfChangeType::AddNode
                        }
                        raft_cmdpb::ConfChangeType::RemoveNode => {
                            raft::eraftpb::ConfChangeType::RemoveNode
                        }
                        raft_cmdpb::ConfChangeType::AddLearnerNode => {
                            raft::eraftpb::ConfChangeType::AddLearnerNode
                        }
                    },
                );
                cc.node_id = peer.id;
                cc.context = req.encode_to_vec().into();
                let before = self.raw.raft.raft_log.last_index();
                let proposed = self.raw.propose_conf_change(Vec::new(), cc);
                self.track_proposal(before, proposed, reply, Some("membership change"));
            }
            _ => {
                // CompactLog (normally proposed by the leader itself).
                let before = self.raw.raft.raft_log.last_index();
                let proposed = self.raw.propose(Vec::new(), req.encode_to_vec());
                self.track_proposal(before, proposed, reply, None);
            }
        }
    }

    /// This store's view of itself and the region (served locally, like etcd's status).
    fn status_response(&self) -> RaftCmdResponse {
        let cs = self.raw.store().conf_state();
        let me = self.raw.raft.id;
        let stats = self.engine.stats();
        let members = cs
            .voters
            .iter()
            .map(|&id| (id, false))
            .chain(cs.learners.iter().map(|&id| (id, true)))
            .map(|(id, is_learner)| pontoonpb::Member {
                id: peer_store(id),
                peer_addr: self
                    .addresses
                    .get(&peer_store(id))
                    .cloned()
                    .unwrap_or_default(),
                is_learner,
            })
            .collect();
        RaftCmdResponse {
            admin_response: Some(raft_cmdpb::AdminResponse {
                cmd_type: AdminCmdType::Status as i32,
                status: Some(pontoonpb::StatusResponse {
                    member_id: self.store_id,
                    leader: peer_store(self.raw.raft.leader_id),
                    raft_term: self.raw.raft.term,
                    raft_index: self.raw.raft.raft_log.last_index(),
                    raft_applied_index: self.apply.applied_index,
                    raft_committed_index: self.raw.raft.raft_log.committed,
                    db_size: stats.level_bytes.iter().sum::<u64>() as i64,
                    is_learner: cs.learners.contains(&me),
                    members,
                    first_log_index: self.raw.store().truncated().0 + 1,
                    conf_ver: self.conf_ver,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Answers a leader transfer once the target leads, or once it has had time enough.
    fn check_transfer(&mut self) {
        let Some((target, _, deadline)) = &self.pending_transfer else {
            return;
        };
        let done = self.raw.raft.leader_id == *target;
        if !done && Instant::now() < *deadline {
            return;
        }
        if let Some((target, reply, _)) = self.pending_transfer.take() {
            if done {
                self.respond(reply, transfer_done());
            } else {
                let e = region_error(format!("leadership did not move to {target} in time"));
                self.respond(reply, RaftCmdResponse::default().with_error(e));
            }
        }
    }

    /// Applies an admin command that went through the log (`CompactLog`).
    fn apply_admin(&mut self, admin: &raft_cmdpb::AdminRequest, index: u64) -> RaftCmdResponse {
        if let Some(c) = &admin.compact_log {
            // Only ever forward, and never past this entry (a bogus index from a client
            // must not drop entries nobody applied).
            let target = c.compact_index.min(index.saturating_sub(1));
            self.compact_target = self.compact_target.max(target);
        }
        RaftCmdResponse {
            admin_response: Some(raft_cmdpb::AdminResponse {
                cmd_type: admin.cmd_type,
                compact_log: Some(raft_cmdpb::CompactLogResponse {}),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Applies one committed command. Deterministic: the same entry gives the same state on
    /// every replica and on replay. Errors of the command itself go into the response; only
    /// storage failures are returned.
    fn apply_command(
        &mut self,
        req: &RaftCmdRequest,
        batch: &mut WriteBatch,
    ) -> Result<RaftCmdResponse, Error> {
        let mut ops = Vec::new();
        for r in &req.requests {
            match cmd_type(r) {
                CmdType::Put => {
                    if let Some(p) = &r.put {
                        ops.push(Op::Put {
                            cf: cf_of(&p.cf).to_string(),
                            key: p.key.clone(),
                            value: p.value.clone(),
                            lease: 0,
                        });
                    }
                }
                CmdType::Delete => {
                    if let Some(d) = &r.delete {
                        ops.push(Op::DeleteRange {
                            cf: cf_of(&d.cf).to_string(),
                            key: d.key.clone(),
                            range_end: Vec::new(),
                        });
                    }
                }
                CmdType::DeleteRange => {
                    if let Some(d) = &r.delete_range {
                        ops.push(Op::DeleteRange {
                            cf: cf_of(&d.cf).to_string(),
                            key: d.start_key.clone(),
                            range_end: d.end_key.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        let results = match mvcc::apply_ops(&self.engine, &mut self.apply, batch, &ops) {
            Ok(r) => r,
            Err(mvcc::Error::InvalidArgument(m)) => {
                return Ok(
                    RaftCmdResponse::default().with_error(region_error(format!("etcdserver: {m}")))
                )
            }
            Err(mvcc::Error::Engine(pontoon_engine::Error::ColumnFamilyNotFound(cf))) => {
                return Ok(RaftCmdResponse::default()
                    .with_error(region_error(format!("unknown column family {cf:?}"))))
            }
            Err(e) => return Err(e.into()),
        };
        let mut resp = RaftCmdResponse::default();
        let mut results = results.into_iter();
        for r in &req.requests {
            let mut out = Response {
                cmd_type: r.cmd_type,
                ..Default::default()
            };
            match cmd_type(r) {
                CmdType::Put => {
                    if let Some(OpResult::Put(prev)) = results.next() {
                        let want = r.put.as_ref().is_some_and(|p| p.prev_kv);
                        out.put = Some(raft_cmdpb::PutResponse {
                            prev_kv: prev.filter(|_| want).as_ref().map(to_pb),
                        });
                    }
                }
                CmdType::Delete => {
                    if let Some(OpResult::Deleted(kvs)) = results.next() {
                        let want = r.delete.as_ref().is_some_and(|d| d.prev_kv);
                        out.delete = Some(raft_cmdpb::DeleteResponse {
                            deleted: kvs.len() as i64,
                            prev_kv: kvs.first().filter(|_| want).map(to_pb),
                        });
                    }
                }
                CmdType::DeleteRange => {
                    if let Some(OpResult::Deleted(kvs)) = results.next() {
                        let want = r.delete_range.as_ref().is_some_and(|d| d.prev_kv);
                        out.delete_range = Some(raft_cmdpb::DeleteRangeResponse {
                            deleted: kvs.len() as i64,
                            prev_kvs: if want {
                                kvs.iter().map(to_pb).collect()
                            } else {
                                Vec::new()
                            },
                        });
                    }
                }
                // `validate` refuses commands that mix reads and writes.
                _ => {}
            }
            resp.responses.push(out);
        }
        Ok(resp)
    }
}

/// Small helpers on the generated types.
trait WithError {
    fn with_error(self, e: errorpb::Error) -> Self;
}

impl WithError for RaftCmdResponse {
    fn with_error(mut self, e: errorpb::Error) -> Self {
        let mut h = self.header.take().unwrap_or_default();
        h.error = Some(e);
        self.header = Some(h);
        self
    }
}
