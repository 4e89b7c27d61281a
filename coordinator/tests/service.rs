//! The coordinator service over real QUIC on loopback, with scripted
//! workers and clients speaking the protocol by hand (FARM.md flows).

mod service_common;

use imgfarm_common::farm::{self, OutputSpec, VertexResult};
use imgfarm_common::oci::image::document::from_oci_platform;
use imgfarm_common::oci::image::ImageIndex;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{BuildFinished, Message, Submit, VertexFinished};
use service_common::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn finished(msgs: &[Message]) -> BuildFinished {
    match msgs.last() {
        Some(Message::BuildFinished(f)) => f.clone(),
        other => panic!("expected BuildFinished, got {other:?}"),
    }
}

fn errors(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::VertexFinished(VertexFinished { error: Some(e), .. }) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_platform_build_runs_on_native_workers_and_ends_with_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["amd", "arm"], &["alice"]);
    let state = dir.path().join("state");
    let svc = start(options(&tls, &state)).await;
    let addr = svc.local_addr();
    let mut amd = Peer::connect(
        addr,
        &tls,
        worker_hello("amd", &["linux/amd64"], &["linux/arm64"], 2),
    )
    .await;
    let mut arm = Peer::connect(addr, &tls, worker_hello("arm", &["linux/arm64"], &[], 2)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    let b = test_build(&["linux/amd64", "linux/arm64"], "make");
    let id = submit(&mut alice, &b, &OutputSpec::default()).await;
    let (ran_amd, ran_arm) = tokio::join!(serve(&mut amd, 3), serve(&mut arm, 3));
    for r in &ran_amd {
        assert_eq!(
            r.run.platform, "linux/amd64",
            "{:?}",
            r.job.vertex.description
        );
        assert!(!r.run.emulated);
        assert_eq!(r.run.build_id, id);
    }
    for r in &ran_arm {
        assert_eq!(r.run.platform, "linux/arm64");
    }
    // The RUN job carries its inputs: the base image's result, the context
    // vertex (re-solved on the worker, no result) and the context blob.
    let run = ran_amd
        .iter()
        .find(|r| r.job.vertex.description.contains("RUN make"))
        .unwrap();
    assert_eq!(run.job.inputs.len(), 2);
    assert_eq!(run.job.input_results.len(), 1, "only the non-source input");
    assert_eq!(run.job.context, b.definition.context);

    let msgs = alice.until(is_finished).await;
    let started: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::VertexStarted(s) => Some(s.worker.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 6, "{msgs:?}");
    assert!(started.contains(&"amd".to_string()) && started.contains(&"arm".to_string()));
    let cached = msgs
        .iter()
        .filter(|m| matches!(m, Message::VertexFinished(f) if f.cached))
        .count();
    let ran = msgs
        .iter()
        .filter(|m| matches!(m, Message::VertexFinished(f) if !f.cached && f.error.is_none()))
        .count();
    assert_eq!((cached, ran), (1, 6), "the context source is done at once");
    let logs: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::VertexLog(l) => Some(String::from_utf8_lossy(&l.data).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(logs.len(), 6, "worker output is forwarded");
    assert!(
        logs.iter().any(|l| l.contains("linux/arm64 2/2] RUN make")),
        "{logs:?}"
    );
    let fin = finished(&msgs);
    assert_eq!(fin.build_id, id);
    let manifests = fin.result.clone().unwrap();
    let exported: BTreeMap<String, Digest> = ran_amd
        .iter()
        .chain(&ran_arm)
        .filter_map(|r| {
            r.result
                .manifest
                .as_ref()
                .map(|m| (r.run.platform.clone(), m.digest.clone()))
        })
        .collect();
    assert_eq!(manifests.len(), 2);
    assert_eq!(manifests[0].platform, "linux/amd64");
    for m in &manifests {
        assert_eq!(exported[&m.platform], m.manifest.digest);
    }
    // The index is in the coordinator's store and lists both platforms.
    drop(svc);
    let store = ContentStore::open(&state).unwrap();
    let index = fin.index.unwrap();
    let bytes = store.read_bytes(&index.digest, 1 << 20).unwrap();
    let idx: ImageIndex = serde_json::from_slice(&bytes).unwrap();
    let listed: Vec<(String, String)> = idx
        .manifests()
        .iter()
        .map(|d| {
            (
                from_oci_platform(d.platform().as_ref().unwrap()).to_string(),
                d.digest().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("linux/amd64".into(), exported["linux/amd64"].to_string()),
            ("linux/arm64".into(), exported["linux/arm64"].to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_worker_is_lost_and_its_vertex_runs_on_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1", "w2"], &["alice"]);
    let mut opts = options(&tls, &dir.path().join("state"));
    opts.heartbeat_timeout = Duration::from_millis(800);
    let svc = start(opts).await;
    let addr = svc.local_addr();
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 1)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    let b = test_build(&["linux/amd64"], "make");
    submit(&mut alice, &b, &OutputSpec::default()).await;
    let first = next_run(&mut w1).await;
    // w1 goes silent (no heartbeat, no answer); w2 joins and heartbeats.
    w1.heartbeat = None;
    let mut w2 = Peer::connect(addr, &tls, worker_hello("w2", &["linux/amd64"], &[], 1)).await;
    let ran = serve(&mut w2, 3).await;
    assert_eq!(ran[0].run.vertex_key, first.vertex_key, "re-dispatched");
    let msgs = alice.until(is_finished).await;
    assert!(finished(&msgs).result.is_ok(), "{msgs:?}");
    assert_eq!(w1.next().await, None, "the lost worker's session is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_a_queued_build_and_the_client_reattaches() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice"]);
    let state = dir.path().join("state");
    let svc = start(options(&tls, &state)).await;
    let mut alice = Peer::connect(svc.local_addr(), &tls, client_hello("alice")).await;
    let b = test_build(&["linux/amd64"], "make");
    let id = submit(&mut alice, &b, &OutputSpec::default()).await;
    // No worker yet: the build is queued. Restart on the same state.
    svc.shutdown().await.unwrap();
    while alice.next().await.is_some() {} // the session ends with the coordinator
    let svc = start(options(&tls, &state)).await;
    let addr = svc.local_addr();
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    alice
        .send(&Message::Submit(Submit {
            platforms: vec![],
            definition: vec![],
            context: vec![],
            output: farm::encode(&OutputSpec::default()),
            reattach: Some(id.clone()),
        }))
        .await;
    assert_eq!(
        alice.next().await,
        Some(Message::Accepted {
            build_id: id.clone()
        })
    );
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 2)).await;
    serve(&mut w1, 3).await;
    let msgs = alice.until(is_finished).await;
    let fin = finished(&msgs);
    assert_eq!(fin.build_id, id);
    assert!(fin.result.is_ok(), "{fin:?}");
    // An ended build re-attached gets its outcome at once; an unknown id is refused.
    let mut bob = Peer::connect(addr, &tls, client_hello("alice")).await;
    for (rid, want_ok) in [(id.clone(), true), ("0123456789abcdef".to_string(), false)] {
        bob.send(&Message::Submit(Submit {
            platforms: vec![],
            definition: vec![],
            context: vec![],
            output: vec![],
            reattach: Some(rid),
        }))
        .await;
        match bob.next().await {
            Some(Message::Accepted { .. }) if want_ok => {
                assert!(
                    matches!(bob.next().await, Some(Message::BuildFinished(f)) if f.result.is_ok())
                );
            }
            Some(Message::Refused(why)) if !want_ok => {
                assert!(why.contains("unknown build"), "{why}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // After a second restart (the service dropped, not shut down) the
    // result cache serves the same build at once.
    drop(svc);
    let svc = start(options(&tls, &state)).await;
    let mut alice = Peer::connect(svc.local_addr(), &tls, client_hello("alice")).await;
    submit(&mut alice, &b, &OutputSpec::default()).await;
    let msgs = alice.until(is_finished).await;
    assert!(finished(&msgs).result.is_ok());
    assert!(
        !msgs.iter().any(|m| matches!(m, Message::VertexStarted(_))),
        "nothing ran: {msgs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_vertices_of_concurrent_builds_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice", "bob"]);
    let svc = start(options(&tls, &dir.path().join("state"))).await;
    let addr = svc.local_addr();
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    let mut bob = Peer::connect(addr, &tls, client_hello("bob")).await;
    let b = test_build(&["linux/amd64"], "make");
    let a_id = submit(&mut alice, &b, &OutputSpec::default()).await;
    let b_id = submit(&mut bob, &b, &OutputSpec::default()).await;
    assert_ne!(a_id, b_id);
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 4)).await;
    let ran = serve(&mut w1, 3).await;
    let (ma, mb) = tokio::join!(alice.until(is_finished), bob.until(is_finished));
    assert!(finished(&ma).result.is_ok() && finished(&mb).result.is_ok());
    assert_eq!(finished(&ma).index, finished(&mb).index);
    // Nothing more is dispatched.
    let extra = tokio::time::timeout(Duration::from_millis(500), w1.next()).await;
    assert!(extra.is_err(), "a vertex ran twice: {extra:?}");
    let keys: std::collections::BTreeSet<_> = ran.iter().map(|r| &r.run.vertex_key).collect();
    assert_eq!(keys.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_vertices_and_ends_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice"]);
    let svc = start(options(&tls, &dir.path().join("state"))).await;
    let addr = svc.local_addr();
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 1)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    // --no-cache: the running vertex is known under a per-build key.
    let no_cache = OutputSpec {
        no_cache: true,
        ..OutputSpec::default()
    };
    let id = submit(
        &mut alice,
        &test_build(&["linux/amd64"], "sleep"),
        &no_cache,
    )
    .await;
    let run = next_run(&mut w1).await;
    alice
        .send(&Message::Cancel {
            build_id: id.clone(),
        })
        .await;
    let msgs = alice.until(is_finished).await;
    assert_eq!(
        finished(&msgs).result,
        Err("cancelled by the client".to_string())
    );
    assert_eq!(
        w1.next().await,
        Some(Message::CancelVertex {
            vertex_key: run.vertex_key.clone()
        })
    );
    answer(&mut w1, &run, Err("cancelled")).await;
    // The worker's only slot is free again: the next build runs.
    submit(
        &mut alice,
        &test_build(&["linux/amd64"], "next"),
        &OutputSpec::default(),
    )
    .await;
    let next = next_run(&mut w1).await;
    answer(&mut w1, &next, Err("stop here")).await;
    let fin = finished(&alice.until(is_finished).await)
        .result
        .unwrap_err();
    assert!(fin.contains("stop here (on worker w1)"), "{fin}");
    // The status no longer lists the build; the worker is free again.
    alice.send(&Message::StatusRequest).await;
    match alice.next().await {
        Some(Message::Status(s)) => {
            assert!(s.builds.is_empty(), "{s:?}");
            assert_eq!(s.workers.len(), 1);
            assert_eq!(s.workers[0].name, "w1");
        }
        other => panic!("expected Status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice"]);
    let svc = start(options(&tls, &dir.path().join("state"))).await;
    let mut alice = Peer::connect(svc.local_addr(), &tls, client_hello("alice")).await;
    let b = test_build(&["linux/amd64"], "make");
    let mut no_target = b.definition.clone();
    no_target.targets.clear();
    let mut forged = b.definition.clone();
    forged.vertices[2].description = "renamed is fine".into();
    if let imgfarm_common::graph::op::Op::Exec(e) = &mut forged.vertices[2].op {
        e.args.push("extra".into());
    }
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed build definition"),
        (farm::encode(&no_target), "no target platform"),
        (farm::encode(&forged), "does not match its content"),
        (
            farm::encode(&b.definition),
            "(the build context, chunk 1 of 2) — upload it first", // nothing uploaded yet
        ),
    ];
    for (definition, want) in cases {
        alice
            .send(&Message::Submit(Submit {
                platforms: vec!["linux/amd64".into()],
                definition,
                context: vec![],
                output: farm::encode(&OutputSpec::default()),
                reattach: None,
            }))
            .await;
        match alice.next().await {
            Some(Message::Refused(why)) => assert!(why.contains(want), "{why}"),
            other => panic!("expected Refused({want}), got {other:?}"),
        }
    }
    // One context chunk of two uploaded: the refusal names the other.
    alice.put_blob(&b.uploads[0]).await;
    alice
        .send(&Message::Submit(Submit {
            platforms: vec!["linux/amd64".into()],
            definition: farm::encode(&b.definition),
            context: vec![],
            output: farm::encode(&OutputSpec::default()),
            reattach: None,
        }))
        .await;
    match alice.next().await {
        Some(Message::Refused(why)) => assert!(
            why.contains("(the build context, chunk 2 of 2) — upload it first"),
            "{why}"
        ),
        other => panic!("expected Refused, got {other:?}"),
    }
    // A worker certificate cannot submit builds.
    let mut w1 = Peer::connect(
        svc.local_addr(),
        &tls,
        worker_hello("w1", &["linux/amd64"], &[], 1),
    )
    .await;
    w1.send(&Message::Submit(Submit {
        platforms: vec![],
        definition: vec![],
        context: vec![],
        output: vec![],
        reattach: None,
    }))
    .await;
    match w1.next().await {
        Some(Message::Refused(why)) => {
            assert!(why.contains("worker session cannot send Submit"), "{why}")
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_done_naming_missing_blobs_fails_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice"]);
    let svc = start(options(&tls, &dir.path().join("state"))).await;
    let addr = svc.local_addr();
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 2)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    submit(
        &mut alice,
        &test_build(&["linux/amd64"], "make"),
        &OutputSpec::default(),
    )
    .await;
    let run = next_run(&mut w1).await;
    let ghost = Digest::sha256_of(b"never uploaded");
    let bogus = VertexResult {
        base_config: Some(ghost.clone()),
        ..VertexResult::default()
    };
    answer(&mut w1, &run, Ok(&bogus)).await;
    let msgs = alice.until(is_finished).await;
    let errs = errors(&msgs);
    assert_eq!(errs.len(), 1, "{msgs:?}");
    assert!(errs[0].contains(&ghost.to_string()), "{}", errs[0]);
    assert!(
        errs[0].contains("not in the coordinator's store"),
        "{}",
        errs[0]
    );
    let fin = finished(&msgs).result.unwrap_err();
    assert!(
        fin.contains("FROM busybox") && fin.contains("failed"),
        "{fin}"
    );

    // A malformed result and a worker-side failure are reported too.
    submit(
        &mut alice,
        &test_build(&["linux/amd64"], "other"),
        &OutputSpec::default(),
    )
    .await;
    let run = next_run(&mut w1).await;
    w1.send(&Message::VertexDone(imgfarm_common::proto::VertexDone {
        vertex_key: run.vertex_key.clone(),
        result: Ok(b"[1,2".to_vec()),
        duration_ms: 1,
    }))
    .await;
    let fin = finished(&alice.until(is_finished).await)
        .result
        .unwrap_err();
    assert!(
        fin.contains("worker w1 sent a malformed vertex result"),
        "{fin}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_candidate_fails_after_the_grace_naming_platform_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice"]);
    let mut opts = options(&tls, &dir.path().join("state"));
    opts.no_candidate_grace = Duration::from_millis(600);
    let svc = start(opts).await;
    let addr = svc.local_addr();
    let _w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 2)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    submit(
        &mut alice,
        &test_build(&["linux/s390x"], "make"),
        &OutputSpec::default(),
    )
    .await;
    let fin = finished(&alice.until(is_finished).await)
        .result
        .unwrap_err();
    assert!(fin.contains("linux/s390x") && fin.contains("w1"), "{fin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_build_fails_for_lack_of_workers_right_after_a_start() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &[], &["alice"]);
    let mut opts = options(&tls, &dir.path().join("state"));
    opts.no_candidate_grace = Duration::from_millis(100);
    opts.startup_grace = Duration::from_millis(1500);
    let t0 = std::time::Instant::now();
    let svc = start(opts).await;
    let mut alice = Peer::connect(svc.local_addr(), &tls, client_hello("alice")).await;
    submit(
        &mut alice,
        &test_build(&["linux/amd64"], "make"),
        &OutputSpec::default(),
    )
    .await;
    let fin = finished(&alice.until(is_finished).await)
        .result
        .unwrap_err();
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "failed during the startup grace"
    );
    assert!(fin.contains("workers seen: none"), "{fin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_worker_connection_reschedules_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1", "w2"], &["alice"]);
    let svc = start(options(&tls, &dir.path().join("state"))).await;
    let addr = svc.local_addr();
    let w1 = {
        let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 1)).await;
        let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
        submit(
            &mut alice,
            &test_build(&["linux/amd64"], "make"),
            &OutputSpec::default(),
        )
        .await;
        let first = next_run(&mut w1).await;
        w1.conn.close(0u32.into(), b"crashed");
        (first, alice)
    };
    let (first, mut alice) = w1;
    // The heartbeat timeout is 30 s: only the closed connection can explain a quick re-dispatch.
    let t0 = std::time::Instant::now();
    let mut w2 = Peer::connect(addr, &tls, worker_hello("w2", &["linux/amd64"], &[], 1)).await;
    let ran = serve(&mut w2, 3).await;
    assert_eq!(ran[0].run.vertex_key, first.vertex_key);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(finished(&alice.until(is_finished).await).result.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_misuse_gets_a_clear_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1", "w2"], &["alice"]);
    let svc = start(options(&tls, &dir.path().join("state"))).await;
    let addr = svc.local_addr();
    // A worker offering nothing runnable is refused and dropped.
    let mut bad = Peer::connect(addr, &tls, worker_hello("w2", &["linux/"], &[], 1)).await;
    match bad.next().await {
        Some(Message::Refused(why)) => assert!(why.contains("\"linux/\""), "{why}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(bad.next().await, None);
    // Cancelling an unknown build.
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    alice
        .send(&Message::Cancel {
            build_id: "nope".into(),
        })
        .await;
    match alice.next().await {
        Some(Message::Refused(why)) => assert!(why.contains("unknown build nope"), "{why}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    // An export vertex whose result has no manifest fails the build.
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 2)).await;
    submit(
        &mut alice,
        &test_build(&["linux/amd64"], "make"),
        &OutputSpec::default(),
    )
    .await;
    for _ in 0..3 {
        let run = next_run(&mut w1).await;
        answer(&mut w1, &run, Ok(&VertexResult::default())).await;
    }
    let fin = finished(&alice.until(is_finished).await)
        .result
        .unwrap_err();
    assert!(fin.contains("returned no image manifest"), "{fin}");
}

fn url_vertex(pinned: bool) -> imgfarm_common::graph::Vertex {
    use imgfarm_common::graph::op::{Op, UrlOp};
    imgfarm_common::graph::Vertex::new(
        None,
        Op::Url(UrlOp {
            url: "http://127.0.0.1:9/file".into(),
            filename: "file".into(),
            checksum: pinned.then(|| Digest::sha256_of(b"file")),
            content_addressed: pinned,
        }),
        vec![],
        "ADD http://127.0.0.1:9/file".into(),
        3,
    )
}

/// Submits `b`, serves what is dispatched, returns the descriptions run.
async fn run_once(alice: &mut Peer, w1: &mut Peer, b: &TestBuild, out: &OutputSpec) -> Vec<String> {
    submit(alice, b, out).await;
    let mut ran = Vec::new();
    loop {
        tokio::select! {
            m = w1.next() => match m {
                Some(Message::RunVertex(run)) => {
                    let (job, result) = produce(w1, &run).await;
                    answer(w1, &run, Ok(&result)).await;
                    ran.push(job.vertex.description);
                }
                other => panic!("worker got {other:?}"),
            },
            m = alice.next() => match m {
                Some(Message::BuildFinished(f)) => {
                    assert!(f.result.is_ok(), "{f:?}");
                    return ran;
                }
                Some(_) => {}
                None => panic!("client session closed"),
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_cache_is_skipped_for_no_cache_and_unpinned_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice"]);
    let svc = start(options(&tls, &dir.path().join("state"))).await;
    let addr = svc.local_addr();
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 2)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    let plain = OutputSpec::default();
    let no_cache = OutputSpec {
        no_cache: true,
        ..OutputSpec::default()
    };
    let b = test_build(&["linux/amd64"], "make");
    assert_eq!(run_once(&mut alice, &mut w1, &b, &plain).await.len(), 3);
    assert!(
        run_once(&mut alice, &mut w1, &b, &plain).await.is_empty(),
        "cached"
    );
    assert_eq!(
        run_once(&mut alice, &mut w1, &b, &no_cache).await.len(),
        3,
        "--no-cache"
    );

    // Downstream of an ADD URL without checksum: RUN and export run every
    // time; the base image (already built above) is reused. With a checksum
    // everything is reused.
    let unpinned = test_build_with(&["linux/amd64"], "fetch", Some(url_vertex(false)));
    assert_eq!(
        run_once(&mut alice, &mut w1, &unpinned, &plain).await.len(),
        2
    );
    let again = run_once(&mut alice, &mut w1, &unpinned, &plain).await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().all(|d| !d.contains("FROM")), "{again:?}");
    let pinned = test_build_with(&["linux/amd64"], "fetch", Some(url_vertex(true)));
    assert_eq!(
        run_once(&mut alice, &mut w1, &pinned, &plain).await.len(),
        2
    );
    assert!(run_once(&mut alice, &mut w1, &pinned, &plain)
        .await
        .is_empty());
}

/// Issue 15, finding 8, through the real service: a build whose client
/// died is cancelled once the client grace passes (its running step is
/// cancelled on the worker), and a step past `--step-timeout` is cancelled
/// and fails its build, naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_builds_and_overlong_steps_are_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice"]);
    let mut opts = options(&tls, &dir.path().join("state"));
    opts.client_grace = std::time::Duration::from_secs(1);
    let svc = start(opts).await;
    let addr = svc.local_addr();
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 1)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    submit(
        &mut alice,
        &test_build(&["linux/amd64"], "orphan"),
        &OutputSpec::default(),
    )
    .await;
    let run = next_run(&mut w1).await;
    drop(alice);
    let cancel = tokio::time::timeout(std::time::Duration::from_secs(10), w1.next())
        .await
        .expect("the orphaned build's step is cancelled after the grace");
    assert_eq!(
        cancel,
        Some(Message::CancelVertex {
            vertex_key: run.vertex_key.clone()
        })
    );
    answer(&mut w1, &run, Err("cancelled")).await;

    let mut bob = Peer::connect(addr, &tls, client_hello("alice")).await;
    let limited = OutputSpec {
        step_timeout_secs: Some(1),
        ..OutputSpec::default()
    };
    submit(&mut bob, &test_build(&["linux/amd64"], "hangs"), &limited).await;
    let run = next_run(&mut w1).await;
    let msgs = bob.until(is_finished).await;
    let e = finished(&msgs).result.unwrap_err();
    assert!(e.contains("time limit of 1 s (--step-timeout)"), "{e}");
    assert_eq!(
        w1.next().await,
        Some(Message::CancelVertex {
            vertex_key: run.vertex_key.clone()
        })
    );
}

/// Issue 15, hostile input: garbage datagrams at the coordinator's port
/// (random bytes, truncated and oversized packets, packets shaped like QUIC
/// long and short headers) neither stop it nor disturb a build running
/// meanwhile, and open no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_do_not_disturb_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice"]);
    let svc = start(options(&tls, &dir.path().join("state"))).await;
    let addr = svc.local_addr();
    let noise = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let spray = |n: usize, next: &mut dyn FnMut() -> u64| {
        for i in 0..n {
            let len = [0usize, 1, 20, 1200, 1500, 65_000][i % 6] + (next() % 40) as usize;
            let mut pkt: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = pkt.first_mut() {
                // Alternate long-header (0xc0) and short-header (0x40) shapes.
                *first = if i % 2 == 0 {
                    0xc0 | (*first & 0x0f)
                } else {
                    0x40 | (*first & 0x3f)
                };
            }
            let _ = noise.send_to(&pkt, addr);
        }
    };
    spray(3000, &mut next);
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 1)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    let b = test_build(&["linux/amd64"], "noisy");
    submit(&mut alice, &b, &OutputSpec::default()).await;
    spray(3000, &mut next);
    let ran = serve(&mut w1, 3).await;
    assert_eq!(ran.len(), 3);
    let msgs = alice.until(is_finished).await;
    assert!(finished(&msgs).result.is_ok(), "{msgs:?}");
    assert_eq!(svc.stats().sessions, 2, "the noise opened no session");
}

/// Every blob in the coordinator's store hashes to its name.
fn store_verifies(state: &std::path::Path) -> usize {
    let dir = state.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        let name = format!("sha256:{}", e.file_name().to_string_lossy());
        assert_eq!(
            Digest::sha256_of(&bytes).to_string(),
            name,
            "a stored blob fails its digest"
        );
        n += 1;
    }
    n
}

/// Issue 15, hostile input: peers holding valid farm certificates that lie.
/// A worker uploads blobs whose bytes do not match the digest or size it
/// announced, finishes vertices it was never given (unknown keys, and a
/// vertex running on another worker), and sends client messages; a client
/// sends worker messages. Each lie is refused or ignored, nothing bad is
/// stored, and a build by honest peers running meanwhile succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certified_peers_that_lie_store_nothing_and_disturb_no_one() {
    use imgfarm_common::proto::{BlobHeader, BlobPutReply, BlobPutResult, VertexDone};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let tls = make_farm(
        &dir.path().join("tls"),
        &["w1", "liar"],
        &["alice", "mallory"],
    );
    let svc = start(options(&tls, &state)).await;
    let addr = svc.local_addr();
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 1)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    let mut mallory = Peer::connect(addr, &tls, client_hello("mallory")).await;
    // The liar offers a platform nobody builds here, so it is never given work.
    let mut liar = Peer::connect(addr, &tls, worker_hello("liar", &["linux/s390x"], &[], 4)).await;

    let b = test_build(&["linux/amd64"], "honest");
    submit(&mut alice, &b, &OutputSpec::default()).await;
    let first = next_run(&mut w1).await;

    // Blobs whose bytes are not what the header says.
    let real = b"the real bytes".to_vec();
    let lies: Vec<(&str, BlobHeader, Vec<u8>)> = vec![
        (
            "same size, other bytes",
            BlobHeader {
                digest: Digest::sha256_of(&real),
                size: real.len() as u64,
            },
            b"the fake bytes".to_vec(),
        ),
        (
            "more bytes than announced",
            BlobHeader {
                digest: Digest::sha256_of(&real),
                size: real.len() as u64,
            },
            [&real[..], b"and more"].concat(),
        ),
        (
            "fewer bytes than announced",
            BlobHeader {
                digest: Digest::sha256_of(&real),
                size: real.len() as u64 + 100,
            },
            real.clone(),
        ),
    ];
    for (what, header, bytes) in &lies {
        for peer in [&liar, &mallory] {
            let (reply, verdict) = peer.put_raw_blob(header, bytes).await;
            assert_eq!(reply, BlobPutReply::Send, "{what}");
            match verdict {
                Some(BlobPutResult::Rejected(why)) => assert!(!why.is_empty(), "{what}"),
                None => {} // the stream was cut: also a refusal
                Some(BlobPutResult::Stored) => panic!("{what}: a lying blob was stored"),
            }
        }
        let store = ContentStore::open(&state).unwrap();
        assert!(!store.contains(&header.digest), "{what}: stored");
    }

    // Finishing vertices it was never given: an unknown key, and w1's.
    let forged = farm::encode(&VertexResult {
        base_config: Some(Digest::sha256_of(b"planted")),
        ..VertexResult::default()
    });
    for key in [
        Digest::sha256_of(b"no such vertex"),
        first.vertex_key.clone(),
    ] {
        liar.send(&Message::VertexDone(VertexDone {
            vertex_key: key,
            result: Ok(forged.clone()),
            duration_ms: 1,
        }))
        .await;
        liar.send(&Message::VertexDone(VertexDone {
            vertex_key: first.vertex_key.clone(),
            result: Err("sabotage".into()),
            duration_ms: 1,
        }))
        .await;
    }
    // Messages of the other role: refused with the reason, session kept.
    liar.send(&Message::Submit(Submit {
        platforms: vec!["linux/amd64".into()],
        definition: b"{}".to_vec(),
        context: vec![],
        output: farm::encode(&OutputSpec::default()),
        reattach: None,
    }))
    .await;
    mallory
        .send(&Message::VertexDone(VertexDone {
            vertex_key: first.vertex_key.clone(),
            result: Err("sabotage".into()),
            duration_ms: 1,
        }))
        .await;
    match mallory.next().await {
        Some(Message::Refused(why)) => assert!(
            why.contains("client session cannot send VertexDone"),
            "{why}"
        ),
        other => panic!("expected Refused, got {other:?}"),
    }
    match liar.next().await {
        Some(Message::Refused(why)) => {
            assert!(why.contains("worker session cannot send Submit"), "{why}")
        }
        other => panic!("expected Refused, got {other:?}"),
    }

    // The honest build is undisturbed: w1 runs its three vertices.
    let (_, result) = produce(&w1, &first).await;
    answer(&mut w1, &first, Ok(&result)).await;
    let ran = serve(&mut w1, 2).await;
    assert_eq!(ran.len(), 2);
    let msgs = alice.until(is_finished).await;
    assert!(errors(&msgs).is_empty(), "{msgs:?}");
    assert!(finished(&msgs).result.is_ok(), "{msgs:?}");
    // Both liars are still connected and answered.
    mallory.send(&Message::StatusRequest).await;
    assert!(matches!(mallory.next().await, Some(Message::Status(_))));
    drop(svc);
    let n = store_verifies(&state);
    assert!(n >= 4, "the honest build's blobs are stored ({n})");
    let store = ContentStore::open(&state).unwrap();
    assert!(!store.contains(&Digest::sha256_of(b"planted")));
}
