//! Hostile or broken layouts against the real content store: each is
//! refused with a clear error, and nothing bad is stored.

mod oci_layout_support;

use imgfarm_common::oci::docker_archive::export_docker_archive;
use imgfarm_common::oci::layout::{
    blob_rel_path, export_dir, export_tar, import_dir, import_tar, ImportLimits, LayoutError,
    TarOptions,
};
use imgfarm_common::oci::Digest;
use oci_layout_support::{sample_image, TestStore};
use std::fs;

fn ingest_is_empty(store: &TestStore) -> bool {
    fs::read_dir(store.root().join("ingest"))
        .unwrap()
        .next()
        .is_none()
}

#[test]
fn tampered_blob_in_dir_is_refused_and_not_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let src = TestStore::new(&tmp.path().join("src"));
    let refs = sample_image(&src);
    let dir = tmp.path().join("layout");
    export_dir(&*src, &refs, &dir).unwrap();
    let layer_hex = src
        .digests()
        .into_iter()
        .find(|h| {
            fs::read(dir.join("blobs/sha256").join(h))
                .unwrap()
                .starts_with(&[0x1f, 0x8b])
        })
        .unwrap();
    let path = dir.join("blobs/sha256").join(&layer_hex);
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0xff;
    fs::write(&path, &bytes).unwrap();

    let dst = TestStore::new(&tmp.path().join("dst"));
    let e = import_dir(&*dst, &dir, ImportLimits::default()).unwrap_err();
    assert!(e.to_string().contains("digest mismatch"), "{e}");
    let layer: Digest = format!("sha256:{layer_hex}").parse().unwrap();
    assert!(!dst.contains(&layer));
    assert!(ingest_is_empty(&dst));
}

#[test]
fn tar_with_traversal_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = TestStore::new(&tmp.path().join("src"));
    let refs = sample_image(&src);
    let mut tar = export_tar(&*src, &refs, Vec::new(), TarOptions::default()).unwrap();
    // Rename the first member `oci-layout` to `../oci-layt` in place (same length)
    // and fix the header checksum, as a hostile archive would.
    tar[..10].copy_from_slice(b"../oci-lay");
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&tar[..512]);
    h.set_cksum();
    tar[..512].copy_from_slice(h.as_bytes());
    let dst = TestStore::new(&tmp.path().join("dst"));
    let e = import_tar(&*dst, &tar[..], ImportLimits::default()).unwrap_err();
    assert!(matches!(e, LayoutError::UnsafePath { .. }), "{e}");
    assert!(!tmp.path().join("oci-lay").exists());
}

#[test]
fn oversized_index_json_and_schema1_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(dir.join("index.json"), vec![b' '; 5 << 20]).unwrap();
    let store = TestStore::new(&tmp.path().join("store"));
    let e = import_dir(&*store, &dir, ImportLimits::default()).unwrap_err();
    assert!(matches!(e, LayoutError::TooLarge { .. }), "{e}");

    let s1 = br#"{"schemaVersion":1,"name":"x","tag":"y","architecture":"amd64","fsLayers":[],"history":[]}"#;
    let d = Digest::sha256_of(s1);
    fs::write(dir.join(blob_rel_path(&d)), s1).unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws","digest":"{d}","size":{}}}]}}"#,
        s1.len()
    );
    fs::write(dir.join("index.json"), index).unwrap();
    let e = import_dir(&*store, &dir, ImportLimits::default()).unwrap_err();
    assert!(e.to_string().contains("schema 1"), "{e}");
}

#[test]
fn docker_archive_needs_a_single_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let src = TestStore::new(&tmp.path().join("src"));
    let refs = sample_image(&src);
    let e = export_docker_archive(
        &*src,
        &refs[0].descriptor,
        &[],
        Vec::new(),
        TarOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("select a platform"), "{e}");
}

#[test]
fn ref_descriptors_round_trip_through_the_store() {
    use imgfarm_common::oci::layout::{from_ref_descriptor, to_ref_descriptor};
    let tmp = tempfile::tempdir().unwrap();
    let store = TestStore::new(&tmp.path().join("s"));
    let refs = sample_image(&store);
    let r = to_ref_descriptor(&refs[0].descriptor).unwrap();
    store.set_ref("example/app:latest", &r).unwrap();
    let back = store.get_ref("example/app:latest").unwrap().unwrap();
    assert_eq!(from_ref_descriptor(&back), refs[0].descriptor);
    // GC keeps the whole image reachable from the ref.
    let report = store.gc().unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    let dir = tmp.path().join("out");
    export_dir(&*store, &refs, &dir).unwrap();
}

#[test]
fn leased_import_survives_gc_until_refs_are_set() {
    use imgfarm_common::oci::layout::{to_ref_descriptor, LeasedStore};
    let tmp = tempfile::tempdir().unwrap();
    let src = TestStore::new(&tmp.path().join("src"));
    let refs = sample_image(&src);
    let dir = tmp.path().join("layout");
    export_dir(&*src, &refs, &dir).unwrap();

    let dst = TestStore::new(&tmp.path().join("dst"));
    let lease = dst.lease(None).unwrap();
    let got = import_dir(
        &LeasedStore {
            store: &dst,
            lease: &lease,
        },
        &dir,
        ImportLimits::default(),
    )
    .unwrap();
    assert!(
        dst.gc().unwrap().removed.is_empty(),
        "the lease holds the import"
    );
    dst.set_ref(
        "app:latest",
        &to_ref_descriptor(&got[0].descriptor).unwrap(),
    )
    .unwrap();
    lease.release();
    assert!(dst.gc().unwrap().removed.is_empty(), "the ref holds it now");
    assert_eq!(dst.digests(), src.digests());

    // Control: without lease or ref, GC sweeps an import.
    let bare = TestStore::new(&tmp.path().join("bare"));
    import_dir(&*bare, &dir, ImportLimits::default()).unwrap();
    assert_eq!(bare.gc().unwrap().removed.len(), src.digests().len());
}
