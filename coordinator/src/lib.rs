//! The coordinator: scheduling (pure, in [`scheduler`]), the engine that
//! owns builds, workers and results (sans-I/O, in [`engine`]), and its two
//! shells: the farm's QUIC [`service`] (with [`server`], the endpoint) and
//! the [`local`] build's in-process loop.
//! [`metrics`] is what `--metrics-listen` serves.

pub mod engine;
pub mod local;
pub mod metrics;
pub mod scheduler;
pub mod server;
pub mod service;
