//! The scheduling core, free of I/O: it is told the vertices, the workers and
//! what happened (vertex finished, failed, worker lost), and it answers with
//! decisions "run vertex V on worker W". The local build drives it over an
//! in-process link, the farm over QUIC (DESIGN.md: one scheduler, two
//! transports).
//!
//! Rules (DESIGN.md "Scheduling", issue 6 "Scheduler"):
//! - a vertex runs only once all its inputs are done;
//! - a platform-bound vertex goes to a worker that runs its platform natively;
//!   only when none exists, to one that emulates it (the decision says so);
//!   never to a worker that can do neither;
//! - platform-neutral vertices (context, URL, inline files) go anywhere;
//! - a vertex that needs entitlements (`RUN --network=host`, `--security=insecure`) goes
//!   only to a worker whose operator allows them all;
//! - among the candidates with a free slot: the one holding most of the
//!   vertex's inputs wins (cache affinity; holding the vertex's own key counts
//!   more than all inputs together), then the least loaded, then the lowest
//!   id, so decisions are deterministic;
//! - at most `max_in_flight` vertices run at once overall (`--jobs`), and at
//!   most `slots` per worker;
//! - cached vertices are done from the start, and vertices needed only by
//!   cached ones are never scheduled;
//! - several builds share one scheduler: a key is one task however many
//!   builds need it (BuildKit's solver merges identical vertices the same way);
//! - what no build needs any more is retired ([`Scheduler::retire`]), and
//!   each worker's holdings keep only the newest keys, so a long-running
//!   coordinator's scheduler stays bounded by its active builds.

use imgfarm_common::entitlement::Entitlements;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

mod holdings;
mod placement;
mod retire;

use holdings::Holdings;

/// Keys remembered per worker for cache affinity (see
/// [`Scheduler::set_holdings_cap`]).
pub const DEFAULT_HOLDINGS_CAP: usize = 4096;

/// A worker's id: its index in the order workers were added. Ids are never
/// reused; a worker that reconnects is added again and gets a new id.
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
    /// Vertices it may run at once (0 counts as 1).
    pub slots: usize,
    /// Entitlements its operator allows (`imgfarm worker --allow-entitlement`).
    pub entitlements: Entitlements,
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
    /// Entitlements it needs ([`Entitlements::required_by`]); only workers allowing all
    /// of them are candidates.
    pub needs: Entitlements,
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

/// Where a vertex stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VertexState {
    /// Not started (its inputs may not be done yet).
    Waiting,
    /// Sent to this worker.
    Running(WorkerId),
    /// Finished with a result (or cached).
    Done,
    /// Finished with an error; a later build that needs it arms it again.
    Failed,
}

/// The outcome of one [`Scheduler::place`] round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlacementRound {
    /// Vertices now running, in graph order.
    pub decisions: Vec<Decision>,
    /// Ready vertices that no live worker can run; they stay waiting, so a
    /// worker that joins later can still take them.
    pub unplaceable: Vec<(Digest, SchedError)>,
    /// Every ready vertex was looked at. A round stops early once no slot
    /// is free anywhere (a busy farm with thousands of ready vertices);
    /// then `unplaceable` is partial and says nothing of the rest.
    pub complete: bool,
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
    /// Workers run the platform, but none allows an entitlement the vertex needs.
    #[error(
        "no worker allows the {missing} entitlement that {platform} step needs; workers \
         seen: {workers}; a worker's operator allows it with `imgfarm worker \
         --allow-entitlement {missing}`"
    )]
    NotEntitled {
        /// The entitlements the vertex needs (comma-separated).
        missing: String,
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

/// A worker and what the scheduler knows about it.
#[derive(Debug)]
struct WorkerEntry {
    spec: WorkerSpec,
    /// Vertices running on it.
    load: usize,
    lost: bool,
    /// Takes no new work (its disk is full); what runs there goes on.
    draining: bool,
    /// Keys whose results it holds (cache summary plus what it finished),
    /// newest kept.
    holds: Holdings,
}

/// The scheduler state machine.
#[derive(Debug)]
pub struct Scheduler {
    tasks: BTreeMap<Digest, Task>,
    state: BTreeMap<Digest, VertexState>,
    /// Vertices that run (not cached, needed), by `seq` (the order they
    /// were added); removing one costs a lookup, not a pass over all.
    order: BTreeMap<u64, Digest>,
    /// Position of each task in `order`, for graph-ordered ready lists.
    seq: BTreeMap<Digest, u64>,
    next_seq: u64,
    /// Waiting vertices whose inputs are all done, by `seq`.
    ready: BTreeSet<(u64, Digest)>,
    /// Who waits for a key.
    users: BTreeMap<Digest, BTreeSet<Digest>>,
    workers: Vec<WorkerEntry>,
    max_in_flight: usize,
    running: usize,
    holdings_cap: usize,
    /// Key → workers holding it (the inverse of each worker's holdings),
    /// so placement scores the workers holding a vertex's inputs without
    /// asking every worker.
    holders: HashMap<Digest, BTreeSet<WorkerId>>,
}

impl Scheduler {
    /// A scheduler without workers or tasks; at most `max_in_flight`
    /// vertices run at once (0 counts as 1).
    pub fn empty(max_in_flight: usize) -> Self {
        Self {
            tasks: BTreeMap::new(),
            state: BTreeMap::new(),
            order: BTreeMap::new(),
            seq: BTreeMap::new(),
            next_seq: 0,
            ready: BTreeSet::new(),
            users: BTreeMap::new(),
            workers: Vec::new(),
            max_in_flight: max_in_flight.max(1),
            running: 0,
            holdings_cap: DEFAULT_HOLDINGS_CAP,
            holders: HashMap::new(),
        }
    }

    /// A scheduler for one build: `tasks` (inputs before users) that must
    /// produce `roots`. Keys in `cached` count as done without running, and
    /// what only they need is pruned.
    pub fn new(
        tasks: Vec<Task>,
        roots: &[Digest],
        cached: &BTreeSet<Digest>,
        workers: Vec<WorkerSpec>,
        max_in_flight: usize,
    ) -> Result<Self, SchedError> {
        let mut s = Self::empty(max_in_flight);
        for w in workers {
            s.add_worker(w);
        }
        s.add_build(tasks, roots, cached)?;
        Ok(s)
    }

    /// A worker joins; returns its id (never one used before).
    pub fn add_worker(&mut self, spec: WorkerSpec) -> WorkerId {
        self.workers.push(WorkerEntry {
            spec,
            load: 0,
            lost: false,
            draining: false,
            holds: Holdings::new(self.holdings_cap),
        });
        self.workers.len() - 1
    }

    /// `worker` holds results for `keys` (its cache summary). Ignored for a
    /// lost or unknown worker.
    pub fn add_holdings(&mut self, worker: WorkerId, keys: impl IntoIterator<Item = Digest>) {
        for k in keys {
            self.hold(worker, k);
        }
    }

    /// `worker` holds `key` (newest); the index follows what it forgets.
    fn hold(&mut self, worker: WorkerId, key: Digest) {
        let Some(w) = self.workers.get_mut(worker).filter(|w| !w.lost) else {
            return;
        };
        let gone = w.holds.insert(key.clone());
        self.holders.entry(key).or_default().insert(worker);
        self.unhold(worker, gone);
    }

    /// `worker` no longer holds `keys`.
    fn unhold(&mut self, worker: WorkerId, keys: Vec<Digest>) {
        for k in keys {
            if let Some(ws) = self.holders.get_mut(&k) {
                ws.remove(&worker);
                if ws.is_empty() {
                    self.holders.remove(&k);
                }
            }
        }
    }

    /// Each worker remembers at most `cap` held keys (0 counts as 1; default
    /// [`DEFAULT_HOLDINGS_CAP`]), the most recently reported or finished
    /// ones: affinity is a hint, results live in the coordinator's database.
    pub fn set_holdings_cap(&mut self, cap: usize) {
        self.holdings_cap = cap.max(1);
        for id in 0..self.workers.len() {
            let gone = self.workers[id].holds.set_cap(cap);
            self.unhold(id, gone);
        }
    }

    /// How many keys `worker` is remembered to hold (0 when unknown).
    pub fn holdings(&self, worker: WorkerId) -> usize {
        self.workers.get(worker).map_or(0, |w| w.holds.len())
    }

    /// Merge a build: `tasks` (inputs before users) that must produce
    /// `roots`, with `cached` keys done already. A key already known is the
    /// same task (it runs once for all builds); a failed one that this build
    /// needs is armed again. Nothing changes when an input is missing.
    pub fn add_build(
        &mut self,
        tasks: Vec<Task>,
        roots: &[Digest],
        cached: &BTreeSet<Digest>,
    ) -> Result<(), SchedError> {
        let needed = self.needed(&tasks, roots, cached)?;
        for k in needed.iter().filter(|k| cached.contains(*k)) {
            self.mark_done(k);
        }
        for t in tasks {
            if !needed.contains(&t.key) || self.state.contains_key(&t.key) {
                continue;
            }
            self.insert_task(t);
        }
        for k in &needed {
            if self.state.get(k) == Some(&VertexState::Failed) {
                self.state.insert(k.clone(), VertexState::Waiting);
                self.arm(k);
            }
        }
        Ok(())
    }

    /// What `roots` need, stopping at done vertices; errors on an input that
    /// is nowhere.
    fn needed(
        &self,
        tasks: &[Task],
        roots: &[Digest],
        cached: &BTreeSet<Digest>,
    ) -> Result<BTreeSet<Digest>, SchedError> {
        let by_key: BTreeMap<&Digest, &Task> = tasks.iter().map(|t| (&t.key, t)).collect();
        let done = |k: &Digest| cached.contains(k) || self.state.get(k) == Some(&VertexState::Done);
        let mut needed = BTreeSet::new();
        let mut todo: VecDeque<&Digest> = roots.iter().collect();
        while let Some(k) = todo.pop_front() {
            if !needed.insert(k.clone()) || done(k) {
                continue;
            }
            let Some(t) = by_key.get(k).copied().or_else(|| self.tasks.get(k)) else {
                continue;
            };
            for i in &t.inputs {
                if !by_key.contains_key(i) && !self.tasks.contains_key(i) && !done(i) {
                    return Err(SchedError::MissingInput {
                        vertex: k.clone(),
                        input: i.clone(),
                    });
                }
                todo.push_back(i);
            }
        }
        Ok(needed)
    }

    fn insert_task(&mut self, t: Task) {
        for i in &t.inputs {
            self.users
                .entry(i.clone())
                .or_default()
                .insert(t.key.clone());
        }
        self.seq.insert(t.key.clone(), self.next_seq);
        self.order.insert(self.next_seq, t.key.clone());
        self.next_seq += 1;
        self.state.insert(t.key.clone(), VertexState::Waiting);
        let key = t.key.clone();
        self.tasks.insert(key.clone(), t);
        self.arm(&key);
    }

    /// Put `key` on the ready list if it waits and its inputs are done.
    fn arm(&mut self, key: &Digest) {
        if self.state.get(key) != Some(&VertexState::Waiting) {
            return;
        }
        let (Some(t), Some(seq)) = (self.tasks.get(key), self.seq.get(key)) else {
            return;
        };
        if t.inputs
            .iter()
            .all(|i| self.state.get(i) == Some(&VertexState::Done))
        {
            self.ready.insert((*seq, key.clone()));
        }
    }

    /// `key` is done (cached or finished): its users may become ready.
    fn mark_done(&mut self, key: &Digest) {
        match self.state.get(key) {
            Some(VertexState::Running(_)) | Some(VertexState::Done) => return,
            Some(VertexState::Waiting) => {
                if let Some(seq) = self.seq.get(key) {
                    self.ready.remove(&(*seq, key.clone()));
                }
            }
            Some(VertexState::Failed) | None => {}
        }
        self.state.insert(key.clone(), VertexState::Done);
        self.wake_users(key);
    }

    fn wake_users(&mut self, key: &Digest) {
        let users: Vec<Digest> = self
            .users
            .get(key)
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default();
        for u in &users {
            self.arm(u);
        }
    }

    /// Drop the waiting (and failed) vertices among `keys`, e.g. of a
    /// cancelled build, when no other build needs them. Running vertices go
    /// on (the caller cancels them on their worker and reports the outcome
    /// as usual); done ones stay known.
    pub fn forget(&mut self, keys: &[Digest]) {
        for k in keys {
            if matches!(
                self.state.get(k),
                Some(VertexState::Waiting) | Some(VertexState::Failed)
            ) {
                self.unlink(k);
            }
        }
    }

    /// Removes `k`'s state, ready entry, task and its place among its
    /// inputs' users.
    fn unlink(&mut self, k: &Digest) {
        self.state.remove(k);
        if let Some(seq) = self.seq.remove(k) {
            self.ready.remove(&(seq, k.clone()));
            self.order.remove(&seq);
        }
        if let Some(t) = self.tasks.remove(k) {
            for i in &t.inputs {
                if let Some(u) = self.users.get_mut(i) {
                    u.remove(k);
                    if u.is_empty() {
                        self.users.remove(i);
                    }
                }
            }
        }
    }

    /// Keys the scheduler tracks (tasks, and cached keys marked done).
    pub fn tracked(&self) -> usize {
        self.state.len()
    }

    /// Where `key` stands; `None` when it is unknown (or forgotten).
    pub fn state_of(&self, key: &Digest) -> Option<VertexState> {
        self.state.get(key).cloned()
    }

    /// Vertices that will run (not cached, needed), in graph order.
    pub fn pending(&self) -> Vec<Digest> {
        self.order.values().cloned().collect()
    }

    /// True when every needed vertex is done.
    pub fn is_finished(&self) -> bool {
        self.state.values().all(|s| *s == VertexState::Done)
    }

    /// Vertices running on worker `w` (0 for an unknown or lost one).
    pub fn load(&self, w: WorkerId) -> usize {
        self.workers.get(w).map_or(0, |e| e.load)
    }

    /// Whether worker `w` takes no new work for now.
    pub fn is_draining(&self, w: WorkerId) -> bool {
        self.workers.get(w).is_some_and(|e| e.draining)
    }

    /// Ready vertices (waiting, every input done, not placed) by platform
    /// (`none` for a vertex without one): the queue for a slot.
    pub fn ready_by_platform(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (_, k) in &self.ready {
            let p = self
                .tasks
                .get(k)
                .and_then(|t| t.platform.as_ref())
                .map(ToString::to_string)
                .unwrap_or_else(|| "none".into());
            *out.entry(p).or_insert(0) += 1;
        }
        out
    }

    /// Vertices running now.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The next decisions: ready vertices placed on free worker slots, up
    /// to the in-flight bound. Errors when a ready vertex has no candidate
    /// at all; nothing is started then.
    pub fn decide(&mut self) -> Result<Vec<Decision>, SchedError> {
        let p = self.place();
        if let Some((_, e)) = p.unplaceable.into_iter().next() {
            for d in &p.decisions {
                self.unstart(d);
            }
            return Err(e);
        }
        Ok(p.decisions)
    }

    /// The next decisions, like [`Scheduler::decide`], except that a ready
    /// vertex without any candidate stays waiting and is reported in
    /// [`PlacementRound::unplaceable`] while the others are still placed.
    pub fn place(&mut self) -> PlacementRound {
        let plan = placement::plan(self);
        for d in &plan.decisions {
            self.start(d);
        }
        plan
    }

    fn start(&mut self, d: &Decision) {
        if let Some(seq) = self.seq.get(&d.key) {
            self.ready.remove(&(*seq, d.key.clone()));
        }
        if let Some(w) = self.workers.get_mut(d.worker) {
            w.load += 1;
        }
        self.running += 1;
        self.state
            .insert(d.key.clone(), VertexState::Running(d.worker));
    }

    /// Undo [`Scheduler::start`] for a decision never handed out.
    fn unstart(&mut self, d: &Decision) {
        if let Some(w) = self.workers.get_mut(d.worker) {
            w.load = w.load.saturating_sub(1);
        }
        self.running = self.running.saturating_sub(1);
        self.state.insert(d.key.clone(), VertexState::Waiting);
        self.arm(&d.key);
    }

    fn finish(&mut self, key: &Digest, to: VertexState) -> Result<WorkerId, SchedError> {
        match self.state.get(key) {
            Some(VertexState::Running(w)) => {
                let w = *w;
                if let Some(e) = self.workers.get_mut(w) {
                    e.load = e.load.saturating_sub(1);
                }
                self.running = self.running.saturating_sub(1);
                self.state.insert(key.clone(), to);
                Ok(w)
            }
            _ => Err(SchedError::NotRunning(key.clone())),
        }
    }

    /// `key` finished with a result on its worker, which now holds it.
    pub fn complete(&mut self, key: &Digest) -> Result<(), SchedError> {
        let w = self.finish(key, VertexState::Done)?;
        self.hold(w, key.clone());
        self.wake_users(key);
        Ok(())
    }

    /// `key` could not run on its worker for the worker's own fault (its
    /// disk is full): it goes back to waiting, to run elsewhere.
    pub fn requeue(&mut self, key: &Digest) -> Result<(), SchedError> {
        self.finish(key, VertexState::Waiting)?;
        self.arm(key);
        Ok(())
    }

    /// `worker` takes no new work while `draining` (what runs there goes
    /// on); placed again once it is cleared.
    pub fn set_draining(&mut self, worker: WorkerId, draining: bool) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.draining = draining;
        }
    }

    /// `key` failed: it and what waits for it stay undone until a later
    /// [`Scheduler::add_build`] needs it again.
    pub fn fail(&mut self, key: &Digest) -> Result<(), SchedError> {
        self.finish(key, VertexState::Failed).map(|_| ())
    }

    /// A worker is gone: its running vertices go back to waiting (returned,
    /// in key order), and what it held no longer counts for affinity.
    pub fn worker_lost(&mut self, worker: WorkerId) -> Vec<Digest> {
        if let Some(w) = self.workers.get_mut(worker) {
            w.lost = true;
            w.load = 0;
            let gone = w.holds.clear();
            self.unhold(worker, gone);
        }
        let back: Vec<Digest> = self
            .state
            .iter()
            .filter(|(_, s)| **s == VertexState::Running(worker))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &back {
            self.state.insert(k.clone(), VertexState::Waiting);
            self.running = self.running.saturating_sub(1);
            self.arm(k);
        }
        back
    }
}

#[cfg(test)]
mod tests;
