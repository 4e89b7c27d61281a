//! `imgfarm save REF... [-o FILE] [--format docker|oci]`: a docker-archive
//! (what `docker save` writes, the default) or an OCI image layout tar
//! (`--format oci`, every platform of an index). A docker-archive holds one
//! platform: an index is resolved to `--platform` (default: the host's), as
//! `docker save` does. The file appears only when complete (temp + rename);
//! stdout is refused when it is a terminal.

use super::image::{existing_store, lookup};
use super::GlobalArgs;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use imgfarm_common::image_name::familiar;
use imgfarm_common::oci::docker_archive::export_docker_archive;
use imgfarm_common::oci::image::PlatformRequest;
use imgfarm_common::oci::layout::{export_tar, from_ref_descriptor, resolve_manifest, LayoutRef};
use imgfarm_common::oci::store::RefDescriptor;
use imgfarm_common::platform::Platform;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// `imgfarm save`
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Image references to save
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to this file instead of stdout
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Archive format: docker (docker save) or oci (OCI image layout tar)
    #[arg(long, default_value = "docker", value_parser = ["docker", "oci"])]
    pub format: String,
    /// Platform to save from a multi-platform image (docker format) [default: the host's]
    #[arg(long)]
    pub platform: Option<String>,
}

/// Run `imgfarm save`.
pub fn run(g: &GlobalArgs, a: SaveArgs) -> anyhow::Result<ExitCode> {
    let store = existing_store(g)?;
    let mut found: Vec<(String, RefDescriptor)> = Vec::new();
    for i in &a.images {
        found.push(lookup(store.as_ref(), i)?);
    }
    let Some(store) = store else {
        bail!("the local store is empty");
    };
    let platform: Platform = match &a.platform {
        Some(p) => p.parse().map_err(|e| anyhow!("--platform {p:?}: {e}"))?,
        None => Platform::host(),
    };
    let write = |out: &mut dyn Write| -> anyhow::Result<()> {
        if a.format == "oci" {
            let refs: Vec<LayoutRef> = found
                .iter()
                .map(|(n, d)| LayoutRef::new(n, from_ref_descriptor(d)))
                .collect();
            export_tar(&store, &refs, out, Default::default())?;
            return Ok(());
        }
        let root = &found[0].1;
        if found.iter().any(|(_, d)| d.digest != root.digest) {
            bail!("a docker-archive written by imgfarm holds one image; these references name different images (save them one by one, or use --format oci)");
        }
        let manifest = resolve_manifest(
            &store,
            &from_ref_descriptor(root),
            &PlatformRequest::from(platform.clone()),
        )
        .with_context(|| format!("choosing the {platform} image of {}", familiar(&found[0].0)))?;
        let tags: Vec<String> = found.iter().map(|(n, _)| familiar(n)).collect();
        export_docker_archive(&store, &manifest, &tags, out, Default::default())?;
        Ok(())
    };
    match &a.output {
        Some(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)
                .with_context(|| format!("creating a temp file in {}", dir.display()))?;
            {
                let mut w = std::io::BufWriter::new(tmp.as_file_mut());
                write(&mut w)?;
                w.flush()?;
            }
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect stdout");
            }
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            write(&mut w)?;
            w.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
