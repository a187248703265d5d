//! A mock Pontoon store speaking the wire protocol (handshake, Request/Response, Ping/Pong)
//! over an in-memory map with etcd-style revisions. Used by `pontoon-bench mock-server`
//! and by `client/tests/client_mock.rs` (which includes this file with `#[path]`).
//!
//! Behaviours for tests: `not_leader` answers every command but serializable ranges with
//! `NotLeader`; `silent`
//! never answers commands; keys beginning with `sleep/<ms>/` are answered after `<ms>`
//! milliseconds, so that answers overtake each other (responses are matched by request id).
//!
//! Admin commands: `Status` is answered locally (even with `not_leader`), from a membership
//! that starts as this store alone; `ChangePeer` and `TransferLeader` go through the
//! `not_leader` check like writes, change that membership / leader, and are recorded in
//! [`MockServer::admin`] so that tests can check their encoding.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pontoon_client::frame::{encode_frame, encode_message};
use pontoon_client::proto::errorpb;
use pontoon_client::proto::framepb::HandshakeAck;
use pontoon_client::proto::metapb;
use pontoon_client::proto::pontoonpb::{
    KeyValue, Member, RangeResponse, ResponseHeader, StatusResponse,
};
use pontoon_client::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, AdminResponse, ChangePeerResponse, CmdType, ConfChangeType,
    DeleteRangeResponse, DeleteResponse, GetResponse, PutResponse, RaftCmdRequest, RaftCmdResponse,
    RaftResponseHeader, Request, Response, SnapResponse, TransferLeaderResponse,
};
use pontoon_client::{FrameBody, FrameDecoder, FrameType, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How a mock store behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Store id announced in the handshake and in response headers.
    pub store_id: u64,
    /// Cluster id announced.
    pub cluster_id: u64,
    /// `Some(leader)`: answer every command but serializable ranges with `NotLeader` (hint
    /// `leader`, 0 for none).
    pub not_leader: Option<u64>,
    /// Never answer commands (the handshake still succeeds).
    pub silent: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            store_id: 1,
            cluster_id: 7,
            not_leader: None,
            silent: false,
        }
    }
}

#[derive(Debug)]
struct Store {
    revision: i64,
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    members: Vec<Member>,
    conf_ver: u64,
    /// Leader after a TransferLeader (0: this store, or `not_leader`'s hint).
    leader: u64,
}

/// A running mock store.
#[derive(Debug)]
pub struct MockServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Commands received (answered or not).
    pub commands: Arc<AtomicU64>,
    /// Admin requests received, in order (answered or not).
    pub admin: Arc<Mutex<Vec<AdminRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockServer {
    /// Starts a mock store on `listen` (e.g. `127.0.0.1:0`).
    pub async fn start(listen: &str, cfg: MockConfig) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let commands = Arc::new(AtomicU64::new(0));
        let store = Arc::new(Mutex::new(Store {
            revision: 1,
            kvs: BTreeMap::new(),
            members: vec![Member {
                id: cfg.store_id,
                peer_addr: format!("127.0.0.1:{}", 2380 + cfg.store_id),
                is_learner: false,
            }],
            conf_ver: 1,
            leader: 0,
        }));
        let admin = Arc::new(Mutex::new(Vec::new()));
        let admin_log = Arc::clone(&admin);
        let counter = Arc::clone(&commands);
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                tokio::spawn(serve(
                    sock,
                    cfg.clone(),
                    Arc::clone(&store),
                    Arc::clone(&counter),
                    Arc::clone(&admin_log),
                ));
            }
        });
        Ok(MockServer {
            addr,
            commands,
            admin,
            task,
        })
    }
}

async fn serve(
    sock: tokio::net::TcpStream,
    cfg: MockConfig,
    store: Arc<Mutex<Store>>,
    commands: Arc<AtomicU64>,
    admin: Arc<Mutex<Vec<AdminRequest>>>,
) {
    let max = Limits::DEFAULT_MAX_FRAME_SIZE_BYTES;
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(mut buf) = rx.recv().await {
            while let Ok(more) = rx.try_recv() {
                buf.extend_from_slice(&more);
            }
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let mut decoder = FrameDecoder::with_max_frame_size(max);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut handshaken = false;
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.feed(&chunk[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return,
            };
            let Ok(body) = FrameBody::decode(&frame) else {
                return;
            };
            let mut out = Vec::new();
            match body {
                FrameBody::Handshake(_) if !handshaken => {
                    handshaken = true;
                    let ack = FrameBody::HandshakeAck(HandshakeAck {
                        protocol_version: 1,
                        cluster_id: cfg.cluster_id,
                        store_id: cfg.store_id,
                        max_frame_size_bytes: max,
                        max_in_flight_requests: Limits::DEFAULT_MAX_IN_FLIGHT_REQUESTS,
                        idle_timeout_ms: 60_000,
                    });
                    if ack.encode(0, max, &mut out).is_err() {
                        return;
                    }
                }
                FrameBody::Ping(p) => {
                    if encode_frame(FrameType::Pong, frame.request_id, &p, max, &mut out).is_err() {
                        return;
                    }
                }
                FrameBody::Request(req) if handshaken => {
                    commands.fetch_add(1, Ordering::Relaxed);
                    if let Some(a) = &req.admin_request {
                        admin
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(a.clone());
                    }
                    if cfg.silent {
                        continue;
                    }
                    let delay = sleep_of(&req);
                    let resp = execute(&cfg, &store, &req);
                    let id = frame.request_id;
                    let tx = tx.clone();
                    let send = move || {
                        let mut out = Vec::new();
                        if encode_message(FrameType::Response, id, &resp, max, &mut out).is_ok() {
                            let _ = tx.send(out);
                        }
                    };
                    match delay {
                        Some(d) => {
                            tokio::spawn(async move {
                                tokio::time::sleep(d).await;
                                send();
                            });
                        }
                        None => send(),
                    }
                    continue;
                }
                _ => return,
            }
            if tx.send(out).is_err() {
                return;
            }
        }
    }
}

/// `sleep/<ms>/...` keys delay the answer.
fn sleep_of(req: &RaftCmdRequest) -> Option<Duration> {
    let r = req.requests.first()?;
    let key = match CmdType::try_from(r.cmd_type).ok()? {
        CmdType::Put => &r.put.as_ref()?.key,
        CmdType::Range => &r.range.as_ref()?.key,
        CmdType::Get => &r.get.as_ref()?.key,
        _ => return None,
    };
    let rest = key.strip_prefix(b"sleep/")?;
    let end = rest.iter().position(|&b| b == b'/')?;
    let ms: u64 = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

fn execute(cfg: &MockConfig, store: &Mutex<Store>, req: &RaftCmdRequest) -> RaftCmdResponse {
    let mut resp = RaftCmdResponse::default();
    // Like a real follower, serve serializable ranges and Status locally.
    let status = req
        .admin_request
        .as_ref()
        .is_some_and(|a| a.cmd_type == AdminCmdType::Status as i32);
    let serializable = status
        || (!req.requests.is_empty()
            && req.requests.iter().all(|r| {
                r.cmd_type == CmdType::Range as i32
                    && r.range.as_ref().is_some_and(|g| g.serializable)
            }));
    if let Some(leader) = cfg.not_leader.filter(|_| !serializable) {
        resp.header = Some(RaftResponseHeader {
            error: Some(errorpb::Error {
                message: "not leader".into(),
                not_leader: Some(errorpb::NotLeader {
                    region_id: 1,
                    leader: (leader != 0).then_some(metapb::Peer {
                        id: leader,
                        store_id: leader,
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        return resp;
    }
    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(a) = &req.admin_request {
        match execute_admin(cfg, &mut s, a) {
            Ok(admin) => resp.admin_response = Some(admin),
            Err(message) => {
                resp.header = Some(RaftResponseHeader {
                    error: Some(errorpb::Error {
                        message,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                return resp;
            }
        }
    }
    let mut wrote = false;
    for r in &req.requests {
        let mut out = Response {
            cmd_type: r.cmd_type,
            ..Default::default()
        };
        match (CmdType::try_from(r.cmd_type), r) {
            (Ok(CmdType::Put), Request { put: Some(p), .. }) => {
                if !wrote {
                    s.revision += 1;
                    wrote = true;
                }
                let rev = s.revision;
                let prev = s.kvs.get(&p.key).cloned();
                let kv = KeyValue {
                    key: p.key.clone(),
                    create_revision: prev.as_ref().map_or(rev, |k| k.create_revision),
                    mod_revision: rev,
                    version: prev.as_ref().map_or(1, |k| k.version + 1),
                    value: p.value.clone(),
                    lease: 0,
                };
                s.kvs.insert(p.key.clone(), kv);
                out.put = Some(PutResponse {
                    prev_kv: if p.prev_kv { prev } else { None },
                });
            }
            (Ok(CmdType::Get), Request { get: Some(g), .. }) => {
                let kv = s.kvs.get(&g.key).cloned();
                out.get = Some(GetResponse {
                    value: kv.as_ref().map(|k| k.value.clone()).unwrap_or_default(),
                    kv: kv.map(|mut k| {
                        k.value.clear();
                        k
                    }),
                });
            }
            (Ok(CmdType::Range), Request { range: Some(g), .. }) => {
                let matching: Vec<&KeyValue> = s
                    .kvs
                    .values()
                    .filter(|kv| in_range(&kv.key, &g.key, &g.range_end))
                    .collect();
                let count = matching.len() as i64;
                let limit = if g.limit > 0 {
                    g.limit as usize
                } else {
                    usize::MAX
                };
                let kvs: Vec<KeyValue> = if g.count_only {
                    Vec::new()
                } else {
                    matching
                        .iter()
                        .take(limit)
                        .map(|kv| {
                            let mut kv = (*kv).clone();
                            if g.keys_only {
                                kv.value.clear();
                            }
                            kv
                        })
                        .collect()
                };
                out.range = Some(RangeResponse {
                    more: !g.count_only && matching.len() > limit,
                    kvs,
                    count,
                });
            }
            (
                Ok(CmdType::Delete),
                Request {
                    delete: Some(d), ..
                },
            ) => {
                let prev = s.kvs.remove(&d.key);
                if prev.is_some() && !wrote {
                    s.revision += 1;
                    wrote = true;
                }
                out.delete = Some(DeleteResponse {
                    deleted: i64::from(prev.is_some()),
                    prev_kv: if d.prev_kv { prev } else { None },
                });
            }
            (
                Ok(CmdType::DeleteRange),
                Request {
                    delete_range: Some(d),
                    ..
                },
            ) => {
                let keys: Vec<Vec<u8>> = s
                    .kvs
                    .keys()
                    .filter(|k| in_range(k, &d.start_key, &d.end_key))
                    .cloned()
                    .collect();
                if !keys.is_empty() && !wrote {
                    s.revision += 1;
                    wrote = true;
                }
                let prev: Vec<KeyValue> = keys.iter().filter_map(|k| s.kvs.remove(k)).collect();
                out.delete_range = Some(DeleteRangeResponse {
                    deleted: prev.len() as i64,
                    prev_kvs: if d.prev_kv { prev } else { Vec::new() },
                });
            }
            (Ok(CmdType::Snap), _) => {
                out.snap = Some(SnapResponse {
                    region: Some(metapb::Region {
                        id: 1,
                        ..Default::default()
                    }),
                });
            }
            _ => {
                return RaftCmdResponse {
                    header: Some(RaftResponseHeader {
                        error: Some(errorpb::Error {
                            message: "invalid command".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
            }
        }
        resp.responses.push(out);
    }
    resp.header = Some(RaftResponseHeader {
        current_term: 2,
        ..Default::default()
    });
    resp.response_header = Some(ResponseHeader {
        cluster_id: cfg.cluster_id,
        member_id: cfg.store_id,
        revision: s.revision,
        raft_term: 2,
    });
    resp
}

fn execute_admin(
    cfg: &MockConfig,
    s: &mut Store,
    a: &AdminRequest,
) -> Result<AdminResponse, String> {
    let mut out = AdminResponse {
        cmd_type: a.cmd_type,
        ..Default::default()
    };
    let leader = match (s.leader, cfg.not_leader) {
        (0, Some(hint)) => hint,
        (0, None) => cfg.store_id,
        (l, _) => l,
    };
    match AdminCmdType::try_from(a.cmd_type) {
        Ok(AdminCmdType::Status) => {
            out.status = Some(StatusResponse {
                member_id: cfg.store_id,
                leader,
                raft_term: 2,
                raft_index: 10 + s.revision as u64,
                raft_applied_index: 9 + s.revision as u64,
                raft_committed_index: 10 + s.revision as u64,
                db_size: 20480,
                is_learner: s
                    .members
                    .iter()
                    .any(|m| m.id == cfg.store_id && m.is_learner),
                members: s.members.clone(),
                first_log_index: 5,
                conf_ver: s.conf_ver,
                regions: Vec::new(),
                hibernating_regions: 0,
            });
        }
        Ok(AdminCmdType::ChangePeer) => {
            let c = a
                .change_peer
                .as_ref()
                .ok_or("ChangePeer without change_peer")?;
            let id = c.peer.as_ref().map(|p| p.store_id).unwrap_or(0);
            let known = s.members.iter().any(|m| m.id == id);
            match ConfChangeType::try_from(c.change_type) {
                Ok(ConfChangeType::AddNode | ConfChangeType::AddLearnerNode) => {
                    if known {
                        return Err(format!("peer {id} is already a member"));
                    }
                    s.members.push(Member {
                        id,
                        peer_addr: c.peer_addr.clone(),
                        is_learner: c.change_type == ConfChangeType::AddLearnerNode as i32,
                    });
                }
                Ok(ConfChangeType::RemoveNode) => {
                    if id == leader {
                        return Err(format!(
                            "cannot remove the leader {id}: move the leader first"
                        ));
                    }
                    if !known {
                        return Err(format!("peer {id} is not a member"));
                    }
                    s.members.retain(|m| m.id != id);
                }
                Err(_) => return Err("bad change type".into()),
            }
            s.conf_ver += 1;
            out.change_peer = Some(ChangePeerResponse {
                region: Some(metapb::Region {
                    id: 1,
                    region_epoch: Some(metapb::RegionEpoch {
                        conf_ver: s.conf_ver,
                        version: 1,
                    }),
                    peers: s
                        .members
                        .iter()
                        .map(|m| metapb::Peer {
                            id: m.id,
                            store_id: m.id,
                            role: if m.is_learner {
                                metapb::PeerRole::Learner as i32
                            } else {
                                metapb::PeerRole::Voter as i32
                            },
                        })
                        .collect(),
                    ..Default::default()
                }),
            });
        }
        Ok(AdminCmdType::TransferLeader) => {
            let t = a
                .transfer_leader
                .as_ref()
                .and_then(|t| t.peer.as_ref())
                .map(|p| p.store_id)
                .unwrap_or(0);
            if !s.members.iter().any(|m| m.id == t && !m.is_learner) {
                return Err(format!("peer {t} is not a voter"));
            }
            s.leader = t;
            out.transfer_leader = Some(TransferLeaderResponse {});
        }
        _ => return Err("unsupported admin command".into()),
    }
    Ok(out)
}
