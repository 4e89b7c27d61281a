//! Hidden developer dumps.

use super::build::BuildArgs;
use super::{not_implemented, GlobalArgs};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// `imgfarm debug ...`
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print a Dockerfile's parse tree in BuildKit's dump format
    Parse {
        /// The Dockerfile
        file: PathBuf,
    },
    /// Print the build graph as JSON
    Graph(Box<BuildArgs>),
}

/// Run a debug command.
pub fn run(_g: &GlobalArgs, c: DebugCommand) -> anyhow::Result<ExitCode> {
    match c {
        DebugCommand::Parse { .. } => not_implemented("debug parse"),
        DebugCommand::Graph(_) => not_implemented("debug graph"),
    }
}
