//! Behaviour of the engine's public API: column families, atomic batches under concurrent
//! readers, snapshots, write stalls, the directory lock, and the real file system.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pontoon_engine::io::FaultFs;
use pontoon_engine::{Engine, Error, IterOptions, Options, WriteBatch, DEFAULT_CFS};

use common::*;

#[test]
fn column_families_are_persisted() {
    let fs = FaultFs::new();
    let engine = open(&fs, small_options());
    assert_eq!(engine.cf_names(), {
        let mut v: Vec<String> = DEFAULT_CFS.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    });
    engine.create_cf("extra").unwrap();
    assert!(matches!(
        engine.create_cf("extra"),
        Err(Error::ColumnFamilyExists(_))
    ));
    engine.create_cf("doomed").unwrap();
    engine.put("extra", b"k", b"v").unwrap();
    engine.put("doomed", b"k", b"v").unwrap();
    engine.flush().unwrap();
    engine.drop_cf("doomed").unwrap();
    assert!(matches!(
        engine.drop_cf("raft"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        engine.get("doomed", b"k"),
        Err(Error::ColumnFamilyNotFound(_))
    ));
    assert!(matches!(
        engine.put("nope", b"k", b"v"),
        Err(Error::ColumnFamilyNotFound(_))
    ));
    engine.close().unwrap();

    let engine = open(&fs.crash(), small_options());
    assert!(engine.cf_names().contains(&"extra".to_string()));
    assert!(!engine.cf_names().contains(&"doomed".to_string()));
    assert_eq!(engine.get("extra", b"k").unwrap(), Some(b"v".to_vec()));
    // The dropped family's files are gone.
    engine.create_cf("doomed").unwrap();
    assert_eq!(engine.get("doomed", b"k").unwrap(), None);
}

#[test]
fn readers_see_all_of_a_batch_or_none_of_it() {
    let fs = FaultFs::new();
    let engine = Arc::new(open(&fs, small_options()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let engine = engine.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let snap = engine.snapshot();
                let a = snap.get("default", b"a").unwrap();
                let b = snap.get("write", b"b").unwrap();
                assert_eq!(a, b, "a batch was seen half applied");
                let all: Vec<_> = snap
                    .iter("lock", IterOptions::default())
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                // Each batch rewrites all ten lock keys with one value.
                assert!(
                    all.is_empty() || (all.len() == 10 && all.iter().all(|(_, v)| *v == all[0].1))
                );
                checks += 1;
            }
            checks
        })
    };
    for i in 0..600u32 {
        let v = i.to_le_bytes();
        let mut b = WriteBatch::new();
        b.put("default", b"a", &v).put("write", b"b", &v);
        for k in 0..10u8 {
            b.put("lock", &[k], &v);
        }
        engine.write(&b).unwrap();
        if i.is_multiple_of(50) {
            engine.flush().unwrap();
            engine.compact_pending().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

/// In-place puts keep batch atomicity for every kind of reader: a writer puts `data/i` and
/// sets the in-place `applied` to `i` in one batch; whoever sees `applied == i` must see
/// `data/i`, and must not see `data/i+1`.
#[test]
fn in_place_puts_are_seen_with_their_batch_by_reads_snapshots_and_iterators() {
    let fs = FaultFs::new();
    let engine = Arc::new(open(&fs, small_options()));
    let stop = Arc::new(AtomicBool::new(false));
    let data = |i: u32| format!("data/{i:06}").into_bytes();
    let applied = |v: Option<Vec<u8>>| v.map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let readers: Vec<_> = (0..3)
        .map(|kind| {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match kind {
                        // Newest-state reads: `applied` first, then its data must be there.
                        0 => {
                            if let Some(i) = applied(engine.get("write", b"applied").unwrap()) {
                                assert!(engine.get("default", &data(i)).unwrap().is_some(), "{i}");
                            }
                        }
                        // A snapshot agrees with itself on both.
                        1 => {
                            let snap = engine.snapshot();
                            let i = applied(snap.get("write", b"applied").unwrap());
                            if let Some(i) = i {
                                assert!(snap.get("default", &data(i)).unwrap().is_some(), "{i}");
                                assert!(snap.get("default", &data(i + 1)).unwrap().is_none());
                            }
                        }
                        // An iterator over the in-place key's column family sees it too.
                        _ => {
                            let snap = engine.snapshot();
                            let rows: Vec<_> = engine
                                .iter("write", IterOptions::default())
                                .unwrap()
                                .map(|r| r.unwrap())
                                .collect();
                            let i = applied(
                                rows.iter()
                                    .find(|(k, _)| k == b"applied")
                                    .map(|(_, v)| v.clone()),
                            );
                            let before = applied(snap.get("write", b"applied").unwrap());
                            assert!(i >= before, "an iterator went back: {i:?} < {before:?}");
                            if let Some(i) = i {
                                assert!(engine.get("default", &data(i)).unwrap().is_some(), "{i}");
                            }
                        }
                    }
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    for i in 0..3000u32 {
        let mut b = WriteBatch::new();
        b.put("default", &data(i), b"x");
        // Now and then an ordinary put of the same key, so the list holds versions too.
        if i % 7 == 0 {
            b.put("write", b"applied", &i.to_le_bytes());
        } else {
            b.put_in_place("write", b"applied", &i.to_le_bytes());
        }
        engine.write(&b).unwrap();
        if i.is_multiple_of(500) {
            engine.flush().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    // Only the newest value reaches the tables, and it survives a reopen.
    let engine = Arc::into_inner(engine).unwrap();
    engine.close().unwrap();
    let engine = open(&fs, small_options());
    assert_eq!(
        applied(engine.get("write", b"applied").unwrap()),
        Some(2999)
    );
}

#[test]
fn snapshot_reads_are_stable_across_flush_and_compaction() {
    let fs = FaultFs::new();
    let engine = open(&fs, small_options());
    for i in 0..200u32 {
        engine.put("default", &i.to_be_bytes(), b"old").unwrap();
    }
    let snap = engine.snapshot();
    let mut b = WriteBatch::new();
    b.delete_range("default", &50u32.to_be_bytes(), &150u32.to_be_bytes());
    engine.write(&b).unwrap();
    for i in 0..200u32 {
        if i % 3 == 0 {
            engine.put("default", &i.to_be_bytes(), b"new").unwrap();
        }
    }
    engine.compact_all().unwrap();
    let old: Vec<_> = snap
        .iter("default", IterOptions::default())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(old.len(), 200);
    assert!(old.iter().all(|(_, v)| v == b"old"));
    let rev: Vec<_> = snap
        .iter(
            "default",
            IterOptions::range(10u32.to_be_bytes(), 20u32.to_be_bytes()).reversed(),
        )
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(
        rev,
        (10..20u32)
            .rev()
            .map(|i| i.to_be_bytes().to_vec())
            .collect::<Vec<_>>()
    );
    let now = scan(&engine, "default");
    let expected = (0..200u32)
        .filter(|i| !(50..150).contains(i) || i % 3 == 0)
        .count();
    assert_eq!(now.len(), expected);
    drop(snap);
    engine.compact_all().unwrap();
    assert_eq!(scan(&engine, "default").len(), expected);
    let stats = engine.stats();
    assert!(stats.level_files[..3].iter().all(|n| *n == 0), "{stats:?}");
}

#[test]
fn writers_stall_while_l0_is_full_and_resume_after_compaction() {
    let fs = FaultFs::new();
    let opts = Options {
        l0_slowdown_trigger: 2,
        l0_stop_trigger: 3,
        ..small_options()
    };
    let engine = Arc::new(open(&fs, opts));
    let writer = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            for i in 0..40u32 {
                engine.put("default", &i.to_be_bytes(), &[7u8; 64]).unwrap();
                engine.flush().unwrap();
            }
        })
    };
    // With compaction off, the writer must stall once L0 holds 3 files.
    let mut waited = 0;
    while engine.stats().write_stalls == 0 {
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
        assert!(waited < 3000, "writer never stalled: {:?}", engine.stats());
    }
    assert!(!writer.is_finished());
    assert!(engine.stats().write_slowdowns > 0);
    // Draining L0 lets it go on; keep draining until it finishes.
    while !writer.is_finished() {
        engine.compact_pending().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    writer.join().unwrap();
    assert_eq!(scan(&engine, "default").len(), 40);
}

#[test]
fn real_files_round_trip_and_lock_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        write_buffer_size: 64 << 10,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), opts.clone()).unwrap();
    let err = Engine::open(dir.path(), opts.clone()).unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    for i in 0..5000u32 {
        engine
            .put("default", &i.to_be_bytes(), &i.to_le_bytes().repeat(8))
            .unwrap();
    }
    engine.compact_all().unwrap();
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), opts).unwrap();
    assert_eq!(
        engine.get("default", &77u32.to_be_bytes()).unwrap(),
        Some(77u32.to_le_bytes().repeat(8))
    );
    assert_eq!(scan(&engine, "default").len(), 5000);
    assert!(
        engine.stats().flushes == 0,
        "nothing left to flush after reopen"
    );
}

/// `approximate_size` counts memtable data exactly and table data by whole blocks, only
/// inside the asked range and column family.
#[test]
fn approximate_size_tracks_the_range() {
    let fs = FaultFs::new();
    let engine = open(&fs, small_options());
    engine.create_cf("other").unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut value = || -> Vec<u8> {
        (0..200)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let key = |i: u32| format!("k{i:06}").into_bytes();
    let n = 4000u32;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut b = WriteBatch::new();
        for &i in chunk {
            b.put("default", &key(i), &value());
            b.put("other", &key(i), &value());
        }
        engine.write(&b).unwrap();
    }
    // What iterating finds: 7-byte keys, 200-byte values.
    let exact = |lo: u32, hi: u32| u64::from(hi.min(n) - lo.min(n)) * 207;
    let (lo, hi) = (key(1000), key(3000));
    // Whatever is still in the memtables is counted exactly; flushed data by blocks.
    let approx = engine.approximate_size("default", &lo, &hi).unwrap();
    assert!(approx <= exact(1000, 3000) * 3 / 2, "{approx}");
    engine.flush().unwrap();
    engine.compact_all().unwrap();
    for (a, b) in [(0, 1000), (1000, 3000), (2500, 2600), (0, n)] {
        let approx = engine
            .approximate_size("default", &key(a), &key(b))
            .unwrap();
        let want = exact(a, b);
        // Within a data block or so at each end, plus the tables' encoding overhead
        // (large with these 256-byte blocks: ~24%).
        assert!(
            approx.abs_diff(want) <= want / 4 + 4096,
            "[{a}, {b}): {approx} vs {want}"
        );
    }
    let all = engine.approximate_size("default", b"", b"").unwrap();
    assert!(all.abs_diff(exact(0, n)) <= exact(0, n) / 4, "{all}");
    assert!(engine.approximate_size("default", b"z", b"").unwrap() < 16 << 10);
    // New writes count at once (memtable), in their range only.
    engine.put("default", b"k999999", &[7u8; 1000]).unwrap();
    let tail = engine.approximate_size("default", b"k999999", b"").unwrap();
    assert!((1007..1007 + (16 << 10)).contains(&tail), "{tail}");
    assert!(matches!(
        engine.approximate_size("missing", b"", b""),
        Err(Error::ColumnFamilyNotFound(_))
    ));
}

/// A snapshot taken while a writer runs sees each batch whole through every read path: its
/// point read of a key every batch rewrites (an apply state) names exactly as many batches
/// as its range scan finds keys. (A memtable seek once re-read a link after its walk and
/// returned a version newer than the snapshot's, so the point read fell through to an older
/// memtable or table.)
#[test]
fn point_reads_and_scans_of_a_snapshot_agree_while_a_writer_runs() {
    for round in 0..5 {
        // Tiny memtables (4 KiB), so that switches and flushes race the reads too.
        let engine = open(
            &FaultFs::new(),
            Options {
                auto_compaction: true,
                ..small_options()
            },
        );
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=1500u64 {
                    let mut b = WriteBatch::new();
                    b.put("default", format!("k{i:06}").as_bytes(), &[7u8; 100]);
                    b.put("write", &i.to_be_bytes(), b"other column family");
                    b.put("raft", b"apply", &i.to_le_bytes());
                    engine.write(&b).unwrap();
                }
                done.store(true, Ordering::Release);
            });
            let mut checks = 0u64;
            while !done.load(Ordering::Acquire) || checks == 0 {
                let snap = engine.snapshot();
                let applied = snap
                    .get("raft", b"apply")
                    .unwrap()
                    .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
                    .unwrap_or(0);
                let keys = snap
                    .iter(
                        "default",
                        IterOptions {
                            lower_bound: Some(b"k".to_vec()),
                            upper_bound: Some(b"l".to_vec()),
                            reverse: false,
                        },
                    )
                    .unwrap()
                    .count() as u64;
                assert_eq!(
                    applied,
                    keys,
                    "round {round}, check {checks}: snapshot at sequence {}",
                    snap.seq()
                );
                checks += 1;
            }
        });
    }
}
