//! The Pontoon node: regions (key ranges) replicated by raft-rs across the stores of a
//! cluster, one raft group per region (multi-raft).
//!
//! - [`node`]: the store loop (routing, raft ready handling of all region peers with one
//!   asynchronous raft-log write per round, splits); `peer` (private): one region peer
//!   (proposals, apply, ReadIndex reads, log compaction, snapshots, membership, status).
//! - [`region`]: region metadata (ranges, epochs, persisted region state, id allocation).
//! - [`peer_storage`]: raft-rs's `Storage` over one stream of the raft-log store.
//! - [`mvcc`]: etcd's revision/version rules over the engine.
//! - [`snapshot`]: region snapshots for followers too far behind the leader's log.
//! - [`transport`] and [`peer_net`]: raft messages between stores over TCP; [`inbox`]: what
//!   the store loop waits on (its channel, and the peer connections it reads itself);
//!   [`raft_codec`]: raft-rs's messages to and from bytes.
//! - [`service`] and [`server`]: the client and peer services on tokio-uring, and putting a
//!   store together; the `pontoon` binary is `src/main.rs`.
//!
//! `ARCHITECTURE.md` at the repository root describes the data flow.

#![deny(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod append_check;
mod direct;
mod ids;
pub mod inbox;
pub mod meta;
pub mod mvcc;
pub mod node;
mod peer;
pub mod peer_net;
pub mod peer_storage;
pub mod raft_codec;
pub mod region;
pub mod reply;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod transport;

pub use peer_storage::PeerStorage;
