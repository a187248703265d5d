//! The Pontoon node.
//!
//! Work in progress (issue 4). Today this crate holds [`peer_storage`], the bridge that lets
//! raft-rs keep its log, hard state and conf state in Pontoon's raft-log store, and
//! [`mvcc`], etcd's revision/version rules over the engine, and [`snapshot`], the region
//! snapshots raft sends to followers too far behind its log. The store loop, apply, the
//! protocol server and the `pontoon` binary build on them next.

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
