//! Emulation of foreign platforms with qemu-user-static and binfmt_misc.
//!
//! A build step for a platform the host cannot run natively needs a binfmt_misc handler
//! (Documentation/admin-guide/binfmt-misc.rst). Three cases, checked before building:
//! - native: the host's platform (or a compatible one, e.g. linux/386 on amd64);
//! - a host handler: an enabled entry in `/proc/sys/fs/binfmt_misc` whose magic matches the
//!   target's ELF header and that has the `F` flag (the interpreter is opened at
//!   registration, so it keeps working after pivot_root into the image);
//! - a private handler: since Linux 6.7 a user namespace can mount its own binfmt_misc
//!   instance, so the executor registers qemu inside the build's namespaces with flags `PF`
//!   (`P` keeps argv[0], which busybox applets need; `F` as above). No root is needed.
//!
//! - inside a container (a Kubernetes pod), `/proc` is a fresh procfs without binfmt_misc
//!   mounted, so the host's handlers are not listed although they serve the container (a
//!   handler with `F` needs nothing from the container's filesystem); then a tiny program of
//!   the target platform is run once ([`probe_program`]): if the kernel runs it, steps use
//!   that unlisted host handler.
//!
//! Otherwise: "linux/arm64 needs qemu-user-static (apt install qemu-user-static) or a native
//! worker".

use imgfarm_common::platform::Platform;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where binfmt_misc is usually mounted.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// Directories searched for qemu interpreters (Debian's `-binfmt-P` wrappers first).
const QEMU_DIRS: [&str; 3] = ["/usr/libexec/qemu-binfmt", "/usr/bin", "/usr/local/bin"];
/// Largest binfmt_misc entry file read.
const MAX_ENTRY: u64 = 64 << 10;

/// A qemu interpreter to register in a private binfmt_misc instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Emulator {
    /// Entry name (e.g. `imgfarm-aarch64`).
    pub name: String,
    /// Interpreter path on the host (opened at registration: flag `F`).
    pub interpreter: PathBuf,
    /// ELF header bytes to match.
    pub magic: Vec<u8>,
    /// Mask applied before matching.
    pub mask: Vec<u8>,
    /// Flags (`PF`, or `F` for an interpreter that cannot preserve argv[0]).
    pub flags: String,
}

impl Emulator {
    /// The line written to `register`: `:name:M:0:magic:mask:interpreter:flags`, with magic
    /// and mask as `\xHH` escapes.
    pub fn register_line(&self) -> String {
        let hex = |b: &[u8]| {
            let mut s = String::new();
            for x in b {
                let _ = write!(s, "\\x{x:02x}");
            }
            s
        };
        format!(
            ":{}:M:0:{}:{}:{}:{}",
            self.name,
            hex(&self.magic),
            hex(&self.mask),
            self.interpreter.display(),
            self.flags
        )
    }
}

/// A registered host handler (one file of the binfmt_misc dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// Entry name.
    pub name: String,
    /// `enabled` line present.
    pub enabled: bool,
    /// Interpreter path.
    pub interpreter: PathBuf,
    /// Flags letters.
    pub flags: String,
    /// Offset of the magic.
    pub offset: usize,
    /// Magic bytes (empty for extension entries).
    pub magic: Vec<u8>,
    /// Mask bytes (empty means all ones).
    pub mask: Vec<u8>,
}

impl Handler {
    /// Does this handler take ELF executables whose header starts with `header`?
    pub fn matches(&self, header: &[u8]) -> bool {
        if !self.enabled || self.magic.is_empty() {
            return false;
        }
        let Some(h) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        h.iter().zip(&self.magic).enumerate().all(|(i, (b, m))| {
            let k = self.mask.get(i).copied().unwrap_or(0xff);
            b & k == m & k
        })
    }
}

/// How a step for a platform runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmulationMode {
    /// Native execution.
    Native,
    /// A host binfmt_misc handler (named) with the F flag handles it.
    HostBinfmt(String),
    /// A private binfmt_misc instance in the build's namespaces.
    Private(Emulator),
}

impl EmulationMode {
    /// The emulator to pass in [`crate::executor::ExecRequest::emulation`].
    pub fn emulator(&self) -> Option<Emulator> {
        match self {
            EmulationMode::Private(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// Whether progress output should mark the step as emulated.
    pub fn is_emulated(&self) -> bool {
        !matches!(self, EmulationMode::Native)
    }
}

/// The platform cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmulationError {
    /// No handler and no qemu.
    #[error("{platform} needs qemu-user-static (apt install qemu-user-static) or a native worker")]
    NoEmulator {
        /// The target platform.
        platform: String,
    },
    /// We do not know the ELF machine of this architecture.
    #[error("{platform} is not a platform imgfarm can emulate (known: amd64, 386, arm64, arm, riscv64, ppc64le, s390x)")]
    Unknown {
        /// The target platform.
        platform: String,
    },
    /// The kernel is too old for a private binfmt_misc and the host has no handler.
    #[error(
        "{platform} needs a binfmt_misc handler: Linux {kernel} cannot register one inside a \
         user namespace (needs 6.7); ask root to run `update-binfmts --enable qemu-{qemu}` \
         (flags must include F), or use a native worker"
    )]
    OldKernel {
        /// The target platform.
        platform: String,
        /// Kernel release.
        kernel: String,
        /// qemu's name of the architecture.
        qemu: String,
    },
    /// binfmt_misc is not mounted here (a container's /proc), no qemu is installed, and the
    /// kernel did not run the probe program, so no host handler serves this platform either.
    #[error(
        "{platform} needs a binfmt_misc handler: none is listed ({dir} is not mounted here, as \
         inside a container) and a {platform} test program did not run ({probe}); register \
         qemu on the host with the F flag (`update-binfmts --enable qemu-{qemu}`, as \
         scripts/setup.sh does), or install qemu-user-static here (imgfarm's image: \
         --build-arg WITH_QEMU=1; Linux 6.7 or later), or use a native worker"
    )]
    NoVisibleHandler {
        /// The target platform.
        platform: String,
        /// The binfmt_misc directory looked at.
        dir: String,
        /// What the probe did.
        probe: String,
        /// qemu's name of the architecture.
        qemu: String,
    },
    /// binfmt_misc is not mounted here and the probe program could not tell whether a host
    /// handler serves the platform (a noexec directory, a handler without the F flag, …).
    #[error(
        "{platform} needs a binfmt_misc handler: none is listed ({dir} is not mounted here, as \
         inside a container) and probing for a host handler failed: {probe}"
    )]
    ProbeFailed {
        /// The target platform.
        platform: String,
        /// The binfmt_misc directory looked at.
        dir: String,
        /// Why the probe could not tell.
        probe: String,
    },
    /// Not Linux.
    #[error("{platform}: only linux platforms can run steps")]
    NotLinux {
        /// The target platform.
        platform: String,
    },
}

/// qemu's name for an architecture, and the ELF magic/mask qemu's binfmt scripts register.
struct ArchInfo {
    qemu: &'static str,
    magic: &'static [u8],
    mask: &'static [u8],
}

const ELF64_MASK: &[u8] =
    b"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff";
const ELF32_MASK: &[u8] = ELF64_MASK;

fn arch_info(p: &Platform) -> Option<ArchInfo> {
    let (qemu, magic): (&str, &[u8]) = match p.architecture.as_str() {
        "amd64" => (
            "x86_64",
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00",
        ),
        "386" => (
            "i386",
            b"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00",
        ),
        "arm64" => (
            "aarch64",
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
        ),
        "arm" => (
            "arm",
            b"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00",
        ),
        "riscv64" => (
            "riscv64",
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00",
        ),
        "ppc64le" => (
            "ppc64le",
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00",
        ),
        "s390x" => (
            "s390x",
            b"\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16",
        ),
        _ => return None,
    };
    let mask = if magic[4] == 1 {
        ELF32_MASK
    } else {
        ELF64_MASK
    };
    Some(ArchInfo { qemu, magic, mask })
}

/// Platforms the host runs natively: its own, plus 32-bit x86 on amd64 and arm/v7 on arm64
/// (as BuildKit's `archutil` reports when the CPU supports them; assumed here).
pub fn native_platforms(host: &Platform) -> Vec<Platform> {
    let mut v = vec![host.clone()];
    match host.architecture.as_str() {
        "amd64" => v.push(Platform::new("linux", "386", "")),
        "arm64" => v.push(Platform::new("linux", "arm", "v7")),
        _ => {}
    }
    v
}

/// Parse one binfmt_misc entry file (the format `cat /proc/sys/fs/binfmt_misc/NAME` shows).
pub fn parse_handler(name: &str, text: &str) -> Handler {
    let mut h = Handler {
        name: name.into(),
        enabled: false,
        interpreter: PathBuf::new(),
        flags: String::new(),
        offset: 0,
        magic: Vec::new(),
        mask: Vec::new(),
    };
    for line in text.lines() {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        match k {
            "enabled" => h.enabled = true,
            "interpreter" => h.interpreter = PathBuf::from(v),
            "flags:" => h.flags = v.trim().into(),
            "offset" => h.offset = v.trim().parse().unwrap_or(0),
            "magic" => h.magic = unhex(v.trim()),
            "mask" => h.mask = unhex(v.trim()),
            _ => {}
        }
    }
    h
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| s.get(2 * i..2 * i + 2))
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect()
}

/// The handlers registered in `dir` (empty when binfmt_misc is not mounted there).
pub fn host_handlers(dir: &Path) -> Vec<Handler> {
    use std::io::Read;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        let mut text = String::new();
        if let Ok(f) = std::fs::File::open(e.path()) {
            let _ = f.take(MAX_ENTRY).read_to_string(&mut text);
        }
        out.push(parse_handler(&name, &text));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The qemu-user-static interpreter for `platform` found in `dirs`, with the flags it
/// supports: Debian's `<arch>-binfmt-P` wrapper takes `PF`; a plain `qemu-<arch>-static`
/// gets `F` only.
pub fn find_emulator_in(platform: &Platform, dirs: &[&Path]) -> Option<Emulator> {
    let info = arch_info(platform)?;
    for d in dirs {
        for (file, flags) in [
            (format!("{}-binfmt-P", info.qemu), "PF"),
            (format!("qemu-{}-static", info.qemu), "F"),
        ] {
            let p = d.join(&file);
            if p.is_file() {
                return Some(Emulator {
                    name: format!("imgfarm-{}", info.qemu),
                    interpreter: p,
                    magic: info.magic.to_vec(),
                    mask: info.mask.to_vec(),
                    flags: flags.into(),
                });
            }
        }
    }
    None
}

/// Whether a kernel release (`uname -r`, e.g. `6.18.44-fc`) lets a user namespace mount
/// its own binfmt_misc instance (Linux 6.7, "binfmt_misc: enable sandboxed mounts").
pub fn kernel_has_private_binfmt(release: &str) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = it.next().unwrap_or(0);
    let minor = it.next().unwrap_or(0);
    (major, minor) >= (6, 7)
}

/// Decide how to run steps for `target` on a host `host` with `handlers` registered,
/// `emulator` found and kernel release `kernel` (pure; see [`resolve`]).
pub fn decide(
    target: &Platform,
    host: &Platform,
    handlers: &[Handler],
    emulator: Option<Emulator>,
    kernel: &str,
) -> Result<EmulationMode, EmulationError> {
    let name = target.to_string();
    if target.os != "linux" {
        return Err(EmulationError::NotLinux { platform: name });
    }
    if native_platforms(host).iter().any(|n| n.matches(target)) {
        return Ok(EmulationMode::Native);
    }
    let Some(info) = arch_info(target) else {
        return Err(EmulationError::Unknown { platform: name });
    };
    if let Some(h) = handlers
        .iter()
        .find(|h| h.flags.contains('F') && h.matches(info.magic))
    {
        return Ok(EmulationMode::HostBinfmt(h.name.clone()));
    }
    match emulator {
        Some(_) if !kernel_has_private_binfmt(kernel) => Err(EmulationError::OldKernel {
            platform: name,
            kernel: kernel.into(),
            qemu: info.qemu.into(),
        }),
        Some(e) => Ok(EmulationMode::Private(e)),
        None => Err(EmulationError::NoEmulator { platform: name }),
    }
}

/// How to run `target`, resolved as `mode`, when its steps are filtered by the host's
/// seccomp profile ([`crate::executor::seccomp`]): a 32-bit platform the host runs natively
/// (linux/386 on amd64, linux/arm/v7 on arm64) makes syscalls of another audit
/// architecture, which the host filter kills, so it runs under its qemu in a private
/// binfmt_misc instance instead (qemu's syscalls are the host's). Other modes are kept.
pub fn under_seccomp(
    mode: EmulationMode,
    target: &Platform,
    host: &Platform,
    emulator: impl FnOnce() -> Result<Emulator, EmulationError>,
) -> Result<EmulationMode, EmulationError> {
    match mode {
        EmulationMode::Native if target.architecture != host.architecture => {
            Ok(EmulationMode::Private(emulator()?))
        }
        other => Ok(other),
    }
}

/// The name [`EmulationMode::HostBinfmt`] carries for a host handler found by the probe
/// rather than listed.
pub const UNLISTED_HANDLER: &str = "host handler (binfmt_misc not mounted here)";

/// A static linux/arm64 program that calls `exit(0)` (ELF header, one `PT_LOAD` program
/// header, three instructions: `mov x0, #0; mov x8, #93; svc #0`), 132 bytes.
const PROBE_AARCH64: [u8; 132] = {
    let mut b = [0u8; 132];
    let head: [u8; 64] = [
        0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ELF64, LE, SysV
        2, 0, 0xb7, 0, 1, 0, 0, 0, // ET_EXEC, EM_AARCH64, EV_CURRENT
        0x78, 0, 0x40, 0, 0, 0, 0, 0, // e_entry 0x400078
        0x40, 0, 0, 0, 0, 0, 0, 0, // e_phoff 64
        0, 0, 0, 0, 0, 0, 0, 0, // e_shoff
        0, 0, 0, 0, // e_flags
        64, 0, 56, 0, 1, 0, // e_ehsize, e_phentsize, e_phnum
        0, 0, 0, 0, 0, 0, // e_shentsize, e_shnum, e_shstrndx
    ];
    let phdr: [u8; 56] = [
        1, 0, 0, 0, 5, 0, 0, 0, // PT_LOAD, PF_R | PF_X
        0, 0, 0, 0, 0, 0, 0, 0, // p_offset 0
        0, 0, 0x40, 0, 0, 0, 0, 0, // p_vaddr 0x400000
        0, 0, 0x40, 0, 0, 0, 0, 0, // p_paddr
        132, 0, 0, 0, 0, 0, 0, 0, // p_filesz
        132, 0, 0, 0, 0, 0, 0, 0, // p_memsz
        0, 0x10, 0, 0, 0, 0, 0, 0, // p_align 0x1000
    ];
    let code: [u8; 12] = [
        0x00, 0x00, 0x80, 0xd2, // mov x0, #0
        0xa8, 0x0b, 0x80, 0xd2, // mov x8, #93 (exit)
        0x01, 0x00, 0x00, 0xd4, // svc #0
    ];
    let mut i = 0;
    while i < 64 {
        b[i] = head[i];
        i += 1;
    }
    while i < 120 {
        b[i] = phdr[i - 64];
        i += 1;
    }
    while i < 132 {
        b[i] = code[i - 120];
        i += 1;
    }
    b
};

/// The program [`resolve`] runs to learn whether an unlisted host handler serves `target`
/// (only linux/arm64 has one: the platform farms emulate).
pub fn probe_program(target: &Platform) -> Option<&'static [u8]> {
    (target.os == "linux" && target.architecture == "arm64").then_some(&PROBE_AARCH64[..])
}

/// What running the probe program gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// There is no probe program for the platform.
    NoProgram,
    /// It ran and exited 0.
    Ran,
    /// The kernel has no handler for it (`ENOEXEC`, `Exec format error (os error 8)`): why.
    NoHandler(String),
    /// It could not tell (a noexec directory, a handler whose interpreter is not visible
    /// here, a transient error): why, for the operator.
    Failed(String),
}

/// [`decide`]'s answer `decided` revised for a binfmt_misc that is not mounted where we
/// looked (`binfmt_mounted` false, as inside a container): when no emulator was found, a
/// host handler may still serve the platform, so `probe` runs the platform's program. Pure
/// but for `probe`, which is only called in that case.
pub fn decide_unlisted(
    target: &Platform,
    decided: Result<EmulationMode, EmulationError>,
    binfmt_mounted: bool,
    dir: &Path,
    probe: impl FnOnce() -> Probe,
) -> Result<EmulationMode, EmulationError> {
    let unlisted = matches!(
        decided,
        Err(EmulationError::NoEmulator { .. } | EmulationError::OldKernel { .. })
    );
    if binfmt_mounted || !unlisted {
        return decided;
    }
    match probe() {
        Probe::NoProgram => decided,
        Probe::Ran => Ok(EmulationMode::HostBinfmt(UNLISTED_HANDLER.into())),
        Probe::NoHandler(why) => Err(EmulationError::NoVisibleHandler {
            platform: target.to_string(),
            qemu: arch_info(target).map_or_else(|| "ARCH".into(), |i| i.qemu.into()),
            dir: dir.display().to_string(),
            probe: why,
        }),
        Probe::Failed(why) => Err(EmulationError::ProbeFailed {
            platform: target.to_string(),
            dir: dir.display().to_string(),
            probe: why,
        }),
    }
}

/// Run `program` from a fresh file (created `O_EXCL`, mode 0700) in a private directory
/// (mode 0700) made in `dir`, so the kernel picks the binfmt_misc handler, if any, for it;
/// both are removed after. `dir` must allow exec: the worker's state directory, which holds
/// the overlay snapshots anyway (a `--tmpfs /tmp` is noexec).
pub fn run_probe(program: &[u8], dir: &Path) -> Probe {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let private = match tempfile::Builder::new()
        .prefix(".imgfarm-binfmt-probe-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
    {
        Ok(d) => d,
        Err(e) => return Probe::Failed(format!("creating it in {}: {e}", dir.display())),
    };
    let path = private.path().join("probe");
    // The write handle is closed before the exec (else ETXTBSY).
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(program)?;
            f.sync_all()
        });
    if let Err(e) = written {
        return Probe::Failed(format!("writing {}: {e}", path.display()));
    }
    let mut last = String::new();
    for _ in 0..5 {
        match std::process::Command::new(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            Ok(st) if st.success() => return Probe::Ran,
            Ok(st) => return Probe::Failed(format!("it ran but {st}")),
            // Another thread's fork may still hold the write handle for a moment.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                last = e.to_string();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return exec_failure(&e, dir, path.exists()),
        }
    }
    Probe::Failed(format!("running it from {}: {last}", dir.display()))
}

/// What an exec of the probe file (in `dir`; `exists` whether the file is still there)
/// failing with `e` says.
pub fn exec_failure(e: &std::io::Error, dir: &Path, exists: bool) -> Probe {
    match e.raw_os_error() {
        Some(libc::ENOEXEC) => Probe::NoHandler(format!("running it from {}: {e}", dir.display())),
        Some(libc::EACCES) => Probe::Failed(format!(
            "the directory {} is mounted noexec: no program can run from it ({e}); put the \
             state directory on a filesystem that allows exec (it holds the overlay snapshots \
             too; e.g. `--tmpfs /path:exec`, or a volume)",
            dir.display()
        )),
        Some(libc::ENOENT) if exists => Probe::Failed(format!(
            "a binfmt_misc handler exists but without the F flag (its interpreter is not \
             visible here): running it from {} gave {e}; register qemu on the host with the \
             F flag (`update-binfmts --enable`, as scripts/setup.sh does, or \
             tonistiigi/binfmt --install), or install qemu-user-static here",
            dir.display()
        )),
        _ => Probe::Failed(format!("running it from {}: {e}", dir.display())),
    }
}

/// Probe results kept for the process lifetime, by platform.
type ProbeCache = std::sync::Mutex<Option<std::collections::HashMap<String, Probe>>>;

/// `run` for `key` unless `cache` holds its answer. Only definitive answers are kept
/// ([`Probe::Ran`], [`Probe::NoHandler`]); a failure (noexec directory, disk full, a file
/// still busy) is tried again on the next call.
fn probe_once(cache: &ProbeCache, key: &str, run: impl FnOnce() -> Probe) -> Probe {
    let mut g = cache.lock().unwrap_or_else(|e| e.into_inner());
    let map = g.get_or_insert_with(Default::default);
    if let Some(p) = map.get(key) {
        return p.clone();
    }
    let p = run();
    if matches!(p, Probe::Ran | Probe::NoHandler(_)) {
        map.insert(key.to_string(), p.clone());
    }
    p
}

/// [`run_probe`] in `dir`, once per platform per process (see [`probe_once`]).
fn cached_probe(target: &Platform, dir: &Path) -> Probe {
    static DONE: ProbeCache = std::sync::Mutex::new(None);
    let Some(program) = probe_program(target) else {
        return Probe::NoProgram;
    };
    probe_once(&DONE, &target.to_string(), || run_probe(program, dir))
}

/// [`decide`] for this machine: the host platform, the handlers in [`BINFMT_DIR`], the
/// qemu found in `/usr/libexec/qemu-binfmt`, `/usr/bin` or `/usr/local/bin`, and the
/// running kernel; then [`decide_unlisted`] when binfmt_misc is not mounted there.
/// The probe runs in the system temp dir: prefer [`resolve_in`] with the state directory.
pub fn resolve(target: &Platform) -> Result<EmulationMode, EmulationError> {
    resolve_in(target, &std::env::temp_dir())
}

/// [`resolve`], running the probe (if any) from a private directory in `state` (the worker's
/// or build's state directory, which allows exec as it holds the overlay snapshots).
pub fn resolve_in(target: &Platform, state: &Path) -> Result<EmulationMode, EmulationError> {
    let dirs: Vec<&Path> = QEMU_DIRS.iter().map(Path::new).collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let binfmt = Path::new(BINFMT_DIR);
    let decided = decide(
        target,
        &Platform::host(),
        &host_handlers(binfmt),
        find_emulator_in(target, &dirs),
        &kernel,
    );
    decide_unlisted(
        target,
        decided,
        binfmt.join("status").exists(),
        binfmt,
        || cached_probe(target, state),
    )
}

/// The private emulator for `target` regardless of host handlers (forces the private
/// binfmt_misc path, e.g. to prove it works without root).
pub fn private_emulator(target: &Platform) -> Result<Emulator, EmulationError> {
    let dirs: Vec<&Path> = QEMU_DIRS.iter().map(Path::new).collect();
    find_emulator_in(target, &dirs).ok_or_else(|| EmulationError::NoEmulator {
        platform: target.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_seccomp_32_bit_native_platforms_go_through_qemu() {
        let amd64 = Platform::new("linux", "amd64", "");
        let i386 = Platform::new("linux", "386", "");
        let qemu = Emulator {
            name: "imgfarm-i386".into(),
            interpreter: "/usr/bin/qemu-i386-static".into(),
            magic: Vec::new(),
            mask: Vec::new(),
            flags: "F".into(),
        };
        let found = || Ok(qemu.clone());
        assert_eq!(
            under_seccomp(EmulationMode::Native, &i386, &amd64, found),
            Ok(EmulationMode::Private(qemu.clone()))
        );
        assert_eq!(
            under_seccomp(EmulationMode::Native, &amd64, &amd64, found),
            Ok(EmulationMode::Native)
        );
        let host = EmulationMode::HostBinfmt("qemu-aarch64".into());
        assert_eq!(under_seccomp(host.clone(), &i386, &amd64, found), Ok(host));
        let none = || {
            Err(EmulationError::NoEmulator {
                platform: "linux/386".into(),
            })
        };
        assert!(under_seccomp(EmulationMode::Native, &i386, &amd64, none).is_err());
    }

    const DEBIAN_ENTRY: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    const K: &str = "6.18.44-fc-v657";

    fn arm64() -> Platform {
        Platform::linux_arm64()
    }

    fn emu() -> Emulator {
        Emulator {
            name: "imgfarm-aarch64".into(),
            interpreter: "/q".into(),
            magic: vec![1],
            mask: vec![1],
            flags: "PF".into(),
        }
    }

    #[test]
    fn parses_debian_entry_and_matches_arm64_elf() {
        let h = parse_handler("qemu-aarch64", DEBIAN_ENTRY);
        assert!(h.enabled);
        assert_eq!(h.flags, "PF");
        assert_eq!(h.magic.len(), 20);
        let info = arch_info(&arm64()).expect("arm64");
        assert!(h.matches(info.magic));
        let amd = arch_info(&Platform::linux_amd64()).expect("amd64");
        assert!(!h.matches(amd.magic));
    }

    #[test]
    fn native_wins() {
        let host = Platform::linux_amd64();
        assert_eq!(
            decide(&host, &host, &[], None, K),
            Ok(EmulationMode::Native)
        );
        assert_eq!(
            decide(&Platform::new("linux", "386", ""), &host, &[], None, K),
            Ok(EmulationMode::Native)
        );
    }

    #[test]
    fn host_handler_needs_f_flag_and_enabled() {
        let host = Platform::linux_amd64();
        let h = parse_handler("qemu-aarch64", DEBIAN_ENTRY);
        assert_eq!(
            decide(&arm64(), &host, std::slice::from_ref(&h), None, K),
            Ok(EmulationMode::HostBinfmt("qemu-aarch64".into()))
        );
        let no_f = Handler {
            flags: "P".into(),
            ..h.clone()
        };
        assert_eq!(
            decide(&arm64(), &host, &[no_f], Some(emu()), K),
            Ok(EmulationMode::Private(emu()))
        );
        let disabled = Handler {
            enabled: false,
            ..h
        };
        assert_eq!(
            decide(&arm64(), &host, &[disabled], Some(emu()), K),
            Ok(EmulationMode::Private(emu()))
        );
    }

    #[test]
    fn missing_qemu_message() {
        let e = decide(&arm64(), &Platform::linux_amd64(), &[], None, K).expect_err("no qemu");
        assert_eq!(
            e.to_string(),
            "linux/arm64 needs qemu-user-static (apt install qemu-user-static) or a native worker"
        );
    }

    #[test]
    fn unknown_and_non_linux() {
        let host = Platform::linux_amd64();
        assert!(matches!(
            decide(&Platform::new("linux", "mips64", ""), &host, &[], None, K),
            Err(EmulationError::Unknown { .. })
        ));
        assert!(matches!(
            decide(&Platform::new("windows", "arm64", ""), &host, &[], None, K),
            Err(EmulationError::NotLinux { .. })
        ));
    }

    #[test]
    fn old_kernels_need_a_host_handler() {
        assert!(kernel_has_private_binfmt("6.7.0"));
        assert!(kernel_has_private_binfmt("6.18.44-fc-v657"));
        assert!(!kernel_has_private_binfmt("6.6.30-amd64"));
        assert!(!kernel_has_private_binfmt("5.15.0"));
        assert!(!kernel_has_private_binfmt("garbage"));
        let e = decide(
            &arm64(),
            &Platform::linux_amd64(),
            &[],
            Some(emu()),
            "6.1.0-18-amd64",
        )
        .expect_err("old kernel");
        assert!(
            e.to_string()
                .contains("update-binfmts --enable qemu-aarch64"),
            "{e}"
        );
        let h = parse_handler("qemu-aarch64", DEBIAN_ENTRY);
        assert_eq!(
            decide(
                &arm64(),
                &Platform::linux_amd64(),
                &[h],
                Some(emu()),
                "6.1.0"
            ),
            Ok(EmulationMode::HostBinfmt("qemu-aarch64".into()))
        );
    }

    #[test]
    fn unlisted_host_handler_is_probed_only_when_binfmt_misc_is_not_mounted() {
        let host = Platform::linux_amd64();
        let dir = Path::new(BINFMT_DIR);
        let no_qemu = || decide(&arm64(), &host, &[], None, K);
        let never = || -> Probe { panic!("probed although binfmt_misc is mounted") };
        // Mounted and empty: the answer stands, nothing runs.
        assert_eq!(
            decide_unlisted(&arm64(), no_qemu(), true, dir, never),
            no_qemu()
        );
        // A listed handler or a native platform: nothing runs either.
        let h = parse_handler("qemu-aarch64", DEBIAN_ENTRY);
        let listed = decide(&arm64(), &host, std::slice::from_ref(&h), None, K);
        assert_eq!(
            decide_unlisted(&arm64(), listed.clone(), false, dir, never),
            listed
        );
        let native = decide(&host, &host, &[], None, K);
        assert_eq!(
            decide_unlisted(&host, native.clone(), false, dir, never),
            native
        );
        // Not mounted (a container's /proc): the probe decides.
        assert_eq!(
            decide_unlisted(&arm64(), no_qemu(), false, dir, || Probe::Ran),
            Ok(EmulationMode::HostBinfmt(UNLISTED_HANDLER.into()))
        );
        let old = decide(&arm64(), &host, &[], Some(emu()), "6.1.0");
        assert_eq!(
            decide_unlisted(&arm64(), old, false, dir, || Probe::Ran),
            Ok(EmulationMode::HostBinfmt(UNLISTED_HANDLER.into()))
        );
        assert_eq!(
            decide_unlisted(&arm64(), no_qemu(), false, dir, || Probe::NoProgram),
            no_qemu()
        );
        let e = decide_unlisted(&arm64(), no_qemu(), false, dir, || {
            Probe::NoHandler("Exec format error (os error 8)".into())
        })
        .expect_err("no handler");
        assert_eq!(
            e.to_string(),
            "linux/arm64 needs a binfmt_misc handler: none is listed (/proc/sys/fs/binfmt_misc is \
             not mounted here, as inside a container) and a linux/arm64 test program did not run \
             (Exec format error (os error 8)); register qemu on the host with the F flag \
             (`update-binfmts --enable qemu-aarch64`, as scripts/setup.sh does), or install \
             qemu-user-static here (imgfarm's image: --build-arg WITH_QEMU=1; Linux 6.7 or \
             later), or use a native worker"
        );
    }

    #[test]
    fn probe_program_is_a_static_arm64_elf() {
        let p = probe_program(&arm64()).expect("arm64 has one");
        let info = arch_info(&arm64()).expect("arm64");
        let h = Handler {
            name: "x".into(),
            enabled: true,
            interpreter: PathBuf::new(),
            flags: "F".into(),
            offset: 0,
            magic: info.magic.to_vec(),
            mask: info.mask.to_vec(),
        };
        assert!(h.matches(&p[..20]), "qemu's arm64 magic matches it");
        assert_eq!(p.len(), 132);
        assert_eq!(u64::from_le_bytes(p[24..32].try_into().unwrap()), 0x400078);
        assert!(probe_program(&Platform::new("linux", "riscv64", "")).is_none());
    }

    /// On a host with a qemu-aarch64 handler (flag F) the probe runs; with none it fails with
    /// the kernel's `Exec format error`.
    #[test]
    fn probe_runs_under_the_host_handler() {
        let listed = host_handlers(Path::new(BINFMT_DIR));
        let info = arch_info(&arm64()).expect("arm64");
        let served = listed
            .iter()
            .any(|h| h.enabled && h.flags.contains('F') && h.matches(info.magic));
        let dir = tempfile::tempdir().expect("temp dir");
        let got = run_probe(probe_program(&arm64()).expect("program"), dir.path());
        if served {
            assert_eq!(got, Probe::Ran);
        } else if listed.is_empty() && !Path::new(BINFMT_DIR).join("status").exists() {
            eprintln!("binfmt_misc not mounted: probe gave {got:?}");
        } else {
            assert!(
                matches!(&got, Probe::NoHandler(w) if w.contains("Exec format error")),
                "{got:?}"
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "the probe file is removed"
        );
        let gone = run_probe(
            probe_program(&arm64()).expect("program"),
            Path::new("/nonexistent"),
        );
        assert!(
            matches!(&gone, Probe::Failed(w) if w.starts_with("creating it in /nonexistent")),
            "{gone:?}"
        );
    }

    /// The errno of the probe's exec decides what the operator is told: only ENOEXEC means
    /// "no handler"; a noexec directory and a handler without F are named as such.
    #[test]
    fn probe_exec_errors_are_told_apart() {
        let dir = Path::new("/var/lib/imgfarm");
        let err = std::io::Error::from_raw_os_error;
        assert!(matches!(exec_failure(&err(libc::ENOEXEC), dir, true),
                Probe::NoHandler(w) if w.contains("Exec format error")),);
        let noexec = exec_failure(&err(libc::EACCES), dir, true);
        assert!(
            matches!(&noexec, Probe::Failed(w)
                if w.starts_with("the directory /var/lib/imgfarm is mounted noexec: ")),
            "{noexec:?}"
        );
        let no_f = exec_failure(&err(libc::ENOENT), dir, true);
        assert!(
            matches!(&no_f, Probe::Failed(w) if w.starts_with(
                "a binfmt_misc handler exists but without the F flag (its interpreter is not \
                 visible here)")),
            "{no_f:?}"
        );
        // The file itself gone: nothing to say about handlers.
        assert_eq!(
            exec_failure(&err(libc::ENOENT), dir, false),
            Probe::Failed(format!(
                "running it from /var/lib/imgfarm: {}",
                err(libc::ENOENT)
            ))
        );
        // A probe that could not tell does not send the operator to register qemu.
        let host = Platform::linux_amd64();
        let no_qemu = decide(&arm64(), &host, &[], None, K);
        let e = decide_unlisted(&arm64(), no_qemu, false, Path::new(BINFMT_DIR), || noexec)
            .expect_err("not run");
        let text = e.to_string();
        assert!(text.contains("is mounted noexec"), "{text}");
        assert!(!text.contains("register qemu on the host"), "{text}");
    }

    /// Only `Ran` and "no handler" are kept; a failure (noexec, disk full, busy file) is
    /// probed again on the next call.
    #[test]
    fn only_definitive_probe_answers_are_cached() {
        let cache: ProbeCache = std::sync::Mutex::new(None);
        let calls = std::cell::Cell::new(0);
        let run = |p: Probe| {
            || {
                calls.set(calls.get() + 1);
                p
            }
        };
        let busy = Probe::Failed("Text file busy (os error 26)".into());
        assert_eq!(probe_once(&cache, "a", run(busy.clone())), busy);
        assert_eq!(probe_once(&cache, "a", run(Probe::Ran)), Probe::Ran);
        assert_eq!(calls.get(), 2, "the failure was not cached");
        assert_eq!(probe_once(&cache, "a", run(busy.clone())), Probe::Ran);
        assert_eq!(calls.get(), 2, "Ran was cached");
        let none = Probe::NoHandler("Exec format error (os error 8)".into());
        assert_eq!(probe_once(&cache, "b", run(none.clone())), none);
        assert_eq!(probe_once(&cache, "b", run(Probe::Ran)), none);
        assert_eq!(calls.get(), 3, "no handler was cached");
    }

    /// Run from a noexec mount (root only: it mounts a tmpfs), the probe says so instead of
    /// "no handler"; the private directory is removed.
    #[test]
    fn probe_in_a_noexec_dir_says_noexec() {
        if !imgfarm_testkit::require_root_or_skip("probe_in_a_noexec_dir_says_noexec") {
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let c = |s: &str| std::ffi::CString::new(s).expect("cstr");
        let target = c(dir.path().to_str().expect("utf-8"));
        // SAFETY: plain mount(2)/umount2(2) with valid NUL-terminated strings.
        let r = unsafe {
            libc::mount(
                c("tmpfs").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                libc::MS_NOEXEC | libc::MS_NOSUID | libc::MS_NODEV,
                c("mode=0755").as_ptr().cast(),
            )
        };
        if r != 0 {
            imgfarm_testkit::skip(
                "probe_in_a_noexec_dir_says_noexec",
                &format!(
                    "mounting a tmpfs failed: {}",
                    std::io::Error::last_os_error()
                ),
            );
            return;
        }
        let got = run_probe(probe_program(&arm64()).expect("program"), dir.path());
        let left = std::fs::read_dir(dir.path()).expect("dir").count();
        // SAFETY: as above.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        assert!(
            matches!(&got, Probe::Failed(w) if w.contains("is mounted noexec")),
            "{got:?}"
        );
        assert_eq!(left, 0, "the private directory is removed");
    }

    #[test]
    fn register_line_format() {
        let e = Emulator {
            name: "imgfarm-aarch64".into(),
            interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into(),
            magic: vec![0x7f, 0x45],
            mask: vec![0xff, 0xfe],
            flags: "PF".into(),
        };
        assert_eq!(
            e.register_line(),
            ":imgfarm-aarch64:M:0:\\x7f\\x45:\\xff\\xfe:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:PF"
        );
    }

    #[test]
    fn finds_wrapper_before_plain_static() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::write(d.path().join("qemu-aarch64-static"), b"").expect("w");
        let e = find_emulator_in(&arm64(), &[d.path()]).expect("found");
        assert_eq!(e.flags, "F");
        std::fs::write(d.path().join("aarch64-binfmt-P"), b"").expect("w");
        let e = find_emulator_in(&arm64(), &[d.path()]).expect("found");
        assert_eq!(e.flags, "PF");
        assert!(e.interpreter.ends_with("aarch64-binfmt-P"));
        assert!(find_emulator_in(&Platform::new("linux", "riscv64", ""), &[d.path()]).is_none());
    }
}
