//! The worker's own cache, as the farm sees it: the summary it announces
//! (keys whose result is complete in its store) and the rule for serving a
//! job from it.
//!
//! A key alone does not pin a result's inputs: a vertex downstream of an
//! `ADD URL` without a checksum, or of a step that ran again elsewhere and
//! produced other layers, has the same key with different input results.
//! So a result is served only for the same inputs: next to each result the
//! worker keeps a fingerprint of the input results it was computed from
//! (`<state>/farm/inputs/<hex>`), and a job whose inputs differ runs again.

use crate::solve::result::{ResultCache, VertexResult};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::CacheSummary;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Most keys announced (newest first); keeps the hello far below the
/// control frame limit (a key is about 71 bytes).
pub const MAX_SUMMARY_KEYS: usize = 20_000;

/// Whether every blob `r` names is in `store` (and its inline files exist).
pub fn blobs_present(store: &ContentStore, r: &VertexResult) -> bool {
    r.is_complete(|d| store.contains(d))
}

/// The summary announced in `Hello` and heartbeats: the keys of cached
/// results whose blobs are all present, their count, and the bytes of the
/// distinct blobs they name.
pub fn summary(store: &ContentStore, cache: &ResultCache) -> CacheSummary {
    let mut keys = Vec::new();
    let mut blobs: BTreeSet<Digest> = BTreeSet::new();
    for key in cache.keys(MAX_SUMMARY_KEYS) {
        let Some(r) = cache.get(&key) else {
            continue;
        };
        if !blobs_present(store, &r) {
            continue;
        }
        blobs.extend(r.blobs());
        keys.push(key);
    }
    let bytes = blobs.iter().filter_map(|d| store.size(d).ok()).sum();
    CacheSummary {
        bytes,
        entries: keys.len() as u64,
        keys,
    }
}

/// A digest over the input results of a job, in key order (the order they
/// were sent in does not matter).
pub fn fingerprint(input_results: &[(Digest, VertexResult)]) -> Digest {
    let mut sorted: Vec<&(Digest, VertexResult)> = input_results.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    Digest::sha256_of(&imgfarm_common::farm::encode(&sorted))
}

/// The input fingerprints of results this worker computed for the farm.
#[derive(Debug, Clone)]
pub struct Fingerprints {
    dir: PathBuf,
}

impl Fingerprints {
    /// Under `<state>/farm/inputs`.
    pub fn new(state: &Path) -> Self {
        Self {
            dir: state.join("farm").join("inputs"),
        }
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(key.hex())
    }

    /// The fingerprint recorded for `key`, if any.
    pub fn get(&self, key: &Digest) -> Option<Digest> {
        let text = std::fs::read_to_string(self.path(key)).ok()?;
        text.trim().parse().ok()
    }

    /// Forgets `key`'s fingerprint (its result was collected).
    pub fn remove(&self, key: &Digest) {
        let _ = std::fs::remove_file(self.path(key));
    }

    /// Records `fp` for `key` (temp file + rename).
    pub fn put(&self, key: &Digest, fp: &Digest) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::fs::write(tmp.path(), fp.as_str())?;
        tmp.persist(self.path(key)).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The cached result of `key` if it may serve a job with inputs `fp`: it
/// exists, was computed from the same input results, and every blob it names
/// is in the store.
pub fn lookup(
    store: &ContentStore,
    cache: &ResultCache,
    fps: &Fingerprints,
    key: &Digest,
    fp: &Digest,
) -> Option<VertexResult> {
    if fps.get(key).as_ref() != Some(fp) {
        return None;
    }
    let r = cache.get(key)?;
    let hit = blobs_present(store, &r);
    if hit {
        cache.touch(key);
    }
    hit.then_some(r)
}
