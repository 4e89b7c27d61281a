//! What a vertex produces: the layer chain and deltas a worker computed,
//! named by blobs in a content store. The same result is valid on any worker
//! that holds (or fetches) those blobs, which is what makes cross-worker
//! cache reuse and failover safe (DESIGN.md "Cache keys").

pub use crate::oci::layer::LayerRef;
use crate::oci::store::RefDescriptor;
use crate::oci::Digest;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The result of one vertex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexResult {
    /// The whole filesystem as a layer chain, bottom first.
    pub chain: Vec<LayerRef>,
    /// The layers this vertex adds to an exported image (a base image: all
    /// of its layers; COPY/RUN/WORKDIR: one; merge and sources: none).
    pub delta: Vec<LayerRef>,
    /// A base image's config blob.
    pub base_config: Option<Digest>,
    /// An export vertex's manifest.
    pub manifest: Option<RefDescriptor>,
    /// Files of an inline source (heredocs), written under the state dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_dir: Option<PathBuf>,
}

impl VertexResult {
    /// Every blob the result names (layers, base config, manifest), each once,
    /// in a stable order. A manifest's own config is not listed: read the
    /// manifest to find it.
    pub fn blobs(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::new();
        let mut add = |d: &Digest| {
            if !out.contains(d) {
                out.push(d.clone());
            }
        };
        for l in self.chain.iter().chain(&self.delta) {
            add(&l.digest);
        }
        if let Some(c) = &self.base_config {
            add(c);
        }
        if let Some(m) = &self.manifest {
            add(&m.digest);
        }
        out
    }

    /// Is the result usable: every blob it names held (`contains`) and its
    /// inline files' directory present? A cached result counts only while
    /// it is complete.
    pub fn is_complete(&self, contains: impl Fn(&Digest) -> bool) -> bool {
        self.blobs().iter().all(contains) && self.files_dir.as_ref().is_none_or(|d| d.is_dir())
    }
}
