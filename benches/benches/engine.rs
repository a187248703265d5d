//! db_bench-style workloads for `pontoon-engine`, with fjall 3 on the same workloads in the
//! same criterion groups (functions `pontoon` and `fjall`), so the two sit side by side.
//!
//! Keys are 16 bytes (zero-padded decimal), values 100 bytes. `N` (default 1,000,000) is set
//! with `PONTOON_BENCH_KEYS`. Data goes to a temp dir under `PONTOON_BENCH_DIR` (default: the
//! system temp dir).
//!
//! | group | workload | unit |
//! |---|---|---|
//! | `fillseq` | puts of ascending new keys, 10k per iteration, into one growing db | keys/s |
//! | `fillrandom` | puts of uniformly random keys in `[0, N)`, 10k per iteration | keys/s |
//! | `overwrite` | as `fillrandom`, into a db pre-loaded with all `N` keys | keys/s |
//! | `readrandom_memtable` | random hits on `min(N, 200k)` keys that are all in the memtable | gets/s |
//! | `readrandom_memtable_miss` | random misses (keys between `min(N, 200k)` loaded ones) on a memtable-only db: what every put of a new key pays for etcd's metadata | gets/s |
//! | `readrandom_sst_hit` | random hits on `N` keys, flushed and fully compacted | gets/s |
//! | `readrandom_sst_miss` | random misses (keys between the loaded ones) on the same db | gets/s |
//! | `seekrandom` | seek to a random loaded key and read it plus the next 99 entries | seeks/s |
//!
//! Neither engine syncs on a write: pontoon has no WAL by design (the raft log is the WAL) and
//! fjall's journal is written with buffered writes unless a write asks to persist. Block
//! compression is off in both.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions};
use pontoon_engine::{Engine, IterOptions, Options, WriteBatch};

const CF: &str = "default";
const VALUE_LEN: usize = 100;
/// Keys written per iteration of a fill benchmark.
const FILL_BATCH: u64 = 10_000;
/// Keys of the memtable-read db (must fit in a 64 MiB memtable in both engines).
const MEMTABLE_KEYS: u64 = 200_000;
/// Entries read per seek.
const SCAN_LEN: usize = 100;

fn num_keys() -> u64 {
    std::env::var("PONTOON_BENCH_KEYS")
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .filter(|n: &u64| *n > 0)
        .unwrap_or(1_000_000)
}

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("PONTOON_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(PathBuf::from(d)),
        None => tempfile::tempdir(),
    }
    .unwrap()
}

/// The 16-byte key of `i`.
fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    let s = format!("{i:016}");
    k.copy_from_slice(&s.as_bytes()[s.len() - 16..]);
    k
}

/// A 100-byte value derived from `i` (no block compression runs, so its content only has to
/// differ between keys).
fn value(i: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    v
}

/// xorshift64*: cheap and deterministic, so both engines see the same key sequence.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

// ---- the two engines behind one interface ----

trait Db {
    fn put(&self, k: &[u8], v: &[u8]);
    /// Loads keys `f(0..n)` as fast as the engine allows (batches of 1000).
    fn load(&self, n: u64, f: impl Fn(u64) -> u64);
    /// Gets `k`, returning the value length (0 if absent).
    fn get(&self, k: &[u8]) -> usize;
    /// Reads up to `n` entries from `k` on; returns the bytes seen.
    fn scan(&self, k: &[u8], n: usize) -> usize;
    /// Moves everything to SSTables and compacts it to the bottom.
    fn settle(&self);
    /// True if nothing has been flushed out of the memtable.
    fn all_in_memtable(&self) -> bool;
}

struct Pontoon {
    db: Engine,
    _dir: tempfile::TempDir,
}

impl Pontoon {
    fn open() -> Pontoon {
        let dir = tempdir();
        let db = Engine::open(dir.path(), Options::default()).unwrap();
        Pontoon { db, _dir: dir }
    }
}

impl Db for Pontoon {
    fn put(&self, k: &[u8], v: &[u8]) {
        self.db.put(CF, k, v).unwrap();
    }
    fn load(&self, n: u64, f: impl Fn(u64) -> u64) {
        let mut batch = WriteBatch::new();
        for i in 0..n {
            let j = f(i);
            batch.put(CF, &key(j), &value(j));
            if batch.len() == 1000 {
                self.db.write(&batch).unwrap();
                batch.clear();
            }
        }
        if !batch.is_empty() {
            self.db.write(&batch).unwrap();
        }
    }
    fn get(&self, k: &[u8]) -> usize {
        self.db.get(CF, k).unwrap().map_or(0, |v| v.len())
    }
    fn scan(&self, k: &[u8], n: usize) -> usize {
        let opts = IterOptions {
            lower_bound: Some(k.to_vec()),
            ..IterOptions::default()
        };
        self.db
            .iter(CF, opts)
            .unwrap()
            .take(n)
            .map(|r| {
                let (k, v) = r.unwrap();
                k.len() + v.len()
            })
            .sum()
    }
    fn settle(&self) {
        self.db.flush().unwrap();
        self.db.compact_all().unwrap();
    }
    fn all_in_memtable(&self) -> bool {
        self.db.stats().flushes == 0
    }
}

struct Fjall {
    ks: Keyspace,
    db: Database,
    _dir: tempfile::TempDir,
}

impl Fjall {
    fn open() -> Fjall {
        let dir = tempdir();
        // A block cache large enough for the data set: pontoon reads SSTables through mmap,
        // i.e. the whole OS page cache, so fjall should not be held back by a small cache.
        let db = Database::builder(dir.path())
            .cache_size(512 << 20)
            .open()
            .unwrap();
        let ks = db
            .keyspace(CF, || {
                KeyspaceCreateOptions::default()
                    .data_block_compression_policy(CompressionPolicy::all(CompressionType::None))
            })
            .unwrap();
        Fjall { ks, db, _dir: dir }
    }
}

impl Db for Fjall {
    fn put(&self, k: &[u8], v: &[u8]) {
        self.ks.insert(k, v).unwrap();
    }
    fn load(&self, n: u64, f: impl Fn(u64) -> u64) {
        let mut batch = self.db.batch();
        let mut len = 0;
        for i in 0..n {
            let j = f(i);
            batch.insert(&self.ks, key(j), value(j));
            len += 1;
            if len == 1000 {
                batch.commit().unwrap();
                batch = self.db.batch();
                len = 0;
            }
        }
        batch.commit().unwrap();
    }
    fn get(&self, k: &[u8]) -> usize {
        self.ks.get(k).unwrap().map_or(0, |v| v.len())
    }
    fn scan(&self, k: &[u8], n: usize) -> usize {
        self.ks
            .range(k..)
            .take(n)
            .map(|g| {
                let (k, v) = g.into_inner().unwrap();
                k.len() + v.len()
            })
            .sum()
    }
    fn settle(&self) {
        self.ks.rotate_memtable_and_wait().unwrap();
        self.ks.major_compact().unwrap();
    }
    fn all_in_memtable(&self) -> bool {
        self.ks.table_count() == 0
    }
}

// ---- workloads ----

fn group<'a>(c: &'a mut Criterion, name: &str, elements: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(elements));
    g
}

type WallTime = criterion::measurement::WallTime;

/// Each iteration puts `FILL_BATCH` keys chosen by `next` into one db, which persists across
/// iterations. The db is made by `open` the first time the benchmark runs, so a filter that
/// skips the benchmark skips its setup too.
fn bench_fill<D: Db>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    open: impl Fn() -> D,
    mut next: impl FnMut() -> u64,
) {
    let mut db = None;
    g.bench_function(name, |b| {
        let db = db.get_or_insert_with(&open);
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..FILL_BATCH {
                    let i = next();
                    db.put(&key(i), &value(i));
                }
            }
            start.elapsed()
        })
    });
}

fn fillseq(c: &mut Criterion) {
    let mut g = group(c, "fillseq", FILL_BATCH);
    let mut i = 0;
    bench_fill(&mut g, "pontoon", Pontoon::open, || {
        i += 1;
        i
    });
    let mut i = 0;
    bench_fill(&mut g, "fjall", Fjall::open, || {
        i += 1;
        i
    });
    g.finish();
}

fn fillrandom(c: &mut Criterion) {
    let n = num_keys();
    let mut g = group(c, "fillrandom", FILL_BATCH);
    let mut rng = Rng::new(1);
    bench_fill(&mut g, "pontoon", Pontoon::open, || rng.below(n));
    let mut rng = Rng::new(1);
    bench_fill(&mut g, "fjall", Fjall::open, || rng.below(n));
    g.finish();
}

/// `open`, then all `N` keys loaded.
fn preloaded<D: Db>(open: impl Fn() -> D) -> impl Fn() -> D {
    move || {
        let db = open();
        db.load(num_keys(), |i| i);
        db
    }
}

fn overwrite(c: &mut Criterion) {
    let n = num_keys();
    let mut g = group(c, "overwrite", FILL_BATCH);
    let mut rng = Rng::new(2);
    bench_fill(&mut g, "pontoon", preloaded(Pontoon::open), || rng.below(n));
    let mut rng = Rng::new(2);
    bench_fill(&mut g, "fjall", preloaded(Fjall::open), || rng.below(n));
    g.finish();
}

/// Random gets of keys `f(0..n)` on the db in `db`, made by `open` if not there yet.
fn bench_gets<D: Db>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    db: &mut Option<D>,
    open: impl Fn() -> D,
    n: u64,
    f: impl Fn(u64) -> u64,
) {
    let mut rng = Rng::new(3);
    g.bench_function(name, |b| {
        let db = db.get_or_insert_with(&open);
        b.iter(|| black_box(db.get(&key(f(rng.below(n))))))
    });
}

/// `open`, then `min(N, 200k)` keys loaded (key `i` is `f(i)`); checks that all of them are
/// still in the memtable.
fn memtable_db<D: Db>(open: impl Fn() -> D, f: fn(u64) -> u64) -> impl Fn() -> D {
    move || {
        let db = open();
        db.load(num_keys().min(MEMTABLE_KEYS), f);
        assert!(
            db.all_in_memtable(),
            "the memtable db flushed during the load"
        );
        db
    }
}

fn readrandom_memtable(c: &mut Criterion) {
    let n = num_keys().min(MEMTABLE_KEYS);
    let mut g = group(c, "readrandom_memtable", 1);
    bench_gets(
        &mut g,
        "pontoon",
        &mut None,
        memtable_db(Pontoon::open, |i| i),
        n,
        |i| i,
    );
    bench_gets(
        &mut g,
        "fjall",
        &mut None,
        memtable_db(Fjall::open, |i| i),
        n,
        |i| i,
    );
    g.finish();
}

fn readrandom_memtable_miss(c: &mut Criterion) {
    let n = num_keys().min(MEMTABLE_KEYS);
    let mut g = group(c, "readrandom_memtable_miss", 1);
    bench_gets(
        &mut g,
        "pontoon",
        &mut None,
        memtable_db(Pontoon::open, |i| 2 * i),
        n,
        |i| 2 * i + 1,
    );
    bench_gets(
        &mut g,
        "fjall",
        &mut None,
        memtable_db(Fjall::open, |i| 2 * i),
        n,
        |i| 2 * i + 1,
    );
    g.finish();
}

/// `open`, then the even keys `0, 2, .., 2(N-1)` loaded, flushed and compacted to the bottom.
/// The odd keys in between are misses that fall inside every file's key range, so only the
/// bloom filter can skip them.
fn sst_db<D: Db>(open: impl Fn() -> D) -> impl Fn() -> D {
    move || {
        let db = open();
        db.load(num_keys(), |i| 2 * i);
        db.settle();
        db
    }
}

fn sst_reads(c: &mut Criterion) {
    let n = num_keys();
    // Shared by the three groups; each is built the first time a benchmark needs it.
    let mut pontoon = None;
    let mut fjall = None;

    let mut g = group(c, "readrandom_sst_hit", 1);
    bench_gets(
        &mut g,
        "pontoon",
        &mut pontoon,
        sst_db(Pontoon::open),
        n,
        |i| 2 * i,
    );
    bench_gets(&mut g, "fjall", &mut fjall, sst_db(Fjall::open), n, |i| {
        2 * i
    });
    g.finish();

    let mut g = group(c, "readrandom_sst_miss", 1);
    bench_gets(
        &mut g,
        "pontoon",
        &mut pontoon,
        sst_db(Pontoon::open),
        n,
        |i| 2 * i + 1,
    );
    bench_gets(&mut g, "fjall", &mut fjall, sst_db(Fjall::open), n, |i| {
        2 * i + 1
    });
    g.finish();

    let mut g = group(c, "seekrandom", 1);
    bench_seeks(&mut g, "pontoon", &mut pontoon, sst_db(Pontoon::open), n);
    bench_seeks(&mut g, "fjall", &mut fjall, sst_db(Fjall::open), n);
    g.finish();
}

/// Seeks to a random loaded key and reads `SCAN_LEN` entries from there.
fn bench_seeks<D: Db>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    db: &mut Option<D>,
    open: impl Fn() -> D,
    n: u64,
) {
    let mut rng = Rng::new(4);
    g.bench_function(name, |b| {
        let db = db.get_or_insert_with(&open);
        b.iter(|| black_box(db.scan(&key(2 * rng.below(n)), SCAN_LEN)))
    });
}

criterion_group!(
    benches,
    fillseq,
    fillrandom,
    overwrite,
    readrandom_memtable,
    readrandom_memtable_miss,
    sst_reads
);
criterion_main!(benches);
