use super::*;
use crate::executor::DOCKER_DEFAULT_CAPS;

const KERNEL: (u32, u32) = (6, 8);
const CAP_SYS_ADMIN: u64 = 1 << 21;

fn docker(arch: Arch) -> Resolved {
    resolve(DEFAULT_PROFILE_JSON, arch, DOCKER_DEFAULT_CAPS, KERNEL).expect("resolve")
}

fn allowed(r: &Resolved) -> usize {
    r.actions.get(&Action::Allow).map_or(0, BTreeMap::len)
}

#[test]
fn tables_are_sorted_and_complete_enough() {
    for (arch, t) in [
        (Arch::X86_64, syscalls::X86_64),
        (Arch::Aarch64, syscalls::AARCH64),
    ] {
        assert!(t.windows(2).all(|w| w[0].0 < w[1].0), "{arch:?} sorted");
        assert_eq!(arch.syscall_nr("clone3"), Some(435));
    }
    assert_eq!(Arch::X86_64.syscall_nr("personality"), Some(135));
    assert_eq!(Arch::Aarch64.syscall_nr("personality"), Some(92));
    assert_eq!(Arch::Aarch64.syscall_nr("open"), None);
    assert_eq!(Arch::X86_64.syscall_nr("no_such_syscall"), None);
}

#[test]
fn docker_default_counts_per_arch() {
    // The numbers of allowed syscalls (unconditionally or with argument rules) and of the
    // profile's names this architecture does not have: a change in default.json or in the
    // tables shows here.
    let x = docker(Arch::X86_64);
    let a = docker(Arch::Aarch64);
    assert_eq!(
        (allowed(&x), x.skipped.len(), allowed(&a), a.skipped.len()),
        (305, 65, 263, 111)
    );
    assert_eq!(x.default_errno, libc::EPERM as u32);
    // 32-bit and other-arch names are skipped, never an error; so are syscalls newer than
    // seccompiler's tables (Linux 6.12 headers), which then fail with EPERM.
    assert!(x.skipped.iter().any(|s| s == "_llseek"));
    assert!(a.skipped.iter().any(|s| s == "open"));
    assert!(x.skipped.iter().any(|s| s == "setxattrat"));
}

#[test]
fn personality_only_with_docker_values() {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let r = docker(arch);
        let rules = r
            .rule(Action::Allow, "personality")
            .expect("personality")
            .clone()
            .expect("argument rules");
        let vals: Vec<_> = rules
            .iter()
            .map(|r| match r.as_slice() {
                [ArgCmp {
                    index: 0,
                    op: CmpOp::Eq(v),
                }] => *v,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(vals, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    }
}

#[test]
fn clone_without_namespace_flags_and_clone3_enosys_unless_sys_admin() {
    let r = docker(Arch::X86_64);
    assert_eq!(
        r.rule(Action::Allow, "clone"),
        Some(&Some(vec![vec![ArgCmp {
            index: 0,
            op: CmpOp::MaskedEq {
                mask: 0x7E02_0000,
                value: 0
            }
        }]]))
    );
    assert_eq!(r.rule(Action::Allow, "clone3"), None);
    assert_eq!(
        r.rule(Action::Errno(libc::ENOSYS as u32), "clone3"),
        Some(&None)
    );
    let admin = resolve(
        DEFAULT_PROFILE_JSON,
        Arch::X86_64,
        DOCKER_DEFAULT_CAPS | CAP_SYS_ADMIN,
        KERNEL,
    )
    .expect("resolve");
    assert!(admin.allows_always("clone"));
    assert!(admin.allows_always("clone3"));
    assert!(admin.allows_always("mount"));
    assert!(!admin
        .actions
        .contains_key(&Action::Errno(libc::ENOSYS as u32)));
}

#[test]
fn escapes_are_not_allowed_with_docker_caps() {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let r = docker(arch);
        for s in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "reboot",
            "init_module",
            "finit_module",
            "bpf",
            "perf_event_open",
            "open_by_handle_at",
            "userfaultfd",
            "fsopen",
            "move_mount",
            "open_tree",
            "syslog",
        ] {
            assert_eq!(
                r.actions
                    .values()
                    .find_map(|set| set.get(&arch.syscall_nr(s)?)),
                None,
                "{s} on {arch:?}"
            );
        }
        // Allowed as in Docker: the pid namespace hides other processes, CAP_SYS_CHROOT
        // is in the default set.
        for s in ["ptrace", "chroot", "read", "execve", "setuid", "fchownat"] {
            assert!(r.allows_always(s), "{s} on {arch:?}");
        }
    }
}

#[test]
fn socket_refuses_af_alg_and_af_vsock_and_af_packet() {
    let r = docker(Arch::X86_64);
    assert_eq!(
        r.rule(Action::Allow, "socket"),
        Some(&Some(vec![
            vec![ArgCmp {
                index: 0,
                op: CmpOp::Lt(17)
            }],
            vec![
                ArgCmp {
                    index: 0,
                    op: CmpOp::Gt(17)
                },
                ArgCmp {
                    index: 0,
                    op: CmpOp::Lt(38)
                }
            ],
            vec![ArgCmp {
                index: 0,
                op: CmpOp::Eq(39)
            }],
            vec![ArgCmp {
                index: 0,
                op: CmpOp::Gt(40)
            }],
        ]))
    );
}

#[test]
fn arch_specific_blocks() {
    assert!(docker(Arch::X86_64).allows_always("arch_prctl"));
    assert!(docker(Arch::X86_64).allows_always("modify_ldt"));
    assert_eq!(Arch::Aarch64.syscall_nr("arch_prctl"), None);
    let a = docker(Arch::Aarch64);
    // The arm/arm64 block's names are 32-bit arm ones; aarch64 has the generic syscalls.
    assert!(a.allows_always("sync_file_range"));
    assert!(a.skipped.iter().any(|s| s == "arm_fadvise64_64"));
    // riscv and s390 blocks do not apply.
    assert!(!a.skipped.iter().any(|s| s == "riscv_flush_icache"));
}

#[test]
fn min_kernel_is_honoured() {
    let old = resolve(
        DEFAULT_PROFILE_JSON,
        Arch::X86_64,
        DOCKER_DEFAULT_CAPS,
        (4, 4),
    )
    .expect("resolve");
    assert!(!old.allows_always("ptrace"));
    assert!(docker(Arch::X86_64).allows_always("ptrace"));
    assert_eq!(parse_kernel("6.18.44-fc-v1300"), Some((6, 18)));
    assert_eq!(parse_kernel("4.8"), Some((4, 8)));
}

#[test]
fn unknown_names_are_skipped_and_unknown_features_refused() {
    let p = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[
        {"names":["getpid","no_such_call"],"action":"SCMP_ACT_ALLOW"}]}"#;
    let r = resolve(p, Arch::X86_64, 0, KERNEL).expect("resolve");
    assert_eq!(r.skipped, ["no_such_call"]);
    assert!(r.allows_always("getpid"));
    let trap = r#"{"defaultAction":"SCMP_ACT_TRAP","syscalls":[]}"#;
    assert!(matches!(
        resolve(trap, Arch::X86_64, 0, KERNEL),
        Err(SeccompError::Unsupported(_))
    ));
}

#[test]
fn compiles_for_both_arches_within_the_kernel_limit() {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let progs = compile(&docker(arch)).expect("compile");
        assert_eq!(progs.len(), 2, "allow list + clone3 ENOSYS");
        for p in &progs {
            assert!(!p.is_empty() && p.len() < 4096, "{arch:?}: {}", p.len());
            assert_eq!(decode(&encode(p)), *p);
        }
    }
}

#[test]
fn programs_are_cached_per_process() {
    let a = default_programs(DOCKER_DEFAULT_CAPS).expect("compile");
    let b = default_programs(DOCKER_DEFAULT_CAPS).expect("compile");
    assert!(Arc::ptr_eq(&a, &b));
}

/// The compiled programs in a real kernel: a forked child installs them and reports what
/// a few syscalls return.
#[test]
fn installed_filter_answers_like_docker() {
    let progs: Vec<BpfProgram> = default_programs(DOCKER_DEFAULT_CAPS)
        .expect("compile")
        .iter()
        .map(|p| decode(p))
        .collect();
    // SAFETY: the child only makes raw system calls (no allocation, no locks) and _exits.
    match unsafe { libc::fork() } {
        0 => {
            let mut code = 0;
            for p in &progs {
                if seccompiler::apply_filter(p).is_err() {
                    unsafe { libc::_exit(100) }
                }
            }
            let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            // SAFETY (all below): raw system calls with integer arguments; the ones expected
            // to be refused never run.
            unsafe {
                if libc::syscall(libc::SYS_getpid) <= 0 {
                    code |= 1;
                }
                if libc::syscall(libc::SYS_personality, 0x0040_0000u64) != -1 || errno() != 1 {
                    code |= 2; // ADDR_NO_RANDOMIZE alone is not in the list
                }
                if libc::syscall(libc::SYS_personality, 0xffff_ffffu64) < 0 {
                    code |= 4; // the query is allowed
                }
                if libc::syscall(libc::SYS_clone3, 0usize, 0usize) != -1 || errno() != 38 {
                    code |= 8;
                }
                if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) != -1 || errno() != 1 {
                    code |= 16;
                }
                if libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) != -1 || errno() != 1 {
                    code |= 32;
                }
                if libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0) != -1
                    || errno() != 1
                {
                    code |= 64;
                }
                if libc::syscall(libc::SYS_socket, libc::AF_PACKET, libc::SOCK_RAW, 0) != -1
                    || errno() != 1
                {
                    code |= 128; // imgfarm's amendment: no link-layer frames to pasta
                }
                let raw = libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_DGRAM, 0);
                if raw < 0 {
                    code |= 128; // ordinary sockets still work (the exit status has 8 bits)
                } else {
                    libc::close(raw as i32);
                }
                libc::_exit(code)
            }
        }
        pid if pid > 0 => {
            let mut st = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            assert!(libc::WIFEXITED(st), "child status {st:#x}");
            assert_eq!(libc::WEXITSTATUS(st), 0, "bit mask of wrong answers");
        }
        _ => panic!("fork failed"),
    }
}
