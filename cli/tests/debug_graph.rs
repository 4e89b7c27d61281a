//! `imgfarm debug graph`: the build graph of a real context as JSON.

use assert_cmd::Command;

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM --platform=$BUILDPLATFORM alpine:3.20 AS build\nCOPY src/ /src/\nRUN make -C /src\nFROM alpine:3.20\nARG FLAVOUR=plain\nCOPY --from=build /src/out /out\nLABEL flavour=$FLAVOUR\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/Makefile"), "all:\n").unwrap();
    std::fs::write(dir.path().join("src/secret.key"), "k").unwrap();
    std::fs::write(dir.path().join(".dockerignore"), "src/*.key\n").unwrap();
    dir
}

fn graph(args: &[&str]) -> serde_json::Value {
    let out = Command::cargo_bin("imgfarm")
        .unwrap()
        .args(["debug", "graph"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn prints_vertices_with_keys_platforms_kinds_and_inputs() {
    let ctx = context();
    let dir = ctx.path().to_str().unwrap();
    let g = graph(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "--build-arg",
        "FLAVOUR=x",
        "--label",
        "a=b",
        dir,
    ]);
    let vertices = g["vertices"].as_array().unwrap();
    // build stage shared (alpine, context, COPY, RUN), per platform: alpine,
    // COPY, export; the alpine of the build platform is that same vertex.
    let host = imgfarm_common::platform::Platform::host().to_string();
    let shared_alpine = usize::from(host == "linux/amd64" || host == "linux/arm64");
    assert_eq!(vertices.len(), 4 + 3 * 2 - shared_alpine, "{g:#}");
    for v in vertices {
        assert!(v["key"].as_str().unwrap().starts_with("sha256:"));
        assert!(v["kind"].is_string() && v["description"].is_string() && v["inputs"].is_array());
    }
    let kinds: Vec<&str> = vertices
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "export").count(), 2);
    assert_eq!(g["targets"][1]["platform"], "linux/arm64");
    assert_eq!(g["targets"][0]["config"]["Labels"]["flavour"], "x");
    assert_eq!(g["targets"][0]["config"]["Labels"]["a"], "b");

    // The ignored file is not part of the selection: changing it changes nothing;
    // changing a selected file changes the keys.
    std::fs::write(ctx.path().join("src/secret.key"), "other").unwrap();
    assert_eq!(
        graph(&[
            "--platform",
            "linux/amd64,linux/arm64",
            "--build-arg",
            "FLAVOUR=x",
            "--label",
            "a=b",
            dir
        ]),
        g
    );
    std::fs::write(ctx.path().join("src/Makefile"), "all: x\n").unwrap();
    assert_ne!(
        graph(&[
            "--platform",
            "linux/amd64,linux/arm64",
            "--build-arg",
            "FLAVOUR=x",
            "--label",
            "a=b",
            dir
        ]),
        g
    );
}

#[test]
fn errors_name_the_file_and_line() {
    let ctx = context();
    std::fs::write(
        ctx.path().join("Dockerfile.bad"),
        "FROM alpine\nRUN --mount=type=cache,target=/c,sharing=nope make\n",
    )
    .unwrap();
    let f = ctx.path().join("Dockerfile.bad");
    let out = Command::cargo_bin("imgfarm")
        .unwrap()
        .args([
            "debug",
            "graph",
            "-f",
            f.to_str().unwrap(),
            ctx.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile.bad:2:") && err.contains("sharing"),
        "{err}"
    );
    let out = Command::cargo_bin("imgfarm")
        .unwrap()
        .args([
            "debug",
            "graph",
            "--target",
            "nope",
            ctx.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("target stage \"nope\""));
}
