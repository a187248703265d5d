//! Putting a node together: data directory, store identity, engine, raft-log store, store
//! loop, and on its io_uring thread the client service, the peer service and the peer
//! transport's connections; and taking it apart gracefully.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pontoon_client::prost::Message as _;
use pontoon_client::proto::raft_serverpb::StoreIdent;
use pontoon_client::Limits;
use pontoon_engine::{Engine, Options as EngineOptions};
use pontoon_raftlog::LogStore;
use tokio::sync::watch;

use crate::node::{Node, NodeConfig};
use crate::peer_net::{PeerNetConfig, RaftSink, TcpTransport};

const STORE_IDENT_KEY: &[u8] = b"store_ident";

/// Everything a node needs to start. Every field says its default (the `pontoon` binary's
/// flags map onto these).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Data directory (holds `engine/` and `raftlog/`). Default: `./data`.
    pub data_dir: PathBuf,
    /// Address clients connect to. Default: 127.0.0.1:2479.
    pub client_addr: SocketAddr,
    /// Address other stores connect to (raft messages and snapshots). Bound even by a
    /// single store, so members added later can reach it. Default: 127.0.0.1:2480.
    pub peer_addr: SocketAddr,
    /// This store's id. Default: 1.
    pub store_id: u64,
    /// The initial members `(store id, peer address)`. Default: just this store.
    pub initial_cluster: Vec<(u64, String)>,
    /// The cluster this store must belong to. `None`: on first start derive it from the
    /// initial membership, afterwards use the id stored in the data directory (as etcd
    /// ignores `--initial-cluster` on restart). `Some(id)`: refuse a data directory of any
    /// other cluster. Default: `None`.
    pub cluster_id: Option<u64>,
    /// Join a running cluster as a new member (added with `pontoonctl member add`) instead of
    /// bootstrapping one; needs `cluster_id`. Default: false.
    pub join: bool,
    /// Raft and log-compaction settings; the store id, cluster id, membership and `join`
    /// fields are filled in from this config. Default: [`NodeConfig::default`].
    pub node: NodeConfig,
    /// Connection limits. Default: [`Limits::default`].
    pub limits: Limits,
    /// How long a graceful shutdown waits for in-flight requests. Default: 5 s.
    pub drain_timeout: Duration,
    /// Engine options. Default: [`EngineOptions::default`].
    pub engine: EngineOptions,
    /// Raft-log options. Default: [`pontoon_raftlog::Config::default`].
    pub raftlog: pontoon_raftlog::Config,
    /// Peer transport and peer service settings. Default: [`PeerNetConfig::default`].
    pub peer_net: PeerNetConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./data"),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 2479)),
            peer_addr: SocketAddr::from(([127, 0, 0, 1], 2480)),
            store_id: 1,
            initial_cluster: Vec::new(),
            cluster_id: None,
            join: false,
            node: NodeConfig::default(),
            limits: Limits::default(),
            drain_timeout: Duration::from_secs(5),
            engine: EngineOptions::default(),
            raftlog: pontoon_raftlog::Config::default(),
            peer_net: PeerNetConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The members, defaulting to this store alone.
    pub fn members(&self) -> Vec<(u64, String)> {
        if self.initial_cluster.is_empty() {
            vec![(self.store_id, self.peer_addr.to_string())]
        } else {
            let mut m = self.initial_cluster.clone();
            m.sort();
            m
        }
    }

    /// The cluster id a new cluster gets: a hash of the initial membership, so every member
    /// of one cluster derives the same id and a member of another cluster a different one
    /// (as etcd does).
    pub fn derived_cluster_id(&self) -> u64 {
        // FNV-1a, 64-bit: stable across versions and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (id, addr) in self.members() {
            for b in format!("{id}={addr},").bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h.max(1)
    }
}

/// Errors starting or stopping a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed.
    #[error("engine: {0}")]
    Engine(#[from] pontoon_engine::Error),
    /// The raft-log store failed.
    #[error("raft log: {0}")]
    Log(#[from] pontoon_raftlog::Error),
    /// The store loop could not start.
    #[error("node: {0}")]
    Node(#[from] crate::node::Error),
    /// The data directory belongs to another store or cluster.
    #[error("data directory {dir} belongs to store {found_store} of cluster {found_cluster}, but this is store {store} of cluster {cluster}; use the right --data-dir or an empty one")]
    WrongStore {
        /// The directory.
        dir: String,
        /// Store id found on disk.
        found_store: u64,
        /// Cluster id found on disk.
        found_cluster: u64,
        /// Store id configured.
        store: u64,
        /// Cluster id configured.
        cluster: u64,
    },
    /// The stored identity does not decode.
    #[error("data directory {0}: the stored store identity is corrupt")]
    CorruptIdent(String),
    /// The configuration asks for something this build cannot do yet.
    #[error("{0}")]
    Unsupported(String),
    /// Binding or starting the network failed.
    #[error("{what}: {source}")]
    Net {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running node.
pub struct Server {
    node: Arc<Node>,
    engine: Arc<Engine>,
    shutdown: watch::Sender<bool>,
    net: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    transport: Arc<TcpTransport>,
}

impl Server {
    /// Opens the data directory, checks (or, on first start, writes) the store identity,
    /// binds the client and peer listeners, starts the store loop, the client service, the
    /// peer service and the TCP peer transport.
    pub fn start(cfg: ServerConfig) -> Result<Server, Error> {
        let engine = Arc::new(Engine::open(
            cfg.data_dir.join("engine"),
            cfg.engine.clone(),
        )?);
        let cluster_id = check_ident(&engine, &cfg)?;
        let log = Arc::new(LogStore::open(
            cfg.data_dir.join("raftlog"),
            cfg.raftlog.clone(),
        )?);
        // Both listeners before the store loop: a busy port fails the start before raft
        // runs.
        let (listener, local_addr) = bind(cfg.client_addr, "clients")?;
        let (peer_listener, peer_addr) = bind(cfg.peer_addr, "peers")?;
        let others: HashMap<u64, String> = cfg
            .members()
            .into_iter()
            .filter(|(id, _)| *id != cfg.store_id)
            .collect();
        // Even a single store runs the TCP transport: a membership change may add stores
        // later, and their addresses reach the transport through `set_address`.
        let (transport, driver) =
            TcpTransport::with_config(cfg.store_id, cluster_id, cfg.limits, others, cfg.peer_net);
        let transport = Arc::new(transport);
        let node = Arc::new(Node::start(
            NodeConfig {
                cluster_id,
                store_id: cfg.store_id,
                initial_voters: cfg.members().iter().map(|(id, _)| *id).collect(),
                initial_addresses: cfg
                    .members()
                    .into_iter()
                    .map(|(id, addr)| {
                        // With port 0 in the config, only the bound address is reachable.
                        if id == cfg.store_id && cfg.peer_addr.port() == 0 {
                            (id, peer_addr.to_string())
                        } else {
                            (id, addr)
                        }
                    })
                    .collect(),
                join: cfg.join,
                client_address: local_addr.to_string(),
                peer_address: peer_addr.to_string(),
                ..cfg.node.clone()
            },
            engine.clone(),
            log,
            transport.clone(),
        )?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let net_node = node.clone();
        let sink: Arc<dyn RaftSink> = node.clone();
        let limits = cfg.limits;
        let drain = cfg.drain_timeout;
        let max_snapshot = cfg.peer_net.max_snapshot_bytes;
        let net = std::thread::Builder::new()
            .name("pontoon-net".into())
            .spawn(move || {
                let rt = match tokio_uring::Runtime::new(&tokio_uring::builder()) {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(()));
                rt.block_on(async move {
                    // Peers stop only after the clients' in-flight requests are drained:
                    // committing those writes may need the other stores.
                    let (peer_stop, peer_stop_rx) = watch::channel(false);
                    let peer_listener = tokio_uring::net::TcpListener::from_std(peer_listener);
                    let peers = tokio_uring::spawn(crate::service::serve_peers(
                        peer_listener,
                        sink,
                        limits,
                        max_snapshot,
                        peer_stop_rx.clone(),
                    ));
                    let driver = tokio_uring::spawn(driver.run(peer_stop_rx));
                    let listener = tokio_uring::net::TcpListener::from_std(listener);
                    crate::service::serve(listener, net_node, limits, shutdown_rx, drain).await;
                    let _ = peer_stop.send(true);
                    let _ = peers.await;
                    let _ = driver.await;
                });
            })
            .map_err(|source| Error::Net {
                what: "cannot start the network thread".into(),
                source,
            })?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(Error::Net {
                    what: "cannot start the io_uring runtime (io_uring unavailable?)".into(),
                    source,
                })
            }
            Err(_) => {
                return Err(Error::Net {
                    what: "the network thread died".into(),
                    source: std::io::Error::other("no start report"),
                })
            }
        }
        log::info!(
            "store {} of cluster {cluster_id} serving clients on {local_addr}, peers on {peer_addr}",
            cfg.store_id
        );
        Ok(Server {
            node,
            engine,
            shutdown,
            net: Some(net),
            local_addr,
            peer_addr,
            transport,
        })
    }

    /// The address clients connect to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address other stores connect to (useful with port 0).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The TCP peer transport (queue statistics; the store loop hands it the addresses of
    /// stores that membership changes add).
    pub fn transport(&self) -> &Arc<TcpTransport> {
        &self.transport
    }

    /// The store loop.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Why the store loop stopped on its own, if it did (a failed disk write): the node
    /// serves nothing any more and should be shut down.
    pub fn failure(&self) -> Option<String> {
        self.node.status().failure.lock().clone()
    }

    /// Graceful shutdown: stop accepting clients, answer what is in flight, stop the peer
    /// listener and every peer connection, stop the store loop, flush the engine.
    pub fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.net.take() {
            let _ = t.join();
        }
        self.node.stop();
        self.engine.flush()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.net.take() {
            let _ = t.join();
        }
        self.node.stop();
    }
}

/// How long a listener address that is still in use is retried. A process killed with
/// `kill -9` can keep its listening sockets for a moment after it is gone (io_uring
/// tears its rings down asynchronously, and an accept in flight holds the socket), so an
/// immediate restart would otherwise fail.
const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds a listener for `who` on `addr`; returns it with the address it got.
fn bind(addr: SocketAddr, who: &str) -> Result<(std::net::TcpListener, SocketAddr), Error> {
    let deadline = std::time::Instant::now() + BIND_RETRY;
    let mut warned = false;
    let listener = loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => break l,
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !warned {
                    log::warn!("{addr} ({who}) is still in use; retrying for up to {BIND_RETRY:?}");
                    warned = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(source) => {
                return Err(Error::Net {
                    what: format!("cannot listen for {who} on {addr}"),
                    source,
                })
            }
        }
    };
    let local = listener.local_addr().map_err(|source| Error::Net {
        what: format!("local address of the {who} listener"),
        source,
    })?;
    Ok((listener, local))
}

/// Checks the data directory's store identity (writing it on first start) and returns the
/// cluster id.
fn check_ident(engine: &Engine, cfg: &ServerConfig) -> Result<u64, Error> {
    let dir = cfg.data_dir.display().to_string();
    match engine.get("raft", STORE_IDENT_KEY)? {
        Some(bytes) => {
            let ident =
                StoreIdent::decode(&bytes[..]).map_err(|_| Error::CorruptIdent(dir.clone()))?;
            let cluster = cfg.cluster_id.unwrap_or(ident.cluster_id);
            if ident.cluster_id != cluster || ident.store_id != cfg.store_id {
                return Err(Error::WrongStore {
                    dir,
                    found_store: ident.store_id,
                    found_cluster: ident.cluster_id,
                    store: cfg.store_id,
                    cluster,
                });
            }
            Ok(cluster)
        }
        None => {
            let cluster_id = cfg.cluster_id.unwrap_or_else(|| cfg.derived_cluster_id());
            let ident = StoreIdent {
                cluster_id,
                store_id: cfg.store_id,
            };
            engine.put("raft", STORE_IDENT_KEY, &ident.encode_to_vec())?;
            // Durable before anything else happens in this directory.
            engine.flush()?;
            Ok(cluster_id)
        }
    }
}
