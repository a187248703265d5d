//! Feeds arbitrary bytes to the region-snapshot decoder (`pontoon_server::snapshot::verify`)
//! and to the raft snapshot framing around it (`pontoon_server::region::decode_snapshot_data`:
//! a length-prefixed `metapb.Region`, then the snapshot).
//! It must return `Ok` or a typed error, never panic, never read out of bounds, and say the
//! same thing about the same bytes every time.
//!
//! Raw bytes almost never carry the magic, the version and a valid crc32, so when the first
//! byte is odd the rest is framed as a version-1 snapshot (magic and version in front, a
//! correct checksum behind), which sends the fuzzer straight into the structural decoder:
//! lengths, the column-family table, record framing, order and range checks, record count.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pontoon_server::snapshot::verify;

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = b"PNSN".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    // The framing never panics; what it accepts re-encodes to the same bytes' tail.
    if let Some((region, rest)) = pontoon_server::region::decode_snapshot_data(data) {
        assert!(rest.len() <= data.len());
        let again = pontoon_server::region::encode_snapshot_data(&region, rest);
        assert!(pontoon_server::region::decode_snapshot_data(&again).is_some());
    }
    let bytes = match data.split_first() {
        Some((&flags, rest)) if flags & 1 == 1 => framed(rest),
        _ => data.to_vec(),
    };
    let first = verify(&bytes);
    let second = verify(&bytes);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "verify is deterministic"),
        (Err(_), Err(_)) => {}
        _ => panic!("verify changed its mind: {first:?} then {second:?}"),
    }
    if let Ok(meta) = first {
        // What is accepted has a well-formed range.
        assert!(meta.end_key.is_empty() || meta.start_key < meta.end_key);
    }
});
