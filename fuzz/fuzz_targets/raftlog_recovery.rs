//! Recovery of arbitrary bytes: a segment file made of the fuzzer's input (after a
//! valid segment header half of the time) is opened through the in-memory file system
//! under every recovery mode. Recovery must return an error or a consistent log —
//! never panic — and a log it accepts must answer every read and take a write.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pontoon_raftlog::fault::MemFs;
use pontoon_raftlog::{format, Config, LogBatch, LogStore, RecoveryMode};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = Vec::with_capacity(rest.len() + 16);
    if flags & 1 == 1 {
        bytes.extend_from_slice(&format::segment_header(1));
    }
    bytes.extend_from_slice(rest);
    let mode = match (flags >> 1) % 3 {
        0 => RecoveryMode::AbsoluteConsistency,
        1 => RecoveryMode::TolerateCorruptedTail,
        _ => RecoveryMode::TolerateAnyCorruption,
    };
    let dir = Path::new("/fuzz");
    let fs = MemFs::new();
    // The store's block-aligned (O_DIRECT) append path after recovery, or the buffered one.
    fs.set_direct(flags & 0x80 != 0);
    fs.put_file(&dir.join("0000000000000001.raftlog"), &bytes);
    let cfg = Config {
        recovery_mode: mode,
        preallocate: false,
        target_file_size: 1 << 20,
        ..Config::default()
    };
    let Ok(store) = LogStore::open_with_fs(dir, cfg.clone(), Arc::new(fs.clone())) else {
        return;
    };
    for stream in store.streams() {
        let (Some(first), Some(last)) = (store.first_index(stream), store.last_index(stream))
        else {
            panic!("listed stream {stream} has no bounds");
        };
        assert!(last + 1 >= first);
        if last >= first {
            let es = store
                .entries(stream, first, last + 1, u64::MAX)
                .expect("indexed entries must be readable");
            assert_eq!(es.len() as u64, last + 1 - first);
            for e in &es {
                assert_eq!(store.term(stream, e.index).ok(), Some(e.term));
            }
        }
    }
    let mut b = LogBatch::new();
    b.put_state(u64::MAX, b"k", b"v").expect("small state");
    store
        .write(b, true)
        .expect("a recovered store takes writes");
    drop(store);
    LogStore::open_with_fs(dir, cfg, Arc::new(fs)).expect("reopen after a clean write");
});
