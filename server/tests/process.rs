//! Real `pontoon` processes on loopback: `kill -9` in the middle of a write load loses no
//! acknowledged write, SIGTERM shuts down cleanly with exit code 0, and a store whose disk
//! writes fail exits with an error.

#![allow(clippy::unwrap_used)]

#[path = "support/proc.rs"]
mod proc;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pontoon_client::proto::framepb::{Handshake, Role};
use pontoon_client::proto::raft_cmdpb::{self, CmdType, RaftCmdRequest, Request};
use pontoon_client::{FrameBody, FrameDecoder, Limits};
use proc::{free_addr, Proc};

fn spawn(dir: &Path, addr: SocketAddr) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--client-addr")
        .arg(addr.to_string())
        .arg("--peer-addr")
        .arg(free_addr().to_string())
        .env(
            "RUST_LOG",
            std::env::var("PONTOON_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .unwrap();
    Proc(child)
}

struct Conn {
    s: TcpStream,
    dec: FrameDecoder,
}

impl Conn {
    /// Connects and handshakes, retrying until the server is up (bounded).
    fn connect(addr: SocketAddr) -> Conn {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = TcpStream::connect(addr) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut c = Conn {
                    s,
                    dec: FrameDecoder::new(&Limits::default()),
                };
                let hs = FrameBody::Handshake(Handshake {
                    protocol_version: 1,
                    role: Role::Client as i32,
                    ..Default::default()
                });
                if c.send(&hs, 0) && matches!(c.recv(), Some((_, FrameBody::HandshakeAck(_)))) {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send(&mut self, body: &FrameBody, id: u64) -> bool {
        let mut buf = Vec::new();
        body.encode(id, 1 << 24, &mut buf).unwrap();
        self.s.write_all(&buf).is_ok()
    }

    fn recv(&mut self) -> Option<(u64, FrameBody)> {
        loop {
            match self.dec.next_frame() {
                Ok(Some(f)) => return FrameBody::decode(&f).ok().map(|b| (f.request_id, b)),
                Ok(None) => {}
                Err(_) => return None,
            }
            let mut buf = [0u8; 8192];
            match self.s.read(&mut buf) {
                // A read interrupted by a signal is not the end of the connection.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => return None,
                Ok(n) => self.dec.feed(&buf[..n]),
            }
        }
    }
}

fn put(i: u64) -> FrameBody {
    FrameBody::Request(RaftCmdRequest {
        requests: vec![Request {
            cmd_type: CmdType::Put as i32,
            put: Some(raft_cmdpb::PutRequest {
                key: format!("key{i:06}").into_bytes(),
                value: i.to_le_bytes().to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn get(i: u64) -> FrameBody {
    FrameBody::Request(RaftCmdRequest {
        requests: vec![Request {
            cmd_type: CmdType::Get as i32,
            get: Some(raft_cmdpb::GetRequest {
                key: format!("key{i:06}").into_bytes(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn ok(body: &FrameBody) -> bool {
    matches!(body, FrameBody::Response(r) if r.header.as_ref().is_none_or(|h| h.error.is_none()))
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut server = spawn(dir.path(), addr);
    let mut c = Conn::connect(addr);
    // Wait for leadership: the first put that succeeds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.send(&put(0), 1);
        if c.recv().is_some_and(|(_, b)| ok(&b)) {
            break;
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Pipelined writes, 32 in flight; kill -9 while they stream.
    let mut acked = vec![0u64];
    let mut next = 1u64;
    let mut in_flight = 0;
    while next < 600 {
        while in_flight < 32 {
            c.send(&put(next), next);
            next += 1;
            in_flight += 1;
        }
        let (id, body) = c.recv().unwrap();
        in_flight -= 1;
        if ok(&body) {
            acked.push(id);
        }
    }
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    // Answers that were on the wire when the process died count too.
    while let Some((id, body)) = c.recv() {
        if ok(&body) {
            acked.push(id);
        }
    }
    drop(c);
    assert!(acked.len() > 300);

    let _server = spawn(dir.path(), addr);
    let mut c = Conn::connect(addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    for &i in &acked {
        loop {
            c.send(&get(i), i + 1);
            let (_, body) = c.recv().unwrap();
            if let FrameBody::Response(r) = &body {
                if r.header.as_ref().is_none_or(|h| h.error.is_none()) {
                    let g = r.responses[0].get.as_ref().unwrap();
                    assert_eq!(
                        g.value,
                        i.to_le_bytes(),
                        "acknowledged key{i:06} lost after kill -9"
                    );
                    break;
                }
            }
            assert!(Instant::now() < deadline, "restarted server never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut server = spawn(dir.path(), addr);
    let mut c = Conn::connect(addr);
    assert!(c.send(&put(1), 1));
    let _ = c.recv();
    // SAFETY: sending a signal to our own child by its pid.
    let rc = unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pontoon did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_store_that_cannot_write_exits_with_an_error() {
    // A 1 MiB memtable flushes after a few thousand puts; with the engine's directory gone
    // the flush fails, and the process must exit (non-zero) instead of lingering as a
    // server that accepts connections and serves nothing.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pontoon.toml");
    std::fs::write(&config, "write_buffer_mib = 1\n").unwrap();
    let data = dir.path().join("data");
    let addr = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--client-addr")
        .arg(addr.to_string())
        .arg("--peer-addr")
        .arg(free_addr().to_string())
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "off")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Proc(child);
    let mut c = Conn::connect(addr);
    std::fs::remove_dir_all(data.join("engine")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0u64;
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "pontoon still runs after its flush failed"
        );
        // Puts of 4 KiB until the memtable is full; answers no longer matter.
        let mut req = put(i);
        if let FrameBody::Request(r) = &mut req {
            if let Some(p) = r.requests[0].put.as_mut() {
                p.value = vec![b'v'; 4096];
            }
        }
        if c.send(&req, i + 1) {
            let _ = c.recv();
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        i += 1;
    };
    assert!(!status.success(), "exit status {status}");
    let mut err = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("Error: the store failed"), "stderr: {err}");
}
