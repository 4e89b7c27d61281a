//! `imgfarm worker`: a farm worker. It dials out to the coordinator (no
//! inbound port), announces its platforms, slots and cache, runs the
//! vertices it is sent with the rootless executor, and dials again with
//! backoff whenever the session ends. SIGTERM or SIGINT stop it cleanly.

use super::roles::WorkerArgs;
use super::GlobalArgs;
use anyhow::{anyhow, Context};
use imgfarm_common::entitlement::Entitlements;
use imgfarm_common::identity::{default_worker_name, Role, TlsDir};
use imgfarm_common::platform::parse_platform_list;
use imgfarm_worker::farm::{run as run_worker, WorkerEvent, WorkerOptions};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Run `imgfarm worker`.
pub fn run(g: &GlobalArgs, a: WorkerArgs) -> anyhow::Result<ExitCode> {
    let coordinator = a
        .coordinator
        .ok_or_else(|| anyhow!("--coordinator ADDR is required (quic://HOST:PORT)"))?;
    let tls_dir = a.tls_dir.ok_or_else(|| {
        anyhow!("--tls-dir DIR is required (the directory with ca.crt and worker-NAME.crt/.key)")
    })?;
    let name = match a.name {
        Some(n) => n,
        None => default_worker_name()
            .ok_or_else(|| anyhow!("the host name is not a valid worker name: pass --name NAME"))?,
    };
    let creds = TlsDir::new(&tls_dir)
        .load(Role::Worker, Some(&name))
        .with_context(|| format!("loading the credentials of worker {name}"))?;
    let state = g.state_dir();
    let mut opts = WorkerOptions::new(coordinator, creds, state);
    opts.name = name;
    if let Some(list) = &a.platforms {
        opts.platforms_override =
            Some(parse_platform_list(list).with_context(|| format!("--platforms {list:?}"))?);
    }
    if let Some(n) = a.slots {
        opts.slots = n;
    }
    opts.entitlements = Entitlements::parse(&a.allow_entitlement).context("--allow-entitlement")?;
    opts.cache_max = a.cache_max;
    opts.metrics_listen = a
        .metrics_listen
        .as_deref()
        .map(imgfarm_common::metrics_http::parse_listen_addr)
        .transpose()?;
    opts.events = Some(Arc::new(print_event));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async {
        let shutdown = shutdown_signal()?;
        run_worker(opts, shutdown)
            .await
            .map_err(anyhow::Error::from)
    });
    // A RUN still going on a blocking thread is abandoned (its executor
    // helper dies with this process).
    rt.shutdown_timeout(Duration::from_secs(1));
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The session and metrics lines go to stdout (operators and tests wait
/// for them); everything else to stderr.
fn print_event(e: &WorkerEvent) {
    match e {
        WorkerEvent::Connected { .. } | WorkerEvent::MetricsListening { .. } => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{e}");
            let _ = out.flush();
        }
        WorkerEvent::VertexDone { error: None, .. } => tracing::info!("{e}"),
        _ => eprintln!("{e}"),
    }
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("worker stopping");
    })
}
