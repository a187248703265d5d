//! The apply path: one committed Put command turned into engine writes with etcd metadata
//! (`mvcc::apply_ops` reads the key's current metadata, stages the new value and the apply
//! state) and written to the engine — what the store loop does per committed entry.
//!
//! `cargo bench -p pontoon-benches --bench apply`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pontoon_engine::{Engine, Options, WriteBatch};
use pontoon_server::mvcc::{apply_ops, ApplyState, Op};

fn put_op(i: u64) -> Op {
    Op::Put {
        cf: "default".into(),
        key: format!("key{:08}", i % 100_000).into_bytes(),
        value: vec![b'v'; 256],
        lease: 0,
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
                put_op(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            },
            |op| {
                let mut batch = WriteBatch::new();
                apply_ops(&engine, &mut state, &mut batch, std::slice::from_ref(&op))
                    .expect("apply");
                state.applied_index += 1;
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
