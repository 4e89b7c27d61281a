//! What submissions, re-attaches and cancels do to builds, and the end of a
//! build. Messages go out as [`Action`]s; nothing here waits.

use super::builds::{Build, BuildState};
use super::observe::{BuildOutcome, Observation};
use super::ports::StoredBuild;
use super::{Engine, PeerId};
use crate::scheduler::VertexState;
use imgfarm_common::farm::{self, FarmDefinition, OutputSpec};
use imgfarm_common::graph::key::vertex_key;
use imgfarm_common::graph::op::Op;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{
    BlobHeader, BuildFinished, BuiltManifest, Message, Submit, VertexFinished, VertexStarted,
};
use std::collections::BTreeSet;

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

impl Engine {
    /// Why a submission is refused for lack of a blob, worded for the
    /// client.
    fn check_blobs(&self, def: &FarmDefinition) -> Result<(), String> {
        if let Some(c) = &def.context {
            let n = c.chunks.len();
            for (i, l) in c.chunks.iter().enumerate() {
                if !self.blobs.contains(&l.digest) {
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
                    if !self.blobs.contains(d) {
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

    /// A fresh build id: 16 hex digits, unique across restarts when the
    /// shell's seed is.
    fn new_build_id(&mut self) -> String {
        self.id_seq += 1;
        let seed = format!("{}/{}", self.id_seed, self.id_seq);
        Digest::sha256_of(seed.as_bytes()).hex()[..16].to_string()
    }

    /// Sends `msg` to every client attached to build `id`.
    pub(super) fn tell_build(&mut self, id: &str, msg: &Message) {
        let sessions: Vec<PeerId> = match self.builds.get(id) {
            Some(b) => b.attached.iter().copied().collect(),
            None => return,
        };
        for s in sessions {
            self.send(s, msg.clone());
        }
    }

    /// Sends `msg` to the clients of every active build needing
    /// scheduler key `s`.
    pub(super) fn tell_users(&mut self, s: &Digest, msg: &Message) {
        let sessions: BTreeSet<PeerId> = self
            .builds
            .needing(s)
            .iter()
            .filter_map(|(id, _)| self.builds.get(id))
            .flat_map(|b| b.attached.iter().copied())
            .collect();
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
            // No client is attached after a restart; the time limit counts
            // from the submission.
            b.unattached_since = Some(self.now);
            b.queued_at = Some(self.now);
            b.deadline = b.output.timeout_secs.map(|t| {
                let left = (s.created + t).saturating_sub(self.unix_now());
                self.now + std::time::Duration::from_secs(left)
            });
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
    fn admit(&mut self, mut b: Build) -> Result<String, String> {
        let journal = &mut self.journal;
        let done = b.done_at_start(|k| {
            journal.has_result(k).unwrap_or_else(|e| {
                tracing::error!("{e}; {k} runs again");
                false
            })
        });
        let hits = done
            .iter()
            .filter(|k| b.vertex(k).is_some_and(|v| !v.op.is_source()))
            .count() as u64;
        let cached: BTreeSet<Digest> = done.iter().map(|k| b.sched_key(k)).collect();
        self.sched
            .add_build(b.tasks(), &b.roots(), &cached)
            .map_err(|e| format!("build {}: {e}", b.id))?;
        for k in &done {
            b.mark_done(k);
        }
        let id = b.id.clone();
        self.builds.insert(b);
        self.observe(Observation::BuildAdmitted);
        if hits > 0 {
            self.observe(Observation::CacheHits { count: hits });
        }
        Ok(id)
    }

    /// A `Submit` message: a new build (decoded, then [`Engine::submit`])
    /// or a re-attach.
    pub(super) fn on_submit(&mut self, peer: PeerId, s: Submit) {
        if let Some(id) = s.reattach {
            return self.reattach(peer, &id, &s.output);
        }
        let def: FarmDefinition = match farm::decode(&s.definition, "build definition") {
            Ok(d) => d,
            Err(e) => return self.send(peer, Message::Refused(format!("{e}"))),
        };
        let output: OutputSpec = match farm::decode(&s.output, "build output") {
            Ok(o) => o,
            Err(e) => return self.send(peer, Message::Refused(e.to_string())),
        };
        self.submit(peer, def, output);
    }

    /// A new build from client `peer`: checked, written to the journal,
    /// admitted; the client is told `Accepted` (and what is already done)
    /// or `Refused`.
    pub(super) fn submit(&mut self, peer: PeerId, def: FarmDefinition, output: OutputSpec) {
        let Some(client) = self.peers.get(&peer).map(|p| p.name.clone()) else {
            return;
        };
        if let Err(e) = def.validate() {
            return self.send(peer, Message::Refused(e.to_string()));
        }
        if let Err(e) = check_keys(&def) {
            return self.send(peer, Message::Refused(e));
        }
        if let Err(e) = self.check_blobs(&def) {
            return self.send(peer, Message::Refused(e));
        }
        let id = self.new_build_id();
        let created = self.unix_now();
        if let Err(e) = self
            .journal
            .insert_build(&id, &client, &def, &output, created)
        {
            tracing::error!("{e}");
            return self.send(
                peer,
                Message::Refused(format!("the coordinator cannot record the build: {e}")),
            );
        }
        let mut b = Build::new(id.clone(), client.clone(), def, output, created);
        b.attached.insert(peer);
        b.queued_at = Some(self.now);
        b.deadline = b
            .output
            .timeout_secs
            .map(|t| self.now + std::time::Duration::from_secs(t));
        tracing::info!(build = %id, client, "accepted build {:?}", b.definition.title);
        match self.admit(b) {
            Ok(id) => {
                self.send(
                    peer,
                    Message::Accepted {
                        build_id: id.clone(),
                    },
                );
                self.replay(peer, &id);
            }
            Err(e) => {
                self.send(peer, Message::Refused(e.clone()));
                self.fail_unadmitted(&id, e);
            }
        }
    }

    /// Records as failed a stored build the scheduler refused.
    fn fail_unadmitted(&mut self, id: &str, error: String) {
        tracing::error!(build = %id, "{error}");
        if let Err(e) = self.journal.mark_failed(id, error) {
            tracing::error!(build = %id, "{e}");
        }
    }

    /// Tells a newly attached client what already happened.
    fn replay(&mut self, peer: PeerId, id: &str) {
        let Some(b) = self.builds.get(id) else { return };
        let mut out = Vec::new();
        for k in b.done_keys() {
            out.push(Message::VertexFinished(VertexFinished {
                vertex_key: k.clone(),
                error: None,
                cached: true,
                duration_ms: 0,
            }));
        }
        for k in b.unfinished() {
            let s = b.sched_key(&k);
            if let Some(VertexState::Running(w)) = self.sched.state_of(&s) {
                out.push(Message::VertexStarted(VertexStarted {
                    vertex_key: k.clone(),
                    worker: self.worker_name(w),
                    emulated: self.running.get(&s).is_some_and(|d| d.emulated),
                }));
            }
        }
        if let Some(f) = &b.finished {
            out.push(Message::BuildFinished(f.clone()));
        }
        for m in out {
            self.send(peer, m);
        }
    }

    /// Whether `peer` may act on a build submitted by `owner`: only the
    /// client named in the submitting certificate may re-attach to or cancel
    /// it (a build's outputs and lent credentials are its own). `Err` is the
    /// refusal to send.
    fn owned_by_peer(&self, peer: PeerId, id: &str, owner: &str) -> Result<(), String> {
        match self.peers.get(&peer) {
            Some(p) if p.name == owner => Ok(()),
            Some(p) => Err(format!(
                "build {id} belongs to client {owner:?}, not {:?}: a client may only re-attach to or cancel its own builds",
                p.name
            )),
            None => Err(format!("build {id}: unknown session")),
        }
    }

    fn reattach(&mut self, peer: PeerId, id: &str, output: &[u8]) {
        let owner = match self.builds.get(id) {
            Some(b) => Some(b.client.clone()),
            None => match self.journal.get_build(id) {
                Ok(Some(s)) => Some(s.client),
                _ => None,
            },
        };
        if let Some(owner) = owner {
            if let Err(refusal) = self.owned_by_peer(peer, id, &owner) {
                tracing::warn!(build = %id, "{refusal}");
                return self.send(peer, Message::Refused(refusal));
            }
        }
        let lent: Option<OutputSpec> = if output.is_empty() {
            None
        } else {
            farm::decode(output, "build output").ok()
        };
        if let Some(b) = self.builds.get_mut(id) {
            b.attached.insert(peer);
            b.unattached_since = None;
            if let Some(o) = lent {
                if !o.credentials.is_empty() {
                    b.output.credentials = o.credentials;
                }
            }
            tracing::info!(build = %id, "client re-attached");
            let ended = b.finished.clone();
            self.builds.touch(id);
            self.send(
                peer,
                Message::Accepted {
                    build_id: id.to_string(),
                },
            );
            // An ended build answers with its outcome alone.
            return match ended {
                Some(f) => self.send(peer, Message::BuildFinished(f)),
                None => self.replay(peer, id),
            };
        }
        match self.journal.get_build(id) {
            Ok(Some(StoredBuild {
                result: Some(f), ..
            })) => {
                self.send(
                    peer,
                    Message::Accepted {
                        build_id: id.to_string(),
                    },
                );
                self.send(peer, Message::BuildFinished(f));
            }
            _ => self.send(
                peer,
                Message::Refused(format!(
                    "unknown build {id}: this coordinator has no record of it; submit it again"
                )),
            ),
        }
    }

    pub(super) fn on_cancel(&mut self, peer: PeerId, id: &str) {
        let Some(owner) = self.builds.get(id).map(|b| b.client.clone()) else {
            return self.send(peer, Message::Refused(format!("unknown build {id}")));
        };
        if let Err(refusal) = self.owned_by_peer(peer, id, &owner) {
            tracing::warn!(build = %id, "{refusal}");
            return self.send(peer, Message::Refused(refusal));
        }
        let Some(b) = self.builds.get_mut(id) else {
            return;
        };
        b.attached.insert(peer);
        if !b.state.is_active() {
            return self.replay(peer, id);
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
    /// remembered and retired later by [`Engine::retire_orphans`].
    fn retire(&mut self, keys: &[Digest]) {
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

    /// Records `b`'s state in the journal (a failure is logged: the build
    /// goes on in memory).
    pub(super) fn persist_state(&mut self, id: &str) {
        let Some(b) = self.builds.get(id) else { return };
        let (state, fin) = (b.state.as_str(), b.finished.clone());
        if let Err(e) = self.journal.set_state(id, state, fin.as_ref()) {
            tracing::error!(build = %id, "{e}");
        }
    }

    /// Ends a build: records, tells its clients, releases its vertices.
    pub(super) fn end_build(
        &mut self,
        id: &str,
        state: BuildState,
        result: Result<Vec<BuiltManifest>, String>,
        index: Option<BlobHeader>,
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
        let outcome = match state {
            BuildState::Done => BuildOutcome::Succeeded,
            BuildState::Cancelled => BuildOutcome::Cancelled,
            _ => BuildOutcome::Failed,
        };
        b.finished = Some(fin.clone());
        self.ended += 1;
        let keys = b.sched_keys();
        self.persist_state(id);
        self.tell_build(id, &Message::BuildFinished(fin));
        self.observe(Observation::BuildEnded { outcome });
        // Release what nobody else needs: running vertices are stopped on
        // their worker (retired once their outcome arrives), the rest
        // (waiting, done, failed) leaves the scheduler now.
        let only = self.builds.needed_only_by(id, &keys);
        for k in &only {
            if let Some(VertexState::Running(w)) = self.sched.state_of(k) {
                // The worker knows the vertex by its own key, never a salted one.
                let key = self.running.get(k).map(|d| &d.key).unwrap_or(k).clone();
                if let Some(s) = self.worker_session(w) {
                    self.send(
                        s,
                        Message::CancelVertex {
                            vertex_key: key.clone(),
                        },
                    );
                }
            }
        }
        self.retire(&only);
        self.builds.prune_ended(self.opts.keep_ended);
    }
}
