//! The build IR: a multi-platform graph whose vertices are ops, whose edges
//! are inputs, and whose every vertex has a content-derived cache key. It
//! knows nothing of Dockerfiles: the Dockerfile frontend produces it and
//! workers run it; this module imports nothing from the frontend.
//!
//! - [`op`]: what a vertex does, with the IR's own mount, network and
//!   security types.
//! - [`vertex`]: one keyed unit of work ([`Vertex`]).
//! - [`key`]: canonical encoding and sha256 keys.
//! - [`build_graph`]: the graph of vertices and its targets ([`BuildGraph`]).
//! - [`image_config`]: the per-stage image config an export carries.
//! - [`reuse`]: which results may be reused by key.

pub mod build_graph;
pub mod image_config;
pub mod key;
pub mod op;
pub mod reuse;
pub mod vertex;

pub use build_graph::{BuildGraph, PlatformTarget};
pub use vertex::Vertex;
