//! Real `pontoon` processes for tests: free loopback ports and children that are killed
//! (SIGKILL) and reaped when dropped, so a failing test leaves nothing behind.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::process::Child;

/// A loopback address with a port free right now.
pub fn free_addr() -> SocketAddr {
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
