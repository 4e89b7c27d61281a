//! The snapshotter: unpacked layers kept across builds, in the manner of
//! containerd's overlayfs snapshotter, under `<state>/snapshots`.
//!
//! - **Committed** snapshots are named by the chain id of the stack they
//!   complete ([`chain::chain_ids`]): `<hex>/fs` holds one layer's changes in
//!   overlayfs upper form (whiteouts as 0/0 character devices, opaque
//!   directories by `user.overlay.opaque`), so the snapshots of a chain,
//!   stacked as lower dirs, are its filesystem. Each layer is unpacked once,
//!   by whichever build, stage or worker slot needs it first (a per-chain
//!   flock makes the others wait instead of unpacking it again), and shared
//!   read-only by every step above it.
//! - **Active** snapshots (`active/<name>/`) are being written: an unpack in
//!   progress, or a RUN's upper dir. A finished one becomes committed by one
//!   `rename(2)` of a directory holding `fs` (and `size`) to `<hex>`, so a
//!   crash leaves only an active dir, which is never used as a lower and is
//!   removed by the next process that opens the snapshotter alone (or by
//!   `prune`). A RUN's upper is committed when its layer is kept, so the next
//!   step stacks on it without unpacking its blob.
//! - **Long chains** are flattened: overlayfs takes at most 500 lower dirs
//!   and one page of mount options (~50 of our paths), so a chain longer than
//!   [`MAX_LOWERS`] gets its bottom part applied into one `flat-<hex>` dir
//!   (named by that part's chain id, so later steps reuse it).
//! - **Copies** where overlayfs cannot be mounted in a user namespace (kernels
//!   before 5.11, some nested containers), or with `IMGFARM_SNAPSHOTTER=copy`:
//!   as containerd's native snapshotter, `copy-<hex>/fs` is the whole tree of
//!   its chain (the parent's copied with `cp -a --reflink=auto`, the layer
//!   applied on top), a RUN works on a private copy, and its layer is the
//!   difference from the parent (common::oci::layer::create with `base`).
//!   Slower and bigger; said once per process.
//! - **Leases**: every process that uses the snapshots holds a shared flock on
//!   `lease.lock` for as long as it may read them; the collector
//!   ([`collect`]) needs it exclusively, so it never removes a snapshot under
//!   a running build or worker.

pub mod chain;
pub mod collect;

use crate::executor::Executor;
use imgfarm_common::farm::result::LayerRef;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Most lower dirs given to one overlay mount; longer chains are flattened.
/// With `snapshots/<64 hex>/fs` paths (78 bytes relative) 40 of them keep
/// the mount options well inside the kernel's one page.
pub const MAX_LOWERS: usize = 40;
/// Flattened prefixes are multiples of this many layers (so a growing chain
/// reuses the same flat snapshot for this many steps).
const FLATTEN_STEP: usize = 20;

/// Why a snapshot could not be prepared, committed or collected.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotterError {
    /// Filesystem trouble in the snapshot dir.
    #[error("snapshots: {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A layer could not be read or unpacked.
    #[error("snapshots: unpacking layer {digest}: {reason}")]
    Unpack {
        /// The layer blob.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// Removing a tree failed.
    #[error("snapshots: removing {}: {reason}", path.display())]
    Remove {
        /// The tree.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Copying a tree (copy mode) failed.
    #[error("snapshots: copying {}: {reason}", from.display())]
    Copy {
        /// The tree copied.
        from: PathBuf,
        /// What cp said.
        reason: String,
    },
    /// The collector needs every lease released.
    #[error(
        "the snapshots in {} are in use by a running build or worker on this state; \
         prune again once it has finished",
        root.display()
    )]
    Busy {
        /// The snapshot dir.
        root: PathBuf,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotterError {
    let path = path.to_path_buf();
    move |source| SnapshotterError::Io { what, path, source }
}

/// The snapshot dir of a state dir.
pub fn root_of(state: &Path) -> PathBuf {
    state.join("snapshots")
}

/// How snapshots are stacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Per-layer dirs stacked as overlayfs lower dirs.
    Overlay,
    /// Whole trees copied (no overlayfs).
    Copy,
}

/// An open snapshot dir, holding a shared lease on it.
#[derive(Debug)]
pub struct Snapshotter {
    root: PathBuf,
    exec: Executor,
    mode: Mode,
    _lease: Flock<File>,
}

/// A snapshot being written (an unpack or a RUN's upper dir), under
/// `active/`. [`Snapshotter::commit`] makes it visible; dropping it without
/// commit leaves it for [`Snapshotter::remove`].
#[derive(Debug)]
pub struct Active {
    dir: PathBuf,
}

impl Active {
    /// The whole private dir (the RUN keeps its scratch files here too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Where the changes go (the overlay upper dir).
    pub fn upper(&self) -> PathBuf {
        self.dir.join("snap").join("fs")
    }
    /// The overlay work dir (same filesystem as the upper dir).
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
}

/// What `lowers` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// Layers unpacked by this call (0 when every snapshot was committed).
    pub unpacked: usize,
}

/// A shared lease on the snapshots of `state`, for a process that reads
/// committed snapshots without preparing any (a COPY from a stage): the
/// collector leaves them alone while it is held.
pub fn shared_lease(state: &Path) -> Result<Flock<File>, SnapshotterError> {
    let root = root_of(state);
    std::fs::create_dir_all(&root).map_err(io("creating", &root))?;
    Flock::lock(lease_file(&root)?, FlockArg::LockShared)
        .map_err(|(_, e)| io("locking", &root)(e.into()))
}

/// The files of the committed overlay snapshot of the chain whose id is
/// `chain_id` (its top layer's changes), if it is committed under `state`.
pub fn committed_layer_dir(state: &Path, chain_id: &Digest) -> Option<PathBuf> {
    let fs = root_of(state).join(chain_id.hex()).join("fs");
    fs.is_dir().then_some(fs)
}

fn lease_file(root: &Path) -> Result<File, SnapshotterError> {
    let p = root.join("lease.lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io("opening", &p))
}

impl Snapshotter {
    /// Opens (creating) the snapshot dir of `state` and takes a shared
    /// lease. When no other process holds one, active dirs left by a crash
    /// are removed first.
    pub fn open(state: &Path, exec: Executor) -> Result<Self, SnapshotterError> {
        let root = root_of(state);
        for d in [root.join("active"), root.join("locks")] {
            std::fs::create_dir_all(&d).map_err(io("creating", &d))?;
        }
        let f = lease_file(&root)?;
        let lease = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(excl) => {
                remove_children(&exec, &root.join("active"))?;
                excl.relock(FlockArg::LockShared)
                    .map_err(|e| io("locking", &root)(e.into()))?;
                excl
            }
            Err((f, _)) => Flock::lock(f, FlockArg::LockShared)
                .map_err(|(_, e)| io("locking", &root)(e.into()))?,
        };
        let mode = choose_mode(&exec, &root)?;
        Ok(Self {
            root,
            exec,
            mode,
            _lease: lease,
        })
    }

    /// The snapshot dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How this snapshotter stacks layers.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn committed(&self, name: &str) -> PathBuf {
        self.root.join(name).join("fs")
    }

    /// The lower dirs (bottom first) whose overlay is the filesystem of
    /// `chain`, unpacking every layer that has no committed snapshot yet.
    /// `on_unpack` runs beside each unpack (on another thread), e.g. to index
    /// the layer while its blob is being read anyway.
    pub fn lowers(
        &self,
        store: &ContentStore,
        chain: &[LayerRef],
        on_unpack: &(dyn Fn(&LayerRef) + Sync),
    ) -> Result<(Vec<PathBuf>, Prepared), SnapshotterError> {
        let ids = chain::chain_ids(chain.iter().map(|l| &l.diff_id));
        let mut out: Vec<PathBuf> = Vec::new();
        let mut prepared = Prepared::default();
        if self.mode == Mode::Copy {
            if let Some(full) = self.copies(store, chain, &ids, &mut prepared)? {
                out.push(full);
            }
            return Ok((out, prepared));
        }
        let k = flat_prefix_len(chain.len());
        if k > 0 {
            out.push(self.flat(store, &chain[..k], &ids[k - 1], &mut prepared)?);
        }
        for i in k..chain.len() {
            let name = ids[i].hex().to_string();
            let fs = self.committed(&name);
            if !fs.is_dir() {
                self.make(&name, &mut prepared, |exec, active| {
                    unpack_into(exec, store, &chain[i], active, &out, on_unpack).map(Some)
                })?;
            }
            out.push(fs);
        }
        Ok((out, prepared))
    }

    /// Copy mode: `copy-<hex>` for the whole of `chain` (`None` for an empty
    /// chain), made from the longest committed prefix.
    fn copies(
        &self,
        store: &ContentStore,
        chain: &[LayerRef],
        ids: &[Digest],
        prepared: &mut Prepared,
    ) -> Result<Option<PathBuf>, SnapshotterError> {
        let name = |i: usize| format!("copy-{}", ids[i].hex());
        let start = (0..chain.len())
            .rev()
            .find(|&i| self.committed(&name(i)).is_dir())
            .map_or(0, |i| i + 1);
        for (i, layer) in chain.iter().enumerate().skip(start) {
            let parent = i.checked_sub(1).map(|p| self.committed(&name(p)));
            self.make(&name(i), prepared, |exec, active| {
                if let Some(p) = &parent {
                    copy_tree(p, &active.upper())?;
                }
                // The whole tree is the snapshot: its size is not the layer's.
                unpack_into(exec, store, layer, active, &[], &|_| {}).map(|_| None)
            })?;
        }
        Ok(chain.len().checked_sub(1).map(|i| self.committed(&name(i))))
    }

    /// Copy mode: the name a committed chain id gets (`copy-<hex>`); overlay
    /// mode: the hex itself.
    pub fn name_for(&self, chain_id: &Digest) -> String {
        match self.mode {
            Mode::Overlay => chain_id.hex().to_string(),
            Mode::Copy => format!("copy-{}", chain_id.hex()),
        }
    }

    /// `flat-<hex>`: the layers of `chain` applied into one dir.
    fn flat(
        &self,
        store: &ContentStore,
        chain: &[LayerRef],
        id: &Digest,
        prepared: &mut Prepared,
    ) -> Result<PathBuf, SnapshotterError> {
        let name = format!("flat-{}", id.hex());
        let fs = self.committed(&name);
        if !fs.is_dir() {
            self.make(&name, prepared, |exec, active| {
                for l in chain {
                    unpack_into(exec, store, l, active, &[], &|_| {})?;
                }
                Ok(None)
            })?;
        }
        Ok(fs)
    }

    /// Makes committed snapshot `name` with `fill` (which writes the active
    /// snapshot's upper dir and returns its size when it knows it), unless
    /// another thread or process made it while we waited for its lock.
    fn make(
        &self,
        name: &str,
        prepared: &mut Prepared,
        fill: impl FnOnce(&Executor, &Active) -> Result<Option<u64>, SnapshotterError>,
    ) -> Result<(), SnapshotterError> {
        let _lock = self.chain_lock(name)?;
        if self.committed(name).is_dir() {
            return Ok(());
        }
        let t = Instant::now();
        let active = self.prepare("unpack-")?;
        let result =
            fill(&self.exec, &active).and_then(|size| self.commit_sized(&active, name, size));
        self.remove(active)?;
        result?;
        prepared.unpacked += 1;
        tracing::info!(
            snapshot = name,
            ms = t.elapsed().as_millis() as u64,
            "unpacked"
        );
        Ok(())
    }

    /// An exclusive flock on `locks/<name>.lock`, held while that snapshot is
    /// checked and made (one per open file description, so threads of one
    /// process exclude each other too).
    fn chain_lock(&self, name: &str) -> Result<Flock<File>, SnapshotterError> {
        let p = self.root.join("locks").join(format!("{name}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io("opening", &p))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io("locking", &p)(e.into()))
    }

    /// A new active snapshot: `upper()` and `work()` exist and are empty.
    pub fn prepare(&self, prefix: &str) -> Result<Active, SnapshotterError> {
        let parent = self.root.join("active");
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&parent)
            .map_err(io("creating in", &parent))?
            .keep();
        let active = Active { dir };
        for d in [active.upper(), active.work()] {
            std::fs::create_dir_all(&d).map_err(io("creating", &d))?;
        }
        Ok(active)
    }

    /// Commits `active`'s upper dir as snapshot `name` (a chain id's hex):
    /// one rename, so it appears whole or not at all. When another build
    /// committed the same chain first, theirs stays and ours is dropped with
    /// the active dir.
    pub fn commit(&self, active: &Active, name: &str) -> Result<(), SnapshotterError> {
        self.commit_sized(active, name, None)
    }

    /// [`Self::commit`] with the bytes of its files when known (an unpack
    /// counts them); else they are counted here.
    fn commit_sized(
        &self,
        active: &Active,
        name: &str,
        size: Option<u64>,
    ) -> Result<(), SnapshotterError> {
        let snap = active.dir().join("snap");
        let size = size.unwrap_or_else(|| tree_bytes(&snap.join("fs")));
        let size_file = snap.join("size");
        std::fs::write(&size_file, size.to_string()).map_err(io("writing", &size_file))?;
        let dest = self.root.join(name);
        match std::fs::rename(&snap, &dest) {
            Ok(()) => Ok(()),
            Err(e) if dest.join("fs").is_dir() => {
                tracing::debug!(snapshot = name, "committed concurrently elsewhere ({e})");
                Ok(())
            }
            Err(e) => Err(io("committing", &dest)(e)),
        }
    }

    /// Removes an active snapshot (committed or not).
    pub fn remove(&self, active: Active) -> Result<(), SnapshotterError> {
        self.remove_tree(&active.dir)
    }

    fn remove_tree(&self, path: &Path) -> Result<(), SnapshotterError> {
        self.exec
            .remove_tree(path)
            .map_err(|e| SnapshotterError::Remove {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }
}

/// `IMGFARM_SNAPSHOTTER` (`overlay` or `copy`), else whether an overlay
/// mounts in a user namespace here (probed once per state dir and kernel
/// release, remembered in `overlay-works`; a refusal is probed each process and
/// said once, with the kernel's reason).
fn choose_mode(exec: &Executor, root: &Path) -> Result<Mode, SnapshotterError> {
    match std::env::var("IMGFARM_SNAPSHOTTER").as_deref() {
        Ok("copy") => {
            tracing::warn!("IMGFARM_SNAPSHOTTER=copy: snapshots are whole copies, not overlays");
            return Ok(Mode::Copy);
        }
        Ok("overlay") => return Ok(Mode::Overlay),
        Ok(other) if !other.is_empty() => {
            tracing::warn!("IMGFARM_SNAPSHOTTER={other:?} is not overlay or copy: ignored");
        }
        _ => {}
    }
    // A probe that passed is remembered for this kernel (a new kernel probes again).
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let proven = root.join("overlay-works");
    if !release.is_empty() && std::fs::read_to_string(&proven).is_ok_and(|r| r == release) {
        return Ok(Mode::Overlay);
    }
    let probe = tempfile::Builder::new()
        .prefix("probe-")
        .tempdir_in(root.join("active"))
        .map_err(io("creating in", &root.join("active")))?;
    let (lower, dest, scratch) = (
        probe.path().join("lower"),
        probe.path().join("upper"),
        probe.path().join("scratch"),
    );
    for d in [&lower, &dest, &scratch] {
        std::fs::create_dir_all(d).map_err(io("creating", d))?;
    }
    // An empty tar (two zero blocks) applied through an overlay of one lower dir.
    let mut empty: &[u8] = &[0u8; 1024];
    let result = exec.unpack_layer(&mut empty, &dest, &[lower], &scratch);
    let removed = exec.remove_tree(probe.path());
    drop(probe);
    if let Err(e) = removed {
        tracing::debug!("removing the overlay probe: {e}");
    }
    match result {
        Ok(_) => {
            if let Err(e) = std::fs::write(&proven, &release) {
                tracing::debug!("recording the overlay probe: {e}");
            }
            Ok(Mode::Overlay)
        }
        Err(e) => {
            tracing::warn!(
                "overlayfs cannot be mounted in a user namespace here ({e}): snapshots are \
                 whole copies (slower, more disk); a kernel of 5.11 or later avoids this"
            );
            Ok(Mode::Copy)
        }
    }
}

/// `cp -a --reflink=auto FROM/. TO` (owners, modes, xattrs, links and times
/// kept; shared extents where the filesystem has them): copy snapshots, and
/// a RUN's private tree in copy mode. Runs as root of the build namespace,
/// where every owner is mapped.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), SnapshotterError> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(from.join("."))
        .arg(to)
        .output()
        .map_err(io("running cp for", to))?;
    if out.status.success() {
        return Ok(());
    }
    Err(SnapshotterError::Copy {
        from: from.to_path_buf(),
        reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Removes every entry of `dir` (as the executor removes build trees).
fn remove_children(exec: &Executor, dir: &Path) -> Result<(), SnapshotterError> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        exec.remove_tree(&e.path())
            .map_err(|err| SnapshotterError::Remove {
                path: e.path(),
                reason: err.to_string(),
            })?;
    }
    Ok(())
}

/// Unpacks `l` into `active`'s upper dir above `parents` (its overlay
/// scratch space in the active dir), running `on_unpack` beside it; returns
/// the bytes of file content written.
fn unpack_into(
    exec: &Executor,
    store: &ContentStore,
    l: &LayerRef,
    active: &Active,
    parents: &[PathBuf],
    on_unpack: &(dyn Fn(&LayerRef) + Sync),
) -> Result<u64, SnapshotterError> {
    let fail = |reason: String| SnapshotterError::Unpack {
        digest: l.digest.clone(),
        reason,
    };
    let fs = active.upper();
    let scratch = active.dir().join("scratch");
    std::fs::create_dir_all(&scratch).map_err(io("creating", &scratch))?;
    let mut blob = store
        .open_blob(&l.digest)
        .map_err(|e| fail(e.to_string()))?;
    std::thread::scope(|s| {
        s.spawn(|| on_unpack(l));
        exec.unpack_layer(&mut blob, &fs, parents, &scratch)
            .map(|r| r.bytes)
            .map_err(|e| fail(e.to_string()))
    })
}

/// How many bottom layers of a chain of `n` are flattened into one lower
/// dir: none up to [`MAX_LOWERS`]; else a multiple of [`FLATTEN_STEP`] that
/// leaves fewer than `2 * FLATTEN_STEP` layers above it.
pub fn flat_prefix_len(n: usize) -> usize {
    if n <= MAX_LOWERS {
        0
    } else {
        (n - FLATTEN_STEP) / FLATTEN_STEP * FLATTEN_STEP
    }
}

/// Bytes of regular files under `dir` (what `du` reports for a snapshot;
/// directories and metadata are not counted).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattening_keeps_every_mount_under_the_limit() {
        for n in 0..=2000 {
            let k = flat_prefix_len(n);
            let lowers = usize::from(k > 0) + (n - k);
            assert!(lowers <= MAX_LOWERS, "{n} layers give {lowers} lowers");
            assert_eq!(k % FLATTEN_STEP, 0);
        }
        assert_eq!(flat_prefix_len(MAX_LOWERS), 0);
        // A growing chain reuses one flat prefix for FLATTEN_STEP steps.
        assert_eq!(flat_prefix_len(41), flat_prefix_len(59));
    }
}
