//! The coordinator service (`imgfarm coordinator`): the farm's shell around
//! the [`Engine`] (FARM.md). It owns what the engine must not: the QUIC
//! endpoint, one reader and one writer task per control session, the
//! SQLite [`queue`] (the engine's journal), the clock, and the index merge
//! and push ([`export`]) that an [`Action::Export`] asks for.
//!
//! One task owns the engine; each control session has a reader task feeding
//! the loop and a writer task draining a bounded channel, so a slow peer
//! never blocks the loop, and one that stops reading is reported to the
//! engine ([`Event::PeerSlow`]), which drops it (telling it why) instead of
//! making the coordinator buffer without limit.

pub mod export;
pub mod gc;
pub mod queue;

use crate::engine::{
    Action, Engine, EngineOptions, EngineStats, Event, ExportOutcome, Gauges, PeerId,
};
use crate::metrics::CoordinatorMetrics;
use crate::server::{drop_peer, Server, ServerError, ServerEvent, ServerOptions, Session};
use export::MergedIndex;
use imgfarm_common::farm::OutputSpec;
use imgfarm_common::identity::Credentials;
use imgfarm_common::metrics_http::{self, HttpOptions, MetricsServer};
use imgfarm_common::oci::store::{ContentStore, RefDescriptor, StoreError};
use imgfarm_common::proto::io::{read_msg, write_msg};
use imgfarm_common::proto::{Message, MAX_CONTROL_FRAME};
use queue::{Queue, QueueError};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// UDP address for QUIC (port 0 picks one; see [`Service::local_addr`]).
    pub listen: SocketAddr,
    /// `coordinator.{crt,key}` and `ca.crt`.
    pub creds: Credentials,
    /// State directory: the content store and `coordinator.db`.
    pub state_dir: PathBuf,
    /// Heartbeat interval announced to workers.
    pub heartbeat_interval: Duration,
    /// Silence after which a worker is lost (default: 3 intervals).
    pub heartbeat_timeout: Duration,
    /// How long a build waits for a worker able to run one of its
    /// vertices before it fails (lets a restarting worker reconnect).
    pub no_candidate_grace: Duration,
    /// After a start, how long no build fails for lack of a candidate:
    /// workers reconnect with backoff after a coordinator restart.
    pub startup_grace: Duration,
    /// Vertices running at once over the whole farm.
    pub max_in_flight: usize,
    /// Largest blob accepted from a peer.
    pub max_blob_size: u64,
    /// Messages queued for one peer's control session (progress for a
    /// client, jobs for a worker); a peer letting more pile up is not
    /// reading and is dropped (0 counts as 1).
    pub session_queue: usize,
    /// How long a build may go without an attached client before it is
    /// cancelled (zero: never).
    pub client_grace: Duration,
    /// `--store-max`: bytes the content store may hold beyond what queued
    /// and running builds need; `None`: [`imgfarm_common::size::default_cap`]
    /// of the state directory (10% of its filesystem).
    pub store_max: Option<u64>,
    /// `--metrics-listen`: where to serve `GET /metrics` (TCP; port 0
    /// picks one, see [`Service::metrics_addr`]); `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
}

impl ServiceOptions {
    /// Defaults: 2 s heartbeats, lost after 6 s, 10 s grace (30 s after a
    /// start), 4096 vertices in flight, 64 GiB blobs, 4096 queued messages
    /// per session.
    pub fn new(listen: SocketAddr, creds: Credentials, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            creds,
            state_dir: state_dir.into(),
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(6),
            no_candidate_grace: Duration::from_secs(10),
            startup_grace: Duration::from_secs(30),
            max_in_flight: 4096,
            max_blob_size: 64 << 30,
            session_queue: 4096,
            client_grace: Duration::from_secs(300),
            store_max: None,
            metrics_listen: None,
        }
    }
}

impl ServiceOptions {
    /// What the engine takes of these options.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            heartbeat_timeout: self.heartbeat_timeout,
            no_candidate_grace: self.no_candidate_grace,
            startup_grace: self.startup_grace,
            max_in_flight: self.max_in_flight,
            session_queue: self.session_queue,
            client_grace: self.client_grace,
            ..EngineOptions::default()
        }
    }
}

/// Why the coordinator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The state directory could not be created.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The content store failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The QUIC endpoint failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The metrics endpoint cannot listen.
    #[error(transparent)]
    Metrics(#[from] imgfarm_common::metrics_http::MetricsHttpError),
    /// The event loop panicked or was aborted.
    #[error("the coordinator's event loop ended abnormally: {0}")]
    Loop(String),
}

/// What reaches the event loop besides endpoint events.
enum Input {
    /// An event for the engine from a session's reader or an export task.
    Engine(Event),
    /// A store collection was planned ([`gc`]).
    GcPlanned(gc::Planned),
    /// A metrics scrape asks for the engine's gauges.
    Gauges(oneshot::Sender<Gauges>),
}

/// What the coordinator holds in memory (the engine's numbers), a
/// snapshot taken after each turn of the event loop.
pub type ServiceStats = EngineStats;

/// A running coordinator.
#[derive(Debug)]
pub struct Service {
    addr: SocketAddr,
    /// The metrics endpoint, when asked for.
    metrics: Option<MetricsServer>,
    stats: Arc<Mutex<ServiceStats>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Opens the state (resuming queued and running builds), binds the
    /// endpoint and starts serving.
    pub async fn start(opts: ServiceOptions) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(&opts.state_dir).map_err(|source| ServiceError::StateDir {
            path: opts.state_dir.clone(),
            source,
        })?;
        let store = ContentStore::open(&opts.state_dir)?;
        let queue = Queue::open(&opts.state_dir)?;
        let store_max = opts
            .store_max
            .unwrap_or_else(|| imgfarm_common::size::default_cap(&opts.state_dir));
        let metrics = opts.metrics_listen.map(|_| {
            Arc::new(
                CoordinatorMetrics::new(store_max).with_certificate_expiry(opts.creds.not_after()),
            )
        });
        let mut sopts = ServerOptions::new(opts.listen, opts.creds.clone(), store.clone());
        sopts.metrics = metrics.clone();
        sopts.heartbeat_interval_ms = opts.heartbeat_interval.as_millis() as u64;
        sopts.max_blob_size = opts.max_blob_size;
        let server = Server::bind(sopts)?;
        let addr = server.local_addr().map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let seed = format!("{}/{}", unix.as_nanos(), std::process::id());
        let mut engine = Engine::new(
            opts.engine_options(),
            Box::new(queue),
            Box::new(store.clone()),
            Instant::now(),
            unix.as_secs(),
            seed,
        );
        if let Some(m) = &metrics {
            engine.set_observer(Box::new(m.observer()));
        }
        tracing::info!("content store capped at {store_max} bytes beyond what running builds need");
        let shell = Shell {
            engine,
            gc: gc::Collector::new(gc::GcOptions::new(store_max)),
            store,
            peers: BTreeMap::new(),
            inputs: tx.clone(),
        };
        let metrics = match (opts.metrics_listen, metrics) {
            (Some(at), Some(m)) => Some(serve_metrics(at, m, tx.clone(), shell.store.clone())?),
            _ => None,
        };
        let stats = Arc::new(Mutex::new(shell.engine.stats()));
        let (stop, stopped) = oneshot::channel();
        let lp = Loop {
            server,
            tx,
            rx,
            stopped,
            stats: stats.clone(),
        };
        let task = tokio::spawn(event_loop(shell, lp));
        tracing::debug!("coordinator endpoint bound to {addr}");
        Ok(Self {
            addr,
            metrics,
            stats,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound metrics address, when `--metrics-listen` was given.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// What the coordinator holds now (as of its last event).
    pub fn stats(&self) -> ServiceStats {
        match self.stats.lock() {
            Ok(s) => *s,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Stops accepting, closes every session and waits for the loop to end
    /// (builds stay in the database for the next start).
    pub async fn shutdown(mut self) -> Result<(), ServiceError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.map_err(|e| ServiceError::Loop(e.to_string())),
            None => Ok(()),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Longest a scrape waits for the event loop's gauges.
const SCRAPE_WAIT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `at`: each scrape asks the loop for the
/// engine's gauges and measures the store on a blocking thread.
fn serve_metrics(
    at: SocketAddr,
    metrics: Arc<CoordinatorMetrics>,
    inputs: mpsc::UnboundedSender<Input>,
    store: ContentStore,
) -> Result<MetricsServer, ServiceError> {
    let render = move || {
        let (metrics, inputs, store) = (Arc::clone(&metrics), inputs.clone(), store.clone());
        async move {
            let (tx, rx) = oneshot::channel();
            inputs.send(Input::Gauges(tx)).ok()?;
            let gauges = tokio::time::timeout(SCRAPE_WAIT, rx).await.ok()?.ok()?;
            tokio::task::spawn_blocking(move || {
                let bytes = store.du().map(|u| u.total_bytes).unwrap_or(0);
                metrics.render(&gauges, bytes)
            })
            .await
            .ok()
        }
    };
    Ok(metrics_http::serve(at, HttpOptions::default(), render)?)
}

/// Runs the coordinator until `shutdown` completes.
pub async fn run(
    opts: ServiceOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let service = Service::start(opts).await?;
    shutdown.await;
    service.shutdown().await
}

/// What the event loop owns besides the engine.
struct Loop {
    server: Server,
    tx: mpsc::UnboundedSender<Input>,
    rx: mpsc::UnboundedReceiver<Input>,
    stopped: oneshot::Receiver<()>,
    stats: Arc<Mutex<ServiceStats>>,
}

/// The transport half of one admitted control session.
struct PeerIo {
    /// Bounded ([`ServiceOptions::session_queue`]): a peer that does not
    /// read is reported slow rather than buffered without limit.
    tx: mpsc::Sender<Message>,
    conn: quinn::Connection,
}

/// The engine and the I/O it asks for.
struct Shell {
    engine: Engine,
    gc: gc::Collector,
    store: ContentStore,
    peers: BTreeMap<PeerId, PeerIo>,
    /// Feeds export outcomes back into the loop.
    inputs: mpsc::UnboundedSender<Input>,
}

impl Shell {
    /// Hands `ev` to the engine and carries out every action it queues
    /// (an action may lead to another event: a slow peer, a failed job).
    fn handle(&mut self, ev: Event) {
        let mut pending = vec![ev];
        while let Some(ev) = pending.pop() {
            self.engine.handle(Instant::now(), ev);
            while let Some(a) = self.engine.poll_action() {
                if let Some(next) = self.act(a) {
                    pending.push(next);
                }
            }
        }
    }

    fn act(&mut self, a: Action) -> Option<Event> {
        match a {
            Action::Send { peer, msg } => self.send(peer, msg),
            Action::Run { peer, order } => match self.engine.run_message(&order) {
                Ok(msg) => self.send(peer, msg),
                Err(e) => Some(Event::VertexDone {
                    peer,
                    key: order.key,
                    result: Err(e),
                    duration_ms: 0,
                }),
            },
            Action::Close {
                peer,
                code,
                reason,
                after,
            } => {
                if let Some(p) = self.peers.remove(&peer) {
                    close_later(p.conn, code, reason, after);
                }
                None
            }
            Action::Release { peer } => {
                self.peers.remove(&peer);
                None
            }
            Action::Export {
                build,
                manifests,
                output,
            } => {
                self.export(build, &manifests, output);
                None
            }
        }
    }

    /// Queues `msg` for `peer` without waiting; a full queue means the peer
    /// does not read (a stalled client).
    fn send(&mut self, peer: PeerId, msg: Message) -> Option<Event> {
        let p = self.peers.get(&peer)?;
        match p.tx.try_send(msg) {
            Err(mpsc::error::TrySendError::Full(_)) => Some(Event::PeerSlow { peer }),
            _ => None,
        }
    }

    /// Merges the index, then pushes it on a blocking thread; the outcome
    /// comes back as [`Event::Exported`].
    fn export(&mut self, build: String, manifests: &[(String, RefDescriptor)], output: OutputSpec) {
        let merged = match export::make_index(&self.store, manifests) {
            Ok(m) => m,
            Err(e) => {
                let outcome = ExportOutcome::Failed {
                    index: None,
                    error: e.to_string(),
                };
                let _ = self
                    .inputs
                    .send(Input::Engine(Event::Exported { build, outcome }));
                return;
            }
        };
        if output.push.is_empty() {
            let outcome = exported(merged, Ok(Vec::new()));
            let _ = self
                .inputs
                .send(Input::Engine(Event::Exported { build, outcome }));
            return;
        }
        tracing::info!(build = %build, "pushing {} to {}", merged.index.digest, output.push.join(", "));
        let (store, tx) = (self.store.clone(), self.inputs.clone());
        // The registry client's push future is not `Send` (higher-ranked
        // closures in its upload stream), so it runs on a blocking thread
        // driving it on this runtime.
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let push = export::push_index(&store, &merged.index.digest, &output);
            let result = handle.block_on(push).map_err(|e| e.to_string());
            let outcome = exported(merged, result);
            let _ = tx.send(Input::Engine(Event::Exported { build, outcome }));
        });
    }
}

/// The engine's view of a merged index and its push.
fn exported(merged: MergedIndex, pushed: Result<Vec<String>, String>) -> ExportOutcome {
    match pushed {
        Ok(pushed) => ExportOutcome::Done {
            manifests: merged.manifests,
            index: Some(merged.index),
            pushed,
        },
        Err(error) => ExportOutcome::Failed {
            index: Some(merged.index),
            error,
        },
    }
}

/// Closes `conn` with `code` and `reason` after `after`.
fn close_later(conn: quinn::Connection, code: u32, reason: String, after: Duration) {
    if after.is_zero() {
        return conn.close(code.into(), reason.as_bytes());
    }
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        conn.close(code.into(), reason.as_bytes());
    });
}

async fn event_loop(mut shell: Shell, lp: Loop) {
    let Loop {
        mut server,
        tx,
        mut rx,
        mut stopped,
        stats,
    } = lp;
    let mut tick = tokio::time::interval(shell.engine.tick_period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    shell.handle(Event::Tick);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            ev = server.next_event() => match ev {
                None => break,
                Some(ServerEvent::Session(s)) => admit_session(&mut shell, *s, &tx),
                // The endpoint has already warned about refused certificates.
                Some(ServerEvent::Dropped(e)) if e.is_certificate_refusal() => {}
                Some(ServerEvent::Dropped(e)) => tracing::info!("peer dropped: {e}"),
                Some(ServerEvent::BlobStored { peer, digest }) => {
                    tracing::debug!(peer = %peer.name, "stored {digest}");
                }
            },
            Some(input) = rx.recv() => match input {
                Input::Engine(ev) => shell.handle(ev),
                Input::GcPlanned(p) => shell.gc.apply(&mut shell.engine, &shell.store, p),
                Input::Gauges(reply) => {
                    let _ = reply.send(shell.engine.gauges());
                }
            },
            _ = tick.tick() => shell.handle(Event::Tick),
        }
        let gc_tx = tx.clone();
        shell.gc.maybe_start(&shell.engine, &shell.store, move |p| {
            let _ = gc_tx.send(Input::GcPlanned(p));
        });
        let now = shell.engine.stats();
        match stats.lock() {
            Ok(mut s) => *s = now,
            Err(poisoned) => *poisoned.into_inner() = now,
        }
    }
    server.close();
    tracing::info!("coordinator stopped");
}

/// Splits an admitted session into a reader feeding the loop and a writer
/// draining the peer's channel, then tells the engine.
fn admit_session(shell: &mut Shell, session: Session, inputs: &mpsc::UnboundedSender<Input>) {
    let id = session.session_id;
    let hello = session.hello.clone();
    let peer_id = session.peer.clone();
    let (conn, mut send, mut recv) = session.into_parts();
    let queue = shell.engine.options().session_queue.max(1);
    let (tx, mut out) = mpsc::channel::<Message>(queue);
    tokio::spawn(async move {
        while let Some(m) = out.recv().await {
            if write_msg(&mut send, &m).await.is_err() {
                break;
            }
        }
        let _ = send.finish();
    });
    let (reader_conn, inputs) = (conn.clone(), inputs.clone());
    tokio::spawn(async move {
        let closed = |reason: String| Input::Engine(Event::PeerClosed { peer: id, reason });
        loop {
            match read_msg::<_, Message>(&mut recv, MAX_CONTROL_FRAME).await {
                Ok(Some(msg)) => {
                    let ev = Input::Engine(Event::Message { peer: id, msg });
                    if inputs.send(ev).is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    let _ = inputs.send(closed("it closed its control stream".into()));
                    break;
                }
                Err(e) => {
                    drop_peer(&reader_conn, &e);
                    let _ = inputs.send(closed(e.to_string()));
                    break;
                }
            }
        }
    });
    shell.peers.insert(id, PeerIo { tx, conn });
    shell.handle(Event::PeerJoined {
        peer: id,
        role: peer_id.role,
        name: peer_id.name,
        hello,
    });
}
