//! `imgfarm images`: the refs of the local image store with their digest
//! and platforms (kept apart from image.rs, whose other commands belong to
//! the image work).

use super::image::ImagesArgs;
use super::GlobalArgs;
use imgfarm_common::image_name::familiar;
use imgfarm_common::oci::image::{Document, MAX_DOCUMENT_SIZE};
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::platform::Platform;
use std::process::ExitCode;

fn platforms(store: &ContentStore, d: &RefDescriptor) -> Vec<String> {
    let Ok(bytes) = store.read_bytes(&d.digest, MAX_DOCUMENT_SIZE) else {
        return Vec::new();
    };
    match Document::parse(&bytes, Some(&d.media_type)) {
        Ok(Document::Index(i)) => i
            .manifests()
            .iter()
            .filter_map(|m| m.platform().as_ref())
            .map(|p| imgfarm_common::oci::image::from_oci_platform(p).to_string())
            .collect(),
        Ok(Document::Manifest(_)) => imgfarm_common::oci::image::read_manifest(store, &d.digest)
            .map(|(c, _)| {
                vec![
                    Platform::new(&c.os, &c.architecture, c.variant.as_deref().unwrap_or(""))
                        .to_string(),
                ]
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Run `imgfarm images`.
pub fn run(g: &GlobalArgs, a: ImagesArgs) -> anyhow::Result<ExitCode> {
    let state = g.state_dir();
    if !state.exists() {
        if a.format == "json" {
            println!("[]");
        } else if !a.quiet {
            println!("NAME\tDIGEST\tPLATFORMS");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = ContentStore::open(&state)?;
    let mut refs = store.list_refs()?;
    refs.sort_by(|x, y| x.0.cmp(&y.0));
    if let Some(f) = &a.filter {
        refs.retain(|(n, _)| n.contains(f.as_str()) || familiar(n).contains(f.as_str()));
    }
    if a.format == "json" {
        let rows: Vec<serde_json::Value> = refs
            .iter()
            .map(|(n, d)| {
                serde_json::json!({
                    "name": n,
                    "digest": d.digest.as_str(),
                    "mediaType": d.media_type,
                    "platforms": platforms(&store, d),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if a.quiet {
        for (_, d) in &refs {
            println!("{}", d.digest);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!("NAME\tDIGEST\tPLATFORMS");
    for (n, d) in &refs {
        println!(
            "{}\t{}\t{}",
            familiar(n),
            d.digest.short(),
            platforms(&store, d).join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}
