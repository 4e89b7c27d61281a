//! A pure description of one step's container: namespaces, mounts in order, the new root,
//! and the process (argv, env, cwd, user, capabilities, hostname). Built without I/O from an
//! [`ExecRequest`], executed by `setup` through the [`super::syscalls::Syscalls`] trait.
//!
//! Mount order follows runc and rootless BuildKit: make `/` private; the rootfs (overlay, or
//! a bind of upper for `FROM scratch`); `/proc` (a fresh procfs of the new pid namespace);
//! the private binfmt_misc instance under it; `/dev` as a tmpfs with bind mounts of the host's
//! null, zero, full, random, urandom and tty, a new devpts instance and `/dev/shm`; `/sys`
//! (a read-only sysfs when the step owns its network namespace, else a recursive bind of the
//! host's, since sysfs can only be mounted by the owner of the netns); then the step's
//! mounts, parents before children; last, in the step's own network namespace, `lo` up and
//! the unreachable routes of [`super::network::BLOCKED_ROUTES`].

use super::{ExecRequest, ExtraMount, Sandbox, StepNetwork, DEFAULT_PATH_ENV, DOCKER_DEFAULT_CAPS};
use crate::snapshot::{Snapshot, SnapshotMount};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Devices bound from the host into the container's `/dev` (mknod is impossible rootless).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Largest secret file copied into the container (BuildKit's limit is 500 KiB).
pub const MAX_SECRET: u64 = 500 << 10;

/// Where a mount or file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A host path (outside the container root).
    Host(PathBuf),
    /// An absolute path inside the container root; symlinks in the image are resolved
    /// inside the root, never outside.
    Container(String),
}

/// What to create at a missing mount target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Must exist already (e.g. under /proc).
    Existing,
    /// A directory.
    Dir,
    /// An empty file.
    File,
    /// A directory or a file, like the (host) bind source.
    LikeSource,
}

/// One setup action, run in order by the container's pid 1 before `pivot_root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `mount(NULL, "/", NULL, MS_REC|MS_PRIVATE)`: nothing propagates back to the host.
    MakeRootPrivate,
    /// `mkdir -p` of a host directory (scratch dirs under the work dir).
    HostDir(PathBuf),
    /// mount(2).
    Mount {
        /// Source (a path for bind mounts, a name otherwise).
        source: String,
        /// Target.
        target: Target,
        /// Filesystem type; `None` for bind mounts.
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// Mount data.
        data: Option<String>,
        /// chdir here first (relative overlay paths).
        cwd: Option<PathBuf>,
        /// What to create when the target is missing.
        point: Point,
        /// Failure is a warning, not an error (devpts).
        optional: bool,
        /// Directories created for this mount stay in the layer and only an empty file
        /// created as the target is removed after the step (BuildKit's mount stubs
        /// cleaner, for `RUN --mount` targets and `/etc/hosts`, `/etc/resolv.conf`).
        keep_dirs: bool,
    },
    /// Remount a bind mount read-only, keeping its locked flags.
    RemountReadOnly {
        /// Target.
        target: Target,
        /// Failure is a warning.
        optional: bool,
    },
    /// symlink(2) `link` → `to`.
    Symlink {
        /// Link contents.
        to: String,
        /// Link path.
        link: Target,
    },
    /// Write a file into the staging tmpfs (under the work dir, outside the image).
    StageFile {
        /// Content.
        source: StageSource,
        /// Staged host path.
        staged: PathBuf,
        /// Mode.
        mode: u32,
        /// Container uid and gid.
        owner: (u32, u32),
    },
    /// Write a binfmt_misc register line (the instance is mounted by a preceding step).
    RegisterBinfmt {
        /// The `register` file.
        register: Target,
        /// The line.
        line: String,
    },
    /// Hide a path when it exists: a read-only tmpfs over a directory, `/dev/null` over
    /// anything else (runc's masked paths).
    MaskPath(Target),
    /// Make a path read-only when it exists: recursive bind onto itself, then a read-only
    /// remount (runc's readonly paths).
    ReadonlyPath(Target),
    /// Bring `lo` up in the step's own network namespace.
    LoopbackUp,
    /// Add an `unreachable` route for `dst/prefix` in the step's own network namespace (a
    /// connection there fails at once with `EHOSTUNREACH`).
    UnreachableRoute {
        /// Destination network.
        dst: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
}

/// containerd's default masked paths (BuildKit's default spec).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// containerd's default read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The helper's namespaces, in order: `CLONE_NEWUSER`, then `CLONE_NEWPID` (whose first
/// child becomes pid 1), plus `CLONE_NEWNET` for a step with its own network.
pub const HELPER_NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWUSER.union(CloneFlags::CLONE_NEWPID);

/// A resource limit set before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` number.
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// containerd's default: `RLIMIT_NOFILE` 1024:1024 (BuildKit starts from that spec).
#[allow(clippy::unnecessary_cast)] // the constant is a c_int on musl
pub const DEFAULT_RLIMITS: [Rlimit; 1] = [Rlimit {
    resource: libc::RLIMIT_NOFILE as u32,
    soft: 1024,
    hard: 1024,
}];

/// Content of a staged file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageSource {
    /// Copied from a host file of at most [`MAX_SECRET`] bytes (a secret).
    Secret(PathBuf),
    /// The host's `/etc/resolv.conf` (empty when missing), passed through
    /// [`resolv_conf_for`] with the step's network.
    ResolvConf {
        /// Host file.
        path: PathBuf,
        /// The step's network.
        network: StepNetwork,
    },
    /// Generated.
    Bytes(Vec<u8>),
}

/// BuildKit's generated `/etc/hosts` for a step with `hostname`.
pub fn hosts_file(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

/// Public resolvers used when filtering leaves no nameserver (libnetwork's defaults,
/// which BuildKit inherits).
const DEFAULT_NAMESERVERS: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n\
nameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n";

fn nameserver_of(l: &str) -> Option<String> {
    let mut w = l.split_whitespace();
    (w.next() == Some("nameserver")).then(|| w.next().unwrap_or("").to_string())
}

/// The `/etc/resolv.conf` a step sees, from the host's (BuildKit's `GetResolvConf`):
/// - host network: kept as it is;
/// - isolated network: the host's options and search list, with one nameserver,
///   [`super::network::DNS_FORWARD`], which pasta forwards to the host's first resolver
///   (so a loopback resolver works too); when the host has no nameserver, as `none`;
/// - own netns without pasta (`none`): localhost nameservers (`127.0.0.0/8`, `::1`) are
///   dropped, since they are unreachable there, and when none remains the public
///   defaults are added.
pub fn resolv_conf_for(host: &str, network: StepNetwork) -> String {
    let is_nameserver = nameserver_of;
    let has_any = host.lines().any(|l| is_nameserver(l).is_some());
    if network == StepNetwork::Host && has_any {
        return host.to_string();
    }
    if network == StepNetwork::Isolated && has_any {
        let mut out = String::new();
        for l in host.lines().filter(|l| is_nameserver(l).is_none()) {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str(&format!("nameserver {}\n", super::network::DNS_FORWARD));
        return out;
    }
    let mut out = String::new();
    let mut kept = 0;
    for l in host.lines() {
        match is_nameserver(l) {
            Some(ip) if ip.starts_with("127.") || ip == "::1" => continue,
            Some(_) => kept += 1,
            None => {}
        }
        out.push_str(l);
        out.push('\n');
    }
    if kept == 0 {
        out.push_str(DEFAULT_NAMESERVERS);
    }
    out
}

/// The process to exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    /// argv.
    pub args: Vec<String>,
    /// Environment (PATH added when missing; HOME is added after user resolution).
    pub env: Vec<String>,
    /// Working directory (created when missing).
    pub cwd: String,
    /// `user[:group]`.
    pub user: String,
    /// Capability set (bounding, effective, permitted for root; inheritable and ambient
    /// empty), as Docker.
    pub caps: u64,
    /// Set PR_SET_NO_NEW_PRIVS.
    pub no_new_privs: bool,
    /// Install the seccomp programs handed to pid 1 right before exec
    /// ([`super::Sandbox::seccomp`]).
    pub seccomp: bool,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
}

/// Everything the container's pid 1 does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Namespaces the helper creates before forking pid 1 (user first, mapped by
    /// newuidmap/newgidmap, then pid): [`HELPER_NAMESPACES`].
    pub helper_namespaces: CloneFlags,
    /// Namespaces pid 1 unshares: mount, uts, ipc.
    pub init_namespaces: CloneFlags,
    /// The step has its own network namespace, made by the helper (sysfs may be mounted, lo
    /// is brought up).
    pub new_netns: bool,
    /// The helper has the caller connect the namespace through pasta before it forks pid 1
    /// ([`StepNetwork::Isolated`]).
    pub connect_netns: bool,
    /// Hostname.
    pub hostname: String,
    /// Setup before pivot_root.
    pub steps: Vec<Step>,
    /// The new root (the merged dir).
    pub root: PathBuf,
    /// The process.
    pub process: ProcessPlan,
}

/// A request that cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Bad field.
    #[error("{0}")]
    Invalid(String),
    /// Bad snapshot.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}

/// The snapshot of a request: work/ovl is the overlay work dir, work/merged the mount point.
pub fn snapshot_of(req: &ExecRequest) -> Snapshot {
    Snapshot {
        lowers: req.rootfs_layers.clone(),
        upper: req.upper.clone(),
        work: req.work.join("ovl"),
        merged: req.work.join("merged"),
    }
}

fn container_path(p: &str, what: &str) -> Result<String, PlanError> {
    if !p.starts_with('/') || p.contains('\0') || p.len() > 4096 {
        return Err(PlanError::Invalid(format!(
            "{what} {p:?} must be an absolute container path"
        )));
    }
    Ok(p.to_string())
}

fn depth(p: &str) -> usize {
    p.split('/').filter(|c| !c.is_empty() && *c != ".").count()
}

/// Build the plan.
pub fn build(req: &ExecRequest) -> Result<Plan, PlanError> {
    if req.args.is_empty() || req.args.iter().any(|a| a.contains('\0')) {
        return Err(PlanError::Invalid(
            "the command is empty or contains a NUL byte".into(),
        ));
    }
    if req.env.iter().any(|e| e.contains('\0') || !e.contains('=')) {
        return Err(PlanError::Invalid(
            "environment entries must be KEY=value without NUL bytes".into(),
        ));
    }
    let cwd = container_path(
        if req.cwd.is_empty() { "/" } else { &req.cwd },
        "working directory",
    )?;
    if req.hostname.len() > 64 || req.hostname.contains('\0') {
        return Err(PlanError::Invalid(format!(
            "hostname {:?} is longer than 64 bytes",
            req.hostname
        )));
    }
    for p in [&req.upper, &req.work] {
        if !p.is_absolute() {
            return Err(PlanError::Invalid(format!(
                "{} must be an absolute path",
                p.display()
            )));
        }
    }
    let snap = snapshot_of(req);
    let root_mount = snap.mount()?;
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let c = |p: &str| Target::Container(p.to_string());
    let mount =
        |source: &str, target: Target, fstype: Option<&str>, flags, data: Option<&str>, point| {
            Step::Mount {
                source: source.into(),
                target,
                fstype: fstype.map(Into::into),
                flags,
                data: data.map(Into::into),
                cwd: None,
                point,
                optional: false,
                keep_dirs: false,
            }
        };
    // A `RUN --mount` target (BuildKit keeps the directories it creates for them).
    let step_mount =
        |source: &str, target: &str, fstype: Option<&str>, flags, data: Option<&str>, point| {
            Step::Mount {
                source: source.into(),
                target: Target::Container(target.to_string()),
                fstype: fstype.map(Into::into),
                flags,
                data: data.map(Into::into),
                cwd: None,
                point,
                optional: false,
                keep_dirs: true,
            }
        };

    let mut steps = vec![Step::MakeRootPrivate, Step::HostDir(snap.merged.clone())];
    match root_mount {
        SnapshotMount::Overlay { data, cwd } => {
            steps.push(Step::HostDir(snap.work.clone()));
            steps.push(Step::Mount {
                source: "overlay".into(),
                target: Target::Host(snap.merged.clone()),
                fstype: Some("overlay".into()),
                flags: MsFlags::empty(),
                data: Some(data),
                cwd,
                point: Point::Existing,
                optional: false,
                keep_dirs: false,
            });
        }
        SnapshotMount::BindUpper => steps.push(mount(
            &snap.upper.to_string_lossy(),
            Target::Host(snap.merged.clone()),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            Point::Existing,
        )),
    }
    steps.push(mount(
        "proc",
        c("/proc"),
        Some("proc"),
        nosuid_nodev_noexec,
        None,
        Point::Dir,
    ));
    if let Some(e) = &req.emulation {
        steps.push(mount(
            "binfmt_misc",
            c("/proc/sys/fs/binfmt_misc"),
            Some("binfmt_misc"),
            nosuid_nodev_noexec,
            None,
            Point::Existing,
        ));
        steps.push(Step::RegisterBinfmt {
            register: c("/proc/sys/fs/binfmt_misc/register"),
            line: e.register_line(),
        });
    }
    steps.push(mount(
        "tmpfs",
        c("/dev"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
        Point::Dir,
    ));
    for d in DEVICES {
        steps.push(mount(
            &format!("/dev/{d}"),
            c(&format!("/dev/{d}")),
            None,
            MsFlags::MS_BIND,
            None,
            Point::File,
        ));
    }
    steps.push(Step::Mount {
        source: "devpts".into(),
        target: c("/dev/pts"),
        fstype: Some("devpts".into()),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        data: Some("newinstance,ptmxmode=0666,mode=0620".into()),
        cwd: None,
        point: Point::Dir,
        optional: true,
        keep_dirs: false,
    });
    steps.push(Step::Symlink {
        to: "pts/ptmx".into(),
        link: c("/dev/ptmx"),
    });
    steps.push(mount(
        "shm",
        c("/dev/shm"),
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
        Point::Dir,
    ));
    for (to, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        steps.push(Step::Symlink {
            to: to.into(),
            link: c(link),
        });
    }
    let new_netns = req.network.own_netns();
    if new_netns {
        steps.push(mount(
            "sysfs",
            c("/sys"),
            Some("sysfs"),
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            None,
            Point::Dir,
        ));
    } else {
        steps.push(mount(
            "/sys",
            c("/sys"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            Point::Dir,
        ));
        steps.push(Step::RemountReadOnly {
            target: c("/sys"),
            optional: true,
        });
    }

    for p in MASKED_PATHS {
        steps.push(Step::MaskPath(c(p)));
    }
    for p in READONLY_PATHS {
        steps.push(Step::ReadonlyPath(c(p)));
    }

    // Private staging tmpfs for generated files and secrets (never in the image).
    let stage = req.work.join("stage");
    steps.push(Step::HostDir(stage.clone()));
    steps.push(mount(
        "tmpfs",
        Target::Host(stage.clone()),
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=755,size=16m"),
        Point::Existing,
    ));
    // /etc/hosts and /etc/resolv.conf as BuildKit provides them (even without network),
    // bound read-only; a target the image lacks is created and removed after the step.
    for (name, source) in [
        (
            "hosts",
            StageSource::Bytes(hosts_file(&req.hostname).into_bytes()),
        ),
        (
            "resolv.conf",
            StageSource::ResolvConf {
                path: PathBuf::from("/etc/resolv.conf"),
                network: req.network,
            },
        ),
    ] {
        let staged = stage.join(name);
        steps.push(Step::StageFile {
            source,
            staged: staged.clone(),
            mode: 0o644,
            owner: (0, 0),
        });
        let target = format!("/etc/{name}");
        steps.push(Step::Mount {
            source: staged.to_string_lossy().into_owned(),
            target: c(&target),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
            cwd: None,
            point: Point::File,
            optional: true,
            keep_dirs: true,
        });
        steps.push(Step::RemountReadOnly {
            target: c(&target),
            optional: true,
        });
    }

    let mut extra: Vec<&ExtraMount> = req.mounts.iter().collect();
    let target_of = |m: &ExtraMount| match m {
        ExtraMount::Bind { target, .. }
        | ExtraMount::Cache { target, .. }
        | ExtraMount::Tmpfs { target, .. }
        | ExtraMount::Secret { target, .. } => target.clone(),
    };
    extra.sort_by_key(|m| depth(&target_of(m)));
    for (i, m) in extra.into_iter().enumerate() {
        let t = container_path(&target_of(m), "mount target")?;
        if depth(&t) == 0 {
            return Err(PlanError::Invalid(format!(
                "mount target {t:?} would cover the root"
            )));
        }
        match m {
            ExtraMount::Bind {
                source, readonly, ..
            } => {
                steps.push(step_mount(
                    &host_source(source)?,
                    &t,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                    Point::LikeSource,
                ));
                if *readonly {
                    steps.push(Step::RemountReadOnly {
                        target: c(&t),
                        optional: false,
                    });
                }
            }
            ExtraMount::Cache { source, .. } => steps.push(step_mount(
                &host_source(source)?,
                &t,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                Point::Dir,
            )),
            ExtraMount::Tmpfs { size, .. } => {
                let data = size.map(|s| format!("size={s}"));
                steps.push(step_mount(
                    "tmpfs",
                    &t,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    data.as_deref(),
                    Point::Dir,
                ));
            }
            ExtraMount::Secret {
                source,
                mode,
                uid,
                gid,
                ..
            } => {
                let staged = stage.join(format!("secret-{i}"));
                steps.push(Step::StageFile {
                    source: StageSource::Secret(source.clone()),
                    staged: staged.clone(),
                    mode: mode & 0o7777,
                    owner: (*uid, *gid),
                });
                steps.push(step_mount(
                    &staged.to_string_lossy(),
                    &t,
                    None,
                    MsFlags::MS_BIND,
                    None,
                    Point::File,
                ));
                steps.push(Step::RemountReadOnly {
                    target: c(&t),
                    optional: false,
                });
            }
        }
    }
    if new_netns {
        steps.push(Step::LoopbackUp);
    }
    if req.network == StepNetwork::Isolated {
        for (dst, prefix) in super::network::BLOCKED_ROUTES {
            steps.push(Step::UnreachableRoute { dst, prefix });
        }
    }

    let mut env = req.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH_ENV.into());
    }
    let init_namespaces =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    let mut helper_namespaces = HELPER_NAMESPACES;
    if new_netns {
        helper_namespaces |= CloneFlags::CLONE_NEWNET;
    }
    Ok(Plan {
        helper_namespaces,
        init_namespaces,
        new_netns,
        connect_netns: req.network == StepNetwork::Isolated,
        hostname: req.hostname.clone(),
        steps,
        root: snap.merged,
        process: ProcessPlan {
            args: req.args.clone(),
            env,
            cwd,
            user: req.user.clone(),
            caps: step_caps(&req.sandbox),
            no_new_privs: true,
            seccomp: req.sandbox.seccomp,
            rlimits: DEFAULT_RLIMITS.to_vec(),
        },
    })
}

/// The capability set of a step: Docker's default set, or every capability for
/// [`Sandbox::all_caps`].
pub fn step_caps(s: &Sandbox) -> u64 {
    if s.all_caps {
        super::seccomp::ALL_CAPS
    } else {
        DOCKER_DEFAULT_CAPS
    }
}

fn host_source(p: &Path) -> Result<String, PlanError> {
    match p.to_str() {
        Some(s) if p.is_absolute() => Ok(s.to_string()),
        _ => Err(PlanError::Invalid(format!(
            "mount source {} must be an absolute UTF-8 host path",
            p.display()
        ))),
    }
}

#[cfg(test)]
mod tests;
