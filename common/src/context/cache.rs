//! The persisted digest cache of a build context, as BuildKit's
//! content-hash cache keeps one per local source: each regular file's
//! sha256 is remembered across builds, keyed by its path relative to the
//! context root and checked against what `lstat` says now, so an unchanged
//! context is verified by `lstat` alone and only new or changed files are
//! read again.
//!
//! A record is trusted only while all of these still match the file:
//! - path (relative to the root), inode, size, mode bits;
//! - `mtime` (ns): what editors, git and `touch` change;
//! - `ctime` (ns): set by the kernel on every write, chmod, rename or link,
//!   and never settable from user space, so a rewrite that restores the old
//!   `mtime` (`touch -r`, `rsync -t`, `tar x`, `cp -p` over the file) is
//!   still seen. git's index keeps it for the same reason.
//!
//! The device number is not part of the key: it is not stable across
//! reboots or remounts on several filesystems (overlayfs, btrfs subvolumes,
//! NFS), which would turn every reboot into a full re-hash, and the cache is
//! already one file per context directory; a different filesystem mounted
//! at the same path would also need equal inode, size and nanosecond ctime
//! to be mistaken.
//!
//! A file whose `ctime` lies within [`RACY_MARGIN_NS`] of the moment the
//! cache was loaded is hashed but not persisted ("racily clean", as git
//! says): file timestamps come from a coarse clock, so a write landing in
//! the same tick as the one before our read would leave every stamp field
//! equal. It is persisted by the next build, once it is old enough.
//!
//! The file is a [`crate::sealed`] file (magic, bincode body from
//! [`crate::proto::codec`], sha256 of both). A file that is missing, larger
//! than [`MAX_CACHE_FILE`], truncated, of another version, for another root
//! or failing its checksum is a miss (an empty cache), never an error and
//! never a wrong digest. It is replaced atomically (temporary file +
//! rename), only when its content would change.

use crate::oci::Digest;
use crate::proto::codec::{decode_bounded, encode_bounded};
use crate::sealed;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// First bytes of a cache file; the last digit is the format version.
const MAGIC: &[u8; 16] = b"imgfarm-ctxdg-1\n";

/// Largest cache file read or written (about a million records).
pub const MAX_CACHE_FILE: usize = 256 << 20;

/// Files changed this recently (ctime, relative to the load) are not
/// persisted; see the module docs. 2 s also covers filesystems with
/// whole-second (or FAT's two-second) timestamps.
pub const RACY_MARGIN_NS: i128 = 2_000_000_000;

/// The `lstat` fields a record is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
}

/// One remembered file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    mode: u32,
    /// sha256 of the content, raw.
    sha256: [u8; 32],
}

impl Record {
    fn new(stamp: Stamp, digest: &Digest) -> Option<Self> {
        if digest.algorithm() != "sha256" {
            return None;
        }
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(digest.hex(), &mut sha256).ok()?;
        Some(Self {
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            ctime_ns: stamp.ctime_ns,
            ino: stamp.ino,
            mode: stamp.mode,
            sha256,
        })
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
            mode: self.mode,
        }
    }

    fn digest(&self) -> Digest {
        Digest::from_sha256_bytes(&self.sha256)
    }
}

/// The encoded body.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    /// The context directory the records belong to (raw path bytes).
    root: Vec<u8>,
    /// Sorted by path.
    records: Vec<(String, Record)>,
}

/// Why a cache file was not used (it is then a miss, nothing worse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// No cache file yet.
    Missing,
    /// Records loaded.
    Loaded(usize),
    /// The file exists but is not usable; the text says why.
    Ignored(String),
}

/// What [`DigestCache::save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    /// Nothing changed since the load: the file was left alone.
    Unchanged,
    /// The file was replaced with this many records.
    Written(usize),
    /// The records would exceed [`MAX_CACHE_FILE`]; nothing was written
    /// (and an older file was removed, as it no longer matches).
    TooLarge(usize),
}

/// Why the cache file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Creating, writing or renaming the file failed.
    #[error("writing the build context digest cache {path}: {source}")]
    Io {
        /// The cache file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The digests remembered for one context directory, plus those seen by
/// this build.
#[derive(Debug)]
pub struct DigestCache {
    file: PathBuf,
    root: PathBuf,
    /// Loaded records, each marked once a lookup matched it (no allocation
    /// on the hot path: an unchanged context hits every record).
    loaded: HashMap<String, (Record, AtomicBool)>,
    outcome: LoadOutcome,
    /// Records at or after this ctime are not persisted.
    trusted_before_ns: i128,
    /// Records computed by this build that differ from (or are missing in)
    /// `loaded`.
    fresh: Mutex<HashMap<String, Record>>,
}

fn ns_since_epoch(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Encodes the body of a cache file (records sorted by path, so equal
/// records give equal bytes).
fn encode(root: &Path, records: &HashMap<String, Record>) -> Option<Vec<u8>> {
    let mut sorted: Vec<(String, Record)> = records
        .iter()
        .map(|(p, r)| (p.clone(), r.clone()))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let body = CacheFile {
        root: root.as_os_str().as_bytes().to_vec(),
        records: sorted,
    };
    encode_bounded::<_, MAX_CACHE_FILE>(&body)
        .ok()
        .filter(|b| b.len() + MAGIC.len() + 32 <= MAX_CACHE_FILE)
}

/// Decodes the body of a cache file for `root`; the error says why it is
/// unusable.
fn decode(body: &[u8], root: &Path) -> Result<HashMap<String, Record>, String> {
    let file: CacheFile = decode_bounded::<_, MAX_CACHE_FILE>(body).map_err(|e| e.to_string())?;
    if file.root != root.as_os_str().as_bytes() {
        return Err("written for another context directory".into());
    }
    Ok(file.records.into_iter().collect())
}

impl DigestCache {
    /// The cache file of context directory `root` inside `dir`
    /// (`<state>/cache/context`): named by the sha256 of the path, so give
    /// the canonical path.
    pub fn file_for(dir: &Path, root: &Path) -> PathBuf {
        let name = Digest::sha256_of(root.as_os_str().as_bytes());
        dir.join(format!("{}.bin", name.hex()))
    }

    /// Loads the cache of context directory `root` (canonical) from `dir`.
    /// Never fails: an unusable file is an empty cache, and
    /// [`Self::load_outcome`] says why. `now` is the time hashing starts
    /// (files changed within [`RACY_MARGIN_NS`] of it are not persisted).
    pub fn load(dir: &Path, root: &Path, now: SystemTime) -> Self {
        let file = Self::file_for(dir, root);
        let (loaded, outcome) = match sealed::read(&file, MAGIC, MAX_CACHE_FILE) {
            Ok(None) => (HashMap::new(), LoadOutcome::Missing),
            Ok(Some(bytes)) => match decode(&bytes, root) {
                Ok(records) => {
                    let n = records.len();
                    let marked = records
                        .into_iter()
                        .map(|(p, r)| (p, (r, AtomicBool::new(false))))
                        .collect();
                    (marked, LoadOutcome::Loaded(n))
                }
                Err(why) => (HashMap::new(), LoadOutcome::Ignored(why)),
            },
            Err(why) => (HashMap::new(), LoadOutcome::Ignored(why)),
        };
        if let LoadOutcome::Ignored(why) = &outcome {
            tracing::debug!(file = %file.display(), "context digest cache ignored: {why}");
        }
        Self {
            file,
            root: root.to_path_buf(),
            loaded,
            outcome,
            trusted_before_ns: ns_since_epoch(now) - RACY_MARGIN_NS,
            fresh: Mutex::new(HashMap::new()),
        }
    }

    /// What [`Self::load`] found.
    pub fn load_outcome(&self) -> &LoadOutcome {
        &self.outcome
    }

    /// The cache file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.fresh
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The remembered digest of the file at context path `path`, if its
    /// record matches `stamp` exactly.
    pub(crate) fn lookup(&self, path: &str, stamp: Stamp) -> Option<Digest> {
        let (r, hit) = self.loaded.get(path).filter(|(r, _)| r.stamp() == stamp)?;
        hit.store(true, Ordering::Relaxed);
        Some(r.digest())
    }

    /// Remembers the digest just computed (or found in memory) for `path`.
    pub(crate) fn record(&self, path: &str, stamp: Stamp, digest: &Digest) {
        if stamp.ctime_ns >= self.trusted_before_ns {
            return;
        }
        let Some(r) = Record::new(stamp, digest) else {
            return;
        };
        if let Some((old, hit)) = self.loaded.get(path) {
            if *old == r {
                hit.store(true, Ordering::Relaxed);
                return;
            }
        }
        self.fresh().insert(path.to_string(), r);
    }

    /// Writes the records back if anything changed: those seen by this
    /// build, plus loaded ones not looked at whose file is still there and
    /// unchanged (a build that copies part of the context keeps the rest).
    /// Records of files that are gone or changed are dropped.
    pub fn save(&self) -> Result<SaveOutcome, CacheError> {
        let fresh = std::mem::take(&mut *self.fresh());
        let gone: HashSet<&str> = self
            .loaded
            .iter()
            .filter(|(path, (r, hit))| {
                !fresh.contains_key(*path)
                    && !hit.load(Ordering::Relaxed)
                    && !still_there(&self.root, path, r)
            })
            .map(|(path, _)| path.as_str())
            .collect();
        if fresh.is_empty() && gone.is_empty() {
            return Ok(SaveOutcome::Unchanged);
        }
        let mut records = fresh;
        for (path, (r, _)) in &self.loaded {
            if !gone.contains(path.as_str()) && !records.contains_key(path) {
                records.insert(path.clone(), r.clone());
            }
        }
        let io_err = |source| CacheError::Io {
            path: self.file.clone(),
            source,
        };
        let Some(bytes) = encode(&self.root, &records) else {
            match std::fs::remove_file(&self.file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(e)),
            }
            return Ok(SaveOutcome::TooLarge(records.len()));
        };
        sealed::write(&self.file, MAGIC, &bytes).map_err(io_err)?;
        Ok(SaveOutcome::Written(records.len()))
    }
}

/// Is the regular file at `root/path` still the one `r` describes? Only
/// decides whether an unvisited record is kept: a lookup checks the stamp
/// again against the walk's own `lstat`.
fn still_there(root: &Path, path: &str, r: &Record) -> bool {
    let Ok(m) = std::fs::symlink_metadata(root.join(path)) else {
        return false;
    };
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    m.file_type().is_file()
        && r.stamp()
            == Stamp {
                size: m.size(),
                mtime_ns: ns(m.mtime(), m.mtime_nsec()),
                ctime_ns: ns(m.ctime(), m.ctime_nsec()),
                ino: m.ino(),
                mode: m.mode() & 0o7777,
            }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(n: u64) -> Stamp {
        Stamp {
            size: n,
            mtime_ns: 1,
            ctime_ns: 2,
            ino: n,
            mode: 0o644,
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_damage() {
        let root = Path::new("/ctx");
        let mut records = HashMap::new();
        for i in 0..10u64 {
            let r = Record::new(stamp(i), &Digest::sha256_of(&i.to_be_bytes())).unwrap();
            records.insert(format!("d/f{i}"), r);
        }
        let body = encode(root, &records).unwrap();
        assert_eq!(decode(&body, root).unwrap(), records);
        assert_eq!(
            records["d/f3"].digest(),
            Digest::sha256_of(&3u64.to_be_bytes())
        );
        // Same records, same bytes: nothing depends on hash map order.
        assert_eq!(encode(root, &records.clone()).unwrap(), body);

        let other = decode(&body, Path::new("/elsewhere")).unwrap_err();
        assert!(other.contains("another context"), "{other}");
        for cut in [0, 5, body.len() / 2, body.len() - 1] {
            assert!(decode(&body[..cut], root).is_err(), "cut at {cut}");
        }
        // Damage inside the body is caught by the seal's checksum (see
        // crate::sealed); the magic names this version.
        let file = sealed::seal(MAGIC, &body);
        let mut bad = file.clone();
        bad[MAGIC.len() + 40] ^= 0x10;
        assert!(sealed::unseal(bad, MAGIC).is_err());
        assert!(sealed::unseal(file, b"imgfarm-ctxdg-2\n").is_err());
    }

    #[test]
    fn racy_files_are_not_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + std::time::Duration::from_secs(100);
        let cache = DigestCache::load(dir.path(), Path::new("/ctx"), now);
        assert_eq!(cache.load_outcome(), &LoadOutcome::Missing);
        let d = Digest::sha256_of(b"x");
        let old = Stamp {
            ctime_ns: 97_000_000_000,
            ..stamp(1)
        };
        let racy = Stamp {
            ctime_ns: 99_000_000_000,
            ..stamp(2)
        };
        cache.record("old", old, &d);
        cache.record("racy", racy, &d);
        assert_eq!(cache.save().unwrap(), SaveOutcome::Written(1));
        let again = DigestCache::load(dir.path(), Path::new("/ctx"), now);
        assert_eq!(again.load_outcome(), &LoadOutcome::Loaded(1));
        assert_eq!(again.lookup("old", old), Some(d.clone()));
        assert_eq!(again.lookup("racy", racy), None);
    }
}
