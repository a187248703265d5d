//! One region peer inside the store loop: its raft-rs `RawNode`, the region it serves, its
//! apply state, and the commands and reads waiting on it. The store loop ([`crate::node`])
//! owns every peer of the store and drives them together; what they share (engine, raft-log
//! store, transport, id allocator) is passed in as [`Ctx`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pontoon_client::prost::Message as _;
use pontoon_client::proto::raft_serverpb::{PeerState, RaftMessage};
use pontoon_client::proto::{errorpb, metapb, pontoonpb, raft_cmdpb};
use pontoon_engine::{Engine, WriteBatch};
use pontoon_raftlog::{LogBatch, LogStore};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use raft_cmdpb::{AdminCmdType, CmdType, RaftCmdRequest, RaftCmdResponse, Request, Response};
use raft_proto::ConfChangeI as _;

use crate::ids::{IdBuild, IdMap};
use crate::mvcc::{self, ApplyState, Op, OpResult};
use crate::node::{Error, NodeStatus, Reply};
use crate::peer_storage::PeerStorage;
use crate::region::{self, IdAllocator};
use crate::transport::Transport;

/// A region created by a split starts as if from a snapshot at this index (as TiKV does)...
pub(crate) const INIT_INDEX: u64 = 5;
/// ...and term. The first region is bootstrapped the same way, so that its first election
/// makes term 2, as on a fresh etcd member.
pub(crate) const INIT_TERM: u64 = 1;

/// What every peer of the store shares.
pub(crate) struct Ctx {
    pub engine: Arc<Engine>,
    pub log: Arc<LogStore>,
    pub transport: Arc<dyn Transport>,
    pub cluster_id: u64,
    pub store_id: u64,
    /// Column families clients may address (read once: the server never changes them).
    pub cfs: Vec<String>,
    /// Peer addresses of the stores this one knows.
    pub addresses: BTreeMap<u64, String>,
    pub tick_interval: Duration,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    pub compact_log_count: u64,
    pub compact_log_bytes: u64,
    pub ids: IdAllocator,
    pub status: Arc<NodeStatus>,
    /// Raft messages of the current round, waiting for [`Outbox::take`].
    pub outbox: RefCell<Outbox>,
    /// Answers of the current round, sent together when it ends: one wake-up of the
    /// network thread for all of them, not one per region's apply (or per answer).
    pub replies: RefCell<Vec<(Reply, RaftCmdResponse)>>,
}

/// The raft messages a store-loop round produced, by destination store. The loop hands
/// each store's share to the transport in one piece (one frame, one wake-up of the sending
/// thread) instead of message by message: with many regions a round sends an append and
/// an ack per region, and sent one by one they would each cost a wake-up and a TCP write.
///
/// A follower's acknowledgement of an append (`MsgAppendResponse` accepting it) is made
/// redundant by a later one of the same region and term in the same round: the leader
/// keeps only the highest index a follower matched (and its commit), so a round whose
/// write completions release several acks of one region sends the last one, in the place
/// of the first. With many regions about one ack in five went out superseded this way
/// (three stores, 64 regions, 256 clients).
#[derive(Default)]
pub(crate) struct Outbox {
    stores: Vec<OutboxStore>,
    /// The round's latest accepting append ack of each (destination store, region, to
    /// peer, term).
    acks: HashMap<(u64, u64, u64, u64), QueuedAck, IdBuild>,
    /// Acks replaced by a later one since the store started.
    pub superseded_acks: u64,
}

/// Where an [`Outbox`]'s latest append ack of a region sits, and what it acknowledges.
#[derive(Clone, Copy)]
struct QueuedAck {
    /// Index into `Outbox::stores`.
    store: usize,
    /// Index into that store's `messages`.
    slot: usize,
    index: u64,
    commit: u64,
}

/// What makes a message an accepting append ack that a later one may replace: its term,
/// index and commit.
pub(crate) fn accepting_ack(m: &raft::eraftpb::Message) -> Option<(u64, u64, u64)> {
    (m.get_msg_type() == MessageType::MsgAppendResponse && !m.reject)
        .then_some((m.term, m.index, m.commit))
}

/// One destination store's share of an [`Outbox`].
#[derive(Default)]
pub(crate) struct OutboxStore {
    pub store_id: u64,
    pub messages: Vec<RaftMessage>,
    /// (region, to peer, is a snapshot) of each message, in the same order: what the loop
    /// reports back to raft once it knows whether the transport took them.
    pub sent: Vec<(u64, u64, bool)>,
}

impl Outbox {
    /// Queues `m` for `store_id`; `ack` is [`accepting_ack`] of the raft message it carries.
    fn push(
        &mut self,
        store_id: u64,
        m: RaftMessage,
        to: u64,
        snapshot: bool,
        ack: Option<(u64, u64, u64)>,
    ) {
        if let Some((term, index, commit)) = ack {
            let key = (store_id, m.region_id, to, term);
            if let Some(q) = self.acks.get_mut(&key) {
                if q.index <= index && q.commit <= commit {
                    self.stores[q.store].messages[q.slot] = m;
                    (q.index, q.commit) = (index, commit);
                    self.superseded_acks += 1;
                    return;
                }
            }
        }
        let i = match self.stores.iter().position(|s| s.store_id == store_id) {
            Some(i) => i,
            None => {
                self.stores.push(OutboxStore {
                    store_id,
                    ..Default::default()
                });
                self.stores.len() - 1
            }
        };
        let s = &mut self.stores[i];
        if let Some((term, index, commit)) = ack {
            self.acks.insert(
                (store_id, m.region_id, to, term),
                QueuedAck {
                    store: i,
                    slot: s.messages.len(),
                    index,
                    commit,
                },
            );
        }
        s.sent.push((m.region_id, to, snapshot));
        s.messages.push(m);
    }

    /// Everything queued since the last call, by store.
    pub fn take(&mut self) -> Vec<OutboxStore> {
        self.acks.clear();
        std::mem::take(&mut self.stores)
    }
}

/// A linearizable read waiting for its read index and then for apply to reach it.
pub(crate) struct PendingRead {
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

/// What applying entries asks the store loop to do.
pub(crate) enum ApplyEvent {
    /// A split of region `parent` created these regions (their apply and region states are
    /// staged already).
    Split {
        parent: u64,
        regions: Vec<metapb::Region>,
    },
    /// The cluster metadata changed (region 1 applied a store change).
    Meta(pontoonpb::ClusterMeta),
}

/// The entries a region applied in this round and has not written yet: their index range
/// and the answers its proposers wait for.
#[derive(Default)]
struct Applied {
    /// `(first index, last index, term of the last)`; `None` if nothing is unwritten.
    range: Option<(u64, u64, u64)>,
    /// `(index, term, answer)` of the entries someone here proposed (or proposed before).
    answers: Vec<(u64, u64, RaftCmdResponse)>,
}

impl Applied {
    /// Records entry `index`, with its answer if a proposer here waits for it.
    fn push(&mut self, index: u64, term: u64, answer: Option<RaftCmdResponse>) {
        let first = self.range.map_or(index, |(f, _, _)| f);
        self.range = Some((first, index, term));
        if let Some(a) = answer {
            self.answers.push((index, term, a));
        }
    }
}

/// One region peer.
pub(crate) struct Peer {
    pub raw: RawNode<PeerStorage>,
    /// The region as this peer has applied it; `peers` is empty while the peer is
    /// uninitialized (created by a message, waiting for a snapshot or a split).
    pub region: metapb::Region,
    pub apply: ApplyState,
    /// Proposed writes in log order: (index, term, reply).
    pending_writes: VecDeque<(u64, u64, Reply)>,
    pending_reads: VecDeque<PendingRead>,
    /// Counter part of the next read-index request's context (see [`Peer::read_ctx`]);
    /// starts from the clock, so that it does not repeat across this peer's restarts.
    next_read_ctx: u64,
    /// `(engine sequence, applied index, applied term)` of apply writes, oldest first: once
    /// the engine has flushed a sequence, the raft log up to that index is no longer needed
    /// for recovery.
    flush_marks: VecDeque<(u64, u64, u64)>,
    /// The highest index a committed `CompactLog` allows this replica to drop (it drops
    /// only what the engine has flushed, too).
    compact_target: u64,
    /// The highest compact index this peer proposed as leader (not to propose it twice).
    compact_proposed: u64,
    /// The highest applied index the engine has flushed.
    durable_applied: u64,
    /// This peer was removed from the region.
    pub removed: bool,
    /// A leader transfer waiting to complete: (target, reply, give-up time).
    pending_transfer: Option<(u64, Reply, Instant)>,
    /// Moving average of appended entry sizes, for the byte limit.
    pub avg_entry_bytes: f64,
    /// Store of every peer id this peer has heard of (from the region and from messages).
    peer_stores: IdMap<u64>,
    /// Bytes written by applied commands since the last size check.
    pub written_bytes: u64,
    /// Bytes of keys and values as last measured.
    pub approximate_size: u64,
    /// A size check is under way.
    pub checking_size: bool,
    /// Set by the store loop: tells this peer from earlier ones of the same region.
    pub incarnation: u64,
    /// Ticks this peer has been quiet in a row (see [`Peer::can_sleep`]).
    pub idle_ticks: usize,
    /// Commits are broadcast until this index is applied (0: not).
    bcast_until: u64,
    /// Peers removed from the region that are still to be told (tries left).
    pub removed_peers: Vec<(metapb::Peer, u8)>,
}

pub(crate) fn region_error(message: impl Into<String>) -> errorpb::Error {
    errorpb::Error {
        message: message.into(),
        ..Default::default()
    }
}

/// A proposal whose log slot went to another leader's entry (or under a snapshot): it
/// was not applied, and the client may retry.
pub(crate) fn stale_command() -> errorpb::Error {
    errorpb::Error {
        message: "stale command".into(),
        stale_command: Some(errorpb::StaleCommand {}),
        ..Default::default()
    }
}

pub(crate) fn key_not_in_region(key: &[u8], r: &metapb::Region) -> errorpb::Error {
    errorpb::Error {
        message: format!(
            "key {:?} is not in region {} [{:?}, {:?})",
            String::from_utf8_lossy(key),
            r.id,
            String::from_utf8_lossy(&r.start_key),
            String::from_utf8_lossy(&r.end_key)
        ),
        key_not_in_region: Some(errorpb::KeyNotInRegion {
            key: key.to_vec(),
            region_id: r.id,
            start_key: r.start_key.clone(),
            end_key: r.end_key.clone(),
        }),
        ..Default::default()
    }
}

pub(crate) fn cf_of(name: &str) -> &str {
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
pub(crate) fn raft_config(
    id: u64,
    election_tick: usize,
    heartbeat_tick: usize,
    applied: u64,
) -> raft::Config {
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
        // Every proposal would otherwise send its own one-entry append to each follower
        // (and get its own ack back); with this, the proposals of one store-loop round go
        // out as one append per follower.
        batch_append: true,
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

pub(crate) fn address_key(store: u64) -> Vec<u8> {
    let mut k = ADDRESS_PREFIX.to_vec();
    k.extend_from_slice(&store.to_be_bytes());
    k
}

const ADDRESS_PREFIX: &[u8] = b"store_addr/";

/// Peer addresses recorded by applied `ChangePeer` commands.
pub(crate) fn load_addresses(engine: &Engine) -> Result<Vec<(u64, String)>, Error> {
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

pub(crate) fn cmd_type(r: &Request) -> CmdType {
    CmdType::try_from(r.cmd_type).unwrap_or(CmdType::Invalid)
}

pub(crate) fn is_read(r: &Request) -> bool {
    matches!(cmd_type(r), CmdType::Get | CmdType::Range | CmdType::Snap)
}

/// The key range a request touches, etcd style: `(key, range_end)` with an empty
/// `range_end` meaning `key` alone. `None` for requests without a key (Snap).
pub(crate) fn request_range(r: &Request) -> Option<(&[u8], &[u8])> {
    match cmd_type(r) {
        CmdType::Get => r.get.as_ref().map(|g| (&g.key[..], &[][..])),
        CmdType::Put => r.put.as_ref().map(|p| (&p.key[..], &[][..])),
        CmdType::Delete => r.delete.as_ref().map(|d| (&d.key[..], &[][..])),
        CmdType::DeleteRange => r
            .delete_range
            .as_ref()
            .map(|d| (&d.start_key[..], &d.end_key[..])),
        CmdType::Range => r.range.as_ref().map(|g| (&g.key[..], &g.range_end[..])),
        CmdType::Snap | CmdType::Invalid => None,
    }
}

/// The first key a command is about (for routing a command without a region id).
pub(crate) fn routing_key(req: &RaftCmdRequest) -> Option<&[u8]> {
    if let Some(a) = &req.admin_request {
        return a
            .splits
            .as_ref()
            .and_then(|s| s.requests.first())
            .map(|s| &s.split_key[..]);
    }
    req.requests
        .iter()
        .find_map(|r| request_range(r).map(|(k, _)| k))
}

/// The first key of the command outside the region, if any.
pub(crate) fn key_outside<'a>(req: &'a RaftCmdRequest, r: &metapb::Region) -> Option<&'a [u8]> {
    for q in &req.requests {
        if let Some((key, end)) = request_range(q) {
            if !region::range_in_region(key, end, r) {
                return Some(key);
            }
        }
    }
    None
}

impl Peer {
    /// A peer over `storage`, which holds the raft state; `region` is empty (no peers) for
    /// an uninitialized peer.
    pub fn new(
        ctx: &Ctx,
        peer_id: u64,
        region: metapb::Region,
        apply: ApplyState,
        mut storage: PeerStorage,
    ) -> Result<Peer, Error> {
        storage.set_engine(ctx.engine.clone());
        let cfg = raft_config(
            peer_id,
            ctx.election_tick,
            ctx.heartbeat_tick,
            apply.applied_index,
        );
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&cfg, storage, &logger)?;
        let peer_stores = region.peers.iter().map(|p| (p.id, p.store_id)).collect();
        Ok(Peer {
            raw,
            region,
            apply,
            pending_writes: VecDeque::new(),
            pending_reads: VecDeque::new(),
            next_read_ctx: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            flush_marks: VecDeque::new(),
            compact_target: 0,
            compact_proposed: 0,
            durable_applied: apply.applied_index,
            removed: false,
            pending_transfer: None,
            avg_entry_bytes: 0.0,
            peer_stores,
            written_bytes: 0,
            approximate_size: 0,
            checking_size: false,
            incarnation: 0,
            idle_ticks: 0,
            bcast_until: 0,
            removed_peers: Vec::new(),
        })
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn region_id(&self) -> u64 {
        self.region.id
    }

    pub fn is_initialized(&self) -> bool {
        !self.region.peers.is_empty()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Remembers where a peer id lives (learned from an incoming message).
    pub fn learn_peer(&mut self, peer: &metapb::Peer) {
        if peer.id != 0 && peer.store_id != 0 && self.store_of(peer.id) != peer.store_id {
            self.peer_stores.insert(peer.id, peer.store_id);
        }
    }

    fn store_of(&self, peer_id: u64) -> u64 {
        self.peer_stores.get(&peer_id).copied().unwrap_or(0)
    }

    pub fn leader_peer(&self) -> Option<metapb::Peer> {
        let id = self.raw.raft.leader_id;
        (id != 0).then(|| metapb::Peer {
            id,
            store_id: self.store_of(id),
            ..Default::default()
        })
    }

    /// Answers everything waiting on this peer, which is going away (the store stops, or the
    /// peer is replaced). A write it proposed may still be committed by the region's next
    /// leader, so its answer says the outcome is unknown: a client that took it for a
    /// refusal would send the write again and have it applied twice (the fault workload's
    /// checker caught a shared key's put applied before and after another client's put).
    pub fn fail_all(&mut self, why: &str) {
        self.fail_all_with(
            region_error(format!(
                "{why} while the write was in flight: the outcome is unknown"
            )),
            region_error(why),
        );
    }

    /// Answers the writes waiting on this peer with `writes` and everything else with
    /// `others`.
    pub fn fail_all_with(&mut self, writes: errorpb::Error, e: errorpb::Error) {
        for (_, _, reply) in self.pending_writes.drain(..) {
            let _ = reply.send(RaftCmdResponse::default().with_error(writes.clone()));
        }
        for r in self.pending_reads.drain(..) {
            let _ = r
                .reply
                .send(RaftCmdResponse::default().with_error(e.clone()));
        }
        if let Some((_, reply, _)) = self.pending_transfer.take() {
            let _ = reply.send(RaftCmdResponse::default().with_error(e.clone()));
        }
    }

    /// Queues raft's outgoing messages in the round's [`Outbox`]; the store loop hands them
    /// to the transport when the round ends and then reports back ([`Peer::report_sent`]):
    /// a message the transport drops at once marks its peer unreachable (raft then probes
    /// instead of pipelining); a snapshot is reported finished once handed over (if it is
    /// lost on the way the follower rejects the next append and raft sends a new one). A
    /// peer whose store is unknown is reported unreachable at once.
    pub fn send_messages(&mut self, ctx: &Ctx, msgs: Vec<raft::eraftpb::Message>) {
        for mut m in msgs {
            let to = m.to;
            let raft_log = &self.raw.raft.raft_log;
            if crate::append_check::repair_outgoing(&mut m, |i| {
                // Index 0 is the empty log's anchor, of term 0; elsewhere raft-rs answers 0
                // for an index it no longer (or does not yet) hold.
                if i == 0 {
                    Some(0)
                } else {
                    raft_log.term(i).ok().filter(|&t| t > 0)
                }
            }) {
                log::debug!(
                    "region {}: re-anchored a batched append to peer {to} at {}/{}",
                    self.region.id,
                    m.index,
                    m.log_term
                );
            }
            let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let ack = accepting_ack(&m);
            let store = self.store_of(to);
            if store == 0 {
                self.report_sent(to, is_snapshot, false);
                continue;
            }
            let rm = RaftMessage {
                region_id: self.region.id,
                from_peer: Some(metapb::Peer {
                    id: self.raw.raft.id,
                    store_id: ctx.store_id,
                    ..Default::default()
                }),
                to_peer: Some(metapb::Peer {
                    id: to,
                    store_id: store,
                    ..Default::default()
                }),
                region_epoch: self.region.region_epoch,
                message: crate::raft_codec::encode(&m).into(),
                ..Default::default()
            };
            ctx.outbox
                .borrow_mut()
                .push(store, rm, to, is_snapshot, ack);
        }
    }

    /// Tells raft whether a message to peer `to` left: an unreachable peer gets no more
    /// pipelined appends until it answers, and a snapshot hand-off ends either way.
    pub fn report_sent(&mut self, to: u64, is_snapshot: bool, sent: bool) {
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

    pub fn header(&self, ctx: &Ctx) -> pontoonpb::ResponseHeader {
        pontoonpb::ResponseHeader {
            cluster_id: ctx.cluster_id,
            member_id: ctx.store_id,
            revision: self.apply.revision,
            raft_term: self.raw.raft.term,
        }
    }

    pub fn respond(&self, ctx: &Ctx, reply: Reply, mut resp: RaftCmdResponse) {
        resp.response_header = Some(self.header(ctx));
        let mut h = resp.header.take().unwrap_or_default();
        h.current_term = self.raw.raft.term;
        resp.header = Some(h);
        ctx.replies.borrow_mut().push((reply, resp));
    }

    pub fn not_leader(&self) -> errorpb::Error {
        errorpb::Error {
            message: "not leader".into(),
            not_leader: Some(errorpb::NotLeader {
                region_id: self.region.id,
                leader: self.leader_peer(),
            }),
            ..Default::default()
        }
    }

    /// A command the store loop has routed here (store, region and epoch checked).
    pub fn on_command(&mut self, ctx: &mut Ctx, req: Box<RaftCmdRequest>, reply: Reply) {
        if req.admin_request.is_some() {
            self.on_admin(ctx, req, reply);
            return;
        }
        if req.requests.iter().all(is_read) {
            let serializable = req.requests.iter().all(|r| {
                cmd_type(r) == CmdType::Range && r.range.as_ref().is_some_and(|g| g.serializable)
            });
            if serializable {
                let resp = self.execute_reads(ctx, &req);
                self.respond(ctx, reply, resp);
                return;
            }
            // A follower serves linearizable reads too (as etcd members do): raft-rs asks
            // the leader for the read index, and the read waits for the local apply.
            if !self.is_leader() && self.raw.raft.leader_id == 0 {
                let e = self.not_leader();
                self.respond(ctx, reply, RaftCmdResponse::default().with_error(e));
                return;
            }
            let rctx = self.read_ctx();
            self.pending_reads.push_back(PendingRead {
                ctx: rctx,
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
        if !self.is_leader() {
            let e = self.not_leader();
            self.respond(ctx, reply, RaftCmdResponse::default().with_error(e));
            return;
        }
        let data = req.encode_to_vec();
        let before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(Vec::new(), data);
        self.track_proposal(ctx, before, proposed, reply, None);
    }

    /// After a proposal: the reply waits for the entry to be applied, or hears at once that
    /// raft did not append it (not leader, or a refused membership change when `what`
    /// names one).
    fn track_proposal(
        &mut self,
        ctx: &Ctx,
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
            // Dropped while the leadership moves (or a conf change is pending): retriable.
            (Err(raft::Error::ProposalDropped), _) => self.not_leader(),
            (Err(err), Some(what)) => region_error(format!("{what} refused: {err}")),
            _ => self.not_leader(),
        };
        self.respond(ctx, reply, RaftCmdResponse::default().with_error(e));
    }

    /// Followers learn commits with the next append or heartbeat (`skip_bcast_commit`), which
    /// may be a heartbeat interval away. A split or membership change should reach every
    /// replica at once (the new region's peers wait for it), so until it is applied the
    /// leader broadcasts each commit.
    fn bcast_commit_until_applied(&mut self) {
        self.raw.raft.skip_bcast_commit(false);
        self.bcast_until = self.raw.raft.raft_log.last_index();
    }

    /// Records the read states of a ready.
    pub fn on_read_states(&mut self, states: Vec<raft::ReadState>) {
        for rs in states {
            if let Some(r) = self
                .pending_reads
                .iter_mut()
                .find(|r| r.ctx == rs.request_ctx)
            {
                r.index = Some(rs.index);
            }
        }
    }

    /// A context for a new read-index request: this peer's id, then a counter. The leader
    /// keys the pending requests of all replicas by their contexts, and raft-rs drops a
    /// request whose context is already pending there: contexts counted per replica alone
    /// (each from 1) collided whenever two replicas read at once, and all but one of the
    /// reads waited out the read-index timeout. The counter starts from the clock (see
    /// `next_read_ctx`) so that a restarted peer does not reuse the context of a request
    /// still pending from before the restart, whose answer (an older read index) it would
    /// take for its own.
    fn read_ctx(&mut self) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(16);
        ctx.extend_from_slice(&self.raw.raft.id.to_le_bytes());
        ctx.extend_from_slice(&self.next_read_ctx.to_le_bytes());
        self.next_read_ctx = self.next_read_ctx.wrapping_add(1);
        ctx
    }

    /// Hands waiting reads to raft once the leader can answer them.
    fn issue_reads(&mut self) {
        if self.pending_reads.iter().all(|r| r.issued) {
            return;
        }
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
        for c in ctxs {
            self.raw.read_index(c);
        }
    }

    /// True if the region is quiet enough that this peer may stop ticking (hibernate):
    /// nothing waits on it, everything in its log is committed and applied, and either it
    /// leads and every peer has the whole log, or it follows a leader whose store is alive
    /// (`leader_alive`; if that store goes quiet, the peer wakes and can campaign).
    pub fn can_sleep(&self, leader_alive: bool) -> bool {
        if !self.is_initialized()
            || !self.pending_writes.is_empty()
            || !self.pending_reads.is_empty()
            || self.pending_transfer.is_some()
            || self.checking_size
            || !self.removed_peers.is_empty()
        {
            return false;
        }
        let r = &self.raw.raft;
        let last = r.raft_log.last_index();
        if r.raft_log.committed != last || self.apply.applied_index != last {
            return false;
        }
        match r.state {
            StateRole::Leader => r.prs().iter().all(|(_, p)| p.matched == last),
            StateRole::Follower => r.leader_id != 0 && leader_alive,
            _ => false,
        }
    }

    /// Proposals or reads waiting for an answer.
    pub fn has_requests_in_flight(&self) -> bool {
        !self.pending_writes.is_empty() || !self.pending_reads.is_empty()
    }

    pub fn has_pending_reads(&self) -> bool {
        !self.pending_reads.is_empty()
    }

    pub fn serve_reads(&mut self, ctx: &Ctx) {
        if self.pending_reads.is_empty() {
            return;
        }
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
                let resp = self.execute_reads(ctx, &r.req);
                self.respond(ctx, r.reply, resp);
            }
        }
        // A read whose index never came back (the term changed, or the leader dropped it)
        // is answered with an error the client retries on, so later reads are not stuck
        // behind it.
        let timeout = ctx.tick_interval * (2 * ctx.election_tick as u32);
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
                self.respond(ctx, r.reply, RaftCmdResponse::default().with_error(e));
            }
        }
    }

    fn execute_reads(&self, ctx: &Ctx, req: &RaftCmdRequest) -> RaftCmdResponse {
        // The region may have split while the read waited for its index.
        if let Some(key) = key_outside(req, &self.region) {
            return RaftCmdResponse::default().with_error(key_not_in_region(key, &self.region));
        }
        let mut resp = RaftCmdResponse::default();
        for r in &req.requests {
            match self.execute_read(ctx, r) {
                Ok(x) => resp.responses.push(x),
                Err(e) => {
                    return RaftCmdResponse::default().with_error(region_error(e.to_string()))
                }
            }
        }
        resp
    }

    fn execute_read(&self, ctx: &Ctx, r: &Request) -> Result<Response, mvcc::Error> {
        let mut out = Response {
            cmd_type: r.cmd_type,
            ..Default::default()
        };
        match cmd_type(r) {
            CmdType::Get => {
                if let Some(g) = &r.get {
                    let kv = mvcc::get(&ctx.engine, cf_of(&g.cf), &g.key)?;
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
                        &ctx.engine,
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
                    region: Some(self.region.clone()),
                });
            }
            _ => {}
        }
        Ok(out)
    }

    /// Drops the raft log up to what a committed `CompactLog` allows AND the engine has
    /// flushed (never further: a restart replays from the engine's flushed apply state).
    /// Returns true if it staged anything.
    pub fn gc_log(&mut self, flushed: u64, batch: &mut LogBatch) -> Result<bool, Error> {
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
            return Ok(false);
        }
        let Ok(term) = raft::Storage::term(self.raw.store(), index) else {
            return Ok(false); // already compacted
        };
        self.raw.mut_store().compact_to(batch, index, term)?;
        Ok(true)
    }

    /// On the leader: proposes `CompactLog` once the applied log is over its entry-count or
    /// byte limit. Followers within half the count limit keep their entries (the compact
    /// index stops at the slowest of them); one further behind gets a snapshot instead.
    pub fn maybe_propose_compact_log(&mut self, ctx: &Ctx) {
        if !self.is_leader() {
            return;
        }
        let first = self.raw.store().truncated().0 + 1;
        let applied = self.apply.applied_index;
        if applied < first {
            return;
        }
        let entries = applied - first + 1;
        let bytes = entries as f64 * self.avg_entry_bytes;
        if entries < ctx.compact_log_count && bytes < ctx.compact_log_bytes as f64 {
            return;
        }
        // Nothing applied since our last CompactLog but that entry itself: the log is
        // still long only because the engine has not flushed what that one covers (the
        // truncation waits for it). Proposing again would append one CompactLog per check
        // to an idle region for as long as its writes sit in the memtable, and keep it from
        // hibernating.
        if self.compact_proposed != 0 && applied <= self.compact_proposed + 1 {
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
        let keep_for_followers = applied.saturating_sub(ctx.compact_log_count / 2);
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
                cmd_type: AdminCmdType::CompactLog as i32,
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
            log::debug!(
                "region {}: proposed CompactLog to {index} ({entries} entries applied)",
                self.region.id
            );
        }
    }

    /// Proposes a split of this region at `keys` (sorted, inside the region), with fresh
    /// ids. The reply, if any, gets the resulting regions once applied.
    pub fn propose_split(&mut self, ctx: &mut Ctx, keys: Vec<Vec<u8>>, reply: Option<Reply>) {
        let mut requests = Vec::new();
        for key in keys {
            let mut alloc = || ctx.ids.alloc();
            let ids: Result<Vec<u64>, _> = std::iter::once(())
                .chain(self.region.peers.iter().map(|_| ()))
                .map(|_| alloc())
                .collect();
            let ids = match ids {
                Ok(ids) => ids,
                Err(e) => {
                    log::error!("region {}: cannot allocate ids: {e}", self.region.id);
                    if let Some(reply) = reply {
                        self.respond(
                            ctx,
                            reply,
                            RaftCmdResponse::default().with_error(region_error(format!(
                                "cannot allocate ids for the split: {e}"
                            ))),
                        );
                    }
                    return;
                }
            };
            requests.push(raft_cmdpb::SplitRequest {
                split_key: key,
                new_region_id: ids[0],
                new_peer_ids: ids[1..].to_vec(),
                ..Default::default()
            });
        }
        let req = self.own_command(raft_cmdpb::AdminRequest {
            cmd_type: AdminCmdType::BatchSplit as i32,
            splits: Some(raft_cmdpb::BatchSplitRequest {
                requests,
                right_derive: false,
            }),
            ..Default::default()
        });
        let before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(Vec::new(), req.encode_to_vec());
        self.bcast_commit_until_applied();
        match reply {
            Some(reply) => self.track_proposal(ctx, before, proposed, reply, Some("split")),
            None => {
                if let Err(e) = proposed {
                    log::debug!("region {}: split not proposed: {e}", self.region.id);
                }
            }
        }
    }

    /// Admin commands: `CompactLog`, `BatchSplit` and `ChangePeer` go through the log;
    /// `TransferLeader` is the leader's local business (raft-rs runs the transfer).
    fn on_admin(&mut self, ctx: &mut Ctx, req: Box<RaftCmdRequest>, reply: Reply) {
        if !self.is_leader() {
            let e = self.not_leader();
            self.respond(ctx, reply, RaftCmdResponse::default().with_error(e));
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
                    self.respond(ctx, reply, transfer_done());
                    return;
                }
                let cs = self.raw.store().conf_state();
                if !cs.voters.contains(&target) {
                    self.respond(
                        ctx,
                        reply,
                        RaftCmdResponse::default().with_error(region_error(format!(
                            "peer {target} is not a voting member"
                        ))),
                    );
                    return;
                }
                self.raw.transfer_leader(target);
                let deadline = Instant::now() + ctx.tick_interval * (ctx.election_tick as u32 * 2);
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
                        ctx,
                        reply,
                        RaftCmdResponse::default().with_error(region_error(
                            "cannot remove the leader: move the leadership first (pontoonctl move-leader)",
                        )),
                    );
                    return;
                }
                let cc = conf_change_of(cp, &req);
                let before = self.raw.raft.raft_log.last_index();
                let proposed = self.raw.propose_conf_change(Vec::new(), cc);
                self.bcast_commit_until_applied();
                self.track_proposal(ctx, before, proposed, reply, Some("membership change"));
            }
            AdminCmdType::BatchSplit => {
                let mut keys: Vec<Vec<u8>> = admin
                    .splits
                    .as_ref()
                    .map(|s| s.requests.iter().map(|r| r.split_key.clone()).collect())
                    .unwrap_or_default();
                keys.sort();
                keys.dedup();
                if let Some(bad) = keys.iter().find(|k| {
                    !region::key_in_region(k, &self.region) || **k == self.region.start_key
                }) {
                    let e = if region::key_in_region(bad, &self.region) {
                        region_error(format!(
                            "split key {:?} is the start of region {}: nothing to split",
                            String::from_utf8_lossy(bad),
                            self.region.id
                        ))
                    } else {
                        key_not_in_region(bad, &self.region)
                    };
                    self.respond(ctx, reply, RaftCmdResponse::default().with_error(e));
                    return;
                }
                self.propose_split(ctx, keys, Some(reply));
            }
            _ => {
                // CompactLog (normally proposed by the leader itself).
                let before = self.raw.raft.raft_log.last_index();
                let proposed = self.raw.propose(Vec::new(), req.encode_to_vec());
                self.track_proposal(ctx, before, proposed, reply, None);
            }
        }
    }

    /// Proposes a membership change decided by the placement (no client waits for it).
    /// Returns true if raft took it.
    pub fn propose_change_peer(
        &mut self,
        change: raft_cmdpb::ConfChangeType,
        peer: metapb::Peer,
        peer_addr: String,
    ) -> bool {
        let cp = raft_cmdpb::ChangePeerRequest {
            change_type: change as i32,
            peer: Some(peer),
            peer_addr,
        };
        let req = self.own_command(raft_cmdpb::AdminRequest {
            cmd_type: AdminCmdType::ChangePeer as i32,
            change_peer: Some(cp.clone()),
            ..Default::default()
        });
        let cc = conf_change_of(&cp, &req);
        let before = self.raw.raft.raft_log.last_index();
        let ok = self.raw.propose_conf_change(Vec::new(), cc).is_ok()
            && self.raw.raft.raft_log.last_index() > before;
        if ok {
            self.bcast_commit_until_applied();
        }
        ok
    }

    /// Proposes an admin command no client waits for (store changes of the placement).
    pub fn propose_admin(&mut self, admin: raft_cmdpb::AdminRequest) -> bool {
        let req = self.own_command(admin);
        self.raw.propose(Vec::new(), req.encode_to_vec()).is_ok()
    }

    /// An admin command this peer proposes itself, stamped with the region's id and epoch
    /// (the epoch is checked again when it applies).
    fn own_command(&self, admin: raft_cmdpb::AdminRequest) -> RaftCmdRequest {
        RaftCmdRequest {
            header: Some(raft_cmdpb::RaftRequestHeader {
                region_id: self.region.id,
                region_epoch: self.region.region_epoch,
                ..Default::default()
            }),
            admin_request: Some(admin),
            ..Default::default()
        }
    }

    /// True if peer `id` has (nearly) everything the leader committed: safe to count on it
    /// before removing another replica or handing it the leadership.
    pub fn caught_up(&self, id: u64) -> bool {
        let committed = self.raw.raft.raft_log.committed;
        self.raw
            .raft
            .prs()
            .get(id)
            .is_some_and(|pr| pr.matched + 64 >= committed && pr.matched > 0)
    }

    /// A message telling peer `to` it is no longer in this region (`is_tombstone`, with the
    /// current epoch).
    pub fn tombstone_message(&self, ctx: &Ctx, to: metapb::Peer) -> RaftMessage {
        RaftMessage {
            region_id: self.region.id,
            from_peer: Some(metapb::Peer {
                id: self.raw.raft.id,
                store_id: ctx.store_id,
                ..Default::default()
            }),
            to_peer: Some(to),
            region_epoch: self.region.region_epoch,
            is_tombstone: true,
            ..Default::default()
        }
    }

    /// A hibernating follower asks its leader, now and then, whether it is still a member:
    /// a heartbeat response costs the leader nothing, and one from a peer the region
    /// removed is answered with a tombstone message (see `StoreLoop::on_raft_message`).
    pub fn probe_leader(&mut self, ctx: &Ctx) {
        let Some(leader) = self.leader_peer().filter(|l| l.store_id != 0) else {
            return;
        };
        let mut m = raft::eraftpb::Message::default();
        m.set_msg_type(MessageType::MsgHeartbeatResponse);
        m.to = leader.id;
        m.from = self.raw.raft.id;
        m.term = self.raw.raft.term;
        self.send_messages(ctx, vec![m]);
    }

    pub fn has_pending_transfer(&self) -> bool {
        self.pending_transfer.is_some()
    }

    /// This store's view of the region, as a status entry.
    pub fn region_status(&self) -> pontoonpb::RegionStatus {
        pontoonpb::RegionStatus {
            region: Some(self.region.clone()),
            leader: self.leader_peer(),
            raft_term: self.raw.raft.term,
            applied_index: self.apply.applied_index,
            revision: self.apply.revision,
            approximate_size: self.approximate_size,
        }
    }

    /// This store's view of itself and the region (served locally, like etcd's status).
    pub fn status_response(
        &self,
        ctx: &Ctx,
        regions: Vec<pontoonpb::RegionStatus>,
    ) -> RaftCmdResponse {
        let me = self.raw.raft.id;
        let stats = ctx.engine.stats();
        let members = self
            .region
            .peers
            .iter()
            .map(|p| pontoonpb::Member {
                id: p.store_id,
                peer_addr: ctx.addresses.get(&p.store_id).cloned().unwrap_or_default(),
                is_learner: p.role == metapb::PeerRole::Learner as i32,
            })
            .collect();
        let cs = self.raw.store().conf_state();
        RaftCmdResponse {
            admin_response: Some(raft_cmdpb::AdminResponse {
                cmd_type: AdminCmdType::Status as i32,
                status: Some(pontoonpb::StatusResponse {
                    member_id: ctx.store_id,
                    leader: self.leader_peer().map(|p| p.store_id).unwrap_or(0),
                    raft_term: self.raw.raft.term,
                    raft_index: self.raw.raft.raft_log.last_index(),
                    raft_applied_index: self.apply.applied_index,
                    raft_committed_index: self.raw.raft.raft_log.committed,
                    db_size: stats.level_bytes.iter().sum::<u64>() as i64,
                    is_learner: cs.learners.contains(&me),
                    members,
                    first_log_index: self.raw.store().truncated().0 + 1,
                    conf_ver: region::epoch(&self.region).conf_ver,
                    regions,
                    hibernating_regions: ctx
                        .status
                        .hibernating
                        .load(std::sync::atomic::Ordering::Acquire),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Answers a leader transfer once the target leads, or once it has had time enough.
    pub fn check_transfer(&mut self, ctx: &Ctx) {
        let Some((target, _, deadline)) = &self.pending_transfer else {
            return;
        };
        let done = self.raw.raft.leader_id == *target;
        if !done && Instant::now() < *deadline {
            return;
        }
        if let Some((target, reply, _)) = self.pending_transfer.take() {
            if done {
                self.respond(ctx, reply, transfer_done());
            } else {
                let e = region_error(format!("leadership did not move to {target} in time"));
                self.respond(ctx, reply, RaftCmdResponse::default().with_error(e));
            }
        }
    }

    /// Applies committed entries; what the store loop must do afterwards is pushed to
    /// `events`. Consecutive commands go into one engine batch with one apply-state record
    /// ([`mvcc::Pending`]); an admin command or a membership change is applied and written
    /// on its own, after everything before it is written. Proposers are answered once
    /// their entry's batch is in the engine.
    pub fn apply_entries(
        &mut self,
        ctx: &mut Ctx,
        entries: Vec<Entry>,
        events: &mut Vec<ApplyEvent>,
    ) -> Result<(), Error> {
        let mut pending = mvcc::Pending::default();
        let mut applied = Applied::default();
        for e in entries {
            self.apply_entry(ctx, e, events, &mut pending, &mut applied)?;
        }
        self.write_applied(ctx, &mut pending, &mut applied)
    }

    fn apply_entry(
        &mut self,
        ctx: &mut Ctx,
        e: Entry,
        events: &mut Vec<ApplyEvent>,
        pending: &mut mvcc::Pending,
        applied: &mut Applied,
    ) -> Result<(), Error> {
        // A follower's entries, two in three at three replicas, need no answer built.
        let wanted = self.answer_due(e.index, e.term);
        let resp = match e.get_entry_type() {
            EntryType::EntryNormal if !e.data.is_empty() => {
                match RaftCmdRequest::decode(&e.data[..]) {
                    Ok(req) => match &req.admin_request {
                        Some(admin) => {
                            self.write_applied(ctx, pending, applied)?;
                            let resp = self.apply_admin(
                                ctx,
                                &req,
                                admin,
                                e.index,
                                pending.batch_mut(),
                                events,
                            )?;
                            self.mark_applied(e.index, e.term);
                            applied.push(e.index, e.term, Some(resp));
                            return self.write_applied(ctx, pending, applied);
                        }
                        None => self.apply_command(ctx, &req, pending, wanted)?,
                    },
                    Err(err) => RaftCmdResponse::default()
                        .with_error(region_error(format!("undecodable command: {err}"))),
                }
            }
            // A new leader's empty entry, or a proposal raft-rs replaced by an empty entry
            // (it does that to a second membership change while one is pending).
            EntryType::EntryNormal => RaftCmdResponse::default().with_error(region_error(
                "the command was dropped: another membership change is in progress",
            )),
            EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                self.write_applied(ctx, pending, applied)?;
                let resp = self.apply_conf_change(ctx, &e, pending.batch_mut())?;
                self.mark_applied(e.index, e.term);
                applied.push(e.index, e.term, Some(resp));
                return self.write_applied(ctx, pending, applied);
            }
        };
        self.mark_applied(e.index, e.term);
        applied.push(e.index, e.term, wanted.then_some(resp));
        Ok(())
    }

    /// Whether applying entry `index` of `term` answers the oldest waiting proposal: it is
    /// that entry's, or an older index's, or of an older term (see [`Peer::answer`]).
    fn answer_due(&self, index: u64, term: u64) -> bool {
        self.pending_writes
            .front()
            .is_some_and(|(i, t, _)| *i <= index || *t < term)
    }

    fn mark_applied(&mut self, index: u64, term: u64) {
        self.apply.applied_index = index;
        self.apply.applied_term = term;
        if self.bcast_until != 0 && index >= self.bcast_until {
            self.bcast_until = 0;
            self.raw.raft.skip_bcast_commit(true);
        }
    }

    /// Writes what `pending` holds with the apply state (one engine batch), then answers
    /// the proposers of the entries in `applied`.
    fn write_applied(
        &mut self,
        ctx: &Ctx,
        pending: &mut mvcc::Pending,
        applied: &mut Applied,
    ) -> Result<(), Error> {
        let Some((first, last, last_term)) = applied.range.take() else {
            return Ok(());
        };
        let mut batch = pending.take();
        self.apply.stage(&mut batch, self.region.id);
        let seq = ctx.engine.write(&batch)?;
        // Every 128th index leaves a mark: once `seq` is flushed, the log up to `last` is no
        // longer needed to rebuild the engine.
        if last / 128 > first.saturating_sub(1) / 128 {
            self.flush_marks.push_back((seq, last, last_term));
        }
        for (index, term, resp) in applied.answers.drain(..) {
            self.answer(ctx, index, term, resp);
        }
        Ok(())
    }

    /// Answers the proposer of entry `index`; older proposals that lost their slot to
    /// another leader's entries are stale.
    ///
    /// Proposals of an older term than the entry are stale too, whatever their index: the
    /// committed log holds terms in order, so nothing after this entry can carry an older
    /// term. That is what answers the proposals of a leader that stepped down past the end
    /// of its successor's log once the successor's first entry applies; waiting for their
    /// own indexes would leave them unanswered until the region took that many new writes
    /// (an idle region: until the client gave up).
    fn answer(&mut self, ctx: &Ctx, index: u64, term: u64, mut resp: RaftCmdResponse) {
        while self.answer_due(index, term) {
            let Some((i, t, reply)) = self.pending_writes.pop_front() else {
                break;
            };
            if i == index && t == term {
                self.respond(ctx, reply, std::mem::take(&mut resp));
            } else {
                self.respond(
                    ctx,
                    reply,
                    RaftCmdResponse::default().with_error(stale_command()),
                );
            }
        }
    }

    /// Applies an admin command that went through the log (`CompactLog`, `BatchSplit`).
    fn apply_admin(
        &mut self,
        ctx: &Ctx,
        req: &RaftCmdRequest,
        admin: &raft_cmdpb::AdminRequest,
        index: u64,
        batch: &mut WriteBatch,
        events: &mut Vec<ApplyEvent>,
    ) -> Result<RaftCmdResponse, Error> {
        if let Some(c) = &admin.compact_log {
            // Only ever forward, and never past this entry (a bogus index from a client
            // must not drop entries nobody applied).
            let target = c.compact_index.min(index.saturating_sub(1));
            self.compact_target = self.compact_target.max(target);
            return Ok(RaftCmdResponse {
                admin_response: Some(raft_cmdpb::AdminResponse {
                    cmd_type: admin.cmd_type,
                    compact_log: Some(raft_cmdpb::CompactLogResponse {}),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        if let Some(splits) = &admin.splits {
            return Ok(self.apply_split(req, splits, batch, events));
        }
        if admin.put_store.is_some() || admin.set_store_state.is_some() {
            return self.apply_store_change(ctx, admin, batch, events);
        }
        Ok(RaftCmdResponse::default().with_error(region_error("unsupported admin command")))
    }

    /// Applies `PutStore` or `SetStoreState` to the cluster metadata, which region 1 (the
    /// region holding the empty key) keeps. Every replica applies it alike; refused changes
    /// change nothing.
    fn apply_store_change(
        &mut self,
        ctx: &Ctx,
        admin: &raft_cmdpb::AdminRequest,
        batch: &mut WriteBatch,
        events: &mut Vec<ApplyEvent>,
    ) -> Result<RaftCmdResponse, Error> {
        if !self.region.start_key.is_empty() {
            return Ok(RaftCmdResponse::default().with_error(region_error(
                "store changes go to the region holding the empty key",
            )));
        }
        let Some(mut meta) = crate::meta::load(&ctx.engine)? else {
            return Ok(RaftCmdResponse::default()
                .with_error(region_error("this cluster has no metadata record")));
        };
        let mut resp = raft_cmdpb::AdminResponse {
            cmd_type: admin.cmd_type,
            ..Default::default()
        };
        let result = if let Some(s) = &admin.put_store {
            crate::meta::put_store(&mut meta, s)
        } else if let Some(c) = &admin.set_store_state {
            let state = metapb::StoreState::try_from(c.state).unwrap_or(metapb::StoreState::Up);
            crate::meta::set_state(&mut meta, c.store_id, state).map(|store| {
                log::info!("store {} is now {:?}", store.id, state);
                resp.set_store_state =
                    Some(pontoonpb::SetStoreStateResponse { store: Some(store) });
            })
        } else {
            Ok(())
        };
        if let Err(e) = result {
            return Ok(RaftCmdResponse::default().with_error(region_error(e)));
        }
        meta.version += 1;
        crate::meta::stage(batch, &meta);
        events.push(ApplyEvent::Meta(meta));
        Ok(RaftCmdResponse {
            admin_response: Some(resp),
            ..Default::default()
        })
    }

    /// Applies a `BatchSplit`: this region keeps the leftmost part and each split key starts
    /// a new region with the same stores, the new ids from the command, the bumped version
    /// and this region's revision. Deterministic on every replica: a split proposed against
    /// an older version (another split got in first) or with keys no longer inside the
    /// region changes nothing.
    fn apply_split(
        &mut self,
        req: &RaftCmdRequest,
        splits: &raft_cmdpb::BatchSplitRequest,
        batch: &mut WriteBatch,
        events: &mut Vec<ApplyEvent>,
    ) -> RaftCmdResponse {
        let cur = region::epoch(&self.region);
        let proposed = req
            .header
            .as_ref()
            .and_then(|h| h.region_epoch)
            .unwrap_or_default();
        if proposed.version != cur.version {
            return RaftCmdResponse::default().with_error(region_error(format!(
                "split proposed at region version {} but the region is at {}",
                proposed.version, cur.version
            )));
        }
        let mut prev = self.region.start_key.clone();
        for s in &splits.requests {
            let inside = s.split_key > prev && region::key_in_region(&s.split_key, &self.region);
            if !inside || s.new_region_id == 0 || s.new_peer_ids.len() != self.region.peers.len() {
                return RaftCmdResponse::default().with_error(region_error(format!(
                    "invalid split request at key {:?}",
                    String::from_utf8_lossy(&s.split_key)
                )));
            }
            prev = s.split_key.clone();
        }
        let n = splits.requests.len() as u64;
        let epoch = metapb::RegionEpoch {
            conf_ver: cur.conf_ver,
            version: cur.version + n,
        };
        let old_end = self.region.end_key.clone();
        let mut created = Vec::new();
        for (i, s) in splits.requests.iter().enumerate() {
            let end = splits
                .requests
                .get(i + 1)
                .map(|n| n.split_key.clone())
                .unwrap_or_else(|| old_end.clone());
            let peers = self
                .region
                .peers
                .iter()
                .zip(&s.new_peer_ids)
                .map(|(p, &id)| metapb::Peer {
                    id,
                    store_id: p.store_id,
                    role: p.role,
                })
                .collect();
            created.push(metapb::Region {
                id: s.new_region_id,
                start_key: s.split_key.clone(),
                end_key: end,
                region_epoch: Some(epoch),
                peers,
            });
        }
        if let Some(first) = splits.requests.first() {
            self.region.end_key = first.split_key.clone();
        }
        self.region.region_epoch = Some(epoch);
        region::stage_state(batch, &self.region, PeerState::Normal);
        for r in &created {
            region::stage_state(batch, r, PeerState::Normal);
            ApplyState {
                applied_index: INIT_INDEX,
                applied_term: INIT_TERM,
                revision: self.apply.revision,
            }
            .stage(batch, r.id);
        }
        log::info!(
            "region {} split at {:?}: new regions {:?}",
            self.region.id,
            splits
                .requests
                .iter()
                .map(|s| String::from_utf8_lossy(&s.split_key).into_owned())
                .collect::<Vec<_>>(),
            created.iter().map(|r| r.id).collect::<Vec<_>>()
        );
        self.approximate_size = 0;
        self.written_bytes = 0;
        let mut regions = vec![self.region.clone()];
        regions.extend(created.iter().cloned());
        events.push(ApplyEvent::Split {
            parent: self.region.id,
            regions: created,
        });
        RaftCmdResponse {
            admin_response: Some(raft_cmdpb::AdminResponse {
                cmd_type: AdminCmdType::BatchSplit as i32,
                splits: Some(raft_cmdpb::BatchSplitResponse { regions }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Applies a committed membership change to raft and to the region's peers, persists
    /// the new conf state (in the raft log for raft, and the region record with a bumped
    /// `conf_ver` in the engine batch). Both encodings are read as a `ConfChangeV2`; an
    /// entry that does not decode changes nothing (every replica skips it alike).
    fn apply_conf_change(
        &mut self,
        ctx: &mut Ctx,
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
        // The peer's store (and address) come from the command in the context.
        let cp = RaftCmdRequest::decode(cc.get_context())
            .ok()
            .and_then(|r| r.admin_request)
            .and_then(|a| a.change_peer);
        if let Some(cp) = &cp {
            let store = cp.peer.map(|p| p.store_id).unwrap_or_default();
            if store != 0 && !cp.peer_addr.is_empty() {
                batch.put(mvcc::RAFT_CF, &address_key(store), cp.peer_addr.as_bytes());
                ctx.transport.set_address(store, &cp.peer_addr);
                ctx.addresses.insert(store, cp.peer_addr.clone());
            }
        }
        for change in cc.get_changes() {
            let id = change.node_id;
            if let Some(old) = self.region.peers.iter().find(|p| p.id == id) {
                if change.get_change_type() == raft::eraftpb::ConfChangeType::RemoveNode
                    && id != self.raw.raft.id
                {
                    // Tell it, a few times: a removed peer that missed the entry would
                    // otherwise live on with the old configuration.
                    self.removed_peers.push((*old, 5));
                }
            }
            self.region.peers.retain(|p| p.id != id);
            let role = match change.get_change_type() {
                raft::eraftpb::ConfChangeType::RemoveNode => continue,
                raft::eraftpb::ConfChangeType::AddNode => metapb::PeerRole::Voter,
                raft::eraftpb::ConfChangeType::AddLearnerNode => metapb::PeerRole::Learner,
            };
            let store_id = cp
                .as_ref()
                .and_then(|c| c.peer)
                .filter(|p| p.id == id && p.store_id != 0)
                .map(|p| p.store_id)
                .unwrap_or(id);
            self.region.peers.push(metapb::Peer {
                id,
                store_id,
                role: role as i32,
            });
            self.peer_stores.insert(id, store_id);
        }
        let mut lb = LogBatch::new();
        self.raw.mut_store().set_conf_state(&mut lb, cs.clone())?;
        ctx.log.write(lb, true)?;
        let mut ep = region::epoch(&self.region);
        ep.conf_ver += 1;
        self.region.region_epoch = Some(ep);
        region::stage_state(batch, &self.region, PeerState::Normal);
        let me = self.raw.raft.id;
        if !cs.voters.contains(&me) && !cs.learners.contains(&me) {
            self.removed = true;
        }
        log::info!(
            "region {}: membership changed at index {}: voters {:?}, learners {:?}",
            self.region.id,
            e.index,
            cs.voters,
            cs.learners
        );
        Ok(RaftCmdResponse {
            admin_response: Some(raft_cmdpb::AdminResponse {
                cmd_type: AdminCmdType::ChangePeer as i32,
                change_peer: Some(raft_cmdpb::ChangePeerResponse {
                    region: Some(self.region.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Applies a snapshot from the leader: the engine first (region record, data and apply
    /// state, then flushed, since the engine has no WAL), then the raft log is reset to
    /// start after the snapshot, staged into `batch`, which the caller writes with sync. A
    /// crash between the two is finished at the next start (see [`crate::node::Node::start`]).
    pub fn apply_snapshot(
        &mut self,
        ctx: &Ctx,
        snap: raft::eraftpb::Snapshot,
        batch: &mut LogBatch,
    ) -> Result<(), Error> {
        let md = snap.get_metadata();
        let (index, term) = (md.index, md.term);
        let cs = md.get_conf_state().clone();
        let Some((new_region, data)) = region::decode_snapshot_data(&snap.data) else {
            return Err(Error::Snapshot(crate::snapshot::Error::Corrupt {
                offset: 0,
                reason: "no region in front of the snapshot data",
            }));
        };
        // Not durable on its own (no WAL): the snapshot's flush below persists it with the
        // data, and a crash before that loses both.
        let mut wb = WriteBatch::new();
        region::stage_state(&mut wb, &new_region, PeerState::Normal);
        ctx.engine.write(&wb)?;
        let meta = crate::snapshot::apply(&ctx.engine, data)?;
        if meta.apply.applied_index != index || meta.apply.applied_term != term {
            log::warn!(
                "snapshot data is at {}/{} but raft says {index}/{term}",
                meta.apply.applied_index,
                meta.apply.applied_term
            );
        }
        for p in &new_region.peers {
            self.peer_stores.insert(p.id, p.store_id);
        }
        self.region = new_region;
        self.apply = meta.apply;
        self.apply.applied_index = index;
        self.apply.applied_term = term;
        self.durable_applied = index;
        self.flush_marks.clear();
        self.raw
            .mut_store()
            .reset_to_snapshot(batch, index, term, cs)?;
        log::info!(
            "region {}: applied a snapshot at index {index}, term {term}",
            self.region.id
        );
        if self.region.id == region::FIRST_REGION_ID {
            ctx.status
                .snapshots_applied
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        // Proposals waiting for entries the snapshot covers will never see them applied
        // here. The region may have committed them (the snapshot holds their effect or
        // another leader's entry), so their outcome is unknown: `StaleCommand` would make a
        // client send the write again. Proposals past the snapshot of an older term can
        // never commit (see `answer`): those are stale.
        while let Some(&(i, t, _)) = self.pending_writes.front() {
            let e = if i <= index {
                region_error(
                    "a snapshot replaced the log while the write was in flight: the outcome is unknown",
                )
            } else if t < term {
                stale_command()
            } else {
                break;
            };
            if let Some((_, _, reply)) = self.pending_writes.pop_front() {
                self.respond(ctx, reply, RaftCmdResponse::default().with_error(e));
            }
        }
        Ok(())
    }

    /// Applies one committed command. Deterministic: the same entry gives the same state on
    /// every replica and on replay. Errors of the command itself go into the response; only
    /// storage failures are returned.
    fn apply_command(
        &mut self,
        ctx: &Ctx,
        req: &RaftCmdRequest,
        pending: &mut mvcc::Pending,
        respond: bool,
    ) -> Result<RaftCmdResponse, Error> {
        // Proposed before a split that moved the key away: it belongs to another region
        // now, which has its own revision. Refused alike on every replica.
        if let Some(key) = key_outside(req, &self.region) {
            let e = errorpb::Error {
                message: format!(
                    "region {} changed (split) before the command applied: key {:?} is no longer in it",
                    self.region.id,
                    String::from_utf8_lossy(key)
                ),
                epoch_not_match: Some(errorpb::EpochNotMatch {
                    current_regions: vec![self.region.clone()],
                }),
                ..Default::default()
            };
            return Ok(RaftCmdResponse::default().with_error(e));
        }
        let mut ops = Vec::with_capacity(req.requests.len());
        for r in &req.requests {
            match cmd_type(r) {
                CmdType::Put => {
                    if let Some(p) = &r.put {
                        self.written_bytes += (p.key.len() + p.value.len()) as u64;
                        ops.push(Op::Put {
                            cf: cf_of(&p.cf),
                            key: &p.key,
                            value: &p.value,
                            lease: 0,
                            prev_kv: p.prev_kv,
                        });
                    }
                }
                CmdType::Delete => {
                    if let Some(d) = &r.delete {
                        ops.push(Op::DeleteRange {
                            cf: cf_of(&d.cf),
                            key: &d.key,
                            range_end: &[],
                        });
                    }
                }
                CmdType::DeleteRange => {
                    if let Some(d) = &r.delete_range {
                        ops.push(Op::DeleteRange {
                            cf: cf_of(&d.cf),
                            key: &d.start_key,
                            range_end: &d.end_key,
                        });
                    }
                }
                _ => {}
            }
        }
        let results = match mvcc::apply_ops(&ctx.engine, &mut self.apply, pending, &ops) {
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
        if !respond {
            return Ok(RaftCmdResponse::default());
        }
        let mut resp = RaftCmdResponse {
            responses: Vec::with_capacity(req.requests.len()),
            ..Default::default()
        };
        let mut results = results.into_iter();
        for r in &req.requests {
            let mut out = Response {
                cmd_type: r.cmd_type,
                ..Default::default()
            };
            match cmd_type(r) {
                CmdType::Put => {
                    if let Some(OpResult::Put(prev)) = results.next() {
                        // Read only if the put asked for it (`Op::Put::prev_kv`).
                        out.put = Some(raft_cmdpb::PutResponse {
                            prev_kv: prev.as_ref().map(to_pb),
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
                // The store loop refuses commands that mix reads and writes.
                _ => {}
            }
            resp.responses.push(out);
        }
        Ok(resp)
    }
}

/// Status of a store that holds no region: the store-wide fields only.
pub(crate) fn store_status_response(
    ctx: &Ctx,
    regions: Vec<pontoonpb::RegionStatus>,
) -> RaftCmdResponse {
    let stats = ctx.engine.stats();
    RaftCmdResponse {
        admin_response: Some(raft_cmdpb::AdminResponse {
            cmd_type: AdminCmdType::Status as i32,
            status: Some(pontoonpb::StatusResponse {
                member_id: ctx.store_id,
                db_size: stats.level_bytes.iter().sum::<u64>() as i64,
                regions,
                hibernating_regions: ctx
                    .status
                    .hibernating
                    .load(std::sync::atomic::Ordering::Acquire),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The raft conf change of a `ChangePeer` command; the encoded command rides along as the
/// context (it names the peer's store and address).
fn conf_change_of(cp: &raft_cmdpb::ChangePeerRequest, req: &RaftCmdRequest) -> ConfChange {
    let mut cc = ConfChange::default();
    cc.set_change_type(
        match raft_cmdpb::ConfChangeType::try_from(cp.change_type)
            .unwrap_or(raft_cmdpb::ConfChangeType::AddNode)
        {
            raft_cmdpb::ConfChangeType::AddNode => raft::eraftpb::ConfChangeType::AddNode,
            raft_cmdpb::ConfChangeType::RemoveNode => raft::eraftpb::ConfChangeType::RemoveNode,
            raft_cmdpb::ConfChangeType::AddLearnerNode => {
                raft::eraftpb::ConfChangeType::AddLearnerNode
            }
        },
    );
    cc.node_id = cp.peer.map(|p| p.id).unwrap_or_default();
    cc.context = req.encode_to_vec().into();
    cc
}

/// Small helpers on the generated types.
pub(crate) trait WithError {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raft_msg(t: MessageType, term: u64, index: u64, commit: u64) -> raft::eraftpb::Message {
        let mut m = raft::eraftpb::Message::default();
        m.set_msg_type(t);
        m.term = term;
        m.index = index;
        m.commit = commit;
        m
    }

    fn push(o: &mut Outbox, store: u64, region: u64, to: u64, m: raft::eraftpb::Message) {
        let ack = accepting_ack(&m);
        let rm = RaftMessage {
            region_id: region,
            message: crate::raft_codec::encode(&m).into(),
            ..Default::default()
        };
        o.push(store, rm, to, false, ack);
    }

    /// (store, [(region, type, index)]) of what an outbox hands over.
    type Sent = Vec<(u64, Vec<(u64, MessageType, u64)>)>;

    fn sent(o: &mut Outbox) -> Sent {
        o.take()
            .into_iter()
            .map(|s| {
                let msgs = s
                    .messages
                    .iter()
                    .map(|rm| {
                        let m = raft::eraftpb::Message::parse_from_bytes(&rm.message)
                            .unwrap_or_default();
                        (rm.region_id, m.get_msg_type(), m.index)
                    })
                    .collect();
                (s.store_id, msgs)
            })
            .collect()
    }

    #[test]
    fn a_later_append_ack_of_the_same_region_and_term_replaces_the_earlier() {
        use MessageType::*;
        let mut o = Outbox::default();
        push(&mut o, 2, 10, 5, raft_msg(MsgAppendResponse, 3, 7, 6));
        push(&mut o, 2, 11, 8, raft_msg(MsgAppendResponse, 3, 4, 4));
        push(&mut o, 2, 10, 5, raft_msg(MsgHeartbeatResponse, 3, 0, 0));
        push(&mut o, 3, 10, 6, raft_msg(MsgAppendResponse, 3, 7, 6));
        push(&mut o, 2, 10, 5, raft_msg(MsgAppendResponse, 3, 9, 7));
        assert_eq!(o.superseded_acks, 1);
        assert_eq!(
            sent(&mut o),
            vec![
                (
                    2,
                    vec![
                        (10, MsgAppendResponse, 9),
                        (11, MsgAppendResponse, 4),
                        (10, MsgHeartbeatResponse, 0)
                    ]
                ),
                (3, vec![(10, MsgAppendResponse, 7)]),
            ]
        );
        // The next round starts afresh.
        push(&mut o, 2, 10, 5, raft_msg(MsgAppendResponse, 3, 10, 7));
        assert_eq!(sent(&mut o), vec![(2, vec![(10, MsgAppendResponse, 10)])]);
    }

    #[test]
    fn rejections_other_terms_and_older_acks_are_all_sent() {
        use MessageType::*;
        let mut o = Outbox::default();
        push(&mut o, 2, 10, 5, raft_msg(MsgAppendResponse, 3, 7, 6));
        let mut reject = raft_msg(MsgAppendResponse, 3, 8, 6);
        reject.reject = true;
        push(&mut o, 2, 10, 5, reject);
        push(&mut o, 2, 10, 5, raft_msg(MsgAppendResponse, 4, 8, 6));
        // Lower than the ack it would replace (never happens in order; kept anyway).
        push(&mut o, 2, 10, 5, raft_msg(MsgAppendResponse, 4, 6, 6));
        assert_eq!(o.superseded_acks, 0);
        let indexes: Vec<u64> = sent(&mut o)[0].1.iter().map(|m| m.2).collect();
        assert_eq!(indexes, vec![7, 8, 8, 6]);
    }
}
