//! The narrow set of system calls the container setup makes, behind a trait so the mount and
//! namespace plan can be unit-tested without privileges (as youki's
//! `libcontainer::syscall::Syscall` does): [`LinuxSyscalls`] calls the kernel through nix,
//! [`RecordingSyscalls`] records the calls and answers from a scripted filesystem.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What is at a path (never following a final symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// Nothing.
    Missing,
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink with this target.
    Symlink(PathBuf),
    /// Anything else (device, fifo, socket).
    Other,
}

/// The system calls the executor needs inside its namespaces.
pub trait Syscalls {
    /// mount(2).
    fn mount(
        &mut self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    /// umount2(2).
    fn umount2(&mut self, target: &Path, flags: MntFlags) -> Result<(), Errno>;
    /// Mount flags (MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RDONLY, atime flags) of the mount
    /// holding `path`, from statvfs(3); a remount must keep the locked ones.
    fn mount_flags(&mut self, path: &Path) -> Result<MsFlags, Errno>;
    /// chdir(2).
    fn chdir(&mut self, path: &Path) -> Result<(), Errno>;
    /// pivot_root(2).
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno>;
    /// What is at `path` (lstat).
    fn kind(&mut self, path: &Path) -> Result<FileKind, Errno>;
    /// mkdir(2) of one directory.
    fn mkdir(&mut self, path: &Path, mode: u32) -> Result<(), Errno>;
    /// Create an empty regular file (O_CREAT|O_EXCL).
    fn create_file(&mut self, path: &Path, mode: u32) -> Result<(), Errno>;
    /// Write a whole file (create or truncate) with `mode`, then chown it.
    fn write_file(
        &mut self,
        path: &Path,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), Errno>;
    /// Read at most `max` bytes of a file.
    fn read_file(&mut self, path: &Path, max: u64) -> Result<Vec<u8>, Errno>;
    /// symlink(2).
    fn symlink(&mut self, target: &str, link: &Path) -> Result<(), Errno>;
    /// sethostname(2).
    fn sethostname(&mut self, name: &str) -> Result<(), Errno>;
    /// Bring the loopback interface up (SIOCSIFFLAGS IFF_UP on `lo`).
    fn loopback_up(&mut self) -> Result<(), Errno>;
    /// Add an `unreachable` route for `dst/prefix` to the main table of the current network
    /// namespace (rtnetlink `RTM_NEWROUTE`, as `ip route add unreachable DST/PREFIX`).
    fn add_unreachable_route(&mut self, dst: IpAddr, prefix: u8) -> Result<(), Errno>;
    /// Drop every capability not in `keep` from the bounding set (PR_CAPBSET_DROP).
    fn drop_bounding_except(&mut self, keep: u64) -> Result<(), Errno>;
    /// setgroups(2).
    fn setgroups(&mut self, gids: &[u32]) -> Result<(), Errno>;
    /// setresgid(2) then setresuid(2) to one id each.
    fn set_ids(&mut self, uid: u32, gid: u32) -> Result<(), Errno>;
    /// capset(2): effective, permitted and inheritable sets; clears the ambient set.
    fn set_caps(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno>;
    /// prctl(PR_SET_NO_NEW_PRIVS).
    fn no_new_privs(&mut self) -> Result<(), Errno>;
    /// setrlimit(2); the hard limit is capped at the current one (lowering only).
    fn setrlimit(&mut self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno>;
    /// Every signal back to its default disposition and an empty signal mask, as runc starts
    /// a container process: the Rust runtime ignores SIGPIPE, and ignored dispositions and
    /// the mask survive execve(2) (signal(7)), so `yes | head` would never end.
    fn reset_signals(&mut self) -> Result<(), Errno>;
    /// seccomp(SECCOMP_SET_MODE_FILTER) of one BPF program (needs no_new_privs).
    fn seccomp(&mut self, program: &[seccompiler::sock_filter]) -> Result<(), Errno>;
    /// execve(2): returns only on failure.
    fn exec(&mut self, path: &Path, args: &[String], env: &[String]) -> Errno;
}

/// The real implementation.
#[derive(Debug, Default)]
pub struct LinuxSyscalls;

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: die when the parent thread exits.
/// Needed again after every credential change, which clears it.
pub fn rearm_parent_death_signal() -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Errno::result(rc).map(|_| ())
}

fn cstr(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// The capabilities the running kernel knows (`/proc/sys/kernel/cap_last_cap`), all 64
/// bits when it cannot be read.
fn known_caps() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|last| *last < 63)
        .map_or(u64::MAX, |last| (1u64 << (last + 1)) - 1)
}

impl Syscalls for LinuxSyscalls {
    fn mount(
        &mut self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&mut self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        nix::mount::umount2(target, flags)
    }

    fn mount_flags(&mut self, path: &Path) -> Result<MsFlags, Errno> {
        use nix::sys::statvfs::FsFlags;
        let f = nix::sys::statvfs::statvfs(path)?.flags();
        let mut m = MsFlags::empty();
        for (s, ms) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(s) {
                m |= ms;
            }
        }
        Ok(m)
    }

    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chdir(path)
    }

    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn kind(&mut self, path: &Path) -> Result<FileKind, Errno> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileKind::Missing),
            Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
            Ok(m) if m.is_dir() => Ok(FileKind::Dir),
            Ok(m) if m.is_file() => Ok(FileKind::File),
            Ok(m) if m.file_type().is_symlink() => {
                let t = std::fs::read_link(path)
                    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
                Ok(FileKind::Symlink(t))
            }
            Ok(_) => Ok(FileKind::Other),
        }
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> Result<(), Errno> {
        nix::unistd::mkdir(path, nix::sys::stat::Mode::from_bits_truncate(mode))
    }

    fn create_file(&mut self, path: &Path, mode: u32) -> Result<(), Errno> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::open(
            path,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(mode),
        )?;
        drop(fd);
        Ok(())
    }

    fn write_file(
        &mut self,
        path: &Path,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), Errno> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::open(
            path,
            OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_WRONLY
                | OFlag::O_CLOEXEC
                | OFlag::O_NOFOLLOW,
            nix::sys::stat::Mode::from_bits_truncate(mode),
        )?;
        let mut off = 0;
        while off < data.len() {
            off += nix::unistd::write(&fd, &data[off..])?;
        }
        nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(mode))?;
        if let Some((u, g)) = owner {
            nix::unistd::fchown(
                &fd,
                Some(nix::unistd::Uid::from_raw(u)),
                Some(nix::unistd::Gid::from_raw(g)),
            )?;
        }
        Ok(())
    }

    fn read_file(&mut self, path: &Path, max: u64) -> Result<Vec<u8>, Errno> {
        use std::io::Read;
        let f = std::fs::File::open(path)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let mut v = Vec::new();
        f.take(max)
            .read_to_end(&mut v)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(v)
    }

    fn symlink(&mut self, target: &str, link: &Path) -> Result<(), Errno> {
        nix::unistd::symlinkat(target, nix::fcntl::AT_FDCWD, link)
    }

    fn sethostname(&mut self, name: &str) -> Result<(), Errno> {
        nix::unistd::sethostname(name)
    }

    fn loopback_up(&mut self) -> Result<(), Errno> {
        // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own; the fd is closed below.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(Errno::last());
            }
            let mut req: libc::ifreq = std::mem::zeroed();
            for (i, b) in b"lo\0".iter().enumerate() {
                req.ifr_name[i] = *b as libc::c_char;
            }
            let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
            if r == 0 {
                req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
            }
            let e = Errno::last();
            libc::close(fd);
            if r != 0 {
                return Err(e);
            }
        }
        Ok(())
    }

    fn add_unreachable_route(&mut self, dst: IpAddr, prefix: u8) -> Result<(), Errno> {
        let (family, addr) = match dst {
            IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
        };
        // nlmsghdr (16 bytes), rtmsg (12), one rtattr RTA_DST (4 + address, padded to 4).
        let rta_len = 4 + addr.len();
        let total = 16 + 12 + rta_len.div_ceil(4) * 4;
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL;
        let mut msg = Vec::with_capacity(total);
        msg.extend_from_slice(&(total as u32).to_ne_bytes());
        msg.extend_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes());
        msg.extend_from_slice(&(flags as u16).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel assigns
        msg.extend_from_slice(&[
            family,
            prefix,
            0, // src_len
            0, // tos
            libc::RT_TABLE_MAIN,
            libc::RTPROT_STATIC,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNREACHABLE,
        ]);
        msg.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
        msg.extend_from_slice(&(rta_len as u16).to_ne_bytes());
        msg.extend_from_slice(&libc::RTA_DST.to_ne_bytes());
        msg.extend_from_slice(&addr);
        msg.resize(total, 0);
        // SAFETY: a netlink socket we own and close; buffers outlive the calls; the reply
        // is parsed only within the bytes received.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            );
            if fd < 0 {
                return Err(Errno::last());
            }
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            let sent = libc::sendto(
                fd,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            );
            if sent < 0 {
                let e = Errno::last();
                libc::close(fd);
                return Err(e);
            }
            let mut reply = [0u8; 1024];
            let n = libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0);
            let e = Errno::last();
            libc::close(fd);
            if n < 0 {
                return Err(e);
            }
            let n = n as usize;
            // The ack: nlmsghdr of type NLMSG_ERROR, then the error code (0: success).
            if n < 20 {
                return Err(Errno::EPROTO);
            }
            let kind = u16::from_ne_bytes([reply[4], reply[5]]);
            if kind != libc::NLMSG_ERROR as u16 {
                return Err(Errno::EPROTO);
            }
            let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
            if code != 0 {
                return Err(Errno::from_raw(-code));
            }
        }
        Ok(())
    }

    fn drop_bounding_except(&mut self, keep: u64) -> Result<(), Errno> {
        for cap in 0..64u64 {
            if keep & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                let e = Errno::last();
                if e == Errno::EINVAL {
                    break; // past CAP_LAST_CAP
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn setgroups(&mut self, gids: &[u32]) -> Result<(), Errno> {
        let g: Vec<nix::unistd::Gid> = gids
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&g)
    }

    fn set_ids(&mut self, uid: u32, gid: u32) -> Result<(), Errno> {
        let g = nix::unistd::Gid::from_raw(gid);
        let u = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setresgid(g, g, g)?;
        nix::unistd::setresuid(u, u, u)?;
        // The kernel clears the parent-death signal on any change of the
        // effective or filesystem ids (prctl(2), PR_SET_PDEATHSIG): arm it
        // again, so a step running as another USER still dies with its
        // helper (and so with a worker that is killed).
        rearm_parent_death_signal()
    }

    fn set_caps(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let mut h = Header {
            version: VERSION_3,
            pid: 0,
        };
        // Capabilities this kernel does not know (asked for by `ALL_CAPS` on a kernel older
        // than CAP_CHECKPOINT_RESTORE) would make capset fail: keep only known ones.
        let known = known_caps();
        let (effective, permitted, inheritable) =
            (effective & known, permitted & known, inheritable & known);
        let lo = |v: u64| v as u32;
        let hi = |v: u64| (v >> 32) as u32;
        let d = [
            Data {
                effective: lo(effective),
                permitted: lo(permitted),
                inheritable: lo(inheritable),
            },
            Data {
                effective: hi(effective),
                permitted: hi(permitted),
                inheritable: hi(inheritable),
            },
        ];
        // SAFETY: capset with a valid v3 header and two data structs, as capget(2) documents.
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) };
        if r != 0 {
            return Err(Errno::last());
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if r != 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    fn seccomp(&mut self, program: &[seccompiler::sock_filter]) -> Result<(), Errno> {
        seccompiler::apply_filter(program).map_err(|e| match e {
            seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => {
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL))
            }
            _ => Errno::EINVAL,
        })
    }

    fn no_new_privs(&mut self) -> Result<(), Errno> {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        if r != 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    fn setrlimit(&mut self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit we own.
        unsafe {
            if libc::getrlimit(resource as _, &mut cur) != 0 {
                return Err(Errno::last());
            }
            let hard = hard.min(cur.rlim_max);
            let new = libc::rlimit {
                rlim_cur: soft.min(hard),
                rlim_max: hard,
            };
            if libc::setrlimit(resource as _, &new) != 0 {
                return Err(Errno::last());
            }
        }
        Ok(())
    }

    fn reset_signals(&mut self) -> Result<(), Errno> {
        // The raw system call, for every signal number: the C library's sigaction(3)
        // refuses the two it reserves for itself (32 and 33), which a parent may still
        // have left ignored. An all-zero kernel sigaction is SIG_DFL with no flags, no
        // restorer and an empty mask on every architecture's layout.
        const NSIG: libc::c_int = 64;
        let dfl = [0u64; 4];
        for n in 1..=NSIG {
            if n == libc::SIGKILL || n == libc::SIGSTOP {
                continue;
            }
            // SAFETY: `dfl` is a valid kernel sigaction; no old action is asked for.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    n,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
            if r != 0 {
                return Err(Errno::last());
            }
        }
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&nix::sys::signal::SigSet::empty()),
            None,
        )
    }

    fn exec(&mut self, path: &Path, args: &[String], env: &[String]) -> Errno {
        let Ok(p) = cstr(path) else {
            return Errno::EINVAL;
        };
        let to_c = |v: &[String]| -> Result<Vec<CString>, Errno> {
            v.iter()
                .map(|s| CString::new(s.as_bytes()).map_err(|_| Errno::EINVAL))
                .collect()
        };
        let (Ok(a), Ok(e)) = (to_c(args), to_c(env)) else {
            return Errno::EINVAL;
        };
        match nix::unistd::execve(&p, &a, &e) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// mount(2).
    Mount {
        /// Source.
        source: Option<String>,
        /// Target.
        target: PathBuf,
        /// Filesystem type.
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// Data.
        data: Option<String>,
    },
    /// umount2(2).
    Umount2(PathBuf, MntFlags),
    /// chdir(2).
    Chdir(PathBuf),
    /// pivot_root(2).
    PivotRoot(PathBuf, PathBuf),
    /// mkdir(2).
    Mkdir(PathBuf, u32),
    /// Empty file created.
    CreateFile(PathBuf),
    /// File written.
    WriteFile(PathBuf, Vec<u8>, u32, Option<(u32, u32)>),
    /// symlink(2).
    Symlink(String, PathBuf),
    /// sethostname(2).
    Hostname(String),
    /// lo up.
    LoopbackUp,
    /// An unreachable route.
    UnreachableRoute(IpAddr, u8),
    /// Bounding set reduced to this.
    Bounding(u64),
    /// setgroups(2).
    SetGroups(Vec<u32>),
    /// setresuid/setresgid.
    SetIds(u32, u32),
    /// capset(2).
    Caps(u64, u64, u64),
    /// PR_SET_NO_NEW_PRIVS.
    NoNewPrivs,
    /// seccomp(2) filter installed, with its length in instructions.
    Seccomp(usize),
    /// Signals reset to their defaults, mask emptied.
    ResetSignals,
    /// setrlimit(2).
    Rlimit(u32, u64, u64),
    /// execve(2).
    Exec(PathBuf, Vec<String>, Vec<String>),
}

/// A fake that records calls; `files` scripts what `kind`/`read_file` see (paths not
/// listed are missing, except `/` and the parents of listed paths, which are directories).
#[derive(Debug, Default)]
pub struct RecordingSyscalls {
    /// Calls made, in order.
    pub calls: Vec<Call>,
    /// Scripted filesystem: path → kind.
    pub files: BTreeMap<PathBuf, FileKind>,
    /// Scripted file contents for `read_file`.
    pub contents: BTreeMap<PathBuf, Vec<u8>>,
    /// Calls whose name is listed here fail with EPERM (e.g. "sethostname").
    pub fail: Vec<&'static str>,
}

impl RecordingSyscalls {
    fn check(&self, name: &'static str) -> Result<(), Errno> {
        if self.fail.contains(&name) {
            Err(Errno::EPERM)
        } else {
            Ok(())
        }
    }

    /// Only the mount calls, as `(source, target, fstype, flags, data)`.
    pub fn mounts(&self) -> Vec<&Call> {
        self.calls
            .iter()
            .filter(|c| matches!(c, Call::Mount { .. }))
            .collect()
    }
}

impl Syscalls for RecordingSyscalls {
    fn mount(
        &mut self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        self.check("mount")?;
        self.calls.push(Call::Mount {
            source: source.map(Into::into),
            target: target.into(),
            fstype: fstype.map(Into::into),
            flags,
            data: data.map(Into::into),
        });
        Ok(())
    }

    fn umount2(&mut self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        self.check("umount2")?;
        self.calls.push(Call::Umount2(target.into(), flags));
        Ok(())
    }

    fn mount_flags(&mut self, _path: &Path) -> Result<MsFlags, Errno> {
        Ok(MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
    }

    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        self.check("chdir")?;
        self.calls.push(Call::Chdir(path.into()));
        Ok(())
    }

    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        self.check("pivot_root")?;
        self.calls
            .push(Call::PivotRoot(new_root.into(), put_old.into()));
        Ok(())
    }

    fn kind(&mut self, path: &Path) -> Result<FileKind, Errno> {
        if let Some(k) = self.files.get(path) {
            return Ok(k.clone());
        }
        if path == Path::new("/") || self.files.keys().any(|k| k.starts_with(path)) {
            return Ok(FileKind::Dir);
        }
        Ok(FileKind::Missing)
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> Result<(), Errno> {
        self.check("mkdir")?;
        self.calls.push(Call::Mkdir(path.into(), mode));
        self.files.insert(path.into(), FileKind::Dir);
        Ok(())
    }

    fn create_file(&mut self, path: &Path, _mode: u32) -> Result<(), Errno> {
        self.check("create_file")?;
        self.calls.push(Call::CreateFile(path.into()));
        self.files.insert(path.into(), FileKind::File);
        Ok(())
    }

    fn write_file(
        &mut self,
        path: &Path,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), Errno> {
        self.check("write_file")?;
        self.calls
            .push(Call::WriteFile(path.into(), data.to_vec(), mode, owner));
        Ok(())
    }

    fn read_file(&mut self, path: &Path, max: u64) -> Result<Vec<u8>, Errno> {
        let mut v = self.contents.get(path).cloned().ok_or(Errno::ENOENT)?;
        v.truncate(usize::try_from(max).unwrap_or(usize::MAX));
        Ok(v)
    }

    fn symlink(&mut self, target: &str, link: &Path) -> Result<(), Errno> {
        self.check("symlink")?;
        self.calls.push(Call::Symlink(target.into(), link.into()));
        Ok(())
    }

    fn sethostname(&mut self, name: &str) -> Result<(), Errno> {
        self.check("sethostname")?;
        self.calls.push(Call::Hostname(name.into()));
        Ok(())
    }

    fn loopback_up(&mut self) -> Result<(), Errno> {
        self.check("loopback_up")?;
        self.calls.push(Call::LoopbackUp);
        Ok(())
    }

    fn add_unreachable_route(&mut self, dst: IpAddr, prefix: u8) -> Result<(), Errno> {
        self.check("add_unreachable_route")?;
        self.calls.push(Call::UnreachableRoute(dst, prefix));
        Ok(())
    }

    fn drop_bounding_except(&mut self, keep: u64) -> Result<(), Errno> {
        self.calls.push(Call::Bounding(keep));
        Ok(())
    }

    fn setgroups(&mut self, gids: &[u32]) -> Result<(), Errno> {
        self.check("setgroups")?;
        self.calls.push(Call::SetGroups(gids.to_vec()));
        Ok(())
    }

    fn set_ids(&mut self, uid: u32, gid: u32) -> Result<(), Errno> {
        self.calls.push(Call::SetIds(uid, gid));
        Ok(())
    }

    fn set_caps(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        self.calls
            .push(Call::Caps(effective, permitted, inheritable));
        Ok(())
    }

    fn no_new_privs(&mut self) -> Result<(), Errno> {
        self.calls.push(Call::NoNewPrivs);
        Ok(())
    }

    fn seccomp(&mut self, program: &[seccompiler::sock_filter]) -> Result<(), Errno> {
        self.check("seccomp")?;
        self.calls.push(Call::Seccomp(program.len()));
        Ok(())
    }

    fn setrlimit(&mut self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
        self.calls.push(Call::Rlimit(resource, soft, hard));
        Ok(())
    }

    fn reset_signals(&mut self) -> Result<(), Errno> {
        self.calls.push(Call::ResetSignals);
        Ok(())
    }

    fn exec(&mut self, path: &Path, args: &[String], env: &[String]) -> Errno {
        self.calls
            .push(Call::Exec(path.into(), args.to_vec(), env.to_vec()));
        Errno::ENOEXEC
    }
}
