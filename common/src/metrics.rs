//! What the coordinator's and the worker's Prometheus metrics share (`--metrics-listen`): the
//! `emulation` label, the vertex-duration buckets, the certificate-expiry gauge, and label
//! values written from an `as_str`. Each process keeps its own registry
//! (`coordinator/src/metrics.rs`, `worker/src/metrics.rs`); the HTTP side is
//! [`crate::metrics_http`].

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Whether a platform runs natively or under emulation (qemu-user through binfmt_misc).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Emulation {
    /// The worker's CPU runs it.
    Native,
    /// qemu-user runs it (a RUN step of a foreign platform).
    Emulated,
}

impl Emulation {
    /// `emulated` → [`Emulation::Emulated`].
    pub fn from_bool(emulated: bool) -> Self {
        if emulated {
            Emulation::Emulated
        } else {
            Emulation::Native
        }
    }

    /// The label value: `native` or `emulated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Emulation::Native => "native",
            Emulation::Emulated => "emulated",
        }
    }
}

/// Writes a label value from the type's `as_str(self) -> &'static str`.
#[macro_export]
macro_rules! label_value_from_as_str {
    ($($t:ty),+ $(,)?) => {$(
        impl ::prometheus_client::encoding::EncodeLabelValue for $t {
            fn encode(
                &self,
                e: &mut ::prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> Result<(), std::fmt::Error> {
                ::prometheus_client::encoding::EncodeLabelValue::encode(&self.as_str(), e)
            }
        }
    )+};
}

label_value_from_as_str!(Emulation);

/// A family of histograms made by a plain function (the buckets below).
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Vertex durations: 50 ms to about 20 min.
pub fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.5, 12))
}

/// Registers `certificate_expiry_timestamp_seconds` (under the registry's prefix): the
/// `notAfter` of the process's own certificate as Unix time, for an alert before its peers
/// start refusing it; nothing when it is unknown. `whose` names the process in the help text.
pub fn register_certificate_expiry(registry: &mut Registry, whose: &str, not_after: Option<i64>) {
    let Some(not_after) = not_after else {
        return;
    };
    let g = Gauge::<i64>::default();
    g.set(not_after);
    registry.register_with_unit(
        "certificate_expiry_timestamp",
        format!("When the {whose}'s own certificate expires (notAfter, Unix time)"),
        Unit::Seconds,
        g,
    );
}
