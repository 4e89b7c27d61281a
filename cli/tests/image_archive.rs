//! save, load, inspect, tag, rm, du and prune on the local store, with
//! skopeo as the independent writer and reader of archives.

mod image_support;

use image_support::*;
use imgfarm_testkit::or_skip;
use imgfarm_testkit::BaseImages;
use std::path::Path;

/// A store holding the base index as `busybox:latest`, loaded from an OCI
/// archive skopeo made.
fn seeded(base: &BaseImages, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (state, cfg) = (dir.join("state"), dir.join("docker"));
    let ar = dir.join("seed-oci.tar");
    skopeo(&[
        "--insecure-policy".into(),
        "copy".into(),
        "-q".into(),
        "--all".into(),
        format!("oci:{}:latest", base.layout_dir().display()),
        format!("oci-archive:{}:busybox:latest", ar.display()),
    ]);
    let mut c = imgfarm(&state, &cfg);
    c.args(["load", "-i"]).arg(&ar);
    let out = ok(c, "load oci-archive");
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    let mut c = imgfarm(&state, &cfg);
    c.arg("images");
    let table = ok(c, "images");
    assert!(table.contains("\nbusybox:latest\t"), "{table}");
    (state, cfg)
}

#[test]
fn load_skopeo_archives_oci_and_docker() {
    let t = "load_skopeo_archives_oci_and_docker";
    let Some(base) = or_skip(t, BaseImages::build()) else {
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let (state, cfg) = seeded(&base, d.path());
    assert_eq!(
        images(&state, &cfg),
        vec![(
            "docker.io/library/busybox:latest".to_string(),
            base.index_digest().to_string()
        )]
    );
    // A docker-archive made by skopeo, read from stdin.
    let ar = d.path().join("arm.tar");
    skopeo(&[
        "--insecure-policy".into(),
        "copy".into(),
        "-q".into(),
        format!("oci:{}:arm64", base.layout_dir().display()),
        format!("docker-archive:{}:example/arm:v1", ar.display()),
    ]);
    let mut c = imgfarm(&state, &cfg);
    c.arg("load").pipe_stdin(&ar).expect("stdin");
    assert!(ok(c, "load docker-archive").contains("Loaded image: example/arm:v1"));
    let mut c = imgfarm(&state, &cfg);
    c.args(["inspect", "example/arm:v1"]);
    let v: serde_json::Value = serde_json::from_str(&ok(c, "inspect")).expect("json");
    assert_eq!(v["Images"][0]["Config"]["architecture"], "arm64");
    assert_eq!(
        v["Images"][0]["Config"]["rootfs"]["diff_ids"][0],
        base.diff_id("arm64")
    );
}

#[test]
fn save_docker_and_oci_read_by_skopeo() {
    let t = "save_docker_and_oci_read_by_skopeo";
    let Some(base) = or_skip(t, BaseImages::build()) else {
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let (state, cfg) = seeded(&base, d.path());

    let docker = d.path().join("bb-docker.tar");
    let mut c = imgfarm(&state, &cfg);
    c.args(["save", "busybox", "--platform", "linux/arm64", "-o"])
        .arg(&docker);
    ok(c, "save docker");
    let v: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect".into(),
        format!("docker-archive:{}", docker.display()),
    ]))
    .expect("json");
    assert_eq!(v["Architecture"], "arm64");
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1), "{v}");
    let m = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&docker)
        .arg("manifest.json")
        .output()
        .expect("tar");
    let m: serde_json::Value = serde_json::from_slice(&m.stdout).expect("manifest.json");
    assert_eq!(m[0]["RepoTags"], serde_json::json!(["busybox:latest"]));

    let oci = d.path().join("bb-oci.tar");
    let mut c = imgfarm(&state, &cfg);
    c.args(["save", "busybox:latest", "--format", "oci", "-o"])
        .arg(&oci);
    ok(c, "save oci");
    let raw = skopeo(&[
        "inspect".into(),
        "--raw".into(),
        format!(
            "oci-archive:{}:docker.io/library/busybox:latest",
            oci.display()
        ),
    ]);
    let idx: serde_json::Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(idx["manifests"].as_array().map(Vec::len), Some(2), "{raw}");

    // Round trip through our own load into a fresh store.
    let state2 = d.path().join("state2");
    let mut c = imgfarm(&state2, &cfg);
    c.args(["load", "-i"]).arg(&docker);
    ok(c, "load our docker-archive");
    assert_eq!(
        images(&state2, &cfg)[0].0,
        "docker.io/library/busybox:latest"
    );
}

#[test]
fn corrupt_archive_fails_and_leaves_the_store_unchanged() {
    let t = "corrupt_archive_fails_and_leaves_the_store_unchanged";
    let Some(base) = or_skip(t, BaseImages::build()) else {
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let (state, cfg) = seeded(&base, d.path());
    let before = (images(&state, &cfg), du(&state, &cfg));
    // A docker-archive of arm64 with one byte of the layer flipped.
    let ar = d.path().join("arm.tar");
    skopeo(&[
        "--insecure-policy".into(),
        "copy".into(),
        "-q".into(),
        format!("oci:{}:arm64", base.layout_dir().display()),
        format!("docker-archive:{}:evil/x:1", ar.display()),
    ]);
    let mut bytes = std::fs::read(&ar).expect("read");
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&ar, &bytes).expect("write");
    let mut c = imgfarm(&state, &cfg);
    c.args(["load", "-i"]).arg(&ar);
    fails_with(c, "nothing was loaded");
    // Not an archive at all.
    let junk = d.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar file at all").expect("write");
    let mut c = imgfarm(&state, &cfg);
    c.args(["load", "-i"]).arg(&junk);
    fails_with(c, "nothing was loaded");
    assert_eq!((images(&state, &cfg), du(&state, &cfg)), before);
}

#[test]
fn tag_rm_inspect_and_their_errors() {
    let t = "tag_rm_inspect_and_their_errors";
    let Some(base) = or_skip(t, BaseImages::build()) else {
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let (state, cfg) = seeded(&base, d.path());
    // docker-style names: busybox ≡ busybox:latest ≡ docker.io/library/busybox:latest.
    let mut c = imgfarm(&state, &cfg);
    c.args(["tag", "docker.io/library/busybox:latest", "mine/bb:1"]);
    ok(c, "tag");
    let mut c = imgfarm(&state, &cfg);
    c.args(["inspect", "busybox"]);
    let v: serde_json::Value = serde_json::from_str(&ok(c, "inspect")).expect("json");
    assert_eq!(v["Digest"], base.index_digest());
    assert_eq!(
        v["RepoTags"],
        serde_json::json!(["busybox:latest", "mine/bb:1"])
    );
    assert_eq!(v["Images"].as_array().map(Vec::len), Some(2));

    let mut c = imgfarm(&state, &cfg);
    c.args(["inspect", "nosuch:tag"]);
    fails_with(c, "no such image: nosuch:tag");
    let mut c = imgfarm(&state, &cfg);
    c.args(["tag", "busybox", "Bad Ref"]);
    fails_with(c, "invalid reference \"Bad Ref\"");
    let mut c = imgfarm(&state, &cfg);
    c.args(["tag", "missing", "x:1"]);
    fails_with(c, "no such image: missing");
    let out_file = d.path().join("never.tar");
    let mut c = imgfarm(&state, &cfg);
    c.args(["save", "busybox", "nosuch", "-o"]).arg(&out_file);
    fails_with(c, "no such image: nosuch");
    assert!(!out_file.exists(), "a failed save leaves no file");
    let mut c = imgfarm(&state, &cfg);
    c.args(["push", "nosuch:1"]);
    fails_with(c, "no such image: nosuch:1");
    // rm checks every name first: one unknown name removes nothing.
    let mut c = imgfarm(&state, &cfg);
    c.args(["rm", "mine/bb:1", "nosuch"]);
    fails_with(c, "no such image: nosuch");
    assert_eq!(images(&state, &cfg).len(), 2);
    let mut c = imgfarm(&state, &cfg);
    c.args(["rmi", "mine/bb:1"]);
    assert!(ok(c, "rm").contains("Untagged: mine/bb:1"));
    assert_eq!(images(&state, &cfg).len(), 1);
}

#[test]
fn rm_keeps_blobs_until_prune() {
    let t = "rm_keeps_blobs_until_prune";
    let Some(base) = or_skip(t, BaseImages::build()) else {
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let (state, cfg) = seeded(&base, d.path());
    // index + 2 manifests + 2 configs + 2 layers.
    let (blobs, bytes) = du(&state, &cfg);
    assert_eq!(blobs, 7);
    let mut c = imgfarm(&state, &cfg);
    c.args(["du", "-v"]);
    let table = ok(c, "du -v");
    assert!(table.contains(base.layer_digest("amd64")), "{table}");
    let mut c = imgfarm(&state, &cfg);
    c.args(["prune"]);
    ok(c, "prune with the image named");
    assert_eq!(du(&state, &cfg), (blobs, bytes));
    let mut c = imgfarm(&state, &cfg);
    c.args(["rm", "busybox"]);
    ok(c, "rm");
    assert_eq!(du(&state, &cfg), (blobs, bytes), "rm only drops the name");
    // A build-cache entry (the solver's VertexResult JSON) naming the amd64
    // layer keeps it through a plain prune; --all drops the cache and it.
    let vertices = state.join("cache").join("vertices");
    std::fs::create_dir_all(&vertices).expect("cache dir");
    let entry = serde_json::json!({
        "chain": [{"digest": base.layer_digest("amd64"), "diff_id": base.diff_id("amd64"),
                   "size": 1, "media_type": "application/vnd.oci.image.layer.v1.tar+gzip"}],
        "delta": [], "base_config": null, "manifest": null
    });
    std::fs::write(vertices.join("k.json"), entry.to_string()).expect("entry");
    let mut c = imgfarm(&state, &cfg);
    c.args(["prune"]);
    assert!(ok(c, "prune").contains("Deleted 6 blobs"));
    let mut c = imgfarm(&state, &cfg);
    c.args(["du", "-v"]);
    assert!(ok(c, "du -v").contains(base.layer_digest("amd64")));
    let mut c = imgfarm(&state, &cfg);
    c.args(["prune", "--all"]);
    let out = ok(c, "prune --all");
    assert!(out.contains("Deleted 1 blobs"), "{out}");
    assert!(!state.join("cache").exists());
    assert_eq!(du(&state, &cfg), (0, 0));
}

/// A farm coordinator's state is not a local state: its results name blobs
/// no image ref reaches, and `prune` once deleted them, leaving the
/// coordinator reporting cached steps whose blobs were gone (issue 15).
#[test]
fn prune_refuses_a_coordinators_state_and_deletes_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let state = d.path().join("coord");
    let store = imgfarm_common::oci::store::ContentStore::open(&state).expect("store");
    let blob = store
        .put_bytes(b"a layer only a cached result names")
        .expect("put");
    std::fs::write(state.join("coordinator.db"), b"").expect("db");
    let mut c = imgfarm(&state, d.path());
    c.args(["prune"]);
    let err = fails_with(c, "is a farm coordinator's state");
    assert!(err.contains("coordinator.db"), "{err}");
    assert!(
        store.contains(&blob),
        "prune deleted a blob it refused to touch"
    );
}
