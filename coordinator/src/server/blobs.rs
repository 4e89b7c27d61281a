//! Blob streams on the coordinator: uploads into the shared content store
//! (verified, deduplicated) and downloads out of it.

use super::ServerOptions;
use crate::metrics::Direction;
use imgfarm_common::identity::PeerIdentity;
use imgfarm_common::proto::blob::{receive_blob_into_store, send_blob_file, BlobError};
use imgfarm_common::proto::handshake::{check_role_may, Purpose};
use imgfarm_common::proto::io::{write_msg, WireError};
use imgfarm_common::proto::{BlobGetReply, BlobHeader, BlobPutReply, BlobPutResult, BlobRequest};
use imgfarm_transport::streams::{QuicRecv, QuicSend};

pub(super) enum ServeError {
    Wire(WireError),
    Blob(BlobError),
}

impl From<WireError> for ServeError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

/// `BlobPut`: answer Present/Send/Refused, then receive and verify.
pub(super) async fn serve_put(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    opts: &ServerOptions,
    peer: &PeerIdentity,
    header: &BlobHeader,
) -> Result<(), ServeError> {
    if let Err(e) = check_role_may(peer.role, Purpose::Blobs) {
        write_msg(send, &BlobPutReply::Refused(e.to_string())).await?;
        return Err(ServeError::Wire(e.into()));
    }
    if header.size > opts.max_blob_size {
        let why = format!(
            "blob {} of {} bytes exceeds the coordinator's limit of {} bytes",
            header.digest, header.size, opts.max_blob_size
        );
        write_msg(send, &BlobPutReply::Refused(why.clone())).await?;
        let _ = send.finish();
        return Err(ServeError::Wire(WireError::Refused(why)));
    }
    if opts.store.contains(&header.digest) {
        // Confirmed present: a collection now treats it as a fresh upload
        // until a submit or result names it (`service/gc.rs`).
        opts.store.touch(&header.digest);
        write_msg(send, &BlobPutReply::Present).await?;
        let _ = send.finish();
        return Ok(());
    }
    write_msg(send, &BlobPutReply::Send).await?;
    match receive_blob_into_store(&mut QuicRecv(recv), &opts.store, header).await {
        Ok(()) => {
            if let Some(m) = &opts.metrics {
                m.blob_relayed(peer.role, Direction::In, header.size);
            }
            write_msg(send, &BlobPutResult::Stored).await?;
            let _ = send.finish();
            Ok(())
        }
        Err(e) => {
            let _ = write_msg(send, &BlobPutResult::Rejected(e.to_string())).await;
            let _ = send.finish();
            let _ = recv.stop(0u32.into());
            Err(ServeError::Blob(e))
        }
    }
}

/// `BlobGet`: answer Found + bytes, or NotFound.
pub(super) async fn serve_get(
    send: &mut quinn::SendStream,
    opts: &ServerOptions,
    peer: &PeerIdentity,
    req: &BlobRequest,
) -> Result<(), ServeError> {
    if let Err(e) = check_role_may(peer.role, Purpose::Blobs) {
        write_msg(send, &BlobGetReply::Refused(e.to_string())).await?;
        return Err(ServeError::Wire(e.into()));
    }
    let path = opts.store.blob_path(&req.digest);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_msg(send, &BlobGetReply::NotFound).await?;
            let _ = send.finish();
            return Ok(());
        }
        Err(source) => {
            return Err(ServeError::Blob(BlobError::Io {
                digest: req.digest.clone(),
                source,
            }))
        }
    };
    let size = file
        .metadata()
        .await
        .map_err(|source| {
            ServeError::Blob(BlobError::Io {
                digest: req.digest.clone(),
                source,
            })
        })?
        .len();
    let header = BlobHeader {
        digest: req.digest.clone(),
        size,
    };
    write_msg(send, &BlobGetReply::Found(header.clone())).await?;
    send_blob_file(file.into_std().await, &mut QuicSend(send), &header)
        .await
        .map_err(ServeError::Blob)?;
    if let Some(m) = &opts.metrics {
        m.blob_relayed(peer.role, Direction::Out, header.size);
    }
    let _ = send.finish();
    Ok(())
}
