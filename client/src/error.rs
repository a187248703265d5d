//! Typed errors of the frame codec.

use crate::proto::framepb::FrameErrorCode;

/// Why bytes received could not be decoded into a frame.
///
/// Every variant except [`DecodeError::Truncated`] means the stream can no longer be
/// trusted: the receiver sends an Error frame with [`DecodeError::code`] and closes the
/// connection. The [`FrameDecoder`](crate::FrameDecoder) keeps returning the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first four bytes of a header are not `PNTN`.
    #[error("bad magic {found:#010x} (expected \"PNTN\")")]
    BadMagic {
        /// The four bytes read, as a little-endian u32.
        found: u32,
    },
    /// The header's version byte names a protocol version this build does not speak.
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion {
        /// The version byte read.
        version: u8,
    },
    /// The header's frame type byte is not one of [`FrameType`](crate::FrameType).
    #[error("unknown frame type {frame_type}")]
    UnknownFrameType {
        /// The frame type byte read.
        frame_type: u8,
    },
    /// The header's flags are not zero (no flag is defined in version 1).
    #[error("reserved flags set: {flags:#06x}")]
    ReservedFlags {
        /// The flags read.
        flags: u16,
    },
    /// The header announces a payload larger than the limit. Nothing was allocated for it.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The payload length announced.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The payload's crc32 differs from the header's.
    #[error("payload checksum mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    ChecksumMismatch {
        /// The checksum in the header.
        expected: u32,
        /// The checksum of the payload received.
        actual: u32,
    },
    /// The stream ended inside a frame (only reported by
    /// [`FrameDecoder::finish`](crate::FrameDecoder::finish) or a one-shot decode).
    #[error("truncated frame: {available} bytes available, {needed} needed")]
    Truncated {
        /// Bytes the frame needs (header, and payload once the header is known).
        needed: u64,
        /// Bytes that were available.
        available: u64,
    },
    /// The frame was intact but its payload does not decode as its protobuf type.
    #[error("undecodable {frame_type} payload: {reason}")]
    UndecodablePayload {
        /// Name of the frame type.
        frame_type: &'static str,
        /// prost's description of the problem.
        reason: String,
    },
}

impl DecodeError {
    /// The code to put in the Error frame sent before closing the connection.
    pub fn code(&self) -> FrameErrorCode {
        match self {
            DecodeError::BadMagic { .. } => FrameErrorCode::BadMagic,
            DecodeError::UnsupportedVersion { .. } => FrameErrorCode::UnsupportedVersion,
            DecodeError::UnknownFrameType { .. } => FrameErrorCode::UnknownFrameType,
            DecodeError::ReservedFlags { .. } => FrameErrorCode::ReservedFlags,
            DecodeError::FrameTooLarge { .. } => FrameErrorCode::FrameTooLarge,
            DecodeError::ChecksumMismatch { .. } => FrameErrorCode::ChecksumMismatch,
            DecodeError::Truncated { .. } => FrameErrorCode::Unspecified,
            DecodeError::UndecodablePayload { .. } => FrameErrorCode::UndecodablePayload,
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload is larger than the limit the encoder was given.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The payload length (saturated at `u64::MAX`).
        len: u64,
        /// The configured maximum.
        max: u32,
    },
}
