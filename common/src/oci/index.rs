//! Index merge: one OCI image index from per-platform manifests, as
//! BuildKit's exporter makes for `--platform a,b` (image-spec
//! `image-index.md`: each entry carries a `platform` object).
//!
//! Rules: entries keep the caller's order (BuildKit keeps the `--platform`
//! order); the same digest given twice for the same platform is kept once;
//! the same digest for two different platforms, or two digests for one
//! platform, is refused (a manifest's config names exactly one platform, and
//! a reader could not tell two manifests for one platform apart); an index
//! is never nested inside the index unless [`MergeOptions::allow_nested_index`]
//! is set.

use crate::oci::image::document::{descriptor_digest, new_index, to_oci_platform};
use crate::oci::image::{Descriptor, ImageError, ImageIndex};
use crate::oci::media_types::{classify, MediaKind};
use crate::oci::Digest;
use crate::platform::Platform;
use std::collections::BTreeMap;

/// Why a merge was refused.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Nothing to merge.
    #[error("cannot make an image index from zero manifests; build at least one platform")]
    Empty,
    /// An entry is an index and nesting was not asked for.
    #[error("{digest} for {platform} is an image index; nesting an index inside an index is refused unless explicitly allowed")]
    NestedIndex {
        /// The nested index.
        digest: String,
        /// Its platform.
        platform: String,
    },
    /// An entry is neither a manifest nor an index.
    #[error(
        "{digest} for {platform} has media type {media_type:?}, which is not an image manifest"
    )]
    NotAManifest {
        /// The entry.
        digest: String,
        /// Its platform.
        platform: String,
        /// What it is.
        media_type: String,
    },
    /// One manifest claimed for two platforms.
    #[error("manifest {digest} was given for both {first} and {second}; a manifest describes one platform")]
    DigestOnTwoPlatforms {
        /// The manifest.
        digest: String,
        /// First platform.
        first: String,
        /// Second platform.
        second: String,
    },
    /// Two manifests for one platform.
    #[error(
        "two different manifests for {platform} ({first} and {second}); keep one per platform"
    )]
    TwoManifestsForPlatform {
        /// The platform.
        platform: String,
        /// First manifest.
        first: String,
        /// Second manifest.
        second: String,
    },
    /// A descriptor with a bad digest.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// Merge options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOptions {
    /// Allow an entry that is itself an index.
    pub allow_nested_index: bool,
}

/// Merge per-platform manifests into one OCI index with `platform` fields
/// and the given index-level annotations (defaults: no nesting).
pub fn merge(
    per_platform: &[(Platform, Descriptor)],
    annotations: &BTreeMap<String, String>,
) -> Result<ImageIndex, IndexError> {
    merge_with(per_platform, annotations, MergeOptions::default())
}

/// [`merge`] with options.
pub fn merge_with(
    per_platform: &[(Platform, Descriptor)],
    annotations: &BTreeMap<String, String>,
    opts: MergeOptions,
) -> Result<ImageIndex, IndexError> {
    if per_platform.is_empty() {
        return Err(IndexError::Empty);
    }
    let mut seen: Vec<(Digest, Platform)> = Vec::new();
    let mut entries = Vec::new();
    for (platform, desc) in per_platform {
        let platform = Platform::new(&platform.os, &platform.architecture, &platform.variant);
        let digest = descriptor_digest(desc)?;
        match classify(desc.media_type().as_ref()) {
            MediaKind::Manifest => {}
            MediaKind::Index if opts.allow_nested_index => {}
            MediaKind::Index => {
                return Err(IndexError::NestedIndex {
                    digest: digest.to_string(),
                    platform: platform.to_string(),
                })
            }
            _ => {
                return Err(IndexError::NotAManifest {
                    digest: digest.to_string(),
                    platform: platform.to_string(),
                    media_type: desc.media_type().to_string(),
                })
            }
        }
        if let Some((_, first)) = seen.iter().find(|(d, _)| *d == digest) {
            if *first == platform {
                continue;
            }
            return Err(IndexError::DigestOnTwoPlatforms {
                digest: digest.to_string(),
                first: first.to_string(),
                second: platform.to_string(),
            });
        }
        if let Some((first, _)) = seen.iter().find(|(_, p)| *p == platform) {
            return Err(IndexError::TwoManifestsForPlatform {
                platform: platform.to_string(),
                first: first.to_string(),
                second: digest.to_string(),
            });
        }
        let mut entry = desc.clone();
        entry.set_platform(Some(to_oci_platform(&platform)));
        seen.push((digest, platform));
        entries.push(entry);
    }
    Ok(new_index(entries, annotations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::document::{descriptor_for, from_oci_platform, index_to_json};
    use crate::oci::media_types::{OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};

    fn m(tag: &str) -> Descriptor {
        descriptor_for(OCI_MANIFEST, tag.as_bytes())
    }

    #[test]
    fn merges_in_order_with_platforms_and_annotations() {
        let mut ann = BTreeMap::new();
        ann.insert(
            "org.opencontainers.image.created".to_string(),
            "1970-01-01T00:00:00Z".to_string(),
        );
        let idx = merge(
            &[
                (Platform::linux_arm64(), m("arm")),
                (Platform::linux_amd64(), m("amd")),
                (Platform::linux_arm64(), m("arm")),
            ],
            &ann,
        )
        .unwrap();
        assert_eq!(idx.manifests().len(), 2);
        let plats: Vec<_> = idx
            .manifests()
            .iter()
            .map(|d| from_oci_platform(d.platform().as_ref().unwrap()).to_string())
            .collect();
        assert_eq!(plats, ["linux/arm64", "linux/amd64"]);
        assert_eq!(idx.media_type().as_ref().unwrap().to_string(), OCI_INDEX);
        let a = index_to_json(&idx).unwrap();
        let b = index_to_json(
            &merge(
                &[
                    (Platform::linux_arm64(), m("arm")),
                    (Platform::linux_amd64(), m("amd")),
                ],
                &ann,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(a, b, "dedupe must not change the bytes");
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            merge(&[], &BTreeMap::new()),
            Err(IndexError::Empty)
        ));
        let nested = descriptor_for(OCI_INDEX, b"i");
        let e = merge(
            &[(Platform::linux_amd64(), nested.clone())],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(matches!(e, IndexError::NestedIndex { .. }), "{e}");
        assert!(merge_with(
            &[(Platform::linux_amd64(), nested)],
            &BTreeMap::new(),
            MergeOptions {
                allow_nested_index: true
            }
        )
        .is_ok());
        let e = merge(
            &[(
                Platform::linux_amd64(),
                descriptor_for(OCI_LAYER_GZIP, b"l"),
            )],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(matches!(e, IndexError::NotAManifest { .. }), "{e}");
        let e = merge(
            &[
                (Platform::linux_amd64(), m("x")),
                (Platform::linux_arm64(), m("x")),
            ],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("was given for both linux/amd64 and linux/arm64"),
            "{e}"
        );
        let e = merge(
            &[
                (Platform::linux_amd64(), m("x")),
                (Platform::linux_amd64(), m("y")),
            ],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            matches!(e, IndexError::TwoManifestsForPlatform { .. }),
            "{e}"
        );
    }
}
