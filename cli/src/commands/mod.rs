//! The command surface. One file per command; each `run` returns the exit code.

mod build;
mod completion;
mod coordinator_cmd;
mod debug;
mod du;
mod farm;
mod image;
mod images_list;
mod inspect;
mod load;
mod login;
mod prune;
mod pull;
mod push;
mod rm;
mod roles;
mod save;
mod seed;
mod tag;
mod worker_cmd;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Rootless, daemonless container image builder and cross-architecture build farm.
#[derive(Debug, Parser)]
#[command(name = "imgfarm", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// State directory [default: $XDG_DATA_HOME/imgfarm, else ~/.local/share/imgfarm, else /tmp/imgfarm]
    #[arg(long, global = true, env = "IMGFARM_STATE", value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace (or a tracing filter)
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
    /// Debug output (same as --log-level debug)
    #[arg(short = 'D', long, global = true)]
    pub debug: bool,
}

impl GlobalArgs {
    /// The state directory in force.
    #[allow(dead_code)]
    pub fn state_dir(&self) -> PathBuf {
        let dir = self
            .state
            .clone()
            .unwrap_or_else(imgfarm_common::paths::default_state_dir);
        // Absolute, as overlay mount options need it (`--state st` would otherwise
        // fail at the first RUN); relative to the working directory, as given.
        std::path::absolute(&dir).unwrap_or(dir)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile (docker buildx build flags)
    Build(Box<build::BuildArgs>),
    /// List images in the local store
    #[command(visible_alias = "ls")]
    Images(image::ImagesArgs),
    /// Pull an image or a repository from a registry
    Pull(pull::PullArgs),
    /// Push an image or a repository to a registry
    Push(push::PushArgs),
    /// Create a tag TARGET that refers to SOURCE
    Tag(tag::TagArgs),
    /// Remove one or more images
    #[command(visible_alias = "rmi")]
    Rm(rm::RmArgs),
    /// Save images to a tar archive (docker-archive, or OCI with --format oci)
    Save(save::SaveArgs),
    /// Load images from a tar archive
    Load(load::LoadArgs),
    /// Show an image's manifest and config
    Inspect(inspect::InspectArgs),
    /// Log in to a registry
    Login(login::LoginArgs),
    /// Log out from a registry
    Logout(login::LogoutArgs),
    /// Show disk usage of the local store
    Du(du::DuArgs),
    /// Remove unreferenced blobs and build cache
    Prune(prune::PruneArgs),
    /// Run a farm coordinator (operators)
    Coordinator(roles::CoordinatorArgs),
    /// Run a farm worker (operators)
    Worker(roles::WorkerArgs),
    /// Manage a build farm: certificates, status, workers
    #[command(subcommand)]
    Farm(farm::FarmCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion(completion::CompletionArgs),
    /// Write the man pages (imgfarm.1 and one per command)
    Man(completion::ManArgs),
    /// Developer dumps (parse tree, build graph)
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

/// Dispatch a parsed command line.
impl Command {
    /// Whether the command reads or writes trees whose files belong to mapped ids (build
    /// snapshots, RUN upper dirs, cache mounts), and so runs in the build namespace.
    pub fn touches_build_trees(&self) -> bool {
        matches!(
            self,
            Command::Build(_)
                | Command::Worker(_)
                | Command::Prune(_)
                | Command::Du(_)
                | Command::Rm(_)
                | Command::Debug(_)
        )
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Build(a) => build::run(g, *a),
        Command::Images(a) => images_list::run(g, a),
        Command::Pull(a) => pull::run(g, a),
        Command::Push(a) => push::run(g, a),
        Command::Tag(a) => tag::run(g, a),
        Command::Rm(a) => rm::run(g, a),
        Command::Save(a) => save::run(g, a),
        Command::Load(a) => load::run(g, a),
        Command::Inspect(a) => inspect::run(g, a),
        Command::Login(a) => login::login(g, a),
        Command::Logout(a) => login::logout(g, a),
        Command::Du(a) => du::run(g, a),
        Command::Prune(a) => prune::run(g, a),
        Command::Coordinator(a) => roles::coordinator(g, a),
        Command::Worker(a) => roles::worker(g, a),
        Command::Farm(c) => farm::run(g, c),
        Command::Completion(a) => completion::completion(a),
        Command::Man(a) => completion::man(a),
        Command::Debug(c) => debug::run(g, c),
    }
}
