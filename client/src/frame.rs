//! Frame header, frame types and the encoder.
//!
//! Every frame is a 24-byte header followed by `payload_len` bytes of payload. All header
//! integers are little-endian:
//!
//! | offset | size | field        | value                                        |
//! |-------:|-----:|--------------|----------------------------------------------|
//! | 0      | 4    | magic        | the bytes `P` `N` `T` `N`                    |
//! | 4      | 1    | version      | [`PROTOCOL_VERSION`]                         |
//! | 5      | 1    | frame type   | [`FrameType`]                                |
//! | 6      | 2    | flags        | 0 (reserved)                                 |
//! | 8      | 8    | request id   | matches a response to its request            |
//! | 16     | 4    | payload len  | bytes after the header, at most the limit    |
//! | 20     | 4    | payload crc  | crc32 (IEEE, as `crc32fast`) of the payload  |

use bytes::Bytes;

use crate::error::{DecodeError, EncodeError};

/// The first four bytes of every frame: `PNTN`.
pub const MAGIC: [u8; 4] = *b"PNTN";
/// The protocol version this build speaks, carried in every header and in the handshake.
pub const PROTOCOL_VERSION: u8 = 1;
/// Length of the fixed frame header, in bytes.
pub const HEADER_LEN: usize = 24;

/// What a frame's payload is. The byte value is the header's frame type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// First frame of a connection, from the connecting side; payload `framepb.Handshake`.
    Handshake = 1,
    /// Successful answer to the handshake; payload `framepb.HandshakeAck`.
    HandshakeAck = 2,
    /// A command for a region; payload `raft_cmdpb.RaftCmdRequest`.
    Request = 3,
    /// The result of the Request with the same request id; payload `raft_cmdpb.RaftCmdResponse`.
    Response = 4,
    /// A protocol-level failure; payload `framepb.FrameError`. Request id is that of the
    /// offending frame, or 0 when the error is about the connection.
    Error = 5,
    /// Raft messages between stores; payload `framepb.RaftMessageBatch`.
    RaftMessage = 6,
    /// A piece of a region snapshot between stores; payload `raft_serverpb.SnapshotChunk`.
    SnapshotChunk = 7,
    /// Liveness probe; payload is opaque bytes that the Pong echoes.
    Ping = 8,
    /// Answer to a Ping, with the Ping's request id and payload.
    Pong = 9,
}

impl FrameType {
    /// Every frame type, in byte order.
    pub const ALL: [FrameType; 9] = [
        FrameType::Handshake,
        FrameType::HandshakeAck,
        FrameType::Request,
        FrameType::Response,
        FrameType::Error,
        FrameType::RaftMessage,
        FrameType::SnapshotChunk,
        FrameType::Ping,
        FrameType::Pong,
    ];

    /// The frame type with this byte value, if any.
    pub fn from_u8(value: u8) -> Option<FrameType> {
        match value {
            1 => Some(FrameType::Handshake),
            2 => Some(FrameType::HandshakeAck),
            3 => Some(FrameType::Request),
            4 => Some(FrameType::Response),
            5 => Some(FrameType::Error),
            6 => Some(FrameType::RaftMessage),
            7 => Some(FrameType::SnapshotChunk),
            8 => Some(FrameType::Ping),
            9 => Some(FrameType::Pong),
            _ => None,
        }
    }

    /// The name used in docs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Handshake => "Handshake",
            FrameType::HandshakeAck => "HandshakeAck",
            FrameType::Request => "Request",
            FrameType::Response => "Response",
            FrameType::Error => "Error",
            FrameType::RaftMessage => "RaftMessage",
            FrameType::SnapshotChunk => "SnapshotChunk",
            FrameType::Ping => "Ping",
            FrameType::Pong => "Pong",
        }
    }
}

/// A parsed, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the payload is.
    pub frame_type: FrameType,
    /// Request id; see [`Frame::request_id`].
    pub request_id: u64,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// crc32 of the payload.
    pub checksum: u32,
}

impl FrameHeader {
    /// Parses and validates a header: magic, version, frame type, flags (must be 0) and
    /// payload length (at most `max_frame_size_bytes`), checked in that order. The
    /// checksum can only be checked once the payload is there.
    pub fn parse(bytes: &[u8; HEADER_LEN], max_frame_size_bytes: u32) -> Result<Self, DecodeError> {
        let [m0, m1, m2, m3, version, frame_type, f0, f1, r0, r1, r2, r3, r4, r5, r6, r7, l0, l1, l2, l3, c0, c1, c2, c3] =
            *bytes;
        if [m0, m1, m2, m3] != MAGIC {
            return Err(DecodeError::BadMagic {
                found: u32::from_le_bytes([m0, m1, m2, m3]),
            });
        }
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let Some(kind) = FrameType::from_u8(frame_type) else {
            return Err(DecodeError::UnknownFrameType { frame_type });
        };
        let flags = u16::from_le_bytes([f0, f1]);
        if flags != 0 {
            return Err(DecodeError::ReservedFlags { flags });
        }
        let payload_len = u32::from_le_bytes([l0, l1, l2, l3]);
        if payload_len > max_frame_size_bytes {
            return Err(DecodeError::FrameTooLarge {
                len: payload_len,
                max: max_frame_size_bytes,
            });
        }
        Ok(FrameHeader {
            frame_type: kind,
            request_id: u64::from_le_bytes([r0, r1, r2, r3, r4, r5, r6, r7]),
            payload_len,
            checksum: u32::from_le_bytes([c0, c1, c2, c3]),
        })
    }

    /// The header's 24 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = PROTOCOL_VERSION;
        out[5] = self.frame_type as u8;
        // out[6..8]: flags, reserved, 0.
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.payload_len.to_le_bytes());
        out[20..24].copy_from_slice(&self.checksum.to_le_bytes());
        out
    }
}

/// One decoded frame: its type, request id and (checksum-verified) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub frame_type: FrameType,
    /// Chosen by the sender of a Request (or Ping), echoed by the Response (or Pong, or
    /// Error) that answers it. 0 for frames that answer nothing (handshake, raft messages,
    /// connection-level errors).
    pub request_id: u64,
    /// The payload bytes.
    pub payload: Bytes,
}

impl Frame {
    /// A frame with the given parts.
    pub fn new(frame_type: FrameType, request_id: u64, payload: impl Into<Bytes>) -> Frame {
        Frame {
            frame_type,
            request_id,
            payload: payload.into(),
        }
    }

    /// Appends the encoded frame to `dst`; see [`encode_frame`].
    pub fn encode(&self, max_frame_size_bytes: u32, dst: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_frame(
            self.frame_type,
            self.request_id,
            &self.payload,
            max_frame_size_bytes,
            dst,
        )
    }

    /// Decodes the first frame of `buf`, returning it and the number of bytes it used.
    /// Fails with [`DecodeError::Truncated`] if `buf` holds less than a whole frame.
    pub fn decode(buf: &[u8], max_frame_size_bytes: u32) -> Result<(Frame, usize), DecodeError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN as u64,
                available: buf.len() as u64,
            });
        };
        let header = FrameHeader::parse(head, max_frame_size_bytes)?;
        let total = HEADER_LEN.saturating_add(header.payload_len as usize);
        let Some(payload) = buf.get(HEADER_LEN..total) else {
            return Err(DecodeError::Truncated {
                needed: total as u64,
                available: buf.len() as u64,
            });
        };
        check_payload(&header, payload)?;
        Ok((
            Frame::new(
                header.frame_type,
                header.request_id,
                Bytes::copy_from_slice(payload),
            ),
            total,
        ))
    }
}

/// Fails with [`DecodeError::ChecksumMismatch`] unless `payload` has the header's crc32.
pub(crate) fn check_payload(header: &FrameHeader, payload: &[u8]) -> Result<(), DecodeError> {
    let actual = crc32fast::hash(payload);
    if actual != header.checksum {
        return Err(DecodeError::ChecksumMismatch {
            expected: header.checksum,
            actual,
        });
    }
    Ok(())
}

/// Appends one frame (header and payload) to `dst`. Fails, appending nothing, if the
/// payload is longer than `max_frame_size_bytes`.
pub fn encode_frame(
    frame_type: FrameType,
    request_id: u64,
    payload: &[u8],
    max_frame_size_bytes: u32,
    dst: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let payload_len = checked_len(payload.len(), max_frame_size_bytes)?;
    let header = FrameHeader {
        frame_type,
        request_id,
        payload_len,
        checksum: crc32fast::hash(payload),
    };
    dst.reserve(HEADER_LEN + payload.len());
    dst.extend_from_slice(&header.to_bytes());
    dst.extend_from_slice(payload);
    Ok(())
}

/// Appends one frame whose payload is `message` encoded as protobuf, encoding it directly
/// into `dst` (no intermediate buffer). Fails, appending nothing, if the encoded message is
/// longer than `max_frame_size_bytes`.
pub fn encode_message<M: prost::Message>(
    frame_type: FrameType,
    request_id: u64,
    message: &M,
    max_frame_size_bytes: u32,
    dst: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    // `encode_raw` cannot fail on a Vec (it grows); `encode` would only add an impossible
    // "buffer full" error.
    encode_payload_with(
        frame_type,
        request_id,
        message.encoded_len(),
        |dst| message.encode_raw(dst),
        max_frame_size_bytes,
        dst,
    )
}

/// Appends one frame whose payload, `encoded_len` bytes, `write` appends to `dst`. Fails,
/// appending nothing, if the payload is longer than `max_frame_size_bytes`.
pub(crate) fn encode_payload_with(
    frame_type: FrameType,
    request_id: u64,
    encoded_len: usize,
    write: impl FnOnce(&mut Vec<u8>),
    max_frame_size_bytes: u32,
    dst: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let payload_len = checked_len(encoded_len, max_frame_size_bytes)?;
    dst.reserve(HEADER_LEN + encoded_len);
    let start = dst.len();
    dst.extend_from_slice(&[0u8; HEADER_LEN]);
    write(dst);
    let payload = dst.get(start + HEADER_LEN..).unwrap_or_default();
    debug_assert_eq!(
        payload.len(),
        encoded_len,
        "the payload's length disagrees with what was written"
    );
    let header = FrameHeader {
        frame_type,
        request_id,
        payload_len,
        checksum: crc32fast::hash(payload),
    };
    dst[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
    Ok(())
}

fn checked_len(len: usize, max_frame_size_bytes: u32) -> Result<u32, EncodeError> {
    match u32::try_from(len) {
        Ok(n) if n <= max_frame_size_bytes => Ok(n),
        _ => Err(EncodeError::FrameTooLarge {
            len: u64::try_from(len).unwrap_or(u64::MAX),
            max: max_frame_size_bytes,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 1 << 20;

    #[test]
    fn header_layout_is_the_documented_one() {
        let mut out = Vec::new();
        encode_frame(
            FrameType::Response,
            0x0102_0304_0506_0708,
            b"abc",
            MAX,
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[0..4], b"PNTN");
        assert_eq!(out[4], 1);
        assert_eq!(out[5], 4);
        assert_eq!(&out[6..8], &[0, 0]);
        assert_eq!(&out[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&out[16..20], &[3, 0, 0, 0]);
        assert_eq!(&out[20..24], &crc32fast::hash(b"abc").to_le_bytes());
        assert_eq!(&out[24..], b"abc");
    }

    #[test]
    fn every_frame_type_round_trips() {
        for (i, t) in FrameType::ALL.into_iter().enumerate() {
            assert_eq!(FrameType::from_u8(t as u8), Some(t));
            let payload = vec![i as u8; i * 7];
            let mut out = Vec::new();
            Frame::new(t, i as u64 + 42, payload.clone())
                .encode(MAX, &mut out)
                .unwrap();
            let (frame, used) = Frame::decode(&out, MAX).unwrap();
            assert_eq!(used, out.len());
            assert_eq!(frame, Frame::new(t, i as u64 + 42, payload));
        }
        assert_eq!(FrameType::from_u8(0), None);
        assert_eq!(FrameType::from_u8(10), None);
    }

    #[test]
    fn encode_message_matches_encode_frame() {
        let msg = crate::proto::metapb::Peer {
            id: 7,
            store_id: 9,
            role: 0,
        };
        let (mut a, mut b) = (vec![0xAA], vec![0xAA]);
        encode_message(FrameType::Request, 5, &msg, MAX, &mut a).unwrap();
        encode_frame(
            FrameType::Request,
            5,
            &prost::Message::encode_to_vec(&msg),
            MAX,
            &mut b,
        )
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn encoder_refuses_oversized_payloads() {
        let mut out = vec![1, 2];
        let err = encode_frame(FrameType::Request, 1, &[0; 11], 10, &mut out).unwrap_err();
        assert_eq!(err, EncodeError::FrameTooLarge { len: 11, max: 10 });
        let msg = crate::proto::raft_serverpb::SnapshotChunk {
            data: vec![0; 11],
            ..Default::default()
        };
        assert!(encode_message(FrameType::SnapshotChunk, 1, &msg, 10, &mut out).is_err());
        assert_eq!(out, vec![1, 2], "nothing appended on failure");
        encode_frame(FrameType::Request, 1, &[0; 10], 10, &mut out).unwrap();
    }

    #[test]
    fn one_shot_decode_reports_truncation() {
        let mut out = Vec::new();
        encode_frame(FrameType::Ping, 3, b"hello", MAX, &mut out).unwrap();
        assert_eq!(
            Frame::decode(&out[..10], MAX),
            Err(DecodeError::Truncated {
                needed: 24,
                available: 10
            })
        );
        assert_eq!(
            Frame::decode(&out[..26], MAX),
            Err(DecodeError::Truncated {
                needed: 29,
                available: 26
            })
        );
    }
}
