//! Moving a job's blobs between the coordinator's store and the worker's
//! (FARM.md, worker step 4): before a vertex runs, every blob of its input
//! results (plus a manifest's config), the context chunks and, for a base
//! image vertex, the manifest and its config come down; afterwards every
//! blob of the result goes up. Each transfer is verified by digest and size
//! on the receiving side ([`crate::link::LinkHandle`]).

use crate::link::{LinkHandle, PutOutcome};
use crate::metrics::{Direction, WorkerMetrics};
use crate::solve::result::VertexResult;
use imgfarm_common::farm::VertexJob;
use imgfarm_common::graph::op::Op;
use imgfarm_common::oci::image::{descriptor_digest, Document, MAX_DOCUMENT_SIZE};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use std::collections::BTreeSet;

/// A blob a job needs, and what for (for the error when it is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// The blob.
    pub digest: Digest,
    /// What needs it, e.g. `the result of input sha256:…`.
    pub why: String,
}

/// The blobs a job names directly, each once, in a stable order: the context
/// chunks, the blobs of every input result, and a base image's manifest.
/// Configs of manifests are found once the manifests are here
/// ([`manifests_to_read`]).
pub fn needed_blobs(job: &VertexJob) -> Vec<Needed> {
    let mut out: Vec<Needed> = Vec::new();
    let mut add = |digest: &Digest, why: String| {
        if !out.iter().any(|n| &n.digest == digest) {
            out.push(Needed {
                digest: digest.clone(),
                why,
            });
        }
    };
    if let Some(c) = &job.context {
        let n = c.chunks.len();
        for (i, l) in c.chunks.iter().enumerate() {
            add(
                &l.digest,
                format!("the build context (chunk {} of {n})", i + 1),
            );
        }
    }
    for (key, r) in &job.input_results {
        for d in r.blobs() {
            add(&d, format!("the result of input {key}"));
        }
    }
    if let Op::Image(img) = &job.vertex.op {
        if let Some(d) = &img.digest {
            add(d, format!("the manifest of base image {}", img.reference));
        }
    }
    out
}

/// The manifests whose config a job also needs: those of its input results
/// and a base image vertex's own.
pub fn manifests_to_read(job: &VertexJob) -> Vec<(Digest, String)> {
    let mut out = Vec::new();
    for (key, r) in &job.input_results {
        if let Some(m) = &r.manifest {
            out.push((m.digest.clone(), format!("the result of input {key}")));
        }
    }
    if let Op::Image(img) = &job.vertex.op {
        if let Some(d) = &img.digest {
            out.push((d.clone(), format!("base image {}", img.reference)));
        }
    }
    out
}

/// The config blob an image manifest in `store` names.
pub fn manifest_config(store: &ContentStore, manifest: &Digest) -> Result<Digest, String> {
    let err = |e: &dyn std::fmt::Display| format!("manifest {manifest}: {e}");
    let bytes = store
        .read_bytes(manifest, MAX_DOCUMENT_SIZE)
        .map_err(|e| err(&e))?;
    match Document::parse(&bytes, None).map_err(|e| err(&e))? {
        Document::Manifest(m) => descriptor_digest(m.config()).map_err(|e| err(&e)),
        _ => Err(err(&"is an index, not an image manifest")),
    }
}

/// Blob transfers a job runs at once (each on its own QUIC stream).
pub const PARALLEL_TRANSFERS: usize = 4;

/// Downloads what the worker lacks of `needed`, [`PARALLEL_TRANSFERS`] at a
/// time, recording in `remote` the digests the coordinator proved to hold.
/// The first failure stops the rest.
async fn fetch(
    link: &LinkHandle,
    store: &ContentStore,
    needed: &[Needed],
    remote: &mut BTreeSet<Digest>,
    metrics: &WorkerMetrics,
) -> Result<(), String> {
    let mut todo = needed
        .iter()
        .filter(|n| !store.contains(&n.digest))
        .cloned();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < PARALLEL_TRANSFERS {
            let Some(n) = todo.next() else { break };
            let (link, store) = (link.clone(), store.clone());
            running.spawn(async move {
                let r = link.get_blob(&store, &n.digest).await;
                (n, r)
            });
        }
        let Some(joined) = running.join_next().await else {
            return Ok(());
        };
        let (n, r) = joined.map_err(|e| format!("a blob download task failed: {e}"))?;
        match r {
            Ok(true) => {
                metrics.blob_transferred(Direction::Download, blob_size(store, &n.digest));
                remote.insert(n.digest);
            }
            Ok(false) => {
                return Err(format!(
                    "the coordinator does not have blob {} ({}): the client must upload it \
                     before submitting the build",
                    n.digest, n.why
                ))
            }
            Err(e) => return Err(format!("downloading blob {} ({}): {e}", n.digest, n.why)),
        }
    }
}

/// Brings every blob `job` needs into `store`; returns the digests known to
/// be in the coordinator's store.
pub async fn fetch_job_blobs(
    link: &LinkHandle,
    store: &ContentStore,
    job: &VertexJob,
    metrics: &WorkerMetrics,
) -> Result<BTreeSet<Digest>, String> {
    let mut remote = BTreeSet::new();
    fetch(link, store, &needed_blobs(job), &mut remote, metrics).await?;
    let mut configs = Vec::new();
    for (manifest, why) in manifests_to_read(job) {
        let digest = manifest_config(store, &manifest)?;
        configs.push(Needed {
            digest,
            why: format!("the config of {why}"),
        });
    }
    fetch(link, store, &configs, &mut remote, metrics).await?;
    Ok(remote)
}

/// Every blob of a result: [`VertexResult::blobs`] plus the config of its
/// manifest (read from `store`).
pub fn result_blobs(store: &ContentStore, r: &VertexResult) -> Result<Vec<Digest>, String> {
    let mut out = r.blobs();
    if let Some(m) = &r.manifest {
        let c = manifest_config(store, &m.digest)?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Uploads every blob of `r` the coordinator may lack,
/// [`PARALLEL_TRANSFERS`] at a time. A base image's layers (`base_image`)
/// need not be here: the client uploaded them.
pub async fn put_result(
    link: &LinkHandle,
    store: &ContentStore,
    r: &VertexResult,
    base_image: bool,
    remote: &BTreeSet<Digest>,
    metrics: &WorkerMetrics,
) -> Result<(), String> {
    let mut todo = Vec::new();
    for d in result_blobs(store, r)? {
        if remote.contains(&d) {
            continue;
        }
        if !store.contains(&d) {
            if base_image {
                continue;
            }
            return Err(format!(
                "result blob {d} is missing from the worker's store (internal error)"
            ));
        }
        todo.push(d);
    }
    let mut todo = todo.into_iter();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < PARALLEL_TRANSFERS {
            let Some(d) = todo.next() else { break };
            let (link, store) = (link.clone(), store.clone());
            running.spawn(async move {
                let r = link.put_blob_from_store(&store, &d).await;
                (d, r)
            });
        }
        let Some(joined) = running.join_next().await else {
            return Ok(());
        };
        let (d, r) = joined.map_err(|e| format!("a blob upload task failed: {e}"))?;
        if r.map_err(|e| format!("uploading result blob {d}: {e}"))? == PutOutcome::Stored {
            metrics.blob_transferred(Direction::Upload, blob_size(store, &d));
        }
    }
}

/// The size of blob `d` in `store` (0 when it cannot be read: only a
/// counter is off).
fn blob_size(store: &ContentStore, d: &Digest) -> u64 {
    std::fs::metadata(store.blob_path(d)).map_or(0, |m| m.len())
}
