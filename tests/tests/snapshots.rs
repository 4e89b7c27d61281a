//! The snapshotter (issue 13), through the real binary as the unprivileged farm user: each
//! layer is unpacked once per state and kept across processes, RUN uppers become the next
//! step's lower without an unpack, concurrent builds share one unpack, long chains are
//! flattened, a build killed mid-RUN leaves nothing half-committed, `prune` keeps the
//! snapshots of images while freeing the rest (`du` shows them apart), and the copy
//! snapshotter (no overlayfs) builds the same image as the overlay one.

mod build_support;
mod oracle_support;

use build_support::{ok, Env};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `imgfarm --state STATE build --progress plain CTX` with the worker's info log on.
fn build_logged(env: &Env, ctx: &Path) -> Command {
    let mut c = env.command();
    c.arg("--state")
        .arg(env.state.path())
        .args(["build", "--progress", "plain"])
        .arg(ctx)
        .env("IMGFARM_LOG", "imgfarm_worker=info")
        .env_remove("IMGFARM_STATE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Layers unpacked by one build, from its log.
fn unpacks(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(" unpacked ") && l.contains("snapshot"))
        .count()
}

/// Committed snapshot names in the state.
fn committed(env: &Env) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(env.state.path().join("snapshots"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("fs").is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn du(env: &Env) -> serde_json::Value {
    let out = env.run(&["du", "--format", "json"]);
    ok(&out);
    serde_json::from_slice(&out.stdout).expect("du json")
}

#[test]
fn stages_on_one_base_unpack_it_once_and_later_builds_unpack_nothing() {
    let test = "stages_on_one_base_unpack_it_once_and_later_builds_unpack_nothing";
    let Some(env) = Env::new(test) else {
        return;
    };
    let two = "FROM busybox AS a\nRUN echo a > /a\nRUN cat /a > /a2\n\
               FROM busybox AS b\nRUN echo b > /b\n\
               FROM scratch\nCOPY --from=a /a2 /a\nCOPY --from=b /b /b\n";
    let ctx = env.context("two-stages", &[("Dockerfile", two)]);
    let out = build_logged(&env, &ctx).output().expect("build");
    ok(&out);
    // busybox is one layer: unpacked once for both stages; each RUN's upper is committed,
    // so `cat /a` stacks on the first RUN without unpacking its blob.
    assert_eq!(unpacks(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(committed(&env).len(), 4, "base + three RUNs");

    // Another process, another Dockerfile on the same base: nothing to unpack.
    let other = "FROM busybox\nRUN echo c > /c\n";
    let ctx = env.context("other", &[("Dockerfile", other)]);
    let out = build_logged(&env, &ctx).output().expect("build");
    ok(&out);
    assert_eq!(unpacks(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn concurrent_builds_on_one_state_share_one_unpack() {
    let test = "concurrent_builds_on_one_state_share_one_unpack";
    let Some(env) = Env::new(test) else {
        return;
    };
    // Four processes need the same base snapshot at once: one unpacks while the others wait
    // for its lock, and none sees a half-made snapshot.
    let children: Vec<_> = (0..4)
        .map(|i| {
            let df = format!("FROM busybox\nRUN echo build-{i} > /which && chown 1000 /which\n");
            let ctx = env.context(&format!("concurrent-{i}"), &[("Dockerfile", &df)]);
            build_logged(&env, &ctx).spawn().expect("imgfarm starts")
        })
        .collect();
    let mut total = 0;
    for c in children {
        let out = c.wait_with_output().expect("output");
        ok(&out);
        total += unpacks(&out);
    }
    assert_eq!(total, 1, "the base is unpacked once across four builds");
    assert_eq!(committed(&env).len(), 5, "base + four RUNs");
}

#[test]
fn long_chains_are_flattened_below_the_overlay_limit() {
    let test = "long_chains_are_flattened_below_the_overlay_limit";
    let Some(env) = Env::new(test) else {
        return;
    };
    // 45 RUN layers on busybox: the last steps stack more lower dirs than one overlay mount
    // takes, so their bottom part is applied into one flat dir (whiteouts included).
    let mut df = String::from("FROM busybox\nRUN touch /gone\nRUN rm /gone\n");
    for i in 0..42 {
        df.push_str(&format!("RUN echo {i} > /f{i}\n"));
    }
    df.push_str(
        "RUN test ! -e /gone && cat /f0 /f20 /f41 > /all && test \"$(wc -l < /all)\" = 3\n",
    );
    let ctx = env.context("long", &[("Dockerfile", &df)]);
    ok(&build_logged(&env, &ctx).output().expect("build"));
    assert!(
        committed(&env).iter().any(|n| n.starts_with("flat-")),
        "a flattened snapshot: {:?}",
        committed(&env)
    );
}

/// Whether a process with exactly this argv runs on the machine.
fn running(argv: &[&str]) -> bool {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
        })
        .unwrap_or(false)
}

/// Waits (up to a minute) for a RUN's process with exactly this argv.
fn wait_until_running(argv: &[&str]) {
    let t0 = Instant::now();
    while !running(argv) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the RUN never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_build_killed_mid_run_leaves_no_half_committed_snapshot() {
    let test = "a_build_killed_mid_run_leaves_no_half_committed_snapshot";
    let Some(env) = Env::new(test) else {
        return;
    };
    let ctx = env.context(
        "killed",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo partial > /p && sleep 613\n",
        )],
    );
    let mut child = build_logged(&env, &ctx).spawn().expect("imgfarm starts");
    let active = env.state.path().join("snapshots").join("active");
    wait_until_running(&["sleep", "613"]);
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let t0 = Instant::now();
    while running(&["sleep", "613"]) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the step outlived its build"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Only the base was committed; the RUN's upper is an active dir, never a lower.
    assert_eq!(committed(&env).len(), 1, "{:?}", committed(&env));
    assert!(
        std::fs::read_dir(&active).is_ok_and(|mut d| d.next().is_some()),
        "the killed RUN's active dir is left for the next process"
    );

    let ctx = env.context(
        "after",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN test ! -e /p && echo ok > /ok\n",
        )],
    );
    let out = build_logged(&env, &ctx).output().expect("build");
    ok(&out);
    assert_eq!(unpacks(&out), 0);
    assert!(
        std::fs::read_dir(&active).is_ok_and(|mut d| d.next().is_none()),
        "the next process alone on the state removed the stale active dir"
    );
}

#[test]
fn prune_keeps_image_snapshots_and_frees_the_rest() {
    let test = "prune_keeps_image_snapshots_and_frees_the_rest";
    let Some(env) = Env::new(test) else {
        return;
    };
    let df = "FROM busybox\nRUN mkdir -p /big && head -c 3000000 /dev/urandom > /big/blob \
              && chown -R 1000:1000 /big && chmod 0700 /big\n";
    let ctx = env.context("prune", &[("Dockerfile", df)]);
    ok(&env.run(&["build", "--progress", "plain", ctx.to_str().expect("utf-8")]));
    let before = du(&env);
    assert_eq!(before["snapshots"], 2, "{before}");
    assert!(
        before["snapshotBytes"].as_u64().unwrap_or(0) > 3_000_000,
        "{before}"
    );

    // Plain prune: the cache still references the RUN's chain, so both stay.
    ok(&env.run(&["prune"]));
    assert_eq!(du(&env)["snapshots"], 2);

    // --all drops the cache: only busybox (an image of the store) keeps its snapshot.
    let out = env.run(&["prune", "--all"]);
    let log = ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("deleted 1 snapshots, kept 1"),
        "{stdout}{log}"
    );
    let after = du(&env);
    assert_eq!(after["snapshots"], 1, "{after}");
    for sub in ["cache", "tmp", "snapshots/active", "snapshots/locks"] {
        let p = env.state.path().join(sub);
        let left: Vec<_> = std::fs::read_dir(&p)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} still holds {left:?}", p.display());
    }
    // The kept snapshot still serves: a new build unpacks nothing.
    let ctx = env.context("again", &[("Dockerfile", "FROM busybox\nRUN true\n")]);
    let out = build_logged(&env, &ctx).output().expect("build");
    ok(&out);
    assert_eq!(unpacks(&out), 0);
}

#[test]
fn prune_skips_snapshots_while_a_build_holds_them() {
    let test = "prune_skips_snapshots_while_a_build_holds_them";
    let Some(env) = Env::new(test) else {
        return;
    };
    let ctx = env.context("held", &[("Dockerfile", "FROM busybox\nRUN sleep 614\n")]);
    let mut child = build_logged(&env, &ctx).spawn().expect("imgfarm starts");
    wait_until_running(&["sleep", "614"]);
    let out = env.run(&["prune"]);
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let err = ok(&out);
    assert!(err.contains("in use by a running build or worker"), "{err}");
    assert_eq!(committed(&env).len(), 1, "the base snapshot is untouched");
}

/// Owners, modes, hardlinks, deletions of base files and of a previous step's tree, an
/// opaque-making `rm -rf` + `mkdir`, and appends to a base file, over three steps.
const TREES: &str = r#"FROM busybox
RUN touch /owned && chown 1000:2000 /owned && chmod 0600 /owned \
 && mkdir -p /gone/sub /keep/sub && echo x > /gone/sub/f && echo y > /keep/sub/f \
 && chown -R 1000:1000 /gone && chmod 0700 /gone/sub \
 && mkdir -p /a /b && echo linked > /a/f && ln /a/f /b/g && chown 33:33 /a/f \
 && mkdir /locked && chmod 0000 /locked
RUN rm -rf /gone /bin/ls /keep/sub && mkdir /keep/sub && echo new > /keep/sub/g \
 && echo "extra:x:5000:5000::/:/bin/sh" >> /etc/passwd && chmod 0640 /owned
RUN test ! -e /gone && test ! -e /keep/sub/f && cat /keep/sub/g /a/f > /seen
"#;

#[test]
fn the_copy_snapshotter_builds_what_the_overlay_one_builds() {
    let test = "the_copy_snapshotter_builds_what_the_overlay_one_builds";
    let Some(env) = Env::new(test) else {
        return;
    };
    let ctx = env.context("trees", &[("Dockerfile", TREES)]);
    let archive = |mode: &str| -> oracle_support::Image {
        // One state; --no-cache runs every step again in each mode.
        let dest = env.work.path().join(format!("{mode}.tar"));
        let mut c = env.command();
        c.arg("--state")
            .arg(env.state.path())
            .args(["build", "--progress", "plain", "--no-cache", "-o"])
            .arg(format!("type=docker,dest={}", dest.display()))
            .arg(&ctx)
            .env("IMGFARM_SNAPSHOTTER", mode)
            .env("IMGFARM_LOG", "imgfarm_worker=info")
            .env_remove("IMGFARM_STATE");
        let out = c.output().expect("build");
        let log = ok(&out);
        if mode == "copy" {
            assert!(log.contains("whole copies"), "copy mode is said:\n{log}");
        }
        oracle_support::read_docker_archive(&dest)
    };
    let overlay = archive("overlay");
    let copy = archive("copy");
    assert!(
        committed(&env).iter().any(|n| n.starts_with("copy-")),
        "{:?}",
        committed(&env)
    );
    for t in [&copy.tree, &overlay.tree] {
        assert!(t.contains_key("seen") && t.contains_key("keep/sub/g"));
        assert!(
            !t.contains_key("bin/ls") && !t.contains_key("gone") && !t.contains_key("keep/sub/f")
        );
        assert_eq!(t["owned"].mode, 0o640);
    }
    let diff = oracle_support::tree::diff(&copy.tree, &overlay.tree);
    assert!(diff.is_empty(), "copy vs overlay:\n{}", diff.join("\n"));
    assert_eq!(copy.layers, overlay.layers);
}

#[test]
fn copy_from_reads_a_committed_snapshot_in_place_when_one_layer_holds_the_source() {
    let test = "copy_from_reads_a_committed_snapshot_in_place_when_one_layer_holds_the_source";
    let Some(env) = Env::new(test) else {
        return;
    };
    let df = "FROM busybox AS build\n\
              RUN mkdir -p /out/sub && head -c 1000000 /dev/urandom > /out/big \
               && echo hi > /out/sub/small && chown -R 1000:1000 /out/sub && chmod 0600 /out/sub/small \
               && ln /out/big /out/big2\n\
              RUN echo later > /later\n\
              FROM busybox AS two\n\
              RUN mkdir /m && echo a > /m/a\n\
              RUN echo b > /m/b\n\
              FROM scratch\n\
              COPY --from=build /out /app\n\
              COPY --from=two /m /m\n";
    let ctx = env.context("in-place", &[("Dockerfile", df)]);
    let dest = env.work.path().join("in-place.tar");
    let mut c = build_logged(&env, &ctx);
    c.arg("-o")
        .arg(format!("type=docker,dest={}", dest.display()))
        .env("IMGFARM_LOG", "imgfarm_worker=debug");
    let out = c.output().expect("build");
    let log = ok(&out);
    // /out comes from one RUN's snapshot; /m from two layers, so it is unpacked.
    assert_eq!(
        log.matches("copy sources read in place").count(),
        1,
        "{log}"
    );
    let img = oracle_support::read_docker_archive(&dest);
    let t = &img.tree;
    let small = &t["app/sub/small"];
    assert_eq!((small.uid, small.gid, small.mode), (1000, 1000, 0o600));
    assert_eq!(t["app/sub"].uid, 1000);
    assert!(t.contains_key("app/big") && t.contains_key("app/big2"));
    assert_eq!(t["app/big"].links, ["app/big2"]);
    assert!(t.contains_key("m/a") && t.contains_key("m/b"));
    assert!(!t.contains_key("app/later") && !t.contains_key("later"));
}

#[test]
fn a_debian_base_is_unpacked_once_for_two_stages_and_never_again() {
    let test = "a_debian_base_is_unpacked_once_for_two_stages_and_never_again";
    let Some(env) = Env::new(test) else {
        return;
    };
    let Some(debian) = imgfarm_testkit::or_skip(test, imgfarm_testkit::DebianBase::get()) else {
        return;
    };
    let layout = env.work.path().join("debian-oci");
    build_support::copy_dir(debian.layout_dir(), &layout);
    env.chown(&layout);
    ok(&env.run(&[
        "debug",
        "import-layout",
        layout.to_str().expect("utf-8"),
        "--ref",
        "bookworm",
        "--name",
        "debian:bookworm",
    ]));
    let two = "FROM debian:bookworm AS a\nRUN echo a > /a && useradd -m app\n\
               FROM debian:bookworm AS b\nRUN echo b > /b\n\
               FROM scratch\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n";
    let ctx = env.context("debian-two", &[("Dockerfile", two)]);
    let mut c = build_logged(&env, &ctx);
    c.args(["--platform", "linux/amd64"]);
    let out = c.output().expect("build");
    ok(&out);
    // bookworm is one layer (mmdebstrap): unpacked once for both stages.
    assert_eq!(unpacks(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));

    let other =
        "FROM debian:bookworm\nWORKDIR /srv\nCOPY f .\nRUN test -f /etc/debian_version && cat f\n";
    let ctx = env.context("debian-other", &[("Dockerfile", other), ("f", "x\n")]);
    let mut c = build_logged(&env, &ctx);
    c.args(["--platform", "linux/amd64"]);
    let out = c.output().expect("build");
    ok(&out);
    // Only the WORKDIR and COPY layers (a few bytes each) are new; the base is not unpacked.
    assert_eq!(unpacks(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_unknown_snapshotter_name_is_said_and_overlay_is_used() {
    let test = "an_unknown_snapshotter_name_is_said_and_overlay_is_used";
    let Some(env) = Env::new(test) else {
        return;
    };
    let ctx = env.context("bogus", &[("Dockerfile", "FROM busybox\nRUN true\n")]);
    let mut c = build_logged(&env, &ctx);
    c.env("IMGFARM_SNAPSHOTTER", "zfs");
    let log = ok(&c.output().expect("build"));
    assert!(
        log.contains("IMGFARM_SNAPSHOTTER=\"zfs\" is not overlay or copy: ignored"),
        "{log}"
    );
    assert!(
        committed(&env).iter().all(|n| !n.starts_with("copy-")),
        "{:?}",
        committed(&env)
    );
}
