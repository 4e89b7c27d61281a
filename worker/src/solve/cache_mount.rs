//! `RUN --mount=type=cache` directories, persisted per worker under
//! `<state>/cache/mounts/<sha256(id)>`, with BuildKit's `sharing` modes:
//!
//! - `shared` (default): concurrent steps use the same directory (a shared lock);
//! - `locked`: concurrent steps wait for each other (an exclusive lock);
//! - `private`: a step that finds the directory busy gets another one of its
//!   own (`<hex>-private-N`), so concurrent writers never meet.
//!
//! The lock is an flock(2) on a `.lock` file beside the directory, held by
//! the returned [`CacheLease`] until the step ends, so it also holds across
//! processes (two `imgfarm build`s sharing one state dir). A new directory
//! gets the mount's `mode` (BuildKit's default 0755).

use imgfarm_common::dockerfile::instructions::mount::CacheSharing;
use imgfarm_common::oci::Digest;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How many private copies one cache id may grow to before a step waits.
const MAX_PRIVATE_COPIES: usize = 64;

/// A cache directory held for the duration of one step.
#[derive(Debug)]
pub struct CacheLease {
    /// The host directory to mount.
    pub dir: PathBuf,
    _lock: Flock<File>,
}

/// Take the cache directory for `id` under `root` with `sharing`.
pub fn acquire(
    root: &Path,
    id: &str,
    sharing: CacheSharing,
    mode: Option<u32>,
) -> io::Result<CacheLease> {
    std::fs::create_dir_all(root)?;
    let base = Digest::sha256_of(id.as_bytes()).hex().to_string();
    match sharing {
        CacheSharing::Shared => take(root, &base, mode, FlockArg::LockShared),
        CacheSharing::Locked => take(root, &base, mode, FlockArg::LockExclusive),
        CacheSharing::Private => {
            for n in 0..MAX_PRIVATE_COPIES {
                let name = if n == 0 {
                    base.clone()
                } else {
                    format!("{base}-private-{n}")
                };
                match take(root, &name, mode, FlockArg::LockExclusiveNonblock) {
                    Ok(lease) => return Ok(lease),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            take(root, &base, mode, FlockArg::LockExclusive)
        }
    }
}

fn take(root: &Path, name: &str, mode: Option<u32>, how: FlockArg) -> io::Result<CacheLease> {
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(format!("{name}.lock")))?;
    let lock = Flock::lock(lock_file, how).map_err(|(_, errno)| io::Error::from(errno))?;
    let dir = root.join(name);
    if !dir.exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode.unwrap_or(0o755)))?;
    }
    Ok(CacheLease { dir, _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_steps_get_the_same_directory_at_once() {
        let t = tempfile::tempdir().unwrap();
        let a = acquire(t.path(), "go", CacheSharing::Shared, None).unwrap();
        let b = acquire(t.path(), "go", CacheSharing::Shared, None).unwrap();
        assert_eq!(a.dir, b.dir);
        let mode = std::fs::metadata(&a.dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn private_steps_get_their_own_directory_while_one_is_busy() {
        let t = tempfile::tempdir().unwrap();
        let a = acquire(t.path(), "apt", CacheSharing::Private, Some(0o700)).unwrap();
        let b = acquire(t.path(), "apt", CacheSharing::Private, None).unwrap();
        assert_ne!(a.dir, b.dir);
        let mode = std::fs::metadata(&a.dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        drop(a);
        let c = acquire(t.path(), "apt", CacheSharing::Private, None).unwrap();
        assert!(!c.dir.to_string_lossy().contains("private"), "{:?}", c.dir);
    }

    #[test]
    fn locked_steps_wait_for_each_other() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let first = acquire(&root, "x", CacheSharing::Locked, None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let r2 = root.clone();
        let h = std::thread::spawn(move || {
            let lease = acquire(&r2, "x", CacheSharing::Locked, None).unwrap();
            tx.send(lease.dir.clone()).unwrap();
        });
        // The second step is still waiting while the first holds the lock.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        let dir = first.dir.clone();
        drop(first);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap(),
            dir
        );
        h.join().unwrap();
    }
}
