//! Layers from a copy snapshot: `CreateOptions::base` writes only what differs from the
//! parent tree (continuity's `fs.Changes` rules), with whiteouts for what is gone.

use imgfarm_common::oci::layer::{create_to_writer, Compression, CreateOptions};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn entries(new: &Path, base: &Path) -> Vec<String> {
    let opts = CreateOptions {
        compression: Compression::None,
        base: Some(base.to_path_buf()),
        ..CreateOptions::default()
    };
    let (bytes, _, _) = create_to_writer(new, &opts, Vec::new()).expect("layer");
    let mut ar = tar::Archive::new(&bytes[..]);
    ar.entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            String::from_utf8_lossy(&e.path_bytes()).into_owned()
        })
        .collect()
}

/// `cp -a`, as the copy snapshotter makes a step's tree.
fn copy(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(st.success());
}

#[test]
fn only_changes_and_whiteouts_are_written() {
    let t = tempfile::tempdir().expect("tmp");
    let base = t.path().join("base");
    for d in ["etc", "usr/lib/deep", "var/gone/sub", "opt"] {
        fs::create_dir_all(base.join(d)).expect("mkdir");
    }
    fs::write(base.join("etc/passwd"), "root:x:0:0\n").expect("write");
    fs::write(base.join("etc/same"), "same\n").expect("write");
    fs::write(base.join("usr/lib/deep/lib.so"), "lib").expect("write");
    fs::write(base.join("var/gone/sub/f"), "f").expect("write");
    fs::write(base.join("opt/mode"), "m").expect("write");
    let new = t.path().join("new");
    copy(&base, &new);
    assert!(
        entries(&new, &base).is_empty(),
        "an identical copy has no changes"
    );

    fs::write(new.join("etc/passwd"), "root:x:0:0\napp:x:1000:1000\n").expect("write");
    fs::remove_dir_all(new.join("var/gone")).expect("rm");
    fs::set_permissions(new.join("opt/mode"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(new.join("opt/new"), "n").expect("write");
    let got = entries(&new, &base);
    assert_eq!(
        got,
        [
            "etc/",
            "etc/passwd",
            "opt/",
            "opt/mode",
            "opt/new",
            "var/",
            "var/.wh.gone",
        ],
        "unchanged usr/ and etc/same are not written; changed dirs and parents are"
    );
}

#[test]
fn same_size_and_mtime_without_nanoseconds_compares_content() {
    let t = tempfile::tempdir().expect("tmp");
    let base = t.path().join("base");
    fs::create_dir_all(&base).expect("mkdir");
    fs::write(base.join("f"), "aaaa").expect("write");
    let new = t.path().join("new");
    copy(&base, &new);
    fs::write(new.join("f"), "bbbb").expect("write");
    // Same whole-second mtime on both, no nanoseconds: only the bytes tell them apart.
    for p in [base.join("f"), new.join("f")] {
        let st = std::process::Command::new("touch")
            .args(["-d", "2020-01-01T00:00:00Z"])
            .arg(&p)
            .status()
            .expect("touch");
        assert!(st.success());
    }
    assert_eq!(entries(&new, &base), ["f"]);
}

#[test]
fn a_missing_base_is_an_error_not_an_empty_layer() {
    let t = tempfile::tempdir().expect("tmp");
    fs::write(t.path().join("f"), "x").expect("write");
    let opts = CreateOptions {
        compression: Compression::None,
        base: Some(t.path().join("nope")),
        ..CreateOptions::default()
    };
    let err = create_to_writer(t.path(), &opts, Vec::new()).expect_err("no base");
    assert!(err.to_string().contains("nope"), "{err}");
}
