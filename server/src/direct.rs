//! Writing to a connection from the thread that has the bytes.
//!
//! Connections live on the io_uring network thread, and handing bytes to it costs a
//! wake-up of that thread; on a busy machine every such wake-up is a wait of tens of
//! microseconds on the way of a write (a leader's append, a follower's ack). So while a
//! peer connection's writer task is idle, the store loop writes itself: a non-blocking
//! `send` on a duplicate of the socket's descriptor. What the socket does not take at once
//! goes to the task, which then writes everything until it is idle again.
//!
//! Client answers do not take this path: a single store's loop is its busiest thread, and
//! a `send` per connection and round there cost more than the wake-up it saves (single
//! store, 64 clients over 8 connections: 90-105K puts/s against 109-113K with the answers
//! handed to the network thread, alternating runs), and three stores gained nothing from it
//! (45.5-47.1K against 46.3-46.9K).
//!
//! The owner of the [`DirectSocket`] (behind a mutex shared by the senders and the task)
//! keeps the order: a sender that queues for the task sets `task_writes` under the lock, and
//! the task clears it only under the lock, after finding its queue empty. So bytes from the
//! two writers never interleave within a frame, and they leave in the order they were sent.

use std::os::fd::{AsRawFd, BorrowedFd};

use tokio_uring::net::TcpStream;

/// A descriptor of `stream`'s socket of its own (closing it leaves `stream` open).
pub(crate) fn duplicate(stream: &TcpStream) -> std::io::Result<socket2::Socket> {
    // SAFETY: the descriptor is `stream`'s, open for as long as `stream` lives, which
    // outlives this borrow; the duplicate made from it is a descriptor of its own.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    Ok(socket2::Socket::from(fd.try_clone_to_owned()?))
}

/// A connection's socket as the senders see it.
#[derive(Default)]
pub(crate) struct DirectSocket {
    /// A duplicate of the connected socket's descriptor; `None` while not connected.
    sock: Option<socket2::Socket>,
    /// The connection's task writes (it has queued bytes or a write in flight): senders
    /// queue for it.
    pub(crate) task_writes: bool,
}

/// How far a direct send got.
pub(crate) enum Sent {
    /// All of it is on the socket.
    All,
    /// The socket's buffer is full: the bytes from this offset on were not sent.
    From(usize),
    /// The socket failed (the connection's task finds out on its own).
    Failed,
}

impl DirectSocket {
    /// Opens the direct path onto `stream` (the task writes first: `task_writes` is set).
    /// Without a descriptor to spare, the task keeps writing everything.
    pub(crate) fn open(&mut self, stream: &TcpStream) {
        self.sock = match duplicate(stream) {
            Ok(sock) => Some(sock),
            Err(e) => {
                log::warn!(
                    "cannot duplicate a socket ({e}); its writes stay on the network thread"
                );
                None
            }
        };
        self.task_writes = true;
    }

    /// Closes the direct path (the connection ended): senders queue from now on, and the
    /// duplicate descriptor no longer keeps the socket open.
    pub(crate) fn close(&mut self) {
        self.sock = None;
        self.task_writes = true;
    }

    /// True if a sender may write now.
    pub(crate) fn is_open(&self) -> bool {
        !self.task_writes && self.sock.is_some()
    }

    /// Sends `buf` without blocking; after anything but [`Sent::All`] the caller hands the
    /// rest to the task (and sets `task_writes`) or, on failure, [`DirectSocket::close`]s.
    pub(crate) fn send(&self, buf: &[u8]) -> Sent {
        let Some(sock) = &self.sock else {
            return Sent::Failed;
        };
        let mut sent = 0;
        while sent < buf.len() {
            match sock.send_with_flags(&buf[sent..], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Sent::From(sent),
                Err(e) => {
                    log::debug!("a direct write failed: {e}");
                    return Sent::Failed;
                }
            }
        }
        Sent::All
    }
}
