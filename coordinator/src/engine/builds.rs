//! Build bookkeeping, free of I/O: what a submitted build needs, which of
//! its vertices are finished, which must run again despite a cached result,
//! and when it is ready to export.
//!
//! Rules (FARM.md, DESIGN.md "Cache keys"):
//! - a build needs the vertices its export vertices reach;
//! - source vertices (`Op::Context`, `Op::Inline`, `Op::Url`) are never
//!   dispatched: they are done at once and every worker re-solves them;
//! - a vertex the one reuse rule ([`reuse::fresh`]: fed by an `ADD URL`
//!   without a checksum, or `--no-cache`) marks fresh is never served from
//!   the journal's results;
//! - the build is ready to export once every export vertex is done.
//!
//! Scheduler keys: a vertex this build may not reuse goes to the (global)
//! scheduler under a key salted with the build id ([`Build::sched_key`]),
//! so it runs again for this build even if an earlier build finished the
//! same vertex key. Every other vertex keeps its key, so identical vertices
//! of concurrent builds run once.

use crate::scheduler::Task;
use imgfarm_common::farm::{FarmDefinition, OutputSpec};
use imgfarm_common::graph::op::Op;
use imgfarm_common::graph::reuse;
use imgfarm_common::graph::Vertex;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{BuildFinished, BuildStatus};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

/// Where a build is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildState {
    /// Accepted, nothing placed yet.
    Queued,
    /// At least one vertex was placed or finished.
    Running,
    /// Exported (and pushed when asked).
    Done,
    /// A vertex, the export or the push failed.
    Failed,
    /// The client cancelled it.
    Cancelled,
}

impl BuildState {
    /// The name stored in the database and shown by `imgfarm farm status`.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Running => "running",
            BuildState::Done => "done",
            BuildState::Failed => "failed",
            BuildState::Cancelled => "cancelled",
        }
    }

    /// Parses [`BuildState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => BuildState::Queued,
            "running" => BuildState::Running,
            "done" => BuildState::Done,
            "failed" => BuildState::Failed,
            "cancelled" => BuildState::Cancelled,
            _ => return None,
        })
    }

    /// Queued or running (not ended).
    pub fn is_active(self) -> bool {
        matches!(self, BuildState::Queued | BuildState::Running)
    }
}

/// The scheduler key of a vertex that must run again for build `id`.
fn salt(id: &str, key: &Digest) -> Digest {
    Digest::sha256_of(format!("imgfarm fresh vertex/{id}/{key}").as_bytes())
}

/// One build as the coordinator tracks it.
#[derive(Debug)]
pub struct Build {
    /// Build id (what clients re-attach with).
    pub id: String,
    /// The submitting client's certificate name.
    pub client: String,
    /// The definition as submitted.
    pub definition: FarmDefinition,
    /// Where the result goes. Credentials live here, in memory only.
    pub output: OutputSpec,
    /// True when the submitter lent credentials: after a restart (they are
    /// not stored) the push waits until a client re-attaches with them.
    pub had_credentials: bool,
    /// Seconds since the epoch at submission.
    pub created: u64,
    /// Life cycle.
    pub state: BuildState,
    /// The final message, once ended.
    pub finished: Option<BuildFinished>,
    /// Control sessions of attached clients.
    pub attached: BTreeSet<u64>,
    /// The merged index is being made or pushed.
    pub exporting: bool,
    /// When the build fails for exceeding `--timeout`.
    pub deadline: Option<Instant>,
    /// Since when no client is attached (after a restart, or once the last
    /// one left); cleared when one attaches.
    pub unattached_since: Option<Instant>,
    /// When the engine took the build in (admitted, or resumed after a
    /// restart): its queue wait runs from here to its first placed step.
    pub queued_at: Option<Instant>,
    /// When each vertex finished in this run (for [`Build::ready_since`]).
    done_at: HashMap<Digest, Instant>,
    index: HashMap<Digest, usize>,
    needed: BTreeSet<Digest>,
    done: BTreeSet<Digest>,
    fresh: BTreeSet<Digest>,
    /// Salted scheduler key → vertex key, for the fresh vertices.
    salted: HashMap<Digest, Digest>,
}

impl Build {
    /// Tracks a validated definition (see [`FarmDefinition::validate`]).
    pub fn new(
        id: String,
        client: String,
        definition: FarmDefinition,
        output: OutputSpec,
        created: u64,
    ) -> Self {
        let index: HashMap<Digest, usize> = definition
            .vertices
            .iter()
            .enumerate()
            .map(|(i, v)| (v.key.clone(), i))
            .collect();
        // What the exports reach.
        let mut needed = BTreeSet::new();
        let mut todo: Vec<Digest> = definition
            .targets
            .iter()
            .map(|t| t.export.clone())
            .collect();
        while let Some(k) = todo.pop() {
            if !needed.insert(k.clone()) {
                continue;
            }
            if let Some(&i) = index.get(&k) {
                todo.extend(definition.vertices[i].inputs.iter().cloned());
            }
        }
        let fresh = reuse::fresh(&definition.vertices, output.no_cache);
        let had_credentials = !output.credentials.is_empty();
        let salted = fresh.iter().map(|k| (salt(&id, k), k.clone())).collect();
        Self {
            id,
            client,
            definition,
            output,
            had_credentials,
            created,
            state: BuildState::Queued,
            finished: None,
            attached: BTreeSet::new(),
            exporting: false,
            deadline: None,
            unattached_since: None,
            queued_at: None,
            done_at: HashMap::new(),
            index,
            needed,
            done: BTreeSet::new(),
            fresh,
            salted,
        }
    }

    /// The key the scheduler knows vertex `key` by in this build.
    pub fn sched_key(&self, key: &Digest) -> Digest {
        if self.fresh.contains(key) {
            salt(&self.id, key)
        } else {
            key.clone()
        }
    }

    /// The vertex key behind scheduler key `s`, when this build needs it
    /// under that key.
    pub fn real_key(&self, s: &Digest) -> Option<Digest> {
        let real = match self.salted.get(s) {
            Some(r) => r.clone(),
            None if self.fresh.contains(s) => return None,
            None => s.clone(),
        };
        self.needed.contains(&real).then_some(real)
    }

    /// Salted scheduler keys of this build.
    pub fn salted_keys(&self) -> impl Iterator<Item = (&Digest, &Digest)> {
        self.salted.iter()
    }

    /// The vertex with `key`, if the build has it.
    pub fn vertex(&self, key: &Digest) -> Option<&Vertex> {
        self.index.get(key).map(|&i| &self.definition.vertices[i])
    }

    /// Does the build need `key` (reached from an export)?
    pub fn needs(&self, key: &Digest) -> bool {
        self.needed.contains(key)
    }

    /// May `key`'s result come from the coordinator's cache?
    pub fn reusable(&self, key: &Digest) -> bool {
        !self.fresh.contains(key)
    }

    /// Needed source vertices (done at once).
    pub fn sources(&self) -> Vec<Digest> {
        self.needed_vertices()
            .filter(|v| v.op.is_source())
            .map(|v| v.key.clone())
            .collect()
    }

    /// Needed vertices, inputs before users.
    pub fn needed_vertices(&self) -> impl Iterator<Item = &Vertex> {
        self.definition
            .vertices
            .iter()
            .filter(|v| self.needed.contains(&v.key))
    }

    /// Vertices done at once for this build: sources, plus those whose
    /// result the coordinator holds (`has_result`) and may reuse.
    pub fn done_at_start(&self, has_result: impl Fn(&Digest) -> bool) -> BTreeSet<Digest> {
        self.needed_vertices()
            .filter(|v| v.op.is_source() || (self.reusable(&v.key) && has_result(&v.key)))
            .map(|v| v.key.clone())
            .collect()
    }

    /// The scheduler's view of the needed vertices, under scheduler keys
    /// (sources included: the caller passes them as cached).
    pub fn tasks(&self) -> Vec<Task> {
        self.needed_vertices()
            .map(|v| Task {
                key: self.sched_key(&v.key),
                platform: v.platform.clone(),
                inputs: v.inputs.iter().map(|i| self.sched_key(i)).collect(),
                runs_code: matches!(v.op, Op::Exec(_)),
            })
            .collect()
    }

    /// Every needed vertex under its scheduler key, inputs before users:
    /// what the scheduler may know for this build.
    pub fn sched_keys(&self) -> Vec<Digest> {
        self.needed_vertices()
            .map(|v| self.sched_key(&v.key))
            .collect()
    }

    /// The export vertices, in request order, under scheduler keys.
    pub fn roots(&self) -> Vec<Digest> {
        self.definition
            .targets
            .iter()
            .map(|t| self.sched_key(&t.export))
            .collect()
    }

    /// Records `key` as finished; true when it is needed and was not yet.
    pub fn mark_done(&mut self, key: &Digest) -> bool {
        self.needed.contains(key) && self.done.insert(key.clone())
    }

    /// Records that needed vertex `key` finished at `now`.
    pub fn finished_at(&mut self, key: &Digest, now: Instant) {
        if self.needed.contains(key) {
            self.done_at.insert(key.clone(), now);
        }
    }

    /// Since when vertex `key` could run: when the engine took the build in
    /// ([`Build::queued_at`]), or when the last of its inputs finished after that.
    /// Placed at `t`, its queue wait is `t - ready_since`.
    pub fn ready_since(&self, key: &Digest) -> Option<Instant> {
        let start = self.queued_at?;
        let inputs = self.vertex(key).map(|v| v.inputs.as_slice()).unwrap_or(&[]);
        Some(
            inputs
                .iter()
                .filter_map(|i| self.done_at.get(i))
                .copied()
                .fold(start, Instant::max),
        )
    }

    /// Is `key` finished for this build?
    pub fn is_done(&self, key: &Digest) -> bool {
        self.done.contains(key)
    }

    /// Finished vertices, in graph order.
    pub fn done_keys(&self) -> Vec<Digest> {
        self.needed_vertices()
            .filter(|v| self.done.contains(&v.key))
            .map(|v| v.key.clone())
            .collect()
    }

    /// Needed vertices not finished yet.
    pub fn unfinished(&self) -> Vec<Digest> {
        self.needed_vertices()
            .filter(|v| !self.done.contains(&v.key))
            .map(|v| v.key.clone())
            .collect()
    }

    /// Every export vertex finished: the index can be made.
    pub fn ready_to_export(&self) -> bool {
        self.state.is_active()
            && !self.exporting
            && !self.awaiting_credentials()
            && self
                .definition
                .targets
                .iter()
                .all(|t| self.done.contains(&t.export))
    }

    /// Credentials were lent before a restart and are gone: the push waits
    /// for a client to re-attach with them.
    pub fn awaiting_credentials(&self) -> bool {
        self.had_credentials && self.output.credentials.is_empty() && !self.output.push.is_empty()
    }

    /// A name for `key` in messages: its progress line, else the key.
    pub fn describe(&self, key: &Digest) -> String {
        match self.vertex(key) {
            Some(v) if !v.description.is_empty() => {
                let plat = v
                    .platform
                    .as_ref()
                    .map(|p| format!("{p} "))
                    .unwrap_or_default();
                format!("{plat}{} ({})", v.description, key.short())
            }
            _ => key.to_string(),
        }
    }

    /// The row for `imgfarm farm status`.
    pub fn status(&self) -> BuildStatus {
        BuildStatus {
            id: self.id.clone(),
            state: self.state.as_str().into(),
            platforms: self
                .definition
                .targets
                .iter()
                .map(|t| t.platform.clone())
                .collect(),
            client: self.client.clone(),
            vertices_total: self.needed.len() as u64,
            vertices_done: self.done.len() as u64,
            title: self.definition.title.clone(),
        }
    }
}

/// Every build the coordinator knows in this run, active or ended.
#[derive(Debug, Default)]
pub struct Builds {
    by_id: BTreeMap<String, Build>,
    /// Ids in submission order.
    order: Vec<String>,
    /// Scheduler key → builds in memory that know it, oldest first: finding
    /// a key's builds costs its users, not every build (1,000 concurrent
    /// builds in `bench/farm_scale.sh`).
    users: HashMap<Digest, Vec<String>>,
    /// Builds whose exports may have become ready since the last
    /// [`Builds::ready_to_export`] (checking every build after every event
    /// would cost the number of builds each time).
    touched: BTreeSet<String>,
}

impl Builds {
    /// Adds a build.
    pub fn insert(&mut self, b: Build) {
        for k in b.sched_keys() {
            self.users.entry(k).or_default().push(b.id.clone());
        }
        self.order.push(b.id.clone());
        self.touched.insert(b.id.clone());
        self.by_id.insert(b.id.clone(), b);
    }

    /// Build `id` changed (a vertex finished, credentials came back): check
    /// it at the next [`Builds::ready_to_export`].
    pub fn touch(&mut self, id: &str) {
        self.touched.insert(id.to_string());
    }

    /// The build `id`.
    pub fn get(&self, id: &str) -> Option<&Build> {
        self.by_id.get(id)
    }

    /// The build `id`, mutable.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Build> {
        self.by_id.get_mut(id)
    }

    /// Active builds needing scheduler key `s`, oldest first, with the
    /// vertex key it stands for in each.
    pub fn needing(&self, s: &Digest) -> Vec<(String, Digest)> {
        let Some(ids) = self.users.get(s) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| self.by_id.get(id))
            .filter(|b| b.state.is_active())
            .filter_map(|b| b.real_key(s).map(|k| (b.id.clone(), k)))
            .collect()
    }

    /// Active builds, oldest first.
    pub fn active(&self) -> impl Iterator<Item = &Build> {
        self.order
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .filter(|b| b.state.is_active())
    }

    /// Ids of active builds ready to export, of those touched since the
    /// last call.
    pub fn ready_to_export(&mut self) -> Vec<String> {
        std::mem::take(&mut self.touched)
            .into_iter()
            .filter(|id| self.by_id.get(id).is_some_and(|b| b.ready_to_export()))
            .collect()
    }

    /// Of scheduler keys `keys` (of build `id`, which ends), those no other
    /// active build needs.
    pub fn needed_only_by(&self, id: &str, keys: &[Digest]) -> Vec<Digest> {
        keys.iter()
            .filter(|k| self.needing(k).iter().all(|(other, _)| other == id))
            .cloned()
            .collect()
    }

    /// Drops ended builds beyond the newest `keep` (their outcome stays in
    /// the database), bounding memory on a long-running coordinator.
    pub fn prune_ended(&mut self, keep: usize) {
        let ended: Vec<String> = self
            .order
            .iter()
            .filter(|id| self.by_id.get(*id).is_some_and(|b| !b.state.is_active()))
            .cloned()
            .collect();
        let drop_n = ended.len().saturating_sub(keep);
        let gone: BTreeSet<String> = ended.into_iter().take(drop_n).collect();
        for id in &gone {
            if let Some(b) = self.by_id.remove(id) {
                for k in b.sched_keys() {
                    if let Some(ids) = self.users.get_mut(&k) {
                        ids.retain(|i| i != id);
                        if ids.is_empty() {
                            self.users.remove(&k);
                        }
                    }
                }
            }
        }
        if !gone.is_empty() {
            self.order.retain(|o| !gone.contains(o));
        }
    }

    /// Detaches a closed client session from every build; a build left
    /// without clients is unattached from `now`.
    pub fn detach(&mut self, session: u64, now: Instant) {
        for b in self.by_id.values_mut() {
            if b.attached.remove(&session) && b.attached.is_empty() {
                b.unattached_since = Some(now);
            }
        }
    }
}

#[cfg(test)]
#[path = "builds_tests.rs"]
mod tests;
