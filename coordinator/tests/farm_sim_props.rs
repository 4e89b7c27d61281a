//! Properties of the engine over random graphs, farms and fault schedules
//! (through [`FarmSim`]):
//! - never the wrong platform: every vertex goes to a worker serving its
//!   platform, and a RUN is emulated only while no native worker is there;
//! - never a lost build while a capable worker remains: with workers dying,
//!   going silent, joining, and the coordinator restarting, every build
//!   ends done as long as one worker per platform stays;
//! - each key runs once when nothing fails, however many builds share it.

use imgfarm_common::farm::FarmDefinition;
use imgfarm_common::platform::Platform;
use imgfarm_coordinator::engine::sim::graphs::build;
use imgfarm_coordinator::engine::sim::{amd64, arm64, FarmSim};
use imgfarm_coordinator::engine::{EngineOptions, PeerId};
use proptest::prelude::*;
use std::time::Duration;

/// A fault or a step of the schedule.
#[derive(Debug, Clone)]
enum Step {
    /// Every live worker finishes its oldest vertex.
    Round,
    /// An extra worker dies.
    Kill(usize),
    /// An extra worker stops heartbeating.
    Silence(usize),
    /// A worker joins (amd64, arm64 or amd64 emulating arm64).
    Join(u8, u32),
    /// Time passes (seconds).
    Advance(u64),
    /// The coordinator restarts and the workers reconnect.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Round),
        1 => (0..4usize).prop_map(Step::Kill),
        1 => (0..4usize).prop_map(Step::Silence),
        1 => (0..3u8, 1..3u32).prop_map(|(k, s)| Step::Join(k, s)),
        1 => (1..8u64).prop_map(Step::Advance),
        1 => Just(Step::Restart),
    ]
}

/// Per build: its platforms (0 amd64, 1 arm64, 2 both), its RUN steps
/// (each reading some earlier ones) and a salt from a small set, so builds
/// share vertices.
fn builds() -> impl Strategy<Value = Vec<(u8, Vec<Vec<usize>>, u8)>> {
    let steps = prop::collection::vec(prop::collection::vec(0..6usize, 0..3), 1..6);
    prop::collection::vec((0..3u8, steps, 0..3u8), 1..5)
}

fn platforms(k: u8) -> Vec<Platform> {
    match k {
        0 => vec![amd64()],
        1 => vec![arm64()],
        _ => vec![amd64(), arm64()],
    }
}

fn definitions(spec: &[(u8, Vec<Vec<usize>>, u8)]) -> Vec<FarmDefinition> {
    spec.iter()
        .map(|(p, steps, salt)| build(&platforms(*p), steps, &format!("salt{salt}")))
        .collect()
}

fn join(sim: &mut FarmSim, kind: u8, slots: u32, name: &str) -> PeerId {
    match kind {
        0 => sim.add_worker(name, &["linux/amd64"], &[], slots),
        1 => sim.add_worker(name, &["linux/arm64"], &[], slots),
        _ => sim.add_worker(name, &["linux/amd64"], &["linux/arm64"], slots),
    }
}

fn opts() -> EngineOptions {
    EngineOptions {
        heartbeat_timeout: Duration::from_secs(6),
        // Long enough that a build never fails for want of a worker here:
        // one per platform always stays.
        no_candidate_grace: Duration::from_secs(3600),
        startup_grace: Duration::ZERO,
        // Clients are gone after a restart here; no build is cancelled for it.
        client_grace: Duration::ZERO,
        ..EngineOptions::default()
    }
}

/// Runs the schedule, then lets the farm drain (silent workers are lost
/// once the heartbeat timeout passes). Returns the build ids.
fn play(sim: &mut FarmSim, defs: &[FarmDefinition], schedule: &[Step]) -> Vec<String> {
    let c = sim.add_client("ci");
    let ids: Vec<String> = defs
        .iter()
        .map(|d| sim.submit(c, d.clone()).expect("accepted"))
        .collect();
    // Faults hit only the extra workers: one per platform always stays.
    let extras = |sim: &FarmSim| -> Vec<PeerId> {
        sim.live_workers()
            .into_iter()
            .filter(|p| sim.worker(*p).name.starts_with("extra"))
            .collect()
    };
    for (n, s) in schedule.iter().enumerate() {
        match s {
            Step::Round => {
                for p in sim.live_workers() {
                    sim.finish_next(p);
                }
            }
            Step::Kill(i) => {
                if let Some(p) = extras(sim).get(*i).copied() {
                    sim.kill(p);
                }
            }
            Step::Silence(i) => {
                if let Some(p) = extras(sim).get(*i).copied() {
                    sim.silence(p);
                }
            }
            Step::Join(k, slots) => {
                join(sim, *k, *slots, &format!("extra{n}"));
            }
            Step::Advance(secs) => sim.advance(Duration::from_secs(*secs)),
            Step::Restart => {
                sim.restart();
                sim.rejoin();
            }
        }
    }
    for _ in 0..50 {
        sim.run_until_idle();
        if ids
            .iter()
            .all(|id| sim.journal.state_of(id).as_deref() == Some("done"))
        {
            break;
        }
        sim.advance(Duration::from_secs(7));
    }
    ids
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn faults_never_lose_a_build_nor_misplace_a_vertex(
        spec in builds(),
        arm_native in any::<bool>(),
        slots in (1..4u32, 1..4u32),
        schedule in prop::collection::vec(step(), 0..30),
    ) {
        let mut sim = FarmSim::new(opts());
        // Two workers that never fail: one amd64, one serving arm64.
        sim.add_worker("amd", &["linux/amd64"], &[], slots.0);
        if arm_native {
            sim.add_worker("arm", &["linux/arm64"], &[], slots.1);
        } else {
            sim.add_worker("emu", &["linux/amd64"], &["linux/arm64"], slots.1);
        }
        let defs = definitions(&spec);
        let ids = play(&mut sim, &defs, &schedule);
        prop_assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        for id in &ids {
            prop_assert_eq!(sim.journal.state_of(id), Some("done".to_string()), "build {}", id);
        }
    }

    #[test]
    fn without_faults_each_key_runs_once(
        spec in builds(),
        farm in prop::collection::vec((0..3u8, 1..4u32), 1..5),
        rounds in 0..10usize,
    ) {
        let mut sim = FarmSim::new(opts());
        sim.add_worker("amd", &["linux/amd64"], &[], 1);
        sim.add_worker("emu", &["linux/amd64"], &["linux/arm64"], 1);
        for (i, (k, s)) in farm.iter().enumerate() {
            join(&mut sim, *k, *s, &format!("w{i}"));
        }
        let defs = definitions(&spec);
        let schedule = vec![Step::Round; rounds];
        let ids = play(&mut sim, &defs, &schedule);
        prop_assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        prop_assert!(sim.rerun_keys().is_empty(), "ran twice: {:?}", sim.rerun_keys());
        for id in &ids {
            prop_assert_eq!(sim.journal.state_of(id), Some("done".to_string()));
        }
    }
}
