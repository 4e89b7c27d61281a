//! Dockerfile features through the whole local build, checked on the
//! result: heredocs (COPY and a RUN script), .dockerignore, a whiteout of a
//! base file, WORKDIR/USER/ENV/EXPOSE/ENTRYPOINT in the config, and
//! `--chown` owners in the layer.

mod build_support;

use build_support::{ok, Env};

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("read json")).expect("json")
}

#[test]
fn heredocs_ignore_whiteouts_and_config_fields() {
    let Some(env) = Env::new("heredocs_ignore_whiteouts_and_config_fields") else {
        return;
    };
    let dockerfile = r#"FROM busybox
COPY <<EOT /greeting
hello heredoc
EOT
RUN <<EOT
#!/bin/sh
echo from-script > /script-out
EOT
RUN rm /bin/vi && echo app:x:1234:1234::/home/app:/bin/sh >> /etc/passwd && echo app:x:1234: >> /etc/group
COPY --chown=app . /ctx/
WORKDIR /srv/data
USER app
ENV A=1 B="two words"
EXPOSE 8080/tcp
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /greeting"]
"#;
    let ctx = env.context(
        "features",
        &[
            ("Dockerfile", dockerfile),
            (".dockerignore", "ignored.txt\n"),
            ("kept.txt", "kept"),
            ("ignored.txt", "nope"),
        ],
    );
    let local = env.work.path().join("local");
    let layout = env.work.path().join("layout");
    let tarball = env.work.path().join("fs.tar");
    ok(&env.run(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=local,dest={}", local.display()),
        "-o",
        &format!("type=oci,dest={},tar=false", layout.display()),
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]));
    let read = |p: &str| std::fs::read_to_string(local.join(p)).unwrap_or_default();
    assert_eq!(read("greeting"), "hello heredoc\n");
    assert_eq!(read("script-out"), "from-script\n");
    assert_eq!(read("ctx/kept.txt"), "kept");
    assert!(!local.join("ctx/ignored.txt").exists(), ".dockerignore");
    assert!(local.join("bin/sh").symlink_metadata().is_ok());
    assert!(local.join("bin/vi").symlink_metadata().is_err(), "whiteout");
    assert!(local.join("srv/data").is_dir(), "WORKDIR creates the dir");

    // Owners in the exported filesystem tar: --chown=app is 1234:1234.
    let listing = tar_verbose(&tarball);
    let kept = listing
        .lines()
        .find(|l| l.ends_with("ctx/kept.txt"))
        .unwrap_or_else(|| panic!("ctx/kept.txt in the tar:\n{listing}"));
    assert!(kept.contains("1234/1234"), "{kept}");

    let index = read_json(&layout.join("index.json"));
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let m = read_json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let cfg = read_json(&blob(m["config"]["digest"].as_str().unwrap()));
    let c = &cfg["config"];
    assert_eq!(c["User"], "app");
    assert_eq!(c["WorkingDir"], "/srv/data");
    let envs: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        envs.contains(&"A=1") && envs.contains(&"B=two words"),
        "{envs:?}"
    );
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["cat /greeting"]));
    // One layer per COPY/RUN/WORKDIR on top of the base; config-only steps add none.
    let layers = m["layers"].as_array().unwrap().len();
    assert_eq!(layers, 1 + 5, "base + COPY, RUN, RUN, COPY, WORKDIR");
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), layers);
    let empty = cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] == true)
        .count();
    assert!(
        empty >= 5,
        "USER, ENV, EXPOSE, ENTRYPOINT, CMD are empty layers"
    );
}

/// `tar --numeric-owner -tvf` of a tarball.
fn tar_verbose(p: &std::path::Path) -> String {
    let out = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(p)
        .output()
        .expect("tar");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}
