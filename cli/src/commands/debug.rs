//! Hidden developer dumps.

use super::build::BuildArgs;
use super::{not_implemented, GlobalArgs};
use anyhow::Context as _;
use clap::Subcommand;
use imgfarm_common::dockerfile::{dump::dump, parser};
use std::io::Read as _;
use std::path::{Path, PathBuf};
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
        DebugCommand::Parse { file } => parse_file(&file),
        DebugCommand::Graph(_) => not_implemented("debug graph"),
    }
}

/// `imgfarm debug parse FILE`: print the parse tree in BuildKit's dump format
/// (one `(keyword ...)` line per instruction), warnings on stderr.
fn parse_file(file: &Path) -> anyhow::Result<ExitCode> {
    let mut bytes = Vec::new();
    // Read at most one byte past the parser's bound; it reports the overflow.
    let limit = u64::try_from(parser::MAX_FILE_BYTES).unwrap_or(u64::MAX);
    std::fs::File::open(file)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read Dockerfile {}", file.display()))?;
    let name = file.display().to_string();
    let result = parser::parse_named(&bytes, &name)?;
    for w in &result.warnings {
        eprintln!("warning: {name}:{}: {}", w.line, w.message);
    }
    println!("{}", dump(&result.ast));
    Ok(ExitCode::SUCCESS)
}
