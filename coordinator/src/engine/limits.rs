//! Time limits: a build's `--timeout`, each step's `--step-timeout`, and
//! the grace a build has to get a client back once none is attached. All
//! are checked on [`super::Event::Tick`] against the engine's `now`.

use super::builds::BuildState;
use super::observe::VertexOutcome;
use super::Engine;
use crate::scheduler::VertexState;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::Message;
use std::time::Duration;

/// `90 s`, `5 min`: how a limit is named in messages.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

impl Engine {
    /// Ends builds past their time limit or without a client for longer
    /// than the grace, and fails steps past their limit (cancelled on their
    /// worker).
    pub(super) fn check_limits(&mut self) {
        let now = self.now;
        let grace = self.opts.client_grace;
        let mut late = Vec::new();
        let mut orphaned = Vec::new();
        for b in self.builds.active() {
            if let (Some(d), Some(t)) = (b.deadline, b.output.timeout_secs) {
                if now >= d {
                    late.push((b.id.clone(), t));
                    continue;
                }
            }
            if let Some(since) = b.unattached_since {
                if !grace.is_zero() && now.saturating_duration_since(since) >= grace {
                    orphaned.push(b.id.clone());
                }
            }
        }
        for (id, t) in late {
            let why = format!(
                "the build exceeded its time limit of {} (--timeout); its running steps were cancelled",
                span(Duration::from_secs(t))
            );
            self.fail_build(&id, why);
        }
        for id in orphaned {
            tracing::warn!(build = %id, "no client attached for {}: cancelled", span(grace));
            self.end_build(
                &id,
                BuildState::Cancelled,
                Err(format!(
                    "cancelled: no client was attached for {} (a client re-attaching within that time keeps the build: imgfarm build --reattach ID)",
                    span(grace)
                )),
                None,
                Vec::new(),
            );
        }
        self.check_step_limits();
    }

    /// The shortest `--step-timeout` among the builds needing scheduler key
    /// `s`.
    fn step_limit(&self, s: &Digest) -> Option<Duration> {
        self.builds
            .needing(s)
            .iter()
            .filter_map(|(id, _)| self.builds.get(id)?.output.step_timeout_secs)
            .min()
            .map(Duration::from_secs)
    }

    fn check_step_limits(&mut self) {
        let now = self.now;
        let over: Vec<(Digest, Duration)> = self
            .running
            .iter()
            .filter_map(|(s, d)| {
                let limit = self.step_limit(s)?;
                (now.saturating_duration_since(d.started) >= limit).then(|| (s.clone(), limit))
            })
            .collect();
        for (s, limit) in over {
            let Some(d) = self.running.get(&s).cloned() else {
                continue;
            };
            if let (Some(VertexState::Running(w)), Some(peer)) =
                (self.sched.state_of(&s), self.worker_session(d.worker))
            {
                if w == d.worker {
                    self.send(
                        peer,
                        Message::CancelVertex {
                            vertex_key: d.key.clone(),
                        },
                    );
                }
            }
            let why = format!(
                "the step exceeded its time limit of {} (--step-timeout) and was cancelled",
                span(limit)
            );
            // The worker's answer to the cancel finds the vertex no longer running and is
            // ignored, so the placement ends here.
            self.placement_ended(&d, VertexOutcome::Cancelled);
            self.vertex_failed(&s, &why);
        }
    }
}
