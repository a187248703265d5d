//! [`FrameDecoder`]: a streaming frame decoder for bytes arriving from a socket.

use bytes::BytesMut;

use crate::error::DecodeError;
use crate::frame::{check_payload, Frame, FrameHeader, HEADER_LEN};
use crate::limits::Limits;

/// Turns a byte stream into frames. Feed it bytes as they arrive ([`feed`](Self::feed)),
/// then pop the complete frames ([`next_frame`](Self::next_frame)) until it returns
/// `Ok(None)`.
///
/// Contract:
/// - any input gives frames or a typed [`DecodeError`], never a panic;
/// - a header is validated (magic, version, type, flags, length) as soon as its 24 bytes
///   are in, before any of its payload is awaited, and the payload space reserved is never
///   more than `max_frame_size_bytes`;
/// - the decoder buffers only what it is fed: feeding one socket read at a time and
///   draining frames between reads keeps the buffer below one read plus one frame;
/// - the first error is sticky: the stream has lost its framing, so every later call
///   returns the same error and fed bytes are dropped. The owner sends an Error frame
///   with [`DecodeError::code`] and closes the connection.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_size_bytes: u32,
    /// Header of the frame whose payload is being awaited.
    header: Option<FrameHeader>,
    failed: Option<DecodeError>,
}

impl FrameDecoder {
    /// A decoder enforcing `limits.max_frame_size_bytes`.
    pub fn new(limits: &Limits) -> FrameDecoder {
        FrameDecoder::with_max_frame_size(limits.max_frame_size_bytes)
    }

    /// A decoder accepting payloads of at most `max_frame_size_bytes`.
    pub fn with_max_frame_size(max_frame_size_bytes: u32) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame_size_bytes,
            header: None,
            failed: None,
        }
    }

    /// Appends received bytes. Dropped if the decoder has already failed.
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the error that
    /// broke the stream (sticky, see the type's documentation).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.step() {
            Ok(frame) => Ok(frame),
            Err(err) => {
                self.failed = Some(err.clone());
                self.buf = BytesMut::new();
                self.header = None;
                Err(err)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Frame>, DecodeError> {
        let header = match self.header {
            Some(header) => header,
            None => {
                let Some(head) = self.buf.first_chunk::<HEADER_LEN>() else {
                    return Ok(None);
                };
                let header = FrameHeader::parse(head, self.max_frame_size_bytes)?;
                let _ = self.buf.split_to(HEADER_LEN);
                // Bounded by max_frame_size_bytes: parse() checked the length.
                self.buf
                    .reserve((header.payload_len as usize).saturating_sub(self.buf.len()));
                self.header = Some(header);
                header
            }
        };
        let len = header.payload_len as usize;
        if self.buf.len() < len {
            return Ok(None);
        }
        let payload = self.buf.split_to(len).freeze();
        self.header = None;
        check_payload(&header, &payload)?;
        Ok(Some(Frame {
            frame_type: header.frame_type,
            request_id: header.request_id,
            payload,
        }))
    }

    /// Bytes fed but not yet returned as frames (a parsed header no longer counts).
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// True once an error was returned; the decoder will not produce frames again.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Call when the stream ends: `Ok` if it ended between frames, otherwise the sticky
    /// error or [`DecodeError::Truncated`] for a frame cut short. Frames still buffered
    /// must be popped first; they count as a partial frame otherwise.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let available = self.buf.len() as u64;
        match self.header {
            Some(h) => Err(DecodeError::Truncated {
                needed: HEADER_LEN as u64 + u64::from(h.payload_len),
                available: HEADER_LEN as u64 + available,
            }),
            None if available > 0 => Err(DecodeError::Truncated {
                needed: HEADER_LEN as u64,
                available,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_frame, FrameType};

    const MAX: u32 = 64 * 1024;

    fn stream() -> (Vec<u8>, Vec<Frame>) {
        let mut bytes = Vec::new();
        let mut frames = Vec::new();
        for (i, t) in FrameType::ALL.into_iter().enumerate() {
            let f = Frame::new(t, 1000 + i as u64, vec![i as u8; i * 13]);
            f.encode(MAX, &mut bytes).unwrap();
            frames.push(f);
        }
        let big = Frame::new(FrameType::Request, 7, vec![0x5A; 4096]);
        big.encode(MAX, &mut bytes).unwrap();
        frames.push(big);
        (bytes, frames)
    }

    fn drain(d: &mut FrameDecoder, out: &mut Vec<Frame>) {
        while let Some(f) = d.next_frame().unwrap() {
            out.push(f);
        }
    }

    fn first_error(bytes: &[u8], max: u32) -> DecodeError {
        let mut d = FrameDecoder::with_max_frame_size(max);
        d.feed(bytes);
        loop {
            match d.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) => return d.finish().unwrap_err(),
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn decodes_all_frames_fed_at_once() {
        let (bytes, frames) = stream();
        let mut d = FrameDecoder::new(&Limits::default());
        d.feed(&bytes);
        let mut got = Vec::new();
        drain(&mut d, &mut got);
        assert_eq!(got, frames);
        assert_eq!(d.buffered_len(), 0);
        d.finish().unwrap();
    }

    #[test]
    fn decodes_frames_fed_byte_by_byte() {
        let (bytes, frames) = stream();
        let mut d = FrameDecoder::with_max_frame_size(MAX);
        let mut got = Vec::new();
        for b in &bytes {
            d.feed(std::slice::from_ref(b));
            drain(&mut d, &mut got);
        }
        assert_eq!(got, frames);
        d.finish().unwrap();
    }

    #[test]
    fn empty_payload_frame_decodes() {
        let mut bytes = Vec::new();
        encode_frame(FrameType::Ping, 9, &[], MAX, &mut bytes).unwrap();
        let mut d = FrameDecoder::with_max_frame_size(MAX);
        d.feed(&bytes);
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::new(FrameType::Ping, 9, Vec::new()))
        );
    }

    #[test]
    fn wrong_magic_is_bad_magic() {
        let (mut bytes, _) = stream();
        bytes[0] = b'X';
        assert_eq!(
            first_error(&bytes, MAX),
            DecodeError::BadMagic {
                found: u32::from_le_bytes(*b"XNTN")
            }
        );
    }

    #[test]
    fn other_version_is_unsupported() {
        let (mut bytes, _) = stream();
        bytes[4] = 2;
        assert_eq!(
            first_error(&bytes, MAX),
            DecodeError::UnsupportedVersion { version: 2 }
        );
    }

    #[test]
    fn unknown_frame_type_is_rejected() {
        let (mut bytes, _) = stream();
        bytes[5] = 0xEE;
        assert_eq!(
            first_error(&bytes, MAX),
            DecodeError::UnknownFrameType { frame_type: 0xEE }
        );
        bytes[5] = 0;
        assert_eq!(
            first_error(&bytes, MAX),
            DecodeError::UnknownFrameType { frame_type: 0 }
        );
    }

    #[test]
    fn nonzero_flags_are_rejected() {
        let (mut bytes, _) = stream();
        bytes[7] = 0x80;
        assert_eq!(
            first_error(&bytes, MAX),
            DecodeError::ReservedFlags { flags: 0x8000 }
        );
    }

    #[test]
    fn huge_length_is_rejected_before_allocating() {
        let mut bytes = Vec::new();
        encode_frame(FrameType::Request, 1, b"x", MAX, &mut bytes).unwrap();
        bytes[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut d = FrameDecoder::with_max_frame_size(MAX);
        d.feed(&bytes[..HEADER_LEN]);
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::FrameTooLarge {
                len: u32::MAX,
                max: MAX
            })
        );
        assert!(d.buf.capacity() < 1024, "no payload space reserved");
        assert!(d.is_failed());
    }

    #[test]
    fn length_at_the_limit_is_accepted() {
        let mut bytes = Vec::new();
        encode_frame(FrameType::Request, 1, &[7; 100], 100, &mut bytes).unwrap();
        let mut d = FrameDecoder::with_max_frame_size(100);
        d.feed(&bytes);
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(
            first_error(&bytes, 99),
            DecodeError::FrameTooLarge { len: 100, max: 99 }
        );
    }

    #[test]
    fn corrupted_payload_is_checksum_mismatch() {
        let mut bytes = Vec::new();
        encode_frame(FrameType::Request, 1, b"payload", MAX, &mut bytes).unwrap();
        let expected = crc32fast::hash(b"payload");
        bytes[HEADER_LEN] ^= 1;
        assert_eq!(
            first_error(&bytes, MAX),
            DecodeError::ChecksumMismatch {
                expected,
                actual: crc32fast::hash(b"qayload")
            }
        );
    }

    #[test]
    fn truncated_streams_are_reported_by_finish() {
        let mut bytes = Vec::new();
        encode_frame(FrameType::Response, 1, b"0123456789", MAX, &mut bytes).unwrap();
        for cut in 1..bytes.len() {
            let mut d = FrameDecoder::with_max_frame_size(MAX);
            d.feed(&bytes[..cut]);
            assert_eq!(d.next_frame(), Ok(None));
            let needed = if cut < HEADER_LEN {
                HEADER_LEN as u64
            } else {
                bytes.len() as u64
            };
            assert_eq!(
                d.finish(),
                Err(DecodeError::Truncated {
                    needed,
                    available: cut as u64
                })
            );
        }
    }

    #[test]
    fn errors_are_sticky() {
        let (mut bytes, _) = stream();
        bytes[0] = 0;
        let mut d = FrameDecoder::with_max_frame_size(MAX);
        d.feed(&bytes);
        let err = d.next_frame().unwrap_err();
        let (good, _) = stream();
        d.feed(&good);
        assert_eq!(d.next_frame(), Err(err.clone()));
        assert_eq!(d.finish(), Err(err));
        assert_eq!(d.buffered_len(), 0);
    }

    #[test]
    fn error_codes_match_variants() {
        use crate::proto::framepb::FrameErrorCode;
        assert_eq!(
            DecodeError::BadMagic { found: 0 }.code(),
            FrameErrorCode::BadMagic
        );
        assert_eq!(
            DecodeError::FrameTooLarge { len: 2, max: 1 }.code(),
            FrameErrorCode::FrameTooLarge
        );
        assert_eq!(
            DecodeError::ChecksumMismatch {
                expected: 0,
                actual: 1
            }
            .code(),
            FrameErrorCode::ChecksumMismatch
        );
    }
}
