//! The local build's shell around the [`Engine`]: the daemonless build *is*
//! the farm with an in-process link. The embedded worker joins as a peer,
//! the caller as a client; vertices run on threads of this process and hand
//! their results to the engine in memory (no encoding, no blob transfer).
//!
//! What the farm has, the local build has by the same code: one rule for
//! result reuse, cancel of running vertices when the build fails, the
//! grace rules (zero here: a platform nobody offers fails at once).

use crate::engine::{
    Action, Blobs, Engine, EngineOptions, Event, ExportOutcome, Journal, PeerId, RunOrder,
};
use imgfarm_common::entitlement::Entitlements;
use imgfarm_common::farm::{FarmDefinition, OutputSpec, VertexResult};
use imgfarm_common::identity::Role;
use imgfarm_common::oci::store::RefDescriptor;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{BuildFinished, BuiltManifest, Hello, Message, VertexLog};
use imgfarm_transport::runner::VertexRunner;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The embedded worker's peer id.
const WORKER: PeerId = 1;
/// The caller's peer id.
const CLIENT: PeerId = 2;

/// What the caller of [`run`] sees and does.
pub trait LocalClient {
    /// A message the engine sends the build's client: `VertexStarted`,
    /// `VertexLog`, `VertexFinished` (cached or not, with its error),
    /// `Refused`, `BuildFinished`.
    fn message(&mut self, msg: &Message);
    /// Writes the build's outputs from its per-platform manifests.
    fn export(&mut self, manifests: &[(String, RefDescriptor)]) -> Result<(), String>;
    /// Stops vertex `key` if it runs (the build failed or was cancelled).
    fn cancel(&mut self, key: &Digest);
}

/// What the embedded worker offers.
#[derive(Debug, Clone)]
pub struct LocalWorkerOffer {
    /// Platforms it runs natively.
    pub native: Vec<Platform>,
    /// Platforms it emulates.
    pub emulated: Vec<Platform>,
    /// Vertices at once (`--jobs`).
    pub jobs: usize,
    /// Entitlements the build allows (`imgfarm build --allow`): locally the user is also
    /// the worker's operator.
    pub entitlements: Entitlements,
}

/// Why a local build did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The engine refused the build (invalid definition, no worker for a
    /// platform at admission).
    #[error("{0}")]
    Refused(String),
    /// The build failed; the client was told which vertex and why.
    #[error("{0}")]
    Failed(String),
    /// The engine stopped without an outcome (a bug).
    #[error("internal error: the build ended without an outcome")]
    NoOutcome,
}

/// What the vertex threads send back.
enum Report {
    Log {
        key: Digest,
        bytes: Vec<u8>,
    },
    Done {
        key: Digest,
        result: Result<VertexResult, String>,
        ms: u64,
    },
}

/// Runs `definition` to its end on `runner`, telling `client` as it goes;
/// returns the per-platform manifests once `client` wrote the outputs.
pub fn run<R: VertexRunner>(
    definition: FarmDefinition,
    output: OutputSpec,
    offer: &LocalWorkerOffer,
    journal: Box<dyn Journal>,
    blobs: Box<dyn Blobs>,
    runner: Arc<R>,
    client: &mut dyn LocalClient,
) -> Result<Vec<BuiltManifest>, LocalError> {
    let opts = EngineOptions {
        // The embedded worker never goes silent: it is this process.
        heartbeat_timeout: Duration::MAX,
        no_candidate_grace: Duration::ZERO,
        startup_grace: Duration::ZERO,
        max_in_flight: offer.jobs.max(1),
        name_workers: false,
        // The client is this process: it never goes away.
        client_grace: Duration::ZERO,
        ..EngineOptions::default()
    };
    let now = Instant::now();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!("local/{}/{}", unix.as_nanos(), std::process::id());
    let mut engine = Engine::new(opts, journal, blobs, now, unix.as_secs(), seed);
    let name = "local".to_string();
    engine.handle(
        now,
        Event::PeerJoined {
            peer: WORKER,
            role: Role::Worker,
            name: name.clone(),
            hello: Hello::offer(
                Role::Worker,
                "local",
                &offer.native,
                &offer.emulated,
                offer.jobs as u32,
            )
            .with_entitlements(offer.entitlements.clone()),
        },
    );
    engine.handle(
        now,
        Event::PeerJoined {
            peer: CLIENT,
            role: Role::Client,
            name,
            hello: Hello::offer(Role::Client, "local", &[], &[], 0),
        },
    );
    engine.handle(
        now,
        Event::Submit {
            peer: CLIENT,
            definition,
            output,
        },
    );
    let (tx, rx) = channel::<Report>();
    let mut running = 0usize;
    let mut finished: Option<BuildFinished> = None;
    let mut refused: Option<String> = None;
    loop {
        let mut next = Vec::new();
        while let Some(a) = engine.poll_action() {
            match a {
                Action::Send { peer: CLIENT, msg } => {
                    match &msg {
                        Message::BuildFinished(f) => finished = Some(f.clone()),
                        Message::Refused(r) => refused = Some(r.clone()),
                        _ => {}
                    }
                    client.message(&msg);
                }
                Action::Send {
                    msg: Message::CancelVertex { vertex_key },
                    ..
                } => {
                    client.cancel(&vertex_key);
                }
                Action::Send { .. } | Action::Close { .. } | Action::Release { .. } => {}
                Action::Run { order, .. } => {
                    running += 1;
                    spawn_vertex(Arc::clone(&runner), order, tx.clone());
                }
                Action::Export {
                    build, manifests, ..
                } => {
                    let outcome = match client.export(&manifests) {
                        Ok(()) => ExportOutcome::written(&manifests),
                        Err(error) => ExportOutcome::Failed { index: None, error },
                    };
                    next.push(Event::Exported { build, outcome });
                }
            }
        }
        if !next.is_empty() {
            for ev in next {
                engine.handle(Instant::now(), ev);
            }
            continue;
        }
        if let Some(r) = refused.take() {
            if finished.is_none() {
                return Err(LocalError::Refused(r));
            }
        }
        if running == 0 {
            return match finished.map(|f| f.result) {
                Some(Ok(m)) => Ok(m),
                Some(Err(e)) => Err(LocalError::Failed(e)),
                None => Err(LocalError::NoOutcome),
            };
        }
        // Ticks only for time limits (`--timeout`, `--step-timeout`).
        let ev = match rx.recv_timeout(engine.tick_period()) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Event::Tick,
            Ok(Report::Log { key, bytes }) => Event::Message {
                peer: WORKER,
                msg: Message::VertexLog(VertexLog {
                    vertex_key: key.clone(),
                    stream: 1,
                    data: bytes,
                }),
            },
            Ok(Report::Done { key, result, ms }) => {
                running -= 1;
                Event::VertexDone {
                    peer: WORKER,
                    key,
                    result,
                    duration_ms: ms,
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(LocalError::NoOutcome)
            }
        };
        engine.handle(Instant::now(), ev);
    }
}

/// Runs one vertex on its own thread, reporting its output and its end.
fn spawn_vertex<R: VertexRunner>(runner: Arc<R>, order: RunOrder, tx: Sender<Report>) {
    let key = order.key.clone();
    let thread_tx = tx.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("vertex-{}", key.short()))
        .spawn(move || {
            let started = Instant::now();
            let log_tx = thread_tx.clone();
            let mut log = |b: &[u8]| {
                let _ = log_tx.send(Report::Log {
                    key: order.key.clone(),
                    bytes: b.to_vec(),
                });
            };
            let result = runner
                .run(&order.key, order.emulated, &mut log)
                .map_err(|e| e.to_string());
            let _ = thread_tx.send(Report::Done {
                key: order.key,
                result,
                ms: started.elapsed().as_millis() as u64,
            });
        });
    if let Err(e) = spawned {
        let _ = tx.send(Report::Done {
            key,
            result: Err(format!("cannot start a thread for the vertex: {e}")),
            ms: 0,
        });
    }
}
