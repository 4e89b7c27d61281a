//! What a vertex produces, and the persisted cache of results by key
//! (`<state>/cache/vertices/<hex>.json`): same key, same result, on any run.

pub use imgfarm_common::farm::result::{LayerRef, VertexResult};
use imgfarm_common::oci::Digest;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Filesystem error.
    #[error("build cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Results by vertex key, one small JSON file each.
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

const MAX_ENTRY: u64 = 16 << 20;

impl ResultCache {
    /// The cache under `state/cache/vertices`.
    pub fn open(state: &Path) -> Result<Self, CacheError> {
        let dir = state.join("cache").join("vertices");
        fs::create_dir_all(&dir).map_err(|source| CacheError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// Every readable result of the cache under `state`, without creating the
    /// cache (the snapshot collector reads what records still reference).
    pub fn results_in(state: &Path) -> Vec<VertexResult> {
        let cache = Self {
            dir: state.join("cache").join("vertices"),
        };
        cache
            .keys(usize::MAX)
            .iter()
            .filter_map(|k| cache.get(k))
            .collect()
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The cached result of `key`; a missing, oversized or unreadable entry
    /// is a miss (the vertex runs again and rewrites it).
    pub fn get(&self, key: &Digest) -> Option<VertexResult> {
        let p = self.path(key);
        let meta = fs::metadata(&p).ok()?;
        if meta.len() > MAX_ENTRY {
            return None;
        }
        serde_json::from_slice(&fs::read(&p).ok()?).ok()
    }

    /// Keys of the cached results, newest entry first, at most `max` of
    /// them (a farm worker announces them to the coordinator). Files that
    /// are not `<sha256 hex>.json` are skipped; an unreadable directory is
    /// an empty cache.
    pub fn keys(&self, max: usize) -> Vec<Digest> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(std::time::SystemTime, Digest)> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let hex = name.to_str()?.strip_suffix(".json")?;
                let key: Digest = format!("sha256:{hex}").parse().ok()?;
                let mtime = e.metadata().ok()?.modified().ok()?;
                Some((mtime, key))
            })
            .collect();
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        found.truncate(max);
        found.into_iter().map(|(_, k)| k).collect()
    }

    /// Every entry with its result and last use (the file's mtime: written,
    /// or touched by [`ResultCache::touch`] when reused). Unreadable entries
    /// come with an empty result, so a collection forgets them.
    pub fn entries(&self) -> Vec<(Digest, VertexResult, std::time::SystemTime)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let hex = name.to_str()?.strip_suffix(".json")?;
                let key: Digest = format!("sha256:{hex}").parse().ok()?;
                let mtime = e.metadata().ok()?.modified().ok()?;
                let r = self.get(&key).unwrap_or_default();
                Some((key, r, mtime))
            })
            .collect()
    }

    /// Marks `key`'s entry as used now (its mtime: the LRU clock of the
    /// size-capped collection, `crate::gc`).
    pub fn touch(&self, key: &Digest) {
        if let Ok(f) = fs::File::options().write(true).open(self.path(key)) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// Forgets `key` (before the collection removes its blobs).
    pub fn remove(&self, key: &Digest) -> Result<(), CacheError> {
        let p = self.path(key);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CacheError::Io { path: p, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Record `key`'s result (temp file + rename, so readers never see half).
    pub fn put(&self, key: &Digest, r: &VertexResult) -> Result<(), CacheError> {
        let p = self.path(key);
        let io = |source| CacheError::Io {
            path: p.clone(),
            source,
        };
        let bytes = serde_json::to_vec(r).map_err(|e| io(std::io::Error::other(e)))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io)?;
        tmp.write_all(&bytes).map_err(io)?;
        tmp.persist(&p).map_err(|e| io(e.error))?;
        Ok(())
    }
}
