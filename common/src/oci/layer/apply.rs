//! Layer application: unpack a layer (gzip, zstd or plain tar, detected by
//! magic bytes) into a root directory, per the image spec "Applying
//! Changesets", treating the archive as hostile.
//!
//! - Paths are cleaned as if rooted at `/` ([`crate::path::tar_member`],
//!   containerd's rule): a leading
//!   `/` is dropped and `..` cannot climb above the root; such entries are
//!   counted in [`ApplyReport::neutralised_paths`].
//! - Every parent directory is resolved inside the root by the kernel
//!   (`openat2` + `RESOLVE_IN_ROOT`); see `fsops`. Symlinks in the image,
//!   absolute or relative, can never lead a write outside the root, and the
//!   final component is never followed.
//! - Hardlink targets must already exist inside the root, be reached
//!   without any symlink, and not be directories; otherwise
//!   [`LayerError::Unsafe`].
//! - Whiteouts: `.wh.<name>` removes `<name>`; `.wh..wh..opq` removes what
//!   the directory held before this layer (entries this layer created are
//!   kept); other `.wh..wh.*` names are ignored. Whiteout files themselves
//!   are never created.
//! - Device nodes follow [`DevicePolicy`] (rootless: skipped, counted, and
//!   warned about). Sockets and unknown types are skipped.
//! - Limits: path and link target 4096 bytes, PAX header 1 MiB, 1,000,000
//!   entries, and a total uncompressed size cap (64 GiB by default).
//! - [`ApplyOptions::only`] unpacks just the paths related to some
//!   prefixes (see `filter`); the result is the full unpack restricted to
//!   them, or [`LayerError::OutsideFilter`] when that cannot hold.
//! - On error, the root is left partially written; callers unpack into a
//!   fresh directory and discard it on failure.

use super::filter::PathFilter;
use super::fsops::{self, DirError, Root};
use super::tar_read::{Entry, EntryKind, Limits, TarReader};
use super::whiteout::{self, Marker};
use super::xattrs;
use super::IdMap;
use super::LayerError;
use crate::path::tar_member;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, futimens, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};
use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What to do with character and block device entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePolicy {
    /// Try `mknod`; if not permitted (rootless), skip with a warning.
    #[default]
    TryCreate,
    /// Never create device nodes (count and warn).
    Skip,
    /// Create them; failure is an error.
    Create,
}

/// Knobs and limits for [`apply`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Device node handling.
    pub devices: DevicePolicy,
    /// Apply the archive's uid/gid (`chown`). Defaults to true when the
    /// effective uid is 0 (real root, or root in a user namespace, where
    /// mapped ids work); failures are counted, not fatal.
    pub ownership: bool,
    /// Apply xattrs from the archive (best effort; failures are counted).
    pub xattrs: bool,
    /// Longest path or link target, in bytes.
    pub max_path: usize,
    /// Largest PAX header per entry, in bytes.
    pub max_pax: usize,
    /// Most entries.
    pub max_entries: u64,
    /// Largest total uncompressed tar stream, in bytes.
    pub max_uncompressed: u64,
    /// When applying for a rootless container from outside its user
    /// namespace (as real root): chown to the host ids that the archive's
    /// container ids map to. Unmapped ids count as ownership failures.
    pub id_map: Option<IdMap>,
    /// Unpack only what these clean relative prefixes need (`None`: the
    /// whole layer). An entry is applied when its path equals a prefix, is
    /// under one, or is an ancestor directory of one (so parents get their
    /// real modes and owners). A `.wh.<name>` whiteout applies when
    /// `<name>`'s path is so related, a `.wh..wh..opq` marker when its
    /// directory is; the image spec's "Applying Changesets" rules then give
    /// exactly the full unpack restricted to those paths. Other entries are
    /// skipped (counted in [`ApplyReport::filtered_out`]). A hardlink kept
    /// by the filter whose target is not fails with
    /// [`LayerError::OutsideFilter`]: unpack again without a filter. A
    /// prefix that is the root (`/`, `.`) disables the filter; an empty
    /// list keeps nothing.
    pub only: Option<Vec<String>>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            devices: DevicePolicy::TryCreate,
            ownership: nix::unistd::geteuid().is_root(),
            xattrs: true,
            max_path: 4096,
            max_pax: 1 << 20,
            max_entries: 1_000_000,
            max_uncompressed: 64 << 30,
            id_map: None,
            only: None,
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries read from the archive.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// FIFOs and device nodes created.
    pub specials: u64,
    /// `.wh.<name>` whiteouts applied.
    pub whiteouts: u64,
    /// `.wh..wh..opq` opaque markers applied.
    pub opaque_dirs: u64,
    /// Device nodes not created.
    pub devices_skipped: u64,
    /// Entries whose path had a leading `/` or `..` that was neutralised.
    pub neutralised_paths: u64,
    /// Entries of unsupported types (sockets, GNU sparse, ...), skipped.
    pub ignored_entries: u64,
    /// chown calls that failed (e.g. unmapped ids).
    pub ownership_failures: u64,
    /// xattrs that could not be set.
    pub xattr_failures: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries skipped by [`ApplyOptions::only`].
    pub filtered_out: u64,
    /// Human-readable warnings (the first 100).
    pub warnings: Vec<String>,
}

impl ApplyReport {
    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        if self.warnings.len() < 100 {
            self.warnings.push(msg);
        }
    }
}

/// Caps the bytes a reader yields (decompression bombs); `used` counts
/// them over every layer of one [`apply_all`].
struct Capped<'u, R> {
    inner: R,
    used: &'u Cell<u64>,
    max: u64,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.max.saturating_sub(self.used.get());
        if left == 0 {
            // Allow a clean EOF exactly at the cap.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "uncompressed layer exceeds the limit of {} bytes",
                    self.max
                ))),
            };
        }
        let want = (buf.len() as u64).min(left) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        self.used.set(self.used.get() + n as u64);
        Ok(n)
    }
}

fn decompressed<'a, R: Read + 'a>(
    reader: R,
    max: u64,
    used: &'a Cell<u64>,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    let inner = super::decompress::sniffed(reader)
        .map_err(|e| LayerError::BadArchive(format!("reading layer: {e}")))?;
    Ok(Box::new(BufReader::with_capacity(
        256 * 1024,
        Capped { inner, used, max },
    )))
}

fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path).chars().take(300).collect()
}

struct DirMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Applier<'a> {
    root: Root,
    root_path: &'a Path,
    opts: &'a ApplyOptions,
    filter: Option<PathFilter>,
    report: ApplyReport,
    created: HashSet<Vec<u8>>,
    dirs: BTreeMap<Vec<Vec<u8>>, DirMeta>,
    buf: Vec<u8>,
}

/// Unpacks the layer read from `reader` into `root` (which must exist).
pub fn apply<R: Read>(
    reader: R,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyReport, LayerError> {
    apply_all(std::iter::once(Ok(reader)), root, opts)
}

/// Unpacks several layers into `root`, in order, as one changeset (GNU
/// tar's `--ignore-zeros` over concatenated archives): each entry is
/// applied as [`apply`] would, directory modes, owners and mtimes are set
/// once after the last layer (so a read-only directory from one layer does
/// not block the next layer's files inside it), an opaque marker keeps what
/// any of them created, and [`ApplyOptions::max_entries`] and
/// [`ApplyOptions::max_uncompressed`] bound the total. The farm's build
/// context travels as such a sequence of chunks. Readers are taken one at
/// a time (open them lazily: one open file at a time); an `Err` stops the
/// application with that error.
pub fn apply_all<R: Read>(
    readers: impl IntoIterator<Item = Result<R, LayerError>>,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyReport, LayerError> {
    let root_fd = Root::open(root).map_err(|e| LayerError::io("open root", root, e.into()))?;
    let mut a = Applier {
        root: root_fd,
        root_path: root,
        opts,
        filter: opts.only.as_deref().and_then(PathFilter::new),
        report: ApplyReport::default(),
        created: HashSet::new(),
        dirs: BTreeMap::new(),
        buf: vec![0u8; 256 * 1024],
    };
    let used = Cell::new(0u64);
    for reader in readers {
        let stream = decompressed(reader?, opts.max_uncompressed, &used)?;
        let mut tar = TarReader::new(
            stream,
            Limits {
                max_path: opts.max_path,
                max_pax: opts.max_pax,
                max_entries: opts.max_entries,
            },
        );
        while let Some(entry) = tar.next_entry()? {
            a.report.entries += 1;
            if a.report.entries > opts.max_entries {
                return Err(LayerError::BadArchive(format!(
                    "more than {} entries in the layers applied together",
                    opts.max_entries
                )));
            }
            a.entry(entry, &mut tar)?;
        }
    }
    a.finish_dirs()?;
    Ok(a.report)
}

impl Applier<'_> {
    fn os_err(&self, op: &'static str, path: &[u8], e: Errno) -> LayerError {
        LayerError::io(op, self.root_path.join(OsStr::from_bytes(path)), e.into())
    }

    fn parent(
        &self,
        comps: &[Vec<u8>],
        create: bool,
        entry_path: &[u8],
    ) -> Result<Option<OwnedFd>, LayerError> {
        match self.root.dir(comps, create, false) {
            Ok(fd) => Ok(Some(fd)),
            Err(DirError::Missing) => Ok(None),
            Err(DirError::NotDir) => Err(LayerError::Unsafe {
                path: display(entry_path),
                reason: "a parent component is not a directory (or is a dangling symlink)".into(),
            }),
            Err(DirError::Symlink) => Err(LayerError::Unsafe {
                path: display(entry_path),
                reason: "a parent component is a symlink".into(),
            }),
            Err(DirError::Loop) => Err(LayerError::Unsafe {
                path: display(entry_path),
                reason: "its parent path is a symlink loop".into(),
            }),
            Err(DirError::Os(e)) => Err(self.os_err("resolve parent of", entry_path, e)),
        }
    }

    fn entry<R: Read>(&mut self, e: Entry, tar: &mut TarReader<R>) -> Result<(), LayerError> {
        let (comps, neutralised) = tar_member(&e.path);
        if neutralised {
            self.report.neutralised_paths += 1;
            self.report.warn(format!(
                "entry {:?}: leading '/' or '..' neutralised",
                display(&e.path)
            ));
        }
        let Some((name, parent)) = comps.split_last() else {
            // The root itself: nothing to create.
            return Ok(());
        };
        let marker = whiteout::classify(name);
        if !self.wanted(&comps, parent, &marker) {
            self.report.filtered_out += 1;
            return Ok(());
        }
        let rel = comps.join(&b'/');
        match marker {
            Marker::None => {}
            Marker::Opaque => return self.opaque(parent, &e.path),
            Marker::Remove(target) => {
                if let Some(dir) = self.parent(parent, false, &e.path)? {
                    fsops::remove_all_at(&dir, target, 0)
                        .map_err(|err| self.os_err("remove (whiteout)", &rel, err))?;
                }
                self.report.whiteouts += 1;
                return Ok(());
            }
            Marker::Reserved => {
                self.report.ignored_entries += 1;
                return Ok(());
            }
        }
        if let EntryKind::Other(t) = e.kind {
            self.report.ignored_entries += 1;
            self.report.warn(format!(
                "entry {:?}: unsupported tar type {:?} skipped",
                display(&e.path),
                t as char
            ));
            return Ok(());
        }
        let parent_fd = self
            .parent(parent, true, &e.path)?
            .ok_or_else(|| self.os_err("create parent of", &rel, Errno::ENOENT))?;
        let existing =
            fsops::lstat_at(&parent_fd, name).map_err(|err| self.os_err("stat", &rel, err))?;
        let existing_is_dir = existing.as_ref().is_some_and(fsops::is_dir);
        if existing.is_some() && !(e.kind == EntryKind::Dir && existing_is_dir) {
            // Replace whatever is there (a dir only by a dir: merge).
            fsops::remove_all_at(&parent_fd, name, 0)
                .map_err(|err| self.os_err("replace", &rel, err))?;
        }
        match e.kind {
            EntryKind::Dir => self.dir(&parent_fd, name, &comps, &e)?,
            EntryKind::Regular => self.file(&parent_fd, name, &rel, &e, tar)?,
            EntryKind::Symlink => self.symlink(&parent_fd, name, &rel, &e)?,
            EntryKind::Hardlink => self.hardlink(&parent_fd, name, &rel, &e)?,
            EntryKind::Char | EntryKind::Block | EntryKind::Fifo => {
                if !self.special(&parent_fd, name, &rel, &e)? {
                    return Ok(());
                }
            }
            EntryKind::Other(_) => return Ok(()),
        }
        // Remember the entry and its ancestors: a later opaque marker keeps
        // what this layer itself put there.
        for i in 1..comps.len() {
            self.created.insert(comps[..i].join(&b'/'));
        }
        self.created.insert(rel);
        Ok(())
    }

    /// Does [`ApplyOptions::only`] keep this entry (whiteouts by the path
    /// they remove, opaque markers by their directory)?
    fn wanted(&self, comps: &[Vec<u8>], parent: &[Vec<u8>], marker: &Marker<'_>) -> bool {
        let Some(f) = &self.filter else {
            return true;
        };
        match marker {
            Marker::Opaque => f.related(parent),
            Marker::Remove(target) => {
                let mut gone = parent.to_vec();
                gone.push(target.to_vec());
                f.related(&gone)
            }
            Marker::None | Marker::Reserved => f.related(comps),
        }
    }

    fn opaque(&mut self, parent: &[Vec<u8>], entry_path: &[u8]) -> Result<(), LayerError> {
        self.report.opaque_dirs += 1;
        let Some(dir) = self.parent(parent, false, entry_path)? else {
            return Ok(());
        };
        let prefix = parent.join(&b'/');
        let created = &self.created;
        let mut keep = |name: &[u8]| {
            let mut p = prefix.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            created.contains(&p)
        };
        fsops::clear_dir(&dir, 0, &mut keep)
            .map_err(|e| self.os_err("clear opaque directory", &prefix, e))
    }

    fn dir(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        comps: &[Vec<u8>],
        e: &Entry,
    ) -> Result<(), LayerError> {
        match nix::sys::stat::mkdirat(
            parent.as_fd(),
            OsStr::from_bytes(name),
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(err) => return Err(self.os_err("mkdir", &comps.join(&b'/'), err)),
        }
        self.report.dirs += 1;
        // Mode, owner, xattrs and mtime are set at the end, once children
        // exist (their creation would bump the mtime, and a read-only mode
        // would block them).
        self.dirs.insert(
            comps.to_vec(),
            DirMeta {
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime: e.mtime,
                xattrs: e.xattrs.clone(),
            },
        );
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        e: &Entry,
        tar: &mut TarReader<R>,
    ) -> Result<(), LayerError> {
        let fd = openat(
            parent.as_fd(),
            OsStr::from_bytes(name),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|err| self.os_err("create", rel, err))?;
        let mut file = File::from(fd);
        let mut data = tar.data();
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(LayerError::BadArchive(format!(
                        "reading {:?}: {err}",
                        display(rel)
                    )))
                }
            };
            file.write_all(&self.buf[..n]).map_err(|err| {
                LayerError::io("write", self.root_path.join(OsStr::from_bytes(rel)), err)
            })?;
            self.report.bytes += n as u64;
        }
        let fd: OwnedFd = file.into();
        self.chown_fd(&fd, e, rel);
        fchmod(fd.as_fd(), Mode::from_bits_truncate(e.mode))
            .map_err(|err| self.os_err("chmod", rel, err))?;
        self.set_xattrs_fd(&fd, &e.xattrs, rel);
        let t = TimeSpec::new(e.mtime, 0);
        futimens(fd.as_fd(), &t, &t).map_err(|err| self.os_err("set mtime of", rel, err))?;
        self.report.files += 1;
        Ok(())
    }

    fn symlink(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        e: &Entry,
    ) -> Result<(), LayerError> {
        if e.link.is_empty() {
            return Err(LayerError::Unsafe {
                path: display(&e.path),
                reason: "symlink with an empty target".into(),
            });
        }
        // The target is stored verbatim: it is only ever resolved inside
        // the root (here and by the container runtime).
        symlinkat(
            OsStr::from_bytes(&e.link),
            parent.as_fd(),
            OsStr::from_bytes(name),
        )
        .map_err(|err| self.os_err("symlink", rel, err))?;
        self.chown_at(parent, name, e, rel);
        let t = TimeSpec::new(e.mtime, 0);
        utimensat(
            parent.as_fd(),
            OsStr::from_bytes(name),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|err| self.os_err("set mtime of", rel, err))?;
        self.report.symlinks += 1;
        Ok(())
    }

    fn hardlink(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        e: &Entry,
    ) -> Result<(), LayerError> {
        let unsafe_link = |reason: &str| LayerError::Unsafe {
            path: display(&e.path),
            reason: format!("hardlink to {:?}: {reason}", display(&e.link)),
        };
        let (target, neutralised) = tar_member(&e.link);
        if neutralised {
            return Err(unsafe_link("target is absolute or climbs with '..'"));
        }
        let Some((tname, tparent)) = target.split_last() else {
            return Err(unsafe_link("target is the root"));
        };
        if self.filter.as_ref().is_some_and(|f| !f.related(&target)) {
            return Err(LayerError::OutsideFilter {
                path: display(&e.path),
                target: display(&e.link),
            });
        }
        let tdir = match self.root.dir(tparent, false, true) {
            Ok(fd) => fd,
            Err(DirError::Symlink) => {
                return Err(unsafe_link("target path goes through a symlink"))
            }
            Err(DirError::Missing | DirError::NotDir | DirError::Loop) => {
                return Err(unsafe_link("target does not exist in the layer's root"))
            }
            Err(DirError::Os(err)) => {
                return Err(self.os_err("resolve hardlink target", &e.link, err))
            }
        };
        match fsops::lstat_at(&tdir, tname) {
            Ok(Some(st)) if fsops::is_dir(&st) => return Err(unsafe_link("target is a directory")),
            Ok(Some(_)) => {}
            Ok(None) => return Err(unsafe_link("target does not exist in the layer's root")),
            Err(err) => return Err(self.os_err("stat hardlink target", &e.link, err)),
        }
        linkat(
            tdir.as_fd(),
            OsStr::from_bytes(tname),
            parent.as_fd(),
            OsStr::from_bytes(name),
            AtFlags::empty(),
        )
        .map_err(|err| self.os_err("hardlink", rel, err))?;
        self.report.hardlinks += 1;
        Ok(())
    }

    /// Creates a FIFO or device node. Returns false if it was skipped.
    fn special(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        e: &Entry,
    ) -> Result<bool, LayerError> {
        let kind = match e.kind {
            EntryKind::Char => SFlag::S_IFCHR,
            EntryKind::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let is_device = kind != SFlag::S_IFIFO;
        if is_device && self.opts.devices == DevicePolicy::Skip {
            self.skip_device(rel);
            return Ok(false);
        }
        let dev = if is_device {
            nix::sys::stat::makedev(u64::from(e.major), u64::from(e.minor))
        } else {
            0
        };
        match mknodat(
            parent.as_fd(),
            OsStr::from_bytes(name),
            kind,
            Mode::from_bits_truncate(e.mode & 0o777),
            dev,
        ) {
            Ok(()) => {}
            Err(Errno::EPERM | Errno::EACCES)
                if is_device && self.opts.devices == DevicePolicy::TryCreate =>
            {
                self.skip_device(rel);
                return Ok(false);
            }
            Err(err) => return Err(self.os_err("mknod", rel, err)),
        }
        self.chown_at(parent, name, e, rel);
        nix::sys::stat::fchmodat(
            parent.as_fd(),
            OsStr::from_bytes(name),
            Mode::from_bits_truncate(e.mode),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .map_err(|err| self.os_err("chmod", rel, err))?;
        let t = TimeSpec::new(e.mtime, 0);
        utimensat(
            parent.as_fd(),
            OsStr::from_bytes(name),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|err| self.os_err("set mtime of", rel, err))?;
        self.report.specials += 1;
        Ok(true)
    }

    fn skip_device(&mut self, rel: &[u8]) {
        self.report.devices_skipped += 1;
        self.report.warn(format!(
            "device node {:?} not created (not permitted here)",
            display(rel)
        ));
    }

    fn ids(&self, e_uid: u64, e_gid: u64) -> Option<(Uid, Gid)> {
        let (uid, gid) = (u32::try_from(e_uid).ok()?, u32::try_from(e_gid).ok()?);
        let (uid, gid) = match &self.opts.id_map {
            Some(m) => (m.uid_to_host(uid)?, m.gid_to_host(gid)?),
            None => (uid, gid),
        };
        Some((Uid::from_raw(uid), Gid::from_raw(gid)))
    }

    fn chown_failed(&mut self, rel: &[u8], err: Errno) {
        self.report.ownership_failures += 1;
        if self.report.ownership_failures == 1 {
            self.report.warn(format!(
                "chown {:?}: {err} (further failures only counted)",
                display(rel)
            ));
        }
    }

    fn chown_fd(&mut self, fd: &OwnedFd, e: &Entry, rel: &[u8]) {
        if !self.opts.ownership {
            return;
        }
        match self.ids(e.uid, e.gid) {
            Some((u, g)) => {
                if let Err(err) = fchown(fd.as_fd(), Some(u), Some(g)) {
                    self.chown_failed(rel, err);
                }
            }
            None => self.chown_failed(rel, Errno::EINVAL),
        }
    }

    fn chown_at(&mut self, parent: &OwnedFd, name: &[u8], e: &Entry, rel: &[u8]) {
        if !self.opts.ownership {
            return;
        }
        match self.ids(e.uid, e.gid) {
            Some((u, g)) => {
                if let Err(err) = fchownat(
                    parent.as_fd(),
                    OsStr::from_bytes(name),
                    Some(u),
                    Some(g),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    self.chown_failed(rel, err);
                }
            }
            None => self.chown_failed(rel, Errno::EINVAL),
        }
    }

    fn set_xattrs_fd(&mut self, fd: &OwnedFd, list: &[(String, Vec<u8>)], rel: &[u8]) {
        if !self.opts.xattrs {
            return;
        }
        for (name, value) in list {
            if whiteout::is_overlay_private_xattr(name) || value.len() > xattrs::MAX_VALUE {
                self.report.xattr_failures += 1;
                continue;
            }
            if let Err(err) = xattrs::fset(fd.as_fd(), name, value) {
                self.report.xattr_failures += 1;
                if self.report.xattr_failures == 1 {
                    self.report.warn(format!(
                        "xattr {name} on {:?}: {err} (further failures only counted)",
                        display(rel)
                    ));
                }
            }
        }
    }

    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        let dirs = std::mem::take(&mut self.dirs);
        // Deepest (lexically last) first, so a read-only parent never
        // blocks a child.
        for (comps, meta) in dirs.into_iter().rev() {
            let Some((name, parent)) = comps.split_last() else {
                continue;
            };
            let rel = comps.join(&b'/');
            let Some(parent_fd) = self.parent(parent, false, &rel)? else {
                continue; // removed by a later whiteout
            };
            let fd = match fsops::open_dir_nofollow(&parent_fd, name) {
                Ok(fd) => fd,
                // Replaced by a non-directory or removed later in the layer.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(err) => return Err(self.os_err("open directory", &rel, err)),
            };
            let e = Entry {
                path: rel.clone(),
                link: Vec::new(),
                kind: EntryKind::Dir,
                mode: meta.mode,
                uid: meta.uid,
                gid: meta.gid,
                mtime: meta.mtime,
                major: 0,
                minor: 0,
                xattrs: Vec::new(),
            };
            self.chown_fd(&fd, &e, &rel);
            fchmod(fd.as_fd(), Mode::from_bits_truncate(meta.mode))
                .map_err(|err| self.os_err("chmod", &rel, err))?;
            self.set_xattrs_fd(&fd, &meta.xattrs, &rel);
            let t = TimeSpec::new(meta.mtime, 0);
            futimens(fd.as_fd(), &t, &t).map_err(|err| self.os_err("set mtime of", &rel, err))?;
        }
        Ok(())
    }
}

/// Where [`apply`] would put an archive path (for callers' messages and
/// tests): the cleaned path under `root`.
pub fn target_path(root: &Path, archive_path: &[u8]) -> PathBuf {
    let (comps, _) = tar_member(archive_path);
    comps
        .iter()
        .fold(root.to_path_buf(), |p, c| p.join(OsStr::from_bytes(c)))
}
