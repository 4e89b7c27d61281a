//! Leases (containerd's model): an operation (a pull, a build step) holds a
//! lease while it writes blobs that nothing refs yet, so GC keeps them.
//!
//! A lease is a file `leases/<id>.json` with its digests and an optional
//! expiry (unix seconds). It is removed when the last clone of the
//! [`Lease`] is dropped; if the process dies, GC ignores it once expired
//! (leases without expiry from dead processes are kept: give long
//! operations a generous expiry rather than none).

use super::{lock, write_atomic, ContentStore, StoreError};
use crate::oci::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A handle on a lease. Clones share it; the lease ends when the last clone
/// is dropped (or [`Lease::release`] is called).
#[derive(Debug, Clone)]
pub struct Lease {
    inner: Arc<LeaseInner>,
}

#[derive(Debug)]
struct LeaseInner {
    id: String,
    path: PathBuf,
    expires_at: Option<u64>,
    digests: Mutex<BTreeSet<Digest>>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct LeaseFile {
    pub(super) expires_at: Option<u64>,
    pub(super) digests: BTreeSet<Digest>,
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ContentStore {
    /// Starts a lease. With `ttl`, GC stops honouring it after that long
    /// even if the holder never drops it.
    pub fn lease(&self, ttl: Option<Duration>) -> Result<Lease, StoreError> {
        let id = format!("{}-{}", std::process::id(), super::writer::unique_suffix());
        let path = self.root().join("leases").join(format!("{id}.json"));
        let lease = Lease {
            inner: Arc::new(LeaseInner {
                id,
                path,
                expires_at: ttl.map(|t| now_secs().saturating_add(t.as_secs().max(1))),
                digests: Mutex::new(BTreeSet::new()),
            }),
        };
        let _guard = lock::shared(self.root())?;
        lease.save(&BTreeSet::new())?;
        Ok(lease)
    }
}

impl Lease {
    /// The lease's id (its file name without `.json`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Holds `digest` alive for the lease's lifetime.
    pub fn add(&self, digest: &Digest) -> Result<(), StoreError> {
        let root = self
            .inner
            .path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        let _guard = lock::shared(root)?;
        self.add_locked(digest)
    }

    /// [`Lease::add`] for callers already holding the store lock.
    pub(super) fn add_locked(&self, digest: &Digest) -> Result<(), StoreError> {
        let mut set = self
            .inner
            .digests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if set.insert(digest.clone()) {
            self.save(&set)?;
        }
        Ok(())
    }

    /// The digests held.
    pub fn digests(&self) -> Vec<Digest> {
        self.inner
            .digests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Ends the lease now (dropping the last clone does the same).
    pub fn release(self) {
        drop(self);
    }

    fn save(&self, set: &BTreeSet<Digest>) -> Result<(), StoreError> {
        let body = serde_json::to_vec(&LeaseFile {
            expires_at: self.inner.expires_at,
            digests: set.clone(),
        })
        .map_err(|e| StoreError::Corrupt {
            path: self.inner.path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.inner.path, &body)
    }
}

impl Drop for LeaseInner {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Digests held by unexpired leases; expired lease files are deleted.
/// Unreadable lease files are kept and hold nothing (GC stays safe: it
/// never deletes on a guess, it just cannot honour what it cannot read).
pub(super) fn live_digests(root: &Path) -> Result<BTreeSet<Digest>, StoreError> {
    let dir = root.join("leases");
    let now = now_secs();
    let mut out = BTreeSet::new();
    let entries = fs::read_dir(&dir).map_err(|e| StoreError::io("list leases", &dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list leases", &dir, e))?;
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(file) = serde_json::from_slice::<LeaseFile>(&bytes) else {
            tracing::warn!(path = %path.display(), "unreadable lease file ignored");
            continue;
        };
        if file.expires_at.is_some_and(|t| t <= now) {
            let _ = fs::remove_file(&path);
            continue;
        }
        out.extend(file.digests);
    }
    Ok(out)
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Lease>();
    is::<ContentStore>();
}
