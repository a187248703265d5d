//! How the store loop reaches other stores.
//!
//! The store loop hands every outgoing raft message to a [`Transport`] and never waits for
//! it: a transport queues the message (bounded) and delivers it from its own thread or
//! runtime, or drops it. Raft tolerates loss (it retries appends, heartbeats and votes), so
//! a full queue or a broken connection costs latency, never safety. The TCP transport that
//! `pontoon` runs lives in [`crate::peer_net`]; tests use in-process transports with
//! message filters.

use pontoon_client::proto::raft_serverpb::RaftMessage;

/// Sends raft messages to other stores. Implementations must not block.
pub trait Transport: Send + Sync + 'static {
    /// Queues `msg` for the store `msg.to_peer.store_id`. Returns false if it was dropped
    /// at once (no route, queue full): the store loop then tells raft the peer is
    /// unreachable so it stops pipelining appends to it.
    fn send(&self, msg: RaftMessage) -> bool;

    /// Queues `msgs`, all for store `store_id`, in order and as one unit: the store loop
    /// hands over everything one round produced for a store at once, so a transport can
    /// put it in one frame and wake its sender once. False if any of them was dropped.
    fn send_batch(&self, store_id: u64, msgs: Vec<RaftMessage>) -> bool {
        let _ = store_id;
        let mut all = true;
        for m in msgs {
            all &= self.send(m);
        }
        all
    }

    /// Learns (or updates) the address of a store, e.g. one added by a membership change.
    /// Transports that route by other means ignore it.
    fn set_address(&self, _store_id: u64, _addr: &str) {}
}

/// A transport that reaches nobody: the one a single-store cluster needs.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTransport;

impl Transport for NoTransport {
    fn send(&self, msg: RaftMessage) -> bool {
        log::debug!(
            "no route to store {}: dropping a raft message",
            msg.to_peer.map(|p| p.store_id).unwrap_or_default()
        );
        false
    }
}
