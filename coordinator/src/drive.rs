//! The loop that joins the scheduler to a link: ask for decisions, dispatch
//! them, feed events back. It serves the local build; the farm's
//! coordinator has its own loop in [`crate::service`].

use crate::link::{LinkError, LinkEvent, WorkerLink};
use crate::scheduler::{Decision, SchedError, Scheduler};
use imgfarm_common::oci::Digest;

/// What the caller sees while the build runs (for progress output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveEvent {
    /// A vertex was sent to a worker.
    Started(Decision),
    /// A worker event.
    Link(LinkEvent),
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// Scheduling is impossible.
    #[error(transparent)]
    Sched(#[from] SchedError),
    /// The link broke.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A vertex failed.
    #[error("{error}")]
    VertexFailed {
        /// The vertex.
        key: Digest,
        /// The worker's message.
        error: String,
    },
    /// Nothing runs and nothing can start (a cycle or a lost input).
    #[error("the build is stuck: no vertex is ready and none is running")]
    Stuck,
}

/// Run the scheduler to completion over `link`. On the first failure no new
/// vertex starts; running ones are waited for, then the failure is returned.
pub fn drive(
    sched: &mut Scheduler,
    link: &mut dyn WorkerLink,
    on_event: &mut dyn FnMut(&DriveEvent),
) -> Result<(), DriveError> {
    let mut failure: Option<DriveError> = None;
    loop {
        if failure.is_none() {
            for d in sched.decide()? {
                on_event(&DriveEvent::Started(d.clone()));
                link.dispatch(&d)?;
            }
        }
        if sched.running() == 0 {
            if let Some(f) = failure {
                return Err(f);
            }
            if sched.is_finished() {
                return Ok(());
            }
            return Err(DriveError::Stuck);
        }
        let ev = link.recv()?;
        on_event(&DriveEvent::Link(ev.clone()));
        match ev {
            LinkEvent::Log { .. } => {}
            LinkEvent::Done { key } => sched.complete(&key)?,
            LinkEvent::Failed { key, error } => {
                sched.fail(&key)?;
                failure.get_or_insert(DriveError::VertexFailed { key, error });
            }
            LinkEvent::WorkerLost { worker } => {
                sched.worker_lost(worker);
            }
        }
    }
}
