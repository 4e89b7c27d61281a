//! A tracing subscriber for tests.

use std::sync::Once;

static INIT: Once = Once::new();

/// Install (once per test process) a `tracing` subscriber that writes through the test
/// harness's captured writer, so logs show up next to a failing test. The filter comes from
/// `RUST_LOG` and defaults to `info`.
pub fn init_tracing() {
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Another subscriber may already be installed by the test itself; that is fine.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .with_ansi(false)
            .try_init();
    });
}
