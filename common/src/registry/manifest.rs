//! The little of OCI/Docker manifests the registry client needs to walk an
//! image: index/manifest-list entries with platforms, and a manifest's config
//! and layers (OCI image spec: image-index.md, manifest.md; Docker
//! "Image Manifest V2, Schema 2"). Parsing is strict about digests and sizes
//! and lenient about unknown fields. Full image types live in `oci::image`.

use crate::oci::Digest;
use crate::platform::Platform;
use serde::Deserialize;

pub use crate::oci::media_types::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST as DOCKER_LIST, OCI_INDEX, OCI_MANIFEST,
};
/// The `Accept` header for manifest requests: every type we can walk.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor (OCI image spec, descriptor.md), reduced to what the
/// client uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Descriptor {
    /// `mediaType`.
    pub media_type: String,
    /// `digest`, validated.
    pub digest: Digest,
    /// `size` in bytes.
    pub size: u64,
    /// `platform`, normalised, for index entries.
    pub platform: Option<Platform>,
}

/// A parsed manifest document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An OCI index or Docker manifest list.
    Index {
        /// `manifests`.
        manifests: Vec<Descriptor>,
    },
    /// An OCI or Docker image manifest.
    Image {
        /// `config`.
        config: Descriptor,
        /// `layers`.
        layers: Vec<Descriptor>,
    },
}

/// Is this media type an index/manifest list?
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Is this media type an image manifest?
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDoc {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: Digest,
    size: i64,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl RawDescriptor {
    fn into_descriptor(self) -> Result<Descriptor, String> {
        let size =
            u64::try_from(self.size).map_err(|_| format!("negative size for {}", self.digest))?;
        Ok(Descriptor {
            media_type: self.media_type,
            digest: self.digest,
            size,
            platform: self
                .platform
                .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref().unwrap_or(""))),
        })
    }
}

/// The media type of a manifest body: its `mediaType` field, else the HTTP
/// `Content-Type`, else guessed from its shape.
pub fn media_type_of(body: &[u8], content_type: Option<&str>) -> Result<String, String> {
    let doc: RawDoc = serde_json::from_slice(body).map_err(|e| format!("not a manifest: {e}"))?;
    Ok(doc_media_type(&doc, content_type))
}

fn doc_media_type(doc: &RawDoc, content_type: Option<&str>) -> String {
    if let Some(mt) = doc.media_type.as_deref().filter(|m| !m.is_empty()) {
        return mt.to_string();
    }
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| is_index(c) || is_manifest(c));
    if let Some(ct) = ct {
        return ct.to_string();
    }
    if doc.manifests.is_some() {
        OCI_INDEX.to_string()
    } else {
        OCI_MANIFEST.to_string()
    }
}

/// Parse a manifest or index body. Schema 1 and unknown media types are refused.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<(String, Parsed), String> {
    let doc: RawDoc = serde_json::from_slice(body).map_err(|e| format!("not a manifest: {e}"))?;
    if doc.schema_version != Some(2) {
        return Err(format!(
            "schemaVersion {:?} is not supported (want 2; Docker schema 1 is obsolete)",
            doc.schema_version
        ));
    }
    let media_type = doc_media_type(&doc, content_type);
    if is_index(&media_type) {
        let manifests = doc
            .manifests
            .ok_or("index without a manifests array")?
            .into_iter()
            .map(RawDescriptor::into_descriptor)
            .collect::<Result<_, _>>()?;
        Ok((media_type, Parsed::Index { manifests }))
    } else if is_manifest(&media_type) {
        let config = doc
            .config
            .ok_or("manifest without config")?
            .into_descriptor()?;
        let layers = doc
            .layers
            .unwrap_or_default()
            .into_iter()
            .map(RawDescriptor::into_descriptor)
            .collect::<Result<_, _>>()?;
        Ok((media_type, Parsed::Image { config, layers }))
    } else {
        Err(format!("unsupported manifest media type {media_type:?}"))
    }
}

/// os/architecture/variant of an image config (OCI image spec, config.md).
pub fn config_platform(config: &[u8]) -> Option<Platform> {
    #[derive(Deserialize)]
    struct Raw {
        os: String,
        architecture: String,
        #[serde(default)]
        variant: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(config).ok()?;
    Some(Platform::new(
        &raw.os,
        &raw.architecture,
        raw.variant.as_deref().unwrap_or(""),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn index_and_manifest() {
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let (mt, p) = parse(idx.as_bytes(), None).unwrap();
        assert_eq!(mt, DOCKER_LIST);
        let Parsed::Index { manifests } = p else {
            panic!()
        };
        assert_eq!(manifests[0].platform, Some(Platform::linux_arm64()));

        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":3}},"layers":[{{"digest":"{D2}","size":4}}]}}"#
        );
        let (mt, p) = parse(
            m.as_bytes(),
            Some(&format!("{DOCKER_MANIFEST}; charset=utf-8")),
        )
        .unwrap();
        assert_eq!(
            mt, DOCKER_MANIFEST,
            "content type used when the body has no mediaType"
        );
        let Parsed::Image { config, layers } = p else {
            panic!()
        };
        assert_eq!((config.size, layers[0].size), (3, 4));
        assert_eq!(media_type_of(m.as_bytes(), None).unwrap(), OCI_MANIFEST);
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                r#"{"schemaVersion":1,"fsLayers":[]}"#.to_string(),
                "schemaVersion",
            ),
            ("42".to_string(), "not a manifest"),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"x/y","config":{{"digest":"{D1}","size":1}}}}"#
                ),
                "unsupported",
            ),
            (
                format!(r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":-1}}}}"#),
                "negative",
            ),
            (
                r#"{"schemaVersion":2,"config":{"digest":"sha256:../../x","size":1}}"#.to_string(),
                "digest",
            ),
            (
                r#"{"schemaVersion":2,"layers":[]}"#.to_string(),
                "without config",
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
                "without a manifests",
            ),
        ];
        for (body, want) in cases {
            let e = parse(body.as_bytes(), None).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn config_platform_reads_os_arch() {
        let p = config_platform(br#"{"os":"linux","architecture":"aarch64","rootfs":{}}"#).unwrap();
        assert_eq!(p, Platform::linux_arm64());
        assert!(config_platform(b"{}").is_none());
    }
}
