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

/// [`decide`] for this machine: the host platform, the handlers in [`BINFMT_DIR`], the
/// qemu found in `/usr/libexec/qemu-binfmt`, `/usr/bin` or `/usr/local/bin`, and the
/// running kernel.
pub fn resolve(target: &Platform) -> Result<EmulationMode, EmulationError> {
    let dirs: Vec<&Path> = QEMU_DIRS.iter().map(Path::new).collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    decide(
        target,
        &Platform::host(),
        &host_handlers(Path::new(BINFMT_DIR)),
        find_emulator_in(target, &dirs),
        &kernel,
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
