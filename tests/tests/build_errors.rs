//! Bad input to `imgfarm build`: each gives a clear message, exit code 1,
//! and leaves the local image store's refs unchanged.

mod build_support;

use build_support::{text, Env};

/// Build `dockerfile` (plus `files`) tagged `bad/image`; return stderr after
/// checking the exit code and that no ref changed.
fn fails(
    env: &Env,
    name: &str,
    dockerfile: &str,
    files: &[(&str, &str)],
    extra: &[&str],
) -> String {
    let mut all = vec![("Dockerfile", dockerfile)];
    all.extend_from_slice(files);
    let ctx = env.context(name, &all);
    let before = env.refs();
    let mut args = vec!["build", "--progress", "plain", "-t", "bad/image"];
    args.extend_from_slice(extra);
    let ctx_s = ctx.to_str().unwrap().to_string();
    args.push(&ctx_s);
    let out = env.run(&args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: exit code\n{err}");
    assert_eq!(env.refs(), before, "{name}: the store's refs changed");
    err
}

#[test]
fn bad_inputs_fail_clearly_and_leave_the_store_unchanged() {
    let Some(env) = Env::new("bad_inputs_fail_clearly_and_leave_the_store_unchanged") else {
        return;
    };

    let err = fails(
        &env,
        "missing-base",
        "FROM 127.0.0.1:1/none/such:1\nRUN true\n",
        &[],
        &[],
    );
    assert!(
        err.contains("127.0.0.1:1/none/such:1") && err.contains("not found"),
        "missing base image: {err}"
    );

    let err = fails(
        &env,
        "failing-run",
        "FROM busybox\nRUN echo first-line && echo to-stderr >&2 && exit 3\n",
        &[],
        &[],
    );
    assert!(err.contains("exit code: 3"), "failing RUN: {err}");
    assert!(
        err.contains("[2/2] RUN echo first-line"),
        "names the step: {err}"
    );
    assert!(err.contains("to-stderr"), "shows the output tail: {err}");

    let outside = env.work.path().join("secret-outside.txt");
    std::fs::write(&outside, "x").unwrap();
    let ctx = env.context("outside", &[("Dockerfile", "FROM busybox\nCOPY link /x\n")]);
    std::os::unix::fs::symlink(&outside, ctx.join("link")).unwrap();
    env.chown_work();
    let before = env.refs();
    let out = env.run(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "bad/image",
        ctx.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(env.refs(), before);
    assert!(
        err.contains("outside the build context"),
        "symlink out: {err}"
    );

    let err = fails(
        &env,
        "dotdot",
        "FROM busybox\nCOPY ../secret-outside.txt /x\n",
        &[],
        &[],
    );
    assert!(
        err.contains("outside the build context") || err.contains("../secret-outside.txt"),
        "`..` source: {err}"
    );
    assert!(
        !err.contains("DONE 0") || err.contains("ERROR") || err.contains("error"),
        "{err}"
    );

    let err = fails(
        &env,
        "missing-secret",
        "FROM busybox\nRUN --mount=type=secret,id=token,required=true cat /run/secrets/token\n",
        &[],
        &[],
    );
    assert!(
        err.contains("secret token not found") && err.contains("--secret id=token"),
        "missing secret: {err}"
    );

    let err = fails(
        &env,
        "missing-secret-file",
        "FROM busybox\nRUN true\n",
        &[],
        &["--secret", "id=token,src=/nonexistent/token"],
    );
    assert!(
        err.contains("/nonexistent/token"),
        "missing secret file: {err}"
    );
}

/// `--step-timeout` and `--timeout` (issue 15, finding 8): a step that never
/// ends is cancelled (its processes killed) and the build fails soon after
/// the limit, naming it.
#[test]
fn time_limits_stop_a_step_that_never_ends() {
    let Some(env) = Env::new("time_limits_stop_a_step_that_never_ends") else {
        return;
    };
    let t0 = std::time::Instant::now();
    let err = fails(
        &env,
        "step-timeout",
        "FROM busybox\nRUN sleep 600\n",
        &[],
        &["--step-timeout", "2s"],
    );
    assert!(
        err.contains("time limit of 2 s (--step-timeout)"),
        "names the limit: {err}"
    );
    assert!(err.contains("RUN sleep 600"), "names the step: {err}");
    let t1 = std::time::Instant::now();
    let err = fails(
        &env,
        "build-timeout",
        "FROM busybox\nRUN sleep 600\n",
        &[],
        &["--timeout", "2s"],
    );
    assert!(err.contains("time limit of 2 s (--timeout)"), "{err}");
    assert!(
        t0.elapsed().as_secs() < 60,
        "the limits ended both builds promptly"
    );
    assert!(t1.elapsed().as_secs() < 30);
    // A bad duration is a usage error (clap's exit code 2), named.
    let out = env.run(&["build", "--timeout", "5d", "."]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid duration \"5d\""), "{err}");
}
