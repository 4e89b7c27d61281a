//! The coordinator's QUIC endpoint: accepts mutual-TLS connections from
//! workers and clients, admits control sessions by certificate role, and
//! serves blob streams from and into the shared content store.
//!
//! Thin transport: version, frame and role decisions live in
//! [`imgfarm_common::proto`]; this module moves bytes and reports
//! [`ServerEvent`]s. Whoever owns the pool/queue takes admitted
//! [`Session`]s from [`Server::next_event`].

mod blobs;
mod session;

pub use imgfarm_transport::quic::{
    bind_udp, dialer_transport_config, endpoint_config, runtime, transport_config,
};
pub use imgfarm_transport::streams::{QuicRecv, QuicSend};
pub use session::Session;

use imgfarm_common::identity::{peer_identity_from_der, server_config, Credentials, PeerIdentity};
use imgfarm_common::identity::{CertProblem, Role};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::io::{expect_msg, read_preamble, write_msg, write_preamble, WireError};
use imgfarm_common::proto::{
    check_hello, close_code, CodecError, HandshakeError, Message, StreamOpen, Welcome,
    MAX_CONTROL_FRAME, PROTOCOL_VERSION,
};
use imgfarm_transport::quic as transport;
use imgfarm_transport::quic::{CertRefusal, RefusedBy};
use quinn::crypto::rustls::QuicServerConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Everything the endpoint needs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to listen on (UDP).
    pub listen: SocketAddr,
    /// The coordinator's credentials (`coordinator.{crt,key}` + `ca.crt`).
    pub creds: Credentials,
    /// The shared content store blob streams read and write.
    pub store: ContentStore,
    /// Largest blob accepted on a blob stream.
    pub max_blob_size: u64,
    /// Heartbeat interval announced to workers.
    pub heartbeat_interval_ms: u64,
    /// Protocol version spoken (always [`PROTOCOL_VERSION`] outside tests).
    pub protocol_version: u32,
    /// Counts blob bytes in and out (`--metrics-listen`).
    pub metrics: Option<Arc<crate::metrics::CoordinatorMetrics>>,
}

impl ServerOptions {
    /// Defaults: 64 GiB blob limit, 2 s heartbeats, this build's protocol.
    pub fn new(listen: SocketAddr, creds: Credentials, store: ContentStore) -> Self {
        Self {
            listen,
            creds,
            store,
            max_blob_size: 64 << 30,
            heartbeat_interval_ms: 2000,
            protocol_version: PROTOCOL_VERSION,
            metrics: None,
        }
    }
}

/// Why the endpoint failed or dropped a peer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS configuration from the credentials failed.
    #[error(transparent)]
    Identity(#[from] imgfarm_common::identity::IdentityError),
    /// Binding the UDP socket or building the endpoint failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The QUIC/TLS handshake failed (e.g. a certificate from another CA).
    #[error("connection from {remote}: {source}")]
    Connection {
        /// Peer address.
        remote: SocketAddr,
        /// Cause.
        source: quinn::ConnectionError,
    },
    /// The TLS handshake refused the peer's certificate (another farm's CA,
    /// expired, wrong key usage, ...).
    #[error("refused a connection from {remote}: its certificate {} ({detail})", .problem.describe("this farm's CA"))]
    CertificateRefused {
        /// Peer address.
        remote: SocketAddr,
        /// What was wrong.
        problem: CertProblem,
        /// rustls's words.
        detail: String,
    },
    /// The peer refused the coordinator's certificate (it trusts another CA,
    /// or the name it dialled is not in the certificate).
    #[error("{remote} refused this coordinator's certificate: it {} ({detail}); check that the peer was given this farm's ca.crt", .problem.describe("the CA it trusts"))]
    CertificateRefusedByPeer {
        /// Peer address.
        remote: SocketAddr,
        /// What the peer found wrong.
        problem: CertProblem,
        /// The peer's words.
        detail: String,
    },
    /// The peer's certificate has no usable role.
    #[error("refused a connection from {remote}: its certificate carries no valid imgfarm role ({reason})")]
    NoRole {
        /// Peer address.
        remote: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A stream failed (version, frame size, role, I/O).
    #[error("{peer}: {source}")]
    Wire {
        /// Peer.
        peer: PeerIdentity,
        /// Cause.
        source: WireError,
    },
    /// A blob transfer failed; nothing was stored.
    #[error("{peer}: {source}")]
    Blob {
        /// Peer.
        peer: PeerIdentity,
        /// Cause.
        source: imgfarm_common::proto::blob::BlobError,
    },
}

impl ServerError {
    /// Whether this is a refused certificate, on either side. The endpoint
    /// has already logged it as a warning.
    pub fn is_certificate_refusal(&self) -> bool {
        matches!(
            self,
            Self::CertificateRefused { .. }
                | Self::CertificateRefusedByPeer { .. }
                | Self::NoRole { .. }
        )
    }
}

/// The error for a failed handshake: a certificate refusal when it is one.
fn handshake_error(remote: SocketAddr, source: quinn::ConnectionError) -> ServerError {
    match transport::cert_refusal(&source) {
        Some(CertRefusal {
            by: RefusedBy::Us,
            problem,
            detail,
        }) => ServerError::CertificateRefused {
            remote,
            problem,
            detail,
        },
        Some(CertRefusal {
            by: RefusedBy::Peer,
            problem,
            detail,
        }) => ServerError::CertificateRefusedByPeer {
            remote,
            problem,
            detail,
        },
        None => ServerError::Connection { remote, source },
    }
}

/// What happened at the endpoint.
#[derive(Debug)]
pub enum ServerEvent {
    /// A worker or client session was admitted (hello checked, welcome sent).
    Session(Box<Session>),
    /// A peer or one of its streams was refused or dropped.
    Dropped(ServerError),
    /// A blob was received, verified and stored.
    BlobStored {
        /// Who sent it.
        peer: PeerIdentity,
        /// The blob.
        digest: Digest,
    },
}

/// A running coordinator endpoint.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    events: mpsc::Receiver<ServerEvent>,
}

impl Server {
    /// Binds the endpoint and starts accepting connections.
    pub fn bind(opts: ServerOptions) -> Result<Self, ServerError> {
        let tls = server_config(&opts.creds)?;
        let quic = QuicServerConfig::try_from(tls).map_err(|e| {
            imgfarm_common::identity::IdentityError::Tls(format!("QUIC needs TLS 1.3: {e}"))
        })?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
        cfg.transport_config(Arc::new(transport_config()));
        let socket = transport::bind_udp(opts.listen).map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
        let endpoint = quinn::Endpoint::new(
            transport::coordinator_endpoint_config(opts.creds.key.secret_der()),
            Some(cfg),
            socket,
            transport::runtime(),
        )
        .map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
        let (tx, events) = mpsc::channel(256);
        tokio::spawn(accept_loop(endpoint.clone(), Arc::new(opts), tx));
        Ok(Self { endpoint, events })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The next event; `None` once the endpoint is closed.
    pub async fn next_event(&mut self) -> Option<ServerEvent> {
        self.events.recv().await
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.endpoint
            .close(close_code::NORMAL.into(), b"coordinator shutting down");
    }
}

type Events = mpsc::Sender<ServerEvent>;

async fn accept_loop(endpoint: quinn::Endpoint, opts: Arc<ServerOptions>, tx: Events) {
    let ids = Arc::new(AtomicU64::new(1));
    while let Some(incoming) = endpoint.accept().await {
        let (opts, tx, ids) = (opts.clone(), tx.clone(), ids.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(conn, opts, tx, ids).await,
                Err(source) => {
                    let e = handshake_error(remote, source);
                    if e.is_certificate_refusal() {
                        tracing::warn!("{e}");
                    }
                    let _ = tx.send(ServerEvent::Dropped(e)).await;
                }
            }
        });
    }
}

/// The peer's identity from its verified certificate chain.
fn identify(conn: &quinn::Connection) -> Result<PeerIdentity, String> {
    let any = conn
        .peer_identity()
        .ok_or_else(|| "no client certificate".to_string())?;
    let chain = any
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity type".to_string())?;
    let leaf = chain
        .first()
        .ok_or_else(|| "empty certificate chain".to_string())?;
    peer_identity_from_der(leaf).map_err(|e| e.to_string())
}

async fn serve_connection(
    conn: quinn::Connection,
    opts: Arc<ServerOptions>,
    tx: Events,
    ids: Arc<AtomicU64>,
) {
    let remote = conn.remote_address();
    let peer = match identify(&conn) {
        Ok(p) => p,
        Err(reason) => {
            conn.close(close_code::NO_ROLE.into(), reason.as_bytes());
            let e = ServerError::NoRole { remote, reason };
            tracing::warn!("{e}");
            let _ = tx.send(ServerEvent::Dropped(e)).await;
            return;
        }
    };
    if peer.role == Role::Coordinator {
        let e = HandshakeError::RoleNotAllowed {
            cert_role: Role::Coordinator,
            what: "dial the coordinator",
            needed: Role::Worker,
        };
        conn.close(close_code::REFUSED.into(), e.to_string().as_bytes());
        let _ = tx
            .send(ServerEvent::Dropped(ServerError::Wire {
                peer,
                source: e.into(),
            }))
            .await;
        return;
    }
    let control_taken = Arc::new(AtomicBool::new(false));
    while let Ok((send, recv)) = conn.accept_bi().await {
        let ctx = ConnCtx {
            conn: conn.clone(),
            peer: peer.clone(),
            ids: ids.clone(),
            control_taken: control_taken.clone(),
        };
        let (opts, tx) = (opts.clone(), tx.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_stream(&ctx, send, recv, &opts, &tx).await {
                let _ = tx.send(ServerEvent::Dropped(e)).await;
            }
        });
    }
}

/// Closes the connection with the code matching a wire error.
pub(crate) fn drop_peer(conn: &quinn::Connection, e: &WireError) {
    let code = match e {
        WireError::Handshake(HandshakeError::VersionMismatch { .. }) => {
            close_code::VERSION_MISMATCH
        }
        WireError::Handshake(HandshakeError::BadMagic(_)) => close_code::PROTOCOL_ERROR,
        WireError::Handshake(_) | WireError::Refused(_) => close_code::REFUSED,
        WireError::Codec(CodecError::FrameTooLarge { .. }) => close_code::FRAME_TOO_LARGE,
        WireError::Codec(_) | WireError::Unexpected(_) => close_code::PROTOCOL_ERROR,
        WireError::Io(_) | WireError::Closed(_) => return,
    };
    conn.close(code.into(), e.to_string().as_bytes());
}

/// Gives a refused peer up to a second to read our preamble or refusal and
/// hang up itself, so it can report the reason in its own words.
async fn linger(conn: &quinn::Connection) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn.closed()).await;
}

/// One connection's shared state, seen by each of its streams.
struct ConnCtx {
    conn: quinn::Connection,
    peer: PeerIdentity,
    ids: Arc<AtomicU64>,
    /// Set once the connection's control stream is admitted: one per connection.
    control_taken: Arc<AtomicBool>,
}

async fn serve_stream(
    ctx: &ConnCtx,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    opts: &ServerOptions,
    tx: &Events,
) -> Result<(), ServerError> {
    let (conn, peer, ids) = (&ctx.conn, &ctx.peer, &ctx.ids);
    let wire = |source: WireError| {
        drop_peer(conn, &source);
        ServerError::Wire {
            peer: peer.clone(),
            source,
        }
    };
    let served = |e: blobs::ServeError| match e {
        blobs::ServeError::Wire(w) => wire(w),
        blobs::ServeError::Blob(source) => ServerError::Blob {
            peer: peer.clone(),
            source,
        },
    };
    // Our preamble goes out first so an older/newer peer can name the mismatch too.
    write_preamble(&mut send, opts.protocol_version)
        .await
        .map_err(wire)?;
    if let Err(e) = read_preamble(
        &mut recv,
        opts.protocol_version,
        peer.role,
        Role::Coordinator,
    )
    .await
    {
        let _ = send.finish();
        linger(conn).await;
        return Err(wire(e));
    }
    let open: StreamOpen = expect_msg(&mut recv, MAX_CONTROL_FRAME, "opening a stream")
        .await
        .map_err(wire)?;
    match open {
        StreamOpen::Control(hello) => {
            let admitted = check_hello(&hello, peer.role, &peer.name).map_err(WireError::from);
            let admitted = admitted.and_then(|()| {
                if ctx.control_taken.swap(true, Ordering::SeqCst) {
                    Err(WireError::Unexpected(
                        "a second control stream on one connection: one session per connection"
                            .into(),
                    ))
                } else {
                    Ok(())
                }
            });
            if let Err(e) = admitted {
                let _ = write_msg(&mut send, &Message::Refused(e.to_string())).await;
                let _ = send.finish();
                linger(conn).await;
                return Err(wire(e));
            }
            let session_id = ids.fetch_add(1, Ordering::Relaxed);
            let welcome = Welcome {
                version: opts.protocol_version,
                session_id,
                heartbeat_interval_ms: opts.heartbeat_interval_ms,
            };
            write_msg(&mut send, &Message::Welcome(welcome))
                .await
                .map_err(wire)?;
            let session = Session::new(conn.clone(), peer.clone(), hello, session_id, send, recv);
            let _ = tx.send(ServerEvent::Session(Box::new(session))).await;
            Ok(())
        }
        StreamOpen::BlobPut(header) => {
            blobs::serve_put(&mut send, &mut recv, opts, peer, &header)
                .await
                .map_err(served)?;
            let _ = tx
                .send(ServerEvent::BlobStored {
                    peer: peer.clone(),
                    digest: header.digest,
                })
                .await;
            Ok(())
        }
        StreamOpen::BlobGet(req) => blobs::serve_get(&mut send, opts, peer, &req)
            .await
            .map_err(served),
    }
}
