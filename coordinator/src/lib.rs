//! The coordinator: scheduling (pure, in [`scheduler`]), the worker link
//! ([`link`]: in-process for the local build, QUIC for the farm), the loop
//! joining them ([`drive`]) and the farm's QUIC endpoint ([`server`]).

pub mod drive;
pub mod link;
pub mod scheduler;
pub mod server;
pub mod service;
