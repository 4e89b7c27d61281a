//! What a farm build carries between client, coordinator and worker inside
//! the opaque byte fields of the wire messages ([`crate::proto`]).
//!
//! - [`FarmDefinition`]: the client's build graph, sent once in
//!   [`crate::proto::Submit::definition`]. The client parses the Dockerfile,
//!   resolves base images and computes every key; the coordinator and the
//!   workers never re-run the frontend, so all of them agree on keys.
//! - [`VertexJob`]: one vertex plus what it needs, in
//!   [`crate::proto::RunVertex::op`].
//! - [`result::VertexResult`]: what a worker returns in
//!   [`crate::proto::VertexDone::result`].
//! - [`OutputSpec`]: where the merged index goes, in
//!   [`crate::proto::Submit::output`].
//!
//! These payloads are JSON: the graph's types use serde attributes
//! (`skip_serializing_if`, tagged enums) that bincode cannot carry. Each is
//! bounded by the control frame limit it travels in and decoded with
//! [`decode`], which names what failed.

pub mod chunks;
pub mod result;

use crate::graph::Vertex;
use crate::oci::Digest;
use crate::proto::BlobHeader;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use result::{LayerRef, VertexResult};

/// Whether a worker's error message says its own storage failed: ENOSPC
/// or EDQUOT as the OS words them (`std::io::Error`'s Display: "No space
/// left on device (os error 28)", "Disk quota exceeded (os error 122)").
/// The worker words such a failure clearly; the coordinator requeues the
/// step elsewhere (`coordinator/src/engine/faults.rs`).
pub fn out_of_space(msg: &str) -> bool {
    [
        "No space left on device",
        "(os error 28)",
        "Disk quota exceeded",
        "(os error 122)",
    ]
    .iter()
    .any(|m| msg.contains(m))
}

/// Why a farm payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    /// The bytes are not the expected JSON document.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which payload.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The document is larger than allowed.
    #[error("{what} is {size} bytes, over the {max} byte limit")]
    TooLarge {
        /// Which payload.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The document decodes but does not make sense.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which payload.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Largest payload accepted by [`decode`] (the control frame limit).
pub const MAX_PAYLOAD: usize = crate::proto::MAX_CONTROL_FRAME as usize;

/// Encodes a payload (JSON).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain data types cannot fail (string keys only).
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes a payload, bounded by [`MAX_PAYLOAD`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, FarmError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(FarmError::TooLarge {
            what,
            size: bytes.len(),
            max: MAX_PAYLOAD,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| FarmError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// One requested platform of a farm build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmTarget {
    /// The platform (`linux/arm64`).
    pub platform: String,
    /// Key of its export vertex (its result carries the image manifest).
    pub export: Digest,
}

/// A whole build as the client submits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmDefinition {
    /// Every vertex, inputs before users (as [`crate::graph::BuildGraph::vertices`]).
    pub vertices: Vec<Vertex>,
    /// The requested platforms and their export vertices, in request order.
    pub targets: Vec<FarmTarget>,
    /// The build context as chunk layers (tar+gzip of the files the
    /// context selection allows, after .dockerignore), uploaded beforehand.
    /// `None` when no vertex reads the context.
    pub context: Option<ContextBlob>,
    /// Shown by `imgfarm farm status` (e.g. the tags or the Dockerfile name).
    pub title: String,
}

/// The uploaded build context: the context's entries split into chunk
/// layers ([`chunks`]), applied in order into one directory. Unchanged
/// chunks keep their digests from build to build, so only the changed ones
/// are uploaded and fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ContextBlobWire")]
pub struct ContextBlob {
    /// The compressed chunk layers, in order (none for an empty context).
    pub chunks: Vec<LayerRef>,
}

/// [`ContextBlob`] as JSON: `chunks`, or the single `layer` that a
/// definition stored by an earlier coordinator (`coordinator.db`) holds.
#[derive(Deserialize)]
struct ContextBlobWire {
    #[serde(default)]
    chunks: Option<Vec<LayerRef>>,
    #[serde(default)]
    layer: Option<LayerRef>,
}

impl TryFrom<ContextBlobWire> for ContextBlob {
    type Error = String;

    fn try_from(w: ContextBlobWire) -> Result<Self, String> {
        match (w.chunks, w.layer) {
            (Some(chunks), None) => Ok(Self { chunks }),
            (None, Some(layer)) => Ok(Self {
                chunks: vec![layer],
            }),
            (Some(_), Some(_)) => Err("the build context has both chunks and a layer".into()),
            (None, None) => Err("the build context has no chunks".into()),
        }
    }
}

impl ContextBlob {
    /// Names the unpacked context: sha256 over the chunk digests in order.
    /// Workers keep one directory per id.
    pub fn id(&self) -> Digest {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"imgfarm context chunks v1\n");
        for c in &self.chunks {
            h.update(c.digest.as_str().as_bytes());
            h.update(b"\n");
        }
        Digest::from_sha256(h)
    }

    /// Total compressed bytes.
    pub fn size(&self) -> u64 {
        self.chunks.iter().map(|c| c.size).sum()
    }

    /// At most [`chunks::MAX_CONTEXT_CHUNKS`] chunks.
    pub fn validate(&self) -> Result<(), FarmError> {
        if self.chunks.len() > chunks::MAX_CONTEXT_CHUNKS {
            return Err(FarmError::Invalid {
                what: "build context",
                reason: format!(
                    "{} chunks, over the limit of {}",
                    self.chunks.len(),
                    chunks::MAX_CONTEXT_CHUNKS
                ),
            });
        }
        Ok(())
    }
}

impl FarmDefinition {
    /// The definition of `graph`'s build (every vertex, inputs first; the
    /// targets in request order): what a farm client submits and what the
    /// local build hands its engine.
    pub fn from_graph(
        graph: &crate::graph::BuildGraph,
        context: Option<ContextBlob>,
        title: String,
    ) -> Self {
        Self {
            vertices: graph.vertices().into_iter().cloned().collect(),
            targets: graph
                .targets
                .iter()
                .map(|t| FarmTarget {
                    platform: t.platform.to_string(),
                    export: t.export.clone(),
                })
                .collect(),
            context,
            title,
        }
    }

    /// Checks what the coordinator relies on: keys unique, inputs defined
    /// before use, targets naming export vertices, platforms parseable,
    /// the context's chunk count bounded.
    pub fn validate(&self) -> Result<(), FarmError> {
        let invalid = |reason: String| FarmError::Invalid {
            what: "build definition",
            reason,
        };
        let mut seen = std::collections::BTreeSet::new();
        for v in &self.vertices {
            for i in &v.inputs {
                if !seen.contains(i) {
                    return Err(invalid(format!(
                        "vertex {} uses {} before it is defined",
                        v.key, i
                    )));
                }
            }
            if !seen.insert(v.key.clone()) {
                return Err(invalid(format!("vertex {} appears twice", v.key)));
            }
        }
        if self.targets.is_empty() {
            return Err(invalid("no target platform".into()));
        }
        for t in &self.targets {
            t.platform
                .parse::<crate::platform::Platform>()
                .map_err(|e| invalid(e.to_string()))?;
            if !seen.contains(&t.export) {
                return Err(invalid(format!(
                    "target {} names export {} which is not a vertex",
                    t.platform, t.export
                )));
            }
        }
        if let Some(c) = &self.context {
            c.validate()?;
        }
        Ok(())
    }
}

/// One vertex to run, with everything the worker cannot know by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexJob {
    /// The vertex (its key is the job's name).
    pub vertex: Vertex,
    /// Its direct inputs, in `vertex.inputs` order. Source vertices among
    /// them (context, inline files, URL) are solved again on the worker;
    /// the others come with a result in `input_results`.
    pub inputs: Vec<Vertex>,
    /// Results of the non-source inputs, by key. Their blobs are in the
    /// coordinator's store; the worker fetches those it lacks.
    pub input_results: Vec<(Digest, VertexResult)>,
    /// The build context, when the vertex or its inputs read it.
    pub context: Option<ContextBlob>,
    /// `--no-cache`: run it even if the worker's own cache holds the key
    /// (the result is still recorded there).
    #[serde(default)]
    pub no_cache: bool,
}

/// Registry credentials a client lends the coordinator for one build's
/// push. Kept in memory only; never written to the database or logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredential {
    /// Registry host (`reg.example:5000`).
    pub host: String,
    /// User name.
    pub username: String,
    /// Password or token.
    pub secret: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Where the merged index goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// References to push the index to (`--push -t ...`); empty = no push.
    /// The client downloads the result for every other output.
    pub push: Vec<String>,
    /// Credentials for the push, per registry host.
    pub credentials: Vec<RegistryCredential>,
    /// Registry hosts the coordinator may talk plain http to (loopback
    /// registries in tests, `--insecure`-style).
    pub insecure: Vec<String>,
    /// Skip the coordinator's cached results (`--no-cache`).
    pub no_cache: bool,
    /// The build's time limit in seconds (`--timeout`): past it the build
    /// fails and its running steps are cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Each step's time limit in seconds (`--step-timeout`): a step running
    /// longer is cancelled and fails the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout_secs: Option<u64>,
}

/// A blob header for a layer reference.
impl From<&LayerRef> for BlobHeader {
    fn from(l: &LayerRef) -> Self {
        BlobHeader {
            digest: l.digest.clone(),
            size: l.size,
        }
    }
}

#[cfg(test)]
mod tests;
