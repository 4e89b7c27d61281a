//! A local apt repository, so `apt-get install` in tests never touches Debian's mirrors.
//!
//! [`AptRepo::start`] puts into a temp dir:
//! - the real .debs of [`APT_REPO_PACKAGES`] (`jq`, `libcap2-bin`, `uidmap`, `passt`,
//!   `ca-certificates` and what they need beyond minbase) for amd64 and arm64 that
//!   `scripts/setup.sh --dev` cached in `IMGFARM_APT_DIR` (default `/var/cache/imgfarm/apt`);
//!   with them `apt-get install jq` (and `libcap2-bin`, for `setcap`) works in the bookworm
//!   minbase image, and so does imgfarm's own image (the repository's `Dockerfile`);
//! - `imgfarm-hello_1.0_all.deb`, made with `dpkg-deb --build`: `/usr/bin/imgfarm-hello` (a sh
//!   script printing `hello from imgfarm-hello`) and its copyright file; its postinst creates
//!   the system user and group `imgfarm-hello` (`useradd --system`) and
//!   `/var/lib/imgfarm-hello` (owned by it, mode 0750) holding `state` (mode 0640);
//! - a flat repository index: `Packages` (`dpkg-scanpackages`), `Packages.gz` (`gzip -n`) and
//!   an unsigned `Release` with their SHA256 sums.
//!
//! A small HTTP server thread (GET and HEAD of files, keep-alive) serves it on the host's
//! non-loopback address ([`crate::host_ipv4`]) and a free port, as a mirror on the network:
//! RUN steps have their own network namespace and cannot reach the host's loopback, but they
//! reach that address through their user-mode network (and BuildKit's steps too). Clients
//! use [`AptRepo::sources_line`] (`[trusted=yes]`, as nothing is signed).

use crate::cmd::{have_tool, run_checked};
use crate::skip::Unavailable;
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tempfile::TempDir;

/// Default directory of the cached .debs; `scripts/setup.sh --dev` fills it.
const DEFAULT_APT_DIR: &str = "/var/cache/imgfarm/apt";
/// The cached packages: jq and what the bookworm minbase image lacks for it, libcap2-bin
/// (`setcap`, for the realworld corpus; its libcap2 is in minbase), and what imgfarm's own
/// image (the repository's `Dockerfile`) installs on minbase: `uidmap` (with `libsubid4`),
/// `passt` and `ca-certificates` (with `openssl` and `libssl3`). `scripts/setup.sh --dev`
/// downloads the same list (`APT_REPO_PKGS`).
pub const APT_REPO_PACKAGES: [&str; 10] = [
    "jq",
    "libjq1",
    "libonig5",
    "libcap2-bin",
    "uidmap",
    "libsubid4",
    "passt",
    "ca-certificates",
    "openssl",
    "libssl3",
];
/// Architectures of the cached packages.
const APT_ARCHES: [&str; 2] = ["amd64", "arm64"];
/// The name of the package made at start.
pub const HELLO_PACKAGE: &str = "imgfarm-hello";
/// The line `/usr/bin/imgfarm-hello` prints.
pub const HELLO_OUTPUT: &str = "hello from imgfarm-hello";
/// mtime of the files in the hello package (`SOURCE_DATE_EPOCH` for dpkg-deb).
const HELLO_EPOCH: &str = "1747699200";
/// How long a connection may sit idle before the server drops it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

const HELLO_CONTROL: &str = "\
Package: imgfarm-hello
Version: 1.0
Architecture: all
Maintainer: imgfarm tests <imgfarm-tests@localhost>
Depends: passwd
Section: misc
Priority: optional
Description: imgfarm test package
 Prints a line, and its postinst creates a system user, a directory and a file
 with particular owners and modes, for checking that builds keep them.
";

const HELLO_POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent group imgfarm-hello >/dev/null; then
        groupadd --system imgfarm-hello
    fi
    if ! getent passwd imgfarm-hello >/dev/null; then
        useradd --system --gid imgfarm-hello --home-dir /var/lib/imgfarm-hello \
            --no-create-home --shell /usr/sbin/nologin imgfarm-hello
    fi
    mkdir -p /var/lib/imgfarm-hello
    chown imgfarm-hello:imgfarm-hello /var/lib/imgfarm-hello
    chmod 0750 /var/lib/imgfarm-hello
    if [ ! -e /var/lib/imgfarm-hello/state ]; then
        echo "installed" > /var/lib/imgfarm-hello/state
    fi
    chown imgfarm-hello:imgfarm-hello /var/lib/imgfarm-hello/state
    chmod 0640 /var/lib/imgfarm-hello/state
fi
exit 0
"#;

/// A running loopback apt repository (see the module docs). Dropping it stops the server
/// thread and deletes the temp dir.
#[derive(Debug)]
pub struct AptRepo {
    dir: TempDir,
    ip: std::net::Ipv4Addr,
    port: u16,
    hello: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AptRepo {
    /// Build the repository in a temp dir and serve it on the host's address
    /// ([`crate::host_ipv4`]) and a free port.
    ///
    /// Fails with [`Unavailable`] when the cached .debs are missing (run
    /// `sudo scripts/setup.sh --dev`, or set `IMGFARM_APT_DIR`) or when `dpkg-deb`,
    /// `dpkg-scanpackages` (dpkg-dev) or `gzip` are missing.
    pub fn start() -> anyhow::Result<AptRepo> {
        let debs = cached_debs()?;
        for t in ["dpkg-deb", "dpkg-scanpackages", "gzip"] {
            if !have_tool(t) {
                return Err(Unavailable::new(
                    format!("{t} is missing"),
                    "run `sudo scripts/setup.sh --dev` (installs dpkg-dev)",
                )
                .into());
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("imgfarm-apt-")
            .tempdir()
            .context("creating the apt repo temp dir")?;
        // Other users (the farm user) read the hello .deb from here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        for d in &debs {
            let name = d.file_name().context("deb without a file name")?;
            let dst = dir.path().join(name);
            if std::fs::hard_link(d, &dst).is_err() {
                std::fs::copy(d, &dst)
                    .with_context(|| format!("copying {} into the repo", d.display()))?;
            }
        }
        let hello = build_hello(dir.path())?;
        index(dir.path())?;

        let ip = crate::host_ipv4()?;
        let listener = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let root = dir.path().to_path_buf();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("apt-repo-{port}"))
            .spawn(move || serve(listener, root, stop2))
            .context("spawning the apt repo server thread")?;
        tracing::info!(port, dir = %dir.path().display(), "apt repo started");
        Ok(AptRepo {
            dir,
            ip,
            port,
            hello,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://HOST-ADDRESS:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}:{}/", self.ip, self.port)
    }

    /// `deb [trusted=yes] http://HOST-ADDRESS:PORT/ ./`, a line for `/etc/apt/sources.list`.
    pub fn sources_line(&self) -> String {
        format!("deb [trusted=yes] {} ./", self.url())
    }

    /// The address it listens on (the host's, not loopback).
    pub fn ip(&self) -> std::net::Ipv4Addr {
        self.ip
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The built `imgfarm-hello_1.0_all.deb` (e.g. to copy into a build context for
    /// `dpkg -i`).
    pub fn hello_deb(&self) -> &Path {
        &self.hello
    }

    /// The served directory (the .debs, `Packages`, `Packages.gz`, `Release`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for AptRepo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; the thread then sees the flag and returns.
        let _ = TcpStream::connect((self.ip, self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The cached .debs: every package of [`APT_REPO_PACKAGES`] for amd64 and arm64.
fn cached_debs() -> anyhow::Result<Vec<PathBuf>> {
    let dir = std::env::var_os("IMGFARM_APT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_APT_DIR));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for p in APT_REPO_PACKAGES {
        for a in APT_ARCHES {
            let prefix = format!("{p}_");
            let suffix = format!("_{a}.deb");
            // An `Architecture: all` package (ca-certificates) serves both.
            let found: Vec<&String> = names
                .iter()
                .filter(|n| {
                    n.starts_with(&prefix) && (n.ends_with(&suffix) || n.ends_with("_all.deb"))
                })
                .collect();
            if found.is_empty() {
                return Err(Unavailable::new(
                    format!("no {p}_*_{a}.deb in {}", dir.display()),
                    format!(
                        "run `sudo scripts/setup.sh --dev` (downloads {} for amd64 and arm64), \
                         or point IMGFARM_APT_DIR at such a directory",
                        APT_REPO_PACKAGES.join(", ")
                    ),
                )
                .into());
            }
            for n in found {
                let path = dir.join(n);
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
    }
    Ok(out)
}

fn write_file(p: &Path, content: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(p, content).with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Make `imgfarm-hello_1.0_all.deb` in `repo` with `dpkg-deb --build`.
fn build_hello(repo: &Path) -> anyhow::Result<PathBuf> {
    let scratch = tempfile::Builder::new()
        .prefix("imgfarm-hello-")
        .tempdir()
        .context("creating the package build dir")?;
    let root = scratch.path().join("pkg");
    write_file(&root.join("DEBIAN/control"), HELLO_CONTROL, 0o644)?;
    write_file(&root.join("DEBIAN/postinst"), HELLO_POSTINST, 0o755)?;
    write_file(
        &root.join("usr/bin/imgfarm-hello"),
        &format!("#!/bin/sh\necho '{HELLO_OUTPUT}'\n"),
        0o755,
    )?;
    write_file(
        &root.join("usr/share/doc/imgfarm-hello/copyright"),
        "imgfarm-hello: a test package made by imgfarm-testkit.\n\
         License: Apache-2.0 OR MIT, like imgfarm.\n",
        0o644,
    )?;
    // Explicit directory modes: the umask must not reach the package.
    for d in [
        "",
        "DEBIAN",
        "usr",
        "usr/bin",
        "usr/share",
        "usr/share/doc",
        "usr/share/doc/imgfarm-hello",
    ] {
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755))?;
    }
    let deb = repo.join("imgfarm-hello_1.0_all.deb");
    run_checked(
        Command::new("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", HELLO_EPOCH)
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(&deb),
    )?;
    std::fs::set_permissions(&deb, std::fs::Permissions::from_mode(0o644))?;
    Ok(deb)
}

/// `Packages`, `Packages.gz` and `Release` for the flat repository in `repo`.
fn index(repo: &Path) -> anyhow::Result<()> {
    let out = run_checked(
        Command::new("dpkg-scanpackages")
            .args(["--multiversion", ".", "/dev/null"])
            .current_dir(repo),
    )?;
    let packages = repo.join("Packages");
    std::fs::write(&packages, &out.stdout).context("writing Packages")?;
    run_checked(
        Command::new("sh")
            .arg("-c")
            .arg("gzip -n -9 -c Packages > Packages.gz")
            .current_dir(repo),
    )?;
    let mut release = String::from(
        "Origin: imgfarm-testkit\nLabel: imgfarm-testkit\nSuite: ./\n\
         Date: Tue, 20 May 2025 00:00:00 UTC\nSHA256:\n",
    );
    for f in ["Packages", "Packages.gz"] {
        let data = std::fs::read(repo.join(f)).with_context(|| format!("reading {f}"))?;
        release.push_str(&format!(
            " {} {} {f}\n",
            hex::encode(Sha256::digest(&data)),
            data.len()
        ));
    }
    std::fs::write(repo.join("Release"), release).context("writing Release")?;
    for f in ["Packages", "Packages.gz", "Release"] {
        std::fs::set_permissions(repo.join(f), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

fn serve(listener: TcpListener, root: PathBuf, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let root = root.clone();
        let stop = stop.clone();
        // One thread per connection: apt opens a few at once.
        let _ = std::thread::Builder::new()
            .name("apt-repo-conn".into())
            .spawn(move || {
                if let Err(e) = handle(conn, &root, &stop) {
                    tracing::debug!("apt repo connection: {e:#}");
                }
            });
    }
}

/// Percent-decode a URL path; `None` on a bad escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Serve requests on one connection until it closes, asks to close, or idles.
fn handle(conn: TcpStream, root: &Path, stop: &AtomicBool) -> anyhow::Result<()> {
    conn.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut out = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target, version) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("HTTP/1.0"),
        );
        let mut keep_alive = version == "HTTP/1.1";
        // Headers: only Connection matters; bodies are not expected (GET/HEAD).
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("connection") {
                    let v = v.trim();
                    if v.eq_ignore_ascii_case("close") {
                        keep_alive = false;
                    } else if v.eq_ignore_ascii_case("keep-alive") {
                        keep_alive = true;
                    }
                }
            }
        }
        let (status, body): (&str, Option<std::fs::File>) = match method {
            "GET" | "HEAD" => match resolve(root, target) {
                Resolved::File(p) => match std::fs::File::open(&p) {
                    Ok(f) => ("200 OK", Some(f)),
                    Err(_) => ("404 Not Found", None),
                },
                Resolved::Missing => ("404 Not Found", None),
                Resolved::Forbidden => ("403 Forbidden", None),
                Resolved::Bad => ("400 Bad Request", None),
            },
            _ => ("405 Method Not Allowed", None),
        };
        let len = match &body {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        tracing::debug!(method, target, status, "apt repo request");
        let conn_header = if keep_alive { "keep-alive" } else { "close" };
        let proto = if version == "HTTP/1.1" {
            "HTTP/1.1"
        } else {
            "HTTP/1.0"
        };
        write!(
            out,
            "{proto} {status}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\
             Connection: {conn_header}\r\nServer: imgfarm-testkit\r\n\r\n"
        )?;
        if method == "GET" {
            if let Some(mut f) = body {
                std::io::copy(&mut f, &mut out)?;
            }
        }
        out.flush()?;
        if !keep_alive {
            let _ = out.shutdown(Shutdown::Write);
            // Drain what the client still sends, so the close is not a reset.
            let _ = reader.read_to_end(&mut Vec::new());
            return Ok(());
        }
    }
}

enum Resolved {
    File(PathBuf),
    Missing,
    Forbidden,
    Bad,
}

/// Map a request target (`/path?query`, or an absolute `http://host/path`) below `root`.
/// Any `..` segment is refused.
fn resolve(root: &Path, target: &str) -> Resolved {
    let path = match target.strip_prefix("http://") {
        Some(rest) => match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        },
        None => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Resolved::Bad;
    }
    let Some(decoded) = percent_decode(path) else {
        return Resolved::Bad;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Resolved::Bad;
    };
    if decoded.contains('\0') {
        return Resolved::Bad;
    }
    let mut p = root.to_path_buf();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Resolved::Forbidden,
            s => p.push(s),
        }
    }
    if p.is_file() {
        Resolved::File(p)
    } else {
        Resolved::Missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_dot_dot_and_decodes() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("a b"), "x").expect("write");
        assert!(matches!(resolve(d.path(), "/a%20b"), Resolved::File(_)));
        assert!(matches!(
            resolve(d.path(), "/./a%20b?x=1"),
            Resolved::File(_)
        ));
        assert!(matches!(
            resolve(d.path(), "http://127.0.0.1:1/a%20b"),
            Resolved::File(_)
        ));
        assert!(matches!(resolve(d.path(), "/missing"), Resolved::Missing));
        assert!(matches!(resolve(d.path(), "/"), Resolved::Missing));
        assert!(matches!(
            resolve(d.path(), "/../etc/passwd"),
            Resolved::Forbidden
        ));
        assert!(matches!(
            resolve(d.path(), "/%2e%2e/x"),
            Resolved::Forbidden
        ));
        assert!(matches!(resolve(d.path(), "/%zz"), Resolved::Bad));
        assert!(matches!(resolve(d.path(), "relative"), Resolved::Bad));
    }
}
