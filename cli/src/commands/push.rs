//! `imgfarm push REF`: push the image named REF in the local store (an
//! index with all its platforms, or one manifest) to the registry REF names.
//! Blobs the registry has are skipped, others mounted or uploaded, then the
//! manifests and finally the root. Prints the pushed digest.

use super::image::{existing_store, lookup, runtime, RegistryFlags};
use super::GlobalArgs;
use anyhow::{anyhow, Context};
use clap::Args;
use imgfarm_common::image_name::familiar;
use imgfarm_common::registry::{PushOptions, Reference};
use std::process::ExitCode;

/// `imgfarm push`
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image reference in the local store
    pub image: String,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// Run `imgfarm push`.
pub fn run(g: &GlobalArgs, a: PushArgs) -> anyhow::Result<ExitCode> {
    let store = existing_store(g)?;
    let (name, root) = lookup(store.as_ref(), &a.image)?;
    let store = store.ok_or_else(|| anyhow!("no such image: {}", a.image))?;
    let target: Reference = name.parse()?;
    let client = a.registry.client();
    let report = runtime()?
        .block_on(client.push(&store, &root.digest, &target, &PushOptions::default()))
        .with_context(|| format!("pushing {}", familiar(&name)))?;
    println!(
        "{}: digest: {} ({} blobs uploaded, {} bytes; {} mounted; {} already there; {} manifests)",
        familiar(&name),
        root.digest,
        report.uploaded,
        report.bytes_uploaded,
        report.mounted,
        report.existing,
        report.manifests
    );
    Ok(ExitCode::SUCCESS)
}
