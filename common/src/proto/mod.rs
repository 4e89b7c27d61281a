//! The coordinator/worker/client wire protocol: serde messages in bincode
//! frames over QUIC streams.
//!
//! Layout of every QUIC bidirectional stream (the dialer opens it):
//!
//! 1. a fixed 8-byte [`preamble`] in each direction (`IMGF` + protocol
//!    version, u32 big-endian), checked before any bincode is parsed, so two
//!    versions whose messages no longer agree still refuse each other clearly;
//! 2. one [`StreamOpen`] frame saying what the stream is for (control session
//!    or one blob transfer);
//! 3. length-prefixed frames ([`codec`]): u32 big-endian length, then that
//!    many bytes of bincode 2 (standard config). The length is checked against
//!    the frame limit before anything is allocated;
//! 4. blob streams then carry the raw blob bytes ([`blob`]), verified against
//!    the header's digest and size while they are written to the store.
//!
//! The pure parts (frame decoder, preamble and hello checks) are tested
//! without sockets; the async helpers work on any tokio reader/writer, which
//! is what quinn's streams are.

pub mod blob;
pub mod codec;
pub mod handshake;
pub mod io;
pub mod messages;

pub use codec::{
    decode_message, encode_frame, encoded_len, CodecError, FrameDecoder, MAX_CONTROL_FRAME,
};
pub use handshake::{
    check_hello, check_preamble, preamble, HandshakeError, MAGIC, PREAMBLE_LEN, PROTOCOL_VERSION,
};
pub use messages::*;

/// ALPN protocol id the QUIC endpoints agree on (TLS 1.3, RFC 7301).
pub const ALPN: &[u8] = b"imgfarm";

/// QUIC application close codes, so each side can tell why it was dropped.
pub mod close_code {
    /// Orderly end.
    pub const NORMAL: u32 = 0;
    /// Protocol versions differ; the reason text names both.
    pub const VERSION_MISMATCH: u32 = 1;
    /// Role or identity refused (wrong certificate role, hello mismatch).
    pub const REFUSED: u32 = 2;
    /// A frame declared a length above the limit.
    pub const FRAME_TOO_LARGE: u32 = 3;
    /// A frame did not decode, or a message came out of order.
    pub const PROTOCOL_ERROR: u32 = 4;
    /// The certificate carries no valid imgfarm role.
    pub const NO_ROLE: u32 = 5;
}

/// Flow-control windows tuned for bulk blob transfer (quinn's defaults,
/// about 1.25 MB per stream, cap loopback throughput). Used by both ends.
///
/// The receive windows stay below the UDP receive buffer the kernel grants
/// (twice [`SOCKET_BUFFER`] capped at `net.core.rmem_max`; 8 MiB with the
/// common 4 MiB cap): a receiver slower than its sender (loopback, fast LAN)
/// then cannot be sent more than its socket holds, instead of losing
/// datagrams to buffer overflow. Measured on loopback (bench/quic_transfer.md):
/// 32/64 MiB windows lost 2-4% of the packets and now and then made quinn's
/// black-hole detector drop the MTU to 1200; 4/6 MiB lose none and are as
/// fast. 6 MiB still covers the bandwidth-delay product of 1 Gbit/s at 50 ms.
pub mod windows {
    /// Per-stream receive window (bytes in flight on one blob stream).
    pub const STREAM_RECEIVE: u32 = 4 * 1024 * 1024;
    /// Connection-wide receive window (all streams of one peer together).
    pub const CONNECTION_RECEIVE: u32 = 6 * 1024 * 1024;
    /// Send window (bytes buffered and unacknowledged per connection): more
    /// than the peer's receive window is never in flight.
    pub const SEND: u64 = 2 * CONNECTION_RECEIVE as u64;
    /// UDP socket buffer sizes requested (the kernel may cap them).
    pub const SOCKET_BUFFER: usize = 8 * 1024 * 1024;
    /// Largest UDP payload MTU discovery may reach. Probing starts from the
    /// safe 1200 bytes; on loopback (MTU 65536) it climbs to about 65495
    /// (an IPv4 datagram's limit), on Ethernet it stops near 1452.
    pub const MAX_UDP_PAYLOAD: u16 = 65_527;
    /// How long quinn waits before probing the path MTU again after it
    /// judged a burst of losses a black hole and fell back to 1200 bytes.
    /// quinn's 60 s default makes one false alarm (congestion losses of large
    /// packets look alike) cost a minute of small packets; a real black hole
    /// costs one lost probe per interval.
    pub const BLACK_HOLE_COOLDOWN_SECS: u64 = 10;
}
