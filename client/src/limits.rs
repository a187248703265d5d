//! Per-connection limits. This crate defines them and the decoder enforces the frame size;
//! the server enforces the others.

use std::time::Duration;

/// Limits one connection runs under. The accepting side announces its values in
/// `HandshakeAck`; a peer that exceeds one gets an Error frame and the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted in one frame, in bytes (the 24-byte header not included).
    /// A header announcing more is rejected before any of the payload is buffered.
    ///
    /// Default: 16 MiB (16 777 216 bytes).
    pub max_frame_size_bytes: u32,
    /// Most Request frames one connection may have sent without having received their
    /// Response or Error frame yet. The next request beyond it gets an Error frame with
    /// code `TooManyInFlight` and the connection is closed.
    ///
    /// Default: 1024.
    pub max_in_flight_requests: u32,
    /// A connection on which no complete frame arrives for this long gets an Error frame
    /// with code `IdleTimeout` and is closed. Clients that stay idle send Ping frames.
    ///
    /// Default: 60 s.
    pub idle_timeout: Duration,
    /// Time the connecting side has to send its Handshake frame after connecting.
    ///
    /// Default: 10 s.
    pub handshake_timeout: Duration,
}

impl Limits {
    /// Default for [`Limits::max_frame_size_bytes`]: 16 MiB.
    pub const DEFAULT_MAX_FRAME_SIZE_BYTES: u32 = 16 * 1024 * 1024;
    /// Default for [`Limits::max_in_flight_requests`]: 1024.
    pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: u32 = 1024;
    /// Default for [`Limits::idle_timeout`]: 60 s.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default for [`Limits::handshake_timeout`]: 10 s.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size_bytes: Self::DEFAULT_MAX_FRAME_SIZE_BYTES,
            max_in_flight_requests: Self::DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let l = Limits::default();
        assert_eq!(l.max_frame_size_bytes, 16 << 20);
        assert_eq!(l.max_in_flight_requests, 1024);
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!(l.handshake_timeout, Duration::from_secs(10));
    }
}
