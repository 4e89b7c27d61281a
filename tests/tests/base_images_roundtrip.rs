//! End to end through a real registry: the base images go up to a TLS + auth registry and come
//! back intact (every blob and manifest digest equal), read by skopeo as an independent client.

use imgfarm_testkit::{
    init_tracing, or_skip, require_tools_or_skip, run_checked, BaseImages, Registry,
    RegistryOptions, ARCHES,
};
use std::path::Path;
use std::process::Command;

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("read json")).expect("parse json")
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob present")
}

#[test]
fn base_index_survives_push_and_pull_through_tls_auth_registry() {
    init_tracing();
    let name = "base_index_survives_push_and_pull_through_tls_auth_registry";
    if !require_tools_or_skip(name, &["skopeo"]) {
        return;
    }
    let Some(base) = or_skip(name, BaseImages::build()) else {
        return;
    };
    let Some(reg) = or_skip(
        name,
        Registry::start_with(RegistryOptions::tls_auth("e2e", "pa55word")),
    ) else {
        return;
    };
    base.push_to(&reg, "library/busybox", "1").expect("push");

    let back = tempfile::tempdir().expect("tempdir");
    let layout = back.path().join("oci");
    run_checked(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q", "--all"])
            .args(reg.skopeo_src_flags())
            .arg(format!("docker://{}/library/busybox:1", reg.addr()))
            .arg(format!("oci:{}:back", layout.display())),
    )
    .expect("pull back");

    let index = read_json(&layout.join("index.json"));
    let top = &index["manifests"][0];
    assert_eq!(top["digest"], base.index_digest(), "{index}");
    let pulled_index = blob(&layout, base.index_digest());
    let original_index = blob(base.layout_dir(), base.index_digest());
    assert_eq!(pulled_index, original_index);
    for arch in ARCHES {
        for d in [
            base.manifest_digest(arch),
            base.config_digest(arch),
            base.layer_digest(arch),
        ] {
            assert_eq!(
                blob(&layout, d),
                blob(base.layout_dir(), d),
                "{arch} blob {d} differs after the round trip"
            );
        }
    }
}

#[test]
fn a_tampered_blob_in_registry_storage_is_caught_by_the_reader() {
    init_tracing();
    let name = "a_tampered_blob_in_registry_storage_is_caught_by_the_reader";
    if !require_tools_or_skip(name, &["skopeo"]) {
        return;
    }
    let Some(base) = or_skip(name, BaseImages::build()) else {
        return;
    };
    let Some(reg) = or_skip(name, Registry::start()) else {
        return;
    };
    base.push_ref_to(&reg, "amd64", "t/busybox", "amd64")
        .expect("push amd64");
    // Flip a byte of the layer in the registry's storage.
    let p = reg.blob_path(base.layer_digest("amd64"));
    let mut data = std::fs::read(&p).expect("layer in storage");
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&p, &data).expect("tamper");

    let back = tempfile::tempdir().expect("tempdir");
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q"])
        .args(reg.skopeo_src_flags())
        .arg(format!("docker://{}/t/busybox:amd64", reg.addr()))
        .arg(format!("oci:{}:x", back.path().join("oci").display()))
        .output()
        .expect("skopeo runs");
    assert!(!out.status.success(), "skopeo accepted a tampered blob");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("digest"), "{err}");
}
