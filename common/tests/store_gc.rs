//! Content store: refs, leases, GC and disk usage accounting.

use imgfarm_common::oci::store::{ContentStore, RefDescriptor, StoreError};
use imgfarm_common::oci::Digest;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

fn store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ContentStore::open(dir.path().join("state")).expect("open");
    (dir, store)
}

fn on_disk(s: &ContentStore) -> BTreeMap<Digest, u64> {
    std::fs::read_dir(s.root().join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let d: Digest = format!("sha256:{}", e.file_name().to_str().unwrap())
                .parse()
                .unwrap();
            (d, e.metadata().unwrap().len())
        })
        .collect()
}

#[test]
fn refs_round_trip_and_resist_traversal() {
    let (dir, s) = store();
    let d = s.put_bytes(b"{}").unwrap();
    let desc = RefDescriptor::new("application/vnd.oci.image.manifest.v1+json", d.clone(), 2);
    for name in [
        "docker.io/library/alpine:3.20",
        "../../../escape",
        "/abs/name",
        "..",
        ".",
    ] {
        s.set_ref(name, &desc).unwrap();
        assert_eq!(s.get_ref(name).unwrap(), Some(desc.clone()), "{name}");
    }
    // Nothing was written outside refs/.
    let top: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(top.len(), 1, "only the state dir exists next to the store");
    let names: Vec<String> = s.list_refs().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        vec![
            ".",
            "..",
            "../../../escape",
            "/abs/name",
            "docker.io/library/alpine:3.20"
        ]
    );
    assert!(s.delete_ref("..").unwrap());
    assert!(!s.delete_ref("..").unwrap());
    assert_eq!(s.get_ref("..").unwrap(), None);
    assert!(matches!(
        s.set_ref("", &desc),
        Err(StoreError::InvalidRefName(_))
    ));
    assert!(matches!(
        s.set_ref("a\nb", &desc),
        Err(StoreError::InvalidRefName(_))
    ));
}

#[test]
fn gc_keeps_referenced_leased_and_children_and_removes_the_rest() {
    let (_d, s) = store();
    let layer = s.put_bytes(b"layer bytes").unwrap();
    let config = s.put_bytes(b"{\"architecture\":\"amd64\"}").unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":11}}]}}"#
    );
    let manifest_d = s.put_bytes(manifest.as_bytes()).unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"digest":"{manifest_d}","size":1,"mediaType":"x"}}]}}"#
    );
    let index_d = s.put_bytes(index.as_bytes()).unwrap();
    s.set_ref(
        "img:latest",
        &RefDescriptor::new(
            "application/vnd.oci.image.index.v1+json",
            index_d.clone(),
            index.len() as u64,
        ),
    )
    .unwrap();

    let linked_parent = s.put_bytes(b"cache record").unwrap();
    let linked_child = s.put_bytes(b"cache payload").unwrap();
    s.set_children(&linked_parent, std::slice::from_ref(&linked_child))
        .unwrap();
    s.set_ref("cache", &RefDescriptor::new("x", linked_parent.clone(), 12))
        .unwrap();

    let lease = s.lease(Some(Duration::from_secs(3600))).unwrap();
    let mut w = s.writer(None, None).unwrap().with_lease(&lease);
    w.write_all(b"in-flight pull").unwrap();
    let (leased, _) = w.commit().unwrap();

    let garbage = s.put_bytes(b"garbage").unwrap();
    let garbage2 = s.put_bytes(b"more garbage").unwrap();

    let report = s.gc().unwrap();
    let mut removed = report.removed.clone();
    removed.sort();
    let mut want = vec![garbage.clone(), garbage2.clone()];
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(report.freed_bytes, 7 + 12);
    assert_eq!(report.kept, 7);
    for d in [
        &layer,
        &config,
        &manifest_d,
        &index_d,
        &linked_parent,
        &linked_child,
        &leased,
    ] {
        assert!(s.contains(d), "{d} kept");
    }

    // Dropping the lease lets the next GC take its blob.
    drop(lease);
    let report = s.gc().unwrap();
    assert_eq!(report.removed, vec![leased.clone()]);

    // Deleting the ref frees the whole image.
    s.delete_ref("img:latest").unwrap();
    let report = s.gc().unwrap();
    assert_eq!(report.removed.len(), 4);
    assert_eq!(on_disk(&s).len(), 2);
    assert_eq!(s.du().unwrap().blobs, on_disk(&s));
}

#[test]
fn expired_leases_do_not_hold_blobs() {
    let (_d, s) = store();
    let lease = s.lease(Some(Duration::from_secs(1))).unwrap();
    let d = s.put_bytes(b"short lived").unwrap();
    lease.add(&d).unwrap();
    assert_eq!(s.gc().unwrap().removed.len(), 0);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(s.gc().unwrap().removed, vec![d]);
    // The lease file of an expired lease was cleaned up.
    assert_eq!(
        std::fs::read_dir(s.root().join("leases")).unwrap().count(),
        0
    );
    drop(lease);
}

#[test]
fn du_matches_files_after_commits_and_gc() {
    let (_d, s) = store();
    for i in 0..50u32 {
        s.put_bytes(&vec![i as u8; (i * 37) as usize + 1]).unwrap();
    }
    // Duplicate puts do not double count.
    s.put_bytes(&[0u8; 1]).unwrap();
    let du = s.du().unwrap();
    let disk = on_disk(&s);
    assert_eq!(du.blobs, disk);
    assert_eq!(du.total_bytes, disk.values().sum::<u64>());
    assert_eq!(du.blob_count, 50);
    s.gc().unwrap();
    assert_eq!(s.du().unwrap().blob_count, 0);
    assert_eq!(on_disk(&s).len(), 0);

    // Repair rebuilds the accounting from disk.
    let d = s.put_bytes(b"x").unwrap();
    std::fs::remove_file(s.root().join("meta/usage.json")).unwrap();
    assert_eq!(s.du().unwrap().blob_count, 0);
    assert_eq!(s.rebuild_usage().unwrap().blobs.get(&d), Some(&1));
    assert!(s.delete_blob(&d).unwrap());
    assert_eq!(s.du().unwrap().blob_count, 0);
}
