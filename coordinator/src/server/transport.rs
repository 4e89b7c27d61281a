//! QUIC transport tuning and socket setup.

use imgfarm_common::proto::windows;
use std::net::SocketAddr;
use std::time::Duration;

/// Endpoint settings: UDP payloads up to [`windows::MAX_UDP_PAYLOAD`] so
/// MTU discovery can use large datagrams where the path allows.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut e = quinn::EndpointConfig::default();
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
    t.mtu_discovery_config(Some(mtu));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    if let Ok(idle) = Duration::from_secs(30).try_into() {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// Binds a UDP socket with larger kernel buffers (best effort).
pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    set_buffers(&socket);
    Ok(socket)
}

fn set_buffers(socket: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(windows::SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(windows::SOCKET_BUFFER);
}
