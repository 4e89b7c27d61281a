//! `imgfarm build` of examples/hello as the unprivileged farm user: amd64
//! natively, arm64 under qemu, the OCI index in the local store, a fully
//! cached rebuild, and the output types.

mod build_support;

use build_support::{ok, text, Env};

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("read json")).expect("json")
}

#[test]
fn hello_amd64_builds_rootless_into_the_local_store() {
    let Some(env) = Env::new("hello_amd64_builds_rootless_into_the_local_store") else {
        return;
    };
    let ctx = env.hello_context();
    let meta = env.work.path().join("meta.json");
    let out = env.work.path().join("rootfs");
    let err = ok(&env.run(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64",
        "-t",
        "example/hello",
        "--metadata-file",
        meta.to_str().unwrap(),
        "-o",
        "type=image",
        "-o",
        &format!("type=local,dest={}", out.display()),
        ctx.to_str().unwrap(),
    ]));
    assert!(
        err.contains("#1 [build 1/4] FROM docker.io/library/busybox:latest"),
        "{err}"
    );
    assert!(err.contains("RUN uname -m > /app/arch"), "{err}");
    assert!(
        !err.contains("emulated"),
        "amd64 runs natively here:\n{err}"
    );
    let refs = env.refs();
    let hello = refs
        .iter()
        .find(|(n, _)| n == "docker.io/example/hello:latest")
        .unwrap_or_else(|| panic!("tagged image in the store: {refs:?}"));
    let meta = read_json(&meta);
    assert_eq!(meta["containerimage.digest"], hello.1.as_str());
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("app/arch"))
            .unwrap()
            .trim(),
        "x86_64"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("app/hello.txt")).unwrap(),
        "Hello from imgfarm!\nbuilt for x86_64\n"
    );
}

#[test]
fn hello_amd64_arm64_gives_an_index_and_arm64_runs_under_qemu() {
    let name = "hello_amd64_arm64_gives_an_index_and_arm64_runs_under_qemu";
    let Some(env) = Env::new(name) else {
        return;
    };
    let ctx = env.hello_context();
    let layout = env.work.path().join("layout");
    let local = env.work.path().join("local");
    let err = ok(&env.run(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        "example/hello",
        "-o",
        "type=image",
        "-o",
        &format!("type=oci,dest={},tar=false", layout.display()),
        "-o",
        &format!("type=local,dest={}", local.display()),
        ctx.to_str().unwrap(),
    ]));
    assert!(
        err.contains("[linux/arm64 emulated] [stage-1 4/4] RUN uname -m > /app/arch"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(local.join("linux_arm64/app/arch"))
            .unwrap()
            .trim(),
        "aarch64"
    );
    assert_eq!(
        std::fs::read_to_string(local.join("linux_amd64/app/arch"))
            .unwrap()
            .trim(),
        "x86_64"
    );
    // The layout's root is an index with both platforms; the arm64 config says arm64.
    let index = read_json(&layout.join("index.json"));
    let root = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let top = read_json(&blob(&root));
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    let ms = top["manifests"].as_array().unwrap();
    let archs: Vec<&str> = ms
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    let arm = read_json(&blob(ms[1]["digest"].as_str().unwrap()));
    let cfg = read_json(&blob(arm["config"]["digest"].as_str().unwrap()));
    assert_eq!(cfg["architecture"], "arm64");
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/app/hello.sh"]));
    assert_eq!(
        cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
        arm["layers"].as_array().unwrap().len()
    );
    // The store names the same index.
    let refs = env.refs();
    assert!(
        refs.contains(&("docker.io/example/hello:latest".to_string(), root.clone())),
        "{refs:?}"
    );
    // skopeo, an independent reader, agrees when it is installed.
    if let Ok(o) = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}", layout.display()))
        .output()
    {
        if o.status.success() {
            let raw: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
        }
    }
}

#[test]
fn unchanged_rebuild_runs_nothing_and_no_cache_runs_everything() {
    let name = "unchanged_rebuild_runs_nothing_and_no_cache_runs_everything";
    let Some(env) = Env::new(name) else {
        return;
    };
    let ctx = env.hello_context();
    let args = [
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64",
        "-t",
        "example/hello",
        ctx.to_str().unwrap(),
    ];
    ok(&env.run(&args));
    let first = env.refs();
    let err = ok(&env.run(&args));
    assert!(err.contains("CACHED"), "{err}");
    assert_eq!(
        step_cached(&err, "RUN uname -m > /app/arch"),
        Some(true),
        "{err}"
    );
    let runs = err.lines().filter(|l| l.contains(" DONE ")).count();
    assert_eq!(runs, 1, "only the export line is DONE:\n{err}");
    assert_eq!(env.refs(), first, "same image");
    let mut no_cache = args.to_vec();
    no_cache.insert(1, "--no-cache");
    let err = ok(&env.run(&no_cache));
    assert!(!err.contains("CACHED"), "{err}");
    // A changed context file re-runs its COPY and what follows, not the rest.
    std::fs::write(ctx.join("hello.sh"), "#!/bin/sh\necho changed\n").unwrap();
    let err = ok(&env.run(&args));
    assert_eq!(step_cached(&err, "[build 4/4] RUN"), Some(true), "{err}");
    assert_eq!(
        step_cached(&err, "COPY --chmod=755 hello.sh"),
        Some(false),
        "{err}"
    );
    assert_eq!(
        step_cached(&err, "RUN uname -m > /app/arch"),
        Some(false),
        "{err}"
    );
    let _ = text;
}

/// Whether the step whose title contains `needle` was CACHED (`None`: not shown).
fn step_cached(progress: &str, needle: &str) -> Option<bool> {
    let title = progress
        .lines()
        .find(|l| l.starts_with('#') && l.contains(needle))?;
    let n = title.split_whitespace().next()?;
    Some(progress.lines().any(|l| l == format!("{n} CACHED")))
}
