//! `--output`/`--push`/`-t`, `--iidfile`, `--metadata-file`: where the built
//! image goes, as docker buildx means them.
//!
//! - `type=image` (default): the local image store, one ref per `-t` name.
//! - `type=oci,dest=FILE` (a tar; `tar=false` writes a layout directory).
//! - `type=docker,dest=FILE`: a `docker load` archive (one platform).
//! - `type=local,dest=DIR`: the final filesystem, `DIR/<os>_<arch>` each
//!   when several platforms are built.
//! - `type=tar,dest=FILE`: the same as one tar (a `<os>_<arch>/` top
//!   directory per platform when several).
//! - `type=registry` / `--push`: needs the registry client.

use super::BuildArgs;
use crate::progress::Progress;
use anyhow::{anyhow, bail, Context as _};
use imgfarm_common::image_name::normalize_reference;
use imgfarm_common::oci::image::read_manifest;
use imgfarm_common::oci::image::{index_to_json, new_index, to_oci_platform, Descriptor};
use imgfarm_common::oci::layer::{open_layer, write_flat_tar};
use imgfarm_common::oci::layout::{export_dir, export_tar, from_ref_descriptor, LayoutRef};
use imgfarm_common::oci::media_types;
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::platform::Platform;
use imgfarm_worker::solve::view::ChainView;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// One parsed `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// `type=`.
    pub kind: String,
    /// The other `key=value` attributes.
    pub attrs: BTreeMap<String, String>,
}

impl OutputSpec {
    fn dest(&self) -> anyhow::Result<PathBuf> {
        self.attrs
            .get("dest")
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("--output type={} needs dest=PATH", self.kind))
    }
}

/// Parse the output flags (`-o` CSV, or a bare path = `type=local,dest=PATH`,
/// `-` = tar to stdout which is refused here).
pub fn parse_outputs(a: &BuildArgs) -> anyhow::Result<Vec<OutputSpec>> {
    let mut out = Vec::new();
    for o in &a.outputs {
        let mut attrs = BTreeMap::new();
        if !o.contains('=') {
            attrs.insert("dest".to_string(), o.clone());
            out.push(OutputSpec {
                kind: "local".into(),
                attrs,
            });
            continue;
        }
        let mut kind = None;
        for part in o.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid --output {o:?}: {part:?} is not key=value"))?;
            if k == "type" {
                kind = Some(v.to_string());
            } else {
                attrs.insert(k.to_string(), v.to_string());
            }
        }
        let kind = kind.ok_or_else(|| anyhow!("invalid --output {o:?}: no type="))?;
        match kind.as_str() {
            "image" | "oci" | "docker" | "local" | "tar" | "registry" => {}
            other => bail!(
                "unsupported --output type {other:?}: use image, oci, docker, local, tar or registry"
            ),
        }
        out.push(OutputSpec { kind, attrs });
    }
    if a.push {
        out.push(OutputSpec {
            kind: "registry".into(),
            attrs: BTreeMap::new(),
        });
    }
    if out.is_empty() {
        out.push(OutputSpec {
            kind: "image".into(),
            attrs: BTreeMap::new(),
        });
    }
    for o in &out {
        if o.kind == "registry" && a.tags.is_empty() && !o.attrs.contains_key("name") {
            bail!("--push needs an image name: add -t REGISTRY/NAME:TAG");
        }
    }
    Ok(out)
}

/// The root of the result: the one manifest, or an index over all.
fn root_descriptor(
    store: &ContentStore,
    manifests: &[(Platform, RefDescriptor)],
) -> anyhow::Result<RefDescriptor> {
    if let [(_, only)] = manifests {
        return Ok(only.clone());
    }
    let descs: Vec<Descriptor> = manifests
        .iter()
        .map(|(p, m)| {
            let mut d = from_ref_descriptor(m);
            d.set_platform(Some(to_oci_platform(p)));
            d
        })
        .collect();
    let index = new_index(descs, &BTreeMap::new());
    let bytes = index_to_json(&index).map_err(|e| anyhow!("index json: {e}"))?;
    let digest = store.put_bytes(&bytes)?;
    Ok(RefDescriptor::new(
        media_types::OCI_INDEX,
        digest,
        bytes.len() as u64,
    ))
}

/// The normalised image names an output gives (`-t` plus its `name=`).
pub(super) fn names(a: &BuildArgs, o: &OutputSpec) -> anyhow::Result<Vec<String>> {
    let mut raw: Vec<String> = a.tags.clone();
    if let Some(n) = o.attrs.get("name") {
        raw.extend(n.split(',').map(str::to_string));
    }
    raw.iter()
        .map(|t| normalize_reference(t).map_err(|e| anyhow!("invalid tag {t:?}: {e}")))
        .collect()
}

/// Unpack the final filesystem of `manifest` into `dir`. The files belong to the user who
/// asked for them (as BuildKit's client writes them); only real root keeps the image's
/// owners (inside the rootless build namespace they would become subordinate ids the user
/// cannot remove).
fn unpack(store: &ContentStore, manifest: &RefDescriptor, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (_, (_, layers)) = read_manifest(store, &manifest.digest)?;
    for l in &layers {
        let opts = imgfarm_common::oci::layer::ApplyOptions {
            ownership: imgfarm_worker::userns::outputs_keep_owners(),
            devices: imgfarm_common::oci::layer::DevicePolicy::Skip,
            ..Default::default()
        };
        imgfarm_common::oci::layer::apply(open_layer(store, l)?, dir, &opts)
            .with_context(|| format!("unpacking layer {} into {}", l.digest, dir.display()))?;
    }
    Ok(())
}

/// What a farm build adds to an export.
#[derive(Debug, Default)]
pub struct ExportExtras {
    /// The image root to name and write instead of one made here (the
    /// farm's merged index, so local names and pushed refs agree).
    pub root: Option<RefDescriptor>,
    /// More `--metadata-file` keys (e.g. `imgfarm.farm.build_id`).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Write every output, then `--iidfile` and `--metadata-file`.
pub fn export(
    a: &BuildArgs,
    store: &ContentStore,
    outputs: &[OutputSpec],
    manifests: &[(Platform, RefDescriptor)],
    progress: &mut Progress,
) -> anyhow::Result<()> {
    export_with(
        a,
        store,
        outputs,
        manifests,
        ExportExtras::default(),
        progress,
    )
}

/// [`export`] with a given root and extra metadata.
pub fn export_with(
    a: &BuildArgs,
    store: &ContentStore,
    outputs: &[OutputSpec],
    manifests: &[(Platform, RefDescriptor)],
    extras: ExportExtras,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let root = match extras.root {
        Some(r) => r,
        None => root_descriptor(store, manifests)?,
    };
    let multi = manifests.len() > 1;
    let mut image_names = Vec::new();
    for o in outputs {
        match o.kind.as_str() {
            "image" => {
                let ns = names(a, o)?;
                for n in &ns {
                    store
                        .set_ref(n, &root)
                        .with_context(|| format!("naming the image {n}"))?;
                }
                image_names.extend(ns.iter().cloned());
                progress.note(&format!(
                    "exporting to image {} {}",
                    root.digest,
                    if ns.is_empty() {
                        String::new()
                    } else {
                        format!("(naming to {})", ns.join(", "))
                    }
                ));
            }
            "oci" => {
                let dest = o.dest()?;
                let ns = names(a, o)?;
                let desc = from_ref_descriptor(&root);
                let refs: Vec<LayoutRef> = if ns.is_empty() {
                    vec![LayoutRef {
                        name: None,
                        descriptor: desc,
                    }]
                } else {
                    ns.iter().map(|n| LayoutRef::new(n, desc.clone())).collect()
                };
                if o.attrs.get("tar").map(String::as_str) == Some("false") {
                    export_dir(store, &refs, &dest)
                        .with_context(|| format!("writing OCI layout {}", dest.display()))?;
                } else {
                    let f = File::create(&dest)
                        .with_context(|| format!("creating {}", dest.display()))?;
                    export_tar(store, &refs, BufWriter::new(f), Default::default())
                        .with_context(|| format!("writing {}", dest.display()))?;
                }
                progress.note(&format!("exporting to oci image format {}", dest.display()));
            }
            "docker" => {
                let dest = o.dest()?;
                let host = Platform::host();
                let (_, m) = manifests
                    .iter()
                    .find(|(p, _)| host.matches(p))
                    .or_else(|| manifests.first())
                    .ok_or_else(|| anyhow!("nothing to export"))?;
                if multi {
                    eprintln!(
                        "WARNING: type=docker holds one platform; exporting {}",
                        manifests
                            .iter()
                            .find(|(_, x)| x == m)
                            .map(|(p, _)| p.to_string())
                            .unwrap_or_default()
                    );
                }
                let f =
                    File::create(&dest).with_context(|| format!("creating {}", dest.display()))?;
                imgfarm_common::oci::docker_archive::export_docker_archive(
                    store,
                    &from_ref_descriptor(m),
                    &names(a, o)?,
                    BufWriter::new(f),
                    Default::default(),
                )
                .with_context(|| format!("writing {}", dest.display()))?;
                progress.note(&format!(
                    "exporting to docker image format {}",
                    dest.display()
                ));
            }
            "local" => {
                let dest = o.dest()?;
                for (p, m) in manifests {
                    let dir = if multi {
                        dest.join(p.dir_name())
                    } else {
                        dest.clone()
                    };
                    unpack(store, m, &dir)?;
                }
                progress.note(&format!("copying files to {}", dest.display()));
            }
            "tar" => {
                let dest = o.dest()?;
                let f =
                    File::create(&dest).with_context(|| format!("creating {}", dest.display()))?;
                let mut out = BufWriter::new(f);
                if multi {
                    bail!(
                        "type=tar with several platforms is not supported yet; \
                         build one platform or use type=local"
                    );
                }
                for (_, m) in manifests {
                    let (_, (_, layers)) = read_manifest(store, &m.digest)?;
                    // The solver's view of the chain (from its persisted layer
                    // indexes) says which layer shows each path.
                    let view = ChainView::load(store, &layers)
                        .with_context(|| format!("writing {}", dest.display()))?;
                    write_flat_tar(
                        store,
                        &layers,
                        |p| view.entries.get(p).map(|e| e.layer),
                        &mut out,
                    )
                    .with_context(|| format!("writing {}", dest.display()))?;
                }
                progress.note(&format!("sending tarball {}", dest.display()));
            }
            "registry" => {
                let ns = names(a, o)?;
                super::registry::push(store, &root, &ns)?;
                progress.note(&format!("pushing {} to {}", root.digest, ns.join(", ")));
            }
            other => bail!("unsupported output type {other}"),
        }
    }
    if let Some(p) = &a.iidfile {
        std::fs::write(p, root.digest.as_str())
            .with_context(|| format!("writing --iidfile {}", p.display()))?;
    }
    if let Some(p) = &a.metadata_file {
        let mut meta = serde_json::json!({
            "containerimage.digest": root.digest.as_str(),
            "containerimage.descriptor": {
                "mediaType": root.media_type,
                "digest": root.digest.as_str(),
                "size": root.size,
            },
        });
        if !multi {
            let (_, (config, _)) = read_manifest(store, &root.digest)?;
            meta["containerimage.config.digest"] = serde_json::json!(config.as_str());
        }
        if !image_names.is_empty() {
            meta["image.name"] = serde_json::json!(image_names.join(","));
        }
        for (k, v) in extras.metadata {
            meta[k] = v;
        }
        std::fs::write(p, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("writing --metadata-file {}", p.display()))?;
    }
    Ok(())
}
