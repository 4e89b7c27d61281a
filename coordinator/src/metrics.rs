//! The coordinator's Prometheus metrics (`imgfarm coordinator
//! --metrics-listen ADDR`, `GET /metrics`, OpenMetrics text).
//!
//! Two sources, so the engine stays free of I/O and of this crate:
//! - counters and histograms are bumped from the engine's
//!   [`Observation`]s ([`MetricsObserver`] is the engine's
//!   [`Observer`]) and from the blob streams ([`CoordinatorMetrics::blob_relayed`]);
//! - gauges are set from [`Gauges`], which the event loop reads from the
//!   engine when a scrape asks ([`CoordinatorMetrics::render`]), and from
//!   the content store's size measured then.
//!
//! Every name starts with `imgfarm_coordinator_`; `docs/operations.md`
//! lists them with example alerts.

use crate::engine::observe::{Gauges, Observation, Observer, WorkerState};
use imgfarm_common::identity::Role;
use imgfarm_common::metrics::{duration_histogram, register_certificate_expiry, HistogramFamily};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::{Arc, Mutex};

pub use imgfarm_common::metrics::Emulation;

/// Labels of `imgfarm_coordinator_workers`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct WorkerLabels {
    /// A platform the worker offers (`linux/arm64`); a worker offering
    /// several is counted once under each.
    pub platform: String,
    /// `native` or `emulated`: how the worker offers that platform.
    pub emulation: Emulation,
    /// `idle` (nothing running), `busy` (a vertex running) or `draining`
    /// (takes no new work for now: out of disk space).
    pub state: String,
}

/// A platform label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PlatformLabels {
    /// The vertex's platform (`linux/amd64`), `none` for a vertex without
    /// one.
    pub platform: String,
}

/// Labels of `imgfarm_coordinator_vertex_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct VertexLabels {
    /// The vertex's platform, `none` for a vertex without one.
    pub platform: String,
    /// `emulated` for a RUN step placed on a worker that emulates its
    /// platform, else `native`.
    pub emulation: Emulation,
    /// `succeeded`, `failed`, `cancelled` or `lost` (its worker was lost).
    pub outcome: String,
}

/// An outcome label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `succeeded`, `failed` or `cancelled`.
    pub outcome: String,
}

/// A build state label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct BuildStateLabels {
    /// `queued` (admitted, nothing placed yet) or `running`.
    pub state: String,
}

/// Direction of a blob stream, seen from the coordinator.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// Uploaded to the coordinator (`BlobPut`).
    In,
    /// Downloaded from it (`BlobGet`).
    Out,
}

/// Labels of `imgfarm_coordinator_blob_relayed_bytes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct BlobLabels {
    /// `in` (uploads into the store) or `out` (downloads out of it).
    pub direction: Direction,
    /// Who sent or fetched it: `client` (contexts, base images, results)
    /// or `worker` (inputs, results).
    pub peer_role: String,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

imgfarm_common::label_value_from_as_str!(Direction);

/// Queue waits: 10 ms to about 10 min.
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 3.0, 11))
}

/// The coordinator's registry and every metric in it.
#[derive(Debug)]
pub struct CoordinatorMetrics {
    registry: Registry,
    /// One scrape sets the gauges and encodes at a time.
    render: Mutex<()>,
    workers: Family<WorkerLabels, Gauge>,
    workers_connected: Gauge,
    slots: Gauge,
    slots_busy: Gauge,
    queue: Family<PlatformLabels, Gauge>,
    builds_active: Family<BuildStateLabels, Gauge>,
    store: Gauge,
    store_max: Gauge,
    builds: Family<OutcomeLabels, Counter>,
    builds_admitted: Counter,
    queue_wait: HistogramFamily<PlatformLabels>,
    vertex_duration: HistogramFamily<VertexLabels>,
    cache_hits: Counter,
    blobs: Family<BlobLabels, Counter>,
}

impl CoordinatorMetrics {
    /// Adds `certificate_expiry_timestamp_seconds` (when known): `not_after` (Unix time) of the
    /// coordinator's own certificate, for an alert before peers start refusing it.
    pub fn with_certificate_expiry(mut self, not_after: Option<i64>) -> Self {
        register_certificate_expiry(&mut self.registry, "coordinator", not_after);
        self
    }

    /// A registry with every metric at zero; `store_max` is the store's cap
    /// (`--store-max` or its default) in bytes.
    pub fn new(store_max: u64) -> Self {
        let mut registry = Registry::with_prefix("imgfarm_coordinator");
        let m = Self {
            registry: Registry::default(),
            render: Mutex::new(()),
            workers: Family::default(),
            workers_connected: Gauge::default(),
            slots: Gauge::default(),
            slots_busy: Gauge::default(),
            queue: Family::default(),
            builds_active: Family::default(),
            store: Gauge::default(),
            store_max: Gauge::default(),
            builds: Family::default(),
            builds_admitted: Counter::default(),
            queue_wait: Family::new_with_constructor(wait_histogram),
            vertex_duration: Family::new_with_constructor(duration_histogram),
            cache_hits: Counter::default(),
            blobs: Family::default(),
        };
        registry.register(
            "workers",
            "Connected workers by platform offered (each worker once per platform), native or emulated, and state (idle, busy, draining)",
            m.workers.clone(),
        );
        registry.register(
            "workers_connected",
            "Workers with an open control session",
            m.workers_connected.clone(),
        );
        registry.register(
            "slots",
            "Vertex slots of all connected workers",
            m.slots.clone(),
        );
        registry.register(
            "slots_busy",
            "Slots running a vertex the coordinator placed",
            m.slots_busy.clone(),
        );
        registry.register(
            "queue_vertices",
            "Vertices ready to run (every input done) waiting for a slot, by platform",
            m.queue.clone(),
        );
        registry.register(
            "builds_active",
            "Builds not ended, by state: queued (nothing placed yet) or running",
            m.builds_active.clone(),
        );
        registry.register_with_unit(
            "store",
            "Bytes in the coordinator's content store (blobs)",
            Unit::Bytes,
            m.store.clone(),
        );
        registry.register_with_unit(
            "store_max",
            "The store's cap (--store-max, or 10% of its filesystem) beyond what queued and running builds need",
            Unit::Bytes,
            m.store_max.clone(),
        );
        registry.register(
            "builds",
            "Builds ended, by outcome: succeeded, failed, cancelled",
            m.builds.clone(),
        );
        registry.register(
            "builds_admitted",
            "Builds admitted (submitted, or resumed after a restart)",
            m.builds_admitted.clone(),
        );
        registry.register_with_unit(
            "queue_wait",
            "Time a vertex waited from when it could run (admission or its last input done) to its placement, by platform",
            Unit::Seconds,
            m.queue_wait.clone(),
        );
        registry.register_with_unit(
            "vertex_duration",
            "Time from a vertex's placement to its outcome (transfers included), by platform, native or emulated, and outcome",
            Unit::Seconds,
            m.vertex_duration.clone(),
        );
        registry.register(
            "cache_hits",
            "Vertices done at admission from results the coordinator held (not run again; sources not counted)",
            m.cache_hits.clone(),
        );
        registry.register_with_unit(
            "blob_relayed",
            "Blob bytes through the coordinator's store: in (uploads) and out (downloads), by peer role",
            Unit::Bytes,
            m.blobs.clone(),
        );
        m.store_max
            .set(i64::try_from(store_max).unwrap_or(i64::MAX));
        for outcome in ["succeeded", "failed", "cancelled"] {
            let _ = m.builds.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        Self { registry, ..m }
    }

    /// Counts `bytes` of a blob stream with a peer of `role`.
    pub fn blob_relayed(&self, role: Role, direction: Direction, bytes: u64) {
        self.blobs
            .get_or_create(&BlobLabels {
                direction,
                peer_role: role.to_string(),
            })
            .inc_by(bytes);
    }

    /// Sets the gauges from `g` and `store_bytes`, then encodes every
    /// metric (OpenMetrics text, `# EOF` last).
    pub fn render(&self, g: &Gauges, store_bytes: u64) -> String {
        let _one = self.render.lock().unwrap_or_else(|e| e.into_inner());
        self.set_gauges(g, store_bytes);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn set_gauges(&self, g: &Gauges, store_bytes: u64) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.workers.clear();
        let (mut slots, mut busy) = (0, 0);
        for w in &g.workers {
            slots += w.slots;
            busy += w.busy;
            let offers = w
                .native
                .iter()
                .map(|p| (p, Emulation::Native))
                .chain(w.emulated.iter().map(|p| (p, Emulation::Emulated)));
            for (platform, emulation) in offers {
                // Every state appears for every platform offered, at 0 when empty, so an
                // alert on `== 0` has a series to look at; the worker's own state counts it.
                for st in [WorkerState::Idle, WorkerState::Busy, WorkerState::Draining] {
                    let gauge = self.workers.get_or_create(&WorkerLabels {
                        platform: platform.clone(),
                        emulation,
                        state: st.as_str().into(),
                    });
                    if st == w.state {
                        gauge.inc();
                    }
                }
            }
        }
        self.workers_connected.set(n(g.workers.len() as u64));
        self.slots.set(n(slots));
        self.slots_busy.set(n(busy));
        self.queue.clear();
        for (platform, count) in &g.queued_vertices {
            self.queue
                .get_or_create(&PlatformLabels {
                    platform: platform.clone(),
                })
                .set(n(*count));
        }
        for (state, count) in [("queued", g.builds_queued), ("running", g.builds_running)] {
            self.builds_active
                .get_or_create(&BuildStateLabels {
                    state: state.into(),
                })
                .set(n(count));
        }
        self.store.set(n(store_bytes));
    }

    fn observe(&self, o: Observation) {
        match o {
            Observation::BuildAdmitted => {
                self.builds_admitted.inc();
            }
            Observation::VertexPlaced {
                platform,
                queue_wait,
                ..
            } => self
                .queue_wait
                .get_or_create(&PlatformLabels { platform })
                .observe(queue_wait.as_secs_f64()),
            Observation::VertexEnded {
                platform,
                emulated,
                outcome,
                duration,
            } => self
                .vertex_duration
                .get_or_create(&VertexLabels {
                    platform,
                    emulation: Emulation::from_bool(emulated),
                    outcome: outcome.as_str().into(),
                })
                .observe(duration.as_secs_f64()),
            Observation::CacheHits { count } => {
                self.cache_hits.inc_by(count);
            }
            Observation::BuildEnded { outcome } => {
                self.builds
                    .get_or_create(&OutcomeLabels {
                        outcome: outcome.as_str().into(),
                    })
                    .inc();
            }
        }
    }

    /// The engine's observer feeding these metrics.
    pub fn observer(self: &Arc<Self>) -> MetricsObserver {
        MetricsObserver(Arc::clone(self))
    }
}

/// The engine's [`Observer`]: bumps [`CoordinatorMetrics`].
#[derive(Debug, Clone)]
pub struct MetricsObserver(Arc<CoordinatorMetrics>);

impl Observer for MetricsObserver {
    fn observe(&mut self, o: Observation) {
        self.0.observe(o);
    }
}

#[cfg(test)]
mod tests;
