//! The content store. CONTRACT ONLY: the OCI store/layers work replaces the
//! bodies; other modules code against these signatures.
//!
//! - `ContentStore::open(root)`: blobs under `root/blobs/sha256/<hex>`.
//! - `store.contains(&digest) -> bool`
//! - `store.blob_path(&digest) -> PathBuf`
//! - `store.writer(expected: Option<Digest>, size_limit: Option<u64>) -> Result<BlobWriter>`;
//!   `BlobWriter: std::io::Write`, `.commit() -> Result<(Digest, u64)>` verifies
//!   the digest and renames into place.
//! - `store.put_bytes(&[u8]) -> Result<Digest>`
//! - `store.read_bytes(&digest, max: u64) -> Result<Vec<u8>>` (verified)
//! - `store.open_blob(&digest) -> Result<impl Read>` (verifies at EOF)
