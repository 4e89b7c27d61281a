//! Import the testkit's deterministic busybox layout (built by GNU tar, gzip
//! and jq, independent of our code) and re-export it: the blobs must come
//! out byte-identical, so the index digest is unchanged.

mod oci_layout_support;

use imgfarm_common::oci::docker_archive::export_docker_archive;
use imgfarm_common::oci::image::{select_manifests, Document, PlatformRequest};
use imgfarm_common::oci::layout::{
    export_dir, export_tar, import_dir, import_tar, resolve_manifest, BlobStore, ImportLimits,
    TarOptions,
};
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_testkit::{or_skip, require_tools_or_skip, BaseImages};
use oci_layout_support::{run, skopeo, tree_digests, TestStore};
use std::fs;
use std::process::Command;

#[test]
fn busybox_layout_round_trips_byte_identically() {
    let name = "busybox_layout_round_trips_byte_identically";
    let Some(base) = or_skip(name, BaseImages::build()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = TestStore::new(&tmp.path().join("store"));
    let refs = import_dir(&*store, base.layout_dir(), ImportLimits::default()).unwrap();
    let names: Vec<_> = refs.iter().map(|r| r.name.clone().unwrap()).collect();
    assert_eq!(names, ["amd64", "arm64", "latest"]);
    let latest = &refs[2].descriptor;
    assert_eq!(latest.digest().to_string(), base.index_digest());

    // Platform selection on the imported index picks the right manifest.
    let index_digest: Digest = base.index_digest().parse().unwrap();
    let bytes = store.read_blob(&index_digest, 1 << 20).unwrap();
    let Document::Index(index) = Document::parse(&bytes, None).unwrap() else {
        panic!("latest is not an index")
    };
    let want = PlatformRequest::from("linux/arm64/v8".parse::<Platform>().unwrap());
    let picked = select_manifests(&index, &want).unwrap();
    assert_eq!(
        picked[0].digest().to_string(),
        base.manifest_digest("arm64")
    );

    // Re-export as a directory: every blob identical to the original.
    let out = tmp.path().join("again");
    export_dir(&*store, &refs, &out).unwrap();
    let blobs = |m: std::collections::BTreeMap<String, String>| {
        m.into_iter()
            .filter(|(k, _)| k.starts_with("blobs/"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        blobs(tree_digests(&out)),
        blobs(tree_digests(base.layout_dir()))
    );

    // Re-export as a tar, import into a fresh store, re-export again: same bytes.
    let tar = export_tar(&*store, &refs, Vec::new(), TarOptions::default()).unwrap();
    let store2 = TestStore::new(&tmp.path().join("store2"));
    let refs2 = import_tar(&*store2, &tar[..], ImportLimits::default()).unwrap();
    assert_eq!(refs2, refs);
    assert_eq!(store2.digests(), store.digests());
    let tar2 = export_tar(&*store2, &refs2, Vec::new(), TarOptions::default()).unwrap();
    assert_eq!(Digest::sha256_of(&tar2), Digest::sha256_of(&tar));

    // Resolve the index for a platform and save that image for docker.
    let resolved = resolve_manifest(&*store, latest, &want).unwrap();
    assert_eq!(resolved.digest().to_string(), base.manifest_digest("arm64"));
    let docker_tar = export_docker_archive(
        &*store,
        &resolved,
        &["busybox:test".to_string()],
        Vec::new(),
        TarOptions::default(),
    )
    .unwrap();

    if require_tools_or_skip(name, &["umoci"]) {
        let bundle = tmp.path().join("bundle");
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:amd64", out.display()))
            .arg(&bundle));
        assert!(bundle.join("rootfs/bin/busybox").is_file());
        assert_eq!(
            fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
            std::path::Path::new("/bin/busybox")
        );
    }

    if require_tools_or_skip(name, &["skopeo"]) {
        let dfile = tmp.path().join("busybox-docker.tar");
        fs::write(&dfile, &docker_tar).unwrap();
        let d = skopeo(&["inspect", &format!("docker-archive:{}", dfile.display())]);
        assert_eq!(d["Architecture"], "arm64");
        let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:latest", out.display())]);
        assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
        let file = tmp.path().join("busybox.tar");
        fs::write(&file, &tar).unwrap();
        let arm = skopeo(&["inspect", &format!("oci-archive:{}:arm64", file.display())]);
        assert_eq!(arm["Digest"], base.manifest_digest("arm64"));
    }
}
