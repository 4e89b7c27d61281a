//! The scheduler↔worker link of the local build behind one trait:
//! [`InProcessLink`] (threads and a channel). The driver in
//! [`crate::drive`] only sees [`WorkerLink`]; the farm does not use it (the
//! coordinator service in [`crate::service`] runs its own event loop).

use crate::scheduler::{Decision, WorkerId};
use imgfarm_common::oci::Digest;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

/// What a worker reports about a vertex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Output of the vertex's process (stdout and stderr interleaved).
    Log {
        /// The vertex.
        key: Digest,
        /// Bytes as written.
        bytes: Vec<u8>,
    },
    /// The vertex has its result.
    Done {
        /// The vertex.
        key: Digest,
    },
    /// The vertex failed; `error` says what failed (exit code, output tail).
    Failed {
        /// The vertex.
        key: Digest,
        /// The worker's message.
        error: String,
    },
    /// The worker is gone; its running vertices must go elsewhere.
    WorkerLost {
        /// The worker.
        worker: WorkerId,
    },
}

/// Why the link itself broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Every worker went away.
    #[error("the link to the workers is closed")]
    Closed,
}

/// The coordinator's side of the connection to its workers.
pub trait WorkerLink {
    /// Ask the worker named in `decision` to run the vertex.
    fn dispatch(&mut self, decision: &Decision) -> Result<(), LinkError>;
    /// Wait for the next event from any worker.
    fn recv(&mut self) -> Result<LinkEvent, LinkError>;
}

pub use imgfarm_transport::runner::VertexRunner;

/// The embedded worker: each dispatched vertex runs on its own thread and
/// reports over a channel.
pub struct InProcessLink<R: VertexRunner> {
    runner: Arc<R>,
    tx: Sender<LinkEvent>,
    rx: Receiver<LinkEvent>,
}

impl<R: VertexRunner> InProcessLink<R> {
    /// A link to one in-process worker.
    pub fn new(runner: Arc<R>) -> Self {
        let (tx, rx) = channel();
        Self { runner, tx, rx }
    }
}

impl<R: VertexRunner> WorkerLink for InProcessLink<R> {
    fn dispatch(&mut self, decision: &Decision) -> Result<(), LinkError> {
        let runner = Arc::clone(&self.runner);
        let tx = self.tx.clone();
        let key = decision.key.clone();
        let emulated = decision.emulated;
        std::thread::Builder::new()
            .name(format!("vertex-{}", key.short()))
            .spawn(move || {
                let log_tx = tx.clone();
                let log_key = key.clone();
                let mut log = |b: &[u8]| {
                    let _ = log_tx.send(LinkEvent::Log {
                        key: log_key.clone(),
                        bytes: b.to_vec(),
                    });
                };
                let ev = match runner.run(&key, emulated, &mut log) {
                    Ok(()) => LinkEvent::Done { key },
                    Err(error) => LinkEvent::Failed { key, error },
                };
                let _ = tx.send(ev);
            })
            .map(|_| ())
            .map_err(|_| LinkError::Closed)
    }

    fn recv(&mut self) -> Result<LinkEvent, LinkError> {
        self.rx.recv().map_err(|_| LinkError::Closed)
    }
}
