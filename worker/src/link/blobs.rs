//! Blob streams from the dialer's side: upload to and download from the
//! coordinator's shared store, one QUIC stream per blob.

use super::{Link, LinkError, LinkHandle};
use imgfarm_common::identity::Role;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::blob::{receive_blob_into_store, send_blob_bytes, send_blob_file};
use imgfarm_common::proto::io::{expect_msg, read_preamble, write_msg, write_preamble, WireError};
use imgfarm_common::proto::{
    BlobGetReply, BlobHeader, BlobPutReply, BlobPutResult, BlobRequest, StreamOpen,
    MAX_CONTROL_FRAME,
};
use imgfarm_transport::streams::{QuicRecv, QuicSend};
use tokio::io::AsyncRead;

/// What happened to an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Sent, verified and stored by the coordinator.
    Stored,
    /// The coordinator already had it; no bytes were sent.
    AlreadyPresent,
}

impl Link {
    /// Uploads the blob `header` describes (see [`LinkHandle::put_blob`]).
    pub async fn put_blob<R: AsyncRead + Unpin>(
        &self,
        header: &BlobHeader,
        src: &mut R,
    ) -> Result<PutOutcome, LinkError> {
        self.handle.put_blob(header, src).await
    }

    /// Uploads a blob from a local content store (see
    /// [`LinkHandle::put_blob_from_store`]).
    pub async fn put_blob_from_store(
        &self,
        store: &ContentStore,
        digest: &Digest,
    ) -> Result<PutOutcome, LinkError> {
        self.handle.put_blob_from_store(store, digest).await
    }

    /// Downloads a blob into `store` (see [`LinkHandle::get_blob`]).
    pub async fn get_blob(&self, store: &ContentStore, digest: &Digest) -> Result<bool, LinkError> {
        self.handle.get_blob(store, digest).await
    }
}

impl LinkHandle {
    async fn open_stream(
        &self,
        open: &StreamOpen,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), LinkError> {
        let (mut send, mut recv) =
            self.conn
                .open_bi()
                .await
                .map_err(|source| LinkError::Connection {
                    addr: self.conn.remote_address().to_string(),
                    source,
                })?;
        write_preamble(&mut send, self.version).await?;
        write_msg(&mut send, open).await?;
        read_preamble(&mut recv, self.version, Role::Coordinator, self.our_role).await?;
        Ok((send, recv))
    }

    /// Uploads the blob `header` describes, reading exactly `header.size`
    /// bytes from `src`. The coordinator verifies digest and size and keeps
    /// nothing on a mismatch; a blob it already holds is not sent.
    pub async fn put_blob<R: AsyncRead + Unpin>(
        &self,
        header: &BlobHeader,
        src: &mut R,
    ) -> Result<PutOutcome, LinkError> {
        let Some((mut send, recv)) = self.begin_put(header).await? else {
            return Ok(PutOutcome::AlreadyPresent);
        };
        send_blob_bytes(src, &mut QuicSend(&mut send), header).await?;
        self.end_put(send, recv).await
    }

    /// Uploads a blob from a local content store (the file is read on the
    /// blocking pool, a chunk ahead of the network).
    pub async fn put_blob_from_store(
        &self,
        store: &ContentStore,
        digest: &Digest,
    ) -> Result<PutOutcome, LinkError> {
        let path = store.blob_path(digest);
        let io = |source| imgfarm_common::proto::blob::BlobError::Io {
            digest: digest.clone(),
            source,
        };
        let file = tokio::fs::File::open(&path).await.map_err(io)?;
        let size = file.metadata().await.map_err(io)?.len();
        let header = BlobHeader {
            digest: digest.clone(),
            size,
        };
        let Some((mut send, recv)) = self.begin_put(&header).await? else {
            return Ok(PutOutcome::AlreadyPresent);
        };
        send_blob_file(file.into_std().await, &mut QuicSend(&mut send), &header).await?;
        self.end_put(send, recv).await
    }

    /// Opens a `BlobPut` stream; `None` if the coordinator already holds the blob.
    async fn begin_put(
        &self,
        header: &BlobHeader,
    ) -> Result<Option<(quinn::SendStream, quinn::RecvStream)>, LinkError> {
        let (send, mut recv) = self
            .open_stream(&StreamOpen::BlobPut(header.clone()))
            .await?;
        let reply: BlobPutReply =
            expect_msg(&mut recv, MAX_CONTROL_FRAME, "answering a blob upload").await?;
        match reply {
            BlobPutReply::Present => Ok(None),
            BlobPutReply::Refused(why) => Err(WireError::Refused(why).into()),
            BlobPutReply::Send => Ok(Some((send, recv))),
        }
    }

    /// Ends the bytes of an upload and waits for the coordinator's verdict.
    async fn end_put(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<PutOutcome, LinkError> {
        let _ = send.finish();
        let result: BlobPutResult =
            expect_msg(&mut recv, MAX_CONTROL_FRAME, "confirming a blob upload").await?;
        match result {
            BlobPutResult::Stored => Ok(PutOutcome::Stored),
            BlobPutResult::Rejected(why) => Err(WireError::Refused(why).into()),
        }
    }

    /// Downloads a blob from the coordinator into `store`, verifying digest
    /// and size. `Ok(false)` if the coordinator does not hold it.
    pub async fn get_blob(&self, store: &ContentStore, digest: &Digest) -> Result<bool, LinkError> {
        if store.contains(digest) {
            return Ok(true);
        }
        let req = BlobRequest {
            digest: digest.clone(),
        };
        let (_send, mut recv) = self.open_stream(&StreamOpen::BlobGet(req)).await?;
        let reply: BlobGetReply =
            expect_msg(&mut recv, MAX_CONTROL_FRAME, "answering a blob download").await?;
        match reply {
            BlobGetReply::NotFound => Ok(false),
            BlobGetReply::Refused(why) => Err(WireError::Refused(why).into()),
            BlobGetReply::Found(header) if &header.digest == digest => {
                receive_blob_into_store(&mut QuicRecv(&mut recv), store, &header).await?;
                Ok(true)
            }
            BlobGetReply::Found(header) => Err(WireError::Unexpected(format!(
                "asked for blob {digest}, coordinator offered {}",
                header.digest
            ))
            .into()),
        }
    }
}
