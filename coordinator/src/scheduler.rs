//! The scheduling core, free of I/O: it is told the vertices, the workers and
//! what happened (vertex finished, failed, worker lost), and it answers with
//! decisions "run vertex V on worker W". The local build drives it over an
//! in-process link, the farm over QUIC (DESIGN.md: one scheduler, two
//! transports).
//!
//! Rules (DESIGN.md "Scheduling"):
//! - a vertex runs only once all its inputs are done;
//! - a platform-bound vertex goes to a worker that runs its platform natively;
//!   only when none exists, to one that emulates it (the decision says so);
//!   never to a worker that can do neither;
//! - platform-neutral vertices (context, URL, inline files) go anywhere;
//! - among candidates the least loaded worker wins, ties by lowest id, so
//!   decisions are deterministic;
//! - at most `max_in_flight` vertices run at once overall (`--jobs`), and at
//!   most `slots` per worker;
//! - cached vertices are done from the start, and vertices needed only by
//!   cached ones are never scheduled.

use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A worker's index in the scheduler's worker list.
pub type WorkerId = usize;

/// What a worker offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Name for messages.
    pub name: String,
    /// Platforms it runs natively.
    pub native: Vec<Platform>,
    /// Platforms it can emulate (binfmt/qemu).
    pub emulated: Vec<Platform>,
    /// Vertices it may run at once.
    pub slots: usize,
}

/// A vertex as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Cache key.
    pub key: Digest,
    /// Where it must run; `None` = anywhere.
    pub platform: Option<Platform>,
    /// Keys it waits for.
    pub inputs: Vec<Digest>,
    /// True when it runs a process of its platform (RUN). Only those need
    /// native execution or emulation; file ops and exports of a platform run
    /// on any worker that serves it, and are never "emulated".
    pub runs_code: bool,
}

/// Run `key` on `worker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The vertex.
    pub key: Digest,
    /// The worker.
    pub worker: WorkerId,
    /// True when the worker emulates the vertex's platform.
    pub emulated: bool,
}

/// Why scheduling cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// No worker runs or emulates a platform.
    #[error("no worker can run {platform} (natively or emulated); workers seen: {workers}")]
    NoCandidate {
        /// The platform.
        platform: String,
        /// The workers and what they offer.
        workers: String,
    },
    /// A task refers to an input that is neither a task nor cached.
    #[error("vertex {vertex} waits for {input}, which is not in the graph")]
    MissingInput {
        /// The vertex.
        vertex: Digest,
        /// The input.
        input: Digest,
    },
    /// An event named a vertex that is not running.
    #[error("vertex {0} is not running")]
    NotRunning(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting,
    Running(WorkerId),
    Done,
    Failed,
}

/// The scheduler state machine.
#[derive(Debug)]
pub struct Scheduler {
    tasks: BTreeMap<Digest, Task>,
    state: BTreeMap<Digest, State>,
    /// Ready vertices in graph order.
    order: Vec<Digest>,
    workers: Vec<WorkerSpec>,
    load: Vec<usize>,
    lost: BTreeSet<WorkerId>,
    max_in_flight: usize,
    running: usize,
}

impl Scheduler {
    /// A scheduler for `tasks` (inputs before users) that must produce
    /// `roots`. Keys in `cached` count as done without running, and what
    /// only they need is pruned.
    pub fn new(
        tasks: Vec<Task>,
        roots: &[Digest],
        cached: &BTreeSet<Digest>,
        workers: Vec<WorkerSpec>,
        max_in_flight: usize,
    ) -> Result<Self, SchedError> {
        let by_key: BTreeMap<Digest, Task> =
            tasks.iter().map(|t| (t.key.clone(), t.clone())).collect();
        // What the roots need, stopping at cached vertices.
        let mut needed = BTreeSet::new();
        let mut todo: VecDeque<Digest> = roots.iter().cloned().collect();
        while let Some(k) = todo.pop_front() {
            if !needed.insert(k.clone()) || cached.contains(&k) {
                continue;
            }
            let Some(t) = by_key.get(&k) else { continue };
            for i in &t.inputs {
                if !by_key.contains_key(i) && !cached.contains(i) {
                    return Err(SchedError::MissingInput {
                        vertex: k.clone(),
                        input: i.clone(),
                    });
                }
                todo.push_back(i.clone());
            }
        }
        let mut state = BTreeMap::new();
        let mut order = Vec::new();
        let mut kept = BTreeMap::new();
        for t in tasks {
            if !needed.contains(&t.key) {
                continue;
            }
            let s = if cached.contains(&t.key) {
                State::Done
            } else {
                order.push(t.key.clone());
                State::Waiting
            };
            state.insert(t.key.clone(), s);
            kept.insert(t.key.clone(), t);
        }
        for k in cached {
            state.insert(k.clone(), State::Done);
        }
        let load = vec![0; workers.len()];
        Ok(Self {
            tasks: kept,
            state,
            order,
            workers,
            load,
            lost: BTreeSet::new(),
            max_in_flight: max_in_flight.max(1),
            running: 0,
        })
    }

    /// Vertices that will run (not cached, needed), in graph order.
    pub fn pending(&self) -> &[Digest] {
        &self.order
    }

    /// True when every needed vertex is done.
    pub fn is_finished(&self) -> bool {
        self.state.values().all(|s| *s == State::Done)
    }

    /// Vertices running now.
    pub fn running(&self) -> usize {
        self.running
    }

    fn ready(&self, t: &Task) -> bool {
        t.inputs
            .iter()
            .all(|i| self.state.get(i) == Some(&State::Done))
    }

    fn candidates(&self, platform: &Platform) -> (Vec<WorkerId>, bool) {
        let alive = |w: &WorkerId| !self.lost.contains(w);
        let native: Vec<WorkerId> = (0..self.workers.len())
            .filter(alive)
            .filter(|&w| self.workers[w].native.iter().any(|p| p.matches(platform)))
            .collect();
        if !native.is_empty() {
            return (native, false);
        }
        let emulated = (0..self.workers.len())
            .filter(alive)
            .filter(|&w| self.workers[w].emulated.iter().any(|p| p.matches(platform)))
            .collect();
        (emulated, true)
    }

    fn describe_workers(&self) -> String {
        if self.workers.is_empty() {
            return "none".into();
        }
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let list = |ps: &[Platform]| {
                    ps.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                format!(
                    "{} (native {}; emulated {}{})",
                    w.name,
                    list(&w.native),
                    list(&w.emulated),
                    if self.lost.contains(&i) { "; lost" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The next decisions: ready vertices placed on free worker slots, up
    /// to the in-flight bound. Errors when a ready vertex has no candidate
    /// at all.
    pub fn decide(&mut self) -> Result<Vec<Decision>, SchedError> {
        let mut out = Vec::new();
        let keys: Vec<Digest> = self.order.clone();
        for k in keys {
            if self.running >= self.max_in_flight {
                break;
            }
            if self.state.get(&k) != Some(&State::Waiting) {
                continue;
            }
            let Some(t) = self.tasks.get(&k) else {
                continue;
            };
            if !self.ready(t) {
                continue;
            }
            let (cands, emulated) = match &t.platform {
                Some(p) => {
                    let (c, e) = self.candidates(p);
                    let e = e && t.runs_code;
                    if c.is_empty() {
                        return Err(SchedError::NoCandidate {
                            platform: p.to_string(),
                            workers: self.describe_workers(),
                        });
                    }
                    (c, e)
                }
                None => {
                    let all: Vec<WorkerId> = (0..self.workers.len())
                        .filter(|w| !self.lost.contains(w))
                        .collect();
                    if all.is_empty() {
                        return Err(SchedError::NoCandidate {
                            platform: "any platform".into(),
                            workers: self.describe_workers(),
                        });
                    }
                    (all, false)
                }
            };
            let free = cands
                .into_iter()
                .filter(|&w| self.load[w] < self.workers[w].slots.max(1))
                .min_by_key(|&w| (self.load[w], w));
            let Some(w) = free else { continue };
            self.load[w] += 1;
            self.running += 1;
            self.state.insert(k.clone(), State::Running(w));
            out.push(Decision {
                key: k,
                worker: w,
                emulated,
            });
        }
        Ok(out)
    }

    fn finish(&mut self, key: &Digest, to: State) -> Result<WorkerId, SchedError> {
        match self.state.get(key) {
            Some(State::Running(w)) => {
                let w = *w;
                self.load[w] = self.load[w].saturating_sub(1);
                self.running = self.running.saturating_sub(1);
                self.state.insert(key.clone(), to);
                Ok(w)
            }
            _ => Err(SchedError::NotRunning(key.clone())),
        }
    }

    /// `key` finished with a result.
    pub fn complete(&mut self, key: &Digest) -> Result<(), SchedError> {
        self.finish(key, State::Done).map(|_| ())
    }

    /// `key` failed: the build fails (nothing else is started by the caller).
    pub fn fail(&mut self, key: &Digest) -> Result<(), SchedError> {
        self.finish(key, State::Failed).map(|_| ())
    }

    /// A worker is gone: its running vertices go back to waiting.
    pub fn worker_lost(&mut self, worker: WorkerId) -> Vec<Digest> {
        self.lost.insert(worker);
        let back: Vec<Digest> = self
            .state
            .iter()
            .filter(|(_, s)| **s == State::Running(worker))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &back {
            self.state.insert(k.clone(), State::Waiting);
            self.running = self.running.saturating_sub(1);
        }
        if let Some(l) = self.load.get_mut(worker) {
            *l = 0;
        }
        back
    }
}

#[cfg(test)]
mod tests;
