//! Shared checks for the OCI layout fixtures (busybox `BaseImages`, Debian `DebianBase`):
//! building twice into fresh directories, reading `index.json`, finding blobs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// Two builds into fresh temporary directories (kept as long as this lives).
pub struct TwoBuilds<T> {
    pub first: T,
    pub second: T,
    _dirs: [TempDir; 2],
}

/// Build twice with `build(dir, first)` into fresh temporary directories and check that both
/// layouts (found with `layout`) have byte-identical `index.json` files.
pub fn build_twice<T>(
    build: impl Fn(&Path, bool) -> anyhow::Result<T>,
    layout: impl Fn(&T) -> &Path,
) -> TwoBuilds<T> {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let first = build(a.path(), true).expect("first build");
    let second = build(b.path(), false).expect("second build");
    let ia = std::fs::read(layout(&first).join("index.json")).expect("first index.json");
    let ib = std::fs::read(layout(&second).join("index.json")).expect("second index.json");
    assert_eq!(ia, ib, "index.json differs between two builds");
    TwoBuilds {
        first,
        second,
        _dirs: [a, b],
    }
}

pub fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("json")
}

/// The layout's `index.json`.
pub fn index_json(layout: &Path) -> serde_json::Value {
    json(&std::fs::read(layout.join("index.json")).expect("index.json"))
}

/// The `org.opencontainers.image.ref.name` of each entry of `index`, in order.
pub fn ref_names(index: &serde_json::Value) -> Vec<&str> {
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect()
}

/// The platform architecture of each entry of `index`, in order.
pub fn architectures(index: &serde_json::Value) -> Vec<&str> {
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect()
}

/// Where the blob `digest` (`sha256:<hex>`) of `layout` is stored.
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    layout.join("blobs/sha256").join(hex)
}
