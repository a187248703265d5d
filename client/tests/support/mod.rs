//! In-process mock stores for the client tests, speaking the real frame protocol:
//!
//! - [`single`]: one store, one region, no region routing (a store from before
//!   multi-raft: its `Status` lists no region), with test behaviours (NotLeader, silence,
//!   delayed answers, membership changes).
//! - [`cluster`]: several stores sharing several regions with different leaders, checking
//!   requests in TiKV's order (store id, region, leader, epoch, keys in range), and the
//!   cluster metadata the store commands (`StoreList`, `SetStoreState`) read and change.
//!
//! Both serve connections with [`serve`] and keep data in a [`Kv`].

#![allow(dead_code)]

pub mod cluster;
pub mod single;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pontoon_client::frame::{encode_frame, encode_message};
use pontoon_client::proto::errorpb;
use pontoon_client::proto::framepb::HandshakeAck;
use pontoon_client::proto::pontoonpb::{KeyValue, RangeResponse};
use pontoon_client::proto::raft_cmdpb::{
    CmdType, DeleteRangeResponse, DeleteResponse, GetResponse, PutResponse, RaftCmdRequest,
    RaftCmdResponse, RaftResponseHeader, Request, Response,
};
use pontoon_client::{FrameBody, FrameDecoder, FrameType, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Answers the commands one store receives.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `req` and how long to hold it back; `None` never answers.
    fn handle(&self, req: &RaftCmdRequest) -> Option<(RaftCmdResponse, Option<Duration>)>;
}

/// Listens on `listen` and serves every connection with `handler`, announcing store
/// `store_id` of cluster `cluster_id` in the handshake.
pub async fn serve(
    listen: &str,
    cluster_id: u64,
    store_id: u64,
    handler: Arc<dyn Handler>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            let _ = sock.set_nodelay(true);
            conns.push(AbortOnDrop(tokio::spawn(connection(
                sock,
                cluster_id,
                store_id,
                Arc::clone(&handler),
            ))));
        }
    });
    Ok((addr, task))
}

/// Aborts the connection tasks when the accept loop is aborted (a stopped store closes
/// its connections).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connection(sock: TcpStream, cluster_id: u64, store_id: u64, handler: Arc<dyn Handler>) {
    let max = Limits::DEFAULT_MAX_FRAME_SIZE_BYTES;
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = AbortOnDrop(tokio::spawn(async move {
        while let Some(buf) = rx.recv().await {
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
    }));
    let mut decoder = FrameDecoder::with_max_frame_size(max);
    let mut buf = vec![0u8; 64 * 1024];
    let mut delayed = Vec::new();
    let mut greeted = false;
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.feed(&buf[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return,
            };
            let Ok(body) = FrameBody::decode(&frame) else {
                return;
            };
            let mut out = Vec::new();
            match body {
                FrameBody::Handshake(_) if !greeted => {
                    greeted = true;
                    let ack = FrameBody::HandshakeAck(HandshakeAck {
                        protocol_version: 1,
                        cluster_id,
                        store_id,
                        max_frame_size_bytes: max,
                        max_in_flight_requests: Limits::DEFAULT_MAX_IN_FLIGHT_REQUESTS,
                        idle_timeout_ms: 60_000,
                    });
                    ack.encode(0, max, &mut out).unwrap();
                }
                FrameBody::Ping(payload) => {
                    encode_frame(FrameType::Pong, frame.request_id, &payload, max, &mut out)
                        .unwrap();
                }
                FrameBody::Request(req) if greeted => {
                    let Some((resp, delay)) = handler.handle(&req) else {
                        continue;
                    };
                    encode_message(FrameType::Response, frame.request_id, &resp, max, &mut out)
                        .unwrap();
                    if let Some(d) = delay {
                        let tx = tx.clone();
                        delayed.push(AbortOnDrop(tokio::spawn(async move {
                            tokio::time::sleep(d).await;
                            let _ = tx.send(out);
                        })));
                        continue;
                    }
                }
                _ => return,
            }
            if tx.send(out).is_err() {
                return;
            }
        }
    }
    drop(writer);
}

/// A response carrying region error `err`.
pub fn error_response(err: errorpb::Error) -> RaftCmdResponse {
    RaftCmdResponse {
        header: Some(RaftResponseHeader {
            error: Some(err),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A region error with only a message.
pub fn message_error(message: impl Into<String>) -> errorpb::Error {
    errorpb::Error {
        message: message.into(),
        ..Default::default()
    }
}

/// etcd's range test: empty `end` is `start` alone, `"\0"` every key ≥ `start`.
pub fn etcd_in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

/// Keys and etcd-style revisions (one revision counter, as one region has).
#[derive(Debug, Clone)]
pub struct Kv {
    pub revision: i64,
    pub kvs: BTreeMap<Vec<u8>, KeyValue>,
}

impl Default for Kv {
    fn default() -> Self {
        // An empty store is at revision 1, as etcd's.
        Kv {
            revision: 1,
            kvs: BTreeMap::new(),
        }
    }
}

impl Kv {
    /// Bytes of keys and values.
    pub fn size(&self) -> u64 {
        self.kvs
            .values()
            .map(|kv| (kv.key.len() + kv.value.len()) as u64)
            .sum()
    }

    /// Executes `requests` as one command (one revision bump if anything changed).
    pub fn execute(&mut self, requests: &[Request]) -> Result<Vec<Response>, String> {
        let next = self.revision + 1;
        let mut changed = false;
        let mut out = Vec::new();
        for r in requests {
            let mut resp = Response {
                cmd_type: r.cmd_type,
                ..Default::default()
            };
            match CmdType::try_from(r.cmd_type) {
                Ok(CmdType::Put) => {
                    let p = r.put.as_ref().ok_or("put without body")?;
                    let prev = self.kvs.get(&p.key).cloned();
                    self.kvs.insert(
                        p.key.clone(),
                        KeyValue {
                            key: p.key.clone(),
                            create_revision: prev.as_ref().map_or(next, |k| k.create_revision),
                            mod_revision: next,
                            version: prev.as_ref().map_or(1, |k| k.version + 1),
                            value: p.value.clone(),
                            lease: 0,
                        },
                    );
                    changed = true;
                    resp.put = Some(PutResponse {
                        prev_kv: prev.filter(|_| p.prev_kv),
                    });
                }
                Ok(CmdType::Get) => {
                    let g = r.get.as_ref().ok_or("get without body")?;
                    let kv = self.kvs.get(&g.key).cloned();
                    resp.get = Some(GetResponse {
                        value: kv.as_ref().map(|k| k.value.clone()).unwrap_or_default(),
                        kv: kv.map(|mut k| {
                            k.value.clear();
                            k
                        }),
                    });
                }
                Ok(CmdType::Range) => {
                    let g = r.range.as_ref().ok_or("range without body")?;
                    let all: Vec<&KeyValue> = self
                        .kvs
                        .values()
                        .filter(|kv| etcd_in_range(&kv.key, &g.key, &g.range_end))
                        .collect();
                    let limit = if g.limit > 0 {
                        g.limit as usize
                    } else {
                        usize::MAX
                    };
                    let kvs: Vec<KeyValue> = if g.count_only {
                        Vec::new()
                    } else {
                        all.iter()
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
                    resp.range = Some(RangeResponse {
                        more: !g.count_only && all.len() > limit,
                        count: all.len() as i64,
                        kvs,
                    });
                }
                Ok(CmdType::Delete) => {
                    let d = r.delete.as_ref().ok_or("delete without body")?;
                    let prev = self.kvs.remove(&d.key);
                    changed |= prev.is_some();
                    resp.delete = Some(DeleteResponse {
                        deleted: i64::from(prev.is_some()),
                        prev_kv: prev.filter(|_| d.prev_kv),
                    });
                }
                Ok(CmdType::DeleteRange) => {
                    let d = r.delete_range.as_ref().ok_or("delete_range without body")?;
                    let keys: Vec<Vec<u8>> = self
                        .kvs
                        .keys()
                        .filter(|k| etcd_in_range(k, &d.start_key, &d.end_key))
                        .cloned()
                        .collect();
                    let prev: Vec<KeyValue> =
                        keys.iter().filter_map(|k| self.kvs.remove(k)).collect();
                    changed |= !prev.is_empty();
                    resp.delete_range = Some(DeleteRangeResponse {
                        deleted: prev.len() as i64,
                        prev_kvs: if d.prev_kv { prev } else { Vec::new() },
                    });
                }
                _ => return Err("invalid command".into()),
            }
            out.push(resp);
        }
        if changed {
            self.revision = next;
        }
        Ok(out)
    }
}

/// The key ranges a request touches, as etcd `(start, end)` pairs.
pub fn request_spans(r: &Request) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut spans = Vec::new();
    if let Some(p) = &r.put {
        spans.push((p.key.clone(), Vec::new()));
    }
    if let Some(g) = &r.get {
        spans.push((g.key.clone(), Vec::new()));
    }
    if let Some(d) = &r.delete {
        spans.push((d.key.clone(), Vec::new()));
    }
    if let Some(d) = &r.delete_range {
        spans.push((d.start_key.clone(), d.end_key.clone()));
    }
    if let Some(g) = &r.range {
        spans.push((g.key.clone(), g.range_end.clone()));
    }
    spans
}
