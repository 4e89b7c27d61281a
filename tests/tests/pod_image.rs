//! imgfarm's own image (the repository's `Dockerfile`), run the way a Kubernetes pod runs it,
//! builds a two-platform image inside.
//!
//! 1. imgfarm (this build's debug binary, as root) builds the image from the root Dockerfile,
//!    FROM the Debian bookworm base in a loopback registry, its `apt-get install` served by the
//!    [`AptRepo`] (`--build-arg APT_SOURCES=...`), and pushes it to that registry.
//! 2. A private `dockerd` (testkit's [`Dockerd`], `--bridge=none`) pulls it and runs it as the
//!    "classic" overlay of deploy/kubernetes runs a worker pod: `--user imgfarm` (uid 1000, not
//!    root), not `--privileged`, every capability dropped but SETUID and SETGID, a read-only
//!    root filesystem with a tmpfs /tmp, seccomp and AppArmor unconfined,
//!    `systempaths=unconfined` (the pod's `procMount: Unmasked`), the state dir on a docker
//!    volume, and `/dev/net/tun` as a device (the hostPath CharDevice the manifests mount, for
//!    pasta). `--network host` is only a test convenience: it lets the container reach the
//!    loopback registry; the apt repository is on the host's own address, which RUN steps
//!    reach through pasta as on any network.
//! 3. Inside, as `imgfarm`, `imgfarm build --platform linux/amd64,linux/arm64 --push` of a
//!    realistic Dockerfile: apt-get install from the AptRepo, `useradd`, `chown` + `chmod 600`,
//!    `uname -m`; arm64 runs under the host's qemu binfmt handler (flag F, so it works from
//!    inside containers), which the container's /proc does not list: imgfarm finds it by
//!    running its arm64 probe program (`emulation::decide_unlisted`).
//! 4. From the host, skopeo and umoci (readers independent of imgfarm) check the index, the
//!    architecture each platform ran on, and the owners and modes.

mod build_support;

use imgfarm_testkit::{
    or_skip, require_root_or_skip, require_tools_or_skip, AptRepo, DebianBase, Dockerd, Registry,
};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The Dockerfile built inside the container.
const INNER: &str = r#"ARG BASE
FROM $BASE
ARG APT_SOURCES
RUN echo "$APT_SOURCES" > /etc/apt/sources.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends jq imgfarm-hello \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home app \
 && echo s3cret > /home/app/secret \
 && chown app:app /home/app/secret && chmod 600 /home/app/secret
RUN uname -m > /arch && jq -n '{"ok": true}' > /jq.json && imgfarm-hello > /hello
USER app
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A temp dir readable by every user (the container's `imgfarm` reads the inner context).
fn open_tempdir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// The context of imgfarm's own image, as `scripts/build-image.sh` stages it when the binaries
/// live outside the repository: the root `.dockerignore` and `target/debug/imgfarm`.
fn image_context(bin: &Path) -> tempfile::TempDir {
    let ctx = open_tempdir("imgfarm-image-ctx-");
    std::fs::copy(
        repo_root().join(".dockerignore"),
        ctx.path().join(".dockerignore"),
    )
    .expect("copying .dockerignore");
    let dst = ctx.path().join("target/debug/imgfarm");
    std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir target/debug");
    // Without its debug info (CI's debug binary carries hundreds of MB of it) when binutils'
    // strip is there; the image is the same otherwise.
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dst)
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped && std::fs::hard_link(bin, &dst).is_err() {
        std::fs::copy(bin, &dst).expect("copying the imgfarm binary");
    }
    // Something the .dockerignore must keep out (and COPY never names).
    std::fs::write(ctx.path().join("target/debug/not-in-the-image"), "x").expect("write");
    ctx
}

/// Removes a docker volume (and any container named `container`) when dropped, before the
/// daemon itself stops.
struct DockerCleanup<'d> {
    docker: &'d Dockerd,
    container: String,
    volume: String,
}

impl Drop for DockerCleanup<'_> {
    fn drop(&mut self) {
        let _ = self
            .docker
            .docker(["rm", "-f", self.container.as_str()])
            .output();
        let _ = self
            .docker
            .docker(["volume", "rm", "-f", self.volume.as_str()])
            .output();
    }
}

/// `umoci unpack` of the `arch` image of `image` (pulled with skopeo) into `dir/arch`; the
/// rootfs, with the image's owners (run as root).
fn unpack(registry: &Registry, image: &str, arch: &str, dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let mut copy = Command::new("skopeo");
    copy.arg("copy")
        .args(registry.skopeo_src_flags())
        .args(["--override-arch", arch, "--override-os", "linux"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:{arch}", layout.display()));
    run(&format!("skopeo copy ({arch})"), &mut copy);
    let bundle = dir.join(arch);
    run(
        &format!("umoci unpack ({arch})"),
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{arch}", layout.display()))
            .arg(&bundle),
    );
    bundle.join("rootfs")
}

/// uid of `name` in the rootfs's /etc/passwd.
fn passwd_uid(rootfs: &Path, name: &str) -> u32 {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| f[2].parse().expect("uid"))
        })
        .unwrap_or_else(|| panic!("{name} is not in /etc/passwd:\n{passwd}"))
}

/// The summed `#N DONE Xs` times of the steps of each platform in `--progress plain`
/// output (`#N [linux/arm64 emulated] [2/4] RUN ...` names a step's platform).
fn step_seconds(progress: &str) -> Vec<(String, f64)> {
    let mut platform_of = std::collections::HashMap::new();
    let mut sums: std::collections::BTreeMap<String, f64> = Default::default();
    for line in progress.lines() {
        let Some((id, rest)) = line.split_once(' ') else {
            continue;
        };
        if !id.starts_with('#') {
            continue;
        }
        if let Some(p) = rest.strip_prefix("[linux/") {
            let arch = p.split([']', ' ']).next().unwrap_or("?");
            platform_of.insert(id.to_string(), format!("linux/{arch}"));
        } else if let Some(t) = rest.strip_prefix("DONE ") {
            if let (Some(p), Ok(secs)) =
                (platform_of.get(id), t.trim_end_matches('s').parse::<f64>())
            {
                *sums.entry(p.clone()).or_default() += secs;
            }
        }
    }
    sums.into_iter().collect()
}

/// ELF machine of a file (62 x86-64, 183 aarch64).
fn elf_machine(path: &Path) -> u16 {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", path.display());
    u16::from_le_bytes([b[18], b[19]])
}

#[test]
fn own_image_builds_two_platforms_inside_an_unprivileged_container() {
    let test = "own_image_builds_two_platforms_inside_an_unprivileged_container";
    if !require_root_or_skip(test) || !require_tools_or_skip(test, &["skopeo", "umoci"]) {
        return;
    }
    let t0 = Instant::now();
    let Some(debian) = or_skip(test, DebianBase::get()) else {
        return;
    };
    let Some(apt) = or_skip(test, AptRepo::start()) else {
        return;
    };
    let Some(registry) = or_skip(test, Registry::start()) else {
        return;
    };
    debian
        .push_to(&registry, "debian", "bookworm")
        .expect("pushing the Debian base");
    let base = registry.image_ref("debian", "bookworm");
    let sources = apt.sources_line();

    // 1. imgfarm's own image, built by imgfarm from the root Dockerfile.
    let bin = build_support::imgfarm_bin();
    let ctx = image_context(&bin);
    let state = tempfile::Builder::new()
        .prefix("imgfarm-image-state-")
        .tempdir()
        .expect("state dir");
    let image = registry.image_ref("imgfarm", "pod-test");
    let t = Instant::now();
    let out = run(
        "imgfarm build of imgfarm's own image",
        Command::new(&bin)
            .arg("--state")
            .arg(state.path())
            .args(["build", "--progress", "plain", "--platform", "linux/amd64"])
            .arg("-f")
            .arg(repo_root().join("Dockerfile"))
            .args(["--build-arg", "PROFILE=debug"])
            .arg("--build-arg")
            .arg(format!("BASE={base}"))
            .arg("--build-arg")
            .arg(format!("APT_SOURCES={sources}"))
            .args(["-t", &image, "--push"])
            .arg(ctx.path())
            .env_remove("IMGFARM_STATE"),
    );
    eprintln!(
        "built and pushed {image} in {:.1?}\n{}",
        t.elapsed(),
        text(&out.stderr)
    );
    drop(state);

    // 2. Run it as a pod would, under a private dockerd.
    let Some(dockerd) = or_skip(test, Dockerd::start(Some(registry.addr()))) else {
        return;
    };
    run("docker pull", &mut dockerd.docker(["pull", "-q", &image]));
    let size = run(
        "docker image inspect",
        &mut dockerd.docker(["image", "inspect", "--format", "{{.Size}}", &image]),
    );
    eprintln!(
        "image size (uncompressed, docker): {} bytes",
        text(&size.stdout).trim()
    );
    let tag = std::process::id();
    let cleanup = DockerCleanup {
        docker: &dockerd,
        container: format!("imgfarm-pod-{tag}"),
        volume: format!("imgfarm-pod-state-{tag}"),
    };
    run(
        "docker volume create",
        &mut dockerd.docker(["volume", "create", cleanup.volume.as_str()]),
    );

    // Who the image runs as, and what it holds.
    let probe = run(
        "docker run (probe)",
        &mut dockerd.docker([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            &image,
            "-c",
            "id -u; id -un; echo $IMGFARM_STATE; stat -c '%u %a' /var/lib/imgfarm; \
             stat -c '%a %U' /usr/bin/newuidmap; getcap /usr/bin/newuidmap /usr/bin/newgidmap; \
             cat /etc/subuid /etc/subgid; command -v pasta; imgfarm --version",
        ]),
    );
    let probe = text(&probe.stdout);
    eprintln!("image probe:\n{probe}");
    let lines: Vec<&str> = probe.lines().collect();
    assert_eq!(
        &lines[..9],
        &[
            "1000",
            "imgfarm",
            "/var/lib/imgfarm",
            "1000 700",
            // File capabilities, not setuid (see the Dockerfile).
            "755 root",
            "/usr/bin/newuidmap cap_setuid=ep",
            "/usr/bin/newgidmap cap_setgid=ep",
            "imgfarm:100000:65536",
            "imgfarm:100000:65536",
        ],
        "{probe}"
    );
    assert!(lines[9].ends_with("/pasta"), "{probe}");
    assert!(lines[10].starts_with("imgfarm "), "{probe}");

    // 3. The two-platform build inside.
    let inner = open_tempdir("imgfarm-pod-ctx-");
    std::fs::write(inner.path().join("Dockerfile"), INNER).expect("write Dockerfile");
    std::fs::set_permissions(
        inner.path().join("Dockerfile"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let result = registry.image_ref("pod-built", "latest");
    let t = Instant::now();
    let mut docker_run = dockerd.docker(["run", "--name", cleanup.container.as_str()]);
    docker_run
        .args(["--user", "imgfarm"])
        .args(["--security-opt", "seccomp=unconfined"])
        .args(["--security-opt", "apparmor=unconfined"])
        .args(["--security-opt", "systempaths=unconfined"])
        .args(["--device", "/dev/net/tun"])
        // As deploy/kubernetes's worker container: every capability dropped but the two the
        // id-map helpers need, a read-only root filesystem and a /tmp of its own (an
        // emptyDir there: exec allowed).
        .args([
            "--cap-drop",
            "ALL",
            "--cap-add",
            "SETUID",
            "--cap-add",
            "SETGID",
        ])
        .args(["--read-only", "--tmpfs", "/tmp:exec,mode=1777"])
        // Test convenience only: the loopback registry is on the host's 127.0.0.1.
        .args(["--network", "host"])
        .arg("-v")
        .arg(format!("{}:/var/lib/imgfarm", cleanup.volume))
        .arg("-v")
        .arg(format!("{}:/ctx:ro", inner.path().display()))
        .arg(&image)
        .args(["build", "--progress", "plain"])
        .args(["--platform", "linux/amd64,linux/arm64"])
        .arg("--build-arg")
        .arg(format!("BASE={base}"))
        .arg("--build-arg")
        .arg(format!("APT_SOURCES={sources}"))
        .args(["-t", &result, "--push", "/ctx"]);
    let out = run("imgfarm build inside the container", &mut docker_run);
    let inner_time = t.elapsed();
    let progress = text(&out.stderr);
    eprintln!("inner build in {inner_time:.1?}:\n{progress}");
    assert!(
        progress.contains("[linux/arm64 emulated]"),
        "arm64 steps are marked emulated:\n{progress}"
    );
    for (platform, secs) in step_seconds(&progress) {
        eprintln!("inner build: {platform} steps took {secs:.1}s in all");
    }

    // 4. Check the result with skopeo and umoci.
    let raw = run(
        "skopeo inspect --raw",
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .args(registry.skopeo_flags_plain())
            .arg(format!("docker://{result}")),
    );
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("index JSON");
    let mut platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("an image index")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{index}");

    let check = tempfile::Builder::new()
        .prefix("imgfarm-pod-check-")
        .tempdir()
        .expect("temp dir");
    for (arch, uname, machine) in [("amd64", "x86_64", 62u16), ("arm64", "aarch64", 183)] {
        let rootfs = unpack(&registry, &result, arch, check.path());
        let got = std::fs::read_to_string(rootfs.join("arch")).expect("/arch");
        assert_eq!(got.trim(), uname, "{arch}: uname -m");
        assert_eq!(
            elf_machine(&rootfs.join("usr/bin/jq")),
            machine,
            "{arch}: jq"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("jq.json"))
                .expect("/jq.json")
                .trim(),
            "{\n  \"ok\": true\n}"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("hello"))
                .expect("/hello")
                .trim(),
            imgfarm_testkit::HELLO_OUTPUT
        );
        let app = passwd_uid(&rootfs, "app");
        let secret = std::fs::symlink_metadata(rootfs.join("home/app/secret")).expect("secret");
        assert_eq!(
            (secret.uid(), secret.gid(), secret.mode() & 0o7777),
            (app, app, 0o600),
            "{arch}: /home/app/secret"
        );
        let home = std::fs::symlink_metadata(rootfs.join("home/app")).expect("home");
        assert_eq!((home.uid(), home.gid()), (app, app), "{arch}: /home/app");
        let hello_uid = passwd_uid(&rootfs, "imgfarm-hello");
        let dir = std::fs::symlink_metadata(rootfs.join("var/lib/imgfarm-hello")).expect("dir");
        assert_eq!(
            (dir.uid(), dir.mode() & 0o7777),
            (hello_uid, 0o750),
            "{arch}: /var/lib/imgfarm-hello"
        );
    }
    drop(cleanup);
    // The daemon's temp dir (data root with the pulled image) goes with it.
    let dockerd_dir = dockerd.log_path().parent().expect("dir").to_path_buf();
    drop(dockerd);
    assert!(
        !dockerd_dir.exists(),
        "{} is left behind",
        dockerd_dir.display()
    );
    eprintln!("total {:.1?}", t0.elapsed());
}

/// `scripts/build-image.sh` refuses, with a message naming the fix, a missing binary, a
/// binary of the wrong architecture, and an unknown profile.
#[test]
fn build_image_script_refuses_missing_or_foreign_binaries() {
    let script = repo_root().join("scripts/build-image.sh");
    let target = tempfile::tempdir().expect("temp dir");
    let go = |args: &[&str]| {
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .env("CARGO_TARGET_DIR", target.path())
            .env("IMGFARM", "/nonexistent/imgfarm")
            .output()
            .expect("bash runs");
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let err = go(&[]);
    assert!(
        err.contains(
            "release/imgfarm is missing: build it first (cargo build -p imgfarm --release)"
        ),
        "{err}"
    );
    let err = go(&["--profile", "fast"]);
    assert!(
        err.contains("--profile fast: want release or debug"),
        "{err}"
    );

    // An aarch64 ELF header where the x86-64 binary belongs, then the reverse.
    let elf = |machine: u16| {
        let mut b = b"\x7fELF\x02\x01\x01".to_vec();
        b.resize(18, 0);
        b.extend_from_slice(&machine.to_le_bytes());
        b.resize(64, 0);
        b
    };
    let amd = target.path().join("debug/imgfarm");
    std::fs::create_dir_all(amd.parent().expect("parent")).expect("mkdir");
    std::fs::write(&amd, elf(183)).expect("write");
    let err = go(&["--profile", "debug"]);
    assert!(
        err.contains("debug/imgfarm is not an x86-64 binary"),
        "{err}"
    );
    std::fs::write(&amd, elf(62)).expect("write");
    let arm = target
        .path()
        .join("aarch64-unknown-linux-gnu/debug/imgfarm");
    std::fs::create_dir_all(arm.parent().expect("parent")).expect("mkdir");
    std::fs::write(&arm, elf(62)).expect("write");
    let err = go(&["--profile", "debug"]);
    assert!(
        err.contains("aarch64-unknown-linux-gnu/debug/imgfarm is not an aarch64 binary"),
        "{err}"
    );
}
