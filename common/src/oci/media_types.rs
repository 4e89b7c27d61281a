//! Media types of the OCI image spec and of Docker's image manifest v2
//! schema 2, and their classification into one internal view.
//!
//! imgfarm *writes* OCI media types (as BuildKit does by default for
//! multi-platform images) and *reads* both families: Docker Hub still serves
//! `application/vnd.docker.distribution.manifest.list.v2+json` and
//! `application/vnd.docker.distribution.manifest.v2+json`.

/// OCI image index (image-spec `image-index.md`).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest (image-spec `manifest.md`).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image configuration (image-spec `config.md`).
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd-compressed OCI layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Non-distributable OCI layer (deprecated in image-spec 1.1, still readable).
pub const OCI_LAYER_NONDIST_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// Non-distributable gzip OCI layer.
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// Non-distributable zstd OCI layer.
pub const OCI_LAYER_NONDIST_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// The `{}` config of OCI artifacts (image-spec 1.1 "Guidance for an empty descriptor").
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Docker manifest list (image manifest v2 schema 2, "Manifest List").
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image manifest v2 schema 1 (unsigned). Refused.
pub const DOCKER_MANIFEST_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker image manifest v2 schema 1 (signed). Refused.
pub const DOCKER_MANIFEST_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer (rare, but valid in schema 2).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker zstd layer (containerd/BuildKit extension).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// Docker foreign (non-distributable, e.g. Windows base) layer.
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// zstd (RFC 8878).
    Zstd,
}

/// What a media type denotes, whichever family (OCI or Docker) spelled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An OCI image index or Docker manifest list.
    Index,
    /// An OCI image manifest or Docker schema 2 manifest.
    Manifest,
    /// A Docker schema 1 manifest: obsolete, never accepted.
    Schema1,
    /// An image config (OCI or Docker).
    Config,
    /// A filesystem layer.
    Layer {
        /// How the blob is compressed.
        compression: Compression,
        /// Non-distributable / foreign: may be absent from a store or layout.
        foreign: bool,
    },
    /// Anything else (attestations, signatures, artifacts' own types).
    Other,
}

/// Classify a media type. Parameters after `;` are ignored, as registries
/// sometimes append `; charset=utf-8`.
pub fn classify(media_type: &str) -> MediaKind {
    let mt = media_type.split(';').next().unwrap_or("").trim();
    let layer = |compression, foreign| MediaKind::Layer {
        compression,
        foreign,
    };
    match mt {
        OCI_INDEX | DOCKER_MANIFEST_LIST => MediaKind::Index,
        OCI_MANIFEST | DOCKER_MANIFEST => MediaKind::Manifest,
        DOCKER_MANIFEST_SCHEMA1 | DOCKER_MANIFEST_SCHEMA1_SIGNED => MediaKind::Schema1,
        OCI_CONFIG | DOCKER_CONFIG => MediaKind::Config,
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => layer(Compression::None, false),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => layer(Compression::Gzip, false),
        OCI_LAYER_ZSTD | DOCKER_LAYER_ZSTD => layer(Compression::Zstd, false),
        OCI_LAYER_NONDIST_TAR => layer(Compression::None, true),
        OCI_LAYER_NONDIST_GZIP | DOCKER_LAYER_FOREIGN_GZIP => layer(Compression::Gzip, true),
        OCI_LAYER_NONDIST_ZSTD => layer(Compression::Zstd, true),
        _ => MediaKind::Other,
    }
}

/// Is this a manifest-like document we walk into (index or manifest)?
pub fn is_manifest_or_index(media_type: &str) -> bool {
    matches!(classify(media_type), MediaKind::Index | MediaKind::Manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_both_families() {
        assert_eq!(classify(DOCKER_MANIFEST_LIST), MediaKind::Index);
        assert_eq!(classify(OCI_INDEX), MediaKind::Index);
        assert_eq!(classify(DOCKER_MANIFEST), MediaKind::Manifest);
        assert_eq!(classify(DOCKER_CONFIG), MediaKind::Config);
        assert_eq!(
            classify(DOCKER_LAYER_GZIP),
            MediaKind::Layer {
                compression: Compression::Gzip,
                foreign: false
            }
        );
        assert_eq!(
            classify("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            MediaKind::Manifest
        );
        assert_eq!(classify(DOCKER_MANIFEST_SCHEMA1_SIGNED), MediaKind::Schema1);
        assert_eq!(classify("application/vnd.in-toto+json"), MediaKind::Other);
    }
}
