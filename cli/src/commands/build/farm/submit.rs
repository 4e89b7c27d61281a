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
use imgfarm_common::proto::{encoded_len, BlobHeader, Submit, MAX_CONTROL_FRAME};
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
    check_submit_size(&submit)?;
    Ok((submit, uploads))
}

/// Bytes a `Message::Submit` frame adds around the `Submit` itself (the
/// enum tag, a varint of at most 5 bytes), rounded up.
const MESSAGE_TAG_HEADROOM: u64 = 16;

/// Refuses, before any connection or upload, a submission whose frame the
/// wire could not carry: the whole definition travels in one control frame
/// of at most [`MAX_CONTROL_FRAME`] bytes, and sending it anyway would only
/// fail later with a less helpful message.
pub fn check_submit_size(submit: &Submit) -> anyhow::Result<()> {
    let len = encoded_len(submit)
        .map_err(|e| anyhow!("internal error: {e}"))?
        .saturating_add(MESSAGE_TAG_HEADROOM);
    if len > u64::from(MAX_CONTROL_FRAME) {
        return Err(anyhow!(
            "the build graph is {} encoded, more than the farm's {} MiB message limit; \
             split the Dockerfile (fewer instructions or smaller heredocs) or build locally \
             (without --farm)",
            megabytes(len),
            MAX_CONTROL_FRAME >> 20
        ));
    }
    Ok(())
}

/// `84.9 MB` (decimal megabytes, one decimal).
fn megabytes(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(definition: usize) -> Submit {
        Submit {
            platforms: vec!["linux/amd64".into()],
            definition: vec![b'x'; definition],
            context: Vec::new(),
            output: Vec::new(),
            reattach: None,
        }
    }

    #[test]
    fn a_definition_over_the_frame_limit_is_refused_with_its_size() {
        let big = submit(MAX_CONTROL_FRAME as usize + 1);
        let msg = check_submit_size(&big).unwrap_err().to_string();
        assert!(msg.contains("the build graph is 16.8 MB encoded"), "{msg}");
        assert!(msg.contains("16 MiB message limit"), "{msg}");
        assert!(msg.contains("build locally"), "{msg}");
        assert!(!msg.contains("peer"), "{msg}");
    }

    #[test]
    fn a_definition_that_fits_passes_and_the_check_matches_the_codec() {
        check_submit_size(&submit(1024)).unwrap();
        // What the check lets through near the limit still encodes as a frame.
        let near = submit(MAX_CONTROL_FRAME as usize - 64);
        check_submit_size(&near).unwrap();
        imgfarm_common::proto::encode_frame(&imgfarm_common::proto::Message::Submit(near)).unwrap();
    }
}
