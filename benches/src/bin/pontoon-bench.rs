//! `pontoon-bench`: a load generator in the style of etcd's `benchmark` tool.
//!
//! ```text
//! pontoon-bench --endpoints 127.0.0.1:2479 --clients 100 --conns 10 [--json] \
//!     put --total 100000 --key-size 8 --val-size 256 [--sequential-keys] [--key-space-size K]
//! pontoon-bench --endpoints 127.0.0.1:2479 --clients 100 --conns 10 \
//!     range KEY [RANGE_END] [--consistency l|s] --total 100000
//! pontoon-bench --endpoints 127.0.0.1:2479 split --regions 64 --key-size 8 --key-space-size K
//! pontoon-bench mock-server --listen 127.0.0.1:2479   # a mock store, to try the tool
//! ```
//!
//! `--clients` concurrent tasks share `--conns` client instances (each with its own
//! connection per endpoint, task `i` using instance `i % conns`) and issue `--total`
//! requests between them (or as many as they get through in `--duration` seconds). See
//! `benches/README.md`.

#[path = "../mock.rs"]
mod mock;
#[path = "../report.rs"]
mod report;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pontoon_client::client::{Client, ClientOptions, RangeOptions};
use report::{new_histogram, Report};

/// The same allocator as the `pontoon` binary: the load generator shares the machine with
/// the stores, so its CPU per request counts.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "pontoon-bench",
    about = "Load generator for Pontoon (etcd benchmark style)"
)]
struct Cli {
    /// Comma-separated store addresses.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:2479",
        global = true
    )]
    endpoints: Vec<String>,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 1, global = true)]
    clients: usize,
    /// Connections: client instances the tasks are spread over.
    #[arg(long, default_value_t = 1, global = true)]
    conns: usize,
    /// Print a one-line JSON summary instead of the text report.
    #[arg(long, global = true)]
    json: bool,
    /// Stop after this many seconds (put and range) even if --total is not reached: runs
    /// of equal length, e.g. two clusters measured side by side on one machine.
    #[arg(long, global = true)]
    duration: Option<f64>,
    /// Timeout of one request, retries included, in milliseconds.
    #[arg(long, default_value_t = 5000, global = true)]
    command_timeout_ms: u64,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Puts random (or sequential) keys.
    Put {
        /// Total requests.
        #[arg(long, default_value_t = 10000)]
        total: u64,
        /// Key size in bytes.
        #[arg(long, default_value_t = 8)]
        key_size: usize,
        /// Value size in bytes.
        #[arg(long, default_value_t = 8)]
        val_size: usize,
        /// Use keys 0, 1, 2, ... (modulo the key space) instead of random ones.
        #[arg(long)]
        sequential_keys: bool,
        /// Number of distinct keys.
        #[arg(long, default_value_t = 1)]
        key_space_size: u64,
    },
    /// Reads a key or a range [KEY, RANGE_END), or random keys of a key space.
    Range {
        /// The key, or start of the range (ignored with --key-space-size).
        #[arg(default_value = "")]
        key: String,
        /// End of the range (exclusive); absent: KEY alone.
        range_end: Option<String>,
        /// Linearizable (l) or serializable (s).
        #[arg(long, default_value = "l")]
        consistency: String,
        /// Total requests.
        #[arg(long, default_value_t = 10000)]
        total: u64,
        /// Read random keys among the first K keys of `put` (same encoding) instead of KEY.
        #[arg(long, default_value_t = 0)]
        key_space_size: u64,
        /// Key size of those keys, as given to `put`.
        #[arg(long, default_value_t = 8)]
        key_size: usize,
    },
    /// Splits the cluster into regions holding equal shares of the keys `put` writes (the
    /// first K keys of its encoding), before a run.
    Split {
        /// Regions wanted in the key space (at least 2).
        #[arg(long)]
        regions: usize,
        /// Key size, as given to `put`.
        #[arg(long, default_value_t = 8)]
        key_size: usize,
        /// Key space, as given to `put`.
        #[arg(long, default_value_t = 100_000)]
        key_space_size: u64,
    },
    /// Runs a mock store (for trying the tool without a server).
    #[command(hide = true)]
    MockServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:2479")]
        listen: String,
    },
}

/// Latencies a client task collects before it records them in its histogram.
const LATENCY_BATCH: usize = 512;

/// etcd's key encoding for `benchmark put`: `binary.PutVarint` of the key number into a
/// zeroed buffer of `size` bytes.
fn put_key(n: u64, size: usize) -> Vec<u8> {
    let mut k = vec![0u8; size.max(1)];
    let mut v = ((n as i64) << 1 ^ ((n as i64) >> 63)) as u64; // zig-zag, as PutVarint
    let mut i = 0;
    while v >= 0x80 && i < k.len() {
        k[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    if i < k.len() {
        k[i] = v as u8;
    }
    k
}

/// The keys that cut the first `key_space` keys of `put`'s encoding into `regions` equal
/// shares (sorted, distinct, never the empty key).
fn split_keys(regions: usize, key_size: usize, key_space: u64) -> Vec<Vec<u8>> {
    let sample = key_space.clamp(1, 1 << 20);
    let step = (key_space / sample).max(1);
    let mut keys: Vec<Vec<u8>> = (0..sample).map(|i| put_key(i * step, key_size)).collect();
    keys.sort();
    keys.dedup();
    let mut out: Vec<Vec<u8>> = (1..regions.max(1))
        .filter_map(|i| keys.get(i * keys.len() / regions.max(1)).cloned())
        .filter(|k| !k.is_empty())
        .collect();
    out.dedup();
    out
}

async fn split(
    endpoints: &[String],
    regions: usize,
    key_size: usize,
    key_space: u64,
) -> Result<(), String> {
    if regions < 2 {
        return Err("--regions must be at least 2".into());
    }
    let client = Client::connect(endpoints, ClientOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let keys = split_keys(regions, key_size, key_space);
    let started = Instant::now();
    // Highest key first: each split then cuts the left part, whose leader is settled, not
    // the region the previous split just made (which may still be electing its leader).
    for (i, key) in keys.iter().rev().enumerate() {
        client
            .region_split(key)
            .await
            .map_err(|e| format!("split at {key:02x?}: {e}"))?;
        if (i + 1) % 64 == 0 {
            eprintln!("{} of {} splits", i + 1, keys.len());
        }
    }
    let listed = client.region_list().await.map_err(|e| e.to_string())?;
    eprintln!(
        "{} splits in {:.1?}; the cluster lists {} regions",
        keys.len(),
        started.elapsed(),
        listed.len()
    );
    Ok(())
}

/// xorshift64*: enough randomness for key choice without a dependency.
fn next_rand(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        key_size: usize,
        value: Arc<Vec<u8>>,
        sequential: bool,
        key_space: u64,
    },
    Range {
        key: Vec<u8>,
        opts: RangeOptions,
        /// Non-zero: read random `put_key`s of this key space instead of `key`.
        key_space: u64,
        key_size: usize,
    },
}

async fn run(cli: Cli) -> Result<(), String> {
    let duration = match cli.duration {
        Some(d) if !(d.is_finite() && d > 0.0) => {
            return Err(format!(
                "--duration must be a positive number of seconds, not {d}"
            ))
        }
        d => d.map(|d| Duration::from_secs_f64(d.min(1e9))),
    };
    let (name, total, op) = match cli.workload {
        Workload::Put {
            total,
            key_size,
            val_size,
            sequential_keys,
            key_space_size,
        } => {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let value: Vec<u8> = (0..val_size).map(|_| next_rand(&mut seed) as u8).collect();
            (
                "put",
                total,
                Op::Put {
                    key_size,
                    value: Arc::new(value),
                    sequential: sequential_keys,
                    key_space: key_space_size.max(1),
                },
            )
        }
        Workload::Range {
            key,
            range_end,
            consistency,
            total,
            key_space_size,
            key_size,
        } => {
            if key.is_empty() && key_space_size == 0 {
                return Err("range needs a KEY or --key-space-size".into());
            }
            let serializable = match consistency.as_str() {
                "l" => false,
                "s" => true,
                other => return Err(format!("unknown consistency flag {other:?}")),
            };
            (
                "range",
                total,
                Op::Range {
                    key: key.into_bytes(),
                    opts: RangeOptions {
                        range_end: range_end.map(String::into_bytes).unwrap_or_default(),
                        serializable,
                        ..Default::default()
                    },
                    key_space: key_space_size,
                    key_size,
                },
            )
        }
        Workload::Split {
            regions,
            key_size,
            key_space_size,
        } => return split(&cli.endpoints, regions, key_size, key_space_size).await,
        Workload::MockServer { listen } => {
            let m = mock::MockServer::start(&listen, mock::MockConfig::default())
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            eprintln!("mock store listening on {}", m.addr);
            std::future::pending::<()>().await;
            return Ok(());
        }
    };
    let clients_n = cli.clients.max(1);
    let conns_n = cli.conns.clamp(1, clients_n);
    let opts = ClientOptions {
        request_timeout: Duration::from_millis(cli.command_timeout_ms),
        client_name: "pontoon-bench".into(),
        ..ClientOptions::default()
    };
    let mut conns = Vec::with_capacity(conns_n);
    for _ in 0..conns_n {
        conns.push(
            Client::connect(&cli.endpoints, opts.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let bar = if std::io::stdout().is_terminal() && !cli.json {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} [{elapsed_precise}] {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(pb)
    } else {
        None
    };
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    // Milliseconds since `start` of the last success; when a request fails and none has
    // succeeded for a whole request timeout (the store is gone), the run stops instead of
    // spending a timeout on each of the remaining requests.
    let last_ok = Arc::new(AtomicU64::new(0));
    let stalled = Arc::new(AtomicBool::new(false));
    let stall_ms = cli.command_timeout_ms.max(1000);
    let mut tasks = Vec::with_capacity(clients_n);
    for t in 0..clients_n {
        let client = conns[t % conns_n].clone();
        let next = Arc::clone(&next);
        let last_ok = Arc::clone(&last_ok);
        let stalled = Arc::clone(&stalled);
        let op = op.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_histogram();
            // Latencies go to the histogram a batch at a time: 256 tasks' histograms do not
            // fit in the caches together, so one record each time cost a cache miss or
            // more (~4% of the load generator's CPU); a batch keeps one histogram hot.
            let mut recent: Vec<u64> = Vec::with_capacity(LATENCY_BATCH);
            // The last progress time this task published to `last_ok` (a shared line that
            // every request used to write).
            let mut published_ms = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut seed = 0x1234_5678_9abc_def1u64 ^ ((t as u64 + 1) << 20);
            loop {
                if stalled.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let began = Instant::now();
                if deadline.is_some_and(|d| began >= d) {
                    break;
                }
                let result = match &op {
                    Op::Put {
                        key_size,
                        value,
                        sequential,
                        key_space,
                    } => {
                        let n = if *sequential {
                            i % key_space
                        } else {
                            next_rand(&mut seed) % key_space
                        };
                        client
                            .put(&put_key(n, *key_size), value, false)
                            .await
                            .map(|_| ())
                    }
                    Op::Range {
                        key,
                        opts,
                        key_space,
                        key_size,
                    } => {
                        if *key_space == 0 {
                            client.range(key, opts.clone()).await.map(|_| ())
                        } else {
                            let k = put_key(next_rand(&mut seed) % key_space, *key_size);
                            client.range(&k, opts.clone()).await.map(|_| ())
                        }
                    }
                };
                match result {
                    Ok(()) => {
                        let end = Instant::now();
                        let us = u64::try_from(end.duration_since(began).as_micros())
                            .unwrap_or(u64::MAX);
                        recent.push(us.max(1));
                        if recent.len() == LATENCY_BATCH {
                            for us in recent.drain(..) {
                                hist.saturating_record(us);
                            }
                        }
                        let now = u64::try_from(end.duration_since(start).as_millis())
                            .unwrap_or(u64::MAX);
                        // Stall detection needs progress to the second, not the request.
                        if now >= published_ms + 50 {
                            last_ok.fetch_max(now, Ordering::Relaxed);
                            published_ms = now;
                        }
                    }
                    Err(e) => {
                        *errors.entry(e.to_string()).or_default() += 1;
                        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                        if now.saturating_sub(last_ok.load(Ordering::Relaxed)) >= stall_ms {
                            stalled.store(true, Ordering::Relaxed);
                        }
                    }
                }
                if let Some(b) = &bar {
                    b.inc(1);
                }
            }
            for us in recent {
                hist.saturating_record(us);
            }
            (hist, errors)
        }));
    }
    let mut report = Report::new(name, clients_n, conns_n);
    for t in tasks {
        let (hist, errors) = t.await.map_err(|e| format!("client task failed: {e}"))?;
        report
            .latency_us
            .add(&hist)
            .map_err(|e| format!("merging histograms: {e:?}"))?;
        for (e, n) in errors {
            *report.errors.entry(e).or_default() += n;
        }
    }
    report.elapsed = start.elapsed();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if cli.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if stalled.load(Ordering::Relaxed) {
        return Err(format!(
            "stopped after {} of {total} requests: none succeeded for {:.1} s (the errors above say why)",
            report.latency_us.len() + report.errors.values().sum::<u64>(),
            stall_ms as f64 / 1000.0
        ));
    }
    if report.latency_us.is_empty() && total > 0 {
        return Err("every request failed".into());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_etcds_varints() {
        // Go: binary.PutVarint(k, 1) writes 0x02; PutVarint(k, 64) writes 0x80 0x01.
        assert_eq!(put_key(0, 8), vec![0; 8]);
        assert_eq!(put_key(1, 8), vec![2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(put_key(64, 4), vec![0x80, 1, 0, 0]);
        assert_eq!(put_key(1 << 40, 2).len(), 2);
    }
}
