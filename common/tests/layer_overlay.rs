//! A real overlayfs upper dir (mounted in a user namespace, `userxattr`, as
//! rootless builds do) becomes a layer whose application onto the lower dir
//! reproduces the merged view.

mod layer_support;

use imgfarm_common::oci::layer::{self, ApplyOptions, CreateOptions, SourceKind};
use imgfarm_common::oci::store::ContentStore;
use layer_support::*;
use std::fs;
use std::path::Path;
use std::process::Command;

fn lower_tree(l: &Path) {
    fs::create_dir_all(l.join("etc/old.d/sub")).unwrap();
    fs::write(l.join("etc/old.d/a.conf"), b"a").unwrap();
    fs::write(l.join("etc/old.d/sub/b.conf"), b"b").unwrap();
    fs::write(l.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::create_dir_all(l.join("var/cache/pkgs")).unwrap();
    fs::write(l.join("var/cache/pkgs/x.deb"), b"deb").unwrap();
    fs::write(l.join("remove-me"), b"bye").unwrap();
}

#[test]
fn real_overlay_upper_dir_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for d in ["lower", "upper", "work", "merged", "expected"] {
        fs::create_dir(t.join(d)).unwrap();
    }
    lower_tree(&t.join("lower"));
    // The RUN step: delete a file and a dir, replace a dir (opaque), edit
    // a file, add one. Then copy the merged view out for comparison.
    let script = format!(
        "set -e; cd {t}; \
         mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=work,userxattr merged; \
         rm merged/remove-me; rm -r merged/var/cache/pkgs; \
         rm -r merged/etc/old.d; mkdir merged/etc/old.d; echo new > merged/etc/old.d/c.conf; \
         echo 'app:x:1000:1000::/app:/bin/sh' >> merged/etc/passwd; \
         mkdir -p merged/app && echo hi > merged/app/main; \
         cp -a merged/. expected/; umount merged",
        t = t.display()
    );
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("skipped: cannot mount overlayfs in a user namespace here ({other:?})");
            return;
        }
    }
    // The upper dir holds overlay's own markers.
    let upper = t.join("upper");
    assert!(
        fs::symlink_metadata(upper.join("remove-me"))
            .map(|m| {
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                m.file_type().is_char_device() && m.rdev() == 0
            })
            .unwrap_or(false),
        "whiteout is a 0/0 char device"
    );
    assert_eq!(
        get_xattr(&upper.join("etc/old.d"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );

    let store = ContentStore::open(t.join("store")).unwrap();
    let opts = CreateOptions {
        source: SourceKind::OverlayUpper,
        ..CreateOptions::default()
    };
    let info = layer::create(&store, &upper, &opts).unwrap();
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(store.blob_path(&info.digest))
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for want in [
        ".wh.remove-me",
        "var/cache/.wh.pkgs",
        "etc/old.d/.wh..wh..opq",
        "etc/old.d/c.conf",
        "app/main",
    ] {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} missing from:\n{listing}"
        );
    }
    assert!(
        !listing.contains("overlay"),
        "overlay xattrs/markers leaked:\n{listing}"
    );

    let report = layer::apply(
        store.open_blob(&info.digest).unwrap(),
        &t.join("lower"),
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!((report.whiteouts, report.opaque_dirs), (2, 1));
    let (want, got) = (snapshot(&t.join("expected")), snapshot(&t.join("lower")));
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
    }
}
