//! What a farm build sends before the coordinator accepts it: the packed
//! context (chunk layers), the definition (the client's graph, keys and
//! all), and the blobs to upload first.

use super::super::BuildArgs;
use super::{blobs, pack};
use crate::commands::du::human;
use crate::progress::Progress;
use anyhow::anyhow;
use imgfarm_common::context::BuildContext;
use imgfarm_common::farm::{encode, ContextBlob, FarmDefinition};
use imgfarm_common::graph::op::Op;
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{BlobHeader, Submit};
use std::path::Path;

fn title(a: &BuildArgs, dockerfile: &Path) -> String {
    if !a.tags.is_empty() {
        return a.tags.join(", ");
    }
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    format!("{} in {}", name(dockerfile), name(&a.context))
}

/// Re-attaching to a build submitted before: only the output (credentials
/// again) travels.
pub fn reattach_submission(id: &str, output: Vec<u8>) -> Submit {
    Submit {
        platforms: Vec::new(),
        definition: Vec::new(),
        context: Vec::new(),
        output,
        reattach: Some(id.to_string()),
    }
}

/// The blobs a new build uploads before it is submitted, by what they are.
#[derive(Debug, Default)]
pub struct Uploads {
    /// The context's chunk layers, in order.
    pub context: Vec<Digest>,
    /// Every blob of the base images (manifests, configs, layers).
    pub images: Vec<Digest>,
}

impl Uploads {
    /// Nothing to upload.
    pub fn is_empty(&self) -> bool {
        self.context.is_empty() && self.images.is_empty()
    }
}

/// A new build: the context packed (when a step reads it), the definition,
/// and every blob the coordinator needs before it accepts the build.
#[allow(clippy::too_many_arguments)]
pub fn new_submission(
    a: &BuildArgs,
    store: &ContentStore,
    ctx: &BuildContext,
    graph: &BuildGraph,
    platforms: &[Platform],
    dockerfile: &Path,
    state: &Path,
    output: Vec<u8>,
    progress: &mut Progress,
) -> anyhow::Result<(Submit, Uploads)> {
    let reads_context = graph
        .vertices()
        .iter()
        .any(|v| matches!(v.op, Op::Context(_)));
    let context = if reads_context {
        const STEP: &str = "farm:pack";
        progress.started(STEP, "[internal] packing the build context");
        let memo = state.join("cache").join("context");
        let packed = pack::pack_context(store, ctx, Some(&memo))?;
        progress.log(
            STEP,
            format!(
                "{} entries in {} ({} packed, {} unchanged), {} compressed\n",
                packed.entries,
                super::count(packed.chunks.len(), "chunk"),
                packed.chunks.len() - packed.reused,
                packed.reused,
                human(packed.size())
            )
            .as_bytes(),
        );
        progress.done(STEP);
        tracing::debug!(selection = %packed.selection, chunks = packed.chunks.len(), "packed the build context");
        Some(packed)
    } else {
        None
    };
    let context_blob = context.as_ref().map(|c| ContextBlob {
        chunks: c.chunks.clone(),
    });
    let mut uploads = Uploads {
        context: Vec::new(),
        images: blobs::base_image_blobs(store, graph)?,
    };
    if let Some(c) = &context {
        uploads.context = c.chunks.iter().map(|l| l.digest.clone()).collect();
        uploads.images.retain(|d| !uploads.context.contains(d));
    }
    let definition = FarmDefinition::from_graph(graph, context_blob, title(a, dockerfile));
    definition
        .validate()
        .map_err(|e| anyhow!("internal error: {e}"))?;
    let submit = Submit {
        platforms: platforms.iter().map(ToString::to_string).collect(),
        definition: encode(&definition),
        context: context
            .iter()
            .flat_map(|c| c.chunks.iter().map(BlobHeader::from))
            .collect(),
        output,
        reattach: None,
    };
    Ok((submit, uploads))
}
