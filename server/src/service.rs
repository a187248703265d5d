//! The TCP services on `tokio-uring`: clients on the client listener ([`serve`]: handshake,
//! pipelined requests matched by request id, error frames, limits, graceful shutdown) and
//! other stores on the peer listener ([`serve_peers`]: raft messages and snapshot chunk
//! streams). Protocol: `docs/PROTOCOL.md`.
//!
//! One io_uring runtime thread serves every connection. Each connection has a reader (this
//! module's `serve_conn` / `serve_peer_conn` loops: decode frames, hand commands or raft
//! messages to the store loop) and a writer task that coalesces every frame waiting into one
//! `write_all`; a client connection's writer also turns what the store loop queued for it
//! ([`crate::reply::ConnAnswers`]) into frames. Commands from all connections
//! meet in the store loop, which group-commits them into one raft-log write. A peer
//! connection's reading moves to the store loop itself once it has handshaken, if the sink
//! takes it ([`RaftSink::adopt`], see [`crate::inbox`]); its task then only writes, and waits
//! to hear why the connection ended.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use pontoon_client::proto::framepb::{FrameErrorCode, Handshake, HandshakeAck, Role};
use pontoon_client::proto::raft_serverpb::RaftMessage;
use pontoon_client::{FrameBody, FrameDecoder, Limits, PROTOCOL_VERSION};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_uring::net::{TcpListener, TcpStream};

use crate::inbox::AdoptedPeer;
use crate::node::Node;
use crate::peer_net::{ChunkAssembler, RaftSink};
use crate::reply::{ConnAnswers, Reply};

/// Serves clients on `listener` until `shutdown` turns true, then stops accepting, lets every
/// connection finish the requests it has in flight (bounded by `drain`), and returns.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let node = node.clone();
                    let active = active.clone();
                    let shutdown = shutdown.clone();
                    active.set(active.get() + 1);
                    tokio_uring::spawn(async move {
                        serve_conn(Rc::new(stream), peer, node, limits, shutdown).await;
                        active.set(active.get() - 1);
                    });
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    log::info!("stopped accepting; draining {} connections", active.get());
    let deadline = tokio::time::Instant::now() + drain;
    while active.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Frames waiting to be written, coalesced by the writer task.
pub type Outbox = mpsc::UnboundedSender<Vec<u8>>;

/// The answer to an accepted handshake: who we are and the limits the connection runs under.
fn handshake_ack(cluster_id: u64, store_id: u64, limits: &Limits) -> FrameBody {
    FrameBody::HandshakeAck(HandshakeAck {
        protocol_version: PROTOCOL_VERSION.into(),
        cluster_id,
        store_id,
        max_frame_size_bytes: limits.max_frame_size_bytes,
        max_in_flight_requests: limits.max_in_flight_requests,
        idle_timeout_ms: limits.idle_timeout.as_millis() as u64,
    })
}

fn send_body(out: &Outbox, body: &FrameBody, request_id: u64, limits: &Limits) {
    let mut buf = Vec::new();
    encode_body(&mut buf, body, request_id, limits);
    if !buf.is_empty() {
        let _ = out.send(buf);
    }
}

/// Appends `body`'s frame to `buf`; one that cannot be encoded (too large) becomes an
/// `Internal` error frame for the same request.
fn encode_body(buf: &mut Vec<u8>, body: &FrameBody, request_id: u64, limits: &Limits) {
    let start = buf.len();
    if let Err(e) = body.encode(request_id, limits.max_frame_size_bytes, buf) {
        buf.truncate(start);
        log::warn!("cannot encode a {:?} frame: {e}", body.frame_type());
        let err = FrameBody::error(
            FrameErrorCode::Internal,
            format!("cannot encode answer: {e}"),
        );
        if err
            .encode(request_id, limits.max_frame_size_bytes, buf)
            .is_err()
        {
            buf.truncate(start);
        }
    }
}

async fn writer(stream: Rc<TcpStream>, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(mut buf) = rx.recv().await {
        // Coalesce everything already answered into one write.
        while let Ok(more) = rx.try_recv() {
            buf.extend_from_slice(&more);
            if buf.len() > 1 << 20 {
                break;
            }
        }
        let (res, _) = stream.write_all(buf).await;
        if let Err(e) = res {
            log::debug!("write failed: {e}");
            return;
        }
    }
}

/// Writes a client connection: the frames its reader queues (the handshake ack, pongs, the
/// error that closes it) and the answers the store loop queues ([`ConnAnswers`]), everything
/// waiting at a wake-up as one `write_all`. One task for both: a wake-up of the store loop's
/// answers used to go through an answer task, which encoded them and passed the bytes on to
/// the writer task, two polls and a channel per batch. Returns once the answers are closed,
/// the reader's queue is closed, and it has written what both held.
async fn client_writer(
    stream: Rc<TcpStream>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    answers: Arc<ConnAnswers>,
    limits: Limits,
    in_flight: Rc<Cell<u32>>,
) {
    let mut got = Vec::new();
    let mut reader_open = true;
    let mut failed = false;
    loop {
        let mut buf = Vec::new();
        // The reader's frames first: the handshake ack precedes every answer.
        while let Ok(more) = rx.try_recv() {
            buf.extend_from_slice(&more);
        }
        answers.take(&mut got);
        for (request_id, resp) in got.drain(..) {
            let body = match resp {
                Some(resp) => FrameBody::Response(resp),
                None => FrameBody::error(FrameErrorCode::ShuttingDown, "the store stopped"),
            };
            encode_body(&mut buf, &body, request_id, &limits);
            in_flight.set(in_flight.get().saturating_sub(1));
        }
        if buf.is_empty() {
            if answers.is_closed() && !reader_open {
                return;
            }
            tokio::select! {
                more = rx.recv(), if reader_open => match more {
                    Some(b) => buf = b,
                    None => reader_open = false,
                },
                _ = answers.wait() => {}
            }
            if buf.is_empty() {
                continue;
            }
        }
        // After a failed write the socket is dead: keep draining (the answers count the
        // requests in flight down) but write nothing.
        if failed {
            continue;
        }
        let (res, _) = stream.write_all(buf).await;
        if let Err(e) = res {
            log::debug!("write failed: {e}");
            failed = true;
        }
    }
}

/// Why a connection ends.
pub enum Close {
    /// The peer closed, the socket failed, or the store loop stopped (the answer queue
    /// answers what was in flight).
    Gone,
    /// A protocol error: send this frame, then close.
    Error(FrameErrorCode, String, u64),
}

async fn serve_conn(
    stream: Rc<TcpStream>,
    peer: SocketAddr,
    node: Arc<Node>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (out, rx) = mpsc::unbounded_channel();
    let in_flight = Rc::new(Cell::new(0u32));
    let answers = ConnAnswers::new();
    let writer_task = tokio_uring::spawn(client_writer(
        stream.clone(),
        rx,
        answers.clone(),
        limits,
        in_flight.clone(),
    ));
    let close = read_loop(
        &stream,
        &node,
        &limits,
        &out,
        &answers,
        &in_flight,
        &mut shutdown,
    )
    .await;
    if let Close::Error(code, message, request_id) = close {
        log::info!("closing connection from {peer}: {message}");
        send_body(&out, &FrameBody::error(code, message), request_id, &limits);
    }
    // Let answers of requests already handed to the store loop go out (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Nothing in flight (or the wait ran out): the writer writes what is queued and ends;
    // later answers are dropped.
    answers.close();
    drop(out);
    let _ = writer_task.await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

async fn read_loop(
    stream: &Rc<TcpStream>,
    node: &Arc<Node>,
    limits: &Limits,
    out: &Outbox,
    answers: &Arc<ConnAnswers>,
    in_flight: &Rc<Cell<u32>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Close {
    let mut reader = FrameReader::new(limits, 64 << 10);
    let mut handshaken = false;
    loop {
        let timeout = if handshaken {
            limits.idle_timeout
        } else {
            limits.handshake_timeout
        };
        let (request_id, body) = match reader.next(stream, timeout, handshaken, shutdown).await {
            Ok(frame) => frame,
            Err(close) => return close,
        };
        if !handshaken {
            match body {
                FrameBody::Handshake(h) => {
                    if let Err((code, msg)) = check_handshake(&h, node) {
                        return Close::Error(code, msg, request_id);
                    }
                    let ack = handshake_ack(node.cluster_id(), node.store_id(), limits);
                    send_body(out, &ack, request_id, limits);
                    handshaken = true;
                    continue;
                }
                other => {
                    return Close::Error(
                        FrameErrorCode::HandshakeRequired,
                        format!("expected a Handshake, got {:?}", other.frame_type()),
                        request_id,
                    )
                }
            }
        }
        match body {
            FrameBody::Request(req) => {
                if in_flight.get() >= limits.max_in_flight_requests {
                    return Close::Error(
                        FrameErrorCode::TooManyInFlight,
                        format!(
                            "more than {} requests in flight",
                            limits.max_in_flight_requests
                        ),
                        request_id,
                    );
                }
                // The writer task (on this thread) counts it down when the answer comes.
                in_flight.set(in_flight.get() + 1);
                if !node.submit(req, Reply::conn(answers.clone(), request_id)) {
                    // The store loop is gone; the dropped reply answered this request with
                    // `ShuttingDown` through the answer queue, which is drained before the
                    // connection closes.
                    return Close::Gone;
                }
            }
            FrameBody::Ping(p) => send_body(out, &FrameBody::Pong(p), request_id, limits),
            other => {
                return Close::Error(
                    FrameErrorCode::UnexpectedFrame,
                    format!("a client may not send {:?}", other.frame_type()),
                    request_id,
                )
            }
        }
    }
}

fn check_handshake(h: &Handshake, node: &Node) -> Result<(), (FrameErrorCode, String)> {
    if h.protocol_version != u32::from(PROTOCOL_VERSION) {
        return Err((
            FrameErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not {}",
                h.protocol_version, PROTOCOL_VERSION
            ),
        ));
    }
    if h.cluster_id != 0 && h.cluster_id != node.cluster_id() {
        return Err((
            FrameErrorCode::ClusterIdMismatch,
            format!(
                "this is cluster {}, not {}",
                node.cluster_id(),
                h.cluster_id
            ),
        ));
    }
    if h.role == Role::Store as i32 {
        return Err((
            FrameErrorCode::UnexpectedFrame,
            format!(
                "this is the client port of store {}; stores connect to its peer port (--peer-addr)",
                node.store_id()
            ),
        ));
    }
    Ok(())
}

/// Reads frames off one connection: socket reads fed to a [`FrameDecoder`], cut short by
/// shutdown, and the connection closed once no complete frame came for a timeout
/// (`docs/PROTOCOL.md`: bytes that never make a frame do not keep it open).
///
/// The timeout is one long-lived timer per connection, pushed back lazily: a read that
/// completes a frame only notes the time, and the timer, when it fires, moves itself to
/// that time plus the timeout unless the connection really was quiet that long. A timer
/// armed and cancelled around every read cost a timer-wheel insertion and removal per
/// read, which on a busy connection is one per handful of requests.
struct FrameReader {
    decoder: FrameDecoder,
    buf: Vec<u8>,
    /// When a read last completed a frame (or the reader was made).
    last_frame: tokio::time::Instant,
    /// Bytes were read since `last_frame` was taken: the next frame decoded takes it anew.
    read_since: bool,
    /// Fires at or after `last_frame + timeout`; never earlier.
    idle: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl FrameReader {
    fn new(limits: &Limits, read_size: usize) -> FrameReader {
        let now = tokio::time::Instant::now();
        FrameReader {
            decoder: FrameDecoder::new(limits),
            buf: vec![0u8; read_size],
            last_frame: now,
            read_since: false,
            idle: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout)),
        }
    }

    /// The next frame's request id and body, or why the connection ends.
    async fn next(
        &mut self,
        stream: &TcpStream,
        timeout: Duration,
        handshaken: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(u64, FrameBody), Close> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    // One clock read per read that completes frames, not per frame.
                    if std::mem::take(&mut self.read_since) {
                        self.last_frame = tokio::time::Instant::now();
                    }
                    let request_id = frame.request_id;
                    return match FrameBody::decode(&frame) {
                        Ok(body) => Ok((request_id, body)),
                        Err(e) => Err(Close::Error(e.code(), e.to_string(), request_id)),
                    };
                }
                Ok(None) => {}
                Err(e) => return Err(Close::Error(e.code(), e.to_string(), 0)),
            }
            // The timeout may have become shorter (the handshake's is replaced by the idle
            // timeout): the timer must not fire later than it says.
            let deadline = self.last_frame + timeout;
            if self.idle.deadline() > deadline {
                self.idle.as_mut().reset(deadline);
            }
            // The buffer moves into the read; it only comes back on completion, and every
            // other outcome closes the connection.
            let buf = std::mem::take(&mut self.buf);
            let read = stream.read(buf);
            tokio::pin!(read);
            let (res, buf) = loop {
                tokio::select! {
                    r = &mut read => break r,
                    _ = self.idle.as_mut() => {
                        let deadline = self.last_frame + timeout;
                        if tokio::time::Instant::now() < deadline {
                            self.idle.as_mut().reset(deadline);
                            continue;
                        }
                        let what = if handshaken {
                            "idle timeout"
                        } else {
                            "no handshake in time"
                        };
                        return Err(Close::Error(FrameErrorCode::IdleTimeout, what.into(), 0));
                    }
                    _ = shutdown.changed() => {
                        return Err(stopping(0));
                    }
                }
            };
            self.read_since = true;
            self.buf = buf;
            match res {
                Ok(0) | Err(_) => return Err(Close::Gone),
                Ok(n) => self.decoder.feed(self.buf.get(..n).unwrap_or_default()),
            }
        }
    }
}

/// Serves other stores on the peer `listener` until `shutdown` turns true. A connection
/// handshakes as `Role::Store` of this cluster, then sends `RaftMessage` batches and
/// `SnapshotChunk` streams (each stream at most `max_snapshot_bytes` of data), which go to
/// `sink` in the order they arrive. Clients are refused here.
pub async fn serve_peers(
    listener: TcpListener,
    sink: Arc<dyn RaftSink>,
    limits: Limits,
    max_snapshot_bytes: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let sink = sink.clone();
                    let active = active.clone();
                    let shutdown = shutdown.clone();
                    active.set(active.get() + 1);
                    tokio_uring::spawn(async move {
                        serve_peer_conn(Rc::new(stream), peer, sink, limits, max_snapshot_bytes, shutdown).await;
                        active.set(active.get() - 1);
                    });
                }
                Err(e) => {
                    log::warn!("peer accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    // Each connection sends ShuttingDown and closes; give them a moment to do so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while active.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn serve_peer_conn(
    stream: Rc<TcpStream>,
    peer: SocketAddr,
    sink: Arc<dyn RaftSink>,
    limits: Limits,
    max_snapshot_bytes: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let (out, rx) = mpsc::unbounded_channel();
    let writer_task = tokio_uring::spawn(writer(stream.clone(), rx));
    let mut remote = Remote {
        addr: peer,
        store: None,
    };
    let close = peer_read_loop(
        &stream,
        &*sink,
        &limits,
        max_snapshot_bytes,
        &out,
        &mut shutdown,
        &mut remote,
    )
    .await;
    let who = match remote.store {
        Some(id) => format!("store {id} ({peer})"),
        None => format!("{peer}"),
    };
    match close {
        Close::Error(code, message, request_id) => {
            log::info!("closing the peer connection from {who}: {message}");
            send_body(&out, &FrameBody::error(code, message), request_id, &limits);
        }
        Close::Gone => log::debug!("peer connection from {who} closed"),
    }
    drop(out);
    let _ = writer_task.await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Who is on the other end of a peer connection.
struct Remote {
    addr: SocketAddr,
    /// Its store id, once it has handshaken.
    store: Option<u64>,
}

async fn peer_read_loop(
    stream: &TcpStream,
    sink: &dyn RaftSink,
    limits: &Limits,
    max_snapshot_bytes: u64,
    out: &Outbox,
    shutdown: &mut watch::Receiver<bool>,
    remote: &mut Remote,
) -> Close {
    // Larger reads than a client's: snapshot chunks arrive a MiB at a time.
    let mut reader = FrameReader::new(limits, 256 << 10);
    let mut chunks = ChunkAssembler::new(max_snapshot_bytes);
    loop {
        let timeout = match remote.store {
            Some(_) => limits.idle_timeout,
            None => limits.handshake_timeout,
        };
        let (request_id, body) = match reader
            .next(stream, timeout, remote.store.is_some(), shutdown)
            .await
        {
            Ok(frame) => frame,
            Err(close) => return close,
        };
        let Some(store) = remote.store else {
            let FrameBody::Handshake(h) = body else {
                return Close::Error(
                    FrameErrorCode::HandshakeRequired,
                    format!("expected a Handshake, got {:?}", body.frame_type()),
                    request_id,
                );
            };
            if let Err((code, msg)) = check_peer_handshake(&h, sink) {
                return Close::Error(code, msg, request_id);
            }
            let ack = handshake_ack(sink.cluster_id(), sink.store_id(), limits);
            send_body(out, &ack, request_id, limits);
            log::info!("store {} connected from {}", h.store_id, remote.addr);
            remote.store = Some(h.store_id);
            let handed = hand_over(
                stream,
                sink,
                h.store_id,
                remote.addr,
                &mut reader,
                out,
                limits,
                max_snapshot_bytes,
            );
            if let Some(closed) = handed {
                return tokio::select! {
                    why = closed => why.unwrap_or_else(|_| stopping(0)),
                    _ = shutdown.changed() => stopping(0),
                };
            }
            continue;
        };
        let mut msgs = match on_peer_frame(
            sink.store_id(),
            store,
            request_id,
            body,
            &mut chunks,
            out,
            limits,
        ) {
            Ok(msgs) => msgs,
            Err(close) => return close,
        };
        let delivered = match msgs.len() {
            0 => true,
            1 => msgs.pop().is_none_or(|m| sink.step(m)),
            _ => sink.step_batch(msgs),
        };
        if !delivered {
            return stopping(request_id);
        }
    }
}

/// Hands the reading of a handshaken connection from store `store` to the sink (the store
/// loop reads it from then on, see `crate::inbox`). Returns where the sink will say why the
/// connection ended, or `None` if the sink does not read connections (or no descriptor can
/// be spared): the connection is then read here, with the decoder's bytes left as they were.
#[allow(clippy::too_many_arguments)]
fn hand_over(
    stream: &TcpStream,
    sink: &dyn RaftSink,
    store: u64,
    addr: SocketAddr,
    reader: &mut FrameReader,
    out: &Outbox,
    limits: &Limits,
    max_snapshot_bytes: u64,
) -> Option<oneshot::Receiver<Close>> {
    let sock = match crate::direct::duplicate(stream) {
        Ok(sock) => sock,
        Err(e) => {
            log::warn!("cannot duplicate a socket ({e}); the network thread reads it");
            return None;
        }
    };
    let (closed, rx) = oneshot::channel();
    let decoder = std::mem::replace(&mut reader.decoder, FrameDecoder::new(limits));
    let peer = Box::new(AdoptedPeer {
        sock,
        store,
        addr,
        decoder,
        out: out.clone(),
        limits: *limits,
        max_snapshot_bytes,
        closed,
    });
    match sink.adopt(peer) {
        Ok(()) => Some(rx),
        Err(peer) => {
            reader.decoder = peer.decoder;
            None
        }
    }
}

/// Handles one frame of a handshaken peer connection from store `from`: returns the raft
/// messages for this store `me` that it completes (a batch's, or a chunk stream's last),
/// answers a ping, or says why the connection closes.
pub(crate) fn on_peer_frame(
    me: u64,
    from: u64,
    request_id: u64,
    body: FrameBody,
    chunks: &mut ChunkAssembler,
    out: &Outbox,
    limits: &Limits,
) -> Result<Vec<RaftMessage>, Close> {
    match body {
        FrameBody::RaftMessage(batch) => Ok(for_store(me, from, batch.messages)),
        FrameBody::SnapshotChunk(chunk) => match chunks.push(request_id, chunk) {
            Ok(Some(m)) => Ok(for_store(me, from, vec![m])),
            Ok(None) => Ok(Vec::new()),
            // The stream is lost, the connection is not: raft sends the snapshot again.
            Err(e) => {
                log::warn!("store {from}: dropping a snapshot chunk stream: {e}");
                Ok(Vec::new())
            }
        },
        FrameBody::Ping(p) => {
            send_body(out, &FrameBody::Pong(p), request_id, limits);
            Ok(Vec::new())
        }
        other => Err(Close::Error(
            FrameErrorCode::UnexpectedFrame,
            format!(
                "a store may not send {:?} on the peer port",
                other.frame_type()
            ),
            request_id,
        )),
    }
}

/// The messages of `msgs` (from store `from`) addressed to store `me`. A message for
/// another store can only come from a misrouted address; it is dropped.
fn for_store(me: u64, from: u64, mut msgs: Vec<RaftMessage>) -> Vec<RaftMessage> {
    msgs.retain(|m| {
        let to = m.to_peer.as_ref().map_or(0, |p| p.store_id);
        if to != me {
            log::debug!("store {from} sent a raft message for store {to} to store {me}; dropped");
        }
        to == me
    });
    msgs
}

/// Why a connection closes when the store stops (at the frame `request_id`, 0 for none).
fn stopping(request_id: u64) -> Close {
    Close::Error(
        FrameErrorCode::ShuttingDown,
        "the store is stopping".into(),
        request_id,
    )
}

fn check_peer_handshake(
    h: &Handshake,
    sink: &dyn RaftSink,
) -> Result<(), (FrameErrorCode, String)> {
    if h.protocol_version != u32::from(PROTOCOL_VERSION) {
        return Err((
            FrameErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not {}",
                h.protocol_version, PROTOCOL_VERSION
            ),
        ));
    }
    if h.role != Role::Store as i32 {
        return Err((
            FrameErrorCode::UnexpectedFrame,
            format!(
                "this is the peer port of store {}, for store-to-store traffic; clients connect to its client port (--client-addr)",
                sink.store_id()
            ),
        ));
    }
    // Stores always know their cluster: 0 is no wildcard here.
    if h.cluster_id != sink.cluster_id() {
        return Err((
            FrameErrorCode::ClusterIdMismatch,
            format!(
                "this is cluster {}, not {} (store {} has another --initial-cluster or --cluster-id)",
                sink.cluster_id(),
                h.cluster_id,
                h.store_id
            ),
        ));
    }
    if h.store_id == 0 || h.store_id == sink.store_id() {
        return Err((
            FrameErrorCode::UnexpectedFrame,
            format!(
                "store id {} is not another store's (this is store {})",
                h.store_id,
                sink.store_id()
            ),
        ));
    }
    Ok(())
}
