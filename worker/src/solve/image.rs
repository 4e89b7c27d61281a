//! Base images from the local image store (refs in the content store):
//! resolve `FROM name` for a platform to its manifest and config, and turn
//! a manifest into the layer chain a vertex result holds.

use super::SolveError;
use imgfarm_common::dockerfile::frontend::ResolvedImage;
use imgfarm_common::graph::image_config::{HistoryEntry, StageConfig};
use imgfarm_common::oci::image::{descriptor_digest, read_manifest, ImageConfig, PlatformRequest};
use imgfarm_common::oci::layout::{from_ref_descriptor, resolve_manifest};
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::platform::Platform;

/// Names a normalised reference may be stored under: as given, then the
/// familiar short forms (`docker.io/library/busybox:latest` → `busybox:latest`).
pub fn ref_candidates(reference: &str) -> Vec<String> {
    let mut out = vec![reference.to_string()];
    if let Some(rest) = reference.strip_prefix("docker.io/") {
        out.push(rest.to_string());
        if let Some(short) = rest.strip_prefix("library/") {
            out.push(short.to_string());
        }
    }
    out
}

/// The local store's ref for `reference`, if any.
pub fn find_ref(store: &ContentStore, reference: &str) -> Option<(String, RefDescriptor)> {
    ref_candidates(reference)
        .into_iter()
        .find_map(|n| store.get_ref(&n).ok().flatten().map(|d| (n, d)))
}

/// Resolve `reference` for `platform` in the local store: the manifest
/// digest and the config as the graph needs it. `Ok(None)` when the store
/// has no such ref.
pub fn resolve_local(
    store: &ContentStore,
    reference: &str,
    platform: &Platform,
) -> Result<Option<ResolvedImage>, SolveError> {
    let Some((name, root)) = find_ref(store, reference) else {
        return Ok(None);
    };
    let desc = resolve_manifest(
        store,
        &from_ref_descriptor(&root),
        &PlatformRequest::from(platform.clone()),
    )
    .map_err(|e| SolveError::BaseImage(format!("{name} for {platform}: {e}")))?;
    let digest = descriptor_digest(&desc).map_err(|e| SolveError::BaseImage(e.to_string()))?;
    let (config, _) = read_manifest(store, &digest)?;
    Ok(Some(ResolvedImage {
        digest,
        config: stage_config(&config),
    }))
}

/// The parts of an image config a Dockerfile stage starts from.
pub fn stage_config(c: &ImageConfig) -> StageConfig {
    let r = &c.config;
    StageConfig {
        user: r.user.clone().unwrap_or_default(),
        exposed_ports: r.exposed_ports.keys().cloned().collect(),
        env: r.env.clone(),
        entrypoint: (!r.entrypoint.is_empty()).then(|| r.entrypoint.clone()),
        cmd: (!r.cmd.is_empty()).then(|| r.cmd.clone()),
        volumes: r.volumes.keys().cloned().collect(),
        working_dir: r.working_dir.clone().unwrap_or_default(),
        labels: r.labels.clone(),
        stop_signal: r.stop_signal.clone().unwrap_or_default(),
        onbuild: r.on_build.clone(),
        shell: r.shell.clone(),
        history: c
            .history
            .iter()
            .map(|h| HistoryEntry {
                created_by: h.created_by.clone().unwrap_or_default(),
                comment: h.comment.clone().unwrap_or_default(),
                empty_layer: h.empty_layer,
            })
            .collect(),
        ..StageConfig::default()
    }
}
