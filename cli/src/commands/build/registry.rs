//! The build's registry traffic through common::registry: base images that
//! the local store lacks (or all of them with `--pull`), and `--push`.

use anyhow::{anyhow, Context as _};
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::platform::Platform;
use imgfarm_common::registry::{
    PlatformSelection, PullOptions, PushOptions, Reference, RegistryClient, RegistryConfig,
};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the registry client's runtime")
}

fn client() -> RegistryClient {
    RegistryClient::new(RegistryConfig::from_env())
}

/// Pull `reference` for `platform` into `store` and name it there.
pub fn pull_base(store: &ContentStore, reference: &str, platform: &Platform) -> anyhow::Result<()> {
    let r: Reference = reference
        .parse()
        .map_err(|e| anyhow!("base image {reference}: {e}"))?;
    let opts = PullOptions {
        platforms: PlatformSelection::Only(vec![platform.clone()]),
    };
    let pulled = runtime()?
        .block_on(client().pull(&r, &opts, store))
        .with_context(|| format!("pulling base image {reference} for {platform}"))?;
    let root = pulled.root;
    store.set_ref(
        reference,
        &RefDescriptor::new(root.media_type.clone(), root.digest.clone(), root.size),
    )?;
    Ok(())
}

/// Push the image rooted at `root` to each of `names`.
pub fn push(store: &ContentStore, root: &RefDescriptor, names: &[String]) -> anyhow::Result<()> {
    let rt = runtime()?;
    let c = client();
    for n in names {
        let r: Reference = n.parse().map_err(|e| anyhow!("--push {n}: {e}"))?;
        rt.block_on(c.push(store, &root.digest, &r, &PushOptions::default()))
            .with_context(|| format!("pushing {n}"))?;
    }
    Ok(())
}
