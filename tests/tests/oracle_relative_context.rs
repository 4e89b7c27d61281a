//! Found by the oracle: `imgfarm build` with a relative context path failed on
//! `RUN --mount=type=bind` from the context ("mount source ... must be an absolute UTF-8 host
//! path"); `docker build` accepts any context path. The CLI now canonicalises it up front.

mod build_support;

use build_support::{ok, text, Env};

#[test]
fn bind_mount_from_a_relative_context_path() {
    let Some(env) = Env::new("bind_mount_from_a_relative_context_path") else {
        return;
    };
    env.context(
        "relctx",
        &[
            (
                "Dockerfile",
                "FROM busybox\nRUN --mount=type=bind,source=data,target=/mnt/d cat /mnt/d/a > /a\n",
            ),
            ("data/a", "a\n"),
        ],
    );
    let out = env
        .user
        .command(&env.bin)
        .current_dir(env.work.path())
        .arg("--state")
        .arg(env.state.path())
        .args(["build", "--progress", "plain", "--platform", "linux/amd64"])
        .args(["-t", "rel/ctx", "relctx"])
        .env_remove("IMGFARM_STATE")
        .output()
        .expect("imgfarm runs");
    ok(&out);
}

#[test]
fn a_missing_context_directory_is_named_in_the_error() {
    let Some(env) = Env::new("a_missing_context_directory_is_named_in_the_error") else {
        return;
    };
    let out = env
        .user
        .command(&env.bin)
        .current_dir(env.work.path())
        .arg("--state")
        .arg(env.state.path())
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "no/ctx",
            "no-such-ctx",
        ])
        .env_remove("IMGFARM_STATE")
        .output()
        .expect("imgfarm runs");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("build context no-such-ctx") && err.contains("does it exist"),
        "{err}"
    );
}
