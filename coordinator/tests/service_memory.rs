//! A long-running coordinator stays bounded (real QUIC on loopback,
//! scripted workers and clients): every build's vertices leave the
//! scheduler once it ends, and a client that stops reading is dropped,
//! told why, while the other builds go on.

mod service_common;

use imgfarm_common::farm::{self, OutputSpec};
use imgfarm_common::proto::{BuildFinished, Message, Submit, VertexLog};
use imgfarm_coordinator::service::{Service, ServiceStats};
use service_common::*;
use std::time::Duration;

fn finished(msgs: &[Message]) -> BuildFinished {
    match msgs.last() {
        Some(Message::BuildFinished(f)) => f.clone(),
        other => panic!("expected BuildFinished, got {other:?}"),
    }
}

/// Waits until the service's stats satisfy `ok` (they are a snapshot taken
/// after each turn of its loop).
async fn stats_until(svc: &Service, ok: impl Fn(&ServiceStats) -> bool) -> ServiceStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = svc.stats();
        if ok(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never matched: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn idle(svc: &Service) {
    stats_until(svc, |s| {
        s.scheduler_keys == 0 && s.running == 0 && s.active_builds == 0
    })
    .await;
}

/// Submits `b`, serves what is dispatched (failing RUN when `fail_run`),
/// returns the outcome and how many vertices ran.
async fn run_once(
    alice: &mut Peer,
    w1: &mut Peer,
    b: &TestBuild,
    out: &OutputSpec,
    fail_run: bool,
) -> (Result<(), String>, usize) {
    submit(alice, b, out).await;
    let mut ran = 0;
    loop {
        tokio::select! {
            m = w1.next() => match m {
                Some(Message::RunVertex(run)) => {
                    let (job, result) = produce(w1, &run).await;
                    ran += 1;
                    if fail_run && job.vertex.description.contains("RUN") {
                        answer(w1, &run, Err("exit status 1")).await;
                    } else {
                        answer(w1, &run, Ok(&result)).await;
                    }
                }
                other => panic!("worker got {other:?}"),
            },
            m = alice.next() => match m {
                Some(Message::BuildFinished(f)) => return (f.result.map(|_| ()), ran),
                Some(_) => {}
                None => panic!("client session closed"),
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_forgets_every_build_once_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice", "bob"]);
    let svc = start(options(&tls, &dir.path().join("state"))).await;
    let addr = svc.local_addr();
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 4)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    let plain = OutputSpec::default();
    let no_cache = OutputSpec {
        no_cache: true,
        ..OutputSpec::default()
    };
    // Sequential builds of every kind: run, cached, --no-cache (keys salted
    // with the build id), failed. After each, nothing is left.
    for round in 0..3 {
        let b = test_build(&["linux/amd64"], &format!("make {round}"));
        let (r, ran) = run_once(&mut alice, &mut w1, &b, &plain, false).await;
        assert!(
            r.is_ok() && ran == 3 - usize::from(round > 0),
            "{r:?} {ran}"
        );
        idle(&svc).await;
        let (r, ran) = run_once(&mut alice, &mut w1, &b, &plain, false).await;
        assert_eq!((r, ran), (Ok(()), 0), "cached");
        idle(&svc).await;
        let (r, ran) = run_once(&mut alice, &mut w1, &b, &no_cache, false).await;
        assert_eq!((r, ran), (Ok(()), 3), "--no-cache");
        idle(&svc).await;
        let failing = test_build(&["linux/amd64"], &format!("false {round}"));
        let (r, _) = run_once(&mut alice, &mut w1, &failing, &no_cache, true).await;
        assert!(r.unwrap_err().contains("exit status 1"));
        idle(&svc).await;
    }

    // Cancelled while its vertex runs: the vertex stays known until its
    // outcome arrives (a late success or the worker's "cancelled").
    for late_success in [false, true] {
        let b = test_build(&["linux/amd64"], &format!("sleep {late_success}"));
        let id = submit(&mut alice, &b, &no_cache).await;
        let run = next_run(&mut w1).await;
        alice
            .send(&Message::Cancel {
                build_id: id.clone(),
            })
            .await;
        let fin = finished(&alice.until(is_finished).await);
        assert_eq!(fin.result, Err("cancelled by the client".to_string()));
        assert!(matches!(
            w1.next().await,
            Some(Message::CancelVertex { .. })
        ));
        let s = stats_until(&svc, |s| s.active_builds == 0).await;
        assert_eq!((s.scheduler_keys, s.running), (1, 1), "{s:?}");
        if late_success {
            let (_, result) = produce(&w1, &run).await;
            answer(&mut w1, &run, Ok(&result)).await;
        } else {
            answer(&mut w1, &run, Err("cancelled")).await;
        }
        idle(&svc).await;
    }

    // Two builds share vertices; cancelling one keeps what the other
    // needs, and once the other ends nothing is left.
    let mut bob = Peer::connect(addr, &tls, client_hello("bob")).await;
    w1.conn.close(0u32.into(), b"away");
    let b = test_build(&["linux/amd64"], "shared");
    let a_id = submit(&mut alice, &b, &plain).await;
    submit(&mut bob, &b, &plain).await;
    let s = stats_until(&svc, |s| s.active_builds == 2).await;
    assert_eq!(
        s.scheduler_keys, 4,
        "context, base image, RUN, export: {s:?}"
    );
    alice.send(&Message::Cancel { build_id: a_id }).await;
    alice.until(is_finished).await;
    // The base image is cached from the builds above: RUN and export run.
    let mut w2 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 4)).await;
    serve(&mut w2, 2).await;
    assert!(finished(&bob.until(is_finished).await).result.is_ok());
    idle(&svc).await;
}

/// Serves `count` jobs; a job whose vertex description contains `loud`
/// first sends `logs` log messages of 64 KiB.
async fn serve_loud(w: &mut Peer, count: usize, loud: &str, logs: usize) {
    for _ in 0..count {
        let run = next_run(w).await;
        let (job, result) = produce(w, &run).await;
        if job.vertex.description.contains(loud) {
            for i in 0..logs {
                w.send(&Message::VertexLog(VertexLog {
                    vertex_key: run.vertex_key.clone(),
                    stream: 1,
                    data: vec![b'a' + (i % 26) as u8; 64 << 10],
                }))
                .await;
            }
        }
        answer(w, &run, Ok(&result)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_the_farm_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice", "bob"]);
    let mut opts = options(&tls, &dir.path().join("state"));
    opts.session_queue = 16;
    let svc = start(opts).await;
    let addr = svc.local_addr();
    let mut w1 = Peer::connect(addr, &tls, worker_hello("w1", &["linux/amd64"], &[], 4)).await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    let mut bob = Peer::connect(addr, &tls, client_hello("bob")).await;
    // Alice's RUN prints 160 x 64 KiB (10 MiB: far more than her 4 MiB
    // stream window plus her queue of 16), and she stops reading once her
    // build is accepted.
    let a_id = submit(
        &mut alice,
        &test_build(&["linux/amd64"], "flood"),
        &OutputSpec::default(),
    )
    .await;
    alice.pause_reading();
    submit(
        &mut bob,
        &test_build(&["linux/amd64"], "quiet"),
        &OutputSpec::default(),
    )
    .await;
    // Five jobs: the shared base image once, RUN and export of each build.
    let (_, bob_msgs) = tokio::join!(
        serve_loud(&mut w1, 5, "RUN flood", 160),
        bob.until(is_finished)
    );
    assert!(finished(&bob_msgs).result.is_ok(), "{bob_msgs:?}");
    // Alice was dropped, told why in the close reason.
    let closed = tokio::time::timeout(Duration::from_secs(10), alice.conn.closed())
        .await
        .unwrap_or_else(|_| panic!("the stalled client was never dropped: {:?}", svc.stats()));
    let reason = match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            String::from_utf8_lossy(&c.reason).into_owned()
        }
        other => panic!("expected an application close, got {other:?}"),
    };
    assert!(
        reason.contains("16 messages were waiting for it unread")
            && reason.contains("re-attach by build id"),
        "{reason}"
    );
    // Her build went on: re-attached, it reports its outcome.
    let mut again = Peer::connect(addr, &tls, client_hello("alice")).await;
    again
        .send(&Message::Submit(Submit {
            platforms: vec![],
            definition: vec![],
            context: vec![],
            output: farm::encode(&OutputSpec::default()),
            reattach: Some(a_id.clone()),
        }))
        .await;
    let msgs = again.until(is_finished).await;
    assert_eq!(
        msgs.first(),
        Some(&Message::Accepted { build_id: a_id }),
        "{msgs:?}"
    );
    assert!(finished(&msgs).result.is_ok(), "{msgs:?}");
    // Nothing left: no vertex, and the dropped session is gone (worker,
    // bob and the re-attached alice remain).
    let s = stats_until(&svc, |s| s.scheduler_keys == 0 && s.active_builds == 0).await;
    assert_eq!(s.sessions, 3, "{s:?}");
}
