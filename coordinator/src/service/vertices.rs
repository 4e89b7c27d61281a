//! Vertices: placing them, building their jobs, taking their results,
//! and the end of a build (index, push) once its exports are done.

use super::builds::BuildState;
use super::core::{persist_state, Core, Dispatched};
use super::export::{make_index, missing_blob, MergedIndex};
use super::pool::parse_key;
use super::Input;
use crate::scheduler::{Decision, VertexState, WorkerId};
use imgfarm_common::farm::{self, VertexJob, VertexResult};
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{Message, RunVertex, VertexDone, VertexFinished, VertexStarted};
use std::collections::BTreeMap;
use std::time::Instant;

impl Core {
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
    pub(super) fn vertex_finished(&mut self, s: &Digest, key: &Digest, duration_ms: u64) {
        self.running.remove(s);
        let msg = Message::VertexFinished(VertexFinished {
            vertex_key: key.to_string(),
            error: None,
            cached: false,
            duration_ms,
        });
        self.to_users(s, &msg);
        for (id, real) in self.builds.needing(s) {
            if let Some(b) = self.builds.get_mut(&id) {
                b.mark_done(&real);
            }
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
            vertex_key: key.to_string(),
            error: Some(error.to_string()),
            cached: false,
            duration_ms: 0,
        });
        self.to_users(s, &msg);
        for (id, key) in users {
            let what = self
                .builds
                .get(&id)
                .map(|b| b.describe(&key))
                .unwrap_or_else(|| key.to_string());
            self.fail_build(&id, format!("{what} failed: {error}"));
        }
    }

    pub(super) fn on_vertex_done(&mut self, session: u64, done: VertexDone) {
        let Some(w) = self.pool.get(session).map(|w| (w.sched_id, w.name.clone())) else {
            return;
        };
        let (wid, wname) = w;
        let Some(key) = parse_key(&done.vertex_key) else {
            tracing::warn!(worker = %wname, "VertexDone for {:?}, which is not a vertex key", done.vertex_key);
            return;
        };
        let Some(s) = self.running_on(wid, &key) else {
            tracing::debug!(worker = %wname, "late VertexDone for {key} ignored (not running there)");
            return;
        };
        let result = match done.result {
            Err(msg) => {
                tracing::info!(worker = %wname, "vertex {key} failed: {msg}");
                return self.vertex_failed(&s, &format!("{msg} (on worker {wname})"));
            }
            Ok(bytes) => bytes,
        };
        let r: VertexResult = match farm::decode(&result, "vertex result") {
            Ok(r) => r,
            Err(e) => {
                return self.vertex_failed(&s, &format!("worker {wname} sent a {e}"));
            }
        };
        match missing_blob(&self.store, &r) {
            Ok(None) => {}
            Ok(Some(d)) => {
                return self.vertex_failed(
                    &s,
                    &format!(
                        "worker {wname} reported the vertex done, but blob {d} of its result is not in the coordinator's store (the worker must put every result blob before VertexDone)"
                    ),
                )
            }
            Err(e) => {
                return self.vertex_failed(&s, &format!("result from worker {wname}: {e}"))
            }
        }
        if let Err(e) = self.queue.put_result(&key, &r) {
            tracing::error!("{e}");
            return self.vertex_failed(&s, &format!("the coordinator cannot record it: {e}"));
        }
        if let Err(e) = self.sched.complete(&s) {
            tracing::debug!("{e}");
        }
        tracing::debug!(worker = %wname, "vertex {key} done in {} ms", done.duration_ms);
        if self.builds.needing(&s).is_empty() {
            // Finished for a build that ended meanwhile: the result stays
            // in the database, the scheduler lets it go.
            self.orphans.insert(s.clone());
        }
        self.vertex_finished(&s, &key, done.duration_ms);
    }

    /// The job for scheduler key `s`, from the first build needing it.
    pub(super) fn job(&self, s: &Digest) -> Result<(String, VertexJob), String> {
        let users = self.builds.needing(s);
        let (b, key) = users
            .first()
            .and_then(|(id, k)| self.builds.get(id).map(|b| (b, k)))
            .ok_or_else(|| format!("no active build needs {s}"))?;
        let v = b
            .vertex(key)
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
                .queue
                .get_result(i)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("the result of input {i} is missing"))?;
            input_results.push((i.clone(), r));
        }
        Ok((
            b.id.clone(),
            VertexJob {
                vertex: v.clone(),
                inputs,
                input_results,
                context: b.definition.context.clone(),
                no_cache: b.output.no_cache,
            },
        ))
    }

    pub(super) fn dispatch(&mut self, d: Decision) {
        let Some(session) = self.pool.session_of(d.worker) else {
            tracing::warn!("decision for a worker that left: {d:?}");
            self.sched.worker_lost(d.worker);
            return;
        };
        let (build_id, job) = match self.job(&d.key) {
            Ok(j) => j,
            Err(e) if self.builds.needing(&d.key).is_empty() => {
                tracing::debug!("{e}; dropped");
                let _ = self.sched.fail(&d.key);
                self.orphans.insert(d.key);
                return;
            }
            Err(e) => return self.vertex_failed(&d.key, &e),
        };
        let platform = job
            .vertex
            .platform
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let worker = self.worker_name(d.worker);
        let key = job.vertex.key.clone();
        tracing::debug!(build = %build_id, worker = %worker, "run {key} {}", job.vertex.description);
        self.send(
            session,
            Message::RunVertex(RunVertex {
                build_id,
                vertex_key: key.to_string(),
                platform,
                emulated: d.emulated,
                op: farm::encode(&job),
                inputs: Vec::new(),
            }),
        );
        self.running.insert(
            d.key.clone(),
            Dispatched {
                worker: d.worker,
                key: key.clone(),
                emulated: d.emulated,
            },
        );
        let msg = Message::VertexStarted(VertexStarted {
            vertex_key: key.to_string(),
            worker,
            emulated: d.emulated,
        });
        self.to_users(&d.key, &msg);
        for (id, _) in self.builds.needing(&d.key) {
            if let Some(b) = self.builds.get_mut(&id) {
                if b.state == BuildState::Queued {
                    b.state = BuildState::Running;
                    persist_state(&self.queue, b);
                }
            }
        }
    }

    /// Places what can run, tracks what cannot, exports finished builds.
    pub(super) fn pump(&mut self, now: Instant) {
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
        self.no_candidate.retain(|id, _| stuck.contains_key(id));
        for (id, why) in stuck {
            self.no_candidate.entry(id).or_insert((now, why));
        }
        for id in self.builds.ready_to_export() {
            self.export(&id);
        }
    }

    pub(super) fn export(&mut self, id: &str) {
        let Some(b) = self.builds.get_mut(id) else {
            return;
        };
        b.exporting = true;
        let targets = b.definition.targets.clone();
        let output = b.output.clone();
        let mut per_platform = Vec::new();
        for t in &targets {
            let r = self.queue.get_result(&t.export).ok().flatten();
            match r.and_then(|r| r.manifest) {
                Some(m) => per_platform.push((t.platform.clone(), m)),
                None => {
                    let e = super::export::ExportError::NoManifest {
                        platform: t.platform.clone(),
                    };
                    return self.fail_build(id, e.to_string());
                }
            }
        }
        let merged = match make_index(&self.store, &per_platform) {
            Ok(m) => m,
            Err(e) => return self.fail_build(id, e.to_string()),
        };
        if output.push.is_empty() {
            return self.finish_export(id, merged, Ok(Vec::new()));
        }
        tracing::info!(build = %id, "pushing {} to {}", merged.index.digest, output.push.join(", "));
        let (store, tx, id) = (self.store.clone(), self.inputs.clone(), id.to_string());
        // The registry client's push future is not `Send` (higher-ranked
        // closures in its upload stream), so it runs on a blocking thread
        // driving it on this runtime.
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let push = super::export::push_index(&store, &merged.index.digest, &output);
            let result = handle.block_on(push).map_err(|e| e.to_string());
            let _ = tx.send(Input::Exported {
                build: id,
                merged,
                result,
            });
        });
    }

    pub(super) fn finish_export(
        &mut self,
        id: &str,
        merged: MergedIndex,
        pushed: Result<Vec<String>, String>,
    ) {
        match pushed {
            Ok(pushed) => self.end_build(
                id,
                BuildState::Done,
                Ok(merged.manifests),
                Some(merged.index),
                pushed,
            ),
            Err(e) => self.end_build(id, BuildState::Failed, Err(e), Some(merged.index), vec![]),
        }
    }

    /// Fails builds that waited too long for a candidate worker.
    pub(super) fn check_grace(&mut self, now: Instant) {
        let grace = self.opts.no_candidate_grace;
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
            self.fail_build(
                &id,
                format!(
                    "{why} (waited {} s for one to connect)",
                    grace.as_secs_f64().round()
                ),
            );
        }
    }
}
