//! Group commit: concurrent writers share one write and one fdatasync.

mod common;

use std::sync::Arc;
use std::thread;

use common::*;
use pontoon_raftlog::fault::MemFs;
use pontoon_raftlog::{Config, LogBatch, LogStore};

fn one_entry_batch(stream: u64, index: u64) -> LogBatch {
    let mut b = LogBatch::new();
    b.add_entries(stream, &entries(index, 1, 1, stream as u8))
        .unwrap();
    b
}

/// Deterministic: while the writer is stuck in the first fsync, seven writers queue up;
/// they are then committed with exactly one more fsync.
#[test]
fn queued_writers_share_one_fsync() {
    let fs = MemFs::new();
    let store = Arc::new(open_mem(&fs, &small_config()).unwrap());
    let syncs_before = fs.sync_count();
    fs.pause_syncs();
    let first = {
        let s = store.clone();
        thread::spawn(move || s.write(one_entry_batch(100, 1), true).unwrap())
    };
    while fs.waiting_syncs() == 0 {
        thread::yield_now();
    }
    let writers: Vec<_> = (0..7u64)
        .map(|t| {
            let s = store.clone();
            thread::spawn(move || s.write(one_entry_batch(t, 1), true).unwrap())
        })
        .collect();
    while store.pending_writes() < 7 {
        thread::yield_now();
    }
    fs.resume_syncs();
    first.join().unwrap();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(fs.sync_count() - syncs_before, 2);
    let st = store.stats();
    assert_eq!((st.batches, st.syncs), (8, 2));
    drop(store);
    let store = open_mem(&fs.crash(), &small_config()).unwrap();
    assert_eq!(store.streams().len(), 8);
}

/// Many threads on real files (io_uring when available): everything is there after
/// reopen, and no more fsyncs than batches were issued.
#[test]
fn many_threads_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        target_file_size: 64 << 10,
        ..Config::default()
    };
    let store = Arc::new(LogStore::open(dir.path(), cfg.clone()).unwrap());
    let threads = 8u64;
    let per_thread = 40u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let s = store.clone();
            thread::spawn(move || {
                for i in 1..=per_thread {
                    s.write(one_entry_batch(t, i), true).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let st = store.stats();
    eprintln!(
        "{} batches, {} fsyncs, io_uring: {}",
        st.batches, st.syncs, st.io_uring
    );
    assert_eq!(st.batches, threads * per_thread);
    assert!(st.syncs <= st.batches);
    drop(store);
    let store = LogStore::open(dir.path(), cfg).unwrap();
    for t in 0..threads {
        assert_eq!(
            store.entries(t, 1, per_thread + 1, u64::MAX).unwrap(),
            entries(1, per_thread, 1, t as u8)
        );
    }
}

/// Blocking writes (committed on their callers' threads or, with other blocking writers
/// about, by the writer thread), async writes and purges mixed from several threads at
/// once: every batch lands, each thread's completions come in the order it wrote, and
/// everything is there after a crash.
#[test]
fn blocking_async_and_purge_mixed() {
    let fs = MemFs::new();
    let store = Arc::new(open_mem(&fs, &small_config()).unwrap());
    let per_thread = 200u64;
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let s = store.clone();
            thread::spawn(move || {
                let (tx, rx) = std::sync::mpsc::channel();
                for i in 1..=per_thread {
                    if t % 2 == 0 && i % 3 != 0 {
                        let tx = tx.clone();
                        s.write_async(one_entry_batch(t, i), i % 2 == 0, move |r| {
                            let _ = tx.send((i, r.is_ok()));
                        })
                        .unwrap();
                    } else {
                        s.write(one_entry_batch(t, i), i % 2 == 0).unwrap();
                        let _ = tx.send((i, true));
                    }
                }
                s.write(LogBatch::new(), true).unwrap();
                drop(tx);
                let done: Vec<(u64, bool)> = rx.iter().collect();
                assert_eq!(
                    done,
                    (1..=per_thread).map(|i| (i, true)).collect::<Vec<_>>()
                );
            })
        })
        .collect();
    let purger = {
        let s = store.clone();
        thread::spawn(move || {
            for _ in 0..20 {
                s.purge().unwrap();
                thread::yield_now();
            }
        })
    };
    for h in handles {
        h.join().unwrap();
    }
    purger.join().unwrap();
    // Each thread's final empty write and the purges' rewrites are batches too.
    assert!(store.stats().batches >= 4 * per_thread + 4);
    drop(store);
    let store = open_mem(&fs.crash(), &small_config()).unwrap();
    for t in 0..4u64 {
        assert_eq!(
            store.entries(t, 1, per_thread + 1, u64::MAX).unwrap(),
            entries(1, per_thread, 1, t as u8),
            "stream {t}"
        );
    }
}
