//! `imgfarm tag SRC DST`: another name for the same image (docker tag). The
//! new ref points at the same root descriptor; nothing is copied.

use super::image::{lookup, open_store, store_name};
use super::GlobalArgs;
use anyhow::Context;
use clap::Args;
use imgfarm_common::image_name::familiar;
use std::process::ExitCode;

/// `imgfarm tag`
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image reference
    pub source: String,
    /// New reference
    pub target: String,
}

/// Run `imgfarm tag`.
pub fn run(g: &GlobalArgs, a: TagArgs) -> anyhow::Result<ExitCode> {
    let target = store_name(&a.target)?;
    let store = open_store(g)?;
    let (_, desc) = lookup(Some(&store), &a.source)?;
    store
        .set_ref(&target, &desc)
        .with_context(|| format!("naming {}", familiar(&target)))?;
    Ok(ExitCode::SUCCESS)
}
