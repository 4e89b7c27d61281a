//! The host's own network addresses, for fixtures that must be reachable from a build step.
//!
//! RUN steps get their own network namespace (BuildKit's `sandbox` network): the host's
//! loopback is out of their reach, as it is for a real build farm. A fixture that stands for
//! a service on the network (a package mirror, an HTTP server) therefore listens on the
//! host's non-loopback address, found here at runtime (this test machine has `eth0`
//! 192.0.2.2; CI machines differ).

use crate::skip::Unavailable;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};

/// The host's IPv4 address on its default route: the source address the kernel picks for
/// an outside destination (a UDP `connect` sends nothing); without a default route, the
/// first non-loopback, non-link-local IPv4 address `hostname -I` lists. [`Unavailable`]
/// when the host has none.
pub fn host_ipv4() -> anyhow::Result<Ipv4Addr> {
    let by_route = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            // TEST-NET-3: never answered, only routed.
            s.connect("203.0.113.1:9")?;
            s.local_addr()
        })
        .ok()
        .and_then(|a| match a.ip() {
            IpAddr::V4(v4) if usable(v4) => Some(v4),
            _ => None,
        });
    if let Some(a) = by_route {
        return Ok(a);
    }
    let out = std::process::Command::new("hostname").arg("-I").output();
    if let Ok(out) = out {
        for w in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(v4) = w.parse::<Ipv4Addr>() {
                if usable(v4) {
                    return Ok(v4);
                }
            }
        }
    }
    Err(Unavailable::new(
        "the host has no non-loopback IPv4 address",
        "give the machine a network address (RUN steps cannot reach the host's loopback)",
    )
    .into())
}

fn usable(a: Ipv4Addr) -> bool {
    !a.is_loopback() && !a.is_link_local() && !a.is_unspecified()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_address_is_not_loopback() {
        if let Ok(a) = super::host_ipv4() {
            assert!(!a.is_loopback() && !a.is_link_local(), "{a}");
        }
    }
}
