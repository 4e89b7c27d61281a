//! Scale past this machine, by simulation: the engine driven through
//! [`FarmSim`] by many simulated workers (amd64, arm64 and amd64 emulating
//! arm64; some joining, leaving, dying and going silent during the run)
//! and many concurrent builds. Prints the engine's cost per vertex, its
//! memory, and the journal's write rate. Run by `bench/farm_scale.sh`.
//!
//! Usage: farm_scale WORKERS BUILDS VERTICES_PER_BUILD

use imgfarm_common::oci::Digest;
use imgfarm_coordinator::engine::sim::graphs::build;
use imgfarm_coordinator::engine::sim::{amd64, arm64, FarmSim};
use imgfarm_coordinator::engine::EngineOptions;
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A counter hashed into numbers: the same sequence every run, so runs
/// compare.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 += 1;
        let d = Digest::sha256_of(&self.0.to_le_bytes());
        u64::from_str_radix(&d.hex()[..16], 16).unwrap_or(0) % n.max(1)
    }
}

fn join(sim: &mut FarmSim, rng: &mut Rng, n: usize) {
    let name = format!("w{n}");
    match rng.below(10) {
        0..=3 => sim.add_worker(&name, &["linux/amd64"], &[], 4),
        4..=7 => sim.add_worker(&name, &["linux/arm64"], &[], 4),
        _ => sim.add_worker(&name, &["linux/amd64"], &["linux/arm64"], 4),
    };
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("numbers: WORKERS BUILDS VERTICES_PER_BUILD")
        })
        .collect();
    let (workers, builds, per_build) = match args[..] {
        [w, b, v] => (w, b, v),
        _ => (1000, 1000, 100),
    };
    // Two platforms, an image and an export each: the rest are RUN steps.
    let steps = (per_build / 2).saturating_sub(2).max(1);
    let rss0 = rss_kib();
    let mut sim = FarmSim::new(EngineOptions {
        max_in_flight: 1 << 20,
        ..EngineOptions::default()
    });
    sim.check_invariants(false);
    sim.record(false);
    let mut rng = Rng(0);
    // Two permanent workers so every platform always has one.
    sim.add_worker("amd-base", &["linux/amd64"], &[], 4);
    sim.add_worker("arm-base", &["linux/arm64"], &[], 4);
    for n in 0..workers.saturating_sub(2) {
        join(&mut sim, &mut rng, n);
    }
    let c = sim.add_client("bench");
    let plats = [amd64(), arm64()];
    let started = Instant::now();
    let mut vertices = 0usize;
    let mut ids = Vec::new();
    for b in 0..builds {
        // Each step reads one or two earlier ones: a DAG, not a chain.
        let shape: Vec<Vec<usize>> = (0..steps)
            .map(|i| {
                if i > 1 && rng.below(3) == 0 {
                    vec![rng.below(i as u64 - 1) as usize]
                } else {
                    vec![]
                }
            })
            .collect();
        let def = build(&plats, &shape, &format!("build{b}"));
        vertices += def.vertices.len();
        ids.push(sim.submit(c, def).expect("accepted"));
    }
    let submitted = started.elapsed();
    let rss_queued = rss_kib();
    let mut rounds = 0u64;
    let (mut joined, mut died, mut silenced) = (0, 0, 0);
    let mut next_worker = workers;
    loop {
        rounds += 1;
        // Each worker finishes what it ran at the start of the round.
        for p in sim.live_workers() {
            for _ in 0..sim.worker(p).running.len() {
                sim.finish_next(p);
            }
        }
        // Churn: every round a few workers die, go silent or join.
        if rounds % 2 == 0 {
            let live = sim.live_workers();
            if live.len() > workers / 2 {
                let victim = live[2 + rng.below(live.len() as u64 - 2) as usize];
                if rng.below(2) == 0 {
                    sim.kill(victim);
                    died += 1;
                } else {
                    sim.silence(victim);
                    silenced += 1;
                }
            }
            join(&mut sim, &mut rng, next_worker);
            next_worker += 1;
            joined += 1;
        }
        sim.advance(Duration::from_millis(500));
        let active = sim.engine.stats().active_builds;
        if active == 0 || rounds > 100_000 {
            break;
        }
    }
    let elapsed = started.elapsed();
    let rss_peak = rss_kib();
    let done = ids
        .iter()
        .filter(|id| sim.journal.state_of(id).as_deref() == Some("done"))
        .count();
    let runs = sim.total_runs();
    let writes = sim.journal.writes();
    let sim_secs = rounds as f64 * 0.5;
    println!(
        "workers {workers} builds {builds} vertices {vertices} runs {runs} done {done}/{builds} \
         rounds {rounds} churn +{joined} -{died} silent {silenced}"
    );
    println!(
        "engine time {:.2} s (submit {:.2} s): {:.1} us per vertex run",
        elapsed.as_secs_f64(),
        submitted.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / runs.max(1) as f64
    );
    println!(
        "memory: RSS {} MiB start, {} MiB with every build queued, {} MiB at the end ({:.1} KiB per queued vertex)",
        rss0 / 1024,
        rss_queued / 1024,
        rss_peak / 1024,
        (rss_queued.saturating_sub(rss0)) as f64 / vertices.max(1) as f64
    );
    println!(
        "journal: {writes} writes over {sim_secs:.0} simulated s ({:.0} writes per simulated s, {:.0} per engine s)",
        writes as f64 / sim_secs.max(1e-9),
        writes as f64 / elapsed.as_secs_f64()
    );
}
