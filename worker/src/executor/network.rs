//! The isolated network of a step ([`super::StepNetwork::Isolated`], BuildKit's default
//! `sandbox` network): the step's own network namespace, connected to the outside by
//! `pasta` (Debian's `passt` package), the user-mode networking rootless podman uses.
//!
//! `pasta` runs on the worker's side of the namespace, as the worker's user. It translates
//! the namespace's TCP, UDP and ICMP traffic into ordinary sockets of the worker, so a step
//! reaches what the worker reaches through its routes, except:
//! - the worker's loopback: no port is forwarded either way (`-t none -u none -T none
//!   -U none`), and the gateway address is not mapped to the worker's loopback
//!   (`--no-map-gw`; a connection to the gateway then hangs rather than being refused);
//! - link-local destinations ([`BLOCKED_ROUTES`], cloud metadata at 169.254.169.254): the
//!   step's pid 1 adds `unreachable` routes for them before it drops capabilities, and the
//!   step keeps Docker's default set, without `CAP_NET_ADMIN`, so it cannot remove them.
//!
//! The namespace gets fixed addresses ([`NS_ADDR`], gateway [`GATEWAY`], as slirp4netns),
//! not a copy of the worker's: the worker's own non-loopback addresses then stay reachable
//! from a step, as any other host on the network (a package mirror on the worker, say).
//! DNS goes to [`DNS_FORWARD`], which `pasta` forwards to the first resolver of the worker's
//! `/etc/resolv.conf` (a loopback resolver such as systemd-resolved's works too).
//!
//! This module holds the pure parts (arguments, readiness, messages) and the one process
//! handle, [`Pasta`], that the executor's caller side owns for the life of a step.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The step's IPv4 address.
pub const NS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// Prefix length of [`NS_ADDR`]'s subnet.
pub const NS_PREFIX: u8 = 24;
/// The step's default gateway (pasta's end; not mapped to the worker).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The step's resolver: pasta forwards queries sent here to the worker's first resolver.
pub const DNS_FORWARD: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

/// Destinations a step with an isolated network cannot reach (an `unreachable` route each):
/// IPv4 link-local, RFC 3927, where clouds serve instance metadata and credentials.
pub const BLOCKED_ROUTES: [(IpAddr, u8); 1] = [(IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16)];

/// How long the caller waits for pasta to configure the namespace.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The program started (looked up in `PATH`).
pub const PASTA: &str = "pasta";

/// What to do when pasta is missing or fails.
pub const FIX: &str = "the isolated RUN network needs pasta: install it (Debian: apt-get \
install passt) and make /dev/net/tun usable by the worker's user (chmod 0666 \
/dev/net/tun, Debian's default); or give the step RUN --network=none";

/// pasta's arguments to connect the network namespace of `pid` (and join its user
/// namespace), running as `uid:gid` (pasta started as root would otherwise switch to
/// `nobody`, which may not enter a namespace owned by root).
pub fn pasta_args(pid: i32, uid: u32, gid: u32) -> Vec<String> {
    let mut a: Vec<String> = [
        "--foreground",
        "--quiet",
        "--config-net",
        // No port forwarding in either direction: the worker's loopback stays out of reach.
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "--no-map-gw",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    a.push("--runas".into());
    a.push(format!("{uid}:{gid}"));
    for (flag, v) in [
        ("--address", NS_ADDR.to_string()),
        ("--netmask", NS_PREFIX.to_string()),
        ("--gateway", GATEWAY.to_string()),
        ("--dns-forward", DNS_FORWARD.to_string()),
    ] {
        a.push(flag.into());
        a.push(v);
    }
    a.push(pid.to_string());
    a
}

/// Whether `/proc/<pid>/net/route` (the kernel's IPv4 routing table of that process's
/// network namespace) has a default route: pasta adds it last when it configures the
/// namespace.
pub fn has_default_route(route_table: &str) -> bool {
    route_table.lines().skip(1).any(|l| {
        let mut w = l.split_whitespace();
        w.next().is_some() && w.next() == Some("00000000")
    })
}

/// Whether `/proc/net/ipv6_route` has a default route (`::/0`) through a device other
/// than `lo` (where the kernel keeps its unreachable defaults).
pub fn has_default_route_v6(route_table: &str) -> bool {
    route_table.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.len() >= 10 && w[0].bytes().all(|b| b == b'0') && w[1] == "00" && w[9] != "lo"
    })
}

/// Whether this host has a way out: an IPv4 or IPv6 default route in the worker's own
/// network namespace. Without one pasta has no interface to copy and refuses to start ("No
/// external routable interface"); a step then gets only its loopback, as with
/// `RUN --network=none`, which is what the host could offer it anyway, and never the host's
/// network.
pub fn host_has_route_out() -> bool {
    let v4 = std::fs::read_to_string("/proc/self/net/route").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/self/net/ipv6_route").unwrap_or_default();
    has_default_route(&v4) || has_default_route_v6(&v6)
}

/// The warning of a step that gets only loopback because the host has no route out.
pub const NO_ROUTE_OUT: &str = "this host has no default route, so the step's own network \
     has only loopback (as RUN --network=none)";

/// pasta's error output without the noise of a missing syslog.
pub fn clean_stderr(raw: &str) -> String {
    raw.lines()
        .filter(|l| !(l.starts_with("Failed to send") && l.ends_with("to syslog")))
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The error for a pasta that could not start or connect the namespace.
pub fn failure(detail: &str) -> String {
    let hint = if detail.contains("tun") {
        " (/dev/net/tun cannot be opened: chmod 0666 /dev/net/tun)"
    } else {
        ""
    };
    format!("connecting the step's network failed: {detail}{hint}; {FIX}")
}

/// A running pasta, connected to one step's namespace. Dropping it kills it (SIGKILL: it
/// keeps no state, and SIGTERM took it about 50 ms to act on) and reaps it.
#[derive(Debug)]
pub struct Pasta {
    child: Child,
}

impl Pasta {
    /// Start pasta on the namespaces of `pid` and wait until the namespace has its default
    /// route. Errors are complete messages naming the fix.
    pub fn start(pid: i32) -> Result<Pasta, String> {
        let args = pasta_args(
            pid,
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let mut cmd = Command::new(PASTA);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; pasta dies with the thread that runs the step
        // if the worker dies before it could stop it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                failure("pasta is not installed (not found in PATH)")
            } else {
                failure(&format!("starting pasta: {e}"))
            }
        })?;
        let mut p = Pasta { child };
        let routes = format!("/proc/{pid}/net/route");
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = p.child.stderr.take() {
                    let _ = (&mut e).take(16 << 10).read_to_string(&mut err);
                }
                let detail = clean_stderr(&err);
                return Err(failure(&format!(
                    "pasta exited ({status}){}",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                )));
            }
            match std::fs::read_to_string(&routes) {
                Ok(t) if has_default_route(&t) => return Ok(p),
                Ok(_) => {}
                Err(e) => return Err(failure(&format!("reading {routes}: {e}"))),
            }
            if t0.elapsed() > READY_TIMEOUT {
                return Err(failure(&format!(
                    "pasta did not configure the namespace within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// pasta's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_forward_no_port_and_do_not_map_the_gateway() {
        let a = pasta_args(42, 1001, 1002);
        let s = a.join(" ");
        for want in [
            "-t none",
            "-u none",
            "-T none",
            "-U none",
            "--no-map-gw",
            "--config-net",
            "--runas 1001:1002",
            "--address 10.0.2.100",
            "--gateway 10.0.2.2",
            "--dns-forward 10.0.2.3",
        ] {
            assert!(s.contains(want), "{want} missing from {s}");
        }
        assert_eq!(a.last().map(String::as_str), Some("42"));
    }

    #[test]
    fn ipv6_default_routes_count_unless_on_lo() {
        let via_eth = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n";
        let unreachable = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        let local = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n";
        assert!(has_default_route_v6(via_eth));
        assert!(!has_default_route_v6(unreachable));
        assert!(!has_default_route_v6(local));
        assert!(!has_default_route_v6(""));
    }

    #[test]
    fn default_route_is_read_from_proc_net_route() {
        let head = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n";
        assert!(!has_default_route(head));
        assert!(!has_default_route(&format!(
            "{head}eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
        )));
        assert!(has_default_route(&format!(
            "{head}eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\n"
        )));
    }

    #[test]
    fn failure_names_the_fix() {
        let e = failure(&clean_stderr(
            "Failed to send 51 bytes to syslog\nFailed to open tun socket in namespace: Permission denied\n",
        ));
        assert!(e.contains("Failed to open tun socket"), "{e}");
        assert!(e.contains("chmod 0666 /dev/net/tun"), "{e}");
        assert!(e.contains("apt-get install passt"), "{e}");
        assert!(!e.contains("syslog"), "{e}");
    }
}
