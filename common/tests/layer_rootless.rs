//! Layer application inside a user namespace, as rootless builds run it:
//! device nodes are skipped with a warning, ids that are mapped are
//! chowned (a subuid range), unmapped ones are counted, not fatal.

mod layer_support;

use imgfarm_common::oci::layer::{self, ApplyOptions, CreateOptions};
use imgfarm_common::oci::store::ContentStore;
use layer_support::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// Runs inside the namespace (spawned by the tests below).
#[test]
#[ignore = "spawned inside a user namespace by the rootless tests"]
fn inner_apply() {
    let layer_path = std::env::var("IMGFARM_INNER_LAYER").unwrap();
    let root = std::env::var("IMGFARM_INNER_ROOT").unwrap();
    let out = std::env::var("IMGFARM_INNER_REPORT").unwrap();
    let report = layer::apply(
        fs::File::open(layer_path).unwrap(),
        Path::new(&root),
        &ApplyOptions::default(),
    )
    .unwrap();
    fs::write(
        out,
        format!(
            "{} {} {}",
            report.devices_skipped, report.ownership_failures, report.files
        ),
    )
    .unwrap();
}

fn make_layer(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(src.join("home/app")).unwrap();
    fs::write(src.join("home/app/data"), b"app data").unwrap();
    fs::write(src.join("rootfile"), b"root").unwrap();
    nix::unistd::chown(
        &src.join("home/app/data"),
        Some(1000.into()),
        Some(1000.into()),
    )
    .unwrap();
    nix::unistd::chown(&src.join("home/app"), Some(1000.into()), Some(1000.into())).unwrap();
    mknod(
        &src.join("null"),
        libc::S_IFCHR | 0o666,
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let store = ContentStore::open(dir.join("store")).unwrap();
    let info = layer::create(&store, &src, &CreateOptions::default()).unwrap();
    let blob = dir.join("layer.tar.gz");
    fs::copy(store.blob_path(&info.digest), &blob).unwrap();
    blob
}

fn run_inner(prefix: &[&str], blob: &Path, root: &Path, report: &Path) -> Option<(u64, u64, u64)> {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..])
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            "inner_apply",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("IMGFARM_INNER_LAYER", blob)
        .env("IMGFARM_INNER_ROOT", root)
        .env("IMGFARM_INNER_REPORT", report);
    let status = cmd.status().ok()?;
    if !status.success() {
        return None;
    }
    let text = fs::read_to_string(report).ok()?;
    let v: Vec<u64> = text.split(' ').filter_map(|s| s.parse().ok()).collect();
    Some((v[0], v[1], v[2]))
}

#[test]
fn apply_in_a_root_only_user_namespace() {
    if !is_root() {
        eprintln!("skipped: building the fixture needs root (chown, mknod)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let blob = make_layer(tmp.path());
    let root = tmp.path().join("rootfs");
    fs::create_dir(&root).unwrap();
    let report = tmp.path().join("report");
    let Some((devices_skipped, ownership_failures, files)) = run_inner(
        &["unshare", "--user", "--map-root-user", "--"],
        &blob,
        &root,
        &report,
    ) else {
        eprintln!("skipped: unshare --user not available");
        return;
    };
    // Only id 0 is mapped: mknod is refused, chown to 1000 fails (counted).
    assert_eq!(devices_skipped, 1);
    assert!(ownership_failures >= 1);
    assert_eq!(files, 2);
    assert!(!root.join("null").exists());
    assert_eq!(fs::read(root.join("home/app/data")).unwrap(), b"app data");
}

#[test]
fn apply_as_unprivileged_user_with_subuid_range() {
    let user = std::env::var("IMGFARM_ROOTLESS_USER").unwrap_or_else(|_| "imgfarm-test".into());
    let Ok(Some(u)) = nix::unistd::User::from_name(&user) else {
        eprintln!("skipped: no user {user:?} (create one with shared/testbed/make-farm-user.sh)");
        return;
    };
    let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
    let Some(start) = subuid.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(user.as_str()))
            .then(|| f.next()?.parse::<u32>().ok())
            .flatten()
    }) else {
        eprintln!("skipped: {user} has no /etc/subuid range");
        return;
    };
    if !is_root() {
        eprintln!("skipped: building the fixture needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let blob = make_layer(tmp.path());
    let root = tmp.path().join("rootfs");
    fs::create_dir(&root).unwrap();
    nix::unistd::chown(&root, Some(u.uid), Some(u.gid)).unwrap();
    let report_dir = tmp.path().join("out");
    fs::create_dir(&report_dir).unwrap();
    nix::unistd::chown(&report_dir, Some(u.uid), Some(u.gid)).unwrap();
    let report = report_dir.join("report");
    let Some((devices_skipped, ownership_failures, files)) = run_inner(
        &[
            "setpriv",
            "--reuid",
            &user,
            "--regid",
            &user,
            "--init-groups",
            "--",
            "unshare",
            "--map-auto",
            "--map-root-user",
            "--",
        ],
        &blob,
        &root,
        &report,
    ) else {
        eprintln!("skipped: could not enter a user namespace as {user}");
        return;
    };
    assert_eq!((devices_skipped, ownership_failures, files), (1, 0, 2));
    // Inside, 1000 is mapped to subuid start + 999 (0 is the user).
    let data = fs::metadata(root.join("home/app/data")).unwrap();
    assert_eq!(data.uid(), start + 999);
    assert_eq!(
        fs::metadata(root.join("rootfile")).unwrap().uid(),
        u.uid.as_raw()
    );
}

#[test]
fn id_maps_translate_subuid_owned_trees_both_ways() {
    if !is_root() {
        eprintln!("skipped: needs root to chown to subordinate ids");
        return;
    }
    let map = layer::IdMap::rootless(1001, 1001, 100_000, 100_000, 65536);
    let tmp = tempfile::tempdir().unwrap();
    // An upper dir as a rootless RUN leaves it: owned by host subuids.
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("home/app")).unwrap();
    fs::write(upper.join("home/app/data"), b"x").unwrap();
    fs::write(upper.join("by-user"), b"x").unwrap();
    nix::unistd::chown(
        &upper.join("home/app"),
        Some(100_999.into()),
        Some(100_999.into()),
    )
    .unwrap();
    nix::unistd::chown(
        &upper.join("home/app/data"),
        Some(100_999.into()),
        Some(100_999.into()),
    )
    .unwrap();
    nix::unistd::chown(&upper.join("by-user"), Some(1001.into()), Some(1001.into())).unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let opts = CreateOptions {
        id_map: Some(map.clone()),
        ..CreateOptions::default()
    };
    let info = layer::create(&store, &upper, &opts).unwrap();
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(store.blob_path(&info.digest))
        .output()
        .unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(
        listing
            .lines()
            .any(|l| l.contains("1000/1000") && l.ends_with("home/app/data")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.contains(" 0/0 ") && l.ends_with("by-user")),
        "{listing}"
    );
    // Unmapped host ids (real root's own files) become nobody.
    assert!(
        listing
            .lines()
            .any(|l| l.contains("65534/65534") && l.ends_with("home/")),
        "{listing}"
    );

    // Applying with the map from outside puts the host ids back.
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let apply_opts = ApplyOptions {
        id_map: Some(map),
        ..ApplyOptions::default()
    };
    let r = layer::apply(store.open_blob(&info.digest).unwrap(), &dst, &apply_opts).unwrap();
    assert_eq!(
        fs::metadata(dst.join("home/app/data")).unwrap().uid(),
        100_999
    );
    assert_eq!(fs::metadata(dst.join("by-user")).unwrap().uid(), 1001);
    // 65534 is container id 65534 -> host 100_000 + 65533.
    assert_eq!(fs::metadata(dst.join("home")).unwrap().uid(), 165_533);
    assert_eq!(r.ownership_failures, 0);
}
