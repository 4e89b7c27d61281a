//! A fake remote host for fault tests: a network namespace joined to the host's by one veth
//! pair, so a process inside (a farm worker) reaches a coordinator listening on the host end's
//! address, and the test can cut the link or drop packets between the two.
//!
//! What works on this machine kind (see the testbed notes): loss with iptables `statistic`
//! (no netem in the kernel), rate limits with tbf, and cuts by taking the link down.
//! Needs root; without it [`NetNs::new`] returns [`Unavailable`].
//!
//! Dropping a `NetNs` deletes the namespace, which also deletes the veth pair.

use crate::cmd::{have_tool, run_checked};
use crate::skip::{is_root, Unavailable};
use anyhow::Context;
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a veth link to the host namespace (a /30 of its own).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_if: String,
    host: Ipv4Addr,
    inside: Ipv4Addr,
}

impl NetNs {
    /// Creates `imgf-<pid>-<n>` with the link up. The host end gets `10.201.a.b/30`, the
    /// namespace end the next address; `a.b` come from this process's pid and a counter, so
    /// tests running at once get distinct subnets.
    pub fn new() -> anyhow::Result<NetNs> {
        if !is_root() {
            return Err(Unavailable::new(
                "network namespaces need root",
                "run the tests as root, e.g. `sudo -E cargo test`",
            )
            .into());
        }
        for tool in ["ip", "iptables"] {
            if !have_tool(tool) {
                return Err(Unavailable::new(
                    format!("{tool} is missing"),
                    "run `sudo scripts/setup.sh --dev` (installs iproute2 and iptables)",
                )
                .into());
            }
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // 64 /30 subnets per third octet; the third octet spreads processes apart.
        let slot = (pid % 200) * 64 + n % 64;
        let (c, d) = ((slot / 64) as u8, ((slot % 64) * 4) as u8);
        let host = Ipv4Addr::new(10, 201, c, d + 1);
        let inside = Ipv4Addr::new(10, 201, c, d + 2);
        let name = format!("imgf-{pid}-{n}");
        let host_if = format!("ivh{}x{n}", pid % 100_000);
        let ns = NetNs {
            name,
            host_if,
            host,
            inside,
        };
        ns.set_up()
            .with_context(|| format!("creating network namespace {}", ns.name))?;
        Ok(ns)
    }

    fn set_up(&self) -> anyhow::Result<()> {
        let ip = |args: &[&str]| run_checked(Command::new("ip").args(args)).map(drop);
        ip(&["netns", "add", &self.name])?;
        ip(&[
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &self.name,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", self.host),
            "dev",
            &self.host_if,
        ])?;
        ip(&["link", "set", &self.host_if, "up"])?;
        ip(&["-n", &self.name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{}/30", self.inside),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &self.name, "link", "set", "eth0", "up"])?;
        // Both ends answer at once (a veth has no carrier delay worth waiting for, but ARP
        // does): wait until the host end is reachable from inside.
        for _ in 0..50 {
            let ok = Command::new("ip")
                .args(["netns", "exec", &self.name, "ping", "-c1", "-W1"])
                .arg(self.host.to_string())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok || !have_tool("ping") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(())
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host end's address: listen here to be reachable from inside.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host
    }

    /// The address inside the namespace.
    pub fn inside_addr(&self) -> Ipv4Addr {
        self.inside
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    /// `ip` execs it, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Takes the link down (inside end), so nothing passes until [`NetNs::heal`].
    pub fn cut(&self) -> anyhow::Result<()> {
        run_checked(Command::new("ip").args(["-n", &self.name, "link", "set", "eth0", "down"]))
            .map(drop)
    }

    /// Brings the link back up.
    pub fn heal(&self) -> anyhow::Result<()> {
        run_checked(Command::new("ip").args(["-n", &self.name, "link", "set", "eth0", "up"]))
            .map(drop)
    }

    /// Drops `pct` percent of the packets entering and of those leaving the namespace
    /// (iptables `statistic`, at random); 0 removes the rules.
    pub fn loss(&self, pct: u32) -> anyhow::Result<()> {
        for chain in ["INPUT", "OUTPUT"] {
            // -F: only our rules live in this namespace.
            run_checked(self.command("iptables").args(["-F", chain]))?;
            if pct > 0 {
                run_checked(self.command("iptables").args([
                    "-A",
                    chain,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &format!("{:.4}", f64::from(pct) / 100.0),
                    "-j",
                    "DROP",
                ]))?;
            }
        }
        Ok(())
    }

    /// Packets the loss rules dropped so far (both directions).
    pub fn dropped(&self) -> u64 {
        let mut n = 0;
        for chain in ["INPUT", "OUTPUT"] {
            if let Ok(o) = self
                .command("iptables")
                .args(["-L", chain, "-v", "-x", "-n"])
                .output()
            {
                n += String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.contains("DROP"))
                    .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        n
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth, and with it the host end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
