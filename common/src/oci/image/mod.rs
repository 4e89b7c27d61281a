//! Image types: config, manifest and index (OCI image spec v1.1) and their
//! Docker schema 2 equivalents, read into one view and written as BuildKit
//! writes them.
//!
//! - [`config`]: the image config ([`ImageConfig`]), Docker extensions included.
//! - [`document`]: parse manifests/indexes of either family ([`Document`]),
//!   build and serialise OCI ones byte-for-byte like BuildKit.
//! - [`select`]: pick the manifest for a platform from an index, per
//!   containerd's `platforms.Only` rules.
//! - [`json`]: canonical JSON as Go's `encoding/json` writes it.
//! - [`read`]: a stored manifest's config and layer chain ([`read_manifest`]).
//!
//! Manifest, index, descriptor and platform are the `oci_spec` types,
//! re-exported here so callers need not depend on `oci-spec` themselves.

pub mod config;
pub mod document;
pub mod json;
pub mod read;
pub mod select;

pub use config::{History, ImageConfig, RootFs, RuntimeConfig, MAX_DOCUMENT_SIZE};
pub use document::{
    descriptor_digest, descriptor_for, from_oci_platform, index_to_json, manifest_to_json,
    new_index, new_manifest, to_oci_digest, to_oci_platform, Document,
};
pub use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
pub use read::{read_manifest, ReadManifestError};
pub use select::{select_manifests, PlatformRequest};

/// Errors reading, building or selecting image documents.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A document is larger than allowed.
    #[error("{what} is {size} bytes, over the {limit}-byte limit; refusing it (a real one is far smaller)")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// JSON that does not parse as the expected document.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was being read.
        what: &'static str,
        /// serde's message.
        reason: String,
    },
    /// A Docker schema 1 manifest.
    #[error("this is a Docker image manifest v2 schema 1, which is obsolete and not supported; re-push the image with a current docker or skopeo (schema 2 or OCI)")]
    Schema1,
    /// Structurally valid JSON that breaks a spec rule.
    #[error("invalid image document: {0}")]
    Invalid(String),
    /// No index entry runs on the requested platform.
    #[error("no manifest for platform {wanted} in the index; available: {}", if available.is_empty() { "none (no entry declares a platform)".to_string() } else { available.join(", ") })]
    NoMatchingPlatform {
        /// The platform asked for.
        wanted: String,
        /// The platforms the index offers, in index order.
        available: Vec<String>,
    },
    /// JSON encoding failed.
    #[error(transparent)]
    Json(#[from] json::JsonError),
}

/// Refuse documents over [`MAX_DOCUMENT_SIZE`].
pub fn check_size(what: &'static str, size: u64) -> Result<(), ImageError> {
    if size > MAX_DOCUMENT_SIZE {
        return Err(ImageError::TooLarge {
            what,
            size,
            limit: MAX_DOCUMENT_SIZE,
        });
    }
    Ok(())
}
