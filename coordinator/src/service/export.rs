//! The end of a build: the per-platform manifests merged into one OCI image
//! index (image-spec `image-index.md`, entries in `--platform` order with
//! their `platform` objects, as BuildKit's exporter writes them), stored in
//! the coordinator's content store, then pushed when the client asked.

use imgfarm_common::farm::OutputSpec;
use imgfarm_common::oci::image::document::{index_to_json, to_oci_digest};
use imgfarm_common::oci::image::Descriptor;
use imgfarm_common::oci::index::merge;
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{BlobHeader, BuiltManifest};
use imgfarm_common::registry::{
    Credential, PushOptions, Reference, RegistryClient, RegistryConfig,
};
use std::collections::BTreeMap;

/// Why the index could not be made or pushed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An export vertex has no manifest in its result.
    #[error("the export vertex for {platform} returned no image manifest; the worker's result is incomplete")]
    NoManifest {
        /// The platform.
        platform: String,
    },
    /// A platform string did not parse.
    #[error("target platform {0:?} does not parse")]
    BadPlatform(String),
    /// The merge refused the manifests.
    #[error("merging the per-platform manifests: {0}")]
    Merge(String),
    /// The store failed.
    #[error("coordinator content store: {0}")]
    Store(String),
    /// A push reference is invalid.
    #[error("push target {reference:?}: {reason}")]
    BadReference {
        /// The reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The registry refused or failed.
    #[error("pushing to {reference}: {reason}")]
    Push {
        /// The reference.
        reference: String,
        /// The registry client's message.
        reason: String,
    },
}

/// The merged index: its blob and the manifests it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedIndex {
    /// The index blob (in the store).
    pub index: BlobHeader,
    /// Per-platform manifests in request order.
    pub manifests: Vec<BuiltManifest>,
}

/// Merges `(platform, manifest)` pairs (request order) into an OCI index,
/// stores it and returns its header.
pub fn make_index(
    store: &ContentStore,
    per_platform: &[(String, RefDescriptor)],
) -> Result<MergedIndex, ExportError> {
    let mut entries: Vec<(Platform, Descriptor)> = Vec::new();
    let mut manifests = Vec::new();
    for (plat, m) in per_platform {
        let p: Platform = plat
            .parse()
            .map_err(|_| ExportError::BadPlatform(plat.clone()))?;
        let d = Descriptor::new(
            m.media_type.as_str().into(),
            m.size,
            to_oci_digest(&m.digest),
        );
        entries.push((p, d));
        manifests.push(BuiltManifest::new(plat, m));
    }
    let index = merge(&entries, &BTreeMap::new()).map_err(|e| ExportError::Merge(e.to_string()))?;
    let bytes = index_to_json(&index).map_err(|e| ExportError::Merge(e.to_string()))?;
    let digest = store
        .put_bytes(&bytes)
        .map_err(|e| ExportError::Store(e.to_string()))?;
    Ok(MergedIndex {
        index: BlobHeader {
            digest,
            size: bytes.len() as u64,
        },
        manifests,
    })
}

/// A registry client for one build's push: the client's credentials (in
/// memory only) and its insecure hosts; loopback registries may use plain
/// http as the local client allows.
pub fn registry_client(output: &OutputSpec) -> RegistryClient {
    let mut cfg = RegistryConfig::default();
    for c in &output.credentials {
        cfg.explicit_credentials
            .insert(c.host.clone(), Credential::basic(&c.username, &c.secret));
    }
    cfg.insecure_registries = output.insecure.clone();
    RegistryClient::new(cfg)
}

/// Pushes the index `index` (and what it names) to every reference of
/// `output.push`; returns the references pushed.
pub async fn push_index(
    store: &ContentStore,
    index: &Digest,
    output: &OutputSpec,
) -> Result<Vec<String>, ExportError> {
    let client = registry_client(output);
    let mut pushed = Vec::new();
    for r in &output.push {
        let target: Reference =
            r.parse()
                .map_err(|e: imgfarm_common::registry::reference::ReferenceError| {
                    ExportError::BadReference {
                        reference: r.clone(),
                        reason: e.to_string(),
                    }
                })?;
        client
            .push(store, index, &target, &PushOptions::default())
            .await
            .map_err(|e| ExportError::Push {
                reference: r.clone(),
                reason: e.to_string(),
            })?;
        pushed.push(r.clone());
    }
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgfarm_common::farm::LayerRef;
    use imgfarm_common::oci::image::document::{descriptor_for, from_oci_platform, new_manifest};
    use imgfarm_common::oci::image::ImageIndex;
    use imgfarm_common::oci::media_types::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};

    fn manifest(store: &ContentStore, tag: &str, with_layer: bool) -> RefDescriptor {
        let config = format!("{{\"architecture\":\"{tag}\",\"os\":\"linux\"}}");
        let cfg = store.put_bytes(config.as_bytes()).unwrap();
        let layer = format!("layer {tag}");
        let layer_desc = descriptor_for(OCI_LAYER_GZIP, layer.as_bytes());
        if with_layer {
            store.put_bytes(layer.as_bytes()).unwrap();
        }
        let m = new_manifest(
            descriptor_for(OCI_CONFIG, config.as_bytes()),
            vec![layer_desc],
            &BTreeMap::new(),
        );
        let bytes = imgfarm_common::oci::image::document::manifest_to_json(&m).unwrap();
        let d = store.put_bytes(&bytes).unwrap();
        let _ = cfg;
        RefDescriptor::new(OCI_MANIFEST, d, bytes.len() as u64)
    }

    #[test]
    fn index_lists_platforms_in_request_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let arm = manifest(&store, "arm64", true);
        let amd = manifest(&store, "amd64", true);
        let merged = make_index(
            &store,
            &[
                ("linux/arm64".into(), arm.clone()),
                ("linux/amd64".into(), amd.clone()),
            ],
        )
        .unwrap();
        assert_eq!(merged.manifests[0].manifest.digest, arm.digest);
        let bytes = store.read_bytes(&merged.index.digest, 1 << 20).unwrap();
        assert_eq!(bytes.len() as u64, merged.index.size);
        let idx: ImageIndex = serde_json::from_slice(&bytes).unwrap();
        let plats: Vec<String> = idx
            .manifests()
            .iter()
            .map(|d| from_oci_platform(d.platform().as_ref().unwrap()).to_string())
            .collect();
        assert_eq!(plats, ["linux/arm64", "linux/amd64"]);
        let e = make_index(&store, &[("linux/".into(), arm)]).unwrap_err();
        assert!(matches!(e, ExportError::BadPlatform(_)));
    }

    #[test]
    fn missing_blobs_are_named() {
        use crate::engine::Blobs;
        use imgfarm_common::farm::VertexResult;
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let complete = VertexResult {
            manifest: Some(manifest(&store, "amd64", true)),
            ..VertexResult::default()
        };
        assert_eq!(store.missing(&complete).unwrap(), None);
        let no_layer = VertexResult {
            manifest: Some(manifest(&store, "arm64", false)),
            ..VertexResult::default()
        };
        let gone = store.missing(&no_layer).unwrap().unwrap();
        assert_eq!(gone, Digest::sha256_of(b"layer arm64"));
        let ghost = Digest::sha256_of(b"ghost");
        let r = VertexResult {
            delta: vec![LayerRef {
                digest: ghost.clone(),
                diff_id: ghost.clone(),
                size: 1,
                media_type: OCI_LAYER_GZIP.into(),
            }],
            ..VertexResult::default()
        };
        assert_eq!(store.missing(&r).unwrap(), Some(ghost));
    }

    #[test]
    fn registry_client_takes_only_the_builds_credentials() {
        let out = OutputSpec {
            credentials: vec![imgfarm_common::farm::RegistryCredential {
                host: "reg:5000".into(),
                username: "u".into(),
                secret: "s".into(),
            }],
            insecure: vec!["reg:5000".into()],
            ..OutputSpec::default()
        };
        let c = registry_client(&out);
        assert!(c.config().explicit_credentials.contains_key("reg:5000"));
        assert_eq!(c.config().insecure_registries, vec!["reg:5000".to_string()]);
        assert!(c.config().credentials.lookup("reg:5000").unwrap().is_none());
    }
}
