//! Property tests: the decoder survives arbitrary input in arbitrary chunkings, and valid
//! streams decode the same however they are split.

use pontoon_client::{Frame, FrameBody, FrameDecoder, FrameType};
use proptest::prelude::*;

const MAX: u32 = 4096;

/// Feeds `bytes` split at `cuts`, decoding every frame's payload; returns the frames
/// and the first error, if any.
fn run(bytes: &[u8], cuts: &[usize]) -> (Vec<Frame>, Option<pontoon_client::DecodeError>) {
    let mut d = FrameDecoder::with_max_frame_size(MAX);
    let mut frames = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.push(bytes.len());
    for p in points {
        d.feed(&bytes[at..p.max(at)]);
        at = p.max(at);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    let _ = FrameBody::decode(&f);
                    frames.push(f);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    assert!(d.buffered_len() <= bytes.len());
    (frames, d.finish().err())
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    (
        1u8..=9,
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(t, id, p)| Frame::new(FrameType::from_u8(t).unwrap_or(FrameType::Ping), id, p))
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let _ = run(&bytes, &cuts);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        header in proptest::collection::vec(any::<u8>(), 16..17),
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        t in 1u8..=9,
    ) {
        let mut bytes = b"PNTN".to_vec();
        bytes.push(1);
        bytes.push(t);
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&tail);
        let _ = run(&bytes, &[]);
    }

    #[test]
    fn valid_streams_decode_the_same_in_any_chunking(
        frames in proptest::collection::vec(frame_strategy(), 0..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(MAX, &mut bytes).unwrap();
        }
        let (got, err) = run(&bytes, &cuts);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn a_flipped_byte_gives_frames_or_an_error(
        frames in proptest::collection::vec(frame_strategy(), 1..4),
        at in any::<usize>(),
        bit in 0u8..8,
    ) {
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(MAX, &mut bytes).unwrap();
        }
        let i = at % bytes.len();
        bytes[i] ^= 1 << bit;
        let (got, err) = run(&bytes, &[]);
        // A flipped bit is never silently accepted as the original stream.
        prop_assert!(err.is_some() || got != frames);
    }
}
