//! `imgfarm farm`: certificates and status of a build farm.

use super::{not_implemented, GlobalArgs};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Farm operator commands.
#[derive(Debug, Subcommand)]
pub enum FarmCommand {
    /// Create a farm CA and the coordinator's certificate
    Init {
        /// Where to write ca.crt, ca.key and coordinator.{crt,key}
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Subject alternative names for the coordinator (DNS names or IPs)
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
    },
    /// Issue a worker or client certificate signed by the farm CA
    Issue {
        /// The farm directory made by `farm init`
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Issue a worker certificate with this name
        #[arg(long, conflicts_with = "client")]
        worker: Option<String>,
        /// Issue a client certificate with this name
        #[arg(long)]
        client: Option<String>,
    },
    /// Show the farm's workers and queue
    Status(FarmQuery),
    /// List the farm's workers
    Workers(FarmQuery),
}

/// Flags of the farm queries.
#[derive(Debug, Args)]
pub struct FarmQuery {
    /// Coordinator address (quic://HOST:PORT)
    #[arg(long, env = "IMGFARM_FARM")]
    pub farm: Option<String>,
    /// Directory holding ca.crt and this client's certificate
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Output format: table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// Run a farm command.
pub fn run(_g: &GlobalArgs, c: FarmCommand) -> anyhow::Result<ExitCode> {
    match c {
        FarmCommand::Init { .. } => not_implemented("farm init"),
        FarmCommand::Issue { .. } => not_implemented("farm issue"),
        FarmCommand::Status(_) => not_implemented("farm status"),
        FarmCommand::Workers(_) => not_implemented("farm workers"),
    }
}
