//! The farm worker: dials out to a coordinator, announces what it can run,
//! and runs the vertices it is sent (FARM.md, "Worker ⇄ coordinator").
//!
//! - [`run`] keeps a session up: it dials with [`crate::link::connect_with_backoff`],
//!   serves the session until it ends, and dials again (a coordinator restart
//!   is routine) until the shutdown future completes.
//! - A session ([`session`]) splits the control stream: one task reads, one
//!   writes (fed by a channel), so heartbeats, logs and results of several
//!   running vertices interleave without cancelling a frame halfway.
//! - A job ([`job`]) is one `RunVertex`: its payload is checked, the blobs it
//!   names are fetched into the worker's own store ([`fetch`]), the build
//!   context is unpacked once per digest ([`context`]), and the vertex runs on
//!   a blocking thread through [`crate::solve::LocalWorker`] with the rootless
//!   executor. Results are cached under `<state>/cache/vertices` and announced
//!   ([`cache`]).
//! - Emulation is decided by the executor from the host
//!   ([`crate::emulation::resolve`]), never from the coordinator's `emulated`
//!   flag: a worker started with `--platforms linux/arm64` on an amd64 host
//!   still runs arm64 code through qemu.

pub mod cache;
pub mod context;
pub mod fetch;
pub mod job;
pub mod platforms;
mod session;

use crate::link::{connect_with_backoff, Backoff, LinkError, LinkOptions};
use crate::metrics::{WorkerGauges, WorkerMetrics};
use crate::solve::exec::StepExecutor;
use crate::solve::result::{CacheError, ResultCache};
use crate::solve::rootless::RootlessExecutor;
use imgfarm_common::entitlement::Entitlements;
use imgfarm_common::identity::{Credentials, Role};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{CacheSummary, Hello, PROTOCOL_VERSION};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Largest `VertexLog` payload: longer output is sent in several frames.
pub const MAX_LOG_CHUNK: usize = 64 * 1024;

/// Receives what the worker does (the CLI prints [`WorkerEvent::Connected`]).
pub type EventSink = Arc<dyn Fn(&WorkerEvent) + Send + Sync>;

/// Everything [`run`] needs.
#[derive(Clone)]
pub struct WorkerOptions {
    /// Coordinator address (`quic://HOST:PORT` or `HOST:PORT`).
    pub coordinator: String,
    /// This worker's certificate and key, and the farm CA.
    pub creds: Credentials,
    /// The worker's name; must be the name in its certificate.
    pub name: String,
    /// State directory: content store, result cache, snapshots, contexts.
    pub state_dir: PathBuf,
    /// `--platforms`: replaces the detected native platforms (emulation is
    /// still decided from the host when a step runs).
    pub platforms_override: Option<Vec<Platform>>,
    /// Vertices run at once.
    pub slots: usize,
    /// Protocol options of the link.
    pub link: LinkOptions,
    /// First delay before dialling again; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest delay between two dial attempts.
    pub backoff_max: Duration,
    /// Where events go (none: only tracing).
    pub events: Option<EventSink>,
    /// `--allow-entitlement`: what the operator lets steps ask for (`RUN --network=host`,
    /// `--security=insecure`). Announced in the `Hello`; a job needing more is refused.
    pub entitlements: Entitlements,
    /// `--cache-max`: bytes of blobs and snapshots kept between steps;
    /// `None`: [`imgfarm_common::size::default_cap`] of the state directory.
    pub cache_max: Option<u64>,
    /// `--metrics-listen`: where to serve `GET /metrics` (TCP; port 0
    /// picks one, reported as [`WorkerEvent::MetricsListening`]).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl WorkerOptions {
    /// Defaults: the certificate's name, one slot per CPU, detected
    /// platforms, backoff from 250 ms to 10 s.
    pub fn new(coordinator: impl Into<String>, creds: Credentials, state_dir: PathBuf) -> Self {
        let name = creds.identity.name.clone();
        Self {
            coordinator: coordinator.into(),
            creds,
            name,
            state_dir,
            platforms_override: None,
            slots: default_slots(),
            link: LinkOptions::default(),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            events: None,
            entitlements: Entitlements::none(),
            cache_max: None,
            metrics_listen: None,
        }
    }
}

impl fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("coordinator", &self.coordinator)
            .field("name", &self.name)
            .field("state_dir", &self.state_dir)
            .field("platforms_override", &self.platforms_override)
            .field("slots", &self.slots)
            .field("entitlements", &self.entitlements)
            .finish_non_exhaustive()
    }
}

/// The number of CPUs (the default slot count).
pub fn default_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// What the worker reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// A session was admitted.
    Connected {
        /// This worker's name.
        name: String,
        /// The coordinator address.
        coordinator: String,
        /// Platforms announced as native.
        native: Vec<Platform>,
        /// Platforms announced as emulated.
        emulated: Vec<Platform>,
    },
    /// A dial attempt failed; the next one comes after `delay`.
    Retrying {
        /// Why it failed.
        error: String,
        /// Wait before the next attempt.
        delay: Duration,
    },
    /// The session ended (the worker dials again).
    Disconnected {
        /// Why.
        reason: String,
    },
    /// The metrics endpoint is up.
    MetricsListening {
        /// The bound address.
        addr: std::net::SocketAddr,
    },
    /// A vertex finished on this worker.
    VertexDone {
        /// Its key.
        key: imgfarm_common::oci::Digest,
        /// `None` on success.
        error: Option<String>,
        /// Served from the worker's cache without running.
        cached: bool,
    },
}

fn platform_list(p: &[Platform]) -> String {
    if p.is_empty() {
        return "none".into();
    }
    p.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for WorkerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerEvent::Connected {
                name,
                coordinator,
                native,
                emulated,
            } => write!(
                f,
                "worker {name} connected to {coordinator} (native {}; emulated {})",
                platform_list(native),
                platform_list(emulated)
            ),
            WorkerEvent::Retrying { error, delay } => write!(
                f,
                "cannot reach the coordinator: {error}; trying again in {:.1}s",
                delay.as_secs_f64()
            ),
            WorkerEvent::MetricsListening { addr } => write!(f, "metrics listening on {addr}"),
            WorkerEvent::Disconnected { reason } => {
                write!(f, "session with the coordinator ended: {reason}")
            }
            WorkerEvent::VertexDone { key, error, cached } => match (error, cached) {
                (Some(e), _) => write!(f, "vertex {key} failed: {e}"),
                (None, true) => write!(f, "vertex {key} done (cached)"),
                (None, false) => write!(f, "vertex {key} done"),
            },
        }
    }
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum FarmWorkerError {
    /// The state directory or the stores in it cannot be used.
    #[error("worker state directory {path}: {reason}")]
    State {
        /// The directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The certificate is not a worker certificate of this name.
    #[error("{0}")]
    Identity(String),
    /// An option is unusable.
    #[error("invalid worker options: {0}")]
    Options(String),
    /// Dialling failed in a way retrying cannot fix (refused certificate,
    /// protocol version mismatch, ...).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The result cache cannot be opened.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The metrics endpoint cannot listen.
    #[error(transparent)]
    Metrics(#[from] imgfarm_common::metrics_http::MetricsHttpError),
}

/// What every session and job of one worker process shares.
pub(crate) struct Ctx {
    pub(crate) name: String,
    pub(crate) state: PathBuf,
    pub(crate) store: ContentStore,
    pub(crate) cache: ResultCache,
    pub(crate) executor: Arc<dyn StepExecutor>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) slot_count: usize,
    pub(crate) native: Vec<Platform>,
    pub(crate) emulated: Vec<Platform>,
    /// Entitlements the operator allows.
    pub(crate) entitlements: Entitlements,
    /// Set when a result was cached; the next heartbeat carries a new summary.
    pub(crate) cache_changed: AtomicBool,
    pub(crate) events: Option<EventSink>,
    /// `--cache-max` ([`crate::gc`]).
    pub(crate) cache_max: u64,
    /// Every job holds it shared from its start to its end (its blocking
    /// run included); the collection takes it exclusively, so it never
    /// removes what a step uses.
    pub(crate) gate: Arc<tokio::sync::RwLock<()>>,
    /// Counted always, served with `--metrics-listen`.
    pub(crate) metrics: Arc<WorkerMetrics>,
}

impl Ctx {
    fn open(opts: &WorkerOptions) -> Result<Self, FarmWorkerError> {
        let state_err = |reason: String| FarmWorkerError::State {
            path: opts.state_dir.clone(),
            reason,
        };
        if opts.creds.identity.role != Role::Worker {
            return Err(FarmWorkerError::Identity(format!(
                "the certificate is for {}, not a worker: issue one with \
                 `imgfarm farm issue --dir DIR --worker NAME`",
                opts.creds.identity
            )));
        }
        if opts.creds.identity.name != opts.name {
            return Err(FarmWorkerError::Identity(format!(
                "the certificate is for worker {:?}, but this worker is named {:?}",
                opts.creds.identity.name, opts.name
            )));
        }
        if opts.slots == 0 {
            return Err(FarmWorkerError::Options(
                "--slots must be at least 1".to_string(),
            ));
        }
        std::fs::create_dir_all(&opts.state_dir).map_err(|e| state_err(e.to_string()))?;
        let store = ContentStore::open(&opts.state_dir).map_err(|e| state_err(e.to_string()))?;
        let cache = ResultCache::open(&opts.state_dir)?;
        let native = platforms::native(opts.platforms_override.as_deref());
        let emulated = platforms::emulated(&native, |p| {
            crate::emulation::resolve_in(p, &opts.state_dir)
        });
        let cache_max = opts
            .cache_max
            .unwrap_or_else(|| imgfarm_common::size::default_cap(&opts.state_dir));
        Ok(Self {
            name: opts.name.clone(),
            state: opts.state_dir.clone(),
            store,
            cache,
            executor: Arc::new(RootlessExecutor::new(&opts.state_dir, BTreeMap::new())),
            slots: Arc::new(Semaphore::new(opts.slots)),
            slot_count: opts.slots,
            native,
            emulated,
            entitlements: opts.entitlements.clone(),
            cache_changed: AtomicBool::new(false),
            events: opts.events.clone(),
            cache_max,
            gate: Arc::new(tokio::sync::RwLock::new(())),
            metrics: Arc::new(
                WorkerMetrics::new(cache_max).with_certificate_expiry(opts.creds.not_after()),
            ),
        })
    }

    /// Collects the state down to `--cache-max` when it is over and no job
    /// runs (after each job and each connect; a busy worker collects at its
    /// next idle moment). Runs on a blocking thread; jobs arriving meanwhile
    /// wait for it.
    pub(crate) fn collect_soon(self: &Arc<Self>) {
        if crate::gc::usage(&self.state, &self.store) <= self.cache_max {
            return;
        }
        let Ok(guard) = Arc::clone(&self.gate).try_write_owned() else {
            return;
        };
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _exclusive = guard;
            me.executor.release_snapshots();
            let exec = crate::executor::Executor::new();
            match crate::gc::collect_to(&me.state, &me.store, &me.cache, &exec, me.cache_max) {
                Ok(o) => tracing::info!(
                    "cache collection: {} -> {} bytes (cap {}): forgot {} results, removed {} blobs and {} snapshots{} in {} ms",
                    o.before,
                    o.after,
                    me.cache_max,
                    o.forgotten,
                    o.blobs_removed,
                    o.snapshots_removed,
                    if o.snapshots_busy { " (snapshots busy: skipped)" } else { "" },
                    o.took.as_millis()
                ),
                Err(e) => tracing::warn!("cache collection failed: {e}"),
            }
            me.cache_changed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }

    pub(crate) fn emit(&self, e: WorkerEvent) {
        tracing::info!("{e}");
        if let Some(sink) = &self.events {
            sink(&e);
        }
    }

    /// Slots taken by running vertices.
    pub(crate) fn slots_in_use(&self) -> u32 {
        let free = self.slots.available_permits();
        u32::try_from(self.slot_count.saturating_sub(free)).unwrap_or(u32::MAX)
    }

    /// The cache summary, computed on a blocking thread (it reads the cache).
    pub(crate) async fn summary(self: &Arc<Self>) -> CacheSummary {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || cache::summary(&me.store, &me.cache))
            .await
            .unwrap_or_default()
    }

    fn hello(&self, summary: CacheSummary) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            role: Role::Worker,
            name: self.name.clone(),
            software: format!("imgfarm {}", env!("CARGO_PKG_VERSION")),
            native_platforms: self.native.iter().map(ToString::to_string).collect(),
            emulated_platforms: self.emulated.iter().map(ToString::to_string).collect(),
            slots: u32::try_from(self.slot_count).unwrap_or(u32::MAX),
            cache_summary: summary,
            entitlements: self.entitlements.clone(),
        }
    }
}

/// Runs the worker until `shutdown` completes: dial, serve the session,
/// dial again when it ends. Returns an error only for what retrying cannot
/// fix (a refused certificate, a protocol mismatch, an unusable state dir).
pub async fn run(
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FarmWorkerError> {
    let ctx = Arc::new(Ctx::open(&opts)?);
    let _metrics = match opts.metrics_listen {
        Some(at) => {
            let server = serve_metrics(at, &ctx)?;
            ctx.emit(WorkerEvent::MetricsListening {
                addr: server.local_addr(),
            });
            Some(server)
        }
        None => None,
    };
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(opts.backoff_initial, opts.backoff_max);
    loop {
        let summary = ctx.summary().await;
        let hello = ctx.hello(summary.clone());
        let dial = connect_with_backoff(
            &opts.coordinator,
            &opts.creds,
            &hello,
            &opts.link,
            &mut backoff,
            |e, delay| {
                ctx.emit(WorkerEvent::Retrying {
                    error: e.to_string(),
                    delay,
                })
            },
        );
        let link = tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = dial => r?,
        };
        backoff.reset();
        ctx.collect_soon();
        ctx.metrics.set_connected(true);
        ctx.emit(WorkerEvent::Connected {
            name: ctx.name.clone(),
            coordinator: opts.coordinator.clone(),
            native: ctx.native.clone(),
            emulated: ctx.emulated.clone(),
        });
        let end = session::serve(&ctx, link, summary, &mut shutdown).await;
        ctx.metrics.set_connected(false);
        match end {
            session::End::Shutdown => return Ok(()),
            session::End::Lost(reason) => {
                ctx.emit(WorkerEvent::Disconnected { reason });
                let delay = backoff.next().unwrap_or(opts.backoff_initial);
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Serves `GET /metrics` on `at`: slots from the semaphore, the state's
/// size measured on a blocking thread at each scrape.
fn serve_metrics(
    at: std::net::SocketAddr,
    ctx: &Arc<Ctx>,
) -> Result<imgfarm_common::metrics_http::MetricsServer, FarmWorkerError> {
    let ctx = Arc::clone(ctx);
    let render = move || {
        let ctx = Arc::clone(&ctx);
        async move {
            tokio::task::spawn_blocking(move || {
                let g = WorkerGauges {
                    slots: ctx.slot_count as u64,
                    slots_busy: u64::from(ctx.slots_in_use()),
                    store_bytes: crate::gc::usage(&ctx.state, &ctx.store),
                };
                ctx.metrics.render(g)
            })
            .await
            .ok()
        }
    };
    let opts = imgfarm_common::metrics_http::HttpOptions::default();
    Ok(imgfarm_common::metrics_http::serve(at, opts, render)?)
}

#[cfg(test)]
mod tests;
