//! Raw blob bytes on a blob stream, after its [`super::BlobHeader`].
//!
//! The receiver takes exactly `size` bytes, refuses a byte more, and lets
//! the content store's writer verify the sha256 before the blob becomes
//! visible (temp file, then rename; nothing is stored on a mismatch).
//!
//! Bytes move as owned chunks ([`ChunkRecv`], [`ChunkSend`]) so a QUIC
//! stream hands its buffers over without a copy, and hashing and disk writes
//! run on a blocking thread beside the network task (throughput figures:
//! bench/quic_transfer.md).

use super::messages::BlobHeader;
use crate::oci::digest::Digest;
use crate::oci::store::{BlobWriter, ContentStore, StoreError};
use bytes::BytesMut;
use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::io::{BufWriter, Write};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

pub use bytes::Bytes;

/// Chunk size for blob copies: the sender reads and hands the transport
/// pieces of this size, the receiver batches this much before a disk write.
pub const BLOB_CHUNK: usize = 1024 * 1024;

/// Batches of [`BLOB_CHUNK`] bytes queued between the network and the disk
/// thread of one upload (bounds the memory one transfer holds beyond the
/// transport's flow-control window).
const DISK_QUEUE: usize = 4;

/// A stream that hands out received bytes as owned chunks, so a transport
/// that already holds them in buffers (a QUIC receive stream) need not copy.
pub trait ChunkRecv: Send {
    /// The next piece, at most `max` bytes; `None` at the end of the stream.
    fn recv_chunk(
        &mut self,
        max: usize,
    ) -> impl Future<Output = std::io::Result<Option<Bytes>>> + Send;
}

/// A stream that takes ownership of the chunks it sends, so a transport that
/// keeps them until acknowledged (a QUIC send stream) need not copy.
pub trait ChunkSend: Send {
    /// Queues `chunk` for sending (waits while the transport's window is full).
    fn send_chunk(&mut self, chunk: Bytes) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// Any [`AsyncRead`] as a [`ChunkRecv`] (one copy per chunk).
#[derive(Debug)]
pub struct ReadChunks<R>(pub R);

impl<R: AsyncRead + Unpin + Send> ChunkRecv for ReadChunks<R> {
    async fn recv_chunk(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        let max = max.clamp(1, BLOB_CHUNK);
        let mut buf = BytesMut::with_capacity(max);
        match (&mut self.0).take(max as u64).read_buf(&mut buf).await? {
            0 => Ok(None),
            _ => Ok(Some(buf.freeze())),
        }
    }
}

/// Any [`AsyncWrite`] as a [`ChunkSend`].
#[derive(Debug)]
pub struct WriteChunks<W>(pub W);

impl<W: AsyncWrite + Unpin + Send> ChunkSend for WriteChunks<W> {
    async fn send_chunk(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.0.write_all(&chunk).await
    }
}

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

fn io_error(header: &BlobHeader) -> impl Fn(std::io::Error) -> BlobError + '_ {
    |source| BlobError::Io {
        digest: header.digest.clone(),
        source,
    }
}

/// Sends exactly `header.size` bytes read from `src`, in [`BLOB_CHUNK`]
/// pieces handed to `dst` without a further copy.
pub async fn send_blob_bytes<R, W>(
    src: &mut R,
    dst: &mut W,
    header: &BlobHeader,
) -> Result<(), BlobError>
where
    R: AsyncRead + Unpin,
    W: ChunkSend,
{
    let io = io_error(header);
    let mut left = header.size;
    while left > 0 {
        let want = usize::try_from(left.min(BLOB_CHUNK as u64)).unwrap_or(BLOB_CHUNK);
        let mut buf = BytesMut::with_capacity(want);
        while buf.len() < want {
            if src.read_buf(&mut buf).await.map_err(&io)? == 0 {
                return Err(BlobError::Short {
                    digest: header.digest.clone(),
                    got: header.size - left + buf.len() as u64,
                    size: header.size,
                });
            }
        }
        left -= buf.len() as u64;
        dst.send_chunk(buf.freeze()).await.map_err(&io)?;
    }
    Ok(())
}

/// Sends a blob from a local file (e.g. the content store): the file is read
/// on the blocking pool, one [`BLOB_CHUNK`] ahead of the network.
pub async fn send_blob_file<W: ChunkSend>(
    file: std::fs::File,
    dst: &mut W,
    header: &BlobHeader,
) -> Result<(), BlobError> {
    let io = io_error(header);
    let size = header.size;
    let read_next = |mut file: std::fs::File, done: u64| {
        tokio::task::spawn_blocking(move || {
            let want = usize::try_from((size - done).min(BLOB_CHUNK as u64)).unwrap_or(0);
            let mut buf = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                match std::io::Read::read(&mut file, &mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(filled);
            Ok((file, Bytes::from(buf)))
        })
    };
    let mut done = 0u64;
    let mut next = read_next(file, 0);
    while done < size {
        let (file, chunk) = next
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(&io)?;
        if chunk.is_empty() {
            return Err(BlobError::Short {
                digest: header.digest.clone(),
                got: done,
                size,
            });
        }
        done += chunk.len() as u64;
        next = read_next(file, done);
        dst.send_chunk(chunk).await.map_err(&io)?;
    }
    Ok(())
}

/// Reads a blob's bytes off a stream, exactly `header.size` of them, then
/// requires the end of the stream.
struct Exact<'a, R> {
    src: &'a mut R,
    header: &'a BlobHeader,
    got: u64,
}

impl<'a, R: ChunkRecv> Exact<'a, R> {
    fn new(src: &'a mut R, header: &'a BlobHeader) -> Self {
        Self {
            src,
            header,
            got: 0,
        }
    }

    /// The next chunk, `None` once all bytes came and the stream ended.
    async fn next(&mut self) -> Result<Option<Bytes>, BlobError> {
        let io = io_error(self.header);
        let size = self.header.size;
        loop {
            if self.got == size {
                return match self.src.recv_chunk(1).await.map_err(&io)? {
                    None => Ok(None),
                    Some(extra) if extra.is_empty() => continue,
                    Some(_) => Err(BlobError::Long {
                        digest: self.header.digest.clone(),
                        size,
                    }),
                };
            }
            let want = usize::try_from((size - self.got).min(BLOB_CHUNK as u64)).unwrap_or(1);
            match self.src.recv_chunk(want).await.map_err(&io)? {
                None => {
                    return Err(BlobError::Short {
                        digest: self.header.digest.clone(),
                        got: self.got,
                        size,
                    })
                }
                Some(chunk) if chunk.len() > want => {
                    return Err(BlobError::Long {
                        digest: self.header.digest.clone(),
                        size,
                    })
                }
                Some(chunk) if chunk.is_empty() => continue,
                Some(chunk) => {
                    self.got += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
            }
        }
    }
}

/// What the network side of a receive hands its blocking thread.
enum ToDisk {
    Bytes(Vec<Bytes>),
    /// Every byte came and the stream ended: verify (and publish).
    Commit,
}

/// Receives a blob into the content store. The network side only moves
/// chunks; hashing, file writes (batched to [`BLOB_CHUNK`]), fsync and the
/// digest check run on a blocking thread. The blob becomes visible only if
/// exactly `header.size` bytes came and they hash to `header.digest`; on any
/// failure the temp file is removed and nothing is stored.
pub async fn receive_blob_into_store<R: ChunkRecv>(
    src: &mut R,
    store: &ContentStore,
    header: &BlobHeader,
) -> Result<(), BlobError> {
    let writer: BlobWriter = store.writer(Some(header.digest.clone()), Some(header.size))?;
    let h = header.clone();
    receive_on_thread(src, header, move |rx| write_to_store(writer, rx, &h)).await
}

/// Receives a blob into any writer, hashing it on a blocking thread as it
/// comes; fails with [`BlobError::DigestMismatch`] if the bytes are not the
/// announced blob (the caller must then discard what it wrote).
pub async fn receive_blob_verified<R, W>(
    src: &mut R,
    dst: W,
    header: &BlobHeader,
) -> Result<W, BlobError>
where
    R: ChunkRecv,
    W: Write + Send + 'static,
{
    let h = header.clone();
    receive_on_thread(src, header, move |rx| hash_into(dst, rx, &h)).await
}

/// Runs `consume` on the blocking pool, feeding it the blob's chunks in
/// batches of about [`BLOB_CHUNK`] bytes, then [`ToDisk::Commit`] once
/// exactly `header.size` bytes came and the stream ended. `consume` returns
/// `Ok(None)` if the queue closed before the commit (the network side failed
/// and reports why).
async fn receive_on_thread<R, T, F>(
    src: &mut R,
    header: &BlobHeader,
    consume: F,
) -> Result<T, BlobError>
where
    R: ChunkRecv,
    T: Send + 'static,
    F: FnOnce(mpsc::Receiver<ToDisk>) -> Result<Option<T>, BlobError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(DISK_QUEUE);
    let consumer = tokio::task::spawn_blocking(move || consume(rx));
    let received = forward_chunks(src, header, &tx).await;
    drop(tx);
    let consumed = consumer
        .await
        .map_err(|e| io_error(header)(std::io::Error::other(e)))?;
    // A failed consumer closes the queue, which shows up on the network side
    // as a send error; the consumer's own error is the one to report.
    match (received, consumed) {
        (Ok(()), Ok(Some(done))) => Ok(done),
        (_, Err(consumer)) => Err(consumer),
        (Err(net), Ok(_)) => Err(net),
        (Ok(()), Ok(None)) => Err(io_error(header)(std::io::Error::other(
            "the blob consumer ended before the commit",
        ))),
    }
}

/// Network side of a receive: batches chunks up to [`BLOB_CHUNK`] bytes and
/// queues them, then asks for the commit.
async fn forward_chunks<R: ChunkRecv>(
    src: &mut R,
    header: &BlobHeader,
    tx: &mpsc::Sender<ToDisk>,
) -> Result<(), BlobError> {
    let closed = || io_error(header)(std::io::Error::other("the blob consumer stopped early"));
    let mut exact = Exact::new(src, header);
    let mut batch = Vec::new();
    let mut batched = 0;
    while let Some(chunk) = exact.next().await? {
        batched += chunk.len();
        batch.push(chunk);
        if batched >= BLOB_CHUNK {
            tx.send(ToDisk::Bytes(std::mem::take(&mut batch)))
                .await
                .map_err(|_| closed())?;
            batched = 0;
        }
    }
    if !batch.is_empty() {
        tx.send(ToDisk::Bytes(batch)).await.map_err(|_| closed())?;
    }
    tx.send(ToDisk::Commit).await.map_err(|_| closed())
}

/// Store consumer (blocking): writes and hashes every batch through a
/// [`BLOB_CHUNK`] buffer, commits (fsync, digest check, rename) only on
/// [`ToDisk::Commit`]; if the queue closes first the writer is dropped,
/// which deletes the temp file.
fn write_to_store(
    writer: BlobWriter,
    mut rx: mpsc::Receiver<ToDisk>,
    header: &BlobHeader,
) -> Result<Option<()>, BlobError> {
    let io = io_error(header);
    let mut out = BufWriter::with_capacity(BLOB_CHUNK, writer);
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            ToDisk::Bytes(batch) => {
                for chunk in batch {
                    out.write_all(&chunk).map_err(&io)?;
                }
            }
            ToDisk::Commit => {
                let writer = out.into_inner().map_err(|e| io(e.into_error()))?;
                writer.commit()?;
                return Ok(Some(()));
            }
        }
    }
    Ok(None)
}

/// Hashing consumer (blocking): hashes and writes every batch, checks the
/// digest on [`ToDisk::Commit`].
fn hash_into<W: Write>(
    mut dst: W,
    mut rx: mpsc::Receiver<ToDisk>,
    header: &BlobHeader,
) -> Result<Option<W>, BlobError> {
    let io = io_error(header);
    let mut hasher = Sha256::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            ToDisk::Bytes(batch) => {
                for chunk in batch {
                    hasher.update(&chunk);
                    dst.write_all(&chunk).map_err(&io)?;
                }
            }
            ToDisk::Commit => {
                let actual = Digest::from_sha256(hasher);
                if actual != header.digest {
                    return Err(BlobError::DigestMismatch {
                        expected: header.digest.clone(),
                        actual,
                    });
                }
                return Ok(Some(dst));
            }
        }
    }
    Ok(None)
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
        let mut src = ReadChunks(&data[..]);
        let out = receive_blob_verified(&mut src, Vec::new(), &h)
            .await
            .unwrap();
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn corrupted_bytes_are_refused() {
        let h = header(b"hello");
        let mut src = ReadChunks(&b"hellO"[..]);
        let e = receive_blob_verified(&mut src, Vec::new(), &h)
            .await
            .unwrap_err();
        assert!(matches!(e, BlobError::DigestMismatch { .. }));
    }

    #[tokio::test]
    async fn short_and_long_streams_are_refused() {
        let h = header(b"hello");
        let mut short = ReadChunks(&b"hell"[..]);
        assert!(matches!(
            receive_blob_verified(&mut short, Vec::new(), &h).await,
            Err(BlobError::Short { got: 4, .. })
        ));
        let mut long = ReadChunks(&b"hello!"[..]);
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
        let mut src = ReadChunks(&b"evil bytes"[..]);
        assert!(receive_blob_into_store(&mut src, &store, &h).await.is_err());
        assert!(!store.contains(&h.digest));
        let mut src = ReadChunks(&b"good bytes"[..]);
        receive_blob_into_store(&mut src, &store, &h).await.unwrap();
        assert!(store.contains(&h.digest));
    }

    /// Hands out a byte string in pieces of a fixed size (like QUIC frames).
    struct Pieces {
        data: Bytes,
        piece: usize,
    }

    impl ChunkRecv for Pieces {
        async fn recv_chunk(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
            if self.data.is_empty() {
                return Ok(None);
            }
            let n = self.piece.min(max).min(self.data.len());
            Ok(Some(self.data.split_to(n)))
        }
    }

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn store_receives_small_pieces_batched() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let data = blob(2 * BLOB_CHUNK + 1234);
        let h = header(&data);
        let mut src = Pieces {
            data: Bytes::from(data.clone()),
            piece: 1163,
        };
        receive_blob_into_store(&mut src, &store, &h).await.unwrap();
        assert_eq!(std::fs::read(store.blob_path(&h.digest)).unwrap(), data);
    }

    #[tokio::test]
    async fn store_keeps_nothing_from_short_or_long_streams() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let data = blob(BLOB_CHUNK + 10);
        let h = header(&data);
        let mut short = Pieces {
            data: Bytes::from(data[..data.len() - 1].to_vec()),
            piece: 4096,
        };
        let e = receive_blob_into_store(&mut short, &store, &h)
            .await
            .unwrap_err();
        assert!(matches!(e, BlobError::Short { .. }), "{e}");
        let mut long = data.clone();
        long.push(0);
        let mut long = Pieces {
            data: Bytes::from(long),
            piece: 4096,
        };
        let e = receive_blob_into_store(&mut long, &store, &h)
            .await
            .unwrap_err();
        assert!(matches!(e, BlobError::Long { .. }), "{e}");
        assert!(!store.contains(&h.digest));
        let ingest: Vec<_> = std::fs::read_dir(dir.path().join("store"))
            .unwrap()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter(|f| f.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(ingest.is_empty(), "temp files left: {ingest:?}");
    }

    /// Collects what a sender hands over.
    #[derive(Default)]
    struct Collect(Vec<Bytes>);

    impl ChunkSend for Collect {
        async fn send_chunk(&mut self, chunk: Bytes) -> std::io::Result<()> {
            self.0.push(chunk);
            Ok(())
        }
    }

    #[tokio::test]
    async fn senders_hand_over_whole_chunks() {
        let data = blob(2 * BLOB_CHUNK + 7);
        let h = header(&data);
        let mut out = Collect::default();
        send_blob_bytes(&mut &data[..], &mut out, &h).await.unwrap();
        let sizes: Vec<_> = out.0.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [BLOB_CHUNK, BLOB_CHUNK, 7]);
        assert_eq!(out.0.concat(), data);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, &data).unwrap();
        let mut out = Collect::default();
        let file = std::fs::File::open(&path).unwrap();
        send_blob_file(file, &mut out, &h).await.unwrap();
        assert_eq!(out.0.concat(), data);
        // A file shorter than announced is an error, not a short blob.
        let file = std::fs::File::open(&path).unwrap();
        let longer = BlobHeader {
            size: h.size + 1,
            ..h.clone()
        };
        let e = send_blob_file(file, &mut Collect::default(), &longer)
            .await
            .unwrap_err();
        assert!(matches!(e, BlobError::Short { .. }), "{e}");
    }
}
