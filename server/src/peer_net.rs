//! The TCP peer transport: raft messages from this store to the others, and the pieces the
//! receiving side needs to put chunked messages back together. Protocol:
//! `docs/PROTOCOL.md`, section 7 (store to store).
//!
//! Sending ([`TcpTransport`]): the store loop calls [`Transport::send_batch`], which writes
//! the batch to the connection itself (a non-blocking `send`, see `Direct`) while the
//! connection's task has nothing to write, and otherwise pushes it into the destination
//! store's bounded queue (`try_send`) and returns; a full queue or an unknown store drops
//! the message at once and returns false, so a slow or dead peer costs raft a retry, never
//! memory or a blocked store loop. Each peer store has ONE
//! outgoing connection, owned by a task on the server's io_uring runtime ([`PeerDriver`]):
//! it connects, handshakes as `Role::Store`, and then writes whatever is queued, many
//! messages per `RaftMessage` frame (one syscall for many regions' messages). Raft
//! snapshots and messages too large for a batch go out as `SnapshotChunk` streams on the
//! same connection, in queue order. Lost connections are retried with exponential backoff.
//!
//! Receiving: `service::serve_peers` accepts those connections, checks the handshake, and
//! hands the connection's reading to a [`RaftSink`] that reads connections itself (the
//! [`Node`]'s store loop, see [`crate::inbox`]), or else reads it and hands every message
//! to the sink; [`ChunkAssembler`] rebuilds chunked messages either way.
//!
//! Threads: [`TcpTransport`] is `Send + Sync` and touches only a mutex-guarded map of
//! `tokio::sync::mpsc` senders and, per peer, the `Direct` path (a duplicated socket
//! descriptor behind a mutex); everything else that owns a socket lives on the
//! single-threaded io_uring runtime (its tasks are `!Send`), reached through an unbounded
//! spawn channel.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use pontoon_client::prost::Message as _;
use pontoon_client::proto::framepb::{FrameErrorCode, Handshake, RaftMessageBatch, Role};
use pontoon_client::proto::raft_serverpb::{RaftMessage, SnapshotChunk};
use pontoon_client::{FrameBody, FrameDecoder, Limits, PROTOCOL_VERSION};
use protobuf::Message as _;
use raft::eraftpb::MessageType;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_uring::net::TcpStream;

use crate::direct::{DirectSocket, Sent};
use crate::inbox::AdoptedPeer;
use crate::node::Node;
use crate::transport::Transport;

/// Settings of the peer transport (sending side) and of the peer service (receiving side).
/// Every field says its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerNetConfig {
    /// Messages queued per peer store before [`Transport::send`] drops new ones (and
    /// returns false). Bounds memory while a peer is slow or down.
    ///
    /// Default: 4096.
    pub queue_capacity: usize,
    /// Bytes of raft messages (their encoded `message` field) queued per peer store before
    /// [`Transport::send`] drops new ones. A message is always accepted into an empty
    /// queue, so one snapshot larger than this still goes out; behind it, nothing more
    /// queues up.
    ///
    /// Default: 64 MiB.
    pub max_queued_bytes: usize,
    /// Most payload bytes in one `RaftMessage` frame; capped by the frame size limit the
    /// receiver announced in its `HandshakeAck`.
    ///
    /// Default: 4 MiB.
    pub batch_bytes: usize,
    /// Size of the data piece in one `SnapshotChunk` frame. Raft snapshots, and any message
    /// whose encoded raft message is larger than this, travel as chunk streams. Capped at
    /// half the receiver's frame size limit.
    ///
    /// Default: 1 MiB.
    pub chunk_bytes: usize,
    /// Largest chunk stream the receiving side reassembles (the sum of its data pieces). A
    /// larger stream is dropped (raft sends the snapshot again later).
    ///
    /// Default: 1 GiB.
    pub max_snapshot_bytes: u64,
    /// First delay before reconnecting to a peer; it doubles per failed attempt.
    ///
    /// Default: 50 ms.
    pub backoff_min: Duration,
    /// Longest delay between reconnection attempts.
    ///
    /// Default: 2 s.
    pub backoff_max: Duration,
    /// A write to a peer that makes no progress for this long counts as a lost connection.
    ///
    /// Default: 30 s.
    pub write_timeout: Duration,
}

impl PeerNetConfig {
    /// Default for [`PeerNetConfig::queue_capacity`]: 4096 messages.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
    /// Default for [`PeerNetConfig::max_queued_bytes`]: 64 MiB.
    pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 << 20;
    /// Default for [`PeerNetConfig::batch_bytes`]: 4 MiB.
    pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;
    /// Default for [`PeerNetConfig::chunk_bytes`]: 1 MiB.
    pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;
    /// Default for [`PeerNetConfig::max_snapshot_bytes`]: 1 GiB.
    pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 1 << 30;
}

impl Default for PeerNetConfig {
    fn default() -> Self {
        PeerNetConfig {
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            max_queued_bytes: Self::DEFAULT_MAX_QUEUED_BYTES,
            batch_bytes: Self::DEFAULT_BATCH_BYTES,
            chunk_bytes: Self::DEFAULT_CHUNK_BYTES,
            max_snapshot_bytes: Self::DEFAULT_MAX_SNAPSHOT_BYTES,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Where the peer service delivers the raft messages it receives.
pub trait RaftSink: Send + Sync + 'static {
    /// The cluster this store belongs to; handshakes naming another are refused.
    fn cluster_id(&self) -> u64;
    /// This store's id; a handshake claiming it is refused.
    fn store_id(&self) -> u64;
    /// Hands one received message over. False means the receiver stopped (the connection
    /// is then closed).
    fn step(&self, msg: RaftMessage) -> bool;
    /// Hands the messages of one frame over together. False as for [`RaftSink::step`].
    fn step_batch(&self, msgs: Vec<RaftMessage>) -> bool {
        msgs.into_iter().all(|m| self.step(m))
    }
    /// Takes over reading a handshaken connection (see [`crate::inbox`]), or gives it back
    /// (the default): the network thread then goes on reading it and stepping its messages.
    fn adopt(&self, peer: Box<AdoptedPeer>) -> Result<(), Box<AdoptedPeer>> {
        Err(peer)
    }
}

impl RaftSink for Node {
    fn cluster_id(&self) -> u64 {
        Node::cluster_id(self)
    }

    fn store_id(&self) -> u64 {
        Node::store_id(self)
    }

    fn step(&self, msg: RaftMessage) -> bool {
        Node::step(self, msg)
    }

    fn step_batch(&self, msgs: Vec<RaftMessage>) -> bool {
        Node::step_batch(self, msgs)
    }

    fn adopt(&self, peer: Box<AdoptedPeer>) -> Result<(), Box<AdoptedPeer>> {
        Node::adopt(self, peer);
        Ok(())
    }
}

/// How many messages and bytes wait in one peer's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Messages queued.
    pub messages: usize,
    /// Bytes of their encoded raft messages.
    pub bytes: usize,
}

/// State one peer's queue shares between `send` (any thread) and its connection task.
struct PeerShared {
    store_id: u64,
    /// Where to connect; read afresh on every attempt so [`TcpTransport::set_address`]
    /// takes effect at the next reconnect.
    addr: Mutex<String>,
    /// Cuts a reconnection backoff short when the address changes.
    wake: Notify,
    /// Sum of `message.len()` over the queued messages.
    queued_bytes: AtomicUsize,
    /// How many messages are queued.
    queued_messages: AtomicUsize,
    /// The sending thread's own path to the connection (see [`Direct`]).
    direct: Mutex<Direct>,
}

/// The sender's direct path to an established connection ([`crate::direct`]): while the
/// connection task has nothing to write, the store loop encodes a round's batch as one
/// frame and sends it itself. What the socket does not take at once (its buffer is full:
/// the peer is slow) goes to the queue as raw bytes, and the task writes from then on
/// until it has caught up.
#[derive(Default)]
struct Direct {
    socket: DirectSocket,
    /// The frame size limit of the connection.
    max_frame: u32,
    /// Most payload bytes in one batch frame (as [`BatchWriter`]'s budget).
    budget: usize,
    /// Messages larger than this travel as chunk streams (as [`BatchWriter`]'s chunk).
    chunk: usize,
    /// Encoding buffer, kept between batches.
    buf: Vec<u8>,
    /// Counts the connections the direct path was opened on: the rest of a frame belongs
    /// to the connection it was begun on, and is dropped if that one is gone.
    connection: u64,
}

/// What a direct write came to.
enum DirectWrite {
    /// All of it is on the socket.
    Done,
    /// Not attempted (not connected, the task writes, or not a plain batch): queue it.
    Queue(Vec<RaftMessage>),
    /// The socket took part of the frame (or nothing): these bytes must follow first.
    Rest(Vec<u8>),
    /// The socket failed; the connection task finds out on its own.
    Failed,
}

impl Direct {
    /// Writes `msgs` as one frame if the direct path is open and they make a plain batch
    /// (no snapshot, nothing to chunk, within one frame).
    fn write(&mut self, msgs: Vec<RaftMessage>) -> DirectWrite {
        if !self.socket.is_open() {
            return DirectWrite::Queue(msgs);
        }
        let mut total = 0usize;
        for m in &msgs {
            if m.message.len() > self.chunk || is_snapshot(&m.message) {
                return DirectWrite::Queue(msgs);
            }
            let len = m.encoded_len();
            total += 1 + pontoon_client::prost::length_delimiter_len(len) + len;
        }
        if total > self.budget {
            return DirectWrite::Queue(msgs);
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let body = FrameBody::RaftMessage(RaftMessageBatch { messages: msgs });
        let outcome = match body.encode(0, self.max_frame, &mut buf) {
            Ok(()) => match self.socket.send(&buf) {
                Sent::All => DirectWrite::Done,
                Sent::From(at) => DirectWrite::Rest(buf[at..].to_vec()),
                Sent::Failed => DirectWrite::Failed,
            },
            Err(e) => {
                // The size check above keeps this from happening; raft resends.
                log::warn!("dropping a batch of raft messages: {e}");
                DirectWrite::Done
            }
        };
        self.buf = buf;
        outcome
    }
}

/// An item of a peer's queue.
enum Item {
    /// A store-loop round's messages for the peer.
    Batch(Vec<RaftMessage>),
    /// The rest of a frame a direct write left unfinished on connection `.0`; written
    /// before anything else, and only on that connection (on a new one it would be a torn
    /// frame; the messages in it are lost with the old connection, and raft resends).
    Rest(u64, Vec<u8>),
}

/// The queue holds batches: a store-loop round's messages for one store travel together
/// ([`Transport::send_batch`]); a single [`Transport::send`] is a batch of one.
impl PeerShared {
    /// Takes `count` messages of `bytes` bytes off the queue's accounting.
    fn release(&self, count: usize, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.queued_messages.fetch_sub(count, Ordering::Relaxed);
    }
}

struct PeerEntry {
    tx: mpsc::Sender<Item>,
    shared: Arc<PeerShared>,
}

/// A new peer's queue on its way to the runtime, which spawns its connection task.
struct PeerTask {
    rx: mpsc::Receiver<Item>,
    shared: Arc<PeerShared>,
}

/// The parameters every connection task of one transport shares.
#[derive(Debug, Clone, Copy)]
struct Local {
    store_id: u64,
    cluster_id: u64,
    limits: Limits,
    config: PeerNetConfig,
}

/// The sending half of the peer network: a [`Transport`] over one TCP connection per peer
/// store. Created together with its [`PeerDriver`], which must be run on the io_uring
/// runtime for anything to leave the queues.
pub struct TcpTransport {
    local: Local,
    peers: Mutex<HashMap<u64, PeerEntry>>,
    spawn: mpsc::UnboundedSender<PeerTask>,
}

/// The runtime half of a [`TcpTransport`]: spawns and owns the connection tasks. Run it
/// with [`PeerDriver::run`] on the tokio-uring runtime.
pub struct PeerDriver {
    local: Local,
    spawn: mpsc::UnboundedReceiver<PeerTask>,
}

impl TcpTransport {
    /// A transport for store `store_id` of cluster `cluster_id` reaching the stores in
    /// `peers` (store id -> `host:port` of its peer listener; this store's own entry, if
    /// present, is ignored), with [`PeerNetConfig::default`].
    pub fn new(
        store_id: u64,
        cluster_id: u64,
        limits: Limits,
        peers: HashMap<u64, String>,
    ) -> (TcpTransport, PeerDriver) {
        Self::with_config(
            store_id,
            cluster_id,
            limits,
            peers,
            PeerNetConfig::default(),
        )
    }

    /// [`TcpTransport::new`] with explicit settings.
    pub fn with_config(
        store_id: u64,
        cluster_id: u64,
        limits: Limits,
        peers: HashMap<u64, String>,
        config: PeerNetConfig,
    ) -> (TcpTransport, PeerDriver) {
        let local = Local {
            store_id,
            cluster_id,
            limits,
            config,
        };
        let (spawn, spawn_rx) = mpsc::unbounded_channel();
        let transport = TcpTransport {
            local,
            peers: Mutex::new(HashMap::new()),
            spawn,
        };
        for (id, addr) in peers {
            transport.add_peer(id, addr);
        }
        (
            transport,
            PeerDriver {
                local,
                spawn: spawn_rx,
            },
        )
    }

    /// [`Transport::set_address`]: a new store gets a queue and a connection task; a known
    /// one reconnects to the new address the next time it (re)connects.
    fn add_peer(&self, store_id: u64, addr: String) {
        if store_id == self.local.store_id || store_id == 0 {
            log::debug!("not adding a peer connection to store {store_id} ({addr})");
            return;
        }
        let mut peers = self.peers.lock();
        if let Some(entry) = peers.get(&store_id) {
            let mut current = entry.shared.addr.lock();
            if *current != addr {
                log::info!("store {store_id} moves from {current} to {addr}");
                *current = addr;
                entry.shared.wake.notify_one();
            }
            return;
        }
        log::info!("peer store {store_id} is at {addr}");
        let (tx, rx) = mpsc::channel(self.local.config.queue_capacity.max(1));
        let shared = Arc::new(PeerShared {
            store_id,
            addr: Mutex::new(addr),
            wake: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
            queued_messages: AtomicUsize::new(0),
            direct: Mutex::new(Direct::default()),
        });
        if self
            .spawn
            .send(PeerTask {
                rx,
                shared: shared.clone(),
            })
            .is_err()
        {
            // The driver is gone (the server is stopping): sends to this store fail at
            // once because the queue's receiver was dropped with the task.
            log::debug!("the peer driver stopped; store {store_id} stays unreachable");
        }
        peers.insert(store_id, PeerEntry { tx, shared });
    }

    /// The address known for `store_id`, if any.
    pub fn address(&self, store_id: u64) -> Option<String> {
        self.peers
            .lock()
            .get(&store_id)
            .map(|e| e.shared.addr.lock().clone())
    }

    /// What waits in `store_id`'s queue, or `None` for an unknown store.
    pub fn queued(&self, store_id: u64) -> Option<QueueStats> {
        self.peers.lock().get(&store_id).map(|e| QueueStats {
            messages: e.shared.queued_messages.load(Ordering::Relaxed),
            bytes: e.shared.queued_bytes.load(Ordering::Relaxed),
        })
    }
}

impl Transport for TcpTransport {
    /// Sets where store `store_id` listens for peers (`host:port`). A new store gets a
    /// queue and a connection task; for a known store the new address is used from the
    /// next (re)connect on, and a pending backoff is cut short. This store's own id and 0
    /// are ignored.
    fn set_address(&self, store_id: u64, addr: &str) {
        self.add_peer(store_id, addr.to_string());
    }

    fn send(&self, msg: RaftMessage) -> bool {
        let store_id = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or(0);
        self.send_batch(store_id, vec![msg])
    }

    /// Queues the batch as one item: the connection task writes it (and whatever else is
    /// queued) in one go. The whole batch is refused if the queue is full, by count or by
    /// bytes (an empty queue takes any batch, so a large snapshot still goes out).
    fn send_batch(&self, store_id: u64, msgs: Vec<RaftMessage>) -> bool {
        if msgs.is_empty() {
            return true;
        }
        let peers = self.peers.lock();
        let Some(entry) = peers.get(&store_id) else {
            log::debug!("no address for store {store_id}: dropping raft messages");
            return false;
        };
        let mut direct = entry.shared.direct.lock();
        let msgs = match direct.write(msgs) {
            DirectWrite::Done => return true,
            DirectWrite::Failed => {
                // The connection task sees the failure on its reading side and reconnects.
                direct.socket.close();
                return false;
            }
            DirectWrite::Rest(rest) => {
                // The queue is empty (the task was not writing): this always fits.
                direct.socket.task_writes = true;
                return match entry.tx.try_send(Item::Rest(direct.connection, rest)) {
                    Ok(()) => true,
                    Err(_) => {
                        // Only if the task is gone; the socket goes with it.
                        direct.socket.close();
                        false
                    }
                };
            }
            DirectWrite::Queue(msgs) => msgs,
        };
        // From here the task writes until it finds the queue empty again.
        direct.socket.task_writes = true;
        let len: usize = msgs.iter().map(|m| m.message.len()).sum();
        let count = msgs.len();
        let before = entry.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > self.local.config.max_queued_bytes {
            entry.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            log::debug!(
                "queue to store {store_id} holds {before} bytes: dropping {count} messages"
            );
            return false;
        }
        let queued = entry
            .shared
            .queued_messages
            .fetch_add(count, Ordering::Relaxed);
        if queued > 0 && queued + count > self.local.config.queue_capacity {
            entry.shared.release(count, len);
            log::debug!("queue to store {store_id} holds {queued} messages: dropping {count}");
            return false;
        }
        // Batches hold at least one message each, so the channel (as long as the count
        // limit) is never what refuses one.
        match entry.tx.try_send(Item::Batch(msgs)) {
            Ok(()) => true,
            Err(e) => {
                entry.shared.release(count, len);
                log::debug!("queue to store {store_id} refused {count} messages: {e}");
                false
            }
        }
    }
}

impl PeerDriver {
    /// Runs every peer connection until `shutdown` turns true (or its sender is dropped):
    /// spawns a connection task for each peer store known now and for each one
    /// [`Transport::set_address`] adds later, then waits for them to close. Must run on
    /// the tokio-uring runtime.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        loop {
            tokio::select! {
                task = self.spawn.recv() => match task {
                    Some(task) => {
                        let conn = PeerConn::new(self.local, task.shared);
                        tasks.push(tokio_uring::spawn(conn.run(task.rx, shutdown.clone())));
                    }
                    // The transport is gone: its queues closed, so the tasks end by
                    // themselves.
                    None => break,
                },
                _ = stopped(&mut shutdown) => break,
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Resolves once `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Why a connection attempt failed. The `Display` text is what the log says.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0:?} is not a HOST:PORT address")]
    BadAddress(String),
    #[error("cannot connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("it closed the connection during the handshake")]
    Closed,
    #[error("it refused this store: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("it answered the handshake as store {found} of cluster {cluster}, but store {expected} of cluster {our_cluster} was expected")]
    WrongPeer {
        found: u64,
        cluster: u64,
        expected: u64,
        our_cluster: u64,
    },
    #[error("protocol error during the handshake: {0}")]
    Protocol(String),
}

impl ConnectError {
    /// True if the peer is up but will not talk to us: configuration, not network, so it
    /// is logged as an error.
    fn is_refusal(&self) -> bool {
        matches!(
            self,
            ConnectError::Refused { .. } | ConnectError::WrongPeer { .. }
        )
    }
}

/// Why an established connection ended.
enum Ended {
    /// The connection failed or the remote closed it; reconnect.
    Lost(String),
    /// The remote closed it for being idle; reconnect quietly.
    Idle,
    /// The remote store is stopping: an orderly outage, reconnect with backoff.
    Stopping,
    /// The server is stopping.
    Shutdown,
    /// The transport was dropped; nothing will ever be queued again.
    Closed,
}

/// What the reader half reports when it ends.
enum ReaderEnd {
    Closed(String),
    Remote { code: i32, message: String },
}

/// An established, handshaken connection.
struct Established {
    stream: Rc<TcpStream>,
    /// Frame size limit both sides accept.
    max_frame: u32,
    /// Ping after this long without a frame, to stay under the remote's idle timeout.
    ping_every: Duration,
    decoder: FrameDecoder,
}

/// One peer store's connection task.
struct PeerConn {
    local: Local,
    peer: Arc<PeerShared>,
    /// When the current outage began (`None` while connected or before the first attempt).
    outage: Option<Instant>,
    attempts: u32,
    /// The last failure logged at warn/error level in this outage (logged once per
    /// outage, and again only if the reason changes).
    last_logged: Option<String>,
}

impl PeerConn {
    fn new(local: Local, peer: Arc<PeerShared>) -> PeerConn {
        PeerConn {
            local,
            peer,
            outage: None,
            attempts: 0,
            last_logged: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Item>, mut shutdown: watch::Receiver<bool>) {
        let cfg = self.local.config;
        let mut backoff = cfg.backoff_min;
        let id = self.peer.store_id;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let addr = self.peer.addr.lock().clone();
            let attempt = tokio::select! {
                r = self.connect(&addr) => r,
                _ = stopped(&mut shutdown) => return,
            };
            match attempt {
                Ok(conn) => {
                    match self.outage.take() {
                        Some(since) => log::info!(
                            "connected to store {id} at {addr} again after {:.1?} ({} attempts)",
                            since.elapsed(),
                            self.attempts
                        ),
                        None => log::info!("connected to store {id} at {addr}"),
                    }
                    self.attempts = 0;
                    self.last_logged = None;
                    let started = Instant::now();
                    let ended = self.pump(conn, &mut rx, &mut shutdown).await;
                    // A connection that held for a while proves the peer healthy again;
                    // one that dies at once keeps the backoff growing.
                    if started.elapsed() >= cfg.backoff_max {
                        backoff = cfg.backoff_min;
                    }
                    match ended {
                        Ended::Shutdown | Ended::Closed => return,
                        Ended::Idle => {
                            log::debug!("store {id} closed our idle connection; reconnecting");
                            continue;
                        }
                        Ended::Stopping => {
                            log::info!(
                                "store {id} at {addr} is stopping; reconnecting until it is back"
                            );
                            self.outage = Some(Instant::now());
                            self.last_logged = None;
                        }
                        Ended::Lost(why) => {
                            log::warn!(
                                "lost the connection to store {id} at {addr}: {why}; reconnecting"
                            );
                            self.outage = Some(Instant::now());
                            self.last_logged = Some(why);
                        }
                    }
                }
                Err(e) => self.note_failure(&addr, &e),
            }
            self.attempts += 1;
            let delay = jitter(backoff);
            backoff = (backoff * 2).min(cfg.backoff_max);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // The address changed: try it now.
                _ = self.peer.wake.notified() => backoff = cfg.backoff_min,
                _ = stopped(&mut shutdown) => return,
            }
        }
    }

    /// Logs a failed attempt: the first failure of an outage at warn (or at error for a
    /// refusal), a refusal with a new reason at error; everything else at debug, so a dead
    /// peer costs one line per outage however often it is retried.
    fn note_failure(&mut self, addr: &str, e: &ConnectError) {
        let id = self.peer.store_id;
        let text = e.to_string();
        let first = self.outage.is_none();
        if first {
            self.outage = Some(Instant::now());
        }
        let new_refusal = e.is_refusal() && self.last_logged.as_deref() != Some(text.as_str());
        if !first && !new_refusal {
            log::debug!("store {id} at {addr} still unreachable: {text}");
            return;
        }
        if e.is_refusal() {
            log::error!(
                "store {id} at {addr}: {text}; check that both stores run with the same --initial-cluster / --cluster-id; retrying with backoff"
            );
        } else {
            log::warn!("store {id} at {addr} is unreachable: {text}; retrying with backoff");
        }
        self.last_logged = Some(text);
    }

    /// Connects and handshakes.
    async fn connect(&self, addr: &str) -> Result<Established, ConnectError> {
        let limits = self.local.limits;
        let sock: SocketAddr = addr
            .parse()
            .map_err(|_| ConnectError::BadAddress(addr.to_string()))?;
        let stream = tokio::time::timeout(limits.handshake_timeout, TcpStream::connect(sock))
            .await
            .map_err(|_| ConnectError::Timeout(limits.handshake_timeout))??;
        let _ = stream.set_nodelay(true);
        let hello = FrameBody::Handshake(Handshake {
            protocol_version: PROTOCOL_VERSION.into(),
            cluster_id: self.local.cluster_id,
            role: Role::Store as i32,
            store_id: self.local.store_id,
            client_name: format!("pontoon store {}", self.local.store_id),
        });
        let mut buf = Vec::new();
        hello
            .encode(0, limits.max_frame_size_bytes, &mut buf)
            .map_err(|e| ConnectError::Protocol(e.to_string()))?;
        let (res, _) = stream.write_all(buf).await;
        res?;
        let mut decoder = FrameDecoder::new(&limits);
        let answer = tokio::time::timeout(limits.handshake_timeout, async {
            let mut buf = vec![0u8; 4096];
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        return FrameBody::decode(&frame)
                            .map_err(|e| ConnectError::Protocol(e.to_string()))
                    }
                    Ok(None) => {}
                    Err(e) => return Err(ConnectError::Protocol(e.to_string())),
                }
                let (res, b) = stream.read(buf).await;
                buf = b;
                match res {
                    Ok(0) => return Err(ConnectError::Closed),
                    Ok(n) => decoder.feed(buf.get(..n).unwrap_or_default()),
                    Err(e) => return Err(ConnectError::Io(e)),
                }
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout(limits.handshake_timeout))??;
        let ack = match answer {
            FrameBody::HandshakeAck(ack) => ack,
            FrameBody::Error(e) => {
                return Err(ConnectError::Refused {
                    code: code_name(e.code),
                    message: e.message,
                })
            }
            other => {
                return Err(ConnectError::Protocol(format!(
                    "expected a HandshakeAck, got {}",
                    other.frame_type().name()
                )))
            }
        };
        if ack.cluster_id != self.local.cluster_id || ack.store_id != self.peer.store_id {
            return Err(ConnectError::WrongPeer {
                found: ack.store_id,
                cluster: ack.cluster_id,
                expected: self.peer.store_id,
                our_cluster: self.local.cluster_id,
            });
        }
        let max_frame = match ack.max_frame_size_bytes {
            0 => limits.max_frame_size_bytes,
            theirs => theirs.min(limits.max_frame_size_bytes),
        };
        let idle = match ack.idle_timeout_ms {
            0 => limits.idle_timeout,
            ms => Duration::from_millis(ms),
        };
        Ok(Established {
            stream: Rc::new(stream),
            max_frame,
            ping_every: (idle / 3).max(Duration::from_millis(10)),
            decoder,
        })
    }

    /// Writes queued messages until the connection ends.
    async fn pump(
        &self,
        conn: Established,
        rx: &mut mpsc::Receiver<Item>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        let (end_tx, mut end_rx) = oneshot::channel();
        let reader = tokio_uring::spawn(read_remote(conn.stream.clone(), conn.decoder, end_tx));
        let mut w = BatchWriter::new(&self.local.config, conn.stream.clone(), conn.max_frame);
        // The senders get the direct path; this task writes first (what queued meanwhile).
        let connection = {
            let mut d = self.peer.direct.lock();
            d.socket.open(&conn.stream);
            d.max_frame = conn.max_frame;
            d.budget = w.budget;
            d.chunk = w.chunk;
            d.connection += 1;
            d.connection
        };
        let ended = loop {
            // With nothing queued, hand the writing back to the senders (under the lock
            // they queue under, so nothing slips in between the check and the hand-over).
            let queued = {
                let mut d = self.peer.direct.lock();
                match rx.try_recv() {
                    Ok(item) => Some(item),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        d.socket.task_writes = false;
                        None
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break Ended::Closed,
                }
            };
            let first = match queued {
                Some(item) => item,
                None => tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => m,
                        None => break Ended::Closed,
                    },
                    end = &mut end_rx => break match end {
                        Ok(ReaderEnd::Remote { code, .. })
                            if code == FrameErrorCode::IdleTimeout as i32 => Ended::Idle,
                        Ok(ReaderEnd::Remote { code, .. })
                            if code == FrameErrorCode::ShuttingDown as i32 => Ended::Stopping,
                        Ok(ReaderEnd::Remote { code, message }) => {
                            Ended::Lost(format!("it sent {}: {message}", code_name(code)))
                        }
                        Ok(ReaderEnd::Closed(why)) => Ended::Lost(why),
                        Err(_) => Ended::Lost("the reader stopped".into()),
                    },
                    _ = stopped(shutdown) => break Ended::Shutdown,
                    _ = tokio::time::sleep(conn.ping_every) => {
                        // The ping is this task's write: take the socket from the senders.
                        self.peer.direct.lock().socket.task_writes = true;
                        if let Err(why) = w.ping().await {
                            break Ended::Lost(why);
                        }
                        continue;
                    }
                },
            };
            // A peer that stops reading must not hold up a shutdown for the write timeout;
            // a cancelled io_uring write keeps its buffer until the kernel lets go.
            tokio::select! {
                r = self.write_queued(&mut w, first, rx, connection) => if let Err(why) = r {
                    break Ended::Lost(why);
                },
                _ = stopped(shutdown) => break Ended::Shutdown,
            }
        };
        self.peer.direct.lock().socket.close();
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        // The shutdown above ends the reader's pending read.
        let _ = reader.await;
        ended
    }

    /// Writes `first` and everything queued behind it, batched, in queue order.
    async fn write_queued(
        &self,
        w: &mut BatchWriter,
        first: Item,
        rx: &mut mpsc::Receiver<Item>,
        connection: u64,
    ) -> Result<(), String> {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Batch(batch) => {
                    // The whole batch leaves the queue's accounting now: if the connection
                    // fails half way, the rest is dropped with it (raft resends).
                    let bytes: usize = batch.iter().map(|m| m.message.len()).sum();
                    self.peer.release(batch.len(), bytes);
                    for m in batch {
                        w.push(m).await?;
                    }
                }
                Item::Rest(on, bytes) if on == connection => w.push_raw(&bytes),
                Item::Rest(..) => {}
            }
            if w.pending() >= w.budget {
                break;
            }
            next = rx.try_recv().ok();
        }
        w.flush().await
    }
}

/// Reads what the remote sends on an outgoing connection: nothing but Pongs when all is
/// well, an Error frame when it closes us. Reports how the connection ended.
async fn read_remote(
    stream: Rc<TcpStream>,
    mut decoder: FrameDecoder,
    end: oneshot::Sender<ReaderEnd>,
) {
    let mut buf = vec![0u8; 4096];
    let why = 'read: loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => match FrameBody::decode(&frame) {
                    Ok(FrameBody::Error(e)) => {
                        break 'read ReaderEnd::Remote {
                            code: e.code,
                            message: e.message,
                        }
                    }
                    Ok(FrameBody::Pong(_)) => {}
                    Ok(other) => {
                        log::debug!("ignoring a {} frame from a peer", other.frame_type().name())
                    }
                    Err(e) => break 'read ReaderEnd::Closed(format!("undecodable frame: {e}")),
                },
                Ok(None) => break,
                Err(e) => break 'read ReaderEnd::Closed(format!("bad frame: {e}")),
            }
        }
        let (res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) => break ReaderEnd::Closed("it closed the connection".into()),
            Ok(n) => decoder.feed(buf.get(..n).unwrap_or_default()),
            Err(e) => break ReaderEnd::Closed(format!("read failed: {e}")),
        }
    };
    let _ = end.send(why);
}

/// Turns messages into frames (one `RaftMessage` batch frame for many small messages,
/// `SnapshotChunk` streams for big ones) and writes them.
struct BatchWriter {
    stream: Rc<TcpStream>,
    max_frame: u32,
    /// Bytes buffered before a write is issued; also the most a batch frame holds.
    budget: usize,
    /// Data bytes per chunk frame.
    chunk: usize,
    write_timeout: Duration,
    /// Encoded frames waiting to be written.
    out: Vec<u8>,
    /// Messages of the batch frame being built, and its encoded size.
    batch: Vec<RaftMessage>,
    batch_len: usize,
    next_stream: u64,
}

impl BatchWriter {
    fn new(cfg: &PeerNetConfig, stream: Rc<TcpStream>, max_frame: u32) -> BatchWriter {
        let frame = max_frame as usize;
        BatchWriter {
            stream,
            max_frame,
            budget: cfg.batch_bytes.clamp(1, frame.max(1)),
            // Half a frame leaves room for the chunk's RaftMessage and framing.
            chunk: cfg.chunk_bytes.clamp(1, (frame / 2).max(1)),
            write_timeout: cfg.write_timeout,
            out: Vec::new(),
            batch: Vec::new(),
            batch_len: 0,
            next_stream: 1,
        }
    }

    /// Bytes waiting to be written (encoded frames and the open batch).
    fn pending(&self) -> usize {
        self.out.len() + self.batch_len
    }

    async fn push(&mut self, m: RaftMessage) -> Result<(), String> {
        if m.message.len() > self.chunk || is_snapshot(&m.message) {
            self.close_batch();
            return self.push_chunked(m).await;
        }
        let len = m.encoded_len();
        // One `messages` field of RaftMessageBatch: tag byte, length varint, message.
        let item = 1 + pontoon_client::prost::length_delimiter_len(len) + len;
        if self.batch_len + item > self.budget {
            self.close_batch();
            if self.out.len() >= self.budget {
                self.write_out().await?;
            }
        }
        if item > self.budget {
            // Only with a frame limit far below the chunk size; raft sends it again.
            log::warn!("dropping a {item}-byte raft message: larger than a frame");
            return Ok(());
        }
        self.batch.push(m);
        self.batch_len += item;
        Ok(())
    }

    /// Appends bytes already encoded (the rest of a frame a direct write began), after
    /// the open batch.
    fn push_raw(&mut self, bytes: &[u8]) {
        self.close_batch();
        self.out.extend_from_slice(bytes);
    }

    /// Encodes the open batch as one frame into `out`.
    fn close_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let body = FrameBody::RaftMessage(RaftMessageBatch {
            messages: std::mem::take(&mut self.batch),
        });
        self.batch_len = 0;
        if let Err(e) = body.encode(0, self.max_frame, &mut self.out) {
            // The size estimate above keeps this from happening; raft resends.
            log::warn!("dropping a batch of raft messages: {e}");
        }
    }

    /// Sends `m` as a chunk stream. A raft snapshot's data is moved out of its message and
    /// sent in pieces after it; any other large message is sent whole as the data, with an
    /// empty `message` in the first chunk.
    async fn push_chunked(&mut self, mut m: RaftMessage) -> Result<(), String> {
        let data = match split_snapshot(&m.message) {
            Some((head, data)) => {
                m.message = head.into();
                data
            }
            None => std::mem::take(&mut m.message),
        };
        let stream_id = self.next_stream;
        self.next_stream += 1;
        let mut head = Some(m);
        let mut offset = 0;
        loop {
            let end = (offset + self.chunk).min(data.len());
            let chunk = SnapshotChunk {
                message: head.take(),
                data: data.slice(offset..end).to_vec(),
                last: end == data.len(),
            };
            if let Err(e) =
                FrameBody::SnapshotChunk(chunk).encode(stream_id, self.max_frame, &mut self.out)
            {
                // Nothing of the stream is lost half-way: only the first chunk can be this
                // large (an oversized message head); raft sends it again.
                log::warn!("dropping a chunked raft message: {e}");
                return Ok(());
            }
            if self.out.len() >= self.budget {
                self.write_out().await?;
            }
            offset = end;
            if offset >= data.len() {
                return Ok(());
            }
        }
    }

    async fn ping(&mut self) -> Result<(), String> {
        if let Err(e) = FrameBody::Ping(Bytes::new()).encode(0, self.max_frame, &mut self.out) {
            return Err(format!("cannot encode a ping: {e}"));
        }
        self.write_out().await
    }

    async fn flush(&mut self) -> Result<(), String> {
        self.close_batch();
        self.write_out().await
    }

    async fn write_out(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.out);
        match tokio::time::timeout(self.write_timeout, self.stream.write_all(buf)).await {
            Ok((Ok(()), mut buf)) => {
                buf.clear();
                self.out = buf;
                Ok(())
            }
            Ok((Err(e), _)) => Err(format!("write failed: {e}")),
            Err(_) => Err(format!(
                "a write made no progress for {:?}",
                self.write_timeout
            )),
        }
    }
}

/// True if `message` (an encoded `eraftpb.Message`) is a `MsgSnapshot`. Looks at the first
/// field only: rust-protobuf writes fields in number order and `msg_type` is field 1 (a
/// missing field 1 means `MsgHup`). Misjudging costs nothing but the choice of frame.
fn is_snapshot(message: &[u8]) -> bool {
    match message {
        [0x08, t, ..] => u64::from(*t) == MessageType::MsgSnapshot as u64,
        _ => false,
    }
}

/// Splits an encoded `MsgSnapshot` into the message without its snapshot data, and the
/// data. `None` if it is no snapshot or does not decode.
fn split_snapshot(message: &[u8]) -> Option<(Vec<u8>, Bytes)> {
    if !is_snapshot(message) {
        return None;
    }
    let mut msg = raft::eraftpb::Message::parse_from_bytes(message).ok()?;
    let data = msg.mut_snapshot().take_data();
    let head = msg.write_to_bytes().ok()?;
    Some((head, data))
}

fn code_name(code: i32) -> String {
    match FrameErrorCode::try_from(code) {
        Ok(c) => format!("{c:?}"),
        Err(_) => format!("error code {code}"),
    }
}

/// A random delay within 10% of `d`, so stores that lost each other at the same moment do
/// not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    // RandomState seeds each hasher differently; no RNG dependency needed for this.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let percent = 90 + (r % 21) as u32;
    d * percent / 100
}

/// Why a chunk stream was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A continuation chunk arrived with no stream open.
    #[error("chunk of stream {stream} arrived without its first chunk")]
    Orphan {
        /// The chunk's stream id (frame request id).
        stream: u64,
    },
    /// A chunk of another stream arrived while one was open (without a first chunk).
    #[error("chunk of stream {found} arrived while stream {open} was open")]
    WrongStream {
        /// The open stream.
        open: u64,
        /// The chunk's stream.
        found: u64,
    },
    /// A new stream began before the open one ended; both are dropped.
    #[error(
        "stream {open} was interrupted by the start of stream {new} ({received} bytes dropped)"
    )]
    Interrupted {
        /// The dropped stream.
        open: u64,
        /// The stream that began.
        new: u64,
        /// Data bytes the dropped stream had received.
        received: u64,
    },
    /// The stream's data went past the configured maximum.
    #[error("stream {stream} exceeds {max} bytes")]
    TooLarge {
        /// The stream.
        stream: u64,
        /// [`PeerNetConfig::max_snapshot_bytes`].
        max: u64,
    },
    /// The first chunk's raft message does not decode, or the data does not fit it.
    #[error("stream {stream}: {reason}")]
    BadMessage {
        /// The stream.
        stream: u64,
        /// What is wrong.
        reason: String,
    },
}

/// An open chunk stream.
struct OpenStream {
    id: u64,
    head: RaftMessage,
    /// The decoded snapshot message when the stream carries snapshot data; `None` when the
    /// data is the whole encoded raft message.
    snapshot: Option<raft::eraftpb::Message>,
    data: Vec<u8>,
}

/// Rebuilds raft messages from `SnapshotChunk` streams on one connection. Bounded: a
/// stream is dropped once its data passes [`PeerNetConfig::max_snapshot_bytes`]. Streams
/// on one connection follow each other; a first chunk while one is open drops both.
pub struct ChunkAssembler {
    max_bytes: u64,
    open: Option<OpenStream>,
    /// A stream being dropped: its remaining chunks are ignored silently.
    discarding: Option<u64>,
}

impl ChunkAssembler {
    /// An assembler refusing streams of more than `max_bytes` of data.
    pub fn new(max_bytes: u64) -> ChunkAssembler {
        ChunkAssembler {
            max_bytes,
            open: None,
            discarding: None,
        }
    }

    /// Data bytes held for the open stream.
    pub fn buffered(&self) -> usize {
        self.open.as_ref().map_or(0, |s| s.data.len())
    }

    /// Takes the chunk with stream id `stream` (its frame's request id). Returns the
    /// rebuilt message when this was the last chunk, `Ok(None)` while the stream goes on,
    /// or why (part of) a stream was dropped. Never panics, whatever the input.
    pub fn push(
        &mut self,
        stream: u64,
        chunk: SnapshotChunk,
    ) -> Result<Option<RaftMessage>, ChunkError> {
        let SnapshotChunk {
            message,
            data,
            last,
        } = chunk;
        if let Some(head) = message {
            if let Some(old) = self.open.take() {
                // A sender never interleaves streams on one connection: both are suspect.
                self.discard(stream, last);
                return Err(ChunkError::Interrupted {
                    open: old.id,
                    new: stream,
                    received: old.data.len() as u64,
                });
            }
            self.discarding = None;
            let snapshot = if head.message.is_empty() {
                None
            } else {
                match raft::eraftpb::Message::parse_from_bytes(&head.message) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        self.discard(stream, last);
                        return Err(ChunkError::BadMessage {
                            stream,
                            reason: format!("the raft message does not decode: {e}"),
                        });
                    }
                }
            };
            self.open = Some(OpenStream {
                id: stream,
                head,
                snapshot,
                data: Vec::new(),
            });
        } else if self.discarding == Some(stream) {
            if last {
                self.discarding = None;
            }
            return Ok(None);
        }
        let Some(open) = self.open.as_mut() else {
            self.discard(stream, last);
            return Err(ChunkError::Orphan { stream });
        };
        if open.id != stream {
            let open = open.id;
            self.open = None;
            self.discard(stream, last);
            return Err(ChunkError::WrongStream {
                open,
                found: stream,
            });
        }
        if open.data.len() as u64 + data.len() as u64 > self.max_bytes {
            self.open = None;
            self.discard(stream, last);
            return Err(ChunkError::TooLarge {
                stream,
                max: self.max_bytes,
            });
        }
        if open.data.is_empty() {
            open.data = data;
        } else {
            open.data.extend_from_slice(&data);
        }
        if !last {
            return Ok(None);
        }
        match self.open.take() {
            Some(open) => finish(open).map(Some),
            None => Ok(None),
        }
    }

    /// Ignores the rest of `stream` (unless this chunk was its last).
    fn discard(&mut self, stream: u64, last: bool) {
        self.discarding = if last { None } else { Some(stream) };
    }
}

/// Puts a complete stream's message back together.
fn finish(open: OpenStream) -> Result<RaftMessage, ChunkError> {
    let OpenStream {
        id,
        mut head,
        snapshot,
        data,
    } = open;
    match snapshot {
        None => head.message = data.into(),
        Some(_) if data.is_empty() => {}
        Some(mut msg) => {
            if msg.get_msg_type() != MessageType::MsgSnapshot {
                return Err(ChunkError::BadMessage {
                    stream: id,
                    reason: format!("data sent with a {:?}", msg.get_msg_type()),
                });
            }
            msg.mut_snapshot().set_data(Bytes::from(data));
            head.message = msg
                .write_to_bytes()
                .map_err(|e| ChunkError::BadMessage {
                    stream: id,
                    reason: format!("cannot re-encode the raft message: {e}"),
                })?
                .into();
        }
    }
    Ok(head)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raft::eraftpb::{Message as RaftMsg, Snapshot};

    fn snapshot_msg(data: Vec<u8>) -> Vec<u8> {
        let mut m = RaftMsg::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = 2;
        m.from = 1;
        m.term = 5;
        let mut s = Snapshot::default();
        s.mut_metadata().index = 40;
        s.mut_metadata().term = 5;
        s.set_data(Bytes::from(data));
        m.set_snapshot(s);
        m.write_to_bytes().unwrap()
    }

    fn rm(message: Vec<u8>) -> RaftMessage {
        RaftMessage {
            region_id: 1,
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_type_is_seen_from_the_first_field() {
        assert!(is_snapshot(&snapshot_msg(vec![1, 2, 3])));
        let mut m = RaftMsg::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = 2;
        assert!(!is_snapshot(&m.write_to_bytes().unwrap()));
        assert!(!is_snapshot(&[]));
        assert!(!is_snapshot(&[0x08]));
    }

    #[test]
    fn snapshot_data_round_trips_through_chunks() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let encoded = snapshot_msg(data.clone());
        let (head, moved) = split_snapshot(&encoded).unwrap();
        assert_eq!(&moved[..], &data[..]);
        assert!(head.len() < 100);
        let mut a = ChunkAssembler::new(1 << 20);
        let mut first = Some(rm(head));
        let pieces: Vec<_> = moved.chunks(3000).collect();
        for (i, p) in pieces.iter().enumerate() {
            let out = a
                .push(
                    7,
                    SnapshotChunk {
                        message: first.take(),
                        data: p.to_vec(),
                        last: i + 1 == pieces.len(),
                    },
                )
                .unwrap();
            if i + 1 == pieces.len() {
                let got = RaftMsg::parse_from_bytes(&out.unwrap().message).unwrap();
                assert_eq!(got.get_snapshot().get_data(), &data[..]);
                assert_eq!(got.get_snapshot().get_metadata().index, 40);
            } else {
                assert!(out.is_none());
            }
        }
    }

    #[test]
    fn whole_message_streams_carry_the_message_as_data() {
        let mut a = ChunkAssembler::new(100);
        let r = a.push(
            1,
            SnapshotChunk {
                message: Some(rm(Vec::new())),
                data: vec![9; 10],
                last: false,
            },
        );
        assert_eq!(r, Ok(None));
        let r = a.push(
            1,
            SnapshotChunk {
                data: vec![8; 5],
                last: true,
                ..Default::default()
            },
        );
        let m = r.unwrap().unwrap();
        assert_eq!(m.message.len(), 15);
        assert_eq!(a.buffered(), 0);
    }

    #[test]
    fn bad_streams_are_dropped_without_panicking() {
        let mut a = ChunkAssembler::new(100);
        // A continuation with no first chunk.
        let orphan = SnapshotChunk {
            data: vec![1; 10],
            ..Default::default()
        };
        assert_eq!(
            a.push(3, orphan.clone()),
            Err(ChunkError::Orphan { stream: 3 })
        );
        // Its remaining chunks are ignored quietly.
        assert_eq!(a.push(3, orphan.clone()), Ok(None));
        // Too large.
        let first = SnapshotChunk {
            message: Some(rm(Vec::new())),
            data: vec![0; 60],
            last: false,
        };
        assert_eq!(a.push(4, first.clone()), Ok(None));
        assert_eq!(
            a.push(
                4,
                SnapshotChunk {
                    data: vec![0; 60],
                    ..Default::default()
                }
            ),
            Err(ChunkError::TooLarge {
                stream: 4,
                max: 100
            })
        );
        assert_eq!(a.buffered(), 0);
        assert_eq!(
            a.push(
                4,
                SnapshotChunk {
                    last: true,
                    ..Default::default()
                }
            ),
            Ok(None)
        );
        // Interleaved first chunks: both streams are dropped; the next one works.
        assert_eq!(a.push(5, first.clone()), Ok(None));
        assert!(matches!(
            a.push(6, first.clone()),
            Err(ChunkError::Interrupted {
                open: 5,
                new: 6,
                received: 60
            })
        ));
        let rest = SnapshotChunk {
            data: vec![1; 2],
            last: true,
            ..Default::default()
        };
        assert_eq!(a.push(6, rest.clone()), Ok(None));
        assert_eq!(a.push(11, first.clone()), Ok(None));
        let done = a.push(11, rest).unwrap().unwrap();
        assert_eq!(done.message.len(), 62);
        // A chunk of another stream while one is open.
        assert_eq!(a.push(7, first.clone()), Ok(None));
        assert!(matches!(
            a.push(8, orphan),
            Err(ChunkError::WrongStream { open: 7, found: 8 })
        ));
        // An undecodable raft message.
        let garbage = SnapshotChunk {
            message: Some(rm(vec![0xff; 7])),
            data: vec![1],
            last: true,
        };
        assert!(matches!(
            a.push(9, garbage),
            Err(ChunkError::BadMessage { .. })
        ));
        // Data with a raft message that is no snapshot.
        let mut append = RaftMsg::default();
        append.set_msg_type(MessageType::MsgAppend);
        append.to = 2;
        let not_snap = SnapshotChunk {
            message: Some(rm(append.write_to_bytes().unwrap())),
            data: vec![1],
            last: true,
        };
        assert!(matches!(
            a.push(10, not_snap),
            Err(ChunkError::BadMessage { .. })
        ));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(900) && d <= Duration::from_millis(1100));
        }
    }
}
