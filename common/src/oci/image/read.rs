//! Reading an image manifest back out of the content store: its config and
//! its layer chain (image spec "Image Manifest": `config` and `layers`; the
//! config's `rootfs.diff_ids` pair with the layers in order).

use super::{descriptor_digest, Document, ImageConfig, MAX_DOCUMENT_SIZE};
use crate::oci::layer::LayerRef;
use crate::oci::store::ContentStore;
use crate::oci::Digest;

/// A manifest that could not be read, or is not a usable image manifest.
#[derive(Debug, thiserror::Error)]
#[error("manifest {manifest}: {reason}")]
pub struct ReadManifestError {
    /// The manifest's digest.
    pub manifest: Digest,
    /// What was wrong.
    pub reason: String,
}

/// The config of image manifest `manifest` in `store`, the config's digest
/// and the layers bottom first. An index, a missing blob or a config whose
/// `rootfs.diff_ids` do not match the layers one for one is an error.
pub fn read_manifest(
    store: &ContentStore,
    manifest: &Digest,
) -> Result<(ImageConfig, (Digest, Vec<LayerRef>)), ReadManifestError> {
    let err = |reason: String| ReadManifestError {
        manifest: manifest.clone(),
        reason,
    };
    let bytes = store
        .read_bytes(manifest, MAX_DOCUMENT_SIZE)
        .map_err(|e| err(e.to_string()))?;
    let Document::Manifest(m) = Document::parse(&bytes, None).map_err(|e| err(e.to_string()))?
    else {
        return Err(err("is an index, not a manifest".into()));
    };
    let cdigest = descriptor_digest(m.config()).map_err(|e| err(e.to_string()))?;
    let config = ImageConfig::from_json(
        &store
            .read_bytes(&cdigest, MAX_DOCUMENT_SIZE)
            .map_err(|e| err(e.to_string()))?,
    )
    .map_err(|e| err(e.to_string()))?;
    if config.rootfs.diff_ids.len() != m.layers().len() {
        return Err(err(format!(
            "{} layers but {} diff_ids in its config",
            m.layers().len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (l, diff_id) in m.layers().iter().zip(&config.rootfs.diff_ids) {
        layers.push(LayerRef {
            digest: descriptor_digest(l).map_err(|e| err(e.to_string()))?,
            diff_id: diff_id.clone(),
            size: l.size(),
            media_type: l.media_type().to_string(),
        });
    }
    Ok((config, (cdigest, layers)))
}
