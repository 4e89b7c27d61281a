//! Our OCI layout (dir and tar) and docker-archive outputs, read by
//! independent tools: skopeo and umoci.

mod oci_layout_support;

use imgfarm_common::oci::docker_archive::export_docker_archive;
use imgfarm_common::oci::layout::{export_dir, export_tar, TarOptions};
use imgfarm_testkit::require_tools_or_skip;
use oci_layout_support::{run, sample_image, skopeo, TestStore};
use std::fs;
use std::process::Command;

#[test]
fn skopeo_reads_layout_dir_and_archive() {
    if !require_tools_or_skip("skopeo_reads_layout_dir_and_archive", &["skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = TestStore::new(&tmp.path().join("store"));
    let refs = sample_image(&store);
    let dir = tmp.path().join("layout");
    export_dir(&*store, &refs, &dir).unwrap();

    let amd = skopeo(&["inspect", &format!("oci:{}:amd64", dir.display())]);
    assert_eq!(amd["Architecture"], "amd64");
    assert_eq!(amd["Os"], "linux");
    assert_eq!(amd["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(amd["Digest"], refs[1].descriptor.digest().to_string());

    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:latest", dir.display())]);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let arches: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);

    let arm = skopeo(&[
        "--override-arch",
        "arm64",
        "inspect",
        &format!("oci:{}:latest", dir.display()),
    ]);
    assert_eq!(arm["Architecture"], "arm64");
    // skopeo reports the digest of what the reference names: the index.
    assert_eq!(arm["Digest"], refs[0].descriptor.digest().to_string());

    let file = tmp.path().join("image.tar");
    let tar = export_tar(&*store, &refs, Vec::new(), TarOptions::default()).unwrap();
    fs::write(&file, &tar).unwrap();
    let from_archive = skopeo(&["inspect", &format!("oci-archive:{}:amd64", file.display())]);
    assert_eq!(from_archive["Digest"], amd["Digest"]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:latest", file.display()),
    ]);
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
}

#[test]
fn umoci_unpacks_our_layout() {
    if !require_tools_or_skip("umoci_unpacks_our_layout", &["umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = TestStore::new(&tmp.path().join("store"));
    let refs = sample_image(&store);
    let dir = tmp.path().join("layout");
    export_dir(&*store, &refs, &dir).unwrap();
    for arch in ["amd64", "arm64"] {
        let bundle = tmp.path().join(format!("bundle-{arch}"));
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{arch}", dir.display()))
            .arg(&bundle));
        let text = fs::read_to_string(bundle.join("rootfs/hello.txt")).unwrap();
        assert_eq!(text, format!("hello from linux/{arch}\n"));
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["process"]["args"][0], "/bin/sh");
    }
}

#[test]
fn skopeo_reads_our_docker_archive() {
    if !require_tools_or_skip("skopeo_reads_our_docker_archive", &["skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = TestStore::new(&tmp.path().join("store"));
    let refs = sample_image(&store);
    let file = tmp.path().join("docker.tar");
    let tar = export_docker_archive(
        &*store,
        &refs[2].descriptor,
        &["example.com/app:1.0".to_string()],
        Vec::new(),
        TarOptions::default(),
    )
    .unwrap();
    fs::write(&file, &tar).unwrap();
    let info = skopeo(&["inspect", &format!("docker-archive:{}", file.display())]);
    assert_eq!(info["Architecture"], "arm64");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        info["RepoTags"].as_array().map(|a| a.len()).unwrap_or(0),
        0,
        "skopeo reports tags of registries only; the archive is read"
    );
    // Also readable as an OCI archive (Docker 25 layout), and the layer is
    // the uncompressed tar named by its diff ID.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:1.0", file.display()),
    ]);
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    // skopeo can copy it back out to a layout, through its own reader.
    let out = tmp.path().join("copied");
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "-q",
        &format!("docker-archive:{}", file.display()),
        &format!("oci:{}:x", out.display()),
    ]));
    assert!(out.join("index.json").is_file());
}
