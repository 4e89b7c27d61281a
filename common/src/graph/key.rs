//! Vertex cache keys.
//!
//! key = sha256 over a canonical encoding of (format version, platform, op,
//! ordered input keys). The encoding is JSON produced from structs and
//! vectors only (no hash maps), so field order is fixed by the type
//! definitions and the key is the same on every machine and in every run.
//! Descriptions and source lines are not part of the key; COPY keys reach
//! the content through the input key of their context selection.

use super::op::Op;
use crate::oci::Digest;
use crate::platform::Platform;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// Bumped whenever the encoding or an op's meaning changes.
pub const KEY_FORMAT: &str = "imgfarm.vertex.v1";

#[derive(Serialize)]
struct KeyMaterial<'a> {
    format: &'static str,
    platform: Option<&'a Platform>,
    op: &'a Op,
    inputs: &'a [Digest],
}

/// The canonical bytes a key is computed over.
pub fn canonical_bytes(platform: Option<&Platform>, op: &Op, inputs: &[Digest]) -> Vec<u8> {
    let m = KeyMaterial {
        format: KEY_FORMAT,
        platform,
        op,
        inputs,
    };
    // Serialising plain structs, vectors and strings cannot fail.
    serde_json::to_vec(&m).unwrap_or_default()
}

/// The key of a vertex.
pub fn vertex_key(platform: Option<&Platform>, op: &Op, inputs: &[Digest]) -> Digest {
    let mut h = Sha256::new();
    h.update(canonical_bytes(platform, op, inputs));
    Digest::from_sha256(h)
}
