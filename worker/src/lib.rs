//! The worker: rootless executor, snapshots, emulation and the vertex solver.
//!
//! - [`executor`]: runs a build step in user, mount, pid, uts, ipc (and net) namespaces over
//!   an overlayfs snapshot, unpacks layers and removes work dirs inside a user namespace.
//! - [`snapshot`]: overlayfs snapshot descriptions (lower dirs, upper, work, merged).
//! - [`emulation`]: native platforms, binfmt_misc handlers, qemu-user-static.
//! - [`idmap`]: /etc/subuid and /etc/subgid, newuidmap/newgidmap mappings.
//! - [`userns`]: the long-lived build namespace a rootless process enters at start.
//! - [`solve`]: the vertex solver (file ops, RUN via the executor, export, result cache).
//! - [`link`]: the worker's dial-out QUIC link to a farm coordinator.
//! - [`farm`]: the farm worker (`imgfarm worker`): sessions, jobs, blob transfers.
//! - [`metrics`]: what the farm worker's `--metrics-listen` serves.

#![warn(missing_docs)]

pub mod emulation;
pub mod executor;
pub mod farm;
pub mod gc;
pub mod idmap;
pub mod link;
pub mod metrics;
pub mod snapshot;
pub mod snapshotter;
pub mod solve;
pub mod userns;
