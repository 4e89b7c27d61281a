//! Manifests and indexes: read either family into one view ([`Document`]),
//! build OCI ones and serialise them exactly as BuildKit's exporter does
//! (`json.MarshalIndent(v, "", "   ")` of a struct whose first field is
//! `mediaType`, then `schemaVersion`, then the spec fields in order).

use super::json::{self, JsonError};
use super::{check_size, ImageError};
use crate::oci::media_types::{self, classify, MediaKind};
use crate::oci::Digest;
use crate::platform::Platform;
use oci_spec::image::{
    Arch, Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, Os, PlatformBuilder,
};
use std::collections::{BTreeMap, HashMap};

/// An index or a manifest, whichever family (OCI or Docker schema 2) wrote
/// it. The original media types stay in the descriptors (they are part of
/// the digested bytes); use [`classify`] to reason about them.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// OCI image index or Docker manifest list.
    Index(Box<ImageIndex>),
    /// OCI image manifest or Docker schema 2 manifest.
    Manifest(Box<ImageManifest>),
}

/// Only the fields needed to tell documents apart.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u64>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
    fs_layers: Option<serde_json::Value>,
}

impl Document {
    /// Parse a manifest or index. `media_type` is what the descriptor or the
    /// registry's `Content-Type` said, if anything. Refuses: documents over
    /// 4 MiB, schema 1, `schemaVersion` other than 2, a `mediaType` field
    /// that contradicts `media_type`, and any digest that is not a valid
    /// sha256/sha512 digest (so digests are always safe as file names).
    pub fn parse(bytes: &[u8], media_type: Option<&str>) -> Result<Self, ImageError> {
        check_size("manifest", bytes.len() as u64)?;
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| ImageError::Parse {
            what: "manifest",
            reason: e.to_string(),
        })?;
        let hinted = media_type.map(classify);
        let declared = probe.media_type.as_deref().map(classify);
        if hinted == Some(MediaKind::Schema1)
            || declared == Some(MediaKind::Schema1)
            || probe.schema_version == Some(1)
            || probe.fs_layers.is_some()
        {
            return Err(ImageError::Schema1);
        }
        if probe.schema_version != Some(2) {
            return Err(ImageError::Invalid(format!(
                "schemaVersion is {:?}, want 2",
                probe.schema_version
            )));
        }
        let structural = if probe.manifests.is_some() {
            Some(MediaKind::Index)
        } else if probe.layers.is_some() || probe.config.is_some() {
            Some(MediaKind::Manifest)
        } else {
            None
        };
        let usable = |k: Option<MediaKind>| {
            k.filter(|k| matches!(k, MediaKind::Index | MediaKind::Manifest))
        };
        let kind = usable(hinted)
            .or(usable(declared))
            .or(structural)
            .ok_or_else(|| {
                ImageError::Invalid(format!(
                    "neither an image index nor a manifest (media type {:?}, mediaType field {:?})",
                    media_type, probe.media_type
                ))
            })?;
        if let (Some(h), Some(d)) = (usable(hinted), usable(declared)) {
            if h != d {
                return Err(ImageError::Invalid(format!(
                    "document says mediaType {:?} but was served as {:?}",
                    probe.media_type.unwrap_or_default(),
                    media_type.unwrap_or_default()
                )));
            }
        }
        let doc = match kind {
            MediaKind::Index => Document::Index(Box::new(parse_as("image index", bytes)?)),
            _ => Document::Manifest(Box::new(parse_as("image manifest", bytes)?)),
        };
        let subject = match &doc {
            Document::Index(i) => i.subject().as_ref(),
            Document::Manifest(m) => m.subject().as_ref(),
        };
        for d in doc.children().into_iter().chain(subject) {
            descriptor_digest(d)?;
        }
        Ok(doc)
    }

    /// The content this document points to: an index's manifests; a
    /// manifest's config, then layers (bottom first). A `subject` is a
    /// back-reference (referrers API), not content, and is not included.
    pub fn children(&self) -> Vec<&Descriptor> {
        match self {
            Document::Index(i) => i.manifests().iter().collect(),
            Document::Manifest(m) => std::iter::once(m.config()).chain(m.layers()).collect(),
        }
    }
}

fn parse_as<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Parse {
        what,
        reason: e.to_string(),
    })
}

/// The descriptor's digest as our validated [`Digest`] (sha256 or sha512,
/// lowercase hex): never a path component that could escape a directory.
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest, ImageError> {
    d.digest()
        .as_ref()
        .parse()
        .map_err(|e: crate::oci::digest::DigestError| ImageError::Invalid(e.to_string()))
}

/// Our digest as an `oci_spec` digest.
pub fn to_oci_digest(d: &Digest) -> oci_spec::image::Digest {
    // Invariant, not input: our Digest only holds `sha256:<64 hex>` or
    // `sha512:<128 hex>`, a strict subset of the OCI digest grammar.
    #[allow(clippy::expect_used)]
    d.as_str()
        .parse()
        .expect("a validated Digest is a valid OCI digest")
}

/// A descriptor for `bytes` of `media_type` (size and sha256 computed).
pub fn descriptor_for(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor::new(
        MediaType::from(media_type),
        bytes.len() as u64,
        to_oci_digest(&Digest::sha256_of(bytes)),
    )
}

/// `oci_spec` platform → our normalised platform.
pub fn from_oci_platform(p: &oci_spec::image::Platform) -> Platform {
    Platform::new(
        &p.os().to_string(),
        &p.architecture().to_string(),
        p.variant().as_deref().unwrap_or(""),
    )
}

/// Our platform → the `platform` object of an index entry.
pub fn to_oci_platform(p: &Platform) -> oci_spec::image::Platform {
    let mut b = PlatformBuilder::default()
        .architecture(Arch::from(p.architecture.as_str()))
        .os(Os::from(p.os.as_str()));
    if !p.variant.is_empty() {
        b = b.variant(p.variant.clone());
    }
    b.build().unwrap_or_else(|_| {
        let mut fallback = oci_spec::image::Platform::default();
        fallback.set_architecture(Arch::from(p.architecture.as_str()));
        fallback.set_os(Os::from(p.os.as_str()));
        fallback
    })
}

fn annotations(a: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!a.is_empty()).then(|| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// An OCI image manifest (`mediaType` set, schema 2) for a config and layers.
pub fn new_manifest(
    config: Descriptor,
    layers: Vec<Descriptor>,
    annotations_: &BTreeMap<String, String>,
) -> ImageManifest {
    // Invariant: every required field is set, so the builder cannot fail.
    #[allow(clippy::expect_used)]
    let mut m = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .expect("manifest builder has all required fields");
    m.set_annotations(annotations(annotations_));
    m
}

/// An OCI image index (`mediaType` set, schema 2).
pub fn new_index(
    manifests: Vec<Descriptor>,
    annotations_: &BTreeMap<String, String>,
) -> ImageIndex {
    let mut i = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests.clone())
        .build()
        .unwrap_or_else(|_| {
            let mut i = ImageIndex::default();
            i.set_manifests(manifests);
            i
        });
    i.set_annotations(annotations(annotations_));
    i
}

fn buildkit_bytes<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, JsonError> {
    let mut node = json::to_node(v)?;
    node.move_to_front("mediaType");
    Ok(json::write_node(&node, Some("   ")))
}

/// Manifest bytes as BuildKit writes them.
pub fn manifest_to_json(m: &ImageManifest) -> Result<Vec<u8>, JsonError> {
    buildkit_bytes(m)
}

/// Index bytes as BuildKit writes them.
pub fn index_to_json(i: &ImageIndex) -> Result<Vec<u8>, JsonError> {
    buildkit_bytes(i)
}

/// Is this descriptor something we walk into (index or manifest)?
pub fn is_document(d: &Descriptor) -> bool {
    media_types::is_manifest_or_index(d.media_type().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media_types::*;

    fn layer() -> Descriptor {
        descriptor_for(OCI_LAYER_GZIP, b"layer")
    }

    #[test]
    fn manifest_bytes_match_buildkit_shape() {
        let cfg = descriptor_for(OCI_CONFIG, b"{}");
        let m = new_manifest(cfg.clone(), vec![layer()], &BTreeMap::new());
        let s = String::from_utf8(manifest_to_json(&m).unwrap()).unwrap();
        let want = format!(
            "{{\n   \"mediaType\": \"{OCI_MANIFEST}\",\n   \"schemaVersion\": 2,\n   \"config\": {{\n      \"mediaType\": \"{OCI_CONFIG}\",\n      \"digest\": \"{}\",\n      \"size\": 2\n   }},\n   \"layers\": [\n      {{\n         \"mediaType\": \"{OCI_LAYER_GZIP}\",\n         \"digest\": \"{}\",\n         \"size\": 5\n      }}\n   ]\n}}",
            Digest::sha256_of(b"{}"),
            Digest::sha256_of(b"layer")
        );
        assert_eq!(s, want);
        assert_eq!(
            Document::parse(s.as_bytes(), Some(OCI_MANIFEST)).unwrap(),
            Document::Manifest(Box::new(m))
        );
    }

    #[test]
    fn index_annotations_sorted_and_platform_written() {
        let mut d = descriptor_for(OCI_MANIFEST, b"m");
        d.set_platform(Some(to_oci_platform(&Platform::new("linux", "arm", "v7"))));
        let mut ann = BTreeMap::new();
        ann.insert("z".to_string(), "1".to_string());
        ann.insert("a".to_string(), "2".to_string());
        let s = String::from_utf8(index_to_json(&new_index(vec![d], &ann)).unwrap()).unwrap();
        assert!(s.starts_with(&format!("{{\n   \"mediaType\": \"{OCI_INDEX}\",\n   \"schemaVersion\": 2,\n   \"manifests\"")), "{s}");
        assert!(s.contains("\"platform\": {\n            \"architecture\": \"arm\",\n            \"os\": \"linux\",\n            \"variant\": \"v7\"\n         }"), "{s}");
        assert!(
            s.ends_with("\"annotations\": {\n      \"a\": \"2\",\n      \"z\": \"1\"\n   }\n}"),
            "{s}"
        );
    }

    #[test]
    fn reads_docker_schema2_manifest_and_list() {
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":7,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            Digest::sha256_of(b"x")
        );
        let Document::Index(i) = Document::parse(list.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        let p = from_oci_platform(i.manifests()[0].platform().as_ref().unwrap());
        assert_eq!(p, Platform::linux_arm64());

        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{0}","size":2}},"layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{0}","size":2}}]}}"#,
            Digest::sha256_of(b"{}")
        );
        let doc = Document::parse(m.as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(doc.children().len(), 2);
        assert_eq!(
            classify(doc.children()[1].media_type().as_ref()),
            MediaKind::Layer {
                compression: crate::oci::media_types::Compression::Gzip,
                foreign: false
            }
        );
    }

    #[test]
    fn refuses_schema1_bad_versions_mismatch_and_bad_digests() {
        let s1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(matches!(
            Document::parse(s1, None),
            Err(ImageError::Schema1)
        ));
        assert!(matches!(
            Document::parse(b"{}", Some(DOCKER_MANIFEST_SCHEMA1_SIGNED)),
            Err(ImageError::Schema1)
        ));
        let e = Document::parse(br#"{"schemaVersion":3,"manifests":[]}"#, None).unwrap_err();
        assert!(e.to_string().contains("schemaVersion"), "{e}");
        let e = Document::parse(
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#).as_bytes(),
            Some(OCI_MANIFEST),
        )
        .unwrap_err();
        assert!(e.to_string().contains("served as"), "{e}");
        let bad =
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha999:abc","size":1}]}"#;
        assert!(Document::parse(bad.as_bytes(), None).is_err());
        let huge = vec![b' '; 4 * 1024 * 1024 + 1];
        assert!(matches!(
            Document::parse(&huge, None),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(matches!(
            Document::parse(b"[1,2]", None),
            Err(ImageError::Parse { .. })
        ));
    }
}
