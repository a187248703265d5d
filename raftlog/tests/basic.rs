//! API behaviour on the real file system and on the in-memory one, each ending with a
//! reopen.

mod common;

use std::sync::Arc;

use common::*;
use pontoon_raftlog::fault::MemFs;
use pontoon_raftlog::{Config, Entry, Error, LogBatch, LogStore};

fn check_basic(store_fn: &dyn Fn() -> LogStore) {
    let s = store_fn();
    let mut b = LogBatch::new();
    b.add_entries(1, &entries(1, 10, 1, 1)).unwrap();
    b.add_entries(2, &entries(5, 3, 2, 2)).unwrap();
    b.put_state(1, b"hard", b"hs1").unwrap();
    s.write(b, true).unwrap();
    assert_eq!(s.first_index(1), Some(1));
    assert_eq!(s.last_index(1), Some(10));
    assert_eq!(s.first_index(2), Some(5));
    assert_eq!(s.last_index(2), Some(7));
    assert_eq!(s.term(2, 6).unwrap(), 2);
    assert_eq!(s.entries(1, 1, 11, u64::MAX).unwrap(), entries(1, 10, 1, 1));
    assert_eq!(s.get_state(1, b"hard").as_deref(), Some(&b"hs1"[..]));

    // Conflicting append at index 6 with a new term truncates 6..=10.
    let mut b = LogBatch::new();
    b.add_entries(1, &entries(6, 2, 3, 9)).unwrap();
    s.write(b, true).unwrap();
    assert_eq!(s.last_index(1), Some(7));
    assert_eq!(s.term(1, 5).unwrap(), 1);
    assert_eq!(s.term(1, 6).unwrap(), 3);
    assert!(matches!(s.term(1, 8), Err(Error::Unavailable { .. })));

    let mut b = LogBatch::new();
    b.compact_to(1, 3);
    b.delete_state(1, b"hard").unwrap();
    b.remove_stream(2);
    s.write(b, false).unwrap();
    assert!(matches!(s.term(1, 2), Err(Error::Compacted { .. })));
    assert_eq!(s.first_index(1), Some(3));
    assert_eq!(s.first_index(2), None);
    assert_eq!(s.get_state(1, b"hard"), None);
    // max_bytes limits the result but returns at least one entry.
    assert_eq!(s.entries(1, 3, 8, 0).unwrap().len(), 1);
    drop(s);

    let s = store_fn();
    let mut want = entries(3, 3, 1, 1);
    want.extend(entries(6, 2, 3, 9));
    assert_eq!(s.entries(1, 3, 8, u64::MAX).unwrap(), want);
    assert_eq!(s.first_index(2), None);
    assert_eq!(s.get_state(1, b"hard"), None);
    assert_eq!(s.streams(), vec![1]);
}

#[test]
fn basic_on_real_files_io_uring() {
    let _ = env_logger_init();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    check_basic(&|| LogStore::open(&p, small_config()).unwrap());
    let s = LogStore::open(&p, small_config()).unwrap();
    eprintln!("io_uring in use: {}", s.stats().io_uring);
}

#[test]
fn basic_on_real_files_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    let cfg = Config {
        use_io_uring: false,
        ..small_config()
    };
    check_basic(&|| LogStore::open(&p, cfg.clone()).unwrap());
    assert!(!LogStore::open(&p, cfg).unwrap().stats().io_uring);
}

#[test]
fn basic_on_mem_fs() {
    let fs = MemFs::new();
    check_basic(&|| open_mem(&fs, &small_config()).unwrap());
}

fn env_logger_init() -> Option<()> {
    None
}

#[test]
fn gap_append_restarts_stream() {
    let fs = MemFs::new();
    let s = open_mem(&fs, &small_config()).unwrap();
    let mut b = LogBatch::new();
    b.add_entries(1, &entries(1, 5, 1, 1)).unwrap();
    b.add_entries(1, &entries(10, 2, 2, 2)).unwrap();
    s.write(b, true).unwrap();
    assert_eq!(s.first_index(1), Some(10));
    assert_eq!(s.last_index(1), Some(11));
    // Compacting past the end leaves an empty stream that continues there.
    let mut b = LogBatch::new();
    b.compact_to(1, 20);
    s.write(b, true).unwrap();
    assert_eq!((s.first_index(1), s.last_index(1)), (Some(20), Some(19)));
    drop(s);
    let s = open_mem(&fs, &small_config()).unwrap();
    assert_eq!((s.first_index(1), s.last_index(1)), (Some(20), Some(19)));
}

#[test]
fn purge_rewrites_idle_stream_and_deletes_segments() {
    let fs = MemFs::new();
    let cfg = small_config();
    let s = open_mem(&fs, &cfg).unwrap();
    // An idle stream with two entries and a state, written first.
    let mut b = LogBatch::new();
    b.add_entries(7, &entries(1, 2, 1, 7)).unwrap();
    b.put_state(7, b"hs", b"x").unwrap();
    s.write(b, true).unwrap();
    // A busy stream that keeps compacting.
    for i in 0..300u64 {
        let mut b = LogBatch::new();
        b.add_entries(1, &entries(i * 4 + 1, 4, 1, 1)).unwrap();
        b.compact_to(1, i * 4 + 1);
        s.write(b, true).unwrap();
    }
    let before = s.stats().files;
    assert!(before > 5, "{before}");
    let report = s.purge().unwrap();
    assert_eq!(report.rewritten_streams, vec![7]);
    assert!(report.removed_files.len() >= before - 3, "{report:?}");
    assert!(s.stats().files <= 3);
    assert_eq!(s.entries(7, 1, 3, u64::MAX).unwrap(), entries(1, 2, 1, 7));
    drop(s);
    let s = open_mem(&fs, &cfg).unwrap();
    assert_eq!(s.entries(7, 1, 3, u64::MAX).unwrap(), entries(1, 2, 1, 7));
    assert_eq!(s.get_state(7, b"hs").as_deref(), Some(&b"x"[..]));
    assert_eq!(
        s.entries(1, 1197, 1201, u64::MAX).unwrap(),
        entries(1197, 4, 1, 1)
    );
    assert_eq!(s.first_index(1), Some(1197));
}

#[test]
fn big_stream_is_reported_stalled() {
    let fs = MemFs::new();
    let cfg = Config {
        purge_rewrite_max_stream_bytes: 10,
        ..small_config()
    };
    let s = open_mem(&fs, &cfg).unwrap();
    let mut b = LogBatch::new();
    b.add_entries(3, &entries(1, 10, 1, 3)).unwrap();
    s.write(b, true).unwrap();
    for i in 0..60u64 {
        let mut b = LogBatch::new();
        b.add_entries(1, &entries(i * 4 + 1, 4, 1, 1)).unwrap();
        b.compact_to(1, i * 4 + 1);
        s.write(b, true).unwrap();
    }
    let r = s.purge().unwrap();
    assert_eq!(r.stalled_streams, vec![3]);
    assert!(r.removed_files.is_empty());
}

#[test]
fn fsync_error_poisons_until_reopen() {
    let fs = MemFs::new();
    let s = open_mem(&fs, &small_config()).unwrap();
    let mut b = LogBatch::new();
    b.add_entries(1, &entries(1, 1, 1, 1)).unwrap();
    s.write(b.clone(), true).unwrap();
    fs.set_fail_syncs(true);
    let mut b2 = LogBatch::new();
    b2.add_entries(1, &entries(2, 1, 1, 1)).unwrap();
    assert!(matches!(s.write(b2.clone(), true), Err(Error::Io { .. })));
    fs.set_fail_syncs(false);
    assert!(matches!(s.write(b2.clone(), true), Err(Error::Poisoned)));
    assert!(matches!(s.purge(), Err(Error::Poisoned)));
    assert!(s.is_poisoned());
    drop(s);
    let s = open_mem(&fs, &small_config()).unwrap();
    s.write(b2, true).unwrap();
    assert_eq!(s.last_index(1), Some(2));
}

#[test]
fn write_error_poisons() {
    let fs = MemFs::new();
    let s = open_mem(&fs, &small_config()).unwrap();
    fs.set_fail_writes(true);
    let mut b = LogBatch::new();
    b.add_entries(1, &entries(1, 1, 1, 1)).unwrap();
    assert!(matches!(s.write(b.clone(), false), Err(Error::Io { .. })));
    fs.set_fail_writes(false);
    assert!(matches!(s.write(b, false), Err(Error::Poisoned)));
}

#[test]
fn cache_is_bounded_and_reads_fall_back_to_disk() {
    let fs = MemFs::new();
    let cfg = Config {
        cache_capacity_bytes: 100,
        target_file_size: 1 << 20,
        ..Config::default()
    };
    let s = open_mem(&fs, &cfg).unwrap();
    let es: Vec<Entry> = (1..=50)
        .map(|i| Entry {
            index: i,
            term: 1 + i / 10,
            data: vec![i as u8; 10],
        })
        .collect();
    for chunk in es.chunks(5) {
        let mut b = LogBatch::new();
        b.add_entries(1, chunk).unwrap();
        s.write(b, false).unwrap();
    }
    assert!(s.stats().cache_bytes <= 100);
    assert_eq!(s.entries(1, 1, 51, u64::MAX).unwrap(), es);
    for e in &es {
        assert_eq!(s.term(1, e.index).unwrap(), e.term);
    }
}

/// 1 MiB segments and a 1 MiB entry cache.
fn cached_config() -> Config {
    Config {
        cache_capacity_bytes: 1 << 20,
        target_file_size: 1 << 20,
        ..Config::default()
    }
}

#[test]
fn entries_of_streams_a_batch_keeps_out_of_the_cache_are_read_from_disk() {
    let fs = MemFs::new();
    let s = open_mem(&fs, &cached_config()).unwrap();
    let entries = |n: u8| -> Vec<Entry> {
        (1..=10)
            .map(|i| Entry {
                index: i,
                term: 1,
                data: vec![n; 100],
            })
            .collect()
    };
    let mut b = LogBatch::new();
    b.add_entries(1, &entries(1)).unwrap();
    b.add_entries(2, &entries(2)).unwrap();
    b.add_entries(3, &entries(3)).unwrap();
    b.skip_cache(3);
    b.skip_cache(1);
    b.skip_cache(3);
    s.write(b, true).unwrap();
    // Only stream 2's entries were cached.
    assert_eq!(s.stats().cache_bytes, 1000);
    for n in 1..=3u8 {
        assert_eq!(
            s.entries(u64::from(n), 1, 11, u64::MAX).unwrap(),
            entries(n)
        );
    }
    // The exclusion belongs to that batch alone.
    let mut b = LogBatch::new();
    b.add_entries(
        1,
        &[Entry {
            index: 11,
            term: 1,
            data: vec![1; 100],
        }],
    )
    .unwrap();
    s.write(b, true).unwrap();
    assert_eq!(s.stats().cache_bytes, 1100);
}

/// A stream's entries cached, then some kept out of the cache (a region's peer that was a
/// leader becomes a follower), then cached again (it leads again): every entry still reads
/// back as itself. (The cache was left with a hole, and the entries after it were served
/// one index off.)
#[test]
fn entries_kept_out_of_the_cache_between_cached_ones_read_back_in_place() {
    let fs = MemFs::new();
    let s = open_mem(&fs, &cached_config()).unwrap();
    let entry = |i: u64| Entry {
        index: i,
        term: 1,
        data: i.to_le_bytes().repeat(8),
    };
    let write = |range: std::ops::RangeInclusive<u64>, skip: bool| {
        let mut b = LogBatch::new();
        b.add_entries(1, &range.map(entry).collect::<Vec<_>>())
            .unwrap();
        if skip {
            b.skip_cache(1);
        }
        s.write(b, true).unwrap();
    };
    write(1..=10, false);
    write(11..=12, true);
    write(13..=14, false);
    let all: Vec<Entry> = (1..=14).map(entry).collect();
    assert_eq!(s.entries(1, 1, 15, u64::MAX).unwrap(), all);
    assert_eq!(s.entries(1, 12, 15, u64::MAX).unwrap(), all[11..]);
    // And when the uncached entries replace a cached suffix.
    write(13..=15, true);
    write(16..=16, false);
    let all: Vec<Entry> = (1..=16).map(entry).collect();
    assert_eq!(s.entries(1, 1, 17, u64::MAX).unwrap(), all);
}

#[test]
fn index_costs_at_most_24_bytes_per_entry() {
    let fs = MemFs::new();
    let cfg = Config {
        cache_capacity_bytes: 0,
        target_file_size: 64 << 20,
        preallocate: false,
        ..Config::default()
    };
    let s = open_mem(&fs, &cfg).unwrap();
    let streams = 100u64;
    let per_stream = 1000u64;
    for round in 0..(per_stream / 50) {
        let mut b = LogBatch::new();
        for st in 0..streams {
            let es: Vec<Entry> = (0..50)
                .map(|k| Entry {
                    index: round * 50 + k + 1,
                    term: 1 + round / 4,
                    data: vec![0; 16],
                })
                .collect();
            b.add_entries(st, &es).unwrap();
        }
        s.write(b, false).unwrap();
    }
    let st = s.stats();
    assert_eq!(st.index_entries, streams * per_stream);
    let per_entry = st.index_bytes as f64 / st.index_entries as f64;
    eprintln!("index bytes per live entry: {per_entry:.2}");
    assert!(per_entry <= 24.0, "{per_entry}");
    drop(s);
    let s = open_mem(&fs, &cfg).unwrap();
    let per_entry = s.stats().index_bytes as f64 / s.stats().index_entries as f64;
    eprintln!("index bytes per live entry after recovery: {per_entry:.2}");
    assert!(per_entry <= 24.0, "{per_entry}");
    let _ = Arc::new(());
}

#[test]
fn recent_entries_are_served_without_disk_reads() {
    let fs = MemFs::new();
    let cfg = Config {
        target_file_size: 1 << 20,
        ..Config::default()
    };
    let s = open_mem(&fs, &cfg).unwrap();
    let mut b = LogBatch::new();
    b.add_entries(1, &entries(1, 20, 1, 1)).unwrap();
    s.write(b, true).unwrap();
    let reads = fs.read_count();
    assert_eq!(s.entries(1, 1, 21, u64::MAX).unwrap(), entries(1, 20, 1, 1));
    assert_eq!(
        fs.read_count(),
        reads,
        "cached entries must not touch the disk"
    );
    drop(s);
    // After reopen nothing is cached: the same read goes to the segment.
    let s = open_mem(&fs, &cfg).unwrap();
    assert_eq!(s.entries(1, 1, 21, u64::MAX).unwrap(), entries(1, 20, 1, 1));
    assert!(fs.read_count() > reads);
}

#[test]
fn empty_synced_batch_makes_earlier_writes_durable() {
    let fs = MemFs::new();
    let s = open_mem(&fs, &small_config()).unwrap();
    let mut b = LogBatch::new();
    b.add_entries(1, &entries(1, 3, 1, 1)).unwrap();
    s.write(b, false).unwrap();
    s.write(LogBatch::new(), true).unwrap();
    let crashed = fs.crash();
    drop(s);
    let s = open_mem(&crashed, &small_config()).unwrap();
    assert_eq!(s.last_index(1), Some(3));
}

#[test]
fn async_writes_finish_in_order_visible_and_durable() {
    let fs = MemFs::new();
    let s = open_mem(&fs, &small_config()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..50u64 {
        let mut b = LogBatch::new();
        b.add_entries(7, &entries(i + 1, 1, 1, i as u8)).unwrap();
        let tx = tx.clone();
        s.write_async(b, i % 5 == 4, move |r| {
            let _ = tx.send((i, r.is_ok()));
        })
        .unwrap();
    }
    // A blocking synced write after them makes them all durable, and answers last.
    s.write(LogBatch::new(), true).unwrap();
    let done: Vec<(u64, bool)> = rx.try_iter().collect();
    assert_eq!(done, (0..50).map(|i| (i, true)).collect::<Vec<_>>());
    assert_eq!(s.last_index(7), Some(50));
    assert_eq!(
        s.entries(7, 50, 51, u64::MAX).unwrap()[0].data,
        entries(50, 1, 1, 49)[0].data
    );
    drop(s);
    let s = open_mem(&fs.crash(), &small_config()).unwrap();
    assert_eq!(s.last_index(7), Some(50));
}

#[test]
fn async_write_on_a_poisoned_store_fails_at_once() {
    let fs = MemFs::new();
    let s = open_mem(&fs, &small_config()).unwrap();
    fs.set_fail_syncs(true);
    let mut b = LogBatch::new();
    b.add_entries(1, &entries(1, 1, 1, 1)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    s.write_async(b, true, move |r| {
        let _ = tx.send(r.is_err());
    })
    .unwrap();
    assert!(
        rx.recv().unwrap(),
        "a failed sync must be reported to the callback"
    );
    let mut b = LogBatch::new();
    b.add_entries(1, &entries(2, 1, 1, 1)).unwrap();
    assert!(matches!(
        s.write_async(b, true, |_| {}),
        Err(Error::Poisoned)
    ));
}
