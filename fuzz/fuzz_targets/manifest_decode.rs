//! Feeds arbitrary bytes to the manifest decoder. Decoding must return `Ok` or `Err`, never
//! panic, and every edit it accepts must survive an encode/decode round trip unchanged, alone
//! and as part of a re-encoded manifest.
//!
//! Raw bytes almost never carry the magic and valid checksums, so when the first byte is odd
//! the rest is cut into payloads (each prefixed by a one-byte length) and framed as a valid
//! manifest, which sends the fuzzer straight into `VersionEdit::decode`.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pontoon_engine::manifest::{decode_manifest, encode_header, encode_record, VersionEdit};

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn framed(mut rest: &[u8]) -> Vec<u8> {
    let mut out = encode_header();
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        frame(&tail[..n], &mut out);
        rest = &tail[n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let file = Path::new("MANIFEST");
    let bytes = match data.split_first() {
        Some((&flags, rest)) if flags & 1 == 1 => framed(rest),
        _ => data.to_vec(),
    };
    let Ok(edits) = decode_manifest(&bytes, file) else {
        return;
    };
    let mut whole = encode_header();
    for edit in &edits {
        let payload = edit.encode();
        let again = VersionEdit::decode(&payload, file, 0).expect("re-encoded edit must decode");
        assert_eq!(&again, edit, "edit round trip");
        whole.extend_from_slice(&encode_record(edit));
    }
    let again = decode_manifest(&whole, file).expect("re-encoded manifest must decode");
    assert_eq!(again, edits, "manifest round trip");
});
