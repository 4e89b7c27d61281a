//! Vertices: placing them, building their jobs, taking their results,
//! and the end of a build (index, push) once its exports are done.

use super::builds::BuildState;
use super::faults;
use super::observe::{platform_label, Observation, VertexOutcome};
use super::{Action, Dispatched, Engine, ExportOutcome, PeerId, RunOrder};
use crate::scheduler::{Decision, VertexState, WorkerId};
use imgfarm_common::farm::{self, VertexJob, VertexResult};
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{Message, RunVertex, VertexDone, VertexFinished, VertexStarted};
use std::collections::BTreeMap;

/// Why a vertex has no result.
enum Failure {
    /// The worker's error.
    Worker(String),
    /// The worker's result did not decode.
    Undecodable(String),
}

/// A worker's answer to `CancelVertex` (`worker/src/farm/session.rs`).
const CANCELLED: &str = "cancelled";

/// Why an export vertex gave no image.
fn no_manifest(platform: &str) -> String {
    format!("the export vertex for {platform} returned no image manifest; the worker's result is incomplete")
}

impl Engine {
    /// The scheduler key under which vertex `key` runs on worker `w`.
    pub(super) fn running_on(&self, w: WorkerId, key: &Digest) -> Option<Digest> {
        let here = Some(VertexState::Running(w));
        self.running
            .iter()
            .find(|(s, d)| d.worker == w && d.key == *key && self.sched.state_of(s) == here)
            .map(|(s, _)| s.clone())
    }

    pub(super) fn worker_name(&self, w: WorkerId) -> String {
        self.pool
            .session_of(w)
            .and_then(|s| self.pool.get(s))
            .map(|x| x.name.clone())
            .unwrap_or_else(|| format!("worker #{w}"))
    }

    /// Scheduler key `s` (vertex `key`) finished: every build needing it
    /// moves on.
    fn vertex_finished(&mut self, s: &Digest, key: &Digest, duration_ms: u64) {
        self.running.remove(s);
        let msg = Message::VertexFinished(VertexFinished {
            vertex_key: key.clone(),
            error: None,
            cached: false,
            duration_ms,
        });
        self.tell_users(s, &msg);
        for (id, real) in self.builds.needing(s) {
            if let Some(b) = self.builds.get_mut(&id) {
                b.mark_done(&real);
                b.finished_at(&real, self.now);
            }
            self.builds.touch(&id);
        }
    }

    /// Scheduler key `s` failed: every build needing it fails.
    pub(super) fn vertex_failed(&mut self, s: &Digest, error: &str) {
        self.running.remove(s);
        if let Err(e) = self.sched.fail(s) {
            tracing::debug!("{e}");
        }
        let users = self.builds.needing(s);
        let Some((_, key)) = users.first().cloned() else {
            // A cancelled build's vertex: nobody waits for it any more.
            self.orphans.insert(s.clone());
            return;
        };
        let msg = Message::VertexFinished(VertexFinished {
            vertex_key: key.clone(),
            error: Some(error.to_string()),
            cached: false,
            duration_ms: 0,
        });
        self.tell_users(s, &msg);
        for (id, key) in users {
            let what = self
                .builds
                .get(&id)
                .map(|b| b.describe(&key))
                .unwrap_or_else(|| key.to_string());
            self.fail_build(&id, format!("{what} failed: {error}"));
        }
    }

    /// A `VertexDone` message: its key and result decoded, then
    /// [`Engine::on_vertex_done`].
    pub(super) fn on_vertex_done_msg(&mut self, peer: PeerId, done: VertexDone) {
        let key = done.vertex_key;
        let result = match done.result {
            Ok(bytes) => farm::decode::<VertexResult>(&bytes, "vertex result")
                .map_err(|e| Failure::Undecodable(e.to_string())),
            Err(msg) => Err(Failure::Worker(msg)),
        };
        self.vertex_done(peer, &key, result, done.duration_ms);
    }

    /// Worker `peer` finished vertex `key` (the in-process worker's result
    /// comes here directly).
    pub(super) fn on_vertex_done(
        &mut self,
        peer: PeerId,
        key: &Digest,
        result: Result<VertexResult, String>,
        duration_ms: u64,
    ) {
        self.vertex_done(peer, key, result.map_err(Failure::Worker), duration_ms);
    }

    fn vertex_done(
        &mut self,
        peer: PeerId,
        key: &Digest,
        result: Result<VertexResult, Failure>,
        duration_ms: u64,
    ) {
        let Some((wid, wname)) = self.pool.get(peer).map(|w| (w.sched_id, w.name.clone())) else {
            return;
        };
        let Some(s) = self.running_on(wid, key) else {
            tracing::debug!(worker = %wname, "late VertexDone for {key} ignored (not running there)");
            return;
        };
        let placed = self.running.get(&s).cloned();
        let outcome = self.take_result(&s, peer, wid, &wname, key, result, duration_ms);
        if let Some(d) = placed {
            self.placement_ended(&d, outcome);
        }
        if outcome == VertexOutcome::Succeeded {
            self.vertex_finished(&s, key, duration_ms);
        }
    }

    /// Records how a placement ended: exactly one [`Observation::VertexEnded`] for each
    /// [`Observation::VertexPlaced`] (a result, a failure, `--step-timeout`, a lost worker).
    pub(super) fn placement_ended(&mut self, d: &Dispatched, outcome: VertexOutcome) {
        let duration = self.now.saturating_duration_since(d.started);
        self.observe(Observation::VertexEnded {
            platform: d.platform.clone(),
            emulated: d.emulated,
            outcome,
            duration,
        });
    }

    /// Takes worker `wname`'s result for scheduler key `s` (vertex `key`):
    /// records it, or fails the vertex (requeues it when the worker is out
    /// of space). Returns how the placement ended; on
    /// [`VertexOutcome::Succeeded`] the caller finishes the vertex.
    #[allow(clippy::too_many_arguments)]
    fn take_result(
        &mut self,
        s: &Digest,
        peer: PeerId,
        wid: WorkerId,
        wname: &str,
        key: &Digest,
        result: Result<VertexResult, Failure>,
        duration_ms: u64,
    ) -> VertexOutcome {
        let failed = VertexOutcome::Failed;
        let r = match result {
            Err(Failure::Undecodable(e)) => {
                self.vertex_failed(s, &format!("worker {wname} sent a {e}"));
                return failed;
            }
            Err(Failure::Worker(msg)) if faults::out_of_space(&msg) => {
                self.drain_for_space(peer, wid, s, &msg);
                return failed;
            }
            Err(Failure::Worker(msg)) => {
                tracing::info!(worker = %wname, "vertex {key} failed: {msg}");
                if self.opts.name_workers {
                    self.vertex_failed(s, &format!("{msg} (on worker {wname})"));
                } else {
                    self.vertex_failed(s, &msg);
                }
                if msg == CANCELLED {
                    return VertexOutcome::Cancelled;
                }
                return failed;
            }
            Ok(r) => r,
        };
        let refused = match self.blobs.missing(&r) {
            Ok(None) => None,
            Ok(Some(d)) => Some(format!(
                "worker {wname} reported the vertex done, but blob {d} of its result is not in the coordinator's store (the worker must put every result blob before VertexDone)"
            )),
            Err(e) => Some(format!("result from worker {wname}: {e}")),
        };
        if let Some(why) = refused {
            self.vertex_failed(s, &why);
            return failed;
        }
        if let Err(e) = self.journal.put_result(key, &r) {
            tracing::error!("{e}");
            self.vertex_failed(s, &format!("the coordinator cannot record it: {e}"));
            return failed;
        }
        if let Err(e) = self.sched.complete(s) {
            tracing::debug!("{e}");
        }
        tracing::debug!(worker = %wname, "vertex {key} done in {duration_ms} ms");
        if self.builds.needing(s).is_empty() {
            // Finished for a build that ended meanwhile: the result stays
            // in the journal, the scheduler lets it go.
            self.orphans.insert(s.clone());
        }
        VertexOutcome::Succeeded
    }

    /// The job for `order`: the vertex, its inputs, their results and the
    /// build's context, from the first build needing it. The farm shell
    /// sends it in a `RunVertex`.
    pub fn job(&mut self, order: &RunOrder) -> Result<VertexJob, String> {
        let s = &order.sched_key;
        let users = self.builds.needing(s);
        let (id, key) = users
            .first()
            .cloned()
            .ok_or_else(|| format!("no active build needs {s}"))?;
        let b = self
            .builds
            .get(&id)
            .ok_or_else(|| format!("no active build needs {s}"))?;
        let v = b
            .vertex(&key)
            .ok_or_else(|| format!("vertex {key} is not in build {}", b.id))?;
        let mut inputs = Vec::new();
        let mut input_results = Vec::new();
        for i in &v.inputs {
            let iv = b
                .vertex(i)
                .ok_or_else(|| format!("input {i} of {key} is not in build {}", b.id))?;
            inputs.push(iv.clone());
            if iv.op.is_source() || input_results.iter().any(|(k, _)| k == i) {
                continue;
            }
            let r = self
                .journal
                .get_result(i)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("the result of input {i} is missing"))?;
            input_results.push((i.clone(), r));
        }
        Ok(VertexJob {
            vertex: v.clone(),
            inputs,
            input_results,
            context: b.definition.context.clone(),
            no_cache: b.output.no_cache,
        })
    }

    /// The `RunVertex` message for `order` (the farm's form of
    /// [`Action::Run`]); `Err` fails the vertex (tell the engine with
    /// [`super::Event::VertexDone`]).
    pub fn run_message(&mut self, order: &RunOrder) -> Result<Message, String> {
        let job = self.job(order)?;
        let platform = job
            .vertex
            .platform
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        Ok(Message::RunVertex(RunVertex {
            build_id: order.build.clone(),
            vertex_key: order.key.clone(),
            platform,
            emulated: order.emulated,
            op: farm::encode(&job),
            inputs: Vec::new(),
        }))
    }

    fn dispatch(&mut self, d: Decision) {
        let Some(peer) = self.worker_session(d.worker) else {
            tracing::warn!("decision for a worker that left: {d:?}");
            self.sched.worker_lost(d.worker);
            return;
        };
        let users = self.builds.needing(&d.key);
        let Some((build, key)) = users.first().cloned() else {
            tracing::debug!("no active build needs {}; dropped", d.key);
            let _ = self.sched.fail(&d.key);
            self.orphans.insert(d.key);
            return;
        };
        let worker = self.worker_name(d.worker);
        // One line per placement: which vertex ran where (the load suite
        // counts these to prove shared vertices run once) and how long it
        // waited for a slot since it could run.
        let queue_wait_ms = self
            .builds
            .get(&build)
            .and_then(|b| b.ready_since(&key))
            .map(|t| self.now.saturating_duration_since(t).as_millis() as u64)
            .unwrap_or(0);
        tracing::info!(build = %build, worker = %worker, key = %key, queue_wait_ms, "vertex placed");
        let platform = platform_label(
            self.builds
                .get(&build)
                .and_then(|b| b.vertex(&key))
                .and_then(|v| v.platform.as_ref()),
        );
        self.observe(Observation::VertexPlaced {
            platform: platform.clone(),
            emulated: d.emulated,
            queue_wait: std::time::Duration::from_millis(queue_wait_ms),
        });
        self.actions.push_back(Action::Run {
            peer,
            order: RunOrder {
                build,
                key: key.clone(),
                sched_key: d.key.clone(),
                emulated: d.emulated,
            },
        });
        self.running.insert(
            d.key.clone(),
            Dispatched {
                worker: d.worker,
                key: key.clone(),
                emulated: d.emulated,
                platform,
                started: self.now,
            },
        );
        let msg = Message::VertexStarted(VertexStarted {
            vertex_key: key.clone(),
            worker,
            emulated: d.emulated,
        });
        self.tell_users(&d.key, &msg);
        for (id, _) in users {
            let now = self.now;
            let waited = self
                .builds
                .get_mut(&id)
                .filter(|b| b.state == BuildState::Queued)
                .map(|b| {
                    b.state = BuildState::Running;
                    b.queued_at.map(|t| now.saturating_duration_since(t))
                });
            if let Some(waited) = waited {
                // Queue wait: from admission (or resumption) to the first
                // placed step, as a structured line for bench/farm_load.sh.
                let queue_wait_ms = waited.map(|w| w.as_millis() as u64).unwrap_or(0);
                tracing::info!(build = %id, queue_wait_ms, "build started");
                self.persist_state(&id);
            }
        }
    }

    /// Places what can run, tracks what cannot, exports finished builds.
    pub(super) fn pump(&mut self) {
        self.retire_orphans();
        let placement = self.sched.place();
        for d in placement.decisions {
            self.dispatch(d);
        }
        let mut stuck: BTreeMap<String, String> = BTreeMap::new();
        for (key, err) in placement.unplaceable {
            for (id, _) in self.builds.needing(&key) {
                stuck.entry(id).or_insert_with(|| err.to_string());
            }
        }
        // A partial round (every slot busy) only adds: what it did not look
        // at may still be stuck.
        if placement.complete {
            self.no_candidate.retain(|id, _| stuck.contains_key(id));
        }
        let now = self.now;
        for (id, why) in stuck {
            self.no_candidate.entry(id).or_insert((now, why));
        }
        for id in self.builds.ready_to_export() {
            self.export(&id);
        }
        // A grace of zero (the local build) fails at once.
        if self.opts.no_candidate_grace.is_zero() && self.opts.startup_grace.is_zero() {
            self.check_grace();
        }
    }

    /// Asks the shell to make build `id`'s outputs from the manifests of
    /// its export vertices.
    fn export(&mut self, id: &str) {
        let Some(b) = self.builds.get_mut(id) else {
            return;
        };
        b.exporting = true;
        let targets = b.definition.targets.clone();
        let output = b.output.clone();
        let mut manifests = Vec::new();
        for t in &targets {
            let r = self.journal.get_result(&t.export).ok().flatten();
            match r.and_then(|r| r.manifest) {
                Some(m) => manifests.push((t.platform.clone(), m)),
                None => return self.fail_build(id, no_manifest(&t.platform)),
            }
        }
        self.actions.push_back(Action::Export {
            build: id.to_string(),
            manifests,
            output,
        });
    }

    pub(super) fn finish_export(&mut self, id: &str, outcome: ExportOutcome) {
        match outcome {
            ExportOutcome::Done {
                manifests,
                index,
                pushed,
            } => self.end_build(id, BuildState::Done, Ok(manifests), index, pushed),
            ExportOutcome::Failed { index, error } => {
                self.end_build(id, BuildState::Failed, Err(error), index, vec![])
            }
        }
    }

    /// Fails builds that waited too long for a candidate worker.
    pub(super) fn check_grace(&mut self) {
        let (now, grace) = (self.now, self.opts.no_candidate_grace);
        if now.saturating_duration_since(self.started) < self.opts.startup_grace {
            return;
        }
        let late: Vec<(String, String)> = self
            .no_candidate
            .iter()
            .filter(|(_, (since, _))| now.saturating_duration_since(*since) >= grace)
            .map(|(id, (_, why))| (id.clone(), why.clone()))
            .collect();
        for (id, why) in late {
            let msg = if grace.is_zero() {
                why
            } else {
                format!(
                    "{why} (waited {} s for one to connect)",
                    grace.as_secs_f64().round()
                )
            };
            self.fail_build(&id, msg);
        }
    }
}
