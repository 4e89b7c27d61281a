//! The default seccomp profile of RUN steps (issue 15, deliverable 2): a step runs under a
//! filter (`Seccomp: 2`) natively and under qemu, rootless and as root; escape attempts fail
//! and leave the host untouched; `RUN --security=insecure` runs unfiltered with every
//! capability. The profile's own rules are unit-tested in `worker/src/executor/seccomp/`.

mod build_support;

use build_support::{ok, text, As, Env};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// `imgfarm build --progress plain --no-cache -o type=local,dest=OUT [EXTRA] CTX`; the log.
fn build_local(env: &Env, ctx: &Path, out: &Path, extra: &[&str]) -> String {
    let dest = format!("type=local,dest={}", out.display());
    let mut args = vec!["build", "--progress", "plain", "--no-cache", "-o", &dest];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().expect("utf-8"));
    ok(&env.run(&args))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const STATUS: &str = "FROM busybox
RUN grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status > /status && uname -m >> /status
";

fn seccomp_native_and_emulated(who: As, test: &str) {
    let Some(env) = Env::new_as(test, who) else {
        return;
    };
    let ctx = env.context("status", &[("Dockerfile", STATUS)]);
    let out = env.work.path().join("status-out");
    build_local(&env, &ctx, &out, &["--platform", "linux/amd64,linux/arm64"]);
    for (platform, machine) in [("linux_amd64", "x86_64"), ("linux_arm64", "aarch64")] {
        let s = read(&out.join(platform).join("status"));
        // Filter mode; under qemu the kernel sees qemu (an x86_64 process) and the host
        // filter, and qemu works under it.
        assert!(s.contains("Seccomp:\t2\n"), "{platform}: {s}");
        assert!(s.contains("NoNewPrivs:\t1\n"), "{platform}: {s}");
        assert!(s.contains("CapEff:\t00000000a80425fb\n"), "{platform}: {s}");
        assert!(s.ends_with(&format!("{machine}\n")), "{platform}: {s}");
    }
}

#[test]
fn steps_run_under_seccomp_native_and_emulated_rootless() {
    seccomp_native_and_emulated(
        As::FarmUser,
        "steps_run_under_seccomp_native_and_emulated_rootless",
    );
}

#[test]
fn steps_run_under_seccomp_native_and_emulated_as_root() {
    seccomp_native_and_emulated(
        As::Root,
        "steps_run_under_seccomp_native_and_emulated_as_root",
    );
}

const INSECURE: &str = "FROM busybox
RUN grep -E '^(Seccomp|CapEff):' /proc/self/status > /default
RUN --security=insecure grep -E '^(Seccomp|CapEff):' /proc/self/status > /insecure \
 && unshare -Um true && echo nested-userns-ok >> /insecure
";

#[test]
fn run_security_insecure_has_no_filter_and_every_capability() {
    let test = "run_security_insecure_has_no_filter_and_every_capability";
    let Some(env) = Env::new(test) else {
        return;
    };
    let ctx = env.context("insecure", &[("Dockerfile", INSECURE)]);
    let out = env.work.path().join("insecure-out");
    // Without the entitlement the build is refused before anything runs, naming the line.
    let dest = format!("type=local,dest={}", out.display());
    let refused = env.run(&[
        "build",
        "--no-cache",
        "-o",
        &dest,
        ctx.to_str().expect("utf-8"),
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("Dockerfile:3: RUN --security=insecure")
            && err.contains("security.insecure is not allowed")
            && err.contains("--allow security.insecure"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    build_local(&env, &ctx, &out, &["--allow", "security.insecure"]);
    let d = read(&out.join("default"));
    assert!(d.contains("Seccomp:\t2\n"), "{d}");
    let i = read(&out.join("insecure"));
    assert!(i.contains("Seccomp:\t0\n"), "{i}");
    // Every capability the kernel knows (CAP_LAST_CAP 40 since Linux 5.9).
    assert!(i.contains("CapEff:\t000001ffffffffff\n"), "{i}");
    assert!(i.contains("nested-userns-ok"), "{i}");
}

/// The static probe (`seccomp_support/probe.c`) built with the host's C compiler into `dir`,
/// or `None` (with a SKIPPED line) when there is none that links statically.
fn probe(test: &str, dir: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seccomp_support/probe.c");
    let bin = dir.join("probe");
    std::fs::create_dir_all(dir).expect("mkdir");
    let out = Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(&bin)
        .arg(&src)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(bin),
        Ok(o) => {
            imgfarm_testkit::skip(test, &format!("cc -static failed: {}", text(&o.stderr)));
            None
        }
        Err(e) => {
            imgfarm_testkit::skip(test, &format!("no C compiler (cc): {e}"));
            None
        }
    }
}

/// A process of the build's user outside the step, killed on drop.
struct Sentinel(Child);

impl Sentinel {
    fn start(env: &Env) -> Sentinel {
        let mut c = if env.as_root {
            Command::new("sleep")
        } else {
            env.user.command("sleep")
        };
        Sentinel(c.arg("600").spawn().expect("sleep starts"))
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The busybox half of the escape attempts; each line `name: <outcome>`.
const ESCAPE_SH: &str = r#"#!/bin/sh
outside=$1 hostfile=$2
mkdir -p /mnt # busybox has none: a mount must fail for want of permission, not of a target
try() { name=$1; shift; if "$@" >/dev/null 2>/tmp/err; then echo "$name: ESCAPED"; else echo "$name: refused: $(head -c 200 /tmp/err)"; fi; }
grep '^Seccomp:' /proc/self/status | tr '\t' ' '
try unshare-U unshare -U true
try unshare-m unshare -m true
try unshare-Urm unshare -Urm sh -c 'mount -t tmpfs none /mnt'
try mount-tmpfs mount -t tmpfs none /mnt
try write-sys sh -c 'echo 1 > /sys/kernel/mm/ksm/run'
try mkdir-sys mkdir /sys/imgfarm-escape
try nsenter nsenter -t 1 -U -m true
try see-outside test -e /proc/$outside
try read-host-file cat "$hostfile"
try kill-outside kill -0 "$outside"
/probe "$outside"
# Last: kill everything this step may signal; only the step's own processes are candidates.
sleep 300 &
kill -9 -1
wait
echo "after-kill: step still running"
"#;

fn escape_attempts(who: As, test: &str) {
    let Some(env) = Env::new_as(test, who) else {
        return;
    };
    let ctx_dir = env.work.path().join("escape");
    let Some(_) = probe(test, &ctx_dir) else {
        return;
    };
    let host_file = env.work.path().join("host-secret");
    std::fs::write(&host_file, "host-secret-content\n").expect("host file");
    let mounts_before = read(Path::new("/proc/self/mountinfo"));
    let mut sentinel = Sentinel::start(&env);
    let pid = sentinel.0.id().to_string();
    let df = format!(
        "FROM busybox\nCOPY probe escape.sh /\n\
         RUN sh /escape.sh {pid} {} > /report 2>&1\n",
        host_file.display()
    );
    let ctx = env.context(
        "escape",
        &[("Dockerfile", df.as_str()), ("escape.sh", ESCAPE_SH)],
    );
    let out = env.work.path().join("escape-out");
    build_local(&env, &ctx, &out, &["--platform", "linux/amd64"]);
    let report = read(&out.join("report"));
    eprintln!("{test}: the step's report:\n{report}");
    let line = |name: &str| {
        report
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")) || l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in the report:\n{report}"))
            .to_string()
    };
    assert_eq!(line("Seccomp"), "Seccomp: 2", "{report}");
    for name in [
        "unshare-U",
        "unshare-m",
        "unshare-Urm",
        "mount-tmpfs",
        "write-sys",
        "mkdir-sys",
        "nsenter",
        "see-outside",
        "read-host-file",
        "kill-outside",
    ] {
        assert!(line(name).contains("refused"), "{name}:\n{report}");
    }
    // Refused by the profile (EPERM, clone3 ENOSYS); processes outside are invisible in the
    // step's pid namespace (ESRCH) before the profile is even asked.
    for (name, want) in [
        ("getpid", "OK"),
        ("keyctl", "EPERM"),
        ("add_key", "EPERM"),
        ("kexec_load", "EPERM"),
        ("kexec_file_load", "EPERM"),
        ("reboot", "EPERM"),
        ("init_module", "EPERM"),
        ("mount", "EPERM"),
        ("unshare_mount", "EPERM"),
        ("unshare_user", "EPERM"),
        ("setns", "EPERM"),
        ("clone_newuser", "EPERM"),
        ("clone3", "ENOSYS"),
        ("personality_addr_no_randomize", "EPERM"),
        ("personality_query", "OK"),
        ("socket_vsock", "EPERM"),
        ("socket_inet", "OK"),
        ("socket_packet", "EPERM"),
        ("socket_raw_ip", "OK"),
        ("ptrace_outside", "ESRCH"),
        ("kill0_outside", "ESRCH"),
        ("bpf", "EPERM"),
        ("perf_event_open", "EPERM"),
        ("open_by_handle_at", "EPERM"),
    ] {
        let l = report
            .lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in the report:\n{report}"));
        assert_eq!(l, format!("{name}={want}"), "{report}");
    }
    assert!(
        report.contains("after-kill: step still running"),
        "{report}"
    );
    // The host: the sentinel lives, the file is unchanged, no mount appeared.
    assert!(
        sentinel.alive(),
        "kill -9 -1 in a step killed a host process"
    );
    assert_eq!(read(&host_file), "host-secret-content\n");
    assert!(!report.contains("host-secret-content"), "{report}");
    assert_eq!(read(Path::new("/proc/self/mountinfo")), mounts_before);
}

#[test]
fn escape_attempts_fail_and_leave_the_host_untouched_rootless() {
    escape_attempts(
        As::FarmUser,
        "escape_attempts_fail_and_leave_the_host_untouched_rootless",
    );
}

#[test]
fn escape_attempts_fail_and_leave_the_host_untouched_as_root() {
    escape_attempts(
        As::Root,
        "escape_attempts_fail_and_leave_the_host_untouched_as_root",
    );
}

/// `seccomp_support/status32.s` assembled and linked as a static i386 program into `dir`,
/// or `None` (with a SKIPPED line) without binutils' `as`/`ld`.
fn status32(test: &str, dir: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seccomp_support/status32.s");
    std::fs::create_dir_all(dir).expect("mkdir");
    let obj = dir.join("status32.o");
    let bin = dir.join("status32");
    let steps: [Vec<&std::ffi::OsStr>; 2] = [
        vec![
            "as".as_ref(),
            "--32".as_ref(),
            "-o".as_ref(),
            obj.as_os_str(),
            src.as_os_str(),
        ],
        vec![
            "ld".as_ref(),
            "-m".as_ref(),
            "elf_i386".as_ref(),
            "-o".as_ref(),
            bin.as_os_str(),
            obj.as_os_str(),
        ],
    ];
    for argv in steps {
        match Command::new(argv[0]).args(&argv[1..]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                imgfarm_testkit::skip(test, &format!("{:?} failed: {}", argv[0], text(&o.stderr)));
                return None;
            }
            Err(e) => {
                imgfarm_testkit::skip(test, &format!("no {:?}: {e}", argv[0]));
                return None;
            }
        }
    }
    std::fs::remove_file(&obj).expect("rm .o");
    Some(bin)
}

/// linux/386 is native on amd64, but its int 0x80 syscalls are of another audit
/// architecture, which the host filter would kill: under the profile the step runs under
/// qemu-i386 (a private binfmt_misc handler) and is filtered like any emulated step.
fn i386_under_seccomp(who: As, test: &str) {
    let Some(env) = Env::new_as(test, who) else {
        return;
    };
    let dir = env.work.path().join("i386");
    let Some(_) = status32(test, &dir) else {
        return;
    };
    let df = "FROM scratch\nCOPY status32 /status32\nRUN [\"/status32\"]\n";
    let ctx = env.context("i386", &[("Dockerfile", df)]);
    let log = ok(&env.run(&[
        "build",
        "--progress",
        "plain",
        "--no-cache",
        "--platform",
        "linux/386",
        ctx.to_str().expect("utf-8"),
    ]));
    // Filtered, and alive: run natively under the x86_64 filter, its first int 0x80 would
    // have been killed (SIGSYS); before the profile it ran natively, unfiltered.
    assert!(log.contains("Seccomp:\t2"), "{log}");
}

#[test]
fn native_i386_steps_run_under_qemu_and_the_filter_rootless() {
    i386_under_seccomp(
        As::FarmUser,
        "native_i386_steps_run_under_qemu_and_the_filter_rootless",
    );
}

#[test]
fn native_i386_steps_run_under_qemu_and_the_filter_as_root() {
    i386_under_seccomp(
        As::Root,
        "native_i386_steps_run_under_qemu_and_the_filter_as_root",
    );
}
