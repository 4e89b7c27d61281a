//! Distribution-spec registry client: pull, push, auth and TLS.
//!
//! - [`reference`]: docker-style image references.
//! - [`challenge`]: `WWW-Authenticate` parsing, token scopes and responses (pure).
//! - [`credentials`]: docker/podman credential lookup, `login`/`logout`.
//! - [`tls`]: per-registry CAs (`certs.d`), plain-http policy, rustls (ring).
//! - [`retry`]: backoff policy (pure).
//! - [`manifest`]: the parts of manifests needed to walk an image.
//! - [`client`]: the async client ([`RegistryClient`]): transport, auth, retries.
//! - [`pull`] / [`push`]: image transfer.

pub mod challenge;
pub mod client;
pub mod credentials;
pub mod error;
pub mod manifest;
pub mod pull;
pub mod push;
pub mod reference;
pub mod retry;
pub mod tls;

pub use client::{RegistryClient, RegistryConfig, UploadMode};
pub use credentials::{login, logout, Credential, CredentialSources, Secret};
pub use error::RegistryError;
pub use manifest::Descriptor;
pub use pull::{PlatformSelection, PullOptions, PulledImage, PulledManifest, TransferStats};
pub use push::{PushOptions, PushReport};
pub use reference::Reference;
