//! Throughput of layout tar export/import against GNU tar + sha256sum on the
//! same bytes. Ignored by default: `cargo test -p imgfarm-common --test
//! oci_layout_bench -- --ignored --nocapture`.

mod oci_layout_support;

use imgfarm_common::oci::image::{descriptor_for, manifest_to_json, new_manifest};
use imgfarm_common::oci::layout::{
    export_dir, export_tar, import_tar, ImportLimits, LayoutRef, TarOptions,
};
use imgfarm_common::oci::media_types::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use oci_layout_support::TestStore;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::process::Command;
use std::time::Instant;

#[test]
#[ignore = "benchmark"]
fn layout_tar_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let store = TestStore::new(&tmp.path().join("store"));
    // 256 MiB of incompressible bytes, as an (unchecked) gzip layer blob.
    let mut blob = vec![0u8; 256 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in blob.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut w = store.writer(None, None).unwrap();
    w.write_all(&blob).unwrap();
    let (_, size) = w.commit().unwrap();
    let layer = descriptor_for(OCI_LAYER_GZIP, &blob);
    drop(blob);
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    store.put(cfg);
    let m = manifest_to_json(&new_manifest(
        descriptor_for(OCI_CONFIG, cfg),
        vec![layer],
        &BTreeMap::new(),
    ))
    .unwrap();
    store.put(&m);
    let refs = vec![LayoutRef::new("x", descriptor_for(OCI_MANIFEST, &m))];
    let mb = size as f64 / (1 << 20) as f64;

    let out = tmp.path().join("out.tar");
    let t = Instant::now();
    export_tar(
        &*store,
        &refs,
        fs::File::create(&out).unwrap(),
        TarOptions::default(),
    )
    .unwrap();
    let ours_export = t.elapsed().as_secs_f64();

    let dir = tmp.path().join("dir");
    export_dir(&*store, &refs, &dir).unwrap();
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - . | tee {} | sha256sum >/dev/null",
            dir.display(),
            tmp.path().join("gnu.tar").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let gnu = t.elapsed().as_secs_f64();

    let dst = TestStore::new(&tmp.path().join("dst"));
    let t = Instant::now();
    import_tar(
        &*dst,
        fs::File::open(&out).unwrap(),
        ImportLimits::default(),
    )
    .unwrap();
    let ours_import = t.elapsed().as_secs_f64();

    println!(
        "layout tar, {mb:.0} MiB: export (verify + tar) {:.0} MiB/s; import (untar + verify + store) {:.0} MiB/s; GNU tar | tee | sha256sum {:.0} MiB/s; export/GNU speed ratio {:.2}",
        mb / ours_export,
        mb / ours_import,
        mb / gnu,
        gnu / ours_export
    );
}
