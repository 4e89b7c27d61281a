//! The worker's (and the client's) dial-out QUIC link to the coordinator.
//!
//! [`Link::connect`] resolves `quic://HOST:PORT`, does the mutual-TLS QUIC
//! handshake (farm CA only), checks that the server's certificate is the
//! coordinator's, opens the control stream, exchanges preambles (a version
//! mismatch fails with a message naming both versions) and the
//! hello/welcome. Blob transfers each use a stream of their own.
//!
//! A session that sends and receives at the same time (a farm worker sends
//! heartbeats and logs while it waits for jobs) [`Link::split`]s the link
//! into a [`LinkSender`], a [`LinkReceiver`] and a cloneable [`LinkHandle`]
//! for blob streams, and gives each half to its own task: a frame is then
//! never abandoned halfway by a `select!` on the other direction.

mod backoff;
mod blobs;
mod dial;

pub use backoff::{connect_with_backoff, is_retryable, Backoff, CONNECT_ATTEMPT_TIMEOUT};
pub use blobs::PutOutcome;
pub use dial::{endpoint_config, parse_farm_addr, transport_config, FarmAddr};

use imgfarm_common::identity::{
    client_config, peer_identity_from_der, CertProblem, Credentials, IdentityError, Role,
};
use imgfarm_common::proto::io::{
    expect_msg, read_msg, read_preamble, write_msg, write_preamble, WireError,
};
use imgfarm_common::proto::{
    close_code, Hello, Message, StreamOpen, Welcome, MAX_CONTROL_FRAME, PROTOCOL_VERSION,
};
use imgfarm_transport::quic::{cert_refusal, CertRefusal, RefusedBy};
use quinn::crypto::rustls::QuicClientConfig;
use std::sync::Arc;

/// Why the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The address is not `quic://HOST:PORT` or `HOST:PORT`, or does not resolve.
    #[error("farm address {addr:?}: {reason}")]
    Address {
        /// What was given.
        addr: String,
        /// Why it is unusable.
        reason: String,
    },
    /// TLS setup from the credentials failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Creating the local UDP endpoint failed.
    #[error("local QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    /// The QUIC/TLS handshake failed or the connection was closed.
    #[error("connection to {addr}: {source}")]
    Connection {
        /// Coordinator address.
        addr: String,
        /// Cause (a closed connection carries the coordinator's reason).
        source: quinn::ConnectionError,
    },
    /// The coordinator refused this endpoint's certificate in the TLS
    /// handshake (another farm's CA, expired, wrong role): retrying cannot help.
    #[error("the farm coordinator at {addr} refused this {role}'s certificate (it {}): {detail}; check --tls-dir / IMGFARM_TLS_DIR", .problem.describe("the farm's CA"))]
    CertificateRefused {
        /// Coordinator address.
        addr: String,
        /// Our certificate's role.
        role: Role,
        /// What the coordinator found wrong.
        problem: CertProblem,
        /// The coordinator's words.
        detail: String,
    },
    /// This endpoint refused the coordinator's certificate in the TLS
    /// handshake (signed by another CA, not issued for the address dialled).
    #[error("this {role} refused the certificate of the farm coordinator at {addr} (it {}): {detail}; check that the address names this farm's coordinator and that --tls-dir / IMGFARM_TLS_DIR holds this farm's ca.crt", .problem.describe("the farm's CA"))]
    CoordinatorCertificateRefused {
        /// Coordinator address.
        addr: String,
        /// Our role.
        role: Role,
        /// What was wrong with the coordinator's certificate.
        problem: CertProblem,
        /// rustls's words.
        detail: String,
    },
    /// Connecting failed before the handshake.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Coordinator address.
        addr: String,
        /// Cause.
        source: quinn::ConnectError,
    },
    /// The server's certificate is not the farm coordinator's.
    #[error("server at {addr} is not the farm coordinator: {reason}")]
    NotCoordinator {
        /// Address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Protocol failure (version mismatch, refused hello, bad frame, ...).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A blob transfer failed.
    #[error(transparent)]
    Blob(#[from] imgfarm_common::proto::blob::BlobError),
}

impl LinkError {
    /// A failed connection to `addr` as `role`: a certificate refusal when
    /// it is one (see [`imgfarm_transport::quic::cert_refusal`]).
    pub fn connection(addr: &str, role: Role, source: quinn::ConnectionError) -> Self {
        let addr = addr.to_string();
        match cert_refusal(&source) {
            Some(CertRefusal {
                by: RefusedBy::Peer,
                problem,
                detail,
            }) => Self::CertificateRefused {
                addr,
                role,
                problem,
                detail,
            },
            Some(CertRefusal {
                by: RefusedBy::Us,
                problem,
                detail,
            }) => Self::CoordinatorCertificateRefused {
                addr,
                role,
                problem,
                detail,
            },
            None => Self::Connection { addr, source },
        }
    }

    /// Whether a certificate was refused, by either side.
    pub fn is_certificate_refusal(&self) -> bool {
        matches!(
            self,
            Self::CertificateRefused { .. } | Self::CoordinatorCertificateRefused { .. }
        )
    }
}

/// Longest wait for the coordinator to acknowledge a [`Message::Bye`].
pub const BYE_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Options of a link.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Protocol version spoken (always [`PROTOCOL_VERSION`] outside tests).
    pub protocol_version: u32,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
        }
    }
}

/// An open session with the coordinator.
#[derive(Debug)]
pub struct Link {
    handle: LinkHandle,
    /// The coordinator's welcome.
    pub welcome: Welcome,
    send: LinkSender,
    recv: LinkReceiver,
}

/// The shareable part of a link: the connection, for blob streams (one QUIC
/// stream per blob, so any number of tasks may transfer at once) and for
/// closing. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    our_role: Role,
    version: u32,
}

/// The sending half of the control stream (see [`Link::split`]).
#[derive(Debug)]
pub struct LinkSender {
    send: quinn::SendStream,
}

/// The receiving half of the control stream (see [`Link::split`]).
#[derive(Debug)]
pub struct LinkReceiver {
    recv: quinn::RecvStream,
}

impl Link {
    /// Dials the coordinator at `addr` (`quic://HOST:PORT` or `HOST:PORT`) as
    /// `creds` and opens the control session with `hello`.
    pub async fn connect(
        addr: &str,
        creds: &Credentials,
        hello: Hello,
        opts: LinkOptions,
    ) -> Result<Self, LinkError> {
        let target = parse_farm_addr(addr).await?;
        let our_role = creds.identity.role;
        let conn_err = |source| LinkError::connection(addr, our_role, source);
        let tls = client_config(creds)?;
        let quic = QuicClientConfig::try_from(tls)
            .map_err(|e| IdentityError::Tls(format!("QUIC needs TLS 1.3: {e}")))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
        cfg.transport_config(Arc::new(transport_config()));
        let endpoint = dial::client_endpoint(target.socket).map_err(LinkError::Endpoint)?;
        let conn = endpoint
            .connect_with(cfg, target.socket, &target.server_name)
            .map_err(|source| LinkError::Connect {
                addr: addr.to_string(),
                source,
            })?
            .await
            .map_err(conn_err)?;
        check_server_is_coordinator(&conn, addr)?;
        // In TLS 1.3 the client finishes its handshake before the server
        // has checked the client's certificate: a refusal arrives as the
        // connection's close reason while we already use it.
        let (send, recv, welcome) = open_session(&conn, our_role, hello, &opts)
            .await
            .map_err(|e| explain_close(&conn, addr, our_role, e))?;
        Ok(Self {
            handle: LinkHandle {
                endpoint,
                conn,
                our_role,
                version: opts.protocol_version,
            },
            welcome,
            send: LinkSender { send },
            recv: LinkReceiver { recv },
        })
    }

    /// Sends one control message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        self.send.send(msg).await
    }

    /// Writes bytes on the control stream as they are, bypassing framing.
    /// For tests that play a hostile peer; never needed otherwise.
    #[doc(hidden)]
    pub async fn send_raw_bytes(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        tokio::io::AsyncWriteExt::write_all(&mut self.send.send, bytes)
            .await
            .map_err(WireError::Io)?;
        Ok(())
    }

    /// Receives the next control message; `Ok(None)` when the coordinator
    /// ended the stream.
    pub async fn recv(&mut self) -> Result<Option<Message>, LinkError> {
        self.recv.recv().await
    }

    /// The QUIC connection (remote address, stats, close reason).
    pub fn connection(&self) -> &quinn::Connection {
        &self.handle.conn
    }

    /// The shareable part (blob streams, closing).
    pub fn handle(&self) -> &LinkHandle {
        &self.handle
    }

    /// Splits the session so that sending and receiving can run in
    /// separate tasks. Give each half to one task and do not cancel a
    /// `send`/`recv` halfway (e.g. in a `select!`): a partly written or
    /// read frame breaks the stream.
    pub fn split(self) -> (LinkHandle, LinkSender, LinkReceiver) {
        (self.handle, self.send, self.recv)
    }

    /// Ends the session politely and waits for the endpoint to drain.
    pub async fn close(self) {
        let mut send = self.send;
        send.bye().await;
        self.handle.close().await;
    }
}

impl LinkHandle {
    /// The QUIC connection (remote address, stats, close reason).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Closes the connection (normal close code) and waits for the endpoint
    /// to drain; every stream of the session ends.
    pub async fn close(&self) {
        self.conn.close(close_code::NORMAL.into(), b"bye");
        self.endpoint.wait_idle().await;
    }
}

impl LinkSender {
    /// Sends one control message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        Ok(write_msg(&mut self.send, msg).await?)
    }

    /// Sends [`Message::Bye`], finishes the stream and waits (up to
    /// [`BYE_ACK_WAIT`]) until the coordinator acknowledged it, so closing
    /// the connection right after does not discard the goodbye. Errors are
    /// ignored: the session is ending anyway.
    pub async fn bye(&mut self) {
        if write_msg(&mut self.send, &Message::Bye).await.is_ok() && self.send.finish().is_ok() {
            let _ = tokio::time::timeout(BYE_ACK_WAIT, self.send.stopped()).await;
        }
    }
}

impl LinkReceiver {
    /// Receives the next control message; `Ok(None)` when the coordinator
    /// ended the stream. Frames over [`MAX_CONTROL_FRAME`] fail before
    /// anything is allocated for them.
    pub async fn recv(&mut self) -> Result<Option<Message>, LinkError> {
        Ok(read_msg(&mut self.recv, MAX_CONTROL_FRAME).await?)
    }
}

/// Opens the control stream on a fresh connection: preambles, then hello
/// and welcome.
async fn open_session(
    conn: &quinn::Connection,
    our_role: Role,
    hello: Hello,
    opts: &LinkOptions,
) -> Result<(quinn::SendStream, quinn::RecvStream, Welcome), SessionError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(SessionError::Conn)?;
    write_preamble(&mut send, opts.protocol_version).await?;
    write_msg(&mut send, &StreamOpen::Control(hello)).await?;
    if let Err(e) = read_preamble(
        &mut recv,
        opts.protocol_version,
        Role::Coordinator,
        our_role,
    )
    .await
    {
        if conn.close_reason().is_none() {
            conn.close(
                close_code::VERSION_MISMATCH.into(),
                e.to_string().as_bytes(),
            );
            return Err(SessionError::Final(e.into()));
        }
        return Err(e.into());
    }
    let reply: Message = expect_msg(&mut recv, MAX_CONTROL_FRAME, "answering our hello").await?;
    match reply {
        Message::Welcome(w) => Ok((send, recv, w)),
        Message::Refused(why) => Err(SessionError::Final(WireError::Refused(why).into())),
        other => Err(WireError::Unexpected(format!("expected welcome, got {other:?}")).into()),
    }
}

/// Why [`open_session`] failed.
enum SessionError {
    /// The connection failed.
    Conn(quinn::ConnectionError),
    /// A stream failed: the connection's close reason, if any, says more.
    Wire(WireError),
    /// The answer itself (a mismatch we detected, the coordinator's refusal).
    Final(LinkError),
}

impl From<WireError> for SessionError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

/// If the connection was closed by the coordinator, its reason is the best
/// error to show (a refused certificate, the version mismatch text, the
/// refusal) rather than the stream error it caused.
fn explain_close(conn: &quinn::Connection, addr: &str, role: Role, e: SessionError) -> LinkError {
    match e {
        SessionError::Final(e) => e,
        SessionError::Conn(source) => LinkError::connection(addr, role, source),
        SessionError::Wire(e) => match conn.close_reason() {
            Some(quinn::ConnectionError::LocallyClosed) | None => e.into(),
            Some(reason) => LinkError::connection(addr, role, reason),
        },
    }
}

fn check_server_is_coordinator(conn: &quinn::Connection, addr: &str) -> Result<(), LinkError> {
    let not = |reason: String| LinkError::NotCoordinator {
        addr: addr.to_string(),
        reason,
    };
    let chain = conn
        .peer_identity()
        .and_then(|a| {
            a.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or_else(|| not("no certificate".into()))?;
    let leaf = chain.first().ok_or_else(|| not("empty chain".into()))?;
    let id = peer_identity_from_der(leaf).map_err(|e| not(e.to_string()))?;
    if id.role != Role::Coordinator {
        conn.close(close_code::REFUSED.into(), b"not a coordinator certificate");
        return Err(not(format!("its certificate is for {id}")));
    }
    Ok(())
}
