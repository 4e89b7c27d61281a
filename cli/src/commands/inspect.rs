//! `imgfarm inspect REF`: the image as JSON, in the spirit of
//! `docker image inspect` / `img inspect`: its names, root digest and media
//! type, the index (when multi-platform), and for each platform the manifest
//! and the config, exactly as stored.

use super::image::{existing_store, lookup};
use super::GlobalArgs;
use anyhow::{anyhow, Context};
use clap::Args;
use imgfarm_common::image_name::familiar;
use imgfarm_common::oci::image::{from_oci_platform, Document, MAX_DOCUMENT_SIZE};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use serde_json::{json, Value};
use std::process::ExitCode;

/// `imgfarm inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image reference
    pub image: String,
}

fn read_json(store: &ContentStore, d: &Digest) -> anyhow::Result<(Vec<u8>, Value)> {
    let bytes = store
        .read_bytes(d, MAX_DOCUMENT_SIZE)
        .with_context(|| format!("reading {d} from the store"))?;
    let v = serde_json::from_slice(&bytes).with_context(|| format!("{d} is not JSON"))?;
    Ok((bytes, v))
}

fn image_entry(
    store: &ContentStore,
    d: &Digest,
    platform: Option<String>,
) -> anyhow::Result<Value> {
    let (bytes, manifest) = read_json(store, d)?;
    let config = match Document::parse(&bytes, None)? {
        Document::Manifest(m) => {
            let cd: Digest = m
                .config()
                .digest()
                .to_string()
                .parse()
                .map_err(|e| anyhow!("manifest {d}: config digest: {e}"))?;
            read_json(store, &cd)?.1
        }
        Document::Index(_) => return Err(anyhow!("{d}: an index inside an index is not shown")),
    };
    let platform = platform.or_else(|| {
        let os = config.get("os")?.as_str()?;
        let arch = config.get("architecture")?.as_str()?;
        Some(match config.get("variant").and_then(Value::as_str) {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        })
    });
    Ok(json!({
        "Platform": platform,
        "Digest": d.as_str(),
        "Manifest": manifest,
        "Config": config,
    }))
}

/// Run `imgfarm inspect`.
pub fn run(g: &GlobalArgs, a: InspectArgs) -> anyhow::Result<ExitCode> {
    let store = existing_store(g)?;
    let (name, root) = lookup(store.as_ref(), &a.image)?;
    let Some(store) = store else {
        return Err(anyhow!("no such image: {}", a.image));
    };
    let tags: Vec<String> = store
        .list_refs()?
        .into_iter()
        .filter(|(_, d)| d.digest == root.digest)
        .map(|(n, _)| familiar(&n))
        .collect();
    let (bytes, doc) = read_json(&store, &root.digest)?;
    let mut out = json!({
        "Name": familiar(&name),
        "RepoTags": tags,
        "Digest": root.digest.as_str(),
        "MediaType": root.media_type,
        "Size": root.size,
    });
    let images = match Document::parse(&bytes, Some(&root.media_type))? {
        Document::Index(i) => {
            out["Index"] = doc;
            i.manifests()
                .iter()
                .map(|m| {
                    let d: Digest = m
                        .digest()
                        .to_string()
                        .parse()
                        .map_err(|e| anyhow!("index entry digest: {e}"))?;
                    let p = m
                        .platform()
                        .as_ref()
                        .map(|p| from_oci_platform(p).to_string());
                    image_entry(&store, &d, p)
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        }
        Document::Manifest(_) => vec![image_entry(&store, &root.digest, None)?],
    };
    out["Images"] = Value::Array(images);
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
