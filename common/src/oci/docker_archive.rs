//! `docker save` / `docker load` archives (docker-archive), single platform.
//!
//! Export writes the layout Docker 25+ writes, which is at once a classic
//! docker-archive and an OCI layout: `manifest.json`
//! (`[{"Config":..,"RepoTags":[..],"Layers":[..]}]`), `oci-layout`,
//! `index.json`, and `blobs/sha256/` holding the config, an OCI manifest and
//! the *uncompressed* layer tars (named by their diff IDs, so every path is
//! content-addressed). `docker load` (any version that reads
//! `manifest.json`) and `skopeo ... docker-archive:` read it.
//!
//! Import reads `manifest.json` and the config and layer files it names
//! (uncompressed layers, as `docker save` writes them), verifies each layer
//! against the config's `rootfs.diff_ids`, and stores an OCI manifest for it.

use crate::oci::image::config::ImageConfig;
use crate::oci::image::document::{
    descriptor_digest, descriptor_for, manifest_to_json, new_manifest, to_oci_digest,
};
use crate::oci::image::json;
use crate::oci::image::{Descriptor, Document, MediaType, MAX_DOCUMENT_SIZE};
use crate::oci::layout::archive::{DeterministicTar, TarOptions};
use crate::oci::layout::tar_read::{for_each_member, normalize_member_path, MemberKind};
use crate::oci::layout::{
    blob_rel_path, io_err, store_err, BlobStore, ImportLimits, LayoutError, LayoutRef,
    OCI_LAYOUT_CONTENT, REF_NAME,
};
use crate::oci::media_types::{
    classify, Compression, MediaKind, OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST,
};
use crate::oci::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, SeekFrom};

/// containerd's image-name annotation, which Docker 25 writes in index.json.
pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

/// One entry of `manifest.json` (Docker's `tarexport.manifestItem`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestItem {
    /// Path of the config file in the archive.
    #[serde(rename = "Config")]
    pub config: String,
    /// `name:tag` references.
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
    /// Paths of the layer tars, bottom first.
    #[serde(rename = "Layers", default, deserialize_with = "null_as_empty")]
    pub layers: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::Deserialize;
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// `busybox` → `busybox:latest`; refuse empty names and whitespace.
pub fn normalize_repo_tag(tag: &str) -> Result<String, LayoutError> {
    let bad = || {
        LayoutError::Invalid(format!(
            "{tag:?} is not a valid image reference (name[:tag])"
        ))
    };
    if tag.is_empty()
        || tag.len() > 512
        || tag.chars().any(|c| c.is_whitespace() || c.is_control())
        || tag.contains('@')
    {
        return Err(bad());
    }
    let last = tag.rsplit('/').next().unwrap_or(tag);
    if last.is_empty() || last.starts_with(':') {
        return Err(bad());
    }
    Ok(if last.contains(':') {
        tag.to_string()
    } else {
        format!("{tag}:latest")
    })
}

/// A reader of the uncompressed layer stream for a compressed blob.
fn decompressor<'a>(
    compression: Compression,
    raw: Box<dyn Read + 'a>,
    digest: &Digest,
) -> Result<Box<dyn Read + 'a>, LayoutError> {
    use crate::oci::layer::{decompress, Compression as Layer};
    let c = match compression {
        Compression::None => Layer::None,
        Compression::Gzip => Layer::Gzip,
        Compression::Zstd => Layer::Zstd,
    };
    decompress::decoder(c, std::io::BufReader::with_capacity(256 * 1024, raw))
        .map_err(io_err(format!("starting the decoder for layer {digest}")))
}

struct LayerPlan {
    blob: Digest,
    compression: Compression,
    diff_id: Digest,
    size: u64,
}

/// Export one single-platform image (a manifest descriptor; select a
/// platform from an index first) with `repo_tags` as a docker-archive.
/// Every layer is decompressed once to check it against the config's
/// diff ID and measure it, then again while written, so nothing is held in
/// memory or spooled to disk.
pub fn export_docker_archive<W: io::Write>(
    store: &dyn BlobStore,
    image: &Descriptor,
    repo_tags: &[String],
    out: W,
    opts: TarOptions,
) -> Result<W, LayoutError> {
    if classify(image.media_type().as_ref()) != MediaKind::Manifest {
        return Err(LayoutError::Invalid(format!(
            "a docker-archive holds one platform's image, but {} is a {}; select a platform from the index first",
            image.digest(),
            image.media_type()
        )));
    }
    let tags = repo_tags
        .iter()
        .map(|t| normalize_repo_tag(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mdigest = descriptor_digest(image)?;
    let mbytes = store
        .read_blob(&mdigest, MAX_DOCUMENT_SIZE)
        .map_err(store_err(format!("reading manifest {mdigest}")))?;
    let Document::Manifest(manifest) = Document::parse(&mbytes, Some(image.media_type().as_ref()))?
    else {
        return Err(LayoutError::Invalid(format!("{mdigest} is not a manifest")));
    };
    let cdigest = descriptor_digest(manifest.config())?;
    let cbytes = store
        .read_blob(&cdigest, MAX_DOCUMENT_SIZE)
        .map_err(store_err(format!("reading config {cdigest}")))?;
    let config = ImageConfig::from_json(&cbytes)?;
    if config.rootfs.diff_ids.len() != manifest.layers().len() {
        return Err(LayoutError::Invalid(format!(
            "manifest {mdigest} has {} layers but its config lists {} diff_ids",
            manifest.layers().len(),
            config.rootfs.diff_ids.len()
        )));
    }

    let mut plans = Vec::new();
    for (layer, diff_id) in manifest.layers().iter().zip(&config.rootfs.diff_ids) {
        let blob = descriptor_digest(layer)?;
        let MediaKind::Layer { compression, .. } = classify(layer.media_type().as_ref()) else {
            return Err(LayoutError::Invalid(format!(
                "{blob} has media type {}, not a layer",
                layer.media_type()
            )));
        };
        let raw = store
            .open_blob(&blob)
            .map_err(store_err(format!("opening layer {blob}")))?;
        let mut r = decompressor(compression, raw, &blob)?;
        let mut hasher = Sha256::new();
        let size = io::copy(&mut r, &mut HashWriter(&mut hasher))
            .map_err(io_err(format!("decompressing layer {blob}")))?;
        let got = Digest::from_sha256(hasher);
        if &got != diff_id {
            return Err(LayoutError::Invalid(format!(
                "layer {blob} decompresses to {got}, but the config's diff_id is {diff_id}; the image is inconsistent"
            )));
        }
        plans.push(LayerPlan {
            blob,
            compression,
            diff_id: got,
            size,
        });
    }

    // The OCI manifest of the archive: same config, uncompressed layers.
    let mut config_desc = descriptor_for(OCI_CONFIG, &cbytes);
    config_desc.set_media_type(MediaType::from(OCI_CONFIG));
    let layer_descs = plans
        .iter()
        .map(|p| {
            Descriptor::new(
                MediaType::from(OCI_LAYER_TAR),
                p.size,
                to_oci_digest(&p.diff_id),
            )
        })
        .collect();
    let oci_manifest = manifest_to_json(&new_manifest(config_desc, layer_descs, &BTreeMap::new()))?;
    let oci_manifest_desc = descriptor_for(OCI_MANIFEST, &oci_manifest);

    let refs: Vec<Descriptor> = if tags.is_empty() {
        vec![oci_manifest_desc.clone()]
    } else {
        tags.iter()
            .map(|t| {
                let mut d = oci_manifest_desc.clone();
                let tag = t.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("latest");
                let mut ann = HashMap::new();
                ann.insert(CONTAINERD_IMAGE_NAME.to_string(), t.clone());
                ann.insert(REF_NAME.to_string(), tag.to_string());
                d.set_annotations(Some(ann));
                d
            })
            .collect()
    };
    let index = json::to_vec(&crate::oci::image::document::new_index(
        refs,
        &BTreeMap::new(),
    ))?;
    let items = vec![ManifestItem {
        config: blob_rel_path(&cdigest),
        repo_tags: tags,
        layers: plans.iter().map(|p| blob_rel_path(&p.diff_id)).collect(),
    }];
    let mut manifest_json = json::to_vec(&items)?;
    manifest_json.push(b'\n');

    let mut tar = DeterministicTar::new(out, opts.mtime);
    tar.bytes("oci-layout", OCI_LAYOUT_CONTENT)?;
    tar.bytes("index.json", &index)?;
    tar.bytes("manifest.json", &manifest_json)?;
    tar.dir("blobs")?;
    tar.dir("blobs/sha256")?;
    let oci_manifest_digest = Digest::sha256_of(&oci_manifest);
    let mut files: Vec<(Digest, Option<&LayerPlan>)> =
        vec![(cdigest.clone(), None), (oci_manifest_digest.clone(), None)];
    for p in &plans {
        if !files.iter().any(|(d, _)| *d == p.diff_id) {
            files.push((p.diff_id.clone(), Some(p)));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (d, plan) in files {
        let path = blob_rel_path(&d);
        match plan {
            None if d == cdigest => tar.bytes(&path, &cbytes)?,
            None => tar.bytes(&path, &oci_manifest)?,
            Some(p) => {
                let raw = store
                    .open_blob(&p.blob)
                    .map_err(store_err(format!("opening layer {}", p.blob)))?;
                let mut r = decompressor(p.compression, raw, &p.blob)?;
                tar.file(&path, p.size, &mut r)?;
            }
        }
    }
    tar.finish()
}

struct HashWriter<'a>(&'a mut Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Import every image of a docker-archive (`docker save` output, any
/// version) into `store`. Two passes over the seekable archive: the first
/// finds `manifest.json`; the second streams the config and layers it names
/// into the store, each verified (configs by their path digest when named
/// so, layers against the config's diff IDs). Returns one ref per RepoTag
/// (or one untagged ref), each pointing at a new OCI manifest.
pub fn import_docker_archive<R: Read + Seek>(
    store: &dyn BlobStore,
    mut archive: R,
    limits: ImportLimits,
) -> Result<Vec<LayoutRef>, LayoutError> {
    let mut manifest_json: Option<Vec<u8>> = None;
    for_each_member(&mut archive, |m, data| {
        if m.path == "manifest.json" && m.kind == MemberKind::File {
            if m.size > MAX_DOCUMENT_SIZE {
                return Err(LayoutError::TooLarge {
                    what: "manifest.json".into(),
                    limit: MAX_DOCUMENT_SIZE,
                });
            }
            let mut b = Vec::new();
            data.take(MAX_DOCUMENT_SIZE)
                .read_to_end(&mut b)
                .map_err(io_err("reading manifest.json"))?;
            manifest_json = Some(b);
        }
        Ok(())
    })?;
    let manifest_json = manifest_json.ok_or_else(|| {
        LayoutError::Invalid("no manifest.json: not a docker-archive (docker save output)".into())
    })?;
    let items: Vec<ManifestItem> = serde_json::from_slice(&manifest_json)
        .map_err(|e| LayoutError::Invalid(format!("manifest.json: {e}")))?;
    if items.is_empty() {
        return Err(LayoutError::Invalid("manifest.json lists no images".into()));
    }

    // Which member paths we need, and what each must hash to once known.
    let mut configs: HashMap<String, Vec<u8>> = HashMap::new();
    for item in &items {
        configs.insert(normalize_member_path(item.config.as_bytes())?, Vec::new());
        for l in &item.layers {
            normalize_member_path(l.as_bytes())?;
        }
    }
    archive
        .seek(SeekFrom::Start(0))
        .map_err(io_err("rewinding the archive"))?;
    for_each_member(&mut archive, |m, data| {
        if let Some(slot) = configs.get_mut(&m.path) {
            if m.kind != MemberKind::File || m.size > MAX_DOCUMENT_SIZE {
                return Err(LayoutError::Invalid(format!(
                    "config {} is not a regular file under 4 MiB",
                    m.path
                )));
            }
            data.take(MAX_DOCUMENT_SIZE)
                .read_to_end(slot)
                .map_err(io_err(format!("reading {}", m.path)))?;
        }
        Ok(())
    })?;

    // Layers: path -> expected diff ID (from the config at the same index).
    let mut wanted: HashMap<String, Digest> = HashMap::new();
    let mut parsed = Vec::new();
    for item in &items {
        let cpath = normalize_member_path(item.config.as_bytes())?;
        let cbytes = configs
            .get(&cpath)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| LayoutError::MissingBlob {
                digest: cpath.clone(),
                media_type: "image config".into(),
                hint: "named in manifest.json but not in the archive",
            })?;
        let config = ImageConfig::from_json(cbytes)?;
        if config.rootfs.diff_ids.len() != item.layers.len() {
            return Err(LayoutError::Invalid(format!(
                "manifest.json lists {} layers for {cpath} but the config has {} diff_ids",
                item.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        for (l, diff) in item.layers.iter().zip(&config.rootfs.diff_ids) {
            let p = normalize_member_path(l.as_bytes())?;
            if let Some(prev) = wanted.insert(p.clone(), diff.clone()) {
                if &prev != diff {
                    return Err(LayoutError::Invalid(format!(
                        "layer file {p} is claimed by two different diff_ids"
                    )));
                }
            }
        }
        parsed.push((item, cbytes.clone(), config));
    }
    archive
        .seek(SeekFrom::Start(0))
        .map_err(io_err("rewinding the archive"))?;
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    let mut total = 0u64;
    for_each_member(&mut archive, |m, data| {
        let Some(diff) = wanted.get(&m.path) else {
            return Ok(());
        };
        if m.kind != MemberKind::File {
            return Err(LayoutError::UnsafePath {
                path: m.path.clone(),
                reason: "a layer must be a regular file (links are refused)",
            });
        }
        if m.size > limits.max_blob_size {
            return Err(LayoutError::TooLarge {
                what: format!("layer {}", m.path),
                limit: limits.max_blob_size,
            });
        }
        total = total.saturating_add(m.size);
        if total > limits.max_total_size {
            return Err(LayoutError::TooLarge {
                what: "the archive's layers together".into(),
                limit: limits.max_total_size,
            });
        }
        if !store.contains_blob(diff) {
            store.put_blob(diff, m.size, data).map_err(store_err(format!(
                "importing layer {} (it must be an uncompressed tar whose sha256 is the config's diff_id {diff})",
                m.path
            )))?;
        }
        sizes.insert(diff.clone(), m.size);
        Ok(())
    })?;

    let mut refs = Vec::new();
    for (item, cbytes, config) in parsed {
        let mut layers = Vec::new();
        for diff in &config.rootfs.diff_ids {
            let size = match sizes.get(diff) {
                Some(s) => *s,
                None => {
                    return Err(LayoutError::MissingBlob {
                        digest: diff.to_string(),
                        media_type: "layer".into(),
                        hint: "named in manifest.json but not in the archive",
                    })
                }
            };
            layers.push(Descriptor::new(
                MediaType::from(OCI_LAYER_TAR),
                size,
                to_oci_digest(diff),
            ));
        }
        let cdigest = Digest::sha256_of(&cbytes);
        store
            .put_blob(&cdigest, cbytes.len() as u64, &mut &cbytes[..])
            .map_err(store_err("storing config"))?;
        let m = manifest_to_json(&new_manifest(
            descriptor_for(OCI_CONFIG, &cbytes),
            layers,
            &BTreeMap::new(),
        ))?;
        let mdigest = Digest::sha256_of(&m);
        store
            .put_blob(&mdigest, m.len() as u64, &mut &m[..])
            .map_err(store_err("storing manifest"))?;
        let desc = descriptor_for(OCI_MANIFEST, &m);
        if item.repo_tags.is_empty() {
            refs.push(LayoutRef {
                name: None,
                descriptor: desc,
            });
        } else {
            for t in &item.repo_tags {
                refs.push(LayoutRef {
                    name: Some(t.clone()),
                    descriptor: desc.clone(),
                });
            }
        }
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layout::mem::MemBlobs;
    use crate::oci::layout::tests_support::sample_image;

    #[test]
    fn export_then_import_round_trip() {
        let src = MemBlobs::default();
        let refs = sample_image(&src);
        let amd64 = &refs[1].descriptor;
        let a = export_docker_archive(
            &src,
            amd64,
            &["example/app".into()],
            Vec::new(),
            TarOptions::default(),
        )
        .unwrap();
        let b = export_docker_archive(
            &src,
            amd64,
            &["example/app".into()],
            Vec::new(),
            TarOptions::default(),
        )
        .unwrap();
        assert_eq!(a, b, "deterministic");
        let dst = MemBlobs::default();
        let got =
            import_docker_archive(&dst, io::Cursor::new(&a), ImportLimits::default()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name.as_deref(), Some("example/app:latest"));
        // The imported manifest's config is the original config, byte for byte.
        let m = dst
            .read_blob(
                &descriptor_digest(&got[0].descriptor).unwrap(),
                MAX_DOCUMENT_SIZE,
            )
            .unwrap();
        let Document::Manifest(m) = Document::parse(&m, None).unwrap() else {
            panic!()
        };
        assert!(src.contains_blob(&descriptor_digest(m.config()).unwrap()));
        // And it is also a valid OCI layout.
        let oci =
            crate::oci::layout::import_tar(&MemBlobs::default(), &a[..], ImportLimits::default())
                .unwrap();
        assert_eq!(oci[0].name.as_deref(), Some("latest"));
    }

    #[test]
    fn export_refusals() {
        let src = MemBlobs::default();
        let refs = sample_image(&src);
        let e = export_docker_archive(
            &src,
            &refs[0].descriptor,
            &[],
            Vec::new(),
            TarOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("select a platform"), "{e}");
        let e = export_docker_archive(
            &src,
            &refs[1].descriptor,
            &["bad tag".into()],
            Vec::new(),
            TarOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a valid image reference"), "{e}");
    }

    #[test]
    fn import_refuses_a_layer_that_is_not_its_diff_id() {
        let src = MemBlobs::default();
        let refs = sample_image(&src);
        let a = export_docker_archive(
            &src,
            &refs[1].descriptor,
            &[],
            Vec::new(),
            TarOptions::default(),
        )
        .unwrap();
        // Flip one byte inside the first layer tar's data (the "hello" text).
        let pos = a.windows(6).position(|w| w == b"hello ").unwrap();
        let mut t = a.clone();
        t[pos] = b'j';
        let dst = MemBlobs::default();
        let e =
            import_docker_archive(&dst, io::Cursor::new(&t), ImportLimits::default()).unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(normalize_repo_tag("busybox").unwrap() == "busybox:latest");
        assert!(normalize_repo_tag("localhost:5000/x").unwrap() == "localhost:5000/x:latest");
        assert!(normalize_repo_tag("a@sha256:00").is_err());
    }
}
