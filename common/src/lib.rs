//! imgfarm-common: everything the coordinator, the worker and the CLI share.
//!
//! - [`dockerfile`]: BuildKit-compatible Dockerfile parser, shell expansion,
//!   instruction semantics and `.dockerignore` matching.
//! - [`context`]: the build context seen through `.dockerignore`, COPY/ADD
//!   source selection and its content digest.
//! - [`graph`]: the build IR: the multi-platform build graph and its cache keys.
//! - [`platform`]: OCI platform parsing and matching.
//! - [`oci`]: content store, layers, image types, OCI layout and index merge.
//! - [`registry`]: the distribution-spec client (pull, push, auth).
//! - [`proto`]: the coordinator/worker wire protocol.
//! - [`identity`]: the farm CA, role certificates and TLS configuration.
//! - [`path`]: lexical path cleaning and symlink resolution inside a root.
//! - [`paths`]: where state lives.
//! - [`sealed`]: small cache files trusted only when whole.
//! - [`metrics_http`]: the `GET /metrics` endpoint of the coordinator and the worker.

pub mod context;
pub mod dockerfile;
pub mod entitlement;
pub mod farm;
pub mod graph;
pub mod identity;
pub mod image_name;
pub mod metrics;
pub mod metrics_http;
pub mod oci;
pub mod path;
pub mod paths;
pub mod platform;
pub mod proto;
pub mod registry;
pub mod sealed;
pub mod size;
