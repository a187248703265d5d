//! `pontoon`: run one Pontoon store.
//!
//! With no flags it runs a single-node cluster on loopback with its data in `./data`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pontoon_server::server::{Server, ServerConfig};

/// The store allocates and frees many small buffers per command (frames, protobuf
/// messages, raft entries) across threads; glibc malloc took a fifth of the CPU of a
/// replicated put load, mimalloc a fraction of that. It is built without transparent huge
/// pages (`no_thp` in the workspace manifest): with them, zeroing freshly faulted 2 MiB
/// pages took another fifth of the CPU. `no_thp` turns them off for the whole process
/// (`prctl(PR_SET_THP_DISABLE)`), not only for mimalloc's heap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run a Pontoon store.
#[derive(Parser, Debug)]
#[command(name = "pontoon", version, about)]
struct Args {
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address clients connect to.
    #[arg(long)]
    client_addr: Option<SocketAddr>,
    /// Address other stores connect to.
    #[arg(long)]
    peer_addr: Option<SocketAddr>,
    /// This store's id.
    #[arg(long)]
    store_id: Option<u64>,
    /// Initial members: `1=127.0.0.1:2480,2=127.0.0.1:2490,...` (default: just this store).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// The cluster id to insist on (default: derived from --initial-cluster at bootstrap,
    /// read from the data directory afterwards).
    #[arg(long)]
    cluster_id: Option<u64>,
    /// Join a running cluster as a new member instead of bootstrapping one (etcd's
    /// `--initial-cluster-state existing`). Needs --cluster-id; add the store first with
    /// `pontoonctl member add ID --peer-urls HOST:PORT`.
    #[arg(long)]
    join: bool,
    /// TOML file with the same keys (snake_case); flags win over the file.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The keys a `--config` file may hold.
#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    client_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    store_id: Option<u64>,
    initial_cluster: Option<String>,
    cluster_id: Option<u64>,
    /// Seconds a graceful shutdown waits for in-flight requests.
    drain_timeout_secs: Option<u64>,
    /// Engine memtable size in MiB.
    write_buffer_mib: Option<usize>,
    /// Join a running cluster (see --join).
    join: Option<bool>,
    /// Raft tick in milliseconds (default 100; elections after 10 ticks).
    raft_tick_ms: Option<u64>,
    /// Entries in a region's applied log before the leader proposes CompactLog.
    compact_log_count: Option<u64>,
    /// Bytes of keys and values past which a region splits in two (0 = never; default
    /// 96 MiB).
    region_max_size: Option<u64>,
    /// Idle regions stop ticking (default true).
    hibernate_regions: Option<bool>,
    /// Replicas per region (bootstrap only; default: the number of initial members).
    max_peer_count: Option<u32>,
    /// Seconds a store may be silent before its replicas are replaced (default 1800).
    max_store_down_time_secs: Option<u64>,
    /// Run the placement: replica counts, replacing replicas of leaving or dead stores,
    /// leader and region balance (default true).
    placement: Option<bool>,
    /// Raft-log appends bypass the page cache in whole 4 KiB blocks (default true; off for
    /// file systems where that is slow; refused `O_DIRECT` falls back on its own).
    raftlog_direct_io: Option<bool>,
    /// Freed raft-log segments kept for reuse instead of deleted (default 4).
    raftlog_recycle_segments: Option<usize>,
    /// MiB of raft messages from other stores that may wait for the store loop before
    /// more are dropped (default 128).
    raft_inbound_limit_mib: Option<usize>,
}

fn parse_cluster(s: &str) -> Result<Vec<(u64, String)>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (id, addr) = p
                .split_once('=')
                .ok_or_else(|| format!("--initial-cluster entry {p:?} is not ID=HOST:PORT"))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| format!("--initial-cluster entry {p:?}: {id:?} is not a store id"))?;
            addr.trim()
                .parse::<SocketAddr>()
                .map_err(|_| format!("--initial-cluster entry {p:?}: {addr:?} is not HOST:PORT"))?;
            Ok((id, addr.trim().to_string()))
        })
        .collect()
}

fn config(args: Args) -> Result<ServerConfig, String> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str::<FileConfig>(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let mut cfg = ServerConfig::default();
    let mut explicit_cluster = false;
    if let Some(v) = args.data_dir.or(file.data_dir) {
        cfg.data_dir = v;
    }
    if let Some(v) = args.client_addr.or(file.client_addr) {
        cfg.client_addr = v;
    }
    if let Some(v) = args.peer_addr.or(file.peer_addr) {
        cfg.peer_addr = v;
    }
    if let Some(v) = args.store_id.or(file.store_id) {
        if v == 0 {
            return Err("--store-id must be at least 1".into());
        }
        cfg.store_id = v;
    }
    if let Some(v) = args.initial_cluster.or(file.initial_cluster) {
        cfg.initial_cluster = parse_cluster(&v)?;
        // An explicit membership names the cluster: a data directory of another is refused.
        explicit_cluster = true;
        if !cfg
            .initial_cluster
            .iter()
            .any(|(id, _)| *id == cfg.store_id)
        {
            return Err(format!(
                "--initial-cluster does not name this store ({})",
                cfg.store_id
            ));
        }
    }
    cfg.cluster_id = args.cluster_id.or(file.cluster_id);
    if cfg.cluster_id.is_none() && explicit_cluster {
        cfg.cluster_id = Some(cfg.derived_cluster_id());
    }
    if let Some(s) = file.drain_timeout_secs {
        cfg.drain_timeout = std::time::Duration::from_secs(s);
    }
    if let Some(m) = file.write_buffer_mib {
        cfg.engine.write_buffer_size = m << 20;
    }
    if let Some(ms) = file.raft_tick_ms {
        if ms == 0 {
            return Err("raft_tick_ms must be at least 1".into());
        }
        cfg.node.tick_interval = std::time::Duration::from_millis(ms);
    }
    if let Some(n) = file.compact_log_count {
        cfg.node.compact_log_count = n.max(1);
    }
    if let Some(n) = file.region_max_size {
        cfg.node.region_max_size = n;
    }
    if let Some(h) = file.hibernate_regions {
        cfg.node.hibernate_regions = h;
    }
    if let Some(n) = file.max_peer_count {
        cfg.node.max_peer_count = n;
    }
    if let Some(s) = file.max_store_down_time_secs {
        cfg.node.max_store_down_time = std::time::Duration::from_secs(s.max(1));
    }
    if let Some(p) = file.placement {
        cfg.node.placement = p;
    }
    if let Some(d) = file.raftlog_direct_io {
        cfg.raftlog.direct_io = d;
    }
    if let Some(n) = file.raftlog_recycle_segments {
        cfg.raftlog.recycle_segments = n;
    }
    if let Some(m) = file.raft_inbound_limit_mib {
        if m == 0 {
            return Err("raft_inbound_limit_mib must be at least 1".into());
        }
        cfg.node.raft_inbound_limit_bytes = m.saturating_mul(1 << 20);
    }
    cfg.join = args.join || file.join.unwrap_or(false);
    if cfg.join && args.cluster_id.or(file.cluster_id).is_none() {
        return Err(
            "--join needs --cluster-id: the id of the cluster to join (pontoonctl endpoint status shows it)"
                .into(),
        );
    }
    Ok(cfg)
}

/// Why the process stops.
enum Stop {
    Signal(&'static str),
    /// The store loop stopped on a failed disk write; the message says why.
    Failed(String),
}

/// Waits for SIGTERM or SIGINT, or for the store loop to fail: a node that cannot write
/// must not linger as a process that accepts connections and serves nothing (its
/// supervisor restarts it; the restart replays the raft log).
fn wait_for_stop(server: &Server) -> Result<Stop, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the signal runtime: {e}"))?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut poll = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = term.recv() => return Ok(Stop::Signal("SIGTERM")),
                _ = int.recv() => return Ok(Stop::Signal("SIGINT")),
                _ = poll.tick() => {
                    if let Some(e) = server.failure() {
                        return Ok(Stop::Failed(e));
                    }
                }
            }
        }
    })
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cfg = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "pontoon: serving clients on {}, peers on {}",
        server.local_addr(),
        server.peer_addr()
    );
    let failed = match wait_for_stop(&server) {
        Ok(Stop::Signal(sig)) => {
            log::info!("{sig}: shutting down");
            None
        }
        Ok(Stop::Failed(e)) => {
            log::error!("the store failed ({e}); shutting down");
            Some(e)
        }
        Err(e) => {
            log::error!("signal handling failed ({e}); shutting down");
            None
        }
    };
    let result = server.shutdown();
    if let Some(e) = failed {
        eprintln!("Error: the store failed: {e}");
        return ExitCode::FAILURE;
    }
    match result {
        Ok(()) => {
            log::info!("shut down cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{config, Args};

    fn with_file(toml: &str) -> Result<pontoon_server::server::ServerConfig, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("pontoon.toml");
        std::fs::write(&path, toml).map_err(|e| e.to_string())?;
        let args = Args::parse_from(["pontoon", "--config", &path.display().to_string()]);
        config(args)
    }

    #[test]
    fn config_file_sets_the_raft_log_and_inbound_limits() {
        let cfg = with_file(
            "raftlog_direct_io = false\nraftlog_recycle_segments = 0\nraft_inbound_limit_mib = 16\n",
        )
        .unwrap();
        assert!(!cfg.raftlog.direct_io);
        assert_eq!(cfg.raftlog.recycle_segments, 0);
        assert_eq!(cfg.node.raft_inbound_limit_bytes, 16 << 20);
        let defaults = with_file("").unwrap();
        assert!(defaults.raftlog.direct_io);
        assert_eq!(defaults.raftlog.recycle_segments, 4);
        assert_eq!(defaults.node.raft_inbound_limit_bytes, 128 << 20);
    }

    #[test]
    fn config_file_refuses_bad_values_and_unknown_keys() {
        let e = with_file("raft_inbound_limit_mib = 0\n").unwrap_err();
        assert!(e.contains("raft_inbound_limit_mib"), "{e}");
        let e = with_file("raftlog_direct = false\n").unwrap_err();
        assert!(e.contains("raftlog_direct"), "{e}");
    }
}
