//! TEMPORARY stand-in for the `fixture` branch's `imgfarm_testkit::{DebianBase, AptRepo}` (same
//! API), reading caches made by hand in /var/tmp/corpus-stub. Deleted when `fixture` is merged.

use anyhow::{bail, Context};
use imgfarm_testkit::{Registry, Unavailable};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const DIR: &str = "/var/tmp/corpus-stub";

pub struct DebianBase {
    layout: PathBuf,
}

impl DebianBase {
    pub fn get() -> anyhow::Result<DebianBase> {
        let layout = Path::new(DIR).join("oci");
        if !layout.join("index.json").is_file() {
            return Err(Unavailable::new("no stub Debian base", "make it by hand").into());
        }
        Ok(DebianBase { layout })
    }

    fn push(&self, name: &str, reg: &Registry, repo: &str, tag: &str) -> anyhow::Result<()> {
        let out = Command::new("skopeo")
            .args(["copy", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{name}", self.layout.display()))
            .arg(format!("docker://{}", reg.image_ref(repo, tag)))
            .output()
            .context("skopeo")?;
        if !out.status.success() {
            bail!("skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    pub fn push_to(&self, reg: &Registry, repo: &str, tag: &str) -> anyhow::Result<()> {
        self.push("bookworm", reg, repo, tag)
    }

    pub fn push_dev_to(&self, reg: &Registry, repo: &str, tag: &str) -> anyhow::Result<()> {
        self.push("bookworm-dev", reg, repo, tag)
    }
}

pub struct AptRepo {
    child: Child,
    port: u16,
}

impl AptRepo {
    pub fn start() -> anyhow::Result<AptRepo> {
        let dir = Path::new(DIR).join("repo");
        if !dir.join("Packages").is_file() {
            return Err(Unavailable::new("no stub apt repo", "make it by hand").into());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(AptRepo { child, port });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        bail!("stub apt repo did not start")
    }

    pub fn sources_line(&self) -> String {
        format!("deb [trusted=yes] http://127.0.0.1:{}/ ./", self.port)
    }

    pub fn hello_deb(&self) -> &Path {
        Path::new("/var/tmp/corpus-stub/repo/imgfarm-hello_1.0_all.deb")
    }
}

impl Drop for AptRepo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
