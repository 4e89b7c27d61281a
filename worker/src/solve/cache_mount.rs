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
//! gets the mount's `mode`, `uid` and `gid` (BuildKit's defaults 0755, 0, 0:
//! "mode, uid, gid: for a new cache directory"); an existing one keeps what
//! earlier steps left, as BuildKit's does. The owner is a container id: the
//! caller runs as root of the build namespace (crate::userns), where
//! container ids are its own.

use imgfarm_common::graph::op::SharingMode;
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

/// Mode and owner of a new cache directory (`RUN --mount=type=cache,mode=,uid=,gid=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewDir {
    /// Permission bits (default 0755).
    pub mode: Option<u32>,
    /// Owner uid (default 0).
    pub uid: Option<u32>,
    /// Owner gid (default 0).
    pub gid: Option<u32>,
}

/// Take the cache directory for `id` under `root` with `sharing`.
pub fn acquire(root: &Path, id: &str, sharing: SharingMode, new: NewDir) -> io::Result<CacheLease> {
    std::fs::create_dir_all(root)?;
    let base = Digest::sha256_of(id.as_bytes()).hex().to_string();
    match sharing {
        SharingMode::Shared => take(root, &base, new, FlockArg::LockShared),
        SharingMode::Locked => take(root, &base, new, FlockArg::LockExclusive),
        SharingMode::Private => {
            for n in 0..MAX_PRIVATE_COPIES {
                let name = if n == 0 {
                    base.clone()
                } else {
                    format!("{base}-private-{n}")
                };
                match take(root, &name, new, FlockArg::LockExclusiveNonblock) {
                    Ok(lease) => return Ok(lease),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            take(root, &base, new, FlockArg::LockExclusive)
        }
    }
}

fn take(root: &Path, name: &str, new: NewDir, how: FlockArg) -> io::Result<CacheLease> {
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(format!("{name}.lock")))?;
    let lock = Flock::lock(lock_file, how).map_err(|(_, errno)| io::Error::from(errno))?;
    let dir = root.join(name);
    if !dir.exists() {
        // Made complete beside the final name, so a failed chown leaves nothing half-set.
        let tmp = root.join(format!(".{name}.new"));
        let _ = std::fs::remove_dir(&tmp);
        std::fs::create_dir(&tmp)?;
        std::fs::set_permissions(
            &tmp,
            std::fs::Permissions::from_mode(new.mode.unwrap_or(0o755)),
        )?;
        if new.uid.is_some_and(|u| u != 0) || new.gid.is_some_and(|g| g != 0) {
            let (uid, gid) = (new.uid.unwrap_or(0), new.gid.unwrap_or(0));
            if let Err(e) = std::os::unix::fs::lchown(&tmp, Some(uid), Some(gid)) {
                let _ = std::fs::remove_dir(&tmp);
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cache mount owner {uid}:{gid}: {e} (is the id inside the mapped \
                         range? see /etc/subuid and /etc/subgid)"
                    ),
                ));
            }
        }
        std::fs::rename(&tmp, &dir)?;
    }
    Ok(CacheLease { dir, _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(m: u32) -> NewDir {
        NewDir {
            mode: Some(m),
            ..NewDir::default()
        }
    }

    #[test]
    fn a_new_directory_gets_the_mounts_owner_and_an_old_one_keeps_its_own() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: cache owner test because it needs root (of a namespace)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let new = NewDir {
            mode: Some(0o700),
            uid: Some(100),
            gid: Some(101),
        };
        let a = acquire(t.path(), "apt", SharingMode::Locked, new).unwrap();
        let m = std::fs::metadata(&a.dir).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (100, 101, 0o700));
        drop(a);
        let b = acquire(t.path(), "apt", SharingMode::Locked, NewDir::default()).unwrap();
        let m = std::fs::metadata(&b.dir).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (100, 0o700));
    }

    #[test]
    fn shared_steps_get_the_same_directory_at_once() {
        let t = tempfile::tempdir().unwrap();
        let a = acquire(t.path(), "go", SharingMode::Shared, NewDir::default()).unwrap();
        let b = acquire(t.path(), "go", SharingMode::Shared, NewDir::default()).unwrap();
        assert_eq!(a.dir, b.dir);
        let mode = std::fs::metadata(&a.dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn private_steps_get_their_own_directory_while_one_is_busy() {
        let t = tempfile::tempdir().unwrap();
        let a = acquire(t.path(), "apt", SharingMode::Private, mode(0o700)).unwrap();
        let b = acquire(t.path(), "apt", SharingMode::Private, NewDir::default()).unwrap();
        assert_ne!(a.dir, b.dir);
        let mode = std::fs::metadata(&a.dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        drop(a);
        let c = acquire(t.path(), "apt", SharingMode::Private, NewDir::default()).unwrap();
        assert!(!c.dir.to_string_lossy().contains("private"), "{:?}", c.dir);
    }

    #[test]
    fn locked_steps_wait_for_each_other() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let first = acquire(&root, "x", SharingMode::Locked, NewDir::default()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let r2 = root.clone();
        let h = std::thread::spawn(move || {
            let lease = acquire(&r2, "x", SharingMode::Locked, NewDir::default()).unwrap();
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
