//! [`FrameBody`]: a frame's payload decoded as the protobuf message its frame type names.

use bytes::Bytes;
use prost::Message;

use crate::error::{DecodeError, EncodeError};
use crate::frame::{encode_frame, encode_message, encode_payload_with, Frame, FrameType};
use crate::proto::framepb::{
    FrameError, FrameErrorCode, Handshake, HandshakeAck, RaftMessageBatch,
};
use crate::proto::raft_cmdpb::{RaftCmdRequest, RaftCmdResponse};
use crate::proto::raft_serverpb::{RaftMessage, SnapshotChunk};

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
            FrameBody::RaftMessage(b) => encode_raft_batch(request_id, &b.messages, m, dst),
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

/// Appends a `RaftMessage` frame of `messages`: the bytes prost writes for a
/// `RaftMessageBatch`, written here field by field. prost appends a `bytes::Bytes` field
/// through a clone of it, and the clone of a `Bytes` made from a `Vec` (every encoded raft
/// message is one) allocates the shared header it moves to, which the drops free again: an
/// allocation and two frees per raft message sent, for bytes that are only copied.
fn encode_raft_batch(
    request_id: u64,
    messages: &[RaftMessage],
    max_frame_size_bytes: u32,
    dst: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    // `RaftMessageBatch.messages` is field 1, a length-delimited field per message.
    let lens: Vec<usize> = messages.iter().map(Message::encoded_len).collect();
    let total = lens
        .iter()
        .map(|&l| 1 + encoded_len_varint(l as u64) + l)
        .sum();
    let write = |dst: &mut Vec<u8>| {
        for (m, &len) in messages.iter().zip(&lens) {
            encode_key(1, WireType::LengthDelimited, dst);
            encode_varint(len as u64, dst);
            write_raft_message(m, dst);
        }
    };
    encode_payload_with(
        FrameType::RaftMessage,
        request_id,
        total,
        write,
        max_frame_size_bytes,
        dst,
    )
}

/// `m` as prost encodes it (fields in number order, defaults left out), with the raft
/// payload copied straight from its slice. Every field is named here, so a field added to
/// the message does not compile until it is written too.
fn write_raft_message(m: &RaftMessage, dst: &mut Vec<u8>) {
    use prost::encoding::{bool, bytes, encode_key, encode_varint, message, uint64, WireType};
    let RaftMessage {
        region_id,
        from_peer,
        to_peer,
        message: payload,
        region_epoch,
        is_tombstone,
        start_key,
        end_key,
    } = m;
    if *region_id != 0 {
        uint64::encode(1, region_id, dst);
    }
    if let Some(p) = from_peer {
        message::encode(2, p, dst);
    }
    if let Some(p) = to_peer {
        message::encode(3, p, dst);
    }
    if !payload.is_empty() {
        encode_key(4, WireType::LengthDelimited, dst);
        encode_varint(payload.len() as u64, dst);
        dst.extend_from_slice(payload);
    }
    if let Some(e) = region_epoch {
        message::encode(5, e, dst);
    }
    if *is_tombstone {
        bool::encode(6, is_tombstone, dst);
    }
    if !start_key.is_empty() {
        bytes::encode(7, start_key, dst);
    }
    if !end_key.is_empty() {
        bytes::encode(8, end_key, dst);
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

    /// The hand-written batch encoding writes the bytes prost writes, for messages with
    /// every field set, with none set, and with each field alone.
    #[test]
    fn raft_batches_encode_as_prost_encodes_them() {
        use crate::proto::metapb::{Peer, RegionEpoch};
        let full = RaftMessage {
            region_id: u64::MAX,
            from_peer: Some(Peer {
                id: 300,
                store_id: 2,
                ..Default::default()
            }),
            to_peer: Some(Peer::default()),
            message: vec![7u8; 200].into(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 5,
                version: 1 << 40,
            }),
            is_tombstone: true,
            start_key: b"a".to_vec(),
            end_key: vec![0xFF; 130],
        };
        let mut singles = vec![RaftMessage::default(), full.clone()];
        for i in 0..8 {
            let mut m = RaftMessage::default();
            match i {
                0 => m.region_id = full.region_id,
                1 => m.from_peer = full.from_peer,
                2 => m.to_peer = full.to_peer,
                3 => m.message = full.message.clone(),
                4 => m.region_epoch = full.region_epoch,
                5 => m.is_tombstone = true,
                6 => m.start_key = full.start_key.clone(),
                _ => m.end_key = full.end_key.clone(),
            }
            singles.push(m);
        }
        let batches = [
            Vec::new(),
            singles.clone(),
            vec![full.clone(); 3],
            vec![RaftMessage {
                message: vec![1u8; 70_000].into(),
                ..Default::default()
            }],
        ];
        for messages in batches {
            let batch = RaftMessageBatch { messages };
            let mut ours = Vec::new();
            FrameBody::RaftMessage(batch.clone())
                .encode(9, 1 << 20, &mut ours)
                .unwrap();
            let mut prost = Vec::new();
            encode_message(FrameType::RaftMessage, 9, &batch, 1 << 20, &mut prost).unwrap();
            assert_eq!(ours, prost, "{} messages", batch.messages.len());
        }
        // Too large: refused, nothing appended.
        let mut out = vec![1u8];
        let big = FrameBody::RaftMessage(RaftMessageBatch {
            messages: vec![full; 2],
        });
        assert!(big.encode(0, 100, &mut out).is_err());
        assert_eq!(out, vec![1u8]);
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
