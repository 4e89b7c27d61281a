//! The build namespace: one long-lived user namespace that a rootless imgfarm process enters
//! once, first thing in `main`, so that every piece of file code on build trees (unpacking
//! layers, turning a RUN's upper dir into a layer, cache mounts, stage views, exports,
//! deleting state) runs as namespace root over the mapped ids, and mode bits never stop the
//! builder itself (user_namespaces(7): root of a namespace has CAP_DAC_OVERRIDE,
//! CAP_DAC_READ_SEARCH, CAP_FOWNER and CAP_CHOWN over every inode whose owner and group are
//! mapped in it).
//!
//! The shape is rootlesskit's and buildah's `unshare`, without the re-exec: the process
//! stays the same pid (operators and tests stop it by that pid), forks a small child *before*
//! unsharing, unshares `CLONE_NEWUSER` itself, and the child (still outside, where the
//! setuid `newuidmap`/`newgidmap` work) writes the maps of its parent:
//! `0 → uid`, `1..=65536 → the user's /etc/subuid range` (and the same for gids), as
//! rootless BuildKit, podman and buildah map. Without a range (or the tools) the process maps
//! only itself (`0 → uid`) and says so once: `chown` to other ids then fails.
//!
//! Real root does not enter: it already has those powers, and every step's namespace maps
//! the whole id range to itself ([`crate::idmap::IdMapping::Identity`]).
//!
//! Inside, the process is uid 0 of its namespace; [`crate::idmap::detect`] then picks the
//! identity mapping, so a step's container ids are the process's ids and nothing in a build
//! tree needs translating. Files the process creates belong to the user on the host.

use crate::idmap::{self, IdMapping};
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Uid};
use std::io::{Read, Write};
use std::sync::OnceLock;

/// Where the process stands after [`enter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Real root (or already root of a user namespace made by someone else): nothing done.
    Root,
    /// Entered a new user namespace with the full subordinate mapping.
    Entered,
    /// Entered with only the user itself mapped; the text says why and what fails.
    EnteredSingle(String),
    /// Could not enter (user namespaces refused); file code runs as the plain user.
    NotEntered(String),
}

static STANDING: OnceLock<Standing> = OnceLock::new();

/// What a refused `unshare(CLONE_NEWUSER)` names: the kernel setting, or, in a container (a
/// Kubernetes pod), the runtime's default seccomp profile (and AppArmor's), which refuse it
/// to processes without CAP_SYS_ADMIN.
pub const UNSHARE_REFUSED: &str = "unshare(CLONE_NEWUSER) (are unprivileged user namespaces \
enabled? In a container, the seccomp and AppArmor profiles must allow it: run it with both \
unconfined, e.g. docker run --security-opt seccomp=unconfined --security-opt \
apparmor=unconfined)";

/// Why entering failed before anything changed.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The process has more than one thread.
    #[error("the build namespace must be entered before any thread starts")]
    Threaded,
    /// A syscall failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was attempted.
        what: &'static str,
        /// The error.
        source: nix::Error,
    },
}

/// Whether this process is in a build namespace it entered itself (rootless): files it
/// writes with container owners other than root belong to subordinate ids on the host, so
/// outputs meant for the user (`-o type=local`) must not take them.
pub fn is_rootless_namespace() -> bool {
    matches!(
        STANDING.get(),
        Some(Standing::Entered | Standing::EnteredSingle(_))
    )
}

/// Whether this process can read every file of a build tree in place (snapshots hold
/// files of any container owner and mode): as root of a fully mapped build namespace,
/// or as real root. Not with a single-id mapping, where other owners are unmapped.
pub fn reads_build_trees() -> bool {
    matches!(STANDING.get(), Some(Standing::Entered))
        || (Uid::effective().is_root() && !is_rootless_namespace())
}

/// Whether files written for the user (`-o type=local`) take the image's owners: only for
/// real root, as BuildKit's client writes them (never subordinate ids the user can't remove).
pub fn outputs_keep_owners() -> bool {
    Uid::effective().is_root() && !is_rootless_namespace()
}

/// The warning to show for a degraded standing (single-id mapping, or no namespace).
pub fn warning() -> Option<&'static str> {
    match STANDING.get()? {
        Standing::EnteredSingle(w) | Standing::NotEntered(w) => Some(w.as_str()),
        _ => None,
    }
}

/// Enter the build namespace (see the module docs). Call first thing in `main`, before any
/// thread is started; a second call returns the first result. Entering is best effort:
/// when the kernel refuses user namespaces the process goes on as it is
/// ([`Standing::NotEntered`]) and steps fail later with the kernel's reason.
pub fn enter() -> Result<&'static Standing, UsernsError> {
    if let Some(s) = STANDING.get() {
        return Ok(s);
    }
    let s = if Uid::current().is_root() {
        Standing::Root
    } else {
        if thread_count() > 1 {
            return Err(UsernsError::Threaded);
        }
        enter_new()?
    };
    Ok(STANDING.get_or_init(|| s))
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

fn enter_new() -> Result<Standing, UsernsError> {
    let uid = Uid::current().as_raw();
    let gid = Gid::current().as_raw();
    let (mapping, why) = idmap::detect();
    let standing = match mapping {
        IdMapping::Full { .. } => match map_by_helper(&mapping)? {
            Ok(()) => Standing::Entered,
            Err(e) => {
                // The namespace exists but is unmapped: map ourselves.
                if let Err(e2) = map_self(uid, gid) {
                    return Ok(Standing::NotEntered(format!(
                        "{e}; mapping only the user failed too: {e2}"
                    )));
                }
                Standing::EnteredSingle(format!(
                    "{e}: only container root is mapped, so chown to any other id will fail"
                ))
            }
        },
        _ => {
            let why = why.map_or_else(
                || "single-id user namespace mapping".to_string(),
                |w| w.to_string(),
            );
            if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
                return Ok(Standing::NotEntered(format!("{UNSHARE_REFUSED}: {e}")));
            }
            if let Err(e) = map_self(uid, gid) {
                return Ok(Standing::NotEntered(e));
            }
            Standing::EnteredSingle(why)
        }
    };
    become_root()?;
    Ok(standing)
}

/// Fork a child that waits until this process has unshared its user namespace, then maps
/// it with newuidmap/newgidmap. The outer `Err` is a failure before unsharing (nothing
/// changed); the inner one a failed map (the namespace exists, unmapped).
fn map_by_helper(mapping: &IdMapping) -> Result<Result<(), String>, UsernsError> {
    let sys = |what| move |source| UsernsError::Sys { what, source };
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(sys("pipe"))?;
    let (err_r, err_w) = nix::unistd::pipe().map_err(sys("pipe"))?;
    let parent = nix::unistd::getpid();
    // SAFETY: the process is single-threaded (checked by the caller), so the child may run
    // any code, including spawning the map tools.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(ready_w);
            drop(err_r);
            let mut b = [0u8; 1];
            let code = match std::fs::File::from(ready_r).read_exact(&mut b) {
                // The parent gave up before unsharing.
                Err(_) => 0,
                Ok(()) => match mapping.write_maps(parent.as_raw()) {
                    Ok(()) => 0,
                    Err(e) => {
                        let _ = std::fs::File::from(err_w).write_all(e.as_bytes());
                        1
                    }
                },
            };
            // SAFETY: leave the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(ready_r);
            drop(err_w);
            if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
                drop(ready_w);
                let _ = waitpid(child, None);
                return Err(UsernsError::Sys {
                    what: UNSHARE_REFUSED,
                    source: e,
                });
            }
            let _ = std::fs::File::from(ready_w).write_all(b"G");
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r)
                .take(4096)
                .read_to_string(&mut msg);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            Ok(match status {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                other if msg.is_empty() => Err(format!("mapping the user namespace: {other:?}")),
                _ => Err(msg),
            })
        }
    }
}

/// Map only the user (`0 → uid`), as an unprivileged process may for itself (setgroups
/// denied first, user_namespaces(7)).
fn map_self(uid: u32, gid: u32) -> Result<(), String> {
    let w = |f: &str, s: String| std::fs::write(f, s).map_err(|e| format!("writing {f}: {e}"));
    w("/proc/self/setgroups", "deny".into())?;
    w("/proc/self/uid_map", format!("0 {uid} 1\n"))?;
    w("/proc/self/gid_map", format!("0 {gid} 1\n"))
}

fn become_root() -> Result<(), UsernsError> {
    let (u, g) = (Uid::from_raw(0), Gid::from_raw(0));
    nix::unistd::setresgid(g, g, g).map_err(|source| UsernsError::Sys {
        what: "setresgid(0) in the build namespace",
        source,
    })?;
    nix::unistd::setresuid(u, u, u).map_err(|source| UsernsError::Sys {
        what: "setresuid(0) in the build namespace",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_unshare_names_the_container_fix() {
        let e = UsernsError::Sys {
            what: UNSHARE_REFUSED,
            source: nix::errno::Errno::EPERM,
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("unshare(CLONE_NEWUSER) (are unprivileged"),
            "{msg}"
        );
        assert!(msg.contains("--security-opt seccomp=unconfined"), "{msg}");
        assert!(msg.ends_with("): EPERM: Operation not permitted"), "{msg}");
    }
}
