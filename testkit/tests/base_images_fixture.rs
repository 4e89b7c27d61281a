//! The base-images fixture: deterministic, complete, and readable by an independent tool.

mod layout_common;

use imgfarm_testkit::{init_tracing, or_skip, require_tools_or_skip, run_checked, BaseImages};
use layout_common::{blob_path, build_twice, index_json, ref_names};
use std::process::Command;

#[test]
fn two_builds_give_identical_digests() {
    init_tracing();
    let name = "two_builds_give_identical_digests";
    let Some(cached) = or_skip(name, BaseImages::build()) else {
        return;
    };
    // Also checks that the two index.json files are byte-identical.
    let builds = build_twice(|dir, _| BaseImages::build_in(dir), BaseImages::layout_dir);
    for img in [&builds.first, &builds.second] {
        assert_eq!(img.index_digest(), cached.index_digest());
        for arch in ["amd64", "arm64"] {
            assert_eq!(img.manifest_digest(arch), cached.manifest_digest(arch));
            assert_eq!(img.layer_digest(arch), cached.layer_digest(arch));
            assert_eq!(img.diff_id(arch), cached.diff_id(arch));
        }
    }
    let x = &builds.first;
    assert_ne!(x.manifest_digest("amd64"), x.manifest_digest("arm64"));
    eprintln!("busybox index {}", cached.index_digest());
}

#[test]
fn layout_has_three_refs_and_the_rootfs_is_busybox() {
    init_tracing();
    let name = "layout_has_three_refs_and_the_rootfs_is_busybox";
    let Some(base) = or_skip(name, BaseImages::build()) else {
        return;
    };
    let index = index_json(base.layout_dir());
    assert_eq!(ref_names(&index), ["amd64", "arm64", "latest"]);
    for arch in ["amd64", "arm64"] {
        let root = base.rootfs_dir(arch);
        assert!(root.join("bin/busybox").is_file());
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).expect("sh link"),
            std::path::Path::new("/bin/busybox")
        );
        assert!(std::fs::read_to_string(root.join("etc/passwd"))
            .expect("passwd")
            .starts_with("root:x:0:0:"));
        assert!(std::fs::read_to_string(root.join("etc/group"))
            .expect("group")
            .starts_with("root:x:0:"));
        // Each blob named in the layout has the content its name says.
        for d in [
            base.manifest_digest(arch),
            base.config_digest(arch),
            base.layer_digest(arch),
        ] {
            let data = std::fs::read(blob_path(base.layout_dir(), d)).expect("blob");
            use sha2::Digest as _;
            assert_eq!(
                format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data))),
                d
            );
        }
    }
}

#[test]
fn layer_tar_records_root_owner_and_epoch_mtime() {
    init_tracing();
    let name = "layer_tar_records_root_owner_and_epoch_mtime";
    if !require_tools_or_skip(name, &["tar"]) {
        return;
    }
    let Some(base) = or_skip(name, BaseImages::build()) else {
        return;
    };
    let out = run_checked(
        Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvf"])
            .arg(base.layer_tar("arm64")),
    )
    .expect("tar -tv");
    let listing = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines.len() > 250, "only {} entries", lines.len());
    for l in &lines {
        assert!(l.contains(" 0/0 "), "{l}");
        assert!(l.contains("1970-01-01 00:00:00"), "{l}");
    }
    assert!(listing.contains("bin/busybox"));
}

#[test]
fn umoci_reads_the_layout() {
    init_tracing();
    let name = "umoci_reads_the_layout";
    if !require_tools_or_skip(name, &["umoci"]) {
        return;
    }
    let Some(base) = or_skip(name, BaseImages::build()) else {
        return;
    };
    for r in ["amd64", "arm64"] {
        let out = run_checked(
            Command::new("umoci")
                .arg("stat")
                .arg("--image")
                .arg(format!("{}:{r}", base.layout_dir().display())),
        )
        .expect("umoci stat");
        assert!(String::from_utf8_lossy(&out.stdout).contains("busybox-static"));
    }
}

#[test]
fn missing_debs_say_how_to_fix_it() {
    // Run in a child process so the env override does not race other tests.
    if std::env::var_os("IMGFARM_TESTKIT_CHILD").is_some() {
        let err =
            BaseImages::build_in(&std::env::temp_dir().join("never-built")).expect_err("no debs");
        let msg = format!("{err:#}");
        assert!(msg.contains("scripts/setup.sh --dev"), "{msg}");
        assert!(err.downcast_ref::<imgfarm_testkit::Unavailable>().is_some());
        return;
    }
    let exe = std::env::current_exe().expect("test exe");
    let out = Command::new(exe)
        .args(["--exact", "missing_debs_say_how_to_fix_it", "--quiet"])
        .env("IMGFARM_TESTKIT_CHILD", "1")
        .env("IMGFARM_DEBS_DIR", "/nonexistent/imgfarm-debs")
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
