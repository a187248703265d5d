//! The store loop's inbox: its channel, and the peer connections it reads itself.
//!
//! Raft messages from other stores used to arrive on the network thread, which decoded
//! them and passed them on over the loop's channel: two wake-ups (the network thread's, then
//! the loop's) on the way of every append to a follower and of every ack back to its
//! leader, and on a busy machine each wake-up is a wait of tens of microseconds. So once a
//! peer connection has handshaken, the network thread hands its reading to the loop
//! ([`AdoptedPeer`]); the loop waits on those sockets and on its channel together (one
//! epoll set, with an eventfd for the channel) and decodes frames as they come. Writing on
//! the connection (pongs, the error frame that closes it) stays with the network thread's
//! task, which waits until the loop says the connection ended (or drops it: the loop
//! stopped).
//!
//! Nothing waits for the loop in memory here: it reads a connection only when it gets to
//! it, at most [`READ_PER_ROUND`] bytes per round, and what it has not read stays in the
//! socket, where TCP flow control pushes back on the sending store (whose queue is bounded).
//!
//! Senders on the channel ([`LoopSender`]) write the eventfd only while the loop sleeps:
//! the loop announces that it is about to sleep, then looks at the channel once more, and
//! a sender looks at the announcement after queueing (a fence on both sides), so a message
//! is never left unseen by a sleeping loop, and a busy loop costs its senders no system
//! call.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use pontoon_client::proto::raft_serverpb::RaftMessage;
use pontoon_client::{FrameBody, FrameDecoder, Limits};
use tokio::sync::oneshot;

use crate::peer_net::ChunkAssembler;
use crate::service::{on_peer_frame, Close, Outbox};

/// The channel's eventfd.
const WAKER: Token = Token(0);

/// Bytes read from one connection in one round at most: a snapshot stream arriving does not
/// hold up the round's other work.
pub const READ_PER_ROUND: usize = 4 << 20;

/// Bytes asked of the socket per `recv`.
const READ_SIZE: usize = 256 << 10;

/// Whether the loop sleeps, and how to wake it.
struct LoopWake {
    sleeping: AtomicBool,
    waker: Waker,
}

impl LoopWake {
    /// Wakes the loop if it announced it sleeps; called after queueing a message.
    fn notify(&self) {
        // Pairs with the fence in `Inbox::wait`: either the loop, about to sleep, finds the
        // message on the channel, or this finds the loop's announcement.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the store loop: {e}");
            }
        }
    }
}

/// The sending half of a loop's channel: a message wakes the loop if it sleeps.
pub struct LoopSender<T> {
    tx: mpsc::Sender<T>,
    wake: Arc<LoopWake>,
}

impl<T> Clone for LoopSender<T> {
    fn clone(&self) -> Self {
        LoopSender {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<T> LoopSender<T> {
    /// Queues `msg`; it comes back if the inbox is gone.
    pub fn send(&self, msg: T) -> Result<(), mpsc::SendError<T>> {
        self.tx.send(msg)?;
        self.wake.notify();
        Ok(())
    }
}

/// A handshaken peer connection whose reading moves to the store loop.
pub struct AdoptedPeer {
    /// A duplicate of the connection's socket descriptor (still in blocking mode: the
    /// network thread's writes share the file's flags; reads here pass `MSG_DONTWAIT`).
    pub sock: socket2::Socket,
    /// The store on the other end.
    pub store: u64,
    /// Its address, for the log.
    pub addr: SocketAddr,
    /// The decoder, with what was read after the handshake already in it.
    pub decoder: FrameDecoder,
    /// The connection's writer: pongs go there.
    pub out: Outbox,
    /// Limits of the connection (idle timeout, frame size).
    pub limits: Limits,
    /// Largest snapshot chunk stream taken.
    pub max_snapshot_bytes: u64,
    /// Told why the connection ends; dropped unsent when the loop stops.
    pub closed: oneshot::Sender<Close>,
}

struct Conn {
    peer: AdoptedPeer,
    chunks: ChunkAssembler,
    /// Bytes may be waiting: set by a readiness event, cleared when a read would block.
    readable: bool,
    last_read: Instant,
}

/// What the store loop waits on: its channel and the peer connections it reads.
pub struct Inbox<T> {
    rx: mpsc::Receiver<T>,
    wake: Arc<LoopWake>,
    poll: Poll,
    events: Events,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    store_id: u64,
    buf: Vec<u8>,
    /// Readiness is up to date (the last thing done was a poll).
    polled: bool,
}

/// A channel into a loop that also reads peer connections for store `store_id`.
pub fn channel<T>(store_id: u64) -> io::Result<(LoopSender<T>, Inbox<T>)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let wake = Arc::new(LoopWake {
        sleeping: AtomicBool::new(false),
        waker,
    });
    let (tx, rx) = mpsc::channel();
    let sender = LoopSender {
        tx,
        wake: wake.clone(),
    };
    let inbox = Inbox {
        rx,
        wake,
        poll,
        events: Events::with_capacity(64),
        conns: HashMap::new(),
        next_token: 1,
        store_id,
        buf: vec![0; READ_SIZE],
        polled: false,
    };
    Ok((sender, inbox))
}

/// Reads what `fd` has, without waiting.
fn recv_nowait(fd: &socket2::Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call, and the
    // descriptor is open for as long as `fd` is borrowed.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.unsigned_abs())
}

impl<T> Inbox<T> {
    /// The next message on the channel, without waiting.
    pub fn try_recv(&self) -> Result<T, mpsc::TryRecvError> {
        self.rx.try_recv()
    }

    /// Waits until a message is on the channel (returned), a connection has bytes to read,
    /// or `timeout` passes. Returns at once if a connection has unread bytes already.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<T>, mpsc::TryRecvError> {
        if self.conns.values().any(|c| c.readable) {
            return Ok(None);
        }
        self.wake.sleeping.store(true, Ordering::Relaxed);
        // Pairs with the fence in `LoopWake::notify`.
        fence(Ordering::SeqCst);
        match self.rx.try_recv() {
            Ok(msg) => {
                self.wake.sleeping.store(false, Ordering::Relaxed);
                return Ok(Some(msg));
            }
            Err(mpsc::TryRecvError::Empty) => {}
            Err(e) => return Err(e),
        }
        self.poll_events(Some(timeout));
        self.polled = true;
        self.wake.sleeping.store(false, Ordering::Relaxed);
        match self.rx.try_recv() {
            Ok(msg) => Ok(Some(msg)),
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn poll_events(&mut self, timeout: Option<Duration>) {
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("the store loop cannot wait for its connections: {e}");
                // Do not spin on a broken poll.
                std::thread::sleep(timeout.unwrap_or_default().min(Duration::from_millis(10)));
            }
        }
        for ev in self.events.iter() {
            if let Some(c) = self.conns.get_mut(&ev.token()) {
                c.readable = true;
            }
        }
    }

    /// Takes over reading `peer`. Not possible (no epoll registration): the connection is
    /// closed at once.
    pub fn adopt(&mut self, peer: AdoptedPeer) {
        let token = Token(self.next_token);
        self.next_token += 1;
        let fd = peer.sock.as_raw_fd();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            log::warn!(
                "cannot read the connection from store {} ({}) on the store loop: {e}",
                peer.store,
                peer.addr
            );
            let _ = peer.closed.send(Close::Gone);
            return;
        }
        let chunks = ChunkAssembler::new(peer.max_snapshot_bytes);
        self.conns.insert(
            token,
            Conn {
                peer,
                chunks,
                // Bytes may have come before the registration.
                readable: true,
                last_read: Instant::now(),
            },
        );
    }

    /// Number of connections read here.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Reads every connection with bytes waiting (at most [`READ_PER_ROUND`] each) and
    /// appends the raft messages of the frames completed to `into`. A connection that
    /// ends (closed, failed, or a bad frame) is told why and dropped.
    pub fn read(&mut self, into: &mut Vec<RaftMessage>) {
        if self.conns.is_empty() {
            return;
        }
        if !std::mem::take(&mut self.polled) {
            self.poll_events(Some(Duration::ZERO));
        }
        let mut ended = Vec::new();
        for (token, c) in self.conns.iter_mut() {
            if !c.readable {
                continue;
            }
            if let Err(close) = read_conn(c, self.store_id, &mut self.buf, into) {
                ended.push((*token, close));
            }
        }
        for (token, close) in ended {
            self.close(token, close);
        }
    }

    /// Closes connections that sent nothing for their idle timeout.
    pub fn close_idle(&mut self, now: Instant) {
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_read) > c.peer.limits.idle_timeout)
            .map(|(t, _)| *t)
            .collect();
        for token in idle {
            self.close(
                token,
                Close::Error(
                    pontoon_client::proto::framepb::FrameErrorCode::IdleTimeout,
                    "idle timeout".into(),
                    0,
                ),
            );
        }
    }

    fn close(&mut self, token: Token, why: Close) {
        let Some(c) = self.conns.remove(&token) else {
            return;
        };
        let fd = c.peer.sock.as_raw_fd();
        // The registration outlives this descriptor (the network thread's one keeps the
        // socket open): remove it first.
        if let Err(e) = self.poll.registry().deregister(&mut SourceFd(&fd)) {
            log::debug!("deregistering a peer connection: {e}");
        }
        let _ = c.peer.closed.send(why);
    }
}

/// Reads `c` until it would block or has given [`READ_PER_ROUND`] bytes, decoding frames as
/// they complete.
fn read_conn(
    c: &mut Conn,
    me: u64,
    buf: &mut [u8],
    into: &mut Vec<RaftMessage>,
) -> Result<(), Close> {
    let mut taken = 0;
    while c.readable && taken < READ_PER_ROUND {
        match recv_nowait(&c.peer.sock, buf) {
            Ok(0) => return Err(Close::Gone),
            Ok(n) => {
                c.peer.decoder.feed(buf.get(..n).unwrap_or_default());
                taken += n;
                // A short read emptied the socket: bytes that come later raise a new
                // (edge-triggered) readiness event, so the read that would only say
                // `WouldBlock` is not needed (one syscall per connection and round).
                if n < buf.len() {
                    c.readable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("reading the connection from store {}: {e}", c.peer.store);
                return Err(Close::Gone);
            }
        }
        loop {
            let frame = match c.peer.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(Close::Error(e.code(), e.to_string(), 0)),
            };
            let body = FrameBody::decode(&frame)
                .map_err(|e| Close::Error(e.code(), e.to_string(), frame.request_id))?;
            let msgs = on_peer_frame(
                me,
                c.peer.store,
                frame.request_id,
                body,
                &mut c.chunks,
                &c.peer.out,
                &c.peer.limits,
            )?;
            into.extend(msgs);
        }
    }
    if taken > 0 {
        c.last_read = Instant::now();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A message sent while the loop sleeps wakes it (through the eventfd), long before its
    /// timeout; one sent before it sleeps is returned without sleeping.
    #[test]
    fn a_send_wakes_a_sleeping_loop_and_none_is_missed() {
        let (tx, mut inbox) = channel::<u32>(1).unwrap();
        tx.send(1).unwrap();
        assert_eq!(inbox.wait(Duration::from_secs(30)).unwrap(), Some(1));
        for round in 0..200u32 {
            let tx = tx.clone();
            let sender = std::thread::spawn(move || {
                if round % 2 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                tx.send(round).unwrap();
            });
            let started = Instant::now();
            let mut got = None;
            while got.is_none() {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "round {round}: the send never woke the loop"
                );
                got = inbox.wait(Duration::from_secs(30)).unwrap();
            }
            assert_eq!(got, Some(round));
            sender.join().unwrap();
        }
        drop(tx);
        assert!(
            inbox.wait(Duration::from_millis(1)).is_err(),
            "disconnected"
        );
    }

    /// Bytes arriving on an adopted connection wake the loop; a closed connection is
    /// reported to its task and dropped.
    #[test]
    fn an_adopted_connection_wakes_the_loop_and_its_close_is_reported() {
        use std::io::Write;
        let (_tx, mut inbox) = channel::<u32>(2).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, addr) = listener.accept().unwrap();
        let (out, _out_rx) = tokio::sync::mpsc::unbounded_channel();
        let (closed, mut closed_rx) = oneshot::channel();
        inbox.adopt(AdoptedPeer {
            sock: socket2::Socket::from(server),
            store: 3,
            addr,
            decoder: FrameDecoder::new(&Limits::default()),
            out,
            limits: Limits::default(),
            max_snapshot_bytes: 1 << 20,
            closed,
        });
        assert_eq!(inbox.connections(), 1);
        let mut got = Vec::new();
        inbox.read(&mut got);
        assert!(got.is_empty());
        let heartbeat = RaftMessage {
            region_id: 9,
            to_peer: Some(pontoon_client::proto::metapb::Peer {
                id: 2,
                store_id: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut frame = Vec::new();
        FrameBody::RaftMessage(pontoon_client::proto::framepb::RaftMessageBatch {
            messages: vec![heartbeat],
        })
        .encode(0, 1 << 20, &mut frame)
        .unwrap();
        client.write_all(&frame).unwrap();
        let started = Instant::now();
        while got.is_empty() {
            assert!(started.elapsed() < Duration::from_secs(20), "never read");
            assert_eq!(inbox.wait(Duration::from_secs(30)).unwrap(), None);
            inbox.read(&mut got);
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].region_id, 9);
        drop(client);
        while inbox.connections() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "close not seen"
            );
            let _ = inbox.wait(Duration::from_secs(30)).unwrap();
            inbox.read(&mut got);
        }
        assert!(matches!(closed_rx.try_recv(), Ok(Close::Gone)));
    }
}
