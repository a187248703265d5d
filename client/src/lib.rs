//! Pontoon's wire protocol.
//!
//! A connection carries length-prefixed [frames](frame): a fixed 24-byte little-endian
//! header (magic, version, frame type, flags, request id, payload length, crc32 of the
//! payload) followed by a protobuf payload whose type depends on the frame type. The
//! byte-for-byte description is `docs/PROTOCOL.md` at the repository root.
//!
//! - [`proto`]: the protobuf messages, generated at build time from `proto/*.proto`
//!   (kvproto's numbering for `metapb`, `errorpb`, `raft_serverpb`, `raft_cmdpb`;
//!   Pontoon's own `pontoonpb` and `framepb`).
//! - [`frame`]: frame header, frame types, the encoder.
//! - [`decoder`]: [`FrameDecoder`], a streaming decoder that survives arbitrary bytes.
//! - [`body`]: [`FrameBody`], a frame's payload decoded as its protobuf type.
//! - [`limits`]: [`Limits`], the per-connection limits and their defaults.
//! - [`client`]: the async [`Client`](client::Client), which routes commands by region
//!   through a [`region_cache::RegionCache`]; [`blocking`]: its blocking wrapper.
//! - [`output`]: pontoonctl's output formats.

#![deny(missing_docs, clippy::unwrap_used)]
// Tests may unwrap; library code may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod blocking;
pub mod body;
pub mod client;
pub mod decoder;
pub mod error;
pub mod frame;
mod key_span;
pub mod limits;
pub mod output;
pub mod region_cache;

pub use body::FrameBody;
pub use decoder::FrameDecoder;
pub use error::{DecodeError, EncodeError};
pub use frame::{Frame, FrameHeader, FrameType, HEADER_LEN, MAGIC, PROTOCOL_VERSION};
pub use limits::Limits;
/// The `prost` this crate's messages are generated for (for `Message::encode`/`decode`).
pub use prost;

/// Protobuf messages generated from `client/proto/*.proto` by `prost`.
///
/// Modules are named after the protobuf packages. Fields of enum type are `i32` in the
/// generated structs (prost's convention); use the enum's `try_from(i32)` to interpret them.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod proto {
    /// Cluster metadata: `Cluster`, `Store`, `Region`, `RegionEpoch`, `Peer` (kvproto numbering).
    pub mod metapb {
        include!(concat!(env!("OUT_DIR"), "/metapb.rs"));
    }
    /// Region errors carried in `RaftResponseHeader.error` (kvproto numbering).
    pub mod errorpb {
        include!(concat!(env!("OUT_DIR"), "/errorpb.rs"));
    }
    /// Store-to-store messages and persisted raft states (kvproto numbering).
    pub mod raft_serverpb {
        include!(concat!(env!("OUT_DIR"), "/raft_serverpb.rs"));
    }
    /// `RaftCmdRequest` / `RaftCmdResponse` and their parts (kvproto numbering).
    pub mod raft_cmdpb {
        include!(concat!(env!("OUT_DIR"), "/raft_cmdpb.rs"));
    }
    /// Pontoon's etcd-style additions: `ResponseHeader`, `KeyValue`, `Range*`.
    pub mod pontoonpb {
        include!(concat!(env!("OUT_DIR"), "/pontoonpb.rs"));
    }
    /// Payloads of connection-level frames: `Handshake`, `HandshakeAck`, `FrameError`,
    /// `RaftMessageBatch`.
    pub mod framepb {
        include!(concat!(env!("OUT_DIR"), "/framepb.rs"));
    }
}
