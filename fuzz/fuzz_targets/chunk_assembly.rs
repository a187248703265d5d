//! Feeds a sequence of `SnapshotChunk` frames, decoded from arbitrary bytes, to the peer
//! service's `ChunkAssembler`: every push must return a message, nothing yet, or a typed
//! error, never panic, and the assembler must never hold more than its bound.
//!
//! Input layout, repeated: stream id selector (1 byte, so streams repeat and interleave),
//! payload length (1 byte), payload (that many bytes, decoded as a `SnapshotChunk`;
//! undecodable payloads are skipped, as the frame layer would refuse them).

#![no_main]

use libfuzzer_sys::fuzz_target;
use pontoon_client::prost::Message as _;
use pontoon_client::proto::raft_serverpb::SnapshotChunk;
use pontoon_server::peer_net::ChunkAssembler;

/// Small, so the size bound is reached.
const MAX_BYTES: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    let mut asm = ChunkAssembler::new(MAX_BYTES);
    let mut rest = data;
    while let [sel, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, tail) = tail.split_at(n);
        rest = tail;
        let Ok(chunk) = SnapshotChunk::decode(payload) else {
            continue;
        };
        let _ = asm.push(u64::from(sel % 4), chunk);
        assert!(
            asm.buffered() as u64 <= MAX_BYTES,
            "the assembler holds {} bytes, over its bound",
            asm.buffered()
        );
    }
});
