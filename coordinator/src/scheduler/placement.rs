//! One placement round, computed without changing the scheduler: which
//! ready vertex goes to which worker (issue 6 "Scheduler": native before
//! emulated, then cache affinity, then load, then id).

use super::{Decision, Placement, SchedError, Scheduler, Task, WorkerEntry, WorkerId};
use imgfarm_common::platform::Platform;
use std::collections::BTreeMap;

/// Live workers that may run `platform` and whether they emulate it:
/// the native ones when there are any, else the emulating ones.
fn candidates(workers: &[WorkerEntry], platform: Option<&Platform>) -> (Vec<WorkerId>, bool) {
    let alive = || (0..workers.len()).filter(|&w| !workers[w].lost);
    let Some(p) = platform else {
        return (alive().collect(), false);
    };
    let native: Vec<WorkerId> = alive()
        .filter(|&w| workers[w].spec.native.iter().any(|n| n.matches(p)))
        .collect();
    if !native.is_empty() {
        return (native, false);
    }
    let emulated = alive()
        .filter(|&w| workers[w].spec.emulated.iter().any(|e| e.matches(p)))
        .collect();
    (emulated, true)
}

/// How much of `t` the worker already holds: one point per input, and more
/// than all inputs together for the vertex's own result.
fn affinity(w: &WorkerEntry, t: &Task) -> usize {
    if w.holds.is_empty() {
        return 0;
    }
    let own = if w.holds.contains(&t.key) {
        t.inputs.len() + 1
    } else {
        0
    };
    own + t.inputs.iter().filter(|i| w.holds.contains(i)).count()
}

fn describe_workers(workers: &[WorkerEntry]) -> String {
    if workers.is_empty() {
        return "none".into();
    }
    let list = |ps: &[Platform]| {
        ps.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    workers
        .iter()
        .map(|w| {
            format!(
                "{} (native {}; emulated {}{})",
                w.spec.name,
                list(&w.spec.native),
                list(&w.spec.emulated),
                if w.lost { "; lost" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The decisions of one round over the ready list, in graph order.
pub(super) fn plan(s: &Scheduler) -> Placement {
    let mut out = Placement::default();
    let mut load: Vec<usize> = s.workers.iter().map(|w| w.load).collect();
    let mut running = s.running;
    let mut by_platform: BTreeMap<Option<&Platform>, (Vec<WorkerId>, bool)> = BTreeMap::new();
    let mut described: Option<String> = None;
    for (_, key) in &s.ready {
        let Some(t) = s.tasks.get(key) else { continue };
        let (cands, emulating) = by_platform
            .entry(t.platform.as_ref())
            .or_insert_with(|| candidates(&s.workers, t.platform.as_ref()));
        if cands.is_empty() {
            let workers = described
                .get_or_insert_with(|| describe_workers(&s.workers))
                .clone();
            let platform = t
                .platform
                .as_ref()
                .map_or_else(|| "any platform".to_string(), |p| p.to_string());
            out.unplaceable
                .push((key.clone(), SchedError::NoCandidate { platform, workers }));
            continue;
        }
        if running >= s.max_in_flight {
            continue;
        }
        let best = cands
            .iter()
            .copied()
            .filter(|&w| load[w] < s.workers[w].spec.slots.max(1))
            .min_by_key(|&w| (std::cmp::Reverse(affinity(&s.workers[w], t)), load[w], w));
        let Some(w) = best else { continue };
        load[w] += 1;
        running += 1;
        out.decisions.push(Decision {
            key: key.clone(),
            worker: w,
            emulated: *emulating && t.runs_code,
        });
    }
    out
}
