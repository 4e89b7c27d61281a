//! A stage's filesystem for `COPY --from` (and ADD/COPY from an image):
//! its layer chain unpacked into a temp dir, but only the paths the copy's
//! sources can read when that is provably enough.
//!
//! A source's static prefix is its cleaned components before the first one
//! with a `filepath.Match` meta character (`*`, `?`, `[`, or an escape
//! `\`). Selection (BuildKit's `FollowSymlinks`) follows symlinks along the
//! source path and at each wildcard match, and such a link may point
//! anywhere in the stage; so the whole chain is unpacked when a prefix, one
//! of its ancestors, or a possible wildcard match below it is a symlink in
//! the stage's merged view, when a source is the root (or a wildcard at the
//! top, or climbs with `..`), and when a kept hardlink's target lies
//! outside the prefixes ([`LayerError::OutsideFilter`]). Otherwise each
//! layer is applied with [`ApplyOptions::only`], which gives the full
//! unpack restricted to the prefixes, their subtrees and their parents.

use super::result::LayerRef;
use super::view::ChainView;
use super::SolveError;
use imgfarm_common::oci::layer::open_layer;
use imgfarm_common::oci::layer::{apply, ApplyOptions, DevicePolicy, LayerError};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::path::{strict_components, strip_empty_and_dot};

fn has_meta(component: &str) -> bool {
    component.contains(['*', '?', '[', '\\'])
}

/// The clean relative prefixes that hold everything `sources` can select
/// from the stage seen through `view`, or `None` when the whole stage must
/// be unpacked (see the module docs).
pub fn unpack_prefixes(sources: &[String], view: &ChainView) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(sources.len());
    for source in sources {
        let comps = strict_components(source)?;
        let fixed = comps
            .iter()
            .position(|c| has_meta(c))
            .unwrap_or(comps.len());
        if fixed == 0 {
            return None;
        }
        let is_link = |p: &str| {
            view.get(p)
                .is_some_and(|e| e.kind == tar::EntryType::Symlink)
        };
        for i in 1..=fixed {
            if is_link(&comps[..i].join("/")) {
                return None;
            }
        }
        let prefix = comps[..fixed].join("/");
        let pattern_depth = comps.len() - fixed;
        if pattern_depth > 0 {
            let under = format!("{prefix}/");
            let followed_match = view
                .entries
                .range(under.clone()..)
                .take_while(|(k, _)| k.starts_with(&under))
                .any(|(k, e)| {
                    e.kind == tar::EntryType::Symlink
                        && k[under.len()..].split('/').count() <= pattern_depth
                });
            if followed_match {
                return None;
            }
        }
        out.push(prefix);
    }
    Some(out)
}

/// Where a copy reads a stage's files.
pub enum StageDir {
    /// The selected paths, unpacked into a temp dir.
    Unpacked(tempfile::TempDir),
    /// A committed snapshot read in place (crate::snapshotter): one layer
    /// holds everything the sources select.
    Snapshot(std::path::PathBuf),
}

impl StageDir {
    /// The directory to open as the stage's filesystem.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Unpacked(t) => t.path(),
            Self::Snapshot(p) => p,
        }
    }
}

/// The stage's files for `sources`: in place from a committed snapshot when
/// `in_place` (the caller holds a snapshot lease), one layer holds all of
/// them ([`super::layer_index::sole_holder`]) and this process may read
/// build trees; else unpacked from the layers that hold them.
pub fn source_dir(
    store: &ContentStore,
    chain: &[LayerRef],
    view: &ChainView,
    sources: &[String],
    in_place: bool,
) -> Result<StageDir, SolveError> {
    if in_place && crate::userns::reads_build_trees() {
        if let Some(prefixes) = unpack_prefixes(sources, view) {
            if let Some(i) = super::layer_index::sole_holder(store, chain, &prefixes)? {
                let ids =
                    crate::snapshotter::chain::chain_ids(chain[..=i].iter().map(|l| &l.diff_id));
                let state = store.root();
                if let Some(dir) = ids
                    .last()
                    .and_then(|id| crate::snapshotter::committed_layer_dir(state, id))
                {
                    tracing::debug!(snapshot = %dir.display(), "copy sources read in place");
                    return Ok(StageDir::Snapshot(dir));
                }
            }
        }
    }
    unpack_for_sources(store, chain, view, sources).map(StageDir::Unpacked)
}

/// Unpacks `chain` (whose merged view is `view`) into a new temp dir,
/// limited to what `sources` can select when that is safe. Owners are not
/// applied: COPY takes them from `view`.
pub fn unpack_for_sources(
    store: &ContentStore,
    chain: &[LayerRef],
    view: &ChainView,
    sources: &[String],
) -> Result<tempfile::TempDir, SolveError> {
    let dir = tempfile::tempdir().map_err(|e| SolveError::Layer(format!("temp dir: {e}")))?;
    unpack_sources_into(store, chain, view, sources, dir.path(), false)?;
    Ok(dir)
}

/// Unpacks `chain` into the empty dir `dest`, limited to what `sources`
/// can select when that is safe (see the module docs), with the owners of
/// the stage when `ownership` (a `RUN --mount=type=bind,from=` source, read
/// by the step's user). The layers that hold nothing at, under or above the
/// sources are not read at all.
pub fn unpack_sources_into(
    store: &ContentStore,
    chain: &[LayerRef],
    view: &ChainView,
    sources: &[String],
    dest: &std::path::Path,
    ownership: bool,
) -> Result<(), SolveError> {
    if let Some(only) = unpack_prefixes(sources, view) {
        match unpack(store, chain, Some(only), dest, ownership) {
            Err(Unpack::OutsideFilter(e)) => {
                tracing::debug!("unpacking the whole stage: {e}");
                empty_dir(dest)?;
            }
            other => return other.map_err(Unpack::into_solve),
        }
    }
    unpack(store, chain, None, dest, ownership).map_err(Unpack::into_solve)
}

/// Removes what a refused filtered unpack left in `dir`.
fn empty_dir(dir: &std::path::Path) -> Result<(), SolveError> {
    let err = |e: std::io::Error| SolveError::Layer(format!("emptying {}: {e}", dir.display()));
    for e in std::fs::read_dir(dir).map_err(err)? {
        let p = e.map_err(err)?.path();
        if p.symlink_metadata().map_err(err)?.is_dir() {
            std::fs::remove_dir_all(&p).map_err(err)?;
        } else {
            std::fs::remove_file(&p).map_err(err)?;
        }
    }
    Ok(())
}

enum Unpack {
    OutsideFilter(LayerError),
    Failed(SolveError),
}

impl Unpack {
    fn into_solve(self) -> SolveError {
        match self {
            Self::OutsideFilter(e) => SolveError::Layer(e.to_string()),
            Self::Failed(e) => e,
        }
    }
}

fn unpack(
    store: &ContentStore,
    chain: &[LayerRef],
    only: Option<Vec<String>>,
    dest: &std::path::Path,
    ownership: bool,
) -> Result<(), Unpack> {
    let prefixes: Option<Vec<String>> = only
        .as_ref()
        .map(|o| o.iter().map(|p| strip_empty_and_dot(p)).collect());
    let opts = ApplyOptions {
        ownership,
        devices: DevicePolicy::Skip,
        only,
        ..Default::default()
    };
    for l in chain {
        // A layer with nothing at, under or above the prefixes would apply
        // nothing: its blob is not read (a 400 MB base under a one-file COPY).
        if let Some(p) = &prefixes {
            if !super::view::layer_touches(store, l, p).map_err(Unpack::Failed)? {
                continue;
            }
        }
        let r = open_layer(store, l).map_err(|e| Unpack::Failed(e.into()))?;
        match apply(r, dest, &opts) {
            Ok(_) => {}
            Err(e @ LayerError::OutsideFilter { .. }) => return Err(Unpack::OutsideFilter(e)),
            Err(e) => return Err(Unpack::Failed(SolveError::Layer(e.to_string()))),
        }
    }
    Ok(())
}
