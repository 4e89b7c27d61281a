//! The store-wide `gc.lock`: mutators (commit, ref and lease updates) take it
//! shared, GC takes it exclusive, so GC never sweeps a blob between its
//! commit and the lease or ref that protects it. Works across processes
//! (flock(2)).

use super::StoreError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::path::Path;

/// Holds the lock until dropped.
pub(crate) type Guard = Flock<File>;

fn take(root: &Path, arg: FlockArg) -> Result<Guard, StoreError> {
    let path = root.join("gc.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io("open lock", &path, e))?;
    Flock::lock(file, arg).map_err(|(_, errno)| StoreError::io("lock", &path, errno.into()))
}

pub(crate) fn shared(root: &Path) -> Result<Guard, StoreError> {
    take(root, FlockArg::LockShared)
}

pub(crate) fn exclusive(root: &Path) -> Result<Guard, StoreError> {
    take(root, FlockArg::LockExclusive)
}
