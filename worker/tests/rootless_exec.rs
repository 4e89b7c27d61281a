//! Real rootless execution: the `imgfarm-exec-probe` binary runs steps as the unprivileged
//! farm user (never root), over the testkit's busybox layers, unpacked inside a user
//! namespace by the executor itself. Work dirs are removed from inside a user namespace.

use imgfarm_common::platform::Platform;
use imgfarm_testkit::{or_skip, BaseImages, FarmUser, UserTempDir};
use imgfarm_worker::emulation;
use imgfarm_worker::executor::{ExecRequest, ExtraMount, StepNetwork};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const PROBE: &str = env!("CARGO_BIN_EXE_imgfarm-exec-probe");

struct Fx {
    user: FarmUser,
    dir: UserTempDir,
    lower: PathBuf,
    arch: &'static str,
    n: std::cell::Cell<u32>,
}

struct Out {
    stdout: String,
    result: serde_json::Value,
    upper: PathBuf,
}

impl Out {
    fn ok(&self) -> bool {
        self.result["ok"] == true
    }
}

fn fixture(test: &str, arch: &'static str) -> Option<Fx> {
    let user = or_skip(test, FarmUser::get())?;
    let images = or_skip(test, BaseImages::build())?;
    let dir = user.tempdir().expect("user temp dir");
    let lower = dir.path().join("layer");
    let out = user
        .command(PROBE)
        .arg("unpack")
        .arg(images.layer_tar(arch))
        .arg(&lower)
        .arg(dir.path().join("unpack-scratch"))
        .output()
        .expect("start probe");
    assert!(
        out.status.success(),
        "unpack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Fx {
        user,
        dir,
        lower,
        arch,
        n: std::cell::Cell::new(0),
    })
}

impl Fx {
    fn request(&self, script: &str) -> ExecRequest {
        let i = self.n.get();
        self.n.set(i + 1);
        let base = self.dir.path().join(format!("step{i}"));
        let mut r = ExecRequest::new(
            vec![self.lower.clone()],
            base.join("upper"),
            base.join("work"),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        );
        r.platform = Platform::new("linux", self.arch, "");
        r
    }

    fn run(&self, req: &ExecRequest) -> Out {
        self.run_env(req, &[])
    }

    fn run_env(&self, req: &ExecRequest, env: &[(&str, &str)]) -> Out {
        for d in [&req.upper, &req.work] {
            self.mkdir(d);
        }
        let file = req.work.with_extension("json");
        std::fs::write(&file, serde_json::to_vec(req).expect("json")).expect("write request");
        self.chown(&file);
        let mut c = self.user.command(PROBE);
        c.arg("run").arg(&file);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("start probe");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = stderr
            .lines()
            .find_map(|l| l.strip_prefix("PROBE-RESULT "))
            .unwrap_or_else(|| panic!("no result from the probe; stderr:\n{stderr}"));
        Out {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            result: serde_json::from_str(line).expect("result json"),
            upper: req.upper.clone(),
        }
    }

    fn mkdir(&self, d: &Path) {
        std::fs::create_dir_all(d).expect("mkdir");
        let mut p = d.to_path_buf();
        while p.starts_with(self.dir.path()) && p != self.dir.path() {
            self.chown(&p);
            p.pop();
        }
    }

    fn chown(&self, p: &Path) {
        if imgfarm_testkit::is_root() {
            std::os::unix::fs::chown(p, Some(self.user.uid()), Some(self.user.gid()))
                .expect("chown");
        }
    }

    /// Remove a tree with the executor (inside a user namespace), as the user.
    fn remove(&self, p: &Path) {
        let out = self
            .user
            .command(PROBE)
            .arg("remove")
            .arg(p)
            .output()
            .expect("start probe");
        assert!(
            out.status.success(),
            "remove failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            p.symlink_metadata().is_err(),
            "{} still exists",
            p.display()
        );
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        // Everything under the temp dir, including sub-uid-owned files.
        let entries: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        for e in entries {
            let _ = self.user.command(PROBE).arg("remove").arg(&e).output();
        }
    }
}

/// Live processes whose argv is exactly `argv` (zombies do not count).
fn live_with_argv(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let zombie = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()
                        .map(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            !zombie && std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == want)
        })
        .collect()
}

/// Live pasta processes of the executor (`... --dns-forward 10.0.2.3 ... PID`) whose step
/// (the helper `PID`) is gone: they should have been stopped with it.
fn orphan_pastas() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let alive = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|r| !r.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let Ok(c) = std::fs::read(format!("/proc/{p}/cmdline")) else {
                return false;
            };
            let argv: Vec<String> = c
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            argv.first().is_some_and(|a| a.ends_with("pasta"))
                && argv.iter().any(|a| a == "--dns-forward")
                && alive(&p.to_string())
                && argv.last().is_some_and(|target| !alive(target))
        })
        .collect()
}

/// Waits up to 3 s for [`orphan_pastas`] to be empty; the survivors.
fn pastas_left() -> Vec<u32> {
    let t0 = std::time::Instant::now();
    loop {
        let left = orphan_pastas();
        if left.is_empty() || t0.elapsed() > std::time::Duration::from_secs(3) {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_cancelled_step_dies_with_every_process_of_its_pid_namespace() {
    let Some(fx) = fixture("a_cancelled_step_dies", "amd64") else {
        return;
    };
    // Pid 1 is a shell running as a non-root user (so its parent-death signal
    // is cleared by the user switch), with a background and a foreground
    // child: killing only the helper would leave them running.
    let mut r = fx.request("echo started; sleep 3071 & sleep 3072; echo not-reached");
    r.user = "65534".into();
    let t0 = std::time::Instant::now();
    let out = fx.run_env(&r, &[("IMGFARM_PROBE_CANCEL_AFTER_MS", "1500")]);
    let took = t0.elapsed();
    assert_eq!(out.result["cancelled"], true, "{}", out.result);
    assert_eq!(out.stdout, "started\n");
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    for argv in [["sleep", "3071"], ["sleep", "3072"]] {
        assert_eq!(
            live_with_argv(&argv),
            Vec::<u32>::new(),
            "{argv:?} survived"
        );
    }
    assert_eq!(pastas_left(), Vec::<u32>::new(), "pasta outlived the step");
    // A token triggered before the start runs nothing.
    let r = fx.request("echo must-not-run");
    let out = fx.run_env(&r, &[("IMGFARM_PROBE_CANCEL_AFTER_MS", "0")]);
    assert_eq!(out.result["cancelled"], true, "{}", out.result);
    assert_eq!(out.stdout, "");
}

#[test]
fn a_non_root_step_dies_with_a_killed_executor() {
    let Some(fx) = fixture("a_non_root_step_dies_with_a_killed_executor", "amd64") else {
        return;
    };
    // As a SIGKILLed worker would: the process running the executor dies
    // while a step switched to another USER (which clears the parent-death
    // signal unless it is armed again) has a foreground and a background child.
    let mut r = fx.request("sleep 3073 & sleep 3074");
    r.user = "65534".into();
    for d in [&r.upper, &r.work] {
        fx.mkdir(d);
    }
    let file = r.work.with_extension("json");
    std::fs::write(&file, serde_json::to_vec(&r).expect("json")).expect("write request");
    fx.chown(&file);
    let mut probe = fx
        .user
        .command(PROBE)
        .arg("run")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start probe");
    let wait_until = |done: &dyn Fn() -> bool, secs: u64| {
        let t0 = std::time::Instant::now();
        while !done() && t0.elapsed() < std::time::Duration::from_secs(secs) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        done()
    };
    let started = wait_until(&|| !live_with_argv(&["sleep", "3074"]).is_empty(), 30);
    let _ = probe.kill();
    let _ = probe.wait();
    assert!(started, "the step never started");
    let gone = wait_until(
        &|| {
            live_with_argv(&["sleep", "3073"]).is_empty()
                && live_with_argv(&["sleep", "3074"]).is_empty()
        },
        5,
    );
    let survivors: Vec<u32> = [["sleep", "3073"], ["sleep", "3074"]]
        .iter()
        .flat_map(|a| live_with_argv(a))
        .collect();
    for pid in &survivors {
        // Ours (unique argv): clean up before failing.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        gone,
        "processes of the step outlived the executor: {survivors:?}"
    );
    assert_eq!(
        pastas_left(),
        Vec::<u32>::new(),
        "pasta outlived the executor"
    );
    fx.remove(&r.upper);
}

#[test]
fn root_inside_is_the_user_outside_and_ids_map_to_subuids() {
    let Some(fx) = fixture("root_inside_is_the_user_outside", "amd64") else {
        return;
    };
    let r = fx.request("id -u; echo hi > /x; touch /y && chown 1000:1000 /y; echo done");
    let out = fx.run(&r);
    assert!(out.ok(), "{}", out.result);
    assert_eq!(
        out.result["warnings"],
        serde_json::json!([]),
        "no setup warnings"
    );
    assert_eq!(out.stdout, "0\ndone\n");
    let x = std::fs::metadata(out.upper.join("x")).expect("/x in upper");
    assert_eq!(x.uid(), fx.user.uid());
    assert_eq!(
        std::fs::read_to_string(out.upper.join("x")).expect("read"),
        "hi\n"
    );
    let y = std::fs::metadata(out.upper.join("y")).expect("/y in upper");
    assert_eq!(u64::from(y.uid()), fx.user.subuid_start() + 999);
    assert_eq!(u64::from(y.gid()), fx.user.subgid_start() + 999);
    // Only the change is in upper: no mount-point stubs, no /proc, /dev or /sys.
    let mut names: Vec<String> = std::fs::read_dir(&out.upper)
        .expect("upper")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // /etc is there only as the (empty) parent of the /etc/hosts and
    // /etc/resolv.conf mount points, whose stub files are removed again.
    assert_eq!(names, ["etc", "x", "y"]);
    assert_eq!(
        std::fs::read_dir(out.upper.join("etc"))
            .expect("etc")
            .count(),
        0,
        "no stub files left in upper/etc"
    );
    fx.remove(&out.upper);
}

#[test]
fn pid_namespace_proc_and_hostname() {
    let Some(fx) = fixture("pid_namespace_proc_and_hostname", "amd64") else {
        return;
    };
    let mut r = fx.request("echo $$; cat /proc/1/comm; ls /proc | grep -c '^[0-9]'; hostname");
    r.hostname = "farm-build".into();
    let out = fx.run(&r);
    assert!(out.ok(), "{}", out.result);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "1", "{}", out.stdout);
    assert_eq!(lines[1], "sh");
    let procs: u32 = lines[2].parse().expect("count");
    assert!(procs <= 3, "only the step's processes are visible: {procs}");
    assert_eq!(lines[3], "farm-build");
}

#[test]
fn network_none_has_only_loopback_and_host_network_is_shared() {
    let Some(fx) = fixture("network_none_has_only_loopback", "amd64") else {
        return;
    };
    let script = "ls /sys/class/net | tr '\\n' ' '; echo; cat /sys/class/net/lo/operstate; grep -c : /proc/net/dev";
    let mut r = fx.request(script);
    r.network = StepNetwork::None;
    let out = fx.run(&r);
    assert!(out.ok(), "{}", out.result);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0].trim(), "lo", "{}", out.stdout);
    assert_eq!(lines[2], "1", "only lo in /proc/net/dev");
    let mut h = fx.request("grep -c : /proc/net/dev");
    h.network = StepNetwork::Host;
    let host = fx.run(&h);
    assert!(host.ok(), "{}", host.result);
    let n: u32 = host.stdout.trim().parse().expect("count");
    let host_n = std::fs::read_to_string("/proc/net/dev")
        .expect("host /proc/net/dev")
        .matches(':')
        .count() as u32;
    assert_eq!(n, host_n, "host network namespace is shared");
}

#[test]
fn the_default_network_is_isolated_connected_and_blocks_link_local() {
    let Some(fx) = fixture("the_default_network_is_isolated", "amd64") else {
        return;
    };
    // eth0 with a default route (pasta), lo up; link-local unreachable at once; the routes
    // cannot be changed (no CAP_NET_ADMIN); resolv.conf points at pasta's forwarder.
    let script = "ls /sys/class/net | tr '\\n' ' '; echo; \
        awk '$2 == \"00000000\" {print $1}' /proc/net/route; \
        nc -w 2 169.254.169.254 80 </dev/null 2>&1; echo \"nc=$?\"; \
        ip route del unreachable 169.254.0.0/16 2>&1; echo \"del=$?\"; \
        grep nameserver /etc/resolv.conf";
    let r = fx.request(script);
    assert_eq!(r.network, StepNetwork::Isolated, "the default");
    let t0 = std::time::Instant::now();
    let out = fx.run(&r);
    assert!(out.ok(), "{}\n{}", out.result, out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0].trim(), "eth0 lo", "{}", out.stdout);
    assert_eq!(lines[1], "eth0", "default route via eth0: {}", out.stdout);
    assert!(
        out.stdout.contains("No route to host") || out.stdout.contains("unreachable"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("nc=1"), "{}", out.stdout);
    assert!(!out.stdout.contains("del=0"), "{}", out.stdout);
    assert!(
        out.stdout.ends_with("nameserver 10.0.2.3\n") || !host_has_nameserver(),
        "{}",
        out.stdout
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(pastas_left(), Vec::<u32>::new(), "pasta outlived the step");
}

fn host_has_nameserver() -> bool {
    std::fs::read_to_string("/etc/resolv.conf")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("nameserver")))
}

#[test]
fn capabilities_are_dockers_default_set_with_no_new_privs() {
    let Some(fx) = fixture("capabilities_are_dockers_default_set", "amd64") else {
        return;
    };
    let out = fx.run(&fx.request("grep -E '^(Cap|NoNewPrivs)' /proc/self/status"));
    assert!(out.ok(), "{}", out.result);
    let want = "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n\
                CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";
    assert_eq!(out.stdout, want);
    // A non-root user keeps the bounding set but has no effective capabilities (as Docker).
    let mut r = fx.request("grep -E '^Cap(Eff|Bnd)' /proc/self/status; id -u");
    r.user = "nobody".into();
    let out = fx.run(&r);
    assert!(out.ok(), "{}", out.result);
    assert_eq!(
        out.stdout,
        "CapEff:\t0000000000000000\nCapBnd:\t00000000a80425fb\n65534\n"
    );
}

#[test]
fn masked_and_readonly_proc_paths_and_nofile_limit() {
    let Some(fx) = fixture("masked_and_readonly_proc_paths", "amd64") else {
        return;
    };
    let out = fx.run(&fx.request(
        "wc -c < /proc/timer_list; ls /proc/acpi | wc -l; ls /sys/firmware | wc -l; \
         (echo x > /proc/sys/kernel/hostname) 2>/dev/null || echo ro; ulimit -n",
    ));
    assert!(out.ok(), "{}", out.result);
    assert_eq!(out.stdout, "0\n0\n0\nro\n1024\n");
}

#[test]
fn failing_command_reports_exit_code_and_output_tail() {
    let Some(fx) = fixture("failing_command_reports_exit_code", "amd64") else {
        return;
    };
    let out = fx.run(&fx.request("echo about to fail; echo oops >&2; exit 3"));
    assert!(!out.ok());
    assert_eq!(out.result["code"], 3);
    let tail = out.result["tail"].as_str().expect("tail");
    assert!(
        tail.contains("about to fail") && tail.contains("oops"),
        "{tail}"
    );
    assert!(out.result["how"]
        .as_str()
        .is_some_and(|h| h.contains("exit code: 3")));
    let mut r = fx.request("true");
    r.args = vec!["no-such-tool".into()];
    let out = fx.run(&r);
    assert!(
        out.result["error"]
            .as_str()
            .is_some_and(|e| e.contains("executable file not found")),
        "{}",
        out.result
    );
    let mut r = fx.request("true");
    r.user = "ghost".into();
    let out = fx.run(&r);
    assert!(
        out.result["error"]
            .as_str()
            .is_some_and(|e| e.contains("unable to find user ghost")),
        "{}",
        out.result
    );
}

#[test]
fn deleting_lower_files_leaves_overlay_whiteouts_and_opaque_dirs() {
    let Some(fx) = fixture("deleting_lower_files_leaves_whiteouts", "amd64") else {
        return;
    };
    // /etc holds the read-only hosts/resolv.conf binds (as in BuildKit), so the
    // recreated directory is /home.
    let out =
        fx.run(&fx.request("rm /bin/ls && rm -rf /home && mkdir /home && echo x > /home/new"));
    assert!(out.ok(), "{}", out.result);
    let wh = std::fs::symlink_metadata(out.upper.join("bin/ls")).expect("whiteout");
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!(wh.uid(), fx.user.uid());
    // The recreated dir is opaque, marked with the user.* xattr an unprivileged
    // namespace can write (overlay's `userxattr`).
    let mut v = [0u8; 8];
    let path = std::ffi::CString::new(out.upper.join("home").as_os_str().as_encoded_bytes())
        .expect("cstring");
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"user.overlay.opaque".as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    assert_eq!(n, 1, "opaque xattr on upper/home");
    assert_eq!(v[0], b'y');
}

#[test]
fn user_workdir_and_env() {
    let Some(fx) = fixture("user_workdir_and_env", "amd64") else {
        return;
    };
    let mut r = fx.request("id -u; id -g; pwd; echo $HOME $FOO");
    r.user = "65534:0".into();
    r.cwd = "/new/work/dir".into();
    r.env.push("FOO=bar".into());
    let out = fx.run(&r);
    assert!(out.ok(), "{}", out.result);
    assert_eq!(out.stdout, "65534\n0\n/new/work/dir\n/nonexistent bar\n");
    assert!(out.upper.join("new/work/dir").is_dir(), "workdir created");
}

#[test]
fn run_mounts_bind_cache_tmpfs_secret() {
    let Some(fx) = fixture("run_mounts_bind_cache_tmpfs_secret", "amd64") else {
        return;
    };
    let ctx = fx.dir.path().join("ctx");
    fx.mkdir(&ctx);
    std::fs::write(ctx.join("in.txt"), "from context\n").expect("write");
    let cache = fx.dir.path().join("cache");
    fx.mkdir(&cache);
    let secret = fx.dir.path().join("secret");
    std::fs::write(&secret, "s3cr3t").expect("write");
    fx.chown(&secret);
    let mut r = fx.request(
        "cat /src/in.txt; (echo no > /src/x) 2>/dev/null || echo ro; \
         echo kept > /cache/c; df /tmpfs | tail -1 | awk '{print $1}'; \
         cat /run/secrets/token; echo; stat -c '%a %u' /run/secrets/token",
    );
    r.mounts = vec![
        ExtraMount::Bind {
            source: ctx.clone(),
            target: "/src".into(),
            readonly: true,
        },
        ExtraMount::Cache {
            source: cache.clone(),
            target: "/cache".into(),
        },
        ExtraMount::Tmpfs {
            target: "/tmpfs".into(),
            size: Some(1 << 20),
        },
        ExtraMount::Secret {
            source: secret,
            target: "/run/secrets/token".into(),
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
    ];
    let out = fx.run(&r);
    assert!(out.ok(), "{}", out.result);
    assert_eq!(out.stdout, "from context\nro\ntmpfs\ns3cr3t\n400 0\n");
    assert_eq!(
        std::fs::read_to_string(cache.join("c")).expect("cache file"),
        "kept\n"
    );
    // As in BuildKit, directories created as mount targets stay (empty, 0755);
    // stub files created as mount points are removed (its stub cleaner). /etc
    // is the copy-up parent of the hosts/resolv.conf stubs, /run of the secret.
    let mut left: Vec<String> = std::fs::read_dir(&out.upper)
        .expect("upper")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["cache", "etc", "run", "src", "tmpfs"],
        "mount targets left in upper"
    );
    assert_eq!(
        std::fs::read_dir(out.upper.join("etc"))
            .expect("etc")
            .count(),
        0,
        "no stub files left in upper/etc"
    );
    // /run/secrets stays as the secret's created parent (BuildKit keeps it);
    // the token stub file itself is removed.
    let run: Vec<String> = std::fs::read_dir(out.upper.join("run"))
        .expect("run")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(run, ["secrets"]);
    assert_eq!(
        std::fs::read_dir(out.upper.join("run/secrets"))
            .expect("run/secrets")
            .count(),
        0,
        "/run/secrets/token stub removed"
    );
}

#[test]
fn single_id_fallback_warns_about_chown() {
    let Some(fx) = fixture("single_id_fallback_warns_about_chown", "amd64") else {
        return;
    };
    let r = fx.request("id -u; touch /f; chown 1000 /f 2>&1 || echo chown-failed");
    let out = fx.run_env(&r, &[("IMGFARM_PROBE_MAPPING", "single")]);
    assert!(out.ok(), "{}", out.result);
    assert!(out.stdout.starts_with("0\n"), "{}", out.stdout);
    assert!(out.stdout.contains("chown-failed"), "{}", out.stdout);
    let warnings = out.result["warnings"].to_string();
    assert!(warnings.contains("chown"), "{warnings}");
}

#[test]
fn arm64_runs_under_a_private_binfmt_misc_without_root() {
    let Some(fx) = fixture("arm64_runs_under_a_private_binfmt_misc", "arm64") else {
        return;
    };
    let emu = match emulation::private_emulator(&Platform::linux_arm64()) {
        Ok(e) => e,
        Err(e) => {
            imgfarm_testkit::skip("arm64_runs_under_a_private_binfmt_misc", &e.to_string());
            return;
        }
    };
    // Forced private registration: it is the only entry the step's namespace sees, whatever
    // the host has registered.
    let mut r = fx.request(
        "uname -m; ls /proc/sys/fs/binfmt_misc | tr '\\n' ' '; echo; \
         echo abc | tr a-z A-Z; cat /etc/hostname | wc -l",
    );
    r.emulation = Some(emu);
    let out = fx.run(&r);
    assert!(out.ok(), "{}", out.result);
    assert_eq!(
        out.stdout,
        "aarch64\nimgfarm-aarch64 register status \nABC\n1\n"
    );
}

#[test]
fn an_upper_dir_stacks_as_a_lower_layer_with_its_whiteouts() {
    let Some(fx) = fixture("an_upper_dir_stacks_as_a_lower_layer", "amd64") else {
        return;
    };
    let a = fx.run(&fx.request("rm /bin/ls; echo '10.1.1.1 other' > /etc/other"));
    assert!(a.ok(), "{}", a.result);
    let mut r = fx.request("ls /bin/ls 2>/dev/null || echo gone; cat /etc/hosts; hostname");
    r.rootfs_layers.push(a.upper.clone());
    r.hostname = "stacked".into();
    let b = fx.run(&r);
    assert!(b.ok(), "{}", b.result);
    // /etc/hosts exists in the image now, so the step sees BuildKit's generated one.
    assert_eq!(
        b.stdout,
        "gone\n127.0.0.1\tlocalhost stacked\n::1\tlocalhost ip6-localhost ip6-loopback\nstacked\n"
    );
    // Writing it fails (read-only bind), as in BuildKit; nothing lands in upper.
    let mut r = fx.request("echo x >> /etc/hosts 2>/dev/null || echo read-only");
    r.rootfs_layers.push(a.upper.clone());
    let c = fx.run(&r);
    assert_eq!(c.stdout, "read-only\n");
    // Nothing but (at most) the empty copy-up parent of the mount stubs.
    let upper: Vec<String> = std::fs::read_dir(&c.upper)
        .expect("upper")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(upper.is_empty() || upper == ["etc"], "{upper:?}");
    if upper == ["etc"] {
        assert_eq!(
            std::fs::read_dir(c.upper.join("etc")).expect("etc").count(),
            0
        );
    }
}

#[test]
fn unpack_over_parents_turns_oci_whiteouts_into_overlay_whiteouts() {
    let Some(fx) = fixture("unpack_over_parents_turns_oci_whiteouts", "amd64") else {
        return;
    };
    // A second layer made with GNU tar: deletes /bin/ls (.wh.ls), adds /etc/added owned by
    // uid 1000.
    let src = fx.dir.path().join("layer2-src");
    std::fs::create_dir_all(src.join("bin")).expect("mkdir");
    std::fs::create_dir_all(src.join("etc")).expect("mkdir");
    std::fs::write(src.join("bin/.wh.ls"), "").expect("write");
    std::fs::write(src.join("etc/added"), "added\n").expect("write");
    let tar = fx.dir.path().join("layer2.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .args(["--owner=1000", "--group=1000", "--numeric-owner", "-cf"])
        .arg(&tar)
        .args(["bin/.wh.ls", "etc/added"])
        .status()
        .expect("tar");
    assert!(st.success());
    fx.chown(&tar);
    let dest = fx.dir.path().join("layer2");
    let t = std::time::Instant::now();
    let out = fx
        .user
        .command(PROBE)
        .arg("unpack")
        .arg(&tar)
        .arg(&dest)
        .arg(fx.dir.path().join("scratch2"))
        .arg(&fx.lower)
        .output()
        .expect("probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("unpack over a parent: {:?}", t.elapsed());
    let wh = std::fs::symlink_metadata(dest.join("bin/ls")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let added = std::fs::metadata(dest.join("etc/added")).expect("added");
    assert_eq!(u64::from(added.uid()), fx.user.subuid_start() + 999);
    let mut r = fx.request(
        "ls /bin/ls 2>/dev/null || echo gone; cat /etc/added; ls -n /etc/added | awk '{print $3}'",
    );
    r.rootfs_layers.push(dest);
    let o = fx.run(&r);
    assert!(o.ok(), "{}", o.result);
    assert_eq!(o.stdout, "gone\nadded\n1000\n");
}

#[test]
fn a_helper_without_the_hook_is_a_clear_error() {
    // No namespaces are entered: the helper is a binary that ignores the protocol.
    let ex = imgfarm_worker::executor::Executor::new()
        .with_helper("/bin/true")
        .with_mapping(imgfarm_worker::idmap::IdMapping::Single { uid: 1, gid: 1 });
    let req = ExecRequest::new(
        vec![],
        "/nonexistent/upper".into(),
        "/nonexistent/work".into(),
        vec!["true".into()],
    );
    let e = ex
        .run(&req, std::io::sink(), std::io::sink())
        .expect_err("must fail");
    let msg = e.to_string();
    assert!(msg.contains("helper_main_if_requested"), "{msg}");
}

#[test]
fn concurrent_steps_from_one_multithreaded_process() {
    let Some(fx) = fixture("concurrent_steps_from_one_multithreaded_process", "amd64") else {
        return;
    };
    let r = fx.request("echo $$ $(hostname)");
    let file = fx.dir.path().join("parallel.json");
    std::fs::write(&file, serde_json::to_vec(&r).expect("json")).expect("write");
    fx.chown(&file);
    let out = fx
        .user
        .command(PROBE)
        .arg("parallel")
        .arg(&file)
        .arg("6")
        .output()
        .expect("probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    let want: Vec<String> = (0..6).map(|i| format!("{i}: 1 buildkitsandbox")).collect();
    assert_eq!(lines, want);
}

#[test]
fn arm64_runs_through_the_hosts_binfmt_handler_when_it_has_the_f_flag() {
    let test = "arm64_runs_through_the_hosts_binfmt_handler";
    let mode = emulation::resolve(&Platform::linux_arm64());
    let Ok(emulation::EmulationMode::HostBinfmt(name)) = mode else {
        imgfarm_testkit::skip(
            test,
            &format!("no host binfmt_misc handler with F for arm64 ({mode:?})"),
        );
        return;
    };
    let Some(fx) = fixture(test, "arm64") else {
        return;
    };
    let out = fx.run(&fx.request("uname -m"));
    assert!(out.ok(), "handler {name}: {}", out.result);
    assert_eq!(out.stdout, "aarch64\n");
}

#[test]
fn refused_newuidmap_falls_back_to_a_single_id_mapping_with_a_warning() {
    let Some(fx) = fixture("refused_newuidmap_falls_back", "amd64") else {
        return;
    };
    let r = fx.request("id -u; touch /f; chown 1000 /f 2>/dev/null || echo chown-failed");
    let out = fx.run_env(&r, &[("IMGFARM_PROBE_MAPPING", "unowned-range")]);
    assert!(out.ok(), "{}", out.result);
    assert_eq!(out.stdout, "0\nchown-failed\n");
    let warnings = out.result["warnings"].to_string();
    assert!(
        warnings.contains("newuidmap") && warnings.contains("chown"),
        "{warnings}"
    );
}

#[test]
fn a_missing_helper_binary_is_a_clear_error() {
    let ex = imgfarm_worker::executor::Executor::new()
        .with_helper("/nonexistent/imgfarm")
        .with_mapping(imgfarm_worker::idmap::IdMapping::Single { uid: 1, gid: 1 });
    let req = ExecRequest::new(
        vec![],
        "/nonexistent/upper".into(),
        "/nonexistent/work".into(),
        vec!["true".into()],
    );
    let msg = ex
        .run(&req, std::io::sink(), std::io::sink())
        .expect_err("must fail")
        .to_string();
    assert!(
        msg.contains("/nonexistent/imgfarm") && msg.contains("starting"),
        "{msg}"
    );
}
