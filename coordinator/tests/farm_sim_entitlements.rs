//! Entitlements in placement, through [`FarmSim`]: a step that needs one (`RUN
//! --network=host`) runs only on a worker whose operator allows it, and a farm where no
//! worker does fails the build with a message naming the entitlement and the flag.

use imgfarm_common::entitlement::{Entitlement, Entitlements};
use imgfarm_common::graph::op::{NetworkMode, Op};
use imgfarm_coordinator::engine::sim::graphs::build_on;
use imgfarm_coordinator::engine::sim::{amd64, FarmSim};
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

fn host_network() -> Entitlements {
    [Entitlement::NetworkHost].into_iter().collect()
}

/// Step 1 of 3 uses the host network.
fn one_host_step(salt: &str) -> imgfarm_common::farm::FarmDefinition {
    build_on(&[amd64()], &[vec![], vec![], vec![]], salt, |i| {
        if i == 1 {
            NetworkMode::Host
        } else {
            NetworkMode::Default
        }
    })
}

fn host_step(def: &imgfarm_common::farm::FarmDefinition) -> imgfarm_common::oci::Digest {
    def.vertices
        .iter()
        .find(|v| matches!(&v.op, Op::Exec(e) if e.network == NetworkMode::Host))
        .expect("host step")
        .key
        .clone()
}

#[test]
fn a_host_network_step_runs_only_on_a_worker_that_allows_it() {
    let mut sim = FarmSim::new(opts());
    // The plain worker comes first, is idle and has more slots: without the rule it would
    // win every placement.
    let plain = sim.add_worker("plain", &["linux/amd64"], &[], 4);
    let entitled = sim.add_entitled_worker("entitled", &["linux/amd64"], &[], 1, host_network());
    let c = sim.add_client("ci");
    let def = one_host_step("ent");
    let host_step = host_step(&def);
    let id = sim.submit(c, def).expect("accepted");
    sim.run_until_idle();
    assert!(
        matches!(sim.outcome(&id).map(|f| &f.result), Some(Ok(_))),
        "{:?}",
        sim.outcome(&id)
    );
    assert!(sim.worker(entitled).ran.iter().any(|o| o.key == host_step));
    assert!(!sim.worker(plain).ran.iter().any(|o| o.key == host_step));
    assert!(
        !sim.worker(plain).ran.is_empty(),
        "the other steps still go to the plain worker"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn no_worker_allowing_the_entitlement_fails_the_build_with_the_flag_to_add() {
    let mut sim = FarmSim::new(opts());
    let plain = sim.add_worker("plain", &["linux/amd64"], &[], 2);
    let c = sim.add_client("ci");
    let def = one_host_step("none");
    let host_step = host_step(&def);
    let id = sim.submit(c, def).expect("accepted");
    sim.run_until_idle();
    assert!(
        sim.outcome(&id).is_none(),
        "waits for a worker that allows it"
    );
    sim.advance(Duration::from_secs(11));
    sim.run_until_idle();
    let e = match sim.outcome(&id).map(|f| &f.result) {
        Some(Err(e)) => e.clone(),
        other => panic!("the build did not fail: {other:?}"),
    };
    assert!(e.contains("network.host"), "{e}");
    assert!(e.contains("--allow-entitlement network.host"), "{e}");
    assert!(!sim.worker(plain).ran.iter().any(|o| o.key == host_step));
    assert!(!sim.worker(plain).ran.is_empty(), "the steps before it ran");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
