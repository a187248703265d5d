//! Arbitrary bytes as a client's stream into the request path of a running node: frames are
//! decoded as the server's connection handler decodes them, every Request goes through the
//! store loop (validation, raft, apply), and the node must answer each one without
//! panicking. After every input a sentinel key written at start-up must still read back
//! unchanged: bad input never corrupts state.
//!
//! The node runs on in-memory file systems (engine `FaultFs`, raft log `MemFs`) so that
//! inputs run fast; it is shared by all inputs, as a long-lived server is.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pontoon_client::proto::raft_cmdpb::{self, CmdType, RaftCmdRequest, Request};
use pontoon_client::{FrameBody, FrameDecoder, Limits};
use pontoon_server::node::{Node, NodeConfig};

const SENTINEL: &[u8] = b"\xffsentinel";

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let engine = pontoon_engine::Engine::open_with_fs(
            "/engine",
            pontoon_engine::Options::default(),
            Arc::new(pontoon_engine::io::FaultFs::new()),
        )
        .expect("engine");
        let log = pontoon_raftlog::LogStore::open_with_fs(
            "/raftlog",
            pontoon_raftlog::Config::default(),
            Arc::new(pontoon_raftlog::fault::MemFs::new()),
        )
        .expect("raft log");
        let node = Node::start(NodeConfig::default(), Arc::new(engine), Arc::new(log), Arc::new(pontoon_server::transport::NoTransport)).expect("node");
        // Wait for leadership, then write the sentinel.
        for _ in 0..1000 {
            let put = Request {
                cmd_type: CmdType::Put as i32,
                put: Some(raft_cmdpb::PutRequest { key: SENTINEL.to_vec(), value: b"ok".to_vec(), ..Default::default() }),
                ..Default::default()
            };
            let resp = call(&node, RaftCmdRequest { requests: vec![put], ..Default::default() });
            if resp.header.as_ref().is_none_or(|h| h.error.is_none()) {
                return node;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("no leader");
    })
}

fn call(node: &Node, req: RaftCmdRequest) -> raft_cmdpb::RaftCmdResponse {
    let (tx, rx) = tokio::sync::oneshot::channel();
    assert!(node.submit(req, tx), "node stopped");
    rx.blocking_recv().expect("every command is answered")
}

/// Whether a write may legitimately change the sentinel (such writes are dropped).
fn touches_sentinel(r: &Request) -> bool {
    let hits = |key: &[u8], end: &[u8]| match end {
        [] => key == SENTINEL,
        [0] => key <= SENTINEL,
        end => key <= SENTINEL && SENTINEL < end,
    };
    r.put.as_ref().is_some_and(|p| p.key == SENTINEL)
        || r.delete.as_ref().is_some_and(|d| d.key == SENTINEL)
        || r.delete_range.as_ref().is_some_and(|d| hits(&d.start_key, &d.end_key))
}

fuzz_target!(|data: &[u8]| {
    let node = node();
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let mut requests = Vec::new();
    if mode & 1 == 0 {
        // A byte stream as a connection carries it (frames with checksums).
        let mut decoder = FrameDecoder::new(&Limits::default());
        decoder.feed(data);
        while let Ok(Some(frame)) = decoder.next_frame() {
            if let Ok(FrameBody::Request(req)) = FrameBody::decode(&frame) {
                requests.push(req);
            }
        }
    } else {
        // Payloads straight to the protobuf decoder (u16 length prefixes), so the fuzzer
        // reaches the request handling without having to forge checksums.
        let mut rest = data;
        while rest.len() >= 2 {
            let n = (usize::from(rest[0]) | usize::from(rest[1]) << 8).min(rest.len() - 2);
            if let Ok(req) = <RaftCmdRequest as pontoon_client::prost::Message>::decode(&rest[2..2 + n]) {
                requests.push(req);
            }
            rest = &rest[2 + n..];
        }
    }
    for mut req in requests {
        {
            // Writes to the sentinel are the one thing a client may legitimately do to it.
            req.requests.retain(|r| !touches_sentinel(r));
            let _ = call(node, req);
        }
    }
    let get = Request {
        cmd_type: CmdType::Get as i32,
        get: Some(raft_cmdpb::GetRequest { key: SENTINEL.to_vec(), ..Default::default() }),
        ..Default::default()
    };
    let resp = call(node, RaftCmdRequest { requests: vec![get], ..Default::default() });
    let value = resp.responses.first().and_then(|r| r.get.as_ref()).map(|g| g.value.clone());
    assert_eq!(value.as_deref(), Some(&b"ok"[..]), "the sentinel changed: {resp:?}");
});
