//! Time limits through [`FarmSim`] (issue 15, finding 8): a build's
//! `--timeout`, a step's `--step-timeout`, and the grace a build has to get
//! a client back.

use imgfarm_common::farm::OutputSpec;
use imgfarm_coordinator::engine::sim::graphs::chain;
use imgfarm_coordinator::engine::sim::{amd64, FarmSim};
use imgfarm_coordinator::engine::{EngineOptions, Event};
use std::time::Duration;

fn sim(client_grace: u64) -> FarmSim {
    FarmSim::new(EngineOptions {
        startup_grace: Duration::ZERO,
        client_grace: Duration::from_secs(client_grace),
        ..EngineOptions::default()
    })
}

fn error_of(sim: &FarmSim, id: &str) -> String {
    match sim.outcome(id).map(|f| &f.result) {
        Some(Err(e)) => e.clone(),
        other => panic!("build {id} did not fail: {other:?}"),
    }
}

fn limits(build: Option<u64>, step: Option<u64>) -> OutputSpec {
    OutputSpec {
        timeout_secs: build,
        step_timeout_secs: step,
        ..OutputSpec::default()
    }
}

#[test]
fn a_build_past_its_time_limit_fails_and_its_step_is_cancelled() {
    let mut sim = sim(0);
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim
        .submit_with(c, chain(&[amd64()], 3, "slow"), limits(Some(10), None))
        .unwrap();
    sim.finish_next(a);
    let stuck = sim.worker(a).running[0].key.clone();
    sim.advance(Duration::from_secs(9));
    assert!(sim.outcome(&id).is_none(), "within the limit");
    sim.advance(Duration::from_secs(2));
    let e = error_of(&sim, &id);
    assert!(e.contains("time limit of 10 s (--timeout)"), "{e}");
    assert_eq!(sim.worker(a).cancelled, vec![stuck]);
    assert_eq!(sim.journal.state_of(&id).as_deref(), Some("failed"));
}

#[test]
fn a_step_past_its_time_limit_is_cancelled_and_fails_the_build() {
    let mut sim = sim(0);
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim
        .submit_with(c, chain(&[amd64()], 2, "hang"), limits(None, Some(60)))
        .unwrap();
    // Steps that end in time pass.
    sim.advance(Duration::from_secs(50));
    sim.finish_next(a);
    sim.advance(Duration::from_secs(50));
    assert!(sim.outcome(&id).is_none(), "each step is within its minute");
    let hung = sim.worker(a).running[0].key.clone();
    sim.advance(Duration::from_secs(11));
    let e = error_of(&sim, &id);
    assert!(e.contains("time limit of 1 min (--step-timeout)"), "{e}");
    assert_eq!(sim.worker(a).cancelled, vec![hung]);
    // The worker is free again.
    let next = sim.submit(c, chain(&[amd64()], 1, "next")).unwrap();
    sim.run_until_idle();
    assert!(matches!(sim.outcome(&next).map(|f| &f.result), Some(Ok(_))));
}

#[test]
fn a_build_whose_client_is_gone_is_cancelled_after_the_grace() {
    let mut sim = sim(30);
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim.submit(c, chain(&[amd64()], 3, "orphan")).unwrap();
    sim.handle(Event::PeerClosed {
        peer: c,
        reason: "client died".into(),
    });
    sim.advance(Duration::from_secs(29));
    assert_eq!(sim.journal.state_of(&id).as_deref(), Some("running"));
    let running = sim.worker(a).running[0].key.clone();
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.journal.state_of(&id).as_deref(), Some("cancelled"));
    assert_eq!(sim.worker(a).cancelled, vec![running]);
}

#[test]
fn a_client_re_attaching_within_the_grace_keeps_its_build() {
    let mut sim = sim(30);
    sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim.submit(c, chain(&[amd64()], 2, "kept")).unwrap();
    sim.handle(Event::PeerClosed {
        peer: c,
        reason: "network blip".into(),
    });
    sim.advance(Duration::from_secs(20));
    let back = sim.add_client("ci");
    sim.reattach(back, &id);
    sim.advance(Duration::from_secs(60));
    assert_eq!(sim.journal.state_of(&id).as_deref(), Some("running"));
    sim.run_until_idle();
    assert!(matches!(sim.outcome(&id).map(|f| &f.result), Some(Ok(_))));
}

#[test]
fn after_a_restart_builds_wait_the_grace_for_their_clients() {
    let mut sim = sim(30);
    sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let kept = sim.submit(c, chain(&[amd64()], 2, "back")).unwrap();
    let lost = sim.submit(c, chain(&[amd64()], 2, "gone")).unwrap();
    sim.restart();
    sim.rejoin();
    sim.advance(Duration::from_secs(10));
    let c2 = sim.add_client("ci");
    sim.reattach(c2, &kept);
    sim.advance(Duration::from_secs(25));
    assert_eq!(sim.journal.state_of(&lost).as_deref(), Some("cancelled"));
    assert_ne!(sim.journal.state_of(&kept).as_deref(), Some("cancelled"));
    sim.run_until_idle();
    assert_eq!(sim.journal.state_of(&kept).as_deref(), Some("done"));
}

#[test]
fn a_resumed_build_keeps_its_time_limit_from_the_submission() {
    let mut sim = sim(0);
    sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("ci");
    let id = sim
        .submit_with(c, chain(&[amd64()], 2, "resumed"), limits(Some(100), None))
        .unwrap();
    sim.advance(Duration::from_secs(60));
    sim.restart();
    sim.rejoin();
    sim.advance(Duration::from_secs(35));
    assert_eq!(sim.journal.state_of(&id).as_deref(), Some("running"));
    sim.advance(Duration::from_secs(10));
    assert_eq!(sim.journal.state_of(&id).as_deref(), Some("failed"));
}
