//! The registry client's error type. Messages say what failed and what to do.

use super::challenge::ChallengeError;
use super::credentials::CredentialsError;
use super::reference::ReferenceError;
use super::tls::TlsError;
use crate::oci::Digest;

/// Anything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The image reference does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The registry sent an unusable auth challenge.
    #[error("registry {registry}: {source}")]
    Challenge {
        /// Registry host.
        registry: String,
        /// The parse error.
        source: ChallengeError,
    },
    /// No credentials, and the registry wants some (HTTP 401).
    #[error("authentication required: run `imgfarm login {registry}`")]
    AuthRequired {
        /// Registry host.
        registry: String,
    },
    /// Credentials were sent and refused (HTTP 401).
    #[error("invalid username or password for {registry} (credentials from {source_of}); run `imgfarm login {registry}` again")]
    InvalidCredentials {
        /// Registry host.
        registry: String,
        /// Where the credentials came from.
        source_of: String,
    },
    /// Authenticated, but not allowed (HTTP 403, or 401 after a fresh token).
    #[error("access denied: {action} {repository} on {registry}: {detail}")]
    Denied {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// `pull from` / `push to`.
        action: &'static str,
        /// The registry's words.
        detail: String,
    },
    /// The tag or digest does not exist (HTTP 404 on a manifest).
    #[error("manifest unknown: {reference}")]
    ManifestUnknown {
        /// `registry/repo:tag` or `@digest`.
        reference: String,
    },
    /// A blob is missing (HTTP 404 on a blob).
    #[error("blob unknown: {digest} in {repository}")]
    BlobUnknown {
        /// `registry/repo`.
        repository: String,
        /// The blob.
        digest: Digest,
    },
    /// Content does not hash to its digest: nothing was stored.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; nothing was stored")]
    DigestMismatch {
        /// What was being fetched or pushed.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// Content is not the size its descriptor says.
    #[error("size mismatch for {what}: descriptor says {expected} bytes, registry sent {actual}; nothing was stored")]
    SizeMismatch {
        /// What was being fetched.
        what: String,
        /// Descriptor size.
        expected: u64,
        /// Received size (at least).
        actual: u64,
    },
    /// A manifest or other bounded document is too big.
    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge {
        /// What was being fetched.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A manifest does not parse or is not allowed.
    #[error("bad manifest {reference}: {reason}")]
    BadManifest {
        /// Where it came from.
        reference: String,
        /// Why.
        reason: String,
    },
    /// No index entry for the wanted platform.
    #[error("no image for platform {wanted} in {reference} (available: {available})")]
    NoMatchingPlatform {
        /// The reference pulled.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The index's platforms.
        available: String,
    },
    /// A blob or manifest to push is not in the local store.
    #[error("cannot push {digest}: not in the local content store ({reason})")]
    MissingLocal {
        /// The content.
        digest: Digest,
        /// The store's error.
        reason: String,
    },
    /// The registry violated the distribution spec (missing Location, bad header).
    #[error("registry {registry} answered {what} with something unusable: {reason}")]
    Protocol {
        /// Registry host.
        registry: String,
        /// The operation.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// An HTTP status we can't turn into anything better.
    #[error("{method} {url} failed: HTTP {status}: {body}")]
    Status {
        /// HTTP method.
        method: String,
        /// URL (without query).
        url: String,
        /// Status code.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// Network failure after the retries were used up.
    #[error("cannot reach {url} after {attempts} attempt(s): {reason}")]
    Unreachable {
        /// URL (without query).
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// The local content store failed.
    #[error("content store: {0}")]
    Store(String),
}

/// Result alias.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
