//! "Every blob in this store verifies": an independent check of an imgfarm content store
//! (`<root>/blobs/sha256/<hex>`, `<root>/ingest/<pid>-<suffix>.tmp`) for the fault suite.
//!
//! It reads the files directly and hashes them with `sha2`, without the store code under
//! test, so a store that wrote a partial or wrong blob under a digest's name is caught.

use anyhow::Context;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What [`check_store`] found in one content store.
#[derive(Debug, Default, Clone)]
pub struct StoreCheck {
    /// The store's root.
    pub root: PathBuf,
    /// Blobs whose bytes hash to their name.
    pub verified: usize,
    /// `(file, actual sha256)` of blobs whose bytes do not match their name.
    pub corrupt: Vec<(PathBuf, String)>,
    /// Files in `blobs/sha256/` that are not named by a sha256 hex digest.
    pub stray: Vec<PathBuf>,
    /// Temp files in `ingest/` whose writer (the pid in the name) is dead.
    pub dead_ingest: Vec<PathBuf>,
    /// Temp files in `ingest/` of live writers: uploads in progress, or leaked by a live
    /// process (a store of an idle farm has none; see [`StoreCheck::assert_idle`]).
    pub live_ingest: Vec<PathBuf>,
}

impl StoreCheck {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.stray.is_empty() && self.dead_ingest.is_empty()
    }

    /// Panics with a readable list of the problems unless [`StoreCheck::is_clean`].
    pub fn assert_clean(&self, what: &str) {
        assert!(
            self.is_clean(),
            "{what}: store {} is not clean ({} verified):\n  corrupt: {:?}\n  stray: {:?}\n  \
             partial uploads of dead writers: {:?}",
            self.root.display(),
            self.verified,
            self.corrupt,
            self.stray,
            self.dead_ingest
        );
    }

    /// [`StoreCheck::assert_clean`], and no upload in progress either: for a store whose
    /// processes are idle, where a live writer's temp file is a leak.
    pub fn assert_idle(&self, what: &str) {
        self.assert_clean(what);
        assert!(
            self.live_ingest.is_empty(),
            "{what}: store {} is idle but holds partial uploads of live writers: {:?}",
            self.root.display(),
            self.live_ingest
        );
    }
}

/// Hashes every blob under `root/blobs/sha256` and lists dead writers' temp files in
/// `root/ingest`. A store that does not exist yet is clean and empty.
pub fn check_store(root: &Path) -> anyhow::Result<StoreCheck> {
    let mut out = StoreCheck {
        root: root.to_path_buf(),
        ..StoreCheck::default()
    };
    let blobs = root.join("blobs/sha256");
    if let Ok(dir) = std::fs::read_dir(&blobs) {
        for e in dir {
            let e = e.with_context(|| format!("reading {}", blobs.display()))?;
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_sha256_hex(&name) || !e.file_type()?.is_file() {
                out.stray.push(path);
                continue;
            }
            let actual = sha256_file(&path)?;
            if actual == name {
                out.verified += 1;
            } else {
                out.corrupt.push((path, actual));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(root.join("ingest")) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_suffix(".tmp")
                .and_then(|s| s.split_once('-'))
                .and_then(|(p, _)| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if Path::new("/proc").join(pid.to_string()).exists() {
                    out.live_ingest.push(e.path());
                } else {
                    out.dead_ingest.push(e.path());
                }
            }
        }
    }
    Ok(out)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The lowercase hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_corrupt_stray_and_dead_partial_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(dir.path().join("ingest")).unwrap();
        let good = hex::encode(Sha256::digest(b"hello"));
        std::fs::write(blobs.join(&good), b"hello").unwrap();
        assert!(check_store(dir.path()).unwrap().is_clean());

        let bad = hex::encode(Sha256::digest(b"hello world"));
        std::fs::write(blobs.join(&bad), b"hello wor").unwrap();
        std::fs::write(blobs.join("notes"), b"x").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        std::fs::write(dir.path().join(format!("ingest/{dead}-a.tmp")), b"").unwrap();
        std::fs::write(dir.path().join(format!("ingest/{me}-b.tmp")), b"").unwrap();
        let c = check_store(dir.path()).unwrap();
        assert_eq!(c.verified, 1);
        assert_eq!(c.corrupt.len(), 1, "{c:?}");
        assert_eq!(c.stray.len(), 1, "{c:?}");
        assert_eq!(
            c.dead_ingest.len(),
            1,
            "a live writer's temp file is fine: {c:?}"
        );
        assert_eq!(c.live_ingest.len(), 1, "{c:?}");
        assert!(!c.is_clean());
    }
}
