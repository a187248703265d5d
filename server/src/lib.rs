//! The Pontoon node: one region replicated by raft-rs across the stores of a cluster.
//!
//! - [`node`]: the store loop (raft ready handling with asynchronous raft-log writes, apply,
//!   ReadIndex reads, log compaction, snapshots, membership, status).
//! - [`peer_storage`]: raft-rs's `Storage` over one stream of the raft-log store.
//! - [`mvcc`]: etcd's revision/version rules over the engine.
//! - [`snapshot`]: region snapshots for followers too far behind the leader's log.
//! - [`transport`] and [`peer_net`]: raft messages between stores over TCP.
//! - [`service`] and [`server`]: the client and peer services on tokio-uring, and putting a
//!   store together; the `pontoon` binary is `src/main.rs`.
//!
//! `ARCHITECTURE.md` at the repository root describes the data flow.

#![deny(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod mvcc;
pub mod node;
pub mod peer_net;
pub mod peer_storage;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod transport;

pub use peer_storage::PeerStorage;
