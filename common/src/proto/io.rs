//! Frames and preambles over any tokio byte stream (quinn's `SendStream` and
//! `RecvStream` are such streams). Thin: every decision is in
//! [`super::codec`] and [`super::handshake`].

use super::codec::{check_header, decode_message, encode_frame, CodecError, FRAME_HEADER_LEN};
use super::handshake::{check_preamble, preamble, HandshakeError, PREAMBLE_LEN};
use crate::identity::Role;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A failure on a protocol stream.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed (reset, connection lost, ...).
    #[error("stream i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame was too large or malformed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The version handshake or admission failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The peer closed the stream in the middle of a frame or before an
    /// expected message.
    #[error("peer closed the stream while {0}")]
    Closed(&'static str),
    /// The peer sent a message that makes no sense at this point.
    #[error("unexpected message: {0}")]
    Unexpected(String),
    /// The peer refused; its text says why.
    #[error("refused by peer: {0}")]
    Refused(String),
}

/// Writes our preamble for protocol `version`.
pub async fn write_preamble<W: AsyncWrite + Unpin>(
    w: &mut W,
    version: u32,
) -> Result<(), WireError> {
    w.write_all(&preamble(version)).await?;
    Ok(())
}

/// Reads and checks the peer's preamble.
pub async fn read_preamble<R: AsyncRead + Unpin>(
    r: &mut R,
    ours: u32,
    peer_role: Role,
    our_role: Role,
) -> Result<u32, WireError> {
    let mut p = [0u8; PREAMBLE_LEN];
    read_exact_or_closed(r, &mut p, "sending its preamble").await?;
    Ok(check_preamble(p, ours, peer_role, our_role)?)
}

/// Encodes and writes one frame.
pub async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), WireError> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame).await?;
    Ok(())
}

/// Reads one frame and decodes it. `Ok(None)` on a clean end of stream
/// between frames. The body buffer is allocated only after the declared
/// length passed the `max` check.
pub async fn read_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: u32,
) -> Result<Option<T>, WireError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < FRAME_HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(WireError::Closed("sending a frame header"))
            };
        }
        got += n;
    }
    let len = check_header(header, max)?;
    let mut body = vec![0u8; len];
    read_exact_or_closed(r, &mut body, "sending a frame body").await?;
    Ok(Some(decode_message(&body)?))
}

/// Reads one frame that must be there.
pub async fn expect_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: u32,
    what: &'static str,
) -> Result<T, WireError> {
    read_msg(r, max).await?.ok_or(WireError::Closed(what))
}

async fn read_exact_or_closed<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), WireError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Closed(what)),
        Err(e) => Err(WireError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Message, MAX_CONTROL_FRAME, PROTOCOL_VERSION};

    #[tokio::test]
    async fn frames_over_a_pipe() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            write_preamble(&mut a, PROTOCOL_VERSION).await.unwrap();
            write_msg(&mut a, &Message::Bye).await.unwrap();
        });
        read_preamble(&mut b, PROTOCOL_VERSION, Role::Worker, Role::Coordinator)
            .await
            .unwrap();
        let m: Option<Message> = read_msg(&mut b, MAX_CONTROL_FRAME).await.unwrap();
        assert_eq!(m, Some(Message::Bye));
        writer.await.unwrap();
        let end: Option<Message> = read_msg(&mut b, MAX_CONTROL_FRAME).await.unwrap();
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn oversized_header_fails_without_the_body() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        // The body never comes: the reader must fail on the header alone.
        let r: Result<Option<Message>, _> = read_msg(&mut b, MAX_CONTROL_FRAME).await;
        assert!(matches!(
            r,
            Err(WireError::Codec(CodecError::FrameTooLarge { .. }))
        ));
        drop(a);
    }

    #[tokio::test]
    async fn truncated_frame_is_closed_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(a);
        let r: Result<Option<Message>, _> = read_msg(&mut b, MAX_CONTROL_FRAME).await;
        assert!(matches!(r, Err(WireError::Closed(_))));
    }
}
