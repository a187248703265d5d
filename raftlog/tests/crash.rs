//! Crash at every step: the k-th file system operation and every one after it fail
//! (k = 1..N, covering open, writes, syncs, rotations and purges); then the machine
//! crashes and the store is reopened. Every batch acknowledged as synced must be there,
//! and no batch may be half there.

mod common;

use common::*;
use pontoon_raftlog::fault::MemFs;
use pontoon_raftlog::{Config, Entry};
use std::cell::Cell;

thread_local! {
    // Per test thread: tests run in parallel, and each counts only its own purges.
    static PURGED: Cell<usize> = const { Cell::new(0) };
    static RECYCLED: Cell<usize> = const { Cell::new(0) };
}

fn script() -> Vec<Option<Vec<Item>>> {
    // None = purge.
    let mut steps = Vec::new();
    for i in 0..24u64 {
        if i % 8 == 7 {
            steps.push(None);
            continue;
        }
        let s = i % 3;
        let first = i / 3 * 4 + 1;
        let es: Vec<Entry> = (first..first + 4)
            .map(|x| Entry {
                index: x,
                term: 1 + i / 6,
                data: vec![i as u8; 150],
            })
            .collect();
        let mut items = vec![Item::Append(s, es)];
        items.push(Item::Put(s, b"hs".to_vec(), vec![i as u8; 4]));
        if i % 5 == 4 {
            items.push(Item::Compact(s, first + 2));
        }
        if i == 13 {
            items.push(Item::Remove(2));
        }
        steps.push(Some(items));
    }
    steps
}

/// Runs the script until the first failure. Returns the oracle of acknowledged
/// batches and the oracle including the batch that failed (if one did).
fn run(fs: &MemFs, cfg: &Config) -> (Oracle, Oracle) {
    let mut acked = Oracle::default();
    let Ok(store) = open_mem(fs, cfg) else {
        return (acked.clone(), acked);
    };
    for step in script() {
        match step {
            None => match store.purge() {
                Ok(r) => {
                    PURGED.set(PURGED.get() + r.removed_files.len());
                    RECYCLED.set(RECYCLED.get() + r.recycled_files.len());
                }
                Err(_) => return (acked.clone(), acked),
            },
            Some(items) => {
                let mut next = acked.clone();
                next.apply(&items);
                if store.write(Oracle::batch(&items), true).is_err() {
                    return (acked, next);
                }
                acked = next;
            }
        }
    }
    (acked.clone(), acked)
}

/// `recycles`: the clean run must reuse purged segments as new ones.
/// `direct`: the file system takes block-aligned unbuffered writes.
fn crash_everywhere(cfg: Config, recycles: bool, direct: bool) {
    let clean = MemFs::new();
    clean.set_direct(direct);
    let purged_before = PURGED.get();
    let recycled_before = RECYCLED.get();
    let (full, _) = run(&clean, &cfg);
    let total_ops = clean.op_count();
    let purged = PURGED.get() - purged_before;
    let recycled = RECYCLED.get() - recycled_before;
    let free_left = clean
        .paths()
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".raftlog.free"))
        .count();
    eprintln!(
        "clean run: {total_ops} ops, {} files left ({free_left} free), {purged} purged, {recycled} kept for reuse",
        clean.paths().len()
    );
    assert!(purged > 0, "the script must rotate and purge");
    if recycles {
        assert!(
            recycled > free_left,
            "the script must reuse a purged segment: {recycled} kept, {free_left} unused"
        );
    }
    assert!(total_ops > 40, "{total_ops}");
    let keys = vec![b"hs".to_vec()];
    for k in 0..=total_ops {
        let fs = MemFs::new();
        fs.set_direct(direct);
        fs.fail_after(k);
        let (acked, with_failed) = run(&fs, &cfg);
        // A process restart after the failure (no power loss: what was written but not
        // synced is still there) also opens, with every acknowledged batch.
        fs.fail_after(u64::MAX);
        let restarted = open_mem(&fs, &cfg)
            .unwrap_or_else(|e| panic!("k={k}: reopen after the failure failed: {e}"));
        let a = acked.matches(&restarted, &keys);
        let b = with_failed.matches(&restarted, &keys);
        assert!(a.is_ok() || b.is_ok(), "k={k} restart: {a:?} / {b:?}");
        drop(restarted);
        let crashed = fs.crash();
        let store = open_mem(&crashed, &cfg)
            .unwrap_or_else(|e| panic!("k={k}: reopen after crash failed: {e}"));
        let a = acked.matches(&store, &keys);
        let b = with_failed.matches(&store, &keys);
        assert!(a.is_ok() || b.is_ok(), "k={k}: {a:?} / {b:?}");
        // The recovered store takes writes and survives another crash.
        let mut oracle = if a.is_ok() { acked } else { with_failed };
        let items = vec![Item::Put(9, b"hs".to_vec(), b"after".to_vec())];
        store.write(Oracle::batch(&items), true).unwrap();
        oracle.apply(&items);
        drop(store);
        let again = crashed.crash();
        let store = open_mem(&again, &cfg).unwrap();
        let r = oracle.matches(&store, &keys);
        assert!(r.is_ok(), "k={k} second reopen: {r:?}");
    }
    let store = open_mem(&clean, &cfg).unwrap();
    full.matches(&store, &[b"hs".to_vec()]).unwrap();
}

#[test]
fn crash_at_every_operation_preallocated() {
    crash_everywhere(
        Config {
            target_file_size: 4096,
            purge_rewrite_lag_files: 1,
            ..Config::default()
        },
        true,
        false,
    );
}

#[test]
fn crash_at_every_operation_not_preallocated() {
    crash_everywhere(
        Config {
            target_file_size: 4096,
            purge_rewrite_lag_files: 1,
            preallocate: false,
            cache_capacity_bytes: 0,
            ..Config::default()
        },
        false,
        false,
    );
}

#[test]
fn crash_at_every_operation_direct() {
    crash_everywhere(
        Config {
            target_file_size: 4096,
            purge_rewrite_lag_files: 1,
            ..Config::default()
        },
        true,
        true,
    );
}

#[test]
fn crash_at_every_operation_direct_not_preallocated() {
    crash_everywhere(
        Config {
            target_file_size: 8192,
            purge_rewrite_lag_files: 1,
            preallocate: false,
            ..Config::default()
        },
        false,
        true,
    );
}
