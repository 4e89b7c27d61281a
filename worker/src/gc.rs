//! The size-capped collection of a worker's state (`imgfarm worker
//! --cache-max`, `imgfarm prune --keep-storage`): blobs, cached results
//! and snapshots, least recently used results first (BuildKit's gc
//! `keepStorage`).
//!
//! - **Last use** of a result is its cache file's mtime
//!   ([`ResultCache::touch`] on every reuse: `LocalWorker::reuse` and the
//!   farm's `cache::lookup`). No extra table, one `utimensat` per hit.
//! - **What counts**: the store's blobs plus the committed snapshots
//!   (`snapshotter::collect::usage`). The cap is split between them in
//!   proportion to their current sizes (a snapshot is its layer unpacked,
//!   so each result costs about as much in both).
//! - **Order**: [`ContentStore::plan_lru`] keeps refs (images), leases and
//!   the newest results within the blobs' share; evicted results are
//!   forgotten first (cache entry and farm input fingerprint), then their
//!   blobs are removed, then every snapshot no image or remaining result
//!   references (`snapshotter::collect`, which removes sub-uid-owned trees
//!   through `Executor::remove_tree`), then stale layer indexes.
//! - **When**: the caller guarantees no step of this process runs (the
//!   farm worker holds its job gate exclusively; `prune` is a command of
//!   its own). Other processes are covered by the store's leases and the
//!   snapshots' lease lock (the snapshot pass is skipped while one is held).

use crate::executor::Executor;
use crate::farm::cache::Fingerprints;
use crate::snapshotter::{collect, SnapshotterError};
use crate::solve::result::ResultCache;
use imgfarm_common::oci::store::{ContentStore, LruRecord};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcOutcome {
    /// Blob and snapshot bytes before.
    pub before: u64,
    /// Blob and snapshot bytes after.
    pub after: u64,
    /// Cached results forgotten.
    pub forgotten: usize,
    /// Blobs removed.
    pub blobs_removed: usize,
    /// Snapshots removed.
    pub snapshots_removed: usize,
    /// Snapshots kept.
    pub snapshots_kept: usize,
    /// Whether the snapshots were skipped (another process holds them).
    pub snapshots_busy: bool,
    /// Wall time.
    pub took: Duration,
}

/// Blob and snapshot bytes of `state`, from their accounting files.
pub fn usage(state: &Path, store: &ContentStore) -> u64 {
    let blobs = store.du().map(|u| u.total_bytes).unwrap_or(0);
    blobs + collect::usage(state).bytes
}

/// Collects `state` down to `cap` bytes (see the module docs).
pub fn collect_to(
    state: &Path,
    store: &ContentStore,
    cache: &ResultCache,
    exec: &Executor,
    cap: u64,
) -> Result<GcOutcome, String> {
    let t0 = Instant::now();
    let blobs = store.du().map_err(|e| e.to_string())?.total_bytes;
    let snaps = collect::usage(state).bytes;
    let blob_target = match blobs + snaps {
        0 => cap,
        total => (u128::from(cap) * u128::from(blobs) / u128::from(total)) as u64,
    };
    let records: Vec<LruRecord> = cache
        .entries()
        .into_iter()
        .map(|(key, r, mtime)| LruRecord {
            key,
            blobs: r.blobs(),
            last_used: mtime
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        })
        .collect();
    let none = BTreeSet::new();
    let plan = store
        .plan_lru(&none, &none, records, blob_target, Duration::ZERO)
        .map_err(|e| e.to_string())?;
    let fps = Fingerprints::new(state);
    for k in &plan.evict {
        cache.remove(k).map_err(|e| e.to_string())?;
        fps.remove(k);
    }
    let removed = store
        .remove_blobs(&plan.delete, &none)
        .map_err(|e| e.to_string())?;
    let mut out = GcOutcome {
        before: blobs + snaps,
        forgotten: plan.evict.len(),
        blobs_removed: removed.removed.len(),
        ..GcOutcome::default()
    };
    match collect::collect(state, store, exec) {
        Ok(r) => {
            out.snapshots_removed = r.removed;
            out.snapshots_kept = r.kept;
        }
        Err(SnapshotterError::Busy { .. }) => out.snapshots_busy = true,
        Err(e) => return Err(format!("collecting snapshots: {e}")),
    }
    crate::solve::layer_index::collect_indexes(store);
    out.after = usage(state, store);
    out.took = t0.elapsed();
    Ok(out)
}
