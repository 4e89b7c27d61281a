//! Benchmarks of the coordinator service (ignored by default; run by
//! `bench/coordinator_service.sh` in release):
//! - `rss_with_1000_queued_vertices`: the process's VmRSS with a
//!   1,000-vertex build queued and no worker (issue 6 target ≤ 100 MB);
//! - `scheduling_overhead_per_vertex`: a chain of vertices through one
//!   scripted worker that answers at once, so the time per vertex is the
//!   coordinator's overhead plus one loopback round trip (target ≤ 5 ms).

mod service_common;

use imgfarm_common::farm::{FarmDefinition, FarmTarget, OutputSpec, VertexResult};
use imgfarm_common::graph::image_config::StageConfig;
use imgfarm_common::graph::op::{ExecOp, ExportOp, ImageOp, Op};
use imgfarm_common::graph::Vertex;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::Message;
use service_common::*;
use std::time::{Duration, Instant};

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Base image → `n - 2` chained RUN steps → export, all linux/amd64.
fn chain(n: usize, tag: &str) -> TestBuild {
    let p = Platform::linux_amd64();
    let manifest = format!("base manifest {tag}").into_bytes();
    let img = Vertex::new(
        Some(p.clone()),
        Op::Image(ImageOp {
            reference: "docker.io/library/busybox:1".into(),
            digest: Some(Digest::sha256_of(&manifest)),
        }),
        vec![],
        "FROM busybox".into(),
        1,
    );
    let mut vertices = vec![img.clone()];
    let mut last = img.key.clone();
    for i in 0..n.saturating_sub(2) {
        let v = Vertex::new(
            Some(p.clone()),
            Op::Exec(ExecOp {
                root: Some(0),
                args: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("echo step {i} of {tag} >> /log"),
                ],
                env: vec!["PATH=/usr/bin:/bin".into()],
                cwd: "/".into(),
                user: String::new(),
                mounts: vec![],
                network: Default::default(),
                security: Default::default(),
            }),
            vec![last.clone()],
            format!("[{} / {n}] RUN echo step {i}", i + 2),
            i + 2,
        );
        last = v.key.clone();
        vertices.push(v);
    }
    let export = Vertex::new(
        Some(p.clone()),
        Op::Export(Box::new(ExportOp {
            stage: "final".into(),
            config: StageConfig::default(),
            base_image: Some(0),
        })),
        vec![img.key.clone(), last],
        "exporting".into(),
        0,
    );
    let target = FarmTarget {
        platform: p.to_string(),
        export: export.key.clone(),
    };
    vertices.push(export);
    TestBuild {
        definition: FarmDefinition {
            vertices,
            targets: vec![target],
            context: None,
            title: format!("chain {tag}"),
        },
        uploads: vec![manifest],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/coordinator_service.sh"]
async fn rss_with_1000_queued_vertices() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &[], &["alice"]);
    let before = vm_rss_kib();
    let mut opts = options(&tls, &dir.path().join("state"));
    opts.no_candidate_grace = Duration::from_secs(3600);
    let svc = start(opts).await;
    let mut alice = Peer::connect(svc.local_addr(), &tls, client_hello("alice")).await;
    let started = vm_rss_kib();
    let b = chain(1000, "rss");
    submit(&mut alice, &b, &OutputSpec::default()).await;
    alice.send(&Message::StatusRequest).await;
    let status = loop {
        if let Some(Message::Status(s)) = alice.next().await {
            break s;
        }
    };
    assert_eq!(status.builds[0].vertices_total, 1000);
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = vm_rss_kib();
    println!("VmRSS before start: {:.1} MB", before as f64 / 1024.0);
    println!(
        "VmRSS coordinator started: {:.1} MB",
        started as f64 / 1024.0
    );
    println!(
        "VmRSS with 1000 queued vertices: {:.1} MB (+{:.1} MB for the build)",
        queued as f64 / 1024.0,
        queued.saturating_sub(started) as f64 / 1024.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/coordinator_service.sh"]
async fn scheduling_overhead_per_vertex() {
    let n: usize = std::env::var("IMGFARM_BENCH_VERTICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice"]);
    let svc = start(options(&tls, &dir.path().join("state"))).await;
    let addr = svc.local_addr();
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 4)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    let b = chain(n, "overhead");
    let t0 = Instant::now();
    submit(&mut alice, &b, &OutputSpec::default()).await;
    let worker = async {
        for _ in 0..n {
            let run = next_run(&mut w1).await;
            if run.vertex_key == b.definition.targets[0].export {
                let (_, r) = produce(&w1, &run).await;
                answer(&mut w1, &run, Ok(&r)).await;
            } else {
                answer(&mut w1, &run, Ok(&VertexResult::default())).await;
            }
        }
    };
    let (_, msgs) = tokio::join!(worker, alice.until(is_finished));
    let total = t0.elapsed();
    assert!(matches!(msgs.last(), Some(Message::BuildFinished(f)) if f.result.is_ok()));
    println!(
        "{n} chained vertices in {:.3} s: {:.3} ms per vertex (dispatch, loopback round trip, result check, sqlite write, progress to the client)",
        total.as_secs_f64(),
        total.as_secs_f64() * 1000.0 / n as f64
    );
}
