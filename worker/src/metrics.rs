//! The farm worker's Prometheus metrics (`imgfarm worker --metrics-listen
//! ADDR`, `GET /metrics`, OpenMetrics text).
//!
//! Counters and histograms are bumped where the work happens (a job's end
//! in `farm/session.rs`, blob transfers in `farm/fetch.rs`); gauges (slots,
//! store size) are read when a scrape asks ([`WorkerMetrics::render`]).
//! Every name starts with `imgfarm_worker_`; `docs/operations.md` lists
//! them.

use imgfarm_common::metrics::{duration_histogram, register_certificate_expiry, HistogramFamily};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Mutex;
use std::time::Duration;

/// How a vertex ended on this worker.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobOutcome {
    /// Its result was uploaded and reported.
    Succeeded,
    /// The job was refused or the step failed.
    Failed,
    /// The coordinator cancelled it, or it was abandoned when the session
    /// ended.
    Cancelled,
}

pub use imgfarm_common::metrics::Emulation;

/// Labels of `imgfarm_worker_vertices_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct VertexCountLabels {
    /// `succeeded`, `failed` or `cancelled`.
    pub outcome: JobOutcome,
    /// `true` when served from the worker's cache without running.
    pub cached: bool,
}

/// Labels of `imgfarm_worker_vertex_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct VertexLabels {
    /// The vertex's platform (`linux/arm64`), `none` without one.
    pub platform: String,
    /// `emulated` for a RUN step run under qemu, else `native`.
    pub emulation: Emulation,
    /// `true` when served from the worker's cache.
    pub cached: bool,
    /// `succeeded` or `failed`.
    pub outcome: JobOutcome,
}

/// Direction of a blob transfer, seen from the worker.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// To the coordinator (result blobs).
    Upload,
    /// From the coordinator (inputs, context chunks, base layers).
    Download,
}

/// Labels of `imgfarm_worker_blob_transferred_bytes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct BlobLabels {
    /// `upload` (to the coordinator) or `download` (from it).
    pub direction: Direction,
}

/// What a scrape reads from the worker at that moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerGauges {
    /// `--slots`.
    pub slots: u64,
    /// Slots held by running jobs.
    pub slots_busy: u64,
    /// Bytes of blobs and snapshots in the state directory.
    pub store_bytes: u64,
}

impl JobOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Cancelled => "cancelled",
        }
    }
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

imgfarm_common::label_value_from_as_str!(JobOutcome, Direction);

/// The worker's registry and every metric in it.
#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    render: Mutex<()>,
    slots: Gauge,
    slots_busy: Gauge,
    vertices: Family<VertexCountLabels, Counter>,
    vertex_duration: HistogramFamily<VertexLabels>,
    cache_hits: Counter,
    store: Gauge,
    cache_max: Gauge,
    blobs: Family<BlobLabels, Counter>,
    connected: Gauge,
}

impl WorkerMetrics {
    /// Adds `certificate_expiry_timestamp_seconds` (when known): `not_after` (Unix time) of the worker's
    /// own certificate, for an alert before the coordinator starts refusing it.
    pub fn with_certificate_expiry(mut self, not_after: Option<i64>) -> Self {
        register_certificate_expiry(&mut self.registry, "worker", not_after);
        self
    }

    /// Every metric at zero; `cache_max` is `--cache-max` (or its default)
    /// in bytes.
    pub fn new(cache_max: u64) -> Self {
        let mut registry = Registry::with_prefix("imgfarm_worker");
        let m = Self {
            registry: Registry::default(),
            render: Mutex::new(()),
            slots: Gauge::default(),
            slots_busy: Gauge::default(),
            vertices: Family::default(),
            vertex_duration: Family::new_with_constructor(duration_histogram),
            cache_hits: Counter::default(),
            store: Gauge::default(),
            cache_max: Gauge::default(),
            blobs: Family::default(),
            connected: Gauge::default(),
        };
        registry.register("slots", "Vertex slots (--slots)", m.slots.clone());
        registry.register(
            "slots_busy",
            "Slots held by running jobs",
            m.slots_busy.clone(),
        );
        registry.register(
            "vertices",
            "Vertices ended on this worker, by outcome (succeeded, failed, cancelled: by the coordinator, or abandoned when the session ended) and whether served from its cache",
            m.vertices.clone(),
        );
        registry.register_with_unit(
            "vertex_duration",
            "Time from a job's arrival to its result (slot wait, downloads, run, uploads), by platform, native or emulated, cached, outcome",
            Unit::Seconds,
            m.vertex_duration.clone(),
        );
        registry.register(
            "cache_hits",
            "Vertices served from the worker's cache without running",
            m.cache_hits.clone(),
        );
        registry.register_with_unit(
            "store",
            "Bytes of blobs and snapshots in the worker's state (what --cache-max caps)",
            Unit::Bytes,
            m.store.clone(),
        );
        registry.register_with_unit(
            "cache_max",
            "The cap on the worker's cache (--cache-max, or 10% of its filesystem)",
            Unit::Bytes,
            m.cache_max.clone(),
        );
        registry.register_with_unit(
            "blob_transferred",
            "Blob bytes sent to (upload) and fetched from (download) the coordinator",
            Unit::Bytes,
            m.blobs.clone(),
        );
        registry.register(
            "connected",
            "1 while a session with the coordinator is up, else 0",
            m.connected.clone(),
        );
        m.cache_max
            .set(i64::try_from(cache_max).unwrap_or(i64::MAX));
        for direction in [Direction::Upload, Direction::Download] {
            let _ = m.blobs.get_or_create(&BlobLabels { direction });
        }
        Self { registry, ..m }
    }

    /// A vertex ended: `platform` as the job named it, `emulated` when its
    /// RUN ran under qemu, `took` since the job arrived.
    pub fn vertex_ended(
        &self,
        platform: &str,
        emulated: bool,
        cached: bool,
        outcome: JobOutcome,
        took: Duration,
    ) {
        self.vertices
            .get_or_create(&VertexCountLabels { outcome, cached })
            .inc();
        if cached && outcome == JobOutcome::Succeeded {
            self.cache_hits.inc();
        }
        if outcome == JobOutcome::Cancelled {
            return;
        }
        let platform = if platform.is_empty() {
            "none"
        } else {
            platform
        };
        self.vertex_duration
            .get_or_create(&VertexLabels {
                platform: platform.to_string(),
                emulation: Emulation::from_bool(emulated),
                cached,
                outcome,
            })
            .observe(took.as_secs_f64());
    }

    /// Counts `bytes` of a blob transfer.
    pub fn blob_transferred(&self, direction: Direction, bytes: u64) {
        self.blobs
            .get_or_create(&BlobLabels { direction })
            .inc_by(bytes);
    }

    /// The session with the coordinator is up (or not).
    pub fn set_connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    /// Sets the gauges from `g`, then encodes every metric (OpenMetrics
    /// text, `# EOF` last).
    pub fn render(&self, g: WorkerGauges) -> String {
        let _one = self.render.lock().unwrap_or_else(|e| e.into_inner());
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.slots.set(n(g.slots));
        self.slots_busy.set(n(g.slots_busy));
        self.store.set(n(g.store_bytes));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn jobs_transfers_and_gauges_render() {
        let m = WorkerMetrics::new(1000);
        m.set_connected(true);
        m.vertex_ended(
            "linux/arm64",
            true,
            false,
            JobOutcome::Succeeded,
            Duration::from_secs(3),
        );
        m.vertex_ended(
            "linux/amd64",
            false,
            true,
            JobOutcome::Succeeded,
            Duration::from_millis(20),
        );
        m.vertex_ended("", false, false, JobOutcome::Failed, Duration::from_secs(1));
        m.vertex_ended(
            "linux/amd64",
            false,
            false,
            JobOutcome::Cancelled,
            Duration::ZERO,
        );
        m.blob_transferred(Direction::Upload, 10);
        m.blob_transferred(Direction::Download, 7);
        m.blob_transferred(Direction::Download, 3);
        let text = m.render(WorkerGauges {
            slots: 4,
            slots_busy: 1,
            store_bytes: 99,
        });
        let v = |s: &str| sample(&text, s);
        assert_eq!(v("imgfarm_worker_slots"), Some(4.0), "{text}");
        assert_eq!(v("imgfarm_worker_slots_busy"), Some(1.0));
        assert_eq!(v("imgfarm_worker_store_bytes"), Some(99.0));
        assert_eq!(v("imgfarm_worker_cache_max_bytes"), Some(1000.0));
        assert_eq!(v("imgfarm_worker_connected"), Some(1.0));
        assert_eq!(v("imgfarm_worker_cache_hits_total"), Some(1.0));
        assert_eq!(
            v("imgfarm_worker_vertices_total{outcome=\"succeeded\",cached=\"false\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("imgfarm_worker_vertices_total{outcome=\"cancelled\",cached=\"false\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("imgfarm_worker_vertex_duration_seconds_sum{platform=\"linux/arm64\",emulation=\"emulated\",cached=\"false\",outcome=\"succeeded\"}"),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            v("imgfarm_worker_vertex_duration_seconds_count{platform=\"none\",emulation=\"native\",cached=\"false\",outcome=\"failed\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("imgfarm_worker_blob_transferred_bytes_total{direction=\"download\"}"),
            Some(10.0)
        );
        assert!(text.ends_with("# EOF\n"));
        m.set_connected(false);
        let text = m.render(WorkerGauges::default());
        assert_eq!(sample(&text, "imgfarm_worker_connected"), Some(0.0));
    }
}
