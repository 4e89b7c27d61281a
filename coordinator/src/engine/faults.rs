//! Failures that are the worker's, not the step's: a worker whose disk is
//! full fails every step it takes, so the step goes back to the queue to
//! run elsewhere and the worker takes no new work for a while (drained),
//! instead of the build failing and the next builds landing there again.

use super::{Engine, PeerId};
use crate::scheduler::WorkerId;
use imgfarm_common::oci::Digest;
use std::time::Duration;

/// How long a worker out of disk space takes no new work.
pub const DRAIN_FOR: Duration = Duration::from_secs(60);

pub use imgfarm_common::farm::out_of_space;

impl Engine {
    /// Worker `peer` (`w`) failed scheduler key `s` for lack of space: the
    /// vertex runs elsewhere and the worker is drained for [`DRAIN_FOR`].
    pub(super) fn drain_for_space(&mut self, peer: PeerId, w: WorkerId, s: &Digest, msg: &str) {
        let name = self.worker_name(w);
        tracing::warn!(
            worker = %name,
            "out of disk space ({msg}); its step runs elsewhere and it takes no new work for {} s",
            DRAIN_FOR.as_secs()
        );
        self.running.remove(s);
        if let Err(e) = self.sched.requeue(s) {
            tracing::debug!("{e}");
        }
        self.sched.set_draining(w, true);
        self.drained.insert(peer, (w, self.now + DRAIN_FOR));
    }

    /// Workers whose drain is over take work again.
    pub(super) fn end_drains(&mut self) {
        let now = self.now;
        let over: Vec<PeerId> = self
            .drained
            .iter()
            .filter(|(_, (_, until))| now >= *until)
            .map(|(p, _)| *p)
            .collect();
        for p in over {
            if let Some((w, _)) = self.drained.remove(&p) {
                self.sched.set_draining(w, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn space_errors_are_recognised_and_others_are_not() {
        let enospc = std::io::Error::from_raw_os_error(28).to_string();
        assert!(super::out_of_space(&format!("writing layer: {enospc}")));
        assert!(super::out_of_space("Disk quota exceeded (os error 122)"));
        assert!(!super::out_of_space("exit code: 28"));
    }
}
