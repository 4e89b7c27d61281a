//! Farm identity: the farm CA, role certificates, the TLS directory layout
//! and the rustls configurations built from it.
//!
//! # How the role is written into a certificate
//!
//! Every leaf certificate carries exactly one subject alternative name of
//! type URI, `imgfarm://role/<role>/<name>` (`coordinator`, `worker` or
//! `client`), **and** an extended key usage that matches it: `serverAuth`
//! only for the coordinator, `clientAuth` only for workers and clients. The
//! farm CA is the only trust root on both sides, and it is constrained to
//! `pathLenConstraint = 0`, so no intermediate can mint certificates.
//!
//! This is robust to misuse: a worker certificate cannot serve as the
//! coordinator (no `serverAuth`, so rustls refuses it as a server), the
//! coordinator's certificate cannot dial in (no `clientAuth`), a certificate
//! with zero or several role URIs is refused outright, and the role a peer
//! claims in its hello must equal its certificate's role and name (see
//! [`crate::proto::check_hello`]).
//!
//! # Directory layout
//!
//! `ca.crt` (+ `ca.key`, kept on the operator's host), `coordinator.{crt,key}`,
//! `worker-NAME.{crt,key}`, `client-NAME.{crt,key}`. Keys are PKCS#8 PEM
//! files created with mode 0600.

mod files;
mod issue;
mod peer;
mod refusal;
mod role;
mod tls;
mod tls_dir;

pub use files::{write_new_files, FileSpec};
pub use issue::{
    init_farm, issue_leaf, CaMaterial, InitOptions, IssuedFiles, Validity, CA_DAYS,
    DEFAULT_LEAF_DAYS, MAX_DAYS,
};
pub use peer::{peer_identity_from_der, PeerIdentity};
pub use refusal::{CertProblem, Described};
pub use role::{parse_role_uri, role_uri, validate_name, Role, ROLE_URI_PREFIX};
pub use tls::{client_config, server_config};
pub use tls_dir::{default_worker_name, Credentials, TlsDir};

use std::path::PathBuf;

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Files exist and `--force` was not given.
    #[error("refusing to overwrite {}: pass --force to replace them", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Exists(Vec<PathBuf>),
    /// A worker or client name is not acceptable.
    #[error("invalid name {name:?}: {reason} (use 1-63 of a-z A-Z 0-9 . _ -, starting with a letter or digit)")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// `--days` outside 1..=MAX_DAYS.
    #[error("invalid --days {0}: give 1 to {max} days", max = issue::MAX_DAYS)]
    InvalidDays(u32),
    /// A SAN given to `farm init` is neither an IP address nor a DNS name.
    #[error("invalid --san {0:?}: give a DNS name or an IP address")]
    InvalidSan(String),
    /// Certificate generation or signing failed.
    #[error("certificate generation: {0}")]
    Generate(String),
    /// A PEM or DER file does not hold what it should.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A certificate does not carry a valid imgfarm role.
    #[error("certificate has no valid imgfarm role: {0}")]
    NoRole(String),
    /// The credentials asked for are not in the TLS directory.
    #[error("{wanted} not found in {dir} (it holds: {found}); {hint}")]
    NotFound {
        /// What was looked for.
        wanted: String,
        /// The directory.
        dir: PathBuf,
        /// What the directory holds.
        found: String,
        /// What to do.
        hint: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl IdentityError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
