//! Executes a [`Plan`] through [`Syscalls`]: mounts before `pivot_root`, the pivot itself
//! (`pivot_root(".", ".")` then `umount2(".", MNT_DETACH)`, runc's trick that needs no
//! put_old directory), and the final process setup (user, workdir, capabilities, exec).

use super::plan::{resolv_conf_for, Plan, Point, StageSource, Step, Target, MAX_SECRET};
use super::syscalls::{FileKind, Syscalls};
use super::user;
use imgfarm_common::path::{self, AfterMissing, Node, ResolveError};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use seccompiler::BpfProgram;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Largest /etc/passwd or /etc/group read.
const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// A setup failure, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct SetupError {
    /// The action.
    pub what: String,
    /// The cause.
    pub detail: String,
}

/// Why a mount of `fstype` failed with `e`, when the cause is known: a new proc mount is
/// refused (EPERM) while the /proc the process sees has paths masked or made read-only by
/// over-mounts (the kernel's `mnt_already_visible` check), as container runtimes do by
/// default.
pub fn mount_hint(fstype: Option<&str>, e: Errno) -> Option<&'static str> {
    (fstype == Some("proc") && e == Errno::EPERM).then_some(
        "in a container, /proc must be unmasked: Kubernetes securityContext procMount: \
         Unmasked, docker run --security-opt systempaths=unconfined",
    )
}

fn err(what: impl Into<String>, e: impl std::fmt::Display) -> SetupError {
    SetupError {
        what: what.into(),
        detail: e.to_string(),
    }
}

/// Resolve container path `p` under `root` on the host, following symlinks of the image
/// inside `root` ([`path::resolve_in_root`]: an absolute link restarts at `root`, `..` stops
/// at `root`, at most [`path::MAX_SYMLINKS`] links). Missing components are kept as they
/// are.
pub fn resolve_in_root(
    sys: &mut dyn Syscalls,
    root: &Path,
    p: &str,
) -> Result<PathBuf, SetupError> {
    let read = |cur: &[Vec<u8>], name: &[u8]| {
        let candidate = join(root, cur).join(OsStr::from_bytes(name));
        match sys
            .kind(&candidate)
            .map_err(|e| err(format!("inspecting {}", candidate.display()), e))?
        {
            // A target is read as UTF-8 (lossily), as container paths are.
            FileKind::Symlink(t) => Ok(Node::Link(t.to_string_lossy().into_owned().into_bytes())),
            FileKind::Missing => Ok(Node::Missing),
            FileKind::Dir | FileKind::File | FileKind::Other => Ok(Node::Other),
        }
    };
    let parts =
        path::resolve_in_root(p.as_bytes(), AfterMissing::Continue, read).map_err(|e| match e {
            ResolveError::Read(e) => e,
            ResolveError::TooManyLinks => err(
                format!("resolving {p} in the image"),
                "too many levels of symbolic links",
            ),
            e @ ResolveError::DotDotAfterMissing => err(format!("resolving {p} in the image"), e),
        })?;
    Ok(join(root, &parts))
}

fn join(root: &Path, parts: &[Vec<u8>]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in parts {
        p.push(OsStr::from_bytes(c));
    }
    p
}

/// Create the missing components of `path` (already resolved, under `root`): directories,
/// and the last one as `last_is_file` says. Returns the created paths relative to `root`.
fn create_missing(
    sys: &mut dyn Syscalls,
    root: &Path,
    path: &Path,
    last_is_file: bool,
) -> Result<Vec<PathBuf>, SetupError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = rel.components().collect();
    let mut created = Vec::new();
    let mut cur = root.to_path_buf();
    for (i, c) in parts.iter().enumerate() {
        cur.push(c);
        let last = i + 1 == parts.len();
        match sys
            .kind(&cur)
            .map_err(|e| err(format!("inspecting {}", cur.display()), e))?
        {
            FileKind::Missing => {
                if last && last_is_file {
                    sys.create_file(&cur, 0o644)
                } else {
                    sys.mkdir(&cur, 0o755)
                }
                .map_err(|e| err(format!("creating mount point {}", cur.display()), e))?;
                created.push(cur.strip_prefix(root).unwrap_or(&cur).to_path_buf());
            }
            FileKind::Dir | FileKind::File | FileKind::Other => {}
            FileKind::Symlink(_) => {
                return Err(err(
                    format!("creating mount point {}", cur.display()),
                    "a symlink appeared while resolving",
                ))
            }
        }
    }
    Ok(created)
}

/// Run the steps before pivot_root. Returns the mount points created in the image
/// (relative to the root) that are removed after the step when still empty (all of them,
/// except directories made for a mount with `keep_dirs`), and warnings.
pub fn prepare_rootfs(
    sys: &mut dyn Syscalls,
    plan: &Plan,
) -> Result<(Vec<PathBuf>, Vec<String>), SetupError> {
    let mut stubs = Vec::new();
    let mut warnings = Vec::new();
    let root = plan.root.as_path();
    for step in &plan.steps {
        match step {
            Step::MakeRootPrivate => sys
                .mount(
                    None,
                    Path::new("/"),
                    None,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None,
                )
                .map_err(|e| err("making / private", e))?,
            Step::HostDir(d) => mkdir_all(sys, d)?,
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                cwd,
                point,
                optional,
                keep_dirs,
            } => {
                let path = match target {
                    Target::Host(p) => p.clone(),
                    Target::Container(c) => {
                        let p = resolve_in_root(sys, root, c)?;
                        let is_file = match point {
                            Point::File => true,
                            Point::LikeSource => matches!(
                                sys.kind(Path::new(source)),
                                Ok(FileKind::File | FileKind::Other)
                            ),
                            _ => false,
                        };
                        if *point != Point::Existing {
                            let mut created = create_missing(sys, root, &p, is_file)?;
                            if *keep_dirs {
                                // Only the target itself, when it was created as a file.
                                let target = created.pop().filter(|_| is_file);
                                created.clear();
                                created.extend(target);
                            }
                            stubs.extend(created);
                        }
                        p
                    }
                };
                if let Some(d) = cwd {
                    sys.chdir(d)
                        .map_err(|e| err(format!("chdir {}", d.display()), e))?;
                }
                let r = sys.mount(
                    Some(source),
                    &path,
                    fstype.as_deref(),
                    *flags,
                    data.as_deref(),
                );
                if let Err(e) = r {
                    let what = format!(
                        "mounting {source} ({}) on {}",
                        fstype.as_deref().unwrap_or("bind"),
                        path.display()
                    );
                    let e = match mount_hint(fstype.as_deref(), e) {
                        Some(hint) => format!("{e} ({hint})"),
                        None => e.to_string(),
                    };
                    if *optional {
                        warnings.push(format!("{what}: {e}"));
                    } else {
                        return Err(err(what, e));
                    }
                }
            }
            Step::RemountReadOnly { target, optional } => {
                let path = match target {
                    Target::Host(p) => p.clone(),
                    Target::Container(c) => resolve_in_root(sys, root, c)?,
                };
                let locked = sys.mount_flags(&path).unwrap_or(MsFlags::empty());
                let r = sys.mount(
                    None,
                    &path,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
                    None,
                );
                if let Err(e) = r {
                    let what = format!("remounting {} read-only", path.display());
                    if *optional {
                        warnings.push(format!("{what}: {e}"));
                    } else {
                        return Err(err(what, e));
                    }
                }
            }
            Step::Symlink { to, link } => {
                let path = match link {
                    Target::Host(p) => p.clone(),
                    Target::Container(c) => resolve_in_root(sys, root, c)?,
                };
                match sys.symlink(to, &path) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(err(format!("symlink {}", path.display()), e)),
                }
            }
            Step::StageFile {
                source,
                staged,
                mode,
                owner,
            } => {
                let data = match source {
                    StageSource::Bytes(b) => b.clone(),
                    StageSource::ResolvConf { path, network } => {
                        let host = sys.read_file(path, MAX_SECRET).unwrap_or_default();
                        resolv_conf_for(&String::from_utf8_lossy(&host), *network).into_bytes()
                    }
                    StageSource::Secret(p) => {
                        let d = sys
                            .read_file(p, MAX_SECRET + 1)
                            .map_err(|e| err(format!("reading secret {}", p.display()), e))?;
                        if d.len() as u64 > MAX_SECRET {
                            return Err(err(
                                format!("reading secret {}", p.display()),
                                format!("larger than {MAX_SECRET} bytes"),
                            ));
                        }
                        d
                    }
                };
                sys.write_file(staged, &data, *mode, Some(*owner))
                    .map_err(|e| err(format!("staging {}", staged.display()), e))?;
            }
            Step::RegisterBinfmt { register, line } => {
                let path = match register {
                    Target::Host(p) => p.clone(),
                    Target::Container(c) => resolve_in_root(sys, root, c)?,
                };
                sys.write_file(&path, line.as_bytes(), 0o200, None)
                    .map_err(|e| {
                        err(
                            "registering the emulator in a private binfmt_misc instance \
                             (needs Linux >= 6.7)",
                            e,
                        )
                    })?;
            }
            Step::MaskPath(target) => {
                let path = host_path(sys, root, target)?;
                let r = match sys.kind(&path) {
                    Ok(FileKind::Missing) | Err(_) => Ok(()),
                    Ok(FileKind::Dir) => sys.mount(
                        Some("tmpfs"),
                        &path,
                        Some("tmpfs"),
                        MsFlags::MS_RDONLY,
                        Some("size=0"),
                    ),
                    Ok(_) => sys.mount(Some("/dev/null"), &path, None, MsFlags::MS_BIND, None),
                };
                if let Err(e) = r {
                    warnings.push(format!("masking {}: {e}", path.display()));
                }
            }
            Step::ReadonlyPath(target) => {
                let path = host_path(sys, root, target)?;
                if matches!(sys.kind(&path), Ok(FileKind::Missing) | Err(_)) {
                    continue;
                }
                let path_s = path.to_string_lossy().into_owned();
                let r = sys
                    .mount(
                        Some(&path_s),
                        &path,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None,
                    )
                    .and_then(|()| {
                        let locked = sys.mount_flags(&path).unwrap_or(MsFlags::empty());
                        sys.mount(
                            None,
                            &path,
                            None,
                            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
                            None,
                        )
                    });
                if let Err(e) = r {
                    warnings.push(format!("making {} read-only: {e}", path.display()));
                }
            }
            Step::LoopbackUp => sys
                .loopback_up()
                .map_err(|e| err("bringing up lo in the step's network namespace", e))?,
            Step::UnreachableRoute { dst, prefix } => {
                sys.add_unreachable_route(*dst, *prefix).map_err(|e| {
                    err(
                        format!(
                            "making {dst}/{prefix} unreachable in the step's network namespace"
                        ),
                        e,
                    )
                })?
            }
        }
    }
    Ok((stubs, warnings))
}

fn host_path(sys: &mut dyn Syscalls, root: &Path, t: &Target) -> Result<PathBuf, SetupError> {
    match t {
        Target::Host(p) => Ok(p.clone()),
        Target::Container(c) => resolve_in_root(sys, root, c),
    }
}

fn mkdir_all(sys: &mut dyn Syscalls, d: &Path) -> Result<(), SetupError> {
    let mut cur = PathBuf::from("/");
    for c in d.components().skip(1) {
        cur.push(c);
        match sys.mkdir(&cur, 0o755) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err(format!("mkdir {}", cur.display()), e)),
        }
    }
    Ok(())
}

/// `pivot_root` into the plan's root and detach the old one.
pub fn enter_rootfs(sys: &mut dyn Syscalls, plan: &Plan) -> Result<(), SetupError> {
    sys.chdir(&plan.root)
        .map_err(|e| err(format!("chdir {}", plan.root.display()), e))?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .map_err(|e| err("pivot_root", e))?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)
        .map_err(|e| err("detaching the old root", e))?;
    sys.chdir(Path::new("/")).map_err(|e| err("chdir /", e))?;
    Ok(())
}

/// Inside the new root: resolve the user, create the workdir, switch user, drop
/// capabilities, set no_new_privs, reset signals, install the `seccomp` programs (when the
/// plan asks for seccomp; the last step, so setup itself is not filtered) and exec.
/// Returns only on failure.
pub fn exec_process(
    sys: &mut dyn Syscalls,
    plan: &Plan,
    seccomp: &[BpfProgram],
    setgroups_allowed: bool,
) -> SetupError {
    match exec_inner(sys, plan, seccomp, setgroups_allowed) {
        Ok(e) | Err(e) => e,
    }
}

fn exec_inner(
    sys: &mut dyn Syscalls,
    plan: &Plan,
    seccomp: &[BpfProgram],
    setgroups_allowed: bool,
) -> Result<SetupError, SetupError> {
    let p = &plan.process;
    let read = |sys: &mut dyn Syscalls, f: &str| {
        sys.read_file(Path::new(f), MAX_ACCOUNT_FILE)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let passwd = read(sys, "/etc/passwd");
    let group = read(sys, "/etc/group");
    let u = user::resolve(&p.user, &passwd, &group).map_err(|e| err("resolving USER", e))?;
    let mut env = p.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", u.home));
    }
    let cwd = resolve_in_root(sys, Path::new("/"), &p.cwd)?;
    create_missing(sys, Path::new("/"), &cwd, false)?;
    sys.chdir(&cwd)
        .map_err(|e| err(format!("chdir to the working directory {}", p.cwd), e))?;
    let exe = lookup(sys, &p.args[0], &env)?;
    for r in &p.rlimits {
        sys.setrlimit(r.resource, r.soft, r.hard)
            .map_err(|e| err(format!("setrlimit {}", r.resource), e))?;
    }
    sys.drop_bounding_except(p.caps)
        .map_err(|e| err("dropping capabilities from the bounding set", e))?;
    if setgroups_allowed {
        sys.setgroups(&u.additional_gids)
            .map_err(|e| err("setgroups", e))?;
    }
    sys.set_ids(u.uid, u.gid).map_err(|e| {
        err(
            format!("switching to uid {} gid {}", u.uid, u.gid),
            format!("{e} (is the id inside the mapped range?)"),
        )
    })?;
    let caps = if u.uid == 0 { p.caps } else { 0 };
    sys.set_caps(caps, caps, 0)
        .map_err(|e| err("setting capabilities", e))?;
    if p.no_new_privs {
        sys.no_new_privs().map_err(|e| err("no_new_privs", e))?;
    }
    sys.reset_signals()
        .map_err(|e| err("resetting signal dispositions", e))?;
    if p.seccomp {
        // Fail closed: a sandboxed step never runs unfiltered.
        if seccomp.is_empty() {
            return Err(err(
                "installing the seccomp profile",
                "no program was given",
            ));
        }
        if !p.no_new_privs {
            return Err(err(
                "installing the seccomp profile",
                "it needs no_new_privs",
            ));
        }
        for prog in seccomp {
            sys.seccomp(prog)
                .map_err(|e| err("installing the seccomp profile", e))?;
        }
    }
    let e = sys.exec(&exe, &p.args, &env);
    Ok(err(format!("exec {}", p.args[0]), e))
}

/// Find `cmd` in the container `PATH` of `env` (runc looks it up the same way).
fn lookup(sys: &mut dyn Syscalls, cmd: &str, env: &[String]) -> Result<PathBuf, SetupError> {
    if cmd.contains('/') {
        return Ok(PathBuf::from(cmd));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(cmd);
        let resolved = resolve_in_root(sys, Path::new("/"), &cand.to_string_lossy())?;
        if matches!(sys.kind(&resolved), Ok(FileKind::File)) {
            return Ok(cand);
        }
    }
    Err(err(
        format!("exec: {cmd:?}"),
        "executable file not found in $PATH",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_proc_mount_names_the_unmasked_proc_fix() {
        let hint = mount_hint(Some("proc"), Errno::EPERM).expect("a hint");
        assert!(hint.contains("procMount: Unmasked"), "{hint}");
        assert!(hint.contains("systempaths=unconfined"), "{hint}");
        assert_eq!(mount_hint(Some("proc"), Errno::ENOENT), None);
        assert_eq!(mount_hint(Some("sysfs"), Errno::EPERM), None);
        assert_eq!(mount_hint(None, Errno::EPERM), None);
    }
}
