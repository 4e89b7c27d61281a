//! Disk usage accounting: `meta/usage.json` maps each blob to its size and
//! is updated on every commit and removal, so `du` never walks the tree.
//! [`ContentStore::rebuild_usage`] recomputes it from disk (repair).

use super::{write_atomic, ContentStore, StoreError};
use crate::oci::Digest;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

/// What the store holds, from its own accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// Sum of blob sizes, in bytes.
    pub total_bytes: u64,
    /// Number of blobs.
    pub blob_count: u64,
    /// Size of each blob.
    pub blobs: BTreeMap<Digest, u64>,
}

#[derive(Default, Serialize, Deserialize)]
struct UsageFile {
    blobs: BTreeMap<Digest, u64>,
}

fn usage_path(root: &Path) -> PathBuf {
    root.join("meta").join("usage.json")
}

fn with_usage<T>(
    root: &Path,
    f: impl FnOnce(&mut UsageFile) -> (bool, T),
) -> Result<T, StoreError> {
    let lock_path = root.join("meta").join("usage.lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::io("open lock", &lock_path, e))?;
    let _guard = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| StoreError::io("lock", &lock_path, errno.into()))?;
    let path = usage_path(root);
    let mut usage = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: format!("{e} (run rebuild_usage to repair)"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => UsageFile::default(),
        Err(e) => return Err(StoreError::io("read usage", &path, e)),
    };
    let (changed, out) = f(&mut usage);
    if changed {
        let body = serde_json::to_vec(&usage).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &body)?;
    }
    Ok(out)
}

pub(super) fn record_added(root: &Path, blobs: &[(Digest, u64)]) -> Result<(), StoreError> {
    with_usage(root, |u| {
        let mut changed = false;
        for (d, size) in blobs {
            changed |= u.blobs.insert(d.clone(), *size) != Some(*size);
        }
        (changed, ())
    })
}

pub(super) fn record_removed(root: &Path, blobs: &[Digest]) -> Result<(), StoreError> {
    with_usage(root, |u| {
        let mut changed = false;
        for d in blobs {
            changed |= u.blobs.remove(d).is_some();
        }
        (changed, ())
    })
}

impl ContentStore {
    /// Totals and per-blob sizes, from the store's accounting file.
    pub fn du(&self) -> Result<DiskUsage, StoreError> {
        with_usage(self.root(), |u| {
            let usage = DiskUsage {
                total_bytes: u.blobs.values().sum(),
                blob_count: u.blobs.len() as u64,
                blobs: u.blobs.clone(),
            };
            (false, usage)
        })
    }

    /// Recomputes the accounting by listing `blobs/sha256/` (for repair
    /// after a crash between a rename and its accounting update).
    pub fn rebuild_usage(&self) -> Result<DiskUsage, StoreError> {
        let blobs = self.scan_blobs()?;
        with_usage(self.root(), |u| {
            u.blobs = blobs.clone();
            (true, ())
        })?;
        self.du()
    }

    /// Every blob file on disk with its size (a directory walk; GC and
    /// repair only).
    pub(super) fn scan_blobs(&self) -> Result<BTreeMap<Digest, u64>, StoreError> {
        let dir = self.root().join("blobs").join("sha256");
        let mut out = BTreeMap::new();
        let entries = fs::read_dir(&dir).map_err(|e| StoreError::io("list blobs", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list blobs", &dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            let meta = entry
                .metadata()
                .map_err(|e| StoreError::io("stat blob", &entry.path(), e))?;
            if meta.is_file() {
                out.insert(digest, meta.len());
            }
        }
        Ok(out)
    }
}
