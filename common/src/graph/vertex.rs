//! One vertex of the build graph.

use super::key::vertex_key;
use super::op::Op;
use crate::oci::Digest;
use crate::platform::Platform;
use serde::{Deserialize, Serialize};

/// A unit of work: an op, its inputs (by key) and its platform.
///
/// A worker needs only this and the results of `inputs` to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    /// sha256 over the canonical encoding of platform, op and input keys.
    pub key: Digest,
    /// Where it must run; `None` for platform-neutral sources (context, URL, inline files).
    pub platform: Option<Platform>,
    /// What it does.
    pub op: Op,
    /// Input vertex keys, in the order the op refers to them.
    pub inputs: Vec<Digest>,
    /// Progress line, e.g. `[build 3/7] RUN make` (not part of the key).
    pub description: String,
    /// Dockerfile line (0 for synthetic vertices; not part of the key).
    pub line: usize,
}

impl Vertex {
    /// Build a vertex and compute its key.
    pub fn new(
        platform: Option<Platform>,
        op: Op,
        inputs: Vec<Digest>,
        description: String,
        line: usize,
    ) -> Self {
        let key = vertex_key(platform.as_ref(), &op, &inputs);
        Self {
            key,
            platform,
            op,
            inputs,
            description,
            line,
        }
    }
}
