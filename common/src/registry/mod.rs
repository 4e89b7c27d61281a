//! Distribution-spec registry client: pull, push, auth and TLS.
//!
//! - [`reference`]: docker-style image references.
//! - [`challenge`]: `WWW-Authenticate` parsing, token scopes and responses (pure).
//! - [`credentials`]: docker/podman credential lookup, `login`/`logout`.
//! - [`tls`]: per-registry CAs (`certs.d`), plain-http policy, rustls (ring).
//! - [`retry`]: backoff policy (pure).
//! - [`manifest`]: the parts of manifests needed to walk an image.
//! - [`client`]: the async client (`RegistryClient`): pull and push.

pub mod challenge;
pub mod credentials;
pub mod error;
pub mod manifest;
pub mod reference;
pub mod retry;
pub mod tls;

pub use error::RegistryError;
pub use reference::Reference;
