//! Errors of the content store.

use crate::oci::Digest;
use std::path::{Path, PathBuf};

/// What went wrong in the content store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("content store: {op} {path}: {source}")]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes did not hash to the expected digest; nothing was stored.
    #[error("digest mismatch: expected {expected}, got {actual}; the content was discarded (re-fetch it from its source)")]
    DigestMismatch {
        /// What the caller (or the blob's name) promised.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// More bytes than allowed.
    #[error("{what} is {size} bytes, over the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size (or the bytes seen so far).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// No such blob.
    #[error("blob {0} not found in the content store (pull or build it first)")]
    NotFound(Digest),
    /// Only sha256 blobs are stored.
    #[error("digest {0}: only sha256 blobs can be stored")]
    UnsupportedAlgorithm(Digest),
    /// A ref name that cannot be stored.
    #[error("invalid ref name {0:?}: want 1..=4096 bytes without control characters")]
    InvalidRefName(String),
    /// A metadata file that does not parse.
    #[error("content store: corrupt metadata {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// The writer was already committed or failed earlier.
    #[error("blob writer is unusable: {0}")]
    WriterState(&'static str),
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Unwraps a store error that a [`super::BlobReader`] tunnelled through
    /// `io::Error`, or wraps a plain read error.
    pub(crate) fn from_read(e: std::io::Error, _digest: &Digest, path: &Path) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<StoreError>()) {
            if let Some(inner) = e.into_inner() {
                if let Ok(store) = inner.downcast::<StoreError>() {
                    return *store;
                }
            }
            return Self::Corrupt {
                path: path.to_path_buf(),
                reason: "unreadable".into(),
            };
        }
        Self::io("read blob", path, e)
    }
}
