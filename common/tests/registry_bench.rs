//! Throughput of push and pull against the real registry, next to skopeo on the
//! same image in the same run. Ignored by default:
//! `cargo test -p imgfarm-common --release --test registry_bench -- --ignored --nocapture`

use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::registry::{
    PullOptions, PushOptions, Reference, RegistryClient, RegistryConfig,
};
use imgfarm_testkit::{or_skip, require_tools_or_skip, run_checked, Registry};
use std::process::Command;
use std::time::Instant;

const LAYERS: usize = 4;
const LAYER_BYTES: usize = 32 * 1024 * 1024;

/// Incompressible, deterministic bytes (xorshift64).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn push_pull_throughput_vs_skopeo() {
    let test = "push_pull_throughput_vs_skopeo";
    if !require_tools_or_skip(test, &["skopeo"]) {
        return;
    }
    let Some(reg) = or_skip(test, Registry::start()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("src")).unwrap();
    let mut layer_descs = Vec::new();
    for i in 0..LAYERS {
        let d = store.put_bytes(&noise(i as u64 + 1, LAYER_BYTES)).unwrap();
        layer_descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{LAYER_BYTES}}}"#
        ));
    }
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_d = store.put_bytes(config).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        layer_descs.join(",")
    );
    let manifest_d: Digest = store.put_bytes(manifest.as_bytes()).unwrap();

    // The same image as an OCI layout for skopeo (blobs hard-linked from the store).
    let layout = tmp.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    for e in std::fs::read_dir(tmp.path().join("src/blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::hard_link(e.path(), layout.join("blobs/sha256").join(e.file_name())).unwrap();
    }
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_d}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"bench"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();

    let client = RegistryClient::new(RegistryConfig::default());
    let ours: Reference = format!("{}/bench/ours:1", reg.addr()).parse().unwrap();
    let t = Instant::now();
    let rep = client
        .push(&store, &manifest_d, &ours, &PushOptions::default())
        .await
        .unwrap();
    let our_push = t.elapsed().as_secs_f64();
    assert_eq!(rep.uploaded, LAYERS + 1);

    let t = Instant::now();
    run_checked(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:bench", layout.display()))
            .arg(format!("docker://{}/bench/skopeo:1", reg.addr())),
    )
    .unwrap();
    let skopeo_push = t.elapsed().as_secs_f64();

    let dst = ContentStore::open(tmp.path().join("dst")).unwrap();
    let t = Instant::now();
    let pulled = client
        .pull(&ours, &PullOptions::default(), &dst)
        .await
        .unwrap();
    let our_pull = t.elapsed().as_secs_f64();
    assert_eq!(pulled.stats.blobs_fetched, LAYERS + 1);

    let t = Instant::now();
    run_checked(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{}/bench/skopeo:1", reg.addr()))
            .arg(format!(
                "oci:{}:bench",
                tmp.path().join("skopeo-out").display()
            )),
    )
    .unwrap();
    let skopeo_pull = t.elapsed().as_secs_f64();

    let mib = (LAYERS * LAYER_BYTES) as f64 / (1024.0 * 1024.0);
    println!(
        "image: {LAYERS} x {} MiB incompressible layers ({mib:.0} MiB)",
        LAYER_BYTES >> 20
    );
    println!("push: imgfarm {our_push:.2} s ({:.0} MiB/s), skopeo {skopeo_push:.2} s, ratio skopeo/imgfarm {:.2}", mib / our_push, skopeo_push / our_push);
    println!("pull: imgfarm {our_pull:.2} s ({:.0} MiB/s), skopeo {skopeo_pull:.2} s, ratio skopeo/imgfarm {:.2}", mib / our_pull, skopeo_pull / our_pull);
    println!(
        "peak RSS of the test process (includes the {mib:.0} MiB of generated layers): {} MiB",
        vm_hwm_kib() / 1024
    );
}
