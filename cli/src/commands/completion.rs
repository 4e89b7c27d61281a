//! `imgfarm completion SHELL` and `imgfarm man`: shell completion scripts and man pages, made
//! from the same clap definition the parser uses, so they cannot drift from the flags.
//!
//! Hidden commands (`debug`) are left out of both, as they are left out of `--help`.

use super::Cli;
use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `imgfarm completion`
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `imgfarm man`
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write imgfarm.1 and one page per command (imgfarm-build.1, imgfarm-farm-issue.1, ...)
    /// into DIR, created if missing. Without it, imgfarm.1 goes to standard output.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The binary's name in scripts and pages.
const BIN: &str = "imgfarm";

/// Run `imgfarm completion SHELL`: the script goes to standard output.
pub fn completion(a: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = without_hidden_subcommands(Cli::command());
    let mut out = std::io::stdout().lock();
    clap_complete::generate(a.shell, &mut cmd, BIN, &mut out);
    out.flush().context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// `cmd` with its hidden subcommands left out: clap_complete's bash generator lists them
/// although `hide` is set (the zsh and fish ones do not). clap has no way to remove a
/// subcommand, so the command is put together again from its visible parts.
fn without_hidden_subcommands(cmd: clap::Command) -> clap::Command {
    if !cmd.get_subcommands().any(|s| s.is_hide_set()) {
        return cmd;
    }
    let visible: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let args: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
    let mut out = clap::Command::new(BIN).args(args).subcommands(visible);
    if cmd.get_version().is_some() {
        out = out
            .version(env!("CARGO_PKG_VERSION"))
            .propagate_version(cmd.is_propagate_version_set());
    }
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    out
}

/// Run `imgfarm man [--out DIR]`.
pub fn man(a: ManArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    // Propagates global flags and the version into the subcommands before rendering.
    cmd.build();
    match a.out {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("writing the man page")?;
            out.flush().context("writing the man page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut written = Vec::new();
            write_pages(&cmd, &dir, &mut written)?;
            for p in &written {
                println!("{}", p.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `NAME.1` for `cmd`, then one page for each visible subcommand, depth first. A page's
/// name is the command line that reaches it with spaces as dashes, as git and cargo name
/// theirs (`man imgfarm-farm-issue`): clap's display name once the command is built.
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .with_context(|| format!("rendering {name}.1"))?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
