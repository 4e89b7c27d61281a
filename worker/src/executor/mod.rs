//! The rootless executor: runs one build step (a `RUN`) in fresh Linux namespaces over an
//! overlayfs snapshot, with no real root and no daemon.
//!
//! Process shape (all spawned with `std::process::Command`, so the caller may be a
//! multithreaded tokio process):
//! 1. the caller spawns a *helper*: the current executable (`/proc/self/exe`) re-executed with
//!    the hidden argument [`HELPER_ARG`] (binaries call [`helper_main_if_requested`] first
//!    thing in `main`). It receives the request on stdin.
//! 2. the helper, single-threaded, unshares a user namespace; the caller writes the id maps
//!    and lets it continue: when the caller is root of its own namespace (real root, or a
//!    rootless process inside the build namespace of [`crate::userns`]) it writes identity
//!    maps of every id it has itself; otherwise with newuidmap/newgidmap (see
//!    [`crate::idmap`]). The helper then unshares a pid namespace, and a net namespace when
//!    the step has its own network ([`StepNetwork::Isolated`], [`StepNetwork::None`]). For
//!    [`StepNetwork::Isolated`] it asks the caller to connect that namespace: the caller
//!    starts `pasta` on it ([`network`]), waits for its default route and lets the helper
//!    continue; `pasta` is stopped when the helper has ended (step done, failed or
//!    cancelled). The helper then forks the container's pid 1.
//! 3. pid 1 unshares mount, uts and ipc; in its own netns it brings `lo` up and makes the
//!    blocked destinations ([`network::BLOCKED_ROUTES`]) unreachable. It mounts the snapshot
//!    and /proc, /dev, /sys and the step's mounts, registers a private binfmt_misc handler when
//!    emulating, `pivot_root`s, detaches the old root, switches user, drops capabilities to
//!    Docker's default set, sets no_new_privs, resets every signal to its default disposition
//!    with an empty mask (as runc does) and execs the command.
//!
//! Unpacking layers ([`Executor::unpack_layer`]) and deleting work dirs
//! ([`Executor::remove_tree`]) use the same helper inside a user namespace, so files get
//! mapped owners and sub-uid-owned files can be removed.

pub mod cancel;
mod helper;
pub mod network;
pub mod plan;
mod protocol;
mod run;
pub mod seccomp;
mod setup;
pub mod syscalls;
pub mod user;

pub use cancel::CancelToken;
pub use helper::{helper_main_if_requested, HELPER_ARG};
pub use run::{run, ExecReport, Executor, UnpackReport};

use imgfarm_common::graph::op::SecurityMode;
use imgfarm_common::platform::Platform;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::emulation::Emulator;

/// StepNetwork mode of a step (`RUN --network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StepNetwork {
    /// An own network namespace with outbound access through user-mode networking (`pasta`,
    /// as rootless podman): the worker's loopback and link-local addresses are unreachable
    /// (BuildKit's default `sandbox` network, [`network`]).
    #[default]
    Isolated,
    /// The host's network (`RUN --network=host`, needs the `network.host` entitlement).
    Host,
    /// An own network namespace with only `lo` (up).
    None,
}

impl StepNetwork {
    /// The step gets its own network namespace.
    pub fn own_netns(self) -> bool {
        !matches!(self, StepNetwork::Host)
    }
}

/// How confined a step is: the knob for `RUN --security` ([`SecurityMode`]).
///
/// The default is BuildKit's `sandbox`: Docker's default capability set and Docker's default
/// seccomp profile ([`seccomp`]). [`Sandbox::INSECURE`] is BuildKit's `insecure`: every
/// capability and no seccomp filter. Whether a build may ask for it (the
/// `security.insecure` entitlement) is decided before a request is made, not here.
///
/// [`SecurityMode`]: imgfarm_common::graph::op::SecurityMode
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// Install the default seccomp profile in the step's pid 1 right before exec.
    pub seccomp: bool,
    /// Keep every capability ([`seccomp::ALL_CAPS`]) instead of [`DOCKER_DEFAULT_CAPS`].
    pub all_caps: bool,
}

impl Sandbox {
    /// `RUN --security=sandbox` (the default).
    pub const DEFAULT: Sandbox = Sandbox {
        seccomp: true,
        all_caps: false,
    };
    /// `RUN --security=insecure`.
    pub const INSECURE: Sandbox = Sandbox {
        seccomp: false,
        all_caps: true,
    };

    /// The sandbox of a graph's [`SecurityMode`].
    ///
    /// [`SecurityMode`]: imgfarm_common::graph::op::SecurityMode
    pub fn for_mode(mode: SecurityMode) -> Sandbox {
        match mode {
            SecurityMode::Sandbox => Sandbox::DEFAULT,
            SecurityMode::Insecure => Sandbox::INSECURE,
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::DEFAULT
    }
}

/// An extra mount of a step (`RUN --mount`). Targets are absolute container paths; missing
/// targets are created, and after the step an empty file created as a target is removed
/// while created directories stay in the layer, empty, root-owned, 0755 (what BuildKit's
/// mount stubs cleaner leaves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExtraMount {
    /// A bind mount of a host directory or file (`type=bind`, from the context or a stage).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Container path.
        target: String,
        /// Read-only (BuildKit's default for bind mounts).
        readonly: bool,
    },
    /// A persistent cache directory (`type=cache`), bound read-write. Sharing and locking
    /// are the caller's business.
    Cache {
        /// Host directory.
        source: PathBuf,
        /// Container path.
        target: String,
    },
    /// A fresh tmpfs (`type=tmpfs`).
    Tmpfs {
        /// Container path.
        target: String,
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// A secret file (`type=secret`): copied into a private tmpfs with `mode`, `uid`, `gid`
    /// and bound read-only on `target`.
    Secret {
        /// Host file with the secret.
        source: PathBuf,
        /// Container path (BuildKit's default is `/run/secrets/<id>`).
        target: String,
        /// File mode (BuildKit's default 0400).
        mode: u32,
        /// Owner uid in the container.
        uid: u32,
        /// Owner gid in the container.
        gid: u32,
    },
}

/// One step to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Unpacked parent layer dirs, lowest first (made by [`Executor::unpack_layer`]).
    pub rootfs_layers: Vec<PathBuf>,
    /// Overlay upper dir: receives the changes, and becomes the layer diff.
    pub upper: PathBuf,
    /// Executor scratch dir on the same filesystem as `upper`: holds the overlay work dir
    /// (`ovl/`) and the mount point (`merged/`).
    pub work: PathBuf,
    /// argv; `args[0]` is looked up in the container's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=value` environment; `PATH` and `HOME` are added when missing (as runc and
    /// BuildKit do).
    pub env: Vec<String>,
    /// Working directory, created when missing.
    pub cwd: String,
    /// `uid[:gid]` or names resolved through the image's /etc/passwd and /etc/group.
    pub user: String,
    /// Hostname in the step's uts namespace.
    pub hostname: String,
    /// StepNetwork mode.
    pub network: StepNetwork,
    /// Extra mounts.
    pub mounts: Vec<ExtraMount>,
    /// Target platform (for messages; emulation is chosen by [`crate::emulation::resolve`]).
    pub platform: Platform,
    /// A qemu interpreter to register in a private binfmt_misc instance.
    pub emulation: Option<Emulator>,
    /// Capabilities and seccomp ([`Sandbox::DEFAULT`] when absent from a JSON request).
    #[serde(default)]
    pub sandbox: Sandbox,
}

impl ExecRequest {
    /// A request with BuildKit's defaults: root, `/`, hostname `buildkitsandbox`, an
    /// isolated network, no mounts, the host platform, [`Sandbox::DEFAULT`].
    pub fn new(
        rootfs_layers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        args: Vec<String>,
    ) -> Self {
        ExecRequest {
            rootfs_layers,
            upper,
            work,
            args,
            env: vec![DEFAULT_PATH_ENV.into()],
            cwd: "/".into(),
            user: String::new(),
            hostname: "buildkitsandbox".into(),
            network: StepNetwork::Isolated,
            mounts: Vec::new(),
            platform: Platform::host(),
            emulation: None,
            sandbox: Sandbox::DEFAULT,
        }
    }
}

/// BuildKit's default `PATH` for Linux steps.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set (moby `oci/caps/defaults.go`): CHOWN, DAC_OVERRIDE,
/// FSETID, FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE,
/// SYS_CHROOT, KILL, AUDIT_WRITE, as a bit mask (`0xa80425fb`).
pub const DOCKER_DEFAULT_CAPS: u64 = (1 << 0) // CHOWN
    | (1 << 1) // DAC_OVERRIDE
    | (1 << 3) // FOWNER
    | (1 << 4) // FSETID
    | (1 << 5) // KILL
    | (1 << 6) // SETGID
    | (1 << 7) // SETUID
    | (1 << 8) // SETPCAP
    | (1 << 10) // NET_BIND_SERVICE
    | (1 << 13) // NET_RAW
    | (1 << 18) // SYS_CHROOT
    | (1 << 27) // MKNOD
    | (1 << 29) // AUDIT_WRITE
    | (1 << 31); // SETFCAP

/// Why a step could not run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request is unusable.
    #[error("invalid exec request: {0}")]
    Invalid(String),
    /// The snapshot cannot be mounted.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// The helper process could not be started or talked to.
    #[error("executor helper {helper}: {what}: {source}")]
    Helper {
        /// Helper executable.
        helper: PathBuf,
        /// What failed.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The helper broke the protocol or died.
    #[error(
        "executor helper {helper} failed: {detail} (the binary must call \
         imgfarm_worker::executor::helper_main_if_requested() at the start of main)"
    )]
    Protocol {
        /// Helper executable.
        helper: PathBuf,
        /// What happened.
        detail: String,
    },
    /// Namespace or mount setup failed before the command started.
    #[error("setting up the build container failed: {0}")]
    Setup(String),
    /// The command exited non-zero or was killed.
    #[error("{command:?} {how}{}", tail_suffix(.tail))]
    Failed {
        /// argv of the step.
        command: Vec<String>,
        /// `exit code N` or `killed by signal N`.
        how: String,
        /// Exit code when it exited.
        code: Option<i32>,
        /// The last bytes of stdout and stderr, interleaved as read.
        tail: String,
    },
    /// Writing the command's output to the caller's writer failed.
    #[error("writing the step's output: {0}")]
    Output(std::io::Error),
    /// The step's [`CancelToken`] was triggered: its processes were killed.
    #[error("the step was cancelled; its processes were killed")]
    Cancelled,
}

fn tail_suffix(t: &str) -> String {
    if t.is_empty() {
        String::new()
    } else {
        format!("; last output:\n{t}")
    }
}
