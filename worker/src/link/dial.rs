//! Address parsing, endpoint creation and transport tuning for the dialer.

use super::LinkError;
use imgfarm_transport::quic::{bind_udp, runtime};
use std::net::SocketAddr;

/// A resolved coordinator address.
#[derive(Debug, Clone)]
pub struct FarmAddr {
    /// Where to send.
    pub socket: SocketAddr,
    /// The name to verify the coordinator's certificate against (DNS or IP SAN).
    pub server_name: String,
}

/// Parses `quic://HOST:PORT` or `HOST:PORT` (IPv6 as `[::1]:PORT`) and resolves it.
pub async fn parse_farm_addr(addr: &str) -> Result<FarmAddr, LinkError> {
    let bad = |reason: &str| LinkError::Address {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let rest = match addr.split_once("://") {
        Some(("quic", rest)) => rest,
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "unsupported scheme {scheme:?}: use quic://HOST:PORT"
            )))
        }
        None => addr,
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("missing :PORT (use quic://HOST:PORT)"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("port is not a number 1-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let socket = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| bad(&format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| bad("resolves to no address"))?;
    Ok(FarmAddr {
        socket,
        server_name: host.to_string(),
    })
}

/// Endpoint and transport settings shared with the coordinator, so both
/// ends of a farm connection are tuned alike (one definition, in
/// `imgfarm_transport::quic`).
pub use imgfarm_transport::quic::{dialer_transport_config as transport_config, endpoint_config};

/// A client-only endpoint on an ephemeral port of the right address family,
/// with the farm's socket buffers and socket runtime (see
/// `imgfarm_transport::quic::runtime`).
pub(super) fn client_endpoint(target: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let local: SocketAddr = if target.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    quinn::Endpoint::new(endpoint_config(), None, bind_udp(local)?, runtime())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses() {
        let a = parse_farm_addr("quic://127.0.0.1:7000").await.unwrap();
        assert_eq!(a.socket, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(a.server_name, "127.0.0.1");
        let a = parse_farm_addr("[::1]:7000").await.unwrap();
        assert_eq!(a.server_name, "::1");
        for bad in ["http://x:1", "quic://x", "quic://:1", "x:notaport"] {
            assert!(parse_farm_addr(bad).await.is_err(), "{bad}");
        }
    }
}
