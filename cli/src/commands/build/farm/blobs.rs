//! Blobs between the client's local store and the coordinator's: the
//! context chunks and base images go up before the build is submitted; the
//! built images (index, manifests, configs, layers) come down after it.

use anyhow::{anyhow, bail, Context as _};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use imgfarm_common::graph::op::Op;
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::image::read_manifest;
use imgfarm_common::oci::image::{descriptor_digest, Document, MAX_DOCUMENT_SIZE};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_worker::link::{LinkHandle, PutOutcome};

/// Transfers in flight at once (one QUIC stream each).
const PARALLEL: usize = 4;

/// Uploads in flight at once: most context chunks are already on the
/// coordinator and cost one round trip each, so more of them overlap (the
/// coordinator accepts 256 streams per connection).
const UPLOAD_PARALLEL: usize = 16;

/// Every blob of the base images the graph names by digest: each
/// manifest, its config and its layers, each once, in a stable order.
pub fn base_image_blobs(store: &ContentStore, graph: &BuildGraph) -> anyhow::Result<Vec<Digest>> {
    let mut out: Vec<Digest> = Vec::new();
    let mut add = |d: Digest| {
        if !out.contains(&d) {
            out.push(d);
        }
    };
    for v in graph.vertices() {
        let Op::Image(img) = &v.op else { continue };
        let Some(manifest) = &img.digest else {
            continue;
        };
        let (_, (config, layers)) = read_manifest(store, manifest)
            .with_context(|| format!("base image {} in the local store", img.reference))?;
        add(manifest.clone());
        add(config);
        for l in layers {
            if !store.contains(&l.digest) {
                bail!(
                    "base image {}: layer {} is missing from the local store; \
                     pull the image again (imgfarm pull {})",
                    img.reference,
                    l.digest,
                    img.reference
                );
            }
            add(l.digest);
        }
    }
    Ok(out)
}

/// The config and layer digests a manifest in `store` names (read before
/// the config itself is present).
fn manifest_children(store: &ContentStore, manifest: &Digest) -> anyhow::Result<Vec<Digest>> {
    let bad = |e: String| anyhow!("built manifest {manifest} from the coordinator: {e}");
    let bytes = store
        .read_bytes(manifest, MAX_DOCUMENT_SIZE)
        .map_err(|e| bad(e.to_string()))?;
    let Document::Manifest(m) = Document::parse(&bytes, None).map_err(|e| bad(e.to_string()))?
    else {
        return Err(bad("is an index, not an image manifest".into()));
    };
    let mut out = vec![descriptor_digest(m.config()).map_err(|e| bad(e.to_string()))?];
    for l in m.layers() {
        out.push(descriptor_digest(l).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

/// What an upload did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UploadReport {
    /// Blobs sent.
    pub sent: usize,
    /// Blobs the coordinator already held (nothing sent).
    pub present: usize,
    /// Bytes sent.
    pub bytes: u64,
}

/// Puts `blobs` from `store` to the coordinator, a few at a time.
pub async fn upload(
    link: &LinkHandle,
    store: &ContentStore,
    blobs: &[Digest],
) -> anyhow::Result<UploadReport> {
    let outcomes: Vec<(PutOutcome, u64)> = stream::iter(blobs.iter().map(|d| async move {
        let size = std::fs::metadata(store.blob_path(d)).map_or(0, |m| m.len());
        link.put_blob_from_store(store, d)
            .await
            .map(|o| (o, size))
            .map_err(|e| anyhow!("uploading {d} to the coordinator: {e}"))
    }))
    .buffer_unordered(UPLOAD_PARALLEL)
    .try_collect()
    .await?;
    let mut r = UploadReport::default();
    for (o, size) in outcomes {
        match o {
            PutOutcome::Stored => {
                r.sent += 1;
                r.bytes += size;
            }
            PutOutcome::AlreadyPresent => r.present += 1,
        }
    }
    Ok(r)
}

async fn fetch(link: &LinkHandle, store: &ContentStore, d: &Digest) -> anyhow::Result<()> {
    match link.get_blob(store, d).await {
        Ok(true) => Ok(()),
        Ok(false) => bail!("the coordinator does not hold blob {d} of the built image"),
        Err(e) => Err(anyhow!("downloading {d} from the coordinator: {e}")),
    }
}

/// Downloads the built images: `index` (if any), each manifest, then each
/// manifest's config and layers. Every blob is verified against its digest
/// and size as it is written.
pub async fn download_images(
    link: &LinkHandle,
    store: &ContentStore,
    index: Option<&Digest>,
    manifests: &[Digest],
) -> anyhow::Result<()> {
    if let Some(i) = index {
        fetch(link, store, i).await?;
    }
    let mut rest: Vec<Digest> = Vec::new();
    for m in manifests {
        fetch(link, store, m).await?;
        for d in manifest_children(store, m)? {
            if !rest.contains(&d) {
                rest.push(d);
            }
        }
    }
    stream::iter(rest.iter().map(|d| fetch(link, store, d)))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
