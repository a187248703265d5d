//! Real `pontoon` processes for tests: free loopback ports and children that are killed
//! (SIGKILL) and reaped when dropped, so a failing test leaves nothing behind.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::process::Child;

/// A loopback address with a port free right now, taken below the kernel's ephemeral port
/// range when it can be. A port picked here is often bound only later (a store started
/// after the cluster is up), and a port of the ephemeral range may meanwhile become the
/// local port of some outgoing connection (the tests open many), after which the bind
/// fails. Below that range only another bind can take it, and no port is handed out twice
/// by one test process.
pub fn free_addr() -> SocketAddr {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let start = (low / 2).max(1024);
    let span = u64::from(low.saturating_sub(start));
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    if span >= 1024 {
        // A different sequence per process and per call (splitmix64 of pid, time, count).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut x =
            nanos ^ (u64::from(std::process::id()) << 32) ^ CALLS.fetch_add(1, Ordering::Relaxed);
        for _ in 0..64 {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let port = start + (z % span) as u16;
            if handed.contains(&port) {
                continue;
            }
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                handed.insert(port);
                return l.local_addr().unwrap();
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Three in-process servers bootstrapped as one cluster on fresh loopback ports (client
/// ports picked by the system). Peer addresses must be known before the servers start, so
/// they are picked free and released; another test may take one in between, and then this
/// starts over on fresh ports. The data directories live as long as the returned handles.
pub fn three_servers() -> (Vec<tempfile::TempDir>, Vec<pontoon_server::server::Server>) {
    three_servers_with(|_| {})
}

/// [`three_servers`], each configuration passed through `adjust` first.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn three_servers_with(
    adjust: impl Fn(&mut pontoon_server::server::ServerConfig),
) -> (Vec<tempfile::TempDir>, Vec<pontoon_server::server::Server>) {
    use pontoon_server::server::{Server, ServerConfig};
    for attempt in 1.. {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let peers: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let members: Vec<(u64, String)> = peers
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, a.to_string()))
            .collect();
        let started: Result<Vec<Server>, _> = (0..3)
            .map(|i| {
                let mut cfg = ServerConfig {
                    data_dir: dirs[i].path().to_path_buf(),
                    client_addr: "127.0.0.1:0".parse().unwrap(),
                    peer_addr: peers[i],
                    store_id: i as u64 + 1,
                    initial_cluster: members.clone(),
                    ..ServerConfig::default()
                };
                adjust(&mut cfg);
                Server::start(cfg)
            })
            .collect();
        match started {
            Ok(servers) => return (dirs, servers),
            Err(e) if attempt < 5 => eprintln!("retrying on other ports: {e}"),
            Err(e) => panic!("cannot start three servers: {e}"),
        }
    }
    unreachable!()
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
