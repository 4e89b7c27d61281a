//! `imgfarm coordinator --listen ADDR --tls-dir DIR --state DIR`: runs the
//! farm coordinator until SIGTERM or SIGINT, then shuts down cleanly (the
//! build queue is in `<state>/coordinator.db` for the next start).

use super::roles::CoordinatorArgs;
use super::GlobalArgs;
use anyhow::{bail, Context};
use imgfarm_common::identity::{Role, TlsDir};
use imgfarm_coordinator::service::{Service, ServiceOptions};
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// The listen address: `IP:PORT`, or `HOST:PORT` resolved once.
fn listen_addr(s: &str) -> anyhow::Result<SocketAddr> {
    let s = s.strip_prefix("quic://").unwrap_or(s);
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .with_context(|| format!("--listen {s:?}: expected IP:PORT or HOST:PORT"))?
        .next()
        .with_context(|| format!("--listen {s:?}: the host name has no address"))
}

/// The heartbeat timeout from `--heartbeat-timeout SECS`.
fn heartbeat_timeout(secs: f64) -> anyhow::Result<Duration> {
    if !secs.is_finite() || !(0.1..=86_400.0).contains(&secs) {
        bail!("--heartbeat-timeout {secs}: give a number of seconds between 0.1 and 86400");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Run `imgfarm coordinator`.
pub fn run(g: &GlobalArgs, a: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let listen = listen_addr(&a.listen)?;
    let Some(dir) = a.tls_dir.as_ref() else {
        bail!("--tls-dir DIR is required: the farm directory holding ca.crt and coordinator.{{crt,key}} (made by `imgfarm farm init --dir DIR`)");
    };
    let creds = TlsDir::new(dir)
        .load(Role::Coordinator, None)
        .with_context(|| {
            format!(
                "loading the coordinator's credentials from {}",
                dir.display()
            )
        })?;
    let timeout = heartbeat_timeout(a.heartbeat_timeout)?;
    let state = g.state_dir();
    let mut opts = ServiceOptions::new(listen, creds, &state);
    opts.heartbeat_timeout = timeout;
    // Three heartbeats per timeout, as the default 2 s / 6 s.
    opts.heartbeat_interval = (timeout / 3).max(Duration::from_millis(50));
    opts.client_grace = Duration::from_secs(a.client_grace);
    opts.store_max = a.store_max;
    opts.metrics_listen = a
        .metrics_listen
        .as_deref()
        .map(imgfarm_common::metrics_http::parse_listen_addr)
        .transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let service = Service::start(opts)
            .await
            .with_context(|| format!("starting the coordinator (state {})", state.display()))?;
        // Handlers first: whoever waits for the line below may signal at once.
        let shutdown = ShutdownSignals::install()?;
        let line = format!("coordinator listening on {}", service.local_addr());
        // Scripts and tests wait for this line: stdout, and stderr with the logs.
        println!("{line}");
        let _ = std::io::stdout().flush();
        eprintln!("{line}");
        if let Some(m) = service.metrics_addr() {
            let line = format!("metrics listening on {m}");
            println!("{line}");
            let _ = std::io::stdout().flush();
            eprintln!("{line}");
        }
        let why = shutdown.recv().await;
        tracing::info!("{why}: shutting down");
        service.shutdown().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM and SIGINT handlers, installed before the coordinator says it
/// listens (a signal before then would kill it with the default action).
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Waits for SIGTERM or SIGINT; returns which.
    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        assert_eq!(
            listen_addr("127.0.0.1:7443").unwrap(),
            "127.0.0.1:7443".parse().unwrap()
        );
        assert_eq!(listen_addr("quic://127.0.0.1:1").unwrap().port(), 1);
        assert!(listen_addr("localhost:7443").is_ok());
        assert!(listen_addr("no port").is_err());
        assert_eq!(heartbeat_timeout(1.5).unwrap(), Duration::from_millis(1500));
        for bad in [0.0, -1.0, f64::NAN, 1e9] {
            assert!(heartbeat_timeout(bad).is_err(), "{bad}");
        }
    }
}
