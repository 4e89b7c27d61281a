//! TLS and transport policy per registry, following docker's rules:
//! - extra CAs from `<dir>/certs.d/<host[:port]>/*.crt` (docker's layout; `ca.crt`
//!   by convention), searched in the docker config dir and `/etc/docker/certs.d`;
//! - `localhost`, `127.0.0.0/8` and `::1` (any port), and registries listed as
//!   insecure, may fall back to plain http when https does not answer;
//! - everything else is https only, verified against the system roots plus the
//!   registry's CAs. rustls with the ring provider; no aws-lc.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

/// Largest CA file read from a certs.d directory.
const MAX_CA_FILE: u64 = 1024 * 1024;

/// TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A CA file is unreadable or holds no PEM certificate.
    #[error("bad CA certificate {path}: {reason}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration for {host} failed: {reason}")]
    Config {
        /// Registry host.
        host: String,
        /// rustls' reason.
        reason: String,
    },
}

/// The certs.d roots searched, in order: `<docker config>/certs.d`, `/etc/docker/certs.d`.
pub fn default_certs_dirs(docker_config_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = docker_config_dir {
        v.push(d.join("certs.d"));
    }
    v.push(PathBuf::from("/etc/docker/certs.d"));
    v
}

/// May `host` (`name[:port]`) be reached over plain http? True for localhost and
/// loopback addresses (docker's default insecure set) and for entries of
/// `insecure` (matched as `host:port` or as bare `host`).
pub fn allows_plain_http(host: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|i| i == host) {
        return true;
    }
    let bare = strip_port(host);
    if insecure.iter().any(|i| i == bare) {
        return true;
    }
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ip = bare.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// `host[:port]` → `host`; `[v6]:port` → `[v6]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The CA certificates configured for `host` in the certs.d roots (`*.crt` files
/// of `<root>/<host>/`, as docker reads them).
pub fn registry_cas(
    host: &str,
    certs_dirs: &[PathBuf],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut out = Vec::new();
    // A host name with '/' or ".." would leave the certs.d root.
    if host.is_empty() || host.contains('/') || host.contains("..") {
        return Ok(out);
    }
    for root in certs_dirs {
        let dir = root.join(host);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        files.sort();
        for path in files {
            out.extend(read_pem_certs(&path)?);
        }
    }
    Ok(out)
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::BadCa {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > MAX_CA_FILE {
        return Err(bad(format!("larger than {MAX_CA_FILE} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("{e:?}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The system's trusted roots, loaded once per process (unreadable entries skipped).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// A rustls client config (ring provider) trusting the system roots and `extra_cas`.
pub fn client_config(
    host: &str,
    extra_cas: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, TlsError> {
    let cfg_err = |reason: String| TlsError::Config {
        host: host.to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    // System stores may contain certificates webpki can't parse; skip those.
    let _ = roots.add_parsable_certificates(system_roots().iter().cloned());
    for ca in extra_cas {
        roots
            .add(ca.clone())
            .map_err(|e| cfg_err(format!("CA certificate refused: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_policy() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "LOCALHOST:1",
        ] {
            assert!(allows_plain_http(h, &[]), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[fe80::1]:5000",
        ] {
            assert!(!allows_plain_http(h, &[]), "{h}");
        }
        let insecure = vec!["reg.lan:5000".to_string(), "other.lan".to_string()];
        assert!(allows_plain_http("reg.lan:5000", &insecure));
        assert!(!allows_plain_http("reg.lan:5001", &insecure));
        assert!(allows_plain_http("other.lan:443", &insecure));
    }

    #[test]
    fn certs_d_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("certs.d");
        assert!(registry_cas("localhost:5000", std::slice::from_ref(&root))
            .unwrap()
            .is_empty());
        let hostdir = root.join("localhost:5000");
        std::fs::create_dir_all(&hostdir).unwrap();
        std::fs::write(hostdir.join("ca.crt"), "not a cert").unwrap();
        let e = registry_cas("localhost:5000", std::slice::from_ref(&root)).unwrap_err();
        assert!(e.to_string().contains("ca.crt"), "{e}");
        assert!(registry_cas("../x", std::slice::from_ref(&root))
            .unwrap()
            .is_empty());
        // A well-formed PEM block is accepted (content checked later by rustls).
        let pem = "-----BEGIN CERTIFICATE-----\nMAo=\n-----END CERTIFICATE-----\n";
        std::fs::write(hostdir.join("ca.crt"), pem).unwrap();
        std::fs::write(hostdir.join("client.cert"), "ignored").unwrap();
        assert_eq!(registry_cas("localhost:5000", &[root]).unwrap().len(), 1);
    }

    #[test]
    fn config_builds_with_ring() {
        assert!(client_config("x.io", &[]).is_ok());
        let bogus = CertificateDer::from(vec![0x30, 0x0a]);
        assert!(client_config("x.io", &[bogus]).is_err());
    }
}
