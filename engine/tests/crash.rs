//! Crash consistency (the atomic-flush contract): cut the power after every k-th file-system
//! operation of a workload of flushes, compactions and manifest switches, then reopen. The
//! engine must hold exactly the state after some prefix of the write batches, and that prefix
//! must include every batch that a successful `flush` covered. Each batch carries its own
//! index as an "applied" marker in the `raft` column family, as Pontoon's apply loop does.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use pontoon_engine::io::FaultFs;
use pontoon_engine::{Engine, Error, WriteBatch};

use common::*;

const CFS: [&str; 3] = ["default", "write", "raft"];
const BATCHES: u64 = 40;

enum Op {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    DeleteRange(usize, Vec<u8>, Vec<u8>),
}

fn k(i: u64) -> Vec<u8> {
    format!("k{:02}", i % 23).into_bytes()
}

/// The deterministic contents of batch `i` (1-based).
fn batch_ops(i: u64) -> Vec<Op> {
    let mut ops = vec![
        Op::Put(
            0,
            k(i),
            format!("v{i}").repeat(1 + (i % 5) as usize).into_bytes(),
        ),
        Op::Put(1, k(i * 7), vec![i as u8; 40]),
        Op::Delete(0, k(i + 5)),
    ];
    if i.is_multiple_of(6) {
        ops.push(Op::DeleteRange(1, k(i % 10), k(i % 10 + 6)));
    }
    ops.push(Op::Put(2, b"applied".to_vec(), i.to_le_bytes().to_vec()));
    ops
}

type Model = Vec<BTreeMap<Vec<u8>, Vec<u8>>>;

fn model_after(n: u64) -> Model {
    let mut m: Model = vec![BTreeMap::new(); CFS.len()];
    for i in 1..=n {
        for op in batch_ops(i) {
            match op {
                Op::Put(c, key, v) => {
                    m[c].insert(key, v);
                }
                Op::Delete(c, key) => {
                    m[c].remove(&key);
                }
                Op::DeleteRange(c, a, b) => {
                    let doomed: Vec<_> = m[c].range(a..b).map(|(k, _)| k.clone()).collect();
                    for key in doomed {
                        m[c].remove(&key);
                    }
                }
            }
        }
    }
    m
}

/// Runs the workload; `durable` is raised to each batch a successful flush covered.
fn workload(engine: &Engine, durable: &mut u64) -> Result<(), Error> {
    for i in 1..=BATCHES {
        let mut b = WriteBatch::new();
        for op in batch_ops(i) {
            match op {
                Op::Put(c, key, v) => b.put(CFS[c], &key, &v),
                Op::Delete(c, key) => b.delete(CFS[c], &key),
                Op::DeleteRange(c, a, z) => b.delete_range(CFS[c], &a, &z),
            };
        }
        let seq = engine.write(&b)?;
        if i.is_multiple_of(4) {
            let flushed = engine.flush()?;
            assert!(flushed >= seq);
            *durable = i;
        }
        if i.is_multiple_of(8) {
            engine.compact_pending()?;
        }
        if i == 33 {
            engine.compact_all()?;
        }
    }
    Ok(())
}

fn applied(engine: &Engine) -> u64 {
    engine
        .get("raft", b"applied")
        .unwrap()
        .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
        .unwrap_or(0)
}

/// Reopens `fs` and checks the prefix property; returns the recovered prefix.
fn check_recovered(fs: &FaultFs, durable: u64) -> u64 {
    let engine = open(fs, small_options());
    let m = applied(&engine);
    assert!(
        m >= durable,
        "batch {durable} was flushed but only {m} survived"
    );
    let want = model_after(m);
    for (c, cf) in CFS.iter().enumerate() {
        assert_eq!(
            scan(&engine, cf),
            model_pairs(&want[c]),
            "cf {cf} is not the state after batch {m}"
        );
    }
    engine.close().unwrap();
    m
}

#[test]
fn crash_at_every_point_of_flush_compaction_and_manifest_switch() {
    // Count the operations of a fault-free run.
    let fs = FaultFs::new();
    let engine = open(&fs, small_options());
    let mut durable = 0;
    workload(&engine, &mut durable).unwrap();
    engine.close().unwrap();
    let total = fs.ops();
    assert_eq!(check_recovered(&fs.crash(), BATCHES), BATCHES);

    let step = (total / 400).max(1);
    let mut k = 0;
    while k < total {
        let fs = FaultFs::new();
        fs.fail_after(Some(k));
        let mut durable = 0;
        match pontoon_engine::Engine::open_with_fs(
            DIR,
            small_options(),
            std::sync::Arc::new(fs.clone()),
        ) {
            Ok(engine) => {
                // A fault past the workload's last operation (in `close`) leaves it Ok.
                let _ = workload(&engine, &mut durable);
                let after = fs.crash();
                drop(engine);
                check_recovered(&after, durable);
            }
            Err(_) => {
                check_recovered(&fs.crash(), 0);
            }
        }
        k += step;
    }
}

#[test]
fn repeated_crashes_during_recovery() {
    let fs = FaultFs::new();
    let engine = open(&fs, small_options());
    let mut durable = 0;
    workload(&engine, &mut durable).unwrap();
    engine.close().unwrap();
    let mut cur = fs.crash();
    for k in 0..40 {
        let trial = cur.crash();
        trial.fail_after(Some(k));
        if let Ok(e) =
            Engine::open_with_fs(DIR, small_options(), std::sync::Arc::new(trial.clone()))
        {
            let next = trial.crash();
            drop(e);
            cur = next;
        } else {
            cur = trial.crash();
        }
    }
    assert_eq!(check_recovered(&cur, BATCHES), BATCHES);
}

#[test]
fn failed_fsync_poisons_until_reopen() {
    let fs = FaultFs::new();
    let engine = open(&fs, small_options());
    engine.put("default", b"a", b"1").unwrap();
    engine.flush().unwrap();
    engine.put("default", b"b", b"2").unwrap();
    fs.fail_syncs(true);
    let err = engine.flush().unwrap_err();
    assert!(
        matches!(err, Error::Poisoned(_) | Error::Io { .. }),
        "{err}"
    );
    let err = engine.put("default", b"c", b"3").unwrap_err();
    assert!(
        matches!(err, Error::Poisoned(_)),
        "writes after a failed fsync: {err}"
    );
    assert!(err.to_string().contains("reopen"), "{err}");
    // Reads still work.
    assert_eq!(engine.get("default", b"a").unwrap(), Some(b"1".to_vec()));
    let after = fs.crash();
    drop(engine);
    let engine = open(&after, small_options());
    assert_eq!(engine.get("default", b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        engine.get("default", b"b").unwrap(),
        None,
        "never acknowledged as flushed"
    );
    engine.put("default", b"c", b"3").unwrap();
    engine.close().unwrap();
}
