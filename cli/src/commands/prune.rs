//! `imgfarm prune [--all | --keep-storage SIZE]`: garbage-collect blobs no image ref reaches, then
//! the snapshots no image or cache record references
//! (imgfarm_worker::snapshotter::collect) and the layer indexes of removed
//! blobs. Blobs the build cache (`<state>/cache/vertices`) still names are
//! held by a lease during the collection, so a cached rebuild still finds its
//! layers. `--all` first drops the build cache (vertex results and RUN
//! `--mount=type=cache` dirs), so only the snapshots of images stay.

use super::du::human;
use super::image::existing_store;
use super::GlobalArgs;
use anyhow::Context;
use clap::Args;
use imgfarm_common::oci::Digest;
use std::path::Path;
use std::process::ExitCode;

/// `imgfarm prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove the build cache
    #[arg(short, long)]
    pub all: bool,
    /// Keep the newest build cache up to this size (e.g. 5GB, 512MiB): least recently used results, their blobs and snapshots go first; images are kept
    #[arg(long, value_name = "SIZE", value_parser = super::roles::size_arg, conflicts_with = "all")]
    pub keep_storage: Option<u64>,
}

/// Every digest-looking string in a cache entry (layer chains, configs, manifests).
fn digests_in(v: &serde_json::Value, out: &mut Vec<Digest>) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(d) = s.parse::<Digest>() {
                out.push(d);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| digests_in(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| digests_in(x, out)),
        _ => {}
    }
}

fn cache_digests(state: &Path) -> Vec<Digest> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(state.join("cache").join("vertices")) else {
        return out;
    };
    for e in dir.flatten() {
        let small = e.metadata().is_ok_and(|m| m.len() <= 16 << 20);
        if let (true, Ok(bytes)) = (small, std::fs::read(e.path())) {
            if let Ok(v) = serde_json::from_slice(&bytes) {
                digests_in(&v, &mut out);
            }
        }
    }
    out
}

/// Remove `dir` with the executor's one rule for build trees: directly as
/// root of the build namespace (imgfarm_worker::userns), else from inside a
/// user namespace where sub-uid-owned files can be removed.
fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    imgfarm_worker::executor::Executor::new()
        .remove_tree(dir)
        .with_context(|| format!("removing {}", dir.display()))
}

/// Run `imgfarm prune`.
pub fn run(g: &GlobalArgs, a: PruneArgs) -> anyhow::Result<ExitCode> {
    let state = g.state_dir();
    // A coordinator's results (in its database) name blobs that no image ref
    // reaches: collecting by refs would delete them and leave the coordinator
    // serving cached steps whose blobs are gone.
    let db = state.join("coordinator.db");
    if db.exists() {
        anyhow::bail!(
            "{} is a farm coordinator's state ({} holds its builds and cached results):              `imgfarm prune` collects a local state by its image refs and would delete blobs              those results name; it leaves this directory untouched",
            state.display(),
            db.display()
        );
    }
    let Some(store) = existing_store(g)? else {
        println!("Total reclaimed space: 0B");
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(cap) = a.keep_storage {
        return keep_storage(&state, &store, cap);
    }
    if a.all {
        remove_tree(&state.join("cache"))?;
    }
    let lease = store.lease(Some(std::time::Duration::from_secs(3600)))?;
    for d in cache_digests(&state) {
        if store.contains(&d) {
            lease.add(&d)?;
        }
    }
    let report = store.gc().context("collecting unreferenced blobs")?;
    lease.release();
    // Snapshots are collected only when no build or worker holds them (as BuildKit's
    // prune skips records in use); the blobs above are safe either way (store leases).
    let snaps = match imgfarm_worker::snapshotter::collect::collect(
        &state,
        &store,
        &imgfarm_worker::executor::Executor::new(),
    ) {
        Ok(r) => r,
        Err(e @ imgfarm_worker::snapshotter::SnapshotterError::Busy { .. }) => {
            eprintln!("warning: snapshots not collected: {e}");
            Default::default()
        }
        Err(e) => return Err(e).context("collecting unreferenced snapshots"),
    };
    let indexes = imgfarm_worker::solve::layer_index::collect_indexes(&store);
    for d in &report.removed {
        println!("deleted: {d}");
    }
    println!(
        "Deleted {} blobs, kept {}; deleted {} snapshots, kept {}. Total reclaimed space: {}",
        report.removed.len(),
        report.kept,
        snaps.removed,
        snaps.kept,
        human(report.freed_bytes + snaps.freed_bytes + indexes)
    );
    Ok(ExitCode::SUCCESS)
}

/// `prune --keep-storage SIZE`: the worker's size-capped collection
/// (`imgfarm_worker::gc`) on the local state.
fn keep_storage(
    state: &Path,
    store: &imgfarm_common::oci::store::ContentStore,
    cap: u64,
) -> anyhow::Result<ExitCode> {
    let cache = imgfarm_worker::solve::result::ResultCache::open(state)?;
    let o = imgfarm_worker::gc::collect_to(
        state,
        store,
        &cache,
        &imgfarm_worker::executor::Executor::new(),
        cap,
    )
    .map_err(anyhow::Error::msg)
    .context("collecting the build cache")?;
    if o.snapshots_busy {
        eprintln!("warning: snapshots not collected: a build or worker is using this state");
    }
    println!(
        "Forgot {} cached results; deleted {} blobs and {} snapshots, kept {} snapshots. \
         Store and snapshots: {} -> {} (keep {}). Total reclaimed space: {}",
        o.forgotten,
        o.blobs_removed,
        o.snapshots_removed,
        o.snapshots_kept,
        human(o.before),
        human(o.after),
        human(cap),
        human(o.before.saturating_sub(o.after))
    );
    Ok(ExitCode::SUCCESS)
}
