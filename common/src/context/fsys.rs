//! Directory handles that never leave the context: every step opens a name
//! relative to an already-open directory with `O_NOFOLLOW`, so a symlink (or
//! a directory swapped for one while we walk) is never followed.

use nix::dir::Dir;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What an entry is, from `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawKind {
    File,
    Dir,
    Symlink,
    Fifo,
    /// Sockets and device nodes: not part of a build context.
    Other,
}

/// The `lstat` fields the context needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawStat {
    pub kind: RawKind,
    /// Permission bits with setuid/setgid/sticky (`mode & 0o7777`).
    pub perm: u32,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl RawStat {
    fn from_nix(st: &FileStat) -> Self {
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let kind = match fmt {
            SFlag::S_IFREG => RawKind::File,
            SFlag::S_IFDIR => RawKind::Dir,
            SFlag::S_IFLNK => RawKind::Symlink,
            SFlag::S_IFIFO => RawKind::Fifo,
            _ => RawKind::Other,
        };
        let ns = |sec: i64, nsec: i64| i128::from(sec) * 1_000_000_000 + i128::from(nsec);
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        RawStat {
            kind,
            perm: (st.st_mode as u32) & 0o7777,
            size: u64::try_from(st.st_size).unwrap_or(0),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

fn to_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// An open directory inside the context.
#[derive(Debug)]
pub(crate) struct DirHandle {
    fd: OwnedFd,
}

impl DirHandle {
    /// Opens the context root itself (the one path we follow as given).
    pub(crate) fn open_root(path: &Path) -> io::Result<Self> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(to_io)?;
        Ok(Self { fd })
    }

    /// Opens the child directory `name`; fails with `ELOOP`/`ENOTDIR` on a
    /// symlink or non-directory.
    pub(crate) fn open_dir(&self, name: &OsStr) -> io::Result<Self> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(self.fd.as_fd(), name, flags, Mode::empty()).map_err(to_io)?;
        Ok(Self { fd })
    }

    /// Walks `components` down from this directory, opening each with
    /// `O_NOFOLLOW`.
    pub(crate) fn open_path<'a>(
        &self,
        components: impl IntoIterator<Item = &'a str>,
    ) -> io::Result<Self> {
        let mut current = self.reopen()?;
        for c in components {
            current = current.open_dir(OsStr::new(c))?;
        }
        Ok(current)
    }

    /// A fresh handle on the same directory (own read position).
    fn reopen(&self) -> io::Result<Self> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(self.fd.as_fd(), ".", flags, Mode::empty()).map_err(to_io)?;
        Ok(Self { fd })
    }

    /// The names in this directory, without `.` and `..`, unsorted; stops
    /// after `max + 1` names so a huge directory can't exhaust memory (the
    /// caller's entry bound then fails).
    pub(crate) fn names(&self, max: usize) -> io::Result<Vec<OsString>> {
        let handle = self.reopen()?;
        let mut dir = Dir::from_fd(handle.fd).map_err(to_io)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            if names.len() > max {
                break;
            }
            let entry = entry.map_err(to_io)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(names)
    }

    /// `lstat` of the child `name`.
    pub(crate) fn lstat(&self, name: &OsStr) -> io::Result<RawStat> {
        let st = fstatat(
            self.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(to_io)?;
        Ok(RawStat::from_nix(&st))
    }

    /// `stat` of this directory.
    pub(crate) fn stat_self(&self) -> io::Result<RawStat> {
        let st = fstat(self.fd.as_fd()).map_err(to_io)?;
        Ok(RawStat::from_nix(&st))
    }

    /// The target of the symlink `name`, verbatim.
    pub(crate) fn readlink(&self, name: &OsStr) -> io::Result<OsString> {
        readlinkat(self.fd.as_fd(), name).map_err(to_io)
    }

    /// Opens the regular file `name` for reading. `O_NOFOLLOW` refuses a
    /// symlink, `O_NONBLOCK` keeps a FIFO swapped in from blocking us, and
    /// the caller compares the returned stat with the walk's.
    pub(crate) fn open_file(&self, name: &OsStr) -> io::Result<(File, RawStat)> {
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY;
        let fd = openat(self.fd.as_fd(), name, flags, Mode::empty()).map_err(to_io)?;
        let st = fstat(fd.as_fd()).map_err(to_io)?;
        Ok((File::from(fd), RawStat::from_nix(&st)))
    }
}
