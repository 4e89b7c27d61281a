//! The multi-platform build graph: vertices are ops, edges are inputs, and
//! each vertex has a content-derived cache key.
//!
//! - [`op`]: what a vertex does.
//! - [`key`]: canonical encoding and sha256 keys.
//! - [`build`]: Dockerfile + context → graph ([`build::build_graph`]).
//! - [`image_config`]: the per-stage image config.
//! - [`expand`]: word expansion with used/missing names.
//! - [`reference`]: image reference normalisation.
//! - [`reuse`]: which results may be reused by key.

pub mod build;
mod dispatch;
pub mod expand;
pub mod image_config;
pub mod key;
pub mod op;
pub mod reference;
pub mod reuse;
mod vertex;

pub use build::{
    build_graph, BuildGraph, BuildRequest, ContextSelector, PlatformTarget, ResolvedImage,
};
pub use vertex::Vertex;
