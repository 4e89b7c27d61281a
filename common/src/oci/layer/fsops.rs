//! Filesystem operations confined to a root directory.
//!
//! Every path from a layer is resolved with `openat2(2)` and
//! `RESOLVE_IN_ROOT`: the kernel treats the root as `/`, so `..` and
//! absolute symlinks (`etc -> /etc`) resolve inside it, atomically, with no
//! window for a swapped-in symlink. Only a directory fd is ever resolved
//! that way; the final component is then created, replaced or changed with
//! `*at` calls on that fd that never follow a symlink (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`, `O_EXCL`).

use crate::path::{self, AfterMissing, Node, ResolveError};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// A directory all operations are confined to.
pub(crate) struct Root {
    fd: OwnedFd,
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    if comps.is_empty() {
        return b".".to_vec();
    }
    comps.join(&b'/')
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Why resolving a directory failed.
#[derive(Debug)]
pub(crate) enum DirError {
    /// A component is missing (and `create` was false).
    Missing,
    /// A component is not a directory, or a dangling symlink.
    NotDir,
    /// `no_symlinks` was set and a symlink was met.
    Symlink,
    /// Too many symlinks (a loop).
    Loop,
    /// Some other OS error.
    Os(Errno),
}

impl Root {
    pub(crate) fn open(path: &Path) -> nix::Result<Self> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd })
    }

    fn resolve(&self, path: &[u8], flags: OFlag, no_symlinks: bool) -> nix::Result<OwnedFd> {
        let mut resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        if no_symlinks {
            resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
        }
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(resolve);
        let mut tries = 0;
        loop {
            match openat2(self.fd.as_fd(), os(path), how) {
                // EAGAIN: a concurrent rename raced the lookup; retry.
                Err(Errno::EAGAIN) if tries < 16 => tries += 1,
                other => return other,
            }
        }
    }

    /// Opens directory `comps` inside the root (as `O_PATH`). With
    /// `create`, missing directories are made (mode 0755) along the path as
    /// the root resolves it: a dangling in-image symlink `up -> ../x` makes
    /// `<root>/x` (containerd's rule), never anything outside.
    pub(crate) fn dir(
        &self,
        comps: &[Vec<u8>],
        create: bool,
        no_symlinks: bool,
    ) -> Result<OwnedFd, DirError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let classify = |e: Errno| match e {
            Errno::ENOENT => DirError::Missing,
            Errno::ENOTDIR => DirError::NotDir,
            Errno::ELOOP if no_symlinks => DirError::Symlink,
            Errno::ELOOP => DirError::Loop,
            e => DirError::Os(e),
        };
        match self.resolve(&join(comps), flags, no_symlinks) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {}
            Err(e) => return Err(classify(e)),
        }
        let resolved = if no_symlinks {
            comps.to_vec()
        } else {
            self.resolve_symlinks(comps).map_err(classify)?
        };
        // Walk the symlink-free path, creating what is missing. Each step
        // is still resolved by the kernel with RESOLVE_IN_ROOT and
        // RESOLVE_NO_SYMLINKS: a symlink raced in meanwhile fails (ELOOP)
        // instead of being followed.
        let mut current = self.resolve(b".", flags, true).map_err(DirError::Os)?;
        for i in 1..=resolved.len() {
            let prefix = join(&resolved[..i]);
            match self.resolve(&prefix, flags, true) {
                Ok(fd) => current = fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(
                        current.as_fd(),
                        os(&resolved[i - 1]),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(DirError::Os(e)),
                    }
                    current = self.resolve(&prefix, flags, true).map_err(classify)?;
                }
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(current)
    }

    /// Resolves symlinks in `comps` the way the kernel would with the root
    /// as `/` ([`path::resolve_in_root`]), stopping at the first missing
    /// component (the rest is kept as is; `missing/../x` fails with
    /// `ENOENT`, as the kernel would). The result contains no symlinks and
    /// no `..`; too many links is `ELOOP`.
    fn resolve_symlinks(&self, comps: &[Vec<u8>]) -> nix::Result<Vec<Vec<u8>>> {
        let read = |out: &[Vec<u8>], c: &[u8]| -> nix::Result<Node> {
            let parent = self.resolve(&join(out), OFlag::O_PATH | OFlag::O_DIRECTORY, true)?;
            let Some(st) = lstat_at(&parent, c)? else {
                return Ok(Node::Missing);
            };
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFLNK {
                return Ok(Node::Other);
            }
            let target = nix::fcntl::readlinkat(parent.as_fd(), os(c))?;
            Ok(Node::Link(target.into_vec()))
        };
        path::resolve_in_root(&join(comps), AfterMissing::Stop, read).map_err(|e| match e {
            ResolveError::TooManyLinks => Errno::ELOOP,
            ResolveError::DotDotAfterMissing => Errno::ENOENT,
            ResolveError::Read(e) => e,
        })
    }
}

/// `lstat` of `name` in `dir`, or `None` if absent.
pub(crate) fn lstat_at(dir: &OwnedFd, name: &[u8]) -> nix::Result<Option<FileStat>> {
    match fstatat(
        dir.as_fd(),
        os(name),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Removes `name` in `dir` and, if it is a directory, everything below it,
/// never following symlinks. Absent is fine.
pub(crate) fn remove_all_at(dir: &OwnedFd, name: &[u8], depth: usize) -> nix::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if !is_dir(&st) {
        return match unlinkat(dir.as_fd(), os(name), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        };
    }
    if depth > 4096 {
        return Err(Errno::ELOOP);
    }
    let child = open_dir_nofollow(dir, name)?;
    clear_dir(&child, depth + 1, &mut |_| false)?;
    match unlinkat(dir.as_fd(), os(name), UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens subdirectory `name` of `dir` for reading, refusing symlinks.
pub(crate) fn open_dir_nofollow(dir: &OwnedFd, name: &[u8]) -> nix::Result<OwnedFd> {
    openat(
        dir.as_fd(),
        os(name),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Removes every entry of directory `dir` for which `keep` is false.
pub(crate) fn clear_dir(
    dir: &OwnedFd,
    depth: usize,
    keep: &mut dyn FnMut(&[u8]) -> bool,
) -> nix::Result<()> {
    let readable = openat(
        dir.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut listing = nix::dir::Dir::from_fd(readable)?;
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || keep(name) {
            continue;
        }
        names.push(name.to_vec());
    }
    drop(listing);
    for name in names {
        remove_all_at(dir, &name, depth)?;
    }
    Ok(())
}
