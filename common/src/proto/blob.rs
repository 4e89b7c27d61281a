//! Raw blob bytes on a blob stream, after its [`super::BlobHeader`].
//!
//! The receiver copies exactly `size` bytes, refuses a byte more, and lets
//! the content store's writer verify the sha256 before the blob becomes
//! visible (temp file, then rename; nothing is stored on a mismatch).

use super::messages::BlobHeader;
use crate::oci::digest::Digest;
use crate::oci::store::{BlobWriter, ContentStore, StoreError};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Chunk size for blob copies (bytes per read/write call).
pub const BLOB_CHUNK: usize = 1024 * 1024;

/// A blob transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The stream or the local file failed.
    #[error("blob {digest}: i/o: {source}")]
    Io {
        /// The blob.
        digest: Digest,
        /// The cause.
        source: std::io::Error,
    },
    /// The peer sent fewer bytes than the header announced.
    #[error("blob {digest}: stream ended after {got} of {size} bytes")]
    Short {
        /// The blob.
        digest: Digest,
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        size: u64,
    },
    /// The peer sent more bytes than the header announced.
    #[error("blob {digest}: peer sent more than the announced {size} bytes")]
    Long {
        /// The blob.
        digest: Digest,
        /// Bytes announced.
        size: u64,
    },
    /// The bytes do not hash to the announced digest.
    #[error("blob {expected}: received bytes hash to {actual}: corrupted or lying sender, nothing stored")]
    DigestMismatch {
        /// Announced digest.
        expected: Digest,
        /// Digest of the bytes received.
        actual: Digest,
    },
    /// The content store refused the blob (including a digest mismatch it detected).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies exactly `size` bytes from `src` to `dst` in [`BLOB_CHUNK`] pieces.
pub async fn send_blob_bytes<R, W>(
    src: &mut R,
    dst: &mut W,
    header: &BlobHeader,
) -> Result<(), BlobError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let io = |source| BlobError::Io {
        digest: header.digest.clone(),
        source,
    };
    let mut buf = vec![0u8; BLOB_CHUNK];
    let mut left = header.size;
    while left > 0 {
        let want = usize::try_from(left.min(BLOB_CHUNK as u64)).unwrap_or(BLOB_CHUNK);
        let n = src.read(&mut buf[..want]).await.map_err(io)?;
        if n == 0 {
            return Err(BlobError::Short {
                digest: header.digest.clone(),
                got: header.size - left,
                size: header.size,
            });
        }
        dst.write_all(&buf[..n]).await.map_err(io)?;
        left -= n as u64;
    }
    Ok(())
}

/// Copies exactly `header.size` bytes from `src` into `sink`, then requires
/// the end of the stream. Returns the sink for the caller to verify.
async fn receive_exact<R, S>(
    src: &mut R,
    sink: &mut S,
    header: &BlobHeader,
) -> Result<(), BlobError>
where
    R: AsyncRead + Unpin,
    S: Write,
{
    let io = |source| BlobError::Io {
        digest: header.digest.clone(),
        source,
    };
    let mut buf = vec![0u8; BLOB_CHUNK];
    let mut got: u64 = 0;
    while got < header.size {
        let want =
            usize::try_from((header.size - got).min(BLOB_CHUNK as u64)).unwrap_or(BLOB_CHUNK);
        let n = src.read(&mut buf[..want]).await.map_err(io)?;
        if n == 0 {
            return Err(BlobError::Short {
                digest: header.digest.clone(),
                got,
                size: header.size,
            });
        }
        sink.write_all(&buf[..n]).map_err(io)?;
        got += n as u64;
    }
    let mut extra = [0u8; 1];
    if src.read(&mut extra).await.map_err(io)? != 0 {
        return Err(BlobError::Long {
            digest: header.digest.clone(),
            size: header.size,
        });
    }
    Ok(())
}

/// Receives a blob into the content store, verifying size and digest. On any
/// failure the temp file is dropped and nothing becomes visible.
pub async fn receive_blob_into_store<R: AsyncRead + Unpin>(
    src: &mut R,
    store: &ContentStore,
    header: &BlobHeader,
) -> Result<(), BlobError> {
    let mut writer: BlobWriter = store.writer(Some(header.digest.clone()), Some(header.size))?;
    receive_exact(src, &mut writer, header).await?;
    writer.commit()?;
    Ok(())
}

/// Receives a blob into any writer, hashing it on the way; fails with
/// [`BlobError::DigestMismatch`] if the bytes are not the announced blob
/// (the caller must then discard what it wrote).
pub async fn receive_blob_verified<R: AsyncRead + Unpin, W: Write>(
    src: &mut R,
    dst: W,
    header: &BlobHeader,
) -> Result<W, BlobError> {
    let mut sink = HashingWriter {
        inner: dst,
        hasher: Sha256::new(),
    };
    receive_exact(src, &mut sink, header).await?;
    let actual = Digest::from_sha256(sink.hasher);
    if actual != header.digest {
        return Err(BlobError::DigestMismatch {
            expected: header.digest.clone(),
            actual,
        });
    }
    Ok(sink.inner)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> BlobHeader {
        BlobHeader {
            digest: Digest::sha256_of(bytes),
            size: bytes.len() as u64,
        }
    }

    #[tokio::test]
    async fn verified_round_trip() {
        let data = vec![7u8; 3 * BLOB_CHUNK + 5];
        let h = header(&data);
        let mut src = &data[..];
        let out = receive_blob_verified(&mut src, Vec::new(), &h)
            .await
            .unwrap();
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn corrupted_bytes_are_refused() {
        let h = header(b"hello");
        let mut src = &b"hellO"[..];
        let e = receive_blob_verified(&mut src, Vec::new(), &h)
            .await
            .unwrap_err();
        assert!(matches!(e, BlobError::DigestMismatch { .. }));
    }

    #[tokio::test]
    async fn short_and_long_streams_are_refused() {
        let h = header(b"hello");
        let mut short = &b"hell"[..];
        assert!(matches!(
            receive_blob_verified(&mut short, Vec::new(), &h).await,
            Err(BlobError::Short { got: 4, .. })
        ));
        let mut long = &b"hello!"[..];
        assert!(matches!(
            receive_blob_verified(&mut long, Vec::new(), &h).await,
            Err(BlobError::Long { .. })
        ));
    }

    #[tokio::test]
    async fn store_keeps_nothing_on_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let h = header(b"good bytes");
        let mut src = &b"evil bytes"[..];
        assert!(receive_blob_into_store(&mut src, &store, &h).await.is_err());
        assert!(!store.contains(&h.digest));
        let mut src = &b"good bytes"[..];
        receive_blob_into_store(&mut src, &store, &h).await.unwrap();
        assert!(store.contains(&h.digest));
    }
}
