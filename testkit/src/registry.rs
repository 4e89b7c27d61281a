//! A real Distribution v2 registry (`docker-registry`) on 127.0.0.1 and a free port.

use crate::cmd::{have_tool, run_checked};
use crate::skip::Unavailable;
use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The registry binary (Debian's `docker-registry`, Distribution 2.8).
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long to wait for `/v2/` to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with a fresh port when the chosen one was taken in between.
const START_ATTEMPTS: usize = 5;

/// How to start a [`Registry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a leaf certificate (SANs `localhost`, `127.0.0.1`) signed by a fresh CA.
    pub tls: bool,
    /// Require HTTP basic auth (htpasswd, bcrypt) with this user and password.
    pub auth: Option<(String, String)>,
}

impl RegistryOptions {
    /// TLS plus basic auth with `user`/`password`.
    pub fn tls_auth(user: &str, password: &str) -> Self {
        RegistryOptions {
            tls: true,
            auth: Some((user.to_owned(), password.to_owned())),
        }
    }
}

/// A running `docker-registry serve` bound to 127.0.0.1 with filesystem storage in a temp dir.
///
/// Dropping it kills that one process (by its PID) and deletes the temp dir.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: String,
    scheme: &'static str,
    dir: TempDir,
    storage: PathBuf,
    tls: Option<TlsFiles>,
    auth: Option<(String, String)>,
}

#[derive(Debug)]
struct TlsFiles {
    ca_cert: PathBuf,
    cert_dir: PathBuf,
}

impl Registry {
    /// Start a plain-HTTP registry without auth.
    pub fn start() -> anyhow::Result<Registry> {
        Registry::start_with(RegistryOptions::default())
    }

    /// Start a registry with the given options and wait until `GET /v2/` answers
    /// (200, or 401 with auth).
    pub fn start_with(opts: RegistryOptions) -> anyhow::Result<Registry> {
        if !Path::new(REGISTRY_BIN).is_file() {
            return Err(Unavailable::new(
                format!("{REGISTRY_BIN} is missing"),
                "run `sudo scripts/setup.sh --dev` (installs docker-registry)",
            )
            .into());
        }
        let dir = tempfile::Builder::new()
            .prefix("imgfarm-registry-")
            .tempdir()
            .context("creating the registry temp dir")?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).context("creating registry storage")?;
        let tls = if opts.tls {
            Some(make_tls(dir.path())?)
        } else {
            None
        };
        let htpasswd = match &opts.auth {
            Some((user, pass)) => Some(make_htpasswd(dir.path(), user, pass)?),
            None => None,
        };

        let mut last_err = None;
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port()?;
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                config_yaml(
                    &addr,
                    &storage,
                    dir.path(),
                    tls.is_some(),
                    htpasswd.as_deref(),
                ),
            )
            .context("writing registry config")?;
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).context("creating registry log")?;
            let log2 = log.try_clone().context("cloning registry log handle")?;
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .with_context(|| format!("spawning {REGISTRY_BIN}"))?;
            match wait_ready(&mut child, &addr, tls.as_ref(), &log_path) {
                Ok(()) => {
                    let reg = Registry {
                        child,
                        addr,
                        scheme: if tls.is_some() { "https" } else { "http" },
                        dir,
                        storage,
                        tls,
                        auth: opts.auth.clone(),
                    };
                    tracing::info!(url = %reg.url(), pid = reg.child.id(), "registry started");
                    return Ok(reg);
                }
                Err(e) => {
                    kill_and_reap(&mut child);
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(8)..].join("\n");
                    tracing::warn!(attempt, "registry did not start: {e:#}");
                    last_err = Some(e.context(format!("registry log tail:\n{tail}")));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `127.0.0.1:PORT/<repo>:<tag>`, a reference to an image in this registry.
    pub fn image_ref(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The filesystem storage root. Blobs live at
    /// `docker/registry/v2/blobs/sha256/<first two hex>/<hex>/data` below it.
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The path of a blob's data file in storage (whether or not it exists yet).
    /// `digest` is `sha256:<hex>`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let prefix = hex.get(..2).unwrap_or(hex);
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(prefix)
            .join(hex)
            .join("data")
    }

    /// PEM of the CA that signed the server certificate (TLS only).
    pub fn ca_cert(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_cert.as_path())
    }

    /// A directory holding `ca.crt`, usable as skopeo `--cert-dir` or as a docker
    /// `certs.d/<host:port>` directory (TLS only).
    pub fn cert_dir(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.cert_dir.as_path())
    }

    /// The basic-auth user and password, when auth is on.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The PID of the registry process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The registry's log file (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// skopeo flags for using this registry as a copy *source*: TLS verification off for
    /// plain HTTP, `--src-cert-dir` for TLS, `--src-creds` when auth is on.
    pub fn skopeo_src_flags(&self) -> Vec<String> {
        self.skopeo_flags("--src-")
    }

    /// skopeo flags for using this registry as a copy *destination*.
    pub fn skopeo_dest_flags(&self) -> Vec<String> {
        self.skopeo_flags("--dest-")
    }

    /// skopeo flags for single-image commands (`inspect`, `delete`): `--tls-verify`,
    /// `--cert-dir`, `--creds`.
    pub fn skopeo_flags_plain(&self) -> Vec<String> {
        self.skopeo_flags("--")
    }

    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut v = Vec::new();
        match self.cert_dir() {
            Some(d) => v.push(format!("{prefix}cert-dir={}", d.display())),
            None => v.push(format!("{prefix}tls-verify=false")),
        }
        if let Some((u, p)) = self.credentials() {
            v.push(format!("{prefix}creds={u}:{p}"));
        }
        v
    }

    /// Stop the registry now (also done on drop). Kills only this registry's PID.
    pub fn stop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGKILL exactly this child's PID (if still running) and reap it.
fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Wait until our child logged that it listens on `addr` and `GET /v2/` answers 200 or 401.
/// The log line proves the port is ours: when two fixtures race for one free port, the loser
/// logs `bind: address already in use` and exits, while the probe may reach the winner.
fn wait_ready(
    child: &mut Child,
    addr: &str,
    tls: Option<&TlsFiles>,
    log_path: &Path,
) -> anyhow::Result<()> {
    let listening = format!("listening on {addr}");
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last;
    loop {
        if let Some(status) = child.try_wait().context("polling registry")? {
            bail!("docker-registry exited early ({status})");
        }
        let bound = std::fs::read_to_string(log_path)
            .map(|l| l.contains(&listening))
            .unwrap_or(false);
        if !bound {
            last = String::from("no `listening on` line in the registry log yet");
        } else {
            match probe_v2(addr, tls) {
                Ok(code) if code == 200 || code == 401 => {
                    // Make sure the answer came from our process, not a squatter on the port.
                    if let Some(status) = child.try_wait().context("polling registry")? {
                        bail!("docker-registry exited ({status}) after the port answered");
                    }
                    return Ok(());
                }
                Ok(code) => last = format!("GET /v2/ answered {code}"),
                Err(e) => last = format!("{e:#}"),
            }
        }
        if Instant::now() > deadline {
            bail!("{addr} did not answer /v2/ within {READY_TIMEOUT:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// The HTTP status of `GET /v2/` without credentials.
fn probe_v2(addr: &str, tls: Option<&TlsFiles>) -> anyhow::Result<u16> {
    let Some(t) = tls else {
        return http_status(addr, "/v2/");
    };
    // Connect first, so curl isn't spawned in a tight loop before the port is up.
    let sa: SocketAddr = addr.parse().context("parsing registry address")?;
    TcpStream::connect_timeout(&sa, Duration::from_millis(500)).context("connecting")?;
    if !have_tool("curl") {
        // The listener is up; Go loads the key pair before it starts listening.
        return Ok(200);
    }
    let out = run_checked(
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&t.ca_cert)
            .arg(format!("https://{addr}/v2/")),
    )?;
    let code = String::from_utf8_lossy(&out.stdout);
    code.trim()
        .parse()
        .with_context(|| format!("curl printed {code:?}"))
}

/// A port that was free a moment ago (bind port 0, read it back, release it).
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(l.local_addr().context("reading the bound port")?.port())
}

/// `GET path` over plain HTTP/1.0; returns the status code.
fn http_status(addr: &str, path: &str) -> anyhow::Result<u16> {
    let sa: SocketAddr = addr.parse().context("parsing registry address")?;
    let mut s =
        TcpStream::connect_timeout(&sa, Duration::from_millis(500)).context("connecting")?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").context("sending request")?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).context("reading response")?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP status line: {head:?}"))
}

fn config_yaml(
    addr: &str,
    storage: &Path,
    dir: &Path,
    tls: bool,
    htpasswd: Option<&Path>,
) -> String {
    let mut y = format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n",
        storage.display()
    );
    if tls {
        y.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("tls/server.crt").display(),
            dir.join("tls/server.key").display()
        ));
    }
    y.push_str("health:\n  storagedriver:\n    enabled: false\n");
    if let Some(h) = htpasswd {
        y.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: imgfarm-test-registry\n    path: {}\n",
            h.display()
        ));
    }
    y
}

/// A CA and a `CA:FALSE` serverAuth leaf for localhost/127.0.0.1 (webpki refuses a CA
/// certificate as an end-entity certificate, so a self-signed `req -x509` cert won't do).
fn make_tls(dir: &Path) -> anyhow::Result<TlsFiles> {
    if !have_tool("openssl") {
        return Err(Unavailable::new(
            "openssl is missing",
            "run `sudo scripts/setup.sh --dev` (installs openssl)",
        )
        .into());
    }
    let t = dir.join("tls");
    let trust = t.join("trust");
    std::fs::create_dir_all(&trust).context("creating tls dir")?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    run_checked(
        Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "30"])
            .args(ec)
            .args(["-subj", "/CN=imgfarm-testkit-ca"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(t.join("ca.key"))
            .arg("-out")
            .arg(t.join("ca.crt")),
    )?;
    run_checked(
        Command::new("openssl")
            .args(["req", "-nodes"])
            .args(ec)
            .args(["-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(t.join("server.key"))
            .arg("-out")
            .arg(t.join("server.csr")),
    )?;
    std::fs::write(
        t.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .context("writing server.ext")?;
    run_checked(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "30", "-set_serial", "2"])
            .arg("-in")
            .arg(t.join("server.csr"))
            .arg("-CA")
            .arg(t.join("ca.crt"))
            .arg("-CAkey")
            .arg(t.join("ca.key"))
            .arg("-extfile")
            .arg(t.join("server.ext"))
            .arg("-out")
            .arg(t.join("server.crt")),
    )?;
    std::fs::copy(t.join("ca.crt"), trust.join("ca.crt")).context("copying ca.crt")?;
    Ok(TlsFiles {
        ca_cert: t.join("ca.crt"),
        cert_dir: trust,
    })
}

fn make_htpasswd(dir: &Path, user: &str, pass: &str) -> anyhow::Result<PathBuf> {
    if !have_tool("htpasswd") {
        return Err(Unavailable::new(
            "htpasswd is missing",
            "run `sudo scripts/setup.sh --dev` (installs apache2-utils)",
        )
        .into());
    }
    let out = run_checked(Command::new("htpasswd").args(["-Bbn", user, pass]))?;
    let path = dir.join("htpasswd");
    std::fs::write(&path, &out.stdout).context("writing htpasswd")?;
    Ok(path)
}
