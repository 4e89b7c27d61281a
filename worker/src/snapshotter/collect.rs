//! The snapshot collector: what `imgfarm prune` runs after the store's GC.
//!
//! A snapshot is referenced when its chain id is a prefix of the layer chain
//! of an image the store names (every manifest reachable from a ref, through
//! indexes) or of a result in the build cache (`<state>/cache/vertices`);
//! a `flat-<id>` or `copy-<id>` snapshot when `<id>` is. Counting those references at
//! collection time gives containerd's rule (a snapshot lives while an image
//! or a lease holds it) without a reference count to keep in step. Running
//! builds and workers hold the lease lock shared, so collecting waits for
//! none and removes nothing they use: it refuses with
//! [`SnapshotterError::Busy`] instead. Everything else in the snapshot dir
//! (unreferenced snapshots, active dirs left by a crash, stale locks, the
//! layout of older versions) is removed.

use super::{chain::chain_ids, lease_file, remove_children, root_of, SnapshotterError};
use crate::executor::Executor;
use imgfarm_common::oci::image::{descriptor_digest, Document, ImageConfig, MAX_DOCUMENT_SIZE};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeSet;
use std::path::Path;

/// What a collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CollectReport {
    /// Snapshots removed.
    pub removed: usize,
    /// Snapshots kept.
    pub kept: usize,
    /// Bytes of file content removed (as [`usage`] counts them).
    pub freed_bytes: u64,
}

/// Snapshot space: committed snapshots and the bytes of their files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotUsage {
    /// Committed snapshots (flat ones included).
    pub count: usize,
    /// Bytes of regular files in them (recorded at commit).
    pub bytes: u64,
}

/// Deepest index → index → manifest nesting followed.
const MAX_DEPTH: usize = 4;

/// Committed snapshot names (`<hex>` or `flat-<hex>`) in the snapshot dir.
fn committed(root: &Path) -> Vec<(String, u64)> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.path().join("fs").is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let size = std::fs::read_to_string(e.path().join("size"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            Some((name, size))
        })
        .collect()
}

/// Snapshot space under `state` (no tree walk: the sizes recorded at commit).
pub fn usage(state: &Path) -> SnapshotUsage {
    let all = committed(&root_of(state));
    SnapshotUsage {
        count: all.len(),
        bytes: all.iter().map(|(_, s)| s).sum(),
    }
}

/// The chain ids (hex) every image and cache record of `state` references.
pub fn referenced(state: &Path, store: &ContentStore) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |diff_ids: &[Digest]| {
        for id in chain_ids(diff_ids) {
            out.insert(id.hex().to_string());
        }
    };
    if let Ok(refs) = store.list_refs() {
        for (_, d) in refs {
            let mut seen = BTreeSet::new();
            image_chains(store, &d.digest, 0, &mut seen, &mut add);
        }
    }
    for r in crate::solve::result::ResultCache::results_in(state) {
        let diff_ids: Vec<Digest> = r.chain.iter().map(|l| l.diff_id.clone()).collect();
        add(&diff_ids);
    }
    out
}

/// Calls `add` with the diff ids of every manifest reachable from `digest`.
fn image_chains(
    store: &ContentStore,
    digest: &Digest,
    depth: usize,
    seen: &mut BTreeSet<Digest>,
    add: &mut impl FnMut(&[Digest]),
) {
    if depth > MAX_DEPTH || !seen.insert(digest.clone()) {
        return;
    }
    let Ok(bytes) = store.read_bytes(digest, MAX_DOCUMENT_SIZE) else {
        return;
    };
    match Document::parse(&bytes, None) {
        Ok(Document::Index(ix)) => {
            for m in ix.manifests() {
                if let Ok(d) = descriptor_digest(m) {
                    image_chains(store, &d, depth + 1, seen, add);
                }
            }
        }
        Ok(Document::Manifest(m)) => {
            let config = descriptor_digest(m.config())
                .ok()
                .and_then(|c| store.read_bytes(&c, MAX_DOCUMENT_SIZE).ok())
                .and_then(|b| ImageConfig::from_json(&b).ok());
            if let Some(c) = config {
                add(&c.rootfs.diff_ids);
            }
        }
        Err(_) => {}
    }
}

/// Removes every snapshot of `state` that no image or cache record
/// references, and whatever else is not a committed snapshot. Refuses while
/// a build or worker holds a lease.
pub fn collect(
    state: &Path,
    store: &ContentStore,
    exec: &Executor,
) -> Result<CollectReport, SnapshotterError> {
    let root = root_of(state);
    if !root.is_dir() {
        return Ok(CollectReport::default());
    }
    let _excl = Flock::lock(lease_file(&root)?, FlockArg::LockExclusiveNonblock)
        .map_err(|_| SnapshotterError::Busy { root: root.clone() })?;
    let live = referenced(state, store);
    let sizes: std::collections::BTreeMap<String, u64> = committed(&root).into_iter().collect();
    let mut report = CollectReport::default();
    remove_children(exec, &root.join("active"))?;
    remove_children(exec, &root.join("locks"))?;
    let rd = std::fs::read_dir(&root).map_err(super::io("reading", &root))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if matches!(
            name.as_str(),
            "active" | "locks" | "lease.lock" | "overlay-works"
        ) {
            continue;
        }
        let id = name
            .strip_prefix("flat-")
            .or_else(|| name.strip_prefix("copy-"))
            .unwrap_or(&name);
        if sizes.contains_key(&name) && live.contains(id) {
            report.kept += 1;
            continue;
        }
        exec.remove_tree(&e.path())
            .map_err(|err| SnapshotterError::Remove {
                path: e.path(),
                reason: err.to_string(),
            })?;
        if let Some(s) = sizes.get(&name) {
            report.removed += 1;
            report.freed_bytes += s;
        }
    }
    Ok(report)
}
