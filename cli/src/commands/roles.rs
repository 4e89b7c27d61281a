//! Operator roles: `imgfarm coordinator` and `imgfarm worker`.

use super::GlobalArgs;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `imgfarm coordinator`
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// UDP address to listen on for QUIC
    #[arg(long, default_value = "0.0.0.0:7443")]
    pub listen: String,
    /// Directory holding ca.crt and coordinator.{crt,key}
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Declare a worker lost after this many seconds without a heartbeat
    #[arg(long, value_name = "SECS", default_value_t = 6.0)]
    pub heartbeat_timeout: f64,
    /// Cancel a build that has had no client attached for this long (e.g. 5m; 0 never cancels)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::duration::parse_secs)]
    pub client_grace: u64,
    /// Cap on the content store beyond what queued and running builds need (e.g. 100MB, 20GiB); least recently used results go first [default: 10% of the state's filesystem]
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub store_max: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (TCP, e.g. 0.0.0.0:9464; port 0 picks one and prints it)
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// `imgfarm worker`
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Coordinator address (quic://HOST:PORT or HOST:PORT)
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Directory holding ca.crt and worker-NAME.{crt,key}
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Worker name [default: the host name]
    #[arg(long)]
    pub name: Option<String>,
    /// Override the detected native platforms (comma list)
    #[arg(long)]
    pub platforms: Option<String>,
    /// Concurrent vertex slots [default: number of CPUs]
    #[arg(long)]
    pub slots: Option<usize>,
    /// Let steps use an entitlement: network.host (RUN --network=host), security.insecure
    /// (RUN --security=insecure); repeatable, comma-separated [default: none]
    #[arg(long = "allow-entitlement", value_name = "NAME")]
    pub allow_entitlement: Vec<String>,
    /// Cap on the worker's cache (blobs and snapshots) beyond what its running steps need (e.g. 50GB); least recently used results go first [default: 10% of the state's filesystem]
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub cache_max: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (TCP, e.g. 0.0.0.0:9464; port 0 picks one and prints it)
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// Run `imgfarm coordinator`.
pub fn coordinator(g: &GlobalArgs, a: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    super::coordinator_cmd::run(g, a)
}

/// Run `imgfarm worker`.
pub fn worker(g: &GlobalArgs, a: WorkerArgs) -> anyhow::Result<ExitCode> {
    super::worker_cmd::run(g, a)
}

/// A size flag (`100MB`, `2GiB`): [`imgfarm_common::size::parse_size`].
pub fn size_arg(s: &str) -> Result<u64, String> {
    imgfarm_common::size::parse_size(s).map_err(|e| e.to_string())
}
