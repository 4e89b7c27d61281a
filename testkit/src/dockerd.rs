//! A private `dockerd` 20.10 (Debian's `docker.io`, BuildKit built in) used as the reference
//! builder: root only, its own socket, data root and exec root in a temp dir, no bridge, no
//! iptables. Stopped by its PID on drop.

use crate::skip::{is_root, Unavailable};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The daemon from `docker.io`.
const DOCKERD_BIN: &str = "/usr/sbin/dockerd";
/// The 20.10 CLI; the newer `docker` earlier in PATH refuses BuildKit builds without buildx.
const DOCKER_BIN: &str = "/usr/bin/docker";
/// How long to wait for the daemon to answer `docker version`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a clean shutdown after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running private `dockerd`. Drop sends SIGTERM to its PID (SIGKILL after a timeout), so its
/// own containerd child shuts down with it, then deletes the temp dir.
#[derive(Debug)]
pub struct Dockerd {
    child: Option<Child>,
    dir: Option<TempDir>,
    socket: PathBuf,
}

impl Dockerd {
    /// Start `dockerd` as root on a private socket. `insecure_registry` (`127.0.0.1:PORT`) is
    /// passed as `--insecure-registry`, so builds may pull from a plain-HTTP loopback registry.
    ///
    /// Returns an [`Unavailable`] error when not root or when docker.io is not installed.
    pub fn start(insecure_registry: Option<&str>) -> anyhow::Result<Dockerd> {
        if !is_root() {
            return Err(Unavailable::new(
                "dockerd can't start: it needs root",
                "run the tests as root (CI does)",
            )
            .into());
        }
        for bin in [DOCKERD_BIN, DOCKER_BIN] {
            if !Path::new(bin).is_file() {
                return Err(Unavailable::new(
                    format!("dockerd can't start: {bin} is missing"),
                    "run `sudo scripts/setup.sh --dev` (installs docker.io)",
                )
                .into());
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("imgfarm-dockerd-")
            .tempdir()
            .context("creating the dockerd temp dir")?;
        let d = dir.path();
        let socket = d.join("docker.sock");
        let log = std::fs::File::create(d.join("dockerd.log")).context("creating dockerd.log")?;
        let mut cmd = Command::new(DOCKERD_BIN);
        cmd.arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dup log")?)
            .stderr(log);
        if let Some(r) = insecure_registry {
            cmd.arg("--insecure-registry").arg(r);
        }
        let child = cmd.spawn().context("spawning dockerd")?;
        let mut me = Dockerd {
            child: Some(child),
            dir: Some(dir),
            socket,
        };
        me.wait_ready()?;
        Ok(me)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                    return Err(Unavailable::new(
                        format!("dockerd can't start: it exited with {st}: {log}"),
                        "check that docker.io works on this machine",
                    )
                    .into());
                }
            }
            if self.socket.exists() {
                let ok = self
                    .docker(["version", "--format", "{{.Server.Version}}"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    return Ok(());
                }
            }
            if start.elapsed() > READY_TIMEOUT {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                bail!("dockerd did not answer within {READY_TIMEOUT:?}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `/usr/bin/docker ARGS` against this daemon, with `DOCKER_BUILDKIT=1`.
    pub fn docker<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(DOCKER_BIN);
        c.env("DOCKER_HOST", self.host())
            .env("DOCKER_BUILDKIT", "1")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", self.config_dir())
            .args(args);
        c
    }

    /// `unix://SOCKET` for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn root(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    fn config_dir(&self) -> PathBuf {
        self.root().join("cli-config")
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.root().join("dockerd.log")
    }

    /// The daemon's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop the daemon (SIGTERM to its PID, SIGKILL after a timeout). Also done on drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let start = Instant::now();
            while start.elapsed() < STOP_TIMEOUT {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            // Overlay mounts are gone after a clean shutdown, but dockerd leaves its
            // `exec/netns/default` (an nsfs bind mount) behind, which made the removal fail
            // and kept the whole data root (over 200 MB after a pull) in the temp dir.
            unmount_under(dir.path());
            let _ = dir.close();
        }
    }
}

/// Detach every mount at or below `dir` (deepest first), from `/proc/self/mounts`.
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
