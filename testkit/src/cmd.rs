//! Running external tools with errors that say what failed.

use anyhow::{bail, Context};
use std::process::{Command, Output};

/// Conveniences for `std::process::Command` in tests.
pub trait CommandExt {
    /// Run to completion with captured output; fail with the command line, exit status and
    /// stderr when it does not exit 0.
    fn checked_output(&mut self) -> anyhow::Result<Output>;
    /// Like [`CommandExt::checked_output`], returning stdout as UTF-8 (lossy).
    fn checked_stdout(&mut self) -> anyhow::Result<String>;
}

impl CommandExt for Command {
    fn checked_output(&mut self) -> anyhow::Result<Output> {
        run_checked(self)
    }

    fn checked_stdout(&mut self) -> anyhow::Result<String> {
        let out = run_checked(self)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Run `cmd` with captured output and fail unless it exits 0.
pub fn run_checked(cmd: &mut Command) -> anyhow::Result<Output> {
    let line = describe(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{line}` (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(out)
}

/// The command line as a readable string (program and arguments).
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether `tool` is an executable file somewhere on `PATH` (or an absolute path that exists).
pub(crate) fn have_tool(tool: &str) -> bool {
    if tool.contains('/') {
        return std::path::Path::new(tool).is_file();
    }
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}
