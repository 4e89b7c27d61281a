//! The Debian bookworm fixture: cached mmdebstrap images, converted deterministically into an
//! OCI layout that skopeo reads and pushes.

use imgfarm_testkit::{
    init_tracing, or_skip, require_tools_or_skip, run_checked, DebianBase, Registry,
    DEBIAN_VARIANTS,
};
use std::process::Command;

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("json")
}

#[test]
fn two_conversions_give_identical_digests() {
    init_tracing();
    let name = "two_conversions_give_identical_digests";
    let Some(cached) = or_skip(name, DebianBase::get()) else {
        return;
    };
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    // The first one also checks the cache against SHA256SUMS with sha256sum -c.
    let x = DebianBase::convert_into(a.path(), true).expect("convert a");
    let y = DebianBase::convert_into(b.path(), false).expect("convert b");
    for img in [&x, &y] {
        assert_eq!(img.index_digest(), cached.index_digest());
        for (v, arch) in DEBIAN_VARIANTS {
            assert_eq!(
                img.manifest_digest(v, arch),
                cached.manifest_digest(v, arch)
            );
            assert_eq!(img.config_digest(v, arch), cached.config_digest(v, arch));
            assert_eq!(img.layer_digest(v, arch), cached.layer_digest(v, arch));
            assert_eq!(img.diff_id(v, arch), cached.diff_id(v, arch));
        }
    }
    let ia = std::fs::read(x.layout_dir().join("index.json")).expect("index a");
    let ib = std::fs::read(y.layout_dir().join("index.json")).expect("index b");
    assert_eq!(ia, ib);
    let mut seen = std::collections::BTreeSet::new();
    for (v, arch) in DEBIAN_VARIANTS {
        assert!(seen.insert(cached.manifest_digest(v, arch).to_string()));
        eprintln!(
            "{v}/{arch}: manifest {} layer {} diff_id {}",
            cached.manifest_digest(v, arch),
            cached.layer_digest(v, arch),
            cached.diff_id(v, arch)
        );
    }
    eprintln!("bookworm index {}", cached.index_digest());
}

#[test]
fn layout_refs_configs_and_blobs_are_consistent() {
    init_tracing();
    let name = "layout_refs_configs_and_blobs_are_consistent";
    let Some(base) = or_skip(name, DebianBase::get()) else {
        return;
    };
    let layout = base.layout_dir();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = json(&std::fs::read(layout.join("index.json")).expect("index.json"));
    let refs: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(
        refs,
        [
            "bookworm",
            "bookworm-amd64",
            "bookworm-arm64",
            "bookworm-dev"
        ]
    );
    let inner = json(&std::fs::read(blob(base.index_digest())).expect("index blob"));
    let arches: Vec<&str> = inner["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    for (v, arch) in DEBIAN_VARIANTS {
        let manifest = json(&std::fs::read(blob(base.manifest_digest(v, arch))).expect("manifest"));
        assert_eq!(manifest["config"]["digest"], base.config_digest(v, arch));
        assert_eq!(manifest["layers"][0]["digest"], base.layer_digest(v, arch));
        let layer_len = std::fs::metadata(blob(base.layer_digest(v, arch)))
            .expect("layer blob")
            .len();
        assert_eq!(manifest["layers"][0]["size"], layer_len);
        let config = json(&std::fs::read(blob(base.config_digest(v, arch))).expect("config"));
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["bash"]));
        assert_eq!(
            config["config"]["Env"][0],
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        );
        assert_eq!(config["rootfs"]["diff_ids"][0], base.diff_id(v, arch));
        let packages = std::fs::read_to_string(base.packages_file(v, arch)).expect("packages");
        assert!(
            packages.lines().any(|l| l.starts_with("apt\t")),
            "{v}/{arch} lacks apt"
        );
        if v == "bookworm-dev" {
            for p in ["gcc\t", "libc6-dev\t", "python3\t", "python3-pip\t"] {
                assert!(packages.lines().any(|l| l.starts_with(p)), "{v} lacks {p}");
            }
        } else {
            assert!(!packages.lines().any(|l| l.starts_with("gcc\t")));
        }
    }
}

#[test]
fn rootfs_tars_are_bookworm_without_device_nodes() {
    init_tracing();
    let name = "rootfs_tars_are_bookworm_without_device_nodes";
    let Some(base) = or_skip(name, DebianBase::get()) else {
        return;
    };
    if !require_tools_or_skip(name, &["tar"]) {
        return;
    }
    for (v, arch) in DEBIAN_VARIANTS {
        let tar = base.rootfs_tar(v, arch);
        let list = run_checked(
            Command::new("tar")
                .args(["--numeric-owner", "-tvf"])
                .arg(tar),
        )
        .expect("tar -tvf");
        let list = String::from_utf8_lossy(&list.stdout);
        // No device nodes (a rootless unpack cannot mknod); /dev itself stays.
        assert!(!list
            .lines()
            .any(|l| l.starts_with('c') || l.starts_with('b')));
        assert!(list.lines().any(|l| l.ends_with(" ./dev/")));
        assert!(!list
            .lines()
            .any(|l| l.contains(" ./dev/") && !l.ends_with(" ./dev/")));
        // Owners and modes as mmdebstrap made them: /etc/shadow is root:shadow (gid 42) 0640.
        assert!(list.contains(" ./usr/bin/apt-get"));
        let shadow = list
            .lines()
            .find(|l| l.ends_with(" ./etc/shadow"))
            .expect("etc/shadow");
        assert!(shadow.starts_with("-rw-r----- 0/42 "), "{shadow}");
        assert!(!list.contains(" ./etc/resolv.conf"));
        assert!(!list.contains(" ./etc/hostname"));
        if v == "bookworm-dev" {
            assert!(list.contains(" ./usr/bin/gcc-12"));
            assert!(list.contains(" ./usr/bin/pip3"));
        }
        let sources = run_checked(
            Command::new("tar")
                .args(["-xOf"])
                .arg(tar)
                .arg("./etc/apt/sources.list"),
        )
        .expect("sources.list");
        let sources = String::from_utf8_lossy(&sources.stdout);
        assert!(
            sources.contains("deb http://deb.debian.org/debian bookworm main"),
            "{sources}"
        );
        let status = run_checked(
            Command::new("tar")
                .args(["-xOf"])
                .arg(tar)
                .arg("./var/lib/dpkg/status"),
        )
        .expect("dpkg status");
        let status = String::from_utf8_lossy(&status.stdout);
        assert!(
            status.contains(&format!("Architecture: {arch}")),
            "{v}/{arch}"
        );
    }
}

#[test]
fn pushed_bookworm_has_amd64_and_arm64() {
    init_tracing();
    let name = "pushed_bookworm_has_amd64_and_arm64";
    let Some(base) = or_skip(name, DebianBase::get()) else {
        return;
    };
    if !require_tools_or_skip(name, &["skopeo"]) {
        return;
    }
    let Some(reg) = or_skip(name, Registry::start()) else {
        return;
    };
    or_skip(name, base.push_to(&reg, "library/debian", "bookworm")).expect("push");
    or_skip(
        name,
        base.push_dev_to(&reg, "library/debian-dev", "bookworm"),
    )
    .expect("push dev");
    let inspect = |img: &str, extra: &[&str]| {
        let out = run_checked(
            Command::new("skopeo")
                .arg("inspect")
                .args(extra)
                .args(reg.skopeo_flags_plain())
                .arg(format!("docker://{}", reg.image_ref(img, "bookworm"))),
        )
        .expect("skopeo inspect");
        json(&out.stdout)
    };
    let raw = inspect("library/debian", &["--raw"]);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let arches: Vec<&str> = raw["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    let arm = run_checked(
        Command::new("skopeo")
            .args(["--override-arch", "arm64", "inspect"])
            .args(reg.skopeo_flags_plain())
            .arg(format!(
                "docker://{}",
                reg.image_ref("library/debian", "bookworm")
            )),
    )
    .expect("inspect arm64");
    let arm = json(&arm.stdout);
    assert_eq!(arm["Architecture"], "arm64");
    // skopeo reports the digest of what the tag names: the index, as in the layout.
    assert_eq!(arm["Digest"], base.index_digest());
    let dev = inspect("library/debian-dev", &["--raw"]);
    assert_eq!(
        dev["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let dev_cfg = inspect("library/debian-dev", &["--config"]);
    assert_eq!(dev_cfg["architecture"], "amd64");
    assert_eq!(dev_cfg["config"]["Cmd"], serde_json::json!(["bash"]));
}
