//! What the engine tells an observer as it goes (for metrics), without I/O:
//! the engine calls [`Observer::observe`] with an [`Observation`] at the
//! moment something countable happens, with durations measured on the
//! engine's own clock (the `now` of its events), so a simulated run
//! observes the same values every time.
//!
//! Gauges (workers, slots, queue depth, builds) are not observed: the shell
//! reads them from [`super::Engine::gauges`] when it is scraped.

use std::time::Duration;

/// How a vertex sent to a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VertexOutcome {
    /// Its result was recorded.
    Succeeded,
    /// The worker's error, an undecodable or incomplete result, or the
    /// worker ran out of space (the vertex is then requeued).
    Failed,
    /// Stopped on its worker (its build ended, or `--step-timeout`).
    Cancelled,
    /// Its worker was lost (session closed or heartbeats missed) while it ran; the vertex
    /// went back to the queue, so a later placement ends it again.
    Lost,
}

impl VertexOutcome {
    /// The metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            VertexOutcome::Succeeded => "succeeded",
            VertexOutcome::Failed => "failed",
            VertexOutcome::Cancelled => "cancelled",
            VertexOutcome::Lost => "lost",
        }
    }
}

/// How a build ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BuildOutcome {
    /// Exported (and pushed when asked).
    Succeeded,
    /// A vertex, the export or a limit failed it.
    Failed,
    /// Its client cancelled it, or left it for longer than the grace.
    Cancelled,
}

impl BuildOutcome {
    /// The metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildOutcome::Succeeded => "succeeded",
            BuildOutcome::Failed => "failed",
            BuildOutcome::Cancelled => "cancelled",
        }
    }
}

/// One countable thing the engine did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A build was admitted (submitted, or resumed after a restart).
    BuildAdmitted,
    /// A vertex was placed on a worker.
    VertexPlaced {
        /// Its platform (`linux/amd64`), or `none` for a vertex without one.
        platform: String,
        /// The worker emulates the platform (a RUN step under qemu).
        emulated: bool,
        /// How long it waited since it could run (admission, resumption or
        /// its last input's finish).
        queue_wait: Duration,
    },
    /// A placed vertex's outcome arrived from its worker.
    VertexEnded {
        /// Its platform, as in `VertexPlaced`.
        platform: String,
        /// As placed.
        emulated: bool,
        /// How it ended.
        outcome: VertexOutcome,
        /// From its placement to its outcome (blob transfers included).
        duration: Duration,
    },
    /// Vertices of an admitted build that were done at once from results
    /// the coordinator already held (cache hits), sources not counted.
    CacheHits {
        /// How many.
        count: u64,
    },
    /// A build ended.
    BuildEnded {
        /// How.
        outcome: BuildOutcome,
    },
}

/// Receives [`Observation`]s (the service's metrics; a recording fake in
/// tests). Called on the engine's thread: keep it cheap, never block.
pub trait Observer: Send {
    /// Takes one observation.
    fn observe(&mut self, o: Observation);
}

/// Drops every observation (the default, and the local build's).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn observe(&mut self, _: Observation) {}
}

/// Keeps every observation, in order (tests).
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    /// What was observed.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Observation>>>,
}

impl Observer for Recorder {
    fn observe(&mut self, o: Observation) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(o);
    }
}

/// The label value of a vertex's platform.
pub(super) fn platform_label(p: Option<&imgfarm_common::platform::Platform>) -> String {
    p.map(ToString::to_string).unwrap_or_else(|| "none".into())
}

/// What the engine holds now, for gauges read at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Connected workers, by name.
    pub workers: Vec<WorkerGauge>,
    /// Vertices ready to run (every input done) and not placed, by
    /// platform label.
    pub queued_vertices: std::collections::BTreeMap<String, u64>,
    /// Builds admitted and not yet placed.
    pub builds_queued: u64,
    /// Builds with a vertex placed and not ended.
    pub builds_running: u64,
}

/// What a worker is doing, as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkerState {
    /// Connected, nothing running.
    Idle,
    /// At least one vertex running.
    Busy,
    /// Takes no new work for now (out of disk space); may still be running.
    Draining,
}

impl WorkerState {
    /// The metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Draining => "draining",
        }
    }
}

/// One connected worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerGauge {
    /// Its certificate name.
    pub name: String,
    /// Platforms it runs natively.
    pub native: Vec<String>,
    /// Platforms it emulates.
    pub emulated: Vec<String>,
    /// Its slots.
    pub slots: u64,
    /// Slots running a vertex the engine placed there.
    pub busy: u64,
    /// Idle, busy or draining.
    pub state: WorkerState,
}
