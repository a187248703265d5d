//! The Pontoon node.
//!
//! Work in progress (issue 4): today this crate holds [`peer_storage`], the bridge that lets
//! raft-rs keep its log, hard state and conf state in Pontoon's raft-log store. The store
//! loop, apply, the protocol server and the `pontoon` binary build on it next.

#![deny(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod peer_storage;

pub use peer_storage::PeerStorage;
