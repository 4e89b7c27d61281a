//! OCI image layout (image-spec `image-layout.md`): export from the content
//! store to a directory or a tar, and import from either back into it.
//!
//! A layout is `oci-layout` (`{"imageLayoutVersion":"1.0.0"}`), `index.json`
//! (an image index whose entries name their tag in the
//! `org.opencontainers.image.ref.name` annotation) and `blobs/<alg>/<hex>`.
//!
//! - [`dir`]: `export_dir`, `import_dir`.
//! - [`archive`]: `export_tar`, `import_tar` (deterministic tar, hostile-tar safe).
//! - [`walk`]: the descriptor graph walk both use.
//! - [`resolve`]: index → the manifest for a platform.
//! - [`BlobStore`]: the narrow view of the content store this module needs.

pub mod archive;
pub mod dir;
pub mod resolve;
pub mod tar_read;
pub mod walk;

#[cfg(test)]
pub(crate) mod mem;

use crate::oci::image::document::{descriptor_digest, new_index};
use crate::oci::image::json::{self, JsonError};
use crate::oci::image::{Descriptor, Document, ImageError, ImageIndex, MAX_DOCUMENT_SIZE};
use crate::oci::Digest;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;

pub use archive::{export_tar, import_tar, TarOptions};
pub use dir::{export_dir, import_dir, ImportLimits};
pub use resolve::resolve_manifest;
pub use walk::{walk, BlobEntry};

/// The `oci-layout` file's bytes.
pub const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Annotation naming an index.json entry (image-spec `annotations.md`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An error from the content store, whatever its concrete type.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// What layout import/export needs from the content store. Implemented by
/// `oci::store::ContentStore`; every read and write verifies digests.
pub trait BlobStore {
    /// Is the blob present?
    fn contains_blob(&self, digest: &Digest) -> bool;
    /// Its size in bytes.
    fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError>;
    /// Read a whole blob of at most `max` bytes, digest verified.
    fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, StoreError>;
    /// Stream a blob; the reader fails at EOF if the digest does not match.
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + '_>, StoreError>;
    /// Store `data`, which must hash to `expected` and be at most
    /// `size_limit` bytes; returns the size written.
    fn put_blob(
        &self,
        expected: &Digest,
        size_limit: u64,
        data: &mut dyn Read,
    ) -> Result<u64, StoreError>;
}

impl BlobStore for crate::oci::store::ContentStore {
    fn contains_blob(&self, digest: &Digest) -> bool {
        self.contains(digest)
    }
    fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        Ok(self.size(digest)?)
    }
    fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, StoreError> {
        Ok(self.read_bytes(digest, max)?)
    }
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + '_>, StoreError> {
        Ok(Box::new(crate::oci::store::ContentStore::open_blob(
            self, digest,
        )?))
    }
    fn put_blob(
        &self,
        expected: &Digest,
        size_limit: u64,
        data: &mut dyn Read,
    ) -> Result<u64, StoreError> {
        if self.contains(expected) {
            // Already stored (and verified on every read): the stream is not needed.
            return Ok(self.size(expected)?);
        }
        let mut w = self.writer(Some(expected.clone()), Some(size_limit))?;
        std::io::copy(data, &mut w)?;
        let (_, size) = w.commit()?;
        Ok(size)
    }
}

/// The content store under a lease: every blob an import stores or finds
/// already present is added to the lease before it is visible, so a
/// concurrent GC cannot remove it before the caller has set its refs.
pub struct LeasedStore<'a> {
    /// The store.
    pub store: &'a crate::oci::store::ContentStore,
    /// The lease holding imported blobs.
    pub lease: &'a crate::oci::store::Lease,
}

impl BlobStore for LeasedStore<'_> {
    fn contains_blob(&self, digest: &Digest) -> bool {
        // Hold what the walk finds present, too: it may be all that keeps it.
        self.store.contains(digest) && self.lease.add(digest).is_ok()
    }
    fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        self.store.blob_size(digest)
    }
    fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, StoreError> {
        self.store.read_blob(digest, max)
    }
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + '_>, StoreError> {
        BlobStore::open_blob(self.store, digest)
    }
    fn put_blob(
        &self,
        expected: &Digest,
        size_limit: u64,
        data: &mut dyn Read,
    ) -> Result<u64, StoreError> {
        if self.store.contains(expected) {
            self.lease.add(expected)?;
            return Ok(self.store.size(expected)?);
        }
        let mut w = self
            .store
            .writer(Some(expected.clone()), Some(size_limit))?
            .with_lease(self.lease);
        std::io::copy(data, &mut w)?;
        let (_, size) = w.commit()?;
        Ok(size)
    }
}

/// An image-spec descriptor as the store's ref descriptor (for `set_ref`
/// after an import). Annotations are kept, sorted.
pub fn to_ref_descriptor(d: &Descriptor) -> Result<crate::oci::store::RefDescriptor, LayoutError> {
    let mut r = crate::oci::store::RefDescriptor::new(
        d.media_type().to_string(),
        descriptor_digest(d)?,
        d.size(),
    );
    if let Some(a) = d.annotations() {
        r.annotations = a.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    Ok(r)
}

/// The store's ref descriptor as an image-spec descriptor (for export).
pub fn from_ref_descriptor(r: &crate::oci::store::RefDescriptor) -> Descriptor {
    let mut d = Descriptor::new(
        r.media_type.as_str().into(),
        r.size,
        crate::oci::image::to_oci_digest(&r.digest),
    );
    if !r.annotations.is_empty() {
        d.set_annotations(Some(
            r.annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    d
}

/// One `index.json` entry: a root descriptor and its tag, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct LayoutRef {
    /// The `org.opencontainers.image.ref.name` value.
    pub name: Option<String>,
    /// The root (index or manifest) descriptor.
    pub descriptor: Descriptor,
}

impl LayoutRef {
    /// A tagged root.
    pub fn new(name: &str, descriptor: Descriptor) -> Self {
        Self {
            name: Some(name.to_string()),
            descriptor,
        }
    }
}

/// Errors of layout import and export.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// File-system or stream I/O.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The content store refused or failed.
    #[error("content store: {context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// The cause.
        source: StoreError,
    },
    /// A referenced blob is neither in the store nor in the layout.
    #[error("blob {digest} ({media_type}) is missing: {hint}")]
    MissingBlob {
        /// The blob.
        digest: String,
        /// Its media type.
        media_type: String,
        /// Where it was looked for.
        hint: &'static str,
    },
    /// The descriptor's size disagrees with the blob.
    #[error("blob {digest}: descriptor says {expected} bytes, content has {actual}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// From the descriptor.
        expected: u64,
        /// Found.
        actual: u64,
    },
    /// The layout is malformed.
    #[error("invalid OCI layout: {0}")]
    Invalid(String),
    /// A tar member tries to leave the layout.
    #[error("refusing tar member {path:?}: {reason}")]
    UnsafePath {
        /// The member name.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A limit was exceeded.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A tag that is not a valid `ref.name`.
    #[error("invalid tag {0:?}: use letters, digits and . _ - : @ + / (not at the start or end)")]
    BadRefName(String),
    /// The target directory is not empty.
    #[error("{0} exists and is not empty; choose a new directory for the layout")]
    TargetNotEmpty(PathBuf),
    /// An image document is invalid.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// JSON encoding failed.
    #[error(transparent)]
    Json(#[from] JsonError),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LayoutError {
    let context = context.into();
    move |source| LayoutError::Io { context, source }
}

pub(crate) fn store_err(context: impl Into<String>) -> impl FnOnce(StoreError) -> LayoutError {
    let context = context.into();
    move |source| LayoutError::Store { context, source }
}

/// Check a tag against image-spec's `ref.name` grammar:
/// `component ("/" component)*`, `component = alphanum (separator alphanum)*`,
/// separators `-._:@+` or `--`.
pub fn validate_ref_name(name: &str) -> Result<(), LayoutError> {
    let bad = || LayoutError::BadRefName(name.chars().take(200).collect());
    if name.is_empty() || name.len() > 255 {
        return Err(bad());
    }
    for component in name.split('/') {
        let b = component.as_bytes();
        let alnum = |c: &u8| c.is_ascii_alphanumeric();
        if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
            return Err(bad());
        }
        let mut prev_sep = false;
        for (i, c) in b.iter().enumerate() {
            if alnum(c) {
                prev_sep = false;
            } else if b"-._:@+".contains(c) {
                // `--` is the only two-character separator.
                if prev_sep && !(*c == b'-' && b[i - 1] == b'-') {
                    return Err(bad());
                }
                prev_sep = true;
            } else {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// Build `index.json` bytes (compact Go JSON, as containerd and BuildKit
/// write it) for the given refs, tags in the ref.name annotation.
pub fn index_json(refs: &[LayoutRef]) -> Result<Vec<u8>, LayoutError> {
    let mut entries = Vec::with_capacity(refs.len());
    for r in refs {
        descriptor_digest(&r.descriptor)?;
        let mut d = r.descriptor.clone();
        if let Some(name) = &r.name {
            validate_ref_name(name)?;
            let mut ann: HashMap<String, String> = d.annotations().clone().unwrap_or_default();
            ann.insert(REF_NAME.to_string(), name.clone());
            d.set_annotations(Some(ann));
        }
        entries.push(d);
    }
    Ok(json::to_vec(&new_index(entries, &BTreeMap::new()))?)
}

/// Parse `index.json` (bounded) into refs, validating every digest.
pub fn parse_index_json(bytes: &[u8]) -> Result<Vec<LayoutRef>, LayoutError> {
    if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(LayoutError::TooLarge {
            what: "index.json".into(),
            limit: MAX_DOCUMENT_SIZE,
        });
    }
    // index.json's own mediaType is optional; it is always an index.
    let index: ImageIndex = match Document::parse(bytes, Some(crate::oci::media_types::OCI_INDEX))?
    {
        Document::Index(i) => *i,
        Document::Manifest(_) => {
            return Err(LayoutError::Invalid(
                "index.json is not an image index".into(),
            ))
        }
    };
    Ok(index
        .manifests()
        .iter()
        .map(|d| LayoutRef {
            name: d
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .cloned(),
            descriptor: d.clone(),
        })
        .collect())
}

/// Check the `oci-layout` file: JSON with `imageLayoutVersion` 1.x.
pub fn check_oci_layout(bytes: &[u8]) -> Result<(), LayoutError> {
    #[derive(serde::Deserialize)]
    struct L {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let l: L = serde_json::from_slice(bytes)
        .map_err(|e| LayoutError::Invalid(format!("oci-layout file does not parse: {e}")))?;
    if !l.version.starts_with("1.") {
        return Err(LayoutError::Invalid(format!(
            "imageLayoutVersion {:?} is not supported (want 1.x)",
            l.version
        )));
    }
    Ok(())
}

/// `blobs/<alg>/<hex>` for a digest (relative, always safe).
pub fn blob_rel_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// A small two-platform image for unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::mem::MemBlobs;
    use super::LayoutRef;
    use crate::oci::image::config::{History, ImageConfig};
    use crate::oci::image::document::{descriptor_for, manifest_to_json, new_manifest};
    use crate::oci::index::merge;
    use crate::oci::media_types::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};
    use crate::oci::Digest;
    use crate::platform::Platform;
    use std::collections::BTreeMap;
    use std::io::Write;

    pub(crate) fn layer_tar(file: &str, content: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, file, content).unwrap();
        b.into_inner().unwrap()
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// refs: latest (index), amd64, arm64 (manifests).
    pub(crate) fn sample_image(store: &MemBlobs) -> Vec<LayoutRef> {
        let mut per_platform = Vec::new();
        for p in [Platform::linux_amd64(), Platform::linux_arm64()] {
            let tar = layer_tar("hello.txt", format!("hello {p}\n").as_bytes());
            let gz = gzip(&tar);
            store.put(&gz);
            let mut cfg = ImageConfig::scratch(&p);
            cfg.push_layer(Digest::sha256_of(&tar), History::default());
            let cfg = cfg.to_json().unwrap();
            store.put(&cfg);
            let m = new_manifest(
                descriptor_for(OCI_CONFIG, &cfg),
                vec![descriptor_for(OCI_LAYER_GZIP, &gz)],
                &BTreeMap::new(),
            );
            let m = manifest_to_json(&m).unwrap();
            store.put(&m);
            per_platform.push((p, descriptor_for(OCI_MANIFEST, &m)));
        }
        let idx = merge(&per_platform, &BTreeMap::new()).unwrap();
        let idx = crate::oci::image::document::index_to_json(&idx).unwrap();
        store.put(&idx);
        vec![
            LayoutRef::new("latest", descriptor_for(OCI_INDEX, &idx)),
            LayoutRef::new("amd64", per_platform[0].1.clone()),
            LayoutRef::new("arm64", per_platform[1].1.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names() {
        for ok in ["latest", "v1.0", "a--b", "foo/bar:1", "x@y+z", "1"] {
            assert!(validate_ref_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a/", "/a", "a b", "a/../b", "ä"] {
            assert!(validate_ref_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oci_layout_file() {
        assert!(check_oci_layout(OCI_LAYOUT_CONTENT).is_ok());
        assert!(check_oci_layout(br#"{"imageLayoutVersion":"2.0.0"}"#).is_err());
        assert!(check_oci_layout(b"nope").is_err());
    }
}
