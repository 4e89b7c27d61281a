//! OCI content: the content-addressed store, layers, image types, OCI layout
//! and index merge (OCI image spec v1.1).
//!
//! - [`digest`]: validated `sha256:<hex>` digests.
//! - [`store`]: the content store (`<state>/blobs/sha256/<hex>`), refs, leases, GC, du.
//! - [`layer`]: layer creation (dir -> tar+gzip/zstd blob) and safe application.

pub mod digest;
pub mod layer;
pub mod store;

pub use digest::Digest;
