//! Independent readers and writers: GNU tar, gzip and sha256sum agree with
//! our layers, and we read GNU tar's archives.

mod layer_support;

use imgfarm_common::oci::layer::{self, ApplyOptions, CreateOptions};
use imgfarm_common::oci::store::ContentStore;
use layer_support::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{script} failed");
    String::from_utf8(out.stdout).unwrap()
}

fn tree(root: &Path) {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/b/file"), noise(2_500_000, 3)).unwrap();
    fs::write(root.join("a/small"), b"hi").unwrap();
    fs::hard_link(root.join("a/small"), root.join("a/small-link")).unwrap();
    symlink("b/file", root.join("a/sym")).unwrap();
    let deep = root
        .join("x".repeat(90))
        .join("y".repeat(90))
        .join("z".repeat(90));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("w".repeat(120)), b"deep").unwrap();
    set_xattr(&root.join("a/small"), "user.k", b"v").unwrap();
}

#[test]
fn gnu_tar_gzip_and_sha256sum_agree_with_our_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let info = layer::create(&store, &src, &CreateOptions::default()).unwrap();
    let blob = store.blob_path(&info.digest);
    let b = blob.display();

    let listing = sh(&format!("tar -tvzf {b}"));
    let long = format!(
        "{}/{}/{}/{}",
        "x".repeat(90),
        "y".repeat(90),
        "z".repeat(90),
        "w".repeat(120)
    );
    for want in [
        "a/b/file",
        "a/small",
        "a/sym -> b/file",
        "a/small-link link to a/small",
        long.as_str(),
    ] {
        assert!(listing.contains(want), "{want:?} missing from:\n{listing}");
    }
    let sum = sh(&format!("sha256sum {b}"));
    assert_eq!(&sum[..64], info.digest.hex());
    let diff = sh(&format!("gunzip -c {b} | sha256sum"));
    assert_eq!(&diff[..64], info.diff_id.hex());
    let size = sh(&format!("gunzip -c {b} | wc -c"));
    assert_eq!(size.trim().parse::<u64>().unwrap(), info.uncompressed_size);

    // GNU tar extracts the same tree (content, links, PAX names, xattrs).
    let out = tmp.path().join("gnu");
    fs::create_dir(&out).unwrap();
    sh(&format!(
        "tar --xattrs --xattrs-include='*' -xzpf {b} -C {}",
        out.display()
    ));
    let (want, got) = (snapshot(&src), snapshot(&out));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (p, n) in &want {
        let g = &got[p];
        assert_eq!(
            (n.kind, n.mode, &n.content, &n.link),
            (g.kind, g.mode, &g.content, &g.link),
            "{}",
            p.display()
        );
        assert_eq!(n.link_group, g.link_group, "{}", p.display());
        if n.kind != "dir" {
            assert_eq!(n.mtime, g.mtime, "{}", p.display());
        }
    }
    assert_eq!(
        get_xattr(&out.join("a/small"), "user.k").as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn we_apply_gnu_tar_archives_in_every_format() {
    for format in ["gnu", "posix", "ustar"] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        tree(&src);
        if format == "ustar" {
            // ustar cannot hold the 400-byte path.
            fs::remove_dir_all(src.join("x".repeat(90))).unwrap();
        }
        let archive = tmp.path().join("l.tar.gz");
        sh(&format!(
            "tar --format={format} --xattrs --sort=name -C {} -czf {} .",
            src.display(),
            archive.display()
        ));
        let dst = tmp.path().join("dst");
        fs::create_dir(&dst).unwrap();
        let report = layer::apply(
            fs::File::open(&archive).unwrap(),
            &dst,
            &ApplyOptions::default(),
        )
        .unwrap();
        assert_eq!(report.hardlinks, 1, "{format}");
        let (want, got) = (snapshot(&src), snapshot(&dst));
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "{format}"
        );
        for (p, n) in &want {
            let mut g = got[p].clone();
            if format != "posix" {
                g.xattrs = n.xattrs.clone(); // only PAX carries xattrs
            }
            assert_eq!(n, &g, "{format}: {}", p.display());
        }
    }
}
