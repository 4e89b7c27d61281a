//! Plan and setup tests with the recording fake: no privileges needed.

use super::super::setup::{enter_rootfs, exec_process, prepare_rootfs, resolve_in_root};
use super::super::syscalls::{Call, FileKind, RecordingSyscalls};
use super::*;
use crate::emulation::Emulator;
use nix::mount::MntFlags;

fn req() -> ExecRequest {
    ExecRequest::new(
        vec!["/s/1/fs".into(), "/s/2/fs".into()],
        "/s/3/upper".into(),
        "/s/3/work".into(),
        vec!["sh".into(), "-c".into(), "true".into()],
    )
}

fn mount_targets(sys: &RecordingSyscalls) -> Vec<(String, Option<String>)> {
    sys.mounts()
        .into_iter()
        .filter_map(|c| match c {
            Call::Mount { target, fstype, .. } => {
                Some((target.to_string_lossy().into_owned(), fstype.clone()))
            }
            _ => None,
        })
        .collect()
}

fn host_req() -> ExecRequest {
    let mut r = req();
    r.network = StepNetwork::Host;
    r
}

#[test]
fn mount_order_host_network() {
    let plan = build(&host_req()).expect("plan");
    assert!(!plan.new_netns);
    assert_eq!(
        plan.init_namespaces,
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC
    );
    assert_eq!(
        plan.helper_namespaces,
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID
    );
    assert_eq!(plan.root, PathBuf::from("/s/3/work/merged"));
    let mut sys = RecordingSyscalls::default();
    let (stubs, warnings) = prepare_rootfs(&mut sys, &plan).expect("setup");
    assert!(warnings.is_empty());
    let m = "/s/3/work/merged";
    let expect: Vec<(String, Option<String>)> = vec![
        ("/".into(), None),
        (m.into(), Some("overlay".into())),
        (format!("{m}/proc"), Some("proc".into())),
        (format!("{m}/dev"), Some("tmpfs".into())),
        (format!("{m}/dev/null"), None),
        (format!("{m}/dev/zero"), None),
        (format!("{m}/dev/full"), None),
        (format!("{m}/dev/random"), None),
        (format!("{m}/dev/urandom"), None),
        (format!("{m}/dev/tty"), None),
        (format!("{m}/dev/pts"), Some("devpts".into())),
        (format!("{m}/dev/shm"), Some("tmpfs".into())),
        (format!("{m}/sys"), None),
        (format!("{m}/sys"), None),
        ("/s/3/work/stage".into(), Some("tmpfs".into())),
        (format!("{m}/etc/hosts"), None),
        (format!("{m}/etc/hosts"), None),
        (format!("{m}/etc/resolv.conf"), None),
        (format!("{m}/etc/resolv.conf"), None),
    ];
    assert_eq!(mount_targets(&sys), expect);
    // The fake has an empty image: every mount point was created and is a stub.
    assert!(stubs.contains(&PathBuf::from("proc")));
    assert!(stubs.contains(&PathBuf::from("dev")));
    // The overlay: lowers top first, userxattr.
    match &sys.mounts()[1] {
        Call::Mount { data, flags, .. } => {
            assert_eq!(
                data.as_deref(),
                Some(
                    "lowerdir=/s/2/fs:/s/1/fs,upperdir=/s/3/upper,workdir=/s/3/work/ovl,userxattr"
                )
            );
            assert!(flags.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // / is made private first, recursively.
    assert!(matches!(&sys.mounts()[0], Call::Mount { flags, .. }
        if *flags == MsFlags::MS_REC | MsFlags::MS_PRIVATE));
    // /sys: recursive bind, then a read-only remount keeping the locked flags.
    match (&sys.mounts()[12], &sys.mounts()[13]) {
        (
            Call::Mount {
                source, flags: f1, ..
            },
            Call::Mount { flags: f2, .. },
        ) => {
            assert_eq!(source.as_deref(), Some("/sys"));
            assert_eq!(*f1, MsFlags::MS_BIND | MsFlags::MS_REC);
            assert!(f2.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hosts_and_resolv_conf_bound_over_the_image_files() {
    let plan = build(&host_req()).expect("plan");
    let m = "/s/3/work/merged";
    let mut sys = RecordingSyscalls::default();
    sys.files.insert(format!("{m}/etc").into(), FileKind::Dir);
    sys.files
        .insert(format!("{m}/etc/hosts").into(), FileKind::File);
    sys.files
        .insert(format!("{m}/etc/resolv.conf").into(), FileKind::File);
    sys.contents.insert(
        "/etc/resolv.conf".into(),
        b"nameserver 127.0.0.53\n".to_vec(),
    );
    let (stubs, warnings) = prepare_rootfs(&mut sys, &plan).expect("setup");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(!stubs.iter().any(|s| s.starts_with("etc")), "{stubs:?}");
    let t = mount_targets(&sys);
    for f in ["hosts", "resolv.conf"] {
        let n = t.iter().filter(|x| x.0 == format!("{m}/etc/{f}")).count();
        assert_eq!(n, 2, "{f}: bind and read-only remount");
    }
    assert!(sys.calls.contains(&Call::WriteFile(
        "/s/3/work/stage/hosts".into(),
        b"127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            .to_vec(),
        0o644,
        Some((0, 0))
    )));
    // The host network: the host's resolvers as they are.
    assert!(sys.calls.contains(&Call::WriteFile(
        "/s/3/work/stage/resolv.conf".into(),
        b"nameserver 127.0.0.53\n".to_vec(),
        0o644,
        Some((0, 0))
    )));
}

#[test]
fn hosts_and_resolv_conf_targets_missing_in_the_image_are_stubs() {
    let mut r = req();
    r.network = StepNetwork::None;
    let plan = build(&r).expect("plan");
    let m = "/s/3/work/merged";
    let mut sys = RecordingSyscalls::default();
    sys.contents.insert(
        "/etc/resolv.conf".into(),
        b"nameserver 127.0.0.53\nnameserver 10.0.0.1\n".to_vec(),
    );
    let (stubs, warnings) = prepare_rootfs(&mut sys, &plan).expect("setup");
    assert!(warnings.is_empty(), "{warnings:?}");
    for f in ["hosts", "resolv.conf"] {
        assert!(sys
            .calls
            .contains(&Call::CreateFile(format!("{m}/etc/{f}").into())));
        assert!(
            stubs.contains(&PathBuf::from(format!("etc/{f}"))),
            "{stubs:?}"
        );
    }
    // The created /etc stays, as in BuildKit (runc creates it, the cleaner keeps dirs).
    assert!(!stubs.contains(&PathBuf::from("etc")), "{stubs:?}");
    // Its own netns: the host's loopback resolver is unreachable and dropped.
    assert!(sys.calls.contains(&Call::WriteFile(
        "/s/3/work/stage/resolv.conf".into(),
        b"nameserver 10.0.0.1\n".to_vec(),
        0o644,
        Some((0, 0))
    )));
}

#[test]
fn resolv_conf_filtering() {
    let host = "search lan\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n";
    assert_eq!(resolv_conf_for(host, StepNetwork::Host), host);
    let own = resolv_conf_for(host, StepNetwork::None);
    assert!(
        own.starts_with("search lan\noptions edns0\nnameserver 8.8.8.8\n"),
        "{own}"
    );
    assert!(
        !own.contains("127.0.0.53") && !own.contains("::1\n"),
        "{own}"
    );
    assert_eq!(
        resolv_conf_for(
            "nameserver 1.1.1.1\nnameserver 127.0.0.1\n",
            StepNetwork::None
        ),
        "nameserver 1.1.1.1\n"
    );
    // No nameserver at all (or no host file): the public defaults, as BuildKit.
    assert!(resolv_conf_for("", StepNetwork::Host).contains("nameserver 8.8.4.4"));
    assert!(resolv_conf_for("", StepNetwork::Isolated).contains("nameserver 8.8.4.4"));
    assert_eq!(
        resolv_conf_for(host, StepNetwork::Isolated),
        "search lan\noptions edns0\nnameserver 10.0.2.3\n"
    );
}

#[test]
fn masked_and_readonly_paths_when_present() {
    let plan = build(&req()).expect("plan");
    let m = "/s/3/work/merged";
    let mut sys = RecordingSyscalls::default();
    sys.files
        .insert(format!("{m}/proc/kcore").into(), FileKind::File);
    sys.files
        .insert(format!("{m}/proc/acpi").into(), FileKind::Dir);
    sys.files
        .insert(format!("{m}/proc/sys").into(), FileKind::Dir);
    prepare_rootfs(&mut sys, &plan).expect("setup");
    let mounts = sys.mounts();
    let find = |t: &str| {
        mounts
            .iter()
            .filter(|c| matches!(c, Call::Mount { target, .. } if target == Path::new(t)))
            .cloned()
            .cloned()
            .collect::<Vec<Call>>()
    };
    assert!(matches!(&find(&format!("{m}/proc/kcore"))[..],
        [Call::Mount { source: Some(s), flags, .. }] if s == "/dev/null" && *flags == MsFlags::MS_BIND));
    assert!(matches!(&find(&format!("{m}/proc/acpi"))[..],
        [Call::Mount { fstype: Some(f), flags, .. }] if f == "tmpfs" && flags.contains(MsFlags::MS_RDONLY)));
    assert!(matches!(&find(&format!("{m}/proc/sys"))[..],
        [Call::Mount { flags: f1, .. }, Call::Mount { flags: f2, .. }]
            if *f1 == MsFlags::MS_BIND | MsFlags::MS_REC && f2.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY)));
    assert!(
        find(&format!("{m}/proc/keys")).is_empty(),
        "missing paths are skipped"
    );
}

#[test]
fn network_none_owns_netns_and_sysfs() {
    let mut r = req();
    r.network = StepNetwork::None;
    let plan = build(&r).expect("plan");
    assert!(plan.new_netns);
    assert!(!plan.connect_netns, "no pasta for --network=none");
    assert!(plan.helper_namespaces.contains(CloneFlags::CLONE_NEWNET));
    assert!(!plan.init_namespaces.contains(CloneFlags::CLONE_NEWNET));
    let mut sys = RecordingSyscalls::default();
    prepare_rootfs(&mut sys, &plan).expect("setup");
    assert!(mount_targets(&sys).contains(&("/s/3/work/merged/sys".into(), Some("sysfs".into()))));
    assert_eq!(sys.calls.last(), Some(&Call::LoopbackUp));
}

#[test]
fn default_network_is_isolated_connected_and_blocks_link_local() {
    let plan = build(&req()).expect("plan");
    assert!(plan.new_netns);
    assert!(plan.connect_netns, "pasta connects the default network");
    assert_eq!(
        plan.helper_namespaces,
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNET
    );
    let mut sys = RecordingSyscalls::default();
    sys.contents.insert(
        "/etc/resolv.conf".into(),
        b"search lan\nnameserver 127.0.0.53\n".to_vec(),
    );
    prepare_rootfs(&mut sys, &plan).expect("setup");
    assert!(mount_targets(&sys).contains(&("/s/3/work/merged/sys".into(), Some("sysfs".into()))));
    let n = sys.calls.len();
    assert_eq!(
        &sys.calls[n - 2..],
        &[
            Call::LoopbackUp,
            Call::UnreachableRoute("169.254.0.0".parse().expect("ip"), 16)
        ]
    );
    // DNS through pasta's forwarder, whatever the host's resolver is.
    assert!(sys.calls.contains(&Call::WriteFile(
        "/s/3/work/stage/resolv.conf".into(),
        b"search lan\nnameserver 10.0.2.3\n".to_vec(),
        0o644,
        Some((0, 0))
    )));
}

#[test]
fn scratch_binds_upper_as_root() {
    let mut r = req();
    r.rootfs_layers.clear();
    let plan = build(&r).expect("plan");
    let mut sys = RecordingSyscalls::default();
    prepare_rootfs(&mut sys, &plan).expect("setup");
    match &sys.mounts()[1] {
        Call::Mount { source, flags, .. } => {
            assert_eq!(source.as_deref(), Some("/s/3/upper"));
            assert_eq!(*flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn private_binfmt_is_registered_under_proc() {
    let mut r = req();
    r.emulation = Some(Emulator {
        name: "imgfarm-aarch64".into(),
        interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into(),
        magic: vec![0x7f],
        mask: vec![0xff],
        flags: "PF".into(),
    });
    let plan = build(&r).expect("plan");
    let mut sys = RecordingSyscalls::default();
    prepare_rootfs(&mut sys, &plan).expect("setup");
    let m = "/s/3/work/merged";
    let t = mount_targets(&sys);
    let proc_i = t
        .iter()
        .position(|x| x.0 == format!("{m}/proc"))
        .expect("proc");
    assert_eq!(
        t[proc_i + 1],
        (
            format!("{m}/proc/sys/fs/binfmt_misc"),
            Some("binfmt_misc".into())
        )
    );
    let reg = sys
        .calls
        .iter()
        .find_map(|c| match c {
            Call::WriteFile(p, d, _, _) => {
                Some((p.clone(), String::from_utf8_lossy(d).into_owned()))
            }
            _ => None,
        })
        .expect("register");
    assert_eq!(
        reg.0,
        PathBuf::from(format!("{m}/proc/sys/fs/binfmt_misc/register"))
    );
    assert!(reg
        .1
        .ends_with(":/usr/libexec/qemu-binfmt/aarch64-binfmt-P:PF"));
}

#[test]
fn extra_mounts_parents_first_and_secret_staged() {
    let mut r = req();
    r.mounts = vec![
        ExtraMount::Tmpfs {
            target: "/cache/tmp".into(),
            size: Some(1 << 20),
        },
        ExtraMount::Cache {
            source: "/state/cache/go".into(),
            target: "/cache".into(),
        },
        ExtraMount::Secret {
            source: "/host/secret".into(),
            target: "/run/secrets/token".into(),
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
        ExtraMount::Bind {
            source: "/ctx".into(),
            target: "/src".into(),
            readonly: true,
        },
    ];
    let plan = build(&r).expect("plan");
    let mut sys = RecordingSyscalls::default();
    sys.contents
        .insert("/host/secret".into(), b"s3cr3t".to_vec());
    sys.files.insert("/ctx".into(), FileKind::Dir);
    let (stubs, _) = prepare_rootfs(&mut sys, &plan).expect("setup");
    let t: Vec<String> = mount_targets(&sys).into_iter().map(|x| x.0).collect();
    let pos = |s: &str| t.iter().position(|x| x == s).unwrap_or(usize::MAX);
    let m = "/s/3/work/merged";
    assert!(pos(&format!("{m}/cache")) < pos(&format!("{m}/cache/tmp")));
    assert!(pos("/s/3/work/stage") < pos(&format!("{m}/run/secrets/token")));
    assert!(sys.calls.iter().any(|c| matches!(c,
        Call::WriteFile(p, d, 0o400, Some((0, 0))) if p == Path::new("/s/3/work/stage/secret-3") && d == b"s3cr3t")));
    assert!(sys.calls.contains(&Call::CreateFile(PathBuf::from(format!(
        "{m}/run/secrets/token"
    )))));
    // BuildKit's stubs cleaner: the created secret file goes, the directories created for
    // the mounts (/run, /run/secrets, /cache, /src) stay in the layer.
    assert!(stubs.contains(&PathBuf::from("run/secrets/token")));
    for kept in ["run", "run/secrets", "cache", "cache/tmp", "src"] {
        assert!(!stubs.contains(&PathBuf::from(kept)), "{kept}: {stubs:?}");
    }
}

#[test]
fn symlinks_in_the_image_stay_inside_the_root() {
    let mut sys = RecordingSyscalls::default();
    sys.files
        .insert("/r/proc".into(), FileKind::Symlink("/../../etc".into()));
    sys.files
        .insert("/r/etc".into(), FileKind::Symlink("../../../host".into()));
    let p = resolve_in_root(&mut sys, Path::new("/r"), "/proc/x").expect("resolve");
    assert_eq!(p, PathBuf::from("/r/host/x"));
    sys.files
        .insert("/r/loop".into(), FileKind::Symlink("/loop".into()));
    assert!(resolve_in_root(&mut sys, Path::new("/r"), "/loop").is_err());
}

#[test]
fn pivot_root_then_detach() {
    let plan = build(&req()).expect("plan");
    let mut sys = RecordingSyscalls::default();
    enter_rootfs(&mut sys, &plan).expect("pivot");
    assert_eq!(
        sys.calls,
        vec![
            Call::Chdir("/s/3/work/merged".into()),
            Call::PivotRoot(".".into(), ".".into()),
            Call::Umount2(".".into(), MntFlags::MNT_DETACH),
            Call::Chdir("/".into()),
        ]
    );
}

fn image_sys() -> RecordingSyscalls {
    let mut sys = RecordingSyscalls::default();
    sys.contents.insert(
        "/etc/passwd".into(),
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".to_vec(),
    );
    sys.contents
        .insert("/etc/group".into(), b"root:x:0:\nwheel:x:10:app\n".to_vec());
    sys.files.insert("/bin/sh".into(), FileKind::File);
    sys.files.insert("/etc/passwd".into(), FileKind::File);
    sys
}

#[test]
fn root_process_keeps_docker_caps() {
    let mut r = req();
    r.cwd = "/work/dir".into();
    let plan = build(&r).expect("plan");
    let mut sys = image_sys();
    let e = exec_process(&mut sys, &plan, &progs(), true);
    assert!(e.to_string().contains("exec sh"), "{e}");
    let tail: Vec<&Call> = sys
        .calls
        .iter()
        .filter(|c| !matches!(c, Call::Mkdir(..) | Call::Chdir(_)))
        .collect();
    assert_eq!(
        tail,
        vec![
            &Call::Rlimit(DEFAULT_RLIMITS[0].resource, 1024, 1024),
            &Call::Bounding(DOCKER_DEFAULT_CAPS),
            &Call::SetGroups(vec![]),
            &Call::SetIds(0, 0),
            &Call::Caps(DOCKER_DEFAULT_CAPS, DOCKER_DEFAULT_CAPS, 0),
            &Call::NoNewPrivs,
            &Call::ResetSignals,
            &Call::Seccomp(2),
            &Call::Seccomp(1),
            &Call::Exec(
                "/bin/sh".into(),
                vec!["sh".into(), "-c".into(), "true".into()],
                vec![DEFAULT_PATH_ENV.into(), "HOME=/root".into()]
            ),
        ]
    );
    assert_eq!(DOCKER_DEFAULT_CAPS, 0xa804_25fb);
    assert!(sys.calls.contains(&Call::Mkdir("/work".into(), 0o755)));
    assert!(sys.calls.contains(&Call::Chdir("/work/dir".into())));
}

/// Two stand-in programs (the real ones come from `seccomp::default_programs`).
fn progs() -> Vec<seccompiler::BpfProgram> {
    let ins = |k| seccompiler::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k,
    };
    vec![vec![ins(0), ins(1)], vec![ins(2)]]
}

#[test]
fn seccomp_is_the_last_step_before_exec_and_fails_closed() {
    let plan = build(&req()).expect("plan");
    assert!(plan.process.seccomp);
    let mut sys = image_sys();
    exec_process(&mut sys, &plan, &progs(), true);
    let n = sys.calls.len();
    assert_eq!(
        sys.calls[n - 5..n - 1],
        [
            Call::NoNewPrivs,
            Call::ResetSignals,
            Call::Seccomp(2),
            Call::Seccomp(1)
        ]
    );
    // No program, or a kernel that refuses it: the command is not run.
    let mut sys = image_sys();
    let e = exec_process(&mut sys, &plan, &[], true);
    assert!(e.to_string().contains("seccomp profile: no program"), "{e}");
    assert!(!sys.calls.iter().any(|c| matches!(c, Call::Exec(..))));
    let mut sys = image_sys();
    sys.fail.push("seccomp");
    let e = exec_process(&mut sys, &plan, &progs(), true);
    assert!(
        e.to_string().contains("installing the seccomp profile"),
        "{e}"
    );
    assert!(!sys.calls.iter().any(|c| matches!(c, Call::Exec(..))));
}

#[test]
fn insecure_keeps_every_capability_and_installs_no_filter() {
    let mut r = req();
    r.sandbox = super::super::Sandbox::INSECURE;
    let plan = build(&r).expect("plan");
    assert!(!plan.process.seccomp);
    let mut sys = image_sys();
    exec_process(&mut sys, &plan, &[], true);
    let all = super::super::seccomp::ALL_CAPS;
    assert_eq!(all, (1 << 41) - 1);
    assert!(sys.calls.contains(&Call::Bounding(all)));
    assert!(sys.calls.contains(&Call::Caps(all, all, 0)));
    assert!(!sys.calls.iter().any(|c| matches!(c, Call::Seccomp(_))));
    assert!(matches!(sys.calls.last(), Some(Call::Exec(..))));
    // A request without the field (an older JSON client) is sandboxed.
    let mut v = serde_json::to_value(req()).expect("json");
    v.as_object_mut().expect("object").remove("sandbox");
    let back: super::super::ExecRequest = serde_json::from_value(v).expect("parse");
    assert_eq!(back.sandbox, super::super::Sandbox::DEFAULT);
}

#[test]
fn named_user_gets_groups_and_no_caps() {
    let mut r = req();
    r.user = "app".into();
    let plan = build(&r).expect("plan");
    let mut sys = image_sys();
    exec_process(&mut sys, &plan, &progs(), true);
    assert!(sys.calls.contains(&Call::SetGroups(vec![10])));
    assert!(sys.calls.contains(&Call::SetIds(1000, 1000)));
    assert!(sys.calls.contains(&Call::Caps(0, 0, 0)));
    let mut sys = image_sys();
    exec_process(&mut sys, &plan, &progs(), false);
    assert!(!sys.calls.iter().any(|c| matches!(c, Call::SetGroups(_))));
}

#[test]
fn unknown_user_and_missing_command_are_errors() {
    let mut r = req();
    r.user = "ghost".into();
    let e = exec_process(&mut image_sys(), &build(&r).expect("plan"), &progs(), true);
    assert!(e.to_string().contains("unable to find user ghost"), "{e}");
    let mut r = req();
    r.args = vec!["nope".into()];
    let e = exec_process(&mut image_sys(), &build(&r).expect("plan"), &progs(), true);
    assert!(e.to_string().contains("executable file not found"), "{e}");
}

#[test]
fn invalid_requests() {
    let mut r = req();
    r.args.clear();
    assert!(build(&r).is_err());
    let mut r = req();
    r.cwd = "relative".into();
    assert!(build(&r).is_err());
    let mut r = req();
    r.mounts = vec![ExtraMount::Tmpfs {
        target: "/".into(),
        size: None,
    }];
    assert!(build(&r).is_err());
    let mut r = req();
    r.mounts = vec![ExtraMount::Bind {
        source: "rel".into(),
        target: "/x".into(),
        readonly: false,
    }];
    assert!(build(&r).is_err());
    let mut r = req();
    r.env = vec!["NOEQUALS".into()];
    assert!(build(&r).is_err());
    let mut r = req();
    r.upper = "/a:b".into();
    assert!(matches!(build(&r), Err(PlanError::Snapshot(_))));
}

#[test]
fn failing_mount_names_the_mount() {
    let plan = build(&req()).expect("plan");
    let mut sys = RecordingSyscalls {
        fail: vec!["mount"],
        ..Default::default()
    };
    let e = prepare_rootfs(&mut sys, &plan).expect_err("fails");
    assert!(e.to_string().contains("making / private"), "{e}");
}

#[test]
fn missing_or_oversized_secrets_are_errors() {
    let mut r = req();
    r.mounts = vec![ExtraMount::Secret {
        source: "/host/missing".into(),
        target: "/run/secrets/x".into(),
        mode: 0o400,
        uid: 0,
        gid: 0,
    }];
    let plan = build(&r).expect("plan");
    let e = prepare_rootfs(&mut RecordingSyscalls::default(), &plan).expect_err("missing");
    assert!(
        e.to_string().contains("reading secret /host/missing"),
        "{e}"
    );
    let mut sys = RecordingSyscalls::default();
    sys.contents.insert(
        "/host/missing".into(),
        vec![b'x'; (MAX_SECRET + 1) as usize],
    );
    let e = prepare_rootfs(&mut sys, &plan).expect_err("too large");
    assert!(e.to_string().contains("larger than"), "{e}");
}
