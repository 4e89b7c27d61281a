//! Resolve a root descriptor in the store (index, nested index, or
//! manifest) to the one manifest for a platform, as `docker pull
//! --platform` / containerd's `images.Manifest` do.

use super::walk::MAX_DEPTH;
use super::{store_err, BlobStore, LayoutError};
use crate::oci::image::config::ImageConfig;
use crate::oci::image::document::descriptor_digest;
use crate::oci::image::select::compatible_platforms;
use crate::oci::image::MAX_DOCUMENT_SIZE;
use crate::oci::image::{select_manifests, Descriptor, Document, ImageError, PlatformRequest};

/// The manifest under `root` that best matches `req`. For a plain manifest
/// root, its config's platform must be compatible with `req`.
pub fn resolve_manifest(
    store: &dyn BlobStore,
    root: &Descriptor,
    req: &PlatformRequest,
) -> Result<Descriptor, LayoutError> {
    let mut current = root.clone();
    for _ in 0..=MAX_DEPTH {
        let digest = descriptor_digest(&current)?;
        let bytes = store
            .read_blob(&digest, MAX_DOCUMENT_SIZE)
            .map_err(store_err(format!("reading {digest}")))?;
        match Document::parse(&bytes, Some(current.media_type().as_ref()))? {
            Document::Index(index) => {
                let best = select_manifests(&index, req)?;
                current = best
                    .first()
                    .map(|d| (*d).clone())
                    .ok_or_else(|| LayoutError::Invalid(format!("index {digest} is empty")))?;
            }
            Document::Manifest(m) => {
                let cdigest = descriptor_digest(m.config())?;
                let cfg = ImageConfig::from_json(
                    &store
                        .read_blob(&cdigest, MAX_DOCUMENT_SIZE)
                        .map_err(store_err(format!("reading config {cdigest}")))?,
                )?;
                let have = cfg.platform();
                if !compatible_platforms(&req.platform).contains(&have) {
                    return Err(ImageError::NoMatchingPlatform {
                        wanted: req.platform.to_string(),
                        available: vec![have.to_string()],
                    }
                    .into());
                }
                return Ok(current);
            }
        }
    }
    Err(LayoutError::Invalid(format!(
        "indexes nested deeper than {MAX_DEPTH} levels under {}",
        root.digest()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layout::mem::MemBlobs;
    use crate::oci::layout::tests_support::sample_image;
    use crate::platform::Platform;

    #[test]
    fn resolves_index_and_checks_plain_manifests() {
        let s = MemBlobs::default();
        let refs = sample_image(&s);
        let arm = PlatformRequest::from(Platform::linux_arm64());
        assert_eq!(resolve_manifest(&s, &refs[0].descriptor, &arm).unwrap(), {
            let mut d = refs[2].descriptor.clone();
            d.set_platform(Some(crate::oci::image::to_oci_platform(
                &Platform::linux_arm64(),
            )));
            d
        });
        assert_eq!(
            resolve_manifest(&s, &refs[2].descriptor, &arm).unwrap(),
            refs[2].descriptor
        );
        let e = resolve_manifest(&s, &refs[1].descriptor, &arm).unwrap_err();
        assert!(e.to_string().contains("available: linux/amd64"), "{e}");
        let s390 = PlatformRequest::from(Platform::new("linux", "s390x", ""));
        let e = resolve_manifest(&s, &refs[0].descriptor, &s390).unwrap_err();
        assert!(e.to_string().contains("linux/amd64, linux/arm64"), "{e}");
    }
}
