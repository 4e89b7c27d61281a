//! `imgfarm farm`: certificates and status of a build farm.

pub mod config;
pub mod connect;
mod status;

use super::GlobalArgs;
use anyhow::Context;
use clap::{Args, Subcommand};
use imgfarm_common::identity::{
    init_farm, issue_leaf, write_new_files, CaMaterial, FileSpec, InitOptions, IssuedFiles, Role,
    Validity, DEFAULT_LEAF_DAYS,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Farm operator commands.
#[derive(Debug, Subcommand)]
pub enum FarmCommand {
    /// Create a farm CA and the coordinator's certificate
    Init {
        /// Where to write ca.crt, ca.key and coordinator.{crt,key}
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Subject alternative names for the coordinator (DNS names or IPs) [default: localhost, 127.0.0.1]
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Days the coordinator's certificate is valid (the CA's: ten years)
        #[arg(long, default_value_t = DEFAULT_LEAF_DAYS, value_name = "N")]
        days: u32,
        /// Replace existing files
        #[arg(long)]
        force: bool,
    },
    /// Issue a worker, client or (renewed) coordinator certificate signed by the farm CA
    #[command(group = clap::ArgGroup::new("who").required(true).args(["worker", "client", "coordinator"]))]
    Issue {
        /// The farm directory made by `farm init`
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Issue a worker certificate with this name
        #[arg(long, conflicts_with_all = ["client", "coordinator"])]
        worker: Option<String>,
        /// Issue a client certificate with this name
        #[arg(long, conflicts_with = "coordinator")]
        client: Option<String>,
        /// Issue a new coordinator certificate (renewal by the same CA: workers and clients
        /// keep trusting it)
        #[arg(long)]
        coordinator: bool,
        /// With --coordinator: its subject alternative names (DNS names or IPs), as for `farm init`
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Days the certificate is valid; after that its peers refuse it
        #[arg(long, default_value_t = DEFAULT_LEAF_DAYS, value_name = "N")]
        days: u32,
        /// Replace existing files
        #[arg(long)]
        force: bool,
    },
    /// Show the farm's workers and queue
    Status(FarmQuery),
    /// List the farm's workers
    Workers(FarmQuery),
}

/// Flags of the farm queries.
#[derive(Debug, Args)]
pub struct FarmQuery {
    /// Coordinator address (quic://HOST:PORT) [default: from farm.conf]
    #[arg(long, env = "IMGFARM_FARM", value_name = "ADDR")]
    pub farm: Option<String>,
    /// Directory holding ca.crt and this client's certificate [default: from farm.conf]
    #[arg(long, env = "IMGFARM_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Which client-NAME certificate of the TLS directory to use
    #[arg(long = "farm-name", env = "IMGFARM_FARM_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Output format: table or json
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

/// Run a farm command.
pub fn run(_g: &GlobalArgs, c: FarmCommand) -> anyhow::Result<ExitCode> {
    match c {
        FarmCommand::Init {
            dir,
            sans,
            days,
            force,
        } => farm_init(&dir, sans, days, force),
        FarmCommand::Issue {
            dir,
            worker,
            client,
            coordinator,
            sans,
            days,
            force,
        } => {
            let who = match (worker, client, coordinator) {
                (Some(w), None, false) => (Role::Worker, w),
                (None, Some(c), false) => (Role::Client, c),
                (None, None, true) => (Role::Coordinator, "coordinator".to_string()),
                _ => anyhow::bail!(
                    "give exactly one of --worker NAME, --client NAME or --coordinator"
                ),
            };
            match (coordinator, sans.is_empty()) {
                (true, true) => anyhow::bail!(
                    "--coordinator needs --san NAME for each DNS name or address it is reached by"
                ),
                (false, false) => anyhow::bail!(
                    "--san is for --coordinator: workers and clients are named by --worker/--client"
                ),
                _ => {}
            }
            farm_issue(&dir, who, &sans, days, force)
        }
        FarmCommand::Status(q) => status::run(&q, status::View::Status),
        FarmCommand::Workers(q) => status::run(&q, status::View::Workers),
    }
}

fn leaf_files(dir: &Path, issued: &IssuedFiles) -> [FileSpec; 2] {
    [
        FileSpec {
            path: dir.join(format!("{}.crt", issued.stem)),
            contents: issued.cert_pem.clone(),
            mode: 0o644,
        },
        FileSpec {
            path: dir.join(format!("{}.key", issued.stem)),
            contents: issued.key_pem.clone(),
            mode: 0o600,
        },
    ]
}

/// `farm init`: CA + coordinator certificate, all files or none.
fn farm_init(dir: &Path, sans: Vec<String>, days: u32, force: bool) -> anyhow::Result<ExitCode> {
    // Checked before anything is made, so a bad --days leaves no directory behind.
    Validity::days_from_now(days)?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut opts = InitOptions {
        days,
        ..InitOptions::default()
    };
    if !sans.is_empty() {
        opts.sans = sans;
    }
    let (ca, coordinator) = init_farm(&opts)?;
    let mut files = vec![
        FileSpec {
            path: dir.join("ca.crt"),
            contents: ca.cert_pem,
            mode: 0o644,
        },
        FileSpec {
            path: dir.join("ca.key"),
            contents: ca.key_pem,
            mode: 0o600,
        },
    ];
    files.extend(leaf_files(dir, &coordinator));
    write_new_files(&files, force)?;
    println!(
        "farm CA and coordinator certificate ({}, valid {days} days) written to {}",
        opts.sans.join(", "),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `farm issue`: a worker, client or coordinator certificate signed by the farm CA in `dir`.
fn farm_issue(
    dir: &Path,
    (role, name): (Role, String),
    sans: &[String],
    days: u32,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let validity = Validity::days_from_now(days)?;
    let read = |f: &str| {
        let p = dir.join(f);
        std::fs::read_to_string(&p).with_context(|| {
            format!(
                "read {}: is {} a farm directory made by `imgfarm farm init`?",
                p.display(),
                dir.display()
            )
        })
    };
    let ca = CaMaterial {
        cert_pem: read("ca.crt")?,
        key_pem: read("ca.key")?,
    };
    let issued = issue_leaf(&ca, role, &name, sans, validity)?;
    write_new_files(&leaf_files(dir, &issued), force)?;
    println!(
        "{role} certificate {}.crt and key {}.key written to {} (valid {days} days)",
        issued.stem,
        issued.stem,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
