//! The coordinator's state, and what submissions, re-attaches and cancels
//! do to builds. Owned by one task (the event loop in [`super`]); messages
//! go out through per-session channels, so nothing here awaits.

use super::builds::{Build, BuildState, Builds};
use super::pool::Pool;
use super::queue::{Queue, StoredBuild};
use super::{Input, ServiceOptions};
use crate::scheduler::{Scheduler, VertexState, WorkerId};
use imgfarm_common::farm::{self, FarmDefinition, OutputSpec};
use imgfarm_common::graph::key::vertex_key;
use imgfarm_common::graph::op::Op;
use imgfarm_common::identity::Role;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{BuildFinished, Message, Submit, VertexFinished, VertexStarted};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// How many ended builds stay in memory (the rest are in the database).
const KEEP_ENDED: usize = 64;

/// A vertex handed to a worker.
#[derive(Debug, Clone)]
pub(super) struct Dispatched {
    pub worker: WorkerId,
    /// The vertex key (the scheduler key may be salted).
    pub key: Digest,
    pub emulated: bool,
}

/// One admitted control session.
pub(super) struct Peer {
    pub role: Role,
    pub name: String,
    /// Bounded ([`ServiceOptions::session_queue`]): a peer that does not
    /// read is dropped rather than buffered without limit.
    pub tx: mpsc::Sender<Message>,
    pub conn: quinn::Connection,
}

pub(super) struct Core {
    pub opts: ServiceOptions,
    pub store: ContentStore,
    pub queue: Queue,
    pub sched: Scheduler,
    pub pool: Pool,
    pub builds: Builds,
    pub peers: BTreeMap<u64, Peer>,
    /// Builds with a vertex no worker can take: since when, and why.
    pub no_candidate: BTreeMap<String, (Instant, String)>,
    /// Dispatched vertices by scheduler key, until their outcome arrives
    /// or their worker is lost.
    pub running: BTreeMap<Digest, Dispatched>,
    /// When this run started (see [`ServiceOptions::startup_grace`]).
    pub started: Instant,
    /// Feeds export outcomes back into the loop.
    pub inputs: mpsc::UnboundedSender<Input>,
    /// Scheduler keys no active build needs that the scheduler had to keep
    /// (running, or an input of a running one): retired once they can be.
    pub orphans: BTreeSet<Digest>,
    /// Sessions whose outgoing queue overflowed, dropped by the loop
    /// ([`Core::drop_slow_peers`]); `send` only has `&self`.
    pub overflowed: RefCell<BTreeSet<u64>>,
}

pub(super) fn persist_state(queue: &Queue, b: &Build) {
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

/// Every vertex key must be the hash of its content: results are shared
/// by key across builds, so a key naming other content would hand this
/// build another build's result (DESIGN.md "Cache keys").
fn check_keys(def: &FarmDefinition) -> Result<(), String> {
    for v in &def.vertices {
        let computed = vertex_key(v.platform.as_ref(), &v.op, &v.inputs);
        if computed != v.key {
            return Err(format!(
                "invalid build definition: vertex {} ({}) does not match its content (computed {computed}); are client and coordinator the same imgfarm version?",
                v.key, v.description
            ));
        }
    }
    Ok(())
}

/// Why a submission is refused, worded for the client.
fn check_blobs(store: &ContentStore, def: &FarmDefinition) -> Result<(), String> {
    if let Some(c) = &def.context {
        let n = c.chunks.len();
        for (i, l) in c.chunks.iter().enumerate() {
            if !store.contains(&l.digest) {
                return Err(format!(
                    "missing blob {} (the build context, chunk {} of {n}) — upload it first",
                    l.digest,
                    i + 1
                ));
            }
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
    /// The numbers [`super::Service::stats`] reports.
    pub(super) fn stats(&self) -> super::ServiceStats {
        super::ServiceStats {
            scheduler_keys: self.sched.tracked(),
            running: self.sched.running(),
            active_builds: self.builds.active().count(),
            sessions: self.peers.len(),
        }
    }

    /// Queues `msg` for `session` without waiting. A full queue marks the
    /// session for dropping: its peer does not read (a stalled client),
    /// and the loop must never wait for it nor buffer without limit.
    pub(super) fn send(&self, session: u64, msg: Message) {
        let Some(p) = self.peers.get(&session) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = p.tx.try_send(msg) {
            self.overflowed.borrow_mut().insert(session);
        }
    }

    /// Sends `msg` to every client attached to build `id`.
    pub(super) fn to_build(&self, id: &str, msg: &Message) {
        if let Some(b) = self.builds.get(id) {
            for s in &b.attached {
                self.send(*s, msg.clone());
            }
        }
    }

    /// Sends `msg` to the clients of every active build needing
    /// scheduler key `s`.
    pub(super) fn to_users(&self, s: &Digest, msg: &Message) {
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
    pub(super) fn resume(&mut self, stored: Vec<StoredBuild>) {
        for s in stored {
            let mut b = Build::new(s.id, s.client, s.definition, s.output, s.created);
            b.had_credentials = s.had_credentials;
            if let Some(st) = BuildState::parse(&s.state) {
                b.state = st;
            }
            tracing::info!(build = %b.id, "resuming build {:?}", b.definition.title);
            let id = b.id.clone();
            if let Err(e) = self.admit(b) {
                self.fail_unadmitted(&id, e);
            }
        }
    }

    /// Hands a build to the scheduler, marking what is done at once.
    /// Vertices the build may not reuse are known to the scheduler under
    /// keys salted with the build id ([`Build::sched_key`]), so they run
    /// again; the others are shared with every other build.
    pub(super) fn admit(&mut self, mut b: Build) -> Result<String, String> {
        let queue = &self.queue;
        let done = b.done_at_start(|k| {
            queue.has_result(k).unwrap_or_else(|e| {
                tracing::error!("{e}; {k} runs again");
                false
            })
        });
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

    pub(super) fn on_submit(&mut self, session: u64, client: &str, s: Submit) {
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
        if let Err(e) = check_keys(&def) {
            return self.send(session, Message::Refused(e));
        }
        let output: OutputSpec = match farm::decode(&s.output, "build output") {
            Ok(o) => o,
            Err(e) => return self.send(session, Message::Refused(e.to_string())),
        };
        if let Err(e) = check_blobs(&self.store, &def) {
            return self.send(session, Message::Refused(e));
        }
        let id = new_build_id();
        let created = now_secs();
        if let Err(e) = self.queue.insert_build(&id, client, &def, &output, created) {
            tracing::error!("{e}");
            return self.send(
                session,
                Message::Refused(format!("the coordinator cannot record the build: {e}")),
            );
        }
        let mut b = Build::new(id.clone(), client.to_string(), def, output, created);
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
                self.fail_unadmitted(&id, e);
            }
        }
    }

    /// Records as failed a stored build the scheduler refused.
    fn fail_unadmitted(&self, id: &str, error: String) {
        tracing::error!(build = %id, "{error}");
        if let Err(e) = self.queue.mark_failed(id, error) {
            tracing::error!(build = %id, "{e}");
        }
    }

    /// Tells a newly attached client what already happened.
    pub(super) fn replay(&self, session: u64, id: &str) {
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
            let s = b.sched_key(&k);
            if let Some(VertexState::Running(w)) = self.sched.state_of(&s) {
                let worker = self.worker_name(w);
                self.send(
                    session,
                    Message::VertexStarted(VertexStarted {
                        vertex_key: k.to_string(),
                        worker,
                        emulated: self.running.get(&s).is_some_and(|d| d.emulated),
                    }),
                );
            }
        }
        if let Some(f) = &b.finished {
            self.send(session, Message::BuildFinished(f.clone()));
        }
    }

    pub(super) fn reattach(&mut self, session: u64, id: &str, output: &[u8]) {
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
            Ok(Some(StoredBuild {
                result: Some(f), ..
            })) => {
                self.send(
                    session,
                    Message::Accepted {
                        build_id: id.to_string(),
                    },
                );
                self.send(session, Message::BuildFinished(f));
            }
            _ => self.send(
                session,
                Message::Refused(format!(
                    "unknown build {id}: this coordinator has no record of it; submit it again"
                )),
            ),
        }
    }

    pub(super) fn on_cancel(&mut self, session: u64, id: &str) {
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

    /// Retires scheduler keys no active build needs; what the scheduler
    /// must keep for now (running, or an input of a running vertex) is
    /// remembered and retired later by [`Core::retire_orphans`].
    pub(super) fn retire(&mut self, keys: &[Digest]) {
        self.sched.retire(keys);
        for k in keys {
            if self.sched.state_of(k).is_some() {
                self.orphans.insert(k.clone());
            }
        }
    }

    /// Retires the orphans that can go now; an orphan that an active build
    /// needs again is that build's (retired when it ends).
    pub(super) fn retire_orphans(&mut self) {
        if self.orphans.is_empty() {
            return;
        }
        let orphans = std::mem::take(&mut self.orphans);
        let unneeded: Vec<Digest> = orphans
            .into_iter()
            .filter(|k| self.builds.needing(k).is_empty())
            .collect();
        self.retire(&unneeded);
    }

    /// Ends a build as failed with `error`, before any index was made.
    pub(super) fn fail_build(&mut self, id: &str, error: String) {
        self.end_build(id, BuildState::Failed, Err(error), None, Vec::new());
    }

    /// Ends a build: records, tells its clients, releases its vertices.
    pub(super) fn end_build(
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
        let keys = b.sched_keys();
        persist_state(&self.queue, b);
        self.to_build(id, &Message::BuildFinished(fin));
        // Release what nobody else needs: running vertices are stopped on
        // their worker (retired once their outcome arrives), the rest
        // (waiting, done, failed) leaves the scheduler now.
        let only = self.builds.needed_only_by(id, &keys);
        for k in &only {
            if let Some(VertexState::Running(w)) = self.sched.state_of(k) {
                // The worker knows the vertex by its own key, never a salted one.
                let key = self.running.get(k).map(|d| &d.key).unwrap_or(k);
                if let Some(s) = self.pool.session_of(w) {
                    self.send(
                        s,
                        Message::CancelVertex {
                            vertex_key: key.to_string(),
                        },
                    );
                }
            }
        }
        self.retire(&only);
        self.builds.prune_ended(KEEP_ENDED);
    }
}
