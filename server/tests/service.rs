//! The client service over real TCP on loopback: handshake, pipelining, and every class of
//! bad input from the issue — each gets a clear error frame and a close, and the server
//! keeps serving everyone else with no data lost.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pontoon_client::proto::framepb::{FrameErrorCode, Handshake, Role};
use pontoon_client::proto::raft_cmdpb::{self, CmdType, RaftCmdRequest, Request};
use pontoon_client::{FrameBody, FrameDecoder, FrameType, Limits, HEADER_LEN};
use pontoon_server::server::{Server, ServerConfig};

fn start(dir: &std::path::Path, limits: Limits) -> Server {
    Server::start(ServerConfig {
        data_dir: dir.to_path_buf(),
        client_addr: "127.0.0.1:0".parse().unwrap(),
        peer_addr: "127.0.0.1:0".parse().unwrap(),
        limits,
        ..ServerConfig::default()
    })
    .unwrap()
}

struct Conn {
    s: TcpStream,
    dec: FrameDecoder,
}

impl Conn {
    fn raw(server: &Server) -> Conn {
        let s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            s,
            dec: FrameDecoder::new(&Limits::default()),
        }
    }

    fn open(server: &Server) -> Conn {
        let mut c = Conn::raw(server);
        c.send(
            &FrameBody::Handshake(Handshake {
                protocol_version: 1,
                cluster_id: 0,
                role: Role::Client as i32,
                client_name: "test".into(),
                ..Default::default()
            }),
            0,
        );
        match c.recv() {
            Some(FrameBody::HandshakeAck(a)) => assert!(a.cluster_id != 0),
            other => panic!("expected an ack, got {other:?}"),
        }
        c
    }

    fn send(&mut self, body: &FrameBody, id: u64) {
        let mut buf = Vec::new();
        body.encode(id, 1 << 24, &mut buf).unwrap();
        self.s.write_all(&buf).unwrap();
    }

    fn recv_frame(&mut self) -> Option<(u64, FrameBody)> {
        loop {
            if let Some(f) = self.dec.next_frame().unwrap() {
                return Some((f.request_id, FrameBody::decode(&f).unwrap()));
            }
            let mut buf = [0u8; 4096];
            match self.s.read(&mut buf) {
                // The servers of this process use io_uring, whose completions can interrupt
                // a blocking read of a thread that submitted work (the test thread opens
                // the stores): a signal, not an end of the connection.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => return None,
                Ok(n) => self.dec.feed(&buf[..n]),
            }
        }
    }

    fn recv(&mut self) -> Option<FrameBody> {
        self.recv_frame().map(|(_, b)| b)
    }

    /// Expects an error frame with `code`, then the close.
    fn expect_error(&mut self, code: FrameErrorCode) {
        match self.recv() {
            Some(FrameBody::Error(e)) => {
                assert_eq!(e.code, code as i32, "{e:?}");
                assert!(!e.message.is_empty());
            }
            other => panic!("expected error {code:?}, got {other:?}"),
        }
        assert!(
            self.recv().is_none(),
            "the connection must close after an error frame"
        );
    }
}

fn put(key: &[u8], value: &[u8]) -> RaftCmdRequest {
    RaftCmdRequest {
        requests: vec![Request {
            cmd_type: CmdType::Put as i32,
            put: Some(raft_cmdpb::PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn get(key: &[u8]) -> RaftCmdRequest {
    RaftCmdRequest {
        requests: vec![Request {
            cmd_type: CmdType::Get as i32,
            get: Some(raft_cmdpb::GetRequest {
                key: key.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn header_bytes(magic: &[u8; 4], ftype: u8, len: u32, crc: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(magic);
    h.push(1);
    h.push(ftype);
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&7u64.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn wait_ready(server: &Server) {
    let mut c = Conn::open(server);
    for _ in 0..300 {
        c.send(&FrameBody::Request(put(b"warmup", b"1")), 1);
        if let Some(FrameBody::Response(r)) = c.recv() {
            if r.header.as_ref().is_none_or(|h| h.error.is_none()) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("server never became ready");
}

#[test]
fn pipelined_requests_are_matched_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default());
    wait_ready(&server);
    let mut c = Conn::open(&server);
    for i in 1..=200u64 {
        c.send(
            &FrameBody::Request(put(format!("k{i}").as_bytes(), &i.to_le_bytes())),
            i,
        );
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let (id, body) = c.recv_frame().unwrap();
        let FrameBody::Response(r) = body else {
            panic!("{body:?}")
        };
        assert!(r.header.unwrap_or_default().error.is_none());
        assert!(r.response_header.unwrap().revision >= 2);
        assert!(seen.insert(id));
    }
    c.send(&FrameBody::Request(get(b"k77")), 999);
    let (id, body) = c.recv_frame().unwrap();
    assert_eq!(id, 999);
    let FrameBody::Response(r) = body else {
        panic!()
    };
    assert_eq!(
        r.responses[0].get.as_ref().unwrap().value,
        77u64.to_le_bytes()
    );
    // Ping is answered with the same payload.
    c.send(&FrameBody::Ping(b"hi".to_vec().into()), 5);
    assert!(matches!(c.recv_frame(), Some((5, FrameBody::Pong(p))) if &p[..] == b"hi"));
    server.shutdown().unwrap();
}

/// A store loop stopping under a connection with requests in flight: every request the
/// server read is answered exactly once (a response, or `ShuttingDown` for what the loop
/// never took), the answered ones are a prefix of what was sent, and the connection closes.
#[test]
fn a_stopping_store_answers_every_request_it_read_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default());
    wait_ready(&server);
    let mut c = Conn::open(&server);
    c.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let n = 2000u64;
    let mut seen = std::collections::HashMap::new();
    for i in 1..=n {
        // Sends may fail once the server closed the connection.
        let mut buf = Vec::new();
        FrameBody::Request(put(format!("s{i}").as_bytes(), b"v"))
            .encode(i, 1 << 24, &mut buf)
            .unwrap();
        if c.s.write_all(&buf).is_err() {
            break;
        }
        if i == 50 {
            // The first answer: the loop runs; stop it with the rest on their way.
            let (id, body) = c.recv_frame().unwrap();
            assert!(matches!(body, FrameBody::Response(_)), "{body:?}");
            seen.insert(id, "response");
            server.node().stop();
        }
    }
    let mut stopped = 0;
    while let Some((id, body)) = c.recv_frame() {
        let what = match body {
            FrameBody::Response(_) => "response",
            FrameBody::Error(e) if e.code == FrameErrorCode::ShuttingDown as i32 => {
                stopped += 1;
                "stopped"
            }
            other => panic!("unexpected frame for request {id}: {other:?}"),
        };
        assert!(
            seen.insert(id, what).is_none(),
            "request {id} was answered twice"
        );
    }
    let k = seen.len() as u64;
    assert!(
        (1..=k).all(|i| seen.contains_key(&i)),
        "the answered requests are not a prefix of those sent: {k} answers"
    );
    assert!(k < n, "the stopped store answered everything");
    eprintln!("{k} answered, {stopped} of them ShuttingDown");
    drop(server);
}

#[test]
fn bad_input_gets_an_error_frame_and_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        idle_timeout: Duration::from_millis(500),
        handshake_timeout: Duration::from_millis(500),
        max_in_flight_requests: 4,
        ..Limits::default()
    };
    let server = start(dir.path(), limits);
    wait_ready(&server);
    // A well-behaved client that stays connected through all of it.
    let mut good = Conn::open(&server);
    good.send(&FrameBody::Request(put(b"survivor", b"yes")), 1);
    assert!(matches!(good.recv(), Some(FrameBody::Response(_))));

    // Garbage bytes.
    let mut c = Conn::raw(&server);
    c.s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    c.expect_error(FrameErrorCode::BadMagic);
    // Wrong magic in an otherwise well-formed header.
    let mut c = Conn::raw(&server);
    c.s.write_all(&header_bytes(b"NOPE", 1, 0, 0)).unwrap();
    c.expect_error(FrameErrorCode::BadMagic);
    // A huge length: refused on the header, before any payload.
    let mut c = Conn::raw(&server);
    c.s.write_all(&header_bytes(b"PNTN", 1, u32::MAX, 0))
        .unwrap();
    c.expect_error(FrameErrorCode::FrameTooLarge);
    // A bad checksum.
    let mut c = Conn::raw(&server);
    let mut f = header_bytes(b"PNTN", 1, 3, 12345);
    f.extend_from_slice(b"abc");
    c.s.write_all(&f).unwrap();
    c.expect_error(FrameErrorCode::ChecksumMismatch);
    // An unknown frame type.
    let mut c = Conn::raw(&server);
    c.s.write_all(&header_bytes(b"PNTN", 77, 0, 0)).unwrap();
    c.expect_error(FrameErrorCode::UnknownFrameType);
    // An undecodable payload (valid frame, garbage protobuf).
    let mut c = Conn::open(&server);
    let payload = [0xffu8; 9];
    let mut f = header_bytes(
        b"PNTN",
        FrameType::Request as u8,
        9,
        crc32fast::hash(&payload),
    );
    f.extend_from_slice(&payload);
    c.s.write_all(&f).unwrap();
    c.expect_error(FrameErrorCode::UndecodablePayload);
    // A request before the handshake.
    let mut c = Conn::raw(&server);
    c.send(&FrameBody::Request(get(b"x")), 3);
    c.expect_error(FrameErrorCode::HandshakeRequired);
    // The wrong cluster.
    let mut c = Conn::raw(&server);
    c.send(
        &FrameBody::Handshake(Handshake {
            protocol_version: 1,
            cluster_id: 42,
            ..Default::default()
        }),
        0,
    );
    c.expect_error(FrameErrorCode::ClusterIdMismatch);
    // An empty key and an unknown column family are command errors: the connection stays.
    let mut c = Conn::open(&server);
    c.send(&FrameBody::Request(put(b"", b"v")), 10);
    let Some(FrameBody::Response(r)) = c.recv() else {
        panic!()
    };
    assert!(r
        .header
        .unwrap()
        .error
        .unwrap()
        .message
        .contains("key is not provided"));
    let mut bad_cf = put(b"k", b"v");
    bad_cf.requests[0].put.as_mut().unwrap().cf = "nope".into();
    c.send(&FrameBody::Request(bad_cf), 11);
    let Some(FrameBody::Response(r)) = c.recv() else {
        panic!()
    };
    assert!(r
        .header
        .unwrap()
        .error
        .unwrap()
        .message
        .contains("column family"));
    // A client sending a Response frame.
    c.send(&FrameBody::Response(Default::default()), 12);
    c.expect_error(FrameErrorCode::UnexpectedFrame);

    // The good client is unaffected and nothing was lost.
    good.send(&FrameBody::Request(get(b"survivor")), 2);
    let Some(FrameBody::Response(r)) = good.recv() else {
        panic!()
    };
    assert_eq!(r.responses[0].get.as_ref().unwrap().value, b"yes");
    // A client that connects and says nothing (half-open) is closed after the handshake
    // timeout; one that goes quiet after its handshake, after the idle timeout.
    let mut c = Conn::raw(&server);
    c.expect_error(FrameErrorCode::IdleTimeout);
    good.expect_error(FrameErrorCode::IdleTimeout);
    // And the store still serves new connections with nothing lost.
    let mut again = Conn::open(&server);
    again.send(&FrameBody::Request(get(b"survivor")), 3);
    let Some(FrameBody::Response(r)) = again.recv() else {
        panic!()
    };
    assert_eq!(r.responses[0].get.as_ref().unwrap().value, b"yes");
    server.shutdown().unwrap();
}

#[test]
fn the_idle_timeout_closes_quiet_and_trickling_connections_but_not_busy_ones() {
    // The idle timer is pushed back lazily (it moves itself when it fires): a connection
    // that keeps sending must never be cut, however many timeouts its life spans.
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start(dir.path(), limits);
    wait_ready(&server);
    let mut busy = Conn::open(&server);
    let mut quiet = Conn::open(&server);
    let started = Instant::now();
    let mut id = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        id += 1;
        busy.send(&FrameBody::Request(put(b"k", b"v")), id);
        assert!(
            matches!(busy.recv(), Some(FrameBody::Response(_))),
            "request {id} of a busy connection was not answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(id >= 10, "only {id} requests in 1.5 s");
    // The quiet one was closed long ago; the busy one is, once it stops.
    quiet.expect_error(FrameErrorCode::IdleTimeout);
    let stopped = Instant::now();
    busy.expect_error(FrameErrorCode::IdleTimeout);
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "closed {waited:?} after its last request: before its idle timeout"
    );
    // Bytes that never make a frame do not keep a connection open (`docs/PROTOCOL.md`: no
    // complete frame for the idle timeout): one byte every 100 ms, for 3 s, of a frame that
    // needs more. It is closed long before the trickle ends.
    let mut slow = Conn::open(&server);
    let mut trickle = slow.s.try_clone().unwrap();
    let mut frame = header_bytes(b"PNTN", FrameType::Request as u8, 200, 0);
    frame.resize(HEADER_LEN + 200, 0);
    let trickler = std::thread::spawn(move || {
        for b in frame.iter().take(30) {
            if trickle.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let started = Instant::now();
    slow.expect_error(FrameErrorCode::IdleTimeout);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(2500),
        "a connection trickling bytes stayed open {waited:?}"
    );
    trickler.join().unwrap();
    server.shutdown().unwrap();
}

#[test]
fn restart_serves_the_same_data_and_refuses_a_foreign_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default());
    wait_ready(&server);
    let mut c = Conn::open(&server);
    c.send(&FrameBody::Request(put(b"durable", b"1")), 1);
    let Some(FrameBody::Response(r)) = c.recv() else {
        panic!()
    };
    let rev = r.response_header.unwrap().revision;
    drop(c);
    server.shutdown().unwrap();

    let server = start(dir.path(), Limits::default());
    wait_ready(&server);
    let mut c = Conn::open(&server);
    c.send(&FrameBody::Request(get(b"durable")), 1);
    let Some(FrameBody::Response(r)) = c.recv() else {
        panic!()
    };
    assert_eq!(r.responses[0].get.as_ref().unwrap().value, b"1");
    let kv = r.responses[0].get.as_ref().unwrap().kv.clone().unwrap();
    assert_eq!(kv.mod_revision, rev);
    drop(c);
    server.shutdown().unwrap();

    // The same directory started as another store, or for another cluster, is refused with
    // a clear message.
    let err = Server::start(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        client_addr: "127.0.0.1:0".parse().unwrap(),
        store_id: 9,
        ..ServerConfig::default()
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("belongs to store 1"), "{err}");
    let err = Server::start(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        client_addr: "127.0.0.1:0".parse().unwrap(),
        cluster_id: Some(4242),
        ..ServerConfig::default()
    })
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("this is store 1 of cluster 4242"),
        "{err}"
    );
}
