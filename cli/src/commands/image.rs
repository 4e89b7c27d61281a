//! What img's image commands share: the `images` flags, opening the local
//! store, finding an image by reference, and the registry client. Each
//! command lives in its own file (pull.rs, push.rs, tag.rs, ...).

use super::GlobalArgs;
use anyhow::{anyhow, Context};
use clap::Args;
use imgfarm_common::image_name::{self, LookupError};
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::registry::{RegistryClient, RegistryConfig};

/// `imgfarm images`
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show images whose reference matches this
    pub filter: Option<String>,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// Registry flags shared by pull, push and login.
#[derive(Debug, Args, Clone, Default)]
pub struct RegistryFlags {
    /// Allow plain http (and unverified TLS fallback) for this registry (host or host:port); repeatable
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

impl RegistryFlags {
    /// Docker's defaults (credentials, certs.d) plus these flags.
    pub fn config(&self) -> RegistryConfig {
        let mut config = RegistryConfig::from_env();
        config
            .insecure_registries
            .extend(self.insecure_registries.iter().cloned());
        config
    }

    /// A registry client with [`RegistryFlags::config`].
    pub fn client(&self) -> RegistryClient {
        RegistryClient::new(self.config())
    }
}

/// Open (creating if needed) the local image store in the state dir.
pub fn open_store(g: &GlobalArgs) -> anyhow::Result<ContentStore> {
    let state = g.state_dir();
    ContentStore::open(&state)
        .with_context(|| format!("opening the image store in {}", state.display()))
}

/// Open the store only if the state dir exists (read-only commands must not
/// create it).
pub fn existing_store(g: &GlobalArgs) -> anyhow::Result<Option<ContentStore>> {
    if g.state_dir().exists() {
        open_store(g).map(Some)
    } else {
        Ok(None)
    }
}

/// Find `input` in the store, or say it is not there.
pub fn lookup(
    store: Option<&ContentStore>,
    input: &str,
) -> anyhow::Result<(String, RefDescriptor)> {
    let not_found = || {
        anyhow!("no such image: {input} (not in the local store; `imgfarm images` lists it, `imgfarm pull {input}` fetches it)")
    };
    let Some(store) = store else {
        image_name::store_name(input).map_err(|e| anyhow!(e))?;
        return Err(not_found());
    };
    match image_name::find(store, input) {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(not_found()),
        Err(LookupError::Invalid(e)) => Err(anyhow!(e)),
        Err(e) => Err(e.into()),
    }
}

/// The normalised store name for `input`, or a clear error.
pub fn store_name(input: &str) -> anyhow::Result<String> {
    image_name::store_name(input).map_err(|e| anyhow!(e))
}

/// A current-thread tokio runtime for one registry operation.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
