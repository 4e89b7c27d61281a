//! An admitted control session (one per worker or client connection).

use super::drop_peer;
use imgfarm_common::identity::PeerIdentity;
use imgfarm_common::proto::io::{read_msg, write_msg, WireError};
use imgfarm_common::proto::{close_code, Hello, Message, MAX_CONTROL_FRAME};

/// A worker's or client's control stream, after the hello was accepted.
/// Reading a bad frame (oversized, malformed) drops the whole connection.
#[derive(Debug)]
pub struct Session {
    conn: quinn::Connection,
    /// Who (from the certificate, equal to the hello's claim).
    pub peer: PeerIdentity,
    /// What the peer announced.
    pub hello: Hello,
    /// The coordinator's id for this session.
    pub session_id: u64,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl Session {
    pub(super) fn new(
        conn: quinn::Connection,
        peer: PeerIdentity,
        hello: Hello,
        session_id: u64,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> Self {
        Self {
            conn,
            peer,
            hello,
            session_id,
            send,
            recv,
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), WireError> {
        write_msg(&mut self.send, msg).await
    }

    /// Receives the next message; `Ok(None)` when the peer ended the stream.
    /// A frame over the limit or malformed drops the peer before anything
    /// is allocated for it.
    pub async fn recv(&mut self) -> Result<Option<Message>, WireError> {
        match read_msg(&mut self.recv, MAX_CONTROL_FRAME).await {
            Ok(m) => Ok(m),
            Err(e) => {
                drop_peer(&self.conn, &e);
                Err(e)
            }
        }
    }

    /// Splits into independent send and receive halves.
    pub fn into_parts(self) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
        (self.conn, self.send, self.recv)
    }

    /// The underlying connection (for remote address, closing, stats).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Ends the session and the connection.
    pub fn close(self, reason: &str) {
        self.conn
            .close(close_code::NORMAL.into(), reason.as_bytes());
    }
}
