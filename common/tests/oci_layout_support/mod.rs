//! Shared helpers for the OCI layout tests: a store, a hand-made
//! two-platform image, and running the independent readers (skopeo, umoci).

#![allow(dead_code)]

use imgfarm_common::oci::image::config::{rfc3339_utc, History, ImageConfig};
use imgfarm_common::oci::image::{descriptor_for, index_to_json, manifest_to_json, new_manifest};
use imgfarm_common::oci::index::merge;
use imgfarm_common::oci::layout::LayoutRef;
use imgfarm_common::oci::media_types::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// The real content store, with test conveniences.
pub struct TestStore {
    pub store: ContentStore,
}

impl TestStore {
    pub fn new(root: &Path) -> Self {
        Self {
            store: ContentStore::open(root).unwrap(),
        }
    }
    pub fn put(&self, bytes: &[u8]) -> Digest {
        self.store.put_bytes(bytes).unwrap()
    }
    /// The hex names of every stored blob, sorted.
    pub fn digests(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.store.root().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl std::ops::Deref for TestStore {
    type Target = ContentStore;
    fn deref(&self) -> &ContentStore {
        &self.store
    }
}

pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, name, *content).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A hand-made image for linux/amd64 and linux/arm64, one gzip layer each
/// holding `hello.txt` = "hello from <platform>\n". Refs: `latest` (the
/// index), `amd64`, `arm64`.
pub fn sample_image(store: &TestStore) -> Vec<LayoutRef> {
    let mut per_platform = Vec::new();
    for p in [Platform::linux_amd64(), Platform::linux_arm64()] {
        let text = format!("hello from {p}\n");
        let tar = layer_tar(&[("hello.txt", text.as_bytes())]);
        let gz = gzip(&tar);
        store.put(&gz);
        let mut cfg = ImageConfig::scratch(&p);
        cfg.created = Some(rfc3339_utc(0, 0));
        cfg.config.cmd = vec!["/bin/sh".into()];
        cfg.push_layer(
            Digest::sha256_of(&tar),
            History {
                created: Some(rfc3339_utc(0, 0)),
                created_by: Some("COPY hello.txt / # buildkit".into()),
                comment: Some("buildkit.dockerfile.v0".into()),
                ..History::default()
            },
        );
        let cfg = cfg.to_json().unwrap();
        store.put(&cfg);
        let m = manifest_to_json(&new_manifest(
            descriptor_for(OCI_CONFIG, &cfg),
            vec![descriptor_for(OCI_LAYER_GZIP, &gz)],
            &BTreeMap::new(),
        ))
        .unwrap();
        store.put(&m);
        per_platform.push((p, descriptor_for(OCI_MANIFEST, &m)));
    }
    let mut ann = BTreeMap::new();
    ann.insert(
        "org.opencontainers.image.created".to_string(),
        rfc3339_utc(0, 0),
    );
    let idx = index_to_json(&merge(&per_platform, &ann).unwrap()).unwrap();
    store.put(&idx);
    vec![
        LayoutRef::new("latest", descriptor_for(OCI_INDEX, &idx)),
        LayoutRef::new("amd64", per_platform[0].1.clone()),
        LayoutRef::new("arm64", per_platform[1].1.clone()),
    ]
}

/// Run a command; panic with its stderr when it fails; return stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn skopeo(args: &[&str]) -> serde_json::Value {
    let out = run(Command::new("skopeo").arg("--insecure-policy").args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("skopeo output is not JSON ({e}): {out}"))
}

/// Every file under `dir`, relative path → content digest.
pub fn tree_digests(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, Digest::sha256_of(&fs::read(&p).unwrap()).to_string());
            }
        }
    }
    out
}
