//! The content-addressed store (containerd's "content store" model, OCI
//! image spec "Content Descriptors": a blob is named by the digest of its
//! bytes, and a reader MUST verify that digest).
//!
//! On disk, under `root`:
//!
//! ```text
//! blobs/sha256/<hex>     committed blobs, read-only (0444)
//! ingest/                temp files of writers in progress
//! refs/<key>.json        name -> descriptor ([`refs`])
//! leases/<id>.json       digests held alive by an operation ([`leases`])
//! children/<hex>.json    explicit parent -> children links ([`gc`])
//! meta/usage.json        per-blob sizes, kept on commit and GC ([`usage`])
//! gc.lock                shared by mutators, exclusive for GC
//! ```
//!
//! - [`ContentStore::writer`] streams to `ingest/`, hashes as it goes, and on
//!   [`BlobWriter::commit`] verifies digest and size, fsyncs and renames into
//!   place. A concurrent writer of the same digest is harmless: each commit
//!   renames its own verified temp file over the same name atomically.
//! - [`ContentStore::open_blob`] verifies lazily, at end of file.
//! - GC ([`ContentStore::gc`]) keeps what refs, unexpired leases and child
//!   links reach, and removes the rest. A size-capped collection that
//!   evicts the least recently used records first is
//!   [`ContentStore::plan_lru`] then [`ContentStore::remove_blobs`]
//!   (`lru.rs`).

mod error;
pub mod gc;
pub mod leases;
mod lock;
mod lru;
mod reader;
pub mod refs;
mod stale;
pub mod usage;
mod writer;

pub use error::StoreError;
pub use gc::GcReport;
pub use leases::Lease;
pub use lru::{LruPlan, LruRecord};
pub use reader::BlobReader;
pub use refs::RefDescriptor;
pub use usage::DiskUsage;
pub(crate) use writer::unique_suffix;
pub use writer::BlobWriter;

use crate::oci::Digest;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A content store rooted at one directory. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct ContentStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
}

const SUBDIRS: [&str; 6] = [
    "blobs/sha256",
    "ingest",
    "refs",
    "leases",
    "children",
    "meta",
];

impl ContentStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for sub in SUBDIRS {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        }
        let stale = stale::remove_dead_writers(&root.join("ingest"));
        if stale > 0 {
            tracing::debug!(stale, "removed temp files of writers that died mid-write");
        }
        Ok(Self {
            inner: Arc::new(Inner { root }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the blob for `digest` lives (whether or not it exists).
    /// The digest's hex is validated on construction, so this never escapes
    /// `blobs/`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    /// Whether the blob is present (not verified; reads verify).
    pub fn contains(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(digest))
            .map(|m| m.is_file())
            .unwrap_or(false)
    }

    /// The blob's size in bytes.
    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let path = self.blob_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(m.len()),
            Ok(_) => Err(StoreError::NotFound(digest.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(digest.clone()))
            }
            Err(e) => Err(StoreError::io("stat blob", &path, e)),
        }
    }

    /// Starts writing a blob. With `expected`, [`BlobWriter::commit`] fails
    /// with [`StoreError::DigestMismatch`] unless the bytes hash to it; with
    /// `size_limit`, writing more than that many bytes fails.
    pub fn writer(
        &self,
        expected: Option<Digest>,
        size_limit: Option<u64>,
    ) -> Result<BlobWriter, StoreError> {
        if let Some(d) = &expected {
            check_algorithm(d)?;
        }
        BlobWriter::create(self.clone(), expected, size_limit)
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::sha256_of(bytes);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut w = self.writer(Some(digest.clone()), Some(bytes.len() as u64))?;
        w.write_all(bytes)
            .map_err(|e| StoreError::io("write blob", w.temp_path(), e))?;
        w.commit()?;
        Ok(digest)
    }

    /// Reads a whole blob into memory, verifying its digest. Fails with
    /// [`StoreError::TooLarge`] if it is bigger than `max` bytes.
    pub fn read_bytes(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, StoreError> {
        let size = self.size(digest)?;
        if size > max {
            return Err(StoreError::TooLarge {
                what: format!("blob {digest}"),
                size,
                max,
            });
        }
        let mut reader = self.open_blob(digest)?;
        let mut out = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut out)
            .map_err(|e| StoreError::from_read(e, digest, &self.blob_path(digest)))?;
        Ok(out)
    }

    /// Opens a blob for streaming. The reader verifies the digest when it
    /// reaches end of file and returns an `InvalidData` error (wrapping
    /// [`StoreError::DigestMismatch`]) instead of EOF if the content is wrong.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader, StoreError> {
        check_algorithm(digest)?;
        let path = self.blob_path(digest);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(digest.clone()))
            }
            Err(e) => return Err(StoreError::io("open blob", &path, e)),
        };
        Ok(BlobReader::new(file, digest.clone()))
    }

    /// Removes one blob (and its child links). Returns whether it existed.
    /// Prefer [`ContentStore::gc`], which knows what is still referenced.
    pub fn delete_blob(&self, digest: &Digest) -> Result<bool, StoreError> {
        let _guard = lock::shared(self.root())?;
        self.delete_blob_locked(digest)
    }

    fn delete_blob_locked(&self, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.blob_path(digest);
        let existed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(StoreError::io("remove blob", &path, e)),
        };
        let links = self.children_path(digest);
        if let Err(e) = fs::remove_file(&links) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(StoreError::io("remove child links", &links, e));
            }
        }
        usage::record_removed(self.root(), std::slice::from_ref(digest))?;
        Ok(existed)
    }

    fn children_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .root
            .join("children")
            .join(format!("{}.json", digest.hex()))
    }

    fn ingest_dir(&self) -> PathBuf {
        self.inner.root.join("ingest")
    }
}

/// The store only files sha256 blobs (what OCI producers use by default).
fn check_algorithm(d: &Digest) -> Result<(), StoreError> {
    if d.algorithm() == "sha256" {
        Ok(())
    } else {
        Err(StoreError::UnsupportedAlgorithm(d.clone()))
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same dir, fsync,
/// rename), for the store's small JSON metadata files.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        writer::unique_suffix()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io("write metadata", path, e));
    }
    Ok(())
}
