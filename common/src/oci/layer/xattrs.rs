//! Extended attributes via the l*/f* syscalls (never following symlinks).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Largest xattr value Linux allows (XATTR_SIZE_MAX).
pub(crate) const MAX_VALUE: usize = 64 * 1024;
const MAX_LIST: usize = 64 * 1024;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("path contains NUL"))
}

fn cname(n: &str) -> io::Result<CString> {
    CString::new(n).map_err(|_| io::Error::other("xattr name contains NUL"))
}

/// Names of `path`'s xattrs (not following a final symlink). Filesystems
/// without xattr support give an empty list.
pub(crate) fn list(path: &Path) -> io::Result<Vec<String>> {
    let p = cpath(path)?;
    let mut buf = vec![0u8; MAX_LIST];
    // SAFETY: `p` is a valid NUL-terminated string and `buf` is writable for
    // `buf.len()` bytes; the kernel writes at most that many.
    let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsStr::from_bytes(s).to_string_lossy().into_owned())
        .collect())
}

/// The value of xattr `name` on `path` (not following a final symlink).
pub(crate) fn get(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cpath(path)?;
    let n = cname(name)?;
    let mut buf = vec![0u8; MAX_VALUE];
    // SAFETY: valid C strings; `buf` is writable for `buf.len()` bytes.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

/// Sets xattr `name` on an open file.
pub(crate) fn fset(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: `fd` is a live descriptor, `n` a valid C string, and `value`
    // readable for `value.len()` bytes.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
