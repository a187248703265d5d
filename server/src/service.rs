//! The client-facing TCP service on `tokio-uring`: handshake, pipelined requests matched by
//! request id, error frames, limits, graceful shutdown. Protocol: `docs/PROTOCOL.md`.
//!
//! One io_uring runtime thread serves every connection. Each connection has a reader (this
//! module's `serve_conn` loop: decode frames, hand commands to the store loop) and a writer
//! task that coalesces every answered frame waiting into one `write_all`. Commands from all
//! connections meet in the store loop, which group-commits them into one raft-log write.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use pontoon_client::proto::framepb::{FrameErrorCode, Handshake, HandshakeAck, Role};
use pontoon_client::{FrameBody, FrameDecoder, Limits, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};
use tokio_uring::net::{TcpListener, TcpStream};

use crate::node::Node;

/// Serves clients on `listener` until `shutdown` turns true, then stops accepting, lets every
/// connection finish the requests it has in flight (bounded by `drain`), and returns.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let node = node.clone();
                    let active = active.clone();
                    let shutdown = shutdown.clone();
                    active.set(active.get() + 1);
                    tokio_uring::spawn(async move {
                        serve_conn(Rc::new(stream), peer, node, limits, shutdown).await;
                        active.set(active.get() - 1);
                    });
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    log::info!("stopped accepting; draining {} connections", active.get());
    let deadline = tokio::time::Instant::now() + drain;
    while active.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Frames waiting to be written, coalesced by the writer task.
type Outbox = mpsc::UnboundedSender<Vec<u8>>;

fn send_body(out: &Outbox, body: &FrameBody, request_id: u64, limits: &Limits) {
    let mut buf = Vec::new();
    match body.encode(request_id, limits.max_frame_size_bytes, &mut buf) {
        Ok(()) => {
            let _ = out.send(buf);
        }
        Err(e) => {
            log::warn!("cannot encode a {:?} frame: {e}", body.frame_type());
            let mut buf = Vec::new();
            let err = FrameBody::error(
                FrameErrorCode::Internal,
                format!("cannot encode answer: {e}"),
            );
            if err
                .encode(request_id, limits.max_frame_size_bytes, &mut buf)
                .is_ok()
            {
                let _ = out.send(buf);
            }
        }
    }
}

async fn writer(stream: Rc<TcpStream>, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(mut buf) = rx.recv().await {
        // Coalesce everything already answered into one write.
        while let Ok(more) = rx.try_recv() {
            buf.extend_from_slice(&more);
            if buf.len() > 1 << 20 {
                break;
            }
        }
        let (res, _) = stream.write_all(buf).await;
        if let Err(e) = res {
            log::debug!("write failed: {e}");
            return;
        }
    }
}

/// Why a connection ends.
enum Close {
    /// The peer closed or the socket failed.
    Gone,
    /// A protocol error: send this frame, then close.
    Error(FrameErrorCode, String, u64),
}

async fn serve_conn(
    stream: Rc<TcpStream>,
    peer: SocketAddr,
    node: Arc<Node>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (out, rx) = mpsc::unbounded_channel();
    let writer_task = tokio_uring::spawn(writer(stream.clone(), rx));
    let in_flight = Rc::new(Cell::new(0u32));
    let close = read_loop(&stream, &node, &limits, &out, &in_flight, &mut shutdown).await;
    if let Close::Error(code, message, request_id) = close {
        log::info!("closing connection from {peer}: {message}");
        send_body(&out, &FrameBody::error(code, message), request_id, &limits);
    }
    // Let answers of requests already handed to the store loop go out (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(out);
    let _ = writer_task.await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

async fn read_loop(
    stream: &Rc<TcpStream>,
    node: &Arc<Node>,
    limits: &Limits,
    out: &Outbox,
    in_flight: &Rc<Cell<u32>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Close {
    let mut decoder = FrameDecoder::new(limits);
    let mut buf = vec![0u8; 64 << 10];
    let mut handshaken = false;
    loop {
        let timeout = if handshaken {
            limits.idle_timeout
        } else {
            limits.handshake_timeout
        };
        let read = tokio::select! {
            r = tokio::time::timeout(timeout, stream.read(buf)) => r,
            _ = shutdown.changed() => {
                return Close::Error(FrameErrorCode::ShuttingDown, "the store is stopping".into(), 0);
            }
        };
        let (res, b) = match read {
            Ok(r) => r,
            Err(_) => {
                let what = if handshaken {
                    "idle timeout"
                } else {
                    "no handshake in time"
                };
                return Close::Error(FrameErrorCode::IdleTimeout, what.into(), 0);
            }
        };
        buf = b;
        let n = match res {
            Ok(0) | Err(_) => return Close::Gone,
            Ok(n) => n,
        };
        decoder.feed(&buf[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Close::Error(e.code(), e.to_string(), 0),
            };
            let request_id = frame.request_id;
            let body = match FrameBody::decode(&frame) {
                Ok(b) => b,
                Err(e) => return Close::Error(e.code(), e.to_string(), request_id),
            };
            if !handshaken {
                match body {
                    FrameBody::Handshake(h) => {
                        if let Err((code, msg)) = check_handshake(&h, node) {
                            return Close::Error(code, msg, request_id);
                        }
                        let ack = FrameBody::HandshakeAck(HandshakeAck {
                            protocol_version: PROTOCOL_VERSION.into(),
                            cluster_id: node.cluster_id(),
                            store_id: node.store_id(),
                            max_frame_size_bytes: limits.max_frame_size_bytes,
                            max_in_flight_requests: limits.max_in_flight_requests,
                            idle_timeout_ms: limits.idle_timeout.as_millis() as u64,
                        });
                        send_body(out, &ack, request_id, limits);
                        handshaken = true;
                        continue;
                    }
                    other => {
                        return Close::Error(
                            FrameErrorCode::HandshakeRequired,
                            format!("expected a Handshake, got {:?}", other.frame_type()),
                            request_id,
                        )
                    }
                }
            }
            match body {
                FrameBody::Request(req) => {
                    if in_flight.get() >= limits.max_in_flight_requests {
                        return Close::Error(
                            FrameErrorCode::TooManyInFlight,
                            format!(
                                "more than {} requests in flight",
                                limits.max_in_flight_requests
                            ),
                            request_id,
                        );
                    }
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    if !node.submit(req, tx) {
                        return Close::Error(
                            FrameErrorCode::ShuttingDown,
                            "the store is stopping".into(),
                            request_id,
                        );
                    }
                    in_flight.set(in_flight.get() + 1);
                    let out = out.clone();
                    let limits = *limits;
                    let in_flight = in_flight.clone();
                    tokio_uring::spawn(async move {
                        match rx.await {
                            Ok(resp) => {
                                send_body(&out, &FrameBody::Response(resp), request_id, &limits)
                            }
                            Err(_) => send_body(
                                &out,
                                &FrameBody::error(
                                    FrameErrorCode::ShuttingDown,
                                    "the store stopped",
                                ),
                                request_id,
                                &limits,
                            ),
                        }
                        in_flight.set(in_flight.get() - 1);
                    });
                }
                FrameBody::Ping(p) => send_body(out, &FrameBody::Pong(p), request_id, limits),
                other => {
                    return Close::Error(
                        FrameErrorCode::UnexpectedFrame,
                        format!("a client may not send {:?}", other.frame_type()),
                        request_id,
                    )
                }
            }
        }
    }
}

fn check_handshake(h: &Handshake, node: &Node) -> Result<(), (FrameErrorCode, String)> {
    if h.protocol_version != u32::from(PROTOCOL_VERSION) {
        return Err((
            FrameErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not {}",
                h.protocol_version, PROTOCOL_VERSION
            ),
        ));
    }
    if h.cluster_id != 0 && h.cluster_id != node.cluster_id() {
        return Err((
            FrameErrorCode::ClusterIdMismatch,
            format!(
                "this is cluster {}, not {}",
                node.cluster_id(),
                h.cluster_id
            ),
        ));
    }
    if h.role == Role::Store as i32 {
        return Err((
            FrameErrorCode::UnexpectedFrame,
            "store-to-store connections arrive with replication".into(),
        ));
    }
    Ok(())
}
