//! Streaming blob writer: temp file in `ingest/`, hashed as written,
//! verified, fsynced and renamed into `blobs/` on commit.

use super::{lock, usage, ContentStore, Lease, StoreError};
use crate::oci::Digest;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A process-unique suffix for temp file names.
pub(crate) fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{n}-{nanos}")
}

/// Writes one blob. Implements [`std::io::Write`]; call
/// [`BlobWriter::commit`] to verify and publish it. Dropping it without
/// committing deletes the temp file.
#[derive(Debug)]
pub struct BlobWriter {
    store: ContentStore,
    file: Option<File>,
    temp: PathBuf,
    hasher: Sha256,
    written: u64,
    expected: Option<Digest>,
    size_limit: Option<u64>,
    over_limit: bool,
    lease: Option<Lease>,
}

impl BlobWriter {
    pub(super) fn create(
        store: ContentStore,
        expected: Option<Digest>,
        size_limit: Option<u64>,
    ) -> Result<Self, StoreError> {
        let temp =
            store
                .ingest_dir()
                .join(format!("{}-{}.tmp", std::process::id(), unique_suffix()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| StoreError::io("create temp file", &temp, e))?;
        Ok(Self {
            store,
            file: Some(file),
            temp,
            hasher: Sha256::new(),
            written: 0,
            expected,
            size_limit,
            over_limit: false,
            lease: None,
        })
    }

    /// Adds the committed digest to `lease` before the blob becomes visible,
    /// so a concurrent GC cannot remove it before the caller refs it.
    pub fn with_lease(mut self, lease: &Lease) -> Self {
        self.lease = Some(lease.clone());
        self
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The temp file (for error messages).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Verifies digest and size limit, fsyncs, and renames into place.
    /// Returns the digest and size. On a mismatch the temp file is deleted
    /// and nothing is stored.
    pub fn commit(mut self) -> Result<(Digest, u64), StoreError> {
        let mut file = self
            .file
            .take()
            .ok_or(StoreError::WriterState("already committed"))?;
        if self.over_limit {
            return Err(self.limit_error());
        }
        let synced = file.flush().and_then(|()| file.sync_all());
        drop(file);
        synced.map_err(|e| StoreError::io("fsync temp file", &self.temp, e))?;
        let actual = Digest::from_sha256(std::mem::take(&mut self.hasher));
        if let Some(expected) = &self.expected {
            if *expected != actual {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let size = self.written;
        let _guard = lock::shared(self.store.root())?;
        if let Some(lease) = &self.lease {
            lease.add_locked(&actual)?;
        }
        // Renaming over an existing blob is harmless (same bytes, verified
        // just now) and heals a damaged copy; readers holding the old file
        // open keep reading the old inode.
        let dest = self.store.blob_path(&actual);
        fs::set_permissions(&self.temp, fs::Permissions::from_mode(0o444))
            .map_err(|e| StoreError::io("chmod temp file", &self.temp, e))?;
        fs::rename(&self.temp, &dest)
            .map_err(|e| StoreError::io("rename blob into place", &dest, e))?;
        if let Some(dir) = dest.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        self.temp = PathBuf::new();
        usage::record_added(self.store.root(), &[(actual.clone(), size)])?;
        Ok((actual, size))
    }

    fn limit_error(&self) -> StoreError {
        StoreError::TooLarge {
            what: "blob being written".into(),
            size: self.written,
            max: self.size_limit.unwrap_or(0),
        }
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("blob writer already committed"));
        };
        if let Some(limit) = self.size_limit {
            if self.written + buf.len() as u64 > limit {
                self.over_limit = true;
                self.written += buf.len() as u64;
                return Err(io::Error::other(self.limit_error()));
            }
        }
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}
