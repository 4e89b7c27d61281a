//! The worker: rootless executor, snapshots, emulation and the vertex solver.

pub mod link;
