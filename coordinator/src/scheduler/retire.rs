//! Retiring what no build needs any more, so a long-running coordinator's
//! scheduler is bounded by its active builds, not by every build it ran.

use super::{Scheduler, VertexState};
use imgfarm_common::oci::Digest;
use std::collections::BTreeSet;

impl Scheduler {
    /// Drops the keys among `keys` that no build needs any more: done,
    /// failed and waiting ones (e.g. every key of a build that ended which
    /// no other active build needs: the caller knows which builds need
    /// which keys). Kept are running keys (their outcome is still to come;
    /// retire them once it arrived) and keys a task staying behind still
    /// waits for (dropping them would leave it waiting forever). A retired
    /// key that a later build needs is added again by
    /// [`Scheduler::add_build`] (cached, or run again).
    pub fn retire(&mut self, keys: &[Digest]) {
        use VertexState::{Done, Failed, Running, Waiting};
        let mut gone: BTreeSet<Digest> = keys
            .iter()
            .filter(|k| matches!(self.state.get(*k), Some(Waiting | Done | Failed)))
            .cloned()
            .collect();
        // A key stays while a task that stays and is not done waits for
        // it; such a key, when not done itself, keeps its own inputs too.
        let waits = |u: &Digest, gone: &BTreeSet<Digest>| {
            !gone.contains(u) && matches!(self.state.get(u), Some(Waiting | Running(_) | Failed))
        };
        let mut stay: Vec<Digest> = gone
            .iter()
            .filter(|k| {
                self.users
                    .get(*k)
                    .is_some_and(|us| us.iter().any(|u| waits(u, &gone)))
            })
            .cloned()
            .collect();
        while let Some(k) = stay.pop() {
            if !gone.remove(&k) || self.state.get(&k) == Some(&Done) {
                continue;
            }
            if let Some(t) = self.tasks.get(&k) {
                stay.extend(t.inputs.iter().filter(|i| gone.contains(*i)).cloned());
            }
        }
        for k in &gone {
            self.unlink(k);
            // Users left behind are done: they never wait for `k` again.
            self.users.remove(k);
        }
    }
}
