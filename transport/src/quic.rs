//! QUIC transport tuning and socket setup.

use imgfarm_common::identity::CertProblem;
use imgfarm_common::proto::{close_code, windows};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, UdpPoller};
use std::future::Future;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Endpoint settings: UDP payloads up to [`windows::MAX_UDP_PAYLOAD`] so
/// MTU discovery can use large datagrams where the path allows.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut e = quinn::EndpointConfig::default();
    let _ = e.max_udp_payload_size(windows::MAX_UDP_PAYLOAD);
    e
}

/// The coordinator's endpoint settings: as [`endpoint_config`], with the
/// stateless-reset key derived from the coordinator's private key instead
/// of a random one. A coordinator restarted after a crash then answers
/// packets of its predecessor's connections with a reset the peers accept
/// (RFC 9000 §10.3: the token must come from the same static key), so
/// workers and clients notice at once and reconnect, instead of waiting
/// out the idle timeout.
///
/// The connection-id generator's key comes from the same secret: quinn's
/// hashed ids carry a check value under a per-endpoint key, and a packet
/// whose id fails the check is dropped before any reset is considered. With
/// a random key, the restarted coordinator dropped every old packet
/// silently and peers waited 30 s for their idle timeout (issue 15).
pub fn coordinator_endpoint_config(private_key: &[u8]) -> quinn::EndpointConfig {
    use sha2::{Digest, Sha256};
    let derive = |label: &[u8]| {
        let mut h = Sha256::new();
        h.update(label);
        h.update(private_key);
        h.finalize()
    };
    let seed = derive(b"imgfarm stateless reset key v1\0");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seed);
    let mut e = quinn::EndpointConfig::new(std::sync::Arc::new(key));
    let cid = derive(b"imgfarm connection id key v1\0");
    let cid_key = u64::from_le_bytes(cid[..8].try_into().unwrap_or([0; 8]));
    e.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
            as Box<dyn quinn::ConnectionIdGenerator>
    });
    let _ = e.max_udp_payload_size(windows::MAX_UDP_PAYLOAD);
    e
}

/// Transport parameters for farm connections: flow-control windows large
/// enough for bulk blob streams (see [`windows`]), keep-alives well under
/// the idle timeout so a quiet control stream stays up. The coordinator
/// accepts the streams its peers open.
pub fn transport_config() -> quinn::TransportConfig {
    tuned_transport(256)
}

/// The same parameters for a dialling peer (worker or client), which
/// accepts no streams from the coordinator.
pub fn dialer_transport_config() -> quinn::TransportConfig {
    tuned_transport(0)
}

fn tuned_transport(accepted_bidi_streams: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(windows::STREAM_RECEIVE.into());
    t.receive_window(windows::CONNECTION_RECEIVE.into());
    t.send_window(windows::SEND);
    t.max_concurrent_bidi_streams(accepted_bidi_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(windows::MAX_UDP_PAYLOAD);
    mtu.black_hole_cooldown(Duration::from_secs(windows::BLACK_HOLE_COOLDOWN_SECS));
    t.mtu_discovery_config(Some(mtu));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    if let Ok(idle) = Duration::from_secs(30).try_into() {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// Which end of a connection refused a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBy {
    /// This endpoint refused the peer's certificate.
    Us,
    /// The peer refused this endpoint's certificate.
    Peer,
}

/// A certificate refusal read from a failed connection: who refused, what
/// was wrong, and the refusing TLS stack's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRefusal {
    /// Who refused.
    pub by: RefusedBy,
    /// What was wrong.
    pub problem: CertProblem,
    /// The refusing side's error text (e.g. `invalid peer certificate: UnknownIssuer`).
    pub detail: String,
}

/// The TLS alert a QUIC crypto error code carries (`0x100 + alert`).
fn tls_alert(code: u64) -> Option<u8> {
    (0x100..0x200)
        .contains(&code)
        .then_some((code & 0xff) as u8)
}

/// Whether `e` is a certificate refusal, and whose: our TLS stack's own
/// verification error (a transport error with a certificate alert), the
/// peer's alert in its CONNECTION_CLOSE, or the coordinator's
/// [`close_code::NO_ROLE`] close for a certificate without an imgfarm role.
/// Any other failure (timeouts, resets, version or ALPN mismatches) is `None`.
pub fn cert_refusal(e: &quinn::ConnectionError) -> Option<CertRefusal> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (by, alert_or_role, detail) = match e {
        quinn::ConnectionError::TransportError(t) => (
            RefusedBy::Us,
            tls_alert(u64::from(t.code)),
            t.reason.clone(),
        ),
        quinn::ConnectionError::ConnectionClosed(c) => (
            RefusedBy::Peer,
            tls_alert(u64::from(c.error_code)),
            text(&c.reason),
        ),
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == close_code::NO_ROLE.into() =>
        {
            return Some(CertRefusal {
                by: RefusedBy::Peer,
                problem: CertProblem::NoRole,
                detail: text(&c.reason),
            });
        }
        _ => return None,
    };
    let alert = alert_or_role?;
    let problem = CertProblem::from_alert(alert)?;
    let detail = if detail.is_empty() {
        format!("TLS alert {alert}")
    } else {
        detail
    };
    Some(CertRefusal {
        by,
        problem,
        detail,
    })
}

/// Binds a UDP socket with larger kernel buffers (best effort).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    set_buffers(&socket);
    Ok(socket)
}

fn set_buffers(socket: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(windows::SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(windows::SOCKET_BUFFER);
}

/// The quinn runtime for farm endpoints: tokio, with sockets wrapped so a
/// segmentation-offload batch never exceeds what one `sendmsg` may carry.
///
/// Why: quinn 0.11 batches up to 10 datagrams of the current path MTU into
/// one GSO send. Once MTU discovery reaches large datagrams (loopback, MTU
/// 65536) such a batch is bigger than the 64 KiB an IP datagram can hold,
/// the kernel refuses it with `EMSGSIZE`, quinn-udp drops it silently, and
/// the resulting "losses" of large packets make quinn's black-hole detector
/// reset the MTU to 1200 bytes for the rest of the connection
/// (quinn-rs/quinn#2201).
pub fn runtime() -> Arc<dyn Runtime> {
    Arc::new(FarmRuntime)
}

#[derive(Debug)]
struct FarmRuntime;

impl Runtime for FarmRuntime {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        quinn::TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        quinn::TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(&self, t: std::net::UdpSocket) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(BoundedGso {
            inner: quinn::TokioRuntime.wrap_udp_socket(t)?,
        }))
    }
}

/// Largest UDP payload one `sendmsg` may carry, GSO batch included: an IPv4
/// datagram is at most 65535 bytes with a 20-byte IP and an 8-byte UDP
/// header (the IPv6 limit is higher; the smaller one serves both).
const MAX_SEND_PAYLOAD: usize = 65_535 - 20 - 8;

/// A UDP socket that splits a GSO batch larger than [`MAX_SEND_PAYLOAD`]
/// into several sends of whole segments.
#[derive(Debug)]
struct BoundedGso {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl AsyncUdpSocket for BoundedGso {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    /// A batch that fits goes out as is. A larger one goes out in chunks of
    /// as many whole segments as fit; if the socket fills up after the first
    /// chunk, `WouldBlock` makes quinn retry the whole batch later, so the
    /// peer may see some datagrams twice (QUIC discards duplicate packets).
    fn try_send(&self, transmit: &Transmit<'_>) -> std::io::Result<()> {
        for part in split_batch(transmit) {
            self.inner.try_send(&part)?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The sends a batch needs: itself when it fits in one, else runs of whole
/// segments of at most [`MAX_SEND_PAYLOAD`] bytes (at least one segment each).
fn split_batch<'a>(transmit: &Transmit<'a>) -> impl Iterator<Item = Transmit<'a>> {
    let len = transmit.contents.len();
    let segment = transmit.segment_size.unwrap_or(len).max(1);
    let step = if len <= MAX_SEND_PAYLOAD {
        len.max(1)
    } else {
        (MAX_SEND_PAYLOAD / segment).max(1) * segment
    };
    let (destination, ecn, src_ip, contents) = (
        transmit.destination,
        transmit.ecn,
        transmit.src_ip,
        transmit.contents,
    );
    let whole = transmit.segment_size;
    contents.chunks(step).map(move |chunk| Transmit {
        destination,
        ecn,
        contents: chunk,
        segment_size: if chunk.len() > segment { whole } else { None },
        src_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local TLS failure with `alert`, as quinn reports it.
    fn tls_error(alert: u8, reason: &str) -> quinn::ConnectionError {
        let mut e =
            quinn::ConnectionError::TransportError(quinn::TransportErrorCode::crypto(alert).into());
        if let quinn::ConnectionError::TransportError(t) = &mut e {
            t.reason = reason.into();
        }
        e
    }

    #[test]
    fn certificate_refusals_are_told_from_other_failures() {
        let ours = tls_error(48, "invalid peer certificate: UnknownIssuer");
        assert_eq!(
            cert_refusal(&ours),
            Some(CertRefusal {
                by: RefusedBy::Us,
                problem: CertProblem::UnknownCa,
                detail: "invalid peer certificate: UnknownIssuer".into(),
            })
        );
        let theirs = quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(45),
            frame_type: None,
            reason: b"".as_slice().into(),
        });
        let r = cert_refusal(&theirs).unwrap();
        assert_eq!((r.by, r.problem), (RefusedBy::Peer, CertProblem::Expired));
        assert_eq!(r.detail, "TLS alert 45");
        let no_role = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: close_code::NO_ROLE.into(),
            reason: b"no imgfarm://role/ URI".as_slice().into(),
        });
        assert_eq!(cert_refusal(&no_role).unwrap().problem, CertProblem::NoRole);
        // Not about certificates: no_application_protocol, a refused hello, timeouts.
        let alpn = tls_error(120, "no ALPN");
        let refused = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: close_code::REFUSED.into(),
            reason: b"".as_slice().into(),
        });
        for e in [alpn, refused, quinn::ConnectionError::TimedOut] {
            assert_eq!(cert_refusal(&e), None, "{e}");
        }
    }

    fn batch(contents: &[u8], segment_size: Option<usize>) -> Transmit<'_> {
        Transmit {
            destination: "127.0.0.1:9".parse().unwrap(),
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        }
    }

    fn shape(t: &Transmit<'_>) -> Vec<(usize, Option<usize>)> {
        split_batch(t)
            .map(|p| (p.contents.len(), p.segment_size))
            .collect()
    }

    /// quinn only runs MTU discovery on sockets that forbid fragmentation
    /// (`IP_MTU_DISCOVER`/`IPV6_DONTFRAG` set); check it for IPv4, IPv6
    /// and dual-stack listeners.
    #[tokio::test]
    async fn farm_sockets_forbid_fragmentation() {
        for addr in ["127.0.0.1:0", "0.0.0.0:0", "[::1]:0", "[::]:0"] {
            let Ok(socket) = bind_udp(addr.parse().unwrap()) else {
                continue; // no IPv6 on this host
            };
            let wrapped = FarmRuntime.wrap_udp_socket(socket).unwrap();
            assert!(
                !wrapped.may_fragment(),
                "{addr}: MTU discovery would be off"
            );
        }
    }

    #[test]
    fn small_batches_go_out_whole() {
        let data = vec![0u8; 10 * 1452];
        assert_eq!(shape(&batch(&data, Some(1452))), [(14_520, Some(1452))]);
        assert_eq!(shape(&batch(&data[..1200], None)), [(1200, None)]);
    }

    #[test]
    fn oversized_batches_split_on_segment_boundaries() {
        // Ten 65495-byte datagrams: one per send.
        let data = vec![0u8; 10 * 65_495 - 100];
        let parts = shape(&batch(&data, Some(65_495)));
        assert_eq!(parts.len(), 10);
        assert!(parts[..9].iter().all(|p| *p == (65_495, None)));
        assert_eq!(parts[9], (65_395, None));
        // 9000-byte segments: seven per send, last run shorter.
        let data = vec![0u8; 10 * 9000];
        assert_eq!(
            shape(&batch(&data, Some(9000))),
            [(63_000, Some(9000)), (27_000, Some(9000))]
        );
        for (len, _) in shape(&batch(&vec![0u8; 640_000], Some(20_000))) {
            assert!(len <= MAX_SEND_PAYLOAD);
        }
    }
}
