//! The TCP peer transport and the peer service over real sockets on 127.0.0.1 (every port
//! picked by the kernel at run time): ordering and batching, snapshots in chunks, a dead
//! peer's bounded queue and the reconnect, cluster-id refusals, bad chunk streams on a
//! live server's peer port, replication between three real servers, and a region snapshot
//! sent over TCP to a store that starts after the others compacted their logs.
//!
//! Each test bounds its time with deadlines; the sockets have read timeouts.

#![allow(clippy::unwrap_used)]

#[path = "support/proc.rs"]
mod proc;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pontoon_client::proto::framepb::{
    FrameErrorCode, Handshake, HandshakeAck, RaftMessageBatch, Role,
};
use pontoon_client::proto::metapb;
use pontoon_client::proto::raft_cmdpb::{self, CmdType, RaftCmdRequest, Request};
use pontoon_client::proto::raft_serverpb::{RaftMessage, SnapshotChunk};
use pontoon_client::{FrameBody, FrameDecoder, FrameType, Limits};
use pontoon_server::inbox::{self, AdoptedPeer, LoopSender};
use pontoon_server::peer_net::{PeerDriver, PeerNetConfig, RaftSink, TcpTransport};
use pontoon_server::server::{Server, ServerConfig};
use pontoon_server::transport::Transport;
use protobuf::Message as _;
use raft::eraftpb::{self, MessageType};
use tokio::sync::watch;

// ---------------------------------------------------------------------------------------
// Log capture: the tests check what the transport logs (and how often). Set
// PEER_NET_TEST_LOG=1 to see the lines as well.

struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            if std::env::var_os("PEER_NET_TEST_LOG").is_some() {
                eprintln!("{} {}", r.level(), r.args());
            }
            if let Ok(mut v) = self.0.lock() {
                v.push((r.level(), r.args().to_string()));
            }
        }
    }
    fn flush(&self) {}
}

fn logs() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        if log::set_logger(c).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
        c
    })
}

/// Log lines at `level` containing every one of `needles`.
fn logged(level: log::Level, needles: &[&str]) -> Vec<String> {
    logs()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, m)| *l == level && needles.iter().all(|n| m.contains(n)))
        .map(|(_, m)| m.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------
// A receiving store without raft: the real peer service, delivering into a recorder.

struct Recorder {
    cluster_id: u64,
    store_id: u64,
    got: Mutex<Vec<RaftMessage>>,
    /// For a recorder that reads its connections on a loop thread of its own, as a store
    /// loop does (`pontoon_server::inbox`): where the service hands them over.
    reader: Option<LoopSender<Box<AdoptedPeer>>>,
    /// Stops that loop (as a store's loop stops with its store).
    stop_reading: Arc<AtomicBool>,
}

impl RaftSink for Recorder {
    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }
    fn store_id(&self) -> u64 {
        self.store_id
    }
    fn step(&self, msg: RaftMessage) -> bool {
        self.got.lock().unwrap().push(msg);
        true
    }
    fn adopt(&self, peer: Box<AdoptedPeer>) -> Result<(), Box<AdoptedPeer>> {
        match &self.reader {
            Some(tx) => tx.send(peer).map_err(|e| e.0),
            None => Err(peer),
        }
    }
}

impl Recorder {
    fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits (bounded) until at least `n` messages arrived.
    fn wait_for(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages arrived within {within:?}",
                self.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `serve_peers` on its own io_uring runtime thread; stopped when dropped.
struct PeerService {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerService {
    fn start(listener: TcpListener, sink: Arc<Recorder>, limits: Limits) -> PeerService {
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::spawn(move || {
            tokio_uring::start(async move {
                let listener = tokio_uring::net::TcpListener::from_std(listener);
                pontoon_server::service::serve_peers(listener, sink, limits, 1 << 30, stop_rx)
                    .await;
            })
        });
        PeerService {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PeerService {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A recorder whose connections the peer service reads.
fn recorder(cluster_id: u64, store_id: u64) -> Arc<Recorder> {
    Arc::new(Recorder {
        cluster_id,
        store_id,
        got: Mutex::new(Vec::new()),
        reader: None,
        stop_reading: Arc::new(AtomicBool::new(false)),
    })
}

/// A recorder that reads its connections on a loop thread, as a store loop does: the
/// service hands each one over after the handshake. The loop ends when the recorder is
/// dropped or `stop_reading` is set.
fn loop_recorder(cluster_id: u64, store_id: u64) -> Arc<Recorder> {
    let (tx, mut inbox) = inbox::channel::<Box<AdoptedPeer>>(store_id).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Recorder {
        cluster_id,
        store_id,
        got: Mutex::new(Vec::new()),
        reader: Some(tx),
        stop_reading: stop.clone(),
    });
    let weak = Arc::downgrade(&rec);
    std::thread::spawn(move || {
        let mut got = Vec::new();
        while !stop.load(Ordering::Acquire) {
            match inbox.wait(Duration::from_millis(20)) {
                Ok(Some(peer)) => inbox.adopt(*peer),
                Ok(None) => {}
                Err(_) => return,
            }
            while let Ok(peer) = inbox.try_recv() {
                inbox.adopt(*peer);
            }
            inbox.read(&mut got);
            inbox.close_idle(Instant::now());
            let Some(rec) = weak.upgrade() else { return };
            rec.got.lock().unwrap().append(&mut got);
        }
    });
    rec
}

/// A transport with its driver running on its own io_uring runtime thread; the driver
/// stops when this is dropped.
struct Sender {
    transport: Arc<TcpTransport>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    fn start(
        store_id: u64,
        cluster_id: u64,
        peers: &[(u64, SocketAddr)],
        config: PeerNetConfig,
    ) -> Sender {
        let peers: HashMap<u64, String> = peers.iter().map(|(i, a)| (*i, a.to_string())).collect();
        let limits = Limits {
            handshake_timeout: Duration::from_secs(2),
            ..Limits::default()
        };
        let (t, driver) = TcpTransport::with_config(store_id, cluster_id, limits, peers, config);
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::spawn(move || run_driver(driver, stop_rx));
        Sender {
            transport: Arc::new(t),
            stop,
            thread: Some(thread),
        }
    }
}

fn run_driver(driver: PeerDriver, stop: watch::Receiver<bool>) {
    tokio_uring::start(driver.run(stop))
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fast_config() -> PeerNetConfig {
    PeerNetConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..PeerNetConfig::default()
    }
}

/// A raft message from store `from` to store `to` whose encoded raft message carries
/// `seq` (as the commit index of a heartbeat).
fn heartbeat(from: u64, to: u64, seq: u64) -> RaftMessage {
    let mut m = eraftpb::Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    m.term = 3;
    m.commit = seq;
    wrap(from, to, m.write_to_bytes().unwrap())
}

/// An append from store `from` to store `to` carrying `seq` (as its commit index) and one
/// entry of `data`.
fn append(from: u64, to: u64, seq: u64, data: &[u8]) -> RaftMessage {
    let mut m = eraftpb::Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = from;
    m.to = to;
    m.commit = seq;
    let mut e = eraftpb::Entry::default();
    e.set_data(Bytes::from(data.to_vec()));
    m.mut_entries().push(e);
    wrap(from, to, m.write_to_bytes().unwrap())
}

fn wrap(from: u64, to: u64, message: Vec<u8>) -> RaftMessage {
    RaftMessage {
        region_id: 1,
        from_peer: Some(metapb::Peer {
            id: from,
            store_id: from,
            ..Default::default()
        }),
        to_peer: Some(metapb::Peer {
            id: to,
            store_id: to,
            ..Default::default()
        }),
        message: message.into(),
        ..Default::default()
    }
}

fn seq_of(m: &RaftMessage) -> u64 {
    eraftpb::Message::parse_from_bytes(&m.message)
        .unwrap()
        .commit
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift: data that compresses badly and shows any misplaced byte.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn snapshot(from: u64, to: u64, data: Vec<u8>) -> RaftMessage {
    let mut m = eraftpb::Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = from;
    m.to = to;
    m.term = 4;
    let mut s = eraftpb::Snapshot::default();
    s.mut_metadata().index = 1234;
    s.mut_metadata().term = 4;
    s.mut_metadata().mut_conf_state().voters = vec![from, to];
    s.set_data(Bytes::from(data));
    m.set_snapshot(s);
    wrap(from, to, m.write_to_bytes().unwrap())
}

/// Sends, retrying (bounded) while the queue is full.
fn send_retrying(t: &TcpTransport, m: RaftMessage) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.send(m.clone()) {
        assert!(Instant::now() < deadline, "the queue never drained");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------------------
// A raw socket speaking the protocol by hand.

struct Raw {
    s: TcpStream,
    dec: FrameDecoder,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        Raw::wrap(TcpStream::connect(addr).unwrap())
    }

    fn wrap(s: TcpStream) -> Raw {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw {
            s,
            dec: FrameDecoder::new(&Limits::default()),
        }
    }

    fn send(&mut self, body: &FrameBody, id: u64) {
        let mut buf = Vec::new();
        body.encode(id, 1 << 24, &mut buf).unwrap();
        self.s.write_all(&buf).unwrap();
    }

    fn recv(&mut self) -> Option<(u64, FrameBody)> {
        loop {
            if let Some(f) = self.dec.next_frame().unwrap() {
                return Some((f.request_id, FrameBody::decode(&f).unwrap()));
            }
            let mut buf = [0u8; 64 << 10];
            match self.s.read(&mut buf) {
                // The servers of this process use io_uring, whose completions can interrupt
                // a blocking read of a thread that submitted work (the test thread opens
                // the stores): a signal, not an end of the connection.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => return None,
                Ok(n) => self.dec.feed(&buf[..n]),
            }
        }
    }

    fn handshake_as_store(addr: SocketAddr, cluster_id: u64, store_id: u64) -> (Raw, HandshakeAck) {
        let mut c = Raw::connect(addr);
        c.send(&store_hello(cluster_id, store_id), 0);
        match c.recv() {
            Some((_, FrameBody::HandshakeAck(a))) => (c, a),
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// Expects an Error frame with `code` whose message contains `text`, then the close.
    fn expect_error(&mut self, code: FrameErrorCode, text: &str) {
        match self.recv() {
            Some((_, FrameBody::Error(e))) => {
                assert_eq!(e.code, code as i32, "{e:?}");
                assert!(e.message.contains(text), "{e:?} lacks {text:?}");
            }
            other => panic!("expected error {code:?}, got {other:?}"),
        }
        assert!(
            self.recv().is_none(),
            "the connection must close after an error"
        );
    }

    fn ping(&mut self, id: u64) {
        self.send(&FrameBody::Ping(Bytes::from_static(b"alive?")), id);
        match self.recv() {
            Some((rid, FrameBody::Pong(p))) => {
                assert_eq!(rid, id);
                assert_eq!(&p[..], b"alive?");
            }
            other => panic!("expected a pong, got {other:?}"),
        }
    }
}

fn store_hello(cluster_id: u64, store_id: u64) -> FrameBody {
    FrameBody::Handshake(Handshake {
        protocol_version: 1,
        cluster_id,
        role: Role::Store as i32,
        store_id,
        client_name: "test store".into(),
    })
}

fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

// ---------------------------------------------------------------------------------------

/// (a) Messages sent through the transport arrive in order, across many batches.
#[test]
fn messages_arrive_in_order() {
    messages_arrive_in_order_at(recorder(7, 2));
}

/// The same when a loop reads the connection, as a store loop does.
#[test]
fn messages_arrive_in_order_when_a_loop_reads() {
    messages_arrive_in_order_at(loop_recorder(7, 2));
}

fn messages_arrive_in_order_at(rec: Arc<Recorder>) {
    logs();
    let (l, addr) = listen();
    let _svc = PeerService::start(l, rec.clone(), Limits::default());
    let tx = Sender::start(1, 7, &[(2, addr)], fast_config());
    const N: u64 = 20_000;
    for seq in 0..N {
        send_retrying(&tx.transport, heartbeat(1, 2, seq));
    }
    rec.wait_for(N as usize, Duration::from_secs(30));
    let got = rec.got.lock().unwrap();
    assert_eq!(got.len(), N as usize);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(seq_of(m), i as u64, "out of order at {i}");
        assert_eq!(m.to_peer.as_ref().unwrap().store_id, 2);
    }
    // No route for an unknown store, nor for this store itself.
    assert!(!tx.transport.send(heartbeat(1, 9, 0)));
    assert!(!tx.transport.send(heartbeat(1, 1, 0)));
}

/// A peer that does not read: the sender's direct writes fill the socket, the rest of a
/// frame and everything after it queue, and once the peer reads, every accepted message
/// arrives intact and in order (no frame torn by two writers), with the sender never
/// blocked meanwhile.
#[test]
fn a_peer_that_stops_reading_gets_every_accepted_message_in_order() {
    logs();
    let (l, addr) = listen();
    let tx = Sender::start(21, 78, &[(22, addr)], fast_config());
    assert!(tx.transport.send(heartbeat(21, 22, 0)));
    let (s, _) = l.accept().unwrap();
    let mut c = Raw::wrap(s);
    let (_, hello) = c.recv().unwrap();
    assert!(matches!(hello, FrameBody::Handshake(_)), "{hello:?}");
    c.send(
        &FrameBody::HandshakeAck(HandshakeAck {
            protocol_version: 1,
            cluster_id: 78,
            store_id: 22,
            max_frame_size_bytes: 16 << 20,
            max_in_flight_requests: 1024,
            idle_timeout_ms: 60_000,
        }),
        0,
    );
    let mut expected = vec![0u64];
    let mut got = Vec::new();
    // The first message: the connection is up, the queue empty, writes go direct.
    while got.is_empty() {
        let (_, body) = c.recv().unwrap();
        if let FrameBody::RaftMessage(b) = body {
            got.extend(b.messages.iter().map(seq_of));
        }
    }
    // 24 MiB in 16 KiB messages, one per send, while nothing reads.
    let filler = pattern(16 << 10, 9);
    for seq in 1..=1536u64 {
        if tx.transport.send(append(21, 22, seq, &filler)) {
            expected.push(seq);
        }
    }
    assert!(
        tx.transport.queued(22).unwrap().bytes > 0,
        "the socket took everything: the test did not fill it"
    );
    while got.len() < expected.len() {
        let (_, body) = c.recv().expect("the connection stays up");
        let FrameBody::RaftMessage(b) = body else {
            panic!("{:?}", body.frame_type())
        };
        for m in &b.messages {
            let raft = eraftpb::Message::parse_from_bytes(&m.message).unwrap();
            assert!(raft.entries.iter().all(|e| e.data == filler[..]));
            got.push(raft.commit);
        }
    }
    assert_eq!(
        got, expected,
        "accepted messages arrive once each, in order"
    );
    // Caught up: the next message goes out again.
    assert!(tx.transport.send(heartbeat(21, 22, 5000)));
    let (_, body) = c.recv().unwrap();
    let FrameBody::RaftMessage(b) = body else {
        panic!("{:?}", body.frame_type())
    };
    assert_eq!(b.messages.iter().map(seq_of).collect::<Vec<_>>(), [5000]);
}

/// A peer that goes away while the sender's socket is full and its queue long (direct
/// writes stopped half way through a frame, the connection task writing the rest): the next
/// connection starts with whole frames (`Raw::recv` panics on one that does not decode),
/// later messages keep their order, and new ones flow. (The rest of a half-written frame
/// is tagged with its connection and dropped on any other; the window in which it could
/// still be queued when its connection dies is too narrow to provoke here.)
#[test]
fn reconnecting_after_a_full_socket_starts_with_whole_frames() {
    logs();
    let (l, addr) = listen();
    let tx = Sender::start(31, 79, &[(32, addr)], fast_config());
    let ack = FrameBody::HandshakeAck(HandshakeAck {
        protocol_version: 1,
        cluster_id: 79,
        store_id: 32,
        max_frame_size_bytes: 16 << 20,
        max_in_flight_requests: 1024,
        idle_timeout_ms: 60_000,
    });
    let accept = |c: &mut Option<Raw>| {
        let (s, _) = l.accept().unwrap();
        let mut raw = Raw::wrap(s);
        let (_, hello) = raw.recv().unwrap();
        assert!(matches!(hello, FrameBody::Handshake(_)), "{hello:?}");
        raw.send(&ack, 0);
        *c = Some(raw);
    };
    assert!(tx.transport.send(heartbeat(31, 32, 0)));
    let mut c = None;
    accept(&mut c);
    let first = c.as_mut().unwrap().recv().unwrap();
    assert!(matches!(first.1, FrameBody::RaftMessage(_)));
    // Fill the socket while nothing reads: a frame is left half written.
    let filler = pattern(16 << 10, 11);
    for seq in 1..=1536u64 {
        tx.transport.send(append(31, 32, seq, &filler));
    }
    assert!(tx.transport.queued(32).unwrap().bytes > 0);
    // The peer goes away without reading; the sender reconnects.
    drop(c.take());
    accept(&mut c);
    let c = c.as_mut().unwrap();
    let mut last = 0;
    let mut marker = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker {
        assert!(Instant::now() < deadline, "the marker never arrived");
        // Raw::recv panics on a frame that does not decode: a torn frame would.
        let (_, body) = c.recv().expect("the new connection stays up");
        let FrameBody::RaftMessage(b) = body else {
            panic!("{:?}", body.frame_type())
        };
        for m in &b.messages {
            let seq = seq_of(m);
            if seq == 9999 {
                marker = true;
                continue;
            }
            assert!(seq > last, "out of order: {seq} after {last}");
            last = seq;
        }
        if !marker && tx.transport.queued(32).unwrap().messages == 0 {
            assert!(tx.transport.send(heartbeat(31, 32, 9999)));
        }
    }
}

/// A connection with nothing to send pings under the receiver's idle timeout instead of
/// being closed and reconnected.
#[test]
fn idle_connections_stay_up() {
    idle_connections_stay_up_at(recorder(7, 52), 51);
}

/// The same when a loop reads the connection (it answers the pings).
#[test]
fn idle_connections_stay_up_when_a_loop_reads() {
    idle_connections_stay_up_at(loop_recorder(7, 52), 53);
}

fn idle_connections_stay_up_at(rec: Arc<Recorder>, from: u64) {
    logs();
    let (l, addr) = listen();
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let _svc = PeerService::start(l, rec.clone(), limits);
    let tx = Sender::start(from, 7, &[(52, addr)], fast_config());
    assert!(tx.transport.send(heartbeat(from, 52, 1)));
    rec.wait_for(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(tx.transport.send(heartbeat(from, 52, 2)));
    rec.wait_for(2, Duration::from_secs(10));
    let connected = format!("store {from} connected");
    assert_eq!(logged(log::Level::Info, &[&connected]).len(), 1);
    let closed = format!("peer connection from store {from}");
    assert!(logged(log::Level::Info, &[&closed, "idle timeout"]).is_empty());
}

/// A loop reading a connection (as a store loop does) answers pings, steps the messages of
/// a batch frame, and ends the connection with an error frame on a frame a store may not
/// send, when the connection idles past its timeout, and when the loop stops.
#[test]
fn a_loop_reading_a_connection_answers_pings_and_closes_it_with_an_error_frame() {
    logs();
    let (l, addr) = listen();
    let rec = loop_recorder(9, 62);
    let limits = Limits {
        idle_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let _svc = PeerService::start(l, rec.clone(), limits);

    let (mut c, _) = Raw::handshake_as_store(addr, 9, 61);
    c.ping(1);
    let batch = |seqs: &[u64]| {
        FrameBody::RaftMessage(RaftMessageBatch {
            messages: seqs.iter().map(|s| heartbeat(61, 62, *s)).collect(),
        })
    };
    c.send(&batch(&[1, 2, 3]), 0);
    // A message for another store is dropped, the rest of its frame is not.
    let mut mixed = vec![heartbeat(61, 62, 4), heartbeat(61, 63, 99)];
    mixed.push(heartbeat(61, 62, 5));
    c.send(
        &FrameBody::RaftMessage(RaftMessageBatch { messages: mixed }),
        0,
    );
    rec.wait_for(5, Duration::from_secs(10));
    let got: Vec<u64> = rec.got.lock().unwrap().iter().map(seq_of).collect();
    assert_eq!(got, [1, 2, 3, 4, 5]);
    c.ping(2);
    c.send(&store_hello(9, 61), 7);
    c.expect_error(FrameErrorCode::UnexpectedFrame, "may not send Handshake");

    // Quiet past the idle timeout: closed with a reason.
    let (mut c, _) = Raw::handshake_as_store(addr, 9, 64);
    std::thread::sleep(Duration::from_millis(700));
    c.expect_error(FrameErrorCode::IdleTimeout, "idle timeout");

    // The loop stops: its connections are told the store is stopping.
    let (mut c, _) = Raw::handshake_as_store(addr, 9, 65);
    c.ping(3);
    rec.stop_reading.store(true, Ordering::Release);
    c.expect_error(FrameErrorCode::ShuttingDown, "stopping");
}

/// Byte-level check against a hand-written receiver: the handshake the transport sends,
/// many queued messages in ONE RaftMessage frame, and a snapshot as 1 MiB chunks with a
/// data-less first message, in queue order.
#[test]
fn queued_messages_share_a_frame_and_snapshots_are_chunked() {
    logs();
    let (l, addr) = listen();
    let tx = Sender::start(11, 77, &[(12, addr)], fast_config());
    // Queue before the peer answers: all of it waits for the connection.
    for seq in 0..500 {
        assert!(tx.transport.send(heartbeat(11, 12, seq)));
    }
    let data = pattern((2 << 20) + (1 << 19), 5);
    assert!(tx.transport.send(snapshot(11, 12, data.clone())));
    assert!(tx.transport.send(heartbeat(11, 12, 500)));
    let q = tx.transport.queued(12).unwrap();
    assert_eq!(q.messages, 502);
    assert!(q.bytes > data.len());

    let (s, _) = l.accept().unwrap();
    let mut c = Raw::wrap(s);
    let (_, hello) = c.recv().unwrap();
    let FrameBody::Handshake(h) = hello else {
        panic!("{hello:?}")
    };
    assert_eq!(h.protocol_version, 1);
    assert_eq!(h.cluster_id, 77);
    assert_eq!(h.role, Role::Store as i32);
    assert_eq!(h.store_id, 11);
    c.send(
        &FrameBody::HandshakeAck(HandshakeAck {
            protocol_version: 1,
            cluster_id: 77,
            store_id: 12,
            max_frame_size_bytes: 16 << 20,
            max_in_flight_requests: 1024,
            idle_timeout_ms: 60_000,
        }),
        0,
    );
    let (id, first) = c.recv().unwrap();
    assert_eq!(id, 0);
    let FrameBody::RaftMessage(batch) = first else {
        panic!("{:?}", first.frame_type())
    };
    assert_eq!(batch.messages.len(), 500, "queued messages share one frame");
    for (i, m) in batch.messages.iter().enumerate() {
        assert_eq!(seq_of(m), i as u64);
    }
    let mut chunks = Vec::new();
    loop {
        let (id, body) = c.recv().unwrap();
        let FrameBody::SnapshotChunk(chunk) = body else {
            panic!("{:?}", body.frame_type())
        };
        let last = chunk.last;
        chunks.push((id, chunk));
        if last {
            break;
        }
    }
    assert_eq!(chunks.len(), 3);
    let stream = chunks[0].0;
    assert!(stream != 0);
    assert!(chunks.iter().all(|(id, _)| *id == stream));
    assert_eq!(
        chunks.iter().map(|(_, c)| c.data.len()).collect::<Vec<_>>(),
        vec![1 << 20, 1 << 20, 1 << 19]
    );
    assert!(chunks[1].1.message.is_none() && chunks[2].1.message.is_none());
    let head = chunks[0].1.message.clone().unwrap();
    let m = eraftpb::Message::parse_from_bytes(&head.message).unwrap();
    assert_eq!(m.get_msg_type(), MessageType::MsgSnapshot);
    assert!(m.get_snapshot().get_data().is_empty(), "data moved out");
    assert_eq!(m.get_snapshot().get_metadata().index, 1234);
    let joined: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.data.clone()).collect();
    assert!(joined == data);
    // And the message queued behind the snapshot comes after it.
    let (_, body) = c.recv().unwrap();
    let FrameBody::RaftMessage(batch) = body else {
        panic!("{:?}", body.frame_type())
    };
    assert_eq!(batch.messages.len(), 1);
    assert_eq!(seq_of(&batch.messages[0]), 500);
}

/// (b) A 5 MiB snapshot and a 3 MiB non-snapshot message arrive intact through the real
/// peer service, in order with the small messages around them.
#[test]
fn large_messages_arrive_intact_via_chunks() {
    large_messages_arrive_intact_via_chunks_at(recorder(7, 22));
}

/// The same when a loop reads the connection (and reassembles the chunk streams).
#[test]
fn large_messages_arrive_intact_via_chunks_when_a_loop_reads() {
    large_messages_arrive_intact_via_chunks_at(loop_recorder(7, 22));
}

fn large_messages_arrive_intact_via_chunks_at(rec: Arc<Recorder>) {
    logs();
    let (l, addr) = listen();
    let _svc = PeerService::start(l, rec.clone(), Limits::default());
    let tx = Sender::start(21, 7, &[(22, addr)], fast_config());
    let data = pattern(5 << 20, 9);
    let mut append = eraftpb::Message::default();
    append.set_msg_type(MessageType::MsgAppend);
    append.from = 21;
    append.to = 22;
    append.mut_entries().push(eraftpb::Entry {
        index: 77,
        data: Bytes::from(pattern(3 << 20, 3)),
        ..Default::default()
    });
    let append_bytes = append.write_to_bytes().unwrap();

    assert!(tx.transport.send(heartbeat(21, 22, 1)));
    assert!(tx.transport.send(snapshot(21, 22, data.clone())));
    assert!(tx.transport.send(heartbeat(21, 22, 2)));
    assert!(tx.transport.send(wrap(21, 22, append_bytes.clone())));
    assert!(tx.transport.send(heartbeat(21, 22, 3)));
    rec.wait_for(5, Duration::from_secs(30));
    let got = rec.got.lock().unwrap();
    assert_eq!(seq_of(&got[0]), 1);
    let snap = eraftpb::Message::parse_from_bytes(&got[1].message).unwrap();
    assert_eq!(snap.get_msg_type(), MessageType::MsgSnapshot);
    assert_eq!(snap.get_snapshot().get_metadata().index, 1234);
    assert_eq!(
        snap.get_snapshot().get_metadata().get_conf_state().voters,
        vec![21, 22]
    );
    assert!(
        snap.get_snapshot().get_data() == &data[..],
        "snapshot data intact"
    );
    assert_eq!(got[1].region_id, 1);
    assert_eq!(got[1].from_peer.as_ref().unwrap().store_id, 21);
    assert_eq!(seq_of(&got[2]), 2);
    assert!(got[3].message == append_bytes, "large append intact");
    assert_eq!(seq_of(&got[4]), 3);
}

/// (c) A peer that is down: the queue fills, `send` then fails at once and memory stays
/// bounded (messages and bytes); the outage is logged once; when the peer comes up the
/// queued messages are delivered in order and new ones flow.
#[test]
fn dead_peer_bounds_the_queue_and_reconnect_delivers() {
    logs();
    let addr = proc::free_addr();
    let config = PeerNetConfig {
        queue_capacity: 64,
        max_queued_bytes: 1 << 20,
        ..fast_config()
    };
    let tx = Sender::start(31, 7, &[(32, addr)], config);
    let accepted = (0..1000)
        .filter(|seq| tx.transport.send(heartbeat(31, 32, *seq)))
        .count();
    assert_eq!(accepted, 64, "exactly the queue's capacity is accepted");
    // Retries go on for a while; the queue does not grow and sends keep failing fast.
    std::thread::sleep(Duration::from_millis(800));
    let q = tx.transport.queued(32).unwrap();
    assert_eq!(q.messages, 64);
    let started = Instant::now();
    assert!(!tx.transport.send(heartbeat(31, 32, 5000)));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "send never blocks"
    );
    let warned = logged(log::Level::Warn, &["store 32", "unreachable"]);
    assert_eq!(
        warned.len(),
        1,
        "one line per outage, not per retry: {warned:?}"
    );

    // The peer comes up on the same address (std listeners set SO_REUSEADDR).
    let deadline = Instant::now() + Duration::from_secs(5);
    let l = loop {
        match TcpListener::bind(addr) {
            Ok(l) => break l,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot rebind {addr}: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let rec = recorder(7, 32);
    let _svc = PeerService::start(l, rec.clone(), Limits::default());
    rec.wait_for(64, Duration::from_secs(20));
    for seq in 64..200 {
        send_retrying(&tx.transport, heartbeat(31, 32, seq));
    }
    rec.wait_for(200 - 64 + 64, Duration::from_secs(20));
    let got = rec.got.lock().unwrap();
    let seqs: Vec<u64> = got.iter().map(seq_of).collect();
    let want: Vec<u64> = (0..200).collect();
    assert_eq!(seqs, want);
    drop(got);
    assert_eq!(
        logged(log::Level::Info, &["connected to store 32", "again after"]).len(),
        1
    );

    // The byte bound: one big message always fits an empty queue, a second does not.
    let dead = Sender::start(31, 7, &[(33, proc::free_addr())], config);
    assert!(dead.transport.send(snapshot(31, 33, vec![1; 2 << 20])));
    assert!(!dead.transport.send(heartbeat(31, 33, 1)));
    assert!(dead.transport.queued(33).unwrap().bytes > 2 << 20);
}

/// (d) A store of another cluster is refused: nothing is delivered, the sender logs a
/// clear error (once, however often it retries), and the receiver answers
/// ClusterIdMismatch.
#[test]
fn cluster_id_mismatch_is_refused_and_logged() {
    logs();
    let (l, addr) = listen();
    let rec = recorder(7, 42);
    let _svc = PeerService::start(l, rec.clone(), Limits::default());
    let tx = Sender::start(41, 8, &[(42, addr)], fast_config());
    assert!(tx.transport.send(heartbeat(41, 42, 1)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while logged(log::Level::Error, &["store 42", "ClusterIdMismatch"]).is_empty() {
        assert!(Instant::now() < deadline, "no error logged");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Several more attempts (backoff tops out at 200 ms here), still one error line.
    std::thread::sleep(Duration::from_millis(1000));
    let errors = logged(log::Level::Error, &["store 42", "ClusterIdMismatch"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("this is cluster 7, not 8"),
        "{}",
        errors[0]
    );
    assert_eq!(rec.len(), 0);

    // The same refusal by hand: a clear error frame, then the close.
    let mut c = Raw::connect(addr);
    c.send(&store_hello(8, 41), 0);
    c.expect_error(
        FrameErrorCode::ClusterIdMismatch,
        "this is cluster 7, not 8",
    );
    // Cluster id 0 is no wildcard between stores.
    let mut c = Raw::connect(addr);
    c.send(&store_hello(0, 41), 0);
    c.expect_error(FrameErrorCode::ClusterIdMismatch, "not 0");
}

fn put(key: &[u8], value: &[u8]) -> RaftCmdRequest {
    RaftCmdRequest {
        requests: vec![Request {
            cmd_type: CmdType::Put as i32,
            put: Some(raft_cmdpb::PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn get(key: &[u8]) -> RaftCmdRequest {
    RaftCmdRequest {
        requests: vec![Request {
            cmd_type: CmdType::Get as i32,
            get: Some(raft_cmdpb::GetRequest {
                key: key.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn client(addr: SocketAddr) -> Raw {
    let mut c = Raw::connect(addr);
    c.send(
        &FrameBody::Handshake(Handshake {
            protocol_version: 1,
            role: Role::Client as i32,
            client_name: "test".into(),
            ..Default::default()
        }),
        0,
    );
    assert!(matches!(c.recv(), Some((_, FrameBody::HandshakeAck(_)))));
    c
}

/// Sends `req` until it succeeds (a new cluster may still be electing), bounded.
fn call_ok(c: &mut Raw, req: &RaftCmdRequest) -> raft_cmdpb::RaftCmdResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 1000;
    loop {
        id += 1;
        c.send(&FrameBody::Request(req.clone()), id);
        match c.recv() {
            Some((rid, FrameBody::Response(r))) if rid == id => {
                if r.header.as_ref().is_none_or(|h| h.error.is_none()) {
                    return r;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Instant::now() < deadline, "the request never succeeded");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (e) Garbage and truncated chunk streams on a live server's peer port: dropped streams
/// and closed connections, never a panic, and the server keeps serving clients and peers.
/// Also: each listener refuses the other's role with a message naming the right port.
#[test]
fn bad_chunk_streams_do_not_hurt_a_live_server() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        client_addr: "127.0.0.1:0".parse().unwrap(),
        peer_addr: "127.0.0.1:0".parse().unwrap(),
        peer_net: PeerNetConfig {
            max_snapshot_bytes: 64 << 10,
            ..PeerNetConfig::default()
        },
        ..ServerConfig::default()
    })
    .unwrap();
    let cluster = server.node().cluster_id();
    let peer = server.peer_addr();
    assert_ne!(peer.port(), 0);
    let mut c = client(server.local_addr());
    call_ok(&mut c, &put(b"before", b"1"));

    let (mut p, ack) = Raw::handshake_as_store(peer, cluster, 2);
    assert_eq!(ack.store_id, 1);
    assert_eq!(ack.cluster_id, cluster);
    let chunk = |message: Option<RaftMessage>, data: Vec<u8>, last: bool| {
        FrameBody::SnapshotChunk(SnapshotChunk {
            message,
            data,
            last,
        })
    };
    // Never stepped into raft: addressed to a store that is not this one.
    let elsewhere = |message: Vec<u8>| wrap(2, 9, message);
    // A continuation without a first chunk.
    p.send(&chunk(None, vec![1; 100], false), 5);
    p.send(&chunk(None, vec![1; 100], true), 5);
    // An undecodable raft message in a first chunk.
    p.send(
        &chunk(Some(wrap(2, 1, vec![0xff; 11])), vec![1; 10], true),
        6,
    );
    // Two first chunks interleaved.
    p.send(&chunk(Some(elsewhere(Vec::new())), vec![2; 10], false), 7);
    p.send(&chunk(Some(elsewhere(Vec::new())), vec![2; 10], false), 8);
    p.send(&chunk(None, vec![2; 10], true), 7);
    p.send(&chunk(None, vec![2; 10], true), 8);
    // A stream past the maximum (64 KiB here).
    p.send(
        &chunk(Some(elsewhere(Vec::new())), vec![3; 40 << 10], false),
        9,
    );
    p.send(&chunk(None, vec![3; 40 << 10], false), 9);
    p.send(&chunk(None, vec![3; 40 << 10], true), 9);
    // Snapshot data sent with a raft message that is no snapshot.
    let mut m = eraftpb::Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.to = 1;
    m.from = 2;
    p.send(
        &chunk(
            Some(wrap(2, 1, m.write_to_bytes().unwrap())),
            vec![4; 10],
            true,
        ),
        10,
    );
    // A raft message batch holding garbage: the store loop drops what does not decode.
    p.send(
        &FrameBody::RaftMessage(pontoon_client::proto::framepb::RaftMessageBatch {
            messages: vec![wrap(2, 1, vec![0xff; 5]), elsewhere(vec![1, 2, 3])],
        }),
        0,
    );
    // The connection survived all of that.
    p.ping(77);
    // A truncated chunk frame, then the connection goes away.
    let mut frame = Vec::new();
    chunk(Some(elsewhere(Vec::new())), vec![5; 5000], true)
        .encode(11, 1 << 24, &mut frame)
        .unwrap();
    p.s.write_all(&frame[..frame.len() / 2]).unwrap();
    drop(p);
    // A chunk frame with a corrupt payload: ChecksumMismatch and the close.
    let (mut p, _) = Raw::handshake_as_store(peer, cluster, 2);
    let mut frame = Vec::new();
    chunk(None, vec![6; 100], true)
        .encode(12, 1 << 24, &mut frame)
        .unwrap();
    let n = frame.len();
    frame[n - 1] ^= 0xff;
    p.s.write_all(&frame).unwrap();
    p.expect_error(FrameErrorCode::ChecksumMismatch, "");
    // A chunk whose payload is no SnapshotChunk.
    let (mut p, _) = Raw::handshake_as_store(peer, cluster, 2);
    let mut frame = Vec::new();
    pontoon_client::frame::encode_frame(
        FrameType::SnapshotChunk,
        13,
        &[0x0f, 0xff],
        1 << 20,
        &mut frame,
    )
    .unwrap();
    p.s.write_all(&frame).unwrap();
    p.expect_error(FrameErrorCode::UndecodablePayload, "");
    // Plain garbage.
    let mut g = Raw::connect(peer);
    g.s.write_all(b"\x00\x01garbage that is not a frame at all......")
        .unwrap();
    g.expect_error(FrameErrorCode::BadMagic, "");
    // A store may not send client requests on the peer port.
    let (mut p, _) = Raw::handshake_as_store(peer, cluster, 2);
    p.send(&FrameBody::Request(get(b"before")), 3);
    p.expect_error(FrameErrorCode::UnexpectedFrame, "peer port");
    // Bad store ids.
    let mut b = Raw::connect(peer);
    b.send(&store_hello(cluster, 0), 0);
    b.expect_error(FrameErrorCode::UnexpectedFrame, "store id 0");
    let mut b = Raw::connect(peer);
    b.send(&store_hello(cluster, 1), 0);
    b.expect_error(FrameErrorCode::UnexpectedFrame, "this is store 1");
    // Each port refuses the other role and names the right one.
    let mut w = Raw::connect(peer);
    w.send(
        &FrameBody::Handshake(Handshake {
            protocol_version: 1,
            role: Role::Client as i32,
            ..Default::default()
        }),
        0,
    );
    w.expect_error(FrameErrorCode::UnexpectedFrame, "client port");
    let mut w = Raw::connect(server.local_addr());
    w.send(&store_hello(cluster, 2), 0);
    w.expect_error(FrameErrorCode::UnexpectedFrame, "peer port");

    assert!(!logged(
        log::Level::Warn,
        &["dropping a snapshot chunk stream", "exceeds 65536 bytes"]
    )
    .is_empty());
    // Still serving: clients, with nothing lost, and peers.
    call_ok(&mut c, &put(b"after", b"2"));
    let r = call_ok(&mut c, &get(b"before"));
    assert_eq!(r.responses[0].get.as_ref().unwrap().value, b"1");
    let (mut p, _) = Raw::handshake_as_store(peer, cluster, 3);
    p.ping(1);
    drop(c);
    server.shutdown().unwrap();
    // Both listeners are closed after shutdown.
    assert!(TcpStream::connect(peer).is_err());
}

/// End to end: three real servers elect a leader and replicate writes over the TCP
/// transport, including an entry too large for one batch (it travels as a chunk stream).
#[test]
fn three_servers_replicate_over_tcp() {
    logs();
    let (_dirs, servers) = proc::three_servers();
    // Everyone agrees on a leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let seen: Vec<u64> = servers
            .iter()
            .map(|s| s.node().status().leader.load(Ordering::Acquire))
            .collect();
        if seen[0] != 0 && seen.iter().all(|l| *l == seen[0]) {
            break seen[0];
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let l = &servers[(leader - 1) as usize];
    let mut c = client(l.local_addr());
    call_ok(&mut c, &put(b"k", b"v"));
    let big = pattern(3 << 20, 1);
    call_ok(&mut c, &put(b"big", &big));
    let r = call_ok(&mut c, &get(b"big"));
    assert!(r.responses[0].get.as_ref().unwrap().value == big);
    // Every store applies everything the leader applied.
    let target = l.node().status().applied.load(Ordering::Acquire);
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &servers {
        while s.node().status().applied.load(Ordering::Acquire) < target {
            assert!(Instant::now() < deadline, "a follower never caught up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    drop(c);
    for s in servers {
        s.shutdown().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Real store loops with compacting logs, wired only by TCP: a store that starts late must
// be sent a region snapshot, which crosses the network as a chunk stream.

struct Store {
    node: Arc<pontoon_server::node::Node>,
    engine: Arc<pontoon_engine::Engine>,
    stop: watch::Sender<bool>,
    net: Option<JoinHandle<()>>,
}

impl Store {
    fn start(
        id: u64,
        dir: &std::path::Path,
        listener: TcpListener,
        members: &[(u64, SocketAddr)],
    ) -> Store {
        let engine =
            Arc::new(pontoon_engine::Engine::open(dir.join("engine"), Default::default()).unwrap());
        let log = Arc::new(
            pontoon_raftlog::LogStore::open(dir.join("raftlog"), Default::default()).unwrap(),
        );
        let others: HashMap<u64, String> = members
            .iter()
            .filter(|(i, _)| *i != id)
            .map(|(i, a)| (*i, a.to_string()))
            .collect();
        let limits = Limits::default();
        let (transport, driver) = TcpTransport::with_config(id, 99, limits, others, fast_config());
        let node = Arc::new(
            pontoon_server::node::Node::start(
                pontoon_server::node::NodeConfig {
                    cluster_id: 99,
                    store_id: id,
                    initial_voters: members.iter().map(|(i, _)| *i).collect(),
                    compact_log_count: 50,
                    compact_check_ticks: 1,
                    ..Default::default()
                },
                engine.clone(),
                log,
                Arc::new(transport),
            )
            .unwrap(),
        );
        let (stop, stop_rx) = watch::channel(false);
        let sink: Arc<dyn RaftSink> = node.clone();
        let net = std::thread::spawn(move || {
            tokio_uring::start(async move {
                let listener = tokio_uring::net::TcpListener::from_std(listener);
                let peers = tokio_uring::spawn(pontoon_server::service::serve_peers(
                    listener,
                    sink,
                    limits,
                    1 << 30,
                    stop_rx.clone(),
                ));
                driver.run(stop_rx).await;
                let _ = peers.await;
            })
        });
        Store {
            node,
            engine,
            stop,
            net: Some(net),
        }
    }

    fn leader(&self) -> u64 {
        self.node.status().leader.load(Ordering::Acquire)
    }

    fn applied(&self) -> u64 {
        self.node.status().applied.load(Ordering::Acquire)
    }

    fn local(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        pontoon_server::mvcc::range(&self.engine, "default", b"k", b"l", usize::MAX, false)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.net.take() {
            let _ = t.join();
        }
        self.node.stop();
    }
}

/// Submits `req` to `node` and waits (bounded) for the answer.
fn submit(node: &pontoon_server::node::Node, req: RaftCmdRequest) -> raft_cmdpb::RaftCmdResponse {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    assert!(node.submit(req, tx));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rx.try_recv() {
            Ok(r) => return r,
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                assert!(Instant::now() < deadline, "no answer");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A store that was down while the others compacted their logs past what it has gets a
/// region snapshot of several MiB over TCP (a chunk stream) and holds the same data.
#[test]
fn a_late_store_catches_up_by_snapshot_over_tcp() {
    logs();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let listeners: Vec<(TcpListener, SocketAddr)> = (0..3).map(|_| listen()).collect();
    let members: Vec<(u64, SocketAddr)> = listeners
        .iter()
        .enumerate()
        .map(|(i, (_, a))| (i as u64 + 1, *a))
        .collect();
    let mut listeners = listeners.into_iter().map(|(l, _)| l);
    let s1 = Store::start(1, dirs[0].path(), listeners.next().unwrap(), &members);
    let s2 = Store::start(2, dirs[1].path(), listeners.next().unwrap(), &members);
    // Store 3's port is held, never accepted on, until it starts: its peers' handshakes
    // time out and they retry.
    let l3 = listeners.next().unwrap();
    let running = [&s1, &s2];
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let l = s1.leader();
        if l != 0 && l != 3 && l == s2.leader() {
            break l;
        }
        assert!(Instant::now() < deadline, "no leader among stores 1 and 2");
        std::thread::sleep(Duration::from_millis(20));
    };
    let lead = running[(leader - 1) as usize];
    let mut want = Vec::new();
    for i in 0..300 {
        let key = format!("k{i:04}").into_bytes();
        let value = pattern(10 << 10, i);
        let r = submit(&lead.node, put(&key, &value));
        assert!(r.header.as_ref().is_none_or(|h| h.error.is_none()), "{r:?}");
        want.push((key, value));
    }
    // Both running stores compact their logs past the start (compaction drops only what
    // the engine has flushed).
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in running {
        while s.node.status().first_log_index.load(Ordering::Acquire) <= 100 {
            assert!(Instant::now() < deadline, "the log was never compacted");
            s.engine.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let s3 = Store::start(3, dirs[2].path(), l3, &members);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s3.node.status().snapshots_applied.load(Ordering::Acquire) == 0
        || s3.applied() < lead.applied()
    {
        assert!(
            Instant::now() < deadline,
            "store 3 never caught up (applied {}, snapshots {})",
            s3.applied(),
            s3.node.status().snapshots_applied.load(Ordering::Acquire)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = s3.local();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "store 3 holds other data");
}
