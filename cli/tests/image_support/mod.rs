//! Shared helpers of the image command tests: the CLI with `--state`, and
//! the testkit fixtures.

#![allow(dead_code)]

use assert_cmd::Command;
use std::path::Path;
use std::time::Duration;

/// `imgfarm --state STATE` with a private docker config dir.
pub fn imgfarm(state: &Path, docker_config: &Path) -> Command {
    let mut c = Command::cargo_bin("imgfarm").expect("the imgfarm binary is built");
    c.arg("--state")
        .arg(state)
        .env_remove("IMGFARM_STATE")
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("REGISTRY_AUTH_FILE")
        .env("XDG_RUNTIME_DIR", docker_config)
        .timeout(Duration::from_secs(120));
    c
}

/// Run and return (exit code, stdout, stderr).
pub fn run(mut c: Command) -> (i32, String, String) {
    let out = c.output().expect("imgfarm runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run, require exit 0, return stdout.
pub fn ok(c: Command, what: &str) -> String {
    let (code, out, err) = run(c);
    assert_eq!(
        code, 0,
        "{what}: exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// Run, require exit 1 with `needle` in stderr.
pub fn fails_with(c: Command, needle: &str) -> String {
    let (code, out, err) = run(c);
    assert_eq!(code, 1, "expected exit 1\nstdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    err
}

/// `skopeo` with args; returns stdout, panics with stderr on failure.
pub fn skopeo(args: &[String]) -> String {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `images --format json` rows as (name, digest).
pub fn images(state: &Path, cfg: &Path) -> Vec<(String, String)> {
    let mut c = imgfarm(state, cfg);
    c.args(["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(c, "images")).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `du --format json` → (blobs, bytes).
pub fn du(state: &Path, cfg: &Path) -> (u64, u64) {
    let mut c = imgfarm(state, cfg);
    c.args(["du", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(c, "du")).expect("json");
    (
        v["blobs"].as_u64().unwrap_or(0),
        v["totalBytes"].as_u64().unwrap_or(0),
    )
}
