//! Feeds arbitrary bytes to the protocol's `FrameDecoder`, split into chunks whose sizes
//! come from the input itself, and decodes every complete frame's payload as the protobuf
//! message its frame type names. Every step must return `Ok` or a typed error, never
//! panic, and the decoder must never buffer more than it was fed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pontoon_client::{Frame, FrameBody, FrameDecoder};

/// Small, so that length checks and oversized headers are exercised too.
const MAX_FRAME_SIZE_BYTES: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte seeds the chunking; the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::with_max_frame_size(MAX_FRAME_SIZE_BYTES);
    let mut fed = 0usize;
    let mut rest = stream;
    let mut step = u32::from(seed);
    while !rest.is_empty() {
        // A deterministic walk over chunk sizes 1..=64, including single bytes.
        step = step.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = ((step >> 16) as usize % 64 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        decoder.feed(chunk);
        fed += chunk.len();
        assert!(decoder.buffered_len() <= fed);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= MAX_FRAME_SIZE_BYTES as usize);
                    if let Ok(body) = FrameBody::decode(&frame) {
                        // What decodes must encode again.
                        let mut out = Vec::new();
                        let encoded = body.encode(frame.request_id, u32::MAX, &mut out);
                        assert!(encoded.is_ok());
                        assert!(Frame::decode(&out, u32::MAX).is_ok());
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(decoder.is_failed());
                    assert!(decoder.next_frame().is_err());
                    return;
                }
            }
        }
    }
    let _ = decoder.finish();
});
