//! `imgfarm pull REF [--platform P|all]`: fetch an image into the local
//! store and name it. With one platform (the host's by default) the ref
//! points at that platform's manifest, so everything it names is present;
//! with `all` (or a list) it points at the index, as pulled. Prints the
//! registry's digest for the reference, like `docker pull`.

use super::image::{open_store, runtime, store_name, RegistryFlags};
use super::GlobalArgs;
use anyhow::{anyhow, Context};
use clap::Args;
use imgfarm_common::image_name::familiar;
use imgfarm_common::oci::store::RefDescriptor;
use imgfarm_common::platform::{parse_platform_list, Platform};
use imgfarm_common::registry::{PlatformSelection, PullOptions, Reference};
use std::process::ExitCode;

/// `imgfarm pull`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference (e.g. registry:5000/app:1)
    pub image: String,
    /// Platform(s) to pull, comma-separated (default: the host's); "all" pulls every platform
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

fn selection(p: Option<&str>) -> anyhow::Result<PlatformSelection> {
    Ok(match p {
        Some("all") => PlatformSelection::All,
        Some(list) => PlatformSelection::Only(
            parse_platform_list(list).map_err(|e| anyhow!("--platform {list:?}: {e}"))?,
        ),
        None => PlatformSelection::Only(vec![Platform::host()]),
    })
}

/// Run `imgfarm pull`.
pub fn run(g: &GlobalArgs, a: PullArgs) -> anyhow::Result<ExitCode> {
    let name = store_name(&a.image)?;
    let reference: Reference = a.image.parse()?;
    let platforms = selection(a.platform.as_deref())?;
    let store = open_store(g)?;
    let client = a.registry.client();
    let one = matches!(&platforms, PlatformSelection::Only(v) if v.len() == 1);
    let pulled = runtime()?
        .block_on(client.pull(&reference, &PullOptions { platforms }, &store))
        .with_context(|| format!("pulling {}", familiar(&name)))?;
    let target = match (one, pulled.images.as_slice()) {
        (true, [only]) => &only.manifest,
        _ => &pulled.root,
    };
    store.set_ref(
        &name,
        &RefDescriptor::new(
            target.media_type.clone(),
            target.digest.clone(),
            target.size,
        ),
    )?;
    println!("Digest: {}", pulled.root.digest);
    println!(
        "Status: pulled {} ({} blobs fetched, {} bytes; {} already present)",
        familiar(&name),
        pulled.stats.blobs_fetched,
        pulled.stats.bytes_fetched,
        pulled.stats.blobs_present
    );
    Ok(ExitCode::SUCCESS)
}
