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

/// A child process killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
