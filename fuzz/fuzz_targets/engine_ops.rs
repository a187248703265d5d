//! Model-based fuzzing of the engine (the fuzzer's version of `engine/tests/model.rs`):
//! a sequence of at most 64 operations — writes over two column families (in-place ones
//! too), range deletes, snapshots, bounded scans in both directions, flushes, compactions,
//! clean reopens and power cuts — runs against an engine on the in-memory `FaultFs` with
//! tiny options, and against a `BTreeMap` oracle. Any difference panics.
//!
//! After a power cut (`FaultFs::crash`) the engine must hold exactly the state after some
//! prefix of the write batches that includes everything the last successful `flush` covered.

#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pontoon_engine::io::FaultFs;
use pontoon_engine::{Engine, IterOptions, Options, Snapshot, WriteBatch};

const CFS: [&str; 2] = ["default", "write"];
const MAX_OPS: usize = 64;
const NUM_KEYS: u8 = 60;
const DIR: &str = "/db";

#[derive(Debug, Arbitrary)]
enum Op {
    Put(bool, u8, u16),
    /// A put through the memtable's in-place slot (reads see it as a put; it settles into
    /// the ordered list, at its own sequence, when a snapshot or scan needs it).
    PutInPlace(bool, u8, u16),
    Delete(bool, u8),
    DeleteRange(bool, u8, u8),
    /// Several ops as one batch (`None` deletes).
    Batch(Vec<(bool, u8, Option<u16>)>),
    Snapshot,
    DropSnapshot,
    CheckSnapshots,
    Scan(bool, Option<u8>, Option<u8>, bool),
    Get(bool, u8),
    Flush,
    Compact,
    CompactAll,
    Reopen,
    Crash,
}

/// Same as `small_options()` in `engine/tests/common/mod.rs`: every mechanism runs on tiny data.
fn small_options() -> Options {
    Options {
        write_buffer_size: 4 << 10,
        max_immutable_memtables: 2,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 1000,
        l0_stop_trigger: 2000,
        max_bytes_for_level_base: 16 << 10,
        level_multiplier: 4,
        num_levels: 4,
        target_file_size: 4 << 10,
        block_size: 256,
        auto_compaction: false,
        ..Options::default()
    }
}

fn open(fs: &FaultFs) -> Engine {
    Engine::open_with_fs(Path::new(DIR), small_options(), Arc::new(fs.clone())).unwrap()
}

fn cf(c: bool) -> usize {
    usize::from(c)
}

fn key(k: u8) -> Vec<u8> {
    format!("key{:03}", k % NUM_KEYS).into_bytes()
}

fn value(k: u8, v: u16) -> Vec<u8> {
    // Varied sizes so memtables switch and blocks fill at different points.
    let mut s = format!("v{k}-{v}-").into_bytes();
    s.resize(8 + (v as usize % 64), b'x');
    s
}

type Model = Vec<BTreeMap<Vec<u8>, Vec<u8>>>;

fn pairs(m: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn scan_all(engine: &Engine, cf: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    engine
        .iter(cf, IterOptions::default())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn check_all(engine: &Engine, model: &Model, what: &str) {
    for (c, name) in CFS.iter().enumerate() {
        assert_eq!(
            scan_all(engine, name),
            pairs(&model[c]),
            "{what}: cf {name}"
        );
    }
}

struct State {
    fs: FaultFs,
    /// `None` only while being reopened.
    engine: Option<Engine>,
    model: Model,
    snaps: Vec<(Snapshot, Model)>,
    /// `(sequence after the batch, model after the batch)`, oldest first; the first entry is
    /// the state the engine was opened with.
    history: Vec<(u64, Model)>,
    /// Sequence covered by the last successful flush (or recovered at open).
    durable: u64,
}

impl State {
    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn wrote(&mut self, seq: u64) {
        self.history.push((seq, self.model.clone()));
    }

    fn write(&mut self, batch: &WriteBatch) {
        let seq = self.engine().write(batch).unwrap();
        self.wrote(seq);
    }

    fn reopened(&mut self) {
        self.durable = self.engine().last_seq();
        self.history = vec![(self.durable, self.model.clone())];
    }
}

fn run(ops: &[Op]) {
    let fs = FaultFs::new();
    let engine = open(&fs);
    let mut st = State {
        fs,
        engine: Some(engine),
        model: vec![BTreeMap::new(); CFS.len()],
        snaps: Vec::new(),
        history: Vec::new(),
        durable: 0,
    };
    st.reopened();

    for op in ops {
        match op {
            Op::Put(c, k, v) => {
                let seq = st
                    .engine()
                    .put(CFS[cf(*c)], &key(*k), &value(*k, *v))
                    .unwrap();
                st.model[cf(*c)].insert(key(*k), value(*k, *v));
                st.wrote(seq);
            }
            Op::PutInPlace(c, k, v) => {
                let mut batch = WriteBatch::new();
                batch.put_in_place(CFS[cf(*c)], &key(*k), &value(*k, *v));
                st.model[cf(*c)].insert(key(*k), value(*k, *v));
                st.write(&batch);
            }
            Op::Delete(c, k) => {
                let seq = st.engine().delete(CFS[cf(*c)], &key(*k)).unwrap();
                st.model[cf(*c)].remove(&key(*k));
                st.wrote(seq);
            }
            Op::DeleteRange(c, a, b) => {
                let (a, b) = (key(*a).min(key(*b)), key(*a).max(key(*b)));
                let mut batch = WriteBatch::new();
                batch.delete_range(CFS[cf(*c)], &a, &b);
                let doomed: Vec<Vec<u8>> = st.model[cf(*c)]
                    .range(a..b)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    st.model[cf(*c)].remove(&k);
                }
                st.write(&batch);
            }
            Op::Batch(items) => {
                if items.is_empty() {
                    continue;
                }
                let mut batch = WriteBatch::new();
                for (c, k, v) in items.iter().take(8) {
                    match v {
                        Some(v) => {
                            batch.put(CFS[cf(*c)], &key(*k), &value(*k, *v));
                            st.model[cf(*c)].insert(key(*k), value(*k, *v));
                        }
                        None => {
                            batch.delete(CFS[cf(*c)], &key(*k));
                            st.model[cf(*c)].remove(&key(*k));
                        }
                    }
                }
                st.write(&batch);
            }
            Op::Snapshot => {
                if st.snaps.len() < 4 {
                    st.snaps.push((st.engine().snapshot(), st.model.clone()));
                }
            }
            Op::DropSnapshot => {
                if !st.snaps.is_empty() {
                    st.snaps.remove(0);
                }
            }
            Op::CheckSnapshots => {
                for (snap, m) in &st.snaps {
                    for (c, name) in CFS.iter().enumerate() {
                        let got: Vec<_> = snap
                            .iter(name, IterOptions::default())
                            .unwrap()
                            .collect::<Result<_, _>>()
                            .unwrap();
                        assert_eq!(got, pairs(&m[c]), "snapshot {} cf {name}", snap.seq());
                        for k in [0u8, 7, 33, 59] {
                            assert_eq!(
                                snap.get(name, &key(k)).unwrap(),
                                m[c].get(&key(k)).cloned(),
                                "snapshot {} get {name} {k}",
                                snap.seq()
                            );
                        }
                    }
                }
            }
            Op::Scan(c, lo, hi, rev) => {
                let opts = IterOptions {
                    lower_bound: lo.map(key),
                    upper_bound: hi.map(key),
                    reverse: *rev,
                };
                let got: Vec<_> = st
                    .engine()
                    .iter(CFS[cf(*c)], opts)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let mut want: Vec<_> = st.model[cf(*c)]
                    .iter()
                    .filter(|(k, _)| lo.is_none_or(|l| **k >= key(l)))
                    .filter(|(k, _)| hi.is_none_or(|h| **k < key(h)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if *rev {
                    want.reverse();
                }
                assert_eq!(
                    got,
                    want,
                    "scan cf {} lo={lo:?} hi={hi:?} rev={rev}",
                    cf(*c)
                );
            }
            Op::Get(c, k) => {
                assert_eq!(
                    st.engine().get(CFS[cf(*c)], &key(*k)).unwrap(),
                    st.model[cf(*c)].get(&key(*k)).cloned(),
                    "get cf {} {k}",
                    cf(*c)
                );
            }
            Op::Flush => st.durable = st.engine().flush().unwrap(),
            Op::Compact => st.engine().compact_pending().unwrap(),
            Op::CompactAll => {
                st.engine().compact_all().unwrap();
                st.durable = st.engine().flushed_seq();
            }
            Op::Reopen => {
                // Snapshots do not survive a reopen.
                st.snaps.clear();
                let engine = st.engine.take().unwrap();
                engine.close().unwrap();
                st.engine = Some(open(&st.fs));
                check_all(st.engine(), &st.model, "after reopen");
                st.reopened();
            }
            Op::Crash => {
                st.snaps.clear();
                let crashed = st.fs.crash();
                // The old engine lives on a dead file system now; dropping it fails its flush.
                drop(st.engine.take());
                st.engine = Some(open(&crashed));
                st.fs = crashed;
                let seq = st.engine().last_seq();
                assert!(
                    seq >= st.durable,
                    "recovered seq {seq} lost flushed seq {}",
                    st.durable
                );
                let Some((_, m)) = st.history.iter().find(|(s, _)| *s == seq) else {
                    panic!(
                        "recovered seq {seq} is not a batch boundary: {:?}",
                        st.history.iter().map(|(s, _)| *s).collect::<Vec<_>>()
                    );
                };
                st.model = m.clone();
                check_all(st.engine(), &st.model, "after crash");
                st.reopened();
            }
        }
        // Point reads of a few keys after every step.
        for (c, name) in CFS.iter().enumerate() {
            for k in [1u8, 30, 58] {
                assert_eq!(
                    st.engine().get(name, &key(k)).unwrap(),
                    st.model[c].get(&key(k)).cloned(),
                    "get {name} {k} after {op:?}"
                );
            }
        }
    }
    check_all(st.engine(), &st.model, "at the end");
    st.snaps.clear();
    st.engine.take().unwrap().close().unwrap();
    let engine = open(&st.fs);
    check_all(&engine, &st.model, "after the final reopen");
    engine.close().unwrap();
}

fuzz_target!(|ops: Vec<Op>| {
    run(&ops[..ops.len().min(MAX_OPS)]);
});
