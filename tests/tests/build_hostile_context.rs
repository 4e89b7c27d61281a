//! A hostile build context (issue 15, hostile input): FIFOs, a socket, a
//! character device, a file the building user cannot read, and symlinks
//! out of the context (absolute and `..`). The build runs as the
//! unprivileged farm user and must not hang on the FIFO, must never read
//! through a link out of the context, copies links as links (as Docker
//! does), and fails clearly where Docker fails, leaving the store's refs,
//! the context and the files outside it untouched.

mod build_support;

use build_support::{text, Env};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// Runs `imgfarm build` on `ctx`, killing it after two minutes: a build
/// blocked on a FIFO fails the test instead of hanging it.
fn build(env: &Env, ctx: &Path, dockerfile: &str) -> Output {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    env.chown(&ctx.join("Dockerfile"));
    let mut child = env
        .command()
        .arg("--state")
        .arg(env.state.path())
        .args(["build", "--progress", "plain", "-t", "hostile/ctx"])
        .arg(ctx)
        .env_remove("IMGFARM_STATE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the build hung (killed after 120 s):\n{}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// What the test checks is unchanged: each path's kind, mode and content.
fn describe(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(p).unwrap();
            let t = m.file_type();
            let kind = if t.is_fifo() {
                "fifo".to_string()
            } else if t.is_char_device() {
                "char".to_string()
            } else if t.is_socket() {
                "socket".to_string()
            } else if t.is_symlink() {
                format!("link {:?}", std::fs::read_link(p).unwrap())
            } else if t.is_file() {
                format!("file {:?}", std::fs::read(p).unwrap())
            } else {
                "dir".to_string()
            };
            format!("{} {kind} {:o}", p.display(), m.permissions().mode())
        })
        .collect()
}

fn sh(args: &[&str], dir: &Path) {
    let status = std::process::Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "{args:?}");
}

#[test]
fn hostile_context_neither_hangs_nor_leaks_and_fails_clearly() {
    let test = "hostile_context_neither_hangs_nor_leaks_and_fails_clearly";
    if !imgfarm_testkit::require_root_or_skip(test) {
        return; // mknod and the unreadable file need root to set up
    }
    let Some(env) = Env::new(test) else {
        return;
    };
    // Outside the context: a secret the build must never read.
    let secret = env.work.path().join("secret-outside.txt");
    std::fs::write(&secret, "TOP-SECRET").unwrap();
    let ctx = env.context("ctx", &[("ok.txt", "fine"), ("dir/inner.txt", "inner")]);
    sh(&["mkfifo", "-m", "644", "fifo", "dir/fifo"], &ctx);
    sh(&["mknod", "-m", "666", "null", "c", "1", "3"], &ctx);
    let sock = std::os::unix::net::UnixListener::bind(ctx.join("sock")).unwrap();
    std::os::unix::fs::symlink(&secret, ctx.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret-outside.txt", ctx.join("up-link")).unwrap();
    std::os::unix::fs::symlink("..", ctx.join("up-dir")).unwrap();
    std::os::unix::fs::symlink("/", ctx.join("root-dir")).unwrap();
    env.chown(&ctx);
    // Root-owned and mode 000: the farm user cannot read it (root could).
    std::fs::write(ctx.join("unreadable"), "root only").unwrap();
    std::fs::set_permissions(
        ctx.join("unreadable"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let watched: Vec<PathBuf> = [
        "fifo",
        "dir/fifo",
        "sock",
        "null",
        "abs-link",
        "up-link",
        "up-dir",
        "root-dir",
        "unreadable",
        "ok.txt",
    ]
    .iter()
    .map(|p| ctx.join(p))
    .chain([secret.clone()])
    .collect();
    let host_before = describe(&watched);
    let refs_before = env.refs();

    // 1. The whole context, the unreadable file ignored: FIFOs are copied as
    //    FIFOs (never opened), the socket and the device are skipped, links
    //    are copied as links with their targets verbatim, and the secret
    //    stays out of the image.
    std::fs::write(ctx.join(".dockerignore"), "unreadable\n").unwrap();
    let out = build(
        &env,
        &ctx,
        &"FROM busybox\n\
         COPY . /ctx/\n\
         COPY fifo /named-fifo\n\
         RUN set -ex; test -p /ctx/fifo; test -p /ctx/dir/fifo; test -p /named-fifo; \
             test ! -e /ctx/sock; test ! -e /ctx/null; test ! -e /ctx/unreadable; \
             test -L /ctx/abs-link; test \"$(readlink /ctx/abs-link)\" = \"LINK\"; \
             test \"$(readlink /ctx/up-link)\" = ../secret-outside.txt; \
             test \"$(readlink /ctx/up-dir)\" = ..; test \"$(readlink /ctx/root-dir)\" = /; \
             test \"$(cat /ctx/ok.txt)\" = fine; test ! -e /ctx/abs-link; \
             ! grep -rs TOP-[S]ECRET /ctx/ok.txt /ctx/dir/inner.txt\n"
            .replace("LINK", secret.to_str().unwrap()),
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "copying the hostile context:\n{err}");
    assert!(!err.contains("TOP-SECRET"), "{err}");
    std::fs::remove_file(ctx.join(".dockerignore")).unwrap();
    let refs_after_good = env.refs();
    assert_eq!(
        refs_after_good.len(),
        refs_before.len() + 1,
        "the good build is tagged"
    );

    // 2. Builds Docker refuses too: each fails with a clear message naming
    //    the path, never hangs, and leaves the refs as they were.
    let cases: [(&str, &str, &[&str]); 7] = [
        (
            "unreadable file",
            "COPY unreadable /x\n",
            &["unreadable", "ermission denied"],
        ),
        (
            "whole context with an unreadable file",
            "COPY . /ctx/\n",
            &["unreadable", "ermission denied"],
        ),
        (
            "absolute link out",
            "COPY abs-link /x\n",
            &["outside the build context", "abs-link"],
        ),
        (
            "relative link out",
            "COPY up-link /x\n",
            &["outside the build context", "up-link"],
        ),
        (
            "through a link to ..",
            "COPY up-dir/ /x/\n",
            &["outside the build context", "up-dir"],
        ),
        (
            "through a link to ..",
            "COPY up-dir/secret-outside.txt /x\n",
            &["outside the build context", "up-dir"],
        ),
        (
            "device named",
            "COPY null /x\n",
            &["null", "socket or device"],
        ),
    ];
    for (what, copy, needles) in cases {
        let out = build(&env, &ctx, &format!("FROM busybox\n{copy}RUN true\n"));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: exit code\n{err}");
        for n in needles {
            assert!(err.contains(n), "{what}: missing {n:?} in:\n{err}");
        }
        assert!(!err.contains("TOP-SECRET"), "{what}: {err}");
        assert_eq!(env.refs(), refs_after_good, "{what}: the refs changed");
    }
    // `COPY root-dir/ .` resolves `/` inside the context: the context itself.
    let out = build(
        &env,
        &ctx,
        "FROM busybox\nCOPY root-dir/ok.txt /x\nRUN test \"$(cat /x)\" = fine\n",
    );
    let err = text(&out.stderr);
    if out.status.success() {
        eprintln!("root-dir/ok.txt resolved inside the context");
    } else {
        assert!(err.contains("outside the build context"), "root-dir: {err}");
    }
    assert!(!err.contains("TOP-SECRET"), "{err}");

    drop(sock);
    assert_eq!(
        describe(&watched),
        host_before,
        "the context or the host changed"
    );
}
