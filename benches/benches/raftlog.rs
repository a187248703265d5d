//! raftlog workloads, each against pontoon-raftlog and tikv/raft-engine in the same run:
//!
//! - `raftlog_append/{ours,raft_engine}/{1,4,16}`: 128-byte entries, 64 per batch, 100
//!   streams, every batch synced, 1/4/16 concurrent writers (entries/s);
//! - `raftlog_append_1mib/...`: 1 MiB batches, synced (bytes/s);
//! - `raftlog_read_back/...`: read every entry of 100 streams back (entries/s);
//! - `raftlog_recovery/ours`: reopen a store holding `PONTOON_RAFTLOG_RECOVERY_MB` MiB of
//!   log (default 64; set 1024 for the 1 GiB figure).
//!
//! Data goes to a temp dir under `PONTOON_BENCH_DIR` (default: cargo's
//! `CARGO_TARGET_TMPDIR`, inside the target dir, so on a real disk even where `/tmp` is
//! a tmpfs and `fdatasync` would be free).
//! `PONTOON_RAFTLOG_PREALLOCATE=0` / `PONTOON_RAFTLOG_IO_URING=0` /
//! `PONTOON_RAFTLOG_IO_URING_SYNC=1` switch preallocation / io_uring off and
//! ring fsyncs on for our store. Payloads are incompressible (raft-engine compresses batches).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pontoon_raftlog::{Config, Entry, LogBatch, LogStore};
use raft_engine::{Config as ReConfig, Engine as ReEngine, LogBatch as ReBatch, MessageExt};
use raft_proto::eraftpb;

const STREAMS: u64 = 100;
const ENTRIES_PER_BATCH: u64 = 64;
const ENTRY_BYTES: usize = 128;
const BATCHES_PER_WRITER: u64 = 8;
/// Entries kept per stream; older ones are compacted so the log stays bounded.
const KEEP: u64 = 1024;

#[derive(Clone)]
struct ReEntry;

impl MessageExt for ReEntry {
    type Entry = eraftpb::Entry;
    fn index(e: &eraftpb::Entry) -> u64 {
        e.index
    }
}

/// Incompressible payload bytes, different for every entry (raft-engine lz4-compresses
/// batches over 8 KiB; repeated bytes would make its writes nearly free). Slices of one
/// pre-generated random pool, so generating them costs a memcpy.
fn payload(bytes: usize, seed: u64) -> Vec<u8> {
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..(8usize << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    });
    let span = (pool.len() - bytes) as u64;
    let off = (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) % span;
    pool[off as usize..off as usize + bytes].to_vec()
}

fn env_flag(name: &str, default: bool) -> bool {
    std::env::var(name).map_or(default, |v| v != "0")
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("PONTOON_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(PathBuf::from(d)),
        None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")),
    }
    .expect("temp dir")
}

/// The log under test.
trait Log: Send + Sync {
    fn append(&self, stream: u64, first: u64, n: u64, bytes: usize, compact_to: u64);
    fn read_all(&self, stream: u64) -> usize;
    fn purge(&self);
}

struct Ours(LogStore);

impl Log for Ours {
    fn append(&self, stream: u64, first: u64, n: u64, bytes: usize, compact_to: u64) {
        let es: Vec<Entry> = (first..first + n)
            .map(|index| Entry {
                index,
                term: 1,
                data: payload(bytes, index ^ stream << 40),
            })
            .collect();
        let mut b = LogBatch::with_capacity(es.len() * (bytes + 12) + 64);
        b.add_entries(stream, &es).expect("contiguous");
        if compact_to > 1 {
            b.compact_to(stream, compact_to);
        }
        self.0.write(b, true).expect("write");
    }
    fn read_all(&self, stream: u64) -> usize {
        let (Some(lo), Some(hi)) = (self.0.first_index(stream), self.0.last_index(stream)) else {
            return 0;
        };
        self.0
            .entries(stream, lo, hi + 1, u64::MAX)
            .expect("read")
            .len()
    }
    fn purge(&self) {
        self.0.purge().expect("purge");
    }
}

struct Theirs(ReEngine);

impl Log for Theirs {
    fn append(&self, stream: u64, first: u64, n: u64, bytes: usize, compact_to: u64) {
        let es: Vec<eraftpb::Entry> = (first..first + n)
            .map(|index| eraftpb::Entry {
                index,
                term: 1,
                data: payload(bytes, index ^ stream << 40).into(),
                ..Default::default()
            })
            .collect();
        let mut b = ReBatch::with_capacity(es.len());
        b.add_entries::<ReEntry>(stream, &es).expect("add");
        self.0.write(&mut b, true).expect("write");
        if compact_to > 1 {
            self.0.compact_to(stream, compact_to);
        }
    }
    fn read_all(&self, stream: u64) -> usize {
        let (Some(lo), Some(hi)) = (self.0.first_index(stream), self.0.last_index(stream)) else {
            return 0;
        };
        let mut out = Vec::new();
        self.0
            .fetch_entries_to::<ReEntry>(stream, lo, hi + 1, None, &mut out)
            .expect("read")
    }
    fn purge(&self) {
        self.0.purge_expired_files().expect("purge");
    }
}

fn open_ours(dir: &std::path::Path, cache: usize) -> Arc<dyn Log> {
    let cfg = Config {
        cache_capacity_bytes: cache,
        preallocate: env_flag("PONTOON_RAFTLOG_PREALLOCATE", true),
        use_io_uring: env_flag("PONTOON_RAFTLOG_IO_URING", true),
        io_uring_sync: env_flag("PONTOON_RAFTLOG_IO_URING_SYNC", false),
        ..Config::default()
    };
    Arc::new(Ours(LogStore::open(dir, cfg).expect("open")))
}

fn open_theirs(dir: &std::path::Path) -> Arc<dyn Log> {
    let cfg = ReConfig {
        dir: dir.to_string_lossy().into_owned(),
        ..ReConfig::default()
    };
    Arc::new(Theirs(ReEngine::open(cfg).expect("open raft-engine")))
}

/// A named way to open a log in a directory.
type Opener = (&'static str, fn(&std::path::Path) -> Arc<dyn Log>);

fn engines() -> Vec<Opener> {
    vec![
        ("ours", |d| open_ours(d, 64 << 20)),
        ("raft_engine", open_theirs),
    ]
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("raftlog_append");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    // Every engine is opened up front and the engines take turns per writer count, so
    // that ours and raft-engine's numbers for one configuration come from the same
    // minutes of a noisy machine.
    type Next = Arc<Vec<AtomicU64>>;
    let logs: Vec<(&str, tempfile::TempDir, Arc<dyn Log>, Next)> = engines()
        .into_iter()
        .map(|(name, open)| {
            let dir = bench_dir();
            let log = open(dir.path());
            let next = Arc::new((0..STREAMS).map(|_| AtomicU64::new(1)).collect());
            (name, dir, log, next)
        })
        .collect();
    for writers in [1u64, 4, 16] {
        for (name, _dir, log, next) in &logs {
            g.throughput(Throughput::Elements(
                writers * BATCHES_PER_WRITER * ENTRIES_PER_BATCH,
            ));
            g.bench_function(BenchmarkId::new(*name, writers), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        std::thread::scope(|s| {
                            for w in 0..writers {
                                let (log, next) = (log.clone(), next.clone());
                                s.spawn(move || {
                                    // Writer w owns the streams congruent to w.
                                    let mine: Vec<u64> =
                                        (0..STREAMS).filter(|s| s % writers == w).collect();
                                    for k in 0..BATCHES_PER_WRITER {
                                        let stream = mine[(k as usize) % mine.len()];
                                        let first = next[stream as usize]
                                            .fetch_add(ENTRIES_PER_BATCH, Ordering::Relaxed);
                                        let compact =
                                            (first + ENTRIES_PER_BATCH).saturating_sub(KEEP);
                                        log.append(
                                            stream,
                                            first,
                                            ENTRIES_PER_BATCH,
                                            ENTRY_BYTES,
                                            compact,
                                        );
                                    }
                                });
                            }
                        });
                        total += start.elapsed();
                        log.purge();
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

fn append_1mib(c: &mut Criterion) {
    let mut g = c.benchmark_group("raftlog_append_1mib");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(1 << 20));
    for (name, open) in engines() {
        let dir = bench_dir();
        let log = open(dir.path());
        let mut next = 1u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                // 8 entries of 128 KiB = 1 MiB per synced batch.
                let compact = (next + 8).saturating_sub(64);
                log.append(1, next, 8, 128 << 10, compact);
                next += 8;
                if next % 512 == 1 {
                    log.purge();
                }
            })
        });
    }
    g.finish();
}

fn read_back(c: &mut Criterion) {
    let mut g = c.benchmark_group("raftlog_read_back");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let per_stream = 512u64;
    g.throughput(Throughput::Elements(STREAMS * per_stream));
    let openers: Vec<Opener> = vec![
        // Cache off: every entry comes from the segment files (page cache).
        ("ours", |d| open_ours(d, 0)),
        ("raft_engine", open_theirs),
    ];
    for (name, open) in openers {
        let dir = bench_dir();
        let log = open(dir.path());
        for round in 0..per_stream / ENTRIES_PER_BATCH {
            for stream in 0..STREAMS {
                log.append(
                    stream,
                    round * ENTRIES_PER_BATCH + 1,
                    ENTRIES_PER_BATCH,
                    ENTRY_BYTES,
                    0,
                );
            }
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                let n: usize = (0..STREAMS).map(|s| log.read_all(s)).sum();
                assert_eq!(n as u64, STREAMS * per_stream);
            })
        });
    }
    g.finish();
}

fn recovery(c: &mut Criterion) {
    let mb: u64 = std::env::var("PONTOON_RAFTLOG_RECOVERY_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let dir = bench_dir();
    {
        let store = LogStore::open(dir.path(), Config::default()).expect("open");
        let entry = 1024usize;
        let per_batch = 256u64;
        let batches = (mb << 20) / (entry as u64 * per_batch);
        for k in 0..batches {
            let stream = k % STREAMS;
            let first = k / STREAMS * per_batch + 1;
            let es: Vec<Entry> = (first..first + per_batch)
                .map(|index| Entry {
                    index,
                    term: 1,
                    data: vec![3u8; entry],
                })
                .collect();
            let mut b = LogBatch::new();
            b.add_entries(stream, &es).expect("contiguous");
            store.write(b, false).expect("write");
        }
    }
    let mut g = c.benchmark_group("raftlog_recovery");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(mb << 20));
    g.bench_function(BenchmarkId::new("ours", format!("{mb}MiB")), |b| {
        b.iter(|| {
            let store = LogStore::open(dir.path(), Config::default()).expect("reopen");
            assert!(store.stats().index_entries > 0);
        })
    });
    g.finish();
}

criterion_group!(benches, append, append_1mib, read_back, recovery);
criterion_main!(benches);
