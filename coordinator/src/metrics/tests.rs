use super::*;
use crate::engine::observe::Recorder;
use crate::engine::sim::graphs::build;
use crate::engine::sim::{amd64, arm64, FarmSim};
use crate::engine::{EngineOptions, Observation};
use std::time::Duration;

/// The value of the sample `name{labels}` (labels as rendered, in order),
/// from an OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A farm of two workers: `n1` runs amd64 natively (2 slots), `e1` runs
/// amd64 natively and emulates arm64 (1 slot); metrics observe the engine.
fn farm() -> (FarmSim, Arc<CoordinatorMetrics>) {
    let mut sim = FarmSim::new(EngineOptions::default());
    let m = Arc::new(CoordinatorMetrics::new(1 << 30));
    sim.engine.set_observer(Box::new(m.observer()));
    sim.add_worker("n1", &["linux/amd64"], &[], 2);
    sim.add_worker("e1", &["linux/amd64"], &["linux/arm64"], 1);
    (sim, m)
}

/// One two-platform build of two steps each, every vertex taking 2 s of
/// simulated time; the metrics are rendered while it runs and after.
fn scenario() -> (String, String) {
    let (mut sim, m) = farm();
    let c = sim.add_client("alice");
    let id = sim
        .submit(c, build(&[amd64(), arm64()], &[vec![], vec![]], "a"))
        .expect("accepted");
    let during = m.render(&sim.engine.gauges(), 123);
    // Each round, what runs at its start finishes 2 s later.
    loop {
        sim.advance(Duration::from_secs(2));
        let work: Vec<_> = sim
            .live_workers()
            .into_iter()
            .map(|w| (w, sim.worker(w).running.len()))
            .collect();
        if work.iter().all(|(_, n)| *n == 0) {
            break;
        }
        for (w, n) in work {
            for _ in 0..n {
                sim.finish_next(w);
            }
        }
    }
    sim.run_until_idle();
    assert!(sim.outcome(&id).is_some_and(|f| f.result.is_ok()));
    let after = m.render(&sim.engine.gauges(), 456);
    (during, after)
}

#[test]
fn gauges_show_workers_slots_queue_and_builds_while_a_build_runs() {
    let (during, _) = scenario();
    let w = |platform: &str, emulation: &str, state: &str| {
        sample(
            &during,
            &format!("imgfarm_coordinator_workers{{platform=\"{platform}\",emulation=\"{emulation}\",state=\"{state}\"}}"),
        )
    };
    // Both images are placed at once (3 slots: 2 amd64 + the arm64 one on e1).
    assert_eq!(w("linux/amd64", "native", "busy"), Some(2.0), "{during}");
    assert_eq!(w("linux/amd64", "native", "idle"), Some(0.0), "{during}");
    assert_eq!(w("linux/arm64", "emulated", "busy"), Some(1.0), "{during}");
    assert_eq!(
        w("linux/amd64", "native", "draining"),
        Some(0.0),
        "{during}"
    );
    assert_eq!(
        sample(&during, "imgfarm_coordinator_workers_connected"),
        Some(2.0)
    );
    assert_eq!(sample(&during, "imgfarm_coordinator_slots"), Some(3.0));
    // Only the two images can run yet.
    assert_eq!(sample(&during, "imgfarm_coordinator_slots_busy"), Some(2.0));
    assert_eq!(
        sample(
            &during,
            "imgfarm_coordinator_builds_active{state=\"running\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &during,
            "imgfarm_coordinator_builds_active{state=\"queued\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&during, "imgfarm_coordinator_store_bytes"),
        Some(123.0)
    );
    assert_eq!(
        sample(&during, "imgfarm_coordinator_store_max_bytes"),
        Some(f64::from(1u32 << 30))
    );
    assert!(during.ends_with("# EOF\n"), "{during}");
}

#[test]
fn vertices_waiting_for_a_slot_are_the_queue() {
    let mut sim = FarmSim::new(EngineOptions::default());
    let m = Arc::new(CoordinatorMetrics::new(0));
    sim.engine.set_observer(Box::new(m.observer()));
    let w = sim.add_worker("n1", &["linux/amd64"], &[], 1);
    let c = sim.add_client("alice");
    sim.submit(c, build(&[amd64()], &[vec![]], "q1"))
        .expect("accepted");
    sim.submit(c, build(&[amd64()], &[vec![]], "q2"))
        .expect("accepted");
    // The base image is shared: one vertex runs, the second build waits for it.
    let text = m.render(&sim.engine.gauges(), 0);
    let v = |s: &str| sample(&text, s);
    assert_eq!(
        v("imgfarm_coordinator_builds_active{state=\"running\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v("imgfarm_coordinator_builds_active{state=\"queued\"}"),
        Some(1.0)
    );
    assert_eq!(v("imgfarm_coordinator_slots_busy"), Some(1.0));
    // Then both RUN steps can run on the one slot: one waits.
    assert!(sim.finish_next(w));
    let text = m.render(&sim.engine.gauges(), 0);
    assert_eq!(
        sample(
            &text,
            "imgfarm_coordinator_queue_vertices{platform=\"linux/amd64\"}"
        ),
        Some(1.0),
        "{text}"
    );
    sim.advance(Duration::from_secs(3));
    assert!(sim.finish_next(w));
    sim.advance(Duration::from_secs(2));
    assert!(sim.finish_next(w));
    let text = m.render(&sim.engine.gauges(), 0);
    // The waiting one waited 3 s, then 2 s more behind the first build's
    // export (placed first: graph order).
    let waited = sample(
        &text,
        "imgfarm_coordinator_queue_wait_seconds_sum{platform=\"linux/amd64\"}",
    );
    assert!(waited.is_some_and(|w| w >= 3.0), "{text}");
}

#[test]
fn counters_and_histograms_follow_the_engine_and_are_deterministic() {
    let (_, after) = scenario();
    let (_, again) = scenario();
    // prometheus-client keeps series in hash maps: compare them sorted.
    let sorted = |t: &str| {
        let mut v: Vec<&str> = t.lines().collect();
        v.sort_unstable();
        v.join("\n")
    };
    assert_eq!(
        sorted(&after),
        sorted(&again),
        "the same simulated run, the same samples"
    );
    assert_eq!(
        sample(
            &after,
            "imgfarm_coordinator_builds_total{outcome=\"succeeded\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "imgfarm_coordinator_builds_total{outcome=\"failed\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&after, "imgfarm_coordinator_builds_admitted_total"),
        Some(1.0)
    );
    // amd64: image, 2 RUN, export, all native; arm64: the RUN steps on the
    // emulating worker, the image and export (no code run) counted native.
    let count = |p: &str, e: &str| {
        sample(
            &after,
            &format!("imgfarm_coordinator_vertex_duration_seconds_count{{platform=\"{p}\",emulation=\"{e}\",outcome=\"succeeded\"}}"),
        )
    };
    assert_eq!(count("linux/amd64", "native"), Some(4.0), "{after}");
    assert_eq!(count("linux/arm64", "emulated"), Some(2.0), "{after}");
    assert_eq!(count("linux/arm64", "native"), Some(2.0), "{after}");
    // Each vertex took 2 s of simulated time.
    assert_eq!(
        sample(
            &after,
            "imgfarm_coordinator_vertex_duration_seconds_sum{platform=\"linux/amd64\",emulation=\"native\",outcome=\"succeeded\"}"
        ),
        Some(8.0)
    );
    assert_eq!(
        sample(
            &after,
            "imgfarm_coordinator_queue_wait_seconds_count{platform=\"linux/amd64\"}"
        ),
        Some(4.0)
    );
    assert_eq!(sample(&after, "imgfarm_coordinator_slots_busy"), Some(0.0));
    assert_eq!(
        sample(&after, "imgfarm_coordinator_cache_hits_total"),
        Some(0.0)
    );
}

#[test]
fn cache_hits_failures_and_cancels_are_counted() {
    let (mut sim, m) = farm();
    let c = sim.add_client("alice");
    let def = build(&[amd64()], &[vec![]], "c");
    sim.submit(c, def.clone()).expect("accepted");
    sim.run_until_idle();
    // The same build again: image, RUN and export come from the journal.
    sim.submit(c, def).expect("accepted");
    sim.run_until_idle();
    let text = m.render(&sim.engine.gauges(), 0);
    assert_eq!(
        sample(&text, "imgfarm_coordinator_cache_hits_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "imgfarm_coordinator_builds_total{outcome=\"succeeded\"}"
        ),
        Some(2.0)
    );
    // A failing step fails its build.
    sim.submit(c, build(&[amd64()], &[vec![]], "f"))
        .expect("accepted");
    let (w, key) = sim
        .live_workers()
        .into_iter()
        .find_map(|w| sim.worker(w).running.first().map(|o| (w, o.key.clone())))
        .expect("a vertex runs");
    sim.fail(w, &key, "boom");
    let text = m.render(&sim.engine.gauges(), 0);
    assert_eq!(
        sample(
            &text,
            "imgfarm_coordinator_builds_total{outcome=\"failed\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "imgfarm_coordinator_vertex_duration_seconds_count{platform=\"linux/amd64\",emulation=\"native\",outcome=\"failed\"}"),
        Some(1.0),
        "{text}"
    );
    // A cancelled build, with a step running: the worker answers
    // `cancelled`.
    let id = sim
        .submit(c, build(&[amd64()], &[vec![]], "x"))
        .expect("accepted");
    let (w, key) = sim
        .live_workers()
        .into_iter()
        .find_map(|w| sim.worker(w).running.first().map(|o| (w, o.key.clone())))
        .expect("a vertex runs");
    sim.cancel(c, &id);
    // Its worker answers the CancelVertex.
    sim.fail(w, &key, "cancelled");
    let text = m.render(&sim.engine.gauges(), 0);
    assert_eq!(
        sample(
            &text,
            "imgfarm_coordinator_builds_total{outcome=\"cancelled\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "imgfarm_coordinator_vertex_duration_seconds_count{platform=\"linux/amd64\",emulation=\"native\",outcome=\"cancelled\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn the_engine_observes_in_order_on_its_own_clock() {
    let mut sim = FarmSim::new(EngineOptions::default());
    let rec = Recorder::default();
    sim.engine.set_observer(Box::new(rec.clone()));
    let w = sim.add_worker("n1", &["linux/amd64"], &[], 1);
    let c = sim.add_client("alice");
    sim.submit(c, build(&[amd64()], &[], "o"))
        .expect("accepted");
    sim.advance(Duration::from_millis(1500));
    assert!(sim.finish_next(w));
    let seen = rec.seen.lock().unwrap().clone();
    assert_eq!(seen[0], Observation::BuildAdmitted);
    assert_eq!(
        seen[1],
        Observation::VertexPlaced {
            platform: "linux/amd64".into(),
            emulated: false,
            queue_wait: Duration::ZERO
        }
    );
    assert_eq!(
        seen[2],
        Observation::VertexEnded {
            platform: "linux/amd64".into(),
            emulated: false,
            outcome: crate::engine::observe::VertexOutcome::Succeeded,
            duration: Duration::from_millis(1500)
        }
    );
    // The export waited for nothing: placed as the image finished.
    assert!(
        matches!(&seen[3], Observation::VertexPlaced { queue_wait, .. } if queue_wait.is_zero())
    );
}

#[test]
fn blob_bytes_are_counted_by_direction_and_role() {
    let m = CoordinatorMetrics::new(0);
    m.blob_relayed(Role::Client, Direction::In, 100);
    m.blob_relayed(Role::Worker, Direction::Out, 100);
    m.blob_relayed(Role::Worker, Direction::Out, 5);
    let text = m.render(&Gauges::default(), 0);
    assert_eq!(
        sample(
            &text,
            "imgfarm_coordinator_blob_relayed_bytes_total{direction=\"in\",peer_role=\"client\"}"
        ),
        Some(100.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "imgfarm_coordinator_blob_relayed_bytes_total{direction=\"out\",peer_role=\"worker\"}"
        ),
        Some(105.0)
    );
}

/// What a scrape costs at scale: `cargo test -p imgfarm-coordinator --lib
/// render_cost -- --ignored --nocapture` prints it (no bound asserted: the
/// machine varies).
#[test]
#[ignore]
fn render_cost_at_scale() {
    for (workers, builds) in [(10, 10), (100, 100), (1000, 1000)] {
        let mut sim = FarmSim::new(EngineOptions::default());
        sim.check_invariants(false);
        sim.record(false);
        let m = Arc::new(CoordinatorMetrics::new(0));
        sim.engine.set_observer(Box::new(m.observer()));
        for i in 0..workers {
            sim.add_worker(&format!("w{i}"), &["linux/amd64"], &["linux/arm64"], 4);
        }
        let c = sim.add_client("alice");
        for b in 0..builds {
            sim.submit(
                c,
                build(&[amd64(), arm64()], &[vec![], vec![]], &format!("b{b}")),
            );
        }
        let t = std::time::Instant::now();
        let g = sim.engine.gauges();
        let gauges = t.elapsed();
        let text = m.render(&g, 0);
        let total = t.elapsed();
        println!(
            "render_cost: workers={workers} builds={builds} gauges_us={} render_us={} bytes={}",
            gauges.as_micros(),
            (total - gauges).as_micros(),
            text.len()
        );
    }
}

/// Every placement ends once in the observations, whatever ends it.
fn ended(rec: &Recorder) -> Vec<crate::engine::observe::VertexOutcome> {
    rec.seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|o| match o {
            Observation::VertexEnded { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect()
}

fn placed(rec: &Recorder) -> usize {
    rec.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|o| matches!(o, Observation::VertexPlaced { .. }))
        .count()
}

#[test]
fn a_step_stopped_by_its_time_limit_ends_as_cancelled() {
    use crate::engine::observe::VertexOutcome;
    let mut sim = FarmSim::new(EngineOptions::default());
    let rec = Recorder::default();
    sim.engine.set_observer(Box::new(rec.clone()));
    let w = sim.add_worker("n1", &["linux/amd64"], &[], 1);
    let c = sim.add_client("alice");
    let output = imgfarm_common::farm::OutputSpec {
        step_timeout_secs: Some(1),
        ..Default::default()
    };
    sim.submit_with(c, build(&[amd64()], &[], "slow"), output)
        .expect("accepted");
    sim.advance(Duration::from_secs(3));
    // The worker's answer to the cancel comes late and changes nothing.
    let keys: Vec<_> = sim
        .worker(w)
        .running
        .iter()
        .map(|r| r.key.clone())
        .collect();
    for k in keys {
        sim.fail(w, &k, "cancelled");
    }
    assert_eq!(placed(&rec), 1);
    assert_eq!(ended(&rec), [VertexOutcome::Cancelled]);
}

#[test]
fn a_step_on_a_lost_worker_ends_as_lost_and_again_where_it_runs_next() {
    use crate::engine::observe::VertexOutcome;
    let mut sim = FarmSim::new(EngineOptions::default());
    let rec = Recorder::default();
    sim.engine.set_observer(Box::new(rec.clone()));
    let a = sim.add_worker("a", &["linux/amd64"], &[], 1);
    let c = sim.add_client("alice");
    sim.submit(c, build(&[amd64()], &[], "lost"))
        .expect("accepted");
    sim.advance(Duration::from_millis(200));
    assert_eq!(placed(&rec), 1);
    sim.kill(a);
    let b = sim.add_worker("b", &["linux/amd64"], &[], 1);
    sim.advance(Duration::from_millis(200));
    while sim.finish_next(b) {}
    // One more placement than vertices: the lost one was placed again.
    let ended = ended(&rec);
    assert_eq!(placed(&rec), ended.len(), "{:?}", rec.seen.lock().unwrap());
    assert_eq!(ended[0], VertexOutcome::Lost, "{ended:?}");
    assert!(
        ended[1..].iter().all(|o| *o == VertexOutcome::Succeeded),
        "{ended:?}"
    );
}

#[test]
fn a_build_resumed_after_a_restart_is_admitted_once_and_ends_once() {
    let mut sim = FarmSim::new(EngineOptions::default());
    let c = sim.add_client("alice");
    sim.submit(c, build(&[amd64()], &[], "resumed"))
        .expect("accepted");
    // Queued (no worker) when the coordinator restarts.
    sim.restart();
    let rec = Recorder::default();
    sim.engine.set_observer(Box::new(rec.clone()));
    let w = sim.add_worker("n1", &["linux/amd64"], &[], 1);
    sim.advance(Duration::from_millis(200));
    while sim.finish_next(w) {}
    sim.run_until_idle();
    let seen = rec.seen.lock().unwrap().clone();
    let admitted = seen
        .iter()
        .filter(|o| matches!(o, Observation::BuildAdmitted))
        .count();
    let ended = seen
        .iter()
        .filter(|o| matches!(o, Observation::BuildEnded { .. }))
        .count();
    assert_eq!((admitted, ended), (1, 1), "{seen:?}");
}
