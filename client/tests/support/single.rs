//! A single-region store from before multi-raft: its `Status` lists no region, it ignores
//! the region fields of request headers, and it holds one membership of its own.
//!
//! Behaviours: `not_leader` answers every command but `Status` and serializable ranges
//! with `NotLeader` (hint `Some(leader)`, 0 for none); `silent` never answers commands;
//! keys beginning with `sleep/<ms>/` are answered after `<ms>` milliseconds, so answers
//! overtake each other. `ChangePeer` and `TransferLeader` change the membership / the
//! leader it reports (they pass the `not_leader` check like writes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pontoon_client::proto::errorpb;
use pontoon_client::proto::metapb;
use pontoon_client::proto::pontoonpb::{Member, ResponseHeader, StatusResponse};
use pontoon_client::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, AdminResponse, ChangePeerResponse, CmdType, ConfChangeType,
    RaftCmdRequest, RaftCmdResponse, RaftResponseHeader, TransferLeaderResponse,
};
use tokio::task::JoinHandle;

use super::{error_response, message_error, serve, Handler, Kv};

/// How the store behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Store id announced in the handshake and in answers.
    pub store_id: u64,
    /// Cluster id announced.
    pub cluster_id: u64,
    /// `Some(leader)`: answer with `NotLeader` (hint `leader`, 0 for none).
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

/// A running single-region store.
#[derive(Debug)]
pub struct MockServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Commands received (answered or not), `Status` included.
    pub commands: Arc<AtomicU64>,
    /// Admin requests received, in order, `Status` included.
    pub admin: Arc<Mutex<Vec<AdminRequest>>>,
    /// Every command received, in order.
    pub requests: Arc<Mutex<Vec<RaftCmdRequest>>>,
    task: JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockServer {
    /// Starts a store on `listen` (e.g. `127.0.0.1:0`).
    pub async fn start(listen: &str, cfg: MockConfig) -> std::io::Result<MockServer> {
        let store = Arc::new(SingleStore {
            cfg: cfg.clone(),
            commands: Arc::new(AtomicU64::new(0)),
            admin: Arc::new(Mutex::new(Vec::new())),
            requests: Arc::new(Mutex::new(Vec::new())),
            state: Mutex::new(State {
                kv: Kv::default(),
                members: vec![Member {
                    id: cfg.store_id,
                    peer_addr: format!("127.0.0.1:{}", 2380 + cfg.store_id),
                    is_learner: false,
                }],
                conf_ver: 1,
                leader: 0,
            }),
        });
        let (commands, admin, requests) = (
            Arc::clone(&store.commands),
            Arc::clone(&store.admin),
            Arc::clone(&store.requests),
        );
        let (addr, task) = serve(listen, cfg.cluster_id, cfg.store_id, store).await?;
        Ok(MockServer {
            addr,
            commands,
            admin,
            requests,
            task,
        })
    }

    /// How many `Status` commands it received.
    pub fn status_calls(&self) -> usize {
        self.admin
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.cmd_type == AdminCmdType::Status as i32)
            .count()
    }
}

struct State {
    kv: Kv,
    members: Vec<Member>,
    conf_ver: u64,
    /// Leader after a TransferLeader (0: this store, or `not_leader`'s hint).
    leader: u64,
}

struct SingleStore {
    cfg: MockConfig,
    commands: Arc<AtomicU64>,
    admin: Arc<Mutex<Vec<AdminRequest>>>,
    requests: Arc<Mutex<Vec<RaftCmdRequest>>>,
    state: Mutex<State>,
}

/// `sleep/<ms>/...` keys delay the answer.
fn delay_of(req: &RaftCmdRequest) -> Option<Duration> {
    let r = req.requests.first()?;
    let key = match CmdType::try_from(r.cmd_type).ok()? {
        CmdType::Put => &r.put.as_ref()?.key,
        CmdType::Range => &r.range.as_ref()?.key,
        _ => return None,
    };
    let rest = key.strip_prefix(b"sleep/")?;
    let digits = &rest[..rest.iter().position(|&b| b == b'/')?];
    let ms = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

impl Handler for SingleStore {
    fn handle(&self, req: &RaftCmdRequest) -> Option<(RaftCmdResponse, Option<Duration>)> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        self.requests.lock().unwrap().push(req.clone());
        if let Some(a) = &req.admin_request {
            self.admin.lock().unwrap().push(a.clone());
        }
        if self.cfg.silent {
            return None;
        }
        Some((self.answer(req), delay_of(req)))
    }
}

impl SingleStore {
    fn answer(&self, req: &RaftCmdRequest) -> RaftCmdResponse {
        let is_status = req
            .admin_request
            .as_ref()
            .is_some_and(|a| a.cmd_type == AdminCmdType::Status as i32);
        let serializable = !req.requests.is_empty()
            && req
                .requests
                .iter()
                .all(|r| r.range.as_ref().is_some_and(|g| g.serializable));
        if let Some(hint) = self.cfg.not_leader.filter(|_| !is_status && !serializable) {
            return error_response(errorpb::Error {
                message: "not leader".into(),
                not_leader: Some(errorpb::NotLeader {
                    region_id: 1,
                    leader: (hint != 0).then_some(metapb::Peer {
                        id: hint,
                        store_id: hint,
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            });
        }
        let mut st = self.state.lock().unwrap();
        let mut resp = RaftCmdResponse::default();
        if let Some(a) = &req.admin_request {
            match self.admin(&mut st, a) {
                Ok(admin) => resp.admin_response = Some(admin),
                Err(message) => return error_response(message_error(message)),
            }
        }
        match st.kv.execute(&req.requests) {
            Ok(responses) => resp.responses = responses,
            Err(message) => return error_response(message_error(message)),
        }
        resp.header = Some(RaftResponseHeader {
            current_term: 2,
            ..Default::default()
        });
        resp.response_header = Some(ResponseHeader {
            cluster_id: self.cfg.cluster_id,
            member_id: self.cfg.store_id,
            revision: st.kv.revision,
            raft_term: 2,
        });
        resp
    }

    fn leader(&self, st: &State) -> u64 {
        match (st.leader, self.cfg.not_leader) {
            (0, Some(hint)) => hint,
            (0, None) => self.cfg.store_id,
            (l, _) => l,
        }
    }

    fn admin(&self, st: &mut State, a: &AdminRequest) -> Result<AdminResponse, String> {
        let mut out = AdminResponse {
            cmd_type: a.cmd_type,
            ..Default::default()
        };
        let leader = self.leader(st);
        match AdminCmdType::try_from(a.cmd_type) {
            Ok(AdminCmdType::Status) => {
                let rev = st.kv.revision as u64;
                out.status = Some(StatusResponse {
                    member_id: self.cfg.store_id,
                    leader,
                    raft_term: 2,
                    raft_index: 10 + rev,
                    raft_applied_index: 9 + rev,
                    raft_committed_index: 10 + rev,
                    db_size: 20480,
                    is_learner: st
                        .members
                        .iter()
                        .any(|m| m.id == self.cfg.store_id && m.is_learner),
                    members: st.members.clone(),
                    first_log_index: 5,
                    conf_ver: st.conf_ver,
                    regions: Vec::new(),
                    hibernating_regions: 0,
                });
            }
            Ok(AdminCmdType::ChangePeer) => {
                let c = a.change_peer.as_ref().ok_or("ChangePeer without body")?;
                let id = c.peer.as_ref().map_or(0, |p| p.store_id);
                let known = st.members.iter().any(|m| m.id == id);
                match ConfChangeType::try_from(c.change_type) {
                    Ok(ConfChangeType::AddNode | ConfChangeType::AddLearnerNode) => {
                        if known {
                            return Err(format!("peer {id} is already a member"));
                        }
                        st.members.push(Member {
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
                        st.members.retain(|m| m.id != id);
                    }
                    Err(_) => return Err("bad change type".into()),
                }
                st.conf_ver += 1;
                let peers = st
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
                    .collect();
                out.change_peer = Some(ChangePeerResponse {
                    region: Some(metapb::Region {
                        id: 1,
                        region_epoch: Some(metapb::RegionEpoch {
                            conf_ver: st.conf_ver,
                            version: 1,
                        }),
                        peers,
                        ..Default::default()
                    }),
                });
            }
            Ok(AdminCmdType::TransferLeader) => {
                let target = a
                    .transfer_leader
                    .as_ref()
                    .and_then(|t| t.peer.as_ref())
                    .map_or(0, |p| p.store_id);
                if !st.members.iter().any(|m| m.id == target && !m.is_learner) {
                    return Err(format!("peer {target} is not a voter"));
                }
                st.leader = target;
                out.transfer_leader = Some(TransferLeaderResponse {});
            }
            _ => return Err("unsupported admin command".into()),
        }
        Ok(out)
    }
}
