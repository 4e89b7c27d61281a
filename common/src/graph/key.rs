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
pub const KEY_FORMAT: &str = "imgfarm.vertex.v2";

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

/// The key of a vertex: sha256 of [`canonical_bytes`], streamed into the
/// hasher without building the byte vector.
pub fn vertex_key(platform: Option<&Platform>, op: &Op, inputs: &[Digest]) -> Digest {
    let m = KeyMaterial {
        format: KEY_FORMAT,
        platform,
        op,
        inputs,
    };
    let mut w = HashWriter(Sha256::new());
    // Writing into a hasher cannot fail, nor can serialising these types.
    let _ = serde_json::to_writer(&mut w, &m);
    Digest::from_sha256(w.0)
}

struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
