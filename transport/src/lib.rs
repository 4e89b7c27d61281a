//! What both ends of a farm connection share, so the coordinator and the
//! worker are siblings over `imgfarm-common` and this crate and never
//! depend on each other:
//! - [`quic`]: endpoint and transport tuning, the UDP socket and its runtime
//!   (one definition, so both ends are tuned alike);
//! - [`streams`]: QUIC streams as the chunked blob reader and writer of
//!   `imgfarm_common::proto::blob`;
//! - [`runner`]: the boundary between a scheduler and whatever runs a vertex.

pub mod quic;
pub mod runner;
pub mod streams;
