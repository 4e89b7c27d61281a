//! `apply_all`: several layers applied as one changeset, as the farm's
//! build context chunks are.

use imgfarm_common::oci::layer::{apply_all, ApplyOptions, LayerError};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// A plain tar of `(path, kind, mode, mtime, body-or-link)`.
fn tar(entries: &[(&str, char, u32, u64, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, mode, mtime, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_mtime(*mtime);
        h.set_uid(0);
        h.set_gid(0);
        match kind {
            'd' => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            'h' => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, path, body).unwrap();
            }
            _ => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(body.len() as u64);
                b.append_data(&mut h, path, body.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        ownership: false,
        ..Default::default()
    }
}

#[test]
fn later_layers_fill_earlier_directories_whose_metadata_is_set_last() {
    let first = tar(&[
        ("ro/", 'd', 0o555, 1000, ""),
        ("ro/a", 'f', 0o644, 2000, "alpha"),
    ]);
    let second = tar(&[
        ("ro/b", 'f', 0o600, 3000, "beta"),
        ("ro/c", 'h', 0, 0, "ro/a"),
    ]);
    let out = tempfile::tempdir().unwrap();
    let report = apply_all([Ok(&first[..]), Ok(&second[..])], out.path(), &opts()).unwrap();
    assert_eq!((report.entries, report.files, report.hardlinks), (4, 2, 1));

    let ro = fs::metadata(out.path().join("ro")).unwrap();
    assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
    assert_eq!(ro.mtime(), 1000, "set after the second layer wrote into it");
    assert_eq!(fs::read_to_string(out.path().join("ro/b")).unwrap(), "beta");
    let a = fs::metadata(out.path().join("ro/a")).unwrap();
    let c = fs::metadata(out.path().join("ro/c")).unwrap();
    assert_eq!(
        a.ino(),
        c.ino(),
        "a hard link to a file of an earlier layer"
    );
    // Restore write access so the temp dir can be removed by a non-root run.
    fs::set_permissions(out.path().join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn limits_count_over_all_layers() {
    let layer = tar(&[("x/", 'd', 0o755, 0, ""), ("x/f", 'f', 0o644, 0, "12345")]);
    let out = tempfile::tempdir().unwrap();
    let few = ApplyOptions {
        max_entries: 3,
        ..opts()
    };
    let err = apply_all([Ok(&layer[..]), Ok(&layer[..])], out.path(), &few).unwrap_err();
    assert!(
        err.to_string()
            .contains("more than 3 entries in the layers applied together"),
        "{err}"
    );

    let out = tempfile::tempdir().unwrap();
    let small = ApplyOptions {
        max_uncompressed: layer.len() as u64 + 10,
        ..opts()
    };
    let err = apply_all([Ok(&layer[..]), Ok(&layer[..])], out.path(), &small).unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");

    // No layers: nothing to do, not an error.
    let out = tempfile::tempdir().unwrap();
    let none: [Result<&[u8], LayerError>; 0] = [];
    assert_eq!(apply_all(none, out.path(), &opts()).unwrap().entries, 0);

    // A layer that cannot be opened stops the application with its error,
    // after the layers before it were applied.
    let out = tempfile::tempdir().unwrap();
    let missing = LayerError::BadArchive("chunk 2 is missing".into());
    let err = apply_all([Ok(&layer[..]), Err(missing)], out.path(), &opts()).unwrap_err();
    assert!(err.to_string().contains("chunk 2 is missing"), "{err}");
    assert!(out.path().join("x/f").exists());
}
