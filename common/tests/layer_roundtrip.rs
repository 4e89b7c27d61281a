//! Layer creation → application round trips, whiteouts and determinism.

mod layer_support;

use imgfarm_common::oci::layer::{
    self, ApplyOptions, Compression, CreateOptions, LayerInfo, SourceKind,
};
use imgfarm_common::oci::store::ContentStore;
use layer_support::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with most of what layers carry.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("etc/hostname"), b"box\n").unwrap();
    fs::write(root.join("etc/empty"), b"").unwrap();
    fs::write(root.join("usr/bin/tool"), noise(3 << 20, 7)).unwrap();
    chmod(&root.join("usr/bin/tool"), 0o4755);
    fs::write(root.join("usr/bin/zeros"), vec![0u8; 1 << 20]).unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-alias")).unwrap();
    symlink("/etc/hostname", root.join("etc/abs-link")).unwrap();
    symlink("../etc/hostname", root.join("usr/rel-link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    let long_dir = root.join("d".repeat(120));
    fs::create_dir(&long_dir).unwrap();
    fs::write(long_dir.join("f".repeat(150)), b"long path").unwrap();
    fs::write(root.join("ünïcødé name"), b"utf8").unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    chmod(&root.join("etc/conf.d"), 0o700);
    fs::create_dir(root.join("ro")).unwrap();
    fs::write(root.join("ro/inside"), b"x").unwrap();
    chmod(&root.join("ro"), 0o555);
    set_xattr(
        &root.join("etc/hostname"),
        "user.imgfarm.test",
        b"v\0binary\xff",
    )
    .unwrap();
    if is_root() {
        // A valid VFS_CAP_REVISION_2 (cap_net_bind_service=ep).
        let mut cap = Vec::new();
        cap.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // revision 2 | effective
        cap.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted lo
        cap.extend_from_slice(&0u32.to_le_bytes()); // inheritable lo
        cap.extend_from_slice(&0u32.to_le_bytes()); // permitted hi
        cap.extend_from_slice(&0u32.to_le_bytes()); // inheritable hi
        set_xattr(&root.join("usr/bin/zeros"), "security.capability", &cap).unwrap();
        nix::unistd::chown(
            &root.join("etc/hostname"),
            Some(1000.into()),
            Some(1001.into()),
        )
        .unwrap();
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &root.join("usr/rel-link"),
            Some(123.into()),
            Some(456.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
    for (i, p) in snapshot(root).keys().enumerate() {
        set_mtime(&root.join(p), 1_600_000_000 + i as i64 * 1000);
    }
}

fn store_in(dir: &Path) -> ContentStore {
    ContentStore::open(dir.join("store")).unwrap()
}

fn apply_blob(store: &ContentStore, info: &LayerInfo, dst: &Path) -> layer::ApplyReport {
    fs::create_dir_all(dst).unwrap();
    layer::apply(
        store.open_blob(&info.digest).unwrap(),
        dst,
        &ApplyOptions::default(),
    )
    .unwrap()
}

#[test]
fn round_trip_preserves_the_tree() {
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        build_tree(&src);
        let store = store_in(tmp.path());
        let opts = CreateOptions {
            compression,
            ..CreateOptions::default()
        };
        let info = layer::create(&store, &src, &opts).unwrap();
        assert_eq!(info.media_type, compression.media_type());
        assert_eq!(store.size(&info.digest).unwrap(), info.size);
        if compression == Compression::None {
            assert_eq!(info.digest, info.diff_id);
        }
        let dst = tmp.path().join("dst");
        let report = apply_blob(&store, &info, &dst);
        assert_eq!(report.hardlinks, 1);
        assert_eq!(report.neutralised_paths, 0);
        let (a, b) = (snapshot(&src), snapshot(&dst));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (path, node) in &a {
            assert_eq!(
                Some(node),
                b.get(path),
                "{compression:?}: {}",
                path.display()
            );
        }
        chmod(&src.join("ro"), 0o755);
        chmod(&dst.join("ro"), 0o755);
    }
}

#[test]
fn overlay_whiteouts_become_wh_entries_and_apply() {
    if !is_root() {
        eprintln!("skipped: needs root (mknod 0/0, trusted.* xattrs) to fake an overlay upper dir");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Lower: what earlier layers left.
    let target = tmp.path().join("rootfs");
    fs::create_dir_all(target.join("opq/old-sub")).unwrap();
    fs::write(target.join("opq/old"), b"old").unwrap();
    fs::write(target.join("gone"), b"delete me").unwrap();
    fs::create_dir_all(target.join("gonedir/deep")).unwrap();
    fs::write(target.join("keep"), b"keep").unwrap();

    // Upper: the overlay diff of a RUN step.
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("opq")).unwrap();
    set_xattr(&upper.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(upper.join("opq/new"), b"new").unwrap();
    mknod(&upper.join("gone"), libc::S_IFCHR, 0).unwrap();
    mknod(&upper.join("gonedir"), libc::S_IFCHR, 0).unwrap();
    fs::write(upper.join("added"), b"added").unwrap();

    let store = store_in(tmp.path());
    let opts = CreateOptions {
        source: SourceKind::OverlayUpper,
        ..CreateOptions::default()
    };
    let info = layer::create(&store, &upper, &opts).unwrap();
    let listing = tar_list(&store.blob_path(&info.digest));
    for want in [
        "opq/",
        "opq/.wh..wh..opq",
        "opq/new",
        ".wh.gone",
        ".wh.gonedir",
        "added",
    ] {
        assert!(listing.iter().any(|l| l == want), "{want} in {listing:?}");
    }
    assert!(
        !listing.iter().any(|l| l == "gone"),
        "no device entry: {listing:?}"
    );

    let report = layer::apply(
        store.open_blob(&info.digest).unwrap(),
        &target,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!((report.whiteouts, report.opaque_dirs), (2, 1));
    let names: Vec<_> = snapshot(&target)
        .into_keys()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(names, vec!["added", "keep", "opq", "opq/new"]);
}

fn tar_list(blob: &Path) -> Vec<String> {
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(blob)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn plain_mode_keeps_devices_and_overlay_xattrs_out() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    set_xattr(&src.join("f"), "user.overlay.opaque", b"y").unwrap();
    let store = store_in(tmp.path());
    let info = layer::create(&store, &src, &CreateOptions::default()).unwrap();
    let dst = tmp.path().join("dst");
    apply_blob(&store, &info, &dst);
    assert!(get_xattr(&dst.join("f"), "user.overlay.opaque").is_none());
}

fn epoch_opts(threads: usize) -> CreateOptions {
    CreateOptions {
        source_date_epoch: Some(1_500_000_000),
        threads,
        ..CreateOptions::default()
    }
}

#[test]
fn deterministic_mode_gives_equal_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    // Same content, created in a different order, different mtimes (all
    // after the epoch).
    for (i, name) in ["x", "y", "z"].iter().enumerate() {
        fs::write(a.join(name), noise(100_000 * (i + 1), i as u64)).unwrap();
    }
    for (i, name) in ["z", "y", "x"].iter().enumerate() {
        let n = 2 - i;
        fs::write(b.join(name), noise(100_000 * (n + 1), n as u64)).unwrap();
    }
    for p in snapshot(&a).keys() {
        set_mtime(&a.join(p), 1_700_000_000);
        set_mtime(&b.join(p), 1_800_000_000);
    }
    let store = store_in(tmp.path());
    let la = layer::create(&store, &a, &epoch_opts(1)).unwrap();
    let lb = layer::create(&store, &b, &epoch_opts(4)).unwrap();
    assert_eq!(la, lb);
    let again = layer::create(&store, &a, &epoch_opts(2)).unwrap();
    assert_eq!(la, again);
    // Without the epoch the mtimes show.
    let plain_a = layer::create(&store, &a, &CreateOptions::default()).unwrap();
    let plain_b = layer::create(&store, &b, &CreateOptions::default()).unwrap();
    assert_ne!(plain_a.diff_id, plain_b.diff_id);
    // Single-stream gzip and zstd are deterministic too.
    for compression in [Compression::Zstd, Compression::Gzip] {
        let o = CreateOptions {
            compression,
            gzip_chunk: None,
            ..epoch_opts(1)
        };
        assert_eq!(
            layer::create(&store, &a, &o).unwrap(),
            layer::create(&store, &b, &o).unwrap()
        );
    }
}

#[test]
fn create_reports_missing_source_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    let err =
        layer::create(&store, &tmp.path().join("nope"), &CreateOptions::default()).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    assert_eq!(
        fs::read_dir(store.root().join("ingest")).unwrap().count(),
        0
    );
}
