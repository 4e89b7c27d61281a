//! The coordinator service (`imgfarm coordinator`): the worker pool, the
//! persisted build queue, one global [`Scheduler`] for every build, result
//! reuse across builds, and the merged index at the end (FARM.md).
//!
//! Layout:
//! - [`pool`]: connected workers and heartbeats (pure);
//! - [`builds`]: what each build needs and has finished (pure);
//! - [`queue`]: `<state>/coordinator.db` (builds and vertex results);
//! - [`export`]: index merge, result blob checks, push;
//! - `core` (builds), `vertices` (placing, results, export), `sessions`
//!   (workers and clients): the state the event loop owns;
//! - this module: the event loop over the QUIC [`Server`]'s sessions.
//!
//! One task owns all state; each control session has a reader task feeding
//! the loop and a writer task draining a bounded channel, so a slow peer
//! never blocks the loop, and one that stops reading is dropped (told why)
//! instead of making the coordinator buffer without limit.
//!
//! Memory stays bounded by the active builds: when a build ends, the
//! scheduler keys no other active build needs are retired
//! ([`Scheduler::retire`]), ended builds beyond the newest few leave memory
//! (they stay in the database), and each worker's holdings keep only the
//! newest keys.

pub mod builds;
mod core;
pub mod export;
pub mod pool;
pub mod queue;
mod sessions;
mod vertices;

use self::core::{Core, Peer};
use crate::scheduler::Scheduler;
use crate::server::{drop_peer, Server, ServerError, ServerEvent, ServerOptions, Session};
use export::MergedIndex;
use imgfarm_common::identity::Credentials;
use imgfarm_common::oci::store::{ContentStore, StoreError};
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
    /// The event loop panicked or was aborted.
    #[error("the coordinator's event loop ended abnormally: {0}")]
    Loop(String),
}

/// What reaches the event loop besides endpoint events.
pub(crate) enum Input {
    /// A message on an admitted control session.
    Msg { session: u64, msg: Message },
    /// A control session ended.
    Closed { session: u64, reason: String },
    /// A build's push ended.
    Exported {
        build: String,
        merged: MergedIndex,
        result: Result<Vec<String>, String>,
    },
}

/// What the coordinator holds in memory, for tests and monitoring; a
/// snapshot taken after each turn of the event loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
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

/// A running coordinator.
#[derive(Debug)]
pub struct Service {
    addr: SocketAddr,
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
        let stored = queue.load_active()?;
        let mut sopts = ServerOptions::new(opts.listen, opts.creds.clone(), store.clone());
        sopts.heartbeat_interval_ms = opts.heartbeat_interval.as_millis() as u64;
        sopts.max_blob_size = opts.max_blob_size;
        let server = Server::bind(sopts)?;
        let addr = server.local_addr().map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut core = Core {
            sched: Scheduler::empty(opts.max_in_flight),
            opts,
            store,
            queue,
            pool: pool::Pool::default(),
            builds: builds::Builds::default(),
            peers: BTreeMap::new(),
            no_candidate: BTreeMap::new(),
            running: BTreeMap::new(),
            started: Instant::now(),
            inputs: tx.clone(),
            orphans: Default::default(),
            overflowed: Default::default(),
        };
        core.resume(stored);
        let stats = Arc::new(Mutex::new(core.stats()));
        let (stop, stopped) = oneshot::channel();
        let lp = Loop {
            server,
            tx,
            rx,
            stopped,
            stats: stats.clone(),
        };
        let task = tokio::spawn(event_loop(core, lp));
        tracing::debug!("coordinator endpoint bound to {addr}");
        Ok(Self {
            addr,
            stats,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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

/// Runs the coordinator until `shutdown` completes.
pub async fn run(
    opts: ServiceOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let service = Service::start(opts).await?;
    shutdown.await;
    service.shutdown().await
}

/// What the event loop owns besides the state.
struct Loop {
    server: Server,
    tx: mpsc::UnboundedSender<Input>,
    rx: mpsc::UnboundedReceiver<Input>,
    stopped: oneshot::Receiver<()>,
    stats: Arc<Mutex<ServiceStats>>,
}

async fn event_loop(mut core: Core, lp: Loop) {
    let Loop {
        mut server,
        tx,
        mut rx,
        mut stopped,
        stats,
    } = lp;
    let period =
        (core.opts.heartbeat_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    core.pump(Instant::now());
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            ev = server.next_event() => match ev {
                None => break,
                Some(ServerEvent::Session(s)) => admit_session(&mut core, *s, &tx),
                Some(ServerEvent::Dropped(e)) => tracing::info!("peer dropped: {e}"),
                Some(ServerEvent::BlobStored { peer, digest }) => {
                    tracing::debug!(peer = %peer.name, "stored {digest}");
                }
            },
            Some(input) = rx.recv() => match input {
                Input::Msg { session, msg } => core.on_message(session, msg),
                Input::Closed { session, reason } => core.drop_peer(session, &reason),
                Input::Exported { build, merged, result } => {
                    core.finish_export(&build, merged, result);
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                core.check_heartbeats(now);
                core.check_grace(now);
            }
        }
        core.pump(Instant::now());
        if core.drop_slow_peers() {
            core.pump(Instant::now());
        }
        let now = core.stats();
        match stats.lock() {
            Ok(mut s) => *s = now,
            Err(poisoned) => *poisoned.into_inner() = now,
        }
    }
    server.close();
    tracing::info!("coordinator stopped");
}

/// Splits an admitted session into a reader feeding the loop and a writer
/// draining the peer's channel.
fn admit_session(core: &mut Core, session: Session, inputs: &mpsc::UnboundedSender<Input>) {
    let id = session.session_id;
    let hello = session.hello.clone();
    let peer_id = session.peer.clone();
    let (conn, mut send, mut recv) = session.into_parts();
    let (tx, mut out) = mpsc::channel::<Message>(core.opts.session_queue.max(1));
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
        loop {
            match read_msg::<_, Message>(&mut recv, MAX_CONTROL_FRAME).await {
                Ok(Some(msg)) => {
                    if inputs.send(Input::Msg { session: id, msg }).is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    let _ = inputs.send(Input::Closed {
                        session: id,
                        reason: "it closed its control stream".into(),
                    });
                    break;
                }
                Err(e) => {
                    drop_peer(&reader_conn, &e);
                    let _ = inputs.send(Input::Closed {
                        session: id,
                        reason: e.to_string(),
                    });
                    break;
                }
            }
        }
    });
    let peer = Peer {
        role: peer_id.role,
        name: peer_id.name,
        tx,
        conn,
    };
    core.add_peer(id, peer, &hello);
}
