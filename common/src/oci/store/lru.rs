//! Size-capped collection with least-recently-used eviction (BuildKit's gc
//! `keepStorage`, buildx `prune --keep-storage`).
//!
//! The store does not know what a "result" is; its owner (the coordinator's
//! journal, a worker's result cache) passes its records: a key, when it was
//! last used, and the blobs it names. [`ContentStore::plan_lru`] then
//! decides, without deleting anything:
//!
//! 1. **Pinned**: refs, unexpired leases, the blobs the caller pins (what
//!    queued and running builds need) and the records it pins are kept
//!    whatever their size, with everything they reach (manifest children).
//! 2. **Kept**: the other records, newest first, while the store stays
//!    within `target` bytes; from the first one that would cross it, that
//!    record and every older one is **evicted** (strict LRU). A record
//!    naming a blob the store lacks is evicted at once (a record must never
//!    point at a missing blob).
//! 3. **Deleted**: every stored blob not kept, except *young orphans*: a
//!    blob no record names that was written or confirmed less than `young`
//!    ago (an upload whose build or result has not been recorded yet).
//!
//! The owner then forgets the evicted records *first* and removes the blobs
//! with [`ContentStore::remove_blobs`], re-checking what became live in
//! between (see the coordinator's `service/gc.rs`).

use super::{leases, lock, usage, ContentStore, StoreError};
use crate::oci::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::{Duration, SystemTime};

/// One record of the store's owner (a cached vertex result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LruRecord {
    /// The record's key.
    pub key: Digest,
    /// When it was last used (any monotonic unit: ms since the epoch).
    pub last_used: u64,
    /// The blobs it names (their children are followed).
    pub blobs: Vec<Digest>,
}

/// What a size-capped collection would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LruPlan {
    /// Records to forget (before their blobs go), oldest first.
    pub evict: Vec<Digest>,
    /// Blobs to remove.
    pub delete: Vec<Digest>,
    /// Bytes of the blobs that stay.
    pub kept_bytes: u64,
    /// Bytes of pinned blobs (kept whatever the target).
    pub pinned_bytes: u64,
    /// Bytes `delete` frees.
    pub freed_bytes: u64,
}

impl ContentStore {
    /// Every blob reachable from `roots` through child links and manifest
    /// descriptors (see [`super::gc`]).
    pub fn closure(
        &self,
        roots: impl IntoIterator<Item = Digest>,
    ) -> Result<BTreeSet<Digest>, StoreError> {
        let mut marked = BTreeSet::new();
        let mut pending: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = pending.pop() {
            if marked.contains(&d) {
                continue;
            }
            pending.extend(self.children(&d)?);
            marked.insert(d);
        }
        Ok(marked)
    }

    /// Plans a collection down to `target` bytes (see the module docs).
    pub fn plan_lru(
        &self,
        pinned_blobs: &BTreeSet<Digest>,
        pinned_keys: &BTreeSet<Digest>,
        mut records: Vec<LruRecord>,
        target: u64,
        young: Duration,
    ) -> Result<LruPlan, StoreError> {
        let on_disk = self.scan_blobs_with_mtime()?;
        let size = |d: &Digest| on_disk.get(d).map_or(0, |(s, _)| *s);
        let mut roots: Vec<Digest> = self
            .list_refs()?
            .into_iter()
            .map(|(_, d)| d.digest)
            .collect();
        roots.extend(leases::live_digests(self.root())?);
        roots.extend(pinned_blobs.iter().cloned());
        for r in records.iter().filter(|r| pinned_keys.contains(&r.key)) {
            roots.extend(r.blobs.iter().cloned());
        }
        let mut keep = self.closure(roots)?;
        let mut plan = LruPlan {
            pinned_bytes: keep.iter().map(size).sum(),
            ..LruPlan::default()
        };
        let mut kept_bytes = plan.pinned_bytes;
        let mut claimed: BTreeSet<Digest> = BTreeSet::new();
        records.retain(|r| !pinned_keys.contains(&r.key));
        records.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
        let mut full = false;
        for r in &records {
            let reach = self.closure(r.blobs.iter().cloned())?;
            let complete = r.blobs.iter().all(|d| on_disk.contains_key(d));
            let added: u64 = reach.iter().filter(|d| !keep.contains(*d)).map(size).sum();
            if complete && !full && kept_bytes + added <= target {
                kept_bytes += added;
                keep.extend(reach);
            } else {
                full |= complete;
                plan.evict.push(r.key.clone());
                claimed.extend(reach);
            }
        }
        plan.evict.reverse();
        let now = SystemTime::now();
        for (d, (s, mtime)) in &on_disk {
            if keep.contains(d) {
                continue;
            }
            let young_orphan =
                !claimed.contains(d) && now.duration_since(*mtime).map_or(true, |age| age < young);
            if !young_orphan {
                plan.delete.push(d.clone());
                plan.freed_bytes += s;
            }
        }
        plan.kept_bytes = on_disk.values().map(|(s, _)| s).sum::<u64>() - plan.freed_bytes;
        Ok(plan)
    }

    /// Removes `blobs` except those in `spare`, under the exclusive GC
    /// lock, keeping the accounting in step. Returns what went.
    pub fn remove_blobs(
        &self,
        blobs: &[Digest],
        spare: &BTreeSet<Digest>,
    ) -> Result<super::GcReport, StoreError> {
        let _guard = lock::exclusive(self.root())?;
        let mut report = super::GcReport::default();
        for d in blobs.iter().filter(|d| !spare.contains(*d)) {
            let path = self.blob_path(d);
            let size = match fs::symlink_metadata(&path) {
                Ok(m) => m.len(),
                Err(_) => continue,
            };
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("remove blob", &path, e)),
            }
            let _ = fs::remove_file(self.children_path(d));
            report.freed_bytes += size;
            report.removed.push(d.clone());
        }
        report.kept = spare.len() as u64;
        usage::record_removed(self.root(), &report.removed)?;
        Ok(report)
    }

    /// Marks `digest` as just confirmed present (its mtime is now), so a
    /// collection treats it as a young orphan until a record names it. Used
    /// when an upload is skipped because the blob is already there.
    pub fn touch(&self, digest: &Digest) {
        let path = self.blob_path(digest);
        if let Ok(f) = fs::File::options()
            .append(true)
            .open(&path)
            .or_else(|_| fs::File::open(&path))
        {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Every blob file with its size and modification time.
    fn scan_blobs_with_mtime(&self) -> Result<BTreeMap<Digest, (u64, SystemTime)>, StoreError> {
        let dir = self.root().join("blobs").join("sha256");
        let mut out = BTreeMap::new();
        let entries = fs::read_dir(&dir).map_err(|e| StoreError::io("list blobs", &dir, e))?;
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.insert(digest, (meta.len(), mtime));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(store: &ContentStore, name: &str, bytes: usize, last_used: u64) -> LruRecord {
        let d = store.put_bytes(&vec![name.as_bytes()[0]; bytes]).unwrap();
        LruRecord {
            key: Digest::sha256_of(name.as_bytes()),
            last_used,
            blobs: vec![d],
        }
    }

    #[test]
    fn oldest_records_go_first_down_to_the_target_and_pins_stay() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let a = rec(&s, "a", 1000, 1);
        let b = rec(&s, "b", 1000, 2);
        let c = rec(&s, "c", 1000, 3);
        let p = rec(&s, "p", 1000, 0);
        let orphan = s.put_bytes(b"orphan").unwrap();
        let pins: BTreeSet<Digest> = [p.key.clone()].into();
        let all = vec![a.clone(), b.clone(), c.clone(), p.clone()];
        // p is pinned (1000) + newest c (1000) fits in 2500; b would not.
        let plan = s
            .plan_lru(
                &BTreeSet::new(),
                &pins,
                all.clone(),
                2500,
                Duration::from_secs(600),
            )
            .unwrap();
        assert_eq!(plan.evict, vec![a.key.clone(), b.key.clone()]);
        let mut want = vec![a.blobs[0].clone(), b.blobs[0].clone()];
        want.sort();
        assert_eq!(plan.delete, want, "the young orphan stays");
        assert_eq!(plan.pinned_bytes, 1000);
        assert_eq!(plan.freed_bytes, 2000);
        // With no grace, the orphan goes too; a target of 0 keeps only pins.
        let plan = s
            .plan_lru(&BTreeSet::new(), &pins, all, 0, Duration::ZERO)
            .unwrap();
        assert_eq!(plan.evict.len(), 3);
        assert!(plan.delete.contains(&orphan));
        assert!(!plan.delete.contains(&p.blobs[0]));
        let report = s
            .remove_blobs(&plan.delete, &[c.blobs[0].clone()].into())
            .unwrap();
        assert!(s.contains(&c.blobs[0]), "spared");
        assert!(!s.contains(&a.blobs[0]) && !s.contains(&orphan));
        assert_eq!(report.removed.len(), plan.delete.len() - 1);
        assert_eq!(s.du().unwrap().blob_count, 2);
    }

    #[test]
    fn a_record_with_a_missing_blob_is_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let mut a = rec(&s, "a", 10, 5);
        a.blobs.push(Digest::sha256_of(b"gone"));
        let plan = s
            .plan_lru(
                &BTreeSet::new(),
                &BTreeSet::new(),
                vec![a.clone()],
                1 << 30,
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(plan.evict, vec![a.key]);
    }
}
