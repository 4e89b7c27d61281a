//! [`StepExecutor`] over the rootless executor (crate::executor): the step runs
//! over an overlay of the committed snapshots of its parent chain
//! (crate::snapshotter, unpacked once per layer inside a user namespace, so
//! owners are mapped ids), in an active snapshot whose upper dir becomes the
//! layer and is then committed as the snapshot of the new chain. Owners in
//! the upper dir are host ids; common::oci::layer::create maps them back to
//! container ids with the executor's id map as it writes the layer.

use super::cache_mount;
use super::exec::{ExecFailure, ExecRequest, StepExecutor};
use super::result::LayerRef;
use crate::emulation;
use crate::executor::{self, ExecError, ExtraMount, StepNetwork};
use crate::idmap::IdMapping;
use crate::snapshotter::chain::chain_ids;
use crate::snapshotter::{copy_tree, Mode, Snapshotter};
use imgfarm_common::graph::op::{MountKind, NetworkMode};
use imgfarm_common::oci::layer::{create, CreateOptions, IdMap, IdRange, SourceKind};
use imgfarm_common::platform::Platform;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The embedded worker's RUN executor.
pub struct RootlessExecutor {
    exec: executor::Executor,
    state: PathBuf,
    secrets: BTreeMap<String, PathBuf>,
    snapshots: Mutex<Option<Arc<Snapshotter>>>,
}

fn setup(e: impl std::fmt::Display) -> ExecFailure {
    ExecFailure::Setup(e.to_string())
}

impl RootlessExecutor {
    /// An executor keeping snapshots and cache mounts under `state`;
    /// `secrets` maps `--secret` ids to files.
    pub fn new(state: &Path, secrets: BTreeMap<String, PathBuf>) -> Self {
        Self {
            exec: executor::Executor::new(),
            state: state.to_path_buf(),
            secrets,
            snapshots: Mutex::new(None),
        }
    }

    /// The snapshotter, opened (and its lease taken) on first use.
    fn snapshotter(&self) -> Result<Arc<Snapshotter>, ExecFailure> {
        let mut g = self
            .snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = g.as_ref() {
            return Ok(Arc::clone(s));
        }
        let s = Arc::new(Snapshotter::open(&self.state, self.exec.clone()).map_err(setup)?);
        *g = Some(Arc::clone(&s));
        Ok(s)
    }

    /// The committed snapshots of `lower`, bottom first, unpacking what is
    /// missing (and indexing each layer it unpacks, for later file ops).
    fn lowers(
        &self,
        snaps: &Snapshotter,
        req: &ExecRequest<'_>,
    ) -> Result<Vec<PathBuf>, ExecFailure> {
        let index = |l: &LayerRef| {
            if let Err(e) = super::layer_index::ensure_index(req.store, l) {
                tracing::debug!(layer = %l.digest, "not indexed: {e}");
            }
        };
        let (dirs, _) = snaps.lowers(req.store, req.lower, &index).map_err(setup)?;
        Ok(dirs)
    }

    /// The step's extra mounts. Cache directories stay held (per their
    /// `sharing` mode) by the leases pushed to `cache_leases` until the caller
    /// drops them after the step.
    fn mounts(
        &self,
        req: &ExecRequest<'_>,
        tmp: &Path,
        cache_leases: &mut Vec<cache_mount::CacheLease>,
    ) -> Result<Vec<ExtraMount>, ExecFailure> {
        let mut out = Vec::new();
        for m in &req.op.mounts {
            let s = &m.spec;
            match s.kind {
                MountKind::Tmpfs => out.push(ExtraMount::Tmpfs {
                    target: s.target.clone(),
                    size: s.size,
                }),
                MountKind::Cache => {
                    let id = if s.id.is_empty() { &s.target } else { &s.id };
                    let lease = cache_mount::acquire(
                        &self.state.join("cache").join("mounts"),
                        id,
                        s.sharing.unwrap_or_default(),
                        cache_mount::NewDir {
                            mode: s.mode,
                            uid: s.uid,
                            gid: s.gid,
                        },
                    )
                    .map_err(setup)?;
                    out.push(ExtraMount::Cache {
                        source: lease.dir.clone(),
                        target: s.target.clone(),
                    });
                    cache_leases.push(lease);
                }
                MountKind::Secret => {
                    let id = if s.id.is_empty() {
                        s.target.rsplit('/').next().unwrap_or("").to_string()
                    } else {
                        s.id.clone()
                    };
                    let target = if s.target.is_empty() {
                        format!("/run/secrets/{id}")
                    } else {
                        s.target.clone()
                    };
                    match self.secrets.get(&id) {
                        Some(src) => out.push(ExtraMount::Secret {
                            source: src.clone(),
                            target,
                            mode: s.mode.unwrap_or(0o400),
                            uid: s.uid.unwrap_or(0),
                            gid: s.gid.unwrap_or(0),
                        }),
                        None if s.required => {
                            return Err(ExecFailure::Setup(format!(
                                "secret {id} not found: pass it with --secret id={id},src=PATH"
                            )))
                        }
                        None => {}
                    }
                }
                MountKind::Bind => {
                    // From the build context (a context input); stages need a merged
                    // view, which the solver does not build yet.
                    let Some(dir) = req.context_dir else {
                        return Err(ExecFailure::Setup("bind mount without a context".into()));
                    };
                    let input = m.input.and_then(|i| req.inputs.get(i));
                    if let Some(files) = input.and_then(|r| r.files_dir.as_ref()) {
                        let rel = s.source.trim_start_matches('/');
                        let source = if rel.is_empty() {
                            files.clone()
                        } else {
                            files.join(rel)
                        };
                        out.push(ExtraMount::Bind {
                            source,
                            target: s.target.clone(),
                            readonly: true,
                        });
                        continue;
                    }
                    let rel = s.source.trim_start_matches('/');
                    if let Some(r) = input.filter(|r| !r.chain.is_empty()) {
                        let source = stage_source(req, &r.chain, rel, tmp, out.len())?;
                        // A private copy: `rw` changes are discarded with it, as in BuildKit.
                        out.push(ExtraMount::Bind {
                            source,
                            target: s.target.clone(),
                            readonly: s.readonly,
                        });
                        continue;
                    }
                    if rel.split('/').any(|p| p == "..") {
                        return Err(ExecFailure::Setup(format!(
                            "bind mount source {:?} leaves the build context",
                            s.source
                        )));
                    }
                    out.push(ExtraMount::Bind {
                        source: dir.join(rel),
                        target: s.target.clone(),
                        readonly: s.readonly,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// BuildKit creates missing RUN mount targets (directories) in the root
/// filesystem, and they stay in the layer as empty directories (root, 0755);
/// so do we: each missing directory on the way to a bind (of a directory),
/// cache or tmpfs target (or to a secret's directory) is made in the upper dir. Existing parents are
/// copied up with their mode, as overlayfs would.
fn keep_mount_targets(
    lowers: &[PathBuf],
    upper: &Path,
    mounts: &[ExtraMount],
) -> Result<(), ExecFailure> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    for m in mounts {
        let target = match m {
            ExtraMount::Bind { source, target, .. } if source.is_dir() => target.as_str(),
            ExtraMount::Cache { target, .. } | ExtraMount::Tmpfs { target, .. } => target.as_str(),
            // A secret file is not kept, but the directories made for it are.
            ExtraMount::Secret { target, .. } => target.rsplit_once('/').map_or("", |(d, _)| d),
            ExtraMount::Bind { .. } => continue,
        };
        let Some(parts) = imgfarm_common::path::strict_components(target) else {
            continue;
        };
        let mut rel = PathBuf::new();
        for part in parts {
            rel.push(part);
            let up = upper.join(&rel);
            if let Ok(meta) = up.symlink_metadata() {
                if meta.is_dir() {
                    continue;
                }
                break; // a file or whiteout written by the step: leave it.
            }
            // The topmost lower with an entry decides (a whiteout hides it).
            let below = lowers
                .iter()
                .rev()
                .find_map(|l| l.join(&rel).symlink_metadata().ok());
            let mode = match below {
                Some(b) if b.is_dir() => b.permissions().mode() & 0o7777,
                Some(b) if b.file_type().is_char_device() => 0o755,
                Some(_) => break, // not a directory below: nothing to keep.
                None => 0o755,
            };
            std::fs::create_dir(&up).map_err(setup)?;
            std::fs::set_permissions(&up, std::fs::Permissions::from_mode(mode)).map_err(setup)?;
        }
    }
    Ok(())
}

/// `RUN --mount=type=bind,from=<stage|image>`: the stage's filesystem
/// (`chain`) flattened into a private dir under `tmp` (removed after the
/// RUN), and the path of `rel` in it. BuildKit binds the source read-only
/// unless `rw`, whose writes are thrown away; a private copy gives both.
/// A source that leaves the stage's root (`..`, or a symlink pointing out
/// once resolved on the host) is refused.
fn stage_source(
    req: &ExecRequest<'_>,
    chain: &[LayerRef],
    rel: &str,
    tmp: &Path,
    index: usize,
) -> Result<PathBuf, ExecFailure> {
    if rel.split('/').any(|p| p == "..") {
        return Err(ExecFailure::Setup(format!(
            "bind mount source {rel:?} leaves the stage's filesystem"
        )));
    }
    let root = tmp.join(format!("bind-{index}"));
    std::fs::create_dir_all(&root).map_err(setup)?;
    // Owners as in the stage (on as root of the build namespace), so a step running as a
    // non-root user reads what that user owns there, as in BuildKit. Only the layers that
    // hold the source are read (not a whole Debian base for one directory of a stage).
    let view = super::view::ChainView::load(req.store, chain).map_err(setup)?;
    let source = if rel.is_empty() { "/" } else { rel };
    super::stage::unpack_sources_into(req.store, chain, &view, &[source.to_string()], &root, true)
        .map_err(setup)?;
    let root = root.canonicalize().map_err(setup)?;
    let source = root.join(rel);
    let resolved = source.canonicalize().map_err(|e| {
        ExecFailure::Setup(format!(
            "bind mount source /{rel} in the mounted stage: {e}; check source="
        ))
    })?;
    if !resolved.starts_with(&root) {
        return Err(ExecFailure::Setup(format!(
            "bind mount source /{rel} resolves outside the stage's filesystem"
        )));
    }
    Ok(resolved)
}

/// The log callback shared by the stdout and stderr writers.
type SharedLog<'b> = RefCell<&'b mut dyn FnMut(&[u8])>;

struct LogWriter<'a, 'b>(&'a SharedLog<'b>);

impl Write for LogWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (self.0.borrow_mut())(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl StepExecutor for RootlessExecutor {
    fn release_snapshots(&self) {
        self.snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    fn run(
        &self,
        req: &ExecRequest<'_>,
        log: &mut dyn FnMut(&[u8]),
    ) -> Result<LayerRef, ExecFailure> {
        let sandbox = executor::Sandbox::for_mode(req.op.security);
        let mut mode = emulation::resolve_in(req.platform, &self.state).map_err(setup)?;
        if sandbox.seccomp {
            mode = emulation::under_seccomp(mode, req.platform, &Platform::host(), || {
                emulation::private_emulator(req.platform)
            })
            .map_err(setup)?;
        }
        let t0 = Instant::now();
        let snaps = self.snapshotter()?;
        let lowers = self.lowers(&snaps, req)?;
        let t_unpack = t0.elapsed();
        let active = snaps.prepare("run-").map_err(setup)?;
        let tmp = active.dir().to_path_buf();
        let upper = active.upper();
        let work = active.work();
        // Copy mode: the step works on a private copy of its parent's whole tree (bound
        // as the root), and its layer is the difference from that parent.
        let (rootfs, base) = match snaps.mode() {
            Mode::Overlay => (lowers.clone(), None),
            Mode::Copy => {
                if let Some(parent) = lowers.first() {
                    if let Err(e) = copy_tree(parent, &upper) {
                        let _ = snaps.remove(active);
                        return Err(setup(e));
                    }
                }
                (Vec::new(), lowers.first().cloned())
            }
        };
        let mut er =
            executor::ExecRequest::new(rootfs.clone(), upper.clone(), work, req.op.args.clone());
        er.env = req.op.env.clone();
        er.cwd = if req.op.cwd.is_empty() {
            "/".into()
        } else {
            req.op.cwd.clone()
        };
        er.user = req.op.user.clone();
        er.network = match req.op.network {
            NetworkMode::Default => StepNetwork::Isolated,
            NetworkMode::None => StepNetwork::None,
            NetworkMode::Host => StepNetwork::Host,
        };
        er.platform = req.platform.clone();
        er.emulation = mode.emulator();
        er.sandbox = sandbox;
        let result = (|| {
            let mut cache_leases = Vec::new();
            er.mounts = self.mounts(req, &tmp, &mut cache_leases)?;
            let cell: SharedLog<'_> = RefCell::new(log);
            let t1 = Instant::now();
            let report = self
                .exec
                .run_cancellable(&er, req.cancel, LogWriter(&cell), LogWriter(&cell))
                .map_err(|e| match e {
                    ExecError::Cancelled => ExecFailure::Cancelled,
                    ExecError::Failed {
                        command,
                        code,
                        how,
                        tail,
                    } => match code {
                        Some(code) => ExecFailure::Exit {
                            command: command.join(" "),
                            code,
                            tail,
                        },
                        None => ExecFailure::Setup(format!(
                            "process \"{}\" {how}\n{tail}",
                            command.join(" ")
                        )),
                    },
                    other => setup(other),
                })?;
            let t_run = t1.elapsed();
            let t2 = Instant::now();
            keep_mount_targets(&rootfs, &upper, &er.mounts)?;
            let layer = self.layer_from_upper(req, &upper, base)?;
            // The upper dir is this layer unpacked: it becomes the chain's snapshot, so
            // the next step stacks on it without reading the blob.
            let ids = chain_ids(req.lower.iter().chain([&layer]).map(|l| &l.diff_id));
            if let Some(id) = ids.last() {
                snaps.commit(&active, &snaps.name_for(id)).map_err(setup)?;
            }
            tracing::info!(
                unpack_ms = t_unpack.as_millis() as u64,
                setup_ms = report.setup.map_or(0, |d| d.as_millis() as u64),
                run_ms = t_run.as_millis() as u64,
                diff_ms = t2.elapsed().as_millis() as u64,
                "RUN timings"
            );
            Ok(layer)
        })();
        if let Err(e) = snaps.remove(active) {
            tracing::warn!("could not remove {}: {e}", tmp.display());
        }
        result
    }
}

impl RootlessExecutor {
    /// The layer of a step's upper dir: an overlay upper dir, or (copy mode,
    /// `base` set) a whole tree diffed against its parent's.
    fn layer_from_upper(
        &self,
        req: &ExecRequest<'_>,
        upper: &Path,
        base: Option<PathBuf>,
    ) -> Result<LayerRef, ExecFailure> {
        let id_map = match self.exec.mapping() {
            // Container ids are this process's own ids: nothing to translate.
            IdMapping::Identity { .. } => None,
            IdMapping::Full {
                uid,
                gid,
                subuid,
                subgid,
                count,
            } => Some(IdMap::rootless(*uid, *gid, *subuid, *subgid, *count)),
            IdMapping::Single { uid, gid } => Some(IdMap {
                uids: vec![IdRange {
                    container: 0,
                    host: *uid,
                    size: 1,
                }],
                gids: vec![IdRange {
                    container: 0,
                    host: *gid,
                    size: 1,
                }],
            }),
        };
        let source = if base.is_some() {
            SourceKind::Plain
        } else {
            SourceKind::OverlayUpper
        };
        let opts = CreateOptions {
            source,
            base,
            id_map,
            ..CreateOptions::from_env()
        };
        create(req.store, upper, &opts)
            .map(LayerRef::from)
            .map_err(setup)
    }
}
