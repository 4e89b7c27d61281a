//! Content store: writing, verification and concurrency.

use imgfarm_common::oci::store::{ContentStore, StoreError};
use imgfarm_common::oci::Digest;
use std::io::{Read, Write};

fn store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ContentStore::open(dir.path().join("state")).expect("open");
    (dir, store)
}

fn dir_is_empty(p: &std::path::Path) -> bool {
    std::fs::read_dir(p).expect("read_dir").next().is_none()
}

#[test]
fn put_and_read_round_trip() {
    let (_d, s) = store();
    let digest = s.put_bytes(b"hello").unwrap();
    assert_eq!(digest, Digest::sha256_of(b"hello"));
    assert!(s.contains(&digest));
    assert_eq!(s.size(&digest).unwrap(), 5);
    assert_eq!(s.read_bytes(&digest, 5).unwrap(), b"hello");
    assert!(s
        .blob_path(&digest)
        .ends_with(format!("blobs/sha256/{}", digest.hex())));
    assert!(matches!(
        s.read_bytes(&digest, 4),
        Err(StoreError::TooLarge { .. })
    ));
}

#[test]
fn digest_mismatch_leaves_nothing() {
    let (_d, s) = store();
    let wrong = Digest::sha256_of(b"other");
    let mut w = s.writer(Some(wrong.clone()), None).unwrap();
    w.write_all(b"actual bytes").unwrap();
    match w.commit() {
        Err(StoreError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, Digest::sha256_of(b"actual bytes"));
        }
        other => panic!("want mismatch, got {other:?}"),
    }
    assert!(dir_is_empty(&s.root().join("ingest")));
    assert!(dir_is_empty(&s.root().join("blobs/sha256")));
    assert_eq!(s.du().unwrap().blob_count, 0);
}

#[test]
fn size_limit_is_enforced_and_cleans_up() {
    let (_d, s) = store();
    let mut w = s.writer(None, Some(4)).unwrap();
    assert!(w.write_all(b"12345").is_err());
    assert!(matches!(w.commit(), Err(StoreError::TooLarge { .. })));
    assert!(dir_is_empty(&s.root().join("ingest")));
    assert!(dir_is_empty(&s.root().join("blobs/sha256")));
}

#[test]
fn dropped_writer_removes_temp() {
    let (_d, s) = store();
    let mut w = s.writer(None, None).unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    assert!(dir_is_empty(&s.root().join("ingest")));
}

#[test]
fn concurrent_writers_of_same_digest_are_harmless() {
    let (_d, s) = store();
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let expected = Digest::sha256_of(&data);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let s = s.clone();
            let data = &data;
            let expected = expected.clone();
            scope.spawn(move || {
                let mut w = s.writer(Some(expected.clone()), None).unwrap();
                for chunk in data.chunks(7919) {
                    w.write_all(chunk).unwrap();
                }
                let (d, n) = w.commit().unwrap();
                assert_eq!((d, n), (expected, data.len() as u64));
            });
        }
    });
    assert_eq!(s.read_bytes(&expected, u64::MAX).unwrap(), data);
    assert!(dir_is_empty(&s.root().join("ingest")));
    let du = s.du().unwrap();
    assert_eq!((du.blob_count, du.total_bytes), (1, data.len() as u64));
}

#[test]
fn open_blob_verifies_at_eof() {
    let (_d, s) = store();
    let digest = s.put_bytes(b"trusted content").unwrap();
    let mut ok = String::new();
    s.open_blob(&digest)
        .unwrap()
        .read_to_string(&mut ok)
        .unwrap();
    assert_eq!(ok, "trusted content");

    // Tamper with the file on disk (it is 0444; we own it, so chmod first).
    let path = s.blob_path(&digest);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, b"tampered conten").unwrap();

    let mut buf = Vec::new();
    let err = s
        .open_blob(&digest)
        .unwrap()
        .read_to_end(&mut buf)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(matches!(
        s.read_bytes(&digest, 1000),
        Err(StoreError::DigestMismatch { .. })
    ));
}

#[test]
fn missing_and_unsupported_blobs_are_clear_errors() {
    let (_d, s) = store();
    let absent = Digest::sha256_of(b"absent");
    assert!(!s.contains(&absent));
    assert!(matches!(s.open_blob(&absent), Err(StoreError::NotFound(_))));
    assert!(matches!(s.size(&absent), Err(StoreError::NotFound(_))));
    let sha512: Digest = format!("sha512:{}", "a".repeat(128)).parse().unwrap();
    assert!(matches!(
        s.writer(Some(sha512), None),
        Err(StoreError::UnsupportedAlgorithm(_))
    ));
}
