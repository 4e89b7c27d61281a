//! OCI image layers (image spec "Image Layer Filesystem Changeset"):
//! creating a tar changeset from a directory, and applying one safely.
//!
//! - [`create`]: directory (plain, or an overlay upper dir) → tar →
//!   gzip/zstd → content store, in one pass computing both the blob digest
//!   and the uncompressed `diff_id`.
//! - [`apply`]: tar (gzip/zstd/plain, auto-detected) → a root directory,
//!   with whiteouts, and never writing outside the root.
//! - [`chain`]: a stored layer opened decompressed, a chain written as one tar.

pub mod apply;
pub mod chain;
mod compress;
pub mod create;
pub mod decompress;
mod filter;
mod fsops;
pub mod idmap;
mod tar_read;
mod tar_write;
pub mod whiteout;
mod xattrs;

pub use apply::{apply, apply_all, ApplyOptions, ApplyReport, DevicePolicy};
pub use chain::{append_link_verbatim, open_layer, write_flat_tar, FlatTarError, OpenLayerError};
pub use create::{create, create_to_writer, CreateOptions, SourceKind};
pub use idmap::{IdMap, IdRange};

use crate::oci::store::StoreError;
use crate::oci::Digest;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// OCI media type of an uncompressed layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI media type of a gzip layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of a zstd layer.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (RFC 1952); written as one member per chunk when
    /// [`CreateOptions::gzip_chunk`] is set (a valid multi-member stream).
    #[default]
    Gzip,
    /// zstd (RFC 8878).
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::None => MEDIA_TYPE_TAR,
            Self::Gzip => MEDIA_TYPE_TAR_GZIP,
            Self::Zstd => MEDIA_TYPE_TAR_ZSTD,
        }
    }
}

/// A layer written to the content store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Digest of the (compressed) blob: the manifest's layer descriptor.
    pub digest: Digest,
    /// Digest of the uncompressed tar: the config's `rootfs.diff_ids` entry.
    pub diff_id: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
    /// The layer's OCI media type.
    pub media_type: String,
}

/// A layer of a chain as manifests name it: the blob in the content store
/// and its uncompressed `diff_id` (image spec "Image Manifest" `layers` and
/// "Image Configuration" `rootfs.diff_ids`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// Blob digest (manifest layer descriptor).
    pub digest: Digest,
    /// Uncompressed digest (config `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Blob size.
    pub size: u64,
    /// Blob media type.
    pub media_type: String,
}

impl From<LayerInfo> for LayerRef {
    fn from(l: LayerInfo) -> Self {
        Self {
            digest: l.digest,
            diff_id: l.diff_id,
            size: l.size,
            media_type: l.media_type,
        }
    }
}

/// What went wrong creating or applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A filesystem operation on the source or target failed.
    #[error("layer: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved (relative to the layer root where applicable).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The content store refused the blob.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The archive is malformed or exceeds a limit.
    #[error("layer archive rejected: {0}")]
    BadArchive(String),
    /// An entry would write outside the root or link to something unsafe.
    #[error("layer entry {path:?} rejected: {reason}")]
    Unsafe {
        /// The entry's path as found in the archive.
        path: String,
        /// Why.
        reason: String,
    },
    /// [`ApplyOptions::only`] keeps a hardlink whose target it skipped;
    /// unpack again without the filter.
    #[error("layer entry {path:?} is a hardlink to {target:?}, outside the paths being unpacked; unpack the whole layer instead")]
    OutsideFilter {
        /// The hardlink's path in the archive.
        path: String,
        /// Its target.
        target: String,
    },
    /// A source file changed while it was being archived.
    #[error("layer source {0} changed while being read; retry once the directory is quiescent")]
    SourceChanged(PathBuf),
}

impl LayerError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
