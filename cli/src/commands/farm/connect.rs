//! A farm client's session with the coordinator: credentials from the TLS
//! directory, the client hello, and dialling within a bounded time.

use super::config::FarmSettings;
use anyhow::{anyhow, Context as _};
use imgfarm_common::identity::{Credentials, Role, TlsDir};
use imgfarm_common::proto::{CacheSummary, Hello, PROTOCOL_VERSION};
use imgfarm_worker::link::{connect_with_backoff, Backoff, Link, LinkOptions};
use std::time::Duration;

/// How long the first connection may take before the client gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's certificate from `settings.tls_dir`: its only
/// `client-*.crt`, or `client-NAME.crt` for `--farm-name NAME`.
pub fn credentials(settings: &FarmSettings) -> anyhow::Result<Credentials> {
    TlsDir::new(&settings.tls_dir)
        .load(Role::Client, settings.name.as_deref())
        .with_context(|| {
            format!(
                "farm client credentials in {} (--tls-dir / IMGFARM_TLS_DIR / tls_dir in farm.conf)",
                settings.tls_dir.display()
            )
        })
}

/// The hello a client sends: its role and certificate name, no platforms.
pub fn client_hello(creds: &Credentials) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        role: Role::Client,
        name: creds.identity.name.clone(),
        software: format!("imgfarm {}", env!("CARGO_PKG_VERSION")),
        native_platforms: Vec::new(),
        emulated_platforms: Vec::new(),
        slots: 0,
        cache_summary: CacheSummary::default(),
        entitlements: Default::default(),
    }
}

/// Dials `addr`, retrying transient failures (nothing listening yet, a
/// restarting coordinator) until `limit` has passed. A refusal that cannot
/// fix itself (wrong CA, wrong role, version mismatch) fails at once.
pub async fn connect(
    addr: &str,
    creds: &Credentials,
    hello: &Hello,
    limit: Duration,
) -> anyhow::Result<Link> {
    let mut last: Option<String> = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let opts = LinkOptions::default();
    let attempt = connect_with_backoff(addr, creds, hello, &opts, &mut backoff, |e, _| {
        last = Some(e.to_string())
    });
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(link)) => Ok(link),
        // Already names the coordinator, the refused certificate and what to check.
        Ok(Err(e)) if e.is_certificate_refusal() => Err(anyhow!("{e}")),
        Ok(Err(e)) => Err(anyhow!(
            "cannot connect to the farm coordinator at {addr}: {e}"
        )),
        Err(_) => Err(anyhow!(
            "cannot reach the farm coordinator at {addr} within {}s{}: check that it is running \
             and that --farm / IMGFARM_FARM / farm.conf names it",
            limit.as_secs(),
            last.map(|l| format!(" (last error: {l})"))
                .unwrap_or_default()
        )),
    }
}

/// A single-threaded runtime for the client's network work.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the farm client's runtime")
}
