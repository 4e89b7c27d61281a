//! One placement round, computed without changing the scheduler: which
//! ready vertex goes to which worker (issue 6 "Scheduler": native before
//! emulated, then cache affinity, then load, then id).

use super::{Decision, PlacementRound, SchedError, Scheduler, Task, WorkerEntry, WorkerId};
use imgfarm_common::entitlement::Entitlements;
use imgfarm_common::platform::Platform;
use std::collections::BTreeMap;

/// Live workers that may run `platform` and allow `needs`, and whether they emulate it:
/// the native ones when there are any, else the emulating ones.
fn candidates(
    workers: &[WorkerEntry],
    platform: Option<&Platform>,
    needs: &Entitlements,
) -> (Vec<WorkerId>, bool) {
    let alive = || {
        (0..workers.len()).filter(|&w| {
            !workers[w].lost && !workers[w].draining && workers[w].spec.entitlements.allows(needs)
        })
    };
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

/// How much of `t` each worker holding part of it holds: one point per
/// input, and more than all inputs together for the vertex's own result.
/// Workers holding nothing of it are absent (they score 0).
fn affinity(s: &Scheduler, t: &Task) -> BTreeMap<WorkerId, usize> {
    let mut score: BTreeMap<WorkerId, usize> = BTreeMap::new();
    if let Some(ws) = s.holders.get(&t.key) {
        for &w in ws {
            *score.entry(w).or_default() += t.inputs.len() + 1;
        }
    }
    for i in &t.inputs {
        if let Some(ws) = s.holders.get(i) {
            for &w in ws {
                *score.entry(w).or_default() += 1;
            }
        }
    }
    score
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
                "{} (native {}; emulated {}{}{})",
                w.spec.name,
                list(&w.spec.native),
                list(&w.spec.emulated),
                if w.spec.entitlements.is_empty() {
                    String::new()
                } else {
                    format!("; allows {}", w.spec.entitlements)
                },
                if w.lost {
                    "; lost"
                } else if w.draining {
                    "; draining: its disk is full"
                } else {
                    ""
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The decisions of one round over the ready list, in graph order.
pub(super) fn plan(s: &Scheduler) -> PlacementRound {
    let mut out = PlacementRound::default();
    let mut load: Vec<usize> = s.workers.iter().map(|w| w.load).collect();
    let mut running = s.running;
    type Candidates = (Vec<WorkerId>, bool, bool);
    let mut by_platform: BTreeMap<(Option<&Platform>, &Entitlements), Candidates> = BTreeMap::new();
    let mut described: Option<String> = None;
    // Free slots over all live workers: none left, nothing more can start,
    // and the rest of the ready list is not looked at (with no live worker
    // at all, every ready vertex is looked at: each is unplaceable).
    let any_live = s.workers.iter().any(|w| !w.lost && !w.draining);
    let mut free: usize = s
        .workers
        .iter()
        .filter(|w| !w.lost && !w.draining)
        .map(|w| w.spec.slots.max(1).saturating_sub(w.load))
        .sum();
    out.complete = true;
    for (_, key) in &s.ready {
        if any_live && (free == 0 || running >= s.max_in_flight) {
            out.complete = false;
            break;
        }
        let Some(t) = s.tasks.get(key) else { continue };
        let (cands, emulating, full) = by_platform
            .entry((t.platform.as_ref(), &t.needs))
            .or_insert_with(|| {
                let (c, e) = candidates(&s.workers, t.platform.as_ref(), &t.needs);
                (c, e, false)
            });
        if cands.is_empty() {
            let workers = described
                .get_or_insert_with(|| describe_workers(&s.workers))
                .clone();
            let platform = t
                .platform
                .as_ref()
                .map_or_else(|| "any platform".to_string(), |p| p.to_string());
            let serves = !t.needs.is_empty()
                && !candidates(&s.workers, t.platform.as_ref(), &Entitlements::none())
                    .0
                    .is_empty();
            let e = if serves {
                SchedError::NotEntitled {
                    missing: t.needs.to_string(),
                    platform,
                    workers,
                }
            } else {
                SchedError::NoCandidate { platform, workers }
            };
            out.unplaceable.push((key.clone(), e));
            continue;
        }
        if running >= s.max_in_flight {
            continue;
        }
        if *full {
            continue;
        }
        let has_slot = |w: WorkerId, load: &[usize]| load[w] < s.workers[w].spec.slots.max(1);
        // Most affinity first, then least loaded, then lowest id. Workers
        // holding part of the vertex beat every other; only when none of
        // them has a slot are all candidates compared by load.
        let scored = affinity(s, t)
            .into_iter()
            .filter(|(w, _)| cands.binary_search(w).is_ok() && has_slot(*w, &load))
            .min_by_key(|&(w, score)| (std::cmp::Reverse(score), load[w], w))
            .map(|(w, _)| w);
        let best = scored.or_else(|| {
            cands
                .iter()
                .copied()
                .filter(|&w| has_slot(w, &load))
                .min_by_key(|&w| (load[w], w))
        });
        let Some(w) = best else {
            // Loads only grow within a round: this platform is full.
            *full = true;
            continue;
        };
        load[w] += 1;
        running += 1;
        free -= 1;
        out.decisions.push(Decision {
            key: key.clone(),
            worker: w,
            emulated: *emulating && t.runs_code,
        });
    }
    out
}
