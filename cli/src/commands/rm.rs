//! `imgfarm rm REF...` (alias `rmi`): remove refs from the local store. Like
//! img and containerd, this only drops the name; the blobs stay until
//! `imgfarm prune` collects what no ref (or the build cache) still uses.
//! Every reference is checked first, so a bad one leaves the store unchanged.

use super::image::{existing_store, lookup};
use super::GlobalArgs;
use clap::Args;
use imgfarm_common::image_name::familiar;
use std::process::ExitCode;

/// `imgfarm rm`
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Image references to remove
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Run `imgfarm rm`.
pub fn run(g: &GlobalArgs, a: RmArgs) -> anyhow::Result<ExitCode> {
    let store = existing_store(g)?;
    let mut names = Vec::new();
    for i in &a.images {
        names.push(lookup(store.as_ref(), i)?.0);
    }
    if let Some(store) = store {
        for n in names {
            store.delete_ref(&n)?;
            println!("Untagged: {}", familiar(&n));
        }
    }
    Ok(ExitCode::SUCCESS)
}
