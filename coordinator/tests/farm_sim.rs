//! The engine through [`FarmSim`]: failover, balancing, cache affinity,
//! emulation fallback, cancel, restart recovery, grace periods and lost
//! heartbeats, each stepped by hand (no network, no sleeps).

use imgfarm_common::proto::Message;
use imgfarm_coordinator::engine::sim::graphs::{build, chain};
use imgfarm_coordinator::engine::sim::{amd64, arm64, run_keys, FarmSim};
use imgfarm_coordinator::engine::EngineOptions;
use std::time::Duration;

fn opts() -> EngineOptions {
    EngineOptions {
        heartbeat_timeout: Duration::from_secs(6),
        no_candidate_grace: Duration::from_secs(10),
        startup_grace: Duration::ZERO,
        client_grace: Duration::ZERO,
        ..EngineOptions::default()
    }
}

fn done(sim: &FarmSim, id: &str) -> bool {
    matches!(sim.outcome(id).map(|f| &f.result), Some(Ok(_)))
}

fn error_of(sim: &FarmSim, id: &str) -> String {
    match sim.outcome(id).map(|f| &f.result) {
        Some(Err(e)) => e.clone(),
        other => panic!("build {id} did not fail: {other:?}"),
    }
}

#[test]
fn a_dead_worker_s_vertex_runs_elsewhere_and_the_build_finishes() {
    let mut sim = FarmSim::new(opts());
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim.submit(c, chain(&[amd64()], 3, "fo")).unwrap();
    assert_eq!(sim.worker(a).running.len(), 1);
    let b = sim.add_worker("b", &["linux/amd64"], &[], 1);
    let lost = sim.worker(a).running[0].key.clone();
    sim.kill(a);
    assert_eq!(
        sim.worker(b).running[0].key,
        lost,
        "the lost vertex moves to b"
    );
    sim.run_until_idle();
    assert!(done(&sim, &id), "{:?}", sim.outcome(&id));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn independent_work_spreads_over_workers() {
    let mut sim = FarmSim::new(opts());
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let b = sim.add_worker("b", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    // Two builds with nothing in common but the base image: a holds it
    // (affinity) but has one slot, so the other RUN goes to b.
    let one = sim.submit(c, chain(&[amd64()], 1, "one")).unwrap();
    let two = sim.submit(c, chain(&[amd64()], 1, "two")).unwrap();
    // The shared base image resolves once, then one RUN goes to each.
    assert!(sim.finish_next(a));
    assert_eq!(sim.worker(a).running.len(), 1);
    assert_eq!(sim.worker(b).running.len(), 1);
    sim.run_until_idle();
    assert!(done(&sim, &one) && done(&sim, &two));
}

#[test]
fn a_step_goes_to_the_worker_holding_its_input() {
    let mut sim = FarmSim::new(opts());
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let first = sim.submit(c, chain(&[amd64()], 2, "aff")).unwrap();
    sim.run_until_idle();
    assert!(done(&sim, &first));
    let b = sim.add_worker("b", &["linux/amd64"], &[], 1);
    // The same two steps plus a third: only the third runs, on a, which
    // holds its input, though b is as idle.
    let second = sim.submit(c, chain(&[amd64()], 3, "aff")).unwrap();
    assert_eq!(sim.worker(a).running.len(), 1);
    assert!(sim.worker(b).running.is_empty());
    sim.run_until_idle();
    assert!(done(&sim, &second));
    assert!(sim.rerun_keys().is_empty(), "nothing ran twice");
}

#[test]
fn emulation_only_while_no_native_worker_is_there() {
    let mut sim = FarmSim::new(opts());
    let x86 = sim.add_worker("x86", &["linux/amd64"], &["linux/arm64"], 1);
    let c = sim.add_client("ci");
    let id = sim.submit(c, chain(&[arm64()], 2, "emu")).unwrap();
    let image = sim.worker(x86).running[0].clone();
    assert!(
        !image.emulated,
        "resolving the base image runs no arm64 code"
    );
    sim.finish_next(x86);
    let first = sim.worker(x86).running[0].clone();
    assert!(first.emulated, "no arm64 worker: emulated");
    let arm = sim.add_worker("arm", &["linux/arm64"], &[], 1);
    sim.finish_next(x86);
    let second = sim.worker(arm).running[0].clone();
    assert!(
        !second.emulated,
        "a native worker joined: it takes the next step"
    );
    sim.run_until_idle();
    assert!(done(&sim, &id));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn cancel_stops_running_vertices_and_ends_the_build() {
    let mut sim = FarmSim::new(opts());
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim.submit(c, chain(&[amd64()], 2, "cx")).unwrap();
    let running = sim.worker(a).running[0].key.clone();
    sim.cancel(c, &id);
    assert_eq!(sim.worker(a).cancelled, vec![running]);
    assert!(error_of(&sim, &id).contains("cancelled"));
    assert_eq!(sim.journal.state_of(&id).as_deref(), Some("cancelled"));
    // The worker is free for the next build.
    let next = sim.submit(c, chain(&[amd64()], 1, "after")).unwrap();
    sim.run_until_idle();
    assert!(done(&sim, &next));
}

#[test]
fn a_restarted_coordinator_resumes_from_its_journal() {
    let mut sim = FarmSim::new(opts());
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let def = chain(&[amd64()], 3, "rs");
    let id = sim.submit(c, def.clone()).unwrap();
    assert!(sim.finish_next(a), "step 0 done and journaled");
    sim.restart();
    assert_eq!(sim.journal.state_of(&id).as_deref(), Some("running"));
    sim.rejoin();
    let c2 = sim.add_client("ci");
    sim.reattach(c2, &id);
    assert!(matches!(
        sim.client(c2).received[0],
        Message::Accepted { .. }
    ));
    sim.run_until_idle();
    assert!(done(&sim, &id), "{:?}", sim.outcome(&id));
    let runs: usize = run_keys(&def).iter().map(|k| sim.runs_of(k)).sum();
    // Step 1 ran before the restart and again after it (its outcome was
    // lost with the session); step 0 never again.
    assert_eq!(runs, 4);
    assert!(sim.rerun_keys().len() == 1);
}

#[test]
fn a_build_waits_out_the_grace_for_a_capable_worker() {
    let mut sim = FarmSim::new(opts());
    sim.add_worker("x86", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let late = sim.submit(c, chain(&[arm64()], 1, "late")).unwrap();
    sim.advance(Duration::from_secs(5));
    assert!(sim.outcome(&late).is_none(), "still within the grace");
    let arm = sim.add_worker("arm", &["linux/arm64"], &[], 1);
    assert_eq!(sim.worker(arm).running.len(), 1);
    sim.run_until_idle();
    assert!(done(&sim, &late));

    let never = sim
        .submit(c, chain(&["linux/riscv64".parse().unwrap()], 1, "nv"))
        .unwrap();
    sim.advance(Duration::from_secs(9));
    assert!(sim.outcome(&never).is_none());
    sim.advance(Duration::from_secs(2));
    let e = error_of(&sim, &never);
    assert!(
        e.contains("linux/riscv64") && e.contains("waited 10 s"),
        "{e}"
    );
}

#[test]
fn the_startup_grace_holds_builds_while_workers_reconnect() {
    let mut sim = FarmSim::new(EngineOptions {
        startup_grace: Duration::from_secs(30),
        ..opts()
    });
    let c = sim.add_client("ci");
    let id = sim.submit(c, chain(&[amd64()], 1, "sg")).unwrap();
    sim.advance(Duration::from_secs(25));
    assert!(
        sim.outcome(&id).is_none(),
        "no failure during the startup grace"
    );
    sim.add_worker("a", &["linux/amd64"], &[], 1);
    sim.run_until_idle();
    assert!(done(&sim, &id));
}

#[test]
fn a_silent_worker_is_lost_and_its_vertex_moves() {
    let mut sim = FarmSim::new(opts());
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim.submit(c, chain(&[amd64()], 1, "hb")).unwrap();
    let b = sim.add_worker("b", &["linux/amd64"], &[], 1);
    assert_eq!(sim.worker(a).running.len(), 1);
    sim.silence(a);
    sim.advance(Duration::from_secs(5));
    assert!(sim.worker(b).running.is_empty(), "not yet lost");
    sim.advance(Duration::from_secs(2));
    assert!(!sim.worker(a).alive, "lost after 6 s of silence");
    assert_eq!(sim.worker(b).running.len(), 1);
    sim.run_until_idle();
    assert!(done(&sim, &id));
}

#[test]
fn a_failed_vertex_fails_every_build_needing_it() {
    let mut sim = FarmSim::new(opts());
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let one = sim.submit(c, chain(&[amd64()], 2, "shared")).unwrap();
    let two = sim.submit(c, chain(&[amd64()], 2, "shared")).unwrap();
    let key = sim.worker(a).running[0].key.clone();
    sim.fail(a, &key, "exit code 1");
    for id in [&one, &two] {
        let e = error_of(&sim, id);
        assert!(e.contains("exit code 1 (on worker a)"), "{e}");
    }
}

#[test]
fn identical_vertices_of_concurrent_builds_run_once() {
    let mut sim = FarmSim::new(opts());
    sim.add_worker("a", &["linux/amd64"], &["linux/arm64"], 2);
    sim.add_worker("b", &["linux/arm64"], &[], 2);
    let c = sim.add_client("ci");
    let both = [amd64(), arm64()];
    let def = build(&both, &[vec![], vec![0], vec![0, 1]], "dup");
    let ids: Vec<String> = (0..3)
        .map(|_| sim.submit(c, def.clone()).unwrap())
        .collect();
    sim.run_until_idle();
    assert!(ids.iter().all(|id| done(&sim, id)));
    assert!(sim.rerun_keys().is_empty());
    assert_eq!(
        sim.total_runs(),
        2 * (3 + 2),
        "3 RUNs, an image and an export per platform"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_slow_client_is_dropped_and_its_build_goes_on() {
    let mut sim = FarmSim::new(opts());
    sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim.submit(c, chain(&[amd64()], 1, "slow")).unwrap();
    sim.handle(imgfarm_coordinator::engine::Event::PeerSlow { peer: c });
    sim.run_until_idle();
    assert!(sim.outcome(&id).is_none(), "the client was not told");
    assert_eq!(sim.journal.state_of(&id).as_deref(), Some("done"));
}

#[test]
fn a_held_export_keeps_the_build_running_until_it_ends() {
    let mut sim = FarmSim::new(opts());
    sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    sim.hold_exports(true);
    let id = sim.submit(c, chain(&[amd64()], 1, "push")).unwrap();
    sim.run_until_idle();
    assert!(sim.outcome(&id).is_none(), "pushing");
    assert_eq!(sim.engine.build_state(&id), Some("running"));
    sim.release_exports();
    assert!(done(&sim, &id));
}

/// Issue 15, finding 4: a worker whose disk is full fails its step for its
/// own reason; the step runs elsewhere, the worker takes no new work for a
/// while, then takes work again.
#[test]
fn a_worker_out_of_disk_is_drained_and_its_step_runs_elsewhere() {
    let mut sim = FarmSim::new(opts());
    let full = sim.add_worker("full", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim.submit(c, chain(&[amd64()], 2, "disk")).unwrap();
    let ok = sim.add_worker("ok", &["linux/amd64"], &[], 1);
    let key = sim.worker(full).running[0].key.clone();
    sim.fail(
        full,
        &key,
        "writing layer: No space left on device (os error 28)",
    );
    assert_eq!(sim.worker(ok).running[0].key, key, "the step moved");
    sim.run_until_idle();
    assert!(done(&sim, &id), "{:?}", sim.outcome(&id));
    // Drained: the next build goes to the other worker though both are idle.
    let next = sim.submit(c, chain(&[amd64()], 1, "next")).unwrap();
    assert!(sim.worker(full).running.is_empty());
    sim.run_until_idle();
    assert!(done(&sim, &next));
    // After the drain it takes work again: with the other worker's one slot
    // busy, the second of two builds runs there.
    sim.advance(Duration::from_secs(61));
    let later = sim.submit(c, chain(&[amd64()], 1, "later")).unwrap();
    let later2 = sim.submit(c, chain(&[amd64()], 1, "later2")).unwrap();
    assert_eq!(sim.worker(full).running.len(), 1);
    sim.run_until_idle();
    assert!(done(&sim, &later) && done(&sim, &later2));
}

#[test]
fn with_every_worker_out_of_disk_the_build_fails_naming_why() {
    let mut sim = FarmSim::new(opts());
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim.submit(c, chain(&[amd64()], 1, "nospace")).unwrap();
    let key = sim.worker(a).running[0].key.clone();
    sim.fail(a, &key, "No space left on device (os error 28)");
    sim.advance(Duration::from_secs(11));
    let e = error_of(&sim, &id);
    assert!(e.contains("draining: its disk is full"), "{e}");
}

#[test]
fn only_the_submitting_client_may_re_attach_to_or_cancel_a_build() {
    let mut sim = FarmSim::new(opts());
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let owner = sim.add_client("ci");
    let id = sim.submit(owner, chain(&[amd64()], 2, "mine")).unwrap();
    let other = sim.add_client("tenant-b");
    sim.cancel(other, &id);
    sim.reattach(other, &id);
    let refusals: Vec<&String> = sim
        .client(other)
        .received
        .iter()
        .filter_map(|m| match m {
            Message::Refused(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(refusals.len(), 2, "{:?}", sim.client(other).received);
    for r in refusals {
        assert!(r.contains("belongs to client \"ci\""), "{r}");
    }
    assert!(sim.worker(a).cancelled.is_empty(), "nothing was cancelled");
    sim.run_until_idle();
    assert!(done(&sim, &id));
    // Not even the outcome of an ended build reaches another client, from
    // memory or (after a restart) from the journal.
    sim.reattach(other, &id);
    sim.restart();
    sim.rejoin();
    let other = sim.add_client("tenant-b");
    sim.reattach(other, &id);
    assert!(sim
        .client(other)
        .received
        .iter()
        .all(|m| !matches!(m, Message::BuildFinished(_) | Message::Accepted { .. })));
    let owner = sim.add_client("ci");
    sim.reattach(owner, &id);
    assert!(sim
        .client(owner)
        .received
        .iter()
        .any(|m| matches!(m, Message::BuildFinished(_))));
}

#[test]
fn collection_never_forgets_what_a_live_build_needs_and_forgotten_results_run_again() {
    use imgfarm_coordinator::engine::Event;
    let mut sim = FarmSim::new(opts());
    let w = sim.add_worker("a", &["linux/amd64"], &[], 4);
    let c = sim.add_client("ci");
    let def = chain(&[amd64()], 3, "gc");
    let id = sim.submit(c, def.clone()).unwrap();
    sim.run_until_idle();
    assert!(done(&sim, &id));
    let stored = sim.journal.results();
    assert!(stored >= 3, "{stored}");
    let all: Vec<_> = sim
        .engine
        .gc_records()
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    // The client is still attached (downloading): nothing of its build goes.
    let pins = sim.engine.gc_pins();
    assert!(
        run_keys(&def).iter().all(|k| pins.keys.contains(k)),
        "{pins:?}"
    );
    let forgot = sim.engine.gc_forget(&all, u64::MAX).unwrap();
    assert!(forgot.forgotten.iter().all(|k| !run_keys(&def).contains(k)));
    // A running build pins its done vertices too.
    let c2 = sim.add_client("ci2");
    let running = sim.submit(c2, chain(&[amd64()], 3, "other")).unwrap();
    assert!(sim.finish_next(w));
    // Once the first client left, its results may go; the running build's stay.
    sim.handle(Event::PeerClosed {
        peer: c,
        reason: "done".into(),
    });
    let pinned = sim.engine.gc_pins().keys;
    assert!(!pinned.is_empty());
    let all: Vec<_> = sim
        .engine
        .gc_records()
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    let forgot = sim.engine.gc_forget(&all, u64::MAX).unwrap();
    assert!(!forgot.forgotten.is_empty());
    assert!(
        forgot.forgotten.iter().all(|k| !pinned.contains(k)),
        "{forgot:?}"
    );
    assert!(run_keys(&def).iter().all(|k| forgot.forgotten.contains(k)));
    // Results used since the plan's snapshot are spared.
    let since = sim.journal.clock() + 1;
    sim.run_until_idle();
    assert!(done(&sim, &running));
    let recent: Vec<_> = sim
        .engine
        .gc_records()
        .unwrap()
        .into_iter()
        .filter(|u| u.last_used_ms >= since)
        .map(|u| u.key)
        .collect();
    assert!(!recent.is_empty());
    sim.handle(Event::PeerClosed {
        peer: c2,
        reason: "done".into(),
    });
    let forgot = sim.engine.gc_forget(&recent, since).unwrap();
    assert!(forgot.forgotten.is_empty(), "{forgot:?}");
    // The collected build runs again and succeeds.
    let runs_before = sim.total_runs();
    let c3 = sim.add_client("ci3");
    let again = sim.submit(c3, def).unwrap();
    sim.run_until_idle();
    assert!(done(&sim, &again));
    assert!(sim.total_runs() >= runs_before + 3);
}

#[test]
fn workers_sharing_a_name_are_told_apart_by_session() {
    // The replicas of a Kubernetes worker pool share one certificate and name
    // (deploy/kubernetes); tests/tests/farm_shared_name.rs runs the same with real processes.
    let mut sim = FarmSim::new(opts());
    let a = sim.add_worker("pool-amd64", &["linux/amd64"], &[], 1);
    let b = sim.add_worker("pool-amd64", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let one = sim.submit(c, chain(&[amd64()], 1, "one")).unwrap();
    let two = sim.submit(c, chain(&[amd64()], 1, "two")).unwrap();
    assert!(sim.finish_next(a), "the shared base image");
    assert_eq!(sim.worker(a).running.len(), 1, "one RUN each");
    assert_eq!(sim.worker(b).running.len(), 1, "one RUN each");
    let (on_a, on_b) = (
        sim.worker(a).running[0].key.clone(),
        sim.worker(b).running[0].key.clone(),
    );
    // One replica dies: only its own vertex goes back; the other keeps its session and work.
    sim.kill(a);
    assert!(sim.worker(b).alive);
    assert_eq!(sim.worker(b).running[0].key, on_b);
    sim.run_until_idle();
    assert!(done(&sim, &one) && done(&sim, &two));
    assert_eq!(sim.runs_of(&on_b), 1, "b's vertex was not run again");
    assert_eq!(sim.runs_of(&on_a), 2, "a's vertex ran again, on b");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
