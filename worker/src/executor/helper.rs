//! The helper side: the re-executed binary that enters the namespaces. It is a fresh,
//! single-threaded process, so `unshare(CLONE_NEWUSER)` (which refuses multithreaded
//! callers) and `fork` are safe here.

use super::plan;
use super::protocol::{read_frame, HelperRequest, Job, Msg, CTL_FD, GO, GO_NET, GO_SINGLE};
use super::run::UnpackReport;
use super::setup;
use super::syscalls::LinuxSyscalls;
use super::ExecRequest;
use crate::idmap::IdMapping;
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The hidden first argument that turns a binary into the executor helper.
pub const HELPER_ARG: &str = "__imgfarm-executor-helper";

/// Call first thing in `main` of every binary that uses the executor: when the process was
/// started as the executor's helper (argv[1] is [`HELPER_ARG`]), run the helper and exit;
/// otherwise return immediately.
pub fn helper_main_if_requested() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(HELPER_ARG)) {
        let code = helper_main();
        std::process::exit(code);
    }
}

struct Ctl(File);

impl Ctl {
    fn send(&mut self, m: &Msg) {
        let _ = self.0.write_all(&m.line());
    }
}

fn helper_main() -> i32 {
    // SAFETY: fd 3 is the control pipe the caller dup2'ed there; we take ownership once.
    if nix::fcntl::fcntl(
        unsafe { std::os::fd::BorrowedFd::borrow_raw(CTL_FD) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_err()
    {
        eprintln!(
            "imgfarm executor helper: no control channel on fd 3; not started by the executor"
        );
        return 2;
    }
    // SAFETY: see above; nothing else owns fd 3 in this process.
    let mut ctl = Ctl(unsafe { File::from_raw_fd(CTL_FD) });
    let _ = set_cloexec(ctl.0.as_raw_fd());
    // Die with the caller.
    let _ = super::syscalls::rearm_parent_death_signal();
    let mut stdin = std::io::stdin().lock();
    let req = match read_frame(&mut stdin) {
        Ok(r) => r,
        Err(e) => {
            ctl.send(&Msg::SetupError(format!("reading the request: {e}")));
            return 1;
        }
    };
    let single = match enter_userns(&req, &mut stdin, &mut ctl) {
        Ok(single) => single,
        Err(e) => {
            ctl.send(&Msg::SetupError(e));
            return 1;
        }
    };
    match req.job {
        // setgroups(2) is denied in a self-written single-id mapping.
        Job::Run { request, seccomp } => {
            run_container(&request, &seccomp, !single, &mut stdin, &mut ctl)
        }
        Job::Unpack {
            dest,
            parents,
            scratch,
        } => match unpack(&mut stdin, &dest, &parents, &scratch) {
            Ok(rep) => {
                ctl.send(&Msg::Unpacked(rep));
                0
            }
            Err(e) => {
                ctl.send(&Msg::SetupError(e));
                1
            }
        },
        Job::Remove { path } => match remove(&path) {
            Ok(()) => {
                ctl.send(&Msg::Removed);
                0
            }
            Err(e) => {
                ctl.send(&Msg::SetupError(e));
                1
            }
        },
    }
}

fn set_cloexec(fd: i32) -> nix::Result<()> {
    // SAFETY: fd is open (checked by the caller).
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(
        b,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map(|_| ())
}

/// Unshare the user namespace and get it mapped. Returns whether the mapping is the
/// single-id one.
fn enter_userns(req: &HelperRequest, stdin: &mut dyn Read, ctl: &mut Ctl) -> Result<bool, String> {
    unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("{}: {e}", crate::userns::UNSHARE_REFUSED))?;
    let single = match req.mapping {
        IdMapping::Single { .. } => true,
        IdMapping::Full { .. } | IdMapping::Identity { .. } => {
            ctl.send(&Msg::NeedMap {
                pid: std::process::id() as i32,
            });
            let mut b = [0u8; 1];
            stdin
                .read_exact(&mut b)
                .map_err(|e| format!("waiting for the id maps: {e}"))?;
            match b[0] {
                GO => false,
                GO_SINGLE => true,
                _ => return Err("the executor did not map the user namespace".into()),
            }
        }
    };
    if single {
        let (uid, gid) = match req.mapping {
            IdMapping::Single { uid, gid } | IdMapping::Full { uid, gid, .. } => (uid, gid),
            // The caller is root of its namespace: its own root.
            IdMapping::Identity { .. } => (0, 0),
        };
        let w = |f: &str, s: String| std::fs::write(f, s).map_err(|e| format!("writing {f}: {e}"));
        w("/proc/self/setgroups", "deny".into())?;
        w("/proc/self/uid_map", format!("0 {uid} 1\n"))?;
        w("/proc/self/gid_map", format!("0 {gid} 1\n"))?;
    }
    let root_u = nix::unistd::Uid::from_raw(0);
    let root_g = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g).map_err(|e| format!("setresgid 0: {e}"))?;
    let parent = nix::unistd::getppid();
    nix::unistd::setresuid(root_u, root_u, root_u).map_err(|e| format!("setresuid 0: {e}"))?;
    // Becoming root of the namespace cleared the parent-death signal set at
    // start: arm it again, and give up if the caller died in between.
    super::syscalls::rearm_parent_death_signal()
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    if nix::unistd::getppid() != parent {
        return Err("the executor that started this helper is gone".into());
    }
    Ok(single)
}

fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn run_container(
    req: &ExecRequest,
    seccomp: &[Vec<u64>],
    setgroups_allowed: bool,
    stdin: &mut dyn Read,
    ctl: &mut Ctl,
) -> i32 {
    let plan = match plan::build(req) {
        Ok(p) => p,
        Err(e) => {
            ctl.send(&Msg::SetupError(e.to_string()));
            return 1;
        }
    };
    // The user namespace exists and is mapped (enter_userns); now the rest of the helper's.
    let rest = plan.helper_namespaces.difference(CloneFlags::CLONE_NEWUSER);
    if let Err(e) = unshare(rest) {
        ctl.send(&Msg::SetupError(format!("unshare({rest:?}): {e}")));
        return 1;
    }
    if plan.connect_netns {
        // The caller starts pasta on this namespace and answers once it is configured.
        ctl.send(&Msg::NeedNetwork {
            pid: std::process::id() as i32,
        });
        let mut b = [0u8; 1];
        match stdin.read_exact(&mut b) {
            Ok(()) if b[0] == GO_NET => {}
            Ok(()) => return 1, // the caller holds the error
            Err(e) => {
                ctl.send(&Msg::SetupError(format!(
                    "waiting for the step's network: {e}"
                )));
                return 1;
            }
        }
    }
    let (stub_r, stub_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            ctl.send(&Msg::SetupError(format!("pipe: {e}")));
            return 1;
        }
    };
    // SAFETY: this process is single-threaded (a fresh exec of the helper).
    match unsafe { fork() } {
        Err(e) => {
            ctl.send(&Msg::SetupError(format!("fork: {e}")));
            1
        }
        Ok(ForkResult::Child) => {
            drop(stub_r);
            let e = container_init(&plan, seccomp, setgroups_allowed, ctl, stub_w);
            ctl.send(&Msg::SetupError(e));
            // SAFETY: leave the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(125) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(stub_w);
            let mut stubs_json = Vec::new();
            let _ = File::from(stub_r)
                .take(1 << 20)
                .read_to_end(&mut stubs_json);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            let stubs: Vec<PathBuf> = serde_json::from_slice(&stubs_json).unwrap_or_default();
            remove_stubs(&req.upper, &stubs);
            let msg = match status {
                Ok(WaitStatus::Exited(_, code)) => Msg::Exited {
                    code: Some(code),
                    signal: None,
                },
                Ok(WaitStatus::Signaled(_, sig, _)) => Msg::Exited {
                    code: None,
                    signal: Some(sig as i32),
                },
                other => Msg::SetupError(format!("waiting for the step: {other:?}")),
            };
            ctl.send(&msg);
            0
        }
    }
}

/// Pid 1 of the step: namespaces, mounts, pivot_root, exec. Returns only on failure.
fn container_init(
    plan: &plan::Plan,
    seccomp: &[Vec<u64>],
    setgroups_allowed: bool,
    ctl: &mut Ctl,
    stub_w: OwnedFd,
) -> String {
    // Die with the helper.
    let _ = super::syscalls::rearm_parent_death_signal();
    if let Err(e) = unshare(plan.init_namespaces) {
        return format!("unshare(mount, uts, ipc): {e}");
    }
    if let Err(e) = nix::unistd::sethostname(&plan.hostname) {
        return format!("sethostname {:?}: {e}", plan.hostname);
    }
    let mut sys = LinuxSyscalls;
    let (stubs, warnings) = match setup::prepare_rootfs(&mut sys, plan) {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    for w in warnings {
        ctl.send(&Msg::Warning(w));
    }
    let mut f = File::from(stub_w);
    let _ = f.write_all(&serde_json::to_vec(&stubs).unwrap_or_default());
    drop(f);
    if let Err(e) = setup::enter_rootfs(&mut sys, plan) {
        return e.to_string();
    }
    match std::fs::File::open("/dev/null") {
        Ok(null) => {
            if let Err(e) = nix::unistd::dup2_stdin(&null) {
                return format!("stdin from /dev/null: {e}");
            }
        }
        Err(e) => return format!("opening /dev/null: {e}"),
    }
    ctl.send(&Msg::Exec { mono_ns: mono_ns() });
    let programs: Vec<_> = seccomp.iter().map(|p| super::seccomp::decode(p)).collect();
    setup::exec_process(&mut sys, plan, &programs, setgroups_allowed).to_string()
}

/// Remove the mount points created in the image, deepest first, when still empty and
/// reachable in upper without symlinks.
fn remove_stubs(upper: &Path, stubs: &[PathBuf]) {
    for rel in stubs.iter().rev() {
        let mut p = upper.to_path_buf();
        let mut ok = true;
        for c in rel.components() {
            p.push(c);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => ok = false,
                Ok(_) => {}
                Err(_) => ok = false,
            }
            if !ok {
                break;
            }
        }
        if !ok {
            continue;
        }
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&p); // fails when not empty: kept
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(&p);
            }
            _ => {}
        }
    }
}

fn unpack(
    stream: &mut dyn Read,
    dest: &Path,
    parents: &[PathBuf],
    scratch: &Path,
) -> Result<UnpackReport, String> {
    use imgfarm_common::oci::layer::apply::{apply, ApplyOptions};
    std::fs::create_dir_all(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let target = if parents.is_empty() {
        dest.to_path_buf()
    } else {
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making / private: {e}"))?;
        let snap = crate::snapshot::Snapshot {
            lowers: parents.to_vec(),
            upper: dest.to_path_buf(),
            work: scratch.join("ovl"),
            merged: scratch.join("merged"),
        };
        let m = snap.mount().map_err(|e| e.to_string())?;
        for d in [&snap.work, &snap.merged] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        if let crate::snapshot::SnapshotMount::Overlay { data, cwd } = m {
            if let Some(c) = cwd {
                nix::unistd::chdir(&c).map_err(|e| format!("chdir {}: {e}", c.display()))?;
            }
            nix::mount::mount(
                Some("overlay"),
                &snap.merged,
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(|e| format!("mounting the overlay for unpacking: {e}"))?;
        }
        snap.merged
    };
    let opts = ApplyOptions {
        ownership: true,
        ..ApplyOptions::default()
    };
    let rep = apply(stream, &target, &opts).map_err(|e| format!("unpacking the layer: {e}"))?;
    Ok(UnpackReport {
        entries: rep.entries,
        files: rep.files,
        bytes: rep.bytes,
        warnings: rep.warnings,
    })
}

fn remove(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => {
            make_writable(path);
            std::fs::remove_dir_all(path).map_err(|e| format!("removing {}: {e}", path.display()))
        }
        Ok(_) => {
            std::fs::remove_file(path).map_err(|e| format!("removing {}: {e}", path.display()))
        }
    }
}

/// Directories without write or search permission block removal even for namespace root
/// when their owner is unmapped; give owner rwx where possible (best effort).
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::symlink_metadata(dir) {
        if m.is_dir() {
            let mode = m.permissions().mode();
            if mode & 0o700 != 0o700 {
                let _ =
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o700));
            }
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        make_writable(&e.path());
                    }
                }
            }
        }
    }
}
