//! OCI content: the content-addressed store, layers, image types, OCI layout
//! and index merge (OCI image spec v1.1).
//!
//! - [`digest`]: validated `sha256:<hex>` digests.
//! - [`store`]: the content store (`<state>/blobs/sha256/<hex>`), refs, leases, GC, du.
//! - [`layer`]: layer creation (dir -> tar+gzip/zstd blob) and safe application.
//! - [`media_types`]: OCI and Docker media types and their classification.
//! - [`image`]: image config, manifest and index types, platform selection.
//! - [`index`]: merge per-platform manifests into one image index.
//! - [`layout`]: OCI image layout import/export (directory and tar).
//! - [`docker_archive`]: `docker save`/`docker load` archives.

pub mod digest;
pub mod docker_archive;
pub mod image;
pub mod index;
pub mod layer;
pub mod layout;
pub mod media_types;
pub mod store;

pub use digest::Digest;
