//! The coordinator engine, free of I/O (in the manner of quinn-proto): plain
//! structs that take [`Event`]s (a peer joined, a message, a peer closed,
//! time advanced, an export ended) and queue [`Action`]s (send a message,
//! run a vertex on a worker, close a peer, start an export). No sockets, no
//! clocks, no spawning inside: the caller passes `now` with every event and
//! carries the actions out.
//!
//! Two shells drive the same engine:
//! - the farm service ([`crate::service`]) over QUIC sessions, with the
//!   SQLite [`crate::service::queue::Queue`] as its [`Journal`];
//! - the local build ([`crate::local`]), with the embedded worker as an
//!   in-process peer (results handed over in memory, no blob transfer).
//!
//! [`sim::FarmSim`] drives it with simulated workers for deterministic
//! tests of failover, balancing, affinity, grace periods and restarts.
//!
//! Layout:
//! - [`builds`]: what each build needs and has finished (the one reuse rule
//!   lives in [`imgfarm_common::graph::reuse`]);
//! - [`pool`]: connected workers and heartbeats;
//! - [`ports`]: what the engine asks of its environment ([`Journal`],
//!   [`Blobs`]);
//! - `admission` (submit, re-attach, cancel, end of a build), `peers`
//!   (joins, messages, losses), `vertices` (placing, results, export).

pub mod builds;
pub mod observe;
pub mod pool;
pub mod ports;
pub mod sim;

mod admission;
mod faults;
pub mod gc;
mod limits;
mod peers;
mod vertices;

use crate::scheduler::{Scheduler, WorkerId};
use builds::Builds;
use imgfarm_common::farm::{FarmDefinition, OutputSpec, VertexResult};
use imgfarm_common::identity::Role;
use imgfarm_common::oci::store::RefDescriptor;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{BlobHeader, BuiltManifest, Hello, Message};
pub use observe::{Gauges, Observation, Observer};
use pool::Pool;
pub use ports::{AllBlobs, Blobs, Journal, JournalError, MemJournal, StoredBuild};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// A peer (worker or client) as the shell numbers it: one control session.
pub type PeerId = u64;

/// How the engine behaves (timeouts and bounds).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Silence after which a worker is lost.
    pub heartbeat_timeout: Duration,
    /// How long a build waits for a worker able to run one of its vertices
    /// before it fails (lets a restarting worker reconnect).
    pub no_candidate_grace: Duration,
    /// After a start, how long no build fails for lack of a candidate:
    /// workers reconnect with backoff after a coordinator restart.
    pub startup_grace: Duration,
    /// Vertices running at once over the whole farm.
    pub max_in_flight: usize,
    /// Messages the shell queues for one peer (named in the message that
    /// drops a slow peer).
    pub session_queue: usize,
    /// Ended builds kept in memory (the rest are in the journal).
    pub keep_ended: usize,
    /// Name the worker in a vertex's error (a farm has several; the local
    /// build's one worker goes unnamed).
    pub name_workers: bool,
    /// How long a build may have no client attached (its client died or
    /// left, or the coordinator restarted) before it is cancelled; a client
    /// re-attaching in time keeps it. Zero never cancels.
    pub client_grace: Duration,
}

impl Default for EngineOptions {
    /// The farm's defaults: lost after 6 s of silence, 10 s grace (30 s
    /// after a start), 4096 vertices in flight, 4096 queued messages.
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(6),
            no_candidate_grace: Duration::from_secs(10),
            startup_grace: Duration::from_secs(30),
            max_in_flight: 4096,
            session_queue: 4096,
            keep_ended: 64,
            name_workers: true,
            client_grace: Duration::from_secs(300),
        }
    }
}

/// What happened, told to [`Engine::handle`].
#[derive(Debug)]
pub enum Event {
    /// An authenticated peer opened its control session.
    PeerJoined {
        /// Its id.
        peer: PeerId,
        /// The role its certificate names.
        role: Role,
        /// The name its certificate names.
        name: String,
        /// Its hello (platforms, slots and cache summary of a worker).
        hello: Hello,
    },
    /// A message on a control session.
    Message {
        /// From whom.
        peer: PeerId,
        /// The message.
        msg: Message,
    },
    /// A client submitted a decoded build (the local build's client is
    /// in-process; the farm's `Submit` message is decoded into this).
    Submit {
        /// The client.
        peer: PeerId,
        /// The validated-or-not definition (the engine checks it).
        definition: FarmDefinition,
        /// Where the result goes.
        output: OutputSpec,
    },
    /// A worker finished a vertex (the farm's `VertexDone` is decoded into
    /// this; the in-process worker hands its result over directly).
    VertexDone {
        /// The worker.
        peer: PeerId,
        /// The vertex key it ran.
        key: Digest,
        /// Its result, or the worker's error.
        result: Result<VertexResult, String>,
        /// How long it ran.
        duration_ms: u64,
    },
    /// A session ended (closed, broken, or timed out at the transport).
    PeerClosed {
        /// The peer.
        peer: PeerId,
        /// Why, for the log.
        reason: String,
    },
    /// The shell could not queue a message for this peer: it does not read.
    PeerSlow {
        /// The peer.
        peer: PeerId,
    },
    /// An [`Action::Export`] ended.
    Exported {
        /// The build.
        build: String,
        /// The outcome.
        outcome: ExportOutcome,
    },
    /// Only time advanced (heartbeat and grace checks).
    Tick,
}

/// What the shell made of an [`Action::Export`].
#[derive(Debug, Clone)]
pub enum ExportOutcome {
    /// Written (and pushed when asked).
    Done {
        /// Per-platform manifests, request order.
        manifests: Vec<BuiltManifest>,
        /// The merged index, when one was made.
        index: Option<BlobHeader>,
        /// References pushed.
        pushed: Vec<String>,
    },
    /// The index, a write or the push failed.
    Failed {
        /// The merged index, when it was made before the failure.
        index: Option<BlobHeader>,
        /// Why.
        error: String,
    },
}

impl ExportOutcome {
    /// Written from `manifests` (request order), with no index made and
    /// nothing pushed: the local build's outputs, the simulator's export.
    pub fn written(manifests: &[(String, RefDescriptor)]) -> Self {
        ExportOutcome::Done {
            manifests: manifests
                .iter()
                .map(|(p, m)| BuiltManifest::new(p, m))
                .collect(),
            index: None,
            pushed: Vec::new(),
        }
    }
}

/// A vertex to run on a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOrder {
    /// The build it is run for (the first that needs it).
    pub build: String,
    /// The vertex key (what the worker knows).
    pub key: Digest,
    /// The scheduler key (salted for a vertex the build may not reuse);
    /// [`Engine::job`] takes it.
    pub sched_key: Digest,
    /// The worker emulates the vertex's platform.
    pub emulated: bool,
}

/// What the shell must do, from [`Engine::poll_action`].
#[derive(Debug, Clone)]
pub enum Action {
    /// Queue `msg` on `peer`'s control session.
    Send {
        /// To whom.
        peer: PeerId,
        /// What.
        msg: Message,
    },
    /// Run a vertex on worker `peer` (the farm shell sends
    /// [`Engine::job`] as a `RunVertex`; the local shell runs it in-process).
    Run {
        /// The worker.
        peer: PeerId,
        /// The vertex.
        order: RunOrder,
    },
    /// Close `peer`'s connection after `after` (so a message queued just
    /// before, such as a refusal, can reach it).
    Close {
        /// The peer.
        peer: PeerId,
        /// Application close code (`proto::close_code`).
        code: u32,
        /// Reason sent with the close.
        reason: String,
        /// Delay before closing.
        after: Duration,
    },
    /// The engine forgot `peer` (it left, was lost or dropped): drop its
    /// outgoing queue; the session's stream ends once what is queued was
    /// written. A [`Action::Close`] for it, if any, comes first.
    Release {
        /// The peer.
        peer: PeerId,
    },
    /// Make build `build`'s outputs from its per-platform manifests (the
    /// farm merges an index and pushes; the local build writes its
    /// outputs); answer with [`Event::Exported`].
    Export {
        /// The build.
        build: String,
        /// `(platform, manifest)` in request order.
        manifests: Vec<(String, RefDescriptor)>,
        /// Where it goes (with any lent credentials).
        output: OutputSpec,
    },
}

/// What the engine holds in memory, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Keys the scheduler tracks (vertices of active builds, and vertices
    /// of ended builds still running until their outcome arrives).
    pub scheduler_keys: usize,
    /// Vertices running on workers.
    pub running: usize,
    /// Builds queued or running.
    pub active_builds: usize,
    /// Open control sessions (workers and clients).
    pub sessions: usize,
}

/// A vertex handed to a worker.
#[derive(Debug, Clone)]
struct Dispatched {
    worker: WorkerId,
    /// The vertex key (the scheduler key may be salted).
    key: Digest,
    emulated: bool,
    /// Its platform's label ([`Observation::VertexPlaced`]).
    platform: String,
    /// When it was sent (for `--step-timeout`).
    started: Instant,
}

/// One admitted control session.
#[derive(Debug)]
struct Peer {
    role: Role,
    name: String,
}

/// The coordinator's whole state, driven by [`Engine::handle`].
pub struct Engine {
    opts: EngineOptions,
    journal: Box<dyn Journal>,
    blobs: Box<dyn Blobs>,
    sched: Scheduler,
    pool: Pool,
    builds: Builds,
    peers: BTreeMap<PeerId, Peer>,
    /// Builds with a vertex no worker can take: since when, and why.
    no_candidate: BTreeMap<String, (Instant, String)>,
    /// Dispatched vertices by scheduler key, until their outcome arrives
    /// or their worker is lost.
    running: BTreeMap<Digest, Dispatched>,
    /// When this engine started (see [`EngineOptions::startup_grace`]).
    started: Instant,
    /// Wall-clock seconds at `started` (build creation times).
    started_unix: u64,
    /// The time of the event being handled.
    now: Instant,
    /// Seeds build ids (unique across restarts when the shell passes a
    /// fresh seed; deterministic in the simulator).
    id_seed: String,
    id_seq: u64,
    /// Scheduler keys no active build needs that the scheduler had to keep
    /// (running, or an input of a running one): retired once they can be.
    orphans: BTreeSet<Digest>,
    /// Workers out of disk space, taking no new work until then.
    drained: BTreeMap<PeerId, (WorkerId, Instant)>,
    /// Builds ended since the start ([`Engine::builds_ended`]).
    ended: u64,
    /// Told what is countable ([`observe`]).
    observer: Box<dyn Observer>,
    /// What resuming the journal in [`Engine::new`] observed, for [`Engine::set_observer`];
    /// `None` from the first event on.
    resuming: Option<Vec<Observation>>,
    actions: VecDeque<Action>,
}

impl Engine {
    /// An engine starting at `now` (wall clock `unix_secs`), resuming the
    /// builds `journal` holds as queued or running. `id_seed` makes build
    /// ids unique (the service passes time and pid).
    pub fn new(
        opts: EngineOptions,
        journal: Box<dyn Journal>,
        blobs: Box<dyn Blobs>,
        now: Instant,
        unix_secs: u64,
        id_seed: String,
    ) -> Self {
        let mut e = Self {
            sched: Scheduler::empty(opts.max_in_flight),
            opts,
            journal,
            blobs,
            pool: Pool::default(),
            builds: Builds::default(),
            peers: BTreeMap::new(),
            no_candidate: BTreeMap::new(),
            running: BTreeMap::new(),
            started: now,
            started_unix: unix_secs,
            now,
            id_seed,
            id_seq: 0,
            orphans: BTreeSet::new(),
            drained: BTreeMap::new(),
            ended: 0,
            observer: Box::new(observe::NoObserver),
            resuming: Some(Vec::new()),
            actions: VecDeque::new(),
        };
        match e.journal.load_active() {
            Ok(stored) => e.resume(stored),
            Err(err) => tracing::error!("resuming builds: {err}"),
        }
        e
    }

    /// Takes one event at time `now`, then places what can run and exports
    /// what is finished. Actions are queued for [`Engine::poll_action`].
    pub fn handle(&mut self, now: Instant, ev: Event) {
        self.now = now.max(self.now);
        self.resuming = None;
        match ev {
            Event::PeerJoined {
                peer,
                role,
                name,
                hello,
            } => self.add_peer(peer, role, name, &hello),
            Event::Message { peer, msg } => self.on_message(peer, msg),
            Event::Submit {
                peer,
                definition,
                output,
            } => self.submit(peer, definition, output),
            Event::VertexDone {
                peer,
                key,
                result,
                duration_ms,
            } => self.on_vertex_done(peer, &key, result, duration_ms),
            Event::PeerClosed { peer, reason } => self.drop_peer(peer, &reason),
            Event::PeerSlow { peer } => self.drop_slow_peer(peer),
            Event::Exported { build, outcome } => self.finish_export(&build, outcome),
            Event::Tick => {
                self.check_heartbeats();
                self.check_grace();
                self.check_limits();
                self.end_drains();
            }
        }
        self.pump();
    }

    /// The next thing to do, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The options it runs with.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// From now on, tell `observer` what is countable (the service's
    /// metrics). It first hears what resuming the journal's builds in
    /// [`Engine::new`] observed (their admissions and cache hits), so a
    /// resumed build is admitted once and ends once in the counts.
    pub fn set_observer(&mut self, mut observer: Box<dyn Observer>) {
        for o in self.resuming.take().unwrap_or_default() {
            observer.observe(o);
        }
        self.observer = observer;
    }

    fn observe(&mut self, o: Observation) {
        // Held only while `new` resumes the journal (bounded by the builds resumed); the
        // first event or observer ends the holding.
        if let Some(held) = self.resuming.as_mut() {
            held.push(o.clone());
        }
        self.observer.observe(o);
    }

    /// Workers, slots, the queue and builds as they stand (gauges read
    /// when the metrics are scraped; costs a pass over workers, ready
    /// vertices and active builds).
    pub fn gauges(&self) -> Gauges {
        let workers = self
            .pool
            .workers()
            .map(|(session, w)| {
                let busy = self.sched.load(w.sched_id) as u64;
                let state =
                    if self.sched.is_draining(w.sched_id) || self.drained.contains_key(&session) {
                        observe::WorkerState::Draining
                    } else if busy > 0 {
                        observe::WorkerState::Busy
                    } else {
                        observe::WorkerState::Idle
                    };
                observe::WorkerGauge {
                    name: w.name.clone(),
                    native: w.native.clone(),
                    emulated: w.emulated.clone(),
                    slots: u64::from(w.slots),
                    busy,
                    state,
                }
            })
            .collect();
        let (mut builds_queued, mut builds_running) = (0, 0);
        for b in self.builds.active() {
            // A build whose vertices were all cached (or run for another build) never leaves
            // `Queued`, but it is running once it exports.
            match b.state {
                builds::BuildState::Queued if !b.exporting => builds_queued += 1,
                _ => builds_running += 1,
            }
        }
        Gauges {
            workers,
            queued_vertices: self.sched.ready_by_platform(),
            builds_queued,
            builds_running,
        }
    }

    /// The numbers [`EngineStats`] reports.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            scheduler_keys: self.sched.tracked(),
            running: self.sched.running(),
            active_builds: self.builds.active().count(),
            sessions: self.peers.len(),
        }
    }

    /// The build `id`'s state name (`queued`, `running`, `done`, ...), while
    /// it is in memory.
    pub fn build_state(&self, id: &str) -> Option<&'static str> {
        self.builds.get(id).map(|b| b.state.as_str())
    }

    /// When the engine next needs a [`Event::Tick`] to notice a lost worker
    /// or an ended grace period: a quarter of the heartbeat timeout,
    /// between 50 ms and 1 s.
    pub fn tick_period(&self) -> Duration {
        (self.opts.heartbeat_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// The session of worker `w`, when connected.
    fn worker_session(&self, w: WorkerId) -> Option<PeerId> {
        self.pool.session_of(w)
    }

    /// Queues `msg` for `peer`.
    fn send(&mut self, peer: PeerId, msg: Message) {
        if self.peers.contains_key(&peer) {
            self.actions.push_back(Action::Send { peer, msg });
        }
    }

    /// Wall-clock seconds now.
    fn unix_now(&self) -> u64 {
        self.started_unix + self.now.saturating_duration_since(self.started).as_secs()
    }
}
