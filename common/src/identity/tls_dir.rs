//! Finding a process's own credentials in a `--tls-dir`.

use super::peer::{peer_identity_from_der, PeerIdentity};
use super::role::{file_stem, validate_name, Role};
use super::IdentityError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// A TLS directory in the farm layout (see [`super`]).
#[derive(Debug, Clone)]
pub struct TlsDir {
    dir: PathBuf,
}

/// One endpoint's credentials: its chain and key, and the farm CA.
#[derive(Debug)]
pub struct Credentials {
    /// Who the certificate says we are.
    pub identity: PeerIdentity,
    /// Our certificate (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// Our private key.
    pub key: PrivateKeyDer<'static>,
    /// The farm CA certificates, the only trust roots: one, or during a CA rotation the old
    /// and the new (`ca.crt` holding both, see docs/operations.md).
    pub ca: Vec<CertificateDer<'static>>,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self {
            identity: self.identity.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            ca: self.ca.clone(),
        }
    }
}

impl Credentials {
    /// `notAfter` of our own certificate (Unix time), for the certificate-expiry metrics.
    pub fn not_after(&self) -> Option<i64> {
        super::peer::certificate_not_after(self.chain.first()?)
    }
}

/// The host name, the default worker name (`/proc/sys/kernel/hostname`).
pub fn default_worker_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| validate_name(s).is_ok())
}

impl TlsDir {
    /// A TLS directory at `dir` (not read yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Loads the credentials for `role`. `name` is required for workers (the
    /// caller passes `--name` or [`default_worker_name`]); for clients it may
    /// be omitted when the directory holds exactly one client certificate;
    /// the coordinator's files are `coordinator.{crt,key}`.
    pub fn load(&self, role: Role, name: Option<&str>) -> Result<Credentials, IdentityError> {
        let listing = self.listing()?;
        let stem = match (role, name) {
            (Role::Coordinator, _) => file_stem(role, ""),
            (Role::Worker, Some(n)) | (Role::Client, Some(n)) => {
                validate_name(n)?;
                file_stem(role, n)
            }
            (Role::Worker, None) => {
                return Err(self.not_found("a worker name", &listing, "pass --name NAME"))
            }
            (Role::Client, None) => {
                let clients: Vec<&String> = listing
                    .iter()
                    .filter(|f| f.starts_with("client-") && f.ends_with(".crt"))
                    .collect();
                match clients.as_slice() {
                    [one] => one.trim_end_matches(".crt").to_string(),
                    [] => {
                        return Err(self.not_found(
                            "a client certificate (client-NAME.crt)",
                            &listing,
                            "issue one with `imgfarm farm issue --dir DIR --client NAME`",
                        ))
                    }
                    _ => {
                        return Err(self.not_found(
                            "a single client certificate",
                            &listing,
                            "several client certificates: pick one with --name NAME",
                        ))
                    }
                }
            }
        };
        let crt = format!("{stem}.crt");
        let key = format!("{stem}.key");
        for f in ["ca.crt", crt.as_str(), key.as_str()] {
            if !listing.iter().any(|l| l == f) {
                let hint = match role {
                    Role::Coordinator => "run `imgfarm farm init --dir DIR` first".to_string(),
                    _ => format!(
                        "issue it with `imgfarm farm issue --dir DIR --{role} {}`",
                        stem.split_once('-').map(|(_, n)| n).unwrap_or(&stem)
                    ),
                };
                return Err(self.not_found(f, &listing, &hint));
            }
        }
        let ca = self.read_certs(&self.dir.join("ca.crt"))?;
        let leaf_path = self.dir.join(&crt);
        let leaf = self.read_cert(&leaf_path)?;
        let key_path = self.dir.join(&key);
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| IdentityError::BadFile {
            path: key_path.clone(),
            reason: format!("not a PEM private key: {e}"),
        })?;
        let identity = peer_identity_from_der(&leaf).map_err(|e| IdentityError::BadFile {
            path: leaf_path.clone(),
            reason: e.to_string(),
        })?;
        let expected_name = match role {
            Role::Coordinator => "coordinator",
            _ => stem.split_once('-').map(|(_, n)| n).unwrap_or(""),
        };
        if identity.role != role || identity.name != expected_name {
            return Err(IdentityError::BadFile {
                path: leaf_path,
                reason: format!(
                    "certificate is for {identity}, expected {role} {expected_name}: was the file renamed?"
                ),
            });
        }
        Ok(Credentials {
            identity,
            chain: vec![leaf],
            key,
            ca,
        })
    }

    /// Every certificate in a PEM file, in order; at least one.
    fn read_certs(&self, path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
        let bad = |reason: String| IdentityError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("not a PEM certificate: {e}")))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(bad("not a PEM certificate: no CERTIFICATE block".into()));
        }
        Ok(certs)
    }

    fn read_cert(&self, path: &Path) -> Result<CertificateDer<'static>, IdentityError> {
        CertificateDer::from_pem_file(path).map_err(|e| IdentityError::BadFile {
            path: path.to_path_buf(),
            reason: format!("not a PEM certificate: {e}"),
        })
    }

    fn listing(&self) -> Result<Vec<String>, IdentityError> {
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| IdentityError::io("read TLS directory", &self.dir, e))?;
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".crt") || n.ends_with(".key"))
            .collect();
        names.sort();
        Ok(names)
    }

    fn not_found(&self, wanted: &str, listing: &[String], hint: &str) -> IdentityError {
        IdentityError::NotFound {
            wanted: wanted.to_string(),
            dir: self.dir.clone(),
            found: if listing.is_empty() {
                "no .crt or .key files".into()
            } else {
                listing.join(", ")
            },
            hint: hint.to_string(),
        }
    }
}
