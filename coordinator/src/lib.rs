//! The coordinator: scheduling (pure, in [`scheduler`]), the worker link
//! ([`link`]: in-process for the local build, QUIC for the farm) and the
//! loop joining them ([`drive`]).

pub mod drive;
pub mod link;
pub mod scheduler;
