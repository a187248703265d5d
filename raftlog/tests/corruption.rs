//! Torn tails and corruption under each recovery mode.

mod common;

use std::path::PathBuf;

use common::*;
use pontoon_raftlog::fault::MemFs;
use pontoon_raftlog::format::END_MARKER;
use pontoon_raftlog::{Config, Error, RecoveryMode};

fn cfg(mode: RecoveryMode) -> Config {
    Config {
        target_file_size: 1 << 20,
        preallocate: false,
        recovery_mode: mode,
        ..Config::default()
    }
}

fn batch(i: u64) -> Vec<Item> {
    vec![
        Item::Append(1, entries(i * 3 + 1, 3, 1, i as u8)),
        Item::Put(1, b"hs".to_vec(), vec![i as u8; 8]),
    ]
}

/// Writes three batches into one segment. Returns the fs, the segment path, the
/// oracles after 2 and 3 batches, and the offsets where records 2 and 3 start. (Without
/// preallocation a segment ends with the end marker written after its last record.)
fn three_batches() -> (MemFs, PathBuf, Oracle, Oracle, usize, usize) {
    let fs = MemFs::new();
    let store = open_mem(&fs, &cfg(RecoveryMode::TolerateCorruptedTail)).unwrap();
    let path = fs.paths()[0].clone();
    let mut o = Oracle::default();
    let mut starts = Vec::new();
    let mut two = Oracle::default();
    for i in 0..3 {
        starts.push(fs.file_bytes(&path).unwrap().len() - END_MARKER.len());
        store.write(Oracle::batch(&batch(i)), true).unwrap();
        o.apply(&batch(i));
        if i == 1 {
            two = o.clone();
        }
    }
    drop(store);
    (fs, path, two, o, starts[1], starts[2])
}

#[test]
fn torn_last_record_at_every_byte_is_truncated() {
    let (fs, path, two, three, _, last) = three_batches();
    let bytes = fs.file_bytes(&path).unwrap();
    let bytes = &bytes[..bytes.len() - END_MARKER.len()];
    let keys = vec![b"hs".to_vec()];
    for cut in last..bytes.len() {
        for zero_fill in [false, true] {
            let mut torn = bytes[..cut].to_vec();
            if zero_fill {
                // Preallocated space: the rest reads as zeros.
                torn.resize(bytes.len() + 100, 0);
            }
            let fs2 = MemFs::new();
            fs2.put_file(&path, &torn);
            let store = open_mem(&fs2, &cfg(RecoveryMode::TolerateCorruptedTail))
                .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            two.matches(&store, &keys).unwrap();
            // The store appends after the cut, and that survives a crash.
            store.write(Oracle::batch(&batch(2)), true).unwrap();
            drop(store);
            let store = open_mem(&fs2.crash(), &cfg(RecoveryMode::AbsoluteConsistency)).unwrap();
            three.matches(&store, &keys).unwrap();

            let fs3 = MemFs::new();
            fs3.put_file(&path, &torn);
            let r = open_mem(&fs3, &cfg(RecoveryMode::AbsoluteConsistency));
            if cut == last {
                assert!(r.is_ok());
            } else {
                match r {
                    Err(Error::Corruption { file, offset, .. })
                    | Err(Error::ChecksumMismatch { file, offset, .. }) => {
                        assert_eq!((file, offset), (path.clone(), last as u64))
                    }
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn flipped_byte_mid_segment_is_a_typed_error() {
    let (fs, path, ..) = three_batches();
    let (_, _, _, _, second, third) = three_batches();
    let bytes = fs.file_bytes(&path).unwrap();
    // Every byte of the middle record: header (length, type, crc) and payload.
    for pos in second..third {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x40;
        for mode in [
            RecoveryMode::TolerateCorruptedTail,
            RecoveryMode::AbsoluteConsistency,
        ] {
            let fs2 = MemFs::new();
            fs2.put_file(&path, &bad);
            match open_mem(&fs2, &cfg(mode)) {
                Err(Error::ChecksumMismatch { file, offset, .. })
                | Err(Error::Corruption { file, offset, .. }) => {
                    assert_eq!(file, path);
                    assert_eq!(offset, second as u64, "pos {pos}");
                }
                // A flip in the length field makes the record look torn: the tail is
                // cut (tolerated) — only the length bytes may do that.
                Ok(_)
                    if mode == RecoveryMode::TolerateCorruptedTail
                        && (4..8).contains(&(pos - second)) => {}
                other => panic!("pos {pos} {mode:?}: {other:?}"),
            }
        }
    }
    // A payload flip names the checksum.
    let mut bad = bytes.clone();
    bad[second + 20] ^= 1;
    let fs2 = MemFs::new();
    fs2.put_file(&path, &bad);
    assert!(matches!(
        open_mem(&fs2, &cfg(RecoveryMode::TolerateCorruptedTail)),
        Err(Error::ChecksumMismatch { .. })
    ));
}

#[test]
fn corruption_in_older_segment_per_mode() {
    let fs = MemFs::new();
    let c = Config {
        target_file_size: 4096,
        ..cfg(RecoveryMode::TolerateCorruptedTail)
    };
    let store = open_mem(&fs, &c).unwrap();
    for i in 0..150 {
        store.write(Oracle::batch(&batch(i)), true).unwrap();
    }
    drop(store);
    let paths = fs.paths();
    assert!(paths.len() >= 3);
    let first = paths[0].clone();
    let mut bytes = fs.file_bytes(&first).unwrap();
    // The segment ends with its last record and the 12-byte end marker.
    let len = bytes.len() - END_MARKER.len();
    // Torn-looking damage at the end of an *older* segment is still corruption.
    bytes[len - 3] ^= 0xff;
    fs.put_file(&first, &bytes);
    for mode in [
        RecoveryMode::TolerateCorruptedTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        match open_mem(
            &fs,
            &Config {
                recovery_mode: mode,
                ..c.clone()
            },
        ) {
            Err(Error::ChecksumMismatch { file, .. }) => assert_eq!(file, first),
            other => panic!("{mode:?}: {other:?}"),
        }
    }
    let store = open_mem(
        &fs,
        &Config {
            recovery_mode: RecoveryMode::TolerateAnyCorruption,
            ..c
        },
    )
    .unwrap();
    assert_eq!(store.last_index(1), Some(450));
}

#[test]
fn garbage_segment_never_panics() {
    let c = cfg(RecoveryMode::TolerateAnyCorruption);
    let mut x = 0x1234_5678_9abc_def0u64;
    for len in [0usize, 3, 16, 17, 40, 200] {
        for _ in 0..50 {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if len >= 16 {
                bytes[..16].copy_from_slice(&pontoon_raftlog::format::segment_header(1));
            }
            for mode in [
                RecoveryMode::TolerateAnyCorruption,
                RecoveryMode::TolerateCorruptedTail,
                RecoveryMode::AbsoluteConsistency,
            ] {
                let fs = MemFs::new();
                fs.put_file(&dir().join("0000000000000001.raftlog"), &bytes);
                let _ = open_mem(
                    &fs,
                    &Config {
                        recovery_mode: mode,
                        ..c.clone()
                    },
                );
            }
        }
    }
}

mod mutated {
    use super::*;
    use pontoon_raftlog::LogStore;
    use proptest::prelude::*;

    /// What the fuzz target checks: an accepted log answers every read and takes a write.
    fn check_consistent(store: &LogStore) {
        for stream in store.streams() {
            let first = store.first_index(stream).unwrap();
            let last = store.last_index(stream).unwrap();
            assert!(last + 1 >= first);
            if last >= first {
                let es = store.entries(stream, first, last + 1, u64::MAX).unwrap();
                assert_eq!(es.len() as u64, last + 1 - first);
                for e in &es {
                    assert_eq!(store.term(stream, e.index).unwrap(), e.term);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// A valid segment with random bytes flipped and a random cut: recovery returns an
        /// error or a consistent, writable log, in every mode; never panics.
        #[test]
        fn mutated_segment_recovers_or_errors(
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
            cut in any::<prop::sample::Index>(),
            mode in 0u8..3,
        ) {
            let (fs, path, ..) = three_batches();
            let mut bytes = fs.file_bytes(&path).unwrap();
            for (i, x) in flips {
                let i = i.index(bytes.len());
                bytes[i] ^= x;
            }
            bytes.truncate(cut.index(bytes.len() + 1).max(1));
            let mode = [
                RecoveryMode::AbsoluteConsistency,
                RecoveryMode::TolerateCorruptedTail,
                RecoveryMode::TolerateAnyCorruption,
            ][mode as usize];
            let fs2 = MemFs::new();
            fs2.put_file(&path, &bytes);
            if let Ok(store) = open_mem(&fs2, &cfg(mode)) {
                check_consistent(&store);
                store.write(Oracle::batch(&[Item::Put(77, b"k".to_vec(), b"v".to_vec())]), true).unwrap();
                drop(store);
                let store = open_mem(&fs2.crash(), &cfg(mode)).unwrap();
                check_consistent(&store);
                prop_assert_eq!(store.get_state(77, b"k"), Some(b"v".to_vec()));
            }
        }
    }
}

/// The same rules on real files (recovery reads them through mmap), with preallocated
/// segments: zeros after the records are not corruption, a flipped byte is.
#[test]
fn real_files_torn_tail_and_flipped_byte() {
    use pontoon_raftlog::LogStore;
    let dir = tempfile::tempdir().unwrap();
    let c = Config {
        target_file_size: 1 << 20,
        ..Config::default()
    };
    let store = LogStore::open(dir.path(), c.clone()).unwrap();
    for i in 0..3 {
        store.write(Oracle::batch(&batch(i)), true).unwrap();
    }
    drop(store);
    let path = dir.path().join("0000000000000001.raftlog");
    let clean = std::fs::read(&path).unwrap();
    assert_eq!(clean.len(), 1 << 20, "preallocated");
    let end = clean.iter().rposition(|&b| b != 0).unwrap() + 1;

    // Torn tail: the last 5 bytes of the last record never made it.
    let mut torn = clean.clone();
    torn[end - 5..end].fill(0);
    std::fs::write(&path, &torn).unwrap();
    let store = LogStore::open(dir.path(), c.clone()).unwrap();
    assert_eq!(store.last_index(1), Some(6));
    store.write(Oracle::batch(&batch(2)), true).unwrap();
    drop(store);
    assert_eq!(
        LogStore::open(dir.path(), c.clone()).unwrap().last_index(1),
        Some(9)
    );

    // A flipped byte inside the first record: typed error naming file and offset.
    let mut bad = std::fs::read(&path).unwrap();
    bad[40] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    match LogStore::open(dir.path(), c) {
        Err(Error::ChecksumMismatch { file, offset, .. }) => {
            assert_eq!(file, path);
            assert_eq!(offset, 16);
        }
        other => panic!("{other:?}"),
    }
}
