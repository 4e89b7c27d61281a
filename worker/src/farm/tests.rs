//! Unit tests of the farm worker's pure parts: platform announcement, job
//! checks, cache rules, blob lists and the event line.

use super::cache::{fingerprint, lookup, summary, Fingerprints};
use super::fetch::{manifests_to_read, needed_blobs};
use super::job::{cacheable, check, check_entitlements};
use super::platforms::{emulated, native, offers};
use super::WorkerEvent;
use crate::emulation::{EmulationError, EmulationMode};
use crate::solve::result::{LayerRef, ResultCache, VertexResult};
use imgfarm_common::dockerfile::frontend::{
    build_graph, BuildRequest, ContextSelector, ResolvedImage,
};
use imgfarm_common::dockerfile::parser::parse_named;
use imgfarm_common::farm::{encode, ContextBlob, VertexJob};
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::BTreeMap;

fn amd64() -> Platform {
    Platform::linux_amd64()
}

fn arm64() -> Platform {
    Platform::linux_arm64()
}

/// A host that is amd64 and has qemu for arm64 only.
fn amd64_host_with_arm64_qemu(p: &Platform) -> Result<EmulationMode, EmulationError> {
    match p.architecture.as_str() {
        "amd64" | "386" => Ok(EmulationMode::Native),
        "arm64" => Ok(EmulationMode::HostBinfmt("qemu-aarch64".into())),
        _ => Err(EmulationError::NoEmulator {
            platform: p.to_string(),
        }),
    }
}

#[test]
fn emulated_platforms_are_those_whose_emulation_resolves() {
    let native = vec![amd64(), Platform::new("linux", "386", "")];
    assert_eq!(emulated(&native, amd64_host_with_arm64_qemu), vec![arm64()]);
    assert!(emulated(&native, |p| Err(EmulationError::NoEmulator {
        platform: p.to_string()
    }))
    .is_empty());
}

#[test]
fn platforms_override_does_not_offer_the_host_as_emulated() {
    let native = native(Some(&[arm64()]));
    assert_eq!(native, vec![arm64()]);
    // amd64 resolves as native on the host: not an emulated offer; arm64 is native now.
    assert!(emulated(&native, amd64_host_with_arm64_qemu).is_empty());
    assert!(offers(&native, &[], &arm64()));
    assert!(!offers(&native, &[], &amd64()));
    assert!(offers(&[amd64()], &[arm64()], &arm64()));
}

#[test]
fn connected_line() {
    let e = WorkerEvent::Connected {
        name: "w1".into(),
        coordinator: "quic://127.0.0.1:7443".into(),
        native: vec![amd64(), Platform::new("linux", "386", "")],
        emulated: vec![],
    };
    assert_eq!(
        e.to_string(),
        "worker w1 connected to quic://127.0.0.1:7443 (native linux/amd64, linux/386; emulated none)"
    );
}

struct Sel;

impl ContextSelector for Sel {
    fn select(&self, sources: &[String], excludes: &[String]) -> Result<Digest, String> {
        Ok(Digest::sha256_of(
            format!("{sources:?}{excludes:?}").as_bytes(),
        ))
    }
}

fn manifest_digest() -> Digest {
    Digest::sha256_of(b"manifest")
}

fn graph(dockerfile: &str) -> BuildGraph {
    let parsed = parse_named(dockerfile.as_bytes(), "Dockerfile").expect("parse");
    let mut resolved = BTreeMap::new();
    resolved.insert(
        ("docker.io/library/busybox:latest".to_string(), amd64()),
        ResolvedImage {
            digest: manifest_digest(),
            config: Default::default(),
        },
    );
    build_graph(&BuildRequest {
        dockerfile: &parsed,
        file_name: "Dockerfile".into(),
        build_args: BTreeMap::new(),
        target: None,
        platforms: vec![amd64()],
        build_platform: amd64(),
        labels: BTreeMap::new(),
        context: &Sel,
        resolved_images: resolved,
    })
    .expect("graph")
}

fn layer(name: &str) -> LayerRef {
    LayerRef {
        digest: Digest::sha256_of(name.as_bytes()),
        diff_id: Digest::sha256_of(format!("diff {name}").as_bytes()),
        size: 10,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    }
}

/// The job for the graph's vertex of `kind` (first one), every non-source
/// input given a one-layer result.
fn job_of(g: &BuildGraph, kind: &str) -> VertexJob {
    let v = g
        .vertices()
        .into_iter()
        .find(|v| v.op.kind() == kind)
        .expect("vertex of kind")
        .clone();
    let inputs: Vec<_> = v
        .inputs
        .iter()
        .map(|k| g.vertex(k).expect("input").clone())
        .collect();
    let input_results = inputs
        .iter()
        .filter(|i| !i.op.is_source())
        .map(|i| {
            let l = layer(i.key.as_str());
            (
                i.key.clone(),
                VertexResult {
                    chain: vec![l.clone()],
                    delta: vec![l],
                    ..VertexResult::default()
                },
            )
        })
        .collect();
    VertexJob {
        vertex: v,
        inputs,
        input_results,
        context: None,
        no_cache: false,
    }
}

const DOCKERFILE: &str = "FROM busybox\nCOPY a.txt /a.txt\nRUN echo hi > /f\n";

fn checked(job: &VertexJob) -> Result<VertexJob, String> {
    check(&job.vertex.key, &encode(job), &[amd64()], &[])
}

#[test]
fn a_well_formed_job_passes_and_round_trips_its_keys() {
    let g = graph(DOCKERFILE);
    for kind in ["image", "file", "exec", "export"] {
        let job = job_of(&g, kind);
        assert_eq!(checked(&job).expect(kind), job);
    }
}

#[test]
fn malformed_and_mismatched_jobs_are_refused() {
    let g = graph(DOCKERFILE);
    let job = job_of(&g, "exec");
    let key = job.vertex.key.clone();
    let e = check(&key, b"{not json", &[amd64()], &[]).unwrap_err();
    assert!(e.starts_with("malformed vertex job:"), "{e}");

    let other = Digest::sha256_of(b"other");
    let e = check(&other, &encode(&job), &[amd64()], &[]).unwrap_err();
    assert!(e.contains("but RunVertex names"), "{e}");

    let mut tampered = job.clone();
    if let imgfarm_common::graph::op::Op::Exec(e) = &mut tampered.vertex.op {
        e.args.push("rm -rf /".into());
    }
    let e = checked(&tampered).unwrap_err();
    assert!(e.contains("does not match its content"), "{e}");

    let mut no_result = job.clone();
    no_result.input_results.clear();
    let e = checked(&no_result).unwrap_err();
    assert!(e.contains("lacks the result of input"), "{e}");

    let mut no_input = job.clone();
    no_input.inputs.clear();
    let e = checked(&no_input).unwrap_err();
    assert!(e.contains("lacks input vertex"), "{e}");

    let e = check(&key, &encode(&job), &[arm64()], &[]).unwrap_err();
    assert_eq!(
        e,
        "this worker does not run linux/amd64 (native: linux/arm64; emulated: none)"
    );
}

#[test]
fn a_job_needing_an_entitlement_the_operator_does_not_allow_is_refused() {
    use imgfarm_common::entitlement::{Entitlement, Entitlements};
    let g = graph("FROM busybox\nRUN --network=host echo hi > /f\n");
    let job = job_of(&g, "exec");
    let e = check_entitlements(&job, "w1", &Entitlements::none()).unwrap_err();
    assert!(e.contains("RUN --network=host"), "{e}");
    assert!(e.contains("worker w1 does not allow"), "{e}");
    assert!(e.contains("--allow-entitlement network.host"), "{e}");
    let allowed: Entitlements = [Entitlement::NetworkHost].into_iter().collect();
    check_entitlements(&job, "w1", &allowed).expect("allowed");
    // A step on the default network needs nothing.
    let plain = job_of(&graph(DOCKERFILE), "exec");
    check_entitlements(&plain, "w1", &Entitlements::none()).expect("no entitlement needed");
}

#[test]
fn sources_and_unresolved_images_are_not_run() {
    let g = graph(DOCKERFILE);
    let ctx = job_of(&g, "context");
    let e = checked(&ctx).unwrap_err();
    assert!(e.contains("is a context source"), "{e}");

    let g = graph("FROM busybox\nRUN true\n");
    let mut img = job_of(&g, "image");
    if let imgfarm_common::graph::op::Op::Image(i) = &mut img.vertex.op {
        i.digest = None;
    }
    let v = &img.vertex;
    img.vertex.key = imgfarm_common::graph::key::vertex_key(v.platform.as_ref(), &v.op, &v.inputs);
    let e = checked(&img).unwrap_err();
    assert!(e.contains("has no manifest digest"), "{e}");
}

#[test]
fn required_secrets_are_refused_optional_ones_pass() {
    let g =
        graph("FROM busybox\nRUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok\n");
    let e = checked(&job_of(&g, "exec")).unwrap_err();
    assert_eq!(
        e,
        "RUN --mount=type=secret,id=tok: secrets are not supported on the farm yet; build \
         locally, or make the mount optional (required=false)"
    );
    let g = graph("FROM busybox\nRUN --mount=type=secret,id=tok true\n");
    checked(&job_of(&g, "exec")).expect("optional secret");
}

#[test]
fn url_inputs_without_checksum_are_never_cached() {
    let g = graph("FROM busybox\nADD http://127.0.0.1:1/x /x\n");
    assert!(!cacheable(&job_of(&g, "file")));
    let g = graph(DOCKERFILE);
    assert!(cacheable(&job_of(&g, "file")));
}

#[test]
fn blob_lists_name_context_inputs_and_manifests() {
    let g = graph(DOCKERFILE);
    let mut job = job_of(&g, "file");
    let chunks = vec![layer("context 1"), layer("context 2")];
    job.context = Some(ContextBlob {
        chunks: chunks.clone(),
    });
    let needed = needed_blobs(&job);
    assert_eq!(needed[0].digest, chunks[0].digest);
    assert_eq!(needed[0].why, "the build context (chunk 1 of 2)");
    assert_eq!(needed[1].digest, chunks[1].digest);
    assert_eq!(needed[1].why, "the build context (chunk 2 of 2)");
    assert_eq!(needed.len(), 3, "{needed:?}");
    assert!(needed[2].why.starts_with("the result of input sha256:"));

    let img = job_of(&g, "image");
    let needed = needed_blobs(&img);
    assert_eq!(needed.len(), 1);
    assert_eq!(needed[0].digest, manifest_digest());
    assert_eq!(manifests_to_read(&img).len(), 1);
}

#[test]
fn fingerprints_ignore_order() {
    let a = (Digest::sha256_of(b"a"), VertexResult::default());
    let b = (
        Digest::sha256_of(b"b"),
        VertexResult {
            chain: vec![layer("b")],
            ..VertexResult::default()
        },
    );
    assert_eq!(
        fingerprint(&[a.clone(), b.clone()]),
        fingerprint(&[b.clone(), a.clone()])
    );
    assert_ne!(fingerprint(std::slice::from_ref(&a)), fingerprint(&[a, b]));
}

#[test]
fn cache_serves_only_complete_results_for_the_same_inputs() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = ContentStore::open(dir.path()).expect("store");
    let cache = ResultCache::open(dir.path()).expect("cache");
    let fps = Fingerprints::new(dir.path());
    let blob = store.put_bytes(b"layer bytes").expect("put");
    let present = VertexResult {
        chain: vec![LayerRef {
            digest: blob.clone(),
            ..layer("p")
        }],
        ..VertexResult::default()
    };
    let missing = VertexResult {
        chain: vec![layer("gone")],
        ..VertexResult::default()
    };
    let (k1, k2) = (Digest::sha256_of(b"k1"), Digest::sha256_of(b"k2"));
    cache.put(&k1, &present).expect("put k1");
    cache.put(&k2, &missing).expect("put k2");
    let s = summary(&store, &cache);
    assert_eq!(s.keys, vec![k1.clone()]);
    assert_eq!(s.entries, 1);
    assert_eq!(s.bytes, b"layer bytes".len() as u64);

    let fp = fingerprint(&[]);
    assert!(
        lookup(&store, &cache, &fps, &k1, &fp).is_none(),
        "no fingerprint yet"
    );
    fps.put(&k1, &fp).expect("fp");
    fps.put(&k2, &fp).expect("fp");
    assert_eq!(lookup(&store, &cache, &fps, &k1, &fp), Some(present));
    assert!(
        lookup(&store, &cache, &fps, &k2, &fp).is_none(),
        "blob missing"
    );
    let other = fingerprint(&[(k2.clone(), VertexResult::default())]);
    assert!(
        lookup(&store, &cache, &fps, &k1, &other).is_none(),
        "other inputs"
    );
}

#[test]
fn cache_keys_skip_foreign_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = ResultCache::open(dir.path()).expect("cache");
    let k = Digest::sha256_of(b"k");
    cache.put(&k, &VertexResult::default()).expect("put");
    let vdir = dir.path().join("cache").join("vertices");
    std::fs::write(vdir.join("notes.txt"), b"x").expect("w");
    std::fs::write(vdir.join("../../x.json"), b"x").expect("w");
    std::fs::write(vdir.join("ABC.json"), b"x").expect("w");
    assert_eq!(cache.keys(10), vec![k]);
    assert!(cache.keys(0).is_empty());
}

#[test]
fn logs_go_out_in_bounded_chunks_until_cancelled() {
    use imgfarm_common::proto::Message;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let cancelled = Arc::new(AtomicBool::new(false));
    let key = Digest::sha256_of(b"k");
    let mut log = super::job::log_sender(tx, key.clone(), Arc::clone(&cancelled));
    let big = vec![b'x'; 2 * super::MAX_LOG_CHUNK + 10];
    log(&big);
    let mut sizes = Vec::new();
    while let Ok(Message::VertexLog(l)) = rx.try_recv() {
        assert_eq!((&l.vertex_key, l.stream), (&key, 1));
        sizes.push(l.data.len());
    }
    assert_eq!(sizes, vec![super::MAX_LOG_CHUNK, super::MAX_LOG_CHUNK, 10]);
    cancelled.store(true, Ordering::SeqCst);
    log(b"after the cancel");
    assert!(rx.try_recv().is_err());
}

/// A chunk layer in `store` holding `files` (path, body).
fn chunk_in(store: &ContentStore, files: &[(&str, &str)]) -> LayerRef {
    let dir = tempfile::tempdir().unwrap();
    for (p, body) in files {
        let p = dir.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let opts = imgfarm_common::oci::layer::CreateOptions::default();
    LayerRef::from(imgfarm_common::oci::layer::create(store, dir.path(), &opts).unwrap())
}

#[test]
fn context_chunks_are_applied_in_order_once_per_chunk_list() {
    use super::context::{context_dir, open_context};
    let state = tempfile::tempdir().unwrap();
    let store = ContentStore::open(state.path()).unwrap();
    let ctx = ContextBlob {
        chunks: vec![
            chunk_in(&store, &[("src/a.txt", "first"), ("b.txt", "old")]),
            chunk_in(&store, &[("src/c.txt", "second"), ("b.txt", "new")]),
        ],
    };
    let opened = open_context(&store, state.path(), Some(&ctx)).unwrap();
    let dir = context_dir(state.path(), Some(&ctx));
    assert_eq!(opened.root(), dir);
    assert!(dir.ends_with(ctx.id().hex()));
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    assert_eq!(
        (read("src/a.txt"), read("src/c.txt"), read("b.txt")),
        ("first".into(), "second".into(), "new".into()),
        "later chunks apply over earlier ones"
    );

    // Another chunk list is another directory; a missing chunk blob fails
    // with the chunk named and leaves no directory behind.
    let missing = LayerRef {
        digest: Digest::sha256_of(b"never stored"),
        ..ctx.chunks[0].clone()
    };
    let broken = ContextBlob {
        chunks: vec![ctx.chunks[0].clone(), missing.clone()],
    };
    let err = open_context(&store, state.path(), Some(&broken)).unwrap_err();
    assert!(err.contains("unpacking the chunks"), "{err}");
    assert!(err.contains("open context chunk"), "{err}");
    assert!(err.contains(missing.digest.hex()), "{err}");
    assert!(!context_dir(state.path(), Some(&broken)).exists());
}

/// A RUN that fails under qemu, or whose upload fails after it ran under
/// qemu, is counted as emulated, not native.
#[tokio::test]
async fn failed_emulated_step_is_counted_as_emulated() {
    use super::job::conclude;
    use crate::metrics::{JobOutcome, WorkerGauges, WorkerMetrics};
    let m = WorkerMetrics::new(0);
    let run_failed = conclude(Err("exit code 1".into()), true, async |_| Ok(())).await;
    let upload_failed = conclude(Ok(VertexResult::default()), true, async |_| {
        Err("upload: connection lost".to_string())
    })
    .await;
    for o in [run_failed, upload_failed] {
        assert!(o.result.is_err());
        assert!(o.emulated, "a failure after an emulated run lost its label");
        m.vertex_ended(
            "linux/arm64",
            o.emulated,
            o.cached,
            JobOutcome::Failed,
            std::time::Duration::from_secs(1),
        );
    }
    let text = m.render(WorkerGauges::default());
    assert!(
        text.contains("imgfarm_worker_vertex_duration_seconds_count{platform=\"linux/arm64\",emulation=\"emulated\",cached=\"false\",outcome=\"failed\"} 2"),
        "{text}"
    );
    assert!(!text.contains("emulation=\"native\""), "{text}");
}
