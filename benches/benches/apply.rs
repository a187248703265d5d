//! The apply path: committed Put commands turned into engine writes with etcd metadata
//! (`mvcc::apply_ops` reads the key's current metadata and stages the new value) and
//! written to the engine with the apply state. `put_256b` writes each command on its own
//! (a region that applies one entry per round); `put_256b_x16` stages 16 commands in one
//! `Pending` and writes them in one batch with one apply state (a busy region's round).
//!
//! `cargo bench -p pontoon-benches --bench apply`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pontoon_engine::{Engine, Options};
use pontoon_server::mvcc::{apply_ops, ApplyState, Op, Pending};

const VALUE: [u8; 256] = [b'v'; 256];

/// The key of the `i`th put (the value is always [`VALUE`]).
fn put_key(i: u64) -> Vec<u8> {
    format!("key{:08}", i % 100_000).into_bytes()
}

fn put_op(key: &[u8]) -> Op<'_> {
    Op::Put {
        cf: "default",
        key,
        value: &VALUE,
        lease: 0,
        prev_kv: false,
    }
}

fn apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(dir.path(), Options::default()).expect("engine");
    let mut state = ApplyState::default();
    let mut i = 0u64;
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(1));
    g.bench_function("put_256b", |b| {
        b.iter_batched(
            || {
                i += 1;
                put_key(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            },
            |key| {
                let mut pending = Pending::default();
                apply_ops(&engine, &mut state, &mut pending, &[put_op(&key)]).expect("apply");
                state.applied_index += 1;
                let mut batch = pending.take();
                state.stage(&mut batch, 1);
                engine.write(&batch).expect("write");
            },
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(16));
    g.bench_function("put_256b_x16", |b| {
        b.iter_batched(
            || {
                (0..16)
                    .map(|_| {
                        i += 1;
                        put_key(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    })
                    .collect::<Vec<_>>()
            },
            |keys| {
                let mut pending = Pending::default();
                for key in &keys {
                    apply_ops(&engine, &mut state, &mut pending, &[put_op(key)]).expect("apply");
                    state.applied_index += 1;
                }
                let mut batch = pending.take();
                state.stage(&mut batch, 1);
                engine.write(&batch).expect("write");
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
