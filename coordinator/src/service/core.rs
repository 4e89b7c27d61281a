//! The coordinator's state and what each event does to it. Owned by one
//! task (the event loop in [`super`]); messages go out through per-session
//! channels, so nothing here awaits.

use super::builds::{is_source, Build, BuildState, Builds};
use super::export::{make_index, missing_blob, MergedIndex};
use super::pool::{parse_key, summary_keys, worker_spec, Pool};
use super::queue::{Queue, StoredBuild};
use super::{Input, ServiceOptions};
use crate::scheduler::{Decision, Scheduler, VertexState, WorkerId};
use imgfarm_common::farm::{self, FarmDefinition, OutputSpec, VertexJob, VertexResult};
use imgfarm_common::graph::op::Op;
use imgfarm_common::identity::Role;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{
    close_code, BuildFinished, FarmStatus, Message, RunVertex, Submit, VertexDone, VertexFinished,
    VertexLog, VertexStarted,
};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How many ended builds stay in memory (the rest are in the database).
const KEEP_ENDED: usize = 64;

/// One admitted control session.
pub(super) struct Peer {
    pub role: Role,
    pub name: String,
    pub tx: mpsc::UnboundedSender<Message>,
    pub conn: quinn::Connection,
}

pub(super) struct Core {
    pub opts: ServiceOptions,
    pub store: ContentStore,
    pub queue: Queue,
    pub sched: Scheduler,
    pub pool: Pool,
    pub builds: Builds,
    /// Vertex keys with a result in the database.
    pub results: HashSet<Digest>,
    pub peers: BTreeMap<u64, Peer>,
    /// Builds with a vertex no worker can take: since when, and why.
    pub no_candidate: BTreeMap<String, (Instant, String)>,
    /// Feeds export outcomes back into the loop.
    pub inputs: mpsc::UnboundedSender<Input>,
}

fn persist_state(queue: &Queue, b: &Build) {
    if let Err(e) = queue.set_state(&b.id, b.state.as_str(), b.finished.as_ref()) {
        tracing::error!(build = %b.id, "{e}");
    }
}

static BUILD_SEQ: AtomicU64 = AtomicU64::new(0);

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh build id: 16 hex digits, unique across restarts.
fn new_build_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seq = BUILD_SEQ.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{nanos}/{}/{seq}", std::process::id());
    Digest::sha256_of(seed.as_bytes()).hex()[..16].to_string()
}

/// Why a submission is refused, worded for the client.
fn check_blobs(store: &ContentStore, def: &FarmDefinition) -> Result<(), String> {
    if let Some(c) = &def.context {
        if !store.contains(&c.layer.digest) {
            return Err(format!(
                "missing blob {} (the build context) — upload it first",
                c.layer.digest
            ));
        }
    }
    for v in &def.vertices {
        if let Op::Image(img) = &v.op {
            if let Some(d) = &img.digest {
                if !store.contains(d) {
                    return Err(format!(
                        "missing blob {d} (manifest of base image {}) — upload it first",
                        img.reference
                    ));
                }
            }
        }
    }
    Ok(())
}

impl Core {
    fn send(&self, session: u64, msg: Message) {
        if let Some(p) = self.peers.get(&session) {
            let _ = p.tx.send(msg);
        }
    }

    /// Sends `msg` to every client attached to build `id`.
    fn to_build(&self, id: &str, msg: &Message) {
        if let Some(b) = self.builds.get(id) {
            for s in &b.attached {
                self.send(*s, msg.clone());
            }
        }
    }

    /// Sends `msg` to the clients of every active build needing
    /// scheduler key `s`.
    fn to_users(&self, s: &Digest, msg: &Message) {
        let mut sessions = BTreeSet::new();
        for (id, _) in self.builds.needing(s) {
            if let Some(b) = self.builds.get(&id) {
                sessions.extend(b.attached.iter().copied());
            }
        }
        for s in sessions {
            self.send(s, msg.clone());
        }
    }

    // ---- builds ------------------------------------------------------

    /// Loads the builds a previous run left queued or running.
    pub fn resume(&mut self, stored: Vec<StoredBuild>) {
        for s in stored {
            let mut b = Build::new(s.id, s.client, s.definition, s.output, s.created);
            b.had_credentials = s.had_credentials;
            if let Some(st) = BuildState::parse(&s.state) {
                b.state = st;
            }
            tracing::info!(build = %b.id, "resuming build {:?}", b.definition.title);
            if let Err(e) = self.admit(b) {
                tracing::error!("{e}");
            }
        }
    }

    /// Hands a build to the scheduler, marking what is done at once.
    /// Vertices the build may not reuse are known to the scheduler under
    /// keys salted with the build id ([`Build::sched_key`]), so they run
    /// again; the others are shared with every other build.
    fn admit(&mut self, mut b: Build) -> Result<String, String> {
        let results = &self.results;
        let done = b.done_at_start(|k| results.contains(k));
        let cached: BTreeSet<Digest> = done.iter().map(|k| b.sched_key(k)).collect();
        self.sched
            .add_build(b.tasks(), &b.roots(), &cached)
            .map_err(|e| format!("build {}: {e}", b.id))?;
        for k in &done {
            b.mark_done(k);
        }
        let id = b.id.clone();
        self.builds.insert(b);
        Ok(id)
    }

    fn on_submit(&mut self, session: u64, client: &str, s: Submit) {
        if let Some(id) = s.reattach {
            return self.reattach(session, &id, &s.output);
        }
        let def: FarmDefinition = match farm::decode(&s.definition, "build definition") {
            Ok(d) => d,
            Err(e) => return self.send(session, Message::Refused(format!("{e}"))),
        };
        if let Err(e) = def.validate() {
            return self.send(session, Message::Refused(e.to_string()));
        }
        let output: OutputSpec = match farm::decode(&s.output, "build output") {
            Ok(o) => o,
            Err(e) => return self.send(session, Message::Refused(e.to_string())),
        };
        if let Err(e) = check_blobs(&self.store, &def) {
            return self.send(session, Message::Refused(e));
        }
        let id = new_build_id();
        if let Err(e) = self
            .queue
            .insert_build(&id, client, &def, &output, now_secs())
        {
            tracing::error!("{e}");
            return self.send(
                session,
                Message::Refused(format!("the coordinator cannot record the build: {e}")),
            );
        }
        let mut b = Build::new(id.clone(), client.to_string(), def, output, now_secs());
        b.attached.insert(session);
        tracing::info!(build = %id, client, "accepted build {:?}", b.definition.title);
        match self.admit(b) {
            Ok(id) => {
                self.send(
                    session,
                    Message::Accepted {
                        build_id: id.clone(),
                    },
                );
                self.replay(session, &id);
            }
            Err(e) => {
                self.send(session, Message::Refused(e.clone()));
                self.end_build(&id, BuildState::Failed, Err(e), None, Vec::new());
            }
        }
    }

    /// Tells a newly attached client what already happened.
    fn replay(&self, session: u64, id: &str) {
        let Some(b) = self.builds.get(id) else { return };
        for k in b.done_keys() {
            self.send(
                session,
                Message::VertexFinished(VertexFinished {
                    vertex_key: k.to_string(),
                    error: None,
                    cached: true,
                    duration_ms: 0,
                }),
            );
        }
        for k in b.unfinished() {
            if let Some(VertexState::Running(w)) = self.sched.state_of(&b.sched_key(&k)) {
                let worker = self.worker_name(w);
                self.send(
                    session,
                    Message::VertexStarted(VertexStarted {
                        vertex_key: k.to_string(),
                        worker,
                        emulated: false,
                    }),
                );
            }
        }
        if let Some(f) = &b.finished {
            self.send(session, Message::BuildFinished(f.clone()));
        }
    }

    fn reattach(&mut self, session: u64, id: &str, output: &[u8]) {
        let lent: Option<OutputSpec> = if output.is_empty() {
            None
        } else {
            farm::decode(output, "build output").ok()
        };
        if let Some(b) = self.builds.get_mut(id) {
            b.attached.insert(session);
            if let Some(o) = lent {
                if !o.credentials.is_empty() {
                    b.output.credentials = o.credentials;
                }
            }
            tracing::info!(build = %id, "client re-attached");
            let ended = b.finished.clone();
            self.send(
                session,
                Message::Accepted {
                    build_id: id.to_string(),
                },
            );
            // An ended build answers with its outcome alone.
            return match ended {
                Some(f) => self.send(session, Message::BuildFinished(f)),
                None => self.replay(session, id),
            };
        }
        match self.queue.get_build(id) {
            Ok(Some(stored)) if stored.result.is_some() => {
                self.send(
                    session,
                    Message::Accepted {
                        build_id: id.to_string(),
                    },
                );
                if let Some(f) = stored.result {
                    self.send(session, Message::BuildFinished(f));
                }
            }
            _ => self.send(
                session,
                Message::Refused(format!(
                    "unknown build {id}: this coordinator has no record of it; submit it again"
                )),
            ),
        }
    }

    fn on_cancel(&mut self, session: u64, id: &str) {
        let Some(b) = self.builds.get_mut(id) else {
            return self.send(session, Message::Refused(format!("unknown build {id}")));
        };
        b.attached.insert(session);
        if !b.state.is_active() {
            return self.replay(session, id);
        }
        tracing::info!(build = %id, "cancelled by the client");
        self.end_build(
            id,
            BuildState::Cancelled,
            Err("cancelled by the client".into()),
            None,
            Vec::new(),
        );
    }

    /// Ends a build: records, tells its clients, releases its vertices.
    pub fn end_build(
        &mut self,
        id: &str,
        state: BuildState,
        result: Result<Vec<imgfarm_common::proto::BuiltManifest>, String>,
        index: Option<imgfarm_common::proto::BlobHeader>,
        pushed: Vec<String>,
    ) {
        self.no_candidate.remove(id);
        let Some(b) = self.builds.get_mut(id) else {
            return;
        };
        if !b.state.is_active() {
            return;
        }
        let fin = BuildFinished {
            build_id: id.to_string(),
            result,
            index,
            pushed,
        };
        match &fin.result {
            Ok(_) => tracing::info!(build = %id, "build finished"),
            Err(e) => tracing::warn!(build = %id, "build {}: {e}", state.as_str()),
        }
        b.state = state;
        b.exporting = false;
        b.finished = Some(fin.clone());
        let unfinished: Vec<Digest> = b.unfinished().iter().map(|k| b.sched_key(k)).collect();
        persist_state(&self.queue, b);
        self.to_build(id, &Message::BuildFinished(fin));
        // Release what nobody else needs: waiting vertices are dropped,
        // running ones are stopped on their worker.
        let only = self.builds.needed_only_by(id, &unfinished);
        let mut waiting = Vec::new();
        for k in &only {
            match self.sched.state_of(k) {
                Some(VertexState::Running(w)) => {
                    if let Some(s) = self.pool.session_of(w) {
                        self.send(
                            s,
                            Message::CancelVertex {
                                vertex_key: k.to_string(),
                            },
                        );
                    }
                }
                Some(VertexState::Waiting) => waiting.push(k.clone()),
                _ => {}
            }
        }
        self.sched.forget(&waiting);
        self.builds.prune_ended(KEEP_ENDED);
    }

    // ---- vertices ----------------------------------------------------

    fn worker_name(&self, w: WorkerId) -> String {
        self.pool
            .session_of(w)
            .and_then(|s| self.pool.get(s))
            .map(|x| x.name.clone())
            .unwrap_or_else(|| format!("worker #{w}"))
    }

    /// Scheduler key `s` (vertex `key`) finished: every build needing it
    /// moves on.
    fn vertex_finished(&mut self, s: &Digest, key: &Digest, duration_ms: u64) {
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
    fn vertex_failed(&mut self, s: &Digest, error: &str) {
        if let Err(e) = self.sched.fail(s) {
            tracing::debug!("{e}");
        }
        let users = self.builds.needing(s);
        let Some((_, key)) = users.first().cloned() else {
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
            self.end_build(
                &id,
                BuildState::Failed,
                Err(format!("{what} failed: {error}")),
                None,
                Vec::new(),
            );
        }
    }

    fn on_vertex_done(&mut self, session: u64, done: VertexDone) {
        let Some(w) = self.pool.get(session).map(|w| (w.sched_id, w.name.clone())) else {
            return;
        };
        let (wid, wname) = w;
        let Some(key) = parse_key(&done.vertex_key) else {
            tracing::warn!(worker = %wname, "VertexDone for {:?}, which is not a vertex key", done.vertex_key);
            return;
        };
        let running_here = Some(VertexState::Running(wid));
        let Some(s) = self
            .builds
            .sched_keys_of(&key)
            .into_iter()
            .find(|s| self.sched.state_of(s) == running_here)
        else {
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
        self.results.insert(key.clone());
        if let Err(e) = self.sched.complete(&s) {
            tracing::debug!("{e}");
        }
        tracing::debug!(worker = %wname, "vertex {key} done in {} ms", done.duration_ms);
        self.vertex_finished(&s, &key, done.duration_ms);
    }

    /// The job for scheduler key `s`, from the first build needing it.
    fn job(&self, s: &Digest) -> Result<(String, VertexJob), String> {
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
            if is_source(iv) || input_results.iter().any(|(k, _)| k == i) {
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
            },
        ))
    }

    fn dispatch(&mut self, d: Decision) {
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
    pub fn pump(&mut self, now: Instant) {
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

    fn export(&mut self, id: &str) {
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
                    return self.end_build(
                        id,
                        BuildState::Failed,
                        Err(e.to_string()),
                        None,
                        vec![],
                    );
                }
            }
        }
        let merged = match make_index(&self.store, &per_platform) {
            Ok(m) => m,
            Err(e) => {
                return self.end_build(id, BuildState::Failed, Err(e.to_string()), None, vec![])
            }
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

    pub fn finish_export(
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
    pub fn check_grace(&mut self, now: Instant) {
        let grace = self.opts.no_candidate_grace;
        let late: Vec<(String, String)> = self
            .no_candidate
            .iter()
            .filter(|(_, (since, _))| now.saturating_duration_since(*since) >= grace)
            .map(|(id, (_, why))| (id.clone(), why.clone()))
            .collect();
        for (id, why) in late {
            self.end_build(
                &id,
                BuildState::Failed,
                Err(format!(
                    "{why} (waited {} s for one to connect)",
                    grace.as_secs_f64().round()
                )),
                None,
                vec![],
            );
        }
    }

    // ---- sessions ----------------------------------------------------

    /// A worker or client was admitted.
    pub fn add_peer(&mut self, session: u64, peer: Peer, hello: &imgfarm_common::proto::Hello) {
        let role = peer.role;
        let name = peer.name.clone();
        self.peers.insert(session, peer);
        if role != Role::Worker {
            tracing::debug!(client = %name, session, "client connected");
            return;
        }
        match worker_spec(hello) {
            Ok(spec) => {
                let id = self.sched.add_worker(spec);
                self.sched
                    .add_holdings(id, summary_keys(&hello.cache_summary));
                self.pool.add(session, hello, id, Instant::now());
                tracing::info!(
                    worker = %name,
                    native = %hello.native_platforms.join(","),
                    emulated = %hello.emulated_platforms.join(","),
                    slots = hello.slots,
                    "worker joined"
                );
            }
            Err(e) => {
                tracing::warn!("{e}");
                self.send(session, Message::Refused(e.to_string()));
                if let Some(p) = self.peers.remove(&session) {
                    let conn = p.conn.clone();
                    drop(p);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        conn.close(close_code::REFUSED.into(), b"worker refused");
                    });
                }
            }
        }
    }

    /// A session ended (closed, broken or timed out).
    pub fn drop_peer(&mut self, session: u64, reason: &str) {
        let Some(peer) = self.peers.remove(&session) else {
            return;
        };
        if let Some(w) = self.pool.remove(session) {
            let back = self.sched.worker_lost(w.sched_id);
            tracing::warn!(
                worker = %w.name,
                "worker lost ({reason}); {} running vertices go back to the queue",
                back.len()
            );
            peer.conn.close(
                close_code::NORMAL.into(),
                b"declared lost by the coordinator",
            );
        } else {
            self.builds.detach(session);
            tracing::debug!(client = %peer.name, "client left ({reason})");
        }
    }

    /// Workers silent past the timeout are lost.
    pub fn check_heartbeats(&mut self, now: Instant) {
        for s in self.pool.expired(now, self.opts.heartbeat_timeout) {
            let t = self.opts.heartbeat_timeout.as_secs_f64();
            self.drop_peer(s, &format!("no heartbeat for {t:.1} s"));
        }
    }

    /// One message on a control session.
    pub fn on_message(&mut self, session: u64, msg: Message) {
        let Some(peer) = self.peers.get(&session) else {
            return;
        };
        let (role, name) = (peer.role, peer.name.clone());
        match (role, msg) {
            (Role::Worker, Message::Heartbeat(hb)) => {
                if let Some(id) = self.pool.heartbeat(session, &hb, Instant::now()) {
                    if let Some(s) = &hb.cache_summary {
                        self.sched.add_holdings(id, summary_keys(s));
                    }
                }
            }
            (Role::Worker, Message::VertexLog(log)) => self.on_log(session, log),
            (Role::Worker, Message::VertexDone(d)) => self.on_vertex_done(session, d),
            (Role::Client, Message::Submit(s)) => self.on_submit(session, &name, s),
            (Role::Client, Message::Cancel { build_id }) => self.on_cancel(session, &build_id),
            (_, Message::StatusRequest) => {
                let now = Instant::now();
                let status = FarmStatus {
                    workers: self.pool.status(now),
                    builds: self.builds.active().map(|b| b.status()).collect(),
                };
                self.send(session, Message::Status(status));
            }
            (_, Message::Bye) => self.drop_peer(session, "said bye"),
            (role, other) => {
                let what = format!("{other:?}");
                let what: String = what.chars().take(40).collect();
                self.send(
                    session,
                    Message::Refused(format!(
                        "a {role} session cannot send {what}…; message ignored"
                    )),
                );
            }
        }
    }

    fn on_log(&self, session: u64, log: VertexLog) {
        let Some(w) = self.pool.get(session) else {
            return;
        };
        let Some(key) = parse_key(&log.vertex_key) else {
            return;
        };
        let here = Some(VertexState::Running(w.sched_id));
        let running = self
            .builds
            .sched_keys_of(&key)
            .into_iter()
            .find(|s| self.sched.state_of(s) == here);
        if let Some(s) = running {
            self.to_users(&s, &Message::VertexLog(log));
        }
    }
}
