//! [`FrameBody`]: a frame's payload decoded as the protobuf message its frame type names.

use bytes::Bytes;
use prost::Message;

use crate::error::{DecodeError, EncodeError};
use crate::frame::{encode_frame, encode_message, Frame, FrameType};
use crate::proto::framepb::{
    FrameError, FrameErrorCode, Handshake, HandshakeAck, RaftMessageBatch,
};
use crate::proto::raft_cmdpb::{RaftCmdRequest, RaftCmdResponse};
use crate::proto::raft_serverpb::SnapshotChunk;

/// A decoded payload, one variant per [`FrameType`].
#[derive(Debug, Clone, PartialEq)]
// Bodies are decoded, matched and dropped (or consumed by value); boxing the command
// variants would cost an allocation per frame to save stack bytes no one keeps.
#[allow(clippy::large_enum_variant)]
pub enum FrameBody {
    /// `framepb.Handshake`.
    Handshake(Handshake),
    /// `framepb.HandshakeAck`.
    HandshakeAck(HandshakeAck),
    /// `raft_cmdpb.RaftCmdRequest`.
    Request(RaftCmdRequest),
    /// `raft_cmdpb.RaftCmdResponse`.
    Response(RaftCmdResponse),
    /// `framepb.FrameError`.
    Error(FrameError),
    /// `framepb.RaftMessageBatch`.
    RaftMessage(RaftMessageBatch),
    /// `raft_serverpb.SnapshotChunk`.
    SnapshotChunk(SnapshotChunk),
    /// Opaque bytes, echoed by the Pong.
    Ping(Bytes),
    /// The Ping's bytes.
    Pong(Bytes),
}

impl FrameBody {
    /// Decodes `frame.payload` as the message its frame type names. Fails with
    /// [`DecodeError::UndecodablePayload`] if the bytes are not that message.
    pub fn decode(frame: &Frame) -> Result<FrameBody, DecodeError> {
        let p = frame.payload.clone();
        let t = frame.frame_type;
        Ok(match t {
            FrameType::Handshake => FrameBody::Handshake(decode_as(t, p)?),
            FrameType::HandshakeAck => FrameBody::HandshakeAck(decode_as(t, p)?),
            FrameType::Request => FrameBody::Request(decode_as(t, p)?),
            FrameType::Response => FrameBody::Response(decode_as(t, p)?),
            FrameType::Error => FrameBody::Error(decode_as(t, p)?),
            FrameType::RaftMessage => FrameBody::RaftMessage(decode_as(t, p)?),
            FrameType::SnapshotChunk => FrameBody::SnapshotChunk(decode_as(t, p)?),
            FrameType::Ping => FrameBody::Ping(p),
            FrameType::Pong => FrameBody::Pong(p),
        })
    }

    /// The frame type that carries this body.
    pub fn frame_type(&self) -> FrameType {
        match self {
            FrameBody::Handshake(_) => FrameType::Handshake,
            FrameBody::HandshakeAck(_) => FrameType::HandshakeAck,
            FrameBody::Request(_) => FrameType::Request,
            FrameBody::Response(_) => FrameType::Response,
            FrameBody::Error(_) => FrameType::Error,
            FrameBody::RaftMessage(_) => FrameType::RaftMessage,
            FrameBody::SnapshotChunk(_) => FrameType::SnapshotChunk,
            FrameBody::Ping(_) => FrameType::Ping,
            FrameBody::Pong(_) => FrameType::Pong,
        }
    }

    /// Appends the frame carrying this body to `dst`; see
    /// [`encode_message`].
    pub fn encode(
        &self,
        request_id: u64,
        max_frame_size_bytes: u32,
        dst: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let t = self.frame_type();
        let m = max_frame_size_bytes;
        match self {
            FrameBody::Handshake(b) => encode_message(t, request_id, b, m, dst),
            FrameBody::HandshakeAck(b) => encode_message(t, request_id, b, m, dst),
            FrameBody::Request(b) => encode_message(t, request_id, b, m, dst),
            FrameBody::Response(b) => encode_message(t, request_id, b, m, dst),
            FrameBody::Error(b) => encode_message(t, request_id, b, m, dst),
            FrameBody::RaftMessage(b) => encode_message(t, request_id, b, m, dst),
            FrameBody::SnapshotChunk(b) => encode_message(t, request_id, b, m, dst),
            FrameBody::Ping(b) | FrameBody::Pong(b) => encode_frame(t, request_id, b, m, dst),
        }
    }

    /// An Error body with the given code and message.
    pub fn error(code: FrameErrorCode, message: impl Into<String>) -> FrameBody {
        FrameBody::Error(FrameError {
            code: code as i32,
            message: message.into(),
        })
    }
}

fn decode_as<M: Message + Default>(
    frame_type: FrameType,
    payload: Bytes,
) -> Result<M, DecodeError> {
    M::decode(payload).map_err(|e| DecodeError::UndecodablePayload {
        frame_type: frame_type.name(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::framepb::Role;
    use crate::proto::raft_cmdpb::RaftRequestHeader;
    use crate::proto::raft_serverpb::RaftMessage;
    use crate::Limits;

    fn bodies() -> Vec<FrameBody> {
        vec![
            FrameBody::Handshake(Handshake {
                protocol_version: 1,
                cluster_id: 77,
                role: Role::Store as i32,
                store_id: 3,
                client_name: String::new(),
            }),
            FrameBody::HandshakeAck(HandshakeAck {
                protocol_version: 1,
                cluster_id: 77,
                store_id: 1,
                max_frame_size_bytes: Limits::DEFAULT_MAX_FRAME_SIZE_BYTES,
                max_in_flight_requests: 1024,
                idle_timeout_ms: 60_000,
            }),
            FrameBody::Request(RaftCmdRequest {
                header: Some(RaftRequestHeader {
                    region_id: 4,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            FrameBody::Response(RaftCmdResponse::default()),
            FrameBody::error(FrameErrorCode::ClusterIdMismatch, "cluster 1, not 2"),
            FrameBody::RaftMessage(RaftMessageBatch {
                messages: vec![RaftMessage {
                    region_id: 2,
                    message: vec![8, 3].into(),
                    ..Default::default()
                }],
            }),
            FrameBody::SnapshotChunk(SnapshotChunk {
                data: vec![1; 300],
                last: true,
                ..Default::default()
            }),
            FrameBody::Ping(Bytes::from_static(b"t=1")),
            FrameBody::Pong(Bytes::from_static(b"t=1")),
        ]
    }

    #[test]
    fn every_body_round_trips_through_a_frame() {
        let mut bytes = Vec::new();
        for (i, b) in bodies().iter().enumerate() {
            b.encode(i as u64, 1 << 20, &mut bytes).unwrap();
        }
        let mut d = crate::FrameDecoder::with_max_frame_size(1 << 20);
        d.feed(&bytes);
        for (i, want) in bodies().into_iter().enumerate() {
            let frame = d.next_frame().unwrap().unwrap();
            assert_eq!(frame.request_id, i as u64);
            assert_eq!(frame.frame_type, want.frame_type());
            assert_eq!(FrameBody::decode(&frame).unwrap(), want);
        }
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn garbage_payload_is_undecodable() {
        // Field 1 with wire type 7 does not exist.
        let frame = Frame::new(FrameType::Request, 1, vec![0x0F, 0xFF]);
        match FrameBody::decode(&frame) {
            Err(
                e @ DecodeError::UndecodablePayload {
                    frame_type: "Request",
                    ..
                },
            ) => {
                assert_eq!(e.code(), FrameErrorCode::UndecodablePayload)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
