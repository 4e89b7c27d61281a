//! The build context on a worker: the client uploads it as chunk layers
//! (FARM.md, `FarmDefinition.context`, [`imgfarm_common::farm::chunks`]);
//! each worker applies the chunks in order, once per chunk list
//! ([`ContextBlob::id`]), into `<state>/contexts/<hex>/` and opens it as a
//! [`BuildContext`] for COPY sources and RUN bind mounts.

use imgfarm_common::context::BuildContext;
use imgfarm_common::farm::ContextBlob;
use imgfarm_common::oci::layer::open_layer;
use imgfarm_common::oci::layer::{apply_all, ApplyOptions, DevicePolicy, LayerError};
use imgfarm_common::oci::store::ContentStore;
use std::path::{Path, PathBuf};

/// The directory a context blob is unpacked to (an empty directory when the
/// job reads no context).
pub fn context_dir(state: &Path, ctx: Option<&ContextBlob>) -> PathBuf {
    let root = state.join("contexts");
    match ctx {
        Some(c) => root.join(c.id().hex()),
        None => root.join("empty"),
    }
}

/// Unpacks `ctx` (whose chunk blobs must be in `store`) unless done before, and
/// opens it. Files get the worker's own owner (the context's owners do not
/// matter: COPY sets them), device nodes are skipped. Unpacking goes to a
/// temporary directory renamed into place, so a crash or a concurrent job
/// never sees half a context.
pub fn open_context(
    store: &ContentStore,
    state: &Path,
    ctx: Option<&ContextBlob>,
) -> Result<BuildContext, String> {
    let dir = context_dir(state, ctx);
    let err = |what: &str, e: &dyn std::fmt::Display| {
        format!("build context {}: {what}: {e}", dir.display())
    };
    if !dir.is_dir() {
        let root = state.join("contexts");
        std::fs::create_dir_all(&root).map_err(|e| err("creating", &e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&root)
            .map_err(|e| err("creating a temporary directory", &e))?;
        if let Some(c) = ctx {
            // One chunk open at a time: a context may have thousands.
            let readers = c.chunks.iter().map(|l| {
                open_layer(store, l).map_err(|e| LayerError::Io {
                    op: "open context chunk",
                    path: store.blob_path(&l.digest),
                    source: std::io::Error::other(e.to_string()),
                })
            });
            let opts = ApplyOptions {
                ownership: false,
                devices: DevicePolicy::Skip,
                ..ApplyOptions::default()
            };
            apply_all(readers, tmp.path(), &opts).map_err(|e| err("unpacking the chunks", &e))?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755));
        }
        let tmp = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another job unpacked the same context first: use theirs.
            if !dir.is_dir() {
                return Err(err("moving into place", &e));
            }
        }
    }
    BuildContext::open(&dir, Default::default()).map_err(|e| err("opening", &e))
}
